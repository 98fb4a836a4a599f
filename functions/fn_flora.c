// SPDX-License-Identifier: MIT
/* FLoRA: placement of weighted LoRA pairs in rank blocks, packing, and the merge (fn_flora.h). */
#include "fn_flora.h"

#include <errno.h>
#include <string.h>

int fn_flora_place(float *a_stack, float *b_stack, size_t m, size_t n, size_t R, size_t S,
		   size_t s, size_t r, const float *A, const float *B, double w)
{
	size_t cols = S * R, off = s * R;

	if (s >= S || r > R || !(w > 0))
		return -EINVAL;
	for (size_t i = 0; i < r; i++)
		for (size_t j = 0; j < n; j++)
			a_stack[(off + i) * n + j] = (float)(w * (double)A[i * n + j]);
	for (size_t i = 0; i < m; i++)
		memcpy(b_stack + i * cols + off, B + i * r, r * sizeof(float));
	return 0;
}

int fn_flora_finish(float *a_stack, size_t rows, size_t n, double W)
{
	if (!(W > 0))
		return -EDOM;
	/* w A / W: the weight was applied at placement, so p_k A_k carries two roundings. */
	for (size_t i = 0; i < rows * n; i++)
		a_stack[i] = (float)((double)a_stack[i] / W);
	return 0;
}

size_t fn_flora_pack(float *a_stack, float *b_stack, size_t m, size_t n, size_t R, size_t S,
		     const uint32_t *ranks)
{
	size_t cols = S * R, used = 0;

	for (size_t s = 0; s < S; s++)
		if (ranks[s] > R)
			return (size_t)-1;
	/* Blocks only move towards the front (used <= s R), so memmove in slot order is safe. */
	for (size_t s = 0; s < S; s++) {
		size_t r = ranks[s], from = s * R;

		if (!r)
			continue;
		if (from != used) {
			memmove(a_stack + used * n, a_stack + from * n, r * n * sizeof(float));
			for (size_t i = 0; i < m; i++)
				memmove(b_stack + i * cols + used, b_stack + i * cols + from,
					r * sizeof(float));
		}
		used += r;
	}
	memset(a_stack + used * n, 0, (cols - used) * n * sizeof(float));
	for (size_t i = 0; i < m; i++)
		memset(b_stack + i * cols + used, 0, (cols - used) * sizeof(float));
	return used;
}

void fn_flora_merge(float *W, const float *a_stack, const float *b_stack, size_t m, size_t n,
		    size_t stride, size_t used)
{
	for (size_t i = 0; i < m; i++)
		for (size_t j = 0; j < n; j++) {
			double acc = 0.0;

			for (size_t q = 0; q < used; q++)
				acc += (double)b_stack[i * stride + q] * (double)a_stack[q * n + j];
			W[i * n + j] = (float)((double)W[i * n + j] + acc);
		}
}
