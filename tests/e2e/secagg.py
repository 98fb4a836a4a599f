# SPDX-License-Identifier: MIT
# Secure aggregation (issue 19): the job field "secagg": 400s naming the field for every bad value,
# only with fedavg and client_auth required; stored with the job (shown in GET /v1/jobs/{job},
# kept across a restart); a secagg job refuses plain updates (409: nothing in the clear).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

SCHEMA = [{'name': 'w', 'shape': [64], 'dtype': 'F32'}]
GOOD = {'threshold': 3, 'neighbours': 4, 'clip': 1.0, 'bits': 16}


def spec(name, sa, **kw):
    d = {'name': name, 'clients_per_round': 6, 'tensors': SCHEMA, 'client_auth': 'required',
         'secagg': sa}
    d.update(kw)
    return d


def bad_values(srv):
    cases = [
        ('not an object', 5, 'secagg'),
        ('unknown member', dict(GOOD, salt=1), 'secagg.salt'),
        ('threshold missing', {k: v for k, v in GOOD.items() if k != 'threshold'},
         'secagg.threshold'),
        ('threshold 0', dict(GOOD, threshold=0), 'secagg.threshold'),
        ('threshold > neighbours', dict(GOOD, threshold=5), 'secagg.threshold'),
        ('threshold a string', dict(GOOD, threshold='3'), 'secagg.threshold'),
        ('neighbours odd', dict(GOOD, neighbours=3, threshold=2), 'secagg.neighbours'),
        ('neighbours too many', dict(GOOD, neighbours=256), 'secagg.neighbours'),
        ('neighbours negative', dict(GOOD, neighbours=-2), 'secagg.neighbours'),
        ('bits 0', dict(GOOD, bits=0), 'secagg.bits'),
        ('bits 25', dict(GOOD, bits=25), 'secagg.bits'),
        ('clip 0', dict(GOOD, clip=0), 'secagg.clip'),
        ('clip negative', dict(GOOD, clip=-1.5), 'secagg.clip'),
        ('clip a string', dict(GOOD, clip='1'), 'secagg.clip'),
    ]
    for what, sa, field in cases:
        st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', sa), token=srv.admin)
        check(st == 400 and field in obj.get('error', ''),
              '%s: want 400 naming %s, got %d %r' % (what, field, st, obj))
    # Threshold above the round's clients, bits whose sum overflows 32 bits.
    st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', dict(GOOD, threshold=4, neighbours=4),
                                                   clients_per_round=3), token=srv.admin)
    check(st == 400 and 'secagg.threshold' in obj.get('error', ''), 'threshold > cpr: %r' % obj)
    st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', dict(GOOD, bits=24),
                                                   clients_per_round=300), token=srv.admin)
    check(st == 400 and 'secagg.bits' in obj.get('error', ''), 'bits overflow: %r' % obj)
    # Only fedavg with no options, only with client credentials.
    for extra in ({'algorithm': 'fedadam'}, {'algorithm': 'median'}, {'clip_norm': 1.0}):
        st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', GOOD, **extra), token=srv.admin)
        check(st == 400 and 'secagg' in obj.get('error', '') and 'fedavg' in obj['error'],
              '%r with secagg: want 400 naming fedavg, got %d %r' % (extra, st, obj))
    st, obj, _ = srv.json('POST', '/v1/jobs', spec('bad', GOOD, client_auth='optional'),
                          token=srv.admin)
    check(st == 400 and 'client_auth' in obj.get('error', ''), 'optional auth: %r' % obj)
    st, obj, _ = srv.json('GET', '/v1/jobs/bad', token=srv.admin)
    check(st == 404, 'a refused job exists: %d %r' % (st, obj))
    e.log('secagg: %d bad definitions refused, each naming its field' % (len(cases) + 6))


def stored(srv):
    srv.create_job(spec('sa', GOOD))
    want = dict(GOOD, clip=1.0)
    check(srv.status('sa').get('secagg') == want, 'status: %r' % srv.status('sa').get('secagg'))
    srv.create_job({'name': 'plain', 'clients_per_round': 2, 'tensors': SCHEMA})
    check('secagg' not in srv.status('plain'), 'a plain job shows secagg')
    srv.restart()
    check(srv.status('sa').get('secagg') == want, 'after restart: %r' % srv.status('sa'))
    check('secagg' not in srv.status('plain'), 'a plain job shows secagg after restart')
    # Plain updates to a secure job: refused, with the job token or a client's.
    st, obj, _ = srv.json('POST', '/v1/jobs/sa/clients', {'client': 'c0'}, token=srv.admin)
    check(st == 201, 'mint: %d %r' % (st, obj))
    body = e.raw_body(SCHEMA, e.zeros_model(SCHEMA))
    st, _, raw = srv.request('POST', '/v1/jobs/sa/updates', body,
                             headers={'Content-Type': 'application/octet-stream'},
                             token=obj['token'])
    check(st == 409 and b'secure aggregation' in raw, 'plain update: %d %r' % (st, raw[:200]))
    check(srv.status('sa')['received'] == 0, 'a plain update was kept')
    e.log('secagg: stored, shown, kept across a restart; plain updates refused (409)')


def run():
    with e.Server() as srv:
        bad_values(srv)
        stored(srv)


if __name__ == '__main__':
    e.main(run)
