// SPDX-License-Identifier: MIT
/* SCAFFOLD: a base that folds like FedAvg (unweighted) and steps the model and c (fn_scaffold.h). */
#include "fn_scaffold.h"

#include <errno.h>

#include "fn_abi.h"
#include "fn_algo.h"

int fn_scaffold_step(const float *prev, const float *sum, float *out, size_t n, double s,
		     double lr, double pop)
{
	size_t half = n / 2;

	if ((n & 1) || !(s > 0) || !(pop >= 1))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		double mean = (double)sum[i] / s;
		double f = i < half ? lr : s / pop;

		out[i] = (float)((double)prev[i] + f * mean);
	}
	return 0;
}

/* Every update weighs 1 (the runtime sets FN_PAR_UNWEIGHTED): FedAvg's weigh and fold. */
static int scaffold_weigh(void *state, const struct fn_algo_ctx *ctx, struct fn_input *in)
{
	return fn_fedavg_ops.weigh(state, ctx, in);
}

static int scaffold_fold(void *state, const struct fn_algo_ctx *ctx, const struct fn_input *in)
{
	return fn_fedavg_ops.fold(state, ctx, in);
}

/*
 * The top: [x ; c] from the previous one (par->model_off, the whole vector) and the sum. N
 * rides in fn_params.momentum (FedAvgM's field; fn_params is a full 64-byte record).
 */
static int scaffold_finish(void *state, const struct fn_algo_ctx *ctx, double total_weight)
{
	const struct fn_params *p = ctx->par;
	uint64_t n = ctx->cfg->n_elem;

	(void)state;
	if (!(total_weight > 0))
		return -EDOM;
	if (!p->model_off || !fn_ctx_range_ok(ctx, p->model_off, n * sizeof(float)))
		return -EINVAL;
	return fn_scaffold_step((const float *)(const void *)(ctx->base + p->model_off), ctx->acc,
				ctx->acc, (size_t)n, total_weight, (double)p->server_lr,
				(double)p->momentum);
}

const struct fn_algo_ops fn_scaffold_ops = {
	.name = "scaffold",
	.state_size = 0,
	.weigh = scaffold_weigh,
	.fold = scaffold_fold,
	.finish = scaffold_finish,
};
