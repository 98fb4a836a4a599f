// SPDX-License-Identifier: MIT
/* The journal of committed records: reserve, fill, commit (mark last), release, find, recover. */
#include "shm_journal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "shm_arena_int.h"
#include "trib_alloc.h"
#include "trib_log.h"

/*
 * Invariants (see shm_journal.h for the protocol):
 *  - a reader trusts a record's fields only after loading state == COMMITTED
 *    with acquire; the writer stores every field before the release-store
 *    that sets COMMITTED, and never writes a COMMITTED record's fields;
 *  - a record is refilled only after passing through FREE and RESERVED, and a
 *    RESERVED record is never reported: so a torn record is never seen;
 *  - commit_no grows by one per commit across the file's life (the writer
 *    continues after the largest found on re-attach), ordering commits.
 */

static uint32_t rec_state(const struct shm_journal_rec *r)
{
	return atomic_load_explicit(&r->state, memory_order_acquire);
}

static struct shm_journal_rec *rec_at(const struct shm_arena *a, uint32_t idx)
{
	return idx < a->nrecs ? &a->recs[idx] : NULL;
}

/* ---- the writer's key index ---- */

/*
 * An open-addressing table (linear probing) of the committed UPDATEs that
 * carry an idempotency key, so that a resend is found without scanning the
 * journal. It lives in the writer's process memory, is rebuilt from the
 * journal on re-attach, and holds record indexes only: the record's fields
 * are the keys. Entries go in at commit and out before the record is freed,
 * while its fields are still intact. At most nrecs entries in 2 * nrecs or
 * more places, so a probe always ends at an empty place.
 */

static uint64_t key_hash(uint64_t job, uint64_t round, const uint8_t *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull, w[2] = {job, round};
	const uint8_t *p = (const uint8_t *)w;
	size_t i;

	for (i = 0; i < sizeof(w); i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	for (i = 0; i < len; i++)
		h = (h ^ key[i]) * 0x100000001b3ull;
	return h;
}

static bool indexed(const struct shm_journal_rec *r)
{
	return r->kind == SHM_REC_UPDATE && r->key_len && r->key_len <= SHM_REC_KEY_MAX;
}

static uint32_t rec_home(const struct shm_arena *a, const struct shm_journal_rec *r)
{
	return (uint32_t)key_hash(r->job, r->round, r->key, r->key_len) & a->kmask;
}

static void kidx_insert(struct shm_arena *a, uint32_t idx)
{
	uint32_t i = rec_home(a, &a->recs[idx]);

	while (a->kidx[i])
		i = (i + 1) & a->kmask;
	a->kidx[i] = idx + 1;
}

/* Backward-shift deletion: later entries of the probe run move up into the hole. */
static void kidx_remove(struct shm_arena *a, uint32_t idx)
{
	uint32_t i = rec_home(a, &a->recs[idx]), j, h;

	while (a->kidx[i] && a->kidx[i] != idx + 1)
		i = (i + 1) & a->kmask;
	if (!a->kidx[i])
		return;
	a->kidx[i] = 0;
	for (j = (i + 1) & a->kmask; a->kidx[j]; j = (j + 1) & a->kmask) {
		h = rec_home(a, &a->recs[a->kidx[j] - 1]);
		/* Move the entry at j unless its home lies cyclically in (i, j]. */
		if (i <= j ? (h <= i || h > j) : (h <= i && h > j)) {
			a->kidx[i] = a->kidx[j];
			a->kidx[j] = 0;
			i = j;
		}
	}
}

int shm_journal__index_build(struct shm_arena *a)
{
	uint32_t n = 2, i;

	while (n < 2 * a->nrecs)
		n *= 2;
	trib_free(a->kidx);
	a->kidx = trib_calloc(n, sizeof(*a->kidx));
	if (!a->kidx)
		return -ENOMEM;
	a->kmask = n - 1;
	for (i = 0; i < a->nrecs; i++)
		if (rec_state(&a->recs[i]) == SHM_REC_COMMITTED && indexed(&a->recs[i]))
			kidx_insert(a, i);
	return 0;
}

/* The one way a committed or reserved record becomes FREE: out of the index first. */
static void rec_free(struct shm_arena *a, uint32_t idx)
{
	struct shm_journal_rec *r = &a->recs[idx];

	if (a->kidx && rec_state(r) == SHM_REC_COMMITTED && indexed(r))
		kidx_remove(a, idx);
	atomic_store_explicit(&r->state, SHM_REC_FREE, memory_order_release);
}

/* ---- records ---- */

unsigned shm_journal__drop_reserved(struct shm_arena *a)
{
	unsigned dropped = 0;
	uint32_t i;

	a->commit_no = 0;
	for (i = 0; i < a->nrecs; i++) {
		struct shm_journal_rec *r = &a->recs[i];
		uint32_t st = rec_state(r);

		if (st == SHM_REC_COMMITTED) {
			if (r->commit_no > a->commit_no)
				a->commit_no = r->commit_no;
		} else if (st != SHM_REC_FREE) {
			/* Being filled when its writer died: never committed, never a 202. */
			atomic_store_explicit(&r->state, SHM_REC_FREE, memory_order_release);
			dropped++;
		}
	}
	return dropped;
}

int shm_rec_reserve(struct shm_arena *a, uint32_t *idx)
{
	uint32_t n = a->nrecs, k;

	if (!a->recs)
		return -ENOTSUP;
	/* Next-fit from the cursor: released records are reused in turn. */
	for (k = 0; k < n; k++) {
		uint32_t i = (a->rec_cursor + k) % n, free_state = SHM_REC_FREE;

		if (atomic_compare_exchange_strong_explicit(&a->recs[i].state, &free_state,
							    SHM_REC_RESERVED, memory_order_acquire,
							    memory_order_relaxed)) {
			a->rec_cursor = (i + 1) % n;
			*idx = i;
			return 0;
		}
	}
	return -ENOSPC;
}

static bool info_valid(const struct shm_arena *a, const struct shm_rec_info *in)
{
	const struct shm_arena_hdr *h = a->hdr;
	uint64_t end = h->data_off + (uint64_t)h->nchunks * SHM_CHUNK;

	if (in->kind != SHM_REC_UPDATE && in->kind != SHM_REC_PARTIAL)
		return false;
	if (!in->count || (in->kind == SHM_REC_UPDATE && in->count != 1))
		return false;
	if (in->key_len > SHM_REC_KEY_MAX || in->body_len > SHM_REC_BODY_MAX ||
	    (in->key_len && !in->key) || (in->body_len && !in->body))
		return false;
	if (in->client_len > SHM_REC_CLIENT_MAX || (in->client_len && !in->client))
		return false;
	if (in->slot_off < h->data_off || in->slot_off >= end ||
	    (in->slot_off - h->data_off) % SHM_CHUNK)
		return false;
	return !in->nsegs || (in->segs_off >= in->slot_off && in->segs_off < end);
}

int shm_rec_fill(struct shm_arena *a, uint32_t idx, const struct shm_rec_info *in)
{
	struct shm_journal_rec *r;

	if (!a->recs)
		return -ENOTSUP;
	r = rec_at(a, idx);
	if (!r || rec_state(r) != SHM_REC_RESERVED || !info_valid(a, in))
		return -EINVAL;
	r->kind = in->kind;
	r->key_len = (uint8_t)in->key_len;
	r->body_len = (uint8_t)in->body_len;
	r->job = in->job;
	r->round = in->round;
	r->seq = in->seq;
	r->count = in->count;
	r->nsegs = in->nsegs;
	r->weight = in->weight;
	r->slot_off = in->slot_off;
	r->segs_off = in->segs_off;
	r->commit_no = 0;
	r->http_status = in->http_status;
	r->client_len = (uint8_t)in->client_len;
	r->reserved0 = 0;
	r->fold_scale = in->fold_scale;
	memset(r->key, 0, sizeof(r->key));
	memset(r->body, 0, sizeof(r->body));
	memset(r->client, 0, sizeof(r->client));
	if (in->client_len)
		memcpy(r->client, in->client, in->client_len);
	if (in->key_len)
		memcpy(r->key, in->key, in->key_len);
	if (in->body_len)
		memcpy(r->body, in->body, in->body_len);
	return 0;
}

int shm_rec_commit(struct shm_arena *a, uint32_t idx)
{
	struct shm_journal_rec *r;

	if (!a->recs)
		return -ENOTSUP;
	r = rec_at(a, idx);
	if (!r || rec_state(r) != SHM_REC_RESERVED)
		return -EINVAL;
	r->commit_no = ++a->commit_no;
	/* The commit mark, last: every store above is visible to whoever sees it. */
	atomic_store_explicit(&r->state, SHM_REC_COMMITTED, memory_order_release);
	if (a->kidx && indexed(r))
		kidx_insert(a, idx);
	return 0;
}

int shm_rec_release(struct shm_arena *a, uint32_t idx)
{
	struct shm_journal_rec *r;

	if (!a->recs)
		return -ENOTSUP;
	r = rec_at(a, idx);
	if (!r || rec_state(r) == SHM_REC_FREE)
		return -EINVAL;
	rec_free(a, idx);
	return 0;
}

/* Copy @r (already seen COMMITTED) into @out; key and body point into the record. */
static void rec_copy(const struct shm_journal_rec *r, struct shm_rec_info *out)
{
	out->kind = r->kind;
	out->job = r->job;
	out->round = r->round;
	out->seq = r->seq;
	out->count = r->count;
	out->nsegs = r->nsegs;
	out->weight = r->weight;
	out->slot_off = r->slot_off;
	out->segs_off = r->segs_off;
	out->fold_scale = r->fold_scale;
	out->http_status = r->http_status;
	out->key = r->key;
	out->key_len = r->key_len <= SHM_REC_KEY_MAX ? r->key_len : SHM_REC_KEY_MAX;
	out->body = r->body;
	out->body_len = r->body_len <= SHM_REC_BODY_MAX ? r->body_len : SHM_REC_BODY_MAX;
	out->client = r->client;
	out->client_len = r->client_len <= SHM_REC_CLIENT_MAX ? r->client_len : SHM_REC_CLIENT_MAX;
	out->commit_no = r->commit_no;
}

int shm_rec_get(const struct shm_arena *a, uint32_t idx, struct shm_rec_info *info)
{
	const struct shm_journal_rec *r;

	if (!a->recs)
		return -ENOTSUP;
	r = rec_at(a, idx);
	if (!r)
		return -EINVAL;
	if (rec_state(r) != SHM_REC_COMMITTED)
		return -ENOENT;
	rec_copy(r, info);
	return 0;
}

int shm_rec_each(const struct shm_arena *a, shm_rec_cb cb, void *ctx)
{
	struct shm_rec_info info;
	int err;

	if (!a->recs)
		return -ENOTSUP;
	for (uint32_t i = 0; i < a->nrecs; i++) {
		if (rec_state(&a->recs[i]) != SHM_REC_COMMITTED)
			continue;
		rec_copy(&a->recs[i], &info);
		err = cb(ctx, i, &info);
		if (err)
			return err;
	}
	return 0;
}

static bool rec_matches(const struct shm_journal_rec *r, uint64_t job, uint64_t round,
			const void *key, size_t key_len)
{
	return rec_state(r) == SHM_REC_COMMITTED && r->kind == SHM_REC_UPDATE && r->job == job &&
	       r->round == round && r->key_len == key_len && !memcmp(r->key, key, key_len);
}

int shm_rec_find(const struct shm_arena *a, uint64_t job, uint64_t round, const void *key,
		 size_t key_len, uint32_t *idx)
{
	uint32_t i;

	if (!a->recs)
		return -ENOTSUP;
	if (!key_len || key_len > SHM_REC_KEY_MAX)
		return -EINVAL;
	if (a->kidx) {
		for (i = (uint32_t)key_hash(job, round, key, key_len) & a->kmask; a->kidx[i];
		     i = (i + 1) & a->kmask) {
			if (rec_matches(&a->recs[a->kidx[i] - 1], job, round, key, key_len)) {
				*idx = a->kidx[i] - 1;
				return 0;
			}
		}
		return -ENOENT;
	}
	/* No index (a process other than the writer, or it could not be allocated): scan. */
	for (i = 0; i < a->nrecs; i++) {
		if (rec_matches(&a->recs[i], job, round, key, key_len)) {
			*idx = i;
			return 0;
		}
	}
	return -ENOENT;
}

/* Whether committed @r (of the same job and round) lies inside [seq, end). */
static bool covered_by(const struct shm_journal_rec *r, uint64_t job, uint64_t round, uint64_t seq,
		       uint64_t end)
{
	return r->job == job && r->round == round && r->seq >= seq && r->seq + r->count <= end;
}

int shm_rec_supersede(struct shm_arena *a, uint32_t partial, unsigned *released)
{
	const struct shm_journal_rec *p;
	unsigned n = 0;
	uint32_t i;

	if (!a->recs)
		return -ENOTSUP;
	p = rec_at(a, partial);
	if (!p || rec_state(p) != SHM_REC_COMMITTED || p->kind != SHM_REC_PARTIAL)
		return -EINVAL;
	for (i = 0; i < a->nrecs; i++) {
		struct shm_journal_rec *r = &a->recs[i];

		if (i == partial || rec_state(r) != SHM_REC_COMMITTED ||
		    !covered_by(r, p->job, p->round, p->seq, p->seq + p->count))
			continue;
		rec_free(a, i);
		n++;
	}
	if (released)
		*released = n;
	return 0;
}

int shm_journal_release_round(struct shm_arena *a, uint64_t job, uint64_t round, unsigned *released)
{
	unsigned n = 0;
	uint32_t i;

	if (!a->recs)
		return -ENOTSUP;
	for (i = 0; i < a->nrecs; i++) {
		struct shm_journal_rec *r = &a->recs[i];

		if (rec_state(r) != SHM_REC_COMMITTED || r->job != job || r->round != round)
			continue;
		rec_free(a, i);
		n++;
	}
	if (released)
		*released = n;
	return 0;
}

void shm_journal_usage(const struct shm_arena *a, uint32_t *committed, uint32_t *capacity)
{
	uint32_t i, n = 0;

	for (i = 0; i < a->nrecs; i++)
		n += rec_state(&a->recs[i]) == SHM_REC_COMMITTED;
	if (committed)
		*committed = n;
	if (capacity)
		*capacity = a->nrecs;
}

/* ---- recovery ---- */

/* A recovery pass's view of the committed records, sorted by (job, round, seq, -count). */
struct recovery {
	struct shm_arena *a;
	uint32_t *idx;	 /* committed record indexes, sorted */
	uint8_t *gone;	 /* per sorted entry: 1 = superseded */
	uint64_t *slots; /* slot_off of each kept record, sorted */
	uint32_t n, nkept;
};

static int rec_cmp(const void *x, const void *y, void *ctx)
{
	const struct shm_arena *a = ctx;
	const struct shm_journal_rec *p = &a->recs[*(const uint32_t *)x];
	const struct shm_journal_rec *q = &a->recs[*(const uint32_t *)y];

	if (p->job != q->job)
		return p->job < q->job ? -1 : 1;
	if (p->round != q->round)
		return p->round < q->round ? -1 : 1;
	if (p->seq != q->seq)
		return p->seq < q->seq ? -1 : 1;
	if (p->count != q->count)
		return p->count > q->count ? -1 : 1; /* the wider range first: it covers */
	if (p->kind != q->kind)
		return p->kind > q->kind ? -1 : 1; /* a PARTIAL before an UPDATE of one seq */
	return p->commit_no < q->commit_no ? -1 : p->commit_no > q->commit_no;
}

static int u64_cmp(const void *x, const void *y)
{
	uint64_t p = *(const uint64_t *)x, q = *(const uint64_t *)y;

	return p < q ? -1 : p > q;
}

/* Step 1: the record's slot is live, holds its segment table and is long enough. */
static bool rec_slot_ok(struct shm_arena *a, const struct shm_journal_rec *r)
{
	size_t len = shm_slot_len(a, r->slot_off);
	uint64_t segs_end = r->segs_off + (uint64_t)r->nsegs * sizeof(struct shm_seg);

	if (!len)
		return false;
	return !r->nsegs || (r->segs_off >= r->slot_off && segs_end <= r->slot_off + len &&
			     segs_end > r->segs_off);
}

/* Steps 1 and 2, changing nothing: mark superseded entries, fail on inconsistency. */
static int recovery_plan(struct recovery *rc)
{
	const struct shm_journal_rec *recs = rc->a->recs;
	uint64_t job = 0, round = 0, cover_end = 0, kept_end = 0;
	bool first = true;
	uint32_t i, k = 0;

	for (i = 0; i < rc->n; i++) {
		const struct shm_journal_rec *r = &recs[rc->idx[i]];
		uint64_t end = r->seq + r->count;

		if (!rec_slot_ok(rc->a, r) || end <= r->seq)
			return -EBADMSG;
		if (first || r->job != job || r->round != round) {
			job = r->job;
			round = r->round;
			cover_end = kept_end = 0;
			first = false;
		} else if (r->seq < cover_end && end <= cover_end) {
			rc->gone[i] = 1; /* inside the outermost PARTIAL so far */
			continue;
		} else if (r->seq < kept_end) {
			return -EBADMSG; /* overlaps a kept record without being inside a PARTIAL */
		}
		if (r->kind == SHM_REC_PARTIAL)
			cover_end = end;
		kept_end = end;
		rc->slots[k++] = r->slot_off;
	}
	rc->nkept = k;
	qsort(rc->slots, k, sizeof(*rc->slots), u64_cmp);
	for (i = 1; i < k; i++)
		if (rc->slots[i] == rc->slots[i - 1])
			return -EBADMSG; /* two kept records, one slot */
	return 0;
}

/* Step 3: free the allocations no kept record names. */
static uint32_t recovery_reclaim(struct recovery *rc)
{
	struct shm_arena *a = rc->a;
	uint32_t i, n = 0;

	for (i = 0; i < a->hdr->nchunks; i++) {
		uint32_t len = a->runlen[i];
		uint64_t off = a->hdr->data_off + (uint64_t)i * SHM_CHUNK;

		if (!len)
			continue;
		if (!bsearch(&off, rc->slots, rc->nkept, sizeof(*rc->slots), u64_cmp) &&
		    !shm_slot_free(a, off))
			n++;
		i += len - 1;
	}
	return n;
}

static int recovery_collect(struct recovery *rc)
{
	struct shm_arena *a = rc->a;
	uint32_t i, n = 0;

	for (i = 0; i < a->nrecs; i++)
		n += rec_state(&a->recs[i]) == SHM_REC_COMMITTED;
	/* One more than needed so that no allocation is of 0 bytes. */
	rc->idx = trib_calloc(n + 1, sizeof(*rc->idx));
	rc->gone = trib_calloc(n + 1, sizeof(*rc->gone));
	rc->slots = trib_calloc(n + 1, sizeof(*rc->slots));
	if (!rc->idx || !rc->gone || !rc->slots)
		return -ENOMEM;
	for (i = 0; i < a->nrecs && rc->n < n; i++)
		if (rec_state(&a->recs[i]) == SHM_REC_COMMITTED)
			rc->idx[rc->n++] = i;
	qsort_r(rc->idx, rc->n, sizeof(*rc->idx), rec_cmp, a);
	return 0;
}

int shm_journal_recover(struct shm_arena *a, shm_rec_cb cb, void *ctx, struct shm_journal_stats *st)
{
	struct shm_journal_stats s = {0};
	struct recovery rc = {.a = a};
	struct shm_rec_info info;
	uint32_t i;
	int err;

	if (!a->recs)
		return -ENOTSUP;
	/* Taking the allocator lock once repairs what a dead lock owner left (EOWNERDEAD). */
	shm_arena_usage(a, NULL, NULL, NULL);
	err = recovery_collect(&rc);
	if (err)
		goto out_free;
	err = recovery_plan(&rc);
	if (err) {
		trib_error(
		    "arena %s: the journal is inconsistent (a slot that is not live, shared, "
		    "or overlapping partial ranges); nothing was changed",
		    a->path ? a->path : "(memfd)");
		goto out_free;
	}
	for (i = 0; i < rc.n; i++) {
		if (rc.gone[i]) {
			rec_free(a, rc.idx[i]);
			s.superseded++;
		} else if (a->recs[rc.idx[i]].kind == SHM_REC_PARTIAL) {
			s.partials++;
		} else {
			s.updates++;
		}
	}
	s.reclaimed = recovery_reclaim(&rc);
	for (i = 0; i < rc.n && cb; i++) {
		if (rc.gone[i])
			continue;
		rec_copy(&a->recs[rc.idx[i]], &info);
		err = cb(ctx, rc.idx[i], &info);
		if (err)
			break;
	}
out_free:
	if (st)
		*st = s;
	trib_free(rc.slots);
	trib_free(rc.gone);
	trib_free(rc.idx);
	return err;
}
