# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_frl.c: FRL's vote over rankings and the global ranking.

usage:
  frl.py K N SEED     K rankings of N (each the argsort of random scores, with many ties in
                      the votes when N is small), their votes and the stable argsort of them
"""
import sys

import numpy as np

import refio


def main():
    k, n, seed = (int(a) for a in sys.argv[1:4])
    rng = np.random.default_rng(seed)
    # Scores on a coarse grid so clients agree often and votes tie.
    ranks = np.stack([np.argsort(rng.integers(0, 4, n), kind="stable") for _ in range(k)])
    votes = np.zeros(n, dtype=np.uint64)
    for p in ranks:
        votes[p] += np.arange(n, dtype=np.uint64)   # FRL's server: the position is the vote
    glob = np.argsort(votes, kind="stable")
    refio.emit("ranks", ranks.astype("<i4"))
    refio.emit("votes", votes.astype("<u4"))
    refio.emit("global", glob.astype("<i4"))
    refio.end()


main()
