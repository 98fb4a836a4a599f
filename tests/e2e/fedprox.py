# SPDX-License-Identifier: MIT
# fedprox: the job's status publishes proximal_mu (default 0.01, bounds [0, 1000], 400 naming the
# field otherwise) and so does every train task (a client credential cannot read the status), the
# server folds as FedAvg (model = numpy's weighted mean), and the stored mu survives a restart.
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [12, 5], 'dtype': 'F32'},
          {'name': 'b', 'shape': [7], 'dtype': 'F32'}]


def task_mu(srv, job, tok):
    """The train task's proximal_mu (None when the task has none)."""
    st, obj, _ = srv.json('GET', '/v1/jobs/%s/task' % job, token=tok)
    check(st == 200 and obj.get('action') == 'train', 'task of %s: %d %r' % (job, st, obj))
    return obj.get('proximal_mu')


def run():
    rng = np.random.default_rng(5)
    with e.Server() as srv:
        for bad, word in ((-0.1, 'out of range'), (1e9, 'out of range'), ('0.1', 'a number'),
                          (True, 'a number')):
            st, obj, _ = srv.json('POST', '/v1/jobs', {
                'name': 'bad', 'clients_per_round': 2, 'params': 4, 'algorithm': 'fedprox',
                'proximal_mu': bad}, token=srv.admin)
            check(st == 400 and obj['error'].startswith('proximal_mu: ') and
                  word in obj['error'], 'proximal_mu %r: %d %r' % (bad, st, obj))
        st, obj, _ = srv.json('POST', '/v1/jobs', {
            'name': 'bad', 'clients_per_round': 2, 'params': 4, 'proximal_mu': 0.1},
            token=srv.admin)
        check(st == 400 and 'for fedprox only' in obj['error'], 'mu on fedavg: %r' % obj)
        dflt = srv.create_job({'name': 'pd', 'clients_per_round': 2, 'params': 4,
                               'algorithm': 'fedprox'})
        check(srv.status('pd')['parameters'].get('proximal_mu') == 0.01,
              'default mu: %r' % srv.status('pd')['parameters'])
        job = srv.create_job({'name': 'p', 'clients_per_round': 5, 'tensors': SCHEMA,
                              'algorithm': 'fedprox', 'proximal_mu': 0.25})
        tok = job['token']
        # A client reads mu from the status with its job token.
        par = srv.status('p', token=tok)['parameters']
        check(par['algorithm'] == 'fedprox' and par['proximal_mu'] == 0.25, 'status %r' % par)
        check(task_mu(srv, 'p', tok) == 0.25, 'task mu %r' % task_mu(srv, 'p', tok))
        check(task_mu(srv, 'pd', dflt['token']) == 0.01, 'default task mu')
        # A client credential reads it from its task.
        st, cred, _ = srv.json('POST', '/v1/jobs/p/clients', {'client': 'c1'}, token=tok)
        check(st == 201, 'mint: %d %r' % (st, cred))
        check(task_mu(srv, 'p', cred['token']) == 0.25, 'task mu with a client credential')
        fa = srv.create_job({'name': 'fa', 'clients_per_round': 2, 'params': 4})
        check(task_mu(srv, 'fa', fa['token']) is None, 'a fedavg task carries proximal_mu')
        for r in range(2):
            ups = []
            for i in range(5):
                m = e.random_model(rng, SCHEMA, scale=1 + i)
                n = int(rng.integers(1, 40))
                ups.append((n, m))
                srv.post_update('p', tok, r, e.st_encode(m), n, 'application/x-safetensors')
            _, _, buf = srv.get_model('p', tok, '?after=%d' % r, timeout=60)
            e.check_model(buf, SCHEMA, e.weighted_mean(ups), 'fedprox round %d' % r)
        srv.restart()
        par = srv.status('p', token=tok)['parameters']
        check(par['proximal_mu'] == 0.25 and srv.status('pd')['parameters']['proximal_mu'] ==
              0.01, 'after a restart: %r' % par)
        check(task_mu(srv, 'p', tok) == 0.25, 'task mu after a restart')
        e.log('fedprox: mu published (0.25, default 0.01), FedAvg on the server, kept across '
              'a restart; dflt token %s...' % dflt['token'][:4])


if __name__ == '__main__':
    e.main(run)
