// SPDX-License-Identifier: MIT
/* ctl_store_task_*: a cluster's selection tasks, capped per round inside the store, kept. */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl_store.h"
#include "trib_select.h"

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
	strcpy(tdir, "/tmp/trib-ctl-task-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(dbpath, sizeof(dbpath), "%s/state.db", tdir);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
}

static void teardown(void)
{
	ctl_store_close(st);
	st = NULL;
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int64_t mkjob(const char *name)
{
	struct ctl_job j;

	memset(&j, 0, sizeof(j));
	snprintf(j.name, sizeof(j.name), "%s", name);
	strcpy(j.algorithm, "fedavg");
	j.clients_per_round = 2;
	j.schema_json = (char *)"{\"w\":[4]}";
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	return j.id;
}

struct seen {
	char ids[16][40];
	int n;
};

static int seen_add(void *ctx, const char *client)
{
	struct seen *s = ctx;

	if (s->n == 16)
		return -E2BIG;
	snprintf(s->ids[s->n++], sizeof(s->ids[0]), "%s", client);
	return 0;
}

static struct seen list(int64_t job, uint32_t round)
{
	struct seen s;

	memset(&s, 0, sizeof(s));
	cr_assert_eq(ctl_store_task_list(st, job, round, seen_add, &s), 0);
	return s;
}

TestSuite(ctl_store_task, .init = setup, .fini = teardown);

Test(ctl_store_task, grants_up_to_max_a_round_and_again_to_a_holder)
{
	int64_t a = mkjob("a"), b = mkjob("b");
	uint32_t n = 99;

	cr_assert_eq(ctl_store_task_grant(st, a, 0, "c1", 2, &n), 1);
	cr_assert_eq(n, 1);
	cr_assert_eq(ctl_store_task_grant(st, a, 0, "c1", 2, &n), 0, "held: not a second");
	cr_assert_eq(n, 1);
	cr_assert_eq(ctl_store_task_grant(st, a, 0, "c2", 2, &n), 1);
	cr_assert_eq(n, 2);
	cr_assert_eq(ctl_store_task_grant(st, a, 0, "c3", 2, &n), -ENOSPC);
	cr_assert_eq(n, 2);
	cr_assert_eq(ctl_store_task_grant(st, a, 0, "c2", 2, &n), 0, "a holder when full");
	/* Another job's round is its own. */
	cr_assert_eq(ctl_store_task_grant(st, b, 0, "c3", 2, &n), 1);
	cr_assert_eq(n, 1);
	struct seen s = list(a, 0);

	cr_assert_eq(s.n, 2);
	cr_assert_str_eq(s.ids[0], "c1");
	cr_assert_str_eq(s.ids[1], "c2");
	cr_assert_eq(list(b, 0).n, 1);
}

Test(ctl_store_task, a_new_round_starts_empty_and_voids_the_old_one)
{
	int64_t a = mkjob("a");
	uint32_t n;

	cr_assert_eq(ctl_store_task_grant(st, a, 3, "c1", 1, &n), 1);
	cr_assert_eq(ctl_store_task_grant(st, a, 3, "c2", 1, &n), -ENOSPC);
	cr_assert_eq(ctl_store_task_grant(st, a, 4, "c2", 1, &n), 1);
	cr_assert_eq(n, 1);
	cr_assert_eq(list(a, 3).n, 0, "round 3's tasks are gone with round 4's first");
	cr_assert_eq(list(a, 4).n, 1);
}

Test(ctl_store_task, survives_a_reopen_and_goes_with_its_job)
{
	int64_t a = mkjob("a");
	uint32_t n;

	cr_assert_eq(ctl_store_task_grant(st, a, 7, "c1", 3, &n), 1);
	cr_assert_eq(ctl_store_task_grant(st, a, 7, "c2", 3, &n), 1);
	ctl_store_close(st);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(list(a, 7).n, 2);
	/* The count holds across the reopen: one more, then full. */
	cr_assert_eq(ctl_store_task_grant(st, a, 7, "c3", 3, &n), 1);
	cr_assert_eq(ctl_store_task_grant(st, a, 7, "c4", 3, &n), -ENOSPC);
	cr_assert_eq(ctl_store_job_delete(st, "a"), 0);
	cr_assert_eq(list(a, 7).n, 0);
	cr_assert_eq(ctl_store_task_grant(st, a, 7, "c1", 3, &n), -ENOENT, "no such job");
}

Test(ctl_store_task, bad_arguments_are_refused)
{
	int64_t a = mkjob("a");
	char big[40];

	memset(big, 'x', 33);
	big[33] = '\0';
	cr_assert_eq(ctl_store_task_grant(st, a, 0, "", 2, NULL), -EINVAL);
	cr_assert_eq(ctl_store_task_grant(st, a, 0, NULL, 2, NULL), -EINVAL);
	cr_assert_eq(ctl_store_task_grant(st, a, 0, big, 2, NULL), -EINVAL);
	cr_assert_eq(ctl_store_task_grant(st, a, 0, "c", 0, NULL), -EINVAL);
	cr_assert_eq(ctl_store_task_list(st, a, 0, NULL, NULL), -EINVAL);
}

/* The controller and a single node share the rule: ceil(K x f), at least K. */
Test(ctl_store_task, the_rule_is_the_single_nodes)
{
	cr_assert_eq(trib_select_max(5, 1.4), 7);
	cr_assert_eq(trib_select_max(10, 1.3), 13);
	cr_assert_eq(trib_select_max(10, 1.31), 14);
	cr_assert_eq(trib_select_max(4, 1.0), 4);
	cr_assert_eq(trib_select_max(3, 0.5), 3);
}

/* A version-9 file (before the table) is migrated: the table exists after the open. */
Test(ctl_store_task, a_version_9_file_gets_the_table)
{
	sqlite3 *raw;
	int64_t a = mkjob("a");
	uint32_t n;

	ctl_store_close(st);
	st = NULL;
	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, "DROP TABLE tasks; PRAGMA user_version = 9", NULL, NULL,
				  NULL), SQLITE_OK);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(ctl_store_task_grant(st, a, 0, "c1", 1, &n), 1);
	cr_assert_eq(list(a, 0).n, 1);
}
