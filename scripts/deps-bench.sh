#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages the bench baselines and plots need; quiet when all are present.
set -eu

# nginx-light is the smallest Debian nginx; any installed nginx flavour will do.
# libnginx-mod-http-echo: the nginx baselines (bench/baselines, bench/tls) read each body whole (echo_read_request_body).
# linux-perf and strace: the profiles in docs/BENCHMARKS.md (perf stat, strace -c) are taken with them.
PKGS="python3-aiohttp python3-matplotlib python3-numpy curl iproute2 libnginx-mod-http-echo
linux-perf strace"

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=""
for p in $PKGS; do
	installed "$p" || missing="$missing $p"
done
if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
	missing="$missing nginx-light"
fi

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps-bench: missing packages:$missing" >&2
	echo "deps-bench: run as root (or: sudo apt-get install$missing)" >&2
	exit 1
fi

echo "deps-bench: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
# shellcheck disable=SC2086
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >/dev/null
# The package's postinst starts a system nginx on port 80; the benchmark runs its own.
if [ -x /usr/sbin/nginx ] && command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now nginx >/dev/null 2>&1 || true
fi
echo "deps-bench: done"
