// SPDX-License-Identifier: MIT
/*
 * ctl_select.c: the controller's tasks of a selecting job (op "task") and an update's check,
 * on a real store: the cap, asking again, the wait cases, and a "restart" (memory gone, the
 * store's rows read back).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl_daemon.h"
#include "ctl_store.h"
#include "trib_alloc.h"

static char tdir[64];
static char dbpath[PATH_MAX];
static struct ctl c;
static struct cjob *job;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* A job as the controller holds it, from @def (a node's checked definition). */
static struct cjob *job_make(const char *def)
{
	struct cjob *j = trib_calloc(1, sizeof(*j));
	json_t *o = json_loads(def, 0, NULL);
	struct ctl_job cj;

	cr_assert_not_null(j);
	cr_assert_not_null(o);
	snprintf(j->name, sizeof(j->name), "%s", json_string_value(json_object_get(o, "name")));
	j->cpr = (uint32_t)json_integer_value(json_object_get(o, "clients_per_round"));
	ctl__job_select_init(j, o);
	json_decref(o);
	memset(&cj, 0, sizeof(cj));
	snprintf(cj.name, sizeof(cj.name), "%s", j->name);
	strcpy(cj.algorithm, "fedavg");
	cj.clients_per_round = j->cpr ? j->cpr : 1;
	cj.schema_json = (char *)"{\"n_elem\":4}";
	if (ctl_store_job_create(c.store, &cj) == -EEXIST) {
		struct ctl_job got;

		cr_assert_eq(ctl_store_job_get(c.store, j->name, &got), 0);
		cj.id = got.id;
		ctl_job_clear(&got);
	}
	j->db_id = cj.id;
	j->next = c.jobs;
	c.jobs = j;
	return j;
}

static void jobs_free(void)
{
	while (c.jobs) {
		struct cjob *j = c.jobs;

		c.jobs = j->next;
		ctl__job_select_fini(j);
		trib_free(j);
	}
}

static void setup(void)
{
	static struct ctl_cluster_opts o;

	memset(&c, 0, sizeof(c));
	c.o = &o;
	strcpy(tdir, "/tmp/trib-ctl-sel-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(dbpath, sizeof(dbpath), "%s/controller.db", tdir);
	cr_assert_eq(ctl_store_open(dbpath, &c.store), 0);
	job = job_make("{\"name\":\"s\",\"params\":4,\"client_auth\":\"required\","
		       "\"selection\":{\"per_round\":5,\"overcommit\":1.4}}");
}

static void teardown(void)
{
	jobs_free();
	ctl_store_close(c.store);
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* op "task" for @client of job @name: the reply (owned by the caller). */
static json_t *ask(const char *name, const char *client)
{
	struct ctl_event ev;
	json_t *rep = NULL;

	memset(&ev, 0, sizeof(ev));
	ev.hdr = json_pack("{s:s, s:s, s:s}", "op", "task", "job", name, "client", client);
	ctl__on_task(&c, &ev, &rep);
	json_decref(ev.hdr);
	cr_assert_not_null(rep);
	return rep;
}

static const char *action(const char *client)
{
	static char out[16];
	json_t *r = ask("s", client);

	cr_assert(json_is_true(json_object_get(r, "ok")), "%s", json_dumps(r, 0));
	snprintf(out, sizeof(out), "%s", json_string_value(json_object_get(r, "action")));
	json_decref(r);
	return out;
}

static int status_of(json_t *r)
{
	int st = (int)json_integer_value(json_object_get(r, "status"));

	json_decref(r);
	return st;
}

static bool refused(const char *client, uint32_t round, int *status)
{
	json_t *rep = NULL;
	bool no = ctl__task_refused(&c, job, round, client, &rep);

	*status = rep ? (int)json_integer_value(json_object_get(rep, "status")) : 0;
	if (rep)
		cr_assert(strstr(json_string_value(json_object_get(rep, "error")), "no task for round"));
	json_decref(rep);
	return no;
}

TestSuite(ctl_select, .init = setup, .fini = teardown);

Test(ctl_select, per_round_is_the_cpr_and_the_cap_is_the_ceiling)
{
	cr_assert_eq(job->sel_k, 5);
	cr_assert_eq(job->cpr, 5, "no clients_per_round: per_round");
	cr_assert_eq(job->sel_max, 7);
	struct cjob *plain = job_make("{\"name\":\"p\",\"params\":4,\"clients_per_round\":3}");

	cr_assert_eq(plain->sel_k, 0);
	cr_assert_eq(plain->cpr, 3);
	cr_assert_eq(status_of(ask("p", "c1")), 400, "no selection: the node answers");
	cr_assert_eq(status_of(ask("nope", "c1")), 404);
	cr_assert_eq(status_of(ask("s", "not a client id!")), 400);
}

Test(ctl_select, seven_tasks_for_ten_clients_and_the_same_again)
{
	char id[8];
	int trained = 0, st;

	for (int i = 0; i < 10; i++) {
		snprintf(id, sizeof(id), "c%d", i);
		trained += !strcmp(action(id), "train");
	}
	cr_assert_eq(trained, 7);
	cr_assert_str_eq(action("c0"), "train", "asked again: the same task");
	cr_assert_str_eq(action("c9"), "wait");
	json_t *r = ask("s", "c3");

	cr_assert_eq(json_integer_value(json_object_get(r, "round")), 0);
	cr_assert_eq(json_integer_value(json_object_get(r, "tasks_out")), 7);
	json_decref(r);
	/* An update: a holder of round 0 passes; others, and the job token, get 409. */
	cr_assert_not(refused("c6", 0, &st));
	cr_assert(refused("c7", 0, &st));
	cr_assert_eq(st, 409);
	cr_assert(refused(NULL, 0, &st));
	cr_assert_eq(st, 409);
}

Test(ctl_select, a_restart_reads_the_tasks_back_and_grants_no_more)
{
	char id[8];
	int st;

	for (int i = 0; i < 7; i++) {
		snprintf(id, sizeof(id), "c%d", i);
		cr_assert_str_eq(action(id), "train");
	}
	/* The controller's memory is gone; its store is not. */
	ctl_store_close(c.store);
	jobs_free();
	cr_assert_eq(ctl_store_open(dbpath, &c.store), 0);
	job = job_make("{\"name\":\"s\",\"params\":4,\"client_auth\":\"required\","
		       "\"selection\":{\"per_round\":5,\"overcommit\":1.4}}");
	cr_assert(refused("c8", 0, &st), "an update without a task after the restart");
	cr_assert_not(refused("c2", 0, &st), "a task from before the restart");
	cr_assert_str_eq(action("c9"), "wait", "no second batch");
	cr_assert_str_eq(action("c4"), "train");
}

Test(ctl_select, wait_while_paused_between_close_and_model_and_done_after)
{
	job->paused = true;
	cr_assert_str_eq(action("c1"), "wait");
	job->paused = false;
	job->round = 1; /* round 0 closed, its model not yet written */
	cr_assert_str_eq(action("c1"), "wait");
	job->completed = 1;
	cr_assert_str_eq(action("c1"), "train");
	json_t *r = ask("s", "c1");

	cr_assert_eq(json_integer_value(json_object_get(r, "round")), 1);
	json_decref(r);
	job->num_rounds = 2;
	job->round = 2;
	cr_assert_str_eq(action("c1"), "wait", "the last round closed: its model comes");
	job->completed = 2;
	cr_assert_str_eq(action("c1"), "done");
}
