#!/bin/sh
# SPDX-License-Identifier: MIT
# `make bench`: every benchmark in bench/, each against its baseline in the same run.
set -u
build=${1:-build}
dir=$(mktemp -d /tmp/tributary-bench.XXXXXX)
pid=""
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
rc=0

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo
echo "== bench/fold: fold kernel vs memory-bandwidth triad"
"$build/bench/fold/bench_fold" --mb 64 || rc=1

echo
echo "== bench/ingest: HTTP ingest into tributary up vs raw loopback TCP"
"$build/tributary" up --listen 127.0.0.1:0 --port-file "$dir/port" --data-dir "$dir/data" \
	2>"$dir/up.log" &
pid=$!
i=0
while [ ! -s "$dir/port" ]; do
	i=$((i + 1))
	if [ $i -gt 100 ]; then
		echo "bench: tributary up did not start" >&2
		cat "$dir/up.log" >&2
		exit 1
	fi
	sleep 0.1
done
"$build/bench/ingest/bench_ingest" --url "http://127.0.0.1:$(cat "$dir/port")" \
	--data-dir "$dir/data" --updates 100 --params 1000000 || rc=1
kill -TERM "$pid"
wait "$pid" 2>/dev/null
pid=""

echo
echo "== bench/hop: one descriptor hop, sk_msg redirect vs Unix socket vs loopback TCP"
"$build/bench/hop/bench_hop" || rc=1

echo
echo "== bench/modes: round time per data plane (100 updates of 1M and 11.7M parameters)"
bench/modes/run.sh "$build" 3 1000000 11700000 || rc=1

echo
echo "== bench/lifecycle: cold start, warm hand-off, planner + autoscaler vs one fixed leaf"
bench/lifecycle/run.sh "$build" 3 || rc=1
exit $rc
