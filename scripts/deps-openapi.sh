#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs what the openapi test needs (node, npm, tests/openapi's npm packages) and what the
# openapi_contract e2e scenario checks responses with (python3-jsonschema); quiet when present.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/tests/openapi"

missing=""
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
dpkg-query -W -f='${Status}' python3-jsonschema 2>/dev/null | grep -q "install ok installed" ||
	missing="$missing python3-jsonschema"

if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps-openapi: missing packages:$missing" >&2
		echo "deps-openapi: run as root (or: sudo apt-get install$missing)" >&2
		exit 1
	fi
	echo "deps-openapi: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Exactly the versions in tests/openapi/package-lock.json, again whenever it changes: a copy of
# the lock file that was installed is kept in node_modules as the stamp.
stamp="$dir/node_modules/.tributary-installed-lock.json"
if ! cmp -s "$dir/package-lock.json" "$stamp"; then
	echo "deps-openapi: installing the npm packages of tests/openapi (npm ci)"
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	cp "$dir/package-lock.json" "$stamp"
fi
