// SPDX-License-Identifier: MIT
/* Rounds: open, take updates, close (full or at the deadline); a cluster node's verbs. */
#include "rt_node_priv.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "ctl_plan.h"
#include "ebpf_route.h"
#include "fn_fedbuff.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

static struct rt_round *round_open(struct rt_node *n, struct rt_job *j, int *errp)
{
	struct rt_round *r = trib_calloc(1, sizeof(*r));
	struct ctl_plan plan;
	int err;

	if (!r) {
		*errp = -ENOMEM;
		return NULL;
	}
	rt__plan_round(n, j, &plan);
	r->job = j;
	r->round = j->round;
	r->fanin = plan.fanin;
	r->nleaves = plan.leaves;
	r->capleaves = plan.leaves;
	r->group = plan.levels == 3 ? plan.group : 0;
	if (!plan.fits)
		trib_warn("job %s round %u: the plan may not fit the free arena; updates will wait "
			  "(503) while leaves hand off early", j->name, j->round);
	err = rt__server_slots(n, j, r);
	if (err) {
		rt__round_free(n, r, true);
		*errp = err;
		return NULL;
	}
	r->open_ns = trib_now_ns();
	r->open_unix = rt__unix_now(); /* its record's opened_at */
	r->leaves = trib_calloc(r->capleaves, sizeof(*r->leaves));
	if (!r->leaves) {
		rt__round_free(n, r, true); /* the server step's slots go back too */
		*errp = -ENOMEM;
		return NULL;
	}
	if (j->algo.rule) {
		/* Exact robust rules: keep every update; shards run when the round closes. */
		r->rups = trib_calloc(j->cpr, sizeof(*r->rups));
		err = r->rups ? 0 : -ENOMEM;
	} else {
		err = rt__top_start(n, r);
	}
	if (err) {
		rt__round_free(n, r, true);
		*errp = err;
		return NULL;
	}
	{
		struct rt_round **pp = &j->inflight;

		while (*pp)
			pp = &(*pp)->next;
		*pp = r;
	}
	j->open = r;
	return r;
}

/* Leaf @l takes no more updates than it has: tell its function. */
static void leaf_cut(struct rt_node *n, struct rt_leaf *l)
{
	struct rt_fn *fn = rt_fnset_find(n->fns, l->fn);

	l->expected = l->sent;
	if (fn && !l->done)
		rt_fn_ctl(fn, FN_MSG_FLUSH, l->expected);
}

/* The open round takes no more updates; the next opens at once. */
void rt__round_close(struct rt_node *n, struct rt_job *j, struct rt_round *r, bool deadline)
{
	r->closed = true;
	r->close_unix = rt__unix_now(); /* its record's closed_at */
	j->open = NULL;
	j->round++;
	rt_job_clients_now(n, j); /* the round's distinct clients go to its record */
	/* The cluster closed it at this count, or a secure round's masked stage ended. */
	if ((n->clustered || j->secagg.on) && r->started &&
	    r->leaves[r->started - 1].sent < r->leaves[r->started - 1].expected)
		leaf_cut(n, &r->leaves[r->started - 1]);
	if (deadline) {
		/* Fewer updates than planned: the last leaf folds what it has. */
		n->m.deadline_closes++;
		if (r->started &&
		    r->leaves[r->started - 1].sent < r->leaves[r->started - 1].expected)
			leaf_cut(n, &r->leaves[r->started - 1]);
		trib_info("job %s round %u: closed at its deadline with %u of %u updates in %u "
			  "leaves", j->name, r->round, r->received, j->cpr, r->started);
	}
	/* Now the number of leaves is final: the top hands off after that many partials. */
	if (r->group && r->nmids)
		rt__mid_finalise(n, r, r->nmids - 1);
	rt__top_release(n, j, r);
	if (n->clustered) {
		j->xtarget = UINT32_MAX;
		if (n->hooks.round_advanced)
			n->hooks.round_advanced(n->hooks.ctx, j);
	}
}

void rt__round_cut(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	r->closed = true;
	j->open = NULL;
	if (r->started && r->leaves[r->started - 1].sent < r->leaves[r->started - 1].expected)
		leaf_cut(n, &r->leaves[r->started - 1]);
	if (r->group && r->nmids)
		rt__mid_finalise(n, r, r->nmids - 1);
	rt__top_release(n, j, r);
}

/*
 * The autoscaler, on the eBPF counters: when the leaf taking updates has a
 * queue (descriptors delivered but not yet taken) of CTL_SPLIT_DEPTH or more,
 * arrivals outrun its folding: it keeps what it has and a new leaf takes the
 * next updates, folding beside it. Idle leaves retire by themselves (warm,
 * then gone after --warm-s). A job that fixed its fan-in is left alone, and
 * without eBPF there is no queue depth to act on.
 */
static bool leaf_should_split(struct rt_node *n, struct rt_round *r, struct rt_leaf *l)
{
	struct ebpf_fn_sample smp;
	uint32_t busy = 0;

	if (!n->route || r->job->fanin || l->sent == 0 || l->sent >= l->expected)
		return false;
	if (ebpf_stats_read(ebpf_route_stats(n->route), l->fn, &smp))
		return false;
	if (smp.depth < CTL_SPLIT_DEPTH)
		return false;
	/* Leaves still folding, this round's and the rounds before it still in flight. */
	for (struct rt_round *q = r->job->inflight; q; q = q->next)
		for (uint32_t i = 0; i < q->started; i++)
			busy += !q->leaves[i].done;
	if (!ctl_plan_split(smp.depth, busy, n->opts.fold_cores ? n->opts.fold_cores :
						      (uint32_t)sysconf(_SC_NPROCESSORS_ONLN))) {
		n->m.scale_outs_capped++;
		return false;
	}
	n->m.scale_outs++;
	trib_info("job %s round %u: autoscaler: leaf %u (fn %u) has %llu descriptors waiting "
		  "(>= %u) after %u of %u updates: scale out, a new leaf takes the next ones",
		  r->job->name, r->round, r->cur, l->fn, (unsigned long long)smp.depth,
		  CTL_SPLIT_DEPTH, l->sent, l->expected);
	return true;
}

/* Room for leaf r->started (and its group's mid, started): *i; the entry is zeroed. */
static int leaf_new(struct rt_node *n, struct rt_round *r, uint32_t *ip)
{
	uint32_t i = r->started;
	int err;

	if (i == r->capleaves) {
		uint32_t ncap = r->capleaves * 2;
		struct rt_leaf *nl = trib_realloc(r->leaves, ncap * sizeof(*nl));

		if (!nl)
			return -ENOMEM;
		memset(nl + r->capleaves, 0, (ncap - r->capleaves) * sizeof(*nl));
		r->leaves = nl;
		r->capleaves = ncap;
	}
	if (r->group && i / r->group >= r->nmids) {
		uint32_t g = i / r->group;

		if (g == r->capmids) {
			uint32_t ncap = r->capmids ? r->capmids * 2 : 4;
			struct rt_mid *nm = trib_realloc(r->mids, ncap * sizeof(*nm));

			if (!nm)
				return -ENOMEM;
			memset(nm + r->capmids, 0, (ncap - r->capmids) * sizeof(*nm));
			r->mids = nm;
			r->capmids = ncap;
		}
		if (g)
			rt__mid_finalise(n, r, g - 1);
		memset(&r->mids[g], 0, sizeof(r->mids[g]));
		err = rt__mid_start(n, r, g);
		if (err)
			return err;
		r->nmids = g + 1;
	}
	memset(&r->leaves[i], 0, sizeof(r->leaves[i]));
	*ip = i;
	return 0;
}

/* Leaf @i (from leaf_new) is in the tree now. */
static void leaf_added(struct rt_round *r, uint32_t i)
{
	r->started = i + 1;
	if (r->group)
		r->mids[i / r->group].nleaves++;
	if (r->started > r->nleaves)
		r->nleaves = r->started;
	r->cur = i;
}

/* The leaf that takes the next update: the current one, or a new one. */
static int leaf_for_next(struct rt_node *n, struct rt_job *j, struct rt_round *r,
			 struct rt_leaf **out)
{
	struct rt_leaf *l = r->started ? &r->leaves[r->cur] : NULL;
	uint32_t i;
	int err;

	if (l && l->sent < l->expected && !leaf_should_split(n, r, l)) {
		*out = l;
		return 0;
	}
	if (l && l->sent < l->expected)
		leaf_cut(n, l);
	err = leaf_new(n, r, &i);
	if (err)
		return err;
	l = &r->leaves[i];
	{
		/* Even blocks over the leaves still planned: they differ by at most one. */
		uint32_t left = j->cpr - r->received;
		uint32_t lv = r->nleaves > r->started ? r->nleaves - r->started : 1;
		uint32_t blk = (left + lv - 1) / lv;

		l->expected = blk < r->fanin ? blk : r->fanin;
		if (l->expected > left)
			l->expected = left;
	}
	l->ups = trib_calloc(l->expected, sizeof(*l->ups));
	if (!l->ups)
		return -ENOMEM;
	err = rt__leaf_start(n, r, i);
	if (err) {
		trib_free(l->ups);
		memset(l, 0, sizeof(*l));
		return err;
	}
	leaf_added(r, i);
	*out = l;
	return 0;
}

int rt__leaf_recovered(struct rt_node *n, struct rt_job *j, const struct shm_desc *partial,
		       uint32_t first_seq)
{
	struct rt_round *r = j->open;
	struct rt_leaf *l;
	uint32_t i;
	int err;

	if (!r) {
		r = round_open(n, j, &err);
		if (!r)
			return err;
	}
	if (r->started && r->leaves[r->cur].sent < r->leaves[r->cur].expected)
		leaf_cut(n, &r->leaves[r->cur]);
	err = leaf_new(n, r, &i);
	if (err)
		return err;
	/* No function: its partial exists already; the slot is freed when its parent's is made. */
	l = &r->leaves[i];
	l->expected = l->sent = partial->count;
	l->done = l->has_partial = true;
	l->partial = *partial;
	l->partial.job = j->id;
	l->partial.round = r->round;
	l->partial.seq = r->group ? i % r->group : i; /* its place among its parent's children */
	l->acc = partial->slot_off;
	l->seq0 = first_seq;
	leaf_added(r, i);
	r->received += partial->count;
	j->accepted_total += partial->count;
	n->m.accepted += partial->count;
	j->last_update_ns = trib_now_ns();
	j->last_update_unix = rt__unix_now();
	rt__out_ensure(n, true, &l->partial, NULL, &l->routed_to, rt__leaf_parent(r, i));
	if (r->received == j->cpr)
		rt__round_close(n, j, r, false);
	return 0;
}

void rt_job_relieve(struct rt_node *n, struct rt_job *j)
{
	struct rt_round *r = j->open;
	struct rt_leaf *l;

	if (!r || j->algo.rule || !r->started)
		return;
	l = &r->leaves[r->cur];
	if (l->done || l->sent == 0 || l->sent >= l->expected)
		return;
	trib_info("job %s round %u: arena full: leaf %u hands off after %u of %u updates to "
		  "free their slots", j->name, r->round, r->cur, l->sent, l->expected);
	leaf_cut(n, l);
}

/* The descriptor of update @seq of @round: what a leaf (or a shard) is sent. */
static struct shm_desc update_desc(const struct rt_job *j, const struct rt_accept_in *in,
				   uint32_t round, uint32_t seq)
{
	struct shm_desc d;

	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = SHM_DESC_UPDATE;
	d.src = SHM_DST_RUNTIME;
	d.job = j->id;
	d.round = round;
	d.nsegs = in->nsegs;
	d.slot_off = in->slot_off;
	d.segs_off = in->segs_off;
	d.weight = in->weight;
	d.count = 1;
	d.seq = seq;
	d.fold_scale = in->fold_scale;
	return d;
}

/* Update @s is in round @r: count it, and close the round when it is full. */
static void accepted(struct rt_node *n, struct rt_job *j, struct rt_round *r, uint32_t s,
		     uint32_t *seq)
{
	r->received++;
	j->accepted_total++;
	n->m.accepted++;
	j->last_update_ns = trib_now_ns();
	j->last_update_unix = rt__unix_now();
	*seq = s;
	if (r->received == (n->clustered ? j->xtarget : j->cpr))
		rt__round_close(n, j, r, false);
}

int rt__accept_at(struct rt_node *n, struct rt_job *j, const struct rt_accept_in *in,
		  uint32_t *seq)
{
	struct rt_round *r = j->open;
	struct rt_leaf *l;
	struct shm_desc d;
	uint32_t round = j->round, s;
	int err;

	if (!r) {
		r = round_open(n, j, &err);
		if (!r)
			return err;
	}
	s = r->received;
	d = update_desc(j, in, round, s);
	if (j->algo.rule) {
		/* Exact robust rules keep every update for the shards: no leaf. */
		r->rups[s] = d;
		accepted(n, j, r, s, seq);
		return 0;
	}
	err = leaf_for_next(n, j, r, &l);
	if (err)
		return err;
	l->ups[l->sent] = d;
	if (!l->sent)
		l->seq0 = s;
	err = rt__leaf_send(n, r, l, l->sent);
	if (err)
		return err;
	l->sent++;
	accepted(n, j, r, s, seq);
	return 0;
}

int rt__accept_where(const struct rt_job *j, uint32_t round, float *fold_scale)
{
	*fold_scale = 0;
	/* FedBuff: @round is the version the update was trained from. */
	if (j->algo.async)
		return fn_fedbuff_fold_scale(j->round, round, j->algo.max_staleness, fold_scale) ?
			       -ESTALE : 0;
	return round != j->round ? -ESTALE : 0;
}

int rt_job_accept(struct rt_node *n, struct rt_job *j, uint32_t round, uint64_t slot_off,
		  uint64_t segs_off, uint32_t nsegs, double weight, uint32_t *seq)
{
	struct rt_accept_in in = { .slot_off = slot_off, .segs_off = segs_off, .nsegs = nsegs,
				   .weight = weight };
	int err = rt__accept_where(j, round, &in.fold_scale);

	return err ? err : rt__accept_at(n, j, &in, seq);
}

uint32_t rt__next_seq(const struct rt_job *j)
{
	return j->open ? j->open->received : 0;
}

/* --- a cluster's node (rt_agent.c) --- */

uint64_t rt_job_acc_len(const struct rt_job *j)
{
	return rt__acc_slot_len(j);
}

int rt_node_fold_start(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t expected,
		       const struct rt_server_io *io, struct rt_fn **out, uint64_t *accp)
{
	struct rt_round tmp;
	struct fn_config cfg;
	struct fn_params par;
	uint64_t acc, data;
	int err;

	memset(&tmp, 0, sizeof(tmp));
	tmp.job = j;
	tmp.round = round;
	err = rt__acc_alloc(n, &tmp, &acc, &data);
	if (err)
		return err;
	rt__cfg_init(n, &tmp, &cfg, FN_ROLE_TOP, acc);
	cfg.acc_data_off = data;
	cfg.parent = SHM_DST_RUNTIME;
	cfg.expected = expected;
	cfg.flags = FN_CFG_FINAL;
	cfg.dataplane = n->dataplane;
	/*
	 * The nodes' sums are of clipped updates (their leaves clipped): the top divides by
	 * their total weight, adds the noise once and takes the server step, as one node's
	 * top does.
	 */
	par = j->algo.par;
	par.flags &= ~(uint32_t)FN_PAR_CLIP;
	if (io) {
		par.model_off = io->model_slot;
		par.state_off = io->state_slot;
	}
	err = rt__fn_acquire(n, &cfg, &par, out);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	(*out)->node = 0;
	*accp = acc;
	return 0;
}

uint32_t rt_round_number(const struct rt_round *r)
{
	return r->round;
}

struct rt_job *rt_round_job(const struct rt_round *r)
{
	return r->job;
}

const struct shm_desc *rt_round_result(const struct rt_round *r)
{
	return &r->result;
}

uint32_t rt_round_received(const struct rt_round *r)
{
	return r->received;
}

uint32_t rt_round_fanin(const struct rt_round *r)
{
	return r->fanin;
}

uint32_t rt_round_nleaves(const struct rt_round *r)
{
	return r->nleaves;
}

uint64_t rt_round_opened_ns(const struct rt_round *r)
{
	return r->open_ns;
}

double rt_round_opened_unix(const struct rt_round *r)
{
	return r->open_unix;
}

const float *rt_round_sum(struct rt_node *n, const struct rt_round *r)
{
	const struct shm_seg *seg;

	if (r->result_payload)
		return r->result_payload;
	seg = shm_arena_ptr(n->arena, r->result.segs_off);
	return shm_arena_ptr(n->arena, seg->src_off);
}

void rt_job_set_target(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t target)
{
	if (j->round != round)
		return; /* again when the local round gets there (the round_advanced hook) */
	j->xtarget = target;
	if (!j->open) {
		if (target)
			return; /* its updates are still on their way here */
		/* Nothing of this round folds here: the next one opens. */
		j->round++;
		j->xtarget = UINT32_MAX;
		if (n->hooks.round_advanced)
			n->hooks.round_advanced(n->hooks.ctx, j);
		return;
	}
	if (j->open->received > target)
		trib_error("job %s round %u: %u updates folded here, but the controller counted %u",
			   j->name, round, j->open->received, target);
	if (j->open->received >= target)
		rt__round_close(n, j, j->open, false);
}
