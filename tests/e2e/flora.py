# SPDX-License-Identifier: MIT
# flora through the HTTP path (docs/ALGORITHMS.md "flora", /work contract FLORA.md): 12 clients
# send LoRA pairs of ranks 2, 4 and 8 (different per pair and per client) as safetensors and npz;
# each version serves the base unchanged, A_stack [S R, n], B_stack [m, S R] and <pair>.rank (I32)
# with B_stack A_stack = sum_k p_k B_k A_k to 1e-5 against float64 numpy, the blocks in acceptance
# order, weighted and unweighted; flora_merge serves base + sum_k p_k B_k A_k and nothing else.
# Every refusal of the contract (400 for specs, 422/415 for updates) loses nothing accepted, and a
# kill -9 mid-round then the rest of the round gives the same model (from the arena's journal,
# and with --durability disk from the log after the arena file is gone).
import io
import json
import os
import signal
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

S = 12
BASE = [{'name': 'l0.weight', 'shape': [16, 12], 'dtype': 'F32'},
        {'name': 'l1.weight', 'shape': [10, 20], 'dtype': 'F32'},
        {'name': 'bias', 'shape': [5], 'dtype': 'F32'}]
PAIRS = [{'name': 'l0', 'base': 'l0.weight', 'a': 'l0.lora_A', 'b': 'l0.lora_B', 'max_rank': 8},
         {'name': 'l1', 'base': 'l1.weight', 'a': 'l1.lora_A', 'b': 'l1.lora_B', 'max_rank': 8}]
SHAPES = {'l0': (16, 12), 'l1': (10, 20)}
RANKS = {'l0': [2, 4, 8], 'l1': [8, 2, 4]}  # per client i: RANKS[pair][i % 3]


def spec(name, **kw):
    d = {'name': name, 'algorithm': 'flora', 'clients_per_round': S, 'tensors': BASE,
         'flora_pairs': PAIRS}
    d.update(kw)
    return d


def st_decode_any(buf):
    """{name: array} of a safetensors file with F32 and I32 tensors (dtype kept)."""
    (hl,) = struct.unpack('<Q', buf[:8])
    hdr = json.loads(buf[8:8 + hl])
    hdr.pop('__metadata__', None)
    data, out = buf[8 + hl:], {}
    for name, ent in hdr.items():
        b, en = ent['data_offsets']
        dt = {'F32': '<f4', 'I32': '<i4'}[ent['dtype']]
        out[name] = np.frombuffer(data[b:en], dt).reshape(ent['shape'])
    return hdr, out


def client(rng, i):
    """Client i's adapters {a: A [r, n], b: B [m, r]} for every pair, float32."""
    t = {}
    for p in PAIRS:
        m, n = SHAPES[p['name']]
        r = RANKS[p['name']][i % 3]
        t[p['a']] = rng.normal(0, 1, (r, n)).astype(np.float32)
        t[p['b']] = rng.normal(0, 1, (m, r)).astype(np.float32)
    return t


def npz_body(t):
    f = io.BytesIO()
    np.savez(f, **t)
    return f.getvalue()


def post(srv, job, tok, rnd, t, w, fmt='st'):
    if fmt == 'npz':
        return srv.post_update(job, tok, rnd, npz_body(t), samples=w, ctype='application/x-npz')
    return srv.post_update(job, tok, rnd, e.st_encode(t), samples=w,
                           ctype='application/x-safetensors')


def check_stacks(model, ups, weighted, what, tol=1e-5):
    """The served stacks against numpy: product, blocks in order, zero tail, used rank."""
    ws = np.array([w if weighted else 1 for w, _ in ups], np.float64)
    p = ws / ws.sum()
    for pr in PAIRS:
        m, n = SHAPES[pr['name']]
        R = pr['max_rank']
        A, B = model[pr['a']].astype(np.float64), model[pr['b']].astype(np.float64)
        rank = model[pr['name'] + '.rank']
        check(A.shape == (S * R, n) and B.shape == (m, S * R), '%s %s: shapes %r %r' %
              (what, pr['name'], A.shape, B.shape))
        check(rank.dtype == np.int32 and rank.shape == (1,), '%s: rank %r' % (what, rank))
        used = sum(t[pr['a']].shape[0] for _, t in ups)
        check(int(rank[0]) == used, '%s %s: rank %d, want %d' % (what, pr['name'], rank[0], used))
        ref = sum(pk * t[pr['b']].astype(np.float64) @ t[pr['a']].astype(np.float64)
                  for pk, (_, t) in zip(p, ups))
        err = float(np.max(np.abs(B @ A - ref)))
        check(err <= tol, '%s %s: |B A - sum p B A| = %.3g' % (what, pr['name'], err))
        # The blocks, in acceptance order: p_k A_k rows and B_k columns, then zeros.
        ea = np.concatenate([pk * t[pr['a']].astype(np.float64) for pk, (_, t) in zip(p, ups)])
        eb = np.concatenate([t[pr['b']].astype(np.float64) for _, t in ups], axis=1)
        check(np.max(np.abs(A[:used] - ea)) <= 1e-6 * max(1, np.max(np.abs(ea))) and
              np.array_equal(B[:, :used], eb), '%s %s: blocks not in acceptance order' %
              (what, pr['name']))
        check(not A[used:].any() and not B[:, used:].any(), '%s: tail not zero' % what)
        print('%s %s: rank %d, |B A - sum p B A| = %.2g' % (what, pr['name'], used, err))


def bad_spec(srv, kw, field, drop=()):
    d = spec('bad', **kw)
    for k in drop:
        d.pop(k)
    st, obj, _ = srv.json('POST', '/v1/jobs', d, token=srv.admin)
    err = (obj or {}).get('error', '')
    check(st == 400 and field in err, '%r: want 400 naming %s, got %d %r' % (kw, field, st, obj))
    print('400 (%s): %s' % (field, err))


def bad_specs(srv):
    P0 = PAIRS[0]
    bad_spec(srv, {}, 'flora_pairs', drop=('flora_pairs',))
    bad_spec(srv, {'flora_pairs': []}, 'flora_pairs')
    bad_spec(srv, {'flora_pairs': [dict(P0, alpha=1)]}, 'flora_pairs[0].alpha')
    bad_spec(srv, {'flora_pairs': [dict(P0, name='l 0')]}, 'flora_pairs[0].name')
    bad_spec(srv, {'flora_pairs': [P0, dict(PAIRS[1], name='l0')]}, 'flora_pairs[1].name')
    bad_spec(srv, {'flora_pairs': [dict(P0, base='nope')]}, 'flora_pairs[0].base')
    bad_spec(srv, {'flora_pairs': [dict(P0, base='bias')]}, 'flora_pairs[0].base')
    bad_spec(srv, {'flora_pairs': [dict(P0, a='l1.weight')]}, 'flora_pairs[0].a')
    bad_spec(srv, {'flora_pairs': [P0, dict(PAIRS[1], b='l0.lora_A')]}, 'flora_pairs[1].b')
    bad_spec(srv, {'flora_pairs': [dict(P0, b=P0['a'])]}, 'flora_pairs[0].b')
    for r in (0, 13, '4', 2.5, None):
        bad_spec(srv, {'flora_pairs': [dict(P0, max_rank=r)]}, 'flora_pairs[0].max_rank')
    bad_spec(srv, {'flora_merge': 'yes'}, 'flora_merge')
    bad_spec(srv, {'update': 'delta'}, 'update')
    for k, v in (('server_lr', 0.5), ('clip_norm', 1.0), ('dp_noise_multiplier', 1.0),
                 ('momentum', 0.9), ('trim', 0.1), ('seed', 3)):
        bad_spec(srv, {k: v}, k)
    bad_spec(srv, {'secagg': {'threshold': 2}, 'client_auth': 'required'}, 'secagg')
    bad_spec(srv, {'algorithm': 'fedavg'}, 'flora_pairs')
    bad_spec(srv, {'algorithm': 'fedavg', 'flora_merge': True}, 'flora_merge',
             drop=('flora_pairs',))
    big = [{'name': 'big', 'shape': [1024, 1024], 'dtype': 'F32'}]
    bad_spec(srv, {'tensors': big, 'clients_per_round': 100,
                   'flora_pairs': [{'name': 'g', 'base': 'big', 'a': 'g.A', 'b': 'g.B',
                                    'max_rank': 64}]}, 'flora_pairs')


def bad_updates(srv, job, tok, rnd, rng):
    """Every 422/415 of the contract; none of them counts."""
    good = client(rng, 0)

    def refused(t, want, status=422, body=None, ctype='application/x-safetensors'):
        st, obj, _ = srv.post_update(job, tok, rnd, body if body is not None else e.st_encode(t),
                                     samples=3, ctype=ctype, expect=None)
        err = (obj or {}).get('error', '')
        check(st == status and want in err, 'want %d naming %r, got %d %r' %
              (status, want, st, obj))
        print('%d: %s' % (st, err))

    t = dict(good, **{'l0.lora_A': rng.normal(0, 1, (9, 12)).astype(np.float32),
                      'l0.lora_B': rng.normal(0, 1, (16, 9)).astype(np.float32)})
    refused(t, 'l0.lora_A')  # rank 9 > max_rank 8
    t = dict(good, **{'l0.lora_B': rng.normal(0, 1, (16, 3)).astype(np.float32)})
    refused(t, 'rank mismatch')
    refused(dict(good, **{'l0.weight': np.zeros((16, 12), np.float32)}), 'l0.weight')
    t = dict(good)
    del t['l1.lora_B']
    refused(t, 'l1.lora_B')
    t = dict(good, **{'l1.lora_A': rng.normal(0, 1, (4, 21)).astype(np.float32)})
    refused(t, 'l1.lora_A')
    refused(dict(good, extra=np.zeros(3, np.float32)), 'extra')
    refused(None, 'F32', body=e.st_encode(good, dtype='F16'))
    refused(None, 'safetensors', status=415, body=b'\0' * 64, ctype='application/octet-stream')
    t = dict(good)
    t['l0.lora_A'] = t['l0.lora_A'].copy()
    t['l0.lora_A'][0, 0] = np.nan
    refused(t, 'l0.lora_A')


def kill9(srv):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.start()


def disk_reboot(rng):
    """--durability disk: 6 updates, kill -9 and the arena file gone (a reboot), the other 6:
    the log gave each update back with its slot, so the model is the same."""
    with e.Server(arena_mb=64, extra=['--durability', 'disk']) as srv:
        tok = srv.create_job(spec('disk'))['token']
        ups = [(int(rng.integers(1, 100)), client(rng, i)) for i in range(S)]
        for i, (w, t) in enumerate(ups):
            if i == 6:
                srv.proc.send_signal(signal.SIGKILL)
                srv.proc.wait()
                srv.proc = None
                files = srv.arena_files()
                check(files, 'no arena file to remove')
                e.remove_arena_files(files)
                srv.start()
                print('kill -9 and the arena file removed with 6 of 12 updates accepted')
            post(srv, 'disk', tok, 0, t, w, 'npz' if i % 4 == 1 else 'st')
        _, _, buf = srv.get_model('disk', tok, '?after=0', timeout=60)
        check_stacks(st_decode_any(buf)[1], ups, True, '--durability disk, after the reboot')


def run():
    rng = np.random.default_rng(16)
    base = e.random_model(rng, BASE)
    with e.Server(arena_mb=64) as srv:
        bad_specs(srv)
        tok = srv.create_job(spec('lora'))['token']
        stt = srv.status('lora')
        check(stt.get('flora_merge') is False and
              [p['name'] for p in stt.get('flora_pairs', [])] == ['l0', 'l1'] and
              stt['flora_pairs'][0]['max_rank'] == 8 and
              stt['parameters'].get('flora_merge') is False and
              [t['name'] for t in stt['tensors']] == [t['name'] for t in BASE], 'status: %r' % stt)
        st, _, _ = srv.request('PUT', '/v1/jobs/lora/model', e.st_encode(base),
                               {'Content-Type': 'application/x-safetensors'}, tok)
        check(st == 200, 'PUT base model: %d' % st)
        _, _, buf = srv.get_model('lora', tok)
        _, m0 = st_decode_any(buf)
        check(all(np.array_equal(m0[t['name']], base[t['name']]) for t in BASE) and
              not m0['l0.lora_A'].any() and not m0['l1.lora_B'].any() and
              int(m0['l0.rank'][0]) == 0, 'version 0: the base, zero stacks, rank 0')
        print('version 0: the base, zero stacks and rank 0')
        for rnd in range(3):
            ups = [(int(rng.integers(1, 100)), client(rng, i)) for i in range(S)]
            for i, (w, t) in enumerate(ups):
                if rnd == 0 and i == 5:
                    bad_updates(srv, 'lora', tok, rnd, rng)
                if rnd == 2 and i == 6:
                    kill9(srv)
                    print('kill -9 with 6 of 12 updates of round 2 accepted')
                post(srv, 'lora', tok, rnd, t, w, 'npz' if i % 4 == 1 else 'st')
            _, _, buf = srv.get_model('lora', tok, '?after=%d' % rnd, timeout=60)
            _, got = st_decode_any(buf)
            check(sorted(got) == sorted([t['name'] for t in BASE] +
                                        [p[k] for p in PAIRS for k in ('a', 'b')] +
                                        ['l0.rank', 'l1.rank']), 'tensors %r' % sorted(got))
            check(all(np.array_equal(got[t['name']], base[t['name']].astype(np.float32))
                      for t in BASE), 'round %d: the base changed' % rnd)
            check_stacks(got, ups, True, 'round %d' % rnd)
        # The same model as npz (rank an int32 member); raw f32 cannot carry I32: 406.
        st, hd, nb = srv.request('GET', '/v1/jobs/lora/model', None,
                                 {'Accept': 'application/x-npz'}, tok)
        z = np.load(io.BytesIO(nb))
        check(st == 200 and z['l0.rank'].dtype == np.int32 and
              all(np.array_equal(z[k], got[k]) for k in got), 'npz model')
        st, _, b = srv.request('GET', '/v1/jobs/lora/model', None,
                               {'Accept': 'application/octet-stream'}, tok)
        check(st == 406 and b'I32' in b, 'raw f32 of a model with I32: want 406, got %d %r' %
              (st, b[:200]))
        print('npz serves the same model (rank int32); raw f32 is 406')

        # Unweighted, merged into the base: the model is exactly the base tensors.
        tok2 = srv.create_job(spec('merged', weighted=False, flora_merge=True))['token']
        st, _, _ = srv.request('PUT', '/v1/jobs/merged/model', e.st_encode(base),
                               {'Content-Type': 'application/x-safetensors'}, tok2)
        check(st == 200, 'PUT base model (merge): %d' % st)
        cur = {k: v.astype(np.float64) for k, v in base.items()}
        for rnd in range(2):
            ups = [(int(rng.integers(1, 100)), client(rng, i)) for i in range(S)]
            for w, t in ups:
                post(srv, 'merged', tok2, rnd, t, w)
            _, _, buf = srv.get_model('merged', tok2, '?after=%d' % rnd, timeout=60)
            _, got = st_decode_any(buf)
            check(sorted(got) == sorted(t['name'] for t in BASE), 'merge: tensors %r' %
                  sorted(got))
            for pr in PAIRS:
                cur[pr['base']] = cur[pr['base']] + sum(
                    t[pr['b']].astype(np.float64) @ t[pr['a']].astype(np.float64)
                    for _, t in ups) / S
                err = float(np.max(np.abs(got[pr['base']] - cur[pr['base']])))
                check(err <= 1e-5, 'merge round %d %s: error %.3g' % (rnd, pr['base'], err))
                print('merge round %d %s: |W - (W0 + sum B A / K)| = %.2g' %
                      (rnd, pr['base'], err))
                cur[pr['base']] = got[pr['base']].astype(np.float64)
            check(np.array_equal(got['bias'], base['bias'].astype(np.float32)), 'bias moved')
        st, _, b = srv.request('GET', '/v1/jobs/merged/model', None,
                               {'Accept': 'application/octet-stream'}, tok2)
        check(st == 200, 'raw f32 of a merged model: %d' % st)
        check(np.array_equal(np.frombuffer(b, '<f4'),
                             np.concatenate([got[t['name']].ravel() for t in BASE])
                             .astype(np.float32)), 'raw f32 of the merged model')
        print('merged model: raw f32 is the base tensors')
    disk_reboot(rng)


if __name__ == '__main__':
    e.main(run)
