// SPDX-License-Identifier: MIT
/*
 * A cluster's client-selection tasks, durable in the controller's store (schema 10, issue 15).
 *
 * The cap is enforced here, inside the grant's transaction (count, then insert), not only by
 * the caller's memory: a round never gets more than @max rows, whatever the controller's
 * in-memory copy believes after a restart. The controller answers a client only after the
 * COMMIT returned (synchronous=FULL), so a task a client heard of survives a kill -9.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "ctl_store_priv.h"

/* A grant is one per client per round and a list one per round per restart: prepared per call. */
static int prep(struct ctl_store *st, const char *sql, sqlite3_stmt **s)
{
	int rc = sqlite3_prepare_v2(st->db, sql, -1, s, NULL);

	return rc == SQLITE_OK ? 0 : ctl__sql_fail(st, rc, sql);
}

/* Step @s to its end (a write) or its one row (*@row gets column 0); 0 or -errno. Lock held. */
static int step(struct ctl_store *st, sqlite3_stmt *s, int64_t *row, const char *what)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW && row)
		*row = sqlite3_column_int64(s, 0);
	ctl__stmt_done(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, what);
}

static int grant_locked(struct ctl_store *st, int64_t job_id, uint32_t round, const char *client,
			uint32_t max, uint32_t *out)
{
	sqlite3_stmt *has = NULL, *cnt = NULL, *ins = NULL, *old = NULL;
	int64_t held = 0, n = 0;
	int err = prep(st, "SELECT COUNT(*) FROM tasks WHERE job_id = ?1 AND round = ?2 AND "
			   "client = ?3", &has);

	if (!err)
		err = prep(st, "SELECT COUNT(*) FROM tasks WHERE job_id = ?1 AND round = ?2", &cnt);
	if (!err)
		err = prep(st, "INSERT INTO tasks (job_id, round, client, granted_unix) "
			   "VALUES (?1, ?2, ?3, ?4)", &ins);
	if (!err)
		err = prep(st, "DELETE FROM tasks WHERE job_id = ?1 AND round < ?2", &old);
	if (!err) {
		sqlite3_bind_int64(has, 1, job_id);
		sqlite3_bind_int64(has, 2, round);
		sqlite3_bind_text(has, 3, client, -1, SQLITE_STATIC);
		err = step(st, has, &held, "task held");
	}
	if (!err) {
		sqlite3_bind_int64(cnt, 1, job_id);
		sqlite3_bind_int64(cnt, 2, round);
		err = step(st, cnt, &n, "tasks counted");
	}
	if (!err && !held && n >= (int64_t)max)
		err = -ENOSPC;
	if (!err && !held) {
		sqlite3_bind_int64(ins, 1, job_id);
		sqlite3_bind_int64(ins, 2, round);
		sqlite3_bind_text(ins, 3, client, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 4, (int64_t)time(NULL));
		err = step(st, ins, NULL, "task grant");
		n += !err;
	}
	if (!err) {
		sqlite3_bind_int64(old, 1, job_id);
		sqlite3_bind_int64(old, 2, round);
		err = step(st, old, NULL, "tasks of past rounds");
	}
	if (out && (!err || err == -ENOSPC))
		*out = (uint32_t)n;
	sqlite3_finalize(has);
	sqlite3_finalize(cnt);
	sqlite3_finalize(ins);
	sqlite3_finalize(old);
	return err ? err : held ? 0 : 1;
}

int ctl_store_task_grant(struct ctl_store *st, int64_t job_id, uint32_t round, const char *client,
			 uint32_t max, uint32_t *out)
{
	size_t len = client ? strnlen(client, 33) : 0;
	int err;

	if (!st || !len || len > 32 || !max)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (!err) {
		int got = grant_locked(st, job_id, round, client, max, out);

		/* Full: nothing was written; roll back all the same (one path for both). */
		err = got < 0 ? got : ctl__exec_sql(st, "COMMIT");
		if (err)
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		else
			err = got;
	}
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_task_list(struct ctl_store *st, int64_t job_id, uint32_t round,
			int (*fn)(void *ctx, const char *client), void *ctx)
{
	static const char sql[] = "SELECT client FROM tasks WHERE job_id = ?1 AND round = ?2 "
				  "ORDER BY client";
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!st || !fn)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = prep(st, sql, &s);
	if (!err) {
		sqlite3_bind_int64(s, 1, job_id);
		sqlite3_bind_int64(s, 2, round);
		while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
			const char *client = (const char *)sqlite3_column_text(s, 0);

			err = client ? fn(ctx, client) : -EIO;
		}
		if (!err && rc != SQLITE_DONE)
			err = ctl__sql_fail(st, rc, sql);
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}
