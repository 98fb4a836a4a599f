/* SPDX-License-Identifier: MIT */
/*
 * The Idempotency-Keys a node put into its store, per job: a filter in front of the store's
 * lookup (rt_job_idem_find).
 *
 * Why: a keyed update whose key is not in the arena's journal was looked up in SQLite before
 * it was read, which for every new key (nearly all of them) found nothing, at a read
 * transaction each: ~8% of the gateway's CPU for a 4 KB update (docs/BENCHMARKS.md, "The
 * gateway's CPU per update"). The store gets a job's keys only from this node (keys_save,
 * runtime/node/rt_journal.c), so a key it never put there cannot be found there: for the
 * rounds the filter covers, a key it does not hold is answered "not seen" without the store.
 *
 * What it holds: a 64-bit hash of each key put, with its round; a hash it holds says "ask the
 * store" (a collision costs one lookup, never a wrong answer). @from: the rounds it covers,
 * those >= from (a job loaded after a restart has keys of its open round in the store from
 * before; a job created here has none). Pruned with the store's own pruning. Out of memory,
 * it stops covering anything (every lookup goes to the store, as before), said once.
 */
#ifndef RT_IDEM_H
#define RT_IDEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rt_idem_mem {
	uint64_t *h;     /* open addressing; 0 is empty (a hash is never 0) */
	uint32_t *round; /* the round of h[i] */
	uint32_t cap, n; /* cap: 0 or a power of two */
	uint32_t from;   /* rounds >= from are covered, when on */
	bool on;         /* false: covers nothing (not set up, or out of memory) */
};

/* Cover rounds >= @from, from now on (no key of them is in the store yet but those added). */
void rt_idem_mem_init(struct rt_idem_mem *m, uint32_t from);
/* Key @key of round @round was put into the store. */
void rt_idem_mem_add(struct rt_idem_mem *m, uint32_t round, const void *key, size_t len);
/* Whether the store may hold @key for a round >= @round_lo: false only if it cannot. */
bool rt_idem_mem_may_have(const struct rt_idem_mem *m, uint32_t round_lo, const void *key,
			  size_t len);
/* The store forgot rounds below @below: so does the filter (it keeps covering the rest). */
void rt_idem_mem_prune(struct rt_idem_mem *m, uint32_t below);
void rt_idem_mem_free(struct rt_idem_mem *m);

#endif
