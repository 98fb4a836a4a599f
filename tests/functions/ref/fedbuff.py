# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_fedbuff.c: an asynchronous FedBuff run, event by event.

usage: fedbuff.py CLIENTS K MAX_STALENESS SUBMISSIONS N SEED
CLIENTS clients with random (log-normal) training delays fetch the current version, train, and
submit a delta naming the version they trained from; the server keeps the FedBuff rules of
functions/fn_fedbuff.h (float64 here). A few submissions name a version from the future.
Arrays: tf, base, deltas, status (0 accepted, 1 too stale, 2 invalid), staleness, weight, last,
x0, x (model after the last version), versions (scalar), lr (scalar).
"""
import heapq
import math
import sys

import numpy as np

import refio


def main():
    clients, k, max_s, subs, n, seed = (int(v) for v in sys.argv[1:7])
    rng = np.random.default_rng(seed)
    lr = 0.7
    x0 = rng.normal(0, 1, n).astype(np.float32)
    x = x0.astype(np.float64)
    version, count, base_sum = 0, 0, 0.0
    acc = np.zeros(n)
    mean_delay = rng.uniform(0.5, 2.0, clients)  # fast and slow clients
    events = [(rng.lognormal(0, 0.8) * mean_delay[c], c, 0) for c in range(clients)]
    heapq.heapify(events)
    tf, base, deltas, status, stal, weight, last = [], [], [], [], [], [], []
    for i in range(subs):
        t, c, trained_from = heapq.heappop(events)
        if i % 97 == 50:
            trained_from = version + 1  # a client naming a version that does not exist yet
        b = float(rng.integers(1, 101))
        d = rng.normal(0, 0.1, n).astype(np.float32)
        tf.append(trained_from)
        base.append(b)
        deltas.append(d)
        st, s, w, closes = 0, 0, 0.0, 0
        if trained_from > version:
            st = 2
        elif version - trained_from > max_s:
            st, s = 1, version - trained_from
        else:
            s = version - trained_from
            w = (1.0 / math.sqrt(1.0 + s)) * b
            acc += w * d.astype(np.float64)
            base_sum += b
            count += 1
            if count == k:
                x += lr * acc / base_sum
                version += 1
                count, base_sum, closes = 0, 0.0, 1
                acc[:] = 0
        status.append(st)
        stal.append(s)
        weight.append(w)
        last.append(closes)
        # The client fetches the version current now and trains again.
        heapq.heappush(events, (t + rng.lognormal(0, 0.8) * mean_delay[c], c, version))
    refio.emit("tf", np.array(tf, np.uint64))
    refio.emit("base", np.array(base))
    refio.emit("deltas", np.array(deltas, np.float32))
    refio.emit("status", np.array(status, np.uint64))
    refio.emit("staleness", np.array(stal, np.uint64))
    refio.emit("weight", np.array(weight))
    refio.emit("last", np.array(last, np.uint64))
    refio.emit("x0", x0)
    refio.emit("x", x.astype(np.float32))
    refio.scalar("versions", version)
    refio.scalar("lr", lr)
    refio.note(f"fedbuff.py: {version} versions, {status.count(1)} stale, "
               f"{status.count(2)} invalid, max staleness {max(stal)}")
    refio.end()


main()
