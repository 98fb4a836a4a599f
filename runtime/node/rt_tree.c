// SPDX-License-Identifier: MIT
/* A round's tree: functions acquired and configured as top, mids and leaves; partials routed up. */
#include "rt_node_priv.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "ctl_plan.h"
#include "fn_dequant.h"
#include "fn_sparse.h"
#include "fn_frl.h"
#include "rt_flora.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"

/* --- rounds and trees --- */

uint64_t rt__tree_elems(const struct rt_job *j)
{
	/* A secure job's tree sums the masked n_u too: one more word than the model. */
	return j->n_elem + (j->secagg.on ? 1 : 0);
}

uint64_t rt__acc_slot_len(const struct rt_job *j)
{
	return SHM_ACC_HDR + rt__tree_elems(j) * sizeof(float);
}

int rt__garbage_add(struct rt_round *r, uint64_t slot)
{
	if (!slot)
		return 0;
	if (r->ngarbage == r->capgarbage) {
		uint32_t ncap = r->capgarbage ? r->capgarbage * 2 : 8;
		uint64_t *ng = trib_realloc(r->garbage, ncap * sizeof(*ng));

		if (!ng)
			return -ENOMEM;
		r->garbage = ng;
		r->capgarbage = ncap;
	}
	r->garbage[r->ngarbage++] = slot;
	return 0;
}

struct warm_pick {
	struct rt_fn *fn;
	bool secure; /* the config needs a tributary-fn-sa (rt_fn_cfg_secure) */
};

static void pick_warm(struct rt_fn *fn, void *arg)
{
	struct warm_pick *p = arg;

	if (fn->state != RT_FN_WARM || fn->exited || fn->sock < 0 || (p->secure && !fn->secure))
		return;
	/*
	 * A tributary-fn-sa runs any config, but a plain one takes a plain function
	 * first: the secure ones stay free for the next unmasking. Then one that is
	 * running before one still starting (--fn-pool: a config would wait behind
	 * its exec); then the most recently idle one: its pages and caches are the
	 * warmest.
	 */
	if (p->fn && !p->secure && p->fn->secure != fn->secure) {
		if (!fn->secure)
			p->fn = fn;
		return;
	}
	if (!p->fn || (p->fn->starting && !fn->starting) ||
	    (p->fn->starting == fn->starting && fn->idle_ns > p->fn->idle_ns))
		p->fn = fn;
}

/* A warm function (reuse) or a new one (cold start), configured with @cfg. */
int rt__fn_acquire(struct rt_node *n, struct fn_config *cfg, const struct fn_params *par,
		      struct rt_fn **out)
{
	struct warm_pick p = { NULL, rt_fn_cfg_secure(cfg) };
	int err;

	rt_fnset_foreach(n->fns, pick_warm, &p);
	if (p.fn) {
		err = rt_fn_configure(p.fn, cfg, par);
		if (!err) {
			n->m.fn_reused++;
			*out = p.fn;
			return 0;
		}
		trib_warn("fn %u: reusing it failed (%s); starting a new one", p.fn->id,
			  strerror(-err));
	}
	cfg->fn_id = rt_fnset_reserve_ids(n->fns, 1);
	err = rt_fnset_spawn(n->fns, cfg, par, NULL, out);
	if (err)
		return err;
	n->m.fn_spawned++;
	rt__watch_fn(n, *out);
	return 0;
}

static void count_idle(struct rt_fn *fn, void *arg)
{
	if (fn->state == RT_FN_WARM && !fn->exited && fn->sock >= 0)
		(*(uint32_t *)arg)++;
}

uint32_t rt__fn_idle(struct rt_node *n)
{
	uint32_t idle = 0;

	rt_fnset_foreach(n->fns, count_idle, &idle);
	return idle;
}

/*
 * A cold start on demand comes when a round needs a function and none is
 * warm: the first round of a job, a scale-out. Under a 1000-client ingest it
 * took 2-4 ms (median; the spawned process waits for a CPU behind the
 * gateway and the folding functions) where alone it takes 0.5 ms. A
 * pre-started function turns that into a warm hand-off. The pool is what the
 * operator sizes (--fn-pool) for the burst of functions a round's first
 * moments need (its planned leaves and top). One function per tick: a
 * refill is background work and never a burst of processes competing with
 * the round for the CPUs (8 started at once took 3 ms each, not 0.5).
 */
void rt__fn_pool_fill(struct rt_node *n)
{
	struct rt_fn *fn;
	int err;

	if (!n->opts.fn_pool || n->stopping || rt__fn_idle(n) >= n->opts.fn_pool)
		return;
	err = rt_fnset_prestart(n->fns, &fn);
	if (err) {
		if (err != n->pool_err)
			trib_warn("--fn-pool: pre-starting a function: %s; trying again each tick",
				  strerror(-err));
		n->pool_err = err;
		return;
	}
	if (n->pool_err)
		trib_info("--fn-pool: pre-starting functions again");
	n->pool_err = 0;
	n->m.fn_spawned++;
	rt__watch_fn(n, fn);
}

void rt__cfg_init(struct rt_node *n, struct rt_round *r, struct fn_config *cfg, uint16_t role,
		     uint64_t acc)
{
	(void)n;
	memset(cfg, 0, sizeof(*cfg));
	cfg->version = FN_ABI_VERSION;
	cfg->kind = FN_MSG_CONFIG;
	cfg->job = r->job->id;
	cfg->round = r->round;
	cfg->role = role;
	cfg->algorithm = r->job->secagg.on      ? FN_ALGO_SECAGG :
			 r->job->algo.scaffold ? FN_ALGO_SCAFFOLD :
			 r->job->algo.frl      ? FN_ALGO_FRL :
			 r->job->algo.flora    ? FN_ALGO_FLORA :
						 FN_ALGO_FEDAVG;
	cfg->n_elem = rt__tree_elems(r->job);
	cfg->acc_off = acc;
}

/*
 * Accumulator slot for a tree node. Its data starts 2 KiB plus a rotating
 * multiple of 64 bytes into the slot, so that accumulator and update bytes
 * (64 KiB aligned) never sit a multiple of 4 KiB apart (4K aliasing halves
 * the fold's speed). In tcp the accumulators are the functions' private
 * memory: nothing in the arena.
 */
int rt__acc_alloc(struct rt_node *n, struct rt_round *r, uint64_t *acc, uint64_t *data)
{
	int err;

	*acc = *data = 0;
	if (n->dataplane == FN_DP_TCP)
		return 0;
	err = shm_slot_alloc(n->arena, rt__acc_slot_len(r->job), acc);
	if (err)
		return err;
	*data = *acc + 2048 + 64 * (n->skew++ % 16);
	return 0;
}

/* Send an existing partial (again) to @to: a replacement, or a parent that changed. */
static int send_partial(struct rt_node *n, struct rt_fn *to, const struct shm_desc *p,
			const float *payload)
{
	struct shm_desc d = *p;

	d.dst = to->id;
	if (payload) {
		struct iovec iov = { (void *)payload, to->cfg.n_elem * sizeof(float) };

		return rt_fn_send_payload(to, &d, &iov, 1);
	}
	(void)n;
	return rt_fn_send(to, &d);
}

/*
 * Make sure a child's partial has reached @parent, its parent now: after a
 * parent was replaced, a partial delivered to the old one is sent again
 * (the parent folds each child once). In tcp the partial's bytes must be
 * known too; they come with the partial through the runtime.
 */
void rt__out_ensure(struct rt_node *n, bool has, const struct shm_desc *p,
		       const float *payload, uint32_t *routed_to, uint32_t parent)
{
	struct rt_fn *to;

	if (!has || !parent || *routed_to == parent)
		return;
	if (n->dataplane == FN_DP_TCP && !payload)
		return;
	to = rt_fnset_find(n->fns, parent);
	if (to && !send_partial(n, to, p, payload))
		*routed_to = parent;
}

/* Start (or restart) the top. Children done so far are sent to it again. */
int rt__top_start(struct rt_node *n, struct rt_round *r)
{
	struct fn_config cfg;
	struct rt_fn *fn;
	uint64_t acc, data;
	int err;

	err = rt__acc_alloc(n, r, &acc, &data);
	if (err)
		return err;
	rt__cfg_init(n, r, &cfg, FN_ROLE_TOP, acc);
	cfg.acc_data_off = data;
	cfg.parent = SHM_DST_RUNTIME;
	/* While the round is open the autoscaler may add leaves: the count comes by FLUSH. */
	cfg.expected = r->group ? (r->closed ? r->nmids : (r->nleaves + r->group - 1) / r->group) :
				  (r->closed ? r->started : r->nleaves);
	cfg.flags = r->released ? FN_CFG_FINAL : 0;
	if (n->clustered)
		cfg.flags |= FN_CFG_SUM; /* the node's part: the round's top is on one node */
	err = rt__fn_acquire(n, &cfg, &r->par, &fn);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	r->top = fn->id;
	r->top_acc = acc;
	fn->node = 0;
	/* A replacement: the partials that exist already go to it (it folds each once). */
	if (r->group) {
		for (uint32_t g = 0; g < r->nmids; g++) {
			struct rt_mid *m = &r->mids[g];

			rt__out_ensure(n, m->has_partial, &m->partial, m->partial_payload,
				   &m->routed_to, fn->id);
		}
		return 0;
	}
	for (uint32_t i = 0; i < r->started; i++) {
		struct rt_leaf *l = &r->leaves[i];

		rt__out_ensure(n, l->has_partial, &l->partial, l->partial_payload, &l->routed_to,
			   fn->id);
	}
	return 0;
}

/* Where leaf @i reports: its group's mid, or the top. */
uint32_t rt__leaf_parent(const struct rt_round *r, uint32_t i)
{
	return r->group ? r->mids[i / r->group].fn : r->top;
}

/* Start (or restart) mid @g; a restart gets the partials of its group's done leaves. */
int rt__mid_start(struct rt_node *n, struct rt_round *r, uint32_t g)
{
	struct rt_mid *m = &r->mids[g];
	struct fn_config cfg;
	struct rt_fn *fn;
	uint64_t acc, data;
	int err;

	err = rt__acc_alloc(n, r, &acc, &data);
	if (err)
		return err;
	rt__cfg_init(n, r, &cfg, FN_ROLE_MID, acc);
	cfg.acc_data_off = data;
	cfg.parent = r->top;
	cfg.index = g;
	cfg.expected = m->final ? m->nleaves : r->group;
	cfg.flags = m->final ? FN_CFG_FINAL : 0;
	err = rt__fn_acquire(n, &cfg, &r->par, &fn);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	fn->node = g;
	m->fn = fn->id;
	m->parent = r->top;
	m->acc = acc;
	/* shm+bpf: sk_msg delivers its partial to the parent it was told. */
	m->routed_to = n->dataplane == FN_DP_SHM_BPF ? r->top : 0;
	for (uint32_t i = g * r->group; i < r->started && i < (g + 1) * r->group; i++) {
		struct rt_leaf *l = &r->leaves[i];

		rt__out_ensure(n, l->has_partial, &l->partial, l->partial_payload, &l->routed_to,
			   fn->id);
	}
	return 0;
}

/* Mid @g's group has all its leaves: tell it how many. */
void rt__mid_finalise(struct rt_node *n, struct rt_round *r, uint32_t g)
{
	struct rt_mid *m = &r->mids[g];
	struct rt_fn *fn = rt_fnset_find(n->fns, m->fn);

	if (m->final)
		return;
	m->final = true;
	if (fn && !m->done)
		rt_fn_ctl(fn, FN_MSG_FLUSH, m->nleaves);
}

/*
 * tcp, frl: the baseline copies an update as flat 4-byte cells, which lose the tensors' bounds
 * a ranking's positions need; so it sends what the ranking adds instead, its votes (each
 * tensor's permutation scattered, fn_frl_vote), which fn_frl.c adds cell by cell.
 */
static int frl_send_votes(struct rt_node *n, struct rt_round *r, struct rt_fn *fn,
			  const struct shm_desc *d, const struct shm_seg *segs)
{
	uint32_t *votes = trib_calloc(r->job->n_elem ? r->job->n_elem : 1, sizeof(*votes));
	struct iovec iov;
	int err = votes ? 0 : -ENOMEM;

	for (uint32_t k = 0; !err && k < d->nsegs; k++)
		err = segs[k].dtype != SHM_DTYPE_I32 ||
			      segs[k].dst_elem + segs[k].n_elem > r->job->n_elem ?
			  -EINVAL :
			  fn_frl_vote(votes + segs[k].dst_elem,
				      shm_arena_ptr(n->arena, segs[k].src_off),
				      (size_t)segs[k].n_elem);
	if (!err) {
		iov.iov_base = votes;
		iov.iov_len = r->job->n_elem * sizeof(*votes);
		err = rt_fn_send_payload(fn, d, &iov, 1);
	}
	trib_free(votes);
	return err;
}

/* Send update @k of leaf @l to the function serving it. */
int rt__leaf_send(struct rt_node *n, struct rt_round *r, struct rt_leaf *l, uint32_t k)
{
	struct rt_fn *fn = rt_fnset_find(n->fns, l->fn);
	struct shm_desc d = l->ups[k];

	if (!fn)
		return -EPIPE;
	d.dst = fn->id;
	if (n->dataplane == FN_DP_TCP) {
		/* The baseline: the update's bytes are copied to the leaf, as flat f32. */
		const struct shm_seg *segs = shm_arena_ptr(n->arena, d.segs_off);
		struct iovec iov[64];
		float *flat = NULL;
		int err;

		if (r->job->flora) {
			/* Placed here, as the function would place it (rt_flora_flat()). */
			double w = r->job->algo.par.flags & FN_PAR_UNWEIGHTED ? 1.0 : d.weight;

			flat = trib_calloc(r->job->n_elem ? r->job->n_elem : 1, sizeof(float));
			if (!flat)
				return -ENOMEM;
			rt_flora_flat(r->job, n->arena, &d, w, flat);
			iov[0].iov_base = flat;
			iov[0].iov_len = r->job->n_elem * sizeof(float);
			err = rt_fn_send_payload(fn, &d, iov, 1);
			trib_free(flat);
			return err;
		}
		if (d.nsegs > 64)
			return -E2BIG;
		if (r->job->algo.frl)
			return frl_send_votes(n, r, fn, &d, segs);
		for (uint32_t i = 0; i < d.nsegs; i++) {
			/* 4-byte words go as they are (a secure job's masked u32 too). */
			if (segs[i].dtype == SHM_DTYPE_F32 || segs[i].dtype == SHM_DTYPE_I32)
				continue;
			/* Compressed: a copying system would expand it; so does the baseline. */
			flat = trib_calloc(r->job->n_elem ? r->job->n_elem : 1, sizeof(float));
			if (!flat)
				return -ENOMEM;
			for (uint32_t k = 0; k < d.nsegs; k++) {
				if (segs[k].dtype == SHM_DTYPE_SPARSE) {
					/* Scattered into the zeros: the baseline densifies. */
					if (fn_sparse_fold_seg(flat, shm_arena_base(n->arena),
							       shm_arena_size(n->arena), &segs[k],
							       1.0f)) {
						trib_free(flat);
						return -EINVAL;
					}
					continue;
				}
				fn_dequant_fold(flat + segs[k].dst_elem,
						shm_arena_ptr(n->arena, segs[k].src_off),
						segs[k].dtype, segs[k].scale, 1.0f,
						(size_t)segs[k].n_elem);
			}
			iov[0].iov_base = flat;
			iov[0].iov_len = r->job->n_elem * sizeof(float);
			err = rt_fn_send_payload(fn, &d, iov, 1);
			trib_free(flat);
			return err;
		}
		for (uint32_t i = 0; i < d.nsegs; i++) {
			iov[i].iov_base = shm_arena_ptr(n->arena, segs[i].src_off);
			iov[i].iov_len = segs[i].n_elem * sizeof(float);
		}
		return rt_fn_send_payload(fn, &d, iov, (int)d.nsegs);
	}
	if (n->handoff_hold) { /* after the 202 (rt_node_handoff_hold) */
		int err = rt_fn_send_later(fn, &d);

		if (!err)
			rt__handoff_note(n, fn->id);
		return err;
	}
	return rt_fn_send(fn, &d);
}

/* Start (or restart) leaf @i; a restart gets every update the leaf was sent, again. */
int rt__leaf_start(struct rt_node *n, struct rt_round *r, uint32_t i)
{
	struct rt_leaf *l = &r->leaves[i];
	struct fn_config cfg;
	struct rt_fn *fn;
	uint64_t acc, data;
	int err;

	err = rt__acc_alloc(n, r, &acc, &data);
	if (err)
		return err;
	rt__cfg_init(n, r, &cfg, FN_ROLE_LEAF, acc);
	cfg.acc_data_off = data;
	cfg.parent = rt__leaf_parent(r, i);
	cfg.expected = l->expected;
	cfg.flags = FN_CFG_FINAL;
	cfg.index = r->group ? i % r->group : i; /* its place among its parent's children */
	err = rt__fn_acquire(n, &cfg, &r->par, &fn);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	l->fn = fn->id;
	l->parent = cfg.parent;
	l->acc = acc;
	/* shm+bpf: sk_msg delivers its partial to the parent it was told. */
	l->routed_to = n->dataplane == FN_DP_SHM_BPF ? cfg.parent : 0;
	fn->node = i;
	for (uint32_t k = 0; k < l->sent; k++) {
		err = rt__leaf_send(n, r, l, k);
		if (err)
			return err;
	}
	return 0;
}

void rt__round_free(struct rt_node *n, struct rt_round *r, bool free_slots)
{
	free_slots = free_slots && n;
	if (free_slots)
		rt__wal_settle(n); /* the log may still be reading update slots */
	if (free_slots) {
		for (uint32_t i = 0; i < r->ngarbage; i++)
			shm_slot_free(n->arena, r->garbage[i]);
		if (r->top_acc)
			shm_slot_free(n->arena, r->top_acc);
		if (r->model_slot)
			shm_slot_free(n->arena, r->model_slot);
		if (r->state_slot)
			shm_slot_free(n->arena, r->state_slot);
	}
	for (uint32_t i = 0; i < r->started; i++) {
		struct rt_leaf *l = &r->leaves[i];

		if (free_slots) {
			if (l->acc)
				shm_slot_free(n->arena, l->acc);
			if (!l->done || l->ups_kept)
				for (uint32_t k = 0; k < l->sent; k++)
					shm_slot_free(n->arena, l->ups[k].slot_off);
		}
		trib_free(l->ups);
		trib_free(l->partial_payload);
	}
	if (r->rups) {
		for (uint32_t i = 0; free_slots && i < r->received; i++)
			shm_slot_free(n->arena, r->rups[i].slot_off);
	}
	/* A robust round's shards, or a secure round's unmasking (its task holds mask keys). */
	if (free_slots && r->sa_taken)
		rt__secagg_task_wipe(n, r);
	if (free_slots && r->out_slot)
		shm_slot_free(n->arena, r->out_slot);
	if (free_slots && r->task_slot)
		shm_slot_free(n->arena, r->task_slot);
	trib_free(r->rups);
	trib_free(r->shard_fn);
	trib_free(r->shard_done);
	for (uint32_t g = 0; g < r->nmids; g++) {
		if (free_slots && r->mids[g].acc)
			shm_slot_free(n->arena, r->mids[g].acc);
		trib_free(r->mids[g].partial_payload);
	}
	trib_free(r->mids);
	trib_free(r->leaves);
	trib_free(r->garbage);
	trib_free(r->result_payload);
	rt__round_rec_free(r);
	trib_free(r);
}

void rt__plan_round(struct rt_node *n, struct rt_job *j, struct ctl_plan *plan)
{
	uint64_t used = 0, total = 0;
	uint32_t live = 0;
	struct ctl_plan_in in = {
		.clients = j->cpr,
		.arrival_rate = j->arrival_rate,
		.model_bytes = j->n_elem * sizeof(float),
		.fold_bw = CTL_FOLD_BW_DEFAULT,
		.cores = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN),
		.pinned_fanin = j->fanin,
	};

	shm_arena_usage(n->arena, &used, &total, &live);
	in.arena_free = total - used;
	ctl_plan_tree(&in, plan);
	n->m.plans++;
	trib_info("job %s round %u: plan: %u leaves of fan-in %u (%s; inputs: %u clients, "
		  "%.1f updates/s measured, %.1f MB model, %u cores)",
		  j->name, j->round, plan->leaves, plan->fanin, plan->why, in.clients,
		  in.arrival_rate, (double)in.model_bytes / 1e6, in.cores);
}

/*
 * What the top's server step reads: a copy of the current model, and the
 * optimiser state, in arena slots the runtime owns for the round.
 */
