# SPDX-License-Identifier: MIT
# Shared helpers of the end-to-end scenarios: run a real `tributary up`, talk HTTP, build payloads.
"""Helpers for the end-to-end scenarios (standard library + numpy only).

A scenario does:

    with Server() as srv:
        ...drive srv over HTTP...

Server() starts `tributary up` on a free port in a fresh data dir, and on exit
stops it with SIGTERM, checks it exits 0 within 10 s and that its log holds no
sanitizer report. Any exception prints the server's log. Scenarios call
main(fn) so that a failure becomes exit status 1 with a readable message.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

BIN = os.environ.get('TRIBUTARY_BIN', 'build/tributary')
FN_BIN = os.environ.get('TRIBUTARY_FN_BIN', '')
SANITIZER_MARKS = ('Sanitizer', 'runtime error')
# TRIBUTARY_DATAPLANE=shm+unix|tcp|shm+bpf runs a scenario on that data plane (default: the
# server's own choice, shm+bpf where eBPF loads).
DATAPLANE = os.environ.get('TRIBUTARY_DATAPLANE', '')
DATAPLANE_ARGS = ['--dataplane', DATAPLANE] if DATAPLANE else []


class Failure(Exception):
    """A scenario check failed."""


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def log(msg):
    print(msg, flush=True)


# --- the server ---

class Server:
    """One `tributary up` process on 127.0.0.1 and a free port; data dir kept across restarts."""

    def __init__(self, arena_mb=64, data_dir=None, extra=(), wrap=(), owner=None):
        self.arena_mb = arena_mb
        self.extra = list(extra)
        self.wrap = list(wrap)    # a command the server runs under, e.g. setpriv as nobody
        self.owner = owner        # uid that must own the data dir (with wrap)
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix='trib-e2e-')
        self.proc = None
        self.port = None
        self.logs = []      # log files of every start, in order
        self.log_path = None
        self.checked = 0    # bytes of the current log already checked for sanitizer reports

    # Starts (or restarts) the server; returns once the port file names the bound port.
    def start(self, timeout=30):
        check(os.access(BIN, os.X_OK), 'no tributary binary at %s (set TRIBUTARY_BIN)' % BIN)
        port_file = os.path.join(self.data_dir, 'port.%d' % len(self.logs))
        self.log_path = os.path.join(self.data_dir, 'server.%d.log' % len(self.logs))
        self.logs.append(self.log_path)
        if os.path.exists(port_file):
            os.unlink(port_file)
        logf = open(self.log_path, 'wb')
        if self.owner is not None:
            os.chown(self.data_dir, self.owner, self.owner)
        self.proc = subprocess.Popen(
                self.wrap + [BIN, 'up', '--listen', '127.0.0.1:0', '--port-file', port_file,
                 '--data-dir', os.path.join(self.data_dir, 'data'),
                 '--arena-mb', str(self.arena_mb)] + DATAPLANE_ARGS + self.extra,
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(port_file) as f:
                    txt = f.read()
                if txt.endswith('\n'):
                    self.port = int(txt)
                    break
            except FileNotFoundError:
                pass
            if self.proc.poll() is not None:
                raise Failure('tributary up exited with %d before listening' %
                              self.proc.returncode)
            if time.monotonic() > deadline:
                raise Failure('tributary up wrote no port file within %d s' % timeout)
            time.sleep(0.02)
        self.admin = self.read_admin_token()
        return self

    def read_admin_token(self):
        path = os.path.join(self.data_dir, 'data', 'admin-token')
        st = os.stat(path)
        check(st.st_mode & 0o777 == 0o600, 'admin-token has mode %o, want 600' %
              (st.st_mode & 0o777))
        with open(path) as f:
            tok = f.read().strip()
        check(len(tok) >= 16, 'admin token too short: %r' % tok)
        return tok

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self, path=None):
        try:
            with open(path or self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError as e:
            return '(no log: %s)' % e

    def check_log(self):
        """Fails on a sanitizer report in any log written so far."""
        for p in self.logs:
            txt = self.log_text(p)
            for mark in SANITIZER_MARKS:
                check(mark not in txt, 'sanitizer report in the server log %s' % p)

    # SIGTERM; must exit 0 within @timeout seconds.
    def stop(self, timeout=10):
        if not self.proc or self.proc.poll() is not None:
            rc = self.proc.returncode if self.proc else 0
            self.proc = None
            check(rc == 0, 'tributary up had already exited with %s' % rc)
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise Failure('tributary up did not exit within %d s of SIGTERM' % timeout)
        self.proc = None
        check(rc == 0, 'tributary up exited with %d after SIGTERM' % rc)
        self.check_log()

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def arena_files(self):
        """The arena files this server's logs named (made, re-attached or moved aside)."""
        return arena_files_in([self.log_text(p) for p in self.logs])

    def remove_arenas(self):
        """After the last stop: a kill -9 or a stop with open rounds leaves its arena file."""
        remove_arena_files(self.arena_files())

    def __exit__(self, etype, evalue, tb):
        try:
            if etype is None:
                self.stop()
            elif self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        except BaseException:
            self.dump_logs()
            self.remove_arenas()
            raise
        self.remove_arenas()
        if etype is not None:
            self.dump_logs()
        elif self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return False

    def dump_logs(self):
        for p in self.logs:
            txt = self.log_text(p)
            if len(txt) > 60000:
                txt = txt[:20000] + '\n[... %d bytes cut ...]\n' % (len(txt) - 40000) + \
                      txt[-20000:]
            sys.stdout.write('----- server log %s -----\n%s\n----- end of log -----\n' %
                             (p, txt))
        sys.stdout.flush()

    # --- HTTP ---

    def conn(self, timeout=30):
        return http.client.HTTPConnection('127.0.0.1', self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, token=None, timeout=30):
        """One request on a fresh connection; returns (status, headers dict lower-case, body)."""
        c = self.conn(timeout)
        try:
            return request_on(c, method, path, body, headers, token)
        finally:
            c.close()

    def json(self, method, path, obj=None, token=None, headers=None):
        """Returns (status, parsed JSON body or None, headers)."""
        body = None if obj is None else json.dumps(obj).encode()
        h = dict(headers or {})
        if body is not None:
            h.setdefault('Content-Type', 'application/json')
        st, hd, b = self.request(method, path, body, h, token)
        return st, parse_json(b), hd

    def create_job(self, spec, expect=201):
        st, obj, _ = self.json('POST', '/v1/jobs', spec, token=self.admin)
        check(st == expect, 'POST /v1/jobs %s: want %d, got %d %r' % (spec, expect, st, obj))
        return obj

    def status(self, job, token=None):
        st, obj, _ = self.json('GET', '/v1/jobs/' + job, token=token or self.admin)
        check(st == 200, 'GET /v1/jobs/%s: %d %r' % (job, st, obj))
        return obj

    def post_update(self, job, token, rnd, body, samples=None, ctype='application/octet-stream',
                    expect=202, extra=None):
        h = {'Content-Type': ctype, 'X-Tributary-Round': str(rnd)}
        if samples is not None:
            h['X-Tributary-Samples'] = str(samples)
        h.update(extra or {})
        st, hd, b = self.request('POST', '/v1/jobs/%s/updates' % job, body, h, token)
        obj = parse_json(b)
        if expect is not None:
            check(st == expect, 'update to %s round %s: want %d, got %d %r' %
                  (job, rnd, expect, st, b[:300]))
        return st, obj, hd

    def get_model(self, job, token, query='', expect=200, timeout=30):
        st, hd, b = self.request('GET', '/v1/jobs/%s/model%s' % (job, query), None, None,
                                 token, timeout)
        if expect is not None:
            check(st == expect, 'GET model of %s%s: want %d, got %d %r' %
                  (job, query, expect, st, b[:300]))
        return st, hd, b

    def metrics(self, admin=True):
        """/metrics; with the admin token (the default) its labels name jobs."""
        st, _, b = self.request('GET', '/metrics', token=self.admin if admin else None)
        check(st == 200, '/metrics: %d' % st)
        return parse_metrics(b.decode())

    def healthy(self):
        st, _, b = self.request('GET', '/healthz')
        check(st == 200 and json.loads(b) == {'status': 'ok'}, '/healthz: %d %r' % (st, b))


def arena_files_in(logs):
    """The arena files that server logs name (made, re-attached or moved aside)."""
    found = []
    for txt in logs:
        for m in re.finditer(r'arena file (/\S+?):? |moved aside to (/\S+) ', txt):
            f = m.group(1) or m.group(2)
            if f not in found:
                found.append(f)
    return found


def remove_arena_files(files):
    """Once their servers are gone: `make test` fails on an arena file left behind."""
    for f in files:
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass


def request_on(c, method, path, body=None, headers=None, token=None):
    h = dict(headers or {})
    if token is not None:
        h['Authorization'] = 'Bearer ' + token
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def parse_json(b):
    try:
        return json.loads(b) if b else None
    except ValueError:
        return None


def parse_metrics(text):
    """{'name{labels}': float} of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        k, _, v = line.rpartition(' ')
        out[k] = float(v)
    return out


# --- raw sockets ---

def raw_connect(port, timeout=10):
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return parse_json(self.body)


def read_response(sock, buf=b''):
    """Reads one HTTP/1.1 response (Content-Length framed); returns (RawResponse, leftover)."""
    while b'\r\n\r\n' not in buf:
        d = sock.recv(65536)
        if not d:
            raise Failure('connection closed before a response head (got %r)' % buf[:200])
        buf += d
    head, _, rest = buf.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    parts = lines[0].split(' ', 2)
    check(parts[0] == 'HTTP/1.1', 'bad status line %r' % lines[0])
    status = int(parts[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(':')
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get('content-length', '0'))
    while len(rest) < n:
        d = sock.recv(65536)
        if not d:
            raise Failure('connection closed inside a response body')
        rest += d
    return RawResponse(status, headers, rest[:n]), rest[n:]


def raw_request(port, data, timeout=10):
    """Sends @data on a fresh socket, returns the first response."""
    s = raw_connect(port, timeout)
    try:
        s.sendall(data)
        r, _ = read_response(s)
        return r
    finally:
        s.close()


def http_head(method, path, headers):
    lines = ['%s %s HTTP/1.1' % (method, path), 'Host: 127.0.0.1']
    lines += ['%s: %s' % kv for kv in headers.items()]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode()


# --- tensors and payloads ---

def schema_elems(schema):
    return [int(np.prod(t['shape'], dtype=np.int64)) if t['shape'] else 1 for t in schema]


def random_model(rng, schema, scale=1.0):
    """{name: float32 array of the tensor's shape}."""
    return {t['name']: (rng.standard_normal(t['shape']) * scale).astype(np.float32)
            for t in schema}


def flatten(schema, tensors):
    return np.concatenate([np.asarray(tensors[t['name']], np.float32).ravel() for t in schema])


def unflatten(schema, flat):
    out, off = {}, 0
    for t, n in zip(schema, schema_elems(schema)):
        out[t['name']] = flat[off:off + n].reshape(t['shape'])
        off += n
    return out


def raw_body(schema, tensors):
    return flatten(schema, tensors).astype('<f4').tobytes()


def st_encode(tensors, order=None, dtype='F32', metadata=None, shapes=None):
    """A safetensors file of {name: array}; tensors written in @order (default: dict order)."""
    names = list(order or tensors.keys())
    hdr, blobs, off = {}, [], 0
    if metadata is not None:
        hdr['__metadata__'] = metadata
    for name in names:
        a = np.asarray(tensors[name])
        if dtype == 'F32':
            b = a.astype('<f4').tobytes()
        elif dtype == 'F16':
            b = a.astype('<f2').tobytes()
        elif dtype == 'I8':
            b = a.astype('i1').tobytes()
        else:
            raise ValueError(dtype)
        shape = list((shapes or {}).get(name, a.shape))
        hdr[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)


def st_decode(buf):
    """(header dict without __metadata__, {name: float64 array}, [names in data order])."""
    check(len(buf) >= 8, 'safetensors shorter than 8 bytes')
    (hl,) = struct.unpack('<Q', buf[:8])
    check(8 + hl <= len(buf), 'safetensors header length %d exceeds the file' % hl)
    hdr = json.loads(buf[8:8 + hl])
    hdr.pop('__metadata__', None)
    data = buf[8 + hl:]
    out = {}
    for name, e in hdr.items():
        check(e['dtype'] == 'F32', 'tensor %s has dtype %s' % (name, e['dtype']))
        b, en = e['data_offsets']
        n = int(np.prod(e['shape'], dtype=np.int64)) if e['shape'] else 1
        check(en - b == 4 * n and en <= len(data), 'tensor %s: bad data_offsets' % name)
        out[name] = np.frombuffer(data[b:en], '<f4').astype(np.float64).reshape(e['shape'])
    order = sorted(hdr, key=lambda k: hdr[k]['data_offsets'][0])
    return hdr, out, order


def weighted_mean(updates):
    """Float64 reference: updates is a list of (weight, {name: array})."""
    tot = float(sum(w for w, _ in updates))
    names = updates[0][1].keys()
    return {k: sum(np.asarray(u[k], np.float64) * w for w, u in updates) / tot for k in names}


def check_model(buf, schema, ref, what='model'):
    """The served safetensors must hold exactly @schema's tensors, equal to @ref (float64)."""
    hdr, got, _ = st_decode(buf)
    check(set(hdr) == {t['name'] for t in schema}, '%s: tensors %s, want %s' %
          (what, sorted(hdr), [t['name'] for t in schema]))
    worst = 0.0
    mag = max(float(np.max(np.abs(ref[t['name']]))) for t in schema) if schema else 0.0
    for t in schema:
        n = t['name']
        check(list(hdr[n]['shape']) == list(t['shape']), '%s: %s has shape %s, want %s' %
              (what, n, hdr[n]['shape'], t['shape']))
        worst = max(worst, float(np.max(np.abs(got[n] - ref[n]))) if got[n].size else 0.0)
    tol = 1e-5 * max(mag, 1e-30)
    check(worst <= tol, '%s: max error %.3g > %.3g (1e-5 x max magnitude %.3g)' %
          (what, worst, tol, mag))
    return worst


def zeros_model(schema):
    return {t['name']: np.zeros(t['shape']) for t in schema}


# --- processes ---

def fn_children(pid):
    """Pids of live (not zombie) function processes (tributary-fn, and tributary-fn-sa: a
    secure job's unmasking shards) whose parent is @pid."""
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index('(') + 1:stat.rindex(')')]
        fields = stat[stat.rindex(')') + 2:].split()
        if comm in ('tributary-fn', 'tributary-fn-sa') and int(fields[1]) == pid and \
                fields[0] != 'Z':
            out.append(int(d))
    return out


def wait_for(pred, timeout, what, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure('timed out after %.1f s waiting for %s' % (timeout, what))
        time.sleep(step)


def main(fn):
    """Runs a scenario: exit 0 on success, 1 with the reason on failure."""
    t0 = time.monotonic()
    try:
        fn()
    except Failure as e:
        print('FAIL: %s' % e, flush=True)
        sys.exit(1)
    except Exception:
        traceback.print_exc(file=sys.stdout)
        print('FAIL: unexpected exception', flush=True)
        sys.exit(1)
    print('PASS (%.1f s)' % (time.monotonic() - t0), flush=True)
    sys.exit(0)
