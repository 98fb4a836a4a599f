#!/bin/sh
# SPDX-License-Identifier: MIT
# The planned, autoscaled tree against one fixed leaf, and why on this machine (issue 17): for
# each case (clients x params, the dtype of the updates), round time (median of ROUNDS) of a
# planned job with the autoscaler as it is by default (at most cores - 1 leaves folding), the
# same uncapped (--fold-cores 64: split on queue depth alone), and one fixed leaf (fan_in =
# clients), each in its own server; the scale-outs and refused splits from /metrics; and, to say
# whether folding is the bottleneck, the CPU seconds of the gateway, of the functions (leaves
# and top) and of the client (simulate, on the same cores) per GB of updates, from the
# scheduler's clocks, with the time the functions spent runnable but waiting for a CPU. Beside
# them, in wall time, the one-leaf fold rate of the case's dtype (bench_fold, 64 MiB buffers,
# out of cache) and the fixed leaf's upload rate (simulate: first POST to last 202).
# I8 and F16 updates carry 4x and 2x fewer bytes than F32 for the same fold work, so there the
# fold can fall behind the gateway. Every model is checked against simulate's float64 reference.
# usage: bench/tree/run.sh BUILD_DIR [ROUNDS]
#   TREE_CASES="N P DTYPE [ALGORITHM];..." overrides the cases (DTYPE f32, f16, bf16 or i8;
#   ALGORITHM fedavg by default; another one's model is not the mean simulate checks: --no-check).
set -u
build=${1:-build}
rounds=${2:-3}
cases=${TREE_CASES:-"1000 100000 f32;100 1000000 f32;1000 100000 i8;100 1000000 i8;100 1000000 f16;20 10000000 i8;1000 100000 i8 fedadam"}
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

tck=$(getconf CLK_TCK)
# Without the scheduler's statistics the CPU columns would read 0 and the verdict would be void.
[ -r /proc/self/schedstat ] ||
	{ echo "bench/tree: /proc/PID/schedstat is missing (a kernel without CONFIG_SCHEDSTATS)" >&2; exit 1; }
# CPU seconds of process $1, every thread, from the scheduler's own clock (/proc/PID/task/*/
# schedstat: ns on a CPU, then ns runnable but waiting for one), as "on waited".
cpu_of() { cat /proc/"$1"/task/*/schedstat 2>/dev/null |
	awk '{ r += $1; w += $2 } END { printf "%.3f %.3f", r / 1e9, w / 1e9 }'; }
# CPU seconds of the children process $1 reaped (/proc/PID/stat fields 16, 17, in ticks).
reaped_of() { awk -v t="$tck" '{ printf "%.3f", ($16 + $17) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Children's CPU seconds in `times`' output $1 (its second line: user, system). `times` itself
# runs in the shell that waited for them, not in a command substitution (a fork starts at 0).
kids_cpu() { awk 'END { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } printf "%.2f", s }' "$1"; }

metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# case job clients params json fold-cores dtype check ->
#   "median_s scale_outs refused upload_MB/s gateway_cpu_s functions_cpu_s client_cpu_s total_s
#    functions_waiting_s"
# The gateway's CPU is the server process's own; the functions' (leaves and top: the fold and
# their hand-offs) that of its children, live (warm) or reaped; the client's is simulate's.
one() {
	up_start "$build" --arena-mb 2048 --fold-cores "$6" || exit 1
	curl -sf -H "Authorization: Bearer $admin" "$url/v1/jobs" \
		-d "{\"name\":\"$2\",\"clients_per_round\":$3,\"params\":$4$5}" >/dev/null ||
		{ echo "bench/tree: creating $2 failed" >&2; up_stop; exit 1; }
	times >"$dir/times0"
	gw0=$(cpu_of "$pid" | cut -d' ' -f1) k0=$(kids_cpu "$dir/times0") t0=$(date +%s.%N)
	"$build/tributary" simulate --job "$2" --clients "$3" --rounds "$rounds" --params "$4" \
		--format safetensors --dtype "$7" --url "$url" --data-dir "$dir/data" $8 \
		--quiet >"$dir/$2.out" 2>&1 || { cat "$dir/$2.out" >&2; up_stop; exit 1; }
	times >"$dir/times1"
	t1=$(date +%s.%N) k1=$(kids_cpu "$dir/times1") gw1=$(cpu_of "$pid" | cut -d' ' -f1)
	# The functions: the live ones (warm for --warm-s, so all of them in a run this short),
	# on a CPU and waiting for one, and what any that exited used.
	fns="$(reaped_of "$pid") 0"
	for c in $(ps -o pid= --ppid "$pid"); do fns="$fns $(cpu_of "$c")"; done
	fnw=$(echo "$fns" | awk '{ for (i = 2; i <= NF; i += 2) s += $i; printf "%.3f", s }')
	fns=$(echo "$fns" | awk '{ for (i = 1; i <= NF; i += 2) s += $i; printf "%.3f", s }')
	med=$(sed -n 's/^round [0-9]*: [0-9]* updates in \([0-9.]*\) s.*/\1/p' "$dir/$2.out" | median)
	up=$(sed -n 's/^round .*updates\/s, \([0-9.]*\) MB\/s upload.*/\1/p' "$dir/$2.out" | median)
	echo "$med $(metric tributary_autoscale_scale_outs_total) $(metric tributary_autoscale_scale_outs_capped_total) $up" \
		"$(awk -v a="$gw0" -v b="$gw1" 'BEGIN { printf "%.3f", b - a }') $fns" \
		"$(awk -v a="$k0" -v b="$k1" 'BEGIN { printf "%.2f", b - a }')" \
		"$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') $fnw"
	up_stop >/dev/null 2>&1
	pid=""
}

printf "%-22s %-20s %8s %6s %7s %7s %8s %26s\n" case tree "round s" "x leaf" "scale" refused "upload" "CPU s/GB gateway fns client"
printf "%-22s %-20s %8s %6s %7s %7s %8s\n" "" "" "" "" outs "" "MB/s"
echo "$cases" | tr ';' '\n' | while read -r n p dt alg; do
	[ -n "$n" ] || continue
	alg=${alg:-fedavg} check=""
	# A server optimiser steps once at the top: the model is not the FedAvg mean to check.
	[ "$alg" = fedavg ] || check=--no-check
	case $dt in
	f32) fold=$fold_f32 ;; f16) fold=$fold_f16 ;; bf16) fold=$fold_bf16 ;; i8) fold=$fold_i8 ;;
	*) echo "bench/tree: dtype '$dt' (want f32, f16, bf16 or i8)" >&2; exit 1 ;;
	esac
	j=",\"algorithm\":\"$alg\""
	name="$n-x-$p-$dt"
	leaf=$(one "$name" single "$n" "$p" "$j,\"fan_in\":$n" 0 "$dt" "$check") || exit 1
	auto=$(one "$name" auto "$n" "$p" "$j" 0 "$dt" "$check") || exit 1
	free=$(one "$name" free "$n" "$p" "$j" 64 "$dt" "$check") || exit 1
	ls=${leaf%% *}
	gb=$(awk -v n="$n" -v p="$p" -v r="$rounds" -v dt="$dt" \
		'BEGIN { print n * p * r * (dt == "i8" ? 1 : dt == "f32" ? 4 : 2) / 1e9 }')
	for row in "one fixed leaf:$leaf" "planned, autoscaled:$auto" "planned, uncapped:$free"; do
		set -- ${row#*:}
		printf "%-22s %-20s %8s %6s %7s %7s %8s %26s\n" "$n x $p $dt${check:+ $alg}" "${row%%:*}" "$1" \
			"$(awk -v a="$1" -v l="$ls" 'BEGIN { printf "%.2f", a / l }')" "$2" "$3" "$4" \
			"$(awk -v g="$5" -v f="$6" -v c="$7" -v gb="$gb" 'BEGIN { printf "%.2f %.2f %.2f", g / gb, f / gb, c / gb }')"
	done
	set -- $leaf
	# Where a fixed leaf's round goes, in CPU: the functions (the fold) against the gateway.
	awk -v g="$5" -v f="$6" -v c="$7" -v w="$8" -v fw="$9" 'BEGIN {
		printf "  fixed leaf, %.2f s of rounds: gateway %.2f CPU s (%.0f%% of a core), functions %.2f (%.0f%%; %.2f s more runnable, waiting for a CPU), client %.2f (%.0f%%): the fold costs %.2fx the gateway\n",
			w, g, 100 * g / w, f, 100 * f / w, fw, c, 100 * c / w, (g > 0 ? f / g : 0) }'
	# The rates in wall time: bench_fold's, measured alone, against the fixed leaf's upload.
	awk -v n="$n" -v p="$p" -v l="$ls" -v f="$fold" -v up="$4" -v dt="$dt" 'BEGIN {
		data = n * p * (dt == "i8" ? 1 : dt == "f32" ? 4 : 2) / 1e6
		printf "  ingest %.0f MB/s (upload, fixed leaf; whole round %.0f MB/s); bench_fold %s %.0f MB/s: %.2fx the ingest\n",
			up, data / l, dt, f * 1e3, f * 1e3 / up }'
	# The target's verdict, one line per case: fold-bound (1/0), autoscaled, one leaf, fold,
	# ingest, the case, functions' CPU / gateway's CPU.
	echo "$(awk -v g="$5" -v f="$6" 'BEGIN { print ((g > 0 && f >= g) ? 1 : 0) }') ${auto%% *} $ls $fold $4 $n x $p $dt$(
		[ -z "$check" ] || echo "-$alg") $(awk -v g="$5" -v f="$6" 'BEGIN { printf "%.2f", (g > 0 ? f / g : 0) }')" \
		>>"$dir/verdict"
done || exit 1
# Folding is the bottleneck of a case when its fixed leaf's functions needed at least the
# gateway's CPU for the same bytes: then one leaf cannot keep up with a gateway given as much CPU,
# and a second leaf on a second core would help. CPU seconds, from the scheduler, are what the
# other tenants of a shared machine inflate least; a rate in wall time (bench_fold's, alone, or
# a round's) is also the share of the CPU it got (bench_fold's I8 rate went from 0.28 to 1.46
# GB/s between two runs of one hour).
awk -v cores="$cores" '{ printf "  %s x %s %s: fold CPU / gateway CPU %.2f (bench_fold %.2f GB/s, ingest %.2f GB/s); autoscaled %s s, one leaf %s s (%.2fx)\n",
		$6, $8, $9, $10, $4, $5 / 1e3, $2, $3, $2 / $3
	c = $10; hi = (hi == "" || c > hi) ? c : hi
	if ($1) { hit++; if ($2 < $3) { won++; best = (best == "" || $2 / $3 < best) ? $2 / $3 : best } } }
END {
	if (hit && won)
		printf "target: folding is the bottleneck in %d case(s) on %d cores; the planned, autoscaled tree beats one fixed leaf in %d (best %.2fx the leaf): PASS\n", hit, cores, won, best
	else if (hit)
		printf "target: folding is the bottleneck in %d case(s) on %d cores; the planned, autoscaled tree beats one fixed leaf in none (lines above): MISS\n", hit, cores
	else
		printf "target: no case on %d cores where folding is the bottleneck: a fixed leaf'"'"'s functions used at most %.2fx the gateway'"'"'s CPU for the same bytes (lines above), so a second leaf has no fold to take over: MISS, and why\n", cores, hi
}' "$dir/verdict"
