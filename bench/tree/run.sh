#!/bin/sh
# SPDX-License-Identifier: MIT
# The planned, autoscaled tree against one fixed leaf, and why on this machine (issue 17): for
# each case, round time (median of ROUNDS) of a planned job with the autoscaler capped at
# cores - 1 leaves folding (the default), the same uncapped (--fold-cores 64: the autoscaler of
# before, splitting on queue depth alone), and one fixed leaf (fan_in = clients), each in its own
# server; the scale-outs and refused splits from /metrics; and the one-leaf fold rate
# (bench_fold, 64 MiB buffers, out of cache) against the ingest rate the fixed leaf reached.
# Folding is the bottleneck only where the fold rate is below the ingest rate.
# usage: bench/tree/run.sh BUILD_DIR [ROUNDS]
set -u
build=${1:-build}
rounds=${2:-3}
. "$(dirname "$0")/../../scripts/lib-up.sh"
up_init tree

"$build/bench/fold/bench_fold" --mb 64 --reps 5 >"$dir/fold.txt" || { cat "$dir/fold.txt"; exit 1; }
# The median column's neighbour: "upd GB/s" is the last field before the closing bar.
fold_f32=$(awk -F'|' '/^\| fold k=1 +\| offset +\|/ { gsub(/ /, "", $7); print $7 }' "$dir/fold.txt")
fold_i8=$(awk -F'|' '/^\| fold I8 x scale/ { gsub(/ /, "", $7); print $7 }' "$dir/fold.txt")
echo "one leaf folds (bench_fold, 64 MiB, median): f32 $fold_f32 GB/s of updates, I8 $fold_i8 GB/s"
echo "cores online: $(getconf _NPROCESSORS_ONLN); 1-minute load average $(cut -d' ' -f1 /proc/loadavg)"

metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

# case job clients params json fold-cores -> "median_s scale_outs refused"
one() {
	up_start "$build" --arena-mb 2048 --fold-cores "$6" || exit 1
	curl -sf -H "Authorization: Bearer $admin" "$url/v1/jobs" \
		-d "{\"name\":\"$2\",\"clients_per_round\":$3,\"params\":$4$5}" >/dev/null ||
		{ echo "bench/tree: creating $2 failed" >&2; up_stop; exit 1; }
	"$build/tributary" simulate --job "$2" --clients "$3" --rounds "$rounds" --params "$4" \
		--format raw --url "$url" --data-dir "$dir/data" --quiet >"$dir/$2.out" 2>&1 ||
		{ cat "$dir/$2.out" >&2; up_stop; exit 1; }
	med=$(sed -n 's/^round [0-9]*: [0-9]* updates in \([0-9.]*\) s.*/\1/p' "$dir/$2.out" |
		sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
	echo "$med $(metric tributary_autoscale_scale_outs_total) $(metric tributary_autoscale_scale_outs_capped_total)"
	up_stop >/dev/null 2>&1
	pid=""
}

printf "%-24s %-26s %9s %7s %10s %8s\n" case tree "round s" "x leaf" scale-outs refused
for c in "1000 100000 fedavg" "100 1000000 fedavg"; do
	set -- $c
	n=$1 p=$2 alg=$3
	j=",\"algorithm\":\"$alg\""
	name="$n x $p $alg"
	leaf=$(one "$name" single "$n" "$p" "$j,\"fan_in\":$n" 0) || exit 1
	capped=$(one "$name" auto "$n" "$p" "$j" 0) || exit 1
	free=$(one "$name" free "$n" "$p" "$j" 64) || exit 1
	ls=${leaf%% *}
	for row in "one fixed leaf:$leaf" "planned, capped:$capped" "planned, uncapped:$free"; do
		set -- ${row#*:}
		printf "%-24s %-26s %9s %7s %10s %8s\n" "$name" "${row%%:*}" "$1" \
			"$(awk -v a="$1" -v l="$ls" 'BEGIN { printf "%.2f", a / l }')" "$2" "$3"
	done
	awk -v n="$n" -v p="$p" -v l="$ls" -v f="$fold_f32" 'BEGIN {
		mbs = n * p * 4 / 1e6 / l
		printf "  ingest reached by the fixed leaf %.0f MB/s; one leaf folds %.0f MB/s: %.1fx faster, %s\n",
			mbs, f * 1e3, f * 1e3 / mbs,
			(f * 1e3 > mbs ? "folding is not the bottleneck" : "folding is the bottleneck") }'
	# The target's verdict, one line per case: bottleneck (1/0), planned capped / one leaf.
	echo "$(awk -v n="$n" -v p="$p" -v l="$ls" -v f="$fold_f32" \
		'BEGIN { print (f * 1e3 <= n * p * 4 / 1e6 / l) ? 1 : 0 }') ${capped%% *} $ls $name" \
		>>"$dir/verdict"
done
awk '{ if ($1) { hit++; if ($2 < $3) won++; printf "  %s x %s: planned %s s, one leaf %s s\n", $4, $6, $2, $3 } }
END {
	if (hit)
		printf "target: folding is the bottleneck in %d case(s); the planned, autoscaled tree beats one fixed leaf in %d: %s\n", hit, won, won ? "PASS" : "MISS"
	else
		printf "target: no case on this machine where folding is the bottleneck (one leaf folds faster than the rounds ingest, lines above): MISS, and why\n"
}' "$dir/verdict"
