// SPDX-License-Identifier: MIT
/* FedBuff buffer logic: staleness checks and weights, and a version every K accepted updates. */
#include "fn_fedbuff.h"

#include <errno.h>
#include <math.h>
#include <string.h>

double fn_fedbuff_staleness_weight(uint64_t staleness)
{
	return 1.0 / sqrt(1.0 + (double)staleness);
}

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
