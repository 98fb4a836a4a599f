// SPDX-License-Identifier: MIT
/* Tests of the sparse fold: equal to the dense fold of the densified update; hostile indices. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fn_fold.h"
#include "fn_sparse.h"
#include "trib_alloc.h"

static const char *const impls[] = { "generic", "avx2+fma" };

/* A deterministic pseudo-random float in (-2, 2) with a full mantissa. */
static float rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((double)(*s >> 11) / (double)(1ull << 53) * 4.0 - 2.0);
}

/* n sorted distinct indices in [0, size) (every stride-th, offset), as I32 and I64. */
static void make_idx(int32_t *i32, int64_t *i64, size_t n, size_t stride, size_t off)
{
	for (size_t i = 0; i < n; i++) {
		i32[i] = (int32_t)(off + i * stride);
		i64[i] = (int64_t)(off + i * stride);
	}
}

Test(fn_sparse, equals_the_dense_fold_of_the_densified_update)
{
	const size_t size = 10007, n = 997, stride = 10;
	float *acc_s = trib_malloc(size * 4), *acc_d = trib_malloc(size * 4);
	float *dense = trib_calloc(size, 4), *vals = trib_malloc(n * 4);
	int32_t *i32 = trib_malloc(n * 4);
	int64_t *i64 = trib_malloc(n * 8);
	uint64_t s = 7;
	double sq = 0;

	cr_assert(acc_s && acc_d && dense && vals && i32 && i64);
	make_idx(i32, i64, n, stride, 3);
	for (size_t i = 0; i < n; i++) {
		vals[i] = rnd(&s);
		dense[3 + i * stride] = vals[i];
		sq += (double)vals[i] * vals[i];
	}
	cr_assert_eq(fn_sparse_check(i32, FN_SPARSE_I32, n, size, NULL), 0);
	cr_assert_eq(fn_sparse_check(i64, FN_SPARSE_I64, n, size, NULL), 0);
	for (size_t m = 0; m < 2; m++) {
		if (fn_fold_set_impl(impls[m]) == -ENOTSUP)
			continue;
		for (int t = 0; t < 2; t++) {
			uint64_t s2 = 99;

			for (size_t i = 0; i < size; i++)
				acc_s[i] = acc_d[i] = rnd(&s2) + 0.5f; /* no -0.0: see fn_sparse.h */
			/* Three updates of different weights into the same accumulator. */
			for (int u = 0; u < 3; u++) {
				float w = 0.3f + (float)u * 1.7f;

				fn_fold_f32(acc_d, dense, w, size);
				fn_sparse_fold_f32(acc_s, t ? (void *)i64 : (void *)i32,
						   t ? FN_SPARSE_I64 : FN_SPARSE_I32, vals, w, n);
			}
			cr_assert_eq(memcmp(acc_s, acc_d, size * 4), 0,
				     "%s %s: sparse fold differs from the dense one", impls[m],
				     t ? "I64" : "I32");
		}
	}
	cr_assert_eq(fn_fold_set_impl("generic"), 0);
	cr_assert_eq(fn_sparse_sqnorm_f32(vals, n), sq);
	cr_assert_eq(fn_sparse_sqnorm_f32(vals, 0), 0.0);
	trib_free(acc_s);
	trib_free(acc_d);
	trib_free(dense);
	trib_free(vals);
	trib_free(i32);
	trib_free(i64);
}

Test(fn_sparse, hostile_indices_are_refused_at_the_first_offender)
{
	static const struct {
		int64_t idx[6];
		size_t n;
		uint64_t size;
		int err;
		size_t bad;
		const char *what;
	} cases[] = {
		{ { 0, 1, 2 }, 3, 3, 0, 0, "every index of a small tensor" },
		{ { 0 }, 0, 0, 0, 0, "empty on an empty tensor" },
		{ { 0, 1, 3 }, 3, 3, -ERANGE, 2, "index == size" },
		{ { 5, 7, 1000000 }, 3, 100, -ERANGE, 2, "far out of range" },
		{ { -1, 0, 1 }, 3, 10, -ERANGE, 0, "negative" },
		{ { 0, 2, 2, 3 }, 4, 10, -EEXIST, 2, "duplicate" },
		/* More indices than elements: one must repeat or fall out of range. */
		{ { 0, 1, 2, 0 }, 4, 3, -EDOM, 3, "more indices than elements" },
		{ { 0, 1, 2, 2 }, 4, 3, -EEXIST, 3, "more indices than elements, repeated" },
		{ { 0, 4, 3 }, 3, 10, -EDOM, 2, "not sorted" },
		{ { 9, 8, 8 }, 3, 10, -EDOM, 1, "descending" },
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int32_t i32[6];
		size_t bad = 77;
		int err;

		for (size_t i = 0; i < 6; i++)
			i32[i] = (int32_t)cases[c].idx[i];
		int want = cases[c].err;

		err = fn_sparse_check(cases[c].idx, FN_SPARSE_I64, cases[c].n, cases[c].size, &bad);
		cr_assert_eq(err, want, "I64 %s: %d", cases[c].what, err);
		cr_assert_eq(bad, cases[c].bad, "I64 %s: at %zu", cases[c].what, bad);
		err = fn_sparse_check(i32, FN_SPARSE_I32, cases[c].n, cases[c].size, &bad);
		cr_assert_eq(err, want, "I32 %s: %d", cases[c].what, err);
		cr_assert_eq(bad, cases[c].bad, "I32 %s: at %zu", cases[c].what, bad);
	}
	/* An I64 index above INT32_MAX and one above 2^63 (negative as int64). */
	int64_t big[2] = { (int64_t)1 << 40, INT64_MIN };
	size_t bad = 9;

	cr_assert_eq(fn_sparse_check(big, FN_SPARSE_I64, 1, (uint64_t)1 << 41, &bad), 0);
	cr_assert_eq(fn_sparse_check(big + 1, FN_SPARSE_I64, 1, UINT64_MAX, &bad), -ERANGE);
	cr_assert_eq(fn_sparse_check(big, 3, 1, 10, &bad), -EINVAL);
	cr_assert_eq(bad, 0);
}
