# SPDX-License-Identifier: MIT
# frl (FRL: Federated Rank Learning) through the HTTP path on one node: clients send an I32
# ranking per tensor (scores with many ties, flat or in the tensor's shape, safetensors in any
# tensor order); each version is the stable argsort of the summed positions, against numpy
# (tests/functions/ref/frl.py's rule) over 4 rounds, the last across a kill -9 mid-round;
# version 0 is the identity; GET /model as safetensors (I32) and npz (int32), raw f32 406;
# hostile rankings 422 naming the tensor and the index, nothing accepted lost; 400s at creation.
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

SCHEMA = [{'name': 'w', 'shape': [5, 4], 'dtype': 'F32'},
          {'name': 'b', 'shape': [7], 'dtype': 'F32'}]
K = 4
ST = 'application/x-safetensors'
NPZ = 'application/x-npz'


def st_i32(tensors, order=None, dtype='I32', shapes=None):
    """A safetensors body of {name: int array} as I32 (or @dtype F32 for a wrong-dtype probe)."""
    hdr, blobs, off = {}, [], 0
    for name in (order or list(tensors)):
        a = np.asarray(tensors[name])
        b = a.astype('<i4' if dtype == 'I32' else '<f4').tobytes()
        hdr[name] = {'dtype': dtype, 'shape': list((shapes or {}).get(name, a.shape)),
                     'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)


def npz(arrays, compressed=False):
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(b, **arrays)
    return b.getvalue()


def decode_i32(buf):
    """{name: int32 array in its shape} from an I32 safetensors model; every tensor I32."""
    (hl,) = struct.unpack('<Q', buf[:8])
    hdr = json.loads(buf[8:8 + hl])
    hdr.pop('__metadata__', None)
    out = {}
    for name, t in hdr.items():
        check(t['dtype'] == 'I32', 'model tensor %s is %s, want I32' % (name, t['dtype']))
        b, en = t['data_offsets']
        out[name] = np.frombuffer(buf[8 + hl + b:8 + hl + en], '<i4').reshape(t['shape'])
    return out


class Reference:
    """FRL's server in numpy: votes[p[j]] += j per ranking; the model is argsort(stable)."""

    def __init__(self, schema):
        self.schema = schema
        self.votes = {t['name']: np.zeros(int(np.prod(t['shape'])), np.uint64) for t in schema}

    def add(self, ranks):
        for name, p in ranks.items():
            p = np.asarray(p).ravel()
            self.votes[name][p] += np.arange(p.size, dtype=np.uint64)

    def model(self):
        return {t['name']: np.argsort(self.votes[t['name']], kind='stable').astype(np.int32)
                .reshape(t['shape']) for t in self.schema}

    def reset(self):
        for v in self.votes.values():
            v[:] = 0


def rankings(rng, schema, shaped=False):
    """One client's rankings: argsort of scores on a coarse grid (ties), flat or shaped."""
    out = {}
    for t in schema:
        n = int(np.prod(t['shape']))
        p = np.argsort(rng.integers(0, 4, n), kind='stable').astype(np.int32)
        out[t['name']] = p.reshape(t['shape']) if shaped else p
    return out


def check_models_equal(got, want, what):
    check(sorted(got) == sorted(want), '%s: tensors %r, want %r' % (what, sorted(got), sorted(want)))
    for name in want:
        check(got[name].shape == want[name].shape and np.array_equal(got[name], want[name]),
              '%s: tensor %s\n got %r\nwant %r' % (what, name, got[name].ravel().tolist(),
                                                  want[name].ravel().tolist()))


def hostile(srv, job, tok, rnd, body, want_status, want_tensor, want_index, what,
            ctype=ST):
    st, obj, _ = srv.post_update(job, tok, rnd, body, ctype=ctype, expect=None)
    obj = obj or {}
    check(st == want_status, '%s: want %d, got %d %r' % (what, want_status, st, obj))
    if want_tensor is not None:
        check(obj.get('tensor') == want_tensor, '%s: want tensor %r named, got %r' %
              (what, want_tensor, obj))
    if want_index is not None:
        check(obj.get('index') == want_index, '%s: want index %r, got %r' % (what, want_index,
                                                                             obj))
    print('%s: %d %s' % (what, st, obj.get('error', '')[:150]))


def kill9(srv):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.start()


def bad_spec(srv, spec, field):
    base = {'name': 'bad', 'clients_per_round': K, 'algorithm': 'frl', 'tensors': SCHEMA}
    st, obj, _ = srv.json('POST', '/v1/jobs', dict(base, **spec), token=srv.admin)
    err = (obj or {}).get('error', '')
    check(st == 400 and field in err, '%r: want 400 naming %s, got %d %r' % (spec, field, st, obj))
    print('400 for %r: %s' % (spec, err[:160]))


def model_forms(srv, job, tok, want, version):
    """safetensors (default and asked for) and npz equal @want; raw f32 is a 406."""
    _, hd, buf = srv.get_model(job, tok)
    check(hd.get('x-tributary-round') == str(version), 'model version %r, want %d' %
          (hd.get('x-tributary-round'), version))
    check_models_equal(decode_i32(buf), want, 'v%d safetensors' % version)
    st, hd, buf = srv.request('GET', '/v1/jobs/%s/model' % job, None,
                              {'Accept': 'application/x-npz'}, tok)
    check(st == 200 and hd.get('content-type', '').startswith('application/x-npz'),
          'npz model: %d %r' % (st, buf[:200]))
    z = np.load(io.BytesIO(buf), allow_pickle=False)
    got = {k: z[k] for k in z.files}
    for k, v in got.items():
        check(v.dtype == np.int32, 'npz member %s is %s, want int32' % (k, v.dtype))
    check_models_equal(got, want, 'v%d npz' % version)
    st, _, buf = srv.request('GET', '/v1/jobs/%s/model' % job, None,
                             {'Accept': 'application/octet-stream'}, tok)
    check(st == 406 and b'int32' in buf, 'raw f32 of an frl model: want 406, got %d %r' %
          (st, buf[:200]))


def run():
    rng = np.random.default_rng(16)
    ref = Reference(SCHEMA)
    names = [t['name'] for t in SCHEMA]
    with e.Server(arena_mb=64) as srv:
        tok = srv.create_job({'name': 'fr', 'clients_per_round': K, 'algorithm': 'frl',
                              'tensors': SCHEMA})['token']
        par = srv.status('fr')['parameters']
        check(par.get('algorithm') == 'frl' and par.get('weighted') is False and
              'server_lr' not in par, 'parameters: %r' % par)
        # Version 0: the identity ranking of each tensor.
        model_forms(srv, 'fr', tok, ref.model(), 0)
        print('v0 is the identity ranking (safetensors I32, npz int32; raw f32 406)')
        st, obj, _ = srv.json('PUT', '/v1/jobs/fr/model', {'x': 1}, token=tok)
        check(st == 409 and 'identity' in (obj or {}).get('error', ''),
              'PUT /model of an frl job: want 409, got %d %r' % (st, obj))
        for r in range(3):
            ref.reset()  # a round's model is its own rankings' vote
            for i in range(K):
                ranks = rankings(rng, SCHEMA, shaped=i % 2 == 1)
                ref.add(ranks)
                order = names if i % 2 == 0 else names[::-1]
                if i == 2:  # numpy's own savez: int64 (numpy's default), deflated
                    srv.post_update('fr', tok, r, npz({k: v.astype(np.int64) for k, v in
                                                       ranks.items()}, compressed=r % 2 == 1),
                                    ctype=NPZ)
                    continue
                if i == 3 and r == 1:  # int32 members, stored
                    srv.post_update('fr', tok, r, npz(ranks), ctype=NPZ)
                    continue
                srv.post_update('fr', tok, r, st_i32(ranks, order=order), samples=10 * (i + 1),
                                ctype=ST)
            srv.get_model('fr', tok, '?after=%d' % r, timeout=60)
            model_forms(srv, 'fr', tok, ref.model(), r + 1)
            print('round %d: the model equals numpy\'s stable argsort of the votes' % r)
        rec = srv.json('GET', '/v1/jobs/fr/rounds', token=tok)[1]
        print('round records: %s' % json.dumps(rec)[:300])

        # Round 3: hostile rankings first; each refused, naming the tensor (and the index).
        ref.reset()
        good = rankings(rng, SCHEMA)
        p = good['w'].copy()
        p[5] = p[2]
        hostile(srv, 'fr', tok, 3, st_i32(dict(good, w=p)), 422, 'w', 5, 'duplicate index')
        p = good['b'].copy()
        p[3] = 7
        hostile(srv, 'fr', tok, 3, st_i32(dict(good, b=p)), 422, 'b', 3, 'index out of range')
        p = good['b'].copy()
        p[0] = -1
        hostile(srv, 'fr', tok, 3, st_i32(dict(good, b=p)), 422, 'b', 0, 'negative index')
        p = good['w'].copy()
        p[19] = 2 ** 31 - 1
        hostile(srv, 'fr', tok, 3, st_i32(dict(good, w=p)), 422, 'w', 19, 'index 2^31-1')
        hostile(srv, 'fr', tok, 3, st_i32(good, dtype='F32'), 422, 'w', None, 'F32 rankings')
        hostile(srv, 'fr', tok, 3, st_i32(dict(good, b=good['b'][:6])), 422, 'b', None,
                'wrong length')
        hostile(srv, 'fr', tok, 3, st_i32({'w': good['w']}), 422, 'b', None, 'missing tensor')
        hostile(srv, 'fr', tok, 3, st_i32(dict(good, extra=np.arange(3))), 422, 'extra', None,
                'extra tensor')
        p64 = {k: v.astype(np.int64) for k, v in good.items()}
        p64['w'][4] = 2 ** 32 + 1
        hostile(srv, 'fr', tok, 3, npz(p64), 400, None, None, 'int64 past int32 (npz)',
                ctype=NPZ)
        p = good['w'].copy()
        p[11] = p[10]
        hostile(srv, 'fr', tok, 3, npz(dict(good, w=p), compressed=True), 422, 'w', 11,
                'duplicate index (deflated npz)', ctype=NPZ)
        hostile(srv, 'fr', tok, 3, npz({k: v.astype(np.float32) for k, v in good.items()}),
                422, 'w', None, 'float32 rankings (npz)', ctype=NPZ)
        # An extra member whose name is not UTF-8 (zip names are bytes): named, shown safely.
        raw = npz(dict(good, zzQQ=np.arange(3, dtype=np.int32))).replace(b'zzQQ', b'zz\xff\xfe')
        hostile(srv, 'fr', tok, 3, raw, 422, 'zz??', None, 'extra member, name not UTF-8',
                ctype=NPZ)
        hostile(srv, 'fr', tok, 3, np.zeros(27, '<f4').tobytes(), 415, None, None,
                'raw f32 body', ctype='application/octet-stream')
        st = srv.status('fr')
        check(st['round'] == 3 and st['received'] == 0,
              'after the refusals: round %r received %r, want 3 and 0' % (st['round'],
                                                                          st['received']))
        # Two rankings in, then kill -9: the restart replays them, the votes stay exact.
        for i in range(2):
            ranks = rankings(rng, SCHEMA, shaped=i == 1)
            ref.add(ranks)
            srv.post_update('fr', tok, 3, st_i32(ranks), ctype=ST)
        kill9(srv)
        print('kill -9 with 2 of %d rankings of round 3 accepted' % K)
        check(srv.status('fr')['received'] == 2, 'after the restart: %r' % srv.status('fr'))
        for i in range(2, K):
            ranks = rankings(rng, SCHEMA)
            ref.add(ranks)
            srv.post_update('fr', tok, 3, st_i32(ranks), ctype=ST)
        srv.get_model('fr', tok, '?after=3', timeout=60)
        model_forms(srv, 'fr', tok, ref.model(), 4)
        print('round 3 (across kill -9): the model equals numpy')
        # An earlier version by number is still the I32 file it was.
        _, _, buf = srv.get_model('fr', tok, '?round=0')
        check(all(np.array_equal(v.ravel(), np.arange(v.size)) for v in decode_i32(buf).values()),
              'v0 by number is not the identity')

        # Creation: what does not apply to a vote is refused by name, and the vote's bound.
        bad_spec(srv, {'weighted': True}, 'weighted')
        bad_spec(srv, {'update': 'delta'}, 'update')
        bad_spec(srv, {'server_lr': 0.5}, 'server_lr')
        bad_spec(srv, {'clip_norm': 1.0}, 'clip_norm')
        bad_spec(srv, {'dp_noise_multiplier': 1.0, 'clip_norm': 1.0}, 'clip_norm')
        bad_spec(srv, {'momentum': 0.9}, 'momentum')
        bad_spec(srv, {'trim': 0.1}, 'trim')
        bad_spec(srv, {'clients_per_round': 1000000,
                       'tensors': [{'name': 'big', 'shape': [5000], 'dtype': 'F32'}]},
                 'clients_per_round')
        bad_spec(srv, {'clients_per_round': 858994,
                       'tensors': [{'name': 'big', 'shape': [5001], 'dtype': 'F32'}]}, "'big'")
        # The bound's edge: 858993 x 5000 = 4294965000 <= 2^32 - 1 fits.
        srv.create_job({'name': 'edge', 'clients_per_round': 858993, 'algorithm': 'frl',
                        'tensors': [{'name': 'big', 'shape': [5001], 'dtype': 'F32'}]})
        print('k(n-1) <= 2^32 - 1 at its edge is taken, one more client is a 400')
    return ref


if __name__ == '__main__':
    e.main(run)
