// SPDX-License-Identifier: MIT
/* The controller's SQLite store: jobs, rounds and settings that must survive a restart. */
#include "ctl_store.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ctl_sqlmem.h"
#include "ctl_store_priv.h"
#include "trib_alloc.h"
#include "trib_log.h"

/*
 * Schema migrations: migrations[v] takes a file at user_version v to v + 1.
 * Append, never edit: a file in the field was written by one of these.
 * AUTOINCREMENT keeps a deleted job's id from being handed to a new job, so a
 * stale id held elsewhere (a runtime, a model path) can never alias.
 */
static const char *const migrations[] = {
	/* 0 -> 1: the first schema. */
	"CREATE TABLE jobs ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  name TEXT NOT NULL UNIQUE,"
	"  token TEXT NOT NULL,"
	"  clients_per_round INTEGER NOT NULL,"
	"  algorithm TEXT NOT NULL,"
	"  schema_json TEXT NOT NULL,"
	"  params_json TEXT,"
	"  round INTEGER NOT NULL DEFAULT 0,"
	"  created_unix INTEGER NOT NULL"
	");"
	"CREATE TABLE rounds ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  round INTEGER NOT NULL,"
	"  closed_unix INTEGER NOT NULL,"
	"  n_updates INTEGER NOT NULL,"
	"  total_weight REAL NOT NULL,"
	"  duration_ms INTEGER NOT NULL,"
	"  model_path TEXT,"
	"  PRIMARY KEY (job_id, round)"
	");"
	"CREATE TABLE kv ("
	"  key TEXT PRIMARY KEY,"
	"  val TEXT NOT NULL"
	");",
	/* 1 -> 2: the answers of Idempotency-Keys whose round is stored (ctl_store_idem_put()). */
	"CREATE TABLE idem ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  key BLOB NOT NULL,"
	"  round INTEGER NOT NULL,"
	"  status INTEGER NOT NULL,"
	"  body BLOB NOT NULL,"
	"  PRIMARY KEY (job_id, key, round)"
	");",
	/*
	 * 2 -> 3: client credentials (issue 13): each job's signing key, the client ids it
	 * revoked, the clients counted in a round whose journal records are gone, and a round
	 * record's distinct clients.
	 */
	"CREATE TABLE job_keys ("
	"  job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,"
	"  key BLOB NOT NULL"
	");"
	"CREATE TABLE revoked ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  client TEXT NOT NULL,"
	"  revoked_unix INTEGER NOT NULL,"
	"  PRIMARY KEY (job_id, client)"
	");"
	"CREATE TABLE round_clients ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  round INTEGER NOT NULL,"
	"  client TEXT NOT NULL,"
	"  PRIMARY KEY (job_id, round, client)"
	");"
	"ALTER TABLE rounds ADD COLUMN clients INTEGER NOT NULL DEFAULT 0;",
	/* 3 -> 4: a cluster's nodes and rounds in flight, for a controller restart (ctl_store_x). */
	"CREATE TABLE cluster_nodes ("
	"  rank INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  addr TEXT NOT NULL,"
	"  epoch INTEGER NOT NULL"
	");"
	"CREATE TABLE cluster_rounds ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  round INTEGER NOT NULL,"
	"  state INTEGER NOT NULL,"
	"  detail TEXT NOT NULL,"
	"  PRIMARY KEY (job_id, round)"
	");",
	/*
	 * 4 -> 5: the clients counted in a cluster's rounds in flight, with the rank that folds
	 * each one's update, so that one update per client per round holds across a controller
	 * restart (ctl_store_xround_clients_put()).
	 */
	"CREATE TABLE cluster_round_clients ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  round INTEGER NOT NULL,"
	"  client TEXT NOT NULL,"
	"  rank INTEGER NOT NULL,"
	"  PRIMARY KEY (job_id, round, client)"
	");",
	/*
	 * 5 -> 6: round records on a single node (issue 15): when a round opened and closed,
	 * its bytes and its metrics' means; federated evaluations, one row each (a client's
	 * second for a version, or a key's, is refused by the unique indexes) and each
	 * version's aggregate (ctl_store_rec.c).
	 */
	"ALTER TABLE rounds ADD COLUMN opened_at REAL;"
	"ALTER TABLE rounds ADD COLUMN closed_at REAL;"
	"ALTER TABLE rounds ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE rounds ADD COLUMN metrics_updates INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE rounds ADD COLUMN metrics TEXT;"
	"CREATE TABLE evaluations ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  version INTEGER NOT NULL,"
	"  nth INTEGER NOT NULL,"
	"  client TEXT NOT NULL,"
	"  idem_key BLOB,"
	"  samples INTEGER NOT NULL,"
	"  at REAL NOT NULL,"
	"  PRIMARY KEY (job_id, version, nth)"
	");"
	"CREATE UNIQUE INDEX evaluations_client ON evaluations (job_id, version, client) "
	"  WHERE client <> '';"
	"CREATE UNIQUE INDEX evaluations_key ON evaluations (job_id, version, idem_key) "
	"  WHERE idem_key IS NOT NULL;"
	"CREATE TABLE eval_versions ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  version INTEGER NOT NULL,"
	"  clients INTEGER NOT NULL,"
	"  samples INTEGER NOT NULL,"
	"  sums TEXT NOT NULL,"
	"  PRIMARY KEY (job_id, version)"
	");",
	/* 6 -> 7: the cluster's join tokens (hashed) and node certificates (ctl_store_pki.c). */
	"CREATE TABLE join_tokens ("
	"  id TEXT PRIMARY KEY,"
	"  hash TEXT NOT NULL,"
	"  expires_unix INTEGER NOT NULL,"
	"  used_unix INTEGER NOT NULL DEFAULT 0,"
	"  used_by TEXT NOT NULL DEFAULT ''"
	");"
	"CREATE TABLE node_certs ("
	"  serial TEXT PRIMARY KEY,"
	"  name TEXT NOT NULL,"
	"  issued_unix INTEGER NOT NULL,"
	"  revoked_unix INTEGER NOT NULL DEFAULT 0"
	");",
	/*
	 * 7 -> 8: FedAU's per-client participation intervals (ctl_store_fedau.c): the round the
	 * client last took part in, and the intervals recorded so far (count and sum).
	 */
	"CREATE TABLE fedau_clients ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  client TEXT NOT NULL,"
	"  last_round INTEGER NOT NULL,"
	"  intervals INTEGER NOT NULL,"
	"  total INTEGER NOT NULL,"
	"  PRIMARY KEY (job_id, client)"
	");",
	/*
	 * 8 -> 9: a cluster job's server-optimiser state (m, v, step: fn_opt's serialised
	 * form), one row per model version it belongs to; the controller keeps the newest
	 * two (ctl_store_opt.c).
	 */
	"CREATE TABLE opt_state ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  version INTEGER NOT NULL,"
	"  state BLOB NOT NULL,"
	"  PRIMARY KEY (job_id, version)"
	");",
	/*
	 * 9 -> 10: a cluster's client-selection tasks (issue 15): who was handed a task of
	 * which round of a job with "selection", so that the count survives a controller
	 * restart and a task is not handed twice (ctl_store_task.c).
	 */
	"CREATE TABLE tasks ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	"  round INTEGER NOT NULL,"
	"  client TEXT NOT NULL,"
	"  granted_unix INTEGER NOT NULL,"
	"  PRIMARY KEY (job_id, round, client)"
	");",
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == CTL_STORE_SCHEMA_VERSION,
	       "one migration per schema version");

#define JOB_COLS "id, name, token, clients_per_round, algorithm, schema_json, params_json, " \
		 "round, created_unix"
#define ROUND_COLS "job_id, round, closed_unix, n_updates, total_weight, duration_ms, " \
		   "model_path, clients"

/* Every statement takes its user-supplied values as bound parameters, never as SQL text. */
static const char *const stmt_sql[S_COUNT] = {
	[S_JOB_INSERT] = "INSERT INTO jobs (name, token, clients_per_round, algorithm, "
			 "schema_json, params_json, round, created_unix) "
			 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[S_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE name = ?1",
	[S_JOB_GET_ID] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
	[S_JOB_LIST] = "SELECT " JOB_COLS " FROM jobs ORDER BY id",
	[S_JOB_ROUND_CAS] = "UPDATE jobs SET round = ?3 WHERE id = ?1 AND round = ?2",
	[S_JOB_ROUND] = "SELECT round FROM jobs WHERE id = ?1",
	[S_JOB_DELETE] = "DELETE FROM jobs WHERE name = ?1",
	[S_ROUND_INSERT] = "INSERT INTO rounds (" ROUND_COLS ") "
			   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[S_ROUND_GET] = "SELECT " ROUND_COLS " FROM rounds WHERE job_id = ?1 AND round = ?2",
	[S_ROUND_LIST] = "SELECT " ROUND_COLS " FROM rounds WHERE job_id = ?1 ORDER BY round",
	[S_KV_GET] = "SELECT val FROM kv WHERE key = ?1",
	[S_KV_SET] = "INSERT INTO kv (key, val) VALUES (?1, ?2) "
		     "ON CONFLICT (key) DO UPDATE SET val = excluded.val",
	[S_IDEM_PUT] = "INSERT OR IGNORE INTO idem (job_id, key, round, status, body) "
		       "VALUES (?1, ?2, ?3, ?4, ?5)",
	[S_IDEM_GET] = "SELECT status, body FROM idem WHERE job_id = ?1 AND key = ?2 "
		       "AND round >= ?3 AND round <= ?4 ORDER BY round LIMIT 1",
	[S_IDEM_PRUNE] = "DELETE FROM idem WHERE job_id = ?1 AND round < ?2",
	[S_KEY_GET] = "SELECT key FROM job_keys WHERE job_id = ?1",
	[S_KEY_PUT] = "INSERT INTO job_keys (job_id, key) VALUES (?1, ?2)",
	[S_REVOKE] = "INSERT OR IGNORE INTO revoked (job_id, client, revoked_unix) "
		     "VALUES (?1, ?2, ?3)",
	[S_REVOKED_LIST] = "SELECT client FROM revoked WHERE job_id = ?1 ORDER BY client",
	[S_RCLIENT_PUT] = "INSERT OR IGNORE INTO round_clients (job_id, round, client) "
			  "VALUES (?1, ?2, ?3)",
	[S_RCLIENT_LIST] = "SELECT client FROM round_clients WHERE job_id = ?1 AND round = ?2",
	[S_RCLIENT_PRUNE] = "DELETE FROM round_clients WHERE job_id = ?1 AND round < ?2",
};

/* Map an (extended) SQLite result code to 0 or -errno. */
static int sql_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_FULL:
		return -ENOSPC; /* the disk is full: a failed model commit names it so */
	case SQLITE_CONSTRAINT:
		if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return -EEXIST;
		if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
			return -ENOENT;
		return -EIO;
	default:
		return -EIO;
	}
}

/* Convert @rc and log it if it is a failure the caller cannot have caused. Lock held. */
int ctl__sql_fail(struct ctl_store *st, int rc, const char *what)
{
	int err = sql_errno(rc);

	if (err == -EIO || err == -EBUSY)
		trib_error("store: %s: %s (%d)", what, sqlite3_errmsg(st->db), rc);
	return err;
}

/* Leave a statement holding no cursor (and so no read lock) and no borrowed bindings. */
void ctl__stmt_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* True if @s is NUL-terminated within @cap bytes and not empty. */
static bool field_ok(const char *s, size_t cap)
{
	return s[0] != '\0' && memchr(s, '\0', cap) != NULL;
}

void ctl_job_clear(struct ctl_job *job)
{
	if (!job)
		return;
	trib_free(job->schema_json);
	trib_free(job->params_json);
	job->schema_json = NULL;
	job->params_json = NULL;
}

void ctl_round_clear(struct ctl_round *r)
{
	if (!r)
		return;
	trib_free(r->model_path);
	r->model_path = NULL;
}

/* Run one constant SQL text (no user data), for pragmas and migrations. Lock held or opening. */
int ctl__exec_sql(struct ctl_store *st, const char *sql)
{
	int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : ctl__sql_fail(st, rc, sql);
}

int ctl__prep_kept(struct ctl_store *st, const char *sql, sqlite3_stmt **out)
{
	struct ctl_stmt_kept *k;
	int rc;

	for (uint32_t i = 0; i < st->nkept; i++) {
		if (!strcmp(st->kept[i].sql, sql)) {
			*out = st->kept[i].s;
			return 0;
		}
	}
	rc = sqlite3_prepare_v3(st->db, sql, -1,
				st->nkept < CTL_STMT_KEPT ? SQLITE_PREPARE_PERSISTENT : 0, out, NULL);
	if (rc != SQLITE_OK) {
		*out = NULL;
		return ctl__sql_fail(st, rc, sql);
	}
	if (st->nkept == CTL_STMT_KEPT)
		return 0; /* full: this one is finalized after its use */
	k = &st->kept[st->nkept];
	k->sql = trib_strdup(sql);
	if (!k->sql)
		return 0; /* no copy to find it by: per call too */
	k->s = *out;
	st->nkept++;
	return 0;
}

void ctl__unprep(struct ctl_store *st, sqlite3_stmt *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; i < st->nkept; i++) {
		if (st->kept[i].s == s) {
			ctl__stmt_done(s);
			return;
		}
	}
	sqlite3_finalize(s);
}

bool ctl__sync_relax(struct ctl_store *st, bool durable)
{
	return !durable && st->wal && !ctl__exec_sql(st, "PRAGMA synchronous = NORMAL");
}

void ctl__sync_restore(struct ctl_store *st, bool relaxed)
{
	/* Failing, the connection would stay NORMAL for every later commit: say so loudly. */
	if (relaxed && ctl__exec_sql(st, "PRAGMA synchronous = FULL"))
		trib_error("store: synchronous could not be set back to FULL");
}

/* Read a one-row, one-integer pragma such as user_version. */
static int pragma_int(struct ctl_store *st, const char *sql, int64_t *val)
{
	sqlite3_stmt *s;
	int rc;

	rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return ctl__sql_fail(st, rc, sql);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*val = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : ctl__sql_fail(st, rc, sql);
}

/* Switch to WAL; a file system without shared-memory support keeps the old journal, logged. */
static int set_wal(struct ctl_store *st)
{
	sqlite3_stmt *s;
	const unsigned char *mode;
	int rc, err = 0;

	rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
	if (rc != SQLITE_OK)
		return ctl__sql_fail(st, rc, "journal_mode");
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		err = ctl__sql_fail(st, rc, "journal_mode");
	} else {
		mode = sqlite3_column_text(s, 0);
		st->wal = mode && !strcasecmp((const char *)mode, "wal");
		if (mode && strcasecmp((const char *)mode, "wal") &&
		    strcasecmp((const char *)mode, "memory"))
			trib_warn("store: WAL unavailable, journal mode is %s", (const char *)mode);
	}
	sqlite3_finalize(s);
	return err;
}

/*
 * Bring the schema to CTL_STORE_SCHEMA_VERSION. The version is read inside an
 * immediate (write-locked) transaction so that two processes opening a new
 * file do not both migrate it.
 */
static int migrate(struct ctl_store *st)
{
	int64_t ver = 0;
	char sql[48];
	int err;

	err = ctl__exec_sql(st, "BEGIN IMMEDIATE");
	if (err)
		return err;
	err = pragma_int(st, "PRAGMA user_version", &ver);
	if (err)
		goto err_rollback;
	if (ver < 0 || ver > CTL_STORE_SCHEMA_VERSION) {
		trib_error("store: schema version %lld is not one this build knows (%d)",
			   (long long)ver, CTL_STORE_SCHEMA_VERSION);
		err = -EPROTO;
		goto err_rollback;
	}
	if (ver == CTL_STORE_SCHEMA_VERSION) {
		err = ctl__exec_sql(st, "COMMIT");
		if (err)
			goto err_rollback;
		return 0;
	}
	for (; ver < CTL_STORE_SCHEMA_VERSION; ver++) {
		err = ctl__exec_sql(st, migrations[ver]);
		if (err)
			goto err_rollback;
	}
	/* A pragma takes no bound parameters; the value is our own integer. */
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", CTL_STORE_SCHEMA_VERSION);
	err = ctl__exec_sql(st, sql);
	if (err)
		goto err_rollback;
	err = ctl__exec_sql(st, "COMMIT");
	if (err)
		goto err_rollback;
	trib_info("store: schema at version %d", CTL_STORE_SCHEMA_VERSION);
	return 0;

err_rollback:
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	return err;
}

/* sqlite creates files with mode 0644; the store holds tokens, so make it first, 0600. */
static int precreate(const char *path)
{
	int fd;

	if (!strcmp(path, ":memory:") || !strncmp(path, "file:", 5))
		return 0;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

int ctl_store_open(const char *path, struct ctl_store **out)
{
	struct ctl_store *st;
	int rc, err, i;

	if (!path || !out)
		return -EINVAL;
	if (!ctl_sqlmem_routed())
		trib_debug("store: SQLite allocates by itself (failure injection does not reach it)");
	st = trib_calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	err = -pthread_mutex_init(&st->lock, NULL);
	if (err)
		goto err_free;
	err = precreate(path);
	if (err) {
		trib_error("store: create %s: %s", path, strerror(-err));
		goto err_mutex;
	}
	rc = sqlite3_open_v2(path, &st->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
			     NULL);
	if (rc != SQLITE_OK) {
		err = st->db ? ctl__sql_fail(st, rc, path) : -ENOMEM;
		goto err_close_db;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_busy_timeout(st->db, 5000);
	err = ctl__exec_sql(st, "PRAGMA foreign_keys = ON");
	if (err)
		goto err_close_db;
	err = set_wal(st);
	if (err)
		goto err_close_db;
	err = ctl__exec_sql(st, "PRAGMA synchronous = FULL");
	if (err)
		goto err_close_db;
	err = migrate(st);
	if (err)
		goto err_close_db;
	for (i = 0; i < S_COUNT; i++) {
		rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
					&st->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			err = ctl__sql_fail(st, rc, stmt_sql[i]);
			goto err_finalize;
		}
	}
	*out = st;
	return 0;

err_finalize:
	for (i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
err_close_db:
	sqlite3_close(st->db);
err_mutex:
	pthread_mutex_destroy(&st->lock);
err_free:
	trib_free(st);
	return err;
}

void ctl_store_close(struct ctl_store *st)
{
	int i;

	if (!st)
		return;
	for (i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	for (uint32_t k = 0; k < st->nkept; k++) {
		sqlite3_finalize(st->kept[k].s);
		trib_free(st->kept[k].sql);
	}
	if (sqlite3_close(st->db) != SQLITE_OK)
		trib_warn("store: close: %s", sqlite3_errmsg(st->db));
	pthread_mutex_destroy(&st->lock);
	trib_free(st);
}

/* Copy text column @col into @dst (@cap bytes). -EIO if it does not fit: the row is corrupt. */
static int col_copy(sqlite3_stmt *s, int col, char *dst, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	size_t n;

	if (!t) {
		dst[0] = '\0';
		return sqlite3_errcode(sqlite3_db_handle(s)) == SQLITE_NOMEM ? -ENOMEM : 0;
	}
	n = (size_t)sqlite3_column_bytes(s, col);
	if (n >= cap)
		return -EIO;
	memcpy(dst, t, n);
	dst[n] = '\0';
	return 0;
}

/* Duplicate text column @col into *dst (owned by the caller); NULL stays NULL. */
int ctl__col_dup(sqlite3_stmt *s, int col, char **dst)
{
	const unsigned char *t;

	*dst = NULL;
	if (sqlite3_column_type(s, col) == SQLITE_NULL)
		return 0;
	t = sqlite3_column_text(s, col);
	if (!t)
		return -ENOMEM;
	*dst = trib_strndup((const char *)t, (size_t)sqlite3_column_bytes(s, col));
	return *dst ? 0 : -ENOMEM;
}

/* Fill *out from the current row of a JOB_COLS query; on failure *out is zeroed. */
static int job_from_row(sqlite3_stmt *s, struct ctl_job *out)
{
	int err;

	memset(out, 0, sizeof(*out));
	out->id = sqlite3_column_int64(s, 0);
	err = col_copy(s, 1, out->name, sizeof(out->name));
	if (!err)
		err = col_copy(s, 2, out->token, sizeof(out->token));
	out->clients_per_round = (uint32_t)sqlite3_column_int64(s, 3);
	if (!err)
		err = col_copy(s, 4, out->algorithm, sizeof(out->algorithm));
	if (!err)
		err = ctl__col_dup(s, 5, &out->schema_json);
	if (!err && !out->schema_json)
		err = -EIO;
	if (!err)
		err = ctl__col_dup(s, 6, &out->params_json);
	out->round = (uint32_t)sqlite3_column_int64(s, 7);
	out->created_unix = sqlite3_column_int64(s, 8);
	if (err) {
		ctl_job_clear(out);
		memset(out, 0, sizeof(*out));
	}
	return err;
}

int ctl_store_job_create(struct ctl_store *st, struct ctl_job *job)
{
	sqlite3_stmt *s;
	int64_t created;
	int rc, err;

	if (!st || !job || !trib_job_name_valid(job->name) || !job->schema_json ||
	    !field_ok(job->algorithm, sizeof(job->algorithm)) ||
	    !memchr(job->token, '\0', sizeof(job->token)))
		return -EINVAL;
	if (!job->token[0]) {
		err = trib_token_new(job->token, sizeof(job->token));
		if (err)
			return err;
	}
	created = job->created_unix ? job->created_unix : (int64_t)time(NULL);

	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_JOB_INSERT];
	rc = sqlite3_bind_text(s, 1, job->name, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 2, job->token, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, job->clients_per_round);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 4, job->algorithm, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 5, job->schema_json, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = job->params_json ? sqlite3_bind_text(s, 6, job->params_json, -1, SQLITE_STATIC)
				      : sqlite3_bind_null(s, 6);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 7, job->round);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 8, created);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		job->id = sqlite3_last_insert_rowid(st->db);
		job->created_unix = created;
		err = 0;
	} else {
		err = ctl__sql_fail(st, rc, "job create");
	}
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	if (!err)
		trib_info("store: job %s created (id %lld)", job->name, (long long)job->id);
	return err;
}

/* Step a bound JOB_COLS query expected to yield at most one row. Lock held. */
static int job_get_one(struct ctl_store *st, sqlite3_stmt *s, int rc, struct ctl_job *out)
{
	int err;

	/* Zeroed whatever fails, the step too (SQLITE_NOMEM): no stale pointer for the caller. */
	memset(out, 0, sizeof(*out));
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		err = job_from_row(s, out);
	else if (rc == SQLITE_DONE)
		err = -ENOENT;
	else
		err = ctl__sql_fail(st, rc, "job get");
	ctl__stmt_done(s);
	return err;
}

int ctl_store_job_get(struct ctl_store *st, const char *name, struct ctl_job *out)
{
	sqlite3_stmt *s;
	int err;

	if (!st || !name || !out)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_JOB_GET];
	err = job_get_one(st, s, sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC), out);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_job_get_by_id(struct ctl_store *st, int64_t id, struct ctl_job *out)
{
	sqlite3_stmt *s;
	int err;

	if (!st || !out)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_JOB_GET_ID];
	err = job_get_one(st, s, sqlite3_bind_int64(s, 1, id), out);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_job_list(struct ctl_store *st, struct ctl_job **jobs, size_t *n)
{
	struct ctl_job *arr = NULL, *grown;
	size_t len = 0, cap = 0, i;
	sqlite3_stmt *s;
	int rc, err = 0;

	if (!st || !jobs || !n)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_JOB_LIST];
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? cap * 2 : 8;
			grown = trib_realloc(arr, cap * sizeof(*arr));
			if (!grown) {
				err = -ENOMEM;
				break;
			}
			arr = grown;
		}
		err = job_from_row(s, &arr[len]);
		if (err)
			break;
		len++;
	}
	if (!err && rc != SQLITE_DONE)
		err = ctl__sql_fail(st, rc, "job list");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	if (err) {
		for (i = 0; i < len; i++)
			ctl_job_clear(&arr[i]);
		trib_free(arr);
		return err;
	}
	*jobs = arr;
	*n = len;
	return 0;
}

int ctl_store_round_advance(struct ctl_store *st, int64_t job_id, uint32_t expected_round,
			    uint32_t new_round)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_JOB_ROUND_CAS];
	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, expected_round);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, new_round);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "round advance");
	ctl__stmt_done(s);
	if (!err && sqlite3_changes(st->db) == 0) {
		/* Nothing matched: tell a lost race from a missing job. */
		s = st->stmt[S_JOB_ROUND];
		rc = sqlite3_bind_int64(s, 1, job_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			err = -ESTALE;
		else if (rc == SQLITE_DONE)
			err = -ENOENT;
		else
			err = ctl__sql_fail(st, rc, "round read");
		ctl__stmt_done(s);
	}
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_job_delete(struct ctl_store *st, const char *name)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !name)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_JOB_DELETE];
	rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "job delete");
	ctl__stmt_done(s);
	if (!err && sqlite3_changes(st->db) == 0)
		err = -ENOENT;
	pthread_mutex_unlock(&st->lock);
	if (!err)
		trib_info("store: job %s deleted", name);
	return err;
}
