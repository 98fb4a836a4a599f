// SPDX-License-Identifier: MIT
/* Bulyan's selection (recursive Krum) and its coordinate-wise trimmed mean: see fn_bulyan.h. */
#include "fn_bulyan.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

int fn_bulyan_check(size_t k, size_t f)
{
	if (f < 1 || k < 3 || k > UINT32_MAX || (k - 3) / 4 < f)
		return -EINVAL;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

int fn_bulyan_select(const double *d, size_t k, size_t f, uint32_t *selected, double *scratch)
{
	/* @row gathers one update's distances; @taken marks the selected (1.0) in doubles. */
	double *row = scratch, *taken = scratch + k;
	size_t theta, pick, i, j;
	int err = fn_bulyan_check(k, f);

	if (err)
		return err;
	theta = FN_BULYAN_THETA(k, f);
	for (i = 0; i < k; i++)
		taken[i] = 0.0;
	for (pick = 0; pick < theta; pick++) {
		size_t r = k - pick, q = r >= f + 3 ? r - f - 2 : 1, best = k;
		double best_s = 0.0;

		for (i = 0; i < k; i++) {
			double s = 0.0;
			size_t c = 0;

			if (taken[i] != 0.0)
				continue;
			for (j = 0; j < k; j++)
				if (j != i && taken[j] == 0.0)
					row[c++] = d[i * k + j];
			/* Sorted before summing: equal multisets give bit-equal scores (ties by index). */
			qsort(row, c, sizeof(*row), cmp_double);
			for (j = 0; j < q && j < c; j++)
				s += row[j];
			if (best == k || s < best_s) {
				best = i;
				best_s = s;
			}
		}
		if (best == k || !isfinite(best_s))
			return -EINVAL;
		selected[pick] = (uint32_t)best;
		taken[best] = 1.0;
	}
	return 0;
}

int fn_bulyan_aggregate(const float *const *rows, size_t k, const uint32_t *sel, size_t theta,
			size_t f, size_t n, float *out, float *scratch)
{
	size_t t, r;

	if (theta < 2 * f + 1)
		return -EINVAL;
	for (r = 0; r < theta; r++)
		if (sel[r] >= k)
			return -EINVAL;
	for (t = 0; t < n; t++) {
		double s = 0.0;

		for (r = 0; r < theta; r++)
			scratch[r] = rows[sel[r]][t];
		qsort(scratch, theta, sizeof(*scratch), cmp_float);
		for (r = f; r < theta - f; r++)
			s += (double)scratch[r];
		out[t] = (float)(s / (double)(theta - 2 * f));
	}
	return 0;
}
