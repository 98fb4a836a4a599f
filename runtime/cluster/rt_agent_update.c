// SPDX-License-Identifier: MIT
/* The agent's jobs and updates: created by the controller, counted by it, folded or forwarded. */
#include "agent_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>

#include "fn_sparse.h"
#include "rt_flora.h"
#include "shm_arena.h"
#include "shm_journal.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_time.h"

/* --- jobs --- */

/*
 * The job's client credentials as the controller sent them (with the job,
 * a revocation, or the answer to a create): its key and the ids it revoked.
 */
static void job_cred_apply(struct rt_job *j, json_t *h)
{
	json_t *rev = json_object_get(h, "revoked"), *v;
	const char *ids[64];
	size_t i, k = 0;
	int err = 0;

	json_array_foreach(rev, i, v) {
		if (k == sizeof(ids) / sizeof(ids[0])) {
			err = rt_job_cred_set(j, jstr(h, "cred_key", ""), ids, k);
			k = 0;
		}
		if (json_is_string(v))
			ids[k++] = json_string_value(v);
	}
	if (!err)
		err = rt_job_cred_set(j, jstr(h, "cred_key", ""), ids, k);
	if (err)
		trib_error("job %s: the controller's client credentials: %s", j->name,
			   strerror(-err));
}

void rt__agent_revoke(void *ctx, struct rt_conn *c, struct rt_job *j, const char *client)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (rt__agent_to_ctl(a, json_pack("{s:s, s:s, s:s}", "op", "revoke", "job", j->name,
					  "client", client),
			     NULL, 0, PK_REVOKE, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable; retry", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

void rt__agent_on_revoke_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct rt_job *j;
	json_t *v;
	size_t i;

	if (ev->kind != CTL_EV_REPLY) {
		rt_conn_error(pd->c, 503, "the controller did not answer; the client may or may "
			      "not be revoked: DELETE again", -1, "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		rt_conn_error(pd->c, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			      jstr(ev->hdr, "error", "refused"), -1, NULL);
		return;
	}
	/* Here at once; the other nodes as the controller's job message reaches them. */
	j = rt_job_find(a->n, jstr(ev->hdr, "job", ""));
	json_array_foreach(json_object_get(ev->hdr, "revoked"), i, v)
		if (j && json_is_string(v))
			rt_job_revoke(a->n, j, json_string_value(v));
	rt__agent_respond_json(pd->c, 200, json_pack("{s:s, s:b}", "client",
						     jstr(ev->hdr, "client", ""), "revoked", 1));
}

void rt__agent_job_apply(struct rt_agent *a, json_t *h)
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
		status = rt_api_job_build(a->n, true, (const uint8_t *)body, strlen(body), token,
					  false, &j, msg, sizeof(msg), NULL);
		if (status != 201) {
			trib_error("job %s from the controller: %d %s", name, status, msg);
			return;
		}
		j->xtarget = UINT32_MAX;
	}
	j->xid = (uint64_t)json_integer_value(json_object_get(h, "id"));
	rt__agent_secagg_at(a, j, h);
	job_cred_apply(j, h);
	j->paused = json_is_true(json_object_get(h, "paused")); /* the controller's (issue 15) */
	if (round > j->round && !j->open && !j->inflight)
		j->round = round; /* joined late: the cluster is at this round */
}

void rt__agent_job_create(void *ctx, struct rt_conn *c)
{
	struct rt_agent *a = ctx;
	json_t *o = NULL;
	char msg[320];
	uint64_t n_elem = 0;
	struct pend *pd;
	int err;

	if (trib_json_loadb(c->body_heap, c->body_len, 0, &o, NULL) == -ENOMEM) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}

	rt_api_job_build(a->n, true, c->body_heap, c->body_len, NULL, true, NULL, msg, sizeof(msg),
			 &n_elem);
	err = rt__agent_to_ctl(a,
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

void rt__agent_on_create_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
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
	j->xid = (uint64_t)json_integer_value(json_object_get(ev->hdr, "id"));
	job_cred_apply(j, ev->hdr);
	rt__agent_secagg_at(a, j, ev->hdr);
	rt__agent_respond_json(c, 201,
		     json_pack("{s:s, s:s, s:i}", "job", j->name, "token", j->token, "round", 0));
}

/* --- updates --- */

void rt__agent_upd_free(struct rt_agent *a, struct upd *u)
{
	if (u->slot_off != UINT64_MAX)
		shm_slot_free(a->n->arena, u->slot_off);
	trib_free(u);
}

/* The 202's body of @u (its record in the journal keeps it too): its length. */
static int upd_body(const struct upd *u, char *buf, size_t cap)
{
	if (u->provisional) /* no count yet: no "received", no receipt */
		return snprintf(buf, cap,
				"{\"round\":%u,\"node\":\"%s\",\"epoch\":%u,\"provisional\":true}",
				u->round, u->fold_name, u->fold_epoch);
	return snprintf(buf, cap,
			"{\"round\":%u,\"received\":%u,\"node\":\"%s\",\"epoch\":%u,"
			"\"receipt\":\"%s.%u/%u/%u\"}",
			u->round, u->seq + 1, u->fold_name, u->fold_epoch, u->fold_name,
			u->fold_epoch, u->round, u->seq);
}

/* Answer whoever waits for @u: a client (202 or an error) or a peer's forward. */
static void upd_answer(struct rt_agent *a, struct upd *u, int status, const char *msg,
		       long long round)
{
	if (u->c) {
		if (status == 202) {
			char buf[320];
			int len = upd_body(u, buf, sizeof(buf));

			rt_conn_respond(u->c, 202, "application/json", buf, (size_t)len, NULL);
		} else {
			rt_conn_error(u->c, status, msg, round,
				      status == 503 ? "Retry-After: 1\r\n" : NULL);
		}
	}
	if (u->ev) {
		json_t *h = status == 202 ? rt__agent_ok_json() : rt__agent_err_json(status, msg);

		rt__agent_reply(a, u->ev, h);
		ctl_event_free(a->w, u->ev);
	}
	rt__agent_upd_free(a, u);
}

/* Give the controller back an update it counted that cannot be folded. */
static void upd_release(struct rt_agent *a, struct upd *u)
{
	rt__agent_to_ctl(a,
	       json_pack("{s:s, s:s, s:s, s:I, s:s?, s:f, s:o*}", "op", "release", "job", u->job,
			 "node", a->name, "uid", (json_int_t)u->uid, "client",
			 u->client[0] ? u->client : NULL, "weight", u->weight, "metrics",
			 rt__agent_upd_metrics(u)),
	       NULL, 0, PK_NOTE, NULL);
}

/* Updates wait at most this long for the log (as at the gateway of `up`); then 503. */
#define WAL_WAIT_MAX_S 30

/*
 * A folded update's answer once its log record is settled: @st 1 on disk
 * (202), -errno its batch failed, 0 too slow (503 both). A 503 here does
 * not uncount it: it is in the round and the arena, and the log writes it
 * when it can; a resend with its Idempotency-Key is answered from its
 * record (and only once the log works, rt_node_wal_flush()).
 */
static void wal_answer(struct rt_agent *a, struct upd *u, int st)
{
	char msg[320];

	if (st > 0) {
		upd_answer(a, u, 202, NULL, -1);
		return;
	}
	if (st < 0)
		snprintf(msg, sizeof(msg), "--durability disk: the update could not be written to "
			 "the log (%s): not acknowledged; resend it with the same Idempotency-Key",
			 strerror(-st));
	else
		snprintf(msg, sizeof(msg), "--durability disk: the update was not on disk within "
			 "%u s: not acknowledged; resend it with the same Idempotency-Key",
			 WAL_WAIT_MAX_S);
	upd_answer(a, u, 503, msg, -1);
}

/* Fold @u here: into the local round now, or when the local round gets to its round. */
void rt__agent_upd_fold(struct rt_agent *a, struct upd *u)
{
	struct rt_node *n = a->n;
	struct rt_job *j = rt_job_find(n, u->job);
	char body[320], rec[400];
	struct rt_update_in in;
	size_t rec_len = 0;
	uint64_t ticket = 0;
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
	/* Its record (key, 202's body) is committed in the arena before the 202: a restart
	 * of this node finds it, reports it, and a resend with the key gets that answer. */
	in = (struct rt_update_in){ .slot_off = u->slot_off, .segs_off = u->segs_off,
				    .nsegs = u->nsegs, .weight = u->weight, .key = u->key,
				    .key_len = strlen(u->key), .body = body,
				    .body_len = (size_t)upd_body(u, body, sizeof(body)),
				    .client = u->client };
	if (in.body_len > SHM_REC_BODY_MAX) /* long node names: the receipt is derivable */
		in.body_len = (size_t)snprintf(body, sizeof(body),
					       "{\"round\":%u,\"received\":%u,\"node\":\"%s\","
					       "\"epoch\":%u}", u->round, u->seq + 1,
					       u->fold_name, u->fold_epoch);
	/*
	 * --durability disk: while the log fails nothing more goes in (a peer's
	 * forward does not pass the gateway's check: refused here, its sender
	 * gives the count back); then the record is logged too, and the 202 (or
	 * a forward's ok) waits for its fdatasync (rt_agent_wal_ready()).
	 */
	err = rt_node_wal_refusal(n, NULL);
	if (!err)
		/* FedBuff: the staleness factor is the buffer's version minus the base's. */
		err = j->round == u->round
			  ? rt_job_accept_logged(n, j, j->algo.async ? u->base : u->round, &in,
						 &seq, rec, sizeof(rec), &rec_len, &ticket)
			  : -ESTALE;
	if (err) {
		trib_error("job %s round %u: folding a counted update here: %s", j->name, u->round,
			   strerror(-err));
		if (!u->provisional)
			upd_release(a, u);
		if (err == -EALREADY) {
			/* Its client has an update counted in this round here already. */
			upd_answer(a, u, 409, "this client already has an update counted in the "
				   "round (one update per client per round)", (long long)u->round);
			return;
		}
		if (err == -ENOSPC && !rt_node_wal_refusal(n, NULL))
			rt_job_relieve(n, j);
		upd_answer(a, u, 503,
			   rt_node_wal_refusal(n, NULL)
			       ? "--durability disk: the update log cannot be written; no update "
				 "is accepted until it can, and the node retries by itself"
			   : err == -ENOSPC ? "aggregation memory is full; retry shortly"
					    : "the round's aggregation tree failed; retry",
			   -1);
		return;
	}
	u->slot_off = UINT64_MAX; /* the tree's now */
	if (j->algo.rule) /* robust rules order a round's updates by the controller's count */
		rt__agent_shard_note(a, u->job, u->round, seq, u->provisional ? UINT32_MAX : u->seq);
	n->m.bytes_received += u->body_len;
	if (ticket && !rt_node_wal_ticket(n, ticket)) {
		u->wal_ticket = ticket;
		u->wal_deadline_ns = trib_now_ns() + WAL_WAIT_MAX_S * 1000000000ull;
		u->next = a->wal_wait;
		a->wal_wait = u;
		return;
	}
	wal_answer(a, u, ticket ? rt_node_wal_ticket(n, ticket) : 1);
}

/* --- --durability disk: the 202 waits until the update's log record is on disk --- */

void rt_agent_wal_ready(struct rt_agent *a)
{
	struct upd **pp = &a->wal_wait;

	while (*pp) {
		struct upd *u = *pp;
		int st = rt_node_wal_ticket(a->n, u->wal_ticket);

		if (!st) {
			pp = &u->next;
			continue;
		}
		*pp = u->next;
		wal_answer(a, u, st);
	}
}

void rt__agent_wal_tick(struct rt_agent *a, uint64_t now)
{
	struct upd **pp = &a->wal_wait;

	while (*pp) {
		struct upd *u = *pp;

		if (u->wal_deadline_ns > now) {
			pp = &u->next;
			continue;
		}
		*pp = u->next;
		wal_answer(a, u, 0);
	}
}

bool rt_agent_wal_waiting(const struct rt_agent *a)
{
	return a && a->wal_wait;
}

void rt__agent_wal_free(struct rt_agent *a)
{
	while (a->wal_wait) {
		struct upd *u = a->wal_wait;

		a->wal_wait = u->next;
		u->c = NULL;
		if (u->ev) {
			u->ev->slot = NULL;
			ctl_event_free(NULL, u->ev);
		}
		rt__agent_upd_free(a, u);
	}
}

/* Ask the controller to count @u; again with the same id if an answer is lost. */
static int accept_send(struct rt_agent *a, struct upd *u)
{
	struct pend *pd;
	int err;

	err = rt__agent_to_ctl(a,
		     json_pack("{s:s, s:s, s:s, s:i, s:I, s:s?, s:f, s:o*, s:s?}", "op", "accept",
			       "job", u->job, "node", a->name, "round", (json_int_t)u->round,
			       "uid", (json_int_t)u->uid, "client",
			       u->client[0] ? u->client : NULL, "weight", u->weight, "metrics",
			       rt__agent_upd_metrics(u), "key", u->key[0] ? u->key : NULL),
		     NULL, 0, PK_ACCEPT, &pd);
	if (!err)
		pd->u = u;
	return err;
}

/*
 * The controller is away (a heartbeat got no answer): @u is taken here,
 * without its count, if it is for the round this node knows open, for at
 * most --controller-grace-s and clients_per_round updates of that round.
 * It is committed like any other before its 202 and reported when this
 * node joins again, which counts it (a round may then close with more than
 * clients_per_round). Else 503, saying why.
 */
static void upd_provisional(struct rt_agent *a, struct upd *u)
{
	struct rt_node *n = a->n;
	struct rt_job *j = rt_job_find(n, u->job);
	uint64_t away = trib_now_ns() - a->ctl_away_ns;
	uint32_t grace = n->opts.controller_grace_s;
	struct xround *x = j && u->round == j->round ? rt__agent_xr_get(a, u->job, u->round, true)
						    : NULL;
	char msg[320];

	if (away >= (uint64_t)grace * 1000000000ull) {
		snprintf(msg, sizeof(msg), "the controller has not answered for %.0f s, longer "
			 "than this node takes updates without it (--controller-grace-s %u): only "
			 "it closes a round; retry once it is back", (double)away / 1e9, grace);
	} else if (rt__agent_state_provisional(j)) {
		snprintf(msg, sizeof(msg), "the controller has not answered for %.0f s; %s: retry",
			 (double)away / 1e9, rt__agent_state_provisional(j));
	} else if (j && j->algo.async) {
		snprintf(msg, sizeof(msg), "the controller has not answered for %.0f s; only it "
			 "counts a FedBuff version across nodes: retry", (double)away / 1e9);
	} else if (j && j->sel.per_round) {
		snprintf(msg, sizeof(msg), "the controller has not answered for %.0f s; only it "
			 "knows which clients hold a task of the round (selection): retry",
			 (double)away / 1e9);
	} else if (j && j->flora) {
		snprintf(msg, sizeof(msg), "the controller has not answered for %.0f s; only its "
			 "count gives a flora update its slot in the round: retry", (double)away / 1e9);
	} else if (!x || x->closed || x->provisional >= j->cpr) {
		snprintf(msg, sizeof(msg), "the controller has not answered for %.0f s; without "
			 "it this node takes updates only for the round it knows open, and at "
			 "most clients_per_round of them: retry", (double)away / 1e9);
	} else {
		x->provisional++;
		a->provisional++;
		a->provisional_total++;
		u->provisional = true;
		u->fold_at = a->rank;
		u->fold_epoch = a->epoch;
		snprintf(u->fold_name, sizeof(u->fold_name), "%s", a->name);
		rt__agent_upd_fold(a, u);
		return;
	}
	upd_answer(a, u, 503, msg, -1);
}

void rt__agent_update(void *ctx, struct rt_conn *c, uint64_t segs_off, uint32_t nsegs)
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
	u->body_len = rt_api_update_bytes(c, segs_off); /* .npz: inflated members too */
	u->weight = r->weight;
	if (c->req.has_idempotency_key)
		memcpy(u->key, c->req.idempotency_key, /* 1..64 characters, checked */
		       strnlen(c->req.idempotency_key, sizeof(u->key) - 1));
	snprintf(u->client, sizeof(u->client), "%s", r->client);
	if (c->req.has_x_metrics)
		snprintf(u->metrics, sizeof(u->metrics), "%s", c->req.x_metrics);
	r->slot_off = UINT64_MAX; /* the update's now */
	u->uid = ++a->next_uid;
	if (a->ctl_away_ns) {
		upd_provisional(a, u);
		return;
	}
	err = accept_send(a, u);
	if (err) {
		u->c = NULL;
		rt__agent_upd_free(a, u);
		rt_conn_error(c, 503, "the controller is not reachable; retry", -1,
			      "Retry-After: 1\r\n");
	}
}

void rt__agent_on_accept_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct upd *u = pd->u;
	const char *addr;
	struct pend *fp;
	int err;

	if (ev->kind != CTL_EV_REPLY && a->ctl_away_ns) {
		/*
		 * The controller is away: taken here like the updates that arrive now.
		 * Counted or not before it went, the count that stands is the one this
		 * node reports when it joins again.
		 */
		upd_provisional(a, u);
		return;
	}
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
	if (json_is_true(json_object_get(ev->hdr, "duplicate"))) {
		/*
		 * Its Idempotency-Key was counted through another gateway (ctl_creds.c): the
		 * first count's answer, and these bytes go (nothing of them was committed).
		 */
		u->seq = (uint32_t)json_integer_value(json_object_get(ev->hdr, "seq"));
		u->round = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
		snprintf(u->fold_name, sizeof(u->fold_name), "%s", jstr(ev->hdr, "fold_name", "?"));
		u->fold_epoch = (uint32_t)json_integer_value(json_object_get(ev->hdr, "fold_epoch"));
		upd_answer(a, u, 202, NULL, -1);
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
	if (rt__agent_accept_state(a, u, ev->hdr)) {
		upd_release(a, u);
		upd_answer(a, u, 503, "the controller's count came without what the update is "
			   "folded with; send it again", -1);
		return;
	}
	if (json_is_integer(json_object_get(ev->hdr, "version"))) {
		/* FedBuff: counted into the version the controller is building. */
		u->base = u->round;
		u->round = (uint32_t)json_integer_value(json_object_get(ev->hdr, "version"));
	}
	u->fold_at = (int)json_integer_value(json_object_get(ev->hdr, "fold_at"));
	snprintf(u->fold_name, sizeof(u->fold_name), "%s", jstr(ev->hdr, "fold_name", "?"));
	u->fold_epoch = (uint32_t)json_integer_value(json_object_get(ev->hdr, "fold_epoch"));
	{
		/* flora: the count is the client's slot, cluster-wide (rt_flora_segs_move()). */
		struct rt_job *fj = rt_job_find(a->n, u->job);

		if (fj && fj->flora && u->seq >= fj->flora->S) {
			upd_release(a, u);
			upd_answer(a, u, 503, "the round has no flora slot left (updates were given "
				   "back); send it again", -1);
			return;
		}
		if (fj && fj->flora)
			rt_flora_segs_move(fj, shm_arena_ptr(a->n->arena, u->segs_off), u->nsegs,
					   0, u->seq);
	}
	if (u->fold_at == a->rank) {
		rt__agent_upd_fold(a, u);
		return;
	}
	/* Folded on another node: its bytes cross once, into that node's arena. */
	addr = json_string_value(json_object_get(ev->hdr, "fold_addr"));
	if (addr && a->w && strcmp(u->fold_name, "?"))
		ctl_wire_peer_name(a->w, addr, u->fold_name); /* its certificate must name it */
	{
		const struct shm_seg *segs = shm_arena_ptr(a->n->arena, u->segs_off);
		json_t *sj = json_array();

		for (uint32_t i = 0; i < u->nsegs; i++)
			json_array_append_new(
			    sj, json_pack("[I, I, I, i, f]",
					  (json_int_t)(segs[i].src_off - u->slot_off),
					  (json_int_t)segs[i].n_elem, (json_int_t)segs[i].dst_elem,
					  (int)segs[i].dtype, (double)segs[i].scale));
		err = addr ? rt__agent_request(a, addr,
				     json_pack("{s:s, s:s, s:i, s:i, s:i, s:f, s:o, s:s}", "op",
					       "fwd", "job", u->job, "round", (json_int_t)u->round,
					       "base", (json_int_t)u->base, "seq", (json_int_t)u->seq,
					       "weight", u->weight, "segs", sj, "from", a->name),
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

void rt__agent_on_fwd_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
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
bool rt__agent_on_fwd(struct rt_agent *a, struct ctl_event *ev)
{
	struct rt_node *n = a->n;
	json_t *sj = json_object_get(ev->hdr, "segs"), *e;
	const char *job = json_string_value(json_object_get(ev->hdr, "job"));
	struct rt_job *j = job ? rt_job_find(n, job) : NULL;
	size_t nsegs = json_array_size(sj), i;
	struct shm_seg *segs;
	struct upd *u;
	uint64_t body = (ev->plen + 63) & ~63ull;

	if (!j || !nsegs || nsegs > (j->flora ? rt_flora_nsegs(j) : j->nschema)) {
		rt__agent_reply(a, ev, rt__agent_err_json(400, "bad forward"));
		return false;
	}
	u = trib_calloc(1, sizeof(*u));
	if (!u) {
		rt__agent_reply(a, ev, rt__agent_err_json(503, "out of memory"));
		return false;
	}
	u->slot_off = UINT64_MAX;
	u->slot_len = body + nsegs * sizeof(struct shm_seg);
	if (shm_slot_alloc(n->arena, u->slot_len, &u->slot_off)) {
		u->slot_off = UINT64_MAX;
		rt__agent_upd_free(a, u);
		rt__agent_reply(a, ev, rt__agent_err_json(503, "aggregation memory is full"));
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
		uint64_t es = dt == SHM_DTYPE_F32 || dt == SHM_DTYPE_I32 ? 4 : dt == SHM_DTYPE_I8 ? 1 : 2;
		/* A sparse segment's bytes are its record; its indices and values, in the body. */
		struct shm_seg rel = { .src_off = off, .n_elem = ne, .dtype = dt };
		struct fn_sparse_view sv;

		if (dt == SHM_DTYPE_SPARSE ? fn_sparse_view(ev->payload, ev->plen, &rel, true, &sv)
					   : off > ev->plen || ne * es > ev->plen - off) {
			rt__agent_upd_free(a, u);
			rt__agent_reply(a, ev,
					rt__agent_err_json(
					    400, "bad forward: a segment lies outside the body"));
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
	u->base = (uint32_t)json_integer_value(json_object_get(ev->hdr, "base"));
	u->seq = (uint32_t)json_integer_value(json_object_get(ev->hdr, "seq"));
	u->weight = json_number_value(json_object_get(ev->hdr, "weight"));
	u->nsegs = (uint32_t)nsegs;
	u->body_len = ev->plen;
	u->fold_at = a->rank;
	u->fold_epoch = a->epoch;
	snprintf(u->fold_name, sizeof(u->fold_name), "%s", a->name);
	u->ev = ev;
	a->fwd_received++;
	rt__agent_upd_fold(a, u);
	return true; /* the event is answered (and freed) with the update */
}

