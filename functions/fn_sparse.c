// SPDX-License-Identifier: MIT
/* Sparse updates: indices + values scatter-added into an accumulator, never densified. */
#include "fn_sparse.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "fn_fold.h"

uint64_t fn_sparse_index(const void *idx, enum fn_sparse_itype itype, size_t i)
{
	if (itype == FN_SPARSE_I32) {
		int32_t v;

		memcpy(&v, (const uint8_t *)idx + 4 * i, sizeof(v));
		/* A negative index becomes a huge one: the range check refuses both alike. */
		return v < 0 ? UINT64_MAX : (uint64_t)v;
	}
	int64_t v;

	memcpy(&v, (const uint8_t *)idx + 8 * i, sizeof(v));
	return v < 0 ? UINT64_MAX : (uint64_t)v;
}

int fn_sparse_check(const void *idx, enum fn_sparse_itype itype, size_t n, uint64_t size,
		    size_t *bad)
{
	uint64_t prev = 0;

	if (bad)
		*bad = 0;
	if (itype != FN_SPARSE_I32 && itype != FN_SPARSE_I64)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		uint64_t k = fn_sparse_index(idx, itype, i);
		int err = k >= size ? -ERANGE : !i ? 0 : k == prev ? -EEXIST : k < prev ? -EDOM : 0;

		if (err) {
			if (bad)
				*bad = i;
			return err;
		}
		prev = k;
	}
	return 0;
}

void fn_sparse_fold_f32(float *restrict acc, const void *idx, enum fn_sparse_itype itype,
			const float *restrict vals, float w, size_t n)
{
	/* The dense fold's rounding, chosen once per call (see fn_fold.h: determinism). */
	bool fused = !strcmp(fn_fold_impl(), "avx2+fma");

	for (size_t i = 0; i < n; i++) {
		uint64_t k = fn_sparse_index(idx, itype, i);
		float x;

		memcpy(&x, vals + i, sizeof(x));
		if (fused) {
			acc[k] = fmaf(w, x, acc[k]);
		} else {
			/* Two roundings, as generic_group() does: a volatile keeps them apart. */
			volatile float p = w * x;

			acc[k] = acc[k] + p;
		}
	}
}

double fn_sparse_sqnorm_f32(const float *vals, size_t n)
{
	double s = 0;

	for (size_t i = 0; i < n; i++) {
		float x;

		memcpy(&x, vals + i, sizeof(x));
		s += (double)x * x;
	}
	return s;
}

int fn_sparse_view(const uint8_t *base, uint64_t size, const struct shm_seg *s, bool indices,
		   struct fn_sparse_view *v)
{
	struct shm_sparse r;
	uint64_t es, at_i, at_v, nb_i, nb_v;

	if (s->dtype != SHM_DTYPE_SPARSE || s->src_off % 8 || s->src_off > size ||
	    size - s->src_off < sizeof(r))
		return -EINVAL;
	memcpy(&r, base + s->src_off, sizeof(r));
	es = r.idx_dtype == SHM_DTYPE_I32 ? 4 : r.idx_dtype == SHM_DTYPE_I64 ? 8 : 0;
	/* More entries than bytes cannot fit: this also keeps nnz * 12 below, whatever n_elem. */
	if (!es || r.val_dtype != SHM_DTYPE_F32 || r.nnz > s->n_elem || r.nnz > size / (es + 4))
		return -EINVAL;
	/* Offsets are relative to the record: in unsigned arithmetic, wrap-around is the check. */
	at_i = s->src_off + (uint64_t)r.idx_rel;
	at_v = s->src_off + (uint64_t)r.val_rel;
	nb_i = r.nnz * es;
	nb_v = r.nnz * 4;
	if (at_i % es || at_v % 4 || at_i > size || nb_i > size - at_i || at_v > size ||
	    nb_v > size - at_v)
		return -EINVAL;
	v->idx = base + at_i;
	v->itype = es == 4 ? FN_SPARSE_I32 : FN_SPARSE_I64;
	v->vals = (const float *)(const void *)(base + at_v);
	v->nnz = r.nnz;
	if (indices && fn_sparse_check(v->idx, v->itype, (size_t)r.nnz, s->n_elem, NULL))
		return -EINVAL;
	return 0;
}

int fn_sparse_fold_seg(float *acc, const uint8_t *base, uint64_t size, const struct shm_seg *s,
		       float w)
{
	struct fn_sparse_view v;

	/* The record again (O(1)), not the indices: fn_input_from_desc() checked those. */
	if (fn_sparse_view(base, size, s, false, &v))
		return -EINVAL;
	fn_sparse_fold_f32(acc + s->dst_elem, v.idx, v.itype, v.vals, w, (size_t)v.nnz);
	return 0;
}
