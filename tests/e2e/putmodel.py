# SPDX-License-Identifier: MIT
# PUT a starting model (safetensors, raw or npz), refused PUTs leave it alone, then a round on top.
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [
        {'name': 'w1', 'shape': [6, 3], 'dtype': 'F32'},
        {'name': 'b1', 'shape': [3], 'dtype': 'F32'},
        {'name': 'w2', 'shape': [3, 2], 'dtype': 'F32'},
    ]
ST = 'application/x-safetensors'
RAW = 'application/octet-stream'
NPZ = 'application/x-npz'


def npz(d, compressed=False, dtype=np.float32):
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(
        b, **{k: np.asarray(v, dtype) for k, v in d.items()})
    return b.getvalue()


def put(srv, job, tok, body, ctype, expect):
    st, hd, b = srv.request('PUT', '/v1/jobs/%s/model' % job, body, {'Content-Type': ctype},
                            tok)
    check(st == expect, 'PUT model (%s, %d bytes): want %d, got %d %r' %
          (ctype, len(body), expect, st, b[:300]))
    return e.parse_json(b)


def npz_object(d):
    """An .npz whose w1 member is a pickled object array (np.save with allow_pickle)."""
    b = io.BytesIO()
    np.savez(b, **dict(d, w1=np.array([{'x': 1}] * 18, dtype=object).reshape(6, 3)))
    return b.getvalue()


def v0(srv, job, tok, want, what):
    _, hd, b = srv.get_model(job, tok, '?round=0')
    check(hd.get('x-tributary-round') == '0',
          '%s: version %r' % (what, hd.get('x-tributary-round')))
    _, hd2, b2 = srv.get_model(job, tok)
    check(b2 == b and hd2.get('x-tributary-round') == '0', '%s: latest model is not v0' % what)
    e.check_model(b, SCHEMA, {k: np.asarray(v, np.float64) for k, v in want.items()}, what)


def run():
    rng = np.random.default_rng(21)
    with e.Server() as srv:
        tok = srv.create_job({'name': 'warm', 'clients_per_round': 4, 'fan_in': 3,
                              'tensors': SCHEMA})['token']
        start = e.random_model(rng, SCHEMA, 2.0)
        obj = put(srv, 'warm', tok, e.st_encode(start, order=['w2', 'w1', 'b1']), ST, 200)
        check(obj == {'job': 'warm', 'round': 0}, 'PUT answer %r' % obj)
        v0(srv, 'warm', tok, start, 'v0 after a safetensors PUT')
        # Before the first update the starting model can be replaced, raw this time.
        start = e.random_model(rng, SCHEMA, 3.0)
        put(srv, 'warm', tok, e.raw_body(SCHEMA, start), RAW, 200)
        v0(srv, 'warm', tok, start, 'v0 after a raw PUT')
        # As .npz: numpy's np.savez (stored), and savez_compressed of float64 (narrowed).
        start = e.random_model(rng, SCHEMA, 5.0)
        put(srv, 'warm', tok, npz(start), NPZ, 200)
        v0(srv, 'warm', tok, start, 'v0 after an npz PUT')
        start = e.random_model(rng, SCHEMA, 6.0)
        put(srv, 'warm', tok, npz(start, True, np.float64), NPZ, 200)
        v0(srv, 'warm', tok, {k: np.float32(v) for k, v in start.items()},
           'v0 after a deflated float64 npz PUT')
        # With metadata in the header, by the admin token.
        start = e.random_model(rng, SCHEMA, 4.0)
        put(srv, 'warm', srv.admin, e.st_encode(start, metadata={'format': 'pt'}), ST, 200)
        v0(srv, 'warm', tok, start, 'v0 after a PUT with __metadata__')

        # Refused PUTs.
        flat = e.flatten(SCHEMA, start)
        nan = flat.copy()
        nan[5] = np.nan
        bad = [
                (e.st_encode(dict(start, w1=start['w1'].T)), ST, 422, 'transposed w1'),
                (e.st_encode({'w1': start['w1'], 'b1': start['b1']}), ST, 422, 'missing w2'),
                (e.st_encode(dict(start, x=np.ones(1))), ST, 422, 'extra tensor'),
                (e.st_encode(start, dtype='F16'), ST, 422, 'F16'),
                (e.st_encode(e.unflatten(SCHEMA, nan)), ST, 422, 'NaN in safetensors'),
                (nan.astype('<f4').tobytes(), RAW, 422, 'NaN in raw'),
                (e.raw_body(SCHEMA, start)[:-4], RAW, 422, 'raw 4 bytes short'),
                (e.raw_body(SCHEMA, start) + b'\0' * 4, RAW, 413, 'raw 4 bytes long'),
                (b'\xff' * 8 + b'{}', ST, 400, 'header length past the body'),
                (b'\x04\x00\x00\x00\x00\x00\x00\x00nope', ST, 400, 'header not JSON'),
                (e.raw_body(SCHEMA, start), 'text/plain', 415, 'text/plain'),
                (npz(dict(start, w1=start['w1'].reshape(3, 6))), NPZ, 422,
                 'npz w1 of shape [3, 6]'),
                (npz(dict(start, w1=start['w1'].T)), NPZ, 400, 'npz fortran-ordered w1'),
                (npz(dict(start, x=np.ones(1))), NPZ, 422, 'npz extra tensor'),
                (npz(start, True, np.float16), NPZ, 422, 'npz float16'),
                (npz(e.unflatten(SCHEMA, nan)), NPZ, 422, 'NaN in npz'),
                (npz(start)[:-30], NPZ, 400, 'npz cut short'),
                (b'PK\x03\x04' + b'\0' * 60, NPZ, 400, 'npz not a zip'),
                (npz_object(start), NPZ, 400, 'npz with a pickled object array'),
                (npz(start) + b'\0' * (1 << 21), NPZ, 413, 'npz too long'),
            ]
        wrong = []
        for body, ct, want, what in bad:
            st, hd, b = srv.request('PUT', '/v1/jobs/warm/model', body, {'Content-Type': ct},
                                    tok)
            if st != want:
                wrong.append('PUT %s: want %d, got %d %r' % (what, want, st, b[:200]))
            check(400 <= st < 500, 'PUT %s: got %d' % (what, st))
            check(isinstance(e.parse_json(b), dict) and 'error' in e.parse_json(b),
                  'PUT %s: no JSON error %r' % (what, b[:200]))
            v0(srv, 'warm', tok, start, 'v0 after a refused PUT (%s)' % what)
        st, _, _ = srv.request('PUT', '/v1/jobs/warm/model', e.raw_body(SCHEMA, start),
                               {'Content-Type': RAW}, 'wrong-token')
        check(st == 401, 'PUT with a wrong token: %d' % st)

        # A round: the model is the weighted mean of the updates (FedAvg replaces the model).
        ups = []
        for i in range(4):
            m = e.random_model(rng, SCHEMA, 1.0 + i)
            body, ct = (e.raw_body(SCHEMA, m), RAW) if i % 2 else (e.st_encode(m), ST)
            srv.post_update('warm', tok, 0, body, 10 * (i + 1), ct)
            ups.append((10 * (i + 1), m))
            if i == 0:
                obj = put(srv, 'warm', tok, e.raw_body(SCHEMA, start), RAW, 409)
                check(obj.get('round') == 0, '409 body %r' % obj)
                v0(srv, 'warm', tok, start, 'v0 after a PUT during round 0')
        _, hd, b = srv.get_model('warm', tok, '?after=0&timeout=30')
        e.check_model(b, SCHEMA, e.weighted_mean(ups), 'v1 over a PUT starting model')
        put(srv, 'warm', tok, e.st_encode(start), ST, 409)
        _, _, b0 = srv.get_model('warm', tok, '?round=0')
        e.check_model(b0, SCHEMA, {k: np.asarray(v, np.float64) for k, v in start.items()},
                      'v0 after the round')

        # A params-only job takes a raw starting model too, and it survives a restart.
        tp = srv.create_job({'name': 'flat', 'clients_per_round': 1, 'params': 33})['token']
        w = rng.standard_normal(33).astype(np.float32)
        put(srv, 'flat', tp, w.astype('<f4').tobytes(), RAW, 200)
        srv.restart()
        _, hd, b = srv.get_model('flat', tp)
        e.check_model(b, [{'name': 'weights', 'shape': [33]}], {'weights': w.astype(np.float64)},
                      'flat v0 after a restart')
        check(not wrong, '%d wrong statuses:\n  %s' % (len(wrong), '\n  '.join(wrong)))


if __name__ == '__main__':
    e.main(run)
