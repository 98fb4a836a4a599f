# SPDX-License-Identifier: MIT
# Client credentials: mint, submit, revoke; client_auth required; one update per client per round
# (409, a resend gets its first answer, across kill -9); the bodies-in-flight caps (503).
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [2000], 'dtype': 'F32'}]


def mint(srv, job, token, client=None, ttl_s=None, expect=201):
    body = {}
    if client is not None:
        body['client'] = client
    if ttl_s is not None:
        body['ttl_s'] = ttl_s
    # The server's time(NULL) reads the coarse clock, which may lag time.time() by a tick
    # across a second's edge: one second of slack, not more.
    t0 = int(time.time()) - 1
    st, obj, _ = srv.json('POST', '/v1/jobs/%s/clients' % job, body if body else None,
                          token=token)
    check(st == expect, 'mint %r for %s: want %d, got %d %r' % (client, job, expect, st, obj))
    if st == 201:
        check(obj['token'].startswith('tc1.') and obj['expires'] >= t0 + (ttl_s or 604800),
              'a minted credential: %r' % obj)
        if client is not None:
            check(obj['client'] == client, 'minted %r, asked %r' % (obj, client))
    return obj


def kill9(srv):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.start()


def refusals(srv):
    m = srv.metrics()
    return {k.split('"')[1]: v for k, v in m.items()
            if k.startswith('tributary_updates_rejected_total{')}


def identities(srv, fan_in):
    """Mint, refuse, one update per client per round across kill -9, revoke, a model."""
    job = 'ca%d' % fan_in
    rng = np.random.default_rng(fan_in)
    jtok = srv.create_job({'name': job, 'clients_per_round': 3, 'fan_in': fan_in,
                           'tensors': SCHEMA, 'client_auth': 'required'})['token']
    check(srv.status(job)['client_auth'] == 'required', 'client_auth not reported')
    alice = mint(srv, job, srv.admin, 'alice')
    anon = mint(srv, job, jtok)  # the job's token mints too; the id is made
    check(anon['client'] != 'alice' and len(anon['client']) > 8, 'made id %r' % anon)
    ups = [(i + 2, e.random_model(rng, SCHEMA)) for i in range(4)]
    body = [e.raw_body(SCHEMA, m) for _, m in ups]

    def post(tok, i, key, expect, rnd=0):
        st, obj, hd = srv.post_update(job, tok, rnd, body[i], ups[i][0], expect=expect,
                                      extra={'Idempotency-Key': key} if key else None)
        return obj

    # The job token no longer submits; a client token does.
    obj = post(jtok, 0, None, 403)
    check('client_auth' in obj['error'], '403 body: %r' % obj)
    first = post(alice['token'], 0, 'a-1', 202)
    # A second update of alice in round 0: 409, saying so; the first request again: its answer.
    obj = post(alice['token'], 1, 'a-2', 409)
    check('alice' in obj['error'] and 'one update per client' in obj['error'], '409: %r' % obj)
    check(post(alice['token'], 0, 'a-1', 202) == first, 'resend of the first')
    # Tampered, another job's, expired, malformed: 401.
    t = alice['token']
    bad = t[:-2] + ('AA' if not t.endswith('AA') else 'BB')
    check('signature' in post(bad, 1, None, 401)['error'], 'tampered token')
    forged = t.replace('alice', 'mallory')
    post(forged, 1, None, 401)
    short = mint(srv, job, srv.admin, 'brief', ttl_s=1)
    time.sleep(2.1)
    check('expired' in post(short['token'], 1, None, 401)['error'], 'expired token')
    post('tc1.alice', 1, None, 401)
    # A client token reads the job and its model, but does not mint.
    srv.status(job, token=alice['token'])
    mint(srv, job, alice['token'], 'eve', expect=401)
    # kill -9 between the first update and a second one: still one per client.
    kill9(srv)
    check(srv.status(job)['received'] == 1, 'after kill -9: %r' % srv.status(job))
    obj = post(alice['token'], 1, 'a-3', 409)
    check('already' in obj['error'], 'after kill -9: %r' % obj)
    check(post(alice['token'], 0, 'a-1', 202) == first, 'resend after kill -9')
    # Revoked: 401 on its next update, and the id is not issued again.
    bob = mint(srv, job, srv.admin, 'bob')
    st, obj, _ = srv.json('DELETE', '/v1/jobs/%s/clients/bob' % job, token=jtok)
    check(st == 200 and obj == {'client': 'bob', 'revoked': True}, 'revoke: %d %r' % (st, obj))
    check('revoked' in post(bob['token'], 1, None, 401)['error'], 'revoked token')
    mint(srv, job, srv.admin, 'bob', expect=409)
    kill9(srv)
    post(bob['token'], 1, None, 401)  # revocations are kept
    carol = mint(srv, job, srv.admin, 'carol')
    post(carol['token'], 1, 'c-1', 202)
    check(srv.status(job)['clients'] == 2, 'distinct clients: %r' % srv.status(job))
    post(anon['token'], 2, 'n-1', 202)
    _, _, buf = srv.get_model(job, carol['token'], '?after=0&timeout=60')
    e.check_model(buf, SCHEMA, e.weighted_mean(ups[:3]), '%s: round 0' % job)
    st = srv.status(job)
    check(st['last_round_clients'] == 3 and st['clients'] == 0, 'round record: %r' % st)
    m = srv.metrics()
    check(m['tributary_round_clients{job="%s",state="last"}' % job] == 3, 'metric')
    db = sqlite3.connect(os.path.join(srv.data_dir, 'data', 'tributary.db'))
    row = db.execute('SELECT r.n_updates, r.clients FROM rounds r JOIN jobs j ON '
                     'j.id = r.job_id WHERE j.name = ? AND r.round = 0', (job,)).fetchone()
    db.close()
    check(row == (3, 3), "round 0's record (updates, distinct clients): %r" % (row,))
    # A new round: alice sends again.
    post(alice['token'], 3, 'a-4', 202, rnd=1)
    e.log('%s (fan-in %d): mint, 403, 409, resend, 401 x5, kill -9, revoke, a model of 3 '
          'distinct clients' % (job, fan_in))


def stall(srv, job, tok, n_bytes):
    """An update's head and half its body, then nothing: it holds a slot until closed."""
    s = e.raw_connect(srv.port)
    s.sendall(e.http_head('POST', '/v1/jobs/%s/updates' % job, {
        'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': 0,
        'Content-Type': 'application/octet-stream', 'Content-Length': n_bytes}) +
        b'\0' * (n_bytes // 2))
    return s


def caps():
    """Bodies in flight: per client (--client-inflight 2), per job (--job-inflight-pct 20)."""
    P = 1000000
    schema = [{'name': 'w', 'shape': [P], 'dtype': 'F32'}]
    with e.Server(arena_mb=64, extra=['--job-inflight-pct', '20']) as srv:
        jtok = srv.create_job({'name': 'cap', 'clients_per_round': 50, 'params': P})['token']
        zed = mint(srv, 'cap', srv.admin, 'zed')
        stalls = []
        try:
            base = srv.metrics()['tributary_arena_slots']
            for i in range(2):
                stalls.append(stall(srv, 'cap', zed['token'], 4 * P))
                e.wait_for(lambda: srv.metrics()['tributary_arena_slots'] > base + i, 10,
                           'stalled body %d to take a slot' % i)
            st, obj, hd = srv.post_update('cap', zed['token'], 0, b'\0' * (4 * P), 1,
                                          expect=503)
            check('--client-inflight' in obj['error'] and hd.get('retry-after') == '1',
                  'client cap: %r %r' % (obj, hd))
            check(refusals(srv)['client_inflight'] == 1, 'reason client_inflight')
            # Another client still gets in; the job's 20% of 64 MiB (12.8 MB) holds 3 bodies.
            stalls.append(stall(srv, 'cap', jtok, 4 * P))
            e.wait_for(lambda: srv.metrics()['tributary_arena_slots'] >= base + 3, 10,
                       'the third stalled body')
            st, obj, hd = srv.post_update('cap', jtok, 0, b'\0' * (4 * P), 1, expect=503)
            check('--job-inflight-pct' in obj['error'] and hd.get('retry-after') == '1',
                  'job cap: %r %r' % (obj, hd))
            check(refusals(srv)['job_inflight'] == 1, 'reason job_inflight')
        finally:
            for s in stalls:
                s.close()
        # Closed: their slots and their counts come back.
        e.wait_for(lambda: srv.metrics()['tributary_arena_slots'] == base, 10, 'slots back')
        srv.post_update('cap', zed['token'], 0, np.ones(P, np.float32).tobytes(), 1)
        srv.post_update('cap', jtok, 0, np.ones(P, np.float32).tobytes(), 1)
        check(srv.status('cap')['received'] == 2, 'after the caps')
        e.log('caps: a client at 2 bodies in flight and a job at 20%% of the arena get 503')


def simulate(srv):
    """`tributary simulate` on a job with client_auth required: one credential per client."""
    srv.create_job({'name': 'sim', 'clients_per_round': 12, 'params': 500,
                    'client_auth': 'required'})
    p = subprocess.run([e.BIN, 'simulate', '--url', 'http://127.0.0.1:%d' % srv.port,
                        '--data-dir', os.path.join(srv.data_dir, 'data'), '--job', 'sim',
                        '--clients', '12', '--rounds', '2', '--params', '500'],
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0 and '12 client credentials minted' in p.stderr + p.stdout,
          'simulate on a required job: rc %d\n%s%s' % (p.returncode, p.stdout, p.stderr[-3000:]))
    st = srv.status('sim')
    check(st['model_round'] == 2 and st['last_round_clients'] == 12, 'simulate: %r' % st)
    e.log('simulate: 12 clients minted their credentials, 2 rounds of 12 distinct clients')


def run():
    with e.Server() as srv:
        simulate(srv)
        for fan_in in (3, 1):  # 1: each update's record is superseded by its partial at once
            identities(srv, fan_in)
        # Optional (the default): the job token still submits, without an identity.
        tok = srv.create_job({'name': 'opt', 'clients_per_round': 2, 'tensors': SCHEMA})['token']
        check(srv.status('opt')['client_auth'] == 'optional', 'default client_auth')
        srv.post_update('opt', tok, 0, e.raw_body(SCHEMA, e.zeros_model(SCHEMA)), 1)
        srv.post_update('opt', tok, 0, e.raw_body(SCHEMA, e.zeros_model(SCHEMA)), 1)
        st, obj, _ = srv.json('POST', '/v1/jobs', {'name': 'x', 'clients_per_round': 1,
                                                   'params': 4, 'client_auth': 'yes'},
                              token=srv.admin)
        check(st == 400 and 'client_auth' in obj['error'], 'bad client_auth: %r' % obj)
        log = ''.join(srv.log_text(p) for p in srv.logs)
        check('tc1.' not in log, 'a client token in the log')
    caps()


if __name__ == '__main__':
    e.main(run)
