// SPDX-License-Identifier: MIT
/* Placement of a round's leaves on nodes: traffic-proportional, packed, spilled only when full. */
#include "ctl_place.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/* Leaves node @n can hold: partials + one leaf's updates + the node aggregator, in models. */
static uint64_t node_capacity(const struct ctl_place_in *in, size_t n)
{
	uint64_t models = in->nodes[n].arena_free / in->model_bytes;
	uint64_t overhead = (uint64_t)in->fanin + 2;

	return models > overhead ? models - overhead : 0;
}

/* Shares by traffic (equal without any), largest remainder; @total is the summed arrivals. */
static void place_shares(const struct ctl_place_in *in, double total, uint32_t *per_node)
{
	double rem[CTL_PLACE_MAX_NODES];
	size_t nn = in->nnodes;
	uint32_t placed = 0;

	for (size_t n = 0; n < nn; n++) {
		double share = total > 0 ? in->nodes[n].arrivals / total : 1.0 / (double)nn;
		double want = share * in->leaves;

		per_node[n] = (uint32_t)floor(want);
		rem[n] = want - floor(want);
		/* Traffic deserves a leaf of its own: fold where the updates land. */
		if (per_node[n] == 0 && in->nodes[n].arrivals > 0)
			rem[n] += 1.0;
		placed += per_node[n];
	}
	while (placed < in->leaves) {
		size_t best = 0;

		for (size_t n = 1; n < nn; n++)
			if (rem[n] > rem[best])
				best = n;
		per_node[best]++;
		/* Each node gets at most one extra: the floors leave fewer than nn. */
		rem[best] = -1;
		placed++;
	}
}

/* Capacity: spill what a node cannot hold to the node with the most room. 0 or -ENOSPC. */
static int place_spill(const struct ctl_place_in *in, struct ctl_placement *out)
{
	size_t nn = in->nnodes;
	int err = 0;

	for (size_t n = 0; n < nn; n++) {
		uint64_t cap = node_capacity(in, n);

		while (out->leaves_per_node[n] > cap) {
			size_t to = nn;
			uint64_t room = 0;

			for (size_t m = 0; m < nn; m++) {
				uint64_t c = node_capacity(in, m);

				if (c > out->leaves_per_node[m] && c - out->leaves_per_node[m] > room) {
					room = c - out->leaves_per_node[m];
					to = m;
				}
			}
			if (to == nn) {
				err = -ENOSPC;
				break;
			}
			out->leaves_per_node[n]--;
			out->leaves_per_node[to]++;
			out->spilled++;
		}
	}
	return err;
}

/*
 * The top lands one sum from every other node with leaves and folds them into
 * its accumulator (+ one slot of zeros): a node without room for that would
 * stall the round. Among nodes with room, most leaves (ties: lowest index).
 */
static uint32_t place_top(const struct ctl_place_in *in, const uint32_t *per_node)
{
	uint64_t with = 0, best = 0;
	uint32_t top = 0;
	bool found = false;

	for (size_t n = 0; n < in->nnodes; n++)
		with += per_node[n] > 0;
	for (size_t n = 0; n < in->nnodes; n++) {
		bool room = in->nodes[n].arena_free >= (with + 2) * in->model_bytes;

		if (per_node[n] && room && (!found || per_node[n] > best)) {
			top = (uint32_t)n;
			best = per_node[n];
			found = true;
		}
	}
	if (!found) /* no node has room: where most leaves are; it waits for memory */
		for (size_t n = 1; n < in->nnodes; n++)
			if (per_node[n] > per_node[top])
				top = (uint32_t)n;
	return top;
}

int ctl_place(const struct ctl_place_in *in, struct ctl_placement *out)
{
	double total = 0;
	int err = 0;

	if (!in->nnodes || in->nnodes > CTL_PLACE_MAX_NODES || !in->leaves || !in->model_bytes ||
	    !in->fanin)
		return -EINVAL;
	memset(out->leaves_per_node, 0, in->nnodes * sizeof(*out->leaves_per_node));
	out->spilled = 0;
	out->cross_edges = 0;
	for (size_t n = 0; n < in->nnodes; n++)
		total += in->nodes[n].arrivals > 0 ? in->nodes[n].arrivals : 0;

	if (in->ignore_locality) {
		for (uint32_t i = 0; i < in->leaves; i++)
			out->leaves_per_node[i % in->nnodes]++;
	} else {
		place_shares(in, total, out->leaves_per_node);
		err = place_spill(in, out);
	}
	/* Leaves numbered node by node: a node's leaves form its subtree. */
	for (size_t n = 0, i = 0; n < in->nnodes; n++)
		for (uint32_t k = 0; k < out->leaves_per_node[n] && i < in->leaves; k++)
			out->leaf_node[i++] = (uint32_t)n;
	out->top_node = place_top(in, out->leaves_per_node);
	out->remote_share = 0;
	for (size_t n = 0; n < in->nnodes; n++) {
		double share = total > 0 ? in->nodes[n].arrivals / total : 1.0 / (double)in->nnodes;
		double local = (double)out->leaves_per_node[n] / in->leaves;

		if (n != out->top_node && out->leaves_per_node[n])
			out->cross_edges++;
		/* Updates a node receives beyond what its own leaves fold must cross. */
		if (share > local)
			out->remote_share += share - local;
	}
	return err;
}
