# SPDX-License-Identifier: MIT
# Sparse updates (`<name>.indices` + `<name>.values`) are scatter-added while folding: mixed
# dense and sparse clients give the numpy float64 reference (a missing coordinate is a 0), and
# the very bits of the same updates sent dense; hostile sparse bodies are refused (422/400)
# with nothing accepted lost; kill -9 of the functions, of the node, and (--durability disk)
# the loss of the arena file replay sparse updates exactly.
import io
import json
import os
import signal
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402
from algorithms import server_ref  # noqa: E402  (the float64 server optimisers)
import dp as dpref  # noqa: E402  (tests/functions/ref/dp.py, on the path algorithms.py set)

SCHEMA = [{'name': 'w', 'shape': [40, 25], 'dtype': 'F32'},
          {'name': 'b', 'shape': [333], 'dtype': 'F32'}]
NUMEL = {t['name']: int(np.prod(t['shape'])) for t in SCHEMA}
N = sum(NUMEL.values())
CPR = 6
ST = 'application/x-safetensors'
NPZ = 'application/x-npz'


def st_file(entries, align=True):
    """entries: [(name, dtype, shape, raw bytes)] -> safetensors bytes (data 8-aligned)."""
    hdr, blobs, off = {}, [], 0
    for name, dt, shape, raw in entries:
        if align and off % 8:
            blobs.append(b'\0' * (8 - off % 8))
            off += 8 - off % 8
        hdr[name] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)


DT = {'<f4': 'F32', '<i4': 'I32', '<i8': 'I64', '<f2': 'F16'}


def body_of(dense, sparse, fmt, deflate=False):
    """A safetensors or npz body of dense {name: array} and sparse {name: (idx, vals)}."""
    arrays = [(k, np.asarray(v, '<f4')) for k, v in dense.items()]
    for k, (idx, vals) in sparse.items():
        arrays.append((k + '.indices', np.asarray(idx)))
        arrays.append((k + '.values', np.asarray(vals)))
    if fmt == NPZ:
        buf = io.BytesIO()
        (np.savez_compressed if deflate else np.savez)(buf, **dict(arrays))
        return buf.getvalue()
    return st_file([(k, DT[a.dtype.str], a.shape, a.tobytes()) for k, a in arrays])


def client_update(rng, i, scale):
    """Client @i's update: (body, content type, {name: float64 densified})."""
    full, dense, sparse = {}, {}, {}
    for t in SCHEMA:
        name, n = t['name'], NUMEL[t['name']]
        x = np.zeros(n, np.float32)
        # Client 0 of three sends dense; the others send this tensor sparse (1-10% dense).
        if i % 3 == 0 or (i % 3 == 2 and name == 'b'):
            x = (rng.standard_normal(n) * scale).astype(np.float32)
            dense[name] = x.reshape(t['shape'])
        else:
            k = int(rng.integers(1, max(2, n // 10)))
            idx = np.sort(rng.choice(n, size=k, replace=False))
            vals = (rng.standard_normal(k) * scale).astype(np.float32)
            x[idx] = vals
            sparse[name] = (idx.astype('<i8' if i % 2 else '<i4'), vals.astype('<f4'))
        full[name] = x.astype(np.float64)
    fmt = NPZ if i % 4 == 3 else ST
    # npz deflated (stored ones: the hostile cases, the Python client): members are inflated
    # next to the body, before the sparse records.
    return body_of(dense, sparse, fmt, deflate=True), fmt, full, st_file(
        [(t['name'], 'F32', t['shape'], full[t['name']].astype('<f4').tobytes())
         for t in SCHEMA])


def flat(m):
    return np.concatenate([np.asarray(m[t['name']], np.float64).ravel() for t in SCHEMA])


def model_of(srv, job, tok, r):
    _, _, buf = srv.get_model(job, tok, '?after=%d&timeout=60' % r, timeout=70)
    _, got, _ = e.st_decode(buf)
    return flat(got)


def run_case(srv, name, spec, rng, rounds=2):
    """Rounds of @spec with mixed clients; a twin job takes the same updates densified."""
    jobs = {}
    for suffix in ('', '-dense'):
        jobs[suffix] = srv.create_job(dict({'name': name + suffix, 'clients_per_round': CPR,
                                            'fan_in': 2, 'tensors': SCHEMA}, **spec))['token']
    kind = spec.get('algorithm', 'fedavg')
    clip = spec.get('clip_norm')
    z = spec.get('dp_noise_multiplier', 0)  # DP: unweighted, noise from the job's seed
    eff = srv.status(name)['parameters']
    x = np.zeros(N)
    st = {}
    for r in range(rounds):
        ups = []
        for i in range(CPR):
            body, fmt, full, dense_body = client_update(rng, i, 0.5 + i)
            n = int(rng.integers(1, 40))
            srv.post_update(name, jobs[''], r, body, samples=n, ctype=fmt)
            srv.post_update(name + '-dense', jobs['-dense'], r, dense_body, samples=n, ctype=ST)
            u = flat(full)
            if clip:
                u = u * min(1.0, clip / max(np.linalg.norm(u), 1e-300))
            ups.append((1 if z else n, u))
        s = sum(w * u for w, u in ups)
        if z:
            s = s + z * clip * dpref.normals(spec['seed'], r, 0, N)
        mean = s / sum(w for w, _ in ups)
        x = server_ref(kind, eff, x, mean, st) if kind != 'fedavg' or 'server_lr' in spec \
            else x + mean
        got = model_of(srv, name, jobs[''], r)
        twin = model_of(srv, name + '-dense', jobs['-dense'], r)
        err = float(np.max(np.abs(got - x)))
        tol = (1e-6 if kind == 'fedavg' else 1e-4) * max(float(np.max(np.abs(x))), 1e-3)
        check(err <= tol, '%s round %d: max error %.3g > %.3g against numpy' %
              (name, r, err, tol))
        if not clip:
            # The sparse fold adds exactly what the dense fold adds (functions/fn_sparse.h).
            check(np.array_equal(got, twin), '%s round %d: the sparse job differs from its '
                  'dense twin by %.3g' % (name, r, float(np.max(np.abs(got - twin)))))
        else:
            check(np.max(np.abs(got - twin)) <= tol, '%s: twin differs' % name)
        x = got
    e.log('%s: %d rounds equal the numpy reference%s' %
          (name, rounds, '' if clip else ' and the dense twin bit for bit'))


def fedbuff_case(srv, rng, lr=0.8):
    """FedBuff on deltas: versions of CPR updates, some stale by one (weight 1/sqrt(2))."""
    toks = {}
    for suffix in ('', '-dense'):
        toks[suffix] = srv.create_job({'name': 'fb' + suffix, 'algorithm': 'fedbuff',
                                       'buffer_size': CPR, 'max_staleness': 2, 'server_lr': lr,
                                       'update': 'delta', 'tensors': SCHEMA})['token']
    x = np.zeros(N)
    for v in range(2):
        num, den = 0, 0
        for i in range(CPR):
            trained = v - 1 if v and i % 2 else v  # version 1: every other one is stale
            body, fmt, full, dense_body = client_update(rng, i, 1 + i)
            b = int(rng.integers(1, 20))
            _, obj, _ = srv.post_update('fb', toks[''], trained, body, b, fmt)
            check(obj['round'] == v, 'fedbuff: counted in version %r, want %d' %
                  (obj['round'], v))
            srv.post_update('fb-dense', toks['-dense'], trained, dense_body, b, ST)
            num = num + b / np.sqrt(1.0 + (v - trained)) * flat(full)
            den += b
        x = x + lr * num / den
        got = model_of(srv, 'fb', toks[''], v)
        err = float(np.max(np.abs(got - x)))
        check(err <= 1e-6 * float(np.max(np.abs(x))), 'fedbuff version %d: max error %.3g' %
              (v + 1, err))
        check(np.array_equal(got, model_of(srv, 'fb-dense', toks['-dense'], v)),
              'fedbuff version %d: the sparse job differs from its dense twin' % (v + 1))
        x = got
    e.log('fedbuff: 2 versions (stale updates weighted) equal numpy and the dense twin')


def refused(srv, job, tok, body, ctype, status, words, what):
    before = srv.status(job)['received']
    st, obj, _ = srv.post_update(job, tok, 0, body, 1, ctype, expect=None)
    msg = (obj or {}).get('error', '')
    check(st == status, '%s: want %d, got %d %r' % (what, status, st, obj))
    for w in words:
        check(w in msg, '%s: the message %r does not say %r' % (what, msg, w))
    check(srv.status(job)['received'] == before, '%s: a refused update was counted' % what)


def hostile(srv, rng):
    tok = srv.create_job({'name': 'hostile', 'clients_per_round': 2, 'update': 'delta',
                          'tensors': SCHEMA})['token']
    b = np.zeros(NUMEL['b'], '<f4')
    ok_idx = np.array([1, 5, 9], '<i8')
    ok_val = np.array([1, 2, 3], '<f4')

    def sp(idx, vals=ok_val, name='w', fmt=ST, extra=None):
        return body_of(dict({'b': b}, **(extra or {})), {name: (idx, vals)}, fmt)

    # Index out of range, negative, duplicated, unsorted: named with their position.
    refused(srv, 'hostile', tok, sp(np.array([1, 5, 1000], '<i8')), ST, 422,
            ['w.indices', 'index 1000', 'position 2', 'out of range', '[0, 1000)'], 'range')
    refused(srv, 'hostile', tok, sp(np.array([-1, 5, 9], '<i4')), ST, 422,
            ['w.indices', 'index -1', 'position 0'], 'negative')
    refused(srv, 'hostile', tok, sp(np.array([1, 5, 5], '<i8')), ST, 422,
            ['w.indices', 'index 5', 'twice', 'positions 1 and 2'], 'duplicate')
    refused(srv, 'hostile', tok, sp(np.array([1, 9, 5], '<i4')), ST, 422,
            ['w.indices', 'strictly increasing', 'position 2'], 'unsorted')
    refused(srv, 'hostile', tok, sp(np.array([1, 5, 5], '<i8'), fmt=NPZ), NPZ, 422,
            ['npz', 'w.indices', 'twice'], 'npz duplicate')
    refused(srv, 'hostile', tok, sp(np.array([0, 1000], '<i4'), ok_val[:2], fmt=NPZ), NPZ, 422,
            ['npz', 'out of range'], 'npz range')
    # Half a pair, an unknown tensor, a tensor both dense and sparse.
    refused(srv, 'hostile', tok, st_file([('b', 'F32', [333], b.tobytes()),
                                          ('w.indices', 'I64', [3], ok_idx.tobytes())]), ST,
            422, ['"w.indices" has no "w.values"'], 'indices alone')
    refused(srv, 'hostile', tok, st_file([('b', 'F32', [333], b.tobytes()),
                                          ('w.values', 'F32', [3], ok_val.tobytes())]), ST,
            422, ['"w.values" has no "w.indices"'], 'values alone')
    refused(srv, 'hostile', tok, body_of({'b': b, 'w': np.zeros(1000, '<f4').reshape(40, 25)},
                                         {'zz': (ok_idx, ok_val)}, ST), ST, 422,
            ['zz.indices', 'no tensor "zz"'], 'unknown tensor')
    refused(srv, 'hostile', tok, body_of({'b': b, 'w': np.zeros((40, 25), '<f4')},
                                         {'w': (ok_idx, ok_val)}, ST), ST, 422,
            ['"w"', 'both dense and sparse'], 'dense and sparse')
    # Dtypes, shapes, lengths, alignment, values.
    refused(srv, 'hostile', tok, sp(ok_idx.astype('<f4')), ST, 422,
            ['w.indices', 'F32', 'I32 or I64'], 'float indices')
    refused(srv, 'hostile', tok, sp(ok_idx, ok_val.astype('<f2')), ST, 422,
            ['w.values', 'F16', 'F32'], 'f16 values')
    refused(srv, 'hostile', tok, sp(ok_idx, ok_val[:2]), ST, 422,
            ['one length', 'of 3', 'of 2'], 'lengths')
    refused(srv, 'hostile', tok, sp(ok_idx.reshape(3, 1), ok_val), ST, 422,
            ['1-dimensional'], '2-d indices')
    refused(srv, 'hostile', tok, st_file([('b', 'F32', [333], b.tobytes()),  # 1332 bytes
                                          ('w.indices', 'I64', [3], ok_idx.tobytes()),
                                          ('w.values', 'F32', [3], ok_val.tobytes())],
                                         align=False), ST, 422, ['aligned'], 'misaligned I64')
    refused(srv, 'hostile', tok, sp(ok_idx, np.array([1, np.nan, 3], '<f4')), ST, 422,
            ['non-finite', 'w.values', 'element 1'], 'NaN value')
    # Bad safetensors headers around sparse tensors: 400 before any sparse check.
    good = sp(ok_idx)
    hl = struct.unpack('<Q', good[:8])[0]
    hdr = json.loads(good[8:8 + hl])
    for what, patch in (('overlap', lambda h: h['w.values'].__setitem__(
                            'data_offsets', [h['w.indices']['data_offsets'][0],
                                             h['w.indices']['data_offsets'][0] + 12])),
                        ('out of file', lambda h: h['w.indices'].__setitem__(
                            'data_offsets', [10 ** 6, 10 ** 6 + 24]))):
        h = json.loads(json.dumps(hdr))
        patch(h)
        hb = json.dumps(h, separators=(',', ':')).encode()
        hb += b' ' * ((8 - len(hb) % 8) % 8)
        refused(srv, 'hostile', tok, struct.pack('<Q', len(hb)) + hb + good[8 + hl:], ST, 400,
                ['safetensors'], 'header ' + what)
    refused(srv, 'hostile', tok, struct.pack('<Q', 1 << 40) + good[8:], ST, 400,
            ['safetensors'], 'header length past the end')
    # Deflated, a sparse tensor denser than one half inflates past the room the slot keeps (the
    # model's float32 bytes): not malformed but too large, 413 saying what fits (it was a 400
    # blaming the archive). Stored (np.savez) the same body is taken.
    dense_idx = np.arange(900, dtype='<i8')
    refused(srv, 'hostile', tok, body_of({'b': b}, {'w': (dense_idx, np.ones(900, '<f4'))}, NPZ,
                                         deflate=True), NPZ, 413,
            ['inflate', 'dense', 'np.savez'], 'deflated sparse tensor denser than 1/2')
    # Nothing was lost: two good sparse updates still make the round, exactly.
    srv.post_update('hostile', tok, 0, sp(ok_idx), 1, ST)
    srv.post_update('hostile', tok, 0, sp(np.array([0, 999], '<i4'), ok_val[:2]), 3, ST)
    got = model_of(srv, 'hostile', tok, 0)
    ref = np.zeros(N)
    ref[[1, 5, 9]] += 1 * ok_val
    ref[[0, 999]] += 3 * ok_val[:2]
    check(np.max(np.abs(got - ref / 4)) <= 1e-7, 'hostile: the round after the refusals is '
          'not the mean of the two good updates')
    # Rules that are not a weighted mean refuse sparse bodies, naming why.
    tok = srv.create_job({'name': 'med', 'clients_per_round': 3, 'algorithm': 'median',
                          'tensors': SCHEMA})['token']
    refused(srv, 'med', tok, sp(ok_idx), ST, 422, ['median', 'robust rules', 'dense'],
            'median job')
    e.log('hostile sparse bodies refused, each naming its fault; nothing accepted lost')


def crashes(srv_factory, rng):
    """kill -9 of the functions mid-round, then of the node, then (disk) of the arena file."""
    for how in ('fn', 'node', 'disk'):
        extra = ['--durability', 'disk'] if how == 'disk' else []
        with srv_factory(extra) as srv:
            job = 'crash-' + how
            tok = srv.create_job({'name': job, 'clients_per_round': CPR, 'fan_in': 2,
                                  'update': 'delta', 'tensors': SCHEMA})['token']
            ups = [client_update(rng, i, 1 + i) for i in range(CPR)]
            ws = [int(rng.integers(1, 30)) for _ in range(CPR)]

            def send(lo, hi):
                for i in range(lo, hi):
                    # Right after a kill the tree may still be failing over (tcp: a send to
                    # the dead leaf): a 503 is "not taken", resent with its key as a client does.
                    for _ in range(100):
                        st, obj, _ = srv.post_update(job, tok, 0, ups[i][0], ws[i], ups[i][1],
                                                     expect=None, extra={
                                                         'Idempotency-Key': '%s-%d' % (job, i)})
                        if st != 503:
                            break
                        time.sleep(0.1)
                    check(st == 202, '%s: update %d: %d %r' % (job, i, st, obj))
            send(0, 3)
            if how == 'fn':
                kids = e.wait_for(lambda: e.fn_children(srv.pid), 20, 'functions')
                for p in kids:
                    os.kill(p, signal.SIGKILL)
            else:
                srv.proc.send_signal(signal.SIGKILL)
                srv.proc.wait()
                srv.proc = None
                if how == 'disk':
                    e.remove_arena_files(srv.arena_files())
                srv.start()
                check(srv.status(job)['received'] == 3, '%s: %r received after the restart' %
                      (how, srv.status(job)['received']))
                send(2, 3)  # a resend with its key: counted once
            send(3, CPR)
            ref = sum(w * flat(u[2]) for w, u in zip(ws, ups)) / sum(ws)
            got = model_of(srv, job, tok, 0)
            err = float(np.max(np.abs(got - ref)))
            check(err <= 1e-6 * float(np.max(np.abs(ref))), 'kill -9 (%s): max error %.3g' %
                  (how, err))
            e.log('kill -9 of the %s mid-round: the sparse round is exact' %
                  {'fn': 'functions', 'node': 'node', 'disk': 'node and its arena file'}[how])


def run():
    rng = np.random.default_rng(1606)
    with e.Server() as srv:
        run_case(srv, 'avg-delta', {'update': 'delta'}, rng)
        run_case(srv, 'adam-delta', {'algorithm': 'fedadam', 'update': 'delta',
                                     'server_lr': 0.1}, rng)
        run_case(srv, 'clip-delta', {'update': 'delta', 'clip_norm': 3.0}, rng)
        run_case(srv, 'dp-delta', {'update': 'delta', 'clip_norm': 2.0,
                                   'dp_noise_multiplier': 0.5, 'dp_delta': 1e-5, 'seed': 42},
                 rng)
        fedbuff_case(srv, rng)
        hostile(srv, rng)
    crashes(lambda extra: e.Server(extra=extra), rng)


if __name__ == '__main__':
    e.main(run)
