/* SPDX-License-Identifier: MIT */
/* Inside node/ only: a round's tree (leaves, mids, top) and the verbs between node's files. */
#ifndef RT_NODE_PRIV_H
#define RT_NODE_PRIV_H

#include "rt_node.h"
#include "shm_abi.h"
#include "trib_fedau.h"

struct ctl_plan;

/* Replacements per round before the runtime gives the round up. */
#define RT_MAX_RECOVERIES 16u

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
	bool ups_kept;           /* ... unless no record covers them: then at the round's end */
	bool has_partial;        /* partial (and, in tcp, its bytes) known to the runtime */
	struct shm_desc partial; /* that partial */
	float *partial_payload;  /* tcp: its bytes, kept for a refold at a new top (owned) */
	uint32_t routed_to;      /* the parent the partial was last delivered to (0: none) */
	uint32_t seq0;           /* the seq of its first update (its updates' seqs are a run) */
};

/* A third-level aggregator: folds the partials of one group of leaves, hands a partial up. */
struct rt_mid {
	uint32_t fn;             /* the function serving it now */
	uint32_t parent;         /* the top it was configured to send to */
	uint64_t acc;            /* its accumulator slot */
	uint32_t nleaves;        /* leaves of its group started so far */
	bool final;              /* its group is complete (told by FLUSH or config) */
	bool done;               /* its partial exists */
	bool covered;            /* ... and its PARTIAL record covers its leaves' records */
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
	uint32_t clients;      /* distinct client tokens counted, once it closed (rt_clients.c) */
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
	bool sa_taken;         /* secure job: its masked sum is the round's; the unmasking's next */
	bool sa_expanded;      /* secure job: the shards wrote the correction into out_slot */
	bool sa_orphan;        /* secure job: failed under running shards, freed once they end */
	char sa_why[192];      /* secure job: why its shards cannot finish ("": they can) */
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
	/* its record (rt_roundrec.c): wall-clock open/close, bytes, the metrics' sums (owned) */
	double open_unix, close_unix;
	uint64_t bytes;
	struct rt_msum *msum;
	int mfd;               /* its metrics file (a crash keeps them): fd + 1; 0: none; -1: failed */
	struct rt_round *next; /* the job's rounds in flight, oldest first */
};

/* Each returns 0 or -errno where it returns int; the file that defines it says more. */

/* rt_arena.c */
int rt__arena_open(struct rt_node *n);
void rt__arena_close(struct rt_node *n);

/* rt_journal.c */
int rt__journal_partial(struct rt_node *n, struct rt_round *r, uint32_t seq0,
			const struct shm_desc *d, uint64_t slot);
void rt__journal_round_done(struct rt_node *n, struct rt_job *j, uint32_t round);
int rt__journal_collect(struct rt_node *n);
int rt__journal_refeed(struct rt_node *n);

/* rt_journal.c: commit @in's record (seq @s, @key, answer @body) and put it into the tree. */
struct rt_accept_in;
int rt__journal_update(struct rt_node *n, struct rt_job *j, const struct rt_accept_in *in,
		       uint32_t s, const void *key, size_t key_len, const char *body,
		       size_t body_len, const char *client);

/* rt_wal_node.c: --durability disk (each does nothing without a log) */
struct rt_wal_ent;
int rt__wal_open(struct rt_node *n);
void rt__wal_close(struct rt_node *n);
/* The record of an update about to be committed (seq @s): prepared, not yet queued. */
int rt__wal_prepare(struct rt_node *n, struct rt_job *j, const struct rt_update_in *u,
		    const struct rt_accept_in *in, uint32_t s, const char *ans, size_t ans_len,
		    struct rt_wal_ent **out);
void rt__wal_discard(struct rt_wal_ent *e);
uint64_t rt__wal_submit(struct rt_node *n, struct rt_wal_ent *e);
/* Before update slots are freed: the log no longer reads them. */
void rt__wal_settle(struct rt_node *n);
/*
 * Whether every logged update is on disk (after the batch in flight): 0,
 * or the failing batch's -errno. A PARTIAL may supersede update records
 * (and their keys go to the store) only then: an update answered 503 by
 * the log keeps its record, so that its resend is answered 202 only once
 * it is on disk.
 */
int rt__wal_durable_all(struct rt_node *n);
/* Round @round of @j is stored: its log goes. */
void rt__wal_cut(struct rt_node *n, struct rt_job *j, uint32_t round);
/* After the arena's records are back: the logged updates the arena did not have. */
int rt__wal_replay(struct rt_node *n);
/*
 * Secure rounds across a restart (rt_secagg_resume.c, rt_secagg_state.c): before the journal's
 * refeed, each secagg job's state log rebuilds its round in progress (so the tree's sum of the
 * round is wanted when it comes); after it, the round's masked inputs the arena gave back are
 * checked against the state, and a round past its masked stage has its tree round closed.
 */
int rt__secagg_load(struct rt_node *n);
void rt__secagg_reconcile(struct rt_node *n);
uint64_t rt__secagg_log_job(const struct rt_job *j);
void rt__secagg_log_dir(const struct rt_node *n, char *path, size_t cap);
uint64_t rt__secagg_unix_ns(void);

/* rt_job.c */
void rt__job_free(struct rt_job *j);
struct trib_blob *rt__model_blob(struct rt_job *j, const float *data, uint32_t version);
/* A flora round's served model from its stacked sum and total weight (rt_commit.c). */
struct trib_blob *rt__flora_blob(struct rt_node *n, struct rt_job *j, const float *sum, double W,
			       uint32_t version);
int rt__store_blob(struct rt_node *n, struct rt_job *j, struct trib_blob *b);
int rt__model_write(struct rt_node *n, struct rt_job *j, const float *data, uint32_t version,
		    struct trib_blob **out);
int rt__jobs_load(struct rt_node *n);
/* rt_frl.c */
void rt__frl_identity(const struct rt_job *j, int32_t *out);
int rt__frl_check_model(const struct rt_job *j, const int32_t *m, size_t *tensor, size_t *bad);

/* rt_job_life.c */
/* A deleted job's rounds that finished aggregating: freed, nothing stored. */
void rt__job_drop_rounds(struct rt_node *n, struct rt_job *j);
/* After a restart: the job's paused state from the store. */
void rt__job_life_load(struct rt_node *n, struct rt_job *j);

/* rt_secagg_commit.c: a secure job's finished tree round hands its masked sum over. */
void rt__secagg_take_sum(struct rt_node *n, struct rt_job *j);
/* Wipes the mask keys in @r's unmasking task, if it has one (the slot stays @r's). */
void rt__secagg_task_wipe(struct rt_node *n, struct rt_round *r);
/*
 * A function of role FN_ROLE_SHARD has ended (reaped, channels read): true if it was a shard of
 * a secure unmasking and is judged here (killed on purpose under an orphaned round, or failed on
 * its own: the round's sa_why says so), false for the usual judgement (recover() replaces it).
 */
struct rt_fn;
bool rt__secagg_shard_judged(struct rt_node *n, struct rt_fn *fn);
/* @r failed under its shards (sa_orphan) and they have all ended: unlinked from @j and freed. */
void rt__secagg_orphan_reap(struct rt_node *n, struct rt_job *j, struct rt_round *r);
/* A secure unmasking's shard cannot be replaced: @r's sa_why (the first reason stays). */
void rt__secagg_shard_lost(struct rt_round *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* rt_tree.c */
/* Cells in the job's tree: the model's, plus the masked weight of a secure job. */
uint64_t rt__tree_elems(const struct rt_job *j);
uint64_t rt__acc_slot_len(const struct rt_job *j);
int rt__garbage_add(struct rt_round *r, uint64_t slot);
int rt__fn_acquire(struct rt_node *n, struct fn_config *cfg, const struct fn_params *par,
		   struct rt_fn **out);
/* Idle functions: warm, alive, reachable (what rt__fn_acquire can configure at once). */
uint32_t rt__fn_idle(struct rt_node *n);
/* --fn-pool: pre-start one function (a tick's share) while fewer than opts.fn_pool are idle. */
void rt__fn_pool_fill(struct rt_node *n);
void rt__cfg_init(struct rt_node *n, struct rt_round *r, struct fn_config *cfg, uint16_t role,
		  uint64_t acc);
int rt__acc_alloc(struct rt_node *n, struct rt_round *r, uint64_t *acc, uint64_t *data);
void rt__out_ensure(struct rt_node *n, bool has, const struct shm_desc *p, const float *payload,
		    uint32_t *routed_to, uint32_t parent);
int rt__top_start(struct rt_node *n, struct rt_round *r);
uint32_t rt__leaf_parent(const struct rt_round *r, uint32_t i);
int rt__mid_start(struct rt_node *n, struct rt_round *r, uint32_t g);
void rt__mid_finalise(struct rt_node *n, struct rt_round *r, uint32_t g);
int rt__leaf_send(struct rt_node *n, struct rt_round *r, struct rt_leaf *l, uint32_t k);
int rt__leaf_start(struct rt_node *n, struct rt_round *r, uint32_t i);
void rt__round_free(struct rt_node *n, struct rt_round *r, bool free_slots);
void rt__plan_round(struct rt_node *n, struct rt_job *j, struct ctl_plan *plan);

/* rt_robust.c */
int rt__server_slots(struct rt_node *n, struct rt_job *j, struct rt_round *r);
int rt__shard_start(struct rt_node *n, struct rt_round *r, uint32_t i);
void rt__robust_phase_done(struct rt_node *n, struct rt_job *j, struct rt_round *r);
int rt__robust_start(struct rt_node *n, struct rt_job *j, struct rt_round *r,
		     const struct shm_desc *descs, uint32_t k, uint64_t lo, uint64_t hi);
void rt__top_release(struct rt_node *n, struct rt_job *j, struct rt_round *r);
void rt__opt_state_load(struct rt_node *n, struct rt_job *j);
/*
 * fedau (rt_fedau.c). note: client @id's update of @round is in (accepted, or replayed from
 * the journal after a restart); its state moves, once per round. save: the states that moved
 * and the evictions go to the store, before the round's model (the commit point): 0 or -errno.
 * load: after a restart, the job's table from the store. free: the table.
 */
void rt__fedau_note(struct rt_job *j, uint32_t round, const char *id);
/*
 * Clients a fedau job remembers. Past it, the client whose last participation is the oldest is
 * forgotten (and deleted from the store): if it comes back it is a new client again, its missed
 * rounds counted from round 0. Lookups are linear: at this bound a scan is tens of microseconds
 * per update, and the table is RT_FEDAU_CLIENTS_MAX x 72 bytes.
 */
#define RT_FEDAU_CLIENTS_MAX TRIB_FEDAU_CLIENTS_MAX
int rt__fedau_save(struct rt_node *n, struct rt_job *j);
void rt__fedau_load(struct rt_node *n, struct rt_job *j);
void rt__fedau_free(struct rt_job *j);
/* rt_select.c: a new job takes @spec's client_config and selection (0 or -ENOMEM) ... */
int rt__select_init(struct rt_job *j, const struct rt_job_spec *spec);
/* ... kept in @p (its stored parameters: 0 or -ENOMEM), read back from them after a restart */
int rt__select_record(const struct rt_job *j, json_t *p);
int rt__select_from_stored(struct rt_job *j, const json_t *p);
/* with the open round's tasks from DATA_DIR/jobs/{job}/tasks (once @j's name and round are set) */
void rt__select_tasks_load(struct rt_node *n, struct rt_job *j);
void rt__select_free(struct rt_job *j);
int rt__opt_state_save(struct rt_node *n, struct rt_job *j, struct rt_round *r, uint8_t **copy);
void rt__opt_state_adopt(struct rt_node *n, struct rt_job *j, struct rt_round *r, uint8_t *copy);

/* rt_round.c */
void rt__round_close(struct rt_node *n, struct rt_job *j, struct rt_round *r, bool deadline);
/* A deleted job's open round takes no more updates: its leaves fold what they have. */
void rt__round_cut(struct rt_node *n, struct rt_job *j, struct rt_round *r);
/* An update for the open round (or FedBuff version) of @j, as rt_job_accept takes it. */
struct rt_accept_in {
	uint64_t slot_off, segs_off;
	uint32_t nsegs;
	double weight;
	float fold_scale; /* FedBuff staleness factor (0 = 1) */
};
/* Whether an update for @round may go into the open round; FedBuff: its *fold_scale. */
int rt__accept_where(const struct rt_job *j, uint32_t round, float *fold_scale);
/* rt_job_accept once the round is checked: into j->open (opened if needed). */
int rt__accept_at(struct rt_node *n, struct rt_job *j, const struct rt_accept_in *in,
		  uint32_t *seq);
/* The seq the next accepted update gets. */
uint32_t rt__next_seq(const struct rt_job *j);
/* A leaf whose partial exists already (recovered from the arena file): j->open's next leaf. */
int rt__leaf_recovered(struct rt_node *n, struct rt_job *j, const struct shm_desc *partial,
		       uint32_t first_seq);

/* rt_commit.c */
void rt__job_complete_rounds(struct rt_node *n, struct rt_job *j);
/* From the tick: retry the writes that failed and are due. */
void rt__store_retry_tick(struct rt_node *n, uint64_t now);

/* rt_roundrec.c: a round's record (metrics, times, bytes) and its row in the store */
struct rt_update_in;
double rt__unix_now(void);
/* 0, or -EMLINK: @u's metrics would take the open round past RT_MSUM_MAX names. */
int rt__round_metrics_room(const struct rt_job *j, const struct rt_update_in *u);
void rt__round_metrics_add(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t seq,
			   const struct rt_update_in *u);
void rt__round_record_extra(struct rt_node *n, struct rt_job *j, const struct rt_round *r);
/* After recovery: the metrics files of the rounds put back; other rounds' files go. */
void rt__round_metrics_recover(struct rt_node *n);
/* From rt__round_free(): the sums and the file's fd go. */
void rt__round_rec_free(struct rt_round *r);

/* rt_record.c */
struct rt_round *rt__round_find(struct rt_node *n, uint32_t job_id, uint32_t round,
				struct rt_job **jp);

/* rt_fnio.c: watch a function's channels (control records; its TCP socket in shm+bpf and tcp). */
void rt__watch_fn(struct rt_node *n, struct rt_fn *fn);
/* rt_fnio.c: send what is queued for every function; take bounced descriptors (shm+bpf). */
void rt__fn_io_tick(struct rt_node *n);
/* A descriptor was queued for function @fn_id while hand-offs are held (rt_fnio.c). */
void rt__handoff_note(struct rt_node *n, uint32_t fn_id);

#endif
