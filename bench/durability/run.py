#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The cost of --durability disk against memory, in one run on this machine's disk.

For each mode a fresh `tributary up` (the data dir under --dir), then:
  ingest   bench/ingest/bench_ingest: U updates of P f32 over one keep-alive connection, each
           waiting for its 202 (with disk, each 202 waits for its own fdatasync: no batch)
  round    tributary simulate --clients N --rounds R --params P --format raw --quiet
           (16 connections: updates that arrive together share one fdatasync); median round s
and the device itself in the same directory:
  device   U writes of P x 4 bytes to one file, one fdatasync after each (before the modes),
           and one fdatasync per k writes, k the updates per fdatasync the log saw in the round
           runs (after them)

Targets (printed PASS or MISS):
  ingest   disk MB/s >= 0.7 x 1 / (1 / device MB/s + 1 / memory MB/s): one client at a time
           first sends its update (the memory path) and then waits for its write and fdatasync
           (the device), so the sum of the two is the bound; the log may cost 30% over it
  round    disk round MB/s (N x P x 4 / round s) >= 0.7 x min(device MB/s with one fdatasync per
           k writes, memory round MB/s): with many clients receiving and writing overlap, and
           the slower of the two is the bound
(A first version compared ingest with min(device, memory) and the round with one fdatasync
per 16: bounds no log can reach with one client, or with the batches the gateway delivers;
docs/BENCHMARKS.md keeps those runs.)

usage: run.py [--build DIR] [--dir DIR] [--updates U] [--params P] [--clients N] [--rounds R]
              [--arena-mb M]
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "baselines"))
import servers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ROUND_RE = re.compile(r"^round (\d+): (\d+) updates in ([0-9.]+) s .* (OK|MISMATCH)$", re.M)
INGEST_RE = re.compile(r"over HTTP .*?: ([0-9.]+) s, ([0-9.]+) MB/s")
TARGET = 0.7


def device(path, n, size, per):
    """MB/s of @n writes of @size bytes to a new file in @path, one fdatasync every @per."""
    buf = os.urandom(1 << 20) * (size >> 20) + os.urandom(size & ((1 << 20) - 1))
    f = os.path.join(path, "device.bin")
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    t0 = time.monotonic()
    try:
        for i in range(n):
            os.write(fd, buf)
            if (i + 1) % per == 0 or i == n - 1:
                os.fdatasync(fd)
    finally:
        os.close(fd)
    s = time.monotonic() - t0
    os.unlink(f)
    return n * size / 1e6 / s


class Up:
    def __init__(self, build, work, mode, arena_mb):
        self.dir = work
        os.makedirs(work, exist_ok=True)
        self.data = os.path.join(work, "data")
        self.log = os.path.join(work, "server.log")
        port = os.path.join(work, "port")
        with open(self.log, "w") as logf:
            self.proc = subprocess.Popen(
                [os.path.join(build, "tributary"), "up", "--listen", "127.0.0.1:0",
                 "--port-file", port, "--data-dir", self.data, "--arena-mb", str(arena_mb),
                 "--durability", mode], stdout=logf, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with open(port) as f:
                    txt = f.read()
                if txt.endswith("\n"):
                    self.url = "http://127.0.0.1:%d" % int(txt)
                    break
            except FileNotFoundError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tributary up did not start:\n" + open(self.log).read())
            time.sleep(0.05)

    def metrics(self):
        with open(os.path.join(self.data, "admin-token")) as f:
            tok = f.read().strip()
        req = urllib.request.Request(self.url + "/metrics",
                                     headers={"Authorization": "Bearer " + tok})
        out = {}
        for line in urllib.request.urlopen(req).read().decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        servers.remove_arena_files(self.log)


def run_mode(a, mode, work):
    srv = Up(a.build, os.path.join(work, mode), mode, a.arena_mb)
    try:
        r = subprocess.run([os.path.join(a.build, "bench", "ingest", "bench_ingest"), "--url",
                            srv.url, "--data-dir", srv.data, "--updates", str(a.updates),
                            "--params", str(a.params)], capture_output=True, text=True)
        m = INGEST_RE.search(r.stdout)
        if r.returncode or not m:
            raise RuntimeError("bench_ingest (%s): %s%s" % (mode, r.stdout, r.stderr))
        ingest = float(m.group(2))
        r = subprocess.run([os.path.join(a.build, "tributary"), "simulate", "--job", "round",
                            "--clients", str(a.clients), "--rounds", str(a.rounds), "--params",
                            str(a.params), "--format", "raw", "--quiet", "--url", srv.url,
                            "--data-dir", srv.data], capture_output=True, text=True)
        times = [float(x.group(3)) for x in ROUND_RE.finditer(r.stdout)]
        bad = [x.group(0) for x in ROUND_RE.finditer(r.stdout) if x.group(4) != "OK"]
        if r.returncode or len(times) != a.rounds or bad:
            raise RuntimeError("simulate (%s) failed:\n%s%s\n%s" %
                               (mode, r.stdout[-2000:], r.stderr[-2000:],
                                open(srv.log).read()[-3000:]))
        met = srv.metrics()
    finally:
        srv.stop()
    return {"ingest": ingest, "round": statistics.median(times), "rounds": times,
            "appends": met.get("tributary_wal_appends_total", 0),
            "fsyncs": met.get("tributary_wal_fsyncs_total", 0)}


def verdict(ok):
    return "PASS" if ok else "MISS"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--dir", default="/var/tmp", help="parent of the data dirs (the disk)")
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--params", type=int, default=1000000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arena-mb", type=int, default=1024)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="trib-bench-durability-", dir=a.dir)
    size = a.params * 4
    try:
        dev1 = device(work, a.updates, size, 1)
        print("device (%s): %d x %.1f MB, fdatasync each: %.1f MB/s" %
              (a.dir, a.updates, size / 1e6, dev1), flush=True)
        res = {m: run_mode(a, m, work) for m in ("memory", "disk")}
        k = max(1, round(res["disk"]["appends"] / max(1, res["disk"]["fsyncs"])))
        devk = device(work, a.updates, size, k)
        print("device: fdatasync per %d writes (the log's batches): %.1f MB/s" % (k, devk))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mem, disk = res["memory"], res["disk"]
    round_mb = a.clients * size / 1e6
    print("%-8s %14s %12s %16s" % ("mode", "ingest MB/s", "round s", "round MB/s"))
    for m in ("memory", "disk"):
        print("%-8s %14.1f %12.3f %16.1f" % (m, res[m]["ingest"], res[m]["round"],
                                            round_mb / res[m]["round"]))
    print("rounds (s): memory %s, disk %s" % (res["memory"]["rounds"], res["disk"]["rounds"]))
    if disk["fsyncs"]:
        print("log: %d appends, %d fdatasyncs (%.1f updates per fdatasync over the run)" %
              (disk["appends"], disk["fsyncs"], disk["appends"] / disk["fsyncs"]))
    want_i = TARGET / (1 / dev1 + 1 / mem["ingest"])
    want_r = TARGET * min(devk, round_mb / mem["round"])
    ok_i = disk["ingest"] >= want_i
    ok_r = round_mb / disk["round"] >= want_r
    print("ingest: disk / memory = %.2f; disk %.1f MB/s, target >= %.1f (0.7 / (1/device %.1f "
          "+ 1/memory %.1f)): %s" % (disk["ingest"] / mem["ingest"], disk["ingest"], want_i, dev1,
                                     mem["ingest"], verdict(ok_i)))
    print("round %d x %d: disk / memory time = %.2f; disk %.1f MB/s, target >= %.1f (0.7 x "
          "min(device per %d %.1f, memory %.1f)): %s" %
          (a.clients, a.params, disk["round"] / mem["round"], round_mb / disk["round"], want_r,
           k, devk, round_mb / mem["round"], verdict(ok_r)))
    return 0 if ok_i and ok_r else 1


if __name__ == "__main__":
    sys.exit(main())
