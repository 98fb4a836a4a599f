#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""How long the gateway takes, per update, from the completion of the receive that brought the
last body byte to the submission of the 202's send: what the gateway adds to a stop-and-wait
client's update beyond the wire (a raw TCP sink acknowledges at once).

Measured with the kernel's io_uring tracepoints on the gateway's process (linux-perf, installed
by scripts/deps-bench.sh): io_uring:io_uring_complete (the receive) and io_uring:io_uring_submit_req
with opcode SEND (the answer). One keep-alive connection, sequential updates (bench_ingest), so
the last completion before each SEND is its update's last body piece.

Target: the median delay is at most 5% of an update's time (the one-connection ingest target of
issue 17 is 0.90x raw TCP: this keeps half of the 10% for the rest of the gateway's path).
With --against DIR the build in DIR runs too, interleaved (A B B A ...), and both are printed.

usage: answer_latency.py [--build DIR] [--against DIR] [--updates U] [--params P] [--repeat K]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "baselines"))
import servers  # noqa: E402

EV_RE = re.compile(r"^\s*([0-9.]+):\s+io_uring:(io_uring_\w+):.*?(opcode (\w+)|result (-?\d+))")
HTTP_RE = re.compile(r"over HTTP .*: ([0-9.]+) s, ([0-9.]+) MB/s")
TARGET = 0.05


def one(build, work, updates, params):
    """(MB/s, seconds per update, [delay per update in s]) of one fresh server."""
    s = servers.Server("tributary", build, work, mode="shm+bpf", arena_mb=256)
    data = os.path.join(work, "perf.data")
    try:
        p = subprocess.Popen(["perf", "record", "-q", "--no-inherit", "-o", data, "-e",
                              "io_uring:io_uring_submit_req,io_uring:io_uring_complete",
                              "-p", str(s.pid)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(0.7)  # perf attached
        r = subprocess.run([os.path.join(build, "bench/ingest/bench_ingest"), "--url", s.url,
                            "--data-dir", s.data_dir, "--updates", str(updates), "--params",
                            str(params), "--no-raw"], capture_output=True, text=True)
        p.send_signal(2)
        p.wait()
    finally:
        s.stop()
    h = HTTP_RE.search(r.stdout)
    if r.returncode or not h:
        raise RuntimeError("bench_ingest failed (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    out = subprocess.run(["perf", "script", "-i", data, "-F", "time,event,trace"],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError("perf script: %s" % out.stderr[-300:])
    # A completion counts as a body piece's while the last operation submitted was a RECV
    # (an answer may take more than one SEND: only the first one after a piece counts).
    last, op, delays = None, None, []
    for line in out.stdout.splitlines():
        m = EV_RE.match(line)
        if not m:
            continue
        t, ev = float(m.group(1)), m.group(2)
        if ev == "io_uring_complete":
            if op == "RECV":
                last = t
        else:
            op = m.group(4)
            if op == "SEND" and last is not None:
                delays.append(t - last)
                last = None
    # The first answers are the job's creation and its first GETs: keep the updates' only.
    delays = delays[-updates:]
    return float(h.group(2)), float(h.group(1)) / updates, delays


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--against")
    ap.add_argument("--updates", type=int, default=250)
    ap.add_argument("--params", type=int, default=1000000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if not shutil.which("perf"):
        print("answer_latency: skipped: perf is not installed (scripts/deps-bench.sh)")
        return 1
    builds = [a.build] + ([a.against] if a.against else [])
    res = {b: [] for b in builds}
    with tempfile.TemporaryDirectory(prefix="tributary-answer.") as tmp:
        for k in range(a.repeat):
            for i, b in enumerate(builds if k % 2 == 0 else builds[::-1]):
                load = os.getloadavg()[0]
                mbs, per, d = one(b, os.path.join(tmp, "%d-%d" % (k, i)), a.updates, a.params)
                d.sort()
                p50, p90 = d[len(d) // 2], d[int(len(d) * 0.9)]
                res[b].append((p50, p90, per))
                print("%-24s load %5.2f  %6.0f MB/s  %5.0f us/update  last byte -> 202: "
                      "p50 %6.1f us  p90 %6.1f us" % (b, load, mbs, per * 1e6, p50 * 1e6,
                                                      p90 * 1e6), flush=True)
    med = statistics.median
    for b in builds:
        p50 = med(x[0] for x in res[b])
        per = med(x[2] for x in res[b])
        print("%-24s median of %d: p50 %.1f us, p90 %.1f us, update %.0f us" %
              (b, len(res[b]), p50 * 1e6, med(x[1] for x in res[b]) * 1e6, per * 1e6))
    p50 = med(x[0] for x in res[a.build])
    per = med(x[2] for x in res[a.build])
    print("target: last byte -> 202 / update time, median (<= %.2f) %21.3f  %s" %
          (TARGET, p50 / per, "PASS" if p50 / per <= TARGET else "MISS"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
