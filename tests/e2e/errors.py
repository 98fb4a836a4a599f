# SPDX-License-Identifier: MIT
# Every error status of the API (but 503, see arena_full.py), each followed by a check that
# the round and its aggregate are untouched; the model must be the mean of the 202s only.
import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check, http_head  # noqa: E402

JOB = 'errs'
SCHEMA = [
        {'name': 'w', 'shape': [4, 5], 'dtype': 'F32'},
        {'name': 'b', 'shape': [5], 'dtype': 'F32'},
    ]
N = 25
MODEL_BYTES = 4 * N
CPR = 3
UPD = '/v1/jobs/%s/updates' % JOB


class Errors:
    """Sends bad requests; after each, the job's round and counters must be unchanged."""

    def __init__(self, srv, token):
        self.srv = srv
        self.token = token
        self.seen = collections.Counter()  # status -> count
        self.reasons = collections.Counter()  # metrics reason -> expected count
        self.wrong = []  # statuses other than expected: reported together at the end

    def snapshot(self):
        s = self.srv.status(JOB)
        return (s['round'], s['model_round'], s['received'], s['accepted_total'])

    def expect(self, want, what, send, reason=None, round_in_body=None):
        before = self.snapshot()
        st, hd, body = send()
        if st != want and 400 <= st < 500 and st not in (401, 409):
            # A wrong but harmless error status: note it, keep testing the others.
            self.wrong.append('%s: want %d, got %d %r' % (what, want, st, body[:200]))
            e.log('WRONG STATUS ' + self.wrong[-1])
            want = st
            if reason:  # an update-path rejection: counted under the status's reason
                reason = {400: 'malformed', 404: 'unknown_job', 411: 'no_length',
                          413: 'too_large', 415: 'media_type', 422: 'shape'}.get(st)
        check(st == want, '%s: want %d, got %d %r' % (what, want, st, body[:300]))
        obj = e.parse_json(body)
        check(isinstance(obj, dict) and isinstance(obj.get('error'), str) and obj['error'],
              '%s: %d without a JSON {"error": ...} body: %r' % (what, st, body[:300]))
        check(hd.get('content-type', '').startswith('application/json'),
              '%s: error content type %r' % (what, hd.get('content-type')))
        if round_in_body is not None:
            check(obj.get('round') == round_in_body, '%s: body round %r, want %d' %
                  (what, obj.get('round'), round_in_body))
        after = self.snapshot()
        check(after == before, '%s: job changed from %s to %s (round, model_round, received, '
              'accepted_total)' % (what, before, after))
        self.seen[want] += 1
        if reason:
            self.reasons[reason] += 1
        return obj

    # --- senders ---

    def upd(self, body, headers=None, token='job', method='POST', path=UPD):
        h = {'Content-Type': 'application/octet-stream', 'X-Tributary-Round': None}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        tok = self.token if token == 'job' else token
        return lambda: self.srv.request(method, path, body, h, tok)

    def raw(self, data):
        def send():
            r = e.raw_request(self.srv.port, data)
            return r.status, r.headers, r.body
        return send

    def req(self, method, path, body=None, headers=None, token=None):
        return lambda: self.srv.request(method, path, body, headers, token)


def good(rng, scale):
    return e.random_model(rng, SCHEMA, scale)


def run():
    rng = np.random.default_rng(7)
    with e.Server() as srv:
        job = srv.create_job({'name': JOB, 'clients_per_round': CPR, 'fan_in': 2,
                              'tensors': SCHEMA})
        tok = job['token']
        other = srv.create_job({'name': 'other', 'clients_per_round': 1, 'params': 3})
        E = Errors(srv, tok)
        accepted = []  # (weight, model) of every 202, this round

        def accept(rnd, samples, fmt, m=None, token=None):
            m = m if m is not None else good(rng, 1 + len(accepted))
            if fmt == 'raw':
                body, ct = e.raw_body(SCHEMA, m), 'application/octet-stream'
            else:
                body, ct = e.st_encode(m, order=['b', 'w']), 'application/x-safetensors'
            st, obj, _ = srv.post_update(JOB, token or tok, rnd, body, samples, ct)
            accepted.append((samples, m))
            check(obj == {'round': rnd, 'received': len(accepted)}, 'answer %r' % obj)

        def all_errors(rnd, label):
            """Every rejectable update and request, at round @rnd."""
            m = good(rng, 100.0)   # would visibly move the mean if it leaked in
            raw = e.raw_body(SCHEMA, m)
            st = e.st_encode(m)
            R = {'X-Tributary-Round': str(rnd)}
            RS = {'X-Tributary-Round': str(rnd), 'Content-Type': 'application/x-safetensors'}
            x = lambda s: '%s: %s' % (label, s)  # noqa: E731

            # 400: the request head and the update's own headers.
            E.expect(400, x('garbage request line'), E.raw(b'GARBAGE\r\n\r\n'),
                     reason='malformed')
            E.expect(400, x('header line without a colon'), E.raw(
                    b'POST ' + UPD.encode() + b' HTTP/1.1\r\nHost: x\r\nno colon here\r\n'
                    b'Content-Length: 0\r\n\r\n'), reason='malformed')
            E.expect(400, x('bad Content-Length'), E.raw(http_head('POST', UPD, {
                    'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': rnd,
                    'Content-Type': 'application/octet-stream', 'Content-Length': '1x0'})),
                    reason='malformed')
            E.expect(400, x('HTTP/2.0 request line'), E.raw(
                    b'GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n'), reason='malformed')
            E.expect(400, x('missing X-Tributary-Round'), E.upd(raw), reason='malformed')
            for bad in ('abc', '-1', '1.0', '', '99999999999999999999', '0x1'):
                E.expect(400, x('X-Tributary-Round %r' % bad),
                         E.upd(raw, {'X-Tributary-Round': bad}), reason='malformed')
            # '' : an empty header is sent, not absent (absent means 1).
            for bad in ('0', '-3', 'abc', '1.5', '99999999999999999999', ''):
                E.expect(400, x('X-Tributary-Samples %r' % bad),
                         E.upd(raw, dict(R, **{'X-Tributary-Samples': bad})),
                         reason='malformed')
            # 400: malformed safetensors.
            for what, body in [
                    ('truncated length', b'\x10\x00\x00'),
                    ('header length past the body', b'\xff\xff\x00\x00\x00\x00\x00\x00{}'),
                    ('header not JSON', b'\x08\x00\x00\x00\x00\x00\x00\x00{"w":[ ' + b'\0' * 100),
                    ('header not an object', b'\x08\x00\x00\x00\x00\x00\x00\x00[1,2,3] '),
                    ('data_offsets out of range', st_with(m, offsets={'w': [0, 4000]})),
                    ('data_offsets not matching the shape', st_with(m, shapes={'w': [4, 4]})),
                    ('missing dtype', st_with(m, drop='dtype')),
                    ('missing shape', st_with(m, drop='shape')),
                    ('tensors sharing bytes', st_with(m, offsets={'b': [60, 80]})),
                ]:
                E.expect(400, x('safetensors ' + what), E.upd(body, RS), reason='malformed')
            # 400: other endpoints' arguments.
            for q in ('?round=abc', '?round=-1', '?after=x', '?after=0&timeout=61',
                      '?after=0&timeout=abc'):
                E.expect(400, x('GET model' + q),
                         E.req('GET', '/v1/jobs/%s/model%s' % (JOB, q), token=tok))

            # 401.
            E.expect(401, x('update without a token'), E.upd(raw, R, token=None),
                     reason='auth')
            E.expect(401, x('update with a wrong token'), E.upd(raw, R, token=tok + 'x'),
                     reason='auth')
            E.expect(401, x('update with a truncated token'), E.upd(raw, R, token=tok[:-1]),
                     reason='auth')
            E.expect(401, x("update with another job's token"),
                     E.upd(raw, R, token=other['token']), reason='auth')
            E.expect(401, x('update with Basic auth'), E.upd(raw, dict(
                    R, Authorization='Basic ' + tok), token=None), reason='auth')
            E.expect(401, x('update with an empty bearer'), E.upd(raw, dict(
                    R, Authorization='Bearer '), token=None), reason='auth')
            E.expect(401, x('GET model without a token'),
                     E.req('GET', '/v1/jobs/%s/model' % JOB), reason='auth')
            E.expect(401, x('GET status with a wrong token'),
                     E.req('GET', '/v1/jobs/' + JOB, token='nope'), reason='auth')
            E.expect(401, x('PUT model without a token'), E.req(
                    'PUT', '/v1/jobs/%s/model' % JOB, raw,
                    {'Content-Type': 'application/octet-stream'}), reason='auth')
            # An unknown job is not told apart from a known one without the admin token.
            E.expect(401, x('update to an unknown job without a token'), E.upd(
                    raw, R, token=None, path='/v1/jobs/nojob/updates'), reason='auth')
            E.expect(401, x("update to an unknown job with another job's token"), E.upd(
                    raw, R, path='/v1/jobs/nojob/updates'), reason='auth')
            E.expect(401, x('status of an unknown job with a wrong token'),
                     E.req('GET', '/v1/jobs/nojob', token='nope'), reason='auth')
            E.expect(401, x('list jobs with a job token'), E.req('GET', '/v1/jobs', token=tok),
                     reason='auth')
            spec = json.dumps({'name': 'sneaky', 'clients_per_round': 1, 'params': 1}).encode()
            E.expect(401, x('create a job without a token'), E.req('POST', '/v1/jobs', spec),
                     reason='auth')
            E.expect(401, x('create a job with a job token'), E.req(
                    'POST', '/v1/jobs', spec, token=tok), reason='auth')

            # 404.
            # With the admin token (a job's token gets 401 there, above).
            E.expect(404, x('update to an unknown job'), E.upd(
                    raw, R, token=srv.admin, path='/v1/jobs/nojob/updates'),
                    reason='unknown_job')
            E.expect(404, x('model of an unknown job'), E.req(
                    'GET', '/v1/jobs/nojob/model', token=srv.admin), reason='unknown_job')
            E.expect(404, x('status of an unknown job'), E.req(
                    'GET', '/v1/jobs/nojob', token=srv.admin), reason='unknown_job')
            for p in ('/', '/v1', '/v1/nope', '/v2/jobs', '/v1/jobs/%s/nope' % JOB,
                      '/v1/jobs/%s/updates/x' % JOB, '/healthz/x'):
                E.expect(404, x('GET ' + p), E.req('GET', p, token=srv.admin))
            E.expect(404, x('GET model ?round=999'), E.req(
                    'GET', '/v1/jobs/%s/model?round=999' % JOB, token=tok))

            # 403: deleting a job is the admin's (job_lifecycle.py deletes).
            E.expect(403, x('DELETE the job with its token'),
                     E.req('DELETE', '/v1/jobs/' + JOB, token=tok), reason='auth')

            # 405.
            for meth, p in (('GET', UPD), ('PUT', UPD),
                            ('PUT', '/v1/jobs'), ('DELETE', '/v1/jobs'), ('POST', '/healthz'),
                            ('POST', '/metrics'), ('POST', '/v1/jobs/%s/model' % JOB),
                            ('DELETE', '/v1/jobs/%s/model' % JOB), ('POST', '/v1/jobs/' + JOB)):
                E.expect(405, x('%s %s' % (meth, p)), E.req(meth, p, token=tok))

            # 409: stale and future rounds name the current round.
            if rnd > 0:
                E.expect(409, x('stale round'), E.upd(raw, {'X-Tributary-Round': str(rnd - 1)}),
                         reason='round', round_in_body=rnd)
                E.expect(409, x('round 0 (stale, safetensors)'), E.upd(
                        st, dict(RS, **{'X-Tributary-Round': '0'})),
                        reason='round', round_in_body=rnd)
            E.expect(409, x('future round'), E.upd(raw, {'X-Tributary-Round': str(rnd + 1)}),
                     reason='round', round_in_body=rnd)
            E.expect(409, x('far future round'), E.upd(raw, {'X-Tributary-Round': '4000000'}),
                     reason='round', round_in_body=rnd)
            E.expect(409, x('duplicate job name'), E.req('POST', '/v1/jobs', json.dumps(
                    {'name': JOB, 'clients_per_round': 1, 'params': 1}).encode(),
                    {'Content-Type': 'application/json'}, srv.admin))
            E.expect(409, x('job name differing only by case'), E.req('POST', '/v1/jobs',
                    json.dumps({'name': JOB.upper(), 'clients_per_round': 1,
                                'params': 1}).encode(),
                    {'Content-Type': 'application/json'}, srv.admin))

            # 411: no Content-Length, or chunked.
            E.expect(411, x('update without Content-Length'), E.raw(http_head('POST', UPD, {
                    'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': rnd,
                    'Content-Type': 'application/octet-stream'})), reason='no_length')
            chunk = b'%x\r\n' % len(raw) + raw + b'\r\n0\r\n\r\n'
            E.expect(411, x('chunked update'), E.raw(http_head('POST', UPD, {
                    'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': rnd,
                    'Content-Type': 'application/octet-stream',
                    'Transfer-Encoding': 'chunked'}) + chunk), reason='no_length')
            E.expect(411, x('create a job without Content-Length'), E.raw(http_head(
                    'POST', '/v1/jobs', {'Authorization': 'Bearer ' + srv.admin})))

            # 413: bodies larger than the model.
            E.expect(413, x('raw body 4 bytes larger than the model'),
                     E.upd(raw + b'\0\0\0\0', R), reason='too_large')
            E.expect(413, x('safetensors larger than the model + 1 MiB'),
                     E.upd(st + b' ' * (1 << 20), RS), reason='too_large')
            E.expect(413, x('job definition over 1 MiB'), E.req(
                    'POST', '/v1/jobs', b'{"name":"big","x":"' + b'a' * (1 << 20) + b'"}',
                    {'Content-Type': 'application/json'}, srv.admin))

            # 415.
            for ct in ('text/plain', 'application/json', 'application/x-www-form-urlencoded',
                       'application/octet-streamx', None):
                E.expect(415, x('Content-Type %r' % ct), E.upd(raw, dict(R, **{
                        'Content-Type': ct})), reason='media_type')
            E.expect(415, x('PUT model as text/plain'), E.req(
                    'PUT', '/v1/jobs/%s/model' % JOB, raw, {'Content-Type': 'text/plain'}, tok))

            # 422: size, shape, dtype, names, values.
            E.expect(422, x('raw body 4 bytes short'), E.upd(raw[:-4], R), reason='shape')
            E.expect(422, x('empty raw body'), E.upd(b'', R), reason='shape')
            bad_shape = dict(m, w=m['w'].reshape(5, 4))
            E.expect(422, x('safetensors with a transposed shape'),
                     E.upd(e.st_encode(bad_shape), RS), reason='shape')
            E.expect(422, x('safetensors missing a tensor'),
                     E.upd(e.st_encode({'w': m['w']}), RS), reason='shape')
            E.expect(422, x('safetensors with an extra tensor'), E.upd(e.st_encode(
                    dict(m, extra=np.ones(2, np.float32))), RS), reason='shape')
            E.expect(422, x('safetensors with a renamed tensor'), E.upd(e.st_encode(
                    {'w': m['w'], 'B': m['b']}), RS), reason='shape')
            # F16 and BF16 updates are taken (compressed.py); int8 needs its scale tensor.
            E.expect(422, x('safetensors in I8 without scales'),
                     E.upd(e.st_encode(m, dtype='I8'), RS), reason='shape')
            E.expect(422, x('safetensors with dtype "Q7"'), E.upd(st_with(m, dtype_name='Q7'),
                     RS), reason='shape')
            for v, where in ((np.nan, 0), (np.inf, N - 1), (-np.inf, 7)):
                f = e.flatten(SCHEMA, m).copy()
                f[where] = v
                E.expect(422, x('raw with %r at %d' % (v, where)),
                         E.upd(f.astype('<f4').tobytes(), R), reason='non_finite')
                t = e.unflatten(SCHEMA, f)
                E.expect(422, x('safetensors with %r at %d' % (v, where)),
                         E.upd(e.st_encode(t, order=['b', 'w']), RS), reason='non_finite')
            # A signalling NaN bit pattern, and a NaN in the last tensor's last element.
            f = bytearray(raw)
            f[-4:] = b'\x01\x00\x80\x7f'
            E.expect(422, x('raw with a signalling NaN'), E.upd(bytes(f), R),
                     reason='non_finite')

            # 431: a head over 16 KiB.
            E.expect(431, x('a 20 KiB header'), E.raw(http_head('GET', '/healthz', {
                    'X-Padding': 'p' * 20000})), reason='malformed')
            # A kept header longer than its field: Authorization holds 255 bytes (README).
            E.expect(431, x('a 10 KiB Authorization'), E.raw(http_head('GET', '/v1/jobs/' + JOB, {
                    'Authorization': 'Bearer ' + 'a' * 10240})), reason='malformed')
            E.expect(431, x('a 20 KiB path'), E.raw(http_head(
                    'GET', '/v1/jobs/' + 'j' * 20000, {})), reason='malformed')

            # A client that goes away in the middle of its body leaves nothing behind.
            s = e.raw_connect(srv.port)
            s.sendall(http_head('POST', UPD, {
                    'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': rnd,
                    'Content-Type': 'application/octet-stream',
                    'Content-Length': len(raw)}) + raw[:len(raw) // 2])
            s.close()
            srv.healthy()

        # Round 0: errors before the first update (no tree yet), between updates
        # (functions alive) and before the last one.
        all_errors(0, 'round 0, empty')
        accept(0, 2, 'raw')
        all_errors(0, 'round 0, 1 received')
        accept(0, 5, 'st', token=srv.admin)   # the admin token works on updates too
        E.expect(409, 'PUT model during round 0', E.req('PUT', '/v1/jobs/%s/model' % JOB,
                e.raw_body(SCHEMA, good(rng, 1)), {'Content-Type': 'application/octet-stream'},
                tok), round_in_body=0)
        all_errors(0, 'round 0, 2 received')
        accept(0, 1, 'raw')
        _, hd, b = srv.get_model(JOB, tok, '?after=0&timeout=30')
        check(hd.get('x-tributary-round') == '1', 'model version %r' %
              hd.get('x-tributary-round'))
        e.check_model(b, SCHEMA, e.weighted_mean(accepted), 'model v1')
        v1 = b
        accepted.clear()

        # Round 1: stale round 0 now answers 409; the starting model is frozen.
        all_errors(1, 'round 1, empty')
        E.expect(409, 'PUT model after round 0', E.req('PUT', '/v1/jobs/%s/model' % JOB,
                e.raw_body(SCHEMA, good(rng, 1)), {'Content-Type': 'application/octet-stream'},
                tok), round_in_body=1)
        accept(1, 3, 'st')
        accept(1, 1000, 'raw')
        all_errors(1, 'round 1, 2 received')
        accept(1, 7, 'st')
        _, hd, b = srv.get_model(JOB, tok, '?after=1&timeout=30')
        check(hd.get('x-tributary-round') == '2', 'model version %r' %
              hd.get('x-tributary-round'))
        e.check_model(b, SCHEMA, e.weighted_mean(accepted), 'model v2')
        _, _, b1 = srv.get_model(JOB, tok, '?round=1')
        check(b1 == v1, 'model v1 changed after round 1')

        # Job creation: 400 names the field.
        for spec, field in [
                ({'name': 'a', 'clients_per_round': 1, 'params': 1, 'bogus': 1}, 'bogus'),
                ({'name': '-a', 'clients_per_round': 1, 'params': 1}, 'name'),
                ({'name': '.a', 'clients_per_round': 1, 'params': 1}, 'name'),
                ({'name': 'a/b', 'clients_per_round': 1, 'params': 1}, 'name'),
                ({'name': '', 'clients_per_round': 1, 'params': 1}, 'name'),
                ({'name': 'x' * 64, 'clients_per_round': 1, 'params': 1}, 'name'),
                ({'name': 7, 'clients_per_round': 1, 'params': 1}, 'name'),
                ({'clients_per_round': 1, 'params': 1}, 'name'),
                ({'name': 'a', 'params': 1}, 'clients_per_round'),
                ({'name': 'a', 'clients_per_round': 0, 'params': 1}, 'clients_per_round'),
                ({'name': 'a', 'clients_per_round': '3', 'params': 1}, 'clients_per_round'),
                ({'name': 'a', 'clients_per_round': 1.5, 'params': 1}, 'clients_per_round'),
                ({'name': 'a', 'clients_per_round': 1, 'params': 1, 'algorithm': 'no_such_rule'},
                 'algorithm'),
                ({'name': 'a', 'clients_per_round': 1, 'params': 1, 'fan_in': 0}, 'fan_in'),
                ({'name': 'a', 'clients_per_round': 1, 'params': 1, 'fan_in': 'x'}, 'fan_in'),
                ({'name': 'a', 'clients_per_round': 1}, 'params'),
                ({'name': 'a', 'clients_per_round': 1, 'params': 1, 'tensors': SCHEMA}, 'params'),
                ({'name': 'a', 'clients_per_round': 1, 'params': 0}, 'params'),
                ({'name': 'a', 'clients_per_round': 1, 'params': -5}, 'params'),
                ({'name': 'a', 'clients_per_round': 1, 'tensors': []}, 'tensors'),
                ({'name': 'a', 'clients_per_round': 1, 'tensors': [
                        {'name': 'w', 'shape': [2], 'dtype': 'F64'}]}, 'dtype'),
                ({'name': 'a', 'clients_per_round': 1, 'tensors': [
                        {'name': 'w', 'shape': [2], 'dtype': 'F32'},
                        {'name': 'w', 'shape': [3], 'dtype': 'F32'}]}, 'duplicate'),
                ({'name': 'a', 'clients_per_round': 1, 'tensors': [
                        {'name': 'w', 'shape': [0], 'dtype': 'F32'}]}, 'shape'),
                ({'name': 'a', 'clients_per_round': 1, 'params': 1 << 30}, 'arena'),
            ]:
            obj = E.expect(400, 'create %s' % json.dumps(spec)[:80], E.req(
                    'POST', '/v1/jobs', json.dumps(spec).encode(),
                    {'Content-Type': 'application/json'}, srv.admin))
            check(field in obj['error'], 'create %s: the error does not name %r: %r' %
                  (spec, field, obj['error']))
        for body in (b'', b'not json', b'[1,2]', b'{"name":'):
            E.expect(400, 'create with body %r' % body, E.req(
                    'POST', '/v1/jobs', body, {'Content-Type': 'application/json'}, srv.admin))
        st, obj, _ = srv.json('GET', '/v1/jobs', token=srv.admin)
        check(sorted(j['job'] for j in obj['jobs']) == [JOB, 'other'],
              'jobs after refused creations: %r' % obj)

        # An update whose round closes while its body is arriving: 409 naming the new round,
        # and the closed round's model is the mean of the two that made it.
        late_tok = srv.create_job({'name': 'late', 'clients_per_round': 2, 'tensors': SCHEMA})[
                'token']
        m = good(rng, 50.0)
        raw = e.raw_body(SCHEMA, m)
        s = e.raw_connect(srv.port, timeout=30)
        s.sendall(http_head('POST', '/v1/jobs/late/updates', {
                'Authorization': 'Bearer ' + late_tok, 'X-Tributary-Round': 0,
                'Content-Type': 'application/octet-stream', 'Content-Length': len(raw)}) +
                raw[:10])
        e.wait_for(lambda: srv.metrics()['tributary_arena_slots'] >= 1, 10,
                   'the slow upload to take a slot')
        ups = [(3, good(rng, 1.0)), (4, good(rng, 2.0))]
        for w, mm in ups:
            srv.post_update('late', late_tok, 0, e.raw_body(SCHEMA, mm), w)
        s.sendall(raw[10:])
        resp, _ = e.read_response(s)
        s.close()
        check(resp.status == 409 and (resp.json() or {}).get('round') == 1,
              'update finished after its round closed: %d %r' % (resp.status, resp.body))
        E.reasons['round'] += 1
        _, _, b = srv.get_model('late', late_tok, '?after=0&timeout=30')
        e.check_model(b, SCHEMA, e.weighted_mean(ups), 'late job v1')
        check(srv.status('late')['received'] == 0, 'late job: the refused update was counted')

        # Every status but 503 (arena_full.py) was produced; the metrics counted them.
        want = {400, 401, 404, 405, 409, 411, 413, 415, 422, 431}
        check(want <= set(E.seen), 'statuses never produced: %s' % (want - set(E.seen)))
        mt = srv.metrics()
        check(mt['tributary_updates_accepted_total'] == 8,
              'accepted_total %r, want 8' % mt['tributary_updates_accepted_total'])
        for reason in ('round', 'too_large', 'media_type', 'shape', 'non_finite', 'no_length',
                       'malformed', 'auth', 'unknown_job'):
            got = mt.get('tributary_updates_rejected_total{reason="%s"}' % reason)
            check(got == E.reasons[reason], 'rejected{reason="%s"} = %r, want %d' %
                  (reason, got, E.reasons[reason]))
        check(mt['tributary_arena_slots'] == 0, 'arena slots still live: %r' %
              mt['tributary_arena_slots'])
        # /metrics and /healthz need no token: they name no job (no --metrics-jobs here).
        for path in ('/metrics', '/healthz'):
            st, _, b = srv.request('GET', path)
            txt = b.decode()
            check(st == 200 and 'job="' not in txt and
                  not any('"%s"' % n in txt for n in (JOB, 'other', 'late')),
                  '%s without a token names a job: %r' % (path, b[:2000]))
        check('tributary_job_round{job="%s"}' % JOB in mt, 'admin /metrics names no job')
        e.log('statuses produced: %s' % dict(sorted(E.seen.items())))
        check(not E.wrong, '%d wrong statuses:\n  %s' % (len(E.wrong), '\n  '.join(E.wrong)))

    # --metrics-jobs: the operator lets /metrics name jobs to anyone.
    with e.Server(extra=['--metrics-jobs']) as srv:
        srv.create_job({'name': 'named', 'clients_per_round': 1, 'params': 1})
        mt = srv.metrics(admin=False)
        check(mt.get('tributary_job_round{job="named"}') == 0,
              '--metrics-jobs: /metrics without a token does not name the job')


def st_with(m, offsets=None, shapes=None, drop=None, dtype_name=None):
    """A safetensors file of @m with one header entry spoiled."""
    buf = e.st_encode(m)
    (hl,) = np.frombuffer(buf[:8], '<u8')
    hdr = json.loads(buf[8:8 + int(hl)])
    data = buf[8 + int(hl):]
    for k, v in (offsets or {}).items():
        hdr[k]['data_offsets'] = v
    for k, v in (shapes or {}).items():
        hdr[k]['shape'] = v
    if drop:
        del hdr['w'][drop]
    if dtype_name:
        hdr['w']['dtype'] = dtype_name
    h = json.dumps(hdr).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return len(h).to_bytes(8, 'little') + h + data


if __name__ == '__main__':
    e.main(run)
