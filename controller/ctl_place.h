/* SPDX-License-Identifier: MIT */
/* Placement: which node runs each leaf of a round's tree, locality first (groundwork for [4 of 6]). */
#ifndef CTL_PLACE_H
#define CTL_PLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the controller knows about one node when it places a round. */
struct ctl_node_in {
	double arrivals;     /* updates/s this node's gateway receives for the job (measured) */
	uint64_t arena_free; /* bytes free in the node's arena */
	uint32_t cores;
};

struct ctl_place_in {
	uint32_t leaves;        /* from the plan */
	uint32_t fanin;         /* updates per leaf (largest block) */
	uint64_t model_bytes;
	const struct ctl_node_in *nodes; /* borrowed */
	size_t nnodes;
	bool ignore_locality;   /* the baseline: leaves round-robin over the nodes */
};

/*
 * The placement. leaf_node[i] is the node of leaf i; per node, its leaves
 * fold into one node aggregator on that node (shared memory), and that one
 * partial crosses to the top's node: one cross-node edge per node with
 * leaves, other than the top's own. Arrays are the caller's (leaves and
 * nnodes entries).
 */
struct ctl_placement {
	uint32_t *leaf_node;       /* leaves entries */
	uint32_t *leaves_per_node; /* nnodes entries */
	uint32_t top_node;
	uint32_t cross_edges;      /* partials that cross nodes: node aggregators off the top node */
	uint32_t spilled;          /* leaves placed away from their traffic because a node was full */
	double remote_share;       /* fraction of updates folded on another node than they landed */
};

#define CTL_PLACE_MAX_NODES 64u

/*
 * Place @in->leaves leaves. Locality: each node gets leaves in proportion to
 * the updates its gateway receives (largest remainder; a node with traffic
 * gets at least one leaf while leaves last), so updates are folded where
 * they land. A node holds at most what its free arena allows (its leaves'
 * partials plus one leaf's block of updates plus its aggregator); leaves
 * beyond that spill to the node with the most room (spread only when full).
 * The top goes where most leaves are (ties: lowest index) among the nodes
 * with room for its inputs (a sum from each node with leaves, its
 * accumulator and a slot of zeros: that many model sizes of free arena); if
 * none has room, where most leaves are. With no traffic
 * measured anywhere, the shares are equal. Returns 0, -EINVAL (no nodes, no
 * leaves, no model size, more than CTL_PLACE_MAX_NODES nodes), or -ENOSPC when all nodes together cannot hold the
 * leaves (out is then filled as far as it fits).
 */
int ctl_place(const struct ctl_place_in *in, struct ctl_placement *out);

#endif
