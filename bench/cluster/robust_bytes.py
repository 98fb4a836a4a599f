# SPDX-License-Identifier: MIT
"""Cross-node bytes of a robust round against FedAvg's, on the 3-node netns cluster.

Each rule runs ROUNDS rounds of K updates of N float32 parameters, spread evenly over the three
gateways, and so does FedAvg with the very same updates; the bytes are the nodes' own
counters, tributary_cluster_bytes_sent_total{kind} summed over the nodes (shard: slices,
distances, selections and ranges; partial: node sums; update: forwarded updates), read
before and after each round. Prints bytes per round and the ratio to FedAvg's.

Needs root (ip netns, veth, a bridge). Usage:
  sudo /usr/bin/python3 bench/cluster/robust_bytes.py --build build [--clients 20]
       [--params 100000] [--rounds 3] [--placement locality|round-robin]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, '..', '..')
sys.path.insert(0, os.path.join(ROOT, 'tests', 'e2e'))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import cluster as c  # noqa: E402
import netns_cluster  # noqa: E402

RULES = [('fedavg', {}), ('median', {}), ('trimmed_mean', {'trim': 0.2}),
         ('krum', {'m': 1}), ('krum', {'m': 3}), ('bulyan', {})]
KINDS = ('shard', 'partial', 'update')


def sent(cl):
    tot = dict.fromkeys(KINDS, 0)
    for h in c.NODE_IP:
        m = c.metrics(cl, h)
        for k in KINDS:
            tot[k] += int(m.get('tributary_cluster_bytes_sent_total{kind="%s"}' % k, 0))
    return tot


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default='build')
    ap.add_argument('--clients', type=int, default=20)
    ap.add_argument('--params', type=int, default=100000)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--placement', default='locality')
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('needs root for ip netns, veth and a bridge')
    binary = os.path.abspath(os.path.join(a.build, 'tributary'))
    os.environ.setdefault('TRIBUTARY_FN_BIN', binary + '-fn')
    net = netns_cluster.Net(3)
    c.CTL_IP, c.NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-robust-bytes-')
    procs = []
    rng = np.random.default_rng(5)
    ups = [rng.standard_normal(a.params).astype(np.float32) for _ in range(a.clients)]
    try:
        net.up()
        mb = max(256, int(a.clients * a.params * 4 * 3 / 2**20) + 64)
        ctl, nodes = netns_cluster.start(net, binary, tmp, node_args=['--no-huge'], arena_mb=mb,
                                         placement=None if a.placement == 'locality'
                                         else a.placement, log_level='warn')
        procs += [ctl] + nodes
        cl = c.Client(net.ctl)
        c.wait_joined(cl)
        admin = netns_cluster.admin_token(tmp)
        fedavg = None
        print('%d clients x %d float32 params (%.1f MB a round), 3 nodes, placement %s, '
              '%d rounds' % (a.clients, a.params, a.clients * a.params * 4 / 1e6, a.placement,
                             a.rounds))
        print('%-16s %14s %14s %14s %14s %8s' % ('rule', 'shard B/round', 'partial B/round',
                                                 'update B/round', 'total B/round', 'x fedavg'))
        for idx, (rule, extra) in enumerate(RULES):
            name = 'b%d' % idx
            spec = dict({'name': name, 'clients_per_round': a.clients, 'algorithm': rule,
                         'params': a.params}, **extra)
            st, b = cl.call(c.NODE_IP[0], 'POST', '/v1/jobs', json.dumps(spec).encode(),
                            {'Content-Type': 'application/json'}, admin)
            if st != 201:
                sys.exit('create %s: %d %s' % (rule, st, b[:300]))
            tok = json.loads(b)['token']
            c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/' + name, token=tok)[0] == 200
                                   for h in c.NODE_IP), 10, name + ' on every node')
            tot = dict.fromkeys(KINDS, 0)
            for r in range(a.rounds):
                before = sent(cl)
                res = c.post_many(cl, [(c.NODE_IP[k % 3], name, tok, r, x, 1)
                                       for k, x in enumerate(ups)])
                bad = [st for st, _ in res if st != 202]
                if bad:
                    sys.exit('%s round %d: %s' % (rule, r, bad[:5]))
                c.get_model(cl, c.NODE_IP[0], name, tok, r + 1, timeout=120)
                after = sent(cl)
                for k in KINDS:
                    tot[k] += after[k] - before[k]
            per = {k: tot[k] / a.rounds for k in KINDS}
            total = sum(per.values())
            if rule == 'fedavg':
                fedavg = total
            label = rule + ('(m=%d)' % extra['m'] if rule == 'krum' else '')
            print('%-16s %14.0f %14.0f %14.0f %14.0f %8.2f' %
                  (label, per['shard'], per['partial'], per['update'], total,
                   total / fedavg if fedavg else float('nan')))
        for p in nodes + [ctl]:
            c.stop(p)
    finally:
        for p in procs:
            p.close()
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
