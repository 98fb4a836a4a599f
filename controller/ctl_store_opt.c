// SPDX-License-Identifier: MIT
/* A cluster job's server-optimiser state, per model version, durable in the controller's store. */
#include <errno.h>
#include <string.h>

#include "ctl_store_priv.h"
#include "trib_alloc.h"
#include "trib_log.h"

/* One prepared-per-call statement (a round's end: rare next to updates). Lock held. */
static int opt_exec(struct ctl_store *st, const char *sql, int64_t job_id, uint32_t version,
		    const void *blob, size_t len)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, (sqlite3_int64)version);
	if (rc == SQLITE_OK && blob)
		rc = sqlite3_bind_blob64(s, 3, blob, len, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, sql);
}

int ctl_store_opt_put(struct ctl_store *st, int64_t job_id, uint32_t version, const void *state,
		      size_t len)
{
	int err;

	if (!st || !state || !len)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (err)
		goto out;
	err = opt_exec(st, "INSERT OR REPLACE INTO opt_state (job_id, version, state) "
			   "VALUES (?1, ?2, ?3)", job_id, version, state, len);
	/* The version before stays: until the model of @version is written it is the newest. */
	if (!err && version >= 2)
		err = opt_exec(st, "DELETE FROM opt_state WHERE job_id = ?1 AND version < ?2",
			       job_id, version - 1, NULL, 0);
	if (!err)
		err = ctl__exec_sql(st, "COMMIT");
	if (err)
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
out:
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_opt_get(struct ctl_store *st, int64_t job_id, uint32_t version, uint8_t **out,
		      size_t *len)
{
	static const char sql[] = "SELECT state FROM opt_state WHERE job_id = ?1 AND version = ?2";
	sqlite3_stmt *s = NULL;
	int rc, err = 0;

	*out = NULL;
	*len = 0;
	if (!st)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, (sqlite3_int64)version);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const void *b = sqlite3_column_blob(s, 0);
		size_t n = (size_t)sqlite3_column_bytes(s, 0);

		*out = n ? trib_malloc(n) : NULL;
		if (!n || !b) {
			err = -EINVAL; /* an empty state is never written */
		} else if (!*out) {
			err = -ENOMEM;
		} else {
			memcpy(*out, b, n);
			*len = n;
		}
	} else if (rc == SQLITE_DONE) {
		err = -ENOENT;
	} else {
		err = ctl__sql_fail(st, rc, sql);
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}
