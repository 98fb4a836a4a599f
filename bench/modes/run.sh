#!/bin/sh
# SPDX-License-Identifier: MIT
# Round time on each data plane in one run: 100 updates of P parameters, shm+bpf = 1.0.
# usage: bench/modes/run.sh BUILD_DIR [ROUNDS] [PARAMS...]
set -u
build=${1:-build}
rounds=${2:-3}
shift 2 2>/dev/null || shift $#
params=${*:-"1000000 11700000"}
dir=$(mktemp -d /tmp/tributary-modes.XXXXXX)
pid=""
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# One server per (mode, size); prints the median round time of $rounds rounds.
run_one() {
	mode=$1
	p=$2
	rm -rf "$dir/data" "$dir/port"
	"$build/tributary" up --listen 127.0.0.1:0 --port-file "$dir/port" --data-dir "$dir/data" \
		--arena-mb 3072 --dataplane "$mode" 2>"$dir/up.log" &
	pid=$!
	i=0
	while [ ! -s "$dir/port" ]; do
		i=$((i + 1))
		[ $i -gt 200 ] && { cat "$dir/up.log" >&2; exit 1; }
		sleep 0.05
	done
	"$build/tributary" simulate --job bench --clients 100 --rounds "$rounds" --params "$p" \
		--format raw --url "http://127.0.0.1:$(cat "$dir/port")" --data-dir "$dir/data" \
		--quiet >"$dir/sim.out" 2>"$dir/sim.err"
	rc=$?
	kill -TERM "$pid"
	wait "$pid" 2>/dev/null
	pid=""
	if [ $rc -ne 0 ]; then
		echo "bench/modes: simulate failed on $mode ($p params):" >&2
		cat "$dir/sim.out" "$dir/sim.err" >&2
		exit 1
	fi
	grep -q "data plane: $mode" "$dir/up.log" || {
		echo "bench/modes: the server did not run $mode:" >&2
		head -5 "$dir/up.log" >&2
		exit 1
	}
	# "round r: N updates in T s ..." -> the median T
	sed -n 's/^round [0-9]*: [0-9]* updates in \([0-9.]*\) s.*/\1/p' "$dir/sim.out" |
		sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

echo "round time, 100 updates per round, median of $rounds rounds (simulate --format raw)"
printf "%-12s %-10s %12s %10s\n" "params" "dataplane" "round s" "vs shm+bpf"
for p in $params; do
	base=""
	for mode in shm+bpf shm+unix tcp; do
		t=$(run_one "$mode" "$p") || exit 1
		[ -z "$base" ] && base=$t
		printf "%-12s %-10s %12s %10s\n" "$p" "$mode" "$t" \
			"$(awk -v t="$t" -v b="$base" 'BEGIN { printf "%.2fx", t / b }')"
	done
done
