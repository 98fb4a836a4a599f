# SPDX-License-Identifier: MIT
"""flora on three netns nodes: the cluster's models equal the single node's for the same updates.

12 clients per round send LoRA pairs of ranks 2, 4 and 8 (flora.py's clients) round-robin over
the three gateways, one after the other, so the controller's count (each client's slot, cluster
wide) is the posting order; a `tributary up` next to the cluster gets the very same updates in
that order. Every version's stacks, used ranks and base must equal the single node's to 1e-6
(the blocks never overlap across nodes: the top adds the nodes' sums cell by cell), and
B_stack A_stack = sum_k p_k B_k A_k to 1e-5 against numpy; a flora_merge job (unweighted) too,
with a starting model PUT on one node.

Needs root (ip netns, veth, a bridge): exit status 77 otherwise, as cluster.py.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import cluster as c  # noqa: E402
import flora as fl  # noqa: E402  (the single node's scenario: clients and checks)
import netns_cluster  # noqa: E402
from e2e_common import (BIN, Failure, Server, arena_files_in, check, log,  # noqa: E402
                        main, remove_arena_files, st_encode)

ROUNDS = 2


def cl_model(cl, host, job, tok, v, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        st, b = cl.call(host, 'GET', '/v1/jobs/%s/model?round=%d' % (job, v), token=tok)
        if st == 200:
            return fl.st_decode_any(b)[1]
        time.sleep(0.2)
    raise Failure('model v%d of %s never appeared on %s' % (v, job, host))


def same(got, one, what, tol=1e-6):
    check(sorted(got) == sorted(one), '%s: tensors %r, the single node %r' %
          (what, sorted(got), sorted(one)))
    for k in got:
        check(got[k].dtype == one[k].dtype and got[k].shape == one[k].shape,
              '%s %s: %s %r, the single node %s %r' % (what, k, got[k].dtype, got[k].shape,
                                                       one[k].dtype, one[k].shape))
        err = float(np.max(np.abs(got[k].astype(np.float64) - one[k].astype(np.float64))))
        check(err <= tol, '%s %s: the cluster differs from the single node by %.3g' %
              (what, k, err))


def run_job(cl, admin, srv, rng, name, base, **kw):
    spec = fl.spec(name, **kw)
    st, b = cl.call(c.NODE_IP[0], 'POST', '/v1/jobs', json.dumps(spec).encode(),
                    {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create %s on a cluster: %d %s' % (name, st, b[:300]))
    tok = json.loads(b)['token']
    tok1 = srv.create_job(spec)['token']
    c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/' + name, token=tok)[0] == 200
                           for h in c.NODE_IP), 5, name + ' known on every node')
    st, b = cl.call(c.NODE_IP[1], 'GET', '/v1/jobs/' + name, token=tok)
    stt = json.loads(b)
    check([p['name'] for p in stt.get('flora_pairs', [])] == ['l0', 'l1'] and
          stt.get('flora_merge') is bool(kw.get('flora_merge')), 'status on n1: %r' % stt)
    body = st_encode(base)
    st, b = cl.call(c.NODE_IP[2], 'PUT', '/v1/jobs/%s/model' % name, body,
                    {'Content-Type': 'application/x-safetensors'}, tok)
    check(st == 200, 'PUT /model on n2: %d %s' % (st, b[:300]))
    st, _, _ = srv.request('PUT', '/v1/jobs/%s/model' % name, body,
                           {'Content-Type': 'application/x-safetensors'}, tok1)
    check(st == 200, 'PUT /model on the single node: %d' % st)
    for h in c.NODE_IP:
        c.wait_for(lambda h=h: np.array_equal(cl_model(cl, h, name, tok, 0)['l0.weight'],
                                              base['l0.weight']), 10, 'v0 on ' + h)
    for r in range(ROUNDS):
        ups = [(int(rng.integers(1, 100)), fl.client(rng, i)) for i in range(fl.S)]
        for i, (w, t) in enumerate(ups):
            hdr = {'Content-Type': 'application/x-safetensors', 'X-Tributary-Round': str(r),
                   'X-Tributary-Samples': str(w)}
            st, b = cl.call(c.NODE_IP[i % 3], 'POST', '/v1/jobs/%s/updates' % name,
                            st_encode(t), hdr, tok)
            check(st == 202, '%s round %d update %d on n%d: %d %s' % (name, r, i, i % 3, st,
                                                                      b[:300]))
            fl.post(srv, name, tok1, r, t, w)
        got = cl_model(cl, c.NODE_IP[(r + 1) % 3], name, tok, r + 1)
        _, _, buf = srv.get_model(name, tok1, '?after=%d' % r, timeout=60)
        one = fl.st_decode_any(buf)[1]
        same(got, one, '%s round %d' % (name, r))
        if kw.get('flora_merge'):
            check(sorted(got) == sorted(t['name'] for t in fl.BASE), 'merge: %r' % sorted(got))
        else:
            fl.check_stacks(got, ups, kw.get('weighted', True), '%s round %d (cluster)' %
                            (name, r))
        log('  %s round %d: 12 updates over 3 gateways; the model equals the single node\'s '
            '(1e-6)' % (name, r))


def slot_gap(cl, admin, net, tmp, procs, ctl, nodes, rng):
    """A slot given back (its node lost in the open round) and a controller kill -9 in the
    same round: the restarted controller must not hand that slot's successors out again.
    u0 on n0 (slot 0), u1 on n2 (slot 1), u2 on n0 (slot 2); n2 frozen and drained (its
    slot stays out), then killed; the controller killed and restarted; three more updates.
    It once resumed the slots at its count (2): u3 went into u2's block and B A was wrong
    silently. Now the gap is kept in controller.db: 6 slots, 5 updates, B A exact.
    Returns the restarted controller."""
    name, cpr = 'cgap', 6
    st, b = cl.call(c.NODE_IP[0], 'POST', '/v1/jobs', json.dumps(
        fl.spec(name, clients_per_round=cpr)).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create %s: %d %s' % (name, st, b[:300]))
    tok = json.loads(b)['token']
    c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/' + name, token=tok)[0] == 200
                           for h in c.NODE_IP), 5, name + ' known on every node')
    ups = [(int(rng.integers(1, 100)), fl.client(rng, i)) for i in range(cpr)]

    def post(i, host):
        w, t = ups[i]
        end = time.time() + 30
        while True:  # 503: the restarted controller waits for its nodes' reports
            st, b = cl.call(c.NODE_IP[host], 'POST', '/v1/jobs/%s/updates' % name,
                            st_encode(t), {'Content-Type': 'application/x-safetensors',
                                           'X-Tributary-Round': '0',
                                           'X-Tributary-Samples': str(w)}, tok)
            if st == 202 or time.time() > end or st not in (0, 503):
                check(st == 202, '%s update %d on n%d: %d %s' % (name, i, host, st, b[:300]))
                return json.loads(b)
            time.sleep(0.3)
    for i, host in ((0, 0), (1, 2), (2, 0)):
        post(i, host)
    nodes[2].kill(signal.SIGSTOP)
    c.wait_for(lambda: c.round_info(cl, c.NODE_IP[0], name, tok, 0)['lost_nodes'] == ['n2'],
               20, 'n2 drained')
    nodes[2].kill()
    ctl.kill()
    ctl = netns_cluster.Proc(ctl.name + '-again', net.ctl, BIN, ctl.p.args[5:], tmp)
    procs.append(ctl)
    c.wait_for(lambda: 'reconciled with its nodes' in ctl.log_text(), 30,
               'the controller to reconcile:\n' + ctl.log_text()[-3000:])
    for i, host in ((3, 0), (4, 1), (5, 1)):
        post(i, host)
    got = cl_model(cl, c.NODE_IP[1], name, tok, 1)
    kept = [ups[i] for i in (0, 2, 3, 4, 5)]
    ws = np.array([w for w, _ in kept], np.float64)
    for pr in fl.PAIRS:
        A, B = got[pr['a']].astype(np.float64), got[pr['b']].astype(np.float64)
        ref = sum(w / ws.sum() * t[pr['b']].astype(np.float64) @ t[pr['a']].astype(np.float64)
                  for w, (_, t) in zip(ws, kept))
        err = float(np.max(np.abs(B @ A - ref)))
        check(err <= 1e-5, '%s %s: |B A - sum p B A| = %.3g over the 5 kept updates (a slot '
              'handed out twice?)' % (name, pr['name'], err))
        used = sum(t[pr['a']].shape[0] for _, t in kept)
        check(int(got[pr['name'] + '.rank'][0]) == used, '%s %s: rank %r, want %d' %
              (name, pr['name'], got[pr['name'] + '.rank'], used))
    info = c.round_info(cl, c.NODE_IP[0], name, tok, 0)
    check(info['state'] == 'done' and info['updates'] == 5 and info['lost_nodes'] == ['n2'],
          '%s record: %s' % (name, info))
    log('  a flora slot lost with n2 and a controller kill -9 in the same round: 5 updates in '
        '6 slots, none twice; B A equals numpy (1e-5)')
    return ctl


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(c.SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(c.SKIP)
    net = netns_cluster.Net(3)
    c.CTL_IP, c.NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-clflora-')
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
        rng = np.random.default_rng(1617)
        base = fl.e.random_model(rng, fl.BASE)
        run_job(cl, admin, srv, rng, 'clora', base)
        run_job(cl, admin, srv, rng, 'cmerge', base, weighted=False, flora_merge=True)
        log('cluster: flora stacks and merge equal the single node\'s models')
        ctl = slot_gap(cl, admin, net, tmp, procs, ctl, nodes, rng)
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
