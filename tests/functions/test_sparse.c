// SPDX-License-Identifier: MIT
/* Tests of the sparse fold: equal to the dense fold of the densified update; hostile indices. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_fold.h"
#include "fn_opt.h"
#include "fn_sparse.h"
#include "trib_alloc.h"

static const char *const impls[] = { "generic", "avx2+fma" };

/* A deterministic pseudo-random float in (-2, 2) with a full mantissa. */
static float rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((double)(*s >> 11) / (double)(1ull << 53) * 4.0 - 2.0);
}

/* n sorted distinct indices in [0, size) (every stride-th, offset), as I32 and I64. */
static void make_idx(int32_t *i32, int64_t *i64, size_t n, size_t stride, size_t off)
{
	for (size_t i = 0; i < n; i++) {
		i32[i] = (int32_t)(off + i * stride);
		i64[i] = (int64_t)(off + i * stride);
	}
}

Test(fn_sparse, equals_the_dense_fold_of_the_densified_update)
{
	const size_t size = 10007, n = 997, stride = 10;
	float *acc_s = trib_malloc(size * 4), *acc_d = trib_malloc(size * 4);
	float *dense = trib_calloc(size, 4), *vals = trib_malloc(n * 4);
	int32_t *i32 = trib_malloc(n * 4);
	int64_t *i64 = trib_malloc(n * 8);
	uint64_t s = 7;
	double sq = 0;

	cr_assert(acc_s && acc_d && dense && vals && i32 && i64);
	make_idx(i32, i64, n, stride, 3);
	for (size_t i = 0; i < n; i++) {
		vals[i] = rnd(&s);
		dense[3 + i * stride] = vals[i];
		sq += (double)vals[i] * vals[i];
	}
	cr_assert_eq(fn_sparse_check(i32, FN_SPARSE_I32, n, size, NULL), 0);
	cr_assert_eq(fn_sparse_check(i64, FN_SPARSE_I64, n, size, NULL), 0);
	for (size_t m = 0; m < 2; m++) {
		if (fn_fold_set_impl(impls[m]) == -ENOTSUP)
			continue;
		for (int t = 0; t < 2; t++) {
			uint64_t s2 = 99;

			for (size_t i = 0; i < size; i++)
				acc_s[i] = acc_d[i] = rnd(&s2) + 0.5f; /* no -0.0: see fn_sparse.h */
			/* Three updates of different weights into the same accumulator. */
			for (int u = 0; u < 3; u++) {
				float w = 0.3f + (float)u * 1.7f;

				fn_fold_f32(acc_d, dense, w, size);
				fn_sparse_fold_f32(acc_s, t ? (void *)i64 : (void *)i32,
						   t ? FN_SPARSE_I64 : FN_SPARSE_I32, vals, w, n);
			}
			cr_assert_eq(memcmp(acc_s, acc_d, size * 4), 0,
				     "%s %s: sparse fold differs from the dense one", impls[m],
				     t ? "I64" : "I32");
		}
	}
	cr_assert_eq(fn_fold_set_impl("generic"), 0);
	cr_assert_eq(fn_sparse_sqnorm_f32(vals, n), sq);
	cr_assert_eq(fn_sparse_sqnorm_f32(vals, 0), 0.0);
	trib_free(acc_s);
	trib_free(acc_d);
	trib_free(dense);
	trib_free(vals);
	trib_free(i32);
	trib_free(i64);
}

Test(fn_sparse, hostile_indices_are_refused_at_the_first_offender)
{
	static const struct {
		int64_t idx[6];
		size_t n;
		uint64_t size;
		int err;
		size_t bad;
		const char *what;
	} cases[] = {
		{ { 0, 1, 2 }, 3, 3, 0, 0, "every index of a small tensor" },
		{ { 0 }, 0, 0, 0, 0, "empty on an empty tensor" },
		{ { 0, 1, 3 }, 3, 3, -ERANGE, 2, "index == size" },
		{ { 5, 7, 1000000 }, 3, 100, -ERANGE, 2, "far out of range" },
		{ { -1, 0, 1 }, 3, 10, -ERANGE, 0, "negative" },
		{ { 0, 2, 2, 3 }, 4, 10, -EEXIST, 2, "duplicate" },
		/* More indices than elements: one must repeat or fall out of range. */
		{ { 0, 1, 2, 0 }, 4, 3, -EDOM, 3, "more indices than elements" },
		{ { 0, 1, 2, 2 }, 4, 3, -EEXIST, 3, "more indices than elements, repeated" },
		{ { 0, 4, 3 }, 3, 10, -EDOM, 2, "not sorted" },
		{ { 9, 8, 8 }, 3, 10, -EDOM, 1, "descending" },
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int32_t i32[6];
		size_t bad = 77;
		int err;

		for (size_t i = 0; i < 6; i++)
			i32[i] = (int32_t)cases[c].idx[i];
		int want = cases[c].err;

		err = fn_sparse_check(cases[c].idx, FN_SPARSE_I64, cases[c].n, cases[c].size, &bad);
		cr_assert_eq(err, want, "I64 %s: %d", cases[c].what, err);
		cr_assert_eq(bad, cases[c].bad, "I64 %s: at %zu", cases[c].what, bad);
		err = fn_sparse_check(i32, FN_SPARSE_I32, cases[c].n, cases[c].size, &bad);
		cr_assert_eq(err, want, "I32 %s: %d", cases[c].what, err);
		cr_assert_eq(bad, cases[c].bad, "I32 %s: at %zu", cases[c].what, bad);
	}
	/* An I64 index above INT32_MAX and one above 2^63 (negative as int64). */
	int64_t big[2] = { (int64_t)1 << 40, INT64_MIN };
	size_t bad = 9;

	cr_assert_eq(fn_sparse_check(big, FN_SPARSE_I64, 1, (uint64_t)1 << 41, &bad), 0);
	cr_assert_eq(fn_sparse_check(big + 1, FN_SPARSE_I64, 1, UINT64_MAX, &bad), -ERANGE);
	cr_assert_eq(fn_sparse_check(big, 3, 1, 10, &bad), -EINVAL);
	cr_assert_eq(bad, 0);
}

/*
 * An arena as the gateway lays out a sparse update: its indices and values in the body, the
 * record after the body, the segment table after the record; and the same update dense.
 */
#define SP_N 300        /* elements of the model: one tensor of 200, one of 100 */
#define SP_NNZ 17
#define SP_ARENA 16384
#define SP_IDX 0        /* I64 indices */
#define SP_VAL 256      /* F32 values */
#define SP_DENSE 512    /* the dense update: 300 floats */
#define SP_REC 2048     /* struct shm_sparse */
#define SP_SEGS 2112    /* the sparse update's two segments; the dense one's at +64 */

struct sp_fixture {
	uint8_t *arena;
	struct shm_desc sparse, dense;
	struct fn_config cfg;
	struct fn_params par;
	struct fn_algo_ctx ctx;
};

static void sp_init(struct sp_fixture *f, uint16_t flags)
{
	uint8_t *a = trib_calloc(1, SP_ARENA);
	int64_t *idx = (int64_t *)(void *)(a + SP_IDX);
	float *val = (float *)(void *)(a + SP_VAL), *dense = (float *)(void *)(a + SP_DENSE);
	struct shm_sparse *rec = (struct shm_sparse *)(void *)(a + SP_REC);
	struct shm_seg *seg = (struct shm_seg *)(void *)(a + SP_SEGS);
	uint64_t s = 3;

	cr_assert(a);
	for (size_t i = 0; i < SP_NNZ; i++) {
		idx[i] = (int64_t)(i * 11 + 2); /* < 200 */
		val[i] = rnd(&s) * 3.0f;
		dense[idx[i]] = val[i];
	}
	for (size_t i = 200; i < SP_N; i++)
		dense[i] = rnd(&s);
	*rec = (struct shm_sparse){ .idx_rel = SP_IDX - SP_REC, .val_rel = SP_VAL - SP_REC,
				    .nnz = SP_NNZ, .idx_dtype = SHM_DTYPE_I64,
				    .val_dtype = SHM_DTYPE_F32 };
	seg[0] = (struct shm_seg){ .src_off = SP_REC, .dst_elem = 0, .n_elem = 200,
				   .dtype = SHM_DTYPE_SPARSE, .scale = 1.0f };
	seg[1] = (struct shm_seg){ .src_off = SP_DENSE + 800, .dst_elem = 200, .n_elem = 100,
				   .dtype = SHM_DTYPE_F32, .scale = 1.0f };
	seg[2] = (struct shm_seg){ .src_off = SP_DENSE, .dst_elem = 0, .n_elem = SP_N,
				   .dtype = SHM_DTYPE_F32, .scale = 1.0f };
	f->arena = a;
	f->sparse = (struct shm_desc){ .version = SHM_ABI_VERSION, .kind = SHM_DESC_UPDATE,
				       .job = 1, .nsegs = 2, .segs_off = SP_SEGS, .weight = 7,
				       .count = 1 };
	f->dense = f->sparse;
	f->dense.nsegs = 1;
	f->dense.segs_off = SP_SEGS + 2 * sizeof(struct shm_seg);
	f->cfg = (struct fn_config){ .version = FN_ABI_VERSION, .kind = FN_MSG_CONFIG, .fn_id = 7,
				     .job = 1, .expected = 1, .role = FN_ROLE_LEAF,
				     .algorithm = FN_ALGO_FEDAVG, .n_elem = SP_N,
				     .flags = FN_CFG_FINAL, .dataplane = FN_DP_SHM_UNIX };
	f->par = (struct fn_params){ .version = FN_ABI_VERSION, .kind = FN_MSG_PARAMS,
				     .fn_id = 7, .server = FN_OPT_FEDAVG, .flags = flags,
				     .server_lr = 1.0f, .clip_norm = 2.0f };
	f->ctx = (struct fn_algo_ctx){ .cfg = &f->cfg, .par = &f->par, .base = a,
				       .size = SP_ARENA };
}

/* The leaf pipeline of @f over descriptor @d into @acc (SP_N floats, zeroed here). */
static int sp_fold(struct sp_fixture *f, const struct shm_desc *d, float *acc)
{
	struct fn_pipeline p;
	struct fn_input in;
	void *block;
	int err;

	memset(acc, 0, SP_N * sizeof(float));
	f->ctx.acc = acc;
	cr_assert_eq(fn_pipeline_compose(&p, &f->cfg, &f->par, NULL), 0);
	block = trib_calloc(1, fn_pipeline_state_size(&p) + 1);
	cr_assert(block);
	cr_assert_eq(fn_pipeline_init(&p, block, &f->ctx), 0);
	err = fn_input_from_desc(&f->ctx, d, &in);
	if (!err)
		err = fn_pipeline_fold(&p, &f->ctx, &in);
	fn_pipeline_fini(&p);
	trib_free(block);
	return err;
}

Test(fn_sparse, a_sparse_segment_folds_as_its_densified_update_through_the_pipeline)
{
	static const uint16_t flags[] = { 0, FN_PAR_CLIP };
	float got[SP_N], want[SP_N];

	for (size_t m = 0; m < 2; m++) {
		if (fn_fold_set_impl(impls[m]) == -ENOTSUP)
			continue;
		for (size_t k = 0; k < 2; k++) {
			struct sp_fixture f;

			sp_init(&f, flags[k]);
			cr_assert_eq(sp_fold(&f, &f.sparse, got), 0);
			cr_assert_eq(sp_fold(&f, &f.dense, want), 0);
			for (size_t i = 0; i < SP_N; i++) {
				/* Unclipped: the same bits. Clipped: the norm's sum may associate
				 * otherwise (zeros skipped), so the scale may differ by an ulp. */
				if (!flags[k])
					cr_assert_eq(got[i], want[i], "%s: element %zu", impls[m], i);
				else
					cr_assert_float_eq(got[i], want[i], 1e-6f * 30,
							   "%s clipped: element %zu", impls[m], i);
			}
			trib_free(f.arena);
		}
	}
	cr_assert_eq(fn_fold_set_impl("generic"), 0);
}

/* A forged record or segment: fn_input_from_desc() refuses it, nothing is folded. */
Test(fn_sparse, a_forged_sparse_record_is_refused_before_the_fold)
{
	static const char *const what[] = {
		"record outside the arena", "record misaligned", "indices before the arena",
		"values past the arena", "index dtype F32", "values F16", "nnz over n_elem",
		"an index out of the segment's range", "indices not sorted", "values misaligned",
		"segment past the model", "nnz past what the arena holds, with a forged n_elem",
	};
	float acc[SP_N];

	for (size_t c = 0; c < sizeof(what) / sizeof(what[0]); c++) {
		struct sp_fixture f;
		struct shm_sparse *rec;
		struct shm_seg *seg;
		int64_t *idx;

		sp_init(&f, 0);
		rec = (struct shm_sparse *)(void *)(f.arena + SP_REC);
		seg = (struct shm_seg *)(void *)(f.arena + SP_SEGS);
		idx = (int64_t *)(void *)(f.arena + SP_IDX);
		switch (c) {
		case 0: seg[0].src_off = SP_ARENA - 16; break;
		case 1: seg[0].src_off = SP_REC + 4; break;
		case 2: rec->idx_rel = -(int64_t)SP_REC - 8; break;
		case 3: rec->val_rel = SP_ARENA - SP_REC - 8; break;
		case 4: rec->idx_dtype = SHM_DTYPE_F32; break;
		case 5: rec->val_dtype = SHM_DTYPE_F16; break;
		case 6: rec->nnz = 201; break;
		case 7: idx[SP_NNZ - 1] = 200; break;
		case 8: idx[3] = idx[2]; break;
		case 9: rec->val_rel += 2; break;
		case 10: seg[0].dst_elem = 150; break;
		default: seg[0].n_elem = UINT64_MAX; rec->nnz = (1ull << 62) + 1; break;
		}
		cr_assert_eq(sp_fold(&f, &f.sparse, acc), -EINVAL, "%s: not refused", what[c]);
		if (c == 11) {
			/* As a forward's receiver calls it: n_elem unchecked by anything else. */
			struct fn_sparse_view v;

			cr_assert_eq(fn_sparse_view(f.arena, SP_ARENA, &seg[0], true, &v), -EINVAL);
		}
		trib_free(f.arena);
	}
}
