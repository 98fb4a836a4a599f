/* SPDX-License-Identifier: MIT */
/* Sparse updates: indices + values scatter-added into an accumulator, never densified. */
#ifndef FN_SPARSE_H
#define FN_SPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"

/* The integer type of a sparse tensor's indices (little-endian, as they arrive). */
enum fn_sparse_itype { FN_SPARSE_I32 = 4, FN_SPARSE_I64 = 8 };

/*
 * Checks @n indices of type @itype at @idx (aligned to their size) against a tensor of @size
 * elements. The rule: every index in [0, size), strictly increasing. Sorted is required (numpy's
 * np.nonzero/np.flatnonzero and torch's coalesce() give it) because it makes a duplicate
 * adjacent, so one pass finds it, and because a fold in index order walks the accumulator
 * forwards. Duplicates are refused rather than summed: a client that sends one index twice has a
 * bug, and summing would weigh that coordinate twice behind its back. So n <= size follows.
 * Returns 0, or with *bad (if not NULL) the position in @idx of the first offender:
 * -ERANGE (negative, or >= @size), -EEXIST (equal to the index before it: a duplicate),
 * -EDOM (smaller than the index before it: not sorted), -EINVAL (@itype unknown, *bad 0).
 */
int fn_sparse_check(const void *idx, enum fn_sparse_itype itype, size_t n, uint64_t size,
		    size_t *bad);

/* The index at position @i of @idx (checked or not), as an unsigned 64-bit value. */
uint64_t fn_sparse_index(const void *idx, enum fn_sparse_itype itype, size_t i);

/*
 * acc[idx[i]] += w * vals[i] for i < n, indices checked by fn_sparse_check() first (unchecked
 * ones are the caller's bug: out-of-range indices write out of bounds). Determinism: each
 * touched element gets the same operation as fn_fold_f32() gives it under the implementation in
 * use (fused multiply-add under "avx2+fma", multiply then add under "generic"), so the result
 * equals fn_fold_f32() of the densified update bit for bit, but for the sign of a zero: an
 * untouched -0.0 stays -0.0 where the dense fold adds +0.0. @vals needs 4-byte alignment.
 */
void fn_sparse_fold_f32(float *restrict acc, const void *idx, enum fn_sparse_itype itype,
			const float *restrict vals, float w, size_t n);

/*
 * The squared L2 norm of the sparse update, sum of vals[i]^2 in double in index order: the
 * densified update's norm (its other coordinates are zero), what clipping scales by.
 */
double fn_sparse_sqnorm_f32(const float *vals, size_t n);

/* A SHM_DTYPE_SPARSE segment resolved: pointers into the arena, checked. */
struct fn_sparse_view {
	const void *idx;            /* nnz indices of @itype, increasing, each < the segment's n_elem */
	enum fn_sparse_itype itype;
	const float *vals;          /* nnz F32 values */
	uint64_t nnz;
};

/*
 * Resolves sparse segment @s of an input whose offsets start at @base (@size bytes: the arena,
 * or what a tcp payload holds) into @v, trusting nothing in it: the record (struct shm_sparse,
 * 8-byte aligned) and its indices and values inside [0, size), aligned to their element size,
 * an index dtype I32 or I64, F32 values, nnz <= s->n_elem, and with @indices every index
 * checked by fn_sparse_check() against s->n_elem. The gateway checked them already; a function
 * checks again (fn_input_from_desc(), once per input) because a descriptor is input: a forged
 * one must not write outside its accumulator. Returns 0 or -EINVAL.
 */
int fn_sparse_view(const uint8_t *base, uint64_t size, const struct shm_seg *s, bool indices,
		   struct fn_sparse_view *v);

/*
 * acc[s->dst_elem + idx[i]] += w * vals[i] for the sparse segment @s, whose indices were
 * checked (fn_sparse_view() with @indices, as fn_input_from_desc() does): 0, or -EINVAL for a
 * record out of bounds. acc is the whole flat model.
 */
int fn_sparse_fold_seg(float *acc, const uint8_t *base, uint64_t size, const struct shm_seg *s,
		       float w);

#endif
