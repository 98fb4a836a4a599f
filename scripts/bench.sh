#!/bin/sh
# SPDX-License-Identifier: MIT
# `make bench`: every benchmark in bench/, each against its baseline in the same run.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
# Baselines and plots need nginx, aiohttp, matplotlib (Debian packages); quiet when present.
"$root/scripts/deps-bench.sh" || exit 1
. "$root/scripts/lib-up.sh"
up_init bench
rc=0

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo
echo "== bench/fold: fold kernel vs memory-bandwidth triad"
"$build/bench/fold/bench_fold" --mb 64 >"$dir/fold.txt" || rc=1
cat "$dir/fold.txt"

echo
echo "== bench/ingest: HTTP ingest into tributary up vs raw loopback TCP"
up_start "$build" || exit 1
"$build/bench/ingest/bench_ingest" --url "$url" --data-dir "$dir/data" --updates 100 \
	--params 1000000 || rc=1
up_stop

echo
echo "== bench/ingest/scaling.py: 16 connections, gateway on every core (--rx-threads) vs one core"
/usr/bin/python3 "$root/bench/ingest/scaling.py" --build "$build" || rc=1

echo
echo "== bench/ingest/answer_latency.py: the gateway's time from the last body byte to its 202"
/usr/bin/python3 "$root/bench/ingest/answer_latency.py" --build "$build" || rc=1

echo
echo "== bench/hop: one descriptor hop, sk_msg redirect vs Unix socket vs loopback TCP"
"$build/bench/hop/bench_hop" || rc=1

echo
echo "== bench/modes: round time per data plane (100 updates of 1M and 11.7M parameters)"
bench/modes/run.sh "$build" 3 1000000 11700000 || rc=1

echo
echo "== bench/lifecycle: cold start, warm hand-off, planner + autoscaler vs one fixed leaf"
bench/lifecycle/run.sh "$build" 3 || rc=1

echo
echo "== bench/lifecycle under the issue's load: 10,000 clients x 100k, 1000 connections (p99 targets)"
bench/lifecycle/run.sh "$build" 1 10000 1000 || rc=1

echo
echo "== bench/tree: planned tree (autoscaler capped, uncapped) vs one fixed leaf; F32, I8, F16, 10M, fedadam; fold vs gateway CPU"
bench/tree/run.sh "$build" 3 || rc=1

echo
echo "== bench/algorithms: per algorithm, 100 updates of 1M parameters, relative to FedAvg"
bench/algorithms/run.sh "$build" 3 || rc=1

echo
echo "== bench/secagg: a SecAgg+ round vs plain FedAvg (100 x 1M, server CPU), PRG vs ChaCha20"
/usr/bin/python3 "$root/bench/secagg/round.py" --build "$build" || rc=1
echo "== bench/secagg (recorded): the same with each stage request waiting for the previous answer (--conns 1)"
/usr/bin/python3 "$root/bench/secagg/round.py" --build "$build" --conns 1 || rc=1
echo "== bench/secagg/stages.py: the gateway's CPU per secure-round stage request vs GET /v1/jobs/NAME"
/usr/bin/python3 "$root/bench/secagg/stages.py" --build "$build" || rc=1
echo "== bench/secagg/bench_unmask_cpu: the unmask stage's Shamir rebuild vs before"
"$build/bench/secagg/bench_unmask_cpu" || rc=1

echo
echo "== bench/baselines: HTTP ingest into Tributary, the Python baseline and nginx vs raw TCP"
/usr/bin/python3 "$root/bench/baselines/ingest.py" --build "$build" \
	--csv "$root/bench/baselines/results.csv" || rc=1

echo
echo "== bench/tls: HTTPS ingest into Tributary vs plain HTTP and nginx with TLS"
/usr/bin/python3 "$root/bench/tls/run.py" --build "$build" --csv "$root/bench/tls/results.csv" \
	|| rc=1

echo
echo "== bench/round: round time, CPU and memory, Tributary vs the Python baseline"
# BENCH_FULL=1 make bench: more rounds a cell, and the 1000 x 11.7M cell (~10 min here).
/usr/bin/python3 "$root/bench/round/run.py" --build "$build" ${BENCH_FULL:+--full} \
	--csv "$root/bench/round/results.csv" || rc=1

echo
echo "== bench/cluster: 3 netns nodes x 300 clients x 1M, locality vs round-robin placement"
/usr/bin/python3 "$root/bench/cluster/run.py" --build "$build" --clients 300 --params 1000000 \
	--rounds 3 --csv "$root/bench/cluster/results.csv" || rc=1

echo
echo "== bench/plot: PNGs in docs/img/"
/usr/bin/python3 "$root/bench/plot/plot.py" --round "$root/bench/round/results.csv" \
	--fold "$dir/fold.txt" --ingest "$root/bench/baselines/results.csv" --out "$root/docs/img" ||
	rc=1
exit $rc
