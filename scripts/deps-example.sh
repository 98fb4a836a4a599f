#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs what `make example` needs from Debian 12 (torch, sklearn, numpy); quiet if present.
set -eu

PKGS="python3-torch python3-sklearn python3-numpy"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps-example: missing packages:$missing" >&2
	echo "deps-example: run as root (or: sudo apt-get install$missing)" >&2
	exit 1
fi

echo "deps-example: installing$missing (PyTorch is large: this takes a few minutes)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps-example: done"
