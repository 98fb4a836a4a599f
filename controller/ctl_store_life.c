// SPDX-License-Identifier: MIT
/* The store's side of deleting a job: its row (and so every row that references it) and its kv. */
#include <errno.h>
#include <string.h>

#include "ctl_store_priv.h"
#include "trib_log.h"

/* One bound-text DELETE, prepared for this call (deletes are rare). Lock held. */
static int delete_one(struct ctl_store *st, const char *sql, const char *arg, int *changes)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_DONE && changes)
		*changes = sqlite3_changes(st->db);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, sql);
}

int ctl_store_job_remove(struct ctl_store *st, const char *name, const char *kv_prefix)
{
	int changes = 0, err;
	char like[CTL_KV_KEY_MAX + 2];

	if (!st || !name || !kv_prefix || strlen(kv_prefix) >= CTL_KV_KEY_MAX ||
	    strpbrk(kv_prefix, "%_\\"))
		return -EINVAL;
	strcpy(like, kv_prefix);
	strcat(like, "%");
	pthread_mutex_lock(&st->lock);
	/* One transaction: the job and its settings go together or not at all. */
	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (err)
		goto out;
	err = delete_one(st, "DELETE FROM kv WHERE key LIKE ?1", like, NULL);
	if (!err)
		err = delete_one(st, "DELETE FROM jobs WHERE name = ?1", name, &changes);
	if (!err && changes == 0)
		err = -ENOENT;
	if (!err)
		err = ctl__exec_sql(st, "COMMIT");
	if (err)
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
out:
	pthread_mutex_unlock(&st->lock);
	if (!err)
		trib_info("store: job %s removed", name);
	return err;
}
