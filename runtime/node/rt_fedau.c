// SPDX-License-Identifier: MIT
/* fedau's per-client table: interval estimates by client id, bounded, kept in the node's store. */
#include "rt_node_priv.h"

#include <errno.h>
#include <string.h>

#include "ctl_store.h"
#include "trib_fedau.h"
#include "trib_alloc.h"
#include "trib_log.h"

struct rt_fedau_ent {
	char id[RT_CLIENT_ID_MAX + 1];
	struct trib_fedau_client c;
	bool dirty; /* moved since the last save */
};

struct rt_fedau {
	struct rt_fedau_ent *v; /* n entries, unordered */
	size_t n, cap;
	char (*gone)[RT_CLIENT_ID_MAX + 1]; /* evicted since the last save (their rows go) */
	size_t ngone, gone_cap;
};

static struct rt_fedau_ent *find(struct rt_fedau *t, const char *id)
{
	for (size_t i = 0; t && i < t->n; i++)
		if (!strcmp(t->v[i].id, id))
			return &t->v[i];
	return NULL;
}

int rt_fedau_weight(struct rt_job *j, const char *id, uint32_t round, double *weight)
{
	struct rt_fedau_ent *e;
	struct trib_fedau_client c;
	int err;

	if (!j->algo.fedau || !id || !*id)
		return -EINVAL;
	e = find(j->fedau, id);
	c = e ? e->c : TRIB_FEDAU_NEW;
	err = trib_fedau_observe(&c, round, j->algo.fedau_k, weight);
	if (err == -EALREADY) {
		/* The same round again (its update is refused as a duplicate): the weight it had. */
		*weight = 1.0;
		return 0;
	}
	return err;
}

/* Makes room for one more entry, evicting the stalest at the bound; NULL on -ENOMEM. */
static struct rt_fedau_ent *slot_new(struct rt_fedau *t)
{
	if (t->n == RT_FEDAU_CLIENTS_MAX) {
		size_t old = 0;

		for (size_t i = 1; i < t->n; i++)
			if (t->v[i].c.last_round < t->v[old].c.last_round)
				old = i;
		if (t->ngone == t->gone_cap) {
			size_t nc = t->gone_cap ? 2 * t->gone_cap : 16;
			void *ng = trib_realloc(t->gone, nc * sizeof(*t->gone));

			if (!ng)
				return NULL;
			t->gone = ng;
			t->gone_cap = nc;
		}
		memcpy(t->gone[t->ngone++], t->v[old].id, sizeof(t->gone[0]));
		t->v[old] = t->v[--t->n];
	}
	if (t->n == t->cap) {
		size_t nc = t->cap ? 2 * t->cap : 64;
		struct rt_fedau_ent *nv;

		if (nc > RT_FEDAU_CLIENTS_MAX)
			nc = RT_FEDAU_CLIENTS_MAX;
		nv = trib_realloc(t->v, nc * sizeof(*nv));
		if (!nv)
			return NULL;
		t->v = nv;
		t->cap = nc;
	}
	memset(&t->v[t->n], 0, sizeof(t->v[0]));
	return &t->v[t->n++];
}

/* The entry of @id, made (a new client) if absent; NULL on -ENOMEM. */
static struct rt_fedau_ent *get(struct rt_job *j, const char *id)
{
	struct rt_fedau_ent *e = find(j->fedau, id);

	if (e)
		return e;
	if (!j->fedau) {
		j->fedau = trib_calloc(1, sizeof(*j->fedau));
		if (!j->fedau)
			return NULL;
	}
	e = slot_new(j->fedau);
	if (!e)
		return NULL;
	snprintf(e->id, sizeof(e->id), "%s", id);
	/* A client evicted and back within one save: its row is replaced, not deleted. */
	for (size_t i = 0; i < j->fedau->ngone; i++)
		if (!strcmp(j->fedau->gone[i], id))
			j->fedau->gone[i][0] = '\0';
	e->c = TRIB_FEDAU_NEW;
	return e;
}

void rt__fedau_note(struct rt_job *j, uint32_t round, const char *id)
{
	struct rt_fedau_ent *e;
	double w;
	int err;

	/* A cluster's table is the controller's (controller/ctl_fedau.c): nothing kept here. */
	if (!j->algo.fedau || j->xid || !id || !*id)
		return;
	e = get(j, id);
	if (!e) {
		trib_error("job %s round %u: fedau: no memory for client %s; it counts as new",
			   j->name, round, id);
		return;
	}
	err = trib_fedau_observe(&e->c, round, j->algo.fedau_k, &w);
	if (!err)
		e->dirty = true;
	else if (err != -EALREADY)
		trib_error("job %s round %u: fedau: client %s: %s", j->name, round, id,
			   strerror(-err));
}

int rt__fedau_save(struct rt_node *n, struct rt_job *j)
{
	struct rt_fedau *t = j->fedau;
	struct ctl_fedau_row *rows = NULL;
	const char **gone = NULL;
	size_t nr = 0, ng = 0;
	int err = -ENOMEM;

	if (!t || n->clustered)
		return 0;
	rows = trib_calloc(t->n ? t->n : 1, sizeof(*rows));
	gone = trib_calloc(t->ngone ? t->ngone : 1, sizeof(*gone));
	if (!rows || !gone)
		goto out;
	for (size_t i = 0; i < t->n; i++) {
		if (!t->v[i].dirty)
			continue;
		_Static_assert(sizeof(rows[0].client) >= RT_CLIENT_ID_MAX + 1, "ids fit");
		memcpy(rows[nr].client, t->v[i].id, sizeof(t->v[i].id));
		rows[nr].last_round = t->v[i].c.last_round;
		rows[nr].intervals = t->v[i].c.intervals;
		rows[nr++].total = t->v[i].c.total;
	}
	for (size_t i = 0; i < t->ngone; i++)
		if (t->gone[i][0])
			gone[ng++] = t->gone[i];
	err = ctl_store_fedau_put(n->store, j->db_id, rows, nr, gone, ng);
	if (!err) {
		for (size_t i = 0; i < t->n; i++)
			t->v[i].dirty = false;
		t->ngone = 0;
	} else {
		trib_error("job %s: fedau: saving %zu client states: %s", j->name, nr,
			   strerror(-err));
	}
out:
	trib_free(rows);
	trib_free(gone);
	return err;
}

void rt__fedau_load(struct rt_node *n, struct rt_job *j)
{
	struct ctl_fedau_row *rows = NULL;
	size_t nr = 0;
	int err;

	if (!j->algo.fedau || n->clustered)
		return;
	err = ctl_store_fedau_list(n->store, j->db_id, &rows, &nr);
	for (size_t i = 0; !err && i < nr && i < RT_FEDAU_CLIENTS_MAX; i++) {
		struct rt_fedau_ent *e = get(j, rows[i].client);

		if (!e) {
			err = -ENOMEM;
			break;
		}
		e->c.last_round = rows[i].last_round;
		e->c.intervals = rows[i].intervals;
		e->c.total = rows[i].total;
	}
	trib_free(rows);
	if (err)
		trib_error("job %s: fedau: loading the client states: %s; missing clients count "
			   "as new", j->name, strerror(-err));
	else if (nr)
		trib_info("job %s: fedau: %zu client states loaded", j->name, nr);
}

void rt__fedau_free(struct rt_job *j)
{
	if (!j->fedau)
		return;
	trib_free(j->fedau->v);
	trib_free(j->fedau->gone);
	trib_free(j->fedau);
	j->fedau = NULL;
}
