// SPDX-License-Identifier: MIT
/*
 * The node agent: one node of a cluster. Everything here runs on the
 * gateway's thread; the wire (ctl_wire.c) hands it events through an
 * eventfd the gateway polls.
 *
 * An update's path across the cluster: the gateway receives it into an
 * arena slot and checks it; the controller counts it (that is what makes a
 * round close once, cluster-wide) and says which node folds it — this one
 * (locality), or another (round-robin baseline, or this arena is full), in
 * which case its bytes go there over nng first. Only then the client gets
 * 202. When the controller closes the round, each node's tree hands up one
 * sum (a top with FN_CFG_SUM); the sums of the other nodes cross to the
 * node that runs the round's top, land in its arena, and a fold function
 * folds them in node order and divides once. The model goes to the
 * controller, which writes it and sends it to every node.
 */
#include "rt_agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl_cluster.h"
#include "ctl_wire.h"
#include "rt_fnproc.h"
#include "rt_api.h"
#include "rt_node.h"
#include "shm_abi.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

#define AGENT_TIMEOUT_MS    10000
#define AGENT_HB_TIMEOUT_MS 1000
#define JOIN_RETRY_NS	    1000000000ull

enum pend_kind {
	PK_JOIN = 1,
	PK_HB,
	PK_CREATE,
	PK_ACCEPT,
	PK_FWD,
	PK_PARTIAL,
	PK_MODEL_DONE,
	PK_ROUND_GET,
	PK_STATUS,
	PK_NOTE,
	PK_SYNC,
};

/* An update on its way through the cluster: owns its slot until folded or given up. */
struct upd {
	struct rt_conn *c;    /* the client waiting for 202, or NULL */
	struct ctl_event *ev; /* a peer's forward waiting for its answer, or NULL */
	char job[64];
	uint32_t round;
	uint64_t uid; /* this node's id of the request that counts it */
	int tries;
	uint32_t seq; /* the controller's count for the round */
	int fold_at;  /* rank that folds it */
	char fold_name[64];
	uint32_t fold_epoch; /* that node's run (a receipt names it) */
	uint64_t slot_off, segs_off, slot_len, body_len;
	uint32_t nsegs;
	double weight;
	struct upd *next; /* backlog: waiting for the local round to get to it */
};

struct xinput {
	bool has;
	bool remote;	   /* came over the wire (a cross-node edge) */
	struct shm_desc d; /* a PARTIAL, seq = the node's rank */
	uint64_t slot;	   /* owned: a landed sum or zeros; 0: the local round's */
	const float *data;
};

/* One round of one job as this node sees the cluster. */
struct xround {
	char job[64];
	uint32_t round;
	bool closed; /* the controller's close came */
	uint32_t nnodes;
	uint32_t counts[CTL_MAX_NODES];
	int top;
	char top_addr[128];
	/* this node's sum */
	struct rt_round *local; /* the local round with its sum (until the model) */
	bool sum_ready;
	int delivered_to; /* the top rank that has our sum (-1: none) */
	bool sending;
	/* the round's top, when it is on this node */
	bool folding;
	uint32_t fold_fn;
	uint64_t fold_acc;
	struct xinput zeros;     /* one slot of zeros for every node with nothing (owned) */
	struct xinput in[CTL_MAX_NODES];
	bool sent_in[CTL_MAX_NODES];
	bool have_result;
	bool model_sending, model_sent;
	struct shm_desc result;
	float *result_payload; /* tcp: owned */
	struct xround *next;
};

struct pend {
	uint64_t cookie;
	int kind;
	struct rt_conn *c;
	struct upd *u;
	struct xround *x;
	int top;	/* PK_PARTIAL: the rank it went to */
	uint64_t bytes; /* PK_PARTIAL: payload bytes */
	struct pend *next;
};

struct rt_agent {
	struct rt_node *n;
	struct ctl_wire *w;
	char name[64];
	char addr[128];
	char http[160];
	int rank;
	uint32_t epoch; /* this run, as the controller numbered it */
	bool joined, join_pending, hb_pending;
	uint64_t last_join_ns, last_hb_ns;
	uint32_t hb_ms; /* the controller's heartbeat period */
	uint64_t cookie;
	struct pend *pend;
	struct xround *xr;
	struct upd *backlog;
	/* counters for /metrics */
	uint64_t partials_sent, partials_received, fwd_sent, fwd_received, accept_rejected,
	    models_sent;
	uint64_t partial_bytes, fwd_bytes; /* payload bytes sent to other nodes */
	uint64_t next_uid;
};

/* A string member, or @dflt. */
static const char *jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : dflt;
}

/* --- plumbing --- */

static int request(struct rt_agent *a, const char *url, json_t *h, const void *p, size_t len,
		   int kind, struct pend **out)
{
	struct pend *pd = trib_calloc(1, sizeof(*pd));
	int err;

	if (!pd) {
		json_decref(h);
		return -ENOMEM;
	}
	pd->cookie = ++a->cookie;
	pd->kind = kind;
	pd->top = -1;
	err = ctl_wire_request(a->w, url, h, p, len, pd->cookie,
			       kind == PK_HB ? AGENT_HB_TIMEOUT_MS : AGENT_TIMEOUT_MS);
	json_decref(h);
	if (err) {
		trib_free(pd);
		return err;
	}
	pd->next = a->pend;
	a->pend = pd;
	if (out)
		*out = pd;
	return 0;
}

static int to_ctl(struct rt_agent *a, json_t *h, const void *p, size_t len, int kind,
		  struct pend **out)
{
	return request(a, a->n->opts.controller, h, p, len, kind, out);
}

static struct pend *pend_take(struct rt_agent *a, uint64_t cookie)
{
	for (struct pend **pp = &a->pend; *pp; pp = &(*pp)->next) {
		if ((*pp)->cookie == cookie) {
			struct pend *pd = *pp;

			*pp = pd->next;
			return pd;
		}
	}
	return NULL;
}

static void respond_json(struct rt_conn *c, int status, json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	if (s)
		rt_conn_respond(c, status, "application/json", s, strlen(s), NULL);
	else
		rt_conn_error(c, 500, "out of memory", -1, NULL);
	free(s); /* jansson's */
	json_decref(o);
}

static void reply(struct rt_agent *a, struct ctl_event *ev, json_t *h)
{
	if (ctl_wire_reply(a->w, ev, h, NULL, 0))
		trib_warn("cluster: could not answer a peer");
	json_decref(h);
}

static json_t *ok_json(void)
{
	return json_pack("{s:b}", "ok", 1);
}

static json_t *err_json(int status, const char *msg)
{
	return json_pack("{s:b, s:i, s:s}", "ok", 0, "status", status, "error", msg);
}

static struct xround *xr_get(struct rt_agent *a, const char *job, uint32_t round, bool make)
{
	struct xround *x;

	for (x = a->xr; x; x = x->next)
		if (x->round == round && !strcmp(x->job, job))
			return x;
	if (!make)
		return NULL;
	x = trib_calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	snprintf(x->job, sizeof(x->job), "%s", job);
	x->round = round;
	x->top = -1;
	x->delivered_to = -1;
	x->next = a->xr;
	a->xr = x;
	return x;
}

static void xr_free(struct rt_agent *a, struct xround *x)
{
	struct rt_node *n = a->n;

	for (struct xround **pp = &a->xr; *pp; pp = &(*pp)->next) {
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	}
	for (struct pend *pd = a->pend; pd; pd = pd->next)
		if (pd->x == x)
			pd->x = NULL;
	for (uint32_t i = 0; i < CTL_MAX_NODES; i++)
		if (x->in[i].slot)
			shm_slot_free(n->arena, x->in[i].slot);
	if (x->fold_acc)
		shm_slot_free(n->arena, x->fold_acc);
	if (x->zeros.slot)
		shm_slot_free(n->arena, x->zeros.slot);
	trib_free(x->result_payload);
	trib_free(x);
}

/* --- jobs --- */

static void job_apply(struct rt_agent *a, json_t *h)
{
	const char *name = json_string_value(json_object_get(h, "name"));
	const char *token = json_string_value(json_object_get(h, "token"));
	const char *body = json_string_value(json_object_get(h, "body"));
	uint32_t round = (uint32_t)json_integer_value(json_object_get(h, "round"));
	struct rt_job *j;
	char msg[320];
	int status;

	if (!name || !token || !body)
		return;
	j = rt_job_find(a->n, name);
	if (!j) {
		status = rt_api_job_build(a->n, true, (const uint8_t *)body, strlen(body), token, false,
					  &j, msg, sizeof(msg), NULL);
		if (status != 201) {
			trib_error("job %s from the controller: %d %s", name, status, msg);
			return;
		}
		j->xtarget = UINT32_MAX;
	}
	if (round > j->round && !j->open && !j->inflight)
		j->round = round; /* joined late: the cluster is at this round */
}

static void job_create(void *ctx, struct rt_conn *c)
{
	struct rt_agent *a = ctx;
	json_t *o = json_loadb((const char *)c->body_heap, c->body_len, 0, NULL);
	char msg[320];
	uint64_t n_elem = 0;
	struct pend *pd;
	int err;

	rt_api_job_build(a->n, true, c->body_heap, c->body_len, NULL, true, NULL, msg, sizeof(msg),
			 &n_elem);
	err = to_ctl(a,
		     json_pack("{s:s, s:s, s:s?, s:I}", "op", "job_create", "node", a->name, "name",
			       json_string_value(json_object_get(o, "name")), "n_elem",
			       (json_int_t)n_elem),
		     c->body_heap, c->body_len, PK_CREATE, &pd);
	json_decref(o);
	if (err) {
		rt_conn_error(c, 503, "the controller is not reachable; retry", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

static void on_create_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct rt_conn *c = pd->c;
	struct rt_job *j = NULL;
	char msg[320];
	int status;

	if (ev->kind != CTL_EV_REPLY) {
		rt_conn_error(c, 503,
			      "the controller did not answer; the job may or may not "
			      "exist: GET /v1/jobs/{name} tells",
			      -1, "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		rt_conn_error(c, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			      jstr(ev->hdr, "error", "refused"), -1, NULL);
		return;
	}
	status = rt_api_job_build(a->n, true, c->body_heap, c->body_len,
				  json_string_value(json_object_get(ev->hdr, "token")), false, &j,
				  msg, sizeof(msg), NULL);
	if (status != 201) {
		rt_conn_error(c, status, msg, -1, NULL);
		return;
	}
	j->xtarget = UINT32_MAX;
	respond_json(c, 201,
		     json_pack("{s:s, s:s, s:i}", "job", j->name, "token", j->token, "round", 0));
}

/* --- updates --- */

static void upd_free(struct rt_agent *a, struct upd *u)
{
	if (u->slot_off != UINT64_MAX)
		shm_slot_free(a->n->arena, u->slot_off);
	trib_free(u);
}

/* Answer whoever waits for @u: a client (202 or an error) or a peer's forward. */
static void upd_answer(struct rt_agent *a, struct upd *u, int status, const char *msg,
		       long long round)
{
	if (u->c) {
		if (status == 202) {
			char buf[320];
			int len = snprintf(buf, sizeof(buf),
					   "{\"round\":%u,\"received\":%u,"
					   "\"node\":\"%s\",\"epoch\":%u,\"receipt\":"
					   "\"%s.%u/%u/%u\"}",
					   u->round, u->seq + 1, u->fold_name, u->fold_epoch,
					   u->fold_name, u->fold_epoch, u->round, u->seq);

			rt_conn_respond(u->c, 202, "application/json", buf, (size_t)len, NULL);
		} else {
			rt_conn_error(u->c, status, msg, round,
				      status == 503 ? "Retry-After: 1\r\n" : NULL);
		}
	}
	if (u->ev) {
		json_t *h = status == 202 ? ok_json() : err_json(status, msg);

		reply(a, u->ev, h);
		ctl_event_free(a->w, u->ev);
	}
	upd_free(a, u);
}

/* Give the controller back an update it counted that cannot be folded. */
static void upd_release(struct rt_agent *a, struct upd *u)
{
	to_ctl(a,
	       json_pack("{s:s, s:s, s:s, s:I}", "op", "release", "job", u->job, "node", a->name,
			 "uid", (json_int_t)u->uid),
	       NULL, 0, PK_NOTE, NULL);
}

/* Fold @u here: into the local round now, or when the local round gets to its round. */
static void upd_fold(struct rt_agent *a, struct upd *u)
{
	struct rt_node *n = a->n;
	struct rt_job *j = rt_job_find(n, u->job);
	uint32_t seq;
	int err;

	if (!j) {
		upd_answer(a, u, 404, "no such job", -1);
		return;
	}
	if (j->round < u->round) {
		/* The close of an earlier round is still on its way here. */
		u->next = a->backlog;
		a->backlog = u;
		return;
	}
	err = j->round == u->round ? rt_job_accept(n, j, u->round, u->slot_off, u->segs_off,
						   u->nsegs, u->weight, &seq)
				   : -ESTALE;
	if (err) {
		trib_error("job %s round %u: folding a counted update here: %s", j->name, u->round,
			   strerror(-err));
		upd_release(a, u);
		if (err == -ENOSPC)
			rt_job_relieve(n, j);
		upd_answer(a, u, 503,
			   err == -ENOSPC ? "aggregation memory is full; retry shortly"
					  : "the round's aggregation tree failed; retry",
			   -1);
		return;
	}
	u->slot_off = UINT64_MAX; /* the tree's now */
	n->m.bytes_received += u->body_len;
	upd_answer(a, u, 202, NULL, -1);
}

/* Ask the controller to count @u; again with the same id if an answer is lost. */
static int accept_send(struct rt_agent *a, struct upd *u)
{
	struct pend *pd;
	int err;

	err = to_ctl(a,
		     json_pack("{s:s, s:s, s:s, s:i, s:I}", "op", "accept", "job", u->job, "node",
			       a->name, "round", (json_int_t)u->round, "uid", (json_int_t)u->uid),
		     NULL, 0, PK_ACCEPT, &pd);
	if (!err)
		pd->u = u;
	return err;
}

static void update(void *ctx, struct rt_conn *c, uint64_t segs_off, uint32_t nsegs)
{
	struct rt_agent *a = ctx;
	struct rt_api_req *r = rt_api_req(c);
	struct upd *u = trib_calloc(1, sizeof(*u));
	int err;

	if (!u) {
		rt_conn_error(c, 503, "out of memory", -1, "Retry-After: 1\r\n");
		return;
	}
	u->c = c;
	snprintf(u->job, sizeof(u->job), "%s", r->job->name);
	u->round = r->round;
	u->slot_off = r->slot_off;
	u->slot_len = r->slot_len;
	u->segs_off = segs_off;
	u->nsegs = nsegs;
	u->body_len = c->body_len;
	u->weight = r->weight;
	r->slot_off = UINT64_MAX; /* the update's now */
	u->uid = ++a->next_uid;
	err = accept_send(a, u);
	if (err) {
		u->c = NULL;
		upd_free(a, u);
		rt_conn_error(c, 503, "the controller is not reachable; retry", -1,
			      "Retry-After: 1\r\n");
	}
}

static void on_accept_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct upd *u = pd->u;
	const char *addr;
	struct pend *fp;
	int err;

	if (ev->kind != CTL_EV_REPLY) {
		trib_warn("job %s: the controller did not answer an update's count: %s%s", u->job,
			  strerror(-ev->err), u->tries < 2 ? "; asking again" : "");
		if (++u->tries < 3 && !accept_send(a, u))
			return;
		/* It may have counted it: give it back (by id: nothing if it did not). */
		upd_release(a, u);
		upd_answer(a, u, 503, "the controller did not answer; send the update again", -1);
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		json_t *r = json_object_get(ev->hdr, "round");

		a->accept_rejected++;
		upd_answer(a, u, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			   jstr(ev->hdr, "error", "refused"),
			   r ? (long long)json_integer_value(r) : -1);
		return;
	}
	u->seq = (uint32_t)json_integer_value(json_object_get(ev->hdr, "seq"));
	u->fold_at = (int)json_integer_value(json_object_get(ev->hdr, "fold_at"));
	snprintf(u->fold_name, sizeof(u->fold_name), "%s", jstr(ev->hdr, "fold_name", "?"));
	u->fold_epoch = (uint32_t)json_integer_value(json_object_get(ev->hdr, "fold_epoch"));
	if (u->fold_at == a->rank) {
		upd_fold(a, u);
		return;
	}
	/* Folded on another node: its bytes cross once, into that node's arena. */
	addr = json_string_value(json_object_get(ev->hdr, "fold_addr"));
	{
		const struct shm_seg *segs = shm_arena_ptr(a->n->arena, u->segs_off);
		json_t *sj = json_array();

		for (uint32_t i = 0; i < u->nsegs; i++)
			json_array_append_new(
			    sj, json_pack("[I, I, I, i, f]",
					  (json_int_t)(segs[i].src_off - u->slot_off),
					  (json_int_t)segs[i].n_elem, (json_int_t)segs[i].dst_elem,
					  (int)segs[i].dtype, (double)segs[i].scale));
		err = addr ? request(a, addr,
				     json_pack("{s:s, s:s, s:i, s:i, s:f, s:o, s:s}", "op", "fwd",
					       "job", u->job, "round", (json_int_t)u->round, "seq",
					       (json_int_t)u->seq, "weight", u->weight, "segs", sj,
					       "from", a->name),
				     shm_arena_ptr(a->n->arena, u->slot_off), u->body_len, PK_FWD,
				     &fp)
			   : -EINVAL;
		if (!addr)
			json_decref(sj);
	}
	if (err) {
		upd_release(a, u);
		upd_answer(a, u, 503, "the node that folds this update is not reachable; retry",
			   -1);
		return;
	}
	a->fwd_sent++;
	fp->u = u;
}

static void on_fwd_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct upd *u = pd->u;

	a->fwd_bytes += u->body_len; /* it crossed, whatever the answer */
	if (ev->kind != CTL_EV_REPLY || !json_is_true(json_object_get(ev->hdr, "ok"))) {
		/* Not folded there: uncount it, and the client sends it again. */
		upd_release(a, u);
		upd_answer(a, u, 503, "the node that folds this update did not take it; retry", -1);
		return;
	}
	upd_answer(a, u, 202, NULL, -1);
}

/* A peer's update for us to fold: it lands in this arena, then goes on as a descriptor. */
static bool on_fwd(struct rt_agent *a, struct ctl_event *ev)
{
	struct rt_node *n = a->n;
	json_t *sj = json_object_get(ev->hdr, "segs"), *e;
	const char *job = json_string_value(json_object_get(ev->hdr, "job"));
	struct rt_job *j = job ? rt_job_find(n, job) : NULL;
	size_t nsegs = json_array_size(sj), i;
	struct shm_seg *segs;
	struct upd *u;
	uint64_t body = (ev->plen + 63) & ~63ull;

	if (!j || !nsegs || nsegs > j->nschema) {
		reply(a, ev, err_json(400, "bad forward"));
		return false;
	}
	u = trib_calloc(1, sizeof(*u));
	if (!u) {
		reply(a, ev, err_json(503, "out of memory"));
		return false;
	}
	u->slot_off = UINT64_MAX;
	u->slot_len = body + nsegs * sizeof(struct shm_seg);
	if (shm_slot_alloc(n->arena, u->slot_len, &u->slot_off)) {
		u->slot_off = UINT64_MAX;
		upd_free(a, u);
		reply(a, ev, err_json(503, "aggregation memory is full"));
		return false;
	}
	/* The one copy on this node: from nng's receive buffer into the arena. */
	memcpy(shm_arena_ptr(n->arena, u->slot_off), ev->payload, ev->plen);
	u->segs_off = u->slot_off + body;
	segs = shm_arena_ptr(n->arena, u->segs_off);
	json_array_foreach(sj, i, e)
	{
		uint64_t off = (uint64_t)json_integer_value(json_array_get(e, 0));
		uint64_t ne = (uint64_t)json_integer_value(json_array_get(e, 1));
		unsigned dt = (unsigned)json_integer_value(json_array_get(e, 3));
		uint64_t es = dt == SHM_DTYPE_F32 ? 4 : dt == SHM_DTYPE_I8 ? 1 : 2;

		if (off > ev->plen || ne * es > ev->plen - off) {
			upd_free(a, u);
			reply(a, ev, err_json(400, "bad forward: a segment lies outside the body"));
			return false;
		}
		memset(&segs[i], 0, sizeof(segs[i]));
		segs[i].src_off = u->slot_off + off;
		segs[i].n_elem = ne;
		segs[i].dst_elem = (uint64_t)json_integer_value(json_array_get(e, 2));
		segs[i].dtype = (uint16_t)dt;
		segs[i].scale = (float)json_number_value(json_array_get(e, 4));
	}
	snprintf(u->job, sizeof(u->job), "%s", job);
	u->round = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	u->seq = (uint32_t)json_integer_value(json_object_get(ev->hdr, "seq"));
	u->weight = json_number_value(json_object_get(ev->hdr, "weight"));
	u->nsegs = (uint32_t)nsegs;
	u->body_len = ev->plen;
	u->fold_at = a->rank;
	u->fold_epoch = a->epoch;
	snprintf(u->fold_name, sizeof(u->fold_name), "%s", a->name);
	u->ev = ev;
	a->fwd_received++;
	upd_fold(a, u);
	return true; /* the event is answered (and freed) with the update */
}

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

/* This node runs the round's top: start the fold, give it what is here. */
static void top_run(struct rt_agent *a, struct xround *x)
{
	struct rt_node *n = a->n;
	struct rt_job *j = rt_job_find(n, x->job);
	struct rt_fn *fn;
	int err;

	if (!j || !x->closed || x->top != a->rank || x->have_result)
		return;
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
	if (!x->folding) {
		err = rt_node_fold_start(n, j, x->round, x->nnodes, &fn, &x->fold_acc);
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
static void sum_deliver(struct rt_agent *a, struct xround *x)
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
		top_run(a, x);
		return;
	}
	if (x->delivered_to == x->top || x->sending)
		return;
	err = request(a, x->top_addr,
		      json_pack("{s:s, s:s, s:i, s:i, s:f, s:i, s:s}", "op", "partial", "job",
				x->job, "round", (json_int_t)x->round, "from", (json_int_t)a->rank,
				"weight", rt_round_result(r)->weight, "count",
				(json_int_t)rt_round_result(r)->count,
				"name", a->name),
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

static void on_partial_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
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
	struct xround *x = xr_get(a, j->name, rt_round_number(r), true);

	if (!x || x->sum_ready)
		return;
	x->local = r;
	x->sum_ready = true;
	trib_debug("job %s round %u: this node's sum is ready (%u updates)", j->name,
		   rt_round_number(r), rt_round_result(r)->count);
	sum_deliver(a, x);
}

/* Another node's sum for a round whose top runs here. */
static void on_partial(struct rt_agent *a, struct ctl_event *ev)
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
		reply(a, ev, err_json(400, "bad partial"));
		return;
	}
	if (round < j->completed) {
		reply(a, ev, ok_json()); /* that round's model exists already */
		return;
	}
	x = xr_get(a, job, round, true);
	if (!x) {
		reply(a, ev, err_json(503, "out of memory"));
		return;
	}
	in = &x->in[from];
	if (in->has && in->remote) {
		reply(a, ev, ok_json()); /* sent again after a timeout: folded once */
		return;
	}
	if (in->has) {
		/* Zeros stood in for it (the node was thought lost): too late to fold it. */
		reply(a, ev, err_json(409, "this round's top went on without that node"));
		return;
	}
	/* The one copy on this node: from nng's receive buffer into the arena. */
	err = land(a, j, ev->payload, in);
	if (err) {
		reply(a, ev, err_json(503, "aggregation memory is full"));
		return;
	}
	in->d.round = round;
	in->d.seq = from;
	in->d.weight = json_number_value(json_object_get(ev->hdr, "weight"));
	in->d.count = (uint32_t)json_integer_value(json_object_get(ev->hdr, "count"));
	in->remote = true;
	in->has = true;
	a->partials_received++;
	trib_debug("job %s round %u: sum of node %s landed (%u updates)", job, round,
		   jstr(ev->hdr, "name", "?"), in->d.count);
	reply(a, ev, ok_json());
	top_run(a, x);
}

static void model_send(struct rt_agent *a, struct xround *x)
{
	struct rt_node *n = a->n;
	struct rt_job *j = rt_job_find(n, x->job);
	const float *model;
	json_t *edges;
	struct pend *pd;
	int err;

	if (!j || !x->have_result || x->model_sent || x->model_sending)
		return;
	edges = json_array();
	if (x->result_payload) {
		model = x->result_payload;
	} else {
		const struct shm_seg *seg = shm_arena_ptr(n->arena, x->result.segs_off);

		model = shm_arena_ptr(n->arena, seg->src_off);
	}
	for (uint32_t i = 0; i < x->nnodes; i++)
		if (x->in[i].remote && x->in[i].d.count)
			json_array_append_new(edges, json_integer(i));
	err =
	    to_ctl(a,
		   json_pack("{s:s, s:s, s:i, s:i, s:f, s:o}", "op", "model_done", "job", x->job,
			     "round", (json_int_t)x->round, "updates", (json_int_t)x->result.count,
			     "weight", x->result.weight, "edges_from", edges),
		   model, j->n_elem * sizeof(float), PK_MODEL_DONE, &pd);
	if (err)
		return; /* again next tick */
	x->model_sending = true;
	pd->x = x;
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
	model_send(a, x);
	return true;
}

/* The controller's close (again, if a node was lost or the top moved). */
static void on_close(struct rt_agent *a, json_t *h)
{
	const char *job = json_string_value(json_object_get(h, "job"));
	struct rt_job *j = job ? rt_job_find(a->n, job) : NULL;
	uint32_t round = (uint32_t)json_integer_value(json_object_get(h, "round"));
	json_t *counts = json_object_get(h, "counts");
	struct xround *x;
	int top = (int)json_integer_value(json_object_get(h, "top"));

	if (!j || round < j->completed)
		return;
	x = xr_get(a, job, round, true);
	if (!x)
		return;
	x->closed = true;
	/* A running fold expects as many inputs as nodes at the first close. */
	if (!x->folding) {
		x->nnodes = (uint32_t)json_array_size(counts);
		if (x->nnodes > CTL_MAX_NODES)
			x->nnodes = CTL_MAX_NODES;
	}
	for (uint32_t i = 0; i < x->nnodes; i++)
		x->counts[i] = (uint32_t)json_integer_value(json_array_get(counts, i));
	if (top != x->top) {
		/* The top moved (its node was lost): our sum goes to the new one, now. */
		x->delivered_to = -1;
		x->sending = false;
	}
	x->top = top;
	snprintf(x->top_addr, sizeof(x->top_addr), "%s", jstr(h, "top_addr", ""));
	rt_job_set_target(a->n, j, round,
			  a->rank >= 0 && (uint32_t)a->rank < x->nnodes ? x->counts[a->rank] : 0);
	sum_deliver(a, x);
	top_run(a, x);
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
		upd_fold(a, u);
	}
	/* ...then a close that came before the local round got there (it may advance again). */
	x = xr_get(a, j->name, j->round, false);
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
	float *m;
	int err;

	if (!j || (plen && plen != j->n_elem * sizeof(float)))
		return -EINVAL;
	/* An aligned copy: the payload sits at any offset in nng's buffer. */
	m = trib_calloc(j->n_elem ? j->n_elem : 1, sizeof(float));
	if (!m)
		return -ENOMEM;
	if (plen)
		memcpy(m, payload, plen);
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
			xr_free(a, x);
	}
	return 0;
}

static void on_model(struct rt_agent *a, struct ctl_event *ev)
{
	int err = model_apply(a, ev->hdr, ev->payload, ev->plen);

	reply(a, ev, err ? err_json(err == -EINVAL ? 400 : 503, err == -EINVAL ?
				    "bad model (or a job this node does not know yet)" :
				    "could not store the model") : ok_json());
}

/* Ask the controller again for @what ("job", "close" of @round, "model") of @job. */
static void sync_ask(struct rt_agent *a, const char *job, const char *what, uint32_t round)
{
	trib_info("job %s: asking the controller for the %s%s missed here", job, what,
		  strcmp(what, "close") ? "" : " of the open round");
	to_ctl(a, json_pack("{s:s, s:s, s:s, s:i}", "op", "sync", "job", job, "what", what,
			    "round", (json_int_t)round), NULL, 0, PK_SYNC, NULL);
}

/*
 * The heartbeat's answer lists each job's open round and version. A node
 * behind on one for two heartbeats in a row (the message is not merely on
 * its way) missed it: a job, a close or a model that overtook the answer to
 * its join. It asks for it again; applying any of them twice is harmless.
 */
static void sync_check(struct rt_agent *a, json_t *jobs)
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
		x = xr_get(a, name, j->round, false);
		if (round > j->round && (!x || !x->closed)) {
			if (j->sync_round == j->round + 1)
				sync_ask(a, name, "close", j->round);
			j->sync_round = j->round + 1;
		}
	}
}

static void on_sync_reply(struct rt_agent *a, struct ctl_event *ev)
{
	const char *op = json_string_value(json_object_get(ev->hdr, "op"));

	if (ev->kind != CTL_EV_REPLY || !op)
		return; /* asked again at a later heartbeat if still behind */
	if (!strcmp(op, "job"))
		job_apply(a, ev->hdr);
	else if (!strcmp(op, "close"))
		on_close(a, ev->hdr);
	else if (!strcmp(op, "model"))
		model_apply(a, ev->hdr, ev->payload, ev->plen);
}

/* --- joining, heartbeats --- */

/* MemAvailable from /proc/meminfo, in bytes (0 if it cannot be read). */
static uint64_t mem_available(void)
{
	char line[128];
	unsigned long long kb = 0;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb * 1024;
}

static void join_send(struct rt_agent *a)
{
	struct rt_node *n = a->n;
	uint64_t used = 0, total = 0;
	uint32_t live = 0;
	struct pend *pd;

	shm_arena_usage(n->arena, &used, &total, &live);
	a->last_join_ns = trib_now_ns();
	if (to_ctl(a,
		   json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:s}", "op", "join", "name",
			     a->name, "addr", a->addr, "http", a->http, "cores",
			     (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "arena_bytes",
			     (json_int_t)total, "arena_free", (json_int_t)(total - used),
			     "mem_free", (json_int_t)mem_available(), "dataplane",
			     rt_dataplane_name(n->dataplane)),
		   NULL, 0, PK_JOIN, &pd) == 0)
		a->join_pending = true;
}

static void on_join_reply(struct rt_agent *a, struct ctl_event *ev)
{
	json_t *jobs, *e;
	size_t i;

	a->join_pending = false;
	if (ev->kind != CTL_EV_REPLY) {
		trib_warn("controller %s: no answer to join (%s); trying again",
			  a->n->opts.controller, strerror(-ev->err));
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		trib_error("controller %s refused this node: %s", a->n->opts.controller,
			   jstr(ev->hdr, "error", "?"));
		return;
	}
	a->rank = (int)json_integer_value(json_object_get(ev->hdr, "rank"));
	a->hb_ms = (uint32_t)json_integer_value(json_object_get(ev->hdr, "heartbeat_ms"));
	a->epoch = (uint32_t)json_integer_value(json_object_get(ev->hdr, "epoch"));
	snprintf(a->n->admin_token, sizeof(a->n->admin_token), "%s",
		 jstr(ev->hdr, "admin_token", ""));
	jobs = json_object_get(ev->hdr, "jobs");
	json_array_foreach(jobs, i, e) job_apply(a, e);
	a->joined = true;
	trib_info("joined the cluster at %s as node %s (rank %d, %zu jobs); peers reach it at %s",
		  a->n->opts.controller, a->name, a->rank, json_array_size(jobs), a->addr);
}

static void on_hb_reply(struct rt_agent *a, struct ctl_event *ev)
{
	a->hb_pending = false;
	if (ev->kind == CTL_EV_REPLY && !json_is_true(json_object_get(ev->hdr, "ok")) &&
	    json_integer_value(json_object_get(ev->hdr, "status")) == 410) {
		/*
		 * The controller drained us (we were silent too long): what this node
		 * acknowledged is declared lost cluster-wide. Its state is void; stop,
		 * so that the supervisor starts it clean.
		 */
		trib_error("the controller drained this node (no heartbeat reached it in time); "
			   "its updates were declared lost; exiting so that it restarts clean");
		_exit(3);
	}
	if (ev->kind == CTL_EV_REPLY)
		sync_check(a, json_object_get(ev->hdr, "jobs"));
}

void rt_agent_tick(struct rt_agent *a)
{
	struct rt_node *n = a->n;
	uint64_t used = 0, total = 0;
	uint32_t live = 0;

	if (!a)
		return;
	if (!a->joined) {
		if (!a->join_pending && trib_now_ns() - a->last_join_ns > JOIN_RETRY_NS)
			join_send(a);
		return;
	}
	/* The gateway ticks every 200 ms: a shorter period is that. */
	if (!a->hb_pending && trib_now_ns() - a->last_hb_ns >= (uint64_t)a->hb_ms * 1000000ull) {
		a->last_hb_ns = trib_now_ns();
		shm_arena_usage(n->arena, &used, &total, &live);
		if (!to_ctl(a,
			    json_pack("{s:s, s:s, s:I, s:I}", "op", "heartbeat", "name", a->name,
				      "arena_free", (json_int_t)(total - used), "mem_free",
				      (json_int_t)mem_available()),
			    NULL, 0, PK_HB, NULL))
			a->hb_pending = true;
	}
	for (struct xround *x = a->xr; x; x = x->next) {
		sum_deliver(a, x);
		model_send(a, x);
		if (x->folding && !x->have_result) {
			struct rt_fn *fn = rt_fnset_find(n->fns, x->fold_fn);

			if (!fn || fn->exited) {
				/* The top's function died: a new one gets every input again. */
				trib_warn(
				    "job %s round %u: the round's top (fn %u) died; restarting "
				    "it",
				    x->job, x->round, x->fold_fn);
				if (x->fold_acc && !fn)
					shm_slot_free(n->arena, x->fold_acc);
				x->fold_acc = 0;
				x->folding = false;
				top_run(a, x);
			}
		}
	}
}

static bool ready(void *ctx)
{
	const struct rt_agent *a = ctx;

	return a && a->joined;
}

/* --- proxies for status --- */

static void round_get(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t round)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (to_ctl(a,
		   json_pack("{s:s, s:s, s:i}", "op", "round_get", "job", j->name, "round",
			     (json_int_t)round),
		   NULL, 0, PK_ROUND_GET, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable", -1, "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

static void status(void *ctx, struct rt_conn *c)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (to_ctl(a, json_pack("{s:s}", "op", "status"), NULL, 0, PK_STATUS, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable", -1, "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

static void on_proxy_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	json_t *o;

	if (ev->kind != CTL_EV_REPLY) {
		rt_conn_error(pd->c, 503, "the controller did not answer", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		rt_conn_error(pd->c, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			      jstr(ev->hdr, "error", "?"), -1, NULL);
		return;
	}
	if (pd->kind == PK_ROUND_GET) {
		o = json_incref(json_object_get(ev->hdr, "round"));
	} else {
		o = json_deep_copy(ev->hdr);
		json_object_del(o, "ok");
		json_object_set_new(o, "this_node", json_string(a->name));
	}
	respond_json(pd->c, 200, o);
}

static void metrics(void *ctx, char *buf, size_t *len, size_t cap)
{
	const struct rt_agent *a = ctx;
	int w;

	if (!a || *len >= cap)
		return;
	w = snprintf(buf + *len, cap - *len,
		     "# HELP tributary_cluster_partials_sent_total node sums sent to another "
		     "node's top (cross-node edges)\n"
		     "# TYPE tributary_cluster_partials_sent_total counter\n"
		     "tributary_cluster_partials_sent_total %llu\n"
		     "# HELP tributary_cluster_partials_received_total node sums landed here for "
		     "a round's top\n"
		     "# TYPE tributary_cluster_partials_received_total counter\n"
		     "tributary_cluster_partials_received_total %llu\n"
		     "# HELP tributary_cluster_updates_forwarded_total updates sent to the node "
		     "that folds them\n"
		     "# TYPE tributary_cluster_updates_forwarded_total counter\n"
		     "tributary_cluster_updates_forwarded_total %llu\n"
		     "# HELP tributary_cluster_updates_landed_total updates from other nodes "
		     "folded here\n"
		     "# TYPE tributary_cluster_updates_landed_total counter\n"
		     "tributary_cluster_updates_landed_total %llu\n"
		     "# HELP tributary_cluster_bytes_sent_total payload bytes sent to other nodes\n"
		     "# TYPE tributary_cluster_bytes_sent_total counter\n"
		     "tributary_cluster_bytes_sent_total{kind=\"partial\"} %llu\n"
		     "tributary_cluster_bytes_sent_total{kind=\"update\"} %llu\n"
		     "# HELP tributary_cluster_joined 1 once the controller accepted this node\n"
		     "# TYPE tributary_cluster_joined gauge\n"
		     "tributary_cluster_joined %d\n",
		     (unsigned long long)a->partials_sent, (unsigned long long)a->partials_received,
		     (unsigned long long)a->fwd_sent, (unsigned long long)a->fwd_received,
		     (unsigned long long)a->partial_bytes, (unsigned long long)a->fwd_bytes,
		     a->joined ? 1 : 0);
	if (w > 0)
		*len += (size_t)w < cap - *len ? (size_t)w : cap - *len - 1;
}

/* --- the event loop's side --- */

static void on_reply(struct rt_agent *a, struct ctl_event *ev)
{
	struct pend *pd = pend_take(a, ev->cookie);

	if (!pd)
		return;
	switch (pd->kind) {
	case PK_JOIN:
		on_join_reply(a, ev);
		break;
	case PK_HB:
		on_hb_reply(a, ev);
		break;
	case PK_CREATE:
		on_create_reply(a, pd, ev);
		break;
	case PK_ACCEPT:
		on_accept_reply(a, pd, ev);
		break;
	case PK_FWD:
		on_fwd_reply(a, pd, ev);
		break;
	case PK_PARTIAL:
		on_partial_reply(a, pd, ev);
		break;
	case PK_MODEL_DONE:
		if (pd->x) {
			pd->x->model_sending = false;
			if (ev->kind == CTL_EV_REPLY &&
			    json_is_true(json_object_get(ev->hdr, "ok"))) {
				pd->x->model_sent = true;
				a->models_sent++;
			}
		}
		break;
	case PK_ROUND_GET:
	case PK_STATUS:
		on_proxy_reply(a, pd, ev);
		break;
	case PK_SYNC:
		on_sync_reply(a, ev);
		break;
	default:
		if (ev->kind == CTL_EV_REPLY && !json_is_true(json_object_get(ev->hdr, "ok")))
			trib_warn("controller: %s", jstr(ev->hdr, "error", "?"));
		break;
	}
	trib_free(pd);
}

/* A request from the controller or a peer; true if the event was kept (answered later). */
static bool on_request(struct rt_agent *a, struct ctl_event *ev)
{
	const char *op = json_string_value(json_object_get(ev->hdr, "op"));

	if (!op) {
		reply(a, ev, err_json(400, "no op"));
	} else if (!strcmp(op, "fwd")) {
		return on_fwd(a, ev);
	} else if (!strcmp(op, "partial")) {
		on_partial(a, ev);
	} else if (!strcmp(op, "close")) {
		reply(a, ev, ok_json());
		on_close(a, ev->hdr);
	} else if (!strcmp(op, "model")) {
		on_model(a, ev);
	} else if (!strcmp(op, "job")) {
		reply(a, ev, ok_json());
		job_apply(a, ev->hdr);
	} else if (!strcmp(op, "drained")) {
		reply(a, ev, ok_json());
		trib_warn("the controller drained node %s", jstr(ev->hdr, "node", "?"));
	} else {
		reply(a, ev, err_json(400, "unknown op"));
	}
	return false;
}

void rt_agent_on_wire(struct rt_agent *a)
{
	struct ctl_event *ev;

	while ((ev = ctl_wire_next(a->w))) {
		if (ev->kind == CTL_EV_REQUEST) {
			if (on_request(a, ev))
				continue;
		} else {
			on_reply(a, ev);
		}
		ctl_event_free(a->w, ev);
	}
}

int rt_agent_fd(const struct rt_agent *a)
{
	return ctl_wire_fd(a->w);
}

void rt_agent_api_hooks(struct rt_agent *a, struct rt_api_hooks *out)
{
	out->ctx = a;
	out->job_create = job_create;
	out->update = update;
	out->ready = ready;
	out->round_get = round_get;
	out->status = status;
	out->metrics = metrics;
}

int rt_agent_open(struct rt_agent **out, struct rt_node *n)
{
	const struct rt_node_opts *o = &n->opts;
	struct rt_agent *a;
	const char *listen = o->peer_listen ? o->peer_listen : "tcp://0.0.0.0:7071";
	const char *adv = o->advertise ? o->advertise : listen;
	int err;

	if (!o->node_name || !o->node_name[0]) {
		trib_error("--node-name is required with --controller");
		return -EINVAL;
	}
	if (strstr(adv, "://0.0.0.0:") || strstr(adv, "://*:")) {
		trib_error("peers cannot dial %s: give --advertise tcp://ADDRESS:PORT (this node's "
			   "address on the cluster network)",
			   adv);
		return -EINVAL;
	}
	a = trib_calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->n = n;
	a->rank = -1;
	snprintf(a->name, sizeof(a->name), "%s", o->node_name);
	snprintf(a->addr, sizeof(a->addr), "%s", adv);
	snprintf(a->http, sizeof(a->http), "http://%s:%u", o->listen_host, o->listen_port);
	err = ctl_wire_open(listen, &a->w);
	if (err) {
		trib_error("listening for peers on %s: %s", listen, strerror(-err));
		trib_free(a);
		return err;
	}
	n->clustered = true;
	*out = a;
	trib_info("node %s: joining the controller at %s; peers on %s", a->name, o->controller,
		  listen);
	join_send(a);
	return 0;
}

void rt_agent_close(struct rt_agent *a)
{

	if (!a)
		return;
	ctl_wire_close(a->w);
	while (a->pend) {
		struct pend *pd = a->pend;

		a->pend = pd->next;
		if (pd->u) {
			pd->u->c = NULL; /* the gateway freed the connections */
			upd_free(a, pd->u);
		}
		trib_free(pd);
	}
	while (a->backlog) {
		struct upd *u = a->backlog;

		a->backlog = u->next;
		u->c = NULL;
		if (u->ev) {
			u->ev->slot = NULL;
			ctl_event_free(NULL, u->ev);
		}
		upd_free(a, u);
	}
	while (a->xr)
		xr_free(a, a->xr);
	a->n->clustered = false;
	trib_free(a);
}
