#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A SecAgg+ round against a plain FedAvg round, 100 clients x 1M parameters, in one run.

One `tributary up` (bench/baselines/servers.py: the shm+bpf data plane unless --mode) holds two
jobs of the same size, both with client credentials (a secure job needs them; the plain one
gets them too, so that both pay the same authentication):

  plain  "algorithm": "fedavg": each client POSTs its update (raw little-endian f32) to
         .../updates; the round ends when the model (version 1) exists.
  secagg the same with "secagg": {threshold, neighbours, clip, bits}: every client advertises its
         keys, sends its encrypted shares, its masked input ((params + 1) u32 words) and its
         reveals over HTTP (runtime/api/rt_api_secagg.c), stage after stage; the round ends
         when the model exists. No client drops out unless --drop: then that fraction of the
         clients leaves after the masked input, and the server expands their pairwise masks
         too.

Measured for each, over the round, from the first request (an advertise, or the first
update) to the model:
  wall     seconds on the bench's clock;
  client   seconds of it (wall clock) the bench itself spent computing as the clients (the
           secure clients' X25519, Shamir, AEAD and mask expansion; encoding the plain bodies
           is done before the clock starts): client-side crypto is not the server's time, and
           on a loaded machine it also waits for a core;
  server   CPU seconds of the server's process tree (the gateway and its functions: the sum
           over every thread of /proc/PID/task/TID/schedstat, bench/baselines/servers.py's
           cpu_s_fine), the target's measure;
  load     the machine's 1-minute load average at the end of the round (the machine is
           shared: a high load lengthens the wall time, and less so the CPU seconds).
Each stage's requests are sent back to back, the simulated clients' work done between stages,
as 100 clients working at once on their own devices would send them and as the plain round's
ready bodies are sent. The small stage requests (keys, shares, unmask: 6 a client) go over
--conns keep-alive connections at once (default 8, a thread each), as many devices send them;
with --conns 1 each waits for the previous answer, and on this VM each then costs the gateway an
idle wake-up (GET /healthz: 55-61 us of gateway CPU one at a time, 20-25 us from 4+ connections;
docs/BENCHMARKS.md). The 4 MB bodies (the plain updates, the masked inputs) always go one after
another on one connection: the plain round at its cheapest (8 uploads at once cost its gateway
more here), and the same path and pacing for the same bytes in both rounds. --reps pairs (a plain round, then a secure one, on new jobs of the
same server; default 5) give the verdict by their median ratio. The secure clients are
simulated together, efficiently but with the real protocol: each pairwise mask is expanded once and added to one client's vector and subtracted from the
other's (what the two clients would each compute), and the server must unmask to exactly the
sum of the quantised inputs (checked against the model it stores, bit for bit in float32
within one rounding). Where the secure round's server CPU went is printed per process of the
tree (the gateway, each function), and with --perf a system-wide `perf record` of the secure
round is reported for the server's processes only (perf report --pid).

Then bench_secagg (the same build) gives the PRG expansion's GB/s against libsodium's bare
ChaCha20 in this run, and (builds with the OpenSSL PRG) the bare OpenSSL stream's; and (builds
since helper saprg's change) its shard path against OpenSSL's bare stream, and the round's
unmasking shards' CPU (their start included) against the floor that stream gives for the bytes
they expanded. The issue's target: the SecAgg+ round's server CPU within 2x of plain FedAvg's
(PASS/MISS printed, with the ratios of the wall times too). Exit status 1 when a round fails
or the secure model is wrong (not when the target is missed).

    /usr/bin/python3 bench/secagg/round.py --build build [--clients 100] [--params 1000000]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "baselines"))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
import servers  # noqa: E402
import tributary_secagg as sa  # noqa: E402

TARGET = 2.0


class Prg:
    """tributary_secagg.prg_u32(key, 0, n) without its copies: the keystream encrypted from a
    zero buffer straight into a reused one (OpenSSL's ChaCha20), viewed as u32. The view is
    valid until the next call."""

    def __init__(self, n):
        self.n, self.zero, self.buf = n, bytes(4 * n), bytearray(4 * n + 64)

    def __call__(self, key):
        enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        enc.update_into(self.zero, self.buf)
        return np.frombuffer(self.buf, dtype="<u4", count=self.n)


def gateway_cpu(pid):
    """CPU seconds of the gateway process alone (every thread's schedstat), not its functions."""
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
            total += int(f.read().split()[0])
    return total / 1e9


def cpu_by_process(pid):
    """{pid: (name, CPU seconds)} of the server's live process tree (schedstat, all threads)."""
    out = {}
    for p in servers.tree(pid):
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                args = f.read().split(b"\0")
            cpu = 0.0
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/schedstat" % (p, t)) as f:
                    cpu += int(f.read().split()[0]) / 1e9
        except (OSError, ValueError):
            continue
        out[p] = (" ".join(a.decode(errors="replace") for a in args[:1] + args[1:4] if a)
                  [-60:], cpu)
    return out


def by_delta(by0, by1):
    """[(CPU seconds, pid, name)] between two cpu_by_process readings, largest first."""
    return sorted(((by1[p][1] - by0.get(p, ("", 0.0))[1], p, by1[p][0]) for p in by1),
                  reverse=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Conn:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.c = http.client.HTTPConnection(self.host, self.port, timeout=300)

    def call(self, method, path, token, body=None, ctype="application/json", headers=None,
             ok=(200, 201, 202)):
        h = {"Authorization": "Bearer " + token}
        if body is not None:
            if not isinstance(body, (bytes, bytearray, memoryview)):
                body = json.dumps(body).encode()
            h["Content-Type"] = ctype
        h.update(headers or {})
        for attempt in range(2):
            try:
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                data = r.read()
                break
            except (ConnectionError, http.client.HTTPException):
                if attempt:
                    raise
                self.c.close()
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=300)
        if r.status not in ok:
            raise RuntimeError("%s %s: %d %s" % (method, path, r.status, data[:300]))
        return r.status, (json.loads(data) if data and r.getheader("Content-Type", "")
                          .startswith("application/json") else data)

    def close(self):
        self.c.close()


class Pool:
    """@n keep-alive connections, each driven by its own thread: one stage's requests of many
    clients at once, as many devices send them. With n = 1, the caller's thread and one
    connection: each request waits for the previous answer (the bench before session 9)."""

    def __init__(self, url, n):
        self.conns = [Conn(url) for _ in range(max(1, n))]

    def map(self, fn, items):
        """[fn(conn, item) for item in items], the items dealt round-robin to the
        connections; the results in the items' order; the first exception is raised."""
        items = list(items)
        out = [None] * len(items)
        if len(self.conns) == 1:
            return [fn(self.conns[0], it) for it in items]
        errs = []

        def run(k):
            try:
                for i in range(k, len(items), len(self.conns)):
                    out[i] = fn(self.conns[k], items[i])
            except Exception as e:  # reported by the caller's thread
                errs.append(e)

        ths = [threading.Thread(target=run, args=(k,)) for k in range(len(self.conns))]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        if errs:
            raise errs[0]
        return out

    def close(self):
        for c in self.conns:
            c.close()


def mint(conn, admin, job, n):
    return [conn.call("POST", "/v1/jobs/%s/clients" % job, admin, {"client": "c%d" % i})[1]
            ["token"] for i in range(n)]


def wait_model(conn, admin, job, version, timeout=600):
    """Long-polls until version @version of @job exists; returns its raw f32 bytes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st, body = conn.call("GET", "/v1/jobs/%s/model?after=%d&timeout=5" % (job, version - 1),
                             admin, headers={"Accept": "application/octet-stream"},
                             ok=(200, 304))
        if st == 200:
            return body
    raise RuntimeError("job %s: no model version %d in %d s" % (job, version, timeout))


def plain_round(url, admin, n, p, x, job="plain"):
    conn = Conn(url)
    conn.call("POST", "/v1/jobs", admin, {"name": job, "clients_per_round": n,
                                          "params": p, "client_auth": "required",
                                          "round_timeout_s": 600}, ok=(201,))
    toks = mint(conn, admin, job, n)
    body = x.astype("<f4").tobytes()
    hd = {"X-Tributary-Round": "0"}
    pid = SERVER.pid
    by0 = cpu_by_process(pid)
    c0, load0, t0 = servers.cpu_s_fine(pid), loadavg(), time.monotonic()
    for t in toks:
        conn.call("POST", "/v1/jobs/%s/updates" % job, t, body, "application/octet-stream", hd)
    model = wait_model(conn, admin, job, 1)
    wall, cpu = time.monotonic() - t0, servers.cpu_s_fine(pid) - c0
    by1 = cpu_by_process(pid)
    conn.close()
    got = np.frombuffer(model, "<f4")
    err = float(np.max(np.abs(got - x)))
    return {"wall": wall, "client": 0.0, "server": cpu, "load": (load0 + loadavg()) / 2,
            "err": err, "ok": err < 1e-5, "procs": by_delta(by0, by1)}


def secure_round(url, admin, n, p, x, cfg, drop, conns, job="secagg"):
    """One secure round of @n clients sending the same @x (n_u = 1). Returns its measures."""
    conn = Conn(url)
    pool = Pool(url, conns)
    conn.call("POST", "/v1/jobs", admin, {"name": job, "clients_per_round": n, "params": p,
                                          "client_auth": "required",
                                          "round_timeout_s": 30 if drop else 120,
                                          "secagg": cfg}, ok=(201,))
    toks = mint(conn, admin, job, n)
    base = "/v1/jobs/%s/secagg" % job
    q = sa.quantise(x, cfg["clip"], cfg["bits"])
    words = np.concatenate([q, [1]]).astype(np.uint32)
    prg = Prg(len(words))
    k = os.urandom(32)
    if not np.array_equal(prg(k)[:1000], sa.prg_u32(k, 0, 1000)):
        raise RuntimeError("the bench's PRG is not tributary_secagg's")
    secrets = [(os.urandom(32), os.urandom(32)) for _ in range(n)]
    pks = [(sa.public_key(c).hex(), sa.public_key(s).hex()) for c, s in secrets]
    client_s = 0.0
    pid = SERVER.pid
    perf = None
    if PERF:
        perf = subprocess.Popen(["perf", "record", "-a", "-F", "1999", "-q", "-o", PERF],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    by0 = cpu_by_process(pid)
    c0, load0, t0 = servers.cpu_s_fine(pid), loadavg(), time.monotonic()
    gw0 = gateway_cpu(pid)
    # 1. advertise
    cl = [None] * n
    infos = pool.map(lambda cn, i: cn.call("POST", base + "/keys", toks[i],
                                           {"c_pk": pks[i][0], "s_pk": pks[i][1]})[1],
                     range(n))
    for i, info in enumerate(infos):
        c = sa.SecAggClient(info["index"], info["round"], info["threshold"])
        c.c_sk, c.s_sk = secrets[i]
        cl[i] = c
    gw = [("advertise", gateway_cpu(pid))]
    marks = [("advertise", time.monotonic())]
    # 2. shares. Each stage's requests go back to back, the clients' work between stages: what
    # the server sees when 100 clients work at once on their own devices (and what the plain
    # round's clients do: bodies ready, then sent). One bench process computing each client's
    # reply between its requests left the gateway idle before every request: a wake-up each,
    # ~0.015 s of its CPU a round that concurrent clients do not cause (docs/BENCHMARKS.md).
    keys = pool.map(lambda cn, t: cn.call("GET", base + "/keys", t)[1], toks)
    for o in keys:
        if not o.get("ready"):
            raise RuntimeError("keys not ready after every client joined: %r" % o)
    c1 = time.monotonic()
    bodies = [None] * n
    for i in range(n):
        keys[i] = {m["index"]: (bytes.fromhex(m["c_pk"]), bytes.fromhex(m["s_pk"]))
                   for m in keys[i]["neighbours"]}
        cts = cl[i].share(keys[i])
        bodies[i] = {"shares": [{"to": v, "ct": ct.hex()} for v, ct in cts.items()]}
    client_s += time.monotonic() - c1
    pool.map(lambda cn, i: cn.call("POST", base + "/shares", toks[i], bodies[i]), range(n))
    marks.append(("shares", time.monotonic()))
    gw.append(("shares", gateway_cpu(pid)))
    # 3. masked input: the inbox opened by each client; each pairwise mask expanded once.
    by_index = {c.u: i for i, c in enumerate(cl)}
    ys = [None] * n
    inbox = pool.map(lambda cn, t: cn.call("GET", base + "/shares", t)[1], toks)
    c1 = time.monotonic()
    for i in range(n):
        c = cl[i]
        for m in inbox[i]["shares"]:
            v, ct = m["from"], bytes.fromhex(m["ct"])
            head = struct.pack("<II", v, c.u)
            pt = sa.open_(c._share_key(keys[i][v][0], v, c.u), ct[:12], ct[12:], head)
            c.held[v] = (pt[16:16 + sa.SHARE_BYTES], pt[16 + sa.SHARE_BYTES:])
        ys[i] = words + prg(sa.derive(c.b, "self", c.round, c.u, 0))
    client_s += time.monotonic() - c1
    c1 = time.monotonic()
    for i, c in enumerate(cl):
        for v, (_, s_pk) in keys[i].items():
            if c.u < v:
                m = prg(sa.derive(sa.agree(c._loaded("s_sk"), s_pk), "mask", c.round, c.u, v))
                np.add(ys[i], m, out=ys[i])
                np.subtract(ys[by_index[v]], m, out=ys[by_index[v]])
    # Each client's body encoded before the inputs go, as the plain round's are before its clock
    # starts: the bench's pacing between requests must be the same in both rounds (an encoding
    # gap before every 4 MB send cost the gateway ~0.01-0.02 s of wake-ups, docs/BENCHMARKS.md).
    for i in range(n):
        ys[i] = ys[i].astype("<u4").tobytes()
    client_s += time.monotonic() - c1
    marks.append(("masks (bench)", time.monotonic()))
    gw.append(("masks (bench)", gateway_cpu(pid)))
    gone = set(range(n - int(round(drop * n)), n))
    # The 4 MB inputs go one after another on one connection, as the plain round's updates do:
    # the same ingest path and pacing for the same bytes in both rounds.
    for i in range(n):
        if i not in gone:
            conn.call("POST", base + "/input", toks[i], ys[i], "application/octet-stream")
    ys = None
    marks.append(("inputs", time.monotonic()))
    gw.append(("inputs", gateway_cpu(pid)))
    # 4. unmask: after the masked stage's deadline when clients dropped.
    kinds = {"self": sa.REVEAL_SELF, "secret": sa.REVEAL_SECRET}
    opened = []

    def get_unmask(cn, i):
        while True:
            o = cn.call("GET", base + "/unmask", toks[i])[1]
            if o.get("ready"):
                opened.append(time.monotonic())
                return o
            time.sleep(0.05)

    left = [i for i in range(n) if i not in gone]
    asked = dict(zip(left, pool.map(get_unmask, left)))
    marks.append(("unmask stage opened", min(opened)))
    gw.append(("unmask (GET)", gateway_cpu(pid)))
    c1 = time.monotonic()
    for i, o in asked.items():
        sh = cl[i].reveal([(r["index"], kinds[r["kind"]]) for r in o["reveal"]])
        asked[i] = {"reveals": [{"index": v, "share": s.hex()} for v, s in sh.items()]}
    client_s += time.monotonic() - c1
    pool.map(lambda cn, i: cn.call("POST", base + "/unmask", toks[i], asked[i]), list(asked))
    marks.append(("reveals", time.monotonic()))
    gw.append(("reveals", gateway_cpu(pid)))
    model = wait_model(conn, admin, job, 1)
    marks.append(("model", time.monotonic()))
    gw.append(("model", gateway_cpu(pid)))
    wall, cpu = time.monotonic() - t0, servers.cpu_s_fine(pid) - c0
    by1 = cpu_by_process(pid)
    if perf:
        perf.send_signal(2)
        perf.wait()
    conn.close()
    pool.close()
    got = np.frombuffer(model, "<f4")
    want = sa.dequantise_mean(q.astype(np.float64) * (n - len(gone)), n - len(gone),
                              cfg["clip"], cfg["bits"])
    err = float(np.max(np.abs(got - want)))
    procs = by_delta(by0, by1)
    return {"wall": wall, "client": client_s, "server": cpu, "load": (load0 + loadavg()) / 2,
            "err": err, "ok": err <= 1e-6, "survivors": n - len(gone), "procs": procs,
            "phases": [(name, b - a) for (name, b), (_, a) in zip(marks, [("", t0)] + marks)],
            "gw_phases": [(name, b - a) for (name, b), (_, a) in zip(gw, [("", gw0)] + gw)]}


KERNEL_RE = re.compile(r"^ *(chacha20|prg_add|prg_stream|prg_add_sodium|bare_stream)\s+([0-9.]+) "
                       r"GB/s", re.M)
SHARD_RE = re.compile(r"^shard path / bare OpenSSL stream = .*$", re.M)
STREAMS_RE = re.compile(r"\((\d+) streams expanded\)")


def kernels(build):
    r = subprocess.run([os.path.join(build, "bench", "secagg", "bench_secagg"), "--words",
                        "16777216", "--reps", "3"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("bench_secagg failed (%d): %s%s" % (r.returncode, r.stdout, r.stderr))
    return dict((k, float(v)) for k, v in KERNEL_RE.findall(r.stdout)), r.stdout


def shard_floor(sec, logtail, params, k):
    """The round's unmasking shards (tributary-fn-sa) against OpenSSL's bare ChaCha20 stream
    of bench_secagg in this run: the bytes of keystream they expanded over their CPU seconds
    (their start included), as a fraction of the bare stream's GB/s."""
    cpu = sum(c for c, _, what in sec["procs"] if "tributary-fn-sa" in what)
    m = STREAMS_RE.search(" ".join(logtail))
    if not m or cpu <= 0 or "bare_stream" not in k:
        return
    nbytes = int(m.group(1)) * (params + 1) * 4.0
    bare = k["bare_stream"]
    print("unmasking shards %.3f s CPU for %d streams (%.0f MB): %.2f GB/s, %.2f of the bare "
          "OpenSSL stream (%.2f GB/s; its floor %.3f s)" %
          (cpu, int(m.group(1)), nbytes / 1e6, nbytes / cpu / 1e9, nbytes / cpu / 1e9 / bare,
           bare, nbytes / bare / 1e9))


SERVER = None
PERF = None


def main():
    global SERVER, PERF
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--params", type=int, default=1000000)
    ap.add_argument("--threshold", type=int, default=10)
    ap.add_argument("--neighbours", type=int, default=20)
    ap.add_argument("--bits", type=int, default=16)
    ap.add_argument("--drop", type=float, default=0.0,
                    help="fraction of the clients that leave after the masked input")
    ap.add_argument("--mode", default="shm+bpf", help="the data plane (default shm+bpf)")
    ap.add_argument("--arena-mb", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5,
                    help="plain/secure pairs on one server; the verdict is the median pair's "
                         "(default 5)")
    ap.add_argument("--conns", type=int, default=8,
                    help="connections each stage's small requests (keys, shares, unmask) go over "
                         "at once (default 8; 1: one after the other); updates and masked "
                         "inputs always go one after another on one connection")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--perf", metavar="FILE",
                    help="perf record -a the secure round into FILE and report the server's "
                         "processes (root)")
    a = ap.parse_args()
    PERF = a.perf
    cfg = {"threshold": a.threshold, "neighbours": a.neighbours, "clip": 1.0, "bits": a.bits}
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, a.params).astype(np.float32)
    work = tempfile.mkdtemp(prefix="bench-secagg-")
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    print("secagg round: %d clients x %d params, %s, data plane %s, %d connections, commit %s" %
          (a.clients, a.params, json.dumps(cfg), a.mode, a.conns, rev))
    rc = 0
    try:
        SERVER = servers.Server("tributary", a.build, work, mode=a.mode, arena_mb=a.arena_mb)
        with open(os.path.join(SERVER.data_dir, "admin-token")) as f:
            admin = f.read().strip()
        # Pairs, each a plain round then a secure one on new jobs of the same server: the
        # verdict is the median pair's ratio (this shared VM moves single runs by +-20%).
        pairs = []
        for k in range(a.reps):
            pl = plain_round(SERVER.url, admin, a.clients, a.params, x, "plain%d" % k)
            se = secure_round(SERVER.url, admin, a.clients, a.params, x, cfg, a.drop, a.conns,
                              "secagg%d" % k)
            pairs.append((se["server"] / pl["server"] if pl["server"] > 0 else float("inf"),
                          pl, se))
        ratios = [r for r, _, _ in pairs]
        _, plain, sec = sorted(pairs, key=lambda q: q[0])[len(pairs) // 2]
        died = SERVER.proc.poll()
        with open(SERVER.log) as f:
            logtail = [ln for ln in f.read().splitlines() if "secure round" in ln][-2:]
    except Exception as e:  # reported, with the server's log
        print("FAIL: %s" % e)
        if SERVER:
            with open(SERVER.log) as f:
                print("server log (last lines):\n" + "\n".join(f.read().splitlines()[-15:]))
        return 1
    finally:
        if SERVER:
            SERVER.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("%-8s %9s %10s %10s %10s %6s %s" % ("round", "wall s", "client s", "wall-cl s",
                                            "server s", "load", "model"))
    for name, r in (("fedavg", plain), ("secagg", sec)):
        print("%-8s %9.3f %10.3f %10.3f %10.3f %6.1f %s" %
              (name, r["wall"], r["client"], r["wall"] - r["client"], r["server"], r["load"],
               "ok (max err %.1e)" % r["err"] if r["ok"] else "WRONG (max err %.3g)" % r["err"]))
        rc |= 0 if r["ok"] else 1
    if sec.get("survivors", a.clients) != a.clients:
        print("secagg: %d of %d clients sent their masked input (--drop %g)" %
              (sec["survivors"], a.clients, a.drop))
    print("secagg wall by phase (each until its last request's answer): " +
          ", ".join("%s %.3f s" % p for p in sec["phases"]))
    print("secagg gateway CPU by phase: " + ", ".join("%s %.4f s" % p for p in sec["gw_phases"]))
    for name, r in (("fedavg", plain), ("secagg", sec)):
        print("%s server CPU by process (%.3f s; the tree's total %.3f s also counts processes "
              "that exited):" % (name, sum(c for c, _, _ in r["procs"]), r["server"]))
        for c, p, what in r["procs"][:6]:
            if c >= 0.001:
                print("  %8.3f s  pid %d %s" % (c, p, what))
    if PERF:
        r = subprocess.run(["perf", "report", "-i", PERF, "--stdio", "--no-children",
                            "--pid", ",".join(str(p) for _, p, _ in sec["procs"]),
                            "--sort", "comm,dso,sym", "--percentage",
                            "relative", "--percent-limit", "3"],
                           capture_output=True, text=True)
        print("perf (the server's processes, % of their samples):")
        for ln in r.stdout.splitlines():
            if ln.strip() and not ln.startswith("#"):
                print("  " + ln.strip())
    for ln in logtail:
        print("server log: " + ln.split("] ", 1)[-1])
    ratio = sec["server"] / plain["server"] if plain["server"] > 0 else float("inf")
    print("secagg / fedavg server CPU, each pair: %s (the median pair's details above)" %
          ", ".join("%.2f (%.3f / %.3f s)" % (r, se["server"], pl["server"])
                    for r, pl, se in pairs))
    print("secagg / fedavg server CPU  %6.2f  %s (target within %gx; median of %d pairs, %d "
          "connection%s)" % (ratio, "PASS" if ratio <= TARGET else "MISS", TARGET, len(ratios),
                             a.conns, "" if a.conns == 1 else "s at once"))
    print("secagg / fedavg wall        %6.2f  (%6.2f without the bench's client compute)" %
          (sec["wall"] / plain["wall"],
           (sec["wall"] - sec["client"]) / (plain["wall"] - plain["client"])))
    if died is not None:
        print("FAIL: the server exited (%d) during the run" % died)
        rc = 1
    try:
        k, out = kernels(a.build)
        print("PRG expansion (prg_add) %.2f GB/s vs libsodium ChaCha20 alone %.2f GB/s: %.2f" %
              (k["prg_add"], k["chacha20"], k["prg_add"] / k["chacha20"]))
        if "prg_stream" in k:  # builds since issue 19's PRG change (OpenSSL's ChaCha20)
            print("PRG stream (OpenSSL ChaCha20) %.2f GB/s vs libsodium ChaCha20 alone %.2f GB/s:"
                  " %.2f; prg_add before (libsodium) %.2f GB/s" %
                  (k["prg_stream"], k["chacha20"], k["prg_stream"] / k["chacha20"],
                   k.get("prg_add_sodium", 0.0)))
        m = SHARD_RE.search(out)
        if m:  # builds since the shards' add was vectorised (issue 19, helper saprg)
            print("bench_secagg: " + m.group(0))
        shard_floor(sec, logtail, a.params, k)
    except (RuntimeError, KeyError) as e:
        print("FAIL: kernels: %s" % e)
        rc = 1
    print("load average now: %s" % open("/proc/loadavg").read().strip())
    return rc


if __name__ == "__main__":
    sys.exit(main())
