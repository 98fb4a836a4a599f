// SPDX-License-Identifier: MIT
/* The arena's journal: each update committed before its 202, partials, stored rounds, recovery. */
#include "rt_node_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl_store.h"
#include "shm_arena.h"
#include "shm_journal.h"
#include "trib_alloc.h"
#include "trib_log.h"

/* The journal names a job by its SQLite id, in a cluster by the controller's (a restart keeps it). */
static uint64_t journal_job_id(const struct rt_job *j)
{
	return j->xid ? j->xid : (uint64_t)j->db_id;
}

/*
 * Client @id's update goes into round @round of @j: it is @seen there (false:
 * it did not go in after all). Marked before the update enters the tree,
 * since the update that fills the round closes it, and the close counts the
 * round's clients (rt__round_close).
 */
static void client_counted(struct rt_node *n, struct rt_job *j, uint32_t round, const char *id,
			   bool seen)
{
	struct rt_client_ent *e;

	if (j->round == round)
		rt_job_clients_now(n, j); /* at the round (after a restart: with the store's) */
	if (!j->clients.synced || j->clients.round != round)
		return;
	e = rt_clients_get(&j->clients, id);
	if (e && e->seen != seen) {
		e->seen = seen;
		j->clients.seen += seen ? 1 : -1u;
	}
}

int rt_job_answer_body(uint32_t round, uint32_t seq, char *body, size_t cap, size_t *len)
{
	/* FedBuff answers the version folded into; a synchronous job its round (the same). */
	int k = snprintf(body, cap, "{\"round\":%u,\"received\":%u}", round, seq + 1);

	if (k < 0 || (size_t)k >= cap || (size_t)k > SHM_REC_BODY_MAX)
		return -EOVERFLOW;
	*len = (size_t)k;
	return 0;
}

/*
 * The 202 of an update is written only after its record is committed: the
 * record is reserved, filled and committed first, with the seq @s the
 * update is about to get (one thread: nothing comes between), then the
 * update goes into the tree; if that fails the record is released again.
 * So the committed seqs of a round are always a run from 0, and a crash at
 * any point keeps exactly the updates that were (or were about to be)
 * answered. Also how the log's updates go back in at start (rt_wal_node.c).
 */
int rt__journal_update(struct rt_node *n, struct rt_job *j, const struct rt_accept_in *in,
		       uint32_t s, const void *key, size_t key_len, const char *body,
		       size_t body_len, const char *client)
{
	struct shm_rec_info info;
	uint32_t idx, got;
	int err;

	err = shm_rec_reserve(n->arena, &idx);
	if (err)
		return err; /* -ENOSPC: the journal is full, as the arena is */
	memset(&info, 0, sizeof(info));
	info.kind = SHM_REC_UPDATE;
	info.job = journal_job_id(j);
	info.round = j->round;
	info.seq = s;
	info.count = 1;
	info.nsegs = in->nsegs;
	info.weight = in->weight;
	info.slot_off = in->slot_off;
	info.segs_off = in->segs_off;
	info.fold_scale = in->fold_scale;
	info.http_status = 202;
	info.key = key;
	info.key_len = key_len;
	info.body = body;
	info.body_len = body_len;
	info.client = client;
	info.client_len = client ? strlen(client) : 0;
	err = shm_rec_fill(n->arena, idx, &info);
	if (!err)
		err = shm_rec_commit(n->arena, idx);
	if (!err) {
		if (info.client_len)
			client_counted(n, j, (uint32_t)info.round, client, true);
		err = rt__accept_at(n, j, in, &got);
		if (err && info.client_len)
			client_counted(n, j, (uint32_t)info.round, client, false);
		if (!err && info.client_len)
			rt__fedau_note(j, (uint32_t)info.round, client);
		if (!err && got != s) {
			/* Cannot happen (one thread); if it did, the record would lie. */
			trib_error("job %s: update got seq %u, its record says %u", j->name, got,
				   s);
			err = -EPROTO;
		}
		if (!err)
			return 0;
	}
	shm_rec_release(n->arena, idx);
	return err;
}

int rt_job_accept_logged(struct rt_node *n, struct rt_job *j, uint32_t round,
			 const struct rt_update_in *u, uint32_t *seq, char *body, size_t cap,
			 size_t *body_len, uint64_t *ticket)
{
	struct rt_accept_in in = { .slot_off = u->slot_off, .segs_off = u->segs_off,
				   .nsegs = u->nsegs, .weight = u->weight };
	struct rt_wal_ent *e = NULL;
	uint32_t s, in_round;
	int err;

	*ticket = 0;
	err = rt__accept_where(j, round, &in.fold_scale);
	if (err)
		return err;
	in_round = j->round; /* the round (FedBuff: version) it goes into, for its record */
	/* One update per client per round (FedBuff: per version folded into). */
	if (rt_job_client_seen(n, j, u->client))
		return -EALREADY;
	/* -EMLINK: the round's updates name too many metrics for this one's to fit. */
	err = rt__round_metrics_room(j, u);
	if (err)
		return err;
	s = rt__next_seq(j);
	if (u->body) { /* a cluster's answer, made by the caller */
		int len = snprintf(body, cap, "%.*s", (int)u->body_len, u->body);

		if (len < 0 || (size_t)len >= cap || (size_t)len > SHM_REC_BODY_MAX)
			return -EOVERFLOW;
		*body_len = (size_t)len;
	} else {
		err = rt_job_answer_body(j->round, s, body, cap, body_len);
		if (err)
			return err;
	}
	/* --durability disk: the only step that can fail comes before the commit. */
	if (n->wal) {
		err = rt__wal_prepare(n, j, u, &in, s, body, *body_len, &e);
		if (err)
			return err;
	}
	err = rt__journal_update(n, j, &in, s, u->key, u->key_len, body, *body_len, u->client);
	if (err) {
		rt__wal_discard(e);
		return err;
	}
	rt__round_metrics_add(n, j, (uint32_t)in_round, s, u);
	*seq = s;
	if (e)
		*ticket = rt__wal_submit(n, e);
	return 0;
}

int rt_job_accept_journaled(struct rt_node *n, struct rt_job *j, uint32_t round,
			    const struct rt_update_in *u, uint32_t *seq, char *body, size_t cap,
			    size_t *body_len)
{
	uint64_t ticket;

	return rt_job_accept_logged(n, j, round, u, seq, body, cap, body_len, &ticket);
}

int rt_job_idem_find(struct rt_node *n, struct rt_job *j, uint32_t round, const char *key,
		     size_t key_len, int *status, char *body, size_t cap, size_t *body_len)
{
	struct shm_rec_info info;
	uint32_t idx;
	int err = -ENOENT;

	/*
	 * A synchronous job's record names the client's round. FedBuff's names
	 * the version it was folded into, which may be any version still in
	 * flight (their records are released when their model is durable).
	 */
	if (!j->algo.async) {
		err = shm_rec_find(n->arena, journal_job_id(j), round, key, key_len, &idx);
	} else {
		for (uint32_t v = j->round + 1; v-- > j->completed && err == -ENOENT;)
			err = shm_rec_find(n->arena, journal_job_id(j), v, key, key_len, &idx);
	}
	/*
	 * Not in the journal: the record was released (its round stored, or a
	 * partial superseded it) after its answer went to the store. FedBuff
	 * counts an update trained from @round in @round or a later version.
	 */
	if (err == -ENOENT && !n->clustered) {
		/* A key this node never put into the store is not there (rt_idem.h). */
		if (!rt_idem_mem_may_have(&j->idem_mem, round, key, key_len))
			return -ENOENT;
		return ctl_store_idem_get(n->store, j->db_id, key, key_len, round,
					  j->algo.async ? UINT32_MAX : round, status, body, cap,
					  body_len);
	}
	if (err)
		return err;
	err = shm_rec_get(n->arena, idx, &info);
	if (err)
		return err;
	*status = info.http_status;
	*body_len = info.body_len < cap ? info.body_len : cap;
	memcpy(body, info.body, *body_len);
	return 0;
}

uint32_t rt_job_idem_keep(const struct rt_job *j)
{
	uint32_t k = RT_IDEM_KEEP_ROUNDS;

	/* FedBuff takes an update up to max_staleness versions old: keep at least that. */
	if (j->algo.async && j->algo.max_staleness >= k)
		k = j->algo.max_staleness + 1;
	return k;
}

/*
 * The keyed UPDATE records of one job's round with seq in [lo, end), gathered for the store,
 * and the client ids of its records with a client.
 */
struct key_batch {
	struct ctl_idem *v;
	size_t n, cap;
	uint64_t job, round, lo, end;
	char (*ids)[RT_CLIENT_ID_MAX + 1];
	const char **idp;
	size_t nids, capids;
};

static int client_add(struct key_batch *kb, const struct shm_rec_info *i)
{
	if (kb->nids == kb->capids) {
		size_t ncap = kb->capids ? kb->capids * 2 : 16;
		void *nv = trib_realloc(kb->ids, ncap * sizeof(*kb->ids));

		if (!nv)
			return -ENOMEM;
		kb->ids = nv;
		kb->capids = ncap;
	}
	memcpy(kb->ids[kb->nids], i->client, i->client_len);
	kb->ids[kb->nids++][i->client_len] = '\0';
	return 0;
}

static int key_add(void *ctx, uint32_t idx, const struct shm_rec_info *i)
{
	struct key_batch *kb = ctx;
	int err;

	(void)idx;
	if (i->kind != SHM_REC_UPDATE || i->job != kb->job || i->round != kb->round ||
	    i->seq < kb->lo || i->seq >= kb->end)
		return 0;
	if (i->client_len) {
		err = client_add(kb, i);
		if (err)
			return err;
	}
	if (!i->key_len)
		return 0;
	if (kb->n == kb->cap) {
		size_t ncap = kb->cap ? kb->cap * 2 : 16;
		struct ctl_idem *nv = trib_realloc(kb->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		kb->v = nv;
		kb->cap = ncap;
	}
	kb->v[kb->n++] = (struct ctl_idem){ (uint32_t)i->round, i->http_status, i->key,
					    i->key_len, i->body, i->body_len };
	return 0;
}

/*
 * Before their journal records go: the answers of the keyed updates of @j's
 * @round with seq in [lo, end) go to the store (the records stay meanwhile,
 * so a crash at any point leaves each answer in one place or both). With
 * @prune, the store forgets the answers of rounds rt_job_idem_keep() or more
 * below @round. 0 or -errno (logged).
 *
 * Synced to disk only when the round is stored (@prune) or with --durability disk: a
 * partial's batch (a leaf's worth of updates, while the round is open) takes the place of
 * arena records, which outlive a crash of the process but not of the machine, and so do rows
 * committed unsynced in WAL mode; the round's own batch, synced, makes every earlier one
 * durable with it. The sync had been a fdatasync on the event loop per leaf (two with client
 * tokens): 0.1-0.5 ms each here (docs/BENCHMARKS.md, "The gateway's CPU per update").
 */
static int keys_save(struct rt_node *n, struct rt_job *j, uint32_t round, uint64_t lo,
		     uint64_t end, bool prune)
{
	struct key_batch kb = { .job = (uint64_t)j->db_id, .round = round, .lo = lo, .end = end };
	uint32_t keep = rt_job_idem_keep(j);
	bool durable = prune || n->wal;
	int err;

	if (n->clustered)
		return 0; /* a cluster node's keys live in its journal only */
	err = shm_rec_each(n->arena, key_add, &kb);
	/* In the filter before the put: if the put fails, the filter only asks the store. */
	for (size_t i = 0; !err && i < kb.n; i++)
		rt_idem_mem_add(&j->idem_mem, kb.v[i].round, kb.v[i].key, kb.v[i].key_len);
	if (!err && (kb.n || prune))
		err = ctl_store_idem_put(n->store, j->db_id, kb.v, kb.n,
					 prune && round + 1 > keep ? round + 1 - keep : 0, durable);
	if (!err && prune && round + 1 > keep)
		rt_idem_mem_prune(&j->idem_mem, round + 1 - keep);
	/* The clients counted in the round, for one update per client after a restart. */
	if (!err && kb.nids) {
		kb.idp = trib_calloc(kb.nids, sizeof(*kb.idp));
		err = kb.idp ? 0 : -ENOMEM;
		for (size_t i = 0; !err && i < kb.nids; i++)
			kb.idp[i] = kb.ids[i];
	}
	if (!err && (kb.nids || prune))
		err = ctl_store_round_clients_put(n->store, j->db_id, round, kb.idp, kb.nids,
						  prune ? round + 1 : 0, durable);
	trib_free(kb.idp);
	trib_free(kb.ids);
	trib_free(kb.v);
	if (err)
		trib_error("job %s round %u: keeping the answers of %zu Idempotency-Key%s: %s",
			   j->name, round, kb.n, kb.n == 1 ? "" : "s", strerror(-err));
	return err;
}

int rt__journal_partial(struct rt_node *n, struct rt_round *r, uint32_t seq0,
			const struct shm_desc *d, uint64_t slot)
{
	struct shm_rec_info info;
	unsigned superseded = 0;
	uint32_t idx;
	int err;

	/*
	 * A cluster node's updates keep their records, and so their slots, until
	 * the round's model: what it reports to the controller after a restart
	 * is updates, and its partial is a sum that crosses to another node.
	 */
	if (n->clustered)
		return -EOPNOTSUPP;
	if (!slot)
		return -EINVAL; /* tcp: the partial is not in the arena */
	/* --durability disk: not while the log fails (rt__wal_durable_all() says why). */
	err = rt__wal_durable_all(n);
	if (err)
		goto out;
	/* Before the partial is committed: recovery releases what it covers, keys too. */
	err = keys_save(n, r->job, r->round, seq0, (uint64_t)seq0 + d->count, false);
	if (err)
		goto out;
	err = shm_rec_reserve(n->arena, &idx);
	if (err)
		goto out;
	memset(&info, 0, sizeof(info));
	info.kind = SHM_REC_PARTIAL;
	info.job = (uint64_t)r->job->db_id;
	info.round = r->round;
	info.seq = seq0;
	info.count = d->count;
	info.nsegs = 1;
	info.weight = d->weight;
	info.slot_off = slot;
	info.segs_off = slot; /* the accumulator's segment table is at its start */
	err = shm_rec_fill(n->arena, idx, &info);
	if (!err)
		err = shm_rec_commit(n->arena, idx);
	if (err) {
		shm_rec_release(n->arena, idx);
		goto out;
	}
	err = shm_rec_supersede(n->arena, idx, &superseded);
out:
	if (err)
		trib_error("job %s round %u: committing the partial of updates %u..%u: %s; their "
			   "slots are kept until the round is stored", r->job->name, r->round,
			   seq0, seq0 + d->count - 1, strerror(-err));
	return err;
}

void rt__journal_round_done(struct rt_node *n, struct rt_job *j, uint32_t round)
{
	unsigned released = 0;

	/*
	 * On failure (logged) the records go anyway: the round is stored, and
	 * keeping them would hold journal entries forever; a resend of one of
	 * those keys is then not recognised (answered like a stale round).
	 */
	keys_save(n, j, round, 0, UINT64_MAX, true);
	shm_journal_release_round(n->arena, journal_job_id(j), round, &released);
	/* --durability disk: the round's log goes too (its model is durable). */
	rt__wal_cut(n, j, round);
	trib_debug("job %s round %u: %u journal records released", j->name, round, released);
}

/* ---- recovery at start ---- */

/* One kept record, as shm_journal_recover() reported it (key and body point into the record). */
struct rt_recovered {
	uint32_t idx;
	struct shm_rec_info info;
};

static int collect(void *ctx, uint32_t idx, const struct shm_rec_info *info)
{
	struct rt_node *n = ctx;

	if (n->nrecovered == n->caprecovered) {
		uint32_t ncap = n->caprecovered ? n->caprecovered * 2 : 64;
		struct rt_recovered *nr = trib_realloc(n->recovered, ncap * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		n->recovered = nr;
		n->caprecovered = ncap;
	}
	n->recovered[n->nrecovered].idx = idx;
	n->recovered[n->nrecovered].info = *info;
	n->nrecovered++;
	return 0;
}

int rt__journal_collect(struct rt_node *n)
{
	struct shm_journal_stats st = { 0 };
	int err = shm_journal_recover(n->arena, collect, n, &st);

	if (err) {
		trib_free(n->recovered);
		n->recovered = NULL;
		n->nrecovered = n->caprecovered = 0;
		return err;
	}
	trib_info("arena: the journal keeps %u update%s and %u partial%s of open rounds (%u "
		  "superseded records released, %u unused slots reclaimed)", st.updates,
		  st.updates == 1 ? "" : "s", st.partials, st.partials == 1 ? "" : "s",
		  st.superseded, st.reclaimed);
	return 0;
}

static struct rt_job *job_by_db_id(struct rt_node *n, uint64_t id)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (journal_job_id(j) == id)
			return j;
	return NULL;
}

/* A record nothing will use again (its round is stored, its job is gone): it and its slot go. */
static void drop(struct rt_node *n, const struct rt_recovered *rc)
{
	shm_rec_release(n->arena, rc->idx);
	shm_slot_free(n->arena, rc->info.slot_off);
}

/*
 * Put one kept record back: an UPDATE as an update of the open round, a
 * PARTIAL as a leaf whose partial exists. Returns 1 if it went in, 0 if it
 * was dropped (logged), -errno if the tree failed.
 */
static int refeed(struct rt_node *n, struct rt_job *j, const struct rt_recovered *rc)
{
	const struct shm_rec_info *i = &rc->info;
	uint32_t seq;
	int err;

	if (i->round < j->round) {
		/* Stored already: the model has it. The crash may have come before its key
		 * went to the store (rt__journal_round_done()). */
		if (i->kind == SHM_REC_UPDATE)
			keys_save(n, j, (uint32_t)i->round, i->seq, i->seq + 1, false);
		drop(n, rc);
		return 0;
	}
	/* A later round: the open one closed short (at its deadline) before the crash. */
	if (i->round > j->round && j->open && j->open->received)
		rt__round_close(n, j, j->open, true);
	if (i->round != j->round || i->seq != rt__next_seq(j)) {
		trib_error("job %s: the arena's record of round %llu seq %llu does not follow the "
			   "recovered round %u (at seq %u): dropped", j->name,
			   (unsigned long long)i->round, (unsigned long long)i->seq, j->round,
			   rt__next_seq(j));
		drop(n, rc);
		return 0;
	}
	if (i->kind == SHM_REC_PARTIAL) {
		struct shm_desc d;

		memset(&d, 0, sizeof(d));
		d.version = SHM_ABI_VERSION;
		d.kind = SHM_DESC_PARTIAL;
		d.nsegs = 1;
		d.slot_off = i->slot_off;
		d.segs_off = i->segs_off;
		d.weight = i->weight;
		d.count = i->count;
		err = rt__leaf_recovered(n, j, &d, (uint32_t)i->seq);
	} else {
		struct rt_accept_in in = { .slot_off = i->slot_off, .segs_off = i->segs_off,
					   .nsegs = i->nsegs, .weight = i->weight,
					   .fold_scale = i->fold_scale };
		char id[RT_CLIENT_ID_MAX + 1];

		if (i->client_len) {
			/* Its client sent its update of this round: a second one is a 409. */
			memcpy(id, i->client, i->client_len);
			id[i->client_len] = '\0';
			client_counted(n, j, (uint32_t)i->round, id, true);
			rt__fedau_note(j, (uint32_t)i->round, id); /* a no-op if the store has it */
		}
		err = rt__accept_at(n, j, &in, &seq);
	}
	return err ? err : 1;
}

/*
 * Once the jobs are loaded: the records rt__journal_collect() kept go back
 * into fresh trees, in (job, round, seq) order; records of stored rounds or
 * of jobs that are gone are released. Full rounds close and finish as usual.
 */
int rt__journal_refeed(struct rt_node *n)
{
	uint32_t fed = 0, dropped = 0, updates = 0;
	int err = 0;

	for (uint32_t k = 0; k < n->nrecovered; k++) {
		const struct rt_recovered *rc = &n->recovered[k];
		struct rt_job *j = job_by_db_id(n, rc->info.job);
		int r;

		if (!j) {
			trib_warn("arena: a record of job id %llu, which no longer exists: dropped",
				  (unsigned long long)rc->info.job);
			drop(n, rc);
			dropped++;
			continue;
		}
		r = refeed(n, j, rc);
		if (r < 0) {
			trib_error("job %s round %llu: putting recovered updates back: %s", j->name,
				   (unsigned long long)rc->info.round, strerror(-r));
			err = r;
			break;
		}
		if (r) {
			fed++;
			updates += rc->info.count;
		} else {
			dropped++;
		}
	}
	if (n->nrecovered)
		trib_info("arena: recovered %u update%s in %u record%s (%u dropped)", updates,
			  updates == 1 ? "" : "s", fed, fed == 1 ? "" : "s", dropped);
	n->m.updates_recovered += updates;
	trib_free(n->recovered);
	n->recovered = NULL;
	n->nrecovered = n->caprecovered = 0;
	return err;
}
