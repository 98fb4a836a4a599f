/* SPDX-License-Identifier: MIT */
/*
 * A round record's newer columns (schema 5) and federated evaluations, in
 * the store (ctl_store_rec.c). Functions return 0 or -errno as ctl_store.h's.
 */
#ifndef CTL_STORE_REC_H
#define CTL_STORE_REC_H

#include <stdint.h>

#include "ctl_store.h"

/* A round's row: ctl_store.h's record and what schema 5 added (NULL / 0 before it). */
struct ctl_round_rec {
	uint32_t round;
	int64_t closed_unix;     /* when its model was stored */
	uint32_t n_updates, clients;
	double total_weight;
	uint64_t duration_ms;    /* first update to model stored */
	double opened_at;        /* unix s of its first update; 0: unknown */
	double closed_at;        /* unix s it stopped taking updates; 0: unknown */
	uint64_t bytes;          /* update bodies received */
	uint32_t metrics_updates; /* updates that carried metrics */
	const char *metrics_json; /* {name: mean}, or NULL; valid during the callback only */
};

/* Add the schema-5 columns to the row of @round (recorded already). -ENOENT: no row. */
int ctl_store_round_extra_put(struct ctl_store *st, int64_t job_id, uint32_t round,
			      double opened_at, double closed_at, uint64_t bytes,
			      uint32_t metrics_updates, const char *metrics_json);
/*
 * @cb for each recorded round of @job_id from @from (inclusive), oldest
 * first, at most @limit rows; the store is locked during @cb (it must not
 * use the store; nonzero stops and is returned).
 */
int ctl_store_round_page(struct ctl_store *st, int64_t job_id, uint32_t from, uint32_t limit,
			 int (*cb)(void *ctx, const struct ctl_round_rec *r), void *ctx);

/*
 * An evaluation already given for @version of @job_id: by Idempotency-Key
 * @key (@key_len bytes, 0: none) -> 0 and *nth (its answer's count); else by
 * client @client ("": none) -> -EEXIST; else -ENOENT.
 */
int ctl_store_eval_find(struct ctl_store *st, int64_t job_id, uint32_t version,
			const char *client, const void *key, size_t key_len, uint32_t *nth);
/*
 * The aggregate of @version: evaluations, samples and the sums' JSON (into
 * *sums, owned: trib_free). -ENOENT if none.
 */
int ctl_store_eval_get(struct ctl_store *st, int64_t job_id, uint32_t version, uint32_t *clients,
		       uint64_t *samples, char **sums);
/* The highest evaluated version of @job_id (-ENOENT: none) and the samples of every version. */
int ctl_store_eval_latest(struct ctl_store *st, int64_t job_id, uint32_t *version,
			  uint64_t *samples_total);
/*
 * Keep evaluation number @nth (1-based: the version's count after it) of
 * @version, by @client ("" for the job's token) and @key, with @samples,
 * and the version's aggregate after it (@sums), in one transaction.
 * -EEXIST if the client or the key has one for @version already.
 */
int ctl_store_eval_put(struct ctl_store *st, int64_t job_id, uint32_t version, uint32_t nth,
		       const char *client, const void *key, size_t key_len, uint64_t samples,
		       const char *sums);

#endif
