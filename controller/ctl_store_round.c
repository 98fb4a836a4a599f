// SPDX-License-Identifier: MIT
/* The store's rounds (a record per finished round, for status and a restart) and its settings. */
#include "ctl_store.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>

#include "ctl_store_priv.h"
#include "trib_alloc.h"
#include "trib_log.h"

int ctl_store_round_record(struct ctl_store *st, const struct ctl_round *r)
{
	sqlite3_stmt *s;
	int rc, err;

	/* SQLite stores a NaN as NULL, and duration is a signed column. */
	if (!st || !r || isnan(r->total_weight) || r->duration_ms > INT64_MAX)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_ROUND_INSERT];
	rc = sqlite3_bind_int64(s, 1, r->job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, r->round);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, r->closed_unix);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 4, r->n_updates);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_double(s, 5, r->total_weight);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 6, (int64_t)r->duration_ms);
	if (rc == SQLITE_OK)
		rc = r->model_path ? sqlite3_bind_text(s, 7, r->model_path, -1, SQLITE_STATIC)
				   : sqlite3_bind_null(s, 7);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 8, r->clients);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "round record");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

/* Fill *out from the current row of a ROUND_COLS query; on failure *out is zeroed. */
static int round_from_row(sqlite3_stmt *s, struct ctl_round *out)
{
	int err;

	memset(out, 0, sizeof(*out));
	out->job_id = sqlite3_column_int64(s, 0);
	out->round = (uint32_t)sqlite3_column_int64(s, 1);
	out->closed_unix = sqlite3_column_int64(s, 2);
	out->n_updates = (uint32_t)sqlite3_column_int64(s, 3);
	out->total_weight = sqlite3_column_double(s, 4);
	out->duration_ms = (uint64_t)sqlite3_column_int64(s, 5);
	out->clients = (uint32_t)sqlite3_column_int64(s, 7);
	err = ctl__col_dup(s, 6, &out->model_path);
	if (err)
		memset(out, 0, sizeof(*out));
	return err;
}

int ctl_store_round_get(struct ctl_store *st, int64_t job_id, uint32_t round,
			struct ctl_round *out)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !out)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_ROUND_GET];
	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, round);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		err = round_from_row(s, out);
	else if (rc == SQLITE_DONE)
		err = -ENOENT;
	else
		err = ctl__sql_fail(st, rc, "round get");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_round_list(struct ctl_store *st, int64_t job_id, struct ctl_round **rounds,
			 size_t *n)
{
	struct ctl_round *arr = NULL, *grown;
	size_t len = 0, cap = 0, i;
	sqlite3_stmt *s;
	int rc, err = 0;

	if (!st || !rounds || !n)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_ROUND_LIST];
	rc = sqlite3_bind_int64(s, 1, job_id);
	if (rc != SQLITE_OK)
		err = ctl__sql_fail(st, rc, "round list");
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			grown = trib_realloc(arr, cap * sizeof(*arr));
			if (!grown) {
				err = -ENOMEM;
				break;
			}
			arr = grown;
		}
		err = round_from_row(s, &arr[len]);
		if (err)
			break;
		len++;
	}
	if (!err && rc != SQLITE_DONE)
		err = ctl__sql_fail(st, rc, "round list");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	if (err) {
		for (i = 0; i < len; i++)
			ctl_round_clear(&arr[i]);
		trib_free(arr);
		return err;
	}
	*rounds = arr;
	*n = len;
	return 0;
}

static bool kv_key_ok(const char *key)
{
	return key && key[0] && strnlen(key, CTL_KV_KEY_MAX) < CTL_KV_KEY_MAX;
}

int ctl_store_kv_get(struct ctl_store *st, const char *key, char *val, size_t cap)
{
	sqlite3_stmt *s;
	const unsigned char *t;
	size_t len;
	int rc, err;

	if (!st || !kv_key_ok(key) || !val || !cap)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_KV_GET];
	rc = sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		t = sqlite3_column_text(s, 0);
		len = (size_t)sqlite3_column_bytes(s, 0);
		if (!t) {
			err = -ENOMEM;
		} else if (len >= cap) {
			err = -ERANGE;
		} else {
			memcpy(val, t, len);
			val[len] = '\0';
			err = 0;
		}
	} else if (rc == SQLITE_DONE) {
		err = -ENOENT;
	} else {
		err = ctl__sql_fail(st, rc, "kv get");
	}
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}

int ctl_store_kv_set(struct ctl_store *st, const char *key, const char *val)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!st || !kv_key_ok(key) || !val)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	s = st->stmt[S_KV_SET];
	rc = sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 2, val, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	err = rc == SQLITE_DONE ? 0 : ctl__sql_fail(st, rc, "kv set");
	ctl__stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return err;
}
