# SPDX-License-Identifier: MIT
# HTTPS at the gateway: a self-signed certificate, exact models over curl, refusals and timeouts.
import http.client
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

JOB = 'tls'
P = 1000000  # 4 MB bodies: hundreds of records each, and curl sends Expect: 100-continue
SCHEMA = [{'name': 'w', 'shape': [P], 'dtype': 'F32'}]
CPR = 4
HEAD_S, BODY_S, IDLE_S = 2, 3, 4
SLACK = 1.5  # the timers are checked on the loop's 200 ms tick; a loaded test box is slower
FP_RE = re.compile(r'TLS certificate (\S+)( \(self-signed, made now\))?, key (\S+): '
                   r'sha256 Fingerprint=([0-9A-F:]{95}) \(pin: ([0-9a-f]{64})\)')


class TlsServer(e.Server):
    """`up --tls self-signed`; its helpers speak HTTPS, trusting the data dir's certificate."""

    def __init__(self):
        super().__init__(extra=['--tls', 'self-signed', '--head-timeout-s', str(HEAD_S),
                                '--body-timeout-s', str(BODY_S),
                                '--idle-timeout-s', str(IDLE_S)])
        self.cert = os.path.join(self.data_dir, 'data', 'tls-cert.pem')
        self.key = os.path.join(self.data_dir, 'data', 'tls-key.pem')

    def ctx(self):
        return ssl.create_default_context(cafile=self.cert)

    def conn(self, timeout=30):
        return http.client.HTTPSConnection('localhost', self.port, timeout=timeout,
                                           context=self.ctx())

    def url(self, path):
        return 'https://localhost:%d%s' % (self.port, path)

    def fingerprint(self):
        """(made now, colon form, hex) from this start's log line."""
        m = FP_RE.search(self.log_text())
        check(m, 'no fingerprint line in the log')
        check(m.group(1) == self.cert and m.group(3) == self.key,
              'the log names %s and %s, want %s and %s' %
              (m.group(1), m.group(3), self.cert, self.key))
        return bool(m.group(2)), m.group(4), m.group(5)


def curl(*args, ok=True):
    """curl -sS ARGS; returns (http status, body bytes)."""
    with tempfile.NamedTemporaryFile() as out:
        p = subprocess.run(['curl', '-sS', '-o', out.name, '-w', '%{http_code}'] + list(args),
                           capture_output=True, timeout=60)
        if ok:
            check(p.returncode == 0, 'curl %s: exit %d: %s' %
                  (' '.join(args[-1:]), p.returncode, p.stderr.decode()[-300:]))
        return int(p.stdout or b'0'), open(out.name, 'rb').read()


def certificate(srv):
    """Files, modes, and the fingerprint the log prints = openssl's."""
    check(os.stat(srv.key).st_mode & 0o777 == 0o600, 'the key file is not mode 0600')
    made, colon, hexfp = srv.fingerprint()
    check(made, 'the first start did not say it made the certificate')
    out = subprocess.run(['openssl', 'x509', '-noout', '-fingerprint', '-sha256', '-in',
                          srv.cert], capture_output=True, check=True).stdout.decode().strip()
    check(out.split('=', 1)[1] == colon, 'log fingerprint %s, openssl says %s' % (colon, out))
    check(colon.replace(':', '').lower() == hexfp, 'the pin %s is not the fingerprint' % hexfp)
    san = subprocess.run(['openssl', 'x509', '-noout', '-ext', 'subjectAltName', '-in', srv.cert],
                         capture_output=True, check=True).stdout.decode()
    for name in ('DNS:localhost', 'IP Address:127.0.0.1'):
        check(name in san, 'subjectAltName lacks %s: %s' % (name, san))
    e.log('certificate: %s, key mode 0600, fingerprint as openssl prints it' % colon[:23])
    return colon


def exact_model(srv):
    """Updates over curl (4 MB each, Expect: 100-continue) give the exact weighted mean."""
    st, obj, _ = srv.json('POST', '/v1/jobs', {'name': JOB, 'clients_per_round': CPR,
                                                'tensors': SCHEMA}, token=srv.admin)
    check(st == 201, 'create job over HTTPS: %d %r' % (st, obj))
    tok = srv.job_token = obj['token']
    rng = np.random.default_rng(13)
    ups = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(CPR):
            m = e.random_model(rng, SCHEMA)
            path = os.path.join(d, 'u%d' % i)
            with open(path, 'wb') as f:
                f.write(e.raw_body(SCHEMA, m))
            st, b = curl('--cacert', srv.cert, '-H', 'Authorization: Bearer ' + tok,
                         '-H', 'Content-Type: application/octet-stream',
                         '-H', 'X-Tributary-Round: 0', '-H', 'X-Tributary-Samples: %d' % (i + 1),
                         '--data-binary', '@' + path, srv.url('/v1/jobs/%s/updates' % JOB))
            check(st == 202, 'update %d over HTTPS: %d %r' % (i, st, b[:200]))
            ups.append((i + 1, m))
    st, b = curl('--cacert', srv.cert, '-H', 'Authorization: Bearer ' + tok,
                 srv.url('/v1/jobs/%s/model?after=0&timeout=30' % JOB))
    check(st == 200, 'model over HTTPS: %d' % st)
    err = e.check_model(b, SCHEMA, e.weighted_mean(ups))
    e.log('%d updates of 4 MB over HTTPS: model exact (max error %.2g)' % (CPR, err))
    # The IP in the certificate works as well as the name.
    st, _ = curl('--cacert', srv.cert, 'https://127.0.0.1:%d/healthz' % srv.port)
    check(st == 200, 'https://127.0.0.1 /healthz: %d' % st)


def plain_http_refused(srv):
    """Plain HTTP to the TLS port: a 400 in clear that says so, then the close."""
    s = e.raw_connect(srv.port)
    s.sendall(e.http_head('GET', '/healthz', {}))
    r, _ = e.read_response(s)
    check(r.status == 400 and b'HTTPS' in r.body, 'plain HTTP got %d %r' % (r.status, r.body))
    s.settimeout(5)
    check(s.recv(100) == b'', 'the connection stayed open after the 400')
    s.close()
    e.log('plain HTTP to the TLS port: 400 %s, closed' % r.body.decode())


def closed_within(s, within, what):
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    except socket.timeout:
        raise e.Failure('%s stayed open %.1f s' % (what, within))


def stalled_handshake(srv):
    """A client that stops mid-handshake is closed by the head timeout."""
    s = e.raw_connect(srv.port)
    # A TLS record header and the start of a ClientHello, then nothing.
    s.sendall(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03')
    t0 = time.monotonic()
    closed_within(s, HEAD_S + SLACK, 'a stalled handshake')
    s.close()
    e.log('a stalled handshake closed after %.1f s (head timeout %d s)' %
          (time.monotonic() - t0, HEAD_S))


def slowloris(srv):
    """TLS connections that trickle their heads do not hold up an honest client, then close."""
    slow = []
    for _ in range(20):
        s = srv.ctx().wrap_socket(e.raw_connect(srv.port), server_hostname='localhost')
        s.sendall(b'GET /healthz HTTP/1.1\r\n')
        slow.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in slow:
                try:
                    s.sendall(b'X')
                except OSError:
                    pass
            time.sleep(0.3)
    t = threading.Thread(target=trickle)
    t.start()
    try:
        t0 = time.monotonic()
        st, _ = curl('--cacert', srv.cert, srv.url('/healthz'))
        took = time.monotonic() - t0
        check(st == 200 and took < 1.5, 'an honest client with 20 slow TLS heads: %d in %.1f s' %
              (st, took))
        for s in slow:
            closed_within(s, HEAD_S + SLACK + 1, 'a slowloris TLS connection')
    finally:
        stop.set()
        t.join()
        for s in slow:
            s.close()
    e.log('20 slowloris TLS connections: an honest client served in %.2f s, all closed' % took)


def pipelined(srv):
    """Two requests in one TLS write: two answers, in order (the second from buffered records)."""
    s = srv.ctx().wrap_socket(e.raw_connect(srv.port), server_hostname='localhost')
    s.sendall(e.http_head('GET', '/healthz', {}) + e.http_head('GET', '/nope', {}))
    r1, rest = e.read_response(s)
    r2, _ = e.read_response(s, rest)
    check(r1.status == 200 and r2.status in (401, 404), 'pipelined over TLS: %d, %d' %
          (r1.status, r2.status))
    s.close()
    e.log('two pipelined requests in one TLS write: %d then %d' % (r1.status, r2.status))


def stalled_body(srv):
    """A TLS upload that stops mid-body gets a 408 record and its close; its slot is freed."""
    st, obj, _ = srv.json('GET', '/v1/jobs/' + JOB, token=srv.admin)
    used = 'tributary_arena_bytes{state="used"}'
    before = srv.metrics()[used]
    s = srv.ctx().wrap_socket(e.raw_connect(srv.port), server_hostname='localhost')
    s.sendall(e.http_head('POST', '/v1/jobs/%s/updates' % JOB, {
        'Authorization': 'Bearer ' + srv.job_token, 'X-Tributary-Round': obj['round'],
        'Content-Type': 'application/octet-stream', 'Content-Length': 4 * P}) + b'\0' * 16)
    t0 = time.monotonic()
    during = e.wait_for(lambda: srv.metrics()[used] > before and srv.metrics()[used], 2,
                        'the stalled TLS body to hold a slot')
    s.settimeout(BODY_S + SLACK)
    try:
        r, _ = e.read_response(s)
    except (socket.timeout, ssl.SSLError) as x:
        raise e.Failure('a stalled TLS body got no 408: %r' % x)
    check(r.status == 408, 'a stalled TLS body got %d' % r.status)
    closed_within(s, SLACK, 'a stalled TLS body after its 408')
    s.close()
    m = srv.metrics()
    check(m['tributary_requests_timed_out_total{phase="body"}'] >= 1, 'no body timeout counted')
    check(m[used] == before, 'arena bytes used %d before the stalled body, %d during, %d after '
          'its close' % (before, during, m[used]))
    e.log('a stalled TLS body: 408 after %.1f s, closed' % (time.monotonic() - t0))


def idle_close_notify(srv):
    """An idle keep-alive TLS connection closes after the idle timeout, with close_notify."""
    ctx = srv.ctx()
    # Python lets OpenSSL take a bare EOF for close_notify by default: not here.
    ctx.options &= ~getattr(ssl, 'OP_IGNORE_UNEXPECTED_EOF', 0)
    s = ctx.wrap_socket(e.raw_connect(srv.port), server_hostname='localhost',
                        suppress_ragged_eofs=False)
    s.sendall(e.http_head('GET', '/healthz', {}))
    r, _ = e.read_response(s)
    check(r.status == 200, '/healthz: %d' % r.status)
    t0 = time.monotonic()
    s.settimeout(IDLE_S + SLACK)
    try:
        got = s.recv(100)
    except ssl.SSLError as x:  # UNEXPECTED_EOF_WHILE_READING: no close_notify
        raise e.Failure('an idle TLS connection was closed without close_notify: %s' % x)
    except socket.timeout:
        raise e.Failure('an idle TLS connection stayed open %.1f s' % (IDLE_S + SLACK))
    took = time.monotonic() - t0
    check(got == b'' and took >= IDLE_S - 0.5, 'idle TLS connection: %r after %.1f s' %
          (got, took))
    s.close()
    e.log('an idle TLS connection closed after %.1f s (idle timeout %d s), with close_notify' %
          (took, IDLE_S))


def s_client(srv, *args):
    p = subprocess.run(['openssl', 's_client', '-connect', '127.0.0.1:%d' % srv.port,
                        '-CAfile', srv.cert, '-alpn', 'http/1.1'] + list(args),
                       input=b'', capture_output=True, timeout=20)
    return p.stdout.decode('latin-1') + p.stderr.decode('latin-1')


def versions(srv):
    """TLS 1.3 by default, 1.2 on request, both with ALPN http/1.1; 1.1 is refused."""
    out = s_client(srv)
    check('TLSv1.3' in out and 'ALPN protocol: http/1.1' in out and
          'Verify return code: 0 (ok)' in out, 's_client:\n%s' % out[-1500:])
    out = s_client(srv, '-tls1_2')
    check('New, TLSv1.2' in out and 'ALPN protocol: http/1.1' in out, 's_client -tls1_2:\n%s' %
          out[-1500:])
    st, _ = curl('--tlsv1.2', '--tls-max', '1.2', '--cacert', srv.cert, srv.url('/healthz'))
    check(st == 200, 'curl over TLS 1.2: %d' % st)
    out = s_client(srv, '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0')
    check('New, TLSv1.1' not in out and 'alert protocol version' in out,
          's_client -tls1_1 was not refused:\n%s' % out[-1500:])
    # TLS 1.2 renegotiation (s_client's "R" command) is refused with an alert.
    p = subprocess.run(['bash', '-c', '(sleep 1; printf "R\\n"; sleep 1) | openssl s_client '
                        '-tls1_2 -connect 127.0.0.1:%d -CAfile %s' % (srv.port, srv.cert)],
                       capture_output=True, timeout=20)
    out = (p.stdout + p.stderr).decode('latin-1')
    check('RENEGOTIATING' in out and 'no renegotiation' in out,
          'renegotiation was not refused:\n%s' % out[-1500:])
    e.log('s_client: TLS 1.3 and TLS 1.2 with ALPN http/1.1; TLS 1.1 and renegotiation refused')


def tls_metrics(srv):
    m = srv.metrics()
    f = 'tributary_tls_handshakes_failed_total{reason="%s"}'
    check(m['tributary_tls_handshakes_total'] >= 10, 'handshakes_total %r' %
          m['tributary_tls_handshakes_total'])
    for reason in ('http_request', 'version', 'timeout'):
        check(m[f % reason] >= 1, 'failed{%s} = %r' % (reason, m[f % reason]))
    check(m['tributary_requests_timed_out_total{phase="head"}'] >= 21,
          'timed_out{head} = %r' % m['tributary_requests_timed_out_total{phase="head"}'])
    e.log('metrics: %d handshakes; failed: %s' % (m['tributary_tls_handshakes_total'], ', '.join(
        '%s %d' % (r, m[f % r]) for r in ('http_request', 'version', 'timeout', 'closed'))))


def bad_files(srv):
    """Missing, garbage and mismatched files: exit 2 before serving, naming the file."""
    d = tempfile.mkdtemp(prefix='trib-tls-')
    other = os.path.join(d, 'other-key.pem')
    junk = os.path.join(d, 'junk.pem')
    subprocess.run(['openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-out', other], check=True, capture_output=True)
    with open(junk, 'w') as f:
        f.write('not a certificate\n')
    cases = [(['--tls-cert', os.path.join(d, 'none.pem'), '--tls-key', other], 'none.pem'),
             (['--tls-cert', junk, '--tls-key', other], 'junk.pem'),
             (['--tls-cert', srv.cert, '--tls-key', junk], 'junk.pem'),
             (['--tls-cert', srv.cert, '--tls-key', other], 'is not the key of'),
             (['--tls-cert', srv.cert], 'go together'),
             (['--tls', 'yes'], 'self-signed')]
    for args, want in cases:
        p = subprocess.run([e.BIN, 'up', '--listen', '127.0.0.1:0', '--data-dir',
                            os.path.join(d, 'data')] + args, capture_output=True, timeout=20)
        out = (p.stdout + p.stderr).decode()
        check(p.returncode == 2 and want in out, 'up %s: exit %d, want 2 and %r:\n%s' %
              (' '.join(args), p.returncode, want, out[-600:]))
    subprocess.run(['rm', '-rf', d], check=True)
    e.log('missing, garbage and mismatched cert/key files: exit 2, the file named')


def scenario():
    with TlsServer() as srv:
        colon = certificate(srv)
        exact_model(srv)
        plain_http_refused(srv)
        pipelined(srv)
        stalled_body(srv)
        idle_close_notify(srv)
        stalled_handshake(srv)
        slowloris(srv)
        versions(srv)
        tls_metrics(srv)
        srv.restart()
        made, colon2, _ = srv.fingerprint()
        check(not made and colon2 == colon, 'the restart made or used another certificate: %s '
              'then %s' % (colon, colon2))
        srv.healthy()
        e.log('restart: the same certificate (%s...)' % colon2[:23])
        bad_files(srv)


if __name__ == '__main__':
    e.main(scenario)
