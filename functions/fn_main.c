// SPDX-License-Identifier: MIT
/* tributary-fn: an aggregation function spawned by the node runtime; the loop around a pipeline. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ebpf_abi.h"
#include "ebpf_stats.h"
#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_sched.h"
#include "shm_arena.h"
#include "shm_chan.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/*
 * A function's life: receive a config (the first with the arena fd) and its
 * PARAMS, compose the job's pipeline (fn_algo.h), say READY, fold the expected
 * inputs, hand the output on, say DONE, and wait warm for the next config (any
 * job, round or level) until EXIT. Inputs are folded in a fixed order (updates
 * in the order the gateway accepted them, partials in child order) so that the
 * same updates give the same bits in every data plane. Slots are never freed
 * here: the runtime owns them.
 *
 * This file is the loop: channels, descriptors, the arena, the lifecycle. What
 * is computed is the pipeline's business; nothing here looks at the algorithm
 * or its parameters.
 *
 * Where descriptors come from depends on the data plane: the control channel
 * (shm+unix), or the function's TCP socket, where sk_msg delivers them
 * (shm+bpf) or where they arrive followed by the update's bytes (tcp).
 */
struct fn_state {
	struct shm_arena *arena;
	struct fn_config cfg;
	struct fn_params par;      /* the config's PARAMS */
	bool configured;
	struct fn_pipeline pipe;   /* composed from cfg and par */
	struct fn_algo_ctx ctx;    /* what the pipeline sees: cfg, par, the arena, the accumulator */
	void *pipe_state;          /* the stages' state (fn_pipeline_state_size() bytes) */
	float *acc_heap;   /* tcp: the accumulator lives in private memory */
	uint32_t folded;   /* inputs folded so far */
	double total_w;    /* sum of the inputs' shares of the divisor */
	uint32_t total_n;  /* client updates inside the output */
	/* top: partials that came before their turn, by child index */
	struct shm_desc *pending;
	bool *has_pending;
	float **pending_payload; /* tcp: their bytes */
	uint32_t pending_cap;    /* entries in the three arrays above */
	/* the TCP socket's byte stream: whole records are cut from it */
	uint8_t sbuf[64 * SHM_DESC_SIZE] __attribute__((aligned(64)));
	size_t slen;
	/* the control channel's current message */
	uint8_t recs[SHM_CHAN_BATCH * SHM_DESC_SIZE] __attribute__((aligned(64)));
	struct ebpf_fn_stats *stats; /* shm+bpf: the mmapped counters */
	size_t stats_len;
	char logname[32];
};

/* A tcp input: its bytes follow the descriptor, flat f32, in private memory (@payload). */
static void input_from_payload(const struct fn_state *st, const struct shm_desc *d,
			       const float *payload, struct shm_seg *flat, struct fn_input *in)
{
	memset(flat, 0, sizeof(*flat));
	flat->n_elem = st->cfg.n_elem;
	flat->dtype = SHM_DTYPE_F32;
	flat->scale = 1.0f;
	in->kind = d->kind;
	in->base = (const uint8_t *)payload;
	in->segs = flat;
	in->nsegs = 1;
	in->weight = d->weight;
	in->share = d->weight;
	in->desc = d;
}

/* Fold one input: from the arena (@payload NULL), or from private bytes (tcp). */
static int fold_desc(struct fn_state *st, const struct shm_desc *d, const float *payload)
{
	struct shm_seg flat;
	struct fn_input in;
	int err = 0;

	if (payload)
		input_from_payload(st, d, payload, &flat, &in);
	else
		err = fn_input_from_desc(&st->ctx, d, &in);
	if (!err)
		err = fn_pipeline_fold(&st->pipe, &st->ctx, &in);
	if (err) {
		trib_error("job %u round %u: bad %s descriptor from %u (slot %llu): %s", d->job,
			   d->round, d->kind == SHM_DESC_UPDATE ? "update" : "partial", d->src,
			   (unsigned long long)d->slot_off, strerror(-err));
		return err;
	}
	st->folded++;
	st->total_w += in.share;
	st->total_n += d->count;
	return 0;
}

/* A control record to the runtime. */
static int send_ctl(const struct fn_state *st, uint16_t kind, uint32_t value)
{
	struct fn_ctl c;

	memset(&c, 0, sizeof(c));
	c.version = FN_ABI_VERSION;
	c.kind = kind;
	c.fn_id = st->cfg.fn_id;
	c.job = st->cfg.job;
	c.round = st->cfg.round;
	c.value = value;
	if (kind == FN_MSG_READY)
		c.at_ns = trib_now_ns();
	return shm_chan_send(FN_CHANNEL_FD, &c, 1, -1);
}

/* Forget the config: back to warm, ready for the next one. */
static void state_reset(struct fn_state *st)
{
	fn_pipeline_fini(&st->pipe);
	trib_free(st->pipe_state);
	st->pipe_state = NULL;
	if (st->pending_payload)
		for (uint32_t i = 0; i < st->pending_cap; i++)
			trib_free(st->pending_payload[i]);
	trib_free(st->pending_payload);
	trib_free(st->pending);
	trib_free(st->has_pending);
	st->pending_payload = NULL;
	st->pending = NULL;
	st->has_pending = NULL;
	st->pending_cap = 0;
	st->ctx.acc = NULL;
	st->folded = 0;
	st->total_w = 0;
	st->total_n = 0;
	st->configured = false;
	memset(&st->par, 0, sizeof(st->par));
}

static int send_all(int fd, const struct iovec *iov_in, int n)
{
	struct iovec iov[2];
	struct msghdr mh;

	memcpy(iov, iov_in, sizeof(*iov) * (size_t)n);
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = (size_t)n;
	while (mh.msg_iovlen) {
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (mh.msg_iovlen && (size_t)w >= mh.msg_iov->iov_len) {
			w -= (ssize_t)mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + w;
			mh.msg_iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Hand the accumulator on: a partial to the parent, or the model to the runtime. */
static int hand_off(struct fn_state *st)
{
	bool tcp = st->cfg.dataplane == FN_DP_TCP;
	struct shm_desc d;
	int err;

	/* Only the round's top turns the sum into the model; elsewhere this does nothing. */
	err = fn_pipeline_finish(&st->pipe, &st->ctx, st->total_w);
	if (err) {
		trib_error("job %u round %u: finishing: %s", st->cfg.job, st->cfg.round,
			   strerror(-err));
		return err;
	}
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = st->cfg.role == FN_ROLE_TOP ? SHM_DESC_RESULT : SHM_DESC_PARTIAL;
	d.dst = st->cfg.parent;
	d.src = st->cfg.fn_id;
	d.job = st->cfg.job;
	d.round = st->cfg.round;
	d.nsegs = 1;
	d.weight = st->total_w;
	d.count = st->total_n;
	d.seq = st->cfg.index; /* the parent folds its children in this order */
	if (!tcp) {
		struct shm_seg *seg = (struct shm_seg *)(void *)(st->ctx.base + st->cfg.acc_off);

		memset(seg, 0, sizeof(*seg));
		seg->src_off = st->cfg.acc_data_off;
		seg->n_elem = st->cfg.n_elem;
		seg->dtype = SHM_DTYPE_F32;
		seg->scale = 1.0f;
		d.slot_off = st->cfg.acc_off;
		d.segs_off = st->cfg.acc_off;
	}
	if (st->cfg.dataplane == FN_DP_SHM_UNIX) {
		err = shm_chan_send(FN_CHANNEL_FD, &d, 1, -1);
	} else {
		/* shm+bpf: sk_msg redirects a partial straight into the parent's socket. */
		struct iovec iov[2] = {
			{ .iov_base = &d, .iov_len = sizeof(d) },
			{ .iov_base = st->ctx.acc, .iov_len = st->cfg.n_elem * sizeof(float) },
		};

		err = send_all(FN_DATA_FD, iov, tcp ? 2 : 1);
	}
	if (err) {
		trib_error("job %u round %u: handing off to %u: %s", st->cfg.job, st->cfg.round,
			   st->cfg.parent, strerror(-err));
		return err;
	}
	trib_debug("job %u round %u: handed %u updates (weight %g) to %u", st->cfg.job,
		   st->cfg.round, st->total_n, st->total_w, st->cfg.parent);
	/* Tell the runtime what now exists: it frees the inputs' slots and may reuse us. */
	d.kind = FN_MSG_DONE;
	/* Idle from here: FIFO before the DONE, so a CONFIG sent at once finds us so. */
	(void)fn_sched_idle(true);
	err = shm_chan_send(FN_CHANNEL_FD, &d, 1, -1);
	state_reset(st);
	return err;
}

/* Top: room for children up to index @n - 1 (the autoscaler may add leaves). */
static int pending_grow(struct fn_state *st, uint32_t n)
{
	uint32_t old = st->pending_cap;
	struct shm_desc *p;
	bool *h;
	float **pp;

	if (n <= old)
		return 0;
	if (n < old * 2)
		n = old * 2;
	p = trib_realloc(st->pending, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	st->pending = p;
	h = trib_realloc(st->has_pending, n * sizeof(*h));
	if (!h)
		return -ENOMEM;
	st->has_pending = h;
	pp = trib_realloc(st->pending_payload, n * sizeof(*pp));
	if (!pp)
		return -ENOMEM;
	st->pending_payload = pp;
	for (uint32_t i = old; i < n; i++) {
		h[i] = false;
		pp[i] = NULL;
	}
	st->pending_cap = n;
	return 0;
}

/* Whether @cfg can be served by this function now; the arena checks come later. */
static bool config_ok(const struct fn_state *st, const struct fn_config *cfg)
{
	return cfg->version == FN_ABI_VERSION && cfg->expected != 0 &&
	       (cfg->role == FN_ROLE_LEAF || cfg->role == FN_ROLE_TOP ||
		cfg->role == FN_ROLE_MID || cfg->role == FN_ROLE_SHARD) &&
	       !st->configured && cfg->dataplane >= FN_DP_SHM_UNIX &&
	       cfg->dataplane <= FN_DP_TCP && (!st->cfg.fn_id || cfg->fn_id == st->cfg.fn_id);
}

/* The first config maps the arena from @arena_fd; later ones may not carry it. Owns @arena_fd. */
static int arena_attach(struct fn_state *st, int arena_fd)
{
	int err;

	if (st->arena) {
		if (arena_fd >= 0)
			close(arena_fd);
		return 0;
	}
	if (arena_fd < 0)
		return -EBADF;
	err = shm_arena_attach(arena_fd, &st->arena);
	if (err)
		return err;
	st->ctx.base = shm_arena_base(st->arena);
	st->ctx.size = shm_arena_size(st->arena);
	return 0;
}

/* The accumulator: in the arena slot the runtime gave, or (tcp) in private memory, zeroed. */
static int acc_setup(struct fn_state *st)
{
	const struct fn_config *cfg = &st->cfg;

	if (cfg->dataplane == FN_DP_TCP) {
		trib_free(st->acc_heap);
		st->acc_heap = trib_calloc(cfg->n_elem ? cfg->n_elem : 1, sizeof(float));
		if (!st->acc_heap)
			return -ENOMEM;
		st->ctx.acc = st->acc_heap;
		return 0;
	}
	st->ctx.acc = (float *)(void *)(st->ctx.base + cfg->acc_data_off);
	/* Shards share one output and write only their own range. */
	if (cfg->role != FN_ROLE_SHARD)
		memset(st->ctx.acc, 0, cfg->n_elem * sizeof(float));
	return 0;
}

/* The stages' state, allocated here (their sizes are in the ops), then their init hooks. */
static int pipeline_start(struct fn_state *st)
{
	size_t sz = fn_pipeline_state_size(&st->pipe);

	if (sz) {
		st->pipe_state = trib_calloc(1, sz);
		if (!st->pipe_state)
			return -ENOMEM;
	}
	return fn_pipeline_init(&st->pipe, st->pipe_state, &st->ctx);
}

/*
 * Take @cfg and its @par (borrowed): map the arena (owns @arena_fd), compose
 * and start the pipeline, say READY. 0 or -errno; on error the function exits.
 */
static int configure(struct fn_state *st, const struct fn_config *cfg,
		     const struct fn_params *par, int arena_fd)
{
	const char *why = NULL;
	int err;

	if (!config_ok(st, cfg)) {
		if (arena_fd >= 0)
			close(arena_fd);
		return -EINVAL;
	}
	err = arena_attach(st, arena_fd);
	if (err)
		return err;
	if (cfg->dataplane != FN_DP_TCP &&
	    (!fn_ctx_range_ok(&st->ctx, cfg->acc_data_off, cfg->n_elem * 4) ||
	     cfg->acc_data_off % 64 || cfg->acc_data_off < cfg->acc_off + sizeof(struct shm_seg)))
		return -EINVAL;
	if (par->fn_id != cfg->fn_id)
		return -EPROTO;
	err = fn_pipeline_compose(&st->pipe, cfg, par, &why);
	if (err) {
		trib_error("job %u round %u: algorithm %u: %s", cfg->job, cfg->round,
			   cfg->algorithm, why);
		return err;
	}
	st->cfg = *cfg;
	st->par = *par;
	snprintf(st->logname, sizeof(st->logname), "fn %u", cfg->fn_id);
	trib_log_init(st->logname);
	err = acc_setup(st);
	if (err)
		return err;
	if (cfg->dataplane == FN_DP_SHM_BPF && !st->stats) {
		err = ebpf_stats_map(FN_STATS_FD, &st->stats, &st->stats_len);
		if (err)
			trib_warn("mapping the BPF counters: %s; queue depth will not be reported",
				  strerror(-err));
	}
	err = pipeline_start(st);
	if (!err && (cfg->role == FN_ROLE_TOP || cfg->role == FN_ROLE_MID))
		err = pending_grow(st, cfg->expected);
	if (err)
		return err;
	st->configured = true;
	trib_debug("job %u round %u: %s, %u stages, expecting %u inputs of %llu elements",
		   cfg->job, cfg->round, cfg->role == FN_ROLE_TOP ? "top" :
		   cfg->role == FN_ROLE_MID ? "mid" : cfg->role == FN_ROLE_SHARD ? "shard" : "leaf",
		   st->pipe.n, cfg->expected, (unsigned long long)cfg->n_elem);
	err = send_ctl(st, FN_MSG_READY, 0);
	/* The real-time class is for the wake-up only: folding runs in the normal one. */
	return err ? err : fn_sched_idle(false);
}

/* Hand off once every expected input is folded and that count is final; 0 or -errno. */
static int maybe_hand_off(struct fn_state *st)
{
	if (st->configured && (st->cfg.flags & FN_CFG_FINAL) && st->folded >= st->cfg.expected)
		return hand_off(st);
	return 0;
}

/*
 * FLUSH: the round closed with fewer inputs than planned (a deadline) or a
 * level's size is now known. Only the top's pending arrays depend on the
 * count, and they only shrink.
 */
static int on_flush(struct fn_state *st, const struct fn_ctl *c)
{
	if (!st->configured || c->job != st->cfg.job || c->round != st->cfg.round)
		return 0; /* for a config we are done with */
	if (c->value == 0 || c->value < st->folded)
		return -EPROTO;
	st->cfg.expected = c->value;
	st->cfg.flags |= FN_CFG_FINAL;
	if (st->cfg.role != FN_ROLE_LEAF) {
		int err = pending_grow(st, c->value);

		if (err)
			return err;
		/* Fold what waits in child order, now that the count is known. */
		while (st->folded < st->cfg.expected && st->folded < st->pending_cap &&
		       st->has_pending[st->folded]) {
			uint32_t i = st->folded;
			int err = fold_desc(st, &st->pending[i], st->pending_payload[i]);

			trib_free(st->pending_payload[i]);
			st->pending_payload[i] = NULL;
			if (err)
				return err;
		}
	}
	return maybe_hand_off(st);
}

/*
 * Handle one descriptor; @payload (tcp only) is its bytes, owned by the
 * caller unless *kept is set (a partial held until its turn).
 * Returns 0 or -errno.
 */
static int on_desc(struct fn_state *st, const struct shm_desc *d, float *payload, bool *kept)
{
	int err;

	*kept = false;
	if (d->version != SHM_ABI_VERSION)
		return -EPROTO;
	if (!st->configured || d->job != st->cfg.job || d->round != st->cfg.round) {
		/* A duplicate from a replaced child, for a round we already handed off. */
		trib_debug("ignoring a descriptor for job %u round %u from %u", d->job, d->round,
			   d->src);
		return 0;
	}
	if (st->cfg.role == FN_ROLE_LEAF) {
		if (d->kind != SHM_DESC_UPDATE)
			return -EPROTO;
		err = fold_desc(st, d, payload);
	} else {
		uint32_t child = d->seq;

		if (d->kind != SHM_DESC_PARTIAL || child >= (1u << 24) ||
		    ((st->cfg.flags & FN_CFG_FINAL) && child >= st->cfg.expected))
			return -EPROTO;
		err = pending_grow(st, child + 1);
		if (err)
			return err;
		if (child < st->folded || st->has_pending[child]) {
			/* A replaced child's output came twice: fold it once. */
			trib_debug("job %u round %u: duplicate partial for child %u", d->job,
				   d->round, child);
			return 0;
		}
		st->pending[child] = *d;
		st->has_pending[child] = true;
		st->pending_payload[child] = payload;
		*kept = payload != NULL;
		err = 0;
		/* Fold in child order, whatever order the partials arrive in. */
		while (!err && st->folded < st->pending_cap && st->has_pending[st->folded]) {
			uint32_t c = st->folded;

			err = fold_desc(st, &st->pending[c], st->pending_payload[c]);
			trib_free(st->pending_payload[c]);
			st->pending_payload[c] = NULL;
		}
	}
	if (err)
		return err;
	return maybe_hand_off(st);
}

/* tcp: read the @len payload bytes that follow a descriptor; some may already be in sbuf. */
static int read_payload(struct fn_state *st, size_t *pos, float **out)
{
	size_t len = st->cfg.n_elem * sizeof(float);
	uint8_t *p = trib_malloc(len ? len : 1);
	size_t have = st->slen - *pos;

	if (!p)
		return -ENOMEM;
	if (have > len)
		have = len;
	memcpy(p, st->sbuf + *pos, have);
	*pos += have;
	while (have < len) {
		ssize_t r = recv(FN_DATA_FD, p + have, len - have, MSG_WAITALL);

		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			trib_free(p);
			return r == 0 ? -ECONNRESET : -errno;
		}
		have += (size_t)r;
	}
	*out = (float *)(void *)p;
	return 0;
}

/* Records off the TCP socket: 0 to go on, -errno. */
static int on_data(struct fn_state *st)
{
	ssize_t r = recv(FN_DATA_FD, st->sbuf + st->slen, sizeof(st->sbuf) - st->slen, 0);
	size_t pos = 0;
	uint64_t taken = 0;
	int ret = 0;

	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (r == 0)
		return -ECONNRESET;
	st->slen += (size_t)r;
	while (st->slen - pos >= SHM_DESC_SIZE) {
		struct shm_desc d;
		float *payload = NULL;
		bool kept = false;

		memcpy(&d, st->sbuf + pos, sizeof(d));
		pos += SHM_DESC_SIZE;
		taken++;
		if (st->cfg.dataplane == FN_DP_TCP) {
			ret = read_payload(st, &pos, &payload);
			if (ret)
				break;
		}
		ret = on_desc(st, &d, payload, &kept);
		if (!kept)
			trib_free(payload);
		if (ret)
			break;
	}
	memmove(st->sbuf, st->sbuf + pos, st->slen - pos);
	st->slen -= pos;
	if (st->stats && taken)
		__atomic_fetch_add(&st->stats[st->cfg.fn_id & EBPF_FN_MASK].taken, taken,
				   __ATOMIC_RELAXED);
	return ret;
}

/* A shard's work is done (or failed: then the runtime sees us exit and starts another). */
static int shard_done(struct fn_state *st, int err)
{
	struct shm_desc d;

	if (err) {
		trib_error("job %u round %u: shard %u: %s", st->cfg.job, st->cfg.round,
			   st->cfg.index, strerror(-err));
		return err;
	}
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = FN_MSG_DONE;
	d.src = st->cfg.fn_id;
	d.job = st->cfg.job;
	d.round = st->cfg.round;
	d.seq = st->cfg.index;
	(void)fn_sched_idle(true);
	err = shm_chan_send(FN_CHANNEL_FD, &d, 1, -1);
	state_reset(st);
	return err;
}

/*
 * A CONFIG and its PARAMS, records @r and @r + 1 of one message (the runtime
 * sends them together, so no input comes between: rt_fnproc.c send_config).
 * A shard works at once and is done. Owns @fd. 0 or -errno.
 */
static int on_config(struct fn_state *st, const uint8_t *r, size_t left, int fd)
{
	struct fn_config cfg;
	struct fn_params par;
	uint16_t kind = 0;
	int err;

	if (left >= 2)
		memcpy(&kind, r + SHM_DESC_SIZE + 2, sizeof(kind));
	if (kind != FN_MSG_PARAMS) {
		if (fd >= 0)
			close(fd);
		return -EPROTO;
	}
	memcpy(&cfg, r, sizeof(cfg));
	memcpy(&par, r + SHM_DESC_SIZE, sizeof(par));
	err = configure(st, &cfg, &par, fd);
	if (!err && st->cfg.role == FN_ROLE_SHARD)
		err = shard_done(st, fn_pipeline_shard(&st->pipe, &st->ctx));
	return err;
}

/* Records off the control channel: returns 1 on EXIT, 0 to go on, -errno. */
static int on_control(struct fn_state *st)
{
	size_t n;
	int fd = -1;
	int err = shm_chan_recv(FN_CHANNEL_FD, st->recs, SHM_CHAN_BATCH, &n, &fd);

	if (err)
		return err == -EINTR ? 0 : err;
	for (size_t i = 0; i < n && !err; i++) {
		const uint8_t *r = st->recs + i * SHM_DESC_SIZE;
		uint16_t kind;

		memcpy(&kind, r + 2, sizeof(kind));
		if (kind == FN_MSG_CONFIG) {
			err = on_config(st, r, n - i, fd);
			fd = -1;
			i++; /* its PARAMS */
		} else if (kind == FN_MSG_ATTACH) {
			/* Pre-started: the arena now, so that the first CONFIG finds it mapped. */
			err = st->arena ? -EPROTO : arena_attach(st, fd);
			if (err == -EPROTO && fd >= 0)
				close(fd);
			fd = -1;
			if (!err)
				err = send_ctl(st, FN_MSG_READY, FN_READY_IDLE);
		} else if (kind == FN_MSG_EXIT) {
			err = 1;
		} else if (kind == FN_MSG_FLUSH) {
			struct fn_ctl c;

			memcpy(&c, r, sizeof(c));
			err = on_flush(st, &c);
		} else if (st->cfg.dataplane == FN_DP_SHM_UNIX && kind < 16) {
			struct shm_desc d;
			bool kept;

			memcpy(&d, r, sizeof(d));
			err = on_desc(st, &d, NULL, &kept);
		} else {
			/* Among them a PARAMS without its CONFIG. */
			err = -EPROTO;
		}
	}
	if (fd >= 0)
		close(fd);
	return err;
}

static void state_fini(struct fn_state *st)
{
	state_reset(st);
	trib_free(st->acc_heap);
	ebpf_stats_unmap(st->stats, st->stats_len);
	shm_arena_destroy(st->arena);
}

/* The runtime's end of the control channel is closed: it died (or closed us, the same). */
static bool runtime_gone(void)
{
	struct pollfd p = { .fd = FN_CHANNEL_FD, .events = POLLRDHUP };

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLNVAL));
}

int main(int argc, char **argv)
{
	struct fn_state st;
	int rc = 1;

	memset(&st, 0, sizeof(st));
	st.ctx.cfg = &st.cfg;
	st.ctx.par = &st.par;
	trib_log_init("fn");
	fn_sched_init(argc > 1 && !strcmp(argv[1], FN_ARG_IDLE_FIFO));
	/* The runtime owns our lifetime; a closed channel, not a signal, is the normal end. */
	signal(SIGPIPE, SIG_IGN);
	/*
	 * A killed runtime's functions must not outlive it: the next runtime
	 * recovers the arena file, which no old process may still write. If it
	 * died before the prctl, its end of our channel is closed already (not
	 * getppid() == 1: in a container the runtime may be pid 1 itself).
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || runtime_gone())
		return 1;
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = FN_CHANNEL_FD, .events = POLLIN },
			{ .fd = FN_DATA_FD, .events = POLLIN },
		};
		/* The data socket is read only once configured (the config comes first). */
		bool data = st.configured && st.cfg.dataplane != FN_DP_SHM_UNIX;
		/* Real-time while idle, for the wake-up of the next CONFIG (fn_sched.c). */
		int err = fn_sched_idle(!st.configured);

		if (err)
			break;
		if (poll(p, data ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			trib_error("poll: %s", strerror(errno));
			break;
		}
		if (p[0].revents)
			err = on_control(&st);
		if (!err && data && p[1].revents)
			err = on_data(&st);
		if (err == 1) {
			rc = 0;
			break;
		}
		if (err == -ECONNRESET) {
			/* The runtime closed our channel: retired while warm (0), or mid-work (1). */
			rc = st.configured ? 1 : 0;
			break;
		}
		if (err) {
			trib_error("job %u round %u: giving up: %s", st.cfg.job, st.cfg.round,
				   strerror(-err));
			break;
		}
	}
	state_fini(&st);
	return rc;
}
