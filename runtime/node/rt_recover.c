// SPDX-License-Identifier: MIT
/* Recovery: a function that died mid-round is replaced; reaping, idle functions, deadlines. */
#include "rt_node_priv.h"

#include <string.h>
#include <sys/wait.h>

#include "trib_log.h"
#include "trib_time.h"

static void fn_remember(struct rt_node *n, const struct rt_fn *fn)
{
	struct rt_fn_record *h = &n->hist[n->nhist++ % RT_FN_HISTORY];
	int64_t depth;

	h->id = fn->id;
	h->job = fn->cfg.job;
	h->round = fn->cfg.round;
	h->role = fn->cfg.role;
	rt_node_fn_counters(n, fn, &h->msgs_in, &h->bytes_in, &depth);
	h->taken = depth >= 0 ? h->msgs_in - (uint64_t)depth : h->msgs_in;
	/* /metrics' tributary_fn_*_total: the live ones' counters plus these, so it never drops. */
	n->m.fn_msgs_gone += h->msgs_in;
	n->m.fn_bytes_gone += h->bytes_in;
}

/*
 * A function died while it had work (killed, crashed): start a replacement
 * for its place in the tree and give it the same inputs again. Nothing it
 * folded is lost: update slots live until the partial they went into exists,
 * partials until the round's model is written.
 */
static void recover(struct rt_node *n, struct rt_fn *fn)
{
	struct rt_job *j = NULL;
	struct rt_round *r = rt__round_find(n, fn->cfg.job, fn->cfg.round, &j);
	const char *what;
	int err = 0;

	if (!r || r->has_result)
		return;
	if (r->recoveries >= RT_MAX_RECOVERIES) {
		/* Something that fails every time (bad input, a bug): do not spin. */
		trib_error("job %s round %u: %u functions replaced already; not replacing fn %u: "
			   "the round cannot complete", j->name, r->round, r->recoveries, fn->id);
		rt__secagg_shard_lost(r, "unmask: %u functions replaced already (the last fn %u): "
				      "the masks cannot be expanded", r->recoveries, fn->id);
		return;
	}
	if (fn->cfg.role == FN_ROLE_SHARD) {
		if (fn->node >= r->nshards || r->shard_fn[fn->node] != fn->id ||
		    r->shard_done[fn->node])
			return;
		what = "shard";
		err = rt__shard_start(n, r, fn->node);
	} else if (fn->cfg.role == FN_ROLE_TOP) {
		if (r->top != fn->id)
			return;
		rt__garbage_add(r, r->top_acc);
		r->top_acc = 0;
		r->top = 0;
		what = "top";
		err = rt__top_start(n, r);
		/* Mids (or leaves) still folding were told the old top: they find the new one
		 * through the runtime (bounce or route) or on their DONE. */
	} else if (fn->cfg.role == FN_ROLE_MID) {
		struct rt_mid *m = fn->node < r->nmids ? &r->mids[fn->node] : NULL;

		if (!m || m->fn != fn->id || m->done)
			return;
		rt__garbage_add(r, m->acc);
		m->acc = 0;
		what = "mid";
		err = rt__mid_start(n, r, fn->node);
	} else {
		struct rt_leaf *l = fn->node < r->started ? &r->leaves[fn->node] : NULL;

		if (!l || l->fn != fn->id || l->done)
			return;
		rt__garbage_add(r, l->acc);
		l->acc = 0;
		what = "leaf";
		err = rt__leaf_start(n, r, fn->node);
	}
	r->recoveries++;
	n->m.recoveries++;
	if (err) {
		trib_error("job %s round %u: replacing fn %u failed: %s; the round cannot complete",
			   j->name, r->round, fn->id, strerror(-err));
		if (fn->cfg.role == FN_ROLE_SHARD)
			rt__secagg_shard_lost(r, "unmask: replacing shard %u (fn %u) failed: %s",
					      fn->node, fn->id, strerror(-err));
	}
	else
		trib_warn(
		    "job %s round %u: fn %u (%s %u) died mid-round; replaced, its inputs sent "
		    "again",
		    j->name, r->round, fn->id, what, fn->node);
}

/*
 * A function is judged once it has exited AND its channels reached end of
 * stream, so that every record it sent has been handled first.
 */
static void fn_judge(struct rt_node *n, struct rt_fn *fn)
{
	int st = fn->wait_status;

	if (n->stopping)
		return;
	/* A secure unmasking's shard: killed with its round, or failed for good (rt_secagg_commit.c). */
	if (fn->busy && fn->cfg.role == FN_ROLE_SHARD && rt__secagg_shard_judged(n, fn))
		return;
	if (!fn->busy) {
		if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			trib_warn("fn %u exited (status %d) while idle", fn->id, st);
		return;
	}
	n->m.fn_failed++;
	trib_error("fn %u (%s of job %u round %u) %s %d mid-round", fn->id,
		   fn->cfg.role == FN_ROLE_TOP	   ? "top"
		   : fn->cfg.role == FN_ROLE_MID   ? "mid"
		   : fn->cfg.role == FN_ROLE_SHARD ? "shard"
						   : "leaf",
		   fn->cfg.job, fn->cfg.round,
		   WIFSIGNALED(st) ? "was killed by signal" : "exited with",
		   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	recover(n, fn);
}

static bool fn_ended(const struct rt_fn *fn)
{
	return fn->exited && fn->eof_ctl && fn->eof_data;
}

static bool on_reaped(struct rt_fn *fn, void *arg)
{
	struct rt_node *n = arg;

	if (!fn_ended(fn) && !n->stopping)
		return false; /* judged when its channels' ends are read */
	fn_judge(n, fn);
	fn_remember(n, fn);
	return true;
}

void rt_node_on_fn_eof(struct rt_node *n, struct rt_fn *fn, bool data)
{
	if (data)
		fn->eof_data = true;
	else
		fn->eof_ctl = true;
	if (fn_ended(fn)) {
		fn_judge(n, fn);
		fn_remember(n, fn);
		rt_fnset_remove(n->fns, fn);
	}
}

void rt_node_on_sigchld(struct rt_node *n)
{
	rt_fnset_reap(n->fns, on_reaped, n);
}

struct retire {
	struct rt_node *n;
	uint32_t spare; /* idle functions beyond --fn-pool: those may retire */
};

static void retire_idle(struct rt_fn *fn, void *arg)
{
	struct retire *rt = arg;
	struct rt_node *n = rt->n;
	uint64_t now = trib_now_ns();

	if (fn->state != RT_FN_WARM || fn->exited || fn->sock < 0 || !rt->spare)
		return;
	if (now - fn->idle_ns < (uint64_t)n->opts.warm_s * 1000000000ull)
		return;
	rt->spare--;
	/* Scale to zero: a job with no traffic costs no process (but the --fn-pool ones). */
	if (!rt_fn_ctl(fn, FN_MSG_EXIT, 0)) {
		fn->state = RT_FN_EXITING;
		n->m.fn_retired++;
		trib_info("fn %u: idle %u s, retired (served %u configs)", fn->id, n->opts.warm_s,
			  fn->served);
	}
}

void rt_node_tick(struct rt_node *n)
{
	uint64_t now = trib_now_ns();
	struct retire rt = { n, 0 };
	uint32_t idle = rt__fn_idle(n);

	rt__fn_io_tick(n);
	rt.spare = idle > n->opts.fn_pool ? idle - n->opts.fn_pool : 0;
	rt_fnset_foreach(n->fns, retire_idle, &rt);
	rt__fn_pool_fill(n);
	/* A finished round whose commit failed (the disk, no memory) tries again, with backoff. */
	rt__store_retry_tick(n, now);
	/* Deadlines: a round with enough updates closes with what it has; fewer, it waits. */
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		struct rt_round *r = j->open;
		uint32_t need = j->min_clients ? j->min_clients : j->cpr;

		/* A cluster's rounds close at the controller, deadlines too. */
		if (!r || !j->round_timeout_s || r->closed || n->clustered)
			continue;
		/* A secure round's stages have their own deadlines (rt_api_secagg.c closes it). */
		if (j->secagg.on)
			continue;
		if (now - r->open_ns < (uint64_t)j->round_timeout_s * 1000000000ull)
			continue;
		if (r->received >= need)
			rt__round_close(n, j, r, true);
	}
	rt_job_reap(n); /* deleted jobs whose rounds and bodies are done */
}

