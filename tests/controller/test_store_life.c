// SPDX-License-Identifier: MIT
/* ctl_store_job_remove: a job's row and its kv rows go together; the name is free after. */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
	strcpy(tdir, "/tmp/trib-ctl-life-XXXXXX");
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

TestSuite(ctl_store_life, .init = setup, .fini = teardown);

Test(ctl_store_life, removes_the_job_and_only_its_kv_rows)
{
	int64_t a = mkjob("a"), b = mkjob("b");
	char ka[64], kb[64], pa[64], val[8];
	struct ctl_job got;

	snprintf(ka, sizeof(ka), "job.%lld.paused", (long long)a);
	snprintf(kb, sizeof(kb), "job.%lld.paused", (long long)b);
	snprintf(pa, sizeof(pa), "job.%lld.", (long long)a);
	cr_assert_eq(ctl_store_kv_set(st, ka, "1"), 0);
	cr_assert_eq(ctl_store_kv_set(st, kb, "1"), 0);
	cr_assert_eq(ctl_store_kv_set(st, "admin", "x"), 0);

	cr_assert_eq(ctl_store_job_remove(st, "a", pa), 0);
	cr_assert_eq(ctl_store_job_get(st, "a", &got), -ENOENT);
	cr_assert_eq(ctl_store_kv_get(st, ka, val, sizeof(val)), -ENOENT);
	cr_assert_eq(ctl_store_kv_get(st, kb, val, sizeof(val)), 0, "another job's row stays");
	cr_assert_eq(ctl_store_kv_get(st, "admin", val, sizeof(val)), 0);
	cr_assert_eq(ctl_store_job_get(st, "b", &got), 0);
	ctl_job_clear(&got);

	/* Gone: a second removal says so and changes nothing. */
	cr_assert_eq(ctl_store_job_remove(st, "a", pa), -ENOENT);
	/* The name is free, under a new id (AUTOINCREMENT: the old one is never handed out). */
	cr_assert_gt(mkjob("a"), b);
}

Test(ctl_store_life, a_missing_job_rolls_back_the_kv_delete)
{
	int64_t a = mkjob("a");
	char ka[64], pa[64], val[8];

	snprintf(ka, sizeof(ka), "job.%lld.paused", (long long)a);
	snprintf(pa, sizeof(pa), "job.%lld.", (long long)a);
	cr_assert_eq(ctl_store_kv_set(st, ka, "1"), 0);
	cr_assert_eq(ctl_store_job_remove(st, "nope", pa), -ENOENT);
	cr_assert_eq(ctl_store_kv_get(st, ka, val, sizeof(val)), 0, "rolled back with the job");
	/* Wildcards in the prefix are refused, not matched. */
	cr_assert_eq(ctl_store_job_remove(st, "a", "job.%"), -EINVAL);
	cr_assert_eq(ctl_store_job_remove(st, "a", "job_1."), -EINVAL);
	cr_assert_eq(ctl_store_kv_get(st, ka, val, sizeof(val)), 0);
}
