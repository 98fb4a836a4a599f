# SPDX-License-Identifier: MIT
"""Who may be a node: mutual TLS, join tokens, revocation, no admin token on nodes.

A controller and three node namespaces (scripts/netns_cluster.py); every link is
tls+tcp:// with the cluster CA the controller made at its first start.

A. n0 enrols with a join token (its key made on the node, 0600; a certificate for
   its name) and joins. The CA key is 0600, the CA certificate 0644.
B. Without a join token: a node with no certificate does not start ("start it once
   with --join-token"); a node whose certificate is another CA's cannot join; a raw
   plain-TCP peer gets no SP handshake; a raw TLS peer without a certificate, or with
   another CA's, is answered 401 for every request but the CA certificate and
   enrolment (it reads no status, no jobs); a peer with n0's own certificate but no
   session is answered 410.
C. An expired token and a reused token are refused, with messages that say so.
D. n1 and n2 enrol with fresh tokens; all three are joined; an admin request on a
   node works, yet the admin token is nowhere in any node's data dir or log.
E. A node restarted without a token joins with its stored certificate.
F. `tributary controller revoke n2`: the running controller drops n2, which exits
   with status 4 saying why; the other nodes' peer ports refuse n2's certificate (the
   controller's CRL) and still take n0's; restarted, n2 is refused again (status 4).

Needs root (ip netns). Exit status 77 when that is absent.
"""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import netns_cluster  # noqa: E402
from e2e_common import BIN, SANITIZER_MARKS, check, log, main, parse_metrics  # noqa: E402
from e2e_common import Failure, arena_files_in, remove_arena_files  # noqa: E402

SKIP = 77
PY = '/usr/bin/python3'


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise Failure('timed out waiting for ' + what)


def curl(ns, host, method, path, token=None, body=None):
    cmd = ['ip', 'netns', 'exec', ns, 'curl', '-sS', '-o', '-', '-w', '\n%{http_code}', '-X',
           method, 'http://%s:8080%s' % (host, path), '--max-time', '10']
    if token:
        cmd += ['-H', 'Authorization: Bearer ' + token]
    if body is not None:
        cmd += ['-H', 'Content-Type: application/json', '--data-binary', body]
    p = subprocess.run(cmd, capture_output=True)
    if p.returncode:
        return 0, p.stderr
    out, _, code = p.stdout.rpartition(b'\n')
    return int(code), out


def joined(ns, host):
    st, b = curl(ns, host, 'GET', '/metrics')
    return st == 200 and parse_metrics(b.decode()).get('tributary_cluster_joined') == 1


def probe(net, op, *extra, host=None, port=7070):
    p = subprocess.run(['ip', 'netns', 'exec', net.ctl, PY, os.path.join(HERE, 'sp_probe.py'),
                        host or net.ctl_ip, str(port), op] + list(extra), capture_output=True,
                       text=True)
    check(p.returncode == 0, 'sp_probe: %s' % p.stderr[-1000:])
    return json.loads(p.stdout)


def node(net, tmp, i, name, token=None, extra=(), node_name=None):
    args = ['node', '--controller', 'tls+tcp://%s:7070' % net.ctl_ip, '--node-name',
            node_name or 'n%d' % i,
            '--peer-listen', 'tls+tcp://%s:7071' % net.node_ip[i],
            '--listen', '%s:8080' % net.node_ip[i], '--data-dir', os.path.join(tmp, 'n%d' % i),
            '--arena-mb', '32', '--no-huge'] + (['--join-token', token] if token else [])
    return netns_cluster.Proc(name, net.nodes[i], BIN, args + list(extra), tmp)


def exits(p, timeout, what):
    try:
        return p.p.wait(timeout)
    except subprocess.TimeoutExpired:
        raise Failure('%s: still running after %d s (%s)' % (p.name, timeout, what))


def rogue_cert(tmp, name):
    """A key and a certificate for @name signed by a CA that is not the cluster's."""
    d = os.path.join(tmp, 'rogue')
    os.makedirs(d, exist_ok=True)
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-keyout', d + '/ca.key', '-out',
                    d + '/ca.crt', '-days', '1', '-subj', '/CN=rogue CA'],
                   check=True, capture_output=True)
    subprocess.run(['openssl', 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
                    '-nodes', '-keyout', d + '/node.key', '-out', d + '/node.csr', '-subj',
                    '/CN=' + name], check=True, capture_output=True)
    subprocess.run(['openssl', 'x509', '-req', '-in', d + '/node.csr', '-CA', d + '/ca.crt',
                    '-CAkey', d + '/ca.key', '-CAcreateserial', '-out', d + '/node.crt',
                    '-days', '1'], check=True, capture_output=True)
    return d


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns')
        sys.exit(SKIP)
    if not shutil.which('ip') or not shutil.which('curl') or not shutil.which('openssl'):
        print('SKIP: needs iproute2, curl and openssl')
        sys.exit(SKIP)
    # nng 1.5's leak of a request sent on a closing pipe (see the file): the controller's
    # tell to the node it revoked can be in flight when that node's pipe closes.
    supp = os.path.join(HERE, 'nng-req-leak.supp')
    os.environ['LSAN_OPTIONS'] = ':'.join(filter(None, [os.environ.get('LSAN_OPTIONS'),
                                                        'suppressions=' + supp]))
    net = netns_cluster.Net(3)
    tmp = tempfile.mkdtemp(prefix='trib-mtls-')
    ctl_dir = os.path.join(tmp, 'ctl')
    procs = []
    try:
        net.up()
        tok0 = netns_cluster.join_token(BIN, ctl_dir)
        tok_short = netns_cluster.join_token(BIN, ctl_dir, ttl='1s')
        ctl = netns_cluster.Proc('controller', net.ctl, BIN, [
            'controller', '--listen', 'tls+tcp://%s:7070' % net.ctl_ip, '--data-dir', ctl_dir],
            tmp)
        procs.append(ctl)
        # --- A ---
        mode = stat.S_IMODE(os.stat(os.path.join(ctl_dir, 'cluster', 'ca.key')).st_mode)
        check(mode == 0o600, 'ca.key mode %o' % mode)
        mode = stat.S_IMODE(os.stat(os.path.join(ctl_dir, 'cluster', 'ca.crt')).st_mode)
        check(mode == 0o644, 'ca.crt mode %o' % mode)
        n0 = node(net, tmp, 0, 'n0', tok0)
        procs.append(n0)
        wait_for(lambda: joined(net.ctl, net.node_ip[0]), 30, 'n0 to enrol and join')
        kmode = stat.S_IMODE(os.stat(os.path.join(tmp, 'n0', 'cluster', 'node.key')).st_mode)
        check(kmode == 0o600, 'node.key mode %o' % kmode)
        subj = subprocess.run(['openssl', 'x509', '-noout', '-subject', '-ext', 'subjectAltName',
                               '-in', os.path.join(tmp, 'n0', 'cluster', 'node.crt')],
                              capture_output=True, text=True).stdout
        check('CN = n0' in subj and 'DNS:n0' in subj, 'n0 certificate names n0: %s' % subj)
        v = subprocess.run(['openssl', 'verify', '-CAfile', os.path.join(ctl_dir, 'cluster',
                                                                         'ca.crt'),
                            os.path.join(tmp, 'n0', 'cluster', 'node.crt')],
                           capture_output=True, text=True)
        check(v.returncode == 0, 'n0 certificate verifies against the CA: %s' % v.stderr)
        log('A: n0 enrolled with a join token (key 0600 made on the node, cert CN=n0 signed by '
            'the cluster CA; ca.key 0600, ca.crt 0644) and joined')

        # --- B: no token, no certificate, no access ---
        nt = node(net, tmp, 1, 'n1-notoken')
        procs.append(nt)
        rc = exits(nt, 20, 'a node without a certificate and without a token')
        check(rc != 0 and 'start it once with --join-token' in nt.log_text(),
              'a node without a token: rc %s, log %s' % (rc, nt.log_text()[-600:]))
        rogue = rogue_cert(tmp, 'n1')
        os.makedirs(os.path.join(tmp, 'n1', 'cluster'), exist_ok=True)
        shutil.copy(os.path.join(ctl_dir, 'cluster', 'ca.crt'),
                    os.path.join(tmp, 'n1', 'cluster', 'ca.crt'))
        shutil.copy(rogue + '/node.crt', os.path.join(tmp, 'n1', 'cluster', 'node.crt'))
        shutil.copy(rogue + '/node.key', os.path.join(tmp, 'n1', 'cluster', 'node.key'))
        nr = node(net, tmp, 1, 'n1-rogue')
        procs.append(nr)
        wait_for(lambda: 'refused this node' in nr.log_text(), 20, 'the rogue n1 refused')
        time.sleep(1)
        check(nr.p.poll() is None and not joined(net.ctl, net.node_ip[1]),
              'a node with another CA\'s certificate must not join')
        st, b = curl(net.ctl, net.node_ip[1], 'GET', '/readyz')
        check(st == 503, 'the rogue node is not ready: %d %s' % (st, b))
        nr.kill(signal.SIGTERM)
        nr.p.wait(20)
        shutil.rmtree(os.path.join(tmp, 'n1'))
        r = probe(net, 'status', '--plain')
        check(r['reply'] is None, 'plain TCP must get no SP answer: %s' % r)
        for what, extra in (('no certificate', []),
                            ('another CA\'s certificate', ['--cert', rogue + '/node.crt',
                                                           '--key', rogue + '/node.key'])):
            for op in ('status', 'join', 'sync', 'heartbeat'):
                r = probe(net, op, *extra)
                check(r['reply'] is not None and r['reply'].get('status') == 401,
                      'TLS with %s, op %s: want 401, got %s' % (what, op, r))
            r = probe(net, 'cluster_ca', *extra)
            check(r['reply'] and r['reply'].get('ca', '').startswith('-----BEGIN CERT'),
                  'the CA certificate is public: %s' % r)
        n0c = os.path.join(tmp, 'n0', 'cluster')
        r = probe(net, 'status', '--cert', n0c + '/node.crt', '--key', n0c + '/node.key')
        check(r['reply'] and r['reply'].get('status') == 410,
              'n0\'s certificate without its session: want 410, got %s' % r)
        log('B: no token: the node does not start; another CA\'s certificate: refused (401), '
            'not ready; plain TCP: no SP handshake; TLS without a CA-signed certificate: 401 '
            'for status/join/sync/heartbeat (only the public CA certificate); a CA-signed '
            'certificate without a session: 410')

        # --- C: expired and reused tokens ---
        time.sleep(1.5)
        ne = node(net, tmp, 2, 'n2-expired', tok_short)
        procs.append(ne)
        rc = exits(ne, 30, 'an expired token')
        check(rc != 0 and 'has expired' in ne.log_text(), 'expired token: rc %s, log %s' %
              (rc, ne.log_text()[-800:]))
        shutil.rmtree(os.path.join(tmp, 'n2'), ignore_errors=True)
        nu = node(net, tmp, 1, 'n1-reused', tok0)
        procs.append(nu)
        rc = exits(nu, 30, 'a reused token')
        check(rc != 0 and 'was used already' in nu.log_text(), 'reused token: rc %s, log %s' %
              (rc, nu.log_text()[-800:]))
        check('has expired' in ctl.log_text() and 'was used already' in ctl.log_text(),
              'the controller logs both refusals')
        shutil.rmtree(os.path.join(tmp, 'n1'), ignore_errors=True)
        # A good token does not buy the name of a node that has a certificate in force.
        tok_dup = netns_cluster.join_token(BIN, ctl_dir)
        nd = node(net, tmp, 1, 'n0-again', tok_dup, node_name='n0')
        procs.append(nd)
        rc = exits(nd, 30, 'a second enrolment of n0')
        check(rc != 0 and 'has a certificate in force' in nd.log_text(),
              'a second n0: rc %s, log %s' % (rc, nd.log_text()[-800:]))
        shutil.rmtree(os.path.join(tmp, 'n1'), ignore_errors=True)
        log('C: an expired token and a reused token are refused, and say so; a fresh token '
            'cannot enrol a second n0 (the name has a certificate in force)')

        # --- D: two more nodes; admin works on a node; the token is on none ---
        n1 = node(net, tmp, 1, 'n1', netns_cluster.join_token(BIN, ctl_dir))
        n2 = node(net, tmp, 2, 'n2', netns_cluster.join_token(BIN, ctl_dir))
        procs += [n1, n2]
        for i in (1, 2):
            wait_for(lambda i=i: joined(net.ctl, net.node_ip[i]), 30, 'n%d to join' % i)
        with open(os.path.join(ctl_dir, 'admin-token')) as f:
            admin = f.read().strip()
        st, b = curl(net.ctl, net.node_ip[1], 'POST', '/v1/jobs', admin,
                     json.dumps({'name': 'm', 'clients_per_round': 2, 'params': 8}))
        check(st == 201, 'admin request on n1: %d %s' % (st, b))
        st, b = curl(net.ctl, net.node_ip[2], 'GET', '/v1/cluster', admin[:-1] + 'x')
        check(st == 401, 'a wrong admin token on n2: %d %s' % (st, b))
        st, b = curl(net.ctl, net.node_ip[2], 'GET', '/v1/cluster', admin)
        check(st == 200 and len(json.loads(b)['nodes']) == 3,
              'GET /v1/cluster on n2 (asks the controller in its session): %d %s' % (st, b))
        leaks = []
        for i in range(3):
            for root, _, files in os.walk(os.path.join(tmp, 'n%d' % i)):
                for fn in files:
                    path = os.path.join(root, fn)
                    try:
                        with open(path, 'rb') as f:
                            if admin.encode() in f.read():
                                leaks.append(path)
                    except OSError:
                        pass
        for p in (n0, n1, n2):
            if admin in p.log_text():
                leaks.append(p.log_path)
        check(not leaks, 'the admin token is in %s' % leaks)
        log('D: n1, n2 enrolled and joined; an admin request works on a node; the admin '
            'token is in no node\'s data dir or log')

        # --- E: restart without a token ---
        n0.kill(signal.SIGTERM)
        check(n0.p.wait(20) == 0, 'n0 stops cleanly')
        n0 = node(net, tmp, 0, 'n0-run2')
        procs.append(n0)
        wait_for(lambda: joined(net.ctl, net.node_ip[0]), 30, 'n0 to join with its stored cert')
        log('E: n0 restarted without a token joined with its stored certificate')

        # --- F: revocation ---
        n2c = os.path.join(tmp, 'n2', 'cluster')
        as_n2 = ['--cert', n2c + '/node.crt', '--key', n2c + '/node.key']
        r = probe(net, 'ping', *as_n2, host=net.node_ip[0], port=7071)
        check(r['reply'] is not None, 'before revocation n0\'s peer port takes n2: %s' % r)
        r = probe(net, 'ping', host=net.node_ip[0], port=7071)
        check(r['reply'] is None, 'a peer port takes no peer without a certificate: %s' % r)
        p = subprocess.run([BIN, 'controller', 'revoke', 'n2', '--data-dir', ctl_dir],
                           capture_output=True, text=True)
        check(p.returncode == 0, 'revoke: %s %s' % (p.stdout, p.stderr))
        rc = exits(n2, 20, 'a revoked node')
        check(rc == 4 and 'revoked' in n2.log_text(), 'revoked n2: rc %s, log %s' %
              (rc, n2.log_text()[-800:]))
        check('was revoked: dropped' in ctl.log_text(), 'the controller logs the revocation')
        wait_for(lambda: probe(net, 'ping', *as_n2, host=net.node_ip[0],
                               port=7071)['reply'] is None, 10,
                 'n0\'s peer port to refuse n2\'s certificate (the CRL)')
        r = probe(net, 'ping', *as_n2, host=net.node_ip[1], port=7071)
        check(r['reply'] is None, 'n1\'s peer port refuses n2 too: %s' % r)
        n0c = os.path.join(tmp, 'n0', 'cluster')
        r = probe(net, 'ping', '--cert', n0c + '/node.crt', '--key', n0c + '/node.key',
                  host=net.node_ip[1], port=7071)
        check(r['reply'] is not None, 'n1 still takes n0: %s' % r)
        n2b = node(net, tmp, 2, 'n2-run2')
        procs.append(n2b)
        rc = exits(n2b, 30, 'a revoked node restarted')
        check(rc == 4 and 'revoked' in n2b.log_text(), 'revoked n2 restarted: rc %s' % rc)
        check(joined(net.ctl, net.node_ip[0]) and joined(net.ctl, net.node_ip[1]),
              'n0 and n1 stay joined')
        log('F: revoked n2 was dropped by the running controller and exited 4; the peers\' '
            'listeners refuse its certificate (CRL), still take n0\'s; restarted, n2 is '
            'refused again (4); n0 and n1 stay')
        for p in (n0, n1, ctl):
            p.kill(signal.SIGTERM)
            check(p.p.wait(20) == 0, '%s stops cleanly' % p.name)
        for p in procs:
            check(not any(m in p.log_text() for m in SANITIZER_MARKS),
                  '%s: sanitizer report' % p.name)
        log('cluster_mtls test passed')
    except BaseException:
        for p in procs:
            try:
                sys.stdout.write('===== %s log (tail) =====\n%s\n' %
                                 (p.name, p.log_text()[-3000:]))
            except OSError:
                pass
        raise
    finally:
        for p in procs:
            p.close()
        logs = []
        for p in procs:
            try:
                logs.append(p.log_text())
            except OSError:
                pass
        remove_arena_files(arena_files_in(logs))
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main(scenario)
