#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs what the k8s test needs (kubectl, node, tests/k8s's npm packages); quiet when present.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
k8s="$root/tests/k8s"

# kubectl renders manifests/ (`kubectl kustomize`); node and npm run tests/k8s/validate.js.
missing=""
command -v kubectl >/dev/null 2>&1 || missing="$missing kubernetes-client"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps-k8s: missing packages:$missing" >&2
		echo "deps-k8s: run as root (or: sudo apt-get install$missing)" >&2
		exit 1
	fi
	echo "deps-k8s: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Exactly the versions in tests/k8s/package-lock.json, again whenever it changes: a copy of the
# lock file that was installed is kept in node_modules as the stamp.
stamp="$k8s/node_modules/.tributary-installed-lock.json"
if ! cmp -s "$k8s/package-lock.json" "$stamp"; then
	echo "deps-k8s: installing the npm packages of tests/k8s (npm ci)"
	(cd "$k8s" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	cp "$k8s/package-lock.json" "$stamp"
fi
