# SPDX-License-Identifier: MIT
# A round whose tree does not fit the arena still completes: the planner takes a third level,
# and when an update is refused (503) the leaf taking updates hands off early to free slots.
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as e  # noqa: E402
from e2e_common import check  # noqa: E402


def run():
    with e.Server(arena_mb=16) as srv:
        out = subprocess.run([e.BIN, 'simulate', '--job', 'tight', '--clients', '100',
                              '--rounds', '2', '--params', '250000', '--connections', '8',
                              '--url', 'http://127.0.0.1:%d' % srv.port,
                              '--data-dir', os.path.join(srv.data_dir, 'data'), '--quiet'],
                             capture_output=True, text=True, timeout=150)
        print(out.stdout[-600:])
        check(out.returncode == 0, 'simulate failed on a 16 MiB arena:\n%s\n%s' %
              (out.stdout[-2000:], out.stderr[-2000:]))
        log = srv.log_text()
        check('third level' in log, 'the planner did not take a third level:\n' + log[-3000:])
        m = srv.metrics()
        check(m['tributary_arena_slots'] == 0, 'arena slots left: %r' % m['tributary_arena_slots'])


if __name__ == '__main__':
    e.main(run)
