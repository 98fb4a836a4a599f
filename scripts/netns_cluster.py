# SPDX-License-Identifier: MIT
"""A Tributary cluster on one machine: one network namespace per node runtime.

Used by the multi-node test (tests/e2e/cluster.py) and benchmark (bench/cluster/). The
namespaces are joined by veth pairs to a bridge that lives in the controller's namespace;
every address (NET.1 the controller, NET.11.. the nodes) exists only inside them. Needs root
and iproute2. Standard library only.
"""
import os
import re
import signal
import subprocess


def sh(*args, ns=None, check=True):
    """Run a command (in namespace @ns); raise RuntimeError with its stderr if it fails."""
    cmd = (['ip', 'netns', 'exec', ns] if ns else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError('%s: %s' % (' '.join(cmd), p.stderr.strip()))
    return p


def remove_stale():
    """Namespaces of earlier runs whose process is gone (a run killed before cleaning up)."""
    for line in sh('ip', 'netns', 'list').stdout.splitlines():
        m = re.match(r'^tt(\d+)(c|n\d+)\b', line)
        if m and not os.path.exists('/proc/' + m.group(1)):
            sh('ip', 'netns', 'del', m.group(0), check=False)


class Net:
    """The namespaces, the bridge and the veth pairs of @nodes node runtimes."""

    def __init__(self, nodes=3):
        pid = os.getpid()
        self.tag = 'tt%d' % pid
        self.prefix = '10.77.%d' % (pid % 200 + 20)
        self.ctl = self.tag + 'c'
        self.nodes = [self.tag + 'n%d' % i for i in range(nodes)]
        self.ctl_ip = self.prefix + '.1'
        self.node_ip = [self.prefix + '.%d' % (11 + i) for i in range(nodes)]

    def up(self):
        remove_stale()
        for ns in [self.ctl] + self.nodes:
            sh('ip', 'netns', 'add', ns)
            # shm+bpf pairs sockets over loopback inside each node's namespace
            sh('ip', 'link', 'set', 'lo', 'up', ns=ns)
        sh('ip', 'link', 'add', 'br0', 'type', 'bridge', ns=self.ctl)
        sh('ip', 'addr', 'add', self.ctl_ip + '/24', 'dev', 'br0', ns=self.ctl)
        sh('ip', 'link', 'set', 'br0', 'up', ns=self.ctl)
        for i, ns in enumerate(self.nodes):
            a, b = '%sa%d' % (self.tag, i), '%sb%d' % (self.tag, i)
            sh('ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b)
            sh('ip', 'link', 'set', a, 'netns', self.ctl)
            sh('ip', 'link', 'set', b, 'netns', ns)
            sh('ip', 'link', 'set', a, 'master', 'br0', ns=self.ctl)
            sh('ip', 'link', 'set', a, 'up', ns=self.ctl)
            sh('ip', 'addr', 'add', self.node_ip[i] + '/24', 'dev', b, ns=ns)
            sh('ip', 'link', 'set', b, 'up', ns=ns)

    def down(self):
        for ns in [self.ctl] + self.nodes:
            sh('ip', 'netns', 'del', ns, check=False)


class Proc:
    """A `tributary` process in a namespace, its output in DIR/NAME.log."""

    def __init__(self, name, ns, binary, args, logdir, log_level='info'):
        self.name = name
        self.log_path = os.path.join(logdir, name + '.log')
        self.logf = open(self.log_path, 'w')
        env = dict(os.environ, TRIBUTARY_LOG=log_level)
        # Sanitized builds: nng 1.5's leak of a request sent on a pipe that closes (the file
        # says when) is suppressed for every cluster process, and only that one: any pipe of a
        # cluster can close under a request (a controller or node killed, a node revoked).
        supp = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'tests', 'e2e', 'nng-req-leak.supp')
        if os.path.exists(supp) and 'nng-req-leak.supp' not in env.get('LSAN_OPTIONS', ''):
            env['LSAN_OPTIONS'] = ':'.join(filter(None, [env.get('LSAN_OPTIONS'),
                                                         'suppressions=' + supp]))
        self.p = subprocess.Popen(['ip', 'netns', 'exec', ns, binary] + list(args),
                                  stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        self.killed = False

    def log_text(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        if sig == signal.SIGKILL:
            self.p.wait()
            self.killed = True

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.logf.close()


def join_token(binary, data_dir, ttl='10m'):
    """A one-time join token from `tributary controller join-token` (it makes the CA if need be).

    Run before the controller's first start, or while it runs: the token goes to its SQLite.
    """
    p = subprocess.run([binary, 'controller', 'join-token', '--ttl', ttl, '--data-dir', data_dir],
                       capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError('join-token: %s' % p.stderr.strip())
    return p.stdout.strip()


def start(net, binary, logdir, port=8080, ctl_port=7070, peer_port=7071, placement=None,
          arena_mb=256, node_args=(), log_level='info', tokens=True):
    """A controller and one node runtime per node namespace; returns (controller, [nodes]).

    @arena_mb is one size for every node, or a list with one per node. Every link is mutual
    TLS: each node gets a one-time join token (@tokens False: none, for tests of refusal);
    a node whose data dir has its certificate already ignores it.
    """
    ctl_dir = os.path.join(logdir, 'ctl-%d' % ctl_port)
    # Before the controller starts: the command makes the CA that the controller then uses.
    toks = [join_token(binary, ctl_dir) if tokens else None for _ in net.nodes]
    args = ['controller', '--listen', 'tls+tcp://%s:%d' % (net.ctl_ip, ctl_port),
            '--data-dir', ctl_dir]
    if placement:
        args += ['--placement', placement]
    ctl = Proc('controller-%d' % ctl_port, net.ctl, binary, args, logdir, log_level)
    nodes = []
    for i, ns in enumerate(net.nodes):
        nodes.append(Proc('n%d-%d' % (i, port), ns, binary, [
            'node', '--controller', 'tls+tcp://%s:%d' % (net.ctl_ip, ctl_port),
            '--node-name', 'n%d' % i,
            '--peer-listen', 'tls+tcp://%s:%d' % (net.node_ip[i], peer_port),
            '--listen', '%s:%d' % (net.node_ip[i], port),
            '--data-dir', os.path.join(logdir, 'n%d-%d' % (i, port)),
            '--arena-mb', str(arena_mb[i] if isinstance(arena_mb, (list, tuple)) else arena_mb)]
            + (['--join-token', toks[i]] if toks[i] else []) + list(node_args),
            logdir, log_level))
    return ctl, nodes


def admin_token(logdir, ctl_port=7070):
    with open(os.path.join(logdir, 'ctl-%d' % ctl_port, 'admin-token')) as f:
        return f.read().strip()
