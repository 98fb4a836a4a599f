#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# `make example-lora`'s pieces, fast: FLoRA's stacking identity on real adapters of ranks 2, 4
# and 8, the padded clients' truncation and zero tails, then the example's run (2 rounds) against
# a real `tributary up`: both jobs, every model checked against numpy by the example itself.
"""The LoRA example (examples/lora-transformer) in small.

1. Pieces, in-process: the 12 clients' FLoRA adapters after one local epoch, stacked as the
   server stacks them, give B_stack A_stack = sum_k p_k B_k A_k (1e-6, float64), with the used
   rank sum_k r_k = 4*2 + 4*4 + 4*8 and a zero tail; the merge adds exactly that to W. A padded
   client trains only the first r rows of A / columns of B, sends zeros past them, and leaves
   the rest of the global adapters out of its update.
2. The example's run(), 2 rounds, 60 pre-training steps, against this build's server: the flora
   job (merge) and the padded fedavg job; each round's model within 1e-5 of numpy's
   aggregation of the updates sent, and FLoRA at least as accurate as the padded average
   after the last round (exit status 0 of run()).

Skips (77) when /usr/bin/python3 has no torch (python3-torch, installed by make example).
"""
import io
import os
import sys
import types
from contextlib import redirect_stdout

import numpy as np

from e2e_common import Server, check, log, main

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "examples", "lora-transformer")

try:
    import torch  # noqa: F401
except ImportError as e:
    print("SKIP: no torch for %s (%s): apt-get install python3-torch, or make example-lora"
          % (sys.executable, e), flush=True)
    sys.exit(77)

sys.path.insert(0, EXAMPLE)
import lora  # noqa: E402
import run as lora_run  # noqa: E402


def pieces():
    lora.setup_torch()
    base, _ = lora.pretrain(0, steps=20)
    data, test = lora.federated_data(12, 0)
    args = types.SimpleNamespace(lr=0.02, local_epochs=1, batch=16, seed=0)
    ranks = [2] * 4 + [4] * 4 + [8] * 4
    clients = [lora.LoraClient(i, ranks[i], base, data[i], args) for i in range(12)]
    pairs = lora.pairs_spec(base, 8)
    check(len(pairs) == lora.N_LAYERS * len(lora.PROJECTIONS), "pairs: %r" % pairs)
    w0 = lora.base_weights(base)

    ups = []
    for c in clients:
        u, n, loss = c.flora_train(w0, 0)
        check(sorted(u) == sorted(k for p in pairs for k in (p["a"], p["b"])),
              "flora update names %s" % sorted(u))
        for p in pairs:
            m, nn = w0[p["base"]].shape
            check(u[p["a"]].shape == (c.rank, nn) and u[p["b"]].shape == (m, c.rank),
                  "client %d %s: A %s B %s" % (c.index, p["name"], u[p["a"]].shape,
                                              u[p["b"]].shape))
            check(np.any(u[p["b"]] != 0), "client %d %s: B did not train" % (c.index, p["name"]))
        ups.append((u, n))
    # The client must not leave its adapters in the model: the next round starts clean.
    check(all(lin.lora_A is None for c in clients for lin in c.model.lora_layers().values()),
          "an adapter stayed in a client's model")
    p_k = lora.weights_of(ups)
    stacks = lora.flora_stack(ups, pairs, 8)
    merged = lora.flora_merge(w0, ups, pairs)
    worst = 0.0
    for pr in pairs:
        a_st, b_st, used = stacks[pr["name"]]
        check(used == sum(ranks), "%s: used rank %d, want %d" % (pr["name"], used, sum(ranks)))
        check(not a_st[used:].any() and not b_st[:, used:].any(), "%s: non-zero tail" % pr["name"])
        want = sum(pk * (u[pr["b"]].astype(np.float64) @ u[pr["a"]].astype(np.float64))
                   for (u, _), pk in zip(ups, p_k))
        worst = max(worst, float(np.abs(b_st @ a_st - want).max()))
        # The merge adds that product (float32 rounding of W + delta).
        d = merged[pr["base"]].astype(np.float64) - w0[pr["base"]] - want
        check(np.abs(d).max() < 1e-6, "%s: merge off by %g" % (pr["name"], np.abs(d).max()))
    check(worst < 1e-6, "B_stack A_stack - sum p_k B_k A_k: %g" % worst)
    # Separate averages do not give the average product (the example's point), here by a lot
    # more than rounding.
    avg = lora.fedavg([({k: v for k, v in lora_pad(u, pairs).items()}, n) for u, n in ups])
    pr = pairs[0]
    want = sum(pk * (u[pr["b"]].astype(np.float64) @ u[pr["a"]]) for (u, _), pk in zip(ups, p_k))
    cross = float(np.abs(avg[pr["b"]].astype(np.float64) @ avg[pr["a"]] - want).max())
    check(cross > 1e-4, "mean(B) mean(A) equals mean(B A) within %g: the data is degenerate"
          % cross)
    log("flora stacking: B_stack A_stack = sum p_k B_k A_k within %.1e over %d pairs (used "
        "rank %d); mean(B) mean(A) misses it by %.1e" % (worst, len(pairs), sum(ranks), cross))

    start = lora.padded_start(base, 8, 0)
    for c in (clients[0], clients[4]):
        u, n, _ = c.padded_train(start, 0)
        r = c.rank
        for pr in pairs:
            a, b = u[pr["a"]], u[pr["b"]]
            check(a.shape == start[pr["a"]].shape and b.shape == start[pr["b"]].shape,
                  "padded %s shapes %s %s" % (pr["name"], a.shape, b.shape))
            check(not a[r:].any() and not b[:, r:].any(),
                  "client %d (rank %d) %s: non-zero past its rank" % (c.index, r, pr["name"]))
            check(np.any(a[:r] != start[pr["a"]][:r]), "client %d %s: A[:r] did not train"
                  % (c.index, pr["name"]))
    log("padded clients: ranks 2 and 4 train their first r rows/columns, zeros past them")


def lora_pad(u, pairs):
    out = {}
    for pr in pairs:
        a, b = u[pr["a"]], u[pr["b"]]
        pa, pb = np.zeros((8, a.shape[1]), np.float32), np.zeros((b.shape[0], 8), np.float32)
        pa[:a.shape[0]], pb[:, :b.shape[1]] = a, b
        out[pr["a"]], out[pr["b"]] = pa, pb
    return out


def scenario():
    pieces()
    with Server() as srv:
        url = "http://127.0.0.1:%d" % srv.port
        args = lora_run.parse_args(["--rounds", "2", "--pretrain-steps", "60",
                                    "--min-accuracy", "0", "--job", "elora"])
        out = io.StringIO()
        with redirect_stdout(out):
            rc = lora_run.run(args, url, srv.admin)
        text = out.getvalue()
        log(text)
        check(rc == 0, "run() exited %d" % rc)
        for line in ("ok: every round's model equals numpy's aggregation",
                     "ok: FLoRA ends at least as accurate"):
            check(line in text, "no %r in the output" % line)


if __name__ == "__main__":
    main(scenario)
