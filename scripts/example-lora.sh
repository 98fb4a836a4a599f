#!/bin/sh
# SPDX-License-Identifier: MIT
# The LoRA example: a tiny transformer fine-tuned by 12 clients with LoRA ranks 2, 4 and 8,
# FLoRA (`flora` job) against the zero-padded average (`fedavg` job), through a `tributary up`
# it starts itself. Usage: scripts/example-lora.sh [BUILD_DIR [run.py options...]]; exits with
# run.py's status.
set -u
build=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.." || exit 1
if [ ! -x "$build/tributary" ]; then
	echo "example-lora: no $build/tributary; run make build first" >&2
	exit 2
fi
# Debian's interpreter: it is the one python3-torch is installed for.
exec /usr/bin/python3 examples/lora-transformer/run.py --tributary "$build/tributary" "$@"
