#!/bin/sh
# SPDX-License-Identifier: MIT
# The demo: start `tributary up`, simulate 100 clients x 3 rounds x 1M parameters, check, stop.
set -u
build=${1:-build}
. "$(dirname "$0")/lib-up.sh"
up_init demo

echo "demo: starting tributary up (data in $dir)"
up_start "$build" || exit 1
sed 's/^/  up | /' "$dir/up.log"

"$build/tributary" simulate --job demo --clients 100 --rounds 3 --params 1000000 \
	--url "http://127.0.0.1:$port" --data-dir "$dir/data"
rc=$?

up_stop
up_rc=$?
echo "demo: server log:"
sed 's/^/  up | /' "$dir/up.log" | tail -n 8
if [ $rc -ne 0 ]; then
	echo "demo: FAILED (simulate exited $rc)"
	exit 1
fi
if [ $up_rc -ne 0 ]; then
	echo "demo: FAILED (tributary up exited $up_rc)"
	exit 1
fi
echo "demo: OK: every round's model matched the float64 reference"
