// SPDX-License-Identifier: MIT
/* FRL (functions/fn_frl.c) against numpy (ref/frl.py): votes folded in a two-level tree. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_frl.h"
#include "ref/ref.h"
#include "trib_alloc.h"

/*
 * k rankings of n, folded through the base row's hooks as a tree folds them: two leaves take
 * the updates (every other one), the top takes the two partials; then the sort.
 */
static void check_frl(size_t k, size_t n, unsigned seed)
{
	const int32_t *ranks, *glob;
	const uint32_t *votes;
	uint32_t *leaf[2], *top = trib_calloc(n ? n : 1, 4);
	int32_t *out = trib_malloc((n ? n : 1) * 4);
	uint64_t *scratch = trib_malloc((n ? n : 1) * 16);
	uint8_t *seen = trib_malloc(n ? n : 1);
	struct fn_params par = { 0 };
	struct fn_config cfg = { .n_elem = n };
	struct ref r;
	size_t cnt, bad;

	cr_assert(top && out && scratch && seen);
	ref_run(&r, "frl.py", "%zu %zu %u", k, n, seed);
	ranks = ref_get(&r, "ranks", "<i4", &cnt);
	cr_assert_eq(cnt, k * n);
	votes = ref_get(&r, "votes", "<u4", NULL);
	glob = ref_get(&r, "global", "<i4", NULL);
	for (int l = 0; l < 2; l++) {
		leaf[l] = trib_calloc(n ? n : 1, 4);
		cr_assert(leaf[l]);
	}
	for (size_t u = 0; u < k; u++) {
		struct shm_seg seg = { .src_off = u * n * 4, .dst_elem = 0, .n_elem = n,
				       .dtype = SHM_DTYPE_I32, .scale = 1.0f };
		struct fn_input in = { .kind = SHM_DESC_UPDATE, .base = (const uint8_t *)ranks,
				       .segs = &seg, .nsegs = 1, .weight = 7.0, .share = 7.0 };
		struct fn_algo_ctx ctx = { .cfg = &cfg, .par = &par, .acc = (float *)(void *)leaf[u & 1] };

		cr_assert_eq(fn_frl_check(ranks + u * n, n, seen, &bad), 0, "ranking %zu", u);
		cr_assert_eq(fn_frl_ops.weigh(NULL, &ctx, &in), 0);
		cr_assert_eq(in.weight, 1.0, "every ranking counts once, whatever its samples");
		cr_assert_eq(fn_frl_ops.fold(NULL, &ctx, &in), 0);
	}
	for (int l = 0; l < 2; l++) {
		struct shm_seg seg = { .src_off = 0, .dst_elem = 0, .n_elem = n,
				       .dtype = SHM_DTYPE_F32, .scale = 1.0f };
		struct fn_input in = { .kind = SHM_DESC_PARTIAL, .base = (const uint8_t *)leaf[l],
				       .segs = &seg, .nsegs = 1, .weight = 1.0, .share = 1.0 };
		struct fn_algo_ctx ctx = { .cfg = &cfg, .par = &par, .acc = (float *)(void *)top };

		cr_assert_eq(fn_frl_ops.fold(NULL, &ctx, &in), 0);
	}
	cr_assert_eq(memcmp(top, votes, n * 4), 0, "k %zu n %zu: votes differ from numpy", k, n);
	cr_assert_eq(fn_frl_rank(top, n, out, scratch), 0);
	for (size_t j = 0; j < n; j++)
		cr_assert_eq(out[j], glob[j], "k %zu n %zu: global[%zu] = %d, numpy %d", k, n, j,
			     out[j], glob[j]);
	cr_assert_eq(fn_frl_check(out, n, seen, &bad), 0, "the global ranking is a permutation");
	ref_free(&r);
	for (int l = 0; l < 2; l++)
		trib_free(leaf[l]);
	trib_free(top);
	trib_free(out);
	trib_free(scratch);
	trib_free(seen);
}

Test(frl, matches_numpy_with_ties)
{
	check_frl(5, 7, 1);   /* few positions: many tied votes, broken by index */
	check_frl(12, 1000, 2);
	check_frl(1, 1, 3);
	check_frl(31, 257, 4);
}

Test(frl, table_row_is_a_base)
{
	cr_assert_eq(fn_algo_find(FN_ALGO_FRL), &fn_frl_ops);
	cr_assert_eq(fn_algo_find_name("frl"), &fn_frl_ops);
}

/* Hostile rankings: the first bad position is named, and the vote never writes out of range. */
Test(frl, check_names_first_bad_index)
{
	uint8_t seen[8];
	size_t bad = 99;
	const int32_t ok[5] = { 4, 0, 3, 1, 2 }, dup[5] = { 4, 0, 3, 0, 0 },
		      big[5] = { 4, 0, 5, 1, 2 }, neg[5] = { 4, 0, 3, -1, 2 },
		      huge[5] = { 0, 1, 2, 3, INT32_MAX };
	uint32_t votes[5] = { 0 };

	cr_assert_eq(fn_frl_check(ok, 5, seen, &bad), 0);
	cr_assert_eq(fn_frl_check(dup, 5, seen, &bad), -EINVAL);
	cr_assert_eq(bad, 3);
	cr_assert_eq(fn_frl_check(big, 5, seen, &bad), -EINVAL);
	cr_assert_eq(bad, 2);
	cr_assert_eq(fn_frl_check(neg, 5, seen, &bad), -EINVAL);
	cr_assert_eq(bad, 3);
	cr_assert_eq(fn_frl_check(huge, 5, seen, &bad), -EINVAL);
	cr_assert_eq(bad, 4);
	cr_assert_eq(fn_frl_check(ok, 4, seen, &bad), -EINVAL, "4 is out of range for n = 4");
	cr_assert_eq(bad, 0);
	cr_assert_eq(fn_frl_vote(votes, big, 5), -EINVAL);
	cr_assert_eq(fn_frl_vote(votes, neg, 5), -EINVAL);
}

/*
 * An update whose segment is neither I32 (a ranking) nor F32-labelled 4-byte cells (the tcp
 * baseline's votes, runtime/node/rt_tree.c) fails the fold: F16, BF16, I8. Float models never
 * reach an FRL job's fold: the gateway refuses them (runtime/api/rt_api_frl.c).
 */
Test(frl, fold_refuses_float_updates)
{
	uint16_t x[4] = { 0 };
	uint32_t acc[4] = { 0 };
	struct shm_seg seg = { .src_off = 0, .n_elem = 4, .dtype = SHM_DTYPE_F16, .scale = 1.0f };
	struct fn_input in = { .kind = SHM_DESC_UPDATE, .base = (const uint8_t *)x, .segs = &seg,
			       .nsegs = 1 };
	struct fn_algo_ctx ctx = { .acc = (float *)(void *)acc };

	cr_assert_eq(fn_frl_ops.fold(NULL, &ctx, &in), -EINVAL);
	seg.dtype = SHM_DTYPE_I8;
	cr_assert_eq(fn_frl_ops.fold(NULL, &ctx, &in), -EINVAL);
}

/* tcp: an update sent as its votes (F32-labelled cells) adds as a ranking's scatter would. */
Test(frl, fold_tcp_votes_equal_the_ranking)
{
	int32_t p[4] = { 2, 0, 3, 1 };
	uint32_t v[4] = { 0 }, a1[4] = { 0 }, a2[4] = { 0 };
	struct shm_seg seg = { .src_off = 0, .n_elem = 4, .dtype = SHM_DTYPE_I32, .scale = 1.0f };
	struct fn_input in = { .kind = SHM_DESC_UPDATE, .base = (const uint8_t *)p, .segs = &seg,
			       .nsegs = 1 };
	struct fn_algo_ctx ctx = { .acc = (float *)(void *)a1 };

	cr_assert_eq(fn_frl_ops.fold(NULL, &ctx, &in), 0);
	cr_assert_eq(fn_frl_vote(v, p, 4), 0);
	seg.dtype = SHM_DTYPE_F32;
	in.base = (const uint8_t *)v;
	ctx.acc = (float *)(void *)a2;
	cr_assert_eq(fn_frl_ops.fold(NULL, &ctx, &in), 0);
	cr_assert_eq(memcmp(a1, a2, sizeof(a1)), 0);
	cr_assert_eq(a1[2], 0);
	cr_assert_eq(a1[1], 3);
}

Test(frl, vote_bound)
{
	cr_assert(fn_frl_votes_fit(1, 1));
	cr_assert(fn_frl_votes_fit(1000, 4000001));          /* 4e9 < 2^32 */
	cr_assert(fn_frl_votes_fit(1000, 4294968));          /* 1000 * 4294967 <= 2^32 - 1 */
	cr_assert(!fn_frl_votes_fit(1000, 4294969));         /* 1000 * 4294968 > 2^32 - 1 */
	cr_assert(fn_frl_votes_fit(1, (uint64_t)UINT32_MAX + 1));
	cr_assert(!fn_frl_votes_fit(2, (uint64_t)UINT32_MAX));
	cr_assert(!fn_frl_votes_fit(UINT64_MAX, 3));
}

static int cmp_key(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/*
 * The radix sort against a comparison sort of (vote, index) keys, over the whole uint32 range
 * of votes (every digit pass runs), with many ties (few distinct high digits), and with every
 * vote equal (every pass skipped: the identity).
 */
Test(frl, rank_equals_a_stable_sort_over_the_full_range)
{
	size_t n = 5000;
	uint32_t *v = trib_malloc(n * 4);
	int32_t *out = trib_malloc(n * 4);
	uint64_t *scratch = trib_malloc(n * 16), *keys = trib_malloc(n * 8), x = 88172645463325252ull;

	cr_assert(v && out && scratch && keys);
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			v[i] = round == 0 ? (uint32_t)x : round == 1 ? (uint32_t)(x % 7) << 29 : 42;
			keys[i] = (uint64_t)v[i] << 32 | i;
		}
		qsort(keys, n, 8, cmp_key);
		cr_assert_eq(fn_frl_rank(v, n, out, scratch), 0);
		for (size_t j = 0; j < n; j++)
			cr_assert_eq(out[j], (int32_t)(uint32_t)keys[j], "round %d: position %zu",
				     round, j);
	}
	trib_free(v);
	trib_free(out);
	trib_free(scratch);
	trib_free(keys);
}
