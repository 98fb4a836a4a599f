// SPDX-License-Identifier: MIT
/* The store's client credentials: each job's key, its revoked clients, each round's clients. */
#include "ctl_store_priv.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "trib_alloc.h"

int ctl_store_job_key_get(struct ctl_store *st, int64_t job_id, uint8_t key[CTL_KEY_LEN])
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !key)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_KEY_GET];
	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 0) == CTL_KEY_LEN) {
		memcpy(key, sqlite3_column_blob(s, 0), CTL_KEY_LEN);
		err = 0;
	} else if (rc == SQLITE_ROW) {
		err = -EBADMSG; /* not written by this code */
	} else if (rc == SQLITE_DONE) {
		err = -ENOENT;
	} else {
		err = ctl__sql_fail(st, rc, "job key get");
	}
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_job_key_put(struct ctl_store *st, int64_t job_id, const uint8_t key[CTL_KEY_LEN])
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !key)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_KEY_PUT];
	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(s, 2, key, CTL_KEY_LEN, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "job key put");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_revoke(struct ctl_store *st, int64_t job_id, const char *client)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !client || !*client || strlen(client) >= CTL_CLIENT_MAX)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_REVOKE];
	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 2, client, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, (sqlite3_int64)time(NULL));
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "revoke");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

/* The ids @s (bound, one text column) yields. The caller holds the lock. */
static int id_rows(struct ctl_store *st, sqlite3_stmt *s, char (**ids)[CTL_CLIENT_MAX],
		   size_t *n)
{
	char (*v)[CTL_CLIENT_MAX] = NULL;
	size_t len = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(s, 0);

		if (!t || strlen((const char *)t) >= CTL_CLIENT_MAX)
			continue; /* not written by this code */
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			void *nv = trib_realloc(v, ncap * sizeof(*v));

			if (!nv) {
				trib_free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = ncap;
		}
		memcpy(v[len++], t, strlen((const char *)t) + 1);
	}
	if (rc != SQLITE_DONE) {
		trib_free(v);
		return ctl__sql_fail(st, rc, "client ids");
	}
	*ids = v;
	*n = len;
	return 0;
}

int ctl_store_revoked_list(struct ctl_store *st, int64_t job_id, char (**ids)[CTL_CLIENT_MAX],
			   size_t *n)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !ids || !n)
		return -EINVAL;
	*ids = NULL;
	*n = 0;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_REVOKED_LIST];
	rc = sqlite3_bind_int64(s, 1, job_id);
	err = rc == SQLITE_OK ? id_rows(st, s, ids, n) : ctl__sql_fail(st, rc, "revoked list");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

/* One (job, round, client) row; the caller holds the lock. */
static int rclient_put_one(struct ctl_store *st, int64_t job_id, uint32_t round, const char *id)
{
	sqlite3_stmt *s = st->stmt[S_RCLIENT_PUT];
	int rc, err;

	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, round);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 3, id, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "round client put");
	ctl__stmt_done(s);
	return err;
}

int ctl_store_round_clients_put(struct ctl_store *st, int64_t job_id, uint32_t round,
				const char *const *ids, size_t n, uint32_t prune_below, bool durable)
{
	sqlite3_stmt *s;
	bool relaxed;
	int rc, err;

	if (!st || (n && !ids))
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	relaxed = ctl__sync_relax(st, durable);
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	for (size_t i = 0; !err && i < n; i++)
		err = ids[i] && *ids[i] ? rclient_put_one(st, job_id, round, ids[i]) : -EINVAL;
	if (!err && prune_below) {
		s = st->stmt[S_RCLIENT_PRUNE];
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, prune_below);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "round clients prune");
		ctl__stmt_done(s);
	}
	if (!err)
		err = ctl__exec_sql(st, "COMMIT");
	if (err)
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	ctl__sync_restore(st, relaxed);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_round_clients_list(struct ctl_store *st, int64_t job_id, uint32_t round,
				 char (**ids)[CTL_CLIENT_MAX], size_t *n)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !ids || !n)
		return -EINVAL;
	*ids = NULL;
	*n = 0;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_RCLIENT_LIST];
	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, round);
	err = rc == SQLITE_OK ? id_rows(st, s, ids, n) : ctl__sql_fail(st, rc, "round clients");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}
