// SPDX-License-Identifier: MIT
/* Running a composed pipeline: its stages' state, and each phase over the stages in order. */
#include <errno.h>
#include <stdalign.h>
#include <stddef.h>

#include "fn_algo.h"
#include "fn_sparse.h"

/* Each stage's state starts at a multiple of this in the caller's block. */
#define STATE_ALIGN alignof(max_align_t)

static size_t state_round(size_t n)
{
	return (n + STATE_ALIGN - 1) / STATE_ALIGN * STATE_ALIGN;
}

size_t fn_pipeline_state_size(const struct fn_pipeline *p)
{
	size_t sz = 0;

	for (uint32_t i = 0; i < p->n; i++)
		sz += state_round(p->ops[i]->state_size);
	return sz;
}

int fn_pipeline_init(struct fn_pipeline *p, void *block, const struct fn_algo_ctx *ctx)
{
	unsigned char *at = block;

	for (uint32_t i = 0; i < p->n; i++) {
		p->state[i] = p->ops[i]->state_size ? at : NULL;
		at += state_round(p->ops[i]->state_size);
	}
	for (uint32_t i = 0; i < p->n; i++) {
		int err = p->ops[i]->init ? p->ops[i]->init(p->state[i], ctx) : 0;

		if (err)
			return err;
	}
	return 0;
}

int fn_pipeline_fold(const struct fn_pipeline *p, const struct fn_algo_ctx *ctx,
		     struct fn_input *in)
{
	int err = 0;

	for (uint32_t i = 0; i < p->n && !err; i++)
		if (p->ops[i]->weigh)
			err = p->ops[i]->weigh(p->state[i], ctx, in);
	for (uint32_t i = 0; i < p->n && !err; i++)
		if (p->ops[i]->fold)
			err = p->ops[i]->fold(p->state[i], ctx, in);
	return err;
}

int fn_pipeline_finish(const struct fn_pipeline *p, const struct fn_algo_ctx *ctx,
		       double total_weight)
{
	int err = 0;

	if (!p->finishes)
		return 0;
	for (uint32_t i = 0; i < p->n && !err; i++)
		if (p->ops[i]->finish)
			err = p->ops[i]->finish(p->state[i], ctx, total_weight);
	return err;
}

int fn_pipeline_shard(const struct fn_pipeline *p, const struct fn_algo_ctx *ctx)
{
	int err = 0;

	for (uint32_t i = 0; i < p->n && !err; i++)
		if (p->ops[i]->shard)
			err = p->ops[i]->shard(p->state[i], ctx);
	return err;
}

void fn_pipeline_fini(struct fn_pipeline *p)
{
	for (uint32_t i = p->n; i-- > 0;)
		if (p->ops[i]->fini && p->state[i])
			p->ops[i]->fini(p->state[i]);
	p->n = 0;
	p->finishes = false;
}

bool fn_ctx_range_ok(const struct fn_algo_ctx *ctx, uint64_t off, uint64_t len)
{
	return off <= ctx->size && len <= ctx->size - off;
}

/* Bytes per element of a segment's dtype, 0 for one the fold does not know. */
static uint64_t dtype_size(uint32_t dtype)
{
	switch (dtype) {
	case SHM_DTYPE_F32:
	case SHM_DTYPE_I32: /* FRL's rankings, masked words; only fn_frl.c, fn_secagg.c fold them */
		return 4;
	case SHM_DTYPE_F16:
	case SHM_DTYPE_BF16:
		return 2;
	case SHM_DTYPE_I8:
		return 1;
	default:
		return 0;
	}
}

int fn_input_from_desc(const struct fn_algo_ctx *ctx, const struct shm_desc *d,
		       struct fn_input *in)
{
	uint64_t n = ctx->cfg->n_elem;
	const struct shm_seg *segs;

	if (d->nsegs == 0 || d->nsegs > 1u << 16 ||
	    !fn_ctx_range_ok(ctx, d->segs_off, (uint64_t)d->nsegs * sizeof(struct shm_seg)) ||
	    d->segs_off % _Alignof(struct shm_seg))
		return -EINVAL;
	segs = (const struct shm_seg *)(const void *)(ctx->base + d->segs_off);
	for (uint32_t i = 0; i < d->nsegs; i++) {
		const struct shm_seg *s = &segs[i];
		uint64_t es = dtype_size(s->dtype);
		struct fn_sparse_view v;

		if (s->dtype == SHM_DTYPE_SPARSE) {
			/* Its record, indices and values, and every index (fn_sparse.h). */
			if (s->dst_elem > n || s->n_elem > n - s->dst_elem ||
			    fn_sparse_view(ctx->base, ctx->size, s, true, &v))
				return -EINVAL;
			continue;
		}
		if (!es || s->src_off % es || s->dst_elem > n || s->n_elem > n - s->dst_elem ||
		    !fn_ctx_range_ok(ctx, s->src_off, s->n_elem * es))
			return -EINVAL;
	}
	in->kind = d->kind;
	in->base = ctx->base;
	in->segs = segs;
	in->nsegs = d->nsegs;
	in->weight = d->weight;
	in->share = d->weight;
	in->desc = d;
	return 0;
}
