// SPDX-License-Identifier: MIT
/*
 * GET /v1/jobs/{job}/task, the job spec's "client_config" and "selection", and the update's
 * "no task" check (issue 15). The per-round state lives in node/rt_select.c; this file is the
 * HTTP side: who may ask, what the answer says, which spec is refused and why.
 *
 * In a cluster the controller counts the tasks (controller/ctl_select.c) and checks an
 * update's task when it counts the update: the gateway asks it (the task_get hook) and
 * answers in the same words (rt_api_task_answer).
 */
#include "api_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "trib_cred.h"

/* --- the job spec --- */

int rt__api_def_task(json_t *o, struct rt_job_def *def, bool clustered, char *msg, size_t cap)
{
	json_t *cc = json_object_get(o, "client_config"), *sel = json_object_get(o, "selection");
	json_t *k, *f, *cpr = json_object_get(o, "clients_per_round"), *x;
	json_t *ca = json_object_get(o, "client_auth"), *alg = json_object_get(o, "algorithm");
	const char *key;
	double fv = 1.0;

	if (cc) {
		int err = rt_client_config_check(cc, msg, cap);

		if (err)
			return err == -ENOMEM ? 500 : 400;
		def->spec.client_config = cc;
	}
	if (!sel)
		return 0;
	if (!json_is_object(sel)) {
		snprintf(msg, cap, "%s", "selection: an object {\"per_round\": K, \"overcommit\": f}");
		return 400;
	}
	json_object_foreach(sel, key, x)
		if (strcmp(key, "per_round") && strcmp(key, "overcommit")) {
			snprintf(msg, cap, "selection.%.64s: unknown field (per_round, overcommit)",
				 key);
			return 400;
		}
	k = json_object_get(sel, "per_round");
	f = json_object_get(sel, "overcommit");
	if (!json_is_integer(k) || json_integer_value(k) < 1 || json_integer_value(k) > 1000000) {
		snprintf(msg, cap, "selection.per_round: %s; an integer from 1 to 1000000 (the "
			 "updates that close a round)", json_is_integer(k) ? "out of range" :
			 k ? "not an integer" : "required");
		return 400;
	}
	if (f && (!json_is_number(f) || !(json_number_value(f) >= 1.0) ||
		  !(json_number_value(f) <= 4.0))) {
		char got[32] = "not a number";

		if (json_is_number(f))
			snprintf(got, sizeof(got), "%g", json_number_value(f));
		snprintf(msg, cap, "selection.overcommit: %s; a number from 1.0 to 4.0 (tasks "
			 "handed out per round = ceil(per_round x overcommit))", got);
		return 400;
	}
	if (f)
		fv = json_number_value(f);
	if (cpr && !json_equal(cpr, k)) {
		snprintf(msg, cap, "clients_per_round: with selection, per_round (%lld) is the "
			 "updates that close a round; leave clients_per_round out or make it equal",
			 (long long)json_integer_value(k));
		return 400;
	}
	if (!json_is_string(ca) || strcmp(json_string_value(ca), "required")) {
		snprintf(msg, cap, "%s", "selection: needs \"client_auth\": \"required\" (a task "
			 "goes to a client identity; mint client tokens with POST "
			 "/v1/jobs/{job}/clients)");
		return 400;
	}
	if (json_is_string(alg) && !strcmp(json_string_value(alg), "fedbuff")) {
		/* FedBuff has no rounds to hand tasks for: a version every buffer_size updates. */
		snprintf(msg, cap, "%s", "selection: not with fedbuff (it has no rounds, only "
			 "buffers of buffer_size updates; its clients need no task)");
		return 400;
	}
	(void)clustered; /* a cluster's tasks are the controller's count (ctl_select.c) */
	/* clients_per_round becomes K: the rest of the parser checks it as given. */
	if (!cpr && json_object_set(o, "clients_per_round", k)) {
		snprintf(msg, cap, "%s", "out of memory");
		return 500;
	}
	def->spec.sel_per_round = (uint32_t)json_integer_value(k);
	def->spec.sel_overcommit = fv;
	return 0;
}

/* --- status --- */

void rt__api_task_status(const struct rt_node *n, const struct rt_job *j, json_t *o)
{
	json_t *cfg = rt_job_round_config(j, j->round), *sel;

	if (cfg)
		json_object_set_new(o, "client_config", cfg);
	if (!j->sel.per_round)
		return;
	sel = json_pack("{s:I, s:f, s:I}", "per_round", (json_int_t)j->sel.per_round,
			"overcommit", j->sel.overcommit, "tasks_max", (json_int_t)j->sel.max);
	/* A cluster's count is the controller's: GET /v1/cluster shows it, not this node. */
	if (sel && !n->clustered)
		json_object_set_new(sel, "tasks_out", json_integer(rt_select_tasks_out(j)));
	json_object_set_new(o, "selection", sel);
}

/* --- an update without a task --- */

bool rt__api_task_admit(struct rt_conn *c, struct rt_job *j, uint32_t round)
{
	char msg[256];

	/* A cluster: the controller checks it when it counts the update (ctl__task_refused). */
	if (!j->sel.per_round || API(c)->clustered || rt_select_has_task(j, R(c)->client, round))
		return true;
	snprintf(msg, sizeof(msg), "no task for round %u: GET /v1/jobs/%s/task first (this job "
		 "selects %u of its clients a round; only they submit)", round, j->name,
		 j->sel.max);
	rt__api_reject(c, RT_REJ_NO_TASK, 409, msg, j->round, NULL);
	return false;
}

/* --- GET /v1/jobs/{job}/task --- */

/* Seconds a client told to wait should wait: about half a round, 1 to 30. */
static uint32_t wait_s(const struct rt_job *j)
{
	uint64_t s = j->last_round_ms / 2000;

	return s < 1 ? 1 : s > 30 ? 30 : (uint32_t)s;
}

static void answer_wait(struct rt_conn *c, const struct rt_job *j)
{
	char extra[48];
	uint32_t s = wait_s(j);

	snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", s);
	rt__api_respond_json(c, 200, json_pack("{s:s, s:I, s:I}", "action", "wait", "round",
					       (json_int_t)j->round, "retry_after_s",
					       (json_int_t)s), extra);
}

/*
 * Who asks: a client token of @j (its id into @client), or the job's token
 * (@client ""); else answered (401/403) and false.
 */
static bool task_auth(struct rt_conn *c, const struct rt_job *j,
		      char client[TRIB_CRED_CLIENT_MAX + 1])
{
	const char *tok;
	int err;

	client[0] = '\0';
	if (!rt_http_bearer(&c->req, &tok) && trib_cred_is_client_token(tok)) {
		err = j->cred.has_key ? trib_cred_verify(j->cred.key, j->name, tok,
							 (uint64_t)time(NULL), client, NULL) :
					-EACCES;
		if (!err && rt_job_revoked(j, client))
			err = -EKEYREVOKED;
		if (!err)
			return true;
		rt__api_reject(c, RT_REJ_AUTH, 401, err == -EKEYEXPIRED ? "client token expired" :
			       err == -EKEYREVOKED ? "client token revoked" :
			       "client token not valid for this job", -1, NULL);
		return false;
	}
	if (!rt__api_require_job(c, j))
		return false;
	if (j->sel.per_round) {
		/* Not an update: answered, not counted among update refusals. */
		rt_conn_error(c, 403, "this job selects clients: a task goes to a client identity; "
			      "ask with a client token (POST /v1/jobs/{job}/clients mints one)", -1,
			      NULL);
		return false;
	}
	return true;
}

/* The task of round @round for @client ("": the job's token): its config, deadline and id. */
static void answer_train(struct rt_conn *c, const struct rt_job *j, const char *client,
			 uint32_t round)
{
	char task[48];
	json_t *cfg, *ans;

	cfg = rt_job_round_config(j, round);
	if (!cfg && j->sel.client_config) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	snprintf(task, sizeof(task), "%u:%s", round, client[0] ? client : "job");
	ans = json_pack("{s:s, s:I, s:I, s:o, s:o, s:s}", "action", "train", "round",
			(json_int_t)round, "version", (json_int_t)round, "config",
			cfg ? cfg : json_object(), "deadline_s", j->round_timeout_s ?
			json_integer(j->round_timeout_s) : json_null(), "task", task);
	/*
	 * fedprox's mu goes with every task: a client credential cannot read the job's status,
	 * where it is published too, and the client must add the term to its local loss.
	 */
	if (ans && !strcmp(j->algo.name, "fedprox")) {
		/* As the status shows it (the shortest decimal that reads back to the float). */
		json_t *par = rt_algo_json(&j->algo);
		json_t *mu = par ? json_object_get(par, "proximal_mu") : NULL;

		if (!mu || json_object_set(ans, "proximal_mu", mu)) {
			json_decref(ans);
			ans = NULL;
		}
		json_decref(par);
	}
	if (!ans) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt__api_respond_json(c, 200, ans, NULL);
}

void rt__api_handle_task(struct rt_conn *c, struct rt_job *j)
{
	char client[TRIB_CRED_CLIENT_MAX + 1];
	bool granted = true;
	int err;

	if (!task_auth(c, j, client))
		return;
	if (rt_job_state(j) == RT_JOB_DONE) {
		rt__api_respond_json(c, 200, json_pack("{s:s, s:I}", "action", "done", "rounds",
						       (json_int_t)j->completed), NULL);
		return;
	}
	/*
	 * Paused, past its last round (its model still being written), or the model round r
	 * starts from is not written yet: nothing to train on now.
	 */
	if (rt_job_state(j) == RT_JOB_PAUSED || rt_job_rounds_over(j) || j->completed < j->round) {
		answer_wait(c, j);
		return;
	}
	if (j->sel.per_round && API(c)->clustered) {
		/* Counted cluster-wide: the controller answers (rt_api_task_answer). */
		API(c)->cluster.task_get(API(c)->cluster.ctx, c, j, client);
		return;
	}
	if (j->sel.per_round) {
		err = rt_select_task(N(c), j, client, &granted);
		if (err) {
			rt_conn_error(c, 503, "could not keep the task (see the server log); retry",
				      -1, "Retry-After: 1\r\n");
			return;
		}
	}
	if (!granted) {
		answer_wait(c, j);
		return;
	}
	answer_train(c, j, client, j->round);
}

void rt_api_task_answer(struct rt_conn *c, struct rt_job *j, const char *client,
			enum rt_api_task_action act, uint32_t round)
{
	switch (act) {
	case RT_API_TASK_DONE:
		rt__api_respond_json(c, 200, json_pack("{s:s, s:I}", "action", "done", "rounds",
						       (json_int_t)round), NULL);
		return;
	case RT_API_TASK_TRAIN:
		/*
		 * The model the round starts from has not reached this node yet (it
		 * follows the close): the task is the client's at the controller, and
		 * the next ask, here or elsewhere, gets it again.
		 */
		if (j->completed >= round) {
			answer_train(c, j, client, round);
			return;
		}
		break;
	case RT_API_TASK_WAIT:
		break;
	}
	answer_wait(c, j);
}
