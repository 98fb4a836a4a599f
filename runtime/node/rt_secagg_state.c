// SPDX-License-Identifier: MIT
/* A secure round's durable state: each acknowledged stage message logged, the inputs journaled. */
#include "rt_node_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rt_secagg.h"
#include "rt_secagg_log.h"
#include "rt_wal.h"
#include "shm_journal.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_secagg_crypto.h"

/* The journal's name for @j (SQLite's id; a cluster's: the controller's, kept by a restart). */
uint64_t rt__secagg_log_job(const struct rt_job *j)
{
	return j->xid ? j->xid : (uint64_t)j->db_id;
}

void rt__secagg_log_dir(const struct rt_node *n, char *path, size_t cap)
{
	snprintf(path, cap, "%s/secagg", n->opts.data_dir);
}

uint64_t rt__secagg_unix_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void rt_sa_digest(const void *body, size_t len, uint8_t dig[16])
{
	static const uint8_t salt[] = "tributary secagg: a stage's body, for retries";

	/*
	 * HKDF-SHA256's extract is HMAC-SHA256 of the body: a collision-resistant digest, a few
	 * microseconds for a keys, shares or unmask body. Never the masked input's (4 MB at 1M
	 * parameters): it is not digested at all (rt_api_secagg.c's sa_input_may).
	 */
	if (trib_sa_hkdf(dig, 16, body, len, salt, sizeof(salt) - 1, NULL, 0)) {
		/* Only OpenSSL's HMAC failing: all ones match no real digest, a retry gets a 409. */
		trib_error("secagg: a stage body's digest could not be computed (OpenSSL's HMAC)");
		memset(dig, 0xff, 16);
	}
}

int rt_sa_retry(const struct rt_sa_live *L, uint32_t u, int stage, const uint8_t dig[16])
{
	static const uint8_t unknown[16];

	if (u >= L->n || stage < 0 || stage > RT_SECAGG_UNMASK || !(L->sent[u] & (1u << stage)))
		return 0;
	/* All zeros: an input the arena kept whose body was not logged (rt_secagg_resume.c). */
	if (!memcmp(L->dig[u][stage], unknown, 16))
		return -1;
	return memcmp(L->dig[u][stage], dig, 16) ? -1 : 1;
}

/* The log could not keep what the round accepted: the round fails (never a 200 not kept). */
static int log_failed(struct rt_job *j, const char *what, int err)
{
	char why[200];

	snprintf(why, sizeof(why), "the round's state could not be saved (%s: %s); nothing is "
		 "unmasked", what, strerror(-err));
	trib_error("job %s round %u: %s", j->name, j->sa_live->round, why);
	rt_secagg_fail(j->sa_live->r, why);
	return err;
}

static int append(struct rt_job *j, uint32_t type, const struct iovec *iov, int n,
		  const char *what)
{
	struct rt_sa_live *L = j->sa_live;
	int err = L->log ? rt_salog_append(L->log, type, iov, n) : -EBADF;

	return err ? log_failed(j, what, err) : 0;
}

/* What RT_SALOG_OPEN holds (little-endian, packed by hand: rt_secagg_resume.c reads it). */
#define OPEN_BYTES (6 * 4 + 8 + 32 + 8)

int rt_sa_log_open(struct rt_node *n, struct rt_job *j, const struct rt_secagg_cfg *cfg)
{
	struct rt_sa_live *L = j->sa_live;
	uint8_t p[OPEN_BYTES], *q = p;
	uint32_t w[6] = { cfg->n_clients, cfg->threshold, cfg->neighbours, cfg->bits, 0, cfg->dim };
	uint64_t opened = rt__secagg_unix_ns();
	char dir[PATH_MAX];
	int err;

	memcpy(&w[4], &cfg->clip, 4);
	memcpy(q, w, sizeof(w));
	q += sizeof(w);
	memcpy(q, &cfg->round, 8);
	q += 8;
	memcpy(q, cfg->graph_seed, 32);
	q += 32;
	memcpy(q, &opened, 8);
	L->dig = trib_calloc(cfg->n_clients, sizeof(*L->dig));
	L->sent = trib_calloc(cfg->n_clients, 1);
	if (!L->dig || !L->sent)
		return -ENOMEM;
	rt__secagg_log_dir(n, dir, sizeof(dir));
	err = rt_salog_create(dir, rt__secagg_log_job(j), n->opts.durability_disk, p, sizeof(p),
			      &L->log);
	if (err)
		trib_error("job %s round %u: the secure round's state log in %s: %s", j->name,
			   L->round, dir, strerror(-err));
	return err;
}

static void mark(struct rt_sa_live *L, uint32_t u, int stage, const uint8_t dig[16])
{
	L->sent[u] |= (uint8_t)(1u << stage);
	memcpy(L->dig[u][stage], dig, 16);
}

int rt_sa_log_keys(struct rt_node *n, struct rt_job *j, uint32_t u, const uint8_t c_pk[32],
		   const uint8_t s_pk[32], const uint8_t dig[16])
{
	struct rt_sa_live *L = j->sa_live;
	uint8_t id[RT_CLIENT_ID_MAX + 1];
	struct iovec iov[5] = { { &u, 4 }, { (void *)dig, 16 }, { id, sizeof(id) },
				{ (void *)c_pk, 32 }, { (void *)s_pk, 32 } };
	int err;

	(void)n;
	memset(id, 0, sizeof(id));
	memcpy(id, L->ids[u], strlen(L->ids[u]));
	err = append(j, RT_SALOG_KEYS, iov, 5, "a client's keys");
	if (!err)
		mark(L, u, RT_SECAGG_ADVERTISE, dig);
	return err;
}

/* Records with a list: u, digest, count, then count x (index, @each bytes). */
static int log_list(struct rt_job *j, uint32_t type, uint32_t u, const uint32_t *ix,
		    const uint8_t *const *item, size_t each, uint32_t count,
		    const uint8_t dig[16], const char *what)
{
	size_t len = (size_t)count * (4 + each);
	uint8_t *p = trib_malloc(len ? len : 1);
	struct iovec iov[4] = { { &u, 4 }, { (void *)dig, 16 }, { &count, 4 }, { p, len } };
	int err;

	if (!p)
		return log_failed(j, what, -ENOMEM);
	for (uint32_t i = 0; i < count; i++) {
		memcpy(p + i * (4 + each), &ix[i], 4);
		memcpy(p + i * (4 + each) + 4, item[i], each);
	}
	err = append(j, type, iov, 4, what);
	explicit_bzero(p, len); /* reveals are shares: not left in freed memory */
	trib_free(p);
	return err;
}

int rt_sa_log_shares(struct rt_node *n, struct rt_job *j, uint32_t u, const uint32_t *to,
		     const uint8_t *const *ct, uint32_t count, const uint8_t dig[16])
{
	int err = log_list(j, RT_SALOG_SHARES, u, to, ct, RT_SECAGG_CT_BYTES, count, dig,
			   "a client's shares");

	(void)n;
	if (!err)
		mark(j->sa_live, u, RT_SECAGG_SHARE, dig);
	return err;
}

int rt_sa_log_input(struct rt_node *n, struct rt_job *j, uint32_t u)
{
	/*
	 * The record keeps its 16 digest bytes (logs of earlier versions replay), all zeros: a
	 * masked input is not digested (a resend is answered by its (client, stage) alone,
	 * rt_api_secagg.c's sa_input_may says why).
	 */
	static const uint8_t none[16];
	struct iovec iov[2] = { { &u, 4 }, { (void *)none, 16 } };
	int err = append(j, RT_SALOG_INPUT, iov, 2, "a masked input's mark");

	(void)n;
	if (!err)
		mark(j->sa_live, u, RT_SECAGG_MASKED, none);
	return err;
}

int rt_sa_log_unmask(struct rt_node *n, struct rt_job *j, uint32_t u, const uint32_t *v,
		     const uint8_t *const *share, uint32_t count, const uint8_t dig[16])
{
	int err = log_list(j, RT_SALOG_UNMASK, u, v, share, RT_SECAGG_SHARE_BYTES, count, dig,
			   "a client's reveals");

	(void)n;
	if (!err)
		mark(j->sa_live, u, RT_SECAGG_UNMASK, dig);
	return err;
}

int rt_sa_log_end(struct rt_node *n, struct rt_job *j, int stage)
{
	uint32_t s = (uint32_t)stage;
	struct iovec iov = { &s, 4 };

	(void)n;
	return append(j, RT_SALOG_END, &iov, 1, "a stage's end");
}

void rt_sa_log_over(struct rt_node *n, struct rt_job *j, uint32_t round)
{
	char dir[PATH_MAX];
	unsigned released = 0;
	int err;

	if (j->sa_live) {
		rt_salog_close(j->sa_live->log);
		j->sa_live->log = NULL;
	}
	/*
	 * The file first: a stop between the two leaves the inputs' records of a round with no
	 * state, which the next start discards (rt_secagg_resume.c); the other order would leave
	 * a state whose inputs are gone, a round that fails at the restart.
	 */
	rt__secagg_log_dir(n, dir, sizeof(dir));
	err = rt_salog_remove(dir, rt__secagg_log_job(j), n->opts.durability_disk);
	if (err)
		trib_warn("job %s round %u: removing the secure round's state log: %s (the next "
			  "start finds it stale and removes it)", j->name, round, strerror(-err));
	shm_journal_release_round(n->arena, rt__secagg_log_job(j), round, &released);
	/*
	 * A failed round's number is the next attempt's too: the cut is queued before any of that
	 * attempt's inputs (they come after its advertise and share stages), so it removes only
	 * this attempt's segment.
	 */
	rt__wal_cut(n, j, round);
}

int rt_job_secagg_accept(struct rt_node *n, struct rt_job *j, uint64_t slot_off,
			 uint64_t segs_off, uint64_t len, const char *client, uint32_t *seq)
{
	struct rt_accept_in in = { .slot_off = slot_off, .segs_off = segs_off, .nsegs = 1,
				   .weight = 1.0 };
	struct rt_update_in u = { .slot_off = slot_off, .segs_off = segs_off, .nsegs = 1,
				  .weight = 1.0, .data_len = len, .client = client };
	struct rt_wal_ent *e = NULL;
	char body[64];
	size_t blen = 0;
	uint32_t s = rt__next_seq(j);
	uint64_t ticket;
	int err = rt_job_answer_body(j->round, s, body, sizeof(body), &blen);

	/*
	 * As rt_job_accept_logged, without its one-update-per-client table: the secure round's
	 * state allows one input per client (rt_secagg_masked_enter), and its log says whose.
	 */
	if (!err && n->wal)
		err = rt__wal_prepare(n, j, &u, &in, s, body, blen, &e);
	if (!err)
		err = rt__journal_update(n, j, &in, s, NULL, 0, body, blen, client);
	if (err) {
		rt__wal_discard(e);
		return err;
	}
	*seq = s;
	if (!e)
		return 0;
	/*
	 * --durability disk: the stage answers at once (no parked response), so the loop waits
	 * here for the batch: one fdatasync per masked input, paid by the secure round only.
	 */
	ticket = rt__wal_submit(n, e);
	err = rt_wal_sync(n->wal);
	rt_node_wal_poll(n);
	if (!err && rt_node_wal_ticket(n, ticket) != 1)
		err = -EIO;
	if (!err)
		return 0;
	/*
	 * In the tree and the arena's journal, not on disk: not the promise --durability disk
	 * makes, so no 200; and the tree holds an input the round's state will not count, so
	 * the round fails now rather than at its unmask (the tree's sum would not match).
	 */
	log_failed(j, "the disk log of a masked input", err);
	return -ECANCELED;
}
