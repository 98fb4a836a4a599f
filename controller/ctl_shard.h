/* SPDX-License-Identifier: MIT */
/* Robust rules across nodes: which node owns which coordinates of a round (a pure function). */
#ifndef CTL_SHARD_H
#define CTL_SHARD_H

#include <stddef.h>
#include <stdint.h>

/*
 * The owners of a closed round are the ranks r with counts[r] > 0, in rank order: nodes that
 * folded nothing (or were lost, their count set to 0) own nothing, so a range never waits for
 * a node that is gone. With m owners, the q-th owner (0-based) holds the coordinates
 *   [ floor(n * q / m), floor(n * (q + 1) / m) )
 * of the model's n: ranges are contiguous, disjoint, cover [0, n) and differ in size by at
 * most one (the split the single node makes over its shard functions). Computed as
 * (n / m) q + floor((n mod m) q / m), so that n * q cannot overflow.
 *
 * Node by node, an update's place in the round is
 *   i = sum of counts[s] for s < rank  +  the update's place in its node's round;
 * owners then sort the round by the controller's count of each update (runtime/cluster/
 * rt_agent_shard.c), i breaking ties, so that an update is the same row on every owner (what
 * lets Krum's distances be summed across owners).
 */

/* Owners among @counts (@nnodes ranks): their number. */
uint32_t ctl_shard_owners(const uint32_t *counts, uint32_t nnodes);

/*
 * The range of rank @rank: 0 with [*lo, *hi) set (empty when n < owners and the floor makes it
 * so), or -ENOENT when @rank owns nothing (count 0 or rank >= nnodes).
 */
int ctl_shard_range(const uint32_t *counts, uint32_t nnodes, uint32_t rank, uint64_t n,
		    uint64_t *lo, uint64_t *hi);

/* The round-wide index of the first update of @rank (the sum of the counts before it). */
uint64_t ctl_shard_first(const uint32_t *counts, uint32_t nnodes, uint32_t rank);

/* The updates of the round: the sum of the counts. */
uint64_t ctl_shard_total(const uint32_t *counts, uint32_t nnodes);

#endif
