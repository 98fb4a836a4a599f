// SPDX-License-Identifier: MIT
/* Tests of runtime/http/rt_http: request-head parsing, query and number helpers, response heads. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rt_http.h"
#include "trib_alloc.h"

static const char post_head[] = "POST /v1/jobs/mnist/updates?round=3&samples=120 HTTP/1.1\r\n"
				"Host: gw.example:8080\r\n"
				"Authorization: Bearer tok-123\r\n"
				"Content-Type: application/octet-stream\r\n"
				"Content-Length: 11\r\n"
				"X-Tributary-Round: 3\r\n"
				"X-Tributary-Samples: 120.5\r\n"
				"Expect: 100-continue\r\n"
				"User-Agent: test\r\n"
				"\r\n";

static void assert_post(const struct rt_http_req *r)
{
	cr_assert_eq(r->method, HTTP_POST);
	cr_assert_str_eq(r->path, "/v1/jobs/mnist/updates");
	cr_assert_str_eq(r->query, "round=3&samples=120");
	cr_assert(r->has_content_length);
	cr_assert_eq(r->content_length, 11);
	cr_assert_not(r->chunked);
	cr_assert(r->keep_alive);
	cr_assert_str_eq(r->authorization, "Bearer tok-123");
	cr_assert_str_eq(r->content_type, "application/octet-stream");
	cr_assert_str_eq(r->x_round, "3");
	cr_assert_str_eq(r->x_samples, "120.5");
	cr_assert_str_eq(r->expect, "100-continue");
	cr_assert_eq(r->http_minor, 1);
}

/* Parse the NUL-terminated @head. */
static int parse(const char *head, struct rt_http_req *r, size_t *head_len)
{
	const char *why = NULL;

	return rt_http_parse_head(head, strlen(head), r, head_len, &why);
}

Test(runtime_http, post_head_field_by_field)
{
	struct rt_http_req r;
	size_t head_len = 0;
	const char *why = NULL;

	cr_assert_eq(rt_http_parse_head(post_head, strlen(post_head), &r, &head_len, &why), 0,
		     "why: %s", why);
	cr_assert_eq(head_len, strlen(post_head));
	assert_post(&r);
}

Test(runtime_http, every_split_is_eagain_until_complete)
{
	size_t n = strlen(post_head), head_len;
	struct rt_http_req r;
	const char *why;
	char *buf;

	for (size_t k = 0; k < n; k++) {
		/* Exactly k bytes, so ASan catches a read past them. */
		buf = trib_malloc(k ? k : 1);
		cr_assert_not_null(buf);
		memcpy(buf, post_head, k);
		why = NULL;
		cr_assert_eq(rt_http_parse_head(buf, k, &r, &head_len, &why), -EAGAIN,
			     "prefix %zu: why %s", k, why);
		trib_free(buf);
	}
	buf = trib_malloc(n);
	memcpy(buf, post_head, n);
	cr_assert_eq(rt_http_parse_head(buf, n, &r, &head_len, &why), 0);
	cr_assert_eq(head_len, n);
	assert_post(&r);
	trib_free(buf);
}

Test(runtime_http, pipelined_request_after_body_is_untouched)
{
	char buf[1024];
	const char *second = "GET /v1/jobs/mnist/model HTTP/1.1\r\nHost: x\r\n\r\n";
	size_t off, head_len, head_len2;
	struct rt_http_req r;
	const char *why = NULL;

	off = (size_t)snprintf(buf, sizeof(buf), "%shello world%s", post_head, second);
	cr_assert_eq(rt_http_parse_head(buf, off, &r, &head_len, &why), 0);
	cr_assert_eq(head_len, strlen(post_head));
	assert_post(&r);
	cr_assert_eq(memcmp(buf + head_len, "hello world", r.content_length), 0);
	cr_assert_eq(rt_http_parse_head(buf + head_len + r.content_length,
					off - head_len - r.content_length, &r, &head_len2, &why),
		     0);
	cr_assert_eq(head_len2, strlen(second));
	cr_assert_eq(r.method, HTTP_GET);
	cr_assert_str_eq(r.path, "/v1/jobs/mnist/model");
	cr_assert_str_eq(r.query, "");
	cr_assert_not(r.has_content_length);
}

Test(runtime_http, body_that_looks_like_a_request_is_not_parsed)
{
	/* A GET with no body followed by garbage: the garbage is not the head's business. */
	const char *buf = "GET / HTTP/1.1\r\n\r\n\x01\x02 not http at all\r\n\r\n";
	struct rt_http_req r;
	size_t head_len;

	cr_assert_eq(parse(buf, &r, &head_len), 0);
	cr_assert_eq(head_len, 18);
}

Test(runtime_http, header_names_in_odd_case)
{
	const char *h = "PUT /a HTTP/1.1\r\n"
			"cOnTeNt-LeNgTh: 5\r\n"
			"AUTHORIZATION: bearer abc\r\n"
			"content-TYPE: application/json\r\n"
			"x-tRIBUTARY-ROUND: 9\r\n"
			"X-tributary-samples:7\r\n"
			"eXpEcT: 100-Continue\r\n"
			"\r\n";
	struct rt_http_req r;
	size_t head_len;
	const char *tok;

	cr_assert_eq(parse(h, &r, &head_len), 0);
	cr_assert_eq(r.method, HTTP_PUT);
	cr_assert_eq(r.content_length, 5);
	cr_assert_str_eq(r.authorization, "bearer abc");
	cr_assert_str_eq(r.content_type, "application/json");
	cr_assert_str_eq(r.x_round, "9");
	cr_assert_str_eq(r.x_samples, "7");
	cr_assert_str_eq(r.expect, "100-Continue");
	cr_assert_eq(rt_http_bearer(&r, &tok), 0);
	cr_assert_str_eq(tok, "abc");
}

Test(runtime_http, values_are_trimmed_and_empty_values_kept_apart)
{
	const char *h = "POST /a HTTP/1.1\r\n"
			"X-Tributary-Round:\r\n"
			"X-Tributary-Samples: \t 42 \t \r\n"
			"Content-Type:   \r\n"
			"\r\n";
	struct rt_http_req r;
	size_t head_len;

	cr_assert_eq(parse(h, &r, &head_len), 0);
	cr_assert_str_eq(r.x_round, "");
	cr_assert_str_eq(r.x_samples, "42");
	cr_assert(r.has_x_samples);
	cr_assert_str_eq(r.content_type, "");
}

/* An empty X-Tributary-Samples is sent, not absent: the update handler answers it 400. */
Test(runtime_http, empty_samples_header_is_present)
{
	const char *sent = "POST /a HTTP/1.1\r\nX-Tributary-Samples:\r\nHost: h\r\n\r\n";
	const char *absent = "POST /a HTTP/1.1\r\nHost: h\r\n\r\n";
	struct rt_http_req r;
	size_t head_len;

	cr_assert_eq(parse(sent, &r, &head_len), 0);
	cr_assert(r.has_x_samples);
	cr_assert_str_eq(r.x_samples, "");
	cr_assert_eq(parse(absent, &r, &head_len), 0);
	cr_assert_not(r.has_x_samples);
}

Test(runtime_http, bare_lf_line_endings)
{
	const char *h = "GET /m?x=1 HTTP/1.1\nHost: a\nX-Tributary-Round: 2\n\nBODY";
	struct rt_http_req r;
	size_t head_len;

	cr_assert_eq(parse(h, &r, &head_len), 0);
	cr_assert_eq(head_len, strlen(h) - 4);
	cr_assert_str_eq(r.x_round, "2");
	cr_assert_str_eq(r.query, "x=1");
}

Test(runtime_http, absolute_form_target)
{
	struct rt_http_req r;
	size_t head_len;

	cr_assert_eq(parse("GET http://h:1/p/q?a=b#frag HTTP/1.1\r\n\r\n", &r, &head_len), 0);
	cr_assert_str_eq(r.path, "/p/q");
	cr_assert_str_eq(r.query, "a=b");
	cr_assert_eq(parse("GET http://h HTTP/1.1\r\n\r\n", &r, &head_len), 0);
	cr_assert_str_eq(r.path, "/");
}

Test(runtime_http, malformed_heads_are_einval)
{
	static const char *const bad[] = {
		"GARBAGE\r\n\r\n",
		"GET\r\n\r\n",
		"GET /x HTTP/1.1 extra\r\n\r\n",
		"GET /x HTTQ/1.1\r\n\r\n",
		"FROB /x HTTP/1.1\r\n\r\n",
		"GET /x HTTP/2.0\r\n\r\n",
		"GET /x HTTP/0.9\r\n\r\n",
		"GET x HTTP/1.1\r\n\r\n",
		"GET /a b HTTP/1.1\r\n\r\n",
		"GET /x HTTP/1.1\r\nBad Header: 1\r\n\r\n",
		"GET /x HTTP/1.1\r\nContent-Length: 12a\r\n\r\n",
		"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
		"GET /x HTTP/1.1\r\nX-Tributary-Round: 1\r\nx-tributary-round: 2\r\n\r\n",
		"GET /x HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
		"GET  /x HTTP/1.1\r\n\r\n",
		"GET /x  HTTP/1.1\r\n\r\n",
		"GET /x HTTP/1.1\r\nX-Tributary-Round : 1\r\n\r\n",
		"GET /x HTTP/1.1\r\nX-Tributary-Round: 1\r\n folded\r\n\r\n",
		"GET /x HTTP/1.1\r\nX-Tributary-Round: 1\rX-Tributary-Samples: 2\r\n\r\n",
		"GET /x HTTP/1.1\r\nX-Tributary-Round: 1\r\r\n\r\n",
		"GET /x HTTP/1.1\r\n: empty name\r\n\r\n",
		"GET /x HTTP/1.1\r\nX(R): 1\r\n\r\n",
	};
	struct rt_http_req r;
	size_t head_len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		cr_assert_eq(rt_http_parse_head(bad[i], strlen(bad[i]), &r, &head_len, &why),
			     -EINVAL, "accepted %s", bad[i]);
		cr_assert_not_null(why, "no why for %s", bad[i]);
		cr_assert_gt(strlen(why), 0);
		cr_assert_str_eq(r.path, "", "req not zeroed for %s", bad[i]);
		cr_assert_eq(r.http_minor, 0);
	}
}

Test(runtime_http, nul_in_head_is_einval)
{
	const char h[] = "GET /a\0b HTTP/1.1\r\n\r\n";
	const char v[] = "GET /a HTTP/1.1\r\nX-Tributary-Round: 1\0\r\n\r\n";
	struct rt_http_req r;
	size_t head_len;
	const char *why;

	cr_assert_eq(rt_http_parse_head(h, sizeof(h) - 1, &r, &head_len, &why), -EINVAL);
	cr_assert_eq(rt_http_parse_head(v, sizeof(v) - 1, &r, &head_len, &why), -EINVAL);
}

Test(runtime_http, oversize_value_is_e2big)
{
	char h[1024], val[300];
	struct rt_http_req r;
	size_t head_len;
	const char *why = NULL;

	memset(val, 'a', sizeof(val) - 1);
	val[sizeof(val) - 1] = '\0';
	snprintf(h, sizeof(h), "POST /a HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n", val);
	cr_assert_eq(rt_http_parse_head(h, strlen(h), &r, &head_len, &why), -E2BIG);
	cr_assert_str_eq(why, "header value too long");
	/* Longest value that fits: 255 bytes. */
	snprintf(h, sizeof(h), "POST /a HTTP/1.1\r\nAuthorization: %.255s\r\n\r\n", val);
	cr_assert_eq(parse(h, &r, &head_len), 0);
	cr_assert_eq(strlen(r.authorization), 255);
	snprintf(h, sizeof(h), "POST /a HTTP/1.1\r\nX-Tributary-Round: %.32s\r\n\r\n", val);
	cr_assert_eq(parse(h, &r, &head_len), -E2BIG);
	/* An unknown header may be long. */
	snprintf(h, sizeof(h), "POST /a HTTP/1.1\r\nX-Other: %s\r\n\r\n", val);
	cr_assert_eq(parse(h, &r, &head_len), 0);
}

Test(runtime_http, oversize_target_is_e2big)
{
	char h[2048], p[600];
	struct rt_http_req r;
	size_t head_len;

	memset(p, 'p', sizeof(p) - 1);
	p[sizeof(p) - 1] = '\0';
	snprintf(h, sizeof(h), "GET /%s HTTP/1.1\r\n\r\n", p);
	cr_assert_eq(parse(h, &r, &head_len), -E2BIG);
	snprintf(h, sizeof(h), "GET /?%s HTTP/1.1\r\n\r\n", p);
	cr_assert_eq(parse(h, &r, &head_len), -E2BIG);
	snprintf(h, sizeof(h), "GET /%s%s HTTP/1.1\r\n\r\n", p, p);
	cr_assert_eq(parse(h, &r, &head_len), -E2BIG);
	/* 511 bytes of path fit. */
	snprintf(h, sizeof(h), "GET /%.510s HTTP/1.1\r\n\r\n", p);
	cr_assert_eq(parse(h, &r, &head_len), 0);
	cr_assert_eq(strlen(r.path), 511);
}

Test(runtime_http, oversize_head_is_e2big)
{
	size_t n = RT_HTTP_HEAD_MAX + 100, off;
	char *h = trib_malloc(n);
	struct rt_http_req r;
	size_t head_len;
	const char *why = NULL;

	cr_assert_not_null(h);
	off = (size_t)sprintf(h, "GET / HTTP/1.1\r\n");
	while (off + 32 < n)
		off += (size_t)sprintf(h + off, "X-Pad-%05zu: 0123456789\r\n", off);
	/* No blank line within RT_HTTP_HEAD_MAX bytes. */
	cr_assert_eq(rt_http_parse_head(h, off, &r, &head_len, &why), -E2BIG);
	cr_assert_str_eq(why, "request head too large");
	/* Just below the limit it is still incomplete. */
	cr_assert_eq(rt_http_parse_head(h, RT_HTTP_HEAD_MAX - 1, &r, &head_len, &why), -EAGAIN);
	/* A head ending right at the limit is accepted. */
	off = (size_t)sprintf(h, "GET / HTTP/1.1\r\nX-Pad: ");
	memset(h + off, 'a', RT_HTTP_HEAD_MAX - off - 4);
	memcpy(h + RT_HTTP_HEAD_MAX - 4, "\r\n\r\n", 4);
	cr_assert_eq(rt_http_parse_head(h, n, &r, &head_len, &why), 0, "why: %s", why);
	cr_assert_eq(head_len, RT_HTTP_HEAD_MAX);
	trib_free(h);
}

Test(runtime_http, chunked_is_flagged)
{
	struct rt_http_req r;
	size_t head_len;

	cr_assert_eq(parse("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
			   &r, &head_len),
		     0);
	cr_assert(r.chunked);
	cr_assert_not(r.has_content_length);
	cr_assert_eq(parse("POST /a HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n", &r,
			   &head_len),
		     0);
	cr_assert(r.chunked);
	cr_assert_eq(parse("POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &r, &head_len), 0);
	cr_assert_not(r.chunked);
	cr_assert(r.has_content_length);
	cr_assert_eq(r.content_length, 0);
}

Test(runtime_http, keep_alive_by_version_and_connection)
{
	struct rt_http_req r;
	size_t head_len;

	cr_assert_eq(parse("GET / HTTP/1.0\r\n\r\n", &r, &head_len), 0);
	cr_assert_not(r.keep_alive);
	cr_assert_eq(r.http_minor, 0);
	cr_assert_eq(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r, &head_len), 0);
	cr_assert(r.keep_alive);
	cr_assert_eq(parse("GET / HTTP/1.1\r\n\r\n", &r, &head_len), 0);
	cr_assert(r.keep_alive);
	cr_assert_eq(r.http_minor, 1);
	cr_assert_eq(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &r, &head_len), 0);
	cr_assert_not(r.keep_alive);
	cr_assert_eq(parse("GET / HTTP/1.1\r\nconnection: Close\r\n\r\n", &r, &head_len), 0);
	cr_assert_not(r.keep_alive);
}

Test(runtime_http, leading_blank_lines_are_skipped)
{
	const char *h = "\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
	struct rt_http_req r;
	size_t head_len;

	cr_assert_eq(rt_http_parse_head(h, 4, &r, &head_len, NULL), -EAGAIN);
	cr_assert_eq(parse(h, &r, &head_len), 0);
	cr_assert_eq(head_len, strlen(h));
	cr_assert_str_eq(r.path, "/x");
}

Test(runtime_http, query_get)
{
	const char *q = "round=3&samples=120&flag&name=a%20b+c&rounds=9&round=4&bad=%zz&nul=%00";
	char out[16];

	cr_assert_eq(rt_http_query_get(q, "round", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "3");
	cr_assert_eq(rt_http_query_get(q, "samples", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "120");
	cr_assert_eq(rt_http_query_get(q, "flag", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "");
	cr_assert_eq(rt_http_query_get(q, "name", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "a b c");
	cr_assert_eq(rt_http_query_get(q, "rounds", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "9");
	cr_assert_eq(rt_http_query_get(q, "roun", out, sizeof(out)), -ENOENT);
	cr_assert_eq(rt_http_query_get(q, "missing", out, sizeof(out)), -ENOENT);
	cr_assert_eq(rt_http_query_get(q, "bad", out, sizeof(out)), -EINVAL);
	cr_assert_eq(rt_http_query_get(q, "nul", out, sizeof(out)), -EINVAL);
	cr_assert_eq(rt_http_query_get(q, "samples", out, 3), -E2BIG);
	cr_assert_eq(rt_http_query_get(q, "samples", out, 4), 0);
	cr_assert_eq(rt_http_query_get("", "a", out, sizeof(out)), -ENOENT);
	cr_assert_eq(rt_http_query_get("a=1&", "a", out, sizeof(out)), 0);
	cr_assert_eq(rt_http_query_get("&&a=%4", "a", out, sizeof(out)), -EINVAL);
	cr_assert_eq(rt_http_query_get("=v", "", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "v");
}

Test(runtime_http, parse_double_edges)
{
	static const char *const bad[] = { "", "-", ".", "1.5x", " 1", "1 ", "+1", "inf",
					   "nan", "0x10", "1e", "1e+", "1e999", "--1", "1..2" };
	double v = 7;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(rt_parse_double(bad[i], &v), -EINVAL, "accepted \"%s\"", bad[i]);
	cr_assert_eq(v, 7);
	cr_assert_eq(rt_parse_double("120.5", &v), 0);
	cr_assert_float_eq(v, 120.5, 0);
	cr_assert_eq(rt_parse_double("-2", &v), 0);
	cr_assert_float_eq(v, -2.0, 0);
	cr_assert_eq(rt_parse_double("1e3", &v), 0);
	cr_assert_float_eq(v, 1000.0, 0);
	cr_assert_eq(rt_parse_double("1.", &v), 0);
	cr_assert_float_eq(v, 1.0, 0);
	cr_assert_eq(rt_parse_double(".25E-1", &v), 0);
	cr_assert_float_eq(v, 0.025, 1e-15);
	cr_assert_eq(rt_parse_double("0", &v), 0);
	cr_assert_float_eq(v, 0.0, 0);
}

Test(runtime_http, reasons)
{
	cr_assert_str_eq(rt_http_reason(200), "OK");
	cr_assert_str_eq(rt_http_reason(201), "Created");
	cr_assert_str_eq(rt_http_reason(202), "Accepted");
	cr_assert_str_eq(rt_http_reason(204), "No Content");
	cr_assert_str_eq(rt_http_reason(400), "Bad Request");
	cr_assert_str_eq(rt_http_reason(401), "Unauthorized");
	cr_assert_str_eq(rt_http_reason(404), "Not Found");
	cr_assert_str_eq(rt_http_reason(405), "Method Not Allowed");
	cr_assert_str_eq(rt_http_reason(409), "Conflict");
	cr_assert_str_eq(rt_http_reason(411), "Length Required");
	cr_assert_str_eq(rt_http_reason(413), "Content Too Large");
	cr_assert_str_eq(rt_http_reason(415), "Unsupported Media Type");
	cr_assert_str_eq(rt_http_reason(422), "Unprocessable Content");
	cr_assert_str_eq(rt_http_reason(431), "Request Header Fields Too Large");
	cr_assert_str_eq(rt_http_reason(500), "Internal Server Error");
	cr_assert_str_eq(rt_http_reason(503), "Service Unavailable");
	cr_assert_str_eq(rt_http_reason(418), "Unknown");
}

Test(runtime_http, format_head_exact_bytes)
{
	char buf[256];
	const char *want = "HTTP/1.1 200 OK\r\n"
			   "Content-Type: application/json\r\n"
			   "Content-Length: 17\r\n"
			   "Connection: keep-alive\r\n"
			   "\r\n";
	const char *want2 = "HTTP/1.1 503 Service Unavailable\r\n"
			    "Content-Length: 0\r\n"
			    "Connection: close\r\n"
			    "Retry-After: 1\r\n"
			    "\r\n";
	const char *want3 = "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n";
	int n;

	n = rt_http_format_head(buf, sizeof(buf), 200, "application/json", 17, true, NULL);
	cr_assert_eq(n, (int)strlen(want));
	cr_assert_str_eq(buf, want);
	n = rt_http_format_head(buf, sizeof(buf), 503, NULL, 0, false, "Retry-After: 1\r\n");
	cr_assert_eq(n, (int)strlen(want2));
	cr_assert_str_eq(buf, want2);
	n = rt_http_format_head(buf, sizeof(buf), 204, NULL, 0, true, NULL);
	cr_assert_eq(n, (int)strlen(want3));
	cr_assert_str_eq(buf, want3);
	n = rt_http_format_head(buf, sizeof(buf), 200, NULL, UINT64_MAX, true, NULL);
	cr_assert_gt(n, 0);
	cr_assert(strstr(buf, "Content-Length: 18446744073709551615\r\n"));
}

Test(runtime_http, format_head_refuses_what_does_not_fit)
{
	char buf[256];
	size_t need = strlen("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");

	/* Needs room for the NUL too. */
	cr_assert_eq(rt_http_format_head(buf, need, 200, NULL, 5, false, NULL), -ENOSPC);
	cr_assert_eq(rt_http_format_head(buf, need + 1, 200, NULL, 5, false, NULL), (int)need);
	cr_assert_eq(rt_http_format_head(buf, 0, 200, NULL, 5, false, NULL), -ENOSPC);
	cr_assert_eq(rt_http_format_head(buf, 10, 200, NULL, 5, false, NULL), -ENOSPC);
	cr_assert_eq(rt_http_format_head(buf, sizeof(buf), 200, "a\r\nX-Evil: 1", 5, false, NULL),
		     -EINVAL);
	cr_assert_eq(rt_http_format_head(buf, sizeof(buf), 42, NULL, 5, false, NULL), -EINVAL);
}

Test(runtime_http, json_error_escapes)
{
	char buf[128];
	int n;

	n = rt_http_json_error(buf, sizeof(buf), "bad round");
	cr_assert_str_eq(buf, "{\"error\":\"bad round\"}");
	cr_assert_eq(n, (int)strlen(buf));
	rt_http_json_error(buf, sizeof(buf), "say \"hi\" \\ now");
	cr_assert_str_eq(buf, "{\"error\":\"say \\\"hi\\\" \\\\ now\"}");
	rt_http_json_error(buf, sizeof(buf), "a\nb\tc\x01\x1f\x7f");
	cr_assert_str_eq(buf, "{\"error\":\"a\\u000ab\\u0009c\\u0001\\u001f\x7f\"}");
	rt_http_json_error(buf, sizeof(buf), "caf\xc3\xa9 \xff \xe2\x82");
	cr_assert_str_eq(buf, "{\"error\":\"caf\xc3\xa9 \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\"}");
	rt_http_json_error(buf, sizeof(buf), "");
	cr_assert_str_eq(buf, "{\"error\":\"\"}");
}

Test(runtime_http, json_error_refuses_what_does_not_fit)
{
	char buf[32];
	size_t need = strlen("{\"error\":\"abc\"}");

	cr_assert_eq(rt_http_json_error(buf, need, "abc"), -ENOSPC);
	cr_assert_eq(rt_http_json_error(buf, need + 1, "abc"), (int)need);
	cr_assert_eq(rt_http_json_error(buf, 0, "abc"), -ENOSPC);
	cr_assert_eq(rt_http_json_error(buf, sizeof(buf), "\"\"\"\"\"\"\"\"\"\"\"\"\""),
		     -ENOSPC);
}

Test(runtime_http, bearer)
{
	struct rt_http_req r;
	const char *tok = NULL;

	memset(&r, 0, sizeof(r));
	cr_assert_eq(rt_http_bearer(&r, &tok), -ENOENT);
	strcpy(r.authorization, "Bearer abc.def");
	cr_assert_eq(rt_http_bearer(&r, &tok), 0);
	cr_assert_str_eq(tok, "abc.def");
	cr_assert_eq(tok, r.authorization + 7);
	strcpy(r.authorization, "BEARER   xyz");
	cr_assert_eq(rt_http_bearer(&r, &tok), 0);
	cr_assert_str_eq(tok, "xyz");
	strcpy(r.authorization, "Basic dXNlcjpwdw==");
	cr_assert_eq(rt_http_bearer(&r, &tok), -ENOENT);
	strcpy(r.authorization, "Bearer");
	cr_assert_eq(rt_http_bearer(&r, &tok), -ENOENT);
	strcpy(r.authorization, "Bearer ");
	cr_assert_eq(rt_http_bearer(&r, &tok), -ENOENT);
	strcpy(r.authorization, "Bearertoken");
	cr_assert_eq(rt_http_bearer(&r, &tok), -ENOENT);
}

/* Accept: a list header, so two lines join; too long is flagged, not a refusal of the request. */
Test(runtime_http, accept_joined_and_long_is_soft)
{
	struct rt_http_req r;
	size_t hl;
	char head[1200];

	cr_assert_eq(parse("GET /m HTTP/1.1\r\nAccept: application/x-npz ;q=0.5 \r\n"
			   "accept:  */*\r\n\r\n", &r, &hl), 0);
	cr_assert_str_eq(r.accept, "application/x-npz ;q=0.5,*/*");
	cr_assert_not(r.accept_too_long);
	snprintf(head, sizeof(head), "GET /m HTTP/1.1\r\nAccept: %0300d\r\nX-Tributary-Round: 4"
		 "\r\n\r\n", 0);
	cr_assert_eq(parse(head, &r, &hl), 0);
	cr_assert(r.accept_too_long);
	cr_assert_str_eq(r.accept, "");
	cr_assert_str_eq(r.x_round, "4");
	/* A second line that no longer fits. */
	snprintf(head, sizeof(head), "GET /m HTTP/1.1\r\nAccept: %0250d\r\nAccept: text/html\r\n"
		 "\r\n", 0);
	cr_assert_eq(parse(head, &r, &hl), 0);
	cr_assert(r.accept_too_long);
}
