// SPDX-License-Identifier: MIT
/*
 * Exact robust rules across nodes, the node's half (docs/ARCHITECTURE.md "Robust rules across
 * nodes"): a cluster node runs the single node's shard functions over its range of coordinates
 * and the slices of every update of the round; the cluster layer moves slices, sums Krum's
 * distances and concatenates ranges. The kernels are the single node's (fn_robust.c,
 * fn_bulyan.c): nothing here aggregates.
 */
#include "rt_node_priv.h"

#include <errno.h>
#include <string.h>

#include "fn_bulyan.h"
#include "fn_robust.h"
#include "shm_arena.h"
#include "trib_alloc.h"

struct rt_round *rt_job_round_at(struct rt_job *j, uint32_t round)
{
	for (struct rt_round *r = j->inflight; r; r = r->next)
		if (r->round == round)
			return r;
	return NULL;
}

const struct shm_desc *rt_round_updates(const struct rt_round *r, uint32_t *k, bool *all)
{
	*k = r->received;
	*all = r->closed;
	return r->rups;
}

bool rt_round_shards_busy(const struct rt_round *r)
{
	return r->nshards && r->ndone < r->nshards;
}

/* The task of an earlier start (another partition of the round after a node was lost). */
static void task_drop(struct rt_node *n, struct rt_round *r)
{
	if (r->task_slot)
		shm_slot_free(n->arena, r->task_slot);
	if (r->out_slot)
		shm_slot_free(n->arena, r->out_slot);
	r->task_slot = 0;
	r->out_slot = 0;
	trib_free(r->shard_fn);
	trib_free(r->shard_done);
	r->shard_fn = NULL;
	r->shard_done = NULL;
	r->nshards = 0;
	r->ndone = 0;
}

int rt_node_xshard_start(struct rt_node *n, struct rt_round *r, const struct shm_desc *descs,
			 uint32_t k, uint64_t lo, uint64_t hi)
{
	int err;

	if (rt_round_shards_busy(r))
		return -EBUSY;
	if (lo >= hi)
		return -EINVAL;
	task_drop(n, r);
	err = rt__robust_start(n, r->job, r, descs, k, lo, hi);
	if (err && !rt_round_shards_busy(r))
		task_drop(n, r);
	return err;
}

int rt_node_xshard_dist(struct rt_node *n, const struct rt_round *r, double *d)
{
	const struct fn_shard_task *t;
	const double *parts;
	size_t kk;

	if (!r->task_slot)
		return -EINVAL;
	t = shm_arena_ptr(n->arena, r->task_slot);
	kk = (size_t)t->k * t->k;
	parts = shm_arena_ptr(n->arena, t->dmat_off);
	memset(d, 0, kk * sizeof(double));
	/* Shard by shard, as the single node sums them (rt__robust_phase_done). */
	for (uint32_t s = 0; s < t->shards; s++)
		for (size_t x = 0; x < kk; x++)
			d[x] += parts[s * kk + x];
	return 0;
}

int rt_node_xshard_select(const struct rt_job *j, const double *d, uint32_t k, uint32_t *sel,
			  uint32_t *m)
{
	double *scratch = trib_malloc(2 * (size_t)k * sizeof(double));
	int err;

	if (!scratch)
		return -ENOMEM;
	if (j->algo.rule == FN_RULE_BULYAN) {
		*m = (uint32_t)FN_BULYAN_THETA(k, j->algo.f);
		err = fn_bulyan_select(d, k, j->algo.f, sel, scratch);
	} else if (j->algo.rule == FN_RULE_KRUM) {
		*m = j->algo.m;
		err = fn_krum_select(d, k, j->algo.f, j->algo.m, sel, NULL, scratch);
	} else {
		err = -EINVAL;
	}
	trib_free(scratch);
	return err;
}

int rt_node_xshard_phase2(struct rt_node *n, struct rt_round *r, const uint32_t *sel, uint32_t m)
{
	struct fn_shard_task *t;
	int err = 0;

	if (!r->task_slot || rt_round_shards_busy(r))
		return -EBUSY;
	t = shm_arena_ptr(n->arena, r->task_slot);
	if (t->phase != 1 || !m || m > t->k)
		return -EINVAL;
	for (uint32_t i = 0; i < m; i++)
		if (sel[i] >= t->k)
			return -EINVAL;
	memcpy(shm_arena_ptr(n->arena, t->sel_off), sel, (size_t)m * sizeof(*sel));
	t->m = m;
	t->phase = 2;
	r->ndone = 0;
	for (uint32_t i = 0; i < r->nshards && !err; i++)
		err = rt__shard_start(n, r, i);
	return err;
}

const float *rt_node_xshard_out(struct rt_node *n, const struct rt_round *r)
{
	return r->out_slot ? shm_arena_ptr(n->arena, r->out_slot + 2048) : NULL;
}

int rt_node_xshard_add_model(struct rt_node *n, const struct rt_job *j,
			     const struct rt_server_io *io, float *model)
{
	const float *prev;
	uint8_t *state;

	if (!io->model_slot || !(j->algo.par.flags & FN_PAR_DELTA))
		return -EINVAL;
	prev = shm_arena_ptr(n->arena, io->model_slot);
	/*
	 * One float add per coordinate, the robust value first, as the single node's shards
	 * do it (fn_robust.c, robust_shard): the same bits whatever node made each range.
	 */
	for (uint64_t c = 0; c < j->n_elem; c++)
		model[c] += prev[c];
	if (io->state_slot) {
		state = shm_arena_ptr(n->arena, io->state_slot);
		memcpy(state + io->state_size, state, io->state_size);
	}
	return 0;
}
