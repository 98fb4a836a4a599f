// SPDX-License-Identifier: MIT
/* Tests of node/rt_select.c (the config's pure function, the tasks and their file) and the spec's
 * client_config and selection fields. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt_api.h"
#include "rt_node.h"
#include "rt_node_priv.h"

#define ARENA (256ull << 20)

static int parse(const char *body, bool clustered, struct rt_job_def *def, char *msg)
{
	return rt_job_def_parse((const uint8_t *)body, strlen(body), ARENA, clustered, def, msg,
				256);
}

/* The config @cc gives round @r, compared with @want (both JSON text). */
static void config_is(const char *cc, uint32_t r, const char *want)
{
	struct rt_job j;
	json_t *got, *w = json_loads(want, 0, NULL);
	char msg[256];

	memset(&j, 0, sizeof(j));
	j.sel.client_config = json_loads(cc, 0, NULL);
	cr_assert_not_null(j.sel.client_config);
	cr_assert_eq(rt_client_config_check(j.sel.client_config, msg, sizeof(msg)), 0, "%s", msg);
	got = rt_job_round_config(&j, r);
	cr_assert(json_equal(got, w), "round %u: got %s, want %s", r,
		  json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS), want);
	json_decref(got);
	json_decref(w);
	json_decref(j.sel.client_config);
}

Test(runtime_select, round_config_applies_rows_up_to_the_round)
{
	const char *cc = "{\"values\":{\"lr\":0.1,\"epochs\":1,\"opt\":\"sgd\"},"
			 "\"schedule\":[{\"from_round\":1,\"values\":{\"lr\":0.05}},"
			 "{\"from_round\":3,\"values\":{\"lr\":0.01,\"epochs\":2,\"x\":true}}]}";

	config_is(cc, 0, "{\"lr\":0.1,\"epochs\":1,\"opt\":\"sgd\"}");
	config_is(cc, 1, "{\"lr\":0.05,\"epochs\":1,\"opt\":\"sgd\"}");
	config_is(cc, 2, "{\"lr\":0.05,\"epochs\":1,\"opt\":\"sgd\"}");
	config_is(cc, 3, "{\"lr\":0.01,\"epochs\":2,\"opt\":\"sgd\",\"x\":true}");
	config_is(cc, 4000000000u, "{\"lr\":0.01,\"epochs\":2,\"opt\":\"sgd\",\"x\":true}");
	/* A schedule alone, from round 0. */
	config_is("{\"schedule\":[{\"from_round\":0,\"values\":{\"a\":1}}]}", 0, "{\"a\":1}");
	config_is("{\"schedule\":[{\"from_round\":2,\"values\":{\"a\":1}}]}", 1, "{}");
}

Test(runtime_select, no_client_config_is_null)
{
	struct rt_job j;

	memset(&j, 0, sizeof(j));
	cr_assert_null(rt_job_round_config(&j, 0));
}

static void config_refused(const char *cc, const char *field)
{
	json_t *o = json_loads(cc, 0, NULL);
	char msg[256] = "";

	cr_assert_not_null(o, "%s", cc);
	cr_assert_eq(rt_client_config_check(o, msg, sizeof(msg)), -EINVAL, "%s", cc);
	cr_assert(strstr(msg, field), "%s: '%s' does not name %s", cc, msg, field);
	json_decref(o);
}

Test(runtime_select, bad_client_configs_name_the_field)
{
	char big[10000];
	int n = snprintf(big, sizeof(big), "{\"values\":{\"s\":\"");

	config_refused("[]", "client_config");
	config_refused("{\"value\":{}}", "client_config.value");
	config_refused("{\"values\":{\"a\":{\"b\":1}}}", "client_config.values.a");
	config_refused("{\"values\":{\"a\":[1]}}", "client_config.values.a");
	config_refused("{\"values\":{\"a\":null}}", "client_config.values.a");
	config_refused("{\"schedule\":[{\"from_round\":2,\"values\":{}},"
		       "{\"from_round\":2,\"values\":{}}]}", "schedule[1].from_round");
	config_refused("{\"schedule\":[{\"from_round\":3,\"values\":{}},"
		       "{\"from_round\":1,\"values\":{}}]}", "strictly increasing");
	config_refused("{\"schedule\":[{\"from_round\":-1,\"values\":{}}]}",
		       "schedule[0].from_round");
	config_refused("{\"schedule\":[{\"from_round\":0}]}", "schedule[0]");
	config_refused("{\"schedule\":[{\"from_round\":0,\"values\":{\"a\":{}}}]}",
		       "schedule[0].values.a");
	/* A string over 256 bytes, then a whole config over 8 KiB. */
	memset(big + n, 'x', 300);
	snprintf(big + n + 300, sizeof(big) - (size_t)n - 300, "\"}}");
	config_refused(big, "client_config.values.s");
	n = snprintf(big, sizeof(big), "{\"values\":{");
	for (int i = 0; i < 32; i++)
		n += snprintf(big + n, sizeof(big) - (size_t)n, "%s\"k%d\":\"%0250d\"", i ? "," : "",
			      i, 0);
	snprintf(big + n, sizeof(big) - (size_t)n, "}}");
	config_refused(big, "bytes of JSON");
	n = snprintf(big, sizeof(big), "{\"values\":{");
	for (int i = 0; i < 33; i++)
		n += snprintf(big + n, sizeof(big) - (size_t)n, "%s\"k%d\":1", i ? "," : "", i);
	snprintf(big + n, sizeof(big) - (size_t)n, "}}");
	config_refused(big, "33 keys");
}

Test(runtime_select, max_tasks_is_the_ceiling)
{
	cr_assert_eq(rt_select_max(5, 1.4), 7);
	cr_assert_eq(rt_select_max(5, 1.0), 5);
	cr_assert_eq(rt_select_max(10, 1.3), 13);
	cr_assert_eq(rt_select_max(10, 1.31), 14);
	cr_assert_eq(rt_select_max(3, 4.0), 12);
	cr_assert_eq(rt_select_max(1, 1.01), 2);
}

Test(runtime_select, spec_selection_sets_clients_per_round)
{
	struct rt_job_def def;
	char msg[256];

	cr_assert_eq(parse("{\"name\":\"s\",\"params\":4,\"client_auth\":\"required\","
			   "\"selection\":{\"per_round\":5,\"overcommit\":1.4}}", false, &def, msg),
		     200, "%s", msg);
	cr_assert_eq(def.spec.cpr, 5);
	cr_assert_eq(def.spec.sel_per_round, 5);
	cr_assert_float_eq(def.spec.sel_overcommit, 1.4, 1e-12);
	rt_job_def_free(&def);
	cr_assert_eq(parse("{\"name\":\"s\",\"params\":4,\"client_auth\":\"required\","
			   "\"clients_per_round\":3,\"selection\":{\"per_round\":3}}", false, &def,
			   msg), 200, "%s", msg);
	cr_assert_float_eq(def.spec.sel_overcommit, 1.0, 1e-12);
	rt_job_def_free(&def);
}

static void spec_refused(const char *body, bool clustered, const char *field)
{
	struct rt_job_def def;
	char msg[256] = "";

	cr_assert_eq(parse(body, clustered, &def, msg), 400, "%s", body);
	cr_assert(strstr(msg, field), "%s: '%s' does not name %s", body, msg, field);
}

#define REQ "\"name\":\"s\",\"params\":4,\"client_auth\":\"required\","

Test(runtime_select, bad_selections_name_the_field)
{
	spec_refused("{" REQ "\"selection\":{\"per_round\":5,\"overcommit\":0.5}}", false,
		     "selection.overcommit");
	spec_refused("{" REQ "\"selection\":{\"per_round\":5,\"overcommit\":5}}", false,
		     "selection.overcommit");
	spec_refused("{" REQ "\"selection\":{\"per_round\":0}}", false, "selection.per_round");
	spec_refused("{" REQ "\"selection\":{\"per_round\":2.5}}", false, "selection.per_round");
	spec_refused("{" REQ "\"selection\":{}}", false, "selection.per_round");
	spec_refused("{" REQ "\"selection\":{\"per_round\":2,\"k\":1}}", false, "selection.k");
	spec_refused("{" REQ "\"selection\":5}", false, "selection");
	spec_refused("{" REQ "\"clients_per_round\":4,\"selection\":{\"per_round\":5}}", false,
		     "clients_per_round");
	spec_refused("{\"name\":\"s\",\"params\":4,\"selection\":{\"per_round\":5}}", false,
		     "client_auth");
	spec_refused("{" REQ "\"algorithm\":\"fedbuff\",\"buffer_size\":5,"
		     "\"selection\":{\"per_round\":5}}", false, "fedbuff");
	/* A cluster refuses what a single node refuses, with the same words. */
	spec_refused("{" REQ "\"selection\":{\"per_round\":5,\"overcommit\":0.5}}", true,
		     "selection.overcommit");
	spec_refused("{\"name\":\"s\",\"params\":4,\"selection\":{\"per_round\":5}}", true,
		     "client_auth");
	spec_refused("{" REQ "\"clients_per_round\":4,\"client_config\":{\"values\":{\"a\":{}}}}",
		     false, "client_config.values.a");
}

/* The controller counts a cluster's tasks (controller/ctl_select.c): the spec is the same. */
Test(runtime_select, selection_is_allowed_in_a_cluster)
{
	struct rt_job_def def;
	char msg[256];

	cr_assert_eq(parse("{" REQ "\"selection\":{\"per_round\":5,\"overcommit\":1.3}}", true,
			   &def, msg), 200, "%s", msg);
	cr_assert_eq(def.spec.cpr, 5);
	cr_assert_eq(def.spec.sel_per_round, 5);
	cr_assert_float_eq(def.spec.sel_overcommit, 1.3, 1e-12);
	rt_job_def_free(&def);
}

Test(runtime_select, client_config_is_allowed_in_a_cluster)
{
	struct rt_job_def def;
	char msg[256];

	cr_assert_eq(parse("{\"name\":\"s\",\"params\":4,\"clients_per_round\":2,"
			   "\"client_config\":{\"values\":{\"lr\":0.1}}}", true, &def, msg), 200,
		     "%s", msg);
	cr_assert_not_null(def.spec.client_config);
	rt_job_def_free(&def);
}

/* --- tasks: handed out once, kept in DATA_DIR/jobs/{job}/tasks, read back after a restart --- */

struct tasks_env {
	char dir[64];
	struct rt_node n;
};

static void env_open(struct tasks_env *e)
{
	char p[128];

	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "/tmp/trib-select-XXXXXX");
	cr_assert_not_null(mkdtemp(e->dir));
	snprintf(p, sizeof(p), "%s/jobs", e->dir);
	cr_assert_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/jobs/x", e->dir);
	cr_assert_eq(mkdir(p, 0700), 0);
	e->n.opts.data_dir = e->dir;
}

static void env_close(struct tasks_env *e)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
	cr_assert_eq(system(cmd), 0);
}

/* A job "x" (store id @db_id) at @round selecting 2 a round with overcommit 1.5 (3 tasks). */
static void job_init(struct rt_job *j, int64_t db_id, uint32_t round)
{
	struct rt_job_spec spec = { .sel_per_round = 2, .sel_overcommit = 1.5 };

	memset(j, 0, sizeof(*j));
	snprintf(j->name, sizeof(j->name), "x");
	j->db_id = db_id;
	j->round = round;
	cr_assert_eq(rt__select_init(j, &spec), 0);
	cr_assert_eq(j->sel.max, 3);
}

static bool grant(struct tasks_env *e, struct rt_job *j, const char *id)
{
	bool g = false;

	cr_assert_eq(rt_select_task(&e->n, j, id, &g), 0);
	return g;
}

Test(runtime_select, tasks_are_capped_idempotent_and_survive_a_restart)
{
	struct tasks_env e;
	struct rt_job j, k;
	char p[160];
	int fd;

	env_open(&e);
	job_init(&j, 7, 4);
	cr_assert(grant(&e, &j, "a") && grant(&e, &j, "b") && grant(&e, &j, "c"));
	cr_assert_not(grant(&e, &j, "d"), "a fourth task of 3");
	cr_assert(grant(&e, &j, "b"), "the same client again: its task");
	cr_assert_eq(rt_select_tasks_out(&j), 3);
	cr_assert(rt_select_has_task(&j, "a", 4) && !rt_select_has_task(&j, "d", 4));
	cr_assert_not(rt_select_has_task(&j, "a", 3), "another round's");
	/* A torn last line (a crash mid-write) was never answered: not read back. */
	snprintf(p, sizeof(p), "%s/jobs/x/tasks", e.dir);
	fd = open(p, O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "zz", 2), 2);
	close(fd);
	/* The restart: the same job and round read its three tasks back. */
	job_init(&k, 7, 4);
	rt__select_tasks_load(&e.n, &k);
	cr_assert_eq(rt_select_tasks_out(&k), 3);
	cr_assert(rt_select_has_task(&k, "a", 4) && rt_select_has_task(&k, "c", 4));
	cr_assert_not(rt_select_has_task(&k, "zz", 4));
	cr_assert_not(grant(&e, &k, "d"), "still full after the restart");
	rt__select_free(&k);
	/* Another job of that name (another store id), or a later round: none of them. */
	job_init(&k, 8, 4);
	rt__select_tasks_load(&e.n, &k);
	cr_assert_eq(rt_select_tasks_out(&k), 0);
	rt__select_free(&k);
	job_init(&k, 7, 5);
	rt__select_tasks_load(&e.n, &k);
	cr_assert_eq(rt_select_tasks_out(&k), 0);
	rt__select_free(&k);
	/* The next round: three new tasks, the old ones void, the file rewritten for it. */
	j.round = 5;
	cr_assert_eq(rt_select_tasks_out(&j), 0);
	cr_assert(grant(&e, &j, "d") && grant(&e, &j, "e"));
	cr_assert_not(rt_select_has_task(&j, "a", 5));
	job_init(&k, 7, 5);
	rt__select_tasks_load(&e.n, &k);
	cr_assert_eq(rt_select_tasks_out(&k), 2);
	cr_assert(rt_select_has_task(&k, "d", 5) && !rt_select_has_task(&k, "a", 5));
	rt__select_free(&k);
	/* Not a client id: refused, nothing written. */
	cr_assert_eq(rt_select_task(&e.n, &j, "no\nline", &(bool){ false }), -EINVAL);
	rt__select_free(&j);
	env_close(&e);
}
