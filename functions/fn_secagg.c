// SPDX-License-Identifier: MIT
/*
 * Secure aggregation's kernels every function has: u32 folds (AVX2 or portable), the coordinate
 * ranges, the masked sum's base row. The unmasking (mask expansion) is fn_secagg_unmask.c's.
 */
#include "fn_secagg.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "trib_secagg_crypto.h" /* TRIB_SA_PRG_MAX_WORDS only: no crypto here */

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

/*
 * The base row of a secure job (FN_ALGO_SECAGG). An update is one client's masked vector: dim + 1
 * little-endian u32 words (its n_u * q(x_u) then n_u, each plus its masks), one segment labelled
 * I32 (the arena has no U32 label; the bits are what count). A partial's cells are sums of such
 * vectors (fn_main.c labels every partial F32). Both add cell by cell mod 2^32, so the top's sum
 * is the same bits whatever the tree. No weights (n_u is a coordinate, masked like the rest) and
 * no finish: the top hands off the masked sum as it is (FN_CFG_SUM's meaning: no division), and
 * only the runtime, with the reveals, can take the masks off.
 */
static int sa_weigh(void *state, const struct fn_algo_ctx *ctx, struct fn_input *in)
{
	(void)state;
	(void)ctx;
	if (in->kind == SHM_DESC_UPDATE) {
		in->weight = 1.0;
		in->share = 1.0;
	}
	return 0;
}

static int sa_fold(void *state, const struct fn_algo_ctx *ctx, const struct fn_input *in)
{
	uint32_t *acc = (uint32_t *)(void *)ctx->acc;

	(void)state;
	for (uint32_t i = 0; i < in->nsegs; i++) {
		const struct shm_seg *s = &in->segs[i];

		/*
		 * Bounds were checked by fn_input_from_desc(). A 4-byte label either way: updates
		 * land as I32, partials (and tcp's flat payloads) are labelled F32 by fn_main.c.
		 */
		if (s->dtype != SHM_DTYPE_I32 && s->dtype != SHM_DTYPE_F32)
			return -EINVAL;
		fn_fold_u32(acc + s->dst_elem, (const uint32_t *)(const void *)(in->base + s->src_off),
			    (size_t)s->n_elem);
	}
	return 0;
}

const struct fn_algo_ops fn_secagg_ops = {
	.name = "secagg",
	.state_size = 0,
	.weigh = sa_weigh,
	.fold = sa_fold,
};
