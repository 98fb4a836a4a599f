#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Federated training of a PyTorch MLP on non-IID digits, averaged by Tributary and by numpy.
"""Federated learning on scikit-learn's bundled digits with Tributary doing the averaging.

20 clients each hold a non-IID slice of the training split (two or three of the ten classes).
Every round each client fetches the global model from Tributary through the Python client
library, trains a small PyTorch MLP on its slice for one local epoch, and submits its weights
(the state_dict, as is) with its sample count. Tributary folds the round's updates into the
sample-weighted mean (FedAvg), which becomes the next global model; its test accuracy is
printed per round.

The same training runs in lockstep with FedAvg computed in-process in numpy: same data, same
seeds, same local training, only who averages differs. The two accuracy curves and models must
agree within float tolerance: Tributary changes nothing but the speed.

Exit status: 0 when the final accuracy is at least --min-accuracy (0.90) and the two runs
agree; 1 otherwise; 2 when the server cannot be reached or started.

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
import time

import numpy as np
import torch
from torch import nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from tributary_client import Client, TributaryError  # noqa: E402

# Agreement between the Tributary run and the in-process numpy run, per round.
ACC_TOL = 0.005
WEIGHT_TOL = 1e-4
# Tributary's model against numpy's FedAvg of the very updates sent to it, per round.
AVG_TOL = 1e-5


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="FL rounds (default 20)")
    p.add_argument("--clients", type=int, default=20, help="clients (default 20)")
    p.add_argument("--lr", type=float, default=0.2, help="local SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.5, help="local SGD momentum")
    p.add_argument("--batch", type=int, default=10, help="local batch size")
    p.add_argument("--local-epochs", type=int, default=1, help="local epochs per round")
    p.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-accuracy", type=float, default=0.90,
                   help="fail if the final test accuracy is below this (default 0.90)")
    p.add_argument("--url", help="a running Tributary (default: start one)")
    p.add_argument("--token-file", help="its admin token file (with --url)")
    p.add_argument("--token", default=os.environ.get("TRIBUTARY_ADMIN_TOKEN"),
                   help="its admin token (with --url; default $TRIBUTARY_ADMIN_TOKEN)")
    p.add_argument("--tributary", default=os.environ.get(
        "TRIBUTARY_BIN", os.path.join(REPO, "build", "tributary")),
        help="the binary to start (default $TRIBUTARY_BIN or build/tributary)")
    p.add_argument("--job", default="digits-%d" % os.getpid(), help="job name")
    return p.parse_args()


# --- data and model ---

def client_classes(i, n_classes=10):
    """Client i's classes: two neighbours, and a third one for the second half of clients."""
    cls = [i % n_classes, (i + 1) % n_classes]
    if i >= n_classes:
        cls.append((i + 5) % n_classes)
    return cls


def load_data(n_clients, seed):
    """Returns (client slices [(x, y)], x_test, y_test): a stratified 25% test split held out,
    each class's training samples shared out evenly among the clients holding that class."""
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
    return slices, torch.from_numpy(x_te), torch.from_numpy(y_te)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU}


def make_model(hidden, activation):
    return nn.Sequential(nn.Linear(64, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, 10))


def to_numpy(state):
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}


class Trainer:
    """Local training as a pure function of (global weights, client, round)."""

    def __init__(self, args, slices):
        self.args = args
        self.slices = slices
        self.model = make_model(args.hidden, args.activation)
        self.loss = nn.CrossEntropyLoss()

    def train(self, weights, client, rnd):
        """Trains from @weights (dict of numpy arrays) on @client's slice; returns the new
        state_dict (torch tensors, owned by the caller) and the number of samples."""
        a = self.args
        x, y = self.slices[client]
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                                    weights.items()})
        opt = torch.optim.SGD(self.model.parameters(), lr=a.lr, momentum=a.momentum)
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + rnd * 1009 + client)
        self.model.train()
        for _ in range(a.local_epochs):
            order = torch.randperm(len(y), generator=g)
            for s in range(0, len(y), a.batch):
                b = order[s:s + a.batch]
                opt.zero_grad()
                self.loss(self.model(x[b]), y[b]).backward()
                opt.step()
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}, len(y)

    def accuracy(self, weights, x, y):
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                                    weights.items()})
        self.model.eval()
        with torch.no_grad():
            return (self.model(x).argmax(1) == y).float().mean().item()


def fedavg(updates):
    """The sample-weighted mean of [(weights dict, samples)], in float64, as float32."""
    total = float(sum(n for _, n in updates))
    return {k: (sum(n * w[k].astype(np.float64) for w, n in updates) / total)
            .astype(np.float32) for k in updates[0][0]}


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

def run(args, url, admin_token):
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    slices, x_te, y_te = load_data(args.clients, args.seed)
    trainer = Trainer(args, slices)
    init = to_numpy(make_model(args.hidden, args.activation).state_dict())
    n_params = sum(v.size for v in init.values())
    sizes = [len(s[1]) for s in slices]
    print("digits: %d clients holding 2 or 3 classes each (client 0: classes %s, client %d: "
          "%s), %d-%d training samples each; %d test samples"
          % (args.clients, client_classes(0), args.clients - 1,
             client_classes(args.clients - 1), min(sizes), max(sizes), len(y_te)))
    print("model: MLP 64-%d-10 (%s, %d parameters); every round all clients train %d local "
          "epoch(s), SGD lr %g momentum %g batch %d"
          % (args.hidden, args.activation, n_params, args.local_epochs, args.lr,
             args.momentum, args.batch), flush=True)

    admin = Client(url, admin_token)
    # client_auth "required": the job's token mints client credentials but submits nothing.
    job = admin.create_job(args.job, clients_per_round=args.clients, tensors=init,
                           client_auth="required")
    job.set_initial_model(init)
    # Every client talks to Tributary over its own connection: it mints its own credential
    # with the job's token, then submits with that (one identity, one update per round).
    clients = []
    for i in range(args.clients):
        cj = Client(url, job.token).job(job.name)
        clients.append(cj.as_client(cj.mint_client("digits-%d" % i)))
    print("tributary: job %s at %s\n" % (job.name, url))

    ref = init                       # the in-process numpy run's global model
    acc0 = trainer.accuracy(init, x_te, y_te)
    print("Test accuracy of the global model averaged by Tributary and in-process by numpy;\n"
          "max|dw|: largest weight difference between the two global models;\n"
          "avg err: Tributary's model against numpy's FedAvg of the very updates sent to it.\n")
    print("round  tributary  in-process  max|dw|   avg err   tributary s  in-process s")
    print("%5d  %9.4f  %10.4f  %8.1e  %8.1e" % (0, acc0, acc0, 0.0, 0.0))
    curve, ok_agree = [], True
    t_trib = t_ref = 0.0
    for r in range(args.rounds):
        t0 = time.monotonic()
        sent = []
        for i, cj in enumerate(clients):
            version, weights = cj.model()
            if version != r:
                raise RuntimeError("client %d got model version %d in round %d" %
                                   (i, version, r))
            state, n = trainer.train(weights, i, r)
            cj.submit(state, round=r, samples=n)
            sent.append((to_numpy(state), n))
        version, glob = job.wait_model(after=r, timeout=120)
        t1 = time.monotonic()
        if version != r + 1:
            raise RuntimeError("wanted model version %d, got %d" % (r + 1, version))
        da = max_diff(glob, fedavg(sent))
        ref = fedavg([(to_numpy(s), n) for s, n in
                      (trainer.train(ref, i, r) for i in range(args.clients))])
        t2 = time.monotonic()
        t_trib += t1 - t0
        t_ref += t2 - t1
        acc = trainer.accuracy(glob, x_te, y_te)
        acc_ref = trainer.accuracy(ref, x_te, y_te)
        dw = max_diff(glob, ref)
        agree = abs(acc - acc_ref) <= ACC_TOL and dw <= WEIGHT_TOL and da <= AVG_TOL
        ok_agree &= agree
        curve.append((acc, acc_ref))
        print("%5d  %9.4f  %10.4f  %8.1e  %8.1e  %11.2f  %12.2f%s" %
              (r + 1, acc, acc_ref, dw, da, t1 - t0, t2 - t1, "" if agree else "  <- differ"),
              flush=True)
    for c in clients:
        c.client.close()
    admin.close()

    final = curve[-1][0] if curve else acc0
    print("\nfinal test accuracy: %.4f through Tributary, %.4f in-process "
          "(training + averaging: %.1f s and %.1f s)" % (final, curve[-1][1] if curve else
                                                        acc0, t_trib, t_ref))
    ok = True
    if not ok_agree:
        print("FAIL: the Tributary and in-process runs differ beyond tolerance "
              "(accuracy %g, weights %g)" % (ACC_TOL, WEIGHT_TOL))
        ok = False
    else:
        print("ok: both runs agree every round (accuracy within %g, weights within %g)" %
              (ACC_TOL, WEIGHT_TOL))
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
