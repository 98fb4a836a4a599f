# SPDX-License-Identifier: MIT
# Finite inputs give finite models: updates whose weighted values could overflow a round's sum
# (|samples x value| over 2^80, see fn_fold.h) get 422 naming the limit and leave the job as it
# was; updates at the limit give the exact mean.
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

N = 8
SCHEMA = [{'name': 'weights', 'shape': [N], 'dtype': 'F32'}]
ST = 'application/x-safetensors'


def st_entries(entries):
    """entries: [(name, dtype, shape, raw bytes)] -> safetensors bytes."""
    hdr, blobs, off = {}, [], 0
    for name, dt, shape, raw in entries:
        hdr[name] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)


def raw(v):
    return np.full(N, v, '<f4').tobytes()


def refused(srv, tok, body, samples, what, ctype='application/octet-stream'):
    before = srv.status('fin')
    _, obj, _ = srv.post_update('fin', tok, 0, body, samples, ctype, expect=422)
    check('2^80' in obj['error'], '%s: the 422 does not name the limit: %r' % (what, obj))
    after = srv.status('fin')
    check((after['round'], after['received']) == (before['round'], before['received']),
          '%s: the job changed: %r -> %r' % (what, before, after))
    e.log('%s: 422 %s' % (what, obj['error']))


def run():
    with e.Server() as srv:
        job = srv.create_job({'name': 'fin', 'clients_per_round': 2, 'params': N})
        tok = job['token']
        # The attacks: 3e38 x 2 samples, twice; an I8 scale of 3e38; w·x over f32's range.
        refused(srv, tok, raw(3e38), 2, 'raw 3e38 x 2 samples')
        refused(srv, tok, raw(3e38), 2, 'raw 3e38 x 2 samples, again')
        q = np.arange(N) - 4
        refused(srv, tok, st_entries([('weights', 'I8', [N], q.astype('i1').tobytes()),
                                      ('weights.scale', 'F32', [],
                                       np.float32(3e38).tobytes())]), 2, 'I8 scale 3e38', ST)
        refused(srv, tok, raw(1e30), 1 << 40, 'w·x = 2^40 x 1e30')
        # One value over the limit is enough, and the limit is per weight: 2^40 x 2^41 = 2^81.
        body = np.zeros(N, '<f4')
        body[5] = 2.0 ** 41
        refused(srv, tok, body.tobytes(), 1 << 40, 'one value 2^41 x 2^40 samples')
        # A starting model is bounded the same way (weight 1): a server optimiser adds to it.
        st, hd, b = srv.request('PUT', '/v1/jobs/fin/model', raw(1e30),
                                {'Content-Type': 'application/octet-stream'}, tok)
        check(st == 422 and b'2^80' in b, 'PUT model 1e30: %d %r' % (st, b[:200]))
        # DP noise is bounded the same way: its stddev dp_noise_multiplier x clip_norm.
        spec = {'name': 'findp', 'clients_per_round': 1, 'params': N, 'clip_norm': 3e38,
                'dp_noise_multiplier': 1.0}
        obj = srv.create_job(spec, expect=400)
        check('2^80' in obj['error'], 'DP with clip_norm 3e38: %r' % obj)
        # At the limit: 2^40 samples x 2^40 = 2^80 each; the sum 2^81 is finite, the mean exact.
        a = np.full(N, 2.0 ** 40, '<f4')
        c = np.full(N, -(2.0 ** 40), '<f4')
        c[0] = 2.0 ** 40
        srv.post_update('fin', tok, 0, a.tobytes(), 1 << 40)
        srv.post_update('fin', tok, 0, c.tobytes(), 1 << 40)
        _, _, buf = srv.get_model('fin', tok, '?after=0&timeout=30')
        _, got, _ = e.st_decode(buf)
        want = (a.astype(np.float64) + c.astype(np.float64)) / 2
        check(np.all(np.isfinite(got['weights'])), 'model not finite: %r' % got['weights'])
        check(np.array_equal(got['weights'], want), 'model %r, want %r' % (got['weights'], want))
        # An unweighted job bounds the value alone: 2^40 samples do not count.
        job = srv.create_job({'name': 'finu', 'clients_per_round': 1, 'params': N,
                              'weighted': False})
        srv.post_update('finu', job['token'], 0, raw(1e20), 1 << 40)
        _, _, buf = srv.get_model('finu', job['token'], '?after=0&timeout=30')
        _, got, _ = e.st_decode(buf)
        check(np.all(got['weights'] == np.float32(1e20)), 'unweighted model %r' % got['weights'])
        srv.check_log()


if __name__ == '__main__':
    e.main(run)
