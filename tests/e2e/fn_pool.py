# SPDX-License-Identifier: MIT
# --fn-pool: pre-started functions serve a round's first configs (no process start on its path),
# stay past --warm-s, are refilled after a kill -9, and the models stay exact.
import os
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

POOL = 3


def schema_of(p):
    return [{'name': 'weights', 'shape': [p], 'dtype': 'F32'}]


def live(srv):
    st, obj, _ = srv.json('GET', '/v1/functions', token=srv.admin)
    check(st == 200 and obj and 'functions' in obj, 'GET /v1/functions: %d %r' % (st, obj))
    return [f for f in obj['functions'] if f['state'] != 'exited']


def idle(srv):
    return [f for f in live(srv) if f['state'] == 'warm']


def run_round(srv, job, tok, rnd, p, rng, cpr, seen=None):
    schema = schema_of(p)
    ups = []
    for i in range(cpr):
        m = {'weights': (rng.standard_normal(p) * (1 + i)).astype(np.float32)}
        w = 1 + (rnd * 5 + i * 3) % 11
        srv.post_update(job, tok, rnd, e.raw_body(schema, m), w)
        ups.append((w, m))
        if seen is not None:
            seen.update(f['fn'] for f in live(srv) if f['job'] == job)
    _, _, b = srv.get_model(job, tok, '?after=%d&timeout=30' % rnd)
    e.check_model(b, schema, e.weighted_mean(ups), '%s round %d model' % (job, rnd))


def run():
    rng = np.random.default_rng(43)
    with e.Server(extra=['--fn-pool', str(POOL), '--warm-s', '1']) as srv:
        # The pool fills without any job, one function a tick.
        e.wait_for(lambda: len(idle(srv)) == POOL and len(e.fn_children(srv.pid)) == POOL, 10,
                   '%d pre-started functions' % POOL)
        m = srv.metrics()
        check(m['tributary_functions'] == POOL, 'tributary_functions %r' %
              m['tributary_functions'])
        check(m['tributary_functions_spawned_total'] == POOL, 'spawned %r' %
              m['tributary_functions_spawned_total'])
        e.wait_for(lambda: srv.metrics()['tributary_fn_cold_start_seconds_count'] == POOL, 5,
                   'each pre-started function measured once (its READY after the arena)')
        check(all(f['served'] == 0 and f['role'] == 'none' for f in idle(srv)),
              'pre-started functions (served 0, role none): %r' % idle(srv))
        pool_ids = {f['fn'] for f in idle(srv)}
        pids = sorted(e.fn_children(srv.pid))
        # Past --warm-s 1 the pool stays: it is not idle capacity to retire.
        time.sleep(1.6)
        check(sorted(e.fn_children(srv.pid)) == pids, 'the pool changed while idle: %r, was %r'
              % (e.fn_children(srv.pid), pids))
        check(srv.metrics()['tributary_functions_retired_total'] == 0, 'the pool retired')

        # fan-in 2 with 4 clients: a top and 2 leaves, all configured from the pool.
        tok = srv.create_job({'name': 'p', 'clients_per_round': 4, 'fan_in': 2,
                              'params': 3000})['token']
        seen = set()
        run_round(srv, 'p', tok, 0, 3000, rng, 4, seen)
        # The top and leaf 0 are configured at the first update, from the full pool; leaf 1
        # may get a function the pool refilled meanwhile (also pre-started, with a new id).
        check(len(seen & pool_ids) >= 2, 'round 0 ran on %r, want >= 2 of the pre-started %r'
              % (sorted(seen), sorted(pool_ids)))
        check(srv.metrics()['tributary_functions_spawned_total'] <= 2 * POOL,
              'spawned %r: more than the pool and its refills' %
              srv.metrics()['tributary_functions_spawned_total'])
        m = srv.metrics()
        check(m['tributary_functions_reused_total'] >= 2, 'configs served by the pool: %r' %
              m['tributary_functions_reused_total'])
        check(m['tributary_fn_warm_handoff_seconds_count'] >= 2, 'hand-offs measured: %r' %
              m['tributary_fn_warm_handoff_seconds_count'])

        # kill -9 of an idle pre-started function: not a failure, and refilled.
        e.wait_for(lambda: len(idle(srv)) >= POOL, 10, 'the pool idle again')
        victim = idle(srv)[0]
        os.kill(victim['pid'], signal.SIGKILL)
        e.wait_for(lambda: all(f['fn'] != victim['fn'] for f in live(srv)), 5,
                   'fn %d gone after kill -9' % victim['fn'])
        e.wait_for(lambda: len(idle(srv)) >= POOL, 10, 'the pool refilled after kill -9')
        check(srv.metrics()['tributary_functions_failed_total'] == 0,
              'an idle function\'s death counted as a failure')
        for r in (1, 2):
            run_round(srv, 'p', tok, r, 3000, rng, 4)
        # Beyond the pool, idle functions still retire after --warm-s.
        e.wait_for(lambda: len(e.fn_children(srv.pid)) == POOL and len(idle(srv)) == POOL, 10,
                   'back to the %d of the pool (left: %r)' % (POOL, e.fn_children(srv.pid)))
        m = srv.metrics()
        check(m['tributary_functions_failed_total'] == 0, 'functions failed')
        check(m['tributary_arena_slots'] == 0, 'arena slots after the rounds: %r' %
              m['tributary_arena_slots'])
        e.log('pool of %d: spawned %d, reused %d, retired %d; cold %d, warm %d' %
              (POOL, m['tributary_functions_spawned_total'],
               m['tributary_functions_reused_total'], m['tributary_functions_retired_total'],
               m['tributary_fn_cold_start_seconds_count'],
               m['tributary_fn_warm_handoff_seconds_count']))

    # A bad size is refused before anything starts, naming the option and the range.
    r = subprocess.run([e.BIN, 'up', '--fn-pool', '257'], capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 2 and '--fn-pool wants 0..256' in r.stderr,
          '--fn-pool 257: rc %d, %r' % (r.returncode, r.stderr))

if __name__ == '__main__':
    e.main(run)
