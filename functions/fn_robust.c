// SPDX-License-Identifier: MIT
/* Exact robust rules over one shard of a round (median, trimmed mean, Krum) and their stage. */
#include "fn_robust.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fn_algo.h"
#include "fn_bulyan.h"
#include "fn_dequant.h"
#include "trib_alloc.h"

#ifdef __FAST_MATH__
#error "fn_robust.c needs IEEE float semantics: build it without -ffast-math"
#endif

/* Below this many values a range is finished by insertion sort. */
#define SELECT_SMALL 16
/* Coordinates per tile in the Krum distance and mean loops: k tiles of 1 KiB stay in L2. */
#define TILE 256

static void insertion_sort(float *a, size_t lo, size_t hi)
{
	size_t i, j;

	for (i = lo + 1; i < hi; i++) {
		float x = a[i];

		for (j = i; j > lo && a[j - 1] > x; j--)
			a[j] = a[j - 1];
		a[j] = x;
	}
}

static void sift_down(float *a, size_t root, size_t n)
{
	for (;;) {
		size_t c = 2 * root + 1;
		float t;

		if (c >= n)
			return;
		if (c + 1 < n && a[c + 1] > a[c])
			c++;
		if (!(a[c] > a[root]))
			return;
		t = a[c];
		a[c] = a[root];
		a[root] = t;
		root = c;
	}
}

/* Sorts a[0..n): the O(n log n) fallback when selection keeps picking bad pivots. */
static void heap_sort(float *a, size_t n)
{
	size_t i;

	for (i = n / 2; i-- > 0;)
		sift_down(a, i, n);
	for (i = n; i-- > 1;) {
		float t = a[0];

		a[0] = a[i];
		a[i] = t;
		sift_down(a, 0, i);
	}
}

static float median3(float x, float y, float z)
{
	if (x > y) {
		float t = x;

		x = y;
		y = t;
	}
	/* x <= y */
	if (z <= x)
		return x;
	return z < y ? z : y;
}

/*
 * Branch-free Lomuto partition of a[lo..hi): the values for which @le ? x <= p : x < p go to the
 * front, in one pass of swaps whose only data-dependent step is an index increment (no
 * mispredicted branches: twice as fast as a branchy three-way partition at k = 100). Returns
 * the end of the front part.
 */
static size_t partition(float *a, size_t lo, size_t hi, float p, bool le)
{
	size_t s = lo, i;

	for (i = lo; i < hi; i++) {
		float x = a[i];

		a[i] = a[s];
		a[s] = x;
		s += le ? x <= p : x < p;
	}
	return s;
}

/*
 * Introselect on a[lo..hi): afterwards a[nth] holds the value sorted order puts there, every
 * value before it is <= and every value after it is >=. Each round splits into < p, == p and
 * > p (two passes), so runs of equal values (f clients sending the same vector) stay linear;
 * after about 2 log2(k) rounds without converging the range is heap-sorted, so the worst case
 * is O(k log k). Always terminates and stays in bounds, whatever the comparisons say.
 */
static void select_nth(float *a, size_t lo, size_t hi, size_t nth)
{
	unsigned budget = 8;
	size_t s;

	for (s = hi - lo; s > 1; s >>= 1)
		budget += 2;
	while (hi - lo > SELECT_SMALL) {
		size_t lt, eq;
		float p;

		if (!budget--) {
			heap_sort(a + lo, hi - lo);
			return;
		}
		p = median3(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
		/* a[lo..lt) < p, then a[lt..eq) == p, a[eq..hi) > p. */
		lt = partition(a, lo, hi, p, false);
		if (nth < lt) {
			hi = lt;
			continue;
		}
		eq = partition(a, lt, hi, p, true);
		if (nth < eq)
			return;
		lo = eq;
	}
	insertion_sort(a, lo, hi);
}

/*
 * Copies coordinates [j0, j0 + tn) of every row into @tile, transposed: tile[t*k .. t*k + k) is
 * coordinate j0 + t of rows 0..k-1. Each row is read as one run (a cache line per row for a
 * full tile) instead of one float from each of k rows per coordinate: the rows sit in slots a
 * multiple of 4 KiB apart, so a per-coordinate gather evicts itself (3x slower at k = 100).
 */
static void gather_tile(const float *const *rows, size_t k, size_t j0, size_t tn, float *tile)
{
	size_t i, t;

	for (i = 0; i < k; i++) {
		const float *r = rows[i] + j0;

		for (t = 0; t < tn; t++)
			tile[t * k + i] = r[t];
	}
}

/* The median of a[0..k), which it reorders. */
static float median_of(float *a, size_t k)
{
	size_t h = k / 2, i;
	float lo;

	select_nth(a, 0, k, h);
	if (k & 1)
		return a[h];
	/* The lower middle value is the largest of the lower half. */
	lo = a[0];
	for (i = 1; i < h; i++)
		lo = a[i] > lo ? a[i] : lo;
	return (float)(((double)lo + (double)a[h]) * 0.5);
}

int fn_robust_median(const float *const *rows, size_t k, size_t n, float *out, float *scratch)
{
	size_t j0, t;

	if (!k)
		return -EINVAL;
	for (j0 = 0; j0 < n; j0 += FN_ROBUST_TILE) {
		size_t tn = n - j0 < FN_ROBUST_TILE ? n - j0 : FN_ROBUST_TILE;

		gather_tile(rows, k, j0, tn, scratch);
		for (t = 0; t < tn; t++)
			out[j0 + t] = median_of(scratch + t * k, k);
	}
	return 0;
}

int fn_robust_trim_count(double trim, size_t k, size_t *cut)
{
	if (!(trim >= 0.0 && trim < 0.5) || !k)
		return -EINVAL;
	/* scipy: lowercut = int(proportiontocut * nobs), so 0.29 * 100 cuts 28. */
	*cut = (size_t)(trim * (double)k);
	if (2 * *cut >= k)
		return -EINVAL;
	return 0;
}

/* The mean of a[c..k-c) once a[0..k) is ordered around positions c and k-c-1. */
static float trimmed_of(float *a, size_t k, size_t c)
{
	double s = 0.0;
	size_t i;

	if (c) {
		/* a[0..c) <= a[c] <= a[c+1..k); then split the right part at k-c-1. */
		select_nth(a, 0, k, c);
		if (k - c - 1 > c)
			select_nth(a, c + 1, k, k - c - 1);
	}
	for (i = c; i < k - c; i++)
		s += (double)a[i];
	return (float)(s / (double)(k - 2 * c));
}

int fn_robust_trimmed_mean(const float *const *rows, size_t k, size_t n, double trim, float *out,
			   float *scratch)
{
	size_t j0, t, c;
	int err;

	err = fn_robust_trim_count(trim, k, &c);
	if (err)
		return err;
	for (j0 = 0; j0 < n; j0 += FN_ROBUST_TILE) {
		size_t tn = n - j0 < FN_ROBUST_TILE ? n - j0 : FN_ROBUST_TILE;

		gather_tile(rows, k, j0, tn, scratch);
		for (t = 0; t < tn; t++)
			out[j0 + t] = trimmed_of(scratch + t * k, k, c);
	}
	return 0;
}

/* Squared distance of two tiles, in double, in four fixed lanes (vectorisable, deterministic). */
static double tile_dist2(const float *restrict a, const float *restrict b, size_t n)
{
	double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
	size_t t = 0;

	for (; t + 4 <= n; t += 4) {
		double e0 = (double)a[t] - (double)b[t];
		double e1 = (double)a[t + 1] - (double)b[t + 1];
		double e2 = (double)a[t + 2] - (double)b[t + 2];
		double e3 = (double)a[t + 3] - (double)b[t + 3];

		s0 += e0 * e0;
		s1 += e1 * e1;
		s2 += e2 * e2;
		s3 += e3 * e3;
	}
	for (; t < n; t++) {
		double e = (double)a[t] - (double)b[t];

		s0 += e * e;
	}
	return (s0 + s1) + (s2 + s3);
}

void fn_robust_pdist_partial(const float *const *rows, size_t k, size_t n, double *d)
{
	size_t t0, i, j;

	for (t0 = 0; t0 < n; t0 += TILE) {
		size_t tn = n - t0 < TILE ? n - t0 : TILE;

		for (i = 0; i < k; i++) {
			for (j = i + 1; j < k; j++) {
				double s = tile_dist2(rows[i] + t0, rows[j] + t0, tn);

				d[i * k + j] += s;
				d[j * k + i] += s;
			}
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int fn_krum_select(const double *d, size_t k, size_t f, size_t m, uint32_t *selected,
		   double *scores, double *scratch)
{
	double *row = scratch, *sc = scratch + k;
	size_t need, i, j, r, c;

	if (f >= k || k < 2 * f + 3 || m < 1 || m > k - f || k > UINT32_MAX)
		return -EINVAL;
	need = k - f - 2;
	for (i = 0; i < k; i++) {
		double s = 0.0;

		for (j = 0, c = 0; j < k; j++)
			if (j != i)
				row[c++] = d[i * k + j];
		/*
		 * Sorting (not selecting) before summing makes a score depend only on the multiset
		 * of distances, so clients with identical distances get bit-identical scores and
		 * the tie goes to the lower index, as documented.
		 */
		qsort(row, c, sizeof(*row), cmp_double);
		for (j = 0; j < need; j++)
			s += row[j];
		sc[i] = s;
		if (scores)
			scores[i] = s;
	}
	/* m smallest by (score, index); a picked score becomes +Inf (all real ones are finite). */
	for (r = 0; r < m; r++) {
		size_t best = k;

		for (i = 0; i < k; i++)
			if (isfinite(sc[i]) && (best == k || sc[i] < sc[best]))
				best = i;
		if (best == k)
			return -EINVAL;
		selected[r] = (uint32_t)best;
		sc[best] = INFINITY;
	}
	return 0;
}

int fn_robust_mean_rows(const float *const *rows, size_t k, const uint32_t *sel, size_t m, size_t n,
			float *out)
{
	double acc[TILE];
	size_t t0, t, r;

	if (!m)
		return -EINVAL;
	for (r = 0; r < m; r++)
		if (sel[r] >= k)
			return -EINVAL;
	for (t0 = 0; t0 < n; t0 += TILE) {
		size_t tn = n - t0 < TILE ? n - t0 : TILE;

		for (t = 0; t < tn; t++)
			acc[t] = 0.0;
		for (r = 0; r < m; r++) {
			const float *x = rows[sel[r]] + t0;

			for (t = 0; t < tn; t++)
				acc[t] += (double)x[t];
		}
		for (t = 0; t < tn; t++)
			out[t0 + t] = (float)(acc[t] / (double)m);
	}
	return 0;
}

void fn_robust_sumsq_partial(const float *x, size_t n, double *sumsq)
{
	double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
	size_t t = 0;

	for (; t + 4 <= n; t += 4) {
		s0 += (double)x[t] * (double)x[t];
		s1 += (double)x[t + 1] * (double)x[t + 1];
		s2 += (double)x[t + 2] * (double)x[t + 2];
		s3 += (double)x[t + 3] * (double)x[t + 3];
	}
	for (; t < n; t++)
		s0 += (double)x[t] * (double)x[t];
	*sumsq += (s0 + s1) + (s2 + s3);
}

int fn_robust_clip_scale(double sumsq, double clip_norm, float *scale)
{
	double norm, s;
	float fs;

	if (!(clip_norm > 0.0) || !isfinite(clip_norm) || !(sumsq >= 0.0))
		return -EINVAL;
	norm = sqrt(sumsq);
	s = norm > clip_norm ? clip_norm / norm : 1.0;
	/* Round down, so a clipped update's norm is not pushed above clip_norm by the rounding. */
	fs = (float)s;
	if ((double)fs > s)
		fs = nextafterf(fs, 0.0f);
	*scale = fs;
	return 0;
}

/* Coordinates a shard takes at once: k rows of this many floats are its decode scratch. */
#define SHARD_BLOCK 4096

/*
 * Coordinates [c, c + blk) of every update of a robust round, as f32 rows. F32 rows point into
 * the updates where they landed; compressed ones are decoded into @scratch (k x blk floats).
 * The block never crosses a segment (shard_block() cut it). 0 or -EINVAL.
 */
static int shard_rows(const struct fn_algo_ctx *ctx, const struct shm_desc *descs, uint32_t k,
		      uint64_t c, uint64_t blk, const float **rows, float *scratch)
{
	for (uint32_t u = 0; u < k; u++) {
		const struct shm_seg *s = NULL;
		struct fn_input in;

		if (fn_input_from_desc(ctx, &descs[u], &in))
			return -EINVAL;
		for (uint32_t i = 0; i < in.nsegs && !s; i++)
			if (c >= in.segs[i].dst_elem &&
			    c + blk <= in.segs[i].dst_elem + in.segs[i].n_elem)
				s = &in.segs[i];
		/* Sparse bodies are refused for robust jobs at the gateway (rt_api_sparse.c). */
		if (!s || s->dtype == SHM_DTYPE_SPARSE)
			return -EINVAL;
		if (s->dtype == SHM_DTYPE_F32) {
			rows[u] = (const float *)(const void *)(ctx->base + s->src_off) +
				  (c - s->dst_elem);
		} else {
			size_t es = s->dtype == SHM_DTYPE_I8 ? 1 : 2;
			float *dst = scratch + (size_t)u * blk;

			memset(dst, 0, blk * sizeof(float));
			fn_dequant_fold(dst, ctx->base + s->src_off + (c - s->dst_elem) * es,
					s->dtype, s->scale, 1.0f, (size_t)blk);
			rows[u] = dst;
		}
	}
	return 0;
}

/*
 * The next block from coordinate @c: at most SHARD_BLOCK and @hi - c, shortened to end where
 * any update's segment ends (updates' segments all break at the schema's tensors). 0 with
 * *blk set, or -EINVAL for a descriptor out of bounds.
 */
static int shard_block(const struct fn_algo_ctx *ctx, const struct fn_shard_task *t,
		       const struct shm_desc *descs, uint64_t c, uint64_t hi, uint64_t *blk)
{
	uint64_t b = hi - c < SHARD_BLOCK ? hi - c : SHARD_BLOCK;

	for (uint32_t u = 0; u < t->k; u++) {
		struct fn_input in;

		if (fn_input_from_desc(ctx, &descs[u], &in))
			return -EINVAL;
		for (uint32_t i = 0; i < in.nsegs; i++) {
			uint64_t lo = in.segs[i].dst_elem, end = lo + in.segs[i].n_elem;

			if (c >= lo && c < end && c + b > end)
				b = end - c;
		}
	}
	*blk = b;
	return 0;
}

/* One block of the task's rule into ctx->acc (or, Krum phase 1, into the shard's @dmat). */
static int shard_apply(const struct fn_algo_ctx *ctx, const struct fn_shard_task *t,
		       const float *const *rows, uint64_t c, uint64_t blk, float *tile,
		       double *dmat)
{
	switch (t->rule) {
	case FN_RULE_MEDIAN:
		return fn_robust_median(rows, t->k, (size_t)blk, ctx->acc + c, tile);
	case FN_RULE_TRIMMED_MEAN:
		return fn_robust_trimmed_mean(rows, t->k, (size_t)blk, t->trim, ctx->acc + c, tile);
	case FN_RULE_KRUM:
		if (t->phase == 1) {
			fn_robust_pdist_partial(rows, t->k, (size_t)blk, dmat);
			return 0;
		}
		if (!fn_ctx_range_ok(ctx, t->sel_off, (uint64_t)t->m * 4))
			return -EINVAL;
		return fn_robust_mean_rows(rows, t->k,
					   (const uint32_t *)(const void *)(ctx->base + t->sel_off),
					   t->m, (size_t)blk, ctx->acc + c);
	case FN_RULE_BULYAN:
		if (t->phase == 1) {
			fn_robust_pdist_partial(rows, t->k, (size_t)blk, dmat);
			return 0;
		}
		if (!fn_ctx_range_ok(ctx, t->sel_off, (uint64_t)t->m * 4) || t->m > t->k)
			return -EINVAL;
		return fn_bulyan_aggregate(rows, t->k,
					   (const uint32_t *)(const void *)(ctx->base + t->sel_off),
					   t->m, t->f, (size_t)blk, ctx->acc + c, tile);
	default:
		return -EINVAL;
	}
}

/* The task at par->state_off, checked: 0 with *task and *descs set, or -EINVAL. */
static int shard_task(const struct fn_algo_ctx *ctx, const struct fn_shard_task **task,
		      const struct shm_desc **descs)
{
	const struct fn_shard_task *t;

	if (!fn_ctx_range_ok(ctx, ctx->par->state_off, sizeof(*t)))
		return -EINVAL;
	t = (const struct fn_shard_task *)(const void *)(ctx->base + ctx->par->state_off);
	if (!t->k || !t->shards || ctx->cfg->index >= t->shards ||
	    !fn_ctx_range_ok(ctx, t->descs_off, (uint64_t)t->k * sizeof(**descs)))
		return -EINVAL;
	*task = t;
	*descs = (const struct shm_desc *)(const void *)(ctx->base + t->descs_off);
	return 0;
}

/*
 * A robust shard's whole work: its range of coordinates (the cfg->index-th of t->shards equal
 * ranges) over all k updates of the task in the arena, median or trimmed mean into the model,
 * or Krum's phases (partial distances; then the mean of the selected updates). For deltas
 * (FN_PAR_DELTA) the model moves by the robust aggregate. Memory: k x SHARD_BLOCK floats of
 * scratch and FN_ROBUST_SCRATCH(k) of tile, whatever the model's size.
 */
static int robust_shard(void *state, const struct fn_algo_ctx *ctx)
{
	const struct fn_shard_task *t;
	const struct shm_desc *descs;
	uint64_t n = ctx->cfg->n_elem, lo, hi, blk = 0;
	const float **rows = NULL;
	float *scratch = NULL, *tile = NULL;
	double *dmat = NULL;
	bool distances;
	int err;

	(void)state;
	err = shard_task(ctx, &t, &descs);
	if (err)
		return err;
	if (t->range_hi) {
		/* A cluster node's range: its shards split it as one node splits the model. */
		if (t->range_lo >= t->range_hi || t->range_hi > n)
			return -EINVAL;
		lo = t->range_lo;
		n = t->range_hi - t->range_lo;
	} else {
		lo = 0;
	}
	hi = lo + n * (ctx->cfg->index + 1) / t->shards;
	lo += n * ctx->cfg->index / t->shards;
	distances = (t->rule == FN_RULE_KRUM || t->rule == FN_RULE_BULYAN) && t->phase == 1;
	rows = trib_calloc(t->k, sizeof(*rows));
	scratch = trib_malloc((size_t)t->k * SHARD_BLOCK * sizeof(float));
	tile = trib_malloc(FN_ROBUST_SCRATCH(t->k) * sizeof(float));
	err = -ENOMEM;
	if (!rows || !scratch || !tile)
		goto out;
	err = -EINVAL;
	if (distances) {
		if (!fn_ctx_range_ok(ctx, t->dmat_off, (uint64_t)t->shards * t->k * t->k * 8))
			goto out;
		dmat = (double *)(void *)(ctx->base + t->dmat_off) +
		       (size_t)ctx->cfg->index * t->k * t->k;
		memset(dmat, 0, (size_t)t->k * t->k * sizeof(double));
	}
	for (uint64_t c = lo; c < hi; c += blk) {
		err = shard_block(ctx, t, descs, c, hi, &blk);
		if (!err)
			err = shard_rows(ctx, descs, t->k, c, blk, rows, scratch);
		if (!err)
			err = shard_apply(ctx, t, rows, c, blk, tile, dmat);
		if (err)
			goto out;
	}
	if ((ctx->par->flags & FN_PAR_DELTA) && ctx->par->model_off && !distances) {
		const float *prev = (const float *)(const void *)(ctx->base + ctx->par->model_off);

		for (uint64_t c = lo; c < hi; c++)
			ctx->acc[c] += prev[c];
	}
	err = 0;
out:
	trib_free(rows);
	trib_free(scratch);
	trib_free(tile);
	return err;
}

const struct fn_algo_ops fn_robust_ops = {
	.name = "robust",
	.state_size = 0,
	.shard = robust_shard,
};
