#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The gateway's CPU per secure-round stage request, against plain GETs of the same run.

One `tributary up` (bench/baselines/servers.py, shm+bpf unless --mode) holds a secagg job of
--clients clients (1000 parameters: the stage requests do not depend on the model's size, the
masked input does and is round.py's). The clients advertise (POST .../secagg/keys), read their
neighbours' keys (GET .../secagg/keys) and send their shares (POST .../secagg/shares), each once;
then, --reps times over every client, on one keep-alive connection:

  GET shares     GET .../secagg/shares: the client's inbox (20 ciphertexts at k = 20)
  POST keys      the advertise again (a retry: parsed, digested, answered as the first)
  POST shares    the shares again (a retry: 20 ciphertexts parsed, digested, answered)
  GET /healthz   the cheapest request (the HTTP layer alone)
  GET job        GET /v1/jobs/NAME (a job's status, which runs SQLite statements)

then every client sends its masked input (1001 words) and reads its unmask list; all but the
last client send their reveals (POST unmask (first): checked, logged, a round's real path, one
pass of --clients - 1 requests), and --reps times over those clients:

  GET unmask     GET .../secagg/unmask: the list of reveals asked (20 at k = 20)
  POST unmask    the reveals again (a retry: parsed, digested, answered as the first; checked
                 to be the first answer)

then the last client's reveals end the round (its model checked to exist).

Each is measured as the gateway's CPU (every thread's /proc/PID/task/TID/schedstat) over a pass
of --clients requests, divided by their number: microseconds per request, the median of the
passes. The check: every stage request within 1.5x of GET job measured in the same run (PASS or
MISS); the first POST keys, POST shares and POST unmask (logged, a round's real path) are printed too,
from their single pass.

    /usr/bin/python3 bench/secagg/stages.py --build build [--clients 100] [--reps 5]
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "baselines"))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
import servers  # noqa: E402
import tributary_secagg as sa  # noqa: E402

LIMIT = 1.5


class Conn:
    """One keep-alive HTTP connection; call() raises on a status not in @ok."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def call(self, method, path, token, body=None, ok=(200, 201), raw=None):
        h = {"Authorization": "Bearer " + token}
        if body is not None:
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        elif raw is not None:
            body = raw
            h["Content-Type"] = "application/octet-stream"
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        data = r.read()
        if r.status not in ok:
            raise RuntimeError("%s %s: %d %s" % (method, path, r.status, data[:300]))
        return json.loads(data) if data else None


def gw_cpu(pid):
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
            total += int(f.read().split()[0])
    return total / 1e9


def healthz_cpu(srv, admin, conns, total):
    """Gateway CPU per GET /healthz (us), @total requests over @conns connections at once (a
    thread each, each request waiting for its answer). One at a time, the gateway goes idle
    before each request and is woken for it; from several, it often finds the next one ready."""
    cs = [Conn(srv.url) for _ in range(conns)]

    def run(c):
        for _ in range(total // conns):
            c.call("GET", "/healthz", admin)

    for c in cs:
        c.call("GET", "/healthz", admin)  # connected before the clock starts
    ths = [threading.Thread(target=run, args=(c,)) for c in cs]
    c0 = gw_cpu(srv.pid)
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    us = (gw_cpu(srv.pid) - c0) / (total // conns * conns) * 1e6
    for c in cs:
        c.c.close()
    return us


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--neighbours", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mode", default="shm+bpf")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-stages-")
    srv = servers.Server("tributary", a.build, work, mode=a.mode, arena_mb=256)
    try:
        with open(os.path.join(srv.data_dir, "admin-token")) as f:
            admin = f.read().strip()
        conn = Conn(srv.url)
        n = a.clients
        cfg = {"threshold": max(2, n // 10), "neighbours": a.neighbours, "clip": 1.0,
               "bits": 16}
        conn.call("POST", "/v1/jobs", admin, {"name": "sa", "clients_per_round": n,
                                              "params": 1000, "client_auth": "required",
                                              "round_timeout_s": 600, "secagg": cfg})
        toks = [conn.call("POST", "/v1/jobs/sa/clients", admin, {"client": "c%d" % i})["token"]
                for i in range(n)]
        base = "/v1/jobs/sa/secagg"
        secrets = [(os.urandom(32), os.urandom(32)) for _ in range(n)]
        keys_body = [{"c_pk": sa.public_key(c).hex(), "s_pk": sa.public_key(s).hex()}
                     for c, s in secrets]
        per = {}

        def measure(name, fn):
            c0 = gw_cpu(srv.pid)
            out = [fn(i, t) for i, t in enumerate(toks)]
            per.setdefault(name, []).append((gw_cpu(srv.pid) - c0) / n * 1e6)
            return out

        infos = measure("POST keys (first)", lambda i, t: conn.call("POST", base + "/keys", t,
                                                                     keys_body[i]))
        clients = []
        for i, info in enumerate(infos):
            c = sa.SecAggClient(info["index"], info["round"], info["threshold"])
            c.c_sk, c.s_sk = secrets[i]
            clients.append(c)
        nb = measure("GET keys", lambda i, t: conn.call("GET", base + "/keys", t))
        shares_body = []
        for i, o in enumerate(nb):
            keys = {m["index"]: (bytes.fromhex(m["c_pk"]), bytes.fromhex(m["s_pk"]))
                    for m in o["neighbours"]}
            shares_body.append({"shares": [{"to": v, "ct": ct.hex()}
                                           for v, ct in clients[i].share(keys).items()]})
        measure("POST shares (first)", lambda i, t: conn.call("POST", base + "/shares", t,
                                                               shares_body[i]))
        for _ in range(a.reps):
            measure("GET shares", lambda i, t: conn.call("GET", base + "/shares", t))
            measure("POST keys", lambda i, t: conn.call("POST", base + "/keys", t,
                                                        keys_body[i]))
            measure("POST shares", lambda i, t: conn.call("POST", base + "/shares", t,
                                                          shares_body[i]))
            measure("GET /healthz", lambda i, t: conn.call("GET", "/healthz", admin))
            measure("GET job", lambda i, t: conn.call("GET", "/v1/jobs/sa", admin))
        # The masked inputs (small: 1000 parameters), then the unmask stage's requests. The
        # last client holds its reveals back until the passes are done, so that the stage stays
        # open (the others' GET and POST unmask are then retries: parsed, digested, answered as
        # the first); its POST ends the round, whose model is checked to exist.
        keys = [{m["index"]: (bytes.fromhex(m["c_pk"]), bytes.fromhex(m["s_pk"]))
                 for m in o["neighbours"]} for o in nb]
        inbox = [conn.call("GET", base + "/shares", t) for t in toks]
        x = [1] * 1000 + [1]
        for i, t in enumerate(toks):
            y = clients[i].masked(x, {m["from"]: bytes.fromhex(m["ct"])
                                      for m in inbox[i]["shares"]}, keys[i])
            conn.call("POST", base + "/input", t, None, raw=y.astype("<u4").tobytes())
        kinds = {"self": sa.REVEAL_SELF, "secret": sa.REVEAL_SECRET}
        toks_u, last = toks[:-1], toks[-1]

        def get_unmask(i, t):
            while True:
                o = conn.call("GET", base + "/unmask", t)
                if o.get("ready"):
                    return o
                time.sleep(0.02)

        asked = [get_unmask(i, t) for i, t in enumerate(toks)]
        un_body = []
        for i, o in enumerate(asked):
            sh = clients[i].reveal([(r["index"], kinds[r["kind"]]) for r in o["reveal"]])
            un_body.append({"reveals": [{"index": v, "share": s.hex()} for v, s in sh.items()]})
        c0 = gw_cpu(srv.pid)
        first = [conn.call("POST", base + "/unmask", t, un_body[i])
                 for i, t in enumerate(toks_u)]
        per.setdefault("POST unmask (first)", []).append((gw_cpu(srv.pid) - c0) / (n - 1) * 1e6)
        for _ in range(a.reps):
            c0 = gw_cpu(srv.pid)
            for t in toks_u:
                conn.call("GET", base + "/unmask", t)
            per.setdefault("GET unmask", []).append((gw_cpu(srv.pid) - c0) / (n - 1) * 1e6)
            c0 = gw_cpu(srv.pid)
            again = [conn.call("POST", base + "/unmask", t, un_body[i])
                     for i, t in enumerate(toks_u)]
            per.setdefault("POST unmask", []).append((gw_cpu(srv.pid) - c0) / (n - 1) * 1e6)
            if again != first:
                raise RuntimeError("a retried POST unmask was answered differently")
        conn.call("POST", base + "/unmask", last, un_body[n - 1])
        for _ in range(600):
            if conn.call("GET", "/v1/jobs/sa", admin).get("round", 0) >= 1:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the round did not end after the last reveals")
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print("gateway CPU per request, %d clients (k = %d), median of %d passes, load %s:"
              % (n, a.neighbours, a.reps, load))
        med = {k: statistics.median(v) for k, v in per.items()}
        for k, v in med.items():
            print("  %-20s %7.1f us%s" % (k, v, "" if len(per[k]) > 1 else "  (one pass)"))
        worst = max(("GET shares", "POST keys", "POST shares", "GET unmask", "POST unmask"),
                    key=lambda k: med[k])
        ratio = med[worst] / med["GET job"]
        print("worst stage request (%s) / GET job  %.2f  %s (limit %.1fx)"
              % (worst, ratio, "PASS" if ratio <= LIMIT else "MISS", LIMIT))
        conn.c.close()
        print("GET /healthz, 2000 requests, gateway CPU per request (recorded: what waiting for "
              "each answer costs; bench/secagg/round.py --conns):")
        for k in (1, 8):
            print("  from %d connection%s at once  %7.1f us" % (k, "" if k == 1 else "s",
                                                             healthz_cpu(srv, admin, k, 2000)))
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
