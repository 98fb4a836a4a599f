// SPDX-License-Identifier: MIT
/*
 * GET /v1/jobs/{job}/task of a job with "selection" on a cluster's gateway (issue 15): the
 * controller counts the tasks of a round cluster-wide (controller/ctl_select.c), so the
 * gateway asks it for the client and answers with what it decided, in the single node's
 * words (rt_api_task_answer). A client may ask on any gateway: the same client gets the same
 * task. The update's check is the controller's too, when it counts the update.
 */
#include "agent_priv.h"

#include <string.h>


void rt__agent_task_get(void *ctx, struct rt_conn *c, const struct rt_job *j, const char *client)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (rt__agent_to_ctl(a, json_pack("{s:s, s:s, s:s}", "op", "task", "job", j->name,
					  "client", client),
			     NULL, 0, PK_TASK, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable (it counts the tasks of "
			      "this job across nodes); retry", -1, "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

void rt__agent_on_task_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	const char *action, *client;
	struct rt_job *j;

	if (ev->kind != CTL_EV_REPLY) {
		/* Granted or not, asking again is safe: the same client gets the same task. */
		rt_conn_error(pd->c, 503, "the controller did not answer; ask again", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		rt_conn_error(pd->c, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			      jstr(ev->hdr, "error", "refused"), -1, NULL);
		return;
	}
	action = jstr(ev->hdr, "action", "");
	client = jstr(ev->hdr, "client", "");
	/* By name: the job may have been deleted while the controller answered. */
	j = rt_job_find(a->n, jstr(ev->hdr, "job", ""));
	if (!j) {
		rt_conn_error(pd->c, 404, "no such job (deleted meanwhile)", -1, NULL);
		return;
	}
	if (!strcmp(action, "train"))
		rt_api_task_answer(pd->c, j, client, RT_API_TASK_TRAIN,
				   (uint32_t)json_integer_value(json_object_get(ev->hdr, "round")));
	else if (!strcmp(action, "done"))
		rt_api_task_answer(pd->c, j, client, RT_API_TASK_DONE,
				   (uint32_t)json_integer_value(json_object_get(ev->hdr, "rounds")));
	else if (!strcmp(action, "wait"))
		rt_api_task_answer(pd->c, j, client, RT_API_TASK_WAIT, 0);
	else
		rt_conn_error(pd->c, 500, "the controller's answer had no action (see its log)",
			      -1, NULL);
}
