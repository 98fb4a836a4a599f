#!/bin/sh
# SPDX-License-Identifier: MIT
# Round time on each data plane in one run: 100 updates of P parameters, shm+bpf = 1.0.
# usage: bench/modes/run.sh BUILD_DIR [ROUNDS] [PARAMS...]
set -u
build=${1:-build}
rounds=${2:-3}
shift 2 2>/dev/null || shift $#
params=${*:-"1000000 11700000"}
. "$(dirname "$0")/../../scripts/lib-up.sh"
up_init modes

# One server per (mode, size); prints the median round time of $rounds rounds.
run_one() {
	mode=$1
	p=$2
	# tcp keeps the round's 100 updates in the arena until its model is written: the whole round.
	arena=3072
	[ "$mode" = tcp ] && arena=$(( (p * 4 * 116 >> 20) + 64 > 3072 ? (p * 4 * 116 >> 20) + 64 : 3072 ))
	up_start "$build" --arena-mb "$arena" --dataplane "$mode" || exit 1
	"$build/tributary" simulate --job bench --clients 100 --rounds "$rounds" --params "$p" \
		--format raw --url "$url" --data-dir "$dir/data" \
		--quiet >"$dir/sim.out" 2>"$dir/sim.err"
	rc=$?
	up_stop
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
