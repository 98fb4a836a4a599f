// SPDX-License-Identifier: MIT
/*
 * Restarts in a cluster. The controller keeps the nodes it knew and each
 * job's rounds in flight in SQLite (schema v4, ctl_store_x.c), with the
 * clients counted in each (v5: one update per client per round holds
 * across its restart; the nodes' reports add the clients of updates
 * counted since the last write): after its own
 * restart it reloads them and counts no update until every node it knew has
 * joined again and reported what its arena holds (or a grace period passed:
 * then a node not back is drained, its updates lost). A node that restarts
 * on the same machine re-attaches its arena and reports the same way. The
 * nodes' reports are the truth: a 202 is given only after the update's
 * record is committed in its node's arena, so what a node holds is every
 * update it acknowledged; a count without a record never got its 202.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl_daemon.h"
#include "ctl_store.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_time.h"

/* flora: slots out beyond the count (given back), as the store keeps it: never less. */
static uint32_t slot_gap(const struct cround *cr)
{
	uint32_t now = cr->slots > cr->count ? cr->slots - cr->count : 0;

	return now > cr->slot_gap ? now : cr->slot_gap;
}

/* What the store has of a round: a change in any of these writes it again. */
static uint64_t round_fp(const struct ctl *c, const struct cround *cr)
{
	uint64_t h = 1469598103934665603ull;
	uint64_t v[6] = {(uint64_t)cr->state + 1, cr->count, (uint64_t)(cr->top + 1),
			 cr->lost_updates, c->nnodes, slot_gap(cr)};

	for (int i = 0; i < 6; i++)
		h = (h ^ v[i]) * 1099511628211ull;
	for (uint32_t i = 0; i < c->nnodes; i++)
		h = (h ^ ((uint64_t)cr->folded[i] << 32 | cr->lost_n[i])) * 1099511628211ull;
	return h | 1; /* 0: never written */
}

static json_t *round_detail(const struct ctl *c, const struct cround *cr)
{
	json_t *folded = json_array(), *landed = json_array(), *lost = json_array();

	for (uint32_t i = 0; i < c->nnodes; i++) {
		json_array_append_new(folded, json_integer(cr->folded[i]));
		json_array_append_new(landed, json_integer(cr->landed[i]));
		if (cr->lost[i])
			json_array_append_new(lost, json_pack("[i, i, i, i]", (json_int_t)i,
							      (json_int_t)cr->lost_epoch[i],
							      (json_int_t)cr->lost_n[i],
							      (json_int_t)cr->count_at_loss[i]));
	}
	return json_pack("{s:i, s:i, s:o, s:o, s:o, s:i}", "count", (json_int_t)cr->count, "top",
			 (json_int_t)cr->top, "folded", folded, "landed", landed, "lost", lost,
			 "slot_gap", (json_int_t)slot_gap(cr));
}

/* What the store has of a round's clients: independent of the order they were counted in. */
static uint64_t clients_fp(const struct cround *cr)
{
	uint64_t sum = json_object_size(cr->clients);
	const char *id;
	json_t *v;

	json_object_foreach(cr->clients, id, v)
	{
		uint64_t h = 1469598103934665603ull ^ (uint64_t)json_integer_value(v);

		for (const char *p = id; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ull;
		sum += h * 0x9e3779b97f4a7c15ull;
	}
	return sum | 1; /* 0: never written */
}

static void clients_save(struct cjob *j, struct ctl *c, struct cround *cr)
{
	uint64_t fp = clients_fp(cr);
	size_t n = json_object_size(cr->clients), k = 0;
	const char **ids = n ? trib_calloc(n, sizeof(*ids)) : NULL;
	uint32_t *ranks = n ? trib_calloc(n, sizeof(*ranks)) : NULL;
	const char *id;
	json_t *v;
	int err = -ENOMEM;

	if (cr->saved_cfp == fp)
		goto out;
	if (n && (!ids || !ranks))
		goto out_warn;
	json_object_foreach(cr->clients, id, v)
	{
		ids[k] = id;
		ranks[k++] = (uint32_t)json_integer_value(v);
	}
	err = ctl_store_xround_clients_put(c->store, j->db_id, cr->round, ids, ranks, n);
	if (!err)
		cr->saved_cfp = fp;
out_warn:
	if (err)
		trib_warn("job %s round %u: keeping its %zu clients in controller.db: %s (again "
			  "next tick)",
			  j->name, cr->round, n, strerror(-err));
out:
	trib_free(ids);
	trib_free(ranks);
}

static void round_save(struct ctl *c, struct cjob *j, struct cround *cr)
{
	uint64_t fp = round_fp(c, cr);
	json_t *d;
	char *s;
	int err;

	/* The round's row first: a reload takes the clients of rounds it has. */
	if (cr->saved_fp == fp) {
		clients_save(j, c, cr);
		return;
	}
	d = round_detail(c, cr);
	s = d ? trib_json_dumps(d, JSON_COMPACT) : NULL;
	json_decref(d);
	err = s ? ctl_store_xround_put(c->store, j->db_id, cr->round, cr->state, s) : -ENOMEM;
	trib_free(s);
	if (err) {
		trib_warn("job %s round %u: keeping its state in controller.db: %s (again next "
			  "tick)",
			  j->name, cr->round, strerror(-err));
		return;
	}
	cr->saved_fp = fp;
	clients_save(j, c, cr);
}

void ctl__node_save(struct ctl *c, uint32_t rank)
{
	const struct cnode *nd = &c->nodes[rank];
	int err = ctl_store_xnode_put(c->store, rank, nd->name, nd->addr, nd->epoch);

	if (err)
		trib_warn("node %s: recording it in controller.db: %s; a controller restart "
			  "would not wait for it",
			  nd->name, strerror(-err));
}

static int node_loaded(void *ctx, uint32_t rank, const char *name, const char *addr, uint32_t epoch)
{
	struct ctl *c = ctx;
	struct cnode *nd;

	if (rank >= CTL_MAX_NODES || !name || !addr)
		return -EINVAL;
	nd = &c->nodes[rank];
	snprintf(nd->name, sizeof(nd->name), "%s", name);
	snprintf(nd->addr, sizeof(nd->addr), "%s", addr);
	nd->epoch = epoch;
	nd->used = true;
	nd->awaited = true;
	if (rank + 1 > c->nnodes)
		c->nnodes = rank + 1;
	if (epoch > c->epochs)
		c->epochs = epoch; /* a new run never takes an old run's number */
	return 0;
}

static void detail_load(struct cround *cr, const json_t *d)
{
	const json_t *folded = json_object_get(d, "folded"), *landed = json_object_get(d, "landed");
	json_t *e;
	size_t i;

	cr->top = (int)json_integer_value(json_object_get(d, "top"));
	/* flora: the count comes again from the nodes; count + gap bounds the slots out */
	cr->slot_gap = (uint32_t)json_integer_value(json_object_get(d, "slot_gap"));
	for (i = 0; i < json_array_size(folded) && i < CTL_MAX_NODES; i++) {
		cr->folded[i] = (uint32_t)json_integer_value(json_array_get(folded, i));
		cr->landed[i] = (uint32_t)json_integer_value(json_array_get(landed, i));
		cr->count += cr->folded[i];
	}
	json_array_foreach(json_object_get(d, "lost"), i, e)
	{
		uint32_t r = (uint32_t)json_integer_value(json_array_get(e, 0));

		if (r >= CTL_MAX_NODES)
			continue;
		cr->lost[r] = true;
		cr->lost_epoch[r] = (uint32_t)json_integer_value(json_array_get(e, 1));
		cr->lost_n[r] = (uint32_t)json_integer_value(json_array_get(e, 2));
		cr->count_at_loss[r] = (uint32_t)json_integer_value(json_array_get(e, 3));
		cr->lost_updates += cr->lost_n[r];
	}
}

static int round_loaded(void *ctx, int64_t job_id, uint32_t round, int state, const char *detail)
{
	struct ctl *c = ctx;
	struct cjob *j = ctl__job_by_id(c, job_id);
	struct cround *cr;
	json_t *d = NULL;

	/* A round whose model exists is done; its row goes (ctl_store_xround_prune()). */
	if (!j || round < j->completed || (state != CR_OPEN && state != CR_CLOSED))
		return 0;
	if (trib_json_loadb(detail, strlen(detail), 0, &d, NULL) || !json_is_object(d)) {
		json_decref(d);
		trib_error("job %s round %u: its state in controller.db cannot be read; the round "
			   "starts again from what the nodes report",
			   j->name, round);
		d = json_object();
	}
	cr = ctl__round_new(j, round);
	if (!cr) {
		json_decref(d);
		return -ENOMEM;
	}
	cr->state = state;
	detail_load(cr, d);
	json_decref(d);
	cr->resend_close = state == CR_CLOSED;
	if (state == CR_CLOSED && round + 1 > j->round)
		j->round = round + 1;
	if (state == CR_OPEN && round > j->round)
		j->round = round;
	trib_info("job %s round %u: reloaded %s with %u updates on record (%u lost); the nodes' "
		  "reports decide",
		  j->name, round, state == CR_OPEN ? "open" : "closed", cr->count,
		  cr->lost_updates);
	return 0;
}

/* A client counted in a reloaded round: a second update of it is a 409 after the restart too. */
static int client_loaded(void *ctx, int64_t job_id, uint32_t round, const char *client,
			 uint32_t rank)
{
	struct ctl *c = ctx;
	struct cjob *j = ctl__job_by_id(c, job_id);
	struct cround *cr = j ? j->rounds : NULL;

	while (cr && cr->round != round)
		cr = cr->next;
	if (!cr || !client || !*client || rank >= CTL_MAX_NODES)
		return 0; /* a round that is done, or not reloaded (said above) */
	if (!cr->clients)
		cr->clients = json_object();
	if (!cr->clients || json_object_set_new(cr->clients, client, json_integer(rank)))
		return -ENOMEM;
	cr->saved_cfp = clients_fp(cr);
	return 0;
}

int ctl__xstate_load(struct ctl *c)
{
	uint32_t awaited = 0;
	int err;

	err = ctl_store_xnode_list(c->store, node_loaded, c);
	if (!err)
		err = ctl_store_xround_list(c->store, round_loaded, c);
	if (!err)
		err = ctl_store_xround_clients_list(c->store, client_loaded, c);
	for (struct cjob *j = c->jobs; !err && j; j = j->next)
		for (struct cround *cr = j->rounds; cr; cr = cr->next)
			if (ctl__round_clients(cr))
				trib_info("job %s round %u: %u clients on record (a second update of "
					  "one is a 409)",
					  j->name, cr->round, ctl__round_clients(cr));
	if (err) {
		trib_error("controller.db: the cluster's nodes and rounds in flight could not be "
			   "loaded: %s",
			   strerror(-err));
		return err;
	}
	/* Rows of rounds whose model was written before their row went: they go now. */
	for (struct cjob *j = c->jobs; j; j = j->next)
		if (ctl_store_xround_prune(c->store, j->db_id, j->completed))
			trib_warn("job %s: forgetting the rounds before %u in controller.db failed",
				  j->name, j->completed);
	for (uint32_t i = 0; i < c->nnodes; i++)
		awaited += c->nodes[i].awaited;
	if (awaited) {
		/*
		 * Nodes heartbeat every heartbeat_ms and join again at once on a 410. A node whose
		 * new connection hangs before it is up dials again after 2 s without an answer
		 * (runtime/cluster rt_agent_link.c relink; nng 1.5 alone waits 10 s): the slack
		 * lets that node back in before it is drained with the updates it acknowledged.
		 */
		uint64_t ms = 2ull * c->o->dead_after_ms + CTL_RECONCILE_SLACK_MS;

		c->reconcile_until_ns = trib_now_ns() + ms * 1000000ull;
		trib_info("controller restarted: waiting up to %llu ms for the %u nodes it knew to "
			  "join again and report what they hold (no update is counted meanwhile)",
			  (unsigned long long)ms, awaited);
	}
	return 0;
}

/* The holding of @hdr for (job @id, round @r): updates, or 0; *@ids its client ids (or NULL). */
static uint32_t held(const json_t *holds, int64_t id, uint32_t r, const json_t **ids)
{
	json_t *e;
	size_t i;

	*ids = NULL;
	json_array_foreach(holds, i, e)
	{
		if (json_integer_value(json_array_get(e, 0)) == id &&
		    (uint32_t)json_integer_value(json_array_get(e, 1)) == r) {
			*ids = json_array_get(e, 4);
			return (uint32_t)json_integer_value(json_array_get(e, 2));
		}
	}
	return 0;
}

/*
 * The clients of the updates node @rank holds in @cr, kept: counted in the
 * round again (the node was drained, or the controller restarted before it
 * wrote them), so that a second update of one of them is a 409.
 */
static void clients_held(struct cround *cr, const json_t *ids, uint32_t rank)
{
	const json_t *v;
	size_t i;

	json_array_foreach(ids, i, v)
	{
		const char *id = json_string_value(v);

		if (!id || !*id || json_object_get(cr->clients, id))
			continue;
		if (!cr->clients)
			cr->clients = json_object();
		if (!cr->clients || json_object_set_new(cr->clients, id, json_integer(rank)))
			trib_warn("round %u: client %s not recorded (out of memory)", cr->round, id);
	}
}

/* Round @cr of @j: node @rank holds @h updates of it. Returns whether it keeps them. */
static bool reconcile_round(struct ctl *c, struct cjob *j, struct cround *cr, uint32_t rank,
			    uint32_t h)
{
	const char *name = c->nodes[rank].name;
	uint32_t before = cr->folded[rank];

	if (cr->lost[rank] && (cr->state == CR_CLOSED || cr->count != cr->count_at_loss[rank])) {
		/*
		 * It completes (or completed) without them; or updates were counted
		 * since they were declared lost, and clients told to resend may have
		 * sent these again: counting both would count one update twice.
		 */
		if (h)
			trib_warn(
			    "job %s round %u: node %s is back with %u updates, but %s: they "
			    "stay lost",
			    j->name, cr->round, name, h,
			    cr->state == CR_CLOSED
				? "the round closed without them"
				: "updates were counted since they were declared lost (resends, "
				  "perhaps)");
		return false;
	}
	if (cr->lost[rank]) {
		/* Open still: what it acknowledged is back, not lost. */
		trib_info("job %s round %u: node %s is back with %u of the %u updates declared "
			  "lost: counted again",
			  j->name, cr->round, name, h, cr->lost_n[rank]);
		cr->lost_updates -= cr->lost_n[rank];
		cr->lost[rank] = false;
		cr->lost_n[rank] = 0;
	} else if (h != before) {
		trib_info("job %s round %u: node %s holds %u updates, %u were counted for it (%s)",
			  j->name, cr->round, name, h, before,
			  h < before ? "the rest never got their 202"
				     : "counted since the "
				       "controller last wrote the round");
	}
	cr->folded[rank] = h;
	cr->count = cr->count - before + h;
	if (cr->state == CR_CLOSED && (h != before || cr->top == (int)rank || h))
		cr->resend_close = true; /* new counts, a top that lost the sums it had, or an
					  * owner of a robust rule's range that lost its slices */
	return h > 0;
}

json_t *ctl__rejoin(struct ctl *c, uint32_t rank, const json_t *hdr)
{
	const json_t *holds = json_object_get(hdr, "holds");
	bool kept = !strcmp(ctl__jstr(hdr, "arena", ""), "kept");
	json_t *verdicts = json_array(), *e;
	size_t i;

	c->nodes[rank].awaited = false;
	if (!kept) {
		/* Its memory is gone (or it cannot tell): what it held is lost. */
		ctl__rounds_lose_node(c, rank);
		return verdicts;
	}
	for (struct cjob *j = c->jobs; j; j = j->next) {
		for (struct cround *cr = j->rounds; cr; cr = cr->next) {
			const json_t *ids;
			uint32_t h = held(holds, j->db_id, cr->round, &ids);
			bool keep;

			if (cr->state == CR_DONE || (!h && !cr->folded[rank] && !cr->lost[rank]))
				continue;
			keep = reconcile_round(c, j, cr, rank, h);
			if (keep)
				clients_held(cr, ids, rank);
			json_array_append_new(verdicts, json_pack("[I, i, b, i]", (json_int_t)j->db_id,
								  (json_int_t)cr->round, keep,
								  (json_int_t)h));
		}
	}
	/* Holdings of an open round the controller has no record of yet (not written). */
	json_array_foreach(holds, i, e)
	{
		struct cjob *j = ctl__job_by_id(c, json_integer_value(json_array_get(e, 0)));
		uint32_t r = (uint32_t)json_integer_value(json_array_get(e, 1));
		struct cround *cr;
		bool seen = false, keep;
		uint32_t h;

		for (cr = j ? j->rounds : NULL; cr; cr = cr->next)
			seen = seen || cr->round == r;
		if (seen)
			continue;
		h = (uint32_t)json_integer_value(json_array_get(e, 2));
		cr = j && r == j->round ? ctl__round_new(j, r) : NULL;
		keep = cr && reconcile_round(c, j, cr, rank, h);
		if (keep)
			clients_held(cr, json_array_get(e, 4), rank);
		json_array_append_new(
		    verdicts, json_pack("[I, i, b, i]", json_integer_value(json_array_get(e, 0)),
					(json_int_t)r, keep, (json_int_t)h));
	}
	return verdicts;
}

bool ctl__run_continues(struct ctl *c, uint32_t rank, const json_t *hdr)
{
	const struct cnode *nd = &c->nodes[rank];

	if (!nd->used || !nd->epoch || strcmp(ctl__jstr(hdr, "arena", ""), "kept"))
		return false;
	for (struct cjob *j = c->jobs; j; j = j->next)
		for (struct cround *cr = j->rounds; cr; cr = cr->next)
			if (cr->state != CR_DONE && cr->lost[rank] &&
			    cr->lost_epoch[rank] == nd->epoch)
				return false; /* its clients may resend: new 202s need a new run */
	return true;
}

/* The end of a reconciliation: nodes not back are drained; closed rounds are told again. */
static void reconcile_end(struct ctl *c)
{
	for (uint32_t i = 0; i < c->nnodes; i++) {
		if (!c->nodes[i].awaited)
			continue;
		c->nodes[i].awaited = false;
		trib_warn("node %s (rank %u) did not join again after the controller's restart: "
			  "its updates of rounds in flight are lost",
			  c->nodes[i].name, i);
		ctl__rounds_lose_node(c, i);
	}
	c->reconcile_until_ns = 0;
	trib_info("controller: reconciled with its nodes; counting updates again");
}

bool ctl__reconciling(struct ctl *c)
{
	bool waiting = false;

	if (!c->reconcile_until_ns)
		return false;
	for (uint32_t i = 0; i < c->nnodes; i++)
		waiting = waiting || c->nodes[i].awaited;
	if (waiting && trib_now_ns() <= c->reconcile_until_ns)
		return true;
	/* The last node is back (or the wait is over): updates count from now on. */
	reconcile_end(c);
	return false;
}

void ctl__xstate_save(struct ctl *c)
{
	for (struct cjob *j = c->jobs; j; j = j->next)
		for (struct cround *cr = j->rounds; cr; cr = cr->next)
			if (cr->state != CR_DONE)
				round_save(c, j, cr);
}

void ctl__xstate_tick(struct ctl *c)
{
	ctl__reconciling(c);
	for (struct cjob *j = c->jobs; j; j = j->next) {
		for (struct cround *cr = j->rounds; cr; cr = cr->next) {
			if (cr->state == CR_DONE) {
				if (cr->saved_fp &&
				    !ctl_store_xround_delete(c->store, j->db_id, cr->round))
					cr->saved_fp = 0;
				continue;
			}
			if (!c->reconcile_until_ns) {
				/* Counted again after a rejoin: a round may be full (or over). */
				if (cr->state == CR_OPEN && cr->count >= j->cpr) {
					ctl__round_close(c, j, cr);
				} else if (cr->state == CR_CLOSED && cr->resend_close) {
					cr->resend_close = false;
					ctl__round_reclose(c, j, cr);
				}
			}
			if (cr->state != CR_DONE)
				round_save(c, j, cr);
		}
	}
}
