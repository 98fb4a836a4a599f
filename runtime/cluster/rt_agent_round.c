// SPDX-License-Identifier: MIT
/* A cluster round: this node's sum to the top, the top's fold of the nodes' sums, the model. */
#include "agent_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <jansson.h>

#include "rt_flora.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/* --- a round's sums and its top --- */

static void fold_feed(struct rt_agent *a, struct xround *x)
{
	struct rt_fn *fn = x->folding ? rt_fnset_find(a->n->fns, x->fold_fn) : NULL;

	if (!fn)
		return;
	for (uint32_t i = 0; i < x->nnodes; i++) {
		struct shm_desc d;
		int err;

		if (!x->in[i].has || x->sent_in[i])
			continue;
		d = x->in[i].d;
		d.dst = fn->id;
		if (a->n->dataplane == FN_DP_TCP) {
			struct iovec iov = {(void *)x->in[i].data, fn->cfg.n_elem * sizeof(float)};

			err = rt_fn_send_payload(fn, &d, &iov, 1);
		} else {
			err = rt_fn_send(fn, &d);
		}
		if (err) {
			trib_error("job %s round %u: to the fold: %s", x->job, x->round,
				   strerror(-err));
			return;
		}
		x->sent_in[i] = true;
	}
}

/* A slot holding @data (n_elem floats, or zeros if NULL) as a one-segment partial. */
static int land(struct rt_agent *a, struct rt_job *j, const void *data, struct xinput *in)
{
	struct rt_node *n = a->n;
	uint64_t slot;
	struct shm_seg *seg;
	int err = shm_slot_alloc(n->arena, rt_job_acc_len(j), &slot);

	if (err)
		return err;
	seg = shm_arena_ptr(n->arena, slot);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = slot + SHM_ACC_HDR;
	seg->n_elem = j->n_elem;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;
	if (data)
		memcpy(shm_arena_ptr(n->arena, seg->src_off), data, j->n_elem * sizeof(float));
	else
		memset(shm_arena_ptr(n->arena, seg->src_off), 0, j->n_elem * sizeof(float));
	memset(&in->d, 0, sizeof(in->d));
	in->d.version = SHM_ABI_VERSION;
	in->d.kind = SHM_DESC_PARTIAL;
	in->d.job = j->id;
	in->d.nsegs = 1;
	in->d.slot_off = slot;
	in->d.segs_off = slot;
	in->slot = slot;
	in->data = shm_arena_ptr(n->arena, seg->src_off);
	return 0;
}

static void sync_ask(struct rt_agent *a, const char *job, const char *what, uint32_t round);

/*
 * The server step of round r starts from model version r and the optimiser state the
 * controller stored with it (sent with the model). Whether both are here and in the arena.
 */
bool rt__agent_server_inputs(struct rt_agent *a, struct rt_job *j, struct xround *x)
{
	uint64_t now = trib_now_ns();
	int err;

	if (j->completed != x->round)
		return false; /* the round before is still being made, or stored here */
	if (x->round == 0 && x->need_v0 && !x->v0_here) {
		/* The starting model (PUT /model) has not reached this node yet. */
		if (now - x->opt_asked_ns >= 1000000000ull) {
			x->opt_asked_ns = now;
			sync_ask(a, j->name, "model", 0);
		}
		return false;
	}
	if (x->round > 0 && !x->opt_in && x->opt_none) {
		/* Its controller.db lost the row (restored from an older backup): said loudly. */
		trib_warn("job %s round %u: the controller has no optimiser state for v%u; the "
			  "server step starts from a fresh one (m = 0, v = tau^2)", x->job, x->round,
			  x->round);
	} else if (x->round > 0 && !x->opt_in) {
		/* Version r came without its state (a restart here): the controller has it. */
		if (now - x->opt_asked_ns >= 1000000000ull) {
			x->opt_asked_ns = now;
			sync_ask(a, j->name, "model", 0);
		}
		return false;
	}
	err = rt_node_server_io(a->n, j, x->opt_in, x->opt_in_len, &x->srv);
	if (err) {
		trib_error("job %s round %u: the server step's inputs (model v%u and the "
			   "optimiser state): %s", x->job, x->round, x->round, strerror(-err));
		return false;
	}
	return true;
}

/* This node runs the round's top: start the fold, give it what is here. */
void rt__agent_top_run(struct rt_agent *a, struct xround *x)
{
	struct rt_node *n = a->n;
	struct rt_job *j = rt_job_find(n, x->job);
	struct rt_fn *fn;
	int err;

	if (!j || !x->closed || x->top != a->rank || x->have_result)
		return;
	if (j->algo.rule) {
		rt__agent_shard_step(a, x); /* no sums to fold: ranges (rt_agent_shard.c) */
		return;
	}
	/*
	 * Nodes with nothing (or lost) give zeros, so the fold waits for no one
	 * that is gone. One slot serves them all: functions only read it.
	 */
	for (uint32_t i = 0; i < x->nnodes; i++) {
		if (x->in[i].has || x->counts[i])
			continue;
		if (!x->zeros.has) {
			err = land(a, j, NULL, &x->zeros);
			if (err) {
				trib_error("job %s round %u: no arena for the top's inputs: %s",
					   x->job, x->round, strerror(-err));
				return;
			}
			x->zeros.has = true;
		}
		x->in[i] = x->zeros;
		x->in[i].slot = 0; /* x->zeros owns it */
		x->in[i].d.round = x->round;
		x->in[i].d.seq = i;
	}
	if (!x->folding && j->algo.needs_model && !x->srv.model_slot && !rt__agent_server_inputs(a, j, x))
		return; /* again at a tick, once the previous model and its state are here */
	if (!x->folding) {
		err = rt_node_fold_start(n, j, x->round, x->nnodes,
					 j->algo.needs_model ? &x->srv : NULL, &fn, &x->fold_acc);
		if (err) {
			trib_error("job %s round %u: starting the round's top: %s", x->job,
				   x->round, strerror(-err));
			return;
		}
		x->fold_fn = fn->id;
		x->folding = true;
		memset(x->sent_in, 0, sizeof(x->sent_in));
		trib_info("job %s round %u: this node runs the top: %u nodes' sums", x->job,
			  x->round, x->nnodes);
	}
	fold_feed(a, x);
}

/* Our sum to the round's top: here, or one cross-node edge. */
void rt__agent_sum_deliver(struct rt_agent *a, struct xround *x)
{
	struct rt_node *n = a->n;
	struct rt_round *r = x->local;
	struct pend *pd;
	int err;

	if (!x->sum_ready || !x->closed || x->top < 0 || !r)
		return;
	if (x->top == a->rank) {
		struct xinput *in = &x->in[a->rank];

		if (!in->has) {
			in->d = *rt_round_result(r);
			in->d.kind = SHM_DESC_PARTIAL;
			in->d.seq = (uint32_t)a->rank;
			in->data = rt_round_sum(n, r);
			in->slot = 0; /* the local round's: freed with it */
			in->has = true;
		}
		x->delivered_to = a->rank;
		rt__agent_top_run(a, x);
		return;
	}
	if (x->delivered_to == x->top || x->sending)
		return;
	/* Our sum goes to the node named, not to whoever holds its address now. */
	if (x->top_name[0])
		ctl_wire_peer_name(a->w, x->top_addr, x->top_name);
	err = rt__agent_request(a, x->top_addr,
		      json_pack("{s:s, s:s, s:i, s:i, s:f, s:i, s:s, s:i}", "op", "partial", "job",
				x->job, "round", (json_int_t)x->round, "from", (json_int_t)a->rank,
				"weight", rt_round_result(r)->weight, "count",
				(json_int_t)rt_round_result(r)->count,
				"name", a->name, "epoch", (json_int_t)a->epoch),
		      rt_round_sum(n, r), rt_round_job(r)->n_elem * sizeof(float), PK_PARTIAL, &pd);
	if (err) {
		trib_warn("job %s round %u: sending our sum to %s: %s (again next tick)", x->job,
			  x->round, x->top_addr, strerror(-err));
		return;
	}
	x->sending = true;
	pd->x = x;
	pd->top = x->top;
	pd->bytes = rt_round_job(r)->n_elem * sizeof(float);
}

void rt__agent_on_partial_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct xround *x = pd->x;

	if (!x || pd->top != x->top)
		return; /* for a top that has moved since */
	x->sending = false;
	if (ev->kind == CTL_EV_REPLY && json_is_true(json_object_get(ev->hdr, "ok"))) {
		x->delivered_to = pd->top;
		a->partials_sent++;
		a->partial_bytes += pd->bytes;
		return;
	}
	trib_warn("job %s round %u: the top did not take our sum (%s); again next tick", x->job,
		  x->round,
		  ev->kind == CTL_EV_REPLY ? json_string_value(json_object_get(ev->hdr, "error"))
					   : strerror(-ev->err));
}

void rt_agent_on_local_sum(struct rt_agent *a, struct rt_job *j, struct rt_round *r)
{
	struct xround *x = rt__agent_xr_get(a, j->name, rt_round_number(r), true);

	if (!x || x->sum_ready)
		return;
	x->local = r;
	x->sum_ready = true;
	trib_debug("job %s round %u: this node's sum is ready (%u updates)", j->name,
		   rt_round_number(r), rt_round_result(r)->count);
	rt__agent_sum_deliver(a, x);
}

/* Another node's sum for a round whose top runs here. */
void rt__agent_on_partial(struct rt_agent *a, struct ctl_event *ev)
{
	struct rt_node *n = a->n;
	const char *job = json_string_value(json_object_get(ev->hdr, "job"));
	struct rt_job *j = job ? rt_job_find(n, job) : NULL;
	uint32_t from = (uint32_t)json_integer_value(json_object_get(ev->hdr, "from"));
	uint32_t round = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	struct xround *x;
	struct xinput *in;
	int err;

	if (!j || from >= CTL_MAX_NODES || ev->plen != j->n_elem * sizeof(float)) {
		rt__agent_reply(a, ev, rt__agent_err_json(400, "bad partial"));
		return;
	}
	if (round < j->completed) {
		rt__agent_reply(a, ev, rt__agent_ok_json()); /* that round's model exists already */
		return;
	}
	x = rt__agent_xr_get(a, job, round, true);
	if (!x) {
		rt__agent_reply(a, ev, rt__agent_err_json(503, "out of memory"));
		return;
	}
	in = &x->in[from];
	if (in->has && in->remote) {
		rt__agent_reply(a, ev,
				rt__agent_ok_json()); /* sent again after a timeout: folded once */
		return;
	}
	if (in->has) {
		/* Zeros stood in for it (the node was thought lost): too late to fold it. */
		rt__agent_reply(
		    a, ev, rt__agent_err_json(409, "this round's top went on without that node"));
		return;
	}
	/* The one copy on this node: from nng's receive buffer into the arena. */
	err = land(a, j, ev->payload, in);
	if (err) {
		rt__agent_reply(a, ev, rt__agent_err_json(503, "aggregation memory is full"));
		return;
	}
	in->d.round = round;
	in->d.seq = from;
	in->d.weight = json_number_value(json_object_get(ev->hdr, "weight"));
	in->d.count = (uint32_t)json_integer_value(json_object_get(ev->hdr, "count"));
	in->remote = true;
	in->epoch = (uint32_t)json_integer_value(json_object_get(ev->hdr, "epoch"));
	in->has = true;
	a->partials_received++;
	trib_debug("job %s round %u: sum of node %s landed (%u updates)", job, round,
		   jstr(ev->hdr, "name", "?"), in->d.count);
	rt__agent_reply(a, ev, rt__agent_ok_json());
	rt__agent_top_run(a, x);
}

void rt__agent_model_send(struct rt_agent *a, struct xround *x)
{
	struct rt_node *n = a->n;
	struct rt_job *j = rt_job_find(n, x->job);
	const float *model;
	const uint8_t *state;
	uint8_t *both = NULL;
	int32_t *ranked = NULL; /* frl: the model ranked from the votes */
	float *flora = NULL;
	size_t mlen = j ? j->n_elem * sizeof(float) : 0;
	json_t *edges, *h;
	struct pend *pd;
	int err;

	if (!j || !x->have_result || x->model_sent || x->model_sending ||
	    !trib_retry_due(&x->model_retry, trib_now_ns()))
		return;
	edges = json_array();
	if (x->result_payload) {
		model = x->result_payload;
	} else {
		const struct shm_seg *seg = shm_arena_ptr(n->arena, x->result.segs_off);

		model = shm_arena_ptr(n->arena, seg->src_off);
	}
	if (j->flora) {
		/* The nodes' stacks summed: finished, packed (merged) here, once (rt_flora.h). */
		flora = trib_malloc(mlen ? mlen : 1);
		err = flora ? rt_flora_model_cluster(n, j, x->round, model, x->result.weight, flora)
			    : -ENOMEM;
		if (err) {
			if (err != -EAGAIN)
				trib_error("job %s round %u: the flora model: %s", x->job, x->round,
					   strerror(-err));
			trib_free(flora);
			json_decref(edges);
			return; /* again next tick (-EAGAIN: model v%u is not stored here yet) */
		}
		model = flora;
	}
	for (uint32_t i = 0; i < x->nnodes; i++)
		if (x->in[i].remote && x->in[i].d.count) /* which run's sum: [rank, epoch] */
			json_array_append_new(edges, json_pack("[i, i]", (json_int_t)i,
							       (json_int_t)x->in[i].epoch));
	h = json_pack("{s:s, s:s, s:i, s:i, s:f, s:o}", "op", "model_done", "job", x->job,
		      "round", (json_int_t)x->round, "updates", (json_int_t)x->result.count,
		      "weight", x->result.weight, "edges_from", edges);
	state = rt_node_server_io_out(n, &x->srv);
	if (j->algo.frl && h) {
		/* The nodes' votes, summed: ranked once, here; the model that travels is I32. */
		ranked = trib_malloc(mlen ? mlen : 1);
		err = ranked ? rt_job_frl_rank(j, model, ranked) : -ENOMEM;
		if (err) {
			trib_error("job %s round %u: ranking the votes: %s", x->job, x->round,
				   strerror(-err));
			trib_free(ranked);
			json_decref(h);
			return; /* again next tick */
		}
		model = (const float *)(const void *)ranked;
		state = NULL; /* frl has no server step */
	}
	if (state && h) {
		/* The step's new state follows the model: the controller keeps both. */
		both = trib_malloc(mlen + x->srv.state_size);
		if (!both) {
			json_decref(h);
			return; /* again next tick */
		}
		memcpy(both, model, mlen);
		memcpy(both + mlen, state, x->srv.state_size);
		json_object_set_new(h, "state_bytes", json_integer((json_int_t)x->srv.state_size));
	}
	err = rt__agent_to_ctl(a, h, both ? (const void *)both : (const void *)model,
			       mlen + (both ? x->srv.state_size : 0), PK_MODEL_DONE, &pd);
	trib_free(both);
	trib_free(ranked);
	trib_free(flora);
	if (err)
		return; /* again next tick */
	x->model_sending = true;
	pd->x = x;
	pd->gen = rt__agent_shard_gen(x);
}

bool rt_agent_on_fold_result(struct rt_agent *a, struct rt_fn *fn, const struct shm_desc *d,
			     float *payload)
{
	struct xround *x;

	for (x = a->xr; x; x = x->next)
		if (x->folding && x->fold_fn == fn->id)
			break;
	if (!x)
		return false;
	if (x->have_result) {
		trib_free(payload);
		return true;
	}
	x->result = *d;
	x->result_payload = payload;
	x->have_result = true;
	trib_info("job %s round %u: the round's top folded %u updates (weight %g) from %u nodes",
		  x->job, x->round, d->count, d->weight, x->nnodes);
	rt__agent_model_send(a, x);
	return true;
}

/* The controller's close (again, if a node was lost or the top moved). */
void rt__agent_on_close(struct rt_agent *a, json_t *h)
{
	const char *job = json_string_value(json_object_get(h, "job"));
	struct rt_job *j = job ? rt_job_find(a->n, job) : NULL;
	uint32_t round = (uint32_t)json_integer_value(json_object_get(h, "round"));
	json_t *counts = json_object_get(h, "counts");
	struct xround *x;
	int top = (int)json_integer_value(json_object_get(h, "top"));

	if (!j || round < j->completed)
		return;
	x = rt__agent_xr_get(a, job, round, true);
	if (!x)
		return;
	x->closed = true;
	x->need_v0 = round == 0 && json_is_true(json_object_get(h, "initial"));
	/* A running fold expects as many inputs as nodes at the first close. */
	if (!x->folding) {
		x->nnodes = (uint32_t)json_array_size(counts);
		if (x->nnodes > CTL_MAX_NODES)
			x->nnodes = CTL_MAX_NODES;
	}
	for (uint32_t i = 0; i < x->nnodes; i++) {
		x->counts[i] = (uint32_t)json_integer_value(json_array_get(counts, i));
		x->joins[i] = (uint32_t)json_integer_value(
		    json_array_get(json_object_get(h, "joins"), i));
	}
	if (top != x->top ||
	    x->top_join != (uint32_t)json_integer_value(json_object_get(h, "top_join"))) {
		/* The top moved (its node was lost), or joined again (it may have restarted
		 * without the sums it had): our sum goes to it, now (folded once there). */
		x->delivered_to = -1;
		x->sending = false;
	}
	x->top = top;
	x->top_join = (uint32_t)json_integer_value(json_object_get(h, "top_join"));
	snprintf(x->top_addr, sizeof(x->top_addr), "%s", jstr(h, "top_addr", ""));
	snprintf(x->top_name, sizeof(x->top_name), "%s", jstr(h, "top_name", ""));
	rt_job_set_target(a->n, j, round,
			  a->rank >= 0 && (uint32_t)a->rank < x->nnodes ? x->counts[a->rank] : 0);
	rt__agent_shard_close(a, x, h);
	rt__agent_sum_deliver(a, x);
	rt__agent_top_run(a, x);
}

void rt_agent_on_advance(struct rt_agent *a, struct rt_job *j)
{
	struct rt_node *n = a->n;
	struct upd **pp, *mine = NULL;
	struct xround *x;

	if (!a)
		return;
	/* Updates counted for the round that is open here now: they fold first... */
	pp = &a->backlog;
	while (*pp) {
		struct upd *u = *pp;

		if (!strcmp(u->job, j->name) && u->round <= j->round) {
			*pp = u->next;
			u->next = mine;
			mine = u;
		} else {
			pp = &u->next;
		}
	}
	while (mine) {
		struct upd *u = mine;

		mine = u->next;
		u->next = NULL;
		rt__agent_upd_fold(a, u);
	}
	/* ...then a close that came before the local round got there (it may advance again). */
	x = rt__agent_xr_get(a, j->name, j->round, false);
	if (x && x->closed && a->rank >= 0 && (uint32_t)a->rank < x->nnodes)
		rt_job_set_target(n, j, j->round, x->counts[a->rank]);
}

/* A model version from the controller (pushed, or asked for by sync). 0 or -errno. */
static int model_apply(struct rt_agent *a, json_t *h, const uint8_t *payload, size_t plen)
{
	struct rt_node *n = a->n;
	const char *job = json_string_value(json_object_get(h, "job"));
	struct rt_job *j = job ? rt_job_find(n, job) : NULL;
	uint32_t v = (uint32_t)json_integer_value(json_object_get(h, "version"));
	size_t slen = (size_t)json_integer_value(json_object_get(h, "state_bytes"));
	struct xround *next;
	float *m;
	int err;

	if (!j || slen > plen || (plen && plen - slen != j->n_elem * sizeof(float)))
		return -EINVAL;
	if (!slen && plen && v > 0 && j->algo.needs_model) {
		next = rt__agent_xr_get(a, j->name, v, true);
		if (!next)
			return -ENOMEM;
		next->opt_none = true;
	} else if (slen && j->algo.needs_model) {
		/* The state round v's server step starts from, for when its top is here. */
		next = rt__agent_xr_get(a, j->name, v, true);
		if (!next)
			return -ENOMEM;
		if (!next->opt_in) {
			next->opt_in = trib_malloc(slen);
			if (!next->opt_in)
				return -ENOMEM;
			memcpy(next->opt_in, payload + (plen - slen), slen);
			next->opt_in_len = slen;
		}
	}
	plen -= slen;
	if (v == 0 && !plen)
		return 0; /* no starting model: zeros */
	/* An aligned copy: the payload sits at any offset in nng's buffer. */
	m = trib_calloc(j->n_elem ? j->n_elem : 1, sizeof(float));
	if (!m)
		return -ENOMEM;
	if (plen)
		memcpy(m, payload, plen);
	if (v == 0) {
		/* The starting model the controller accepted (PUT /model on some node). */
		err = j->completed ? 0 : rt_job_set_initial_remote(n, j, m);
		trib_free(m);
		if (!err && !j->completed) {
			next = rt__agent_xr_get(a, j->name, 0, true);
			if (!next)
				return -ENOMEM;
			next->v0_here = true;
			rt__agent_top_run(a, next);
		}
		return err;
	}
	err = rt_job_commit_remote(n, j, v, m,
				   (uint32_t)json_integer_value(json_object_get(h, "updates")),
				   json_number_value(json_object_get(h, "weight")));
	trib_free(m);
	if (err) {
		trib_error("job %s: storing model v%u: %s", j->name, v, strerror(-err));
		return err;
	}
	/* Rounds before this version are done here: their sums and the top's inputs go. */
	for (struct xround *x = a->xr, *next; x; x = next) {
		next = x->next;
		if (!strcmp(x->job, j->name) && x->round < v)
			rt__agent_xr_free(a, x);
	}
	return 0;
}

void rt__agent_on_model(struct rt_agent *a, struct ctl_event *ev)
{
	int err = model_apply(a, ev->hdr, ev->payload, ev->plen);

	rt__agent_reply(a, ev, err ? rt__agent_err_json(err == -EINVAL ? 400 : 503, err == -EINVAL ?
				    "bad model (or a job this node does not know yet)" :
				    "could not store the model") : rt__agent_ok_json());
}

/* Ask the controller again for @what ("job", "close" of @round, "model") of @job. */
static void sync_ask(struct rt_agent *a, const char *job, const char *what, uint32_t round)
{
	trib_info("job %s: asking the controller for the %s%s missed here", job, what,
		  strcmp(what, "close") ? "" : " of the open round");
	rt__agent_to_ctl(a,
			 json_pack("{s:s, s:s, s:s, s:i}", "op", "sync", "job", job, "what", what,
				   "round", (json_int_t)round),
			 NULL, 0, PK_SYNC, NULL);
}

/*
 * The heartbeat's answer lists each job's open round and version. A node
 * behind on one for two heartbeats in a row (the message is not merely on
 * its way) missed it: a job, a close or a model that overtook the answer to
 * its join. It asks for it again; applying any of them twice is harmless.
 */
void rt__agent_sync_check(struct rt_agent *a, json_t *jobs)
{
	const char *name;
	json_t *v;

	json_object_foreach(jobs, name, v) {
		struct rt_job *j = rt_job_find(a->n, name);
		uint32_t round = (uint32_t)json_integer_value(json_array_get(v, 0));
		uint32_t version = (uint32_t)json_integer_value(json_array_get(v, 1));
		struct xround *x;

		if (!j) {
			sync_ask(a, name, "job", 0);
			continue;
		}
		if (version > j->completed) {
			if (j->sync_version == version)
				sync_ask(a, name, "model", 0);
			j->sync_version = version;
		}
		x = rt__agent_xr_get(a, name, j->round, false);
		if (round > j->round && (!x || !x->closed)) {
			if (j->sync_round == j->round + 1)
				sync_ask(a, name, "close", j->round);
			j->sync_round = j->round + 1;
		}
	}
}

void rt__agent_on_sync_reply(struct rt_agent *a, struct ctl_event *ev)
{
	const char *op = json_string_value(json_object_get(ev->hdr, "op"));

	if (ev->kind != CTL_EV_REPLY || !op)
		return; /* asked again at a later heartbeat if still behind */
	if (!strcmp(op, "job"))
		rt__agent_job_apply(a, ev->hdr);
	else if (!strcmp(op, "close"))
		rt__agent_on_close(a, ev->hdr);
	else if (!strcmp(op, "model"))
		model_apply(a, ev->hdr, ev->payload, ev->plen);
}

