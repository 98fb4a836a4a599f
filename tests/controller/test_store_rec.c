// SPDX-License-Identifier: MIT
/* Tests for schema 5: round records' new columns, evaluations, and the migration to it. */
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
#include "ctl_store_rec.h"
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

	strcpy(tdir, "/tmp/trib-ctl-store-rec-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(dbpath, sizeof(dbpath), "%s/controller.db", tdir);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	memset(&j, 0, sizeof(j));
	strcpy(j.name, "rec");
	strcpy(j.algorithm, "fedavg");
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

TestSuite(ctl_store_rec, .init = setup, .fini = teardown);

struct rows {
	int n;
	struct ctl_round_rec r[4];
	char metrics[4][64];
};

static int row(void *ctx, const struct ctl_round_rec *r)
{
	struct rows *p = ctx;

	p->r[p->n] = *r;
	snprintf(p->metrics[p->n], sizeof(p->metrics[0]), "%s",
		 r->metrics_json ? r->metrics_json : "(null)");
	p->n++;
	return 0;
}

static void record(uint32_t round)
{
	struct ctl_round r = { .job_id = jid, .round = round, .closed_unix = 1000 + round,
			       .n_updates = 2, .total_weight = 5, .duration_ms = 1500, .clients = 2 };

	cr_assert_eq(ctl_store_round_record(st, &r), 0);
}

Test(ctl_store_rec, extra_columns_and_pages)
{
	struct rows p = { 0 };

	record(0);
	record(1);
	record(2);
	cr_assert_eq(ctl_store_round_extra_put(st, jid, 1, 10.5, 12.25, 4096, 2,
					       "{\"loss\":0.5}"), 0);
	cr_assert_eq(ctl_store_round_extra_put(st, jid, 9, 1, 2, 3, 4, NULL), -ENOENT);
	cr_assert_eq(ctl_store_round_page(st, jid, 1, 5, row, &p), 0);
	cr_assert_eq(p.n, 2, "rounds 1 and 2 from 1");
	cr_assert_eq(p.r[0].round, 1);
	cr_assert_float_eq(p.r[0].opened_at, 10.5, 1e-9);
	cr_assert_float_eq(p.r[0].closed_at, 12.25, 1e-9);
	cr_assert_eq(p.r[0].bytes, 4096);
	cr_assert_eq(p.r[0].metrics_updates, 2);
	cr_assert_str_eq(p.metrics[0], "{\"loss\":0.5}");
	cr_assert_eq(p.r[1].opened_at, 0, "not set: NULL reads 0");
	cr_assert_str_eq(p.metrics[1], "(null)");
	p.n = 0;
	cr_assert_eq(ctl_store_round_page(st, jid, 0, 1, row, &p), 0);
	cr_assert_eq(p.n, 1, "the limit holds");
}

Test(ctl_store_rec, evaluations_one_per_client_and_key)
{
	uint32_t nth = 0, clients = 0, v = 0;
	uint64_t samples = 0;
	char *sums = NULL;

	cr_assert_eq(ctl_store_eval_latest(st, jid, &v, &samples), -ENOENT);
	cr_assert_eq(ctl_store_eval_find(st, jid, 3, "a", "k1", 2, &nth), -ENOENT);
	cr_assert_eq(ctl_store_eval_put(st, jid, 3, 1, "a", "k1", 2, 10, "{\"s\":1}"), 0);
	cr_assert_eq(ctl_store_eval_find(st, jid, 3, "a", "k1", 2, &nth), 0, "the key: replay");
	cr_assert_eq(nth, 1);
	cr_assert_eq(ctl_store_eval_find(st, jid, 3, "a", NULL, 0, &nth), -EEXIST, "the client");
	cr_assert_eq(ctl_store_eval_find(st, jid, 4, "a", NULL, 0, &nth), -ENOENT, "another version");
	cr_assert_eq(ctl_store_eval_put(st, jid, 3, 2, "a", NULL, 0, 5, "{}"), -EEXIST);
	/* The job's token has no client id: not one per client, keys still count once. */
	cr_assert_eq(ctl_store_eval_put(st, jid, 3, 2, "", NULL, 0, 5, "{\"s\":2}"), 0);
	cr_assert_eq(ctl_store_eval_put(st, jid, 3, 3, "", NULL, 0, 7, "{\"s\":3}"), 0);
	cr_assert_eq(ctl_store_eval_put(st, jid, 3, 4, "", "k1", 2, 7, "{}"), -EEXIST);
	cr_assert_eq(ctl_store_eval_get(st, jid, 3, &clients, &samples, &sums), 0);
	cr_assert_eq(clients, 3);
	cr_assert_eq(samples, 22);
	cr_assert_str_eq(sums, "{\"s\":3}");
	trib_free(sums);
	cr_assert_eq(ctl_store_eval_put(st, jid, 1, 1, "b", NULL, 0, 8, "{}"), 0);
	cr_assert_eq(ctl_store_eval_latest(st, jid, &v, &samples), 0);
	cr_assert_eq(v, 3);
	cr_assert_eq(samples, 30);
	cr_assert_eq(ctl_store_eval_get(st, jid, 2, &clients, &samples, &sums), -ENOENT);
	/* A job's evaluations go with it. */
	cr_assert_eq(ctl_store_job_delete(st, "rec"), 0);
	cr_assert_eq(ctl_store_eval_latest(st, jid, &v, &samples), -ENOENT);
}

Test(ctl_store_rec, a_schema_5_file_is_migrated)
{
	struct rows p = { 0 };
	sqlite3 *raw;

	record(0);
	ctl_store_close(st);
	st = NULL;
	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw,
				  "DROP TABLE opt_state; DROP TABLE tasks; "
				  "DROP TABLE evaluations; DROP TABLE eval_versions; "
				  "ALTER TABLE rounds DROP COLUMN opened_at; "
				  "ALTER TABLE rounds DROP COLUMN closed_at; "
				  "ALTER TABLE rounds DROP COLUMN bytes; "
				  "ALTER TABLE rounds DROP COLUMN metrics_updates; "
				  "ALTER TABLE rounds DROP COLUMN metrics; DROP TABLE join_tokens; DROP TABLE node_certs; "
				  "DROP TABLE fedau_clients; "
				  "PRAGMA user_version = 5",
				  NULL, NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(ctl_store_round_page(st, jid, 0, 10, row, &p), 0);
	cr_assert_eq(p.n, 1, "the old record stays");
	cr_assert_eq(p.r[0].closed_unix, 1000);
	cr_assert_eq(p.r[0].duration_ms, 1500);
	cr_assert_eq(p.r[0].bytes, 0);
	cr_assert_eq(ctl_store_round_extra_put(st, jid, 0, 1, 2, 3, 0, NULL), 0);
	cr_assert_eq(ctl_store_eval_put(st, jid, 1, 1, "a", NULL, 0, 1, "{}"), 0);
}
