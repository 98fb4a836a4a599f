// SPDX-License-Identifier: MIT
/* Function channels: records read from functions, queued records sent on, bounced descriptors. */
#include "rt_node_priv.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "trib_alloc.h"
#include "trib_log.h"

static void arm_fn_pollin(struct rt_node *n, struct rt_fn *fn)
{
	if (!n->hooks.io_poll)
		return;
	n->hooks.io_poll(n->hooks.ctx, fn->data, POLLIN, RT_FN_IO_POLLIN, fn->id);
	fn->reading_data = true;
}

static void arm_fn_recv(struct rt_node *n, struct rt_fn *fn)
{
	if (!n->hooks.io_recv)
		return;
	n->hooks.io_recv(n->hooks.ctx, fn->sock, fn->cbuf, sizeof(fn->cbuf), RT_FN_IO_RECV, fn->id);
	fn->reading_ctl = true;
}

static void arm_fn_pollout(struct rt_node *n, struct rt_fn *fn)
{
	if (!n->hooks.io_poll)
		return;
	/* In shm+bpf descriptors leave by the gateway's socket, whatever their destination. */
	n->hooks.io_poll(n->hooks.ctx, n->dataplane == FN_DP_SHM_BPF ? n->gw_pair[0] : fn->sock,
			 POLLOUT, RT_FN_IO_POLLOUT, fn->id);
	fn->polling_out = true;
}

void rt__watch_fn(struct rt_node *n, struct rt_fn *fn)
{
	/* Control records (and every descriptor in shm+unix) on the control channel; outputs
	 * on the TCP socket in shm+bpf and tcp. */
	if (fn->data >= 0 && !fn->reading_data)
		arm_fn_pollin(n, fn);
	if (fn->sock >= 0 && !fn->reading_ctl)
		arm_fn_recv(n, fn);
}

static void on_fn_recv(struct rt_node *n, uint32_t id, int res)
{
	struct rt_fn *fn = rt_fnset_find(n->fns, id);

	if (!fn)
		return;
	fn->reading_ctl = false;
	if (res <= 0) {
		/* End of stream: the function exited (or closed its end); all it sent is read. */
		if (res < 0)
			trib_debug("fn %u: channel: %s", id, strerror(-res));
		rt_node_on_fn_eof(n, fn, false);
		return;
	}
	if (res % SHM_DESC_SIZE) {
		trib_error("fn %u: a message of %d bytes is not whole descriptors; dropped", id,
			   res);
	} else {
		for (int off = 0; off < res; off += SHM_DESC_SIZE) {
			struct shm_desc d;

			memcpy(&d, fn->cbuf + off, sizeof(d));
			rt_node_on_fn_record(n, fn, &d, NULL);
			fn = rt_fnset_find(n->fns, id);
			if (!fn)
				return;
		}
	}
	fn = rt_fnset_find(n->fns, id);
	if (fn && fn->sock >= 0)
		arm_fn_recv(n, fn);
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

/* Whole records in fn->rbuf, each (in tcp) followed by its payload. False: @fn is gone. */
static bool take_records(struct rt_node *n, struct rt_fn *fn)
{
	uint32_t id = fn->id;

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
				return false;
			}
		}
		rt_node_on_fn_record(n, fn, &d, payload);
		fn = rt_fnset_find(n->fns, id);
		if (!fn)
			return false;
	}
	return true;
}

/*
 * shm+bpf and tcp: the function's TCP socket is readable. It is a byte
 * stream: whole 64-byte records are cut from it, and in tcp each record is
 * followed by its payload.
 */
static void on_fn_pollin(struct rt_node *n, uint32_t id)
{
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
		if (!take_records(n, fn))
			return;
		fn = rt_fnset_find(n->fns, id);
	}
	arm_fn_pollin(n, fn);
}

/* shm+bpf: records sk_msg could not route (destination not in the map) come back here. */
static void drain_bounced(struct rt_node *n)
{
	uint8_t buf[64 * SHM_DESC_SIZE];
	ssize_t r;

	if (n->gw_pair[1] < 0)
		return;
	while ((r = recv(n->gw_pair[1], buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
		for (ssize_t i = 0; i < r; i++) {
			n->bounced[n->nbounced++] = buf[i];
			if (n->nbounced == SHM_DESC_SIZE) {
				struct shm_desc d;

				memcpy(&d, n->bounced, sizeof(d));
				n->nbounced = 0;
				trib_error(
				    "job %u round %u: descriptor for fn %u bounced: not in the "
				    "router's map",
				    d.job, d.round, d.dst);
			}
		}
	}
}

static void flush_fn(struct rt_fn *fn, void *arg)
{
	struct rt_node *n = arg;
	int err;

	if (!rt_fn_has_queue(fn) || fn->polling_out || fn->sock < 0)
		return;
	err = rt_fn_flush(fn);
	if (err == -EAGAIN)
		arm_fn_pollout(n, fn);
	else if (err)
		trib_error("fn %u: sending queued descriptors: %s", fn->id, strerror(-err));
}

static void on_fn_pollout(struct rt_node *n, uint32_t id)
{
	struct rt_fn *fn = rt_fnset_find(n->fns, id);

	if (!fn)
		return;
	fn->polling_out = false;
	flush_fn(fn, n);
}

void rt_node_fn_io(struct rt_node *n, enum rt_fn_io op, uint32_t id, int res)
{
	switch (op) {
	case RT_FN_IO_RECV:
		on_fn_recv(n, id, res);
		break;
	case RT_FN_IO_POLLIN:
		on_fn_pollin(n, id);
		break;
	case RT_FN_IO_POLLOUT:
		on_fn_pollout(n, id);
		break;
	default:
		break;
	}
}

void rt_node_handoff_hold(struct rt_node *n, bool hold)
{
	n->handoff_hold = hold;
}

bool rt_node_handoff_pending(const struct rt_node *n)
{
	return n->nhandoff > 0;
}

void rt__handoff_note(struct rt_node *n, uint32_t fn_id)
{
	for (uint32_t i = 0; i < n->nhandoff && i < RT_HANDOFF_NOTED; i++)
		if (n->handoff_fns[i] == fn_id)
			return;
	if (n->nhandoff < RT_HANDOFF_NOTED)
		n->handoff_fns[n->nhandoff] = fn_id;
	if (n->nhandoff <= RT_HANDOFF_NOTED)
		n->nhandoff++;
}

void rt_node_handoff_flush(struct rt_node *n)
{
	if (n->nhandoff > RT_HANDOFF_NOTED) {
		rt_fnset_foreach(n->fns, flush_fn, n);
	} else {
		for (uint32_t i = 0; i < n->nhandoff; i++) {
			struct rt_fn *fn = rt_fnset_find(n->fns, n->handoff_fns[i]);

			if (fn) /* gone since: its replacement is sent every update again */
				flush_fn(fn, n);
		}
	}
	n->nhandoff = 0;
}

void rt__fn_io_tick(struct rt_node *n)
{
	rt_fnset_foreach(n->fns, flush_fn, n);
	drain_bounced(n);
}
