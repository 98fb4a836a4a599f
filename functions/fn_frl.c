// SPDX-License-Identifier: MIT
/* FRL: permutation checks, the integer vote fold, and the stable sort into the global ranking. */
#include "fn_frl.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"

int fn_frl_votes_fit(uint64_t k, uint64_t n)
{
	uint64_t m;

	if (n == 0)
		return 1;
	return !__builtin_mul_overflow(k, n - 1, &m) && m <= UINT32_MAX;
}

int fn_frl_check(const int32_t *p, size_t n, uint8_t *seen, size_t *bad)
{
	memset(seen, 0, n);
	for (size_t j = 0; j < n; j++) {
		int32_t v = p[j];

		/* Hostile input: the index is used to address votes, so range first. */
		if (v < 0 || (uint64_t)v >= n || seen[v]) {
			*bad = j;
			return -EINVAL;
		}
		seen[v] = 1;
	}
	return 0;
}

int fn_frl_vote(uint32_t *votes, const int32_t *p, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		if (p[j] < 0 || (uint64_t)p[j] >= n)
			return -EINVAL;
		votes[p[j]] += (uint32_t)j;
	}
	return 0;
}

void fn_frl_add(uint32_t *acc, const uint32_t *part, size_t n)
{
	for (size_t i = 0; i < n; i++)
		acc[i] += part[i];
}

/*
 * out[j] = the index with the j-th smallest vote, ties to the lower index: a least-significant
 * digit radix sort of (vote << 32 | index) keys on the vote's bits, 11 a pass (3 passes),
 * ping-ponging between the two halves of @scratch. Each pass is a stable counting sort and the
 * keys start in index order, so equal votes keep index order: exactly numpy's
 * argsort(kind="stable"), in O(n). (qsort on the same keys took 0.4 s for 1M entries on the
 * 2-core VM; this takes tens of ms.) A pass whose digit is the same for every vote moves
 * nothing and is skipped.
 */
#define FRL_DIGIT 11u
#define FRL_MASK ((1u << FRL_DIGIT) - 1)

int fn_frl_rank(const uint32_t *votes, size_t n, int32_t *out, uint64_t *scratch)
{
	uint64_t *a = scratch, *b = scratch + n, *t;
	size_t count[1u << FRL_DIGIT];

	if ((uint64_t)n > (uint64_t)INT32_MAX + 1)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		a[i] = (uint64_t)votes[i] << 32 | (uint64_t)i;
	for (unsigned shift = 32; shift < 64; shift += FRL_DIGIT) {
		size_t sum = 0;

		memset(count, 0, sizeof(count));
		for (size_t i = 0; i < n; i++)
			count[a[i] >> shift & FRL_MASK]++;
		if (n && count[a[0] >> shift & FRL_MASK] == n)
			continue; /* one digit for all: the order stays */
		for (size_t d = 0; d <= FRL_MASK; d++) {
			size_t c = count[d];

			count[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			b[count[a[i] >> shift & FRL_MASK]++] = a[i];
		t = a;
		a = b;
		b = t;
	}
	for (size_t j = 0; j < n; j++)
		out[j] = (int32_t)(uint32_t)a[j];
	return 0;
}

/*
 * The base row. The accumulator's 4-byte cells hold uint32 votes, not floats: an update's
 * segments are I32 rankings, one segment per tensor (the runtime maps each tensor to one
 * segment, so a segment's positions are the tensor's), scattered as votes into the tensor's
 * cells; a partial's segments are already votes and add cell by cell. No weights: every
 * client's ranking counts once.
 */
static int frl_weigh(void *state, const struct fn_algo_ctx *ctx, struct fn_input *in)
{
	(void)state;
	(void)ctx;
	if (in->kind == SHM_DESC_UPDATE) {
		in->weight = 1.0;
		in->share = 1.0;
	}
	return 0;
}

static int frl_fold(void *state, const struct fn_algo_ctx *ctx, const struct fn_input *in)
{
	uint32_t *acc = (uint32_t *)(void *)ctx->acc;

	(void)state;
	for (uint32_t i = 0; i < in->nsegs; i++) {
		const struct shm_seg *s = &in->segs[i];
		const void *src = in->base + s->src_off;

		if (in->kind == SHM_DESC_UPDATE && s->dtype == SHM_DTYPE_I32) {
			if (fn_frl_vote(acc + s->dst_elem, src, (size_t)s->n_elem))
				return -EINVAL;
			continue;
		}
		/*
		 * A partial's 4-byte cells are votes (fn_main.c labels every partial F32); so are
		 * an update's in tcp, where the runtime sends the ranking's votes as flat cells
		 * (fn_main.c labels them F32 too; runtime/node/rt_tree.c, frl_send_votes).
		 */
		if (s->dtype != SHM_DTYPE_F32)
			return -EINVAL;
		fn_frl_add(acc + s->dst_elem, src, (size_t)s->n_elem);
	}
	return 0;
}

/*
 * The top leaves the votes in the accumulator: the sort is per tensor, and tensor bounds are
 * the runtime's (it ranks each tensor with fn_frl_rank() when it writes the model).
 */
const struct fn_algo_ops fn_frl_ops = {
	.name = "frl",
	.state_size = 0,
	.weigh = frl_weigh,
	.fold = frl_fold,
};
