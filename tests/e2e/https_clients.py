# SPDX-License-Identifier: MIT
# The clients over HTTPS against `up --tls self-signed`: simulate and the Python client pin it.
import os
import re
import socket
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'clients', 'python'))
import e2e_common as e  # noqa: E402
import tributary_client as tc  # noqa: E402
from e2e_common import check  # noqa: E402

PIN_RE = re.compile(r'TLS certificate \S+.*, key \S+: sha256 Fingerprint=\S+ '
                    r'\(pin: ([0-9a-f]{64})\)')


def pin_of(srv):
    m = PIN_RE.search(srv.log_text())
    check(m, 'no fingerprint line in the server log')
    return m.group(1)


def simulate(srv, *args, ok=True):
    cmd = [e.BIN, 'simulate', '--data-dir', os.path.join(srv.data_dir, 'data'), '--params',
           '200000', '--quiet'] + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    check((p.returncode == 0) == ok, '%s: exit %d:\n%s' % (' '.join(cmd), p.returncode,
                                                          out[-3000:]))
    return out


def dead_port():
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def sim_over_https(srv, pin):
    url = 'https://127.0.0.1:%d' % srv.port
    out = simulate(srv, '--url', url, '--tls-pin', pin, '--job', 'sim', '--clients', '6',
                   '--rounds', '3')
    check('3/3 rounds OK' in out, 'simulate with --tls-pin: %s' % out[-1500:])
    e.log('simulate --tls-pin: 3 rounds, exact models')
    # Failover over TLS: the first gateway refuses, its clients go to the second one.
    out = simulate(srv, '--url', 'https://127.0.0.1:%d,%s' % (dead_port(), url), '--tls-pin',
                   pin, '--job', 'sim2', '--clients', '6', '--rounds', '2')
    check('2/2 rounds OK' in out and 'went to another gateway' in out,
          'simulate failing over between https gateways: %s' % out[-1500:])
    e.log('simulate: failover from a dead https gateway to a live one')
    cert = os.path.join(srv.data_dir, 'data', 'tls-cert.pem')
    out = simulate(srv, '--url', 'https://localhost:%d' % srv.port, '--tls-ca', cert, '--job',
                   'sim3', '--clients', '4', '--rounds', '1')
    check('1/1 rounds OK' in out, 'simulate with --tls-ca: %s' % out[-1500:])
    wrong = pin[:-1] + ('0' if pin[-1] != '0' else '1')
    out = simulate(srv, '--url', url, '--tls-pin', wrong, '--job', 'simx', '--clients', '2',
                   '--rounds', '1', ok=False)
    check('does not match --tls-pin' in out and pin in out,
          'a wrong pin names the cause and the certificate: %s' % out[-1500:])
    out = simulate(srv, '--url', url, '--job', 'simx', '--clients', '2', '--rounds', '1',
                   ok=False)
    check('did not verify' in out, 'the system store refuses a self-signed cert: %s' % out)
    st = srv.json('GET', '/v1/jobs', token=srv.admin)
    names = [j['job'] for j in st['jobs']]
    check('simx' not in names, 'a refused server got a job: %s' % names)
    e.log('simulate: a wrong pin and an untrusted certificate fail before any request')
    p = subprocess.run([e.BIN, 'status', '--url', url, '--tls-pin', pin, '--data-dir',
                        os.path.join(srv.data_dir, 'data')], capture_output=True, text=True,
                       timeout=30)
    check(p.returncode == 0 and 'sim3' in p.stdout, 'status over https: %s%s' %
          (p.stdout, p.stderr))
    e.log('status --tls-pin: the jobs')


def python_over_https(srv, pin):
    url = 'https://127.0.0.1:%d' % srv.port
    admin = tc.Client(url, srv.admin, pin_sha256=pin)
    job = admin.create_job('py', clients_per_round=2, tensors={'w': np.zeros(1000,
                                                                             np.float32)})
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(1000).astype(np.float32) for _ in range(2))
    key = tc.new_idempotency_key()
    c = tc.Client('https://localhost:%d' % srv.port, job.token,
                  ca_file=os.path.join(srv.data_dir, 'data', 'tls-cert.pem')).job('py')
    first = c.submit({'w': a}, round=0, samples=1, idempotency_key=key)
    again = c.submit({'w': a}, round=0, samples=1, idempotency_key=key)
    check(again == first and first['received'] == 1,
          'the same Idempotency-Key over TLS is counted once: %s, %s' % (first, again))
    c.submit({'w': b}, round=0, samples=3)
    v, model = c.wait_model(after=0, timeout=30)
    want = (a + 3 * b) / 4
    check(v == 1 and np.allclose(model['w'], want, atol=1e-5), 'model v%d off by %g' %
          (v, float(np.max(np.abs(model['w'] - want)))))
    e.log('Python client: pin and CA file, a resent key counted once, the exact model')
    wrong = pin[:-1] + ('0' if pin[-1] != '0' else '1')
    try:
        tc.Client(url, job.token, pin_sha256=wrong).job('py').submit({'w': a}, round=1)
        raise e.Failure('a wrong pin was accepted')
    except tc.TLSVerifyError as err:
        check('does not match pin_sha256' in str(err), 'wrong pin: %s' % err)
    check(tc.Client(url, job.token, pin_sha256=pin).job('py').status()['received'] == 0,
          'the refused update reached the server')
    e.log('Python client: a wrong pin raises TLSVerifyError and sends nothing')


class TlsServer(e.Server):
    """`up --tls self-signed`; the admin JSON helper speaks HTTPS with the pin."""

    def json(self, method, path, obj=None, token=None, headers=None):
        c = tc.Client('https://127.0.0.1:%d' % self.port, token or self.admin,
                      pin_sha256=pin_of(self))
        with c:
            return tc.json.loads(c.request(method, path)[2])


def scenario():
    with TlsServer(arena_mb=128, extra=['--tls', 'self-signed']) as srv:
        pin = pin_of(srv)
        sim_over_https(srv, pin)
        python_over_https(srv, pin)


if __name__ == '__main__':
    e.main(scenario)
