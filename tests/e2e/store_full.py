# SPDX-License-Identifier: MIT
# A data dir on a small tmpfs that fills up: a model that cannot be written stops the 202s (503,
# Retry-After, the cause), is retried by itself once space is back, and equals the mean of exactly
# the updates answered 202; a clean stop waits for it; a kill -9 leaves temp files a start removes.
# The same in a cluster, with the controller's disk full, then a node's.
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

P = 1 << 18                 # 1 MiB models
CPR = 4
SCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]
TMPFS_SIZE = '24m'
TEMP_RE = re.compile(r'^\..+\.tmp\.\d+\.\d+$')
JOB = 'sf'


def skip(why):
    print('SKIP: %s' % why, flush=True)
    sys.exit(77)


def fill(path):
    """Writes zeros to @path until the file system is full (ENOSPC)."""
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


def temp_files(data):
    """Every leftover temp name in the data dir and its job dirs."""
    out = []
    for d in [data] + [os.path.join(data, 'jobs', j) for j in os.listdir(os.path.join(data,
                                                                                     'jobs'))]:
        out += [os.path.join(d, n) for n in os.listdir(d) if TEMP_RE.match(n)]
    return out


class Round:
    """The updates of one round answered 202 (weight, tensors): the model must be their mean."""

    def __init__(self, srv, tok, rnd, rng, schema=SCHEMA, cpr=CPR):
        self.srv, self.tok, self.rnd, self.rng = srv, tok, rnd, rng
        self.schema, self.cpr = schema, cpr
        self.ok = []

    def send(self, allow_503=False):
        """One update; returns its status. 202 is recorded; 503 must name the store's cause."""
        m = e.random_model(self.rng, self.schema)
        w = int(self.rng.integers(1, 9))
        st, obj, hd = self.srv.post_update(JOB, self.tok, self.rnd, e.raw_body(self.schema, m),
                                           samples=w, expect=None)
        if st == 202:
            self.ok.append((w, m))
            return st
        check(allow_503 and st == 503, 'round %d update: got %d %r' % (self.rnd, st, obj))
        check_refusal(st, obj, hd)
        return st

    def fill_up(self):
        while len(self.ok) < self.cpr:
            self.send()

    def check_stored(self, what):
        check(len(self.ok) == self.cpr, 'round %d: %d updates answered 202' % (self.rnd,
                                                                          len(self.ok)))
        _, hd, buf = self.srv.get_model(JOB, self.tok, '?round=%d' % (self.rnd + 1))
        e.check_model(buf, self.schema, e.weighted_mean(self.ok), '%s: model v%d' %
                      (what, self.rnd + 1))


def check_refusal(st, obj, hd):
    check(st == 503, 'want 503 while the model cannot be stored, got %d %r' % (st, obj))
    ra = hd.get('retry-after')
    check(ra is not None and ra.isdigit() and 1 <= int(ra) <= 10,
          '503 without a Retry-After of 1..10 s: %r' % hd)
    msg = (obj or {}).get('error', '')
    check('ENOSPC' in msg and 'could not be stored' in msg,
          '503 body does not name the cause: %r' % obj)


def round_top(srv, rnd):
    """The pid of the live top of round @rnd."""
    def find():
        st, obj, _ = srv.json('GET', '/v1/functions', token=srv.admin)
        check(st == 200, '/v1/functions: %d' % st)
        for f in obj['functions']:
            if f['job'] == JOB and f['round'] == rnd and f['role'] == 'top' and 'pid' in f:
                return f['pid']
        return None
    return e.wait_for(find, 10, 'the top of round %d' % rnd)


def wait_failing(srv, rnd):
    def failing():
        s = srv.status(JOB)['store']
        return s if s['state'] == 'failing' else None
    s = e.wait_for(failing, 15, 'the job to report its store failing')
    check(s['errno'] == 'ENOSPC' and s['round'] == rnd and s['since'] > 0,
          'store state: %r (want ENOSPC, round %d)' % (s, rnd))
    return s


def phase_fill_and_resume(srv, tok, rng, data, filler):
    """Round 1's model cannot be written; round 2 gets no 202; space back: both complete."""
    r0 = Round(srv, tok, 0, rng)
    r0.fill_up()
    e.wait_for(lambda: srv.status(JOB)['model_round'] == 1, 30, 'model v1')
    r0.check_stored('before the disk filled')

    r1, r2 = Round(srv, tok, 1, rng), Round(srv, tok, 2, rng)
    for _ in range(CPR - 1):
        r1.send()
    # Round 1's top waits (stopped) while round 1 fills and round 2 takes two updates: those
    # are answered 202 before the write fails, and must be in model v3 in the end.
    top = round_top(srv, 1)
    os.kill(top, signal.SIGSTOP)
    try:
        r1.send()
        e.wait_for(lambda: srv.status(JOB)['round'] == 2, 10, 'round 2 to open')
        for _ in range(2):
            check(r2.send() == 202, 'round 2 before the failure')
        fill(filler)
    finally:
        os.kill(top, signal.SIGCONT)
    before = len(r2.ok)
    s = wait_failing(srv, 1)
    st = srv.status(JOB)
    check(st['model_round'] == 1, 'model v2 cannot exist on a full disk: %r' % st)
    # Every update now gets 503, whatever round it names.
    check(r2.send(allow_503=True) == 503, 'round 2 update answered 202 while v2 is unsaved')
    st, obj, hd = srv.post_update(JOB, tok, 1, e.raw_body(SCHEMA, e.random_model(rng, SCHEMA)),
                                  expect=None)
    check_refusal(st, obj, hd)
    m = srv.metrics()
    errs = m.get('tributary_store_errors_total{job="%s",errno="ENOSPC"}' % JOB, 0)
    check(errs >= 1, 'tributary_store_errors_total{errno="ENOSPC"}: %r' % errs)
    check(m.get('tributary_store_failing{job="%s"}' % JOB) == 1, 'tributary_store_failing')
    check(m.get('tributary_updates_rejected_total{reason="store_failing"}', 0) >= 2,
          'refusals counted')
    # It retries by itself, with backoff: more failures, well under one per tick.
    time.sleep(1.6)
    errs2 = srv.metrics()['tributary_store_errors_total{job="%s",errno="ENOSPC"}' % JOB]
    s2 = srv.status(JOB)['store']
    check(errs2 > errs and 2 <= errs2 <= 8, 'retries over 1.6 s: %d -> %d' % (errs, errs2))
    check(s2['retries'] > s['retries'] and s2['since'] == s['since'], 'state: %r' % s2)

    # A long poll for v2 waits through the failure and is woken when it is stored.
    polled = []
    t = threading.Thread(target=lambda: polled.append(
        srv.get_model(JOB, tok, '?after=1&timeout=40', expect=None, timeout=60)))
    t.start()
    time.sleep(0.3)
    check(not polled, 'the long poll was answered before v2 exists: %r' % polled[:1])
    os.unlink(filler)
    e.wait_for(lambda: srv.status(JOB)['model_round'] == 2, 20, 'v2 stored once space is back')
    t.join(30)
    check(polled and polled[0][0] == 200 and polled[0][1].get('x-tributary-round') == '2',
          'long poll after=1: want 200 with v2, got %r' % (polled[:1] and polled[0][:2],))
    check(srv.status(JOB)['store'] == {'state': 'ok'}, 'store state after recovery')
    check(srv.metrics()['tributary_store_failing{job="%s"}' % JOB] == 0, 'failing gauge')
    r1.check_stored('after space came back')
    # Round 2 goes on: the 202s before the failure, then new ones.
    r2.fill_up()
    e.wait_for(lambda: srv.status(JOB)['model_round'] == 3, 30, 'model v3')
    r2.check_stored('the round open during the failure')
    check(not temp_files(data), 'temp files left by failed writes: %r' % temp_files(data))
    e.log('fill: %d failed writes of v2, then stored; round 2 kept the %d updates answered '
          '202 before the failure' % (errs2, before))
    return [r0, r1, r2]


def phase_sigterm(srv, tok, rng, filler, rounds):
    """A clean stop with v4 unsaved keeps retrying within the drain window, and stores it."""
    fill(filler)
    r3 = Round(srv, tok, 3, rng)
    r3.fill_up()
    wait_failing(srv, 3)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    check(srv.proc.poll() is None, 'stopped at once with an unsaved model (rc %r)' %
          srv.proc.returncode)
    os.unlink(filler)
    rc = srv.proc.wait(40)
    srv.proc = None
    log = srv.log_text()
    check(rc == 0, 'exit %d after the drain stored the model\n%s' % (rc, log[-3000:]))
    check('stored after' in log, 'no recovery line in the log')
    srv.start()
    check(srv.status(JOB)['model_round'] == 4, 'v4 after the stop: %r' % srv.status(JOB))
    r3.check_stored('written during the drain')
    rounds.append(r3)


def phase_kill9(srv, tok, rng, data, filler, rounds):
    """kill -9 while v5 cannot be written; temp files of dead writers are gone at the start."""
    fill(filler)
    r4 = Round(srv, tok, 4, rng)
    r4.fill_up()
    wait_failing(srv, 4)
    pid = srv.pid
    srv.proc.kill()
    srv.proc.wait()
    srv.proc = None
    # What a kill between write and rename leaves (one of these the kill may have left itself).
    os.unlink(filler)
    planted = [os.path.join(data, 'jobs', JOB, '.round-5.safetensors.tmp.%d.7' % pid),
               os.path.join(data, '.admin-token.tmp.%d.0' % pid)]
    for p in planted:
        with open(p, 'wb') as f:
            f.write(b'half a model')
    srv.start()
    # The new server may be writing v5 already (round 4 came back from its arena file).
    left = [p for p in temp_files(data) if '.tmp.%d.' % srv.pid not in p]
    check(not left, 'temp files still there after a restart: %r' % left)
    log = srv.log_text()
    check(re.search(r'store: job %s: removed \d+ temporary file' % JOB, log),
          'no log line for the job dir sweep:\n%s' % log[-2000:])
    check(re.search(r'store: .*: removed 1 temporary file left', log),
          'no log line for the data dir sweep')
    st = srv.status(JOB)
    check(st['store'] == {'state': 'ok'} and st['model_round'] >= 4, 'after restart: %r' % st)
    for r in rounds:
        r.check_stored('after kill -9 and restart')


def free_port():
    with socket.socket() as so:
        so.bind(('127.0.0.1', 0))
        return so.getsockname()[1]


def cluster_full(top, which):
    """A controller and one node on loopback, @which ('ctl' or 'node') on a tmpfs that fills."""
    base = tempfile.mkdtemp(prefix='cl-', dir=top)
    dirs = {w: os.path.join(base, w) for w in ('ctl', 'node')}
    for d in dirs.values():
        os.mkdir(d, 0o700)
    full = dirs[which]
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m,mode=0700', 'tmpfs', full],
                   check=True)
    procs, logs = [], []
    try:
        ctl_url = 'tls+tcp://127.0.0.1:%d' % free_port()
        port_file = os.path.join(base, 'port')
        # Every cluster link is mutual TLS: the node enrols once with a join token.
        jt = subprocess.run([e.BIN, 'controller', 'join-token', '--data-dir', dirs['ctl']],
                            capture_output=True, text=True)
        if jt.returncode:
            raise e.Failure('join-token: %s' % jt.stderr)
        for argv, name in (
                (['controller', '--listen', ctl_url, '--data-dir', dirs['ctl']], 'ctl'),
                (['node', '--controller', ctl_url, '--node-name', 'n1', '--peer-listen',
                  'tls+tcp://127.0.0.1:%d' % free_port(), '--listen', '127.0.0.1:0',
                  '--port-file', port_file, '--data-dir', dirs['node'], '--arena-mb', '64',
                  '--join-token', jt.stdout.strip()], 'node')):
            logs.append(os.path.join(base, name + '.log'))
            with open(logs[-1], 'wb') as lf:
                procs.append(subprocess.Popen([e.BIN] + argv, stdin=subprocess.DEVNULL,
                                              stdout=lf, stderr=subprocess.STDOUT))
        e.wait_for(lambda: os.path.exists(port_file) and
                   open(port_file).read().endswith('\n'), 20, 'the node listening')
        srv = e.Server.__new__(e.Server)  # only its HTTP helpers
        srv.port = int(open(port_file).read())
        e.wait_for(lambda: os.path.exists(os.path.join(dirs['ctl'], 'admin-token')), 10,
                   'the admin token')
        srv.admin = open(os.path.join(dirs['ctl'], 'admin-token')).read().strip()
        e.wait_for(lambda: srv.request('GET', '/v1/jobs', token=srv.admin)[0] == 200, 20,
                   'the node joined')
        tok = srv.create_job({'name': JOB, 'clients_per_round': 2, 'params': 1 << 16})['token']
        schema = [{'name': 'weights', 'shape': [1 << 16], 'dtype': 'F32'}]
        rng = np.random.default_rng(3)
        r0 = Round(srv, tok, 0, rng, schema, 2)
        r0.fill_up()
        e.wait_for(lambda: srv.status(JOB)['model_round'] == 1, 20, 'cluster v1')
        filler = os.path.join(full, 'filler')
        fill(filler)
        r1 = Round(srv, tok, 1, rng, schema, 2)
        r1.fill_up()

        # v2 is written after round 1 closes, asynchronously: until that write fails, round 2's
        # updates are rightly answered 202 (and kept). So wait for the failure to be known
        # where it happens, then every update must get 503: the node passes on the
        # controller's refusal, or refuses for its own copy.
        def store_of():
            if which == 'node':
                return srv.status(JOB)['store']
            st, obj, _ = srv.json('GET', '/v1/cluster', token=srv.admin)
            check(st == 200, '/v1/cluster: %d %r' % (st, obj))
            return {j['name']: j for j in obj['jobs']}[JOB].get('store') or {}
        s = e.wait_for(lambda: (lambda s: s if s.get('state') == 'failing' else None)(
            store_of()), 20, 'the %s store to report failing' % which)
        check(s.get('errno') == 'ENOSPC', '%s store: %r' % (which, s))
        r2 = Round(srv, tok, 2, rng, schema, 2)
        check(r2.send(allow_503=True) == 503, 'round 2 update answered 202 on a full %s'
              % which)
        check(srv.status(JOB)['model_round'] == 1, 'v2 on a full disk')
        os.unlink(filler)
        e.wait_for(lambda: srv.status(JOB)['model_round'] == 2, 20, 'cluster v2')
        check(srv.status(JOB)['store'] == {'state': 'ok'}, 'node store after')
        r1.check_stored('cluster, %s full' % which)
        check(r2.send() == 202, 'updates taken again')
    except BaseException:
        for lp in logs:
            with open(lp, 'rb') as f:
                sys.stdout.write('----- %s -----\n%s\n' % (lp, f.read().decode('utf-8',
                                                                                'replace')))
        raise
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if subprocess.run(['umount', full]).returncode != 0:
            subprocess.run(['umount', '-l', full])
    for lp in logs:
        with open(lp, 'rb') as f:
            txt = f.read().decode('utf-8', 'replace')
        for mark in e.SANITIZER_MARKS:
            check(mark not in txt, 'sanitizer report in %s' % lp)
    e.log('cluster, %s disk full: refused, then stored by itself' % which)


def run():
    if os.geteuid() != 0:
        skip('mounting a tmpfs takes root')
    top = tempfile.mkdtemp(prefix='trib-e2e-storefull-')
    data = os.path.join(top, 'data')
    os.mkdir(data, 0o700)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0700' % TMPFS_SIZE,
                        'tmpfs', data], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(top, ignore_errors=True)
        skip('mount -t tmpfs: %s' % (r.stderr.strip() or r.returncode))
    try:
        filler = os.path.join(data, 'filler')
        rng = np.random.default_rng(12)
        with e.Server(arena_mb=64, data_dir=top) as srv:
            tok = srv.create_job({'name': JOB, 'clients_per_round': CPR, 'fan_in': 2,
                                  'params': P})['token']
            rounds = phase_fill_and_resume(srv, tok, rng, data, filler)
            phase_sigterm(srv, tok, rng, filler, rounds)
            phase_kill9(srv, tok, rng, data, filler, rounds)
        # A cluster: the controller's write, then a node's copy of a pushed model.
        cluster_full(top, 'ctl')
        cluster_full(top, 'node')
    finally:
        if subprocess.run(['umount', data]).returncode != 0:
            subprocess.run(['umount', '-l', data])
        shutil.rmtree(top, ignore_errors=True)


if __name__ == '__main__':
    e.main(run)
