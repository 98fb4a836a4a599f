# SPDX-License-Identifier: MIT
# FedBuff: 200 asynchronous clients with random delays; a version every K accepted updates, each
# update weighted by 1/sqrt(1 + staleness); checked version by version against float64.
import os
import random
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

K = 10
MAXS = 3
N = 64
CLIENTS = 200
LR = 0.8
SCHEMA = [{'name': 'weights', 'shape': [N], 'dtype': 'F32'}]


def run():
    with e.Server() as srv:
        tok = srv.create_job({'name': 'fb', 'algorithm': 'fedbuff', 'buffer_size': K,
                              'max_staleness': MAXS, 'server_lr': LR, 'update': 'delta',
                              'tensors': SCHEMA})['token']
        st = srv.status('fb')
        check(st['clients_per_round'] == K and st['parameters']['buffer_size'] == K,
              'fedbuff status: %r' % st)
        log, lock = [], threading.Lock()
        stale409 = [0]

        def client(i):
            rng = np.random.default_rng(1000 + i)
            r = random.Random(i)
            while True:
                _, hd, _ = srv.get_model('fb', tok)
                v = int(hd['x-tributary-round'])
                time.sleep(r.random() * 0.05)
                d = {'weights': rng.standard_normal(N).astype(np.float32)}
                b = int(rng.integers(1, 20))
                s, obj, _ = srv.post_update('fb', tok, v, e.raw_body(SCHEMA, d), b, expect=None)
                if s == 202:
                    with lock:
                        log.append((obj['round'], v, b, d['weights'].astype(np.float64)))
                    return
                check(s == 409, 'client %d: %d %r' % (i, s, obj))
                with lock:
                    stale409[0] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for k in range(0, CLIENTS, 25):  # 25 at a time: arrivals overlap versions
            for t in threads[k:k + 25]:
                t.start()
            for t in threads[k:k + 25]:
                t.join(60)
        check(len(log) == CLIENTS, '%d of %d updates accepted' % (len(log), CLIENTS))
        versions = CLIENTS // K
        _, hd, _ = srv.get_model('fb', tok, '?after=%d' % (versions - 1), timeout=60)
        check(int(hd['x-tributary-round']) == versions, 'want version %d, got %s' %
              (versions, hd['x-tributary-round']))
        _, _, buf = srv.get_model('fb', tok, '?round=0')
        for vv in range(versions):
            batch = [x for x in log if x[0] == vv]
            check(len(batch) == K, 'version %d: %d updates, want %d' % (vv, len(batch), K))
            for V, v, _, _ in batch:
                check(0 <= V - v <= MAXS, 'accepted staleness %d > %d' % (V - v, MAXS))
            _, prev, _ = e.st_decode(buf)
            num = sum(b / np.sqrt(1.0 + (V - v)) * d for V, v, b, d in batch)
            ref = prev['weights'] + LR * num / sum(b for _, _, b, _ in batch)
            _, _, buf = srv.get_model('fb', tok, '?round=%d' % (vv + 1))
            e.check_model(buf, SCHEMA, {'weights': ref}, 'version %d' % (vv + 1))
        stale = sum(1 for V, v, _, _ in log if V > v)
        check(stale > 0, 'no accepted update was stale: the weighting went untested')
        # Too stale, and from the future: 409 naming the current version.
        body = e.raw_body(SCHEMA, {'weights': np.ones(N, np.float32)})
        cur = srv.status('fb')['round']
        for v in (cur - MAXS - 1, cur + 1):
            s, obj, _ = srv.post_update('fb', tok, v, body, 1, expect=409)
            check(obj.get('round') == cur, '409 for version %d: %r' % (v, obj))
        print('%d updates (%d stale, weighted 1/sqrt(1+s)), %d versions of %d, %d refused '
              'as too stale (409) on the way' % (CLIENTS, stale, versions, K, stale409[0]))


if __name__ == '__main__':
    e.main(run)
