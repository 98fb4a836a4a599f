# SPDX-License-Identifier: MIT
# The API against its contract: GET /v1/openapi.json is runtime/api/openapi.json byte for byte,
# then every operation in it is driven against a live `tributary up`, with its error statuses,
# and each answer is checked against the document: the status is documented for that operation,
# the Content-Type is one of the response's media types, a JSON body validates against the
# response's schema (JSON Schema 2020-12, Debian's python3-jsonschema) and documented headers
# have their type. Every operation of the document must have been driven, so neither side can
# gain or lose an endpoint silently; and every path the router's code names (the strcmp/strncmp
# literals on the request path in runtime/api/*.c) must be in the document, so a route added to
# the C without a line in the document fails here even before anything drives it.
import io
import json
import os
import re
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

try:
    import jsonschema
except ImportError:
    print('SKIP: no python3-jsonschema (scripts/deps.sh --test installs it)')
    sys.exit(77)

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'runtime', 'api',
                   'openapi.json')
API_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'runtime', 'api')
SCHEMA = [{'name': 'w', 'shape': [4], 'dtype': 'F32'}]
SCHEMA2 = [{'name': 'a', 'shape': [2], 'dtype': 'F32'}, {'name': 'b', 'shape': [3], 'dtype': 'F32'}]


class Contract:
    def __init__(self, doc):
        self.doc = doc
        self.resolver = jsonschema.RefResolver.from_schema(doc)
        self.seen = set()        # (method, template) driven
        self.statuses = set()    # (method, template, status) seen
        self.checked = 0

    def deref(self, obj):
        while isinstance(obj, dict) and '$ref' in obj:
            _, obj = self.resolver.resolve(obj['$ref'])
        return obj

    def template(self, path):
        """The document's path template matching a concrete path (query stripped)."""
        path = path.split('?', 1)[0]
        for t in self.doc['paths']:
            rx = '^' + re.sub(r'\\\{[a-z]+\\\}', '[^/]+', re.escape(t)) + '$'
            if re.match(rx, path):
                return t
        return None

    def validate(self, schema, value, what):
        try:
            jsonschema.Draft202012Validator(schema, resolver=self.resolver).validate(value)
        except jsonschema.ValidationError as err:
            raise e.Failure('%s: %s at %s\nbody: %s' % (what, err.message,
                                                        '/'.join(map(str, err.absolute_path)),
                                                        json.dumps(value)[:600]))

    def check(self, method, path, st, hd, body):
        t = self.template(path)
        what = '%s %s -> %d' % (method, path, st)
        check(t is not None, '%s: the path is not in the document' % what)
        item = self.doc['paths'][t]
        m = method.lower()
        if m not in item:
            # Not an operation of the document: the router must say so with 405.
            check(st == 405, '%s: %s is not documented on %s' % (what, method, t))
            self.validate(self.doc['components']['schemas']['Error'], json.loads(body), what)
            self.checked += 1
            return
        op = item[m]
        check(str(st) in op['responses'], '%s: status %d is not documented (has %s)' %
              (what, st, sorted(op['responses'])))
        resp = self.deref(op['responses'][str(st)])
        content = resp.get('content')
        ctype = (hd.get('content-type') or '').split(';')[0].strip().lower()
        if not content:
            check(not body, '%s: a body where the document has none: %r' % (what, body[:200]))
        else:
            check(ctype in content, '%s: Content-Type %r, the document has %s' %
                  (what, ctype, sorted(content)))
            schema = content[ctype].get('schema', {})
            if ctype == 'application/json':
                try:
                    obj = json.loads(body)
                except ValueError:
                    raise e.Failure('%s: not JSON: %r' % (what, body[:300]))
                self.validate(schema, obj, what)
            else:
                check(len(body) > 0, '%s: empty %s body' % (what, ctype))
        for name, h in (resp.get('headers') or {}).items():
            h = self.deref(h)
            v = hd.get(name.lower())
            if v is None:
                continue
            s = h.get('schema', {})
            val = int(v) if s.get('type') == 'integer' and re.fullmatch(r'-?[0-9]+', v) else v
            self.validate(s, val, '%s: header %s' % (what, name))
        self.seen.add((m, t))
        self.statuses.add((m, t, st))
        self.checked += 1


def served_paths():
    """Concrete paths the router serves, read from its C: `path` is the request path (on_head,
    rt_api_ui.c), `slash` what follows /v1/jobs/{job} (route_job and the handlers it calls).
    A strncmp literal ending in '/' is a prefix: one more segment (a parameter) follows it; any
    other strncmp literal (e.g. "/secagg") is a family of paths: returned as (path, True)."""
    out = set()
    rx = re.compile(r'\b(strn?cmp)\((path|slash), "(/[^"]*)"')
    for name in sorted(os.listdir(API_DIR)):
        if not name.endswith('.c'):
            continue
        with open(os.path.join(API_DIR, name)) as f:
            for fn, var, lit in rx.findall(f.read()):
                base = '' if var == 'path' else '/v1/jobs/x'
                family = fn == 'strncmp' and not lit.endswith('/')
                if lit.endswith('/'):
                    lit = lit + 'x' if fn == 'strncmp' else lit.rstrip('/')
                out.add((base + lit, family))
    return out


def run():
    with open(SRC, 'rb') as f:
        src = f.read()
    doc = json.loads(src)
    c0 = Contract(doc)
    served = served_paths()
    check(len(served) >= 15, 'found only %d served paths in runtime/api/*.c: %r' %
          (len(served), sorted(served)))
    concrete = [t.replace('{job}', 'x') for t in doc['paths']]
    undocumented = sorted(p for p, family in served if c0.template(p) is None and
                          not (family and any(t.startswith(p + '/') for t in concrete)))
    check(not undocumented, 'the router serves paths the document lacks: %r' % undocumented)
    with e.Server() as srv:
        c = Contract(doc)
        adm = srv.admin

        def call(method, path, body=None, headers=None, token=None, expect=None):
            st, hd, b = srv.request(method, path, body, headers, token)
            if expect is not None:
                check(st == expect, '%s %s: want %d, got %d %r' % (method, path, expect, st,
                                                                   b[:300]))
            c.check(method, path, st, hd, b)
            return st, hd, b

        def jcall(method, path, obj=None, token=None, expect=None, headers=None):
            h = dict(headers or {})
            body = None
            if obj is not None:
                body = json.dumps(obj).encode()
                h['Content-Type'] = 'application/json'
            st, hd, b = call(method, path, body, h, token, expect)
            return st, (json.loads(b) if b else None), hd

        # The document served is the file in the tree.
        st, hd, b = call('GET', '/v1/openapi.json', expect=200)
        check(b == src, 'GET /v1/openapi.json differs from runtime/api/openapi.json')
        call('GET', '/healthz', expect=200)
        for p in ('/healthz', '/readyz', '/v1/openapi.json'):
            call('HEAD', p, expect=200)
        call('GET', '/readyz', expect=200)
        call('GET', '/metrics', expect=200)
        call('GET', '/v1/functions', token=adm, expect=200)
        call('GET', '/v1/functions', expect=401)
        call('GET', '/v1/cluster', token=adm, expect=404)
        call('POST', '/healthz', expect=405)

        # The operator page: no token, its files, what it says about the node.
        for p in ('/ui', '/ui/index.html', '/ui/ui.js', '/ui/ui.css'):
            call('GET', p, expect=200)
        _, node, _ = jcall('GET', '/ui/node.json', expect=200)
        check(node == {'clustered': False}, 'GET /ui/node.json on tributary up: %r' % node)
        call('GET', '/ui/nosuch.js', expect=404)
        call('POST', '/ui', expect=405)
        call('DELETE', '/ui/node.json', expect=405)

        # Jobs.
        spec = {'name': 'c1', 'clients_per_round': 2, 'tensors': SCHEMA}
        _, made, _ = jcall('POST', '/v1/jobs', spec, adm, 201)
        tok = made['token']
        jcall('POST', '/v1/jobs', spec, adm, 409)
        jcall('POST', '/v1/jobs', {'name': 'bad', 'clients_per_round': 0, 'params': 4}, adm, 400)
        jcall('POST', '/v1/jobs', spec, None, 401)
        call('POST', '/v1/jobs', b'{', {'Content-Type': 'application/json'}, adm, 400)
        jcall('GET', '/v1/jobs', None, adm, 200)
        jcall('GET', '/v1/jobs', None, tok, 401)
        jcall('GET', '/v1/jobs/c1', None, tok, 200)
        jcall('GET', '/v1/jobs/c1', None, 'nope', 401)
        jcall('GET', '/v1/jobs/nosuch', None, adm, 404)

        # A starting model, then its errors.
        st_body = e.st_encode({'w': np.arange(4, dtype=np.float32)})
        call('PUT', '/v1/jobs/c1/model', st_body, {'Content-Type': 'application/x-safetensors'},
             tok, 200)
        call('PUT', '/v1/jobs/c1/model', st_body, {'Content-Type': 'text/plain'}, tok, 415)
        call('PUT', '/v1/jobs/c1/model', b'\0' * 5, {'Content-Type': 'application/octet-stream'},
             tok, None)

        # Clients and tasks.
        _, cl, _ = jcall('POST', '/v1/jobs/c1/clients', {'client': 'site-1'}, tok, 201)
        jcall('POST', '/v1/jobs/c1/clients', {'ttl_s': 0}, tok, 400)
        jcall('POST', '/v1/jobs/c1/clients', {}, None, 401)
        jcall('POST', '/v1/jobs/c1/clients', {}, cl['token'], 401)  # a client mints none
        jcall('GET', '/v1/jobs/c1/task', None, cl['token'], 200)
        jcall('GET', '/v1/jobs/c1/task', None, None, 401)

        # Updates: every body format, then the refusals.
        raw = e.raw_body(SCHEMA, {'w': np.ones(4, np.float32)})
        h = {'Content-Type': 'application/octet-stream', 'X-Tributary-Round': '0',
             'X-Tributary-Samples': '2', 'Idempotency-Key': 'k-1',
             'X-Tributary-Metrics': '{"loss": 0.5}'}
        call('POST', '/v1/jobs/c1/updates', raw, h, cl['token'], 202)
        call('POST', '/v1/jobs/c1/updates', raw, h, cl['token'], 202)  # the resend: same answer
        bad = dict(h, **{'Idempotency-Key': 'k-2'})
        call('POST', '/v1/jobs/c1/updates', raw, bad, cl['token'], 409)  # client's second
        call('POST', '/v1/jobs/c1/updates', raw, dict(h, **{'X-Tributary-Round': '7'}), tok, 409)
        call('POST', '/v1/jobs/c1/updates', raw[:6], dict(h, **{'Idempotency-Key': 'k-3'}), tok,
             422)
        call('POST', '/v1/jobs/c1/updates', raw, dict(h, **{'Content-Type': 'text/csv'}), tok,
             415)
        call('POST', '/v1/jobs/c1/updates', raw, {'Content-Type': 'application/octet-stream'},
             tok, 400)
        call('POST', '/v1/jobs/c1/updates', raw, dict(h, **{'X-Tributary-Metrics': '{'}), tok,
             400)
        call('POST', '/v1/jobs/c1/updates', raw, h, 'wrong', 401)
        call('POST', '/v1/jobs/nosuch/updates', raw, h, adm, 404)
        call('GET', '/v1/jobs/c1/updates', None, None, tok, 405)
        jcall('POST', '/v1/jobs/c1/pause', None, tok, 200)
        call('POST', '/v1/jobs/c1/updates', raw, dict(h, **{'Idempotency-Key': 'k-4'}), tok, 503)
        jcall('POST', '/v1/jobs/c1/resume', None, tok, 200)
        jcall('POST', '/v1/jobs/c1/pause', None, cl['token'], 403)
        jcall('POST', '/v1/jobs/c1/resume', None, None, 401)
        npy = io.BytesIO()
        np.save(npy, np.full(4, 3, np.float32))
        call('POST', '/v1/jobs/c1/updates', npy.getvalue(),
             {'Content-Type': 'application/x-npy', 'X-Tributary-Round': '0'}, tok, 202)
        e.wait_for(lambda: srv.status('c1')['model_round'] >= 1, 30, 'round 0 of c1')

        # Models: forms, versions, long poll, Accept.
        call('GET', '/v1/jobs/c1/model', None, None, tok, 200)
        for acc in ('application/x-npz', 'application/octet-stream', 'application/x-safetensors'):
            call('GET', '/v1/jobs/c1/model', None, {'Accept': acc}, cl['token'], 200)
        call('GET', '/v1/jobs/c1/model', None, {'Accept': 'text/html'}, tok, 406)
        call('GET', '/v1/jobs/c1/model?round=0', None, None, tok, 200)
        call('GET', '/v1/jobs/c1/model?round=99', None, None, tok, 404)
        call('GET', '/v1/jobs/c1/model?round=x', None, None, tok, 400)
        call('GET', '/v1/jobs/c1/model?after=1&timeout=1', None, None, tok, 304)
        call('GET', '/v1/jobs/c1/model', None, None, None, 401)
        call('PUT', '/v1/jobs/c1/model', st_body, {'Content-Type': 'application/x-safetensors'},
             tok, 409)

        # Round records and evaluations.
        jcall('GET', '/v1/jobs/c1/rounds', None, cl['token'], 200)
        jcall('GET', '/v1/jobs/c1/rounds?from=0&limit=1', None, tok, 200)
        jcall('GET', '/v1/jobs/c1/rounds?limit=0', None, tok, 400)
        jcall('GET', '/v1/jobs/c1/rounds/0', None, tok, 200)
        jcall('GET', '/v1/jobs/c1/rounds/1', None, tok, 200)
        jcall('GET', '/v1/jobs/c1/rounds/999', None, tok, 404)
        jcall('GET', '/v1/jobs/c1/rounds/0', None, None, 401)
        ev = {'version': 1, 'samples': 10, 'metrics': {'accuracy': 0.9}}
        jcall('POST', '/v1/jobs/c1/evaluations', ev, cl['token'], 202,
              {'Idempotency-Key': 'e-1'})
        jcall('POST', '/v1/jobs/c1/evaluations', ev, cl['token'], 409)
        jcall('POST', '/v1/jobs/c1/evaluations', dict(ev, version=50), tok, 404)
        jcall('POST', '/v1/jobs/c1/evaluations', {'version': 1}, tok, 400)
        jcall('POST', '/v1/jobs/c1/evaluations', ev, None, 401)

        # A two-tensor job takes .npz; a done job answers 410.
        _, m2, _ = jcall('POST', '/v1/jobs', {'name': 'c2', 'clients_per_round': 1,
                                              'num_rounds': 1, 'tensors': SCHEMA2}, adm, 201)
        z = io.BytesIO()
        with zipfile.ZipFile(z, 'w') as zf:
            for t in SCHEMA2:
                a = io.BytesIO()
                np.save(a, np.ones(t['shape'], np.float32))
                zf.writestr(t['name'] + '.npy', a.getvalue())
        hz = {'Content-Type': 'application/x-npz', 'X-Tributary-Round': '0'}
        call('POST', '/v1/jobs/c2/updates', z.getvalue(), hz, m2['token'], 202)
        e.wait_for(lambda: srv.status('c2')['state'] == 'done', 30, 'c2 done')
        call('POST', '/v1/jobs/c2/updates', z.getvalue(), dict(hz, **{'X-Tributary-Round': '1'}),
             m2['token'], 410)
        jcall('GET', '/v1/jobs/c2/task', None, m2['token'], 200)
        jcall('POST', '/v1/jobs/c2/pause', None, m2['token'], 409)

        # Secure aggregation's stages: one round of 3 clients (tributary_secagg's crypto).
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                        'clients', 'python'))
        import tributary_secagg as sa
        s1 = {'name': 's1', 'clients_per_round': 3, 'client_auth': 'required',
              'round_timeout_s': 60, 'tensors': [{'name': 'w', 'shape': [8], 'dtype': 'F32'}],
              'secagg': {'threshold': 2, 'neighbours': 2, 'clip': 1.0, 'bits': 8}}
        # The request side of JobSpec's "secagg": the spec sent validates, and what the server
        # refuses (400 naming the field) the document refuses too.
        spec_schema = doc['components']['schemas']['JobSpec']
        c.validate(spec_schema, s1, 'JobSpec: the secagg job s1')
        for bad in ({'threshold': 2, 'neighbours': 3, 'clip': 1.0, 'bits': 8},
                    {'threshold': 0, 'neighbours': 2, 'clip': 1.0, 'bits': 8},
                    {'threshold': 2, 'neighbours': 2, 'clip': 0, 'bits': 8},
                    {'threshold': 2, 'neighbours': 2, 'clip': 1.0, 'bits': 25},
                    {'threshold': 2, 'neighbours': 2, 'clip': 1.0},
                    {'threshold': 2, 'neighbours': 2, 'clip': 1.0, 'bits': 8, 'salt': 1}):
            b1 = dict(s1, name='s1bad', secagg=bad)
            _, o, _ = jcall('POST', '/v1/jobs', b1, adm, 400)
            check('secagg.' in o['error'], 'secagg %r: the 400 names no field: %r' % (bad, o))
            check(not jsonschema.Draft202012Validator(spec_schema, resolver=c.resolver)
                  .is_valid(b1), 'JobSpec accepts secagg %r, which the server refuses' % bad)
        # max_samples: optional; one whose sums could wrap is refused, naming the largest.
        c.validate(spec_schema, dict(s1, secagg=dict(s1['secagg'], max_samples=9)),
                   'JobSpec: secagg.max_samples')
        _, o, _ = jcall('POST', '/v1/jobs', dict(s1, name='s1bad', secagg=dict(
            s1['secagg'], max_samples=5614337)), adm, 400)
        check('secagg.max_samples' in o['error'] and '5614336' in o['error'],
              'max_samples past the bound: %r' % o)
        jcall('POST', '/v1/jobs', s1, adm, 201)
        _, o, _ = jcall('GET', '/v1/jobs/s1', None, adm, 200)
        # Omitted, max_samples is the largest the sums allow: 2^32 - 1 over 3 x (2^8 - 1).
        check(o.get('secagg') == dict(s1['secagg'], max_samples=5614336),
              'status secagg: %r' % o.get('secagg'))
        stoks = [jcall('POST', '/v1/jobs/s1/clients', {'client': 's%d' % i}, adm, 201)[1]['token']
                 for i in range(3)]
        # A low-order public key: 422 naming it, and no round is opened.
        for field in ('c_pk', 's_pk'):
            keys = {'c_pk': sa.public_key(os.urandom(32)).hex(),
                    's_pk': sa.public_key(os.urandom(32)).hex()}
            keys[field] = '01' + '00' * 31
            _, o, _ = jcall('POST', '/v1/jobs/s1/secagg/keys', keys, stoks[0], 422)
            check(o['error'].startswith(field + ': a low-order'), '%s: %r' % (field, o))
        _, o, _ = jcall('GET', '/v1/jobs/s1', None, adm, 200)
        check('round_in_progress' not in o['secagg'], 'a refused key opened a round: %r' % o)
        scl, skeys = [], {}
        for t in stoks:
            c_sk, s_sk = os.urandom(32), os.urandom(32)
            _, info, _ = jcall('POST', '/v1/jobs/s1/secagg/keys',
                               {'c_pk': sa.public_key(c_sk).hex(),
                                's_pk': sa.public_key(s_sk).hex()}, t, 200)
            x = sa.SecAggClient(info['index'], info['round'], 2)
            x.c_sk, x.s_sk = c_sk, s_sk
            scl.append((t, x))
        # The status's secure round in progress (JobStatus.secagg.round_in_progress).
        _, o, _ = jcall('GET', '/v1/jobs/s1', None, adm, 200)
        rip = o['secagg'].get('round_in_progress') or {}
        check(rip.get('stage') == 'share' and rip.get('clients') == 3 and rip.get('alive') == 3,
              'round_in_progress after 3 of 3 joined: %r' % o['secagg'])
        for t, x in scl:
            _, o, _ = jcall('GET', '/v1/jobs/s1/secagg/keys', None, t, 200)
            check(o['ready'], 'keys not ready after 3 of 3 joined: %r' % o)
            skeys[x.u] = {n['index']: (bytes.fromhex(n['c_pk']), bytes.fromhex(n['s_pk']))
                          for n in o['neighbours']}
            jcall('POST', '/v1/jobs/s1/secagg/shares',
                  {'shares': [{'to': v, 'ct': ct.hex()} for v, ct in x.share(skeys[x.u]).items()]},
                  t, 200)
        for t, x in scl:
            _, o, _ = jcall('GET', '/v1/jobs/s1/secagg/shares', None, t, 200)
            inbox = {m['from']: bytes.fromhex(m['ct']) for m in o['shares']}
            words = np.concatenate([sa.quantise(np.zeros(8), 1.0, 8), [1]]).astype(np.uint32)
            call('POST', '/v1/jobs/s1/secagg/input', x.masked(words, inbox, skeys[x.u])
                 .astype('<u4').tobytes(), {'Content-Type': 'application/octet-stream'}, t, 200)
        kinds = {'self': sa.REVEAL_SELF, 'secret': sa.REVEAL_SECRET}
        for t, x in scl:
            _, o, _ = jcall('GET', '/v1/jobs/s1/secagg/unmask', None, t, 200)
            sh = x.reveal([(r['index'], kinds[r['kind']]) for r in o['reveal']])
            jcall('POST', '/v1/jobs/s1/secagg/unmask',
                  {'reveals': [{'index': v, 'share': b.hex()} for v, b in sh.items()]}, t, 200)
        # The last reveal ends the stage; the tree's sum and the shards' correction come within
        # a few ticks.
        e.wait_for(lambda: srv.status('s1')['model_round'] == 1, 10,
                   'secure round: %r' % srv.status('s1'))
        _, o, _ = jcall('GET', '/v1/jobs/s1', None, adm, 200)
        check('round_in_progress' not in o['secagg'] and 'last_failure' not in o['secagg'],
              'status secagg after the round: %r' % o['secagg'])
        jcall('POST', '/v1/jobs/s1/secagg/keys', {'c_pk': 'zz'}, stoks[0], 400)
        jcall('GET', '/v1/jobs/s1/secagg/shares', None, stoks[0], 410)
        jcall('POST', '/v1/jobs/s1/secagg/unmask', {'reveals': []}, stoks[0], 410)
        call('GET', '/v1/jobs/s1/secagg/input', None, None, stoks[0], 405)

        # Revoking, deleting.
        jcall('DELETE', '/v1/jobs/c1/clients/' + cl['client'], None, tok, 200)
        jcall('DELETE', '/v1/jobs/c1/clients/' + cl['client'], None, None, 401)
        jcall('POST', '/v1/jobs/c1/clients', {'client': cl['client']}, tok, 409)  # revoked id
        jcall('DELETE', '/v1/jobs/c1', None, tok, 403)
        jcall('DELETE', '/v1/jobs/c1?purge=maybe', None, adm, 400)
        jcall('DELETE', '/v1/jobs/c1?purge=true', None, adm, 200)
        jcall('GET', '/v1/jobs/c1', None, adm, 404)
        jcall('DELETE', '/v1/jobs/c1', None, adm, 404)

        missing = [(m, t) for t, item in doc['paths'].items() for m in item
                   if m != 'parameters' and (m, t) not in c.seen]
        check(not missing, 'operations of the document never driven: %r' % missing)
        e.log('%d answers checked against the document: %d operations, %d (operation, status) '
              'pairs' % (c.checked, len(c.seen), len(c.statuses)))
        srv.check_log()


if __name__ == '__main__':
    e.main(run)
