# SPDX-License-Identifier: MIT
# --durability disk: a 202 survives kill -9 and the loss of the arena file (a reboot): the log is
# replayed (FedBuff too); with the arena kept, nothing is folded twice; the log of a stored round
# is cut; a data dir on a small tmpfs that fills up answers 503 (the log's cause), never 202, and
# once space is back every update resent with its key is counted exactly once.
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [3000], 'dtype': 'F32'}]
CPR = 20
DISK = ['--durability', 'disk']


def metric(srv, name):
    return srv.metrics().get(name, 0)


def kill9(srv):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None


def reboot(srv):
    """kill -9, and the arena file goes as it does when the machine restarts."""
    kill9(srv)
    files = srv.arena_files()
    check(files and all(os.path.exists(f) for f in files[-1:]),
          'no arena file to remove: %r' % files)
    e.remove_arena_files(files)


def wal_files(srv):
    top = os.path.join(srv.data_dir, 'data', 'wal')
    out = []
    for d, _, names in os.walk(top):
        out += [os.path.join(d, n) for n in names if n.endswith('.wal')]
    return out


def send(srv, tok, job, rnd, ups, lo, hi):
    out = []
    for i in range(lo, hi):
        w, m = ups[i]
        _, obj, _ = srv.post_update(job, tok, rnd, e.raw_body(SCHEMA, m), samples=w,
                                    extra={'Idempotency-Key': '%s-r%d-c%d' % (job, rnd, i)})
        out.append(obj)
    return out


def twenty(srv, how):
    """10 answered 202, kill -9 (and the arena file gone: @how 'reboot'), restart, the other 10."""
    job = 'disk-' + how
    rng = np.random.default_rng(len(job))
    tok = srv.create_job({'name': job, 'clients_per_round': CPR, 'fan_in': 4,
                          'tensors': SCHEMA})['token']
    ups = [(i + 1, e.random_model(rng, SCHEMA)) for i in range(CPR)]
    first = send(srv, tok, job, 0, ups, 0, 10)
    m = srv.metrics()
    check(m.get('tributary_wal_appends_total', 0) >= 10,
          'tributary_wal_appends_total %r after 10 updates' % m.get('tributary_wal_appends_total'))
    check(0 < m.get('tributary_wal_fsyncs_total', 0) <= m['tributary_wal_appends_total'],
          'fsyncs %r for %r appends' % (m.get('tributary_wal_fsyncs_total'),
                                        m['tributary_wal_appends_total']))
    check(wal_files(srv), 'no log segment after 10 updates')
    if how == 'reboot':
        reboot(srv)
    else:
        kill9(srv)
    srv.start()
    m = srv.metrics()  # served: recovery is done
    if how == 'reboot':
        check('put back from the log' in srv.log_text(), 'no replay line in the log:\n' +
              srv.log_text())
        check(m.get('tributary_wal_updates_recovered_total') == 10,
              'reboot: tributary_wal_updates_recovered_total %r, want 10' %
              m.get('tributary_wal_updates_recovered_total'))
    else:
        # The arena put them back: the log's copies are duplicates, folded once.
        check(m.get('tributary_updates_recovered_total') == 10 and
              m.get('tributary_wal_updates_recovered_total', -1) == 0,
              'kill -9 with the arena kept: recovered %r (wal %r), want 10 and 0' %
              (m.get('tributary_updates_recovered_total'),
               m.get('tributary_wal_updates_recovered_total')))
    st = srv.status(job)
    check(st.get('round') == 0 and st.get('received') == 10,
          '%s: round %r received %r, want 0 and 10' % (how, st.get('round'), st.get('received')))
    again = send(srv, tok, job, 0, ups, 9, 10)[0]
    check(again == first[-1], '%s: resend answered %r, first %r' % (how, again, first[-1]))
    rest = send(srv, tok, job, 0, ups, 10, CPR)
    check([a['received'] for a in rest] == list(range(11, CPR + 1)),
          '%s: received after the restart %r' % (how, [a['received'] for a in rest]))
    _, _, buf = srv.get_model(job, tok, '?after=0&timeout=60')
    e.check_model(buf, SCHEMA, e.weighted_mean(ups), '%s: round 0 of %s' % (how, job))
    # The model is durable: the round's log is cut.
    e.wait_for(lambda: not wal_files(srv), 10, 'the log of the stored round to be cut')
    e.log('%s: 10 + 10 updates, the model is the weighted mean of all 20' % how)


def fedbuff(srv):
    """FedBuff across a reboot: the log keeps each update's version and staleness factor."""
    K, LR = 10, 0.8
    schema = [{'name': 'weights', 'shape': [64], 'dtype': 'F32'}]
    tok = srv.create_job({'name': 'fb', 'algorithm': 'fedbuff', 'buffer_size': K,
                          'max_staleness': 3, 'server_lr': LR, 'update': 'delta',
                          'tensors': schema})['token']
    rng = np.random.default_rng(6)

    def post(v, i):
        d = {'weights': rng.standard_normal(64).astype(np.float32)}
        _, obj, _ = srv.post_update('fb', tok, v, e.raw_body(schema, d), i + 1,
                                    extra={'Idempotency-Key': 'fb-%d' % i})
        return obj, (obj.get('round'), v, i + 1, d['weights'].astype(np.float64))

    for i in range(K):
        post(0, i)
    srv.get_model('fb', tok, '?after=0&timeout=60')
    # Version 1 takes 3 stale updates (from version 0) and 2 fresh ones; then the machine dies.
    log = [post(0 if i < 13 else 1, i)[1] for i in range(K, K + 5)]
    reboot(srv)
    srv.start()
    got = metric(srv, 'tributary_wal_updates_recovered_total')
    check(got == 5, 'fedbuff: %r recovered from the log, want 5' % got)
    log += [post(1, i)[1] for i in range(K + 5, 2 * K)]
    check(all(x[0] == 1 for x in log), 'fedbuff: versions answered %r' % [x[0] for x in log])
    _, _, buf = srv.get_model('fb', tok, '?round=1')
    _, prev, _ = e.st_decode(buf)
    num = sum(b / np.sqrt(1.0 + (V - v)) * d for V, v, b, d in log)
    ref = prev['weights'] + LR * num / sum(b for _, _, b, _ in log)
    _, _, buf = srv.get_model('fb', tok, '?after=1&timeout=60')
    e.check_model(buf, schema, {'weights': ref}, 'fedbuff version 2 across a reboot')
    e.log('fedbuff: 5 updates of version 1 back from the log with their staleness')


def fresh(srv):
    """--fresh starts empty on purpose: the log goes too (logged)."""
    tok = srv.create_job({'name': 'fr', 'clients_per_round': 4, 'tensors': SCHEMA})['token']
    rng = np.random.default_rng(9)
    srv.post_update('fr', tok, 0, e.raw_body(SCHEMA, e.random_model(rng, SCHEMA)), 1)
    check(wal_files(srv), 'no log segment')
    kill9(srv)
    srv.extra = srv.extra + ['--fresh']
    srv.start()
    srv.extra = srv.extra[:-1]
    check('segment file' in srv.log_text() and not wal_files(srv),
          '--fresh: the log is still there: %r' % wal_files(srv))
    check(srv.status('fr').get('received') == 0, '--fresh: the update came back')


# --- a data dir that fills up ---

P = 1 << 16   # 256 KiB updates
FSCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]


def fill(path):
    with open(path, 'wb', buffering=0) as f:
        for size in (1 << 20, 1 << 12):
            chunk = b'\0' * size
            while True:
                try:
                    f.write(chunk)
                except OSError as ex:
                    if ex.errno != errno.ENOSPC:
                        raise
                    break


def full_disk(top, data):
    """Updates on a full disk get 503 naming the log; resent with their keys once space is back,
    each is answered 202 and counted once; a kill -9 then a reboot loses none of those."""
    filler = os.path.join(data, 'filler')
    rng = np.random.default_rng(12)
    cpr = 6
    with e.Server(arena_mb=64, data_dir=top, extra=DISK) as srv:
        tok = srv.create_job({'name': 'full', 'clients_per_round': cpr, 'fan_in': 2,
                              'tensors': FSCHEMA})['token']
        ups = [(int(rng.integers(1, 9)), e.random_model(rng, FSCHEMA)) for _ in range(cpr)]
        hdr = [{'Idempotency-Key': 'full-%d' % i} for i in range(cpr)]
        acked = {}

        def post(i):
            st, obj, hd = srv.post_update('full', tok, 0, e.raw_body(FSCHEMA, ups[i][1]),
                                          ups[i][0], expect=None, extra=hdr[i])
            if st == 202:
                acked[i] = obj
            return st, obj, hd

        check(post(0)[0] == 202, 'first update before the disk filled')
        fill(filler)
        refused = 0
        for i in range(1, 4):
            st, obj, hd = post(i)
            check(st == 503, 'update %d on a full disk: %d %r (a 202 not on disk?)' %
                  (i, st, obj))
            msg = (obj or {}).get('error', '')
            ra = hd.get('retry-after', '')
            check('ENOSPC' in msg and 'log' in msg and ra.isdigit() and 1 <= int(ra) <= 10,
                  '503 without the log\'s cause or a Retry-After: %r %r' % (obj, hd))
            refused += 1
        m = srv.metrics()
        check(m.get('tributary_wal_errors_total{errno="ENOSPC"}', 0) >= 1,
              'tributary_wal_errors_total{errno="ENOSPC"}: %r' %
              {k: v for k, v in m.items() if 'wal' in k})
        check(m.get('tributary_wal_failing') == 1, 'tributary_wal_failing %r' %
              m.get('tributary_wal_failing'))
        os.unlink(filler)
        # The log retries by itself; each client resends with its key until it gets its 202.
        for i in range(1, cpr):
            e.wait_for(lambda: post(i)[0] == 202, 30, 'update %d to be answered 202' % i,
                       step=0.3)
        check(sorted(a['received'] for a in acked.values()) == list(range(1, cpr + 1)),
              'answers after space came back: %r (an update counted twice?)' % acked)
        _, _, buf = srv.get_model('full', tok, '?after=0&timeout=60')
        e.check_model(buf, FSCHEMA, e.weighted_mean(ups), 'full disk: round 0')
        # Round 1: half answered, then the machine dies; the log has them.
        ups1 = [(i + 1, e.random_model(rng, FSCHEMA)) for i in range(cpr)]
        for i in range(3):
            srv.post_update('full', tok, 1, e.raw_body(FSCHEMA, ups1[i][1]), ups1[i][0])
        reboot(srv)
        srv.start()
        check(metric(srv, 'tributary_wal_updates_recovered_total') == 3,
              'full disk: the log put back %r, want 3' %
              metric(srv, 'tributary_wal_updates_recovered_total'))
        for i in range(3, cpr):
            srv.post_update('full', tok, 1, e.raw_body(FSCHEMA, ups1[i][1]), ups1[i][0])
        _, _, buf = srv.get_model('full', tok, '?after=1&timeout=60')
        e.check_model(buf, FSCHEMA, e.weighted_mean(ups1), 'full disk: round 1 after a reboot')
        # Round 2: an update in the arena but refused by the log (disk full), then kill -9.
        # At the next start the arena puts it back and the log gets it (never answered 202
        # until then); its resend is answered 202, and a reboot after that keeps it.
        ups2 = [(i + 1, e.random_model(rng, FSCHEMA)) for i in range(cpr)]
        h2 = [{'Idempotency-Key': 'full2-%d' % i} for i in range(cpr)]
        srv.post_update('full', tok, 2, e.raw_body(FSCHEMA, ups2[0][1]), ups2[0][0], extra=h2[0])
        fill(filler)
        st, obj, _ = srv.post_update('full', tok, 2, e.raw_body(FSCHEMA, ups2[1][1]),
                                     ups2[1][0], expect=None, extra=h2[1])
        check(st == 503, 'round 2 on a full disk: %d %r' % (st, obj))
        kill9(srv)
        os.unlink(filler)
        srv.start()
        srv.healthy()  # served: recovery is done
        check('the arena kept but the log lacked' in srv.log_text(),
              'the update only the arena had was not logged at start:\n' + srv.log_text())
        _, again, _ = srv.post_update('full', tok, 2, e.raw_body(FSCHEMA, ups2[1][1]),
                                      ups2[1][0], extra=h2[1])
        check(again == {'round': 2, 'received': 2}, 'resend after the restart: %r' % again)
        reboot(srv)
        srv.start()
        got = srv.status('full').get('received')
        check(got == 2, 'round 2 after a reboot has %r updates, want the 2 answered 202' % got)
        for i in range(2, cpr):
            srv.post_update('full', tok, 2, e.raw_body(FSCHEMA, ups2[i][1]), ups2[i][0],
                            extra=h2[i])
        _, _, buf = srv.get_model('full', tok, '?after=2&timeout=60')
        e.check_model(buf, FSCHEMA, e.weighted_mean(ups2), 'full disk: round 2 after a reboot')
    e.log('full disk: %d refused with 503 (ENOSPC), then each counted once' % refused)


def run():
    with e.Server(extra=DISK) as srv:
        twenty(srv, 'reboot')
        twenty(srv, 'kill')
        fedbuff(srv)
        fresh(srv)
    if os.geteuid() != 0:
        e.log('SKIP the full-disk phase: mounting a tmpfs takes root')
        return
    top = tempfile.mkdtemp(prefix='trib-e2e-disk-')
    data = os.path.join(top, 'data')
    os.mkdir(data, 0o700)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m,mode=0700', 'tmpfs', data],
                       capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(top, ignore_errors=True)
        raise e.Failure('mount -t tmpfs: %s' % (r.stderr.strip() or r.returncode))
    try:
        full_disk(top, data)
    finally:
        if subprocess.run(['umount', data]).returncode != 0:
            subprocess.run(['umount', '-l', data])
        shutil.rmtree(top, ignore_errors=True)


if __name__ == '__main__':
    e.main(run)
