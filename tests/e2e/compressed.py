# SPDX-License-Identifier: MIT
# Compressed updates (F16, BF16, int8 with a scale) are dequantised while folding; the model
# equals the weighted mean of the decoded values, and bad ones are refused before the aggregate.
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [33, 9], 'dtype': 'F32'},
          {'name': 'b', 'shape': [1001], 'dtype': 'F32'}]


def st_file(entries):
    """entries: [(name, dtype, shape, raw bytes)] -> safetensors bytes."""
    hdr, blobs, off = {}, [], 0
    for name, dt, shape, raw in entries:
        hdr[name] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)


def encode(m, kind):
    """(body, {name: float64 decoded values}) for one update in @kind."""
    ents, dec = [], {}
    for t in SCHEMA:
        x = np.asarray(m[t['name']], np.float32)
        if kind == 'F32':
            ents.append((t['name'], 'F32', x.shape, x.astype('<f4').tobytes()))
            dec[t['name']] = x.astype(np.float64)
        elif kind == 'F16':
            h = x.astype('<f2')
            ents.append((t['name'], 'F16', x.shape, h.tobytes()))
            dec[t['name']] = h.astype(np.float64)
        elif kind == 'BF16':
            bits = (x.view(np.uint32) >> 16).astype('<u2')  # truncation is a valid bf16
            ents.append((t['name'], 'BF16', x.shape, bits.tobytes()))
            dec[t['name']] = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            scale = np.float32(np.max(np.abs(x)) / 127.0)
            q = np.clip(np.round(x / scale), -127, 127).astype('i1')
            ents.append((t['name'], 'I8', x.shape, q.tobytes()))
            ents.append((t['name'] + '.scale', 'F32', [], np.float32(scale).tobytes()))
            dec[t['name']] = q.astype(np.float64) * np.float64(scale)
    return st_file(ents), dec


def run():
    rng = np.random.default_rng(77)
    with e.Server() as srv:
        job = srv.create_job({'name': 'q', 'clients_per_round': 8, 'fan_in': 3,
                              'tensors': SCHEMA})
        tok = job['token']
        # Refused before the aggregate: NaN in F16, int8 without its scale, a bad scale.
        m = e.random_model(rng, SCHEMA)
        body, _ = encode(m, 'F16')
        bad = bytearray(body)
        hl = struct.unpack('<Q', bad[:8])[0]
        bad[8 + hl:8 + hl + 2] = b'\x00\x7e'  # an F16 NaN in the first value
        st, obj, _ = srv.post_update('q', tok, 0, bytes(bad), 1, 'application/x-safetensors',
                                     expect=422)
        check('non-finite' in obj['error'], 'F16 NaN: %r' % obj)
        body, _ = encode(m, 'I8')
        hdr = json.loads(body[8:8 + struct.unpack('<Q', body[:8])[0]])
        ents = []
        data = body[8 + struct.unpack('<Q', body[:8])[0]:]
        for name, v in hdr.items():
            if name.endswith('.scale'):
                continue
            b0, b1 = v['data_offsets']
            ents.append((name, v['dtype'], v['shape'], data[b0:b1]))
        st, obj, _ = srv.post_update('q', tok, 0, st_file(ents), 1, 'application/x-safetensors',
                                     expect=422)
        check('scale' in obj['error'], 'I8 without scale: %r' % obj)
        check(srv.status('q')['received'] == 0, 'a refused update was counted')
        # Two rounds of mixed formats against the decoded reference.
        sizes = {}
        for r in range(2):
            ups = []
            for i in range(8):
                kind = ('F32', 'F16', 'BF16', 'I8')[i % 4]
                m = e.random_model(rng, SCHEMA, scale=1 + i)
                body, dec = encode(m, kind)
                sizes[kind] = len(body)
                n = int(rng.integers(1, 30))
                ups.append((n, dec))
                srv.post_update('q', tok, r, body, n, 'application/x-safetensors')
            _, _, buf = srv.get_model('q', tok, '?after=%d' % r, timeout=60)
            e.check_model(buf, SCHEMA, e.weighted_mean(ups), 'round %d' % r)
        print('bytes on the wire per update: ' +
              ', '.join('%s %d (%.2f of F32)' % (k, v, v / sizes['F32'])
                        for k, v in sorted(sizes.items())))
        check(sizes['F16'] < 0.55 * sizes['F32'] and sizes['I8'] < 0.3 * sizes['F32'],
              'compressed bodies are not smaller: %r' % sizes)


if __name__ == '__main__':
    e.main(run)
