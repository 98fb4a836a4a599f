#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# scripts/check-layers against synthetic trees: each case builds one in a temp dir, checks the verdict.
"""test_layers.py CASE...  (no CASE: every case)

Each case writes a small tree (docs/ARCHITECTURE.md with a ```layers block, and .c/.h files)
into a fresh temp dir, runs check-layers --root on it, and checks its exit status and the lines
it prints. CHECK_LAYERS names the script (default: scripts/check-layers of this repo).
"""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.environ.get('CHECK_LAYERS',
                        os.path.join(HERE, '..', '..', 'scripts', 'check-layers'))

MAP = '''# Synthetic tree

## Layers

```layers
# layer   path      may include
base      base/     -
mid       mid/      base
side      side/     base
top       app/top/  base mid
app       app/      base mid side top
```
'''


class Failure(Exception):
    """A case's check failed."""


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def run(files, *args, arch=MAP):
    """Writes @files {path: text} and the map, runs check-layers; returns (exit status, output)."""
    with tempfile.TemporaryDirectory(prefix='trib-layers-') as root:
        tree = dict(files)
        if arch is not None:
            tree['docs/ARCHITECTURE.md'] = arch
        for path, text in tree.items():
            p = os.path.join(root, path)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, 'w') as f:
                f.write(text)
        p = subprocess.run([SCRIPT, '--root', root] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode('utf-8', 'replace')
        print('--- check-layers exit %d:\n%s---' % (p.returncode, out))
        return p.returncode, out


def inc(*names):
    return ''.join('#include "%s"\n' % n for n in names)


# A tree that keeps the map: every layer used, includes only downwards or sideways-allowed.
CLEAN = {
    'base/b_util.h': '#pragma once\n#include <stdio.h>\n',
    'base/b_util.c': inc('b_util.h'),
    'mid/m_core.h': inc('b_util.h'),
    'mid/m_core.c': inc('m_core.h', 'b_util.h', 'route.skel.h'),
    'side/s_io.h': inc('../base/b_util.h'),
    'side/s_io.c': inc('s_io.h'),
    'app/top/t_run.h': inc('m_core.h'),
    'app/top/t_run.c': inc('t_run.h', 'b_util.h'),
    'app/main.c': inc('t_run.h', 's_io.h', 'm_core.h', 'config.h'),
    # Not layers: never read, so their includes cannot fail.
    'tests/base/test_b.c': inc('t_run.h', 'b_util.h'),
    'base/tests/t.c': inc('t_run.h'),
    'build-test/base/gen.c': inc('t_run.h'),
}


def case_clean_tree_passes():
    rc, out = run(CLEAN)
    check(rc == 0, 'a clean tree must pass, got exit %d' % rc)
    last = out.strip().splitlines()[-1]
    check(last == 'check-layers: 9 files, 5 layers, 0 upward includes, 0 sideways includes, '
          '0 cycles', 'summary line: %r' % last)


def case_verbose_prints_every_layer():
    rc, out = run(CLEAN, '-v')
    check(rc == 0, 'exit %d' % rc)
    lines = set(' '.join(ln.split()) for ln in out.splitlines())
    for want in ('base base/b_util.c', 'mid mid/m_core.h', 'side side/s_io.h',
                 'top app/top/t_run.c', 'app app/main.c'):
        check(want in lines, '-v does not print %r (the longest prefix wins)' % want)
    check('tests/base/test_b.c' not in out and 'base/tests/t.c' not in out and
          'build-test' not in out, '-v lists a file of tests/ or build*/')


def case_upward_include_fails():
    tree = dict(CLEAN)
    tree['base/b_util.c'] = inc('b_util.h', 'stdio.h', 'm_core.h')
    rc, out = run(tree)
    check(rc == 1, 'an upward include must fail with exit 1, got %d' % rc)
    check('check-layers: upward include: base/b_util.c:3 -> mid/m_core.h (base -> mid)' in out,
          'the output does not name the upward edge')
    check('1 upward includes, 0 sideways includes' in out, 'the summary does not count it')


def case_upward_include_into_the_wiring_fails():
    tree = dict(CLEAN)
    tree['app/app.h'] = '#pragma once\n'
    tree['app/top/t_run.c'] = inc('t_run.h', 'app.h')
    rc, out = run(tree)
    check(rc == 1, 'exit %d' % rc)
    check('upward include: app/top/t_run.c:2 -> app/app.h (top -> app)' in out,
          'an include from app/top/ into app/ (longest prefix: top) must be upward')


def case_sideways_include_fails():
    tree = dict(CLEAN)
    tree['mid/m_core.c'] = inc('m_core.h', 's_io.h')
    rc, out = run(tree)
    check(rc == 1, 'an include into a layer not in the may-include list must fail, got %d' % rc)
    check('check-layers: include not in the map: mid/m_core.c:2 -> side/s_io.h (mid -> side)'
          in out, 'the output does not name the sideways edge')


def case_relative_path_resolves_first():
    tree = dict(CLEAN)
    tree['side/s_io.c'] = inc('s_io.h', '../mid/m_core.h')
    rc, out = run(tree)
    check(rc == 1, 'exit %d' % rc)
    check('side/s_io.c:2 -> mid/m_core.h (side -> mid)' in out,
          'an include by relative path is not resolved')


def case_cross_folder_cycle_fails():
    tree = dict(CLEAN)
    # Both in layer app, so the map allows each edge; the cycle between folders still fails.
    tree['app/x/a.h'] = '#pragma once\n' + inc('b.h')
    tree['app/y/b.h'] = '#pragma once\n' + inc('../x/a.h')
    rc, out = run(tree)
    check(rc == 1, 'a cross-folder cycle must fail with exit 1, got %d' % rc)
    check('check-layers: cycle across folders: app/x/a.h, app/y/b.h' in out,
          'the output does not name the cycle')
    check('  app/x/a.h:2 -> app/y/b.h (app -> app)' in out and
          '  app/y/b.h:2 -> app/x/a.h (app -> app)' in out, 'the cycle\'s edges are not named')
    check('0 upward includes, 0 sideways includes, 1 cycles' in out, 'summary')


def case_long_cycle_names_every_edge():
    tree = dict(CLEAN)
    tree['app/x/a.h'] = inc('b.h')
    tree['app/x/b.h'] = inc('c.h')
    tree['app/y/c.h'] = inc('a.h')
    tree['app/y/d.h'] = inc('a.h')  # reaches the cycle but is not in it
    rc, out = run(tree)
    check(rc == 1, 'exit %d' % rc)
    check('cycle across folders: app/x/a.h, app/x/b.h, app/y/c.h' in out, 'members')
    for e in ('app/x/a.h:1 -> app/x/b.h', 'app/x/b.h:1 -> app/y/c.h',
              'app/y/c.h:1 -> app/x/a.h'):
        check(e in out, 'edge %s not named' % e)
    check('app/y/d.h:1' not in out, 'an edge into the cycle is named as part of it')


def case_cycle_within_one_folder_passes():
    tree = dict(CLEAN)
    tree['mid/m_a.h'] = '#pragma once\n' + inc('m_b.h')
    tree['mid/m_b.h'] = '#pragma once\n' + inc('m_a.h')
    rc, out = run(tree)
    check(rc == 0, 'a cycle inside one folder must pass, got exit %d' % rc)
    check('0 cycles' in out, 'summary')


def case_ambiguous_basename_fails():
    tree = dict(CLEAN)
    tree['mid/common.h'] = '#pragma once\n'
    tree['side/common.h'] = '#pragma once\n'
    tree['app/main.c'] = inc('t_run.h', 'common.h')
    rc, out = run(tree)
    check(rc == 1, 'an ambiguous basename must fail, got exit %d' % rc)
    check('app/main.c:2: #include "common.h" is ambiguous: mid/common.h, side/common.h' in out,
          'the output does not name the ambiguous include and its candidates')


def case_duplicate_basename_next_door_passes():
    tree = dict(CLEAN)
    tree['mid/common.h'] = '#pragma once\n'
    tree['side/common.h'] = '#pragma once\n'
    tree['side/s_io.c'] = inc('s_io.h', 'common.h')
    rc, out = run(tree)
    check(rc == 0, 'an include that resolves next to its file is not ambiguous, got %d' % rc)


def case_malformed_maps_are_refused():
    rc, out = run(CLEAN, arch='# No map here\n')
    check(rc == 2 and 'has no ```layers block' in out, 'a missing map: exit %d' % rc)
    for bad, why in (('a  a/  b\n', 'which is not declared'),
                     ('a  a/  b\nb  b/  a\n', 'layers must point down'),
                     ('a  a/\n', 'want "layer path-prefix'),
                     ('a  a/  -\na  b/  -\n', 'declared twice')):
        rc, out = run(CLEAN, arch='```layers\n' + bad + '```\n')
        check(rc == 2 and why in out, 'map %r: exit %d, want 2 and %r' % (bad, rc, why))


def case_meson_runs_every_case():
    with open(os.path.join(HERE, 'meson.build')) as f:
        listed = set(re.findall(r"^\t\t'([a-z-]+)',$", f.read(), re.M))
    missing = sorted(set(CASES) - listed)
    check(not missing, 'tests/layers/meson.build does not run: %s' % ', '.join(missing))
    check(not listed - set(CASES), 'meson.build names unknown cases: %s' %
          ', '.join(sorted(listed - set(CASES))))


CASES = {n[len('case_'):].replace('_', '-'): f for n, f in sorted(globals().items())
         if n.startswith('case_')}


def main(names):
    bad = [n for n in names if n not in CASES]
    if bad:
        print('unknown case %s; cases: %s' % (', '.join(bad), ', '.join(CASES)))
        return 2
    failed = 0
    for name in names or CASES:
        try:
            CASES[name]()
            print('PASS %s' % name)
        except Failure as e:
            print('FAIL %s: %s' % (name, e))
            failed += 1
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
