# SPDX-License-Identifier: MIT
"""fedau and scaffold on three netns nodes: the same models as one node, across restarts.

fedau: six clients with client tokens take part unevenly (fedau.py's plan and two rounds more,
cutoff 3) over 10 rounds; each round's updates are spread over the three gateways so that a client's updates
land on a different node each time. The controller keeps the per-client interval table and
answers each update's weight with its count: every round's model equals both the numpy
reference (IBM/fedau's weights) and a `tributary up` fed the same clients, to 1e-6.

scaffold: three clients per round send their model delta and their control delta; the nodes sum
both halves, the top steps x by server_lr and c by |S|/N: every model (x and c) equals numpy's
and the single node's.

Between rounds 3 and 4 the controller is killed (kill -9) and started again: the weights of
round 4 on need the table from before (a fresh table weighs every client 1), and scaffold's next
step needs c from before (in the model file the controller keeps). Between rounds 5 and 6
every node is killed (kill -9) and started again: the next round's top, whichever it is, starts
from a node that was restarted. In round 8 the controller is killed again once it has counted
one fedau update (c5's): the restarted one replays that participation from the node's report,
and c5's weight in round 9 needs it. Both jobs go on equal to one node.

While the controller is away a node refuses fedau updates (503: only the controller knows the
weight), and a cluster refuses bad fedau and scaffold specs with the single node's 400s.

Needs root (ip netns, veth, a bridge): exit status 77 otherwise, as cluster.py.
"""
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import cluster as c  # noqa: E402
import fedau as au  # noqa: E402  (its plan and IBM/fedau's reference weights)
import netns_cluster  # noqa: E402
from e2e_common import (BIN, Server, arena_files_in, check, log, main,  # noqa: E402
                        remove_arena_files, st_decode)

# fedau.py's plan, and two rounds more: c5 (first in round 8) is the update the controller holds
# when it is killed mid-round; its weight in round 9 needs that participation replayed.
au.PLAN = au.PLAN + [[5, 1, 4], [2, 5, 0]]
N_AU = 50
N_SC = 40
SC_K, SC_N, SC_LR = 3, 10, 0.5
CTL_KILL = 4   # rounds committed when the controller is killed
NODE_KILL = 6  # ... when every node is
CTL_KILL_MID = 8  # the round in which the controller is killed again, one fedau update in
TOL = 1e-6


def flat(buf):
    _, t, order = st_decode(buf)
    return np.concatenate([t[k].ravel() for k in order]).astype(np.float64), order


class Both:
    """One job on the cluster and on the single node, its tokens on each."""

    def __init__(self, cl, admin, srv, name, spec):
        self.cl, self.srv, self.name = cl, srv, name
        st, b = cl.call(c.NODE_IP[0], 'POST', '/v1/jobs', json.dumps(dict(spec, name=name))
                        .encode(), {'Content-Type': 'application/json'}, admin)
        check(st == 201, 'create %s on a cluster: %d %s' % (name, st, b[:300]))
        self.tok = json.loads(b)['token']
        self.tok1 = srv.create_job(dict(spec, name=name))['token']
        c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/' + name, token=self.tok)[0] == 200
                               for h in c.NODE_IP), 5, name + ' known on every node')
        self.creds, self.creds1 = {}, {}

    def mint(self, client, k):
        host = c.NODE_IP[k % 3]
        st, b = self.cl.call(host, 'POST', '/v1/jobs/%s/clients' % self.name,
                             json.dumps({'client': client}).encode(),
                             {'Content-Type': 'application/json'}, self.tok)
        check(st == 201, 'mint %s on %s: %d %s' % (client, host, st, b[:200]))
        self.creds[client] = json.loads(b)['token']
        st, obj, _ = self.srv.json('POST', '/v1/jobs/%s/clients' % self.name,
                                   {'client': client}, token=self.tok1)
        check(st == 201, 'single node: mint %s: %d %r' % (client, st, obj))
        self.creds1[client] = obj['token']

    def round(self, r, ups, between=None):
        """ups: [(gateway index, client or None, f32 vector, samples)]; both models of r + 1.
        between: called once the first update has its 202, before the others are sent."""
        items = [(c.NODE_IP[g], self.name, self.creds[cl] if cl else self.tok, r, x, n)
                 for g, cl, x, n in ups]
        if between:
            st, b = c.post(self.cl, *items[0])
            check(st == 202, '%s round %d update 0: %d %s' % (self.name, r, st, b[:300]))
            between()
            items = items[1:]
        for k, (st, b) in enumerate(c.post_many(self.cl, items)):
            check(st == 202, '%s round %d update %d: %d %s' % (self.name, r, k, st, b[:300]))
        for _, cl, x, n in ups:
            self.srv.post_update(self.name, self.creds1[cl] if cl else self.tok1, r,
                                 x.tobytes(), samples=n)
        _, _, buf = self.srv.get_model(self.name, self.tok1, '?after=%d' % r, timeout=60)
        one, order1 = flat(buf)
        host = c.NODE_IP[(r + 1) % 3]
        st, b = 0, b''
        c.wait_for(lambda: self.cl.call(host, 'GET', '/v1/jobs/%s/model?round=%d' %
                                        (self.name, r + 1), token=self.tok)[0] == 200,
                   60, '%s model v%d on %s' % (self.name, r + 1, host))
        st, b = self.cl.call(host, 'GET', '/v1/jobs/%s/model?round=%d' % (self.name, r + 1),
                             token=self.tok)
        check(st == 200, '%s v%d: %d' % (self.name, r + 1, st))
        got, order = flat(b)
        check(order == order1, '%s v%d: tensors %r, the single node has %r' %
              (self.name, r + 1, order, order1))
        err = float(np.max(np.abs(got - one)))
        check(err <= TOL, '%s round %d: the cluster\'s model differs from the single node\'s '
              'by %.3g > %g' % (self.name, r, err, TOL))
        return got, err


def fedau_round(job, r, rows, rng, between=None):
    part = au.PLAN[r]
    ups = [((cl + r) % 3, 'c%d' % cl, rows[r][cl], 1000 * (cl + 1)) for cl in part]
    got, err = job.round(r, ups, between)
    w = au.reference_weights()[r]
    ref = sum(w[cl] * rows[r][cl].astype(np.float64) for cl in part) / sum(w.values())
    eref = float(np.max(np.abs(got - ref)))
    check(eref <= TOL, 'fedau round %d: the cluster\'s model differs from numpy by %.3g '
          '(weights %r)' % (r, eref, w))
    log('  fedau round %d: clients %r on gateways %r, weights %r: equals one node (%.2g) and '
        'numpy (%.2g)' % (r, part, [g for g, *_ in ups], [w[cl] for cl in part], err, eref))


def scaffold_round(job, r, state, rng):
    x, cv = state
    dy = [rng.normal(0, 1, N_SC).astype(np.float32) for _ in range(SC_K)]
    dc = [rng.normal(0, 1, N_SC).astype(np.float32) for _ in range(SC_K)]
    ups = [((k + r) % 3, None, np.concatenate([dy[k], dc[k]]), 100 * (k + 1))
           for k in range(SC_K)]
    got, err = job.round(r, ups)
    x = x + SC_LR * np.mean(np.asarray(dy, np.float64), axis=0)
    cv = cv + (SC_K / SC_N) * np.mean(np.asarray(dc, np.float64), axis=0)
    ex = float(np.max(np.abs(got[:N_SC] - x)))
    ec = float(np.max(np.abs(got[N_SC:] - cv)))
    check(ex <= 1e-5 and ec <= 1e-5, 'scaffold round %d: x differs from numpy by %.3g, c by '
          '%.3g' % (r, ex, ec))
    check(np.any(got[N_SC:]), 'scaffold round %d: c is all zeros' % r)
    log('  scaffold round %d: x and c equal one node (%.2g) and numpy (%.2g, %.2g)' %
        (r, err, ex, ec))
    return x, cv


def provisional(cl, fa, x):
    """While the controller is away a node takes no fedau update: only it knows the weight."""
    time.sleep(2)  # the nodes' heartbeats go unanswered: they know it is away
    st, b = c.post(cl, c.NODE_IP[0], fa.name, fa.creds['c0'], CTL_KILL, x, 1)
    check(st == 503 and b'fedau' in b, 'a fedau update while the controller is away: want '
          '503 naming fedau, got %d %s' % (st, b[:300]))
    log('  the controller away: a fedau update gets 503 (%s)' % json.loads(b)['error'][:90])


def refusals(cl, admin):
    """What a cluster still checks at creation: the single node's 400s."""
    for spec, field in (({'algorithm': 'fedau'}, 'client_auth'),
                        ({'algorithm': 'fedau', 'client_auth': 'required',
                          'fedau_cutoff': 0}, 'fedau_cutoff'),
                        ({'algorithm': 'scaffold'}, 'scaffold_clients'),
                        ({'algorithm': 'scaffold', 'scaffold_clients': 5,
                          'tensors': [{'name': 'c.w', 'shape': [2]}]}, 'c.')):
        body = dict({'name': 'bad', 'clients_per_round': 3, 'params': 10}, **spec)
        if 'tensors' in spec:
            del body['params']
        st, b = cl.call(c.NODE_IP[1], 'POST', '/v1/jobs', json.dumps(body).encode(),
                        {'Content-Type': 'application/json'}, admin)
        check(st == 400 and field.encode() in b, '%r on a cluster: want 400 naming %s, got '
              '%d %s' % (spec, field, st, b[:300]))
    log('  a cluster refuses bad fedau and scaffold specs with the single node\'s 400s')


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(c.SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(c.SKIP)
    net = netns_cluster.Net(3)
    c.CTL_IP, c.NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-clstate-')
    procs = []
    srv = Server(arena_mb=64)
    try:
        srv.start()
        net.up()
        ctl, nodes = netns_cluster.start(net, BIN, tmp, node_args=['--no-huge'])
        procs += [ctl] + nodes
        cl = c.Client(net.ctl)
        c.wait_joined(cl)
        admin = netns_cluster.admin_token(tmp)
        rng = np.random.default_rng(1606)
        refusals(cl, admin)
        schema_au = [{'name': 'w', 'shape': [N_AU], 'dtype': 'F32'}]
        fa = Both(cl, admin, srv, 'sau', {'clients_per_round': 3, 'algorithm': 'fedau',
                                          'fedau_cutoff': au.K, 'client_auth': 'required',
                                          'fan_in': 2, 'tensors': schema_au})
        for k in range(6):
            fa.mint('c%d' % k, k)
        sc = Both(cl, admin, srv, 'ssc', {'clients_per_round': SC_K, 'algorithm': 'scaffold',
                                          'scaffold_clients': SC_N, 'server_lr': SC_LR,
                                          'fan_in': 2, 'tensors': [{'name': 'w',
                                                                    'shape': [N_SC]}]})
        ws = au.reference_weights()
        check(any(len(set(w.values())) > 1 for w in ws[CTL_KILL:]),
              'the plan weighs every client alike after the restart: it proves nothing')
        rows = [[rng.uniform(-1, 1, N_AU).astype(np.float32) for _ in range(6)]
                for _ in au.PLAN]
        state = (np.zeros(N_SC), np.zeros(N_SC))
        runs = [0]

        def ctl_restart(why, away=None):
            nonlocal ctl
            ctl.kill()
            if away:
                away()
            runs[0] += 1
            ctl = netns_cluster.Proc('controller-run%d' % (runs[0] + 1), net.ctl, BIN,
                                     ctl.p.args[5:], tmp)
            procs.append(ctl)
            c.wait_for(lambda: 'reconciled with its nodes' in ctl.log_text() and
                       all(c.metrics(cl, h).get('tributary_cluster_joined') == 1
                           for h in c.NODE_IP), 30,
                       'the nodes to join the restarted controller and it to reconcile')
            log('controller killed (kill -9) %s and started again' % why)

        for r in range(len(au.PLAN)):
            if r == CTL_KILL:
                ctl_restart('after %d rounds' % r, lambda: provisional(cl, fa, rows[r][0]))
            if r == NODE_KILL:
                for i in range(3):
                    nodes[i].kill()
                    nodes[i] = netns_cluster.Proc('n%d-run2' % i, net.nodes[i], BIN,
                                                  nodes[i].p.args[5:], tmp)
                    procs.append(nodes[i])
                c.wait_joined(cl)
                log('every node killed (kill -9) after %d rounds and started again' % r)
            fedau_round(fa, r, rows, rng, (lambda: ctl_restart(
                'in round %d, one fedau update in' % CTL_KILL_MID)) if r == CTL_KILL_MID
                else None)
            if r == CTL_KILL:
                text = ctl.log_text()
            state = scaffold_round(sc, r, state, rng)
        seen = len({k for part in au.PLAN[:CTL_KILL] for k in part})
        check('fedau: %d client states loaded' % seen in text,
              'the restarted controller did not load the fedau table:\n' + text[-3000:])
        text = ctl.log_text()
        # The update it counted before the kill, and the one whose count read the table.
        check('fedau: 6 client states loaded, 2 participations of rounds in flight replayed'
              in text, 'the controller killed mid-round did not replay the fedau update it '
              'had counted:\n' + text[-3000:])
        log('cluster: fedau (%d rounds, 6 clients) and scaffold (%d rounds) equal one node and '
            'numpy across kill -9s of the controller (between rounds, mid-round) and of every '
            'node' %
            (len(au.PLAN), len(au.PLAN)))
        for p in nodes + [ctl]:
            c.stop(p)
    except BaseException:
        for p in procs:
            try:
                sys.stdout.write('===== %s log (tail) =====\n%s\n' %
                                 (p.name, p.log_text()[-6000:]))
            except OSError:
                pass
        raise
    finally:
        srv.__exit__(None, None, None)
        for p in procs:
            p.close()
        logs = []
        for p in procs:
            try:
                logs.append(p.log_text())
            except OSError:
                pass
        remove_arena_files(arena_files_in(logs))
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main(scenario)
