# SPDX-License-Identifier: MIT
# The numpy side of basic.sh: writes five client updates and their float64 mean, then checks models.
"""Usage:
  basic_data.py gen DIR        writes DIR/u0..u4 (.bin raw f32 or .st safetensors with the
                               tensors shuffled), DIR/uploads (file ctype samples per line)
                               and DIR/ref.npz (the sample-weighted mean in float64)
  basic_data.py check FILE REF checks that the safetensors FILE holds w1 [3,4], b1 [4], w2 [4,2]
                               equal to REF (an .npz, or 'zeros') within 1e-5 x max magnitude
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402

SCHEMA = [
        {'name': 'w1', 'shape': [3, 4], 'dtype': 'F32'},
        {'name': 'b1', 'shape': [4], 'dtype': 'F32'},
        {'name': 'w2', 'shape': [4, 2], 'dtype': 'F32'},
    ]
SAMPLES = [10, 1, 250, 37, 3]


def gen(d):
    rng = np.random.default_rng(20240611)
    ups, lines = [], []
    for i, n in enumerate(SAMPLES):
        # Different magnitudes per client so that a wrong weighting shows.
        m = e.random_model(rng, SCHEMA, scale=1.0 + 3 * i)
        ups.append((n, m))
        if i % 2 == 0:
            path = os.path.join(d, 'u%d.bin' % i)
            body, ctype = e.raw_body(SCHEMA, m), 'application/octet-stream'
        else:
            order = [t['name'] for t in SCHEMA]
            rng.shuffle(order)
            if order == [t['name'] for t in SCHEMA]:
                order.reverse()
            path = os.path.join(d, 'u%d.st' % i)
            body, ctype = e.st_encode(m, order=order), 'application/x-safetensors'
        with open(path, 'wb') as f:
            f.write(body)
        lines.append('%s %s %d' % (path, ctype, n))
    with open(os.path.join(d, 'uploads'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    ref = e.weighted_mean(ups)
    np.savez(os.path.join(d, 'ref.npz'), **ref)


def check(path, refpath):
    with open(path, 'rb') as f:
        buf = f.read()
    if refpath == 'zeros':
        ref = e.zeros_model(SCHEMA)
    else:
        z = np.load(refpath)
        ref = {k: z[k] for k in z.files}
    _, _, order = e.st_decode(buf)
    e.check(order == [t['name'] for t in SCHEMA], 'tensors stored in order %s' % order)
    err = e.check_model(buf, SCHEMA, ref, what=os.path.basename(path))
    print('%s: max error %.3g' % (os.path.basename(path), err))


if __name__ == '__main__':
    try:
        if sys.argv[1] == 'gen':
            gen(sys.argv[2])
        elif sys.argv[1] == 'check':
            check(sys.argv[2], sys.argv[3])
        else:
            raise SystemExit(__doc__)
    except e.Failure as err:
        print('FAIL: %s' % err)
        sys.exit(1)
