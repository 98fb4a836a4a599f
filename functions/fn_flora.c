// SPDX-License-Identifier: MIT
/* FLoRA: placement of weighted LoRA pairs in rank blocks, packing, and the merge (fn_flora.h). */
#include "fn_flora.h"

#include <errno.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_fold.h"

int fn_flora_place(float *a_stack, float *b_stack, size_t m, size_t n, size_t R, size_t S,
		   size_t s, size_t r, const float *A, const float *B, double w)
{
	size_t cols = S * R, off = s * R;

	if (s >= S || r > R || !(w > 0))
		return -EINVAL;
	for (size_t i = 0; i < r; i++)
		for (size_t j = 0; j < n; j++)
			a_stack[(off + i) * n + j] = (float)(w * (double)A[i * n + j]);
	for (size_t i = 0; i < m; i++)
		memcpy(b_stack + i * cols + off, B + i * r, r * sizeof(float));
	return 0;
}

int fn_flora_finish(float *a_stack, size_t rows, size_t n, double W)
{
	if (!(W > 0))
		return -EDOM;
	/* w A / W: the weight was applied at placement, so p_k A_k carries two roundings. */
	for (size_t i = 0; i < rows * n; i++)
		a_stack[i] = (float)((double)a_stack[i] / W);
	return 0;
}

size_t fn_flora_pack(float *a_stack, float *b_stack, size_t m, size_t n, size_t R, size_t S,
		     const uint32_t *ranks)
{
	size_t cols = S * R, used = 0;

	for (size_t s = 0; s < S; s++)
		if (ranks[s] > R)
			return (size_t)-1;
	/* Blocks only move towards the front (used <= s R), so memmove in slot order is safe. */
	for (size_t s = 0; s < S; s++) {
		size_t r = ranks[s], from = s * R;

		if (!r)
			continue;
		if (from != used) {
			memmove(a_stack + used * n, a_stack + from * n, r * n * sizeof(float));
			for (size_t i = 0; i < m; i++)
				memmove(b_stack + i * cols + used, b_stack + i * cols + from,
					r * sizeof(float));
		}
		used += r;
	}
	memset(a_stack + used * n, 0, (cols - used) * n * sizeof(float));
	for (size_t i = 0; i < m; i++)
		memset(b_stack + i * cols + used, 0, (cols - used) * sizeof(float));
	return used;
}

void fn_flora_merge(float *W, const float *a_stack, const float *b_stack, size_t m, size_t n,
		    size_t stride, size_t used)
{
	for (size_t i = 0; i < m; i++)
		for (size_t j = 0; j < n; j++) {
			double acc = 0.0;

			for (size_t q = 0; q < used; q++)
				acc += (double)b_stack[i * stride + q] * (double)a_stack[q * n + j];
			W[i * n + j] = (float)((double)W[i * n + j] + acc);
		}
}

/* As FedAvg: an update weighs its sample count, or 1 when the job is unweighted. */
static int flora_weigh(void *state, const struct fn_algo_ctx *ctx, struct fn_input *in)
{
	(void)state;
	if (in->kind == SHM_DESC_UPDATE && (ctx->par->flags & FN_PAR_UNWEIGHTED)) {
		in->weight = 1.0;
		in->share = 1.0;
	}
	/*
	 * The tcp data plane sends an update as the whole flat model, already placed by the
	 * runtime with A weighted (runtime/node/rt_flora.c, rt_flora_flat()): added as is, its
	 * weight still its share of W. A gateway's update never is one segment over everything.
	 */
	if (in->kind == SHM_DESC_UPDATE && in->nsegs == 1 && in->segs[0].dst_elem == 0 &&
	    in->segs[0].n_elem == ctx->cfg->n_elem)
		in->weight = 1.0;
	return 0;
}

/*
 * An update's A segment lands with its weight (w A_k into a zero block: fn_flora_place()'s
 * product, one rounding), its B rows as sent; a partial is added cell by cell, and since each
 * cell is non-zero in at most one input, every sum is x + 0 = x. F32 only: a flora update is
 * never compressed (the gateway refuses other dtypes).
 */
static int flora_fold(void *state, const struct fn_algo_ctx *ctx, const struct fn_input *in)
{
	float w = in->kind == SHM_DESC_UPDATE ? (float)in->weight : 1.0f;

	(void)state;
	for (uint32_t i = 0; i < in->nsegs; i++) {
		const struct shm_seg *s = &in->segs[i];

		if (s->dtype != SHM_DTYPE_F32)
			return -EINVAL;
		fn_fold_f32(ctx->acc + s->dst_elem,
			    (const float *)(const void *)(in->base + s->src_off),
			    in->kind == SHM_DESC_UPDATE && s->scale == FN_FLORA_SEG_AS_IS ? 1.0f : w,
			    (size_t)s->n_elem);
	}
	return 0;
}

/* No finish: the sum goes to the runtime as it is (the A rows are divided there, not B). */
const struct fn_algo_ops fn_flora_ops = {
	.name = "flora",
	.state_size = 0,
	.weigh = flora_weigh,
	.fold = flora_fold,
};
