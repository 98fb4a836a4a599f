# SPDX-License-Identifier: MIT
# 503 when the arena is full: stalled uploads hold slots; refused uploads leave the round alone.
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402

JOB = 'full'
P = 1000000  # 4 MB a model: near the 1/4 of a 16 MiB arena that a job may take
SCHEMA = [{'name': 'weights', 'shape': [P], 'dtype': 'F32'}]
SLOT = 4 * P + (128 << 10)  # an upload's slot: the body, its segment table, chunk rounding


def arena(srv):
    m = srv.metrics()
    return (int(m['tributary_arena_bytes{state="used"}']),
            int(m['tributary_arena_bytes{state="total"}']), int(m['tributary_arena_slots']))


def run():
    rng = np.random.default_rng(3)
    # 20 MiB: two accumulators and the round's three updates (held by their leaf until its
    # partial exists) fit, with room for one stalled upload.
    with e.Server(arena_mb=20) as srv:
        job = srv.create_job({'name': JOB, 'clients_per_round': 3, 'fan_in': 3, 'params': P})
        tok = job['token']
        used0, total, slots0 = arena(srv)
        check(slots0 == 0 and total >= 16 << 20, 'fresh arena: used %d total %d slots %d' %
              (used0, total, slots0))
        accepted = []

        def update(samples, expect=202):
            m = {'weights': rng.standard_normal(P).astype(np.float32)}
            st, obj, hd = srv.post_update(JOB, tok, 0, e.raw_body(SCHEMA, m), samples,
                                          expect=expect)
            if st == 202:
                accepted.append((samples, m))
            return st, obj, hd

        update(4)  # the round's tree (top and leaf accumulators) now holds arena memory
        # The update's slot lives until its leaf's partial exists (so a leaf killed mid-round
        # can refold it): the two accumulators and the update.
        e.wait_for(lambda: arena(srv)[2] == 3, 10, 'the first update to be held by its leaf')
        body = e.raw_body(SCHEMA, {'weights': np.ones(P, np.float32)})
        head = e.http_head('POST', '/v1/jobs/%s/updates' % JOB, {
                'Authorization': 'Bearer ' + tok, 'X-Tributary-Round': 0,
                'Content-Type': 'application/octet-stream', 'Content-Length': len(body)})
        stalls = []
        try:
            # Uploads that send their head and half their body, then wait: each holds a slot.
            while True:
                used, _, slots = arena(srv)
                if total - used < SLOT:
                    break
                check(len(stalls) < 8, 'arena never filled: used %d of %d after %d stalls' %
                      (used, total, len(stalls)))
                s = e.raw_connect(srv.port)
                s.sendall(head + body[:len(body) // 2])
                stalls.append(s)
                e.wait_for(lambda: arena(srv)[2] > slots, 10, 'stalled upload %d to take a '
                           'slot' % len(stalls))
            e.log('%d stalled uploads fill the arena (used %d of %d)' % (len(stalls), used,
                                                                      total))
            check(stalls, 'no upload could stall: the tree alone filled the arena')
            before = srv.status(JOB)
            refused = 0
            for ctype, b in (('application/octet-stream', body),
                             ('application/x-safetensors',
                              e.st_encode({'weights': np.ones(P, np.float32)}))):
                st, obj, hd = srv.post_update(JOB, tok, 0, b, 1, ctype, expect=503)
                refused += 1
                check(hd.get('retry-after', '').isdigit(), '503 without Retry-After: %r' % hd)
                check(obj and obj.get('error'), '503 without a JSON error: %r' % obj)
            after = srv.status(JOB)
            check(after['received'] == before['received'] == 1 and after['round'] == 0,
                  'status changed by 503s: %r -> %r' % (before, after))
            srv.healthy()
            # One stalled client gives up: its slot comes back and an upload fits again.
            stalls.pop().close()
            e.wait_for(lambda: total - arena(srv)[0] >= SLOT, 10, 'the slot to be freed')
            update(9)
            check(srv.status(JOB)['received'] == 2, 'received after the 503s')
        finally:
            for s in stalls:
                s.close()
        # Left: the two accumulators and the two accepted updates, held by their leaf.
        e.wait_for(lambda: arena(srv)[2] == 4, 10, 'stalled slots to be freed')
        update(2)
        _, hd, b = srv.get_model(JOB, tok, '?after=0&timeout=30')
        e.check_model(b, SCHEMA, e.weighted_mean(accepted), 'model v1')
        m = srv.metrics()
        check(m['tributary_updates_rejected_total{reason="arena_full"}'] == refused,
              'rejected{arena_full} = %r, want %d' %
              (m['tributary_updates_rejected_total{reason="arena_full"}'], refused))
        check(m['tributary_updates_accepted_total'] == 3, 'accepted_total')
        # With the round done, every slot is back.
        e.wait_for(lambda: arena(srv)[2] == 0, 5, 'the arena to empty after the round')
        time.sleep(0.1)
        check(arena(srv)[0] == used0, 'arena used %d after the round, %d before' %
              (arena(srv)[0], used0))


if __name__ == '__main__':
    e.main(run)
