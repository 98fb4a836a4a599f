/* SPDX-License-Identifier: MIT */
/* The controller's durable state: jobs, their round counters and round history, in SQLite. */
#ifndef CTL_STORE_H
#define CTL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trib_name.h"
#include "trib_token.h"

/*
 * Every function returns 0 or a negative errno. SQLite failures map to -EIO,
 * except: a UNIQUE/PRIMARY KEY constraint -> -EEXIST, a FOREIGN KEY constraint
 * (no such job) -> -ENOENT, SQLITE_NOMEM -> -ENOMEM, SQLITE_BUSY/LOCKED -> -EBUSY.
 * A store may be used from several threads; calls are serialised internally.
 */
struct ctl_store;

#define CTL_JOB_NAME_MAX TRIB_JOB_NAME_MAX
#define CTL_TOKEN_LEN    TRIB_TOKEN_LEN
#define CTL_TOKEN_MAX    80
#define CTL_ALGO_MAX     32
#define CTL_KV_KEY_MAX   128 /* keys are 1..127 bytes */

/* The schema version this build writes; older files are migrated on open. */
#define CTL_STORE_SCHEMA_VERSION 10

struct ctl_job {
	int64_t id;                       /* set by ctl_store_job_create; never reused */
	char name[CTL_JOB_NAME_MAX];      /* trib_job_name_valid(); also a directory name */
	char token[CTL_TOKEN_MAX];        /* bearer token clients present */
	uint32_t clients_per_round;
	char algorithm[CTL_ALGO_MAX];     /* e.g. "fedavg" */
	char *schema_json;                /* owned (trib_free), required: the model's tensors */
	char *params_json;                /* owned (trib_free), algorithm params, may be NULL */
	uint32_t round;                   /* the round now open */
	int64_t created_unix;             /* 0 on create means "now" */
};

/* Frees the owned strings and NULLs them; the fixed fields are left as they are. Accepts NULL. */
void ctl_job_clear(struct ctl_job *job);

/* One completed round, as recorded by ctl_store_round_record. */
struct ctl_round {
	int64_t job_id;
	uint32_t round;
	int64_t closed_unix;
	uint32_t n_updates;
	double total_weight; /* sum of the client sample counts folded in */
	uint32_t clients;    /* of the updates, from distinct client tokens (0 before schema 3) */
	uint64_t duration_ms;
	char *model_path;    /* NULL allowed; owned (trib_free) when filled in by the store */
};

/* Frees model_path and NULLs it. Accepts NULL. */
void ctl_round_clear(struct ctl_round *r);

/*
 * Open (creating file and schema if needed) the store at @path; the file is
 * created with mode 0600 since it holds bearer tokens. WAL journal,
 * synchronous=FULL, foreign keys on, a 5 s busy timeout. A file written by an
 * older schema version is migrated; one from a newer version is refused with
 * -EPROTO. On success *out is owned by the caller (ctl_store_close).
 */
int ctl_store_open(const char *path, struct ctl_store **out);
/* Accepts NULL. */
void ctl_store_close(struct ctl_store *st);

/*
 * Insert @job (borrowed). Sets job->id, job->created_unix if it was 0, and
 * job->token (trib_token_new) if it was empty. -EINVAL if the name is invalid,
 * the algorithm is empty, a fixed string is unterminated or schema_json is
 * NULL; -EEXIST if a job of that name exists.
 */
int ctl_store_job_create(struct ctl_store *st, struct ctl_job *job);
/*
 * Fill *out (its owned strings become the caller's; release with
 * ctl_job_clear; *out is overwritten, not cleared first; zeroed on failure).
 * -ENOENT if absent.
 */
int ctl_store_job_get(struct ctl_store *st, const char *name, struct ctl_job *out);
/* Same, by id. */
int ctl_store_job_get_by_id(struct ctl_store *st, int64_t id, struct ctl_job *out);
/*
 * All jobs, in creation order. On success *jobs is owned by the caller: free
 * each element with ctl_job_clear, then the array with trib_free. With no
 * jobs, *jobs is NULL and *n is 0.
 */
int ctl_store_job_list(struct ctl_store *st, struct ctl_job **jobs, size_t *n);
/*
 * Compare-and-set the job's round: -ESTALE if its stored round is not
 * @expected_round (someone else advanced it), -ENOENT if there is no such job.
 */
int ctl_store_round_advance(struct ctl_store *st, int64_t job_id, uint32_t expected_round,
			    uint32_t new_round);
/* Delete the job and (cascading) its round records. -ENOENT if absent. */
int ctl_store_job_delete(struct ctl_store *st, const char *name);
/*
 * ctl_store_job_delete and, in the same transaction, the kv rows whose key
 * starts with @kv_prefix (no LIKE wildcards in it: -EINVAL) (ctl_store_life.c).
 */
int ctl_store_job_remove(struct ctl_store *st, const char *name, const char *kv_prefix);

/*
 * Record a completed round (@r borrowed). -EEXIST if that round of that job
 * is already recorded, -ENOENT if the job does not exist.
 */
int ctl_store_round_record(struct ctl_store *st, const struct ctl_round *r);
/* Fill *out (model_path owned by the caller, ctl_round_clear). -ENOENT if absent. */
int ctl_store_round_get(struct ctl_store *st, int64_t job_id, uint32_t round,
			struct ctl_round *out);
/*
 * A job's recorded rounds, oldest first. *rounds is owned by the caller: each
 * element with ctl_round_clear, then the array with trib_free. NULL/0 if none.
 */
int ctl_store_round_list(struct ctl_store *st, int64_t job_id, struct ctl_round **rounds,
			 size_t *n);

/*
 * Small settings. kv_get copies the NUL-terminated value into @val (@cap
 * bytes): -ENOENT if the key is absent, -ERANGE if it does not fit. Keys are
 * 1..CTL_KV_KEY_MAX-1 bytes (-EINVAL otherwise). kv_set inserts or replaces.
 */
int ctl_store_kv_get(struct ctl_store *st, const char *key, char *val, size_t cap);
int ctl_store_kv_set(struct ctl_store *st, const char *key, const char *val);

/*
 * A cluster job's server-optimiser state for model version @version (ctl_store_opt.c): the
 * bytes are opaque here (the node's fn_opt serialisation). put writes the row for @version
 * and, in the same transaction, drops rows older than @version - 1 (the previous one stays
 * until the model of @version is the commit point on disk). get copies the row into *out
 * (owned by the caller, trib_free) and *len: -ENOENT if there is none.
 */
int ctl_store_opt_put(struct ctl_store *st, int64_t job_id, uint32_t version, const void *state,
		      size_t len);
int ctl_store_opt_get(struct ctl_store *st, int64_t job_id, uint32_t version, uint8_t **out,
		      size_t *len);

/*
 * Client selection in a cluster (ctl_store_task.c, schema 10). grant hands client @client
 * (1..32 bytes) a task of round @round of job @job_id if the round has fewer than @max, in one
 * transaction that also forgets the job's tasks of older rounds (void once a round is past):
 * 1 granted now, 0 the client held one already, -ENOSPC the round's @max are out (nothing
 * written), -ENOENT no such job, else -errno. *@out (may be NULL) gets the round's tasks after
 * the call. list calls @fn for each client holding a task of (@job_id, @round); a non-zero
 * return from @fn stops the walk and is returned.
 */
int ctl_store_task_grant(struct ctl_store *st, int64_t job_id, uint32_t round, const char *client,
			 uint32_t max, uint32_t *out);
int ctl_store_task_list(struct ctl_store *st, int64_t job_id, uint32_t round,
			int (*fn)(void *ctx, const char *client), void *ctx);

/* The answer once given to an Idempotency-Key of an update (key and body borrowed). */
struct ctl_idem {
	uint32_t round; /* the round, or FedBuff version, the update was counted in */
	int status;
	const void *key;
	size_t key_len; /* 1..64 */
	const void *body;
	size_t body_len;
};

/*
 * Keep the answers of @v[0..n) of job @job_id (a key already kept for that
 * round stays as it was), and forget the job's answers of rounds below
 * @prune_below (0: none), in one transaction. 0 or -errno.
 * @durable: synced to disk at the commit, as every other write of the store; false: only
 * written (WAL mode), so that it outlives a crash of the process but maybe not of the machine
 * (what a node's arena records, whose place these rows take, outlive too).
 */
int ctl_store_idem_put(struct ctl_store *st, int64_t job_id, const struct ctl_idem *v, size_t n,
		       uint32_t prune_below, bool durable);
/*
 * The answer kept for @key of job @job_id counted in a round in
 * [round_lo, round_hi] (the lowest such round): status, and the body copied
 * into @body (@cap bytes, cut to fit). -ENOENT if none.
 */
int ctl_store_idem_get(struct ctl_store *st, int64_t job_id, const void *key, size_t key_len,
		       uint32_t round_lo, uint32_t round_hi, int *status, char *body, size_t cap,
		       size_t *body_len);

/*
 * A cluster controller's state that a restart must find (ctl_store_x.c): the
 * nodes it knew (rank, name, wire address, the last run's epoch) and the
 * rounds in flight of each job (state, and @detail: JSON the controller
 * writes and reads back, opaque here). put inserts or replaces (a node's row
 * by rank or by name); the lists call @cb for each row with the store locked
 * (@cb must not use the store; a nonzero return stops and is returned).
 * 0 or -errno.
 */
int ctl_store_xnode_put(struct ctl_store *st, uint32_t rank, const char *name, const char *addr,
			uint32_t epoch);
int ctl_store_xnode_list(struct ctl_store *st,
			 int (*cb)(void *ctx, uint32_t rank, const char *name, const char *addr,
				   uint32_t epoch),
			 void *ctx);
int ctl_store_xround_put(struct ctl_store *st, int64_t job_id, uint32_t round, int state,
			 const char *detail);
int ctl_store_xround_delete(struct ctl_store *st, int64_t job_id, uint32_t round);
/* Forget the rounds of @job_id below @below (their models exist). */
int ctl_store_xround_prune(struct ctl_store *st, int64_t job_id, uint32_t below);
int ctl_store_xround_list(struct ctl_store *st,
			  int (*cb)(void *ctx, int64_t job_id, uint32_t round, int state,
				    const char *detail),
			  void *ctx);
/*
 * The clients counted in round @round of @job_id (schema v5): the @n ids
 * and the rank folding each one's update replace what the store had for the
 * round, in one transaction. A delete or prune of the round forgets them.
 */
int ctl_store_xround_clients_put(struct ctl_store *st, int64_t job_id, uint32_t round,
				 const char *const *ids, const uint32_t *ranks, size_t n);
int ctl_store_xround_clients_list(struct ctl_store *st,
				  int (*cb)(void *ctx, int64_t job_id, uint32_t round,
					    const char *client, uint32_t rank),
				  void *ctx);

/* --- client credentials (ctl_store_cred.c) --- */

#define CTL_KEY_LEN 32        /* a job's credential key (TRIB_CRED_KEY_LEN) */
#define CTL_CLIENT_MAX 33     /* a client id and its NUL (TRIB_CRED_CLIENT_MAX + 1) */

/* Job @job_id's credential key into @key. -ENOENT if it has none yet. */
int ctl_store_job_key_get(struct ctl_store *st, int64_t job_id, uint8_t key[CTL_KEY_LEN]);
/* Keep @key as job @job_id's. -EEXIST if it has one (keys never change), -ENOENT: no job. */
int ctl_store_job_key_put(struct ctl_store *st, int64_t job_id, const uint8_t key[CTL_KEY_LEN]);
/* Revoke client @client of job @job_id (again: no change). 0 or -errno. */
int ctl_store_revoke(struct ctl_store *st, int64_t job_id, const char *client);
/*
 * The ids (CTL_CLIENT_MAX bytes each, NUL-terminated) a job revoked, into
 * *ids (owned by the caller: trib_free) and *n. NULL/0 if none.
 */
int ctl_store_revoked_list(struct ctl_store *st, int64_t job_id, char (**ids)[CTL_CLIENT_MAX],
			   size_t *n);
/*
 * Remember that clients @ids[0..n) sent an update counted in @round of job
 * @job_id, and forget the job's rounds below @prune_below (0: none), in one
 * transaction. @durable as ctl_store_idem_put's.
 */
int ctl_store_round_clients_put(struct ctl_store *st, int64_t job_id, uint32_t round,
				const char *const *ids, size_t n, uint32_t prune_below,
				bool durable);
/* The clients remembered for @round of job @job_id, as ctl_store_revoked_list. */
int ctl_store_round_clients_list(struct ctl_store *st, int64_t job_id, uint32_t round,
				 char (**ids)[CTL_CLIENT_MAX], size_t *n);

/* --- the cluster's join tokens and node certificates (ctl_store_pki.c) --- */

/* Record join token @id with the SHA-256 (hex) of its secret, valid until @expires_unix. */
int ctl_store_jtoken_put(struct ctl_store *st, const char *id, const char *hash_hex,
			 int64_t expires_unix);
/*
 * Use join token @id once, for node @name: its secret's hash must equal
 * @hash_hex (compared in constant time), it must not have expired at @now
 * and not have been used. 0; -ENOENT (no such token or wrong secret);
 * -ETIME (expired); -EALREADY (used before). Checking and marking are one
 * transaction: two nodes presenting one token get one 0.
 */
int ctl_store_jtoken_use(struct ctl_store *st, const char *id, const char *hash_hex,
			 const char *name, int64_t now);
/* Record the certificate of serial @serial issued to node @name. */
int ctl_store_cert_put(struct ctl_store *st, const char *serial, const char *name, int64_t now);
/* How many certificates of node @name are in force (issued, not revoked). */
int ctl_store_cert_count(struct ctl_store *st, const char *name, unsigned *n);
/* Whether serial @serial is revoked (or unknown: a certificate this store never issued). */
int ctl_store_cert_ok(struct ctl_store *st, const char *serial, bool *ok);
/*
 * Every revoked serial: *serials is one trib_malloc'd block of *n pointers
 * followed by the strings (one trib_free); NULL when there are none.
 */
int ctl_store_cert_revoked(struct ctl_store *st, char ***serials, size_t *n);
/* Revoke every certificate of node @name; *n: how many were in force. */
int ctl_store_cert_revoke(struct ctl_store *st, const char *name, int64_t now, unsigned *n);

/* One client's FedAU participation state (runtime/node/rt_fedau.c says what it means). */
struct ctl_fedau_row {
	char client[CTL_CLIENT_MAX];
	int64_t last_round; /* the last round it took part in, -1: none */
	uint32_t intervals; /* participation intervals recorded */
	uint64_t total;     /* their sum, in rounds */
};

/*
 * In one transaction (ctl_store_fedau.c): insert or replace @rows[0..n) of job @job_id and
 * delete its clients @gone[0..ngone) (evicted). Rows go with the job (ON DELETE CASCADE).
 */
int ctl_store_fedau_put(struct ctl_store *st, int64_t job_id, const struct ctl_fedau_row *rows,
			size_t n, const char *const *gone, size_t ngone);
/* Every row of job @job_id: *rows owned by the caller (trib_free), NULL/0 if none. */
int ctl_store_fedau_list(struct ctl_store *st, int64_t job_id, struct ctl_fedau_row **rows,
			 size_t *n);

#endif
