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
