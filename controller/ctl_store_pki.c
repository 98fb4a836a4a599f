// SPDX-License-Identifier: MIT
/*
 * Join tokens and node certificates in the store. `tributary controller
 * join-token` and `revoke` write here from another process while the
 * controller runs (WAL and the busy timeout make that safe); the controller
 * reads here on each enrolment and join, so it sees them at once.
 */
#include <errno.h>
#include <string.h>

#include "trib_alloc.h"

#include "ctl_store_priv.h"

static int prep(struct ctl_store *st, const char *sql, sqlite3_stmt **s)
{
	int rc = sqlite3_prepare_v2(st->db, sql, -1, s, NULL);

	return rc == SQLITE_OK ? 0 : ctl__sql_fail(st, rc, "prepare (pki)");
}

int ctl_store_jtoken_put(struct ctl_store *st, const char *id, const char *hash_hex,
			 int64_t expires_unix)
{
	sqlite3_stmt *s = NULL;
	int err, rc;

	pthread_mutex_lock(&st->lock);
	err = prep(st, "INSERT INTO join_tokens (id, hash, expires_unix) VALUES (?, ?, ?)", &s);
	if (!err) {
		sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, hash_hex, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, expires_unix);
		rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "join token insert");
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

static bool hex_eq(const char *a, const char *b)
{
	size_t n = strlen(a);
	unsigned char d = 0;

	if (n != strlen(b))
		return false;
	for (size_t i = 0; i < n; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return !d;
}

int ctl_store_jtoken_use(struct ctl_store *st, const char *id, const char *hash_hex,
			 const char *name, int64_t now)
{
	sqlite3_stmt *s = NULL;
	int err, rc;

	pthread_mutex_lock(&st->lock);
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (err)
		goto out;
	err = prep(st, "SELECT hash, expires_unix, used_unix FROM join_tokens WHERE id = ?", &s);
	if (err)
		goto end;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		err = -ENOENT;
	} else if (rc != SQLITE_ROW) {
		err = ctl__sql_fail(st, rc, "join token get");
	} else if (!hex_eq((const char *)sqlite3_column_text(s, 0), hash_hex)) {
		err = -ENOENT;
	} else if (sqlite3_column_int64(s, 2)) {
		err = -EALREADY;
	} else if (sqlite3_column_int64(s, 1) <= now) {
		err = -ETIME;
	}
	sqlite3_finalize(s);
	s = NULL;
	if (err)
		goto end;
	err = prep(st, "UPDATE join_tokens SET used_unix = ?, used_by = ? WHERE id = ?", &s);
	if (!err) {
		sqlite3_bind_int64(s, 1, now ? now : 1);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, id, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "join token use");
	}
	sqlite3_finalize(s);
end:
	if (err)
		ctl__exec_sql(st, "ROLLBACK");
	else
		err = ctl__exec_sql(st, "COMMIT");
out:
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_cert_put(struct ctl_store *st, const char *serial, const char *name, int64_t now)
{
	sqlite3_stmt *s = NULL;
	int err, rc;

	pthread_mutex_lock(&st->lock);
	err = prep(st, "INSERT INTO node_certs (serial, name, issued_unix) VALUES (?, ?, ?)", &s);
	if (!err) {
		sqlite3_bind_text(s, 1, serial, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, now);
		rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "node cert insert");
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_cert_count(struct ctl_store *st, const char *name, unsigned *n)
{
	sqlite3_stmt *s = NULL;
	int err, rc;

	*n = 0;
	pthread_mutex_lock(&st->lock);
	err = prep(st, "SELECT count(*) FROM node_certs WHERE name = ? AND revoked_unix = 0", &s);
	if (!err) {
		sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			*n = (unsigned)sqlite3_column_int64(s, 0);
		else
			err = ctl__sql_fail(st, rc, "node cert count");
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_cert_ok(struct ctl_store *st, const char *serial, bool *ok)
{
	sqlite3_stmt *s = NULL;
	int err, rc;

	*ok = false;
	pthread_mutex_lock(&st->lock);
	err = prep(st, "SELECT revoked_unix FROM node_certs WHERE serial = ?", &s);
	if (!err) {
		sqlite3_bind_text(s, 1, serial, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			*ok = sqlite3_column_int64(s, 0) == 0;
		else if (rc != SQLITE_DONE)
			err = ctl__sql_fail(st, rc, "node cert get");
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_cert_revoke(struct ctl_store *st, const char *name, int64_t now, unsigned *n)
{
	sqlite3_stmt *s = NULL;
	int err, rc;

	*n = 0;
	pthread_mutex_lock(&st->lock);
	err = prep(st, "UPDATE node_certs SET revoked_unix = ? WHERE name = ? AND revoked_unix = 0",
		   &s);
	if (!err) {
		sqlite3_bind_int64(s, 1, now ? now : 1);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "node cert revoke");
		if (!err)
			*n = (unsigned)sqlite3_changes(st->db);
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_cert_revoked(struct ctl_store *st, char ***serials, size_t *n)
{
	sqlite3_stmt *s = NULL;
	size_t cnt = 0, bytes = 0, off;
	char **out = NULL;
	int err, rc;

	*serials = NULL;
	*n = 0;
	pthread_mutex_lock(&st->lock);
	/* One read transaction: `revoke` in another process cannot change the rows between passes. */
	err = ctl__exec_sql(st, "BEGIN");
	if (err) {
		pthread_mutex_unlock(&st->lock);
		return err;
	}
	err = prep(st, "SELECT serial FROM node_certs WHERE revoked_unix != 0 ORDER BY serial", &s);
	/* Twice: the sizes, then the copies (one block the caller frees at once). */
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		cnt++;
		bytes += (size_t)sqlite3_column_bytes(s, 0) + 1;
	}
	if (!err && rc != SQLITE_DONE)
		err = ctl__sql_fail(st, rc, "revoked list");
	if (!err && cnt) {
		out = trib_malloc(cnt * sizeof(*out) + bytes);
		err = out ? 0 : -ENOMEM;
	}
	if (!err && cnt) {
		sqlite3_reset(s);
		off = cnt * sizeof(*out);
		for (size_t i = 0; i < cnt && sqlite3_step(s) == SQLITE_ROW; i++) {
			const char *v = (const char *)sqlite3_column_text(s, 0);

			if (off + strlen(v) + 1 > cnt * sizeof(*out) + bytes)
				break;
			out[i] = (char *)out + off;
			memcpy(out[i], v, strlen(v) + 1);
			off += strlen(v) + 1;
			*n = i + 1;
		}
		*serials = out;
	}
	sqlite3_finalize(s);
	ctl__exec_sql(st, "COMMIT");
	pthread_mutex_unlock(&st->lock);
	return err;
}
