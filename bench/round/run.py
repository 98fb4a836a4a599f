#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End-to-end round time, server CPU and server peak memory: Tributary (shm+bpf, tcp) against
the Python baseline (bench/baselines/py_server.py), N clients x P parameters, one run.

Every cell starts a fresh server, runs
    tributary simulate --job round --clients N --rounds R --params P --format raw --quiet
        --url URL --data-dir DIR
against it (the same load generator, the same arrival process: 16 keep-alive connections, each
sends its next client's update as soon as the previous one is answered), and stops it.
  round s    median over the R rounds of simulate's "round r: N updates in T s" (first POST of
             the round to the model of the round fetched by the long poll)
  CPU s      the server's process tree (server + `tributary-fn` children) per round: CPU seconds
             over the whole simulate run / R (bench/baselines/servers.py: /proc/PID/stat)
  peak MB    the server tree's peak memory from its start to its stop: RssAnon + RssShmem
             summed over the tree, plus the hugetlb memfd pages (the arena), sampled every
             50 ms (servers.py). Tributary populates its whole arena at start, so this is
             the arena as configured (one size per P, see arena_slots) plus the processes.
  used MB    Tributary: the same with the arena's peak use (tributary_arena_bytes{state="used"}
             from /metrics, sampled with the rest) in place of its reserved size: the memory
             the rounds needed. Python: = peak MB.
  cli s      simulate's own CPU seconds per round (generation, HTTP, and its float64 check
             after each round), from getrusage(RUSAGE_CHILDREN)
Ratios are to Tributary shm+bpf in the same cell of the same run (> 1: more time, CPU, memory).

The issue 17 round targets (100 x 1M, 1000 x 100k, 100 x 11.7M within 1.1x of the ingest-bound
time) are not judged on simulate's round, whose client makes bodies and checks models on the same
cores: a fresh shm+bpf server with the cell's arena runs `bench_ingest --round`, whose client is
the ingest's client (see round_vs_ingest), and the target line gives each round against the
ingest of its own bytes.

The largest cells are sampled (fewer rounds) or skipped; the output says which and why. The
Python baseline keeps every update of a round in memory (as Flower does), so a cell is skipped
for it when 2.2 x N x P x 4 bytes exceeds the memory available.

usage: run.py [--build DIR] [--full] [--quick] [--csv FILE] [--systems a,b,c]
              [--clients 10,100,1000] [--params 100000,1000000,11700000]
              [--rounds R] [--arena-slots K]
"""

import argparse
import math
import os
import resource
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "baselines"))
import servers  # noqa: E402

ROUND_RE = re.compile(r"^round (\d+): (\d+) updates in ([0-9.]+) s .* (OK|MISMATCH)$", re.M)
RETRY_RE = re.compile(r"(\d+) retries \(503\)")
SYSTEMS = {
    "shm+bpf": ("tributary", "shm+bpf", "Tributary shm+bpf"),
    "tcp": ("tributary", "tcp", "Tributary tcp"),
    "python": ("python", None, "Python aiohttp+numpy"),
}
BASE = "shm+bpf"


ROUNDS = None  # --rounds


def rounds_for(n, p, full):
    """Rounds per cell, and why it is reduced; 0 = skipped."""
    gb = n * p * 4 / 1e9  # uploaded per round
    if ROUNDS:
        return ROUNDS, ""
    if full:
        if gb < 5:
            return 7, ""
        return (3, "sampled: 3 rounds") if gb < 10 else (1, "sampled: 1 round (%.1f GB of "
                                                          "uploads)" % gb)
    if gb < 0.5:
        return 5, ""
    if gb < 1:
        return 3, ""
    if gb < 10:
        return 2, "sampled: 2 rounds"
    return 0, "skipped: %.1f GB of uploads a round; --full runs it" % gb


ARENA_SLOTS = None  # --arena-slots


def arena_slots(n):
    """Model-sized slots the arena gets for n clients.

    Tributary keeps every partial of a round, and the updates of each leaf still folding, until
    the round's model is written (docs/ARCHITECTURE.md, "No lost update": about
    model x (C/F + a.F) with F ~ sqrt(C/a), plus autoscaler leaves). Measured peaks (this
    machine, shm+bpf) were 12-15, 30-36 and 90-127 models for 10, 100 and 1000 clients, about
    3 sqrt(N) + 4 and up to 4 sqrt(N); the arena gets 1.5 x (3 sqrt(N) + 4) plus 16 for bodies
    in flight (one per connection). A smaller arena is not just slower:
    at 1000 x 1M with 48 slots the round wedged (503 "aggregation memory is full" for 120 s).
    """
    return 16 + math.ceil(1.5 * (3 * math.sqrt(n) + 4))


def arena_mb(n, p):
    """Arena (MiB) for n clients of p f32, in 64 MiB steps, at least 64 MiB."""
    slots = ARENA_SLOTS or arena_slots(n)
    return max(64, -(-(p * 4 * slots) // (64 << 20)) * 64)


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


class CellFailed(Exception):
    pass


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# Issue 17: these rounds within 1.1x of the ingest-bound time (their bytes / ingest MB/s).
BOUND_CELLS = {(100, 1000000), (1000, 100000), (100, 11700000)}
BOUND_MAX = 1.1
BOUND_ROUNDS = 5
BR_ROUND_RE = re.compile(r"^round (\d+): .*: ingest ([0-9.]+) s \(([0-9.]+) MB/s\), model at "
                         r"([0-9.]+) s, round / ingest ([0-9.]+), (\d+) retries .* (OK|MISMATCH)$",
                         re.M)
BR_SUM_RE = re.compile(r"^bench round: median of \d+ rounds: ingest ([0-9.]+) s \(([0-9.]+) "
                       r"MB/s\), round ([0-9.]+) s, round / ingest ([0-9.]+)", re.M)


def round_vs_ingest(build, work, n, p, arena):
    """A round against the ingest of its own bytes: `bench_ingest --round`, measured now.

    simulate makes every body and checks every model in float64 inside the round, on the same
    two cores (`cli s`: 1.9 s a round at 100 x 11.7M), while the ingest bound is measured with
    pre-made bodies: that compares server + heavy client with server + light client. Here one
    client does both: a fresh shm+bpf server with the cell's arena, 16 keep-alive connections
    (as simulate), each sending its own pre-made body; each round is timed from the first send
    to the last 202 (ingest: what bench_ingest times alone; its MB/s is the ingest rate) and to
    the round's model, long-polled once every 202 is in and checked against the mean made
    before the timing. ratio: median over BOUND_ROUNDS rounds of round / ingest, each round
    against its own ingest (the bound: its bytes / its ingest MB/s).
    """
    srv = servers.Server("tributary", build, work, mode="shm+bpf", arena_mb=arena)
    load0 = loadavg()
    try:
        r = subprocess.run([os.path.join(build, "bench/ingest/bench_ingest"), "--round",
                            str(BOUND_ROUNDS), "--url", srv.url, "--data-dir", srv.data_dir,
                            "--updates", str(n), "--params", str(p), "--connections", "16"],
                           capture_output=True, text=True)
    finally:
        srv.stop()
    rounds = BR_ROUND_RE.findall(r.stdout)
    m = BR_SUM_RE.search(r.stdout)
    if r.returncode or not m or len(rounds) != BOUND_ROUNDS or any(x[6] != "OK" for x in rounds):
        with open(srv.log) as f:
            log = f.read()
        raise CellFailed("bench_ingest --round N=%d P=%d failed (%d):\n%s%sserver log (last "
                         "lines):\n%s" % (n, p, r.returncode, r.stdout[-3000:], r.stderr[-2000:],
                                          "\n".join(log.splitlines()[-15:])))
    return {"ingest_s": float(m.group(1)), "ingest_mbs": float(m.group(2)),
            "round_s": float(m.group(3)), "ratio": float(m.group(4)),
            "ratios": [float(x[4]) for x in rounds], "retries": sum(int(x[5]) for x in rounds),
            "load": (load0 + loadavg()) / 2}


def run_cell(sysname, n, p, rounds, build, work, arena):
    """One server, one simulate run. Raises CellFailed with simulate's and the server's words."""
    kind, mode, _ = SYSTEMS[sysname]
    if mode == "tcp":
        # On tcp the gateway keeps every update of a round in the arena until the round's model
        # is written (the functions get copies over TCP): the sqrt(N) slots of arena_slots()
        # wedge it ("aggregation memory is full" for 120 s), so it gets the whole round.
        arena = max(arena, -(-(p * 4 * (n + 16)) // (64 << 20)) * 64 + 64)
    srv = servers.Server(kind, build, work, mode=mode or "shm+bpf", arena_mb=arena)
    sampler = servers.Sampler(srv.pid, srv.url if kind == "tributary" else None)
    sampler.start()
    load0 = loadavg()
    try:
        c0 = servers.cpu_s(srv.pid)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        r = subprocess.run([os.path.join(build, "tributary"), "simulate", "--job", "round",
                            "--clients", str(n), "--rounds", str(rounds), "--params", str(p),
                            "--format", "raw", "--quiet", "--url", srv.url,
                            "--data-dir", srv.data_dir], capture_output=True, text=True)
        wall = time.time() - t0
        cpu = servers.cpu_s(srv.pid) - c0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # simulate, just reaped
        client = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        died = srv.proc.poll()
    finally:
        sampler.stop()
        srv.stop()
    times = [float(m.group(3)) for m in ROUND_RE.finditer(r.stdout)]
    bad = [m.group(0) for m in ROUND_RE.finditer(r.stdout) if m.group(4) != "OK"]
    if r.returncode or len(times) != rounds or bad:
        with open(srv.log) as f:
            log = f.read()
        raise CellFailed("simulate against %s (%d x %d) failed (exit %d)%s:\n%s%s"
                         "server log (last lines):\n%s" %
                         (sysname, n, p, r.returncode,
                          "; the server had exited (%d) before simulate ended" % died
                          if died is not None else "",
                          r.stdout[-2000:], r.stderr[-2000:],
                          "\n".join(log.splitlines()[-15:])))
    retries = RETRY_RE.search(r.stdout)
    return {"round_s": statistics.median(times), "rounds_s": times, "cpu_s": cpu / rounds,
            "peak_mb": sampler.peak / 2**20, "arena_mb": sampler.huge / 2**20,
            "used_mb": sampler.peak_used / 2**20, "arena_used_mb": sampler.arena_used / 2**20,
            "retries": int(retries.group(1)) if retries else 0, "wall_s": wall,
            "client_cpu_s": client / rounds,
            "load": (load0 + loadavg()) / 2}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--full", action="store_true", help="5 rounds a cell, 1000 x 11.7M too")
    ap.add_argument("--quick", action="store_true", help="only 10 and 100 clients, 100k and 1M")
    ap.add_argument("--csv", default=os.path.join(HERE, "results.csv"))
    ap.add_argument("--systems", default="shm+bpf,tcp,python")
    ap.add_argument("--clients", default="10,100,1000")
    ap.add_argument("--arena-slots", type=int, help="arena = this many models")
    ap.add_argument("--rounds", type=int, help="rounds in every cell (no sampling or skipping)")
    ap.add_argument("--params", default="100000,1000000,11700000")
    a = ap.parse_args()
    global ARENA_SLOTS, ROUNDS
    ARENA_SLOTS, ROUNDS = a.arena_slots, a.rounds

    systems = a.systems.split(",")
    if systems[0] != BASE:
        systems = [BASE] + [s for s in systems if s != BASE]
    clients = [int(x) for x in a.clients.split(",")]
    params = [int(x) for x in a.params.split(",")]
    if a.quick:
        clients = [c for c in clients if c <= 100]
        params = [p for p in params if p <= 1000000]

    print("round benchmark: %s; systems: %s; simulate --format raw, 16 connections"
          % ("--full" if a.full else "default (make bench)", ", ".join(systems)), flush=True)
    rows, failed, bound_failed = [], 0, False
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="tributary-round.") as tmp:
        for p in params:
            # One arena size per model size: what the most clients run with it need, so that
            # the reserved memory is the same at every N and only the use can differ.
            arena = arena_mb(max(n for n in clients if rounds_for(n, p, a.full)[0]), p)
            for n in clients:
                rounds, why = rounds_for(n, p, a.full)
                base = None
                for s in systems:
                    label = SYSTEMS[s][2]
                    skip = why if rounds == 0 else ""
                    if not skip and s == "python" and 2.2 * n * p * 4 > mem_available():
                        skip = ("skipped: keeping %d updates of %.0f MB needs ~%.0f GB, %.0f GB "
                                "available" % (n, p * 4 / 1e6, 2.2 * n * p * 4 / 1e9,
                                               mem_available() / 1e9))
                    res = None
                    for attempt in range(2 if not skip else 0):
                        work = os.path.join(tmp, "%s-%d-%d-%d" % (s.replace("+", ""), n, p,
                                                                  attempt))
                        try:
                            res = run_cell(s, n, p, rounds, a.build, work, arena)
                            break
                        except CellFailed as e:
                            failed += 1
                            print("  %-22s N=%-5d P=%-9d FAILED (attempt %d of 2):\n%s" %
                                  (label, n, p, attempt + 1, e), flush=True)
                    if res is None and not skip:
                        skip = "FAILED twice (see above)"
                    if skip:
                        rows.append(dict(system=s, label=label, clients=n, params=p, rounds=0,
                                         note=skip))
                        print("  %-22s N=%-5d P=%-9d %s" % (label, n, p, skip), flush=True)
                        continue
                    if s == BASE:
                        base = res
                        if (n, p) in BOUND_CELLS:
                            try:
                                res["bound"] = round_vs_ingest(a.build, work + "-bound", n, p,
                                                               arena)
                            except CellFailed as e:
                                failed, bound_failed = True, True
                                print("  round vs ingest N=%d P=%d FAILED: %s" % (n, p, e))
                    row = dict(system=s, label=label, clients=n, params=p, rounds=rounds,
                               note=why, **res)
                    for k in ("round_s", "cpu_s", "peak_mb", "used_mb"):
                        row[k + "_x"] = res[k] / base[k] if base and base[k] else float("nan")
                    rows.append(row)
                    print("  %-22s N=%-5d P=%-9d R=%d  round %8.3f s  CPU %7.2f s  peak %7.0f MB"
                          "  load %.1f%s" % (label, n, p, rounds, res["round_s"], res["cpu_s"],
                                             res["peak_mb"], res["load"],
                                             "  (%s)" % why if why else ""), flush=True)
    elapsed = time.time() - t_start

    print()
    print("round s: median of R rounds; CPU s: server tree per round; peak MB: server tree"
          " resident, incl. the whole (pre-populated) arena; used MB: the same with the arena's"
          " peak use instead; arena MB: peak used/reserved; retries: 503s; load: 1-min load"
          " average; cli s: simulate's CPU per round (with its float64 check). x = ratio to"
          " Tributary shm+bpf in the same cell (> 1: more).")
    hdr = ("%-9s %5s %2s %-21s %8s %6s %7s %6s %8s %6s %8s %6s %9s %7s %5s %5s" %
           ("params", "N", "R", "system", "round s", "x", "CPU s", "x", "peak MB", "x",
            "used MB", "x", "arena MB", "retries", "load", "cli s"))
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if not r["rounds"]:
            print("%-9d %5d %2s %-21s %s" % (r["params"], r["clients"], "-", r["label"],
                                             r["note"]))
            continue
        print("%-9d %5d %2d %-21s %8.3f %6.2f %7.2f %6.2f %8.0f %6.2f %8.0f %6.2f %9s %7d %5.1f"
              " %5.2f"
              % (r["params"], r["clients"], r["rounds"], r["label"], r["round_s"],
                 r["round_s_x"], r["cpu_s"], r["cpu_s_x"], r["peak_mb"], r["peak_mb_x"],
                 r["used_mb"], r["used_mb_x"],
                 "%.0f/%.0f" % (r["arena_used_mb"], r["arena_mb"]) if r["arena_mb"] else "-",
                 r["retries"], r["load"], r["client_cpu_s"]))
    sampled = sorted({"%d x %d: %s" % (r["clients"], r["params"], r["note"]) for r in rows
                      if r["rounds"] and r["note"]})
    for s in sampled:
        print("note: " + s)
    for r in rows:
        b = r.get("bound") if r["system"] == BASE and r["rounds"] else None
        if b:
            print("target: round %d x %d within %.1fx of the ingest-bound time (bench_ingest "
                  "--round, %d rounds, 16 connections, pre-made bodies, model checked after "
                  "the clock): round %.3f s, ingest %.3f s (%.0f MB/s), round / ingest %.3fx "
                  "(rounds: %s; load %.1f)  %s" %
                  (r["clients"], r["params"], BOUND_MAX, BOUND_ROUNDS, b["round_s"],
                   b["ingest_s"], b["ingest_mbs"], b["ratio"],
                   " ".join("%.3f" % x for x in b["ratios"]), b["load"],
                   "PASS" if b["ratio"] <= BOUND_MAX else "MISS"))
            print("        (simulate's round in this cell: %.3f s = %.2fx that ingest, with "
                  "%.2f s of its own CPU a round on the same cores: not the target's measure)"
                  % (r["round_s"], r["round_s"] / b["ingest_s"], r["client_cpu_s"]))
    measured = {(r["clients"], r["params"]) for r in rows if r.get("bound")}
    for n, p in sorted(BOUND_CELLS - measured):
        print("target: round %d x %d within %.1fx of the ingest-bound time: not measured in this "
              "run (%s)  MISS" % (n, p, BOUND_MAX,
                                  "its bench_ingest --round failed, see above" if any(
                                      r["clients"] == n and r["params"] == p and r["rounds"]
                                      for r in rows if r["system"] == BASE)
                                  else "the cell is not in --clients/--params/--quick, or was "
                                  "skipped"))
    print("round benchmark took %.0f s; 1-minute load average %.1f at the end (2 cores: above 2,"
          " other processes competed for the CPUs)" % (elapsed, loadavg()))

    with open(a.csv, "w") as f:
        cols = ["system", "clients", "params", "rounds", "round_s", "round_s_x", "cpu_s",
                "cpu_s_x", "peak_mb", "peak_mb_x", "used_mb", "used_mb_x", "arena_mb",
                "arena_used_mb", "retries", "client_cpu_s", "rounds_s", "load",
                "target_round_s", "target_ingest_s", "target_ratio", "note"]
        for r in rows:
            if r.get("bound"):
                r["target_round_s"] = r["bound"]["round_s"]
                r["target_ingest_s"] = r["bound"]["ingest_s"]
                r["target_ratio"] = r["bound"]["ratio"]
        f.write(",".join(cols) + "\n")
        for r in rows:
            vals = []
            for c in cols:
                v = r.get(c, "")
                if isinstance(v, float):
                    v = "%.4g" % v
                elif isinstance(v, list):
                    v = " ".join("%.3f" % x for x in v)
                vals.append('"%s"' % v if c == "note" and v else str(v))
            f.write(",".join(vals) + "\n")
    print("wrote " + os.path.relpath(a.csv))
    return 1 if bound_failed or (failed and any(r["note"].startswith("FAILED") for r in rows)) \
        else 0


if __name__ == "__main__":
    sys.exit(main())
