// SPDX-License-Identifier: MIT
/*
 * Pause and resume of a cluster's job (issue 15): asked of the controller,
 * which keeps the state and tells every node (rt__agent_job_apply reads
 * "paused"); this node applies the answer at once.
 */
#include "agent_priv.h"

#include <stdio.h>
#include <string.h>

#include "trib_log.h"

void rt__agent_pause(void *ctx, struct rt_conn *c, struct rt_job *j, bool pause)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (rt__agent_to_ctl(a, json_pack("{s:s, s:s, s:b}", "op", "pause", "job", j->name,
					  "paused", pause),
			     NULL, 0, PK_PAUSE, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable; retry", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

void rt__agent_on_pause_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct rt_job *j;
	bool paused;

	if (ev->kind != CTL_EV_REPLY) {
		rt_conn_error(pd->c, 503, "the controller did not answer; the job may or may not "
			      "have changed: ask again", -1, "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		json_t *o = json_pack("{s:s}", "error", jstr(ev->hdr, "error", "refused"));
		const char *state = jstr(ev->hdr, "state", NULL);

		if (o && state)
			json_object_set_new(o, "state", json_string(state));
		rt__agent_respond_json(pd->c,
				       (int)json_integer_value(json_object_get(ev->hdr, "status")),
				       o);
		return;
	}
	/* Here at once; the other nodes as the controller's job message reaches them. */
	paused = json_is_true(json_object_get(ev->hdr, "paused"));
	j = rt_job_find(a->n, jstr(ev->hdr, "job", ""));
	if (j)
		j->paused = paused;
	rt__agent_respond_json(pd->c, 200, json_pack("{s:s, s:s}", "job", jstr(ev->hdr, "job", ""),
						     "state", paused ? "paused" : "open"));
}

void rt__agent_job_delete(void *ctx, struct rt_conn *c, struct rt_job *j, bool purge)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (rt__agent_to_ctl(a, json_pack("{s:s, s:s, s:b}", "op", "job_delete", "job", j->name,
					  "purge", purge),
			     NULL, 0, PK_DELETE, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable; retry", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

void rt__agent_on_job_delete(struct rt_agent *a, json_t *h)
{
	struct rt_job *j = rt_job_find(a->n, jstr(h, "job", ""));
	int err;

	if (!j)
		return; /* this node's own DELETE answer came first, or it never had it */
	/* Parked long polls on it are answered by the API's tick (j->deleted). */
	err = rt_job_delete(a->n, j, json_is_true(json_object_get(h, "purge")) ||
				     json_is_true(json_object_get(h, "purged")));
	if (err)
		trib_error("job %s: the controller deleted it; deleting it here: %s (it stays "
			   "here until this node restarts)", jstr(h, "job", "?"), strerror(-err));
}

void rt__agent_on_delete_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	if (ev->kind != CTL_EV_REPLY) {
		rt_conn_error(pd->c, 503, "the controller did not answer; the job may or may not "
			      "be deleted: DELETE again", -1, "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		rt_conn_error(pd->c, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			      jstr(ev->hdr, "error", "refused"), -1, NULL);
		return;
	}
	/* Here at once; the other nodes as the controller's job_delete reaches them. */
	rt__agent_on_job_delete(a, ev->hdr);
	rt__agent_respond_json(pd->c, 200, json_pack("{s:s, s:b, s:b}", "job",
						     jstr(ev->hdr, "job", ""), "deleted", 1,
						     "purged", json_is_true(json_object_get(
							     ev->hdr, "purged"))));
}

void rt__agent_jobs_prune(struct rt_agent *a, json_t *jobs)
{
	struct rt_job *j, *next;
	json_t *e;
	size_t i;

	if (!json_is_array(jobs))
		return;
	/* rt_job_delete takes the job off n->jobs: the next one is read first. */
	for (j = a->n->jobs; j; j = next) {
		bool known = false;

		next = j->next;
		json_array_foreach(jobs, i, e)
			known = known || !strcmp(jstr(e, "name", ""), j->name);
		if (known)
			continue;
		trib_info("job %s: the controller no longer has it (deleted while this node was "
			  "away): deleted here", j->name);
		if (rt_job_delete(a->n, j, false))
			trib_error("job %s: deleting it here failed; it stays until this node "
				   "restarts", j->name);
	}
}

void rt__agent_model_put(void *ctx, struct rt_conn *c, struct rt_job *j, const float *data)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	/* The payload is copied into the request: @data is the caller's to free. */
	if (rt__agent_to_ctl(a, json_pack("{s:s, s:s}", "op", "model_put", "job", j->name), data,
			     j->n_elem * sizeof(float), PK_MODEL_PUT, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable; retry", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

void rt__agent_on_model_put_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	(void)a;
	if (ev->kind != CTL_EV_REPLY) {
		rt_conn_error(pd->c, 503, "the controller did not answer; the starting model may or "
			      "may not be set: PUT it again (the same model is harmless)", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		rt_conn_error(pd->c, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			      jstr(ev->hdr, "error", "refused"), -1, NULL);
		return;
	}
	/* Every node, this one too, gets it from the controller's model message. */
	rt__agent_respond_json(pd->c, 200, json_pack("{s:s, s:i}", "job",
						     jstr(ev->hdr, "job", ""), "round", 0));
}
