// SPDX-License-Identifier: MIT
/* What functions report (READY, DONE, PARTIAL, RESULT) and the counters of each function. */
#include "rt_node_priv.h"

#include <string.h>

#include "ebpf_route.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

struct rt_round *rt__round_find(struct rt_node *n, uint32_t job_id, uint32_t round,
				   struct rt_job **jp)
{
	/* A deleted job's rounds still fold (n->gone): their functions report as any other. */
	for (struct rt_job *j = n->jobs ? n->jobs : n->gone; j;
	     j = j->next ? j->next : (j->deleted ? NULL : n->gone)) {
		if (j->id != job_id)
			continue;
		*jp = j;
		for (struct rt_round *r = j->inflight; r; r = r->next)
			if (r->round == round)
				return r;
		return NULL;
	}
	return NULL;
}

/* A leaf's or the top's DONE: what it handed off now exists. */
static void on_done(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d)
{
	struct rt_job *j = NULL;
	struct rt_round *r = rt__round_find(n, d->job, d->round, &j);

	fn->state = RT_FN_WARM;
	fn->busy = false;
	fn->idle_ns = trib_now_ns();
	if (!r || fn->cfg.role == FN_ROLE_TOP)
		return; /* the top's output is its RESULT, handled on its own */
	if (fn->cfg.role == FN_ROLE_SHARD) {
		if (fn->node < r->nshards && r->shard_fn[fn->node] == fn->id &&
		    !r->shard_done[fn->node]) {
			r->shard_done[fn->node] = true;
			if (r->sa_orphan)
				fn->state = RT_FN_EXITING; /* killed with its round: not for reuse */
			if (++r->ndone == r->nshards)
				rt__robust_phase_done(n, j, r);
		}
		return;
	}
	if (fn->cfg.role == FN_ROLE_MID) {
		struct rt_mid *m;
		bool keep;

		if (fn->node >= r->nmids || r->mids[fn->node].fn != fn->id ||
		    r->mids[fn->node].done)
			return;
		m = &r->mids[fn->node];
		m->done = true;
		if (!m->has_partial) {
			m->partial = *d;
			m->partial.kind = SHM_DESC_PARTIAL;
			m->has_partial = true;
		}
		/*
		 * Its leaves' partials are inside its own now: once its record
		 * covers theirs (the slot rule), their slots go back.
		 */
		keep = fn->node * r->group < r->started &&
		       rt__journal_partial(n, r, r->leaves[fn->node * r->group].seq0, d, m->acc);
		m->covered = !keep;
		for (uint32_t i = fn->node * r->group;
		     !keep && i < r->started && i < (fn->node + 1) * r->group; i++) {
			if (r->leaves[i].acc) {
				shm_slot_free(n->arena, r->leaves[i].acc);
				r->leaves[i].acc = 0;
			}
		}
		rt__out_ensure(n, m->has_partial, &m->partial, m->partial_payload, &m->routed_to,
			   r->top);
	} else {
		struct rt_leaf *l;

		if (fn->node >= r->started || r->leaves[fn->node].fn != fn->id ||
		    r->leaves[fn->node].done)
			return;
		l = &r->leaves[fn->node];
		l->done = true;
		if (!l->has_partial) {
			l->partial = *d;
			l->partial.kind = SHM_DESC_PARTIAL;
			l->has_partial = true;
		}
		/*
		 * The updates are inside a partial that outlives any function: once
		 * the partial's record covers theirs (the slot rule), their slots go
		 * back. A mid whose record is committed already covers them (the
		 * leaf's partial is then folded, and freed, with it). In tcp the
		 * partial is not in the arena: the updates stay until the round is
		 * stored (rt__round_free).
		 */
		if (!l->ups_kept &&
		    (r->group && r->mids[fn->node / r->group].covered ? 0 :
		     rt__journal_partial(n, r, l->seq0, d, l->acc)))
			l->ups_kept = true;
		/* --durability disk: the log may still be writing their bytes. */
		if (!l->ups_kept && l->sent)
			rt__wal_settle(n);
		for (uint32_t k = 0; !l->ups_kept && k < l->sent; k++)
			shm_slot_free(n->arena, l->ups[k].slot_off);
		/* If its parent was replaced since the partial went out, it goes again. */
		rt__out_ensure(n, l->has_partial, &l->partial, l->partial_payload, &l->routed_to,
			   rt__leaf_parent(r, fn->node));
	}
}

/* shm+unix and tcp: partials pass through here; so does a bounced one in shm+bpf. */
static void route_partial(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d,
			  float *payload)
{
	struct rt_job *j = NULL;
	struct rt_round *r = rt__round_find(n, d->job, d->round, &j);
	bool *has = NULL;
	struct shm_desc *kept = NULL;
	float **keep = NULL;
	uint32_t *routed = NULL, dst;

	if (!r) {
		trib_free(payload);
		return;
	}
	/* Whoever serves the parent now, whatever the sender was told. */
	if (fn->cfg.role == FN_ROLE_MID && fn->node < r->nmids && r->mids[fn->node].fn == fn->id) {
		struct rt_mid *m = &r->mids[fn->node];

		dst = r->top;
		has = &m->has_partial;
		kept = &m->partial;
		keep = &m->partial_payload;
		routed = &m->routed_to;
	} else if (fn->cfg.role == FN_ROLE_LEAF && fn->node < r->started &&
		   r->leaves[fn->node].fn == fn->id) {
		struct rt_leaf *l = &r->leaves[fn->node];

		dst = rt__leaf_parent(r, fn->node);
		has = &l->has_partial;
		kept = &l->partial;
		keep = &l->partial_payload;
		routed = &l->routed_to;
	} else {
		/* From a function replaced since: its replacement sends its own. */
		trib_free(payload);
		return;
	}
	/* Kept until the round commits, so a replaced parent can get it again. */
	*kept = *d;
	kept->kind = SHM_DESC_PARTIAL;
	*has = true;
	if (payload) {
		trib_free(*keep);
		*keep = payload;
	}
	*routed = 0;
	rt__out_ensure(n, true, kept, *keep, routed, dst);
	if (*routed != dst)
		trib_error("fn %u -> fn %u: the partial could not be delivered now; it goes again "
			   "if that parent is replaced", fn->id, dst);
}

void rt_node_on_fn_record(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d,
			  float *payload)
{
	if (d->version != SHM_ABI_VERSION || (d->kind < 16 && d->src != fn->id)) {
		trib_error("fn %u: bad record (version %u, kind %u)", fn->id, d->version, d->kind);
		trib_free(payload);
		return;
	}
	if (n->clustered && d->kind == SHM_DESC_RESULT && n->hooks.fold_result &&
	    n->hooks.fold_result(n->hooks.ctx, fn, d, payload))
		return;
	switch (d->kind) {
	case FN_MSG_READY: {
		struct fn_ctl c;
		uint64_t now = trib_now_ns(), at, from;
		bool idle, cold;
		double s, late;

		/*
		 * To the function's own stamp (fn_abi.h, fn_ctl.at_ns): the loop may
		 * read READY late while it ingests, and nothing waits for it. How
		 * late is its own metric. A stamp outside [config sent, now] (a
		 * function of another ABI, a clock in another time namespace) is not
		 * trusted: then the record's arrival is the measure, as before.
		 */
		memcpy(&c, d, sizeof(c));
		/* A pre-started function's first READY (--fn-pool) is its start: from the spawn. */
		idle = c.value == FN_READY_IDLE;
		cold = idle || fn->state == RT_FN_COLD;
		from = idle ? fn->spawn_ns : fn->config_ns;
		at = c.at_ns >= from && c.at_ns <= now ? c.at_ns : now;
		s = (double)(at - from) / 1e9;
		late = (double)(now - at) / 1e9;
		n->m.notice_recent[n->m.notice_n % 256] = (float)late;
		n->m.notice_n++;
		n->m.notice_sum_s += late;
		if (late > n->m.notice_max_s)
			n->m.notice_max_s = late;

		if (cold) {
			n->m.cold_recent[n->m.cold_n % 256] = (float)s;
			n->m.cold_n++;
			n->m.cold_sum_s += s;
			if (s > n->m.cold_max_s)
				n->m.cold_max_s = s;
		} else {
			n->m.warm_recent[n->m.warm_n % 256] = (float)s;
			n->m.warm_n++;
			n->m.warm_sum_s += s;
			if (s > n->m.warm_max_s)
				n->m.warm_max_s = s;
		}
		/* Idle, or already configured behind the ATTACH: its state stays. */
		if (idle)
			fn->starting = false;
		else
			fn->state = RT_FN_FOLDING;
		return;
	}
	case FN_MSG_DONE:
		on_done(n, fn, d);
		return;
	case SHM_DESC_PARTIAL:
		route_partial(n, fn, d, payload);
		return;
	case SHM_DESC_RESULT: {
		struct rt_job *j = NULL;
		struct rt_round *r = rt__round_find(n, d->job, d->round, &j);

		if (!r || r->has_result || fn->id != r->top) {
			trib_debug(
			    "fn %u: result for job %u round %u not wanted (done, or replaced)",
			    fn->id, d->job, d->round);
			if (r && fn->id != r->top)
				rt__garbage_add(r, d->slot_off);
			trib_free(payload);
			return;
		}
		r->result = *d;
		r->result_payload = payload;
		r->has_result = true;
		rt__job_complete_rounds(n, j);
		return;
	}
	default:
		trib_error("fn %u: unexpected record kind %u for the runtime", fn->id, d->kind);
		trib_free(payload);
	}
}

void rt_node_fn_counters(struct rt_node *n, const struct rt_fn *fn, uint64_t *msgs,
			 uint64_t *bytes, int64_t *depth)
{
	if (n->route) {
		struct ebpf_fn_sample smp;

		if (!ebpf_stats_read(ebpf_route_stats(n->route), fn->id, &smp)) {
			*msgs = smp.msgs_in;
			*bytes = smp.bytes_in;
			*depth = (int64_t)smp.depth;
			return;
		}
		*msgs = *bytes = 0;
		*depth = 0;
		return;
	}
	*msgs = fn->msgs_in;
	*bytes = fn->bytes_in;
	*depth = -1; /* not observable without BPF */
}

