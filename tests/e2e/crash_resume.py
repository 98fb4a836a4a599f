# SPDX-License-Identifier: MIT
# A 202 survives kill -9 and SIGTERM of `tributary up`: the round's model is the mean of all 20.
import mmap
import os
import signal
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [3000], 'dtype': 'F32'}]
CPR = 20


def recovered(srv):
    return srv.metrics().get('tributary_updates_recovered_total')


def send(srv, tok, job, rnd, ups, lo, hi):
    """Updates lo..hi-1 of @ups (weight, model), each with its Idempotency-Key; the answers."""
    out = []
    for i in range(lo, hi):
        w, m = ups[i]
        _, obj, _ = srv.post_update(job, tok, rnd, e.raw_body(SCHEMA, m), samples=w,
                                    extra={'Idempotency-Key': '%s-r%d-c%d' % (job, rnd, i)})
        out.append(obj)
    return out


def kill_and_resume(srv, how, fan_in, cpr=CPR, before=10):
    """@before answered 202, then @how (kill -9 or SIGTERM), a restart, the rest + a resend."""
    job = 'crash-%s-%d-%d' % (how, fan_in, cpr)
    rng = np.random.default_rng(len(job) + fan_in)
    tok = srv.create_job({'name': job, 'clients_per_round': cpr, 'fan_in': fan_in,
                          'tensors': SCHEMA})['token']
    ups = [(i + 1, e.random_model(rng, SCHEMA)) for i in range(cpr)]
    first = send(srv, tok, job, 0, ups, 0, before)
    check([a['received'] for a in first] == list(range(1, before + 1)),
          'received counts before the %s: %r' % (how, first))
    if how == 'kill':
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.proc = None
    else:
        srv.stop()
        check('committed updates of open rounds for the next start' in srv.log_text(),
              'SIGTERM with an open round: no line saying the arena file is kept:\n' +
              srv.log_text())
    srv.start()
    check(recovered(srv) == before, '%s: tributary_updates_recovered_total %r, want %d' %
          (how, recovered(srv), before))
    st = srv.status(job)
    check(st.get('round') == 0 and st.get('received') == before,
          '%s: the job is at round %r with %r received, want 0 and %d' %
          (how, st.get('round'), st.get('received'), before))
    # The answer of the last one was "lost": its resend with the same key gets the same answer.
    again = send(srv, tok, job, 0, ups, before - 1, before)[0]
    check(again == first[-1], '%s: resend of a recovered update answered %r, first %r' %
          (how, again, first[-1]))
    rest = send(srv, tok, job, 0, ups, before, cpr)
    check([a['received'] for a in rest] == list(range(before + 1, cpr + 1)),
          '%s: received counts after the restart: %r (a resend was counted twice?)' %
          (how, [a['received'] for a in rest]))
    _, _, buf = srv.get_model(job, tok, '?after=0&timeout=60')
    e.check_model(buf, SCHEMA, e.weighted_mean(ups), '%s: round 0 of %s' % (how, job))
    # Stored: the round's records are released and its keys kept in the store, so a resend
    # gets the first answer and is not counted (this asserted 409 while keys were forgotten
    # once the round was stored, the limit issue 12 removes). Across a kill -9 too.
    for when in ('after the round is stored', 'after the round is stored and a kill -9'):
        st, obj, _ = srv.post_update(job, tok, 0, e.raw_body(SCHEMA, ups[0][1]), samples=1,
                                     expect=None, extra={'Idempotency-Key': job + '-r0-c0'})
        check(st == 202 and obj == first[0], '%s: a resend %s: %d %r, want 202 %r' %
              (how, when, st, obj, first[0]))
        s1 = srv.status(job)
        check(s1.get('round') == 1 and s1.get('received') == 0,
              '%s: a resend %s was counted: %r' % (how, when, s1))
        if when.endswith('kill -9'):
            break
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.proc = None
        srv.start()
    e.log('%s (fan-in %d, %d clients): %d recovered, the model is the mean of all %d' %
          (how, fan_in, cpr, before, cpr))


def fedbuff(srv):
    """FedBuff: records name the version folded into, with the staleness factor it had."""
    K, LR = 10, 0.8
    schema = [{'name': 'weights', 'shape': [64], 'dtype': 'F32'}]
    tok = srv.create_job({'name': 'fb', 'algorithm': 'fedbuff', 'buffer_size': K,
                          'max_staleness': 3, 'server_lr': LR, 'update': 'delta',
                          'tensors': schema})['token']
    rng = np.random.default_rng(6)

    def post(v, i, expect=202):
        d = {'weights': rng.standard_normal(64).astype(np.float32)}
        _, obj, _ = srv.post_update('fb', tok, v, e.raw_body(schema, d), i + 1, expect=expect,
                                    extra={'Idempotency-Key': 'fb-%d' % i})
        return obj, (obj.get('round'), v, i + 1, d['weights'].astype(np.float64))

    for i in range(K):
        post(0, i)
    srv.get_model('fb', tok, '?after=0&timeout=60')
    # Version 1 takes 3 stale updates (from version 0) and 2 fresh ones; then kill -9.
    log = [post(0 if i < 13 else 1, i)[1] for i in range(K, K + 5)]
    first = srv.post_update('fb', tok, 1, e.raw_body(schema, {'weights': np.zeros(64)}), 1,
                            expect=202, extra={'Idempotency-Key': 'fb-14'})[1]
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.start()
    check(recovered(srv) == 5, 'fedbuff: recovered %r, want 5' % recovered(srv))
    again = srv.post_update('fb', tok, 1, e.raw_body(schema, {'weights': np.ones(64)}), 9,
                            extra={'Idempotency-Key': 'fb-14'})[1]
    check(again == first, 'fedbuff resend: %r, first %r' % (again, first))
    log += [post(1, i)[1] for i in range(K + 5, 2 * K)]
    check(all(x[0] == 1 for x in log), 'fedbuff: versions answered %r' % [x[0] for x in log])
    _, _, buf = srv.get_model('fb', tok, '?round=1')
    _, prev, _ = e.st_decode(buf)
    num = sum(b / np.sqrt(1.0 + (V - v)) * d for V, v, b, d in log)
    ref = prev['weights'] + LR * num / sum(b for _, _, b, _ in log)
    _, _, buf = srv.get_model('fb', tok, '?after=1&timeout=60')
    e.check_model(buf, schema, {'weights': ref}, 'fedbuff version 2 across kill -9')
    # Version 1 is stored: a resend of fb-14 gets its first answer, and is not counted again
    # into version 2 (nor after another kill -9).
    for killed in (False, True):
        if killed:
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait()
            srv.proc = None
            srv.start()
        before = srv.status('fb').get('received')
        st, again, _ = srv.post_update('fb', tok, 1, e.raw_body(schema, {'weights': np.ones(64)}),
                                       9, expect=None, extra={'Idempotency-Key': 'fb-14'})
        check(st == 202 and again == first, 'fedbuff resend after version 1 is stored%s: %d %r, '
              'first %r' % (' and a kill -9' if killed else '', st, again, first))
        check(srv.status('fb').get('received') == before,
              'fedbuff: a resend after its version was stored was counted again')
    e.log('fedbuff: 5 recovered into version 1 with their staleness')


def full_round_without_model(srv):
    """A full round whose model could not be written yet when the server died: it finishes."""
    rng = np.random.default_rng(8)
    tok = srv.create_job({'name': 'full', 'clients_per_round': 4, 'fan_in': 2,
                          'tensors': SCHEMA})['token']
    # A directory where model v1 goes: the write fails (and is retried) until it is removed.
    block = os.path.join(srv.data_dir, 'data', 'jobs', 'full', 'round-1.safetensors')
    os.makedirs(block)
    ups = [(i + 1, e.random_model(rng, SCHEMA)) for i in range(4)]
    for w, m in ups:
        srv.post_update('full', tok, 0, e.raw_body(SCHEMA, m), w)
    e.wait_for(lambda: srv.status('full').get('store', {}).get('state') not in (None, 'ok'),
               30, 'the write of v1 to fail')
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    os.rmdir(block)
    srv.start()
    check(recovered(srv) == 4, 'full round: recovered %r, want 4' % recovered(srv))
    _, _, buf = srv.get_model('full', tok, '?after=0&timeout=60')
    e.check_model(buf, SCHEMA, e.weighted_mean(ups), 'full round finished after kill -9')
    e.log('a full round with no model at kill -9 finished after the restart')


def resend_same_key(srv):
    """Before any crash: a resend is answered as the first, counted once, its body discarded."""
    rng = np.random.default_rng(3)
    tok = srv.create_job({'name': 'keys', 'clients_per_round': 3, 'tensors': SCHEMA})['token']
    m0, m1, bad = (e.random_model(rng, SCHEMA) for _ in range(3))
    h = {'Idempotency-Key': 'same-key'}
    _, a, _ = srv.post_update('keys', tok, 0, e.raw_body(SCHEMA, m0), 2, extra=h)
    _, b, _ = srv.post_update('keys', tok, 0, e.raw_body(SCHEMA, bad), 7, extra=h)
    check(a == b == {'round': 0, 'received': 1}, 'resend answers %r then %r' % (a, b))
    for key in ('', 'x' * 65, 'has space', 'caf\u00e9'):
        st, obj, _ = srv.post_update('keys', tok, 0, e.raw_body(SCHEMA, m1), 1, expect=None,
                                     extra={'Idempotency-Key': key.encode('latin-1')
                                            .decode('latin-1')})
        check(st == 400 and 'Idempotency-Key' in obj.get('error', ''),
              'key %r: want 400 naming Idempotency-Key, got %d %r' % (key, st, obj))
    srv.post_update('keys', tok, 0, e.raw_body(SCHEMA, m1), 1,
                    extra={'Idempotency-Key': 'other'})
    srv.post_update('keys', tok, 0, e.raw_body(SCHEMA, m1), 3)
    _, _, buf = srv.get_model('keys', tok, '?after=0&timeout=60')
    e.check_model(buf, SCHEMA, e.weighted_mean([(2, m0), (1, m1), (3, m1)]), 'keys round 0')


def refusals(srv):
    """A second server on the data dir; a corrupt header; --fresh."""
    rng = np.random.default_rng(4)
    tok = srv.create_job({'name': 'bad', 'clients_per_round': 4, 'tensors': SCHEMA})['token']
    for i in range(2):
        srv.post_update('bad', tok, 0, e.raw_body(SCHEMA, e.random_model(rng, SCHEMA)), 1)
    path = srv.arena_files()[0]
    out = subprocess.run([e.BIN, 'up', '--listen', '127.0.0.1:0', '--data-dir',
                          os.path.join(srv.data_dir, 'data'), '--arena-mb', '64'] +
                         e.DATAPLANE_ARGS, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=30)
    txt = out.stdout.decode('utf-8', 'replace')
    check(out.returncode != 0, 'a second server on the same data dir ran:\n' + txt)
    check('another server running on this data dir' in txt,
          'the second server does not say why it stopped:\n' + txt)
    check(srv.status('bad').get('received') == 2, 'the second server disturbed the first')
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    check(os.path.exists(path), 'kill -9 removed the arena file %s' % path)
    # hugetlbfs takes no write(2): through a mapping, as the server writes it.
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, 2 << 20) as mm:
            mm[0:16] = b'\xff' * 16
    finally:
        os.close(fd)
    srv.start()
    txt = srv.log_text()
    check('moved aside to' in txt and 'ERROR' in txt, 'corrupt header: no clear error:\n' + txt)
    check(recovered(srv) == 0, 'corrupt header: recovered %r' % recovered(srv))
    check(srv.status('bad').get('round') == 0, 'corrupt header: the job moved on')
    # --fresh: the kept updates are dropped on purpose, said so.
    for i in range(3):
        srv.post_update('bad', tok, 0, e.raw_body(SCHEMA, e.random_model(rng, SCHEMA)), 1)
    srv.stop()
    srv.extra.append('--fresh')
    srv.start()
    srv.extra.remove('--fresh')
    txt = srv.log_text()
    check('removed (--fresh), with the 3 updates it kept' in txt,
          '--fresh does not say what it dropped:\n' + txt)
    check(recovered(srv) == 0, '--fresh: recovered %r' % recovered(srv))
    ups = [(1, e.random_model(rng, SCHEMA)) for _ in range(4)]
    for w, m in ups:
        srv.post_update('bad', tok, 0, e.raw_body(SCHEMA, m), w)
    _, _, buf = srv.get_model('bad', tok, '?after=0&timeout=60')
    e.check_model(buf, SCHEMA, e.weighted_mean(ups), '--fresh round 0')


def too_old_to_tell(srv):
    """Keys are kept for the last 16 stored rounds: a resend for an older one is a clear 409."""
    rng = np.random.default_rng(9)
    tok = srv.create_job({'name': 'old', 'clients_per_round': 1, 'tensors': SCHEMA})['token']
    m = e.random_model(rng, SCHEMA)
    for r in range(18):
        srv.post_update('old', tok, r, e.raw_body(SCHEMA, m), 1,
                        extra={'Idempotency-Key': 'old-%d' % r})
        srv.get_model('old', tok, '?after=%d&timeout=60' % r)
    # Round 2 is among the last 16 stored (2..17): its answer; round 1 is not: 409.
    st, obj, _ = srv.post_update('old', tok, 2, e.raw_body(SCHEMA, m), 1, expect=None,
                                 extra={'Idempotency-Key': 'old-2'})
    check(st == 202 and obj == {'round': 2, 'received': 1},
          'a resend for the 16th last stored round: %d %r' % (st, obj))
    st, obj, _ = srv.post_update('old', tok, 1, e.raw_body(SCHEMA, m), 1, expect=None,
                                 extra={'Idempotency-Key': 'old-1'})
    check(st == 409 and 'too old to tell' in obj.get('error', ''),
          'a resend for a round older than the kept ones: %d %r' % (st, obj))
    e.log('keys of the last 16 stored rounds answer again; older ones: 409 too old to tell')


def run():
    srv = e.Server(arena_mb=64)
    with srv:
        resend_same_key(srv)
        for how in ('kill', 'term'):
            for fan_in in (4, 20):
                kill_and_resume(srv, how, fan_in)
        # Fan-in 2 over 200 clients: three levels, partials of mids cover those of leaves.
        kill_and_resume(srv, 'kill', 2, cpr=200, before=123)
        fedbuff(srv)
        full_round_without_model(srv)
        refusals(srv)
        too_old_to_tell(srv)
    for f in srv.arena_files():
        check(not os.path.exists(f) or '.corrupt-' in f,
              'the clean stop left the arena file %s' % f)


if __name__ == '__main__':
    e.main(run)
