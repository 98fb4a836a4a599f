/* SPDX-License-Identifier: MIT */
/* FedBuff: staleness weights and the buffer state machine that turns K updates into a version. */
#ifndef FN_FEDBUFF_H
#define FN_FEDBUFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * FedBuff (Nguyen et al. 2022), asynchronous: no round barrier. Clients train from whatever
 * version v_k they fetched and send a delta naming it (X-Tributary-Round). The server holds the
 * current version V; an update's staleness is s = V - v_k at the moment it is accepted into the
 * buffer. Updates with s > max_staleness are refused (409). Every buffer_size = K accepted
 * updates make version V + 1:
 *
 *   x(V+1) = x(V) + server_lr * sum_k (sw(s_k) * b_k * delta_k) / sum_k b_k,
 *   sw(s) = 1 / sqrt(1 + s),   b_k = samples_k if weighted, else 1.
 *
 * The divisor is the sum of the base weights b_k, not of the discounted ones, so stale updates
 * shrink the step (with b_k = 1 it is the paper's 1/K). The version is advanced when the K-th
 * update is accepted, before its fold finishes: the next buffer's updates are applied on top of
 * V + 1, so that is what their staleness is counted against. A server optimiser may take the
 * mean delta in place of the plain server_lr step (fn_opt.h).
 */

/* sw(s) = 1 / sqrt(1 + s), in double. */
double fn_fedbuff_staleness_weight(uint64_t staleness);

/*
 * The runtime's call when it accepts a FedBuff update into a leaf: the factor on the update's
 * fold weight, (float)sw(open - trained_from), for its descriptor's fold_scale (the leaf's
 * fedbuff stage multiplies the weight by it). @open is the version being built (the job's
 * round), @trained_from the version the client trained from (X-Tributary-Round),
 * @max_staleness the job's parameter. 0 with *scale set; -ESTALE if the update is staler than
 * max_staleness; -EINVAL if @trained_from is after @open (a version from the future). *scale is
 * left alone on error.
 */
int fn_fedbuff_fold_scale(uint64_t open, uint64_t trained_from, uint32_t max_staleness,
			  float *scale);

/* State of one job's buffer. Plain data: persist it with the model. */
struct fn_fedbuff {
	uint64_t version;       /* V: versions made so far (the starting model is 0) */
	uint32_t buffer_size;   /* K >= 1 */
	uint32_t max_staleness; /* refuse s > max_staleness */
	uint32_t count;         /* updates accepted into the open buffer, < K */
	uint32_t reserved;      /* zero */
	double base_sum;        /* sum of b_k over the open buffer */
};

/* What fn_fedbuff_accept() decided for one update. */
struct fn_fedbuff_ticket {
	uint64_t target;    /* the version this update's buffer makes (V + 1 when accepted) */
	uint64_t staleness; /* s = V - trained_from */
	uint32_t index;     /* position in the buffer, 0 .. K-1 (the fold order) */
	bool last;          /* this update closes the buffer: finish it into version target */
	double weight;      /* fold weight sw(s) * b */
	double divisor;     /* when last: sum of b over the buffer, the top's divisor; else 0 */
};

/*
 * Starts at version @version with an empty buffer. 0, or -EINVAL if buffer_size is 0. @fb is
 * caller-owned.
 */
int fn_fedbuff_init(struct fn_fedbuff *fb, uint32_t buffer_size, uint32_t max_staleness,
		    uint64_t version);

/*
 * The early check, before the body is read: 0 with *staleness set, -ESTALE if the update would
 * be refused as too stale now (409), or -EINVAL if @trained_from is a version that does not
 * exist yet (400). Changes nothing.
 */
int fn_fedbuff_check(const struct fn_fedbuff *fb, uint64_t trained_from, uint64_t *staleness);

/*
 * Accepts an update trained from @trained_from carrying base weight @base (its samples, or 1
 * unweighted; > 0 and finite) into the open buffer, re-checking staleness against the version
 * current now. Fills @t; when t->last, the buffer is closed, the version advanced and a new
 * buffer opened. 0, -ESTALE, or -EINVAL (a future version, or a bad base weight); on error
 * nothing changes.
 */
int fn_fedbuff_accept(struct fn_fedbuff *fb, uint64_t trained_from, double base,
		      struct fn_fedbuff_ticket *t);

#endif
