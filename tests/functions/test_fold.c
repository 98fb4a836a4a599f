// SPDX-License-Identifier: MIT
/* Tests of the fold kernels against a float64 reference, in every implementation this CPU has. */
#include <criterion/criterion.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fn_fold.h"
#include "trib_alloc.h"

static const size_t lengths[] = { 0, 1, 7, 8, 15, 16, 17, 31, 33, 1000, (1u << 20) + 3 };
#define N_LENGTHS (sizeof(lengths) / sizeof(lengths[0]))
#define BIG_N ((1u << 20) + 3)

/* Each test runs once per implementation the CPU can run. */
static const char *const impl_names[] = { "generic", "avx2+fma" };
#define N_IMPLS (sizeof(impl_names) / sizeof(impl_names[0]))

static bool use_impl(const char *name)
{
	int err = fn_fold_set_impl(name);

	if (err == -ENOTSUP)
		return false;
	cr_assert_eq(err, 0, "fn_fold_set_impl(%s) = %d", name, err);
	cr_assert_str_eq(fn_fold_impl(), name);
	return true;
}

static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
	rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
}

/* xorshift64*: reproducible data, so a failure is a failure on every run. */
static uint64_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* Uniform in [lo, hi). */
static float rng_float(float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(rng_next() >> 40) / (double)(1ull << 24));
}

static void fill_random(float *x, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		x[i] = rng_float(-1.0f, 1.0f);
}

/*
 * A buffer of n floats starting @off floats past an allocation that ends exactly at the buffer's
 * end, so ASan sees any read or write past x[n-1]. Returns the buffer; the allocation, owned by
 * the caller, goes to *base for trib_free().
 */
static float *buf_alloc(size_t n, size_t off, void **base)
{
	float *p = trib_malloc((n + off) * sizeof(float) + 1);

	cr_assert_not_null(p);
	*base = p;
	return p + off;
}

static float bits_to_float(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/* |got - ref| within 1e-6 of the magnitude of the terms that were summed. */
static void expect_close(const float *got, const double *ref, const double *mag, size_t n,
			 const char *what)
{
	size_t i;

	for (i = 0; i < n; i++) {
		double err = fabs((double)got[i] - ref[i]);

		if (err > 1e-6 * mag[i] + 1e-30)
			cr_assert_fail("%s (%s): element %zu of %zu is %.9g, reference %.9g", what,
				 fn_fold_impl(), i, n, (double)got[i], ref[i]);
	}
}

static void check_fold(size_t n, size_t acc_off, size_t x_off)
{
	void *acc_base, *x_base;
	float *acc = buf_alloc(n, acc_off, &acc_base);
	float *x = buf_alloc(n, x_off, &x_base);
	double *ref = trib_malloc(n * sizeof(double) + 1);
	double *mag = trib_malloc(n * sizeof(double) + 1);
	float w = rng_float(0.05f, 3.0f);
	size_t i;

	cr_assert(ref && mag);
	fill_random(acc, n);
	fill_random(x, n);
	for (i = 0; i < n; i++) {
		ref[i] = (double)acc[i] + (double)w * (double)x[i];
		mag[i] = fabs((double)acc[i]) + fabs((double)w * (double)x[i]);
	}
	fn_fold_f32(acc, x, w, n);
	expect_close(acc, ref, mag, n, "fold");
	trib_free(mag);
	trib_free(ref);
	trib_free(x_base);
	trib_free(acc_base);
}

Test(functions_fold, fold_matches_f64_reference_for_all_lengths_and_offsets)
{
	size_t t, l, ao, xo;

	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		rng_seed(1);
		for (l = 0; l < N_LENGTHS; l++) {
			if (lengths[l] == BIG_N) {
				check_fold(BIG_N, 0, 0);
				check_fold(BIG_N, 0, 1);
				check_fold(BIG_N, 5, 3);
				continue;
			}
			for (ao = 0; ao < 8; ao += 3)
				for (xo = 0; xo < 8; xo++)
					check_fold(lengths[l], ao, xo);
		}
	}
}

/* The data-plane modes place updates differently; the model they build must not differ. */
Test(functions_fold, fold_is_bit_identical_whatever_the_alignment)
{
	const size_t n = 1037;
	float acc0[1037], x0[1037], want[1037];
	size_t t, ao, xo;

	rng_seed(2);
	fill_random(acc0, n);
	fill_random(x0, n);
	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		memcpy(want, acc0, sizeof(want));
		fn_fold_f32(want, x0, 0.731f, n);
		for (ao = 0; ao < 8; ao++) {
			for (xo = 0; xo < 8; xo++) {
				void *acc_base, *x_base;
				float *acc = buf_alloc(n, ao, &acc_base);
				float *x = buf_alloc(n, xo, &x_base);

				memcpy(acc, acc0, sizeof(acc0));
				memcpy(x, x0, sizeof(x0));
				fn_fold_f32(acc, x, 0.731f, n);
				cr_assert(!memcmp(acc, want, sizeof(want)),
					  "%s: acc offset %zu, x offset %zu changed the result",
					  impl_names[t], ao, xo);
				trib_free(x_base);
				trib_free(acc_base);
			}
		}
	}
}

static void check_multi(size_t k, size_t n)
{
	void *acc_base, *x_base[FN_FOLD_MAX_MULTI];
	const float *xs[FN_FOLD_MAX_MULTI];
	float ws[FN_FOLD_MAX_MULTI];
	float *acc = buf_alloc(n, 1, &acc_base);
	float *seq = trib_malloc(n * sizeof(float) + 1);
	double *ref = trib_malloc(n * sizeof(double) + 1);
	double *mag = trib_malloc(n * sizeof(double) + 1);
	size_t i, j;

	cr_assert(seq && ref && mag);
	fill_random(acc, n);
	memcpy(seq, acc, n * sizeof(float));
	for (i = 0; i < n; i++) {
		ref[i] = acc[i];
		mag[i] = fabs((double)acc[i]);
	}
	for (j = 0; j < k; j++) {
		/* Offsets 0..7 floats: updates at every alignment in one call. */
		float *x = buf_alloc(n, j % 8, &x_base[j]);

		fill_random(x, n);
		xs[j] = x;
		ws[j] = rng_float(0.05f, 3.0f);
		for (i = 0; i < n; i++) {
			ref[i] += (double)ws[j] * (double)x[i];
			mag[i] += fabs((double)ws[j] * (double)x[i]);
		}
		fn_fold_f32(seq, x, ws[j], n);
	}
	fn_fold_f32_multi(acc, xs, ws, k, n);
	expect_close(acc, ref, mag, n, "multi-fold");
	cr_assert(!memcmp(acc, seq, n * sizeof(float)),
		  "%s: multi-fold of k=%zu, n=%zu differs from %zu sequential folds",
		  fn_fold_impl(), k, n, k);
	for (j = 0; j < k; j++)
		trib_free(x_base[j]);
	trib_free(mag);
	trib_free(ref);
	trib_free(seq);
	trib_free(acc_base);
}

Test(functions_fold, multi_matches_reference_and_sequential_folds_for_k_1_to_8)
{
	static const size_t ns[] = { 1, 7, 17, 33, 1000, 65536 + 5 };
	size_t t, k, l;

	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		rng_seed(3);
		for (k = 1; k <= FN_FOLD_MAX_MULTI; k++)
			for (l = 0; l < sizeof(ns) / sizeof(ns[0]); l++)
				check_multi(k, ns[l]);
	}
}

Test(functions_fold, multi_with_no_updates_leaves_acc_unchanged)
{
	float acc[19], want[19];
	size_t t;

	rng_seed(4);
	fill_random(acc, 19);
	memcpy(want, acc, sizeof(acc));
	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		fn_fold_f32_multi(acc, NULL, NULL, 0, 19);
		fn_fold_f32_multi(acc, NULL, NULL, 0, 0);
		cr_assert(!memcmp(acc, want, sizeof(acc)));
	}
}

Test(functions_fold, scale_multiplies_every_element)
{
	size_t t, l, off;

	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		rng_seed(5);
		for (l = 0; l < N_LENGTHS; l++) {
			for (off = 0; off < 8; off += 3) {
				size_t n = lengths[l], i;
				void *base;
				float *acc = buf_alloc(n, off, &base);
				float *orig = trib_malloc(n * sizeof(float) + 1);
				float s = 1.0f / 37.0f;

				cr_assert_not_null(orig);
				fill_random(acc, n);
				memcpy(orig, acc, n * sizeof(float));
				fn_scale_f32(acc, s, n);
				/* One rounded multiply either way: bit equality holds. */
				for (i = 0; i < n; i++)
					cr_assert_eq(acc[i], orig[i] * s, "%s: n=%zu i=%zu",
						     impl_names[t], n, i);
				trib_free(orig);
				trib_free(base);
			}
		}
	}
}

Test(functions_fold, check_finite_accepts_denormals_zeros_and_extremes)
{
	static const size_t ns[] = { 0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 1000, 4099 };
	const float specials[] = {
		0.0f, -0.0f, FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX, FLT_TRUE_MIN, -FLT_TRUE_MIN,
		bits_to_float(0x007fffffu), bits_to_float(0x7f7fffffu), 1e38f, -3.4e38f,
	};
	const size_t n_specials = sizeof(specials) / sizeof(specials[0]);
	size_t t, l, i;

	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		rng_seed(6);
		for (l = 0; l < sizeof(ns) / sizeof(ns[0]); l++) {
			size_t n = ns[l], bad = 12345;
			void *base;
			float *x = buf_alloc(n, 1, &base);

			fill_random(x, n);
			for (i = 0; i < n; i++)
				if (i % 3 == 0)
					x[i] = specials[(i / 3) % n_specials];
			cr_assert_eq(fn_check_finite_f32(x, n, &bad), 0, "%s: n=%zu", impl_names[t],
				     n);
			cr_assert_eq(bad, 12345, "bad_index written on success");
			cr_assert_eq(fn_check_finite_f32(x, n, NULL), 0);
			trib_free(base);
		}
	}
}

Test(functions_fold, check_finite_finds_first_nan_or_inf_in_body_and_tail)
{
	static const size_t ns[] = { 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 1000, 4099 };
	const float bads[] = {
		bits_to_float(0x7fc00000u), /* quiet NaN */
		bits_to_float(0xffc00000u), /* negative quiet NaN */
		bits_to_float(0x7f800001u), /* signalling NaN, smallest payload */
		bits_to_float(0x7f800000u), /* +Inf */
		bits_to_float(0xff800000u), /* -Inf */
	};
	size_t t, l, b, p;

	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		rng_seed(7);
		for (l = 0; l < sizeof(ns) / sizeof(ns[0]); l++) {
			size_t n = ns[l];
			/* First, middle, last of each vector block, and every tail position. */
			size_t pos[] = { 0, n / 2, n - 1, n > 1 ? n - 2 : 0, n > 7 ? n - 7 : 0,
					 n & ~(size_t)31, n & ~(size_t)7, n > 31 ? 31 : 0 };
			void *base;
			float *x = buf_alloc(n, 3, &base);

			fill_random(x, n);
			for (b = 0; b < sizeof(bads) / sizeof(bads[0]); b++) {
				for (p = 0; p < sizeof(pos) / sizeof(pos[0]); p++) {
					size_t at = pos[p] < n ? pos[p] : n - 1, bad = 0;
					float saved = x[at];

					x[at] = bads[b];
					cr_assert_eq(fn_check_finite_f32(x, n, &bad), -EDOM,
						     "%s: n=%zu at=%zu", impl_names[t], n, at);
					cr_assert_eq(bad, at, "%s: n=%zu reported %zu, want %zu",
						     impl_names[t], n, bad, at);
					cr_assert_eq(fn_check_finite_f32(x, n, NULL), -EDOM);
					/* A later bad value does not hide the first one. */
					if (at + 1 < n) {
						float next = x[n - 1];

						x[n - 1] = bads[(b + 1) % 5];
						cr_assert_eq(fn_check_finite_f32(x, n, &bad),
							     -EDOM);
						cr_assert_eq(bad, at);
						x[n - 1] = next;
					}
					x[at] = saved;
				}
			}
			trib_free(base);
		}
	}
}

/* Kernels may scan several parts of the vector at once; the earliest bad value still wins. */
Test(functions_fold, check_finite_reports_the_earliest_of_two_bad_values)
{
	static const size_t ns[] = { 100, 1000, 4099 };
	const float nan = bits_to_float(0x7fc00000u), inf = bits_to_float(0x7f800000u);
	size_t t, l, a, b;

	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		rng_seed(8);
		for (l = 0; l < sizeof(ns) / sizeof(ns[0]); l++) {
			size_t n = ns[l], h = n / 2;
			size_t pos[] = { 0, 5, 31, 32, 63, h - 33, h - 1, h, h + 1, h + 3, h + 40,
					 n - 65, n - 33, n - 9, n - 1 };
			size_t np = sizeof(pos) / sizeof(pos[0]);
			void *base;
			float *x = buf_alloc(n, 2, &base);

			fill_random(x, n);
			for (a = 0; a < np; a++) {
				for (b = 0; b < np; b++) {
					size_t bad = 0;
					float sa = x[pos[a]], sb = x[pos[b]];

					if (pos[a] >= pos[b])
						continue;
					x[pos[b]] = nan;
					x[pos[a]] = inf;
					cr_assert_eq(fn_check_finite_f32(x, n, &bad), -EDOM);
					cr_assert_eq(bad, pos[a], "%s: n=%zu, %zu and %zu: %zu",
						     impl_names[t], n, pos[a], pos[b], bad);
					x[pos[a]] = sa;
					x[pos[b]] = sb;
				}
			}
			trib_free(base);
		}
	}
}

Test(functions_fold, impl_is_named_and_unknown_names_are_rejected)
{
	const char *name = fn_fold_impl();

	cr_assert(!strcmp(name, "generic") || !strcmp(name, "avx2+fma"), "impl %s", name);
	cr_assert_eq(fn_fold_set_impl("avx512"), -EINVAL);
	cr_assert_str_eq(fn_fold_impl(), name);
}

/* The gateway's bound: |x| <= limit passes (both signs, the limit itself), above it fails. */
Test(functions_fold, check_bound_finds_first_value_above_the_limit)
{
	static const size_t ns[] = { 1, 7, 8, 9, 31, 32, 33, 64, 65, 100, 1000, 4099 };
	const float limit = 0x1p80f;
	const float over[] = { nextafterf(0x1p80f, INFINITY), -nextafterf(0x1p80f, INFINITY),
			       3e38f, FLT_MAX, bits_to_float(0x7f800000u),
			       bits_to_float(0x7fc00000u) };
	size_t t, l, b;

	for (t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impl_names[t]))
			continue;
		rng_seed(9);
		for (l = 0; l < sizeof(ns) / sizeof(ns[0]); l++) {
			size_t n = ns[l], bad = 12345;
			void *base;
			float *x = buf_alloc(n, 1, &base);

			fill_random(x, n);
			x[0] = limit;
			x[n - 1] = -limit;
			cr_assert_eq(fn_check_bound_f32(x, n, limit, &bad), 0, "%s n=%zu",
				     impl_names[t], n);
			cr_assert_eq(bad, 12345);
			cr_assert_eq(fn_check_bound_f32(x, n, FLT_MAX, NULL), 0);
			for (b = 0; b < sizeof(over) / sizeof(over[0]); b++) {
				size_t at = n / 2;
				float saved = x[at];

				x[at] = over[b];
				cr_assert_eq(fn_check_bound_f32(x, n, limit, &bad), -EDOM,
					     "%s n=%zu value %g", impl_names[t], n,
					     (double)over[b]);
				cr_assert_eq(bad, at);
				x[at] = saved;
			}
			/* A limit of zero lets only zeros through (x[0] is not one). */
			cr_assert_eq(fn_check_bound_f32(x, n, 0.0f, &bad), -EDOM);
			cr_assert_eq(bad, 0);
			trib_free(base);
		}
		cr_assert_eq(fn_check_bound_f32(&limit, 1, -1.0f, NULL), -EINVAL);
		cr_assert_eq(fn_check_bound_f32(&limit, 1, NAN, NULL), -EINVAL);
		cr_assert_eq(fn_check_bound_f32(&limit, 1, INFINITY, NULL), -EINVAL);
	}
}
