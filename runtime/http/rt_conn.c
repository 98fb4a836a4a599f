// SPDX-License-Identifier: MIT
/* Client connections of the loop: read a head, hand it up, receive a body, send the response. */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rt_loop_priv.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

enum conn_state {
	CS_HEAD,    /* receiving the request head */
	CS_BODY,    /* receiving the body into body_dst */
	CS_DISCARD, /* receiving and dropping a body we will not use, response ready */
	CS_SEND,    /* sending the response */
	CS_PARKED,  /* long poll: waiting for the layer above */
	CS_HANDLER, /* inside a handler (no I/O) */
};

#define DISCARD_MAX (64ull << 20) /* larger unwanted bodies close the connection instead */

static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
/* A head or body that ran out of time (best effort: the connection closes anyway). */
#define TIMEOUT_BODY "{\"error\":\"request timed out\"}"
_Static_assert(sizeof(TIMEOUT_BODY) - 1 == 29, "Content-Length below is the body's");
static const char timeout_resp[] = "HTTP/1.1 408 Request Timeout\r\n"
				   "Content-Type: application/json\r\n"
				   "Content-Length: 29\r\n"
				   "Connection: close\r\n\r\n" TIMEOUT_BODY;
static const char oom_body[] = "{\"error\":\"out of memory\"}";
/* Plain HTTP sent to a TLS port: said in clear, as nginx does, then the connection closes. */
#define HTTPS_ONLY_BODY "{\"error\":\"this port speaks HTTPS\"}"
_Static_assert(sizeof(HTTPS_ONLY_BODY) - 1 == 34, "Content-Length below is the body's");
static const char https_only_resp[] = "HTTP/1.1 400 Bad Request\r\n"
				      "Content-Type: application/json\r\n"
				      "Content-Length: 34\r\n"
				      "Connection: close\r\n\r\n" HTTPS_ONLY_BODY;

/* The socket operation in flight for a TLS connection (c->tls_op). */
enum tls_op {
	TLS_OP_NONE,
	TLS_OP_RECV,    /* ciphertext into the session's inbound buffer */
	TLS_OP_NOP,     /* the session holds what to read: read it at the completion */
	TLS_OP_FLUSH,   /* handshake, ticket or alert bytes out, before the next receive */
	TLS_OP_ENCRYPT, /* the response is complete: encrypt it at the completion */
	TLS_OP_SEND,    /* a response's records out */
	TLS_OP_FAIL,    /* the session failed while arming: completes as an error */
};

void *rt_conn_ctx(const struct rt_conn *c)
{
	return c->loop->conn_hooks.ctx;
}

/* @c's body is no longer the loop's to receive (whole, or the connection goes). */
static void body_off_loop(struct rt_loop *l, struct rt_conn *c)
{
	if (!c->body_on_loop)
		return;
	c->body_on_loop = false;
	l->bodies_on_loop--;
}

void rt_conn_free(struct rt_loop *l, struct rt_conn *c)
{
	body_off_loop(l, c);
	if (l->conn_hooks.on_free)
		l->conn_hooks.on_free(l->conn_hooks.ctx, c);
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	l->nconns--;
	l->stats.open = l->nconns;
	trib_free(c->body_heap);
	trib_free(c->rbody_own);
	trib_blob_release(c->rblob);
	rt_tls_close(c->tls);
	if (c->fd >= 0)
		close(c->fd);
	trib_free(c);
	rt_loop_conn_closed(l);
}

/* Start (or, for a body or a send that moved, restart) @c's timer of @phase. */
static void conn_timer(struct rt_conn *c, enum rt_timeout_phase phase)
{
	c->deadline_ns = rt_timeout_deadline(&c->loop->opts.limits, phase, trib_now_ns());
	c->timer = c->deadline_ns ? (uint8_t)phase : RT_TO_NONE;
}

/* Send what a TLS session wrote without waiting (the connection is closing). */
static void tls_send_now(struct rt_conn *c)
{
	const uint8_t *out;
	size_t n;
	ssize_t k;

	while ((n = rt_tls_out_data(c->tls, &out)) > 0) {
		k = send(c->fd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k <= 0)
			return;
		rt_tls_out_consume(c->tls, (size_t)k);
	}
}

/* Records of @c are being sent by io_uring: nothing else may be sent now. */
static bool tls_sending(const struct rt_conn *c)
{
	return c->op_pending && (c->tls_op == TLS_OP_FLUSH || c->tls_op == TLS_OP_SEND);
}

/* A closing TLS connection: close_notify after a handshake, an alert after a failed one. */
static void tls_goodbye(struct rt_conn *c)
{
	if (c->fd < 0 || rt_tls_alert_http(c->tls) || tls_sending(c))
		return;
	rt_tls_shutdown(c->tls);
	tls_send_now(c);
}

static void conn_close(struct rt_loop *l, struct rt_conn *c)
{
	if (c->tls)
		tls_goodbye(c); /* a pending receive does not stop it: it only touches the inbound */
	if (c->op_pending) {
		/* Wake the pending operation; the connection is freed when it completes. */
		c->dead = true;
		shutdown(c->fd, SHUT_RDWR);
		return;
	}
	rt_conn_free(l, c);
}

static void tls_submit(struct rt_conn *c, enum tls_op op, const void *buf, size_t len)
{
	struct io_uring_sqe *sqe = rt_ring_sqe(c->ring);

	if (op == TLS_OP_RECV)
		io_uring_prep_recv(sqe, c->fd, (void *)buf, len, 0);
	else if (op == TLS_OP_FLUSH || op == TLS_OP_SEND)
		io_uring_prep_send(sqe, c->fd, buf, len, MSG_NOSIGNAL);
	else
		io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, ud_conn(c));
	c->tls_op = (uint8_t)op;
	c->op_pending = true;
}

/*
 * A TLS connection wants plaintext in c->tls_dst: first send what the
 * session wrote (its handshake flight, tickets), then read what it holds
 * already, else receive ciphertext into its inbound buffer.
 */
static void tls_arm_recv(struct rt_conn *c)
{
	const uint8_t *out;
	uint8_t *in;
	size_t n = rt_tls_out_data(c->tls, &out);

	if (n) {
		tls_submit(c, TLS_OP_FLUSH, out, n);
		return;
	}
	if (rt_tls_readable(c->tls)) {
		tls_submit(c, TLS_OP_NOP, NULL, 0);
		return;
	}
	n = rt_tls_in_space(c->tls, &in);
	/* A read that needs more drains the inbound buffer: no room is a broken session. */
	tls_submit(c, n ? TLS_OP_RECV : TLS_OP_FAIL, in, n);
}

/* Encrypt what of the response fits the session's outbound buffer, and send it. */
static void tls_encrypt_send(struct rt_conn *c)
{
	size_t hl = c->rhead_len, pos = c->sent;
	const uint8_t *out;
	size_t n;
	int w = 0;

	c->tls_put = 0;
	while (pos < hl + c->rbody_len) {
		const char *p = pos < hl ? c->rhead + pos : c->rbody + (pos - hl);
		size_t len = pos < hl ? hl - pos : c->rbody_len - (pos - hl);

		w = rt_tls_write(c->tls, p, len);
		if (w <= 0)
			break;
		c->tls_put += (size_t)w;
		pos += (size_t)w;
		if ((size_t)w < len)
			break;
	}
	n = rt_tls_out_data(c->tls, &out);
	tls_submit(c, w < 0 || !n ? TLS_OP_FAIL : TLS_OP_SEND, out, n);
}

/*
 * Encrypt only once the handler is back: it may still change the response
 * after starting it (rt_conn_respond_blob formats the head again).
 */
static void tls_arm_send(struct rt_conn *c)
{
	tls_submit(c, TLS_OP_ENCRYPT, NULL, 0);
}

/*
 * A TLS connection's socket operation completed with *res. Returns true
 * with *res what the plaintext operation asked for gave (bytes; <= 0
 * closes), false if the session armed another operation to get there.
 */
static bool tls_complete(struct rt_conn *c, int *res)
{
	const uint8_t *out;
	size_t n;
	int got;

	switch (c->tls_op) {
	case TLS_OP_ENCRYPT:
		tls_encrypt_send(c);
		return false;
	case TLS_OP_FLUSH:
	case TLS_OP_SEND:
		if (*res <= 0) {
			*res = *res ? *res : -EPIPE;
			return true;
		}
		rt_tls_out_consume(c->tls, (size_t)*res);
		n = rt_tls_out_data(c->tls, &out);
		if (n) {
			tls_submit(c, (enum tls_op)c->tls_op, out, n);
			return false;
		}
		if (c->tls_op == TLS_OP_SEND) {
			*res = (int)c->tls_put; /* the plaintext these records held */
			return true;
		}
		tls_arm_recv(c);
		return false;
	case TLS_OP_RECV:
		if (*res <= 0)
			return true;
		rt_tls_in_commit(c->tls, (size_t)*res);
		/* fall through */
	case TLS_OP_NOP:
		got = rt_tls_read(c->tls, c->tls_dst, c->tls_want);
		if (got == -EAGAIN) {
			tls_arm_recv(c);
			return false;
		}
		if (got < 0 && rt_tls_alert_http(c->tls) &&
		    send(c->fd, https_only_resp, sizeof(https_only_resp) - 1,
			 MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			trib_debug("400 to plain HTTP: %s", strerror(errno));
		*res = got;
		return true;
	default:
		*res = -EPROTO;
		return true;
	}
}

static void arm_conn_recv(struct rt_conn *c, void *buf, size_t len)
{
	struct io_uring_sqe *sqe;

	if (c->loop->detached)
		return; /* a test feeds the bytes */
	if (c->tls) {
		/* The session decrypts into @buf: a head buffer, an arena slot, the scratch. */
		c->tls_dst = buf;
		c->tls_want = len;
		tls_arm_recv(c);
		return;
	}
	sqe = rt_ring_sqe(c->ring);

	io_uring_prep_recv(sqe, c->fd, buf, len, 0);
	io_uring_sqe_set_data64(sqe, ud_conn(c));
	c->op_pending = true;
}

static void arm_conn_send(struct rt_conn *c)
{
	struct io_uring_sqe *sqe;
	size_t hl = c->rhead_len;

	if (c->loop->detached)
		return; /* the response stays in rhead and rbody for the test */
	if (c->tls) {
		tls_arm_send(c);
		return;
	}
	sqe = rt_ring_sqe(c->ring);

	/*
	 * A body that fits after the head goes in the same send: one operation, one completion
	 * and one loop turn per answer instead of two (every 202 of an update was two). The
	 * copy in rhead equals rbody, so a partial send resumes below as from the two pieces.
	 * rhead must not be formatted again once this is armed (a format writes its NUL over
	 * the copy's first byte): rt_conn_respond_blob re-formats only an answer armed with no
	 * body, never combined.
	 */
	if (c->sent == 0 && c->rbody_len && c->rbody_len <= sizeof(c->rhead) - hl) {
		memcpy(c->rhead + hl, c->rbody, c->rbody_len);
		io_uring_prep_send(sqe, c->fd, c->rhead, hl + c->rbody_len, 0);
		io_uring_sqe_set_data64(sqe, ud_conn(c));
		c->op_pending = true;
		return;
	}
	/* One send per head and body piece; partial sends resume where they stopped. */
	if (c->sent < hl)
		io_uring_prep_send(sqe, c->fd, c->rhead + c->sent, hl - c->sent,
				   c->rbody_len ? MSG_MORE : 0);
	else
		io_uring_prep_send(sqe, c->fd, c->rbody + (c->sent - hl),
				   c->rbody_len - (c->sent - hl), 0);
	io_uring_sqe_set_data64(sqe, ud_conn(c));
	c->op_pending = true;
}

static void conn_reset_request(struct rt_conn *c)
{
	struct rt_loop *l = c->loop;

	trib_free(c->body_heap);
	c->body_heap = NULL;
	trib_free(c->rbody_own);
	c->rbody_own = NULL;
	trib_blob_release(c->rblob);
	c->rblob = NULL;
	if (l->conn_hooks.on_request_end)
		l->conn_hooks.on_request_end(l->conn_hooks.ctx, c);
	c->body_dst = NULL;
	c->body_len = c->body_got = 0;
	c->body_taken = false;
	c->on_body = NULL;
	c->on_body_bytes = NULL;
	c->rbody = NULL;
	c->rbody_len = c->rhead_len = c->sent = 0;
	c->close_after = false;
	c->head_len = 0;
}

static void conn_process_head(struct rt_loop *l, struct rt_conn *c);
static void conn_expire(struct rt_loop *l, struct rt_conn *c);

/* Start on the next request: bytes already received after the last one are parsed first. */
static void conn_next_request(struct rt_loop *l, struct rt_conn *c)
{
	conn_reset_request(c);
	c->state = CS_HEAD;
	/* A pipelined request's head has begun; else the connection idles until a byte comes. */
	conn_timer(c, c->head_used ? RT_TO_HEAD : RT_TO_IDLE);
	if (c->head_used)
		conn_process_head(l, c);
	else
		arm_conn_recv(c, c->head, sizeof(c->head));
}

static void conn_start_send(struct rt_conn *c)
{
	c->state = CS_SEND;
	conn_timer(c, RT_TO_SEND);
	c->sent = 0;
	arm_conn_send(c);
}

/* Bytes of the body that came in with the head: move them to the body's destination. */
static uint64_t take_buffered_body(struct rt_conn *c, uint8_t *dst, uint64_t want)
{
	size_t avail = c->head_used - c->head_len;
	size_t n = avail < want ? avail : (size_t)want;

	/*
	 * The only copy of update bytes on this node: what the kernel handed
	 * over together with the head (at most RT_HEAD_BUF bytes). The rest of
	 * the body is received straight into its slot.
	 */
	if (dst && n)
		memcpy(dst, c->head + c->head_len, n);
	memmove(c->head + c->head_len, c->head + c->head_len + n, avail - n);
	c->head_used -= n;
	return n;
}

static void finish_head_bytes(struct rt_conn *c)
{
	/* Drop the parsed head; keep what follows (body or a pipelined request). */
	memmove(c->head, c->head + c->head_len, c->head_used - c->head_len);
	c->head_used -= c->head_len;
	c->head_len = 0;
}

/* A body we did not read: drop it if small, else close (it may never come, with Expect). */
/*
 * A body the answer does not need is read and dropped before the answer goes when it is small
 * enough, also on a connection that closes after it (Connection: close): closing a socket with
 * unread bytes makes the kernel send RST, and a client still sending its body then gets
 * "connection reset" or EPIPE instead of the answer. That was every resend of an update with
 * Python's urllib (Connection: close): its 202 was never read, so it resent forever.
 */
static bool conn_body_discardable(const struct rt_conn *c)
{
	return !c->req.expect[0] && c->req.content_length <= DISCARD_MAX && !c->req.chunked;
}

static void conn_decide_close(struct rt_conn *c)
{
	if (!c->req.keep_alive)
		c->close_after = true;
	if (!c->body_taken && c->req.content_length > 0 && !conn_body_discardable(c))
		c->close_after = true;
	if (c->req.chunked)
		c->close_after = true;
}

void rt_conn_respond(struct rt_conn *c, int status, const char *ctype, const void *body,
		     size_t len, const char *extra)
{
	struct rt_loop *l = c->loop;
	char *dst = c->rbody_small;
	int hl;

	trib_free(c->rbody_own);
	c->rbody_own = NULL;
	if (len > sizeof(c->rbody_small)) {
		c->rbody_own = trib_malloc(len);
		if (c->rbody_own) {
			dst = c->rbody_own;
		} else {
			/* A large body is a read's (list, metrics): answering 500 changes nothing. */
			status = 500;
			body = oom_body;
			len = sizeof(oom_body) - 1;
			ctype = "application/json";
			extra = NULL;
		}
	}
	if (len)
		memcpy(dst, body, len);
	c->rbody = dst;
	c->rbody_len = len;
	conn_decide_close(c);
	hl = rt_http_format_head(c->rhead, sizeof(c->rhead), status, ctype, len, !c->close_after,
				 extra);
	if (hl < 0) {
		hl = rt_http_format_head(c->rhead, sizeof(c->rhead), 500, "text/plain", 0, false,
					 NULL);
		c->close_after = true;
		c->rbody_len = 0;
	}
	c->rhead_len = (size_t)hl;
	l->stats.requests++;
	if (!c->body_taken && c->req.content_length > 0 && conn_body_discardable(c)) {
		c->body_taken = true;
		c->body_len = c->req.content_length;
		c->body_got = take_buffered_body(c, NULL, c->body_len);
		if (c->body_got < c->body_len) {
			c->state = CS_DISCARD;
			conn_timer(c, RT_TO_BODY);
			arm_conn_recv(c, l->scratch,
				      c->body_len - c->body_got < sizeof(l->scratch) ?
					      c->body_len - c->body_got :
					      sizeof(l->scratch));
			return;
		}
	}
	c->body_taken = true;
	conn_start_send(c);
}

void rt_conn_respond_blob(struct rt_conn *c, int status, const char *ctype, struct trib_blob *b,
			  const char *extra)
{
	rt_conn_respond(c, status, ctype, NULL, 0, extra);
	/* Re-format with the blob's length; the body is sent straight from it. */
	c->rblob = b;
	c->rbody = b->data;
	c->rbody_len = b->len;
	c->rhead_len = (size_t)rt_http_format_head(c->rhead, sizeof(c->rhead), status, ctype,
						   b->len, !c->close_after, extra);
}

void rt_conn_error(struct rt_conn *c, int status, const char *msg, long long round,
		   const char *extra)
{
	char buf[1024];
	int n = rt_http_json_error(buf, sizeof(buf) - 32, msg);

	if (n < 0)
		n = snprintf(buf, sizeof(buf), "{\"error\":\"internal error\"}");
	if (round >= 0 && n > 1) {
		/* Append ,"round":N inside the object. */
		n--;
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"round\":%lld}", round);
	}
	rt_conn_respond(c, status, "application/json", buf, (size_t)n, extra);
}

void rt_conn_read_body(struct rt_conn *c, uint8_t *dst, uint64_t len,
		       void (*cb)(struct rt_conn *c))
{
	c->body_dst = dst;
	c->body_len = len;
	c->on_body = cb;
	c->body_taken = true;
	c->state = CS_BODY;
	if (c->req.expect[0] && !strcasecmp(c->req.expect, "100-continue") &&
	    c->head_used == 0) {
		/* Over TLS a record, sent before the next receive (tls_arm_recv). */
		if (c->tls)
			rt_tls_write(c->tls, cont, sizeof(cont) - 1);
		/* Tiny, on an idle socket: a plain send does not block in practice. */
		else if (send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			trib_debug("100 Continue: %s", strerror(errno));
	}
	c->body_got = take_buffered_body(c, dst, len);
	if (c->body_got && c->on_body_bytes)
		c->on_body_bytes(c);
	if (c->body_got == len) {
		c->state = CS_HANDLER;
		cb(c);
		return;
	}
	conn_timer(c, RT_TO_BODY);
	if (rt_rx_give(c->loop->rx, c, c->loop->bodies_on_loop))
		return; /* a receive thread's until rt_conn_rx_back() */
	c->body_on_loop = true;
	c->loop->bodies_on_loop++;
	arm_conn_recv(c, dst + c->body_got, len - c->body_got);
}

void rt_conn_arm_body_recv(struct rt_conn *c)
{
	arm_conn_recv(c, c->body_dst + c->body_got, c->body_len - c->body_got);
}

bool rt_conn_tls_step(struct rt_conn *c, int *res)
{
	return tls_complete(c, res);
}

void rt_conn_rx_back(struct rt_loop *l, struct rt_conn *c, int res)
{
	assert(c->state == CS_BODY && !c->op_pending && !c->dead);
	if (res == RT_RX_DONE) {
		/* As a last receive completing on this loop (rt_conn_on_complete, CS_BODY). */
		c->state = CS_HANDLER;
		c->on_body(c);
		return;
	}
	if (res == RT_RX_TIMED_OUT) {
		c->timer = RT_TO_BODY;
		conn_expire(l, c);
		return;
	}
	/* Client went away mid-body (or a drain shut it): nothing was accepted, free the slot. */
	conn_close(l, c);
}

void rt_conn_watch_body(struct rt_conn *c, void (*cb)(struct rt_conn *c))
{
	c->on_body_bytes = cb;
}

void rt_conn_park(struct rt_conn *c)
{
	/* A long poll waits as long as its own timeout says (the api's), not the idle one. */
	c->state = CS_PARKED;
	c->timer = RT_TO_NONE;
}

void rt_conn_unpark(struct rt_conn *c)
{
	c->state = CS_HANDLER;
	c->timer = RT_TO_NONE;
}

/* No trustworthy framing: answer and close. */
static void conn_bad_head(struct rt_loop *l, struct rt_conn *c, int err, const char *why)
{
	int status = err == -E2BIG ? 431 : 400;
	uint64_t held = 0;

	memset(&c->req, 0, sizeof(c->req));
	c->body_taken = true;
	c->head_used = 0;
	/* Before the answer is formatted: its head says Connection: close (and is final then). */
	c->close_after = true;
	l->stats.malformed++;
	/* Counted as reason "malformed" in /metrics; logged as the API's refusals are (rt_api.c). */
	if (trib_ratelimit_allow(&l->bad_head_log, trib_now_ns(), &held))
		trib_info("refused (malformed, job -): %d %s (and %llu more in the last second)",
			  status, err == -E2BIG ? "request head too large" :
			  (why ? why : "malformed request head"), (unsigned long long)held);
	rt_conn_error(c, status,
		      err == -E2BIG ? "request head too large" :
				      (why ? why : "malformed request head"),
		      -1, NULL);
}

static void conn_process_head(struct rt_loop *l, struct rt_conn *c)
{
	const char *why = NULL;
	size_t hl = 0;
	int err;

	if (c->timer == RT_TO_IDLE && c->head_used)
		conn_timer(c, RT_TO_HEAD); /* the next head began */
	err = rt_http_parse_head(c->head, c->head_used, &c->req, &hl, &why);
	if (err == -EAGAIN) {
		if (c->head_used == sizeof(c->head)) {
			err = -E2BIG;
		} else {
			arm_conn_recv(c, c->head + c->head_used, sizeof(c->head) - c->head_used);
			return;
		}
	}
	if (err) {
		conn_bad_head(l, c, err, why);
		return;
	}
	c->head_len = hl;
	finish_head_bytes(c);
	c->req_start_ns = trib_now_ns();
	c->state = CS_HANDLER;
	c->timer = RT_TO_NONE;
	c->body_taken = c->req.content_length == 0 && !c->req.chunked;
	l->conn_hooks.on_head(l->conn_hooks.ctx, c);
}

/* A received piece of an unwanted body: drop it, then send the response. */
static void on_discard(struct rt_loop *l, struct rt_conn *c, int res)
{
	uint64_t left;

	if (res <= 0) {
		conn_close(l, c);
		return;
	}
	c->body_got += (uint64_t)res;
	if (c->body_got < c->body_len) {
		conn_timer(c, RT_TO_BODY);
		left = c->body_len - c->body_got;
		arm_conn_recv(c, l->scratch, left < sizeof(l->scratch) ? left : sizeof(l->scratch));
		return;
	}
	conn_start_send(c);
}

static void on_sent(struct rt_loop *l, struct rt_conn *c, int res)
{
	if (res < 0) {
		conn_close(l, c);
		return;
	}
	c->sent += (size_t)res;
	if (c->sent < c->rhead_len + c->rbody_len) {
		conn_timer(c, RT_TO_SEND);
		arm_conn_send(c);
		return;
	}
	if (c->close_after) {
		conn_close(l, c);
		return;
	}
	conn_next_request(l, c);
}

void rt_conn_on_complete(struct rt_loop *l, struct rt_conn *c, int res)
{
	assert(!c->rx_owned);
	c->op_pending = false;
	if (c->dead) {
		rt_conn_free(l, c);
		return;
	}
	if (c->tls && !tls_complete(c, &res))
		return;
	switch (c->state) {
	case CS_HEAD:
		if (res <= 0) {
			conn_close(l, c);
			return;
		}
		c->head_used += (size_t)res;
		conn_process_head(l, c);
		return;
	case CS_BODY:
		if (res <= 0) {
			/* Client went away mid-body: nothing was accepted, free the slot. */
			conn_close(l, c);
			return;
		}
		c->body_got += (uint64_t)res;
		if (c->on_body_bytes)
			c->on_body_bytes(c);
		if (c->body_got < c->body_len) {
			conn_timer(c, RT_TO_BODY); /* it moved */
			arm_conn_recv(c, c->body_dst + c->body_got, c->body_len - c->body_got);
			return;
		}
		body_off_loop(l, c);
		c->state = CS_HANDLER;
		c->on_body(c);
		return;
	case CS_DISCARD:
		on_discard(l, c, res);
		return;
	case CS_SEND:
		on_sent(l, c, res);
		return;
	default:
		trib_error("connection in state %d got a completion", c->state);
		conn_close(l, c);
		return;
	}
}

/* A new connection on @fd (-1: a detached one), linked into @l; NULL if out of memory. */
static struct rt_conn *conn_new(struct rt_loop *l, int fd)
{
	struct rt_conn *c = trib_calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->loop = l;
	c->ring = l->detached ? NULL : &l->ring;
	c->fd = fd;
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->nconns++;
	l->stats.open = l->nconns;
	c->state = CS_HEAD;
	/* The first head is timed from the accept: a connection that never speaks is closed. */
	conn_timer(c, RT_TO_HEAD);
	if (l->conn_hooks.on_open)
		l->conn_hooks.on_open(l->conn_hooks.ctx, c);
	return c;
}

void rt_conn_accepted(struct rt_loop *l, int fd)
{
	struct rt_conn *c;
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = conn_new(l, fd);
	if (!c) {
		close(fd);
		return;
	}
	if (l->opts.tls && rt_tls_open(l->opts.tls, &c->tls)) {
		rt_conn_free(l, c);
		return;
	}
	arm_conn_recv(c, c->head, sizeof(c->head));
}

struct rt_conn *rt_conn_new_detached(struct rt_loop *l)
{
	return l->detached ? conn_new(l, -1) : NULL;
}

int rt_conn_feed(struct rt_conn *c, const void *buf, size_t len)
{
	if (!c->loop->detached || c->op_pending)
		return -EINVAL;
	if (c->state == CS_SEND)
		conn_next_request(c->loop, c); /* the last response was taken */
	if (c->state != CS_HEAD && c->state != CS_BODY)
		return -EBUSY;
	if (c->state == CS_HEAD) {
		if (len > sizeof(c->head) - c->head_used)
			return -E2BIG;
		memcpy(c->head + c->head_used, buf, len);
		c->head_used += len;
		conn_process_head(c->loop, c);
		return 0;
	}
	if (len > c->body_len - c->body_got)
		return -E2BIG;
	memcpy(c->body_dst + c->body_got, buf, len);
	rt_conn_on_complete(c->loop, c, (int)len);
	return 0;
}

bool rt_conn_answered(const struct rt_conn *c)
{
	return c->state == CS_SEND;
}

/* The 408 as a record, unless records of the session are being sent right now. */
static void tls_say_408(struct rt_conn *c)
{
	if (!rt_tls_done(c->tls) || tls_sending(c))
		return;
	rt_tls_write(c->tls, timeout_resp, sizeof(timeout_resp) - 1);
	tls_send_now(c);
}

/* @c's timer ran out: count it, tell a client that was mid-request, close. */
static void conn_expire(struct rt_loop *l, struct rt_conn *c)
{
	enum rt_timeout_phase phase = (enum rt_timeout_phase)c->timer;

	l->stats.timed_out[phase]++;
	c->timer = RT_TO_NONE;
	trib_debug("connection %d: %s timeout", c->fd, rt_timeout_phase_name(phase));
	if (c->tls && !rt_tls_done(c->tls))
		rt_tls_fail(c->tls, RT_TLS_FAIL_TIMEOUT); /* a stalled handshake is a head timeout */
	if (!l->detached && (phase == RT_TO_HEAD || phase == RT_TO_BODY) &&
	    (phase == RT_TO_BODY || c->head_used)) {
		/* Tiny, and the connection is closing: a non-blocking send or nothing. */
		if (c->tls)
			tls_say_408(c);
		else if (send(c->fd, timeout_resp, sizeof(timeout_resp) - 1,
			      MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			trib_debug("408: %s", strerror(errno));
	}
	/*
	 * A body's receive into its slot is still queued: conn_close() shuts
	 * the socket, the receive completes at once, and only then is the
	 * connection freed and its slot released (on_free), so the kernel never
	 * writes into a slot that was given to another upload.
	 */
	conn_close(l, c);
}

void rt_loop_expire(struct rt_loop *l, uint64_t now_ns)
{
	struct rt_conn *c = l->conns, *next;

	for (; c; c = next) {
		next = c->next; /* conn_expire() may free c */
		if (c->rx_owned)
			continue; /* its receive thread keeps its timer (rt_rx.c) */
		if (c->timer != RT_TO_NONE && !c->dead && now_ns >= c->deadline_ns)
			conn_expire(l, c);
	}
}
