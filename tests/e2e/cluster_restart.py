# SPDX-License-Identifier: MIT
"""Restarts in a cluster: three node runtimes and a controller, each in its own namespace.

A. 10 of a round's 20 updates go to one node, which is then killed (kill -9) and, once the
   controller has drained it (the record lists its updates lost), started again on the same
   data dir: it re-attaches its arena, reports the 10 updates when it joins, and the record no
   longer lists them lost. A resend with the same Idempotency-Key gets the first answer and
   is counted once; the other 10 come over the three gateways; the model is the weighted
   mean of all 20 and the record lists no update lost.
B. The controller is killed (kill -9) mid-round: the nodes do not exit; meanwhile they take
   updates of the open round (202, "provisional") and serve the model, and past
   --controller-grace-s answer 503 saying why; the controller starts again on its data dir,
   reloads the round, the nodes join again and report, and the round completes exactly.
C. A node is stopped (SIGTERM) mid-round with 10 updates: it exits 0 keeping its arena file;
   started again it recovers them, and the round completes exactly with nothing lost.
D. A round closes while the node that runs its top (and holds 12 of its updates) is frozen;
   that node is killed and started again: it recovers its updates, the other node sends its
   sum again to the new run, and the round completes exactly with nothing lost.
E. The same closed round, with the controller killed instead and the top thawed: the
   controller reloads the round as closed, tells it again, and it completes exactly.
F. A node killed whose arena file is removed too (as a reboot would): back with a new arena,
   the record lists its updates lost (its old run's epoch); they are sent again, and the
   round completes exactly.
G. The round's top function (not its node) is killed (kill -9) while it waits for a frozen
   node's sum: the node starts a new top, which gets every input again; the round completes
   exactly, and once the model is stored the node's arena holds what it held after an
   undisturbed round of the same job (the dead top's accumulator is freed with the round).

Needs root (ip netns, veth, a bridge). Exit status 77 and the reason when that is truly
absent; the test harness reports it as skipped.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import netns_cluster  # noqa: E402
from cluster import Client, check_model, get_model, metrics, update_body, wait_for  # noqa: E402
from e2e_common import (BIN, SANITIZER_MARKS, Failure, arena_files_in, check, log,  # noqa: E402
                        main, remove_arena_files)

SKIP = 77
CPR = 20
GRACE_S = 8  # --controller-grace-s of the nodes


class Cluster:
    """The controller and nodes of this test, restartable with the same arguments."""

    def __init__(self, net, tmp, node_args=()):
        self.net, self.tmp = net, tmp
        self.procs = []
        self.runs = {}
        self.ctl, self.nodes = netns_cluster.start(
            net, BIN, tmp, node_args=['--no-huge', '--controller-grace-s', str(GRACE_S)] +
            list(node_args))
        self.procs += [self.ctl] + self.nodes
        self.cl = Client(net.ctl)

    def restart_node(self, i):
        old = self.nodes[i]
        args = old.p.args[5:]  # after ip netns exec NS BIN
        self.runs[i] = self.runs.get(i, 1) + 1
        p = netns_cluster.Proc('n%d-run%d' % (i, self.runs[i]), self.net.nodes[i], BIN, args,
                               self.tmp)
        self.nodes[i] = p
        self.procs.append(p)
        return p

    def restart_ctl(self, extra=()):
        args = [a for a in self.ctl.p.args[5:]] + list(extra)
        self.runs['c'] = self.runs.get('c', 1) + 1
        self.ctl = netns_cluster.Proc('controller-run%d' % self.runs['c'], self.net.ctl, BIN,
                                      args, self.tmp)
        self.procs.append(self.ctl)

    def joined(self, i):
        ip = self.net.node_ip[i]
        return (self.cl.call(ip, 'GET', '/healthz')[0] == 200 and
                metrics(self.cl, ip).get('tributary_cluster_joined') == 1)


def post(cl, host, job, token, rnd, x, w, key):
    return cl.call(host, 'POST', '/v1/jobs/%s/updates' % job, x.tobytes(),
                   {'Content-Type': 'application/octet-stream', 'X-Tributary-Round': str(rnd),
                    'X-Tributary-Samples': str(w), 'Idempotency-Key': key}, token)


def post_until(cl, host, job, token, rnd, x, w, key, timeout=30):
    """Send (again, with the same key) until a 202: a 503 is a promise not made, resent."""
    end = time.time() + timeout
    while True:
        st, b = post(cl, host, job, token, rnd, x, w, key)
        if st == 202 or time.time() > end:
            check(st == 202, '%s on %s: %d %s' % (key, host, st, b[:300]))
            return json.loads(b)
        check(st in (0, 503), '%s on %s: %d %s' % (key, host, st, b[:300]))
        time.sleep(0.3)


def round_info(cl, host, job, token, r):
    st, b = cl.call(host, 'GET', '/v1/jobs/%s/rounds/%d' % (job, r), token=token)
    check(st == 200, 'GET rounds/%d on %s: %d %s' % (r, host, st, b[:200]))
    return json.loads(b)


def create_job(cl, ip, admin, name):
    st, b = cl.call(ip, 'POST', '/v1/jobs', json.dumps(
        {'name': name, 'clients_per_round': CPR, 'params': 20000, 'fan_in': 4}).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create %s: %d %s' % (name, st, b))
    return json.loads(b)['token']


def check_done(c, job, tok, ups, what):
    ip = c.net.node_ip
    m = get_model(c.cl, ip[1], job, tok, 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups], what)
    info = round_info(c.cl, ip[2], job, tok, 0)
    check(info['state'] == 'done' and info['updates'] == CPR and not info['lost_nodes'] and
          not info['lost'] and info['lost_updates'] == 0, '%s: round record %s' % (what, info))
    log('  %s: round record: done, %d updates, nothing lost' % (what, info['updates']))


def phase_a(c, admin):
    ip = c.net.node_ip
    tok = create_job(c.cl, ip[0], admin, 'ra')
    wait_for(lambda: c.cl.call(ip[2], 'GET', '/v1/jobs/ra', token=tok)[0] == 200, 5,
             'job ra known on n2')
    ups = [update_body(np.random.default_rng(100 + k)) for k in range(CPR)]
    acks = [post_until(c.cl, ip[0], 'ra', tok, 0, *ups[k], 'ra-%d' % k) for k in range(10)]
    check(all(a['node'] == 'n0' for a in acks), 'locality: %s' % acks[:2])
    c.nodes[0].kill()
    log('A: n0 killed (kill -9) holding 10 acknowledged updates of an open round')
    info = wait_for(lambda: (lambda i: i if i['lost_nodes'] else None)(
        round_info(c.cl, ip[1], 'ra', tok, 0)), 15, 'n0 to be drained')
    check(info['lost_nodes'] == ['n0'] and info['lost_updates'] == 10 and
          info['state'] == 'open', 'drained: %s' % info)
    log('  drained: the record lists %d updates of n0 lost (its memory might be gone)' %
        info['lost_updates'])
    node = c.restart_node(0)
    wait_for(lambda: c.joined(0), 30, 'n0 to join again')
    text = node.log_text()
    check('re-attached' in text and 'recovered 10 updates' in text,
          'n0 re-attached its arena and recovered 10 updates:\n' + text[-3000:])
    info = round_info(c.cl, ip[2], 'ra', tok, 0)
    check(not info['lost_nodes'] and not info['lost'] and info['lost_updates'] == 0 and
          info['received'] == 10, 'after n0 is back: %s' % info)
    log('  n0 restarted: arena re-attached, 10 updates recovered and reported; the record '
        'lists none lost (received %d)' % info['received'])
    # A client whose answer was lost sends again with its key: the first answer, counted once.
    st, b = post(c.cl, ip[0], 'ra', tok, 0, *ups[3], 'ra-3')
    check(st == 202 and json.loads(b) == acks[3],
          'resend of ra-3: %d %s, first answer %s' % (st, b[:300], acks[3]))
    check(round_info(c.cl, ip[2], 'ra', tok, 0)['received'] == 10, 'the resend was counted')
    for k in range(10, CPR):
        ack = post_until(c.cl, ip[k % 3], 'ra', tok, 0, *ups[k], 'ra-%d' % k)
        # Back with all it held, n0 goes on as the same run: its receipts stay its own.
        check(ack['node'] != 'n0' or ack['epoch'] == acks[0]['epoch'],
              'n0 after its restart: %s, before: %s' % (ack, acks[0]))
    check_done(c, 'ra', tok, ups, 'A: round 0 over 20 updates, 10 of them from before the kill')


def phase_b(c, admin):
    ip = c.net.node_ip
    tok = create_job(c.cl, ip[1], admin, 'rb')
    wait_for(lambda: c.cl.call(ip[0], 'GET', '/v1/jobs/rb', token=tok)[0] == 200, 5,
             'job rb known on n0')
    ups = [update_body(np.random.default_rng(200 + k)) for k in range(CPR)]
    for k in range(12):
        post_until(c.cl, ip[k % 3], 'rb', tok, 0, *ups[k], 'rb-%d' % k)
    c.ctl.kill()
    killed = time.time()
    log('B: the controller killed (kill -9) with 12 of 20 updates counted')
    wait_for(lambda: all('no answer to a heartbeat' in nd.log_text() for nd in c.nodes), 10,
             'the nodes to notice the controller is away')
    # Taken without the controller, for the round the nodes know open: committed, 202.
    for k in range(12, 16):
        st, b = post(c.cl, ip[k % 3], 'rb', tok, 0, *ups[k], 'rb-%d' % k)
        check(st == 202 and json.loads(b).get('provisional') is True,
              'update %d while the controller is away: %d %s' % (k, st, b[:300]))
    st, _ = c.cl.call(ip[2], 'GET', '/v1/jobs/rb/model?round=0', token=tok)
    check(st == 200, 'the model while the controller is away: %d' % st)
    log('  the nodes run on: 4 updates taken without the controller (202, provisional), the '
        'model served')
    # Past --controller-grace-s: 503, saying why.
    time.sleep(max(0, killed + GRACE_S + 3 - time.time()))
    st, b = post(c.cl, ip[1], 'rb', tok, 0, *ups[16], 'rb-16')
    check(st == 503 and b'controller-grace-s' in b,
          'an update %d s after the controller went away: %d %s' % (GRACE_S, st, b[:300]))
    log('  after %d s: 503 (%s)' % (GRACE_S, json.loads(b).get('error', '')[:120]))
    for nd in c.nodes:
        check(nd.p.poll() is None, '%s exited %s without its controller' %
              (nd.name, nd.p.returncode))
    # Later phases freeze a node for a moment: drained only after 6 s of silence.
    c.restart_ctl(['--dead-after-ms', '6000'])
    for i in range(3):
        wait_for(lambda i=i: 'joining again' in c.nodes[i].log_text() and c.joined(i), 30,
                 'n%d to join the restarted controller' % i)
    wait_for(lambda: 'reconciled with its nodes' in c.ctl.log_text(), 10,
             'the controller to reconcile:\n' + c.ctl.log_text()[-3000:])
    # The round is written at a controller tick after it changes: a kill may come first.
    # Either way the nodes' reports are the counts (checked next).
    log('  the controller %s' % ('reloaded the open round from controller.db'
                                 if 'reloaded open with' in c.ctl.log_text() else
                                 'had not written the round yet: the nodes\' reports made it'))
    info = round_info(c.cl, ip[0], 'rb', tok, 0)
    check(info['received'] == 16 and not info['lost_nodes'], 'after the restart: %s' % info)
    log('  the controller restarted, reloaded the open round and counted what the nodes '
        'reported: %d received' % info['received'])
    for k in range(16, CPR):
        post_until(c.cl, ip[k % 3], 'rb', tok, 0, *ups[k], 'rb-%d' % k)
    check_done(c, 'rb', tok, ups, 'B: round 0 across a controller restart')
    for nd in c.nodes:
        check(nd.p.poll() is None, '%s exited %s' % (nd.name, nd.p.returncode))


def life_before(c, admin):
    """Before the controller's kill -9 (phase B): a paused job and a deleted one."""
    ip = c.net.node_ip
    # ra (phase A, done): an evaluation of version 1, kept in controller.db.
    st, b = c.cl.call(ip[2], 'POST', '/v1/jobs/ra/evaluations', json.dumps(
        {'version': 1, 'samples': 40, 'metrics': {'loss': 0.5}}).encode(),
        {'Content-Type': 'application/json', 'Idempotency-Key': 'ra-ev'}, admin)
    check(st == 202 and json.loads(b) == {'version': 1, 'clients': 1},
          'evaluation of ra v1: %d %s' % (st, b[:200]))
    tok = create_job(c.cl, ip[0], admin, 'lpz')
    wait_for(lambda: all(c.cl.call(h, 'GET', '/v1/jobs/lpz', token=tok)[0] == 200
                         for h in ip), 5, 'lpz known on every node')
    st, b = c.cl.call(ip[1], 'POST', '/v1/jobs/lpz/pause', token=tok)
    check(st == 200 and json.loads(b)['state'] == 'paused', 'pause lpz: %d %s' % (st, b))
    create_job(c.cl, ip[0], admin, 'lgone')
    st, b = c.cl.call(ip[2], 'DELETE', '/v1/jobs/lgone', token=admin)
    check(st == 200, 'DELETE lgone: %d %s' % (st, b))
    return tok


def life_after(c, admin, tok):
    """After the controller's restart: lpz still paused everywhere, lgone still gone."""
    ip = c.net.node_ip
    for h in ip:
        st, b = c.cl.call(h, 'GET', '/v1/jobs/lpz', token=tok)
        check(st == 200 and json.loads(b)['state'] == 'paused',
              'lpz after the controller restart, %s: %d %s' % (h, st, b[:200]))
        st, b = c.cl.call(h, 'GET', '/v1/jobs/lgone', token=admin)
        check(st == 404, 'lgone after the controller restart, %s: %d %s' % (h, st, b[:200]))
    st, b = c.cl.call(ip[0], 'GET', '/v1/cluster', token=admin)
    lpz = [j for j in json.loads(b)['jobs'] if j['name'] == 'lpz']
    check(lpz and lpz[0]['state'] == 'paused', 'the restarted controller: %s' % lpz)
    st, b = c.cl.call(ip[2], 'POST', '/v1/jobs/lpz/resume', token=admin)
    check(st == 200 and json.loads(b)['state'] == 'open', 'resume lpz: %d %s' % (st, b))
    # ra's round 0 is no longer in the restarted controller's memory: its stored row answers,
    # in the list and alone, with its evaluation; the evaluation's key still answers.
    st, b = c.cl.call(ip[1], 'GET', '/v1/jobs/ra/rounds', token=admin)
    page = json.loads(b) if st == 200 else {}
    check(st == 200 and page['next'] is None and page['rounds'][0]['round'] == 0 and
          page['rounds'][0]['state'] == 'done' and page['rounds'][0]['updates'] == CPR and
          page['rounds'][0]['evaluation'] == {'version': 1, 'clients': 1, 'samples': 40,
                                              'metrics': {'loss': 0.5}} and
          page['rounds'][0]['closed_at'] >= page['rounds'][0]['opened_at'] > 0,
          'ra rounds after the controller restart: %d %s' % (st, b[:500]))
    one = round_info(c.cl, ip[0], 'ra', admin, 0)
    check(one == page['rounds'][0], 'ra rounds/0 %s != its list entry %s' % (one, page['rounds'][0]))
    st, b = c.cl.call(ip[0], 'POST', '/v1/jobs/ra/evaluations', json.dumps(
        {'version': 1, 'samples': 40, 'metrics': {'loss': 0.5}}).encode(),
        {'Content-Type': 'application/json', 'Idempotency-Key': 'ra-ev'}, admin)
    check(st == 202 and json.loads(b) == {'version': 1, 'clients': 1},
          'the evaluation resent after the restart: %d %s' % (st, b[:200]))
    log('  round records (list and one) and evaluations from controller.db after its restart')
    log('  a paused job stayed paused and a deleted one deleted across the controller\'s '
        'kill -9 and restart')


def phase_c(c, admin):
    ip = c.net.node_ip
    tok = create_job(c.cl, ip[2], admin, 'rc')
    wait_for(lambda: c.cl.call(ip[1], 'GET', '/v1/jobs/rc', token=tok)[0] == 200, 5,
             'job rc known on n1')
    ups = [update_body(np.random.default_rng(300 + k)) for k in range(CPR)]
    for k in range(10):
        post_until(c.cl, ip[1], 'rc', tok, 0, *ups[k], 'rc-%d' % k)
    old = c.nodes[1]
    old.p.send_signal(signal.SIGTERM)
    try:
        old.p.wait(20)
    except subprocess.TimeoutExpired:
        raise Failure('n1 did not stop within 20 s of SIGTERM')
    check(old.p.returncode == 0, 'n1 exited %s on SIGTERM' % old.p.returncode)
    check('kept, with 10 committed updates' in old.log_text(), 'n1 kept its arena file:\n' +
          old.log_text()[-2000:])
    old.killed = True
    log('C: n1 stopped (SIGTERM) with 10 updates of an open round; its arena file kept')
    node = c.restart_node(1)
    wait_for(lambda: c.joined(1), 30, 'n1 to join again')
    check('recovered 10 updates' in node.log_text(), 'n1 recovered:\n' + node.log_text()[-2000:])
    for k in range(10, CPR):
        post_until(c.cl, ip[k % 3], 'rc', tok, 0, *ups[k], 'rc-%d' % k)
    check_done(c, 'rc', tok, ups, 'C: round 0 across a SIGTERM of n1')


def close_on_frozen_top(c, admin, job, seed):
    """20 updates, 12 on n2 (the top-to-be), frozen (SIGSTOP) before the 20th closes it."""
    ip = c.net.node_ip
    tok = create_job(c.cl, ip[0], admin, job)
    wait_for(lambda: c.cl.call(ip[2], 'GET', '/v1/jobs/%s' % job, token=tok)[0] == 200, 5,
             'job %s known on n2' % job)
    ups = [update_body(np.random.default_rng(seed + k)) for k in range(CPR)]
    for k in range(CPR - 1):
        post_until(c.cl, ip[2] if k < 12 else ip[0], job, tok, 0, *ups[k], '%s-%d' % (job, k))
    c.nodes[2].p.send_signal(signal.SIGSTOP)
    post_until(c.cl, ip[0], job, tok, 0, *ups[CPR - 1], '%s-%d' % (job, CPR - 1))
    info = round_info(c.cl, ip[1], job, tok, 0)
    check(info['state'] == 'closed' and info['top'] == 'n2', '%s: closed on n2: %s' %
          (job, info))
    return tok, ups


def phase_d(c, admin):
    tok, ups = close_on_frozen_top(c, admin, 'rd', 400)
    c.nodes[2].kill()
    log('D: round closed with its top on n2 (12 updates), n2 frozen then killed (kill -9)')
    node = c.restart_node(2)
    wait_for(lambda: c.joined(2), 30, 'n2 to join again')
    check('recovered 12 updates' in node.log_text(), 'n2 recovered:\n' +
          node.log_text()[-2000:])
    check_done(c, 'rd', tok, ups, 'D: a closed round whose top was killed and restarted')


def phase_e(c, admin):
    tok, ups = close_on_frozen_top(c, admin, 're', 500)
    time.sleep(0.5)  # the closed round is written at the controller's next tick
    c.ctl.kill()
    c.nodes[2].p.send_signal(signal.SIGCONT)
    log('E: round closed with its top on n2 frozen; the controller killed (kill -9), n2 '
        'thawed')
    c.restart_ctl()
    wait_for(lambda: 'reconciled with its nodes' in c.ctl.log_text(), 20,
             'the controller to reconcile:\n' + c.ctl.log_text()[-3000:])
    check('reloaded closed with' in c.ctl.log_text(), 'the controller reloaded the closed '
          'round:\n' + c.ctl.log_text()[-3000:])
    check_done(c, 're', tok, ups, 'E: a closed round across a controller restart')
    for nd in c.nodes:
        check(nd.p.poll() is None, '%s exited %s' % (nd.name, nd.p.returncode))


def phase_f(c, admin):
    ip = c.net.node_ip
    tok = create_job(c.cl, ip[1], admin, 'rf')
    wait_for(lambda: c.cl.call(ip[0], 'GET', '/v1/jobs/rf', token=tok)[0] == 200, 5,
             'job rf known on n0')
    ups = [update_body(np.random.default_rng(600 + k)) for k in range(CPR)]
    acks = [post_until(c.cl, ip[1], 'rf', tok, 0, *ups[k], 'rf-%d' % k) for k in range(6)]
    old = c.nodes[1]
    files = arena_files_in([old.log_text()])
    old.kill()
    remove_arena_files(files)  # as a reboot would: the machine's memory is gone
    log('F: n1 killed (kill -9) holding 6 updates, and its arena file removed (%s)' % files)
    node = c.restart_node(1)
    wait_for(lambda: c.joined(1), 30, 'n1 to join again')
    info = round_info(c.cl, ip[0], 'rf', tok, 0)
    check(info['lost_nodes'] == ['n1'] and info['lost_updates'] == 6 and
          info['state'] == 'open' and
          info['lost'] == [{'node': 'n1', 'epoch': acks[0]['epoch'], 'updates': 6}],
          'after n1 came back without its arena: %s' % info)
    check('arena file' in node.log_text() and 're-attached' not in node.log_text(),
          'n1 started with a new arena')
    log('  back with a new arena: the record lists its 6 updates lost; they are sent again')
    for k in range(CPR):
        ack = post_until(c.cl, ip[k % 3], 'rf', tok, 0, *ups[k], 'rf-%d-again' % k if k < 6
                         else 'rf-%d' % k)
        check(ack['node'] != 'n1' or ack['epoch'] != acks[0]['epoch'],
              'n1\'s new run has a new epoch: %s' % ack)
    m = get_model(c.cl, ip[2], 'rf', tok, 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups], 'F: round 0 with the 6 resent')
    info = round_info(c.cl, ip[2], 'rf', tok, 0)
    check(info['state'] == 'done' and info['updates'] == CPR and info['lost_nodes'] == ['n1'],
          'F: record %s' % info)


def arena_used(c, i):
    return metrics(c.cl, c.net.node_ip[i])['tributary_arena_bytes{state="used"}']


def arena_settled(c, i, still_s=2.0, timeout=30):
    """Node @i's arena bytes in use once unchanged for @still_s (read every 0.25 s)."""
    end = time.time() + timeout
    last, since = arena_used(c, i), time.time()
    while time.time() < end:
        time.sleep(0.25)
        now = arena_used(c, i)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= still_s:
            return now
    raise Failure('n%d\'s arena use did not settle in %d s (last %d bytes)' % (i, timeout, last))


def phase_g(c, admin):
    ip = c.net.node_ip
    tok = create_job(c.cl, ip[0], admin, 'rg')
    wait_for(lambda: c.cl.call(ip[2], 'GET', '/v1/jobs/rg', token=tok)[0] == 200, 5,
             'job rg known on n2')
    used = []
    for rnd in (0, 1):
        ups = [update_body(np.random.default_rng(700 + 100 * rnd + k)) for k in range(CPR)]
        # 12 on n2 (the top-to-be: the placement picks the node with the most), 4 on n1, 4 on n0
        hosts = [ip[2]] * 12 + [ip[1]] * 4 + [ip[0]] * 4
        for k in range(CPR - 1):
            post_until(c.cl, hosts[k], 'rg', tok, rnd, *ups[k], 'rg-%d-%d' % (rnd, k))
        if rnd == 1:
            c.nodes[1].p.send_signal(signal.SIGSTOP)  # its sum waits: so does the top
        post_until(c.cl, hosts[-1], 'rg', tok, rnd, *ups[-1], 'rg-%d-%d' % (rnd, CPR - 1))
        if rnd == 1:
            def top_pid():
                # Two tops: n2's local round's (started with the round: its leaves' sum) and
                # the round's top across nodes (started at the close, so the newer one), which
                # folds while n1's sum is awaited.
                st, b = c.cl.call(ip[2], 'GET', '/v1/functions', token=admin)
                check(st == 200, 'GET /v1/functions on n2: %d %s' % (st, b[:200]))
                tops = [f for f in json.loads(b)['functions']
                        if f['job'] == 'rg' and f['round'] == 1 and f['role'] == 'top' and
                        f['state'] == 'folding' and f.get('pid')]
                return max(tops, key=lambda f: f['fn'])['pid'] if tops else None
            try:
                wait_for(lambda: 'job rg round 1: this node runs the top' in
                         c.nodes[2].log_text(), 10, 'n2 to run round 1\'s top')
                pid = wait_for(top_pid, 10, 'round 1\'s top function on n2')
                os.kill(pid, signal.SIGKILL)
                log('G: round 1 closed, n1 frozen; its top function on n2 (pid %d) killed '
                    '(kill -9)' % pid)
                wait_for(lambda: 'died; restarting it' in c.nodes[2].log_text(), 10,
                         'n2 to restart the top:\n' + c.nodes[2].log_text()[-2000:])
            finally:
                c.nodes[1].p.send_signal(signal.SIGCONT)
        m = get_model(c.cl, ip[2], 'rg', tok, rnd + 1)
        check_model(m, [x for x, _ in ups], [w for _, w in ups], 'G: round %d' % rnd)
        info = round_info(c.cl, ip[0], 'rg', tok, rnd)
        check(info['state'] == 'done' and info['updates'] == CPR and info['top'] == 'n2',
              'G: round %d record %s' % (rnd, info))
        # The node frees the round's top inputs once it stores the model, and its leaves'
        # slots as the controller's "done" reaches it: under load that is not within a fixed
        # sleep (a 1 s sleep was one). Round 0's level is the one that stays put for 2 s;
        # round 1's must come back to it (a leaked slot never does: 20 s, then the failure).
        if rnd == 0:
            used.append(arena_settled(c, 2))
        else:
            try:
                wait_for(lambda: arena_used(c, 2) == used[0], 20, 'n2\'s arena to come back')
            except Failure:
                pass
            used.append(arena_used(c, 2))
    check(used[1] == used[0], 'G: n2\'s arena holds %d bytes after the round whose top died, '
          '%d after an undisturbed one: the dead top\'s slots leaked' % (used[1], used[0]))
    log('  a new top folded every input again; the model is exact; n2\'s arena holds %d bytes '
        'after either round' % used[0])


def stop(p):
    if p.killed or p.p.poll() is not None:
        return
    p.p.send_signal(signal.SIGTERM)
    try:
        p.p.wait(20)
    except subprocess.TimeoutExpired:
        raise Failure('%s did not stop within 20 s of SIGTERM' % p.name)
    check(p.p.returncode == 0, '%s exited %s' % (p.name, p.p.returncode))


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(SKIP)
    # nng 1.5's leak of a request sent on a closing pipe (see the file): only that one.
    supp = os.path.join(HERE, 'nng-req-leak.supp')
    os.environ['LSAN_OPTIONS'] = ':'.join(filter(None, [os.environ.get('LSAN_OPTIONS'),
                                                        'suppressions=' + supp]))
    net = netns_cluster.Net(3)
    tmp = tempfile.mkdtemp(prefix='trib-cluster-restart-')
    c = None
    try:
        net.up()
        c = Cluster(net, tmp)
        for i in range(3):
            wait_for(lambda i=i: c.joined(i), 30, 'node n%d to join' % i)
        admin = netns_cluster.admin_token(tmp)
        phase_a(c, admin)
        life_tok = life_before(c, admin)
        phase_b(c, admin)
        life_after(c, admin, life_tok)
        phase_c(c, admin)
        phase_d(c, admin)
        phase_e(c, admin)
        phase_f(c, admin)
        phase_g(c, admin)
        for p in c.nodes + [c.ctl]:
            stop(p)
        for p in c.procs:
            text = p.log_text()
            check(not any(m in text for m in SANITIZER_MARKS),
                  '%s: sanitizer report in its log' % p.name)
        log('cluster restart test passed')
    except BaseException:
        for p in (c.procs if c else []):
            try:
                sys.stdout.write('===== %s log (tail) =====\n%s\n' %
                                 (p.name, p.log_text()[-6000:]))
            except OSError:
                pass
        raise
    finally:
        logs = []
        for p in (c.procs if c else []):
            p.close()
            try:
                logs.append(p.log_text())
            except OSError:
                pass
        remove_arena_files(arena_files_in(logs))
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main(scenario)
