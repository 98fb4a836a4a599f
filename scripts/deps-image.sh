#!/bin/sh
# SPDX-License-Identifier: MIT
# Sets up what `make image-test` needs: podman with runc (and the CNI plugins it networks with),
# python3-yaml for scripts/image-test.py, and the pinned Debian base image, made locally with
# debootstrap when no container registry is reachable. Quiet when all is present.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)

# The base image manifests/Containerfile pins (its ARG BASE); the version is Debian's point
# release, checked against the debootstrapped tree's /etc/debian_version below.
base=$(sed -n 's/^ARG BASE=//p' "$root/manifests/Containerfile" | head -n 1)
[ -n "$base" ] || { echo "deps-image: no 'ARG BASE=' in manifests/Containerfile" >&2; exit 1; }
base_version=$(printf '%s\n' "$base" | sed -n 's/.*:\([0-9][0-9.]*\)-slim$/\1/p')
[ -n "$base_version" ] || {
	echo "deps-image: cannot read a Debian version from BASE=$base (want ...:12.N-slim)" >&2
	exit 1
}

if [ "$(id -u)" -ne 0 ]; then
	echo "deps-image: run as root (podman, debootstrap and runc need it here)" >&2
	exit 1
fi

missing=""
for p in podman runc containernetworking-plugins debootstrap python3-yaml; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	echo "deps-image: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# crun, podman's default, refuses a hybrid cgroup layout ("cgroups in hybrid mode not
# supported"); runc with the cgroupfs manager works on every layout (docs/DEPLOY.md).
conf=/etc/containers/containers.conf.d/50-tributary-runc.conf
if [ ! -f "$conf" ]; then
	mkdir -p /etc/containers/containers.conf.d
	printf '# Written by tributary scripts/deps-image.sh: crun refuses hybrid cgroups.\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' >"$conf"
	echo "deps-image: wrote $conf (runc, cgroupfs)"
fi

if podman image exists "$base"; then
	exit 0
fi

# Try the registry first; without one, build the same tree from the Debian archive apt uses.
if timeout 60 podman pull -q "$base" >/dev/null 2>&1; then
	echo "deps-image: pulled $base"
	exit 0
fi

mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
	2>/dev/null | sed -n -e 's/^URIs: *\([^ ]*debian\)\/*$/\1/p' -e 's/^deb  *\([^ ]*debian\)\/* .*/\1/p' |
	grep -v security | head -n 1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
echo "deps-image: no registry reachable; debootstrap bookworm from $mirror (takes ~2 min)"
tree=$(mktemp -d /var/tmp/tributary-base.XXXXXX)
trap 'rm -rf "$tree"' EXIT
debootstrap --variant=minbase bookworm "$tree" "$mirror" >"$tree.log" 2>&1 || {
	echo "deps-image: debootstrap failed; its log: $tree.log" >&2
	exit 1
}
rm -f "$tree.log"
got=$(cat "$tree/etc/debian_version")
if [ "$got" != "$base_version" ]; then
	echo "deps-image: the archive gives Debian $got, the Containerfile pins $base_version;" \
		"update ARG BASE in manifests/Containerfile (docs/DEPLOY.md, 'The base image')" >&2
	exit 1
fi
# What the official slim image also drops: apt lists and docs are not needed to run.
rm -rf "$tree/var/lib/apt/lists/"* "$tree/var/cache/apt/"*.bin "$tree/usr/share/doc/"* \
	"$tree/usr/share/man/"*
tar -C "$tree" -c . | podman import -q - "$base" >/dev/null
echo "deps-image: imported $base ($(podman image inspect -f '{{.Id}}' "$base" | cut -c1-12))"
