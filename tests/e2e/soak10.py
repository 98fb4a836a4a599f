# SPDX-License-Identifier: MIT
# Ten iterations of the crash soak (bench/soak/run.py): kill -9 at random moments, every 202 in
# exactly one model, with small models and a small arena.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'bench', 'soak'))
import run as soak  # noqa: E402

if __name__ == '__main__':
    build = os.path.dirname(os.path.abspath(os.environ.get('TRIBUTARY_BIN', 'build/tributary')))
    sys.exit(soak.main(['--iterations', '10', '--seed', '12', '--build', build,
                        '--arena-mb', '16', '--params', '4096', '--rounds', '4',
                        '--clients', '3', '--sizes', '', '--timeout', '30']))
