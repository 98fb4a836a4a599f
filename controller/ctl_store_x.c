// SPDX-License-Identifier: MIT
/* The store's cluster state: the nodes a controller knew and its rounds in flight (schema v3). */
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

/* Rows of @job_id: round @round (@below false), or every round below it. */
static int xround_delete(struct ctl_store *st, int64_t job_id, uint32_t round, bool below)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = run(st,
		  below ? "DELETE FROM cluster_rounds WHERE job_id = ? AND round < ?"
			: "DELETE FROM cluster_rounds WHERE job_id = ? AND round = ?",
		  &s);
	if (!err) {
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, round);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "cluster round delete");
		sqlite3_finalize(s);
	}
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
