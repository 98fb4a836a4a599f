/* SPDX-License-Identifier: MIT */
/* Inside the loop (http/ only): its state, and the one encoding of io_uring user_data. */
#ifndef RT_LOOP_PRIV_H
#define RT_LOOP_PRIV_H

#include <liburing.h>

#include "rt_loop.h"
#include "trib_ratelimit.h"

/*
 * io_uring user_data, built by ud_conn()/ud_ext()/ud_plain() and read by
 * ud_tag()/ud_conn_of()/ud_handler()/ud_key(), nowhere else:
 *
 *   bits 0..2    the tag (enum op_tag): what completed
 *   OP_CONN      bits 3..63: the connection's pointer (8-aligned, so its low
 *                3 bits are 0; never freed while an operation is pending)
 *   OP_EXT       bits 8..15: the handler's index; bits 32..63: the key (a
 *                function's id: looked up on completion, because a function
 *                can be reaped while its read is still queued)
 *   other tags   no payload
 */
enum op_tag {
	OP_NONE = 0,   /* completions nobody waits for (an accept's cancel) */
	OP_ACCEPT = 1,
	OP_CONN = 2,
	OP_SIGNAL = 3,
	OP_TICK = 4,
	OP_EXT = 5,
	OP_RESUME = 6, /* the end of an accept pause (EMFILE backoff) */
	OP_RX = 7,     /* the receive threads gave bodies back (rt_rx.c) */
};

static inline uint64_t ud_plain(enum op_tag t)
{
	return (uint64_t)t;
}

static inline uint64_t ud_conn(const struct rt_conn *c)
{
	return (uint64_t)(uintptr_t)c | OP_CONN;
}

static inline uint64_t ud_ext(int handler, uint32_t key)
{
	return ((uint64_t)key << 32) | ((uint64_t)(handler & 0xff) << 8) | OP_EXT;
}

static inline enum op_tag ud_tag(uint64_t ud)
{
	return (enum op_tag)(ud & 7);
}

static inline struct rt_conn *ud_conn_of(uint64_t ud)
{
	return (struct rt_conn *)(uintptr_t)(ud & ~7ull);
}

static inline int ud_handler(uint64_t ud)
{
	return (int)((ud >> 8) & 0xff);
}

static inline uint32_t ud_key(uint64_t ud)
{
	return (uint32_t)(ud >> 32);
}

struct rt_loop_handler {
	void (*fn)(void *arg, uint32_t key, int res);
	void *arg;
};

struct rt_loop {
	struct trib_ratelimit bad_head_log; /* a malformed head's log line: one a second */
	struct rt_loop_hooks hooks;
	struct rt_conn_hooks conn_hooks;
	struct rt_loop_opts opts;
	struct io_uring ring;
	int lfd;
	int sfd; /* borrowed: opts.signal_fd */
	struct __kernel_timespec tick;
	struct rt_conn *conns;
	uint32_t nconns;
	bool stop;
	bool draining; /* no more clients */
	bool accepting;      /* a multishot accept is armed */
	bool accept_paused;  /* EMFILE/ENFILE: no accept until OP_RESUME or a connection closes */
	bool resume_armed;   /* an OP_RESUME timeout is queued */
	uint32_t backoff_ms; /* the last pause; 0 after a successful accept */
	uint32_t max_conns;  /* the cap in force (rt_loop_max_conns) */
	struct __kernel_timespec resume_ts;
	struct rt_ratelog accept_log;
	bool detached; /* tests: no socket, no ring; connections are fed by rt_conn_feed() */
	struct rt_loop_handler handlers[RT_LOOP_MAX_HANDLERS];
	int nhandlers;
	struct rt_loop_stats stats;
	struct rt_rx *rx; /* body-receive threads (NULL: none, --rx-threads 0) */
	uint32_t bodies_on_loop; /* bodies the loop's thread is receiving (c->body_on_loop) */
	char scratch[65536];
};

/* A free submission entry of @r (submits the queue first when it is full). */
static inline struct io_uring_sqe *rt_ring_sqe(struct io_uring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(r);

	if (!sqe) {
		io_uring_submit(r);
		sqe = io_uring_get_sqe(r);
	}
	return sqe;
}

/* A free submission entry (submits the queue first when it is full). */
struct io_uring_sqe *rt_loop_sqe(struct rt_loop *l);

/* rt_conn.c: a connection was accepted on @fd. */
void rt_conn_accepted(struct rt_loop *l, int fd);
/* rt_conn.c: an operation of @c completed with @res. */
void rt_conn_on_complete(struct rt_loop *l, struct rt_conn *c, int res);
/* rt_conn.c: close @c now or once its pending operation completes. */
void rt_conn_free(struct rt_loop *l, struct rt_conn *c);
/* rt_loop.c: a connection closed: a paused accept may go on (an fd is free). */
void rt_loop_conn_closed(struct rt_loop *l);

/*
 * Body-receive threads (rt_rx.c). Only bodies with at least this much left
 * to receive after the head's bytes go to a thread: below it the hand-off
 * (two queue pushes, two eventfd wake-ups) costs more than the receive.
 */
#define RT_RX_MIN_BYTES (128u << 10)

/* How a receive thread gave a connection back (c->rx_res); a -errno: the receive failed. */
enum rt_rx_res {
	RT_RX_DONE = 1,      /* the whole body is in body_dst */
	RT_RX_TIMED_OUT = 2, /* no byte for body_timeout_s: answer 408 and close */
};

struct rt_rx;
/* Start @nthreads receive threads for @l (0: none, *out NULL). 0 or -errno (logged). */
int rt_rx_open(struct rt_loop *l, uint32_t nthreads, struct rt_rx **out);
/* Stop and join the threads; what they held is the caller's again. Accepts NULL. */
void rt_rx_close(struct rt_rx *rx);
uint32_t rt_rx_threads(const struct rt_rx *rx);
/* Arm the loop's read of the return eventfd (OP_RX). */
void rt_rx_arm(struct rt_rx *rx);
/*
 * Give @c (CS_BODY, no operation pending, its timer set) to a receive
 * thread, if enough is left (plain or TLS), and another body is being
 * received already (@on_loop by the loop's thread, or any by a receive
 * thread): a lone body gains nothing from another thread (its client waits
 * for the answer either way) and would pay the hand-off's two wake-ups.
 * true: @c is the thread's until rt_rx_on_back() hands it to
 * rt_conn_rx_back(); false: still the caller's (arm its receive as before).
 */
bool rt_rx_give(struct rt_rx *rx, struct rt_conn *c, uint32_t on_loop);
/* OP_RX completed with @res: take back every connection returned, in order. */
void rt_rx_on_back(struct rt_rx *rx, int res);
/* rt_conn.c: @c is back from a receive thread with @res (enum rt_rx_res or -errno). */
void rt_conn_rx_back(struct rt_loop *l, struct rt_conn *c, int res);
/*
 * rt_conn.c, for the thread that owns @c (either): receive the rest of its body into
 * body_dst on c->ring (through its TLS session, if any). One operation; op_pending set.
 */
void rt_conn_arm_body_recv(struct rt_conn *c);
/*
 * rt_conn.c: a TLS connection's operation completed with *res: true with *res the
 * plaintext bytes (<= 0: closed or failed), false if the session armed another operation.
 */
bool rt_conn_tls_step(struct rt_conn *c, int *res);

#endif
