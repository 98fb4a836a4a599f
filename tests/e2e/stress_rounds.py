# SPDX-License-Identifier: MIT
# Many short rounds with many leaves (fan-in 1): every round must complete, none may be lost
# to a function that exits just after handing off its aggregate.
import os
import sys
import threading

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

JOB = 'stress'
CPR = 8
ROUNDS = 25
P = 256
SCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]


def run():
    rng = np.random.default_rng(23)
    with e.Server() as srv:
        tok = srv.create_job({'name': JOB, 'clients_per_round': CPR, 'fan_in': 1,
                              'params': P})['token']
        for r in range(ROUNDS):
            models = [{'weights': rng.standard_normal(P).astype(np.float32)}
                      for _ in range(CPR)]
            got = [None] * CPR

            def client(i):
                try:
                    got[i] = srv.post_update(JOB, tok, r, e.raw_body(SCHEMA, models[i]),
                                             i + 1, expect=None)[0]
                except Exception as ex:
                    got[i] = ex
            threads = [threading.Thread(target=client, args=(i,)) for i in range(CPR)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            check(got == [202] * CPR, 'round %d updates: %r' % (r, got))
            st, hd, b = srv.get_model(JOB, tok, '?after=%d&timeout=20' % r, expect=None)
            if st != 200:
                fails = srv.metrics()['tributary_functions_failed_total']
                raise e.Failure('round %d never completed: GET ?after=%d answered %d after '
                                '20 s (functions failed: %d)' % (r, r, st, fails))
            e.check_model(b, SCHEMA, e.weighted_mean([(i + 1, models[i])
                                                      for i in range(CPR)]),
                          'round %d' % r)
        m = srv.metrics()
        check(m['tributary_functions_failed_total'] == 0, 'functions failed: %r' %
              m['tributary_functions_failed_total'])


if __name__ == '__main__':
    e.main(run)
