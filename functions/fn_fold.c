// SPDX-License-Identifier: MIT
/* Fold kernels: weighted sums, scaling and finiteness checks over f32 vectors, picked per CPU. */
#include "fn_fold.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trib_log.h"

/*
 * Fold order is part of the result (data-plane modes must build bit-identical models), and
 * -ffast-math lets the compiler reassociate the generic loops.
 */
#ifdef __FAST_MATH__
#error "fn_fold.c needs IEEE float semantics: build it without -ffast-math"
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FN_FOLD_HAVE_AVX2 1
#else
#define FN_FOLD_HAVE_AVX2 0
#endif

/* Updates folded per pass over the accumulator: 4 update streams + acc fit the prefetchers. */
#define FOLD_GROUP 4

#define F32_ABS_MASK 0x7fffffffu
#define F32_MAX_BITS 0x7f7fffffu /* FLT_MAX: above it (as |x| bits) only Inf and NaN */

struct fold_impl {
	const char *name;
	void (*fold)(float *restrict acc, const float *restrict x, float w, size_t n);
	void (*fold_multi)(float *restrict acc, const float *const *xs, const float *ws, size_t k,
			   size_t n);
	void (*scale)(float *acc, float s, size_t n);
	int (*check_bound)(const float *x, size_t n, uint32_t lim, size_t *bad_index);
};

/*
 * The bound tests compare |x| as bits: for non-negative floats the bit order is the numeric
 * order, and +Inf and every NaN lie above FLT_MAX, so one integer compare catches all three.
 */
static inline bool f32_bits_above(const float *p, uint32_t lim)
{
	uint32_t u;

	memcpy(&u, p, sizeof(u));
	return (u & F32_ABS_MASK) > lim;
}

/* Index of the first value of x[from..to) above @lim (as |x| bits); there is one. */
static size_t first_above(const float *x, size_t from, size_t to, uint32_t lim)
{
	size_t i;

	for (i = from; i < to; i++)
		if (f32_bits_above(x + i, lim))
			return i;
	return to;
}

/*
 * Generic: plain loops the compiler vectorises for the baseline ISA. Each element is
 * t = t + w * x (two roundings), in update order.
 */

static inline __attribute__((always_inline)) void
generic_group(float *restrict acc, const float *const *xs, const float *ws, size_t m, size_t n)
{
	size_t i, j;

	for (i = 0; i < n; i++) {
		float t = acc[i];

		for (j = 0; j < m; j++)
			t = t + ws[j] * xs[j][i];
		acc[i] = t;
	}
}

static void generic_fold(float *restrict acc, const float *restrict x, float w, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		acc[i] = acc[i] + w * x[i];
}

static void generic_fold_multi(float *restrict acc, const float *const *xs, const float *ws,
			       size_t k, size_t n)
{
	size_t j, m;

	for (j = 0; j < k; j += m) {
		m = k - j < FOLD_GROUP ? k - j : FOLD_GROUP;
		/* Constant group sizes let the inner loop unroll and the outer one vectorise. */
		switch (m) {
		case 1:
			generic_group(acc, xs + j, ws + j, 1, n);
			break;
		case 2:
			generic_group(acc, xs + j, ws + j, 2, n);
			break;
		case 3:
			generic_group(acc, xs + j, ws + j, 3, n);
			break;
		default:
			generic_group(acc, xs + j, ws + j, 4, n);
			break;
		}
	}
}

static void generic_scale(float *acc, float s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		acc[i] *= s;
}

static int generic_check_bound(const float *x, size_t n, uint32_t lim, size_t *bad_index)
{
	/* Both sides are below 2^31: a signed compare, which SSE2 has and unsigned is not. */
	const int32_t slim = (int32_t)lim;
	size_t i = 0, j;

	/* Branch once per block so the compiler can vectorise the test. */
	for (; i + 64 <= n; i += 64) {
		int32_t u[64], bad = 0;

		memcpy(u, x + i, sizeof(u));
		for (j = 0; j < 64; j++)
			bad |= (u[j] & (int32_t)F32_ABS_MASK) > slim;
		if (bad)
			goto found;
	}
	if (i == n)
		return 0;
	for (j = i; j < n; j++)
		if (f32_bits_above(x + j, lim))
			goto found;
	return 0;
found:
	if (bad_index)
		*bad_index = first_above(x, i, n, lim);
	return -EDOM;
}

static const struct fold_impl impl_generic = {
	.name = "generic",
	.fold = generic_fold,
	.fold_multi = generic_fold_multi,
	.scale = generic_scale,
	.check_bound = generic_check_bound,
};

#if FN_FOLD_HAVE_AVX2
/*
 * AVX2+FMA: every element, in the vector body, the alignment prologue and the tail alike, is
 * t = fma(w, x, t) in update order, so results do not depend on where an element falls. acc is
 * aligned to 32 bytes by the prologue; x is loaded unaligned (safetensors bodies are 4-aligned).
 */
#define AVX2_TARGET __attribute__((target("avx2,fma")))

static inline AVX2_TARGET __attribute__((always_inline)) void
avx2_group(float *restrict acc, const float *const *xs, const float *ws, size_t m, size_t n)
{
	__m256 w[FOLD_GROUP];
	size_t i = 0, j;

	for (j = 0; j < m; j++)
		w[j] = _mm256_set1_ps(ws[j]);
	for (; i < n && ((uintptr_t)(acc + i) & 31); i++) {
		float t = acc[i];

		for (j = 0; j < m; j++)
			t = __builtin_fmaf(ws[j], xs[j][i], t);
		acc[i] = t;
	}
	for (; i + 32 <= n; i += 32) {
		__m256 a0 = _mm256_load_ps(acc + i);
		__m256 a1 = _mm256_load_ps(acc + i + 8);
		__m256 a2 = _mm256_load_ps(acc + i + 16);
		__m256 a3 = _mm256_load_ps(acc + i + 24);

		for (j = 0; j < m; j++) {
			const float *x = xs[j] + i;

			a0 = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x), a0);
			a1 = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + 8), a1);
			a2 = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + 16), a2);
			a3 = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + 24), a3);
		}
		_mm256_store_ps(acc + i, a0);
		_mm256_store_ps(acc + i + 8, a1);
		_mm256_store_ps(acc + i + 16, a2);
		_mm256_store_ps(acc + i + 24, a3);
	}
	for (; i + 8 <= n; i += 8) {
		__m256 a = _mm256_load_ps(acc + i);

		for (j = 0; j < m; j++)
			a = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(xs[j] + i), a);
		_mm256_store_ps(acc + i, a);
	}
	for (; i < n; i++) {
		float t = acc[i];

		for (j = 0; j < m; j++)
			t = __builtin_fmaf(ws[j], xs[j][i], t);
		acc[i] = t;
	}
}

static AVX2_TARGET void avx2_fold(float *restrict acc, const float *restrict x, float w, size_t n)
{
	const float *const xs[1] = { x };

	avx2_group(acc, xs, &w, 1, n);
}

static AVX2_TARGET void avx2_fold_multi(float *restrict acc, const float *const *xs,
					const float *ws, size_t k, size_t n)
{
	size_t j, m;

	for (j = 0; j < k; j += m) {
		m = k - j < FOLD_GROUP ? k - j : FOLD_GROUP;
		switch (m) {
		case 1:
			avx2_group(acc, xs + j, ws + j, 1, n);
			break;
		case 2:
			avx2_group(acc, xs + j, ws + j, 2, n);
			break;
		case 3:
			avx2_group(acc, xs + j, ws + j, 3, n);
			break;
		default:
			avx2_group(acc, xs + j, ws + j, 4, n);
			break;
		}
	}
}

static AVX2_TARGET void avx2_scale(float *acc, float s, size_t n)
{
	const __m256 vs = _mm256_set1_ps(s);
	size_t i = 0;

	for (; i < n && ((uintptr_t)(acc + i) & 31); i++)
		acc[i] *= s;
	for (; i + 32 <= n; i += 32) {
		_mm256_store_ps(acc + i, _mm256_mul_ps(vs, _mm256_load_ps(acc + i)));
		_mm256_store_ps(acc + i + 8, _mm256_mul_ps(vs, _mm256_load_ps(acc + i + 8)));
		_mm256_store_ps(acc + i + 16, _mm256_mul_ps(vs, _mm256_load_ps(acc + i + 16)));
		_mm256_store_ps(acc + i + 24, _mm256_mul_ps(vs, _mm256_load_ps(acc + i + 24)));
	}
	for (; i + 8 <= n; i += 8)
		_mm256_store_ps(acc + i, _mm256_mul_ps(vs, _mm256_load_ps(acc + i)));
	for (; i < n; i++)
		acc[i] *= s;
}

/* |x| bits above @lim: both are below 2^31, so the signed compare is the unsigned one. */
static inline AVX2_TARGET __attribute__((always_inline)) __m256i
avx2_above(const float *p, __m256i mask, __m256i lim)
{
	__m256i v = _mm256_loadu_si256((const __m256i_u *)p);

	return _mm256_cmpgt_epi32(_mm256_and_si256(v, mask), lim);
}

static inline AVX2_TARGET __attribute__((always_inline)) __m256i
avx2_above32(const float *p, __m256i mask, __m256i lim)
{
	return _mm256_or_si256(
		_mm256_or_si256(avx2_above(p, mask, lim), avx2_above(p + 8, mask, lim)),
		_mm256_or_si256(avx2_above(p + 16, mask, lim), avx2_above(p + 24, mask, lim)));
}

static AVX2_TARGET int avx2_check_bound(const float *x, size_t n, uint32_t lim32,
					size_t *bad_index)
{
	const __m256i mask = _mm256_set1_epi32((int)F32_ABS_MASK);
	const __m256i lim = _mm256_set1_epi32((int)lim32);
	size_t half = (n / 2) & ~(size_t)31, i = 0;

	/*
	 * One read stream leaves a core latency-bound (10-30% slower here), so walk both halves of
	 * the first 2 * half floats at once. Invariant: x[0..i) and x[half..half+i) are finite, so
	 * after a hit the first bad index is at or after i.
	 */
	for (; i < half; i += 32) {
		__m256i e = _mm256_or_si256(avx2_above32(x + i, mask, lim),
					    avx2_above32(x + half + i, mask, lim));

		if (!_mm256_testz_si256(e, e))
			goto found;
	}
	for (i = 2 * half; i + 32 <= n; i += 32) {
		__m256i e = avx2_above32(x + i, mask, lim);

		if (!_mm256_testz_si256(e, e))
			goto found;
	}
	for (; i + 8 <= n; i += 8) {
		__m256i e = avx2_above(x + i, mask, lim);

		if (!_mm256_testz_si256(e, e))
			goto found;
	}
	for (; i < n; i++)
		if (f32_bits_above(x + i, lim32))
			goto found;
	return 0;
found:
	if (bad_index)
		*bad_index = first_above(x, i, n, lim32);
	return -EDOM;
}

static const struct fold_impl impl_avx2 = {
	.name = "avx2+fma",
	.fold = avx2_fold,
	.fold_multi = avx2_fold_multi,
	.scale = avx2_scale,
	.check_bound = avx2_check_bound,
};

static bool cpu_has_avx2_fma(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif /* FN_FOLD_HAVE_AVX2 */

/* Chosen once, before main(), by fold_select(); only fn_fold_set_impl() changes it later. */
static const struct fold_impl *fold_impl = &impl_generic;

int fn_fold_set_impl(const char *name)
{
	if (!strcmp(name, impl_generic.name)) {
		fold_impl = &impl_generic;
		return 0;
	}
	if (!strcmp(name, "avx2+fma")) {
#if FN_FOLD_HAVE_AVX2
		if (cpu_has_avx2_fma()) {
			fold_impl = &impl_avx2;
			return 0;
		}
#endif
		return -ENOTSUP;
	}
	return -EINVAL;
}

__attribute__((constructor)) static void fold_select(void)
{
	const char *env = getenv("TRIBUTARY_FOLD_IMPL");
	int err;

#if FN_FOLD_HAVE_AVX2
	if (cpu_has_avx2_fma())
		fold_impl = &impl_avx2;
#endif
	if (!env || !*env)
		return;
	err = fn_fold_set_impl(env);
	if (err)
		trib_warn("TRIBUTARY_FOLD_IMPL=%s unusable (%s), folding with %s", env,
			  strerror(-err), fold_impl->name);
}

void fn_fold_f32(float *restrict acc, const float *restrict x, float w, size_t n)
{
	fold_impl->fold(acc, x, w, n);
}

void fn_fold_f32_multi(float *restrict acc, const float *const *xs, const float *ws, size_t k,
		       size_t n)
{
	fold_impl->fold_multi(acc, xs, ws, k, n);
}

void fn_scale_f32(float *acc, float s, size_t n)
{
	fold_impl->scale(acc, s, n);
}

int fn_check_finite_f32(const float *x, size_t n, size_t *bad_index)
{
	return fold_impl->check_bound(x, n, F32_MAX_BITS, bad_index);
}

int fn_check_bound_f32(const float *x, size_t n, float limit, size_t *bad_index)
{
	uint32_t lim;

	if (!(limit >= 0.0f) || !(limit <= FLT_MAX))
		return -EINVAL;
	/* +0.0f, not -0.0f: the sign bit would make the bits compare as huge. */
	limit = fabsf(limit);
	memcpy(&lim, &limit, sizeof(lim));
	return fold_impl->check_bound(x, n, lim, bad_index);
}

const char *fn_fold_impl(void)
{
	return fold_impl->name;
}
