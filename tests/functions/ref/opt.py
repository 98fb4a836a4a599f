# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_opt.c: server optimiser steps, in f32, operation for operation.

usage: opt.py N STEPS SEED plain|huge KIND...
KIND: fedavg fedavgm fedadagrad fedadam fedyogi; arrays are named NAME_KIND. With "huge", step
1's delta holds 1e30 and -1e30 in a few coordinates (one client's huge values passed through a
plain mean).
"""
import sys

import numpy as np

import refio

f32 = np.float32
FMAX = f32(np.finfo(np.float32).max)


def sat(x):
    return np.minimum(x, FMAX)


def run(kind, n, steps, seed, huge):
    rng = np.random.default_rng(seed)
    lr, mu, b1, b2, tau = f32(0.5), f32(0.9), f32(0.9), f32(0.99), f32(1e-3)
    if kind in ("fedadagrad", "fedadam", "fedyogi"):
        lr = f32(0.01)
    x = rng.normal(0, 1, n).astype(f32)
    deltas = rng.normal(0, 0.1, (steps, n)).astype(f32)
    # Exact zeros and sign flips exercise Yogi's sign(0) and the tau floor.
    deltas[:, ::17] = 0
    if huge:
        deltas[1, 3::50] = f32(1e30)
        deltas[1, 5::50] = f32(-1e30)
    x0 = x.copy()
    m = np.zeros(n, f32)
    v = np.full(n, tau * tau, f32)
    c1, c2 = f32(1) - b1, f32(1) - b2
    with np.errstate(over="ignore"):
        for d in deltas:
            if kind == "fedavg":
                x = x + lr * d
            elif kind == "fedavgm":
                m = mu * m + d
                x = x + lr * m
            else:
                m = b1 * m + c1 * d
                g2 = sat(d * d)
                if kind == "fedadagrad":
                    v = sat(v + g2)
                elif kind == "fedadam":
                    v = sat(b2 * v + c2 * g2)
                else:
                    s = np.sign(v - g2).astype(f32)
                    v = sat(v - c2 * g2 * s)
                x = x + lr * m / (np.sqrt(v) + tau)
    assert x.dtype == f32 and m.dtype == f32 and v.dtype == f32
    refio.emit(f"params_{kind}", np.array([lr, mu, b1, b2, tau], f32))
    refio.emit(f"x0_{kind}", x0)
    refio.emit(f"deltas_{kind}", deltas)
    refio.emit(f"x_{kind}", x)
    refio.emit(f"m_{kind}", m)
    refio.emit(f"v_{kind}", v)


def main():
    n, steps, seed, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    for i, kind in enumerate(sys.argv[5:]):
        run(kind, n, steps, [seed, i], mode == "huge")
    refio.end()


main()
