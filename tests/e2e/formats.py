# SPDX-License-Identifier: MIT
# NumPy bodies: .npy and .npz updates (np.save, np.savez, np.savez_compressed, float64, int8 with
# a scale) mixed with safetensors and raw in one round give numpy's weighted mean; hostile .npy
# and .npz bodies are refused with a 400 (or a 422 naming the tensor) and nothing is counted;
# GET /model honours Accept (safetensors, npz, raw float32; 406 otherwise).
import io
import os
import signal
import struct
import sys
import threading
import zipfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [33, 9], 'dtype': 'F32'},
          {'name': 'b', 'shape': [1001], 'dtype': 'F32'}]
ONE = [{'name': 'weights', 'shape': [777], 'dtype': 'F32'}]
NPY, NPZ, ST = 'application/x-npy', 'application/x-npz', 'application/x-safetensors'


def npy(a):
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def npz(d, compressed=False):
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(b, **d)
    return b.getvalue()


def zip_raw(members, flags=0, comp_size=None):
    """A zip by hand: members [(name, method, payload bytes, declared size, crc)]."""
    out, cd = b'', b''
    for name, method, payload, size, crc in members:
        nm = name.encode()
        local = struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, flags, method, 0, 0x21, crc,
                            len(payload), size, len(nm), 0)
        cd += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 20, 20, flags, method, 0, 0x21,
                          crc, comp_size if comp_size is not None else len(payload), size,
                          len(nm), 0, 0, 0, 0, 0, len(out)) + nm
        out += local + nm + payload
    end = struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, len(members), len(members), len(cd),
                      len(out), 0)
    return out + cd + end


def deflate(raw):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(raw) + c.flush()


def hostile(srv, tok, m):
    """Each body refused, with its status and a word its message must hold."""
    good = npy(m['weights'])
    hdr_end = good.index(b'\n') + 1
    cases = []
    cases.append(('bad magic', b'\x93NUMPX' + good[6:], 400, 'magic'))
    cases.append(('version 9.0', good[:6] + b'\x09\x00' + good[8:], 400, 'version'))
    cases.append(('header length past the body', good[:8] + struct.pack('<H', 0xfff0) +
                  good[10:], 400, 'past'))
    obj = np.empty(3, dtype=object)
    obj[:] = [1, 'x', None]
    b = io.BytesIO()
    np.save(b, obj, allow_pickle=True)
    cases.append(('object array (pickle)', b.getvalue(), 400, 'object arrays'))
    cases.append(('big-endian', npy(m['weights'].astype('>f4')), 400, 'big-endian'))
    # int16 is no dtype of Tributary's (400); int32 is (sparse indices, frl rankings), never a float job's value (422).
    cases.append(('int16', npy(m['weights'].astype('<i2')), 400, "'<i2'"))
    cases.append(('int32', npy(m['weights'].astype('<i4')), 422, 'I32'))
    cases.append(('uint32', npy(m['weights'].astype('<u4')), 400, "'<u4'"))
    fo = good[:hdr_end].replace(b"'fortran_order': False", b"'fortran_order': True ")
    cases.append(('fortran_order True', fo + good[hdr_end:], 400, 'fortran_order'))
    cases.append(('short data', good[:-4], 400, 'needs'))
    cases.append(('wrong shape', npy(m['weights'][:-1]), 422, 'weights'))
    for what, body, status, word in cases:
        st, o, _ = srv.post_update('one', tok, 0, body, 1, NPY, expect=status)
        check(word in o.get('error', ''), '%s: %r' % (what, o))
        e.log('npy %s: %d %s' % (what, st, o['error'][:110]))
    return cases


def hostile_npz(srv, tok, m):
    f32 = {k: v.astype('<f4') for k, v in m.items()}
    good = npz(f32)
    w_npy = npy(f32['w'])
    b_npy = npy(f32['b'])
    cases = []
    # CRC: one data byte flipped in a stored member.
    bad = bytearray(good)
    bad[good.index(b'b.npy') + 5 + 20 + 200] ^= 1
    cases.append(('CRC mismatch', bytes(bad), 400, 'CRC'))
    # A zip bomb: the deflate stream holds 64 MiB more than the declared size.
    bomb = deflate(b_npy + b'\0' * (64 << 20))
    cases.append(('zip bomb', zip_raw([('w.npy', 0, w_npy, len(w_npy), zlib.crc32(w_npy)),
                                        ('b.npy', 8, bomb, len(b_npy), zlib.crc32(b_npy))]),
                  400, 'zip bomb'))
    # Declared size not the tensor's bytes.
    cases.append(('declared size', zip_raw([
        ('w.npy', 0, w_npy, len(w_npy), zlib.crc32(w_npy)),
        ('b.npy', 8, deflate(b_npy + b'\0' * 8), len(b_npy) + 8,
         zlib.crc32(b_npy + b'\0' * 8))]), 400, 'declares'))
    cases.append(('duplicated name', zip_raw([
        ('w.npy', 0, w_npy, len(w_npy), zlib.crc32(w_npy)),
        ('w.npy', 0, w_npy, len(w_npy), zlib.crc32(w_npy)),
        ('b.npy', 0, b_npy, len(b_npy), zlib.crc32(b_npy))]), 400, 'twice'))
    cases.append(('encrypted', zip_raw([('w.npy', 0, w_npy, len(w_npy), zlib.crc32(w_npy)),
                                        ('b.npy', 0, b_npy, len(b_npy), zlib.crc32(b_npy))],
                                       flags=1), 400, 'encrypted'))
    cases.append(('zip64 entry', zip_raw([('w.npy', 0, w_npy, len(w_npy), zlib.crc32(w_npy))],
                                         comp_size=0xffffffff), 400, 'zip64'))
    cases.append(('not a zip', b'PK\x03\x04' + b'\0' * 100, 400, 'zip'))
    truncated = npz(f32, compressed=True)
    cases.append(('truncated', truncated[:len(truncated) // 2], 400, 'zip'))
    obj = np.empty(2, dtype=object)
    b = io.BytesIO()
    np.savez(b, w=f32['w'], b=obj)
    cases.append(('object member', b.getvalue(), 400, 'object arrays'))
    cases.append(('member not .npy', zip_raw([('w.txt', 0, w_npy, len(w_npy),
                                                zlib.crc32(w_npy))]), 400, '.npy'))
    # Schema mismatches name the tensor: 422, like safetensors.
    cases.append(('shape', npz({'w': f32['w'][:-1], 'b': f32['b']}), 422, 'w'))
    cases.append(('prefixed names', npz({'module.w': f32['w'], 'module.b': f32['b']}), 422,
                  'did you mean'))
    cases.append(('npy for two tensors', w_npy, 422, 'x-npz'))
    for what, body, status, word in cases:
        ct = NPY if what == 'npy for two tensors' else NPZ
        st, o, _ = srv.post_update('f', tok, 0, body, 1, ct, expect=status)
        check(word in o.get('error', ''), '%s: %r' % (what, o))
        e.log('npz %s: %d %s' % (what, st, o['error'][:110]))
    return cases


def encode(m, kind, rng):
    """(body, content type, {name: float64 values as decoded}) for one update of SCHEMA."""
    f32 = {k: np.asarray(v, np.float32) for k, v in m.items()}
    dec = {k: v.astype(np.float64) for k, v in f32.items()}
    if kind == 'st':
        return e.st_encode(f32), ST, dec
    if kind == 'npz':
        return npz(f32), NPZ, dec
    if kind == 'npz-deflated':
        return npz(f32, compressed=True), NPZ, dec
    if kind == 'npz-f64':  # numpy's default dtype: narrowed to float32 by the server
        f64 = {k: v.astype(np.float64) * (1 + 1e-9) for k, v in f32.items()}
        return npz(f64, compressed=bool(rng.integers(0, 2))), NPZ, \
            {k: v.astype(np.float32).astype(np.float64) for k, v in f64.items()}
    if kind == 'npz-f16':
        h = {k: v.astype('<f2') for k, v in f32.items()}
        return npz(h, compressed=True), NPZ, {k: v.astype(np.float64) for k, v in h.items()}
    if kind == 'npz-i8':
        d, dec = {}, {}
        for k, v in f32.items():
            s = np.float32(np.max(np.abs(v)) / 127.0)
            q = np.clip(np.round(v / s), -127, 127).astype('i1')
            d[k], d[k + '.scale'] = q, s
            dec[k] = q.astype(np.float64) * np.float64(s)
        return npz(d, compressed=True), NPZ, dec
    if kind == 'raw':
        return e.raw_body(SCHEMA, f32), 'application/octet-stream', dec
    raise ValueError(kind)


def check_accept(srv, tok, job, schema, ref):
    _, hd, st_buf = srv.get_model(job, tok)
    check(hd.get('content-type') == ST and 'accept' in hd.get('vary', '').lower(),
          'default: %r' % hd)
    e.check_model(st_buf, schema, ref, 'safetensors')

    def get(accept, expect=200):
        return srv.request('GET', '/v1/jobs/%s/model' % job, None, {'Accept': accept}, tok)

    st, hd, b = get('application/x-npz')
    check(st == 200 and hd.get('content-type') == NPZ, 'npz: %d %r' % (st, hd))
    with np.load(io.BytesIO(b), allow_pickle=False) as z:
        check(sorted(z.files) == sorted(t['name'] for t in schema), 'npz members %r' % z.files)
        for t in schema:
            a = z[t['name']]
            check(a.dtype == np.float32 and list(a.shape) == t['shape'],
                  'npz %s: %s %s' % (t['name'], a.dtype, a.shape))
            want = e.st_decode(st_buf)[1][t['name']]
            check(np.array_equal(a.astype(np.float64), want), 'npz %s differs' % t['name'])
    check(zipfile.ZipFile(io.BytesIO(b)).testzip() is None, 'npz CRC')
    st, hd, b = get('application/octet-stream')
    check(st == 200 and hd.get('content-type') == 'application/octet-stream', 'raw %d' % st)
    flat = np.concatenate([e.st_decode(st_buf)[1][t['name']].ravel() for t in schema])
    check(np.array_equal(np.frombuffer(b, '<f4').astype(np.float64), flat), 'raw differs')
    st, hd, b = get('application/x-npz;q=0.5, application/x-safetensors')
    check(st == 200 and hd.get('content-type') == ST, 'q: %d %r' % (st, hd))
    st, hd, b = get('text/html, */*;q=0.1')
    check(st == 200 and hd.get('content-type') == ST, 'wildcard: %d %r' % (st, hd))
    for bad in ('text/html', 'application/x-npz;q=0', 'application/json'):
        st, hd, b = get(bad)
        check(st == 406 and b'application/x-npz' in b, '%s: %d %r' % (bad, st, b[:200]))
    st, hd, b = get('application/x-npz,' + 'x' * 400)
    check(st == 406 and b'longer' in b, 'long Accept: %d %r' % (st, b[:200]))
    # Another endpoint does not care about a long Accept.
    st, _, _ = srv.request('GET', '/v1/jobs/' + job, None, {'Accept': 'y' * 600}, srv.admin)
    check(st == 200, 'a long Accept on the job status: %d' % st)


def longpoll_npz(srv, tok, after, out):
    """A long poll that asks for npz: answered when the round closes, in npz."""
    st, hd, b = srv.request('GET', '/v1/jobs/f/model?after=%d&timeout=60' % after, None,
                            {'Accept': 'application/x-npz'}, tok, timeout=90)
    out.append((st, hd, b))


def reboot(rng):
    """--durability disk: npz updates (inflated after their body in the slot) are logged with
    their inflated bytes; kill -9 and the arena file gone, the log puts them back."""
    with e.Server(extra=['--durability', 'disk']) as srv:
        tok = srv.create_job({'name': 'd', 'clients_per_round': 4, 'tensors': SCHEMA})['token']
        ups = []
        for i, kind in enumerate(('npz-deflated', 'npz-i8', 'npz-f64', 'npz')):
            body, ct, dec = encode(e.random_model(rng, SCHEMA, scale=1 + i), kind, rng)
            ups.append((i + 2, dec))
            if i == 3:
                srv.proc.send_signal(signal.SIGKILL)
                srv.proc.wait()
                srv.proc = None
                e.remove_arena_files(srv.arena_files())
                srv.start()
                m = srv.metrics()
                check(m.get('tributary_wal_updates_recovered_total') == 3,
                      'recovered from the log: %r, want 3' %
                      m.get('tributary_wal_updates_recovered_total'))
            srv.post_update('d', tok, 0, body, i + 2, ct)
        _, _, buf = srv.get_model('d', tok, '?after=0&timeout=60')
        e.check_model(buf, SCHEMA, e.weighted_mean(ups), 'after a reboot')
        e.log('--durability disk: 3 npz updates put back from the log after kill -9 and the '
              'arena file gone; the model is the weighted mean of all 4')


def run():
    rng = np.random.default_rng(16)
    reboot(rng)
    with e.Server() as srv:
        job = srv.create_job({'name': 'f', 'clients_per_round': 7, 'fan_in': 3,
                              'tensors': SCHEMA})
        one = srv.create_job({'name': 'one', 'clients_per_round': 5, 'params': 777})
        tok, tok1 = job['token'], one['token']
        m = e.random_model(rng, ONE)
        n1 = len(hostile(srv, tok1, m))
        n2 = len(hostile_npz(srv, tok, e.random_model(rng, SCHEMA)))
        check(srv.status('f')['received'] == 0 and srv.status('one')['received'] == 0,
              'a refused update was counted')
        e.log('%d hostile .npy and %d hostile .npz bodies refused, none counted' % (n1, n2))
        kinds = ('st', 'npz', 'npz-deflated', 'npz-f64', 'npz-f16', 'npz-i8', 'raw')
        sizes = {}
        for r in range(2):
            ups, polled = [], []
            if r == 1:
                poll = threading.Thread(target=longpoll_npz, args=(srv, tok, 1, polled))
                poll.start()
            for i, kind in enumerate(kinds):
                body, ct, dec = encode(e.random_model(rng, SCHEMA, scale=1 + i), kind, rng)
                sizes[kind] = len(body)
                n = int(rng.integers(1, 30))
                ups.append((n, dec))
                srv.post_update('f', tok, r, body, n, ct)
            _, _, buf = srv.get_model('f', tok, '?after=%d' % r, timeout=60)
            ref = e.weighted_mean(ups)
            e.check_model(buf, SCHEMA, ref, 'round %d' % r)
            if r == 1:
                poll.join(90)
                check(polled and polled[0][0] == 200 and
                      polled[0][1].get('content-type') == NPZ, 'long poll: %r' % polled[:1])
                with np.load(io.BytesIO(polled[0][2])) as z:
                    got = {k: z[k].astype(np.float64) for k in z.files}
                check(all(np.array_equal(got[t['name']], e.st_decode(buf)[1][t['name']])
                          for t in SCHEMA), 'the long poll\'s npz differs from the model')
        e.log('body bytes per update: ' + ', '.join('%s %d' % kv for kv in sizes.items()))
        check_accept(srv, tok, 'f', SCHEMA, ref)
        # One tensor: .npy of each dtype, with safetensors and raw.
        ups = []
        for i, kind in enumerate(('f4', 'f8', 'f2', 'st', 'raw')):
            x = e.random_model(rng, ONE, scale=2 + i)['weights']
            n = int(rng.integers(1, 30))
            if kind in ('f4', 'f8', 'f2'):
                a = x.astype('<' + kind)
                body, ct = npy(a), NPY
                dec = a.astype(np.float32).astype(np.float64)
            elif kind == 'st':
                body, ct, dec = e.st_encode({'weights': x}), ST, x.astype(np.float64)
            else:
                body, ct, dec = x.astype('<f4').tobytes(), 'application/octet-stream', \
                    x.astype(np.float64)
            ups.append((n, {'weights': dec}))
            srv.post_update('one', tok1, 0, body, n, ct)
        _, _, buf = srv.get_model('one', tok1, '?after=0', timeout=60)
        e.check_model(buf, ONE, e.weighted_mean(ups), 'one tensor')
        check_accept(srv, tok1, 'one', ONE, e.weighted_mean(ups))
        srv.check_log()


if __name__ == '__main__':
    e.main(run)
