// SPDX-License-Identifier: MIT
/* Secure aggregation's kernels: u32 folds (AVX2 or portable) and the ranged mask expansion. */
#include "fn_secagg.h"

#include <errno.h>
#include <stdbool.h>

#include "trib_secagg_crypto.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FN_SECAGG_HAVE_AVX2 1
#else
#define FN_SECAGG_HAVE_AVX2 0
#endif

/* Updates folded per pass over acc in fn_fold_u32_multi (as FOLD_GROUP in fn_fold.c). */
#define U32_GROUP 4

void fn_fold_u32_generic(uint32_t *restrict acc, const uint32_t *restrict x, size_t n)
{
	/* Unsigned overflow is defined: this is the group operation of Z/2^32. */
	for (size_t i = 0; i < n; i++)
		acc[i] += x[i];
}

#if FN_SECAGG_HAVE_AVX2
__attribute__((target("avx2"))) static void avx2_fold_u32(uint32_t *restrict acc,
							   const uint32_t *restrict x, size_t n)
{
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		for (size_t j = 0; j < 32; j += 8) {
			__m256i a = _mm256_loadu_si256((const __m256i *)(acc + i + j));
			__m256i b = _mm256_loadu_si256((const __m256i *)(x + i + j));

			_mm256_storeu_si256((__m256i *)(acc + i + j), _mm256_add_epi32(a, b));
		}
	}
	for (; i < n; i++)
		acc[i] += x[i];
}

static bool have_avx2(void)
{
	return __builtin_cpu_supports("avx2");
}
#endif

void fn_fold_u32(uint32_t *restrict acc, const uint32_t *restrict x, size_t n)
{
#if FN_SECAGG_HAVE_AVX2
	if (have_avx2()) {
		avx2_fold_u32(acc, x, n);
		return;
	}
#endif
	fn_fold_u32_generic(acc, x, n);
}

const char *fn_fold_u32_impl(void)
{
#if FN_SECAGG_HAVE_AVX2
	if (have_avx2())
		return "avx2";
#endif
	return "generic";
}

void fn_fold_u32_multi(uint32_t *restrict acc, const uint32_t *const *xs, size_t k, size_t n)
{
	size_t j, i;

	/* Groups of 4 streams per pass read acc once per 4 updates; the sum is the same bits. */
	for (j = 0; j + U32_GROUP <= k; j += U32_GROUP) {
		const uint32_t *a = xs[j], *b = xs[j + 1], *c = xs[j + 2], *d = xs[j + 3];

		for (i = 0; i < n; i++)
			acc[i] += a[i] + b[i] + c[i] + d[i];
	}
	for (; j < k; j++)
		fn_fold_u32(acc, xs[j], n);
}

int fn_secagg_range(uint64_t total, uint32_t parts, uint32_t idx, uint64_t *first, uint64_t *n)
{
	uint64_t lo, hi;

	if (parts == 0 || idx >= parts || parts > (1u << 16) || total > TRIB_SA_PRG_MAX_WORDS)
		return -EINVAL;
	/* total * parts <= 2^52: no overflow. */
	lo = (uint64_t)idx * total / parts;
	hi = ((uint64_t)idx + 1) * total / parts;
	*first = lo;
	*n = hi - lo;
	return 0;
}

int fn_secagg_expand(uint32_t *acc, uint64_t first, size_t n,
		     const struct fn_secagg_stream *streams, size_t count)
{
	for (size_t j = 0; j < count; j++) {
		int err = trib_sa_prg_add_u32(acc, n, streams[j].key, first, streams[j].sign);

		if (err)
			return err;
	}
	return 0;
}
