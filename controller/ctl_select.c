// SPDX-License-Identifier: MIT
/*
 * Client selection across nodes (issue 15): a job's "selection" {per_round K, overcommit f}
 * hands out ceil(K x f) tasks a round (trib_select.h, the single node's rule), cluster-wide,
 * and takes updates only from clients holding a task of the round.
 *
 * Why here: a task is a count, and only the controller sees every gateway. A gateway asks
 * (op "task") for whichever client asked it; the controller grants from its open round, in
 * the store first (ctl_store_task.c: the cap is held inside the grant's transaction), and
 * only then answers. So a task a client heard of survives a kill -9 of the controller, and a
 * restarted controller hands out no second batch for the same round: the rows it finds count.
 *
 * Idempotent per client: the same client asking again, on any gateway, gets the task it
 * holds, not another one. The round still closes at K updates (cpr): the other tasks are the
 * over-commitment for stragglers, and their updates then get the round's 409 (stale).
 *
 * In memory: the clients holding a task of the open round (j->tasks), read from the store
 * the first time a round is asked about, so an update's check costs no SQL.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl_daemon.h"
#include "ctl_store.h"
#include "trib_cred.h"
#include "trib_log.h"
#include "trib_select.h"

void ctl__job_select_init(struct cjob *j, const json_t *o)
{
	const json_t *sel = json_object_get(o, "selection");
	const json_t *k = json_object_get(sel, "per_round"), *f = json_object_get(sel, "overcommit");

	j->sel_k = json_is_integer(k) && json_integer_value(k) > 0 &&
			   json_integer_value(k) <= UINT32_MAX ?
		       (uint32_t)json_integer_value(k) :
		       0;
	if (!j->sel_k)
		return;
	j->sel_f = json_is_number(f) ? json_number_value(f) : 1.0;
	j->sel_max = trib_select_max(j->sel_k, j->sel_f);
	/* The node's parser makes per_round the cpr; the body kept is the client's, without it. */
	if (!j->cpr)
		j->cpr = j->sel_k;
}

void ctl__job_select_fini(struct cjob *j)
{
	json_decref(j->tasks);
	j->tasks = NULL;
}

static int task_seen(void *ctx, const char *client)
{
	return json_object_set_new(ctx, client, json_true()) ? -ENOMEM : 0;
}

/* j->tasks holds round @r's (read from the store if it held another round's). 0 or -errno. */
static int tasks_at(struct ctl *c, struct cjob *j, uint32_t r)
{
	json_t *t;
	int err;

	if (j->tasks && j->tasks_round == r)
		return 0;
	t = json_object();
	if (!t)
		return -ENOMEM;
	err = ctl_store_task_list(c->store, j->db_id, r, task_seen, t);
	if (err) {
		json_decref(t);
		trib_error("job %s round %u: reading its tasks from controller.db: %s", j->name, r,
			   strerror(-err));
		return err;
	}
	json_decref(j->tasks);
	j->tasks = t;
	j->tasks_round = r;
	if (json_object_size(t))
		trib_info("job %s round %u: %zu task(s) on record", j->name, r, json_object_size(t));
	return 0;
}

static json_t *task_reply(const struct cjob *j, const char *client, const char *action,
			  const char *why)
{
	json_t *o = json_pack("{s:b, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "ok", 1, "job", j->name,
			      "client", client, "action", action, "round", (json_int_t)j->round,
			      "rounds", (json_int_t)j->completed, "tasks_out",
			      (json_int_t)(j->tasks && j->tasks_round == j->round ?
						   json_object_size(j->tasks) : 0),
			      "tasks_max", (json_int_t)j->sel_max);

	if (o && why)
		json_object_set_new(o, "why", json_string(why));
	return o;
}

void ctl__on_task(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = ctl__job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	const char *client = ctl__jstr(ev->hdr, "client", "");
	uint32_t out = 0;
	int got;

	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	if (!j->sel_k) {
		*rep = ctl__err_reply(400, "task: this job has no selection (its tasks are "
				      "advisory and answered by the node)");
		return;
	}
	if (!trib_cred_client_valid(client)) {
		*rep = ctl__err_reply(400, "task: client is a client token's id");
		return;
	}
	if (j->num_rounds && j->completed >= j->num_rounds) {
		*rep = task_reply(j, client, "done", NULL);
		return;
	}
	/*
	 * Nothing to train on now: paused; past the last round or between a close and its
	 * model (the next round starts from that model); or counts not reconciled yet after
	 * a restart (the open round may still close with what the nodes report).
	 */
	if (j->paused || (j->num_rounds && j->round >= j->num_rounds) || j->completed < j->round ||
	    ctl__reconciling(c)) {
		*rep = task_reply(j, client, "wait", j->paused ? "paused" : "no round open yet");
		return;
	}
	if (tasks_at(c, j, j->round)) {
		*rep = ctl__err_reply(503, "the controller could not read its tasks; retry");
		return;
	}
	if (json_object_get(j->tasks, client)) {
		*rep = task_reply(j, client, "train", NULL); /* asked again: the same task */
		return;
	}
	if (json_object_size(j->tasks) >= j->sel_max) {
		*rep = task_reply(j, client, "wait", "the round's tasks are out");
		return;
	}
	got = ctl_store_task_grant(c->store, j->db_id, j->round, client, j->sel_max, &out);
	if (got == -ENOSPC) {
		/* The store counts more than memory did: it is the truth; read it again. */
		ctl__job_select_fini(j);
		tasks_at(c, j, j->round);
		*rep = task_reply(j, client, "wait", "the round's tasks are out");
		return;
	}
	if (got < 0) {
		trib_error("job %s round %u: keeping a task for client %s: %s", j->name, j->round,
			   client, strerror(-got));
		*rep = ctl__err_reply(503, "the controller could not keep the task; retry");
		return;
	}
	/* Kept: what memory holds is a copy. If it cannot take it, it is read again next time. */
	if (json_object_set_new(j->tasks, client, json_true()))
		ctl__job_select_fini(j);
	if (got == 1 && out == j->sel_max)
		trib_info("job %s round %u: all %u tasks handed out (%u updates close it)", j->name,
			  j->round, j->sel_max, j->cpr);
	*rep = task_reply(j, client, "train", NULL);
}

bool ctl__task_refused(struct ctl *c, struct cjob *j, uint32_t r, const char *client,
		       json_t **rep)
{
	char msg[256];

	if (!j->sel_k)
		return false;
	if (client && *client) {
		if (tasks_at(c, j, r)) {
			*rep = ctl__err_reply(503, "the controller could not read its tasks; retry");
			return true;
		}
		if (json_object_get(j->tasks, client))
			return false;
	}
	snprintf(msg, sizeof(msg), "no task for round %u: GET /v1/jobs/%s/task first (this job "
		 "selects %u of its clients a round; only they submit)", r, j->name, j->sel_max);
	*rep = ctl__err_reply(409, msg);
	json_object_set_new(*rep, "round", json_integer(j->round));
	return true;
}

void ctl__select_status(struct ctl *c, struct cjob *j, json_t *jo)
{
	if (!jo || !j->sel_k)
		return;
	/* A store that cannot be read shows 0 out: the task op says why. */
	if (j->completed >= j->round)
		tasks_at(c, j, j->round);
	json_object_set_new(jo, "selection",
			    json_pack("{s:I, s:f, s:I, s:I}", "per_round", (json_int_t)j->sel_k,
				      "overcommit", j->sel_f, "tasks_out",
				      (json_int_t)(j->tasks && j->tasks_round == j->round ?
							   json_object_size(j->tasks) : 0),
				      "tasks_max", (json_int_t)j->sel_max));
}
