// SPDX-License-Identifier: MIT
/*
 * The controller's rounds (its table of jobs is ctl_jobs_table.c). Each update's acceptance is
 * counted here, so a round closes once, cluster-wide, at exactly
 * clients_per_round updates; at the close the placement (ctl_place.c) picks
 * the node that folds the round's top, and the nodes' sums cross to it once
 * each; its model comes back here, is written (ctl_models.c) and goes to
 * every node.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "ctl_daemon.h"
#include "ctl_place.h"
#include "ctl_store.h"
#include "ctl_store_rec.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_name.h"
#include "trib_time.h"

/* For status and GET .../rounds/{r}, by enum value. */
static const char *const round_states[] = {"open", "closed", "done"};

static struct cjob *job_find(struct ctl *c, const char *name)
{
	for (struct cjob *j = c->jobs; j; j = j->next)
		if (name && !strcmp(j->name, name))
			return j;
	return NULL;
}

static struct cround *round_get(struct cjob *j, uint32_t r)
{
	for (struct cround *cr = j->rounds; cr; cr = cr->next)
		if (cr->round == r)
			return cr;
	return NULL;
}

static struct cround *round_new(struct cjob *j, uint32_t r)
{
	struct cround *cr = trib_calloc(1, sizeof(*cr)), **pp = &j->rounds;
	uint32_t n = 0;

	if (!cr)
		return NULL;
	cr->round = r;
	cr->top = -1;
	cr->open_ns = trib_now_ns();
	while (*pp) {
		pp = &(*pp)->next;
		n++;
	}
	*pp = cr;
	/* Forget the oldest finished rounds. */
	while (n >= CTL_ROUNDS_KEPT && j->rounds->state == CR_DONE) {
		struct cround *old = j->rounds;

		j->rounds = old->next;
		json_decref(old->clients);
		json_decref(old->keys);
		json_decref(old->msums);
		trib_free(old);
		n--;
	}
	return cr;
}

json_t *ctl__job_msg(struct ctl *c, const struct cjob *j)
{
	json_t *m = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:I}", "op", "job", "name", j->name,
			      "token", j->token, "body", j->body, "round", (json_int_t)j->round,
			      "completed", (json_int_t)j->completed, "id", (json_int_t)j->db_id);

	if (m && json_object_set_new(m, "paused", json_boolean(j->paused))) {
		json_decref(m);
		m = NULL;
	}
	/*
	 * A secure job's rounds run on one node, the same for every round: rank 0 (ranks are
	 * kept across restarts). The other gateways pass the stages on to it (rt_agent_secagg.c).
	 */
	if (m && j->secagg && c->nnodes &&
	    json_object_set_new(m, "secagg_at",
				json_pack("{s:i, s:s, s:s}", "rank", 0, "name", c->nodes[0].name,
					  "addr", c->nodes[0].addr))) {
		json_decref(m);
		m = NULL;
	}
	/* Its client credentials' key and revocations: every node checks client tokens. */
	if (m && ctl__job_cred_add(j, m)) {
		json_decref(m);
		m = NULL;
	}
	return m;
}

/* The model of version @j->completed to every node (or one). */
static void send_model(struct ctl *c, struct cjob *j, int only, const struct cround *cr)
{
	json_t *h = json_pack("{s:s, s:s, s:i}", "op", "model", "job", j->name, "version",
			      (json_int_t)j->completed);
	size_t len = j->model ? j->fmt.n_elem * sizeof(float) + j->opt_len : 0;

	if (j->model && j->opt_len)
		json_object_set_new(h, "state_bytes", json_integer((json_int_t)j->opt_len));
	if (cr) {
		json_object_set_new(h, "updates", json_integer(cr->n_updates));
		json_object_set_new(h, "weight", json_real(cr->weight));
	}
	if (only >= 0)
		ctl__tell(c, (uint32_t)only, h, j->model, len);
	else
		ctl__tell_all(c, h, j->model, len, -1);
	json_decref(h);
}

/* The round's close: counts per node, the top, and who contributes; sent again on changes. */
static json_t *close_msg(struct ctl *c, struct cjob *j, struct cround *cr)
{
	json_t *h = json_pack("{s:s, s:s, s:i, s:i, s:s, s:s}", "op", "close", "job", j->name,
			      "round", (json_int_t)cr->round, "top", (json_int_t)cr->top, "top_addr",
			      cr->top >= 0 ? c->nodes[cr->top].addr : "", "top_name",
			      cr->top >= 0 ? c->nodes[cr->top].name : "");
	json_t *counts = json_array();

	for (uint32_t i = 0; i < c->nnodes; i++)
		json_array_append_new(counts, json_integer(cr->folded[i]));
	json_object_set_new(h, "counts", counts);
	json_object_set_new(h, "nodes", json_integer(c->nnodes));
	/*
	 * Robust rules: the join of every node with updates. An owner that joined again (a
	 * restart that kept its arena) lost the slices and selection it had been sent; a new
	 * join makes a new partition, so every owner sends again (rt_agent_shard.c).
	 */
	{
		json_t *joins = json_array();

		for (uint32_t i = 0; i < c->nnodes; i++)
			json_array_append_new(joins, json_integer(cr->folded[i] ? c->nodes[i].joined_at
										: 0));
		json_object_set_new(h, "joins", joins);
	}
	/* Robust rules: owners send each other slices (runtime/cluster/rt_agent_shard.c). */
	{
		json_t *peers = json_array();

		for (uint32_t i = 0; i < c->nnodes; i++)
			json_array_append_new(peers, json_pack("[s, s]", c->nodes[i].addr,
							       c->nodes[i].name));
		json_object_set_new(h, "peers", peers);
	}
	/* Round 0 of a job with a starting model: its top must have it first. */
	if (cr->round == 0 && j->model)
		json_object_set_new(h, "initial", json_true());
	/* A top that joined again may have lost the sums it had: they are sent again. */
	json_object_set_new(h, "top_join",
			    json_integer(cr->top >= 0 ? c->nodes[cr->top].joined_at : 0));
	return h;
}

static void send_close(struct ctl *c, struct cjob *j, struct cround *cr)
{
	json_t *h = close_msg(c, j, cr);

	ctl__tell_all(c, h, NULL, 0, -1);
	json_decref(h);
}

/*
 * Pick the top at the close: the placement, fed with where the round's
 * updates were actually folded, puts it on the node with most leaves; the
 * planned leaves per node are kept for status.
 */
static void place_top(struct ctl *c, struct cjob *j, struct cround *cr)
{
	struct ctl_node_in in[CTL_MAX_NODES];
	uint32_t lpn[CTL_MAX_NODES];
	struct ctl_place_in pin;
	struct ctl_placement out;
	uint32_t fanin = j->fanin ? j->fanin : 16, leaves = (cr->count + fanin - 1) / fanin;
	uint32_t *leaf_node;
	int best = -1;

	memset(in, 0, sizeof(in));
	for (uint32_t i = 0; i < c->nnodes; i++) {
		in[i].arrivals = c->nodes[i].live ? cr->folded[i] : 0;
		in[i].arena_free = c->nodes[i].live ? c->nodes[i].arena_free : 0;
		in[i].cores = c->nodes[i].cores;
	}
	leaf_node = trib_calloc(leaves ? leaves : 1, sizeof(*leaf_node));
	memset(&pin, 0, sizeof(pin));
	pin.leaves = leaves;
	pin.fanin = fanin;
	pin.model_bytes = j->fmt.n_elem * sizeof(float);
	pin.nodes = in;
	pin.nnodes = c->nnodes;
	memset(&out, 0, sizeof(out));
	out.leaf_node = leaf_node;
	out.leaves_per_node = lpn;
	if (leaf_node && leaves && ctl_place(&pin, &out) >= 0 && c->nodes[out.top_node].live &&
	    cr->folded[out.top_node]) {
		best = (int)out.top_node;
		memcpy(cr->planned, lpn, c->nnodes * sizeof(*lpn));
		cr->cross_edges = out.cross_edges;
	}
	trib_free(leaf_node);
	if (best < 0) {
		/*
		 * The placement's top holds no updates (its leaves spilled there) or it
		 * had no answer: a node that folded updates, with room for the top's
		 * inputs if one has (a sum per contributor, an accumulator, zeros),
		 * most updates first.
		 */
		uint64_t contributors = 0, need;
		bool room_seen = false;

		for (uint32_t i = 0; i < c->nnodes; i++)
			contributors += c->nodes[i].live && cr->folded[i];
		need = (contributors + 2) * (j->fmt.n_elem * sizeof(float) + 4096);
		for (uint32_t i = 0; i < c->nnodes; i++) {
			bool room = c->nodes[i].arena_free >= need;

			if (!c->nodes[i].live || !cr->folded[i] || (room_seen && !room))
				continue;
			if (best < 0 || (room && !room_seen) || cr->folded[i] > cr->folded[best])
				best = (int)i;
			room_seen = room_seen || room;
		}
	}
	cr->top = best;
}

static void round_close(struct ctl *c, struct cjob *j, struct cround *cr)
{
	cr->state = CR_CLOSED;
	cr->close_ns = trib_now_ns();
	place_top(c, j, cr);
	j->round = cr->round + 1;
	if (ctl_store_round_advance(c->store, j->db_id, cr->round, j->round))
		trib_warn("job %s: recording round %u closed failed", j->name, cr->round);
	trib_info("job %s round %u: closed%s with %u of %u updates; top on node %s (%u "
		  "cross-node edges planned)",
		  j->name, cr->round, cr->count < j->cpr ? " at its deadline" : "", cr->count,
		  j->cpr, cr->top >= 0 ? c->nodes[cr->top].name : "(none)", cr->cross_edges);
	send_close(c, j, cr);
}

/* For ctl_jobs_model.c: the same helpers, under their shared names. */
struct cjob *ctl__job_find(struct ctl *c, const char *name)
{
	return job_find(c, name);
}

struct cround *ctl__round_get(struct cjob *j, uint32_t r)
{
	return round_get(j, r);
}

void ctl__send_model(struct ctl *c, struct cjob *j)
{
	send_model(c, j, -1, NULL);
}

/* The wall-clock time (unix s) of monotonic @ns, for a round record (0 stays 0: unknown). */
static double unix_of(uint64_t ns)
{
	struct timespec ts;
	uint64_t now = trib_now_ns();

	if (!ns)
		return 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9 - (double)(now - ns) / 1e9;
}

/* Round @cr of @j is done: its model is version round + 1, recorded and sent to every node. */
void ctl__job_advance(struct ctl *c, struct cjob *j, struct cround *cr)
{
	struct ctl_round rec;

	cr->state = CR_DONE;
	cr->done_ns = trib_now_ns();
	j->completed = cr->round + 1;
	memset(&rec, 0, sizeof(rec));
	rec.job_id = j->db_id;
	rec.round = cr->round;
	rec.closed_unix = (int64_t)time(NULL);
	rec.n_updates = cr->n_updates;
	rec.total_weight = cr->weight;
	rec.duration_ms = (cr->done_ns - cr->open_ns) / 1000000;
	if (!ctl_store_round_record(c->store, &rec))
		ctl__rec_store(c, j, cr, unix_of(cr->open_ns),
			       unix_of(cr->close_ns ? cr->close_ns : cr->done_ns));
	send_model(c, j, -1, cr);
}

/*
 * Nothing of the round survived, or (@why) what survived cannot make a model: its model is
 * the previous one, and the job goes on.
 */
static void round_repeat(struct ctl *c, struct cjob *j, struct cround *cr, const char *why)
{
	if (why)
		trib_error("job %s round %u: %s; version %u repeats the previous model", j->name,
			   cr->round, why, cr->round + 1);
	else
		trib_error("job %s round %u: every node that held its updates was lost; version "
			   "%u repeats the previous model",
			   j->name, cr->round, cr->round + 1);
	/* The optimiser state goes on unchanged with the model it belongs to. */
	if (j->model && j->opt_len &&
	    ctl_store_opt_put(c->store, j->db_id, cr->round + 1,
			      (const uint8_t *)j->model + j->fmt.n_elem * sizeof(float), j->opt_len))
		trib_error("job %s: storing the optimiser state of v%u failed", j->name,
			   cr->round + 1);
	if (j->model && ctl_model_write(c->o->data_dir, j->name, &j->fmt, j->model, cr->round + 1))
		trib_error("job %s: writing model v%u failed", j->name, cr->round + 1);
	cr->n_updates = 0;
	cr->weight = 0;
	ctl__job_advance(c, j, cr);
}

static void round_empty(struct ctl *c, struct cjob *j, struct cround *cr)
{
	round_repeat(c, j, cr, NULL);
}

/*
 * The round's top says the updates left cannot make a model (Krum or Bulyan after a lost
 * node: too few for the rule). The round ends now, visibly ("failed" in its record, the
 * previous model repeated), rather than waiting for a model that cannot come: a closed
 * round cannot take resends, and the next round is already open for its clients. Only for
 * the current partition: a failure told under an older count is stale.
 */
static void model_failed(struct ctl *c, struct cjob *j, struct cround *cr, struct ctl_event *ev,
			 const char *why, json_t **rep)
{
	uint32_t k = (uint32_t)json_integer_value(json_object_get(ev->hdr, "updates"));

	if (!cr || cr->state != CR_CLOSED || k != cr->count) {
		trib_debug("job %s: a failed round's word not wanted (state, or %u updates)",
			   j->name, k);
		return;
	}
	if (cr->round != j->completed) {
		json_decref(*rep);
		*rep = ctl__err_reply(503, "an earlier round is not committed yet; send again");
		return;
	}
	snprintf(cr->failed, sizeof(cr->failed), "%s", why);
	round_repeat(c, j, cr, cr->failed);
}

/*
 * A node asks again for what it should have been told: a job, a round's
 * close, the latest model. Messages to a node travel on their own
 * connection, so one can overtake the answer to its join (the node then
 * drops it: a close or a model of a job it does not know yet).
 */
void ctl__on_sync(struct ctl *c, struct ctl_event *ev, json_t **rep, const void **p, size_t *len)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	const char *what = ctl__jstr(ev->hdr, "what", "");
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	struct cround *cr = j ? round_get(j, r) : NULL;

	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
	} else if (!strcmp(what, "job")) {
		*rep = ctl__job_msg(c, j);
	} else if (!strcmp(what, "close")) {
		if (cr && cr->state != CR_OPEN)
			*rep = close_msg(c, j, cr);
		else
			*rep = ctl__err_reply(404, "that round is not closed (or no longer kept)");
	} else if (!strcmp(what, "model")) {
		*rep = json_pack("{s:s, s:s, s:i}", "op", "model", "job", j->name, "version",
				 (json_int_t)j->completed);
		*p = j->model;
		*len = j->model ? j->fmt.n_elem * sizeof(float) + j->opt_len : 0;
		if (j->model && j->opt_len)
			json_object_set_new(*rep, "state_bytes", json_integer((json_int_t)j->opt_len));
	} else {
		*rep = ctl__err_reply(400, "sync: what is job, close or model");
	}
	if (json_is_object(*rep) && !json_object_get(*rep, "ok"))
		json_object_set_new(*rep, "ok", json_true());
}

/* The node to fold an update that landed on @landed. */
static uint32_t fold_target(struct ctl *c, struct cjob *j, struct cround *cr, uint32_t landed)
{
	uint64_t need = 2 * (j->fmt.n_elem * sizeof(float) + 65536);
	uint32_t live[CTL_MAX_NODES], nlive = 0, best = landed;

	for (uint32_t i = 0; i < c->nnodes; i++)
		if (c->nodes[i].live)
			live[nlive++] = i;
	if (c->o->round_robin && nlive) {
		/* The baseline: leaf k of the round on node k mod N, wherever updates land. */
		uint32_t fanin = j->fanin ? j->fanin : 16;

		return live[(cr->count / fanin) % nlive];
	}
	/* Locality: fold where it landed; spread only when that node's arena is full. */
	if (c->nodes[landed].arena_free >= need)
		return landed;
	for (uint32_t k = 0; k < nlive; k++)
		if (c->nodes[live[k]].arena_free > c->nodes[best].arena_free)
			best = live[k];
	if (best != landed)
		trib_info("job %s round %u: node %s is full; the update folds on %s", j->name,
			  cr->round, c->nodes[landed].name, c->nodes[best].name);
	return best;
}

void ctl__on_accept(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	int rank = ctl__node_rank(c, ctl__jstr(ev->hdr, "node", ""));
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	uint64_t uid = (uint64_t)json_integer_value(json_object_get(ev->hdr, "uid"));
	struct acc_rec *rec = NULL;
	struct cround *cr;
	uint32_t to;
	char msg[160];
	double fw;

	if (!j || rank < 0 || !c->nodes[rank].live) {
		*rep = ctl__err_reply(j ? 503 : 404, j ? "node not joined" : "no such job");
		return;
	}
	if (uid && c->nodes[rank].recent) {
		rec = &c->nodes[rank].recent[uid % CTL_RECENT];
		if (rec->uid == uid) {
			/* Asked again (our answer was lost): the same answer, counted once. */
			if (rec->released) {
				*rep = ctl__err_reply(503,
						      "this update was given back; send it again");
				return;
			}
			*rep = json_pack("{s:b, s:i, s:i, s:s, s:s, s:i}", "ok", 1, "seq",
					 (json_int_t)rec->seq, "fold_at", (json_int_t)rec->fold_at,
					 "fold_addr", c->nodes[rec->fold_at].addr, "fold_name",
					 c->nodes[rec->fold_at].name, "fold_epoch",
					 (json_int_t)c->nodes[rec->fold_at].epoch);
			if (*rep && j->async)
				json_object_set_new(*rep, "version", json_integer(rec->round));
			if (*rep && rec->weight > 0) /* fedau */
				json_object_set_new(*rep, "weight", json_real(rec->weight));
			return;
		}
	}
	if (trib_retry_pending(&j->store)) {
		/* No count (so no 202 anywhere) while a model is unsaved. */
		snprintf(msg, sizeof(msg), "the model of round %u could not be stored by the "
			 "controller (%s: %s); no update is accepted until it is, and it is "
			 "retried by itself", j->store.what, trib_errno_name(j->store.err),
			 strerror(-j->store.err));
		*rep = ctl__err_reply(503, msg);
		return;
	}
	if (j->paused) {
		snprintf(msg, sizeof(msg), "job '%s' is paused", j->name);
		*rep = ctl__err_reply(503, msg);
		json_object_set_new(*rep, "state", json_string("paused"));
		return;
	}
	if (j->num_rounds && j->round >= j->num_rounds) {
		/* Its last round is closed: nodes refuse first (410); this is where it holds. */
		snprintf(msg, sizeof(msg), "job '%s' is done after %u rounds", j->name,
			 j->num_rounds);
		*rep = ctl__err_reply(410, msg);
		json_object_set_new(*rep, "state", json_string("done"));
		return;
	}
	if (j->async && (r > j->round || j->round - r > j->max_staleness)) {
		/* FedBuff: @r is the version it trained from; it goes into the open one. */
		snprintf(msg, sizeof(msg), "stale update: trained from version %u, the job is at "
			 "version %u (max_staleness %u)", r, j->round, j->max_staleness);
		*rep = ctl__err_reply(409, msg);
		json_object_set_new(*rep, "round", json_integer(j->round));
		return;
	}
	if (j->async) {
		r = j->round;
	} else if (r != j->round) {
		snprintf(msg, sizeof(msg),
			 "round mismatch: the job is at round %u, the update is "
			 "for round %u (%s)",
			 j->round, r, r < j->round ? "stale" : "future");
		*rep = ctl__err_reply(409, msg);
		json_object_set_new(*rep, "round", json_integer(j->round));
		return;
	}
	if (ctl__task_refused(c, j, r, ctl__jstr(ev->hdr, "client", NULL), rep))
		return; /* selection: only clients with a task of the round (ctl_select.c) */
	cr = round_get(j, r);
	if (!cr && !(cr = round_new(j, r))) {
		*rep = ctl__err_reply(503, "out of memory");
		return;
	}
	/*
	 * flora: the answer's seq is the update's slot, its block in the stacks. A slot given
	 * back (a release, a lost node) may still be in a node's sum, so none is handed out
	 * twice; the round closes once every slot of clients_per_round is out.
	 */
	if (ctl__round_key_first(c, cr, ctl__jstr(ev->hdr, "key", NULL), rep))
		return; /* the same update again, through another gateway (ctl_creds.c) */
	ctl__flora_slots_sync(j, cr);
	if (j->flora && cr->slots >= j->cpr) {
		*rep = ctl__err_reply(503, "every flora slot of this round is handed out (updates "
				      "were given back); it closes with the ones kept: send it to "
				      "the next round");
		json_object_set_new(*rep, "round", json_integer(j->round));
		return;
	}
	to = fold_target(c, j, cr, (uint32_t)rank);
	if (ctl__round_client_refused(cr, ctl__jstr(ev->hdr, "client", NULL), to, rep))
		return;
	if (ctl__fedau_weight(c, j, r, ctl__jstr(ev->hdr, "client", NULL), &fw, rep)) {
		ctl__round_client_drop(cr, ctl__jstr(ev->hdr, "client", NULL));
		return;
	}
	if (fw > 0) /* fedau: its metrics weigh as its update, as on one node */
		json_object_set_new(ev->hdr, "weight", json_real(fw));
	cr->count++;
	cr->folded[to]++;
	cr->landed[rank]++;
	ctl__rec_metrics(c, j, cr, to, ev->hdr, 1);
	if (rec) {
		rec->uid = uid;
		rec->job = j->db_id;
		rec->round = r;
		rec->seq = j->flora ? cr->slots : cr->count - 1;
		rec->fold_at = (int)to;
		rec->released = false;
		rec->weight = fw;
	}
	*rep =
	    json_pack("{s:b, s:i, s:i, s:s, s:s, s:i}", "ok", 1, "seq",
		      (json_int_t)(j->flora ? cr->slots : cr->count - 1),
		      "fold_at", (json_int_t)to, "fold_addr", c->nodes[to].addr, "fold_name",
		      c->nodes[to].name, "fold_epoch", (json_int_t)c->nodes[to].epoch);
	if (*rep && j->async) /* the version it is folded into (its base was @r asked) */
		json_object_set_new(*rep, "version", json_integer(r));
	if (*rep && fw > 0) /* fedau: the weight the node folds it with (ctl_fedau.c) */
		json_object_set_new(*rep, "weight", json_real(fw));
	ctl__round_key_put(cr, ctl__jstr(ev->hdr, "key", NULL), to, c->nodes[to].epoch,
			   j->flora ? cr->slots : cr->count - 1, (uint32_t)rank, uid);
	if (j->flora)
		cr->slots++;
	if (cr->count >= j->cpr || (j->flora && cr->slots >= j->cpr))
		round_close(c, j, cr); /* over: nodes reported more after a restart */
}

/* A node could not fold an update it had been told to: uncount it. */
void ctl__on_release(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	int rank = ctl__node_rank(c, ctl__jstr(ev->hdr, "node", ""));
	uint64_t uid = (uint64_t)json_integer_value(json_object_get(ev->hdr, "uid"));
	struct acc_rec *rec =
	    rank >= 0 && c->nodes[rank].recent ? &c->nodes[rank].recent[uid % CTL_RECENT] : NULL;
	struct cround *cr;
	uint32_t r;
	int at;

	*rep = json_pack("{s:b}", "ok", 1);
	/* Only what we counted for that request, once: nothing if it never arrived. */
	if (!j || !rec || !uid || rec->uid != uid || rec->released || rec->job != j->db_id)
		return;
	rec->released = true;
	r = rec->round;
	at = rec->fold_at;
	cr = round_get(j, r);
	if (!cr || at < 0 || (uint32_t)at >= c->nnodes || !cr->folded[at] || cr->state == CR_DONE)
		return;
	ctl__flora_slots_sync(j, cr);
	cr->folded[at]--;
	cr->landed[rank]--;
	cr->count--;
	ctl__round_key_release(cr, (uint32_t)rank, uid);
	ctl__round_client_drop(cr, ctl__jstr(ev->hdr, "client", NULL));
	ctl__rec_metrics(c, j, cr, (uint32_t)at, ev->hdr, -1);
	trib_warn("job %s round %u: node %s gave back an update it could not fold", j->name, r,
		  c->nodes[at].name);
	if (j->flora) /* its slot stays out: written now, or a restart would hand it out again */
		ctl__xstate_save(c);
	if (cr->state == CR_CLOSED) {
		if (!cr->count)
			round_empty(c, j, cr);
		else
			send_close(c, j, cr);
	}
}

/*
 * The ranks whose sums reached the round's top: a node drained after its
 * sum got there lost nothing, and its updates count again.
 */
static void take_edges(struct ctl *c, struct cjob *j, struct cround *cr, json_t *edges)
{
	json_t *e;
	size_t i;

	cr->nedges = 0;
	json_array_foreach(edges, i, e)
	{
		/* [rank, epoch]: the run whose sum it was (a rank may have a new run since). */
		uint32_t from = (uint32_t)json_integer_value(json_array_get(e, 0));
		uint32_t run = (uint32_t)json_integer_value(json_array_get(e, 1));

		if (cr->nedges == CTL_MAX_NODES || from >= c->nnodes)
			continue;
		cr->edges_from[cr->nedges++] = from;
		if (cr->lost[from] && cr->lost_epoch[from] == run) {
			/* Its sum reached the top before the node was lost: nothing was. */
			trib_info("job %s round %u: node %s's sum reached the top before it was "
				  "drained: its %u updates are in the model",
				  j->name, cr->round, c->nodes[from].name, cr->lost_n[from]);
			cr->lost[from] = false;
			cr->lost_updates -= cr->lost_n[from];
			cr->lost_n[from] = 0;
		}
	}
}

void ctl__on_model_done(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	struct cround *cr = j ? round_get(j, r) : NULL;
	size_t slen;
	float *m;
	int err;

	*rep = json_pack("{s:b}", "ok", 1);
	if (j && json_is_string(json_object_get(ev->hdr, "failed"))) {
		model_failed(c, j, cr, ev, json_string_value(json_object_get(ev->hdr, "failed")),
			     rep);
		return;
	}
	/* The server step's new state follows the model (a job with an optimiser). */
	slen = j ? (size_t)json_integer_value(json_object_get(ev->hdr, "state_bytes")) : 0;
	if (!cr || cr->state != CR_CLOSED || slen > ev->plen ||
	    ev->plen - slen != j->fmt.n_elem * sizeof(float)) {
		trib_debug("model for job %s round %u not wanted", j ? j->name : "?", r);
		return;
	}
	if (r != j->completed) {
		/* Rounds commit in order; an earlier one is still folding. Rare: retry later. */
		json_decref(*rep);
		*rep = ctl__err_reply(503, "an earlier round is not committed yet; send again");
		return;
	}
	m = trib_malloc(ev->plen);
	if (!m) {
		json_decref(*rep);
		*rep = ctl__err_reply(503, "out of memory");
		return;
	}
	memcpy(m, ev->payload, ev->plen);
	/*
	 * The state first, under the version it belongs to: the model file is the commit
	 * point (job_load() takes the newest model and then its state), so a crash between
	 * the two leaves a state row no model refers to, never a model without its state.
	 */
	err = slen ? ctl_store_opt_put(c->store, j->db_id, r + 1,
				       (const uint8_t *)m + j->fmt.n_elem * sizeof(float), slen)
		   : 0;
	/* Each failure names its own state: an operator reading "optimiser" on a fedau job
	 * (which has none) would look in the wrong table. */
	const char *what = "the optimiser state";
	if (!err) { /* fedau's client states too: ahead of the model is harmless (per round) */
		what = "fedau's client states";
		err = ctl__fedau_commit(c, j);
	}
	if (err) {
		trib_error("job %s round %u: storing %s: %s", j->name, r, what, strerror(-err));
		trib_free(m);
		json_decref(*rep);
		*rep = ctl__err_reply(503, "the controller could not store the round's state");
		json_object_set_new(*rep, "failed_store", json_string(what));
		json_object_set_new(*rep, "store_failing", json_true());
		return;
	}
	err = ctl_model_store(c->o->data_dir, j->name, &j->fmt, &j->store, r, m);
	if (err) {
		trib_free(m);
		json_decref(*rep);
		*rep = ctl__err_reply(503, "the controller could not store the model");
		/* The top's node then sends it again with backoff, not every tick. */
		json_object_set_new(*rep, "store_failing", json_true());
		return;
	}
	trib_free(j->model);
	j->model = m;
	j->opt_len = slen;
	cr->n_updates = (uint32_t)json_integer_value(json_object_get(ev->hdr, "updates"));
	cr->weight = json_number_value(json_object_get(ev->hdr, "weight"));
	take_edges(c, j, cr, json_object_get(ev->hdr, "edges_from"));
	trib_info("job %s round %u: model v%u from node %s: %u updates (weight %g), %u "
		  "cross-node partials, %.3f s",
		  j->name, r, r + 1, c->nodes[cr->top].name, cr->n_updates, cr->weight, cr->nedges,
		  (double)(trib_now_ns() - cr->open_ns) / 1e9);
	ctl__job_advance(c, j, cr);
}

json_t *ctl__round_json(struct ctl *c, struct cjob *j, struct cround *cr)
{
	json_t *lost = json_array(), *nodes = json_object(), *edges = json_array();
	json_t *lost_runs = json_array();

	for (uint32_t i = 0; i < c->nnodes; i++) {
		if (cr->lost[i]) {
			json_array_append_new(lost, json_string(c->nodes[i].name));
			json_array_append_new(lost_runs,
					      json_pack("{s:s, s:i, s:i}", "node", c->nodes[i].name,
							"epoch", (json_int_t)cr->lost_epoch[i],
							"updates", (json_int_t)cr->lost_n[i]));
		}
		if (cr->folded[i] || cr->landed[i] || cr->planned[i])
			json_object_set_new(nodes, c->nodes[i].name,
					    json_pack("{s:i, s:i, s:i}", "updates",
						      (json_int_t)cr->folded[i], "landed",
						      (json_int_t)cr->landed[i], "leaves_planned",
						      (json_int_t)cr->planned[i]));
	}
	for (uint32_t k = 0; k < cr->nedges; k++)
		json_array_append_new(edges, json_pack("[s, s]", c->nodes[cr->edges_from[k]].name,
						       c->nodes[cr->top].name));
	json_t *o = json_pack("{s:i, s:s, s:i, s:i, s:i, s:o, s:o, s:s?, s:o, s:o, s:i, s:i}",
			      "round", (json_int_t)cr->round, "state", round_states[cr->state],
			      "received", (json_int_t)cr->count, "clients_per_round",
			      (json_int_t)j->cpr, "updates", (json_int_t)cr->n_updates, "lost_nodes",
			      lost, "lost", lost_runs, "top",
			      cr->top >= 0 ? c->nodes[cr->top].name : NULL, "nodes", nodes, "edges",
			      edges, "lost_updates", (json_int_t)cr->lost_updates, "clients",
			      (json_int_t)ctl__round_clients(cr));
	/* Issue 15's keys (a single node's record has them too); no metrics in a cluster yet. */
	uint64_t end = cr->close_ns ? cr->close_ns : cr->done_ns;

	if (o) {
		json_object_set_new(o, "opened_at", json_real(unix_of(cr->open_ns)));
		json_object_set_new(o, "closed_at", end ? json_real(unix_of(end)) : json_null());
		json_object_set_new(o, "duration_s", json_real((double)((end ? end : trib_now_ns()) -
								  cr->open_ns) / 1e9));
	}
	if (o) /* the round ended without a model of its own (model_failed) */
		json_object_set_new(o, "failed", cr->failed[0] ? json_string(cr->failed)
							       : json_null());
	ctl__round_json_extra(c, j, cr, o);
	return o;
}

void ctl__on_round_get(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	struct cround *cr = j ? round_get(j, r) : NULL;

	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	if (!cr) {
		if (r < j->completed && ctl__rec_round_stored(c, j, r, rep))
			return; /* its stored row */
		if (r < j->completed)
			*rep = ctl__err_reply(404, "round too old: only the last 64 are kept");
		else if (r == j->round) /* before its first update (the node needs "ok") */
			*rep = json_pack("{s:b, s:o}", "ok", 1, "round", ctl__rec_open_json(j));
		else
			*rep = ctl__err_reply(404, "no such round yet");
		return;
	}
	*rep = json_pack("{s:b, s:o}", "ok", 1, "round", ctl__round_json(c, j, cr));
}

/* Round @cr of @j held @lost updates on node @rank, which is gone. */
static void round_lose(struct ctl *c, struct cjob *j, struct cround *cr, uint32_t rank,
		       uint32_t lost)
{
	struct cnode *nd = &c->nodes[rank];

	ctl__flora_slots_sync(j, cr);
	cr->lost[rank] = true;
	cr->lost_epoch[rank] = nd->epoch;
	cr->lost_n[rank] += lost;
	cr->lost_updates += lost;
	cr->count -= lost;
	cr->count_at_loss[rank] = cr->count;
	cr->folded[rank] = 0;
	ctl__round_keys_lose(cr, rank);
	if (cr->state == CR_OPEN) {
		ctl__round_clients_lose(cr, rank);
		trib_warn("job %s round %u: %u updates acknowledged by node %s are "
			  "lost; the round stays open for %u more (clients resend)",
			  j->name, cr->round, lost, nd->name, j->cpr - cr->count);
		return;
	}
	trib_warn("job %s round %u: %u updates acknowledged by node %s are lost; "
		  "the round completes with the other %u",
		  j->name, cr->round, lost, nd->name, cr->count);
	if (!cr->count) {
		round_empty(c, j, cr);
		return;
	}
	if (cr->top == (int)rank) {
		place_top(c, j, cr);
		trib_warn("job %s round %u: the top moves to node %s", j->name, cr->round,
			  c->nodes[cr->top].name);
	}
	send_close(c, j, cr);
}

void ctl__rounds_lose_node(struct ctl *c, uint32_t rank)
{
	for (struct cjob *j = c->jobs; j; j = j->next) {
		for (struct cround *cr = j->rounds; cr; cr = cr->next) {
			uint32_t lost = cr->folded[rank];

			if (cr->state != CR_DONE && lost)
				round_lose(c, j, cr, rank, lost);
		}
	}
	ctl__xstate_save(c); /* flora's slots of the lost updates stay out (ctl__flora_slots_sync) */
}

/*
 * flora: slots handed out are never handed out again in the round (one may still be in a
 * node's sum, and two updates in one block make a wrong product silently). Every slot out
 * is a counted update or one given back (the gap); after a controller restart the count is
 * the nodes' and the gap controller.db's.
 */
void ctl__flora_slots_sync(const struct cjob *j, struct cround *cr)
{
	if (!j->flora)
		return;
	if (cr->slots < cr->count + cr->slot_gap)
		cr->slots = cr->count + cr->slot_gap;
	cr->slot_gap = cr->slots - cr->count;
}

struct cround *ctl__round_new(struct cjob *j, uint32_t r)
{
	return round_new(j, r);
}

void ctl__round_close(struct ctl *c, struct cjob *j, struct cround *cr)
{
	round_close(c, j, cr);
}

/* A closed round's counts or top changed: an empty one ends, else every node hears again. */
void ctl__round_reclose(struct ctl *c, struct cjob *j, struct cround *cr)
{
	if (!cr->count) {
		round_empty(c, j, cr);
		return;
	}
	if (cr->top < 0 || !c->nodes[cr->top].live || !cr->folded[cr->top])
		place_top(c, j, cr);
	send_close(c, j, cr);
}
