// SPDX-License-Identifier: MIT
/* Tests for schema 7: FedAU's per-client rows (put, replace, evict, list, go with the job). */
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
#include "trib_alloc.h"

static char tdir[64];
static char dbpath[PATH_MAX];
static struct ctl_store *st;
static int64_t jid;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	struct ctl_job j;

	strcpy(tdir, "/tmp/trib-ctl-store-fedau-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(dbpath, sizeof(dbpath), "%s/controller.db", tdir);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	memset(&j, 0, sizeof(j));
	strcpy(j.name, "au");
	strcpy(j.algorithm, "fedau");
	j.clients_per_round = 2;
	j.schema_json = (char *)"[]";
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	jid = j.id;
}

static void teardown(void)
{
	ctl_store_close(st);
	st = NULL;
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(ctl_store_fedau, .init = setup, .fini = teardown);

static struct ctl_fedau_row row(const char *id, int64_t last, uint32_t m, uint64_t total)
{
	struct ctl_fedau_row r;

	memset(&r, 0, sizeof(r));
	snprintf(r.client, sizeof(r.client), "%s", id);
	r.last_round = last;
	r.intervals = m;
	r.total = total;
	return r;
}

Test(ctl_store_fedau, rows_survive_a_reopen_replace_and_evict)
{
	struct ctl_fedau_row in[3] = { row("b", 4, 2, 7), row("a", 9, 5, 11), row("c", 0, 1, 1) };
	struct ctl_fedau_row more[1] = { row("a", 12, 6, 14) };
	const char *gone[1] = { "c" };
	struct ctl_fedau_row *out = NULL;
	size_t n = 0;

	cr_assert_eq(ctl_store_fedau_put(st, jid, in, 3, NULL, 0), 0);
	cr_assert_eq(ctl_store_fedau_put(st, jid, more, 1, gone, 1), 0);
	ctl_store_close(st);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(ctl_store_fedau_list(st, jid, &out, &n), 0);
	cr_assert_eq(n, 2, "c evicted");
	cr_assert_str_eq(out[0].client, "a");
	cr_assert(out[0].last_round == 12 && out[0].intervals == 6 && out[0].total == 14);
	cr_assert_str_eq(out[1].client, "b");
	cr_assert(out[1].last_round == 4 && out[1].intervals == 2 && out[1].total == 7);
	trib_free(out);
	/* The rows go with their job. */
	cr_assert_eq(ctl_store_job_delete(st, "au"), 0);
	cr_assert_eq(ctl_store_fedau_list(st, jid, &out, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(out);
	/* A job that does not exist has no rows to keep. */
	cr_assert_eq(ctl_store_fedau_put(st, jid, in, 1, NULL, 0), -ENOENT);
}

Test(ctl_store_fedau, a_schema_7_file_is_migrated)
{
	sqlite3 *raw;
	struct ctl_fedau_row in[1] = { row("x", 3, 1, 4) };
	struct ctl_fedau_row *out = NULL;
	size_t n = 0;

	ctl_store_close(st);
	st = NULL;
	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, "DROP TABLE fedau_clients; DROP TABLE opt_state; DROP TABLE tasks; PRAGMA user_version = 7", NULL,
				  NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(ctl_store_fedau_put(st, jid, in, 1, NULL, 0), 0);
	cr_assert_eq(ctl_store_fedau_list(st, jid, &out, &n), 0);
	cr_assert_eq(n, 1);
	trib_free(out);
}
