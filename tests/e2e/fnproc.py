# SPDX-License-Identifier: MIT
# Aggregation functions are processes: tributary-fn children exist during a round, none after.
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

JOB = 'fns'
CPR = 5
P = 1000


def children(pid):
    """Every child process of @pid, zombies included: [(pid, comm, state)]."""
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(')') + 2:].split()
        if int(fields[1]) == pid:
            out.append((int(d), stat[stat.index('(') + 1:stat.rindex(')')], fields[0]))
    return out


def run():
    rng = np.random.default_rng(5)
    schema = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]
    with e.Server(extra=['--warm-s', '0']) as srv:
        tok = srv.create_job({'name': JOB, 'clients_per_round': CPR, 'fan_in': 2,
                              'params': P})['token']
        check(children(srv.pid) == [], 'children before any round: %r' % children(srv.pid))
        check(srv.metrics()['tributary_functions'] == 0, 'tributary_functions before a round')
        for r in range(2):
            ups = []
            for i in range(CPR):
                m = {'weights': rng.standard_normal(P).astype(np.float32)}
                srv.post_update(JOB, tok, r, e.raw_body(schema, m), i + 1)
                ups.append((i + 1, m))
                if i == CPR - 1:
                    break
                # Mid-round: the top aggregator at least waits for the leaves.
                fns = e.wait_for(lambda: e.fn_children(srv.pid), 10,
                                 'a tributary-fn child after update %d of round %d' % (i + 1, r))
                if e.FN_BIN:
                    exe = os.path.realpath('/proc/%d/exe' % fns[0])
                    check(exe == os.path.realpath(e.FN_BIN), 'function runs %s, want %s' %
                          (exe, e.FN_BIN))
                ps = subprocess.run(['ps', '--ppid', str(srv.pid), '-o', 'comm='],
                                    capture_output=True, text=True).stdout.split()
                check('tributary-fn' in ps, 'ps shows no tributary-fn child: %r' % ps)
                gauge = srv.metrics()['tributary_functions']
                check(gauge >= 1, 'tributary_functions = %r mid-round' % gauge)
                if i == 0:
                    e.log('round %d after 1 update: %d tributary-fn children %s' %
                          (r, len(fns), fns))
            _, _, b = srv.get_model(JOB, tok, '?after=%d&timeout=30' % r)
            e.check_model(b, schema, e.weighted_mean(ups), 'round %d model' % r)
            # The round is written: its functions exit and are reaped within a couple of s.
            e.wait_for(lambda: not children(srv.pid), 3,
                       'no children left after round %d (left: %r)' % (r, children(srv.pid)))
            e.wait_for(lambda: srv.metrics()['tributary_functions'] == 0, 3,
                       'tributary_functions back to 0 after round %d' % r)
        m = srv.metrics()
        check(m['tributary_functions_failed_total'] == 0, 'functions failed: %r' %
              m['tributary_functions_failed_total'])
        check(m['tributary_functions_spawned_total'] >= 2, 'functions spawned: %r' %
              m['tributary_functions_spawned_total'])


if __name__ == '__main__':
    e.main(run)
