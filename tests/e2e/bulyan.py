# SPDX-License-Identifier: MIT
# Bulyan through the HTTP path: 4 poisoned of 20 clients, against numpy (recursive Krum, then a
# trimmed mean cutting f from each end); near the honest mean and far from the poisoned one,
# where FedAvg is not; bad f, m and round sizes get 400s naming the minimum.
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

K = 20
BAD = 4
SCHEMA = [{'name': 'w', 'shape': [30, 40], 'dtype': 'F32'},
          {'name': 'b', 'shape': [333], 'dtype': 'F32'}]


def reference(rows, f):
    """fn_bulyan.h's definition in float64 (tests/functions/ref/bulyan.py has the same)."""
    x = np.asarray(rows, np.float64)
    k = len(x)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    theta = k - 2 * f
    left, sel = list(range(k)), []
    while len(sel) < theta:
        q = max(1, len(left) - f - 2)
        scores = [np.sort([d[i, j] for j in left if j != i])[:q].sum() for i in left]
        best = min(range(len(left)), key=lambda a: (scores[a], left[a]))
        sel.append(left.pop(best))
    s = np.sort(x[sel], axis=0)
    return s[f:theta - f].mean(axis=0)


def post_all(srv, name, tok, rows):
    for i, x in enumerate(rows):
        t = e.unflatten(SCHEMA, x)
        if i % 3 == 1:
            body, ct = e.st_encode(t, order=['b', 'w']), 'application/x-safetensors'
        else:
            body, ct = e.raw_body(SCHEMA, t), 'application/octet-stream'
        srv.post_update(name, tok, 0, body, samples=1 + i, ctype=ct)
    _, _, buf = srv.get_model(name, tok, '?after=0', timeout=60)
    _, got, _ = e.st_decode(buf)
    return e.flatten(SCHEMA, got).astype(np.float64)


def bad(srv, spec, field, want):
    st, obj, _ = srv.json('POST', '/v1/jobs', dict({'name': 'bad', 'params': 10}, **spec),
                          token=srv.admin)
    err = (obj or {}).get('error', '')
    check(st == 400 and field in err and want in err,
          '%r: want 400 naming %s and %r, got %d %r' % (spec, field, want, st, obj))
    print('400 for %r: %s' % (spec, err))


def run():
    rng = np.random.default_rng(7)
    honest = [e.flatten(SCHEMA, e.random_model(rng, SCHEMA)) for _ in range(K - BAD)]
    poison = np.full(honest[0].shape, 100.0, np.float32)
    rows = honest[:5] + [poison] * BAD + honest[5:]
    hmean = np.mean(np.asarray(honest, np.float64), axis=0)
    spread = float(np.max(np.std(np.asarray(honest, np.float64), axis=0)))
    with e.Server(arena_mb=128) as srv:
        tok = srv.create_job({'name': 'bul', 'clients_per_round': K, 'algorithm': 'bulyan',
                              'f': BAD, 'tensors': SCHEMA})['token']
        g = post_all(srv, 'bul', tok, rows)
        ref = reference(rows, BAD)
        err = float(np.max(np.abs(g - ref)))
        check(err <= 1e-5 * max(1.0, float(np.max(np.abs(ref)))),
              'bulyan: max error %.3g against numpy' % err)
        to_honest = float(np.max(np.abs(g - hmean)))
        to_poison = float(np.min(np.abs(g - 100.0)))
        check(to_honest < spread and to_poison > 90,
              'bulyan: %.3g from the honest mean (spread %.3g), %.3g from the poison' %
              (to_honest, spread, to_poison))
        print('bulyan f=4 of 20: matches numpy (max error %.2g); %.3g from the honest mean '
              '(honest spread %.3g), >= %.1f from the poisoned value' %
              (err, to_honest, spread, to_poison))
        # Default f: the most 20 clients allow, floor((20 - 3) / 4) = 4, shown and pinned.
        tok2 = srv.create_job({'name': 'bul2', 'clients_per_round': K, 'algorithm': 'bulyan',
                               'tensors': SCHEMA})['token']
        par = srv.status('bul2').get('parameters', {})
        check(par.get('f') == 4 and par.get('algorithm') == 'bulyan' and 'm' not in par,
              'bulyan default f: want 4 shown (and no m), got %r' % par)
        g2 = post_all(srv, 'bul2', tok2, rows)
        check(np.array_equal(g2, g), 'default f 4 gave a different model from f 4')
        fa = srv.create_job({'name': 'avg', 'clients_per_round': K, 'tensors': SCHEMA})['token']
        ga = post_all(srv, 'avg', fa, rows)
        check(float(np.max(np.abs(ga - hmean))) > 10, 'fedavg was not pulled by the poison')
        print('fedavg on the same updates: %.3g from the honest mean' %
              float(np.max(np.abs(ga - hmean))))
        m = srv.metrics()
        check(m['tributary_arena_slots'] == 0, 'arena slots left: %r' % m['tributary_arena_slots'])
        bad(srv, {'algorithm': 'bulyan', 'clients_per_round': K, 'f': 5}, 'f', '23')
        bad(srv, {'algorithm': 'bulyan', 'clients_per_round': 6}, 'f', '7')
        bad(srv, {'algorithm': 'bulyan', 'clients_per_round': K, 'f': 0}, 'f', '>= 1')
        bad(srv, {'algorithm': 'bulyan', 'clients_per_round': K, 'm': 3}, 'm', 'krum only')
        bad(srv, {'algorithm': 'bulyan', 'clients_per_round': K, 'f': -1}, 'f', 'non-negative')
        bad(srv, {'algorithm': 'bulyan', 'clients_per_round': K, 'weighted': True}, 'weighted',
            'unweighted')
        bad(srv, {'algorithm': 'bulyan', 'clients_per_round': 10, 'min_clients': 6,
                  'round_timeout_s': 30}, 'f', 'min_clients 6')


if __name__ == '__main__':
    e.main(run)
