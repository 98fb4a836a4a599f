// SPDX-License-Identifier: MIT
/*
 * Joining again. A node reports, in each join, what its arena's journal
 * holds: every update it acknowledged in a round still in flight (a record
 * is committed before the 202), per job and round. The controller answers
 * which of those rounds keep them. At the first join after a start those
 * records go back into fresh rounds (rt_node_recover(), as `up` does); at a
 * later join (the controller restarted, or drained this node while it was
 * cut off) the rounds are live here already, and one the controller voids
 * makes this node exit so that it starts clean.
 */
#include "agent_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm_journal.h"
#include "trib_log.h"

static int hold_add(void *ctx, uint32_t idx, const struct shm_rec_info *i)
{
	json_t *holds = ctx, *e;
	size_t k;

	(void)idx;
	if (i->kind != SHM_REC_UPDATE && i->kind != SHM_REC_PARTIAL)
		return 0;
	json_array_foreach(holds, k, e)
	{
		if ((uint64_t)json_integer_value(json_array_get(e, 0)) != i->job ||
		    (uint64_t)json_integer_value(json_array_get(e, 1)) != i->round)
			continue;
		json_array_set_new(
		    e, 2, json_integer(json_integer_value(json_array_get(e, 2)) + i->count));
		json_array_set_new(e, 3,
				   json_real(json_real_value(json_array_get(e, 3)) + i->weight));
		return 0;
	}
	return json_array_append_new(holds, json_pack("[I, I, i, f]", (json_int_t)i->job,
						      (json_int_t)i->round, (json_int_t)i->count,
						      i->weight))
		   ? -ENOMEM
		   : 0;
}

json_t *rt__agent_holds(struct rt_agent *a)
{
	json_t *holds = json_array();
	int err = holds ? shm_rec_each(a->n->arena, hold_add, holds) : -ENOMEM;

	if (err)
		trib_error("cluster: reading what the arena holds: %s; reported as nothing",
			   strerror(-err));
	if (err && holds)
		json_array_clear(holds);
	return holds;
}

/* First join: each job starts at its lowest round the controller keeps; the rest is dropped. */
static void recover(struct rt_agent *a, json_t *verdicts)
{
	struct rt_node *n = a->n;
	json_t *e;
	size_t i;
	int err;

	for (struct rt_job *j = n->jobs; j; j = j->next) {
		uint32_t kept_min = UINT32_MAX, drop_end = 0;

		json_array_foreach(verdicts, i, e)
		{
			uint32_t r = (uint32_t)json_integer_value(json_array_get(e, 1));

			if (!j->xid || (uint64_t)json_integer_value(json_array_get(e, 0)) != j->xid)
				continue;
			if (json_is_true(json_array_get(e, 2)))
				kept_min = r < kept_min ? r : kept_min;
			else if (r + 1 > drop_end)
				drop_end = r + 1;
		}
		if (j->open || j->inflight)
			continue;
		/* Recovery drops the records of rounds below the job's (rt__journal_refeed()). */
		if (kept_min != UINT32_MAX)
			j->round = kept_min;
		else if (drop_end > j->round)
			j->round = drop_end;
	}
	a->recovered = true;
	err = rt_node_recover(n);
	if (err)
		trib_error("cluster: putting the arena's updates back into their rounds: %s; "
			   "those rounds cannot complete here",
			   strerror(-err));
}

void rt__agent_rejoined(struct rt_agent *a, json_t *verdicts)
{
	json_t *e;
	size_t i;

	if (!a->recovered) {
		recover(a, verdicts);
		return;
	}
	json_array_foreach(verdicts, i, e)
	{
		uint32_t r = (uint32_t)json_integer_value(json_array_get(e, 1));
		uint32_t held = (uint32_t)json_integer_value(json_array_get(e, 3));

		if (json_is_true(json_array_get(e, 2)) || !held)
			continue;
		/*
		 * A round live here that completed without this node (it was cut off
		 * longer than the controller waits): its state here is void. Stop, so
		 * that the supervisor starts it clean; the round record lists those
		 * updates as lost.
		 */
		trib_error("cluster: round %u of job id %lld went on without this node's %u "
			   "updates (the controller drained it); exiting so that it restarts clean",
			   r, (long long)json_integer_value(json_array_get(e, 0)), held);
		_exit(3);
	}
}
