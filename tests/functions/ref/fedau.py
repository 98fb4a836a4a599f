# SPDX-License-Identifier: MIT
"""numpy reference for core/trib_fedau.c: FedAU's weights, round by round as IBM/fedau does.

usage:
  fedau.py N T K SEED     part (N x T, u8: 1 = took part), weight (N x T, f8: NaN = sat out)
"""
import sys

import numpy as np

import refio


def weights(part, k):
    """IBM/fedau main.py, weighting_method 'adaptive', over every client and round."""
    n, t = part.shape
    w = np.full((n, t), np.nan)
    for c in range(n):
        count, intervals = 0, []
        for r in range(t):
            if part[c, r]:
                w[c, r] = np.mean(intervals) if intervals else 1.0
                intervals.append(count + 1)
                count = 0
            else:
                count += 1
                if count >= k:
                    intervals.append(count)
                    count = 0
    return w


def main():
    n, t, k, seed = (int(a) for a in sys.argv[1:5])
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.9, n)
    p[0] = 1.0                       # every round
    p[1] = 0.0                       # never
    part = (rng.uniform(0, 1, (n, t)) < p[:, None]).astype(np.uint64)
    part[2, :] = 0
    part[2, t - 1] = 1               # only the last round: many cutoffs first
    w = weights(part, k)
    refio.emit("part", part)
    refio.emit("weight", w)
    refio.end()


main()
