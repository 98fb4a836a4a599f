// SPDX-License-Identifier: MIT
/* FedAU's interval estimate, one participation at a time: see trib_fedau.h. */
#include "trib_fedau.h"

#include <errno.h>

int trib_fedau_observe(struct trib_fedau_client *c, uint32_t round, uint32_t k, double *weight)
{
	uint64_t missed, q, r;

	if (k < TRIB_FEDAU_K_MIN || k > TRIB_FEDAU_K_MAX)
		return -EINVAL;
	if ((int64_t)round <= c->last_round)
		return -EALREADY;
	/* Rounds sat out since the last participation (since round 0 for a new client). */
	missed = (uint64_t)((int64_t)round - c->last_round - 1);
	q = missed / k; /* each time the count reached K: an interval of K */
	r = missed % k; /* the count when it takes part */
	if (c->total + q * k + r + 1 > (1ull << 53) || c->intervals + q + 1 > UINT32_MAX)
		return -EOVERFLOW;
	c->intervals += (uint32_t)q;
	c->total += q * k;
	*weight = c->intervals ? (double)c->total / (double)c->intervals : 1.0;
	c->intervals += 1;
	c->total += r + 1;
	c->last_round = round;
	return 0;
}
