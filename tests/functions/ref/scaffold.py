# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_scaffold.c: SCAFFOLD's server step on [x ; c].

usage:
  scaffold.py N_HALF S LR POP SEED    prev, dy (S rows), dc (S rows), sum (f32 fold), out
"""
import sys

import numpy as np

import refio

f32, f64 = np.float32, np.float64


def main():
    half, s, lr, pop, seed = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), \
        float(sys.argv[4]), int(sys.argv[5])
    rng = np.random.default_rng(seed)
    prev = rng.normal(0, 1, 2 * half).astype(f32)
    dy = rng.normal(0, 0.1, (s, half)).astype(f32)
    dc = rng.normal(0, 0.1, (s, half)).astype(f32)
    upd = np.concatenate([dy, dc], axis=1)
    # The tree's sum, as the f32 fold makes it (in order, one rounding per add).
    acc = np.zeros(2 * half, f32)
    for row in upd:
        acc = (acc + row).astype(f32)
    x = prev[:half].astype(f64) + f64(f32(lr)) * (dy.astype(f64).mean(axis=0))
    c = prev[half:].astype(f64) + (s / pop) * (dc.astype(f64).mean(axis=0))
    refio.emit("prev", prev)
    refio.emit("sum", acc)
    refio.emit("out", np.concatenate([x, c]).astype(f32))
    refio.end()


main()
