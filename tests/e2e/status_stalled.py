# SPDX-License-Identifier: MIT
# `tributary status` shows the open round's age and the time since its last update, and flags a
# stalled round: one update of three, min_clients 3 and round_timeout_s 1 is healthy at first and
# STALLED past its deadline (it waits for min_clients); a paused job is not flagged.
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [4], 'dtype': 'F32'}]


def status(srv):
    r = subprocess.run([e.BIN, 'status', '--url', 'http://127.0.0.1:%d' % srv.port,
                        '--data-dir', os.path.join(srv.data_dir, 'data')],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, 'tributary status: %d %s' % (r.returncode, r.stderr))
    return r.stdout


def run():
    with e.Server() as srv:
        tok = srv.create_job({'name': 'slow', 'clients_per_round': 3, 'min_clients': 3,
                              'round_timeout_s': 2, 'tensors': SCHEMA})['token']
        out = status(srv)
        check('round 0 open' not in out, 'a round nobody sent to is not open yet:\n' + out)
        st = srv.status('slow')
        check(st['round_age_s'] is None and st['last_update_age_s'] is None, repr(st))
        srv.post_update('slow', tok, 0, e.raw_body(SCHEMA, {'w': np.ones(4, np.float32)}))
        out = status(srv)
        check('round 0 open' in out and 'last update' in out and 'STALLED' not in out,
              'a fresh round:\n' + out)
        st = srv.status('slow')
        check(0 <= st['round_age_s'] < 2 and st['last_update_age_s'] <= st['round_age_s'] and
              abs(st['round_opened_at'] - time.time()) < 5, repr(st))
        time.sleep(2.5)
        out = status(srv)
        check('STALLED' in out and 'round_timeout_s 2' in out, 'past the deadline:\n' + out)
        st, _, _ = srv.json('POST', '/v1/jobs/slow/pause', token=tok)
        check(st == 200, 'pause %d' % st)
        out = status(srv)
        check('round 0 open' in out and 'STALLED' not in out, 'paused is not stalled:\n' + out)
        e.log(out)
        srv.check_log()


if __name__ == '__main__':
    e.main(run)
