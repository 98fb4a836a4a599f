# SPDX-License-Identifier: MIT
# Round records on a single node (issue 15): X-Tributary-Metrics folded into sample-weighted means,
# bad headers refused with nothing counted, evaluations per version (409 on a client's second),
# records and evaluations across kill -9, and the eval metrics in /metrics.
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

JOB = 'recs'
CPR = 3
SCHEMA = [{'name': 'w', 'shape': [16], 'dtype': 'F32'}]


def mint(srv, tok, client):
    st, obj, _ = srv.json('POST', '/v1/jobs/%s/clients' % JOB, {'client': client}, token=tok)
    check(st == 201, 'mint %s: %d %r' % (client, st, obj))
    return obj['token']


def record(srv, tok, r, expect=200):
    st, obj, _ = srv.json('GET', '/v1/jobs/%s/rounds/%d' % (JOB, r), token=tok)
    check(st == expect, 'GET rounds/%d: want %d, got %d %r' % (r, expect, st, obj))
    return obj


def means(rows):
    """numpy's sample-weighted mean of each name over the rows (samples, metrics) carrying it."""
    out = {}
    for k in {k for _, m in rows for k in m}:
        w = np.array([s for s, m in rows if k in m], dtype=np.float64)
        x = np.array([m[k] for s, m in rows if k in m], dtype=np.float64)
        out[k] = float(np.average(x, weights=w))
    return out


def close(a, b, what):
    check(set(a) == set(b), '%s: names %r, want %r' % (what, sorted(a), sorted(b)))
    for k in a:
        check(abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(b[k])),
              '%s: %s = %r, numpy says %r' % (what, k, a[k], b[k]))


def bad_headers(srv, tok, body, rnd):
    long_val = json.dumps({'m%02d' % i: 0.123456789 * i for i in range(16)})
    long_val = long_val[:-1] + ', "pad": "%s"}' % ('x' * (1100 - len(long_val)))
    cases = [
        ('not JSON', 'loss=0.3'),
        ('an array', '[0.3]'),
        ('a string value', '{"loss": "0.3"}'),
        ('a bool value', '{"loss": true}'),
        ('NaN', '{"loss": NaN}'),
        ('Infinity', '{"loss": Infinity}'),
        ('overflow', '{"loss": 1e999}'),
        ('over 1 KiB', long_val),
        ('far over 1 KiB', json.dumps({'a': 1.0, 'pad': 'y' * 5000})),
        ('17 keys', json.dumps({'k%d' % i: float(i) for i in range(17)})),
        ('an empty name', '{"": 1}'),
        ('a name with a space', '{"lo ss": 1}'),
        ('a 65-character name', json.dumps({'n' * 65: 1.0})),
        ('a nested object', '{"loss": {"a": 1}}'),
        ('duplicate names', '{"loss": 1, "loss": 2}'),
    ]
    before = srv.status(JOB, token=tok)['received']
    for what, val in cases:
        st, obj, _ = srv.post_update(JOB, tok, rnd, body, samples=5, expect=None,
                                     extra={'X-Tributary-Metrics': val})
        check(st == 400, 'metrics header with %s: want 400, got %d %r' % (what, st, obj))
        check('X-Tributary-Metrics' in obj.get('error', ''),
              'the 400 for %s does not name the header: %r' % (what, obj))
    after = srv.status(JOB, token=tok)['received']
    check(after == before, 'bad metrics headers changed the count: %d -> %d' % (before, after))
    e.log('%d bad metrics headers: 400, nothing counted' % len(cases))


def play_round(srv, toks, rnd, rows, rng, body):
    for i, (samples, m) in enumerate(rows):
        extra = {'X-Tributary-Metrics': json.dumps(m)} if m is not None else {}
        srv.post_update(JOB, toks[i], rnd, body, samples=samples, extra=extra)


def run():
    rng = np.random.default_rng(15)
    with e.Server() as srv:
        tok = srv.create_job({'name': JOB, 'clients_per_round': CPR, 'tensors': SCHEMA})['token']
        body = e.raw_body(SCHEMA, e.random_model(rng, SCHEMA))
        clients = [mint(srv, tok, 'c%d' % i) for i in range(4)]

        # The open round's record before any update.
        r0 = record(srv, tok, 0)
        check(r0['state'] == 'open' and r0['received'] == 0 and r0['closed_at'] is None,
              'round 0 before updates: %r' % r0)
        bad_headers(srv, tok, body, 0)

        # Round 0: three updates of different sample counts; one without metrics.
        rounds = {
            0: [(10, {'loss': 0.9, 'accuracy': 0.5}), (30, {'loss': 0.3, 'accuracy': 0.75}),
                (7, None)],
            1: [(1, {'loss': 0.25}), (99, {'loss': 0.125, 'f1': 0.5}),
                (50, {'loss': 0.0625, 'f1': 0.25, 'accuracy': 0.875})],
        }
        t0 = time.time()
        play_round(srv, clients, 0, rounds[0], rng, body)
        srv.get_model(JOB, tok, '?after=0')
        mid = time.time()
        play_round(srv, clients, 1, rounds[1], rng, body)
        srv.get_model(JOB, tok, '?after=1')
        t1 = time.time()
        for r in (0, 1):
            rec = record(srv, tok, r)
            want = means([(s, m) for s, m in rounds[r] if m is not None])
            close(rec['metrics'], want, 'round %d metrics' % r)
            check(rec['metrics_updates'] == sum(m is not None for _, m in rounds[r]),
                  'round %d metrics_updates: %r' % (r, rec))
            check(rec['state'] == 'done' and rec['received'] == CPR and rec['updates'] == CPR
                  and rec['clients'] == CPR and rec['clients_per_round'] == CPR,
                  'round %d counts: %r' % (r, rec))
            check(rec['bytes'] == CPR * len(body), 'round %d bytes %r, want %d' %
                  (r, rec['bytes'], CPR * len(body)))
            lo, hi = (t0, mid) if r == 0 else (mid, t1)
            check(lo - 1 <= rec['opened_at'] <= rec['closed_at'] <= hi + 1,
                  'round %d times %r..%r outside %r..%r' % (r, rec['opened_at'],
                                                            rec['closed_at'], lo, hi))
            check(abs(rec['duration_s'] - (rec['closed_at'] - rec['opened_at'])) < 1e-6 and
                  rec['duration_s'] >= 0, 'round %d duration: %r' % (r, rec))
        e.log('round records: means equal numpy\'s sample-weighted means')

        # The list, paged.
        st, page, _ = srv.json('GET', '/v1/jobs/%s/rounds' % JOB, token=tok)
        check(st == 200 and [x['round'] for x in page['rounds']] == [0, 1, 2] and
              page['next'] is None and page['rounds'][2]['state'] == 'open',
              'rounds list: %d %r' % (st, page))
        st, page, _ = srv.json('GET', '/v1/jobs/%s/rounds?from=0&limit=1' % JOB, token=tok)
        check(st == 200 and [x['round'] for x in page['rounds']] == [0] and page['next'] == 1,
              'rounds?limit=1: %r' % page)
        st, page, _ = srv.json('GET', '/v1/jobs/%s/rounds?from=1&limit=1' % JOB, token=tok)
        check([x['round'] for x in page['rounds']] == [1] and page['next'] == 2,
              'rounds?from=1&limit=1: %r' % page)
        for q in ('limit=0', 'limit=1001', 'from=-1', 'limit=x'):
            st, obj, _ = srv.json('GET', '/v1/jobs/%s/rounds?%s' % (JOB, q), token=tok)
            check(st == 400, 'rounds?%s: want 400, got %d %r' % (q, st, obj))
        record(srv, tok, 7, expect=404)
        st, _, _ = srv.json('GET', '/v1/jobs/%s/rounds/0' % JOB, token='nope')
        check(st == 401, 'a record without the token: %d' % st)

        # Evaluations of version 2 (made by round 1).
        evals = [(100, {'loss': 0.5, 'accuracy': 0.8}), (300, {'loss': 0.25, 'accuracy': 0.9}),
                 (50, {'loss': 1.0})]
        for i, (s, m) in enumerate(evals):
            st, obj, _ = srv.json('POST', '/v1/jobs/%s/evaluations' % JOB,
                                  {'version': 2, 'samples': s, 'metrics': m}, token=clients[i],
                                  headers={'Idempotency-Key': 'ev-%d' % i})
            check(st == 202 and obj == {'version': 2, 'clients': i + 1},
                  'evaluation %d: %d %r' % (i, st, obj))
        # A resend with its key: the first answer; a second from the client: 409.
        st, obj, _ = srv.json('POST', '/v1/jobs/%s/evaluations' % JOB,
                              {'version': 2, 'samples': 100, 'metrics': {'loss': 0.5}},
                              token=clients[0], headers={'Idempotency-Key': 'ev-0'})
        check(st == 202 and obj == {'version': 2, 'clients': 1}, 'resend: %d %r' % (st, obj))
        st, obj, _ = srv.json('POST', '/v1/jobs/%s/evaluations' % JOB,
                              {'version': 2, 'samples': 5, 'metrics': {'loss': 9.0}},
                              token=clients[1])
        check(st == 409 and 'c1' in obj['error'], 'a second evaluation: %d %r' % (st, obj))
        for bad, want in (({'version': 9, 'samples': 1, 'metrics': {}}, 404),
                          ({'version': -1, 'samples': 1, 'metrics': {}}, 400),
                          ({'version': 2, 'samples': 0, 'metrics': {}}, 400),
                          ({'version': 2, 'samples': 1, 'metrics': {'x': 'y'}}, 400),
                          ({'version': 2, 'samples': 1}, 400)):
            st, obj, _ = srv.json('POST', '/v1/jobs/%s/evaluations' % JOB, bad,
                                  token=clients[3])
            check(st == want, 'evaluation %r: want %d, got %d %r' % (bad, want, st, obj))
        st, obj, _ = srv.json('POST', '/v1/jobs/%s/evaluations' % JOB,
                              {'version': 2, 'samples': 1, 'metrics': {}}, token='nope')
        check(st == 401, 'an evaluation without a credential: %d' % st)
        # The job token (no client id): each counted; here on version 1 (round 0's).
        for k in range(2):
            st, obj, _ = srv.json('POST', '/v1/jobs/%s/evaluations' % JOB,
                                  {'version': 1, 'samples': 2 + k, 'metrics': {'loss': k}},
                                  token=tok)
            check(st == 202 and obj == {'version': 1, 'clients': k + 1},
                  'a job-token evaluation: %d %r' % (st, obj))
        ev1 = record(srv, tok, 0)['evaluation']
        check(ev1['clients'] == 2 and ev1['samples'] == 5 and
              abs(ev1['metrics']['loss'] - 3 / 5) < 1e-12, 'round 0 evaluation: %r' % ev1)
        want = means(evals)

        def check_eval(ev, what):
            check(ev and ev['version'] == 2 and ev['clients'] == 3 and
                  ev['samples'] == sum(s for s, _ in evals), '%s: %r' % (what, ev))
            close(ev['metrics'], want, what)

        check_eval(record(srv, tok, 1)['evaluation'], 'round 1 evaluation')
        check_eval(srv.status(JOB, token=tok)['evaluation'], 'status evaluation')
        m = srv.metrics()
        for k, v in want.items():
            got = m.get('tributary_eval_metric{job="%s",name="%s"}' % (JOB, k))
            check(got is not None and abs(got - v) < 1e-9, '/metrics %s: %r, want %r' %
                  (k, got, v))
        check(m.get('tributary_eval_samples_total{job="%s"}' % JOB) == 455,
              '/metrics samples: %r' % {k: v for k, v in m.items() if 'eval' in k})

        # Round 2 half done, then kill -9: the records, the evaluations stay.
        srv.post_update(JOB, clients[0], 2, body, samples=4,
                        extra={'X-Tributary-Metrics': '{"loss": 2}'})
        before = [record(srv, tok, r) for r in (0, 1)]
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.proc = None
        srv.start()
        after = [record(srv, tok, r) for r in (0, 1)]
        check(after == before, 'records after kill -9:\n%r\nwant\n%r' % (after, before))
        check_eval(srv.status(JOB, token=tok)['evaluation'], 'evaluation after kill -9')
        r2 = record(srv, tok, 2)
        check(r2['state'] == 'open' and r2['received'] == 1 and r2['metrics_updates'] == 1 and
              r2['metrics'] == {'loss': 2.0} and r2['bytes'] == len(body),
              'round 2 after kill -9: %r' % r2)
        # The round ends after the restart: its means are over the kept and the new updates.
        srv.post_update(JOB, clients[1], 2, body, samples=6,
                        extra={'X-Tributary-Metrics': '{"loss": 0.5}'})
        srv.post_update(JOB, clients[2], 2, body, samples=10)
        srv.get_model(JOB, tok, '?after=2')
        r2 = record(srv, tok, 2)
        close(r2['metrics'], means([(4, {'loss': 2.0}), (6, {'loss': 0.5})]), 'round 2')
        check(r2['state'] == 'done' and r2['metrics_updates'] == 2 and
              r2['bytes'] == 3 * len(body), 'round 2 after the restart: %r' % r2)
        mdir = os.path.join(srv.data_dir, 'data', 'round-metrics')
        e.wait_for(lambda: not os.listdir(mdir), 10, 'the stored round\'s metrics file to go')
        st, obj, _ = srv.json('POST', '/v1/jobs/%s/evaluations' % JOB,
                              {'version': 2, 'samples': 5, 'metrics': {'loss': 9.0}},
                              token=clients[2])
        check(st == 409, 'a second evaluation after the restart: %d %r' % (st, obj))
        e.log('records and evaluations survive kill -9')

        # `tributary status` shows the evaluation under the job.
        out = subprocess.run([e.BIN, 'status', '--url', 'http://127.0.0.1:%d' % srv.port,
                              '--data-dir', os.path.join(srv.data_dir, 'data')],
                             capture_output=True, text=True, timeout=30)
        check(out.returncode == 0 and 'evaluation of v2: 3 clients, 450 samples' in out.stdout
              and 'loss=%.6g' % want['loss'] in out.stdout,
              'tributary status: %d %s%s' % (out.returncode, out.stdout, out.stderr))
        promtool_check(srv)
        fedbuff(srv, rng)
        name_cap(srv, rng)


def name_cap(srv, rng):
    """A round keeps at most 64 metric names: the update that would add a 65th is a 400."""
    tok = srv.create_job({'name': 'cap', 'clients_per_round': 10, 'tensors': SCHEMA})['token']
    body = e.raw_body(SCHEMA, e.random_model(rng, SCHEMA))
    for k in range(4):
        srv.post_update('cap', tok, 0, body, samples=1,
                        extra={'X-Tributary-Metrics': json.dumps({'m%d_%d' % (k, i): 1.0
                                                                  for i in range(16)})})
    st, obj, _ = srv.post_update('cap', tok, 0, body, samples=1, expect=400,
                                 extra={'X-Tributary-Metrics': '{"m0_0": 2, "new": 1}'})
    check('64' in obj['error'], 'the 65th name: %r' % obj)
    check(srv.status('cap', token=tok)['received'] == 4, 'the refused update was counted')
    srv.post_update('cap', tok, 0, body, samples=3, extra={'X-Tributary-Metrics': '{"m0_0": 2}'})
    rec = srv.json('GET', '/v1/jobs/cap/rounds/0', token=tok)[1]
    check(len(rec['metrics']) == 64 and rec['metrics']['m0_0'] == 1.75 and
          rec['received'] == 5, 'the capped round: %r' % {k: rec[k] for k in ('received',)})
    e.log('a round keeps 64 metric names; the 65th is a 400')


def promtool_check(srv):
    """The /metrics page (with the eval metrics) passes promtool, when it is installed."""
    if not shutil.which('promtool'):
        e.log('promtool not installed: its check skipped')
        return
    _, _, b = srv.request('GET', '/metrics', token=srv.admin)
    p = subprocess.run(['promtool', 'check', 'metrics'], input=b, capture_output=True,
                       timeout=30)
    bad = [ln for ln in (p.stdout + p.stderr).decode().splitlines() if 'eval' in ln]
    check(not bad, 'promtool on the eval metrics: %s' % bad)


def fedbuff(srv, rng):
    """FedBuff: one record per version, each with its updates' means."""
    k = 2
    tok = srv.create_job({'name': 'fbrec', 'algorithm': 'fedbuff', 'buffer_size': k,
                          'max_staleness': 4, 'update': 'delta', 'tensors': SCHEMA})['token']
    body = e.raw_body(SCHEMA, e.random_model(rng, SCHEMA))
    sent = {}
    for v in range(3):
        for i in range(k):
            samples, loss = 1 + 3 * i + v, 0.5 / (1 + i + v)
            st, _, b = srv.request('POST', '/v1/jobs/fbrec/updates', body,
                                      {'Content-Type': 'application/octet-stream',
                                       'X-Tributary-Round': str(v),
                                       'X-Tributary-Samples': str(samples),
                                       'X-Tributary-Metrics': json.dumps({'loss': loss})},
                                      tok)
            check(st == 202, 'fedbuff update: %d %r' % (st, b))
            sent.setdefault(json.loads(b)['round'], []).append((samples, {'loss': loss}))
        srv.get_model('fbrec', tok, '?after=%d' % v)
    st, page, _ = srv.json('GET', '/v1/jobs/fbrec/rounds', token=tok)
    check(st == 200, 'fedbuff rounds: %d %r' % (st, page))
    done = [r for r in page['rounds'] if r['state'] == 'done']
    check([r['round'] for r in done] == [0, 1, 2], 'fedbuff records: %r' % page)
    for r in done:
        close(r['metrics'], means(sent[r['round']]), 'fedbuff version %d' % r['round'])
    e.log('fedbuff: one record per version')


if __name__ == '__main__':
    e.main(run)
