# SPDX-License-Identifier: MIT
# Secure aggregation (issue 19): the job field "secagg": 400s naming the field for every bad value,
# only with fedavg and client_auth required; stored with the job (shown in GET /v1/jobs/{job},
# kept across a restart); a secagg job refuses plain updates (409: nothing in the clear).
# The HTTP stages with 24 clients and dropouts after advertise, after shares and after the masked
# input: the model is the weighted mean of the survivors' quantised updates; below the threshold
# the round fails (status says why, no model) and the next round works; no client's quantised
# vector is in the server's log or data dir.
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'clients',
                                'python'))
import tributary_secagg as sa  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [64], 'dtype': 'F32'}]
GOOD = {'threshold': 3, 'neighbours': 4, 'clip': 1.0, 'bits': 16}


def spec(name, sa, **kw):
    d = {'name': name, 'clients_per_round': 6, 'tensors': SCHEMA, 'client_auth': 'required',
         'round_timeout_s': 2, 'secagg': sa}
    d.update(kw)
    return d


def bad_values(srv):
    cases = [
        ('not an object', 5, 'secagg'),
        ('unknown member', dict(GOOD, salt=1), 'secagg.salt'),
        ('threshold missing', {k: v for k, v in GOOD.items() if k != 'threshold'},
         'secagg.threshold'),
        ('threshold 0', dict(GOOD, threshold=0), 'secagg.threshold'),
        ('threshold > neighbours', dict(GOOD, threshold=5), 'secagg.threshold'),
        ('threshold a string', dict(GOOD, threshold='3'), 'secagg.threshold'),
        ('neighbours odd', dict(GOOD, neighbours=3, threshold=2), 'secagg.neighbours'),
        ('neighbours too many', dict(GOOD, neighbours=256), 'secagg.neighbours'),
        ('neighbours negative', dict(GOOD, neighbours=-2), 'secagg.neighbours'),
        ('bits 0', dict(GOOD, bits=0), 'secagg.bits'),
        ('bits 25', dict(GOOD, bits=25), 'secagg.bits'),
        ('clip 0', dict(GOOD, clip=0), 'secagg.clip'),
        ('clip negative', dict(GOOD, clip=-1.5), 'secagg.clip'),
        ('clip a string', dict(GOOD, clip='1'), 'secagg.clip'),
        ('max_samples 0', dict(GOOD, max_samples=0), 'secagg.max_samples'),
        ('max_samples a string', dict(GOOD, max_samples='9'), 'secagg.max_samples'),
        # 6 clients x 10923 x (2^16 - 1) >= 2^32: the sums could wrap.
        ('max_samples past the bound', dict(GOOD, max_samples=10923),
         'allowed 1 to 10922'),
    ]
    for what, sa, field in cases:
        st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', sa), token=srv.admin)
        check(st == 400 and field in obj.get('error', ''),
              '%s: want 400 naming %s, got %d %r' % (what, field, st, obj))
    # Threshold above the round's clients, bits whose sum overflows 32 bits.
    st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', dict(GOOD, threshold=4, neighbours=4),
                                                   clients_per_round=3), token=srv.admin)
    check(st == 400 and 'secagg.threshold' in obj.get('error', ''), 'threshold > cpr: %r' % obj)
    st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', dict(GOOD, bits=24),
                                                   clients_per_round=300), token=srv.admin)
    check(st == 400 and 'secagg.bits' in obj.get('error', ''), 'bits overflow: %r' % obj)
    # Only fedavg with no options, only with client credentials.
    for extra in ({'algorithm': 'fedadam'}, {'algorithm': 'median'}, {'clip_norm': 1.0}):
        st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', GOOD, **extra), token=srv.admin)
        check(st == 400 and 'secagg' in obj.get('error', '') and 'fedavg' in obj['error'],
              '%r with secagg: want 400 naming fedavg, got %d %r' % (extra, st, obj))
    st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', GOOD, client_auth='optional'),
                          token=srv.admin)
    check(st == 400 and 'client_auth' in obj.get('error', ''), 'optional auth: %r' % obj)
    d = spec('bad', GOOD)
    del d['round_timeout_s']
    st, obj, _ = srv.json('POST', '/v1/jobs', d, token=srv.admin)
    check(st == 400 and 'round_timeout_s' in obj.get('error', ''), 'no deadline: %r' % obj)
    st, obj, _ = srv.json('GET', '/v1/jobs/bad', token=srv.admin)
    check(st == 404, 'a refused job exists: %d %r' % (st, obj))
    e.log('secagg: %d bad definitions refused, each naming its field' % (len(cases) + 7))


def stored(srv):
    srv.create_job(spec('sa', GOOD))
    # max_samples omitted: the largest the sums allow, (2^32 - 1) // (6 x (2^16 - 1)).
    want = dict(GOOD, clip=1.0, max_samples=10922)
    check(srv.status('sa').get('secagg') == want, 'status: %r' % srv.status('sa').get('secagg'))
    srv.create_job({'name': 'plain', 'clients_per_round': 2, 'tensors': SCHEMA})
    check('secagg' not in srv.status('plain'), 'a plain job shows secagg')
    srv.restart()
    check(srv.status('sa').get('secagg') == want, 'after restart: %r' % srv.status('sa'))
    check('secagg' not in srv.status('plain'), 'a plain job shows secagg after restart')
    # Plain updates to a secure job: refused, with the job token or a client's.
    st, obj, _ = srv.json('POST', '/v1/jobs/sa/clients', {'client': 'c0'}, token=srv.admin)
    check(st == 201, 'mint: %d %r' % (st, obj))
    body = e.raw_body(SCHEMA, e.zeros_model(SCHEMA))
    st, _, raw = srv.request('POST', '/v1/jobs/sa/updates', body,
                             headers={'Content-Type': 'application/octet-stream'},
                             token=obj['token'])
    check(st == 409 and b'secure aggregation' in raw, 'plain update: %d %r' % (st, raw[:200]))
    check(srv.status('sa')['received'] == 0, 'a plain update was kept')
    e.log('secagg: stored, shown, kept across a restart; plain updates refused (409)')


N = 24
DIM = 64
# k - 6 dropouts >= t: every survivor keeps t neighbours that reveal.
SA = {'threshold': 4, 'neighbours': 10, 'clip': 1.0, 'bits': 16}


def stage_deadline_s(srv):
    """round_timeout_s for rounds(): each stage's deadline must outlast one pass of this
    process driving the stage's clients one after the other (dropped clients are only dropped
    by a deadline, so the live ones must all be in before it). That pass is timed here, under
    whatever load the machine has now: N times one client's share encryption and masking
    against its neighbours (key agreement, AEAD, the PRG masks) and the two requests of a
    stage (the poll and the post). The deadline is 4 s or 10 passes, whichever is longer: 4 s
    on an idle machine (a pass is ~0.1 s), longer only when the machine is that much slower,
    as under a loaded CI run."""
    peers = [sa.SecAggClient(v, 0, SA['threshold']) for v in range(SA['neighbours'] + 1)]
    keys = {v: c.advertise() for v, c in enumerate(peers)}
    nbrs = {v: k for v, k in keys.items() if v}
    inbox = {v: peers[v].share({u: k for u, k in keys.items() if u != v})[0] for v in nbrs}
    x = np.arange(DIM + 1, dtype=np.uint32)
    t0 = time.monotonic()
    for _ in range(N):
        peers[0].share(nbrs)
        peers[0].masked(x, inbox, keys)
        for _ in range(2):
            srv.request('GET', '/v1/jobs', token=srv.admin)
    pass_s = time.monotonic() - t0
    return max(4, int(np.ceil(10 * pass_s))), pass_s


def model_of(srv, job):
    st, _, buf = srv.request('GET', '/v1/jobs/%s/model' % job, token=srv.admin)
    check(st == 200, 'GET model: %d' % st)
    return e.st_decode(buf)[1]['w']


def wait_stage_end(srv, job, what, dl):
    """Polls the status (which ends stages past their deadline) until @what holds: within
    a few deadlines @dl."""
    return e.wait_for(lambda: what(srv.status(job)), 4 * dl, 'secagg status')


def secure_round(srv, url, tokens, rng, drop_adv, drop_share, drop_input, rnd, dl):
    """All of @tokens join; some leave after each stage. Returns (survivors' x, weights).
    @dl: the job's stage deadline; a client waits up to 3 of them for the previous stage."""
    sess = [sa.SecAggSession(url, 'sec', t) for t in tokens]
    for s in sess:
        s.join()
    live = [s for i, s in enumerate(sess) if i not in drop_adv]
    for s in live:
        s.send_shares(timeout=3 * dl)
    live = [s for s in live if sess.index(s) not in drop_share]
    ups, ws, xwords = [], [], []
    if drop_adv:
        live[0]._wait('shares', 3 * dl)  # the share stage is over
        gone = sess[min(drop_adv)]
        try:
            gone._call('shares', 'GET', '/shares')
            check(False, 'a client that sent no shares got an inbox')
        except sa.SecAggError as ex:
            check(ex.status == 410 and 'dropped' in str(ex), 'dropped client: %s' % ex)
    t_in = time.monotonic()
    for s in live:
        x = rng.uniform(-1.2, 1.2, DIM).astype(np.float32)  # some values clipped
        n = int(rng.integers(1, 50))
        s.send_input(x, n, timeout=3 * dl)
        ups.append(x)
        ws.append(n)
        xwords.append((sa.quantise(x, SA['clip'], SA['bits']).astype(np.uint64) * n)
                      .astype('<u4').tobytes())
    e.log('  round %d: the masked inputs of %d clients sent one after the other in %.2f s '
          '(the stage deadline is %d s)' % (rnd, len(live), time.monotonic() - t_in, dl))
    late = [s for i, s in enumerate(sess) if i in drop_share]
    for s in live:
        if sess.index(s) in drop_input:
            continue
        s.send_unmask(timeout=3 * dl)
        if late:
            # The masked stage is over (this client was asked to unmask): an input sent now,
            # by a client that let that stage's deadline pass, is refused saying so.
            try:
                late[0]._call('input', 'POST', '/input', bytes(4 * (DIM + 1)),
                              'application/octet-stream')
                check(False, 'a masked input after the stage ended was accepted')
            except sa.SecAggError as ex:
                check(ex.status == 409 and "round is at 'unmask'" in str(ex),
                      'a late masked input: %s' % ex)
            late = None
    st = wait_stage_end(srv, 'sec', lambda o: o['model_round'] == rnd + 1 and o, dl)
    check(st['model_round'] == rnd + 1, 'round %d: no model: %r' % (rnd, st))
    return ups, ws, xwords


def rounds(srv):
    rng = np.random.default_rng(19)
    dl, pass_s = stage_deadline_s(srv)
    e.log('secagg: one sequential pass of %d clients takes %.2f s here: stage deadline %d s'
          % (N, pass_s, dl))
    srv.create_job({'name': 'sec', 'clients_per_round': N, 'client_auth': 'required',
                    'round_timeout_s': dl, 'tensors': [{'name': 'w', 'shape': [DIM],
                                                       'dtype': 'F32'}], 'secagg': SA})
    url = 'http://127.0.0.1:%d' % srv.port
    tokens = []
    for i in range(N):
        st, obj, _ = srv.json('POST', '/v1/jobs/sec/clients', {'client': 'c%02d' % i},
                              token=srv.admin)
        check(st == 201, 'mint: %d %r' % (st, obj))
        tokens.append(obj['token'])
    t0 = time.monotonic()
    ups, ws, xwords = secure_round(srv, url, tokens, rng, {3, 11}, {5, 17}, {8, 20}, 0, dl)
    q = [sa.quantise(x, SA['clip'], SA['bits']).astype(np.float64) for x in ups]
    qmax = (1 << SA['bits']) - 1
    ref = (sum(w * qi for w, qi in zip(ws, q)) / sum(ws)) * 2 * SA['clip'] / qmax - SA['clip']
    got = model_of(srv, 'sec')
    err = float(np.max(np.abs(got - ref)))
    check(err <= 1e-6, 'round 0: the model is not the survivors\' weighted quantised mean '
          '(max error %g)' % err)
    st, rec, _ = srv.json('GET', '/v1/jobs/sec/rounds/0', token=srv.admin)
    check(st == 200 and rec.get('updates') == len(ups), 'round 0 record: %d %r' % (st, rec))
    plain = sum(w * np.clip(x, -1, 1) for w, x in zip(ws, ups)) / sum(ws)
    check(float(np.max(np.abs(got - plain))) <= 2 * SA['clip'] / qmax,
          'round 0: further than a quantisation step from the clipped mean')
    e.log('secagg round 0: %d of %d clients folded (2 dropped after advertise, 2 after '
          'shares, 2 after input), max error %.2g against the quantised mean, %.1f s'
          % (len(ups), N, err, time.monotonic() - t0))
    # Below the threshold: 3 clients join, the round fails at the advertise deadline.
    few = [sa.SecAggSession(url, 'sec', t) for t in tokens[:3]]
    for s in few:
        s.join()
    st = wait_stage_end(srv, 'sec', lambda o: o['secagg'].get('last_failure') and o, dl)
    check(st['model_round'] == 1 and st['secagg']['last_failure']['round'] == 1 and
          'round_in_progress' not in st['secagg'], 'below the threshold: %r' % st['secagg'])
    try:
        few[0].send_shares(timeout=dl)
        check(False, 'a client of a failed round could send shares')
    except sa.SecAggError as ex:
        check(ex.status == 410 and 'failed' in str(ex), 'after the failure: %s' % ex)
    e.log('secagg below the threshold: %s' % st['secagg']['last_failure']['why'])
    # The next round works, with nobody dropping: each client on its own thread through
    # run_secagg_round, as a real client would.
    ups = [rng.uniform(-1, 1, DIM).astype(np.float32) for _ in range(N)]
    ws = [int(w) for w in rng.integers(1, 50, N)]
    done = []

    def one(i):
        done.append(sa.run_secagg_round(url, 'sec', tokens[i], ups[i], ws[i],
                                         timeout=8 * dl))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(16 * dl)
    check(done == [1] * N, 'run_secagg_round: %d of %d clients finished round 1: %r'
          % (len(done), N, done))
    wait_stage_end(srv, 'sec', lambda o: o['model_round'] == 2, dl)
    q = [sa.quantise(x, SA['clip'], SA['bits']).astype(np.float64) for x in ups]
    ref = (sum(w * qi for w, qi in zip(ws, q)) / sum(ws)) * 2 * SA['clip'] / qmax - SA['clip']
    err = float(np.max(np.abs(model_of(srv, 'sec') - ref)))
    check(err <= 1e-6 and len(ups) == N, 'round 1 after a failure: max error %g' % err)
    # Nothing of an individual quantised update on disk or in the log.
    for root, _, files in os.walk(srv.data_dir):
        for f in files:
            path = os.path.join(root, f)
            try:
                data = open(path, 'rb').read()
            except OSError:
                continue
            for xw in xwords:
                check(xw[:32] not in data, '%s holds a client\'s quantised update' % path)
    e.log('secagg round 1 after the failure: %d clients, max error %.2g; no client\'s '
          'quantised vector in %s (log included)' % (len(ups), err, srv.data_dir))
    lying_client(srv, url, tokens, rng, dl)


def lying_client(srv, url, tokens, rng, dl):
    """n_u is masked: the server cannot refuse one that breaks max_samples, and the client
    library does not send one. A client that lies anyway (its own words, masked) makes a sum
    outside what honest inputs make: the round fails naming it and publishes nothing."""
    sess = [sa.SecAggSession(url, 'sec', t) for t in tokens]
    for s in sess:
        s.join()
    most = sess[0].info['max_samples']
    check(most == (2 ** 32 - 1) // (N * ((1 << SA['bits']) - 1)),
          'the keys answer gives max_samples %r' % most)
    for s in sess:
        s.send_shares(timeout=3 * dl)
    try:
        sess[1].send_input(np.zeros(DIM, np.float32), most + 1, timeout=3 * dl)
        check(False, 'the client library sent samples above max_samples')
    except ValueError as ex:
        check('max_samples = %d' % most in str(ex), 'the refusal: %s' % ex)
    liar = sess[0]
    obj = liar._wait('shares', 3 * dl)
    inbox = {m['from']: bytes.fromhex(m['ct']) for m in obj['shares']}
    words = np.concatenate([np.zeros(DIM, np.uint32), [3000000000]]).astype(np.uint32)
    liar._call('input', 'POST', '/input',
               liar.client.masked(words, inbox, liar.keys).astype('<u4').tobytes(),
               'application/octet-stream')
    for s in sess[1:]:
        s.send_input(rng.uniform(-1, 1, DIM).astype(np.float32), 1, timeout=3 * dl)
    for s in sess:
        s.send_unmask(timeout=3 * dl)
    st = wait_stage_end(srv, 'sec', lambda o: o['secagg'].get('last_failure') and o, dl)
    fail = st['secagg']['last_failure']
    check(fail['round'] == 2 and 'unmasked weight' in fail['why'] and st['model_round'] == 2,
          'a lying client\'s round: %r' % st['secagg'])
    e.log('secagg round 2 with a client whose masked n_u broke max_samples (%d): %s'
          % (most, fail['why']))


def run():
    with e.Server() as srv:
        bad_values(srv)
        stored(srv)
        rounds(srv)


if __name__ == '__main__':
    e.main(run)
