# SPDX-License-Identifier: MIT
# scaffold through the HTTP path: clients send their model delta (w, b) and their control delta
# (c.w, c.b); each version's model file carries x and c; x += server_lr * mean(dy) and
# c += |S|/N * mean(dc) against numpy over 3 rounds, then kill -9 and a 4th round from the stored
# x and c; bad specs get 400s naming the field.
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [6, 4], 'dtype': 'F32'}, {'name': 'b', 'shape': [3], 'dtype': 'F32'}]
FULL = SCHEMA + [dict(t, name='c.' + t['name']) for t in SCHEMA]  # what the job keeps
K, N, LR = 3, 10, 0.5


def kill9(srv):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.start()


def bad(srv, spec, field):
    st, obj, _ = srv.json('POST', '/v1/jobs', dict({'name': 'bad', 'clients_per_round': K,
                                                    'tensors': SCHEMA}, **spec), token=srv.admin)
    err = (obj or {}).get('error', '')
    check(st == 400 and field in err, '%r: want 400 naming %s, got %d %r' % (spec, field, st, obj))
    print('400 for %r: %s' % (spec, err))


def run():
    rng = np.random.default_rng(11)
    half = sum(e.schema_elems(SCHEMA))
    x = np.zeros(half)
    c = np.zeros(half)
    with e.Server(arena_mb=64) as srv:
        tok = srv.create_job({'name': 'sc', 'clients_per_round': K, 'algorithm': 'scaffold',
                              'scaffold_clients': N, 'server_lr': LR, 'tensors': SCHEMA})['token']
        par = srv.status('sc')['parameters']
        check(par.get('scaffold_clients') == N and par.get('update') == 'delta' and
              not par.get('weighted'), repr(par))
        for r in range(4):
            if r == 3:
                kill9(srv)
                print('kill -9 after 3 rounds')
            dy = [rng.normal(0, 1, half).astype(np.float32) for _ in range(K)]
            dc = [rng.normal(0, 1, half).astype(np.float32) for _ in range(K)]
            for i in range(K):
                flat = np.concatenate([dy[i], dc[i]])
                t = e.unflatten(FULL, flat)
                if i == 1:
                    body, ct = e.raw_body(FULL, t), 'application/octet-stream'
                else:
                    body, ct = e.st_encode(t, order=['c.b', 'w', 'c.w', 'b']), \
                        'application/x-safetensors'
                srv.post_update('sc', tok, r, body, samples=100 * (i + 1), ctype=ct)
            x = x + LR * np.mean(np.asarray(dy, np.float64), axis=0)
            c = c + (K / N) * np.mean(np.asarray(dc, np.float64), axis=0)
            _, _, buf = srv.get_model('sc', tok, '?after=%d' % r, timeout=60)
            _, got, _ = e.st_decode(buf)
            check(sorted(got) == ['b', 'c.b', 'c.w', 'w'], 'model tensors: %r' % sorted(got))
            g = e.flatten(FULL, got).astype(np.float64)
            ex = float(np.max(np.abs(g[:half] - x)))
            ec = float(np.max(np.abs(g[half:] - c)))
            check(ex <= 1e-5 and ec <= 1e-5, 'round %d: x error %.3g, c error %.3g' % (r, ex, ec))
            print('round %d: x and c match numpy (max errors %.2g, %.2g)' % (r, ex, ec))
        # A body without the control delta is the wrong shape: 422 (the gateway's), naming it.
        st, _, b = srv.request('POST', '/v1/jobs/sc/updates',
                               e.raw_body(SCHEMA, e.unflatten(SCHEMA, np.zeros(half, np.float32))),
                               {'Content-Type': 'application/octet-stream',
                                'X-Tributary-Round': '4'}, tok)
        check(st == 422 and b'needs 216' in b, 'an update without c: want 422, got %d %r' %
              (st, b[:200]))
        bad(srv, {'algorithm': 'scaffold'}, 'scaffold_clients')
        bad(srv, {'algorithm': 'scaffold', 'scaffold_clients': 2}, 'scaffold_clients')
        bad(srv, {'algorithm': 'scaffold', 'scaffold_clients': N, 'update': 'weights'}, 'update')
        bad(srv, {'algorithm': 'scaffold', 'scaffold_clients': N, 'weighted': True}, 'weighted')
        bad(srv, {'algorithm': 'scaffold', 'scaffold_clients': N,
                  'tensors': [{'name': 'c.w', 'shape': [2], 'dtype': 'F32'}]}, 'c.')
        bad(srv, {'algorithm': 'fedavg', 'scaffold_clients': N}, 'scaffold_clients')
        # "params": n is the tensor "weights", and c its twin, both in version 0's file.
        sp = srv.create_job({'name': 'sp', 'clients_per_round': K, 'algorithm': 'scaffold',
                             'scaffold_clients': N, 'params': 5})['token']
        _, _, buf = srv.get_model('sp', sp)
        _, got, _ = e.st_decode(buf)
        check(sorted(got) == ['c.weights', 'weights'] and
              all(np.all(v == 0) and v.shape == (5,) for v in got.values()),
              'params 5 under scaffold: %r' % got)
        print('"params": 5 is served as weights and c.weights, zeros at version 0')


if __name__ == '__main__':
    e.main(run)
