// SPDX-License-Identifier: MIT
/*
 * A cluster job's pause and resume (issue 15): the controller keeps the state
 * (SQLite kv, so a controller restart keeps it), refuses counts while paused,
 * and sends every node the job again with it (ctl__job_msg's "paused").
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl_daemon.h"
#include "ctl_store.h"
#include "trib_log.h"
#include "trib_store.h"

static void paused_key(const struct cjob *j, char *out, size_t cap)
{
	snprintf(out, cap, "job.%lld.paused", (long long)j->db_id);
}

void ctl__job_life_load(struct ctl *c, struct cjob *j)
{
	char key[CTL_KV_KEY_MAX], val[8];
	int err;

	paused_key(j, key, sizeof(key));
	err = ctl_store_kv_get(c->store, key, val, sizeof(val));
	if (err && err != -ENOENT)
		trib_warn("job %s: reading its paused state: %s (taken as not paused)", j->name,
			  strerror(-err));
	j->paused = !err && !strcmp(val, "1");
}

void ctl__on_pause(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = ctl__jstr(ev->hdr, "job", NULL);
	bool pause = json_is_true(json_object_get(ev->hdr, "paused"));
	char key[CTL_KV_KEY_MAX], msg[160];
	struct cjob *j;
	json_t *m;

	for (j = c->jobs; j && (!name || strcmp(j->name, name)); j = j->next)
		;
	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	if (j->num_rounds && j->completed >= j->num_rounds) {
		snprintf(msg, sizeof(msg), "job '%s' is done after %u rounds: nothing to %s",
			 j->name, j->num_rounds, pause ? "pause" : "resume");
		*rep = ctl__err_reply(409, msg);
		json_object_set_new(*rep, "state", json_string("done"));
		return;
	}
	paused_key(j, key, sizeof(key));
	if (ctl_store_kv_set(c->store, key, pause ? "1" : "0")) {
		*rep = ctl__err_reply(503, "could not keep the job's state (the controller's store "
				      "failed); nothing changed, retry");
		return;
	}
	if (j->paused != pause)
		trib_info("job %s: %s cluster-wide", j->name, pause ? "paused" : "resumed");
	j->paused = pause;
	/* Every node gets the job again (the asking one too: its answer may be lost). */
	m = ctl__job_msg(c, j);
	if (m)
		ctl__tell_all(c, m, NULL, 0, -1);
	json_decref(m);
	*rep = json_pack("{s:b, s:s, s:b}", "ok", 1, "job", j->name, "paused", pause);
}

void ctl__on_job_delete(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = ctl__jstr(ev->hdr, "job", NULL);
	bool purge = json_is_true(json_object_get(ev->hdr, "purge"));
	char prefix[CTL_KV_KEY_MAX], kept[512];
	struct cjob *j;
	json_t *m;
	int err;

	for (j = c->jobs; j && (!name || strcmp(j->name, name)); j = j->next)
		;
	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	snprintf(prefix, sizeof(prefix), "job.%lld.", (long long)j->db_id);
	err = ctl_store_job_remove(c->store, j->name, prefix);
	if (err) {
		*rep = ctl__err_reply(503, "could not delete the job (the controller's store "
				      "failed); nothing changed, retry");
		return;
	}
	/* Committed: a controller restart does not bring it back. */
	err = trib_store_job_release(c->o->data_dir, j->name, (long long)j->db_id, purge, kept,
				     sizeof(kept));
	if (err)
		trib_error("job %s: %s its model files: %s (the job is deleted)", j->name,
			   purge ? "removing" : "moving aside", strerror(-err));
	trib_info("job %s: deleted cluster-wide%s", j->name, purge ? " with its models" : "");
	/* Every node deletes its copy (the asking one too: its answer may be lost). */
	m = json_pack("{s:s, s:s, s:b}", "op", "job_delete", "job", j->name, "purge", purge);
	if (m)
		ctl__tell_all(c, m, NULL, 0, -1);
	json_decref(m);
	*rep = json_pack("{s:b, s:s, s:b}", "ok", 1, "job", j->name, "purged", purge);
	ctl__job_unlink_free(c, j);
}
