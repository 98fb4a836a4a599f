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
