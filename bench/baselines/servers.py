# SPDX-License-Identifier: MIT
"""Start, watch and stop the servers the benchmarks compare: Tributary, the Python baseline, nginx.

Used by bench/baselines/ingest.py and bench/round/run.py (Debian's /usr/bin/python3).

What is measured, for a server and every process below it (Tributary's `tributary-fn` children,
nginx's worker):
  - memory: a sampler thread reads every SAMPLE_S /proc/PID/status of every process in the
    tree and sums RssAnon + RssShmem (resident anonymous and shmem pages: heaps, numpy arrays,
    private buffers; file-backed pages such as binaries and libraries are left out, so that k
    copies of one executable do not count k times; a shmem page mapped by k processes would
    count k times, which is why this is only right with a hugetlb arena), and adds the bytes
    allocated in hugetlb memfds any of them holds (the Tributary arena, which RSS does not count),
    from st_blocks of /proc/PID/fd/N, each file once. The peak is the largest sum seen. These
    counters are O(1) to read: smaps_rollup (Pss) was tried first, but walking a 10 GB
    process's page tables every 50 ms took the sampler to ~20% of a core and holds the
    process's mmap lock while it does.
  - CPU: utime + stime + cutime + cstime from /proc/PID/stat of the server and of each live
    descendant (cutime: children already reaped), summed over the tree; a measurement is the
    difference between two readings, so server start-up is not counted.
  - Tributary only: the arena is populated in full when the server starts, so its resident size
    is the configured --arena-mb whatever the rounds need. The sampler therefore also reads
    tributary_arena_bytes{state="used"} from /metrics at every sample and keeps the peak of
    (RSS part + arena used): the memory the rounds actually held.
"""

import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

SAMPLE_S = 0.05
HUGE_BLKSIZE = 2 << 20  # st_blksize of a file on hugetlbfs (2 MiB pages)
TICK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
ARENA_USED_RE = re.compile(r'^tributary_arena_bytes\{state="used"\} (\d+)', re.M)


def tree(pid):
    """pid and its live descendants (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_s(pid):
    """CPU seconds (user + system, including reaped children) of pid's process tree."""
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        # fields[11..14] are utime, stime, cutime, cstime (fields 14-17 of proc(5))
        total += sum(int(x) for x in fields[11:15])
    return total / TICK


def cpu_s_fine(pid):
    """CPU seconds of pid's live process tree at nanosecond resolution.

    cpu_s() counts clock ticks (10 ms): over one 0.4 GB ingest run that is 0.025 s/GB a tick,
    as coarse as the differences measured. This sums the first field of
    /proc/PID/task/TID/schedstat (time on a CPU, ns) over every thread of the tree, plus the
    reaped children's cutime + cstime in ticks (none reaped during a run, normally).
    """
    total = 0.0
    for p in tree(pid):
        try:
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/schedstat" % (p, t)) as f:
                    total += int(f.read().split()[0]) / 1e9
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
        except (OSError, ValueError):
            continue
        fields = st[st.rindex(")") + 2:].split()
        total += (int(fields[13]) + int(fields[14])) / TICK
    return total


def _status_kb(pid, keys):
    """Sum of the /proc/PID/status fields named in keys (kB); 0 for a process that is gone."""
    total = 0
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(keys):
                    total += int(line.split()[1])
    except (OSError, ValueError):
        pass
    return total


class Sampler(threading.Thread):
    """Samples the tree's memory until stop().

    peak: bytes, the largest (RSS part + hugetlb memfd bytes allocated) seen; huge: the hugetlb
    part of it. With metrics_url (Tributary's /metrics), also peak_used: the largest
    (RSS part + tributary_arena_bytes{state="used"}), i.e. what the arena actually held rather
    than what it reserved (the arena is populated in full at start), and arena_used: the largest
    arena use alone.
    """

    def __init__(self, pid, metrics_url=None):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.huge = 0
        self.peak_used = 0
        self.arena_used = 0
        self.samples = 0
        self._quit = threading.Event()
        self._hugefds = {}  # (dev, ino) -> /proc path of an fd open on it
        self._metrics = None
        if metrics_url:
            u = urllib.parse.urlsplit(metrics_url)
            self._metrics = (u.hostname, u.port)
        self._conn = None

    def _arena_used(self):
        """tributary_arena_bytes{state="used"} from /metrics, or None."""
        if not self._metrics:
            return None
        for _ in range(2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(*self._metrics, timeout=2)
                self._conn.request("GET", "/metrics")
                body = self._conn.getresponse().read().decode()
                m = ARENA_USED_RE.search(body)
                return int(m.group(1)) if m else None
            except (OSError, http.client.HTTPException):
                if self._conn:
                    self._conn.close()
                self._conn = None
        return None

    def _scan_fds(self, pid):
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            return
        for fd in fds:
            path = "/proc/%d/fd/%s" % (pid, fd)
            try:
                if not os.readlink(path).startswith("/memfd:"):
                    continue
                st = os.stat(path)
            except OSError:
                continue
            if st.st_blksize == HUGE_BLKSIZE and (st.st_dev, st.st_ino) not in self._hugefds:
                self._hugefds[(st.st_dev, st.st_ino)] = path

    def sample(self):
        rss, huge = 0, 0
        procs = tree(self.pid)
        for p in procs:
            rss += (_status_kb(p, ("RssAnon:", "RssShmem:"))) * 1024
        if self.samples % 20 == 0 or not self._hugefds:
            for p in procs:
                self._scan_fds(p)
        for key, path in list(self._hugefds.items()):
            try:
                huge += os.stat(path).st_blocks * 512
            except OSError:
                del self._hugefds[key]
        used = self._arena_used()
        self.samples += 1
        if rss + huge > self.peak:
            self.peak, self.huge = rss + huge, huge
        used = huge if used is None else used
        self.arena_used = max(self.arena_used, used)
        self.peak_used = max(self.peak_used, rss + used)

    def run(self):
        while not self._quit.is_set():
            self.sample()
            self._quit.wait(SAMPLE_S)

    def stop(self):
        """Stop sampling; call it while the server still runs (one last sample is taken)."""
        self._quit.set()
        self.join()
        self.sample()
        if self._conn:
            self._conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log, timeout=30):
    t = time.time() + timeout
    while time.time() < t:
        if proc.poll() is not None:
            raise RuntimeError("server exited at start:\n" + open(log).read()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not listen on %d:\n%s" % (port, open(log).read()[-2000:]))


def wait_file(path, proc, log, timeout=30):
    t = time.time() + timeout
    while time.time() < t:
        if proc.poll() is not None:
            raise RuntimeError("server exited at start:\n" + open(log).read()[-2000:])
        try:
            with open(path) as f:
                s = f.read().strip()
            if s:
                return int(s)
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("no port file %s:\n%s" % (path, open(log).read()[-2000:]))


class Server:
    """One running server. kind: 'tributary' (mode = data plane), 'python' or 'nginx'.

    url, data_dir (where admin-token is), pid. stop() returns the wait4 rusage of the server.
    extra: more options of `tributary up` (Tributary only), e.g. ("--rx-threads", "0").
    """

    def __init__(self, kind, build, workdir, mode="shm+bpf", arena_mb=1024, extra=()):
        self.kind, self.mode = kind, mode
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.data_dir = os.path.join(workdir, "data")
        self.log = os.path.join(workdir, "server.log")
        port_file = os.path.join(workdir, "port")
        logf = open(self.log, "w")
        if kind == "tributary":
            cmd = [os.path.join(build, "tributary"), "up", "--listen", "127.0.0.1:0",
                   "--port-file", port_file, "--data-dir", self.data_dir,
                   "--arena-mb", str(arena_mb), "--dataplane", mode] + list(extra)
        elif kind == "python":
            cmd = [PY, os.path.join(HERE, "py_server.py"), "--listen", "127.0.0.1:0",
                   "--port-file", port_file, "--data-dir", self.data_dir]
        elif kind == "nginx":
            port = free_port()
            os.makedirs(self.data_dir, exist_ok=True)
            with open(os.path.join(self.data_dir, "admin-token"), "w") as f:
                # unused (nginx checks no token), but the clients read it by the one token rule
                f.write("nginx-checks-no-token\n")
            with open(os.path.join(HERE, "nginx.conf")) as f:
                conf = f.read().replace("@PORT@", str(port))
            with open(os.path.join(workdir, "nginx.conf"), "w") as f:
                f.write(conf)
            cmd = [nginx_path(), "-p", workdir, "-c", os.path.join(workdir, "nginx.conf"),
                   "-e", "stderr", "-g", "daemon off;"]
        else:
            raise ValueError(kind)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        self.pid = self.proc.pid
        try:
            if kind == "nginx":
                wait_port(port, self.proc, self.log)
            else:
                port = wait_file(port_file, self.proc, self.log)
        except Exception:
            self.stop()
            raise
        self.url = "http://127.0.0.1:%d" % port
        if kind == "tributary":
            self.check_mode()

    def check_mode(self):
        """Tributary falls back from shm+bpf to shm+unix when it cannot load BPF: say so."""
        with open(self.log) as f:
            log = f.read()
        if "data plane: %s " % self.mode not in log and "data plane: %s\n" % self.mode not in log:
            line = [x for x in log.splitlines() if "data plane" in x]
            raise RuntimeError("tributary did not start with data plane %s: %s" %
                               (self.mode, line[0] if line else log[-500:]))

    def stop(self):
        """SIGTERM, then reap; returns the rusage of the server and its reaped children."""
        if self.proc.returncode is not None:
            return None
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + 20
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                if self.kind == "tributary":
                    remove_arena_files(self.log)
                return ru
            if time.time() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                deadline = time.time() + 5
            time.sleep(0.05)


ARENA_FILE_RE = re.compile(r'arena file (/\S+?):? |moved aside to (/\S+) ')


def remove_arena_files(log):
    """A bench server's arena files, once it is gone: it keeps them on purpose when it stops
    with a round open (a restart resumes it), but a bench never restarts one, and each left in
    /dev/hugepages holds its huge pages until removed (33 files, 8.5 GB, seen after one bench
    session)."""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        return
    for m in ARENA_FILE_RE.finditer(text):
        try:
            os.unlink(m.group(1) or m.group(2))
        except OSError:
            pass


def nginx_path():
    for p in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if os.access(p, os.X_OK):
            return p
    return None
