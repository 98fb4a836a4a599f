// SPDX-License-Identifier: MIT
/*
 * Joining again. A node reports, in each join, what its arena's journal
 * holds: every update it acknowledged in a round still in flight (a record
 * is committed before the 202), per job and round, with the client ids of
 * those updates (one update per client per round holds across restarts);
 * with --durability disk, at the first join, also what only its log holds
 * (the arena file was gone: a reboot). The controller answers
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

/* @count updates of @job's @round, of total weight @weight, one of them by @client ("" none). */
static int hold_put(json_t *holds, uint64_t job, uint64_t round, uint64_t count, double weight,
		    const char *client, size_t client_len)
{
	json_t *e = NULL, *ids;
	size_t k;

	json_array_foreach(holds, k, e)
	{
		if ((uint64_t)json_integer_value(json_array_get(e, 0)) == job &&
		    (uint64_t)json_integer_value(json_array_get(e, 1)) == round)
			break;
	}
	if (k < json_array_size(holds)) {
		json_array_set_new(e, 2, json_integer(json_integer_value(json_array_get(e, 2)) +
						      (json_int_t)count));
		json_array_set_new(e, 3, json_real(json_real_value(json_array_get(e, 3)) + weight));
	} else {
		e = json_pack("[I, I, I, f, []]", (json_int_t)job, (json_int_t)round,
			      (json_int_t)count, weight);
		if (!e || json_array_append_new(holds, e))
			return -ENOMEM;
	}
	ids = json_array_get(e, 4);
	if (client_len && json_array_append_new(ids, json_stringn(client, client_len)))
		return -ENOMEM;
	return 0;
}

static int hold_add(void *ctx, uint32_t idx, const struct shm_rec_info *i)
{
	(void)idx;
	if (i->kind != SHM_REC_UPDATE && i->kind != SHM_REC_PARTIAL)
		return 0;
	return hold_put(ctx, i->job, i->round, i->count, i->weight,
			i->kind == SHM_REC_UPDATE ? i->client : NULL,
			i->kind == SHM_REC_UPDATE ? i->client_len : 0);
}

static int log_hold_add(void *ctx, const struct rt_log_held *h)
{
	return hold_put(ctx, h->job, h->round, 1, h->weight, h->client, strlen(h->client));
}

json_t *rt__agent_holds(struct rt_agent *a)
{
	json_t *holds = json_array();
	int err = holds ? shm_rec_each(a->n->arena, hold_add, holds) : -ENOMEM;

	if (!err)
		err = rt_node_log_holds(a->n, log_hold_add, holds);
	if (err)
		trib_error("cluster: reading what the arena (or the log) holds: %s; reported as "
			   "nothing",
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
