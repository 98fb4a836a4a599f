# SPDX-License-Identifier: MIT
# A secure round survives kill -9 of `tributary up` (issue 19, "a 202 is a promise"): the gateway
# is killed after each stage (advertise, shares, masked input, unmask: once with reveals missing,
# once right after the last reveal, while the shards expand the masks) and started again on the
# same data dir and arena; the round resumes at the same stage, clients that retry a stage with
# the same request get the same answer (keys, shares, reveals: another body 409; a masked input
# resent is answered as the first whatever its body, never compared: the first stands), and the model is
# the weighted mean of the survivors' quantised inputs exactly (one client dropped at the masked
# input, so its pairwise masks are rebuilt too). Then the failure path: the arena file removed
# between the kill and the start (--durability memory keeps the inputs there only), the round
# fails with a status naming the lost inputs, its clients get 410, and the next round works.
# Then clients as they run (run_secagg_round on threads) across a kill -9 at the masked stage: the
# client library resends what the kill cut, the round is exact. Last, --durability disk: the
# same loss of the arena file, the inputs come back from the log.
import json
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'clients',
                                'python'))
import tributary_secagg as sa  # noqa: E402

N = 8
DIM = 4096
SA = {'threshold': 3, 'neighbours': 4, 'clip': 1.0, 'bits': 16}
DL = 4  # each stage's deadline (s): 8 clients driven one after the other take well under it


def post(s, stage, body, ctype='application/json'):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return sa._http(s.url, 'POST', s.base + '/' + stage, s.token, data, ctype)


def ok(st, obj, what):
    check(st == 200, '%s: %d %r' % (what, st, obj))
    return obj


def kill_restart(srv, why, lose_arena=False):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    if lose_arena:
        e.remove_arena_files(srv.arena_files())
    t0 = time.monotonic()
    srv.start()
    e.log('  kill -9 %s; restarted in %.2f s%s' % (why, time.monotonic() - t0,
                                                   ' (arena file removed)' if lose_arena else ''))


def in_progress(srv):
    return srv.status('sec')['secagg'].get('round_in_progress')


def setup(srv):
    srv.create_job({'name': 'sec', 'clients_per_round': N, 'client_auth': 'required',
                    'round_timeout_s': DL, 'tensors': [{'name': 'w', 'shape': [DIM],
                                                       'dtype': 'F32'}], 'secagg': SA})
    tokens = []
    for i in range(N):
        st, obj, _ = srv.json('POST', '/v1/jobs/sec/clients', {'client': 'c%d' % i},
                              token=srv.admin)
        check(st == 201, 'mint: %d %r' % (st, obj))
        tokens.append(obj['token'])
    return tokens


class Client:
    """One client, its requests' bodies kept to send them again (a retry)."""

    def __init__(self, srv, token):
        self.s = sa.SecAggSession('http://127.0.0.1:%d' % srv.port, 'sec', token)
        self.s.url = self.s.url  # the port may change at a restart: set again by rebind()
        self.body = {}

    def rebind(self, srv):
        self.s.url = 'http://127.0.0.1:%d' % srv.port

    def join(self):
        c_sk, s_sk = os.urandom(32), os.urandom(32)
        self.body['keys'] = {'c_pk': sa.public_key(c_sk).hex(), 's_pk': sa.public_key(s_sk).hex()}
        info = ok(*post(self.s, 'keys', self.body['keys']), 'keys')
        self.s.info = info
        self.s.client = sa.SecAggClient(info['index'], info['round'], info['threshold'])
        self.s.client.c_sk, self.s.client.s_sk = c_sk, s_sk
        return info

    def shares(self):
        obj = self.s._wait('keys', 3 * DL)
        self.s.keys = {n['index']: (bytes.fromhex(n['c_pk']), bytes.fromhex(n['s_pk']))
                       for n in obj['neighbours']}
        cts = self.s.client.share(self.s.keys)
        self.body['shares'] = {'shares': [{'to': v, 'ct': ct.hex()} for v, ct in cts.items()]}
        return ok(*post(self.s, 'shares', self.body['shares']), 'shares')

    def input(self, x, n):
        obj = self.s._wait('shares', 3 * DL)
        inbox = {s['from']: bytes.fromhex(s['ct']) for s in obj['shares']}
        q = sa.quantise(x, SA['clip'], SA['bits']).astype(np.uint64)
        words = np.concatenate([q * n, [n]]).astype(np.uint32)
        self.body['input'] = self.s.client.masked(words, inbox, self.s.keys).astype('<u4').tobytes()
        return ok(*post(self.s, 'input', self.body['input'], 'application/octet-stream'),
                  'input')

    def unmask(self):
        obj = self.s._wait('unmask', 3 * DL)
        kinds = {'self': sa.REVEAL_SELF, 'secret': sa.REVEAL_SECRET}
        shares = self.s.client.reveal([(r['index'], kinds[r['kind']]) for r in obj['reveal']])
        self.body['unmask'] = {'reveals': [{'index': v, 'share': s.hex()}
                                           for v, s in shares.items()]}
        return ok(*post(self.s, 'unmask', self.body['unmask']), 'unmask')

    def retry(self, stage, want):
        ctype = 'application/octet-stream' if stage == 'input' else 'application/json'
        got = ok(*post(self.s, stage, self.body[stage], ctype), 'a retry of %s' % stage)
        check(got == want, 'a retry of %s: %r, the first answer was %r' % (stage, got, want))


def expected(xs, ws):
    q = [sa.quantise(x, SA['clip'], SA['bits']).astype(np.float64) for x in xs]
    qmax = (1 << SA['bits']) - 1
    return (sum(w * qi for w, qi in zip(ws, q)) / sum(ws)) * 2 * SA['clip'] / qmax - SA['clip']


def model_of(srv):
    st, _, buf = srv.request('GET', '/v1/jobs/sec/model', token=srv.admin)
    check(st == 200, 'GET model: %d' % st)
    return e.st_decode(buf)[1]['w']


def wait_model(srv, version):
    return e.wait_for(lambda: srv.status('sec')['model_round'] >= version, 6 * DL,
                      'model v%d' % version)


def round_with_kills(srv, tokens, rng):
    """Round 0: kill -9 after every stage; client N-1 sends no masked input."""
    t0 = time.monotonic()
    cl = [Client(srv, t) for t in tokens]
    first = {}
    for c in cl:
        first[c] = c.join()
    kill_restart(srv, 'after advertise (all %d keys in: the share stage)' % N)
    p = in_progress(srv)
    check(p and p['stage'] == 'share' and p['clients'] == N and p['round'] == 0,
          'after advertise: %r' % p)
    for c in cl:
        c.rebind(srv)
    cl[0].retry('keys', first[cl[0]])
    for c in cl:
        first[c] = c.shares()
    kill_restart(srv, 'after shares (the masked stage)')
    for c in cl:
        c.rebind(srv)
    check(in_progress(srv)['stage'] == 'masked', 'after shares: %r' % in_progress(srv))
    cl[1].retry('shares', first[cl[1]])
    xs, ws = [], []
    for c in cl[:-1]:
        x = rng.uniform(-1.2, 1.2, DIM).astype(np.float32)
        n = int(rng.integers(1, 50))
        first[c] = c.input(x, n)
        xs.append(x)
        ws.append(n)
    kill_restart(srv, 'after %d of %d masked inputs (the masked stage in progress)' % (N - 1, N))
    for c in cl:
        c.rebind(srv)
    p = in_progress(srv)
    check(p and p['stage'] == 'masked', 'after the inputs: %r' % p)
    cl[2].retry('input', first[cl[2]])
    other = bytearray(cl[2].body['input'])
    other[0] ^= 1
    # A masked input's resend is answered by its (client, stage) alone, the body dropped (as a
    # plain update's with its Idempotency-Key): the same 200; the first stands (the exact
    # model below would be off by other's words otherwise).
    st, obj = post(cl[2].s, 'input', bytes(other), 'application/octet-stream')
    check(st == 200 and obj == first[cl[2]],
          'a different second input: %d %r (the first answer was %r)' % (st, obj, first[cl[2]]))
    st, obj = post(cl[2].s, 'input', bytes(other[:-4]), 'application/octet-stream')
    check(st == 400 and 'bytes' in obj.get('error', ''),
          'a resent input of the wrong length: %d %r' % (st, obj))
    # The masked stage ends at its deadline (client N-1 sent nothing): a new one from the start.
    for c in cl[:4]:
        first[c] = c.unmask()
    kill_restart(srv, 'after 4 of %d reveals (the unmask stage in progress)' % (N - 1))
    for c in cl:
        c.rebind(srv)
    check(in_progress(srv)['stage'] == 'unmask', 'in unmask: %r' % in_progress(srv))
    cl[0].retry('unmask', first[cl[0]])
    for c in cl[4:-1]:
        c.unmask()
    # The unmask stage is complete: its end started the shards. Killed at once, mid-expansion
    # (or just after the model: either way the model must be the exact one).
    kill_restart(srv, 'right after the last reveal (the shards expanding the masks)')
    wait_model(srv, 1)
    got = model_of(srv)
    err = float(np.max(np.abs(got - expected(xs, ws))))
    check(err <= 1e-6, 'round 0 after 5 kills: not the survivors\' quantised mean (max error '
          '%g)' % err)
    st, rec, _ = srv.json('GET', '/v1/jobs/sec/rounds/0', token=srv.admin)
    check(st == 200 and rec.get('updates') == N - 1, 'round 0 record: %d %r' % (st, rec))
    resumed = [ln for p in srv.logs for ln in srv.log_text(p).splitlines()
               if 'secure round resumed' in ln]
    check(len(resumed) >= 4, 'the logs say the round resumed %d times' % len(resumed))
    # The last kill races the shards (a few ms of work): mid-unmask, the round's unmasking is
    # redone after the start; after the model, the start finds no round to resume. Both exact.
    last = srv.log_text(srv.logs[-1])
    where = ('mid-unmask: the unmasking redone after the restart'
             if 'which had ended (the unmasking is redone)' in last else
             'after the model was stored (nothing to resume)')
    e.log('secagg restart: round 0 killed 5 times (%s); the last kill landed %s; model of %d '
          'inputs exact (max error %.2g) in %.1f s'
          % ('; '.join(ln.split('resumed ')[1].split(' (')[0] for ln in resumed), where,
             N - 1, err, time.monotonic() - t0))


def lost_arena(srv, tokens, rng, rnd):
    """The inputs were in the arena only: removed, the round fails saying so; the next works."""
    cl = [Client(srv, t) for t in tokens]
    for c in cl:
        c.join()
    for c in cl:
        c.shares()
    for c in cl[:-1]:
        c.input(rng.uniform(-1, 1, DIM).astype(np.float32), 3)
    kill_restart(srv, 'after the masked inputs', lose_arena=True)
    st = srv.status('sec')['secagg']
    fail = st.get('last_failure') or {}
    check('round_in_progress' not in st and fail.get('round') == rnd and
          'could not be resumed' in fail.get('why', '') and
          'given back by the arena' in fail.get('why', ''), 'lost inputs: %r' % st)
    cl[0].rebind(srv)
    st, obj = sa._http(cl[0].s.url, 'GET', cl[0].s.base + '/shares', cl[0].s.token)
    check(st == 410 and 'could not be resumed' in json.dumps(obj), 'after the loss: %d %r'
          % (st, obj))
    e.log('secagg restart, arena file lost: round %d failed: %s' % (rnd, fail['why']))
    full_round(srv, tokens, rng, rnd, 'the round after the failure')


def full_round(srv, tokens, rng, rnd, what, kill_at_unmask=False, lose_arena=False):
    cl = [Client(srv, t) for t in tokens]
    xs = [rng.uniform(-1, 1, DIM).astype(np.float32) for _ in cl]
    ws = [int(w) for w in rng.integers(1, 50, N)]
    for c in cl:
        check(c.join()['round'] == rnd, 'round number')
    for c in cl:
        c.shares()
    for c, x, w in zip(cl, xs, ws):
        c.input(x, w)
    if kill_at_unmask:
        kill_restart(srv, 'after all %d masked inputs (the unmask stage)' % N,
                     lose_arena=lose_arena)
        for c in cl:
            c.rebind(srv)
    for c in cl:
        c.unmask()
    wait_model(srv, rnd + 1)
    err = float(np.max(np.abs(model_of(srv) - expected(xs, ws))))
    check(err <= 1e-6, '%s: max error %g' % (what, err))
    e.log('secagg restart: %s (round %d): exact (max error %.2g)' % (what, rnd, err))


def real_clients(srv, tokens, rng, rnd):
    """Clients as they run (run_secagg_round, one thread each), the gateway killed -9 under
    them at the masked stage and started again on the same port: each client's lost request is
    sent again by the client library (SecAggSession.reconnect_s) and answered as the first."""
    import threading
    xs = [rng.uniform(-1, 1, DIM).astype(np.float32) for _ in tokens]
    ws = [int(w) for w in rng.integers(1, 50, N)]
    url = 'http://127.0.0.1:%d' % srv.port
    done, errs = [], []

    def one(i):
        try:
            done.append(sa.run_secagg_round(url, 'sec', tokens[i], xs[i], ws[i],
                                            timeout=6 * DL))
        except Exception as ex:  # noqa: BLE001 (reported below)
            errs.append('client %d: %s' % (i, ex))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    e.wait_for(lambda: (in_progress(srv) or {}).get('stage') == 'masked', 6 * DL,
               'the masked stage')
    srv.extra = ['--listen', '127.0.0.1:%d' % srv.port]  # the last --listen wins
    kill_restart(srv, 'under %d running clients at the masked stage' % N)
    srv.extra = []
    for t in threads:
        t.join(12 * DL)
    check(not errs and done == [rnd] * N, 'clients across the restart: %r %r' % (errs, done))
    wait_model(srv, rnd + 1)
    err = float(np.max(np.abs(model_of(srv) - expected(xs, ws))))
    check(err <= 1e-6, 'round %d with running clients: max error %g' % (rnd, err))
    e.log('secagg restart: %d running clients carried on across a kill -9 (their lost requests '
          'resent by the client library): round %d exact (max error %.2g)' % (N, rnd, err))


def run():
    rng = np.random.default_rng(1919)
    t0 = time.monotonic()
    with e.Server() as srv:
        tokens = setup(srv)
        round_with_kills(srv, tokens, rng)
        lost_arena(srv, tokens, rng, 1)
        real_clients(srv, tokens, rng, 2)
        srv.check_log()
    with e.Server(extra=['--durability', 'disk']) as srv:
        tokens = setup(srv)
        full_round(srv, tokens, rng, 0, '--durability disk, arena file lost at the unmask '
                   'stage, the inputs replayed from the log', kill_at_unmask=True,
                   lose_arena=True)
        srv.check_log()
    e.log('secagg restart: %.1f s in all' % (time.monotonic() - t0))


if __name__ == '__main__':
    e.main(run)
