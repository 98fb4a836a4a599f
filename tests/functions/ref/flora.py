# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_flora.c: FLoRA's stacked product and the merge.

usage:
  flora.py M N R SEED r_1 .. r_K     K clients' pairs (A_k [r_k, N], B_k [M, r_k]), weights,
                                     the base W, sum_k p_k B_k A_k and W + that, in float64
"""
import sys

import numpy as np

import refio


def main():
    m, n, big_r, seed = (int(a) for a in sys.argv[1:5])
    ranks = [int(a) for a in sys.argv[5:]]
    rng = np.random.default_rng(seed)
    a = [rng.normal(0, 1, (r, n)).astype(np.float32) for r in ranks]
    b = [rng.normal(0, 1, (m, r)).astype(np.float32) for r in ranks]
    w = rng.integers(1, 100, len(ranks)).astype(np.float64)
    base = rng.normal(0, 1, (m, n)).astype(np.float32)
    p = w / w.sum()
    prod = sum(p[k] * (b[k].astype(np.float64) @ a[k].astype(np.float64))
               for k in range(len(ranks)))
    refio.emit("a", np.concatenate([x.ravel() for x in a]))
    refio.emit("b", np.concatenate([x.ravel() for x in b]))
    refio.emit("w", w)
    refio.emit("base", base)
    refio.emit("prod", prod)
    refio.emit("merged", base.astype(np.float64) + prod)
    refio.end()


main()
