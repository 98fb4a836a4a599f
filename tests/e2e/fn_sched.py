# SPDX-License-Identifier: MIT
# A function's scheduling class (functions/fn_sched.c, runtime/node/rt_fnproc.c): SCHED_FIFO 1
# while idle (pre-started, or between rounds), the runtime's threads back in SCHED_OTHER after
# every start, exact models; and without CAP_SYS_NICE one warning and the normal class, the
# same models.
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHED_OTHER, SCHED_FIFO = 0, 1
P = 2000


def sched_of(pid, tid=None):
    """(policy, rt_priority) from /proc/PID[/task/TID]/stat (fields 41 and 40)."""
    path = '/proc/%d/task/%d/stat' % (pid, tid) if tid else '/proc/%d/stat' % pid
    with open(path) as f:
        stat = f.read()
    fields = stat[stat.rindex(')') + 2:].split()
    return int(fields[38]), int(fields[37])


def runtime_threads(pid):
    return [int(t) for t in os.listdir('/proc/%d/task' % pid)]


def one_round(srv, job, tok, rnd, rng, after_first=None):
    schema = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]
    ups = []
    for i in range(4):
        m = {'weights': rng.standard_normal(P).astype(np.float32)}
        srv.post_update(job, tok, rnd, e.raw_body(schema, m), 1 + i)
        ups.append((1 + i, m))
        if i == 0 and after_first:
            after_first()
    _, _, b = srv.get_model(job, tok, '?after=%d&timeout=30' % rnd)
    e.check_model(b, schema, e.weighted_mean(ups), '%s round %d model' % (job, rnd))


def idle_pids(srv, n):
    e.wait_for(lambda: len(e.fn_children(srv.pid)) >= n and
               srv.metrics()['tributary_fn_cold_start_seconds_count'] >= n, 10,
               '%d started functions' % n)
    return e.fn_children(srv.pid)


def run():
    if os.geteuid() != 0 or not shutil.which('setpriv'):
        print('SKIP: needs root (SCHED_FIFO) and setpriv (to drop CAP_SYS_NICE)')
        sys.exit(77)
    rng = np.random.default_rng(7)
    with e.Server(extra=['--fn-pool', '2']) as srv:
        for pid in idle_pids(srv, 2):
            check(sched_of(pid) == (SCHED_FIFO, 1),
                  'pre-started fn %d: (policy, rtprio) %r, want SCHED_FIFO 1' %
                  (pid, sched_of(pid)))
        tok = srv.create_job({'name': 's', 'clients_per_round': 4, 'fan_in': 2,
                              'params': P})['token']

        def configured_other():
            # One update in: its leaf and the top are configured, waiting for the rest
            # of their inputs in the class they fold in.
            e.wait_for(lambda: sum(sched_of(p) == (SCHED_OTHER, 0)
                                   for p in e.fn_children(srv.pid)) >= 2, 10,
                       'two configured functions in SCHED_OTHER: %r' %
                       {p: sched_of(p) for p in e.fn_children(srv.pid)})
        one_round(srv, 's', tok, 0, rng, configured_other)
        for rnd in range(1, 3):
            one_round(srv, 's', tok, rnd, rng)
        # After its DONE every function is idle again, so real-time again; none folds now.
        e.wait_for(lambda: all(sched_of(p) == (SCHED_FIFO, 1) for p in e.fn_children(srv.pid)),
                   10, 'every idle function back in SCHED_FIFO: %r' %
                   {p: sched_of(p) for p in e.fn_children(srv.pid)})
        # The runtime took FIFO only over each start: none of its threads kept it.
        for t in runtime_threads(srv.pid):
            check(sched_of(srv.pid, t)[0] == SCHED_OTHER,
                  'runtime thread %d: policy %r after the starts' % (t, sched_of(srv.pid, t)))
        check('SCHED_FIFO' not in srv.log_text(), 'a SCHED_FIFO warning with CAP_SYS_NICE')
    e.log('with CAP_SYS_NICE: idle functions SCHED_FIFO 1, the runtime SCHED_OTHER, exact models')

    # Without CAP_SYS_NICE (RLIMIT_RTPRIO is 0): said once, then the normal class.
    with e.Server(extra=['--fn-pool', '2'], wrap=['setpriv', '--bounding-set', '-sys_nice',
                                                  '--inh-caps', '-sys_nice']) as srv:
        for pid in idle_pids(srv, 2):
            check(sched_of(pid)[0] == SCHED_OTHER,
                  'fn %d without CAP_SYS_NICE: %r' % (pid, sched_of(pid)))
        tok = srv.create_job({'name': 'n', 'clients_per_round': 4, 'fan_in': 2,
                              'params': P})['token']
        for rnd in range(2):
            one_round(srv, 'n', tok, rnd, rng)
        n = srv.log_text().count('SCHED_FIFO for starting functions: Operation not permitted')
        check(n == 1, 'the EPERM warning %d times, want once:\n%s' % (n, srv.log_text()))
    e.log('without CAP_SYS_NICE: one warning, functions SCHED_OTHER, exact models')


if __name__ == '__main__':
    e.main(run)
