// SPDX-License-Identifier: MIT
/* A secure round across a restart: its state log replayed, its masked inputs checked against it. */
#include "rt_node_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rt_secagg.h"
#include "rt_secagg_log.h"
#include "shm_journal.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/*
 * What a restart does with a secure round in progress (docs/ARCHITECTURE.md, "Secure
 * aggregation"): the log's records go back through the same calls of rt_secagg.h in the same
 * order, so the round is where it was: the same clients at the same indices, the same graph
 * (the graph seed is in the log), the same U1..U3, the same reveals. The stage in progress gets
 * a whole new deadline from the restart: its clients could not reach the server while it was
 * down, and a deadline that passed meanwhile would drop every one of them. A stage whose end
 * is in the log ended for good (who is in and out is decided once). Anything that does not
 * replay, or masked inputs the arena (or the disk log) did not give back, fails the round with
 * a status that says so; the next round starts clean.
 */

struct load {
	struct rt_node *n;
	struct rt_job *j;
	struct rt_sa_live *L;
	uint32_t records;
	bool stale;     /* the log of a round the store has already */
	char why[160];  /* why it does not replay */
};

static int bad(struct load *ld, const char *fmt, uint32_t a)
{
	snprintf(ld->why, sizeof(ld->why), fmt, a);
	return -EBADMSG;
}

/* RT_SALOG_OPEN (rt_sa_log_open): the round's cfg, checked against the job as it is now. */
static int open_round(struct load *ld, const uint8_t *p, size_t len)
{
	struct rt_job *j = ld->j;
	struct rt_secagg_cfg cfg;
	struct rt_sa_live *L;
	uint32_t w[6];
	uint64_t opened, now_unix, now = trib_now_ns();
	int err;

	if (len != sizeof(w) + 8 + 32 + 8)
		return bad(ld, "its opening record is %u bytes", (uint32_t)len);
	memset(&cfg, 0, sizeof(cfg));
	memcpy(w, p, sizeof(w));
	memcpy(&cfg.round, p + sizeof(w), 8);
	memcpy(cfg.graph_seed, p + sizeof(w) + 8, 32);
	memcpy(&opened, p + sizeof(w) + 40, 8);
	cfg.n_clients = w[0];
	cfg.threshold = w[1];
	cfg.neighbours = w[2];
	cfg.bits = w[3];
	memcpy(&cfg.clip, &w[4], 4);
	cfg.dim = w[5];
	cfg.external_expand = true;
	if (cfg.round < j->round) {
		ld->stale = true; /* its model was stored; the stop came before the file went */
		return -ESTALE;
	}
	if (cfg.round != j->round)
		return bad(ld, "it is of round %u, after the job's", (uint32_t)cfg.round);
	if (cfg.n_clients != j->cpr || cfg.dim != j->n_elem ||
	    cfg.threshold != j->secagg.threshold || cfg.neighbours != j->secagg.neighbours ||
	    cfg.bits != j->secagg.bits || cfg.clip != j->secagg.clip)
		return bad(ld, "the job's clients or secagg parameters are not the round's (%u "
			   "clients)", cfg.n_clients);
	L = trib_calloc(1, sizeof(*L));
	if (!L)
		return -ENOMEM;
	ld->L = L; /* freed by the caller on any error */
	L->ids = trib_calloc(cfg.n_clients, sizeof(*L->ids));
	L->dig = trib_calloc(cfg.n_clients, sizeof(*L->dig));
	L->sent = trib_calloc(cfg.n_clients, 1);
	if (!L->ids || !L->dig || !L->sent)
		return -ENOMEM;
	err = rt_secagg_new(&cfg, &L->r);
	if (err)
		return err == -EINVAL ? bad(ld, "its parameters are not valid (%u clients)",
					    cfg.n_clients) : err;
	L->round = (uint32_t)cfg.round;
	now_unix = rt__secagg_unix_ns();
	/* The round's age (its record's duration) counts the time the node was down too. */
	L->opened_ns = opened <= now_unix && now_unix - opened < now ? now - (now_unix - opened)
								    : now;
	L->deadline_ns = now + (uint64_t)j->round_timeout_s * 1000000000ull;
	return 0;
}

/* A record with a list (rt_secagg_state.c log_list): its count, checked against its length. */
static int list_of(struct load *ld, const uint8_t *p, size_t len, size_t each, uint32_t **ix,
		   const uint8_t ***item)
{
	uint32_t count;

	if (len < 24)
		return bad(ld, "a list record of %u bytes", (uint32_t)len);
	memcpy(&count, p + 20, 4);
	if (count > RT_SECAGG_MAX_NEIGHBOURS || len != 24 + (size_t)count * (4 + each))
		return bad(ld, "a list of %u entries does not fit its record", count);
	*ix = trib_calloc(count + 1, sizeof(**ix));
	*item = trib_calloc(count + 1, sizeof(**item));
	if (!*ix || !*item)
		return -ENOMEM;
	for (uint32_t i = 0; i < count; i++) {
		memcpy(&(*ix)[i], p + 24 + i * (4 + each), 4);
		(*item)[i] = p + 24 + i * (4 + each) + 4;
	}
	return (int)count;
}

static void mark(struct rt_sa_live *L, uint32_t u, int stage, const uint8_t *dig)
{
	L->sent[u] |= (uint8_t)(1u << stage);
	memcpy(L->dig[u][stage], dig, 16);
}

static int on_record(void *ctx, uint32_t type, const uint8_t *p, size_t len)
{
	struct load *ld = ctx;
	struct rt_sa_live *L = ld->L;
	const uint8_t **item = NULL;
	uint32_t u = 0, *ix = NULL, st;
	int err = 0, cnt;

	if (ld->records++ == 0)
		return type == RT_SALOG_OPEN ? open_round(ld, p, len)
					     : bad(ld, "its first record is of type %u", type);
	if (type == RT_SALOG_OPEN)
		return bad(ld, "a second opening record (%u)", ld->records);
	if (type != RT_SALOG_END) {
		if (len < 20)
			return bad(ld, "a record of %u bytes", (uint32_t)len);
		memcpy(&u, p, 4);
		if (u >= L->n + (type == RT_SALOG_KEYS))
			return bad(ld, "a record of client %u, not indexed", u);
	}
	switch (type) {
	case RT_SALOG_KEYS:
		if (len != 20 + RT_CLIENT_ID_MAX + 1 + 64 || p[20 + RT_CLIENT_ID_MAX] ||
		    u != L->n)
			return bad(ld, "a keys record of client %u", u);
		memcpy(L->ids[u], p + 20, RT_CLIENT_ID_MAX + 1);
		err = rt_secagg_advertise(L->r, u, p + 20 + RT_CLIENT_ID_MAX + 1,
					  p + 20 + RT_CLIENT_ID_MAX + 1 + 32);
		if (!err) {
			L->n++;
			mark(L, u, RT_SECAGG_ADVERTISE, p + 4);
		}
		break;
	case RT_SALOG_SHARES:
	case RT_SALOG_UNMASK:
		cnt = list_of(ld, p, len, type == RT_SALOG_SHARES ? RT_SECAGG_CT_BYTES
								   : RT_SECAGG_SHARE_BYTES, &ix, &item);
		if (cnt < 0) {
			err = cnt;
		} else if (type == RT_SALOG_SHARES) {
			err = rt_secagg_share(L->r, u, ix, item, (uint32_t)cnt);
			if (!err)
				mark(L, u, RT_SECAGG_SHARE, p + 4);
		} else {
			err = rt_secagg_unmask(L->r, u, ix, item, (uint32_t)cnt);
			if (!err)
				mark(L, u, RT_SECAGG_UNMASK, p + 4);
		}
		trib_free(ix);
		trib_free(item);
		break;
	case RT_SALOG_INPUT:
		err = len == 20 ? rt_secagg_masked_enter(L->r, u, true) : -EINVAL;
		if (!err)
			mark(L, u, RT_SECAGG_MASKED, p + 4);
		break;
	case RT_SALOG_END:
		if (len != 4)
			return bad(ld, "an end record of %u bytes", (uint32_t)len);
		memcpy(&st, p, 4);
		if (st != (uint32_t)rt_secagg_stage(L->r) || L->end_now)
			return bad(ld, "the end of stage %u, not the round's", st);
		/* The unmask stage's end needs the tree's sum: the API ends it once it is in. */
		if (st == RT_SECAGG_UNMASK)
			L->end_now = true;
		else
			rt_secagg_end_stage(L->r);
		break;
	default:
		return bad(ld, "a record of type %u", type);
	}
	if (err == -ENOMEM)
		return err;
	return err ? bad(ld, "record %u does not replay", ld->records) : 0;
}

static void free_live(struct rt_sa_live *L)
{
	if (!L)
		return;
	rt_secagg_free(L->r);
	rt_salog_close(L->log);
	trib_free(L->ids);
	trib_free(L->dig);
	trib_free(L->sent);
	trib_free(L);
}

/*
 * The round could not be resumed: its status says why and its state log goes; with @records,
 * its inputs' records too (after the refeed: before it, the disk log's replay may be reading
 * the files a cut would remove; reconcile() discards them then, as inputs of no round).
 */
static void not_resumed(struct rt_node *n, struct rt_job *j, uint32_t round, const char *why,
			bool records)
{
	char dir[PATH_MAX];

	snprintf(j->sa_failed, sizeof(j->sa_failed), "after a restart the round could not be "
		 "resumed: %.100s; nothing was unmasked", why);
	j->sa_failed_round = round;
	trib_error("job %s round %u: %s", j->name, round, j->sa_failed);
	if (records) {
		rt_sa_log_over(n, j, round);
		return;
	}
	rt__secagg_log_dir(n, dir, sizeof(dir));
	rt_salog_remove(dir, rt__secagg_log_job(j), n->opts.durability_disk);
}

int rt__secagg_load(struct rt_node *n)
{
	char dir[PATH_MAX];

	rt__secagg_log_dir(n, dir, sizeof(dir));
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		struct load ld = { .n = n, .j = j };
		struct rt_salog *log = NULL;
		uint64_t torn = 0;
		int err;

		if (!j->secagg.on || j->sa_live)
			continue;
		if (n->opts.fresh) {
			char path[PATH_MAX];

			/* --fresh dropped the arena (and the disk log): the round's inputs are gone. */
			if (!rt_salog_path(dir, rt__secagg_log_job(j), path, sizeof(path)) &&
			    !access(path, F_OK) &&
			    !rt_salog_remove(dir, rt__secagg_log_job(j), n->opts.durability_disk))
				trib_info("--fresh: job %s: the state log of its secure round in "
					  "progress removed", j->name);
			continue;
		}
		err = rt_salog_load(dir, rt__secagg_log_job(j), n->opts.durability_disk, on_record,
				    &ld, &log, &torn);
		if (err == -ENOENT)
			continue;
		if (ld.stale) {
			trib_info("job %s: the state log of secure round %u, stored already, removed",
				  j->name, ld.L ? ld.L->round : j->round - 1);
			free_live(ld.L);
			rt_salog_remove(dir, rt__secagg_log_job(j), n->opts.durability_disk);
			continue;
		}
		if (err == -ENOMEM)
			return err;
		if (err || !ld.L) {
			free_live(ld.L);
			rt_salog_close(log);
			if (!ld.why[0])
				snprintf(ld.why, sizeof(ld.why), "reading its state log: %s",
					 strerror(-err));
			not_resumed(n, j, j->round, ld.why, false);
			continue;
		}
		ld.L->log = log;
		j->sa_live = ld.L;
		trib_info("job %s round %u: secure round resumed at stage '%s'%s (%u clients, %u "
			  "still in; %u log records%s); the stage's deadline is %u s from now",
			  j->name, ld.L->round, rt_secagg_stage_name(rt_secagg_stage(ld.L->r)),
			  ld.L->end_now ? ", which had ended (the unmasking is redone)" : "",
			  ld.L->n, rt_secagg_alive(ld.L->r), ld.records,
			  torn ? ", a torn last one cut" : "", j->round_timeout_s);
	}
	return 0;
}

/* Masked inputs of @round in @j's trees (what the arena or the disk log gave back). */
static uint32_t tree_inputs(const struct rt_job *j, uint32_t round)
{
	uint32_t k = 0;

	for (const struct rt_round *r = j->inflight; r; r = r->next)
		if (r->round == round)
			k += r->received;
	return k;
}

/* A tree round with no secure round to unmask it: its sum is discarded when it comes. */
static void discard_inputs(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t k)
{
	unsigned released = 0;

	if (!k)
		return;
	trib_warn("job %s round %u: %u masked input%s the arena kept belong%s to no secure round "
		  "in progress: discarded (nothing unmasked)", j->name, round, k, k == 1 ? "" : "s",
		  k == 1 ? "s" : "");
	rt_job_secagg_close(n, j);
	shm_journal_release_round(n->arena, rt__secagg_log_job(j), round, &released);
	rt__wal_cut(n, j, round);
}

/* Client indices still in the masked stage, not marked, whose input the tree holds. */
static uint32_t unmarked_input(struct rt_node *n, struct rt_job *j, uint32_t *which)
{
	struct rt_sa_live *L = j->sa_live;
	uint32_t k = 0;

	for (uint32_t u = 0; u < L->n; u++) {
		if (L->sent[u] & (1u << RT_SECAGG_MASKED) ||
		    rt_secagg_masked_enter(L->r, u, false) || !rt_job_client_seen(n, j, L->ids[u]))
			continue;
		*which = u;
		k++;
	}
	return k;
}

static void reconcile(struct rt_node *n, struct rt_job *j)
{
	struct rt_sa_live *L = j->sa_live;
	enum rt_secagg_stage st;
	uint32_t round, have, marks = 0, u = 0;
	char why[200];

	if (!L) {
		discard_inputs(n, j, j->round, tree_inputs(j, j->round));
		return;
	}
	round = L->round;
	st = rt_secagg_stage(L->r);
	have = tree_inputs(j, round);
	for (uint32_t k = 0; k < L->n; k++)
		marks += !!(L->sent[k] & (1u << RT_SECAGG_MASKED));
	if (st >= RT_SECAGG_UNMASK && st != RT_SECAGG_FAILED)
		marks = rt_secagg_inputs(L->r);
	why[0] = '\0';
	if (st == RT_SECAGG_FAILED) {
		/* It had failed (its end is in the log); the stop came before its file went. */
		snprintf(why, sizeof(why), "%s", rt_secagg_why(L->r));
	} else if (st == RT_SECAGG_MASKED && have == marks + 1 && unmarked_input(n, j, &u) == 1) {
		/*
		 * The stop came between the input's journal record and its mark: it was never
		 * answered. It is u's (the only client the tree has and the state does not); a
		 * resend of it gets the 200 it was owed (a masked input's resend is answered by
		 * its client alone: rt_api_secagg.c's sa_input_may).
		 */
		if (rt_secagg_masked_enter(L->r, u, true) || rt_sa_log_input(n, j, u))
			snprintf(why, sizeof(why), "client %u's masked input could not be marked", u);
		else
			marks++;
	}
	if (!why[0] && have != marks)
		snprintf(why, sizeof(why), "%u masked input%s acknowledged before the restart, %u "
			 "given back by the arena%s", marks, marks == 1 ? " was" : "s were", have,
			 n->opts.durability_disk ? " and the disk log" : " (its file was lost)");
	if (why[0]) {
		j->sa_live = NULL;
		free_live(L);
		not_resumed(n, j, round, why, true);
		discard_inputs(n, j, round, have);
		return;
	}
	/* Past the masked stage: U3 is fixed, the tree folds what it was given back. */
	if (st >= RT_SECAGG_UNMASK)
		rt_job_secagg_close(n, j);
	if (have)
		trib_info("job %s round %u: %u masked input%s given back to the round's tree",
			  j->name, round, have, have == 1 ? "" : "s");
}

void rt__secagg_reconcile(struct rt_node *n)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (j->secagg.on)
			reconcile(n, j);
}
