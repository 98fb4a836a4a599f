# SPDX-License-Identifier: MIT
"""--durability disk on a cluster: a node's 202 outlives its machine, and one update per client
per round outlives node and controller restarts.

A. Three nodes with --durability disk. 10 of a round's 20 updates (each from its own client
   credential) go to n0, which is killed (kill -9) and its arena file removed (as a reboot
   would); the controller drains it (the record lists 10 lost). Started again on the same data
   dir, n0 replays its log, reports the 10 updates (with their clients) when it joins, and the
   record lists none lost. A second update of a client that sent before the crash gets 409 on
   n0 and n1; a resend with the same Idempotency-Key gets the first answer, counted once; the
   other 10 come over the three gateways; the model is the weighted mean of all 20, and n0's
   log of the round is cut once the cluster's model is stored.
B. 8 updates of another job's round over n1 and n2; the controller writes the round's 8 clients
   in controller.db (schema v5) and is killed (kill -9). Meanwhile n1 takes 2 updates
   provisionally (202 only once logged: its log's appends grow by 2). The controller starts
   again, reloads the round and its clients: a second update of a client that sent before
   gets 409 on a node that did not fold its first; the other 10 complete the round exactly.
C. n2 restarted with its data dir on a small tmpfs that then fills up: its updates get 503
   naming the log, never 202; once space is back each client resends with its key until 202,
   each update is counted once and the model is exact.

Needs root (ip netns, veth, a bridge). Exit status 77 and the reason when that is truly
absent; the test harness reports it as skipped.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sqlite3
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import netns_cluster  # noqa: E402
from cluster import check_model, get_model, metrics, update_body, wait_for  # noqa: E402
from cluster_restart import (CPR, Cluster, create_job, post, post_until,  # noqa: E402
                             round_info, stop)
from e2e_common import (SANITIZER_MARKS, check, log, main, arena_files_in,  # noqa: E402
                        remove_arena_files)

SKIP = 77
DISK = ['--durability', 'disk']


def mint(c, host, job, tok, n, prefix):
    creds = []
    for k in range(n):
        st, b = c.cl.call(host, 'POST', '/v1/jobs/%s/clients' % job,
                          json.dumps({'client': '%s%d' % (prefix, k)}).encode(),
                          {'Content-Type': 'application/json'}, tok)
        check(st == 201, 'mint %s%d: %d %s' % (prefix, k, st, b))
        creds.append(json.loads(b)['token'])
    return creds


def second_update_refused(c, host, job, cred, rnd, x, w, key, who):
    st, b = post(c.cl, host, job, cred, rnd, x, w, key)
    check(st == 409 and b'one update per client' in b,
          '%s: a second update of a client that sent before, via %s: %d %s' %
          (who, host, st, b[:300]))


def wal_segments(c, i):
    top = os.path.join(c.tmp, 'n%d-8080' % i, 'wal')
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs
                  if f.endswith('.wal'))


def phase_a(c, admin):
    ip = c.net.node_ip
    tok = create_job(c.cl, ip[0], admin, 'da')
    wait_for(lambda: all(c.cl.call(h, 'GET', '/v1/jobs/da', token=tok)[0] == 200
                         for h in ip), 5, 'job da known on every node')
    creds = mint(c, ip[0], 'da', tok, CPR, 'a')
    ups = [update_body(np.random.default_rng(700 + k)) for k in range(CPR)]
    acks = [post_until(c.cl, ip[0], 'da', creds[k], 0, *ups[k], 'da-%d' % k)
            for k in range(10)]
    check(all(a['node'] == 'n0' for a in acks), 'folded on n0: %s' % acks[:2])
    m = metrics(c.cl, ip[0])
    check(m.get('tributary_wal_appends_total', 0) >= 10,
          'n0 logged its 10 updates before their 202: %s' %
          {k: v for k, v in m.items() if 'wal' in k})
    check(wal_segments(c, 0), 'n0 has a log segment')
    old = c.nodes[0]
    files = arena_files_in([old.log_text()])
    old.kill()
    remove_arena_files(files)
    log('A: n0 (--durability disk) killed (kill -9) holding 10 updates; its arena file '
        'removed (%s), as a reboot would' % files)
    info = wait_for(lambda: (lambda i: i if i['lost_nodes'] else None)(
        round_info(c.cl, ip[1], 'da', tok, 0)), 15, 'n0 to be drained')
    check(info['lost_updates'] == 10, 'drained: %s' % info)
    node = c.restart_node(0)
    wait_for(lambda: c.joined(0), 30, 'n0 to join again')
    text = node.log_text()
    check('re-attached' not in text and '10 updates put back from the log' in text,
          'n0 replayed its log:\n' + text[-3000:])
    info = round_info(c.cl, ip[2], 'da', tok, 0)
    check(not info['lost_nodes'] and not info['lost'] and info['lost_updates'] == 0 and
          info['received'] == 10 and info['clients'] == 10,
          'after n0 is back from its log: %s' % info)
    log('  n0 restarted without its arena: 10 updates put back from its log and reported; '
        'the record lists none lost (received %d, %d clients)' %
        (info['received'], info['clients']))
    x, w = update_body(np.random.default_rng(1))
    for h in (ip[0], ip[1]):
        second_update_refused(c, h, 'da', creds[3], 0, x, w, 'da-3-second', 'A')
    st, b = post(c.cl, ip[0], 'da', creds[3], 0, *ups[3], 'da-3')
    check(st == 202 and json.loads(b) == acks[3],
          'resend of da-3: %d %s, first answer %s' % (st, b[:300], acks[3]))
    log('  a second update of a client that sent before the crash: 409 on n0 and n1; its '
        'resend with the same key: the first answer')
    for k in range(10, CPR):
        post_until(c.cl, ip[k % 3], 'da', creds[k], 0, *ups[k], 'da-%d' % k)
    m = get_model(c.cl, ip[1], 'da', tok, 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups],
                'A: round 0 over 20 updates, 10 of them replayed from n0\'s log')
    info = round_info(c.cl, ip[2], 'da', tok, 0)
    check(info['state'] == 'done' and info['updates'] == CPR and not info['lost_nodes'] and
          info['lost_updates'] == 0, 'A: round record %s' % info)
    wait_for(lambda: not wal_segments(c, 0), 10,
             'n0\'s log of round 0 to be cut once the model is stored: %s' % wal_segments(c, 0))
    log('  round record: done, %d updates, nothing lost; n0\'s log of the round cut' %
        info['updates'])


def phase_b(c, admin):
    ip = c.net.node_ip
    tok = create_job(c.cl, ip[1], admin, 'db')
    wait_for(lambda: all(c.cl.call(h, 'GET', '/v1/jobs/db', token=tok)[0] == 200
                         for h in ip), 5, 'job db known on every node')
    creds = mint(c, ip[1], 'db', tok, CPR, 'b')
    ups = [update_body(np.random.default_rng(800 + k)) for k in range(CPR)]
    acks = [post_until(c.cl, ip[1 + k % 2], 'db', creds[k], 0, *ups[k], 'db-%d' % k)
            for k in range(8)]
    check(acks[2]['node'] == 'n1', 'db-2 folded on n1: %s' % acks[2])
    job_id = json.loads(c.cl.call(ip[1], 'GET', '/v1/jobs/db', token=tok)[1]).get('id')
    db = os.path.join(c.tmp, 'ctl-7070', 'controller.db')

    def saved():
        con = sqlite3.connect('file:%s?mode=ro' % db, uri=True, timeout=5)
        try:
            rows = con.execute('SELECT c.client, c.rank FROM cluster_round_clients c JOIN '
                               'jobs j ON j.id = c.job_id WHERE j.name = ? AND c.round = 0',
                               ('db',)).fetchall()
        finally:
            con.close()
        return rows if len(rows) == 8 else None
    rows = wait_for(saved, 10, 'the controller to write the round\'s 8 clients')
    check(sorted(r[0] for r in rows) == ['b%d' % k for k in range(8)], 'saved: %s' % rows)
    c.ctl.kill()
    log('B: the controller killed (kill -9) with 8 updates of round 0 counted; controller.db '
        'had their 8 clients (%s)' % ('job id %s' % job_id if job_id else 'schema v5'))
    wait_for(lambda: all('no answer to a heartbeat' in nd.log_text() for nd in c.nodes), 10,
             'the nodes to notice the controller is away')
    before = metrics(c.cl, ip[1]).get('tributary_wal_appends_total', 0)
    for k in (8, 9):
        st, b = post(c.cl, ip[1], 'db', creds[k], 0, *ups[k], 'db-%d' % k)
        check(st == 202 and json.loads(b).get('provisional') is True,
              'update %d while the controller is away: %d %s' % (k, st, b[:300]))
    after = metrics(c.cl, ip[1]).get('tributary_wal_appends_total', 0)
    check(after - before == 2, 'the provisional 202s came after their log records: %s -> %s' %
          (before, after))
    log('  2 updates taken provisionally on n1, each logged before its 202')
    c.restart_ctl(['--dead-after-ms', '6000'])
    for i in range(3):
        wait_for(lambda i=i: c.joined(i), 30, 'n%d to join the restarted controller' % i)
    wait_for(lambda: 'reconciled with its nodes' in c.ctl.log_text(), 15,
             'the controller to reconcile:\n' + c.ctl.log_text()[-3000:])
    check('job db round 0: 8 clients on record' in c.ctl.log_text(),
          'the controller reloaded the round\'s 8 clients:\n' + c.ctl.log_text()[-3000:])
    info = round_info(c.cl, ip[0], 'db', tok, 0)
    check(info['received'] == 10 and info['clients'] == 10 and not info['lost_nodes'],
          'after the restart (8 clients reloaded, 2 reported by n1): %s' % info)
    x, w = update_body(np.random.default_rng(2))
    # db-2 was folded on n1: n0 and n2 know nothing of its client but what the controller says.
    for h in (ip[0], ip[2]):
        second_update_refused(c, h, 'db', creds[2], 0, x, w, 'db-2-second', 'B')
    log('  after the controller\'s restart: a second update of a client that sent before '
        'gets 409 on n0 and n2')
    for k in range(10, CPR):
        post_until(c.cl, ip[k % 3], 'db', creds[k], 0, *ups[k], 'db-%d' % k)
    m = get_model(c.cl, ip[2], 'db', tok, 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups],
                'B: round 0 across a controller restart')
    info = round_info(c.cl, ip[0], 'db', tok, 0)
    check(info['state'] == 'done' and info['updates'] == CPR and info['clients'] == CPR and
          info['lost_updates'] == 0, 'B: round record %s' % info)


def fill(path):
    with open(path, 'wb', buffering=0) as f:
        for size in (1 << 20, 1 << 12, 64):
            chunk = b'\0' * size
            while True:
                try:
                    f.write(chunk)
                except OSError as ex:
                    if ex.errno != errno.ENOSPC:
                        raise
                    break


def phase_c(c, admin, small):
    ip = c.net.node_ip
    old = c.nodes[2]
    old.p.send_signal(signal.SIGTERM)
    old.p.wait(20)
    old.killed = True
    args = old.p.args[5:]
    # The node's identity (its key and CA-signed certificate) goes with it, as a hostPath keeps
    # it in a pod: one certificate is in force per node name, and its join token is spent.
    shutil.copytree(os.path.join(args[args.index('--data-dir') + 1], 'cluster'),
                    os.path.join(small, 'cluster'))
    args[args.index('--data-dir') + 1] = small
    c.runs[2] = c.runs.get(2, 1) + 1
    c.nodes[2] = netns_cluster.Proc('n2-run%d' % c.runs[2], c.net.nodes[2], old.p.args[4], args,
                                    c.tmp)
    c.procs.append(c.nodes[2])
    wait_for(lambda: c.joined(2), 30, 'n2 to join with its data dir on a small tmpfs')
    cpr = 6
    st, b = c.cl.call(ip[0], 'POST', '/v1/jobs', json.dumps(
        {'name': 'dc', 'clients_per_round': cpr, 'params': 20000, 'fan_in': 2}).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create dc: %d %s' % (st, b))
    tok = json.loads(b)['token']
    wait_for(lambda: c.cl.call(ip[2], 'GET', '/v1/jobs/dc', token=tok)[0] == 200, 5,
             'job dc known on n2')
    ups = [update_body(np.random.default_rng(900 + k)) for k in range(cpr)]
    first = post_until(c.cl, ip[2], 'dc', tok, 0, *ups[0], 'dc-0')
    check(first['node'] == 'n2', 'dc-0 folded on n2: %s' % first)
    filler = os.path.join(small, 'filler')
    fill(filler)
    msgs = []
    for k in range(1, 4):
        st, b = post(c.cl, ip[2], 'dc', tok, 0, *ups[k], 'dc-%d' % k)
        check(st == 503 and b'log' in b, 'update %d on n2 with a full disk: %d %s (a 202 not '
              'on disk?)' % (k, st, b[:300]))
        msgs.append(json.loads(b).get('error', ''))
    # The first was counted and folded, its record's write failed: 503, not uncounted (its
    # resend with the key gets its first answer); the next ones are refused at the gateway.
    check('could not be written to the log' in msgs[0] and
          'cannot be written (ENOSPC' in msgs[1], 'the 503s: %s' % msgs)
    m = metrics(c.cl, ip[2])
    check(m.get('tributary_wal_failing') == 1, 'tributary_wal_failing on n2: %s' %
          {k: v for k, v in m.items() if 'wal' in k})
    log('C: n2\'s data dir full: its updates get 503 naming the log (%s)' %
        json.loads(b).get('error', '')[:100])
    os.unlink(filler)
    for k in range(1, cpr):
        post_until(c.cl, ip[2] if k < 4 else ip[k % 2], 'dc', tok, 0, *ups[k], 'dc-%d' % k)
    m = get_model(c.cl, ip[0], 'dc', tok, 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups],
                'C: round 0 after n2\'s disk was full, each update resent with its key')
    info = round_info(c.cl, ip[1], 'dc', tok, 0)
    check(info['state'] == 'done' and info['updates'] == cpr and info['lost_updates'] == 0,
          'C: round record %s' % info)


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(SKIP)
    supp = os.path.join(HERE, 'nng-req-leak.supp')
    os.environ['LSAN_OPTIONS'] = ':'.join(filter(None, [os.environ.get('LSAN_OPTIONS'),
                                                        'suppressions=' + supp]))
    net = netns_cluster.Net(3)
    tmp = tempfile.mkdtemp(prefix='trib-cluster-durability-')
    small = os.path.join(tmp, 'n2-small')
    mounted = False
    c = None
    try:
        os.mkdir(small)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=6m,mode=0700', 'tmpfs', small],
                       check=True)
        mounted = True
        net.up()
        c = Cluster(net, tmp, DISK)
        for i in range(3):
            wait_for(lambda i=i: c.joined(i), 30, 'node n%d to join' % i)
        admin = netns_cluster.admin_token(tmp)
        phase_a(c, admin)
        phase_b(c, admin)
        phase_c(c, admin, small)
        for p in c.nodes + [c.ctl]:
            stop(p)
        for p in c.procs:
            text = p.log_text()
            check(not any(m in text for m in SANITIZER_MARKS),
                  '%s: sanitizer report in its log' % p.name)
        log('cluster durability test passed')
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
        if mounted:
            subprocess.run(['umount', small], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main(scenario)
