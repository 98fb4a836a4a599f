# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_bulyan.c: Bulyan's recursive Krum selection and trimmed mean.

usage:
  bulyan.py K N F SEED     rows, distances, selection (in pick order), aggregate, honest mean
"""
import sys

import numpy as np

import refio

f32, f64 = np.float32, np.float64


def bulyan(x, f):
    """The selection and the aggregate, as fn_bulyan.h defines them (in float64)."""
    k = len(x)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    theta = k - 2 * f
    left = list(range(k))
    sel = []
    while len(sel) < theta:
        r = len(left)
        q = max(1, r - f - 2)
        scores = [np.sort(np.array([d[i, j] for j in left if j != i]))[:q].sum() for i in left]
        best = min(range(r), key=lambda a: (scores[a], left[a]))
        sel.append(left.pop(best))
    s = np.sort(x[sel], axis=0)
    return d, np.array(sel), s[f:theta - f].mean(axis=0)


def main():
    k, n, f, seed = (int(a) for a in sys.argv[1:5])
    rng = np.random.default_rng(seed)
    rows = rng.normal(0, 1, (k, n)).astype(f32)
    rows[1:f, :] = f32(40.0)               # f - 1 identical poisoned vectors
    rows[k - 1, ::7] = f32(-1e6)           # and the f-th: far on some coordinates only
    x = rows.astype(f64)
    d, sel, agg = bulyan(x, f)
    honest = np.delete(x, list(range(1, f)) + [k - 1], axis=0).mean(axis=0)
    refio.emit("rows", rows)
    refio.emit("d", d)
    refio.emit("selected", sel.astype(np.uint64))
    refio.emit("agg", agg.astype(f32))
    refio.emit("honest", honest.astype(f32))
    refio.end()


main()
