// SPDX-License-Identifier: MIT
/* Tests of tools/tl_client: URLs, keep-alive, reconnects, 503 retries, errors, bodies, keys. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tl_client.h"
#include "trib_safetensors.h"
#include "tl_simulate.h"
#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_name.h"

/* ---- options ---- */

#include "fake_srv.h"

Test(tools_client, url_parse)
{
	char host[64];
	uint16_t port;

	cr_assert_eq(tl_url_parse("http://127.0.0.1:8080", host, sizeof(host), &port), 0);
	cr_assert_str_eq(host, "127.0.0.1");
	cr_assert_eq(port, 8080);
	cr_assert_eq(tl_url_parse("http://example.org/x", host, sizeof(host), &port), 0);
	cr_assert_str_eq(host, "example.org");
	cr_assert_eq(port, 80);
	cr_assert_eq(tl_url_parse("http://[::1]:9/", host, sizeof(host), &port), 0);
	cr_assert_str_eq(host, "::1");
	cr_assert_eq(port, 9);
	cr_assert_eq(tl_url_parse("http://:80", host, sizeof(host), &port), -EINVAL);
	cr_assert_eq(tl_url_parse("http://h:", host, sizeof(host), &port), -EINVAL);
	cr_assert_eq(tl_url_parse("http://h:0", host, sizeof(host), &port), -EINVAL);
	cr_assert_eq(tl_url_parse("ftp://h", host, sizeof(host), &port), -EINVAL);
}

Test(tools_client, keep_alive_reuses_one_connection)
{
	static const char *const script[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"v1\"\r\nX-Tributary-Round: 4\r\n"
		"\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 204 No Content\r\n\r\n",
	};
	struct tl_http_req req = { .method = "GET", .target = "/a", .bearer = "tok" };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 3);
	c = fake_client(&s);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.body_len, 5);
	cr_assert_str_eq(resp.body, "hello");
	cr_assert_str_eq(resp.etag, "\"v1\"");
	cr_assert_eq(resp.round, 4);
	cr_assert_eq(resp.retry_after, -1);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_str_eq(resp.body, "hi");
	cr_assert_eq(resp.round, -1);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_eq(resp.status, 204);
	cr_assert_eq(resp.body_len, 0);
	cr_assert_eq(tl_client_connects(c), 1);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_eq(s.accepts, 1);
	cr_assert_eq(s.requests, 3);
	cr_assert(strstr(s.heads[0], "GET /a HTTP/1.1\r\n") == s.heads[0]);
	cr_assert_not_null(strstr(s.heads[0], "Authorization: Bearer tok\r\n"));
	cr_assert_not_null(strstr(s.heads[0], "Connection: keep-alive\r\n"));
	cr_assert_null(strcasestr(s.heads[0], "content-length"), "a GET has no body");
	fake_free(&s);
}

/* Also: an interim 100 Continue before the answer is skipped. */
Test(tools_client, reconnects_after_connection_close)
{
	static const char *const script[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
	};
	struct tl_http_req req = { .method = "GET", .target = "/" };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 2);
	c = fake_client(&s);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_str_eq(resp.body, "a");
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_str_eq(resp.body, "b");
	cr_assert_eq(tl_client_connects(c), 2);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_eq(s.accepts, 2);
	fake_free(&s);
}

Test(tools_client, retries_on_503_with_retry_after)
{
	static const char *const script[] = {
		"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0.01\r\n"
		"Content-Length: 0\r\n\r\n",
		"HTTP/1.1 202 Accepted\r\nContent-Length: 24\r\n\r\n{\"round\":2,\"received\":1}",
	};
	enum { P = 50000 };
	struct tl_sim_update u = { .job = "j", .token = "t", .round = 2, .samples = 17,
				   .params = P };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;
	unsigned retries = 99;
	float *x = trib_malloc(P * sizeof(float));

	tl_sim_fill(tl_sim_key(1, 2, 0), 0, x, P);
	u.data = x;
	fake_start(&s, script, 3);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_post_update(c, &u, &resp, &retries), 0);
	cr_assert_eq(resp.status, 202);
	cr_assert_eq(retries, 2);
	cr_assert_eq(tl_client_connects(c), 1);
	tl_client_close(c);
	fake_stop(&s);
	for (int r = 0; r < 3; r++) {
		cr_assert(strstr(s.heads[r], "POST /v1/jobs/j/updates HTTP/1.1\r\n") == s.heads[r]);
		cr_assert_not_null(strstr(s.heads[r], "X-Tributary-Round: 2\r\n"));
		cr_assert_not_null(strstr(s.heads[r], "X-Tributary-Samples: 17\r\n"));
		cr_assert_not_null(
			strstr(s.heads[r], "Content-Type: application/octet-stream\r\n"));
		cr_assert_eq(s.body_len[r], P * 4);
		cr_assert_eq(memcmp(s.body[r], x, P * 4), 0);
	}
	trib_free(x);
	fake_free(&s);
}

Test(tools_client, error_json_is_reported)
{
	static const char *const script[] = {
		"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
		"Content-Length: 30\r\n\r\n{\"error\": \"round 3 is closed\"}",
		"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 9\r\n\r\nboom\nmore",
		"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
	};
	struct tl_http_req req = { .method = "POST", .target = "/x" };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;
	unsigned retries;
	char msg[128];

	fake_start(&s, script, 3);
	c = fake_client(&s);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_eq(resp.status, 400);
	tl_http_error_msg(&resp, msg, sizeof(msg));
	cr_assert_str_eq(msg, "round 3 is closed");
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	tl_http_error_msg(&resp, msg, sizeof(msg));
	cr_assert_str_eq(msg, "HTTP 500: boom");
	/* A 503 that outlasts the wait budget comes back as it is. */
	cr_assert_eq(tl_client_do_retry(c, &req, 0, &resp, &retries), 0);
	cr_assert_eq(resp.status, 503);
	cr_assert_eq(retries, 0);
	tl_http_error_msg(&resp, msg, sizeof(msg));
	cr_assert_str_eq(msg, "HTTP 503");
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_not_null(strstr(s.heads[0], "Content-Length: 0\r\n"), "a POST says its length");
	fake_free(&s);
}

Test(tools_client, safetensors_update_body)
{
	static const char *const script[] = {
		"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
	};
	enum { P = 1000 };
	struct tl_sim_update u = { .job = "j", .round = 0, .samples = 1, .params = P };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;
	unsigned retries;
	float x[P];
	char *hdr;
	size_t len;

	cr_assert_eq(tl_sim_st_header(P, &hdr, &len), 0);
	tl_sim_fill(tl_sim_key(1, 0, 1), 0, x, P);
	u.data = x;
	u.st_hdr = hdr;
	u.st_hdr_len = len;
	fake_start(&s, script, 1);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_post_update(c, &u, &resp, &retries), 0);
	cr_assert_eq(resp.status, 202);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_not_null(strstr(s.heads[0], "Content-Type: application/x-safetensors\r\n"));
	cr_assert_null(strstr(s.heads[0], "Authorization"), "no token, no header");
	cr_assert_eq(s.body_len[0], len + sizeof(x));
	cr_assert_eq(memcmp(s.body[0], hdr, len), 0);
	cr_assert_eq(memcmp(s.body[0] + len, x, sizeof(x)), 0);
	trib_free(hdr);
	fake_free(&s);
}

Test(tools_client, idempotency_key_header)
{
	static const char *const script[] = {
		"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
	};
	struct tl_http_req req = { .method = "POST", .target = "/x", .bearer = "tok",
				   .headers = "X-A: 1\r\n", .idempotency_key = "k-1_A~" };
	struct tl_sim_update u = { .job = "j", .round = 3, .samples = 1, .params = 1 };
	char long_key[TL_IDEM_KEY_MAX + 2];
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;
	unsigned retries;
	float x = 1.0f;

	u.data = &x;
	tl_sim_idem_key(7, 3, 2, 0, u.key, sizeof(u.key));
	fake_start(&s, script, 2);
	c = fake_client(&s);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_eq(tl_sim_post_update(c, &u, &resp, &retries), 0);
	/* Not a key the server takes: refused before anything is sent. */
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	req.idempotency_key = long_key;
	cr_assert_eq(tl_client_do(c, &req, &resp), -EINVAL);
	req.idempotency_key = "";
	cr_assert_eq(tl_client_do(c, &req, &resp), -EINVAL);
	req.idempotency_key = "a b";
	cr_assert_eq(tl_client_do(c, &req, &resp), -EINVAL);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_eq(s.requests, 2);
	cr_assert_not_null(strstr(s.heads[0], "\r\nIdempotency-Key: k-1_A~\r\n"), "%s",
			   s.heads[0]);
	cr_assert_not_null(strstr(s.heads[0], "\r\nX-A: 1\r\n"), "%s", s.heads[0]);
	cr_assert_not_null(strstr(s.heads[1], "\r\nIdempotency-Key: sim-7-3-2\r\n"), "%s",
			   s.heads[1]);
	fake_free(&s);

	long_key[TL_IDEM_KEY_MAX] = '\0';
	cr_assert(tl_idem_key_valid(long_key), "64 bytes is the longest key");
	cr_assert(!tl_idem_key_valid("caf\xc3\xa9"));
	cr_assert(!tl_idem_key_valid("a\tb"));
}
