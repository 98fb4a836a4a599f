# SPDX-License-Identifier: MIT
# Secure aggregation at the acceptance's size (issue 19): 100 clients over HTTP, the masked inputs
# folded by the job's function tree. Round 0 drops 10% of the clients still in after each stage
# (after advertise, after shares, after the masked input), round 1 drops 30%: each time the record
# counts the survivors' inputs, its weight is the exact sum of their n_u (a masked coordinate,
# folded by the tree in u32), and the model is bit for bit float32(exact sum * scale - clip), the
# survivors' weighted mean of quantised updates. The stage deadlines end on the server's timer:
# round 1 ends with no request after the last reveal (the log says so before any status poll).
# In round 0 every function is killed (kill -9) while the tree holds the masked inputs: the sum
# is exact all the same.
# Round 2 falls below the threshold at the unmask stage: it fails with a clear status, nothing is
# unmasked (no model), and round 3 works. The masked bodies still held by open leaves are read
# back from the arena file, whole, and their bytes pass a chi-square test of uniformity (256 bins,
# fail below p = 1e-3; the unmasked words as a control fail it). No client's unmasked quantised
# vector is in the data dir, the log or the arena.
# The stage deadline (round_timeout_s), which every dropout waits for, is derived from a timed pass
# of the clients under the machine's load at the start (stage_deadline_s): short on an idle
# machine, longer on a loaded one, where a fixed 5 s was a flake risk; each round logs its
# stages' passes against it.
import math
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'clients',
                                'python'))
import tributary_secagg as sa  # noqa: E402

N = 100
DIM = 1000
# With 30% leaving after each of three stages a client of U2 keeps about 0.49 k neighbours that
# reveal (~10 of k = 20): the test draws its dropouts so that each keeps t = 4 (pick_drops).
SA = {'threshold': 4, 'neighbours': 20, 'clip': 1.0, 'bits': 16}
P_MIN = 1e-3
# The stage deadline (round_timeout_s) against one timed pass of the clients (stage_deadline_s).
DEADLINE_FLOOR_S = 3
DEADLINE_PER_PASS = 5
TIMEOUT_S = None  # the stage deadline: run() sets it from stage_deadline_s()


def stage_deadline_s(n, url, token='x', m=30):
    """round_timeout_s for @n clients driven one after the other by one process, and the pass
    it was derived from. A client dropped on purpose is dropped by a stage's deadline, so every
    live client of that stage must be in before it: the deadline must outlast one pass of the
    costliest stage (share or masked input) over @n clients, under the machine's load now.
    That pass is timed here on @m clients of a real round in this process (their share and
    masked-input crypto against k = SA['neighbours'] neighbours, fresh keys each, scaled to
    @n) plus two requests per client to @url (a stage's poll and post). The deadline is
    DEADLINE_PER_PASS passes, at least DEADLINE_FLOOR_S: a later stage may run while the
    machine is that much busier than when it was timed. Returns (deadline s, pass s)."""
    import urllib.error
    import urllib.request
    m = min(m, n)
    k = min(SA['neighbours'], m - 1)
    # Warm: the first key, agreement and cipher of a process load OpenSSL's providers.
    w = sa.SecAggClient(0, 0, 1)
    w.share({1: (sa.keypair()[2], sa.keypair()[2])})
    t0 = time.monotonic()
    cl, keys = [], {}
    for u in range(m):
        c = sa.SecAggClient(u, 0, SA['threshold'])
        a, b = sa.keypair(), sa.keypair()
        c.set_keys(a[:2], b[:2])
        cl.append(c)
        keys[u] = (a[2], b[2])
    nb = sa.graph(list(range(m)), k, bytes(32))
    t_keys = time.monotonic() - t0
    t0 = time.monotonic()
    cts = {u: cl[u].share({v: keys[v] for v in nb[u]}) for u in range(m)}
    t_share = time.monotonic() - t0
    x = np.arange(DIM + 1, dtype=np.uint32)
    t0 = time.monotonic()
    for u in range(m):
        cl[u].masked(x, {v: cts[v][u] for v in nb[u]}, keys)
    t_masked = time.monotonic() - t0
    t0 = time.monotonic()
    for _ in range(2 * m):
        req = urllib.request.Request(url.rstrip('/') + '/v1/jobs/calibrate/secagg/keys',
                                     headers={'Authorization': 'Bearer ' + token})
        try:
            urllib.request.urlopen(req, timeout=30).read()
        except urllib.error.HTTPError as err:
            err.read()
    t_http = time.monotonic() - t0
    pass_s = (max(t_keys, t_share, t_masked) + t_http) * n / m
    return max(DEADLINE_FLOOR_S, int(math.ceil(DEADLINE_PER_PASS * pass_s))), pass_s


def chi2_p(data):
    """p-value of Pearson's chi-square test of @data's bytes against uniform (255 df, the
    Wilson-Hilferty normal approximation: good to a few percent at these df)."""
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    exp = len(data) / 256.0
    x2 = float(((counts - exp) ** 2 / exp).sum())
    k = 255.0
    z = ((x2 / k) ** (1.0 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return x2, 0.5 * math.erfc(z / math.sqrt(2))


def send_input(s, x, n):
    """SecAggSession.send_input, keeping the masked words the server receives."""
    obj = s._wait('shares', 3 * TIMEOUT_S)
    inbox = {m['from']: bytes.fromhex(m['ct']) for m in obj['shares']}
    q = sa.quantise(x, SA['clip'], SA['bits']).astype(np.uint64)
    words = np.concatenate([q * n, [n]]).astype(np.uint32)
    y = s.client.masked(words, inbox, s.keys).astype('<u4').tobytes()
    s._call('input', 'POST', '/input', y, 'application/octet-stream')
    return y, words.astype('<u4').tobytes()


def drop(rng, live, frac):
    k = int(round(frac * len(live)))
    return set(rng.choice(len(live), size=k, replace=False).tolist()) if k else set()


def arena_bytes(srv):
    files = srv.arena_files()
    check(files, 'no arena file in the log')
    with open(files[-1], 'rb') as f:
        return f.read()


def pick_drops(rng, live, frac, t):
    """After the shares: who leaves before the input (a) and after it (b), frac of those still
    in each time, drawn again until every client of U2 keeps t neighbours that reveal (the test
    knows the graph: each session got its neighbours). The failure below t is round 2's."""
    for _ in range(200):
        a = drop(rng, live, frac)
        rest = [i for i in range(len(live)) if i not in a]
        b = {rest[i] for i in drop(rng, rest, frac)}
        reveal = {live[i].client.u for i in rest if i not in b}
        if all(sum(v in reveal for v in s.keys) >= t for s in live):
            return a, b
    raise e.Failure('no feasible dropouts in 200 draws: raise neighbours')


class Passes:
    """Each stage's pass over its clients, timed from its first client's answer to its last's
    (the first one's wait for the stage to open is not the pass), to log against the deadline."""

    def __init__(self):
        self.s = {}

    def run(self, name, items, fn):
        """fn(item) for each of @items, one after the other; the time from the first's return.
        A planned survivor refused on the way fails the test saying how far into the pass it
        was, against the deadline (the machine slowed down past what the deadline allows)."""
        t0 = None
        out = []
        for k, it in enumerate(items):
            try:
                out.append(fn(it))
            except sa.SecAggError as err:
                raise e.Failure('stage %s: client %d of %d refused %.2f s into the pass (the '
                                'stage deadline is %s s): %s'
                                % (name, k + 1, len(items), time.monotonic() - t0 if t0 else 0.0,
                                   TIMEOUT_S, err))
            if t0 is None:
                t0 = time.monotonic()
        self.s[name] = time.monotonic() - t0 if t0 is not None else 0.0
        return out

    def text(self, deadline):
        return ', '.join('%s %.2f s' % kv for kv in self.s.items()) + \
            ' (the stage deadline is %d s)' % deadline


def secure_round(srv, url, tokens, rng, frac, rnd, leave_unmask=None, kill=False):
    """Every client joins; @frac of those still in leave after each stage. Returns what the
    survivors sent (x, n, masked bytes, unmasked word bytes), the arena as it was when every
    input was in, the seconds it took and its stages' passes."""
    t0 = time.monotonic()
    ps = Passes()
    sess = [sa.SecAggSession(url, 'sec', t, poll_s=0.02) for t in tokens]
    ps.run('keys', sess, lambda s: s.join())
    gone = drop(rng, sess, frac)
    live = [s for i, s in enumerate(sess) if i not in gone]
    ps.run('shares', live, lambda s: s.send_shares(timeout=3 * TIMEOUT_S))
    if leave_unmask is None:
        gone_in, gone_un = pick_drops(rng, live, frac, SA['threshold'])
    else:
        gone_in, gone_un = set(), set(range(leave_unmask, len(live)))
    todo = []
    for i, s in enumerate(live):
        if i in gone_in:
            continue
        x = rng.uniform(-1.2, 1.2, DIM).astype(np.float32)
        n = int(rng.integers(1, 50))
        todo.append((s, x, n, i))
    sent = ps.run('inputs', todo, lambda t: (t[0], t[1], t[2]) + send_input(*t[:3]) + (t[3],))
    # Every input is in: the masked bodies are in the arena now (read before the slots go back).
    arena = arena_bytes(srv)
    if kill:
        # The tree is mid-round (the masked stage is open: leaves hold inputs, the top waits):
        # kill -9 every function; the node starts others that fold the same slots again.
        pids = e.fn_children(srv.pid)
        check(pids, 'no function alive in the masked stage')
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        e.log('killed %d functions (kill -9) with %d masked inputs in the tree'
              % (len(pids), len(sent)))
    ps.run('unmask', [t for t in sent if t[5] not in gone_un],
           lambda t: t[0].send_unmask(timeout=3 * TIMEOUT_S))
    return sent, arena, time.monotonic() - t0, ps


def expected(sent):
    """The exact u32 sum of the inputs and what the server's dequantisation makes of it."""
    total = np.zeros(DIM + 1, dtype=np.uint64)
    for t in sent:
        total += np.frombuffer(t[4], dtype='<u4').astype(np.uint64)
    total %= 1 << 32
    w = int(total[DIM])
    qmax = (1 << SA['bits']) - 1
    scale = 2.0 * SA['clip'] / qmax / w
    model = (total[:DIM].astype(np.float64) * scale - SA['clip']).astype(np.float32)
    return w, model


def check_round(srv, sent, rnd, what):
    w, ref = expected(sent)
    check(w == sum(t[2] for t in sent), '%s: the weight word is not the sum of n_u' % what)
    st, rec, _ = srv.json('GET', '/v1/jobs/sec/rounds/%d' % rnd, token=srv.admin)
    check(st == 200 and rec.get('updates') == len(sent) and rec.get('total_weight') == w,
          '%s: record %d %r: want %d inputs of weight %d' % (what, st, rec, len(sent), w))
    stc, _, buf = srv.request('GET', '/v1/jobs/sec/model', token=srv.admin)
    check(stc == 200, 'GET model: %d' % stc)
    got = e.st_decode(buf)[1]['w']
    bad = int(np.count_nonzero(got != ref))
    check(bad == 0, '%s: %d of %d values differ from float32(exact sum * scale - clip); max %g'
          % (what, bad, DIM, float(np.max(np.abs(got - ref)))))
    # And that is the survivors' weighted mean of their quantised updates.
    qmax = (1 << SA['bits']) - 1
    q = [sa.quantise(t[1], SA['clip'], SA['bits']).astype(np.float64) for t in sent]
    mean = sum(t[2] * qi for t, qi in zip(sent, q)) / w * 2 * SA['clip'] / qmax - SA['clip']
    err = float(np.max(np.abs(got - mean)))
    check(err <= 1e-6, '%s: %g from the weighted quantised mean' % (what, err))
    return w, err


def masked_in_arena(arena, sent, what):
    """The masked bodies still in the arena file are there as sent; their bytes look uniform.

    Only the inputs of leaves that have not handed off are still in their slots: a leaf that
    reached its fan-in folded its inputs and gave their slots back, and the arena hands a freed
    slot to the next body at once (warm reuse, shm/shm_arena.c; sanitized builds also poison it).
    Returns the uniformity figures and how many bodies were found."""
    # Found by their first 32 bytes, as no_plain_vector looks for the unmasked ones.
    found = aligned_hits(arena, [t[3][:32] for t in sent])
    for t in sent:
        check(t[3][:32] not in found or arena.find(t[3]) >= 0,
              '%s: a masked body found in the arena is not whole' % what)
    # The control that the search finds what is there, whatever the tree has freed by now:
    # a masked body at an aligned offset inside the arena's own bytes.
    probe = arena[:1 << 20] + sent[0][3] + arena[1 << 20:2 << 20]
    check(aligned_hits(probe, [sent[0][3][:32]]) == {sent[0][3][:32]},
          '%s: the search misses a masked body that is there' % what)
    x2, p = chi2_p(b''.join(t[3] for t in sent))
    check(p >= P_MIN, '%s: masked bodies not uniform: chi2 %.1f, p %.2g' % (what, x2, p))
    cx2, cp = chi2_p(b''.join(t[4] for t in sent))
    check(cp < P_MIN, '%s: the control (unmasked words) passed the uniformity test' % what)
    return x2, p, cp, len(found)


def aligned_hits(arena, needles):
    """The @needles (32 bytes each) found at 4-byte aligned offsets of @arena."""
    words = np.frombuffer(arena[:len(arena) // 8 * 8], dtype='<u4')
    keys = (words[:-1].astype(np.uint64) << np.uint64(32)) | words[1:].astype(np.uint64)
    want = np.array([int.from_bytes(nd[:4], 'little') << 32 | int.from_bytes(nd[4:8], 'little')
                     for nd in needles], dtype=np.uint64)
    nset = set(needles)
    return {arena[4 * i:4 * i + 32] for i in np.nonzero(np.isin(keys, want))[0].tolist()} & nset


def no_plain_vector(srv, arena, sent_all):
    """Words 1..8 of each client's n_u * q (32 bytes no masked or model file holds by chance):
    nowhere in the log or the data dir; in the arena, where everything sits at 4-byte aligned
    offsets, at no aligned offset (one numpy pass for all clients, then a full compare)."""
    places = [('log', srv.log_text().encode())]
    for root, _, files in os.walk(srv.data_dir):
        for f in files:
            try:
                places.append((os.path.join(root, f), open(os.path.join(root, f), 'rb').read()))
            except OSError:
                pass
    needles = [t[4][4:36] for t in sent_all]
    for name, data in places:
        for nd in needles:
            check(nd not in data, '%s holds a client\'s quantised update' % name)
    found = aligned_hits(arena, needles)
    check(not found, 'the arena holds %d clients\' quantised updates' % len(found))
    return len(places) + 1


def comm(pid):
    with open('/proc/%d/comm' % pid) as f:
        return f.read().strip()


def sa_functions(srv):
    """The unmasking ran on tributary-fn-sa (the only binary with it), and a plain tributary-fn
    did the folding: both are among the node's warm functions after round 0. Each -sa is then
    killed (-9): round 1's unmasking must start a new one (docs/ARCHITECTURE.md, "The secure
    function binary")."""
    fns = e.fn_children(srv.pid)
    sa = [p for p in fns if comm(p) == 'tributary-fn-sa']
    check(sa, 'no tributary-fn-sa among the functions after an unmasking: %r' %
          [(p, comm(p)) for p in fns])
    check(any(comm(p) == 'tributary-fn' for p in fns), 'no plain tributary-fn folded round 0')
    for p in sa:
        exe = os.path.realpath('/proc/%d/exe' % p)
        check(os.path.basename(exe) == 'tributary-fn-sa', 'function %d runs %s' % (p, exe))
        if e.FN_BIN:
            check(os.path.dirname(exe) == os.path.dirname(os.path.realpath(e.FN_BIN)),
                  'tributary-fn-sa %s is not beside tributary-fn %s' % (exe, e.FN_BIN))
        os.kill(p, signal.SIGKILL)
    e.log('round 0 unmasked on %d tributary-fn-sa (killed -9 while warm), folded on %d '
          'tributary-fn' % (len(sa), len(fns) - len(sa)))


def run():
    global TIMEOUT_S
    rng = np.random.default_rng(1919)
    with e.Server(arena_mb=64) as srv:
        url = 'http://127.0.0.1:%d' % srv.port
        TIMEOUT_S, pass_s = stage_deadline_s(N, url)
        e.log('one pass of %d clients (one stage, one process) takes %.2f s here: stage '
              'deadline %d s' % (N, pass_s, TIMEOUT_S))
        srv.create_job({'name': 'sec', 'clients_per_round': N, 'client_auth': 'required',
                        'round_timeout_s': TIMEOUT_S, 'secagg': SA,
                        'tensors': [{'name': 'w', 'shape': [DIM], 'dtype': 'F32'}]})
        tokens = []
        for i in range(N):
            st, obj, _ = srv.json('POST', '/v1/jobs/sec/clients', {'client': 'c%03d' % i},
                                  token=srv.admin)
            check(st == 201, 'mint: %d %r' % (st, obj))
            tokens.append(obj['token'])
        sent_all = []
        for rnd, frac in ((0, 0.10), (1, 0.30)):
            what = 'round %d (%d%% dropouts per stage)' % (rnd, int(frac * 100))
            sent, arena, secs, ps = secure_round(srv, url, tokens, rng, frac, rnd,
                                                 kill=rnd == 0)
            sent_all += sent
            x2, p, cp, held = masked_in_arena(arena, sent, what)
            if rnd == 1:
                # No request from here on: the server's timer ends the unmask stage.
                e.wait_for(lambda: 'round 1: secure round of' in srv.log_text(), 3 * TIMEOUT_S,
                           'the timer to end round 1 with no request')
            e.wait_for(lambda: srv.status('sec')['model_round'] == rnd + 1, 3 * TIMEOUT_S,
                       'model of round %d' % rnd)
            w, err = check_round(srv, sent, rnd, what)
            if rnd == 0:
                sa_functions(srv)
            took = [ln for ln in srv.log_text().splitlines()
                    if 'round %d: secure round of' % rnd in ln]
            e.log('%s: %d of %d inputs folded by the tree, weight %d exact, model bit-identical '
                  'to the exact sum dequantised (%.1g from the quantised mean); %d masked bodies '
                  'still held in the arena, chi2 %.1f p %.3f (control p %.1g); client side %.1f s '
                  '(passes: %s); server: %s' % (what, len(sent), N, w, err, held, x2, p,
                                                cp, secs, ps.text(TIMEOUT_S),
                                                took[-1].split('job sec ')[-1] if took else '?'))
        # Below the threshold at the unmask stage: only t - 1 clients reveal.
        sent, arena, _, _ = secure_round(srv, url, tokens, rng, 0.0, 2,
                                         leave_unmask=SA['threshold'] - 1)
        sent_all += sent
        st = e.wait_for(lambda: srv.status('sec')['secagg'].get('last_failure') and
                        srv.status('sec'), 3 * TIMEOUT_S, 'round 2 to fail')
        why = st['secagg']['last_failure']['why']
        check(st['model_round'] == 2 and st['secagg']['last_failure']['round'] == 2 and
              'threshold' in why and 'round_in_progress' not in st['secagg'],
              'below the threshold: %r' % st['secagg'])
        st, rec, _ = srv.json('GET', '/v1/jobs/sec/rounds/2', token=srv.admin)
        check(st == 200 and rec.get('state') == 'open' and rec.get('updates') == 0,
              'the failed round 2 left a record or a version: %d %r' % (st, rec))
        e.log('round 2 below the threshold: %s' % why)
        # A later round works (its number is the next version's).
        sent, arena, _, _ = secure_round(srv, url, tokens, rng, 0.0, 2)
        sent_all += sent
        e.wait_for(lambda: srv.status('sec')['model_round'] == 3, 3 * TIMEOUT_S, 'round 3')
        w, err = check_round(srv, sent, 2, 'the round after the failure')
        e.log('the round after the failure: %d inputs, weight %d, exact' % (len(sent), w))
        n = no_plain_vector(srv, arena_bytes(srv), sent_all)
        e.log('no client\'s quantised vector in %d places (arena, log, data dir files)' % n)


if __name__ == '__main__':
    e.main(run)
