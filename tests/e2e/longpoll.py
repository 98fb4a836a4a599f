# SPDX-License-Identifier: MIT
# Long polls: ?after=v waits for a version newer than v; a model that is not newer leaves it
# waiting (304 only when its timeout passes), and one that is answers at once.
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

P = 4
SCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]


def poll(srv, tok, query, out):
    t0 = time.monotonic()
    st, hd, _ = srv.get_model('lp', tok, query, expect=None, timeout=30)
    out.append((st, hd.get('x-tributary-round'), time.monotonic() - t0))


def run():
    rng = np.random.default_rng(5)
    with e.Server() as srv:
        tok = srv.create_job({'name': 'lp', 'clients_per_round': 1, 'params': P})['token']
        ahead, next_v = [], []
        # One poll two versions ahead (after=1), one for the next version (after=0).
        t_ahead = threading.Thread(target=poll, args=(srv, tok, '?after=1&timeout=4', ahead))
        t_next = threading.Thread(target=poll, args=(srv, tok, '?after=0&timeout=20', next_v))
        t_ahead.start()
        t_next.start()
        time.sleep(0.5)
        m = {'weights': rng.standard_normal(P).astype(np.float32)}
        srv.post_update('lp', tok, 0, e.raw_body(SCHEMA, m), 1)
        t_next.join(30)
        check(next_v and next_v[0][0] == 200 and next_v[0][1] == '1',
              'after=0 once version 1 exists: want 200 with round 1, got %r' % next_v)
        t_ahead.join(30)
        # Version 1 is not newer than 1: the poll must wait out its 4 s, then 304.
        check(ahead and ahead[0][0] == 304, 'after=1 with only version 1: want 304, got %r' %
              ahead)
        check(ahead[0][2] >= 3.5, 'after=1 answered after %.2f s: woken by version 1 instead '
              'of waiting for its timeout (4 s) or version 2' % ahead[0][2])
        # And it is answered as soon as version 2 comes.
        late = []
        t_late = threading.Thread(target=poll, args=(srv, tok, '?after=1&timeout=20', late))
        t_late.start()
        time.sleep(0.5)
        srv.post_update('lp', tok, 1, e.raw_body(SCHEMA, m), 1)
        t_late.join(30)
        check(late and late[0][0] == 200 and late[0][1] == '2' and late[0][2] < 10,
              'after=1 once version 2 exists: want 200 with round 2 at once, got %r' % late)


if __name__ == '__main__':
    e.main(run)
