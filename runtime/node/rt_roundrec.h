/* SPDX-License-Identifier: MIT */
/*
 * A single node's round records and federated evaluations (issue 15), as
 * the API shows them. A record: {"round", "state", "received",
 * "clients_per_round", "updates", "clients", "opened_at", "closed_at",
 * "duration_s", "bytes", "metrics", "metrics_updates", "evaluation"}.
 * Rounds stored are read from SQLite; rounds in flight from memory.
 */
#ifndef RT_ROUNDREC_H
#define RT_ROUNDREC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rt_node.h"

struct rt_cmetrics;

#define RT_ROUNDS_PAGE_MAX 1000

/* Round @round's record (a new reference), or NULL with *err: -ENOENT (no such round), -errno. */
json_t *rt_job_round_json(struct rt_node *n, struct rt_job *j, uint32_t round, int *err);
/* {"rounds": [records from @from, oldest first, at most @limit], "next": round | null}. */
json_t *rt_job_rounds_json(struct rt_node *n, struct rt_job *j, uint32_t from, uint32_t limit,
			   int *err);

/*
 * Take an evaluation of model @version of @j by @client ("": the job's
 * token) with Idempotency-Key @key (@key_len bytes, 0: none): @samples and
 * @m. 0 and *clients (the version's evaluations counting this one); 1 and
 * *clients: @key's evaluation was taken already (its first answer);
 * -ENOENT: no such version; -EEXIST: @client has one for @version; -E2BIG:
 * the version's evaluations would have more than RT_MSUM_MAX names; -errno.
 */
int rt_job_eval_post(struct rt_node *n, struct rt_job *j, uint32_t version, const char *client,
		     const void *key, size_t key_len, uint64_t samples, const struct rt_cmetrics *m,
		     uint32_t *clients);
/* {"version", "clients", "samples", "metrics"} of @version, or NULL (*err -ENOENT: none). */
json_t *rt_job_eval_json(struct rt_node *n, struct rt_job *j, uint32_t version, int *err);
/* The latest evaluated version (-ENOENT: none) and the samples of all of @j's evaluations. */
int rt_job_eval_latest(struct rt_node *n, struct rt_job *j, uint32_t *version,
		       uint64_t *samples_total);

#endif
