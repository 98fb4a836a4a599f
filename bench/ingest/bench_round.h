/* SPDX-License-Identifier: MIT */
/* bench_ingest --round: whole rounds timed against their own ingest, same connections and bytes. */
#ifndef BENCH_ROUND_H
#define BENCH_ROUND_H

#include <stdint.h>

#include "tl_client.h"

/* Strings are borrowed (argv). */
struct bench_round_opts {
	const char *url;
	const char *job; /* NULL: bench-round-<pid>, a fresh job */
	const char *data_dir;
	const char *token_file;
	struct tl_tls_opts tls;
	uint32_t updates;     /* a round's updates, N: the job closes its rounds at N */
	uint64_t params;      /* f32 elements of each update */
	uint32_t connections; /* keep-alive connections, one thread each (clamped to N) */
	uint32_t rounds;      /* rounds timed */
};

/*
 * Run @o->rounds rounds of a fresh job. Connection k (of C) sends its share of
 * the N updates (N/C, one more for the first N%C), all with its own body: the
 * update stream tl_sim_fill(tl_sim_key(1, 0, k)) with its sample count. Every
 * body and the reference mean (double) are made before the first round, so
 * the timed window holds nothing but the server's work and the client's
 * sends. Per round it times
 *   ingest: the first send to the last 202 (what bench_ingest times alone),
 *   round:  the first send to the round's model, long-polled once every 202
 *           is in, and checks the model against the reference as simulate
 *           does (max|model - ref| <= 1e-5 max|ref|).
 * Prints one line per round (and its CLOCK_MONOTONIC stamps, to cut a perf profile recorded with
 * -k CLOCK_MONOTONIC at the round's tail) and a summary with the median of round / ingest.
 * Returns the exit code: 0, 1 (a failure, said), 77 (no server at @o->url).
 */
int bench_round(const struct bench_round_opts *o);

#endif
