// SPDX-License-Identifier: MIT
/* Exact robust rules across nodes: the partition of a round's coordinates (ctl_shard.h). */
#include "ctl_shard.h"

#include <errno.h>

uint32_t ctl_shard_owners(const uint32_t *counts, uint32_t nnodes)
{
	uint32_t m = 0;

	for (uint32_t r = 0; r < nnodes; r++)
		m += counts[r] > 0;
	return m;
}

int ctl_shard_range(const uint32_t *counts, uint32_t nnodes, uint32_t rank, uint64_t n,
		    uint64_t *lo, uint64_t *hi)
{
	uint32_t m = ctl_shard_owners(counts, nnodes), q = 0;

	if (rank >= nnodes || !counts[rank])
		return -ENOENT;
	for (uint32_t r = 0; r < rank; r++)
		q += counts[r] > 0;
	/* floor(n q / m) = (n / m) q + floor((n mod m) q / m): no product overflows. */
	*lo = n / m * q + n % m * q / m;
	*hi = n / m * (q + 1) + n % m * (q + 1) / m;
	return 0;
}

uint64_t ctl_shard_first(const uint32_t *counts, uint32_t nnodes, uint32_t rank)
{
	uint64_t s = 0;

	for (uint32_t r = 0; r < rank && r < nnodes; r++)
		s += counts[r];
	return s;
}

uint64_t ctl_shard_total(const uint32_t *counts, uint32_t nnodes)
{
	return ctl_shard_first(counts, nnodes, nnodes);
}
