# SPDX-License-Identifier: MIT
# Job.run() and run_numpy_client() against a real `tributary up` (binary: TRIBUTARY_BIN).
"""Run with Debian's interpreter (it has numpy):

    TRIBUTARY_BIN=build/tributary /usr/bin/python3 -m unittest -v clients/python/test_run_server.py

A Flower-style client (test_loop.FlowerStyleClient, written to the NumPyClient interface)
trains through run_numpy_client(): per-round config from the job's client_config schedule,
X-Tributary-Metrics in the round records, federated evaluation per version, the job done after
num_rounds (then 410). And Job.run() with server-side selection, where clients are told to wait.
"""
import os
import sys
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tributary_client as tc  # noqa: E402
from test_client import Server  # noqa: E402
from test_loop import TENSORS, FlowerStyleClient  # noqa: E402

SERVER = None


def setUpModule():
    global SERVER
    SERVER = Server()
    SERVER.start()


def tearDownModule():
    rc = SERVER.stop()
    if rc != 0:
        raise AssertionError("tributary up exited with %r:\n%s" % (rc, SERVER.log()))


def job_name(prefix):
    return "%s-%d-%d" % (prefix, os.getpid(), int(time.monotonic() * 1000) % 100000)


class RealServerLoopTest(unittest.TestCase):
    def setUp(self):
        self.admin = tc.Client(SERVER.url, SERVER.admin)
        self.addCleanup(self.admin.close)

    def clients(self, job, n):
        """@n handles of @job, each with a client credential of its own and its own
        connection."""
        out = []
        for i in range(n):
            c = tc.Client(SERVER.url, job.token, timeout=30)
            self.addCleanup(c.close)
            j = c.job(job.name)
            out.append(j.as_client(j.mint_client("c%d" % i)))
        return out

    def in_threads(self, fns):
        res, errs = [None] * len(fns), []

        def go(i):
            try:
                res[i] = fns[i]()
            except BaseException as e:  # noqa: B902 -- re-raised below
                errs.append(e)
        ts = [threading.Thread(target=go, args=(i,)) for i in range(len(fns))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertFalse(any(t.is_alive() for t in ts), "a client loop did not finish")
        if errs:
            raise errs[0]
        return res

    def test_numpy_client_rounds_config_metrics_evaluation_done(self):
        rounds = 4
        job = self.admin.create_job(
            job_name("flower"), clients_per_round=3, tensors=TENSORS,
            client_auth="required", num_rounds=rounds,
            client_config={"values": {"lr": 0.2, "tag": "warm"},
                           "schedule": [{"from_round": 2, "values": {"lr": 0.05}}]})
        fl = [FlowerStyleClient(s, n) for s, n in ((1, 30), (2, 50), (3, 70))]
        me = self.clients(job, 3)
        hist = self.in_threads([lambda j=j, c=c: tc.run_numpy_client(j, c, timeout=60)
                                for j, c in zip(me, fl)])
        for h in hist:
            self.assertEqual([e["round"] for e in h], list(range(rounds)))
            self.assertEqual([e["next_version"] for e in h], list(range(1, rounds + 1)))
        for c in fl:
            self.assertEqual([cfg["lr"] for cfg in c.configs], [0.2, 0.2, 0.05, 0.05])
            self.assertEqual({cfg["tag"] for cfg in c.configs}, {"warm"})

        # The models are FedAvg of what the clients sent: replay the (deterministic) fits.
        replay = [FlowerStyleClient(s, n) for s, n in ((1, 30), (2, 50), (3, 70))]
        model = [np.zeros((3, 2), np.float32), np.zeros(3, np.float32)]
        for r in range(rounds):
            outs = [c.fit(model, {"lr": 0.2 if r < 2 else 0.05}) for c in replay]
            total = sum(n for _, n, _ in outs)
            model = [sum(n * p[i].astype(np.float64) for p, n, _ in outs) / total
                     for i in range(2)]
            v, got = job.model(round=r + 1)
            np.testing.assert_allclose(got["fc.weight"], model[0], atol=1e-5)
            np.testing.assert_allclose(got["fc.bias"], model[1], atol=1e-5)
            model = [got["fc.weight"], got["fc.bias"]]

        st = job.status()
        self.assertEqual(st["state"], "done")
        with self.assertRaises(tc.TributaryError) as cm:
            me[0].submit({"fc.weight": np.zeros((3, 2), np.float32),
                          "fc.bias": np.zeros(3, np.float32)}, round=rounds)
        self.assertEqual(cm.exception.status, 410)

        # A done job has no open round after its last one.
        recs = job.rounds()
        self.assertEqual([r["round"] for r in recs], list(range(rounds)))
        with self.assertRaises(tc.TributaryError) as cm:
            job.round_record(rounds)
        self.assertEqual(cm.exception.status, 404)
        self.assertIn("done after 4 rounds", cm.exception.message)
        for r, rec in enumerate(recs):
            sent = [(e["samples"], e["metrics"]["train_loss"]) for h in hist for e in h
                    if e["round"] == r]
            want = sum(n * m for n, m in sent) / sum(n for n, _ in sent)
            self.assertAlmostEqual(rec["metrics"]["train_loss"], want, places=5)
            ev = rec["evaluation"]
            self.assertIsNotNone(ev, "round %d has no evaluation: %r" % (r, rec))
            self.assertEqual(ev["version"], r + 1)
            self.assertEqual(ev["clients"], 3)
            self.assertEqual(ev["samples"], 150)
            self.assertEqual(set(ev["metrics"]), {"loss", "mse"})
            evals = [e["evaluation"] for h in hist for e in h if e["round"] == r]
            want = sum(n * m["mse"] for n, m in zip((30, 50, 70), evals)) / 150
            self.assertAlmostEqual(ev["metrics"]["mse"], want, places=5)
        self.assertLess(recs[-1]["evaluation"]["metrics"]["loss"],
                        recs[0]["evaluation"]["metrics"]["loss"])

    def test_run_with_selection_waits_and_finishes(self):
        """5 clients, 2 updates a round, at most 3 tasks: the loops wait their turn and the
        job finishes its 3 rounds with 2 updates each."""
        job = self.admin.create_job(job_name("select"), tensors=TENSORS,
                                    client_auth="required", num_rounds=3,
                                    selection={"per_round": 2, "overcommit": 1.5})
        me = self.clients(job, 5)

        def train(model, config):
            return {k: v + 1 for k, v in model.items()}, 1, {"loss": 1.0}
        hist = self.in_threads([lambda j=j: j.run(train, timeout=60) for j in me])
        per_round = {}
        for h in hist:
            for e in h:
                per_round[e["round"]] = per_round.get(e["round"], 0) + 1
        self.assertEqual(per_round, {0: 2, 1: 2, 2: 2})
        self.assertEqual(job.status()["state"], "done")
        v, m = job.model()
        self.assertEqual(v, 3)
        np.testing.assert_allclose(m["fc.bias"], np.full(3, 3.0))


if __name__ == "__main__":
    unittest.main()
