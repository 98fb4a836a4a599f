// SPDX-License-Identifier: MIT
/* ctl_store_opt_*: a cluster job's optimiser state per version, kept two deep, gone with the job. */
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
#include "trib_alloc.h"

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
	strcpy(tdir, "/tmp/trib-ctl-opt-XXXXXX");
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
	strcpy(j.algorithm, "fedadam");
	j.clients_per_round = 2;
	j.schema_json = (char *)"{\"w\":[4]}";
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	return j.id;
}

static void expect(int64_t job, uint32_t v, const char *want)
{
	uint8_t *got;
	size_t len;
	int err = ctl_store_opt_get(st, job, v, &got, &len);

	if (!want) {
		cr_assert_eq(err, -ENOENT, "v%u: %d", v, err);
		cr_assert_null(got);
		return;
	}
	cr_assert_eq(err, 0, "v%u: %d", v, err);
	cr_assert_eq(len, strlen(want));
	cr_assert_eq(memcmp(got, want, len), 0);
	trib_free(got);
}

TestSuite(ctl_store_opt, .init = setup, .fini = teardown);

Test(ctl_store_opt, keeps_the_newest_two_versions_per_job)
{
	int64_t a = mkjob("a"), b = mkjob("b");

	expect(a, 0, NULL);
	cr_assert_eq(ctl_store_opt_put(st, a, 1, "one", 3), 0);
	cr_assert_eq(ctl_store_opt_put(st, b, 1, "bee", 3), 0);
	cr_assert_eq(ctl_store_opt_put(st, a, 2, "two", 3), 0);
	expect(a, 1, "one"); /* kept until the model of v2 is the commit point */
	cr_assert_eq(ctl_store_opt_put(st, a, 3, "three", 5), 0);
	expect(a, 1, NULL);
	expect(a, 2, "two");
	expect(a, 3, "three");
	expect(b, 1, "bee"); /* another job's row stays */
	/* Written again (a round whose model the controller could not store at first). */
	cr_assert_eq(ctl_store_opt_put(st, a, 3, "THREE", 5), 0);
	expect(a, 3, "THREE");
	cr_assert_eq(ctl_store_opt_put(st, a, 4, "", 0), -EINVAL, "an empty state is refused");
}

Test(ctl_store_opt, survives_a_reopen_and_goes_with_its_job)
{
	int64_t a = mkjob("a");

	cr_assert_eq(ctl_store_opt_put(st, a, 5, "state5", 6), 0);
	ctl_store_close(st);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	expect(a, 5, "state5");
	cr_assert_eq(ctl_store_job_delete(st, "a"), 0);
	expect(a, 5, NULL);
}

/* A version-8 file (before the table) is migrated: the table exists after the open. */
Test(ctl_store_opt, a_version_8_file_gets_the_table)
{
	sqlite3 *raw;
	int64_t a = mkjob("a");

	ctl_store_close(st);
	st = NULL;
	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, "DROP TABLE opt_state; DROP TABLE tasks; PRAGMA user_version = 8", NULL,
				  NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(ctl_store_opt_put(st, a, 1, "m", 1), 0);
	expect(a, 1, "m");
}
