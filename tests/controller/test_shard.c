// SPDX-License-Identifier: MIT
/* Tests for the partition of a robust round's coordinates over its nodes (ctl_shard.h). */
#include <criterion/criterion.h>
#include <errno.h>

#include "ctl_shard.h"

struct row {
	uint32_t counts[4];
	uint32_t nnodes;
	uint64_t n;
	/* per rank: lo, hi; UINT64_MAX: owns nothing */
	uint64_t lo[4], hi[4];
};

#define NONE UINT64_MAX

Test(ctl_shard, table)
{
	static const struct row rows[] = {
	    /* three equal nodes over 10 coordinates: 3, 3, 4 */
	    {{5, 5, 5}, 3, 10, {0, 3, 6}, {3, 6, 10}},
	    /* the middle node folded nothing: two owners */
	    {{7, 0, 13}, 3, 10, {0, NONE, 5}, {5, NONE, 10}},
	    /* one owner takes everything */
	    {{0, 20, 0}, 3, 1000, {NONE, 0, NONE}, {NONE, 1000, NONE}},
	    /* fewer coordinates than owners: some ranges are empty, none overlap */
	    {{1, 1, 1, 1}, 4, 2, {0, 0, 1, 1}, {0, 1, 1, 2}},
	    /* unequal counts do not change the split: coordinates, not updates */
	    {{1, 18, 1}, 3, 9, {0, 3, 6}, {3, 6, 9}},
	};

	for (size_t t = 0; t < sizeof(rows) / sizeof(rows[0]); t++) {
		const struct row *r = &rows[t];

		for (uint32_t k = 0; k < r->nnodes; k++) {
			uint64_t lo = 0, hi = 0;
			int err = ctl_shard_range(r->counts, r->nnodes, k, r->n, &lo, &hi);

			if (r->lo[k] == NONE) {
				cr_expect_eq(err, -ENOENT, "row %zu rank %u", t, k);
				continue;
			}
			cr_expect_eq(err, 0, "row %zu rank %u", t, k);
			cr_expect_eq(lo, r->lo[k], "row %zu rank %u: lo %llu", t, k,
				     (unsigned long long)lo);
			cr_expect_eq(hi, r->hi[k], "row %zu rank %u: hi %llu", t, k,
				     (unsigned long long)hi);
		}
	}
}

Test(ctl_shard, ranges_cover_the_model_once_and_differ_by_at_most_one)
{
	uint32_t counts[8];

	for (uint32_t mask = 1; mask < 256; mask++) {
		for (uint32_t r = 0; r < 8; r++)
			counts[r] = (mask >> r) & 1 ? r + 1 : 0;
		for (uint64_t n = 1; n < 40; n += 3) {
			uint64_t next = 0, min = UINT64_MAX, max = 0;

			for (uint32_t r = 0; r < 8; r++) {
				uint64_t lo, hi;

				if (ctl_shard_range(counts, 8, r, n, &lo, &hi))
					continue;
				cr_assert_eq(lo, next, "mask %u n %llu rank %u", mask,
					     (unsigned long long)n, r);
				next = hi;
				min = hi - lo < min ? hi - lo : min;
				max = hi - lo > max ? hi - lo : max;
			}
			cr_assert_eq(next, n);
			cr_assert_leq(max - min, 1);
		}
	}
}

Test(ctl_shard, no_overflow_on_huge_models)
{
	uint32_t counts[3] = {1, 1, 1};
	uint64_t lo, hi, n = UINT64_MAX / 2;

	cr_assert_eq(ctl_shard_range(counts, 3, 2, n, &lo, &hi), 0);
	cr_expect_eq(hi, n);
	cr_expect_eq(lo, n / 3 * 2 + n % 3 * 2 / 3);
	cr_assert_eq(ctl_shard_range(counts, 3, 1, n, &lo, &hi), 0);
	cr_expect_eq(hi, n / 3 * 2 + n % 3 * 2 / 3);
}

Test(ctl_shard, round_wide_index_is_node_by_node)
{
	uint32_t counts[4] = {3, 0, 5, 2};

	cr_expect_eq(ctl_shard_first(counts, 4, 0), 0u);
	cr_expect_eq(ctl_shard_first(counts, 4, 1), 3u);
	cr_expect_eq(ctl_shard_first(counts, 4, 2), 3u);
	cr_expect_eq(ctl_shard_first(counts, 4, 3), 8u);
	cr_expect_eq(ctl_shard_total(counts, 4), 10u);
	cr_expect_eq(ctl_shard_owners(counts, 4), 3u);
	cr_expect_eq(ctl_shard_range(counts, 4, 9, 10, &(uint64_t){0}, &(uint64_t){0}), -ENOENT);
}
