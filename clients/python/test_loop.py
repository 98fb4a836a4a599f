# SPDX-License-Identifier: MIT
# Tests of Job.run() and run_numpy_client() against an in-process stand-in for the server.
"""Run with Debian's interpreter (it has numpy):

    /usr/bin/python3 -m unittest -v clients/python/test_loop.py

The stand-in (FakeJob below) speaks the part of API v1 the loop uses: GET status, /task,
/model (?round=, ?after= long polls), POST /updates (Idempotency-Key, X-Tributary-Metrics,
409/410) and /evaluations, for one job whose rounds close at K updates and which is done after
N rounds. It can break the connection of an update after counting it, and answer 503 like a
paused job, so the loop's retries are seen from the server's side. test_run_server.py runs the
same loop against a real `tributary up`.
"""
import http.server
import io
import json
import os
import sys
import threading
import unittest
import urllib.parse
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tributary_client as tc  # noqa: E402

TENSORS = [{"name": "fc.weight", "shape": [3, 2], "dtype": "F32"},
           {"name": "fc.bias", "shape": [3], "dtype": "F32"}]


class FakeJob:
    """One job's state, shared by the handler threads under one condition variable."""

    def __init__(self, k, num_rounds, schedule=None):
        self.k = k
        self.num_rounds = num_rounds
        self.schedule = schedule or {}   # round -> config
        self.cv = threading.Condition()
        self.models = [{t["name"]: np.zeros(t["shape"], np.float32) for t in TENSORS}]
        self.round = 0
        self.pending = {}                # token -> (update, samples)
        self.metrics = {}                # round -> [(token, samples, metrics)]
        self.evaluations = {}            # version -> {token: (samples, metrics)}
        self.keys = {}                   # idempotency key -> (status, body)
        self.update_posts = []           # (token, round, key) of every POST /updates
        self.drop_first_update = False   # count it, then close without an answer
        self.busy_updates = 0            # answer this many updates 503 first
        self.done_before_submit = False  # a 410 for the next update
        self.proximal_mu = None          # a fedprox job's, in every train task
        self.content_types = []          # of every POST /updates

    def done(self):
        return self.round >= self.num_rounds

    def config(self, r):
        cfg = {}
        for start in sorted(self.schedule):
            if start <= r:
                cfg.update(self.schedule[start])
        return cfg


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body go in two writes: without this, Nagle's algorithm and the
    # client's delayed ACK hold each answer for 40 ms.
    disable_nagle_algorithm = True
    job = None

    def log_message(self, *a):
        pass

    def answer(self, status, obj=None, body=None, headers=None):
        data = body if body is not None else (json.dumps(obj).encode() if obj is not None
                                              else b"")
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def token(self):
        return self.headers.get("Authorization", "")[len("Bearer "):]

    def do_GET(self):
        j = self.job
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        with j.cv:
            if u.path == "/v1/jobs/j":
                return self.answer(200, {"round": j.round, "tensors": TENSORS,
                                         "state": "done" if j.done() else "open"})
            if u.path == "/v1/jobs/j/task":
                if j.done():
                    return self.answer(200, {"action": "done", "rounds": j.num_rounds})
                task = {"action": "train", "round": j.round, "version": j.round,
                        "config": j.config(j.round), "deadline_s": None,
                        "task": "%d:%s" % (j.round, self.token())}
                if j.proximal_mu is not None:
                    task["proximal_mu"] = j.proximal_mu
                return self.answer(200, task)
            if u.path == "/v1/jobs/j/model":
                if "after" in q:
                    after = int(q["after"])
                    j.cv.wait_for(lambda: len(j.models) - 1 > after, float(q["timeout"]))
                    if len(j.models) - 1 <= after:
                        return self.answer(304)
                v = int(q["round"]) if "round" in q else len(j.models) - 1
                if v >= len(j.models):
                    return self.answer(404, {"error": "no version %d" % v})
                return self.answer(200, body=tc.encode_safetensors(j.models[v]),
                                   headers={"X-Tributary-Round": str(v)})
        self.answer(404, {"error": "no route"})

    def do_POST(self):
        j = self.job
        data = self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers.get("Idempotency-Key")
        tok = self.token()
        with j.cv:
            if self.path == "/v1/jobs/j/evaluations":
                ev = json.loads(data)
                per = j.evaluations.setdefault(ev["version"], {})
                if key in j.keys:
                    return self.answer(*j.keys[key])
                if tok in per:
                    return self.answer(409, {"error": "already evaluated"})
                per[tok] = (ev["samples"], ev["metrics"])
                j.keys[key] = (202, {"version": ev["version"], "clients": len(per)})
                return self.answer(*j.keys[key])
            rnd = int(self.headers["X-Tributary-Round"])
            j.update_posts.append((tok, rnd, key))
            if key in j.keys:
                return self.answer(*j.keys[key])
            if j.busy_updates:
                j.busy_updates -= 1
                return self.answer(503, {"error": "job 'j' is paused", "state": "paused"},
                                   headers={"Retry-After": "0"})
            if j.done_before_submit or j.done():
                return self.answer(410, {"error": "job 'j' is done", "state": "done"})
            if rnd != j.round or tok in j.pending:
                return self.answer(409, {"error": "stale or second update", "round": j.round})
            ctype = self.headers.get("Content-Type")
            j.content_types.append(ctype)
            if ctype == "application/x-npz":
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    upd = {k: z[k] for k in z.files}
            else:
                upd = tc.decode_safetensors(data)
            samples = int(self.headers["X-Tributary-Samples"])
            m = self.headers.get("X-Tributary-Metrics")
            j.metrics.setdefault(rnd, []).append((tok, samples, json.loads(m) if m else None))
            j.pending[tok] = (upd, samples)
            j.keys[key] = (202, {"round": rnd, "received": len(j.pending)})
            if len(j.pending) == j.k:
                total = sum(n for _, n in j.pending.values())
                j.models.append({t["name"]: sum(n * u[t["name"]].astype(np.float64)
                                                for u, n in j.pending.values()).astype(
                                                    np.float32) / np.float32(total)
                                 for t in TENSORS})
                j.pending = {}
                j.round += 1
                j.cv.notify_all()
            if j.drop_first_update:
                j.drop_first_update = False
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.answer(*j.keys[key])


class LoopTestCase(unittest.TestCase):
    def start(self, k=2, num_rounds=3, schedule=None):
        self.fj = FakeJob(k, num_rounds, schedule)
        handler = type("H", (Handler,), {"job": self.fj})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        self.url = "http://127.0.0.1:%d" % srv.server_address[1]

    def job(self, token, **kw):
        c = tc.Client(self.url, token, timeout=10, **kw)
        self.addCleanup(c.close)
        return c.job("j")

    def run_clients(self, fns, **run_kw):
        """Runs fns[i](job_i) in a thread each; returns their results (or raises the first
        exception)."""
        out, errs = [None] * len(fns), []

        def go(i):
            try:
                out[i] = fns[i](self.job("client-%d" % i))
            except BaseException as e:  # noqa: B902 -- reported by the test thread
                errs.append(e)
        ts = [threading.Thread(target=go, args=(i,)) for i in range(len(fns))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in ts), "a client loop did not finish")
        if errs:
            raise errs[0]
        return out


def add_const(c, samples, seen):
    """A train() that adds @c to every weight, records the configs it was given, and reports
    its loss as c."""
    def train(model, config):
        seen.append((dict(config), {k: v.copy() for k, v in model.items()}))
        return {k: v + np.float32(c) for k, v in model.items()}, samples, {"loss": float(c)}
    return train


class RunTest(LoopTestCase):
    def test_rounds_config_metrics_and_evaluation(self):
        self.start(k=2, num_rounds=3, schedule={0: {"lr": 0.1, "opt": "sgd"}, 2: {"lr": 0.01}})
        seen = [[], []]
        evals = [[], []]

        def client(i, c, samples):
            def evaluate(model, config):
                evals[i].append(float(model["fc.bias"][0]))
                return 10 * (i + 1), {"accuracy": 0.5 + i / 10}
            return lambda job: job.run(add_const(c, samples, seen[i]), evaluate)

        hist = self.run_clients([client(0, 1.0, 1), client(1, 4.0, 3)])
        # Every round: mean of +1 (weight 1) and +4 (weight 3) = +3.25 on the last model.
        for i in range(2):
            self.assertEqual([h["round"] for h in hist[i]], [0, 1, 2])
            self.assertEqual([h["version"] for h in hist[i]], [0, 1, 2])
            self.assertEqual([h["next_version"] for h in hist[i]], [1, 2, 3])
            self.assertEqual([cfg for cfg, _ in seen[i]],
                             [{"lr": 0.1, "opt": "sgd"}, {"lr": 0.1, "opt": "sgd"},
                              {"lr": 0.01, "opt": "sgd"}])
            self.assertEqual([float(m["fc.weight"][0, 0]) for _, m in seen[i]],
                             [0.0, 3.25, 6.5])
            self.assertEqual(evals[i], [3.25, 6.5, 9.75])
        np.testing.assert_allclose(self.fj.models[3]["fc.bias"], np.full(3, 9.75), rtol=1e-6)
        self.assertEqual(self.fj.round, 3)
        # X-Tributary-Metrics with each update; one evaluation per client per version.
        for r in range(3):
            self.assertEqual(sorted((n, m["loss"]) for _, n, m in self.fj.metrics[r]),
                             [(1, 1.0), (3, 4.0)])
        for v in (1, 2, 3):
            self.assertEqual(self.fj.evaluations[v],
                             {"client-0": (10, {"accuracy": 0.5}),
                              "client-1": (20, {"accuracy": 0.6})})
        # Every update went once, each with its own key.
        keys = [k for _, _, k in self.fj.update_posts]
        self.assertEqual(len(keys), 6)
        self.assertEqual(len(set(keys)), 6)

    def test_rounds_argument_stops_early(self):
        self.start(k=1, num_rounds=10)
        hist = self.job("a").run(add_const(1.0, 5, []), rounds=2)
        self.assertEqual([h["round"] for h in hist], [0, 1])
        self.assertEqual(self.fj.round, 2)
        for bad in (0, 1.5, True, "2"):
            with self.assertRaises(TypeError):
                self.job("a").run(add_const(1.0, 5, []), rounds=bad)
        self.assertEqual(self.fj.round, 2)

    def test_done_job_ends_the_loop(self):
        self.start(k=1, num_rounds=0)
        self.assertEqual(self.job("a").run(add_const(1.0, 5, [])), [])
        self.assertEqual(self.fj.update_posts, [])

    def test_410_on_submit_ends_the_loop(self):
        self.start(k=1, num_rounds=5)
        self.fj.done_before_submit = True
        lines = []
        self.assertEqual(self.job("a").run(add_const(1.0, 5, []), log=lines.append), [])
        self.assertEqual(len(self.fj.update_posts), 1)
        self.assertTrue(any("done" in x for x in lines), lines)

    def test_broken_connection_resends_with_the_same_key(self):
        """The server counts the update and breaks the connection before answering; with no
        resends left in the Client, run() itself sends it again with the same key, and the
        server's first answer comes back: counted once."""
        self.start(k=1, num_rounds=2)
        self.fj.drop_first_update = True
        hist = self.job("a", resends=0).run(add_const(2.0, 4, []))
        self.assertEqual([h["round"] for h in hist], [0, 1])
        posts = self.fj.update_posts
        self.assertEqual(len(posts), 3)
        self.assertEqual(posts[0][2], posts[1][2])
        self.assertNotEqual(posts[1][2], posts[2][2])
        self.assertEqual(hist[0]["received"], 1)
        np.testing.assert_allclose(self.fj.models[2]["fc.bias"], np.full(3, 4.0))

    def test_paused_job_is_waited_for(self):
        self.start(k=1, num_rounds=1)
        self.fj.busy_updates = 3
        hist = self.job("a", retries=0).run(add_const(1.0, 1, []))
        self.assertEqual(len(hist), 1)
        keys = [k for _, _, k in self.fj.update_posts]
        self.assertEqual(len(keys), 4)
        self.assertEqual(len(set(keys)), 1)

    def test_stale_update_skips_to_the_next_round(self):
        """Another client closes round 0 while this one trains: its 409 moves it on."""
        self.start(k=1, num_rounds=2)
        other = self.job("other")

        def slow_train(model, config):
            if self.fj.round == 0:
                other.submit({t["name"]: np.zeros(t["shape"], np.float32) for t in TENSORS},
                             round=0)
            return {k: v + 1 for k, v in model.items()}, 1
        lines = []
        hist = self.job("a").run(slow_train, log=lines.append)
        self.assertEqual([h["round"] for h in hist], [1])
        self.assertTrue(any("not taken" in x for x in lines), lines)

    def test_samples_must_be_an_integer(self):
        self.start(k=1, num_rounds=3)
        for bad in (2.5, 3.0, True, "3", None, np.float32(2)):
            with self.assertRaises(TypeError) as cm:
                self.job("a").run(lambda m, c, bad=bad: (m, bad))
            self.assertIn("integer", str(cm.exception))
        for bad in (0, -1, 1 << 41):
            with self.assertRaises(ValueError):
                self.job("a").run(lambda m, c, bad=bad: (m, bad))
        self.assertEqual(self.fj.update_posts, [])
        with self.assertRaises(TypeError):
            self.job("a").submit({"fc.bias": np.zeros(3, np.float32)}, round=0, samples=2.5)
        self.assertEqual(self.fj.update_posts, [])
        # numpy integers are integers.
        hist = self.job("a").run(lambda m, c: (m, np.int64(7)), rounds=1)
        self.assertEqual(hist[0]["samples"], 7)
        self.assertEqual(tc.check_samples(np.uint16(3)), 3)

    def test_float64_needs_cast(self):
        self.start(k=1, num_rounds=1)

        def train(model, config):
            return {k: v.astype(np.float64) + 0.5 for k, v in model.items()}, 1
        with self.assertRaises(TypeError) as cm:
            self.job("a").run(train)
        self.assertIn("tensor 'fc.weight' is float64", str(cm.exception))
        self.assertIn("cast=True", str(cm.exception))
        self.assertEqual(self.fj.update_posts, [])
        hist = self.job("a").run(train, cast=True)
        self.assertEqual(len(hist), 1)
        np.testing.assert_allclose(self.fj.models[1]["fc.weight"], np.full((3, 2), 0.5))

    def test_bad_train_results(self):
        self.start(k=1, num_rounds=1)
        for bad, why in ((None, "must return"), ((1, 2, 3, 4), "must return"),
                         (([1], 1), "dict or state_dict"),
                         (({}, 1, {"loss": "low"}), "must be a number"),
                         (({}, 1, {"bad name": 1.0}), "not 1 to 64 characters"),
                         (({}, 1, {"loss": float("nan")}), "finite")):
            with self.assertRaises((TypeError, ValueError)) as cm:
                self.job("a").run(lambda m, c, bad=bad: bad)
            self.assertIn(why, str(cm.exception))
        self.assertEqual(self.fj.update_posts, [])


class CastTest(unittest.TestCase):
    def test_numpy_dtypes(self):
        ok = {"a": np.zeros(2, np.float32), "b": np.zeros(2, ">f4"), "c": [1.5, 2],
              "d": 3.0}
        back = tc.decode_safetensors(tc.encode_safetensors(ok))
        self.assertEqual(list(back["c"]), [1.5, 2.0])
        for dt in (np.float64, np.float16, np.int64, np.int8):
            with self.assertRaises(TypeError) as cm:
                tc.encode_safetensors({"w": np.ones(2, dt)})
            self.assertIn("tensor 'w' is %s" % np.dtype(dt), str(cm.exception))
            back = tc.decode_safetensors(tc.encode_safetensors({"w": np.ones(2, dt)},
                                                               cast=True))
            np.testing.assert_array_equal(back["w"], np.ones(2, np.float32))

    def test_torch_dtypes(self):
        try:
            import torch
        except ImportError:
            self.skipTest("no torch")
        f32 = torch.arange(3, dtype=torch.float32)
        self.assertEqual(tc.decode_safetensors(tc.encode_safetensors({"w": f32}))["w"].tolist(),
                         [0.0, 1.0, 2.0])
        for dt in (torch.float64, torch.bfloat16, torch.float16):
            t = torch.arange(3, dtype=dt)
            with self.assertRaises(TypeError) as cm:
                tc.encode_safetensors({"w": t})
            self.assertIn("tensor 'w' is %s" % dt, str(cm.exception))
            back = tc.decode_safetensors(tc.encode_safetensors({"w": t}, cast=True))
            self.assertEqual(back["w"].tolist(), [0.0, 1.0, 2.0])


class MetricsTest(unittest.TestCase):
    def test_header(self):
        self.assertEqual(tc.metrics_header({"loss": 0.25, "n": np.int32(3),
                                            "acc": np.float32(0.5)}),
                         '{"loss":0.25,"n":3,"acc":0.5}')
        with self.assertRaises(ValueError):
            tc.metrics_header({"m%d" % i: 1 for i in range(17)})
        with self.assertRaises(ValueError):
            tc.metrics_header({"x" * 65: 1})
        with self.assertRaises(ValueError):
            tc.metrics_header({"a%d" % i + "x" * 60: 1.0e-300 / 3 for i in range(16)})
        for bad in (True, "1", None, [1], float("inf")):
            with self.assertRaises((TypeError, ValueError)):
                tc.metrics_header({"m": bad})
        with self.assertRaises(TypeError):
            tc.metrics_header([("m", 1)])


class FormatAndProxTest(LoopTestCase):
    def test_npz_bodies_fold_as_safetensors_ones(self):
        models = []
        for fmt in ("safetensors", "npz"):
            self.start(k=2, num_rounds=2)
            self.run_clients([lambda job, c=c: job.run(
                lambda m, cfg, c=c: add_const(c, 1 + c, [])(m, cfg), format=fmt)
                for c in (1, 2)])
            want = "application/x-npz" if fmt == "npz" else "application/x-safetensors"
            self.assertEqual(set(self.fj.content_types), {want})
            models.append(self.fj.models[2])
        for name in models[0]:
            np.testing.assert_array_equal(models[0][name], models[1][name])

    def test_npz_encoding_is_stored_float32_members(self):
        upd = {"fc.weight": np.arange(6, dtype=np.float32).reshape(3, 2),
               "fc.bias": np.ones(3, np.float32)}
        data = tc.encode_npz(upd)
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            self.assertEqual(sorted(i.filename for i in z.infolist()),
                             ["fc.bias.npy", "fc.weight.npy"])
            self.assertTrue(all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist()))
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            for k, v in upd.items():
                self.assertEqual(z[k].dtype, np.float32)
                np.testing.assert_array_equal(z[k], v)
        with self.assertRaisesRegex(TypeError, "fc.bias"):
            tc.encode_npz({"fc.bias": np.ones(3)})

    def test_unknown_format_is_refused_before_sending(self):
        self.start(k=1, num_rounds=1)
        job = self.job("client-0")
        with self.assertRaisesRegex(ValueError, "format must be one of npz, safetensors"):
            job.submit({"fc.bias": np.ones(3, np.float32)}, 0, format="pickle")
        with self.assertRaisesRegex(ValueError, "format must be one of"):
            job.run(lambda m, c: (m, 1), format="npy")
        self.assertEqual(self.fj.update_posts, [])

    def test_proximal_mu_reaches_train(self):
        self.start(k=1, num_rounds=2, schedule={0: {"lr": 0.5, "proximal_mu": 9}})
        self.fj.proximal_mu = 0.05
        seen = []
        self.run_clients([lambda job: job.run(
            lambda m, cfg: (seen.append(cfg), (m, 1))[1])])
        # The task's mu replaces a client_config key of the same name.
        self.assertEqual(seen, [{"lr": 0.5, "proximal_mu": 0.05}] * 2)

    def test_no_proximal_mu_outside_fedprox(self):
        self.start(k=1, num_rounds=1, schedule={0: {"lr": 0.5}})
        seen = []
        self.run_clients([lambda job: job.run(
            lambda m, cfg: (seen.append(cfg), (m, 1))[1])])
        self.assertEqual(seen, [{"lr": 0.5}])


class FlowerStyleClient:
    """A client written to Flower's NumPyClient interface (no flwr import): least squares on
    its own data, one gradient step per fit, parameters [W (3x2), b (3)] in that order."""

    def __init__(self, seed, n):
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((n, 2)).astype(np.float32)
        w = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
        self.y = self.x @ w.T + np.array([1, 0, -1], np.float32)
        self.params = [np.zeros((3, 2), np.float32), np.zeros(3, np.float32)]
        self.configs = []

    def get_parameters(self, config):
        return self.params

    def loss(self, parameters):
        w, b = parameters
        return float(np.mean((self.x @ w.T + b - self.y) ** 2))

    def fit(self, parameters, config):
        self.configs.append(dict(config))
        w, b = parameters
        err = self.x @ w.T + b - self.y
        lr = np.float32(config.get("lr", 0.1))
        w = w - lr * 2 * err.T @ self.x / len(self.x)
        b = b - lr * 2 * err.mean(0)
        self.params = [w.astype(np.float32), b.astype(np.float32)]
        return self.params, len(self.x), {"train_loss": self.loss(self.params)}

    def evaluate(self, parameters, config):
        return self.loss(parameters), len(self.x), {"mse": self.loss(parameters)}


class NumPyClientTest(LoopTestCase):
    def test_flower_style_client_trains(self):
        self.start(k=2, num_rounds=30, schedule={0: {"lr": 0.2}, 20: {"lr": 0.05}})
        clients = [FlowerStyleClient(1, 40), FlowerStyleClient(2, 60)]
        hist = self.run_clients([lambda job, c=c: tc.run_numpy_client(job, c)
                                 for c in clients])
        self.assertEqual([len(h) for h in hist], [30, 30])
        self.assertEqual(clients[0].configs[0], {"lr": 0.2})
        self.assertEqual(clients[0].configs[25], {"lr": 0.05})
        final = [self.fj.models[30]["fc.weight"], self.fj.models[30]["fc.bias"]]
        np.testing.assert_allclose(final[0], [[1, 2], [3, 4], [5, 6]], atol=0.05)
        np.testing.assert_allclose(final[1], [1, 0, -1], atol=0.05)
        # evaluate()'s loss and metrics went to /evaluations, per version and client.
        ev = self.fj.evaluations[30]
        self.assertEqual(sorted(ev), ["client-0", "client-1"])
        self.assertEqual(ev["client-1"][0], 60)
        self.assertEqual(set(ev["client-1"][1]), {"loss", "mse"})
        self.assertLess(ev["client-1"][1]["loss"], 0.01)
        self.assertIn("train_loss", self.fj.metrics[0][0][2])

    def test_flower_style_client_gets_proximal_mu(self):
        self.start(k=1, num_rounds=2, schedule={0: {"lr": 0.2}})
        self.fj.proximal_mu = 0.01
        c = FlowerStyleClient(1, 10)
        self.run_clients([lambda job: tc.run_numpy_client(job, c)])
        self.assertEqual(c.configs, [{"lr": 0.2, "proximal_mu": 0.01}] * 2)

    def test_arrays_are_checked_against_the_job(self):
        self.start(k=1, num_rounds=1)
        c = FlowerStyleClient(1, 10)
        c.params = c.params[:1]
        with self.assertRaises(ValueError) as cm:
            tc.run_numpy_client(self.job("a"), c)
        self.assertIn("get_parameters() returned 1 arrays; the job has 2 tensors",
                      str(cm.exception))
        self.assertIn("fc.weight [3, 2], fc.bias [3]", str(cm.exception))
        c = FlowerStyleClient(1, 10)
        c.params = [c.params[1], c.params[0]]
        with self.assertRaises(ValueError) as cm:
            tc.run_numpy_client(self.job("a"), c)
        self.assertIn("get_parameters()[0] has shape [3]; the job's tensor 0, 'fc.weight', "
                      "has shape [3, 2]", str(cm.exception))
        c = FlowerStyleClient(1, 10)
        c.fit = lambda p, cfg: ([x.astype(np.float64) for x in p], 10, {})
        with self.assertRaises(TypeError) as cm:
            tc.run_numpy_client(self.job("a"), c)
        self.assertIn("fit()[0] (the job's tensor 'fc.weight') is float64", str(cm.exception))
        self.assertEqual(self.fj.update_posts, [])
        self.assertEqual(len(tc.run_numpy_client(self.job("a"), c, cast=True)), 1)


if __name__ == "__main__":
    unittest.main()
