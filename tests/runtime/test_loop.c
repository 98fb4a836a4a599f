// SPDX-License-Identifier: MIT
/* Tests of http/rt_loop: the one encoding of io_uring user_data, and detached connections. */
#include <criterion/criterion.h>

#include <string.h>
#include <unistd.h>

#include "rt_loop.h"
#include "rt_loop_priv.h"
#include "trib_time.h"

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

struct watched {
	int calls;
	uint64_t got[4];
	int bodies_when_last; /* on_body calls seen at the last watch call */
	struct seen *s;
};

static struct watched watched_;

static void on_bytes(struct rt_conn *c)
{
	if (watched_.calls < 4)
		watched_.got[watched_.calls] = c->body_got;
	watched_.calls++;
	watched_.bodies_when_last = watched_.s->bodies;
}

static void on_head_watched(void *ctx, struct rt_conn *c)
{
	struct seen *s = ctx;

	s->heads++;
	rt_conn_watch_body(c, on_bytes);
	rt_conn_read_body(c, s->body, c->req.content_length, on_body);
}

Test(runtime_loop, a_watched_body_reports_each_piece_before_its_callback)
{
	static const char req1[] = "POST /x HTTP/1.1\r\nContent-Length: 6\r\n\r\nab";
	struct seen s = { 0 };
	struct rt_conn_hooks h = { .ctx = &s, .on_head = on_head_watched };
	struct rt_loop *l;
	struct rt_conn *c;

	watched_ = (struct watched){ .s = &s };
	cr_assert_eq(rt_loop_open_detached(&l, &h), 0);
	c = rt_conn_new_detached(l);
	cr_assert_not_null(c);
	cr_assert_eq(rt_conn_feed(c, req1, sizeof(req1) - 1), 0);
	cr_assert_eq(rt_conn_feed(c, "c", 1), 0);
	cr_assert_eq(rt_conn_feed(c, "def", 3), 0);
	cr_assert_eq(watched_.calls, 3, "the bytes with the head, then each piece");
	cr_assert_eq(watched_.got[0], 2);
	cr_assert_eq(watched_.got[1], 3);
	cr_assert_eq(watched_.got[2], 6);
	cr_assert_eq(watched_.bodies_when_last, 0, "before the body's callback");
	cr_assert_eq(s.bodies, 1);
	rt_loop_close(l);
}

/* --- admission control: the pure parts and the timer bookkeeping --- */

Test(runtime_loop, accept_backoff_doubles_from_50_ms_to_1_s)
{
	static const uint32_t want[] = { 50, 100, 200, 400, 800, 1000, 1000 };
	uint32_t ms = 0;

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		ms = rt_accept_backoff_next(ms);
		cr_assert_eq(ms, want[i], "pause %zu: %u ms, want %u", i, ms, want[i]);
	}
	cr_assert_eq(rt_accept_backoff_next(0), RT_ACCEPT_BACKOFF_MIN_MS, "reset by an accept");
	cr_assert_eq(rt_accept_backoff_next(999), RT_ACCEPT_BACKOFF_MAX_MS);
}

Test(runtime_loop, ratelog_allows_one_line_a_second_and_counts_the_rest)
{
	struct rt_ratelog r = { 0 };
	uint64_t s = 99, t0 = 5000000000ull;

	cr_assert(rt_ratelog_ok(&r, t0, &s));
	cr_assert_eq(s, 0);
	for (int i = 0; i < 1000; i++)
		cr_assert_not(rt_ratelog_ok(&r, t0 + (uint64_t)i * 999000ull, &s));
	cr_assert(rt_ratelog_ok(&r, t0 + 1000000000ull, &s), "a second later");
	cr_assert_eq(s, 1000, "the suppressed lines are counted");
	cr_assert_not(rt_ratelog_ok(&r, t0 + 1500000000ull, &s));
}

Test(runtime_loop, connection_cap_is_80_percent_of_the_fd_limit_unless_set)
{
	cr_assert_eq(rt_loop_max_conns(0, 1024), 819);
	cr_assert_eq(rt_loop_max_conns(0, 300), 240);
	cr_assert_eq(rt_loop_max_conns(0, 1), 1, "never 0");
	cr_assert_eq(rt_loop_max_conns(0, 1ull << 40), RT_MAX_CONNS_CEIL);
	cr_assert_eq(rt_loop_max_conns(5000, 1024), 5000, "the flag wins");
}

Test(runtime_loop, timeout_deadlines_by_phase)
{
	struct rt_loop_limits lim = { .head_timeout_s = 2, .body_timeout_s = 3,
				      .idle_timeout_s = 0 };

	cr_assert_eq(rt_timeout_deadline(&lim, RT_TO_HEAD, 10), 10 + 2000000000ull);
	cr_assert_eq(rt_timeout_deadline(&lim, RT_TO_BODY, 10), 10 + 3000000000ull);
	cr_assert_eq(rt_timeout_deadline(&lim, RT_TO_SEND, 10), 10 + 3000000000ull,
		     "a stalled send is timed like a stalled body");
	cr_assert_eq(rt_timeout_deadline(&lim, RT_TO_IDLE, 10), 0, "0 s: off");
	cr_assert_eq(rt_timeout_deadline(&lim, RT_TO_NONE, 10), 0);
	cr_assert_str_eq(rt_timeout_phase_name(RT_TO_IDLE), "idle");
}

struct held {
	int freed;    /* on_free calls: where the api gives a body's slot back */
	int ended;    /* on_request_end calls */
	int parked;
	uint8_t body[64];
};

static void held_on_body(struct rt_conn *c)
{
	rt_conn_respond(c, 202, "text/plain", "ok", 2, NULL);
}

static void held_on_head(void *ctx, struct rt_conn *c)
{
	struct held *h = ctx;

	if (!strcmp(c->req.path, "/poll")) {
		h->parked++;
		rt_conn_park(c);
	} else if (c->req.content_length) {
		rt_conn_read_body(c, h->body, c->req.content_length, held_on_body);
	} else {
		rt_conn_respond(c, 200, "text/plain", "ok", 2, NULL);
	}
}

static void held_on_free(void *ctx, struct rt_conn *c)
{
	(void)c;
	((struct held *)ctx)->freed++;
}

static void held_on_end(void *ctx, struct rt_conn *c)
{
	(void)c;
	((struct held *)ctx)->ended++;
}

static struct rt_loop *held_loop(struct held *h)
{
	struct rt_conn_hooks hooks = { .ctx = h, .on_head = held_on_head,
				       .on_request_end = held_on_end, .on_free = held_on_free };
	struct rt_loop *l;

	cr_assert_eq(rt_loop_open_detached(&l, &hooks), 0);
	l->opts.limits = (struct rt_loop_limits){ .head_timeout_s = 10, .body_timeout_s = 15,
						  .idle_timeout_s = 60 };
	return l;
}

#define SEC 1000000000ull

Test(runtime_loop, a_stalled_body_is_closed_after_the_body_timeout_and_its_hook_runs)
{
	static const char head[] = "POST /u HTTP/1.1\r\nContent-Length: 40\r\n\r\n0123456789";
	struct held h = { 0 };
	struct rt_loop *l = held_loop(&h);
	struct rt_conn *c = rt_conn_new_detached(l);
	uint64_t t0 = trib_now_ns(), d0;

	cr_assert_eq(rt_conn_feed(c, head, sizeof(head) - 1), 0);
	cr_assert_eq(c->timer, RT_TO_BODY);
	rt_loop_expire(l, t0 + 14 * SEC);
	cr_assert_eq(h.freed, 0, "14 s without a byte: still within the body timeout");
	d0 = c->deadline_ns;
	usleep(2000);
	cr_assert_eq(rt_conn_feed(c, "abcdefghij", 10), 0);
	cr_assert_gt(c->deadline_ns, d0, "the body moved: its 15 s start again");
	rt_loop_expire(l, trib_now_ns() + 16 * SEC);
	cr_assert_eq(h.freed, 1, "no byte for 16 s: closed, the slot given back");
	cr_assert_eq(rt_loop_stats(l)->timed_out[RT_TO_BODY], 1);
	cr_assert_eq(rt_loop_stats(l)->open, 0);
	rt_loop_close(l);
}

Test(runtime_loop, a_head_must_be_complete_within_the_head_timeout_however_it_trickles)
{
	struct held h = { 0 };
	struct rt_loop *l = held_loop(&h);
	struct rt_conn *c = rt_conn_new_detached(l);
	uint64_t t0 = trib_now_ns();

	cr_assert_eq(c->timer, RT_TO_HEAD, "a new connection's first head is timed from the accept");
	cr_assert_eq(rt_conn_feed(c, "GET / HTTP/1.1\r\n", 16), 0);
	rt_loop_expire(l, t0 + 9 * SEC);
	cr_assert_eq(h.freed, 0);
	cr_assert_eq(rt_conn_feed(c, "X: y\r\n", 6), 0);
	rt_loop_expire(l, t0 + 11 * SEC);
	cr_assert_eq(h.freed, 1, "slowloris: bytes do not extend a head's time");
	cr_assert_eq(rt_loop_stats(l)->timed_out[RT_TO_HEAD], 1);
	rt_loop_close(l);
}

Test(runtime_loop, keep_alive_idles_for_the_idle_timeout_and_a_parked_poll_never_does)
{
	static const char get[] = "GET / HTTP/1.1\r\n\r\n";
	static const char poll[] = "GET /poll HTTP/1.1\r\n\r\n";
	struct held h = { 0 };
	struct rt_loop *l = held_loop(&h);
	struct rt_conn *c = rt_conn_new_detached(l);
	struct rt_conn *p = rt_conn_new_detached(l);
	uint64_t t0 = trib_now_ns();

	cr_assert_eq(rt_conn_feed(c, get, sizeof(get) - 1), 0);
	cr_assert(rt_conn_answered(c));
	cr_assert_eq(c->timer, RT_TO_SEND);
	cr_assert_eq(rt_conn_feed(p, poll, sizeof(poll) - 1), 0);
	cr_assert_eq(h.parked, 1);
	cr_assert_eq(p->timer, RT_TO_NONE, "a parked long poll has no timer");
	/* The response was taken: the next request begins with an idle wait. */
	cr_assert_eq(rt_conn_feed(c, "G", 1), 0);
	cr_assert_eq(c->timer, RT_TO_HEAD, "the first byte of the next head starts its timer");
	rt_loop_expire(l, t0 + 1000 * SEC);
	cr_assert_eq(h.freed, 1, "the half head timed out, the parked poll did not");
	cr_assert_eq(rt_loop_stats(l)->timed_out[RT_TO_HEAD], 1);
	cr_assert_eq(rt_loop_stats(l)->open, 1);
	rt_loop_close(l);
	cr_assert_eq(h.freed, 2);
}

Test(runtime_loop, an_idle_keep_alive_connection_closes_after_the_idle_timeout)
{
	static const char get[] = "GET / HTTP/1.1\r\n\r\n";
	struct held h = { 0 };
	struct rt_loop *l = held_loop(&h);
	struct rt_conn *c = rt_conn_new_detached(l);
	uint64_t t0;

	cr_assert_eq(rt_conn_feed(c, get, sizeof(get) - 1), 0);
	t0 = trib_now_ns();
	rt_loop_expire(l, t0 + 14 * SEC);
	cr_assert_eq(h.freed, 0, "a response not taken for 14 s: within the send timeout");
	/* No bytes: the response was taken (sent), the connection waits for its next request. */
	cr_assert_eq(rt_conn_feed(c, "", 0), 0);
	cr_assert_eq(c->timer, RT_TO_IDLE);
	cr_assert_eq(h.ended, 1);
	rt_loop_expire(l, t0 + 59 * SEC);
	cr_assert_eq(h.freed, 0);
	rt_loop_expire(l, trib_now_ns() + 61 * SEC);
	cr_assert_eq(h.freed, 1);
	cr_assert_eq(rt_loop_stats(l)->timed_out[RT_TO_IDLE], 1);
	rt_loop_close(l);
}
