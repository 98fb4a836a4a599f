// SPDX-License-Identifier: MIT
/* Tests of the algorithm table and composed pipelines against the flag-based code they replace. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_dequant.h"
#include "fn_dp.h"
#include "fn_fold.h"
#include "fn_opt.h"
#include "fn_robust.h"
#include "trib_alloc.h"

#define N 300         /* model elements: 200 as f32, then 100 as int8 x scale */
#define N_F32 200
#define K 5           /* updates */
#define ARENA (1u << 16)
#define SEGS_OFF 1024 /* update u's two segments at SEGS_OFF + 64 u */
#define DATA_OFF 4096 /* update u's bytes at DATA_OFF + 2048 u */
#define LEAF_SEG 16384 /* the leaf's output: its segment, then its sum at LEAF_ACC */
#define LEAF_ACC 16448
#define MODEL_OFF 20480
#define STATE_OFF 24576

/* A fake arena with K updates of mixed dtypes, their descriptors, and the configs. */
struct fixture {
	uint8_t *arena;
	struct shm_desc d[K];
	struct fn_config cfg;
	struct fn_params par;
	struct fn_algo_ctx ctx;
};

static void fixture_init(struct fixture *fx, uint16_t role, uint16_t flags)
{
	uint32_t seed = 12345;

	fx->arena = trib_calloc(1, ARENA);
	cr_assert(fx->arena);
	for (uint32_t u = 0; u < K; u++) {
		struct shm_seg *s = (struct shm_seg *)(void *)(fx->arena + SEGS_OFF + 64 * u);
		float *x = (float *)(void *)(fx->arena + DATA_OFF + 2048 * u);
		int8_t *q = (int8_t *)(fx->arena + DATA_OFF + 2048 * u + 4 * N_F32);

		for (uint32_t i = 0; i < N_F32; i++) {
			seed = seed * 1103515245u + 12345u;
			/* Client u's values grow with u, so clipping cuts some and not others. */
			x[i] = ((float)(seed >> 8) / (float)(1u << 24) - 0.5f) * (float)(u + 1) * 0.3f;
		}
		for (uint32_t i = 0; i < N - N_F32; i++)
			q[i] = (int8_t)((int)(i * 7 + u * 13) % 255 - 127);
		s[0] = (struct shm_seg){ .src_off = DATA_OFF + 2048 * u, .dst_elem = 0,
					 .n_elem = N_F32, .dtype = SHM_DTYPE_F32, .scale = 1.0f };
		s[1] = (struct shm_seg){ .src_off = DATA_OFF + 2048 * u + 4 * N_F32,
					 .dst_elem = N_F32, .n_elem = N - N_F32,
					 .dtype = SHM_DTYPE_I8, .scale = 0.001f * (float)(u + 1) };
		fx->d[u] = (struct shm_desc){ .version = SHM_ABI_VERSION, .kind = SHM_DESC_UPDATE,
					      .job = 1, .round = 3, .nsegs = 2,
					      .segs_off = SEGS_OFF + 64 * u,
					      .weight = (double)(u * 3 + 1), .count = 1, .seq = u };
	}
	fx->cfg = (struct fn_config){ .version = FN_ABI_VERSION, .kind = FN_MSG_CONFIG,
				      .fn_id = 7, .job = 1, .round = 3, .expected = K,
				      .role = role, .algorithm = FN_ALGO_FEDAVG, .n_elem = N,
				      .flags = FN_CFG_FINAL, .dataplane = FN_DP_SHM_UNIX };
	fx->par = (struct fn_params){ .version = FN_ABI_VERSION, .kind = FN_MSG_PARAMS,
				      .fn_id = 7, .server = FN_OPT_FEDAVG, .flags = flags,
				      .server_lr = 1.0f, .clip_norm = 1.5f,
				      .dp_noise_multiplier = 0.5f, .seed = 42 };
	fx->ctx = (struct fn_algo_ctx){ .cfg = &fx->cfg, .par = &fx->par, .base = fx->arena,
					.size = ARENA };
}

/* Runs the pipeline of fx's config over @in (n inputs) into @acc; returns the shares' sum. */
static double run_pipeline(struct fixture *fx, float *acc, const struct shm_desc *in, uint32_t n,
			   bool finish)
{
	struct fn_pipeline p;
	const char *why = NULL;
	double total = 0;
	void *block;

	fx->ctx.acc = acc;
	cr_assert_eq(fn_pipeline_compose(&p, &fx->cfg, &fx->par, &why), 0);
	block = trib_calloc(1, fn_pipeline_state_size(&p) + 1);
	cr_assert(block);
	cr_assert_eq(fn_pipeline_init(&p, block, &fx->ctx), 0);
	for (uint32_t i = 0; i < n; i++) {
		struct fn_input fi;

		cr_assert_eq(fn_input_from_desc(&fx->ctx, &in[i], &fi), 0);
		cr_assert_eq(fn_pipeline_fold(&p, &fx->ctx, &fi), 0);
		total += fi.share;
	}
	if (finish)
		cr_assert_eq(fn_pipeline_finish(&p, &fx->ctx, total), 0);
	fn_pipeline_fini(&p);
	trib_free(block);
	return total;
}

/*
 * The reference: how fn_main.c computed a leaf's fold before the pipeline existed
 * (update_weight() and fold_desc() on FN_PAR_* flags), kept verbatim in its arithmetic.
 */
static double old_leaf(const struct fixture *fx, float *acc)
{
	const struct fn_params *par = &fx->par;
	double total = 0;

	for (uint32_t u = 0; u < K; u++) {
		const struct shm_desc *d = &fx->d[u];
		const struct shm_seg *segs =
			(const struct shm_seg *)(const void *)(fx->arena + d->segs_off);
		double w = (par->flags & FN_PAR_UNWEIGHTED) ? 1.0 : d->weight;

		if (par->flags & FN_PAR_CLIP) {
			double sumsq = 0;
			float scale = 1.0f, blk[1024];

			fn_robust_sumsq_partial((const float *)(const void *)(fx->arena +
									    segs[0].src_off),
						N_F32, &sumsq);
			memset(blk, 0, sizeof(blk));
			fn_dequant_fold(blk, fx->arena + segs[1].src_off, SHM_DTYPE_I8,
					segs[1].scale, 1.0f, N - N_F32);
			fn_robust_sumsq_partial(blk, N - N_F32, &sumsq);
			if (!fn_robust_clip_scale(sumsq, par->clip_norm, &scale))
				w *= scale;
		}
		if (d->fold_scale > 0)
			w *= d->fold_scale;
		fn_fold_f32(acc, (const float *)(const void *)(fx->arena + segs[0].src_off),
			    (float)w, N_F32);
		fn_dequant_fold(acc + N_F32, fx->arena + segs[1].src_off, SHM_DTYPE_I8,
				segs[1].scale, (float)w, N - N_F32);
		total += (par->flags & FN_PAR_UNWEIGHTED) ? 1.0 : d->weight;
	}
	return total;
}

/* The reference top: fold the leaf's partial, DP noise (dp_noise()), divide. */
static void old_top(const struct fixture *fx, const float *leaf, double total, float *acc)
{
	fn_fold_f32(acc, leaf, 1.0f, N);
	if (fx->par.flags & FN_PAR_DP) {
		struct fn_dp_noise nz;
		uint8_t key[32];

		fn_dp_key_from_seed(fx->par.seed, key);
		cr_assert_eq(fn_dp_noise_init(&nz, key, fx->cfg.round,
					      (double)fx->par.dp_noise_multiplier *
						      fx->par.clip_norm),
			     0);
		cr_assert_eq(fn_dp_noise_add(&nz, acc, 0, N), 0);
	}
	fn_scale_f32(acc, (float)(1.0 / total), N);
}

/* The leaf's sum as a partial in the arena, as a leaf hands it to the top. */
static struct shm_desc leaf_partial(struct fixture *fx, double total)
{
	struct shm_seg *s = (struct shm_seg *)(void *)(fx->arena + LEAF_SEG);

	*s = (struct shm_seg){ .src_off = LEAF_ACC, .n_elem = N, .dtype = SHM_DTYPE_F32,
			       .scale = 1.0f };
	return (struct shm_desc){ .version = SHM_ABI_VERSION, .kind = SHM_DESC_PARTIAL,
				  .job = 1, .round = 3, .nsegs = 1, .slot_off = LEAF_SEG,
				  .segs_off = LEAF_SEG, .weight = total, .count = K };
}

/* Leaf then top through pipelines, and through the old code; the bits must agree. */
static void check_against_old(uint16_t flags, const float *fold_scales)
{
	struct fixture fx;
	float old_acc[N], old_model[N], new_model[N];
	float *leaf = NULL;
	struct shm_desc part;
	double old_total, new_total;

	fixture_init(&fx, FN_ROLE_LEAF, flags);
	for (uint32_t u = 0; fold_scales && u < K; u++)
		fx.d[u].fold_scale = fold_scales[u];
	memset(old_acc, 0, sizeof(old_acc));
	memset(old_model, 0, sizeof(old_model));
	memset(new_model, 0, sizeof(new_model));
	old_total = old_leaf(&fx, old_acc);
	old_top(&fx, old_acc, old_total, old_model);

	leaf = (float *)(void *)(fx.arena + LEAF_ACC);
	new_total = run_pipeline(&fx, leaf, fx.d, K, false);
	cr_assert_eq(new_total, old_total, "the shares' sum: %g, was %g", new_total, old_total);
	cr_assert_eq(memcmp(leaf, old_acc, sizeof(old_acc)), 0, "the leaf's sum differs");
	part = leaf_partial(&fx, new_total);
	fx.cfg.role = FN_ROLE_TOP;
	fx.cfg.expected = 1;
	run_pipeline(&fx, new_model, &part, 1, true);
	cr_assert_eq(memcmp(new_model, old_model, sizeof(old_model)), 0,
		     "the model differs from the flag-based code's");
	trib_free(fx.arena);
}

Test(functions_algos, every_algorithm_value_resolves_to_ops)
{
	for (uint32_t a = 1; a < FN_ALGO_END; a++) {
		const struct fn_algo_ops *ops = fn_algo_find(a);

		cr_assert(ops, "enum fn_algorithm value %u has no row in fn_algos.c", a);
		cr_assert(ops->name && ops->fold, "base %u must have a name and fold", a);
		cr_assert_eq(fn_algo_find_name(ops->name), ops);
	}
	cr_assert_eq(fn_algo_find(FN_ALGO_FEDAVG), &fn_fedavg_ops);
}

Test(functions_algos, every_family_is_a_named_row)
{
	const struct fn_algo_ops *rows[] = { &fn_fedavg_ops, &fn_fedbuff_ops, &fn_opt_ops,
					     &fn_robust_ops, &fn_clip_ops, &fn_dp_ops };

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		cr_assert_eq(fn_algo_find_name(rows[i]->name), rows[i], "%s", rows[i]->name);
	cr_assert_null(fn_algo_find_name("fedprox"));
}

Test(functions_algos, unknown_algorithm_is_refused_with_a_reason)
{
	const uint16_t bad[] = { 0, FN_ALGO_END, 999 };
	struct fixture fx;

	fixture_init(&fx, FN_ROLE_LEAF, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct fn_pipeline p;
		const char *why = NULL;

		fx.cfg.algorithm = bad[i];
		cr_assert_null(fn_algo_find(bad[i]));
		cr_assert_eq(fn_pipeline_compose(&p, &fx.cfg, &fx.par, &why), -EPROTONOSUPPORT);
		cr_assert(why && strstr(why, "unknown algorithm"), "why: %s", why ? why : "(null)");
		cr_assert_eq(p.n, 0);
		fn_pipeline_fini(&p);
	}
	/* Even a shard, whose base the robust stage replaces, needs a known algorithm. */
	fx.cfg.role = FN_ROLE_SHARD;
	cr_assert_eq(fn_pipeline_compose(&(struct fn_pipeline){ 0 }, &fx.cfg, &fx.par, NULL),
		     -EPROTONOSUPPORT);
	trib_free(fx.arena);
}

/* The stage names of the pipeline for (role, cfg flags, par flags, model_off), space separated. */
static void composed(char *out, size_t cap, uint16_t role, uint32_t cflags, uint16_t pflags,
		     uint64_t model_off, bool *finishes)
{
	struct fixture fx;
	struct fn_pipeline p;

	fixture_init(&fx, role, pflags);
	fx.cfg.flags = cflags;
	fx.par.model_off = model_off;
	cr_assert_eq(fn_pipeline_compose(&p, &fx.cfg, &fx.par, NULL), 0);
	out[0] = 0;
	for (uint32_t i = 0; i < p.n; i++) {
		strncat(out, i ? " " : "", cap - strlen(out) - 1);
		strncat(out, p.ops[i]->name, cap - strlen(out) - 1);
	}
	*finishes = p.finishes;
	trib_free(fx.arena);
}

Test(functions_algos, pipelines_are_composed_from_role_and_params)
{
	const uint16_t dp = FN_PAR_CLIP | FN_PAR_DP | FN_PAR_UNWEIGHTED;
	char s[128];
	bool fin;

	composed(s, sizeof(s), FN_ROLE_LEAF, FN_CFG_FINAL, 0, 0, &fin);
	cr_assert_str_eq(s, "fedavg fedbuff");
	cr_assert_not(fin);
	composed(s, sizeof(s), FN_ROLE_LEAF, FN_CFG_FINAL, dp, MODEL_OFF, &fin);
	cr_assert_str_eq(s, "fedavg clip fedbuff");
	composed(s, sizeof(s), FN_ROLE_MID, FN_CFG_FINAL, dp, MODEL_OFF, &fin);
	cr_assert_str_eq(s, "fedavg");
	cr_assert_not(fin);
	composed(s, sizeof(s), FN_ROLE_TOP, 0, 0, 0, &fin);
	cr_assert_str_eq(s, "fedavg");
	cr_assert(fin);
	composed(s, sizeof(s), FN_ROLE_TOP, FN_CFG_FINAL, dp, MODEL_OFF, &fin);
	cr_assert_str_eq(s, "dp fedavg server-opt");
	cr_assert(fin);
	/* A node's part of a wider round hands its sum on: nothing finishes there. */
	composed(s, sizeof(s), FN_ROLE_TOP, FN_CFG_FINAL | FN_CFG_SUM, dp, MODEL_OFF, &fin);
	cr_assert_str_eq(s, "fedavg");
	cr_assert_not(fin);
	composed(s, sizeof(s), FN_ROLE_SHARD, FN_CFG_FINAL, FN_PAR_DELTA | FN_PAR_UNWEIGHTED,
		 MODEL_OFF, &fin);
	cr_assert_str_eq(s, "robust");
	cr_assert_not(fin);
}

Test(functions_algos, clip_and_dp_match_the_flag_based_code_bit_for_bit)
{
	/* As the runtime sets them for clip_norm + dp_noise_multiplier + seed. */
	check_against_old(FN_PAR_CLIP | FN_PAR_DP | FN_PAR_UNWEIGHTED | FN_PAR_SEEDED, NULL);
}

Test(functions_algos, weighted_clip_and_staleness_match_the_flag_based_code)
{
	const float scales[K] = { 0, 1.0f, 0.70710677f, 0.5f, 0.4472136f };

	check_against_old(FN_PAR_CLIP, scales);
	check_against_old(0, scales);
	check_against_old(FN_PAR_UNWEIGHTED, NULL);
}

Test(functions_algos, clipping_bounds_every_update_norm)
{
	struct fixture fx;
	float acc[N];

	/* One update at a time: the folded vector is the clipped update itself. */
	fixture_init(&fx, FN_ROLE_LEAF, FN_PAR_CLIP | FN_PAR_UNWEIGHTED);
	for (uint32_t u = 0; u < K; u++) {
		double sumsq = 0;

		memset(acc, 0, sizeof(acc));
		run_pipeline(&fx, acc, &fx.d[u], 1, false);
		fn_robust_sumsq_partial(acc, N, &sumsq);
		cr_assert_leq(sqrt(sumsq), fx.par.clip_norm * (1 + 1e-6), "update %u: norm %g", u,
			      sqrt(sumsq));
	}
	trib_free(fx.arena);
}

Test(functions_algos, server_step_matches_fn_opt_step_on_the_mean)
{
	struct fixture fx;
	struct fn_opt_params op;
	struct fn_opt_state os;
	float sum[N], model[N], mean[N], m[N], v[N], expect[N];
	float *prev, *leaf;
	struct shm_desc part;
	double total;

	fixture_init(&fx, FN_ROLE_LEAF, 0);
	prev = (float *)(void *)(fx.arena + MODEL_OFF);
	for (uint32_t i = 0; i < N; i++)
		prev[i] = 0.01f * (float)i;
	leaf = (float *)(void *)(fx.arena + LEAF_ACC);
	total = run_pipeline(&fx, leaf, fx.d, K, false);
	memcpy(sum, leaf, sizeof(sum));
	/* Reference: the mean, its delta from the previous model, one FedAdam step. */
	memcpy(mean, sum, sizeof(mean));
	fn_scale_f32(mean, (float)(1.0 / total), N);
	for (uint32_t i = 0; i < N; i++)
		mean[i] -= prev[i];
	fn_opt_params_default(&op, FN_OPT_FEDADAM);
	cr_assert_eq(fn_opt_state_init(&os, &op, N, m, v), 0);
	/* The runtime puts the state the round starts from in the slot's first half. */
	cr_assert_eq(fn_opt_state_save(&os, fx.arena + STATE_OFF, fn_opt_state_size(&os)), 0);
	memcpy(expect, prev, sizeof(expect));
	cr_assert_eq(fn_opt_step(&op, &os, expect, mean, N), 0);

	part = leaf_partial(&fx, total);
	fx.cfg.role = FN_ROLE_TOP;
	fx.cfg.expected = 1;
	fx.par.server = FN_OPT_FEDADAM;
	fx.par.server_lr = op.server_lr;
	fx.par.beta1 = op.beta1;
	fx.par.beta2 = op.beta2;
	fx.par.tau = op.tau;
	fx.par.model_off = MODEL_OFF;
	fx.par.state_off = STATE_OFF;
	memset(model, 0, sizeof(model));
	run_pipeline(&fx, model, &part, 1, true);
	cr_assert_eq(memcmp(model, expect, sizeof(model)), 0, "the stepped model differs");
	/* The next state went to the second half of the state slot. */
	{
		size_t sz = fn_opt_state_size(&os);
		struct fn_opt_state back;
		float m2[N], v2[N];

		cr_assert_eq(fn_opt_state_init(&back, &op, N, m2, v2), 0);
		cr_assert_eq(fn_opt_state_load(&back, fx.arena + STATE_OFF + sz, sz), 0);
		cr_assert_eq(back.step, 1);
		cr_assert_eq(memcmp(m2, m, sizeof(m)), 0);
	}
	trib_free(fx.arena);
}

Test(functions_algos, robust_shard_writes_the_median_of_its_range)
{
	struct fixture fx;
	struct fn_shard_task *t;
	float out[N];
	const float *rows[K];
	float scratch[FN_ROBUST_SCRATCH(K)], expect[N_F32];
	struct fn_pipeline p;

	fixture_init(&fx, FN_ROLE_SHARD, FN_PAR_UNWEIGHTED);
	/* The task: a header, then the K descriptors. */
	t = (struct fn_shard_task *)(void *)(fx.arena + STATE_OFF);
	*t = (struct fn_shard_task){ .version = FN_ABI_VERSION, .rule = FN_RULE_MEDIAN, .k = K,
				     .shards = 3, .phase = 1, .descs_off = STATE_OFF + 128 };
	memcpy(fx.arena + STATE_OFF + 128, fx.d, sizeof(fx.d));
	fx.par.state_off = STATE_OFF;
	fx.cfg.index = 0; /* coordinates [0, 100): all f32 */
	memset(out, 0, sizeof(out));
	fx.ctx.acc = out;
	cr_assert_eq(fn_pipeline_compose(&p, &fx.cfg, &fx.par, NULL), 0);
	cr_assert_eq(fn_pipeline_init(&p, NULL, &fx.ctx), 0);
	cr_assert_eq(fn_pipeline_shard(&p, &fx.ctx), 0);
	fn_pipeline_fini(&p);
	for (uint32_t u = 0; u < K; u++)
		rows[u] = (const float *)(const void *)(fx.arena + DATA_OFF + 2048 * u);
	cr_assert_eq(fn_robust_median(rows, K, N / 3, expect, scratch), 0);
	cr_assert_eq(memcmp(out, expect, (N / 3) * sizeof(float)), 0);
	for (uint32_t i = N / 3; i < N; i++)
		cr_assert_eq(out[i], 0.0f, "a shard writes only its own range (%u)", i);
	/* A task out of the arena is refused, not read. */
	fx.par.state_off = ARENA - 8;
	cr_assert_eq(fn_pipeline_compose(&p, &fx.cfg, &fx.par, NULL), 0);
	cr_assert_eq(fn_pipeline_shard(&p, &fx.ctx), -EINVAL);
	trib_free(fx.arena);
}
