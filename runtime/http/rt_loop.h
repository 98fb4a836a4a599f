/* SPDX-License-Identifier: MIT */
/* The gateway's io_uring loop: client connections and responses, a tick, signals, other fds. */
#ifndef RT_LOOP_H
#define RT_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt_http.h"
#include "trib_blob.h"

#define RT_HEAD_BUF 16384
#define RT_LOOP_TICK_MS 200
/* Bytes each connection keeps for the layer above (see struct rt_conn.user). */
#define RT_CONN_USER_BYTES 128
/* Handlers of one-shot operations on other fds (rt_loop_handler_add). */
#define RT_LOOP_MAX_HANDLERS 16

struct rt_loop;

/*
 * One client connection. Owned by the loop; at most one io_uring operation
 * is in flight for it at any time, so it is freed only when none is. The
 * layer above reads the request (req, body_heap, body_len) and answers with
 * the rt_conn_* verbs; the other fields are the loop's.
 */
struct rt_conn {
	struct rt_loop *loop;
	int fd;
	int state;
	bool op_pending;
	bool dead;                /* shut down; free once the pending op completes */
	struct rt_conn *prev, *next; /* all connections */

	/* request head */
	char head[RT_HEAD_BUF];
	size_t head_used;         /* bytes in head[] */
	size_t head_len;          /* bytes of head[] that are the parsed head */
	struct rt_http_req req;
	uint64_t req_start_ns;

	/* body: received into body_dst (an arena slot or a heap buffer) */
	uint8_t *body_dst;
	uint64_t body_len;
	uint64_t body_got;
	bool body_taken;          /* the body was read or discarded */
	uint8_t *body_heap;       /* heap body set by the layer above, freed with the request */
	void (*on_body)(struct rt_conn *c);

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
};

/* Counted by the loop for /metrics. */
struct rt_loop_stats {
	uint64_t requests;  /* responses started */
	uint64_t malformed; /* heads refused (400, 431) before any handler saw them */
};

/*
 * Listen and set up the ring; signals read from opts->signal_fd go to the
 * on_signal hook. The hooks are copied. *out is owned by the caller
 * (rt_loop_close). 0 or -errno.
 */
int rt_loop_open(struct rt_loop **out, const struct rt_loop_opts *opts,
		 const struct rt_loop_hooks *hooks, const struct rt_conn_hooks *conn_hooks);
/* Run until rt_loop_stop() (or the ring fails: logged). Returns 0. */
int rt_loop_run(struct rt_loop *l);
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

#endif
