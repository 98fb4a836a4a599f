/* SPDX-License-Identifier: MIT */
/* The node: arena, jobs, rounds, function trees, model store, metrics (what api and cluster use). */
#ifndef RT_NODE_H
#define RT_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "rt_algo.h"
#include "rt_fnproc.h"
#include "shm_abi.h"
#include "trib_blob.h"
#include "trib_retry.h"
#include "trib_safetensors.h"

struct ctl_store;
struct shm_arena;
struct shm_desc;
struct rt_round; /* one round's aggregation tree: private to node/ (rt_node_priv.h) */
struct rt_recovered; /* a record kept in the arena file (rt_journal.c) */

struct rt_node_opts {
	const char *listen_host;      /* default "127.0.0.1" */
	uint16_t listen_port;         /* default 8080; 0 picks a free port */
	const char *data_dir;         /* default "./tributary-data" */
	const char *admin_token_file; /* default DATA_DIR/admin-token */
	const char *fn_path;          /* tributary-fn; default: beside this executable */
	const char *port_file;        /* if set, the bound port is written there once listening */
	uint64_t arena_bytes;         /* default 1 GiB */
	bool no_huge;                 /* the arena file on normal pages, in /dev/shm */
	const char *arena_path;       /* the arena file; NULL: derived from data_dir */
	bool fresh;                   /* start with an empty arena (an old file is removed) */
	bool metrics_jobs;            /* unauthenticated /metrics may name jobs (--metrics-jobs) */
	uint32_t warm_s;              /* idle seconds before a warm function exits (default 30) */
	uint32_t dataplane;           /* enum fn_dataplane wanted; 0: shm+bpf where it loads */
	/* the gateway's admission control (http/rt_loop.h, struct rt_loop_limits); 0: off */
	uint32_t head_timeout_s;      /* `up` default 10 */
	uint32_t body_timeout_s;      /* `up` default 15: a body or response that does not move */
	uint32_t idle_timeout_s;      /* `up` default 60: keep-alive between requests */
	uint32_t max_connections;     /* 0: 80% of RLIMIT_NOFILE */
	/* `tributary node`: a node runtime of a cluster (NULL controller: `up`, alone) */
	const char *controller;       /* the controller's nng URL, tcp://HOST:PORT */
	const char *node_name;        /* unique in the cluster */
	const char *peer_listen; /* this node's nng URL for peers (default tcp://0.0.0.0:7071) */
	const char *advertise;        /* how peers reach it (default: peer_listen's host:port) */
	uint32_t controller_grace_s;  /* updates taken while the controller is away, this long */
};

/* "shm+unix" etc. for an enum fn_dataplane. */
const char *rt_dataplane_name(uint32_t dp);
/* 0 if unknown. */
uint32_t rt_dataplane_from_name(const char *name);


/* Failed model writes of one job with one errno (0: every other errno), for /metrics. */
struct rt_store_errs {
	int err;    /* -errno; 0 on the last entry: the rest */
	uint64_t n;
};

#define RT_STORE_ERRNOS 8

struct rt_job {
	int64_t db_id;
	uint64_t xid; /* a cluster's job: the controller's id, the journal's name for it (0: up) */
	uint32_t id;              /* node-local numeric id in descriptors */
	char name[64];
	char token[80];
	char algorithm[32];
	uint32_t cpr;             /* clients per round */
	uint32_t fanin;           /* pinned fan-in, or 0: the planner chooses per round */
	uint32_t min_clients;     /* a round may close at its deadline with this many (0: cpr) */
	uint32_t round_timeout_s; /* 0: no deadline */
	double arrival_rate;      /* updates/s, smoothed over rounds (the planner's input) */
	struct rt_algo algo;      /* algorithm and parameters */
	uint8_t *opt_state;       /* server optimiser state after the last round (owned), or NULL */
	size_t opt_state_len;
	struct trib_tensor *schema; /* owned */
	size_t nschema;
	uint64_t n_elem;
	char *schema_json;        /* owned */
	char *st_header;          /* owned: safetensors header of the model files */
	size_t st_header_len;
	uint32_t round;           /* the open round: updates name it */
	uint32_t completed;       /* model version: rounds whose model is written */
	struct rt_round *open;    /* tree of the open round, NULL until its first update */
	struct rt_round *inflight; /* closed rounds still aggregating (and open), oldest first */
	struct trib_blob *model;  /* the latest model file (version == completed) */
	uint64_t accepted_total;
	uint64_t last_round_ms;
	uint32_t xtarget;         /* cluster: updates this node folds in the open round, once the
				   * controller closed it; UINT32_MAX before */
	uint32_t sync_round, sync_version; /* cluster: what the last heartbeat said we lack */
	/*
	 * A finished round whose model could not be stored (the disk is full,
	 * an I/O error): retried with backoff from the tick; while it is
	 * pending the job's updates get 503 (rt_job_store_refusal).
	 */
	struct trib_retry store;
	struct rt_store_errs store_errs[RT_STORE_ERRNOS]; /* failed writes by errno */
	/* cluster: a model from the controller that could not be stored yet (owned), or NULL */
	struct trib_blob *remote_pending;
	uint32_t remote_updates;  /* its count and weight, for the round record */
	double remote_weight;
	struct rt_job *next;
};

/* Rejection reasons counted in /metrics; index into rt_metrics.rejected. */
enum rt_reject {
	RT_REJ_MALFORMED,
	RT_REJ_AUTH,
	RT_REJ_NO_JOB,
	RT_REJ_ROUND,
	RT_REJ_TOO_LARGE,
	RT_REJ_MEDIA_TYPE,
	RT_REJ_SHAPE,
	RT_REJ_NONFINITE,
	RT_REJ_FULL,
	RT_REJ_NO_LENGTH,
	RT_REJ_STORE,      /* a round's model could not be stored: no 202 until it is */
	RT_REJ__COUNT,
};

struct rt_metrics {
	uint64_t accepted;
	uint64_t rejected[RT_REJ__COUNT];
	uint64_t bytes_received; /* update bodies accepted */
	uint64_t rounds_done;
	uint64_t fn_spawned;
	uint64_t fn_failed;
	uint64_t fn_reused;       /* configs given to a warm function */
	uint64_t fn_retired;      /* warm functions told to exit after --warm-s idle */
	uint64_t recoveries;      /* functions replaced mid-round */
	uint64_t updates_recovered; /* updates of open rounds put back from the arena file */
	uint64_t cold_n;          /* spawn -> READY */
	double cold_sum_s, cold_max_s;
	uint64_t warm_n;          /* config to a warm function -> READY */
	double warm_sum_s, warm_max_s;
	float cold_recent[256];   /* the last cold starts (s), for quantiles */
	float warm_recent[256];   /* the last warm hand-offs (s) */
	uint64_t plans;           /* planner decisions */
	uint64_t scale_outs;      /* autoscaler: leaves added because a queue grew */
	uint64_t deadline_closes; /* rounds closed at their deadline */
	/* round durations, first update to model written: a histogram */
	uint64_t round_hist[12];
	double round_sum_s;
};

/* Final counters of a function that has exited, kept for /metrics and status. */
struct rt_fn_record {
	uint32_t id;
	uint32_t job;
	uint32_t round;
	uint16_t role;
	uint64_t msgs_in;
	uint64_t bytes_in;
	uint64_t taken;
};

#define RT_FN_HISTORY 64

/* Which one-shot I/O of a function's channel completed (see struct rt_node_hooks). */
enum rt_fn_io {
	RT_FN_IO_RECV,    /* the control channel's records */
	RT_FN_IO_POLLIN,  /* shm+bpf, tcp: its TCP socket is readable */
	RT_FN_IO_POLLOUT, /* a queue of records can go on */
	RT_FN_IO__COUNT,
};

/*
 * How the node tells the layers above things, and asks for I/O: filled once
 * by the wiring. @ctx goes to every call; a NULL pointer is "nobody listens"
 * (and for the I/O verbs: functions' channels are not watched).
 */
struct rt_node_hooks {
	void *ctx;
	/* Watch @fd once; when it completes call rt_node_fn_io(n, @op, @id, result). */
	void (*io_recv)(void *ctx, int fd, void *buf, size_t len, enum rt_fn_io op, uint32_t id);
	void (*io_poll)(void *ctx, int fd, unsigned events, enum rt_fn_io op, uint32_t id);
	/* A model version of @j was written (or came from the cluster): wake long polls. */
	void (*model_ready)(void *ctx, struct rt_job *j);
	/* cluster: @j's local open round advanced (a close that came early can apply now). */
	void (*round_advanced)(void *ctx, struct rt_job *j);
	/* cluster: local round @r of @j has its sum (rt_round_sum). */
	void (*local_sum)(void *ctx, struct rt_job *j, struct rt_round *r);
	/* cluster: a RESULT; true if it was a cluster fold's model (@payload then taken). */
	bool (*fold_result)(void *ctx, struct rt_fn *fn, const struct shm_desc *d, float *payload);
};

struct ebpf_route;

struct rt_node {
	struct rt_node_opts opts;
	uint32_t dataplane;        /* the one in use */
	struct ebpf_route *route;  /* shm+bpf: the loaded router */
	int gw_pair[2];            /* shm+bpf: the gateway's socket (in the map) and its peer */
	struct rt_fn_record hist[RT_FN_HISTORY]; /* ring of the last exited functions */
	uint32_t nhist;
	char admin_token[80];
	struct shm_arena *arena;
	bool arena_reattached;     /* the arena file existed: recovery runs after the jobs load */
	struct rt_recovered *recovered; /* its kept records, until the jobs load (owned) */
	uint32_t nrecovered, caprecovered;
	struct rt_fnset *fns;
	struct ctl_store *store;
	struct rt_job *jobs;
	uint32_t next_job_id;
	struct rt_metrics m;
	bool stopping;
	bool clustered;            /* `tributary node`, joined through the cluster layer */
	struct rt_node_hooks hooks; /* set once by the wiring, before the first job */
	uint32_t skew;             /* rotates where accumulators start (cache sets) */
	uint8_t bounced[SHM_DESC_SIZE]; /* shm+bpf: part of a bounced descriptor */
	size_t nbounced;
};

/*
 * Set up a node from @opts (copied; strings borrowed, must outlive the node):
 * data dir, state store (@db_path: a file or ":memory:"), arena, data plane,
 * function set. *out is owned by the caller (rt_node_close). 0 or -errno (logged).
 */
int rt_node_open(struct rt_node **out, const struct rt_node_opts *opts, const char *db_path);
/* Kill the functions, free the jobs, the data plane, the arena, the store. Accepts NULL. */
void rt_node_close(struct rt_node *n);
/* Load the jobs the store knows (`up` after a restart). 0 or -errno. */
int rt_node_jobs_load(struct rt_node *n);
/*
 * Once the jobs are loaded and functions' channels can be watched (the
 * wiring's loop is open): put the updates the arena file kept back into
 * their open rounds; full ones close and finish. 0 or -errno (logged).
 */
int rt_node_recover(struct rt_node *n);
/* Full rounds whose model is not written yet: every update in them was answered 202. */
bool rt_node_rounds_in_flight(const struct rt_node *n);
/*
 * At a stop: log loudly, per job, each finished round whose model is not
 * stored (a write that kept failing) and the updates answered 202 that go
 * with it. Returns the number of such rounds (0: nothing acknowledged is
 * left unsaved, bar open rounds).
 */
uint32_t rt_node_report_unsaved(const struct rt_node *n);

/* --- used by the API handlers --- */
struct rt_job *rt_job_find(struct rt_node *n, const char *name);
/* Returns 0 or -errno; *why says what is wrong with the request (static string or NULL). */
struct rt_job_spec {
	const char *name;
	uint32_t cpr;
	uint32_t fanin;           /* 0: planned */
	uint32_t min_clients;     /* 0: cpr */
	uint32_t round_timeout_s; /* 0: none */
	const struct rt_algo *algo;
	json_t *params; /* the request's algorithm parameters (borrowed), stored as given */
};
int rt_job_create(struct rt_node *n, const struct rt_job_spec *spec, struct trib_tensor *schema,
		  size_t nschema, struct rt_job **out);
/*
 * Accept a received, validated update in slot @slot_off: its segments are at
 * @segs_off. The slot's ownership moves to the tree. Returns 0 (and *seq), or
 * -ESTALE when the round changed, -ENOSPC when the arena cannot hold a new
 * accumulator, -errno otherwise; on error the caller still owns the slot.
 */
int rt_job_accept(struct rt_node *n, struct rt_job *job, uint32_t round, uint64_t slot_off,
		  uint64_t segs_off, uint32_t nsegs, double weight, uint32_t *seq);
/* An update received into an arena slot, and its Idempotency-Key (may be empty). */
struct rt_update_in {
	uint64_t slot_off, segs_off;
	uint32_t nsegs;
	double weight;
	const char *key;
	size_t key_len;
	const char *body; /* the 202's body, if the caller makes it (a cluster's), or NULL */
	size_t body_len;
};
/*
 * rt_job_accept, durable: the update's record (with @u's key and the 202's
 * body, written into @body) is committed in the arena file's journal before
 * the update goes into the tree, so the caller may answer 202 with @body on
 * 0. Errors as rt_job_accept; -ENOSPC also when the journal is full.
 */
int rt_job_accept_journaled(struct rt_node *n, struct rt_job *job, uint32_t round,
			    const struct rt_update_in *u, uint32_t *seq, char *body, size_t cap,
			    size_t *body_len);
/*
 * The answer already given to the update of @job with Idempotency-Key @key
 * (for @round: the request's; FedBuff looks in every version in flight):
 * *status and @body. 0, or -ENOENT. The journal holds the keys of rounds in
 * flight; then the store keeps them for the last rt_job_idem_keep() stored
 * rounds (versions) of the job.
 */
int rt_job_idem_find(struct rt_node *n, struct rt_job *job, uint32_t round, const char *key,
		     size_t key_len, int *status, char *body, size_t cap, size_t *body_len);
/*
 * Stored rounds whose Idempotency-Keys are remembered: a resend for a round
 * older than that cannot be told from a new update and gets 409 ("too old to
 * tell"). RT_IDEM_KEEP_ROUNDS, or FedBuff's max_staleness + 1 if larger.
 */
#define RT_IDEM_KEEP_ROUNDS 16
uint32_t rt_job_idem_keep(const struct rt_job *job);
/*
 * The arena could not take an update for @job: cut the leaf taking updates
 * to what it has, so that its partial is made and its updates' slots come
 * back (otherwise a round whose leaves all wait for more updates could hold
 * the arena full for good).
 */
void rt_job_relieve(struct rt_node *n, struct rt_job *job);
/*
 * Whether @job takes updates: 0, or -errno of the model write that keeps
 * failing (its round's model is not stored yet, so no new update may be
 * answered 202). *retry_s (if not NULL) gets the seconds until the next
 * attempt, at least 1.
 */
int rt_job_store_refusal(const struct rt_job *job, uint32_t *retry_s);
/* Set the starting model (before the first update): @data is n_elem floats in schema order. */
int rt_job_set_initial(struct rt_node *n, struct rt_job *job, const float *data);
/* The model file of version @v, held for the caller (trib_blob_release), or NULL (errno set). */
struct trib_blob *rt_job_model(struct rt_node *n, struct rt_job *job, uint32_t v);
/*
 * Handle one record a function sent to the runtime (routing, results).
 * @payload (tcp only) is the record's bytes, owned by the callee.
 */
void rt_node_on_fn_record(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d,
			  float *payload);
/* A function's counters: from BPF in shm+bpf, else as the runtime counted them. */
void rt_node_fn_counters(struct rt_node *n, const struct rt_fn *fn, uint64_t *msgs,
			 uint64_t *bytes, int64_t *depth);
/* A function's control channel (@data false) or TCP socket reached end of stream. */
void rt_node_on_fn_eof(struct rt_node *n, struct rt_fn *fn, bool data);
/* Once per tick: queued records, bounced descriptors, deadlines, scale to zero. */
void rt_node_tick(struct rt_node *n);
/* Reap children and account for them. */
void rt_node_on_sigchld(struct rt_node *n);
/* --- used by the cluster layer (runtime/cluster/) --- */
/*
 * Start the function that folds a cluster round's node sums (a top that
 * divides): @expected partials, their seq the node rank. Returns 0 or -errno.
 */
int rt_node_fold_start(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t expected,
		       struct rt_fn **fn, uint64_t *acc);
/* Bytes of an accumulator slot of @j (header, then the data at SHM_ACC_HDR or later). */
uint64_t rt_job_acc_len(const struct rt_job *j);
/*
 * The controller closed round @round: this node folds @target of its updates.
 * The local round closes once it has them (at once if it has).
 */
void rt_job_set_target(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t target);
/*
 * Model version @version (the model of round @version - 1) came from the
 * controller: write it, free that round's tree, wake long polls. A write
 * that fails keeps the model here and is retried from the tick with
 * backoff (the job's updates get 503 meanwhile, as in `up`); a newer
 * version replaces the one waiting. 0 (stored, or kept to be stored) or
 * -ENOMEM.
 */
int rt_job_commit_remote(struct rt_node *n, struct rt_job *j, uint32_t version,
			 const float *model, uint32_t updates, double weight);
/* The local round @r's sum (its RESULT with FN_CFG_SUM), as floats (in the arena or owned). */
const float *rt_round_sum(struct rt_node *n, const struct rt_round *r);
/* Its number, its job and its RESULT (valid once the local_sum hook named it). */
uint32_t rt_round_number(const struct rt_round *r);
struct rt_job *rt_round_job(const struct rt_round *r);
const struct shm_desc *rt_round_result(const struct rt_round *r);
/* For GET /v1/jobs: updates accepted, updates per leaf, leaves planned. */
uint32_t rt_round_received(const struct rt_round *r);
uint32_t rt_round_fanin(const struct rt_round *r);
uint32_t rt_round_nleaves(const struct rt_round *r);

/* --- from the wiring's loop --- */
/* A one-shot I/O the node asked for (struct rt_node_hooks) completed with @res. */
void rt_node_fn_io(struct rt_node *n, enum rt_fn_io op, uint32_t id, int res);

#endif
