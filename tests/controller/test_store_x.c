// SPDX-License-Identifier: MIT
/* Tests for the store's cluster state (schema v3): nodes and rounds in flight, and the migration.
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
	char sql[160];
	sqlite3 *raw;

	job("old");
	ctl_store_close(st);
	st = NULL;
	/* As the build before the cluster tables (migration 3 -> 4) left it. */
	snprintf(sql, sizeof(sql),
		 "DROP TABLE cluster_nodes; DROP TABLE cluster_rounds; DROP TABLE join_tokens; "
		 "DROP TABLE node_certs; PRAGMA user_version = 3");
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
