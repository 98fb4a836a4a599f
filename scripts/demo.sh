#!/bin/sh
# SPDX-License-Identifier: MIT
# The demo: start `tributary up` over HTTPS (a self-signed certificate), simulate 100 clients x
# 3 rounds x 1M parameters pinning its fingerprint, check, stop.
set -u
build=${1:-build}
. "$(dirname "$0")/lib-up.sh"
up_init demo

echo "demo: starting tributary up --tls self-signed (data in $dir)"
up_start "$build" --tls self-signed || exit 1
sed 's/^/  up | /' "$dir/up.log"
# The certificate's SHA-256, as the server logs it: the clients pin it (no CA to trust).
pin=$(sed -n 's/.*(pin: \([0-9a-f]\{64\}\)).*/\1/p' "$dir/up.log" | head -n 1)
if [ -z "$pin" ]; then
	echo "demo: FAILED (no certificate fingerprint in the server log)"
	exit 1
fi
echo "demo: clients pin the server's certificate, sha256 $pin"

"$build/tributary" simulate --job demo --clients 100 --rounds 3 --params 1000000 \
	--url "https://127.0.0.1:$port" --tls-pin "$pin" --data-dir "$dir/data"
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
echo "demo: OK: every round's model matched the float64 reference (over HTTPS)"
