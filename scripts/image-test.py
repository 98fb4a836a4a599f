# SPDX-License-Identifier: MIT
"""`make image-test`: Tributary's image, run the way the manifests run it, under podman.

1. Builds manifests/Containerfile with podman (scripts/deps-image.sh made the pinned base).
2. Renders manifests/ with `kubectl kustomize` and turns each workload's pod spec into podman
   arguments: user and groups (runAsUser, runAsGroup, fsGroup), capabilities (drop, add),
   allowPrivilegeEscalation, seccompProfile, readOnlyRootFilesystem, the volumes (emptyDir,
   HugePages-2Mi emptyDir as a hugetlbfs mount of the pod's huge-page limit, hostPath, the
   PVC), the memory limit, and the command with its $(VAR)s filled from env, the ConfigMap
   and the downward API. Nothing about security is written here by hand: what the manifests
   say is what runs.
3. Runs one controller and three node containers on a podman network, waits until every node
   answers 200 on its readinessProbe path (/readyz), and checks each node's data plane.
4. Drives `tributary simulate` (from the image) across the three gateways, kills one node
   container (SIGKILL) once the job's first model exists, and requires simulate to finish with
   every model equal to its float64 reference.
5. Restarts the killed container in place (as the kubelet does, same volumes): its arena file
   is still on the HugePages emptyDir, it takes back the pins it left, it is ready again, and a
   second job runs over all three gateways with its models checked.
6. Reports each container's peak memory (VmHWM of its main process, and the cgroup's
   memory.max_usage_in_bytes: runtime, functions and page cache) for docs/DEPLOY.md.

What differs from a Kubernetes cluster, and why (printed too): no cluster DNS, so the
controller's Service name is an /etc/hosts entry; the arena is 64 MiB, not 1024, to fit a test
machine (its huge-page volume shrinks with it); a hugetlb cgroup controller is missing here, so
the volume's size, not a cgroup, bounds the huge pages; spec.nodeName is it-node-N.

Needs root, podman (runc, cgroupfs), kubectl. Exits 0 on success, 1 on failure, 77 when a
requirement is missing.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = 'localhost/tributary:image-test'
NET = 'tributary-it'
SUBNET = '10.89.77'
CTL_IP = SUBNET + '.2'
NODE_IPS = [SUBNET + '.%d' % (11 + i) for i in range(3)]
# Per node; the manifest's 1024 does not fit a test machine three times. IMAGE_TEST_* change the
# load, to measure peaks (docs/DEPLOY.md, "Memory requests").
ARENA_MB = int(os.environ.get('IMAGE_TEST_ARENA_MB', '64'))
PREFIX = 'tributary-it-'
ULIMITS = ['--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=30000:30000']
SIM = ['--clients', os.environ.get('IMAGE_TEST_CLIENTS', '60'),
       '--rounds', os.environ.get('IMAGE_TEST_ROUNDS', '20'),
       '--params', os.environ.get('IMAGE_TEST_PARAMS', '300000')]
BPF_HOST = '/sys/fs/bpf/tributary-k8s/tributary'  # where the nodes' hostPath bpffs puts pins


def log(msg):
    print('image-test: ' + msg, flush=True)


def fail(msg):
    log('FAIL: ' + msg)
    sys.exit(1)


def run(cmd, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode:
        fail('%s: exit %d\n%s' % (' '.join(cmd), p.returncode, (p.stderr or p.stdout)[-3000:]))
    return p


def quantity(q):
    """Bytes of a Kubernetes quantity (Ki, Mi, Gi, or plain)."""
    m = re.fullmatch(r'(\d+)(Ki|Mi|Gi|Ti)?', str(q))
    if not m:
        fail('cannot read quantity %r' % q)
    return int(m.group(1)) * {None: 1, 'Ki': 1 << 10, 'Mi': 1 << 20, 'Gi': 1 << 30,
                              'Ti': 1 << 40}[m.group(2)]


# ---- the manifests ----

def render():
    out = run(['kubectl', 'kustomize', os.path.join(ROOT, 'manifests')]).stdout
    objs = [o for o in yaml.safe_load_all(out) if o]
    by = {(o['kind'], o['metadata']['name']): o for o in objs}
    return by


class Spec:
    """One workload's container, as podman arguments, read from its pod spec."""

    def __init__(self, by, kind, name):
        w = by[(kind, name)]
        self.pod = w['spec']['template']['spec']
        self.c = self.pod['containers'][0]
        self.by = by
        self.image = self.c['image']
        self.fs_group = (self.pod.get('securityContext') or {}).get('fsGroup')

    def security(self):
        """User, groups, capabilities, privilege escalation, seccomp, read-only root."""
        psc = self.pod.get('securityContext') or {}
        csc = self.c.get('securityContext') or {}
        args = []
        uid = csc.get('runAsUser', psc.get('runAsUser'))
        gid = csc.get('runAsGroup', psc.get('runAsGroup'))
        if uid is not None:
            args += ['--user', '%d:%d' % (uid, gid if gid is not None else uid)]
        if csc.get('runAsNonRoot', psc.get('runAsNonRoot')) and uid in (None, 0):
            fail('%s: runAsNonRoot without a non-root runAsUser' % self.c['name'])
        if self.fs_group is not None:
            args += ['--group-add', str(self.fs_group)]
        caps = csc.get('capabilities') or {}
        for cap in caps.get('drop') or []:
            args += ['--cap-drop', cap]
        for cap in caps.get('add') or []:
            args += ['--cap-add', cap]
        if csc.get('privileged'):
            args += ['--privileged']
        if csc.get('allowPrivilegeEscalation') is False:
            args += ['--security-opt', 'no-new-privileges']
        sp = (csc.get('seccompProfile') or psc.get('seccompProfile') or {}).get('type')
        if sp == 'Unconfined':
            args += ['--security-opt', 'seccomp=unconfined']
        elif sp not in (None, 'RuntimeDefault'):
            fail('%s: seccompProfile %s is not emulated here' % (self.c['name'], sp))
        if csc.get('readOnlyRootFilesystem'):
            # podman would add tmpfs on /tmp, /run, /var/tmp: the manifests' volumes only.
            args += ['--read-only', '--read-only-tmpfs=false']
        lim = (self.c.get('resources') or {}).get('limits') or {}
        if 'memory' in lim:
            args += ['--memory', str(quantity(lim['memory']))]
        return args

    def env(self, downward):
        out = {}
        for e in self.c.get('env') or []:
            if 'value' in e:
                out[e['name']] = e['value']
                continue
            vf = e['valueFrom']
            if 'fieldRef' in vf:
                out[e['name']] = downward[vf['fieldRef']['fieldPath']]
            elif 'configMapKeyRef' in vf:
                ref = vf['configMapKeyRef']
                out[e['name']] = self.by[('ConfigMap', ref['name'])]['data'][ref['key']]
            else:
                fail('env %s: %s not emulated' % (e['name'], list(vf)))
        return out

    def command(self, env, overrides):
        """command + args with $(VAR) filled; @overrides: {flag: value} replaced."""
        argv = list(self.c.get('command') or []) + list(self.c.get('args') or [])
        argv = [re.sub(r'\$\((\w+)\)', lambda m: env.get(m.group(1), m.group(0)), a)
                for a in argv]
        for flag, val in overrides.items():
            if flag not in argv:
                fail('%s has no %s to override' % (self.c['name'], flag))
            argv[argv.index(flag) + 1] = val
        return argv

    def volumes(self, tmp, tag, huge_bytes, secrets=None):
        """podman --mount/-v arguments for the pod's volumes, and what to clean up.

        @secrets: Secret name -> {key: text}, written as the kubelet does (one file per key).
        """
        args, mounts = [], []
        vols = {v['name']: v for v in self.pod.get('volumes') or []}
        for m in self.c.get('volumeMounts') or []:
            v = vols[m['name']]
            src = os.path.join(tmp, '%s-%s' % (tag, m['name']))
            if 'emptyDir' in v and (v['emptyDir'].get('medium') or '').startswith('HugePages'):
                # The kubelet mounts hugetlbfs for a HugePages emptyDir; its size here is the
                # pod's huge-page limit (no hugetlb cgroup on this machine to enforce it).
                os.makedirs(src)
                run(['mount', '-t', 'hugetlbfs', '-o', 'pagesize=2M,size=%d' % huge_bytes,
                     'none', src])
                mounts.append(src)
            elif 'emptyDir' in v:
                os.makedirs(src)
            elif 'hostPath' in v and not v['hostPath']['path'].startswith('/sys/fs/bpf'):
                # Each node container stands for its own host: its hostPath is its own (the
                # bpffs one below is shared on purpose: pins of runtimes on one host).
                os.makedirs(src)
            elif 'hostPath' in v:
                src = v['hostPath']['path']
                if v['hostPath'].get('type') == 'DirectoryOrCreate':
                    os.makedirs(src, exist_ok=True)
            elif 'secret' in v:
                os.makedirs(src)
                name = v['secret']['secretName']
                data = (secrets or {}).get(name)
                if data is None and not v['secret'].get('optional'):
                    fail('volume %s: Secret %s is not optional and was not made' %
                         (m['name'], name))
                for key, text in (data or {}).items():
                    with open(os.path.join(src, key), 'w') as f:
                        f.write(text)
                    os.chmod(os.path.join(src, key), v['secret'].get('defaultMode', 0o644))
            elif 'persistentVolumeClaim' in v:
                os.makedirs(src)
            else:
                fail('volume %s: kind %s not emulated' % (m['name'], list(v)))
            if self.fs_group is not None and 'hostPath' not in v and 'secret' not in v:
                os.chown(src, 0, self.fs_group)
                os.chmod(src, 0o2770)
            args += ['-v', '%s:%s%s' % (src, m['mountPath'], ':ro' if m.get('readOnly') else '')]
        return args, mounts


# ---- podman ----

def podman(*args, check=True):
    return run(['podman'] + list(args), check=check)


def start(name, spec, env, argv, ip, vol_args, extra=()):
    args = ['run', '-d', '--name', PREFIX + name, '--network', NET, '--ip', ip,
            '--hostname', name] + ULIMITS + spec.security() + vol_args + list(extra)
    for k, v in env.items():
        args += ['-e', '%s=%s' % (k, v)]
    args += ['--entrypoint', argv[0], spec.image] + argv[1:]
    podman(*args)
    log('started %s: %s' % (name, ' '.join(argv[1:])))


def host_pid(name):
    return int(podman('inspect', '-f', '{{.State.Pid}}', PREFIX + name).stdout.strip())


def logs(name):
    p = podman('logs', PREFIX + name, check=False)
    return p.stdout + p.stderr


def http(ip, path, token=None, timeout=5):
    req = urllib.request.Request('http://%s:8080%s' % (ip, path))
    if token:
        req.add_header('Authorization', 'Bearer ' + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b''


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    fail('timed out waiting for ' + what)


def peak(name):
    """(VmHWM of the main process, the container cgroup's max memory usage) in bytes."""
    hwm = cg = None
    try:
        with open('/proc/%d/status' % host_pid(name)) as f:
            for ln in f:
                if ln.startswith('VmHWM:'):
                    hwm = int(ln.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    path = podman('inspect', '-f', '{{.State.CgroupPath}}', PREFIX + name,
                  check=False).stdout.strip()
    for p in ('/sys/fs/cgroup/memory' + path + '/memory.max_usage_in_bytes',
              '/sys/fs/cgroup' + path + '/memory.peak'):
        try:
            with open(p) as f:
                cg = int(f.read())
            break
        except (OSError, ValueError):
            continue
    return hwm, cg


def mib(b):
    return '%.0f MiB' % (b / 1048576) if b else '?'


# ---- huge pages: add ours, give them back ----

class HugePages:
    PATH = '/proc/sys/vm/nr_hugepages'

    def __init__(self, n):
        self.n = 0
        with open(self.PATH) as f:
            cur = int(f.read())
        with open(self.PATH, 'w') as f:
            f.write(str(cur + n))
        with open(self.PATH) as f:
            self.n = int(f.read()) - cur
        if self.n < n:
            log('only %d of %d huge pages could be added; the arenas may use normal pages'
                % (self.n, n))

    def release(self):
        if self.n:
            with open(self.PATH) as f:
                cur = int(f.read())
            with open(self.PATH, 'w') as f:
                f.write(str(max(cur - self.n, 0)))
            self.n = 0


def remove_containers():
    """This test's containers and network (also those a killed earlier run left)."""
    for c in podman('ps', '-a', '--format', '{{.Names}}', check=False).stdout.split():
        if c.startswith(PREFIX):
            podman('rm', '-f', '-t', '0', c, check=False)
    podman('network', 'rm', '-f', NET, check=False)


def cleanup(tmp, mounts, huge):
    remove_containers()
    # Pins a killed container left (its successor would take them back): only this test's.
    for d in range(3):
        owner = os.path.join(BPF_HOST, 'it-node-%d' % d)
        for sub in os.listdir(owner) if os.path.isdir(owner) else []:
            for f in os.listdir(os.path.join(owner, sub)):
                os.unlink(os.path.join(owner, sub, f))
            os.rmdir(os.path.join(owner, sub))
        if os.path.isdir(owner):
            os.rmdir(owner)
    # The hostPath directory, if nothing else is in it (rmdir refuses otherwise).
    for d in (BPF_HOST, os.path.dirname(BPF_HOST)):
        try:
            os.rmdir(d)
        except OSError:
            pass
    for m in mounts:
        run(['umount', m], check=False)
    if huge:
        huge.release()
    shutil.rmtree(tmp, ignore_errors=True)


def simulate(job, urls, ctl_data, args):
    return subprocess.Popen(
        ['podman', 'run', '--rm', '--name', PREFIX + 'simulate-' + job, '--network', NET,
         '--user', '10001:10001', '--read-only', '--cap-drop', 'ALL'] + ULIMITS +
        ['-v', '%s:/ctl:ro' % ctl_data, IMAGE, 'simulate', '--url', urls, '--job', job,
         '--data-dir', '/ctl', '--quiet'] + args,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(sim, what):
    # Long: clients that were between connections when their gateway's container died wait for
    # TCP connect to time out on its vanished IP (no RST comes back) before they fail over, a
    # few minutes (issue 14 item 5: failing over on timeouts too).
    try:
        out, _ = sim.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        sim.kill()
        out, _ = sim.communicate()
        fail('simulate (%s) did not finish:\n%s' % (what, out[-3000:]))
    if sim.returncode != 0:
        fail('simulate (%s) failed (exit %d):\n%s' % (what, sim.returncode, out[-4000:]))
    moved = [ln for ln in out.splitlines() if 'went to another gateway' in ln]
    if moved:
        log('  %d rounds had updates go to another gateway than their own (from round %s)'
            % (len(moved), moved[0].split(':')[0].split()[-1]))
    for ln in out.splitlines():
        if ln.startswith('simulate:') or ' lost' in ln:
            log('  ' + ln)
    return out


def main():
    if os.geteuid() != 0:
        print('SKIP: image-test needs root (podman, hugetlbfs mounts)')
        return 77
    for tool in ('podman', 'kubectl', 'runc'):
        if not shutil.which(tool):
            print('SKIP: %s is missing: run scripts/deps-image.sh' % tool)
            return 77
    t0 = time.time()
    log('building %s from manifests/Containerfile' % IMAGE)
    run(['podman', 'build', '-q', '-f', 'manifests/Containerfile', '--ignorefile',
         'manifests/Containerfile.dockerignore', '-t', IMAGE, '.'], cwd=ROOT)
    digest = podman('image', 'inspect', '-f', '{{.Digest}}', IMAGE).stdout.strip()
    log('built %s (%s) in %.0f s' % (IMAGE, digest, time.time() - t0))

    by = render()
    ctl_spec = Spec(by, 'Deployment', 'tributary-controller')
    node_spec = Spec(by, 'DaemonSet', 'tributary-node')
    want_ref = node_spec.image
    for s in (ctl_spec, node_spec):
        s.image = IMAGE  # the reference the manifests name is not pushed anywhere here
    log('manifests render %s; running it as %s' % (want_ref, IMAGE))

    tmp = tempfile.mkdtemp(prefix='tributary-image-test-')
    mounts, huge = [], None
    try:
        remove_containers()
        podman('network', 'create', '--subnet', SUBNET + '.0/24', NET)
        huge_bytes = (ARENA_MB + 2) << 20
        huge = HugePages(3 * huge_bytes >> 21)

        # The controller.
        vargs, m = ctl_spec.volumes(tmp, 'ctl', 0)
        mounts += m
        env = ctl_spec.env({})
        start('controller', ctl_spec, env, ctl_spec.command(env, {}), CTL_IP, vargs)
        ctl_data = [a.split(':')[0] for a in vargs if a.endswith(':/var/lib/tributary')][0]

        def ctl_up():
            with socket.socket() as sk:
                sk.settimeout(1)
                return sk.connect_ex((CTL_IP, 7070)) == 0
        wait_for(ctl_up, 30, 'the controller to listen on 7070 (its tcpSocket probe)')

        # The Secrets an operator makes (docs/DEPLOY.md, "First install"): the CA certificate
        # from the controller's data dir, one one-time join token per node name.
        wait_for(lambda: os.path.exists(os.path.join(ctl_data, 'cluster', 'ca.crt')), 30,
                 'the controller to make the cluster CA')
        with open(os.path.join(ctl_data, 'cluster', 'ca.crt')) as f:
            secrets = {'tributary-cluster-ca': {'ca.crt': f.read()}, 'tributary-join': {}}
        for i in range(len(NODE_IPS)):
            tok = podman('exec', PREFIX + 'controller', '/usr/local/bin/tributary', 'controller',
                         'join-token', '--ttl', '10m', '--data-dir', '/var/lib/tributary')
            secrets['tributary-join']['it-node-%d' % i] = tok.stdout.strip()

        # Three node runtimes.
        for i, ip in enumerate(NODE_IPS):
            name = 'it-node-%d' % i
            vargs, m = node_spec.volumes(tmp, name, huge_bytes, secrets)
            mounts += m
            env = node_spec.env({'spec.nodeName': name, 'status.podIP': ip})
            argv = node_spec.command(env, {'--arena-mb': str(ARENA_MB)})
            # No cluster DNS here: the Service name the ConfigMap gives, as a hosts entry.
            start(name, node_spec, env, argv, ip, vargs,
                  ['--add-host', 'tributary-controller:%s' % CTL_IP])
        probe = node_spec.c['readinessProbe']['httpGet']['path']
        for i, ip in enumerate(NODE_IPS):
            wait_for(lambda ip=ip: http(ip, probe)[0] == 200, 60,
                     'it-node-%d to answer 200 on %s' % (i, probe))
        planes = []
        for i in range(3):
            text = logs('it-node-%d' % i)
            line = [ln for ln in text.splitlines() if 'data plane:' in ln]
            arena = [ln for ln in text.splitlines() if 'arena file' in ln and 'MiB on' in ln]
            planes.append(line[0].split('data plane: ', 1)[1].split(' ')[0] if line else '?')
            pins = line[0].split('pinned under ', 1)[-1].rstrip(')') if line else '?'
            if not arena or '2 MiB huge' not in arena[-1]:
                fail('it-node-%d: arena not on the huge-page volume: %s' % (i, arena))
        log('3 nodes ready (%s 200); data planes: %s; arenas on 2 MiB huge pages; '
            'it-node-2 pins under %s' % (probe, planes, pins))
        if not all(p.startswith('shm+bpf') for p in planes):
            fail('a node did not come up on shm+bpf with the manifests\' privileges: %s' % planes)

        with open(os.path.join(ctl_data, 'admin-token')) as f:
            admin = f.read().strip()
        urls = ','.join('http://%s:8080' % ip for ip in NODE_IPS)
        sim = simulate('it', urls, ctl_data, SIM)
        wait_for(lambda: http(NODE_IPS[0], '/v1/jobs/it/model?round=1', admin)[0] == 200, 120,
                 'the first model of job it')
        peaks = {'it-node-2': peak('it-node-2')}
        podman('kill', '--signal', 'KILL', PREFIX + 'it-node-2')
        if sim.poll() is not None:
            fail('simulate ended before the node was killed: make the run longer (SIM)')
        log('killed it-node-2 (SIGKILL) after round 1, simulate still running')
        out = finish(sim, 'a node killed')
        if 'another gateway' not in out and 'lost' not in out:
            fail('simulate never noticed the killed node: the kill came too late')
        log('simulate over three gateways, one node container killed: every model checked')

        # The kubelet restarts a killed container in the same pod, with the same volumes.
        podman('start', PREFIX + 'it-node-2')
        wait_for(lambda: http(NODE_IPS[2], probe)[0] == 200, 60,
                 'it-node-2 to be ready again after its container restart')
        text = logs('it-node-2')
        found = [ln for ln in text.splitlines()
                 if 'node.arena' in ln and ('re-attached' in ln or 'removed (' in ln)]
        if not found:
            fail('it-node-2 did not find its arena file after the container restart:\n' +
                 text[-3000:])
        log('it-node-2 restarted in its pod: the arena file outlived the container (%s)'
            % found[0].split('] ', 1)[-1])
        if 'removed stale pins %s/it-node-2/' % '/sys/fs/bpf/tributary' not in text:
            fail('it-node-2 did not take back the pins its killed container left:\n' +
                 '\n'.join(ln for ln in text.splitlines() if 'pins' in ln))
        log('it-node-2 took back the pins its killed container left; the others kept theirs')
        finish(simulate('it2', urls, ctl_data, ['--clients', '30', '--rounds', '4',
                                                '--params', '100000']), 'after the restart')
        log('a second job over the three gateways, the restarted node among them: models checked')

        for n in ('controller', 'it-node-0', 'it-node-1'):
            peaks[n] = peak(n)
        for n in ('it-node-0', 'it-node-1', 'it-node-2', 'controller'):
            podman('stop', '-t', '30', PREFIX + n)
            code = podman('inspect', '-f', '{{.State.ExitCode}}', PREFIX + n).stdout.strip()
            if code != '0':
                fail('%s exited %s on SIGTERM:\n%s' % (n, code, logs(n)[-3000:]))
        log('peak memory (VmHWM of the main process; cgroup max usage incl. functions and page '
            'cache):')
        for n in ('controller', 'it-node-0', 'it-node-1', 'it-node-2'):
            h, c = peaks[n]
            log('  %-10s VmHWM %s, cgroup %s' % (n, mib(h), mib(c)))
        log('PASS in %.0f s' % (time.time() - t0))
        return 0
    finally:
        if os.environ.get('IMAGE_TEST_KEEP'):
            log('IMAGE_TEST_KEEP: containers and %s left for inspection' % tmp)
        else:
            cleanup(tmp, mounts, huge)


if __name__ == '__main__':
    sys.exit(main())
