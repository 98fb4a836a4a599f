// SPDX-License-Identifier: MIT
/*
 * The controller's client credentials: each job's key and revoked clients,
 * kept in its store and sent to every node with the job, so that any node
 * checks a client token without asking (core/trib_cred.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl_daemon.h"
#include "ctl_store.h"
#include "trib_alloc.h"
#include "trib_cred.h"
#include "trib_log.h"
#include "trib_time.h"

int ctl__job_cred_init(struct ctl *c, struct cjob *j)
{
	char (*ids)[CTL_CLIENT_MAX] = NULL;
	size_t n = 0;
	int err;

	_Static_assert(sizeof(j->key) == TRIB_CRED_KEY_LEN, "a job key");
	err = ctl_store_job_key_get(c->store, j->db_id, j->key);
	if (err == -ENOENT) {
		/* A new job, or one made before keys existed: made once, kept. */
		err = trib_cred_key_new(j->key);
		if (!err)
			err = ctl_store_job_key_put(c->store, j->db_id, j->key);
	}
	if (!err)
		err = ctl_store_revoked_list(c->store, j->db_id, &ids, &n);
	json_decref(j->revoked);
	j->revoked = err ? NULL : json_array();
	if (!err && !j->revoked)
		err = -ENOMEM;
	for (size_t i = 0; !err && i < n; i++)
		if (json_array_append_new(j->revoked, json_string(ids[i])))
			err = -ENOMEM;
	trib_free(ids);
	if (err)
		trib_error("job %s: its client credential key: %s", j->name, strerror(-err));
	return err;
}

void ctl__job_cred_fini(struct cjob *j)
{
	explicit_bzero(j->key, sizeof(j->key));
	json_decref(j->revoked);
	j->revoked = NULL;
}

int ctl__job_cred_add(const struct cjob *j, json_t *m)
{
	char hex[2 * TRIB_CRED_KEY_LEN + 1];
	int err = 0;

	trib_cred_key_hex(j->key, hex);
	if (json_object_set_new(m, "cred_key", json_string(hex)) ||
	    json_object_set(m, "revoked", j->revoked ? j->revoked : json_array()))
		err = -ENOMEM;
	explicit_bzero(hex, sizeof(hex));
	return err;
}

bool ctl__round_client_refused(struct cround *cr, const char *id, uint32_t to, json_t **rep)
{
	char msg[160];

	if (!id || !*id)
		return false;
	if (json_object_get(cr->clients, id)) {
		snprintf(msg, sizeof(msg), "client %s already has an update counted in round %u "
			 "(one update per client per round)", id, cr->round);
		*rep = ctl__err_reply(409, msg);
		json_object_set_new(*rep, "round", json_integer(cr->round));
		return true;
	}
	if (!cr->clients)
		cr->clients = json_object();
	/* Short of memory the client goes uncounted here: each node still checks its token. */
	if (cr->clients && json_object_set_new(cr->clients, id, json_integer(to)))
		trib_warn("round %u: client %s not recorded (out of memory)", cr->round, id);
	return false;
}

void ctl__round_client_drop(struct cround *cr, const char *id)
{
	if (cr && id && *id)
		json_object_del(cr->clients, id);
}

void ctl__round_clients_lose(struct cround *cr, uint32_t rank)
{
	const char *id;
	json_t *v;
	void *tmp;

	json_object_foreach_safe(cr->clients, tmp, id, v)
		if (json_integer_value(v) == (json_int_t)rank)
			json_object_del(cr->clients, id);
}

/*
 * A client that got no answer sends the update again, with the same Idempotency-Key, to
 * another gateway (the Python client's failover does). Each node knows only its own keys,
 * so without this the update was counted twice. The controller keeps the round's keys:
 * key -> [fold rank, its epoch, seq, asking rank, uid, when]. A resend gets the first
 * count's answer (202, the same receipt), and its bytes are dropped by its node. A resend
 * within KEY_SETTLE_NS of the first count gets 503: the first may still fail on its way
 * to its 202 (then it is given back and its key forgotten), and a 202 is a promise.
 * Memory only: a controller restart forgets them (a resend then counts again).
 */
#define KEY_SETTLE_NS (10ull * 1000000000ull)

bool ctl__round_key_first(struct ctl *c, struct cround *cr, const char *key, json_t **rep)
{
	json_t *e = key && *key ? json_object_get(cr->keys, key) : NULL;
	uint32_t at;
	char msg[200];

	if (!e)
		return false;
	at = (uint32_t)json_integer_value(json_array_get(e, 0));
	if (trib_now_ns() - (uint64_t)json_integer_value(json_array_get(e, 5)) < KEY_SETTLE_NS) {
		snprintf(msg, sizeof(msg), "an update with this Idempotency-Key was counted in "
			 "round %u moments ago at node %s; send it again for its answer",
			 cr->round, at < c->nnodes ? c->nodes[at].name : "?");
		*rep = ctl__err_reply(503, msg);
		return true;
	}
	*rep = json_pack("{s:b, s:b, s:i, s:s, s:i, s:i}", "ok", 0, "duplicate", 1, "seq",
			 json_integer_value(json_array_get(e, 2)), "fold_name",
			 at < c->nnodes ? c->nodes[at].name : "?", "fold_epoch",
			 json_integer_value(json_array_get(e, 1)), "round", (json_int_t)cr->round);
	return true;
}

void ctl__round_key_put(struct cround *cr, const char *key, uint32_t to, uint32_t epoch,
			uint32_t seq, uint32_t asker, uint64_t uid)
{
	json_t *e;

	if (!key || !*key)
		return;
	if (!cr->keys)
		cr->keys = json_object();
	e = json_pack("[i, i, i, i, I, I]", (json_int_t)to, (json_int_t)epoch, (json_int_t)seq,
		      (json_int_t)asker, (json_int_t)uid, (json_int_t)trib_now_ns());
	/* Short of memory a resend elsewhere counts again: as before keys were kept here. */
	if (!cr->keys || !e || json_object_set_new(cr->keys, key, e))
		trib_warn("round %u: an Idempotency-Key not recorded (out of memory)", cr->round);
}

void ctl__round_key_release(struct cround *cr, uint32_t asker, uint64_t uid)
{
	const char *k;
	json_t *v;
	void *tmp;

	json_object_foreach_safe(cr->keys, tmp, k, v)
		if (json_integer_value(json_array_get(v, 3)) == (json_int_t)asker &&
		    (uint64_t)json_integer_value(json_array_get(v, 4)) == uid)
			json_object_del(cr->keys, k);
}

void ctl__round_keys_lose(struct cround *cr, uint32_t rank)
{
	const char *k;
	json_t *v;
	void *tmp;

	/* Lost with their node: their clients resend (an open round), and those count. */
	json_object_foreach_safe(cr->keys, tmp, k, v)
		if (json_integer_value(json_array_get(v, 0)) == (json_int_t)rank)
			json_object_del(cr->keys, k);
}

uint32_t ctl__round_clients(const struct cround *cr)
{
	return (uint32_t)json_object_size(cr->clients);
}

void ctl__on_revoke(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = ctl__jstr(ev->hdr, "job", NULL);
	const char *client = ctl__jstr(ev->hdr, "client", NULL);
	struct cjob *j;
	json_t *m;
	int err;

	for (j = c->jobs; j && (!name || strcmp(j->name, name)); j = j->next)
		;
	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	if (!trib_cred_client_valid(client)) {
		*rep = ctl__err_reply(400, "client: 1 to 32 characters of A-Z a-z 0-9 _ -");
		return;
	}
	err = ctl_store_revoke(c->store, j->db_id, client);
	if (!err) {
		bool known = false;
		size_t i;
		json_t *v;

		json_array_foreach(j->revoked, i, v)
			known = known || !strcmp(json_string_value(v), client);
		if (!known && json_array_append_new(j->revoked, json_string(client)))
			err = -ENOMEM;
	}
	if (err) {
		*rep = ctl__err_reply(500, "could not keep the revocation");
		return;
	}
	trib_info("job %s: client %s revoked cluster-wide", j->name, client);
	/* Every node gets the job's list again (the asking one too: its answer may be lost). */
	m = ctl__job_msg(c, j);
	if (m)
		ctl__tell_all(c, m, NULL, 0, -1);
	json_decref(m);
	*rep = json_pack("{s:b, s:s, s:s, s:O}", "ok", 1, "job", j->name, "client", client,
			 "revoked", j->revoked);
}
