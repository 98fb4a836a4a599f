// SPDX-License-Identifier: MIT
/* The API's router and its connection hooks: auth, routes, per-request state, parked long polls. */
#include "api_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_parse.h"
#include "trib_ratelimit.h"
#include "trib_time.h"
#include "trib_token.h"

/* --- auth and answers --- */

/* Alone: the admin token. A cluster node holds only its SHA-256 (docs/SECURITY.md). */
static bool admin_eq(const struct rt_node *n, const char *tok)
{
	return n->admin_token[0] ? trib_token_eq(tok, n->admin_token) :
				   trib_token_sha256_eq(tok, n->admin_sha256);
}

bool rt__api_auth_admin(struct rt_conn *c)
{
	const char *tok;

	return !rt_http_bearer(&c->req, &tok) && admin_eq(N(c), tok);
}

bool rt__api_auth_job(struct rt_conn *c, const struct rt_job *j)
{
	const char *tok;

	if (rt_http_bearer(&c->req, &tok))
		return false;
	return trib_token_eq(tok, j->token) || admin_eq(N(c), tok);
}

/* The job a request's URL names (/v1/jobs/{job}/...), or NULL: whom a refusal is counted for. */
static struct rt_job *job_of_url(struct rt_conn *c)
{
	const char *rest = c->req.path, *slash;
	char name[64];
	size_t len;

	if (strncmp(rest, "/v1/jobs/", 9))
		return NULL;
	rest += 9;
	slash = strchr(rest, '/');
	len = slash ? (size_t)(slash - rest) : strlen(rest);
	if (!len || len >= sizeof(name))
		return NULL;
	memcpy(name, rest, len);
	name[len] = '\0';
	return rt_job_find(N(c), name);
}

/*
 * Count @why (for the node, and for the job the URL names) and log it, at
 * most one line a second per reason and job: a flood of refusals is one
 * line a second saying how many were held back, never silence and never a
 * log as fast as the attacker can send.
 */
static void reject_log(struct rt_conn *c, struct rt_job *j, enum rt_reject why, int status,
		       const char *msg)
{
	struct trib_ratelimit *rl = j ? &j->rej_log[why] : &API(c)->rej_log[why];
	uint64_t held = 0;
	char safe[160];
	size_t k = 0;

	if (!trib_ratelimit_allow(rl, trib_now_ns(), &held))
		return;
	/* The message may quote the request (a job name): printable ASCII only in the log. */
	for (const char *p = msg ? msg : ""; *p && k + 1 < sizeof(safe); p++)
		safe[k++] = *p >= 0x20 && *p < 0x7f ? *p : '?';
	safe[k] = '\0';
	if (held)
		trib_info("refused (%s, job %s): %d %s (and %llu more of these in the last %.1f s)",
			  rt__api_reject_name(why), j ? j->name : "-", status, safe,
			  (unsigned long long)held, (double)TRIB_RATELIMIT_PERIOD_NS / 1e9);
	else
		trib_info("refused (%s, job %s): %d %s", rt__api_reject_name(why),
			  j ? j->name : "-", status, safe);
}

void rt__api_count_reject(struct rt_conn *c, enum rt_reject why, int status, const char *msg)
{
	struct rt_job *j = job_of_url(c);

	N(c)->m.rejected[why]++;
	if (j)
		j->rejected[why]++;
	reject_log(c, j, why, status, msg);
}

void rt__api_reject(struct rt_conn *c, enum rt_reject why, int status, const char *msg,
		   long long round, const char *extra)
{
	rt__api_count_reject(c, why, status, msg);
	rt_conn_error(c, status, msg, round, extra);
}

/* The job's (or the admin) token, or a 401 answered: false. */
bool rt__api_require_job(struct rt_conn *c, const struct rt_job *j)
{
	if (rt__api_auth_job(c, j))
		return true;
	rt__api_reject(c, RT_REJ_AUTH, 401, "missing or wrong bearer token for this job", -1, NULL);
	return false;
}

void rt__api_respond_json(struct rt_conn *c, int status, json_t *obj, const char *extra)
{
	char *s = trib_json_dumps(obj, JSON_COMPACT);

	json_decref(obj);
	if (!s) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt_conn_respond(c, status, "application/json", s, strlen(s), extra);
	trib_free(s);
}

/* "application/json; charset=utf-8" matches "application/json". */
bool rt__api_ctype_is(const char *ctype, const char *want)
{
	size_t n = strlen(want);

	while (*ctype == ' ')
		ctype++;
	return !strncasecmp(ctype, want, n) &&
	       (ctype[n] == '\0' || ctype[n] == ';' || ctype[n] == ' ');
}

/* --- routing --- */

/* /v1/jobs/{job}[/...]: @rest is what follows "/v1/jobs/". */
static void route_job(struct rt_conn *c, const char *rest, enum http_method m)
{
	char name[64];
	const char *slash = strchr(rest, '/');
	size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
	struct rt_job *j = NULL;

	if (len && len < sizeof(name)) {
		memcpy(name, rest, len);
		name[len] = '\0';
		j = rt_job_find(N(c), name);
	}
	/*
	 * Which jobs exist is the admin's to know: without the admin token an unknown job is
	 * answered as a known one with a wrong token would be (401), so no token can probe names.
	 */
	if (!j && !rt__api_auth_admin(c)) {
		rt__api_reject(c, RT_REJ_AUTH, 401, "missing or wrong bearer token for this job",
			       -1, NULL);
		return;
	}
	if (len == 0 || len >= sizeof(name)) {
		rt__api_reject(c, RT_REJ_NO_JOB, 404, "no such job", -1, NULL);
		return;
	}
	if (!j) {
		char msg[128];

		snprintf(msg, sizeof(msg), "no job named '%s'", name);
		rt__api_reject(c, RT_REJ_NO_JOB, 404, msg, -1, NULL);
		return;
	}
	if (!slash || !strcmp(slash, "/")) {
		if (m == HTTP_DELETE) {
			rt__api_handle_delete(c, j);
			return;
		}
		if (m != HTTP_GET)
			goto bad_method;
		if (!rt__api_require_reader(c, j))
			return;
		rt__api_respond_json(c, 200, rt__api_job_json_full(N(c), j), NULL);
		return;
	}
	if (!strncmp(slash, "/secagg", 7) || (j->secagg.on && !strcmp(slash, "/updates"))) {
		rt__api_handle_secagg(c, j, slash, m); /* rt_api_secagg.c */
		return;
	}
	if (!strcmp(slash, "/updates")) {
		if (m != HTTP_POST)
			goto bad_method;
		rt__api_handle_update(c, j);
		return;
	}
	if (!strcmp(slash, "/task")) {
		if (m != HTTP_GET)
			goto bad_method;
		rt__api_handle_task(c, j);
		return;
	}
	if (!strcmp(slash, "/pause") || !strcmp(slash, "/resume")) {
		if (m != HTTP_POST)
			goto bad_method;
		rt__api_handle_pause(c, j, !strcmp(slash, "/pause"));
		return;
	}
	if (!strcmp(slash, "/clients") || !strncmp(slash, "/clients/", 9)) {
		rt__api_handle_clients(c, j, slash + 8, m);
		return;
	}
	if (!strncmp(slash, "/rounds", 7) || !strcmp(slash, "/evaluations")) {
		rt__api_handle_rounds(c, j, slash, m); /* rt_api_round.c */
		return;
	}
	if (!strcmp(slash, "/model")) {
		if (m == HTTP_GET)
			rt__api_handle_model_get(c, j);
		else if (m == HTTP_PUT)
			rt__api_handle_model_put(c, j);
		else
			goto bad_method;
		return;
	}
	rt_conn_error(c, 404, "no such endpoint", -1, NULL);
	return;
bad_method:
	rt_conn_error(c, 405, "method not allowed here", -1, NULL);
}

/*
 * GET /readyz: 200 when joined, with its arena and serving; else 503 and a
 * body naming what is missing. The probe a Service's endpoints follow:
 * /healthz only says the process answers.
 */
static void handle_readyz(struct rt_conn *c)
{
	struct rt_api *api = API(c);
	struct rt_api_readiness st = { 0 };
	json_t *o, *missing;
	bool ok;

	if (api->ready.get)
		api->ready.get(api->ready.ctx, &st);
	missing = json_array();
	if (!api->ready.get)
		json_array_append_new(missing, json_string("wiring"));
	if (!st.joined)
		json_array_append_new(missing, json_string("joined"));
	if (!st.arena)
		json_array_append_new(missing, json_string("arena"));
	if (!st.serving)
		json_array_append_new(missing, json_string("serving"));
	ok = json_array_size(missing) == 0;
	o = json_pack("{s:b, s:b, s:b, s:b, s:s, s:o}", "ready", ok, "joined", st.joined, "arena",
		      st.arena, "serving", st.serving, "dataplane",
		      st.dataplane ? st.dataplane : "none", "missing", missing);
	if (!o) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt__api_respond_json(c, ok ? 200 : 503, o, ok ? NULL : "Retry-After: 1\r\n");
}

/* A complete head is in c->req: route it. */

static void on_head(void *ctx, struct rt_conn *c)
{
	const char *path = c->req.path;
	enum http_method m = c->req.method;

	(void)ctx;

	if (!strcmp(path, "/healthz")) {
		if (m != HTTP_GET && m != HTTP_HEAD)
			goto bad_method;
		rt_conn_respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
		return;
	}
	if (!strcmp(path, "/readyz")) {
		if (m != HTTP_GET && m != HTTP_HEAD)
			goto bad_method;
		handle_readyz(c);
		return;
	}
	if (!strcmp(path, "/v1/openapi.json")) {
		/* The contract names no job and no token: anyone who reaches the port may read it. */
		if (m != HTTP_GET && m != HTTP_HEAD)
			goto bad_method;
		rt_conn_respond(c, 200, "application/json", rt_api_openapi_json,
				rt_api_openapi_json_len, NULL);
		return;
	}
	if (!strcmp(path, "/metrics")) {
		if (m != HTTP_GET)
			goto bad_method;
		rt__api_handle_metrics(c);
		return;
	}
	if (!strcmp(path, "/ui") || !strncmp(path, "/ui/", 4)) {
		rt__api_handle_ui(c, path);
		return;
	}
	if (!strcmp(path, "/v1/functions")) {
		if (m != HTTP_GET)
			goto bad_method;
		rt__api_handle_functions(c);
		return;
	}
	if (!strcmp(path, "/v1/cluster")) {
		if (m != HTTP_GET)
			goto bad_method;
		if (!API(c)->clustered) {
			rt_conn_error(c, 404, "this is a single node (tributary up), not a cluster",
				      -1, NULL);
			return;
		}
		if (!rt__api_auth_admin(c)) {
			rt__api_reject(c, RT_REJ_AUTH, 401, "GET /v1/cluster takes the admin token",
				       -1, NULL);
			return;
		}
		API(c)->cluster.status(API(c)->cluster.ctx, c);
		return;
	}
	if (API(c)->clustered && !API(c)->cluster.ready(API(c)->cluster.ctx) &&
	    !strncmp(path, "/v1/jobs", 8)) {
		rt_conn_error(c, 503, "this node has not joined the cluster's controller yet", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	if (!strcmp(path, "/v1/jobs") || !strcmp(path, "/v1/jobs/")) {
		if (m == HTTP_POST)
			rt__api_handle_create(c);
		else if (m == HTTP_GET)
			rt__api_handle_list(c);
		else
			goto bad_method;
		return;
	}
	if (!strncmp(path, "/v1/jobs/", 9)) {
		route_job(c, path + 9, m);
		return;
	}
	rt_conn_error(c, 404, "no such endpoint", -1, NULL);
	return;
bad_method:
	rt_conn_error(c, 405, "method not allowed here", -1, NULL);
}

/* --- long polls --- */

void rt_api_handoff_after_answer(struct rt_api *api, bool on)
{
	api->handoff_after_answer = on;
}

void rt__api_park(struct rt_conn *c, struct rt_job *j, uint32_t after, uint64_t deadline_ns)
{
	struct rt_api *api = API(c);
	struct rt_api_req *r = R(c);

	rt_conn_park(c);
	r->parked = true;
	r->job = j;
	j->parked++;
	r->wait_after = after;
	r->deadline_ns = deadline_ns;
	r->wnext = api->waiters;
	api->waiters = c;
}

/* Take @c off the list of parked connections (*pp points at it). */
static void unpark_at(struct rt_conn **pp, struct rt_conn *c)
{
	*pp = R(c)->wnext;
	R(c)->wnext = NULL;
	R(c)->parked = false;
	if (R(c)->job && R(c)->job->parked)
		R(c)->job->parked--;
	rt_conn_unpark(c);
}

void rt_api_model_ready(struct rt_api *api, struct rt_job *j)
{
	struct rt_conn **pp = &api->waiters;

	/*
	 * Only polls that this version satisfies are answered; one that waits for
	 * a later version (after=v with v >= completed, as FedBuff clients that
	 * run ahead ask) stays parked until that version or its deadline: 304
	 * means "timed out", never "another version came".
	 */
	while (*pp) {
		struct rt_conn *c = *pp;

		if (R(c)->job != j || j->completed <= R(c)->wait_after) {
			pp = &R(c)->wnext;
			continue;
		}
		unpark_at(pp, c);
		rt__api_on_wake(c, false);
	}
}

void rt__api_unpark_job(struct rt_api *api, struct rt_job *j)
{
	struct rt_conn **pp = &api->waiters;

	while (*pp) {
		struct rt_conn *c = *pp;
		char msg[128];

		if (R(c)->job != j) {
			pp = &R(c)->wnext;
			continue;
		}
		unpark_at(pp, c);
		snprintf(msg, sizeof(msg), "job '%s' was deleted", j->name);
		rt_conn_error(c, 404, msg, -1, NULL);
	}
}

void rt_api_tick(struct rt_api *api)
{
	uint64_t now = trib_now_ns();
	struct rt_conn **pp = &api->waiters;

	rt__api_wal_tick(api, now);
	rt__api_secagg_tick(api->node);
	while (*pp) {
		struct rt_conn *c = *pp;

		if (R(c)->job && R(c)->job->deleted) {
			/* Deleted by another path than this API's DELETE (a cluster's controller). */
			struct rt_job *j = R(c)->job;

			pp = &api->waiters; /* rt__api_unpark_job may take several off the list */
			rt__api_unpark_job(api, j);
			continue;
		}
		if (R(c)->deadline_ns > now) {
			pp = &R(c)->wnext;
			continue;
		}
		unpark_at(pp, c);
		rt__api_on_wake(c, true);
	}
}

void rt__api_read_job_body(struct rt_conn *c, struct rt_job *j, void (*done)(struct rt_conn *c))
{
	R(c)->job = j;
	if (!R(c)->holds_job) {
		j->bodies++;
		R(c)->holds_job = true;
	}
	rt_conn_read_body(c, c->body_heap, c->req.content_length, done);
}

bool rt__api_job_gone(struct rt_conn *c)
{
	char msg[128];

	if (!R(c)->job->deleted)
		return false;
	snprintf(msg, sizeof(msg), "job '%s' was deleted while the body came", R(c)->job->name);
	rt_conn_error(c, 404, msg, -1, NULL);
	return true;
}

/* --- the loop's connection hooks --- */

static void on_open(void *ctx, struct rt_conn *c)
{
	(void)ctx;
	R(c)->slot_off = UINT64_MAX;
}

/* The request's slot (if it still has one) goes back to the arena. */
static void on_request_end(void *ctx, struct rt_conn *c)
{
	struct rt_api *api = ctx;
	struct rt_api_req *r = R(c);

	rt__api_update_end(api, c);
	if (r->holds_job) {
		r->job->bodies--;
		r->holds_job = false;
	}
	if (r->slot_off != UINT64_MAX) {
		shm_slot_free(api->node->arena, r->slot_off);
		r->slot_off = UINT64_MAX;
	}
	r->job = NULL;
}

static void on_free(void *ctx, struct rt_conn *c)
{
	struct rt_api *api = ctx;

	if (R(c)->wal_ticket)
		rt__api_wal_forget(api, c);
	if (R(c)->parked) {
		for (struct rt_conn **pp = &api->waiters; *pp; pp = &R(*pp)->wnext) {
			if (*pp == c) {
				unpark_at(pp, c);
				break;
			}
		}
	}
	on_request_end(ctx, c);
}

void rt_api_conn_hooks(struct rt_api *api, struct rt_conn_hooks *out)
{
	memset(out, 0, sizeof(*out));
	out->ctx = api;
	out->on_head = on_head;
	out->on_open = on_open;
	out->on_request_end = on_request_end;
	out->on_free = on_free;
}

int rt_api_open(struct rt_api **out, struct rt_node *n, const struct rt_api_hooks *cluster)
{
	struct rt_api *api = trib_calloc(1, sizeof(*api));

	if (!api)
		return -ENOMEM;
	api->node = n;
	if (cluster) {
		api->cluster = *cluster;
		api->clustered = true;
	}
	*out = api;
	return 0;
}

void rt_api_set_ready_hook(struct rt_api *api, const struct rt_api_ready_hook *h)
{
	api->ready = *h;
}

void rt_api_close(struct rt_api *api)
{
	trib_free(api);
}
