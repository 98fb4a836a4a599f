// SPDX-License-Identifier: MIT
// The /ui page: polls the API's own JSON with the operator's token and draws it (plain DOM
// and SVG, no library, no inline script: the CSP forbids it). Everything shown is what the
// server answered for that token; a 401/403 is shown, never worked around.
'use strict';

(function () {
  const POLL_MS = 2000;
  const ROUNDS_SHOWN = 30;
  const SVG = 'http://www.w3.org/2000/svg';
  let timer = null;
  let busy = false;
  let clustered = null; // from /ui/node.json, once

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function show(id, on) { $(id).hidden = !on; }

  function fmtBytes(n) {
    if (n === null || n === undefined || isNaN(n)) return '-';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }

  function fmtNum(x, d) {
    if (x === null || x === undefined || !isFinite(x)) return '-';
    return Number(x).toFixed(d);
  }

  // --- the token: sessionStorage only, never the URL ---

  // For tests and bookmarks-free automation: /ui#token=T&job=J is read once, stored and
  // removed from the address bar (a fragment never reaches the server or its logs).
  function takeFragment() {
    if (!location.hash || location.hash.indexOf('token=') < 0) return;
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.get('token')) sessionStorage.setItem('trib.token', p.get('token'));
    sessionStorage.setItem('trib.job', p.get('job') || '');
    history.replaceState(null, '', location.pathname + location.search);
  }

  function token() { return sessionStorage.getItem('trib.token') || ''; }
  function jobName() { return sessionStorage.getItem('trib.job') || ''; }

  // GET @path with the token: {status, body} (body parsed as JSON, or text for /metrics).
  async function get(path, asText) {
    const r = await fetch(path, {
      headers: { Authorization: 'Bearer ' + token() },
      cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
    });
    let body = null;
    try { body = asText ? await r.text() : await r.json(); } catch (e) { body = null; }
    return { status: r.status, body: body };
  }

  function errText(what, r) {
    const msg = r.body && r.body.error ? r.body.error : 'HTTP ' + r.status;
    return what + ': ' + r.status + ' ' + msg;
  }

  // --- /metrics, read defensively: names and labels may change between versions ---

  function parseMetrics(text) {
    const out = [];
    for (const line of (text || '').split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3] || '')) !== null) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
      out.push({ name: m[1], labels: labels, value: Number(m[4]) });
    }
    return out;
  }

  function series(ms, prefix) { return ms.filter((s) => s.name.indexOf(prefix) === 0); }

  // Refusals by reason: node-wide (every job and the requests naming none) from
  // tributary_updates_rejected_total{reason}, per job from
  // tributary_job_updates_rejected_total{job,reason} (a refusal counts for the job its URL
  // names). Two families, not one summed: the node-wide one already counts every job's.
  function refusals(ms) {
    const node = {}, jobs = {};
    for (const s of ms) {
      if (!s.labels.reason || !s.value) continue;
      if (s.name === 'tributary_updates_rejected_total') {
        node[s.labels.reason] = (node[s.labels.reason] || 0) + s.value;
      } else if (s.name === 'tributary_job_updates_rejected_total' && s.labels.job) {
        const r = jobs[s.labels.job] = jobs[s.labels.job] || {};
        r[s.labels.reason] = (r[s.labels.reason] || 0) + s.value;
      }
    }
    return { node: node, jobs: jobs };
  }

  function reasonsText(r) {
    if (!r) return 'none';
    const keys = Object.keys(r).sort();
    return keys.length ? keys.map((k) => k + ' ' + r[k]).join(', ') : 'none';
  }

  // --- jobs ---

  function drawJobs(jobs, refused, admin) {
    const tb = $('jobs').tBodies[0];
    clear(tb);
    for (const j of jobs) {
      const tr = el('tr', { 'data-job': j.job, class: 'job-row' });
      const round = (j.num_rounds ? j.round + '/' + j.num_rounds : j.round) +
        ' (model v' + j.model_round + ')';
      tr.appendChild(el('td', {}, j.job));
      tr.appendChild(el('td', {}, j.algorithm));
      tr.appendChild(el('td', {}, j.state || 'open'));
      tr.appendChild(el('td', { class: 'num' }, round));
      tr.appendChild(el('td', { class: 'num' }, j.received + '/' + j.clients_per_round));
      tr.appendChild(el('td', { class: 'num' }, j.accepted_total));
      let ref;
      if (!admin) ref = 'admin token needed';
      else ref = reasonsText(refused.jobs[j.job]);
      tr.appendChild(el('td', {}, ref));
      const st = j.store && j.store.state ? j.store.state : '?';
      tr.appendChild(el('td', { class: st === 'ok' ? 'ok' : 'bad' },
        st === 'ok' ? 'ok' : st + (j.store && j.store.error ? ': ' + j.store.error : '')));
      tb.appendChild(tr);
    }
    if (!jobs.length) {
      const tr = el('tr');
      tr.appendChild(el('td', { colspan: 8, class: 'muted' }, 'no jobs'));
      tb.appendChild(tr);
    }
  }

  // --- the round chart: duration (s) and throughput (updates/s) per round, plain SVG ---

  function drawChart(job, rounds) {
    const W = 520, H = 220, L = 48, R = 52, T = 24, B = 30;
    const pts = rounds.filter((r) => r.duration_s !== null && r.duration_s !== undefined &&
      r.state === 'done');
    const svg = sv('svg', { class: 'chart', width: W, height: H, 'data-job': job,
      role: 'img', 'aria-label': 'rounds of ' + job });
    const title = sv('text', { x: L, y: 14, class: 'title' },
      job + ': round duration (s, blue) and throughput (updates/s, orange)');
    svg.appendChild(title);
    if (!pts.length) {
      svg.appendChild(sv('text', { x: L, y: H / 2 }, 'no finished round yet'));
      return svg;
    }
    const tput = (r) => r.duration_s > 0 ? r.updates / r.duration_s : 0;
    const r0 = pts[0].round, r1 = pts[pts.length - 1].round;
    const dmax = Math.max(...pts.map((r) => r.duration_s)) || 1;
    // Sub-second rounds are labelled in ms, so that the axis does not read 0.00 throughout.
    const ms = dmax * 1.1 < 1;
    if (ms) title.textContent = job + ': round duration (ms, blue) and throughput ' +
      '(updates/s, orange)';
    const tmax = Math.max(...pts.map(tput)) || 1;
    const x = (r) => L + (r1 === r0 ? (W - L - R) / 2 : (r - r0) * (W - L - R) / (r1 - r0));
    const yd = (v) => H - B - v * (H - T - B) / (dmax * 1.1);
    const yt = (v) => H - B - v * (H - T - B) / (tmax * 1.1);
    for (let k = 0; k <= 4; k++) {
      const y = H - B - k * (H - T - B) / 4;
      svg.appendChild(sv('line', { x1: L, x2: W - R, y1: y, y2: y, class: 'grid' }));
      svg.appendChild(sv('text', { x: L - 4, y: y + 4, 'text-anchor': 'end' },
        fmtNum(dmax * 1.1 * k / 4 * (ms ? 1000 : 1), ms && dmax * 1100 < 10 ? 2 : 1)));
      svg.appendChild(sv('text', { x: W - R + 4, y: y + 4 }, fmtNum(tmax * 1.1 * k / 4, 0)));
    }
    svg.appendChild(sv('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));
    svg.appendChild(sv('text', { x: L, y: H - 8 }, 'round ' + r0));
    svg.appendChild(sv('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, 'round ' + r1));
    const line = (f, cls) => sv('polyline', { class: cls,
      points: pts.map((r) => x(r.round).toFixed(1) + ',' + f(r).toFixed(1)).join(' ') });
    svg.appendChild(line((r) => yd(r.duration_s), 'line-dur'));
    svg.appendChild(line((r) => yt(tput(r)), 'line-tput'));
    for (const r of pts) {
      const c = sv('circle', { cx: x(r.round), cy: yd(r.duration_s), r: 3, class: 'pt pt-dur',
        'data-round': r.round });
      c.appendChild(sv('title', {}, 'round ' + r.round + ': ' + fmtNum(r.duration_s, 3) + ' s, ' +
        r.updates + ' updates, ' + fmtBytes(r.bytes)));
      svg.appendChild(c);
      const c2 = sv('circle', { cx: x(r.round), cy: yt(tput(r)), r: 3, class: 'pt pt-tput',
        'data-round': r.round });
      c2.appendChild(sv('title', {}, 'round ' + r.round + ': ' + fmtNum(tput(r), 1) +
        ' updates/s'));
      svg.appendChild(c2);
    }
    return svg;
  }

  // --- the live trees: what `tributary status` draws, as boxes ---

  function isWorking(f) {
    return f.state !== 'exited' && f.state !== 'warm' && f.state !== 'exiting';
  }

  function fnLabel(f) {
    const fan = f.fan_in === undefined || f.fan_in === null ? '-' : f.fan_in;
    const q = f.queue_depth === undefined || f.queue_depth === null || f.queue_depth < 0 ?
      '-' : f.queue_depth;
    return [f.role + (f.index !== undefined ? ' ' + f.index : '') + ' #' + f.fn,
      f.state + ', fan-in ' + fan, 'queue ' + q + ', msgs ' + f.messages];
  }

  function drawTree(top, mids, leaves) {
    const BW = 150, BH = 48, GX = 12, GY = 36;
    const rows = [[top], mids, leaves].filter((r) => r.length);
    const widest = Math.max(...rows.map((r) => r.length));
    const W = Math.max(widest * (BW + GX) + GX, BW + 2 * GX);
    const H = rows.length * (BH + GY) + GY / 2;
    const svg = sv('svg', { class: 'tree', width: W, height: H, 'data-job': top.job,
      'data-round': top.round });
    const pos = new Map();
    rows.forEach((row, ri) => {
      const span = row.length * (BW + GX) - GX;
      row.forEach((f, i) => {
        pos.set(f, { x: (W - span) / 2 + i * (BW + GX), y: GY / 2 + ri * (BH + GY) });
      });
    });
    // Edges: each leaf to the mid above it (by index, spread evenly), else to the top.
    const parentRow = (ri) => rows[ri - 1];
    rows.forEach((row, ri) => {
      if (!ri) return;
      const up = parentRow(ri);
      row.forEach((f, i) => {
        const p = up[Math.min(up.length - 1, Math.floor(i * up.length / row.length))];
        const a = pos.get(p), b = pos.get(f);
        svg.appendChild(sv('line', { x1: a.x + BW / 2, y1: a.y + BH, x2: b.x + BW / 2, y2: b.y,
          class: 'edge' }));
      });
    });
    for (const [f, p] of pos) {
      const g = sv('g', { class: 'fn', 'data-fn': f.fn, 'data-role': f.role,
        'data-state': f.state });
      g.appendChild(sv('rect', { x: p.x, y: p.y, width: BW, height: BH, rx: 4,
        class: 'st-' + f.state }));
      fnLabel(f).forEach((t, i) => g.appendChild(sv('text', { x: p.x + 6, y: p.y + 14 + i * 14,
        class: i ? '' : 'role' }, t)));
      svg.appendChild(g);
    }
    return svg;
  }

  function drawTrees(fns) {
    const box = $('trees');
    clear(box);
    const tops = fns.filter((f) => f.role === 'top' && isWorking(f));
    for (const t of tops) {
      const same = (f) => isWorking(f) && f.job === t.job && f.round === t.round;
      const mids = fns.filter((f) => f.role === 'mid' && same(f));
      const leaves = fns.filter((f) => f.role === 'leaf' && same(f))
        .sort((a, b) => (a.index || 0) - (b.index || 0));
      box.appendChild(el('h3', {}, 'job ' + t.job + ', round ' + t.round));
      box.appendChild(drawTree(t, mids, leaves));
    }
    const warm = fns.filter((f) => f.state === 'warm' || f.state === 'exiting').length;
    const exited = fns.filter((f) => f.state === 'exited');
    $('tree-note').textContent = tops.length + ' live tree' + (tops.length === 1 ? '' : 's') +
      ', ' + warm + ' warm function' + (warm === 1 ? '' : 's') + ' in the pool, last ' +
      exited.length + ' exited' + (exited.length ? ' (' + exited.slice(-6).map((f) =>
        f.role + ' #' + f.fn + ' of ' + f.job + ' r' + f.round).join(', ') + ')' : '') + '.';
  }

  // --- node: arena, store, refusals ---

  function bar(frac) {
    const s = sv('svg', { width: 240, height: 14, class: 'bar' });
    s.appendChild(sv('rect', { x: 0, y: 0, width: 240, height: 14, fill: '#e4e7ec' }));
    s.appendChild(sv('rect', { x: 0, y: 0, width: Math.max(0, Math.min(1, frac)) * 240,
      height: 14, fill: frac > 0.9 ? '#c0392b' : '#2a9d8f' }));
    return s;
  }

  function drawNode(ms, refused) {
    const box = $('arena');
    clear(box);
    const get1 = (prefix, lab, val) => {
      const s = series(ms, prefix).find((x) => !lab || x.labels[lab] === val);
      return s ? s.value : null;
    };
    const used = get1('tributary_arena_bytes', 'state', 'used');
    const total = get1('tributary_arena_bytes', 'state', 'total');
    const t = el('table', { id: 'node-table' });
    const row = (k, v, cls) => {
      const tr = el('tr', cls ? { class: cls } : {});
      tr.appendChild(el('th', {}, k));
      const td = el('td');
      if (v instanceof Node) td.appendChild(v); else td.textContent = v;
      tr.appendChild(td);
      t.appendChild(tr);
    };
    const arena = el('span');
    if (used !== null && total) {
      arena.appendChild(bar(used / total));
      arena.appendChild(document.createTextNode(' ' + fmtBytes(used) + ' used of ' +
        fmtBytes(total) + ' reserved (' + fmtNum(100 * used / total, 1) + '%)'));
    } else {
      arena.textContent = 'not in /metrics';
    }
    row('Arena', arena);
    const slots = get1('tributary_arena_slots');
    if (slots !== null) row('Arena slots live', slots);
    const failing = series(ms, 'tributary_store_failing').filter((s) => s.value > 0);
    const serr = series(ms, 'tributary_store_errors').reduce((a, s) => a + s.value, 0);
    const sc = el('span', { class: failing.length ? 'bad' : 'ok' },
      failing.length ? 'failing (' + failing.map((s) => s.labels.job || 'node').join(', ') + ')'
        : 'ok');
    const store = el('span');
    store.appendChild(sc);
    store.appendChild(document.createTextNode(', ' + serr + ' store errors so far'));
    row('Model store', store);
    const dp = series(ms, 'tributary_dataplane_info')[0];
    if (dp) row('Data plane', Object.values(dp.labels).join(' '));
    row('Refused updates (node-wide, by reason)', reasonsText(refused.node), 'refused');
    box.appendChild(t);
  }

  // --- cluster: nodes, heartbeats, where recent rounds were folded ---

  function drawCluster(cl) {
    const box = $('cluster');
    clear(box);
    box.appendChild(el('p', {}, 'placement ' + cl.placement + '; this node: ' + cl.this_node));
    const t = el('table', { id: 'nodes' });
    const hr = el('tr');
    for (const h of ['Rank', 'Node', 'State', 'Data plane', 'Cores', 'Arena free',
      'Heartbeat age', 'Gateway']) hr.appendChild(el('th', {}, h));
    t.appendChild(hr);
    for (const n of cl.nodes || []) {
      const tr = el('tr', { 'data-node': n.name });
      const live = n.live === true;
      for (const v of [n.rank, n.name, live ? 'live' : 'drained', n.dataplane, n.cores,
        fmtBytes(n.arena_free), live && n.heartbeat_age_ms >= 0 ? n.heartbeat_age_ms + ' ms' :
          '-', n.http]) tr.appendChild(el('td', {}, v));
      t.appendChild(tr);
    }
    box.appendChild(t);
    for (const j of cl.jobs || []) {
      box.appendChild(el('h3', {}, 'job ' + j.name + ': round ' + j.round + ', ' + j.completed +
        ' completed'));
      const rt = el('table', { class: 'cluster-rounds' });
      const h = el('tr');
      for (const x of ['Round', 'State', 'Received', 'Top', 'Folded on (updates)',
        'Cross-node edges', 'Lost']) h.appendChild(el('th', {}, x));
      rt.appendChild(h);
      for (const r of (j.rounds || []).slice(-10)) {
        const tr = el('tr');
        const nodes = Object.entries(r.nodes || {}).map(([k, v]) => k + ': ' + v.updates)
          .join(', ');
        const edges = (r.edges || []).map((e) => e[0] + ' \u2192 ' + e[1]).join(', ');
        for (const v of [r.round, r.state, r.received + '/' + r.clients_per_round, r.top,
          nodes || '-', edges || '-', (r.lost_nodes || []).join(', ') || '-'])
          tr.appendChild(el('td', {}, v));
        rt.appendChild(tr);
      }
      box.appendChild(rt);
    }
  }

  // --- one poll ---

  // A cluster answers round records one at a time (GET .../rounds/{r}); a finished round never
  // changes, so each is asked once and kept, at most ROUNDS_PER_POLL new ones a poll.
  const ROUNDS_PER_POLL = 8;
  const roundCache = new Map(); // job -> Map(round -> record), finished rounds only
  const listCache = new Map();  // job -> {version: model_round, rounds} (a single node)

  async function roundsOf(j) {
    const from = Math.max(0, j.round - ROUNDS_SHOWN);
    const base = '/v1/jobs/' + encodeURIComponent(j.job) + '/rounds';
    if (!clustered) {
      // Only finished rounds are drawn: the same model version, the same chart.
      const last = listCache.get(j.job);
      if (last && last.version === j.model_round) return last.rounds;
      const r = await get(base + '?from=' + from + '&limit=' + (ROUNDS_SHOWN + 1));
      if (r.status !== 200 || !r.body) return null;
      listCache.set(j.job, { version: j.model_round, rounds: r.body.rounds || [] });
      return r.body.rounds || [];
    }
    if (!roundCache.has(j.job)) roundCache.set(j.job, new Map());
    const have = roundCache.get(j.job);
    let asked = 0;
    for (let n = j.round - 1; n >= from && asked < ROUNDS_PER_POLL; n--) {
      if (have.has(n)) continue;
      asked++;
      const r = await get(base + '/' + n);
      if (r.status !== 200 || !r.body) return null;
      if (r.body.state === 'done') have.set(n, r.body);
    }
    for (const n of [...have.keys()]) if (n < from) have.delete(n);
    return [...have.values()].sort((a, b) => a.round - b.round);
  }

  async function poll() {
    if (busy) return;
    busy = true;
    try {
      await pollOnce();
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      fail('cannot reach the server: ' + e.message);
    } finally {
      busy = false;
    }
  }

  function fail(msg) {
    $('error').textContent = msg;
    show('error', true);
  }

  // With a job name the page shows that job only (a job token's view; no request it would
  // be refused is sent). Without one it is the admin's view: every job, the functions, the
  // arena and the cluster.
  async function pollOnce() {
    let admin = false, jobs;
    // /ui/node.json says whether this is a cluster's node: a single node (tributary up) has no
    // /v1/cluster, and a cluster's round records come one at a time.
    if (clustered === null) {
      const nj = await get('/ui/node.json');
      if (nj.status !== 200 || !nj.body) {
        fail(errText('GET /ui/node.json', nj));
        return;
      }
      clustered = nj.body.clustered === true;
    }
    if (jobName()) {
      const one = await get('/v1/jobs/' + encodeURIComponent(jobName()));
      if (one.status === 401 || one.status === 403 || one.status === 404) {
        fail(errText('job ' + jobName(), one) + (one.status === 404 ? '' :
          ' (this token does not open that job)'));
        stop(true);
        return;
      }
      if (one.status !== 200 || !one.body) {
        fail(errText('job ' + jobName(), one)); // e.g. 503 before a node joins: polled again
        return;
      }
      jobs = [one.body];
    } else {
      const list = await get('/v1/jobs');
      if (list.status === 401 || list.status === 403) {
        fail(errText('GET /v1/jobs', list) + ' (only the admin token lists jobs; with a job ' +
          'token, give the job\u2019s name too)');
        stop(true);
        return;
      }
      if (list.status !== 200 || !list.body) {
        fail(errText('GET /v1/jobs', list));
        return;
      }
      admin = true;
      jobs = list.body.jobs || [];
    }
    show('error', false);
    show('login', false);
    show('forget', true);
    $('mode').textContent = admin ? 'admin token: every job' : 'job token: job ' + jobName();
    const mtext = admin ? await get('/metrics', true) : null;
    const ms = mtext && mtext.status === 200 ? parseMetrics(mtext.body) : [];
    const refused = refusals(ms);
    drawJobs(jobs, refused, admin);
    show('jobs-section', true);
    const charts = $('charts');
    const drawn = [];
    for (const j of jobs) drawn.push([j.job, await roundsOf(j)]);
    clear(charts);
    for (const [name, rounds] of drawn) {
      if (rounds) charts.appendChild(drawChart(name, rounds));
      else charts.appendChild(el('p', { class: 'error' }, 'rounds of ' + name + ' not readable'));
    }
    show('charts-section', true);
    if (admin) {
      const f = await get('/v1/functions');
      if (f.status === 200 && f.body) drawTrees(f.body.functions || f.body || []);
      else $('tree-note').textContent = errText('GET /v1/functions', f);
      show('tree-section', true);
      drawNode(ms, refused);
      show('arena-section', true);
      if (clustered) {
        const cl = await get('/v1/cluster');
        if (cl.status === 200 && cl.body) drawCluster(cl.body);
        else $('cluster').textContent = errText('GET /v1/cluster', cl);
        show('cluster-section', true);
      }
    } else {
      for (const id of ['tree-section', 'arena-section', 'cluster-section']) show(id, false);
    }
  }

  function start() {
    stop(false);
    poll();
    timer = setInterval(poll, POLL_MS);
  }

  // @relogin: show the form again (a refused token).
  function stop(relogin) {
    if (timer) clearInterval(timer);
    timer = null;
    if (relogin) {
      show('login', true);
      for (const id of ['jobs-section', 'charts-section', 'tree-section', 'arena-section',
        'cluster-section']) show(id, false);
    }
  }

  function init() {
    takeFragment();
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      sessionStorage.setItem('trib.token', $('token').value.trim());
      sessionStorage.setItem('trib.job', $('job').value.trim());
      $('token').value = '';
      start();
    });
    $('forget').addEventListener('click', () => {
      sessionStorage.removeItem('trib.token');
      sessionStorage.removeItem('trib.job');
      stop(true);
      show('forget', false);
      show('error', false);
      $('mode').textContent = 'not signed in';
    });
    if (token()) start();
  }

  init();
})();
