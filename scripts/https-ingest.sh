#!/bin/bash
# SPDX-License-Identifier: MIT
# HTTPS against HTTP ingest at one gateway (not in make test; bench/ holds the comparisons): 100
# x 4 MB raw f32 updates per run over one keep-alive curl (no Expect), an `up` and an
# `up --tls self-signed` side by side, runs alternating; prints wall time, MB/s and the gateway
# process's CPU time per run. usage: scripts/https-ingest.sh [BUILD_DIR (release: build)] [RUNS]
set -euo pipefail
B=${1:-build}; REPS=${2:-5}
W=$(mktemp -d /tmp/https-ingest.XXXX)
/usr/bin/python3 -c 'import numpy as np, sys
np.random.default_rng(1).standard_normal(1000000).astype("<f4").tofile(sys.argv[1])' $W/u.bin
start() { # mode
	local mode=$1; local dd=$W/d-$mode; local extra=()
	[ $mode = https ] && extra=(--tls self-signed)
	$B/tributary up --listen 127.0.0.1:0 --port-file $W/port-$mode --data-dir $dd --no-huge \
		--arena-mb 1024 "${extra[@]}" > $W/log-$mode 2>&1 &
	echo $! > $W/pid-$mode
	for i in $(seq 100); do [ -s $W/port-$mode ] && break; sleep 0.1; done
}
once() { # mode rep
	local mode=$1 r=$2; local dd=$W/d-$mode; local url=$mode://localhost:$(cat $W/port-$mode)
	local curlx=(); [ $mode = https ] && curlx=(--cacert $dd/tls-cert.pem)
	curl -sS "${curlx[@]}" -H "Authorization: Bearer $(cat $dd/admin-token)" \
		-H 'Content-Type: application/json' $url/v1/jobs -o $W/job.json \
		-d "{\"name\":\"j$r\",\"clients_per_round\":100,\"tensors\":[{\"name\":\"w\",
		     \"shape\":[1000000],\"dtype\":\"F32\"}]}"
	local tok=$(sed 's/.*"token":"\([^"]*\)".*/\1/' $W/job.json)
	local urls=(); for i in $(seq 100); do urls+=("$url/v1/jobs/j$r/updates"); done
	local pid=$(cat $W/pid-$mode); local c0=$(awk '{print $14+$15}' /proc/$pid/stat)
	local t0=$(date +%s%N)
	curl -sS "${curlx[@]}" -w '%{http_code}\n' -H "Authorization: Bearer $tok" -H 'Expect:' \
		-H 'Content-Type: application/octet-stream' -H 'X-Tributary-Round: 0' \
		--data-binary @$W/u.bin "${urls[@]}" > $W/codes
	local t1=$(date +%s%N)
	local c1=$(awk '{print $14+$15}' /proc/$pid/stat)
	echo "$mode run $r: $(grep -c '202$' $W/codes)/100 answered 202," \
		"$(( (t1 - t0) / 1000000 )) ms, $(( 400000000000 / (t1 - t0) )) MB/s," \
		"gateway CPU $(( (c1 - c0) * 10 )) ms"
	sleep 2 # let the round fold before the next run
}
start http; start https
for r in $(seq $REPS); do once http $r; once https $r; done
kill $(cat $W/pid-http) $(cat $W/pid-https); wait || true
rm -rf $W
