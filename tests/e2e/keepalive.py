# SPDX-License-Identifier: MIT
# Connection reuse: many requests over one http.client connection, pipelined requests on a raw
# socket (also fed in odd-sized pieces), Connection: close, HTTP/1.0 and Expect: 100-continue,
# and Connection: close with a body refused at its head (read and dropped, never a reset).
import os
import random
import sys
import time
import urllib.error
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check, http_head  # noqa: E402

JOB = 'ka'
CPR = 5
P = 64
SCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]
UPD = '/v1/jobs/%s/updates' % JOB


def update_req(tok, rnd, m, samples, ctype='application/octet-stream', extra=None):
    body = e.raw_body(SCHEMA, m) if ctype != 'application/x-safetensors' else e.st_encode(m)
    h = {'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': rnd,
         'X-Tributary-Samples': samples, 'Content-Type': ctype, 'Content-Length': len(body)}
    h.update(extra or {})
    return http_head('POST', UPD, h) + body


def get_req(path, tok=None):
    return http_head('GET', path, {'Authorization': 'Bearer ' + tok} if tok else {})


def model(rng, scale=1.0):
    return {'weights': (rng.standard_normal(P) * scale).astype(np.float32)}


def closed(sock, timeout=5):
    """True if the peer closes @sock within @timeout seconds without sending anything more."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b''
    except OSError:
        return False


def run():
    rng = np.random.default_rng(17)
    with e.Server() as srv:
        tok = srv.create_job({'name': JOB, 'clients_per_round': CPR, 'fan_in': 2,
                              'params': P})['token']

        # 1. One http.client connection for three rounds of updates, polls and errors.
        c = srv.conn()
        c.connect()
        sock = c.sock
        local = sock.getsockname()
        nreq = 0

        def on_conn(method, path, body=None, headers=None, token=tok):
            nonlocal nreq
            out = e.request_on(c, method, path, body, headers, token)
            nreq += 1
            check(c.sock is sock and sock.getsockname() == local,
                  'request %d (%s %s) did not reuse the connection' % (nreq, method, path))
            check(out[1].get('connection', '').lower() == 'keep-alive',
                  'request %d: Connection: %r' % (nreq, out[1].get('connection')))
            return out

        for r in range(3):
            ups = []
            for i in range(CPR):
                m = model(rng, 1 + i)
                st, _, b = on_conn('POST', UPD, e.raw_body(SCHEMA, m), {
                        'Content-Type': 'application/octet-stream', 'X-Tributary-Round': r,
                        'X-Tributary-Samples': i + 2})
                check(st == 202, 'round %d update %d: %d %r' % (r, i, st, b))
                ups.append((i + 2, m))
                if i == 1:
                    # Errors with bodies must not desynchronise the connection.
                    st, _, _ = on_conn('POST', UPD, e.raw_body(SCHEMA, m), {
                            'Content-Type': 'text/plain', 'X-Tributary-Round': r})
                    check(st == 415, 'text/plain update: %d' % st)
                    st, _, _ = on_conn('POST', UPD, e.raw_body(SCHEMA, m), {
                            'Content-Type': 'application/octet-stream',
                            'X-Tributary-Round': r + 1})
                    check(st == 409, 'future update: %d' % st)
                    st, _, _ = on_conn('POST', UPD, e.raw_body(SCHEMA, m)[:-4], {
                            'Content-Type': 'application/octet-stream',
                            'X-Tributary-Round': r})
                    check(st == 422, 'short update: %d' % st)
                    # An unknown job is a 404 to the admin (a job's token gets 401 there).
                    st, _, _ = on_conn('GET', '/v1/jobs/nope/model', token=srv.admin)
                    check(st == 404, 'unknown job: %d' % st)
                    st, _, _ = on_conn('GET', '/v1/jobs/nope/model')
                    check(st == 401, "unknown job with a job's token: %d" % st)
                    st, _, b = on_conn('GET', '/v1/jobs/' + JOB)
                    check(st == 200 and e.parse_json(b)['received'] == 2, 'status %r' % b)
                    st, _, _ = on_conn('GET', '/metrics', token=None)
                    check(st == 200, 'metrics %d' % st)
            st, hd, b = on_conn('GET', '/v1/jobs/%s/model?after=%d&timeout=30' % (JOB, r))
            check(st == 200 and hd.get('x-tributary-round') == str(r + 1),
                  'poll after round %d: %d %r' % (r, st, hd))
            e.check_model(b, SCHEMA, e.weighted_mean(ups), 'keep-alive round %d' % r)
        c.close()
        e.log('%d requests over one connection' % nreq)
        r = 3

        # 2. Pipelined: everything sent at once, answers read back in order.
        ups = []
        reqs, want = [], []

        def add(data, status):
            reqs.append(data)
            want.append(status)
        add(get_req('/healthz'), 200)
        for i in range(CPR):
            m = model(rng, 2 + i)
            if i == 1:
                add(update_req(tok, r, m, 1, 'text/plain'), 415)
                add(update_req(tok, r - 1, m, 1), 409)
                add(update_req(tok + 'x', r, m, 1), 401)
                add(get_req('/v1/jobs/' + JOB, tok), 200)
            ct = 'application/x-safetensors' if i % 2 else 'application/octet-stream'
            add(update_req(tok, r, m, 3 + i, ct), 202)
            ups.append((3 + i, m))
        add(get_req('/v1/jobs/%s/model?after=%d&timeout=30' % (JOB, r), tok), 200)
        add(get_req('/healthz'), 200)
        s = e.raw_connect(srv.port, timeout=60)
        s.sendall(b''.join(reqs))
        buf = b''
        resps = []
        for k in range(len(reqs)):
            resp, buf = e.read_response(s, buf)
            resps.append(resp)
        check([x.status for x in resps] == want, 'pipelined statuses %s, want %s' %
              ([x.status for x in resps], want))
        check([x.json()['received'] for x in resps if x.status == 202] == list(range(1, 6)),
              'pipelined received counts')
        check(resps[-2].headers.get('x-tributary-round') == str(r + 1), 'pipelined poll version')
        e.check_model(resps[-2].body, SCHEMA, e.weighted_mean(ups), 'pipelined round')
        s.close()
        r += 1

        # 3. The same pipeline fed in odd-sized pieces: heads and bodies split anywhere.
        ups, reqs = [], []
        rnd = random.Random(4)
        for i in range(CPR):
            m = model(rng, 1 + i)
            reqs.append(update_req(tok, r, m, 7 + i, 'application/x-safetensors' if i % 2
                                   else 'application/octet-stream'))
            reqs.append(get_req('/healthz'))
            ups.append((7 + i, m))
        data = b''.join(reqs)
        s = e.raw_connect(srv.port, timeout=60)
        pos = 0
        while pos < len(data):
            n = rnd.choice((1, 2, 3, 7, 13, 64, 200, 1000))
            s.sendall(data[pos:pos + n])
            pos += n
            if rnd.random() < 0.05:
                time.sleep(0.01)
        buf = b''
        for k in range(len(reqs)):
            resp, buf = e.read_response(s, buf)
            check(resp.status == (202 if k % 2 == 0 else 200), 'piecewise response %d: %d %r' %
                  (k, resp.status, resp.body))
        s.close()
        _, _, b = srv.get_model(JOB, tok, '?after=%d&timeout=30' % r)
        e.check_model(b, SCHEMA, e.weighted_mean(ups), 'piecewise round')
        r += 1

        # 4. Connection: close and HTTP/1.0 end the connection after one answer.
        s = e.raw_connect(srv.port)
        s.sendall(http_head('GET', '/healthz', {'Connection': 'close'}))
        resp, rest = e.read_response(s)
        check(resp.status == 200 and resp.headers.get('connection', '').lower() == 'close',
              'Connection: close answer %r' % resp.headers)
        check(rest == b'' and closed(s), 'the server kept a Connection: close socket open')
        s.close()
        s = e.raw_connect(srv.port)
        s.sendall(b'GET /healthz HTTP/1.0\r\n\r\n')
        resp, rest = e.read_response(s)
        check(resp.status == 200, 'HTTP/1.0 status %d' % resp.status)
        check(rest == b'' and closed(s), 'the server kept an HTTP/1.0 socket open')
        s.close()

        # 5. Expect: 100-continue (what curl sends for larger bodies).
        ups = []
        for i in range(CPR):
            m = model(rng)
            body = e.raw_body(SCHEMA, m)
            s = e.raw_connect(srv.port)
            s.sendall(http_head('POST', UPD, {
                    'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': r,
                    'X-Tributary-Samples': 1, 'Content-Type': 'application/octet-stream',
                    'Content-Length': len(body), 'Expect': '100-continue'}))
            got = b''
            while b'\r\n\r\n' not in got:
                d = s.recv(4096)
                check(d, 'closed before 100 Continue')
                got += d
            check(got.startswith(b'HTTP/1.1 100'), 'expected 100 Continue, got %r' % got[:80])
            s.sendall(body)
            resp, _ = e.read_response(s, got.partition(b'\r\n\r\n')[2])
            check(resp.status == 202, 'update after 100 Continue: %d %r' % (resp.status,
                                                                             resp.body))
            ups.append((1, m))
            s.close()
        _, _, b = srv.get_model(JOB, tok, '?after=%d&timeout=30' % r)
        e.check_model(b, SCHEMA, e.weighted_mean(ups), '100-continue round')

        # 6. Connection: close (Python's urllib sends it) with a body the answer does not need
        # (refused at its head): the body is read and dropped before the answer and the close.
        # Closing with it unread made the kernel send RST: the client, still sending, got
        # "connection reset" or EPIPE instead of its answer (every urllib resend of an update
        # never saw its 202).
        big = bytes(4 << 20)
        for i in range(5):
            rq = urllib.request.Request('http://127.0.0.1:%d%s' % (srv.port, UPD), data=big, method='POST', headers={
                'Authorization': 'Bearer not-this-jobs-token-%d' % i,
                'Content-Type': 'application/octet-stream', 'X-Tributary-Round': '0'})
            try:
                urllib.request.urlopen(rq, timeout=30)
                check(False, 'a wrong token was accepted')
            except urllib.error.HTTPError as err:
                check(err.code == 401 and b'bearer token' in err.read(),
                      'Connection: close, 4 MB body refused at its head: %d' % err.code)
            except OSError as err:
                check(False, 'Connection: close, 4 MB body refused at its head: no answer, '
                      '%r' % err)
        m = srv.metrics()
        check(m['tributary_arena_slots'] == 0, 'slots left %r' % m['tributary_arena_slots'])


if __name__ == '__main__':
    e.main(run)
