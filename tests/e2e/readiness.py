# SPDX-License-Identifier: MIT
"""Ready means ready: GET /readyz in a netns cluster (issue 14, item 2).

A. A node runtime started while its controller is not there: /healthz answers 200 (it is
   alive), /readyz answers 503 with a body naming `joined` as missing, and job routes
   answer 503. The Kubernetes readinessProbe follows /readyz, so no Service traffic reaches it.
B. The controller starts: the node joins on its own, /readyz turns 200 (joined, arena,
   serving, the data plane named) and a job created through it takes an update.
C. Two node runtimes on one host and one bpffs, each pid 1 of its own pid namespace (as in
   containers) and with one node name (a DaemonSet's old and new pod during a rolling update):
   each pins under node name and boot id in its own directory, and the one stopping removes
   only its own pins (issue 14, item 3). Not in the netns: `ip netns exec` gives each process
   a bpffs of its own, which is no test of sharing one.

Needs root (ip netns, veth, a bridge). Exit status 77 and the reason when that is truly absent.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))
import netns_cluster  # noqa: E402
from e2e_common import BIN, SANITIZER_MARKS, Failure, check, log, main  # noqa: E402

SKIP = 77
PIN_ROOT = '/sys/fs/bpf/tributary'


def call(ns, host, method, path, body=None, token=None):
    cmd = ['ip', 'netns', 'exec', ns, 'curl', '-sS', '-o', '-', '-w', '\n%{http_code}', '-X',
           method, 'http://%s:8080%s' % (host, path), '--max-time', '10']
    if token:
        cmd += ['-H', 'Authorization: Bearer ' + token]
    if body is not None:
        cmd += ['-H', 'Content-Type: application/json', '--data-binary', '@-']
    p = subprocess.run(cmd, input=body, capture_output=True)
    if p.returncode:
        return 0, p.stderr
    out, _, code = p.stdout.rpartition(b'\n')
    return int(code), out


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise Failure('timed out waiting for ' + what)


# A well-formed join token for a controller that never answers: the node waits to enrol.
NO_CTL_TOKEN = 'aaaaaa.bbbbbb.' + '0' * 64


def node_proc(net, i, tmp, name):
    # A first start: it enrols with the token once the controller answers (alive meanwhile).
    token = netns_cluster.join_token(BIN, os.path.join(tmp, 'ctl'))
    return netns_cluster.Proc(name, net.nodes[i], BIN, [
        'node', '--controller', 'tls+tcp://%s:7070' % net.ctl_ip, '--node-name', name,
        '--join-token', token, '--peer-listen', 'tls+tcp://%s:7071' % net.node_ip[i],
        '--listen', '%s:8080' % net.node_ip[i], '--data-dir', os.path.join(tmp, name),
        '--arena-mb', '64', '--no-huge'], tmp)


def stop(p):
    if p.p.poll() is None:
        p.p.send_signal(signal.SIGTERM)
        p.p.wait(20)
    check(p.p.returncode == 0, '%s exited %s' % (p.name, p.p.returncode))
    check(not any(m in p.log_text() for m in SANITIZER_MARKS),
          '%s: sanitizer report in its log' % p.name)


def free_port():
    with socket.socket() as sk:
        sk.bind(('127.0.0.1', 0))
        return sk.getsockname()[1]


def pins_shared(tmp, name, procs):
    with open('/proc/sys/kernel/random/boot_id') as f:
        boot = f.read().strip()
    runs = []
    for k in range(2):
        logp = os.path.join(tmp, 'pid1-%d.log' % k)
        logf = open(logp, 'w')
        # The controller's address answers nothing: pins come before joining.
        p = subprocess.Popen(['unshare', '--pid', '--fork', '--mount-proc', BIN, 'node',
                              '--controller', 'tls+tcp://127.0.0.1:9', '--node-name', name,
                              '--join-token', NO_CTL_TOKEN,
                              '--peer-listen', 'tls+tcp://127.0.0.1:%d' % free_port(),
                              '--listen', '127.0.0.1:0', '--data-dir',
                              os.path.join(tmp, 'pid1-%d' % k), '--arena-mb', '16',
                              '--no-huge'], stdout=logf, stderr=subprocess.STDOUT,
                             env=dict(os.environ, TRIBUTARY_LOG='info'))
        runs.append((p, logp, logf))

        def logged(logp=logp):
            with open(logp, errors='replace') as f:
                text = f.read()
            return 'data plane:' in text and text
        text = wait_for(logged, 30, 'runtime %d to set up its data plane' % k)
        if 'data plane: shm+bpf' not in text:
            for p, _, f in runs:
                p.kill()
                p.wait()
                f.close()
            log('C: skipped, shm+bpf does not load here: %s' %
                [ln for ln in text.splitlines() if 'data plane' in ln])
            return
    dirs = []
    for p, logp, _ in runs:
        with open(logp, errors='replace') as f:
            line = [ln for ln in f.read().splitlines() if 'pinned under ' in ln][0]
        dirs.append(line.split('pinned under ', 1)[1].rstrip(')').strip())
    want = '%s/%s/%s' % (PIN_ROOT, name, boot)
    check(dirs[0] == want and dirs[1] == want + '-1',
          'two pid-1 runtimes of one node name pin apart: %s (want %s, %s-1)' % (dirs, want, want))
    for d in dirs:
        check(os.path.exists(d + '/route_msg'), '%s/route_msg exists' % d)
    # SIGTERM reaches the runtime through unshare's forwarding? Not portably: signal pid 1 itself.
    for p, logp, logf in runs[1:]:
        child = subprocess.run(['pgrep', '-P', str(p.pid)], capture_output=True,
                               text=True).stdout.split()
        check(len(child) == 1, 'the pid-1 runtime under unshare: %s' % child)
        os.kill(int(child[0]), signal.SIGTERM)
        p.wait(20)
        logf.close()
    check(not os.path.exists(dirs[1]), 'the stopped runtime removed its own pins (%s)' % dirs[1])
    check(os.path.exists(dirs[0] + '/route_msg'),
          'and left the other runtime\'s pins (%s)' % dirs[0])
    p, logp, logf = runs[0]
    child = subprocess.run(['pgrep', '-P', str(p.pid)], capture_output=True,
                           text=True).stdout.split()
    os.kill(int(child[0]), signal.SIGKILL)  # dies without cleaning, as a crash does
    p.wait(20)
    logf.close()
    check(os.path.exists(dirs[0] + '/route_msg'), 'a killed runtime leaves its pins')
    # Its successor (same node name) finds them unheld and takes the name back.
    logp = os.path.join(tmp, 'pid1-2.log')
    with open(logp, 'w') as logf:
        p = subprocess.Popen(['unshare', '--pid', '--fork', '--mount-proc', BIN, 'node',
                              '--controller', 'tls+tcp://127.0.0.1:9', '--node-name', name,
                              '--join-token', NO_CTL_TOKEN,
                              '--peer-listen', 'tls+tcp://127.0.0.1:%d' % free_port(),
                              '--listen', '127.0.0.1:0', '--data-dir',
                              os.path.join(tmp, 'pid1-2'), '--arena-mb', '16', '--no-huge'],
                             stdout=logf, stderr=subprocess.STDOUT,
                             env=dict(os.environ, TRIBUTARY_LOG='info'))
        try:
            def logged2():
                with open(logp, errors='replace') as f:
                    text = f.read()
                return 'data plane:' in text and text
            text = wait_for(logged2, 30, 'the successor to set up its data plane')
            check('removed stale pins %s' % dirs[0] in text,
                  'the successor removed the dead runtime\'s pins: %s' %
                  [ln for ln in text.splitlines() if 'pins' in ln])
            check('pinned under %s)' % dirs[0] in text, 'and pinned under the same name')
        finally:
            child = subprocess.run(['pgrep', '-P', str(p.pid)], capture_output=True,
                                   text=True).stdout.split()
            if child:
                os.kill(int(child[0]), signal.SIGTERM)
            p.wait(20)
    check(not os.path.exists(dirs[0]), 'the successor removed its pins at its stop')
    for k in range(3):
        with open(os.path.join(tmp, 'pid1-%d.log' % k), errors='replace') as f:
            check(not any(m in f.read() for m in SANITIZER_MARKS),
                  'pid-1 runtime %d: sanitizer report in its log' % k)
    log('C: two pid-1 runtimes named %s pinned apart (%s, -1); one stopping left the other\'s;'
        ' a killed one\'s were taken back by its successor' % (name, want))


def scenario():
    if os.geteuid() != 0:
        print('SKIP: needs root for ip netns, veth and a bridge')
        sys.exit(SKIP)
    if not shutil.which('ip') or not shutil.which('curl'):
        print('SKIP: needs iproute2 (ip) and curl')
        sys.exit(SKIP)
    net = netns_cluster.Net(2)
    tmp = tempfile.mkdtemp(prefix='trib-readyz-')
    # Names unique to this run: other runs on this host pin under theirs.
    names = ['rz%d-a' % os.getpid(), 'rz%d-b' % os.getpid()]
    procs = []
    try:
        net.up()
        n0 = node_proc(net, 0, tmp, names[0])
        procs.append(n0)
        host = net.node_ip[0]

        # --- A: no controller yet ---
        wait_for(lambda: call(net.ctl, host, 'GET', '/healthz')[0] == 200, 30,
                 'the node to answer /healthz')
        st, b = call(net.ctl, host, 'GET', '/readyz')
        check(st == 503, '/readyz before joining: %d %s' % (st, b))
        body = json.loads(b)
        check(body['missing'] == ['joined'] and body['ready'] is False and body['arena'] and
              body['serving'], '/readyz names only "joined" as missing: %s' % body)
        st, b = call(net.ctl, host, 'GET', '/v1/jobs')
        check(st == 503, 'job routes before joining: %d %s' % (st, b))
        time.sleep(1.5)  # a few join attempts fail meanwhile: still not ready
        st, b = call(net.ctl, host, 'GET', '/readyz')
        check(st == 503, '/readyz still 503 while the controller is away: %d' % st)
        log('A: alive (/healthz 200) but not ready (/readyz 503, missing: joined)')

        # --- B: the controller comes; the node joins and is ready ---
        ctl = netns_cluster.Proc('controller', net.ctl, BIN, [
            'controller', '--listen', 'tls+tcp://%s:7070' % net.ctl_ip,
            '--data-dir', os.path.join(tmp, 'ctl')], tmp)
        procs.append(ctl)
        t0 = time.time()
        wait_for(lambda: call(net.ctl, host, 'GET', '/readyz')[0] == 200, 30,
                 'the node to become ready once the controller is up')
        st, b = call(net.ctl, host, 'GET', '/readyz')
        body = json.loads(b)
        check(body['ready'] and body['joined'] and body['missing'] == [] and
              body['dataplane'] in ('shm+bpf', 'shm+unix', 'tcp'), 'ready body: %s' % body)
        with open(os.path.join(tmp, 'ctl', 'admin-token')) as f:
            admin = f.read().strip()
        st, b = call(net.ctl, host, 'POST', '/v1/jobs', json.dumps(
            {'name': 'r', 'clients_per_round': 2, 'params': 4}).encode(), admin)
        check(st == 201, 'create a job once ready: %d %s' % (st, b))
        log('B: ready %.1f s after the controller started (dataplane %s); a job is created'
            % (time.time() - t0, body['dataplane']))

        stop(n0)
        stop(ctl)
        pins_shared(tmp, names[0], procs)
    finally:
        for p in procs:
            p.close()
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main(scenario)
