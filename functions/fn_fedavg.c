// SPDX-License-Identifier: MIT
/* FedAvg: the sample-weighted mean of the clients' models; every mean-based job folds with it. */
#include <errno.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_dequant.h"
#include "fn_fold.h"
#include "fn_sparse.h"

/*
 * An update weighs its sample count (the descriptor's weight), or 1 when the job is
 * unweighted (FN_PAR_UNWEIGHTED: asked for, or implied by DP and the robust rules); that is
 * both its fold factor and its share of the divisor. Later stages may scale the fold factor
 * only (clipping, staleness), so they run after this one. A partial's weight is its children's
 * total share and stays as it is.
 */
static int fedavg_weigh(void *state, const struct fn_algo_ctx *ctx, struct fn_input *in)
{
	(void)state;
	if (in->kind == SHM_DESC_UPDATE && (ctx->par->flags & FN_PAR_UNWEIGHTED)) {
		in->weight = 1.0;
		in->share = 1.0;
	}
	return 0;
}

/*
 * An update is folded with its weight; a partial is already a weighted sum, so it is added as
 * is (weight 1). Segments are folded in table order, which callers keep fixed so that the same
 * inputs give the same bits.
 */
static int fedavg_fold(void *state, const struct fn_algo_ctx *ctx, const struct fn_input *in)
{
	float w = in->kind == SHM_DESC_UPDATE ? (float)in->weight : 1.0f;
	float *acc = ctx->acc;

	(void)state;
	for (uint32_t i = 0; i < in->nsegs; i++) {
		const struct shm_seg *s = &in->segs[i];

		if (s->dtype == SHM_DTYPE_SPARSE) {
			/* Scatter-added from its indices and values: never densified. */
			if (fn_sparse_fold_seg(acc, in->base, ctx->size, s, w))
				return -EINVAL;
			continue;
		}
		if (s->dtype == SHM_DTYPE_F32) {
			fn_fold_f32(acc + s->dst_elem,
				    (const float *)(const void *)(in->base + s->src_off), w,
				    (size_t)s->n_elem);
			continue;
		}
		/* F16, BF16, I8 x scale: decoded inside the fold, never expanded into a copy. */
		if (fn_dequant_fold(acc + s->dst_elem, in->base + s->src_off, s->dtype, s->scale, w,
				    (size_t)s->n_elem))
			return -EINVAL;
	}
	return 0;
}

/* The sum becomes the mean: -EDOM when nothing with a positive share was folded. */
static int fedavg_finish(void *state, const struct fn_algo_ctx *ctx, double total_weight)
{
	(void)state;
	if (!(total_weight > 0))
		return -EDOM;
	fn_scale_f32(ctx->acc, (float)(1.0 / total_weight), (size_t)ctx->cfg->n_elem);
	return 0;
}

const struct fn_algo_ops fn_fedavg_ops = {
	.name = "fedavg",
	.state_size = 0,
	.weigh = fedavg_weigh,
	.fold = fedavg_fold,
	.finish = fedavg_finish,
};
