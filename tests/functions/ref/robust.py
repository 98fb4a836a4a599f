# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_robust.c: median, trimmed mean, Krum, Multi-Krum, clipping.

usage:
  robust.py coord N SEED K:TRIM...    per case i: rows_i, median_i, tmean_i, cut_i (adversarial
                                      rows included; one run for all cases: scipy loads slowly)
  robust.py krum K N F M SEED         rows, distances, scores, selection, mean of the selection
  robust.py clip K N SEED C           rows, squared norms, clip scales, clipped rows
  robust.py poison K N P SEED         K clients of which P send the same poisoned vector
"""
import sys

import numpy as np

import refio

f32, f64 = np.float32, np.float64


def adversarial_rows(rng, k, n):
    """Normal rows, then: row 0 huge (one client sending 1e30), runs of ties, a poisoned pair."""
    rows = rng.normal(0, 1, (k, n)).astype(f32)
    rows[0, :] = f32(1e30)
    rows[0, 1::3] = f32(-1e30)
    rows[0, 2::7] = f32(-3e38)  # near -FLT_MAX: (a + b) / 2 must not overflow
    if k > 3:
        rows[1, :] = rows[2, :]  # two clients send the same vector
    # Columns 0..n/4: values on a coarse grid, so most are tied.
    q = n // 4
    rows[1:, :q] = np.round(rows[1:, :q] * 2) / 2
    return rows


def trim_mean(x, trim):
    """scipy.stats.trim_mean along axis 0, in float64 (scipy's own cut rule)."""
    k = x.shape[0]
    cut = int(trim * k)
    s = np.sort(x.astype(f64), axis=0)
    return s[cut:k - cut].mean(axis=0), cut


def coord(n, seed, cases):
    rng = np.random.default_rng(seed)
    try:
        from scipy import stats
    except ImportError:
        stats = None
        refio.note("robust.py: scipy missing; trimmed mean checked against numpy only")
    for i, case in enumerate(cases):
        k, trim = int(case.split(":")[0]), float(case.split(":")[1])
        rows = adversarial_rows(rng, k, n)
        med = np.median(rows.astype(f64), axis=0).astype(f32)
        tm, cut = trim_mean(rows, trim)
        if stats is not None:
            want = stats.trim_mean(rows.astype(f64), trim, axis=0)
            assert np.allclose(want, tm, rtol=1e-15, atol=0), "trim_mean disagrees with scipy"
        refio.emit(f"rows_{i}", rows)
        refio.emit(f"median_{i}", med)
        refio.emit(f"tmean_{i}", tm.astype(f32))
        refio.emit(f"cut_{i}", np.array([cut], np.uint64))


def krum_scores(d, f):
    k = d.shape[0]
    need = k - f - 2
    return np.array([np.sort(np.delete(d[i], i))[:need].sum() for i in range(k)])


def krum(k, n, f, m, seed):
    rng = np.random.default_rng(seed)
    rows = rng.normal(0, 1, (k, n)).astype(f32)
    rows[1:1 + f, :] = rows[1 + f:, :].mean(axis=0) + f32(0.8)  # f identical poisoned vectors
    rows[k - 1, :] = f32(1e30)  # and one huge client
    x = rows.astype(f64)
    d = np.array([[((x[i] - x[j]) ** 2).sum() for j in range(k)] for i in range(k)])
    scores = krum_scores(d, f)
    order = np.lexsort((np.arange(k), scores))  # by score, then by index
    sel = order[:m]
    mean = x[sel].mean(axis=0).astype(f32)
    refio.emit("rows", rows)
    refio.emit("d", d)
    refio.emit("scores", scores)
    refio.emit("selected", sel.astype(np.uint64))
    refio.emit("mean", mean)


def clip(k, n, seed, c):
    rng = np.random.default_rng(seed)
    rows = (rng.normal(0, 1, (k, n)) * rng.uniform(0.01, 3, (k, 1))).astype(f32)
    rows[0, :] = 0
    rows[1, ::5] = f32(1e30)
    sumsq = (rows.astype(f64) ** 2).sum(axis=1)
    norm = np.sqrt(sumsq)
    s = np.where(norm > c, c / np.where(norm > 0, norm, 1), 1.0)
    scale = s.astype(f32)
    down = scale.astype(f64) > s
    scale[down] = np.nextafter(scale[down], f32(0))
    clipped = rows * scale[:, None]
    refio.emit("rows", rows)
    refio.emit("sumsq", sumsq)
    refio.emit("scale", scale)
    refio.emit("clipped", clipped)


def poison(k, n, p, seed):
    rng = np.random.default_rng(seed)
    rows = rng.normal(1.0, 0.1, (k, n)).astype(f32)
    rows[k - p:, :] = f32(50.0)  # p clients send the same poisoned vector
    honest = rows[:k - p].astype(f64)
    refio.emit("rows", rows)
    refio.emit("lo", honest.min(axis=0).astype(f32))
    refio.emit("hi", honest.max(axis=0).astype(f32))
    refio.emit("median", np.median(rows.astype(f64), axis=0).astype(f32))


def main():
    mode, a = sys.argv[1], sys.argv[2:]
    if mode == "coord":
        coord(int(a[0]), int(a[1]), a[2:])
    elif mode == "krum":
        krum(int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4]))
    elif mode == "clip":
        clip(int(a[0]), int(a[1]), int(a[2]), float(a[3]))
    elif mode == "poison":
        poison(int(a[0]), int(a[1]), int(a[2]), int(a[3]))
    else:
        raise SystemExit(f"robust.py: unknown mode {mode}")
    refio.end()


main()
