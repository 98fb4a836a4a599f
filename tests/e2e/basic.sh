#!/bin/bash
# SPDX-License-Identifier: MIT
# Basic scenario, as a new user would do it with curl: one job, five clients, check the mean.
set -euo pipefail

PY=${E2E_PYTHON:-/usr/bin/python3}
BIN=${TRIBUTARY_BIN:-build/tributary}
HERE=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/trib-e2e-basic.XXXXXX)
log=$work/server.log
pid=
ok=0

finish() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	if [ "$ok" != 1 ]; then
		echo "----- server log -----"
		cat "$log" 2>/dev/null || true
		echo "----- end of log -----"
		echo "FAIL: basic.sh"
	fi
	rm -rf "$work"
}
trap finish EXIT

fail() {
	echo "FAIL: $*"
	exit 1
}

# JSON field of stdin, via Python's json (no jq on the box).
jget() {
	"$PY" -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if isinstance(v, list) else v[k]
print(json.dumps(v) if isinstance(v, (dict, list)) else v)' "$1"
}

# TRIBUTARY_DATAPLANE picks the data plane (default: the server's own choice).
"$BIN" up --listen 127.0.0.1:0 --port-file "$work/port" --data-dir "$work/data" \
	--arena-mb 64 ${TRIBUTARY_DATAPLANE:+--dataplane "$TRIBUTARY_DATAPLANE"} >"$log" 2>&1 &
pid=$!
for _ in $(seq 300); do
	[ -s "$work/port" ] && grep -q . "$work/port" && break
	kill -0 "$pid" 2>/dev/null || fail "tributary up exited before listening"
	sleep 0.05
done
port=$(head -n1 "$work/port")
[ -n "$port" ] || fail "no port file"
url=http://127.0.0.1:$port
[ "$(stat -c %a "$work/data/admin-token")" = 600 ] || fail "admin-token is not mode 0600"
admin=$(cat "$work/data/admin-token")
A="Authorization: Bearer $admin"

# status code of a request; the body goes to $work/out
code() {
	curl -sS -o "$work/out" -w '%{http_code}' "$@"
}

[ "$(code "$url/healthz")" = 200 ] || fail "healthz"

c=$(code -X POST -H "$A" -H 'Content-Type: application/json' "$url/v1/jobs" \
	-d '{"name":"basic","clients_per_round":5,"algorithm":"fedavg","tensors":[
	{"name":"w1","shape":[3,4],"dtype":"F32"},{"name":"b1","shape":[4],"dtype":"F32"},
	{"name":"w2","shape":[4,2],"dtype":"F32"}]}')
[ "$c" = 201 ] || fail "create job: $c $(cat "$work/out")"
[ "$(jget job <"$work/out")" = basic ] || fail "create job answer: $(cat "$work/out")"
[ "$(jget round <"$work/out")" = 0 ] || fail "create job answer: $(cat "$work/out")"
tok=$(jget token <"$work/out")
T="Authorization: Bearer $tok"

c=$(code -H "$T" "$url/v1/jobs/basic")
[ "$c" = 200 ] || fail "job status: $c"
for kv in job=basic round=0 model_round=0 received=0 clients_per_round=5 algorithm=fedavg \
	params=24 fan_in=None tensors.1.name=b1 tensors.2.shape='[4, 2]'; do
	got=$(jget "${kv%%=*}" <"$work/out")
	[ "$got" = "${kv#*=}" ] || fail "status ${kv%%=*} = $got, want ${kv#*=}: $(cat "$work/out")"
done

# Version 0: zeros, right names and shapes.
c=$(code -H "$T" "$url/v1/jobs/basic/model")
[ "$c" = 200 ] || fail "model v0: $c"
"$PY" "$HERE/basic_data.py" check "$work/out" zeros || fail "model v0"

"$PY" "$HERE/basic_data.py" gen "$work"
i=0
total_bytes=0
while read -r file ctype samples; do
	i=$((i + 1))
	c=$(code -X POST -H "$T" -H "Content-Type: $ctype" -H 'X-Tributary-Round: 0' \
		-H "X-Tributary-Samples: $samples" --data-binary "@$file" \
		"$url/v1/jobs/basic/updates")
	[ "$c" = 202 ] || fail "update $i ($ctype): $c $(cat "$work/out")"
	[ "$(jget round <"$work/out")" = 0 ] || fail "update $i answer: $(cat "$work/out")"
	[ "$(jget received <"$work/out")" = $i ] || fail "update $i answer: $(cat "$work/out")"
	total_bytes=$((total_bytes + $(stat -c %s "$file")))
done <"$work/uploads"

# The round closed at the fifth update; its model comes with version 1.
c=$(curl -sS -D "$work/hdr" -o "$work/model.st" -w '%{http_code}' -H "$T" \
	"$url/v1/jobs/basic/model?after=0&timeout=20")
[ "$c" = 200 ] || fail "model v1: $c"
grep -qi '^X-Tributary-Round: 1' "$work/hdr" || fail "model v1 headers: $(cat "$work/hdr")"
grep -qi '^ETag: ' "$work/hdr" || fail "model v1 has no ETag"
grep -qi '^Content-Type: application/x-safetensors' "$work/hdr" || fail "model content type"
"$PY" "$HERE/basic_data.py" check "$work/model.st" "$work/ref.npz" || fail "model v1 value"

c=$(code -H "$T" "$url/v1/jobs/basic?x=1")
[ "$c" = 200 ] || fail "job status after the round: $c"
[ "$(jget round <"$work/out")" = 1 ] || fail "round after: $(cat "$work/out")"
[ "$(jget model_round <"$work/out")" = 1 ] || fail "model_round after: $(cat "$work/out")"
[ "$(jget received <"$work/out")" = 0 ] || fail "received after: $(cat "$work/out")"

# Past versions stay readable; the admin token works on job endpoints.
c=$(code -H "$A" "$url/v1/jobs/basic/model?round=0")
[ "$c" = 200 ] || fail "model ?round=0: $c"
"$PY" "$HERE/basic_data.py" check "$work/out" zeros || fail "model ?round=0"
c=$(code -H "$A" "$url/v1/jobs/basic/model?round=1")
[ "$c" = 200 ] || fail "model ?round=1: $c"
cmp -s "$work/out" "$work/model.st" || fail "?round=1 differs from the latest model"

c=$(code -H "$A" "$url/v1/jobs")
[ "$c" = 200 ] || fail "list jobs: $c"
[ "$(jget jobs.0.job <"$work/out")" = basic ] || fail "list jobs: $(cat "$work/out")"

c=$(code "$url/metrics")
[ "$c" = 200 ] || fail "metrics: $c"
metric() {
	awk -v k="$1" '$1 == k { print $2 }' "$work/out"
}
[ "$(metric tributary_updates_accepted_total)" = 5 ] || fail "accepted_total: $(cat "$work/out")"
[ "$(metric tributary_update_bytes_total)" = "$total_bytes" ] ||
	fail "update_bytes_total $(metric tributary_update_bytes_total), want $total_bytes"
[ "$(metric tributary_round_duration_seconds_count)" = 1 ] || fail "round_duration count"
[ "$(metric 'tributary_round_duration_seconds_bucket{le="+Inf"}')" = 1 ] ||
	fail "round_duration +Inf bucket"
grep -q '^tributary_arena_bytes{state="used"} ' "$work/out" || fail "no arena_bytes used"
grep -q '^tributary_functions ' "$work/out" || fail "no tributary_functions"
grep -q '^tributary_updates_rejected_total{reason="round"} 0' "$work/out" ||
	fail "rejected{round} not 0"

kill -TERM "$pid"
for _ in $(seq 100); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "tributary up still running 10 s after SIGTERM"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "tributary up exited with $rc"
if grep -q -e Sanitizer -e 'runtime error' "$log"; then
	fail "sanitizer report in the server log"
fi
ok=1
echo PASS
