# SPDX-License-Identifier: MIT
# A job's lifecycle (issue 15): num_rounds -> done (410), DELETE (purge), pause/resume (503),
# each state across kill -9 + restart, and bad num_rounds values refused naming the field.
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'weights', 'shape': [8], 'dtype': 'F32'}]


def kill9_restart(srv):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.start()


def send_round(srv, job, tok, rnd, n, rng, key=None):
    """@n updates of round @rnd (the last with Idempotency-Key @key); the expected mean."""
    ups = []
    for i in range(n):
        m = e.random_model(rng, SCHEMA)
        extra = {'Idempotency-Key': key} if key and i == n - 1 else None
        srv.post_update(job, tok, rnd, e.raw_body(SCHEMA, m), i + 1, extra=extra)
        ups.append((i + 1, m))
    return e.weighted_mean(ups)


def bad_values(srv):
    for bad in (0, -1, 'x', 1e9, 2.5, 1000001, None, True):
        st, obj, _ = srv.json('POST', '/v1/jobs', {'name': 'bad', 'clients_per_round': 2,
                                                   'params': 8, 'num_rounds': bad},
                              token=srv.admin)
        check(st == 400 and 'num_rounds' in (obj or {}).get('error', ''),
              'num_rounds %r: want 400 naming num_rounds, got %d %r' % (bad, st, obj))
        check('1 to 1000000' in obj['error'], 'num_rounds %r: the range is not named: %r' %
              (bad, obj))
    st, obj, _ = srv.json('GET', '/v1/jobs/bad', token=srv.admin)
    check(st == 404, 'a refused job exists: %d %r' % (st, obj))


def done_after_num_rounds(srv, rng):
    j = srv.create_job({'name': 'fin', 'clients_per_round': 2, 'params': 8, 'num_rounds': 2})
    tok = j['token']
    s = srv.status('fin')
    check(s['state'] == 'open' and s['num_rounds'] == 2, 'new job: %r' % s)
    refs = [e.zeros_model(SCHEMA)]
    for r in range(2):
        refs.append(send_round(srv, 'fin', tok, r, 2, rng, key='fin-%d' % r))
        srv.get_model('fin', tok, '?after=%d&timeout=30' % r)
    s = srv.status('fin')
    check(s['state'] == 'done' and s['model_round'] == 2, 'after 2 rounds: %r' % s)
    st, obj, _ = srv.post_update('fin', tok, 2, e.raw_body(SCHEMA, refs[1]), expect=410)
    check(obj == {'error': "job 'fin' is done after 2 rounds", 'state': 'done'},
          'third-round update: %r' % obj)
    # The resend of an update the last round took gets its 202 again, not 410: it was counted.
    st, obj, _ = srv.post_update('fin', tok, 1, e.raw_body(SCHEMA, refs[1]), 2,
                                 extra={'Idempotency-Key': 'fin-1'}, expect=202)
    check(obj == {'round': 1, 'received': 2}, 'resend after done: %r' % obj)
    # Whatever round it names: no round opens after the last.
    srv.post_update('fin', tok, 1, e.raw_body(SCHEMA, refs[1]), expect=410)
    _, _, got = srv.get_model('fin', tok)
    e.check_model(got, SCHEMA, refs[2], 'fin v2 after done')
    _, _, got = srv.get_model('fin', tok, '?round=1')
    e.check_model(got, SCHEMA, refs[1], 'fin v1 after done')
    # Pausing a done job is refused; status still answers.
    st, obj, _ = srv.json('POST', '/v1/jobs/fin/pause', token=tok)
    check(st == 409 and obj.get('state') == 'done', 'pause of a done job: %d %r' % (st, obj))
    kill9_restart(srv)
    s = srv.status('fin')
    check(s['state'] == 'done' and s['num_rounds'] == 2 and s['model_round'] == 2,
          'done after kill -9: %r' % s)
    srv.post_update('fin', tok, 2, e.raw_body(SCHEMA, refs[1]), expect=410)
    _, _, got = srv.get_model('fin', tok)
    e.check_model(got, SCHEMA, refs[2], 'fin v2 after kill -9')
    e.log('num_rounds 2: done, 410, models served, across kill -9')


def pause_resume(srv, rng):
    j = srv.create_job({'name': 'pz', 'clients_per_round': 3, 'params': 8})
    tok = j['token']
    ups = [(i + 1, e.random_model(rng, SCHEMA)) for i in range(3)]
    srv.post_update('pz', tok, 0, e.raw_body(SCHEMA, ups[0][1]), 1)
    st, obj, _ = srv.json('POST', '/v1/jobs/pz/pause', token=tok)
    check(st == 200 and obj == {'job': 'pz', 'state': 'paused'}, 'pause: %d %r' % (st, obj))
    st, obj, hd = srv.post_update('pz', tok, 0, e.raw_body(SCHEMA, ups[1][1]), 2, expect=503)
    check(obj == {'error': "job 'pz' is paused", 'state': 'paused'} and
          hd.get('retry-after') == '5', 'paused update: %r %r' % (obj, hd))
    s = srv.status('pz')
    check(s['state'] == 'paused' and s['received'] == 1, 'paused status: %r' % s)
    kill9_restart(srv)
    s = srv.status('pz')
    check(s['state'] == 'paused' and s['received'] == 1, 'paused after kill -9: %r' % s)
    srv.post_update('pz', tok, 0, e.raw_body(SCHEMA, ups[1][1]), 2, expect=503)
    st, obj, _ = srv.json('POST', '/v1/jobs/pz/resume', token=srv.admin)
    check(st == 200 and obj == {'job': 'pz', 'state': 'open'}, 'resume: %d %r' % (st, obj))
    for w, m in ups[1:]:
        srv.post_update('pz', tok, 0, e.raw_body(SCHEMA, m), w)
    _, _, got = srv.get_model('pz', tok, '?after=0&timeout=30')
    e.check_model(got, SCHEMA, e.weighted_mean(ups), 'pz v1 (paused between updates)')
    kill9_restart(srv)
    check(srv.status('pz')['state'] == 'open', 'resumed after kill -9: %r' % srv.status('pz'))
    e.log('pause: 503 + Retry-After, resumed round exact, both states across kill -9')


def delete(srv, rng):
    data = os.path.join(srv.data_dir, 'data')
    j = srv.create_job({'name': 'del', 'clients_per_round': 2, 'params': 8})
    tok = j['token']
    send_round(srv, 'del', tok, 0, 2, rng)
    srv.get_model('del', tok, '?after=0&timeout=30')
    e.wait_for(lambda: srv.metrics()['tributary_arena_slots'] == 0, 10,
               'no arena slot live between rounds')
    srv.post_update('del', tok, 1, e.raw_body(SCHEMA, e.random_model(rng, SCHEMA)), 1)
    check(srv.metrics()['tributary_arena_slots'] > 0, 'the open round holds no slot')
    # A client credential and the job token may not delete.
    st, cl, _ = srv.json('POST', '/v1/jobs/del/clients', {'client': 'c1'}, token=tok)
    check(st == 201, 'mint a client token: %d %r' % (st, cl))
    for who, t in (('job token', tok), ('client token', cl['token'])):
        st, obj, _ = srv.json('DELETE', '/v1/jobs/del', token=t)
        check(st == 403, 'DELETE with the %s: want 403, got %d %r' % (who, st, obj))
    for path in ('/v1/jobs/del/pause', '/v1/jobs/del/resume'):
        st, obj, _ = srv.json('POST', path, token=cl['token'])
        check(st == 403, 'POST %s with a client token: want 403, got %d %r' % (path, st, obj))
        st, obj, _ = srv.json('POST', path, token='nope')
        check(st == 401, 'POST %s with a wrong token: want 401, got %d %r' % (path, st, obj))
    st, obj, _ = srv.json('DELETE', '/v1/jobs/del', token='nope')
    check(st == 401, 'DELETE with a wrong token: want 401, got %d %r' % (st, obj))
    st, obj, _ = srv.json('DELETE', '/v1/jobs/del?purge=maybe', token=srv.admin)
    check(st == 400 and 'purge' in obj['error'], 'purge=maybe: %d %r' % (st, obj))
    polled = []
    poll = threading.Thread(target=lambda: polled.append(
        srv.get_model('del', tok, '?after=1&timeout=30', expect=None)))
    poll.start()
    time.sleep(0.5)  # parked (nothing counts parked polls; if not yet, it gets a 401)
    st, obj, _ = srv.json('DELETE', '/v1/jobs/del', token=srv.admin)
    check(st == 200 and obj == {'job': 'del', 'deleted': True, 'purged': False},
          'DELETE: %d %r' % (st, obj))
    poll.join(10)
    check(not poll.is_alive() and polled and polled[0][0] == 404 and
          b'was deleted' in polled[0][2], 'a long poll of the deleted job: %r' % polled)
    st, obj, _ = srv.json('GET', '/v1/jobs/del', token=srv.admin)
    check(st == 404, 'deleted job, admin: want 404, got %d %r' % (st, obj))
    st, obj, _ = srv.json('GET', '/v1/jobs/del', token=tok)
    check(st == 401, 'deleted job, its old token: want 401, got %d %r' % (st, obj))
    st, _, _ = srv.post_update('del', tok, 1, e.raw_body(SCHEMA, e.zeros_model(SCHEMA)),
                               expect=None)
    check(st == 401, 'update to a deleted job: want 401, got %d' % st)
    names = [x['job'] for x in srv.json('GET', '/v1/jobs', token=srv.admin)[1]['jobs']]
    check('del' not in names, 'deleted job listed: %r' % names)
    kept = [d for d in os.listdir(os.path.join(data, 'deleted')) if d.startswith('del.')]
    check(len(kept) == 1 and os.listdir(os.path.join(data, 'deleted', kept[0])),
          'models not kept under deleted/: %r' % kept)
    check(not os.path.exists(os.path.join(data, 'jobs', 'del')), 'jobs/del still there')
    # The open round's update, leaf and top are released: no slot is left.
    e.wait_for(lambda: srv.metrics()['tributary_arena_slots'] == 0, 10,
               "the deleted job's open round to give its arena slots back")
    check("job del: deleted" in srv.log_text(), 'no deletion line in the log')
    kill9_restart(srv)
    st, obj, _ = srv.json('GET', '/v1/jobs/del', token=srv.admin)
    check(st == 404, 'deleted job back after kill -9: %d %r' % (st, obj))
    # The name is free: a new job, its own round 0, its own token.
    j2 = srv.create_job({'name': 'del', 'clients_per_round': 1, 'params': 8})
    check(j2['token'] != tok and j2['round'] == 0, 'recreated: %r' % j2)
    ref = send_round(srv, 'del', j2['token'], 0, 1, rng)
    _, _, got = srv.get_model('del', j2['token'], '?after=0&timeout=30')
    e.check_model(got, SCHEMA, ref, 'recreated del v1')
    st, obj, _ = srv.json('DELETE', '/v1/jobs/del?purge=true', token=srv.admin)
    check(st == 200 and obj == {'job': 'del', 'deleted': True, 'purged': True},
          'DELETE purge: %d %r' % (st, obj))
    check(not os.path.exists(os.path.join(data, 'jobs', 'del')), 'purge left jobs/del')
    kept2 = [d for d in os.listdir(os.path.join(data, 'deleted')) if d.startswith('del.')]
    check(kept2 == kept, 'purge moved models instead of removing them: %r' % kept2)
    st, obj, _ = srv.json('DELETE', '/v1/jobs/del', token=srv.admin)
    check(st == 404, 'second DELETE: want 404, got %d %r' % (st, obj))
    e.log('DELETE: 403/401 for non-admins, 404 after, name reusable, purge removes models')


def tools(srv):
    """`tributary simulate` stops cleanly at a done job; `tributary status` shows the state."""
    srv.create_job({'name': 'sim', 'clients_per_round': 4, 'params': 500, 'num_rounds': 2})
    url = 'http://127.0.0.1:%d' % srv.port
    data = os.path.join(srv.data_dir, 'data')
    p = subprocess.run([e.BIN, 'simulate', '--url', url, '--data-dir', data, '--job', 'sim',
                        '--clients', '4', '--rounds', '5', '--params', '500'],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    check(p.returncode == 0 and '2/2 rounds OK' in out and 'stopped: the job is done' in out,
          'simulate on a num_rounds 2 job: rc %d\n%s' % (p.returncode, out[-3000:]))
    check(srv.status('sim')['state'] == 'done', 'sim after simulate: %r' % srv.status('sim'))
    p = subprocess.run([e.BIN, 'status', '--url', url, '--data-dir', data],
                       capture_output=True, text=True, timeout=30)
    rows = {ln.split()[0]: ln.split() for ln in p.stdout.splitlines() if ln.strip()}
    check(p.returncode == 0 and rows.get('STATE') is None and
          rows.get('sim', [])[2:4] == ['done', '2/2'] and rows.get('pz', [])[2] == 'open',
          'tributary status: rc %d\n%s%s' % (p.returncode, p.stdout, p.stderr))
    e.log('simulate stops at done (2/2 rounds OK); status shows the states')


def run():
    rng = np.random.default_rng(15)
    with e.Server() as srv:
        bad_values(srv)
        done_after_num_rounds(srv, rng)
        pause_resume(srv, rng)
        delete(srv, rng)
        tools(srv)


if __name__ == '__main__':
    e.main(run)
