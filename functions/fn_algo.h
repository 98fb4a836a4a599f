/* SPDX-License-Identifier: MIT */
/* The ops table every aggregation stage implements, and the pipeline of stages a function runs. */
#ifndef FN_ALGO_H
#define FN_ALGO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fn_abi.h"
#include "shm_abi.h"

/*
 * A function folds inputs into an accumulator and, at the round's top, turns the sum into the
 * model. What it computes is a pipeline of stages, each a row of the algorithm table
 * (fn_algos.c): the job's algorithm (the base, which folds), plus the stages its parameters ask
 * for (clipping, FedBuff's staleness factor, DP noise, the server optimiser), or, on a robust
 * shard, the robust rules. fn_pipeline_compose() is the one place that maps a CONFIG and its
 * PARAMS to the stages; the loop (fn_main.c) only runs the phases below, in this order:
 *
 *   init     once, when the function takes the config (state zeroed by the caller);
 *   weigh    per input, before its fold: set or scale its fold weight and its share of the
 *            divisor (FedAvg's sample count, clipping, staleness);
 *   fold     per input: add it into the accumulator (the base only);
 *   finish   the round's top only, once every input is folded: noise on the sum, the division,
 *            the server step;
 *   shard    a robust shard's whole work, when its PARAMS arrive;
 *   fini     when the config is done (or failed), in reverse order.
 *
 * Every phase runs the stages in pipeline order, each on what the previous one left, so the
 * same inputs in the same order give the same bits (fn_fold.h). Stages do no I/O (one syscall:
 * the dp stage keys its noise from getrandom(2) unless the job is seeded) and never log: they
 * return 0 or -errno, and the loop logs once with the job and round.
 */

/* One input to fold, with its segments already checked against the arena's bounds. */
struct fn_input {
	uint16_t kind;               /* SHM_DESC_UPDATE or SHM_DESC_PARTIAL */
	const uint8_t *base;         /* arena base (tcp: the payload); segment offsets start here */
	const struct shm_seg *segs;  /* borrowed for the call */
	uint32_t nsegs;
	double weight;               /* fold factor of an update: starts as the descriptor's weight */
	double share;                /* its part of the divisor: starts as the descriptor's weight */
	const struct shm_desc *desc; /* the descriptor it came from (borrowed; count, fold_scale) */
};

/*
 * What the stages of one config see: the loop owns all of it and keeps it valid from init to
 * fini. Arena offsets in @par (model, optimiser state, shard task) are checked by the stage that
 * reads them, with fn_ctx_range_ok().
 */
struct fn_algo_ctx {
	const struct fn_config *cfg; /* the config being served */
	const struct fn_params *par; /* its PARAMS */
	uint8_t *base;               /* the arena's first byte */
	uint64_t size;               /* the arena's length in bytes */
	float *acc;                  /* the accumulator, cfg->n_elem floats (private memory in tcp) */
};

/*
 * A stage. Every hook may be NULL (the stage takes no part in that phase). Hooks return 0 or
 * -errno; an error fails the config (the function exits and the runtime folds again).
 */
struct fn_algo_ops {
	const char *name;  /* the row's name in the algorithm table */
	size_t state_size; /* bytes of private state the caller allocates, zeroed, per config */
	/* Prepare @state for the config in @ctx. */
	int (*init)(void *state, const struct fn_algo_ctx *ctx);
	/* Adjust @in->weight and @in->share before @in is folded. */
	int (*weigh)(void *state, const struct fn_algo_ctx *ctx, struct fn_input *in);
	/* Fold @in into ctx->acc (-EINVAL: a segment's dtype is not supported). */
	int (*fold)(void *state, const struct fn_algo_ctx *ctx, const struct fn_input *in);
	/* Top only: move ctx->acc towards the model; @total_weight is the sum of the shares. */
	int (*finish)(void *state, const struct fn_algo_ctx *ctx, double total_weight);
	/* Shard only: compute this shard's range of ctx->acc. */
	int (*shard)(void *state, const struct fn_algo_ctx *ctx);
	/* Release what init acquired; accepts a zeroed state that init never saw. */
	void (*fini)(void *state);
};

/* The rows of the algorithm table (fn_algos.c), one per family file. */
extern const struct fn_algo_ops fn_fedavg_ops;  /* fn_fedavg.c: weights, fold, divide */
extern const struct fn_algo_ops fn_fedbuff_ops; /* fn_fedbuff.c: staleness factor */
extern const struct fn_algo_ops fn_opt_ops;     /* fn_opt.c: the server step */
extern const struct fn_algo_ops fn_robust_ops;  /* fn_robust.c: median, trimmed mean, Krum */
extern const struct fn_algo_ops fn_clip_ops;    /* fn_dp.c: L2 clipping of each update */
extern const struct fn_algo_ops fn_dp_ops;      /* fn_dp.c: Gaussian noise on the sum */
extern const struct fn_algo_ops fn_scaffold_ops; /* fn_scaffold.c: x and c, SCAFFOLD's step */
extern const struct fn_algo_ops fn_frl_ops;      /* fn_frl.c: integer votes on rankings */
extern const struct fn_algo_ops fn_flora_ops;    /* fn_flora.c: LoRA pairs in rank blocks */
extern const struct fn_algo_ops fn_secagg_ops;   /* fn_secagg.c: masked sums mod 2^32 */
/* fn_secagg_unmask.c: a range of the masks (tributary-fn-sa; fn_secagg_absent.c in tributary-fn) */
extern const struct fn_algo_ops fn_secagg_unmask_ops;

/* The base ops for an enum fn_algorithm value (what fn_config.algorithm names), or NULL. */
const struct fn_algo_ops *fn_algo_find(uint32_t algorithm);

/* The ops of the table row named @name (a base or a stage), or NULL. */
const struct fn_algo_ops *fn_algo_find_name(const char *name);

/* Whether [off, off + len) lies inside the arena of @ctx. */
bool fn_ctx_range_ok(const struct fn_algo_ctx *ctx, uint64_t off, uint64_t len);

/*
 * Resolves descriptor @d (borrowed) into @in: its segment table and every segment's bytes
 * checked against the arena and the model's size; weight and share from the descriptor. 0 or
 * -EINVAL. @in borrows from the arena and from @d.
 */
int fn_input_from_desc(const struct fn_algo_ctx *ctx, const struct shm_desc *d,
		       struct fn_input *in);

/* Most stages in one pipeline. */
#define FN_PIPE_MAX 12

/* The stages one config runs; plain data, owned by the loop. */
struct fn_pipeline {
	const struct fn_algo_ops *ops[FN_PIPE_MAX]; /* in the order every phase runs them */
	void *state[FN_PIPE_MAX];                   /* set by fn_pipeline_init(), into its block */
	uint32_t n;                                 /* stages */
	bool finishes; /* this function turns the round's sum into the model (its top) */
};

/*
 * Composes the pipeline for @cfg and @par (both borrowed; only read here): the one place where
 * the config's algorithm, role and FN_PAR_* flags become stages. 0; or -EPROTONOSUPPORT, with
 * *why (if not NULL) set to a static sentence, when cfg->algorithm has no row.
 */
int fn_pipeline_compose(struct fn_pipeline *p, const struct fn_config *cfg,
			const struct fn_params *par, const char **why);

/* Bytes of state the pipeline needs: allocate them zeroed and pass them to fn_pipeline_init(). */
size_t fn_pipeline_state_size(const struct fn_pipeline *p);

/*
 * Points every stage at its part of @block (fn_pipeline_state_size() bytes, zeroed,
 * caller-owned, freed by the caller after fn_pipeline_fini()) and runs the init hooks with
 * @ctx (borrowed until fini). 0 or the first -errno; call fn_pipeline_fini() either way.
 */
int fn_pipeline_init(struct fn_pipeline *p, void *block, const struct fn_algo_ctx *ctx);

/* Weighs @in (its weight and share change) and folds it into ctx->acc. 0 or -errno. */
int fn_pipeline_fold(const struct fn_pipeline *p, const struct fn_algo_ctx *ctx,
		     struct fn_input *in);

/* At a top that finishes: the finish hooks on ctx->acc; elsewhere nothing. 0 or -errno. */
int fn_pipeline_finish(const struct fn_pipeline *p, const struct fn_algo_ctx *ctx,
		       double total_weight);

/* The shard hooks: a robust shard's work on its range of ctx->acc. 0 or -errno. */
int fn_pipeline_shard(const struct fn_pipeline *p, const struct fn_algo_ctx *ctx);

/* The fini hooks in reverse order; leaves @p empty. Safe on a zeroed or composed pipeline. */
void fn_pipeline_fini(struct fn_pipeline *p);

#endif
