// SPDX-License-Identifier: MIT
/* simulate's client credentials: one minted per simulated client, when asked or when required. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "tl_sim_int.h"
#include "trib_alloc.h"
#include "trib_log.h"

/* One request's context for tl_sim_gw_call(). */
struct cred_ctx {
	const char *method, *target, *bearer, *body;
	struct tl_http_resp resp;
};

static int cred_op(struct tl_client *c, void *arg)
{
	struct cred_ctx *x = arg;
	struct iovec iov = { (void *)x->body, x->body ? strlen(x->body) : 0 };
	struct tl_http_req req = {
		.method = x->method, .target = x->target, .bearer = x->bearer,
		.headers = x->body ? "Content-Type: application/json\r\n" : NULL,
		.body = x->body ? &iov : NULL, .body_iovcnt = x->body ? 1 : 0,
	};

	return tl_client_do(c, &req, &x->resp);
}

/* @x's answer parsed: a JSON object (owned), or NULL with the failure logged. */
static json_t *cred_call(struct tl_sim_run *run, struct cred_ctx *x, int want, const char *what)
{
	json_t *o;
	int err = tl_sim_gw_call(run, run->mconns, 0, NULL, what, cred_op, x, NULL);

	if (err) {
		trib_error("%s: %s", what, strerror(-err));
		return NULL;
	}
	if (x->resp.status != want) {
		tl_sim_log_http_error(what, &x->resp);
		return NULL;
	}
	o = json_loadb(x->resp.body, x->resp.body_len, 0, NULL);
	if (!json_is_object(o)) {
		trib_error("%s: the answer is not a JSON object", what);
		json_decref(o);
		return NULL;
	}
	return o;
}

/* Whether the job requires client credentials: GET /v1/jobs/J says "client_auth". */
static int job_requires(struct tl_sim_run *run, const char *bearer, bool *required)
{
	char target[160];
	struct cred_ctx x = { .method = "GET", .target = target, .bearer = bearer };
	json_t *o;

	snprintf(target, sizeof(target), "/v1/jobs/%s", run->o->job);
	o = cred_call(run, &x, 200, "GET the job");
	if (!o)
		return -EPROTO;
	*required = json_is_string(json_object_get(o, "client_auth")) &&
		    !strcmp(json_string_value(json_object_get(o, "client_auth")), "required");
	json_decref(o);
	return 0;
}

int tl_sim_creds_mint(struct tl_sim_run *run)
{
	const struct tl_sim_opts *o = run->o;
	const char *bearer = run->admin ? run->admin : run->job.token;
	char target[160], body[96], what[96];
	bool required = false;
	int err;

	err = job_requires(run, bearer, &required);
	if (err)
		return err;
	if (!required && !o->client_tokens)
		return 0;
	run->ctok = trib_calloc(o->clients, sizeof(*run->ctok));
	if (!run->ctok)
		return -ENOMEM;
	snprintf(target, sizeof(target), "/v1/jobs/%s/clients", o->job);
	for (uint32_t i = 0; i < o->clients; i++) {
		struct cred_ctx x = { .method = "POST", .target = target, .bearer = bearer,
				      .body = body };
		const char *tok;
		json_t *a;

		snprintf(body, sizeof(body), "{\"client\":\"sim-%" PRIu64 "-%u\"}", o->seed, i);
		snprintf(what, sizeof(what), "minting the credential of client %u", i);
		a = cred_call(run, &x, 201, what);
		tok = a ? json_string_value(json_object_get(a, "token")) : NULL;
		if (!tok || strlen(tok) >= sizeof(run->ctok[i])) {
			if (a)
				trib_error("%s: no token in the answer", what);
			json_decref(a);
			return -EPROTO;
		}
		memcpy(run->ctok[i], tok, strlen(tok) + 1);
		json_decref(a);
	}
	trib_info("job %s: %u client credentials minted (%s)", o->job, o->clients,
		  required ? "client_auth required" : "--client-tokens");
	return 0;
}
