#!/bin/sh
# SPDX-License-Identifier: MIT
# The planned, autoscaled tree against one fixed leaf, and why on this machine (issue 17): for
# each case (clients x params, the dtype of the updates), round time (median of ROUNDS) of a
# planned job with the autoscaler as it is by default (its cap measured: ctl_plan_fold_cap), the
# same uncapped (--fold-cores 64: split on queue depth alone), and one fixed leaf (fan_in =
# clients), each in its own server; the scale-outs and refused splits from /metrics; and, to say
# whether folding is the bottleneck, the one-leaf fold rate of that dtype (bench_fold, 64 MiB
# buffers, out of cache) against the ingest rate (simulate's upload MB/s: first POST to last
# 202, which the fold does not hold back while the arena has room) of the fixed leaf's rounds.
# I8 and F16 updates carry 4x and 2x fewer bytes than F32 for the same fold work, so there the
# fold can fall behind the gateway. Every model is checked against simulate's float64 reference.
# usage: bench/tree/run.sh BUILD_DIR [ROUNDS]
#   TREE_CASES="N P DTYPE;..." overrides the cases (DTYPE f32, f16, bf16 or i8).
set -u
build=${1:-build}
rounds=${2:-3}
cases=${TREE_CASES:-"1000 100000 f32;100 1000000 f32;1000 100000 i8;100 1000000 i8;100 1000000 f16;20 10000000 i8"}
. "$(dirname "$0")/../../scripts/lib-up.sh"
up_init tree

"$build/bench/fold/bench_fold" --mb 64 --reps 5 >"$dir/fold.txt" || { cat "$dir/fold.txt"; exit 1; }
# The median column's neighbour: "upd GB/s" is the last field before the closing bar.
fold_row() { awk -F'|' -v r="$1" 'index($2, r) == 2 { gsub(/ /, "", $7); print $7; exit }' "$dir/fold.txt"; }
fold_f32=$(awk -F'|' '/^\| fold k=1 +\| offset +\|/ { gsub(/ /, "", $7); print $7 }' "$dir/fold.txt")
fold_f16=$(fold_row "fold F16")
fold_bf16=$(fold_row "fold BF16")
fold_i8=$(fold_row "fold I8 x scale")
echo "one leaf folds (bench_fold, 64 MiB, median, GB/s of update bytes): f32 $fold_f32, f16 $fold_f16, bf16 $fold_bf16, i8 $fold_i8"
cores=$(getconf _NPROCESSORS_ONLN)
echo "cores online: $cores; 1-minute load average $(cut -d' ' -f1 /proc/loadavg)"

metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# case job clients params json fold-cores dtype -> "median_s scale_outs refused upload_MB/s"
one() {
	up_start "$build" --arena-mb 2048 --fold-cores "$6" || exit 1
	curl -sf -H "Authorization: Bearer $admin" "$url/v1/jobs" \
		-d "{\"name\":\"$2\",\"clients_per_round\":$3,\"params\":$4$5}" >/dev/null ||
		{ echo "bench/tree: creating $2 failed" >&2; up_stop; exit 1; }
	"$build/tributary" simulate --job "$2" --clients "$3" --rounds "$rounds" --params "$4" \
		--format safetensors --dtype "$7" --url "$url" --data-dir "$dir/data" \
		--quiet >"$dir/$2.out" 2>&1 || { cat "$dir/$2.out" >&2; up_stop; exit 1; }
	med=$(sed -n 's/^round [0-9]*: [0-9]* updates in \([0-9.]*\) s.*/\1/p' "$dir/$2.out" | median)
	up=$(sed -n 's/^round .*updates\/s, \([0-9.]*\) MB\/s upload.*/\1/p' "$dir/$2.out" | median)
	echo "$med $(metric tributary_autoscale_scale_outs_total) $(metric tributary_autoscale_scale_outs_capped_total) $up"
	up_stop >/dev/null 2>&1
	pid=""
}

printf "%-22s %-18s %9s %7s %10s %8s %10s\n" case tree "round s" "x leaf" scale-outs refused "upload MB/s"
echo "$cases" | tr ';' '\n' | while read -r n p dt; do
	[ -n "$n" ] || continue
	case $dt in
	f32) fold=$fold_f32 ;; f16) fold=$fold_f16 ;; bf16) fold=$fold_bf16 ;; i8) fold=$fold_i8 ;;
	*) echo "bench/tree: dtype '$dt' (want f32, f16, bf16 or i8)" >&2; exit 1 ;;
	esac
	j=",\"algorithm\":\"fedavg\""
	name="$n-x-$p-$dt"
	leaf=$(one "$name" single "$n" "$p" "$j,\"fan_in\":$n" 0 "$dt") || exit 1
	auto=$(one "$name" auto "$n" "$p" "$j" 0 "$dt") || exit 1
	free=$(one "$name" free "$n" "$p" "$j" 64 "$dt") || exit 1
	ls=${leaf%% *}
	for row in "one fixed leaf:$leaf" "planned, autoscaled:$auto" "planned, uncapped:$free"; do
		set -- ${row#*:}
		printf "%-22s %-18s %9s %7s %10s %8s %10s\n" "$n x $p $dt" "${row%%:*}" "$1" \
			"$(awk -v a="$1" -v l="$ls" 'BEGIN { printf "%.2f", a / l }')" "$2" "$3" "$4"
	done
	set -- $leaf
	# Ingest: the fixed leaf's upload rate (bytes of update data). Fold-bound: fold <= ingest.
	awk -v n="$n" -v p="$p" -v l="$ls" -v f="$fold" -v up="$4" -v dt="$dt" 'BEGIN {
		data = n * p * (dt == "i8" ? 1 : dt == "f32" ? 4 : 2) / 1e6
		printf "  ingest %.0f MB/s (upload, fixed leaf; whole round %.0f MB/s); one leaf folds %s %.0f MB/s: %.2fx the ingest, %s\n",
			up, data / l, dt, f * 1e3, f * 1e3 / up,
			(f * 1e3 > up ? "folding is not the bottleneck" : "folding is the bottleneck") }'
	# The target's verdict, one line per case: bottleneck (1/0), autoscaled, one leaf, fold, ingest.
	echo "$(awk -v f="$fold" -v up="$4" 'BEGIN { print (f * 1e3 <= up) ? 1 : 0 }') ${auto%% *} $ls $fold $4 $n x $p $dt" \
		>>"$dir/verdict"
done || exit 1
awk -v cores="$cores" '{ printf "  %s x %s %s: fold %.2f GB/s, ingest %.2f GB/s (fold/ingest %.2f); autoscaled %s s, one leaf %s s (%.2fx)\n",
		$6, $8, $9, $4, $5 / 1e3, $4 * 1e3 / $5, $2, $3, $2 / $3
	if ($1) { hit++; if ($2 < $3) { won++; best = (best == "" || $2 / $3 < best) ? $2 / $3 : best } } }
END {
	if (hit && won)
		printf "target: folding is the bottleneck in %d case(s) on %d cores; the planned, autoscaled tree beats one fixed leaf in %d (best %.2fx the leaf): PASS\n", hit, cores, won, best
	else if (hit)
		printf "target: folding is the bottleneck in %d case(s) on %d cores; the planned, autoscaled tree beats one fixed leaf in none (lines above): MISS\n", hit, cores
	else
		printf "target: no case on %d cores where folding is the bottleneck (one leaf folds faster than the gateway ingests, lines above): MISS, and why\n", cores
}' "$dir/verdict"
