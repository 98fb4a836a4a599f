// SPDX-License-Identifier: MIT
/* --durability disk in the node: log each update before its 202, replay at start, cut rounds. */
#include "rt_node_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shm_arena.h"
#include "shm_journal.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"
#include "rt_wal.h"

static void wal_dir(const struct rt_node *n, char *path, size_t len)
{
	snprintf(path, len, "%s/wal", n->opts.data_dir);
}

/*
 * The log names a job as the arena's journal does: by its SQLite id, in a
 * cluster by the controller's (a cluster node's SQLite is in memory: its ids
 * change at each start, the controller's do not).
 */
static uint64_t log_job_id(const struct rt_job *j)
{
	return j->xid ? j->xid : (uint64_t)j->db_id;
}

static int held_add(void *ctx, const struct rt_wal_rec *rec)
{
	struct rt_node *n = ctx;
	struct rt_log_held *h;

	if (!n->nwal_held || (n->nwal_held >= 64 && !(n->nwal_held & (n->nwal_held - 1)))) {
		size_t ncap = n->nwal_held ? n->nwal_held * 2 : 64;
		struct rt_log_held *nv = trib_realloc(n->wal_held, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		n->wal_held = nv;
	}
	h = &n->wal_held[n->nwal_held++];
	memset(h, 0, sizeof(*h));
	h->job = rec->job;
	h->round = rec->round;
	h->seq = rec->seq;
	h->weight = rec->weight;
	if (rec->client_len <= RT_CLIENT_ID_MAX)
		memcpy(h->client, rec->client, rec->client_len);
	return 0;
}

/*
 * A cluster node joins before its jobs exist here (the controller sends
 * them): what the log holds is read now, for the join's report, and put
 * back into rounds at the first join (rt__wal_replay(), which reads it
 * again: the log does not change in between, nothing is appended before).
 */
static int held_scan(struct rt_node *n, const char *dir)
{
	struct rt_wal_replay_stats st;
	int err = rt_wal_replay(dir, held_add, n, &st);

	if (err) {
		trib_error("--durability disk: reading the log in %s: %s", dir, strerror(-err));
		return err;
	}
	if (n->nwal_held)
		trib_info("wal: the log holds %zu update%s of rounds in flight (reported when "
			  "this node joins)",
			  n->nwal_held, n->nwal_held == 1 ? "" : "s");
	return 0;
}

int rt__wal_open(struct rt_node *n)
{
	char dir[PATH_MAX];
	uint32_t removed = 0;
	int err;

	if (!n->opts.durability_disk)
		return 0;
	wal_dir(n, dir, sizeof(dir));
	if (n->opts.fresh) {
		err = rt_wal_wipe(dir, &removed);
		if (err) {
			trib_error("--fresh: removing the log in %s: %s", dir, strerror(-err));
			return err;
		}
		if (removed)
			trib_info("--fresh: the log's %u segment file%s removed", removed,
				  removed == 1 ? "" : "s");
	}
	/* A log from a past run keeps what it acknowledged, whatever became of the arena. */
	n->wal_kept = !n->opts.fresh && access(dir, F_OK) == 0;
	if (n->opts.controller && n->wal_kept) {
		err = held_scan(n, dir);
		if (err)
			return err;
	}
	err = rt_wal_open(dir, &n->wal);
	if (err) {
		trib_error("--durability disk: the log in %s: %s", dir, strerror(-err));
		return err;
	}
	trib_info("durability: disk (each update is in %s, fdatasync'ed, before its 202)", dir);
	return 0;
}

void rt__wal_close(struct rt_node *n)
{
	rt_wal_close(n->wal);
	n->wal = NULL;
	trib_free(n->wal_held);
	n->wal_held = NULL;
	n->nwal_held = 0;
}

/* The log's record of update @s of @job's @round: its bytes and segments, as in the arena. */
static int prepare(struct rt_node *n, uint64_t job, uint32_t round, uint32_t s,
		   const struct rt_accept_in *in, uint64_t body_len, const void *key,
		   size_t key_len, const char *ans, size_t ans_len, const char *client,
		   size_t client_len, struct rt_wal_ent **out)
{
	const struct shm_seg *segs = shm_arena_ptr(n->arena, in->segs_off);
	struct shm_seg *rel = trib_malloc(in->nsegs * sizeof(*rel));
	struct rt_wal_rec rec;
	int err;

	if (!rel)
		return -ENOMEM;
	/* Segment offsets relative to the body: replay puts it in another slot. */
	for (uint32_t i = 0; i < in->nsegs; i++) {
		rel[i] = segs[i];
		rel[i].src_off -= in->slot_off;
	}
	rec = (struct rt_wal_rec){job,
				  round,
				  s,
				  in->weight,
				  in->fold_scale,
				  in->nsegs,
				  key,
				  key_len,
				  ans,
				  ans_len,
				  rel,
				  in->nsegs * sizeof(*rel),
				  shm_arena_ptr(n->arena, in->slot_off),
				  body_len,
				  client,
				  client_len};
	err = rt_wal_prepare(&rec, out);
	trib_free(rel);
	return err;
}

int rt__wal_prepare(struct rt_node *n, struct rt_job *j, const struct rt_update_in *u,
		    const struct rt_accept_in *in, uint32_t s, const char *ans, size_t ans_len,
		    struct rt_wal_ent **out)
{
	return prepare(n, log_job_id(j), j->round, s, in,
		       u->data_len ? u->data_len : in->segs_off - in->slot_off, u->key, u->key_len,
		       ans, ans_len, u->client, u->client ? strlen(u->client) : 0, out);
}

void rt__wal_discard(struct rt_wal_ent *e)
{
	rt_wal_discard(e);
}

uint64_t rt__wal_submit(struct rt_node *n, struct rt_wal_ent *e)
{
	return rt_wal_submit(n->wal, e);
}

void rt__wal_settle(struct rt_node *n)
{
	if (n->wal)
		rt_wal_settle(n->wal);
}

int rt_node_wal_flush(struct rt_node *n)
{
	return rt__wal_durable_all(n);
}

int rt__wal_durable_all(struct rt_node *n)
{
	struct rt_wal_state st;

	if (!n->wal)
		return 0;
	rt_wal_settle(n->wal);
	rt_wal_state(n->wal, &st);
	if (st.durable >= rt_wal_last(n->wal))
		return 0;
	return st.err ? st.err : -EAGAIN;
}

void rt__wal_cut(struct rt_node *n, struct rt_job *j, uint32_t round)
{
	if (n->wal)
		rt_wal_cut(n->wal, log_job_id(j), round);
}

/* ---- the loop's side ---- */

int rt_node_wal_fd(const struct rt_node *n)
{
	return n->wal ? rt_wal_fd(n->wal) : -1;
}

static void count_err(struct rt_store_errs *v, int err)
{
	uint32_t i;

	for (i = 0; i + 1 < RT_STORE_ERRNOS; i++) {
		if (v[i].err == err || (!v[i].err && !v[i].n)) {
			v[i].err = err;
			v[i].n++;
			return;
		}
	}
	v[RT_STORE_ERRNOS - 1].err = 0; /* the rest */
	v[RT_STORE_ERRNOS - 1].n++;
}

void rt_node_wal_poll(struct rt_node *n)
{
	struct rt_wal_state st;

	if (!n->wal)
		return;
	rt_wal_state(n->wal, &st);
	if (st.st.failures > n->wal_failures && st.err)
		count_err(n->wal_errs, st.err);
	n->wal_failures = st.st.failures;
	n->m.wal_appends = st.st.appends;
	n->m.wal_batches = st.st.batches;
	n->m.wal_fsyncs = st.st.fsyncs;
	n->m.wal_bytes = st.st.bytes;
	n->m.wal_max_batch = st.st.max_batch;
	n->m.wal_cut_files = st.st.cut_files;
	memcpy(n->m.wal_batch_hist, st.st.batch_hist, sizeof(n->m.wal_batch_hist));
	n->wal_err = st.err;
	n->wal_durable = st.durable;
	n->wal_failed_to = st.failed_to;
	n->wal_retry_ns = st.retry_ns;
}

int rt_node_wal_ticket(const struct rt_node *n, uint64_t ticket)
{
	if (ticket <= n->wal_durable)
		return 1;
	if (ticket <= n->wal_failed_to)
		return n->wal_err ? n->wal_err : -EIO;
	return 0;
}

int rt_node_wal_refusal(const struct rt_node *n, uint32_t *retry_s)
{
	uint64_t now = trib_now_ns(), s = 1;

	if (!n->wal || !n->wal_err)
		return 0;
	if (n->wal_retry_ns > now)
		s = (n->wal_retry_ns - now + 999999999ull) / 1000000000ull;
	if (retry_s)
		*retry_s = s ? (uint32_t)s : 1;
	return n->wal_err;
}

/* ---- replay at start ---- */

/* One update the log holds: job, round, seq. */
struct logged {
	uint64_t job;
	uint32_t round, seq;
};

struct replay {
	struct rt_node *n;
	uint64_t fed, dup, stored, dropped;
	struct logged *seen; /* every valid record (owned), sorted after the replay */
	size_t nseen, capseen;
};

static int logged_cmp(const void *a, const void *b)
{
	const struct logged *x = a, *y = b;

	if (x->job != y->job)
		return x->job < y->job ? -1 : 1;
	if (x->round != y->round)
		return x->round < y->round ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int seen_add(struct replay *rp, const struct rt_wal_rec *rec)
{
	if (rp->nseen == rp->capseen) {
		size_t ncap = rp->capseen ? rp->capseen * 2 : 256;
		struct logged *nv = trib_realloc(rp->seen, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		rp->seen = nv;
		rp->capseen = ncap;
	}
	rp->seen[rp->nseen++] = (struct logged){rec->job, rec->round, rec->seq};
	return 0;
}

static bool seen_has(const struct replay *rp, uint64_t job, uint64_t round, uint64_t seq)
{
	struct logged k = {job, (uint32_t)round, (uint32_t)seq};

	return rp->nseen && bsearch(&k, rp->seen, rp->nseen, sizeof(k), logged_cmp);
}

static struct rt_job *job_of(struct rt_node *n, uint64_t id)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (log_job_id(j) == id)
			return j;
	return NULL;
}

/* One logged update into a fresh slot, then into the open round with its record. */
static int feed(struct rt_node *n, struct rt_job *j, const struct rt_wal_rec *rec)
{
	uint64_t pad = (rec->body_len + 63) & ~63ull, slot;
	struct rt_accept_in in = {
	    .nsegs = rec->nsegs, .weight = rec->weight, .fold_scale = rec->fold_scale};
	char client[RT_CLIENT_ID_MAX + 1];
	struct shm_seg *segs;
	int err;

	if (rec->meta_len != (size_t)rec->nsegs * sizeof(*segs) || !rec->nsegs ||
	    rec->client_len > RT_CLIENT_ID_MAX)
		return -EBADMSG;
	memcpy(client, rec->client, rec->client_len);
	client[rec->client_len] = '\0';
	err = shm_slot_alloc(n->arena, pad + rec->meta_len, &slot);
	if (err)
		return err;
	memcpy(shm_arena_ptr(n->arena, slot), rec->body, rec->body_len);
	segs = shm_arena_ptr(n->arena, slot + pad);
	memcpy(segs, rec->meta, rec->meta_len);
	for (uint32_t i = 0; i < rec->nsegs; i++)
		segs[i].src_off += slot;
	in.slot_off = slot;
	in.segs_off = slot + pad;
	/* Its client is counted in the round again: a second update of it is a 409. */
	err = rt__journal_update(n, j, &in, rec->seq, rec->key, rec->key_len, rec->ans,
				 rec->ans_len, rec->client_len ? client : NULL);
	if (err)
		shm_slot_free(n->arena, slot);
	return err;
}

/*
 * In log order (per job, round by round, seq by seq): an update of a stored
 * round is skipped; one the arena put back already (seq below the round's
 * next) is a duplicate, skipped; the next seq goes in. Anything else (a
 * gap) is dropped, loudly: it cannot be placed where it was counted.
 */
static int replay_one(void *ctx, const struct rt_wal_rec *rec)
{
	struct replay *rp = ctx;
	struct rt_node *n = rp->n;
	struct rt_job *j = job_of(n, rec->job);
	int err = seen_add(rp, rec);

	if (err)
		return err;
	if (!j) {
		rp->dropped++;
		return 0;
	}
	if (rec->round < j->round) {
		rp->stored++;
		return 0;
	}
	/* A later round: the open one closed short (at its deadline) before the crash. */
	if (rec->round > j->round && j->open && j->open->received)
		rt__round_close(n, j, j->open, true);
	if (rec->round == j->round && rec->seq < rt__next_seq(j)) {
		rp->dup++;
		return 0;
	}
	if (rec->round != j->round || rec->seq != rt__next_seq(j)) {
		trib_error("job %s: the log's update of round %u seq %u does not follow the "
			   "recovered round %u (at seq %u): dropped",
			   j->name, rec->round, rec->seq, j->round, rt__next_seq(j));
		rp->dropped++;
		return 0;
	}
	err = feed(n, j, rec);
	if (err) {
		trib_error("job %s round %u: putting the log's update %u back: %s", j->name,
			   rec->round, rec->seq, strerror(-err));
		return err;
	}
	rp->fed++;
	return 0;
}

/* What relog_one() did. */
struct relog {
	struct rt_node *n;
	const struct replay *rp;
	uint64_t logged, partial_only;
	int err;
};

/*
 * An update the arena kept whose log record never reached the disk (the
 * process died between its commit and its fdatasync: never answered 202)
 * is logged now, so that a resend of its key, which the journal answers
 * 202, is on disk too. Updates inside a PARTIAL that the log lacks (a
 * previous run with --durability memory) cannot be logged: counted.
 */
static int relog_one(void *ctx, uint32_t idx, const struct shm_rec_info *i)
{
	struct relog *rl = ctx;
	struct rt_accept_in in = {.slot_off = i->slot_off,
				  .segs_off = i->segs_off,
				  .nsegs = i->nsegs,
				  .weight = i->weight,
				  .fold_scale = i->fold_scale};
	struct rt_wal_ent *e;

	(void)idx;
	if (i->kind == SHM_REC_PARTIAL) {
		for (uint64_t s = i->seq; s < i->seq + i->count; s++)
			rl->partial_only += !seen_has(rl->rp, i->job, i->round, s);
		return 0;
	}
	if (i->kind != SHM_REC_UPDATE || seen_has(rl->rp, i->job, i->round, i->seq))
		return 0;
	rl->err = prepare(rl->n, i->job, (uint32_t)i->round, (uint32_t)i->seq, &in,
			  i->segs_off - i->slot_off, i->key, i->key_len, i->body, i->body_len,
			  i->client, i->client_len, &e);
	if (rl->err)
		return rl->err;
	rt_wal_submit(rl->n->wal, e);
	rl->logged++;
	return 0;
}

static int relog(struct rt_node *n, struct replay *rp)
{
	struct relog rl = {.n = n, .rp = rp};
	int err;

	if (rp->nseen)
		qsort(rp->seen, rp->nseen, sizeof(*rp->seen), logged_cmp);
	err = shm_rec_each(n->arena, relog_one, &rl);
	if (!err && rl.logged)
		err = rt_wal_sync(n->wal);
	if (err) {
		trib_error("wal: logging the arena's updates the log lacks: %s", strerror(-err));
		return err;
	}
	if (rl.logged)
		trib_info("wal: %llu update%s the arena kept but the log lacked (never answered "
			  "202) logged",
			  (unsigned long long)rl.logged, rl.logged == 1 ? "" : "s");
	if (rl.partial_only)
		trib_warn("wal: %llu update%s of open rounds are in the arena's partial sums but "
			  "not in the log (accepted with --durability memory): a reboot before "
			  "their round is stored loses them",
			  (unsigned long long)rl.partial_only, rl.partial_only == 1 ? "" : "s");
	/* Stored rounds whose cut a crash interrupted: their files go now. */
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (j->completed)
			rt_wal_cut(n->wal, log_job_id(j), j->completed - 1);
	return 0;
}

int rt__wal_replay(struct rt_node *n)
{
	struct replay rp = {.n = n};
	struct rt_wal_replay_stats st;
	char dir[PATH_MAX];
	uint64_t t0 = trib_now_ns();
	int err;

	if (!n->wal)
		return 0;
	wal_dir(n, dir, sizeof(dir));
	err = rt_wal_replay(dir, replay_one, &rp, &st);
	if (err) {
		trib_error("--durability disk: replaying the log in %s: %s", dir, strerror(-err));
		trib_free(rp.seen);
		return err;
	}
	err = relog(n, &rp);
	trib_free(rp.seen);
	if (err)
		return err;
	/* In the arena's journal now: the join reports them from there. */
	trib_free(n->wal_held);
	n->wal_held = NULL;
	n->nwal_held = 0;
	n->m.wal_recovered += rp.fed;
	n->m.updates_recovered += rp.fed;
	n->m.wal_duplicates += rp.dup;
	if (st.records || st.torn)
		trib_info("wal: %llu update%s put back from the log (%llu already in the arena, "
			  "%llu of stored rounds, %llu dropped; %u segment%s, %u torn tail%s, "
			  "%llu of format 1 without client ids) in %.3f s",
			  (unsigned long long)rp.fed, rp.fed == 1 ? "" : "s",
			  (unsigned long long)rp.dup, (unsigned long long)rp.stored,
			  (unsigned long long)rp.dropped, st.segments, st.segments == 1 ? "" : "s",
			  st.torn, st.torn == 1 ? "" : "s", (unsigned long long)st.v1_records,
			  (double)(trib_now_ns() - t0) / 1e9);
	return 0;
}

/* ---- a cluster node's first join ---- */

/* One (job, round, seq) the arena's journal holds. */
static int arena_seen(void *ctx, uint32_t idx, const struct shm_rec_info *i)
{
	struct replay *rp = ctx;
	struct rt_wal_rec rec = {.job = i->job, .round = (uint32_t)i->round};
	int err = 0;

	(void)idx;
	if (i->kind != SHM_REC_UPDATE && i->kind != SHM_REC_PARTIAL)
		return 0;
	for (uint64_t s = i->seq; !err && s < i->seq + i->count; s++) {
		rec.seq = (uint32_t)s;
		err = seen_add(rp, &rec);
	}
	return err;
}

int rt_node_log_holds(struct rt_node *n, int (*cb)(void *ctx, const struct rt_log_held *h),
		      void *ctx)
{
	struct replay rp = {.n = n};
	int err = 0;

	if (!n->nwal_held)
		return 0;
	/* A re-attached arena has some of them already: reported once, from there. */
	err = shm_rec_each(n->arena, arena_seen, &rp);
	if (!err && rp.nseen)
		qsort(rp.seen, rp.nseen, sizeof(*rp.seen), logged_cmp);
	for (size_t k = 0; !err && k < n->nwal_held; k++) {
		const struct rt_log_held *h = &n->wal_held[k];

		if (!seen_has(&rp, h->job, h->round, h->seq))
			err = cb(ctx, h);
	}
	trib_free(rp.seen);
	return err;
}

bool rt_node_keeps_acked(const struct rt_node *n)
{
	return n->arena_reattached || (n->wal && n->wal_kept);
}
