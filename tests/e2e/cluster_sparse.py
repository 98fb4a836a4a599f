# SPDX-License-Identifier: MIT
"""Sparse updates across nodes: with round-robin placement an update folds on another node than
the gateway that took it, so its sparse records, indices and values cross with it (the forwarded
bytes run up to the segment table; the records' offsets are relative to themselves). Mixed dense
and sparse clients (safetensors and npz, I32 and I64 indices) over three gateways, for FedAvg on
deltas, FedAdam on deltas and clipping: every cluster model equals the numpy float64 reference
and the model of a `tributary up` fed the very same updates. A hostile sparse body is refused by
a cluster gateway as by one node.

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
import netns_cluster  # noqa: E402
import sparse as sp  # noqa: E402  (the single node's bodies and reference)
from algorithms import server_ref  # noqa: E402
from e2e_common import (BIN, Failure, Server, arena_files_in, check, log,  # noqa: E402
                        main, remove_arena_files, st_decode)

ROUNDS = 2
CASES = [
    ('sdelta', {'update': 'delta'}),
    ('sadam', {'algorithm': 'fedadam', 'update': 'delta', 'server_lr': 0.1}),
    ('sclip', {'update': 'delta', 'clip_norm': 3.0}),
]


def model_at(cl, host, job, tok, r):
    b = None
    for _ in range(300):
        st, b = cl.call(host, 'GET', '/v1/jobs/%s/model?round=%d' % (job, r + 1), token=tok)
        if st == 200:
            _, t, _ = st_decode(b)
            return sp.flat(t)
        time.sleep(0.2)
    raise Failure('model %d of %s never appeared on %s: %r' % (r + 1, job, host, b[:200]))


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(c.SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(c.SKIP)
    net = netns_cluster.Net(3)
    c.CTL_IP, c.NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-clsp-')
    procs = []
    try:
        net.up()
        ctl, nodes = netns_cluster.start(net, BIN, tmp, placement='round-robin',
                                         node_args=['--no-huge'])
        procs += [ctl] + nodes
        cl = c.Client(net.ctl)
        c.wait_joined(cl)
        admin = netns_cluster.admin_token(tmp)
        rng = np.random.default_rng(2606)
        with Server() as one:
            toks, one_tok, eff = {}, {}, {}
            for name, spec in CASES:
                body = dict({'name': name, 'clients_per_round': sp.CPR, 'fan_in': 2,
                             'tensors': sp.SCHEMA}, **spec)
                st, b = cl.call(c.NODE_IP[0], 'POST', '/v1/jobs', json.dumps(body).encode(),
                                {'Content-Type': 'application/json'}, admin)
                check(st == 201, 'create %s on the cluster: %d %s' % (name, st, b[:300]))
                toks[name] = json.loads(b)['token']
                one_tok[name] = one.create_job(body)['token']
                eff[name] = one.status(name)['parameters']
            c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/sdelta', token=toks['sdelta'])[0]
                                   == 200 for h in c.NODE_IP), 10, 'the jobs on every node')
            crossed = 0
            for name, spec in CASES:
                kind, clip = spec.get('algorithm', 'fedavg'), spec.get('clip_norm')
                x, st_ref = np.zeros(sp.N), {}
                for r in range(ROUNDS):
                    ups = []
                    for k in range(sp.CPR):
                        body, fmt, full, _ = sp.client_update(rng, k, 0.5 + k)
                        n = int(rng.integers(1, 40))
                        st, b = cl.call(c.NODE_IP[k % 3], 'POST',
                                        '/v1/jobs/%s/updates' % name, body,
                                        {'Content-Type': fmt, 'X-Tributary-Round': str(r),
                                         'X-Tributary-Samples': str(n)}, toks[name])
                        check(st == 202, '%s update %d: %d %s' % (name, k, st, b[:300]))
                        if json.loads(b)['node'] != 'n%d' % (k % 3) and k % 3:
                            crossed += 1  # a sparse body folded on another node
                        one.post_update(name, one_tok[name], r, body, samples=n, ctype=fmt)
                        u = sp.flat(full)
                        if clip:
                            u = u * min(1.0, clip / max(np.linalg.norm(u), 1e-300))
                        ups.append((n, u))
                    mean = sum(w * u for w, u in ups) / sum(w for w, _ in ups)
                    x = x + mean if kind == 'fedavg' else server_ref(kind, eff[name], x, mean,
                                                                     st_ref)
                    got = model_at(cl, c.NODE_IP[r % 3], name, toks[name], r)
                    single = sp.model_of(one, name, one_tok[name], r)
                    scale = max(float(np.max(np.abs(x))), 1e-3)
                    tol = (1e-6 if kind == 'fedavg' else 1e-4) * scale
                    err = float(np.max(np.abs(got - x)))
                    check(err <= tol, '%s round %d: the cluster is %.3g from numpy (> %.3g)' %
                          (name, r, err, tol))
                    err1 = float(np.max(np.abs(got - single)))
                    check(err1 <= tol, '%s round %d: the cluster is %.3g from the single node '
                          '(> %.3g)' % (name, r, err1, tol))
                    x = got
                log('%s: %d rounds on three nodes equal numpy and the single node' %
                    (name, ROUNDS))
            check(crossed > 0, 'no sparse update crossed nodes under round-robin placement')
            log('%d sparse updates folded on another node than their gateway' % crossed)
            # A duplicated index is refused by a cluster gateway, naming it; nothing counted.
            bad = sp.body_of({'b': np.zeros(sp.NUMEL['b'], '<f4')},
                             {'w': (np.array([3, 3], '<i8'), np.ones(2, '<f4'))}, sp.ST)
            st, b = cl.call(c.NODE_IP[1], 'POST', '/v1/jobs/sdelta/updates', bad,
                            {'Content-Type': sp.ST, 'X-Tributary-Round': str(ROUNDS),
                             'X-Tributary-Samples': '1'}, toks['sdelta'])
            check(st == 422 and b'twice' in b and b'w.indices' in b,
                  'a duplicated index on a cluster node: %d %s' % (st, b[:300]))
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
