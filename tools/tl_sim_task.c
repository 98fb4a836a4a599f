// SPDX-License-Identifier: MIT
/* simulate against a job that selects clients: each client asks GET /task before it trains. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "tl_client.h"
#include "tl_sim_int.h"
#include "trib_log.h"

struct task_ctx {
	struct tl_http_req req;
	struct tl_http_resp *resp;
};

static int task_op(struct tl_client *c, void *arg)
{
	struct task_ctx *t = arg;

	return tl_client_do(c, &t->req, t->resp);
}

int tl_sim_task_get(struct tl_sim_run *run, struct tl_client **conns, uint32_t i,
		    uint64_t round, bool *train, struct tl_http_resp *resp)
{
	struct task_ctx t = { .req = { .method = "GET", .bearer = run->ctok ? run->ctok[i] : NULL },
			      .resp = resp };
	char target[512], what[64];
	json_t *root, *act, *rnd;
	int err;

	*train = false;
	snprintf(target, sizeof(target), "/v1/jobs/%s/task", run->o->job);
	snprintf(what, sizeof(what), "client %u's task", i);
	t.req.target = target;
	err = tl_sim_gw_call(run, conns, i % run->ngw, NULL, what, task_op, &t, NULL);
	if (err)
		return err;
	if (resp->status != 200)
		return -EPROTO; /* the caller says why, from @resp */
	root = json_loadb(resp->body, resp->body_len, 0, NULL);
	act = json_object_get(root, "action");
	rnd = json_object_get(root, "round");
	if (!json_is_string(act)) {
		trib_error("GET %s: unexpected answer: %.200s", target, resp->body);
		json_decref(root);
		return -EPROTO;
	}
	/* A task of a later round: this one closed while the client asked. */
	*train = !strcmp(json_string_value(act), "train") && json_is_integer(rnd) &&
		 (uint64_t)json_integer_value(rnd) == round;
	if (strcmp(json_string_value(act), "train") && strcmp(json_string_value(act), "wait")) {
		trib_error("GET %s: action %s: the job is %s", target, json_string_value(act),
			   json_string_value(act));
		json_decref(root);
		return -EPROTO;
	}
	json_decref(root);
	return 0;
}
