// SPDX-License-Identifier: MIT
/*
 * What an update carries from the controller's count beyond the count itself: fedau's weight,
 * from the controller's per-client table (controller/ctl_fedau.c). The node that folds it
 * journals and folds it with that weight, as one node does with its own table.
 */
#include "agent_priv.h"

#include <errno.h>
#include <math.h>

#include "trib_log.h"

int rt__agent_accept_state(struct rt_agent *a, struct upd *u, const json_t *rep)
{
	struct rt_job *j = rt_job_find(a->n, u->job);
	json_t *w = json_object_get(rep, "weight");
	double v;

	if (!j || !j->algo.fedau)
		return 0;
	v = json_number_value(w);
	/* An estimate is a mean of intervals of 1..K rounds. */
	if (!json_is_number(w) || !isfinite(v) || v < 1.0 || v > (double)j->algo.fedau_k) {
		trib_error("job %s round %u: the controller's count of a fedau update has no "
			   "valid weight (%g)", u->job, u->round, v);
		return -EPROTO;
	}
	u->weight = v;
	return 0;
}

const char *rt__agent_state_provisional(const struct rt_job *j)
{
	if (j && j->algo.fedau)
		return "only it knows a fedau client's weight (its participation across every "
		       "node)";
	return NULL;
}
