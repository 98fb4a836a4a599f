// SPDX-License-Identifier: MIT
/* GET /readyz against a detached loop: 200 only with every part present, else 503 naming it. */
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
	struct rt_api_readiness st; /* what the fake wiring reports */
	unsigned asked;             /* how many times /readyz asked it */
};

static void fake_get(void *ctx, struct rt_api_readiness *out)
{
	struct fixture *f = ctx;

	f->asked++;
	*out = f->st;
}

static void fx_open(struct fixture *f, bool wired)
{
	struct rt_conn_hooks ch;

	memset(f, 0, sizeof(*f));
	rt_test_node_open(&f->tn);
	cr_assert_eq(rt_api_open(&f->api, f->tn.n, NULL), 0);
	if (wired)
		rt_api_set_ready_hook(f->api, &(struct rt_api_ready_hook){ f, fake_get });
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

/* GET @path; the status, the body in @body (NUL-terminated, @cap bytes). */
static int get(struct fixture *f, const char *method, const char *path, char *body, size_t cap)
{
	char req[256];
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\n\r\n", method, path);
	int status = 0;
	size_t k;

	cr_assert_eq(rt_conn_feed(f->c, req, (size_t)n), 0);
	cr_assert(rt_conn_answered(f->c), "%s: no answer", path);
	cr_assert_eq(sscanf(f->c->rhead, "HTTP/1.1 %d ", &status), 1);
	k = f->c->rbody_len < cap - 1 ? f->c->rbody_len : cap - 1;
	memcpy(body, f->c->rbody, k);
	body[k] = '\0';
	return status;
}

Test(runtime_readyz, ready_only_with_every_part)
{
	struct fixture f;
	char body[512];

	fx_open(&f, true);
	f.st = (struct rt_api_readiness){ true, true, true, "shm+bpf" };
	cr_assert_eq(get(&f, "GET", "/readyz", body, sizeof(body)), 200, "%s", body);
	cr_assert(strstr(body, "\"ready\":true"), "%s", body);
	cr_assert(strstr(body, "\"missing\":[]"), "%s", body);
	cr_assert(strstr(body, "\"dataplane\":\"shm+bpf\""), "%s", body);
	cr_assert_eq(f.asked, 1);
	fx_close(&f);
}

Test(runtime_readyz, not_joined_is_503_naming_it)
{
	struct fixture f;
	char body[512];

	fx_open(&f, true);
	f.st = (struct rt_api_readiness){ false, true, true, "shm+unix" };
	cr_assert_eq(get(&f, "GET", "/readyz", body, sizeof(body)), 503, "%s", body);
	cr_assert(strstr(body, "\"ready\":false"), "%s", body);
	cr_assert(strstr(body, "\"missing\":[\"joined\"]"), "%s", body);
	cr_assert(strstr(f.c->rhead, "Retry-After: 1"), "%s", f.c->rhead);
	/* Liveness does not follow readiness: /healthz stays 200. */
	cr_assert_eq(get(&f, "GET", "/healthz", body, sizeof(body)), 200);
	/* It joins: ready. */
	f.st.joined = true;
	cr_assert_eq(get(&f, "GET", "/readyz", body, sizeof(body)), 200, "%s", body);
	fx_close(&f);
}

Test(runtime_readyz, each_missing_part_is_named)
{
	struct fixture f;
	char body[512];

	fx_open(&f, true);
	f.st = (struct rt_api_readiness){ true, false, false, NULL };
	cr_assert_eq(get(&f, "GET", "/readyz", body, sizeof(body)), 503, "%s", body);
	cr_assert(strstr(body, "\"missing\":[\"arena\",\"serving\"]"), "%s", body);
	cr_assert(strstr(body, "\"dataplane\":\"none\""), "%s", body);
	f.st = (struct rt_api_readiness){ true, true, false, "shm+bpf" };
	cr_assert_eq(get(&f, "GET", "/readyz", body, sizeof(body)), 503, "%s", body);
	cr_assert(strstr(body, "\"missing\":[\"serving\"]"), "%s", body);
	cr_assert_eq(get(&f, "HEAD", "/readyz", body, sizeof(body)), 503);
	cr_assert_eq(get(&f, "POST", "/readyz", body, sizeof(body)), 405);
	fx_close(&f);
}

Test(runtime_readyz, unwired_is_never_ready)
{
	struct fixture f;
	char body[512];

	fx_open(&f, false);
	cr_assert_eq(get(&f, "GET", "/readyz", body, sizeof(body)), 503, "%s", body);
	cr_assert(strstr(body, "\"wiring\""), "%s", body);
	fx_close(&f);
}
