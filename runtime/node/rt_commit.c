// SPDX-License-Identifier: MIT
/* A finished round made durable, or updates refused and the write retried with backoff. */
#include "rt_node_priv.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "ctl_store.h"
#include "rt_flora.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/*
 * The rule (docs/ARCHITECTURE.md, "A model that cannot be stored"): a 202
 * promises that the update will be in a stored model. While a finished
 * round's model cannot be written (ENOSPC, EIO, ...), that promise cannot be
 * made for any new update of the job, whatever round it names: the job's
 * updates get 503 (rt_job_store_refusal) and the write is retried from the
 * tick with backoff (trib_retry: 200 ms doubling to 10 s). Once it succeeds
 * the round commits as it would have, its long polls wake, the rounds behind
 * it commit in order, and updates are taken again.
 */

/* A round of @j done in @s seconds: the node's histogram and the job's. */
static void round_hist_add(struct rt_node *n, struct rt_job *j, double s)
{
	static const double bounds[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
	size_t i;

	for (i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
		if (s <= bounds[i])
			break;
	n->m.rounds_done++;
	n->m.round_hist[i]++;
	n->m.round_sum_s += s;
	j->rounds_done++;
	j->round_hist[i]++;
	j->round_sum_s += s;
}

/* Count a failed write of @j under its errno; the last entry takes the errnos that do not fit. */
static void store_err_count(struct rt_job *j, int err)
{
	struct rt_store_errs *e = j->store_errs;

	for (size_t i = 0; i < RT_STORE_ERRNOS - 1; i++) {
		if (e[i].n == 0 || e[i].err == err) {
			e[i].err = err;
			e[i].n++;
			return;
		}
	}
	e[RT_STORE_ERRNOS - 1].err = 0;
	e[RT_STORE_ERRNOS - 1].n++;
}

/* Writing the model of @j's round @round failed with @err: count it, say so, back off. */
static void store_failed(struct rt_job *j, uint32_t round, int err)
{
	bool first = trib_retry_fail(&j->store, err, round, trib_now_ns(), (int64_t)time(NULL));
	uint32_t k = j->store.retries;

	store_err_count(j, err);
	if (first)
		trib_error("job %s round %u: model v%u could not be stored: %s (%s); the job's "
			   "updates get 503 until it is; retrying by itself (every %.1f s at "
			   "first, %.0f s at most)",
			   j->name, round, round + 1, strerror(-err), trib_errno_name(err),
			   (double)TRIB_RETRY_BASE_NS / 1e9, (double)TRIB_RETRY_CAP_NS / 1e9);
	else if ((k & (k - 1)) == 0) /* 1, 2, 4, 8, ... retries: a line, not a flood */
		trib_warn("job %s round %u: model v%u still not stored after %u retries over "
			  "%.0f s: %s (%s)",
			  j->name, round, round + 1, k,
			  (double)(trib_now_ns() - j->store.since_ns) / 1e9, strerror(-err),
			  trib_errno_name(err));
}

/* The write of @j's round @round succeeded: updates are taken again. */
static void store_recovered(struct rt_job *j, uint32_t round)
{
	uint64_t since = j->store.since_ns;
	uint32_t k = trib_retry_ok(&j->store);

	if (k)
		trib_info("job %s round %u: model v%u stored after %u failed attempt%s over %.1f "
			  "s; the job takes updates again",
			  j->name, round, round + 1, k, k == 1 ? "" : "s",
			  (double)(trib_now_ns() - since) / 1e9);
}

/* The round's total weight (its updates' shares): what flora's A rows are divided by. */
static double d_weight(const struct rt_round *r)
{
	return r->result.weight;
}

/*
 * A flora round's model (rt_flora.h) from its stacked sum @sum, made from the untouched sum on
 * every attempt (a failed write is retried from the same sum). NULL: no memory, or W not > 0.
 */
struct trib_blob *rt__flora_blob(struct rt_node *n, struct rt_job *j, const float *sum, double W,
			       uint32_t version)
{
	/* The frozen base comes from the last model (after a restart: read back from its file). */
	struct trib_blob *prev = rt_job_model(n, j, j->completed);
	struct trib_blob *b = prev ? rt__model_blob(j, NULL, version) : NULL;
	int err = -ENOMEM;

	if (prev && b && prev->len != b->len)
		err = -EINVAL; /* cannot happen: every version has the served layout */
	else if (b)
		err = rt_flora_model(j, sum, W,
				     (const float *)(const void *)(prev->data + j->st_header_len),
				     (float *)(void *)(b->data + j->st_header_len));
	trib_blob_release(prev);
	if (err) {
		trib_error("job %s: the flora model v%u: %s", j->name, version, strerror(-err));
		trib_blob_release(b);
		return NULL;
	}
	return b;
}

/*
 * Make round @r's outcome durable: the optimiser state, the model file (the
 * commit point) and the job's version in SQLite, which a restart resumes
 * from. Nothing in memory changes: on success *bp (the model, held) and
 * *state (owned, or NULL) are the caller's to adopt. 0 or -errno.
 */
static int round_store(struct rt_node *n, struct rt_job *j, struct rt_round *r,
		       struct trib_blob **bp, uint8_t **state)
{
	const float *model = r->result_payload;
	struct trib_blob *b = NULL;
	int err;

	if (!model) {
		const struct shm_seg *seg = shm_arena_ptr(n->arena, r->result.segs_off);

		model = shm_arena_ptr(n->arena, seg->src_off);
	}
	err = rt__opt_state_save(n, j, r, state);
	if (!err)
		err = rt__fedau_save(n, j); /* ahead of the model is harmless: notes are per round */
	if (err) {
		trib_free(*state);
		*state = NULL;
		return err;
	}
	if (j->algo.frl) {
		/* The votes become the ranking here, once (rt_frl.c). */
		int32_t *ranked = trib_malloc((j->n_elem ? j->n_elem : 1) * sizeof(*ranked));

		err = ranked ? rt_job_frl_rank(j, model, ranked) : -ENOMEM;
		b = err ? NULL : rt__model_blob(j, (const float *)(void *)ranked, r->round + 1);
		trib_free(ranked);
	} else {
		b = j->flora ? rt__flora_blob(n, j, model, d_weight(r), r->round + 1)
			     : rt__model_blob(j, model, r->round + 1);
		err = 0;
	}
	err = b ? rt__store_blob(n, j, b) : err ? err : -ENOMEM;
	if (!err)
		err = ctl_store_round_advance(n->store, j->db_id, j->completed, j->completed + 1);
	if (err) {
		trib_blob_release(b);
		trib_free(*state);
		*state = NULL;
		return err;
	}
	*bp = b;
	return 0;
}

/* Round @r (the oldest in flight) is stored as model @b: it is committed. */
static void round_adopt(struct rt_node *n, struct rt_job *j, struct rt_round *r,
			struct trib_blob *b, uint8_t *state)
{
	const struct shm_desc *d = &r->result;
	double secs = (double)(trib_now_ns() - r->open_ns) / 1e9;
	struct ctl_round rec;

	rt__opt_state_adopt(n, j, r, state);
	memset(&rec, 0, sizeof(rec));
	rec.job_id = j->db_id;
	rec.round = r->round;
	rec.closed_unix = (int64_t)time(NULL);
	rec.n_updates = d->count;
	rec.total_weight = d->weight;
	rec.duration_ms = (uint64_t)(secs * 1000);
	rec.clients = r->clients;
	/* History only (the version above is the commit): a failure here loses a table row. */
	if (ctl_store_round_record(n->store, &rec))
		trib_warn("job %s round %u: the round's record (history) was not saved", j->name,
			  r->round);
	else
		rt__round_record_extra(n, j, r);
	trib_blob_release(j->model);
	j->model = b;
	j->completed++;
	j->last_round_ms = rec.duration_ms;
	/* The planner's input: arrivals per second over this round, smoothed. */
	if (secs > 0) {
		double rate = r->received / secs;

		j->arrival_rate = j->arrival_rate > 0 ? 0.5 * j->arrival_rate + 0.5 * rate : rate;
	}
	round_hist_add(n, j, secs);
	trib_info("job %s round %u: %u updates (weight %g; %u distinct client tokens) aggregated "
		  "in %.3f s; model v%u%s", j->name, r->round, d->count, d->weight, r->clients,
		  secs, j->completed,
		  r->recoveries ? " (after replacing failed functions)" : "");
	j->inflight = r->next;
	/* The model is durable: the round's records go, then its slots. */
	rt__journal_round_done(n, j, r->round);
	/* Committed: the partials, accumulators and leftovers go back to the arena. */
	rt__round_free(n, r, true);
	if (n->hooks.model_ready)
		n->hooks.model_ready(n->hooks.ctx, j);
	/* The next round's top may have been waiting for this model. */
	if (j->inflight)
		rt__top_release(n, j, j->inflight);
}

/* Write the models of finished rounds, oldest first, as long as they are next in line. */
void rt__job_complete_rounds(struct rt_node *n, struct rt_job *j)
{
	if (j->deleted) {
		rt__job_drop_rounds(n, j);
		return;
	}
	if (j->secagg.on) {
		/* A masked sum: the secure round unmasks it (rt_api_secagg.c), no model here. */
		rt__secagg_take_sum(n, j);
		return;
	}
	if (n->clustered) {
		/* The node's sum goes to the round's top; the model comes from the controller. */
		for (struct rt_round *r = j->inflight; r; r = r->next)
			if (r->has_result && n->hooks.local_sum)
				n->hooks.local_sum(n->hooks.ctx, j, r);
		return;
	}
	while (j->inflight && j->inflight->has_result && j->inflight->round == j->completed) {
		struct rt_round *r = j->inflight;
		struct trib_blob *b = NULL;
		uint8_t *state = NULL;
		int err;

		/* A write that failed waits for its backoff, whatever event calls here. */
		if (!trib_retry_due(&j->store, trib_now_ns()))
			return;
		err = round_store(n, j, r, &b, &state);
		if (err) {
			store_failed(j, r->round, err);
			return;
		}
		store_recovered(j, r->round);
		round_adopt(n, j, r, b, state);
	}
}

int rt_job_store_refusal(const struct rt_job *j, uint32_t *retry_s)
{
	uint64_t now, wait;

	if (!trib_retry_pending(&j->store))
		return 0;
	if (retry_s) {
		now = trib_now_ns();
		wait = j->store.next_ns > now ? j->store.next_ns - now : 0;
		*retry_s = (uint32_t)((wait + 999999999ull) / 1000000000ull);
		if (*retry_s < 1)
			*retry_s = 1;
	}
	return j->store.err;
}

/* --- a cluster's node: models from the controller --- */

/* Model @b (held) from the controller is stored here: the rounds up to it are done. */
static void remote_adopt(struct rt_node *n, struct rt_job *j, struct trib_blob *b,
			 uint32_t updates, double weight)
{
	uint32_t version = b->version;
	struct ctl_round rec;

	memset(&rec, 0, sizeof(rec));
	rec.job_id = j->db_id;
	rec.round = version - 1;
	rec.closed_unix = (int64_t)time(NULL);
	rec.n_updates = updates;
	rec.total_weight = weight;
	ctl_store_round_record(n->store, &rec);
	trib_blob_release(j->model);
	j->model = b;
	/* This node's trees of the rounds up to this one are done with. */
	while (j->inflight && j->inflight->round < version && j->inflight != j->open) {
		struct rt_round *r = j->inflight;
		double secs = (double)(trib_now_ns() - r->open_ns) / 1e9;

		j->inflight = r->next;
		round_hist_add(n, j, secs);
		j->last_round_ms = (uint64_t)(secs * 1000);
		/* The model is stored: the round's records go, then its slots. */
		rt__journal_round_done(n, j, r->round);
		rt__round_free(n, r, true);
	}
	j->completed = version;
	if (j->round < version) {
		/* Joined late, or had nothing of those rounds. */
		j->round = version;
		j->xtarget = UINT32_MAX;
	}
	trib_info("job %s: model v%u from the cluster (%u updates, weight %g)", j->name, version,
		  updates, weight);
	if (n->hooks.model_ready)
		n->hooks.model_ready(n->hooks.ctx, j);
}

/* Write the model the controller sent (j->remote_pending); on success adopt it. */
static void remote_store(struct rt_node *n, struct rt_job *j)
{
	struct trib_blob *b = j->remote_pending;
	int err = rt__store_blob(n, j, b);

	if (err) {
		store_failed(j, b->version - 1, err);
		return;
	}
	store_recovered(j, b->version - 1);
	j->remote_pending = NULL;
	remote_adopt(n, j, b, j->remote_updates, j->remote_weight);
}

int rt_job_commit_remote(struct rt_node *n, struct rt_job *j, uint32_t version,
			 const float *model, uint32_t updates, double weight)
{
	struct trib_blob *b;

	if (version <= j->completed)
		return 0; /* had it */
	if (j->remote_pending && version <= j->remote_pending->version)
		return 0; /* has it, and stores it by itself (the tick) */
	b = rt__model_blob(j, model, version);
	if (!b)
		return -ENOMEM;
	/* A newer version covers the rounds of the one that could not be stored. */
	trib_blob_release(j->remote_pending);
	j->remote_pending = b;
	j->remote_updates = updates;
	j->remote_weight = weight;
	if (trib_retry_due(&j->store, trib_now_ns()))
		remote_store(n, j);
	return 0;
}

void rt__store_retry_tick(struct rt_node *n, uint64_t now)
{
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		if (!trib_retry_pending(&j->store) || !trib_retry_due(&j->store, now))
			continue;
		if (j->remote_pending)
			remote_store(n, j);
		else
			rt__job_complete_rounds(n, j);
	}
}

/* Log one round that a stop leaves without a stored model. */
static void report_round(const struct rt_job *j, const struct rt_round *r)
{
	const struct trib_retry *s = &j->store;

	if (trib_retry_pending(s) && s->what == r->round)
		trib_error("job %s round %u: NOT SAVED: its model (v%u) could not be stored (%s, "
			   "%s, for %.0f s, %u retries); its %u updates, answered 202, are lost",
			   j->name, r->round, r->round + 1, trib_errno_name(s->err),
			   strerror(-s->err), (double)(trib_now_ns() - s->since_ns) / 1e9,
			   s->retries, r->received);
	else
		trib_error("job %s round %u: NOT SAVED: its model (v%u) was not stored before the "
			   "stop (%s); its %u updates, answered 202, are lost",
			   j->name, r->round, r->round + 1,
			   r->has_result ? "it waits for the round before it" : "still aggregating",
			   r->received);
}

uint32_t rt_node_report_unsaved(const struct rt_node *n)
{
	uint32_t count = 0;

	for (const struct rt_job *j = n->jobs; j; j = j->next) {
		for (const struct rt_round *r = j->inflight; r; r = r->next) {
			/* A cluster node's rounds are the controller's to store. */
			if (!r->closed || n->clustered)
				continue;
			report_round(j, r);
			count++;
		}
		if (j->remote_pending)
			trib_warn("job %s: model v%u from the controller was not stored here (%s); "
				  "the controller keeps it",
				  j->name, j->remote_pending->version,
				  trib_errno_name(j->store.err));
	}
	return count;
}
