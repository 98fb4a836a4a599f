// SPDX-License-Identifier: MIT
/* Inside the SQLite store: its statements and handle, shared by ctl_store.c and ctl_store_idem.c. */
#ifndef CTL_STORE_PRIV_H
#define CTL_STORE_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <sqlite3.h>

#include "ctl_store.h"

enum ctl_stmt {
	S_JOB_INSERT,
	S_JOB_GET,
	S_JOB_GET_ID,
	S_JOB_LIST,
	S_JOB_ROUND_CAS,
	S_JOB_ROUND,
	S_JOB_DELETE,
	S_ROUND_INSERT,
	S_ROUND_GET,
	S_ROUND_LIST,
	S_KV_GET,
	S_KV_SET,
	S_IDEM_PUT,
	S_IDEM_GET,
	S_IDEM_PRUNE,
	S_KEY_GET,
	S_KEY_PUT,
	S_REVOKE,
	S_REVOKED_LIST,
	S_RCLIENT_PUT,
	S_RCLIENT_LIST,
	S_RCLIENT_PRUNE,
	S_COUNT,
};

/* Statements kept prepared by ctl__prep_kept, beside stmt[]: their SQL (a copy) and handle. */
#define CTL_STMT_KEPT 16
struct ctl_stmt_kept {
	char *sql;
	sqlite3_stmt *s;
};

struct ctl_store {
	sqlite3 *db;
	/* Serialises all use of db and stmt[]: a prepared statement holds bindings and a cursor. */
	pthread_mutex_t lock;
	sqlite3_stmt *stmt[S_COUNT];
	bool wal; /* journal_mode is WAL: a commit may skip its sync (ctl__sync_relax) */
	struct ctl_stmt_kept kept[CTL_STMT_KEPT];
	uint32_t nkept;
};

/* Log @what failing with @rc and map it to -errno. */
int ctl__sql_fail(struct ctl_store *st, int rc, const char *what);
/* Reset a statement and clear its bindings after use. */
void ctl__stmt_done(sqlite3_stmt *s);
/*
 * @sql prepared once and kept (SQLITE_PREPARE_PERSISTENT) for the store's life, found again by
 * its text: for a statement a request runs (GET /v1/jobs/{job}'s evaluation status was
 * parsed and planned by SQLite on every call: a quarter of that request's CPU). Past
 * CTL_STMT_KEPT texts it is prepared per call. Give it back with ctl__unprep. Lock held.
 */
int ctl__prep_kept(struct ctl_store *st, const char *sql, sqlite3_stmt **out);
/* Done with @s (NULL: nothing): reset and cleared if kept, else finalized. Lock held. */
void ctl__unprep(struct ctl_store *st, sqlite3_stmt *s);
/* Run SQL text without parameters; 0 or -errno (logged). */
int ctl__exec_sql(struct ctl_store *st, const char *sql);
/* Duplicate text column @col into *dst (owned by the caller); NULL stays NULL. 0 or -ENOMEM. */
int ctl__col_dup(sqlite3_stmt *s, int col, char **dst);
/*
 * The next commits without their sync (synchronous NORMAL: written to the WAL file, so a
 * crash of the process keeps them, a crash of the machine may not) when @durable is false and
 * the store is in WAL mode, where NORMAL cannot corrupt the file. Returns whether it relaxed;
 * ctl__sync_restore(st, that) puts FULL back. The lock is held across both.
 */
bool ctl__sync_relax(struct ctl_store *st, bool durable);
void ctl__sync_restore(struct ctl_store *st, bool relaxed);

#endif
