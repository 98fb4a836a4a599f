/* SPDX-License-Identifier: MIT */
/* Exact robust aggregation over one shard: median, trimmed mean, Krum, Multi-Krum, L2 clipping. */
#ifndef FN_ROBUST_H
#define FN_ROBUST_H

#include <stddef.h>
#include <stdint.h>

/*
 * Sharding (docs/ALGORITHMS.md): a round's model of N coordinates is cut into ranges [lo, hi);
 * the function owning a range sees, for that range only, the values of all k clients of the
 * round: rows[i] points at client i's values for [lo, hi) (n = hi - lo floats, borrowed, read
 * only, any 4-byte alignment). Coordinate-wise rules finish inside the shard; Krum and clipping
 * need one number per client (pair) summed over all shards first.
 *
 * Inputs are finite (the gateway rejects NaN and Inf with 422). Any finite f32 input gives a
 * finite result: sums of squares and distances accumulate in double (a squared difference of two
 * f32 values is below 1.2e77, so even 2^64 of them stay finite), and means are formed in double
 * and rounded to f32 once.
 */

/* Coordinates per tile of the median and trimmed mean, and their scratch size in floats. */
#define FN_ROBUST_TILE 16
#define FN_ROBUST_SCRATCH(k) ((size_t)(k) * FN_ROBUST_TILE)

/*
 * out[j] = median of rows[0][j] .. rows[k-1][j] for j < n, as numpy.median: for even k, the mean
 * of the two middle values (formed in double, so it cannot overflow). Selection per coordinate,
 * O(k) expected and O(k log k) worst case, on tiles of FN_ROBUST_TILE coordinates copied into
 * @scratch (FN_ROBUST_SCRATCH(k) floats, caller-owned, overwritten). @out (n floats,
 * caller-owned) must not overlap the rows. 0, or -EINVAL if k = 0.
 */
int fn_robust_median(const float *const *rows, size_t k, size_t n, float *out, float *scratch);

/*
 * Values cut from each end by the trimmed mean of k values with fraction @trim: floor(trim * k)
 * computed in double, exactly as scipy.stats.trim_mean does. -EINVAL unless 0 <= trim < 0.5 and
 * k >= 1 (then at least one value is kept).
 */
int fn_robust_trim_count(double trim, size_t k, size_t *cut);

/*
 * out[j] = scipy.stats.trim_mean(rows[.][j], trim): sort the k values, drop c = floor(trim * k)
 * from each end, and take the mean of the k - 2c left (summed in double, rounded once). The
 * order statistics come from selection, not sorting: O(k) expected per coordinate. @scratch:
 * FN_ROBUST_SCRATCH(k) floats, caller-owned. 0 or -EINVAL (see fn_robust_trim_count()).
 */
int fn_robust_trimmed_mean(const float *const *rows, size_t k, size_t n, double trim, float *out,
			   float *scratch);

/*
 * Krum distances, shard part: d[i*k + j] += sum over this shard of (rows[i][t] - rows[j][t])^2,
 * in double, for all i != j (d is symmetric; the diagonal is left as it is). @d: k*k doubles,
 * caller-owned; zero it once, then call once per shard (or add shards' matrices): the sum over
 * shards is the squared Euclidean distance over the whole model. O(k^2 n), tiled so a tile of
 * every row stays in cache.
 */
void fn_robust_pdist_partial(const float *const *rows, size_t k, size_t n, double *d);

/*
 * Krum and Multi-Krum (Blanchard et al. 2017) from the full distance matrix @d (k*k doubles,
 * borrowed). The score of client i is the sum of the k - f - 2 smallest d[i][j], j != i. The m
 * clients with the lowest scores are written to @selected (m entries, caller-owned) in order of
 * (score, index): ties go to the lower index, so selected[0] is Krum's choice. Scores are
 * computed once (not re-computed after each pick). @scores, if not NULL, gets all k scores (k
 * doubles, caller-owned). @scratch: 2k doubles, caller-owned. 0, or -EINVAL unless
 * k >= 2f + 3 and 1 <= m <= k - f.
 */
int fn_krum_select(const double *d, size_t k, size_t f, size_t m, uint32_t *selected,
		   double *scores, double *scratch);

/*
 * out[j] = mean of rows[sel[0]][j] .. rows[sel[m-1]][j] (unweighted, in double, rounded once):
 * Multi-Krum's aggregate on one shard. @sel (m indices < k) is borrowed; @out (n floats) is
 * caller-owned. 0, or -EINVAL if m = 0 or an index is >= k.
 */
int fn_robust_mean_rows(const float *const *rows, size_t k, const uint32_t *sel, size_t m, size_t n,
			float *out);

/* *sumsq += sum of x[i]^2 in double: one shard's part of an update's squared L2 norm. */
void fn_robust_sumsq_partial(const float *x, size_t n, double *sumsq);

/*
 * L2 clipping factor for an update whose squared norm over all shards is @sumsq:
 * *scale = min(1, clip_norm / sqrt(sumsq)) (1 for a zero update). The caller folds the update
 * with weight w * scale, or scales it (fn_scale_f32), on every shard with the same factor.
 * 0, or -EINVAL unless clip_norm > 0 and finite and sumsq >= 0.
 */
int fn_robust_clip_scale(double sumsq, double clip_norm, float *scale);

#endif
