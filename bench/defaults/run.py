#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Server-optimiser defaults on the PyTorch digits example: final accuracy per (rule, eta, mu).
"""Which server-optimiser defaults work: the digits example's non-IID split (20 clients, 2-3
classes each, one local epoch of SGD per round), with the server step of docs/ALGORITHMS.md
(Reddi et al. 2021, no bias correction, v starting at tau^2) applied in numpy to the round's
sample-weighted mean delta, for a grid of server learning rates. In-process: the server's own
steps are checked against the same formulas by tests/e2e/algorithms.py.

    /usr/bin/python3 bench/defaults/run.py [--rounds 20] [--seeds 3]
"""
import argparse
import importlib.util
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, '..', '..', 'examples', 'pytorch-digits', 'train.py')


def load_example():
    spec = importlib.util.spec_from_file_location('digits_train', TRAIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def step(kind, p, x, d, st):
    """One server step on float64 dicts; st keeps m and v."""
    out = {}
    for k in x:
        if kind == 'fedavg':
            out[k] = x[k] + p['server_lr'] * d[k]
            continue
        if kind == 'fedavgm':
            st.setdefault('m', {})[k] = p['momentum'] * st.get('m', {}).get(k, 0) + d[k]
            out[k] = x[k] + p['server_lr'] * st['m'][k]
            continue
        b1, b2, tau = p['beta1'], p['beta2'], p['tau']
        m = b1 * st.setdefault('m', {}).get(k, 0) + (1 - b1) * d[k]
        v = st.setdefault('v', {}).get(k, np.full_like(d[k], tau * tau))
        dd = d[k] * d[k]
        if kind == 'fedadagrad':
            v = v + dd
        elif kind == 'fedadam':
            v = b2 * v + (1 - b2) * dd
        else:
            v = v - (1 - b2) * dd * np.sign(v - dd)
        st['m'][k], st['v'][k] = m, v
        out[k] = x[k] + p['server_lr'] * m / (np.sqrt(v) + tau)
    return out


def run(ex, args, kind, p, seed):
    sys.argv = [TRAIN, '--rounds', str(args.rounds), '--seed', str(seed)]
    a = ex.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    slices, x_te, y_te = ex.load_data(a.clients, a.seed)
    tr = ex.Trainer(a, slices)
    x = {k: v.astype(np.float64) for k, v in
         ex.to_numpy(ex.make_model(a.hidden, a.activation).state_dict()).items()}
    st = {}
    for r in range(a.rounds):
        ups = [tr.train({k: v.astype(np.float32) for k, v in x.items()}, i, r)
               for i in range(a.clients)]
        mean = ex.fedavg([(ex.to_numpy(s), n) for s, n in ups])
        d = {k: mean[k].astype(np.float64) - x[k] for k in x}
        x = step(kind, p, x, d, st)
    return tr.accuracy({k: v.astype(np.float32) for k, v in x.items()}, x_te, y_te)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=20)
    ap.add_argument('--seeds', type=int, default=3)
    args = ap.parse_args()
    ex = load_example()
    adaptive = {'beta1': 0.9, 'beta2': 0.99, 'tau': 1e-3}
    grid = [('fedavg', {'server_lr': 1.0})]
    grid += [('fedavgm', {'server_lr': lr, 'momentum': mu})
             for lr, mu in ((1.0, 0.9), (0.3, 0.9), (0.1, 0.9), (1.0, 0.5))]
    grid += [(k, dict(adaptive, server_lr=lr)) for k in ('fedadagrad', 'fedadam', 'fedyogi')
             for lr in (1.0, 0.3, 0.1, 0.03, 0.01)]
    print('final test accuracy after %d rounds, mean (min-max) over seeds 0..%d' %
          (args.rounds, args.seeds - 1))
    print('%-11s %-9s %-8s %s' % ('algorithm', 'server_lr', 'momentum', 'accuracy'))
    for kind, p in grid:
        accs = [run(ex, args, kind, p, s) for s in range(args.seeds)]
        print('%-11s %-9g %-8s %.3f (%.3f-%.3f)' % (kind, p['server_lr'],
                                                     p.get('momentum', ''), np.mean(accs),
                                                     min(accs), max(accs)), flush=True)


if __name__ == '__main__':
    main()
