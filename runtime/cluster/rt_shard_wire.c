// SPDX-License-Identifier: MIT
/* The slices message of robust rules across nodes, pure (rt_shard_wire.h). */
#include "rt_shard_wire.h"

#include <errno.h>
#include <stdlib.h>

uint64_t rt_shard_dtype_size(unsigned dtype)
{
	switch (dtype) {
	case SHM_DTYPE_F32:
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

static int piece_cmp(const void *x, const void *y)
{
	const struct rt_shard_piece *p = x, *q = y;

	return p->a < q->a ? -1 : p->a > q->a;
}

uint32_t rt_shard_cut(const struct shm_seg *segs, uint32_t nsegs, uint64_t lo, uint64_t hi,
		      struct rt_shard_piece *out)
{
	uint32_t np = 0;

	for (uint32_t i = 0; i < nsegs; i++) {
		uint64_t s0 = segs[i].dst_elem, s1 = s0 + segs[i].n_elem;
		uint64_t a = s0 > lo ? s0 : lo, b = s1 < hi ? s1 : hi;

		if (a < b)
			out[np++] = (struct rt_shard_piece){i, a, b};
	}
	qsort(out, np, sizeof(*out), piece_cmp);
	return np;
}

int rt_shard_slices_check(const json_t *ups, uint32_t nups, uint32_t max_pieces, uint64_t lo,
			  uint64_t hi, size_t plen, uint64_t *npieces)
{
	const json_t *u, *e;
	uint64_t total = 0;
	size_t i, s;

	if (!json_is_array(ups) || json_array_size(ups) != nups || lo > hi)
		return -EINVAL;
	json_array_foreach(ups, i, u)
	{
		uint64_t next = lo;

		if (!json_is_array(u) || json_array_size(u) > max_pieces)
			return -EINVAL;
		json_array_foreach(u, s, e)
		{
			const json_t *f[5];
			uint64_t off, ne, dst, es;

			for (int k = 0; k < 5; k++)
				f[k] = json_array_get(e, (size_t)k);
			if (json_array_size(e) != 5 || !json_is_integer(f[0]) ||
			    !json_is_integer(f[1]) || !json_is_integer(f[2]) ||
			    !json_is_integer(f[3]) || !json_is_number(f[4]) ||
			    json_integer_value(f[0]) < 0 || json_integer_value(f[1]) <= 0 ||
			    json_integer_value(f[2]) < 0 || json_integer_value(f[3]) < 0)
				return -EINVAL;
			off = (uint64_t)json_integer_value(f[0]);
			ne = (uint64_t)json_integer_value(f[1]);
			dst = (uint64_t)json_integer_value(f[2]);
			es = rt_shard_dtype_size((unsigned)json_integer_value(f[3]));
			/* In order, no gap and no overlap, inside the range and the payload. */
			if (!es || dst != next || ne > hi - dst || off % 4 || off > plen ||
			    ne > (plen - off) / es)
				return -EINVAL;
			next = dst + ne;
		}
		if (next != hi)
			return -EINVAL;
		total += json_array_size(u);
	}
	*npieces = total;
	return 0;
}
