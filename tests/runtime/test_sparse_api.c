// SPDX-License-Identifier: MIT
/* Tests of sparse update bodies (runtime/api/rt_api_sparse.c) through the router, detached. */
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

/* One request with a body of @blen bytes; the status, the answer's body in f->c->rbody. */
static int send(struct fixture *f, const char *path, const char *token, const char *ctype,
		const void *body, size_t blen)
{
	char *req = trib_malloc(1024 + blen);
	int n, status = 0;

	cr_assert_not_null(req);
	n = snprintf(req, 1024, "POST %s HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
		     "Content-Type: %s\r\nX-Tributary-Round: 0\r\nContent-Length: %zu\r\n\r\n",
		     path, token, ctype, blen);
	memcpy(req + n, body, blen);
	cr_assert_eq(rt_conn_feed(f->c, req, (size_t)n + blen), 0);
	trib_free(req);
	cr_assert(rt_conn_answered(f->c), "%s: no answer", path);
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
	if (!has)
		cr_log_error("answer: %s", buf);
	trib_free(buf);
	return has;
}

/* A tensor of a test body: name, dtype, shape (1-d or 2-d: rows 0 = 1-d) and raw bytes. */
struct ent {
	const char *name, *dtype;
	size_t rows, n, esize;
	const void *data;
};

/* A safetensors file of @ents, each tensor's data at an 8-byte boundary (*len bytes). */
static uint8_t *st_file(const struct ent *ents, size_t k, size_t *len)
{
	char hdr[2048];
	size_t hn = 1, off = 0, data = 0;
	uint8_t *out;

	hdr[0] = '{';
	for (size_t i = 0; i < k; i++) {
		size_t nb = ents[i].n * ents[i].esize * (ents[i].rows ? ents[i].rows : 1);

		off = (off + 7) & ~(size_t)7;
		if (ents[i].rows)
			hn += (size_t)snprintf(hdr + hn, sizeof(hdr) - hn, "%s\"%s\":{\"dtype\":\"%s\","
					       "\"shape\":[%zu,%zu],\"data_offsets\":[%zu,%zu]}",
					       i ? "," : "", ents[i].name, ents[i].dtype,
					       ents[i].rows, ents[i].n, off, off + nb);
		else
			hn += (size_t)snprintf(hdr + hn, sizeof(hdr) - hn, "%s\"%s\":{\"dtype\":\"%s\","
					       "\"shape\":[%zu],\"data_offsets\":[%zu,%zu]}",
					       i ? "," : "", ents[i].name, ents[i].dtype, ents[i].n,
					       off, off + nb);
		off += nb;
	}
	hdr[hn++] = '}';
	while (hn % 8)
		hdr[hn++] = ' ';
	*len = 8 + hn + off;
	out = trib_calloc(1, *len);
	cr_assert_not_null(out);
	for (int b = 0; b < 8; b++)
		out[b] = (uint8_t)((uint64_t)hn >> (8 * b));
	memcpy(out + 8, hdr, hn);
	for (size_t i = 0; i < k; i++) {
		size_t nb = ents[i].n * ents[i].esize * (ents[i].rows ? ents[i].rows : 1);

		data = (data + 7) & ~(size_t)7;
		memcpy(out + 8 + hn + data, ents[i].data, nb);
		data += nb;
	}
	return out;
}

static const float b4[4] = { 1, 2, 3, 4 };
static const float v3[3] = { 0.5f, -1, 2 };
static const float w10[10];

/* Body: b dense, w as @idx (I64, @n of them) + v3's first @n values. */
static int post_sparse(struct fixture *f, const char *tok, const int64_t *idx, size_t n)
{
	struct ent e[] = { { "b", "F32", 0, 4, 4, b4 },
			   { "w.indices", "I64", 0, n, 8, idx },
			   { "w.values", "F32", 0, n, 4, v3 } };
	size_t len;
	uint8_t *body = st_file(e, 3, &len);
	int st = send(f, "/v1/jobs/s/updates", tok, "application/x-safetensors", body, len);

	trib_free(body);
	return st;
}

static const char *job(struct fixture *f, const char *name, const char *algo)
{
	char spec[400];

	snprintf(spec, sizeof(spec), "{\"name\":\"%s\",\"clients_per_round\":9,\"algorithm\":"
		 "\"%s\",\"tensors\":[{\"name\":\"w\",\"shape\":[10]},{\"name\":\"b\","
		 "\"shape\":[4]}]}", name, algo);
	cr_assert_eq(send(f, "/v1/jobs", RT_TEST_ADMIN, "application/json", spec, strlen(spec)),
		     201, "create %s", name);
	return rt_job_find(f->tn.n, name)->token;
}

Test(runtime_sparse, bad_indices_are_422_naming_tensor_index_and_position)
{
	struct fixture f;
	const char *tok;
	int st;

	fx_open(&f);
	tok = job(&f, "s", "fedavg");
	cr_assert_eq(post_sparse(&f, tok, (const int64_t[]){ 1, 4, 10 }, 3), 422);
	cr_assert(body_has(&f, "tensor \\\"w.indices\\\": index 10 at position 2 is out of range: "
			   "flat indices lie in [0, 10)"));
	cr_assert_eq(post_sparse(&f, tok, (const int64_t[]){ -3, 4, 9 }, 3), 422);
	cr_assert(body_has(&f, "index -3 at position 0 is out of range"));
	cr_assert_eq(post_sparse(&f, tok, (const int64_t[]){ 1, 4, 4 }, 3), 422);
	cr_assert(body_has(&f, "index 4 appears twice, at positions 1 and 2"));
	cr_assert_eq(post_sparse(&f, tok, (const int64_t[]){ 1, 7, 4 }, 3), 422);
	cr_assert(body_has(&f, "index 4 at position 2 follows 7: indices must be strictly "
			   "increasing"));
	/* Nothing counted; a good one passes every check (no functions here: not a 4xx). */
	cr_assert_eq(rt_job_find(f.tn.n, "s")->accepted_total, 0);
	st = post_sparse(&f, tok, (const int64_t[]){ 0, 4, 9 }, 3);
	cr_assert(st != 400 && st != 422, "a good sparse body: %d", st);
	fx_close(&f);
}

Test(runtime_sparse, pairs_names_and_dtypes_are_checked)
{
	static const int64_t i3[3] = { 1, 2, 3 };
	static const int32_t j3[3] = { 1, 2, 3 };
	static const struct {
		struct ent e[3];
		size_t k;
		const char *word;
	} cases[] = {
		{ { { "b", "F32", 0, 4, 4, b4 }, { "w.indices", "I64", 0, 3, 8, i3 } }, 2,
		  "\\\"w.indices\\\" has no \\\"w.values\\\"" },
		{ { { "b", "F32", 0, 4, 4, b4 }, { "w.values", "F32", 0, 3, 4, v3 } }, 2,
		  "\\\"w.values\\\" has no \\\"w.indices\\\"" },
		{ { { "b", "F32", 0, 4, 4, b4 }, { "w", "F32", 0, 10, 4, w10 },
		    { "x.indices", "I64", 0, 3, 8, i3 } }, 3, "the job has no tensor \\\"x\\\"" },
		{ { { "w", "F32", 0, 10, 4, w10 }, { "b.indices", "I32", 0, 3, 4, j3 },
		    { "b", "F32", 0, 4, 4, b4 } }, 3, "both dense and sparse" },
		{ { { "b", "F32", 0, 4, 4, b4 }, { "w.indices", "F32", 0, 3, 4, v3 },
		    { "w.values", "F32", 0, 3, 4, v3 } }, 3, "indices are I32 or I64" },
		{ { { "b", "F32", 0, 4, 4, b4 }, { "w.indices", "I32", 0, 3, 4, j3 },
		    { "w.values", "I32", 0, 3, 4, j3 } }, 3, "sparse values are F32" },
		{ { { "b", "F32", 0, 4, 4, b4 }, { "w.indices", "I32", 0, 3, 4, j3 },
		    { "w.values", "F32", 0, 2, 4, v3 } }, 3, "of one length" },
		{ { { "b", "F32", 0, 4, 4, b4 }, { "w.indices", "I32", 3, 1, 4, j3 },
		    { "w.values", "F32", 0, 3, 4, v3 } }, 3, "1-dimensional" },
	};
	struct fixture f;
	const char *tok;

	fx_open(&f);
	tok = job(&f, "s", "fedavg");
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t len;
		uint8_t *body = st_file(cases[c].e, cases[c].k, &len);

		cr_assert_eq(send(&f, "/v1/jobs/s/updates", tok, "application/x-safetensors", body,
				  len), 422, "case %zu", c);
		cr_assert(body_has(&f, cases[c].word), "case %zu: no \"%s\"", c, cases[c].word);
		trib_free(body);
	}
	cr_assert_eq(rt_job_find(f.tn.n, "s")->accepted_total, 0);
	fx_close(&f);
}

Test(runtime_sparse, rules_that_are_not_a_weighted_mean_refuse_sparse_bodies)
{
	static const char *const algos[] = { "median", "krum" };
	struct fixture f;

	fx_open(&f);
	for (size_t a = 0; a < sizeof(algos) / sizeof(algos[0]); a++) {
		char name[8];
		const char *tok;
		char path[64];
		size_t len;
		struct ent e[] = { { "b", "F32", 0, 4, 4, b4 },
				   { "w.indices", "I64", 0, 1, 8, (const int64_t[]){ 2 } },
				   { "w.values", "F32", 0, 1, 4, v3 } };
		uint8_t *body = st_file(e, 3, &len);

		snprintf(name, sizeof(name), "r%zu", a);
		snprintf(path, sizeof(path), "/v1/jobs/%s/updates", name);
		tok = job(&f, name, algos[a]);
		cr_assert_eq(send(&f, path, tok, "application/x-safetensors", body, len), 422);
		cr_assert(body_has(&f, "robust rules compare every coordinate"), "%s", algos[a]);
		cr_assert(body_has(&f, algos[a]));
		trib_free(body);
	}
	fx_close(&f);
}
