/* SPDX-License-Identifier: MIT */
/* Bulyan (El Mhamdi et al., ICML 2018): iterated Krum selection, then a coordinate-wise trimmed mean. */
#ifndef FN_BULYAN_H
#define FN_BULYAN_H

#include <stddef.h>
#include <stdint.h>

/*
 * Bulyan over k updates of which at most f are Byzantine, exact, in two shard phases like Krum
 * (fn_robust.h): the shards' partial distances are summed into d (fn_robust_pdist_partial()),
 * the runtime selects, then every shard aggregates its range.
 *
 *   selection  theta = k - 2f updates, one at a time: among the updates not yet selected (r of
 *              them), the Krum score of i is the sum of the q = max(1, r - f - 2) smallest
 *              d[i][j], j != i, j not selected; the lowest score (ties: the lower index) is
 *              selected and leaves the set. Scores are recomputed after each pick (the paper's
 *              recursive Krum; Flower's aggregate_bulyan counts q the same way).
 *   aggregate  per coordinate, the theta selected values sorted, f cut from each end, the mean
 *              of the beta = theta - 2f left (summed in ascending order in double, rounded once).
 *
 * Needs k >= 4f + 3 (then beta >= 3) and f >= 1 (f = 0 is the plain mean).
 */

/* Updates selected: k - 2f. */
#define FN_BULYAN_THETA(k, f) ((size_t)(k) - 2 * (size_t)(f))

/* 0, or -EINVAL unless f >= 1 and k >= 4f + 3. */
int fn_bulyan_check(size_t k, size_t f);

/*
 * The selection from the full distance matrix @d (k*k doubles, borrowed): theta indexes into
 * @selected (caller-owned, theta entries), in the order they were picked. @scratch: 2k doubles,
 * caller-owned. 0 or -EINVAL (fn_bulyan_check()).
 */
int fn_bulyan_select(const double *d, size_t k, size_t f, uint32_t *selected, double *scratch);

/*
 * out[j] = the mean of the middle theta - 2f of rows[sel[0]][j] .. rows[sel[theta-1]][j] for
 * j < n (one shard's range; rows as in fn_robust.h). @sel: theta indexes < k, borrowed. @out: n
 * floats, caller-owned. @scratch: theta floats, caller-owned. 0, or -EINVAL if theta < 2f + 1
 * or an index is >= k.
 */
int fn_bulyan_aggregate(const float *const *rows, size_t k, const uint32_t *sel, size_t theta,
			size_t f, size_t n, float *out, float *scratch);

#endif
