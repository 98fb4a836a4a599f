// SPDX-License-Identifier: MIT
/* Tests of the exact robust rules against tests/functions/ref/robust.py, shard by shard. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "fn_robust.h"
#include "ref/ref.h"
#include "trib_alloc.h"

#define MAX_K 64

/* rows[i] = base + i*n + lo: client i's values for the shard [lo, lo + n). */
static void shard_rows(const float *base, size_t k, size_t n_total, size_t lo, const float **rows)
{
	for (size_t i = 0; i < k; i++)
		rows[i] = base + i * n_total + lo;
}

/* Uneven shard boundaries over [0, n): the result must not depend on where the cuts fall. */
static size_t shard_cuts(size_t n, size_t *cuts)
{
	cuts[0] = 0;
	cuts[1] = n / 3 + 1 < n ? n / 3 + 1 : n;
	cuts[2] = n - n / 5;
	cuts[3] = n;
	return 3;
}

/* Median and trimmed mean over case @ci's k rows of the reference, computed in three shards. */
static void check_coord(const struct ref *r, size_t ci, size_t k, size_t n, double trim)
{
	const float *rows[MAX_K];
	const float *x, *med, *tm;
	char name[32];
	size_t cuts[4], ns, s, c, cnt;
	float *out_med = trib_malloc(n * sizeof(float));
	float *out_tm = trib_malloc(n * sizeof(float));
	float *scratch = trib_malloc(FN_ROBUST_SCRATCH(k) * sizeof(float));

	cr_assert(out_med && out_tm && scratch && k <= MAX_K);
	snprintf(name, sizeof(name), "rows_%zu", ci);
	x = ref_f32(r, name, &cnt);
	cr_assert_eq(cnt, k * n);
	snprintf(name, sizeof(name), "median_%zu", ci);
	med = ref_f32(r, name, NULL);
	snprintf(name, sizeof(name), "tmean_%zu", ci);
	tm = ref_f32(r, name, NULL);
	snprintf(name, sizeof(name), "cut_%zu", ci);
	cr_assert_eq(fn_robust_trim_count(trim, k, &c), 0);
	cr_assert_eq(c, ref_u64(r, name, NULL)[0], "k %zu trim %g: cut count differs from scipy's",
		     k, trim);

	ns = shard_cuts(n, cuts);
	for (s = 0; s < ns; s++) {
		shard_rows(x, k, n, cuts[s], rows);
		cr_assert_eq(fn_robust_median(rows, k, cuts[s + 1] - cuts[s], out_med + cuts[s],
					      scratch),
			     0);
		cr_assert_eq(fn_robust_trimmed_mean(rows, k, cuts[s + 1] - cuts[s], trim,
						    out_tm + cuts[s], scratch),
			     0);
	}
	/* Median: the same value (or the same double mean of two) rounded once: exact. */
	ref_expect_f32(out_med, med, n, 0, "median");
	/* Trimmed mean: a double sum in another order, rounded once to f32: at most 1 ulp. */
	ref_expect_f32(out_tm, tm, n, 1, "trimmed mean");
	trib_free(scratch);
	trib_free(out_tm);
	trib_free(out_med);
}

Test(functions_robust, median_and_trimmed_mean_match_numpy_and_scipy)
{
	/* Odd and even k, small k (insertion sort only) and large (selection). */
	static const size_t ks[] = { 1, 2, 3, 4, 7, 20, 33, 64 };
	static const double trims[] = { 0.0, 0.1, 0.2, 0.29, 0.49, 0.0, 0.1, 0.2 };
	const size_t nc = sizeof(ks) / sizeof(ks[0]), n = 203;
	char args[512];
	size_t i, len;
	struct ref r;

	len = (size_t)snprintf(args, sizeof(args), "coord %zu 100", n);
	for (i = 0; i < nc; i++)
		len += (size_t)snprintf(args + len, sizeof(args) - len, " %zu:%.17g", ks[i],
					trims[i]);
	cr_assert_lt(len, sizeof(args));
	ref_run(&r, "robust.py", "%s", args);
	for (i = 0; i < nc; i++)
		check_coord(&r, i, ks[i], n, trims[i]);
	ref_free(&r);
}

Test(functions_robust, selection_survives_adversarial_orders)
{
	/* Sorted, reversed, all equal, organ pipe, and median-of-3 unfriendly inputs. */
	enum { K = 61 };
	float vals[K], col[K], scratch[FN_ROBUST_SCRATCH(K)], out, sorted[K];
	const float *rows[K];
	size_t pat, i;

	for (i = 0; i < K; i++)
		rows[i] = &col[i];
	for (pat = 0; pat < 5; pat++) {
		for (i = 0; i < K; i++) {
			switch (pat) {
			case 0: vals[i] = (float)i; break;
			case 1: vals[i] = (float)(K - i); break;
			case 2: vals[i] = 3.0f; break;
			case 3: vals[i] = (float)(i < K / 2 ? i : K - i); break;
			default: vals[i] = (float)((i * 37) % 7); break;
			}
		}
		memcpy(col, vals, sizeof(vals));
		memcpy(sorted, vals, sizeof(vals));
		for (size_t a = 1; a < K; a++)
			for (size_t b = a; b > 0 && sorted[b - 1] > sorted[b]; b--) {
				float t = sorted[b];

				sorted[b] = sorted[b - 1];
				sorted[b - 1] = t;
			}
		cr_assert_eq(fn_robust_median(rows, K, 1, &out, scratch), 0);
		cr_assert_eq(out, sorted[K / 2], "pattern %zu", pat);
	}
}

Test(functions_robust, invalid_counts_are_einval)
{
	size_t c;
	float out, scratch[FN_ROBUST_SCRATCH(1)];
	const float *rows[1] = { &out };

	cr_assert_eq(fn_robust_median(rows, 0, 1, &out, scratch), -EINVAL);
	cr_assert_eq(fn_robust_trim_count(0.5, 10, &c), -EINVAL);
	cr_assert_eq(fn_robust_trim_count(-0.1, 10, &c), -EINVAL);
	cr_assert_eq(fn_robust_trim_count(NAN, 10, &c), -EINVAL);
	cr_assert_eq(fn_robust_trim_count(0.2, 0, &c), -EINVAL);
	cr_assert_eq(fn_robust_trim_count(0.2, 10, &c), 0);
	cr_assert_eq(c, 2);
}

static void check_krum(size_t k, size_t n, size_t f, size_t m, unsigned seed)
{
	const float *rows[MAX_K];
	struct ref r;
	const float *x, *mean;
	const double *d_ref, *sc_ref;
	const uint64_t *sel_ref;
	double *d = trib_calloc(k * k, sizeof(double));
	double scores[MAX_K], scratch[2 * MAX_K];
	uint32_t sel[MAX_K];
	size_t cuts[4], ns, s, cnt;
	float *out = trib_malloc(n * sizeof(float));

	cr_assert(d && out && k <= MAX_K);
	ref_run(&r, "robust.py", "krum %zu %zu %zu %zu %u", k, n, f, m, seed);
	x = ref_f32(&r, "rows", NULL);
	d_ref = ref_f64(&r, "d", NULL);
	sc_ref = ref_f64(&r, "scores", NULL);
	sel_ref = ref_u64(&r, "selected", &cnt);
	cr_assert_eq(cnt, m);
	mean = ref_f32(&r, "mean", NULL);

	/* Phase 1, per shard: partial distances, summed into one matrix. */
	ns = shard_cuts(n, cuts);
	for (s = 0; s < ns; s++) {
		shard_rows(x, k, n, cuts[s], rows);
		fn_robust_pdist_partial(rows, k, cuts[s + 1] - cuts[s], d);
	}
	ref_expect_f64(d, d_ref, k * k, 1e-12, 0, "distances");
	/* Top: scores and selection. */
	cr_assert_eq(fn_krum_select(d, k, f, m, sel, scores, scratch), 0);
	ref_expect_f64(scores, sc_ref, k, 1e-12, 0, "scores");
	for (s = 0; s < m; s++)
		cr_assert_eq(sel[s], sel_ref[s], "selected[%zu] = %u, numpy %llu", s, sel[s],
			     (unsigned long long)sel_ref[s]);
	/* Phase 2, per shard: the mean of the selected rows. */
	for (s = 0; s < ns; s++) {
		shard_rows(x, k, n, cuts[s], rows);
		cr_assert_eq(fn_robust_mean_rows(rows, k, sel, m, cuts[s + 1] - cuts[s],
						 out + cuts[s]),
			     0);
	}
	ref_expect_f32(out, mean, n, 1, "multi-krum mean");
	trib_free(out);
	trib_free(d);
	ref_free(&r);
}

Test(functions_robust, krum_and_multi_krum_match_numpy_over_shards)
{
	check_krum(20, 1001, 4, 1, 5);   /* Krum */
	check_krum(20, 1001, 4, 10, 6);  /* Multi-Krum */
	check_krum(11, 300, 4, 7, 7);    /* k = 2f + 3, the smallest allowed; m = k - f */
	check_krum(33, 77, 2, 20, 8);
}

Test(functions_robust, krum_ties_go_to_the_lower_index)
{
	enum { K = 9 };
	double d[K * K], scratch[2 * K];
	uint32_t sel[K];

	/* Everyone at distance 1 from everyone: all scores equal. */
	for (size_t i = 0; i < K * K; i++)
		d[i] = i % (K + 1) ? 1.0 : 0.0;
	cr_assert_eq(fn_krum_select(d, K, 2, 5, sel, NULL, scratch), 0);
	for (uint32_t i = 0; i < 5; i++)
		cr_assert_eq(sel[i], i);
	cr_assert_eq(fn_krum_select(d, K, 4, 1, sel, NULL, scratch), -EINVAL); /* k < 2f+3 */
	cr_assert_eq(fn_krum_select(d, K, 2, 8, sel, NULL, scratch), -EINVAL); /* m > k-f */
	cr_assert_eq(fn_krum_select(d, K, 2, 0, sel, NULL, scratch), -EINVAL);
}

Test(functions_robust, clipping_matches_numpy_over_shards)
{
	enum { K = 6, N = 515 };
	struct ref r;
	const float *x, *scale_ref, *clipped;
	const double *sumsq_ref;
	size_t cuts[4], ns, s, i;
	double sumsq[K] = { 0 };
	float scale, got[N];

	ref_run(&r, "robust.py", "clip %d %d 9 2.5", K, N);
	x = ref_f32(&r, "rows", NULL);
	sumsq_ref = ref_f64(&r, "sumsq", NULL);
	scale_ref = ref_f32(&r, "scale", NULL);
	clipped = ref_f32(&r, "clipped", NULL);
	ns = shard_cuts(N, cuts);
	for (i = 0; i < K; i++)
		for (s = 0; s < ns; s++)
			fn_robust_sumsq_partial(x + i * N + cuts[s], cuts[s + 1] - cuts[s],
						&sumsq[i]);
	ref_expect_f64(sumsq, sumsq_ref, K, 1e-13, 0, "sum of squares");
	for (i = 0; i < K; i++) {
		cr_assert_eq(fn_robust_clip_scale(sumsq[i], 2.5, &scale), 0);
		cr_assert_eq(scale, scale_ref[i], "client %zu: scale %.9g, numpy %.9g", i,
			     (double)scale, (double)scale_ref[i]);
		cr_assert_leq(scale, 1.0f);
		for (s = 0; s < N; s++)
			got[s] = x[i * N + s] * scale;
		ref_expect_f32(got, clipped + i * N, N, 0, "clipped");
	}
	cr_assert_eq(fn_robust_clip_scale(1.0, 0.0, &scale), -EINVAL);
	cr_assert_eq(fn_robust_clip_scale(-1.0, 1.0, &scale), -EINVAL);
	cr_assert_eq(fn_robust_clip_scale(0.0, 1.0, &scale), 0);
	cr_assert_eq(scale, 1.0f);
	ref_free(&r);
}

/*
 * Issue 6's acceptance case: 20 clients, 4 sending the same poisoned vector. Median, trimmed mean
 * (trim 0.2) and Multi-Krum (f = 4) stay within the honest clients' range in every coordinate;
 * the plain mean (FedAvg) does not.
 */
Test(functions_robust, poisoned_minority_moves_fedavg_but_not_robust_rules)
{
	enum { K = 20, N = 500, P = 4 };
	const float *rows[K];
	struct ref r;
	const float *x, *lo, *hi, *med_ref;
	float med[N], tm[N], krum[N], mean[N], scratch[FN_ROBUST_SCRATCH(K)];
	double *d = trib_calloc(K * K, sizeof(double)), dscratch[2 * K];
	uint32_t sel[10];
	size_t i, j, outside = 0;

	cr_assert_not_null(d);
	ref_run(&r, "robust.py", "poison %d %d %d 12", K, N, P);
	x = ref_f32(&r, "rows", NULL);
	lo = ref_f32(&r, "lo", NULL);
	hi = ref_f32(&r, "hi", NULL);
	med_ref = ref_f32(&r, "median", NULL);
	shard_rows(x, K, N, 0, rows);

	cr_assert_eq(fn_robust_median(rows, K, N, med, scratch), 0);
	ref_expect_f32(med, med_ref, N, 0, "median");
	cr_assert_eq(fn_robust_trimmed_mean(rows, K, N, 0.2, tm, scratch), 0);
	fn_robust_pdist_partial(rows, K, N, d);
	cr_assert_eq(fn_krum_select(d, K, P, 10, sel, NULL, dscratch), 0);
	for (i = 0; i < 10; i++)
		cr_assert_lt(sel[i], K - P, "Multi-Krum picked poisoned client %u", sel[i]);
	cr_assert_eq(fn_robust_mean_rows(rows, K, sel, 10, N, krum), 0);
	for (j = 0; j < N; j++) {
		double s = 0;

		for (i = 0; i < K; i++)
			s += x[i * N + j];
		mean[j] = (float)(s / K);
	}
	for (j = 0; j < N; j++) {
		cr_assert(med[j] >= lo[j] && med[j] <= hi[j], "median left the honest range at %zu",
			  j);
		cr_assert(tm[j] >= lo[j] && tm[j] <= hi[j], "trimmed mean left it at %zu", j);
		cr_assert(krum[j] >= lo[j] && krum[j] <= hi[j], "Multi-Krum left it at %zu", j);
		outside += mean[j] < lo[j] || mean[j] > hi[j];
	}
	cr_assert_eq(outside, N, "FedAvg stayed in the honest range at %zu coordinates",
		     N - outside);
	trib_free(d);
	ref_free(&r);
}
