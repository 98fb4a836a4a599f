#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""HTTPS ingest: Tributary's gateway over TLS against plain HTTP and against Debian's nginx with
TLS, in one run, with targets and PASS/MISS.

Every server gets the same update POSTs from build/bench/ingest/bench_ingest (U updates of P
f32 parameters, raw bodies; one keep-alive connection, then C connections on C threads):

  Tributary HTTP              `tributary up`, plain
  Tributary HTTPS             `tributary up --tls-cert --tls-key` (skipped, and its targets
                              MISS, when this build's `up` has no --tls-cert)
  nginx HTTP (reads body)     bench/tls/nginx-read.conf: reads each body whole into memory
  nginx HTTPS (reads body)    (echo_read_request_body), then answers 202; one worker
  nginx HTTPS -> Tributary    bench/tls/nginx-proxy.conf: nginx terminates TLS and streams
                              the bodies to a plain `tributary up` (what one can deploy today)

Both TLS servers use one certificate (EC P-256, made here with the openssl command) and
OpenSSL's defaults; the negotiated protocol and cipher of each are printed (openssl s_client),
so that "same cipher" is checked, not assumed. Server CPU is user + system seconds of the
server's process tree while bench_ingest ran (bench/baselines/servers.py), per GB of bodies.

Targets (stated here, printed with PASS/MISS):
  - Tributary HTTPS MB/s >= 0.8 x nginx HTTPS MB/s, one connection and C connections;
  - Tributary HTTPS server CPU s/GB <= 1.25 x nginx HTTPS's, one connection.

usage: run.py [--build DIR] [--updates U (100)] [--params P (1000000)] [--connections C (4)]
              [--repeat K (3)] [--csv FILE]
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "baselines"))
import servers  # noqa: E402

HTTP_RE = re.compile(r"over HTTP .*: ([0-9.]+) s, ([0-9.]+) MB/s")
TARGET_MBS = 0.8
TARGET_CPU = 1.25


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def up_has_tls(build):
    r = subprocess.run([os.path.join(build, "tributary"), "up", "--help"],
                       capture_output=True, text=True)
    return "--tls-cert" in r.stdout + r.stderr


class Proc:
    """One server process; stop() sends SIGTERM and reaps it."""

    def __init__(self, cmd, log):
        self.log = log
        with open(log, "w") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        servers.remove_arena_files(self.log)


def start_up(build, work, arena_mb, tls=None):
    os.makedirs(work, exist_ok=True)
    port_file = os.path.join(work, "port")
    cmd = [os.path.join(build, "tributary"), "up", "--listen", "127.0.0.1:0", "--port-file",
           port_file, "--data-dir", os.path.join(work, "data"), "--arena-mb", str(arena_mb)]
    if tls:
        cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    p = Proc(cmd, os.path.join(work, "up.log"))
    try:
        port = servers.wait_file(port_file, p.proc, p.log)
    except Exception:
        p.stop()
        raise
    return p, port


def start_nginx(conf, work, subs):
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    with open(os.path.join(work, "data", "admin-token"), "w") as f:
        # unused (nginx checks no token), but bench_ingest reads it by the one token rule
        f.write("nginx-checks-no-token\n")
    with open(os.path.join(HERE, conf)) as f:
        text = f.read()
    for k, v in subs.items():
        text = text.replace("@%s@" % k, str(v))
    path = os.path.join(work, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    p = Proc([servers.nginx_path(), "-p", work, "-c", path, "-e", "stderr", "-g",
              "daemon off;"], os.path.join(work, "nginx.log"))
    try:
        for port in [v for k, v in subs.items() if k.endswith("PORT") and k != "UPPORT"]:
            servers.wait_port(port, p.proc, p.log)
    except Exception:
        p.stop()
        raise
    return p


def negotiated(port):
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' as openssl s_client sees it on 127.0.0.1:port."""
    r = subprocess.run(["openssl", "s_client", "-brief", "-connect", "127.0.0.1:%d" % port,
                        "-servername", "localhost"], input="", capture_output=True, text=True,
                       timeout=10)
    out = r.stdout + r.stderr
    proto = re.search(r"Protocol version: (\S+)", out)
    suite = re.search(r"Ciphersuite: (\S+)", out)
    return "%s %s" % (proto.group(1) if proto else "?", suite.group(1) if suite else "?")


def ingest(build, url, data_dir, pids, updates, params, conns, ca):
    """MB/s and server CPU seconds of one bench_ingest run."""
    cmd = [os.path.join(build, "bench/ingest/bench_ingest"), "--url", url, "--data-dir",
           data_dir, "--updates", str(updates), "--params", str(params), "--connections",
           str(conns), "--no-raw"]
    if ca:
        cmd += ["--tls-ca", ca]
    c0 = sum(servers.cpu_s(p) for p in pids)
    r = subprocess.run(cmd, capture_output=True, text=True)
    cpu = sum(servers.cpu_s(p) for p in pids) - c0
    m = HTTP_RE.search(r.stdout)
    if r.returncode or not m:
        raise RuntimeError("bench_ingest %s failed (%d):\n%s%s" %
                           (" ".join(cmd), r.returncode, r.stdout, r.stderr[-2000:]))
    return float(m.group(2)), cpu


def one_repeat(a, tmp, rep, cert, key, tls_up, conns, runs, ciphers):
    """Every system once: each started fresh, measured with 1 and with C connections."""
    arena = max(256, (a.params * 4 * a.updates * 2) >> 20)
    work = lambda name: os.path.join(tmp, "%d-%s" % (rep, name))  # noqa: E731

    failed = []

    def measure(label, url, data_dir, pids, ca):
        for c in conns:
            try:
                runs[(label, c)].append(ingest(a.build, url, data_dir, pids, a.updates,
                                               a.params, c, ca))
            except RuntimeError as e:
                failed.append(label)
                print("bench/tls: %s, %d connection(s), run %d: %s" % (label, c, rep + 1, e))

    p, port = start_up(a.build, work("up"), arena)
    try:
        measure("Tributary HTTP", "http://127.0.0.1:%d" % port, os.path.join(work("up"), "data"),
                [p.pid], None)
    finally:
        p.stop()
    if tls_up:
        p, port = start_up(a.build, work("up-tls"), arena, (cert, key))
        try:
            ciphers["Tributary HTTPS"] = negotiated(port)
            measure("Tributary HTTPS", "https://localhost:%d" % port,
                    os.path.join(work("up-tls"), "data"), [p.pid], cert)
        finally:
            p.stop()
    plain, tls = servers.free_port(), servers.free_port()
    n = start_nginx("nginx-read.conf", work("nginx"), {"PORT": plain, "TLSPORT": tls,
                                                        "CERT": cert, "KEY": key})
    try:
        ciphers["nginx HTTPS (reads body)"] = negotiated(tls)
        d = os.path.join(work("nginx"), "data")
        measure("nginx HTTP (reads body)", "http://127.0.0.1:%d" % plain, d, [n.pid], None)
        measure("nginx HTTPS (reads body)", "https://localhost:%d" % tls, d, [n.pid], cert)
    finally:
        n.stop()
    p, port = start_up(a.build, work("proxied"), arena)
    tls = servers.free_port()
    try:
        n = start_nginx("nginx-proxy.conf", work("proxy"), {"TLSPORT": tls, "UPPORT": port,
                                                            "CERT": cert, "KEY": key})
        try:
            measure("nginx HTTPS -> Tributary", "https://localhost:%d" % tls,
                    os.path.join(work("proxied"), "data"), [n.pid, p.pid], cert)
        finally:
            n.stop()
    finally:
        p.stop()
    return failed


def verdict(ok, what):
    print("  %-4s %s" % ("PASS" if ok else "MISS", what))
    return ok


def report(a, labels, conns, runs, ciphers, tls_up):
    med = statistics.median
    gb = a.updates * a.params * 4 / 1e9
    res = {}
    for key, r in runs.items():
        if r:
            res[key] = (med(x[0] for x in r), min(x[0] for x in r), max(x[0] for x in r),
                        med(x[1] for x in r) / gb)
    print("HTTPS ingest, %d updates x %d f32 (%.1f MB each), median of %d runs" %
          (a.updates, a.params, a.params * 4 / 1e6, a.repeat))
    for label, c in sorted(ciphers.items()):
        print("  %-26s negotiates %s" % (label, c))
    for c in conns:
        base = res.get(("Tributary HTTP", c))
        ngx = res.get(("nginx HTTPS (reads body)", c))
        print("\n%d connection%s:" % (c, "s" if c > 1 else ""))
        print("  %-26s %8s %11s %15s %11s %11s" % ("server", "MB/s", "range", "server CPU s/GB",
                                                    "x Trib HTTP", "x nginx TLS"))
        for label in labels:
            r = res.get((label, c))
            if not r:
                print("  %-26s %8s" % (label, "-"))
                continue
            print("  %-26s %8.0f %11s %15.2f %11s %11s" % (
                label, r[0], "%.0f-%.0f" % (r[1], r[2]), r[3],
                "%.2f" % (r[0] / base[0]) if base else "-",
                "%.2f" % (r[0] / ngx[0]) if ngx else "-"))
    print("\ntargets:")
    if not tls_up:
        verdict(False, "Tributary HTTPS not measured: this build's `tributary up` has no "
                "--tls-cert")
        return
    same = ciphers.get("Tributary HTTPS") == ciphers.get("nginx HTTPS (reads body)")
    print("  same protocol and cipher: %s" % ("yes" if same else "NO (see above)"))
    for c in conns:
        t, n = res.get(("Tributary HTTPS", c)), res.get(("nginx HTTPS (reads body)", c))
        if not t or not n:
            verdict(False, "%d conn: a TLS row failed in every run (above)" % c)
            continue
        verdict(t[0] >= TARGET_MBS * n[0], "%d conn: Tributary HTTPS %.0f MB/s >= %.1f x nginx "
                "HTTPS %.0f MB/s (%.2f x)" % (c, t[0], TARGET_MBS, n[0], t[0] / n[0]))
        if c == 1:
            verdict(t[3] <= TARGET_CPU * n[3], "1 conn: Tributary HTTPS %.2f CPU s/GB <= %.2f x "
                    "nginx HTTPS %.2f (%.2f x)" % (t[3], TARGET_CPU, n[3], t[3] / n[3]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--params", type=int, default=1000000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--csv")
    a = ap.parse_args()
    if not servers.nginx_path():
        print("bench/tls: nginx not installed (scripts/deps-bench.sh)")
        return 1
    tls_up = up_has_tls(a.build)
    labels = ["Tributary HTTP", "Tributary HTTPS", "nginx HTTP (reads body)",
              "nginx HTTPS (reads body)", "nginx HTTPS -> Tributary"]
    conns = [1] + ([a.connections] if a.connections > 1 else [])
    runs = {(label, c): [] for label in labels for c in conns}
    ciphers = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="tributary-tls.") as tmp:
        cert, key = make_cert(tmp)
        for rep in range(a.repeat):
            failed += one_repeat(a, tmp, rep, cert, key, tls_up, conns, runs, ciphers)
    report(a, labels, conns, runs, ciphers, tls_up)
    if a.csv:
        gb = a.updates * a.params * 4 / 1e9
        with open(a.csv, "w") as f:
            f.write("server,connections,mb_per_s,mb_per_s_min,mb_per_s_max,server_cpu_s_per_gb,"
                    "updates,params,repeat\n")
            for (label, c), r in runs.items():
                if r:
                    mbs = sorted(x[0] for x in r)
                    f.write("%s,%d,%.1f,%.1f,%.1f,%.3f,%d,%d,%d\n" % (
                        label, c, statistics.median(mbs), mbs[0], mbs[-1],
                        statistics.median(x[1] for x in r) / gb, a.updates, a.params,
                        a.repeat))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
