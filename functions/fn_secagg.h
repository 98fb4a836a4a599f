/* SPDX-License-Identifier: MIT */
/* Secure aggregation's kernels: the u32 fold of masked vectors and the mask expansion by range. */
#ifndef FN_SECAGG_H
#define FN_SECAGG_H

#include <stddef.h>
#include <stdint.h>

/*
 * Determinism: masked updates live in Z/2^32 and every operation here is an addition modulo
 * 2^32, which is associative and commutative. So the result is bit-identical whatever the
 * implementation ("avx2" or "generic"), the order updates arrive in, the shape of the tree that
 * folds them, and the way a vector is split into ranges: exactness is the contract, not an
 * approximation of it (unlike the f32 folds of fn_fold.h).
 */

/* acc[i] += x[i] (mod 2^32) for i < n. Borrowed buffers, 4-byte aligned, not overlapping. */
void fn_fold_u32(uint32_t *restrict acc, const uint32_t *restrict x, size_t n);

/* The portable loop fn_fold_u32 falls back to; tests compare the two. */
void fn_fold_u32_generic(uint32_t *restrict acc, const uint32_t *restrict x, size_t n);

/* acc[i] += xs[0][i] + ... + xs[k-1][i] (mod 2^32), one pass over acc per group of 4. */
void fn_fold_u32_multi(uint32_t *restrict acc, const uint32_t *const *xs, size_t k, size_t n);

/* "avx2" or "generic": what fn_fold_u32 runs on this CPU. A static string. */
const char *fn_fold_u32_impl(void);

/*
 * Range @idx of @parts over @total words: [first, first + n) with
 *     first = floor(idx * total / parts),  n = floor((idx + 1) * total / parts) - first
 * so the ranges tile [0, total) in order and differ in length by at most one. Returns 0, or
 * -EINVAL if parts is 0, idx >= parts, parts > 2^16 or total > 2^36 (the products stay in u64).
 */
int fn_secagg_range(uint64_t total, uint32_t parts, uint32_t idx, uint64_t *first, uint64_t *n);

/* One mask stream of an unmasking: its 32-byte PRG key (core/trib_secagg_crypto.h) and sign. */
struct fn_secagg_stream {
	uint8_t key[32];
	int32_t sign; /* +1 adds the stream, -1 subtracts it */
};

/*
 * acc[i] += sum_j streams[j].sign * PRG(streams[j].key)[first + i] (mod 2^32) for i < n: the
 * part of an unmasking one function does, for its range of coordinates (fn_secagg_range). The
 * top of the tree gets the whole vector's correction by adding the ranges side by side, or the
 * same correction by splitting the streams instead (every function the full range, a slice of
 * the streams, the results folded with fn_fold_u32): both give the same bits.
 * Returns 0, or -EINVAL for a sign other than +-1 or a range past the stream (2^36 words); on
 * error acc may hold the streams before the bad one. Borrowed buffers.
 */
int fn_secagg_expand(uint32_t *acc, uint64_t first, size_t n,
		     const struct fn_secagg_stream *streams, size_t count);

#endif
