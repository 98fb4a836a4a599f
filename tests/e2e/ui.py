#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""/ui in headless Chromium during a `tributary simulate` run (issue 18).

Chromium is driven through its DevTools protocol (a websocket: Debian's python3-websocket):
the page is opened with the token in the URL fragment (/ui#token=T[&job=J], the page stores it
in sessionStorage and removes it from the address bar; a fragment never reaches the server).
Checks, with screenshots saved in E2E_OUT_DIR (build-test/tests/e2e/out/ui/):
  - the security headers on /ui and its assets, 404/405 under /ui;
  - with the admin token: both jobs listed, the round chart of the simulated job has points,
    the live tree shows functions, the arena is drawn; the token is gone from the URL;
  - no console error or exception on the page;
  - a job token with its own job sees that job and nothing of the other (no job list, no
    trees); the same token naming the other job gets the server's 401 shown, and no data;
  - on a node of a local two-node cluster (controller and nodes on 127.0.0.1, shm+unix, no
    huge pages): both nodes with their heartbeat age, each recent round with where it was
    folded and its cross-node edge, the chart built from per-round records.
"""
import base64
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import e2e_common as e
from e2e_common import check, log

CHROMIUM = '/usr/bin/chromium'
OUT_DIR = os.environ.get('E2E_OUT_DIR') or tempfile.mkdtemp(prefix='trib-ui-out-')
P = 2000


def skip(why):
    print('SKIP: %s' % why, flush=True)
    sys.exit(77)


try:
    import websocket  # Debian's python3-websocket (websocket-client)
except ImportError:
    websocket = None


class Chrome:
    """One headless Chromium and a DevTools session on its first page."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='trib-ui-chrome-')
        self.log = open(os.path.join(self.dir, 'chromium.log'), 'wb')
        # As root Chromium needs --no-sandbox (shared/FACTS.md); port 0: it picks one and
        # writes it to DevToolsActivePort.
        self.proc = subprocess.Popen(
            [CHROMIUM, '--headless=new', '--no-sandbox', '--disable-gpu',
             '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
             '--remote-debugging-port=0', '--remote-allow-origins=*',
             '--user-data-dir=' + os.path.join(self.dir, 'profile'),
             '--window-size=1400,1600', 'about:blank'],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = os.path.join(self.dir, 'profile', 'DevToolsActivePort')
        e.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().count('\n') >= 1,
                   30, 'chromium to open its DevTools port', step=0.1)
        port = int(open(port_file).read().split('\n')[0])
        with urllib.request.urlopen('http://127.0.0.1:%d/json/list' % port, timeout=10) as r:
            targets = json.load(r)
        page = [t for t in targets if t.get('type') == 'page']
        check(page, 'chromium lists no page target: %r' % targets)
        self.ws = websocket.create_connection(page[0]['webSocketDebuggerUrl'], timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.events = []
        for domain in ('Runtime', 'Log', 'Page'):
            self.call(domain + '.enable')
        # A headless page may report 0x0 until told its size (screenshots then fail).
        self.call('Emulation.setDeviceMetricsOverride', width=1400, height=1400,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method, **params):
        self.next_id += 1
        want = self.next_id
        self.ws.send(json.dumps({'id': want, 'method': method, 'params': params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == want:
                check('error' not in msg, '%s: %r' % (method, msg.get('error')))
                return msg.get('result', {})
            if 'method' in msg:
                self.events.append(msg)

    def eval(self, expr):
        r = self.call('Runtime.evaluate', expression=expr, returnByValue=True)
        check('exceptionDetails' not in r, 'evaluating %s: %r' % (expr, r))
        return r['result'].get('value')

    def open(self, url):
        """Navigate and return once the new document has loaded (its script ran)."""
        self.events = []
        self.call('Page.navigate', url=url)
        deadline = time.monotonic() + 30
        while not any(ev['method'] == 'Page.loadEventFired' for ev in self.events):
            check(time.monotonic() < deadline, 'no load event for %s' % url)
            self.events.append(json.loads(self.ws.recv()))

    def errors(self, allow_network=()):
        """Console errors and exceptions since the last open(); network entries whose text
        holds one of @allow_network are expected (a refused request shown by the page)."""
        out = []
        for ev in self.events:
            m, p = ev['method'], ev.get('params', {})
            if m == 'Runtime.exceptionThrown':
                out.append('exception: %s' % json.dumps(p.get('exceptionDetails'))[:500])
            elif m == 'Runtime.consoleAPICalled' and p.get('type') in ('error', 'assert'):
                out.append('console.%s: %s' % (p['type'], json.dumps(p.get('args'))[:500]))
            elif m == 'Log.entryAdded' and p['entry'].get('level') == 'error':
                ent = p['entry']
                if ent.get('source') == 'network' and any(a in ent.get('text', '') for a in
                                                            allow_network):
                    continue
                out.append('log %s: %s %s' % (ent.get('source'), ent.get('text'),
                                               ent.get('url', '')))
        return out

    def screenshot(self, path):
        r = self.call('Page.captureScreenshot', format='png')
        with open(path, 'wb') as f:
            f.write(base64.b64decode(r['data']))

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# What the page shows, read from its DOM in one evaluation.
STATE_JS = r'''(() => {
  if (!document.getElementById('login')) return 'null';
  const vis = (id) => !document.getElementById(id).hidden;
  return JSON.stringify({
    jobs: [...document.querySelectorAll('#jobs tr.job-row')].map((r) => r.dataset.job),
    refused: Object.fromEntries([...document.querySelectorAll('#jobs tr.job-row')].map(
      (r) => [r.dataset.job, r.cells[6] ? r.cells[6].textContent : ''])),
    charts: [...document.querySelectorAll('#charts svg.chart')].map((s) => s.dataset.job),
    points: document.querySelectorAll('#charts svg.chart[data-job="ui-a"] circle.pt-dur').length,
    fns: [...document.querySelectorAll('#trees g.fn')].map((g) => g.dataset.role),
    trees: vis('tree-section'), arena: document.getElementById('arena').textContent,
    node: (document.querySelector('#node-table tr.refused') || {}).textContent || '',
    arena_shown: vis('arena-section'), login: vis('login'),
    error: vis('error') ? document.getElementById('error').textContent : '',
    hash: location.hash, stored: sessionStorage.getItem('trib.token') !== null,
    text: document.body.innerText,
  });
})()'''


def state(ch):
    """The page's state, or {} while no document of ours is loaded."""
    return json.loads(ch.eval(STATE_JS)) or {}


def check_headers(srv):
    st, hd, body = srv.request('GET', '/ui')
    check(st == 200 and hd.get('content-type', '').startswith('text/html'), '/ui: %d %r' %
          (st, hd))
    csp = hd.get('content-security-policy', '')
    for want in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        check(want in csp, '/ui CSP lacks %r: %r' % (want, csp))
    check("'unsafe-inline'" not in csp, 'CSP allows inline: %r' % csp)
    check(hd.get('x-content-type-options') == 'nosniff' and hd.get('x-frame-options') == 'DENY'
          and hd.get('referrer-policy') == 'no-referrer' and
          hd.get('cache-control') == 'no-store', '/ui headers: %r' % hd)
    check(b'<script>' not in body and b'src="/ui/ui.js"' in body, 'inline script in /ui')
    st, hd, _ = srv.request('GET', '/ui/ui.js')
    check(st == 200 and hd.get('content-type', '').startswith('text/javascript') and
          'content-security-policy' in hd, '/ui/ui.js: %d %r' % (st, hd))
    st, _, _ = srv.request('GET', '/ui/../admin-token')
    check(st == 404, '/ui/../admin-token: %d' % st)
    st, _, _ = srv.request('POST', '/ui', b'x', {'Content-Type': 'text/plain'})
    check(st == 405, 'POST /ui: %d' % st)
    st, _, b = srv.request('GET', '/ui/node.json')
    check(st == 200 and json.loads(b) == {'clustered': False}, '/ui/node.json: %d %r' % (st, b))
    log('/ui: CSP, nosniff, DENY, no-referrer, no-store; 404 outside the assets, 405 on POST')


def admin_view(srv, ch):
    ch.open('http://127.0.0.1:%d/ui#token=%s' % (srv.port, srv.admin))

    # Rounds go on while the page is read: a refresh may land between rounds (a new round's
    # top before its leaves start, or its leaves done and gone), so wait for one that shows a
    # whole tree rather than check whichever came first.
    def ready():
        s = state(ch)
        return s if (s and 'ui-a' in s['jobs'] and 'ui-b' in s['jobs'] and s['points'] >= 2 and
                     'top' in s['fns'] and 'leaf' in s['fns']) else None
    try:
        s = e.wait_for(ready, 60, 'the admin view to list both jobs, chart points and a tree '
                       'with its top and leaves', step=0.5)
    except e.Failure:
        st = state(ch)
        ch.screenshot(os.path.join(OUT_DIR, 'ui-admin-failed.png'))
        raise e.Failure('admin view never complete: %r' % st)
    ch.screenshot(os.path.join(OUT_DIR, 'ui-admin.png'))
    check(s['hash'] == '' and s['stored'], 'the token stays in the URL: %r' % s['hash'])
    check(srv.admin not in s['text'], 'the page shows the admin token')
    check('ui-a' in s['charts'] and s['arena_shown'] and 'reserved' in s['arena'],
          'admin view: %r' % {k: s[k] for k in ('charts', 'arena')})
    check(re.search(r'\bround 1\b', s['node']), 'the refusal is not shown: %r' % s['node'])
    # Per job (tributary_job_updates_rejected_total): ui-b's 409, none for ui-a.
    check(re.search(r'\bround 1\b', s['refused'].get('ui-b', '')) and
          s['refused'].get('ui-a') == 'none', 'refusals per job: %r' % s['refused'])
    errs = ch.errors()
    check(not errs, 'console errors in the admin view:\n%s' % '\n'.join(errs))
    log('admin view: jobs %s, %d chart points, tree %s, no console error; screenshot %s' %
        (s['jobs'], s['points'], s['fns'], os.path.join(OUT_DIR, 'ui-admin.png')))


def job_views(srv, ch, tok_a):
    ch.open('http://127.0.0.1:%d/ui?view=a#token=%s&job=ui-a' % (srv.port, tok_a))
    s = e.wait_for(lambda: (lambda s: s if s and s['jobs'] and s['points'] >= 1 else None)(state(ch)),
                   30, 'the job view of ui-a', step=0.5)
    ch.screenshot(os.path.join(OUT_DIR, 'ui-job.png'))
    check(s['jobs'] == ['ui-a'] and s['charts'] == ['ui-a'], 'job view: %r' % s['jobs'])
    check('ui-b' not in s['text'], 'the job token\'s page names the other job')
    check(not s['trees'] and not s['arena_shown'], 'job view shows admin panels')
    errs = ch.errors()
    check(not errs, 'console errors in the job view:\n%s' % '\n'.join(errs))

    # The same token naming the other job: the server's 401, shown; nothing of ui-b drawn.
    ch.open('http://127.0.0.1:%d/ui?view=b#token=%s&job=ui-b' % (srv.port, tok_a))
    s = e.wait_for(lambda: (lambda s: s if s and s['error'] else None)(state(ch)), 30,
                   'the page to show the refusal', step=0.3)
    time.sleep(2.5)  # one more poll period: nothing appears later either
    s = state(ch)
    check('401' in s['error'] and s['login'] and not s['jobs'] and not s['charts'],
          'a job token on another job: %r' % {k: s[k] for k in ('error', 'jobs', 'charts')})
    errs = ch.errors(allow_network=('401',))
    check(not errs, 'console errors besides the refused request:\n%s' % '\n'.join(errs))

    # A job token without a job name: /v1/jobs is the admin's; the page says so.
    ch.open('http://127.0.0.1:%d/ui?view=c#token=%s' % (srv.port, tok_a))
    s = e.wait_for(lambda: (lambda s: s if s and s['error'] else None)(state(ch)), 30,
                   'the page to show the refused list', step=0.3)
    check('401' in s['error'] and 'admin' in s['error'] and not s['jobs'], 'job token, no '
          'job name: %r' % s['error'])
    check(not ch.errors(allow_network=('401',)), 'console errors: %r' % ch.errors())
    log('job token: its own job only; on the other job the 401 shown and nothing drawn')


def free_port():
    with socket.socket() as sk:
        sk.bind(('127.0.0.1', 0))
        return sk.getsockname()[1]


class Proc:
    """A controller or node of the small local cluster, with its log."""

    def __init__(self, name, args, tmp):
        self.name = name
        self.log_path = os.path.join(tmp, name + '.log')
        self.logf = open(self.log_path, 'wb')
        self.p = subprocess.Popen([e.BIN] + args, stdout=self.logf, stderr=subprocess.STDOUT)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                raise e.Failure('%s did not stop within 20 s of SIGTERM' % self.name)
        self.logf.close()
        text = open(self.log_path, errors='replace').read()
        check(self.p.returncode == 0 and not any(m in text for m in e.SANITIZER_MARKS),
              '%s exited %d:\n%s' % (self.name, self.p.returncode, text[-3000:]))


def cluster_view():
    """A controller and two nodes on 127.0.0.1: the page on n0 shows both nodes with their
    heartbeats and, for recent rounds, where they were folded and the cross-node edge."""
    tmp = tempfile.mkdtemp(prefix='trib-ui-cluster-')
    ctl_port = free_port()
    gw = [free_port(), free_port()]
    procs, ch = [], None
    try:
        # Every cluster link is mutual TLS: a one-time join token per node, made (with the
        # cluster CA) before the controller starts.
        toks = []
        for _ in range(2):
            p = subprocess.run([e.BIN, 'controller', 'join-token', '--ttl', '10m', '--data-dir',
                                os.path.join(tmp, 'ctl')], capture_output=True, text=True)
            check(p.returncode == 0, 'join-token: %s' % p.stderr)
            toks.append(p.stdout.strip())
        procs.append(Proc('controller', ['controller', '--listen', 'tls+tcp://127.0.0.1:%d' %
                                         ctl_port, '--data-dir', os.path.join(tmp, 'ctl')], tmp))
        tokfile = os.path.join(tmp, 'ctl', 'admin-token')
        e.wait_for(lambda: os.path.exists(tokfile) and open(tokfile).read().strip(), 30,
                   'the controller\'s admin token', step=0.1)
        admin = open(tokfile).read().strip()
        for i in range(2):
            procs.append(Proc('n%d' % i, [
                'node', '--controller', 'tls+tcp://127.0.0.1:%d' % ctl_port, '--node-name',
                'n%d' % i, '--join-token', toks[i],
                '--peer-listen', 'tls+tcp://127.0.0.1:%d' % free_port(), '--listen',
                '127.0.0.1:%d' % gw[i], '--data-dir', os.path.join(tmp, 'n%d' % i),
                '--no-huge', '--arena-mb', '64', '--dataplane', 'shm+unix'], tmp))

        def ready(port):
            try:
                with urllib.request.urlopen('http://127.0.0.1:%d/readyz' % port, timeout=2) as r:
                    return r.status == 200
            except Exception:
                return False
        for i in range(2):
            e.wait_for(lambda: ready(gw[i]), 60, 'n%d to be ready' % i, step=0.2)
        urls = ','.join('http://127.0.0.1:%d' % p for p in gw)
        sim = subprocess.run([e.BIN, 'simulate', '--url', urls, '--data-dir',
                              os.path.join(tmp, 'ctl'), '--job', 'cl', '--clients', '6',
                              '--rounds', '5', '--params', '500'], capture_output=True,
                             text=True, timeout=120)
        check(sim.returncode == 0, 'simulate over two nodes: rc %d\n%s' % (
            sim.returncode, (sim.stdout + sim.stderr)[-3000:]))
        ch = Chrome()
        ch.open('http://127.0.0.1:%d/ui#token=%s' % (gw[0], admin))
        js = r'''JSON.stringify({
          nodes: [...document.querySelectorAll('#nodes tr[data-node]')].map(
            (r) => [...r.cells].map((c) => c.textContent)),
          rounds: [...document.querySelectorAll('#cluster table.cluster-rounds tr')].slice(1)
            .map((r) => [...r.cells].map((c) => c.textContent)),
          points: document.querySelectorAll('#charts svg.chart[data-job="cl"] circle.pt-dur')
            .length})'''

        def shown():
            v = json.loads(ch.eval(js))
            return v if len(v['nodes']) == 2 and v['rounds'] and v['points'] >= 4 else None
        try:
            v = e.wait_for(shown, 30, 'the cluster view', step=0.5)
        except e.Failure:
            ch.screenshot(os.path.join(OUT_DIR, 'ui-cluster-failed.png'))
            raise e.Failure('cluster view never complete: %s' % ch.eval(js))
        ch.screenshot(os.path.join(OUT_DIR, 'ui-cluster.png'))
        names = sorted(n[1] for n in v['nodes'])
        check(names == ['n0', 'n1'] and all(n[2] == 'live' and n[6].endswith(' ms')
                                            for n in v['nodes']), 'nodes: %r' % v['nodes'])
        # Each round: 6 updates over two gateways, folded on both, one edge to the top.
        for r in v['rounds']:
            check(r[1] == 'done' and r[2] == '6/6' and 'n0: 3' in r[4] and 'n1: 3' in r[4] and
                  r[5] in ('n0 \u2192 n1', 'n1 \u2192 n0') and r[5].endswith(r[3]),
                  'a cluster round row: %r' % r)
        errs = ch.errors()
        check(not errs, 'console errors in the cluster view:\n%s' % '\n'.join(errs))
        log('cluster view: nodes %s, %d rounds with their edge, %d chart points, no console '
            'error' % (v['nodes'], len(v['rounds']), v['points']))
    finally:
        if ch:
            ch.close()
        failures = []
        for p in reversed(procs):
            try:
                p.stop()
            except e.Failure as err:
                failures.append(str(err))
        shutil.rmtree(tmp, ignore_errors=True)
    check(not failures, '; '.join(failures))


def scenario():
    if not os.access(CHROMIUM, os.X_OK):
        skip('no %s (Debian package chromium; scripts/deps.sh installs it)' % CHROMIUM)
    if websocket is None:
        skip('no python3-websocket (Debian package; scripts/deps.sh installs it)')
    os.makedirs(OUT_DIR, exist_ok=True)
    with e.Server(extra=e.DATAPLANE_ARGS) as srv:
        check_headers(srv)
        tok_a = srv.create_job({'name': 'ui-a', 'clients_per_round': 4, 'fan_in': 2,
                                'params': P})['token']
        tok_b = srv.create_job({'name': 'ui-b', 'clients_per_round': 3, 'params': 10})['token']
        # One refusal to show: an update for a round that is not open (409).
        srv.post_update('ui-b', tok_b, 7, b'\0' * 40, expect=409)
        # Rounds go on while the page is looked at; the run is stopped at the end.
        sim_log = open(os.path.join(srv.data_dir, 'simulate.log'), 'wb')
        sim = subprocess.Popen([e.BIN, 'simulate', '--url', 'http://127.0.0.1:%d' % srv.port,
                                '--data-dir', os.path.join(srv.data_dir, 'data'), '--job',
                                'ui-a', '--clients', '4', '--rounds', '100000', '--params',
                                str(P)], stdout=sim_log, stderr=subprocess.STDOUT)
        ch = None
        try:
            e.wait_for(lambda: srv.status('ui-a')['model_round'] >= 3, 60,
                       'simulate to finish 3 rounds', step=0.2)
            check(sim.poll() is None, 'simulate stopped early (rc %s)' % sim.returncode)
            ch = Chrome()
            admin_view(srv, ch)
            job_views(srv, ch, tok_a)
            check(sim.poll() is None, 'simulate failed during the test (rc %s): %s' % (
                sim.returncode, open(sim_log.name, 'rb').read()[-2000:]))
        finally:
            if ch:
                ch.close()
            if sim.poll() is None:
                sim.send_signal(signal.SIGTERM)
                try:
                    sim.wait(10)
                except subprocess.TimeoutExpired:
                    sim.kill()
                    sim.wait()
            sim_log.close()
    cluster_view()


if __name__ == '__main__':
    e.main(scenario)
