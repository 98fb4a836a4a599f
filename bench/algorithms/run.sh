#!/bin/sh
# SPDX-License-Identifier: MIT
# Per algorithm: 100 updates of 1M parameters through one `tributary up`, updates/s and GB/s of
# update bytes, each relative to FedAvg in the same run; compressed bodies against F32.
# usage: bench/algorithms/run.sh BUILD_DIR [ROUNDS]
set -u
build=${1:-build}
rounds=${2:-3}
. "$(dirname "$0")/../../scripts/lib-up.sh"
up_init algos

up_start "$build" --arena-mb 1024 || exit 1

# job name, JSON extra: prints the median round time
median_round() {
	curl -sf -H "Authorization: Bearer $admin" "$url/v1/jobs" \
		-d "{\"name\":\"$1\",\"clients_per_round\":100,\"params\":1000000$2}" >/dev/null ||
		{ echo "bench/algorithms: creating $1 failed" >&2; exit 1; }
	"$build/tributary" simulate --job "$1" --clients 100 --rounds "$rounds" --params 1000000 \
		--format raw --url "$url" --data-dir "$dir/data" --quiet --no-check \
		>"$dir/$1.out" 2>&1 || { cat "$dir/$1.out" >&2; exit 1; }
	sed -n 's/^round [0-9]*: [0-9]* updates in \([0-9.]*\) s.*/\1/p' "$dir/$1.out" |
		sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

echo "100 updates x 1M f32 params (400 MB) per round, median of $rounds rounds"
printf "%-34s %9s %12s %12s %10s\n" "algorithm" "round s" "updates/s" "GB/s" "vs fedavg"
base=""
for spec in "fedavg|" "fedavg unweighted|,\"weighted\":false" \
	"fedavgm|,\"algorithm\":\"fedavgm\"" "fedadam|,\"algorithm\":\"fedadam\"" \
	"fedyogi|,\"algorithm\":\"fedyogi\"" \
	"fedavg + clip + dp|,\"clip_norm\":100,\"dp_noise_multiplier\":0.5" \
	"median|,\"algorithm\":\"median\"" "trimmed_mean|,\"algorithm\":\"trimmed_mean\"" \
	"krum (f 10, m 1)|,\"algorithm\":\"krum\",\"f\":10" \
	"multi-krum (f 10, m 20)|,\"algorithm\":\"krum\",\"f\":10,\"m\":20"; do
	label=${spec%%|*}
	extra=${spec#*|}
	name=$(echo "$label" | tr -c 'a-z0-9\n' '-' | sed 's/-*$//')
	t=$(median_round "$name" "$extra") || exit 1
	[ -z "$base" ] && base=$t
	awk -v l="$label" -v t="$t" -v b="$base" 'BEGIN {
		printf "%-34s %9.3f %12.1f %12.2f %9.2fx\n", l, t, 100 / t, 0.4 / t, t / b }'
done
