# SPDX-License-Identifier: MIT
# Admission timeouts: stalled bodies free their slots, slow heads and idle connections close.
import os
import socket
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

JOB = 'stall'
P = 1000000  # the job: 4 MB bodies
SCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]
HEAD_S, BODY_S, IDLE_S = 2, 3, 4
STALLS = 20
SLACK = 1.5  # the timers are checked on the loop's 200 ms tick; a loaded test box is slower


def closed_by_server(s, within):
    """Waits for the server to close @s; returns the bytes it sent first (a 408, or none)."""
    s.settimeout(within)
    got = b''
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return got
            got += d
    except ConnectionResetError:
        return got
    except socket.timeout:
        raise e.Failure('the server kept a connection open %.1f s (got %r)' % (within, got[:80]))


def stalled_bodies(srv, tok):
    body = e.raw_body(SCHEMA, {'weights': np.ones(P, np.float32)})
    check(len(body) == 4000000, 'a 1M-parameter raw body is %d bytes' % len(body))
    head = e.http_head('POST', '/v1/jobs/%s/updates' % JOB, {
            'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': 0,
            'Content-Type': 'application/octet-stream', 'Content-Length': len(body)})
    stalls = []
    for _ in range(STALLS):
        s = e.raw_connect(srv.port)
        s.sendall(head + body[:16])
        stalls.append(s)
    t0 = time.monotonic()
    # The attack as the issue found it: the stalled uploads hold the arena, an honest one gets 503.
    st, _, _ = srv.post_update(JOB, tok, 0, body, 1, expect=None)
    check(st == 503, 'with %d stalled uploads an honest one got %d, not 503: the arena was '
          'not full and this test shows nothing' % (STALLS, st))
    while True:
        st, _, _ = srv.post_update(JOB, tok, 0, body, 1, expect=None)
        if st == 202:
            break
        check(st == 503, 'an honest update got %d' % st)
        check(time.monotonic() - t0 < BODY_S + SLACK,
              'an honest update still got 503 %.1f s after %d bodies stalled (body timeout %d '
              's)' % (time.monotonic() - t0, STALLS, BODY_S))
        time.sleep(0.2)
    e.log('an honest update got 202 %.1f s after %d bodies stalled (body timeout %d s)' %
          (time.monotonic() - t0, STALLS, BODY_S))
    for s in stalls:
        got = closed_by_server(s, BODY_S + SLACK)
        # Those that held a slot are told 408; the rest had their 503 already.
        check(got.startswith(b'HTTP/1.1 408 ') or got.startswith(b'HTTP/1.1 503 '),
              'a stalled upload got %r before its close' % got[:80])
        s.close()
    m = srv.metrics()
    check(m['tributary_requests_timed_out_total{phase="body"}'] == STALLS,
          'timed_out{body} = %r, want %d' % (m['tributary_requests_timed_out_total{phase="body"}'],
                                             STALLS))
    # On more than one core the stalled bodies sat on body-receive threads (--rx-threads):
    # their timers ran there, and were counted and answered the same.
    rx = m['tributary_gateway_rx_threads']
    check(rx == 1 and m['tributary_gateway_rx_bodies_total'] >= 1,
          '%d receive threads took no body' % rx)
    e.log('%d body-receive thread(s), %d bodies received on them' %
          (rx, m['tributary_gateway_rx_bodies_total']))


def slow_and_silent(srv):
    """Slowloris heads and connections that never speak close after the head timeout."""
    silent = [e.raw_connect(srv.port) for _ in range(50)]
    slow = e.raw_connect(srv.port)
    t0 = time.monotonic()
    req = b'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + b'a' * 64
    got = b''
    for i in range(len(req)):
        try:
            slow.sendall(req[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        slow.settimeout(0.25)
        try:
            d = slow.recv(4096)
        except socket.timeout:
            continue
        got += d
        if not d:
            break
    waited = time.monotonic() - t0
    check(waited < HEAD_S + SLACK, 'a head trickling a byte every 0.25 s stayed %.1f s' % waited)
    check(got.startswith(b'HTTP/1.1 408 '), 'a slow head got %r, not 408' % got[:80])
    head, _, body = got.partition(b'\r\n\r\n')
    check(b'Content-Length: %d' % len(body) in head and
          e.parse_json(body) == {'error': 'request timed out'}, 'the 408: %r' % got)
    slow.close()
    for s in silent:
        check(closed_by_server(s, max(0.1, HEAD_S + SLACK - (time.monotonic() - t0))) == b'',
              'a silent connection got bytes')
        s.close()
    m = srv.metrics()
    check(m['tributary_requests_timed_out_total{phase="head"}'] >= 51,
          'timed_out{head} = %r' % m['tributary_requests_timed_out_total{phase="head"}'])


def idle_and_parked(srv, tok):
    """A keep-alive connection idle past the timeout closes; a long poll parked longer does not."""
    idle = srv.conn()
    e.request_on(idle, 'GET', '/healthz')
    poll_res = []

    def poll():
        c = srv.conn(timeout=30)
        t = time.monotonic()
        st, _, _ = e.request_on(c, 'GET', '/v1/jobs/%s/model?after=5&timeout=%d' %
                                (JOB, IDLE_S + 2), token=tok)
        poll_res.append((st, time.monotonic() - t))
        c.close()

    th = threading.Thread(target=poll)
    th.start()
    t0 = time.monotonic()
    got = closed_by_server(idle.sock, IDLE_S + SLACK)
    check(got == b'' and time.monotonic() - t0 > IDLE_S - 1,
          'an idle connection closed after %.1f s with %r' % (time.monotonic() - t0, got[:80]))
    idle.close()
    th.join(30)
    check(poll_res and poll_res[0][0] == 304 and poll_res[0][1] > IDLE_S + 1,
          'a long poll of %d s (idle timeout %d s) ended %r' % (IDLE_S + 2, IDLE_S, poll_res))
    m = srv.metrics()
    check(m['tributary_requests_timed_out_total{phase="idle"}'] >= 1, 'timed_out{idle}')


def run():
    # One body-receive thread (off by default below 4 cores): the stalled bodies' timers run there.
    with e.Server(arena_mb=64, extra=['--head-timeout-s', str(HEAD_S), '--body-timeout-s',
                                      str(BODY_S), '--idle-timeout-s', str(IDLE_S),
                                      '--rx-threads', '1']) as srv:
        job = srv.create_job({'name': JOB, 'clients_per_round': 3, 'params': P})
        tok = job['token']
        stalled_bodies(srv, tok)
        slow_and_silent(srv)
        idle_and_parked(srv, tok)
        check(srv.status(JOB)['received'] == 1, 'received: %r' % srv.status(JOB))
        srv.healthy()


if __name__ == '__main__':
    e.main(run)
