// SPDX-License-Identifier: MIT
/* The algorithm table, and the one place where a config and its PARAMS become a pipeline. */
#include <errno.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"

/* Where a row's stage sits in a pipeline, relative to the base (the job's algorithm). */
enum row_place {
	PLACE_BASE = 1, /* a base: fn_config.algorithm names it */
	PLACE_BEFORE,   /* before the base in every phase */
	PLACE_AFTER,    /* after the base in every phase */
	PLACE_INSTEAD,  /* alone: replaces the base and every other stage */
};

/* The round's top that turns the sum into the model (not a node's part of a wider round). */
static bool finishes(const struct fn_config *cfg)
{
	return cfg->role == FN_ROLE_TOP && !(cfg->flags & FN_CFG_SUM);
}

/* Noise on the sum of clipped updates: only where the sum becomes the model. */
static bool want_dp(const struct fn_config *cfg, const struct fn_params *par)
{
	return finishes(cfg) && (par->flags & FN_PAR_DP);
}

/* Leaves fold the client updates, so they clip them. */
static bool want_clip(const struct fn_config *cfg, const struct fn_params *par)
{
	return cfg->role == FN_ROLE_LEAF && (par->flags & FN_PAR_CLIP);
}

/*
 * FedBuff marks its updates in their descriptors (fold_scale, set by the runtime through
 * fn_fedbuff_fold_scale()); PARAMS do not say it. So every leaf has the stage, and a
 * synchronous job's updates, which carry 0, pass through it unchanged.
 */
static bool want_fedbuff(const struct fn_config *cfg, const struct fn_params *par)
{
	(void)par;
	return cfg->role == FN_ROLE_LEAF;
}

/*
 * The server step needs the previous model; the runtime sends its offset when there is one.
 * SCAFFOLD's base makes its own step (x and c move by different factors); FRL has none.
 */
static bool want_opt(const struct fn_config *cfg, const struct fn_params *par)
{
	return finishes(cfg) && par->model_off && cfg->algorithm != FN_ALGO_SCAFFOLD &&
	       cfg->algorithm != FN_ALGO_FRL && /* votes are not a mean to step by */
	       cfg->algorithm != FN_ALGO_FLORA && /* stacks are not a mean either */
	       cfg->algorithm != FN_ALGO_SECAGG; /* nor is a masked sum */
}

/* A shard computes an exact robust rule (named in its task) over every update of the round. */
static bool want_robust(const struct fn_config *cfg, const struct fn_params *par)
{
	(void)par;
	return cfg->role == FN_ROLE_SHARD && cfg->algorithm != FN_ALGO_SECAGG;
}

/* A secure job's shard expands a range of the unmasking's mask streams (struct fn_secagg_task). */
static bool want_unmask(const struct fn_config *cfg, const struct fn_params *par)
{
	(void)par;
	return cfg->role == FN_ROLE_SHARD && cfg->algorithm == FN_ALGO_SECAGG;
}

/*
 * The algorithm table: every stage a function can run, one row per family file.
 *
 * Table order is pipeline order among rows of one place, and every phase runs the pipeline in
 * order, so the order here is part of the determinism contract: the base sets an update's
 * weight, clipping then scales it, then staleness (the same products, in the same order, as
 * ever); at the top the noise goes on the sum (BEFORE the base's division) and the server step
 * moves the model by the mean (AFTER it).
 *
 * To add an algorithm:
 *   - a base a job chooses (it folds; see fn_fedavg.c): write functions/fn_<name>.c exporting a
 *     const struct fn_algo_ops, declare it in fn_algo.h, give it a value in enum fn_algorithm
 *     (fn_abi.h, before FN_ALGO_END), add a PLACE_BASE row here with that value, and have the
 *     runtime send the value in fn_config.algorithm;
 *   - a stage composed from the job's parameters (like clip or dp): the file, and a row here
 *     with algorithm 0, its place, and the predicate that says for which config and PARAMS it
 *     joins (a new parameter is a new FN_PAR_* flag or fn_params field).
 * Add the file to functions/meson.build. tests/functions/test_algos.c checks that every enum
 * value has a base row.
 */
static const struct fn_algo_row {
	uint32_t algorithm;            /* enum fn_algorithm for a base, else 0 */
	const struct fn_algo_ops *ops; /* the family file's table */
	enum row_place place;
	/* Whether the stage joins the pipeline of @cfg with @par; NULL for a base. */
	bool (*wanted)(const struct fn_config *cfg, const struct fn_params *par);
} rows[] = {
	{ FN_ALGO_FEDAVG, &fn_fedavg_ops, PLACE_BASE, NULL },
	{ FN_ALGO_SCAFFOLD, &fn_scaffold_ops, PLACE_BASE, NULL },
	{ FN_ALGO_FRL, &fn_frl_ops, PLACE_BASE, NULL },
	{ FN_ALGO_FLORA, &fn_flora_ops, PLACE_BASE, NULL },
	{ FN_ALGO_SECAGG, &fn_secagg_ops, PLACE_BASE, NULL },
	{ 0, &fn_dp_ops, PLACE_BEFORE, want_dp },
	{ 0, &fn_clip_ops, PLACE_AFTER, want_clip },
	{ 0, &fn_fedbuff_ops, PLACE_AFTER, want_fedbuff },
	{ 0, &fn_opt_ops, PLACE_AFTER, want_opt },
	{ 0, &fn_robust_ops, PLACE_INSTEAD, want_robust },
	{ 0, &fn_secagg_unmask_ops, PLACE_INSTEAD, want_unmask },
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))
_Static_assert(NROWS <= FN_PIPE_MAX, "a pipeline can hold every row");

const struct fn_algo_ops *fn_algo_find(uint32_t algorithm)
{
	for (size_t i = 0; i < NROWS; i++)
		if (rows[i].place == PLACE_BASE && rows[i].algorithm == algorithm)
			return rows[i].ops;
	return NULL;
}

const struct fn_algo_ops *fn_algo_find_name(const char *name)
{
	for (size_t i = 0; i < NROWS; i++)
		if (!strcmp(rows[i].ops->name, name))
			return rows[i].ops;
	return NULL;
}

/* Appends the stages of @place that @cfg and @par want, in table order. */
static void add_place(struct fn_pipeline *p, enum row_place place, const struct fn_config *cfg,
		      const struct fn_params *par)
{
	for (size_t i = 0; i < NROWS; i++)
		if (rows[i].place == place && rows[i].wanted(cfg, par))
			p->ops[p->n++] = rows[i].ops;
}

int fn_pipeline_compose(struct fn_pipeline *p, const struct fn_config *cfg,
			const struct fn_params *par, const char **why)
{
	const struct fn_algo_ops *base = fn_algo_find(cfg->algorithm);

	memset(p, 0, sizeof(*p));
	if (!base) {
		if (why)
			*why = "unknown algorithm: no base row in functions/fn_algos.c has this "
			       "enum fn_algorithm value";
		return -EPROTONOSUPPORT;
	}
	add_place(p, PLACE_INSTEAD, cfg, par);
	if (p->n) {
		/* The first such row alone. */
		for (; p->n > 1; p->n--)
			p->ops[p->n - 1] = NULL;
		/* A stage left out of this binary: the plain tributary-fn's fn_secagg_absent.c. */
		if (!p->ops[0]->shard) {
			if (why)
				*why = "a secure job's unmasking shard: not in this binary (the plain "
				       "tributary-fn); the runtime runs it on tributary-fn-sa";
			p->ops[0] = NULL;
			p->n = 0;
			return -ENOEXEC;
		}
		return 0;
	}
	add_place(p, PLACE_BEFORE, cfg, par);
	p->ops[p->n++] = base;
	add_place(p, PLACE_AFTER, cfg, par);
	p->finishes = finishes(cfg);
	return 0;
}
