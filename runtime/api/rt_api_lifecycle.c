// SPDX-License-Identifier: MIT
/*
 * A job's lifecycle over HTTP (issue 15): "num_rounds" in the job spec, the
 * state in status, what an update of a done, paused or deleted job gets,
 * DELETE /v1/jobs/{job}[?purge=true], POST /v1/jobs/{job}/pause and /resume.
 */
#include "api_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "trib_alloc.h"
#include "trib_json.h"

#define NUM_ROUNDS_MAX 1000000u

int rt__api_life_parse(json_t *o, uint32_t *num_rounds, char *msg, size_t cap)
{
	json_t *v = json_object_get(o, "num_rounds");

	*num_rounds = 0;
	if (!v)
		return 0;
	/* A real (1e9, 2.0) is not an integer: JSON's integers only. */
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > (json_int_t)NUM_ROUNDS_MAX) {
		char *shown = trib_json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

		snprintf(msg, cap, "num_rounds: got %.40s; an integer from 1 to %u (the job is "
			 "done once that many models are made; leave it out for a job that never "
			 "ends)", shown ? shown : "?", NUM_ROUNDS_MAX);
		trib_free(shown);
		return 400;
	}
	*num_rounds = (uint32_t)json_integer_value(v);
	return 0;
}

void rt__api_life_json(json_t *o, const struct rt_job *j)
{
	json_object_set_new(o, "state", json_string(rt_job_state_name(rt_job_state(j))));
	if (j->num_rounds)
		json_object_set_new(o, "num_rounds", json_integer(j->num_rounds));
}

/* Answer @status with {"error": @msg, "state": @state}. */
static void life_error(struct rt_conn *c, int status, const char *msg, const char *state,
		       const char *extra)
{
	json_t *o = json_pack("{s:s, s:s}", "error", msg, "state", state);

	if (!o) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt__api_respond_json(c, status, o, extra);
}

bool rt__api_life_refuse(struct rt_conn *c, const struct rt_job *j, bool body_read)
{
	char msg[160];

	if (j->deleted) {
		snprintf(msg, sizeof(msg), "job '%s' was deleted", j->name);
		rt__api_reject(c, RT_REJ_NO_JOB, 404, msg, -1, NULL);
		return true;
	}
	if (rt_job_rounds_over(j)) {
		snprintf(msg, sizeof(msg), "job '%s' is done after %u rounds", j->name,
			 j->num_rounds);
		rt__api_count_reject(c, RT_REJ_ROUND, 410, msg);
		life_error(c, 410, msg, "done", NULL);
		return true;
	}
	/* A body admitted before the pause is kept: the round keeps what it has. */
	if (j->paused && !body_read) {
		snprintf(msg, sizeof(msg), "job '%s' is paused", j->name);
		rt__api_count_reject(c, RT_REJ_ROUND, 503, msg);
		life_error(c, 503, msg, "paused", "Retry-After: 5\r\n");
		return true;
	}
	return false;
}

/* Admin only: a job's or a client's token is known but not enough (403); else 401. */
static bool require_admin(struct rt_conn *c, const struct rt_job *j, const char *what)
{
	char msg[128];

	if (rt__api_auth_admin(c))
		return true;
	if (!rt__api_require_reader(c, j))
		return false; /* 401 answered */
	snprintf(msg, sizeof(msg), "%s takes the admin token (this token is the job's or a "
		 "client's)", what);
	rt__api_reject(c, RT_REJ_AUTH, 403, msg, -1, NULL);
	return false;
}

static bool single_node(struct rt_conn *c, const char *what)
{
	char msg[160];

	if (!API(c)->clustered)
		return true;
	snprintf(msg, sizeof(msg), "%s: not supported across nodes yet (a cluster's jobs are "
		 "the controller's; this is a single-node feature)", what);
	rt_conn_error(c, 400, msg, -1, NULL);
	return false;
}

void rt__api_handle_delete(struct rt_conn *c, struct rt_job *j)
{
	char val[8], name[sizeof(j->name)];
	bool purge = false;
	int err;

	if (!require_admin(c, j, "deleting a job"))
		return;
	if (API(c)->clustered && !API(c)->cluster.job_delete) {
		single_node(c, "DELETE /v1/jobs/{job}"); /* wiring without it: refused, named */
		return;
	}
	err = rt_http_query_get(c->req.query, "purge", val, sizeof(val));
	if (err != -ENOENT) {
		if (err || (strcmp(val, "true") && strcmp(val, "false"))) {
			rt_conn_error(c, 400, "purge: true (remove the job's model files too) or "
				      "false (the default: keep them under DATA_DIR/deleted/)",
				      -1, NULL);
			return;
		}
		purge = !strcmp(val, "true");
	}
	if (API(c)->clustered) {
		API(c)->cluster.job_delete(API(c)->cluster.ctx, c, j, purge);
		return;
	}
	snprintf(name, sizeof(name), "%s", j->name);
	err = rt_job_delete(N(c), j, purge);
	if (err) {
		rt_conn_error(c, 503, "could not delete the job (the store failed; see the server "
			      "log); nothing changed, retry", -1, "Retry-After: 1\r\n");
		return;
	}
	/* Long polls of its model are answered now; then it is freed once nothing holds it. */
	rt__api_unpark_job(API(c), j);
	rt_job_reap(N(c));
	rt__api_respond_json(c, 200, json_pack("{s:s, s:b, s:b}", "job", name, "deleted", 1,
					       "purged", purge), NULL);
}

void rt__api_handle_pause(struct rt_conn *c, struct rt_job *j, bool pause)
{
	char msg[160];

	if (!rt__api_auth_job(c, j)) {
		if (rt__api_require_reader(c, j))
			rt__api_reject(c, RT_REJ_AUTH, 403, pause ?
				       "pausing a job takes the admin or the job token" :
				       "resuming a job takes the admin or the job token", -1, NULL);
		return;
	}
	if (rt_job_state(j) == RT_JOB_DONE) {
		snprintf(msg, sizeof(msg), "job '%s' is done after %u rounds: nothing to %s",
			 j->name, j->num_rounds, pause ? "pause" : "resume");
		life_error(c, 409, msg, "done", NULL);
		return;
	}
	if (API(c)->clustered) {
		if (!API(c)->cluster.pause) /* wiring without it: refused, named */
			single_node(c, pause ? "POST /v1/jobs/{job}/pause" :
				    "POST /v1/jobs/{job}/resume");
		else
			API(c)->cluster.pause(API(c)->cluster.ctx, c, j, pause);
		return;
	}
	if (rt_job_set_paused(N(c), j, pause)) {
		rt_conn_error(c, 503, "could not keep the job's state (the store failed; see the "
			      "server log); nothing changed, retry", -1, "Retry-After: 1\r\n");
		return;
	}
	rt__api_respond_json(c, 200, json_pack("{s:s, s:s}", "job", j->name, "state",
					       rt_job_state_name(rt_job_state(j))), NULL);
}
