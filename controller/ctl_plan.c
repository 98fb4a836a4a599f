// SPDX-License-Identifier: MIT
/* The planner: fan-in and levels of a round's tree from clients, arrivals, model size and cores. */
#include "ctl_plan.h"

#include <errno.h>
#include <math.h>

int ctl_plan_tree(const struct ctl_plan_in *in, struct ctl_plan *out)
{
	double fold_rate, a, f;
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
		fanin = in->pinned_fanin;
		out->why = "fan-in fixed by the job";
	} else {
		f = ceil(sqrt((double)in->clients / a));
		if (f < CTL_FANIN_MIN)
			f = CTL_FANIN_MIN;
		if (f > CTL_FANIN_MAX)
			f = CTL_FANIN_MAX;
		fanin = (uint32_t)f;
		out->why = in->arrival_rate > 0 ?
				   "fan-in sqrt(clients/active): least arena held, active from arrivals" :
				   "fan-in sqrt(clients): least arena held, no arrivals measured yet";
	}
	if (fanin > in->clients)
		fanin = in->clients;
	out->fanin = fanin;
	out->leaves = (in->clients + fanin - 1) / fanin;
	out->active = active;
	if (out->leaves > CTL_TOP_FANIN_MAX) {
		out->levels = 3;
		out->mids = (out->leaves + CTL_TOP_FANIN_MAX - 1) / CTL_TOP_FANIN_MAX;
	} else {
		out->levels = 2;
		out->mids = 0;
	}
	return 0;
}
