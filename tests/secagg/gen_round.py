#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes tests/secagg/round.json: one SecAgg+ round played by Python clients
(clients/python/tributary_secagg.SecAggClient) against a Python model of the server's routing,
with dropouts at every stage. tests/runtime/test_secagg.c replays the clients' messages through
runtime/node/rt_secagg.c and wants the same graph, the same reveal lists and the exact sum of the
survivors' inputs: the Python client and the C server agree byte for byte.
"""
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import tributary_secagg as sa  # noqa: E402

N, T, K, BITS, CLIP, DIM, ROUND = 24, 4, 8, 12, 0.5, 40, 9
SEED = hashlib.sha256(b"round graph seed").digest()
NO_SHARE, NO_MASKED, NO_UNMASK, NO_ADVERTISE = {2, 11}, {5, 17, 20}, {0, 8}, {23}


def main():
    rng = np.random.default_rng(7)
    clients = {u: sa.SecAggClient(u, ROUND, T) for u in range(N)}
    adv = {u: c.advertise() for u, c in clients.items() if u not in NO_ADVERTISE}
    g = sa.graph(list(adv), K, SEED)
    shares = {u: clients[u].share({v: adv[v] for v in g[u]}) for u in adv if u not in NO_SHARE}
    u2 = set(shares)
    while True:  # prune as rt_secagg.c: fewer than t neighbours left cannot be rebuilt
        low = {u for u in u2 if len([v for v in g[u] if v in u2]) < T}
        if not low:
            break
        u2 -= low
    xs, masked = {}, {}
    for u in sorted(u2 - NO_MASKED):
        n_u = int(rng.integers(1, 40))
        q = sa.quantise(rng.normal(0, 0.3, DIM), CLIP, BITS)
        xs[u] = np.concatenate([q * np.uint32(n_u), [n_u]]).astype(np.uint32)
        inbox = {v: shares[v][u] for v in g[u] if v in u2}
        masked[u] = clients[u].masked(xs[u], inbox, adv)
    u3 = set(masked)
    reveals = []
    for u in sorted(u3 - NO_UNMASK):
        want = [(v, sa.REVEAL_SELF if v in u3 else sa.REVEAL_SECRET) for v in g[u] if v in u2]
        got = clients[u].reveal(want)
        reveals.append({"u": u, "v": [v for v, _ in want], "kind": [k for _, k in want],
                        "share": [got[v].hex() for v, _ in want]})
    total = np.zeros(DIM + 1, dtype=np.uint32)
    for u in u3:
        total += xs[u]
    out = {
        "cfg": {"n_clients": N, "threshold": T, "neighbours": K, "bits": BITS, "clip": CLIP,
                "dim": DIM, "round": ROUND, "graph_seed": SEED.hex()},
        "advertise": [{"u": u, "c_pk": c.hex(), "s_pk": s.hex()} for u, (c, s) in adv.items()],
        "graph": {str(u): g[u] for u in sorted(g)},
        "share": [{"u": u, "to": sorted(s), "ct": [s[v].hex() for v in sorted(s)]}
                  for u, s in sorted(shares.items())],
        "masked": [{"u": u, "y": masked[u].astype("<u4").tobytes().hex()}
                   for u in sorted(masked)],
        "reveal": reveals,
        "survivors": sorted(u3),
        "sum": total.astype("<u4").tobytes().hex(),
        "mean": [float(v) for v in sa.dequantise_mean(total[:DIM], int(total[DIM]), CLIP, BITS)],
    }
    with open(os.path.join(os.path.dirname(__file__), "round.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
