// SPDX-License-Identifier: MIT
/* FedAvg: the sample-weighted mean of the clients' models. */
#include <errno.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_dequant.h"
#include "fn_fold.h"

static int fedavg_init(void *state, float *acc, uint64_t n)
{
	(void)state;
	(void)acc;
	(void)n;
	return 0;
}

/*
 * An update is folded with its sample count; a partial is already a weighted
 * sum, so it is added as is (weight 1). Segments are folded in table order,
 * which callers keep fixed so that the same inputs give the same bits.
 */
static int fedavg_fold(void *state, float *acc, const struct fn_input *in)
{
	float w = in->kind == SHM_DESC_UPDATE ? (float)in->weight : 1.0f;

	(void)state;
	for (uint32_t i = 0; i < in->nsegs; i++) {
		const struct shm_seg *s = &in->segs[i];

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

static int fedavg_finish(void *state, float *acc, uint64_t n, double total_weight)
{
	(void)state;
	if (!(total_weight > 0))
		return -EDOM;
	fn_scale_f32(acc, (float)(1.0 / total_weight), (size_t)n);
	return 0;
}

static void fedavg_fini(void *state)
{
	(void)state;
}

const struct fn_algo_ops fn_fedavg_ops = {
	.name = "fedavg",
	.state_size = 0,
	.init = fedavg_init,
	.fold = fedavg_fold,
	.finish = fedavg_finish,
	.fini = fedavg_fini,
};

const struct fn_algo_ops *fn_algo_find(uint32_t algorithm)
{
	switch (algorithm) {
	case FN_ALGO_FEDAVG:
		return &fn_fedavg_ops;
	default:
		return NULL;
	}
}
