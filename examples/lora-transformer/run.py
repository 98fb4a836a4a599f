#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Federated LoRA fine-tuning of a tiny transformer with heterogeneous ranks: Tributary's `flora`
# job against the zero-padded average of A and B (a `fedavg` job), round by round.
"""Federated LoRA fine-tuning with ranks 2, 4 and 8: FLoRA against zero-padded averaging.

A tiny transformer is pre-trained centrally on a synthetic keyword task, then frozen. 12 clients
fine-tune it on a shifted task (non-IID: each client mostly holds two of the four classes) with
LoRA adapters on every attention and MLP projection; clients 0-3 use rank 2, 4-7 rank 4, 8-11
rank 8. Two jobs run the same clients, data and seeds through a `tributary up`:

- flora: a job with "algorithm": "flora", the pairs of the LoRA'd weights and "flora_merge":
  true. Each round every client trains fresh adapters of its own rank on the merged base and
  sends A_k [r_k, n] and B_k [m, r_k]; the server stacks them and merges W += sum_k p_k B_k A_k.
- padded: a plain fedavg job whose tensors are the adapters at rank 8 (A [8, n], B [m, 8]).
  Each client trains the first r_k rows of A and columns of B and sends them back padded with
  zeros; the server averages A and B separately.

Printed per round: the test accuracy of both global models, the clients' mean training loss,
and each model's distance to numpy's aggregation of the very updates sent (FLoRA's merge, the
FedAvg), which must be below 1e-5.

Exit status: 0 when every check holds and FLoRA's final accuracy is at least the padded
average's and at least --min-accuracy; 1 otherwise (also when the server refuses the flora
job); 2 when the server cannot be started or reached.

    /usr/bin/python3 examples/lora-transformer/run.py --tributary build/tributary
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from tributary_client import Client, TributaryError  # noqa: E402
import lora  # noqa: E402

RANKS = (2, 4, 8)
# Tributary's model against numpy's aggregation of the very updates sent to it, per round.
AGG_TOL = 1e-5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="FL rounds (default 10)")
    p.add_argument("--lr", type=float, default=0.02, help="local Adam learning rate")
    p.add_argument("--batch", type=int, default=16, help="local batch size")
    p.add_argument("--local-epochs", type=int, default=3, help="local epochs per round")
    p.add_argument("--pretrain-steps", type=int, default=150,
                   help="central pre-training steps (batch 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-accuracy", type=float, default=0.85,
                   help="FLoRA's final test accuracy must reach this (default 0.85)")
    p.add_argument("--job", default=None, help="job name prefix (default lora-SEED-PID)")
    p.add_argument("--tributary", default=os.environ.get("TRIBUTARY_BIN", "build/tributary"),
                   help="the tributary binary to start (default build/tributary)")
    p.add_argument("--url", help="use a running server at this URL instead")
    p.add_argument("--token-file", help="with --url: a file holding the admin token")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.job is None:
        args.job = "lora-%d-%d" % (args.seed, os.getpid())
    return args


class LocalServer:
    """A `tributary up` of our own on a free loopback port, in a temporary directory."""

    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="trib-lora-")
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
        if not self.proc:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def run_job(url, job, clients, method, sent, losses):
    """Runs every client's Job.run() loop in a thread of its own, with its own credential;
    @method is "flora" or "padded". Records what each client sent, per round."""
    me = []
    for c in clients:
        cj = Client(url, job.token).job(job.name)
        me.append(cj.as_client(cj.mint_client("lora-%d" % c.index)))
    errors = []
    lock = threading.Lock()

    def go(c, handle):
        calls = [0]

        def train(model, config):
            # Every client trains in every round (clients_per_round = all of them), so its
            # k-th call is round k: the round fixes the seeds.
            r = calls[0]
            calls[0] += 1
            update, n, loss = getattr(c, method + "_train")(model, r)
            with lock:
                sent.setdefault(r, []).append((c.index, update, n))
                losses.setdefault(r, []).append((loss, n))
            return update, n, {"loss": loss}
        try:
            handle.run(train, None, timeout=120)
        except BaseException as e:  # reported below, on the main thread
            errors.append((c.index, e))
        finally:
            handle.client.close()
    t0 = time.monotonic()
    threads = [threading.Thread(target=go, args=(c, h), daemon=True)
               for c, h in zip(clients, me)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        i, e = errors[0]
        raise RuntimeError("client %d (%s job): %s: %s" % (i, method, type(e).__name__, e)) \
            from e
    return time.monotonic() - t0


def ordered(sent_round):
    """[(update, samples)] of a round in client order (the aggregation does not depend on it
    but for float rounding; numpy sums in float64)."""
    return [(u, n) for _, u, n in sorted(sent_round, key=lambda e: e[0])]


def mean_loss(pairs):
    total = sum(n for _, n in pairs)
    return sum(l * n for l, n in pairs) / total if total else float("nan")


def run(args, url, admin_token):
    lora.setup_torch()
    t0 = time.monotonic()
    base, acc_pre = lora.pretrain(args.seed, steps=args.pretrain_steps)
    data, (x_te, y_te) = lora.federated_data(12, args.seed)
    acc_base = lora.accuracy(base, x_te, y_te)
    ranks = [RANKS[i // 4] for i in range(12)]
    clients = [lora.LoraClient(i, ranks[i], base, data[i], args) for i in range(12)]
    max_rank = max(RANKS)
    pairs = lora.pairs_spec(base, max_rank)
    init_base = lora.base_weights(base)
    init_pad = lora.padded_start(base, max_rank, args.seed)
    n_lora = sum(v.size for v in init_pad.values())
    print("model: transformer, %d block(s), d_model %d, %d heads, MLP %d; pre-trained centrally "
          "in %d steps (%.1f s): %.4f on its own task, %.4f on the shifted task"
          % (lora.N_LAYERS, lora.D_MODEL, lora.HEADS, lora.D_FF, args.pretrain_steps,
             time.monotonic() - t0, acc_pre, acc_base))
    print("LoRA on %s of every block (%d pairs; %d adapter weights at rank %d); clients 0-3 "
          "rank 2, 4-7 rank 4, 8-11 rank 8" % (", ".join(lora.PROJECTIONS), len(pairs), n_lora,
                                                max_rank))
    print("data: %d-%d training samples per client, 85%% from its two main classes "
          "(client i: i mod 4, i+1 mod 4); %d test samples; local training: %d epoch(s) of "
          "Adam lr %g, batch %d" % (min(len(d[1]) for d in data), max(len(d[1]) for d in data),
                                    len(y_te), args.local_epochs, args.lr, args.batch),
          flush=True)

    admin = Client(url, admin_token)
    common = {"clients_per_round": 12, "client_auth": "required", "num_rounds": args.rounds}
    pad_job = admin.create_job(args.job + "-padded", tensors=init_pad, **common)
    pad_job.set_initial_model(init_pad)
    flora_job, flora_refused = None, None
    try:
        flora_job = admin.create_job(args.job + "-flora", tensors=init_base, algorithm="flora",
                                     flora_pairs=pairs, flora_merge=True, **common)
    except TributaryError as e:
        if e.status != 400:
            raise
        flora_refused = e
    if flora_job is not None:
        flora_job.set_initial_model(init_base)
    admin.close()

    results = {}
    for method, job in (("padded", pad_job), ("flora", flora_job)):
        if job is None:
            continue
        sent, losses = {}, {}
        took = run_job(url, job, clients, method, sent, losses)
        models = [job.model(round=v)[1] for v in range(args.rounds + 1)]
        records = [r for r in job.rounds() if r["round"] < args.rounds]
        results[method] = (job, sent, losses, models, records, took)
        print("%s: job %s, %d rounds in %.1f s" % (method, job.name, len(records), took),
              flush=True)

    ok = True
    print("\nflora acc / padded acc: the global model's accuracy on the %d test samples after "
          "the round;\nloss: the clients' sample-weighted mean training loss (the round "
          "record's);\nmerge err: max |W - (W_prev + sum p_k B_k A_k)| over the base "
          "tensors, Tributary's model against numpy's;\navg err: max |adapter - sum p_k "
          "padded adapter_k|, Tributary's FedAvg against numpy's;\ngap: ||mean(B) mean(A) - "
          "sum p_k B_k A_k|| / ||sum p_k B_k A_k|| of the padded updates sent: how far the\n"
          "product of the averaged adapters is from the average of what the clients trained "
          "(FLoRA's: 0).\n" % len(y_te))
    print("round  flora acc  padded acc  flora loss  padded loss  merge err  avg err    gap")
    print("  -    %9.4f  %10.4f  (the pre-trained model)" % (acc_base, acc_base))
    final = {}
    for r in range(args.rounds):
        row, bad, gap = {}, [], float("nan")
        for method in ("flora", "padded"):
            if method not in results:
                row[method] = (float("nan"), float("nan"), float("nan"))
                continue
            job, sent, losses, models, records, _ = results[method]
            ups = ordered(sent.get(r, []))
            got = models[r + 1]
            if method == "flora":
                acc = lora.eval_flora(base, got, x_te, y_te)
                if sorted(got) != sorted(init_base):
                    bad.append("flora model tensors %s" % sorted(got))
                    err = float("inf")
                else:
                    err = lora.max_diff(got, lora.flora_merge(models[r], ups, pairs))
            else:
                acc = lora.eval_padded(base, got, x_te, y_te)
                err = lora.max_diff(got, lora.fedavg(ups))
                gap = lora.product_gap(ups, pairs)
            if len(ups) != 12:
                bad.append("%s: %d updates sent" % (method, len(ups)))
            if err > AGG_TOL:
                bad.append("%s model differs from numpy's by %.1e" % (method, err))
            rec = records[r] if r < len(records) else {}
            if rec.get("round") != r or rec.get("clients", rec.get("received")) != 12:
                bad.append("%s round record %s" % (method, rec or None))
            loss = (rec.get("metrics") or {}).get("loss", float("nan"))
            row[method] = (acc, loss, err)
            final[method] = acc
        ok &= not bad
        def cell(method, i, width, fmt):
            v = row[method][i]
            return ("%" + str(width) + "s") % "-" if v != v else fmt % v
        print("%5d  %s  %s  %s  %s  %s  %s  %5.3f%s" %
              (r, cell("flora", 0, 9, "%9.4f"), cell("padded", 0, 10, "%10.4f"),
               cell("flora", 1, 10, "%10.4f"), cell("padded", 1, 11, "%11.4f"),
               cell("flora", 2, 9, "%9.1e"), cell("padded", 2, 7, "%7.1e"), gap,
               "  <- " + "; ".join(bad) if bad else ""), flush=True)

    if flora_refused is not None:
        print("\nFAIL: the server refused the flora job, so only the padded half ran: %s"
              % flora_refused)
        if "unknown" in str(flora_refused):
            print("This tributary has no server side for \"algorithm\": \"flora\" (the job "
                  "fields flora_pairs and flora_merge; docs/ALGORITHMS.md \"flora\").")
        return 1
    print("\nfinal test accuracy after %d rounds: FLoRA %.4f, zero-padded average %.4f "
          "(pre-trained: %.4f)" % (args.rounds, final["flora"], final["padded"], acc_base))
    if ok:
        print("ok: every round's model equals numpy's aggregation of the updates sent "
              "(within %g), 12 clients each" % AGG_TOL)
    else:
        print("FAIL: see the rounds marked <- above")
    if final["flora"] < final["padded"]:
        print("FAIL: FLoRA ends below the zero-padded average (%.4f < %.4f)" %
              (final["flora"], final["padded"]))
        ok = False
    else:
        print("ok: FLoRA ends at least as accurate as the zero-padded average (%.4f >= %.4f)"
              % (final["flora"], final["padded"]))
    if final["flora"] < args.min_accuracy:
        print("FAIL: FLoRA's final accuracy %.4f is below %.2f" %
              (final["flora"], args.min_accuracy))
        ok = False
    return 0 if ok else 1


def main():
    args = parse_args()
    t0 = time.monotonic()
    server = None
    if args.url:
        if not args.token_file:
            print("run.py: --url needs --token-file", file=sys.stderr)
            return 2
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except OSError as e:
            print("run.py: --token-file: %s" % e, file=sys.stderr)
            return 2
        url = args.url
    else:
        if not os.access(args.tributary, os.X_OK):
            print("run.py: no tributary binary at %s (build it: make build)" % args.tributary,
                  file=sys.stderr)
            return 2
        server = LocalServer(args.tributary)
        try:
            url, token = server.start()
        except RuntimeError as e:
            print("run.py: %s" % e, file=sys.stderr)
            server.stop()
            server.remove()
            return 2
    up_rc = 0
    try:
        rc = run(args, url, token)
    except (TributaryError, TimeoutError) as e:
        print("run.py: Tributary: %s" % e, file=sys.stderr)
        rc = 2
    except RuntimeError as e:
        print("run.py: %s" % e, file=sys.stderr)
        rc = 1
    finally:
        if server:
            up_rc = server.stop()
            if up_rc != 0:
                print("run.py: tributary up exited with %s; its log:\n%s" %
                      (up_rc, server.log()), file=sys.stderr)
            server.remove()
    if up_rc != 0 and rc == 0:
        rc = 1
    print("total %.1f s" % (time.monotonic() - t0))
    return rc


if __name__ == "__main__":
    sys.exit(main())
