# SPDX-License-Identifier: MIT
# Function lifecycle: cold start, warm reuse across rounds and jobs, scale to zero after --warm-s.
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402


def schema_of(p):
    return [{'name': 'weights', 'shape': [p], 'dtype': 'F32'}]


def functions(srv):
    st, obj, _ = srv.json('GET', '/v1/functions', token=srv.admin)
    check(st == 200 and obj and 'functions' in obj, 'GET /v1/functions: %d %r' % (st, obj))
    return obj['functions']


def live(srv):
    return [f for f in functions(srv) if f['state'] != 'exited']


def all_warm(srv, n):
    """@n live functions, every one warm (its output handed off, waiting for reuse)."""
    fs = live(srv)
    return len(fs) == n and all(f['state'] == 'warm' for f in fs)


def run_round(srv, job, tok, rnd, p, rng, cpr, mid=None):
    """cpr updates to round @rnd; mid(i) is called after update i (not the last); checks the
    model against the float64 weighted mean."""
    schema = schema_of(p)
    ups = []
    for i in range(cpr):
        m = {'weights': (rng.standard_normal(p) * (1 + i)).astype(np.float32)}
        w = 1 + (rnd * 5 + i * 3) % 11
        srv.post_update(job, tok, rnd, e.raw_body(schema, m), w)
        ups.append((w, m))
        if mid and i < cpr - 1:
            mid(i)
    _, _, b = srv.get_model(job, tok, '?after=%d&timeout=30' % rnd)
    e.check_model(b, schema, e.weighted_mean(ups), '%s round %d model' % (job, rnd))


def cold_then_reuse():
    """(a) a top + 1 leaf cold-start in round 0 and the same processes serve round 1;
    (c) cold start and warm hand-off are measured; (d) warm functions serve another job."""
    rng = np.random.default_rng(41)
    with e.Server() as srv:  # default --warm-s 30: nothing retires during this test
        tok = srv.create_job({'name': 'a', 'clients_per_round': 4, 'fan_in': 4,
                              'params': 1000})['token']
        check(e.fn_children(srv.pid) == [], 'a job without traffic has function processes')
        seen = {}

        def snap0(i):
            if i == 0:
                pids = e.wait_for(lambda: len(e.fn_children(srv.pid)) == 2 and
                                  e.fn_children(srv.pid), 10, 'top + leaf of round 0')
                seen['pids'] = sorted(pids)
                roles = sorted(f['role'] for f in live(srv))
                check(roles == ['leaf', 'top'], 'round 0 functions %r' % live(srv))
        run_round(srv, 'a', tok, 0, 1000, rng, 4, snap0)
        m = srv.metrics()
        check(m['tributary_functions_spawned_total'] == 2, 'spawned after round 0: %r' %
              m['tributary_functions_spawned_total'])
        check(m['tributary_fn_cold_start_seconds_count'] >= 1, 'cold starts counted: %r' %
              m['tributary_fn_cold_start_seconds_count'])
        check(m['tributary_fn_cold_start_seconds_sum'] > 0, 'cold start time sum is 0')
        # Done with round 0: both stay, warm.
        e.wait_for(lambda: all_warm(srv, 2), 5, 'the 2 functions of round 0 warm')
        check(sorted(e.fn_children(srv.pid)) == seen['pids'], 'warm processes %r, want %r' %
              (e.fn_children(srv.pid), seen['pids']))

        def snap1(i):
            check(sorted(e.fn_children(srv.pid)) == seen['pids'],
                  'round 1 after update %d runs in %r, want the warm %r' %
                  (i + 1, e.fn_children(srv.pid), seen['pids']))
            fs = live(srv)
            check(all(f['round'] == 1 for f in fs), 'round 1 functions: %r' % fs)
            check(all(f['served'] >= 2 for f in fs), 'reused functions served: %r' % fs)
        run_round(srv, 'a', tok, 1, 1000, rng, 4, snap1)
        m = srv.metrics()
        check(m['tributary_functions_spawned_total'] == 2, 'spawned after round 1: %r (no '
              'new process wanted)' % m['tributary_functions_spawned_total'])
        check(m['tributary_functions_reused_total'] >= 2, 'reused after round 1: %r' %
              m['tributary_functions_reused_total'])
        check(m['tributary_fn_warm_handoff_seconds_count'] >= 1, 'warm hand-offs counted: %r'
              % m['tributary_fn_warm_handoff_seconds_count'])
        check(m['tributary_planner_decisions_total'] >= 2, 'planner decisions: %r' %
              m['tributary_planner_decisions_total'])
        e.log('round 1 served by the warm pids %s; cold %d (%.4f s), warm %d (%.4f s)' %
              (seen['pids'], m['tributary_fn_cold_start_seconds_count'],
               m['tributary_fn_cold_start_seconds_sum'],
               m['tributary_fn_warm_handoff_seconds_count'],
               m['tributary_fn_warm_handoff_seconds_sum']))

        # (d) Another job, another model size, fan-in 2 (top + 2 leaves): the 2 warm
        # functions serve it (leaf 1 may get leaf 0's function if that one is done already,
        # or a third process). Then rounds alternate between the jobs and, with every
        # function warm before each round, at most 3 processes ever exist.
        tokb = srv.create_job({'name': 'b', 'clients_per_round': 4, 'fan_in': 2,
                               'params': 50000})['token']
        ids_a = {f['fn'] for f in live(srv)}
        ids_b = set()

        def snapb(i):
            ids_b.update(f['fn'] for f in live(srv) if f['job'] == 'b')
        run_round(srv, 'b', tokb, 0, 50000, rng, 4, snapb)
        check(ids_a <= ids_b, 'job b did not reuse job a\'s warm functions %s (b ran on %s)' %
              (sorted(ids_a), sorted(ids_b)))
        for rnd in (2, 3):
            for job, t, p, r in (('a', tok, 1000, rnd), ('b', tokb, 50000, rnd - 1)):
                n = len(live(srv))
                e.wait_for(lambda: all_warm(srv, n), 5, '%d functions warm' % n)
                before = srv.metrics()['tributary_functions_reused_total']
                run_round(srv, job, t, r, p, rng, 4)
                m = srv.metrics()
                check(m['tributary_functions_spawned_total'] <= 3, 'spawned after %s round '
                      '%d: %r, want <= 3' % (job, r, m['tributary_functions_spawned_total']))
                check(m['tributary_functions_reused_total'] - before >= 2,
                      '%s round %d reused %r functions, want >= 2 (top and first leaf)' %
                      (job, r, m['tributary_functions_reused_total'] - before))
        m = srv.metrics()
        check(m['tributary_functions_failed_total'] == 0, 'functions failed')
        check(m['tributary_functions_retired_total'] == 0, 'retired with --warm-s 30: %r' %
              m['tributary_functions_retired_total'])
        check(len(e.fn_children(srv.pid)) == m['tributary_functions_spawned_total'],
              'warm processes %r, spawned %r: none should have exited' %
              (e.fn_children(srv.pid), m['tributary_functions_spawned_total']))
        check(m['tributary_arena_slots'] == 0, 'arena slots after the rounds: %r' %
              m['tributary_arena_slots'])


def scale_to_zero():
    """(b) with --warm-s 1 the functions exit after the round; the next cold-starts."""
    rng = np.random.default_rng(42)
    with e.Server(extra=['--warm-s', '1']) as srv:
        tok = srv.create_job({'name': 'z', 'clients_per_round': 4, 'fan_in': 2,
                              'params': 2000})['token']
        for r in range(2):
            run_round(srv, 'z', tok, r, 2000, rng, 4)
        e.wait_for(lambda: not e.fn_children(srv.pid), 3.5,
                   'no tributary-fn left 1 s after the last round (left: %r)' %
                   e.fn_children(srv.pid), step=0.05)
        m = srv.metrics()
        check(m['tributary_functions'] == 0, 'tributary_functions %r after idling' %
              m['tributary_functions'])
        check(m['tributary_functions_retired_total'] >= 2, 'retired %r' %
              m['tributary_functions_retired_total'])
        check(not live(srv), 'live functions after idling: %r' % live(srv))
        check(any(f['state'] == 'exited' for f in functions(srv)), 'no exited function listed')
        spawned = m['tributary_functions_spawned_total']
        cold = m['tributary_fn_cold_start_seconds_count']
        # A new round cold-starts again and completes.
        run_round(srv, 'z', tok, 2, 2000, rng, 4)
        m = srv.metrics()
        # The top and leaf 0 start cold (leaf 1 may reuse leaf 0's function).
        check(m['tributary_functions_spawned_total'] >= spawned + 2, 'spawned %r, want >= %r '
              '(cold start after scale to zero)' % (m['tributary_functions_spawned_total'],
                                                     spawned + 2))
        check(m['tributary_fn_cold_start_seconds_count'] > cold, 'no new cold start counted')
        e.wait_for(lambda: not e.fn_children(srv.pid), 3.5, 'back to zero processes',
                   step=0.05)
        check(srv.metrics()['tributary_functions_failed_total'] == 0, 'functions failed')
        e.log('scale to zero: retired %d' % srv.metrics()['tributary_functions_retired_total'])


def run():
    cold_then_reuse()
    scale_to_zero()


if __name__ == '__main__':
    e.main(run)
