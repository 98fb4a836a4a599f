#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The gateway on one core against all of them: HTTP ingest with body-receive threads
(`tributary up --rx-threads N`) against none (`--rx-threads 0`: one thread, one core), at 16
connections (issue 17: "with 16 connections and the gateway on both cores, ingest is recorded
against one core, to show the scaling") and at one connection (the hand-off must not cost the
sequential client).

Each run is a fresh `tributary up --dataplane shm+bpf` and build/bench/ingest/bench_ingest
--no-raw (U updates of P f32 parameters, keep-alive, the updates split between C connections);
server CPU is its process tree's (servers.cpu_s_fine: with the functions' fold), and of it the
gateway's event-loop thread and its receive threads (trib-rx*) are shown apart; "client" is
bench_ingest's own CPU (the send side's copy: on a 2-core machine the client, the gateway and
the fold share the same cores, which caps what a second gateway core can give). The two settings are interleaved, A B
then B A, --repeat pairs per connection count; the ratio is the median of the pairs' ratios
(each pair ran back to back, under about the same load), and the 1-minute load average is
printed beside every run. The issue sets no threshold for the scaling: the ratio is recorded
(docs/BENCHMARKS.md, "Body-receive threads").

usage: scaling.py [--build DIR] [--rx N] [--updates U] [--params P] [--repeat K]
                  [--connections C]
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "baselines"))
import servers  # noqa: E402

HTTP_RE = re.compile(r"over HTTP .*: ([0-9.]+) s, ([0-9.]+) MB/s")


def thread_cpu(pid):
    """CPU seconds of the server's own threads: (the event loop's, the receive threads')."""
    loop = rx = 0.0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                comm = f.read().strip()
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError):
            continue
        if comm.startswith("trib-rx"):
            rx += ns / 1e9
        elif int(t) == pid:
            loop += ns / 1e9
    return loop, rx


def one(build, work, rx, conns, updates, params):
    """(MB/s, server CPU s/GB, load average, loop thread s/GB, receive threads s/GB) of one
    run into a fresh server."""
    arena = max(256, (params * 4 * (conns + 48)) >> 20)
    s = servers.Server("tributary", build, work, arena_mb=arena,
                       extra=("--rx-threads", str(rx)))
    try:
        with open(s.log) as f:
            if "%u body-receive thread" % rx not in f.read():
                raise RuntimeError("the server did not start %d receive threads" % rx)
        load = os.getloadavg()[0]
        c0 = servers.cpu_s_fine(s.pid)
        t0 = thread_cpu(s.pid)
        k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([os.path.join(build, "bench/ingest/bench_ingest"), "--url", s.url,
                            "--data-dir", s.data_dir, "--updates", str(updates),
                            "--params", str(params), "--connections", str(conns), "--no-raw"],
                           capture_output=True, text=True)
        cpu = servers.cpu_s_fine(s.pid) - c0
        t1 = thread_cpu(s.pid)
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # bench_ingest, reaped
    finally:
        s.stop()
    h = HTTP_RE.search(r.stdout)
    if r.returncode or not h:
        raise RuntimeError("bench_ingest (--rx-threads %d, %d connections) failed (%d):\n%s%s"
                           % (rx, conns, r.returncode, r.stdout, r.stderr))
    gb = updates * params * 4 / 1e9
    client = (k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime) / gb
    return (float(h.group(2)), cpu / gb, load, (t1[0] - t0[0]) / gb, (t1[1] - t0[1]) / gb,
            client)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--rx", type=int, default=min(4, max(1, (os.cpu_count() or 2) // 2)),
                    help="receive threads of the B runs (default: tributary's default)")
    ap.add_argument("--updates", type=int, default=192)
    ap.add_argument("--params", type=int, default=1000000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    a = ap.parse_args()

    print("gateway scaling: %d updates x %.1f MB, shm+bpf, %d cores; --rx-threads 0 (the "
          "loop alone: one core) against --rx-threads %d, interleaved, %d pairs"
          % (a.updates, a.params * 4 / 1e6, os.cpu_count(), a.rx, a.repeat))
    print("%-12s %-5s %-14s %9s %12s %11s %11s %11s %8s" % (
        "connections", "pair", "--rx-threads", "MB/s", "CPU s/GB", "loop s/GB", "rx s/GB",
        "client s/GB", "load 1m"))
    ratios, res = {}, {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="tributary-scaling.") as tmp:
        for conns in (a.connections, 1):
            ratios[conns], res[conns] = [], {0: [], a.rx: []}
            for rep in range(a.repeat):
                order = (0, a.rx) if rep % 2 == 0 else (a.rx, 0)
                got = {}
                for rx in order:
                    try:
                        got[rx] = one(a.build, os.path.join(tmp, "%d-%d-%d" % (conns, rep, rx)),
                                      rx, conns, a.updates, a.params)
                    except RuntimeError as e:
                        failed = True
                        print("scaling: %s" % e)
                        continue
                    res[conns][rx].append(got[rx])
                    print("%-12d %-5d %-14d %9.0f %12.3f %11.3f %11.3f %11.3f %8.1f" % (
                        conns, rep + 1, rx, got[rx][0], got[rx][1], got[rx][3], got[rx][4],
                        got[rx][5], got[rx][2]))
                if len(got) == 2:
                    ratios[conns].append(got[a.rx][0] / got[0][0])
    med = statistics.median
    for conns in (a.connections, 1):
        if not ratios[conns]:
            print("scaling: %d connection(s): no complete pair" % conns)
            continue
        r0, r1 = res[conns][0], res[conns][a.rx]
        print("%d connection%s: --rx-threads 0 %.0f MB/s (%.3f s/GB), --rx-threads %d %.0f "
              "MB/s (%.3f s/GB), medians" % (conns, "s" if conns > 1 else "",
                                            med(x[0] for x in r0), med(x[1] for x in r0), a.rx,
                                            med(x[0] for x in r1), med(x[1] for x in r1)))
    if ratios[a.connections]:
        print("target: %-58s %6.2f  recorded (the issue sets no threshold)"
              % ("%d-connection ingest, gateway on all cores / one core" % a.connections,
                 med(ratios[a.connections])))
    if ratios[1]:
        print("target: %-58s %6.2f  recorded (the issue sets no threshold)"
              % ("1-connection ingest, --rx-threads %d / 0" % a.rx, med(ratios[1])))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
