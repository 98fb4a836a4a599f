// SPDX-License-Identifier: MIT
/* Tests for the controller's SQLite store: jobs, round CAS, persistence, names, kv. */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "ctl_store.h"
#include "ctl_store_priv.h" /* PRAGMA synchronous after a relaxed put */
#include "trib_alloc.h"

/* Each test gets its own directory, removed afterwards. */
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
	strcpy(tdir, "/tmp/trib-ctl-store-XXXXXX");
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

static void reopen(void)
{
	ctl_store_close(st);
	st = NULL;
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
}

/* A filled-in job; schema_json is borrowed from a literal, so never ctl_job_clear it. */
static struct ctl_job mkjob(const char *name)
{
	struct ctl_job j;

	memset(&j, 0, sizeof(j));
	snprintf(j.name, sizeof(j.name), "%s", name);
	strcpy(j.algorithm, "fedavg");
	j.clients_per_round = 10;
	j.schema_json = (char *)"{\"w\":[4,4]}";
	return j;
}

TestSuite(ctl_store, .init = setup, .fini = teardown);

Test(ctl_store, create_get_list_delete)
{
	struct ctl_job a = mkjob("mnist"), b = mkjob("cifar-10"), got, *list = NULL;
	size_t n = 0, i;

	b.params_json = (char *)"{\"lr\":0.1}";
	b.round = 3;
	cr_assert_eq(ctl_store_job_create(st, &a), 0);
	cr_assert_eq(ctl_store_job_create(st, &b), 0);
	cr_assert(a.id > 0 && b.id > a.id);
	cr_assert(a.created_unix > 0);
	cr_assert_eq(strlen(a.token), CTL_TOKEN_LEN, "an empty token is generated");

	cr_assert_eq(ctl_store_job_get(st, "cifar-10", &got), 0);
	cr_assert_eq(got.id, b.id);
	cr_assert_str_eq(got.name, "cifar-10");
	cr_assert_str_eq(got.token, b.token);
	cr_assert_str_eq(got.algorithm, "fedavg");
	cr_assert_str_eq(got.schema_json, "{\"w\":[4,4]}");
	cr_assert_str_eq(got.params_json, "{\"lr\":0.1}");
	cr_assert_eq(got.clients_per_round, 10);
	cr_assert_eq(got.round, 3);
	cr_assert_eq(got.created_unix, b.created_unix);
	ctl_job_clear(&got);
	cr_assert_null(got.schema_json);

	cr_assert_eq(ctl_store_job_get_by_id(st, a.id, &got), 0);
	cr_assert_str_eq(got.name, "mnist");
	cr_assert_null(got.params_json);
	ctl_job_clear(&got);

	cr_assert_eq(ctl_store_job_list(st, &list, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(list[0].name, "mnist");
	cr_assert_str_eq(list[1].name, "cifar-10");
	for (i = 0; i < n; i++)
		ctl_job_clear(&list[i]);
	trib_free(list);

	cr_assert_eq(ctl_store_job_delete(st, "mnist"), 0);
	cr_assert_eq(ctl_store_job_get(st, "mnist", &got), -ENOENT);
	cr_assert_eq(ctl_store_job_delete(st, "mnist"), -ENOENT);
	cr_assert_eq(ctl_store_job_get_by_id(st, a.id, &got), -ENOENT);
	cr_assert_eq(ctl_store_job_list(st, &list, &n), 0);
	cr_assert_eq(n, 1);
	ctl_job_clear(&list[0]);
	trib_free(list);
}

Test(ctl_store, list_empty)
{
	struct ctl_job *list = (struct ctl_job *)1;
	size_t n = 99;

	cr_assert_eq(ctl_store_job_list(st, &list, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(list);
}

Test(ctl_store, duplicate_name_returns_eexist)
{
	struct ctl_job a = mkjob("dup"), b = mkjob("dup");

	cr_assert_eq(ctl_store_job_create(st, &a), 0);
	cr_assert_eq(ctl_store_job_create(st, &b), -EEXIST);
	/* After delete the name is free again, with a new id. */
	cr_assert_eq(ctl_store_job_delete(st, "dup"), 0);
	cr_assert_eq(ctl_store_job_create(st, &b), 0);
	cr_assert_neq(b.id, a.id);
}

Test(ctl_store, create_rejects_bad_fields)
{
	struct ctl_job j = mkjob("ok");

	j.schema_json = NULL;
	cr_assert_eq(ctl_store_job_create(st, &j), -EINVAL);
	j = mkjob("ok");
	j.algorithm[0] = '\0';
	cr_assert_eq(ctl_store_job_create(st, &j), -EINVAL);
	j = mkjob("ok");
	memset(j.token, 'x', sizeof(j.token));
	cr_assert_eq(ctl_store_job_create(st, &j), -EINVAL);
	j = mkjob("../etc");
	cr_assert_eq(ctl_store_job_create(st, &j), -EINVAL);
	j = mkjob("ok");
	strcpy(j.token, "given-token");
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	cr_assert_str_eq(j.token, "given-token", "a given token is kept");
}

Test(ctl_store, round_cas)
{
	struct ctl_job j = mkjob("cas"), got;

	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	cr_assert_eq(ctl_store_round_advance(st, j.id, 0, 1), 0);
	cr_assert_eq(ctl_store_round_advance(st, j.id, 0, 1), -ESTALE, "lost race");
	cr_assert_eq(ctl_store_round_advance(st, j.id, 5, 6), -ESTALE);
	cr_assert_eq(ctl_store_round_advance(st, j.id, 1, 2), 0);
	cr_assert_eq(ctl_store_round_advance(st, j.id + 100, 2, 3), -ENOENT);
	cr_assert_eq(ctl_store_round_advance(st, j.id, 2, UINT32_MAX), 0);
	cr_assert_eq(ctl_store_job_get(st, "cas", &got), 0);
	cr_assert_eq(got.round, UINT32_MAX, "the full uint32 range round-trips");
	ctl_job_clear(&got);
}

struct cas_arg {
	int64_t id;
	unsigned wins;
};

/* Advance the round by compare-and-set until it reaches 200; count this thread's wins. */
static void *cas_worker(void *p)
{
	struct cas_arg *a = p;
	struct ctl_job got;
	uint32_t r;
	int err;

	for (;;) {
		if (ctl_store_job_get_by_id(st, a->id, &got))
			return (void *)1;
		r = got.round;
		ctl_job_clear(&got);
		if (r >= 200)
			return NULL;
		err = ctl_store_round_advance(st, a->id, r, r + 1);
		if (err == 0)
			a->wins++;
		else if (err != -ESTALE)
			return (void *)1;
	}
}

Test(ctl_store, round_cas_has_one_winner_per_round)
{
	enum { NT = 4 };
	struct ctl_job j = mkjob("race");
	struct cas_arg args[NT];
	pthread_t th[NT];
	unsigned total = 0;
	void *ret;
	int i;

	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	for (i = 0; i < NT; i++) {
		args[i] = (struct cas_arg){ .id = j.id };
		cr_assert_eq(pthread_create(&th[i], NULL, cas_worker, &args[i]), 0);
	}
	for (i = 0; i < NT; i++) {
		cr_assert_eq(pthread_join(th[i], &ret), 0);
		cr_assert_null(ret, "worker %d failed", i);
		total += args[i].wins;
	}
	cr_assert_eq(total, 200, "every step from 0 to 200 was won exactly once");
}

Test(ctl_store, round_cas_across_connections)
{
	struct ctl_job j = mkjob("two");
	struct ctl_store *other;

	/* Two connections stand for two processes sharing the file. */
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	cr_assert_eq(ctl_store_open(dbpath, &other), 0);
	cr_assert_eq(ctl_store_round_advance(other, j.id, 0, 1), 0);
	cr_assert_eq(ctl_store_round_advance(st, j.id, 0, 1), -ESTALE);
	cr_assert_eq(ctl_store_round_advance(st, j.id, 1, 2), 0);
	cr_assert_eq(ctl_store_round_advance(other, j.id, 1, 2), -ESTALE);
	ctl_store_close(other);
}

Test(ctl_store, persists_across_reopen)
{
	struct ctl_job j = mkjob("durable"), got;
	struct ctl_round r = { 0 }, rg;
	char val[32], wal[PATH_MAX + 8];
	struct stat sb;

	j.params_json = (char *)"{\"server_lr\":1}";
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	cr_assert_eq(ctl_store_round_advance(st, j.id, 0, 1), 0);
	r.job_id = j.id;
	r.round = 0;
	r.closed_unix = 1700000000;
	r.n_updates = 7;
	r.total_weight = 1234.5;
	r.duration_ms = 250;
	r.model_path = (char *)"/data/jobs/durable/round-1.safetensors";
	cr_assert_eq(ctl_store_round_record(st, &r), 0);
	cr_assert_eq(ctl_store_kv_set(st, "admin_token_path", "/data/admin.token"), 0);
	/* The file holds tokens: owner-only, and so is its write-ahead log. */
	snprintf(wal, sizeof(wal), "%s-wal", dbpath);
	cr_assert_eq(stat(wal, &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0600);

	reopen();
	cr_assert_eq(ctl_store_job_get(st, "durable", &got), 0);
	cr_assert_eq(got.id, j.id);
	cr_assert_eq(got.round, 1);
	cr_assert_str_eq(got.token, j.token);
	cr_assert_str_eq(got.params_json, "{\"server_lr\":1}");
	ctl_job_clear(&got);
	cr_assert_eq(ctl_store_round_get(st, j.id, 0, &rg), 0);
	cr_assert_eq(rg.n_updates, 7);
	cr_assert_str_eq(rg.model_path, r.model_path);
	ctl_round_clear(&rg);
	cr_assert_eq(ctl_store_kv_get(st, "admin_token_path", val, sizeof(val)), 0);
	cr_assert_str_eq(val, "/data/admin.token");

	cr_assert_eq(stat(dbpath, &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0600);
}

Test(ctl_store, reopen_is_idempotent_and_refuses_newer_schema)
{
	struct ctl_job j = mkjob("v"), got;
	struct ctl_store *other;
	sqlite3 *raw;

	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	/* A second connection to the same file (e.g. a CLI) sees the migrated schema. */
	cr_assert_eq(ctl_store_open(dbpath, &other), 0);
	cr_assert_eq(ctl_store_job_get(other, "v", &got), 0);
	ctl_job_clear(&got);
	ctl_store_close(other);
	reopen();
	ctl_store_close(st);
	st = NULL;

	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, "PRAGMA user_version", NULL, NULL, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), -EPROTO, "a newer file is not touched");
	cr_assert_null(st);
}

Test(ctl_store, new_file_is_wal_with_current_version)
{
	sqlite3 *raw;
	sqlite3_stmt *s;

	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
	cr_assert_str_eq((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	cr_assert_eq(sqlite3_prepare_v2(raw, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
	cr_assert_eq(sqlite3_column_int(s, 0), CTL_STORE_SCHEMA_VERSION);
	sqlite3_finalize(s);
	sqlite3_close(raw);
}

Test(ctl_store, allocation_failures_unwind)
{
	struct ctl_store *s2;
	struct ctl_job a = mkjob("a"), b = mkjob("b"), c = mkjob("c"), got, *list;
	size_t n, i;
	long k;
	int err;

	a.params_json = (char *)"{}";
	cr_assert_eq(ctl_store_job_create(st, &a), 0);
	cr_assert_eq(ctl_store_job_create(st, &b), 0);
	cr_assert_eq(ctl_store_job_create(st, &c), 0);
	for (k = 0; k < 32; k++) {
		trib_alloc_fail_after(k);
		err = ctl_store_open(dbpath, &s2);
		trib_alloc_fail_after(-1);
		cr_assert(err == 0 || err == -ENOMEM, "open: %d", err);
		if (!err)
			ctl_store_close(s2);

		trib_alloc_fail_after(k);
		err = ctl_store_job_get(st, "a", &got);
		trib_alloc_fail_after(-1);
		cr_assert(err == 0 || err == -ENOMEM, "get: %d", err);
		if (!err)
			ctl_job_clear(&got);
		else
			cr_assert_null(got.schema_json);

		trib_alloc_fail_after(k);
		err = ctl_store_job_list(st, &list, &n);
		trib_alloc_fail_after(-1);
		cr_assert(err == 0 || err == -ENOMEM, "list: %d", err);
		if (!err) {
			cr_assert_eq(n, 3);
			for (i = 0; i < n; i++)
				ctl_job_clear(&list[i]);
			trib_free(list);
		}
	}
}

Test(ctl_store, refuses_invalid_names)
{
	/* The rule itself is tested in tests/core/test_name.c; here, that the store applies it. */
	static const char *const bad[] = {
		"", ".", "..", "../x", "a/b", "/abs", ".hidden", "-flag", "a b", "a\tb", "a\nb",
		"caf\xc3\xa9", "a'b", "a;b", "a\\b", "a*", "a%2f",
	};
	struct ctl_job j;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = mkjob("");
		snprintf(j.name, sizeof(j.name), "%.63s", bad[i]);
		cr_assert_eq(ctl_store_job_create(st, &j), -EINVAL, "store took '%s'", bad[i]);
	}
	j = mkjob("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk");
	cr_assert_eq(strlen(j.name), 63);
	cr_assert_eq(ctl_store_job_create(st, &j), 0, "a 63-char name fits");
}

Test(ctl_store, injection_looking_text_is_stored_literally)
{
	static const char *const evil[] = {
		"x'; DROP TABLE jobs; --",
		"\" OR 1=1 --",
		"'); DELETE FROM kv; --",
		"%s%n\\",
	};
	struct ctl_job j = mkjob("literal"), got, *list;
	char val[128];
	size_t i, n;

	/* Names cannot carry SQL; a lookup with such a name just finds nothing. */
	for (i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
		cr_assert_eq(ctl_store_job_get(st, evil[i], &got), -ENOENT);
		cr_assert_eq(ctl_store_job_delete(st, evil[i]), -ENOENT);
	}
	cr_assert_eq(ctl_store_job_get(st, "x' OR '1'='1", &got), -ENOENT);

	strcpy(j.algorithm, "fedavg'--");
	j.schema_json = (char *)evil[0];
	j.params_json = (char *)evil[2];
	strcpy(j.token, evil[1]);
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	for (i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
		cr_assert_eq(ctl_store_kv_set(st, evil[i], evil[(i + 1) % 4]), 0);
		cr_assert_eq(ctl_store_kv_get(st, evil[i], val, sizeof(val)), 0);
		cr_assert_str_eq(val, evil[(i + 1) % 4]);
	}
	reopen();
	cr_assert_eq(ctl_store_job_get(st, "literal", &got), 0);
	cr_assert_str_eq(got.algorithm, "fedavg'--");
	cr_assert_str_eq(got.schema_json, evil[0]);
	cr_assert_str_eq(got.params_json, evil[2]);
	cr_assert_str_eq(got.token, evil[1]);
	ctl_job_clear(&got);
	cr_assert_eq(ctl_store_kv_get(st, evil[2], val, sizeof(val)), 0, "kv table survived");
	cr_assert_eq(ctl_store_job_list(st, &list, &n), 0);
	cr_assert_eq(n, 1, "jobs table survived");
	ctl_job_clear(&list[0]);
	trib_free(list);
}

Test(ctl_store, round_records)
{
	struct ctl_job j = mkjob("rr"), k = mkjob("other");
	struct ctl_round r = { 0 }, got, *list;
	size_t n, i;
	uint32_t rd;

	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	cr_assert_eq(ctl_store_job_create(st, &k), 0);
	/* Record out of order; the list comes back sorted by round. */
	for (i = 0; i < 5; i++) {
		rd = (uint32_t)((i * 3) % 5);
		r.job_id = j.id;
		r.round = rd;
		r.closed_unix = 1700000000 + rd;
		r.n_updates = 100 + rd;
		r.total_weight = 0.5 * rd;
		r.duration_ms = 1000ull * rd;
		r.model_path = rd == 2 ? NULL : (char *)"/m";
		cr_assert_eq(ctl_store_round_record(st, &r), 0);
	}
	r.round = 4;
	cr_assert_eq(ctl_store_round_record(st, &r), -EEXIST);
	r.job_id = j.id + k.id + 100;
	cr_assert_eq(ctl_store_round_record(st, &r), -ENOENT, "no such job");
	r.job_id = j.id;
	r.round = 9;
	r.total_weight = 0.0 / 0.0;
	cr_assert_eq(ctl_store_round_record(st, &r), -EINVAL, "NaN weight");

	cr_assert_eq(ctl_store_round_get(st, j.id, 3, &got), 0);
	cr_assert_eq(got.job_id, j.id);
	cr_assert_eq(got.round, 3);
	cr_assert_eq(got.closed_unix, 1700000003);
	cr_assert_eq(got.n_updates, 103);
	cr_assert_float_eq(got.total_weight, 1.5, 1e-12);
	cr_assert_eq(got.duration_ms, 3000);
	cr_assert_str_eq(got.model_path, "/m");
	ctl_round_clear(&got);
	cr_assert_eq(ctl_store_round_get(st, j.id, 2, &got), 0);
	cr_assert_null(got.model_path);
	cr_assert_eq(ctl_store_round_get(st, j.id, 7, &got), -ENOENT);
	cr_assert_eq(ctl_store_round_get(st, k.id, 3, &got), -ENOENT);

	cr_assert_eq(ctl_store_round_list(st, j.id, &list, &n), 0);
	cr_assert_eq(n, 5);
	for (i = 0; i < n; i++) {
		cr_assert_eq(list[i].round, i);
		ctl_round_clear(&list[i]);
	}
	trib_free(list);

	/* Deleting the job deletes its history (foreign keys are on). */
	cr_assert_eq(ctl_store_job_delete(st, "rr"), 0);
	cr_assert_eq(ctl_store_round_list(st, j.id, &list, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(list);
}

Test(ctl_store, kv)
{
	char val[8], big[64];

	cr_assert_eq(ctl_store_kv_get(st, "k", val, sizeof(val)), -ENOENT);
	cr_assert_eq(ctl_store_kv_set(st, "k", "one"), 0);
	cr_assert_eq(ctl_store_kv_get(st, "k", val, sizeof(val)), 0);
	cr_assert_str_eq(val, "one");
	cr_assert_eq(ctl_store_kv_set(st, "k", "two"), 0, "set replaces");
	cr_assert_eq(ctl_store_kv_get(st, "k", val, sizeof(val)), 0);
	cr_assert_str_eq(val, "two");
	cr_assert_eq(ctl_store_kv_set(st, "k", "1234567"), 0);
	cr_assert_eq(ctl_store_kv_get(st, "k", val, sizeof(val)), 0, "7 chars + NUL fit in 8");
	cr_assert_eq(ctl_store_kv_set(st, "k", "12345678"), 0);
	cr_assert_eq(ctl_store_kv_get(st, "k", val, sizeof(val)), -ERANGE);
	cr_assert_eq(ctl_store_kv_get(st, "k", big, sizeof(big)), 0);
	cr_assert_str_eq(big, "12345678");
	cr_assert_eq(ctl_store_kv_set(st, "e", ""), 0, "an empty value is a value");
	cr_assert_eq(ctl_store_kv_get(st, "e", val, sizeof(val)), 0);
	cr_assert_str_eq(val, "");
	cr_assert_eq(ctl_store_kv_set(st, "", "x"), -EINVAL);
	cr_assert_eq(ctl_store_kv_set(st, NULL, "x"), -EINVAL);
	cr_assert_eq(ctl_store_kv_set(st, "k", NULL), -EINVAL);
}

Test(ctl_store, open_fails_cleanly)
{
	struct ctl_store *s2 = NULL;
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/no/such/dir/state.db", tdir);
	cr_assert_eq(ctl_store_open(path, &s2), -ENOENT);
	cr_assert_null(s2);
	cr_assert_eq(ctl_store_open(NULL, &s2), -EINVAL);
	ctl_store_close(NULL);
}

Test(ctl_store, idem_answers_are_kept_per_round_and_pruned)
{
	struct ctl_job j = mkjob("idem");
	struct ctl_idem v[2] = {
		{ 3, 202, "k1", 2, "{\"round\":3,\"received\":1}", 25 },
		{ 5, 202, "k1", 2, "{\"round\":5,\"received\":2}", 25 },
	};
	char body[64];
	size_t len = 0;
	int status = 0;

	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	cr_assert_eq(ctl_store_idem_put(st, j.id, v, 2, 0, true), 0);
	/* A second put of the same (key, round) keeps the first answer. */
	v[0].body = "{\"round\":3,\"received\":9}";
	cr_assert_eq(ctl_store_idem_put(st, j.id, v, 1, 0, true), 0);
	reopen();
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k1", 2, 3, 3, &status, body, sizeof(body), &len),
		     0);
	cr_assert_eq(status, 202);
	cr_assert_eq(len, 25);
	cr_assert_eq(memcmp(body, "{\"round\":3,\"received\":1}", 25), 0);
	/* A range (FedBuff) answers the lowest round in it. */
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k1", 2, 4, UINT32_MAX, &status, body,
					sizeof(body), &len), 0);
	cr_assert_eq(memcmp(body, "{\"round\":5,\"received\":2}", 25), 0);
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k2", 2, 0, UINT32_MAX, &status, body,
					sizeof(body), &len), -ENOENT);
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k1", 2, 4, 4, &status, body, sizeof(body),
					&len), -ENOENT);
	/* Pruning below round 4 forgets round 3 only. */
	cr_assert_eq(ctl_store_idem_put(st, j.id, NULL, 0, 4, true), 0);
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k1", 2, 3, 3, &status, body, sizeof(body),
					&len), -ENOENT);
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k1", 2, 5, 5, &status, body, sizeof(body),
					&len), 0);
	/* A deleted job's answers go with it. */
	cr_assert_eq(ctl_store_job_delete(st, "idem"), 0);
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k1", 2, 5, 5, &status, body, sizeof(body),
					&len), -ENOENT);
}

/* The connection's PRAGMA synchronous (2 is FULL, 1 NORMAL). */
static int sync_level(void)
{
	sqlite3_stmt *s;
	int v = -1;

	cr_assert_eq(sqlite3_prepare_v2(st->db, "PRAGMA synchronous", -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return v;
}

Test(ctl_store, unsynced_key_batches_are_kept_and_leave_the_store_synced)
{
	struct ctl_job j = mkjob("relaxed");
	struct ctl_idem v[1] = { { 2, 202, "k9", 2, "{\"round\":2,\"received\":1}", 25 } };
	struct ctl_idem bad[1] = { { 2, 202, "k0", 0, "{}", 2 } };
	const char *who[] = { "carol" };
	char (*ids)[CTL_CLIENT_MAX] = NULL;
	char body[64];
	size_t len = 0, n = 0;
	int status = 0;

	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	cr_assert(st->wal, "the test store is in WAL mode");
	cr_assert_eq(sync_level(), 2);
	cr_assert_eq(ctl_store_idem_put(st, j.id, v, 1, 0, false), 0);
	cr_assert_eq(sync_level(), 2, "FULL again after an unsynced batch");
	cr_assert_eq(ctl_store_round_clients_put(st, j.id, 2, who, 1, 0, false), 0);
	cr_assert_eq(sync_level(), 2);
	/* A batch that fails rolls back and also puts FULL back. */
	cr_assert_eq(ctl_store_idem_put(st, j.id, bad, 1, 0, false), -EINVAL);
	cr_assert_eq(sync_level(), 2);
	reopen(); /* what a crash of the process keeps: written, not synced */
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k9", 2, 2, 2, &status, body, sizeof(body), &len),
		     0);
	cr_assert_eq(status, 202);
	cr_assert_eq(memcmp(body, "{\"round\":2,\"received\":1}", 25), 0);
	cr_assert_eq(ctl_store_idem_get(st, j.id, "k0", 2, 2, 2, &status, body, sizeof(body), &len),
		     -ENOENT);
	cr_assert_eq(ctl_store_round_clients_list(st, j.id, 2, &ids, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(ids[0], "carol");
	trib_free(ids);
}

Test(ctl_store, job_keys_revocations_and_round_clients)
{
	struct ctl_job j = mkjob("creds");
	uint8_t key[CTL_KEY_LEN], got[CTL_KEY_LEN];
	char (*ids)[CTL_CLIENT_MAX] = NULL;
	const char *who[] = { "alice", "bob" };
	size_t n = 9;

	for (int i = 0; i < CTL_KEY_LEN; i++)
		key[i] = (uint8_t)(i * 7);
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	cr_assert_eq(ctl_store_job_key_get(st, j.id, got), -ENOENT);
	cr_assert_eq(ctl_store_job_key_put(st, j.id, key), 0);
	cr_assert_eq(ctl_store_job_key_put(st, j.id, key), -EEXIST, "a key never changes");
	cr_assert_eq(ctl_store_job_key_put(st, j.id + 100, key), -ENOENT, "no such job");
	cr_assert_eq(ctl_store_revoke(st, j.id, "bob"), 0);
	cr_assert_eq(ctl_store_revoke(st, j.id, "bob"), 0, "again: no change");
	cr_assert_eq(ctl_store_revoke(st, j.id, "alice"), 0);
	cr_assert_eq(ctl_store_round_clients_put(st, j.id, 3, who, 2, 0, true), 0);
	cr_assert_eq(ctl_store_round_clients_put(st, j.id, 4, who, 1, 0, true), 0);
	reopen();
	cr_assert_eq(ctl_store_job_key_get(st, j.id, got), 0);
	cr_assert_eq(memcmp(key, got, sizeof(key)), 0);
	cr_assert_eq(ctl_store_revoked_list(st, j.id, &ids, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(ids[0], "alice");
	cr_assert_str_eq(ids[1], "bob");
	trib_free(ids);
	cr_assert_eq(ctl_store_round_clients_list(st, j.id, 3, &ids, &n), 0);
	cr_assert_eq(n, 2);
	trib_free(ids);
	/* Rounds below 4 are forgotten; round 4 stays. */
	cr_assert_eq(ctl_store_round_clients_put(st, j.id, 4, NULL, 0, 4, true), 0);
	cr_assert_eq(ctl_store_round_clients_list(st, j.id, 3, &ids, &n), 0);
	cr_assert(n == 0 && !ids);
	cr_assert_eq(ctl_store_round_clients_list(st, j.id, 4, &ids, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(ids[0], "alice");
	trib_free(ids);
	/* A deleted job's key and lists go with it. */
	cr_assert_eq(ctl_store_job_delete(st, "creds"), 0);
	cr_assert_eq(ctl_store_job_key_get(st, j.id, got), -ENOENT);
	cr_assert_eq(ctl_store_revoked_list(st, j.id, &ids, &n), 0);
	cr_assert_eq(n, 0);
}
