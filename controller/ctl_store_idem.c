// SPDX-License-Identifier: MIT
/* The store's Idempotency-Key answers, kept once their journal records go (table idem). */
#include "ctl_store_priv.h"

#include <errno.h>
#include <string.h>

/* One answer in; -errno. The caller holds the lock. */
static int idem_put_one(struct ctl_store *st, int64_t job_id, const struct ctl_idem *e)
{
	sqlite3_stmt *s = st->stmt[S_IDEM_PUT];
	int rc, err;

	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(s, 2, e->key, (int)e->key_len, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, e->round);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 4, e->status);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(s, 5, e->body_len ? e->body : "", (int)e->body_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "idem put");
	ctl__stmt_done(s);
	return err;
}

int ctl_store_idem_put(struct ctl_store *st, int64_t job_id, const struct ctl_idem *v, size_t n,
		       uint32_t prune_below, bool durable)
{
	sqlite3_stmt *s;
	bool relaxed;
	int rc, err;

	if (!st || (n && !v))
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	relaxed = ctl__sync_relax(st, durable);
	/* One transaction: one sync for the batch (none if relaxed), and all of it or none. */
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	for (size_t i = 0; !err && i < n; i++)
		err = v[i].key_len ? idem_put_one(st, job_id, &v[i]) : -EINVAL;
	if (!err && prune_below) {
		s = st->stmt[S_IDEM_PRUNE];
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 2, prune_below);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "idem prune");
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

int ctl_store_idem_get(struct ctl_store *st, int64_t job_id, const void *key, size_t key_len,
		       uint32_t round_lo, uint32_t round_hi, int *status, char *body, size_t cap,
		       size_t *body_len)
{
	sqlite3_stmt *s;
	const void *b;
	size_t len;
	int rc, err;

	if (!st || !key || !key_len || !status || !body_len)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_IDEM_GET];
	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(s, 2, key, (int)key_len, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, round_lo);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 4, round_hi);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*status = sqlite3_column_int(s, 0);
		b = sqlite3_column_blob(s, 1);
		len = (size_t)sqlite3_column_bytes(s, 1);
		*body_len = len < cap ? len : cap;
		if (*body_len)
			memcpy(body, b, *body_len);
		err = 0;
	} else if (rc == SQLITE_DONE) {
		err = -ENOENT;
	} else {
		err = ctl__sql_fail(st, rc, "idem get");
	}
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}
