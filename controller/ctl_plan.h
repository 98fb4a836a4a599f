/* SPDX-License-Identifier: MIT */
/* The planner: the shape of a round's aggregation tree, as a pure function of what is measured. */
#ifndef CTL_PLAN_H
#define CTL_PLAN_H

#include <stdbool.h>
#include <stdint.h>

/* What one leaf folds per second (bytes of update), unless measured: bench/fold, k=1. */
#define CTL_FOLD_BW_DEFAULT 5e9
#define CTL_FANIN_MIN 2u
#define CTL_FANIN_MAX 64u
/* Children one top folds before a third level pays off. */
#define CTL_TOP_FANIN_MAX 32u
/* Descriptors waiting at a leaf that make the autoscaler start another beside it. */
#define CTL_SPLIT_DEPTH 4u

struct ctl_plan_in {
	uint32_t clients;      /* updates expected per round (clients_per_round) */
	double arrival_rate;   /* updates/s measured over past rounds, smoothed; 0: unknown */
	uint64_t model_bytes;  /* bytes of one update */
	double fold_bw;        /* bytes/s one leaf folds */
	uint32_t cores;        /* cores of the node */
	uint64_t arena_free;   /* bytes free in the arena now */
	uint32_t pinned_fanin; /* the job fixed its fan-in; 0: the planner chooses */
};

struct ctl_plan {
	uint32_t fanin;  /* updates in the largest leaf block */
	uint32_t leaves; /* leaves planned */
	uint32_t active; /* leaves expected to fold at the same time */
	uint32_t levels; /* 2, or 3 when leaves exceed CTL_TOP_FANIN_MAX */
	uint32_t mids;   /* level-2 aggregators when levels == 3 */
	uint32_t group;  /* leaves per mid when levels == 3 */
	bool fits;       /* the estimated peak arena use fits arena_free (or it is unknown) */
	const char *why; /* the rule that decided (static) */
};

/*
 * Plan the tree. Leaves fill in order, each with a block of updates; a leaf
 * holds its updates' slots until its partial exists, and every partial
 * lives until the round's model is written. So the arena holds about
 *   model_bytes * (L + a * C/L)
 * for L leaves, least at L = sqrt(C a), where a, the leaves folding at
 * once, is how many it takes to keep up with the arrivals:
 *   a = ceil(arrival_rate * model_bytes / fold_bw), at least 1, at most cores.
 * L is clamped so that blocks hold CTL_FANIN_MIN..CTL_FANIN_MAX updates, and
 * fanin = ceil(C / L) is the largest block (blocks differ by at most one). A
 * pinned fan-in wins: L = ceil(C / fanin). More clients or faster arrivals
 * never give fewer leaves. Returns 0, or -EINVAL when clients or
 * model_bytes is 0.
 */
int ctl_plan_tree(const struct ctl_plan_in *in, struct ctl_plan *out);

/*
 * The autoscaler's rule: start another leaf beside the one taking updates
 * when its eBPF queue has depth descriptors waiting and the round has busy
 * leaves (started, partial not yet made) folding:
 *   split = depth >= CTL_SPLIT_DEPTH  and  busy < max(1, cores - 1)
 * One core is the gateway's: a leaf beyond cores - 1 does not fold faster,
 * it takes CPU from the leaves and the gateway already there (on 2 cores
 * the autoscaled tree split 115-207 times per 3 rounds and lost to one
 * fixed leaf, 0.59-0.95x: docs/BENCHMARKS.md). cores 0 (unknown) caps
 * nothing.
 */
bool ctl_plan_split(uint64_t depth, uint32_t busy, uint32_t cores);

#endif
