# SPDX-License-Identifier: MIT
# No lost update: kill -9 of a leaf, of the top and of a warm function; every 202 is in the model.
import json
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

P_BIG = 200000
P_SMALL = 3000


def schema_of(p):
    return [{'name': 'weights', 'shape': [p], 'dtype': 'F32'}]


def functions(srv):
    st, obj, _ = srv.json('GET', '/v1/functions', token=srv.admin)
    check(st == 200 and obj and 'functions' in obj, 'GET /v1/functions: %d %r' % (st, obj))
    return obj['functions']


def find_fn(srv, job, rnd, role, states=('cold', 'folding')):
    """The live function of @job round @rnd in @role and one of @states."""
    fs = [f for f in functions(srv) if f['job'] == job and f['round'] == rnd and
          f['role'] == role and f['state'] in states]
    return fs[0] if fs else None


def start_time(pid):
    with open('/proc/%d/stat' % pid) as f:
        stat = f.read()
    return int(stat[stat.rindex(')') + 2:].split()[19])


def pid_of(srv, fn):
    """The pid of live function @fn. /v1/functions gives no pid, but fn ids are handed out in
    spawn order and a reused function keeps its id: the live ids, sorted, match the live
    tributary-fn children sorted by start time. None while the two lists disagree."""
    ids = sorted(f['fn'] for f in functions(srv) if f['state'] != 'exited')
    try:
        pids = sorted(e.fn_children(srv.pid), key=lambda p: (start_time(p), p))
    except OSError:
        return None
    if len(ids) != len(pids) or fn not in ids:
        return None
    return pids[ids.index(fn)]


class Round:
    """One round of a job: updates sent so far (only those answered 202 count)."""

    def __init__(self, srv, job, tok, rnd, p, rng):
        self.srv, self.job, self.tok, self.rnd, self.p, self.rng = srv, job, tok, rnd, p, rng
        self.ups = []

    def send(self, k=1):
        schema = schema_of(self.p)
        for _ in range(k):
            i = len(self.ups)
            m = {'weights': (self.rng.standard_normal(self.p) * (1 + i % 4)).astype(np.float32)}
            w = 1 + (self.rnd * 7 + i * 5) % 13
            st, obj, _ = self.srv.post_update(self.job, self.tok, self.rnd,
                                              e.raw_body(schema, m), w, expect=None)
            check(st == 202, '%s round %d update %d: got %d %r (want 202: a dead function '
                  'must not refuse updates)' % (self.job, self.rnd, i, st, obj))
            self.ups.append((w, m))

    def check(self):
        try:
            _, _, b = self.srv.get_model(self.job, self.tok, '?after=%d&timeout=20' % self.rnd,
                                         timeout=25)
        except (OSError, e.Failure) as ex:
            # What the tree looked like when the round failed to complete.
            e.log('status: %s' % json.dumps(self.srv.status(self.job)))
            e.log('functions: %s' % json.dumps(functions(self.srv)))
            raise e.Failure('%s round %d: no model (%r) after %d updates answered 202' %
                            (self.job, self.rnd, ex, len(self.ups)))
        e.check_model(b, schema_of(self.p), e.weighted_mean(self.ups),
                      '%s round %d model' % (self.job, self.rnd))


def kill(srv, job, rnd, role):
    """kill -9 the (busy) @role function of @job round @rnd; returns its fn id."""
    f = e.wait_for(lambda: find_fn(srv, job, rnd, role), 10,
                   'a busy %s of %s round %d in /v1/functions' % (role, job, rnd))
    pid = e.wait_for(lambda: pid_of(srv, f['fn']), 5, 'the pid of fn %d' % f['fn'])
    before = srv.metrics()['tributary_functions_replaced_total']
    os.kill(pid, signal.SIGKILL)
    e.log('%s round %d: killed the %s fn %d (pid %d, state %s)' % (job, rnd, role, f['fn'], pid,
                                                                   f['state']))
    # The pid was the right one: fn @f is listed as exited soon.
    e.wait_for(lambda: [g for g in functions(srv) if g['fn'] == f['fn'] and
                        g['state'] == 'exited'], 5, 'fn %d listed as exited' % f['fn'])
    return f['fn'], before


def wait_replaced(srv, before, what):
    e.wait_for(lambda: srv.metrics()['tributary_functions_replaced_total'] > before, 10,
               'replaced_total to count the replacement of %s' % what)


def arena_empty(srv):
    return srv.metrics()['tributary_arena_slots'] == 0


def run():
    rng = np.random.default_rng(77)
    with e.Server(arena_mb=128) as srv:
        tok = srv.create_job({'name': 'big', 'clients_per_round': 6, 'fan_in': 3,
                              'params': P_BIG})['token']
        toks = srv.create_job({'name': 'small', 'clients_per_round': 4, 'fan_in': 2,
                               'params': P_SMALL})['token']
        replaced = 0
        for rnd in range(2):
            big = Round(srv, 'big', tok, rnd, P_BIG, rng)
            small = Round(srv, 'small', toks, rnd, P_SMALL, rng)
            # Leaf 0 has one update (of its 3): kill it.
            big.send(1)
            small.send(1)
            fn, before = kill(srv, 'big', rnd, 'leaf')
            if rnd == 0:
                # Round 0: wait for the replacement before going on.
                wait_replaced(srv, before, 'leaf fn %d' % fn)
            # Round 1: the next updates race the runtime noticing the death.
            big.send(3)   # leaf 0 full, leaf 1 has one
            small.send(2)
            fn, before = kill(srv, 'big', rnd, 'top')
            if rnd == 0:
                wait_replaced(srv, before, 'top fn %d' % fn)
            big.send(2)
            small.send(1)
            big.check()
            small.check()
            replaced += 2
            m = e.wait_for(lambda: (lambda m: m if m['tributary_functions_replaced_total'] >=
                                    replaced else None)(srv.metrics()), 5,
                           'replaced_total >= %d' % replaced)
            check(m['tributary_functions_replaced_total'] == replaced,
                  'replaced_total %r, want %d' % (m['tributary_functions_replaced_total'],
                                                  replaced))
            check(m['tributary_functions_failed_total'] == replaced,
                  'failed_total %r, want %d' % (m['tributary_functions_failed_total'], replaced))
            e.wait_for(lambda: arena_empty(srv), 5, 'arena slots back to 0 after round %d '
                       '(now %r)' % (rnd, srv.metrics()['tributary_arena_slots']))
        log = srv.log_text()
        check('was killed by signal 9 mid-round' in log, 'no "killed by signal 9" in the log')
        check('replaced, its inputs sent again' in log, 'no "replaced" in the log')

        # A warm (idle) function killed: the next round still works.
        fs = [f for f in functions(srv) if f['state'] == 'warm']
        check(fs, 'no warm function after the rounds: %r' % functions(srv))
        pid = pid_of(srv, fs[0]['fn'])
        check(pid, 'no pid for warm fn %d' % fs[0]['fn'])
        os.kill(pid, signal.SIGKILL)
        e.log('killed the warm fn %d (pid %d)' % (fs[0]['fn'], pid))
        # At once, so that the dead one may still look warm to the runtime.
        for rnd in (2, 3):
            big = Round(srv, 'big', tok, rnd, P_BIG, rng)
            big.send(6)
            big.check()
            small = Round(srv, 'small', toks, rnd, P_SMALL, rng)
            small.send(4)
            small.check()
        e.wait_for(lambda: arena_empty(srv), 5, 'arena slots back to 0 after the warm kill')
        check(pid not in e.fn_children(srv.pid), 'the killed pid %d is still a child' % pid)

        # The top killed while a leaf hands off: fan-in 1, so the update just answered 202
        # makes a leaf whose partial is on its way as the top dies. Its partial must reach
        # the replacement top, whatever order the runtime learns of the two events in.
        tokr = srv.create_job({'name': 'race', 'clients_per_round': 3, 'fan_in': 1,
                               'params': P_BIG})['token']
        for rnd in range(8):
            race = Round(srv, 'race', tokr, rnd, P_BIG, rng)
            race.send(1)
            top = e.wait_for(lambda: find_fn(srv, 'race', rnd, 'top'), 10,
                             'the top of race round %d' % rnd)
            tpid = e.wait_for(lambda: pid_of(srv, top['fn']), 5, 'the pid of fn %d' % top['fn'])
            race.send(1)
            os.kill(tpid, signal.SIGKILL)
            race.send(1)
            race.check()
        e.wait_for(lambda: arena_empty(srv), 5, 'arena slots back to 0 after the race rounds')


if __name__ == '__main__':
    e.main(run)
