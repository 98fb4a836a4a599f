# SPDX-License-Identifier: MIT
# Per-job algorithms through the HTTP path, each against a numpy float64 reference.
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'functions',
                                'ref'))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402
import dp as dpref  # noqa: E402  (tests/functions/ref/dp.py: the ChaCha20 normals)

N = 777
CPR = 5
ROUNDS = 3
SCHEMA = [{'name': 'a', 'shape': [7, 11], 'dtype': 'F32'},
          {'name': 'b', 'shape': [700], 'dtype': 'F32'}]


def server_ref(kind, p, x, d, st):
    """One server step in float64 (Reddi et al. 2021); st holds m, v across rounds.

    p is the job's effective parameters (GET /v1/jobs/{job} "parameters"): the defaults the
    server applied, not constants copied here."""
    lr = p['server_lr']
    if kind == 'fedavg':
        return x + lr * d
    if kind == 'fedavgm':
        st['m'] = p['momentum'] * st.get('m', 0) + d
        return x + lr * st['m']
    b1, b2, tau = p['beta1'], p['beta2'], p['tau']
    m = b1 * st.get('m', 0) + (1 - b1) * d
    v = st.get('v', np.full_like(d, tau * tau))
    if kind == 'fedadagrad':
        v = v + d * d
    elif kind == 'fedadam':
        v = b2 * v + (1 - b2) * d * d
    else:
        v = v - (1 - b2) * d * d * np.sign(v - d * d)
    st['m'], st['v'] = m, v
    return x + lr * m / (np.sqrt(v) + tau)


def run_case(srv, name, spec, rng):
    """Three rounds of `spec` against the reference; returns the final max error."""
    job = srv.create_job(dict({'name': name, 'clients_per_round': CPR, 'fan_in': 2,
                               'tensors': SCHEMA}, **spec))
    tok = job['token']
    kind = spec.get('algorithm', 'fedavg')
    delta = spec.get('update') == 'delta'
    weighted = spec.get('weighted', True)
    clip = spec.get('clip_norm')
    z = spec.get('dp_noise_multiplier', 0)
    eff = srv.status(name)['parameters']  # what the server applies, defaults included
    for k, v in spec.items():
        if k in eff and isinstance(v, (int, float)) and not isinstance(v, bool):
            check(abs(eff[k] - v) <= 1e-6 * abs(v), '%s: %s %r reported as %r' % (name, k, v,
                                                                                 eff[k]))
    x = np.zeros(N)             # the global model, float64
    st = {}
    worst = 0.0
    for r in range(ROUNDS):
        ups = []
        for i in range(CPR):
            m = e.random_model(rng, SCHEMA, scale=0.5 + i)
            n = int(rng.integers(1, 50))
            ups.append((n, m))
            body = e.st_encode(m) if i % 2 else e.raw_body(SCHEMA, m)
            srv.post_update(name, tok, r, body, samples=n,
                            ctype='application/x-safetensors' if i % 2 else
                            'application/octet-stream')
        flat = [e.flatten(SCHEMA, m).astype(np.float64) for _, m in ups]
        w = [float(n) if weighted and not z else 1.0 for n, _ in ups]
        if clip:
            flat = [u * min(1.0, clip / max(np.linalg.norm(u.astype(np.float32)
                                                           .astype(np.float64)), 1e-300))
                    for u in flat]
        s = sum(wi * u for wi, u in zip(w, flat))
        if z:
            s = s + z * clip * dpref.normals(spec['seed'], r, 0, N)
        mean = s / sum(w)
        if kind == 'fedavg' and not delta and 'server_lr' not in spec:
            x = mean
        else:
            d = mean if delta else mean - x
            x = server_ref(kind, eff, x, d, st)
        _, hd, buf = srv.get_model(name, tok, '?after=%d' % r, timeout=60)
        _, got, _ = e.st_decode(buf)
        g = e.flatten(SCHEMA, got).astype(np.float64)
        err = float(np.max(np.abs(g - x)))
        tol = 1e-4 * max(float(np.max(np.abs(x))), 1e-3)
        check(err <= tol, '%s round %d: max error %.3g > %.3g' % (name, r, err, tol))
        worst = max(worst, err / tol)
        # The next round trains from the served model, as a client would.
        x = g
    status = srv.status(name)
    check(status['algorithm'] == kind, '%s: status algorithm %r' % (name, status['algorithm']))
    if z:
        pv = status.get('privacy')
        check(pv and pv['rounds'] == ROUNDS and pv['epsilon'] > 0,
              '%s: privacy not reported: %r' % (name, pv))
    return worst


def run():
    rng = np.random.default_rng(606)
    cases = [
        ('avg-unweighted', {'weighted': False}),
        ('avg-delta', {'update': 'delta'}),
        ('avg-lr', {'server_lr': 0.5}),
        ('avgm', {'algorithm': 'fedavgm', 'server_lr': 0.7, 'momentum': 0.8}),
        ('adagrad', {'algorithm': 'fedadagrad', 'server_lr': 0.05}),
        ('adam', {'algorithm': 'fedadam', 'server_lr': 0.05, 'beta1': 0.8, 'beta2': 0.95}),
        ('yogi', {'algorithm': 'fedyogi', 'server_lr': 0.05, 'tau': 0.01}),
        ('adam-delta', {'algorithm': 'fedadam', 'update': 'delta', 'server_lr': 0.1}),
        # The defaults (Flower's eta, Reddi et al.'s betas), as the job reports them.
        ('adam-defaults', {'algorithm': 'fedadam'}),
        ('yogi-defaults', {'algorithm': 'fedyogi', 'update': 'delta'}),
        ('avgm-defaults', {'algorithm': 'fedavgm'}),
        ('clipped', {'clip_norm': 3.0}),
        ('dp', {'clip_norm': 2.0, 'dp_noise_multiplier': 0.5, 'dp_delta': 1e-5,
                'seed': 42}),
    ]
    with e.Server(arena_mb=64) as srv:
        for name, spec in cases:
            worst = run_case(srv, name, spec, rng)
            print('%-16s OK (worst error %.2f of the limit)' % (name, worst))
        # The documented defaults (docs/ALGORITHMS.md), as GET reports them.
        for name, want in (('adam-defaults', {'server_lr': 0.1, 'beta1': 0.9, 'beta2': 0.99,
                                              'tau': 1e-3}),
                           ('yogi-defaults', {'server_lr': 0.01, 'beta1': 0.9, 'beta2': 0.99,
                                              'tau': 1e-3}),
                           ('avgm-defaults', {'server_lr': 1.0, 'momentum': 0.9})):
            got = srv.status(name)['parameters']
            check(all(got[k] == v for k, v in want.items()),
                  '%s: parameters %r, want %r' % (name, got, want))
        # Bad parameters: 400 naming the field.
        for spec, field in (({'algorithm': 'nope'}, 'algorithm'),
                            ({'algorithm': 'fedadam', 'beta1': 1.5}, 'beta1'),
                            ({'momentum': 0.5}, 'momentum'),
                            ({'weighted': 'yes'}, 'weighted'),
                            ({'update': 'grad'}, 'update'),
                            ({'clip_norm': -1}, 'clip_norm'),
                            ({'dp_noise_multiplier': 1.0}, 'dp_noise_multiplier'),
                            ({'server_lr': 0}, 'server_lr'),
                            ({'bogus': 1}, 'bogus'),
                            ({'trim': 0.1}, 'trim')):
            st, obj, _ = srv.json('POST', '/v1/jobs', dict({'name': 'bad',
                                                            'clients_per_round': 2,
                                                            'params': 4}, **spec),
                                  token=srv.admin)
            check(st == 400 and field in obj.get('error', ''),
                  '%r: want 400 naming %s, got %d %r' % (spec, field, st, obj))
        # The optimiser's state survives a restart: one more round continues the trajectory.
        srv.restart()
        check(srv.status('adam')['round'] == ROUNDS, 'adam did not resume at its round')


if __name__ == '__main__':
    e.main(run)
