// SPDX-License-Identifier: MIT
/* A secure round's model: the server holds only the unmasked mean, and stores it as the version. */
#include "rt_node_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl_store.h"
#include "fn_secagg.h"
#include "rt_flora.h"
#include "rt_fnproc.h"
#include "rt_secagg.h"
#include "rt_secagg_log.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/*
 * The unmasked mean is dequantised straight into the version's blob: no model-sized buffer to
 * allocate (its pages faulted in) and copy on the server thread between the last reveal and
 * the stored model (docs/BENCHMARKS.md, helper sarev).
 */
struct trib_blob *rt_job_secagg_blob(const struct rt_job *j, float **model)
{
	struct trib_blob *b = trib_blob_new(j->st_header_len + j->n_elem * sizeof(float));

	if (!b)
		return NULL;
	memcpy(b->data, j->st_header, j->st_header_len);
	b->version = j->completed + 1;
	*model = (float *)(void *)(b->data + j->st_header_len);
	return b;
}

int rt_job_secagg_commit(struct rt_node *n, struct rt_job *j, struct trib_blob *b,
			 uint32_t clients, double weight, uint64_t opened_ns)
{
	struct ctl_round rec;
	int err;

	/* A secure job has no plain rounds (rt_api refuses its updates): its tree is done. */
	err = !j->secagg.on || j->open ? -EBUSY : 0;
	/* Only the rounds kept for the unmasking: freed after, once their records went. */
	for (const struct rt_round *r = j->inflight; !err && r; r = r->next)
		if (!r->sa_taken)
			err = -EBUSY;
	/* The served layout (a flora base prefix never applies: secagg takes no flora). */
	if (!err && (b->version != j->completed + 1 ||
		     b->len != j->st_header_len + rt_flora_model_elems(j) * sizeof(float)))
		err = -EINVAL;
	/* A cluster's version is the controller's: it comes back as the model of every node. */
	if (!err && n->hooks.secagg_commit)
		err = n->hooks.secagg_commit(n->hooks.ctx, j,
					     (const float *)(const void *)(b->data +
									   j->st_header_len),
					     clients, weight, opened_ns);
	if (err || n->hooks.secagg_commit) {
		trib_blob_release(b);
		return err;
	}
	/* Durable first (the file, then the version): a crash between keeps the old version. */
	err = rt__store_blob(n, j, b);
	if (!err)
		err = ctl_store_round_advance(n->store, j->db_id, j->completed, j->completed + 1);
	if (err) {
		trib_blob_release(b);
		return err;
	}
	memset(&rec, 0, sizeof(rec));
	rec.job_id = j->db_id;
	rec.round = j->completed;
	rec.closed_unix = (int64_t)time(NULL);
	rec.n_updates = clients;
	rec.total_weight = weight;
	rec.duration_ms = (trib_now_ns() - opened_ns) / 1000000u;
	rec.clients = clients;
	if (ctl_store_round_record(n->store, &rec))
		trib_warn("job %s round %u: the round's record (history) was not saved", j->name,
			  rec.round);
	trib_blob_release(j->model);
	j->model = b;
	j->completed++;
	j->round = j->completed;
	j->last_round_ms = rec.duration_ms;
	trib_info("job %s round %u: secure aggregation of %u clients (weight %g); model v%u",
		  j->name, rec.round, clients, weight, j->completed);
	if (n->hooks.model_ready)
		n->hooks.model_ready(n->hooks.ctx, j);
	return 0;
}

void rt_job_secagg_close(struct rt_node *n, struct rt_job *j)
{
	if (j->open && !j->open->closed)
		rt__round_close(n, j, j->open, false);
}

const uint32_t *rt_job_secagg_sum(const struct rt_job *j, uint32_t round, uint32_t *count)
{
	if (!j->sa_sum || j->sa_sum_round != round)
		return NULL;
	*count = j->sa_sum_count;
	return j->sa_sum;
}

/* The round of @j kept for its unmasking (its sum taken), or NULL. */
static struct rt_round *kept_round(const struct rt_job *j, uint32_t round)
{
	for (struct rt_round *r = j->inflight; r; r = r->next)
		if (r->sa_taken && r->round == round)
			return r;
	return NULL;
}

void rt__secagg_task_wipe(struct rt_node *n, struct rt_round *r)
{
	const struct fn_secagg_task *t;

	if (!r->task_slot)
		return;
	t = shm_arena_ptr(n->arena, r->task_slot);
	/* The count is the runtime's own (written by rt_job_secagg_unmask_start). */
	explicit_bzero(shm_arena_ptr(n->arena, r->task_slot),
		       64 + (size_t)t->count * sizeof(struct fn_secagg_stream) +
			       (size_t)t->npairs * sizeof(struct fn_secagg_pair));
}

void rt__secagg_orphan_reap(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	struct rt_round **pp = &j->inflight;

	if (r->ndone < r->nshards)
		return;
	while (*pp && *pp != r)
		pp = &(*pp)->next;
	if (*pp)
		*pp = r->next;
	rt__round_free(n, r, true);
	if (!j->open && !j->inflight)
		j->round = j->completed;
}

/*
 * @r's round is over but its shards still run: they read the task slot and write the output
 * slot, so neither may go back to the arena (another update would land where a shard writes).
 * The keys in the task are wiped now (a shard reading zeros makes garbage nobody reads), the
 * shards are killed, and @r stays on @j's list, owning both slots, until each has ended
 * (rt__secagg_shard_judged): killed, exited or done. One with no process left counts at once.
 */
static void orphan(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	if (!r->sa_orphan) {
		r->sa_orphan = true;
		rt__secagg_task_wipe(n, r);
		trib_info("job %s round %u: the unmasking's shards are stopped (%u of %u running); "
			  "its slots go back when they have exited", j->name, r->round,
			  r->nshards - r->ndone, r->nshards);
	}
	for (uint32_t i = 0; i < r->nshards; i++) {
		struct rt_fn *fn = r->shard_fn[i] ? rt_fnset_find(n->fns, r->shard_fn[i]) : NULL;

		if (r->shard_done[i])
			continue;
		if (fn && !fn->exited) {
			rt_fn_kill(fn);
			continue;
		}
		r->shard_done[i] = true; /* never started, or its process is gone */
		r->ndone++;
	}
}

bool rt__secagg_shard_judged(struct rt_node *n, struct rt_fn *fn)
{
	struct rt_job *j = NULL;
	struct rt_round *r = rt__round_find(n, fn->cfg.job, fn->cfg.round, &j);
	uint32_t i = fn->node;
	int st = fn->wait_status;

	if (!r || !r->sa_taken || i >= r->nshards || r->shard_fn[i] != fn->id ||
	    r->shard_done[i])
		return false;
	if (r->sa_orphan) {
		r->shard_done[i] = true;
		r->ndone++;
		rt__secagg_orphan_reap(n, j, r);
		return true;
	}
	/* Killed from outside: a replacement writes the same range again (recover()). */
	if (!WIFEXITED(st))
		return false;
	/* It gave up on its own: its task is the same for any replacement, so is the outcome. */
	n->m.fn_failed++;
	rt__secagg_shard_lost(r, "unmask: shard %u of %u (fn %u) failed with exit status %d "
			      "expanding the masks (its reason is in the node's log, 'shard %u')",
			      i, r->nshards, fn->id, WEXITSTATUS(st), i);
	trib_error("job %s round %u: %s", j->name, r->round, r->sa_why);
	return true;
}

void rt__secagg_shard_lost(struct rt_round *r, const char *fmt, ...)
{
	va_list ap;

	if (!r->sa_taken || r->sa_why[0])
		return;
	va_start(ap, fmt);
	vsnprintf(r->sa_why, sizeof(r->sa_why), fmt, ap);
	va_end(ap);
}

const char *rt_job_secagg_failure(const struct rt_job *j, uint32_t round)
{
	struct rt_round *r = kept_round(j, round);

	return r && r->sa_why[0] ? r->sa_why : NULL;
}

void rt_job_secagg_release(struct rt_node *n, struct rt_job *j)
{
	j->sa_sum = NULL; /* the live round's (rt_job_secagg_drop frees it with the round) */
	while (j->inflight && j->inflight->sa_taken && j->inflight != j->open) {
		struct rt_round *r = j->inflight;

		if (rt_round_shards_busy(r)) {
			orphan(n, j, r);
			if (rt_round_shards_busy(r))
				return; /* freed when its last shard ends; the next round waits */
		}
		/* The task holds the round's mask keys: rt__round_free wipes them, then the slots. */
		j->inflight = r->next;
		rt__round_free(n, r, true);
	}
	/* No version came of the round: numbers follow versions, as a plain job's do. */
	if (!j->open && !j->inflight)
		j->round = j->completed;
}

int rt_job_secagg_unmask_start(struct rt_node *n, struct rt_job *j, uint32_t round,
			       const struct fn_secagg_stream *s, size_t count,
			       const struct fn_secagg_pair *p, size_t npairs)
{
	struct rt_round *r = kept_round(j, round);
	uint64_t words = rt__tree_elems(j), parts;
	struct fn_secagg_task *t;
	int err;

	if (!r || r->nshards)
		return -ENOENT;
	if (n->dataplane == FN_DP_TCP)
		return -EOPNOTSUPP; /* a shard's output would be its private memory */
	/* One shard per core, each at least 4096 words (fewer for a small model). */
	parts = (uint64_t)sysconf(_SC_NPROCESSORS_ONLN);
	if (parts > words / 4096)
		parts = words / 4096;
	if (parts < 1)
		parts = 1;
	err = shm_slot_alloc(n->arena, 64 + count * sizeof(*s) + npairs * sizeof(*p),
			     &r->task_slot);
	if (!err)
		err = shm_slot_alloc(n->arena, SHM_ACC_HDR + words * sizeof(uint32_t), &r->out_slot);
	if (err)
		return err;
	r->shard_fn = trib_calloc(parts, sizeof(*r->shard_fn));
	r->shard_done = trib_calloc(parts, sizeof(*r->shard_done));
	if (!r->shard_fn || !r->shard_done)
		return -ENOMEM;
	t = shm_arena_ptr(n->arena, r->task_slot);
	memset(t, 0, sizeof(*t));
	t->version = FN_ABI_VERSION;
	t->parts = (uint32_t)parts;
	t->count = (uint32_t)count;
	t->words = words;
	t->npairs = (uint32_t)npairs;
	t->round = round;
	t->streams_off = r->task_slot + 64;
	t->pairs_off = t->streams_off + count * sizeof(*s);
	memcpy(shm_arena_ptr(n->arena, t->streams_off), s, count * sizeof(*s));
	if (npairs)
		memcpy(shm_arena_ptr(n->arena, t->pairs_off), p, npairs * sizeof(*p));
	r->nshards = (uint32_t)parts;
	r->ndone = 0;
	r->recoveries = 0;
	for (uint32_t i = 0; i < parts; i++) {
		err = rt__shard_start(n, r, i);
		if (err)
			return err;
	}
	return 0;
}

const uint32_t *rt_job_secagg_correction(struct rt_node *n, const struct rt_job *j,
					 uint32_t round)
{
	struct rt_round *r = kept_round(j, round);

	if (!r || !r->sa_expanded)
		return NULL;
	return shm_arena_ptr(n->arena, r->out_slot + 2048);
}

bool rt_job_secagg_busy(const struct rt_job *j)
{
	return j->open || j->inflight;
}

/*
 * rt__job_complete_rounds' secure branch: the top handed off the masked sum of @r. It is copied
 * out (rt__tree_elems words, a memcpy on the loop: no fold here) for the round's unmasking and
 * the tree's slots go back at once; a sum nobody waits for (the round failed) is wiped.
 */
void rt__secagg_take_sum(struct rt_node *n, struct rt_job *j)
{
	while (j->inflight && j->inflight->has_result) {
		struct rt_round *r = j->inflight;
		uint64_t words = rt__tree_elems(j);
		const uint32_t *sum = (const uint32_t *)(const void *)rt_round_sum(n, r);
		bool wanted = j->sa_live && j->sa_live->r && j->sa_live->round == r->round;

		/* Copied straight into the live round's sum (rt_secagg_set_sum then has nothing to
		 * copy): one 4 MB copy into fresh pages is ~1.5 ms of the server thread at 1M
		 * parameters, most of it page faults (docs/BENCHMARKS.md, helper sarev). */
		j->sa_sum = wanted ? rt_secagg_sum_dst(j->sa_live->r, words) : NULL;
		if (j->sa_sum) {
			memcpy(j->sa_sum, sum, words * sizeof(*j->sa_sum));
			j->sa_sum_round = r->round;
			j->sa_sum_count = r->result.count;
			/* Kept for the unmasking's shards (rt_job_secagg_unmask_start). */
			r->has_result = false;
			r->sa_taken = true;
			continue;
		}
		if (wanted)
			trib_error("job %s round %u: the tree's masked sum does not fit the round "
				   "(%llu words); the round fails", j->name, r->round,
				   (unsigned long long)words);
		j->inflight = r->next;
		rt__round_free(n, r, true);
		j->round = j->completed;
	}
}

void rt_job_secagg_drop(struct rt_job *j)
{
	j->sa_sum = NULL; /* in the round's state, freed (wiped) with it below */
	if (!j->sa_live)
		return;
	rt_secagg_free(j->sa_live->r);
	rt_salog_close(j->sa_live->log);
	trib_free(j->sa_live->dig);
	trib_free(j->sa_live->sent);
	trib_free(j->sa_live->ids);
	trib_free(j->sa_live->slot);
	trib_free(j->sa_live);
	j->sa_live = NULL;
}
