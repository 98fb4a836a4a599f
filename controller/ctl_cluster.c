// SPDX-License-Identifier: MIT
/*
 * `tributary controller`. One event loop over the wire (ctl_wire.c): nodes
 * join and heartbeat; jobs are created here and told to every node; each
 * update's acceptance is counted here, so a round closes once, cluster-wide,
 * at exactly clients_per_round updates; at the close the placement
 * (ctl_place.c) picks the node that folds the round's top, and the nodes'
 * sums cross to it once each; its model comes back here and goes to every
 * node. A node that stops heartbeating is drained: its updates of unfinished
 * rounds are declared lost, and clients learn it from GET .../rounds/{r}.
 */
#include "ctl_cluster.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl_place.h"
#include "ctl_plan.h"
#include "ctl_store.h"
#include "ctl_wire.h"
#include "trib_store.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

#define CTL_REQ_TIMEOUT_MS 10000
/* Rounds kept in memory after their model, for GET .../rounds/{r}. */
#define CTL_ROUNDS_KEPT 64

enum { CR_OPEN, CR_CLOSED, CR_DONE };

/*
 * The last acceptances of a node, by its request id: a node asks again when
 * an answer did not reach it, and gives back what it cannot fold. Both must
 * find the same count (ids are sequential per node: a ring holds the last).
 */
#define CTL_RECENT 4096
struct acc_rec {
	uint64_t uid;
	int64_t job; /* db id */
	uint32_t round, seq;
	int fold_at;
	bool released;
};

struct cnode {
	char name[64];
	char addr[128]; /* its wire URL (node-to-node and controller-to-node) */
	char http[128]; /* its gateway, for status */
	char dataplane[16];
	uint32_t cores;
	uint64_t arena_bytes, arena_free;
	uint64_t mem_free; /* the node's MemAvailable */
	uint64_t last_ns;
	bool used; /* the rank is taken (live or dead) */
	bool live;
	uint32_t epoch;		/* this run of the node: a node that joins again gets a new one */
	struct acc_rec *recent; /* CTL_RECENT entries (owned), or NULL */
};

struct cround {
	uint32_t round;
	int state;
	uint32_t count;			    /* updates accepted (and not lost) */
	uint32_t folded[CTL_MAX_NODES];	    /* updates folded on each node */
	uint32_t landed[CTL_MAX_NODES];	    /* updates whose client sent them to each node */
	bool lost[CTL_MAX_NODES];	    /* the node died with updates of this round */
	uint32_t lost_epoch[CTL_MAX_NODES]; /* which run of it (a receipt names it) */
	uint32_t lost_n[CTL_MAX_NODES];
	uint32_t lost_updates;
	int top;			    /* rank folding the top, from the close; -1 before */
	uint32_t planned[CTL_MAX_NODES];    /* leaves the placement gave each node at the close */
	uint32_t cross_edges;		    /* from the placement */
	uint32_t edges_from[CTL_MAX_NODES]; /* ranks whose sum crossed to the top (from the top) */
	uint32_t nedges;
	uint64_t open_ns, close_ns, done_ns;
	uint32_t n_updates; /* in the model */
	double weight;
	struct cround *next; /* newer */
};

struct cjob {
	int64_t db_id;
	char name[64];
	char token[80];
	char *body; /* the creation request, as nodes parse it (owned) */
	uint32_t cpr, fanin;
	uint64_t n_elem;
	uint32_t round;	       /* open round */
	uint32_t completed;    /* model version */
	float *model;	       /* latest model (owned), NULL: zeros */
	struct cround *rounds; /* oldest first: in flight and the last few done */
	struct cjob *next;
};

struct ctl {
	const struct ctl_cluster_opts *o;
	struct ctl_wire *w;
	struct ctl_store *store;
	char admin_token[80];
	struct cnode nodes[CTL_MAX_NODES];
	uint32_t nnodes; /* ranks used: 0 .. nnodes - 1 */
	struct cjob *jobs;
	uint64_t cookie;
	uint32_t epochs; /* runs of nodes that joined, ever (this process) */
};

static volatile sig_atomic_t stop_sig;

/* A string member, or @dflt. */
static const char *jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : dflt;
}

static void on_signal(int sig)
{
	stop_sig = sig;
}

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
		trib_free(old);
		n--;
	}
	return cr;
}

static int node_rank(struct ctl *c, const char *name)
{
	for (uint32_t i = 0; i < c->nnodes; i++)
		if (c->nodes[i].used && !strcmp(c->nodes[i].name, name))
			return (int)i;
	return -1;
}

/* Send @h (+payload) to node @rank; the reply is only logged if it is an error. */
static void tell(struct ctl *c, uint32_t rank, json_t *h, const void *p, size_t len)
{
	struct cnode *nd = &c->nodes[rank];
	int err;

	if (!nd->live)
		return;
	err = ctl_wire_request(c->w, nd->addr, h, p, len, ++c->cookie, CTL_REQ_TIMEOUT_MS);
	if (err)
		trib_warn("node %s: cannot send %s: %s", nd->name,
			  json_string_value(json_object_get(h, "op")), strerror(-err));
}

static void tell_all(struct ctl *c, json_t *h, const void *p, size_t len, int except)
{
	for (uint32_t i = 0; i < c->nnodes; i++)
		if ((int)i != except)
			tell(c, i, h, p, len);
}

static json_t *job_msg(const struct cjob *j)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:i, s:i}", "op", "job", "name", j->name, "token",
			 j->token, "body", j->body, "round", (json_int_t)j->round, "completed",
			 (json_int_t)j->completed);
}

/* The model of version @j->completed to every node (or one). */
static void send_model(struct ctl *c, struct cjob *j, int only, const struct cround *cr)
{
	json_t *h = json_pack("{s:s, s:s, s:i}", "op", "model", "job", j->name, "version",
			      (json_int_t)j->completed);
	size_t len = j->model ? j->n_elem * sizeof(float) : 0;

	if (cr) {
		json_object_set_new(h, "updates", json_integer(cr->n_updates));
		json_object_set_new(h, "weight", json_real(cr->weight));
	}
	if (only >= 0)
		tell(c, (uint32_t)only, h, j->model, len);
	else
		tell_all(c, h, j->model, len, -1);
	json_decref(h);
}

/* The round's close: counts per node, the top, and who contributes; sent again on changes. */
static json_t *close_msg(struct ctl *c, struct cjob *j, struct cround *cr)
{
	json_t *h = json_pack("{s:s, s:s, s:i, s:i, s:s}", "op", "close", "job", j->name, "round",
			      (json_int_t)cr->round, "top", (json_int_t)cr->top, "top_addr",
			      cr->top >= 0 ? c->nodes[cr->top].addr : "");
	json_t *counts = json_array();

	for (uint32_t i = 0; i < c->nnodes; i++)
		json_array_append_new(counts, json_integer(cr->folded[i]));
	json_object_set_new(h, "counts", counts);
	json_object_set_new(h, "nodes", json_integer(c->nnodes));
	return h;
}

static void send_close(struct ctl *c, struct cjob *j, struct cround *cr)
{
	json_t *h = close_msg(c, j, cr);

	tell_all(c, h, NULL, 0, -1);
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
	pin.model_bytes = j->n_elem * sizeof(float);
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
		need = (contributors + 2) * (j->n_elem * sizeof(float) + 4096);
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
	trib_info("job %s round %u: closed with %u updates; top on node %s (%u cross-node "
		  "edges planned)",
		  j->name, cr->round, cr->count, cr->top >= 0 ? c->nodes[cr->top].name : "(none)",
		  cr->cross_edges);
	send_close(c, j, cr);
}

/* Nothing of the round survived: its model is the previous one, and the job goes on. */
static void round_empty(struct ctl *c, struct cjob *j, struct cround *cr);
static void ctl_drain_now(struct ctl *c, uint32_t rank);

/* --- requests from nodes --- */

static json_t *err_reply(int status, const char *msg)
{
	return json_pack("{s:b, s:i, s:s}", "ok", 0, "status", status, "error", msg);
}

static void on_join(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = json_string_value(json_object_get(ev->hdr, "name"));
	const char *addr = json_string_value(json_object_get(ev->hdr, "addr"));
	const char *http = json_string_value(json_object_get(ev->hdr, "http"));
	const char *dp = json_string_value(json_object_get(ev->hdr, "dataplane"));
	json_t *jobs;
	struct cnode *nd;
	int rank;

	if (!name || !addr || !trib_job_name_valid(name) || strlen(addr) >= sizeof(nd->addr)) {
		*rep = err_reply(400, "join: name (like a job name) and addr required");
		return;
	}
	rank = node_rank(c, name);
	if (rank < 0) {
		if (c->nnodes == CTL_MAX_NODES) {
			*rep = err_reply(503, "the cluster is full (64 nodes)");
			return;
		}
		rank = (int)c->nnodes++;
	}
	nd = &c->nodes[rank];
	if (nd->live) {
		/* The same name again: it restarted before we noticed; what it held is gone. */
		trib_warn("node %s joined again: its previous run is drained", name);
		ctl_drain_now(c, (uint32_t)rank);
	}
	{
		struct acc_rec *recent = nd->recent;

		memset(nd, 0, sizeof(*nd));
		/* A new run numbers its requests from 1 again. */
		nd->recent = recent ? recent : trib_calloc(CTL_RECENT, sizeof(*recent));
		if (recent)
			memset(recent, 0, CTL_RECENT * sizeof(*recent));
	}
	snprintf(nd->name, sizeof(nd->name), "%s", name);
	snprintf(nd->addr, sizeof(nd->addr), "%s", addr);
	snprintf(nd->http, sizeof(nd->http), "%s", http ? http : "");
	snprintf(nd->dataplane, sizeof(nd->dataplane), "%s", dp ? dp : "");
	nd->cores = (uint32_t)json_integer_value(json_object_get(ev->hdr, "cores"));
	nd->arena_bytes = (uint64_t)json_integer_value(json_object_get(ev->hdr, "arena_bytes"));
	nd->arena_free = (uint64_t)json_integer_value(json_object_get(ev->hdr, "arena_free"));
	nd->mem_free = (uint64_t)json_integer_value(json_object_get(ev->hdr, "mem_free"));
	nd->used = nd->live = true;
	nd->last_ns = trib_now_ns();
	nd->epoch = ++c->epochs;
	jobs = json_array();
	for (struct cjob *j = c->jobs; j; j = j->next) {
		json_t *m = job_msg(j);

		json_array_append_new(jobs, m);
	}
	*rep = json_pack("{s:b, s:i, s:i, s:s, s:i, s:o}", "ok", 1, "rank", (json_int_t)rank,
			 "epoch", (json_int_t)nd->epoch, "admin_token", c->admin_token,
			 "heartbeat_ms", (json_int_t)c->o->heartbeat_ms, "jobs", jobs);
	trib_info("node %s joined as rank %d (%s, %u cores, arena %llu MiB free, %s)", name, rank,
		  addr, nd->cores, (unsigned long long)(nd->arena_free >> 20), nd->dataplane);
	/* The models it needs it asks for (sync), once it knows the jobs. */
}

static void on_heartbeat(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = json_string_value(json_object_get(ev->hdr, "name"));
	int rank = name ? node_rank(c, name) : -1;

	if (rank < 0 || !c->nodes[rank].live) {
		*rep = err_reply(410, "unknown or drained node: join again");
		return;
	}
	c->nodes[rank].last_ns = trib_now_ns();
	c->nodes[rank].arena_free =
	    (uint64_t)json_integer_value(json_object_get(ev->hdr, "arena_free"));
	c->nodes[rank].mem_free =
	    (uint64_t)json_integer_value(json_object_get(ev->hdr, "mem_free"));
	/* Each job's open round and version: a node that missed a message catches up (sync). */
	{
		json_t *jobs = json_object();

		for (struct cjob *j = c->jobs; j; j = j->next)
			json_object_set_new(jobs, j->name,
					    json_pack("[i, i]", (json_int_t)j->round,
						      (json_int_t)j->completed));
		*rep = json_pack("{s:b, s:o}", "ok", 1, "jobs", jobs);
	}
}

/*
 * A node asks again for what it should have been told: a job, a round's
 * close, the latest model. Messages to a node travel on their own
 * connection, so one can overtake the answer to its join (the node then
 * drops it: a close or a model of a job it does not know yet).
 */
static void on_sync(struct ctl *c, struct ctl_event *ev, json_t **rep, const void **p,
		    size_t *len)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	const char *what = jstr(ev->hdr, "what", "");
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	struct cround *cr = j ? round_get(j, r) : NULL;

	if (!j) {
		*rep = err_reply(404, "no such job");
	} else if (!strcmp(what, "job")) {
		*rep = job_msg(j);
	} else if (!strcmp(what, "close")) {
		if (cr && cr->state != CR_OPEN)
			*rep = close_msg(c, j, cr);
		else
			*rep = err_reply(404, "that round is not closed (or no longer kept)");
	} else if (!strcmp(what, "model")) {
		*rep = json_pack("{s:s, s:s, s:i}", "op", "model", "job", j->name, "version",
				 (json_int_t)j->completed);
		*p = j->model;
		*len = j->model ? j->n_elem * sizeof(float) : 0;
	} else {
		*rep = err_reply(400, "sync: what is job, close or model");
	}
	if (json_is_object(*rep) && !json_object_get(*rep, "ok"))
		json_object_set_new(*rep, "ok", json_true());
}

static void on_job_create(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	json_t *o = json_loadb((const char *)ev->payload, ev->plen, 0, NULL);
	const char *name = json_string_value(json_object_get(o, "name"));
	int origin = node_rank(c, jstr(ev->hdr, "node", ""));
	struct ctl_job cj;
	struct cjob *j;
	char schema[64];
	json_t *m;
	int err;

	if (!o || !name || !trib_job_name_valid(name)) {
		*rep = err_reply(400, "job definition without a valid name");
		goto out;
	}
	if (job_find(c, name)) {
		*rep = err_reply(409, "a job with this name exists");
		goto out;
	}
	j = trib_calloc(1, sizeof(*j));
	if (!j || !(j->body = trib_malloc(ev->plen + 1))) {
		trib_free(j);
		*rep = err_reply(500, "out of memory");
		goto out;
	}
	memcpy(j->body, ev->payload, ev->plen);
	j->body[ev->plen] = '\0';
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->cpr = (uint32_t)json_integer_value(json_object_get(o, "clients_per_round"));
	j->fanin = (uint32_t)json_integer_value(json_object_get(o, "fan_in"));
	j->n_elem = (uint64_t)json_integer_value(json_object_get(ev->hdr, "n_elem"));
	err = trib_token_new(j->token, sizeof(j->token));
	memset(&cj, 0, sizeof(cj));
	snprintf(cj.name, sizeof(cj.name), "%s", name);
	snprintf(cj.token, sizeof(cj.token), "%s", j->token);
	snprintf(cj.algorithm, sizeof(cj.algorithm), "fedavg");
	cj.clients_per_round = j->cpr;
	snprintf(schema, sizeof(schema), "{\"n_elem\":%llu}", (unsigned long long)j->n_elem);
	cj.schema_json = schema;
	cj.params_json = j->body;
	if (!err)
		err = ctl_store_job_create(c->store, &cj);
	if (err || !j->cpr || !j->n_elem) {
		trib_free(j->body);
		trib_free(j);
		*rep = err_reply(err == -EEXIST ? 409 : 500,
				 err ? "could not record the job" : "bad job definition");
		goto out;
	}
	j->db_id = cj.id;
	{
		struct cjob **pp = &c->jobs;

		while (*pp)
			pp = &(*pp)->next;
		*pp = j;
	}
	trib_info("job %s: created cluster-wide (%u clients per round, %llu parameters)", name,
		  j->cpr, (unsigned long long)j->n_elem);
	*rep = json_pack("{s:b, s:s}", "ok", 1, "token", j->token);
	m = job_msg(j);
	tell_all(c, m, NULL, 0, origin);
	json_decref(m);
out:
	json_decref(o);
}

/* The node to fold an update that landed on @landed. */
static uint32_t fold_target(struct ctl *c, struct cjob *j, struct cround *cr, uint32_t landed)
{
	uint64_t need = 2 * (j->n_elem * sizeof(float) + 65536);
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

static void on_accept(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	int rank = node_rank(c, jstr(ev->hdr, "node", ""));
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	uint64_t uid = (uint64_t)json_integer_value(json_object_get(ev->hdr, "uid"));
	struct acc_rec *rec = NULL;
	struct cround *cr;
	uint32_t to;
	char msg[160];

	if (!j || rank < 0 || !c->nodes[rank].live) {
		*rep = err_reply(j ? 503 : 404, j ? "node not joined" : "no such job");
		return;
	}
	if (uid && c->nodes[rank].recent) {
		rec = &c->nodes[rank].recent[uid % CTL_RECENT];
		if (rec->uid == uid) {
			/* Asked again (our answer was lost): the same answer, counted once. */
			if (rec->released) {
				*rep = err_reply(503, "this update was given back; send it again");
				return;
			}
			*rep = json_pack("{s:b, s:i, s:i, s:s, s:s, s:i}", "ok", 1, "seq",
					 (json_int_t)rec->seq, "fold_at", (json_int_t)rec->fold_at,
					 "fold_addr", c->nodes[rec->fold_at].addr, "fold_name",
					 c->nodes[rec->fold_at].name, "fold_epoch",
					 (json_int_t)c->nodes[rec->fold_at].epoch);
			return;
		}
	}
	if (r != j->round) {
		snprintf(msg, sizeof(msg),
			 "round mismatch: the job is at round %u, the update is "
			 "for round %u (%s)",
			 j->round, r, r < j->round ? "stale" : "future");
		*rep = err_reply(409, msg);
		json_object_set_new(*rep, "round", json_integer(j->round));
		return;
	}
	cr = round_get(j, r);
	if (!cr && !(cr = round_new(j, r))) {
		*rep = err_reply(503, "out of memory");
		return;
	}
	to = fold_target(c, j, cr, (uint32_t)rank);
	cr->count++;
	cr->folded[to]++;
	cr->landed[rank]++;
	if (rec) {
		rec->uid = uid;
		rec->job = j->db_id;
		rec->round = r;
		rec->seq = cr->count - 1;
		rec->fold_at = (int)to;
		rec->released = false;
	}
	*rep =
	    json_pack("{s:b, s:i, s:i, s:s, s:s, s:i}", "ok", 1, "seq", (json_int_t)cr->count - 1,
		      "fold_at", (json_int_t)to, "fold_addr", c->nodes[to].addr, "fold_name",
		      c->nodes[to].name, "fold_epoch", (json_int_t)c->nodes[to].epoch);
	if (cr->count == j->cpr)
		round_close(c, j, cr);
}

/* A node could not fold an update it had been told to: uncount it. */
static void on_release(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	int rank = node_rank(c, jstr(ev->hdr, "node", ""));
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
	cr->folded[at]--;
	cr->landed[rank]--;
	cr->count--;
	trib_warn("job %s round %u: node %s gave back an update it could not fold", j->name, r,
		  c->nodes[at].name);
	if (cr->state == CR_CLOSED) {
		if (!cr->count)
			round_empty(c, j, cr);
		else
			send_close(c, j, cr);
	}
}

static int model_store(struct ctl *c, struct cjob *j, const void *data, uint32_t v)
{
	char path[PATH_MAX];
	int err;

	snprintf(path, sizeof(path), "%s/jobs/%s", c->o->data_dir, j->name);
	err = trib_mkdir_p(path, 0700);
	if (err)
		return err;
	snprintf(path, sizeof(path), "%s/jobs/%s/model-v%u.f32", c->o->data_dir, j->name, v);
	return trib_write_file_atomic(path, data, j->n_elem * sizeof(float), 0600);
}

static void job_advance(struct ctl *c, struct cjob *j, struct cround *cr)
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
	ctl_store_round_record(c->store, &rec);
	send_model(c, j, -1, cr);
}

static void round_empty(struct ctl *c, struct cjob *j, struct cround *cr)
{
	trib_error("job %s round %u: every node that held its updates was lost; version %u "
		   "repeats the previous model",
		   j->name, cr->round, cr->round + 1);
	if (j->model && model_store(c, j, j->model, cr->round + 1))
		trib_error("job %s: writing model v%u failed", j->name, cr->round + 1);
	cr->n_updates = 0;
	cr->weight = 0;
	job_advance(c, j, cr);
}

static void on_model_done(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	struct cround *cr = j ? round_get(j, r) : NULL;
	json_t *edges = json_object_get(ev->hdr, "edges_from"), *e;
	size_t i;
	float *m;
	int err;

	*rep = json_pack("{s:b}", "ok", 1);
	if (!cr || cr->state != CR_CLOSED || ev->plen != j->n_elem * sizeof(float)) {
		trib_debug("model for job %s round %u not wanted", j ? j->name : "?", r);
		return;
	}
	if (r != j->completed) {
		/* Rounds commit in order; an earlier one is still folding. Rare: retry later. */
		json_decref(*rep);
		*rep = err_reply(503, "an earlier round is not committed yet; send again");
		return;
	}
	m = trib_malloc(ev->plen);
	if (!m) {
		json_decref(*rep);
		*rep = err_reply(503, "out of memory");
		return;
	}
	memcpy(m, ev->payload, ev->plen);
	err = model_store(c, j, m, r + 1);
	if (err) {
		trib_error("job %s: writing model v%u: %s", j->name, r + 1, strerror(-err));
		trib_free(m);
		json_decref(*rep);
		*rep = err_reply(503, "the controller could not store the model");
		return;
	}
	trib_free(j->model);
	j->model = m;
	cr->n_updates = (uint32_t)json_integer_value(json_object_get(ev->hdr, "updates"));
	cr->weight = json_number_value(json_object_get(ev->hdr, "weight"));
	cr->nedges = 0;
	json_array_foreach(edges, i, e)
	{
		uint32_t from = (uint32_t)json_integer_value(e);

		if (cr->nedges == CTL_MAX_NODES || from >= c->nnodes)
			continue;
		cr->edges_from[cr->nedges++] = from;
		if (cr->lost[from]) {
			/* Its sum reached the top before the node was lost: nothing was. */
			trib_info("job %s round %u: node %s's sum reached the top before it was "
				  "drained: its %u updates are in the model",
				  j->name, r, c->nodes[from].name, cr->lost_n[from]);
			cr->lost[from] = false;
			cr->lost_updates -= cr->lost_n[from];
			cr->lost_n[from] = 0;
		}
	}
	trib_info("job %s round %u: model v%u from node %s: %u updates (weight %g), %u "
		  "cross-node partials, %.3f s",
		  j->name, r, r + 1, c->nodes[cr->top].name, cr->n_updates, cr->weight, cr->nedges,
		  (double)(trib_now_ns() - cr->open_ns) / 1e9);
	job_advance(c, j, cr);
}

static json_t *round_json(struct ctl *c, struct cjob *j, struct cround *cr)
{
	static const char *const st[] = {"open", "closed", "done"};
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
	return json_pack("{s:i, s:s, s:i, s:i, s:i, s:o, s:o, s:s?, s:o, s:o, s:i}", "round",
			 (json_int_t)cr->round, "state", st[cr->state], "received",
			 (json_int_t)cr->count, "clients_per_round", (json_int_t)j->cpr, "updates",
			 (json_int_t)cr->n_updates, "lost_nodes", lost, "lost", lost_runs, "top",
			 cr->top >= 0 ? c->nodes[cr->top].name : NULL, "nodes", nodes, "edges",
			 edges, "lost_updates", (json_int_t)cr->lost_updates);
}

static void on_round_get(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	struct cround *cr = j ? round_get(j, r) : NULL;

	if (!j) {
		*rep = err_reply(404, "no such job");
		return;
	}
	if (!cr) {
		if (r < j->completed)
			*rep = err_reply(404, "round too old: only the last 64 are kept");
		else if (r == j->round)
			*rep = json_pack("{s:i, s:s, s:i, s:i, s:[], s:{}, s:[]}", "round",
					 (json_int_t)r, "state", "open", "received", 0,
					 "clients_per_round", (json_int_t)j->cpr, "lost_nodes",
					 "nodes", "edges");
		else
			*rep = err_reply(404, "no such round yet");
		return;
	}
	*rep = json_pack("{s:b, s:o}", "ok", 1, "round", round_json(c, j, cr));
}

static void on_status(struct ctl *c, json_t **rep)
{
	json_t *nodes = json_array(), *jobs = json_array();
	uint64_t now = trib_now_ns();

	for (uint32_t i = 0; i < c->nnodes; i++) {
		struct cnode *nd = &c->nodes[i];

		json_array_append_new(
		    nodes,
		    json_pack("{s:i, s:s, s:s, s:s, s:b, s:i, s:I, s:I, "
			      "s:I, s:I, s:s}",
			      "rank", (json_int_t)i, "name", nd->name, "addr", nd->addr, "http",
			      nd->http, "live", nd->live, "cores", (json_int_t)nd->cores,
			      "arena_bytes", (json_int_t)nd->arena_bytes, "mem_free",
			      (json_int_t)nd->mem_free, "arena_free", (json_int_t)nd->arena_free,
			      "heartbeat_age_ms",
			      nd->live ? (json_int_t)((now - nd->last_ns) / 1000000) : -1,
			      "dataplane", nd->dataplane));
	}
	for (struct cjob *j = c->jobs; j; j = j->next) {
		json_t *rounds = json_array();

		for (struct cround *cr = j->rounds; cr; cr = cr->next)
			if (cr->state != CR_DONE || !cr->next || cr->round + 3 >= j->round)
				json_array_append_new(rounds, round_json(c, j, cr));
		json_array_append_new(jobs, json_pack("{s:s, s:i, s:i, s:i, s:o}", "name", j->name,
						      "round", (json_int_t)j->round, "completed",
						      (json_int_t)j->completed, "clients_per_round",
						      (json_int_t)j->cpr, "rounds", rounds));
	}
	*rep =
	    json_pack("{s:b, s:s, s:o, s:o}", "ok", 1, "placement",
		      c->o->round_robin ? "round-robin" : "locality", "nodes", nodes, "jobs", jobs);
}

/*
 * Node @rank is gone: its updates in unfinished rounds are lost. An open
 * round needs that many more (clients are told to resend); a closed one
 * completes with the others, and if it was the top, the top moves.
 */
static void ctl_drain_now(struct ctl *c, uint32_t rank)
{
	struct cnode *nd = &c->nodes[rank];

	nd->live = false;
	trib_warn("node %s (rank %u): no heartbeat for %u ms: drained", nd->name, rank,
		  c->o->dead_after_ms);
	for (struct cjob *j = c->jobs; j; j = j->next) {
		for (struct cround *cr = j->rounds; cr; cr = cr->next) {
			uint32_t lost = cr->folded[rank];

			if (cr->state == CR_DONE || !lost)
				continue;
			cr->lost[rank] = true;
			cr->lost_epoch[rank] = nd->epoch;
			cr->lost_n[rank] += lost;
			cr->lost_updates += lost;
			cr->count -= lost;
			cr->folded[rank] = 0;
			if (cr->state == CR_OPEN) {
				trib_warn("job %s round %u: %u updates acknowledged by node %s are "
					  "lost; the round stays open for %u more (clients resend)",
					  j->name, cr->round, lost, nd->name, j->cpr - cr->count);
				continue;
			}
			trib_warn("job %s round %u: %u updates acknowledged by node %s are lost; "
				  "the round completes with the other %u",
				  j->name, cr->round, lost, nd->name, cr->count);
			if (!cr->count) {
				round_empty(c, j, cr);
				continue;
			}
			if (cr->top == (int)rank) {
				place_top(c, j, cr);
				trib_warn("job %s round %u: the top moves to node %s", j->name,
					  cr->round, c->nodes[cr->top].name);
			}
			send_close(c, j, cr);
		}
	}
	{
		json_t *h = json_pack("{s:s, s:s, s:i}", "op", "drained", "node", nd->name, "rank",
				      (json_int_t)rank);

		tell_all(c, h, NULL, 0, (int)rank);
		json_decref(h);
	}
}

static void on_request(struct ctl *c, struct ctl_event *ev)
{
	const char *op = json_string_value(json_object_get(ev->hdr, "op"));
	const void *payload = NULL;
	size_t plen = 0;
	json_t *rep = NULL;

	if (!op)
		rep = err_reply(400, "no op");
	else if (!strcmp(op, "join"))
		on_join(c, ev, &rep);
	else if (!strcmp(op, "heartbeat"))
		on_heartbeat(c, ev, &rep);
	else if (!strcmp(op, "job_create"))
		on_job_create(c, ev, &rep);
	else if (!strcmp(op, "accept"))
		on_accept(c, ev, &rep);
	else if (!strcmp(op, "release"))
		on_release(c, ev, &rep);
	else if (!strcmp(op, "model_done"))
		on_model_done(c, ev, &rep);
	else if (!strcmp(op, "round_get"))
		on_round_get(c, ev, &rep);
	else if (!strcmp(op, "status"))
		on_status(c, &rep);
	else if (!strcmp(op, "sync"))
		on_sync(c, ev, &rep, &payload, &plen);
	else
		rep = err_reply(400, "unknown op");
	if (ctl_wire_reply(c->w, ev, rep, payload, plen))
		trib_warn("controller: could not answer %s", op ? op : "?");
	json_decref(rep);
}

static void check_heartbeats(struct ctl *c)
{
	uint64_t now = trib_now_ns(), limit = (uint64_t)c->o->dead_after_ms * 1000000ull;

	for (uint32_t i = 0; i < c->nnodes; i++)
		if (c->nodes[i].live && now - c->nodes[i].last_ns > limit)
			ctl_drain_now(c, i);
}

static int admin_token(struct ctl *c)
{
	char path[PATH_MAX];
	const char *p = c->o->admin_token_file;
	bool created;
	int err;

	if (!p) {
		snprintf(path, sizeof(path), "%s/admin-token", c->o->data_dir);
		p = path;
	}
	/* An --admin-token-file given on the command line must exist; the default is made. */
	err = trib_token_load(p, !c->o->admin_token_file, c->admin_token, sizeof(c->admin_token),
			      &created);
	if (err)
		return err;
	if (created)
		trib_info("admin token written to %s", p);
	return 0;
}

/* Jobs from the store after a restart: rounds in flight then are lost (nodes are told). */
static void jobs_load(struct ctl *c)
{
	struct ctl_job *cjs = NULL;
	size_t n = 0;

	if (ctl_store_job_list(c->store, &cjs, &n))
		return;
	for (size_t i = 0; i < n; i++) {
		struct cjob *j = trib_calloc(1, sizeof(*j));
		json_t *o = cjs[i].params_json ? json_loads(cjs[i].params_json, 0, NULL) : NULL;
		struct cjob **pp = &c->jobs;
		char path[PATH_MAX];
		void *buf = NULL;
		FILE *f;

		if (!j || !o) {
			trib_free(j);
			json_decref(o);
			continue;
		}
		j->db_id = cjs[i].id;
		snprintf(j->name, sizeof(j->name), "%s", cjs[i].name);
		snprintf(j->token, sizeof(j->token), "%s", cjs[i].token);
		j->body = trib_malloc(strlen(cjs[i].params_json) + 1);
		if (j->body)
			strcpy(j->body, cjs[i].params_json);
		j->cpr = cjs[i].clients_per_round;
		j->fanin = (uint32_t)json_integer_value(json_object_get(o, "fan_in"));
		json_decref(o);
		o = cjs[i].schema_json ? json_loads(cjs[i].schema_json, 0, NULL) : NULL;
		j->n_elem = (uint64_t)json_integer_value(json_object_get(o, "n_elem"));
		json_decref(o);
		/* The last model written decides the version; a round in flight restarts. */
		for (uint32_t v = cjs[i].round + 1; v > 0; v--) {
			snprintf(path, sizeof(path), "%s/jobs/%s/model-v%u.f32", c->o->data_dir,
				 j->name, v);
			f = fopen(path, "rb");
			if (!f)
				continue;
			buf = trib_malloc(j->n_elem * sizeof(float));
			if (buf && fread(buf, sizeof(float), j->n_elem, f) == j->n_elem) {
				j->model = buf;
				j->completed = v;
			} else {
				trib_free(buf);
			}
			fclose(f);
			break;
		}
		j->round = j->completed;
		while (*pp)
			pp = &(*pp)->next;
		*pp = j;
		trib_info("job %s: loaded at version %u", j->name, j->completed);
	}
	for (size_t i = 0; i < n; i++)
		ctl_job_clear(&cjs[i]);
	trib_free(cjs);
}

int ctl_cluster_run(const struct ctl_cluster_opts *o)
{
	struct ctl c;
	char path[PATH_MAX];
	struct sigaction sa;
	uint64_t last_check = 0;
	int err;

	memset(&c, 0, sizeof(c));
	c.o = o;
	err = trib_mkdir_p(o->data_dir, 0700);
	if (err) {
		trib_error("%s: %s", o->data_dir, strerror(-err));
		return 1;
	}
	if (admin_token(&c))
		return 1;
	snprintf(path, sizeof(path), "%s/controller.db", o->data_dir);
	err = ctl_store_open(path, &c.store);
	if (err) {
		trib_error("%s: %s", path, strerror(-err));
		return 1;
	}
	jobs_load(&c);
	err = ctl_wire_open(o->listen, &c.w);
	if (err) {
		ctl_store_close(c.store);
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	trib_info("controller listening on %s (placement: %s; nodes drained after %u ms without "
		  "a heartbeat)",
		  o->listen, o->round_robin ? "round-robin" : "locality", o->dead_after_ms);
	while (!stop_sig) {
		struct pollfd pfd = {.fd = ctl_wire_fd(c.w), .events = POLLIN};
		struct ctl_event *ev;
		uint64_t cnt;

		if (poll(&pfd, 1, 100) > 0 && read(pfd.fd, &cnt, sizeof(cnt)) < 0 &&
		    errno != EAGAIN)
			trib_warn("controller: eventfd: %s", strerror(errno));
		while ((ev = ctl_wire_next(c.w))) {
			if (ev->kind == CTL_EV_REQUEST)
				on_request(&c, ev);
			else if (ev->kind == CTL_EV_FAIL)
				trib_debug("controller: a message to a node failed: %s",
					   strerror(-ev->err));
			else if (json_is_false(json_object_get(ev->hdr, "ok")))
				trib_warn("controller: a node answered: %s",
					  json_string_value(json_object_get(ev->hdr, "error")));
			ctl_event_free(c.w, ev);
		}
		if (trib_now_ns() - last_check > 100000000ull) {
			last_check = trib_now_ns();
			check_heartbeats(&c);
		}
	}
	trib_info("signal %d: controller stopping", (int)stop_sig);
	ctl_wire_close(c.w);
	while (c.jobs) {
		struct cjob *j = c.jobs;

		c.jobs = j->next;
		while (j->rounds) {
			struct cround *cr = j->rounds;

			j->rounds = cr->next;
			trib_free(cr);
		}
		trib_free(j->model);
		trib_free(j->body);
		trib_free(j);
	}
	for (uint32_t i = 0; i < c.nnodes; i++)
		trib_free(c.nodes[i].recent);
	ctl_store_close(c.store);
	return 0;
}
