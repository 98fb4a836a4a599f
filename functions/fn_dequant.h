/* SPDX-License-Identifier: MIT */
/* Dequantising folds: F16, BF16 and int8-with-scale updates added into an f32 accumulator. */
#ifndef FN_DEQUANT_H
#define FN_DEQUANT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Each kernel decodes a value and folds it in the same step, acc[i] += w * decode(x[i]), so a
 * compressed update is never expanded into an f32 copy. Decoding is exact (every F16, BF16 and
 * int8 value is an f32). As in fn_fold.h, the "avx2+f16c" implementation rounds once per
 * element (acc = fma(w, v, acc)) and "generic" twice (acc = acc + w * v), and every element is
 * computed the same way wherever it falls, so one implementation gives the same bits whatever
 * the length or alignment. Buffers are borrowed; @x needs no alignment at all (safetensors
 * does not align tensors) and must not overlap @acc.
 */

/* IEEE-754 binary16 bits to f32, exact (subnormals, infinities; NaN stays NaN). */
float fn_f16_to_f32(uint16_t h);

/* bfloat16 bits to f32: the bits shifted into the top half, exact. */
float fn_bf16_to_f32(uint16_t b);

/* acc[i] += w * f16(x[i]); @x holds n little-endian binary16 values. */
void fn_fold_f16(float *restrict acc, const void *restrict x, float w, size_t n);

/* acc[i] += w * bf16(x[i]); @x holds n little-endian bfloat16 values. */
void fn_fold_bf16(float *restrict acc, const void *restrict x, float w, size_t n);

/*
 * acc[i] += ws * x[i] with ws = (float)(w * scale) rounded once: int8 with a per-tensor f32 scale
 * (the tensor's real values are scale * x). @x holds n int8 values.
 */
void fn_fold_i8(float *restrict acc, const void *restrict x, float w, float scale, size_t n);

/*
 * Folds @n values of @dtype (enum shm_dtype: SHM_DTYPE_F32, _F16, _BF16 or _I8; @scale is used
 * by I8 only) into @acc with weight @w: the one call a segment loop needs, as in
 * shm_seg: fn_dequant_fold(acc + s->dst_elem, base + s->src_off, s->dtype, s->scale, w, n).
 * F32 goes to fn_fold_f32() and needs 4-byte alignment; the others need none. 0, or -EINVAL for
 * an unknown dtype or a non-finite scale.
 */
int fn_dequant_fold(float *restrict acc, const void *restrict x, uint32_t dtype, float scale,
		    float w, size_t n);

/*
 * 0 if the n values at @x of @dtype decode to finite numbers, or -EDOM with *bad_index (if not
 * NULL) the first that does not (the gateway's 422 check for compressed bodies). I8 is always
 * finite. -EINVAL for an unknown dtype.
 */
int fn_dequant_check_finite(const void *x, uint32_t dtype, size_t n, size_t *bad_index);

/*
 * 0 if the n values at @x of @dtype decode to numbers with |value| <= @limit, or -EDOM with
 * *bad_index (if not NULL) the first that does not (NaN and Inf never do): the gateway's bound
 * check (FN_FOLD_TERM_MAX / weight, see fn_fold.h). I8 values are the caller's to bound through
 * their scale: 0. -EINVAL for an unknown dtype or a @limit that is NaN, negative or infinite.
 */
int fn_dequant_check_bound(const void *x, uint32_t dtype, size_t n, float limit,
			   size_t *bad_index);

/* "avx2+f16c" or "generic": the implementation in use (a static string). */
const char *fn_dequant_impl(void);

/*
 * Tests and benchmarks: use implementation @name from now on. 0, -EINVAL (unknown name) or
 * -ENOTSUP (this CPU lacks AVX2, FMA or F16C). Not thread-safe. At start-up the best the CPU
 * has is chosen, unless TRIBUTARY_FOLD_IMPL=generic asks for the generic folds everywhere.
 */
int fn_dequant_set_impl(const char *name);

#endif
