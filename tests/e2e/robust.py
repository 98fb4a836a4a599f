# SPDX-License-Identifier: MIT
# Exact robust rules (median, trimmed mean, Krum, Multi-Krum) over 20 clients of which 4 are
# poisoned: against numpy, inside the honest clients' range, where FedAvg is not.
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

K = 20
BAD = 4
SCHEMA = [{'name': 'w', 'shape': [40, 50], 'dtype': 'F32'},
          {'name': 'b', 'shape': [777], 'dtype': 'F32'}]


def reference(rule, rows, trim=0.0, f=0, m=1):
    x = np.asarray(rows, np.float64)
    if rule == 'median':
        return np.median(x, axis=0)
    if rule == 'trimmed_mean':
        c = int(math.floor(trim * len(x)))
        s = np.sort(x, axis=0)
        return s[c:len(x) - c].mean(axis=0)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    scores = []
    for i in range(len(x)):
        others = np.sort(np.delete(d[i], i))
        scores.append(others[:len(x) - f - 2].sum())
    order = sorted(range(len(x)), key=lambda i: (scores[i], i))
    return x[order[:m]].mean(axis=0)


def run():
    rng = np.random.default_rng(99)
    honest = [e.flatten(SCHEMA, e.random_model(rng, SCHEMA)) for _ in range(K - BAD)]
    poison = np.full(honest[0].shape, 100.0, np.float32)
    rows = honest[:8] + [poison] * BAD + honest[8:]  # the poisoned ones in the middle
    lo = np.min(np.asarray(honest), axis=0)
    hi = np.max(np.asarray(honest), axis=0)
    cases = [('median', {}), ('trimmed_mean', {'trim': 0.2}), ('krum', {'f': BAD, 'm': 1}),
             ('krum', {'f': BAD, 'm': 5}), ('fedavg', {})]
    with e.Server(arena_mb=128) as srv:
        for idx, (rule, extra) in enumerate(cases):
            name = 'r%d' % idx
            tok = srv.create_job(dict({'name': name, 'clients_per_round': K, 'algorithm': rule,
                                       'tensors': SCHEMA}, **extra))['token']
            for i, x in enumerate(rows):
                t = e.unflatten(SCHEMA, x)
                if i % 3 == 1:
                    body, ct = e.st_encode(t, order=['b', 'w']), 'application/x-safetensors'
                else:
                    body, ct = e.raw_body(SCHEMA, t), 'application/octet-stream'
                srv.post_update(name, tok, 0, body, samples=1 + i, ctype=ct)
            _, _, buf = srv.get_model(name, tok, '?after=0', timeout=60)
            _, got, _ = e.st_decode(buf)
            g = e.flatten(SCHEMA, got).astype(np.float64)
            inside = bool(np.all(g >= lo - 1e-6) and np.all(g <= hi + 1e-6))
            if rule == 'fedavg':
                check(not inside, 'fedavg stayed inside the honest range: the poison is too weak')
                print('fedavg: outside the honest range (max %.2f), as expected' % g.max())
                continue
            ref = reference(rule, rows, **{k: v for k, v in extra.items()})
            err = float(np.max(np.abs(g - ref)))
            check(err <= 1e-5 * max(1.0, float(np.max(np.abs(ref)))),
                  '%s %r: max error %.3g against numpy' % (rule, extra, err))
            check(inside, '%s %r: the model leaves the honest range' % (rule, extra))
            print('%-13s %-16s matches numpy (max error %.2g), inside the honest range' %
                  (rule, extra, err))
        m = srv.metrics()
        check(m['tributary_arena_slots'] == 0, 'arena slots left: %r' % m['tributary_arena_slots'])
        # Bad parameters name the field.
        for spec, field in (({'algorithm': 'krum', 'f': 9}, 'f'),
                            ({'algorithm': 'trimmed_mean', 'trim': 0.5}, 'trim'),
                            ({'algorithm': 'median', 'm': 2}, 'm'),
                            ({'algorithm': 'median', 'clip_norm': 1}, 'clip_norm')):
            st, obj, _ = srv.json('POST', '/v1/jobs', dict({'name': 'bad', 'clients_per_round': K,
                                                            'params': 10}, **spec),
                                  token=srv.admin)
            check(st == 400 and field in obj.get('error', ''),
                  '%r: want 400 naming %s, got %d %r' % (spec, field, st, obj))


if __name__ == '__main__':
    e.main(run)
