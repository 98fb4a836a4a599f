// SPDX-License-Identifier: MIT
/*
 * The store's cluster state: the nodes a controller knew, its rounds in flight (schema v4) and
 * their clients (v5).
 */
#include "ctl_store_priv.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/*
 * These run a few times per round (a node's join, a round's changes, batched
 * per controller tick), so each prepares its statement: the hot statements
 * of ctl_store.c stay as they are.
 */
static int run(struct ctl_store *st, const char *sql, sqlite3_stmt **out)
{
	int rc = sqlite3_prepare_v2(st->db, sql, -1, out, NULL);

	return rc == SQLITE_OK ? 0 : ctl__sql_fail(st, rc, sql);
}

int ctl_store_xnode_put(struct ctl_store *st, uint32_t rank, const char *name, const char *addr,
			uint32_t epoch)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !name || !addr)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	/* One row per rank and per name: a put replaces either (the controller keeps both). */
	err = run(st,
		  "INSERT OR REPLACE INTO cluster_nodes (rank, name, addr, epoch) "
		  "VALUES (?, ?, ?, ?)",
		  &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, rank);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text(s, 3, addr, -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 4, epoch);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "cluster node put");
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_xnode_list(struct ctl_store *st,
			 int (*cb)(void *ctx, uint32_t rank, const char *name, const char *addr,
				   uint32_t epoch),
			 void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_DONE, err;

	if (!st || !cb)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = run(st, "SELECT rank, name, addr, epoch FROM cluster_nodes ORDER BY rank", &s);
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW)
		err = cb(ctx, (uint32_t)sqlite3_column_int64(s, 0),
			 (const char *)sqlite3_column_text(s, 1),
			 (const char *)sqlite3_column_text(s, 2),
			 (uint32_t)sqlite3_column_int64(s, 3));
	if (!err && rc != SQLITE_DONE)
		err = ctl__sql_fail(st, rc, "cluster node list");
	if (s)
		sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_xround_put(struct ctl_store *st, int64_t job_id, uint32_t round, int state,
			 const char *detail)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !detail)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = run(st,
		  "INSERT OR REPLACE INTO cluster_rounds (job_id, round, state, detail) "
		  "VALUES (?, ?, ?, ?)",
		  &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, round);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int(s, 3, state);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text(s, 4, detail, -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "cluster round put");
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&st->lock);
	return err;
}

/* Run @sql with (@a, @b) bound: one statement that returns no row. Lock held. */
static int run2(struct ctl_store *st, const char *sql, int64_t a, int64_t b)
{
	sqlite3_stmt *s;
	int rc, err = run(st, sql, &s);

	if (err)
		return err;
	rc = sqlite3_bind_int64(s, 1, a);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, b);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, sql);
	sqlite3_finalize(s);
	return err;
}

/* Rows of @job_id, with their clients: round @round (@below false), or every round below it. */
static int xround_delete(struct ctl_store *st, int64_t job_id, uint32_t round, bool below)
{
	int err;

	if (!st)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (!err)
		err = run2(st,
			   below ? "DELETE FROM cluster_rounds WHERE job_id = ? AND round < ?"
				 : "DELETE FROM cluster_rounds WHERE job_id = ? AND round = ?",
			   job_id, round);
	if (!err)
		err = run2(st,
			   below ? "DELETE FROM cluster_round_clients WHERE job_id = ? AND round < ?"
				 : "DELETE FROM cluster_round_clients WHERE job_id = ? AND round = ?",
			   job_id, round);
	if (!err)
		err = ctl__exec_sql(st, "COMMIT");
	if (err)
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_xround_clients_put(struct ctl_store *st, int64_t job_id, uint32_t round,
				 const char *const *ids, const uint32_t *ranks, size_t n)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_OK, err;

	if (!st || (n && (!ids || !ranks)))
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (!err)
		err = run2(st, "DELETE FROM cluster_round_clients WHERE job_id = ? AND round = ?",
			   job_id, round);
	if (!err && n)
		err = run(st,
			  "INSERT INTO cluster_round_clients (job_id, round, client, rank) "
			  "VALUES (?, ?, ?, ?)",
			  &s);
	for (size_t i = 0; !err && i < n; i++) {
		if (!ids[i] || !*ids[i]) {
			err = -EINVAL;
			break;
		}
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, round);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text(s, 3, ids[i], -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 4, ranks[i]);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "cluster round client put");
		sqlite3_reset(s);
	}
	if (s)
		sqlite3_finalize(s);
	if (!err)
		err = ctl__exec_sql(st, "COMMIT");
	if (err)
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_xround_clients_list(struct ctl_store *st,
				  int (*cb)(void *ctx, int64_t job_id, uint32_t round,
					    const char *client, uint32_t rank),
				  void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_DONE, err;

	if (!st || !cb)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = run(st,
		  "SELECT job_id, round, client, rank FROM cluster_round_clients "
		  "ORDER BY job_id, round, client",
		  &s);
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW)
		err = cb(ctx, sqlite3_column_int64(s, 0), (uint32_t)sqlite3_column_int64(s, 1),
			 (const char *)sqlite3_column_text(s, 2),
			 (uint32_t)sqlite3_column_int64(s, 3));
	if (!err && rc != SQLITE_DONE)
		err = ctl__sql_fail(st, rc, "cluster round client list");
	if (s)
		sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_xround_delete(struct ctl_store *st, int64_t job_id, uint32_t round)
{
	return xround_delete(st, job_id, round, false);
}

int ctl_store_xround_prune(struct ctl_store *st, int64_t job_id, uint32_t below)
{
	return xround_delete(st, job_id, below, true);
}

int ctl_store_xround_list(struct ctl_store *st,
			  int (*cb)(void *ctx, int64_t job_id, uint32_t round, int state,
				    const char *detail),
			  void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_DONE, err;

	if (!st || !cb)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = run(st,
		  "SELECT job_id, round, state, detail FROM cluster_rounds "
		  "ORDER BY job_id, round",
		  &s);
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW)
		err = cb(ctx, sqlite3_column_int64(s, 0), (uint32_t)sqlite3_column_int64(s, 1),
			 sqlite3_column_int(s, 2), (const char *)sqlite3_column_text(s, 3));
	if (!err && rc != SQLITE_DONE)
		err = ctl__sql_fail(st, rc, "cluster round list");
	if (s)
		sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}
