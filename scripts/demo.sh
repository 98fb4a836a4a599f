#!/bin/sh
# SPDX-License-Identifier: MIT
# The demo: start `tributary up`, simulate 100 clients x 3 rounds x 1M parameters, check, stop.
set -u
build=${1:-build}
dir=$(mktemp -d /tmp/tributary-demo.XXXXXX)
pid=""
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

echo "demo: starting tributary up (data in $dir)"
"$build/tributary" up --listen 127.0.0.1:0 --port-file "$dir/port" --data-dir "$dir/data" \
	2>"$dir/up.log" &
pid=$!
i=0
while [ ! -s "$dir/port" ]; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "demo: tributary up did not start:" >&2
		cat "$dir/up.log" >&2
		exit 1
	fi
	sleep 0.1
done
port=$(cat "$dir/port")
sed 's/^/  up | /' "$dir/up.log"

"$build/tributary" simulate --job demo --clients 100 --rounds 3 --params 1000000 \
	--url "http://127.0.0.1:$port" --data-dir "$dir/data"
rc=$?

kill -TERM "$pid"
wait "$pid"
up_rc=$?
pid=""
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
