#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""HTTP ingest of the same update POSTs into Tributary, the Python baseline and nginx (which
reads each body whole, then answers 202 and drops it: the HTTP ingest limit), each next to raw
loopback TCP, in one run.

Before every nginx run, check_answers_after_body() proves that nginx answers only after the last
body byte (a head and all but one byte of the body get no answer in 0.3 s; the last byte gets
it), so that a sequential client cannot pipeline behind it (bench/baselines/nginx.conf says how).

The targets of issue 17 are printed with their ratio and PASS/MISS: Tributary shm+bpf at
>= 0.9x raw TCP (stop-and-wait), >= 1.0x nginx, and server CPU per GB <= nginx's plus the
fold's (1 / the fold k=1 update GB/s of build/bench/fold/bench_fold, run here).

Every server is driven by build/bench/ingest/bench_ingest (one keep-alive connection, U updates
of P f32 parameters, raw bodies, sequential; data generation not timed), which also times the
same bytes over a bare loopback TCP connection right after. Server CPU seconds are those of the
server's process tree while bench_ingest ran, in nanoseconds (servers.cpu_s_fine: schedstat;
clock ticks were 0.025 s/GB each here).

Each server runs --repeat times (default 3), the servers interleaved; the medians are shown.

usage: ingest.py [--build DIR] [--updates U] [--params P] [--repeat K] [--csv FILE]
"""

import argparse
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers  # noqa: E402

HTTP_RE = re.compile(r"over HTTP .*: ([0-9.]+) s, ([0-9.]+) MB/s")
RAW_RE = re.compile(r"over raw loopback TCP: ([0-9.]+) s, ([0-9.]+) MB/s")


FOLD_RE = re.compile(r"^\| fold k=1 +\| offset +\|.*\| +([0-9.]+) \|$", re.M)


def check_answers_after_body(url, length=4000000):
    """Raise unless the server at url answers an update POST only after its last body byte."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/jobs/bench/updates HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                  % length)
        s.sendall(b"\0" * (length - 1))
        early = select.select([s], [], [], 0.3)[0]
        if early:
            raise RuntimeError("%s answered before the last body byte: %r" %
                               (url, s.recv(200)[:80]))
        s.sendall(b"\0")
        if not select.select([s], [], [], 5)[0] or not s.recv(200).startswith(b"HTTP/1.1 202"):
            raise RuntimeError("%s did not answer 202 after the whole body" % url)


def fold_s_per_gb(build):
    """CPU seconds per GB of updates for the fold alone (fold k=1, median, 64 MiB buffers)."""
    r = subprocess.run([os.path.join(build, "bench/fold/bench_fold"), "--mb", "64"],
                       capture_output=True, text=True)
    m = FOLD_RE.search(r.stdout)
    if r.returncode or not m:
        raise RuntimeError("bench_fold failed (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    return 1.0 / float(m.group(1))


def one(kind, build, work, updates, params, mode="shm+bpf"):
    # On tcp the gateway keeps every update of a round in the arena until the round's model is
    # stored (its partials are not in the arena, so a crash replays the updates): a 100-update
    # round needs 100 slots. 48 slots gave 503 "aggregation memory is full" at update 66.
    arena = max(256, (params * 4 * (updates + 16 if mode == "tcp" else 48)) >> 20)
    s = servers.Server(kind, build, work, mode=mode, arena_mb=arena)
    try:
        if kind == "nginx":
            check_answers_after_body(s.url)
        c0 = servers.cpu_s_fine(s.pid)
        r = subprocess.run([os.path.join(build, "bench/ingest/bench_ingest"), "--url", s.url,
                            "--data-dir", s.data_dir, "--updates", str(updates),
                            "--params", str(params)], capture_output=True, text=True)
        cpu = servers.cpu_s_fine(s.pid) - c0
    finally:
        s.stop()
    h, w = HTTP_RE.search(r.stdout), RAW_RE.search(r.stdout)
    if r.returncode or not h or not w:
        raise RuntimeError("bench_ingest against %s failed (%d):\n%s%s" %
                           (kind, r.returncode, r.stdout, r.stderr))
    return float(h.group(2)), float(w.group(2)), cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--params", type=int, default=1000000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--csv")
    a = ap.parse_args()

    systems = [("tributary", "shm+bpf", "Tributary shm+bpf"),
               ("tributary", "tcp", "Tributary tcp"),
               ("python", None, "Python (aiohttp+numpy)")]
    if servers.nginx_path():
        systems.append(("nginx", None, "nginx (reads whole bodies)"))
    else:
        print("ingest: nginx not installed (scripts/deps-bench.sh): its row is skipped")
    runs = {label: [] for _, _, label in systems}
    failed = False
    fold = fold_s_per_gb(a.build)
    with tempfile.TemporaryDirectory(prefix="tributary-ingest.") as tmp:
        for rep in range(a.repeat):
            for i, (kind, mode, label) in enumerate(systems):
                try:
                    runs[label].append(one(kind, a.build, os.path.join(tmp, "%d-%d" % (rep, i)),
                                           a.updates, a.params, mode or "shm+bpf"))
                except RuntimeError as e:
                    failed = True
                    print("ingest: %s, run %d: %s" % (label, rep + 1, e))
    med = statistics.median
    systems = [s for s in systems if runs[s[2]]]
    rows = [(label, med(r[0] for r in runs[label]), med(r[1] for r in runs[label]),
             med(r[2] for r in runs[label]), min(r[0] for r in runs[label]),
             max(r[0] for r in runs[label])) for _, _, label in systems]
    raws = sorted(x[1] for label in runs for x in runs[label])
    raw = med(raws)
    ngx = next((r[1] for r in rows if r[0].startswith("nginx")), None)
    gb = a.updates * a.params * 4 / 1e9
    print("HTTP ingest, %d updates x %d f32 (%.1f MB each), one connection, sequential; "
          "median of %d runs" % (a.updates, a.params, a.params * 4 / 1e6, a.repeat))
    print("raw loopback TCP, same bytes, median of %d runs: %.0f MB/s (range %.0f-%.0f)"
          % (len(raws), raw, raws[0], raws[-1]))
    print("%-24s %8s %11s %9s %8s %15s" % ("server", "MB/s", "range", "x raw TCP", "x nginx",
                                           "server CPU s/GB"))
    for label, mbs, _, cpu, lo, hi in rows:
        print("%-24s %8.0f %11s %9.2f %8s %15.2f" % (label, mbs, "%.0f-%.0f" % (lo, hi),
                                                     mbs / raw,
                                                     "%.2f" % (mbs / ngx) if ngx else "-",
                                                     cpu / gb))
    print("fold alone (bench_fold, fold k=1, median): %.3f s/GB" % fold)
    trib = next((r for r in rows if r[0] == "Tributary shm+bpf"), None)
    ngx_cpu = next((r[3] for r in rows if r[0].startswith("nginx")), None)
    if trib:
        def target(name, ratio, ok):
            print("target: %-58s %6.2f  %s" % (name, ratio, "PASS" if ok else "MISS"))
        target("one-connection ingest / raw TCP stop-and-wait (>= 0.90)", trib[1] / raw,
               trib[1] / raw >= 0.9)
        if ngx:
            target("ingest / nginx reading whole bodies (>= 1.00)", trib[1] / ngx,
                   trib[1] >= ngx)
            cap = ngx_cpu / gb + fold
            target("CPU per GB / (nginx's %.3f + fold's %.3f) (<= 1.00)" % (ngx_cpu / gb, fold),
                   trib[3] / gb / cap, trib[3] / gb <= cap)
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("server,mb_per_s,mb_per_s_min,mb_per_s_max,raw_tcp_mb_per_s,server_cpu_s,"
                    "updates,params,repeat\n")
            for label, mbs, rw, cpu, lo, hi in rows:
                f.write("%s,%.1f,%.1f,%.1f,%.1f,%.3f,%d,%d,%d\n" %
                        (label, mbs, lo, hi, raw, cpu, a.updates, a.params, a.repeat))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
