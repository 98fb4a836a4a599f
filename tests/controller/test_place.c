// SPDX-License-Identifier: MIT
/* Tests for placement: traffic-proportional leaves, packing, spill when full, the round-robin baseline. */
#include <criterion/criterion.h>
#include <errno.h>

#include "ctl_place.h"

#define MB 1000000ull
#define BIG (100000 * MB)

struct placed {
	uint32_t leaf_node[256];
	uint32_t per_node[8];
	struct ctl_placement p;
};

static int place(struct placed *x, const struct ctl_node_in *nodes, size_t nn, uint32_t leaves,
		 bool rr)
{
	struct ctl_place_in in = { .leaves = leaves, .fanin = 10, .model_bytes = MB,
				   .nodes = nodes, .nnodes = nn, .ignore_locality = rr };

	x->p.leaf_node = x->leaf_node;
	x->p.leaves_per_node = x->per_node;
	return ctl_place(&in, &x->p);
}

Test(ctl_place, equal_traffic_gives_equal_subtrees_and_one_edge_per_other_node)
{
	struct ctl_node_in nodes[3] = { { 100, BIG, 2 }, { 100, BIG, 2 }, { 100, BIG, 2 } };
	struct placed x;

	cr_assert_eq(place(&x, nodes, 3, 30, false), 0);
	for (int n = 0; n < 3; n++)
		cr_expect_eq(x.per_node[n], 10u, "node %d: %u leaves", n, x.per_node[n]);
	cr_expect_eq(x.p.top_node, 0u);
	cr_expect_eq(x.p.cross_edges, 2u, "one cross-node edge per node but the top's");
	cr_expect_float_eq(x.p.remote_share, 0.0, 1e-12);
	/* Leaves are numbered node by node: each node's leaves are one subtree. */
	for (int i = 0; i < 30; i++)
		cr_expect_eq(x.leaf_node[i], (uint32_t)(i / 10));
}

Test(ctl_place, skewed_traffic_gives_proportional_leaves_and_top_on_the_busiest)
{
	struct ctl_node_in nodes[3] = { { 10, BIG, 2 }, { 70, BIG, 2 }, { 20, BIG, 2 } };
	struct placed x;

	cr_assert_eq(place(&x, nodes, 3, 10, false), 0);
	cr_expect_eq(x.per_node[0], 1u);
	cr_expect_eq(x.per_node[1], 7u);
	cr_expect_eq(x.per_node[2], 2u);
	cr_expect_eq(x.p.top_node, 1u);
	cr_expect_eq(x.p.cross_edges, 2u);
}

Test(ctl_place, the_top_goes_where_there_is_room_for_its_inputs)
{
	/*
	 * Eight nodes with traffic, node 3 the busiest (5 of 12 leaves). The top needs a sum
	 * from each of the 8, plus its accumulator and zeros: 10 model sizes. With 9 free,
	 * node 3 still holds its 5 leaves (capacity 9 - fan-in - 2 = 5) but not the top.
	 */
	struct ctl_node_in nodes[8];
	struct placed x;
	struct ctl_place_in in = { .leaves = 12, .fanin = 2, .model_bytes = MB, .nodes = nodes,
				   .nnodes = 8 };

	for (int n = 0; n < 8; n++)
		nodes[n] = (struct ctl_node_in){ n == 3 ? 50 : 10, BIG, 2 };
	x.p.leaf_node = x.leaf_node;
	x.p.leaves_per_node = x.per_node;
	nodes[3].arena_free = 10 * MB;
	cr_assert_eq(ctl_place(&in, &x.p), 0);
	cr_expect_eq(x.per_node[3], 5u);
	cr_expect_eq(x.p.top_node, 3u, "room for the top: the busiest node");
	nodes[3].arena_free = 9 * MB;
	cr_assert_eq(ctl_place(&in, &x.p), 0);
	cr_expect_eq(x.per_node[3], 5u, "its leaves still fit");
	cr_expect_eq(x.p.top_node, 0u, "no room for the top's inputs: the next (lowest) node");
	cr_expect_eq(x.p.cross_edges, 7u);
	for (int n = 0; n < 8; n++)
		nodes[n].arena_free = 9 * MB;
	cr_assert_eq(ctl_place(&in, &x.p), 0);
	cr_expect_eq(x.p.top_node, 3u, "no node has room: the busiest, and it waits for memory");
}

Test(ctl_place, a_node_without_traffic_gets_no_leaf_a_small_one_gets_one)
{
	struct ctl_node_in nodes[3] = { { 0, BIG, 2 }, { 99, BIG, 2 }, { 1, BIG, 2 } };
	struct placed x;

	cr_assert_eq(place(&x, nodes, 3, 4, false), 0);
	cr_expect_eq(x.per_node[0], 0u, "no traffic, no leaf");
	cr_expect_eq(x.per_node[2], 1u, "1%% of the traffic still folds where it lands");
	cr_expect_eq(x.per_node[1], 3u);
	cr_expect_eq(x.p.cross_edges, 1u);
}

Test(ctl_place, a_full_node_spills_to_the_one_with_most_room)
{
	/* Node 0 holds 15 models: 15 - (fanin 10 + 2) = 3 leaves. */
	struct ctl_node_in nodes[3] = { { 80, 15 * MB, 2 }, { 10, BIG, 2 }, { 10, 40 * MB, 2 } };
	struct placed x;

	cr_assert_eq(place(&x, nodes, 3, 10, false), 0);
	cr_expect_eq(x.per_node[0], 3u, "packed to its capacity");
	cr_expect_eq(x.p.spilled, 5u, "8 wanted, 3 fit");
	cr_expect_eq(x.per_node[0] + x.per_node[1] + x.per_node[2], 10u);
	cr_expect_gt(x.p.remote_share, 0.4);
}

Test(ctl_place, when_nothing_fits_it_says_so)
{
	struct ctl_node_in nodes[2] = { { 1, 14 * MB, 2 }, { 1, 14 * MB, 2 } };
	struct placed x;

	cr_expect_eq(place(&x, nodes, 2, 10, false), -ENOSPC);
}

Test(ctl_place, round_robin_baseline_moves_updates_across_nodes)
{
	struct ctl_node_in nodes[3] = { { 80, BIG, 2 }, { 10, BIG, 2 }, { 10, BIG, 2 } };
	struct placed loc, rr;

	cr_assert_eq(place(&loc, nodes, 3, 30, false), 0);
	cr_assert_eq(place(&rr, nodes, 3, 30, true), 0);
	cr_expect_float_eq(loc.p.remote_share, 0.0, 1e-12);
	cr_expect_float_eq(rr.p.remote_share, 0.8 - 1.0 / 3, 1e-9,
			   "80%% of the updates land on a node that folds a third");
	cr_expect_eq(rr.per_node[0], 10u);
}

Test(ctl_place, bad_input_is_einval)
{
	struct ctl_node_in nodes[1] = { { 1, BIG, 2 } };
	struct placed x;

	cr_expect_eq(place(&x, nodes, 0, 10, false), -EINVAL);
	cr_expect_eq(place(&x, nodes, 1, 0, false), -EINVAL);
}
