/* SPDX-License-Identifier: MIT */
/* The node runtime: arena, jobs and rounds, function trees, model store, metrics; shared by the gateway. */
#ifndef RT_NODE_H
#define RT_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "rt_algo.h"
#include "rt_fnproc.h"
#include "trib_safetensors.h"

struct ctl_store;
struct shm_arena;
struct rt_conn;

struct rt_node_opts {
	const char *listen_host;      /* default "127.0.0.1" */
	uint16_t listen_port;         /* default 8080; 0 picks a free port */
	const char *data_dir;         /* default "./tributary-data" */
	const char *admin_token_file; /* default DATA_DIR/admin-token */
	const char *fn_path;          /* tributary-fn; default: beside this executable */
	const char *port_file;        /* if set, the bound port is written there once listening */
	uint64_t arena_bytes;         /* default 1 GiB */
	bool no_huge;                 /* never use 2 MiB pages */
	uint32_t warm_s;              /* idle seconds before a warm function exits (default 30) */
	uint32_t dataplane;           /* enum fn_dataplane wanted; 0: shm+bpf where it loads */
	/* `tributary node`: a node runtime of a cluster (NULL controller: `up`, alone) */
	const char *controller;       /* the controller's nng URL, tcp://HOST:PORT */
	const char *node_name;        /* unique in the cluster */
	const char *peer_listen;      /* this node's nng URL for peers (default tcp://0.0.0.0:7071) */
	const char *advertise;        /* how peers reach it (default: peer_listen's host:port) */
};

/* "shm+unix" etc. for an enum fn_dataplane. */
const char *rt_dataplane_name(uint32_t dp);
/* 0 if unknown. */
uint32_t rt_dataplane_from_name(const char *name);

/* An immutable, reference-counted byte string: a model file being served. */
struct rt_blob {
	uint32_t refs;
	uint32_t version;
	size_t len;
	char data[];
};

struct rt_blob *rt_blob_new(size_t len);
struct rt_blob *rt_blob_hold(struct rt_blob *b);
/* Accepts NULL. */
void rt_blob_release(struct rt_blob *b);

/*
 * One leaf of a round's tree, whoever serves it: if its function dies, a
 * replacement takes the same index and the runtime sends it the same updates
 * again (their slots live until the leaf's partial exists).
 */
struct rt_leaf {
	uint32_t fn;             /* the function serving it now; 0 before it starts */
	uint32_t parent;         /* the top it was configured to send to */
	uint64_t acc;            /* its accumulator slot (its partial, once done) */
	uint32_t expected;       /* updates planned for it */
	uint32_t sent;           /* updates sent to it */
	struct shm_desc *ups;    /* those updates, for a refold (owned, expected entries) */
	bool done;               /* its partial exists (DONE seen): the updates' slots are freed */
	bool has_partial;        /* partial (and, in tcp, its bytes) known to the runtime */
	struct shm_desc partial; /* that partial */
	float *partial_payload;  /* tcp: its bytes, kept for a refold at a new top (owned) */
	uint32_t routed_to;      /* the parent the partial was last delivered to (0: none) */
};

/* A third-level aggregator: folds the partials of one group of leaves, hands a partial up. */
struct rt_mid {
	uint32_t fn;             /* the function serving it now */
	uint32_t parent;         /* the top it was configured to send to */
	uint64_t acc;            /* its accumulator slot */
	uint32_t nleaves;        /* leaves of its group started so far */
	bool final;              /* its group is complete (told by FLUSH or config) */
	bool done;               /* its partial exists */
	bool has_partial;
	struct shm_desc partial;
	float *partial_payload;  /* tcp: its bytes (owned) */
	uint32_t routed_to;      /* the parent the partial was last delivered to (0: none) */
};

/*
 * One round's aggregation tree: a top and leaves started as updates need
 * them; with many leaves, mids between them (group leaves per mid).
 */
struct rt_round {
	struct rt_job *job;
	uint32_t round;
	uint32_t nleaves;      /* planned leaves (grows if the autoscaler adds some) */
	uint32_t capleaves;    /* entries allocated in leaves[] */
	uint32_t cur;          /* the leaf taking updates */
	uint32_t fanin;        /* updates per leaf (the last leaf may get fewer) */
	uint32_t started;      /* leaves started (a prefix of leaves[]) */
	uint32_t received;     /* updates accepted */
	uint32_t top;          /* the function serving the top; 0 before it starts */
	uint32_t group;        /* leaves per mid; 0: two levels, leaves report to the top */
	struct rt_mid *mids;   /* capmids entries, the first nmids in use (owned) */
	uint32_t nmids, capmids;
	uint64_t top_acc;      /* its accumulator slot */
	struct rt_leaf *leaves; /* capleaves entries, the first `started` in use (owned) */
	uint64_t *garbage;     /* slots of replaced functions, freed when the round commits */
	uint32_t ngarbage, capgarbage;
	uint64_t open_ns;      /* first update accepted */
	bool closed;           /* no more updates: full, or closed at its deadline */
	bool released;         /* its top has its final count (and server-step inputs) */
	bool has_result;       /* the top's output came */
	uint32_t recoveries;   /* functions replaced */
	struct shm_desc result;
	float *result_payload; /* tcp: the model's bytes (owned), else NULL */
	struct fn_params par;  /* the job's algorithm, with this round's slots */
	/* exact robust rules: every update kept, then shards over coordinate ranges */
	struct shm_desc *rups; /* the round's updates, in acceptance order (owned) */
	uint64_t out_slot;     /* the model the shards write */
	uint64_t task_slot;    /* struct fn_shard_task and what follows it */
	uint32_t nshards;
	uint32_t *shard_fn;    /* the function serving each shard (owned) */
	bool *shard_done;      /* (owned) */
	uint32_t ndone;
	uint64_t model_slot;   /* the previous model, for the top's server step; 0: none */
	uint64_t state_slot;   /* optimiser state [in | out]; 0: none */
	size_t state_size;     /* bytes of one half */
	struct rt_round *next; /* the job's rounds in flight, oldest first */
};

struct rt_job {
	int64_t db_id;
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
	struct rt_blob *model;    /* the latest model file (version == completed) */
	struct rt_conn *waiters;  /* long polls for a newer model */
	uint64_t accepted_total;
	uint64_t last_round_ms;
	uint32_t xtarget;         /* cluster: updates this node folds in the open round, once the
				   * controller closed it; UINT32_MAX before */
	uint32_t sync_round, sync_version; /* cluster: what the last heartbeat said we lack */
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
	RT_REJ__COUNT,
};

struct rt_metrics {
	uint64_t accepted;
	uint64_t rejected[RT_REJ__COUNT];
	uint64_t bytes_received; /* update bodies accepted */
	uint64_t requests;
	uint64_t rounds_done;
	uint64_t fn_spawned;
	uint64_t fn_failed;
	uint64_t fn_reused;       /* configs given to a warm function */
	uint64_t fn_retired;      /* warm functions told to exit after --warm-s idle */
	uint64_t recoveries;      /* functions replaced mid-round */
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
	struct rt_fnset *fns;
	struct ctl_store *store;
	struct rt_job *jobs;
	uint32_t next_job_id;
	struct rt_metrics m;
	bool stopping;
	void *gw; /* the gateway (rt_gateway.c) */
	struct rt_agent *agent; /* `tributary node`: the link to the controller (rt_agent.c) */
};

/* Run `tributary up` with @opts until SIGINT/SIGTERM. Returns a process exit code. */
int rt_up_run(const struct rt_node_opts *opts);

/* --- used by the gateway and API handlers --- */
/*
 * Parse a "tensors" JSON array into a schema; *out is owned by the caller
 * (trib_free). Returns 0, -EINVAL (with *why naming the problem) or -ENOMEM.
 */
int rt_schema_from_json(json_t *arr, struct trib_tensor **out, size_t *nout, uint64_t *n_elem,
			const char **why);
struct rt_job *rt_job_find(struct rt_node *n, const char *name);
/* Returns 0 or -errno; *why says what is wrong with the request (static string or NULL). */
struct rt_job_spec {
	const char *name;
	uint32_t cpr;
	uint32_t fanin;           /* 0: planned */
	uint32_t min_clients;     /* 0: cpr */
	uint32_t round_timeout_s; /* 0: none */
	const struct rt_algo *algo;
	json_t *params;           /* the request's algorithm parameters (borrowed), stored as given */
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
/*
 * The arena could not take an update for @job: cut the leaf taking updates
 * to what it has, so that its partial is made and its updates' slots come
 * back (otherwise a round whose leaves all wait for more updates could hold
 * the arena full for good).
 */
void rt_job_relieve(struct rt_node *n, struct rt_job *job);
/* Set the starting model (before the first update): @data is n_elem floats in schema order. */
int rt_job_set_initial(struct rt_node *n, struct rt_job *job, const float *data);
/* The model file of version @v, held for the caller (rt_blob_release), or NULL (errno set). */
struct rt_blob *rt_job_model(struct rt_node *n, struct rt_job *job, uint32_t v);
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
/* Once per tick: deadlines, scale to zero. */
void rt_node_tick(struct rt_node *n);
/* Reap children and account for them. */
void rt_node_on_sigchld(struct rt_node *n);
/* --- used by the node agent (rt_agent.c) in a cluster --- */
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
 * controller: write it, free that round's tree, wake long polls. 0 or -errno.
 */
int rt_job_commit_remote(struct rt_node *n, struct rt_job *j, uint32_t version,
			 const float *model, uint32_t updates, double weight);
/* The local round @r's sum (its RESULT with FN_CFG_SUM), as floats (in the arena or owned). */
const float *rt_round_sum(struct rt_node *n, const struct rt_round *r);

/* Called by the gateway when a model version appears (wakes long polls). */
void rt_gw_model_ready(struct rt_node *n, struct rt_job *job);
/* Ask the gateway to watch a function's channel. */
void rt_gw_watch_fn(struct rt_node *n, struct rt_fn *fn);

#endif
