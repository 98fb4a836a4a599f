// SPDX-License-Identifier: MIT
/* A job's clients: its credential key and revocations, and one update per client per round. */
#include "rt_node_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl_store.h"
#include "shm_arena_abi.h"
#include "trib_alloc.h"
#include "trib_cred.h"
#include "trib_log.h"

_Static_assert(RT_CLIENT_ID_MAX == TRIB_CRED_CLIENT_MAX, "a client id is a credential's");
_Static_assert(RT_CLIENT_ID_MAX == SHM_REC_CLIENT_MAX, "a journal record holds a client id");
_Static_assert(sizeof(((struct rt_job_cred *)0)->key) == TRIB_CRED_KEY_LEN, "the job key");
_Static_assert(CTL_CLIENT_MAX == RT_CLIENT_ID_MAX + 1, "the store keeps client ids");
_Static_assert(CTL_KEY_LEN == TRIB_CRED_KEY_LEN, "the store keeps job keys");

/* ---- the table: open addressing, linear probing, FNV-1a; grows at half full ---- */

static uint32_t id_hash(const char *id)
{
	uint32_t h = 2166136261u;

	for (; *id; id++)
		h = (h ^ (uint8_t)*id) * 16777619u;
	return h;
}

struct rt_client_ent *rt_clients_find(const struct rt_clients *t, const char *id)
{
	if (!t->cap || !id || !*id)
		return NULL;
	for (uint32_t i = id_hash(id) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (!t->v[i].id[0])
			return NULL;
		if (!strcmp(t->v[i].id, id))
			return &t->v[i];
	}
}

/* Put @e into @v (@cap entries, a power of two, with room); returns its place. */
static struct rt_client_ent *place(struct rt_client_ent *v, uint32_t cap,
				   const struct rt_client_ent *e)
{
	uint32_t i = id_hash(e->id) & (cap - 1);

	while (v[i].id[0])
		i = (i + 1) & (cap - 1);
	v[i] = *e;
	return &v[i];
}

/* Rebuild into @cap entries, keeping those @keep says (all if !@drop); 0 or -ENOMEM. */
static int rebuild(struct rt_clients *t, uint32_t cap, bool drop)
{
	struct rt_client_ent *nv = trib_calloc(cap, sizeof(*nv));
	uint32_t used = 0;

	if (!nv)
		return -ENOMEM;
	for (uint32_t i = 0; i < t->cap; i++) {
		struct rt_client_ent e = t->v[i];

		if (!e.id[0])
			continue;
		if (drop) {
			e.seen = false;
			if (!e.inflight)
				continue;
		}
		place(nv, cap, &e);
		used++;
	}
	trib_free(t->v);
	t->v = nv;
	t->cap = cap;
	t->used = used;
	return 0;
}

struct rt_client_ent *rt_clients_get(struct rt_clients *t, const char *id)
{
	struct rt_client_ent *e = rt_clients_find(t, id), ne;

	if (e)
		return e;
	if (!id || !*id || strlen(id) > RT_CLIENT_ID_MAX)
		return NULL;
	if ((t->used + 1) * 2 > t->cap && rebuild(t, t->cap ? t->cap * 2 : 16, false))
		return NULL;
	memset(&ne, 0, sizeof(ne));
	memcpy(ne.id, id, strlen(id) + 1);
	t->used++;
	return place(t->v, t->cap, &ne);
}

int rt_clients_sync(struct rt_clients *t, uint32_t round, uint32_t *left_seen)
{
	uint32_t cap = 16;
	int err;

	*left_seen = 0;
	if (t->synced && t->round == round)
		return 0;
	if (t->cap) {
		/* Small again once a crowd has gone: room for those still sending, at half. */
		uint32_t live = 0;

		for (uint32_t i = 0; i < t->cap; i++)
			live += t->v[i].id[0] && t->v[i].inflight;
		while (cap < 2 * (live + 1))
			cap *= 2;
		err = rebuild(t, cap, true);
		if (err)
			return err;
	}
	*left_seen = t->synced ? t->seen : 0;
	t->seen = 0;
	t->round = round;
	t->synced = true;
	return 0;
}

void rt_clients_free(struct rt_clients *t)
{
	trib_free(t->v);
	memset(t, 0, sizeof(*t));
}

/* ---- a job's clients ---- */

/*
 * The table follows the job's open round: when it moved, the clients the
 * store remembers for the new round (those whose journal records a
 * partial superseded before a restart) are marked seen again.
 */
static int clients_at_round(struct rt_node *n, struct rt_job *j)
{
	char (*ids)[CTL_CLIENT_MAX] = NULL;
	uint32_t left = 0, was;
	size_t k = 0;
	int err;

	if (j->clients.synced && j->clients.round == j->round)
		return 0;
	was = j->clients.synced ? j->clients.round : UINT32_MAX;
	err = rt_clients_sync(&j->clients, j->round, &left);
	if (err)
		return err;
	/* The round left is closed: its count goes to its record (rt_commit.c). */
	for (struct rt_round *r = j->inflight; r && was != UINT32_MAX; r = r->next)
		if (r->round == was)
			r->clients = left;
	if (was != UINT32_MAX)
		j->last_round_clients = left;
	if (n->clustered || !n->store)
		return 0;
	err = ctl_store_round_clients_list(n->store, j->db_id, j->round, &ids, &k);
	for (size_t i = 0; !err && i < k; i++) {
		struct rt_client_ent *e = rt_clients_get(&j->clients, ids[i]);

		if (!e) {
			err = -ENOMEM;
		} else if (!e->seen) {
			e->seen = true;
			j->clients.seen++;
		}
	}
	trib_free(ids);
	if (err)
		trib_error("job %s round %u: the clients already counted in it: %s", j->name,
			   j->round, strerror(-err));
	return err;
}

bool rt_job_client_seen(struct rt_node *n, struct rt_job *j, const char *id)
{
	const struct rt_client_ent *e;

	if (!id || !*id)
		return false;
	if (clients_at_round(n, j))
		return true; /* unknown: refuse rather than count a client twice */
	e = rt_clients_find(&j->clients, id);
	return e && e->seen;
}

struct rt_client_ent *rt_job_client(struct rt_node *n, struct rt_job *j, const char *id)
{
	if (clients_at_round(n, j))
		return NULL;
	return rt_clients_get(&j->clients, id);
}

void rt_job_client_inflight(struct rt_node *n, struct rt_job *j, const char *id, bool add)
{
	struct rt_client_ent *e = add ? rt_job_client(n, j, id) : rt_clients_find(&j->clients, id);

	if (!e)
		return;
	if (add)
		e->inflight++;
	else if (e->inflight)
		e->inflight--;
}

uint32_t rt_job_clients_now(struct rt_node *n, struct rt_job *j)
{
	if (clients_at_round(n, j))
		return 0;
	return j->clients.seen;
}

/* ---- credentials ---- */

bool rt_job_revoked(const struct rt_job *j, const char *id)
{
	for (size_t i = 0; i < j->cred.nrevoked; i++)
		if (!strcmp(j->cred.revoked[i], id))
			return true;
	return false;
}

/* Add @id to @j's revoked list (not there yet); 0 or -ENOMEM. */
static int revoked_add(struct rt_job *j, const char *id)
{
	char (*nv)[RT_CLIENT_ID_MAX + 1];

	if (rt_job_revoked(j, id))
		return 0;
	nv = trib_realloc(j->cred.revoked, (j->cred.nrevoked + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	j->cred.revoked = nv;
	snprintf(nv[j->cred.nrevoked++], sizeof(*nv), "%s", id);
	return 0;
}

int rt_job_revoke(struct rt_node *n, struct rt_job *j, const char *id)
{
	int err;

	if (!trib_cred_client_valid(id))
		return -EINVAL;
	if (rt_job_revoked(j, id))
		return 0; /* again: nothing changes, nothing to say */
	if (!n->clustered) {
		err = ctl_store_revoke(n->store, j->db_id, id);
		if (err)
			return err;
	}
	err = revoked_add(j, id);
	if (!err)
		trib_info("job %s: client %s revoked", j->name, id);
	return err;
}

int rt_job_cred_set(struct rt_job *j, const char *hex, const char *const *revoked, size_t k)
{
	uint8_t key[TRIB_CRED_KEY_LEN];
	int err = trib_cred_key_unhex(hex, key);

	if (err)
		return err;
	memcpy(j->cred.key, key, sizeof(key));
	explicit_bzero(key, sizeof(key));
	j->cred.has_key = true;
	for (size_t i = 0; i < k && !err; i++)
		err = trib_cred_client_valid(revoked[i]) ? revoked_add(j, revoked[i]) : -EINVAL;
	return err;
}

int rt_job_cred_load(struct rt_node *n, struct rt_job *j)
{
	char (*ids)[CTL_CLIENT_MAX] = NULL;
	size_t k = 0;
	int err;

	err = ctl_store_job_key_get(n->store, j->db_id, j->cred.key);
	if (err == -ENOENT) {
		/* A new job, or one made before keys existed: its key is made once, here. */
		err = trib_cred_key_new(j->cred.key);
		if (!err)
			err = ctl_store_job_key_put(n->store, j->db_id, j->cred.key);
	}
	if (!err)
		err = ctl_store_revoked_list(n->store, j->db_id, &ids, &k);
	for (size_t i = 0; !err && i < k; i++)
		err = revoked_add(j, ids[i]);
	trib_free(ids);
	if (err) {
		explicit_bzero(j->cred.key, sizeof(j->cred.key));
		trib_error("job %s: its client credential key: %s", j->name, strerror(-err));
		return err;
	}
	j->cred.has_key = true;
	return 0;
}
