# SPDX-License-Identifier: MIT
# Several rounds through a tree of fan-in 2 (7 clients: 4 leaves), concurrent clients, long polls.
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

JOB = 'multi'
CPR = 7
ROUNDS = 3
SCHEMA = [
        {'name': 'emb', 'shape': [50, 8], 'dtype': 'F32'},
        {'name': 'head', 'shape': [8], 'dtype': 'F32'},
        {'name': 'scale', 'shape': [], 'dtype': 'F32'},
    ]


class Poll(threading.Thread):
    """GET ?after=R in the background; result is (status, headers, body) or an exception."""

    def __init__(self, srv, tok, query):
        super().__init__(daemon=True)
        self.srv, self.tok, self.query = srv, tok, query
        self.result = None

    def run(self):
        try:
            self.result = self.srv.get_model(JOB, self.tok, self.query, expect=None,
                                             timeout=90)
        except Exception as ex:  # reported by the main thread
            self.result = ex

    def get(self, what):
        self.join(60)
        check(not self.is_alive(), '%s: long poll still waiting after 60 s' % what)
        check(not isinstance(self.result, Exception), '%s: %r' % (what, self.result))
        return self.result


def body_for(i, m):
    if i % 3 == 0:
        return e.raw_body(SCHEMA, m), 'application/octet-stream'
    order = [t['name'] for t in SCHEMA]
    order = order[i % 3:] + order[:i % 3]
    return e.st_encode(m, order=order), 'application/x-safetensors'


def run():
    rng = np.random.default_rng(11)
    with e.Server() as srv:
        job = srv.create_job({'name': JOB, 'clients_per_round': CPR, 'fan_in': 2,
                              'tensors': SCHEMA})
        tok = job['token']
        s = srv.status(JOB)
        check(s['fan_in'] == 2 and s['clients_per_round'] == CPR and s['params'] == 409,
              'status %r' % s)
        refs = [e.zeros_model(SCHEMA)]
        etags = set()
        early = None  # an update for the next round, sent before the model was written
        for r in range(ROUNDS):
            polls = [Poll(srv, tok, '?after=%d' % r) for _ in range(3)]
            polls.append(Poll(srv, tok, '?after=%d&timeout=30' % r))
            for p in polls:
                p.start()
            ups = [early] if early else []
            samples = [1 + (r * 7 + i * 13) % 50 for i in range(CPR)]
            models = [e.random_model(rng, SCHEMA, scale=0.5 + i) for i in range(CPR)]
            start = len(ups)
            # Updates 1..6 (or 2..6) one after another, from fresh connections.
            for i in range(start, CPR - 1):
                b, ct = body_for(i, models[i])
                _, obj, _ = srv.post_update(JOB, tok, r, b, samples[i], ct)
                check(obj == {'round': r, 'received': i + 1}, 'round %d update %d: %r' %
                      (r, i, obj))
                ups.append((samples[i], models[i]))
            st = srv.status(JOB)
            check(st['round'] == r and st['received'] == CPR - 1 and st['model_round'] == r,
                  'status before the last update of round %d: %r' % (r, st))
            # A short long poll times out with 304 and names the current version.
            t0 = time.monotonic()
            code, hd, b = srv.get_model(JOB, tok, '?after=%d&timeout=1' % r, expect=304)
            check(hd.get('x-tributary-round') == str(r), '304 names version %r, want %d' %
                  (hd.get('x-tributary-round'), r))
            check(time.monotonic() - t0 >= 0.9, 'timeout=1 answered after %.2f s' %
                  (time.monotonic() - t0))
            for p in polls:
                check(p.is_alive(), 'round %d: a long poll returned before the round closed: '
                      '%r' % (r, p.result))
            # The last update closes the round; the next one is open at once.
            i = CPR - 1
            b, ct = body_for(i, models[i])
            _, obj, _ = srv.post_update(JOB, tok, r, b, samples[i], ct)
            check(obj == {'round': r, 'received': CPR}, 'round %d last update: %r' % (r, obj))
            ups.append((samples[i], models[i]))
            early = None
            if r + 1 < ROUNDS:
                m = e.random_model(rng, SCHEMA, scale=3.0)
                b, ct = body_for(0, m)
                _, obj, _ = srv.post_update(JOB, tok, r + 1, b, 17, ct)
                check(obj == {'round': r + 1, 'received': 1}, 'first update of round %d: %r' %
                      (r + 1, obj))
                early = (17, m)
            ref = e.weighted_mean(ups)
            refs.append(ref)
            for k, p in enumerate(polls):
                code, hd, b = p.get('round %d poll %d' % (r, k))
                check(code == 200, 'round %d poll %d: %d %r' % (r, k, code, b[:200]))
                check(hd.get('x-tributary-round') == str(r + 1), 'poll version %r, want %d' %
                      (hd.get('x-tributary-round'), r + 1))
                e.check_model(b, SCHEMA, ref, 'round %d model (poll %d)' % (r, k))
                etags.add(hd.get('etag'))
        check(len(etags) == ROUNDS and None not in etags, 'ETags per version: %r' % etags)

        # Every version stays readable; the latest is served for an old ?after.
        for v in range(ROUNDS + 1):
            _, hd, b = srv.get_model(JOB, tok, '?round=%d' % v)
            check(hd.get('x-tributary-round') == str(v), '?round=%d served %r' %
                  (v, hd.get('x-tributary-round')))
            e.check_model(b, SCHEMA, refs[v], 'model ?round=%d' % v)
        srv.get_model(JOB, tok, '?round=%d' % (ROUNDS + 1), expect=404)
        _, hd, b = srv.get_model(JOB, tok, '?after=0')
        check(hd.get('x-tributary-round') == str(ROUNDS), '?after=0 served %r' %
              hd.get('x-tributary-round'))
        _, hd, _ = srv.get_model(JOB, tok, '?after=%d&timeout=0' % ROUNDS, expect=304)
        check(hd.get('x-tributary-round') == str(ROUNDS), '304 version %r' %
              hd.get('x-tributary-round'))
        st = srv.status(JOB)
        check(st['round'] == ROUNDS and st['model_round'] == ROUNDS and st['received'] == 0 and
              st['accepted_total'] == ROUNDS * CPR, 'final status %r' % st)
        m = srv.metrics()
        check(m['tributary_round_duration_seconds_count'] == ROUNDS, 'round count %r' %
              m['tributary_round_duration_seconds_count'])
        check(m['tributary_job_round{job="%s"}' % JOB] == ROUNDS, 'job_round metric')

        # Clients in parallel: all of a round's updates at once, each on its own connection.
        r = ROUNDS
        models = [e.random_model(rng, SCHEMA) for _ in range(CPR)]
        got = [None] * CPR

        def client(i):
            b, ct = body_for(i, models[i])
            try:
                got[i] = srv.post_update(JOB, tok, r, b, i + 1, ct, expect=None)
            except Exception as ex:
                got[i] = ex
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CPR)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        check(all(isinstance(g, tuple) and g[0] == 202 for g in got), 'parallel: %r' % got)
        check(sorted(g[1]['received'] for g in got) == list(range(1, CPR + 1)),
              'parallel received counts %r' % [g[1] for g in got])
        _, hd, b = srv.get_model(JOB, tok, '?after=%d&timeout=30' % r)
        e.check_model(b, SCHEMA, e.weighted_mean([(i + 1, models[i]) for i in range(CPR)]),
                      'parallel round model')


if __name__ == '__main__':
    e.main(run)
