// SPDX-License-Identifier: MIT
/* Tests of the API router against connections of a detached loop (no sockets, no ring). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "rt_api.h"
#include "rt_loop.h"
#include "rt_test_node.h"
#include "trib_alloc.h"

struct fixture {
	struct rt_test_node tn;
	struct rt_api *api;
	struct rt_loop *loop;
	struct rt_conn *c;
};

static void fx_open(struct fixture *f)
{
	struct rt_conn_hooks ch;

	rt_test_node_open(&f->tn);
	cr_assert_eq(rt_api_open(&f->api, f->tn.n, NULL), 0);
	rt_api_conn_hooks(f->api, &ch);
	cr_assert_eq(rt_loop_open_detached(&f->loop, &ch), 0);
	f->c = rt_conn_new_detached(f->loop);
	cr_assert_not_null(f->c);
}

static void fx_close(struct fixture *f)
{
	rt_loop_close(f->loop);
	rt_api_close(f->api);
	rt_test_node_close(&f->tn);
}

/* Send one request; return the status and leave the body in f->c->rbody. */
static int request(struct fixture *f, const char *method, const char *path, const char *token,
		   const char *body)
{
	char req[2048];
	size_t blen = body ? strlen(body) : 0;
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\n", method, path);
	int status = 0;

	if (token)
		n += snprintf(req + n, sizeof(req) - (size_t)n, "Authorization: Bearer %s\r\n",
			      token);
	n += snprintf(req + n, sizeof(req) - (size_t)n, "Content-Length: %zu\r\n\r\n%s", blen,
		      body ? body : "");
	cr_assert_eq(rt_conn_feed(f->c, req, (size_t)n), 0);
	cr_assert(rt_conn_answered(f->c), "%s %s: no answer", method, path);
	cr_assert_eq(sscanf(f->c->rhead, "HTTP/1.1 %d ", &status), 1);
	return status;
}

static bool body_has(const struct fixture *f, const char *s)
{
	char *buf = trib_malloc(f->c->rbody_len + 1);
	bool has;

	cr_assert_not_null(buf);
	memcpy(buf, f->c->rbody, f->c->rbody_len);
	buf[f->c->rbody_len] = '\0';
	has = strstr(buf, s) != NULL;
	trib_free(buf);
	return has;
}

Test(runtime_router, healthz_and_unknown_paths)
{
	struct fixture f;

	fx_open(&f);
	cr_assert_eq(request(&f, "GET", "/healthz", NULL, NULL), 200);
	cr_assert(body_has(&f, "\"status\":\"ok\""));
	cr_assert_eq(request(&f, "GET", "/nope", NULL, NULL), 404);
	cr_assert_eq(request(&f, "DELETE", "/healthz", NULL, NULL), 405);
	cr_assert_eq(request(&f, "GET", "/v1/cluster", NULL, NULL), 404, "up is not a cluster");
	fx_close(&f);
}

Test(runtime_router, jobs_take_the_admin_token)
{
	struct fixture f;
	const char *def = "{\"name\":\"mnist\",\"clients_per_round\":2,\"params\":4}";

	fx_open(&f);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", NULL, def), 401);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", "wrong-token-0123456789", def), 401);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", RT_TEST_ADMIN, def), 201);
	cr_assert(body_has(&f, "\"job\":\"mnist\""));
	cr_assert_not_null(rt_job_find(f.tn.n, "mnist"));
	cr_assert_eq(request(&f, "POST", "/v1/jobs", RT_TEST_ADMIN, def), 409);
	cr_assert_eq(request(&f, "GET", "/v1/jobs", RT_TEST_ADMIN, NULL), 200);
	cr_assert(body_has(&f, "\"mnist\""));
	cr_assert_eq(request(&f, "GET", "/v1/jobs/mnist", rt_job_find(f.tn.n, "mnist")->token,
			     NULL), 200);
	cr_assert(body_has(&f, "\"clients_per_round\":2"));
	cr_assert_eq(request(&f, "GET", "/v1/jobs/other", RT_TEST_ADMIN, NULL), 404);
	fx_close(&f);
}

Test(runtime_router, model_before_any_round_is_the_zeros_or_404)
{
	struct fixture f;

	fx_open(&f);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", RT_TEST_ADMIN,
			     "{\"name\":\"m\",\"clients_per_round\":2,\"params\":4}"), 201);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/m/model?round=7", RT_TEST_ADMIN, NULL), 404);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/m/model?round=x", RT_TEST_ADMIN, NULL), 400);
	fx_close(&f);
}

Test(runtime_router, metrics_count_requests_and_refusals)
{
	struct fixture f;

	fx_open(&f);
	/* An unknown job is a 404 to the admin only (issue #13): see the next test. */
	cr_assert_eq(request(&f, "GET", "/v1/jobs/none/model", RT_TEST_ADMIN, NULL), 404);
	cr_assert_eq(request(&f, "GET", "/metrics", NULL, NULL), 200);
	cr_assert(body_has(&f, "tributary_updates_rejected_total{reason=\"unknown_job\"} 1"));
	cr_assert(body_has(&f, "tributary_http_requests_total 1\n"));
	cr_assert(body_has(&f, "tributary_dataplane_info{mode=\"shm+unix\"} 1"));
	fx_close(&f);
}

/* A refusal counts for the job its URL names, and for the node; one naming none, the node only. */
Test(runtime_router, refusals_count_per_job_and_for_the_node)
{
	struct fixture f;

	fx_open(&f);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", RT_TEST_ADMIN,
			     "{\"name\":\"a\",\"clients_per_round\":2,\"params\":4}"), 201);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", RT_TEST_ADMIN,
			     "{\"name\":\"b\",\"clients_per_round\":2,\"params\":4}"), 201);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/a", "wrong", NULL), 401);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/a/model", "wrong", NULL), 401);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/none", NULL, NULL), 401);
	cr_assert_eq(request(&f, "GET", "/metrics", RT_TEST_ADMIN, NULL), 200);
	cr_assert(body_has(&f, "tributary_updates_rejected_total{reason=\"auth\"} 3\n"));
	cr_assert(body_has(&f, "tributary_job_updates_rejected_total{job=\"a\",reason=\"auth\"} 2\n"));
	cr_assert(body_has(&f, "tributary_job_updates_rejected_total{job=\"b\",reason=\"auth\"} 0\n"));
	cr_assert(body_has(&f, "tributary_job_round_duration_seconds_count{job=\"b\"} 0\n"));
	/* Bounded labels: no function id, no round. */
	cr_assert_not(body_has(&f, "fn=\""));
	cr_assert_not(body_has(&f, ",round=\""));
	fx_close(&f);
}

/* Without the admin token, an unknown job looks like a known one with a wrong token. */
Test(runtime_router, unknown_job_is_401_without_the_admin_token)
{
	struct fixture f;

	fx_open(&f);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", RT_TEST_ADMIN,
			     "{\"name\":\"known\",\"clients_per_round\":2,\"params\":4}"), 201);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/none", NULL, NULL), 401);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/none/model", "wrong", NULL), 401);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/known", "wrong", NULL), 401);
	/* A name too long to be a job's: the same 401. */
	cr_assert_eq(request(&f, "GET",
			     "/v1/jobs/x23456789012345678901234567890123456789"
			     "012345678901234567890123456789", NULL, NULL), 401);
	cr_assert_eq(request(&f, "GET", "/v1/jobs/none", RT_TEST_ADMIN, NULL), 404);
	fx_close(&f);
}

/* /metrics names jobs to the admin token only (no --metrics-jobs in the fixture). */
Test(runtime_router, metrics_name_jobs_to_the_admin_only)
{
	struct fixture f;

	fx_open(&f);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", RT_TEST_ADMIN,
			     "{\"name\":\"secretjob\",\"clients_per_round\":2,\"params\":4}"), 201);
	cr_assert_eq(request(&f, "GET", "/metrics", NULL, NULL), 200);
	cr_assert_not(body_has(&f, "secretjob"));
	cr_assert(body_has(&f, "tributary_job_round{job_id=\""));
	cr_assert_eq(request(&f, "GET", "/metrics", RT_TEST_ADMIN, NULL), 200);
	cr_assert(body_has(&f, "tributary_job_round{job=\"secretjob\"} 0"));
	fx_close(&f);
}

/*
 * A raw update's values are checked piece by piece as they arrive (rt_conn_watch_body): a bad
 * value in a late piece, or in a float split across two pieces, is still a 422 naming it.
 */
static int update_in_pieces(struct fixture *f, const char *token, const float *x, size_t n,
			    size_t piece)
{
	const uint8_t *b = (const uint8_t *)x;
	size_t len = n * sizeof(float), at;
	char head[512];
	int hn = snprintf(head, sizeof(head), "POST /v1/jobs/m/updates HTTP/1.1\r\nHost: t\r\n"
			  "Authorization: Bearer %s\r\nX-Tributary-Round: 0\r\n"
			  "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n",
			  token, len);
	char first[600];
	int status = 0;

	/* 6 body bytes come with the head: the first piece ends inside a float. */
	memcpy(first, head, (size_t)hn);
	memcpy(first + hn, b, 6);
	cr_assert_eq(rt_conn_feed(f->c, first, (size_t)hn + 6), 0);
	for (at = 6; at < len && !rt_conn_answered(f->c); at += piece)
		cr_assert_eq(rt_conn_feed(f->c, b + at, len - at < piece ? len - at : piece), 0);
	cr_assert(rt_conn_answered(f->c));
	cr_assert_eq(sscanf(f->c->rhead, "HTTP/1.1 %d ", &status), 1);
	return status;
}

Test(runtime_router, a_raw_update_checked_as_it_arrives_names_its_bad_value)
{
	enum { N = 1000 };
	struct fixture f;
	static float x[N];
	const char *tok;

	fx_open(&f);
	cr_assert_eq(request(&f, "POST", "/v1/jobs", RT_TEST_ADMIN,
			     "{\"name\":\"m\",\"clients_per_round\":2,\"params\":1000}"), 201);
	tok = rt_job_find(f.tn.n, "m")->token;
	for (int i = 0; i < N; i++)
		x[i] = (float)i * 0.5f;
	x[700] = __builtin_nanf("");
	cr_assert_eq(update_in_pieces(&f, tok, x, N, 1001), 422);
	cr_assert(body_has(&f, "non-finite value (NaN or Inf) in the update at element 700"));
	x[700] = 1.0f;
	x[1] = __builtin_inff(); /* split across the head's piece and the next */
	cr_assert_eq(update_in_pieces(&f, tok, x, N, 1001), 422);
	cr_assert(body_has(&f, "at element 1\""));
	x[1] = 1.0f;
	x[N - 1] = 3e30f; /* over 2^80 / weight 1, in the last piece */
	cr_assert_eq(update_in_pieces(&f, tok, x, N, 333), 422);
	cr_assert(body_has(&f, "value 3e+30 in the update at element 999 is over the limit"));
	x[N - 1] = 2.0f;
	/* All good: past the check (there is no function binary here, so not necessarily 202). */
	cr_assert_neq(update_in_pieces(&f, tok, x, N, 4096), 422);
	fx_close(&f);
}
