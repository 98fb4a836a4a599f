# SPDX-License-Identifier: MIT
"""Client selection across three netns nodes (issue 15): the controller counts the tasks.

A job with "selection": {"per_round": 5, "overcommit": 1.4} on a cluster hands out exactly
ceil(5 x 1.4) = 7 tasks a round, cluster-wide, to 20 clients asking at once on three gateways;
a client asking again (on another gateway) gets the same task; a client without a task gets
409 on any gateway; the round closes at 5 updates and its model is their weighted mean; the
two tasks left over are void once the round closed (409 stale). While the controller is away
no update of the job is taken provisionally (only it knows who holds a task): 503. After a
kill -9 and a restart of the controller, the 7 tasks it had granted stand: the same clients
train, the rest wait (no second batch for the same round), and round 1 gets 7 new tasks.
Then 10 Python client loops (Job.run) over the three gateways take part in a 3-round job
(exactly 3 updates a round, every loop ends with the job done), and `tributary simulate`
runs 3 rounds of 20 clients over the three gateways on another selecting job (at most 7 tasks
a round, 5 close it, its models checked).

Needs root (ip netns, veth, a bridge): exit status 77 otherwise, as cluster.py.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import cluster as c  # noqa: E402
import netns_cluster  # noqa: E402
from e2e_common import BIN, arena_files_in, check, log, main, remove_arena_files  # noqa: E402

K, F, MAX = 5, 1.4, 7
CLIENTS = ['c%02d' % i for i in range(20)]
N = 2000


def gw(k):
    """The gateway client number @k asks (a different one for each ask: @k + attempt)."""
    return c.NODE_IP[k % 3]


def task(cl, host, tok):
    st, b = cl.call(host, 'GET', '/v1/jobs/csel/task', token=tok)
    check(st == 200, 'GET task on %s: %d %s' % (host, st, b[:300]))
    a = json.loads(b)
    check(a['action'] in ('train', 'wait'), 'task answer: %r' % a)
    return a


def ask_all(cl, toks, shift):
    """Every client asks at once, client k on gateway k + @shift: {client: answer}."""
    out, errs = {}, []

    def one(k, cid):
        try:
            out[cid] = task(cl, gw(k + shift), toks[cid])
        except Exception as ex:  # noqa: BLE001 -- reported below
            errs.append('%s: %s' % (cid, ex))
    ts = [threading.Thread(target=one, args=(k, cid)) for k, cid in enumerate(CLIENTS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errs, 'task requests failed: %s' % errs)
    return out


def trained(ans):
    return sorted(cid for cid, a in ans.items() if a['action'] == 'train')


def ctl_selection(cl, admin):
    st, b = cl.call(c.NODE_IP[1], 'GET', '/v1/cluster', token=admin)
    check(st == 200, 'GET /v1/cluster: %d %s' % (st, b[:300]))
    job = [j for j in json.loads(b)['jobs'] if j['name'] == 'csel']
    check(len(job) == 1, 'csel in the controller status: %s' % b[:500])
    return job[0]


LOOP = r"""
import json, sys, threading
sys.path.insert(0, sys.argv[1])
import numpy as np
import tributary_client as tc
cfg = json.loads(sys.stdin.read())
hist, errs = {}, []


def one(k, cid):
    def train(model, config):
        return {n: np.full_like(a, k + 1) for n, a in model.items()}, k + 1
    try:
        job = tc.Client(cfg['urls'][k % 3], cfg['toks'][cid]).job('loop')
        hist[cid] = [h['round'] for h in job.run(train, timeout=60)]
    except Exception as ex:  # noqa: BLE001
        errs.append('%s: %r' % (cid, ex))


ts = [threading.Thread(target=one, args=(k, cid)) for k, cid in enumerate(sorted(cfg['toks']))]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps({'hist': hist, 'errs': errs}))
"""


def client_loop(net, cl, admin):
    """The Python client's run() loop, 10 clients over three gateways, on a selecting job of
    3 rounds (per_round 3, overcommit 1.4: 5 tasks): each round takes exactly 3 updates, the
    late task holders skip to the next round, every loop ends with the job done, and the last
    model is the weighted mean of the last round's 3 updates."""
    st, b = cl.call(c.NODE_IP[2], 'POST', '/v1/jobs', json.dumps(
        {'name': 'loop', 'params': 64, 'client_auth': 'required', 'num_rounds': 3,
         'selection': {'per_round': 3, 'overcommit': 1.4}}).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create loop: %d %s' % (st, b[:300]))
    jtok = json.loads(b)['token']
    toks = {}
    for k in range(10):
        st, b = cl.call(gw(k), 'POST', '/v1/jobs/loop/clients',
                        json.dumps({'client': 'l%d' % k}).encode(),
                        {'Content-Type': 'application/json'}, admin)
        check(st == 201, 'mint l%d: %d %s' % (k, st, b[:200]))
        toks['l%d' % k] = json.loads(b)['token']
    cfg = {'urls': ['http://%s:8080' % ip for ip in c.NODE_IP], 'toks': toks}
    p = subprocess.run(['ip', 'netns', 'exec', net.ctl, sys.executable, '-c', LOOP,
                        os.path.join(HERE, '..', '..', 'clients', 'python')],
                       input=json.dumps(cfg), capture_output=True, text=True, timeout=150)
    check(p.returncode == 0, 'the client loops: rc %d\n%s' % (p.returncode, p.stderr[-3000:]))
    out = json.loads(p.stdout)
    check(not out['errs'], 'client loops failed: %s' % out['errs'])
    per = {r: sorted(cid for cid, h in out['hist'].items() if r in h) for r in range(3)}
    check(all(len(per[r]) == 3 for r in range(3)) and
          sum(len(h) for h in out['hist'].values()) == 9,
          'updates taken per round: %s' % per)
    m = c.get_model(cl, c.NODE_IP[0], 'loop', jtok, 3)
    ws = [int(cid[1:]) + 1 for cid in per[2]]
    c.check_model(m, [np.full(64, w, np.float32) for w in ws], ws, 'loop round 2')
    log('client loops over 3 gateways: rounds of exactly 3 updates (%s), every loop ended '
        'with the job done' % '; '.join(' '.join(per[r]) for r in range(3)))


def simulate(net, cl, admin, tmp):
    """`tributary simulate` over the three gateways on a selecting job: 20 clients ask for
    tasks on their own gateway each round; at most 7 train, 5 close it, every model checked
    against simulate's reference."""
    st, b = cl.call(c.NODE_IP[0], 'POST', '/v1/jobs', json.dumps(
        {'name': 'simsel', 'params': 500, 'client_auth': 'required',
         'selection': {'per_round': K, 'overcommit': F}}).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create simsel: %d %s' % (st, b[:300]))
    tok = json.loads(b)['token']
    c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/simsel', token=tok)[0] == 200
                           for h in c.NODE_IP), 5, 'simsel on every node')
    urls = ','.join('http://%s:8080' % ip for ip in c.NODE_IP)
    p = subprocess.run(['ip', 'netns', 'exec', net.ctl, BIN, 'simulate', '--url', urls,
                        '--job', 'simsel', '--clients', '20', '--rounds', '3', '--params', '500',
                        '--data-dir', os.path.join(tmp, 'ctl-7070')],
                       capture_output=True, text=True, timeout=150)
    out = p.stdout + p.stderr
    check(p.returncode == 0, 'simulate on a selecting cluster job: rc %d\n%s' %
          (p.returncode, out[-3000:]))
    for r in range(3):
        m = re.search(r'round %d: (\d+) tasks for 20 clients \((\d+) told to wait\); 5 updates '
                      r'closed the round, (\d+) late' % r, out)
        check(m and 5 <= int(m.group(1)) <= MAX and int(m.group(1)) + int(m.group(2)) == 20,
              'simulate round %d:\n%s' % (r, out[-3000:]))
    log('simulate over 3 gateways: 3 rounds of at most %d tasks for 20 clients, closed at %d, '
        'models checked' % (MAX, K))


def key_resend(cl, admin):
    """A client that heard no answer resends with the same Idempotency-Key to another
    gateway (the Python client's failover): counted once. Each node knew only its own keys,
    so the cluster counted it twice; now the controller keeps the round's keys. Moments
    after the first count the resend gets 503 (the first may still fail before its 202),
    later the first answer: the same receipt. The model is the mean of the 3 distinct."""
    st, b = cl.call(c.NODE_IP[0], 'POST', '/v1/jobs', json.dumps(
        {'name': 'ckey', 'clients_per_round': 3, 'params': 10}).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create ckey: %d %s' % (st, b[:300]))
    tok = json.loads(b)['token']
    c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/ckey', token=tok)[0] == 200
                           for h in c.NODE_IP), 5, 'ckey known on every node')
    xs = [np.full(10, v, np.float32) for v in (1.0, 2.0, 6.0)]

    def post_k(h, i):
        return cl.call(c.NODE_IP[h], 'POST', '/v1/jobs/ckey/updates', xs[i].tobytes(),
                       {'Content-Type': 'application/octet-stream', 'X-Tributary-Round': '0',
                        'Idempotency-Key': 'ckey-%d' % i}, tok)
    st, b = post_k(0, 0)
    check(st == 202, 'ckey first: %d %s' % (st, b[:300]))
    first = json.loads(b)
    st, b = post_k(1, 0)
    check(st == 503 and b'Idempotency-Key' in b, 'ckey resend at once: %d %s' % (st, b[:300]))
    time.sleep(10.5)
    st, b = post_k(2, 0)
    check(st == 202 and json.loads(b)['receipt'] == first['receipt'],
          'ckey resend to n2: %d %s (first %s)' % (st, b[:300], first))
    for i in (1, 2):
        st, b = post_k(i, i)
        check(st == 202, 'ckey %d: %d %s' % (i, st, b[:300]))
    m = c.get_model(cl, c.NODE_IP[1], 'ckey', tok, 1, timeout=30)
    c.check_model(m, xs, [1, 1, 1], 'ckey: a keyed resend through two other gateways')
    info = c.round_info(cl, c.NODE_IP[2], 'ckey', tok, 0)
    check(info['updates'] == 3, 'ckey record: %s' % info)


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(c.SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(c.SKIP)
    net = netns_cluster.Net(3)
    c.CTL_IP, c.NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-clsel-')
    procs = []
    try:
        net.up()
        ctl, nodes = netns_cluster.start(net, BIN, tmp, node_args=['--no-huge'], arena_mb=64)
        procs += [ctl] + nodes
        cl = c.Client(net.ctl)
        c.wait_joined(cl)
        admin = netns_cluster.admin_token(tmp)
        rng = np.random.default_rng(1515)

        # The job: created on n1, per_round becomes clients_per_round on every node.
        st, b = cl.call(c.NODE_IP[1], 'POST', '/v1/jobs', json.dumps(
            {'name': 'csel', 'params': N, 'fan_in': 2, 'client_auth': 'required',
             'selection': {'per_round': K, 'overcommit': F}}).encode(),
            {'Content-Type': 'application/json'}, admin)
        check(st == 201, 'create a selecting job on a cluster: %d %s' % (st, b[:300]))
        jtok = json.loads(b)['token']
        for h in c.NODE_IP:
            s = c.wait_for(lambda h=h: (lambda r: r[0] == 200 and json.loads(r[1]))(
                cl.call(h, 'GET', '/v1/jobs/csel', token=jtok)), 5, 'csel on ' + h)
            check(s['clients_per_round'] == K and s['selection'] ==
                  {'per_round': K, 'overcommit': F, 'tasks_max': MAX},
                  'csel status on %s: %s' % (h, s.get('selection')))
        sel = ctl_selection(cl, admin)
        check(sel['clients_per_round'] == K and sel['selection'] ==
              {'per_round': K, 'overcommit': F, 'tasks_out': 0, 'tasks_max': MAX},
              'the controller\'s view of csel: %s' % sel)
        toks = {}
        for k, cid in enumerate(CLIENTS):
            st, b = cl.call(gw(k), 'POST', '/v1/jobs/csel/clients',
                            json.dumps({'client': cid}).encode(),
                            {'Content-Type': 'application/json'}, admin)
            check(st == 201, 'mint %s: %d %s' % (cid, st, b[:200]))
            toks[cid] = json.loads(b)['token']
        st, b = cl.call(c.NODE_IP[2], 'GET', '/v1/jobs/csel/task', token=jtok)
        check(st == 403 and b'client token' in b, 'the job token asks a task: %d %s' % (st, b))

        # 20 clients at once on three gateways: exactly 7 tasks cluster-wide.
        ans = ask_all(cl, toks, 0)
        train = trained(ans)
        check(len(train) == MAX, '20 clients on 3 gateways: %d tasks (%s), want %d' %
              (len(train), ' '.join(train), MAX))
        for cid in train:
            check(ans[cid] == {'action': 'train', 'round': 0, 'version': 0, 'config': {},
                               'deadline_s': None, 'task': '0:' + cid},
                  'task of %s: %r' % (cid, ans[cid]))
        wait = [cid for cid in CLIENTS if cid not in train]
        check(all(ans[cid]['round'] == 0 for cid in wait), 'wait answers: %r' % ans)
        check(ctl_selection(cl, admin)['selection']['tasks_out'] == MAX,
              'tasks_out at the controller after the handout')
        # Asked again on every gateway: the same task for a holder, wait for the others.
        for cid in train[:3] + wait[:2]:
            for h in c.NODE_IP:
                check(task(cl, h, toks[cid]) == ans[cid], '%s asking again on %s' % (cid, h))
        log('20 clients on 3 gateways: %d tasks (%s), %d told to wait; asking again on each '
            'gateway gives the same answer' % (len(train), ' '.join(train), len(wait)))

        ups = {cid: (rng.uniform(-1, 1, N).astype(np.float32), int(rng.integers(1, 50)))
               for cid in CLIENTS}

        def post(cid, host, rnd):
            x, w = ups[cid]
            return c.post(cl, host, 'csel', toks[cid], rnd, x, w)

        for h in c.NODE_IP:
            st, b = post(wait[0], h, 0)
            check(st == 409 and b'no task for round 0' in b and b'/task' in b,
                  'an update without a task on %s: %d %s' % (h, st, b[:300]))
        res = c.post_many(cl, [(c.NODE_IP[0], 'csel', toks[train[0]], 0) + ups[train[0]],
                               (c.NODE_IP[2], 'csel', toks[train[1]], 0) + ups[train[1]]])
        for cid, (st, b) in zip(train, res):
            check(st == 202, '%s with a task: %d %s' % (cid, st, b[:300]))
        log('an update without a task: 409 on every gateway; two with a task: 202')

        # The controller killed: no update of a selecting job is taken without it.
        ctl.kill()
        c.wait_for(lambda: 'no answer to a heartbeat' in nodes[1].log_text(), 20,
                   'n1 to notice the controller is away')
        st, b = post(train[2], c.NODE_IP[1], 0)
        check(st == 503 and b'selection' in b,
              'an update of a selecting job while the controller is away: %d %s' %
              (st, b[:300]))
        args = ctl.p.args[5:]
        ctl = netns_cluster.Proc('controller-run2', net.ctl, BIN, args, tmp)
        procs.append(ctl)
        for i in range(3):
            c.wait_for(lambda i=i: c.metrics(cl, c.NODE_IP[i]).get(
                'tributary_cluster_joined') == 1 and 'joining again' in nodes[i].log_text(),
                30, 'n%d to join the restarted controller' % i)
        c.wait_for(lambda: 'reconciled with its nodes' in ctl.log_text(), 15,
                   'the controller to reconcile')

        # The tasks stand: asked in another order on other gateways, the same 7 train.
        def settled():
            a = ask_all(cl, toks, 1)
            return a if all(x['action'] == 'train' for x in (a[t] for t in train)) else None
        ans2 = c.wait_for(settled, 20, 'the granted tasks after the restart')
        check(trained(ans2) == train and all(ans2[cid] == ans[cid] for cid in train),
              'tasks after kill -9: %s, before: %s' % (trained(ans2), train))
        check('%d task(s) on record' % MAX in ctl.log_text(),
              'the restarted controller did not read its tasks:\n' + ctl.log_text()[-3000:])
        check(ctl_selection(cl, admin)['selection']['tasks_out'] == MAX, 'tasks_out after')
        st, b = post(wait[1], c.NODE_IP[0], 0)
        check(st == 409 and b'no task for round 0' in b,
              'no task after the restart: %d %s' % (st, b[:300]))
        log('controller kill -9 and restart: the same %d clients hold the tasks, no second '
            'batch; no task is still 409' % MAX)

        # Three more close the round at K = 5.
        closers = train[:5]
        res = c.post_many(cl, [(gw(k), 'csel', toks[cid], 0) + ups[cid]
                               for k, cid in enumerate(train[2:5])])
        for cid, (st, b) in zip(train[2:5], res):
            check(st == 202, '%s: %d %s' % (cid, st, b[:300]))
        m = c.get_model(cl, c.NODE_IP[2], 'csel', toks[train[0]], 1)
        c.check_model(m, [ups[cid][0] for cid in closers], [ups[cid][1] for cid in closers],
                      'csel round 0 (5 of 7 tasks)')
        info = c.round_info(cl, c.NODE_IP[1], 'csel', jtok, 0)
        check(info['updates'] == K and info['clients'] == K, 'round 0 record: %s' % info)
        for cid in train[5:]:
            st, b = post(cid, c.NODE_IP[0], 0)
            check(st == 409 and b'round' in b, 'a late task holder: %d %s' % (st, b[:300]))

        # Round 1: seven new tasks, not more.
        def round1():
            # A gateway still without model v1 says wait, the task kept: asked again, given.
            a = ask_all(cl, toks, 2)
            n = len(trained(a))
            check(n <= MAX, 'round 1: %d tasks, more than %d' % (n, MAX))
            return a if n == MAX else None
        ans3 = c.wait_for(round1, 20, 'round 1 tasks')
        train1 = trained(ans3)
        check(all(ans3[cid]['round'] == 1 and
                                         ans3[cid]['task'] == '1:' + cid for cid in train1),
              'round 1: %d tasks %r' % (len(train1), {k: ans3[k] for k in train1}))
        check(ctl_selection(cl, admin)['selection']['tasks_out'] == MAX, 'round 1 tasks_out')
        nt = [cid for cid in CLIENTS if cid not in train1]
        st, b = post(nt[0], c.NODE_IP[2], 1)
        check(st == 409 and b'no task for round 1' in b, 'round 1 without a task: %d %s' %
              (st, b[:300]))
        log('round 0 closed at %d updates (the weighted mean); the 2 left-over tasks are void '
            '(409); round 1: %d new tasks' % (K, len(train1)))
        client_loop(net, cl, admin)
        simulate(net, cl, admin, tmp)
        key_resend(cl, admin)
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
