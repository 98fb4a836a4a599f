// SPDX-License-Identifier: MIT
/*
 * GET /v1/jobs/{job}/rounds[?from&limit] on a cluster's gateway (issue 15):
 * the controller holds the round records (ctl_rec.c), so the page is asked
 * of it and passed on as it is, from whichever gateway the client asked.
 * POST .../evaluations likewise: checked here, counted and kept there.
 */
#include "agent_priv.h"

#include "trib_log.h"

json_t *rt__agent_upd_metrics(const struct upd *u)
{
	/* Checked at the gateway (rt__api_metrics_parse): an object of finite numbers. */
	return u->metrics[0] ? json_loads(u->metrics, 0, NULL) : NULL;
}

void rt__agent_rounds_list(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t from,
			   uint32_t limit)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (rt__agent_to_ctl(a, json_pack("{s:s, s:s, s:I, s:I}", "op", "rounds_list", "job",
					  j->name, "from", (json_int_t)from, "limit",
					  (json_int_t)limit),
			     NULL, 0, PK_ROUNDS_LIST, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable", -1, "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

void rt__agent_eval_post(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t version,
			 const char *client, const char *key, uint64_t samples,
			 const json_t *metrics)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (rt__agent_to_ctl(a, json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:o}", "op",
					  "evaluation", "job", j->name, "version",
					  (json_int_t)version, "client", client, "key", key,
					  "samples", (json_int_t)samples, "metrics",
					  metrics ? json_incref((json_t *)metrics) : json_object()),
			     NULL, 0, PK_EVAL, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable; the evaluation was not "
			      "counted: send it again", -1, "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

void rt__agent_on_rounds_list_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	json_t *o;

	(void)a;
	if (ev->kind != CTL_EV_REPLY) {
		rt_conn_error(pd->c, 503, pd->kind == PK_EVAL ? "the controller did not answer; "
			      "the evaluation may or may not be counted: send it again with the "
			      "same Idempotency-Key" : "the controller did not answer", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		rt_conn_error(pd->c, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			      jstr(ev->hdr, "error", "?"), -1, NULL);
		return;
	}
	if (pd->kind == PK_EVAL) {
		rt__agent_respond_json(pd->c, 202,
				       json_pack("{s:O, s:O}", "version",
						 json_object_get(ev->hdr, "version"), "clients",
						 json_object_get(ev->hdr, "clients")));
		return;
	}
	o = json_pack("{s:O, s:O}", "rounds", json_object_get(ev->hdr, "rounds"), "next",
		      json_object_get(ev->hdr, "next"));
	if (!o || !json_is_array(json_object_get(o, "rounds"))) {
		json_decref(o);
		rt_conn_error(pd->c, 502, "the controller's answer had no rounds", -1, NULL);
		return;
	}
	rt__agent_respond_json(pd->c, 200, o);
}
