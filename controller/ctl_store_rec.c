// SPDX-License-Identifier: MIT
/* Round records' schema-5 columns and federated evaluations in the store (issue 15). */
#include "ctl_store_rec.h"

#include <errno.h>
#include <string.h>

#include "ctl_store_priv.h"
#include "trib_alloc.h"

/* Read by requests (a job's GET, round pages, evaluations): kept prepared (ctl__prep_kept). */
static int prep(struct ctl_store *st, const char *sql, sqlite3_stmt **out)
{
	return ctl__prep_kept(st, sql, out);
}

int ctl_store_round_extra_put(struct ctl_store *st, int64_t job_id, uint32_t round,
			      double opened_at, double closed_at, uint64_t bytes,
			      uint32_t metrics_updates, const char *metrics_json)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_OK, err;

	if (!st)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = prep(st, "UPDATE rounds SET opened_at = ?3, closed_at = ?4, bytes = ?5, "
		   "metrics_updates = ?6, metrics = ?7 WHERE job_id = ?1 AND round = ?2", &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, round);
		if (rc == SQLITE_OK)
			rc = opened_at > 0 ? sqlite3_bind_double(s, 3, opened_at)
					   : sqlite3_bind_null(s, 3);
		if (rc == SQLITE_OK)
			rc = closed_at > 0 ? sqlite3_bind_double(s, 4, closed_at)
					   : sqlite3_bind_null(s, 4);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 5, (sqlite3_int64)bytes);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 6, metrics_updates);
		if (rc == SQLITE_OK)
			rc = metrics_json ? sqlite3_bind_text(s, 7, metrics_json, -1, SQLITE_STATIC)
					  : sqlite3_bind_null(s, 7);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "round record extra");
		if (!err && sqlite3_changes(st->db) == 0)
			err = -ENOENT;
	}
	ctl__unprep(st, s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_round_page(struct ctl_store *st, int64_t job_id, uint32_t from, uint32_t limit,
			 int (*cb)(void *ctx, const struct ctl_round_rec *r), void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_DONE, err;

	if (!st || !cb)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = prep(st, "SELECT round, closed_unix, n_updates, clients, total_weight, duration_ms, "
		   "opened_at, closed_at, bytes, metrics_updates, metrics FROM rounds "
		   "WHERE job_id = ?1 AND round >= ?2 ORDER BY round LIMIT ?3", &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, from);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 3, limit);
		if (rc != SQLITE_OK)
			err = ctl__sql_fail(st, rc, "round page");
	}
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct ctl_round_rec r = {
			.round = (uint32_t)sqlite3_column_int64(s, 0),
			.closed_unix = sqlite3_column_int64(s, 1),
			.n_updates = (uint32_t)sqlite3_column_int64(s, 2),
			.clients = (uint32_t)sqlite3_column_int64(s, 3),
			.total_weight = sqlite3_column_double(s, 4),
			.duration_ms = (uint64_t)sqlite3_column_int64(s, 5),
			.opened_at = sqlite3_column_double(s, 6),
			.closed_at = sqlite3_column_double(s, 7),
			.bytes = (uint64_t)sqlite3_column_int64(s, 8),
			.metrics_updates = (uint32_t)sqlite3_column_int64(s, 9),
			.metrics_json = (const char *)sqlite3_column_text(s, 10),
		};

		err = cb(ctx, &r);
	}
	if (!err && rc != SQLITE_DONE && rc != SQLITE_ROW)
		err = ctl__sql_fail(st, rc, "round page");
	ctl__unprep(st, s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

/* Bind @key as a blob, or NULL when there is none. */
static int bind_key(sqlite3_stmt *s, int i, const void *key, size_t key_len)
{
	return key_len ? sqlite3_bind_blob(s, i, key, (int)key_len, SQLITE_STATIC)
		       : sqlite3_bind_null(s, i);
}

int ctl_store_eval_find(struct ctl_store *st, int64_t job_id, uint32_t version,
			const char *client, const void *key, size_t key_len, uint32_t *nth)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_OK, err;

	if (!st || !client)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	/* The key first: a resend of an evaluation is its first answer, not a duplicate. */
	err = prep(st, "SELECT nth, idem_key IS NOT NULL AND idem_key = ?3 FROM evaluations "
		   "WHERE job_id = ?1 AND version = ?2 AND "
		   "((idem_key IS NOT NULL AND idem_key = ?3) OR (client <> '' AND client = ?4)) "
		   "ORDER BY 2 DESC LIMIT 1", &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, version);
		if (rc == SQLITE_OK)
			rc = bind_key(s, 3, key, key_len);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text(s, 4, client, -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			*nth = (uint32_t)sqlite3_column_int64(s, 0);
			err = sqlite3_column_int(s, 1) ? 0 : -EEXIST;
		} else {
			err = rc == SQLITE_DONE ? -ENOENT : ctl__sql_fail(st, rc, "evaluation find");
		}
	}
	ctl__unprep(st, s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_eval_get(struct ctl_store *st, int64_t job_id, uint32_t version, uint32_t *clients,
		       uint64_t *samples, char **sums)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_OK, err;

	if (!st || !sums)
		return -EINVAL;
	*sums = NULL;
	pthread_mutex_lock(&st->lock);
	err = prep(st, "SELECT clients, samples, sums FROM eval_versions "
		   "WHERE job_id = ?1 AND version = ?2", &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, version);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			const char *t = (const char *)sqlite3_column_text(s, 2);

			*clients = (uint32_t)sqlite3_column_int64(s, 0);
			*samples = (uint64_t)sqlite3_column_int64(s, 1);
			*sums = trib_strdup(t ? t : "{}");
			err = *sums ? 0 : -ENOMEM;
		} else {
			err = rc == SQLITE_DONE ? -ENOENT : ctl__sql_fail(st, rc, "evaluation get");
		}
	}
	ctl__unprep(st, s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_eval_latest(struct ctl_store *st, int64_t job_id, uint32_t *version,
			  uint64_t *samples_total)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_OK, err;

	if (!st)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = prep(st, "SELECT MAX(version), TOTAL(samples), COUNT(*) FROM eval_versions "
		   "WHERE job_id = ?1", &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		if (rc == SQLITE_ROW && sqlite3_column_int64(s, 2) > 0) {
			*version = (uint32_t)sqlite3_column_int64(s, 0);
			*samples_total = (uint64_t)sqlite3_column_double(s, 1);
		} else {
			err = rc == SQLITE_ROW ? -ENOENT : ctl__sql_fail(st, rc, "evaluation latest");
		}
	}
	ctl__unprep(st, s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_eval_put(struct ctl_store *st, int64_t job_id, uint32_t version, uint32_t nth,
		       const char *client, const void *key, size_t key_len, uint64_t samples,
		       const char *sums)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_OK, err;

	if (!st || !client || !sums || !nth)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (err)
		goto out;
	err = prep(st, "INSERT INTO evaluations (job_id, version, nth, client, idem_key, samples, "
		   "at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, (julianday('now') - 2440587.5) * 86400.0)", &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, version);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 3, nth);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text(s, 4, client, -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = bind_key(s, 5, key, key_len);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 6, (sqlite3_int64)samples);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "evaluation put");
		ctl__unprep(st, s);
		s = NULL;
	}
	if (!err)
		err = prep(st, "INSERT INTO eval_versions (job_id, version, clients, samples, sums) "
			   "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (job_id, version) DO UPDATE "
			   "SET clients = excluded.clients, samples = samples + excluded.samples, "
			   "sums = excluded.sums", &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, version);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 3, nth);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 4, (sqlite3_int64)samples);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text(s, 5, sums, -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "evaluation aggregate");
		ctl__unprep(st, s);
	}
	if (!err)
		err = ctl__exec_sql(st, "COMMIT");
	if (err)
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
out:
	pthread_mutex_unlock(&st->lock);
	return err;
}
