// SPDX-License-Identifier: MIT
/* Dequantising fold kernels (F16, BF16, int8 + scale into f32), scalar and AVX2/F16C, per CPU. */
#include "fn_dequant.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "shm_abi.h"
#include "fn_fold.h"

#ifdef __FAST_MATH__
#error "fn_dequant.c needs IEEE float semantics: build it without -ffast-math"
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fn_dequant.c reads little-endian F16/BF16 as host words: little-endian hosts only"
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DQ_HAVE_AVX2 1
#else
#define DQ_HAVE_AVX2 0
#endif

static inline float bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

static inline uint16_t load_u16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

/*
 * Branch-free (all three cases computed, then masked), so the generic fold loops vectorise:
 * normal: rebias the exponent from 15 to 127; subnormal or zero: man * 2^-24, exact in f32;
 * Inf/NaN: exponent all ones, mantissa kept.
 */
static inline float f16_decode(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t em = h & 0x7fffu, exp = em >> 10, man = em & 0x3ffu;
	uint32_t normal = sign | ((em << 13) + (112u << 23));
	uint32_t special = sign | 0x7f800000u | (man << 13);
	uint32_t sub = sign | f32_bits((float)man * 0x1p-24f);
	/* Masks, not ?: - gcc does not if-convert the nested select. */
	uint32_t is_sub = 0u - (uint32_t)(exp == 0), is_special = 0u - (uint32_t)(exp == 31);

	return bits_f32((sub & is_sub) | (special & is_special) | (normal & ~(is_sub | is_special)));
}

static inline float bf16_decode(uint16_t b)
{
	return bits_f32((uint32_t)b << 16);
}

/*
 * The kernels call the static decoders: the library is built -fPIC, where gcc will not inline
 * an exported function (it could be interposed), and a call per element stops vectorisation.
 */
float fn_f16_to_f32(uint16_t h)
{
	return f16_decode(h);
}

float fn_bf16_to_f32(uint16_t b)
{
	return bf16_decode(b);
}

/* Generic: acc = acc + w * v, two roundings, plain loops. */

static void generic_f16(float *restrict acc, const uint8_t *restrict x, float w, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		acc[i] = acc[i] + w * f16_decode(load_u16(x + 2 * i));
}

static void generic_bf16(float *restrict acc, const uint8_t *restrict x, float w, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		acc[i] = acc[i] + w * bf16_decode(load_u16(x + 2 * i));
}

static void generic_i8(float *restrict acc, const int8_t *restrict x, float ws, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		acc[i] = acc[i] + ws * (float)x[i];
}

struct dq_impl {
	const char *name;
	void (*f16)(float *restrict acc, const uint8_t *restrict x, float w, size_t n);
	void (*bf16)(float *restrict acc, const uint8_t *restrict x, float w, size_t n);
	void (*i8)(float *restrict acc, const int8_t *restrict x, float ws, size_t n);
};

static const struct dq_impl impl_generic = {
	.name = "generic",
	.f16 = generic_f16,
	.bf16 = generic_bf16,
	.i8 = generic_i8,
};

#if DQ_HAVE_AVX2
/*
 * AVX2+FMA+F16C: 8 values per vector, 4 vectors per iteration; the prologue (up to acc's 32-byte
 * alignment) and the tail use the scalar decoder with fmaf, the same single rounding as the
 * vector body. x is loaded unaligned.
 */
#define DQ_TARGET __attribute__((target("avx2,fma,f16c")))

static inline DQ_TARGET __m256 dq_load_f16(const uint8_t *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i_u *)(const void *)p));
}

static inline DQ_TARGET __m256 dq_load_bf16(const uint8_t *p)
{
	__m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i_u *)(const void *)p));

	return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}

static inline DQ_TARGET __m256 dq_load_i8(const int8_t *p)
{
	__m128i b = _mm_loadl_epi64((const __m128i_u *)(const void *)p);

	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

/* One kernel body per format: @LOAD decodes 8 values at element i, @SCALAR one. */
#define DQ_AVX2_BODY(LOAD, SCALAR)                                                                 \
	do {                                                                                       \
		const __m256 vw = _mm256_set1_ps(w);                                               \
		size_t i = 0;                                                                      \
                                                                                                   \
		for (; i < n && ((uintptr_t)(acc + i) & 31); i++)                                  \
			acc[i] = __builtin_fmaf(w, SCALAR(i), acc[i]);                             \
		for (; i + 32 <= n; i += 32) {                                                     \
			__m256 a0 = _mm256_load_ps(acc + i);                                       \
			__m256 a1 = _mm256_load_ps(acc + i + 8);                                   \
			__m256 a2 = _mm256_load_ps(acc + i + 16);                                  \
			__m256 a3 = _mm256_load_ps(acc + i + 24);                                  \
                                                                                                   \
			a0 = _mm256_fmadd_ps(vw, LOAD(i), a0);                                     \
			a1 = _mm256_fmadd_ps(vw, LOAD(i + 8), a1);                                 \
			a2 = _mm256_fmadd_ps(vw, LOAD(i + 16), a2);                                \
			a3 = _mm256_fmadd_ps(vw, LOAD(i + 24), a3);                                \
			_mm256_store_ps(acc + i, a0);                                              \
			_mm256_store_ps(acc + i + 8, a1);                                          \
			_mm256_store_ps(acc + i + 16, a2);                                         \
			_mm256_store_ps(acc + i + 24, a3);                                         \
		}                                                                                  \
		for (; i + 8 <= n; i += 8)                                                         \
			_mm256_store_ps(acc + i,                                                   \
					_mm256_fmadd_ps(vw, LOAD(i), _mm256_load_ps(acc + i)));    \
		for (; i < n; i++)                                                                 \
			acc[i] = __builtin_fmaf(w, SCALAR(i), acc[i]);                             \
	} while (0)

#define F16_LOAD(i) dq_load_f16(x + 2 * (i))
#define F16_SCALAR(i) f16_decode(load_u16(x + 2 * (i)))
#define BF16_LOAD(i) dq_load_bf16(x + 2 * (i))
#define BF16_SCALAR(i) bf16_decode(load_u16(x + 2 * (i)))
#define I8_LOAD(i) dq_load_i8(x + (i))
#define I8_SCALAR(i) ((float)x[(i)])

static DQ_TARGET void avx2_f16(float *restrict acc, const uint8_t *restrict x, float w, size_t n)
{
	DQ_AVX2_BODY(F16_LOAD, F16_SCALAR);
}

static DQ_TARGET void avx2_bf16(float *restrict acc, const uint8_t *restrict x, float w, size_t n)
{
	DQ_AVX2_BODY(BF16_LOAD, BF16_SCALAR);
}

static DQ_TARGET void avx2_i8(float *restrict acc, const int8_t *restrict x, float w, size_t n)
{
	DQ_AVX2_BODY(I8_LOAD, I8_SCALAR);
}

static const struct dq_impl impl_avx2 = {
	.name = "avx2+f16c",
	.f16 = avx2_f16,
	.bf16 = avx2_bf16,
	.i8 = avx2_i8,
};

static bool cpu_has_avx2_f16c(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
	       __builtin_cpu_supports("f16c");
}
#endif /* DQ_HAVE_AVX2 */

/* Chosen once, before main(), by dq_select(); only fn_dequant_set_impl() changes it later. */
static const struct dq_impl *dq_impl = &impl_generic;

int fn_dequant_set_impl(const char *name)
{
	if (!strcmp(name, impl_generic.name)) {
		dq_impl = &impl_generic;
		return 0;
	}
	if (!strcmp(name, "avx2+f16c")) {
#if DQ_HAVE_AVX2
		if (cpu_has_avx2_f16c()) {
			dq_impl = &impl_avx2;
			return 0;
		}
#endif
		return -ENOTSUP;
	}
	return -EINVAL;
}

__attribute__((constructor)) static void dq_select(void)
{
	const char *env = getenv("TRIBUTARY_FOLD_IMPL");

	/* fn_fold.c reports an unusable value; here only "generic" matters. */
	if (env && !strcmp(env, "generic"))
		return;
#if DQ_HAVE_AVX2
	if (cpu_has_avx2_f16c())
		dq_impl = &impl_avx2;
#endif
}

const char *fn_dequant_impl(void)
{
	return dq_impl->name;
}

void fn_fold_f16(float *restrict acc, const void *restrict x, float w, size_t n)
{
	dq_impl->f16(acc, x, w, n);
}

void fn_fold_bf16(float *restrict acc, const void *restrict x, float w, size_t n)
{
	dq_impl->bf16(acc, x, w, n);
}

void fn_fold_i8(float *restrict acc, const void *restrict x, float w, float scale, size_t n)
{
	dq_impl->i8(acc, x, w * scale, n);
}

int fn_dequant_fold(float *restrict acc, const void *restrict x, uint32_t dtype, float scale,
		    float w, size_t n)
{
	switch (dtype) {
	case SHM_DTYPE_F32:
		fn_fold_f32(acc, x, w, n);
		return 0;
	case SHM_DTYPE_F16:
		fn_fold_f16(acc, x, w, n);
		return 0;
	case SHM_DTYPE_BF16:
		fn_fold_bf16(acc, x, w, n);
		return 0;
	case SHM_DTYPE_I8:
		if (!isfinite(scale))
			return -EINVAL;
		fn_fold_i8(acc, x, w, scale, n);
		return 0;
	default:
		return -EINVAL;
	}
}

/* Index of the first 16-bit value of x[0..n) whose bits under @mask are all set, or n. */
static size_t first_u16_all(const uint8_t *x, size_t n, uint16_t mask)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((load_u16(x + 2 * i) & mask) == mask)
			return i;
	return n;
}

int fn_dequant_check_finite(const void *x, uint32_t dtype, size_t n, size_t *bad_index)
{
	size_t i;

	switch (dtype) {
	case SHM_DTYPE_F32:
		return fn_check_finite_f32(x, n, bad_index);
	case SHM_DTYPE_F16:
		i = first_u16_all(x, n, 0x7c00u);
		break;
	case SHM_DTYPE_BF16:
		i = first_u16_all(x, n, 0x7f80u);
		break;
	case SHM_DTYPE_I8:
		return 0;
	default:
		return -EINVAL;
	}
	if (i == n)
		return 0;
	if (bad_index)
		*bad_index = i;
	return -EDOM;
}

/* Index of the first F16 value of x[0..n) that is not finite or whose |value| is above @limit. */
static size_t first_f16_above(const uint8_t *x, size_t n, float limit)
{
	size_t i;

	/* Every finite F16 is at most 65504: above that only the exponent test is needed. */
	if (limit >= 65504.0f)
		return first_u16_all(x, n, 0x7c00u);
	for (i = 0; i < n; i++)
		if (!(fabsf(fn_f16_to_f32(load_u16(x + 2 * i))) <= limit))
			return i;
	return n;
}

/* BF16 is the top half of an f32: |x| bits shifted up compare as the f32 bits do. */
static size_t first_bf16_above(const uint8_t *x, size_t n, float limit)
{
	uint32_t lim;
	size_t i;

	memcpy(&lim, &limit, sizeof(lim));
	for (i = 0; i < n; i++)
		if (((uint32_t)(load_u16(x + 2 * i) & 0x7fffu) << 16) > lim)
			return i;
	return n;
}

int fn_dequant_check_bound(const void *x, uint32_t dtype, size_t n, float limit,
			   size_t *bad_index)
{
	size_t i;

	if (!(limit >= 0.0f) || !(limit <= FLT_MAX))
		return -EINVAL;
	limit = fabsf(limit); /* -0.0f is 0.0f */
	switch (dtype) {
	case SHM_DTYPE_F32:
		return fn_check_bound_f32(x, n, limit, bad_index);
	case SHM_DTYPE_F16:
		i = first_f16_above(x, n, limit);
		break;
	case SHM_DTYPE_BF16:
		i = first_bf16_above(x, n, limit);
		break;
	case SHM_DTYPE_I8:
		return 0;
	default:
		return -EINVAL;
	}
	if (i == n)
		return 0;
	if (bad_index)
		*bad_index = i;
	return -EDOM;
}
