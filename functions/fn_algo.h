/* SPDX-License-Identifier: MIT */
/* The interface every aggregation algorithm implements: a const ops table, no I/O inside. */
#ifndef FN_ALGO_H
#define FN_ALGO_H

#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"

/* One input to fold, with its segments already checked against the arena's bounds. */
struct fn_input {
	uint16_t kind;               /* SHM_DESC_UPDATE or SHM_DESC_PARTIAL */
	const uint8_t *base;         /* arena base; segment offsets are relative to it */
	const struct shm_seg *segs;  /* borrowed for the call */
	uint32_t nsegs;
	double weight;               /* the descriptor's weight */
};

struct fn_algo_ops {
	const char *name;
	size_t state_size; /* bytes of private state the caller allocates, zeroed */
	/* Prepare @state to aggregate into @acc (@n elements, zeroed by the caller). 0 or -errno. */
	int (*init)(void *state, float *acc, uint64_t n);
	/* Fold @in into @acc. 0 or -errno (-EINVAL: a segment's dtype is not supported). */
	int (*fold)(void *state, float *acc, const struct fn_input *in);
	/* Top only: turn the folded sum into the model, given the total weight. 0 or -errno. */
	int (*finish)(void *state, float *acc, uint64_t n, double total_weight);
	/* Release what init acquired; accepts a state that init never saw (zeroed). */
	void (*fini)(void *state);
};

extern const struct fn_algo_ops fn_fedavg_ops;

/* The ops for an enum fn_algorithm value, or NULL. */
const struct fn_algo_ops *fn_algo_find(uint32_t algorithm);

#endif
