#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Federated training of a PyTorch MLP on non-IID digits, averaged by Tributary and by numpy.
"""Federated learning on scikit-learn's bundled digits with Tributary doing the averaging.

20 clients each hold a non-IID slice of the training split (two or three of the ten classes)
and a share of the test split. Each client runs the Python client's loop, ``Job.run()``, in a
thread of its own with its own credential: every round it gets its task and the round's config
(the learning rate follows the job's ``client_config`` schedule), trains a small PyTorch MLP on
its slice for one local epoch, submits its weights with its sample count and training loss,
waits for the new global model and evaluates it on its test share (federated evaluation). The
job has ``num_rounds``: after the last round it is done and the loops end by themselves.
Tributary folds each round into the sample-weighted mean (FedAvg); the per-round evaluated
accuracy is then read back from the server's round records (GET /v1/jobs/{job}/rounds).

Checks: the same training in-process with FedAvg in numpy (same data, seeds, schedule) must
agree with Tributary's models; the accuracy the clients evaluated (a sample-weighted mean over
the test shares) must equal the whole test split's accuracy of the same model; and with
``--mode both`` (the default) the Flower-style client of flower_client.py, run unchanged
through ``run_numpy_client()``, must reach the same accuracy as the native loop, round by round.

FedProx: ``--algorithm fedprox`` (or ``TRIBUTARY_EXAMPLE_ALGORITHM=fedprox``) creates the jobs
with ``"algorithm": "fedprox"`` and ``proximal_mu`` (``--proximal-mu``, default 0.01). The
server still averages (FedAvg); each train task carries ``proximal_mu``, which the loop puts in
the config, and local training adds ``mu/2 * ||w - w_global||^2`` to its loss. The in-process
run does the same, so every check above holds for it too; the clients must also have been
given the job's mu. The default is plain FedAvg.

Secure aggregation: ``--secagg`` creates the job with ``"secagg": {...}`` (SecAgg+, README
"Secure aggregation"): each client quantises its weights (clip, bits), masks them and sends
them through ``run_secagg_round()``; the server only ever sees the masked vectors and their sum,
and its model is the dequantised weighted mean. The in-process run then does the same
quantised FedAvg in numpy, so the checks hold against it, and it also runs plain (float)
FedAvg beside it: the two accuracy columns differ only by the quantisation. The Flower-style
client is not run (``--mode native``).

Exit status: 0 when the final accuracy is at least --min-accuracy (0.90) and every check
holds; 1 otherwise; 2 when the server cannot be reached or started.

    /usr/bin/python3 examples/pytorch-digits/train.py            # starts its own tributary up
    /usr/bin/python3 examples/pytorch-digits/train.py --url http://127.0.0.1:8080 \\
        --token-file tributary-data/admin-token                 # uses a running one
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import shutil
import threading
import time

import numpy as np
import torch
from torch import nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from tributary_client import Client, TributaryError, run_numpy_client  # noqa: E402
from tributary_secagg import (SecAggError, dequantise_mean, quantise,  # noqa: E402
                              run_secagg_round)

# Agreement between the Tributary run and the in-process numpy run, per round.
ACC_TOL = 0.005
WEIGHT_TOL = 1e-4
# Tributary's model against numpy's FedAvg of the very updates sent to it, per round.
AVG_TOL = 1e-5
# The clients' evaluated accuracy (the server's sample-weighted mean) against the whole test
# split's accuracy of the same model: equal but for float rounding.
EVAL_TOL = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="FL rounds (default 20)")
    p.add_argument("--clients", type=int, default=20, help="clients (default 20)")
    p.add_argument("--lr", type=float, default=0.2, help="local SGD learning rate, round 0")
    p.add_argument("--lr-schedule", default="10:0.1,15:0.05",
                   help="later learning rates, FROM_ROUND:LR,... (default 10:0.1,15:0.05; "
                        "'' for none): the job's client_config schedule")
    p.add_argument("--momentum", type=float, default=0.5, help="local SGD momentum")
    p.add_argument("--batch", type=int, default=10, help="local batch size")
    p.add_argument("--local-epochs", type=int, default=1, help="local epochs per round")
    p.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("native", "flower", "both"), default=None,
                   help="native: Job.run(); flower: flower_client.py's NumPyClient-style "
                        "class through run_numpy_client(); both (default): both, compared "
                        "(with --secagg: native only)")
    p.add_argument("--min-accuracy", type=float, default=0.90,
                   help="fail if the final test accuracy is below this (default 0.90)")
    p.add_argument("--algorithm", choices=("fedavg", "fedprox"),
                   default=os.environ.get("TRIBUTARY_EXAMPLE_ALGORITHM", "fedavg"),
                   help="the jobs' algorithm (default $TRIBUTARY_EXAMPLE_ALGORITHM or fedavg)")
    p.add_argument("--proximal-mu", type=float, default=0.01,
                   help="fedprox's mu, the job's proximal_mu (default 0.01)")
    p.add_argument("--secagg", action="store_true",
                   help="secure aggregation (SecAgg+): the server sees only masked, quantised "
                        "updates; the in-process run quantises the same way")
    p.add_argument("--secagg-clip", type=float, default=1.0,
                   help="secagg.clip: values clipped to [-clip, clip] (default 1; this "
                        "model's weights stay below 0.5)")
    p.add_argument("--secagg-bits", type=int, default=16,
                   help="secagg.bits: quantisation bits (default 16)")
    p.add_argument("--secagg-neighbours", type=int, default=8,
                   help="secagg.neighbours: each client's neighbours (default 8)")
    p.add_argument("--secagg-threshold", type=int, default=4,
                   help="secagg.threshold: shares that rebuild a secret (default 4)")
    p.add_argument("--url", help="a running Tributary (default: start one)")
    p.add_argument("--token-file", help="its admin token file (with --url)")
    p.add_argument("--token", default=os.environ.get("TRIBUTARY_ADMIN_TOKEN"),
                   help="its admin token (with --url; default $TRIBUTARY_ADMIN_TOKEN)")
    p.add_argument("--tributary", default=os.environ.get(
        "TRIBUTARY_BIN", os.path.join(REPO, "build", "tributary")),
        help="the binary to start (default $TRIBUTARY_BIN or build/tributary)")
    p.add_argument("--job", default="digits-%d" % os.getpid(), help="job name (prefix)")
    args = p.parse_args(argv)
    args.schedule = parse_schedule(p, args.lr_schedule)
    if args.secagg:
        if args.mode not in (None, "native"):
            p.error("--secagg runs the native loop only (the Flower-style client sends plain "
                    "updates): drop --mode %s" % args.mode)
        if args.algorithm != "fedavg":
            p.error("--secagg takes --algorithm fedavg only (the server sees only the sum)")
        args.mode = "native"
    elif args.mode is None:
        args.mode = "both"
    if args.algorithm not in ("fedavg", "fedprox"):
        p.error("--algorithm / $TRIBUTARY_EXAMPLE_ALGORITHM: %r is not fedavg or fedprox" %
                args.algorithm)
    return args


def parse_schedule(p, text):
    """[(from_round, lr)] from "10:0.1,15:0.05", strictly increasing rounds >= 1."""
    rows = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        try:
            r, lr = item.split(":")
            rows.append((int(r), float(lr)))
        except ValueError:
            p.error("--lr-schedule: %r is not FROM_ROUND:LR" % item)
    if any(b[0] <= a[0] for a, b in zip(rows, rows[1:])) or any(r < 1 for r, _ in rows):
        p.error("--lr-schedule: rounds must be >= 1 and strictly increasing: %r" % text)
    return rows


def client_config(args):
    """The job's client_config: the round-0 values, and the learning-rate schedule."""
    return {"values": {"lr": args.lr, "momentum": args.momentum, "batch": args.batch,
                       "local_epochs": args.local_epochs},
            "schedule": [{"from_round": r, "values": {"lr": lr}} for r, lr in args.schedule]}


def lr_of_round(args, r):
    """What the server hands out for round r (the in-process run needs it too)."""
    lr = args.lr
    for start, value in args.schedule:
        if start <= r:
            lr = value
    return lr


# --- data and model ---

def client_classes(i, n_classes=10):
    """Client i's classes: two neighbours, and a third one for the second half of clients."""
    cls = [i % n_classes, (i + 1) % n_classes]
    if i >= n_classes:
        cls.append((i + 5) % n_classes)
    return cls


def load_data(n_clients, seed):
    """Returns (client slices [(x, y)], test shares [(x, y)], x_test, y_test): a stratified 25%
    test split held out and dealt out evenly to the clients (for federated evaluation), each
    class's training samples shared out evenly among the clients holding that class."""
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y,
                                              random_state=seed)
    rng = np.random.default_rng(seed)
    holders = {c: [i for i in range(n_clients) if c in client_classes(i)] for c in range(10)}
    parts = [[] for _ in range(n_clients)]
    for c, who in holders.items():
        idx = rng.permutation(np.flatnonzero(y_tr == c))
        for shard, i in zip(np.array_split(idx, len(who)), who):
            parts[i].append(shard)
    slices = []
    for i in range(n_clients):
        idx = np.sort(np.concatenate(parts[i])) if parts[i] else np.zeros(0, np.int64)
        slices.append((torch.from_numpy(x_tr[idx]), torch.from_numpy(y_tr[idx])))
    tests = [(torch.from_numpy(x_te[idx]), torch.from_numpy(y_te[idx]))
             for idx in np.array_split(rng.permutation(len(y_te)), n_clients)]
    return slices, tests, torch.from_numpy(x_te), torch.from_numpy(y_te)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU}


def make_model(hidden, activation):
    return nn.Sequential(nn.Linear(64, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, 10))


def to_numpy(state):
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}


def local_train(model, x, y, lr, momentum, batch, epochs, seed, mu=0.0):
    """@epochs epochs of SGD on (x, y) in an order drawn from @seed; returns the mean loss
    (the data's, without the proximal term). @mu > 0 (FedProx, Li et al. 2020) adds
    mu/2 * ||w - w_start||^2, w_start the weights training started from (the global model)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    anchor = [p.detach().clone() for p in model.parameters()] if mu else None
    g = torch.Generator().manual_seed(seed)
    model.train()
    total, steps = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for s in range(0, len(y), batch):
            b = order[s:s + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[b]), y[b])
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                (loss + mu / 2 * prox).backward()
            else:
                loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
    return total / max(steps, 1)


def evaluate_on(model, x, y):
    """(accuracy, mean cross-entropy) of @model on (x, y)."""
    model.eval()
    with torch.no_grad():
        out = model(x)
        return ((out.argmax(1) == y).float().mean().item(),
                nn.functional.cross_entropy(out, y).item())


def train_seed(seed, client, rnd):
    """The shuffling seed of @client's local training in round @rnd (both clients' kinds)."""
    return seed * 1_000_003 + rnd * 1009 + client


class Trainer:
    """Local training as a pure function of (global weights, client, round, config)."""

    def __init__(self, args, slices):
        self.args = args
        self.slices = slices
        self.model = make_model(args.hidden, args.activation)

    def load(self, weights):
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                                    weights.items()})

    def train(self, weights, client, rnd, config):
        """Trains from @weights (dict of numpy arrays) on @client's slice with @config's
        learning rate and momentum; returns (state_dict owned by the caller, samples, loss)."""
        x, y = self.slices[client]
        self.load(weights)
        loss = local_train(self.model, x, y, config["lr"], config["momentum"],
                           int(config["batch"]), int(config["local_epochs"]),
                           train_seed(self.args.seed, client, rnd),
                           float(config.get("proximal_mu", 0.0)))
        return ({k: v.detach().clone() for k, v in self.model.state_dict().items()}, len(y),
                loss)

    def accuracy(self, weights, x, y):
        self.load(weights)
        return evaluate_on(self.model, x, y)[0]


def fedavg(updates):
    """The sample-weighted mean of [(weights dict, samples)], in float64, as float32."""
    total = float(sum(n for _, n in updates))
    return {k: (sum(n * w[k].astype(np.float64) for w, n in updates) / total)
            .astype(np.float32) for k in updates[0][0]}


def secagg_spec(args):
    return {"threshold": args.secagg_threshold, "neighbours": args.secagg_neighbours,
            "clip": args.secagg_clip, "bits": args.secagg_bits}


def flatten(weights):
    """The job's tensors in order as one float32 vector (a secure input's layout)."""
    return np.concatenate([np.asarray(v, np.float32).ravel() for v in weights.values()])


def unflatten(flat, like):
    out, o = {}, 0
    for k, v in like.items():
        out[k] = flat[o:o + v.size].reshape(v.shape).astype(np.float32)
        o += v.size
    return out


def fedavg_quantised(updates, clip, bits):
    """What a secure round makes of [(weights dict, samples)]: the exact sum of n_u * q(x_u)
    over the clients (tributary_secagg.quantise), dequantised once (dequantise_mean)."""
    total = sum(n for _, n in updates)
    acc = sum(int(n) * quantise(flatten(w), clip, bits).astype(np.int64) for w, n in updates)
    return unflatten(dequantise_mean(acc, total, clip, bits), updates[0][0])


def max_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


# --- the server ---

class LocalServer:
    """A `tributary up` of our own on a free loopback port, in a temporary directory."""

    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="trib-digits-")
        self.log_path = os.path.join(self.dir, "up.log")
        self.proc = None

    def start(self):
        port_file = os.path.join(self.dir, "port")
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                [self.binary, "up", "--listen", "127.0.0.1:0", "--port-file", port_file,
                 "--data-dir", os.path.join(self.dir, "data"), "--arena-mb", "64"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().endswith("\n")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tributary up did not start:\n" + self.log())
            time.sleep(0.02)
        with open(os.path.join(self.dir, "data", "admin-token")) as f:
            token = f.read().strip()
        with open(port_file) as f:
            return "http://127.0.0.1:%d" % int(f.read()), token

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM and wait; returns its exit status (a kill after 10 s gives non-zero)."""
        rc = 0
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        elif self.proc:
            rc = self.proc.returncode
        return rc

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the run ---

def native_client(args, i, slices, tests, sent, configs):
    """Client @i's train() and evaluate() for Job.run(). Every client trains in every round,
    so its k-th train() call is round k (the shuffling seed depends on the round)."""
    trainer = Trainer(args, slices)
    x_t, y_t = tests[i]
    calls = [0]

    def train(model, config):
        r = calls[0]
        calls[0] += 1
        state, n, loss = trainer.train(model, i, r, config)
        sent.setdefault(r, []).append((to_numpy(state), n))
        configs[i].append(dict(config))
        return state, n, {"loss": loss}

    def evaluate(model, config):
        trainer.load(model)
        acc, loss = evaluate_on(trainer.model, x_t, y_t)
        return len(y_t), {"accuracy": acc, "loss": loss}
    return train, evaluate


def secagg_client(args, i, slices, tests, sent, configs, url, rounds):
    """Client @i's loop in a secure job: per round, its task's config, the round's model,
    local training, then run_secagg_round() (join, shares, masked input, unmask) in place of a
    plain update; then the round's model, evaluated and posted like Job.run() does. The
    training loss stays with the client: a secure round carries no per-client metrics."""
    trainer = Trainer(args, slices)
    x_t, y_t = tests[i]

    def loop(job):
        for r in range(rounds):
            task = job.task()
            if task.get("action") != "train" or int(task["round"]) != r:
                raise RuntimeError("round %d: task %r" % (r, task))
            config = dict(task.get("config") or {})
            _, model = job.model(round=int(task["version"]))
            state, n, _ = trainer.train(model, i, r, config)
            w = to_numpy(state)
            sent.setdefault(r, []).append((w, n))
            configs[i].append(config)
            end = time.monotonic() + 60
            while True:
                try:
                    got = run_secagg_round(url, job.name, job.token, flatten(w), n,
                                           timeout=60)
                    break
                except SecAggError as e:
                    # 409: the last secure round is still being stored or folded; 410: a
                    # client joined a round that was ending. Both mean: join again.
                    if e.status not in (409, 410) or time.monotonic() > end:
                        raise
                    time.sleep(0.05)
            if got != r:
                raise RuntimeError("client %d joined secure round %d, wanted %d" % (i, got, r))
            nv, new_model = job.wait_model(after=r, timeout=120)
            trainer.load(new_model)
            acc, loss = evaluate_on(trainer.model, x_t, y_t)
            job.submit_evaluation(nv, len(y_t), {"accuracy": acc, "loss": loss})
    return loop


def run_job(args, url, admin, label, init, loop):
    """Creates job <args.job>-<label> and runs loop(i, job as client i) in a thread per
    client; returns (job, the round records, the models of versions 0..rounds, seconds)."""
    prox = {"proximal_mu": args.proximal_mu} if args.algorithm == "fedprox" else {}
    if args.secagg:
        prox = {"secagg": secagg_spec(args), "round_timeout_s": 30}
    job = admin.create_job("%s-%s" % (args.job, label), clients_per_round=args.clients,
                           tensors=init, client_auth="required", num_rounds=args.rounds,
                           client_config=client_config(args), algorithm=args.algorithm,
                           **prox)
    job.set_initial_model(init)
    # Each client talks over its own connection, with a credential of its own (the job's
    # token mints them; it submits nothing in a job with client_auth "required").
    me = []
    for i in range(args.clients):
        cj = Client(url, job.token).job(job.name)
        me.append(cj.as_client(cj.mint_client("digits-%d" % i)))
    errors = []

    def go(i):
        try:
            loop(i, me[i])
        except BaseException as e:  # reported below, on the main thread
            errors.append((i, e))
        finally:
            me[i].client.close()
    t0 = time.monotonic()
    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    if errors:
        i, e = errors[0]
        raise RuntimeError("client %d (%s run): %s: %s" % (i, label, type(e).__name__, e)) \
            from e
    # The job's rounds 0 .. rounds-1 (the record of the round after the last, if the server
    # keeps one, is not part of the run).
    records = [r for r in job.rounds() if r["round"] < args.rounds]
    models = [job.model(round=v)[1] for v in range(args.rounds + 1)]
    return job, records, models, took


def run(args, url, admin_token):
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    slices, tests, x_te, y_te = load_data(args.clients, args.seed)
    init = to_numpy(make_model(args.hidden, args.activation).state_dict())
    n_params = sum(v.size for v in init.values())
    sizes = [len(s[1]) for s in slices]
    print("digits: %d clients holding 2 or 3 classes each (client 0: classes %s, client %d: "
          "%s), %d-%d training samples each; %d test samples, %d-%d per client"
          % (args.clients, client_classes(0), args.clients - 1,
             client_classes(args.clients - 1), min(sizes), max(sizes), len(y_te),
             min(len(t[1]) for t in tests), max(len(t[1]) for t in tests)))
    print("model: MLP 64-%d-10 (%s, %d parameters); every round all clients train %d local "
          "epoch(s), SGD momentum %g batch %d; learning rate by round (client_config): %s"
          % (args.hidden, args.activation, n_params, args.local_epochs, args.momentum,
             args.batch, ", ".join(["%g from round 0" % args.lr] +
                                   ["%g from round %d" % (lr, r) for r, lr in args.schedule])),
          flush=True)
    if args.algorithm == "fedprox":
        print("algorithm: fedprox, proximal_mu %g (the server averages; local training adds "
              "mu/2 * ||w - w_global||^2)" % args.proximal_mu, flush=True)
    admin = Client(url, admin_token)
    ok = True
    ref_trainer = Trainer(args, slices)
    acc0 = ref_trainer.accuracy(init, x_te, y_te)

    runs = {}
    sent, configs = {}, [[] for _ in range(args.clients)]
    if args.secagg:
        print("secure aggregation: SecAgg+ %s; each client sends n * q(w), masked (the "
              "server sees no update in the clear)" % secagg_spec(args), flush=True)

        def secure(i, job):
            secagg_client(args, i, slices, tests, sent, configs, url, args.rounds)(job)
        runs["native"] = run_job(args, url, admin, "secagg", init, secure)
    elif args.mode in ("native", "both"):
        def native(i, job):
            train, evaluate = native_client(args, i, slices, tests, sent, configs)
            job.run(train, evaluate, timeout=120)
        runs["native"] = run_job(args, url, admin, "native", init, native)
    if args.mode in ("flower", "both"):
        from flower_client import DigitsClient

        def flower(i, job):
            c = DigitsClient(i, slices[i], tests[i], args.hidden, args.activation, args.seed)
            run_numpy_client(job, c, timeout=120)
        runs["flower"] = run_job(args, url, admin, "flower", init, flower)
    admin.close()

    # The in-process run: the same training, FedAvg in numpy.
    # With --secagg the in-process run is the quantised FedAvg a secure round makes, and a
    # second one, plain FedAvg, shows what the quantisation costs.
    def in_process(quantised):
        ref, models = init, [init]
        for r in range(args.rounds):
            cfg = dict(client_config(args)["values"], lr=lr_of_round(args, r))
            if args.algorithm == "fedprox":
                cfg["proximal_mu"] = args.proximal_mu
            outs = [(to_numpy(st), n) for st, n, _ in
                    (ref_trainer.train(ref, i, r, cfg) for i in range(args.clients))]
            ref = (fedavg_quantised(outs, args.secagg_clip, args.secagg_bits) if quantised
                   else fedavg(outs))
            models.append(ref)
        return ref, models
    t0 = time.monotonic()
    ref, ref_models = in_process(args.secagg)
    t_ref = time.monotonic() - t0
    plain_models = in_process(False)[1] if args.secagg else None

    first = "native" if "native" in runs else "flower"
    job, records, models, took = runs[first]
    print("\n%s run: job %s at %s, %d rounds in %.1f s; its round records "
          "(GET /v1/jobs/%s/rounds):" % (first, job.name, url, len(records), took, job.name))
    print("eval acc: the accuracy the clients evaluated on their test shares, as the server "
          "aggregated it;\nwhole test: the same model on the whole test split, in-process; "
          "in-process: FedAvg in numpy;\nmax|dw|: Tributary's model against in-process; avg "
          "err: against numpy's FedAvg of the very updates sent.\n")
    print("version 0 (the starting model): test accuracy %.4f\n" % acc0)
    if args.secagg:
        print("secagg: in-process is the same quantised FedAvg; plain fp: the test accuracy of "
              "plain FedAvg in-process;\nvs plain: max|dw| of Tributary's model against it (the "
              "quantisation, compounded over rounds);\ntrain loss: none (a secure round "
              "carries no per-client metrics).\n")
    print("round  lr      train loss  eval acc  eval loss  whole test  in-process  max|dw|   "
          "avg err   clients  seconds%s" % ("  plain fp  vs plain" if args.secagg else ""))
    for r, rec in enumerate(records):
        ev = rec.get("evaluation") or {}
        em = ev.get("metrics") or {}
        got = models[r + 1]
        whole = ref_trainer.accuracy(got, x_te, y_te)
        acc_ref = ref_trainer.accuracy(ref_models[r + 1], x_te, y_te)
        dw = max_diff(got, ref_models[r + 1])
        if first != "native":
            da = float("nan")
        elif args.secagg:
            da = max_diff(got, fedavg_quantised(sent[r], args.secagg_clip, args.secagg_bits))
        else:
            da = max_diff(got, fedavg(sent[r]))
        lr = configs[0][r]["lr"] if first == "native" else lr_of_round(args, r)
        bad = []
        if rec.get("round") != r:
            bad.append("record of round %s" % rec.get("round"))
        if "accuracy" not in em or abs(em["accuracy"] - whole) > EVAL_TOL or \
                ev.get("clients") != args.clients or ev.get("samples") != len(y_te):
            bad.append("evaluation %s" % (ev or None))
        if abs(whole - acc_ref) > ACC_TOL or dw > WEIGHT_TOL or \
                (first == "native" and da > AVG_TOL):
            bad.append("differs from in-process")
        if first == "native" and any(c[r]["lr"] != lr_of_round(args, r) for c in configs):
            bad.append("a client got lr %s" % sorted({c[r]["lr"] for c in configs}))
        want_mu = args.proximal_mu if args.algorithm == "fedprox" else None
        if first == "native" and any(c[r].get("proximal_mu") != want_mu for c in configs):
            bad.append("a client got proximal_mu %s, want %s" %
                       (sorted({str(c[r].get("proximal_mu")) for c in configs}), want_mu))
        ok &= not bad
        plain = ("  %8.4f  %7.1e" % (ref_trainer.accuracy(plain_models[r + 1], x_te, y_te),
                                     max_diff(got, plain_models[r + 1]))
                 if args.secagg else "")
        print("%5d  %-6g  %10.4f  %8.4f  %9.4f  %10.4f  %10.4f  %8.1e  %8.1e  %7s  %7.2f%s%s" %
              (r, lr, (rec.get("metrics") or {}).get("loss", float("nan")),
               em.get("accuracy", float("nan")), em.get("loss", float("nan")), whole,
               acc_ref, dw, da, ev.get("clients", "-"), rec.get("duration_s") or 0.0, plain,
               "  <- " + "; ".join(bad) if bad else ""), flush=True)
    if len(records) != args.rounds:
        print("FAIL: %d round records, want %d" % (len(records), args.rounds))
        ok = False
    final = ref_trainer.accuracy(models[-1], x_te, y_te)
    if args.secagg:
        allw = np.concatenate([flatten(w) for rs in sent.values() for w, _ in rs])
        step = 2 * args.secagg_clip / ((1 << args.secagg_bits) - 1)
        clipped = int(np.sum(np.abs(allw) > args.secagg_clip))
        print("\nquantisation: clip %g, %d bits: step %.2e (error at most %.2e a value); "
              "largest |w| sent %.3f, %d of %d values clipped" %
              (args.secagg_clip, args.secagg_bits, step, step / 2,
               float(np.max(np.abs(allw))), clipped, allw.size))
        print("final test accuracy: %.4f secure (quantised), %.4f plain FedAvg in-process" %
              (final, ref_trainer.accuracy(plain_models[-1], x_te, y_te)))
    print("\nfinal test accuracy: %.4f through Tributary (%s loop, %.1f s), %.4f in-process "
          "(%.1f s)" % (final, first, took, ref_trainer.accuracy(ref, x_te, y_te), t_ref))

    if "native" in runs and "flower" in runs:
        _, frec, fmodels, ftook = runs["flower"]
        nrec = runs["native"][1]
        print("\nThe Flower-style client (flower_client.py, NumPyClient interface) through "
              "run_numpy_client(), %.1f s:\n" % ftook)
        print("round  native eval acc  flower eval acc  max|dw| native-flower")
        fok = len(frec) == args.rounds
        for r, (a, b) in enumerate(zip(nrec, frec)):
            na = ((a.get("evaluation") or {}).get("metrics") or {}).get("accuracy", -1)
            fa = ((b.get("evaluation") or {}).get("metrics") or {}).get("accuracy", -1)
            dw = max_diff(models[r + 1], fmodels[r + 1])
            same = abs(na - fa) <= ACC_TOL and dw <= WEIGHT_TOL and na >= 0
            fok &= same
            print("%5d  %15.4f  %15.4f  %8.1e%s" % (r, na, fa, dw, "" if same else
                                                    "  <- differ"))
        ffinal = ref_trainer.accuracy(fmodels[-1], x_te, y_te)
        print("\nfinal test accuracy: %.4f native loop, %.4f Flower-style client" %
              (final, ffinal))
        if fok:
            print("ok: the Flower-style client reaches the native loop's accuracy every round "
                  "(within %g; weights within %g)" % (ACC_TOL, WEIGHT_TOL))
        else:
            print("FAIL: the Flower-style client and the native loop differ")
            ok = False
    if ok:
        print("ok: every round agrees with the in-process run, %sits evaluated accuracy is "
              "the whole test split's (within %g)" %
              ("its config reached every client and " if first == "native" else "", EVAL_TOL))
    else:
        print("FAIL: see the rounds marked <- above")
    if final < args.min_accuracy:
        print("FAIL: final accuracy %.4f is below %.2f" % (final, args.min_accuracy))
        ok = False
    else:
        print("ok: final accuracy %.4f >= %.2f after %d rounds" %
              (final, args.min_accuracy, args.rounds))
    return 0 if ok else 1


def main():
    args = parse_args()
    t0 = time.monotonic()
    server = None
    if args.url:
        token = args.token
        if args.token_file:
            try:
                with open(args.token_file) as f:
                    token = f.read().strip()
            except OSError as e:
                print("train.py: --token-file: %s" % e, file=sys.stderr)
                return 2
        if not token:
            print("train.py: --url needs --token-file or --token", file=sys.stderr)
            return 2
        url = args.url
    else:
        if not os.access(args.tributary, os.X_OK):
            print("train.py: no tributary binary at %s (build it: make build)" %
                  args.tributary, file=sys.stderr)
            return 2
        server = LocalServer(args.tributary)
        try:
            url, token = server.start()
        except RuntimeError as e:
            print("train.py: %s" % e, file=sys.stderr)
            server.stop()
            server.remove()
            return 2
    try:
        rc = run(args, url, token)
    except (TributaryError, TimeoutError) as e:
        print("train.py: Tributary: %s" % e, file=sys.stderr)
        rc = 2
    except RuntimeError as e:
        print("train.py: %s" % e, file=sys.stderr)
        rc = 1
    finally:
        if server:
            up_rc = server.stop()
            if up_rc != 0:
                print("train.py: tributary up exited with %s; its log:\n%s" %
                      (up_rc, server.log()), file=sys.stderr)
            server.remove()
    if server and up_rc != 0 and rc == 0:
        rc = 1
    print("total %.1f s" % (time.monotonic() - t0))
    return rc


if __name__ == "__main__":
    sys.exit(main())
