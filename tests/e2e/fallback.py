# SPDX-License-Identifier: MIT
# Without the capability to load eBPF, the server says why once, loudly, and runs on shm+unix.
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

NOBODY = 65534
SCHEMA = [{'name': 'weights', 'shape': [4096], 'dtype': 'F32'}]


def run():
    if os.geteuid() != 0:
        print('already unprivileged: running as this user')
        wrap, owner = [], None
    else:
        # setpriv (util-linux) drops to nobody with no capabilities at all.
        wrap = ['/usr/bin/setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY,
                '--clear-groups', '--inh-caps=-all', '--bounding-set=-all']
        owner = NOBODY
    with e.Server(wrap=wrap, owner=owner) as srv:
        log = srv.log_text()
        falls = [ln for ln in log.splitlines() if 'FALLING BACK to shm+unix' in ln]
        check(len(falls) == 1, 'want exactly one fallback line, got %d:\n%s' % (len(falls), log))
        check('WARN' in falls[0] and 'shm+bpf is not available' in falls[0],
              'the fallback line must be a warning that says why: %r' % falls[0])
        check('data plane: shm+bpf (' not in log, 'claims shm+bpf while falling back:\n' + log)
        job = srv.create_job({'name': 'fb', 'clients_per_round': 5, 'fan_in': 2,
                              'tensors': SCHEMA})
        rng = np.random.default_rng(5)
        ups = []
        for i in range(5):
            m = e.random_model(rng, SCHEMA)
            ups.append((i + 1, m))
            srv.post_update('fb', job['token'], 0, e.raw_body(SCHEMA, m), samples=i + 1)
        _, _, buf = srv.get_model('fb', job['token'], '?after=0', timeout=60)
        e.check_model(buf, SCHEMA, e.weighted_mean(ups), 'fallback round')
        met = srv.metrics()
        check(met.get('tributary_dataplane_info{mode="shm+unix"}') == 1,
              '/metrics does not say shm+unix')
        print('fallback line: ' + falls[0])


if __name__ == '__main__':
    e.main(run)
