#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages Tributary needs to build and demo, and with --test what the tests
# need too (make test); quiet when all are present.
# Usage: scripts/deps.sh [--test]
set -eu

# The build (Criterion too: the build directory configures the test suites).
PKGS="build-essential meson ninja-build pkg-config clang llvm bpftool libbpf-dev libelf-dev
zlib1g-dev liburing-dev libnng-dev libjemalloc-dev libcriterion-dev libhttp-parser-dev
libjansson-dev libsqlite3-dev libssl-dev openssl libsodium-dev"

if [ "${1:-}" = "--test" ]; then
	# The end-to-end scripts: curl (basic.sh), ip (network namespaces), numpy (references),
	# cryptography (the Python secure-aggregation client, clients/python/tributary_secagg.py).
	PKGS="$PKGS curl iproute2 python3-numpy python3-cryptography"
	# The /ui scenario (tests/e2e/ui.py): headless Chromium, driven over its DevTools websocket.
	PKGS="$PKGS chromium python3-websocket"
	# promtool and a real Prometheus scraping `tributary up` (tests/e2e/prometheus.py).
	PKGS="$PKGS prometheus"
	# PyTorch for the LoRA example's scenario (tests/e2e/example_lora.py: make example-lora in
	# small), so that it runs in CI rather than skipping.
	PKGS="$PKGS python3-torch"
	# kubectl, node and tests/k8s's npm packages, for the manifests test (tests/k8s) only.
	"$(dirname "$0")/deps-k8s.sh"
	# node, tests/openapi's npm packages (the OpenAPI validator) and python3-jsonschema.
	"$(dirname "$0")/deps-openapi.sh"
fi

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
