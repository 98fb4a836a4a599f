// SPDX-License-Identifier: MIT
/* tributary-fn: one aggregation function, spawned by the node runtime, folding what its channel brings. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "shm_arena.h"
#include "shm_chan.h"
#include "trib_alloc.h"
#include "trib_log.h"

/*
 * A function's whole life: receive a config (with the arena fd), fold the
 * expected inputs, hand the output on, exit. Inputs are folded in a fixed
 * order (updates in the order the gateway accepted them, partials in child
 * order) so that the same updates always give the same bits.
 */
struct fn_state {
	struct shm_arena *arena;
	uint8_t *base;
	uint64_t arena_size;
	struct fn_config cfg;
	bool configured;
	const struct fn_algo_ops *ops;
	void *algo_state;
	float *acc;
	uint32_t folded;   /* inputs folded so far */
	double total_w;    /* sum of the inputs' weights */
	uint32_t total_n;  /* client updates inside the output */
	/* top: partials that came before their turn, by child index */
	struct shm_desc *pending;
	bool *has_pending;
	char logname[32];
};

static bool range_ok(const struct fn_state *st, uint64_t off, uint64_t len)
{
	return off <= st->arena_size && len <= st->arena_size - off;
}

/* Resolve and bounds-check a descriptor's segments; 0 or -EINVAL. */
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

		if (s->dtype != SHM_DTYPE_F32 || s->src_off % 4 ||
		    s->dst_elem > st->cfg.n_elem || s->n_elem > st->cfg.n_elem - s->dst_elem ||
		    !range_ok(st, s->src_off, s->n_elem * 4))
			return -EINVAL;
	}
	in->kind = d->kind;
	in->base = st->base;
	in->segs = segs;
	in->nsegs = d->nsegs;
	in->weight = d->weight;
	return 0;
}

static int fold_desc(struct fn_state *st, const struct shm_desc *d)
{
	struct fn_input in;
	int err;

	err = input_from_desc(st, d, &in);
	if (!err)
		err = st->ops->fold(st->algo_state, st->acc, &in);
	if (err) {
		trib_error("job %u round %u: bad %s descriptor from %u (slot %llu): %s", d->job,
			   d->round, d->kind == SHM_DESC_UPDATE ? "update" : "partial", d->src,
			   (unsigned long long)d->slot_off, strerror(-err));
		return err;
	}
	st->folded++;
	st->total_w += d->weight;
	st->total_n += d->count;
	/* The bytes are in the accumulator now: the slot can take the next update. */
	err = shm_slot_free(st->arena, d->slot_off);
	if (err)
		trib_warn("job %u round %u: freeing slot %llu: %s", d->job, d->round,
			  (unsigned long long)d->slot_off, strerror(-err));
	return 0;
}

/* Hand the accumulator on: a partial to the parent, or the model to the runtime. */
static int hand_off(struct fn_state *st)
{
	struct shm_seg *seg = (struct shm_seg *)(void *)(st->base + st->cfg.acc_off);
	struct shm_desc d;
	int err;

	if (st->cfg.role == FN_ROLE_TOP) {
		err = st->ops->finish(st->algo_state, st->acc, st->cfg.n_elem, st->total_w);
		if (err) {
			trib_error("job %u round %u: finishing: %s", st->cfg.job, st->cfg.round,
				   strerror(-err));
			return err;
		}
	}
	memset(seg, 0, sizeof(*seg));
	seg->src_off = st->cfg.acc_data_off;
	seg->dst_elem = 0;
	seg->n_elem = st->cfg.n_elem;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;

	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = st->cfg.role == FN_ROLE_TOP ? SHM_DESC_RESULT : SHM_DESC_PARTIAL;
	d.dst = st->cfg.parent;
	d.src = st->cfg.fn_id;
	d.job = st->cfg.job;
	d.round = st->cfg.round;
	d.nsegs = 1;
	d.slot_off = st->cfg.acc_off;
	d.segs_off = st->cfg.acc_off;
	d.weight = st->total_w;
	d.count = st->total_n;
	err = shm_chan_send(FN_CHANNEL_FD, &d, 1, -1);
	if (err)
		trib_error("job %u round %u: handing off to %u: %s", st->cfg.job, st->cfg.round,
			   st->cfg.parent, strerror(-err));
	else
		trib_debug("job %u round %u: handed %u updates (weight %g) to %u", st->cfg.job,
			   st->cfg.round, st->total_n, st->total_w, st->cfg.parent);
	return err;
}

/* Takes ownership of @arena_fd. */
static int configure(struct fn_state *st, const struct fn_config *cfg, int arena_fd)
{
	int err;

	if (cfg->version != FN_ABI_VERSION || cfg->expected == 0 ||
	    (cfg->role != FN_ROLE_LEAF && cfg->role != FN_ROLE_TOP) || st->configured) {
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
	if (!range_ok(st, cfg->acc_data_off, cfg->n_elem * 4) || cfg->acc_data_off % 64 ||
	    cfg->acc_data_off < cfg->acc_off + sizeof(struct shm_seg))
		return -EINVAL;
	st->ops = fn_algo_find(cfg->algorithm);
	if (!st->ops)
		return -EPROTONOSUPPORT;
	st->cfg = *cfg;
	snprintf(st->logname, sizeof(st->logname), "fn %u", cfg->fn_id);
	trib_log_init(st->logname);
	st->acc = (float *)(void *)(st->base + cfg->acc_data_off);
	memset(st->acc, 0, cfg->n_elem * sizeof(float));
	if (st->ops->state_size) {
		st->algo_state = trib_calloc(1, st->ops->state_size);
		if (!st->algo_state)
			return -ENOMEM;
	}
	err = st->ops->init(st->algo_state, st->acc, cfg->n_elem);
	if (err)
		return err;
	if (cfg->role == FN_ROLE_TOP) {
		st->pending = trib_calloc(cfg->expected, sizeof(*st->pending));
		st->has_pending = trib_calloc(cfg->expected, sizeof(*st->has_pending));
		if (!st->pending || !st->has_pending)
			return -ENOMEM;
	}
	st->configured = true;
	trib_debug("job %u round %u: %s, expecting %u inputs of %llu elements", cfg->job,
		   cfg->round, cfg->role == FN_ROLE_TOP ? "top" : "leaf", cfg->expected,
		   (unsigned long long)cfg->n_elem);
	return 0;
}

/* Returns 1 when the function's work is done, 0 to go on, -errno on error. */
static int on_desc(struct fn_state *st, const struct shm_desc *d)
{
	int err;

	if (!st->configured || d->version != SHM_ABI_VERSION)
		return -EPROTO;
	if (st->cfg.role == FN_ROLE_LEAF) {
		if (d->kind != SHM_DESC_UPDATE)
			return -EPROTO;
		err = fold_desc(st, d);
	} else {
		uint32_t child;

		if (d->kind != SHM_DESC_PARTIAL)
			return -EPROTO;
		child = d->src - st->cfg.child_base;
		if (d->src < st->cfg.child_base || child >= st->cfg.expected ||
		    st->has_pending[child])
			return -EPROTO;
		st->pending[child] = *d;
		st->has_pending[child] = true;
		err = 0;
		/* Fold in child order, whatever order the partials arrive in. */
		while (!err && st->folded < st->cfg.expected && st->has_pending[st->folded])
			err = fold_desc(st, &st->pending[st->folded]);
	}
	if (err)
		return err;
	if (st->folded == st->cfg.expected) {
		err = hand_off(st);
		return err ? err : 1;
	}
	return 0;
}

static void state_fini(struct fn_state *st)
{
	if (st->ops && st->ops->fini)
		st->ops->fini(st->algo_state);
	trib_free(st->algo_state);
	trib_free(st->pending);
	trib_free(st->has_pending);
	shm_arena_destroy(st->arena);
}

int main(int argc, char **argv)
{
	static uint8_t recs[SHM_CHAN_BATCH * SHM_DESC_SIZE] __attribute__((aligned(64)));
	struct fn_state st;
	int rc = 1;

	(void)argc;
	(void)argv;
	memset(&st, 0, sizeof(st));
	trib_log_init("fn");
	/* The runtime owns our lifetime; a closed channel, not a signal, is the normal end. */
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		size_t n;
		int fd = -1;
		int err = shm_chan_recv(FN_CHANNEL_FD, recs, SHM_CHAN_BATCH, &n, &fd);

		if (err == -EINTR)
			continue;
		if (err == -ECONNRESET) {
			/* The runtime went away or retired us before the work was done. */
			rc = st.configured && st.folded < st.cfg.expected ? 1 : 0;
			goto out;
		}
		if (err) {
			trib_error("channel: %s", strerror(-err));
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			const uint8_t *r = recs + i * SHM_DESC_SIZE;
			uint16_t kind;

			memcpy(&kind, r + 2, sizeof(kind));
			if (kind == FN_MSG_CONFIG) {
				struct fn_config cfg;

				memcpy(&cfg, r, sizeof(cfg));
				err = configure(&st, &cfg, fd);
				fd = -1;
			} else if (kind == FN_MSG_EXIT) {
				rc = 0;
				goto out;
			} else {
				struct shm_desc d;

				memcpy(&d, r, sizeof(d));
				err = on_desc(&st, &d);
				if (err == 1) {
					rc = 0;
					goto out;
				}
			}
			if (err) {
				trib_error("job %u round %u: giving up: %s", st.cfg.job,
					   st.cfg.round, strerror(-err));
				goto out;
			}
		}
		if (fd >= 0)
			close(fd);
	}
out:
	state_fini(&st);
	return rc;
}
