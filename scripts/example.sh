#!/bin/sh
# SPDX-License-Identifier: MIT
# The PyTorch example: federated training on digits through a `tributary up` it starts itself.
# Usage: scripts/example.sh [BUILD_DIR [train.py options...]]; exits with train.py's status.
set -u
build=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.." || exit 1
if [ ! -x "$build/tributary" ]; then
	echo "example: no $build/tributary; run make build first" >&2
	exit 2
fi
# Debian's interpreter: it is the one python3-torch and python3-sklearn are installed for.
exec /usr/bin/python3 examples/pytorch-digits/train.py --tributary "$build/tributary" "$@"
