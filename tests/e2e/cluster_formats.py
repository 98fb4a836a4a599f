# SPDX-License-Identifier: MIT
"""NumPy bodies across nodes: a round-robin controller makes updates cross to the node that folds
them, so .npz members inflated after the body in the slot travel with it (the forwarded bytes are
the body and its inflated members, the segments relative to them). Mixed npz (deflated, float64
stored, int8), npy and raw bodies over three gateways give the float64 weighted mean; a node
serves the model as npz on request.

Needs root (ip netns, veth, a bridge): exit status 77 otherwise, as cluster.py.
"""
import io
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import cluster as c  # noqa: E402
import netns_cluster  # noqa: E402
from e2e_common import BIN, arena_files_in, check, log, main, remove_arena_files  # noqa: E402

CPR = 12


def encode(x, kind):
    """(body, content type, the float64 values the server folds) for one update of x."""
    b = io.BytesIO()
    if kind == 'npz-deflated':
        np.savez_compressed(b, weights=x)
        return b.getvalue(), 'application/x-npz', x.astype(np.float64)
    if kind == 'npz-f64':
        y = x.astype(np.float64) * (1 + 1e-9)
        np.savez(b, weights=y)
        return b.getvalue(), 'application/x-npz', y.astype(np.float32).astype(np.float64)
    if kind == 'npz-i8':
        s = np.float32(np.max(np.abs(x)) / 127.0)
        q = np.clip(np.round(x / s), -127, 127).astype('i1')
        np.savez_compressed(b, weights=q, **{'weights.scale': s})
        return b.getvalue(), 'application/x-npz', q.astype(np.float64) * np.float64(s)
    if kind == 'npy':
        np.save(b, x)
        return b.getvalue(), 'application/x-npy', x.astype(np.float64)
    return x.tobytes(), 'application/octet-stream', x.astype(np.float64)


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(c.SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(c.SKIP)
    net = netns_cluster.Net(3)
    c.CTL_IP, c.NODE_IP = net.ctl_ip, net.node_ip
    tmp = tempfile.mkdtemp(prefix='trib-clfmt-')
    procs = []
    try:
        net.up()
        ctl, nodes = netns_cluster.start(net, BIN, tmp, placement='round-robin',
                                         node_args=['--no-huge'])
        procs += [ctl] + nodes
        cl = c.Client(net.ctl)
        c.wait_joined(cl)
        admin = netns_cluster.admin_token(tmp)
        tok = c.create_job(cl, admin, 'f', CPR, 4)
        c.wait_for(lambda: all(cl.call(h, 'GET', '/v1/jobs/f', token=tok)[0] == 200
                               for h in c.NODE_IP), 5, 'the job known on every node')
        rng = np.random.default_rng(16)
        kinds = ('npz-deflated', 'npz-f64', 'npz-i8', 'npy', 'raw')
        xs, ws, crossed = [], [], {}
        for k in range(CPR):
            x = rng.uniform(-1, 1, c.PARAMS).astype(np.float32)
            w = int(rng.integers(1, 50))
            kind = kinds[k % len(kinds)]
            body, ct, dec = encode(x, kind)
            st, b = cl.call(c.NODE_IP[k % 3], 'POST', '/v1/jobs/f/updates', body,
                            {'Content-Type': ct, 'X-Tributary-Round': '0',
                             'X-Tributary-Samples': str(w)}, tok)
            check(st == 202, 'update %d (%s): %d %s' % (k, kind, st, b[:300]))
            if c.json.loads(b)['node'] != 'n%d' % (k % 3):
                crossed[kind] = crossed.get(kind, 0) + 1
            xs.append(dec)
            ws.append(w)
        m = c.get_model(cl, c.NODE_IP[1], 'f', tok, 1)
        c.check_model(m, xs, ws, 'mixed npz/npy/raw across nodes')
        check(crossed.get('npz-deflated', 0) + crossed.get('npz-i8', 0) > 0,
              'no inflated npz update crossed nodes: %r' % crossed)
        st, b = cl.call(c.NODE_IP[2], 'GET', '/v1/jobs/f/model?round=1',
                        headers={'Accept': 'application/x-npz'}, token=tok)
        check(st == 200, 'GET model as npz: %d %s' % (st, b[:200]))
        with np.load(io.BytesIO(b)) as z:
            check(np.array_equal(z['weights'], m), 'the npz model differs from safetensors')
        log('cluster: %d updates crossed nodes by kind %r; the model is exact and served as '
            'npz' % (sum(crossed.values()), crossed))
        for p in nodes + [ctl]:
            c.stop(p)
    except BaseException:
        for p in procs:
            try:
                sys.stdout.write('===== %s log (tail) =====\n%s\n' %
                                 (p.name, p.log_text()[-6000:]))
            except OSError:
                pass
        raise
    finally:
        for p in procs:
            p.close()
        logs = []
        for p in procs:
            try:
                logs.append(p.log_text())
            except OSError:
                pass
        remove_arena_files(arena_files_in(logs))
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main(scenario)
