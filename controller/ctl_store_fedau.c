// SPDX-License-Identifier: MIT
/* The store's FedAU rows: each client's participation intervals, per job (schema 7). */
#include <errno.h>
#include <string.h>

#include "ctl_store_priv.h"
#include "trib_alloc.h"

/* Statements are prepared per call: one put per committed round, one list per restart. */
static int prep(struct ctl_store *st, const char *sql, sqlite3_stmt **s)
{
	int rc = sqlite3_prepare_v2(st->db, sql, -1, s, NULL);

	return rc == SQLITE_OK ? 0 : ctl__sql_fail(st, rc, sql);
}

static int put_locked(struct ctl_store *st, int64_t job_id, const struct ctl_fedau_row *rows,
		      size_t n, const char *const *gone, size_t ngone)
{
	sqlite3_stmt *up = NULL, *del = NULL;
	int err = prep(st, "INSERT OR REPLACE INTO fedau_clients (job_id, client, last_round, "
			   "intervals, total) VALUES (?1, ?2, ?3, ?4, ?5)", &up);

	if (!err)
		err = prep(st, "DELETE FROM fedau_clients WHERE job_id = ?1 AND client = ?2", &del);
	for (size_t i = 0; !err && i < n; i++) {
		int rc;

		if (!memchr(rows[i].client, 0, sizeof(rows[i].client)) || rows[i].total > INT64_MAX) {
			err = -EINVAL;
			break;
		}
		sqlite3_bind_int64(up, 1, job_id);
		sqlite3_bind_text(up, 2, rows[i].client, -1, SQLITE_STATIC);
		sqlite3_bind_int64(up, 3, rows[i].last_round);
		sqlite3_bind_int64(up, 4, rows[i].intervals);
		sqlite3_bind_int64(up, 5, (int64_t)rows[i].total);
		rc = sqlite3_step(up);
		ctl__stmt_done(up);
		if (rc != SQLITE_DONE)
			err = ctl__sql_fail(st, rc, "fedau put");
	}
	for (size_t i = 0; !err && i < ngone; i++) {
		int rc;

		sqlite3_bind_int64(del, 1, job_id);
		sqlite3_bind_text(del, 2, gone[i], -1, SQLITE_STATIC);
		rc = sqlite3_step(del);
		ctl__stmt_done(del);
		if (rc != SQLITE_DONE)
			err = ctl__sql_fail(st, rc, "fedau delete");
	}
	sqlite3_finalize(up);
	sqlite3_finalize(del);
	return err;
}

int ctl_store_fedau_put(struct ctl_store *st, int64_t job_id, const struct ctl_fedau_row *rows,
			size_t n, const char *const *gone, size_t ngone)
{
	int err;

	if (!st || (n && !rows) || (ngone && !gone))
		return -EINVAL;
	if (!n && !ngone)
		return 0;
	pthread_mutex_lock(&st->lock);
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (!err) {
		err = put_locked(st, job_id, rows, n, gone, ngone);
		if (!err)
			err = ctl__exec_sql(st, "COMMIT");
		if (err)
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	}
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_fedau_list(struct ctl_store *st, int64_t job_id, struct ctl_fedau_row **rows,
			 size_t *n)
{
	sqlite3_stmt *s = NULL;
	struct ctl_fedau_row *v = NULL;
	size_t cnt = 0, cap = 0;
	int err, rc = SQLITE_DONE;

	*rows = NULL;
	*n = 0;
	if (!st)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = prep(st, "SELECT client, last_round, intervals, total FROM fedau_clients "
		       "WHERE job_id = ?1 ORDER BY client", &s);
	if (!err)
		sqlite3_bind_int64(s, 1, job_id);
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const unsigned char *c = sqlite3_column_text(s, 0);

		if (cnt == cap) {
			size_t nc = cap ? 2 * cap : 64;
			struct ctl_fedau_row *nv = trib_realloc(v, nc * sizeof(*v));

			if (!nv) {
				err = -ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		memset(&v[cnt], 0, sizeof(v[cnt]));
		if (!c || strlen((const char *)c) >= sizeof(v[cnt].client) ||
		    sqlite3_column_int64(s, 3) < 0) {
			err = -EPROTO; /* not a row this code wrote */
			break;
		}
		strcpy(v[cnt].client, (const char *)c);
		v[cnt].last_round = sqlite3_column_int64(s, 1);
		v[cnt].intervals = (uint32_t)sqlite3_column_int64(s, 2);
		v[cnt].total = (uint64_t)sqlite3_column_int64(s, 3);
		cnt++;
	}
	if (!err && rc != SQLITE_DONE)
		err = ctl__sql_fail(st, rc, "fedau list");
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	if (err) {
		trib_free(v);
		return err;
	}
	*rows = v;
	*n = cnt;
	return 0;
}
