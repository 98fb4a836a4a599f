# SPDX-License-Identifier: MIT
# Secure aggregation against hostile clients (issue 19): at every stage, malformed bodies (not
# JSON, deep nesting, duplicate keys, unknown fields, wrong types, hex of the wrong length, lists
# too long, indexes out of range) and well-formed lies (a share to itself, to a non-neighbour,
# twice to one, a short list; reveals not asked, at another point, twice for one client) each get
# a 400 naming the field, its value and what is allowed, and change nothing: the same clients'
# honest messages are then taken and the round's model is the exact quantised mean. Stages sent
# early get 409 naming the stage; a second masked input gets the first's 200 and is dropped
# (the first stands); a masked input sent slowly on many connections at once hits
# the per-client cap of bodies in flight (503), and is taken once they are gone. A crafted share
# that moves a survivor's self-mask seed to another valid-looking one (Lagrange accepts it) fails
# the round naming both clients, instead of giving a wrong model. A job whose round state would
# be gigabytes is refused; a job deleted mid-round frees it.
import json
import os
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
DIM = 16
SA = {'threshold': 3, 'neighbours': 6, 'clip': 1.0, 'bits': 16}
CT_HEX = 2 * sa.CT_BYTES


class Api:
    def __init__(self, srv, job):
        self.srv, self.job = srv, job

    def post(self, token, stage, body, ctype='application/json'):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        st, _, raw = self.srv.request('POST', '/v1/jobs/%s/secagg/%s' % (self.job, stage), body,
                                      {'Content-Type': ctype}, token)
        return st, e.parse_json(raw) or {}

    def refused(self, token, stage, body, status, *words):
        st, obj = self.post(token, stage, body)
        err = obj.get('error', '')
        check(st == status and all(w in err for w in words),
              '%s %r: want %d naming %r, got %d %r' % (stage, body if len(repr(body)) < 300
                                                      else repr(body)[:300], status, words,
                                                      st, obj))
        return err


def admission(srv):
    st, obj, _ = srv.json('POST', '/v1/jobs', {
        'name': 'huge', 'clients_per_round': 100000, 'client_auth': 'required',
        'round_timeout_s': 5, 'tensors': [{'name': 'w', 'shape': [DIM], 'dtype': 'F32'}],
        'secagg': dict(SA, neighbours=254, bits=8)}, token=srv.admin)
    check(st == 400 and 'GiB of round state' in obj.get('error', ''),
          '100000 clients x 254 neighbours: %d %r' % (st, obj))
    e.log('secagg_hostile: %s' % obj['error'])


def make_job(srv, name, n=N, timeout_s=8):
    srv.create_job({'name': name, 'clients_per_round': n, 'client_auth': 'required',
                    'round_timeout_s': timeout_s,
                    'tensors': [{'name': 'w', 'shape': [DIM], 'dtype': 'F32'}], 'secagg': SA})
    toks = []
    for i in range(n):
        st, obj, _ = srv.json('POST', '/v1/jobs/%s/clients' % name, {'client': 'h%02d' % i},
                              token=srv.admin)
        check(st == 201, 'mint: %d %r' % (st, obj))
        toks.append(obj['token'])
    return toks


def hostile_keys(api, tok):
    pk = 'ab' * 32
    n = 0
    for body, words in [
            (b'{', ('body is not JSON',)),
            (b'[' * 4000, ('body is not JSON', 'depth')),
            (b'{"c_pk": "%s", "c_pk": "%s", "s_pk": "%s"}' % ((pk.encode(),) * 3),
             ('duplicate',)),
            (b'["c_pk"]', ('not a JSON object',)),
            ({'c_pk': pk, 's_pk': pk, 'kind': 1}, ('kind: unknown field',)),
            ({'s_pk': pk}, ('c_pk: missing', '64 lowercase hex')),
            ({'c_pk': pk[:-2], 's_pk': pk}, ('c_pk: a string of 62 characters',)),
            ({'c_pk': pk.upper(), 's_pk': pk}, ('c_pk: character 0 is not',)),
            ({'c_pk': pk, 's_pk': 7}, ('s_pk: 7;',)),
            ({'c_pk': pk, 's_pk': [pk]}, ('s_pk: an array;',))]:
        api.refused(tok, 'keys', body, 400, *words)
        n += 1
    n += 2
    cap = 4096
    api.refused(tok, 'keys', b' ' * (cap + 1), 413, 'a body of %d bytes' % (cap + 1),
                'at most %d' % cap)
    scap = 4096 + 254 * (128 + 2 * sa.CT_BYTES)
    api.refused(tok, 'shares', b' ' * (scap + 1), 413, 'at most %d' % scap)
    # Slow bodies on many connections with one token: the third waits for the first two.
    body = json.dumps({'c_pk': pk, 's_pk': pk}).encode()
    held = [held_body(api.srv, '/v1/jobs/%s/secagg/keys' % api.job, tok, body)
            for _ in range(2)]
    time.sleep(0.3)
    api.refused(tok, 'keys', body, 503, 'in flight', '--client-inflight')
    for s, _ in held:
        s.close()
    check('round_in_progress' not in api.srv.status(api.job)['secagg'],
          'a refused advertise opened a round')
    return n + 1


def share_list(nb, ct='00' * sa.CT_BYTES):
    return [{'to': v, 'ct': ct} for v in nb]


def hostile_shares(api, tok, me, nb, others):
    far = [v for v in others if v not in nb][0]
    cases = [
        ({'shares': 5}, ('shares: not an array',)),
        ({'shares': []}, ('shares: an array of 0 entries',)),
        ({'shares': share_list([nb[0]] * 300)}, ('shares: an array of 300 entries',
                                                 '1 to 254')),
        ({'shares': share_list(nb), 'extra': []}, ('extra: unknown field',)),
        ({'shares': [5] + share_list(nb[1:])}, ('shares[0]: not an object',)),
        ({'shares': share_list(nb[:1], '00' * 10) + share_list(nb[1:])},
         ('shares[0].ct: a string of 20 characters', 'allowed: %d' % CT_HEX)),
        ({'shares': [{'to': -1, 'ct': '00' * sa.CT_BYTES}] + share_list(nb[1:])},
         ('shares[0].to: -1;',)),
        ({'shares': [{'to': str(nb[0]), 'ct': '00' * sa.CT_BYTES}] + share_list(nb[1:])},
         ('shares[0].to: a string',)),
        ({'shares': [{'to': nb[0], 'ct': '00' * sa.CT_BYTES, 'kind': 'self'}]},
         ('shares[0].kind: unknown field',)),
        ({'shares': share_list(nb[:-1] + [me])}, ('shares[%d].to %d: that is you' %
                                                  (len(nb) - 1, me),)),
        ({'shares': share_list(nb[:-1] + [far])},
         ('shares[%d].to %d: not one of your neighbours' % (len(nb) - 1, far),)),
        ({'shares': share_list(nb[:-1] + [99999])}, ('to 99999: not one of your neighbours',)),
        ({'shares': share_list(nb[:-1] + [nb[0]])},
         ('shares[%d].to %d: a second share' % (len(nb) - 1, nb[0]),)),
        ({'shares': share_list(nb[:-1])}, ('shares: %d entries' % (len(nb) - 1),
                                           'your %d neighbours' % len(nb))),
    ]
    for body, words in cases:
        api.refused(tok, 'shares', body, 400, *words)
    # Stages ahead of the round: 409 naming where it is.
    api.refused(tok, 'input', bytes(4 * (DIM + 1)), 409, "round is at 'share'")
    api.refused(tok, 'unmask', {'reveals': []}, 409, "round is at 'share'")
    return len(cases) + 2


def slow_inputs(api, srv, tok):
    """Masked inputs sent slowly on three connections at once: the third is refused (the
    client's cap of bodies in flight); once the two are closed the client's input is taken."""
    head = e.http_head('POST', '/v1/jobs/%s/secagg/input' % api.job, {
        'Authorization': 'Bearer ' + tok, 'Content-Type': 'application/octet-stream',
        'Content-Length': str(4 * (DIM + 1))})
    socks = []
    for _ in range(2):
        s = e.raw_connect(srv.port)
        s.sendall(head + b'\0\0\0')  # the head and 3 bytes of the body: then nothing
        socks.append(s)
    time.sleep(0.3)
    err = api.refused(tok, 'input', bytes(4 * (DIM + 1)), 503, 'in flight')
    for s in socks:
        s.close()
    return err


def unmask_cases(me, want, good):
    """want: [(v, kind)]; good: {v: share bytes}. Bodies that must be refused, with words."""
    def rev(pairs):
        return {'reveals': [{'index': v, 'share': s.hex()} for v, s in pairs]}
    items = [(v, good[v]) for v, _ in want]
    x, ys = sa.share_decode(items[0][1], sa.SECRET_BYTES)
    other_pt = sa.share_encode((x + 1, ys))
    zero_pt = sa.share_encode((0, ys))
    return [
        ({'reveals': {}}, ('reveals: not an array',)),
        (rev(items[:-1] + [(me, items[-1][1])]), ('reveals[%d].index %d: not asked of you' %
                                                  (len(items) - 1, me),)),
        (rev([(items[0][0], other_pt)] + items[1:]),
         ('reveals[0].share: a share at point %d' % (x + 1), 'index + 1 = %d' % (me + 1))),
        (rev([(items[0][0], zero_pt)] + items[1:]), ('reveals[0].share: not a share',)),
        (rev([(items[0][0], good[items[0][0]][:-1])] + items[1:]),
         ('reveals[0].share: a string of %d characters' % (2 * sa.SHARE_BYTES - 2),)),
        (rev(items[:-1] + [items[0]]), ('reveals[%d].index %d: a second reveal' %
                                        (len(items) - 1, items[0][0]),)),
        (rev(items[:-1]), ('reveals: %d entries' % (len(items) - 1),
                           'exactly the %d' % len(items))),
        ({'reveals': [{'index': items[0][0], 'share': items[0][1].hex(), 'kind': 'secret'}]},
         ('reveals[0].kind: unknown field',)),
    ]


def model_of(srv, job):
    st, _, buf = srv.request('GET', '/v1/jobs/%s/model' % job, token=srv.admin)
    check(st == 200, 'GET model: %d' % st)
    return e.st_decode(buf)[1]['w']


def honest_round(srv, url, toks, rng):
    """Round 0: client 0 tries everything hostile at each stage, then all send honestly."""
    api = Api(srv, 'hx')
    tried = hostile_keys(api, toks[0])
    sess = [sa.SecAggSession(url, 'hx', t) for t in toks]
    for attempt in range(50):  # the held keys bodies' close reaches the server shortly
        try:
            sess[0].join()
            break
        except sa.SecAggError as ex:
            check(ex.status == 503 and attempt < 49, 'join of client 0: %s' % ex)
            time.sleep(0.1)
    api.refused(toks[0], 'keys', {'c_pk': '22' * 32, 's_pk': '22' * 32}, 409, 'already sent')
    for s in sess[1:]:
        s.join()
    me = sess[0].client.u
    nb = [n['index'] for n in sess[0]._wait('keys', 10)['neighbours']]
    tried += 1 + hostile_shares(api, toks[0], me, nb, [s.client.u for s in sess[1:]])
    sess[0].send_shares(timeout=10)
    api.refused(toks[0], 'shares', {'shares': share_list(nb)}, 409, 'already sent')
    for s in sess[1:]:
        s.send_shares(timeout=10)
    sess[0]._wait('shares', 10)
    api.refused(toks[0], 'input', bytes(4), 400, 'masked input: 4 bytes', '%d bytes' %
                (4 * (DIM + 1)))
    api.refused(toks[0], 'input', bytes(4 * (DIM + 2)), 413, 'at most %d' % (4 * (DIM + 1)))
    slow = slow_inputs(api, srv, toks[0])
    tried += 4
    ups, ws = [], []
    for i, s in enumerate(sess):
        x = rng.uniform(-1, 1, DIM).astype(np.float32)
        w = int(rng.integers(1, 40))
        for attempt in range(50):  # the slow connections' close reaches the server shortly
            try:
                s.send_input(x, w, timeout=10)
                break
            except sa.SecAggError as ex:
                check(i == 0 and ex.status == 503 and attempt < 49, 'input %d: %s' % (i, ex))
                time.sleep(0.1)
        ups.append(x)
        ws.append(w)
        if i == 0:
            # Another input after the first: answered as the first (the body is dropped, never
            # compared, as a plain update's resend), and the first stands (the exact model).
            st, obj = api.post(toks[0], 'input', bytes(4 * (DIM + 1)))
            check(st == 200 and obj == {'accepted': True},
                  'a second masked input: want the first answer, got %d %r' % (st, obj))
    want = [(r['index'], {'self': sa.REVEAL_SELF, 'secret': sa.REVEAL_SECRET}[r['kind']])
            for r in sess[0]._wait('unmask', 10)['reveal']]
    good = sess[0].client.reveal(want)
    cases = unmask_cases(me, want, good)
    for body, words in cases:
        api.refused(toks[0], 'unmask', body, 400, *words)
    tried += len(cases)
    for s in sess:
        s.send_unmask(timeout=10)
    e.wait_for(lambda: srv.status('hx')['model_round'] == 1, 20, 'round 0 model')
    q = [sa.quantise(x, SA['clip'], SA['bits']).astype(np.float64) for x in ups]
    qmax = (1 << SA['bits']) - 1
    ref = (sum(w * qi for w, qi in zip(ws, q)) / sum(ws)) * 2 * SA['clip'] / qmax - SA['clip']
    err = float(np.max(np.abs(model_of(srv, 'hx') - ref)))
    check(err <= 1e-6, 'round 0 after %d refusals: not the quantised mean (max error %g)'
          % (tried, err))
    e.log('secagg_hostile: %d hostile messages refused (400/409/413/503, each naming the '
          'field and what is allowed), then round 0 exact (max error %.2g); slow inputs: %s'
          % (tried, err, slow))


def lying_round(srv, url, toks, rng):
    """Round 1: one client shifts its share of a survivor's self-mask seed by 1 / lambda, so
    that Lagrange rebuilds another valid seed. The round must fail naming both."""
    P = sa.P
    t = SA['threshold']
    sess = [sa.SecAggSession(url, 'hx', tk) for tk in toks]
    for s in sess:
        s.join()
    for s in sess:
        s.send_shares(timeout=10)
    for s in sess:
        s.send_input(rng.uniform(-1, 1, DIM).astype(np.float32), 3, timeout=10)
    lists = {s.client.u: [r['index'] for r in s._wait('unmask', 10)['reveal']] for s in sess}
    victim = sess[3].client.u
    nbrs = sorted(u for u, lst in lists.items() if victim in lst)
    liar, pts = nbrs[0], [v + 1 for v in nbrs[:t]]
    num = den = 1
    for xj in pts[1:]:
        num = num * xj % P
        den = den * (xj - pts[0]) % P
    lam = num * pow(den, P - 2, P) % P
    for s in sess:
        want = [(v, sa.REVEAL_SELF) for v in lists[s.client.u]]
        shares = s.client.reveal(want)
        if s.client.u == liar:
            x, ys = sa.share_decode(shares[victim], sa.SECRET_BYTES)
            ys[0] = (ys[0] + pow(lam, P - 2, P)) % P
            shares[victim] = sa.share_encode((x, ys))
        st, obj = Api(srv, 'hx').post(s.token, 'unmask', {'reveals': [
            {'index': v, 'share': b.hex()} for v, b in shares.items()]})
        check(st == 200, 'unmask of %d: %d %r' % (s.client.u, st, obj))
    st = e.wait_for(lambda: srv.status('hx')['secagg'].get('last_failure') or
                    srv.status('hx')['model_round'] == 2, 20, 'round 1 ends')
    status = srv.status('hx')
    why = status['secagg'].get('last_failure', {}).get('why', '')
    check(status['model_round'] == 1 and
          "client %d's self-mask seed could not be rebuilt (the shares do not agree: the one "
          "client %d revealed is off; %d or %d lied)" % (victim, liar, liar, victim) in why,
          'a crafted share: want the round failed naming %d and %d, got %r' % (victim, liar,
                                                                              status))
    e.log('secagg_hostile: a crafted share (Lagrange rebuilds a valid, wrong seed): %s' % why)


def held_body(srv, path, token, body, ctype='application/json'):
    """A POST whose head and first bytes are sent, the rest held back: (socket, body)."""
    s = e.raw_connect(srv.port)
    s.sendall(e.http_head('POST', path, {'Authorization': 'Bearer ' + token, 'Content-Type': ctype,
                                         'Content-Length': str(len(body))}) + body[:3])
    return s, body


def deleted_mid_round(srv, url):
    """DELETE while stage bodies (and a client mint) are half sent: each gets 404 when its
    body is in (the job was freed under them before: a use after free)."""
    toks = make_job(srv, 'del', n=4)
    sess = [sa.SecAggSession(url, 'del', t) for t in toks]
    for s in sess:
        s.join()
    for s in sess:
        s.send_shares(timeout=10)
    sess[0]._wait('shares', 10)
    held = [held_body(srv, '/v1/jobs/del/secagg/keys', toks[0],
                      json.dumps({'c_pk': 'ab' * 32, 's_pk': 'cd' * 32}).encode()),
            held_body(srv, '/v1/jobs/del/secagg/input', toks[1], bytes(4 * (DIM + 1)),
                      'application/octet-stream'),
            held_body(srv, '/v1/jobs/del/clients', srv.admin, b'{"client": "late"}')]
    time.sleep(0.3)
    check(srv.status('del')['secagg']['round_in_progress']['stage'] == 'masked', 'del: stage')
    st, obj, _ = srv.json('DELETE', '/v1/jobs/del', token=srv.admin)
    check(st == 200, 'DELETE a job mid-round: %d %r' % (st, obj))
    for sock, body in held:
        sock.sendall(body[3:])
        r, _ = e.read_response(sock)
        sock.close()
        check(r.status == 404 and b'deleted while the body came' in r.body,
              'a body finished after DELETE: %d %r' % (r.status, r.body[:200]))
    st, _, raw = srv.request('GET', '/v1/jobs/del/secagg/keys', token=toks[0])
    check(st in (401, 403, 404), 'a stage of a deleted job: %d %r' % (st, raw[:200]))
    make_job(srv, 'del', n=4)
    check('round_in_progress' not in srv.status('del')['secagg'],
          'the deleted job\'s round survived in the new one')
    e.log('secagg_hostile: a job deleted mid-round with 3 bodies half sent (keys, masked '
          'input, a client mint): each 404 once in, the round gone')


def run():
    rng = np.random.default_rng(7)
    with e.Server() as srv:
        url = 'http://127.0.0.1:%d' % srv.port
        admission(srv)
        toks = make_job(srv, 'hx')
        honest_round(srv, url, toks, rng)
        lying_round(srv, url, toks, rng)
        deleted_mid_round(srv, url)
        srv.healthy()


if __name__ == '__main__':
    e.main(run)
