// SPDX-License-Identifier: MIT
/*
 * The controller's table of jobs: a job created (checked, stored, told to every node), loaded
 * from the store at start with its newest model and its rounds in flight, listed for status,
 * and freed. Its rounds (counting, closing, placing the top, models) are ctl_jobs.c's.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "ctl_daemon.h"
#include "ctl_place.h"
#include "ctl_store.h"
#include "ctl_store_rec.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_name.h"
#include "trib_time.h"

static void job_free(struct cjob *j)
{
	while (j->rounds) {
		struct cround *cr = j->rounds;

		j->rounds = cr->next;
		json_decref(cr->clients);
		json_decref(cr->keys);
		json_decref(cr->msums);
		trib_free(cr);
	}
	ctl_model_fmt_fini(&j->fmt);
	ctl__job_cred_fini(j);
	ctl__job_select_fini(j);
	ctl__fedau_fini(j);
	trib_free(j->model);
	trib_free(j->body);
	trib_free(j);
}

static void job_append(struct ctl *c, struct cjob *j)
{
	struct cjob **pp = &c->jobs;

	while (*pp)
		pp = &(*pp)->next;
	*pp = j;
}

/*
 * A job from the definition @o a node sent (its bytes in @ev's payload,
 * kept as they came: nodes parse them), checked; NULL and *rep if not.
 */
static struct cjob *job_new(struct ctl_event *ev, const json_t *o, const char *name, json_t **rep)
{
	uint64_t n_elem = (uint64_t)json_integer_value(json_object_get(ev->hdr, "n_elem"));
	struct cjob *j = trib_calloc(1, sizeof(*j));
	const char *why = "bad job definition";
	int err;

	if (!j || !(j->body = trib_malloc(ev->plen + 1))) {
		trib_free(j);
		*rep = ctl__err_reply(500, "out of memory");
		return NULL;
	}
	memcpy(j->body, ev->payload, ev->plen);
	j->body[ev->plen] = '\0';
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->cpr = (uint32_t)json_integer_value(json_object_get(o, "clients_per_round"));
	j->fanin = (uint32_t)json_integer_value(json_object_get(o, "fan_in"));
	j->min_clients = (uint32_t)json_integer_value(json_object_get(o, "min_clients"));
	ctl__job_async(j, o);
	ctl__job_select_init(j, o); /* ctl_select.c (may set cpr) */
	j->round_timeout_s = (uint32_t)json_integer_value(json_object_get(o, "round_timeout_s"));
	/* Checked by the node that took the request (rt_job_def_parse), as every field. */
	j->num_rounds = (uint32_t)json_integer_value(json_object_get(o, "num_rounds"));
	err = ctl_model_fmt_init(&j->fmt, j->body, ev->plen, &why);
	/* The node counted the parameters with the same rule: a disagreement is a bug. */
	if (!err && (!j->cpr || j->fmt.n_elem != n_elem)) {
		why = "bad job definition";
		err = -EINVAL;
	}
	if (!err)
		err = trib_token_new(j->token, sizeof(j->token));
	if (err) {
		*rep = ctl__err_reply(err == -EINVAL ? 400 : 500,
				      err == -EINVAL ? why : "could not make the job");
		job_free(j);
		return NULL;
	}
	return j;
}

/* Record @j in the store (its id comes back); 0 or -errno. */
static int job_record(struct ctl *c, struct cjob *j)
{
	struct ctl_job cj;
	char schema[64];
	int err;

	memset(&cj, 0, sizeof(cj));
	snprintf(cj.name, sizeof(cj.name), "%s", j->name);
	snprintf(cj.token, sizeof(cj.token), "%s", j->token);
	snprintf(cj.algorithm, sizeof(cj.algorithm), "fedavg");
	cj.clients_per_round = j->cpr;
	snprintf(schema, sizeof(schema), "{\"n_elem\":%llu}", (unsigned long long)j->fmt.n_elem);
	cj.schema_json = schema;
	cj.params_json = j->body;
	err = ctl_store_job_create(c->store, &cj);
	if (!err)
		j->db_id = cj.id;
	return err;
}

void ctl__on_job_create(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	json_t *o = NULL;
	int lerr = trib_json_loadb(ev->payload, ev->plen, 0, &o, NULL);
	const char *name = json_string_value(json_object_get(o, "name"));
	int origin = ctl__node_rank(c, ctl__jstr(ev->hdr, "node", ""));
	struct cjob *j;
	json_t *m;
	int err;

	if (lerr == -ENOMEM) {
		*rep = ctl__err_reply(500, "out of memory");
		goto out;
	}
	if (!o || !name || !trib_job_name_valid(name)) {
		*rep = ctl__err_reply(400, "job definition without a valid name");
		goto out;
	}
	for (struct cjob *other = c->jobs; other; other = other->next) {
		/* Names that differ only by case are the same job's (trib_name.h). */
		if (trib_job_name_same(other->name, name)) {
			*rep = ctl__err_reply(409, "a job with this name exists (names that "
					      "differ only by case are the same)");
			goto out;
		}
	}
	j = job_new(ev, o, name, rep);
	if (!j)
		goto out;
	err = job_record(c, j);
	if (!err && ctl__job_cred_init(c, j)) {
		/* Not half made: a job without its key is not kept. */
		ctl_store_job_delete(c->store, j->name);
		err = -EIO;
	}
	if (err) {
		job_free(j);
		*rep = ctl__err_reply(err == -EEXIST ? 409 : 500, "could not record the job");
		goto out;
	}
	job_append(c, j);
	trib_info("job %s: created cluster-wide (%u clients per round, %llu parameters)", name,
		  j->cpr, (unsigned long long)j->fmt.n_elem);
	*rep = json_pack("{s:b, s:s, s:I}", "ok", 1, "token", j->token, "id", (json_int_t)j->db_id);
	if (*rep && ctl__job_cred_add(j, *rep)) {
		json_decref(*rep);
		*rep = ctl__err_reply(500, "out of memory");
	}
	m = ctl__job_msg(c, j);
	/* The creating node is told here, not by the message: where the secure rounds run too. */
	if (m && *rep && json_object_get(m, "secagg_at"))
		json_object_set(*rep, "secagg_at", json_object_get(m, "secagg_at"));
	if (m)
		ctl__tell_all(c, m, NULL, 0, origin);
	json_decref(m);
out:
	json_decref(o);
}

json_t *ctl__jobs_status(struct ctl *c)
{
	json_t *jobs = json_array();

	for (struct cjob *j = c->jobs; j; j = j->next) {
		json_t *rounds = json_array();

		for (struct cround *cr = j->rounds; cr; cr = cr->next)
			if (cr->state != CR_DONE || !cr->next || cr->round + 3 >= j->round)
				json_array_append_new(rounds, ctl__round_json(c, j, cr));
		/* "store": as a node's GET /v1/jobs/{job} says it, for the controller's writes. */
		json_t *st = trib_retry_pending(&j->store) ?
			json_pack("{s:s, s:s, s:I, s:I, s:I}", "state", "failing", "errno",
				  trib_errno_name(j->store.err), "since",
				  (json_int_t)j->store.since_unix, "retries",
				  (json_int_t)j->store.retries, "round", (json_int_t)j->store.what) :
			json_pack("{s:s}", "state", "ok");

		json_t *jo = json_pack("{s:s, s:i, s:i, s:i, s:o, s:o}", "name", j->name, "round",
				       (json_int_t)j->round, "completed", (json_int_t)j->completed,
				       "clients_per_round", (json_int_t)j->cpr, "rounds", rounds,
				       "store", st);

		if (jo && j->num_rounds)
			json_object_set_new(jo, "num_rounds", json_integer(j->num_rounds));
		ctl__select_status(c, j, jo);
		if (jo)
			json_object_set_new(jo, "state", json_string(
				j->num_rounds && j->completed >= j->num_rounds ? "done" :
				j->paused ? "paused" : "open"));
		json_array_append_new(jobs, jo);
	}
	return jobs;
}

/* A job as the store has it, and its newest model (a round in flight restarts). */
static int job_load(struct ctl *c, const struct ctl_job *cj)
{
	const char *def = cj->params_json ? cj->params_json : "";
	json_t *o = NULL;
	const char *why = "no definition recorded";
	struct cjob *j = trib_calloc(1, sizeof(*j));
	int err = -ENOMEM;

	if (!j || trib_json_loadb(def, strlen(def), 0, &o, NULL) == -ENOMEM ||
	    !(j->body = trib_strdup(def)))
		goto err_free;
	j->db_id = cj->id;
	snprintf(j->name, sizeof(j->name), "%s", cj->name);
	snprintf(j->token, sizeof(j->token), "%s", cj->token);
	j->cpr = cj->clients_per_round;
	j->fanin = (uint32_t)json_integer_value(json_object_get(o, "fan_in"));
	j->min_clients = (uint32_t)json_integer_value(json_object_get(o, "min_clients"));
	ctl__job_async(j, o);
	ctl__job_select_init(j, o); /* ctl_select.c (may set cpr) */
	j->round_timeout_s = (uint32_t)json_integer_value(json_object_get(o, "round_timeout_s"));
	j->num_rounds = (uint32_t)json_integer_value(json_object_get(o, "num_rounds"));
	err = ctl_model_fmt_init(&j->fmt, j->body, strlen(j->body), &why);
	if (err) {
		trib_error("job %s in controller.db: its definition cannot be read: %s", cj->name,
			   why);
		goto err_free;
	}
	/* The last model written decides the version (written before the round was recorded). */
	for (uint32_t v = cj->round + 1; v > 0; v--) {
		err = ctl_model_read(c->o->data_dir, j->name, &j->fmt, v, &j->model);
		if (err == -ENOENT)
			continue;
		if (err)
			goto err_free;
		j->completed = v;
		break;
	}
	if (!j->model) {
		/* Only a starting model (PUT /model) so far, or none: zeros. */
		err = ctl_model_read(c->o->data_dir, j->name, &j->fmt, 0, &j->model);
		if (err && err != -ENOENT)
			goto err_free;
	}
	if (j->model) {
		err = ctl__job_opt_load(c, j);
		if (err)
			goto err_free;
	}
	j->round = j->completed;
	ctl__job_life_load(c, j);
	err = ctl__job_cred_init(c, j);
	if (err)
		goto err_free;
	job_append(c, j);
	json_decref(o);
	trib_info("job %s: loaded at version %u", j->name, j->completed);
	return 0;

err_free:
	if (j)
		job_free(j);
	json_decref(o);
	return err;
}

int ctl__jobs_load(struct ctl *c)
{
	struct ctl_job *cjs = NULL;
	size_t n = 0;
	int err;

	err = ctl_store_job_list(c->store, &cjs, &n);
	if (err)
		trib_error("controller.db: listing the jobs: %s", strerror(-err));
	for (size_t i = 0; i < n && !err; i++)
		err = job_load(c, &cjs[i]);
	for (size_t i = 0; i < n; i++)
		ctl_job_clear(&cjs[i]);
	trib_free(cjs);
	return err;
}

struct cjob *ctl__job_by_id(struct ctl *c, int64_t id)
{
	for (struct cjob *j = c->jobs; j; j = j->next)
		if (j->db_id == id)
			return j;
	return NULL;
}

void ctl__job_unlink_free(struct ctl *c, struct cjob *j)
{
	struct cjob **pp;

	for (pp = &c->jobs; *pp && *pp != j; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = j->next;
	job_free(j);
}

void ctl__jobs_free(struct ctl *c)
{
	while (c->jobs) {
		struct cjob *j = c->jobs;

		c->jobs = j->next;
		job_free(j);
	}
}
