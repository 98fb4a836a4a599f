// SPDX-License-Identifier: MIT
/* Tests of http/rt_rx: bodies received on receive threads, over a real loop and real sockets. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <stdlib.h>

#include "rt_loop.h"
#include "rt_loop_priv.h"
#include "rt_tls.h"
#include "trib_alloc.h"
#include "trib_time.h"

#define CLIENTS 6
#define PER_CLIENT 3
#define BIG (1u << 20) /* a body a receive thread takes (>= RT_RX_MIN_BYTES) */
#define SMALL 1000     /* one the loop keeps */

/* Per connection, in c->user: what the watch saw (written on whichever thread receives). */
struct watch {
	pthread_t tid; /* the thread of the last call */
	bool seen;
	uint32_t calls;
	uint64_t last_got;
	bool grew; /* each call saw more than the last */
};
_Static_assert(sizeof(struct watch) <= RT_CONN_USER_BYTES, "fits c->user");

/* The loop's thread's own (read by the test after the join). */
struct rxt {
	struct rt_loop *l;
	pthread_t loop_tid;
	atomic_bool done;
	uint32_t bodies, bodies_off_thread, bodies_bad, watched_elsewhere;
	atomic_uint freed; /* the test's thread waits on it */
	atomic_uint heads; /* heads handled (their body set up): the test's thread waits on it */
};

static uint8_t pattern(uint64_t i, uint64_t len)
{
	return (uint8_t)(i * 7 + len);
}

static void on_bytes(struct rt_conn *c)
{
	struct watch *w = (struct watch *)(void *)c->user;

	if (!w->seen) {
		w->seen = true;
		w->grew = true;
	}
	w->tid = pthread_self(); /* the last piece's: the bytes with the head are the loop's */
	if (c->body_got <= w->last_got)
		w->grew = false;
	w->last_got = c->body_got;
	w->calls++;
}

static void on_body(struct rt_conn *c)
{
	struct rxt *t = rt_conn_ctx(c);
	struct watch *w = (struct watch *)(void *)c->user;
	bool ok = w->grew && w->last_got == c->body_len;

	t->bodies++;
	if (!pthread_equal(pthread_self(), t->loop_tid))
		t->bodies_off_thread++;
	if (w->seen && !pthread_equal(w->tid, t->loop_tid))
		t->watched_elsewhere++;
	for (uint64_t i = 0; ok && i < c->body_len; i++)
		ok = c->body_heap[i] == pattern(i, c->body_len);
	if (!ok)
		t->bodies_bad++;
	rt_conn_respond(c, ok ? 202 : 422, "text/plain", ok ? "ok" : "no", 2, NULL);
}

static void on_head(void *ctx, struct rt_conn *c)
{
	struct rxt *t = ctx;

	memset(c->user, 0, sizeof(struct watch));
	c->body_heap = trib_malloc(c->req.content_length);
	if (!c->body_heap) { /* no cr_assert off the test's thread: the client sees the 500 */
		rt_conn_respond(c, 500, "text/plain", "no", 2, NULL);
		return;
	}
	rt_conn_watch_body(c, on_bytes);
	rt_conn_read_body(c, c->body_heap, c->req.content_length, on_body);
	atomic_fetch_add(&t->heads, 1);
}

static void on_free(void *ctx, struct rt_conn *c)
{
	(void)c;
	atomic_fetch_add(&((struct rxt *)ctx)->freed, 1);
}

static void before_wait(void *ctx)
{
	struct rxt *t = ctx;

	if (atomic_load(&t->done))
		rt_loop_stop(t->l);
}

static void *loop_main(void *arg)
{
	struct rxt *t = arg;

	t->loop_tid = pthread_self();
	rt_loop_run(t->l);
	return NULL;
}

/*
 * A loop with @rx receive threads on 127.0.0.1, run on its own thread (*tid). Nothing
 * off the test's own thread uses cr_assert: failures show in what the test checks after.
 */
static struct rxt *start_tls(uint32_t rx, uint32_t body_timeout_s, pthread_t *tid,
			     struct rt_tls_ctx *tls)
{
	static struct rxt t;
	struct rt_loop_opts o = { .listen_host = "127.0.0.1", .signal_fd = -1,
				  .limits = { 10, body_timeout_s, 60, 0 }, .tls = tls,
				  .rx_threads = rx };
	struct rt_loop_hooks lh = { .ctx = &t, .before_wait = before_wait };
	struct rt_conn_hooks ch = { .ctx = &t, .on_head = on_head, .on_free = on_free };

	memset(&t, 0, sizeof(t));
	cr_assert_eq(rt_loop_open(&t.l, &o, &lh, &ch), 0);
	cr_assert_eq(rt_loop_stats(t.l)->rx_threads, rx);
	cr_assert_eq(pthread_create(tid, NULL, loop_main, &t), 0);
	return &t;
}

static struct rxt *start(uint32_t rx, uint32_t body_timeout_s, pthread_t *tid)
{
	return start_tls(rx, body_timeout_s, tid, NULL);
}

static void stop(struct rxt *t, pthread_t tid)
{
	atomic_store(&t->done, true);
	pthread_join(tid, NULL); /* within a tick (200 ms) */
}

static int dial(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { 10, 0 };

	if (fd < 0)
		return -1;
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* dial() on the test's own thread, where a failure may assert. */
static int dial_ok(uint16_t port)
{
	int fd = dial(port);

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	return fd;
}

static void send_all(int fd, const void *p, size_t n);

/*
 * A connection that sends a large body's head and half of it, then nothing: the loop's
 * thread receives it (no other body is in flight), so every large body after it goes to a
 * receive thread (rt_rx_give). Returns once the loop has set its body up.
 */
static int hold_body(struct rxt *t)
{
	static uint8_t part[BIG / 2];
	unsigned before = atomic_load(&t->heads);
	int fd = dial_ok(rt_loop_port(t->l));
	char head[128];
	int hl = snprintf(head, sizeof(head), "POST /u HTTP/1.1\r\nContent-Length: %u\r\n\r\n",
			  BIG);
	uint64_t t0 = trib_now_ns();

	send_all(fd, head, (size_t)hl);
	send_all(fd, part, sizeof(part));
	while (atomic_load(&t->heads) == before && trib_now_ns() - t0 < 10000000000ull)
		usleep(1000);
	cr_assert_gt(atomic_load(&t->heads), before, "the held body's head was handled");
	return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k <= 0)
			return;
		p = (const char *)p + k;
		n -= (size_t)k;
	}
}

/*
 * The status of the next response on @fd, read whole (head and Content-Length bytes, one
 * byte at a time: nothing of a next response is taken), or -1 at EOF or timeout.
 */
static int read_status(int fd, char *got, size_t cap)
{
	size_t n = 0, need = 0;
	const char *end = NULL, *cl;

	while (n + 1 < cap) {
		if (recv(fd, got + n, 1, 0) != 1)
			break;
		got[++n] = '\0';
		if (!end && (end = strstr(got, "\r\n\r\n"))) {
			cl = strstr(got, "Content-Length: ");
			need = (size_t)(end + 4 - got) + (cl ? (size_t)atoi(cl + 16) : 0);
		}
		if (end && n == need)
			return atoi(got + 9);
	}
	got[n] = '\0';
	return -1;
}

struct client {
	uint16_t port;
	int statuses[PER_CLIENT];
};

static void *client_main(void *arg)
{
	struct client *cl = arg;
	int fd = dial(cl->port);
	uint8_t *body = trib_malloc(BIG + PER_CLIENT);
	char head[256], got[512];

	for (int r = 0; r < PER_CLIENT; r++)
		cl->statuses[r] = -1;
	for (int r = 0; r < PER_CLIENT && body && fd >= 0; r++) {
		/* Sizes differ per request: each body's pattern is its own. */
		uint64_t len = r == 1 ? SMALL : BIG + (uint64_t)r;
		int hl = snprintf(head, sizeof(head),
				  "POST /u HTTP/1.1\r\nContent-Length: %llu\r\n\r\n",
				  (unsigned long long)len);

		for (uint64_t i = 0; i < len; i++)
			body[i] = pattern(i, len);
		send_all(fd, head, (size_t)hl);
		send_all(fd, body, len);
		cl->statuses[r] = read_status(fd, got, sizeof(got));
	}
	trib_free(body);
	if (fd >= 0)
		close(fd);
	return NULL;
}

Test(runtime_rx, bodies_are_received_on_receive_threads_and_answered_on_the_loop)
{
	pthread_t tid, ct[CLIENTS];
	struct client cl[CLIENTS];
	struct rxt *t = start(2, 15, &tid);
	uint16_t port = rt_loop_port(t->l);
	int held = hold_body(t);

	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 0, "a lone body stays on the loop");
	for (int i = 0; i < CLIENTS; i++) {
		cl[i] = (struct client){ .port = port };
		cr_assert_eq(pthread_create(&ct[i], NULL, client_main, &cl[i]), 0);
	}
	for (int i = 0; i < CLIENTS; i++) {
		pthread_join(ct[i], NULL);
		for (int r = 0; r < PER_CLIENT; r++)
			cr_assert_eq(cl[i].statuses[r], 202, "client %d, request %d: %d", i, r,
				     cl[i].statuses[r]);
	}
	close(held);
	stop(t, tid);
	cr_assert_eq(t->bodies, CLIENTS * PER_CLIENT);
	cr_assert_eq(t->bodies_bad, 0, "every byte where it belongs, every piece watched");
	cr_assert_eq(t->bodies_off_thread, 0, "the body's callback runs on the loop's thread");
	/* The large ones (2 of 3 per client) went to a receive thread, the small one did not. */
	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, CLIENTS * (PER_CLIENT - 1));
	cr_assert_eq(t->watched_elsewhere, CLIENTS * (PER_CLIENT - 1),
		     "a large body's pieces were watched on a receive thread");
	rt_loop_close(t->l);
	cr_assert_eq(t->freed, CLIENTS + 1);
}

Test(runtime_rx, a_lone_body_stays_on_the_loop)
{
	pthread_t tid, ct;
	struct client cl;
	struct rxt *t = start(2, 15, &tid);

	/* One client, one request at a time: no body is ever in flight beside another. */
	cl = (struct client){ .port = rt_loop_port(t->l) };
	cr_assert_eq(pthread_create(&ct, NULL, client_main, &cl), 0);
	pthread_join(ct, NULL);
	for (int r = 0; r < PER_CLIENT; r++)
		cr_assert_eq(cl.statuses[r], 202);
	stop(t, tid);
	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 0, "no hand-off: its two wake-ups saved");
	cr_assert_eq(t->watched_elsewhere, 0);
	cr_assert_eq(t->bodies_bad, 0);
	rt_loop_close(t->l);
}

Test(runtime_rx, without_receive_threads_the_loop_receives_everything)
{
	pthread_t tid, ct;
	struct client cl;
	struct rxt *t = start(0, 15, &tid);

	cl = (struct client){ .port = rt_loop_port(t->l) };
	cr_assert_eq(pthread_create(&ct, NULL, client_main, &cl), 0);
	pthread_join(ct, NULL);
	for (int r = 0; r < PER_CLIENT; r++)
		cr_assert_eq(cl.statuses[r], 202);
	stop(t, tid);
	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 0);
	cr_assert_eq(t->watched_elsewhere, 0);
	cr_assert_eq(t->bodies_bad, 0);
	rt_loop_close(t->l);
}

/*
 * An answer whose body fits after its head goes in one send (rt_conn.c arm_conn_send): the
 * bytes on the wire are the head and the body, whole; and a malformed head's 400, whose
 * Connection: close must be in its head before it is armed, still carries its JSON body.
 */
Test(runtime_rx, small_answers_and_a_malformed_heads_400_arrive_whole_over_a_real_loop)
{
	pthread_t tid;
	struct rxt *t = start(0, 15, &tid);
	uint16_t port = rt_loop_port(t->l);
	char got[1024], head[128];
	uint8_t body[SMALL];
	int fd = dial_ok(port), hl;

	for (uint64_t i = 0; i < SMALL; i++)
		body[i] = pattern(i, SMALL);
	for (int r = 0; r < 3; r++) { /* keep-alive: each answer whole, none run into the next */
		hl = snprintf(head, sizeof(head), "POST /u HTTP/1.1\r\nContent-Length: %u\r\n\r\n",
			      SMALL);
		send_all(fd, head, (size_t)hl);
		send_all(fd, body, sizeof(body));
		cr_assert_eq(read_status(fd, got, sizeof(got)), 202, "got: %s", got);
		cr_assert(strstr(got, "\r\n\r\nok") && !strstr(got, "Connection: close"),
			  "got: %s", got);
	}
	close(fd);
	fd = dial_ok(port);
	send_all(fd, "\x01\x02 garbage\r\n\r\n", 14);
	cr_assert_eq(read_status(fd, got, sizeof(got)), 400, "got: %s", got);
	cr_assert(strstr(got, "Connection: close\r\n"), "got: %s", got);
	cr_assert(strstr(got, "\r\n\r\n{\"error\":\""), "a JSON body after the head: %s", got);
	cr_assert_eq(recv(fd, got, 1, 0), 0, "then the connection closes");
	close(fd);
	stop(t, tid);
	cr_assert_eq(t->bodies_bad, 0);
	rt_loop_close(t->l);
}

Test(runtime_rx, a_body_stalled_on_a_receive_thread_gets_408_after_the_body_timeout)
{
	pthread_t tid;
	struct rxt *t = start(1, 1, &tid);
	int on_loop = hold_body(t), fd = hold_body(t); /* half a body each, then nothing */
	char got[512];
	uint64_t t0 = trib_now_ns();
	int st;

	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 1, "the second is the thread's");
	st = read_status(fd, got, sizeof(got));
	cr_assert_eq(st, 408, "got %d: %s", st, got);
	cr_assert_lt(trib_now_ns() - t0, 3000000000ull, "1 s timeout, 200 ms ticks");
	cr_assert_eq(recv(fd, got, sizeof(got), 0), 0, "then closed");
	st = read_status(on_loop, got, sizeof(got));
	cr_assert_eq(st, 408, "the loop's own, the same: got %d: %s", st, got);
	close(fd);
	close(on_loop);
	stop(t, tid);
	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 1);
	cr_assert_eq(rt_loop_stats(t->l)->timed_out[RT_TO_BODY], 2, "both counted as body timeouts");
	cr_assert_eq(t->freed, 2, "the connections (and what they held) released");
	cr_assert_eq(t->bodies, 0);
	rt_loop_close(t->l);
}

Test(runtime_rx, a_client_gone_mid_body_frees_its_connection_and_accepts_nothing)
{
	pthread_t tid;
	struct rxt *t = start(1, 15, &tid);
	int on_loop = hold_body(t), fd = hold_body(t);
	uint64_t t0 = trib_now_ns();

	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 1, "the second is the thread's");
	close(fd);
	while (atomic_load(&t->freed) == 0 &&
	       trib_now_ns() - t0 < 5000000000ull)
		usleep(10000);
	stop(t, tid);
	cr_assert_eq(t->freed, 1, "the one that went, not the one the loop holds");
	cr_assert_eq(t->bodies, 0, "a half body is never handed up");
	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 1);
	rt_loop_close(t->l);
	close(on_loop);
}

Test(runtime_rx, closing_the_loop_takes_back_a_body_a_thread_holds)
{
	pthread_t tid;
	struct rxt *t = start(2, 15, &tid);
	int on_loop = hold_body(t), fd = hold_body(t);

	stop(t, tid);
	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 1, "the second is a thread's");
	cr_assert_eq(t->freed, 0, "still held");
	rt_loop_close(t->l); /* shuts both, joins the threads, frees them (ASan: no leak) */
	cr_assert_eq(t->freed, 2);
	close(fd);
	close(on_loop);
}

Test(runtime_rx, default_threads_are_half_the_cores_at_most_4_none_on_one)
{
	cr_assert_eq(rt_rx_threads_default(1), 0);
	cr_assert_eq(rt_rx_threads_default(2), 0, "no gain measured on 2 cores: opt-in");
	cr_assert_eq(rt_rx_threads_default(3), 0);
	cr_assert_eq(rt_rx_threads_default(4), 2);
	cr_assert_eq(rt_rx_threads_default(8), 4);
	cr_assert_eq(rt_rx_threads_default(64), RT_RX_THREADS_DEFAULT_MAX);
	cr_assert_eq(rt_rx_threads_default(0), 0);
	cr_assert_eq(rt_rx_threads_default(-1), 0);
}

/* --- HTTPS: the session's records decrypted on a receive thread --- */

static SSL *tls_dial(SSL_CTX *cctx, uint16_t port)
{
	int fd = dial(port);
	SSL *ssl;

	if (fd < 0)
		return NULL;
	ssl = SSL_new(cctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1) {
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	return ssl;
}

static void tls_hangup(SSL *ssl)
{
	int fd = SSL_get_fd(ssl);

	SSL_free(ssl);
	close(fd);
}

static bool tls_send_all(SSL *ssl, const void *p, size_t n)
{
	while (n) {
		int k = SSL_write(ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);

		if (k <= 0)
			return false;
		p = (const char *)p + k;
		n -= (size_t)k;
	}
	return true;
}

/* read_status() over the session. */
static int tls_read_status(SSL *ssl)
{
	char got[512];
	size_t n = 0, need = 0;
	const char *end = NULL, *cl;

	while (n + 1 < sizeof(got)) {
		if (SSL_read(ssl, got + n, 1) != 1)
			return -1;
		got[++n] = '\0';
		if (!end && (end = strstr(got, "\r\n\r\n"))) {
			cl = strstr(got, "Content-Length: ");
			need = (size_t)(end + 4 - got) + (cl ? (size_t)atoi(cl + 16) : 0);
		}
		if (end && n == need)
			return atoi(got + 9);
	}
	return -1;
}

struct tls_client {
	SSL_CTX *cctx;
	uint16_t port;
	int statuses[2];
};

static void *tls_client_main(void *arg)
{
	struct tls_client *cl = arg;
	SSL *ssl = tls_dial(cl->cctx, cl->port);
	uint8_t *body = trib_malloc(BIG + 2);
	char head[128];

	cl->statuses[0] = cl->statuses[1] = -1;
	for (int r = 0; r < 2 && ssl && body; r++) {
		uint64_t len = BIG + (uint64_t)r;
		int hl = snprintf(head, sizeof(head),
				  "POST /u HTTP/1.1\r\nContent-Length: %llu\r\n\r\n",
				  (unsigned long long)len);

		for (uint64_t i = 0; i < len; i++)
			body[i] = pattern(i, len);
		if (!tls_send_all(ssl, head, (size_t)hl) || !tls_send_all(ssl, body, len))
			break;
		cl->statuses[r] = tls_read_status(ssl);
	}
	trib_free(body);
	if (ssl)
		tls_hangup(ssl);
	return NULL;
}

Test(runtime_rx, https_bodies_are_decrypted_on_receive_threads)
{
	char dir[] = "/tmp/trib-rx-tls-XXXXXX", cert[PATH_MAX], key[PATH_MAX], why[512];
	static uint8_t part[BIG / 2];
	struct tls_client cl[3];
	struct rt_tls_ctx *sctx;
	pthread_t tid, ct[3];
	SSL_CTX *cctx;
	struct rxt *t;
	char head[128];
	unsigned before;
	bool created;
	SSL *held;
	int hl = snprintf(head, sizeof(head), "POST /u HTTP/1.1\r\nContent-Length: %u\r\n\r\n",
			  BIG);

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(rt_tls_self_signed(dir, "127.0.0.1", cert, key, sizeof(cert), &created, why,
					sizeof(why)), 0, "%s", why);
	cr_assert_eq(rt_tls_ctx_open(&sctx, cert, key, why, sizeof(why)), 0, "%s", why);
	cctx = SSL_CTX_new(TLS_client_method());
	cr_assert_not_null(cctx);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL); /* the session, not the PKI, is tested */
	t = start_tls(2, 15, &tid, sctx);
	/* Half a body on the loop first: every body after it goes to a receive thread. */
	before = atomic_load(&t->heads);
	held = tls_dial(cctx, rt_loop_port(t->l));
	cr_assert_not_null(held);
	cr_assert(tls_send_all(held, head, (size_t)hl) && tls_send_all(held, part, sizeof(part)));
	for (int i = 0; i < 1000 && atomic_load(&t->heads) == before; i++)
		usleep(10000);
	cr_assert_gt(atomic_load(&t->heads), before);
	for (int i = 0; i < 3; i++) {
		cl[i] = (struct tls_client){ .cctx = cctx, .port = rt_loop_port(t->l) };
		cr_assert_eq(pthread_create(&ct[i], NULL, tls_client_main, &cl[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(ct[i], NULL);
		cr_assert_eq(cl[i].statuses[0], 202, "client %d: %d", i, cl[i].statuses[0]);
		cr_assert_eq(cl[i].statuses[1], 202, "client %d: %d", i, cl[i].statuses[1]);
	}
	tls_hangup(held);
	stop(t, tid);
	cr_assert_eq(rt_loop_stats(t->l)->rx_bodies, 6);
	cr_assert_eq(t->watched_elsewhere, 6, "decrypted and watched on a receive thread");
	cr_assert_eq(t->bodies_bad, 0, "every plaintext byte where it belongs");
	cr_assert_eq(t->bodies_off_thread, 0);
	cr_assert_eq(rt_tls_ctx_stats(sctx)->handshakes, 4);
	rt_loop_close(t->l);
	rt_tls_ctx_close(sctx);
	SSL_CTX_free(cctx);
	unlink(cert);
	unlink(key);
	rmdir(dir);
}
