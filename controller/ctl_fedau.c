// SPDX-License-Identifier: MIT
/*
 * fedau across nodes (ctl_fedau.h): the table, and its place in the controller's count. The
 * controller answers each counted update's weight in its `accept` answer ("weight"); the node
 * that folds it journals and folds it with that weight, as one node does with its own table.
 */
#include "ctl_fedau.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ctl_daemon.h"
#include "trib_alloc.h"
#include "trib_fedau.h"
#include "trib_json.h"
#include "trib_log.h"

struct ent {
	char id[CTL_CLIENT_MAX];
	struct trib_fedau_client c;
	double w;   /* the weight of its update of c.last_round; NAN: loaded (not known here) */
	bool dirty; /* moved since the last save */
};

struct ctl_fedau {
	uint32_t k;
	struct ent *v; /* n entries, unordered */
	size_t n, cap;
	char (*gone)[CTL_CLIENT_MAX]; /* forgotten since the last save (their rows go) */
	size_t ngone, gone_cap;
};

struct ctl_fedau *ctl_fedau_new(uint32_t k)
{
	struct ctl_fedau *t;

	if (k < TRIB_FEDAU_K_MIN || k > TRIB_FEDAU_K_MAX)
		return NULL;
	t = trib_calloc(1, sizeof(*t));
	if (t)
		t->k = k;
	return t;
}

void ctl_fedau_free(struct ctl_fedau *t)
{
	if (!t)
		return;
	trib_free(t->v);
	trib_free(t->gone);
	trib_free(t);
}

size_t ctl_fedau_size(const struct ctl_fedau *t)
{
	return t ? t->n : 0;
}

static struct ent *find(struct ctl_fedau *t, const char *id)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].id, id))
			return &t->v[i];
	return NULL;
}

/* A new entry for @id, forgetting the stalest client at the bound (rt_fedau.c's rule). */
static struct ent *add(struct ctl_fedau *t, const char *id)
{
	struct ent *e;

	if (t->n == CTL_FEDAU_CLIENTS_MAX) {
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
		struct ent *nv;

		if (nc > CTL_FEDAU_CLIENTS_MAX)
			nc = CTL_FEDAU_CLIENTS_MAX;
		nv = trib_realloc(t->v, nc * sizeof(*nv));
		if (!nv)
			return NULL;
		t->v = nv;
		t->cap = nc;
	}
	e = &t->v[t->n++];
	memset(e, 0, sizeof(*e));
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->c = TRIB_FEDAU_NEW;
	e->w = NAN;
	/* Forgotten and back within one save: its row is replaced, not deleted. */
	for (size_t i = 0; i < t->ngone; i++)
		if (!strcmp(t->gone[i], id))
			t->gone[i][0] = '\0';
	return e;
}

int ctl_fedau_take(struct ctl_fedau *t, const char *id, uint32_t round, double *w)
{
	struct trib_fedau_client c;
	struct ent *e;
	int err;

	if (!t || !id || !*id || strlen(id) >= CTL_CLIENT_MAX)
		return -EINVAL;
	e = find(t, id);
	if (e && e->c.last_round == (int64_t)round) {
		if (isnan(e->w))
			return -ESTALE;
		*w = e->w; /* sent again: the same weight, counted once */
		return 0;
	}
	c = e ? e->c : TRIB_FEDAU_NEW;
	err = trib_fedau_observe(&c, round, t->k, w);
	if (err)
		return err == -EALREADY ? -ESTALE : err;
	if (!e && !(e = add(t, id)))
		return -ENOMEM;
	e->c = c;
	e->w = *w;
	e->dirty = true;
	return 0;
}

int ctl_fedau_load(struct ctl_fedau *t, struct ctl_store *st, int64_t job_id)
{
	struct ctl_fedau_row *rows = NULL;
	size_t nr = 0;
	int err = ctl_store_fedau_list(st, job_id, &rows, &nr);

	for (size_t i = 0; !err && i < nr && i < CTL_FEDAU_CLIENTS_MAX; i++) {
		struct ent *e = find(t, rows[i].client);

		if (!e && !(e = add(t, rows[i].client))) {
			err = -ENOMEM;
			break;
		}
		e->c.last_round = rows[i].last_round;
		e->c.intervals = rows[i].intervals;
		e->c.total = rows[i].total;
		e->w = NAN;
		e->dirty = false;
	}
	trib_free(rows);
	return err;
}

int ctl_fedau_save(struct ctl_fedau *t, struct ctl_store *st, int64_t job_id)
{
	struct ctl_fedau_row *rows;
	const char **gone;
	size_t nr = 0, ng = 0;
	int err = -ENOMEM;

	if (!t)
		return 0;
	rows = trib_calloc(t->n ? t->n : 1, sizeof(*rows));
	gone = trib_calloc(t->ngone ? t->ngone : 1, sizeof(*gone));
	if (!rows || !gone)
		goto out;
	for (size_t i = 0; i < t->n; i++) {
		if (!t->v[i].dirty)
			continue;
		memcpy(rows[nr].client, t->v[i].id, sizeof(rows[nr].client));
		rows[nr].last_round = t->v[i].c.last_round;
		rows[nr].intervals = t->v[i].c.intervals;
		rows[nr++].total = t->v[i].c.total;
	}
	for (size_t i = 0; i < t->ngone; i++)
		if (t->gone[i][0])
			gone[ng++] = t->gone[i];
	err = ctl_store_fedau_put(st, job_id, rows, nr, gone, ng);
	if (!err) {
		for (size_t i = 0; i < t->n; i++)
			t->v[i].dirty = false;
		t->ngone = 0;
	}
out:
	trib_free(rows);
	trib_free(gone);
	return err;
}

/* --- in the controller's count --- */

/*
 * The job's table, made at its first count: fedau's cutoff from the definition the nodes
 * checked (rt_algo.c's default), the rows saved before a restart, then the clients of the
 * rounds not yet committed (reloaded from the store and the nodes' reports before any count:
 * accepts wait for the reconciliation), in round order, as one node replays its journal.
 */
static int fedau_open(struct ctl *c, struct cjob *j)
{
	json_t *o = NULL, *k;
	struct ctl_fedau *t;
	const char *alg;
	uint32_t kv = TRIB_FEDAU_K_DEFAULT;
	size_t loaded, replayed = 0;
	int err;

	if (trib_json_loadb(j->body, strlen(j->body), 0, &o, NULL) == -ENOMEM)
		return -ENOMEM;
	alg = json_string_value(json_object_get(o, "algorithm"));
	k = json_object_get(o, "fedau_cutoff");
	if (json_is_integer(k))
		kv = (uint32_t)json_integer_value(k);
	if (!alg || strcmp(alg, "fedau")) {
		json_decref(o);
		j->fedau_checked = true; /* not fedau: nothing to do, ever */
		return 0;
	}
	json_decref(o);
	t = ctl_fedau_new(kv);
	if (!t)
		return -ENOMEM;
	err = ctl_fedau_load(t, c->store, j->db_id);
	if (err) {
		ctl_fedau_free(t);
		return err;
	}
	loaded = ctl_fedau_size(t);
	for (struct cround *cr = j->rounds; cr; cr = cr->next) {
		const char *id;
		json_t *v;
		double w;

		if (cr->state == CR_DONE)
			continue;
		json_object_foreach(cr->clients, id, v)
			if (!ctl_fedau_take(t, id, cr->round, &w))
				replayed++;
	}
	trib_info("job %s: fedau: %zu client states loaded, %zu participations of rounds in "
		  "flight replayed (cutoff %u)", j->name, loaded, replayed, kv);
	j->fedau = t;
	j->fedau_checked = true;
	return 0;
}

int ctl__fedau_weight(struct ctl *c, struct cjob *j, uint32_t round, const char *client,
		      double *w, json_t **rep)
{
	char msg[200];
	int err;

	*w = 0;
	if (!j->fedau_checked) {
		err = fedau_open(c, j);
		if (err) {
			snprintf(msg, sizeof(msg), "fedau: the controller could not read its client "
				 "table (%s); retry", strerror(-err));
			*rep = ctl__err_reply(503, msg);
			return err;
		}
	}
	if (!j->fedau)
		return 0;
	err = ctl_fedau_take(j->fedau, client, round, w);
	if (!err)
		return 0;
	if (err == -EINVAL)
		snprintf(msg, sizeof(msg), "fedau: an update without a client token (fedau weighs "
			 "each client)");
	else if (err == -ESTALE)
		snprintf(msg, sizeof(msg), "fedau: client %s already took part in round %u or later "
			 "(one update per client per round)", client, round);
	else
		snprintf(msg, sizeof(msg), "fedau: no weight for client %s: %s", client,
			 strerror(-err));
	*rep = ctl__err_reply(err == -EINVAL ? 403 : err == -ESTALE ? 409 : 503, msg);
	return err;
}

int ctl__fedau_commit(struct ctl *c, struct cjob *j)
{
	int err = ctl_fedau_save(j->fedau, c->store, j->db_id);

	if (err)
		trib_error("job %s: fedau: saving the client states: %s", j->name, strerror(-err));
	return err;
}

void ctl__fedau_fini(struct cjob *j)
{
	ctl_fedau_free(j->fedau);
	j->fedau = NULL;
	j->fedau_checked = false;
}
