/* SPDX-License-Identifier: MIT */
/* A flora job's LoRA pairs: their place in the flat model, the update's segments, the commit. */
#ifndef RT_FLORA_H
#define RT_FLORA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"
#include "trib_safetensors.h"

/*
 * The flat model of a flora job (functions/fn_flora.h) is its base tensors, then per pair
 *
 *   <a> [S R, n]  F32   A_stack (slot s owns rows [s R, s R + r_s))
 *   <b> [m, S R]  F32   B_stack (slot s owns columns [s R, s R + r_s))
 *   <name>.rank [1] I32 the used rank after packing
 *
 * (S = clients_per_round), so the tree's accumulators, partials and a cluster's node sums are
 * that flat vector as for any job. The served model is the flat model with the stacks finished
 * and packed, or with "flora_merge" only the base tensors (a prefix: the base comes first), merged.
 */

#define RT_FLORA_PAIRS_MAX 64
/* Segments of one update (fn_input_from_desc() takes at most 2^16): sum over pairs of 1 + m. */
#define RT_FLORA_SEGS_MAX 65536u

struct rt_flora_pair {
	char name[TRIB_ST_NAME_MAX];
	uint32_t base, a, b, rank; /* indexes in the job's schema */
	uint64_t m, n, R;
	uint64_t base_off, a_off, b_off, rank_off; /* first element in the flat model */
};

struct rt_flora {
	bool merge;      /* "flora_merge": the model is the base with B A added each round */
	uint32_t S;      /* slots per round: clients_per_round */
	uint32_t npairs;
	size_t nbase;    /* the base tensors are the first nbase of the schema */
	uint64_t n_base; /* and the first n_base elements of the flat model */
	struct rt_flora_pair pairs[];
};

struct rt_job;

/*
 * At job creation, after the schema of "tensors" (@schema, @nschema, @n_elem: the base) is
 * built: checks "flora_pairs" of @doc against it (S = @S) and appends each pair's a, b and rank
 * entries. 0, or 400 with @msg naming the field, or 500 (memory). @schema may move.
 */
int rt_flora_spec(json_t *doc, struct trib_tensor **schema, size_t *nschema, uint64_t *n_elem,
		  uint32_t S, char *msg, size_t cap);

/*
 * Builds j->flora from the stored parameters @params ("flora_pairs", "flora_merge") and the
 * job's schema (made by rt_flora_spec), marks the rank entries I32 and rewrites j->st_header as
 * the served model's header. For a flora job at creation and at every load; 0 or -errno.
 */
int rt_flora_bind(struct rt_job *j, const json_t *params);

/* Elements of a stored (served) model: the flat model, or with merge the base only. */
uint64_t rt_flora_model_elems(const struct rt_job *j);

/* Segments of every update of the job: one for each A, one for each row of each B. */
uint32_t rt_flora_nsegs(const struct rt_job *j);

/*
 * The served model of a round from its sum @sum (the flat model, as the tree left it: A rows
 * weighted, B as sent), its total weight @W and the previous model's base @prev (n_base
 * elements), into @out (rt_flora_model_elems()). The slots' ranks are read from the stacks: a
 * slot's rank is one past its last rank index with a non-zero A row or B column. 0, -EDOM (W),
 * -ENOMEM.
 */
int rt_flora_model(const struct rt_job *j, const float *sum, double W, const float *prev,
		   float *out);

/*
 * A cluster's slot comes with the controller's count: the gateway places an update at slot
 * @from (0), and the count moves its @nsegs segments (rt__api_flora_fill()'s order) to @to.
 */
void rt_flora_segs_move(const struct rt_job *j, struct shm_seg *segs, uint32_t nsegs,
			uint64_t from, uint64_t to);

struct rt_node;
struct shm_arena;
/*
 * The tcp data plane's form of flora update @d (its segments in @arena): the flat model
 * (n_elem floats, zeroed by the caller) with its A rows times the fold weight @w, as
 * fn_flora_ops' fold would make them (one float product), and its B rows as sent.
 */
void rt_flora_flat(const struct rt_job *j, const struct shm_arena *arena,
		   const struct shm_desc *d, double w, float *flat);

/*
 * A cluster's top: round @round's served model from the nodes' summed stacks @sum (total weight
 * @W) into @out (n_elem floats; those past rt_flora_model_elems() zero), with the base of model
 * v@round stored here. 0; -EAGAIN until that version is here; -EDOM, -ENOMEM, -EINVAL.
 */
int rt_flora_model_cluster(struct rt_node *n, struct rt_job *j, uint32_t round, const float *sum,
			   double W, float *out);

/* "flora_pairs" and "flora_merge" of the status (new reference), or NULL. */
json_t *rt_flora_json(const struct rt_job *j);

#endif
