# SPDX-License-Identifier: MIT
# The three data planes give bit-identical models; shm+bpf is the default and shows its counters.
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

JOB = 'planes'
CPR = 10
ROUNDS = 2
SCHEMA = [
        {'name': 'w', 'shape': [37, 11], 'dtype': 'F32'},
        {'name': 'b', 'shape': [11], 'dtype': 'F32'},
        {'name': 'v', 'shape': [1001], 'dtype': 'F32'},
    ]


def updates():
    """The same updates, in the same order, for every data plane."""
    rng = np.random.default_rng(2024)
    out = []
    for r in range(ROUNDS):
        rnd = []
        for i in range(CPR):
            m = e.random_model(rng, SCHEMA, scale=10.0 ** (i % 4 - 1))
            samples = int(rng.integers(1, 500))
            if i % 2:
                order = [t['name'] for t in SCHEMA][::-1]
                body, ctype = e.st_encode(m, order=order), 'application/x-safetensors'
            else:
                body, ctype = e.raw_body(SCHEMA, m), 'application/octet-stream'
            rnd.append((samples, m, body, ctype))
        out.append(rnd)
    return out


def run_plane(mode, ups):
    """Run every round on @mode ('' = the server's default); returns the model files."""
    extra = ['--dataplane', mode] if mode else []
    models = []
    with e.Server(extra=extra) as srv:
        log = srv.log_text()
        if mode:
            check('data plane: %s' % mode in log, '%s: the log does not name the data plane:\n%s'
                  % (mode, log))
        job = srv.create_job({'name': JOB, 'clients_per_round': CPR, 'fan_in': 3,
                              'tensors': SCHEMA})
        tok = job['token']
        for r, rnd in enumerate(ups):
            # One connection, one update at a time: the same acceptance order everywhere.
            for samples, _, body, ctype in rnd:
                srv.post_update(JOB, tok, r, body, samples=samples, ctype=ctype)
            _, hd, buf = srv.get_model(JOB, tok, '?after=%d' % r, timeout=60)
            check(hd.get('x-tributary-round') == str(r + 1), '%s: round header %r' %
                  (mode, hd.get('x-tributary-round')))
            ref = e.weighted_mean([(s, m) for s, m, _, _ in rnd])
            e.check_model(buf, SCHEMA, ref, '%s round %d' % (mode or 'default', r))
            models.append(buf)
        if not mode or mode == 'shm+bpf':
            check('data plane: shm+bpf' in srv.log_text(),
                  'as root on this kernel the default must be shm+bpf:\n' + srv.log_text())
            bpftool = shutil.which('bpftool') or '/usr/sbin/bpftool'
            if os.access(bpftool, os.X_OK):
                out = subprocess.run([bpftool, 'prog', 'show'], capture_output=True,
                                     text=True).stdout
                check('sk_msg' in out and 'route_msg' in out,
                      'bpftool prog show does not list the sk_msg program:\n' + out)
            met = srv.metrics()
            msgs = {k: v for k, v in met.items() if k.startswith('tributary_fn_messages_total')}
            check(msgs and any(v > 0 for v in msgs.values()),
                  'no non-zero per-function message counter in /metrics: %r' % msgs)
            check(met.get('tributary_bpf_records_total{verdict="redirect"}', 0) >=
                  ROUNDS * CPR, 'the sk_msg router redirected too few records: %r' %
                  {k: v for k, v in met.items() if 'bpf' in k})
            # Under the owner ("up") and boot id, maybe with a suffix: the log names it.
            line = [ln for ln in srv.log_text().splitlines() if 'pinned under ' in ln]
            check(line, 'no "pinned under" in the data plane line')
            pins = line[0].split('pinned under ', 1)[1].rstrip(')').strip()
            check(pins.startswith('/sys/fs/bpf/tributary/up/'), 'pins at %s' % pins)
            check(os.path.isdir(pins), 'no pinned objects under %s' % pins)
            pins_ino = os.stat(pins).st_ino
            for f in os.listdir(pins):
                mode_bits = os.stat(os.path.join(pins, f)).st_mode & 0o777
                check(mode_bits == 0o600, 'pin %s has mode %o' % (f, mode_bits))
    if not mode or mode == 'shm+bpf':
        # Another `up` on this host may have claimed the same name since: not ours then.
        left = os.path.exists(pins) and os.stat(pins).st_ino == pins_ino
        check(not left, 'pins %s left after a clean stop' % pins)
    return models


def run():
    ups = updates()
    if os.geteuid() != 0:
        print('not root: shm+bpf cannot load here; comparing shm+unix and tcp only')
        planes = ['shm+unix', 'tcp']
    else:
        planes = ['', 'shm+unix', 'tcp']
    got = {p: run_plane(p, ups) for p in planes}
    base = got[planes[0]]
    for p in planes[1:]:
        for r in range(ROUNDS):
            check(got[p][r] == base[r], 'round %d: the %s model differs from the %s model '
                  '(bit for bit)' % (r, p, planes[0] or 'shm+bpf'))
    print('models of %d rounds bit-identical across %s' %
          (ROUNDS, ', '.join(p or 'shm+bpf (default)' for p in planes)))


if __name__ == '__main__':
    e.main(run)
