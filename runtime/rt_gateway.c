// SPDX-License-Identifier: MIT
/* The HTTP gateway: one io_uring loop for client connections, function channels, signals and timers. */
#include "rt_agent.h"
#include "rt_gw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/*
 * Every submission's user_data is a tagged value: the low 3 bits say what
 * completed. Connections are pointers (8-aligned, never freed while an
 * operation is pending); functions are ids, looked up on completion, because
 * a function can be reaped while its read is still queued.
 */
enum op_tag {
	OP_WIRE = 0, /* the node agent's eventfd (a cluster's messages) */
	OP_ACCEPT = 1,
	OP_CONN = 2,
	OP_SIGNAL = 3,
	OP_TICK = 4,
	OP_FN_RECV = 5,
	OP_FN_POLLOUT = 6,
	OP_FN_POLLIN = 7,
};

enum conn_state {
	CS_HEAD,    /* receiving the request head */
	CS_BODY,    /* receiving the body into body_dst */
	CS_DISCARD, /* receiving and dropping a body we will not use, response ready */
	CS_SEND,    /* sending the response */
	CS_PARKED,  /* long poll: waiting for a model */
	CS_HANDLER, /* inside a handler (no I/O) */
};

#define TICK_MS 200
#define DISCARD_MAX (64ull << 20) /* larger unwanted bodies close the connection instead */

struct rt_gw {
	struct rt_node *node;
	struct io_uring ring;
	int lfd;
	int sfd;
	struct signalfd_siginfo si;
	struct __kernel_timespec tick;
	struct rt_conn *conns;
	uint32_t nconns;
	bool stop;
	bool draining;            /* stopping: no clients, waiting for full rounds to commit */
	uint64_t drain_deadline;
	bool accepting;
	uint64_t wire_cnt;
	char scratch[65536];
};

static struct io_uring_sqe *get_sqe(struct rt_gw *gw)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&gw->ring);

	if (!sqe) {
		/* The submission queue is full: hand it to the kernel and take a fresh entry. */
		io_uring_submit(&gw->ring);
		sqe = io_uring_get_sqe(&gw->ring);
	}
	return sqe;
}

static void arm_accept(struct rt_gw *gw)
{
	struct io_uring_sqe *sqe = get_sqe(gw);

	io_uring_prep_multishot_accept(sqe, gw->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, OP_ACCEPT);
	gw->accepting = true;
}

static void arm_signal(struct rt_gw *gw)
{
	struct io_uring_sqe *sqe = get_sqe(gw);

	io_uring_prep_read(sqe, gw->sfd, &gw->si, sizeof(gw->si), 0);
	io_uring_sqe_set_data64(sqe, OP_SIGNAL);
}

static void arm_wire(struct rt_gw *gw)
{
	struct io_uring_sqe *sqe = get_sqe(gw);

	io_uring_prep_read(sqe, rt_agent_fd(gw->node), &gw->wire_cnt, sizeof(gw->wire_cnt), 0);
	io_uring_sqe_set_data64(sqe, OP_WIRE);
}

static void arm_tick(struct rt_gw *gw)
{
	struct io_uring_sqe *sqe = get_sqe(gw);

	gw->tick.tv_sec = 0;
	gw->tick.tv_nsec = TICK_MS * 1000000ll;
	io_uring_prep_timeout(sqe, &gw->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, OP_TICK);
}

/* --- function channels --- */

static void arm_fn_pollin(struct rt_gw *gw, struct rt_fn *fn)
{
	struct io_uring_sqe *sqe = get_sqe(gw);

	io_uring_prep_poll_add(sqe, fn->data, POLLIN);
	io_uring_sqe_set_data64(sqe, ((uint64_t)fn->id << 3) | OP_FN_POLLIN);
	fn->reading_data = true;
}

static void arm_fn_recv(struct rt_gw *gw, struct rt_fn *fn)
{
	struct io_uring_sqe *sqe = get_sqe(gw);

	io_uring_prep_recv(sqe, fn->sock, fn->cbuf, sizeof(fn->cbuf), 0);
	io_uring_sqe_set_data64(sqe, ((uint64_t)fn->id << 3) | OP_FN_RECV);
	fn->reading_ctl = true;
}

static void arm_fn_pollout(struct rt_gw *gw, struct rt_fn *fn)
{
	struct io_uring_sqe *sqe = get_sqe(gw);

	/* In shm+bpf descriptors leave by the gateway's socket, whatever their destination. */
	io_uring_prep_poll_add(sqe, gw->node->dataplane == FN_DP_SHM_BPF ? gw->node->gw_pair[0] :
									fn->sock,
			       POLLOUT);
	io_uring_sqe_set_data64(sqe, ((uint64_t)fn->id << 3) | OP_FN_POLLOUT);
	fn->polling_out = true;
}

void rt_gw_watch_fn(struct rt_node *n, struct rt_fn *fn)
{
	struct rt_gw *gw = n->gw;

	if (!gw)
		return;
	/* Control records (and every descriptor in shm+unix) on the control channel; outputs
	 * on the TCP socket in shm+bpf and tcp. */
	if (fn->data >= 0 && !fn->reading_data)
		arm_fn_pollin(gw, fn);
	if (fn->sock >= 0 && !fn->reading_ctl)
		arm_fn_recv(gw, fn);
}

static void on_fn_recv(struct rt_gw *gw, uint32_t id, int res)
{
	struct rt_fn *fn = rt_fnset_find(gw->node->fns, id);

	if (!fn)
		return;
	fn->reading_ctl = false;
	if (res <= 0) {
		/* End of stream: the function exited (or closed its end); all it sent is read. */
		if (res < 0)
			trib_debug("fn %u: channel: %s", id, strerror(-res));
		rt_node_on_fn_eof(gw->node, fn, false);
		return;
	}
	if (res % SHM_DESC_SIZE) {
		trib_error("fn %u: a message of %d bytes is not whole descriptors; dropped", id, res);
	} else {
		for (int off = 0; off < res; off += SHM_DESC_SIZE) {
			struct shm_desc d;

			memcpy(&d, fn->cbuf + off, sizeof(d));
			rt_node_on_fn_record(gw->node, fn, &d, NULL);
			fn = rt_fnset_find(gw->node->fns, id);
			if (!fn)
				return;
		}
	}
	fn = rt_fnset_find(gw->node->fns, id);
	if (fn && fn->sock >= 0)
		arm_fn_recv(gw, fn);
}

/* tcp: the payload that follows a record; blocking, the function is sending it now. */
static int read_payload(struct rt_fn *fn, float **out)
{
	size_t len = fn->cfg.n_elem * sizeof(float);
	uint8_t *p = trib_malloc(len ? len : 1);
	size_t have = fn->rlen < len ? fn->rlen : len;

	if (!p)
		return -ENOMEM;
	memcpy(p, fn->rbuf, have);
	memmove(fn->rbuf, fn->rbuf + have, fn->rlen - have);
	fn->rlen -= have;
	while (have < len) {
		struct pollfd pf = { .fd = fn->data, .events = POLLIN };
		ssize_t r = recv(fn->data, p + have, len - have, 0);

		if (r > 0) {
			have += (size_t)r;
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
			trib_free(p);
			return r == 0 ? -ECONNRESET : -errno;
		}
		poll(&pf, 1, 1000);
	}
	*out = (float *)(void *)p;
	return 0;
}

/*
 * shm+bpf and tcp: the function's TCP socket is readable. It is a byte
 * stream: whole 64-byte records are cut from it, and in tcp each record is
 * followed by its payload.
 */
static void on_fn_pollin(struct rt_gw *gw, uint32_t id)
{
	struct rt_node *n = gw->node;
	struct rt_fn *fn = rt_fnset_find(n->fns, id);

	if (!fn)
		return;
	fn->reading_data = false;
	for (;;) {
		ssize_t r = recv(fn->data, fn->rbuf + fn->rlen, sizeof(fn->rbuf) - fn->rlen,
				 MSG_DONTWAIT);

		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
			rt_node_on_fn_eof(n, fn, true);
			return;
		}
		if (r < 0)
			break;
		fn->rlen += (size_t)r;
		while (fn->rlen >= SHM_DESC_SIZE) {
			struct shm_desc d;
			float *payload = NULL;

			memcpy(&d, fn->rbuf, sizeof(d));
			memmove(fn->rbuf, fn->rbuf + SHM_DESC_SIZE, fn->rlen - SHM_DESC_SIZE);
			fn->rlen -= SHM_DESC_SIZE;
			if (n->dataplane == FN_DP_TCP) {
				int err = read_payload(fn, &payload);

				if (err) {
					trib_error("fn %u: reading its output: %s", id, strerror(-err));
					rt_node_on_fn_eof(n, fn, true);
					return;
				}
			}
			rt_node_on_fn_record(n, fn, &d, payload);
			fn = rt_fnset_find(n->fns, id);
			if (!fn)
				return;
		}
	}
	arm_fn_pollin(gw, fn);
}

/* shm+bpf: records sk_msg could not route (destination not in the map) come back here. */
static void drain_bounced(struct rt_gw *gw)
{
	struct rt_node *n = gw->node;
	uint8_t buf[64 * SHM_DESC_SIZE];
	static uint8_t part[SHM_DESC_SIZE];
	static size_t plen;
	ssize_t r;

	if (n->gw_pair[1] < 0)
		return;
	while ((r = recv(n->gw_pair[1], buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
		for (ssize_t i = 0; i < r; i++) {
			part[plen++] = buf[i];
			if (plen == SHM_DESC_SIZE) {
				struct shm_desc d;

				memcpy(&d, part, sizeof(d));
				plen = 0;
				trib_error("job %u round %u: descriptor for fn %u bounced: not in the "
					   "router's map", d.job, d.round, d.dst);
			}
		}
	}
}

static void flush_fn(struct rt_fn *fn, void *arg)
{
	struct rt_gw *gw = arg;
	int err;

	if (!rt_fn_has_queue(fn) || fn->polling_out || fn->sock < 0)
		return;
	err = rt_fn_flush(fn);
	if (err == -EAGAIN)
		arm_fn_pollout(gw, fn);
	else if (err)
		trib_error("fn %u: sending queued descriptors: %s", fn->id, strerror(-err));
}

static void on_fn_pollout(struct rt_gw *gw, uint32_t id)
{
	struct rt_fn *fn = rt_fnset_find(gw->node->fns, id);

	if (!fn)
		return;
	fn->polling_out = false;
	flush_fn(fn, gw);
}

/* --- connections --- */

/* Take a parked connection off its job's list of long polls. */
static void conn_unpark(struct rt_conn *c)
{
	for (struct rt_conn **pp = &c->job->waiters; *pp; pp = &(*pp)->wnext) {
		if (*pp == c) {
			*pp = c->wnext;
			break;
		}
	}
	c->wnext = NULL;
	c->parked = false;
}

static void conn_free(struct rt_gw *gw, struct rt_conn *c)
{
	if (c->parked)
		conn_unpark(c);
	if (c->slot_off != UINT64_MAX)
		shm_slot_free(gw->node->arena, c->slot_off);
	if (c->prev)
		c->prev->next = c->next;
	else
		gw->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	gw->nconns--;
	trib_free(c->body_heap);
	trib_free(c->rbody_own);
	rt_blob_release(c->rblob);
	if (c->fd >= 0)
		close(c->fd);
	trib_free(c);
}

static void conn_close(struct rt_gw *gw, struct rt_conn *c)
{
	if (c->op_pending) {
		/* Wake the pending operation; the connection is freed when it completes. */
		c->dead = true;
		shutdown(c->fd, SHUT_RDWR);
		return;
	}
	conn_free(gw, c);
}

static void arm_conn_recv(struct rt_conn *c, void *buf, size_t len)
{
	struct io_uring_sqe *sqe = get_sqe(c->gw);

	io_uring_prep_recv(sqe, c->fd, buf, len, 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_CONN);
	c->op_pending = true;
}

static void arm_conn_send(struct rt_conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(c->gw);
	size_t hl = c->rhead_len;

	/* One send per head and body piece; partial sends resume where they stopped. */
	if (c->sent < hl)
		io_uring_prep_send(sqe, c->fd, c->rhead + c->sent, hl - c->sent,
				   c->rbody_len ? MSG_MORE : 0);
	else
		io_uring_prep_send(sqe, c->fd, c->rbody + (c->sent - hl),
				   c->rbody_len - (c->sent - hl), 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_CONN);
	c->op_pending = true;
}

static void conn_reset_request(struct rt_conn *c)
{
	trib_free(c->body_heap);
	c->body_heap = NULL;
	trib_free(c->rbody_own);
	c->rbody_own = NULL;
	rt_blob_release(c->rblob);
	c->rblob = NULL;
	if (c->slot_off != UINT64_MAX) {
		shm_slot_free(c->node->arena, c->slot_off);
		c->slot_off = UINT64_MAX;
	}
	c->body_dst = NULL;
	c->body_len = c->body_got = 0;
	c->body_taken = false;
	c->on_body = NULL;
	c->job = NULL;
	c->rbody = NULL;
	c->rbody_len = c->rhead_len = c->sent = 0;
	c->close_after = false;
	c->head_len = 0;
}

static void conn_process_head(struct rt_gw *gw, struct rt_conn *c);

/* Start on the next request: bytes already received after the last one are parsed first. */
static void conn_next_request(struct rt_gw *gw, struct rt_conn *c)
{
	conn_reset_request(c);
	c->state = CS_HEAD;
	if (c->head_used)
		conn_process_head(gw, c);
	else
		arm_conn_recv(c, c->head, sizeof(c->head));
}

static void conn_start_send(struct rt_conn *c)
{
	c->state = CS_SEND;
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

void rt_conn_respond(struct rt_conn *c, int status, const char *ctype, const void *body,
		     size_t len, const char *extra)
{
	int hl;

	trib_free(c->rbody_own);
	c->rbody_own = NULL;
	if (len) {
		c->rbody_own = trib_malloc(len);
		if (!c->rbody_own) {
			status = 500;
			len = 0;
			extra = NULL;
		} else {
			memcpy(c->rbody_own, body, len);
		}
	}
	c->rbody = c->rbody_own;
	c->rbody_len = len;
	if (!c->req.keep_alive)
		c->close_after = true;
	/* A body we did not read: drop it if small, else close (it may never come, with Expect). */
	if (!c->body_taken && c->req.content_length > 0 &&
	    (c->req.expect[0] || c->req.content_length > DISCARD_MAX || c->req.chunked))
		c->close_after = true;
	if (c->req.chunked)
		c->close_after = true;
	hl = rt_http_format_head(c->rhead, sizeof(c->rhead), status, ctype, len, !c->close_after,
				 extra);
	if (hl < 0) {
		hl = rt_http_format_head(c->rhead, sizeof(c->rhead), 500, "text/plain", 0, false,
					 NULL);
		c->close_after = true;
		c->rbody_len = 0;
	}
	c->rhead_len = (size_t)hl;
	c->node->m.requests++;
	if (!c->body_taken && c->req.content_length > 0 && !c->close_after) {
		c->body_taken = true;
		c->body_len = c->req.content_length;
		c->body_got = take_buffered_body(c, NULL, c->body_len);
		if (c->body_got < c->body_len) {
			c->state = CS_DISCARD;
			arm_conn_recv(c, c->gw->scratch,
				      c->body_len - c->body_got < sizeof(c->gw->scratch) ?
					      c->body_len - c->body_got :
					      sizeof(c->gw->scratch));
			return;
		}
	}
	c->body_taken = true;
	conn_start_send(c);
}

void rt_conn_respond_blob(struct rt_conn *c, int status, const char *ctype, struct rt_blob *b,
			  const char *extra)
{
	rt_conn_respond(c, status, ctype, NULL, 0, extra);
	/* Re-format with the blob's length; the body is sent straight from it. */
	c->rblob = b;
	c->rbody = b->data;
	c->rbody_len = b->len;
	c->rhead_len = (size_t)rt_http_format_head(c->rhead, sizeof(c->rhead), status, ctype, b->len,
						   !c->close_after, extra);
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
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

		/* Tiny, on an idle socket: a plain send does not block in practice. */
		if (send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			trib_debug("100 Continue: %s", strerror(errno));
	}
	c->body_got = take_buffered_body(c, dst, len);
	if (c->body_got == len) {
		c->state = CS_HANDLER;
		cb(c);
		return;
	}
	arm_conn_recv(c, dst + c->body_got, len - c->body_got);
}

void rt_conn_park(struct rt_conn *c, struct rt_job *job, uint32_t after, uint64_t deadline_ns)
{
	c->state = CS_PARKED;
	c->parked = true;
	c->job = job;
	c->wait_after = after;
	c->deadline_ns = deadline_ns;
	c->wnext = job->waiters;
	job->waiters = c;
}

void rt_gw_model_ready(struct rt_node *n, struct rt_job *job)
{
	struct rt_conn *c = job->waiters;

	(void)n;
	job->waiters = NULL;
	while (c) {
		struct rt_conn *next = c->wnext;

		c->wnext = NULL;
		c->parked = false;
		c->state = CS_HANDLER;
		rt_api_on_wake(c, false);
		c = next;
	}
}

static void conn_process_head(struct rt_gw *gw, struct rt_conn *c)
{
	const char *why = NULL;
	size_t hl = 0;
	int err = rt_http_parse_head(c->head, c->head_used, &c->req, &hl, &why);

	if (err == -EAGAIN) {
		if (c->head_used == sizeof(c->head)) {
			err = -E2BIG;
		} else {
			arm_conn_recv(c, c->head + c->head_used, sizeof(c->head) - c->head_used);
			return;
		}
	}
	if (err) {
		/* No trustworthy framing: answer and close. */
		memset(&c->req, 0, sizeof(c->req));
		c->body_taken = true;
		c->head_used = 0;
		gw->node->m.rejected[RT_REJ_MALFORMED]++;
		rt_conn_error(c, err == -E2BIG ? 431 : 400,
			      err == -E2BIG ? "request head too large" :
					      (why ? why : "malformed request head"),
			      -1, NULL);
		c->close_after = true;
		/* Re-format the head with Connection: close. */
		c->rhead_len = (size_t)rt_http_format_head(c->rhead, sizeof(c->rhead),
							   err == -E2BIG ? 431 : 400,
							   "application/json", c->rbody_len, false,
							   NULL);
		return;
	}
	c->head_len = hl;
	finish_head_bytes(c);
	c->req_start_ns = trib_now_ns();
	c->state = CS_HANDLER;
	c->body_taken = c->req.content_length == 0 && !c->req.chunked;
	rt_api_on_head(c);
}

static void on_conn(struct rt_gw *gw, struct rt_conn *c, int res)
{
	c->op_pending = false;
	if (c->dead) {
		conn_free(gw, c);
		return;
	}
	switch (c->state) {
	case CS_HEAD:
		if (res <= 0) {
			conn_close(gw, c);
			return;
		}
		c->head_used += (size_t)res;
		conn_process_head(gw, c);
		return;
	case CS_BODY:
		if (res <= 0) {
			/* Client went away mid-body: nothing was accepted, free the slot. */
			conn_close(gw, c);
			return;
		}
		c->body_got += (uint64_t)res;
		if (c->body_got < c->body_len) {
			arm_conn_recv(c, c->body_dst + c->body_got, c->body_len - c->body_got);
			return;
		}
		c->state = CS_HANDLER;
		c->on_body(c);
		return;
	case CS_DISCARD:
		if (res <= 0) {
			conn_close(gw, c);
			return;
		}
		c->body_got += (uint64_t)res;
		if (c->body_got < c->body_len) {
			uint64_t left = c->body_len - c->body_got;

			arm_conn_recv(c, gw->scratch, left < sizeof(gw->scratch) ? left :
						  sizeof(gw->scratch));
			return;
		}
		conn_start_send(c);
		return;
	case CS_SEND:
		if (res < 0) {
			conn_close(gw, c);
			return;
		}
		c->sent += (size_t)res;
		if (c->sent < c->rhead_len + c->rbody_len) {
			arm_conn_send(c);
			return;
		}
		if (c->close_after) {
			conn_close(gw, c);
			return;
		}
		conn_next_request(gw, c);
		return;
	default:
		trib_error("connection in state %d got a completion", c->state);
		conn_close(gw, c);
		return;
	}
}

static void on_accept(struct rt_gw *gw, int res, unsigned flags)
{
	struct rt_conn *c;
	int one = 1;

	if (!(flags & IORING_CQE_F_MORE) && !gw->stop && !gw->draining)
		arm_accept(gw);
	if (res < 0) {
		/* While draining the listener is shut down on purpose. */
		if (res != -ECANCELED && !gw->draining)
			trib_warn("accept: %s", strerror(-res));
		return;
	}
	if (gw->stop || gw->draining) {
		close(res);
		return;
	}
	c = trib_calloc(1, sizeof(*c));
	if (!c) {
		close(res);
		return;
	}
	setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->gw = gw;
	c->node = gw->node;
	c->fd = res;
	c->slot_off = UINT64_MAX;
	c->next = gw->conns;
	if (gw->conns)
		gw->conns->prev = c;
	gw->conns = c;
	gw->nconns++;
	c->state = CS_HEAD;
	arm_conn_recv(c, c->head, sizeof(c->head));
}

static void on_tick(struct rt_gw *gw)
{
	uint64_t now = trib_now_ns();

	for (struct rt_job *j = gw->node->jobs; j; j = j->next) {
		struct rt_conn **pp = &j->waiters;

		while (*pp) {
			struct rt_conn *c = *pp;

			if (c->deadline_ns <= now) {
				*pp = c->wnext;
				c->wnext = NULL;
				c->parked = false;
				c->state = CS_HANDLER;
				rt_api_on_wake(c, true);
			} else {
				pp = &c->wnext;
			}
		}
	}
	rt_fnset_foreach(gw->node->fns, flush_fn, gw);
	drain_bounced(gw);
	rt_node_tick(gw->node);
	rt_agent_tick(gw->node);
}

static int listen_on(struct rt_node *n, int *out)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int one = 1;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(n->opts.listen_port);
	if (inet_pton(AF_INET, n->opts.listen_host, &sa.sin_addr) != 1) {
		trib_error("--listen: '%s' is not an IPv4 address", n->opts.listen_host);
		return -EINVAL;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1024)) {
		int err = -errno;

		trib_error("listening on %s:%u: %s", n->opts.listen_host, n->opts.listen_port,
			   strerror(-err));
		close(fd);
		return err;
	}
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	n->opts.listen_port = ntohs(sa.sin_port);
	*out = fd;
	return 0;
}

/* Full rounds whose model is not written yet: every update in them was answered 202. */
static bool rounds_in_flight(struct rt_node *n)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		for (struct rt_round *r = j->inflight; r; r = r->next)
			if (r->closed)
				return true;
	return false;
}

/*
 * SIGINT/SIGTERM: stop taking clients at once, but let full rounds finish
 * (their functions are folding) so that no update answered 202 in a full
 * round is lost; at most 30 s, and a second signal stops at once. Updates
 * of a round that is still open are lost with it (docs/ARCHITECTURE.md).
 */
static void begin_drain(struct rt_gw *gw)
{
	gw->draining = true;
	gw->drain_deadline = trib_now_ns() + 30ull * 1000000000ull;
	shutdown(gw->lfd, SHUT_RDWR);
	for (struct rt_conn *c = gw->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	if (rounds_in_flight(gw->node))
		trib_info("waiting for full rounds to be written before stopping");
}

int rt_gw_run(struct rt_node *n)
{
	struct rt_gw *gw;
	sigset_t mask;
	int err;

	gw = trib_calloc(1, sizeof(*gw));
	if (!gw)
		return -ENOMEM;
	gw->node = n;
	gw->lfd = gw->sfd = -1;
	err = listen_on(n, &gw->lfd);
	if (err)
		goto err_free;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	gw->sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (gw->sfd < 0) {
		err = -errno;
		goto err_close_listen;
	}
	/*
	 * Smaller rings where locked memory is scarce (containers often allow
	 * 64 KiB): a ring of 64 entries still serves, with more submits.
	 */
	for (unsigned entries = 1024;; entries /= 4) {
		err = io_uring_queue_init(entries, &gw->ring, 0);
		if (err != -ENOMEM || entries <= 64)
			break;
		trib_warn("io_uring with %u entries: %s; trying %u", entries, strerror(-err),
			  entries / 4);
	}
	if (err) {
		trib_error("io_uring_queue_init: %s", strerror(-err));
		goto err_close_signal;
	}
	n->gw = gw;
	arm_accept(gw);
	arm_signal(gw);
	arm_tick(gw);
	if (n->agent)
		arm_wire(gw);
	trib_info("gateway listening on http://%s:%u", n->opts.listen_host, n->opts.listen_port);
	if (n->opts.port_file) {
		char buf[16];
		int len = snprintf(buf, sizeof(buf), "%u\n", n->opts.listen_port);
		FILE *f = fopen(n->opts.port_file, "w");

		if (f) {
			fwrite(buf, 1, (size_t)len, f);
			fclose(f);
		}
	}

	while (!gw->stop) {
		if (gw->draining && (!rounds_in_flight(n) || trib_now_ns() > gw->drain_deadline)) {
			if (rounds_in_flight(n))
				trib_warn("stopping with rounds still aggregating after 30 s; their "
					  "updates are lost");
			break;
		}
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;

		err = io_uring_submit_and_wait(&gw->ring, 1);
		if (err < 0 && err != -EINTR) {
			trib_error("io_uring_submit_and_wait: %s", strerror(-err));
			break;
		}
		io_uring_for_each_cqe(&gw->ring, head, cqe) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			int res = cqe->res;
			unsigned flags = cqe->flags;

			seen++;
			switch (ud & 7) {
			case OP_WIRE:
				if (n->agent) {
					rt_agent_on_wire(n);
					if (!gw->stop)
						arm_wire(gw);
				}
				break;
			case OP_ACCEPT:
				on_accept(gw, res, flags);
				break;
			case OP_CONN:
				on_conn(gw, (struct rt_conn *)(uintptr_t)(ud & ~7ull), res);
				break;
			case OP_SIGNAL:
				if (res == sizeof(gw->si)) {
					if (gw->si.ssi_signo == SIGCHLD) {
						rt_node_on_sigchld(n);
					} else if (gw->draining) {
						trib_info("signal %u again: stopping now",
							  gw->si.ssi_signo);
						gw->stop = true;
					} else {
						trib_info("signal %u: stopping", gw->si.ssi_signo);
						begin_drain(gw);
					}
				}
				if (!gw->stop)
					arm_signal(gw);
				break;
			case OP_TICK:
				on_tick(gw);
				if (!gw->stop)
					arm_tick(gw);
				break;
			case OP_FN_RECV:
				on_fn_recv(gw, (uint32_t)(ud >> 3), res);
				break;
			case OP_FN_POLLOUT:
				on_fn_pollout(gw, (uint32_t)(ud >> 3));
				break;
			case OP_FN_POLLIN:
				on_fn_pollin(gw, (uint32_t)(ud >> 3));
				break;
			default:
				break;
			}
		}
		io_uring_cq_advance(&gw->ring, seen);
	}

	n->stopping = true;
	err = 0;
	/* Stop: close every connection; queued operations complete with errors, then exit the ring. */
	for (struct rt_conn *c = gw->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	io_uring_queue_exit(&gw->ring);
	/* The ring is gone: nothing completes into a connection any more. */
	while (gw->conns) {
		gw->conns->op_pending = false;
		conn_free(gw, gw->conns);
	}
	n->gw = NULL;
err_close_signal:
	close(gw->sfd);
err_close_listen:
	close(gw->lfd);
err_free:
	trib_free(gw);
	return err;
}
