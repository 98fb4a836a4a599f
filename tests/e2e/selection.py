# SPDX-License-Identifier: MIT
# Client selection and per-round client config (issue 15): GET /task hands out ceil(K*f) tasks a
# round, the round closes at K updates, an update without a task gets 409, tasks survive kill -9;
# client_config's schedule reaches the task and the status; bad specs get 400 naming the field.
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [300], 'dtype': 'F32'}, {'name': 'b', 'shape': [4], 'dtype': 'F32'}]


def mint(srv, job, client):
    st, obj, _ = srv.json('POST', '/v1/jobs/%s/clients' % job, {'client': client},
                          token=srv.admin)
    check(st == 201, 'mint %s: %d %r' % (client, st, obj))
    return obj['token']


def task(srv, job, tok):
    st, obj, hd = srv.json('GET', '/v1/jobs/%s/task' % job, token=tok)
    check(st == 200, 'GET task: %d %r' % (st, obj))
    if obj['action'] == 'wait':
        check(hd.get('retry-after') == str(obj['retry_after_s']) and obj['retry_after_s'] >= 1,
              'wait without a matching Retry-After: %r %r' % (obj, hd))
    return obj


def poll_all(srv, job, toks):
    """Every client asks at once (threads): {client: answer}."""
    out, errs = {}, []

    def one(c):
        try:
            out[c] = task(srv, job, toks[c])
        except Exception as ex:  # noqa: BLE001 -- reported below
            errs.append('%s: %s' % (c, ex))
    ts = [threading.Thread(target=one, args=(c,)) for c in toks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errs, 'task requests failed: %s' % errs)
    return out


def kill9(srv):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.start()


def selection(srv):
    rng = np.random.default_rng(15)
    job = 'sel'
    jtok = srv.create_job({'name': job, 'tensors': SCHEMA, 'client_auth': 'required',
                           'selection': {'per_round': 5, 'overcommit': 1.4}})['token']
    st = srv.status(job)
    check(st['clients_per_round'] == 5, 'per_round sets clients_per_round: %r' % st)
    check(st['selection'] == {'per_round': 5, 'overcommit': 1.4, 'tasks_out': 0,
                              'tasks_max': 7}, 'status selection: %r' % st['selection'])
    toks = {'c%02d' % i: mint(srv, job, 'c%02d' % i) for i in range(20)}
    # The job token is no identity: 403.
    st_, obj, _ = srv.json('GET', '/v1/jobs/%s/task' % job, token=jtok)
    check(st_ == 403 and 'client token' in obj['error'], 'job token task: %d %r' % (st_, obj))

    ans = poll_all(srv, job, toks)
    train = sorted(c for c, a in ans.items() if a['action'] == 'train')
    wait = sorted(c for c, a in ans.items() if a['action'] == 'wait')
    check(len(train) == 7 and len(wait) == 13, '20 clients: %d train, %d wait (want 7, 13)' %
          (len(train), len(wait)))
    for c in train:
        a = ans[c]
        check(a == {'action': 'train', 'round': 0, 'version': 0, 'config': {},
                    'deadline_s': None, 'task': '0:' + c}, 'train task: %r' % a)
    for c in wait:
        check(ans[c]['round'] == 0, 'wait names the round: %r' % ans[c])
    check(srv.status(job)['selection']['tasks_out'] == 7, 'tasks_out after the handout')
    e.log('20 polling clients: 7 train (%s), 13 wait' % ' '.join(train))
    # Asking again: the same task; a waiting client still waits.
    for c in train[:3]:
        check(task(srv, job, toks[c]) == ans[c], 'a second ask by %s: another answer' % c)
    check(task(srv, job, toks[wait[0]])['action'] == 'wait', 'a waiting client got a task')

    ups = {c: (int(rng.integers(1, 50)), e.random_model(rng, SCHEMA)) for c in toks}

    def post(c, rnd, expect):
        w, m = ups[c]
        return srv.post_update(job, toks[c], rnd, e.raw_body(SCHEMA, m), w, expect=expect,
                               extra={'Idempotency-Key': '%s-%d' % (c, rnd)})[1]

    obj = post(wait[0], 0, 409)
    check('no task for round 0' in obj['error'] and '/task' in obj['error'],
          'update without a task: %r' % obj)
    # Two updates in, then kill -9: the tasks handed out are honoured after the restart.
    post(train[0], 0, 202)
    post(train[1], 0, 202)
    kill9(srv)
    check(srv.status(job)['selection']['tasks_out'] == 7, 'tasks_out after kill -9: %r' %
          srv.status(job)['selection'])
    # Asked in reverse order: without the kept tasks the last clients would get them now.
    ans2 = {c: task(srv, job, toks[c]) for c in sorted(toks, reverse=True)}
    check(sorted(c for c, a in ans2.items() if a['action'] == 'train') == train and
          all(ans2[c] == ans[c] for c in train), 'tasks after kill -9 differ')
    post(wait[1], 0, 409)
    rej = {k: v for k, v in srv.metrics().items()
           if k.startswith('tributary_updates_rejected_total{') and 'no_task' in k}
    check(list(rej.values()) == [1], 'no_task refusals in /metrics after kill -9: %r' % rej)
    for c in train[2:5]:
        post(c, 0, 202)
    closed = train[:5]
    srv.get_model(job, toks[train[0]], '?after=0&timeout=30')
    _, _, b = srv.get_model(job, toks[train[0]])
    e.check_model(b, SCHEMA, e.weighted_mean([ups[c] for c in closed]), 'round 0 model')
    e.log('round 0 closed at 5 updates; the model is their weighted mean')
    # The two task holders left over: their round closed, their tasks are void.
    obj = post(train[5], 0, 409)
    check('round' in obj['error'], 'a late update of a closed round: %r' % obj)
    # Round 1: seven new tasks, not more, first come: asked in reverse order, c19..c13 get them.
    order = sorted(toks, reverse=True)
    ans = {c: task(srv, job, toks[c]) for c in order}
    train1 = sorted(c for c, a in ans.items() if a['action'] == 'train')
    check(train1 == sorted(order[:7]), 'round 1 tasks went to %s, want %s' % (train1, order[:7]))
    check(len(train1) == 7 and all(ans[c]['round'] == 1 and ans[c]['version'] == 1 and
                                   ans[c]['task'] == '1:' + c for c in train1),
          'round 1 tasks: %r' % ans)
    nt = [c for c in toks if c not in train1]
    post(nt[0], 1, 409)
    st = srv.status(job)
    check(st['round'] == 1 and st['selection']['tasks_out'] == 7, 'round 1 status: %r' % st)
    e.log('round 1: 7 new tasks (%s); a client without one gets 409' % ' '.join(train1))


def client_config(srv):
    cc = {'values': {'lr': 0.1, 'epochs': 1, 'opt': 'sgd'},
          'schedule': [{'from_round': 1, 'values': {'lr': 0.05}},
                       {'from_round': 2, 'values': {'lr': 0.01, 'epochs': 2, 'nesterov': True}}]}
    want = [{'lr': 0.1, 'epochs': 1, 'opt': 'sgd'}, {'lr': 0.05, 'epochs': 1, 'opt': 'sgd'},
            {'lr': 0.01, 'epochs': 2, 'opt': 'sgd', 'nesterov': True}]
    tok = srv.create_job({'name': 'cfg', 'tensors': SCHEMA, 'clients_per_round': 1,
                          'client_config': cc})['token']
    alice = mint(srv, 'cfg', 'alice')
    zero = e.raw_body(SCHEMA, e.zeros_model(SCHEMA))
    for r in range(3):
        if r == 1:
            srv.restart()  # the config is kept with the job
        check(srv.status('cfg')['client_config'] == want[r], 'status config of round %d: %r' %
              (r, srv.status('cfg').get('client_config')))
        for t in (tok, alice):  # without selection the job token gets a task too
            a = task(srv, 'cfg', t)
            check(a['action'] == 'train' and a['round'] == r and a['config'] == want[r],
                  'task of round %d: %r' % (r, a))
        check(task(srv, 'cfg', tok)['task'] == '%d:job' % r, 'the job token task')
        srv.post_update('cfg', tok, r, zero, 1)
        srv.get_model('cfg', tok, '?after=%d&timeout=30' % r)
    check('client_config' not in srv.status('sel'), 'a job without client_config shows one')
    e.log('client_config: rounds 0, 1, 2 carry %s' % [w['lr'] for w in want])


def refusals(srv):
    base = {'name': 'bad', 'tensors': SCHEMA, 'client_auth': 'required'}
    cases = [
        ({'selection': {'per_round': 5, 'overcommit': 0.5}}, 'selection.overcommit'),
        ({'selection': {'per_round': 5, 'overcommit': 5}}, 'selection.overcommit'),
        ({'selection': {'per_round': 0}}, 'selection.per_round'),
        ({'selection': {'per_round': 5}, 'clients_per_round': 4}, 'clients_per_round'),
        ({'selection': {'per_round': 5}, 'client_auth': 'optional'}, 'client_auth'),
        ({'selection': {'per_round': 5}, 'algorithm': 'fedbuff', 'buffer_size': 5}, 'fedbuff'),
        ({'clients_per_round': 2, 'client_config': {'values': {'a': {'b': 1}}}},
         'client_config.values.a'),
        ({'clients_per_round': 2, 'client_config': {'values': {'s': 'x' * 9000}}},
         'client_config'),
        ({'clients_per_round': 2, 'client_config': {'values': {'k%d' % i: 'y' * 250
                                                               for i in range(32)}}},
         'bytes of JSON'),
        ({'clients_per_round': 2, 'client_config': {'schedule': [
            {'from_round': 2, 'values': {}}, {'from_round': 1, 'values': {}}]}},
         'client_config.schedule[1].from_round'),
    ]
    for extra, field in cases:
        spec = dict(base)
        spec.update(extra)
        st, obj, _ = srv.json('POST', '/v1/jobs', spec, token=srv.admin)
        check(st == 400 and field in obj['error'], '%r: want 400 naming %s, got %d %r' %
              (extra, field, st, obj))
    st, _, _ = srv.json('GET', '/v1/jobs/bad', token=srv.admin)
    check(st == 404, 'a refused spec made a job')
    e.log('%d bad specs refused, each naming its field' % len(cases))


def tools(srv):
    """simulate on a selecting job: 20 clients poll, 7 train, 5 close each round (checked
    against the reference); status shows the tasks out."""
    srv.create_job({'name': 'simsel', 'params': 500, 'client_auth': 'required',
                    'selection': {'per_round': 5, 'overcommit': 1.4}})
    p = subprocess.run([e.BIN, 'simulate', '--url', 'http://127.0.0.1:%d' % srv.port,
                        '--data-dir', os.path.join(srv.data_dir, 'data'), '--job', 'simsel',
                        '--clients', '20', '--rounds', '3', '--params', '500'],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    check(p.returncode == 0, 'simulate on a selecting job: rc %d\n%s' % (p.returncode, out[-3000:]))
    for r in range(3):
        # Usually 7 tasks; fewer when the round closed before the last clients asked (they
        # then got round r+1's tasks, counted as waiting here). Never more than 7.
        m = re.search(r'round %d: (\d+) tasks for 20 clients \((\d+) told to wait\); 5 updates '
                      r'closed the round, (\d+) late' % r, out)
        check(m and 5 <= int(m.group(1)) <= 7 and int(m.group(1)) + int(m.group(2)) == 20 and
              int(m.group(3)) == int(m.group(1)) - 5, 'simulate round %d:\n%s' % (r, out[-3000:]))
    st = srv.status('simsel')
    check(st['model_round'] == 3 and st['last_round_clients'] == 5, 'after simulate: %r' % st)
    # Round 3's tasks: simulate's slowest clients may hold some already (they asked after
    # round 2 closed); one more, then `status` shows the count the job's status has.
    before = srv.status('simsel')['selection']['tasks_out']
    tok = mint(srv, 'simsel', 'probe')
    check(task(srv, 'simsel', tok)['action'] == ('train' if before < 7 else 'wait'), 'probe')
    n = srv.status('simsel')['selection']['tasks_out']
    check(n == min(before + 1, 7), 'tasks_out %d after the probe, %d before' % (n, before))
    p = subprocess.run([e.BIN, 'status', '--url', 'http://127.0.0.1:%d' % srv.port,
                        '--data-dir', os.path.join(srv.data_dir, 'data'), 'simsel'],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and 'tasks %d/7 out' % n in p.stdout, 'status: %d\n%s%s' %
          (p.returncode, p.stdout, p.stderr))
    e.log('simulate: 3 rounds, at most 7 tasks for 20 clients, closed at 5, models exact; '
          'status shows tasks %d/7' % n)


def run():
    with e.Server() as srv:
        tools(srv)
        refusals(srv)
        selection(srv)
        client_config(srv)


if __name__ == '__main__':
    e.main(run)
