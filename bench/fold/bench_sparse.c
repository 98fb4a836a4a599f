// SPDX-License-Identifier: MIT
/*
 * A sparse update against the dense one it stands for: the bytes a client sends, and the time
 * to check and fold it into a model-sized accumulator. Single thread, warm caches for the
 * update (it was just received), the accumulator as a leaf holds it.
 *
 *   build/bench/fold/bench_sparse [--elems N] [--density D] [--reps R]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fn_fold.h"
#include "fn_sparse.h"
#include "trib_alloc.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Median of @reps runs of @what, in seconds. */
#define TIME(reps, out, what)                                        \
	do {                                                         \
		double t_[256];                                      \
		for (int r_ = 0; r_ < (reps); r_++) {                \
			double t0_ = now_s();                        \
			what;                                        \
			t_[r_] = now_s() - t0_;                      \
		}                                                    \
		qsort(t_, (size_t)(reps), sizeof(double), cmp_d);    \
		(out) = t_[(reps) / 2];                              \
	} while (0)

int main(int argc, char **argv)
{
	size_t n = 1u << 20, nnz;
	double density = 0.01, t_dense, t_s32, t_s64, t_c32, t_c64;
	int reps = 31;
	float *acc, *dense, *vals;
	int32_t *i32;
	int64_t *i64;
	uint64_t seed = 1;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--elems"))
			n = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--density"))
			density = strtod(argv[i + 1], NULL);
		else if (!strcmp(argv[i], "--reps"))
			reps = atoi(argv[i + 1]);
	}
	if (reps < 1 || reps > 256 || !(density > 0 && density <= 1) || n < 1) {
		fprintf(stderr, "usage: bench_sparse [--elems N] [--density 0..1] [--reps 1..256]\n");
		return 2;
	}
	nnz = (size_t)((double)n * density);
	if (nnz < 1)
		nnz = 1;
	acc = trib_calloc(n, 4);
	dense = trib_calloc(n, 4);
	vals = trib_malloc(nnz * 4);
	i32 = trib_malloc(nnz * 4);
	i64 = trib_malloc(nnz * 8);
	if (!acc || !dense || !vals || !i32 || !i64)
		return 1;
	/* Evenly spread with a random jitter: sorted, distinct. */
	for (size_t k = 0; k < nnz; k++) {
		size_t lo = k * n / nnz, hi = (k + 1) * n / nnz;

		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		i64[k] = (int64_t)(lo + (seed >> 33) % (hi - lo));
		i32[k] = (int32_t)i64[k];
		vals[k] = (float)((seed >> 11) & 0xffff) / 65536.0f - 0.5f;
		dense[i64[k]] = vals[k];
	}
	TIME(reps, t_dense, fn_fold_f32(acc, dense, 0.5f, n));
	TIME(reps, t_s32, fn_sparse_fold_f32(acc, i32, FN_SPARSE_I32, vals, 0.5f, nnz));
	TIME(reps, t_s64, fn_sparse_fold_f32(acc, i64, FN_SPARSE_I64, vals, 0.5f, nnz));
	TIME(reps, t_c32, (void)fn_sparse_check(i32, FN_SPARSE_I32, nnz, n, NULL));
	TIME(reps, t_c64, (void)fn_sparse_check(i64, FN_SPARSE_I64, nnz, n, NULL));
	printf("model %zu elements, %zu sent (%.2f%%), fold impl %s, median of %d runs\n", n, nnz,
	       100.0 * (double)nnz / (double)n, fn_fold_impl(), reps);
	printf("%-22s %12s %14s %14s\n", "update", "data bytes", "fold (us)", "check (us)");
	printf("%-22s %12zu %14.1f %14s\n", "dense F32", n * 4, t_dense * 1e6, "-");
	printf("%-22s %12zu %14.1f %14.1f\n", "sparse I32 + F32", nnz * 8, t_s32 * 1e6, t_c32 * 1e6);
	printf("%-22s %12zu %14.1f %14.1f\n", "sparse I64 + F32", nnz * 12, t_s64 * 1e6,
	       t_c64 * 1e6);
	trib_free(acc);
	trib_free(dense);
	trib_free(vals);
	trib_free(i32);
	trib_free(i64);
	return 0;
}
