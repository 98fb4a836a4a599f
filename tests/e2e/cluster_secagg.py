# SPDX-License-Identifier: MIT
"""SecAgg+ on three netns nodes (issue 19): one node runs the job's secure rounds, every gateway
takes clients.

N = 100 clients (secagg100's), spread round-robin over the three gateways, run each round (the
clients run in the controller's namespace, where the gateways' addresses exist: this script again
with --clients). The node the controller names (rank 0) runs the rounds; the other two pass each
stage (keys, shares, the masked input, unmask, and their GETs) to it over the node link. Round 0
drops 10% of the clients still in after each stage (after advertise, after shares, after the
masked input), round 1 drops 30%: each time every node serves the same version, bit for bit
float32(exact sum * scale - clip) (the survivors' weighted quantised mean, to 1e-6 of it in
float64), the controller's record counts the survivors' inputs (the weight is the exact sum of
their n_u), and round 0's model equals the one a single node (`tributary up`) makes of the same
survivors' inputs. Round 2 falls below the threshold at the unmask stage: it fails with a clear
status on the node that runs it (no version anywhere), and the round after it works. Then a
node other than the rounds' is killed (-9) after the shares: its clients are dropouts, the round
is exact on the other two. Then the rounds' node itself is killed after the shares (every client
now on the two gateways left): the other gateway answers 503 naming it, no version comes;
restarted, it joins again and resumes the round from its state log (whose clients are gone:
it fails at its masked deadline, saying so), and the next round is exact.

Most of the time is stage deadlines that dropouts wait for (eight of them): the deadline is
derived from a timed pass of the clients (secagg100.stage_deadline_s, in the clients' namespace),
so it is short on an idle machine and longer only when the machine is slower; each round logs its
stages' passes against it, and each step its elapsed seconds.

Needs root (ip netns, veth, a bridge): exit status 77 otherwise, as cluster.py.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'clients', 'python'))
import secagg100 as s100  # noqa: E402  (SA, DIM, the dropouts, the expected model)
import tributary_secagg as sa  # noqa: E402
from e2e_common import (BIN, Server, arena_files_in, check, main,  # noqa: E402
                        remove_arena_files, st_decode)
import e2e_common  # noqa: E402

T0 = time.monotonic()


def log(msg):
    """e2e_common.log with the scenario's elapsed seconds: where its time goes."""
    e2e_common.log('[%5.1f s] %s' % (time.monotonic() - T0, msg))

N = s100.N
SA = s100.SA
DIM = s100.DIM
TIMEOUT_S = None  # the stage deadline: scenario() sets it (s100.stage_deadline_s)


def calibrate(url, out_path):
    """In the controller's namespace, where the clients run: the stage deadline for N clients
    (s100.stage_deadline_s against a gateway), to @out_path as JSON [deadline, pass]."""
    with open(out_path, 'w') as f:
        json.dump(s100.stage_deadline_s(N, url), f)


def mint(spec_path, out_path):
    """In the controller's namespace: a client token for each of N clients, client i minted on
    gateway i % 3 (one process and its connections, not a curl per token)."""
    with open(spec_path) as f:
        spec = json.load(f)
    urls, toks = spec['urls'], []
    for i in range(N):
        st, obj = sa._http(urls[i % len(urls)], 'POST', '/v1/jobs/sec/clients', spec['admin'],
                           {'client': 'c%03d' % i})
        if st != 201:
            raise RuntimeError('mint c%03d on %s: %d %r' % (i, urls[i % len(urls)], st, obj))
        toks.append(obj['token'])
    with open(out_path, 'w') as f:
        json.dump(toks, f)


def in_ctl(net, *args):
    """This script again in the controller's namespace with @args; its failure fails the test."""
    p = subprocess.run(['ip', 'netns', 'exec', net.ctl, sys.executable,
                        os.path.abspath(__file__)] + list(args), capture_output=True, text=True,
                       timeout=300)
    check(p.returncode == 0, '%s in the clients\' namespace failed:\n%s%s'
          % (args[0], p.stdout[-3000:], p.stderr[-3000:]))


def drive(spec_path, out_path):
    """In the controller's namespace: one secure round of every client, client i on gateway
    i % 3, @frac of those still in leaving after each stage; what the survivors sent to
    @out_path (x, n, the unmasked words) and each stage's pass (s100.Passes)."""
    with open(spec_path) as f:
        spec = json.load(f)
    rng = np.random.default_rng(spec['seed'])
    urls = spec['urls']
    wait = 3 * spec['deadline']
    s100.TIMEOUT_S = spec['deadline']  # send_input's wait for the stage
    ps = s100.Passes()
    sess = [sa.SecAggSession(urls[i % len(urls)], 'sec', t, poll_s=0.02)
            for i, t in enumerate(spec['tokens'])]
    ps.run('keys', sess, lambda s: s.join())
    frac = spec['frac']
    gone = s100.drop(rng, sess, frac)
    live = [s for i, s in enumerate(sess) if i not in gone]
    ps.run('shares', live, lambda s: s.send_shares(timeout=wait))
    dead = spec.get('dead_gw')
    if dead is not None:
        # The outer side kills gateway @dead now; its clients can send nothing more.
        open(spec_path + '.shares', 'w').close()
        deadline = time.monotonic() + 30
        while not os.path.exists(spec_path + '.go'):
            if time.monotonic() > deadline:
                raise RuntimeError('no go after the kill')
            time.sleep(0.05)
        gone_in = {i for i, s in enumerate(live) if sess.index(s) % len(urls) == dead}
        gone_un = set()
        if spec.get('dead_runs_rounds'):
            # Five other clients try their input at once (each proxied request waits up to
            # the node link's timeout, 10 s): what their gateway answers.
            import threading
            fails = []

            def one(s):
                try:
                    s100.send_input(s, np.zeros(DIM, dtype=np.float32), 1)
                    fails.append([200, 'taken'])
                except sa.SecAggError as err:
                    fails.append([err.status, json.dumps(err.body)])
            ts = [threading.Thread(target=one, args=(s,))
                  for i, s in enumerate(live) if i not in gone_in][:5]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            with open(out_path + '.json', 'w') as f:
                json.dump(fails, f)
            return
    elif spec['leave_unmask'] is None:
        gone_in, gone_un = s100.pick_drops(rng, live, frac, SA['threshold'])
    else:
        gone_in, gone_un = set(), set(range(spec['leave_unmask'], len(live)))
    todo = []
    for i, s in enumerate(live):
        if i in gone_in:
            continue
        x = rng.uniform(-1.2, 1.2, DIM).astype(np.float32)
        n = int(rng.integers(1, 50))
        todo.append((s, x, n, i))
    sent = ps.run('inputs', todo, lambda t: (t[1], t[2], s100.send_input(*t[:3])[1], t[3]))
    ps.run('unmask', [t for t in sent if t[3] not in gone_un],
           lambda t: live[t[3]].send_unmask(timeout=wait))
    np.savez(out_path, x=np.array([t[0] for t in sent]), n=np.array([t[1] for t in sent]),
             xw=np.array([np.frombuffer(t[2], dtype='<u4') for t in sent]),
             joined=len(sess), live=len(live), passes=json.dumps(ps.s))


def run_round(net, tmp, urls, tokens, seed, frac, leave_unmask=None, kill=None,
              kill_runs_rounds=False):
    """One round's clients; @kill (gateway index, its Proc): killed (-9) after the shares
    (@kill_runs_rounds: it is the node that runs the rounds; the answers the others got)."""
    spec = os.path.join(tmp, 'round-%d.json' % seed)
    out = os.path.join(tmp, 'round-%d.npz' % seed)
    with open(spec, 'w') as f:
        json.dump({'urls': urls, 'tokens': tokens, 'seed': seed, 'frac': frac,
                      'leave_unmask': leave_unmask, 'dead_gw': kill[0] if kill else None,
                   'dead_runs_rounds': kill_runs_rounds, 'deadline': TIMEOUT_S}, f)
    p = subprocess.Popen(['ip', 'netns', 'exec', net.ctl, sys.executable,
                          os.path.abspath(__file__), '--clients', spec, out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill:
        deadline = time.monotonic() + 60
        while not os.path.exists(spec + '.shares') and p.poll() is None:
            check(time.monotonic() < deadline, 'the clients did not get past the shares')
            time.sleep(0.05)
        kill[1].kill()
        open(spec + '.go', 'w').close()
    try:
        stdout, stderr = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    p.returncode = p.wait()
    p.stdout, p.stderr = stdout, stderr
    check(p.returncode == 0, 'the clients of a secure round failed:\n%s%s'
          % (p.stdout[-3000:], p.stderr[-3000:]))
    if kill_runs_rounds:
        with open(out + '.json') as f:
            return json.load(f)
    d = np.load(out)
    log('  clients of round seed %d: %s' % (seed, ', '.join(
        '%s %.2f s' % kv for kv in json.loads(str(d['passes'])).items()) +
        ' (one pass each stage; the stage deadline is %d s)' % TIMEOUT_S))
    # The shape of secagg100's "sent": (session, x, n, masked, words, index).
    return [(None, d['x'][k], int(d['n'][k]), None, d['xw'][k].astype('<u4').tobytes(), k)
            for k in range(len(d['n']))]


def models(c, cl, tok, v, hosts=None):
    """Version @v's safetensors bytes from every node of @hosts (once each has it)."""
    out = []
    for h in hosts or c.NODE_IP:
        out.append(c.wait_for(lambda h=h: _get(cl, h, tok, v), 3 * TIMEOUT_S + 10,
                              'version %d on %s' % (v, h)))
    return out


def _get(cl, h, tok, v):
    st, b = cl.call(h, 'GET', '/v1/jobs/sec/model?round=%d' % v, token=tok)
    return b if st == 200 else None


def check_round(c, cl, tok, sent, rnd, what, hosts=None):
    w, ref = s100.expected(sent)
    check(w == sum(t[2] for t in sent), '%s: the weight word is not the sum of n_u' % what)
    bufs = models(c, cl, tok, rnd + 1, hosts)
    check(all(b == bufs[0] for b in bufs), '%s: the nodes serve different bytes' % what)
    got = st_decode(bufs[0])[1]['w']
    bad = int(np.count_nonzero(got != ref))
    check(bad == 0, '%s: %d of %d values differ from float32(exact sum * scale - clip)'
          % (what, bad, DIM))
    qmax = (1 << SA['bits']) - 1
    q = [sa.quantise(t[1], SA['clip'], SA['bits']).astype(np.float64) for t in sent]
    mean = sum(t[2] * qi for t, qi in zip(sent, q)) / w * 2 * SA['clip'] / qmax - SA['clip']
    err = float(np.max(np.abs(got - mean)))
    check(err <= 1e-6, '%s: %g from the weighted quantised mean' % (what, err))
    st, b = cl.call((hosts or c.NODE_IP)[0], 'GET', '/v1/jobs/sec/rounds/%d' % rnd, token=tok)
    rec = json.loads(b or b'{}')
    # The controller's record (it has no weight field; the weight word is checked above).
    check(st == 200 and rec.get('updates') == len(sent) and rec.get('state') == 'done' and
          rec.get('duration_s', 0) >= 0.2,  # the secure round's, not the commit's (~1 ms)
          '%s: record %d %r: want %d inputs, done, the round\'s seconds' % (what, st, rec,
                                                                             len(sent)))
    return w, err, got


def single_node(sent):
    """The same inputs through `tributary up`: every client of @sent joins and stays."""
    with Server(arena_mb=64) as srv:
        spec = dict(SA)
        srv.create_job({'name': 'sec', 'clients_per_round': len(sent),
                        'client_auth': 'required', 'round_timeout_s': TIMEOUT_S,
                        'secagg': spec, 'tensors': [{'name': 'w', 'shape': [DIM],
                                                     'dtype': 'F32'}]})
        url = 'http://127.0.0.1:%d' % srv.port
        sess = []
        for i in range(len(sent)):
            st, obj, _ = srv.json('POST', '/v1/jobs/sec/clients', {'client': 's%03d' % i},
                                  token=srv.admin)
            check(st == 201, 'mint on the single node: %d %r' % (st, obj))
            sess.append(sa.SecAggSession(url, 'sec', obj['token'], poll_s=0.02))
        for s in sess:
            s.join()
        for s in sess:
            s.send_shares(timeout=30)
        for s, t in zip(sess, sent):
            s100.send_input(s, t[1], t[2])
        for s in sess:
            s.send_unmask(timeout=30)
        e_wait = __import__('e2e_common').wait_for
        e_wait(lambda: srv.status('sec')['model_round'] == 1, 3 * TIMEOUT_S, 'single node v1')
        stc, _, buf = srv.request('GET', '/v1/jobs/sec/model', token=srv.admin)
        check(stc == 200, 'single node GET model: %d' % stc)
        return st_decode(buf)[1]['w']


def status(cl, h, tok):
    st, b = cl.call(h, 'GET', '/v1/jobs/sec', token=tok)
    check(st == 200, 'GET /v1/jobs/sec on %s: %d %s' % (h, st, b[:200]))
    return json.loads(b)


def scenario():
    global TIMEOUT_S
    import cluster as c
    import netns_cluster
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(c.SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(c.SKIP)
    net = netns_cluster.Net(3)
    c.CTL_IP, c.NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-clsa-')
    os.chmod(tmp, 0o755)
    procs = []
    try:
        net.up()
        ctl, nodes = netns_cluster.start(net, BIN, tmp, node_args=['--no-huge'], arena_mb=64)
        procs += [ctl] + nodes
        cl = c.Client(net.ctl)
        c.wait_joined(cl)
        log('the controller and 3 nodes are up and joined')
        admin = netns_cluster.admin_token(tmp)
        urls = ['http://%s:%d' % (h, cl.port) for h in c.NODE_IP]
        cal = os.path.join(tmp, 'calibrate.json')
        in_ctl(net, '--calibrate', urls[1], cal)
        with open(cal) as f:
            TIMEOUT_S, pass_s = json.load(f)
        s100.TIMEOUT_S = TIMEOUT_S  # the single node's clients wait with it
        log('one pass of %d clients (one stage, one process) takes %.2f s here: stage '
            'deadline %d s' % (N, pass_s, TIMEOUT_S))
        spec = {'name': 'sec', 'clients_per_round': N, 'client_auth': 'required',
                'round_timeout_s': TIMEOUT_S, 'secagg': SA,
                'tensors': [{'name': 'w', 'shape': [DIM], 'dtype': 'F32'}]}
        st, b = cl.call(c.NODE_IP[1], 'POST', '/v1/jobs', json.dumps(spec).encode(),
                        {'Content-Type': 'application/json'}, admin)
        check(st == 201, 'create a secagg job on a cluster: %d %s' % (st, b[:300]))
        tok = json.loads(b)['token']
        c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/sec', token=tok)[0] == 200
                               for h in c.NODE_IP), 10, 'sec known on every node')
        # The node that runs the rounds: the one whose status names no other.
        sts = [status(cl, h, tok)['secagg'] for h in c.NODE_IP]
        here = [i for i, s in enumerate(sts) if 'rounds_run_on' not in s]
        check(len(here) == 1, 'not exactly one node runs the rounds: %r' % sts)
        coord = here[0]
        others = {s['rounds_run_on'] for i, s in enumerate(sts) if i != coord}
        check(others == {'n%d' % coord}, 'the others name %r, not n%d' % (others, coord))
        log('n%d runs the secure rounds; the other gateways pass the stages to it' % coord)
        mspec, mout = os.path.join(tmp, 'mint.json'), os.path.join(tmp, 'tokens.json')
        with open(mspec, 'w') as f:
            json.dump({'urls': urls, 'admin': admin}, f)
        in_ctl(net, '--mint', mspec, mout)
        with open(mout) as f:
            tokens = json.load(f)
        log('the job and %d client tokens (minted round-robin on the 3 gateways)' % N)
        # No plain update on any gateway; a stage's GET with no round is the round-running
        # node's 410, passed back as made there.
        for h in c.NODE_IP:
            st, b = cl.call(h, 'POST', '/v1/jobs/sec/updates', b'\0' * 8,
                            {'Content-Type': 'application/octet-stream'}, tokens[0])
            check(st == 409 and b'masked' in b, 'a plain update on %s: %d %s' % (h, st, b[:200]))
            st, b = cl.call(h, 'GET', '/v1/jobs/sec/secagg/keys', token=tokens[1])
            check(st == 410 and b'not in a secure round' in b,
                  'GET keys before any round on %s: %d %s' % (h, st, b[:200]))
        one = None
        for rnd, frac in ((0, 0.10), (1, 0.30)):
            what = 'round %d (%d%% dropouts per stage)' % (rnd, int(frac * 100))
            sent = run_round(net, tmp, urls, tokens, 1900 + rnd, frac)
            w, err, got = check_round(c, cl, tok, sent, rnd, what)
            if rnd == 0:
                log('%s: checked on every node; the same inputs on a single node next' % what)
                one = single_node(sent)
                check(np.array_equal(one.view(np.uint32), got.view(np.uint32)),
                      '%s: the cluster\'s model is not the single node\'s' % what)
            log('%s: %d of %d inputs, weight %d exact, every node serves the same version, '
                'bit-identical to the exact sum dequantised (%.1g from the quantised mean)%s'
                % (what, len(sent), N, w, err, '; equal to the single node\'s' if rnd == 0
                   else ''))
        # Below the threshold at the unmask stage: only t - 1 clients reveal.
        run_round(net, tmp, urls, tokens, 1902, 0.0, leave_unmask=SA['threshold'] - 1)
        fail = c.wait_for(lambda: status(cl, c.NODE_IP[coord], tok)['secagg']
                          .get('last_failure'), 3 * TIMEOUT_S + 5, 'round 2 to fail')
        check(fail['round'] == 2 and 'threshold' in fail['why'],
              'below the threshold: %r' % fail)
        for h in c.NODE_IP:
            check(status(cl, h, tok)['model_round'] == 2, 'a failed round made a version on %s'
                  % h)
        log('round 2 below the threshold: %s (no version on any node)' % fail['why'])
        sent = run_round(net, tmp, urls, tokens, 1903, 0.0)
        w, err, _ = check_round(c, cl, tok, sent, 2, 'the round after the failure')
        check('last_failure' not in status(cl, c.NODE_IP[coord], tok)['secagg'],
              'the failure is still reported after a round that worked')
        log('the round after the failure: %d inputs, weight %d, exact' % (len(sent), w))
        # A node other than the rounds' is lost (kill -9) after the shares: its clients are
        # dropouts at the masked stage, the others' round completes, exact.
        dead = (coord + 1) % 3
        sent = run_round(net, tmp, urls, tokens, 1904, 0.0, kill=(dead, nodes[dead]))
        check(len(sent) == N - len(range(dead, N, 3)), 'the lost node\'s clients sent inputs')
        alive = [h for i, h in enumerate(c.NODE_IP) if i != dead]
        w, err, _ = check_round(c, cl, tok, sent, 3, 'the round that lost n%d' % dead, alive)
        log('n%d killed (-9) after the shares: its %d clients dropped, the round of %d inputs '
            '(weight %d) exact on the other nodes' % (dead, N - len(sent), len(sent), w))
        # The node that runs the rounds is lost (kill -9) after the shares: the round is lost
        # (its keys were in its memory), the other gateway answers 503 naming it; back, a new
        # round works.
        # Every client now, the lost node's too, on the two gateways left (a client token is
        # the cluster's): all clients_per_round join, so the keys stage ends without a
        # deadline.
        gws = [coord, 3 - coord - dead]
        urls2 = [urls[i] for i in gws]
        toks2 = tokens
        got = run_round(net, tmp, urls2, toks2, 1905, 0.0, kill=(0, nodes[coord]),
                        kill_runs_rounds=True)
        check(got and all(st == 503 and ('n%d' % coord) in msg for st, msg in got),
              'the other gateway\'s answers with the rounds\' node lost: %r' % got[:3])
        check(status(cl, c.NODE_IP[gws[1]], tok)['model_round'] == 4,
              'a version came of the lost round')
        log('n%d killed (-9) after the shares: %d clients of the other gateway got 503 naming '
            'it (each after the node link\'s timeout); restarting it' % (coord, len(got)))
        args = nodes[coord].p.args[5:]
        nodes[coord] = netns_cluster.Proc('n%d-run2' % coord, net.nodes[coord], BIN, args, tmp)
        procs.append(nodes[coord])
        c.wait_for(lambda: c.metrics(cl, c.NODE_IP[coord]).get('tributary_cluster_joined') == 1
                   if cl.call(c.NODE_IP[coord], 'GET', '/healthz')[0] == 200 else False, 30,
                   'n%d to join again' % coord)
        log('n%d joined again' % coord)
        # Back, it resumes the round from its state log (rt_secagg_resume.c) at the masked
        # stage; that round's clients are gone (their driver was stopped), so it fails at its
        # masked deadline, saying so; then the next round works.
        check('secure round resumed at stage \'masked\'' in nodes[coord].log_text(),
              'n%d did not resume its secure round: see its log' % coord)
        lf = c.wait_for(lambda: (lambda sa: 'round_in_progress' not in sa and
                                 sa.get('last_failure'))(
                            status(cl, c.NODE_IP[coord], tok).get('secagg', {})),
                        3 * TIMEOUT_S + 5, 'the resumed round to end')
        check(lf['round'] == 4 and 'masked: 0 clients' in lf['why'], 'the resumed round: %r' % lf)
        sent = run_round(net, tmp, urls2, toks2, 1906, 0.0)
        w, err, _ = check_round(c, cl, tok, sent, 4, 'the round after n%d came back' % coord,
                                [c.NODE_IP[i] for i in gws])
        log('n%d (the rounds\' node) killed (-9) after the shares: %d clients of the other '
            'gateway got 503 naming it, no version; restarted, the next round of %d inputs '
            '(weight %d) exact' % (coord, len(got), len(sent), w))
        t_stop = time.monotonic()
        for p in nodes + [ctl]:
            if not p.killed:
                c.stop(p)
        log('stopped in %.1f s' % (time.monotonic() - t_stop))
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
    if len(sys.argv) == 4 and sys.argv[1] in ('--clients', '--calibrate', '--mint'):
        {'--clients': drive, '--calibrate': calibrate, '--mint': mint}[sys.argv[1]](
            sys.argv[2], sys.argv[3])
    else:
        main(scenario)
