// SPDX-License-Identifier: MIT
/* Bulyan (functions/fn_bulyan.c) against numpy (ref/bulyan.py), computed in uneven shards. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>

#include "fn_bulyan.h"
#include "fn_robust.h"
#include "ref/ref.h"
#include "trib_alloc.h"

#define MAX_K 64

static void check_bulyan(size_t k, size_t n, size_t f, unsigned seed)
{
	const float *rows[MAX_K];
	const float *x, *agg, *honest;
	const double *d_ref;
	const uint64_t *sel_ref;
	double *d = trib_calloc(k * k, sizeof(double));
	double scratch[2 * MAX_K];
	uint32_t sel[MAX_K];
	float fscratch[MAX_K];
	size_t cuts[4] = { 0, n / 3 + 1, n - n / 5, n }, theta = k - 2 * f, s, i, cnt;
	float *out = trib_malloc(n * sizeof(float));
	struct ref r;
	double far = 0.0;

	cr_assert(d && out && k <= MAX_K);
	ref_run(&r, "bulyan.py", "%zu %zu %zu %u", k, n, f, seed);
	x = ref_f32(&r, "rows", NULL);
	d_ref = ref_f64(&r, "d", NULL);
	sel_ref = ref_u64(&r, "selected", &cnt);
	agg = ref_f32(&r, "agg", NULL);
	honest = ref_f32(&r, "honest", NULL);
	cr_assert_eq(cnt, theta);
	for (s = 0; s < 3; s++) {
		for (i = 0; i < k; i++)
			rows[i] = x + i * n + cuts[s];
		fn_robust_pdist_partial(rows, k, cuts[s + 1] - cuts[s], d);
	}
	ref_expect_f64(d, d_ref, k * k, 1e-12, 0, "distances");
	cr_assert_eq(fn_bulyan_select(d, k, f, sel, scratch), 0);
	for (s = 0; s < theta; s++)
		cr_assert_eq(sel[s], sel_ref[s], "k %zu f %zu: pick %zu is %u, numpy %llu", k, f, s,
			     sel[s], (unsigned long long)sel_ref[s]);
	for (s = 0; s < 3; s++) {
		for (i = 0; i < k; i++)
			rows[i] = x + i * n + cuts[s];
		cr_assert_eq(fn_bulyan_aggregate(rows, k, sel, theta, f, cuts[s + 1] - cuts[s],
						 out + cuts[s], fscratch),
			     0);
	}
	ref_expect_f32(out, agg, n, 1, "bulyan aggregate");
	/* Robust: within a few honest spreads of the honest mean, though f send 40 or -1e6. */
	for (i = 0; i < n; i++)
		far = fmax(far, fabs((double)out[i] - (double)honest[i]));
	cr_assert_lt(far, 1.5, "k %zu f %zu: %g from the honest mean", k, f, far);
	trib_free(out);
	trib_free(d);
	ref_free(&r);
}

Test(functions_bulyan, matches_numpy_over_shards)
{
	check_bulyan(20, 1001, 4, 11); /* the acceptance case: 4 Byzantine of 20 */
	check_bulyan(7, 300, 1, 12);   /* k = 4f + 3, the smallest allowed */
	check_bulyan(31, 77, 7, 13);   /* k = 4f + 3 again, the last pick with q = f - 1 < 1 */
	check_bulyan(40, 129, 3, 14);  /* f well below the bound */
}

Test(functions_bulyan, refuses_what_it_cannot_bound)
{
	double d[49] = { 0 }, scratch[14];
	uint32_t sel[7];
	const float *rows[7];
	float v[7] = { 0 }, out[1], fs[7];

	for (int i = 0; i < 7; i++)
		rows[i] = v + i;
	cr_assert_eq(fn_bulyan_check(7, 1), 0);
	cr_assert_eq(fn_bulyan_check(6, 1), -EINVAL, "k < 4f + 3");
	cr_assert_eq(fn_bulyan_check(10, 2), -EINVAL, "k < 4f + 3");
	cr_assert_eq(fn_bulyan_check(11, 2), 0);
	cr_assert_eq(fn_bulyan_check(7, 0), -EINVAL, "f = 0 is the plain mean");
	cr_assert_eq(fn_bulyan_check(2, 1), -EINVAL);
	cr_assert_eq(fn_bulyan_select(d, 6, 1, sel, scratch), -EINVAL);
	/* All distances equal: every pick is a tie, so the lowest index left goes first. */
	cr_assert_eq(fn_bulyan_select(d, 7, 1, sel, scratch), 0);
	for (uint32_t i = 0; i < 5; i++)
		cr_assert_eq(sel[i], i);
	sel[0] = 7; /* an index out of range */
	cr_assert_eq(fn_bulyan_aggregate(rows, 7, sel, 5, 1, 1, out, fs), -EINVAL);
	cr_assert_eq(fn_bulyan_aggregate(rows, 7, sel, 2, 1, 1, out, fs), -EINVAL, "theta < 2f+1");
}
