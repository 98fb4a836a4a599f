/* SPDX-License-Identifier: MIT */
/* The gateway's io_uring loop: client connections and responses, a tick, signals, other fds. */
#ifndef RT_LOOP_H
#define RT_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt_http.h"

struct io_uring;
#include "rt_tls.h"
#include "trib_blob.h"

#define RT_HEAD_BUF 16384
#define RT_LOOP_TICK_MS 200
/* Bytes each connection keeps for the layer above (see struct rt_conn.user). */
#define RT_CONN_USER_BYTES 160
/* Handlers of one-shot operations on other fds (rt_loop_handler_add). */
#define RT_LOOP_MAX_HANDLERS 16

/* Admission defaults (README, "Admission control"); each has a flag of `up`. */
#define RT_HEAD_TIMEOUT_S 10
#define RT_BODY_TIMEOUT_S 15
#define RT_IDLE_TIMEOUT_S 60
/* Default connection cap: this share of RLIMIT_NOFILE (the rest: arena, store, functions)... */
#define RT_MAX_CONNS_PCT 80
/* ...and never more than this (each connection holds ~18 KiB of buffers). */
#define RT_MAX_CONNS_CEIL 65536
/* EMFILE/ENFILE: accepting pauses this long, doubling up to the maximum. */
#define RT_ACCEPT_BACKOFF_MIN_MS 50
#define RT_ACCEPT_BACKOFF_MAX_MS 1000

/*
 * What a connection's timer watches (README: --*-timeout-s). A head must be
 * complete within head_timeout_s of its first byte (of the accept, for a
 * connection's first request), however slowly it trickles in; a body being
 * received or discarded, and a response being sent, may move no byte for
 * body_timeout_s; a keep-alive connection may wait idle_timeout_s for its next
 * request. A handler at work or a parked long poll has no timer.
 */
enum rt_timeout_phase {
	RT_TO_NONE,
	RT_TO_HEAD,
	RT_TO_BODY,
	RT_TO_IDLE,
	RT_TO_SEND,
	RT_TO__COUNT,
};

/* Admission control of the loop; a timeout of 0 is off. */
struct rt_loop_limits {
	uint32_t head_timeout_s;
	uint32_t body_timeout_s;
	uint32_t idle_timeout_s;
	uint32_t max_connections; /* 0: RT_MAX_CONNS_PCT of RLIMIT_NOFILE, at most the ceiling */
};

struct rt_loop;

/*
 * One client connection. Owned by the loop; at most one io_uring operation
 * is in flight for it at any time, so it is freed only when none is. The
 * layer above reads the request (req, body_heap, body_len) and answers with
 * the rt_conn_* verbs; the other fields are the loop's.
 *
 * Threads (--rx-threads, runtime/http/rt_rx.c). A connection is owned by
 * exactly one thread at a time. The loop's thread owns it, except while a
 * body-receive thread receives its body: from rt_rx_give() (the loop's
 * thread pushes it on the thread's queue) until the loop's thread takes it
 * off the return queue (rt_rx_on_back()). Meanwhile the loop's thread reads
 * only fd, prev, next (set at accept, changed by no one else) and rx_owned,
 * and does nothing to it but shutdown(fd) (a drain); the receive thread
 * touches body_got, deadline_ns, op_pending, ring, the rx_* fields, the
 * body's bytes, a TLS connection's session (tls, tls_*), and whatever
 * on_body_bytes touches, nothing of the loop's or the node's. The
 * queues are mutex-protected, so every write before a hand-off is seen after
 * it. Asserted at both ends (rt_rx.c).
 */
struct rt_conn {
	struct rt_loop *loop;
	int fd;
	int state;
	uint8_t timer;            /* enum rt_timeout_phase */
	bool op_pending;
	bool dead;                /* shut down; free once the pending op completes */
	bool body_on_loop;        /* its body is being received by the loop's thread (counted) */
	struct io_uring *ring;    /* where its operations go: its owner's ring (NULL: detached) */
	struct rt_conn *prev, *next; /* all connections */

	/* request head */
	char head[RT_HEAD_BUF];
	size_t head_used;         /* bytes in head[] */
	size_t head_len;          /* bytes of head[] that are the parsed head */
	struct rt_http_req req;
	uint64_t req_start_ns;
	uint64_t deadline_ns;     /* of the timer (trib_now_ns clock) */

	/* body: received into body_dst (an arena slot or a heap buffer) */
	uint8_t *body_dst;
	uint64_t body_len;
	uint64_t body_got;
	bool body_taken;          /* the body was read or discarded */
	uint8_t *body_heap;       /* heap body set by the layer above, freed with the request */
	void (*on_body)(struct rt_conn *c);
	/* optional: body_got grew (rt_conn_watch_body); the new bytes are still in cache */
	void (*on_body_bytes)(struct rt_conn *c);

	/* response */
	char rhead[1024];
	size_t rhead_len;
	/* small bodies (errors, 201, 202): no allocation that could turn the status into 500 */
	char rbody_small[1024];
	char *rbody_own;          /* owned body bytes (larger ones) */
	struct trib_blob *rblob;  /* held body blob */
	const char *rbody;
	size_t rbody_len;
	size_t sent;
	bool close_after;

	/*
	 * TLS (NULL: plain HTTP). A receive or send above then goes through the
	 * session: tls_op says which socket operation is in flight, tls_dst and
	 * tls_want where the plaintext asked for goes, tls_put how much
	 * plaintext the ciphertext being sent holds.
	 */
	struct rt_tls *tls;
	uint8_t tls_op;
	uint8_t *tls_dst;
	size_t tls_want;
	size_t tls_put;

	/* receive threads (rt_rx.c; the ownership rule above) */
	bool rx_owned;            /* the loop's thread's: a receive thread holds it */
	bool rx_expired;          /* the holding thread's: its body timed out, receive cancelled */
	uint8_t rx_thread;        /* the thread it was given to */
	int rx_res;               /* how it came back (enum rt_rx_res in rt_loop_priv.h, -errno) */
	struct rt_conn *rx_next, *rx_prev; /* a queue's link, or the holding thread's list */

	/*
	 * The layer above's per-connection state, opaque here: zeroed at
	 * accept, released through the conn hooks (on_request_end, on_free).
	 */
	_Alignas(16) unsigned char user[RT_CONN_USER_BYTES];
};

/*
 * What the layer above does with connections. @ctx is handed to each call
 * (and returned by rt_conn_ctx()). Every pointer but on_head may be NULL.
 */
struct rt_conn_hooks {
	void *ctx;
	/* A complete head was parsed into c->req: answer it or read its body. */
	void (*on_head)(void *ctx, struct rt_conn *c);
	/* A connection was accepted (c->user is zeroed). */
	void (*on_open)(void *ctx, struct rt_conn *c);
	/* The response is sent; the connection goes on to its next request. */
	void (*on_request_end)(void *ctx, struct rt_conn *c);
	/* The connection is about to be freed (also at rt_loop_close()). */
	void (*on_free)(void *ctx, struct rt_conn *c);
};

/* What the wiring does with the loop's own events. Every pointer may be NULL. */
struct rt_loop_hooks {
	void *ctx;
	/* Every RT_LOOP_TICK_MS. */
	void (*on_tick)(void *ctx);
	/* A signal was read from opts->signal_fd. */
	void (*on_signal)(void *ctx, int signo);
	/* Before each wait for completions: the place to call rt_loop_stop(). */
	void (*before_wait)(void *ctx);
};

struct rt_loop_opts {
	const char *listen_host; /* an IPv4 address */
	uint16_t listen_port;    /* 0 picks a free port (rt_loop_port() says which) */
	const char *port_file;   /* if set, the bound port is written there once listening */
	int signal_fd;           /* a trib_signal_open() fd (borrowed), or -1: no signals */
	struct rt_loop_limits limits; /* as given: a timeout of 0 is off (the CLI fills defaults) */
	struct rt_tls_ctx *tls;  /* borrowed, outlives the loop; NULL: plain HTTP */
	uint32_t rx_threads;     /* body-receive threads (rt_rx.c); 0: the loop receives all */
};

/* Counted by the loop for /metrics. */
struct rt_loop_stats {
	uint64_t requests;  /* responses started */
	uint64_t malformed; /* heads refused (400, 431) before any handler saw them */
	uint64_t timed_out[RT_TO__COUNT]; /* connections closed by their timer, by phase */
	uint64_t refused_max_conns; /* connections answered 503 at the cap, then closed */
	uint64_t refused_fd_limit;  /* accepts failed with EMFILE/ENFILE (each pauses accepting) */
	uint32_t open;              /* connections open now */
	uint32_t max_connections;   /* the cap in force */
	uint32_t rx_threads;        /* body-receive threads running */
	uint64_t rx_bodies;         /* bodies handed to them */
	const struct rt_tls_stats *tls; /* handshakes (NULL: plain HTTP) */
};

/*
 * Listen and set up the ring; signals read from opts->signal_fd go to the
 * on_signal hook. The hooks are copied. *out is owned by the caller
 * (rt_loop_close). 0 or -errno. Nothing is accepted until rt_loop_run():
 * clients that connect before wait in the listen backlog (rt_up.c relies
 * on it: no request is served before the arena's recovery is done).
 */
int rt_loop_open(struct rt_loop **out, const struct rt_loop_opts *opts,
		 const struct rt_loop_hooks *hooks, const struct rt_conn_hooks *conn_hooks);
/*
 * Raise RLIMIT_NOFILE's soft limit to the hard one (logged once when it
 * changes): a connection is a file. 0 or -errno.
 */
int rt_loop_raise_nofile(void);
/*
 * Body-receive threads for @ncpu cores online when --rx-threads is not given: half the cores,
 * at most RT_RX_THREADS_DEFAULT_MAX, none below RT_RX_THREADS_MIN_CORES. On 2 cores they gained
 * nothing (16 connections 0.99-1.19x over five runs: the client and the fold take the other
 * core; docs/BENCHMARKS.md, "Body-receive threads") and cost 0.01-0.06 CPU s/GB, so they are
 * opt-in there (--rx-threads 1).
 */
uint32_t rt_rx_threads_default(long ncpu);
#define RT_RX_THREADS_DEFAULT_MAX 4
#define RT_RX_THREADS_MIN_CORES 4
#define RT_RX_THREADS_MAX 64
/* The connection cap for @requested (0: the default) under a soft fd limit of @nofile. */
uint32_t rt_loop_max_conns(uint32_t requested, uint64_t nofile);
/* How long accepting pauses after an EMFILE, given the last pause (0: none yet). */
uint32_t rt_accept_backoff_next(uint32_t last_ms);
/* When a timer of @phase started at @now_ns runs out (0: that timeout is off). */
uint64_t rt_timeout_deadline(const struct rt_loop_limits *lim, enum rt_timeout_phase phase,
			     uint64_t now_ns);
/* "head", "body", "idle", "send" ("none"). */
const char *rt_timeout_phase_name(enum rt_timeout_phase phase);

/*
 * At most one log line a second for a repeated event: rt_ratelog_ok() says
 * whether to log now, and how many were suppressed since the last line.
 */
struct rt_ratelog {
	uint64_t next_ns;
	uint64_t suppressed;
};
bool rt_ratelog_ok(struct rt_ratelog *r, uint64_t now_ns, uint64_t *suppressed);

/* Run until rt_loop_stop() (or the ring fails: logged). Returns 0. */
int rt_loop_run(struct rt_loop *l);
/*
 * Hand the operations queued so far (responses' sends, receives) to the kernel now, from
 * before_wait, rather than with the wait: what the caller does next then comes after them.
 */
void rt_loop_submit(struct rt_loop *l);
/* Stop after the current batch of completions. */
void rt_loop_stop(struct rt_loop *l);
bool rt_loop_stopped(const struct rt_loop *l);
/* Take no more clients: close the listener and shut every connection down. */
void rt_loop_drain(struct rt_loop *l);
bool rt_loop_draining(const struct rt_loop *l);
/* Close every connection (conn hook on_free), the ring and the listener. Accepts NULL. */
void rt_loop_close(struct rt_loop *l);
uint16_t rt_loop_port(const struct rt_loop *l);
const struct rt_loop_stats *rt_loop_stats(const struct rt_loop *l);

/*
 * One-shot operations on fds the loop does not own. @fn is called with @arg,
 * the operation's @key and its result (bytes, poll mask or -errno) when it
 * completes. Returns the handler's index, or -ENOSPC.
 */
int rt_loop_handler_add(struct rt_loop *l, void (*fn)(void *arg, uint32_t key, int res),
			void *arg);
/* recv(2) into @buf (borrowed until the completion). */
void rt_loop_recv(struct rt_loop *l, int fd, void *buf, size_t len, int handler, uint32_t key);
/* read(2) into @buf (borrowed until the completion). */
void rt_loop_read(struct rt_loop *l, int fd, void *buf, size_t len, int handler, uint32_t key);
/* poll(2) for @events once. */
void rt_loop_poll(struct rt_loop *l, int fd, unsigned events, int handler, uint32_t key);

/* The conn hooks' ctx of the loop that owns @c. */
void *rt_conn_ctx(const struct rt_conn *c);
/* Answer with @body (copied) of @ctype; @extra is preformatted header lines or NULL. */
void rt_conn_respond(struct rt_conn *c, int status, const char *ctype, const void *body,
		     size_t len, const char *extra);
/* Answer with a held blob (the reference moves to the connection). */
void rt_conn_respond_blob(struct rt_conn *c, int status, const char *ctype, struct trib_blob *b,
			  const char *extra);
/* Answer {"error": msg} (plus "round" when @round >= 0). */
void rt_conn_error(struct rt_conn *c, int status, const char *msg, long long round,
		   const char *extra);
/* Receive the request's body into @dst (@len bytes, caller-owned), then call @cb. */
void rt_conn_read_body(struct rt_conn *c, uint8_t *dst, uint64_t len,
		       void (*cb)(struct rt_conn *c));
/*
 * Before rt_conn_read_body: call @cb each time more of the body has landed in @dst (body_got
 * grew), the last time just before the body's callback. A check or a sum done there reads
 * bytes the receive has just written, from cache, instead of a second pass over the whole body
 * from memory after its last byte, while the client waits for the answer. Reset with the
 * request. @cb may run on a body-receive thread (rt_rx.c): it may read the body's bytes, c's
 * body fields and req, and read and write c->user, nothing else (no job, no node, no loop).
 */
void rt_conn_watch_body(struct rt_conn *c, void (*cb)(struct rt_conn *c));
/* Leave @c waiting (a long poll) until the layer above answers it; no I/O meanwhile. */
void rt_conn_park(struct rt_conn *c);
/* A parked connection is answered next (from a hook, a tick or a wake-up). */
void rt_conn_unpark(struct rt_conn *c);

/*
 * Tests: a loop with no socket, no signals and no ring. Its connections
 * (rt_conn_new_detached) take their bytes from rt_conn_feed() and keep
 * their response in rhead/rhead_len and rbody/rbody_len, so a router can be
 * driven without a network. rt_loop_close() frees it. 0 or -ENOMEM.
 */
int rt_loop_open_detached(struct rt_loop **out, const struct rt_conn_hooks *conn_hooks);
/* A connection of a detached loop (owned by it), or NULL. */
struct rt_conn *rt_conn_new_detached(struct rt_loop *l);
/*
 * @len bytes (borrowed) arrive on @c: a head is handled as soon as it is
 * complete, a body once all of it came. Feeding after a response starts the
 * next request. 0, -E2BIG (more than the buffer or the body holds), -EBUSY
 * (the handler has not answered), -EINVAL (not detached).
 */
int rt_conn_feed(struct rt_conn *c, const void *buf, size_t len);
/* Whether @c's response is ready (rhead and rbody hold it). */
bool rt_conn_answered(const struct rt_conn *c);
/*
 * Close every connection whose timer ran out at @now_ns (counted in the
 * stats by phase; the conn hook on_free releases what it held). The tick
 * calls it; tests call it with a clock of their own.
 */
void rt_loop_expire(struct rt_loop *l, uint64_t now_ns);

#endif
