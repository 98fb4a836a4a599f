#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs scripts/check-layers, then every meson test (timeouts, parallelism), and prints one total.
set -u
build=${1:-build-test}
here=$(cd "$(dirname "$0")" && pwd)

# LeakSanitizer reports must fail a test, not just print.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Criterion prints a skipped test ("[SKIP] suite::test: why") only from verbosity 1 on.
export CRITERION_VERBOSITY_LEVEL=${CRITERION_VERBOSITY_LEVEL:-1}

# The layer map of docs/ARCHITECTURE.md, on the real tree (counted as one test below).
echo "===== scripts/check-layers ====="
"$here/check-layers"
layers_rc=$?

# Arena files (tributary-*.arena) and the 2 MiB pool before the suites: a file the tests leave
# behind fails the run, by name. The pool numbers are logged, not compared: on a machine shared
# with other servers they move by themselves, and the file list is what does not depend on them.
arena_files() {
	ls -1 /dev/hugepages/tributary-*.arena /dev/shm/tributary-*.arena 2>/dev/null | sort
}
hugepages() {
	local d=/sys/kernel/mm/hugepages/hugepages-2048kB
	[ -r $d/nr_hugepages ] && echo "nr $(cat $d/nr_hugepages) free $(cat $d/free_hugepages)"
}
arenas_before=$(arena_files)
huge_before=$(hugepages)

# The end-to-end scenarios start their servers on free ports in private dirs: 2 at a time is safe.
rm -f "$build/meson-logs/testlog.json"  # a stale log must not give the total
meson test -C "$build" --print-errorlogs -v --num-processes 2
rc=$?

arenas_after=$(arena_files)
huge_after=$(hugepages)
echo "HugePages (2 MiB) before: ${huge_before:-n/a}; after: ${huge_after:-n/a}"
arena_leaks=
for f in $(comm -13 <(echo "$arenas_before") <(echo "$arenas_after")); do
	# Locked: a live server holds it (another run on a shared machine, e.g. a soak); ours
	# have all stopped by now. A file nobody holds is one a test left behind.
	[ -e "$f" ] || continue  # flock(1) would create it
	flock -n -E 99 "$f" true 2>/dev/null
	if [ $? -eq 99 ]; then
		echo "arena file $f: new, but held by a live process (not this run's): ignored"
		continue
	fi
	arena_leaks="$arena_leaks$f"$'\n'
done
arena_leaks=$(echo -n "$arena_leaks" | sed '/^$/d')
if [ -n "$arena_leaks" ]; then
	echo "arena files the tests left behind (a leak of their pages):"
	echo "$arena_leaks" | sed 's/^/  /'
	rc=1
fi

# The total: a Criterion executable counts the tests its "[====] Synthesis:" line reports; any
# other meson test (an e2e scenario, a layers case) counts as one. CI reads the last line.
/usr/bin/python3 - "$build/meson-logs/testlog.json" "$layers_rc" <<'EOF' || rc=1
import json
import re
import sys

CR_SKIP = re.compile(r'^\[SKIP\] (\S+): (.*)$', re.M)
SYN = re.compile(r'Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) '
                 r'\| Crashing: (\d+)')
path, layers_rc = sys.argv[1], int(sys.argv[2])
try:
    with open(path) as f:
        tests = [json.loads(ln) for ln in f if ln.strip()]
except (OSError, ValueError) as e:
    print('\nno meson test log (%s): %s' % (path, e))
    tests = []

# Why a test failed, in a few lines next to the total: CI may keep only the end of this output,
# and a failure seen only there (stop 25's e2e cluster_restart) was not diagnosable from it.
WHY = re.compile(r'^(FAIL\b.*|.*Failure.*|\[FAIL\].*|\[----\].*(Assertion|expected).*|'
                 r'.*(timed out|Traceback).*)$', re.M)
LOGWARN = re.compile(r'^\d\d:\d\d:\d\d\.\d+ (WARN|ERROR) .*$', re.M)


def why_failed(name, out):
    why = [m.group(0) for m in WHY.finditer(out)][-6:]
    warn = [m.group(0) for m in LOGWARN.finditer(out)][-8:]
    return [name] + ['  why: ' + ln[:300] for ln in why] + ['  log: ' + ln[:300] for ln in warn]


details = []
suites = ran = passed = failed = 0
others = {}         # suite -> [ran, passed, failed, skipped]
skipped, failures = [], []
for t in tests:
    out = (t.get('stdout') or '') + (t.get('stderr') or '')
    syn = SYN.findall(out)
    res = t.get('result')
    if syn:
        suites += 1
        skipped += ['%s / %s: %s' % (t['name'], n, why) for n, why in CR_SKIP.findall(out)]
        for tested, ok, fail, crash in syn:
            ran += int(tested)
            passed += int(ok)
            failed += int(fail) + int(crash)
            if int(fail) + int(crash):
                failures.append('%s: %d failing, %d crashing' % (t['name'], int(fail),
                                                                  int(crash)))
                details.append(why_failed(t['name'], out))
        if res != 'OK' and not any(int(f) + int(c) for _, _, f, c in syn):
            # Every test passed, but the executable did not exit 0 (a report at exit?).
            failed += 1
            failures.append('%s: %s (exit %s) after its tests passed' %
                            (t['name'], res, t.get('returncode')))
        continue
    suite = t['name'].split(' / ')[0]
    o = others.setdefault(suite, [0, 0, 0, 0])
    o[0] += 1
    if res == 'OK':
        o[1] += 1
    elif res == 'SKIP':
        o[3] += 1
        why = [ln for ln in out.splitlines() if ln.strip()]
        skipped.append('%s: %s' % (t['name'], why[-1] if why else '(no reason printed)'))
    else:
        o[2] += 1
        failures.append('%s: %s (exit %s)' % (t['name'], res, t.get('returncode')))
        details.append(why_failed(t['name'], out))

o_ran = sum(o[0] for o in others.values())
o_pass = sum(o[1] for o in others.values())
o_fail = sum(o[2] for o in others.values())
if suites == 0:
    o_fail += 1
    failures.append('no Criterion suite reported a Synthesis line (did meson test run?)')
if layers_rc:
    failures.append('check-layers (its output is at the top)')
print('\nCriterion: %d suites, %d tests ran' % (suites, ran))
print('Other meson tests: %d (%s), %d skipped' % (o_ran, ', '.join(
    '%s: %d' % (s.split(':')[-1], o[0]) for s, o in sorted(others.items())) or 'none',
    sum(o[3] for o in others.values())))
print('check-layers: %s' % ('passed' if layers_rc == 0 else 'FAILED'))
print('Skipped: %d' % len(skipped))
for s in skipped:
    print('skipped: ' + s)
for d in details:
    print('why %s failed (its output: meson-logs/testlog.txt):' % d[0])
    for ln in d[1:] or ['  (no FAIL, Failure or WARN/ERROR line in its output)']:
        print(ln)
for f in failures:
    print('failed: ' + f)
print('%d passed, %d failed' % (passed + o_pass + (layers_rc == 0),
                                failed + o_fail + (layers_rc != 0)))
sys.exit(1 if failed or o_fail or layers_rc else 0)
EOF
[ -n "$arena_leaks" ] && echo "failed: arena files left behind (see above)"
exit $rc
