// SPDX-License-Identifier: MIT
/*
 * `tributary controller`. One event loop over the wire (ctl_wire.c) and a
 * signalfd: nodes join and heartbeat; jobs are created and rounds counted
 * in ctl_jobs.c. A node that stops heartbeating is drained: its updates of
 * unfinished rounds are declared lost, and clients learn it from GET
 * .../rounds/{r}.
 */
#include "ctl_cluster.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl_daemon.h"
#include "ctl_store.h"
#include "ctl_wire.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_name.h"
#include "trib_signal.h"
#include "trib_store.h"
#include "trib_time.h"
#include "trib_token.h"

/* How often the loop wakes without events, to notice silent nodes. */
#define CTL_TICK_MS 100

const char *ctl__jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : dflt;
}

json_t *ctl__err_reply(int status, const char *msg)
{
	return json_pack("{s:b, s:i, s:s}", "ok", 0, "status", status, "error", msg);
}

int ctl__node_rank(struct ctl *c, const char *name)
{
	for (uint32_t i = 0; i < c->nnodes; i++)
		if (c->nodes[i].used && !strcmp(c->nodes[i].name, name))
			return (int)i;
	return -1;
}

void ctl__tell(struct ctl *c, uint32_t rank, json_t *h, const void *p, size_t len)
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

void ctl__tell_all(struct ctl *c, json_t *h, const void *p, size_t len, int except)
{
	for (uint32_t i = 0; i < c->nnodes; i++)
		if ((int)i != except)
			ctl__tell(c, i, h, p, len);
}

/*
 * Node @rank is gone: its updates in unfinished rounds are lost (ctl_jobs.c
 * says what that does to each round), and the other nodes are told.
 */
static void drain_now(struct ctl *c, uint32_t rank)
{
	struct cnode *nd = &c->nodes[rank];
	json_t *h;

	nd->live = false;
	trib_warn("node %s (rank %u): no heartbeat for %u ms: drained", nd->name, rank,
		  c->o->dead_after_ms);
	ctl__rounds_lose_node(c, rank);
	h = json_pack("{s:s, s:s, s:i}", "op", "drained", "node", nd->name, "rank",
		      (json_int_t)rank);
	ctl__tell_all(c, h, NULL, 0, (int)rank);
	json_decref(h);
}

/* Rank @rank starts a new run of a node: what it held is forgotten, its ring kept. */
static void node_reset(struct cnode *nd)
{
	struct acc_rec *recent = nd->recent;

	memset(nd, 0, sizeof(*nd));
	/* A new run numbers its requests from 1 again. */
	nd->recent = recent ? recent : trib_calloc(CTL_RECENT, sizeof(*recent));
	if (recent)
		memset(recent, 0, CTL_RECENT * sizeof(*recent));
}

static void on_join(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = json_string_value(json_object_get(ev->hdr, "name"));
	const char *addr = json_string_value(json_object_get(ev->hdr, "addr"));
	json_t *jobs, *verdicts = NULL;
	uint32_t epoch = 0; /* the run it continues, if it lost nothing */
	char serial[41];
	struct cnode *nd;
	bool jobs_all = true;
	int rank;

	if (!name || !addr || !trib_job_name_valid(name) || strlen(addr) >= sizeof(nd->addr)) {
		*rep = ctl__err_reply(400, "join: name (like a job name) and addr required");
		return;
	}
	/* Before anything about the node changes: it proves that the name is its own. */
	if (ctl__join_check(c, ev, name, addr, serial, rep))
		return;
	rank = ctl__node_rank(c, name);
	if (rank < 0) {
		if (c->nnodes == CTL_MAX_NODES) {
			*rep = ctl__err_reply(503, "the cluster is full (64 nodes)");
			return;
		}
		rank = (int)c->nnodes++;
	}
	nd = &c->nodes[rank];
	if (json_object_get(ev->hdr, "holds")) {
		/* It reports what its arena holds (a restart of it, or of us): reconciled. */
		if (nd->live || nd->awaited)
			trib_info("node %s joined again (%s arena)", name,
				  ctl__jstr(ev->hdr, "arena", "a new"));
		verdicts = ctl__rejoin(c, (uint32_t)rank, ev->hdr);
		epoch = ctl__run_continues(c, (uint32_t)rank, ev->hdr) ? nd->epoch : 0;
	} else if (nd->live) {
		/* The same name again: it restarted before we noticed; what it held is gone. */
		trib_warn("node %s joined again: its previous run is drained", name);
		drain_now(c, (uint32_t)rank);
	}
	node_reset(nd);
	snprintf(nd->name, sizeof(nd->name), "%s", name);
	snprintf(nd->addr, sizeof(nd->addr), "%s", addr);
	snprintf(nd->http, sizeof(nd->http), "%s", ctl__jstr(ev->hdr, "http", ""));
	snprintf(nd->dataplane, sizeof(nd->dataplane), "%s", ctl__jstr(ev->hdr, "dataplane", ""));
	nd->cores = (uint32_t)json_integer_value(json_object_get(ev->hdr, "cores"));
	nd->arena_bytes = (uint64_t)json_integer_value(json_object_get(ev->hdr, "arena_bytes"));
	nd->arena_free = (uint64_t)json_integer_value(json_object_get(ev->hdr, "arena_free"));
	nd->mem_free = (uint64_t)json_integer_value(json_object_get(ev->hdr, "mem_free"));
	nd->used = nd->live = true;
	nd->last_ns = trib_now_ns();
	nd->epoch = epoch ? epoch : ++c->epochs;
	nd->joined_at = (uint32_t)(trib_now_ns() / 1000) | 1;
	snprintf(nd->serial, sizeof(nd->serial), "%s", serial);
	if (trib_token_new(nd->session, sizeof(nd->session))) {
		nd->live = false;
		*rep = ctl__err_reply(503, "join: no randomness for a session");
		return;
	}
	/* Requests to it check that its TLS certificate names it. */
	if (ctl_wire_peer_name(c->w, nd->addr, nd->name))
		trib_warn("node %s: too many addresses to check names for", nd->name);
	jobs = json_array();
	for (struct cjob *j = c->jobs; j; j = j->next)
		if (json_array_append_new(jobs, ctl__job_msg(c, j)))
			jobs_all = false; /* a node prunes its jobs only from a whole list */
	ctl__node_save(c, (uint32_t)rank);
	*rep = ctl__join_reply(c, (uint32_t)rank, jobs, verdicts);
	if (*rep && jobs_all)
		json_object_set_new(*rep, "jobs_all", json_true());
	trib_info("node %s joined as rank %d (%s, %u cores, arena %llu MiB free, %s)", name, rank,
		  addr, nd->cores, (unsigned long long)(nd->arena_free >> 20), nd->dataplane);
	/* The models it needs it asks for (sync), once it knows the jobs. */
}

static void on_heartbeat(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = json_string_value(json_object_get(ev->hdr, "name"));
	int rank = name ? ctl__node_rank(c, name) : -1;
	json_t *jobs;

	if (rank < 0 || !c->nodes[rank].live) {
		*rep = ctl__err_reply(410, "unknown or drained node: join again");
		json_object_set_new(*rep, "rejoin", json_true());
		return;
	}
	c->nodes[rank].last_ns = trib_now_ns();
	c->nodes[rank].arena_free =
	    (uint64_t)json_integer_value(json_object_get(ev->hdr, "arena_free"));
	c->nodes[rank].mem_free =
	    (uint64_t)json_integer_value(json_object_get(ev->hdr, "mem_free"));
	/* Each job's open round and version: a node that missed a message catches up (sync). */
	jobs = json_object();
	for (struct cjob *j = c->jobs; j; j = j->next)
		json_object_set_new(
		    jobs, j->name,
		    json_pack("[i, i]", (json_int_t)j->round, (json_int_t)j->completed));
	*rep = json_pack("{s:b, s:o}", "ok", 1, "jobs", jobs);
}

static void on_status(struct ctl *c, json_t **rep)
{
	json_t *nodes = json_array();
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
	*rep = json_pack("{s:b, s:s, s:o, s:o}", "ok", 1, "placement",
			 c->o->round_robin ? "round-robin" : "locality", "nodes", nodes, "jobs",
			 ctl__jobs_status(c));
}

/*
 * The join's answer. A node gets the SHA-256 of the admin token, never the
 * token: its gateway checks an admin bearer against the hash (docs/SECURITY.md).
 */
json_t *ctl__join_reply(struct ctl *c, uint32_t rank, json_t *jobs, json_t *verdicts)
{
	struct cnode *nd = &c->nodes[rank];

	return json_pack("{s:b, s:i, s:i, s:s, s:s, s:i, s:o, s:o, s:s?}", "ok", 1, "rank",
			 (json_int_t)rank, "epoch", (json_int_t)nd->epoch, "session", nd->session,
			 "admin_sha256", c->admin_sha256, "heartbeat_ms",
			 (json_int_t)c->o->heartbeat_ms, "jobs", jobs, "holds",
			 verdicts ? verdicts : json_array(), "crl", c->crl_pem);
}

/*
 * Who may ask what: a link without a verified certificate may only fetch the
 * CA certificate and enrol; a node's other requests carry the session of
 * its join (a request without one is a 410: the node joins again).
 */
static json_t *gate(struct ctl *c, struct ctl_event *ev, const char *op)
{
	bool open_op = op && (!strcmp(op, "cluster_ca") || !strcmp(op, "enroll"));
	int rank;

	if (open_op)
		return NULL;
	if (!ev->verified)
		return ctl__err_reply(401, "this link has no valid cluster certificate (none, another "
					   "CA's, or out of date): it may only enrol (tributary node "
					   "--join-token)");
	if (!op || !strcmp(op, "join"))
		return NULL;
	rank = ctl__session_rank(c, ev->hdr);
	if (rank < 0) {
		/* "rejoin": the node's, never its client's (rt_agent.c on_reply). */
		json_t *r = ctl__err_reply(410, "unknown or drained node: join again");

		json_object_set_new(r, "rejoin", json_true());
		return r;
	}
	/* A request that names its node names the session's (a heartbeat: "name"). */
	if ((!strcmp(op, "heartbeat") &&
	     strcmp(ctl__jstr(ev->hdr, "name", ""), c->nodes[rank].name)) ||
	    (json_object_get(ev->hdr, "node") &&
	     strcmp(ctl__jstr(ev->hdr, "node", ""), c->nodes[rank].name)))
		return ctl__err_reply(403, "the node named is not the node of this session");
	return NULL;
}

static void on_request(struct ctl *c, struct ctl_event *ev)
{
	const char *op = json_string_value(json_object_get(ev->hdr, "op"));
	const void *payload = NULL;
	size_t plen = 0;
	json_t *rep = gate(c, ev, op);

	if (rep)
		;
	else if (!op)
		rep = ctl__err_reply(400, "no op");
	else if (!strcmp(op, "cluster_ca"))
		ctl__on_cluster_ca(c, &rep);
	else if (!strcmp(op, "enroll"))
		ctl__on_enroll(c, ev, &rep);
	else if (!strcmp(op, "join"))
		on_join(c, ev, &rep);
	else if (!strcmp(op, "heartbeat"))
		on_heartbeat(c, ev, &rep);
	else if (!strcmp(op, "job_create"))
		ctl__on_job_create(c, ev, &rep);
	else if (!strcmp(op, "accept") && ctl__reconciling(c))
		rep = ctl__err_reply(503, "the controller restarted and waits for its nodes to "
				     "report what they hold; retry shortly");
	else if (!strcmp(op, "accept"))
		ctl__on_accept(c, ev, &rep);
	else if (!strcmp(op, "release"))
		ctl__on_release(c, ev, &rep);
	else if (!strcmp(op, "model_done"))
		ctl__on_model_done(c, ev, &rep);
	else if (!strcmp(op, "secagg_model"))
		ctl__on_secagg_model(c, ev, &rep);
	else if (!strcmp(op, "model_put"))
		ctl__on_model_put(c, ev, &rep);
	else if (!strcmp(op, "round_get"))
		ctl__on_round_get(c, ev, &rep);
	else if (!strcmp(op, "task"))
		ctl__on_task(c, ev, &rep);
	else if (!strcmp(op, "rounds_list"))
		ctl__on_rounds_list(c, ev, &rep);
	else if (!strcmp(op, "evaluation"))
		ctl__on_evaluation(c, ev, &rep);
	else if (!strcmp(op, "status"))
		on_status(c, &rep);
	else if (!strcmp(op, "revoke"))
		ctl__on_revoke(c, ev, &rep);
	else if (!strcmp(op, "pause"))
		ctl__on_pause(c, ev, &rep);
	else if (!strcmp(op, "job_delete"))
		ctl__on_job_delete(c, ev, &rep);
	else if (!strcmp(op, "sync"))
		ctl__on_sync(c, ev, &rep, &payload, &plen);
	else
		rep = ctl__err_reply(400, "unknown op");
	if (ctl_wire_reply(c->w, ev, rep, payload, plen))
		trib_warn("controller: could not answer %s", op ? op : "?");
	json_decref(rep);
}

static void check_heartbeats(struct ctl *c)
{
	uint64_t now = trib_now_ns(), limit = (uint64_t)c->o->dead_after_ms * 1000000ull;

	for (uint32_t i = 0; i < c->nnodes; i++)
		if (c->nodes[i].live && now - c->nodes[i].last_ns > limit)
			drain_now(c, i);
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

/* Every event the wire has queued. */
static void wire_drain(struct ctl *c)
{
	struct ctl_event *ev;

	while ((ev = ctl_wire_next(c->w))) {
		if (ev->kind == CTL_EV_REQUEST)
			on_request(c, ev);
		else if (ev->kind == CTL_EV_FAIL)
			trib_debug("controller: a message to a node failed: %s",
				   strerror(-ev->err));
		else if (json_is_false(json_object_get(ev->hdr, "ok")))
			trib_warn("controller: a node answered: %s",
				  json_string_value(json_object_get(ev->hdr, "error")));
		ctl_event_free(c->w, ev);
	}
}

/* Until SIGINT or SIGTERM: the wire's events, the signals, and a tick for heartbeats. */
static void run_loop(struct ctl *c)
{
	uint64_t last_check = 0;

	while (!c->stop_sig) {
		struct pollfd pfd[2] = {
		    {.fd = ctl_wire_fd(c->w), .events = POLLIN},
		    {.fd = c->sfd, .events = POLLIN},
		};
		uint64_t cnt;
		int sig;

		if (poll(pfd, 2, CTL_TICK_MS) > 0 && (pfd[0].revents & POLLIN) &&
		    read(pfd[0].fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
			trib_warn("controller: eventfd: %s", strerror(errno));
		wire_drain(c);
		/* A signal stops the loop once the events already queued are answered. */
		while ((sig = trib_signal_read(c->sfd)) > 0)
			c->stop_sig = sig;
		if (sig < 0)
			trib_warn("controller: signalfd: %s", strerror(-sig));
		if (trib_now_ns() - last_check > CTL_TICK_MS * 1000000ull) {
			last_check = trib_now_ns();
			check_heartbeats(c);
			ctl__pki_tick(c, drain_now);
			ctl__xstate_tick(c);
			ctl__jobs_deadline_tick(c);
		}
	}
	trib_info("signal %d: controller stopping", c->stop_sig);
}

/* The data directory, the admin token, the store, old model files, the jobs. */
static int ctl_open_state(struct ctl *c)
{
	const struct ctl_cluster_opts *o = c->o;
	char path[PATH_MAX];
	int err;

	err = trib_mkdir_p(o->data_dir, 0700);
	if (err) {
		trib_error("%s: %s", o->data_dir, strerror(-err));
		return err;
	}
	/* Before anything is written: what killed writes left behind goes (logged per job). */
	trib_store_sweep(o->data_dir, NULL);
	err = admin_token(c);
	if (err)
		return err;
	snprintf(path, sizeof(path), "%s/controller.db", o->data_dir);
	err = ctl_store_open(path, &c->store);
	if (err) {
		trib_error("%s: %s", path, strerror(-err));
		return err;
	}
	err = ctl__pki_open(c);
	if (err)
		goto err_close_store;
	err = ctl_models_migrate(o->data_dir, c->store);
	if (err) {
		trib_error("%s: the controller did not start: its model files could not all be "
			   "converted to safetensors (see above)",
			   o->data_dir);
		goto err_close_store;
	}
	err = ctl__jobs_load(c);
	if (err) {
		trib_error("%s: the controller did not start: its jobs could not be loaded (see "
			   "above)",
			   o->data_dir);
		goto err_free_jobs;
	}
	err = ctl__xstate_load(c);
	if (err)
		goto err_free_jobs;
	return 0;

err_free_jobs:
	ctl__jobs_free(c);
err_close_store:
	ctl__pki_close(c);
	ctl_store_close(c->store);
	c->store = NULL;
	return err;
}

int ctl_cluster_run(const struct ctl_cluster_opts *o)
{
	const int sigs[] = {SIGINT, SIGTERM};
	char ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
	struct ctl_wire_tls tls;
	struct ctl c;
	int err;

	memset(&c, 0, sizeof(c));
	c.o = o;
	c.sfd = -1;
	if (ctl_open_state(&c))
		return 1;
	/* Before the wire: nng's threads must start with these signals blocked. */
	err = trib_signal_open(sigs, sizeof(sigs) / sizeof(sigs[0]), &c.sfd);
	if (err) {
		trib_error("controller: signalfd: %s", strerror(-err));
		goto err_free_state;
	}
	ctl__pki_wire(&c, &tls, ca, crt, key, sizeof(ca));
	err = ctl_wire_open_tls(o->listen, &tls, &c.w);
	if (err)
		goto err_close_signal;
	signal(SIGPIPE, SIG_IGN);
	trib_info("controller listening on %s (mutual TLS, CA %s; placement: %s; nodes drained after %u ms without "
		  "a heartbeat)",
		  o->listen, ca, o->round_robin ? "round-robin" : "locality", o->dead_after_ms);
	run_loop(&c);
	ctl__xstate_save(&c);
	ctl_wire_close(c.w);
err_close_signal:
	close(c.sfd);
err_free_state:
	ctl__jobs_free(&c);
	for (uint32_t i = 0; i < c.nnodes; i++)
		trib_free(c.nodes[i].recent);
	ctl__pki_close(&c);
	ctl_store_close(c.store);
	return err ? 1 : 0;
}
