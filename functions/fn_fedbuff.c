// SPDX-License-Identifier: MIT
/* FedBuff: staleness checks and weights, a version every K accepted updates, and its leaf stage. */
#include "fn_fedbuff.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "fn_algo.h"

double fn_fedbuff_staleness_weight(uint64_t staleness)
{
	return 1.0 / sqrt(1.0 + (double)staleness);
}

int fn_fedbuff_fold_scale(uint64_t open, uint64_t trained_from, uint32_t max_staleness,
			  float *scale)
{
	if (trained_from > open)
		return -EINVAL;
	if (open - trained_from > max_staleness)
		return -ESTALE;
	*scale = (float)fn_fedbuff_staleness_weight(open - trained_from);
	return 0;
}

/*
 * The leaf's stage: an update the runtime accepted into a FedBuff buffer carries its factor in
 * the descriptor (fn_fedbuff_fold_scale()); a synchronous job's updates carry 0 and keep their
 * weight. Only the fold factor shrinks, not the share: stale updates shrink the step.
 */
static int fedbuff_weigh(void *state, const struct fn_algo_ctx *ctx, struct fn_input *in)
{
	(void)state;
	(void)ctx;
	if (in->kind == SHM_DESC_UPDATE && in->desc && in->desc->fold_scale > 0)
		in->weight *= in->desc->fold_scale;
	return 0;
}

const struct fn_algo_ops fn_fedbuff_ops = {
	.name = "fedbuff",
	.state_size = 0,
	.weigh = fedbuff_weigh,
};

int fn_fedbuff_init(struct fn_fedbuff *fb, uint32_t buffer_size, uint32_t max_staleness,
		    uint64_t version)
{
	if (!buffer_size)
		return -EINVAL;
	memset(fb, 0, sizeof(*fb));
	fb->version = version;
	fb->buffer_size = buffer_size;
	fb->max_staleness = max_staleness;
	return 0;
}

int fn_fedbuff_check(const struct fn_fedbuff *fb, uint64_t trained_from, uint64_t *staleness)
{
	uint64_t s;

	if (trained_from > fb->version)
		return -EINVAL;
	s = fb->version - trained_from;
	if (s > fb->max_staleness)
		return -ESTALE;
	*staleness = s;
	return 0;
}

int fn_fedbuff_accept(struct fn_fedbuff *fb, uint64_t trained_from, double base,
		      struct fn_fedbuff_ticket *t)
{
	uint64_t s;
	int err;

	if (!(base > 0.0) || !isfinite(base))
		return -EINVAL;
	err = fn_fedbuff_check(fb, trained_from, &s);
	if (err)
		return err;
	memset(t, 0, sizeof(*t));
	t->target = fb->version + 1;
	t->staleness = s;
	t->index = fb->count;
	t->weight = fn_fedbuff_staleness_weight(s) * base;
	fb->base_sum += base;
	if (++fb->count < fb->buffer_size)
		return 0;
	t->last = true;
	t->divisor = fb->base_sum;
	fb->version++;
	fb->count = 0;
	fb->base_sum = 0.0;
	return 0;
}
