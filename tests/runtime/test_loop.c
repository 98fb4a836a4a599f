// SPDX-License-Identifier: MIT
/* Tests of http/rt_loop: the one encoding of io_uring user_data, and detached connections. */
#include <criterion/criterion.h>

#include <string.h>

#include "rt_loop.h"
#include "rt_loop_priv.h"

Test(runtime_loop, user_data_round_trips)
{
	struct rt_conn c; /* 16-aligned (its user area is) */

	cr_assert_eq(ud_tag(ud_conn(&c)), OP_CONN);
	cr_assert_eq(ud_conn_of(ud_conn(&c)), &c);
	cr_assert_eq(ud_tag(ud_plain(OP_TICK)), OP_TICK);
	cr_assert_eq(ud_tag(ud_ext(3, 0xfffffffeu)), OP_EXT);
	cr_assert_eq(ud_handler(ud_ext(3, 0xfffffffeu)), 3);
	cr_assert_eq(ud_key(ud_ext(3, 0xfffffffeu)), 0xfffffffeu);
	cr_assert_eq(ud_handler(ud_ext(RT_LOOP_MAX_HANDLERS - 1, 0)), RT_LOOP_MAX_HANDLERS - 1);
}

struct seen {
	int heads;
	int bodies;
	uint8_t body[8];
};

static void on_body(struct rt_conn *c)
{
	struct seen *s = rt_conn_ctx(c);

	s->bodies++;
	rt_conn_respond(c, 202, "text/plain", "ok", 2, NULL);
}

static void on_head(void *ctx, struct rt_conn *c)
{
	struct seen *s = ctx;

	s->heads++;
	if (c->req.content_length)
		rt_conn_read_body(c, s->body, c->req.content_length, on_body);
	else
		rt_conn_error(c, 404, "no", -1, NULL);
}

Test(runtime_loop, detached_connection_reads_head_and_body_and_keeps_the_answer)
{
	static const char req1[] = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
	static const char req2[] = "GET /y HTTP/1.1\r\n\r\n";
	struct seen s = { 0 };
	struct rt_conn_hooks h = { .ctx = &s, .on_head = on_head };
	struct rt_loop *l;
	struct rt_conn *c;

	cr_assert_eq(rt_loop_open_detached(&l, &h), 0);
	c = rt_conn_new_detached(l);
	cr_assert_not_null(c);
	cr_assert_eq(rt_conn_feed(c, req1, sizeof(req1) - 1), 0);
	cr_assert_eq(s.heads, 1);
	cr_assert_not(rt_conn_answered(c), "3 bytes of the body are still to come");
	cr_assert_eq(rt_conn_feed(c, "cde", 3), 0);
	cr_assert_eq(s.bodies, 1);
	cr_assert_eq(memcmp(s.body, "abcde", 5), 0);
	cr_assert(rt_conn_answered(c));
	cr_assert_eq(strncmp(c->rhead, "HTTP/1.1 202 ", 13), 0);
	cr_assert_eq(rt_conn_feed(c, req2, sizeof(req2) - 1), 0, "the next request");
	cr_assert_eq(strncmp(c->rhead, "HTTP/1.1 404 ", 13), 0);
	cr_assert_eq(rt_loop_stats(l)->requests, 2);
	rt_loop_close(l);
}
