// SPDX-License-Identifier: MIT
/* tributary-fn: one aggregation function, spawned by the node runtime, folding what its channels bring. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ebpf_abi.h"
#include "ebpf_stats.h"
#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_dequant.h"
#include "fn_dp.h"
#include "fn_opt.h"
#include "fn_robust.h"
#include "shm_arena.h"
#include "shm_chan.h"
#include "trib_alloc.h"
#include "trib_log.h"

/*
 * A function's life: receive a config (the first with the arena fd), say
 * READY, fold the expected inputs, hand the output on, say DONE, and wait
 * warm for the next config (any job, round or level) until EXIT. Inputs are
 * folded in a fixed order (updates in the order the gateway accepted them,
 * partials in child order) so that the same updates give the same bits in
 * every data plane. Slots are never freed here: the runtime owns them.
 *
 * Where descriptors come from depends on the data plane: the control channel
 * (shm+unix), or the function's TCP socket, where sk_msg delivers them
 * (shm+bpf) or where they arrive followed by the update's bytes (tcp).
 */
struct fn_state {
	struct shm_arena *arena;
	uint8_t *base;
	uint64_t arena_size;
	struct fn_config cfg;
	bool configured;
	struct fn_params par;      /* the job's algorithm (zero: plain weighted FedAvg) */
	const struct fn_algo_ops *ops;
	void *algo_state;
	float *acc;
	float *acc_heap;   /* tcp: the accumulator lives in private memory */
	uint32_t folded;   /* inputs folded so far */
	double total_w;    /* sum of the inputs' weights */
	uint32_t total_n;  /* client updates inside the output */
	/* top: partials that came before their turn, by child index */
	struct shm_desc *pending;
	bool *has_pending;
	float **pending_payload; /* tcp: their bytes */
	uint32_t pending_cap;    /* entries in the three arrays above */
	/* the TCP socket's byte stream: whole records are cut from it */
	uint8_t sbuf[64 * SHM_DESC_SIZE] __attribute__((aligned(64)));
	size_t slen;
	struct ebpf_fn_stats *stats; /* shm+bpf: the mmapped counters */
	size_t stats_len;
	char logname[32];
};

static bool range_ok(const struct fn_state *st, uint64_t off, uint64_t len)
{
	return off <= st->arena_size && len <= st->arena_size - off;
}

/* Resolve and bounds-check a descriptor's segments in the arena; 0 or -EINVAL. */
static int input_from_desc(const struct fn_state *st, const struct shm_desc *d,
			   struct fn_input *in)
{
	const struct shm_seg *segs;

	if (d->nsegs == 0 || d->nsegs > 1u << 16 ||
	    !range_ok(st, d->segs_off, (uint64_t)d->nsegs * sizeof(struct shm_seg)) ||
	    d->segs_off % _Alignof(struct shm_seg))
		return -EINVAL;
	segs = (const struct shm_seg *)(const void *)(st->base + d->segs_off);
	for (uint32_t i = 0; i < d->nsegs; i++) {
		const struct shm_seg *s = &segs[i];

		uint64_t es = s->dtype == SHM_DTYPE_F32 ? 4 :
			      s->dtype == SHM_DTYPE_F16 || s->dtype == SHM_DTYPE_BF16 ? 2 :
			      s->dtype == SHM_DTYPE_I8 ? 1 : 0;

		if (!es || s->src_off % es || s->dst_elem > st->cfg.n_elem ||
		    s->n_elem > st->cfg.n_elem - s->dst_elem ||
		    !range_ok(st, s->src_off, s->n_elem * es))
			return -EINVAL;
	}
	in->kind = d->kind;
	in->base = st->base;
	in->segs = segs;
	in->nsegs = d->nsegs;
	in->weight = d->weight;
	return 0;
}

/*
 * The weight an update is folded with: its sample count, or 1 (unweighted,
 * and always under DP), times its clipping scale min(1, C / ||u||) when the
 * job clips (one extra read of the update for its norm).
 */
static double update_weight(const struct fn_state *st, const struct fn_input *in)
{
	double w = (st->par.flags & FN_PAR_UNWEIGHTED) ? 1.0 : in->weight;

	if (st->par.flags & FN_PAR_CLIP) {
		double sumsq = 0;
		float scale = 1.0f;

		for (uint32_t i = 0; i < in->nsegs; i++) {
			const struct shm_seg *sg = &in->segs[i];
			const uint8_t *x = in->base + sg->src_off;

			if (sg->dtype == SHM_DTYPE_F32) {
				fn_robust_sumsq_partial((const float *)(const void *)x,
							(size_t)sg->n_elem, &sumsq);
				continue;
			}
			/* Compressed: the norm of what the fold will add, decoded in blocks. */
			for (uint64_t k = 0; k < sg->n_elem; k += 1024) {
				float blk[1024];
				size_t m = sg->n_elem - k < 1024 ? (size_t)(sg->n_elem - k) : 1024;

				memset(blk, 0, m * sizeof(float));
				fn_dequant_fold(blk, x + k * (sg->dtype == SHM_DTYPE_I8 ? 1 : 2),
						sg->dtype, sg->scale, 1.0f, m);
				fn_robust_sumsq_partial(blk, m, &sumsq);
			}
		}
		if (!fn_robust_clip_scale(sumsq, st->par.clip_norm, &scale))
			w *= scale;
	}
	return w;
}

/*
 * The top's server step, after the mean: the previous model moves by the
 * round's delta (mean - previous for weights, the mean itself for deltas)
 * through the job's optimiser; its state is read from the first half of
 * the state slot and written to the second (the runtime keeps it only once
 * the model is written). @acc holds the mean and receives the model.
 */
static int server_step(struct fn_state *st)
{
	const struct fn_params *p = &st->par;
	size_t n = (size_t)st->cfg.n_elem;
	const float *prev;
	struct fn_opt_params op;
	struct fn_opt_state os;
	uint64_t me, ve;
	float *model = NULL, *m = NULL, *v = NULL;
	int err;

	if (!p->model_off)
		return 0;
	if (!range_ok(st, p->model_off, n * 4))
		return -EINVAL;
	prev = (const float *)(const void *)(st->base + p->model_off);
	memset(&op, 0, sizeof(op));
	op.kind = p->server;
	op.server_lr = p->server_lr;
	op.momentum = p->momentum;
	op.beta1 = p->beta1;
	op.beta2 = p->beta2;
	op.tau = p->tau;
	fn_opt_state_elems(op.kind, n, &me, &ve);
	model = trib_malloc(n ? n * sizeof(float) : 1);
	m = me ? trib_malloc(me * sizeof(float)) : NULL;
	v = ve ? trib_malloc(ve * sizeof(float)) : NULL;
	err = -ENOMEM;
	if (!model || (me && !m) || (ve && !v))
		goto out;
	err = fn_opt_state_init(&os, &op, n, m, v);
	if (err)
		goto out;
	if (p->state_off) {
		size_t sz = fn_opt_state_size(&os);

		err = -EINVAL;
		if (!range_ok(st, p->state_off, 2 * sz))
			goto out;
		err = fn_opt_state_load(&os, st->base + p->state_off, sz);
		if (err)
			goto out;
	}
	/* The delta, in place: the mean is either the delta or the new weights. */
	if (!(p->flags & FN_PAR_DELTA))
		for (size_t i = 0; i < n; i++)
			st->acc[i] -= prev[i];
	memcpy(model, prev, n * sizeof(float));
	err = fn_opt_step(&op, &os, model, st->acc, n);
	if (err)
		goto out;
	memcpy(st->acc, model, n * sizeof(float));
	if (p->state_off)
		err = fn_opt_state_save(&os, st->base + p->state_off + fn_opt_state_size(&os),
					fn_opt_state_size(&os));
out:
	trib_free(model);
	trib_free(m);
	trib_free(v);
	return err;
}

/* Central DP at the top: Gaussian noise z*C on the sum of clipped updates, before the mean. */
static int dp_noise(struct fn_state *st)
{
	struct fn_dp_noise nz;
	uint8_t key[32];
	int err;

	if (!(st->par.flags & FN_PAR_DP))
		return 0;
	if (st->par.flags & FN_PAR_SEEDED)
		fn_dp_key_from_seed(st->par.seed, key);
	else if ((err = fn_dp_key_from_os(key)))
		return err;
	err = fn_dp_noise_init(&nz, key, st->cfg.round,
			       (double)st->par.dp_noise_multiplier * st->par.clip_norm);
	if (!err)
		err = fn_dp_noise_add(&nz, st->acc, 0, (size_t)st->cfg.n_elem);
	memset(key, 0, sizeof(key));
	return err;
}

/* Fold one input: from the arena (@payload NULL), or from private bytes (tcp). */
static int fold_desc(struct fn_state *st, const struct shm_desc *d, const float *payload)
{
	struct shm_seg flat;
	struct fn_input in;
	double acct;
	int err = 0;

	if (payload) {
		memset(&flat, 0, sizeof(flat));
		flat.n_elem = st->cfg.n_elem;
		flat.dtype = SHM_DTYPE_F32;
		flat.scale = 1.0f;
		in.kind = d->kind;
		in.base = (const uint8_t *)payload;
		in.segs = &flat;
		in.nsegs = 1;
		in.weight = d->weight;
	} else {
		err = input_from_desc(st, d, &in);
	}
	/* Clipping scales the update, not its share of the mean: the sum of weights stays. */
	acct = d->kind == SHM_DESC_UPDATE && (st->par.flags & FN_PAR_UNWEIGHTED) ? 1.0 : d->weight;
	if (!err && d->kind == SHM_DESC_UPDATE) {
		in.weight = update_weight(st, &in);
		if (d->fold_scale > 0)
			in.weight *= d->fold_scale; /* FedBuff: 1/sqrt(1 + staleness) */
	}
	if (!err)
		err = st->ops->fold(st->algo_state, st->acc, &in);
	if (err) {
		trib_error("job %u round %u: bad %s descriptor from %u (slot %llu): %s", d->job,
			   d->round, d->kind == SHM_DESC_UPDATE ? "update" : "partial", d->src,
			   (unsigned long long)d->slot_off, strerror(-err));
		return err;
	}
	st->folded++;
	st->total_w += acct;
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
	return shm_chan_send(FN_CHANNEL_FD, &c, 1, -1);
}

/* Forget the config: back to warm, ready for the next one. */
static void state_reset(struct fn_state *st)
{
	if (st->ops && st->ops->fini)
		st->ops->fini(st->algo_state);
	trib_free(st->algo_state);
	st->algo_state = NULL;
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
	st->ops = NULL;
	st->acc = NULL;
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

	if (st->cfg.role == FN_ROLE_TOP && !(st->cfg.flags & FN_CFG_SUM)) {
		/* Only the top turns the sum into the model; a mid hands its sum up as is. */
		err = dp_noise(st);
		if (!err)
			err = st->ops->finish(st->algo_state, st->acc, st->cfg.n_elem, st->total_w);
		if (!err)
			err = server_step(st);
		if (err) {
			trib_error("job %u round %u: finishing: %s", st->cfg.job, st->cfg.round,
				   strerror(-err));
			return err;
		}
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
		struct shm_seg *seg = (struct shm_seg *)(void *)(st->base + st->cfg.acc_off);

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
			{ .iov_base = st->acc, .iov_len = st->cfg.n_elem * sizeof(float) },
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

/* Takes ownership of @arena_fd. */
static int configure(struct fn_state *st, const struct fn_config *cfg, int arena_fd)
{
	bool tcp = cfg->dataplane == FN_DP_TCP;
	int err;

	if (cfg->version != FN_ABI_VERSION || cfg->expected == 0 ||
	    (cfg->role != FN_ROLE_LEAF && cfg->role != FN_ROLE_TOP && cfg->role != FN_ROLE_MID &&
	     cfg->role != FN_ROLE_SHARD) ||
	    st->configured ||
	    cfg->dataplane < FN_DP_SHM_UNIX || cfg->dataplane > FN_DP_TCP ||
	    (st->cfg.fn_id && cfg->fn_id != st->cfg.fn_id)) {
		if (arena_fd >= 0)
			close(arena_fd);
		return -EINVAL;
	}
	if (!st->arena) {
		if (arena_fd < 0)
			return -EBADF;
		err = shm_arena_attach(arena_fd, &st->arena);
		if (err)
			return err;
		st->base = shm_arena_base(st->arena);
		st->arena_size = shm_arena_size(st->arena);
	} else if (arena_fd >= 0) {
		close(arena_fd);
	}
	if (!tcp && (!range_ok(st, cfg->acc_data_off, cfg->n_elem * 4) || cfg->acc_data_off % 64 ||
		     cfg->acc_data_off < cfg->acc_off + sizeof(struct shm_seg)))
		return -EINVAL;
	st->ops = fn_algo_find(cfg->algorithm);
	if (!st->ops)
		return -EPROTONOSUPPORT;
	st->cfg = *cfg;
	snprintf(st->logname, sizeof(st->logname), "fn %u", cfg->fn_id);
	trib_log_init(st->logname);
	if (tcp) {
		trib_free(st->acc_heap);
		st->acc_heap = trib_calloc(cfg->n_elem ? cfg->n_elem : 1, sizeof(float));
		if (!st->acc_heap)
			return -ENOMEM;
		st->acc = st->acc_heap;
	} else {
		st->acc = (float *)(void *)(st->base + cfg->acc_data_off);
		/* Shards share one output and write only their own range. */
		if (cfg->role != FN_ROLE_SHARD)
			memset(st->acc, 0, cfg->n_elem * sizeof(float));
	}
	if (cfg->dataplane == FN_DP_SHM_BPF && !st->stats) {
		err = ebpf_stats_map(FN_STATS_FD, &st->stats, &st->stats_len);
		if (err)
			trib_warn("mapping the BPF counters: %s; queue depth will not be reported",
				  strerror(-err));
	}
	if (st->ops->state_size) {
		st->algo_state = trib_calloc(1, st->ops->state_size);
		if (!st->algo_state)
			return -ENOMEM;
	}
	err = st->ops->init(st->algo_state, st->acc, cfg->n_elem);
	if (err)
		return err;
	if (cfg->role == FN_ROLE_TOP || cfg->role == FN_ROLE_MID) {
		err = pending_grow(st, cfg->expected);
		if (err)
			return err;
	}
	st->configured = true;
	trib_debug("job %u round %u: %s, expecting %u inputs of %llu elements", cfg->job,
		   cfg->round, cfg->role == FN_ROLE_TOP ? "top" : cfg->role == FN_ROLE_MID ? "mid" :
		   "leaf", cfg->expected,
		   (unsigned long long)cfg->n_elem);
	return send_ctl(st, FN_MSG_READY, 0);
}

/*
 * Coordinates [lo, hi) of every update of a robust round, as f32 rows, in
 * blocks that never cross a schema tensor (updates' segments all break at
 * the same coordinates). F32 rows point into the updates where they landed;
 * compressed ones are decoded into @scratch (k x blk floats).
 */
static int shard_rows(struct fn_state *st, const struct shm_desc *descs, uint32_t k, uint64_t c,
		      uint64_t blk, const float **rows, float *scratch)
{
	for (uint32_t u = 0; u < k; u++) {
		const struct shm_desc *d = &descs[u];
		const struct shm_seg *segs;
		struct fn_input in;
		const struct shm_seg *s = NULL;

		if (input_from_desc(st, d, &in))
			return -EINVAL;
		segs = in.segs;
		for (uint32_t i = 0; i < d->nsegs && !s; i++)
			if (c >= segs[i].dst_elem && c + blk <= segs[i].dst_elem + segs[i].n_elem)
				s = &segs[i];
		if (!s)
			return -EINVAL;
		if (s->dtype == SHM_DTYPE_F32) {
			rows[u] = (const float *)(const void *)(st->base + s->src_off) +
				  (c - s->dst_elem);
		} else {
			size_t es = s->dtype == SHM_DTYPE_I8 ? 1 : 2;
			float *dst = scratch + (size_t)u * blk;

			memset(dst, 0, blk * sizeof(float));
			fn_dequant_fold(dst, st->base + s->src_off + (c - s->dst_elem) * es, s->dtype,
					s->scale, 1.0f, (size_t)blk);
			rows[u] = dst;
		}
	}
	return 0;
}

/*
 * A robust shard's whole work: its range of coordinates over all k updates,
 * median or trimmed mean into the model, or Krum's phases (partial
 * distances; then the mean of the selected updates). Returns 0 or -errno.
 */
static int shard_run(struct fn_state *st)
{
	const struct fn_shard_task *t;
	const struct shm_desc *descs;
	uint64_t n = st->cfg.n_elem, lo, hi, bounds[2];
	const float **rows = NULL;
	float *scratch = NULL, *tile = NULL;
	double *dmat = NULL;
	int err = -EINVAL;

	if (!range_ok(st, st->par.state_off, sizeof(*t)))
		return -EINVAL;
	t = (const struct fn_shard_task *)(const void *)(st->base + st->par.state_off);
	if (!t->k || !t->shards || st->cfg.index >= t->shards ||
	    !range_ok(st, t->descs_off, (uint64_t)t->k * sizeof(*descs)))
		return -EINVAL;
	descs = (const struct shm_desc *)(const void *)(st->base + t->descs_off);
	lo = n * st->cfg.index / t->shards;
	hi = n * (st->cfg.index + 1) / t->shards;
	rows = trib_calloc(t->k, sizeof(*rows));
	scratch = trib_malloc((size_t)t->k * 4096 * sizeof(float));
	tile = trib_malloc(FN_ROBUST_SCRATCH(t->k) * sizeof(float));
	if (!rows || !scratch || !tile) {
		err = -ENOMEM;
		goto out;
	}
	if (t->rule == FN_RULE_KRUM && t->phase == 1) {
		if (!range_ok(st, t->dmat_off, (uint64_t)t->shards * t->k * t->k * 8))
			goto out;
		dmat = (double *)(void *)(st->base + t->dmat_off) +
		       (size_t)st->cfg.index * t->k * t->k;
		memset(dmat, 0, (size_t)t->k * t->k * sizeof(double));
	}
	for (uint64_t c = lo; c < hi;) {
		uint64_t blk = hi - c < 4096 ? hi - c : 4096;

		/* Shorten the block to end where any update's segment ends (schema tensors). */
		for (uint32_t u = 0; u < t->k; u++) {
			struct fn_input in;

			if (input_from_desc(st, &descs[u], &in))
				goto out;
			for (uint32_t i = 0; i < in.nsegs; i++) {
				bounds[0] = in.segs[i].dst_elem;
				bounds[1] = bounds[0] + in.segs[i].n_elem;
				if (c >= bounds[0] && c < bounds[1] && c + blk > bounds[1])
					blk = bounds[1] - c;
			}
		}
		err = shard_rows(st, descs, t->k, c, blk, rows, scratch);
		if (err)
			goto out;
		switch (t->rule) {
		case FN_RULE_MEDIAN:
			err = fn_robust_median(rows, t->k, (size_t)blk, st->acc + c, tile);
			break;
		case FN_RULE_TRIMMED_MEAN:
			err = fn_robust_trimmed_mean(rows, t->k, (size_t)blk, t->trim, st->acc + c,
						     tile);
			break;
		case FN_RULE_KRUM:
			if (t->phase == 1) {
				fn_robust_pdist_partial(rows, t->k, (size_t)blk, dmat);
				err = 0;
			} else if (range_ok(st, t->sel_off, (uint64_t)t->m * 4)) {
				err = fn_robust_mean_rows(rows, t->k,
							  (const uint32_t *)(const void *)(st->base +
											  t->sel_off),
							  t->m, (size_t)blk, st->acc + c);
			} else {
				err = -EINVAL;
			}
			break;
		default:
			err = -EINVAL;
		}
		if (err)
			goto out;
		c += blk;
	}
	/* Deltas: the model moves by the robust aggregate. */
	if ((st->par.flags & FN_PAR_DELTA) && st->par.model_off &&
	    !(t->rule == FN_RULE_KRUM && t->phase == 1)) {
		const float *prev = (const float *)(const void *)(st->base + st->par.model_off);

		for (uint64_t c = lo; c < hi; c++)
			st->acc[c] += prev[c];
	}
	err = 0;
out:
	trib_free(rows);
	trib_free(scratch);
	trib_free(tile);
	return err;
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
	err = shm_chan_send(FN_CHANNEL_FD, &d, 1, -1);
	state_reset(st);
	return err;
}

/* Records off the control channel: returns 1 on EXIT, 0 to go on, -errno. */
static int on_control(struct fn_state *st)
{
	static uint8_t recs[SHM_CHAN_BATCH * SHM_DESC_SIZE] __attribute__((aligned(64)));
	size_t n;
	int fd = -1;
	int err = shm_chan_recv(FN_CHANNEL_FD, recs, SHM_CHAN_BATCH, &n, &fd);

	if (err)
		return err == -EINTR ? 0 : err;
	for (size_t i = 0; i < n && !err; i++) {
		const uint8_t *r = recs + i * SHM_DESC_SIZE;
		uint16_t kind;

		memcpy(&kind, r + 2, sizeof(kind));
		if (kind == FN_MSG_CONFIG) {
			struct fn_config cfg;

			memcpy(&cfg, r, sizeof(cfg));
			err = configure(st, &cfg, fd);
			fd = -1;
		} else if (kind == FN_MSG_EXIT) {
			err = 1;
		} else if (kind == FN_MSG_PARAMS) {
			/* Comes in the same message as its CONFIG, before any input. */
			memcpy(&st->par, r, sizeof(st->par));
			if (!st->configured || st->par.fn_id != st->cfg.fn_id)
				err = -EPROTO;
			else if (st->cfg.role == FN_ROLE_SHARD)
				err = shard_done(st, shard_run(st));
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

int main(int argc, char **argv)
{
	static struct fn_state st;
	int rc = 1;

	(void)argc;
	(void)argv;
	trib_log_init("fn");
	/* The runtime owns our lifetime; a closed channel, not a signal, is the normal end. */
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = FN_CHANNEL_FD, .events = POLLIN },
			{ .fd = FN_DATA_FD, .events = POLLIN },
		};
		/* The data socket is read only once configured (the config comes first). */
		bool data = st.configured && st.cfg.dataplane != FN_DP_SHM_UNIX;
		int err = 0;

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
