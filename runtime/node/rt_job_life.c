// SPDX-License-Identifier: MIT
/*
 * A job's lifecycle (issue 15): done after num_rounds models, paused and
 * resumed, deleted. The store is the commit point of each change: the state
 * in memory follows only once SQLite has it, so a restart never disagrees
 * with an answer already given.
 */
#include "rt_node_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "ctl_store.h"
#include "shm_journal.h"
#include "trib_log.h"
#include "trib_store.h"

/* The kv key of @j's paused flag, and the prefix every key of @j starts with. */
static void kv_prefix(const struct rt_job *j, char *out, size_t cap)
{
	snprintf(out, cap, "job.%lld.", (long long)j->db_id);
}

static void kv_paused_key(const struct rt_job *j, char *out, size_t cap)
{
	snprintf(out, cap, "job.%lld.paused", (long long)j->db_id);
}

enum rt_job_state rt_job_state(const struct rt_job *j)
{
	if (j->num_rounds && j->completed >= j->num_rounds)
		return RT_JOB_DONE;
	return j->paused ? RT_JOB_PAUSED : RT_JOB_OPEN;
}

const char *rt_job_state_name(enum rt_job_state s)
{
	static const char *const names[] = { "open", "paused", "done" };

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

bool rt_job_rounds_over(const struct rt_job *j)
{
	return j->num_rounds && (j->round >= j->num_rounds || j->completed >= j->num_rounds);
}

int rt_job_set_paused(struct rt_node *n, struct rt_job *j, bool paused)
{
	char key[CTL_KV_KEY_MAX];
	int err;

	kv_paused_key(j, key, sizeof(key));
	err = ctl_store_kv_set(n->store, key, paused ? "1" : "0");
	if (err) {
		trib_error("job %s: keeping its %s state: %s", j->name,
			   paused ? "paused" : "resumed", strerror(-err));
		return err;
	}
	if (j->paused != paused)
		trib_info("job %s: %s", j->name, paused ? "paused" : "resumed");
	j->paused = paused;
	return 0;
}

void rt__job_life_load(struct rt_node *n, struct rt_job *j)
{
	char key[CTL_KV_KEY_MAX], val[8];
	int err;

	kv_paused_key(j, key, sizeof(key));
	err = ctl_store_kv_get(n->store, key, val, sizeof(val));
	if (err && err != -ENOENT)
		trib_warn("job %s: reading its paused state: %s (taken as not paused)", j->name,
			  strerror(-err));
	j->paused = !err && !strcmp(val, "1");
}

/* The model files leave DATA_DIR/jobs/NAME: kept under DATA_DIR/deleted/, or removed. */
static void models_release(struct rt_node *n, struct rt_job *j, bool purge)
{
	char kept[PATH_MAX];
	int err = trib_store_job_release(n->opts.data_dir, j->name, (long long)j->db_id, purge,
					 kept, sizeof(kept));

	if (err)
		trib_error("job %s: %s its model files: %s (the job is deleted; remove them by "
			   "hand from %s/jobs/%s)", j->name, purge ? "removing" : "moving aside",
			   strerror(-err), n->opts.data_dir, j->name);
	else
		trib_info("job %s: model files %s", j->name, purge ? "removed" :
			  kept[0] ? kept : "(none)");
}

/* Round @r of deleted @j is over: its records, log and slots go; no model is made. */
static void round_drop(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	unsigned released = 0;

	shm_journal_release_round(n->arena, j->xid ? j->xid : (uint64_t)j->db_id, r->round,
				  &released);
	rt__wal_cut(n, j, r->round);
	j->inflight = r->next;
	/* needs_model rounds wait for the previous version: it will never be made. */
	j->completed = r->round + 1;
	trib_debug("job %s round %u (deleted): dropped, %u journal records released", j->name,
		   r->round, released);
	rt__round_free(n, r, true);
	if (j->inflight)
		rt__top_release(n, j, j->inflight);
}

void rt__job_drop_rounds(struct rt_node *n, struct rt_job *j)
{
	while (j->inflight && j->inflight->has_result)
		round_drop(n, j, j->inflight);
}

int rt_job_delete(struct rt_node *n, struct rt_job *j, bool purge)
{
	char prefix[CTL_KV_KEY_MAX];
	struct rt_job **pp;
	int err;

	kv_prefix(j, prefix, sizeof(prefix));
	err = ctl_store_job_remove(n->store, j->name, prefix);
	if (err == -ENOENT)
		err = 0; /* not in this store (a cluster node's copy): gone all the same */
	if (err) {
		trib_error("job %s: deleting it from the store: %s (the job stays)", j->name,
			   strerror(-err));
		return err;
	}
	/* Committed: from here the job is gone whatever happens to the rest. */
	for (pp = &n->jobs; *pp && *pp != j; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = j->next;
	j->deleted = true;
	j->purge = purge;
	j->next = n->gone;
	n->gone = j;
	models_release(n, j, purge);
	/* The open round's leaves fold what they have; every round is dropped when it ends. */
	if (j->open)
		rt__round_cut(n, j, j->open);
	rt__wal_cut(n, j, j->round);
	rt__job_drop_rounds(n, j);
	trib_info("job %s: deleted%s (%s round%s still draining)", j->name,
		  purge ? " with its models" : "", j->inflight ? "some" : "no",
		  j->inflight ? "s" : "");
	rt_job_reap(n);
	return 0;
}

void rt_job_reap(struct rt_node *n)
{
	struct rt_job **pp = &n->gone;

	while (*pp) {
		struct rt_job *j = *pp;

		if (j->inflight || j->inflight_bytes || j->parked || j->bodies) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		trib_debug("job %s (deleted): freed", j->name);
		rt__job_free(j);
	}
}
