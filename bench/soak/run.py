#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Crash soak: kill -9 `tributary up` at random moments; every 202 must be in exactly one model.

One run keeps one data dir. Each iteration makes three jobs on the running server (fedavg on
weights, fedadam on deltas, fedbuff with a small buffer), starts client threads that send
updates, SIGKILLs the server at a random moment and starts it again on the same data dir, then
lets the clients finish ROUNDS rounds (versions) of every job. Kill moments, chosen per
iteration:
  between   right after (0-2 ms) the n-th 202 of the iteration, n uniform over its 202s
  fold      right after the last 202 of a round of fedavg or fedadam (0-4 ms later): the fold
            of that round, or the write of its model
  write     as soon as a `.round-N.safetensors.tmp.*` file of a job appears: the model write
Clients: every logical update has its own Idempotency-Key (22 URL-safe characters) and its
bytes; when a connection breaks, the server is down or answers 503, the client waits for the
server and sends the same bytes with the same key again. A 409 (round moved on / too stale) is
final: the update was not counted.

After each iteration, for every job and round (version) r < ROUNDS:
  - the model of r+1 exists, over HTTP and as DATA/jobs/JOB/round-(r+1).safetensors, and the
    file parses and holds the same bytes as served (no torn model file);
  - exactly clients_per_round (buffer_size) updates were answered 202 for it;
  - it equals the float64 reference over exactly those updates (none missing, none twice):
      fedavg   the weighted mean (tests/e2e/e2e_common.py weighted_mean, check_model)
      fedadam  the server optimiser on the weighted mean delta from the served model of r
               (tests/e2e/algorithms.py server_ref; m and v carried in float64)
      fedbuff  served model of r + lr * sum(b/sqrt(1+V-v) d) / sum(b) (tests/e2e/fedbuff.py)
    with the e2e tolerances (1e-5 x max magnitude; fedadam 1e-4 x max(|x|, 1e-3));
  - no leftover `.round-N.safetensors.tmp.*` file, no sanitizer report in the server log.
On a fedavg or fedbuff mismatch the report solves for how many times each candidate update
(answered 202, or sent with its answer lost) is in the model (least squares), so a failure says
which update is missing or counted twice. Before the checks, the round a job leaves open (a
fedbuff version past ROUNDS) is filled, so that abandoned rounds do not fill the arena over a
run; the line then reports the arena's live slots. --kill none is the control: no kill, and
every iteration must pass.

Recovery time: every start is timed from exec to the port file (listening) and to the first
/healthz 200. At the end, for each --sizes arena size (MiB), a fresh start (empty data dir) is
timed against a restart after kill -9 with a quarter of the arena holding committed updates of
an open round (3 times each, medians), and the run's restarts are compared with its first,
fresh start: recovery / fresh is the ratio against the baseline measured in the same run.

usage: run.py [--iterations N] [--seed S] [--build DIR] [--rounds R] [--clients C]
              [--arena-mb M] [--params P] [--sizes 64,256,1024] [--reps K] [--timeout S]
              [--max-failures F] [--kill MODE] [--server-arg ARG]... [-v] [--keep]
Exit status: 0 when no iteration failed, 1 otherwise.
"""
import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'e2e'))
import e2e_common as e  # noqa: E402
from algorithms import server_ref  # noqa: E402  (the float64 server optimiser of the e2e test)

CPR = 4             # clients_per_round of fedavg and fedadam
# Every optimiser parameter given: server_ref() takes the job's effective parameters, not defaults.
ADAM = {'algorithm': 'fedadam', 'update': 'delta', 'server_lr': 0.05, 'beta1': 0.8,
        'beta2': 0.95, 'tau': 1e-3}
FB_K, FB_MAXS, FB_LR = 3, 4, 0.8
TEMP_MARK = '.tmp.'


class Failure(Exception):
    pass


# --- the server ---

class Server:
    """`tributary up` on one data dir, restarted as often as needed; timed from exec."""

    def __init__(self, build, root, arena_mb, extra=()):
        self.bin = os.path.join(build, 'tributary')
        if not os.access(self.bin, os.X_OK):
            raise SystemExit('no tributary binary in %s (--build)' % build)
        self.root = root
        self.data = os.path.join(root, 'data')
        self.arena_mb = arena_mb
        self.extra = list(extra)
        self.proc = None
        self.port = None
        self.starts = 0
        self.logs = []
        self.up = threading.Event()     # set while the server serves
        self.gen = 0                    # starts so far: the generation an answer came from

    def start(self, timeout=60):
        """Starts the server; returns (s to the port file, s to the first /healthz 200)."""
        port_file = os.path.join(self.root, 'port.%d' % self.starts)
        log = os.path.join(self.root, 'server.%d.log' % self.starts)
        self.starts += 1
        self.logs.append(log)
        with open(log, 'wb') as logf:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                [self.bin, 'up', '--listen', '127.0.0.1:0', '--port-file', port_file,
                 '--data-dir', self.data, '--arena-mb', str(self.arena_mb)] + self.extra,
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        while True:
            try:
                with open(port_file) as f:
                    txt = f.read()
                if txt.endswith('\n'):
                    port = int(txt)
                    break
            except FileNotFoundError:
                pass
            if self.proc.poll() is not None:
                raise Failure('tributary up exited with %d before listening (log %s)' %
                              (self.proc.returncode, log))
            if time.perf_counter() > deadline:
                raise Failure('tributary up wrote no port file within %d s' % timeout)
            time.sleep(0.001)
        t_port = time.perf_counter() - t0
        while True:
            try:
                st, _, _ = http_req(port, 'GET', '/healthz', timeout=5)
                if st == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.perf_counter() > deadline:
                raise Failure('no /healthz 200 within %d s' % timeout)
            time.sleep(0.001)
        t_health = time.perf_counter() - t0
        with open(os.path.join(self.data, 'admin-token')) as f:
            self.admin = f.read().strip()
        self.port = port
        self.gen += 1
        self.up.set()
        return t_port, t_health

    def kill9(self):
        self.up.clear()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self, timeout=30):
        self.up.clear()
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = 'timeout'
        self.proc = None
        return rc

    def sanitizer_reports(self):
        out = []
        for p in self.logs:
            try:
                with open(p, 'rb') as f:
                    txt = f.read().decode('utf-8', 'replace')
            except OSError:
                continue
            if any(m in txt for m in e.SANITIZER_MARKS):
                out.append(p)
        return out

    def json(self, method, path, obj=None, token=None):
        body = None if obj is None else json.dumps(obj).encode()
        st, _, b = http_req(self.port, method, path, body,
                            {'Content-Type': 'application/json'} if body else {},
                            token or self.admin)
        return st, e.parse_json(b)


def http_req(port, method, path, body=None, headers=None, token=None, timeout=10):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        return e.request_on(c, method, path, body, headers, token)
    finally:
        c.close()


# --- the clients ---

class Update:
    """One logical update: its key and bytes stay the same across resends."""

    def __init__(self, job, base, weight, data):
        self.job, self.base, self.weight = job, base, weight
        self.data = data.astype(np.float64)
        self.body = data.astype('<f4').tobytes()
        self.key = secrets.token_urlsafe(16)
        self.sends = 0
        self.lost = 0           # sends that got no answer (broken connection, server down)
        self.status = None      # final answer: 202, 409, or None (abandoned)
        self.round = None       # the round (version) the 202 names
        self.gen = None         # the server generation that gave the final answer


class Job:
    def __init__(self, kind, name, params):
        self.kind, self.name, self.params = kind, name, params
        self.token = None
        self.updates = []
        self.lock = threading.Lock()
        self.acked = {}         # round -> count of 202s, for the fold trigger
        self.cond = threading.Condition(self.lock)

    def spec(self):
        if self.kind == 'fedavg':
            return {'name': self.name, 'clients_per_round': CPR, 'params': self.params}
        if self.kind == 'fedadam':
            return dict(ADAM, name=self.name, clients_per_round=CPR, params=self.params)
        return {'name': self.name, 'algorithm': 'fedbuff', 'buffer_size': FB_K,
                'max_staleness': FB_MAXS, 'server_lr': FB_LR, 'update': 'delta',
                'params': self.params}

    def size(self):
        return CPR if self.kind != 'fedbuff' else FB_K


class Tally:
    """The 202s of an iteration so far, for the kill trigger."""

    def __init__(self):
        self.cond = threading.Condition()
        self.acked = 0


class Stop(Exception):
    pass


def wait_server(srv, stop):
    while not srv.up.wait(0.05):
        if stop.is_set():
            raise Stop()
    return srv.port


def job_round(srv, job, stop):
    """The job's current round (version), across restarts."""
    while True:
        port = wait_server(srv, stop)
        try:
            st, _, b = http_req(port, 'GET', '/v1/jobs/' + job.name, token=job.token)
            if st == 200:
                return json.loads(b)['round']
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.01)


def send(srv, u, token, stop, deadline=None):
    """Sends @u until it has a final answer (or @stop, or @deadline: (None, None)); resends the
    same bytes with the same key."""
    hdr = {'Content-Type': 'application/octet-stream', 'X-Tributary-Round': str(u.base),
           'X-Tributary-Samples': str(u.weight), 'Idempotency-Key': u.key}
    while True:
        try:
            port = wait_server(srv, stop)
        except Stop:
            return None, None
        if deadline is not None and time.monotonic() > deadline:
            return None, None
        gen = srv.gen
        u.sends += 1
        try:
            st, hd, b = http_req(port, 'POST', '/v1/jobs/%s/updates' % u.job, u.body, hdr,
                                 token)
        except (OSError, http.client.HTTPException):
            u.lost += 1
            time.sleep(0.005)
            continue
        if st == 503:
            time.sleep(0.02)
            continue
        u.gen = gen
        return st, e.parse_json(b)


def client(srv, job, rounds, seed, stop, errors, tally):
    rng = np.random.default_rng(seed)
    try:
        while not stop.is_set():
            r = job_round(srv, job, stop)
            if r >= rounds:
                return
            scale = 1.0 if job.kind == 'fedavg' else 0.1
            u = Update(job.name, r, int(rng.integers(1, 20)),
                       (rng.standard_normal(job.params) * scale).astype(np.float32))
            with job.lock:
                job.updates.append(u)
            st, obj = send(srv, u, job.token, stop)
            if st is None:
                return
            u.status = st
            if st == 202:
                u.round = obj['round'] if job.kind == 'fedbuff' else u.base
                with job.cond:
                    job.acked[u.round] = job.acked.get(u.round, 0) + 1
                    job.cond.notify_all()
                with tally.cond:
                    tally.acked += 1
                    tally.cond.notify_all()
            elif st != 409:
                errors.append('%s: update for round %d answered %d %r' %
                              (job.name, u.base, st, obj))
                return
    except Stop:
        return
    except Exception as ex:  # noqa: BLE001  (a client crash is an iteration failure)
        errors.append('%s client: %r' % (job.name, ex))


# --- the killer ---

def temp_seen(jobdir):
    try:
        return any(TEMP_MARK in n for n in os.listdir(jobdir))
    except OSError:
        return False


def kill_moment(srv, jobs, rng, stop, tally, rounds, mode):
    """Waits for the iteration's kill moment; returns its description."""
    r = ('between', 'fold', 'write')[int(rng.integers(0, 3))]
    mode = r if mode == 'random' else mode
    if mode == 'between':
        total = sum(j.size() for j in jobs) * rounds
        n = int(rng.integers(1, total))
        with tally.cond:
            ok = tally.cond.wait_for(lambda: tally.acked >= n or stop.is_set(), 20)
        d = float(rng.uniform(0, 0.002))
        time.sleep(d)
        return 'between (%.1f ms after the %d%s 202 of %d)' % (
            d * 1000, n, '' if ok else ' (not reached)', total)
    if mode == 'fold':
        job = jobs[int(rng.integers(0, 2))]
        r = int(rng.integers(0, rounds))
        with job.cond:
            ok = job.cond.wait_for(lambda: job.acked.get(r, 0) >= job.size() or
                                   stop.is_set(), 20)
        d = float(rng.uniform(0, 0.004))
        time.sleep(d)
        return 'fold (%s round %d, %.1f ms after its last 202%s)' % (
            job.name, r, d * 1000, '' if ok else ', not reached')
    job = jobs[int(rng.integers(0, 3))]
    jobdir = os.path.join(srv.data, 'jobs', job.name)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if temp_seen(jobdir):
            return 'write (%s: temp file seen)' % job.name
    return 'write (%s: no temp file seen in 10 s)' % job.name


# --- the checks ---

def model_bytes(srv, job, v):
    """Version @v as served; waits for it first (the round counter moves before its model
    is written, so a client may see round v while version v is still being written)."""
    if v > 0:
        http_req(srv.port, 'GET', '/v1/jobs/%s/model?after=%d&timeout=10' % (job.name, v - 1),
                 token=job.token, timeout=20)
    st, _, b = http_req(srv.port, 'GET', '/v1/jobs/%s/model?round=%d' % (job.name, v),
                        token=job.token, timeout=30)
    return b if st == 200 else None


def load_version(srv, job, v, fails):
    """The model of version @v as float64, after the file/HTTP checks; None when it fails."""
    served = model_bytes(srv, job, v)
    if served is None:
        st, obj = srv.json('GET', '/v1/jobs/' + job.name, token=job.token)
        fails.append('%s: no model of version %d within 10 s (the job says round %s, '
                     'model_round %s)' % (job.name, v, (obj or {}).get('round'),
                                          (obj or {}).get('model_round')))
        return None
    path = os.path.join(srv.data, 'jobs', job.name, 'round-%d.safetensors' % v)
    if v > 0:
        try:
            with open(path, 'rb') as f:
                disk = f.read()
        except OSError as ex:
            fails.append('%s: %s: %s' % (job.name, path, ex))
            return None
        try:
            e.st_decode(disk)
        except (e.Failure, ValueError) as ex:
            fails.append('%s: torn model file %s: %s' % (job.name, path, ex))
            return None
        if disk != served:
            fails.append('%s: %s differs from the served version %d' % (job.name, path, v))
    _, got, _ = e.st_decode(served)
    return got['weights']


def describe(u):
    return 'key %s w=%d base %d: %s in gen %s after %d send(s), %d lost' % (
        u.key, u.weight, u.base, u.status, u.gen, u.sends, u.lost)


def multiplicities(target, cands, coefs, census, gen_now, r):
    """How many times each candidate is in @target = sum(n_i coefs_i data_i) (least squares).

    The n_i are scaled so that the median over the updates answered 202 for round @r is 1."""
    if not cands:
        return '(and no update sent with its answer lost)'
    a = np.stack([c * u.data for c, u in zip(coefs, cands)], axis=1)
    n, _, _, _ = np.linalg.lstsq(a, target, rcond=None)
    acked = [x for x, u in zip(n, cands) if mine(u, r) and abs(x) > 1e-9]
    unit = statistics.median(acked) if acked else max(float(np.max(np.abs(n))), 1e-30)
    resid = float(np.max(np.abs(a @ n - target)))
    for x, u in zip(n / unit, cands):
        k = int(round(float(x)))
        if mine(u, r) and k != 1:
            what = 'answered 202 %s, counted %s' % (
                'by the killed server' if u.gen < gen_now else 'after the restart',
                '%d times' % k if k != 0 else 'never')
        elif not mine(u, r) and k != 0:
            what = 'answer lost, then %s, yet counted %d times in this one' % (
                u.status if u.status != 202 else '202 naming another round (version)', k)
        else:
            continue
        census[what] = census.get(what, 0) + 1
    lines = ['%s: counted %.2f times' % (describe(u), abs(x / unit) if abs(x / unit) < 5e-3
                                           else x / unit) for x, u in zip(n, cands)]
    return '(least squares over them and %d sent with an answer lost, residual %.2g):\n' \
        '    %s' % (len(cands) - sum(1 for u in cands if mine(u, r)), resid,
                    '\n    '.join(lines))


def mine(u, r):
    return u.status == 202 and u.round == r


def unanswered(job, r, pred):
    """Updates not answered 202 for round @r of which a send got no answer: the lost answer
    may have been a 202 for @r."""
    return [u for u in job.updates if not mine(u, r) and u.lost and pred(u)]


def check_sync(srv, job, rounds, fails, census):
    first = len(fails)
    x = load_version(srv, job, 0, fails)
    st = {}
    for r in range(rounds):
        ups = [u for u in job.updates if u.status == 202 and u.round == r]
        got = load_version(srv, job, r + 1, fails)
        if got is None or x is None:
            return
        if len(ups) != CPR:
            fails.append('%s round %d: %d updates answered 202, clients_per_round %d' %
                         (job.name, r, len(ups), CPR))
        w = np.array([u.weight for u in ups], np.float64)
        mean = sum(wi * u.data for wi, u in zip(w, ups)) / w.sum() if ups else x
        if job.kind == 'fedavg':
            ref = mean
            tol = 1e-5 * max(float(np.max(np.abs(ref))), 1e-30)
        else:
            ref = server_ref('fedadam', ADAM, x, mean, st)
            tol = 1e-4 * max(float(np.max(np.abs(ref))), 1e-3)
        # No 202 at all for a round that has a model: wrong whatever the model holds.
        err = float(np.max(np.abs(got - ref))) if ups else float('inf')
        if err > tol:
            msg = '%s round %d: max error %.3g > %.3g against the %d updates answered 202' % (
                job.name, r, err, tol, len(ups))
            if job.kind == 'fedavg':
                cands = ups + unanswered(job, r, lambda u: u.base == r)
                msg += ' ' + multiplicities(got, cands, [u.weight for u in cands], census,
                                             srv.gen, r)
            else:
                msg += ':\n    ' + '\n    '.join(describe(u) for u in ups)
            fails.append(msg)
        if len(fails) > first:
            fails.append('%s: later rounds not checked (they build on this one)' % job.name)
            return
        x = got


def check_fedbuff(srv, job, rounds, fails, census):
    first = len(fails)
    prev = load_version(srv, job, 0, fails)
    for v in range(rounds):
        ups = [u for u in job.updates if u.status == 202 and u.round == v]
        got = load_version(srv, job, v + 1, fails)
        if got is None or prev is None:
            return
        if len(ups) != FB_K:
            fails.append('%s version %d: %d updates answered 202, buffer_size %d' %
                         (job.name, v, len(ups), FB_K))
        for u in ups:
            if not 0 <= v - u.base <= FB_MAXS:
                fails.append('%s version %d: accepted staleness %d (%s)' %
                             (job.name, v, v - u.base, describe(u)))
        num = sum(u.weight / np.sqrt(1.0 + (v - u.base)) * u.data for u in ups)
        ref = prev + FB_LR * num / sum(u.weight for u in ups) if ups else prev
        tol = 1e-5 * max(float(np.max(np.abs(ref))), 1e-30)
        err = float(np.max(np.abs(got - ref))) if ups else float('inf')
        if err > tol:
            cands = ups + unanswered(job, v, lambda u: 0 <= v - u.base <= FB_MAXS)
            fails.append('%s version %d: max error %.3g > %.3g against the %d updates answered '
                         '202 %s' % (job.name, v, err, tol, len(ups), multiplicities(
                             got - prev, cands, [u.weight / np.sqrt(1.0 + (v - u.base))
                                                 for u in cands], census, srv.gen, v)))
        if len(fails) > first:
            fails.append('%s: later versions not checked (they build on this one)' % job.name)
            return
        prev = got


def leftover_temps(data):
    out = []
    jobs = os.path.join(data, 'jobs')
    for d in [data] + [os.path.join(jobs, j) for j in os.listdir(jobs)]:
        out += [os.path.join(d, n) for n in os.listdir(d) if TEMP_MARK in n and
                n.startswith('.')]
    return out


def all_models_parse(data):
    """Every round-N.safetensors of every job parses (the end-of-run scan)."""
    bad, n = [], 0
    jobs = os.path.join(data, 'jobs')
    for j in sorted(os.listdir(jobs)):
        for name in os.listdir(os.path.join(jobs, j)):
            if name.startswith('round-') and name.endswith('.safetensors'):
                n += 1
                with open(os.path.join(jobs, j, name), 'rb') as f:
                    try:
                        e.st_decode(f.read())
                    except (e.Failure, ValueError) as ex:
                        bad.append('%s/%s: %s' % (j, name, ex))
    return n, bad


def kind_of(f):
    """The class of a failure line, for the summary."""
    m = re.match(r'(avg|adam|fb)-\d+', f)
    job = {'avg': 'fedavg', 'adam': 'fedadam', 'fb': 'fedbuff'}[m.group(1)] if m else ''
    for mark, k in (('updates answered 202, ', 'wrong number of 202s in a round'),
                    ('max error', 'model differs from the reference'),
                    ('torn', 'torn model file'), ('no model', 'model missing'),
                    ('differs from the served', 'file differs from the served model'),
                    ('temp files', 'temp file left'), ('sanitizer', 'sanitizer report'),
                    ('did not reach', 'stalled'), ('not checked', None)):
        if mark in f:
            return '%s: %s' % (job, k) if job and k else (k or 'later rounds not checked')
    return 'other: ' + f[:80]


def drain(srv, job, stop, fails):
    """Fills the job's open round (a fedbuff version past the checked ones) with updates, so
    that no round of an iteration's jobs stays open holding arena slots: a run of 200
    iterations would otherwise fill the arena with abandoned rounds."""
    stop.clear()
    for _ in range(4 * job.size()):
        st, obj = srv.json('GET', '/v1/jobs/' + job.name, token=job.token)
        if st != 200 or not obj.get('received'):
            return
        u = Update(job.name, obj['round'], 1, np.zeros(job.params, np.float32))
        job.updates.append(u)
        u.status, ans = send(srv, u, job.token, stop, time.monotonic() + 10)
        if u.status == 202:
            u.round = ans['round']
    fails.append('%s: round %s still open after %d updates' % (job.name, obj.get('round'),
                                                                4 * job.size()))


def arena_slots(srv):
    st, _, b = http_req(srv.port, 'GET', '/metrics')
    return int(e.parse_metrics(b.decode()).get('tributary_arena_slots', -1)) if st == 200 else -1


# --- one iteration ---

def iteration(srv, it, args, rng, census):
    """Runs one iteration; returns (list of failures, kill description, restart timings)."""
    fails = []
    jobs = [Job('fedavg', 'avg-%d' % it, args.params), Job('fedadam', 'adam-%d' % it,
                                                          args.params // 4 or 1),
            Job('fedbuff', 'fb-%d' % it, args.params // 4 or 1)]
    for j in jobs:
        st, obj = srv.json('POST', '/v1/jobs', j.spec())
        if st != 201:
            return ['create %s: %d %r' % (j.name, st, obj)], '-', None, {}
        j.token = obj['token']
    stop, errors, tally = threading.Event(), [], Tally()
    threads = [threading.Thread(target=client, args=(srv, j, args.rounds,
                                                     int(rng.integers(1 << 62)), stop, errors,
                                                     tally),
                                daemon=True)
               for j in jobs for _ in range(args.clients)]
    for t in threads:
        t.start()
    if args.kill != 'none':
        what = kill_moment(srv, jobs, rng, stop, tally, args.rounds, args.kill)
        srv.kill9()
        litter = leftover_temps(srv.data)
        timing = srv.start()
    else:
        what, litter, timing = 'none', [], None
    deadline = time.monotonic() + args.timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        stop.set()
        for t in threads:
            t.join(10)
        fails.append('the jobs did not reach %d rounds within %d s (rounds now: %s)' % (
            args.rounds, args.timeout, ', '.join(
                '%s %s' % (j.name, srv.json('GET', '/v1/jobs/' + j.name)[1].get('round'))
                for j in jobs)))
    fails += errors
    for j in jobs:
        drain(srv, j, stop, fails)
    slots = arena_slots(srv)
    for j in jobs:
        # A fedbuff client may still land in version >= ROUNDS; the checked versions are done.
        if j.kind == 'fedbuff':
            check_fedbuff(srv, j, args.rounds, fails, census)
        else:
            check_sync(srv, j, args.rounds, fails, census)
    left = leftover_temps(srv.data)
    if left:
        fails.append('temp files left after the restart: %s (at the kill: %d)' %
                     (left, len(litter)))
    san = srv.sanitizer_reports()
    if san:
        fails.append('sanitizer report in %s' % san)
    stats = {'sent': sum(len(j.updates) for j in jobs),
             'acked': sum(1 for j in jobs for u in j.updates if u.status == 202),
             'resent': sum(1 for j in jobs for u in j.updates if u.sends > 1),
             'lost': sum(1 for j in jobs for u in j.updates if u.lost and u.status == 202),
             'slots': slots}
    return fails, what, timing, stats


# --- recovery time against arena size ---

def recovery_sweep(build, sizes, reps, root, extra):
    """[(MiB, fresh port s, fresh health s, recovered port s, health s, recovered updates)]."""
    out = []
    for mb in sizes:
        fresh, rec, kept = [], [], []
        params = 1 << 18        # 1 MiB updates
        n = max(1, mb // 4)     # a quarter of the arena
        for rep in range(reps):
            d = tempfile.mkdtemp(prefix='soak-sweep-', dir=root)
            srv = Server(build, d, mb, extra)
            try:
                fresh.append(srv.start())
                st, obj = srv.json('POST', '/v1/jobs', {'name': 'sweep', 'params': params,
                                                        'clients_per_round': n + 1})
                if st != 201:
                    raise Failure('sweep job: %d %r' % (st, obj))
                tok = obj['token']
                body = np.ones(params, '<f4').tobytes()
                c = http.client.HTTPConnection('127.0.0.1', srv.port, timeout=30)
                for i in range(n):
                    s, _, b = e.request_on(c, 'POST', '/v1/jobs/sweep/updates', body, {
                        'Content-Type': 'application/octet-stream', 'X-Tributary-Round': '0',
                        'Idempotency-Key': 'sweep-%d' % i}, tok)
                    if s != 202:
                        raise Failure('sweep update %d: %d %r' % (i, s, b[:200]))
                c.close()
                srv.kill9()
                rec.append(srv.start())
                st, obj = srv.json('GET', '/v1/jobs/sweep', token=tok)
                kept.append(obj.get('received', -1) if st == 200 else -1)
                # Close the round, so that the stop leaves no open round (and a server that
                # keeps its arena file for open rounds removes it).
                c = http.client.HTTPConnection('127.0.0.1', srv.port, timeout=30)
                for i in range(n + 1 - max(kept[-1], 0)):
                    s, _, b = e.request_on(c, 'POST', '/v1/jobs/sweep/updates', body, {
                        'Content-Type': 'application/octet-stream', 'X-Tributary-Round': '0',
                        'Idempotency-Key': 'close-%d' % i}, tok)
                    if s != 202:
                        raise Failure('sweep closing update %d: %d %r' % (i, s, b[:200]))
                c.close()
                srv.stop()
            finally:
                if srv.proc:
                    srv.kill9()
                shutil.rmtree(d, ignore_errors=True)
        med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
        out.append((mb, med(fresh, 0), med(fresh, 1), med(rec, 0), med(rec, 1), n,
                    statistics.median(kept)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--iterations', type=int, default=200)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--rounds', type=int, default=4, help='rounds (versions) per job and '
                    'iteration')
    ap.add_argument('--clients', type=int, default=3, help='client threads per job')
    ap.add_argument('--arena-mb', type=int, default=64)
    ap.add_argument('--params', type=int, default=65536, help='fedavg parameters (fedadam '
                    'and fedbuff: a quarter)')
    ap.add_argument('--sizes', default='64,256,1024', help='arena sizes (MiB) of the '
                    'recovery sweep; empty: none')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--timeout', type=int, default=60, help='seconds an iteration may take')
    ap.add_argument('--max-failures', type=int, default=0, help='stop after this many failed '
                    'iterations (0: never)')
    ap.add_argument('--kill', default='random', choices=('random', 'between', 'fold', 'write',
                                                         'none'),
                    help='the kill moment (random: one of the three per iteration; none: no '
                    'kill, the control that checks the harness itself)')
    ap.add_argument('--server-arg', action='append', default=[], help='one more argument of '
                    '`tributary up` (repeat), e.g. --server-arg=--durability --server-arg=disk')
    ap.add_argument('-v', '--verbose', action='store_true', help='every failure of an '
                    'iteration on its line (default: the first two)')
    ap.add_argument('--keep', action='store_true', help='keep the data dir')
    args = ap.parse_args(argv)
    build = os.path.abspath(args.build)
    rng = np.random.default_rng(args.seed)
    root = tempfile.mkdtemp(prefix='trib-soak-')
    srv = Server(build, root, args.arena_mb, args.server_arg)
    print('soak: %d iterations, seed %d, %s, arena %d MiB, %d params, %d clients per job, '
          '%d rounds per job, data %s' % (args.iterations, args.seed, srv.bin, args.arena_mb,
                                          args.params, args.clients, args.rounds, root),
          flush=True)
    t_run = time.monotonic()
    first = srv.start()
    restarts, failed, census, kinds = [], [], {}, {}
    try:
        for it in range(args.iterations):
            t0 = time.monotonic()
            try:
                fails, what, timing, stats = iteration(srv, it, args, rng, census)
            except Failure as ex:
                fails, what, timing, stats = ['harness: %s' % ex], '-', None, {}
                if srv.proc is None or srv.proc.poll() is not None:
                    srv.proc = None
                    srv.start()
            if timing:
                restarts.append(timing)
            print('iter %3d %-4s %5.1f s  kill: %-48s restart %s  %s%s' % (
                it, 'FAIL' if fails else 'ok', time.monotonic() - t0, what,
                '%.0f/%.0f ms' % (timing[0] * 1e3, timing[1] * 1e3) if timing else '-',
                '%(acked)d/%(sent)d answered 202, %(resent)d resent, %(lost)d 202 after a '
                'lost answer, %(slots)d arena slots live after' % stats if stats else '',
                ''.join('\n    ' + f.replace('\n', '\n    ') for f in fails[:None if args.verbose else 2])), flush=True)
            if fails:
                failed.append((it, what, fails))
                for f in fails:
                    k = kind_of(f)
                    kinds[k] = kinds.get(k, 0) + 1
                if args.max_failures and len(failed) >= args.max_failures:
                    print('stopping: %d failed iterations' % len(failed))
                    break
        n_models, bad = all_models_parse(srv.data)
        rc = srv.stop()
        if rc != 0:
            failed.append((-1, 'final SIGTERM', ['tributary up exited %s after SIGTERM' % rc]))
        if bad:
            failed.append((-1, 'final scan', bad))
    finally:
        if srv.proc:
            srv.kill9()
    done = it + 1
    print('\n%d iterations in %.0f s, %d failed; %d model files scanned, %d torn' % (
        done, time.monotonic() - t_run, len(failed), n_models, len(bad)))
    for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print('  %4d x %s' % (n, k))
    if census:
        print('  updates whose count in the model is wrong (fedavg, fedbuff: least squares):')
        for k, n in sorted(census.items(), key=lambda kv: -kv[1]):
            print('  %4d x %s' % (n, k))
    if failed:
        print('first failed iterations:')
    for it, what, fails in failed[:5]:
        print('  iteration %d (kill: %s):\n    %s' % (it, what, '\n    '.join(
            f.replace('\n', '\n    ') for f in fails[:8])))
    if restarts:
        rp = statistics.median(t[0] for t in restarts)
        rh = statistics.median(t[1] for t in restarts)
        print('start to serving, arena %d MiB: fresh %.0f ms (port file) / %.0f ms (/healthz); '
              'restart after kill -9, median of %d: %.0f / %.0f ms = %.2f x fresh' % (
                  args.arena_mb, first[0] * 1e3, first[1] * 1e3, len(restarts), rp * 1e3,
                  rh * 1e3, rh / first[1]))
    sizes = [int(s) for s in args.sizes.split(',') if s]
    if sizes:
        print('\nrecovery against arena size (median of %d; a quarter of the arena in 1 MiB '
              'updates of an open round, then kill -9):' % args.reps)
        print('  %8s  %11s  %11s  %11s  %8s' % ('arena', 'fresh ms', 'recover ms',
                                                  'recov/fresh', 'kept'))
        for mb, fp, fh, rp, rh, n, kept in recovery_sweep(build, sizes, args.reps, root, args.server_arg):
            print('  %5d MiB  %5.0f/%5.0f  %5.0f/%5.0f  %11.2f  %3d of %d' % (
                mb, fp * 1e3, fh * 1e3, rp * 1e3, rh * 1e3, rh / fh, kept, n), flush=True)
        print('  (ms: to the port file / to the first /healthz 200, from exec)')
    print('\ntarget 0 failures: %s (%d of %d iterations failed)' % (
        'PASS' if not failed else 'MISS', len(failed), done))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print('data kept in %s' % root)
    return 0 if not failed else 1


if __name__ == '__main__':
    sys.exit(main())
