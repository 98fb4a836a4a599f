# SPDX-License-Identifier: MIT
# Deadlines: round_timeout_s closes a round with >= min_clients updates; fewer, it waits; 409 after.
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

P = 500
SCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]


def send(srv, job, tok, rnd, rng, ups, expect=202):
    i = len(ups)
    m = {'weights': (rng.standard_normal(P) * (1 + i)).astype(np.float32)}
    w = 2 + i * 3
    st, obj, _ = srv.post_update(job, tok, rnd, e.raw_body(SCHEMA, m), w, expect=expect)
    if st == 202:
        ups.append((w, m))
    return obj


def deadline_counter(srv):
    return srv.metrics()['tributary_rounds_closed_at_deadline_total']


def run():
    rng = np.random.default_rng(9)
    with e.Server() as srv:
        # Field checks first: min_clients above clients_per_round, a zero timeout.
        srv.create_job({'name': 'bad1', 'clients_per_round': 3, 'min_clients': 4,
                        'params': P}, expect=400)
        srv.create_job({'name': 'bad2', 'clients_per_round': 3, 'round_timeout_s': 0,
                        'params': P}, expect=400)
        srv.create_job({'name': 'bad3', 'clients_per_round': 3, 'min_clients': 0,
                        'params': P}, expect=400)
        tok = srv.create_job({'name': 'dl', 'clients_per_round': 10, 'min_clients': 3,
                              'round_timeout_s': 1, 'params': P})['token']
        s = srv.status('dl')
        check(s['min_clients'] == 3 and s['round_timeout_s'] == 1, 'status %r' % s)

        # Round 0: 2 updates, past the deadline: fewer than min_clients, it waits.
        ups = []
        send(srv, 'dl', tok, 0, rng, ups)
        send(srv, 'dl', tok, 0, rng, ups)
        time.sleep(2)
        s = srv.status('dl')
        check(s['round'] == 0 and s['received'] == 2 and s['model_round'] == 0,
              'with 2 of min 3 updates, 2 s past a 1 s deadline: status %r' % s)
        check(deadline_counter(srv) == 0, 'deadline counter before any close')
        # The 3rd update: min_clients reached after the deadline, it closes at once.
        t0 = time.monotonic()
        send(srv, 'dl', tok, 0, rng, ups)
        _, _, b = srv.get_model('dl', tok, '?after=0&timeout=10')
        took = time.monotonic() - t0
        e.check_model(b, SCHEMA, e.weighted_mean(ups), 'round 0 closed at the deadline')
        check(took < 5, 'round 0 took %.1f s to close after its 3rd update' % took)
        e.log('round 0: closed %.2f s after its 3rd update' % took)
        check(deadline_counter(srv) == 1, 'rounds_closed_at_deadline_total %r, want 1' %
              deadline_counter(srv))
        s = srv.status('dl')
        check(s['round'] == 1 and s['model_round'] == 1 and s['received'] == 0,
              'after the deadline close: status %r' % s)
        # A late update for round 0: 409 with the current round.
        obj = send(srv, 'dl', tok, 0, rng, [], expect=409)
        check(obj and obj.get('round') == 1, '409 body %r, want "round": 1' % obj)

        # Round 1: 6 updates (>= min_clients) within the deadline: closes at the deadline
        # with those 6, without waiting for 10 (planned fan-in 4: leaf 0 full, leaf 1 cut
        # at 2 of its 4).
        ups = []
        t0 = time.monotonic()
        for _ in range(6):
            send(srv, 'dl', tok, 1, rng, ups)
        _, _, b = srv.get_model('dl', tok, '?after=1&timeout=10')
        took = time.monotonic() - t0
        e.check_model(b, SCHEMA, e.weighted_mean(ups), 'round 1 closed at the deadline')
        check(0.5 <= took < 5, 'round 1 closed %.2f s after its first update (deadline 1 s)' %
              took)
        check(deadline_counter(srv) == 2, 'rounds_closed_at_deadline_total %r, want 2' %
              deadline_counter(srv))
        send(srv, 'dl', tok, 1, rng, [], expect=409)

        # Round 2: all 10 before the deadline: closes normally, counter unchanged.
        ups = []
        for _ in range(10):
            send(srv, 'dl', tok, 2, rng, ups)
        _, _, b = srv.get_model('dl', tok, '?after=2&timeout=10')
        e.check_model(b, SCHEMA, e.weighted_mean(ups), 'round 2 (full)')
        check(deadline_counter(srv) == 2, 'a full round counted as a deadline close')

        # Another job, a long deadline: a full round closes at once, long before it.
        tokf = srv.create_job({'name': 'full', 'clients_per_round': 3, 'min_clients': 2,
                               'round_timeout_s': 30, 'params': P})['token']
        ups = []
        t0 = time.monotonic()
        for _ in range(3):
            send(srv, 'full', tokf, 0, rng, ups)
        _, _, b = srv.get_model('full', tokf, '?after=0&timeout=20')
        check(time.monotonic() - t0 < 20, 'a full round waited for its 30 s deadline')
        e.check_model(b, SCHEMA, e.weighted_mean(ups), 'full round 0')
        check(deadline_counter(srv) == 2, 'a full round counted as a deadline close')
        m = srv.metrics()
        check(m['tributary_functions_failed_total'] == 0, 'functions failed')
        e.wait_for(lambda: srv.metrics()['tributary_arena_slots'] == 0, 5,
                   'arena slots back to 0')


if __name__ == '__main__':
    e.main(run)
