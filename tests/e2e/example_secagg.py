#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# `make example ARGS=--secagg` in small: the digits example's secure run (SecAgg+, 10 clients,
# 3 rounds) against this build's server. The example checks itself and exits 1 otherwise: every
# round's model against the same quantised FedAvg in numpy (exact integer sums, one
# dequantisation), the evaluated accuracy against the whole test split, the round's config at
# every client. Here also: that every round's model equals the quantised reference bit for bit
# (max|dw| 0: the secure sum is exact), that plain FedAvg is shown beside it, and that --secagg
# refuses the Flower-style client (its updates are plain).
"""The digits example with --secagg, in small. Skips (77) when /usr/bin/python3 has no torch."""
import os
import re
import subprocess
import sys

from e2e_common import BIN, check, log, main

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, "..", "..", "examples", "pytorch-digits", "train.py")

try:
    import torch  # noqa: F401
    import sklearn  # noqa: F401
except ImportError as e:
    print("SKIP: no torch or sklearn for %s (%s): make example installs them" %
          (sys.executable, e), flush=True)
    sys.exit(77)

ROW = re.compile(r"^ +(\d+)  \S+ +\S+ +([0-9.]+) +\S+ +([0-9.]+) +([0-9.]+) +([0-9.e+-]+) +"
                 r"([0-9.e+-]+) +(\d+) +[0-9.]+ +([0-9.]+) +([0-9.e+-]+)$", re.M)


def run():
    r = subprocess.run([sys.executable, TRAIN, "--tributary", BIN, "--secagg", "--rounds", "3",
                        "--clients", "10", "--secagg-neighbours", "4", "--secagg-threshold", "2",
                        "--min-accuracy", "0.5"], capture_output=True, text=True, timeout=150)
    log(r.stdout[-3000:])
    check(r.returncode == 0, "train.py --secagg exited %d:\n%s%s" %
          (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
    rows = ROW.findall(r.stdout)
    check(len(rows) == 3, "want 3 round rows, got %d:\n%s" % (len(rows), r.stdout[-2000:]))
    for rnd, ev, whole, ref, dw, da, clients, plain, vs in rows:
        check(float(dw) == 0.0 and float(da) == 0.0,
              "round %s: the secure model is not the quantised FedAvg bit for bit (max|dw| %s, "
              "avg err %s)" % (rnd, dw, da))
        check(int(clients) == 10, "round %s: %s clients evaluated" % (rnd, clients))
        check(0 < float(vs) < 1e-3, "round %s: secure vs plain FedAvg %s: not the "
              "quantisation's size" % (rnd, vs))
    check("secure aggregation: SecAgg+" in r.stdout and "0 of " in r.stdout,
          "no secure-aggregation lines or values clipped:\n%s" % r.stdout[-1500:])
    r = subprocess.run([sys.executable, TRAIN, "--tributary", BIN, "--secagg", "--mode",
                        "flower"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "--secagg runs the native loop only" in r.stderr,
          "--secagg --mode flower: exit %d %r" % (r.returncode, r.stderr[-300:]))


if __name__ == "__main__":
    main(run)
