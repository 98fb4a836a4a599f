// SPDX-License-Identifier: MIT
/* The planner: fan-in and levels of a round's tree from clients, arrivals, model size and cores. */
#include "ctl_plan.h"

#include <errno.h>
#include <math.h>

int ctl_plan_tree(const struct ctl_plan_in *in, struct ctl_plan *out)
{
	double fold_rate, a;
	uint32_t fanin, active;

	if (!in->clients || !in->model_bytes)
		return -EINVAL;
	fold_rate = (in->fold_bw > 0 ? in->fold_bw : CTL_FOLD_BW_DEFAULT) / (double)in->model_bytes;
	a = in->arrival_rate > 0 ? ceil(in->arrival_rate / fold_rate) : 1;
	if (a < 1)
		a = 1;
	if (in->cores && a > in->cores)
		a = in->cores;
	active = (uint32_t)a;
	if (in->pinned_fanin) {
		fanin = in->pinned_fanin < in->clients ? in->pinned_fanin : in->clients;
		out->leaves = (in->clients + fanin - 1) / fanin;
		out->why = "fan-in fixed by the job";
	} else {
		/*
		 * Leaves first, L = ceil(sqrt(C a)) (= C / sqrt(C/a)), clamped so
		 * that no leaf takes more than CTL_FANIN_MAX or fewer than
		 * CTL_FANIN_MIN updates: every term grows with C and a, so more
		 * clients or faster arrivals never give fewer leaves. Blocks are
		 * then as even as C allows: ceil(C/L) at most.
		 */
		double l = ceil(sqrt((double)in->clients * a));
		double lo = ceil((double)in->clients / CTL_FANIN_MAX);
		double hi = ceil((double)in->clients / CTL_FANIN_MIN);

		if (l < lo)
			l = lo;
		if (l > hi)
			l = hi;
		if (l < 1)
			l = 1;
		out->leaves = (uint32_t)l;
		fanin = (in->clients + out->leaves - 1) / out->leaves;
		out->why = in->arrival_rate > 0 ?
				   "leaves sqrt(clients x active): least arena held, active from arrivals" :
				   "leaves sqrt(clients): least arena held, no arrivals measured yet";
	}
	out->fanin = fanin;
	out->active = active;
	out->levels = 2;
	out->mids = 0;
	out->group = 0;
	out->fits = true;
	if (out->leaves > CTL_TOP_FANIN_MAX) {
		out->levels = 3;
		out->group = CTL_TOP_FANIN_MAX;
	}
	/*
	 * The arena: every partial of a two-level round lives until its model
	 * is written, about model x (L + a F + 1). A third level frees a
	 * group's partials once its mid has folded them: model x (L/G + G +
	 * a F + 2), least at G = sqrt(L). Take it when two levels would not
	 * fit in three quarters of the free arena.
	 */
	if (in->arena_free) {
		double budget = 0.75 * (double)in->arena_free / (double)in->model_bytes;
		double two = out->leaves + (double)active * fanin + 1;

		if (out->levels == 2 && two > budget && out->leaves > 2) {
			out->levels = 3;
			out->group = (uint32_t)ceil(sqrt((double)out->leaves));
			out->why = "a third level: two would hold more than the free arena";
		}
		if (out->levels == 3) {
			double mids = ceil((double)out->leaves / out->group);

			out->fits = mids + out->group + (double)active * fanin + 2 <= budget;
		} else {
			out->fits = two <= budget;
		}
	}
	if (out->levels == 3)
		out->mids = (out->leaves + out->group - 1) / out->group;
	return 0;
}

bool ctl_plan_split(uint64_t depth, uint32_t busy, uint32_t cores)
{
	uint32_t cap = cores > 2 ? cores - 1 : 1;

	if (depth < CTL_SPLIT_DEPTH)
		return false;
	return !cores || busy < cap;
}
