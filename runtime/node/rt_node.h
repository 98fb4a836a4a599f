/* SPDX-License-Identifier: MIT */
/* The node: arena, jobs, rounds, function trees, model store, metrics (what api and cluster use). */
#ifndef RT_NODE_H
#define RT_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "rt_idem.h"
#include "rt_algo.h"
#include "rt_fnproc.h"
#include "shm_abi.h"
#include "trib_blob.h"
#include "trib_ratelimit.h"
#include "trib_retry.h"
#include "trib_safetensors.h"

struct ctl_store;
struct rt_cmetrics;
struct shm_arena;
struct shm_desc;
struct rt_round; /* one round's aggregation tree: private to node/ (rt_node_priv.h) */
struct rt_recovered; /* a record kept in the arena file (rt_journal.c) */
struct rt_wal;       /* --durability disk: the update log (rt_wal.h) */

struct rt_node_opts {
	const char *listen_host;      /* default "127.0.0.1" */
	uint16_t listen_port;         /* default 8080; 0 picks a free port */
	const char *data_dir;         /* default "./tributary-data" */
	const char *admin_token_file; /* default DATA_DIR/admin-token */
	const char *fn_path;          /* tributary-fn; default: beside this executable */
	const char *fn_sa_path;       /* tributary-fn-sa (secure unmasking); idem; NULL: none */
	const char *port_file;        /* if set, the bound port is written there once listening */
	uint64_t arena_bytes;         /* default 1 GiB */
	bool no_huge;                 /* the arena file on normal pages, in /dev/shm */
	const char *arena_path;       /* the arena file; NULL: derived from data_dir */
	bool fresh;                   /* start with an empty arena (an old file is removed) */
	bool durability_disk;         /* --durability disk: each update is logged before its 202 */
	bool metrics_jobs;            /* unauthenticated /metrics may name jobs (--metrics-jobs) */
	uint32_t warm_s;              /* idle seconds before a warm function exits (default 30) */
	uint32_t fn_pool;             /* idle functions kept started, spared by warm_s (default 0) */
	uint32_t fold_cores;          /* cores the autoscaler counts; 0: the cores online */
	uint32_t dataplane;           /* enum fn_dataplane wanted; 0: shm+bpf where it loads */
	/* the gateway's admission control (http/rt_loop.h, struct rt_loop_limits); 0: off */
	uint32_t head_timeout_s;      /* `up` default 10 */
	uint32_t body_timeout_s;      /* `up` default 15: a body or response that does not move */
	uint32_t idle_timeout_s;      /* `up` default 60: keep-alive between requests */
	uint32_t max_connections;     /* 0: 80% of RLIMIT_NOFILE */
	uint32_t rx_threads;          /* body-receive threads (`up` default rt_rx_threads_default) */
	bool gateway_tls;             /* the gateway speaks HTTPS (set by the wiring; for show) */
	/* bodies of updates in flight (being received); 0: no cap */
	uint32_t client_inflight;     /* per client token (`up` default 2) */
	uint32_t job_inflight_pct;    /* per job, body bytes as % of the arena (`up` default 75) */
	/* `tributary node`: a node runtime of a cluster (NULL controller: `up`, alone) */
	const char *controller;       /* the controller's nng URL, tls+tcp://HOST:PORT */
	const char *node_name;        /* unique in the cluster */
	const char *peer_listen; /* this node's nng URL for peers (default tls+tcp://0.0.0.0:7071) */
	const char *advertise;        /* how peers reach it (default: peer_listen's host:port) */
	uint32_t controller_grace_s;  /* updates taken while the controller is away, this long */
	const char *join_token;       /* enrol with it if DATA_DIR/cluster has no certificate */
	const char *join_token_file;  /* or with the token in this file (a Secret's key) */
	const char *cluster_ca;       /* the CA certificate (PEM file), instead of the token's pin */
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

#define RT_CLIENT_ID_MAX 32 /* TRIB_CRED_CLIENT_MAX, SHM_REC_CLIENT_MAX */

/* One client of a job's open round (rt_clients.c): bodies in flight, and whether it was counted. */
struct rt_client_ent {
	char id[RT_CLIENT_ID_MAX + 1]; /* "" : a free entry */
	uint32_t inflight;             /* its update bodies being received */
	bool seen;                     /* an update of it is counted in the table's round */
};

/* The clients of one round, by id: an open-addressing hash table (rt_clients.c). */
struct rt_clients {
	struct rt_client_ent *v; /* cap entries (owned), a power of two, or NULL */
	uint32_t cap, used;      /* entries in use (seen or with bodies in flight) */
	uint32_t seen;           /* distinct clients counted in @round */
	uint32_t round;          /* the round (FedBuff: version) the seen marks are for */
	bool synced;             /* @round is set */
};

/*
 * A job's client credentials: its key signs and checks client tokens
 * (core/trib_cred.h); in a cluster the controller owns it and sends it with
 * the job. Never logged, never in /metrics.
 */
struct rt_job_cred {
	uint8_t key[32];    /* TRIB_CRED_KEY_LEN */
	bool has_key;
	bool required;      /* "client_auth": "required": the job token does not submit */
	char (*revoked)[RT_CLIENT_ID_MAX + 1]; /* revoked client ids (owned) */
	size_t nrevoked;
};

/*
 * A job's per-round client config and client selection (issue 15, rt_select.c).
 * Tasks are per round: @tasks holds the clients given one for @tasks.round
 * (a round closed voids them); each is in DATA_DIR/jobs/{job}/tasks before
 * the client hears of it, so a restart honours every task handed out.
 */
struct rt_job_select {
	json_t *client_config;  /* {"values", "schedule"} as validated (owned), or NULL */
	uint32_t per_round;     /* K: updates that close a round; 0: no selection */
	double overcommit;      /* f in [1, 4] */
	uint32_t max;           /* ceil(K * f): tasks a round may hand out */
	struct rt_clients tasks; /* the clients with a task for tasks.round */
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
	RT_REJ_FORBIDDEN,  /* the job token, on a job with client_auth required */
	RT_REJ_CLIENT_DUP, /* a second update of one client in one round */
	RT_REJ_CLIENT_INFLIGHT, /* the client has its cap of bodies in flight */
	RT_REJ_JOB_INFLIGHT,    /* the job has its cap of body bytes in flight */
	RT_REJ_NO_TASK,         /* selection: the client has no task for the round */
	RT_REJ__COUNT,
};

/* A job's "secagg" field (issue 19): each round is a SecAgg+ round (rt_secagg.h); on = false: off. */
struct rt_secagg_spec {
	bool on;
	uint32_t threshold, neighbours, bits;
	float clip;
	uint32_t max_samples; /* each client's n_u at most (rt_secagg_max_samples bounds it) */
};

/*
 * A secagg job's secure round in progress. Client u is the u-th to advertise; ids[u] its client
 * token's id. Each stage message is in the round's state log before it is acknowledged, and a
 * restart rebuilds this from it (rt_secagg_resume.c, runtime/node/rt_secagg_log.h).
 */
struct rt_secagg;
struct rt_salog;
struct rt_sa_live {
	struct rt_secagg *r;                  /* owned */
	char (*ids)[RT_CLIENT_ID_MAX + 1];    /* owned, n_clients entries */
	uint32_t n;                           /* clients indexed so far */
	/* ids' index by hash (open addressing, nslot a power of 2 >= 2 n_clients): u + 1 or 0
	 * for empty; a request finds its client in O(1), not a scan of 100000 ids. NULL: scan. */
	uint32_t *slot, nslot;                /* owned */
	uint32_t round;                       /* the job's round it makes */
	uint64_t opened_ns, deadline_ns;      /* the current stage ends at deadline_ns */
	uint64_t unmask_ns;                   /* the unmask stage's end on the server thread */
	uint64_t expand_ns;                   /* the shards' expansion, start to correction */
	uint64_t start_ns;                    /* starting the shards (on the server thread) */
	uint32_t nstreams;                    /* mask streams the unmasking expanded */
	bool have_sum;                        /* the tree's masked sum is in r */
	struct rt_salog *log;                 /* the round's state log, owned (NULL: none) */
	uint8_t (*dig)[4][16];                /* owned, n_clients: per stage, the body accepted */
	uint8_t *sent;                        /* owned, n_clients: 1 << stage once accepted */
	bool end_now;                         /* resumed past the unmask stage's end: end it as
					       * soon as the tree's sum is in */
};

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
	struct rt_secagg_spec secagg; /* "secagg" (fedavg on one node, client_auth required) */
	struct rt_sa_live *sa_live;   /* the secure round in progress, or NULL (rt_api_secagg.c) */
	uint32_t *sa_sum;             /* the tree's masked sum of round sa_sum_round, in the live
				       * round's state (rt_secagg_sum_dst: not owned), or NULL */
	uint32_t sa_sum_round, sa_sum_count; /* its round and the inputs the tree folded */
	char sa_failed[192];          /* why the last secure round failed ("" none) */
	uint32_t sa_failed_round;
	/*
	 * cluster: the node that runs this job's secure rounds (its wire address and name, from
	 * the controller's job message; "" on that node itself or with no cluster), and the
	 * version whose commit the controller has not sent back yet (0: none): no new round
	 * opens before it (its number would be the same).
	 */
	char sa_at[128], sa_at_name[64];
	uint32_t sa_wait_version;
	struct rt_fedau *fedau;   /* fedau: its clients' interval estimates (owned, rt_fedau.c) */
	struct rt_flora *flora;   /* flora: its LoRA pairs' layout (owned, rt_flora.c), or NULL */
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
	/* the last update (or recovered batch) accepted, any round; 0: none since start */
	uint64_t last_update_ns;
	double last_update_unix;
	/* /metrics per job: refusals named by the request's URL, rounds done (a histogram) */
	uint64_t rejected[RT_REJ__COUNT];
	uint64_t round_hist[12];
	double round_sum_s;
	uint64_t rounds_done;
	struct trib_ratelimit rej_log[RT_REJ__COUNT]; /* a refusal's log line, per reason */
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
	struct rt_job_cred cred;  /* client credentials (issue 13) */
	struct rt_clients clients; /* the clients of the open round (one update each) */
	struct rt_idem_mem idem_mem; /* the keys this node put into the store (rt_idem.h) */
	uint32_t last_round_clients; /* distinct clients of the last round closed (since start) */
	uint64_t inflight_bytes;  /* update bodies being received for this job */
	struct rt_job_select sel; /* client_config and selection (rt_select.c) */
	uint32_t num_rounds;      /* the job is done at this model version (0: never) */
	bool paused;              /* updates answered 503 until resumed (kept in the store) */
	bool deleted;             /* DELETEd: on n->gone until its rounds and bodies drain */
	bool purge;               /* deleted with ?purge=true: its model files go too */
	uint32_t parked;          /* long polls parked on it (the API counts): a deleted job
				   * is freed only once the API answered them */
	uint32_t bodies;          /* JSON bodies being read for it (the API counts, rt_api.c's
				   * rt__api_read_job_body): a deleted job outlives them */
	struct rt_job *next;
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
	uint64_t wal_recovered;     /* ... from the log (--durability disk), none in the arena */
	uint64_t wal_duplicates;    /* logged updates the arena had put back already */
	/* --durability disk: the log's group commit (struct rt_wal_stats, last read) */
	uint64_t wal_appends, wal_batches, wal_fsyncs, wal_bytes, wal_max_batch, wal_cut_files;
	uint64_t wal_batch_hist[8]; /* batches of 1, 2-3, 4-7, ... 128+ updates */
	uint64_t cold_n;          /* spawn -> READY */
	double cold_sum_s, cold_max_s;
	uint64_t warm_n;          /* config to a warm function -> READY */
	double warm_sum_s, warm_max_s;
	float cold_recent[256];   /* the last cold starts (s), for quantiles */
	float warm_recent[256];   /* the last warm hand-offs (s) */
	uint64_t notice_n;        /* READY stamped by the function -> read by the event loop */
	double notice_sum_s, notice_max_s;
	float notice_recent[256]; /* the last of those delays (s) */
	uint64_t plans;           /* planner decisions */
	uint64_t scale_outs;      /* autoscaler: leaves added because a queue grew */
	uint64_t scale_outs_capped; /* ... not added: as many leaves folding as cores - 1 */
	uint64_t deadline_closes; /* rounds closed at their deadline */
	/* round durations, first update to model written: a histogram */
	uint64_t round_hist[12];
	double round_sum_s;
	/* messages and bytes delivered to functions that have exited (their final counters) */
	uint64_t fn_msgs_gone, fn_bytes_gone;
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
	/*
	 * cluster, robust rules: local round @r of @j has all its updates (@phase 0), or its
	 * shards finished phase @phase (rt_robust_x.c).
	 */
	void (*shard_phase)(void *ctx, struct rt_job *j, struct rt_round *r, uint32_t phase);
	/*
	 * cluster, secure aggregation: @j's unmasked mean of round j->completed to the
	 * controller, which commits it as the next version and sends it to every node (this one
	 * too; @opened_ns: when the round opened, for its record). 0 if it is on its way
	 * (j->sa_wait_version set), or -errno.
	 */
	int (*secagg_commit)(void *ctx, struct rt_job *j, const float *model, uint32_t clients,
			     double weight, uint64_t opened_ns);
};

struct ebpf_route;

#define RT_HANDOFF_NOTED 8 /* functions a held batch of hand-offs names, before "all" */

struct rt_node {
	struct rt_node_opts opts;
	uint32_t dataplane;        /* the one in use */
	struct ebpf_route *route;  /* shm+bpf: the loaded router */
	int gw_pair[2];            /* shm+bpf: the gateway's socket (in the map) and its peer */
	struct rt_fn_record hist[RT_FN_HISTORY]; /* ring of the last exited functions */
	uint32_t nhist;
	char admin_token[80];    /* `up`; empty on a cluster node, which has only: */
	char admin_sha256[65];   /* the admin token's SHA-256, from the controller at join */
	struct shm_arena *arena;
	bool arena_reattached;     /* the arena file existed: recovery runs after the jobs load */
	struct rt_recovered *recovered; /* its kept records, until the jobs load (owned) */
	uint32_t nrecovered, caprecovered;
	struct rt_fnset *fns;
	struct ctl_store *store;
	struct rt_job *jobs;
	struct rt_job *gone;       /* deleted jobs draining their rounds (rt_job_life.c) */
	uint32_t next_job_id;
	struct rt_metrics m;
	bool stopping;
	int exit_status;           /* set before a SIGTERM to itself: the cluster refused this node */
	bool clustered;            /* `tributary node`, joined through the cluster layer */
	struct rt_node_hooks hooks; /* set once by the wiring, before the first job */
	uint32_t skew;             /* rotates where accumulators start (cache sets) */
	int pool_err;              /* --fn-pool: the last pre-start's error (said once), or 0 */
	uint8_t bounced[SHM_DESC_SIZE]; /* shm+bpf: part of a bounced descriptor */
	size_t nbounced;
	/* --durability disk */
	struct rt_wal *wal;        /* the update log and its thread, or NULL (memory) */
	uint64_t wal_failures;     /* failed batches seen (the log's counter, last read) */
	struct rt_store_errs wal_errs[RT_STORE_ERRNOS]; /* failed batches by errno */
	int wal_err;               /* the log's state, read after its eventfd: 0 or -errno */
	uint64_t wal_durable;      /* tickets <= this are on disk */
	uint64_t wal_failed_to;    /* tickets <= this were in a failed batch */
	uint64_t wal_retry_ns;     /* when wal_err: the next attempt */
	bool wal_kept;             /* the log existed at start: it keeps what a past run logged */
	struct rt_log_held *wal_held; /* a cluster node, until rt_node_recover(): what the log
				       * holds (owned), for its first join (rt_node_log_holds) */
	size_t nwal_held;
	/*
	 * Hand-offs after the answer (rt_node_handoff_hold): while held, an accepted update's
	 * descriptor is queued for its leaf instead of sent, and the functions queued to are
	 * noted here (more than RT_HANDOFF_NOTED: all are flushed).
	 */
	bool handoff_hold;
	uint32_t handoff_fns[RT_HANDOFF_NOTED];
	uint32_t nhandoff; /* > RT_HANDOFF_NOTED: flush every function */
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
/*
 * Hand an accepted update to its leaf only after its 202 went out. Why: the descriptor wakes
 * the leaf's function, which then folds the whole update (~0.2 ms for 4 MB) and, woken by the
 * gateway, often on the gateway's own core; sent before the 202, that fold sat between the
 * last body byte and the client's answer on a stop-and-wait client (docs/BENCHMARKS.md,
 * "The gateway's CPU per update"). While @hold is on, rt_job_accept*() on a shm data plane
 * queue the descriptor (the record is committed as before: a crash between the 202 and the
 * flush loses nothing, recovery folds what the journal holds); the wiring submits the
 * answers, then calls rt_node_handoff_flush() before the loop waits. tcp sends at once (the
 * update's bytes go with it).
 */
void rt_node_handoff_hold(struct rt_node *n, bool hold);
/* Descriptors held back since the last flush. */
bool rt_node_handoff_pending(const struct rt_node *n);
/* Send them (a socket that is full goes on when it drains, as any queued descriptor). */
void rt_node_handoff_flush(struct rt_node *n);
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
	bool client_auth_required; /* "client_auth": "required" */
	json_t *client_config;    /* validated (borrowed; the job keeps a copy), or NULL */
	uint32_t sel_per_round;   /* "selection": K, or 0 */
	double sel_overcommit;    /* f */
	uint32_t num_rounds;       /* 0: the job never ends */
	struct rt_secagg_spec secagg; /* checked by the API (rt_api_secagg.c) */
	const struct rt_algo *algo;
	json_t *params; /* the request's algorithm parameters (borrowed), stored as given */
};
int rt_job_create(struct rt_node *n, const struct rt_job_spec *spec, struct trib_tensor *schema,
		  size_t nschema, struct rt_job **out);

/* --- a job's lifecycle (rt_job_life.c) --- */
enum rt_job_state { RT_JOB_OPEN, RT_JOB_PAUSED, RT_JOB_DONE };
/* done (num_rounds models stored) wins over paused. */
enum rt_job_state rt_job_state(const struct rt_job *j);
const char *rt_job_state_name(enum rt_job_state s);
/*
 * Whether @j takes no more updates because its last round is closed
 * (round >= num_rounds): true from the last round's close, before its model
 * is stored (rt_job_state says done only then).
 */
bool rt_job_rounds_over(const struct rt_job *j);
/* Pause or resume @j, kept in the store first (a restart keeps it). 0 or -errno. */
int rt_job_set_paused(struct rt_node *n, struct rt_job *j, bool paused);
/*
 * Delete @j: its store rows go first (the commit: a restart does not bring it
 * back), then its models are moved to DATA_DIR/deleted/NAME.ID/ (or removed
 * with @purge). It leaves n->jobs at once (its name is free); an open round
 * is cut and, with the rounds still aggregating, dropped when they finish
 * (slots, journal records and log freed, no model written); the job's memory
 * goes once no round and no update body is left (rt_job_reap). 0 or -errno
 * (the store failed: nothing changed).
 */
int rt_job_delete(struct rt_node *n, struct rt_job *j, bool purge);
/* Free the deleted jobs with nothing in flight any more. */
void rt_job_reap(struct rt_node *n);
/*
 * Accept a received, validated update in slot @slot_off: its segments are at
 * @segs_off. The slot's ownership moves to the tree. Returns 0 (and *seq), or
 * -ESTALE when the round changed, -ENOSPC when the arena cannot hold a new
 * accumulator, -errno otherwise; on error the caller still owns the slot.
 */
int rt_job_accept(struct rt_node *n, struct rt_job *job, uint32_t round, uint64_t slot_off,
		  uint64_t segs_off, uint32_t nsegs, double weight, uint32_t *seq);
/*
 * fedau (rt_fedau.c): the weight client @id's update of @round gets, from the job's table (read
 * only: the table moves when the update is accepted). 1 for a client never seen; 0 or -errno.
 */
int rt_fedau_weight(struct rt_job *j, const char *id, uint32_t round, double *weight);

/* An update received into an arena slot, and its Idempotency-Key (may be empty). */
struct rt_update_in {
	uint64_t slot_off, segs_off;
	uint32_t nsegs;
	double weight;
	const char *key;
	size_t key_len;
	uint64_t data_len; /* the body's bytes at slot_off (--durability disk logs them) */
	const char *body; /* the 202's body, if the caller makes it (a cluster's), or NULL */
	size_t body_len;
	const char *client; /* the client token's id, or "" / NULL (the job's token) */
	const struct rt_cmetrics *metrics; /* X-Tributary-Metrics (rt_metrics.h), or NULL */
};
/*
 * rt_job_accept, durable: the update's record (with @u's key and the 202's
 * body, written into @body) is committed in the arena file's journal before
 * the update goes into the tree, so the caller may answer 202 with @body on
 * 0. Errors as rt_job_accept; -ENOSPC also when the journal is full;
 * -EALREADY when @u's client already has an update counted in the round
 * the update would go into (one update per client per round or version);
 * -EMLINK when @u's metrics would take that round past RT_MSUM_MAX names.
 */
int rt_job_accept_journaled(struct rt_node *n, struct rt_job *job, uint32_t round,
			    const struct rt_update_in *u, uint32_t *seq, char *body, size_t cap,
			    size_t *body_len);
/*
 * rt_job_accept_journaled, and with --durability disk also logged: *@ticket
 * is the log's ticket of the update (0: no log, answer now). The 202 may be
 * written only once rt_node_wal_ticket() says the ticket is durable.
 */
int rt_job_accept_logged(struct rt_node *n, struct rt_job *job, uint32_t round,
			 const struct rt_update_in *u, uint32_t *seq, char *body, size_t cap,
			 size_t *body_len, uint64_t *ticket);
/* The 202's body of the update @seq of @round, into @body: 0 or -EOVERFLOW. */
int rt_job_answer_body(uint32_t round, uint32_t seq, char *body, size_t cap, size_t *len);
/*
 * --durability disk, from the wiring's loop: the log's eventfd is readable
 * (the wiring reads it); take the log's state. The log's fd, or -1 (memory).
 */
int rt_node_wal_fd(const struct rt_node *n);
void rt_node_wal_poll(struct rt_node *n);
/* A log ticket: 1 on disk, 0 pending, or -errno (its batch failed: answer 503). */
int rt_node_wal_ticket(const struct rt_node *n, uint64_t ticket);
/*
 * Whether the log takes updates: 0, or -errno of the write that keeps
 * failing (no update may be answered 202 until a retry succeeds);
 * *retry_s gets the seconds until the next attempt, at least 1.
 */
int rt_node_wal_refusal(const struct rt_node *n, uint32_t *retry_s);
/*
 * Wait until every update given to the log so far is on disk (the batch in
 * flight and the next: an fdatasync or two): 0, or -errno when the log
 * fails. A resend answered from the journal waits for this first.
 */
int rt_node_wal_flush(struct rt_node *n);
/*
 * A cluster node before its first join's recovery (rt_node_recover): each
 * update its log holds that its arena's journal does not (the arena file was
 * gone), to @cb with the job's controller id, the round, the weight and the
 * client id ("" none). After the recovery the journal has them: nothing.
 * Returns 0, @cb's value or -errno.
 */
struct rt_log_held {
	uint64_t job;
	uint32_t round, seq;
	double weight;
	char client[RT_CLIENT_ID_MAX + 1];
};
int rt_node_log_holds(struct rt_node *n, int (*cb)(void *ctx, const struct rt_log_held *h),
		      void *ctx);
/* Whether this node keeps what it acknowledged across a restart: the arena, or the log. */
bool rt_node_keeps_acked(const struct rt_node *n);
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
/*
 * A cluster node: the starting model the controller accepted for the whole cluster. Only
 * version 0 is checked (this node may already hold round 0's first updates). 0 or -errno.
 */
int rt_job_set_initial_remote(struct rt_node *n, struct rt_job *job, const float *data);

/*
 * frl (rt_frl.c): the model of a round from its votes (@votes: n_elem uint32 in schema order,
 * borrowed), each tensor ranked by fn_frl_rank into @out (n_elem int32, caller-owned). Run once,
 * where the round ends (one node's commit, a cluster round's top). 0, -ENOMEM or -EINVAL.
 */
int rt_job_frl_rank(const struct rt_job *j, const void *votes, int32_t *out);
/*
 * A secure round (rt_secagg.h) of @j is over: @model (n_elem floats, the dequantised weighted
 * mean of @clients inputs of total @weight) becomes version completed + 1, stored, recorded and
 * announced as a plain round's would be. 0, -EBUSY (not a secagg job, or plain rounds in flight),
 * -ENOMEM or the store's -errno (nothing changed then).
 */
/* Frees @j's secure round in progress (its secrets wiped by rt_secagg_free), if any. */
void rt_job_secagg_drop(struct rt_job *j);
/*
 * A secure round's masked inputs go through the job's function tree like any update (the tree's
 * functions fold them with FN_ALGO_SECAGG; rt_tree.c sizes its cells with the weight word):
 *   rt_job_secagg_accept  the masked body (@len bytes) of @client, landed in the arena slot
 *                         @slot_off with its one-segment table at @segs_off (dim + 1 words, I32),
 *                         is committed in the arena's journal (and with --durability disk in the
 *                         log, fdatasync'ed before this returns), then joins the job's open tree
 *                         round (opened by the first): a restart puts it back like an update.
 *                         The slot is the tree's on 0; errors as rt_job_accept_logged.
 *   rt_job_secagg_close   the masked stage is over: the tree round takes no more inputs and
 *                         folds what it has (nothing to do if no input came).
 *   rt_job_secagg_sum     the tree's masked sum of @round (rt__tree_elems words) once its top
 *                         handed it off, with the inputs folded in *count; NULL before.
 *   rt_job_secagg_unmask_start  the unmask stage's mask streams and pairs (borrowed; copied to an arena
 *                         task) are expanded by shards of the job's functions, one coordinate
 *                         range each (FN_ROLE_SHARD, FN_ALGO_SECAGG, functions/fn_secagg.h),
 *                         into one arena output; a shard killed is started again. -ENOENT (no
 *                         sum kept for @round, or started already), -EOPNOTSUPP (tcp: a shard's
 *                         output is private), -ENOMEM/-ENOSPC.
 *   rt_job_secagg_correction  that output (rt__tree_elems words) once every shard is done, or
 *                         NULL: the round adds it to the masked sum.
 *   rt_job_secagg_failure why the shards cannot give that output (a static-lifetime string in
 *                         the round: a shard failed on its own, or its replacements ran out), or
 *                         NULL: the round fails at once with it rather than at its deadline.
 *   rt_job_secagg_release the round is over (done or failed): the sum and the task's keys wiped,
 *                         the kept tree round freed; a tree round still folding is discarded when
 *                         its sum arrives. Shards still running are killed and the round keeps its
 *                         slots (the task they read, the output they write) until each has ended;
 *                         rt_job_secagg_busy() holds the next round off until then.
 * The node's masked sum is an ordinary tree sum of the job, so a cluster's sum path can carry it
 * as it carries FedAvg's (docs/ARCHITECTURE.md, "Secure aggregation").
 */
int rt_job_secagg_accept(struct rt_node *n, struct rt_job *j, uint64_t slot_off,
			 uint64_t segs_off, uint64_t len, const char *client, uint32_t *seq);
void rt_job_secagg_close(struct rt_node *n, struct rt_job *j);
const uint32_t *rt_job_secagg_sum(const struct rt_job *j, uint32_t round, uint32_t *count);
struct fn_secagg_stream;
struct fn_secagg_pair;
int rt_job_secagg_unmask_start(struct rt_node *n, struct rt_job *j, uint32_t round,
			       const struct fn_secagg_stream *s, size_t count,
			       const struct fn_secagg_pair *p, size_t npairs);
const uint32_t *rt_job_secagg_correction(struct rt_node *n, const struct rt_job *j,
					 uint32_t round);
const char *rt_job_secagg_failure(const struct rt_job *j, uint32_t round);
void rt_job_secagg_release(struct rt_node *n, struct rt_job *j);
/* Whether a tree round of @j is still folding (a new secure round waits for it). */
bool rt_job_secagg_busy(const struct rt_job *j);
/*
 * The unmasked mean's version: rt_job_secagg_blob gives a blob for @j's next version (its
 * header in) and in *model where its j->n_elem floats go (NULL: out of memory); the caller
 * writes them, and rt_job_secagg_commit stores it, taking @b on every path (-EINVAL: not that
 * version's layout).
 */
struct trib_blob *rt_job_secagg_blob(const struct rt_job *j, float **model);
int rt_job_secagg_commit(struct rt_node *n, struct rt_job *j, struct trib_blob *b,
			 uint32_t clients, double weight, uint64_t opened_ns);
/*
 * A secure round's durable state (rt_secagg_resume.c; the file is rt_secagg_log.h). Each
 * rt_sa_log_* call appends what the stage accepted, durable as --durability promises when it
 * returns 0; the caller answers 200 only then. On an error the round has FAILED (saying why)
 * and the caller answers 503. rt_sa_log_open makes the log of @j's new j->sa_live (and its
 * retry digests); rt_sa_log_over ends it: the file goes, then the journal's (and the disk log's)
 * records of the round's masked inputs (after the model is stored, or when the round failed).
 */
struct rt_secagg_cfg;
int rt_sa_log_open(struct rt_node *n, struct rt_job *j, const struct rt_secagg_cfg *cfg);
int rt_sa_log_keys(struct rt_node *n, struct rt_job *j, uint32_t u, const uint8_t c_pk[32],
		   const uint8_t s_pk[32], const uint8_t dig[16]);
int rt_sa_log_shares(struct rt_node *n, struct rt_job *j, uint32_t u, const uint32_t *to,
		     const uint8_t *const *ct, uint32_t count, const uint8_t dig[16]);
/* u's masked input is in the tree: its mark (no digest: a resend is answered by u alone). */
int rt_sa_log_input(struct rt_node *n, struct rt_job *j, uint32_t u);
int rt_sa_log_unmask(struct rt_node *n, struct rt_job *j, uint32_t u, const uint32_t *v,
		     const uint8_t *const *share, uint32_t count, const uint8_t dig[16]);
int rt_sa_log_end(struct rt_node *n, struct rt_job *j, int stage);
void rt_sa_log_over(struct rt_node *n, struct rt_job *j, uint32_t round);
/* The digest a stage's body is remembered by (HMAC-SHA256 based, 16 bytes). */
void rt_sa_digest(const void *body, size_t len, uint8_t dig[16]);
/*
 * A stage message of client u again (a retry, after a restart or not; keys, shares and reveals:
 * the masked input is answered by u alone, never digested): 1 if u's @stage was
 * accepted with this same body (answer as the first time), 0 if it was not accepted, -1 if it
 * was with another body (the first stands: 409).
 */
int rt_sa_retry(const struct rt_sa_live *L, uint32_t u, int stage, const uint8_t dig[16]);
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
 * A cluster round's server-step inputs on the node that runs its top: arena slots with the
 * previous model (version j->completed, which the caller has checked is the round's) and the
 * optimiser state [in | out], the in half from @state (@state_len bytes, borrowed: the
 * controller's copy for that version) or fresh when @state is NULL (version 0). -EINVAL when
 * @state is for another optimiser or model size. Owned by the caller: rt_node_server_io_free().
 */
struct rt_server_io {
	uint64_t model_slot, state_slot;
	size_t state_size; /* bytes of one half */
};
int rt_node_server_io(struct rt_node *n, struct rt_job *j, const uint8_t *state,
		      size_t state_len, struct rt_server_io *io);
void rt_node_server_io_free(struct rt_node *n, struct rt_server_io *io);
/* The state the top's server step wrote (state_size bytes, in the arena), or NULL. */
const uint8_t *rt_node_server_io_out(struct rt_node *n, const struct rt_server_io *io);
/*
 * Start the function that folds a cluster round's node sums (a top that
 * divides, adds the job's DP noise and, with @io, takes the server step): @expected partials,
 * their seq the node rank. Returns 0 or -errno.
 */
int rt_node_fold_start(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t expected,
		       const struct rt_server_io *io, struct rt_fn **fn, uint64_t *acc);
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
/* When its first update was accepted: monotonic ns, and unix s (its record's opened_at). */
uint64_t rt_round_opened_ns(const struct rt_round *r);
double rt_round_opened_unix(const struct rt_round *r);

/* --- client credentials and clients (rt_clients.c) --- */
/*
 * Give @j its credential key and revocations: from the store (made and
 * kept there the first time), or, in a cluster, as the controller sent them
 * (rt_job_cred_set). 0 or -errno (logged).
 */
int rt_job_cred_load(struct rt_node *n, struct rt_job *j);
/* Cluster: the controller's key (@hex, 64 hex chars) and revoked ids. 0 or -EINVAL/-ENOMEM. */
int rt_job_cred_set(struct rt_job *j, const char *hex, const char *const *revoked, size_t n);
/* Whether client @id of @j is revoked. */
bool rt_job_revoked(const struct rt_job *j, const char *id);
/* Revoke @id: kept in the store (`up`), then in @j's list. 0 or -errno. */
int rt_job_revoke(struct rt_node *n, struct rt_job *j, const char *id);
/* Whether client @id has an update counted in @j's open round (FedBuff: version). */
bool rt_job_client_seen(struct rt_node *n, struct rt_job *j, const char *id);
/* Client @id's entry in @j's open round (made if absent), or NULL (-ENOMEM). */
struct rt_client_ent *rt_job_client(struct rt_node *n, struct rt_job *j, const char *id);
/* The bodies in flight of @id: one more (@add) or one fewer. */
void rt_job_client_inflight(struct rt_node *n, struct rt_job *j, const char *id, bool add);
/* Distinct clients counted in @j's open round. */
uint32_t rt_job_clients_now(struct rt_node *n, struct rt_job *j);

/* The table itself (pure; tests/runtime/test_clients.c). */
/* The entry of @id, NULL if absent. */
struct rt_client_ent *rt_clients_find(const struct rt_clients *t, const char *id);
/* The entry of @id, made if absent; NULL on -ENOMEM or an id over RT_CLIENT_ID_MAX. */
struct rt_client_ent *rt_clients_get(struct rt_clients *t, const char *id);
/*
 * Move to @round: when it differs, every seen mark goes and entries with no
 * body in flight are dropped; returns the seen count of the round left (0
 * if the round is the same). -ENOMEM leaves the table as it was (the
 * marks then stay: refusing too much, never too little).
 */
int rt_clients_sync(struct rt_clients *t, uint32_t round, uint32_t *left_seen);
void rt_clients_free(struct rt_clients *t);

/* --- per-round client config and client selection (rt_select.c) --- */
/* @cc ("client_config" of a job spec) is well formed: 0, or -EINVAL with @msg naming the field. */
int rt_client_config_check(const json_t *cc, char *msg, size_t cap);
/*
 * The config of round @r (new reference), or NULL when @j has none (or
 * -ENOMEM): "values", then every schedule row with from_round <= @r applied
 * in order, keys overwritten. Pure: the same job and round, the same config.
 */
json_t *rt_job_round_config(const struct rt_job *j, uint32_t r);
/* ceil(@k x @f): the tasks a round of K updates with overcommit f hands out. */
uint32_t rt_select_max(uint32_t k, double f);
/*
 * A task of @j's open round for client @id: *granted true when @id has one
 * (already, or now: then it is on disk before this returns), false when
 * the round's tasks are all out. 0, or -errno (nothing handed out).
 */
int rt_select_task(struct rt_node *n, struct rt_job *j, const char *id, bool *granted);
/* Whether client @id has a task for round @round of @j. */
bool rt_select_has_task(const struct rt_job *j, const char *id, uint32_t round);
/* Tasks handed out for @j's open round. */
uint32_t rt_select_tasks_out(const struct rt_job *j);

/* --- exact robust rules across nodes: this node's range (rt_robust_x.c) --- */
/* Local round @round of @j (open or in flight), or NULL. */
struct rt_round *rt_job_round_at(struct rt_job *j, uint32_t round);
/* @r's updates in acceptance order (*k of them); *all: the round is closed here. */
const struct shm_desc *rt_round_updates(const struct rt_round *r, uint32_t *k, bool *all);
/* Whether @r's shard functions are running (a phase started and not finished). */
bool rt_round_shards_busy(const struct rt_round *r);
/*
 * Start phase 1 over @descs (@k updates, the round's order on every node; copied) for the
 * coordinates [lo, hi) of @r's job; a task of an earlier start is dropped first (its shards
 * must have finished). 0 or -errno.
 */
int rt_node_xshard_start(struct rt_node *n, struct rt_round *r, const struct shm_desc *descs,
			 uint32_t k, uint64_t lo, uint64_t hi);
/* After phase 1 of Krum or Bulyan: the sum of the shards' partial distances into @d (k*k). */
int rt_node_xshard_dist(struct rt_node *n, const struct rt_round *r, double *d);
/*
 * The rule's selection from the cluster's summed distances @d (k*k) for @j: Krum/Multi-Krum
 * (fn_krum_select) or Bulyan (fn_bulyan_select) into @sel (k entries), *m of them. 0 or -EINVAL.
 */
int rt_node_xshard_select(const struct rt_job *j, const double *d, uint32_t k, uint32_t *sel,
			  uint32_t *m);
/* Phase 2 with the top's selection (@m indexes < k). 0 or -errno. */
int rt_node_xshard_phase2(struct rt_node *n, struct rt_round *r, const uint32_t *sel,
			  uint32_t m);
/* The last phase's output, indexed by model coordinate (valid over this node's range). */
const float *rt_node_xshard_out(struct rt_node *n, const struct rt_round *r);
/*
 * Deltas: the round's top turns the concatenated robust delta @model (n_elem) into the model,
 * v_r + delta, from @io (rt_node_server_io(): model v_r and the optimiser state, which robust
 * rules do not use and which passes through to the output half unchanged). 0 or -EINVAL.
 */
int rt_node_xshard_add_model(struct rt_node *n, const struct rt_job *j,
			     const struct rt_server_io *io, float *model);

/* --- from the wiring's loop --- */
/* A one-shot I/O the node asked for (struct rt_node_hooks) completed with @res. */
void rt_node_fn_io(struct rt_node *n, enum rt_fn_io op, uint32_t id, int res);

#endif
