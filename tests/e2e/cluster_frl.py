# SPDX-License-Identifier: MIT
"""frl on three netns nodes: the cluster's model equals the single node's, bit for bit.

Each round's six rankings (I32 safetensors, scores with many ties) are spread over the three
gateways, so that every node sums the votes of some in its tree and the round's top adds the
nodes' sums (uint32, exact) and ranks them once. A `tributary up` next to the cluster gets the
very same rankings: every version's safetensors file served by each node must be byte-identical
to the single node's and equal numpy's stable argsort of the votes (frl.py's reference). Version
0 is the identity everywhere; the controller keeps the same file; after a kill -9 of the
controller it loads its I32 files back and a 4th round agrees too; a hostile ranking sent to a
node is refused there (422 naming the tensor and the index) and raw f32 GET /model is a 406.

Needs root (ip netns, veth, a bridge): exit status 77 otherwise, as cluster.py.
"""
import json
import os
import shutil
import sys
import tempfile
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import cluster as c  # noqa: E402
import frl  # noqa: E402  (the single node's reference and encoders)
import netns_cluster  # noqa: E402
from e2e_common import (BIN, Server, arena_files_in, check, log, main,  # noqa: E402
                        remove_arena_files)

CPR = 6
ROUNDS = 3
SCHEMA = [{'name': 'w', 'shape': [40, 25], 'dtype': 'F32'},
          {'name': 'b', 'shape': [17], 'dtype': 'F32'}]
ST = 'application/x-safetensors'


def post_many(cl, items):
    """items: (host, token, round, body); in parallel; returns [(status, body)]."""
    out = [None] * len(items)

    def run(k):
        host, tok, r, body = items[k]
        out[k] = cl.call(host, 'POST', '/v1/jobs/cfrl/updates', body,
                         {'Content-Type': ST, 'X-Tributary-Round': str(r)}, tok)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(len(items))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def model_bytes(cl, host, tok, v, timeout=60):
    return c.wait_for(lambda: _get(cl, host, tok, v), timeout,
                      'model v%d of cfrl on %s' % (v, host))


def _get(cl, host, tok, v):
    st, b = cl.call(host, 'GET', '/v1/jobs/cfrl/model?round=%d' % v, token=tok)
    return b if st == 200 else None


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(c.SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(c.SKIP)
    net = netns_cluster.Net(3)
    c.CTL_IP, c.NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-clfrl-')
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
        spec = {'name': 'cfrl', 'clients_per_round': CPR, 'fan_in': 2, 'algorithm': 'frl',
                'tensors': SCHEMA}
        st, b = cl.call(c.NODE_IP[1], 'POST', '/v1/jobs', json.dumps(spec).encode(),
                        {'Content-Type': 'application/json'}, admin)
        check(st == 201, 'create frl on a cluster: %d %s' % (st, b[:300]))
        tok = json.loads(b)['token']
        one = srv.create_job(spec)['token']
        c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/cfrl', token=tok)[0] == 200
                               for h in c.NODE_IP), 5, 'cfrl known on every node')
        ref = frl.Reference(SCHEMA)
        _, _, v0 = srv.get_model('cfrl', one, '?round=0')
        frl.check_models_equal(frl.decode_i32(v0), ref.model(), 'single node v0')
        for h in c.NODE_IP:
            check(model_bytes(cl, h, tok, 0) == v0, 'v0 on %s is not the identity file' % h)
        log('v0: every node serves the identity ranking, the same bytes as the single node')
        rng = np.random.default_rng(1616)
        for r in range(ROUNDS + 1):
            if r == ROUNDS:
                # kill -9 of the controller: it loads its I32 files back (their header is
                # the frl one), the nodes join again, and one more round agrees.
                ctl.kill()
                args = ctl.p.args[5:]
                ctl = netns_cluster.Proc('controller-run2', net.ctl, BIN, args, tmp)
                procs.append(ctl)
                for i in range(3):
                    c.wait_for(lambda i=i: 'joining again' in nodes[i].log_text() and
                               c.metrics(cl, c.NODE_IP[i]).get('tributary_cluster_joined') ==
                               1, 30, 'n%d to join the restarted controller' % i)
                c.wait_for(lambda: 'reconciled with its nodes' in ctl.log_text(), 15,
                           'the controller to reconcile:\n' + ctl.log_text()[-3000:])
                check('not a model of job' not in ctl.log_text(),
                      'the restarted controller refused its frl model file:\n' +
                      ctl.log_text()[-3000:])
                log('  controller kill -9 and restart after %d rounds' % ROUNDS)
            ref.reset()
            items = []
            for k in range(CPR):
                ranks = frl.rankings(rng, SCHEMA, shaped=k % 2 == 1)
                ref.add(ranks)
                body = frl.st_i32(ranks)
                items.append((c.NODE_IP[k % 3], tok, r, body))
                srv.post_update('cfrl', one, r, body, ctype=ST)
            for k, (st, b) in enumerate(post_many(cl, items)):
                check(st == 202, 'cfrl round %d update %d: %d %s' % (r, k, st, b[:300]))
            _, _, single = srv.get_model('cfrl', one, '?after=%d' % r, timeout=60)
            frl.check_models_equal(frl.decode_i32(single), ref.model(),
                                   'single node v%d' % (r + 1))
            for h in c.NODE_IP:
                got = model_bytes(cl, h, tok, r + 1)
                check(got == single, 'round %d: the model on %s differs from the single '
                      'node\'s (%d vs %d bytes)' % (r, h, len(got), len(single)))
            # The controller keeps the same file (I32 header, the ranking) for joining nodes.
            path = os.path.join(tmp, 'ctl-7070', 'jobs', 'cfrl', 'round-%d.safetensors' % (r + 1))
            with open(path, 'rb') as f:
                check(f.read() == single, 'round %d: the controller\'s model file differs '
                      'from the single node\'s' % r)
            info = c.round_info(cl, c.NODE_IP[0], 'cfrl', tok, r)
            check(info['updates'] == CPR, 'cfrl round %d record: %s' % (r, info))
            log('  round %d: %d rankings over 3 nodes: every node\'s model equals the single '
                'node\'s bit for bit and numpy\'s vote' % (r, CPR))
        # The tops really added nodes' sums (not one node's tree holding every ranking).
        tops = [ln for p in nodes for ln in p.log_text().splitlines()
                if 'job cfrl round' in ln and "the round's top folded" in ln]
        check(len(tops) == ROUNDS + 1 and all('from 3 nodes' in ln for ln in tops),
              'the rounds\' tops: %r' % tops)
        sums = sum(c.metrics(cl, h).get('tributary_cluster_partials_received_total', 0)
                   for h in c.NODE_IP)
        log('  the tops: %s; partial sums received over the network: %d' %
            ('; '.join(ln.split('] ', 1)[-1] for ln in tops), sums))
        # Refusals on a cluster node, before anything is forwarded.
        bad = frl.rankings(rng, SCHEMA)
        bad['b'] = bad['b'].copy()
        bad['b'][4] = bad['b'][1]
        st, b = cl.call(c.NODE_IP[2], 'POST', '/v1/jobs/cfrl/updates', frl.st_i32(bad),
                        {'Content-Type': ST, 'X-Tributary-Round': str(ROUNDS + 1)}, tok)
        obj = json.loads(b or b'{}')
        check(st == 422 and obj.get('tensor') == 'b' and obj.get('index') == 4,
              'a duplicate index on a cluster node: %d %s' % (st, b[:300]))
        st, b = cl.call(c.NODE_IP[0], 'GET', '/v1/jobs/cfrl/model', None,
                        {'Accept': 'application/octet-stream'}, tok)
        check(st == 406, 'raw f32 of an frl model on a cluster node: %d %s' % (st, b[:200]))
        st, b = cl.call(c.NODE_IP[0], 'PUT', '/v1/jobs/cfrl/model', b'\0' * 8,
                        {'Content-Type': 'application/octet-stream'}, tok)
        check(st == 409, 'PUT /model of an frl job on a cluster node: %d %s' % (st, b[:200]))
        log('cluster: a duplicate index 422 naming b[4]; raw f32 406; PUT /model 409')
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
