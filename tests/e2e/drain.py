# SPDX-License-Identifier: MIT
# A clean stop right after a round fills still writes that round's model: no update of a full
# round is lost (it used to be, when SIGTERM tore the folding functions down).
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

P = 4000000
SCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]


def run():
    rng = np.random.default_rng(8)
    # tcp copies every update twice: the round is still folding when the signal comes.
    with e.Server(arena_mb=256, extra=['--dataplane', 'tcp']) as srv:
        tok = srv.create_job({'name': 'dr', 'clients_per_round': 4, 'fan_in': 2,
                              'params': P})['token']
        ups = []
        for i in range(4):
            m = e.random_model(rng, SCHEMA)
            ups.append((i + 1, m))
            srv.post_update('dr', tok, 0, e.raw_body(SCHEMA, m), samples=i + 1)
        srv.stop(timeout=40)  # one SIGTERM (a second one would stop at once)
        log = srv.log_text()
        srv.start()
        st = srv.status('dr')
        check(st['model_round'] == 1, 'the full round was lost on a clean stop: %r\n%s' %
              (st, log[-2000:]))
        _, _, buf = srv.get_model('dr', tok, '?round=1')
        e.check_model(buf, SCHEMA, e.weighted_mean(ups), 'model v1 after the stop')
        print('full round written during the stop: %s' %
              ('waited' if 'waiting for full rounds' in log else 'it was already done'))


if __name__ == '__main__':
    e.main(run)
