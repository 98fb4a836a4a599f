/* SPDX-License-Identifier: MIT */
/* Fold kernels: the vectorised weighted sums every aggregation function streams updates through. */
#ifndef FN_FOLD_H
#define FN_FOLD_H

#include <stddef.h>

/* Most updates fn_fold_f32_multi() is meant to take in one call; they are folded in groups of 4. */
#define FN_FOLD_MAX_MULTI 8

/*
 * Determinism: every element is computed by the same operation sequence whatever its position,
 * the length or the alignment of the buffers, so one implementation (see fn_fold_impl()) gives
 * bit-identical results for the same inputs in the same order. The "avx2+fma" implementation
 * rounds once per update (fused multiply-add); "generic" rounds after the multiply and the add,
 * so the two implementations may differ in the last bit.
 */

/*
 * acc[i] += w * x[i] for i < n. Both buffers are borrowed; x needs only 4-byte alignment and must
 * not overlap acc.
 */
void fn_fold_f32(float *restrict acc, const float *restrict x, float w, size_t n);

/*
 * acc[i] += ws[0]*xs[0][i] + ... + ws[k-1]*xs[k-1][i], added in that order, in one pass over acc
 * per group of 4 updates. The result is bit-identical to k calls of fn_fold_f32() in the same
 * order. All buffers are borrowed; no xs[j] may overlap acc. k = 0 does nothing; k above
 * FN_FOLD_MAX_MULTI works but is not what the kernel is tuned for.
 */
void fn_fold_f32_multi(float *restrict acc, const float *const *xs, const float *ws, size_t k,
		       size_t n);

/* acc[i] *= s for i < n (the division by the total weight). acc is borrowed. */
void fn_scale_f32(float *acc, float s, size_t n);

/*
 * Returns 0 if x[0..n) are all finite (denormals and zeros included), or -EDOM if one is NaN or
 * ±Inf, and then stores the index of the first one in *bad_index (if bad_index is not NULL). The
 * test reads exponent bits with integer operations, so -ffast-math cannot remove it. x is
 * borrowed and needs only 4-byte alignment.
 */
int fn_check_finite_f32(const float *x, size_t n, size_t *bad_index);

/*
 * The largest |w * x| an update may bring to a fold: 2^80 (about 1.2e24). A round folds fewer
 * than 2^32 updates (its count is a u32), so every partial sum stays below
 * 2^32 * 2^80 = 2^112, 2^16 under FLT_MAX (about 2^128): a fold of accepted updates cannot
 * overflow, and the room left covers rounding, the server optimisers' steps and DP noise. The
 * gateway refuses (422) an update with a value above FN_FOLD_TERM_MAX / its fold weight.
 */
#define FN_FOLD_TERM_MAX 0x1p80

/*
 * Returns 0 if |x[i]| <= limit for all i < n, or -EDOM if one is NaN, ±Inf or above @limit, and
 * then stores the index of the first one in *bad_index (if not NULL). -EINVAL if @limit is NaN,
 * negative or infinite. Same cost as fn_check_finite_f32() (one integer compare per value), which
 * is this test with limit FLT_MAX. x is borrowed and needs only 4-byte alignment.
 */
int fn_check_bound_f32(const float *x, size_t n, float limit, size_t *bad_index);

/* Name of the implementation in use, "avx2+fma" or "generic"; a static string. */
const char *fn_fold_impl(void);

/*
 * Tests and benchmarks: use implementation @name ("avx2+fma" or "generic") from now on.
 * Returns 0, -EINVAL for an unknown name, or -ENOTSUP if this CPU lacks it. Not thread-safe:
 * call it before any fold runs. The environment variable TRIBUTARY_FOLD_IMPL does the same at
 * start-up.
 */
int fn_fold_set_impl(const char *name);

#endif
