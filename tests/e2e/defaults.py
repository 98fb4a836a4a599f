# SPDX-License-Identifier: MIT
# Issue 15: robust rules whose parameters would do nothing are refused with the smallest useful
# value named; the defaults applied are shown and survive a restart; a misnamed tensor's error
# names it and suggests the fix.
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

ST = 'application/x-safetensors'
SCHEMA = [{'name': 'fc.weight', 'shape': [4, 3], 'dtype': 'F32'},
          {'name': 'fc.bias', 'shape': [4], 'dtype': 'F32'}]


def refused(srv, spec, want):
    """POST /v1/jobs with @spec: a 400 whose error holds every string of @want."""
    st, obj, _ = srv.json('POST', '/v1/jobs', dict({'name': 'bad', 'params': 8}, **spec),
                          token=srv.admin)
    err = (obj or {}).get('error', '')
    check(st == 400 and all(w in err for w in want),
          '%r: want 400 with %r, got %d %r' % (spec, want, st, obj))
    print('refused %-58s %s' % (json.dumps(spec)[:58], err))


def robust_refusals(srv):
    cases = [
        # floor(0.1 * 8) = 0: the default trim cut nobody (issue 15's 0.33 accuracy)
        ({'algorithm': 'trimmed_mean', 'clients_per_round': 8},
         ['trim: 0.1 (the default) cuts 0 of 8 clients', 'use trim >= 0.125']),
        ({'algorithm': 'trimmed_mean', 'trim': 0.1, 'clients_per_round': 8},
         ['use trim >= 0.125']),
        ({'algorithm': 'trimmed_mean', 'trim': 0.2, 'clients_per_round': 10, 'min_clients': 4,
          'round_timeout_s': 5},
         ['cuts 0 of 4 clients', 'min_clients 4', 'use trim >= 0.25']),
        ({'algorithm': 'krum', 'f': 0, 'clients_per_round': 8},
         ['f: 0 assumes no Byzantine client', 'use f >= 1']),
        ({'algorithm': 'krum', 'clients_per_round': 4},
         ['tolerates no Byzantine client', 'f = 1 takes at least 5']),
        ({'algorithm': 'krum', 'f': 3, 'clients_per_round': 8}, ['use f <= 2']),
        ({'algorithm': 'krum', 'f': 2, 'clients_per_round': 8, 'min_clients': 6,
          'round_timeout_s': 5},
         ['needs at least 7 clients', 'min_clients 6', 'use f <= 1']),
        ({'algorithm': 'median', 'clients_per_round': 2}, ['median needs at least 3 clients']),
        ({'algorithm': 'fedadam', 'beta2': 1.5, 'clients_per_round': 2},
         ['beta2: 1.5 is out of range', 'its default is 0.99']),
    ]
    for spec, want in cases:
        refused(srv, spec, want)


def accepted_with_defaults(srv):
    """The useful neighbours are taken; GET shows the parameters the job runs with."""
    jobs = {
        'tm': ({'algorithm': 'trimmed_mean', 'trim': 0.125, 'clients_per_round': 8},
               {'trim': 0.125}),
        'kr': ({'algorithm': 'krum', 'clients_per_round': 8}, {'f': 2, 'm': 1}),
        'adam': ({'algorithm': 'fedadam', 'clients_per_round': 2},
                 {'server_lr': 0.1, 'beta1': 0.9, 'beta2': 0.99, 'tau': 0.001}),
        'yogi': ({'algorithm': 'fedyogi', 'clients_per_round': 2}, {'server_lr': 0.01}),
    }
    for name, (spec, _) in jobs.items():
        srv.create_job(dict({'name': name, 'params': 8}, **spec))
    for phase in ('created', 'after a restart'):
        for name, (_, want) in jobs.items():
            got = srv.status(name)['parameters']
            check(all(got.get(k) == v for k, v in want.items()),
                  '%s %s: parameters %r, want %r' % (name, phase, got, want))
        print('defaults shown %s: %s' % (phase, ', '.join(
            '%s %s' % (n, json.dumps(w)) for n, (_, w) in jobs.items())))
        if phase == 'created':
            srv.restart()


def misnamed_tensors(srv):
    tok = srv.create_job({'name': 'named', 'clients_per_round': 1, 'tensors': SCHEMA})['token']
    rng = np.random.default_rng(15)
    model = e.random_model(rng, SCHEMA)
    # A state_dict saved from DataParallel: every key starts with "module.".
    wrapped = {'module.' + k: v for k, v in model.items()}
    st, obj, _ = srv.post_update('named', tok, 0, e.st_encode(wrapped), samples=1, ctype=ST,
                                 expect=422)
    err = obj.get('error', '')
    for w in ("missing 2 tensors: 'fc.weight', 'fc.bias'",
              "unexpected 2 tensors: 'module.fc.weight', 'module.fc.bias'",
              "did you mean 'fc.weight' for 'module.fc.weight'?",
              "Strip the prefix 'module.'"):
        check(w in err, 'module. prefix: %r not in %r' % (w, err))
    print('update with module. keys: 422 %s' % err)
    # The same for a starting model.
    st, _, b = srv.request('PUT', '/v1/jobs/named/model', e.st_encode(wrapped),
                           {'Content-Type': ST}, tok)
    err = e.parse_json(b).get('error', '')
    check(st == 422 and "did you mean 'fc.weight' for 'module.fc.weight'?" in err,
          'PUT with module. keys: %d %r' % (st, err))
    # A transposed weight: the tensor and both shapes.
    st, obj, _ = srv.post_update('named', tok, 0, e.st_encode(model, shapes={'fc.weight': [3, 4]}),
                                 samples=1, ctype=ST, expect=422)
    want = "tensor 'fc.weight': shape [4, 3] expected, got [3, 4]"
    check(want in obj.get('error', ''), 'shape: %r' % obj)
    print('transposed weight: 422 %s' % obj['error'])
    # A dtype the server does not take names the tensor and the dtype.
    body = e.st_encode(model)
    body = body.replace(b'"fc.bias":{"dtype":"F32"', b'"fc.bias":{"dtype":"F64"')
    st, obj, _ = srv.post_update('named', tok, 0, body, samples=1, ctype=ST, expect=422)
    check("tensor 'fc.bias': dtype 'F64' is not taken" in obj.get('error', ''),
          'dtype: %r' % obj)
    # Hostile names: long, with quotes and control characters. The answer stays valid JSON,
    # short, and shows the names cut and without control bytes.
    hostile = {('"\n\\' * 60) + k: v for k, v in model.items()}
    st, hd, b = srv.request('POST', '/v1/jobs/named/updates', e.st_encode(hostile),
                            {'Content-Type': ST, 'X-Tributary-Round': '0'}, tok)
    obj = json.loads(b)
    err = obj['error']
    check(st == 422 and len(b) < 1024 and len(err) < 400 and '\n' not in err and '...' in err,
          'hostile names: %d %d bytes %r' % (st, len(b), b[:200]))
    print('hostile names: 422, %d bytes of error' % len(err))
    # Longer than a name may be (255 bytes): malformed, and the answer is as short.
    hostile = {('"\n\\' * 100) + k: v for k, v in model.items()}
    st, hd, b = srv.request('POST', '/v1/jobs/named/updates', e.st_encode(hostile),
                            {'Content-Type': ST, 'X-Tributary-Round': '0'}, tok)
    err = json.loads(b)['error']
    check(st == 400 and 'tensor name too long' in err and len(err) < 400 and '\n' not in err,
          'too long a name: %d %r' % (st, b[:200]))
    # The right names are taken: nothing refused above was folded.
    srv.post_update('named', tok, 0, e.st_encode(model), samples=1, ctype=ST)
    _, _, buf = srv.get_model('named', tok, '?after=0', timeout=30)
    e.check_model(buf, SCHEMA, model, 'the model after the refused updates')


def run():
    with e.Server(arena_mb=64) as srv:
        robust_refusals(srv)
        accepted_with_defaults(srv)
        misnamed_tensors(srv)


if __name__ == '__main__':
    e.main(run)
