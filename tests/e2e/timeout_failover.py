# SPDX-License-Identifier: MIT
# A gateway that counts an update and never answers: clients time out, resend it elsewhere, once.
"""Issue 14 item 5. In front of one `tributary up` stands a "black hole": a proxy that passes
each request on to the server, reads the server's answer, and never sends it back (a node that
counted the update and then went silent, or whose answers are lost). simulate and the Python
client list the black hole first and the server itself second: each update the black hole
swallowed was counted, the client times out, and sends it again, with the same
Idempotency-Key, to the second gateway, which answers with the first answer. The models must
be exact (simulate's float64 check), so every update was counted once.
"""
import os
import socket
import subprocess
import sys
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'clients', 'python'))
import e2e_common as e  # noqa: E402
import tributary_client as tc  # noqa: E402
from e2e_common import check  # noqa: E402


class BlackHole:
    """A proxy to 127.0.0.1:@port that relays every answer but an update's: that one the
    server counts, and the client never hears of it (the connection stays open, silent)."""

    def __init__(self, port):
        self.port = port
        self.lsock = socket.socket()
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(64)
        self.url = 'http://127.0.0.1:%d' % self.lsock.getsockname()[1]
        self.updates = 0  # updates the server counted and the client never heard of
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b''
        try:
            while True:
                while b'\r\n\r\n' not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, rest = buf.partition(b'\r\n\r\n')
                n = 0
                for line in head.split(b'\r\n')[1:]:
                    k, _, v = line.partition(b':')
                    if k.strip().lower() == b'content-length':
                        n = int(v)
                while len(rest) < n:
                    d = c.recv(65536)
                    if not d:
                        return
                    rest += d
                body, buf = rest[:n], rest[n:]
                ans = self.forward(head + b'\r\n\r\n' + body)
                if ans is None:
                    return  # silent from here on; close() ends the connection
                c.sendall(ans)
        except OSError:
            return

    def forward(self, req):
        """Send @req to the server, read its whole answer; None for an update's."""
        ans = b''
        with socket.create_connection(('127.0.0.1', self.port), timeout=30) as s:
            req = req.replace(b'\r\n\r\n', b'\r\nConnection: close\r\n\r\n', 1)
            s.sendall(req)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                ans += d
        line = req.split(b'\r\n', 1)[0]
        if not (line.startswith(b'POST ') and b'/updates ' in line):
            return ans
        self.updates += 1
        return None

    def close(self):
        self.lsock.close()
        for c in self.conns:
            c.close()


def simulate_through(srv, hole):
    cmd = [e.BIN, 'simulate', '--url', '%s,http://127.0.0.1:%d' % (hole.url, srv.port),
           '--data-dir', os.path.join(srv.data_dir, 'data'), '--job', 'sim', '--clients', '6',
           '--rounds', '2', '--params', '100000', '--connections', '6', '--timeout-s', '2',
           '--quiet']
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    out = p.stdout + p.stderr
    check(p.returncode == 0 and '2/2 rounds OK' in out,
          'simulate through a black hole: exit %d:\n%s' % (p.returncode, out[-3000:]))
    # The first timeout marks the gateway down for a while: later clients go around it.
    check(hole.updates >= 1, 'the black hole swallowed no update')
    check('went to another gateway' in out, 'no failover reported:\n%s' % out[-2000:])
    e.log('simulate: %d updates counted and unanswered by the first gateway, resent to the '
          'second with their keys; 2 rounds exact' % hole.updates)


def python_through(srv, hole):
    admin = tc.Client('http://127.0.0.1:%d' % srv.port, srv.admin)
    job = admin.create_job('py', clients_per_round=2,
                           tensors={'w': np.zeros(1000, np.float32)})
    c = tc.Client([hole.url, 'http://127.0.0.1:%d' % srv.port], job.token, timeout=2.0)
    before = hole.updates
    a = np.arange(1000, dtype=np.float32)
    ack = c.job('py').submit({'w': a}, round=0, samples=1)
    check(hole.updates == before + 1, 'the black hole passed the update on')
    check(ack['received'] == 1, 'the resend was counted once: %s' % ack)
    st = admin.job('py', token=job.token).status()
    check(st['received'] == 1 and st['round'] == 0, 'the job counted it once: %s' % st)
    e.log('Python client: counted by a silent gateway, resent to the next, counted once')


def scenario():
    with e.Server(arena_mb=128) as srv:
        hole = BlackHole(srv.port)
        try:
            simulate_through(srv, hole)
            python_through(srv, hole)
        finally:
            hole.close()


if __name__ == '__main__':
    e.main(scenario)
