#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages Tributary needs to build, test and demo; quiet when all are present.
set -eu

# kubectl, node and tests/k8s's npm packages, for the manifests test (tests/k8s).
"$(dirname "$0")/deps-k8s.sh"

PKGS="build-essential meson ninja-build pkg-config clang llvm bpftool libbpf-dev libelf-dev
zlib1g-dev liburing-dev libnng-dev libjemalloc-dev libcriterion-dev libhttp-parser-dev
libjansson-dev libsqlite3-dev libssl-dev openssl curl iproute2 python3-numpy"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages:$missing" >&2
	echo "deps: run as root (or: sudo apt-get install$missing)" >&2
	exit 1
fi

echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done"
