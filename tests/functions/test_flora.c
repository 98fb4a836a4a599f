// SPDX-License-Identifier: MIT
/* FLoRA (functions/fn_flora.c) against numpy (ref/flora.py): ranks differ per client. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "fn_flora.h"
#include "ref/ref.h"
#include "trib_alloc.h"

#define MAXK 16

/*
 * K clients of ranks @rk placed in slots of a pair with S = K + 1 slots (one left empty, as when
 * a client does not arrive), in two leaves whose partials are added cell by cell (the tree's
 * fold), then finished and packed: B_stack A_stack must equal numpy's sum_k p_k B_k A_k to 1e-5.
 */
static void check_flora(size_t m, size_t n, size_t R, const uint32_t *rk, size_t K, unsigned seed)
{
	char args[256];
	size_t S = K + 1, cols = S * R, used, off_a = 0, off_b = 0, len = 0, rank_sum = 0;
	float *a_leaf[2], *b_leaf[2], *a_top, *b_top, *Wm = trib_malloc(m * n * 4);
	const float *a, *b, *base;
	const double *w, *prod, *merged;
	uint32_t slot_rank[MAXK + 1] = { 0 };
	double W = 0, worst = 0;
	struct ref r;

	cr_assert(K <= MAXK && Wm);
	for (size_t k = 0; k < K; k++)
		len += (size_t)snprintf(args + len, sizeof(args) - len, " %u", rk[k]);
	ref_run(&r, "flora.py", "%zu %zu %zu %u%s", m, n, R, seed, args);
	a = ref_f32(&r, "a", NULL);
	b = ref_f32(&r, "b", NULL);
	w = ref_f64(&r, "w", NULL);
	base = ref_f32(&r, "base", NULL);
	prod = ref_f64(&r, "prod", NULL);
	merged = ref_f64(&r, "merged", NULL);
	for (int l = 0; l < 2; l++) {
		a_leaf[l] = trib_calloc(cols * n, 4);
		b_leaf[l] = trib_calloc(m * cols, 4);
		cr_assert(a_leaf[l] && b_leaf[l]);
	}
	a_top = trib_calloc(cols * n, 4);
	b_top = trib_calloc(m * cols, 4);
	cr_assert(a_top && b_top);
	for (size_t k = 0; k < K; k++) {
		/* Slot k + (k >= 1): slot 1 stays empty, so packing has a gap to close. */
		size_t s = k + (k >= 1);

		cr_assert_eq(fn_flora_place(a_leaf[k & 1], b_leaf[k & 1], m, n, R, S, s, rk[k],
					    a + off_a, b + off_b, w[k]),
			     0);
		slot_rank[s] = rk[k];
		off_a += rk[k] * n;
		off_b += m * rk[k];
		W += w[k];
		rank_sum += rk[k];
	}
	for (int l = 0; l < 2; l++) {
		for (size_t i = 0; i < cols * n; i++)
			a_top[i] += a_leaf[l][i];
		for (size_t i = 0; i < m * cols; i++)
			b_top[i] += b_leaf[l][i];
	}
	cr_assert_eq(fn_flora_finish(a_top, cols, n, W), 0);
	used = fn_flora_pack(a_top, b_top, m, n, R, S, slot_rank);
	cr_assert_eq(used, rank_sum);
	for (size_t i = 0; i < m; i++)
		for (size_t j = 0; j < n; j++) {
			double acc = 0;

			for (size_t q = 0; q < cols; q++) /* the padded tail included: it must be 0 */
				acc += (double)b_top[i * cols + q] * (double)a_top[q * n + j];
			worst = fmax(worst, fabs(acc - prod[i * n + j]));
		}
	cr_assert_lt(worst, 1e-5, "m %zu n %zu R %zu: |B A - sum p B_k A_k| = %g", m, n, R, worst);
	memcpy(Wm, base, m * n * 4);
	fn_flora_merge(Wm, a_top, b_top, m, n, cols, used);
	worst = 0;
	for (size_t i = 0; i < m * n; i++)
		worst = fmax(worst, fabs((double)Wm[i] - merged[i]));
	cr_assert_lt(worst, 1e-5, "merge: %g from numpy", worst);
	ref_free(&r);
	for (int l = 0; l < 2; l++) {
		trib_free(a_leaf[l]);
		trib_free(b_leaf[l]);
	}
	trib_free(a_top);
	trib_free(b_top);
	trib_free(Wm);
}

Test(flora, product_identity_heterogeneous_ranks)
{
	const uint32_t r1[] = { 2, 4, 8 }, r2[] = { 8, 2, 2, 4, 8, 4, 2, 8, 4, 2, 4, 8 },
		       r3[] = { 1 };

	check_flora(16, 24, 8, r1, 3, 1);
	check_flora(32, 20, 8, r2, 12, 2);
	check_flora(5, 3, 1, r3, 1, 3);
}

Test(flora, bad_placement_refused)
{
	float a[4 * 2] = { 0 }, b[2 * 4] = { 0 }, x[2] = { 1, 1 };
	uint32_t ranks[2] = { 3, 1 };

	cr_assert_eq(fn_flora_place(a, b, 2, 2, 2, 2, 2, 1, x, x, 1.0), -EINVAL, "slot >= S");
	cr_assert_eq(fn_flora_place(a, b, 2, 2, 2, 2, 0, 3, x, x, 1.0), -EINVAL, "rank > R");
	cr_assert_eq(fn_flora_place(a, b, 2, 2, 2, 2, 0, 1, x, x, 0.0), -EINVAL, "weight 0");
	cr_assert_eq(fn_flora_finish(a, 4, 2, 0.0), -EDOM);
	cr_assert_eq(fn_flora_pack(a, b, 2, 2, 2, 2, ranks), (size_t)-1, "rank 3 > R 2");
}
