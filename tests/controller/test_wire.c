// SPDX-License-Identifier: MIT
/* Tests for the cluster wire: round trips, many requests in flight, timeouts, drops, close. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "ctl_wire.h"

/* LeakSanitizer, when built in, checks after a test as well as at the worker's exit. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WIRE_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define WIRE_LSAN 1
#endif
#ifdef WIRE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* Leaks show at the end of the test that made them, not only as a crash at exit. */
static void expect_no_leaks(void)
{
#ifdef WIRE_LSAN
	cr_expect_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks (stderr)");
#endif
}

/* Longest any single wait may take before the test fails instead of hanging. */
#define WAIT_MS 5000

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * A port nobody listens on right now: the kernel picks a free one for a
 * socket bound to port 0, which we then close. Each test asks for its own,
 * so tests in parallel processes do not collide.
 */
static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port;

	cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind: %s", strerror(errno));
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void make_url(char *buf, size_t n, int port)
{
	snprintf(buf, n, "tcp://127.0.0.1:%d", port);
}

/*
 * The next event of @w, waiting at most @ms for it; NULL on timeout. Events
 * are queued before the eventfd is poked, so checking the queue after each
 * wake-up never misses one.
 */
static struct ctl_event *next_event(struct ctl_wire *w, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;

	for (;;) {
		struct ctl_event *ev = ctl_wire_next(w);
		struct pollfd pfd = {.fd = ctl_wire_fd(w), .events = POLLIN};
		uint64_t cnt, t = now_ms();
		int rv;

		if (ev)
			return ev;
		if (t >= end)
			return NULL;
		rv = poll(&pfd, 1, (int)(end - t));
		cr_assert_geq(rv, 0, "poll: %s", strerror(errno));
		if (rv > 0 && read(pfd.fd, &cnt, sizeof(cnt)) < 0)
			cr_assert_eq(errno, EAGAIN, "eventfd read: %s", strerror(errno));
	}
}

static struct ctl_event *must_event(struct ctl_wire *w, enum ctl_ev_kind kind)
{
	struct ctl_event *ev = next_event(w, WAIT_MS);

	cr_assert_not_null(ev, "no event within %d ms", WAIT_MS);
	cr_assert_eq(ev->kind, kind, "event kind %d (err %d), wanted %d", ev->kind, ev->err, kind);
	return ev;
}

/* Whether @w has an event waiting, within WAIT_MS, without taking it. */
static bool wait_readable(struct ctl_wire *w)
{
	struct pollfd pfd = {.fd = ctl_wire_fd(w), .events = POLLIN};

	return poll(&pfd, 1, WAIT_MS) == 1;
}

static void open_pair(struct ctl_wire **srv, struct ctl_wire **cli, char *url, size_t n)
{
	make_url(url, n, free_port());
	cr_assert_eq(ctl_wire_open(url, srv), 0, "listen on %s", url);
	cr_assert_eq(ctl_wire_open(NULL, cli), 0);
}

/* Send {"i":i} and @len payload bytes; the header stays ours (the wire copies it). */
static int send_i(struct ctl_wire *w, const char *url, int i, const void *p, size_t len,
		  uint64_t cookie, uint32_t timeout_ms)
{
	json_t *h = json_pack("{s:i}", "i", i);
	int err;

	cr_assert_not_null(h);
	err = ctl_wire_request(w, url, h, p, len, cookie, timeout_ms);
	json_decref(h);
	return err;
}

static json_int_t hdr_int(const struct ctl_event *ev, const char *key)
{
	json_t *v = json_object_get(ev->hdr, key);

	cr_assert(json_is_integer(v), "header has no integer \"%s\"", key);
	return json_integer_value(v);
}

Test(ctl_wire, round_trip_carries_header_and_a_1mib_payload_both_ways)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *ev;
	const size_t big = 1u << 20;
	uint8_t *pat = malloc(big);
	json_t *h;
	char url[64];

	cr_assert_not_null(pat);
	/* Not periodic in any power of two, so a shifted or truncated copy shows. */
	for (size_t i = 0; i < big; i++)
		pat[i] = (uint8_t)(i * 131 + i / 251);
	open_pair(&srv, &cli, url, sizeof(url));

	h = json_pack("{s:s,s:i}", "op", "ping", "n", 7);
	cr_assert_eq(ctl_wire_request(cli, url, h, pat, big, 0xfeedface12345678ull, WAIT_MS), 0);
	json_decref(h);

	ev = must_event(srv, CTL_EV_REQUEST);
	cr_expect_str_eq(json_string_value(json_object_get(ev->hdr, "op")), "ping");
	cr_expect_eq(hdr_int(ev, "n"), 7);
	cr_expect_eq(json_object_size(ev->hdr), 2u);
	cr_assert_eq(ev->plen, big, "payload %zu bytes", ev->plen);
	cr_expect(!memcmp(ev->payload, pat, big), "payload bytes differ");
	h = json_pack("{s:b,s:i}", "ok", 1, "n", 8);
	cr_assert_eq(ctl_wire_reply(srv, ev, h, "abc", 3), 0);
	json_decref(h);
	ctl_event_free(srv, ev);

	ev = must_event(cli, CTL_EV_REPLY);
	cr_expect_eq(ev->cookie, 0xfeedface12345678ull);
	cr_expect_eq(ev->err, 0);
	cr_expect(json_is_true(json_object_get(ev->hdr, "ok")));
	cr_expect_eq(hdr_int(ev, "n"), 8);
	cr_expect_eq(json_object_size(ev->hdr), 2u);
	cr_assert_eq(ev->plen, 3u);
	cr_expect(!memcmp(ev->payload, "abc", 3));
	ctl_event_free(cli, ev);

	/* Exactly one event each way. */
	cr_expect_null(next_event(cli, 100));
	cr_expect_null(next_event(srv, 0));
	ctl_wire_close(cli);
	ctl_wire_close(srv);
	free(pat);
	expect_no_leaks();
}

Test(ctl_wire, a_request_without_payload_arrives_with_plen_zero)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *ev;
	char url[64];

	open_pair(&srv, &cli, url, sizeof(url));
	cr_assert_eq(send_i(cli, url, 5, NULL, 0, 1, WAIT_MS), 0);
	ev = must_event(srv, CTL_EV_REQUEST);
	cr_expect_eq(hdr_int(ev, "i"), 5);
	cr_expect_eq(ev->plen, 0u);
	cr_assert_eq(ctl_wire_reply(srv, ev, ev->hdr, NULL, 0), 0);
	ctl_event_free(srv, ev);
	ev = must_event(cli, CTL_EV_REPLY);
	cr_expect_eq(hdr_int(ev, "i"), 5);
	cr_expect_eq(ev->plen, 0u);
	ctl_event_free(cli, ev);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

#define NREQ	200
#define COOKIE0 5000u

/* Request i carries four copies of i so a reply matched to the wrong request shows. */
static void pattern(uint32_t i, uint32_t out[4])
{
	for (int k = 0; k < 4; k++)
		out[k] = i * 4 + (uint32_t)k;
}

/*
 * The server serves a bounded number of requests at once (the rest wait in
 * nng), so it cannot hold all 200 before answering. It answers each batch it
 * holds in reverse order of arrival, which is what makes replies come back out
 * of order.
 */
Test(ctl_wire, two_hundred_in_flight_each_get_their_own_reply_once)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *held[NREQ], *ev;
	bool seen_req[NREQ] = {false}, seen_rep[NREQ] = {false};
	int served = 0, biggest = 0;
	char url[64];

	open_pair(&srv, &cli, url, sizeof(url));
	for (uint32_t i = 0; i < NREQ; i++) {
		uint32_t p[4];

		pattern(i, p);
		cr_assert_eq(send_i(cli, url, (int)i, p, sizeof(p), COOKIE0 + i, 20000), 0);
	}

	while (served < NREQ) {
		int n = 0;

		held[n++] = must_event(srv, CTL_EV_REQUEST);
		/* Take whatever else arrives until the line goes quiet. */
		while (served + n < NREQ && (ev = next_event(srv, 100))) {
			cr_assert_eq(ev->kind, CTL_EV_REQUEST);
			held[n++] = ev;
		}
		if (n > biggest)
			biggest = n;
		for (int k = n - 1; k >= 0; k--) {
			json_int_t i = hdr_int(held[k], "i");
			uint32_t p[4];
			json_t *h;

			cr_assert(i >= 0 && i < NREQ, "request i=%lld", (long long)i);
			cr_assert(!seen_req[i], "request %lld arrived twice", (long long)i);
			seen_req[i] = true;
			pattern((uint32_t)i, p);
			cr_assert_eq(held[k]->plen, sizeof(p));
			cr_assert(!memcmp(held[k]->payload, p, sizeof(p)), "request %lld payload",
				  (long long)i);
			h = json_pack("{s:I,s:b}", "i", i, "ok", 1);
			cr_assert_eq(
			    ctl_wire_reply(srv, held[k], h, held[k]->payload, held[k]->plen), 0);
			json_decref(h);
			ctl_event_free(srv, held[k]);
		}
		served += n;
	}
	cr_expect_gt(biggest, 1, "the server never held two requests: order was not tested");

	for (int got = 0; got < NREQ; got++) {
		uint64_t c;
		uint32_t p[4];

		ev = must_event(cli, CTL_EV_REPLY);
		c = ev->cookie;
		cr_assert(c >= COOKIE0 && c < COOKIE0 + NREQ, "unknown cookie %llu",
			  (unsigned long long)c);
		cr_assert(!seen_rep[c - COOKIE0], "cookie %llu replied twice",
			  (unsigned long long)c);
		seen_rep[c - COOKIE0] = true;
		cr_assert_eq(hdr_int(ev, "i"), (json_int_t)(c - COOKIE0),
			     "cookie %llu got the reply to request %lld", (unsigned long long)c,
			     (long long)hdr_int(ev, "i"));
		pattern((uint32_t)(c - COOKIE0), p);
		cr_assert_eq(ev->plen, sizeof(p));
		cr_assert(!memcmp(ev->payload, p, sizeof(p)));
		ctl_event_free(cli, ev);
	}
	ev = next_event(cli, 200);
	cr_expect_null(ev, "a 201st event (kind %d cookie %llu)", ev ? ev->kind : 0,
		       ev ? (unsigned long long)ev->cookie : 0ull);
	ctl_event_free(cli, ev);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

Test(ctl_wire, no_server_fails_once_with_etimedout_after_the_timeout)
{
	struct ctl_wire *cli;
	struct ctl_event *ev;
	uint64_t t0, dt;
	char url[64];

	make_url(url, sizeof(url), free_port());
	cr_assert_eq(ctl_wire_open(NULL, &cli), 0);
	t0 = now_ms();
	cr_assert_eq(send_i(cli, url, 1, "x", 1, 77, 300), 0);
	ev = next_event(cli, 2000);
	dt = now_ms() - t0;
	cr_assert_not_null(ev, "no event within 2 s");
	cr_expect_eq(ev->kind, CTL_EV_FAIL);
	cr_expect_eq(ev->cookie, 77u);
	cr_expect_eq(ev->err, -ETIMEDOUT, "err %d (%s)", ev->err, strerror(-ev->err));
	cr_expect_null(ev->hdr);
	cr_expect_geq(dt, 250u, "failed after %llu ms, before its 300 ms", (unsigned long long)dt);
	ctl_event_free(cli, ev);
	cr_expect_null(next_event(cli, 500), "a second event for one request");
	ctl_wire_close(cli);
}

Test(ctl_wire, a_late_reply_is_a_timeout_and_never_a_second_event)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *req, *ev;
	char url[64];

	open_pair(&srv, &cli, url, sizeof(url));
	cr_assert_eq(send_i(cli, url, 3, NULL, 0, 9, 300), 0);
	req = must_event(srv, CTL_EV_REQUEST);
	ev = next_event(cli, 2000);
	cr_assert_not_null(ev, "no failure within 2 s of a 300 ms request");
	cr_expect_eq(ev->kind, CTL_EV_FAIL);
	cr_expect_eq(ev->cookie, 9u);
	cr_expect_eq(ev->err, -ETIMEDOUT, "err %d", ev->err);
	ctl_event_free(cli, ev);
	cr_assert_eq(ctl_wire_reply(srv, req, req->hdr, NULL, 0), 0);
	ctl_event_free(srv, req);
	ev = next_event(cli, 500);
	cr_expect_null(ev, "the late reply came through as kind %d", ev ? ev->kind : 0);
	ctl_event_free(cli, ev);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

/*
 * The header promises the reply or failure "within @timeout_ms" of the call.
 * Here the server comes up part-way through the timeout and then sits on the
 * request: the failure must still come at the timeout, not a timeout after
 * the connection was made.
 */
Test(ctl_wire, timeout_counts_from_the_request_not_from_the_connection)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *req = NULL, *ev = NULL;
	const uint32_t tmo = 2000;
	uint64_t t0, dt = 0;
	char url[64];

	make_url(url, sizeof(url), free_port());
	cr_assert_eq(ctl_wire_open(NULL, &cli), 0);
	t0 = now_ms();
	cr_assert_eq(send_i(cli, url, 1, NULL, 0, 11, tmo), 0);
	usleep(800 * 1000);
	cr_assert_eq(ctl_wire_open(url, &srv), 0);
	/* nng redials at most every 500 ms, so the request reaches the server in time. */
	req = next_event(srv, (int)tmo);
	cr_assert_not_null(req, "the request never reached the late server");
	ev = next_event(cli, 5000);
	dt = now_ms() - t0;
	cr_assert_not_null(ev);
	cr_expect_eq(ev->kind, CTL_EV_FAIL);
	cr_expect_eq(ev->err, -ETIMEDOUT, "err %d", ev->err);
	cr_expect_leq(dt, tmo + 400, "a %u ms request failed after %llu ms", tmo,
		      (unsigned long long)dt);
	ctl_event_free(cli, ev);
	/* The client goes first: a reply racing its close is another test's business. */
	ctl_wire_close(cli);
	ctl_event_free(srv, req);
	ctl_wire_close(srv);
}

Test(ctl_wire, an_unanswered_request_is_answered_dropped_when_freed)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *ev;
	char url[64];

	open_pair(&srv, &cli, url, sizeof(url));
	cr_assert_eq(send_i(cli, url, 4, "abcd", 4, 42, WAIT_MS), 0);
	ev = must_event(srv, CTL_EV_REQUEST);
	ctl_event_free(srv, ev);
	ev = must_event(cli, CTL_EV_REPLY);
	cr_expect_eq(ev->cookie, 42u);
	cr_expect_str_eq(json_string_value(json_object_get(ev->hdr, "error")), "dropped");
	cr_expect_eq(ev->plen, 0u);
	ctl_event_free(cli, ev);

	/* The slot is serving again: a second request is answered normally. */
	cr_assert_eq(send_i(cli, url, 5, NULL, 0, 43, WAIT_MS), 0);
	ev = must_event(srv, CTL_EV_REQUEST);
	cr_assert_eq(ctl_wire_reply(srv, ev, ev->hdr, NULL, 0), 0);
	ctl_event_free(srv, ev);
	ev = must_event(cli, CTL_EV_REPLY);
	cr_expect_eq(ev->cookie, 43u);
	cr_expect_eq(hdr_int(ev, "i"), 5);
	ctl_event_free(cli, ev);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

Test(ctl_wire, replying_to_a_reply_or_twice_is_einval)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *req, *ev;
	char url[64];

	open_pair(&srv, &cli, url, sizeof(url));
	cr_assert_eq(send_i(cli, url, 1, NULL, 0, 1, WAIT_MS), 0);
	req = must_event(srv, CTL_EV_REQUEST);
	cr_assert_eq(ctl_wire_reply(srv, req, req->hdr, NULL, 0), 0);
	cr_expect_eq(ctl_wire_reply(srv, req, req->hdr, NULL, 0), -EINVAL);
	ctl_event_free(srv, req);
	ev = must_event(cli, CTL_EV_REPLY);
	cr_expect_eq(ctl_wire_reply(cli, ev, ev->hdr, NULL, 0), -EINVAL);
	ctl_event_free(cli, ev);
	cr_expect_null(next_event(cli, 200), "a second reply to one request");
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

Test(ctl_wire, a_bad_listen_url_is_a_negative_errno_and_no_wire)
{
	static const char *const bad[] = {"nonsense", "tcp://256.1.1.1:1", "tcp://127.0.0.1:99999",
					  ""};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ctl_wire *w = NULL;
		int err = ctl_wire_open(bad[i], &w);

		cr_expect_lt(err, 0, "\"%s\" opened: %d", bad[i], err);
		cr_expect_null(w, "\"%s\" left a wire behind", bad[i]);
		cr_expect_eq(err, -EINVAL, "\"%s\": %d (%s), the header promises -EINVAL", bad[i],
			     err, strerror(-err));
		if (!err)
			ctl_wire_close(w);
	}
	expect_no_leaks();
}

Test(ctl_wire, listening_on_a_port_in_use_is_eaddrinuse)
{
	struct ctl_wire *a, *b = NULL;
	char url[64];

	make_url(url, sizeof(url), free_port());
	cr_assert_eq(ctl_wire_open(url, &a), 0);
	cr_expect_eq(ctl_wire_open(url, &b), -EADDRINUSE);
	cr_expect_null(b);
	ctl_wire_close(b);
	ctl_wire_close(a);
}

Test(ctl_wire, close_accepts_null_and_event_free_accepts_null)
{
	ctl_wire_close(NULL);
	ctl_event_free(NULL, NULL);
}

/*
 * ctl_wire_close() gives up waiting for its requests' events after 2 s; it
 * takes a few ms when every one comes back, so a bound under 2 s also catches
 * events that never come (lost or miscounted).
 */
#define CLOSE_MS 1000u

/* The client closes while the server sits on all ten: prompt, and nothing leaks (ASan). */
Test(ctl_wire, closing_with_requests_in_flight_is_prompt)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *held[10];
	uint64_t t0, dt;
	char url[64];

	open_pair(&srv, &cli, url, sizeof(url));
	for (int i = 0; i < 10; i++)
		cr_assert_eq(send_i(cli, url, i, "payload", 7, (uint64_t)i, 60000), 0);
	/* All ten are on the server, so the client's are waiting for replies. */
	for (int i = 0; i < 10; i++)
		held[i] = must_event(srv, CTL_EV_REQUEST);
	t0 = now_ms();
	ctl_wire_close(cli);
	dt = now_ms() - t0;
	cr_expect_lt(dt, CLOSE_MS, "close took %llu ms", (unsigned long long)dt);
	/* Answering a peer that has gone must not crash or block. */
	for (int i = 0; i < 10; i++)
		ctl_event_free(srv, held[i]);
	ctl_wire_close(srv);
	expect_no_leaks();
}

/* Same, with the requests still waiting for a server that is not there. */
Test(ctl_wire, closing_with_requests_still_dialling_is_prompt)
{
	struct ctl_wire *cli;
	uint64_t t0, dt;
	char url[64];

	make_url(url, sizeof(url), free_port());
	cr_assert_eq(ctl_wire_open(NULL, &cli), 0);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(send_i(cli, url, i, "payload", 7, (uint64_t)i, 60000), 0);
	usleep(100 * 1000);
	t0 = now_ms();
	ctl_wire_close(cli);
	dt = now_ms() - t0;
	cr_expect_lt(dt, CLOSE_MS, "close took %llu ms", (unsigned long long)dt);
	expect_no_leaks();
}

/* A server that closes with requests queued and unread does not leak them. */
Test(ctl_wire, closing_a_server_with_unread_requests_answers_nothing_and_leaks_nothing)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *ev;
	char url[64];
	int n = 0;

	open_pair(&srv, &cli, url, sizeof(url));
	for (int i = 0; i < 5; i++)
		cr_assert_eq(send_i(cli, url, i, NULL, 0, (uint64_t)i, WAIT_MS), 0);
	/* Queued on the server, not taken: ctl_wire_close() disposes of them. */
	cr_assert(wait_readable(srv), "no request reached the server");
	usleep(100 * 1000);
	ctl_wire_close(srv);
	/* The client hears of it as a failure (connection reset or timeout), one per request. */
	while (n < 5 && (ev = next_event(cli, WAIT_MS + 1000))) {
		cr_expect_eq(ev->kind, CTL_EV_FAIL, "request %llu: kind %d",
			     (unsigned long long)ev->cookie, ev->kind);
		cr_expect_lt(ev->err, 0);
		ctl_event_free(cli, ev);
		n++;
	}
	cr_expect_eq(n, 5);
	ctl_wire_close(cli);
	expect_no_leaks();
}

/*
 * Closing while a reply is on its way back is ordinary (a node stopping right
 * after the controller answered), so close must not depend on the reply having
 * landed. A close that hangs would also hang this worker's own teardown (Criterion
 * talks to its runner through the same nng), so the rounds run in a fresh
 * process: this executable re-run with RACE_ENV set, caught by the constructor
 * below before Criterion starts. SIGALRM ends a round stuck for RACE_STUCK_S.
 */
#define RACE_ENV     "TRIB_TEST_WIRE_CLOSE_RACE"
#define RACE_ROUNDS  200
#define RACE_STUCK_S 3
#define RACE_HUNG    3 /* the helper's exit status when a close hung */

static volatile sig_atomic_t race_round;

static void race_alarm(int sig)
{
	static const char pre[] = "close race: ctl_wire_close() stuck in round ";
	char num[16];
	int n = sizeof(num), r = race_round;

	(void)sig;
	/* Only async-signal-safe calls: the number by hand, then write(). */
	num[--n] = '\n';
	do {
		num[--n] = (char)('0' + r % 10);
		r /= 10;
	} while (r && n > 0);
	if (write(STDERR_FILENO, pre, sizeof(pre) - 1) > 0 &&
	    write(STDERR_FILENO, num + n, sizeof(num) - (size_t)n) > 0)
		_exit(RACE_HUNG);
	_exit(RACE_HUNG);
}

/* Plain waiting, without Criterion: there is no test running in the helper. */
static struct ctl_event *race_next(struct ctl_wire *w)
{
	struct pollfd pfd = {.fd = ctl_wire_fd(w), .events = POLLIN};
	struct ctl_event *ev;
	uint64_t cnt;

	while (!(ev = ctl_wire_next(w))) {
		if (poll(&pfd, 1, WAIT_MS) != 1)
			return NULL;
		if (read(pfd.fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
			return NULL;
	}
	return ev;
}

/* 0 when every round closed promptly; RACE_HUNG from the alarm; 1 on a setup failure. */
static int close_race(const char *url)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *req;
	json_t *h = json_pack("{s:s}", "op", "ping");

	signal(SIGALRM, race_alarm);
	if (!h || ctl_wire_open(url, &srv))
		return 1;
	for (race_round = 0; race_round < RACE_ROUNDS; race_round++) {
		if (ctl_wire_open(NULL, &cli) ||
		    ctl_wire_request(cli, url, h, NULL, 0, (uint64_t)race_round, WAIT_MS))
			return 1;
		req = race_next(srv);
		if (!req || req->kind != CTL_EV_REQUEST || ctl_wire_reply(srv, req, h, NULL, 0))
			return 1;
		ctl_event_free(srv, req);
		/* At once: the reply is now somewhere between the two sockets. */
		alarm(RACE_STUCK_S);
		ctl_wire_close(cli);
		alarm(0);
	}
	ctl_wire_close(srv);
	json_decref(h);
	return 0;
}

__attribute__((constructor)) static void close_race_helper(void)
{
	const char *url = getenv(RACE_ENV);

	if (url)
		_exit(close_race(url));
}

Test(ctl_wire, closing_while_a_reply_is_arriving_is_prompt)
{
	char *argv[] = {"test_wire_close_race", NULL};
	char url[64], var[sizeof(RACE_ENV) + 64];
	size_t n = 0, k = 0;
	uint64_t end;
	char **env;
	pid_t pid;
	int st = 0;

	make_url(url, sizeof(url), free_port());
	snprintf(var, sizeof(var), "%s=%s", RACE_ENV, url);
	for (char **e = environ; *e; e++)
		n++;
	env = calloc(n + 2, sizeof(*env));
	cr_assert_not_null(env);
	/* Without BoxFort's BXFI_* the helper is no Criterion worker, only a process. */
	for (char **e = environ; *e; e++)
		if (strncmp(*e, "BXFI_", 5))
			env[k++] = *e;
	env[k] = var;
	cr_assert_eq(posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, env), 0);
	free(env);
	/* Only a backstop: the helper's own alarm ends a stuck round sooner. */
	end = now_ms() + 40000;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			cr_assert_fail("the close-race helper ran for 40 s");
		}
		usleep(10 * 1000);
	}
	cr_assert(WIFEXITED(st), "the close-race helper died of signal %d",
		  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	cr_assert_neq(WEXITSTATUS(st), 1, "the close-race helper could not set up");
	cr_assert_eq(WEXITSTATUS(st), 0,
		     "ctl_wire_close() hung in nng_close() of its REQ socket with a reply on the "
		     "way (helper exit %d; its stderr names the round)",
		     WEXITSTATUS(st));
}

/*
 * A raw REP peer answers one request of a fresh client wire with @body; returns
 * what the client made of it. The caller frees the event and closes *cli.
 */
static struct ctl_event *raw_reply(const void *body, size_t len, struct ctl_wire **cli)
{
	struct ctl_event *ev;
	nng_socket rep;
	nng_msg *m;
	char url[64];

	make_url(url, sizeof(url), free_port());
	cr_assert_eq(nng_rep0_open(&rep), 0);
	cr_assert_eq(nng_listen(rep, url, NULL, 0), 0);
	cr_assert_eq(nng_socket_set_ms(rep, NNG_OPT_RECVTIMEO, WAIT_MS), 0);
	cr_assert_eq(ctl_wire_open(NULL, cli), 0);
	cr_assert_eq(send_i(*cli, url, 1, NULL, 0, 99, WAIT_MS), 0);
	cr_assert_eq(nng_recvmsg(rep, &m, 0), 0);
	nng_msg_clear(m);
	cr_assert_eq(nng_msg_append(m, body, len), 0);
	cr_assert_eq(nng_sendmsg(rep, m, 0), 0);
	ev = next_event(*cli, WAIT_MS);
	nng_close(rep);
	cr_assert_not_null(ev, "no event for a raw reply");
	cr_expect_eq(ev->cookie, 99u);
	return ev;
}

static void expect_eproto(const void *body, size_t len, const char *what)
{
	struct ctl_wire *cli;
	struct ctl_event *ev = raw_reply(body, len, &cli);

	cr_expect_eq(ev->kind, CTL_EV_FAIL, "%s: kind %d", what, ev->kind);
	cr_expect_eq(ev->err, -EPROTO, "%s: err %d", what, ev->err);
	cr_expect_null(ev->hdr);
	ctl_event_free(cli, ev);
	ctl_wire_close(cli);
}

Test(ctl_wire, a_malformed_reply_fails_the_request_with_eproto)
{
	static const uint8_t shorter[] = {2, 0};
	static const uint8_t past_end[] = {9, 0, 0, 0, '{', '}'};
	static const uint8_t not_json[] = {3, 0, 0, 0, 'a', 'b', 'c'};
	static const uint8_t an_array[] = {2, 0, 0, 0, '[', ']'};
	static const uint8_t huge_len[] = {0xff, 0xff, 0xff, 0xff, '{', '}'};

	expect_eproto(shorter, sizeof(shorter), "under 4 bytes");
	expect_eproto(past_end, sizeof(past_end), "header length past the end");
	expect_eproto(not_json, sizeof(not_json), "header not JSON");
	expect_eproto(an_array, sizeof(an_array), "header not an object");
	expect_eproto(huge_len, sizeof(huge_len), "header length 2^32-1");
}

/* The framing by hand: an empty object header and a one-byte payload. */
Test(ctl_wire, a_hand_framed_reply_decodes)
{
	static const uint8_t ok[] = {2, 0, 0, 0, '{', '}', 'z'};
	struct ctl_wire *cli;
	struct ctl_event *ev = raw_reply(ok, sizeof(ok), &cli);

	cr_expect_eq(ev->kind, CTL_EV_REPLY);
	cr_expect(json_is_object(ev->hdr));
	cr_expect_eq(json_object_size(ev->hdr), 0u);
	cr_assert_eq(ev->plen, 1u);
	cr_expect_eq(ev->payload[0], 'z');
	ctl_event_free(cli, ev);
	ctl_wire_close(cli);
}

Test(ctl_wire, a_malformed_request_is_dropped_and_the_server_keeps_serving)
{
	static const uint8_t junk[] = {200, 0, 0, 0, '{'};
	struct ctl_wire *srv, *cli;
	struct ctl_event *ev;
	nng_socket req;
	nng_msg *m;
	char url[64];

	open_pair(&srv, &cli, url, sizeof(url));
	cr_assert_eq(nng_req0_open(&req), 0);
	cr_assert_eq(nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, 300), 0);
	cr_assert_eq(nng_dial(req, url, NULL, 0), 0);
	cr_assert_eq(nng_msg_alloc(&m, 0), 0);
	cr_assert_eq(nng_msg_append(m, junk, sizeof(junk)), 0);
	cr_assert_eq(nng_sendmsg(req, m, 0), 0);
	/* Nothing reaches the owner, and the raw peer gets no answer. */
	cr_expect_null(next_event(srv, 300));
	cr_expect_eq(nng_recvmsg(req, &m, 0), NNG_ETIMEDOUT);
	nng_close(req);

	cr_assert_eq(send_i(cli, url, 6, NULL, 0, 6, WAIT_MS), 0);
	ev = must_event(srv, CTL_EV_REQUEST);
	cr_expect_eq(hdr_int(ev, "i"), 6);
	cr_assert_eq(ctl_wire_reply(srv, ev, ev->hdr, NULL, 0), 0);
	ctl_event_free(srv, ev);
	ev = must_event(cli, CTL_EV_REPLY);
	cr_expect_eq(ev->cookie, 6u);
	ctl_event_free(cli, ev);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

/*
 * "A request is never sent twice": a server that takes a request and then
 * goes away must not see it again from a server restarted on the same port;
 * the client hears of a failure instead.
 */
Test(ctl_wire, a_request_is_not_resent_to_a_restarted_server)
{
	struct ctl_wire *srv, *cli;
	struct ctl_event *ev;
	char url[64];

	open_pair(&srv, &cli, url, sizeof(url));
	cr_assert_eq(send_i(cli, url, 1, NULL, 0, 21, 3000), 0);
	/* Gone without an answer: the request is queued, unread, when the server closes. */
	cr_assert(wait_readable(srv), "the request never reached the server");
	ctl_wire_close(srv);
	cr_assert_eq(ctl_wire_open(url, &srv), 0, "relisten on %s", url);
	ev = next_event(srv, 1500);
	cr_expect_null(ev, "the restarted server got the request again");
	ctl_event_free(srv, ev);
	ev = must_event(cli, CTL_EV_FAIL);
	cr_expect_eq(ev->cookie, 21u);
	cr_expect_lt(ev->err, 0);
	ctl_event_free(cli, ev);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

/*
 * A connection that hangs while it is made (TCP up, the SP header never answered) holds
 * nng 1.5's dialer for its 10 s negotiation timeout, whatever listens meanwhile;
 * ctl_wire_redial drops it and reaches the server now (rt_agent's relink relies on it).
 */
Test(ctl_wire, a_redial_drops_a_connection_stuck_before_it_is_up)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	struct ctl_wire *srv, *cli;
	struct ctl_event *ev;
	struct pollfd pfd;
	int lfd, cfd, one = 1, port = free_port();
	char url[64];

	make_url(url, sizeof(url), port);
	/* A listener that accepts and never speaks (SO_REUSEADDR: the server binds after it). */
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(lfd, 0);
	cr_assert_eq(setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0, "bind: %s", strerror(errno));
	cr_assert_eq(listen(lfd, 4), 0);
	cr_assert_eq(ctl_wire_open(NULL, &cli), 0);
	cr_assert_eq(send_i(cli, url, 1, NULL, 0, 1, 800), 0);
	pfd = (struct pollfd){.fd = lfd, .events = POLLIN};
	cr_assert_eq(poll(&pfd, 1, WAIT_MS), 1, "the wire never connected");
	cfd = accept(lfd, NULL, NULL);
	cr_assert_geq(cfd, 0, "accept: %s", strerror(errno));
	close(lfd); /* the accepted connection stays up, silent */
	ev = must_event(cli, CTL_EV_FAIL);
	cr_expect_eq(ev->cookie, 1u);
	ctl_event_free(cli, ev);
	/* The server is up on the port now; the wire's connection is still the silent one. */
	cr_assert_eq(ctl_wire_open(url, &srv), 0, "listen on %s", url);
	cr_assert_eq(send_i(cli, url, 2, NULL, 0, 2, 1500), 0);
	ev = must_event(cli, CTL_EV_FAIL);
	cr_expect_eq(ev->cookie, 2u, "without a redial the request waits on the stuck connection");
	ctl_event_free(cli, ev);
	cr_expect_null(ctl_wire_next(srv), "the server got a request over a connection never up");
	/* Dialled afresh: answered at once. */
	cr_assert_eq(ctl_wire_redial(cli, url), 0);
	cr_assert_eq(send_i(cli, url, 3, NULL, 0, 3, 3000), 0);
	ev = must_event(srv, CTL_EV_REQUEST);
	cr_expect_eq(hdr_int(ev, "i"), 3);
	cr_assert_eq(ctl_wire_reply(srv, ev, ev->hdr, NULL, 0), 0);
	ctl_event_free(srv, ev);
	ev = must_event(cli, CTL_EV_REPLY);
	cr_expect_eq(ev->cookie, 3u);
	ctl_event_free(cli, ev);
	cr_expect_eq(ctl_wire_redial(cli, "tcp://127.0.0.1:1"), -ENOENT);
	close(cfd);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
	expect_no_leaks();
}
