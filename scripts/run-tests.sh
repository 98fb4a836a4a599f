#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs every Criterion suite through meson (timeouts, parallelism) and prints one total at the end.
set -u
build=${1:-build-test}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# LeakSanitizer reports must fail a test, not just print.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

meson test -C "$build" --print-errorlogs -v --num-processes 2 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# Criterion prints "[====] Synthesis: Tested: N | Passing: N | Failing: N | Crashing: N" per suite.
/usr/bin/awk '
/Synthesis: Tested:/ {
	for (i = 1; i <= NF; i++) {
		if ($i == "Tested:") t += $(i+1);
		if ($i == "Passing:") p += $(i+1);
		if ($i == "Failing:") f += $(i+1);
		if ($i == "Crashing:") c += $(i+1);
	}
	n++
}
END {
	printf "\nCriterion: %d suites, %d tests ran\n", n, t;
	printf "%d passed, %d failed\n", p, f + c;
	if (f + c > 0 || n == 0)
		exit 1;
}' "$log" || rc=1
exit $rc
