// SPDX-License-Identifier: MIT
/*
 * Secure aggregation across nodes (issue 19): one node runs a secure job's rounds, the one the
 * controller's job message names (rank 0, the same for every round). Every other gateway checks
 * a client's token and passes each stage (keys, shares, the masked input, unmask, and their
 * GETs) to that node over the mutual-TLS node link; the answer comes back to the client as it
 * was made there (rt_api_secagg_call). So the graph, the share routing, the set of inputs (U3),
 * the masked sum, the reveals and the unmasking happen once, on one node, exactly as on a single
 * node, and U3 is that node's view by construction. Its unmasked mean goes to the controller,
 * which commits it as the next version and sends it to every node.
 */
#include "agent_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "trib_log.h"
#include "trib_time.h"

void rt__agent_secagg_at(struct rt_agent *a, struct rt_job *j, json_t *h)
{
	json_t *at = json_object_get(h, "secagg_at");

	if (!json_is_object(at) ||
	    json_integer_value(json_object_get(at, "rank")) == (json_int_t)a->rank) {
		j->sa_at[0] = j->sa_at_name[0] = '\0'; /* runs here (or not a secure job) */
		return;
	}
	snprintf(j->sa_at, sizeof(j->sa_at), "%s", jstr(at, "addr", ""));
	snprintf(j->sa_at_name, sizeof(j->sa_at_name), "%s", jstr(at, "name", ""));
}

void rt__agent_secagg(void *ctx, struct rt_conn *c, struct rt_job *j, const char *client,
		      const char *stage, bool get, const void *body, size_t len)
{
	struct rt_agent *a = ctx;
	struct pend *pd;
	int err;

	if (j->sa_at_name[0])
		ctl_wire_peer_name(a->w, j->sa_at, j->sa_at_name);
	err = rt__agent_request(a, j->sa_at,
				json_pack("{s:s, s:s, s:s, s:s, s:b}", "op", "secagg", "job",
					  j->name, "client", client, "stage", stage, "get", get),
				body, len, PK_SECAGG, &pd);
	if (err) {
		char msg[256];

		snprintf(msg, sizeof(msg), "the node that runs this job's secure rounds (%s) is "
			 "not reachable: %s; retry", j->sa_at_name, strerror(-err));
		rt_conn_error(c, 503, msg, -1, "Retry-After: 1\r\n");
		return;
	}
	a->fwd_bytes += len;
	pd->c = c;
	snprintf(pd->job, sizeof(pd->job), "%s", j->name);
}

void rt__agent_on_secagg_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	int status = (int)json_integer_value(json_object_get(ev->hdr, "status"));
	const struct rt_job *j = rt_job_find(a->n, pd->job);
	json_t *body;

	if (ev->kind != CTL_EV_REPLY || !json_is_true(json_object_get(ev->hdr, "ok")) ||
	    status < 200 || status > 599) {
		char msg[320];

		/* No answer: the stage may or may not have been taken there. */
		snprintf(msg, sizeof(msg), "the node that runs this job's secure rounds (%s) did "
			 "not answer (%s); the stage may or may not be taken: retry it (a repeat is "
			 "refused with 409 if it was)", j ? j->sa_at_name : "?",
			 ev->kind == CTL_EV_REPLY ? jstr(ev->hdr, "error", "refused") : "no reply");
		rt_conn_error(pd->c, 503, msg, -1, "Retry-After: 1\r\n");
		return;
	}
	if (status >= 300) {
		json_t *r = json_object_get(ev->hdr, "round");

		rt_conn_error(pd->c, status, jstr(ev->hdr, "error", "refused"),
			      json_is_integer(r) ? (long long)json_integer_value(r) : -1,
			      json_integer_value(json_object_get(ev->hdr, "retry_after")) == 5
				      ? "Retry-After: 5\r\n"
			      : json_integer_value(json_object_get(ev->hdr, "retry_after"))
				      ? "Retry-After: 1\r\n" : NULL);
		return;
	}
	body = json_object_get(ev->hdr, "body");
	rt__agent_respond_json(pd->c, status, json_is_object(body) ? json_incref(body)
								   : json_object());
}

void rt__agent_on_secagg(struct rt_agent *a, struct ctl_event *ev)
{
	struct rt_job *j = rt_job_find(a->n, jstr(ev->hdr, "job", ""));
	const char *client = jstr(ev->hdr, "client", "");
	struct rt_api_sa_res res;
	json_t *h;

	/* Peers are the cluster's (mutual TLS); the sending gateway checked the client's token. */
	if (!j || !j->secagg.on || j->sa_at[0] || !client[0] || strlen(client) > 32) {
		rt__agent_reply(a, ev, rt__agent_err_json(409, "this node does not run that "
							  "job's secure rounds"));
		return;
	}
	rt_api_secagg_call(a->n, j, client, jstr(ev->hdr, "stage", ""),
			   json_is_true(json_object_get(ev->hdr, "get")), ev->payload, ev->plen,
			   &res);
	if (res.status >= 200 && res.status < 300)
		h = json_pack("{s:b, s:i, s:o}", "ok", 1, "status", (json_int_t)res.status, "body",
			      res.body);
	else
		h = json_pack("{s:b, s:i, s:s, s:I, s:i}", "ok", 1, "status",
			      (json_int_t)res.status, "error", res.msg, "round",
			      (json_int_t)res.round, "retry_after",
			      res.extra ? (strstr(res.extra, "5") ? 5 : 1) : 0);
	if (h && res.round < 0 && res.status >= 300)
		json_object_del(h, "round");
	rt__agent_reply(a, ev, h ? h : rt__agent_err_json(500, "out of memory"));
}

int rt_agent_secagg_commit(struct rt_agent *a, struct rt_job *j, const float *model,
			   uint32_t clients, double weight, uint64_t opened_ns)
{
	uint64_t now = trib_now_ns();
	struct pend *pd;
	int err;

	/* The round's length, for the controller's record (its clock is not this node's). */
	err = rt__agent_to_ctl(a,
			       json_pack("{s:s, s:s, s:i, s:i, s:f, s:I}", "op", "secagg_model",
					 "job", j->name, "round", (json_int_t)j->completed,
					 "clients", (json_int_t)clients, "weight", weight,
					 "duration_ms", (json_int_t)(now > opened_ns
								     ? (now - opened_ns) / 1000000
								     : 0)),
			       model, j->n_elem * sizeof(float), PK_SECAGG_MODEL, &pd);
	if (err)
		return err;
	snprintf(pd->job, sizeof(pd->job), "%s", j->name);
	j->sa_wait_version = j->completed + 1;
	return 0;
}

void rt__agent_on_secagg_model_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct rt_job *j = rt_job_find(a->n, pd->job);

	if (!j)
		return;
	if (ev->kind == CTL_EV_REPLY && json_is_true(json_object_get(ev->hdr, "ok")))
		return; /* the controller's "model" message brings the version to every node */
	/* Not committed: the round is lost (its inputs were single-use), the next one may open. */
	snprintf(j->sa_failed, sizeof(j->sa_failed), "the controller did not commit the "
		 "unmasked mean: %s", ev->kind == CTL_EV_REPLY ? jstr(ev->hdr, "error", "?")
							 : "no reply");
	j->sa_failed_round = j->sa_wait_version ? j->sa_wait_version - 1 : j->completed;
	j->sa_wait_version = 0;
	trib_warn("job %s: %s", j->name, j->sa_failed);
}
