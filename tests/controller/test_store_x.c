// SPDX-License-Identifier: MIT
/*
 * Tests for the store's cluster state: nodes and rounds in flight (schema v4), their clients
 * (v5), and the migrations to them.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "ctl_store.h"

static char tdir[64];
static char dbpath[PATH_MAX];
static struct ctl_store *st;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	strcpy(tdir, "/tmp/trib-ctl-store-x-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(dbpath, sizeof(dbpath), "%s/controller.db", tdir);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
}

static void teardown(void)
{
	ctl_store_close(st);
	st = NULL;
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void reopen(void)
{
	ctl_store_close(st);
	st = NULL;
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
}

struct seen {
	char text[512];
	int stop_at; /* a callback returns -ECANCELED on this row (1-based), 0: never */
	int rows;
};

static int node_row(void *ctx, uint32_t rank, const char *name, const char *addr, uint32_t epoch)
{
	struct seen *s = ctx;
	size_t len = strlen(s->text);

	snprintf(s->text + len, sizeof(s->text) - len, "%u:%s:%s:%u;", rank, name, addr, epoch);
	return ++s->rows == s->stop_at ? -ECANCELED : 0;
}

static int round_row(void *ctx, int64_t job, uint32_t round, int state, const char *detail)
{
	struct seen *s = ctx;
	size_t len = strlen(s->text);

	snprintf(s->text + len, sizeof(s->text) - len, "%lld/%u:%d:%s;", (long long)job, round,
		 state, detail);
	return ++s->rows == s->stop_at ? -ECANCELED : 0;
}

static int64_t job(const char *name)
{
	struct ctl_job j;

	memset(&j, 0, sizeof(j));
	snprintf(j.name, sizeof(j.name), "%s", name);
	strcpy(j.algorithm, "fedavg");
	j.clients_per_round = 4;
	j.schema_json = (char *)"{\"n_elem\":4}";
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	return j.id;
}

TestSuite(ctl_store_x, .init = setup, .fini = teardown);

Test(ctl_store_x, nodes_and_rounds_survive_a_reopen)
{
	int64_t a = job("a"), b = job("b");
	struct seen s = {0};

	cr_assert_eq(ctl_store_xnode_put(st, 1, "n1", "tcp://10.0.0.2:7071", 3), 0);
	cr_assert_eq(ctl_store_xnode_put(st, 0, "n0", "tcp://10.0.0.1:7071", 1), 0);
	/* A new run of rank 0: replaced, not added. */
	cr_assert_eq(ctl_store_xnode_put(st, 0, "n0", "tcp://10.0.0.1:7071", 4), 0);
	cr_assert_eq(ctl_store_xround_put(st, b, 2, 1, "{\"count\":3}"), 0);
	cr_assert_eq(ctl_store_xround_put(st, a, 5, 0, "{\"count\":1}"), 0);
	cr_assert_eq(ctl_store_xround_put(st, a, 5, 1, "{\"count\":2}"), 0);
	cr_assert_eq(ctl_store_xround_put(st, a, 6, 0, "{}"), 0);
	cr_assert_eq(ctl_store_xround_delete(st, a, 6), 0);
	cr_assert_eq(ctl_store_xround_delete(st, a, 7), 0, "deleting nothing is no error");
	cr_assert_eq(ctl_store_xround_put(st, a, 1, 0, "{}"), 0);
	cr_assert_eq(ctl_store_xround_put(st, a, 4, 0, "{}"), 0);
	cr_assert_eq(ctl_store_xround_prune(st, a, 5), 0);
	reopen();
	cr_assert_eq(ctl_store_xnode_list(st, node_row, &s), 0);
	cr_assert_str_eq(s.text, "0:n0:tcp://10.0.0.1:7071:4;1:n1:tcp://10.0.0.2:7071:3;");
	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_xround_list(st, round_row, &s), 0);
	char want[128];

	snprintf(want, sizeof(want), "%lld/5:1:{\"count\":2};%lld/2:1:{\"count\":3};", (long long)a,
		 (long long)b);
	cr_assert_str_eq(s.text, want, "in (job, round) order: %s", s.text);
}

Test(ctl_store_x, a_callback_stops_the_list)
{
	struct seen s = {.stop_at = 1};

	cr_assert_eq(ctl_store_xnode_put(st, 0, "n0", "a", 1), 0);
	cr_assert_eq(ctl_store_xnode_put(st, 1, "n1", "b", 2), 0);
	cr_assert_eq(ctl_store_xnode_list(st, node_row, &s), -ECANCELED);
	cr_assert_eq(s.rows, 1);
	/* One row per rank and per name: a put replaces either. */
	cr_assert_eq(ctl_store_xnode_put(st, 2, "n1", "c", 3), 0);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_xnode_list(st, node_row, &s), 0);
	cr_assert_str_eq(s.text, "0:n0:a:1;2:n1:c:3;");
}

Test(ctl_store_x, bad_arguments)
{
	cr_assert_eq(ctl_store_xnode_put(st, 0, NULL, "a", 1), -EINVAL);
	cr_assert_eq(ctl_store_xround_put(st, 1, 0, 0, NULL), -EINVAL);
	cr_assert_eq(ctl_store_xnode_list(st, NULL, NULL), -EINVAL);
	cr_assert_eq(ctl_store_xround_list(NULL, round_row, NULL), -EINVAL);
}

Test(ctl_store_x, an_older_file_is_migrated)
{
	struct seen s = {0};
	struct ctl_job got;
	char sql[512];
	sqlite3 *raw;

	job("old");
	ctl_store_close(st);
	st = NULL;
	/* As the build before the cluster tables (schema v3) left it: later schemas undone too. */
	snprintf(sql, sizeof(sql),
		 "DROP TABLE evaluations; DROP TABLE eval_versions; "
		 "ALTER TABLE rounds DROP COLUMN opened_at; ALTER TABLE rounds DROP COLUMN closed_at; "
		 "ALTER TABLE rounds DROP COLUMN bytes; "
		 "ALTER TABLE rounds DROP COLUMN metrics_updates; "
		 "ALTER TABLE rounds DROP COLUMN metrics; "
		 "DROP TABLE cluster_nodes; DROP TABLE cluster_rounds; "
		 "DROP TABLE cluster_round_clients; DROP TABLE join_tokens; DROP TABLE node_certs; "
		 "DROP TABLE fedau_clients; DROP TABLE opt_state; DROP TABLE tasks; "
		 "PRAGMA user_version = %d", 3);
	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(ctl_store_job_get(st, "old", &got), 0, "its jobs stay");
	ctl_job_clear(&got);
	cr_assert_eq(ctl_store_xnode_list(st, node_row, &s), 0);
	cr_assert_eq(s.rows, 0);
	cr_assert_eq(ctl_store_xnode_put(st, 0, "n0", "a", 1), 0);
}

static int client_row(void *ctx, int64_t job, uint32_t round, const char *client, uint32_t rank)
{
	struct seen *s = ctx;
	size_t len = strlen(s->text);

	snprintf(s->text + len, sizeof(s->text) - len, "%lld/%u:%s@%u;", (long long)job, round,
		 client, rank);
	return ++s->rows == s->stop_at ? -ECANCELED : 0;
}

Test(ctl_store_x, a_rounds_clients_survive_a_reopen_and_go_with_it)
{
	int64_t a = job("a");
	const char *ids[] = {"site-2", "site-1", "site-3"};
	uint32_t ranks[] = {1, 0, 2};
	struct seen s = {0};
	char want[256];

	cr_assert_eq(ctl_store_xround_put(st, a, 3, 0, "{}"), 0);
	cr_assert_eq(ctl_store_xround_clients_put(st, a, 3, ids, ranks, 2), 0);
	/* A put replaces the round's set (a client dropped when its node was lost goes). */
	cr_assert_eq(ctl_store_xround_clients_put(st, a, 3, ids + 1, ranks + 1, 2), 0);
	cr_assert_eq(ctl_store_xround_put(st, a, 4, 0, "{}"), 0);
	cr_assert_eq(ctl_store_xround_clients_put(st, a, 4, ids, ranks, 1), 0);
	reopen();
	cr_assert_eq(ctl_store_xround_clients_list(st, client_row, &s), 0);
	snprintf(want, sizeof(want), "%lld/3:site-1@0;%lld/3:site-3@2;%lld/4:site-2@1;",
		 (long long)a, (long long)a, (long long)a);
	cr_assert_str_eq(s.text, want);
	/* The round's model is written: its row and its clients go together. */
	cr_assert_eq(ctl_store_xround_delete(st, a, 3), 0);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_xround_clients_list(st, client_row, &s), 0);
	snprintf(want, sizeof(want), "%lld/4:site-2@1;", (long long)a);
	cr_assert_str_eq(s.text, want);
	cr_assert_eq(ctl_store_xround_prune(st, a, 5), 0);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_xround_clients_list(st, client_row, &s), 0);
	cr_assert_eq(s.rows, 0);
	/* An empty set clears; an empty id is refused, and nothing of the put is kept. */
	cr_assert_eq(ctl_store_xround_clients_put(st, a, 6, ids, ranks, 1), 0);
	cr_assert_eq(ctl_store_xround_clients_put(st, a, 6, NULL, NULL, 0), 0);
	ids[1] = "";
	cr_assert_eq(ctl_store_xround_clients_put(st, a, 7, ids, ranks, 2), -EINVAL);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_xround_clients_list(st, client_row, &s), 0);
	cr_assert_eq(s.rows, 0, "%s", s.text);
	cr_assert_eq(ctl_store_xround_clients_put(st, a, 7, NULL, ranks, 1), -EINVAL);
}

Test(ctl_store_x, a_schema_4_file_is_migrated_keeping_its_rounds)
{
	struct seen s = {0};
	int64_t a = job("v4");
	const char *ids[] = {"c1"};
	uint32_t ranks[] = {2};
	char want[128];
	sqlite3 *raw;
	sqlite3_stmt *q;

	cr_assert_eq(ctl_store_xnode_put(st, 0, "n0", "tcp://x:1", 2), 0);
	cr_assert_eq(ctl_store_xround_put(st, a, 1, 0, "{\"count\":7}"), 0);
	ctl_store_close(st);
	st = NULL;
	/* As the last build (schema v4) left a controller's data dir. */
	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw,
				  "DROP TABLE evaluations; DROP TABLE eval_versions; "
				  "ALTER TABLE rounds DROP COLUMN opened_at; "
				  "ALTER TABLE rounds DROP COLUMN closed_at; "
				  "ALTER TABLE rounds DROP COLUMN bytes; "
				  "ALTER TABLE rounds DROP COLUMN metrics_updates; "
				  "ALTER TABLE rounds DROP COLUMN metrics; "
				  "DROP TABLE cluster_round_clients; DROP TABLE join_tokens; "
				  "DROP TABLE node_certs; DROP TABLE fedau_clients; DROP TABLE opt_state; DROP TABLE tasks; "
				  "PRAGMA user_version = 4",
				  NULL, NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(ctl_store_xround_list(st, round_row, &s), 0);
	snprintf(want, sizeof(want), "%lld/1:0:{\"count\":7};", (long long)a);
	cr_assert_str_eq(s.text, want, "its rounds in flight stay");
	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_xnode_list(st, node_row, &s), 0);
	cr_assert_str_eq(s.text, "0:n0:tcp://x:1:2;");
	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_xround_clients_list(st, client_row, &s), 0);
	cr_assert_eq(s.rows, 0);
	cr_assert_eq(ctl_store_xround_clients_put(st, a, 1, ids, ranks, 1), 0);
	ctl_store_close(st);
	st = NULL;
	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(raw, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
	cr_assert_eq(sqlite3_column_int(q, 0), CTL_STORE_SCHEMA_VERSION);
	sqlite3_finalize(q);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_xround_clients_list(st, client_row, &s), 0);
	snprintf(want, sizeof(want), "%lld/1:c1@2;", (long long)a);
	cr_assert_str_eq(s.text, want);
}
