# SPDX-License-Identifier: MIT
"""Round time across three node runtimes: locality-aware placement vs round-robin.

Three node runtimes and a controller, each in its own network namespace (as in the
multi-node test); `tributary simulate` in the controller's namespace spreads N clients
over the three gateways and checks every model against the float64 reference. The same
rounds run twice, in one run: once with the controller's default placement (an update
folds on the node whose gateway received it; one sum per node crosses to the round's top),
once with --placement round-robin (leaf k of a round on node k mod 3, wherever its updates
landed: most updates cross to another node first). Printed per placement: median round
time, bytes sent between nodes per round (payloads, from the nodes' counters), and the
ratios. Needs root.

    /usr/bin/python3 bench/cluster/run.py --build build [--clients 300] [--params 1000000]
"""
import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import netns_cluster  # noqa: E402


def metrics(net, ip, port, wait=False):
    p = netns_cluster.sh('curl', '-sS', '--max-time', '10', 'http://%s:%d/metrics' % (ip, port),
                         ns=net.ctl, check=not wait)
    out = {}
    for line in p.stdout.splitlines():
        if line and not line.startswith('#'):
            k, _, v = line.rpartition(' ')
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def cross_bytes(net, port):
    total = 0.0
    for ip in net.node_ip:
        m = metrics(net, ip, port)
        total += m.get('tributary_cluster_bytes_sent_total{kind="partial"}', 0)
        total += m.get('tributary_cluster_bytes_sent_total{kind="update"}', 0)
    return total


def one(args, net, placement, port, tmp):
    ctl_port, peer = 7070 + port - 8080, 7170 + port - 8080
    ctl, nodes = netns_cluster.start(net, args.tributary, tmp, port=port, ctl_port=ctl_port,
                                     peer_port=peer, placement=placement,
                                     arena_mb=args.arena_mb, node_args=['--no-huge'],
                                     log_level='warn')
    try:
        end = time.time() + 60
        for ip in net.node_ip:
            while metrics(net, ip, port, wait=True).get('tributary_cluster_joined') != 1:
                if time.time() > end:
                    raise RuntimeError('node %s did not join' % ip)
                time.sleep(0.2)
        report = os.path.join(tmp, 'report-%s.json' % placement)
        urls = ','.join('http://%s:%d' % (ip, port) for ip in net.node_ip)
        cmd = ['ip', 'netns', 'exec', net.ctl, args.tributary, 'simulate', '--url', urls,
               '--job', 'bench', '--clients', str(args.clients), '--rounds', str(args.rounds),
               '--params', str(args.params), '--data-dir',
               os.path.join(tmp, 'ctl-%d' % ctl_port), '--report-json', report, '--quiet']
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if p.returncode:
            raise RuntimeError('simulate (%s) failed:\n%s%s' % (placement, p.stdout,
                                                               p.stderr[-3000:]))
        with open(report) as f:
            rep = json.load(f)
        secs = [r['seconds'] for r in rep['rounds']]
        edges = [len(r.get('edges', [])) for r in rep['rounds']]
        xbytes = cross_bytes(net, port)
        for pr in nodes + [ctl]:
            pr.p.send_signal(signal.SIGTERM)
            try:
                pr.p.wait(15)
            except subprocess.TimeoutExpired:
                pass
        return {'placement': placement, 'round_s': statistics.median(secs),
                'rounds': secs, 'cross_bytes_per_round': xbytes / len(secs),
                'edges': edges, 'wall_s': wall}
    finally:
        for pr in [ctl] + nodes:
            pr.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default='build')
    ap.add_argument('--clients', type=int, default=300)
    ap.add_argument('--params', type=int, default=1000000)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--arena-mb', type=int, default=1024)
    ap.add_argument('--csv', default=None)
    args = ap.parse_args()
    args.tributary = os.path.abspath(os.path.join(args.build, 'tributary'))
    if os.geteuid() != 0:
        print('bench/cluster: needs root (network namespaces); not run')
        return 1
    net = netns_cluster.Net(3)
    tmp = tempfile.mkdtemp(prefix='trib-bench-cluster-')
    res = []
    try:
        net.up()
        for k, placement in enumerate(['locality', 'round-robin']):
            r = one(args, net, placement, 8080 + k, tmp)
            res.append(r)
            print('  %-11s  median round %6.3f s  (rounds %s)  cross-node %7.1f MB/round  '
                  'edges/round %s' % (placement, r['round_s'],
                                      ' '.join('%.3f' % s for s in r['rounds']),
                                      r['cross_bytes_per_round'] / 1e6, r['edges']),
                  flush=True)
    finally:
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)
    loc, rr = res
    print('%d nodes x %d clients x %d params, %d rounds: round-robin / locality round time '
          '%.2fx; cross-node bytes %.1f MB vs %.1f MB a round (%.1fx)' %
          (3, args.clients, args.params, args.rounds, rr['round_s'] / loc['round_s'],
           rr['cross_bytes_per_round'] / 1e6, loc['cross_bytes_per_round'] / 1e6,
           rr['cross_bytes_per_round'] / max(loc['cross_bytes_per_round'], 1)))
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, 'a', newline='') as f:
            w = csv.writer(f)
            if new:
                w.writerow(['date', 'clients', 'params', 'rounds', 'placement', 'median_round_s',
                            'cross_mb_per_round'])
            for r in res:
                w.writerow([time.strftime('%Y-%m-%d'), args.clients, args.params, args.rounds,
                            r['placement'], '%.4f' % r['round_s'],
                            '%.2f' % (r['cross_bytes_per_round'] / 1e6)])
    return 0


if __name__ == '__main__':
    sys.exit(main())
