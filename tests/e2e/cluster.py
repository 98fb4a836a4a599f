# SPDX-License-Identifier: MIT
"""Three node runtimes and a controller, each in its own network namespace.

The namespaces are joined by veth pairs to a bridge; the test addresses
(10.77.N.0/24) exist only inside them. Clients run in the controller's
namespace and spread over the three gateways.

A. Three rounds: every model equals the float64 weighted mean of its round's
   updates; each round has exactly one cross-node edge per node other than
   the top's, and the nodes' counters agree.
B. A node runtime is killed (SIGKILL) mid-round, after it acknowledged some
   updates: the controller drains it, GET .../rounds/{r} names it in
   lost_nodes while the round is open, the clients it acknowledged send
   again to the other gateways, and the round completes on the other two
   nodes with a model equal to the mean over all the round's updates.
C. The node that will run a round's top is frozen (SIGSTOP) just before the
   round closes: it is drained, the top moves, the round completes with the
   surviving nodes' updates only (the model equals their mean), and the
   clients the frozen node acknowledged are told: lost_nodes names it and the
   round is done, so they must send again in a later round.
D. A second cluster whose controller places leaves round-robin, ignoring
   where updates land (the benchmark's baseline): updates cross to the node
   that folds them, and the models are still exact.
E. That controller restarts: its nodes learn they are unknown and join it
   again (cluster_restart.py tests rounds in flight across it), and the job
   goes on.
F. `tributary simulate` over the three gateways of a third cluster, one node
   killed during the run: it fails over, resends or leaves out what the lost
   node held as the round records say, and every model checks.
G. A node whose arena is nearly full (a small one, holding an update of a
   round still open): the updates that land on it fold on another node (spread
   only when full); the others stay where they landed; models exact.

Needs root (ip netns, veth, a bridge). Exit status 77 and the reason when
that is truly absent; the test harness reports it as skipped.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import netns_cluster  # noqa: E402
from e2e_common import (BIN, SANITIZER_MARKS, Failure, arena_files_in, check, log,  # noqa: E402
                        main, parse_metrics, remove_arena_files, st_decode)

SKIP = 77
PARAMS = 20000
CTL_IP = NODE_IP = None  # this run's addresses (set in scenario)


def stop(p):
    """SIGTERM: it must exit 0 within 20 s with no sanitizer report in its log."""
    if p.killed:
        return
    if p.p.poll() is None:
        p.p.send_signal(signal.SIGTERM)
        try:
            p.p.wait(20)
        except subprocess.TimeoutExpired:
            p.p.kill()
            p.p.wait()
            raise Failure('%s did not stop within 20 s of SIGTERM' % p.name)
    check(p.p.returncode == 0, '%s exited %s' % (p.name, p.p.returncode))
    text = p.log_text()
    check(not any(m in text for m in SANITIZER_MARKS), '%s: sanitizer report in its log' % p.name)


def wait_joined(cl):
    for i in range(3):
        wait_for(lambda i=i: metrics(cl, NODE_IP[i]).get('tributary_cluster_joined') == 1
                 if cl.call(NODE_IP[i], 'GET', '/healthz')[0] == 200 else False, 30,
                 'node n%d to join' % i)


class Client:
    """HTTP to the gateways, run from the controller's namespace (setns in a helper)."""

    def __init__(self, ns, port=8080):
        self.ns = ns
        self.port = port

    def call(self, url_host, method, path, body=None, headers=None, token=None):
        # Python cannot enter a netns per thread portably: curl in the namespace does it.
        cmd = ['ip', 'netns', 'exec', self.ns, 'curl', '-sS', '-o', '-', '-w',
               '\n%{http_code}', '-X', method, 'http://%s:%d%s' % (url_host, self.port, path),
               '--max-time', '30']
        for k, v in (headers or {}).items():
            cmd += ['-H', '%s: %s' % (k, v)]
        if token:
            cmd += ['-H', 'Authorization: Bearer ' + token]
        if body is not None:
            cmd += ['--data-binary', '@-']
        p = subprocess.run(cmd, input=body, capture_output=True)
        if p.returncode:
            return 0, p.stderr
        out, _, code = p.stdout.rpartition(b'\n')
        return int(code), out


def update_body(rng):
    x = rng.uniform(-1, 1, PARAMS).astype(np.float32)
    w = int(rng.integers(1, 50))
    return x, w


def post(cl, host, job, token, rnd, x, w, extra=None):
    return cl.call(host, 'POST', '/v1/jobs/%s/updates' % job, x.tobytes(),
                   dict({'Content-Type': 'application/octet-stream',
                         'X-Tributary-Round': str(rnd), 'X-Tributary-Samples': str(w)},
                        **(extra or {})), token)


def post_many(cl, items):
    """items: (host, job, token, round, x, w); in parallel; returns [(status, body)]."""
    out = [None] * len(items)

    def run(k):
        out[k] = post(cl, *items[k])

    ts = [threading.Thread(target=run, args=(k,)) for k in range(len(items))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def get_model(cl, host, job, token, v, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        st, b = cl.call(host, 'GET', '/v1/jobs/%s/model?round=%d' % (job, v), token=token)
        if st == 200:
            _, t, order = st_decode(b)
            return np.concatenate([t[k].ravel() for k in order])
        time.sleep(0.2)
    raise Failure('model v%d of %s never appeared on %s' % (v, job, host))


def mhdr(x):
    """X-Tributary-Metrics of update x (derived from it, so the expected means follow)."""
    return {'X-Tributary-Metrics': json.dumps({'loss': float(x[0]) + 2, 'acc': float(x[1])})}


def check_metrics(info, ups, what):
    """The record's metrics: the sample-weighted means (numpy) over exactly @ups."""
    ws = [w for _, w in ups]
    want = {'loss': float(np.average([float(x[0]) + 2 for x, _ in ups], weights=ws)),
            'acc': float(np.average([float(x[1]) for x, _ in ups], weights=ws))}
    got = info.get('metrics') or {}
    check(info.get('metrics_updates') == len(ups) and set(got) == set(want) and
          all(abs(got[k] - v) < 1e-9 for k, v in want.items()),
          '%s: metrics %s over %s updates, want %s over %d' %
          (what, got, info.get('metrics_updates'), want, len(ups)))


def round_info(cl, host, job, token, r):
    st, b = cl.call(host, 'GET', '/v1/jobs/%s/rounds/%d' % (job, r), token=token)
    check(st == 200, 'GET rounds/%d on %s: %d %s' % (r, host, st, b[:200]))
    return json.loads(b)


def check_model(m, xs, ws, what):
    ref = np.average(np.array(xs, dtype=np.float64), axis=0, weights=ws)
    err = float(np.max(np.abs(m.astype(np.float64) - ref)))
    check(err < 1e-5, '%s: differs from the float64 mean by %.3g' % (what, err))
    log('  %s equals the float64 mean over %d updates (max error %.2g)' % (what, len(xs), err))


def rounds_list(cl, tok):
    """GET /v1/jobs/a/rounds in a cluster: the controller's page, the same on every gateway,
    paged with from/limit as on one node, bad parameters refused by the gateway."""
    pages = []
    for h in NODE_IP:
        st, b = cl.call(h, 'GET', '/v1/jobs/a/rounds', token=tok)
        check(st == 200, 'GET rounds on %s: %d %s' % (h, st, b[:200]))
        pages.append(json.loads(b))
    p = pages[0]
    got = [(x['round'], x['state'], x['updates']) for x in p['rounds']]
    check(got == [(0, 'done', 36), (1, 'done', 36), (2, 'done', 36), (3, 'open', 0)] and
          p['next'] is None, 'rounds list: %s next %s' % (got, p['next']))
    for q in pages[1:]:
        check([(x['round'], x['state'], x['updates'], x['top']) for x in q['rounds'][:3]] ==
              [(x['round'], x['state'], x['updates'], x['top']) for x in p['rounds'][:3]],
              'rounds list differs between gateways: %s / %s' % (q, p))
    for x in p['rounds'][:3]:
        one = round_info(cl, NODE_IP[2], 'a', tok, x['round'])
        check({k: one[k] for k in ('round', 'state', 'updates', 'top', 'edges', 'clients')} ==
              {k: x[k] for k in ('round', 'state', 'updates', 'top', 'edges', 'clients')},
              'list entry %s != GET rounds/%d %s' % (x, x['round'], one))
    # The open round before its first update, alone: as its list entry.
    one = round_info(cl, NODE_IP[0], 'a', tok, 3)
    check(one == p['rounds'][3] and one['state'] == 'open' and one['metrics_updates'] == 0,
          'rounds/3 (open, empty) %s != its list entry %s' % (one, p['rounds'][3]))
    st, b = cl.call(NODE_IP[1], 'GET', '/v1/jobs/a/rounds?from=0&limit=2', token=tok)
    p1 = json.loads(b) if st == 200 else {}
    check(st == 200 and [x['round'] for x in p1['rounds']] == [0, 1] and p1['next'] == 2,
          'rounds page 1: %d %s' % (st, b[:300]))
    st, b = cl.call(NODE_IP[2], 'GET', '/v1/jobs/a/rounds?from=2&limit=2', token=tok)
    p2 = json.loads(b) if st == 200 else {}
    check(st == 200 and [x['round'] for x in p2['rounds']] == [2, 3] and p2['next'] is None,
          'rounds page 2: %d %s' % (st, b[:300]))
    st, b = cl.call(NODE_IP[0], 'GET', '/v1/jobs/a/rounds?from=9', token=tok)
    check(st == 200 and json.loads(b) == {'rounds': [], 'next': None},
          'rounds from 9: %d %s' % (st, b[:300]))
    for q in ('limit=0', 'limit=1001', 'from=x'):
        st, b = cl.call(NODE_IP[1], 'GET', '/v1/jobs/a/rounds?' + q, token=tok)
        check(st == 400 and q.split('=')[0].encode() in b, 'rounds?%s: %d %s' % (q, st, b[:200]))
    log('  rounds list from the controller: the same page on 3 gateways, paged 2+2, '
        'bad from/limit 400')


def evaluations(cl, creds, rng):
    """POST /evaluations on any gateway reaches the controller: one per client per version
    (409 on a second, on another gateway too), Idempotency-Key answered again, unknown version
    404, and the round's record on every gateway carries the sample-weighted means (numpy)."""
    evs = []
    for k in range(1, 6):
        n = int(rng.integers(1, 500))
        mt = {'loss': float(rng.uniform(0, 3)), 'acc': float(rng.uniform(0, 1))}
        if k == 5:
            mt['extra'] = 7.25
        h = NODE_IP[k % 3]
        st, b = cl.call(h, 'POST', '/v1/jobs/ca/evaluations',
                        json.dumps({'version': 1, 'samples': n, 'metrics': mt}).encode(),
                        {'Content-Type': 'application/json', 'Idempotency-Key': 'ev-%d' % k},
                        creds[k])
        check(st == 202 and json.loads(b) == {'version': 1, 'clients': k},
              'evaluation of site%d on %s: %d %s' % (k, h, st, b[:200]))
        evs.append((n, mt))
    # The same request again elsewhere: its first answer; without the key: 409.
    st, b = cl.call(NODE_IP[0], 'POST', '/v1/jobs/ca/evaluations',
                    json.dumps({'version': 1, 'samples': evs[1][0],
                                'metrics': evs[1][1]}).encode(),
                    {'Content-Type': 'application/json', 'Idempotency-Key': 'ev-2'}, creds[2])
    check(st == 202 and json.loads(b) == {'version': 1, 'clients': 2},
          'evaluation resent with its key on n0: %d %s' % (st, b[:200]))
    st, b = cl.call(NODE_IP[0], 'POST', '/v1/jobs/ca/evaluations',
                    json.dumps({'version': 1, 'samples': 3, 'metrics': {}}).encode(),
                    {'Content-Type': 'application/json'}, creds[1])
    check(st == 409 and b'one per client per version' in b,
          'a second evaluation of site1 on n0: %d %s' % (st, b[:200]))
    st, b = cl.call(NODE_IP[2], 'POST', '/v1/jobs/ca/evaluations',
                    json.dumps({'version': 9, 'samples': 3, 'metrics': {}}).encode(),
                    {'Content-Type': 'application/json'}, creds[1])
    check(st == 404 and b'version 9 does not exist' in b,
          'evaluation of version 9: %d %s' % (st, b[:200]))
    st, b = cl.call(NODE_IP[1], 'POST', '/v1/jobs/ca/evaluations',
                    json.dumps({'version': 1, 'samples': 3, 'metrics': {'loss': 'x'}}).encode(),
                    {'Content-Type': 'application/json'}, creds[3])
    check(st == 400, 'evaluation with a string metric: %d %s' % (st, b[:200]))
    want = {}
    for name in ('loss', 'acc', 'extra'):
        rows = [(n, mt[name]) for n, mt in evs if name in mt]
        want[name] = float(np.average([v for _, v in rows], weights=[n for n, _ in rows]))
    for h in NODE_IP:
        rec = round_info(cl, h, 'ca', creds[4], 0)
        ev = rec.get('evaluation') or {}
        check(ev.get('version') == 1 and ev.get('clients') == 5 and
              ev.get('samples') == sum(n for n, _ in evs) and
              set(ev.get('metrics', {})) == set(want) and
              all(abs(ev['metrics'][k] - v) < 1e-9 for k, v in want.items()),
              'round 0 evaluation on %s: %s, want %s' % (h, ev, want))
        st, b = cl.call(h, 'GET', '/v1/jobs/ca/rounds', token=creds[4])
        page = json.loads(b) if st == 200 else {}
        check(st == 200 and page['rounds'][0].get('evaluation') == ev and
              page['rounds'][1].get('evaluation') is None,
              'rounds list of ca on %s: %d %s' % (h, st, b[:400]))
    log('  evaluations across 3 gateways: one per client (409), key resend, 404, means equal '
        'numpy on every gateway: %s' % want)


def metrics(cl, host):
    st, b = cl.call(host, 'GET', '/metrics')
    check(st == 200, 'metrics of %s: %d' % (host, st))
    return parse_metrics(b.decode())


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise Failure('timed out waiting for ' + what)


def outcomes(ns, job, token, acks):
    """The Python client's Job.outcome() of each 202 answer, asked from namespace @ns."""
    code = ('import json, sys; sys.path.insert(0, %r); import tributary_client as tc; '
            'j = tc.Client(%r, %r).job(%r, token=%r); '
            'print(json.dumps([j.outcome(a) for a in json.loads(sys.stdin.read())]))' %
            (os.path.join(HERE, '..', '..', 'clients', 'python'),
             'http://%s:8080' % NODE_IP[0], token, job, token))
    p = subprocess.run(['ip', 'netns', 'exec', ns, sys.executable, '-c', code],
                       input=json.dumps(acks), capture_output=True, text=True)
    check(p.returncode == 0, 'Job.outcome(): %s' % p.stderr[-2000:])
    return json.loads(p.stdout)


def create_job(cl, admin, name, cpr, fanin):
    st, b = cl.call(NODE_IP[0], 'POST', '/v1/jobs', json.dumps(
        {'name': name, 'clients_per_round': cpr, 'params': PARAMS, 'fan_in': fanin}).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create %s: %d %s' % (name, st, b))
    return json.loads(b)['token']


def client_creds(cl, admin, rng):
    """Client tokens on a cluster: minted once, checked on every node; revoked on every node."""
    cpr = 6
    st, b = cl.call(NODE_IP[0], 'POST', '/v1/jobs', json.dumps(
        {'name': 'ca', 'clients_per_round': cpr, 'params': PARAMS, 'fan_in': 2,
         'client_auth': 'required'}).encode(), {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create ca: %d %s' % (st, b))
    jtok = json.loads(b)['token']
    wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/ca', token=jtok)[0] == 200
                         for h in NODE_IP), 5, 'the job ca known on every node')
    creds = []
    for k in range(cpr):
        # Minted on one gateway each (n0 with the admin token, n1 with the job's): no round
        # trip, every node holds the job's key.
        host, tok = (NODE_IP[0], admin) if k % 2 == 0 else (NODE_IP[1], jtok)
        st, b = cl.call(host, 'POST', '/v1/jobs/ca/clients',
                        json.dumps({'client': 'site%d' % k}).encode(),
                        {'Content-Type': 'application/json'}, tok)
        check(st == 201, 'mint site%d on %s: %d %s' % (k, host, st, b))
        creds.append(json.loads(b)['token'])
    x, w = update_body(rng)
    for h in NODE_IP:
        st, b = post(cl, h, 'ca', jtok, 0, x, w)
        check(st == 403, 'the job token on a required job, %s: %d %s' % (h, st, b[:200]))
        for k in (0, 1):
            st, b = cl.call(h, 'GET', '/v1/jobs/ca', token=creds[k])
            check(st == 200, 'a client token read on %s: %d %s' % (h, st, b[:200]))
    ups = [update_body(rng) for _ in range(cpr)]
    res = post_many(cl, [(NODE_IP[k % 3], 'ca', creds[k], 0, x, w)
                         for k, (x, w) in enumerate(ups)])
    for k, (st, b) in enumerate(res):
        check(st == 202, 'ca: site%d on n%d: %d %s' % (k, k % 3, st, b[:200]))
    m = get_model(cl, NODE_IP[2], 'ca', creds[5], 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups], 'ca round 0 (client tokens)')
    evaluations(cl, creds, rng)
    # Revoked through one gateway: refused on every gateway (the controller tells each node).
    st, b = cl.call(NODE_IP[2], 'DELETE', '/v1/jobs/ca/clients/site0', token=admin)
    check(st == 200 and json.loads(b) == {'client': 'site0', 'revoked': True},
          'revoke site0 on n2: %d %s' % (st, b))
    x, w = update_body(rng)
    for h in NODE_IP:
        wait_for(lambda h=h: post(cl, h, 'ca', creds[0], 1, x, w)[0] == 401, 5,
                 'the revoked site0 refused on %s' % h)
        bad = creds[1][:-1] + ('A' if not creds[1].endswith('A') else 'B')
        st, b = post(cl, h, 'ca', bad, 1, x, w)
        check(st == 401, 'a tampered token on %s: %d %s' % (h, st, b[:200]))
    st, b = post(cl, NODE_IP[1], 'ca', creds[1], 1, x, w)
    check(st == 202, 'site1 in round 1 after the revocation: %d %s' % (st, b[:200]))
    # One update per client per round, cluster-wide: the controller counts clients.
    for h in (NODE_IP[1], NODE_IP[2]):
        st, b = post(cl, h, 'ca', creds[1], 1, x, w)
        check(st == 409 and b'one update per client' in b,
              'a second update of site1 in round 1 via %s: %d %s' % (h, st, b[:200]))
    info = round_info(cl, NODE_IP[0], 'ca', jtok, 0)
    check(info['clients'] == cpr and info['updates'] == cpr, 'ca round 0 record: %s' % info)
    # Update metrics go to the controller with the count (section A checks the means); a bad
    # header is a 400 on a cluster's gateway as on one node, nothing counted.
    st, b = post(cl, NODE_IP[2], 'ca', creds[2], 1, x, w, {'X-Tributary-Metrics': '{"a": "x"}'})
    check(st == 400 and b'X-Tributary-Metrics' in b,
          'an update with metrics in a cluster: %d %s' % (st, b[:200]))
    check(round_info(cl, NODE_IP[2], 'ca', jtok, 1)['received'] == 1, 'the 409s were counted')
    log('client tokens: minted on n0 and n1, accepted on every gateway, the job token refused '
        '(403); site0 revoked via n2, then refused on n0, n1 and n2; a tampered token refused; '
        'a second update of one client in a round refused on two other gateways (409); round '
        '0 counted %d distinct clients' % cpr)


def client_config(cl, admin, rng):
    """client_config travels with the job to every node (selection: cluster_select.py)."""
    cc = {'values': {'lr': 0.1}, 'schedule': [{'from_round': 1, 'values': {'lr': 0.01}}]}
    st, b = cl.call(NODE_IP[0], 'POST', '/v1/jobs', json.dumps(
        {'name': 'cc', 'clients_per_round': 1, 'params': PARAMS, 'client_config': cc}).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create cc: %d %s' % (st, b))
    tok = json.loads(b)['token']
    for r, lr in ((0, 0.1), (1, 0.01)):
        for h in NODE_IP:
            def seen(h=h):
                st, b = cl.call(h, 'GET', '/v1/jobs/cc/task', token=tok)
                return st == 200 and json.loads(b).get('round') == r and json.loads(b)
            t = wait_for(seen, 10, 'round %d task on %s' % (r, h))
            check(t['action'] == 'train' and t['config'] == {'lr': lr},
                  'cc round %d task on %s: %s' % (r, h, t))
            st, b = cl.call(h, 'GET', '/v1/jobs/cc', token=tok)
            check(st == 200 and json.loads(b)['client_config'] == {'lr': lr},
                  'cc round %d status on %s: %s' % (r, h, b[:300]))
        if r == 0:
            x, w = update_body(rng)
            st, b = post(cl, NODE_IP[1], 'cc', tok, 0, x, w)
            check(st == 202, 'cc update: %d %s' % (st, b[:200]))
            get_model(cl, NODE_IP[2], 'cc', tok, 1)
    log('client_config on every node: round 0 lr 0.1, round 1 lr 0.01')


def num_rounds_done(cl, admin, rng):
    """num_rounds across nodes: done after the last round on every gateway (410), models kept;
    DELETE and pause are single-node (400 naming the limit)."""
    st, b = cl.call(NODE_IP[0], 'POST', '/v1/jobs', json.dumps(
        {'name': 'fin', 'clients_per_round': 3, 'params': PARAMS, 'fan_in': 2,
         'num_rounds': 1}).encode(), {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create fin: %d %s' % (st, b))
    tok = json.loads(b)['token']
    wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/fin', token=tok)[0] == 200
                         for h in NODE_IP), 5, 'the job fin known on every node')
    ups = [update_body(rng) for _ in range(3)]
    res = post_many(cl, [(NODE_IP[k], 'fin', tok, 0, x, w) for k, (x, w) in enumerate(ups)])
    check(all(st == 202 for st, _ in res), 'fin round 0: %s' % res)
    m = get_model(cl, NODE_IP[2], 'fin', tok, 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups], 'fin round 0 (num_rounds 1)')
    x, w = update_body(rng)
    for h in NODE_IP:
        wait_for(lambda h=h: json.loads(cl.call(h, 'GET', '/v1/jobs/fin', token=tok)[1])
                 .get('state') == 'done', 5, 'fin done on %s' % h)
        st, b = post(cl, h, 'fin', tok, 1, x, w)
        check(st == 410 and b"job 'fin' is done after 1 rounds" in b,
              'an update after the last round via %s: %d %s' % (h, st, b[:200]))
        check(get_model(cl, h, 'fin', tok, 1) is not None, 'fin v1 on %s' % h)
    st, b = cl.call(NODE_IP[1], 'GET', '/v1/cluster', token=admin)
    fin = [j for j in json.loads(b)['jobs'] if j['name'] == 'fin']
    check(st == 200 and fin and fin[0].get('state') == 'done' and fin[0]['num_rounds'] == 1,
          'the controller says fin is done: %s' % fin)
    st, b = cl.call(NODE_IP[0], 'POST', '/v1/jobs/fin/pause', token=admin)
    check(st == 409 and json.loads(b).get('state') == 'done', 'pause of a done job: %s' % b)
    # Deleted through one gateway: gone on every gateway, and the name free again.
    st, b = cl.call(NODE_IP[1], 'DELETE', '/v1/jobs/fin', token=tok)
    check(st == 403, 'DELETE with the job token in a cluster: %d %s' % (st, b[:200]))
    st, b = cl.call(NODE_IP[1], 'DELETE', '/v1/jobs/fin?purge=true', token=admin)
    check(st == 200 and json.loads(b) == {'job': 'fin', 'deleted': True, 'purged': True},
          'DELETE via n1: %d %s' % (st, b[:200]))
    for h in NODE_IP:
        wait_for(lambda h=h: cl.call(h, 'GET', '/v1/jobs/fin', token=admin)[0] == 404, 5,
                 'fin gone on %s' % h)
        st, b = post(cl, h, 'fin', tok, 1, x, w)
        check(st == 401, 'an update to the deleted fin via %s: %d %s' % (h, st, b[:200]))
    st, b = cl.call(NODE_IP[1], 'GET', '/v1/cluster', token=admin)
    check(not [j for j in json.loads(b)['jobs'] if j['name'] == 'fin'],
          'the controller still lists fin: %s' % b[:300])
    tok2 = create_job(cl, admin, 'fin', 3, 2)
    check(tok2 != tok, 'fin made again with the old token')
    wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/fin', token=tok2)[0] == 200
                         for h in NODE_IP), 5, 'the new fin known on every node')
    # Deleted with an update in its open round; made again, it runs a round exactly.
    x, w = update_body(rng)
    st, b = post(cl, NODE_IP[0], 'fin', tok2, 0, x, w)
    check(st == 202, 'an update to the second fin: %d %s' % (st, b[:200]))
    st, b = cl.call(NODE_IP[2], 'DELETE', '/v1/jobs/fin', token=admin)
    check(st == 200 and json.loads(b)['purged'] is False, 'DELETE via n2: %d %s' % (st, b))
    for h in NODE_IP:
        wait_for(lambda h=h: cl.call(h, 'GET', '/v1/jobs/fin', token=admin)[0] == 404, 5,
                 'the second fin gone on %s' % h)
    tok3 = create_job(cl, admin, 'fin', 3, 2)
    wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/fin', token=tok3)[0] == 200
                         for h in NODE_IP), 5, 'the third fin known on every node')
    ups = [update_body(rng) for _ in range(3)]
    res = post_many(cl, [(NODE_IP[k], 'fin', tok3, 0, x, w) for k, (x, w) in enumerate(ups)])
    check(all(st == 202 for st, _ in res), 'the third fin, round 0: %s' % res)
    m = get_model(cl, NODE_IP[1], 'fin', tok3, 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups], 'the third fin round 0')
    log('num_rounds 1 across nodes: done on every gateway (410 after), the model served; '
        'deleted via n1 (done) and n2 (a round open): 404 on every gateway, the name made '
        'again and its round exact')


def pause_resume(cl, admin, rng):
    """Paused through one gateway: every gateway answers 503; resumed through another."""
    st, b = cl.call(NODE_IP[0], 'POST', '/v1/jobs', json.dumps(
        {'name': 'pz', 'clients_per_round': 2, 'params': PARAMS, 'fan_in': 2}).encode(),
        {'Content-Type': 'application/json'}, admin)
    check(st == 201, 'create pz: %d %s' % (st, b))
    tok = json.loads(b)['token']
    wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/pz', token=tok)[0] == 200
                         for h in NODE_IP), 5, 'the job pz known on every node')
    st, b = cl.call(NODE_IP[1], 'POST', '/v1/jobs/pz/pause', token=tok)
    check(st == 200 and json.loads(b) == {'job': 'pz', 'state': 'paused'},
          'pause via n1: %d %s' % (st, b))
    x, w = update_body(rng)
    for h in NODE_IP:
        wait_for(lambda h=h: json.loads(cl.call(h, 'GET', '/v1/jobs/pz', token=tok)[1])
                 .get('state') == 'paused', 5, 'pz paused on %s' % h)
        st, b = post(cl, h, 'pz', tok, 0, x, w)
        check(st == 503 and b"job 'pz' is paused" in b,
              'an update to a paused job via %s: %d %s' % (h, st, b[:200]))
    st, b = cl.call(NODE_IP[1], 'GET', '/v1/cluster', token=admin)
    pz = [j for j in json.loads(b)['jobs'] if j['name'] == 'pz']
    check(pz and pz[0]['state'] == 'paused', 'the controller says pz is paused: %s' % pz)
    st, b = cl.call(NODE_IP[2], 'POST', '/v1/jobs/pz/resume', token=admin)
    check(st == 200 and json.loads(b) == {'job': 'pz', 'state': 'open'},
          'resume via n2: %d %s' % (st, b))
    wait_for(lambda: all(json.loads(cl.call(h, 'GET', '/v1/jobs/pz', token=tok)[1])
                         .get('state') == 'open' for h in NODE_IP), 5, 'pz open everywhere')
    ups = [update_body(rng) for _ in range(2)]
    res = post_many(cl, [(NODE_IP[k], 'pz', tok, 0, x, w) for k, (x, w) in enumerate(ups)])
    check(all(st == 202 for st, _ in res), 'pz round 0 after resume: %s' % res)
    m = get_model(cl, NODE_IP[2], 'pz', tok, 1)
    check_model(m, [x for x, _ in ups], [w for _, w in ups], 'pz round 0 (paused, resumed)')
    log('pause via n1: 503 on every gateway; resumed via n2: the round completes exactly')


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(SKIP)
    global CTL_IP, NODE_IP
    net = netns_cluster.Net(3)
    CTL_IP, NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-cluster-')
    procs = []
    try:
        net.up()
        # The first cluster runs as deployed, on 2 MiB huge pages where the machine has them
        # (a node says so, or why not, in its log); the later ones on normal pages.
        ctl, nodes = netns_cluster.start(net, BIN, tmp)
        procs += [ctl] + nodes
        cl = Client(net.ctl)
        wait_joined(cl)
        log('arenas: %s' % ['huge' if 'on 2 MiB huge pages' in nd.log_text() else 'normal'
                            for nd in nodes])
        with open('/proc/net/fib_trie') as f:
            trie = f.read()
        check(CTL_IP not in trie and NODE_IP[0] not in trie,
              'the test addresses must exist only inside the namespaces')
        log('controller and 3 nodes up, each in its own namespace')
        admin = netns_cluster.admin_token(tmp)
        rng = np.random.default_rng(5)

        # --- A: three rounds over three gateways ---
        cpr = 36
        tok = create_job(cl, admin, 'a', cpr, 4)
        # The controller answers the create, then tells the other nodes: a node may learn of the
        # job a few ms after the 201 (until then it answers 401 to the job's token).
        known = []
        wait_for(lambda: known.append(cl.call(NODE_IP[2], 'GET', '/v1/jobs/a', token=tok)[0])
                 or known[-1] == 200, 5, 'the job known on n2 (answers so far: %s)' % known)
        # The controller decides names: 'A' is the job 'a' (case aside), on any gateway.
        st, b = cl.call(NODE_IP[1], 'POST', '/v1/jobs', json.dumps(
            {'name': 'A', 'clients_per_round': cpr, 'params': PARAMS}).encode(),
            {'Content-Type': 'application/json'}, admin)
        check(st == 409, "create 'A' next to 'a': %d %s" % (st, b[:200]))
        for r in range(3):
            ups = [update_body(rng) for _ in range(cpr)]
            res = post_many(cl, [(NODE_IP[k % 3], 'a', tok, r, x, w, mhdr(x) if k % 4 else None)
                                 for k, (x, w) in enumerate(ups)])
            for k, (st, b) in enumerate(res):
                check(st == 202, 'round %d update %d: %d %s' % (r, k, st, b[:200]))
                check(json.loads(b)['node'] == 'n%d' % (k % 3),
                      'locality: an update folds on the node that received it')
            m = get_model(cl, NODE_IP[(r + 1) % 3], 'a', tok, r + 1)
            check_model(m, [x for x, _ in ups], [w for _, w in ups], 'round %d' % r)
            info = round_info(cl, NODE_IP[1], 'a', tok, r)
            top = info['top']
            edges = sorted(tuple(e) for e in info['edges'])
            want = sorted(('n%d' % i, top) for i in range(3) if 'n%d' % i != top)
            check(edges == want, 'round %d: edges %s, want one per node to the top: %s' %
                  (r, edges, want))
            check(info['updates'] == cpr and not info['lost_nodes'],
                  'round %d record: %s' % (r, info))
            check_metrics(info, [u for k, u in enumerate(ups) if k % 4], 'round %d' % r)
            check(info['state'] == 'done' and 0 <= info['duration_s'] and
                  abs(info['closed_at'] - info['opened_at'] - info['duration_s']) < 1e-3 and
                  abs(info['closed_at'] - time.time()) < 120,
                  'round %d record times: %s' % (r, info))
            log('  round %d: top on %s, cross-node edges %s' % (r, top, edges))
        rounds_list(cl, tok)
        sent = [metrics(cl, h).get('tributary_cluster_partials_sent_total', 0)
                for h in NODE_IP]
        recv = [metrics(cl, h).get('tributary_cluster_partials_received_total', 0)
                for h in NODE_IP]
        check(sum(sent) == 6 and sum(recv) == 6 and max(sent) <= 3,
              'node counters: sent %s received %s: want 2 edges in each of 3 rounds' %
              (sent, recv))
        tokfile = os.path.join(tmp, 'ctl-7070', 'admin-token')
        st = subprocess.run(['ip', 'netns', 'exec', net.ctl, BIN, 'status', '--url',
                             'http://%s:8080' % NODE_IP[0], '--admin-token-file', tokfile],
                            capture_output=True, text=True)
        check(st.returncode == 0 and 'cluster: placement locality' in st.stdout and
              '2 cross-node edges' in st.stdout,
              'tributary status shows the placement: rc %d\n%s%s' %
              (st.returncode, st.stdout, st.stderr))
        log('A: 3 rounds correct; exactly one cross-node edge per non-top node per round; '
            'tributary status shows it:')
        log('\n'.join('    ' + ln for ln in st.stdout.splitlines() if ln.strip()
                       and ('cluster:' in ln or 'edges' in ln or ' done ' in ln))[:1500])

        client_creds(cl, admin, rng)
        client_config(cl, admin, rng)


        num_rounds_done(cl, admin, rng)
        pause_resume(cl, admin, rng)

        # --- B: kill -9 a node mid-round (open round: clients resend) ---
        tok = create_job(cl, admin, 'b', 30, 4)
        ups = [update_body(rng) for _ in range(30)]
        first = [(NODE_IP[k % 3], 'b', tok, 0, x, w, mhdr(x)) for k, (x, w) in enumerate(ups[:15])]
        epochs = set()
        acks = {}
        for k, (st, b) in enumerate(post_many(cl, first)):
            check(st == 202, 'b: update %d: %d %s' % (k, st, b[:200]))
            acks.setdefault(json.loads(b)['node'], json.loads(b))
            if json.loads(b)['node'] == 'n2':
                epochs.add(json.loads(b)['epoch'])
        check(len(epochs) == 1, 'the 202s of one node run name one epoch: %s' % epochs)
        victim = nodes[2]
        victim.kill()
        log('B: killed n2 (pid %d) with 5 of its updates acknowledged, round open' %
            victim.p.pid)
        info = wait_for(lambda: (lambda i: i if i['lost_nodes'] else None)(
            round_info(cl, NODE_IP[0], 'b', tok, 0)), 10, 'n2 to be drained')
        check(info['lost_nodes'] == ['n2'] and info['state'] == 'open' and
              info['received'] == 10 and
              info['lost'] == [{'node': 'n2', 'epoch': epochs.pop(), 'updates': 5}],
              'after the kill: %s' % info)
        log('  the round record says: lost_nodes %s, state %s, %d received: clients of n2 '
            'resend' % (info['lost_nodes'], info['state'], info['received']))
        got = outcomes(net.ctl, 'b', tok, [acks['n2'], acks['n0']])
        check(got == ['resend', 'pending'], 'Job.outcome() of an n2 and an n0 202: %s' % got)
        log('  the Python client tells them: %s' % got)
        check_metrics(info, [ups[k] for k in range(15) if k % 3 != 2],
                      'B: the open round without n2')
        resend = [(NODE_IP[k % 2], 'b', tok, 0, ups[k][0], ups[k][1], mhdr(ups[k][0]))
                  for k in range(15) if k % 3 == 2]
        rest = [(NODE_IP[k % 2], 'b', tok, 0, x, w, mhdr(x)) for k, (x, w) in enumerate(ups[15:])]
        for k, (st, b) in enumerate(post_many(cl, resend + rest)):
            check(st == 202, 'b: resend/rest %d: %d %s' % (k, st, b[:200]))
        m = get_model(cl, NODE_IP[0], 'b', tok, 1)
        check_model(m, [x for x, _ in ups], [w for _, w in ups], 'B round 0 after the kill')
        info = round_info(cl, NODE_IP[1], 'b', tok, 0)
        check(info['state'] == 'done' and info['updates'] == 30 and len(info['edges']) == 1,
              'B record: %s' % info)
        check_metrics(info, ups, 'B: done, n2\'s updates once (resent)')
        log('B: metrics means leave out the lost node run and count its resends once')
        got = outcomes(net.ctl, 'b', tok, [acks['n0']])
        check(got == ['in_model'], 'Job.outcome() of an n0 202 once done: %s' % got)
        log('B: the round completed on n0 and n1 with all 30 updates')

        # --- C: freeze the top-to-be before the close (closed round: survivors only) ---
        tok = create_job(cl, admin, 'c', 20, 4)
        ups = [update_body(rng) for _ in range(20)]
        # n1 receives the most, so the placement puts the top there.
        hosts = [NODE_IP[1]] * 12 + [NODE_IP[0]] * 7
        acks = {}
        for k, (st, b) in enumerate(post_many(cl, [(hosts[k], 'c', tok, 0, ups[k][0],
                                                     ups[k][1], mhdr(ups[k][0]))
                                                    for k in range(19)])):
            check(st == 202, 'c: update %d: %d %s' % (k, st, b[:200]))
            acks.setdefault(json.loads(b)['node'], json.loads(b))
        nodes[1].p.send_signal(signal.SIGSTOP)
        st, b = post(cl, NODE_IP[0], 'c', tok, 0, ups[19][0], ups[19][1], mhdr(ups[19][0]))
        check(st == 202, 'c: the closing update: %d %s' % (st, b[:200]))
        log('C: n1 (12 updates, the top) frozen; the round closed with the 20th update')
        m = get_model(cl, NODE_IP[0], 'c', tok, 1)
        info = round_info(cl, NODE_IP[0], 'c', tok, 0)
        check(info['lost_nodes'] == ['n1'] and info['state'] == 'done' and
              info['top'] == 'n0' and info['updates'] == 8, 'C record: %s' % info)
        survivors = [ups[k] for k in range(20) if k >= 12]
        check_metrics(info, survivors, 'C: survivors only')
        check_model(m, [x for x, _ in survivors], [w for _, w in survivors],
                    'C round 0 without n1')
        got = outcomes(net.ctl, 'c', tok, [acks['n1'], acks['n0']])
        check(got == ['lost', 'in_model'], 'Job.outcome() of an n1 and an n0 202: %s' % got)
        log('  lost_nodes %s and state done: the 12 clients n1 acknowledged are told to '
            'send again in a later round (Job.outcome: %s)' % (info['lost_nodes'], got))
        nodes[1].kill()
        # The cluster goes on with the one node left.
        ups = [update_body(rng) for _ in range(20)]
        for k, (st, b) in enumerate(post_many(cl, [(NODE_IP[0], 'c', tok, 1, x, w)
                                                   for x, w in ups])):
            check(st == 202, 'c round 1: update %d: %d %s' % (k, st, b[:200]))
        m = get_model(cl, NODE_IP[0], 'c', tok, 2)
        check_model(m, [x for x, _ in ups], [w for _, w in ups], 'C round 1 on n0 alone')
        for p in [nodes[0], ctl]:
            stop(p)

        # --- D: round-robin placement: updates forwarded, models exact ---
        ctl, nodes = netns_cluster.start(net, BIN, tmp, port=8081, ctl_port=7072,
                                         peer_port=7073, placement='round-robin',
                                         node_args=['--no-huge'])
        procs += [ctl] + nodes
        cl = Client(net.ctl, 8081)
        wait_joined(cl)
        admin = netns_cluster.admin_token(tmp, 7072)
        tok = create_job(cl, admin, 'd', 24, 4)
        crossed = 0
        for r in range(2):
            ups = [update_body(rng) for _ in range(24)]
            res = post_many(cl, [(NODE_IP[k % 3], 'd', tok, r, x, w)
                                 for k, (x, w) in enumerate(ups)])
            for k, (st, b) in enumerate(res):
                check(st == 202, 'd round %d update %d: %d %s' % (r, k, st, b[:200]))
                crossed += json.loads(b)['node'] != 'n%d' % (k % 3)
            m = get_model(cl, NODE_IP[r % 3], 'd', tok, r + 1)
            check_model(m, [x for x, _ in ups], [w for _, w in ups], 'D round %d' % r)
        fwd = sum(metrics(cl, h).get('tributary_cluster_updates_forwarded_total', 0)
                  for h in NODE_IP)
        landed = sum(metrics(cl, h).get('tributary_cluster_updates_landed_total', 0)
                     for h in NODE_IP)
        check(crossed > 0 and fwd == crossed and landed == crossed,
              'round-robin: %d answers name another node, %d forwarded, %d landed' %
              (crossed, fwd, landed))
        log('D: round-robin placement forwarded %d of 48 updates to other nodes; models exact'
            % crossed)

        # --- E: the controller restarts: nodes join it again, the job goes on ---
        stop(ctl)
        ctl = netns_cluster.Proc('controller-rr-2', net.ctl, BIN, [
            'controller', '--listen', 'tls+tcp://%s:7072' % CTL_IP, '--placement', 'round-robin',
            '--data-dir', os.path.join(tmp, 'ctl-7072')], tmp)
        procs.append(ctl)
        for i, nd in enumerate(nodes):
            wait_for(lambda i=i, nd=nd: nd.p.poll() is not None or (
                'joining again' in nd.log_text() and
                metrics(cl, NODE_IP[i]).get('tributary_cluster_joined') == 1), 30,
                '%s to join the restarted controller' % nd.name)
            check(nd.p.poll() is None, '%s exited %s, want it to join again' %
                  (nd.name, nd.p.returncode))
        m2 = get_model(cl, NODE_IP[0], 'd', tok, 2)
        check(np.array_equal(m2, m), 'model v2 after the restart differs from before')
        ups = [update_body(rng) for _ in range(24)]
        for k, (st, b) in enumerate(post_many(cl, [(NODE_IP[0], 'd', tok, 2, x, w)
                                                   for x, w in ups])):
            check(st == 202, 'e: update %d: %d %s' % (k, st, b[:200]))
        check_model(get_model(cl, NODE_IP[0], 'd', tok, 3), [x for x, _ in ups],
                    [w for _, w in ups], 'E round 2 after the controller restarted')
        log('E: after a controller restart the nodes joined it again, and round 2 completed')
        for p in nodes + [ctl]:
            stop(p)

        # --- F: tributary simulate over the three gateways while a node is killed ---
        ctl, nodes = netns_cluster.start(net, BIN, tmp, port=8082, ctl_port=7074,
                                         peer_port=7075, node_args=['--no-huge'])
        procs += [ctl] + nodes
        cl = Client(net.ctl, 8082)
        wait_joined(cl)
        urls = ','.join('http://%s:8082' % ip for ip in NODE_IP)
        sim = subprocess.Popen(
            ['ip', 'netns', 'exec', net.ctl, BIN, 'simulate', '--url', urls, '--job', 'f',
             '--clients', '90', '--rounds', '8', '--params', '300000', '--data-dir',
             os.path.join(tmp, 'ctl-7074'), '--quiet'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Kill a node once the job is running (its first model exists).
        wait_for(lambda: cl.call(NODE_IP[0], 'GET', '/v1/jobs/f/model?round=1',
                                 token=netns_cluster.admin_token(tmp, 7074))[0] == 200, 60,
                 'the first model of job f')
        nodes[2].kill()
        try:
            out, _ = sim.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            sim.kill()
            out, _ = sim.communicate()
            raise Failure('simulate did not finish after a node was killed:\n' + out[-3000:])
        check(sim.returncode == 0, 'simulate failed after a node was killed:\n' + out[-4000:])
        log('F: simulate over three gateways, n2 killed during the run: every model checked')
        log('\n'.join('    ' + ln for ln in out.splitlines()
                       if 'lost' in ln or 'refused' in ln or 'another gateway' in ln or
                       ln.startswith('simulate:')))
        for p in [nodes[0], nodes[1], ctl]:
            stop(p)

        # --- G: a node whose arena is full spreads: its updates fold on another node ---
        ctl, nodes = netns_cluster.start(net, BIN, tmp, port=8083, ctl_port=7076,
                                         peer_port=7077, arena_mb=[17, 256, 256],
                                         node_args=['--no-huge'])
        procs += [ctl] + nodes
        cl = Client(net.ctl, 8083)
        wait_joined(cl)
        admin = netns_cluster.admin_token(tmp, 7076)
        big = 1 << 20  # 4 MiB updates: n0's 17 MiB arena takes the job, and little more

        def big_job(name, cpr, fanin):
            st, b = cl.call(NODE_IP[1], 'POST', '/v1/jobs', json.dumps(
                {'name': name, 'clients_per_round': cpr, 'params': big, 'fan_in': fanin}
            ).encode(), {'Content-Type': 'application/json'}, admin)
            check(st == 201, 'create %s: %d %s' % (name, st, b))
            return json.loads(b)['token']

        def big_update():
            return rng.uniform(-1, 1, big).astype(np.float32), int(rng.integers(1, 50))

        tok_x, tok_y = big_job('x', 2, 64), big_job('y', 6, 4)
        # One update of x held on n0 (its leaf waits for the round's second): with the
        # leaf's and the top's accumulators, n0 has about 5 MiB left, under two updates.
        x = [big_update(), big_update()]
        st, b = post(cl, NODE_IP[0], 'x', tok_x, 0, *x[0])
        check(st == 202 and json.loads(b)['node'] == 'n0', 'x on n0: %d %s' % (st, b[:200]))
        # Until a heartbeat has told the controller: n0's arena cannot take two updates.
        need = 2 * (big * 4 + 65536)

        def n0_full():
            st, b = cl.call(NODE_IP[1], 'GET', '/v1/cluster', token=admin)
            nodes_ = json.loads(b)['nodes'] if st == 200 else []
            return any(nd['name'] == 'n0' and nd['arena_free'] < need for nd in nodes_)

        wait_for(n0_full, 20, "the controller to see n0's arena nearly full")
        st, b = cl.call(NODE_IP[1], 'GET', '/v1/cluster')
        check(st == 401, 'GET /v1/cluster without the admin token: %d %s' % (st, b[:200]))
        y = [big_update() for _ in range(6)]
        folded_on = []
        for k in range(6):
            st, b = post(cl, NODE_IP[k % 3], 'y', tok_y, 0, *y[k])
            check(st == 202, 'y update %d: %d %s' % (k, st, b[:200]))
            folded_on.append(json.loads(b)['node'])
        check(all(folded_on[k] != 'n0' for k in (0, 3)) and
              all(folded_on[k] == 'n%d' % (k % 3) for k in (1, 2, 4, 5)),
              'updates that landed on the full n0 fold elsewhere, the others where they '
              'landed: %s' % folded_on)
        check_model(get_model(cl, NODE_IP[2], 'y', tok_y, 1), [u for u, _ in y],
                    [w for _, w in y], 'G: y with n0 full')
        st, b = post(cl, NODE_IP[1], 'x', tok_x, 0, *x[1])
        check(st == 202, 'x on n1: %d %s' % (st, b[:200]))
        check_model(get_model(cl, NODE_IP[0], 'x', tok_x, 1), [u for u, _ in x],
                    [w for _, w in x], 'G: x across n0 and n1')
        fwd = metrics(cl, NODE_IP[0]).get('tributary_cluster_updates_forwarded_total', 0)
        check(fwd == 2, 'n0 forwarded %s updates, want 2' % fwd)
        log('G: n0 (17 MiB arena, holding an update) spread the 2 updates that landed on it '
            'to %s; the others folded where they landed; models exact' %
            ([folded_on[0], folded_on[3]],))
        for p in nodes + [ctl]:
            stop(p)
        log('cluster test passed')
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
        # Nodes killed with kill -9 leave their arena files (their data dirs go below).
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
