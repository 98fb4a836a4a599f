// SPDX-License-Identifier: MIT
/* Tests for the planner: fan-in, leaves, active leaves and levels from a table of inputs. */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "ctl_plan.h"

#define MB 1000000ull

struct plan_case {
	const char *what;
	struct ctl_plan_in in;
	uint32_t fanin, leaves, active, levels, mids;
	const char *why_has; /* a word the rule's description contains */
};

/*
 * Expected values worked by hand from the rule in ctl_plan.h:
 *   a = clamp(ceil(arrival_rate * model_bytes / fold_bw), 1, cores)
 *   pinned: f = min(pinned, clients), leaves = ceil(clients / f);
 *   else leaves = clamp(ceil(sqrt(clients * a)), ceil(clients / 64), ceil(clients / 2)),
 *        f = ceil(clients / leaves) (the largest block; blocks differ by at most one);
 *   levels 3 (mids = ceil(leaves / 32)) when leaves > 32.
 */
static const struct plan_case cases[] = {
	{ "pinned fan-in wins over the sqrt rule",
	  { .clients = 10, .model_bytes = MB, .cores = 8, .pinned_fanin = 3 },
	  3, 4, 1, 2, 0, "fixed" },
	{ "pinned fan-in larger than the clients is clamped to them",
	  { .clients = 5, .model_bytes = MB, .cores = 8, .pinned_fanin = 8 },
	  5, 1, 1, 2, 0, "fixed" },
	{ "pinned fan-in is not clamped to CTL_FANIN_MAX",
	  { .clients = 1000, .model_bytes = MB, .cores = 8, .pinned_fanin = 100 },
	  100, 10, 1, 2, 0, "fixed" },
	{ "pinned fan-in 1: one leaf per client, a third level past 32",
	  { .clients = 33, .model_bytes = MB, .cores = 8, .pinned_fanin = 1 },
	  1, 33, 1, 3, 2, "fixed" },
	{ "pinned fan-in 1 with 32 clients stays at two levels",
	  { .clients = 32, .model_bytes = MB, .cores = 8, .pinned_fanin = 1 },
	  1, 32, 1, 2, 0, "fixed" },
	{ "pinned fan-in still reports active leaves from arrivals",
	  { .clients = 100, .arrival_rate = 2500, .model_bytes = MB, .fold_bw = 1e9, .cores = 8,
	    .pinned_fanin = 10 },
	  10, 10, 3, 2, 0, "fixed" },
	{ "16 clients: sqrt gives fan-in 4, 4 leaves",
	  { .clients = 16, .model_bytes = MB, .cores = 8 }, 4, 4, 1, 2, 0, "sqrt" },
	{ "400 clients: sqrt gives fan-in 20, 20 leaves",
	  { .clients = 400, .model_bytes = MB, .cores = 8 }, 20, 20, 1, 2, 0, "sqrt" },
	{ "10 clients: 4 leaves, blocks of 3 and 2",
	  { .clients = 10, .model_bytes = MB, .cores = 8 }, 3, 4, 1, 2, 0, "sqrt" },
	{ "3 clients: sqrt below 2 is clamped to CTL_FANIN_MIN",
	  { .clients = 3, .model_bytes = MB, .cores = 8 }, 2, 2, 1, 2, 0, "sqrt" },
	{ "2 clients: one leaf of fan-in 2",
	  { .clients = 2, .model_bytes = MB, .cores = 8 }, 2, 1, 1, 2, 0, "sqrt" },
	{ "1 client: fan-in min 2 clamped down to the single client",
	  { .clients = 1, .model_bytes = MB, .cores = 8 }, 1, 1, 1, 2, 0, "sqrt" },
	{ "10000 clients: sqrt 100 is clamped to CTL_FANIN_MAX, three levels",
	  { .clients = 10000, .model_bytes = MB, .cores = 8 }, 64, 157, 1, 3, 5, "sqrt" },
	{ "1024 clients: 32 leaves, still two levels",
	  { .clients = 1024, .model_bytes = MB, .cores = 8 }, 32, 32, 1, 2, 0, "sqrt" },
	{ "1089 clients: 33 leaves, a third level",
	  { .clients = 1089, .model_bytes = MB, .cores = 8 }, 33, 33, 1, 3, 2, "sqrt" },
	{ "arrivals 2.5x one leaf's fold rate: 3 active, leaves sqrt(900 x 3)",
	  { .clients = 900, .arrival_rate = 2500, .model_bytes = MB, .fold_bw = 1e9, .cores = 8 },
	  18, 52, 3, 3, 2, "arrivals" },
	{ "arrivals far beyond the cores: active clamped to 4 cores",
	  { .clients = 900, .arrival_rate = 1e5, .model_bytes = MB, .fold_bw = 1e9, .cores = 4 },
	  15, 60, 4, 3, 2, "arrivals" },
	{ "slow arrivals: at least one active leaf",
	  { .clients = 900, .arrival_rate = 0.5, .model_bytes = MB, .fold_bw = 1e9, .cores = 8 },
	  30, 30, 1, 2, 0, "arrivals" },
	{ "no arrivals measured: one active leaf",
	  { .clients = 900, .model_bytes = MB, .fold_bw = 1e9, .cores = 8 },
	  30, 30, 1, 2, 0, "no arrivals" },
	{ "fold_bw 0 means CTL_FOLD_BW_DEFAULT (5 GB/s)",
	  { .clients = 900, .arrival_rate = 2500, .model_bytes = 5 * MB, .cores = 8 },
	  18, 52, 3, 3, 2, "arrivals" },
	{ "bigger model, same arrivals: more active leaves",
	  { .clients = 900, .arrival_rate = 2500, .model_bytes = 2 * MB, .fold_bw = 1e9,
	    .cores = 8 },
	  14, 68, 5, 3, 3, "arrivals" },
	{ "a free arena too small for two levels takes a third (groups of sqrt(leaves))",
	  { .clients = 16, .model_bytes = MB, .cores = 8, .arena_free = 1 }, 4, 4, 1, 3, 2,
	  "third level" },
	{ "a large free arena leaves two levels",
	  { .clients = 16, .model_bytes = MB, .cores = 8, .arena_free = 1000 * MB }, 4, 4, 1, 2,
	  0, "sqrt" },
};

Test(ctl_plan, table_of_cases)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct plan_case *c = &cases[i];
		struct ctl_plan p;

		memset(&p, 0xa5, sizeof(p));
		cr_assert_eq(ctl_plan_tree(&c->in, &p), 0, "%s: returned an error", c->what);
		cr_expect_eq(p.fanin, c->fanin, "%s: fanin %u, want %u", c->what, p.fanin, c->fanin);
		cr_expect_eq(p.leaves, c->leaves, "%s: leaves %u, want %u", c->what, p.leaves,
			     c->leaves);
		cr_expect_eq(p.active, c->active, "%s: active %u, want %u", c->what, p.active,
			     c->active);
		cr_expect_eq(p.levels, c->levels, "%s: levels %u, want %u", c->what, p.levels,
			     c->levels);
		cr_expect_eq(p.mids, c->mids, "%s: mids %u, want %u", c->what, p.mids, c->mids);
		cr_assert_not_null(p.why, "%s: no reason given", c->what);
		cr_expect_not_null(strstr(p.why, c->why_has), "%s: why \"%s\" lacks \"%s\"", c->what,
				   p.why, c->why_has);
	}
}

Test(ctl_plan, zero_clients_is_einval)
{
	struct ctl_plan_in in = { .clients = 0, .model_bytes = MB, .cores = 8 };
	struct ctl_plan p;

	cr_expect_eq(ctl_plan_tree(&in, &p), -EINVAL);
	in.pinned_fanin = 4;
	cr_expect_eq(ctl_plan_tree(&in, &p), -EINVAL);
}

Test(ctl_plan, zero_model_bytes_is_einval)
{
	struct ctl_plan_in in = { .clients = 16, .model_bytes = 0, .cores = 8 };
	struct ctl_plan p;

	cr_expect_eq(ctl_plan_tree(&in, &p), -EINVAL);
	in.arrival_rate = 100;
	cr_expect_eq(ctl_plan_tree(&in, &p), -EINVAL);
}

/* Every plan covers the clients exactly: no empty leaf, no client left out. */
static void expect_consistent(const struct ctl_plan_in *in, const struct ctl_plan *p)
{
	cr_assert(p->fanin >= 1 && p->fanin <= in->clients, "clients %u: fanin %u", in->clients,
		  p->fanin);
	/* Pinned: full blocks and one shorter; planned: blocks of fanin or fanin - 1. */
	cr_assert((uint64_t)p->leaves * p->fanin >= in->clients &&
			  (in->pinned_fanin ? (uint64_t)(p->leaves - 1) * p->fanin < in->clients :
					      (uint64_t)p->leaves * (p->fanin - 1) < in->clients),
		  "clients %u: %u leaves of fan-in %u", in->clients, p->leaves, p->fanin);
	if (!in->pinned_fanin && in->clients >= CTL_FANIN_MIN)
		cr_assert(p->fanin >= CTL_FANIN_MIN && p->fanin <= CTL_FANIN_MAX,
			  "clients %u: planned fanin %u out of [%u, %u]", in->clients, p->fanin,
			  CTL_FANIN_MIN, CTL_FANIN_MAX);
	cr_assert(p->active >= 1 && (!in->cores || p->active <= in->cores),
		  "clients %u: active %u with %u cores", in->clients, p->active, in->cores);
	cr_assert_eq(p->levels, p->leaves > CTL_TOP_FANIN_MAX ? 3u : 2u, "clients %u: %u leaves, "
		     "%u levels", in->clients, p->leaves, p->levels);
}

/* Leaves for 1..20000 clients at arrival @rate never go down as clients go up. */
static void expect_monotonic_in_clients(double rate)
{
	uint32_t prev = 0;

	for (uint32_t c = 1; c <= 20000; c++) {
		struct ctl_plan_in in = { .clients = c, .arrival_rate = rate, .model_bytes = MB,
					  .fold_bw = 1e9, .cores = 8 };
		struct ctl_plan p;

		cr_assert_eq(ctl_plan_tree(&in, &p), 0);
		expect_consistent(&in, &p);
		cr_assert(p.leaves >= prev, "rate %g (%u active): %u clients give %u leaves, %u "
			  "give %u", rate, p.active, c - 1, prev, c, p.leaves);
		prev = p.leaves;
	}
}

Test(ctl_plan, more_clients_never_fewer_leaves)
{
	expect_monotonic_in_clients(0);
	expect_monotonic_in_clients(500); /* one active leaf */
}

/*
 * A regression test: the first rule chose the fan-in, f = ceil(sqrt(C / a)),
 * and with a > 1 active leaves ceil(C / f) fell each time f stepped up
 * (a = 2 gave 4 leaves for 8 clients and 3 for 9).
 */
Test(ctl_plan, more_clients_never_fewer_leaves_with_several_active)
{
	expect_monotonic_in_clients(1500);   /* 2 active */
	expect_monotonic_in_clients(4500);   /* 5 active */
	expect_monotonic_in_clients(1e6);    /* all 8 cores */
}

Test(ctl_plan, faster_arrivals_never_fewer_leaves)
{
	static const uint32_t clients[] = { 2, 16, 100, 400, 2000, 20000 };

	for (size_t k = 0; k < sizeof(clients) / sizeof(clients[0]); k++) {
		uint32_t prev = 0, prev_active = 0;

		for (double rate = 0; rate <= 20000; rate += 250) {
			struct ctl_plan_in in = { .clients = clients[k], .arrival_rate = rate,
						  .model_bytes = MB, .fold_bw = 1e9, .cores = 16 };
			struct ctl_plan p;

			cr_assert_eq(ctl_plan_tree(&in, &p), 0);
			expect_consistent(&in, &p);
			cr_assert(p.leaves >= prev, "%u clients: rate %g gives %u leaves, fewer than "
				  "%u", clients[k], rate, p.leaves, prev);
			cr_assert(p.active >= prev_active, "%u clients: rate %g gives %u active",
				  clients[k], rate, p.active);
			prev = p.leaves;
			prev_active = p.active;
		}
	}
}

Test(ctl_plan, pinned_fanin_is_used_for_every_client_count)
{
	for (uint32_t c = 1; c <= 5000; c++) {
		struct ctl_plan_in in = { .clients = c, .arrival_rate = 3000, .model_bytes = MB,
					  .fold_bw = 1e9, .cores = 8, .pinned_fanin = 7 };
		struct ctl_plan p;

		cr_assert_eq(ctl_plan_tree(&in, &p), 0);
		expect_consistent(&in, &p);
		cr_assert_eq(p.fanin, c < 7 ? c : 7u, "%u clients: fanin %u", c, p.fanin);
	}
}

/* The autoscaler's rule from ctl_plan.h: depth >= CTL_SPLIT_DEPTH and busy < max(1, cores - 1). */
Test(ctl_plan, split_needs_a_queue_and_a_free_core)
{
	/* A short queue never splits, whatever the cores. */
	cr_expect_not(ctl_plan_split(CTL_SPLIT_DEPTH - 1, 1, 64));
	cr_expect_not(ctl_plan_split(0, 0, 0));
	/* 2 cores: one for the gateway, one leaf folding: never a second. */
	cr_expect_not(ctl_plan_split(1000, 1, 2));
	cr_expect(ctl_plan_split(CTL_SPLIT_DEPTH, 0, 2));
	cr_expect_not(ctl_plan_split(CTL_SPLIT_DEPTH, 1, 1));
	/* 8 cores: up to 7 busy leaves. */
	cr_expect(ctl_plan_split(CTL_SPLIT_DEPTH, 6, 8));
	cr_expect_not(ctl_plan_split(CTL_SPLIT_DEPTH, 7, 8));
	cr_expect_not(ctl_plan_split(CTL_SPLIT_DEPTH, 100, 8));
	/* Cores unknown: the queue alone decides. */
	cr_expect(ctl_plan_split(CTL_SPLIT_DEPTH, 100, 0));
}
