#!/bin/sh
# SPDX-License-Identifier: MIT
# Function lifecycle: cold start and warm hand-off medians against this machine's floors (a
# static binary's posix_spawn+exit, an eventfd wake between processes), alone (bench_lifecycle)
# and from /metrics under a round; and round time with the planner and autoscaler on against one
# fixed leaf, for 1000 clients x 100k parameters, in one run.
# usage: bench/lifecycle/run.sh BUILD_DIR [ROUNDS] [CLIENTS] [CONNECTIONS]
# (the issue's under-load case: bench/lifecycle/run.sh build 3 10000 1000)
set -u
build=${1:-build}
rounds=${2:-3}
clients=${3:-1000}
conns=${4:-16}
# One fixed leaf takes every client, up to the API's fan_in limit (4096): above it, a few leaves.
fanin=$((clients < 4096 ? clients : 4096))
. "$(dirname "$0")/../../scripts/lib-up.sh"
up_init life

# Floors and the function alone first (the runtime's spawn and config code, a blocking reader).
"$build/bench/lifecycle/bench_lifecycle" --fn "$build/tributary-fn" \
	--nop "$build/bench/lifecycle/bench_nop" --iters 200 --arena-mb 256 >"$dir/alone.txt" ||
	{ cat "$dir/alone.txt" >&2; exit 1; }
cat "$dir/alone.txt"
echo
# The floor rows: label, median, p99, floor, ratio; the median is the fourth field from the end.
spawn_floor=$(awk '/^floor: posix_spawn/ { print $(NF - 3) }' "$dir/alone.txt")
wake_floor=$(awk '/^floor: eventfd/ { print $(NF - 3) }' "$dir/alone.txt")

# A pool of 8 pre-started functions (--fn-pool): the first round's leaves and top need no
# process start on its path. Filled one per tick; wait for it before the clients come.
pool=8
up_start "$build" --arena-mb 2048 --fn-pool $pool || exit 1
_w=0
until [ "$(curl -s "$url/metrics" | awk '/^tributary_functions / { print $2 }')" -ge $pool ]; do
	_w=$((_w + 1))
	[ $_w -gt 100 ] && { echo "bench/lifecycle: the pool of $pool did not fill" >&2; exit 1; }
	sleep 0.1
done
# The pool's own starts (before any client): the rest of the cold starts below are on demand.
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
_w=0
until [ "$(metric tributary_fn_cold_start_seconds_count)" -ge $pool ]; do
	_w=$((_w + 1))
	[ $_w -gt 100 ] && { echo "bench/lifecycle: the pool's READYs did not come" >&2; exit 1; }
	sleep 0.1
done
pool_n=$(metric tributary_fn_cold_start_seconds_count)
pool_s=$(metric tributary_fn_cold_start_seconds_sum)

median_round() { # job, extra JSON
	curl -sf -H "Authorization: Bearer $admin" "$url/v1/jobs" \
		-d "{\"name\":\"$1\",\"clients_per_round\":$clients,\"params\":100000$2}" >/dev/null ||
		{ echo "bench/lifecycle: creating $1 failed" >&2; exit 1; }
	"$build/tributary" simulate --job "$1" --clients "$clients" --connections "$conns" --rounds "$rounds" --params 100000 \
		--format raw --url "$url" --data-dir "$dir/data" --quiet >"$dir/$1.out" 2>&1 ||
		{ cat "$dir/$1.out" >&2; exit 1; }
	sed -n 's/^round [0-9]*: [0-9]* updates in \([0-9.]*\) s.*/\1/p' "$dir/$1.out" |
		sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

auto=$(median_round auto "") || exit 1
single=$(median_round single ",\"fan_in\":$fanin") || exit 1
leaves=$(grep -c "job auto round .*: plan:" "$dir/up.log")
plan=$(grep "job auto round 1: plan:" "$dir/up.log" | sed 's/.*plan: //; s/ (.*//')
outs=$(grep -c "job auto .*autoscaler" "$dir/up.log")
echo "round time, $clients clients x 100k params over $conns connections, median of $rounds rounds"
printf "%-34s %10s %10s\n" "tree" "round s" "ratio"
printf "%-34s %10s %10s\n" "planned + autoscaler ($plan)" "$auto" "1.00x"
printf "%-34s %10s %10s\n" "fixed fan-in $fanin" "$single" \
	"$(awk -v a="$auto" -v s="$single" 'BEGIN { printf "%.2fx", s / a }')"
echo "autoscaler scale-outs in the planned job: $outs; plans logged: $leaves"
curl -s "$url/metrics" | awk -v sf="$spawn_floor" -v wf="$wake_floor" -v pool="$pool" \
	-v pn="$pool_n" -v ps="$pool_s" '
/^tributary_fn_cold_start_seconds\{quantile="0.5"\}/ { c50 = $2 }
/^tributary_fn_cold_start_seconds\{quantile="0.99"\}/ { c99 = $2 }
/^tributary_fn_cold_start_seconds_count/ { cn = $2 }
/^tributary_fn_cold_start_seconds_sum/ { cs = $2 }
/^tributary_fn_warm_handoff_seconds\{quantile="0.5"\}/ { w50 = $2 }
/^tributary_fn_warm_handoff_seconds\{quantile="0.99"\}/ { w99 = $2 }
/^tributary_fn_warm_handoff_seconds_count/ { wn = $2 }
/^tributary_fn_ready_notice_seconds\{quantile="0.5"\}/ { n50 = $2 }
/^tributary_fn_ready_notice_seconds\{quantile="0.99"\}/ { n99 = $2 }
/^tributary_functions_spawned_total/ { sp = $2 }
/^tributary_functions_reused_total/ { ru = $2 }
function verdict(v, t) { return v <= t ? "PASS" : "MISS" }
END {
	print "under the rounds above (--fn-pool " pool "), from /metrics (the function stamps READY; floors from the table above):"
	printf "cold start (spawn -> ready): median %.3f ms, p99 %.3f ms over %d; %.1fx the spawn floor; target <= 1 ms: %s\n", c50 * 1e3, c99 * 1e3, cn, c50 * 1e6 / sf, verdict(c50, 0.001)
	if (cn > pn)
		printf "  of which on demand during the rounds: %d, mean %.3f ms (the pool'"'"'s %d before them: mean %.3f ms)\n", cn - pn, (cs - ps) * 1e3 / (cn - pn), pn, ps * 1e3 / pn
	else
		printf "  none on demand during the rounds (the pool'"'"'s %d before them: mean %.3f ms)\n", pn, ps * 1e3 / pn
	printf "warm hand-off (config -> ready): median %.1f us, p99 %.1f us over %d; %.1fx the wake floor; target <= 50 us: %s\n", w50 * 1e6, w99 * 1e6, wn, w50 * 1e6 / wf, verdict(w50, 0.00005)
	printf "under load, p99: cold start %.3f ms (target <= 5 ms: %s), warm hand-off %.3f ms (target <= 1 ms: %s)\n", c99 * 1e3, verdict(c99, 0.005), w99 * 1e3, verdict(w99, 0.001)
	printf "READY read by the event loop after the stamp: median %.3f ms, p99 %.3f ms\n", n50 * 1e3, n99 * 1e3
	printf "functions spawned %d, configs served warm %d (%.1f%%)\n", sp, ru, 100 * ru / (sp + ru)
}'
