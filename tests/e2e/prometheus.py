# SPDX-License-Identifier: MIT
# /metrics as Prometheus takes it: after traffic with refusals (a flood of malformed updates), a
# synchronous round and FedBuff versions, `promtool check metrics` is clean (public and admin
# views), per-job series count what was sent, no label grows per round or per function, the
# refusals are logged once a second per reason and job, and Debian's Prometheus scrapes a live
# `tributary up` and answers tributary_updates_accepted_total through its HTTP API, and every query
# of the Grafana dashboard (manifests/grafana) over the same series.
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

N = 8
SCHEMA = [{'name': 'w', 'shape': [N], 'dtype': 'F32'}]
CPR = 3
MALFORMED = 28   # the flood: 28 bodies of the wrong size
FB_K = 4


def tool(name):
    path = shutil.which(name) or '/usr/bin/' + name
    if not os.access(path, os.X_OK):
        print('SKIP: no %s (Debian package prometheus; scripts/deps.sh installs it)' % name)
        sys.exit(77)
    return path


def promtool_check(promtool, text, what):
    p = subprocess.run([promtool, 'check', 'metrics'], input=text.encode(),
                       capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode()
    check(p.returncode == 0 and not out.strip(),
          'promtool check metrics on %s: rc %d\n%s' % (what, p.returncode, out))


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def body(rng):
    return e.raw_body(SCHEMA, {'w': rng.standard_normal(N).astype(np.float32)})


def traffic(srv):
    """Refusals, one synchronous round, FedBuff versions; returns the tokens."""
    rng = np.random.default_rng(7)
    tok = srv.create_job({'name': 'sync', 'clients_per_round': CPR, 'tensors': SCHEMA})['token']
    fb = srv.create_job({'name': 'fb', 'algorithm': 'fedbuff', 'buffer_size': FB_K,
                         'max_staleness': 2, 'update': 'delta', 'tensors': SCHEMA})['token']
    for _ in range(MALFORMED):
        srv.post_update('sync', tok, 0, b'\0' * 6, expect=422)
    srv.post_update('sync', 'wrong-token', 0, body(rng), expect=401)
    srv.post_update('sync', tok, 5, body(rng), expect=409)
    srv.post_update('nosuchjob', srv.admin, 0, body(rng), expect=404)
    for _ in range(5):  # heads the HTTP layer refuses before any job is known
        r = e.raw_request(srv.port, b'BAD\x01 / HTTP/1.1\r\nHost: x\r\n\r\n')
        check(r.status == 400, 'a malformed head: %r' % r.status)
    for _ in range(CPR):
        srv.post_update('sync', tok, 0, body(rng), samples=2)
    srv.get_model('sync', tok, '?after=0&timeout=30')
    for _ in range(2 * FB_K):
        _, hd, _ = srv.get_model('fb', fb)
        srv.post_update('fb', fb, int(hd['x-tributary-round']), body(rng), samples=1)
    e.wait_for(lambda: srv.status('fb')['model_round'] >= 2, 30, 'two FedBuff versions stored')
    return tok


def check_series(srv):
    m = srv.metrics()
    acc = m['tributary_updates_accepted_total']
    check(acc == CPR + 2 * FB_K, 'accepted_total %r, want %d' % (acc, CPR + 2 * FB_K))
    want = {
        'tributary_job_updates_accepted_total{job="sync"}': CPR,
        'tributary_job_updates_accepted_total{job="fb"}': 2 * FB_K,
        'tributary_job_updates_rejected_total{job="sync",reason="shape"}': MALFORMED,
        'tributary_job_updates_rejected_total{job="sync",reason="auth"}': 1,
        'tributary_job_updates_rejected_total{job="sync",reason="round"}': 1,
        'tributary_job_updates_rejected_total{job="fb",reason="shape"}': 0,
        'tributary_job_round_duration_seconds_count{job="sync"}': 1,
        'tributary_job_round_duration_seconds_bucket{job="sync",le="+Inf"}': 1,
        'tributary_updates_rejected_total{reason="unknown_job"}': 1,
        'tributary_updates_rejected_total{reason="shape"}': MALFORMED,
        'tributary_updates_rejected_total{reason="malformed"}': 5,
    }
    for k, v in want.items():
        check(m.get(k) == v, '%s = %r, want %r' % (k, m.get(k), v))
    check(m['tributary_job_round_duration_seconds_count{job="fb"}'] >= 2, 'fb rounds')
    check(m['tributary_fn_messages_total'] > 0, 'fn_messages_total %r' %
          m['tributary_fn_messages_total'])
    # Bounded labels only: no function id, no round number, whatever the traffic was.
    for k in m:
        labels = re.findall(r'([a-z_]+)="', k)
        check('fn' not in labels and 'round' not in labels, 'unbounded label in %s' % k)
    return m


def check_refusal_log(srv, t_flood):
    lines = [ln for ln in srv.log_text().splitlines() if 'refused (shape, job sync)' in ln]
    # The flood took t_flood seconds: at most one line a second (+1 for the first).
    check(1 <= len(lines) <= int(t_flood) + 2,
          '%d refusal lines for %d refusals in %.1f s:\n%s' %
          (len(lines), MALFORMED, t_flood, '\n'.join(lines)))
    check('422' in lines[0] and 'needs' in lines[0], 'the line says why: %s' % lines[0])
    heads = [ln for ln in srv.log_text().splitlines() if 'refused (malformed, job -): 400' in ln]
    check(1 <= len(heads) <= int(t_flood) + 2, '%d lines for 5 malformed heads' % len(heads))
    for what in ('refused (auth, job sync): 401', 'refused (round, job sync): 409',
                 'refused (unknown_job, job -): 404'):
        check(what in srv.log_text(), 'no "%s" line' % what)


def held_back_line(srv, tok):
    """Two refusals a second apart: the second line says how many were held back."""
    srv.post_update('sync', tok, 1, b'\0' * 6, expect=422)
    srv.post_update('sync', tok, 1, b'\0' * 6, expect=422)
    srv.post_update('sync', tok, 1, b'\0' * 6, expect=422)
    time.sleep(1.1)
    srv.post_update('sync', tok, 1, b'\0' * 6, expect=422)
    check(re.search(r'refused \(shape, job sync\): 422 .*\(and [1-9][0-9]* more of these',
                    srv.log_text()), 'no line counting the held-back refusals:\n' +
          srv.log_text()[-3000:])


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
DASHBOARD = os.path.join(ROOT, 'manifests', 'grafana', 'tributary-dashboard.json')


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = [t['expr'] for p in dash['panels'] for t in p['targets']]
    check(len(exprs) >= 10, 'the dashboard has %d queries' % len(exprs))
    return exprs


def family(name):
    return re.sub(r'_(bucket|count|sum)$', '', name)


def check_dashboard_names(text):
    """Every series the dashboard reads is one /metrics exposes (cluster and log ones: in the
    source, as this single node without --durability disk has none)."""
    exposed = set(re.findall(r'^# TYPE (\S+) ', text, re.M))
    src = ''
    for d, _, files in os.walk(os.path.join(ROOT, 'runtime')):
        for f in files:
            if f.endswith('.c'):
                with open(os.path.join(d, f)) as fh:
                    src += fh.read()
    for expr in dashboard_exprs():
        for name in re.findall(r'tributary_[a-z0-9_]+', expr):
            fam = family(name)
            if fam.startswith(('tributary_cluster_', 'tributary_wal_')):
                check('# TYPE %s ' % fam in src, 'dashboard: %s is in no source' % fam)
            else:
                check(fam in exposed, 'dashboard: %s is not in /metrics' % fam)


def check_servicemonitor():
    """The ServiceMonitor selects the gateway Service and names a port it has."""
    import yaml
    with open(os.path.join(ROOT, 'manifests', 'monitoring', 'servicemonitor.yaml')) as f:
        sm = yaml.safe_load(f)
    with open(os.path.join(ROOT, 'manifests', 'services.yaml')) as f:
        svc = [d for d in yaml.safe_load_all(f) if d['metadata']['name'] == 'tributary-gateway'][0]
    sel = sm['spec']['selector']['matchLabels']
    check(all(svc['metadata']['labels'].get(k) == v for k, v in sel.items()),
          'ServiceMonitor selector %r does not select the gateway Service' % sel)
    ports = {p['name'] for p in svc['spec']['ports']}
    for ep in sm['spec']['endpoints']:
        check(ep['port'] in ports and ep['path'] == '/metrics', 'ServiceMonitor endpoint %r' % ep)


def prom_query(port, q):
    url = 'http://127.0.0.1:%d/api/v1/query?query=%s' % (port, urllib.parse.quote(q))
    with urllib.request.urlopen(url, timeout=10) as r:
        obj = json.load(r)
    check(obj.get('status') == 'success', 'query %s: %r' % (q, obj))
    return obj['data']['result']


def scrape(srv, prometheus, want_accepted):
    """Debian's prometheus scrapes the server each 0.5 s; the series come back by query."""
    tmp = tempfile.mkdtemp(prefix='trib-prom-')
    port = free_port()
    cfg = os.path.join(tmp, 'prometheus.yml')
    tokf = os.path.join(tmp, 'admin-token')
    with open(tokf, 'w') as f:
        f.write(srv.admin)
    with open(cfg, 'w') as f:
        f.write('global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n'
                'scrape_configs:\n'
                '  - job_name: tributary\n'
                '    static_configs:\n      - targets: ["127.0.0.1:%d"]\n'
                '    authorization:\n      credentials_file: %s\n' % (srv.port, tokf))
    logf = open(os.path.join(tmp, 'prometheus.log'), 'wb')
    p = subprocess.Popen([prometheus, '--config.file=' + cfg,
                          '--storage.tsdb.path=' + os.path.join(tmp, 'data'),
                          '--web.listen-address=127.0.0.1:%d' % port,
                          '--storage.tsdb.retention.time=1h'],
                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    try:
        def ready():
            check(p.poll() is None, 'prometheus exited %r:\n%s' % (
                p.returncode, open(os.path.join(tmp, 'prometheus.log')).read()[-3000:]))
            try:
                with urllib.request.urlopen('http://127.0.0.1:%d/-/ready' % port,
                                            timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        e.wait_for(ready, 60, 'prometheus ready', step=0.2)

        def answered():
            res = prom_query(port, 'tributary_updates_accepted_total')
            return res and float(res[0]['value'][1]) == want_accepted and res
        res = e.wait_for(answered, 60, 'tributary_updates_accepted_total == %d from '
                         'Prometheus' % want_accepted, step=0.5)
        check(res[0]['metric'].get('job') == 'tributary' and
              res[0]['metric'].get('instance') == '127.0.0.1:%d' % srv.port,
              'target labels: %r' % res[0]['metric'])
        # Our job label meets Prometheus's own: it is kept as exported_job (docs/DEPLOY.md).
        res = prom_query(port, 'tributary_job_updates_accepted_total{exported_job="sync"}')
        check(res and float(res[0]['value'][1]) == CPR, 'per job from Prometheus: %r' % res)
        # The Grafana dashboard's queries, as Grafana would send them: valid PromQL on these
        # series, and the per-job ones answer.
        nonempty = 0
        for expr in dashboard_exprs():
            res = prom_query(port, expr.replace('$__rate_interval', '1m'))
            nonempty += bool(res)
        check(nonempty >= 8, 'only %d dashboard queries returned data' % nonempty)
        with urllib.request.urlopen('http://127.0.0.1:%d/api/v1/targets' % port,
                                    timeout=10) as r:
            tg = json.load(r)['data']['activeTargets']
        check(len(tg) == 1 and tg[0]['health'] == 'up' and not tg[0]['lastError'],
              'scrape target: %r' % tg)
        e.log('prometheus on :%d scraped %s: accepted_total %d; %d of %d dashboard queries '
              'answered with data' % (port, tg[0]['scrapeUrl'], want_accepted, nonempty,
                                      len(dashboard_exprs())))
    finally:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def run():
    promtool = tool('promtool')
    prometheus = tool('prometheus')
    # promtool itself must refuse what the issue found, or a clean check proves nothing.
    bad = subprocess.run([promtool, 'check', 'metrics'],
                         input=b'# TYPE x_total counter\nx_total 1\n', capture_output=True)
    check(bad.returncode != 0 and b'no help text' in bad.stdout + bad.stderr,
          'promtool does not flag a missing HELP: %r' % (bad,))
    with e.Server() as srv:
        t0 = time.monotonic()
        tok = traffic(srv)
        t_flood = time.monotonic() - t0
        m = check_series(srv)
        check_refusal_log(srv, t_flood)
        held_back_line(srv, tok)
        for admin in (True, False):
            st, _, b = srv.request('GET', '/metrics', token=srv.admin if admin else None)
            check(st == 200, '/metrics %d' % st)
            promtool_check(promtool, b.decode(), 'the admin view' if admin else 'the public view')
            check(admin or 'job="' not in b.decode(), 'public /metrics names a job')
            if admin:
                check_dashboard_names(b.decode())
        check_servicemonitor()
        scrape(srv, prometheus, int(m['tributary_updates_accepted_total']))
        srv.check_log()


if __name__ == '__main__':
    e.main(run)
