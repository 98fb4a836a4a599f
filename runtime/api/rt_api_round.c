// SPDX-License-Identifier: MIT
/*
 * Round records and federated evaluations over HTTP (issue 15):
 * GET /v1/jobs/{job}/rounds[?from=r&limit=n], GET .../rounds/{r},
 * POST .../evaluations, X-Tributary-Metrics on updates, and the evaluation
 * in a job's status and in /metrics.
 */
#include "api_priv.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rt_metrics.h"
#include "rt_roundrec.h"
#include "shm_arena_abi.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_parse.h"

#define EVAL_BODY_MAX 4096u
#define ROUNDS_LIMIT_DEFAULT 100u

/* An unsigned query parameter in [lo, hi], @def when absent; false: a 400 answered. */
static bool query_u32(struct rt_conn *c, const char *key, uint64_t lo, uint64_t hi, uint32_t def,
		      uint32_t *out)
{
	char v[32], msg[160];
	uint64_t x;
	int err = rt_http_query_get(c->req.query, key, v, sizeof(v));

	if (err == -ENOENT) {
		*out = def;
		return true;
	}
	if (err || trib_parse_u64(v, lo, hi, &x)) {
		snprintf(msg, sizeof(msg), "%s: '%.20s' is not a whole number in %llu..%llu", key,
			 err ? "" : v, (unsigned long long)lo, (unsigned long long)hi);
		rt_conn_error(c, 400, msg, -1, NULL);
		return false;
	}
	*out = (uint32_t)x;
	return true;
}

static void rounds_list(struct rt_conn *c, struct rt_job *j)
{
	uint32_t from, limit;
	json_t *o;
	int err;

	if (!query_u32(c, "from", 0, UINT32_MAX, 0, &from) ||
	    !query_u32(c, "limit", 1, RT_ROUNDS_PAGE_MAX, ROUNDS_LIMIT_DEFAULT, &limit))
		return;
	if (API(c)->clustered) {
		API(c)->cluster.rounds_list(API(c)->cluster.ctx, c, j, from, limit);
		return;
	}
	o = rt_job_rounds_json(N(c), j, from, limit, &err);
	if (!o) {
		rt_conn_error(c, err == -ENOMEM ? 500 : 503, "reading the round records failed; "
			      "see the server log", -1, NULL);
		return;
	}
	rt__api_respond_json(c, 200, o, NULL);
}

static void round_get(struct rt_conn *c, struct rt_job *j, uint32_t r)
{
	char msg[160];
	json_t *o;
	int err;

	o = rt_job_round_json(N(c), j, r, &err);
	if (o) {
		rt__api_respond_json(c, 200, o, NULL);
		return;
	}
	if (err == -ENOENT) {
		if (rt_job_rounds_over(j))
			snprintf(msg, sizeof(msg), "job '%s' has no record of round %u (it is done "
				 "after %u rounds: 0 to %u)", j->name, r, j->num_rounds,
				 j->num_rounds - 1);
		else
			snprintf(msg, sizeof(msg), "job '%s' has no record of round %u (it is at "
				 "round %u)", j->name, r, j->round);
		rt_conn_error(c, 404, msg, -1, NULL);
		return;
	}
	rt_conn_error(c, 503, "reading the round record failed; see the server log", -1, NULL);
}

/* --- evaluations --- */

/* Idempotency-Key as updates take it: absent, or 1..64 visible ASCII; false: a 400 answered. */
static bool idem_key_ok(struct rt_conn *c)
{
	const char *key = c->req.idempotency_key;
	size_t len = strlen(key);
	bool ok = len >= 1 && len <= SHM_REC_KEY_MAX;

	if (!c->req.has_idempotency_key)
		return true;
	for (size_t i = 0; ok && i < len; i++)
		ok = key[i] >= 0x21 && key[i] <= 0x7e;
	if (!ok)
		rt_conn_error(c, 400, "Idempotency-Key: 1 to 64 visible ASCII characters (no "
			      "spaces)", -1, NULL);
	return ok;
}

static void on_eval_body(struct rt_conn *c)
{
	struct rt_job *j = R(c)->job;
	struct rt_cmetrics m;
	json_t *doc = NULL, *jv, *js;
	const char *key = c->req.has_idempotency_key ? c->req.idempotency_key : "";
	uint32_t clients = 0;
	char why[320];
	int rc;

	if (rt__api_job_gone(c))
		return;
	if (trib_json_loadb(c->body_heap, c->body_len, 0, &doc, NULL) || !json_is_object(doc)) {
		rt_conn_error(c, 400, "evaluation: a JSON object {\"version\": v, \"samples\": n, "
			      "\"metrics\": {name: number}}", -1, NULL);
		goto out;
	}
	jv = json_object_get(doc, "version");
	js = json_object_get(doc, "samples");
	if (!json_is_integer(jv) || json_integer_value(jv) < 0 ||
	    json_integer_value(jv) > UINT32_MAX) {
		rt_conn_error(c, 400, "evaluation: \"version\" must be a model version (a whole "
			      "number >= 0)", -1, NULL);
		goto out;
	}
	if (!json_is_integer(js) || json_integer_value(js) < 1 ||
	    json_integer_value(js) > (json_int_t)1 << 40) {
		rt_conn_error(c, 400, "evaluation: \"samples\" must be a whole number of samples, "
			      "1 to 2^40", -1, NULL);
		goto out;
	}
	if (rt_metrics_from_json(json_object_get(doc, "metrics"), &m, why, sizeof(why))) {
		rt_conn_error(c, 400, why, -1, NULL);
		goto out;
	}
	if (API(c)->clustered) {
		API(c)->cluster.eval_post(API(c)->cluster.ctx, c, j,
					  (uint32_t)json_integer_value(jv), R(c)->client, key,
					  (uint64_t)json_integer_value(js),
					  json_object_get(doc, "metrics"));
		goto out;
	}
	rc = rt_job_eval_post(N(c), j, (uint32_t)json_integer_value(jv), R(c)->client, key,
			      strlen(key), (uint64_t)json_integer_value(js), &m, &clients);
	if (rc >= 0) {
		rt__api_respond_json(c, 202, json_pack("{s:I, s:I}", "version",
						       json_integer_value(jv), "clients",
						       (json_int_t)clients), NULL);
		goto out;
	}
	if (rc == -ENOENT)
		snprintf(why, sizeof(why), "evaluation: version %lld does not exist; job '%s' has "
			 "versions 0 to %u", (long long)json_integer_value(jv), j->name,
			 j->completed);
	else if (rc == -EEXIST)
		snprintf(why, sizeof(why), "client %s already has an evaluation of version %lld "
			 "(one per client per version); the same request again with its "
			 "Idempotency-Key gets its first answer", R(c)->client,
			 (long long)json_integer_value(jv));
	else if (rc == -E2BIG)
		snprintf(why, sizeof(why), "evaluation: version %lld's evaluations would name more "
			 "than %d metrics", (long long)json_integer_value(jv), RT_MSUM_MAX);
	else
		snprintf(why, sizeof(why), "evaluation: the store failed (%s); not counted, "
			 "send it again", strerror(-rc));
	rt_conn_error(c, rc == -ENOENT ? 404 : rc == -EEXIST ? 409 : rc == -E2BIG ? 400 : 503,
		      why, -1, rc == -ENOENT || rc == -EEXIST || rc == -E2BIG ? NULL
								: "Retry-After: 1\r\n");
out:
	json_decref(doc);
}

static void eval_post(struct rt_conn *c, struct rt_job *j)
{
	/*
	 * The job's (or the admin) token may evaluate even where updates need client
	 * credentials (an owner's held-out set); it has no client id, so each is counted.
	 */
	if (rt__api_auth_job(c, j))
		R(c)->client[0] = '\0';
	else if (!rt__api_update_auth(c, j))
		return;
	if (!idem_key_ok(c))
		return;
	if (!c->req.has_content_length || c->req.chunked) {
		rt_conn_error(c, 411, "Content-Length required", -1, NULL);
		return;
	}
	if (c->req.content_length > EVAL_BODY_MAX) {
		rt_conn_error(c, 413, "evaluation: at most 4 KiB of JSON", -1, NULL);
		return;
	}
	c->body_heap = trib_malloc(c->req.content_length + 1);
	if (!c->body_heap) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt__api_read_job_body(c, j, on_eval_body);
}

void rt__api_handle_rounds(struct rt_conn *c, struct rt_job *j, const char *slash,
			   enum http_method m)
{
	uint64_t r;

	if (!strcmp(slash, "/evaluations")) {
		if (m != HTTP_POST) {
			rt_conn_error(c, 405, "method not allowed here", -1, NULL);
			return;
		}
		eval_post(c, j);
		return;
	}
	if (m != HTTP_GET) {
		rt_conn_error(c, 405, "method not allowed here", -1, NULL);
		return;
	}
	if (!rt__api_require_reader(c, j))
		return;
	if (!strcmp(slash, "/rounds") || !strcmp(slash, "/rounds/")) {
		rounds_list(c, j);
		return;
	}
	if (trib_parse_u64(slash + 8, 0, UINT32_MAX, &r)) {
		rt_conn_error(c, 400, "rounds/{round}: a round number", -1, NULL);
		return;
	}
	if (API(c)->clustered) {
		API(c)->cluster.round_get(API(c)->cluster.ctx, c, j, (uint32_t)r);
		return;
	}
	round_get(c, j, (uint32_t)r);
}

/* --- metrics on updates --- */

bool rt__api_metrics_parse(struct rt_conn *c, struct rt_cmetrics *m)
{
	char why[320];

	m->n = 0;
	if (!c->req.has_x_metrics)
		return true;
	if (c->req.x_metrics_long) {
		snprintf(why, sizeof(why), "X-Tributary-Metrics: longer than %d bytes",
			 RT_METRICS_TEXT_MAX);
	} else if (!rt_metrics_parse(c->req.x_metrics, strlen(c->req.x_metrics), m, why,
				     sizeof(why))) {
		return true;
	}
	rt__api_reject(c, RT_REJ_MALFORMED, 400, why, -1, NULL);
	return false;
}

/* --- status and /metrics --- */

void rt__api_eval_status(struct rt_node *n, struct rt_job *j, json_t *o)
{
	uint32_t v;
	uint64_t total;
	json_t *e = NULL;
	int err;

	if (!rt_job_eval_latest(n, j, &v, &total))
		e = rt_job_eval_json(n, j, v, &err);
	json_object_set_new(o, "evaluation", e ? e : json_null());
}

#define OUT(...)                                                                         \
	do {                                                                             \
		int w_ = snprintf(buf + *len, cap - *len, __VA_ARGS__);                  \
		if (w_ > 0 && (size_t)w_ < cap - *len)                                   \
			*len += (size_t)w_;                                              \
	} while (0)

void rt__api_eval_metrics(struct rt_node *n, bool names, char *buf, size_t *len, size_t cap)
{
	char label[96];
	int err;

	OUT("# HELP tributary_eval_metric Sample-weighted mean of a metric over the evaluations "
	    "of the latest evaluated model version.\n# TYPE tributary_eval_metric gauge\n");
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		uint32_t v;
		uint64_t total;
		json_t *e, *ms, *val;
		const char *k;

		if (rt_job_eval_latest(n, j, &v, &total))
			continue;
		e = rt_job_eval_json(n, j, v, &err);
		ms = json_object_get(e, "metrics");
		if (names)
			snprintf(label, sizeof(label), "job=\"%s\"", j->name);
		else
			snprintf(label, sizeof(label), "job_id=\"%u\"", j->id);
		json_object_foreach(ms, k, val) {
			if (json_is_number(val))
				OUT("tributary_eval_metric{%s,name=\"%s\"} %.17g\n", label, k,
				    json_number_value(val));
		}
		json_decref(e);
	}
	OUT("# HELP tributary_eval_samples_total Samples of every evaluation a job was sent.\n"
	    "# TYPE tributary_eval_samples_total counter\n");
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		uint32_t v;
		uint64_t total = 0;

		if (rt_job_eval_latest(n, j, &v, &total))
			total = 0;
		if (names)
			snprintf(label, sizeof(label), "job=\"%s\"", j->name);
		else
			snprintf(label, sizeof(label), "job_id=\"%u\"", j->id);
		OUT("tributary_eval_samples_total{%s} %llu\n", label, (unsigned long long)total);
	}
}
#undef OUT
