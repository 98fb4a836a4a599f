# SPDX-License-Identifier: MIT
# Tests of tributary_client.py against a real `tributary up` (binary: TRIBUTARY_BIN).
"""Run with Debian's interpreter (it has numpy):

    TRIBUTARY_BIN=build/tributary /usr/bin/python3 -m unittest -v clients/python/test_client.py

One `tributary up` is started on a free loopback port in a temporary directory for the whole
module and stopped (SIGTERM, must exit 0) at the end; each test uses its own job.
"""
import collections
import json
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tributary_client as tc  # noqa: E402

BIN = os.environ.get("TRIBUTARY_BIN", "build/tributary")
SANITIZER_MARKS = ("Sanitizer", "runtime error")


class Server:
    """One `tributary up` on 127.0.0.1, a free port and a fresh data directory."""

    def start(self):
        if not os.access(BIN, os.X_OK):
            raise RuntimeError("no tributary binary at %s (set TRIBUTARY_BIN)" % BIN)
        self.dir = tempfile.mkdtemp(prefix="trib-pyclient-")
        port_file = os.path.join(self.dir, "port")
        self.log_path = os.path.join(self.dir, "up.log")
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                [BIN, "up", "--listen", "127.0.0.1:0", "--port-file", port_file,
                 "--data-dir", os.path.join(self.dir, "data"), "--arena-mb", "64"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with open(port_file) as f:
                    txt = f.read()
                if txt.endswith("\n"):
                    self.port = int(txt)
                    break
            except FileNotFoundError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("tributary up exited with %d before listening:\n%s" %
                                   (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("tributary up wrote no port file in 30 s:\n" + self.log())
            time.sleep(0.02)
        with open(os.path.join(self.dir, "data", "admin-token")) as f:
            self.admin = f.read().strip()
        self.url = "http://127.0.0.1:%d" % self.port

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """SIGTERM; returns the exit status (killing it after 10 s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "no exit within 10 s of SIGTERM"
        return rc


SERVER = Server()


def setUpModule():
    SERVER.start()


def tearDownModule():
    rc = SERVER.stop()
    log = SERVER.log()
    bad = [m for m in SANITIZER_MARKS if m in log]
    if rc != 0 or bad:
        sys.stderr.write("----- server log -----\n%s\n----- end -----\n" % log)
        raise RuntimeError("tributary up: exit %s, sanitizer marks %s" % (rc, bad))
    # Tests leave rounds open, so the stop keeps the arena file (outside the data dir, on
    # /dev/hugepages or /dev/shm) for a next start that will not come: remove it, as
    # `make test`'s leak check wants.
    for path in set(re.findall(r"arena file (/\S+?): ", log)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    shutil.rmtree(SERVER.dir, ignore_errors=True)


class FakeTensor:
    """What the client needs of a torch.Tensor: .detach().cpu().numpy()."""

    def __init__(self, arr):
        self.arr = np.asarray(arr)
        self.calls = []

    def detach(self):
        self.calls.append("detach")
        return self

    def cpu(self):
        self.calls.append("cpu")
        return self

    def numpy(self):
        self.calls.append("numpy")
        return self.arr


SHAPES = collections.OrderedDict([("conv.weight", (4, 1, 3, 3)), ("conv.bias", (4,)),
                                  ("fc.weight", (10, 36)), ("fc.bias", (10,))])
_job_no = [0]


def job_name(stem):
    _job_no[0] += 1
    return "%s-%d-%d" % (stem, os.getpid(), _job_no[0])


def random_update(rng, dtype=np.float32):
    return {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.admin = tc.Client(SERVER.url, SERVER.admin, timeout=30)
        self.addCleanup(self.admin.close)

    def new_job(self, stem, clients, tensors=SHAPES.items()):
        return self.admin.create_job(job_name(stem), clients_per_round=clients,
                                     tensors=list(tensors))

    def job_client(self, job):
        c = tc.Client(SERVER.url, job.token)
        self.addCleanup(c.close)
        return c.job(job.name)

    def assert_model(self, got, want, tol=1e-6):
        self.assertEqual(list(got), list(want), "tensor names and order")
        for n in want:
            self.assertEqual(got[n].dtype, np.float32, n)
            self.assertEqual(got[n].shape, want[n].shape, n)
            np.testing.assert_allclose(got[n], want[n], rtol=tol, atol=tol, err_msg=n)

    def test_health_and_job_status(self):
        self.assertEqual(self.admin.health(), {"status": "ok"})
        job = self.new_job("status", 3)
        st = job.status()
        self.assertEqual(st["job"], job.name)
        self.assertEqual(st["round"], 0)
        self.assertEqual(st["model_round"], 0)
        self.assertEqual(st["clients_per_round"], 3)
        self.assertEqual(st["params"], sum(int(np.prod(s)) for s in SHAPES.values()))
        self.assertEqual([t["name"] for t in st["tensors"]], list(SHAPES))
        self.assertIn(job.name, str(self.admin.jobs()))

    def test_weighted_mean_of_numpy_and_state_dict_updates(self):
        """Three clients (numpy float32, numpy float64 with cast=True in another order, a fake
        state_dict) give the sample-weighted mean as the next model, with the right names and
        shapes."""
        rng = np.random.default_rng(7)
        job = self.new_job("mean", 3)
        version, zeros = job.model()
        self.assertEqual(version, 0)
        self.assert_model(zeros, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})

        u1 = random_update(rng)
        u2 = random_update(rng, np.float64)
        u3 = random_update(rng)
        fake = collections.OrderedDict((n, FakeTensor(a)) for n, a in u3.items())
        samples = [10, 30, 60]
        c1, c2, c3 = (self.job_client(job) for _ in range(3))
        self.assertEqual(c1.submit(u1, round=0, samples=samples[0]), {"round": 0, "received": 1})
        reordered = dict(reversed(list(u2.items())))
        self.assertEqual(c2.submit(reordered, round=0, samples=samples[1],
                                   cast=True)["received"], 2)
        c3.submit(fake, round=0, samples=samples[2])
        self.assertEqual(fake["fc.bias"].calls, ["detach", "cpu", "numpy"])

        version, model = c1.wait_model(after=0, timeout=30)
        self.assertEqual(version, 1)
        want = {n: (samples[0] * u1[n].astype(np.float64) +
                    samples[1] * u2[n].astype(np.float32).astype(np.float64) +
                    samples[2] * u3[n].astype(np.float64)) / sum(samples) for n in SHAPES}
        self.assert_model(model, want, tol=1e-5)
        # The same version by number, and the latest.
        v, again = c2.model(round=1)
        self.assertEqual(v, 1)
        self.assert_model(again, model, tol=0)
        v, latest = c3.model()
        self.assertEqual(v, 1)
        self.assert_model(latest, model, tol=0)
        self.assertEqual(job.status()["model_round"], 1)

    def test_params_job_and_initial_model(self):
        job = self.admin.create_job(job_name("params"), clients_per_round=2, params=1000)
        start = {"weights": np.arange(1000, dtype=np.float32)}
        job.set_initial_model(start)
        v, m = job.model()
        self.assertEqual(v, 0)
        self.assert_model(m, start, tol=0)
        job.submit({"weights": np.ones(1000, np.float32)}, round=0, samples=1)
        job.submit({"weights": np.full(1000, 3.0, np.float32)}, round=0, samples=3)
        v, m = job.wait_model(after=0, timeout=30)
        self.assertEqual(v, 1)
        self.assert_model(m, {"weights": np.full(1000, 2.5, np.float32)})
        # The starting model is set before the first update only.
        with self.assertRaises(tc.TributaryError) as cm:
            job.set_initial_model(start)
        self.assertEqual(cm.exception.status, 409)
        self.assertIn("starting model", cm.exception.message)

    def test_npz_bodies_and_fedprox_config(self):
        """format="npz" for the starting model and the updates gives the same mean as
        safetensors; a fedprox job's mu reaches train()'s config through the real task."""
        rng = np.random.default_rng(11)
        job = self.admin.create_job(job_name("npz"), clients_per_round=2,
                                    tensors=list(SHAPES.items()), algorithm="fedprox",
                                    proximal_mu=0.125)
        start = random_update(rng)
        job.set_initial_model(start, format="npz")
        v, m = job.model()
        self.assert_model(m, start, tol=0)
        u1, u2 = random_update(rng), random_update(rng)
        configs = []

        def train(model, config):
            configs.append(dict(config))
            return u1, 1
        self.job_client(job).submit(u2, round=0, samples=3, format="npz")
        c1 = self.job_client(job)
        hist = c1.run(train, rounds=1, timeout=30, format="npz")  # the round's second update
        self.assertEqual(len(configs), 1)
        self.assertEqual(configs[0].get("proximal_mu"), 0.125)
        v, m = c1.model()
        self.assertEqual((hist[0]["round"], v), (0, 1))
        self.assert_model(m, {n: (u1[n].astype(np.float64) + 3 * u2[n]) / 4 for n in SHAPES},
                          tol=1e-5)

    def test_sparse_updates_are_the_mean_with_zeros_elsewhere(self):
        """sparse={name: (indices, values)} beside dense tensors, in safetensors and npz, on
        a delta job: the model moves by the mean with the unsent coordinates as zeros; a
        server refusal (an index out of range) names the tensor."""
        rng = np.random.default_rng(12)
        job = self.admin.create_job(job_name("sparse"), clients_per_round=2,
                                    tensors=list(SHAPES.items()), update="delta")
        u1, u2 = random_update(rng), random_update(rng)
        idx = np.array([35, 3, 200, 7], np.int64)  # unsorted: the client sorts them
        vals = rng.standard_normal(4).astype(np.float32)
        dense1 = {n: u1[n] for n in SHAPES if n != "fc.weight"}
        c = self.job_client(job)
        with self.assertRaises(tc.TributaryError) as cm:
            c.submit(dense1, round=0, sparse={"fc.weight": (np.array([360]), vals[:1])})
        self.assertEqual(cm.exception.status, 422)
        self.assertIn("fc.weight.indices", str(cm.exception))
        c.submit(dense1, round=0, samples=2, sparse={"fc.weight": (idx, vals)})
        self.job_client(job).submit({n: u2[n] for n in SHAPES if n != "conv.bias"}, round=0,
                                    samples=1, format="npz",
                                    sparse={"conv.bias": (np.array([1], np.int32),
                                                          u2["conv.bias"][1:2])})
        u1["fc.weight"] = np.zeros(SHAPES["fc.weight"], np.float32)
        u1["fc.weight"].reshape(-1)[idx] = vals
        u2["conv.bias"][[0, 2, 3]] = 0
        v, m = c.wait_model(0, timeout=30)
        self.assertEqual(v, 1)
        self.assert_model(m, {n: (2 * u1[n].astype(np.float64) + u2[n]) / 3 for n in SHAPES},
                          tol=1e-6)

    def test_frl_rankings_and_the_int32_model(self):
        """An frl job: rankings made with frl_ranking() (scores with ties) give the stable
        argsort of the summed positions as an int32 model; v0 is the identity; a float array
        is refused here and an out-of-range index by the server (422 naming tensor, index)."""
        rng = np.random.default_rng(5)
        job = self.admin.create_job(job_name("frl"), clients_per_round=3,
                                    tensors=list(SHAPES.items()), algorithm="frl")
        v, m = job.model()
        self.assertEqual(v, 0)
        for n, shape in SHAPES.items():
            self.assertEqual(m[n].dtype, np.int32, n)
            self.assertEqual(m[n].shape, tuple(shape), n)
            np.testing.assert_array_equal(m[n].ravel(), np.arange(int(np.prod(shape))))
        with self.assertRaises(TypeError):
            tc.encode_rankings({n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
        bad = {n: tc.frl_ranking(rng.integers(0, 3, s)) for n, s in SHAPES.items()}
        name = list(SHAPES)[-1]
        bad[name] = bad[name].copy()
        bad[name][1] = bad[name].size  # out of range
        with self.assertRaises(tc.TributaryError) as cm:
            self.job_client(job).submit_ranking(bad, round=0)
        self.assertEqual(cm.exception.status, 422)
        self.assertEqual((cm.exception.body["tensor"], cm.exception.body["index"]), (name, 1))
        votes = {n: np.zeros(int(np.prod(s)), np.int64) for n, s in SHAPES.items()}
        for _ in range(3):
            scores = {n: rng.integers(0, 4, s) for n, s in SHAPES.items()}  # many ties
            ranks = {n: tc.frl_ranking(sc) for n, sc in scores.items()}
            for n, r in ranks.items():
                votes[n][r] += np.arange(r.size)
            self.job_client(job).submit_ranking(ranks, round=0)
        v, m = job.wait_model(after=0, timeout=30)
        self.assertEqual(v, 1)
        for n, shape in SHAPES.items():
            self.assertEqual(m[n].dtype, np.int32, n)
            want = np.argsort(votes[n], kind="stable").astype(np.int32).reshape(shape)
            np.testing.assert_array_equal(m[n], want, err_msg=n)

    def test_create_job_from_state_dict_shapes(self):
        sd = collections.OrderedDict((n, FakeTensor(np.zeros(s))) for n, s in SHAPES.items())
        job = self.admin.create_job(job_name("sd"), clients_per_round=1, tensors=sd)
        st = job.status()
        self.assertEqual([(t["name"], tuple(t["shape"])) for t in st["tensors"]],
                         list(SHAPES.items()))

    def test_wrong_token_is_401_with_message(self):
        job = self.new_job("auth", 2)
        bad = tc.Client(SERVER.url, "not-the-token")
        self.addCleanup(bad.close)
        with self.assertRaises(tc.TributaryError) as cm:
            bad.job(job.name).submit(random_update(np.random.default_rng(1)), round=0)
        e = cm.exception
        self.assertEqual(e.status, 401)
        self.assertIn("token", e.message)
        self.assertIsNone(e.round)
        self.assertIn("401", str(e))
        # A job's token cannot create jobs.
        with self.assertRaises(tc.TributaryError) as cm, tc.Client(SERVER.url, job.token) as c:
            c.create_job(job_name("x"), 1, params=4)
        self.assertEqual(cm.exception.status, 401)
        self.assertIn("admin", cm.exception.message)
        self.assertEqual(job.status()["received"], 0)

    def test_client_credentials(self):
        """A job with client_auth required: the job token mints but does not submit; each
        client submits once per round with its own credential; a revoked one gets 401."""
        rng = np.random.default_rng(11)
        job = self.admin.create_job(job_name("creds"), clients_per_round=2,
                                    tensors=list(SHAPES.items()), client_auth="required")
        with self.assertRaises(tc.TributaryError) as cm:
            job.submit(random_update(rng), round=0)
        self.assertEqual(cm.exception.status, 403)
        a = job.mint_client("alice")
        b = job.mint_client(ttl_s=3600)
        self.assertEqual(a["client"], "alice")
        self.assertTrue(b["token"].startswith("tc1.") and b["expires"] > time.time())
        alice = self.job_client(job).as_client(a)
        u = random_update(rng)
        first = alice.submit(u, round=0, idempotency_key="alice-0")
        with self.assertRaises(tc.TributaryError) as cm:
            alice.submit(random_update(rng), round=0)
        self.assertEqual(cm.exception.status, 409)
        self.assertIn("one update per client", cm.exception.message)
        self.assertEqual(alice.submit(u, round=0, idempotency_key="alice-0"), first)
        job.revoke_client(b["client"])
        with self.assertRaises(tc.TributaryError) as cm:
            job.as_client(b).submit(random_update(rng), round=0)
        self.assertEqual(cm.exception.status, 401)
        self.assertIn("revoked", cm.exception.message)
        job.as_client(job.mint_client("carol")).submit(random_update(rng), round=0)
        v, _ = alice.wait_model(after=0, timeout=30)
        self.assertEqual(v, 1)
        self.assertEqual(job.status()["last_round_clients"], 2)

    def test_on_a_single_node_a_202_is_final(self):
        """outcome() says "accepted" without asking; a single node has round records too."""
        rng = np.random.default_rng(3)
        job = self.new_job("outcome", 2)
        ack = job.submit(random_update(rng), round=0)
        self.assertEqual(job.outcome(ack), "accepted")
        rec = job.round_record(0)
        self.assertEqual((rec["state"], rec["received"], rec["closed_at"]), ("open", 1, None))
        with self.assertRaises(tc.TributaryError) as cm:
            job.round_record(5)
        self.assertEqual(cm.exception.status, 404)

    def test_stale_and_future_round_are_409_with_round(self):
        rng = np.random.default_rng(2)
        job = self.new_job("stale", 1)
        job.submit(random_update(rng), round=0)
        job.wait_model(after=0, timeout=30)
        with self.assertRaises(tc.TributaryError) as cm:
            job.submit(random_update(rng), round=0)
        self.assertEqual(cm.exception.status, 409)
        self.assertEqual(cm.exception.round, 1)
        self.assertIn("stale", cm.exception.message)
        with self.assertRaises(tc.TributaryError) as cm:
            job.submit(random_update(rng), round=5)
        self.assertEqual((cm.exception.status, cm.exception.round), (409, 1))
        self.assertIn("future", cm.exception.message)
        # The connection is still good after errors.
        self.assertEqual(job.submit(random_update(rng), round=1), {"round": 1, "received": 1})

    def test_other_errors_carry_the_server_message(self):
        job = self.new_job("errs", 2)
        upd = random_update(np.random.default_rng(3))
        upd["fc.bias"] = np.zeros(11, np.float32)
        with self.assertRaises(tc.TributaryError) as cm:
            job.submit(upd, round=0)
        self.assertEqual(cm.exception.status, 422)
        self.assertIn("shape", cm.exception.message)
        with self.assertRaises(tc.TributaryError) as cm:
            job.model(round=9)
        self.assertEqual(cm.exception.status, 404)
        self.assertIn("round 9", cm.exception.message)
        with self.assertRaises(tc.TributaryError) as cm:
            self.admin.create_job(job.name, 2, params=4)
        self.assertEqual(cm.exception.status, 409)
        self.assertIn("exists", cm.exception.message)
        with self.assertRaises(tc.TributaryError) as cm:
            self.admin.create_job("bad name!", 2, params=4)
        self.assertEqual(cm.exception.status, 400)
        with self.assertRaises(tc.TributaryError) as cm:
            self.admin.job("no-such-job").status()
        self.assertEqual(cm.exception.status, 404)
        with self.assertRaises(ValueError):
            self.admin.create_job("x", 2)
        self.assertEqual(job.status()["received"], 0)

    def test_long_poll_waits_for_the_round(self):
        """wait_model(after=0) blocks until the round closes, across server 304s."""
        rng = np.random.default_rng(4)
        job = self.new_job("poll", 2)
        got = {}

        def waiter():
            try:
                got["model"] = self.job_client(job).wait_model(after=0, timeout=60)
            except BaseException as e:  # reported by the main thread
                got["error"] = e

        t = threading.Thread(target=waiter)
        t.start()
        u = [random_update(rng) for _ in range(2)]
        job.submit(u[0], round=0, samples=1)
        time.sleep(0.3)
        self.assertTrue(t.is_alive(), "wait_model returned before the round closed")
        job.submit(u[1], round=0, samples=1)
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertNotIn("error", got)
        version, model = got["model"]
        self.assertEqual(version, 1)
        self.assert_model(model, {n: (u[0][n] + u[1][n]) / 2 for n in SHAPES}, tol=1e-6)
        # Already there: returns at once.
        self.assertEqual(job.wait_model(after=0, timeout=5)[0], 1)

    def test_long_poll_times_out(self):
        """Nothing arrives: the server answers 304 and wait_model raises TimeoutError."""
        job = self.new_job("pollto", 2)
        with self.assertRaises(TimeoutError):
            job.wait_model(after=0, timeout=1.5)
        # The connection is usable after 304s.
        self.assertEqual(job.status()["round"], 0)

    def test_reconnects_after_the_server_closed_the_connection(self):
        job = self.new_job("reconn", 2)
        job.status()
        self.assertIsNotNone(self.admin._conn.sock)
        # As if the server had closed the idle keep-alive connection.
        self.admin._conn.sock.shutdown(socket.SHUT_RDWR)
        self.assertEqual(job.status()["round"], 0)
        self.admin.close()
        self.assertEqual(job.status()["round"], 0)


class RetryHandler(http.server.BaseHTTPRequestHandler):
    """Answers 503 + Retry-After: 0 to the first `fails` POSTs, then 202."""
    protocol_version = "HTTP/1.1"
    fails = 0
    seen = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.seen += 1
        if cls.seen <= cls.fails:
            body = b'{"error":"aggregation memory is full; retry shortly"}'
            self.send_response(503)
            self.send_header("Retry-After", "0")
        else:
            body = b'{"round":0,"received":1}'
            self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class RetryTest(unittest.TestCase):
    """503 handling, against a stand-in server (filling a real arena is the e2e suite's job)."""

    def serve(self, fails):
        RetryHandler.fails, RetryHandler.seen = fails, 0
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RetryHandler)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        c = tc.Client("http://127.0.0.1:%d" % srv.server_address[1], "t", retries=3)
        self.addCleanup(c.close)
        return c.job("j")

    def test_503_is_retried(self):
        job = self.serve(fails=2)
        self.assertEqual(job.submit({"w": np.zeros(3, np.float32)}, round=0),
                         {"round": 0, "received": 1})
        self.assertEqual(RetryHandler.seen, 3)

    def test_503_retries_are_bounded(self):
        job = self.serve(fails=100)
        with self.assertRaises(tc.TributaryError) as cm:
            job.submit({"w": np.zeros(3, np.float32)}, round=0)
        self.assertEqual(cm.exception.status, 503)
        self.assertIn("memory is full", cm.exception.message)
        self.assertEqual(RetryHandler.seen, 4)


class IdemHandler(http.server.BaseHTTPRequestHandler):
    """Records each POST's Idempotency-Key; how it answers is the class's `mode`:

    "drop"    the first `drops` POSTs are read whole and the connection is closed unanswered
    "cut"     the first `drops` POSTs get half of a 202 (the connection closes mid-answer)
    "reject"  every POST gets a 422
    "busy"    the first `drops` POSTs get 503 + Retry-After: 0
    The others get 202 {"round":0,"received":n}.
    """
    protocol_version = "HTTP/1.1"
    mode = "drop"
    drops = 1
    keys = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.keys.append(self.headers.get("Idempotency-Key"))
        first = len(cls.keys) <= cls.drops
        if cls.mode == "drop" and first:
            self.close_connection = True
            return
        if cls.mode == "cut" and first:
            self.wfile.write(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 40\r\n\r\n{\"round\":0,")
            self.wfile.flush()
            self.close_connection = True
            return
        if cls.mode == "reject":
            status, body = 422, b'{"error":"tensor w: shape [3], want [4]"}'
        elif cls.mode == "busy" and first:
            status, body = 503, b'{"error":"aggregation memory is full; retry shortly"}'
        else:
            status, body = 202, b'{"round":0,"received":%d}' % len(set(cls.keys))
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


KEY_RE = r"[A-Za-z0-9_-]{22,64}"


class IdempotencyTest(unittest.TestCase):
    """Every update carries an Idempotency-Key, kept for its resends (a stand-in server)."""

    def start(self, mode, drops=1, port=0, delay=0.0):
        IdemHandler.mode, IdemHandler.drops, IdemHandler.keys = mode, drops, []
        box = {}

        def serve():
            if delay:
                time.sleep(delay)
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), IdemHandler)
            box["srv"] = srv
            srv.serve_forever(poll_interval=0.05)

        t = threading.Thread(target=serve, daemon=True)
        t.start()

        def stop():
            deadline = time.monotonic() + 5
            while "srv" not in box and t.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if "srv" in box:
                box["srv"].shutdown()
                box["srv"].server_close()
        self.addCleanup(stop)
        if not delay:
            while "srv" not in box:
                time.sleep(0.01)
            port = box["srv"].server_address[1]
        return port

    def job(self, port, **kw):
        kw.setdefault("max_retry_wait", 0.05)
        c = tc.Client("http://127.0.0.1:%d" % port, "t", **kw)
        self.addCleanup(c.close)
        return c.job("j")

    def test_dropped_connection_resends_with_the_same_key(self):
        job = self.job(self.start("drop"))
        self.assertEqual(job.submit({"w": np.zeros(3, np.float32)}, round=0),
                         {"round": 0, "received": 1})
        keys = IdemHandler.keys
        self.assertEqual(len(keys), 2, "sent, dropped, sent again")
        self.assertRegex(keys[0], "^%s$" % KEY_RE)
        self.assertEqual(keys[0], keys[1], "the resend carries the same key")

    def test_answer_cut_mid_body_resends_with_the_same_key(self):
        job = self.job(self.start("cut", drops=2))
        self.assertEqual(job.submit({"w": np.zeros(3, np.float32)}, round=0)["received"], 1)
        self.assertEqual(len(IdemHandler.keys), 3)
        self.assertEqual(len(set(IdemHandler.keys)), 1, IdemHandler.keys)

    def test_refused_while_the_server_restarts_is_resent(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there until the stand-in starts, 0.3 s later
        self.start("accept", port=port, delay=0.3)
        job = self.job(port, max_retry_wait=0.2)
        key = "client-7-round-0"
        self.assertEqual(job.submit({"w": np.zeros(3, np.float32)}, round=0, idempotency_key=key),
                         {"round": 0, "received": 1})
        self.assertEqual(IdemHandler.keys, [key])

    def test_resends_are_bounded_and_name_the_key(self):
        job = self.job(self.start("drop", drops=100), resends=3)
        with self.assertRaises(tc.TributaryError) as cm:
            job.submit({"w": np.zeros(3, np.float32)}, round=0)
        e = cm.exception
        self.assertEqual(e.status, 0)
        self.assertEqual(len(IdemHandler.keys), 4, "one send and 3 resends")
        self.assertEqual(set(IdemHandler.keys), {e.idempotency_key})
        self.assertIn("no answer after 4 sends with Idempotency-Key " + e.idempotency_key,
                      str(e))
        # The caller can resend it later under the same key.
        IdemHandler.drops = 0
        job.submit({"w": np.zeros(3, np.float32)}, round=0, idempotency_key=e.idempotency_key)
        self.assertEqual(IdemHandler.keys[-1], e.idempotency_key)

    def test_4xx_is_not_resent(self):
        job = self.job(self.start("reject"))
        with self.assertRaises(tc.TributaryError) as cm:
            job.submit({"w": np.zeros(3, np.float32)}, round=0)
        self.assertEqual(cm.exception.status, 422)
        self.assertEqual(len(IdemHandler.keys), 1)
        self.assertEqual(cm.exception.idempotency_key, IdemHandler.keys[0])

    def test_503_retries_keep_the_key(self):
        job = self.job(self.start("busy", drops=2), retries=3)
        job.submit({"w": np.zeros(3, np.float32)}, round=0)
        self.assertEqual(len(IdemHandler.keys), 3)
        self.assertEqual(len(set(IdemHandler.keys)), 1)

    def test_keys_differ_across_updates(self):
        job = self.job(self.start("accept"))
        for _ in range(5):
            job.submit({"w": np.zeros(3, np.float32)}, round=0)
        self.assertEqual(len(set(IdemHandler.keys)), 5, IdemHandler.keys)
        for k in IdemHandler.keys:
            self.assertRegex(k, "^%s$" % KEY_RE)

    def test_bad_keys_are_refused_before_sending(self):
        job = self.job(self.start("accept"))
        for bad in ("", "x" * 65, "with space", "caf\u00e9", "tab\t"):
            with self.assertRaises(ValueError):
                job.submit({"w": np.zeros(3, np.float32)}, round=0, idempotency_key=bad)
        job.submit({"w": np.zeros(3, np.float32)}, round=0, idempotency_key="k" * 64)
        self.assertEqual(IdemHandler.keys, ["k" * 64])

    def test_requests_without_a_key_are_not_resent(self):
        """create_job is not an update: a broken connection is raised at once."""
        port = self.start("drop", drops=100)
        c = tc.Client("http://127.0.0.1:%d" % port, "t", max_retry_wait=0.01)
        self.addCleanup(c.close)
        with self.assertRaises(tc.TributaryError) as cm:
            c.request("POST", "/v1/jobs", b"{}")
        self.assertEqual(cm.exception.status, 0)
        self.assertIsNone(cm.exception.idempotency_key)
        self.assertEqual(IdemHandler.keys, [None])


class SafetensorsTest(unittest.TestCase):
    def test_layout_and_round_trip(self):
        upd = collections.OrderedDict([("a", np.arange(6, dtype=np.float64).reshape(2, 3)),
                                       ("b.c", np.float32(1.5)), ("d", [1, 2])])
        data = tc.encode_safetensors(upd, cast=True)
        hlen = int.from_bytes(data[:8], "little")
        self.assertEqual((8 + hlen) % 8, 0)
        self.assertEqual(len(data), 8 + hlen + 4 * (6 + 1 + 2))
        back = tc.decode_safetensors(data)
        self.assertEqual(list(back), ["a", "b.c", "d"])
        self.assertEqual(back["a"].shape, (2, 3))
        self.assertEqual(back["b.c"].shape, ())
        np.testing.assert_array_equal(back["a"], upd["a"])
        np.testing.assert_array_equal(back["d"], [1, 2])
        back["a"][0, 0] = 9  # writable
        self.assertEqual(np.frombuffer(data[8 + hlen:8 + hlen + 4], "<f4")[0], 0.0)

    def test_sparse_tensors_are_indices_and_values(self):
        data = tc.encode_safetensors({"a": np.zeros(3, np.float32)},
                                     sparse={"w": (np.array([9, 2], np.int64),
                                                   np.array([1.5, -2], np.float32))})
        hlen = int.from_bytes(data[:8], "little")
        hdr = json.loads(data[8:8 + hlen])
        self.assertEqual(hdr["w.indices"]["dtype"], "I64")
        self.assertEqual(hdr["w.values"]["dtype"], "F32")
        b0, b1 = hdr["w.indices"]["data_offsets"]
        self.assertEqual(b0 % 8, 0)  # int64 data 8-byte aligned after a 12-byte tensor
        np.testing.assert_array_equal(np.frombuffer(data[8 + hlen + b0:8 + hlen + b1], "<i8"),
                                      [2, 9])
        b0, b1 = hdr["w.values"]["data_offsets"]
        np.testing.assert_array_equal(np.frombuffer(data[8 + hlen + b0:8 + hlen + b1], "<f4"),
                                      [-2, 1.5])  # sorted with their indices
        i32 = tc.encode_safetensors({}, sparse={"w": (np.array([1], np.int32), [1.0])})
        self.assertIn(b'"I32"', i32)
        with np.load(io.BytesIO(tc.encode_npz({}, sparse={"w": ([4, 1], [1.0, 2.0])}))) as z:
            np.testing.assert_array_equal(z["w.indices"], [1, 4])
            np.testing.assert_array_equal(z["w.values"], [2.0, 1.0])
        for bad, err in (({"w": ([1, 1], [1.0, 2.0])}, ValueError),
                         ({"w": ([1, 2], [1.0])}, ValueError),
                         ({"a": ([1], [1.0])}, ValueError),
                         ({"w": ([1.0], [1.0])}, TypeError),
                         ({"w": [1]}, TypeError)):
            with self.assertRaises(err, msg=repr(bad)):
                tc.encode_safetensors({"a": np.zeros(3, np.float32)}, sparse=bad)

    def test_malformed_is_value_error(self):
        for bad in (b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{}",
                    b"\x02\x00\x00\x00\x00\x00\x00\x00[]",
                    tc.encode_safetensors({"a": np.zeros(4, np.float32)})[:-1]):
            with self.assertRaises(ValueError):
                tc.decode_safetensors(bad)
        with self.assertRaises(TypeError):
            tc.encode_safetensors([np.zeros(3, np.float32)])

    def test_i32_tensor_decodes_as_int32(self):
        # A flora model's <pair>.rank (an FRL model's rankings): I32 next to F32; F16 is refused.
        hdr = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "a.rank": {"dtype": "I32", "shape": [1], "data_offsets": [8, 12]}}
        h = json.dumps(hdr).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        data = (len(h).to_bytes(8, "little") + h + np.array([1.5, -2], "<f4").tobytes() +
                np.array([7], "<i4").tobytes())
        back = tc.decode_safetensors(data)
        self.assertEqual(back["a.rank"].dtype, np.int32)
        self.assertEqual(int(back["a.rank"][0]), 7)
        np.testing.assert_array_equal(back["a"], [1.5, -2])
        hdr["a"]["dtype"] = "F16"
        h = json.dumps(hdr).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with self.assertRaises(ValueError):
            tc.decode_safetensors(len(h).to_bytes(8, "little") + h + bytes(12))


if __name__ == "__main__":
    unittest.main()
