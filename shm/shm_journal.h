/* SPDX-License-Identifier: MIT */
/* The journal of committed records in a file arena: an update is committed before its 202. */
#ifndef SHM_JOURNAL_H
#define SHM_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "shm_arena.h"

/*
 * The journal is an array of struct shm_journal_rec (shm_arena_abi.h) in a
 * file arena's header region, one record per slot chunk. A record goes
 *
 *   FREE --reserve--> RESERVED --fill, commit--> COMMITTED --release--> FREE
 *
 * and is COMMITTED only by the store-release of its state after every other
 * field (the commit mark, written last). A crash before the mark loses only
 * that record, whose update was never answered 202; shm_arena_file_open()
 * frees RESERVED records. A crash after the mark keeps it, with its slot.
 *
 * Capacity: every live record names a live slot of its own (an UPDATE its
 * payload, a PARTIAL its accumulator) and a slot is at least one chunk, so
 * live records <= live slots <= chunks = capacity. Reserve fails with -ENOSPC
 * only if a caller breaks that rule; the gateway answers 503 then, as it does
 * when shm_slot_alloc() fails.
 *
 * The slot rule (what keeps a committed record's bytes valid): a slot named
 * by a committed record is not freed, nor handed to anyone who may free it,
 * until the record is released or superseded. So a leaf frees its updates'
 * slots only after the PARTIAL covering them is committed; a parent frees a
 * child's partial slot only after its own covering PARTIAL is committed.
 *
 * Supersede, crash-safe: commit the PARTIAL first, then shm_rec_supersede()
 * releases the records it covers. A crash between the two leaves both; a
 * reader keeps the PARTIAL and ignores what it covers (shm_journal_recover()
 * releases those records then, finishing the step).
 *
 * Concurrency: one writer, the node's gateway (runtime) thread, reserves,
 * fills, commits, supersedes and releases; readers are that same thread, or
 * a later process after re-attaching. Reserve takes a record with a
 * compare-and-swap, so more writer threads would not share a record, but the
 * key index is not thread-safe, and shm_rec_find() and shm_rec_get() may
 * read a record another thread is releasing and refilling: callers with more
 * than one thread serialise every call.
 * Function processes never touch the journal.
 *
 * Every function here returns -ENOTSUP for a memfd arena (no journal).
 */

/* One record as the caller sees it (a copy, except key and body, below). */
struct shm_rec_info {
	uint16_t kind;	      /* enum shm_rec_kind */
	uint64_t job;	      /* the job's SQLite id */
	uint64_t round;	      /* round or model version */
	uint64_t seq;	      /* UPDATE: its index in the round; PARTIAL: first covered */
	uint32_t count;	      /* 1 for an UPDATE; PARTIAL: covers [seq, seq + count) */
	uint32_t nsegs;	      /* segment table entries */
	double weight;	      /* sample count, or total weight of a PARTIAL */
	uint64_t slot_off;    /* the live slot holding the payload or accumulator */
	uint64_t segs_off;    /* segment table offset, 0 if none */
	float fold_scale;     /* FedBuff staleness factor; 0 = 1 */
	uint16_t http_status; /* the answer given (202), for a resend */
	const void *key;      /* Idempotency-Key; from get: points into the record */
	size_t key_len;	      /* <= SHM_REC_KEY_MAX */
	const void *body;     /* the answer's body; from get: points into the record */
	size_t body_len;      /* <= SHM_REC_BODY_MAX */
	const void *client;   /* UPDATE: its client token's id; from get: points into the record */
	size_t client_len;    /* <= SHM_REC_CLIENT_MAX; 0: none (the job's token) */
	uint64_t commit_no;   /* from get/recover: the order of commits; ignored by fill */
};

/* Take a FREE record; *@idx names it. Returns 0, -ENOSPC (journal full: answer 503). */
int shm_rec_reserve(struct shm_arena *a, uint32_t *idx);

/*
 * Copy @info into the RESERVED record @idx (strings copied too).
 * Returns 0 or -EINVAL: not reserved, unknown kind, count 0 (or not 1 for an
 * UPDATE), key or body too long, or a slot_off that is not in the slot area.
 */
int shm_rec_fill(struct shm_arena *a, uint32_t idx, const struct shm_rec_info *info);

/*
 * Commit the filled record @idx: write its commit number, then the mark
 * (state = COMMITTED, release). Call before the 202 is written.
 * Returns 0 or -EINVAL (not reserved).
 */
int shm_rec_commit(struct shm_arena *a, uint32_t idx);

/*
 * Free record @idx (COMMITTED or RESERVED): after the round's model is
 * durable, or when a PARTIAL supersedes it (shm_rec_supersede()), or to
 * abandon a reservation. The record's slot stays the caller's to free.
 * Returns 0 or -EINVAL (out of range or already free).
 */
int shm_rec_release(struct shm_arena *a, uint32_t idx);

/* Copy committed record @idx into @info. Returns 0, -ENOENT (not committed), -EINVAL. */
int shm_rec_get(const struct shm_arena *a, uint32_t idx, struct shm_rec_info *info);

/*
 * The committed UPDATE of (@job, @round) with Idempotency-Key @key: *@idx.
 * The handle that created or opened the file keeps an index of the keys of
 * its committed UPDATEs (built on open, kept by commit and release), so this
 * is a hash lookup; a handle from shm_arena_attach() scans the journal.
 * Returns 0, -ENOENT, or -EINVAL (key_len 0 or too long).
 */
int shm_rec_find(const struct shm_arena *a, uint64_t job, uint64_t round, const void *key,
		 size_t key_len, uint32_t *idx);

/*
 * Release every committed record of the same job and round whose range lies
 * inside that of the committed PARTIAL @partial (not @partial itself).
 * *@released (may be NULL) gets how many. Returns 0, or -EINVAL when
 * @partial is not a committed PARTIAL.
 */
int shm_rec_supersede(struct shm_arena *a, uint32_t partial, unsigned *released);

/*
 * Release every committed record of (@job, @round): the round's model is
 * durable. *@released (may be NULL) gets how many. Returns 0.
 */
int shm_journal_release_round(struct shm_arena *a, uint64_t job, uint64_t round,
			      unsigned *released);

/* Committed records now, and the journal's capacity. */
void shm_journal_usage(const struct shm_arena *a, uint32_t *committed, uint32_t *capacity);

/* What shm_journal_recover() found and did. */
struct shm_journal_stats {
	uint32_t updates;    /* UPDATE records kept (reported) */
	uint32_t partials;   /* PARTIAL records kept (reported) */
	uint32_t superseded; /* records covered by a kept PARTIAL: released */
	uint32_t reclaimed;  /* slots named by no kept record: freed */
};

/* Called once per kept record, in (job, round, seq) order; non-zero stops recovery. */
typedef int (*shm_rec_cb)(void *ctx, uint32_t idx, const struct shm_rec_info *info);

/*
 * Call @cb for every committed record, in index order (no order of commits);
 * the key and body point into the record. Stops at, and returns, @cb's
 * first non-zero value; -ENOTSUP without a journal.
 */
int shm_rec_each(const struct shm_arena *a, shm_rec_cb cb, void *ctx);

/*
 * Recovery after re-attaching (shm_arena_file_open()), before the arena is
 * used: how a reader reconstructs each round from UPDATE and PARTIAL records.
 *  1. Check every committed record: its slot is a live allocation that holds
 *     its segment table, and no two records share a slot; PARTIAL ranges of
 *     one (job, round) nest or are disjoint.
 *  2. Per (job, round): a record inside a committed PARTIAL's range is
 *     superseded (its bytes are in the PARTIAL) and is released. What is left
 *     are the outermost PARTIALs and the UPDATEs no PARTIAL covers: together
 *     they cover each committed sequence number exactly once.
 *  3. Free every slot that no kept record names: the dead process's
 *     accumulators, models and half-received bodies. Call it only when no
 *     other process uses the arena (the old node's functions are gone).
 *  4. Report each kept record to @cb (may be NULL).
 * A check that fails changes nothing and returns -EBADMSG (the file is then
 * moved aside: never half-used). Returns 0, -EBADMSG, -ENOMEM, or @cb's value.
 * *@st (may be NULL) gets the counts.
 */
int shm_journal_recover(struct shm_arena *a, shm_rec_cb cb, void *ctx,
			struct shm_journal_stats *st);

#endif
