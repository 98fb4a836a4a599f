/* SPDX-License-Identifier: MIT */
/* Inside the cluster layer (cluster/ only): the agent's state and the verbs its files share. */
#ifndef AGENT_PRIV_H
#define AGENT_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "ctl_cluster.h"
#include "ctl_wire.h"
#include "rt_agent.h"
#include "rt_api.h"
#include "rt_node.h"
#include "shm_abi.h"

#define AGENT_TIMEOUT_MS    10000
#define AGENT_HB_TIMEOUT_MS 1000
/* A controller silent this long is dialled afresh (rt_agent_link.c relink), at most this often. */
#define AGENT_RELINK_MS     2000

enum pend_kind {
	PK_JOIN = 1,
	PK_HB,
	PK_CREATE,
	PK_ACCEPT,
	PK_FWD,
	PK_PARTIAL,
	PK_MODEL_DONE,
	PK_ROUND_GET,
	PK_STATUS,
	PK_NOTE,
	PK_SYNC,
	PK_REVOKE,
	PK_PAUSE,
	PK_DELETE,
	PK_MODEL_PUT,
	PK_ROUNDS_LIST,
	PK_EVAL,
	PK_TASK,
	PK_SHARD, /* rt_agent_shard.c: slices, distances, a selection, a range */
	PK_SECAGG,	 /* rt_agent_secagg.c: a stage passed on to the node that runs the round */
	PK_SECAGG_MODEL, /* rt_agent_secagg.c: the unmasked mean to the controller */
};

/* An update on its way through the cluster: owns its slot until folded or given up. */
struct upd {
	struct rt_conn *c;    /* the client waiting for 202, or NULL */
	struct ctl_event *ev; /* a peer's forward waiting for its answer, or NULL */
	char job[64];
	uint32_t round; /* FedBuff: the version it trained from until the count names its buffer */
	uint32_t base;	/* FedBuff: the version it trained from (its staleness is round - base) */
	uint64_t uid; /* this node's id of the request that counts it */
	int tries;
	uint32_t seq; /* the controller's count for the round */
	int fold_at;  /* rank that folds it */
	char fold_name[64];
	uint32_t fold_epoch; /* that node's run (a receipt names it) */
	uint64_t slot_off, segs_off, slot_len, body_len;
	uint32_t nsegs;
	double weight;
	char key[72]; /* the client's Idempotency-Key ("": none), kept in the update's record */
	bool provisional; /* taken while the controller was away: counted when this node joins */
	char client[33]; /* its client token's id (TRIB_CRED_CLIENT_MAX), "" for the job's */
	char metrics[1088]; /* its X-Tributary-Metrics (checked; "": none), told with its count */
	uint64_t wal_ticket;	  /* --durability disk: its log record's ticket (0: none) */
	uint64_t wal_deadline_ns; /* then 503 if the log has not made it durable */
	struct upd *next; /* backlog: waiting for the local round to get to it; wal_wait */
};

struct xinput {
	bool has;
	bool remote;	   /* came over the wire (a cross-node edge) */
	uint32_t epoch;	   /* remote: the run of the node that sent it */
	struct shm_desc d; /* a PARTIAL, seq = the node's rank */
	uint64_t slot;	   /* owned: a landed sum or zeros; 0: the local round's */
	const float *data;
};

/* One round of one job as this node sees the cluster. */
struct xround {
	char job[64];
	uint32_t round;
	bool closed; /* the controller's close came */
	uint32_t nnodes;
	uint32_t counts[CTL_MAX_NODES];
	int top;
	uint32_t top_join; /* the top's join: one joined again may have lost the sums it had */
	uint32_t joins[CTL_MAX_NODES]; /* robust rules: each owner's join (rt_agent_shard.c) */
	char top_addr[128];
	char top_name[64]; /* its TLS certificate must name it (ctl_wire_peer_name) */
	/* this node's sum */
	struct rt_round *local; /* the local round with its sum (until the model) */
	bool sum_ready;
	int delivered_to; /* the top rank that has our sum (-1: none) */
	bool sending;
	/* the round's top, when it is on this node */
	bool folding;
	uint32_t fold_fn;
	uint64_t fold_acc;
	/*
	 * Accumulators of tops that died while their function was still in the set (exited,
	 * its data socket not yet at end of stream): records it sent may still name them, so
	 * they are freed with the round, as a local round's garbage is (owned).
	 */
	uint64_t *dead_acc;
	uint32_t ndead_acc;
	struct xinput zeros;     /* one slot of zeros for every node with nothing (owned) */
	struct xinput in[CTL_MAX_NODES];
	bool sent_in[CTL_MAX_NODES];
	bool have_result;
	bool model_sending, model_sent;
	uint32_t provisional; /* updates taken here while the controller was away */
	/* the controller could not store it yet: sent again no sooner than this backoff allows */
	struct trib_retry model_retry;
	struct shm_desc result;
	float *result_payload; /* tcp: owned */
	/*
	 * A job with a server step (or deltas): the optimiser state this round starts from,
	 * as the controller sent it with model version @round (owned; NULL: none came), and,
	 * on the top's node, the step's arena inputs (owned).
	 */
	uint8_t *opt_in;
	size_t opt_in_len;
	uint64_t opt_asked_ns; /* when this node last asked the controller for it */
	/* Round 0: the controller has a starting model (its close says so); here yet? */
	bool need_v0, v0_here;
	bool opt_none; /* the controller sent version @round without a state: it has none */
	struct rt_server_io srv;
	struct xshard *sh; /* a robust rule's slices and phases (rt_agent_shard.c; owned) */
	uint32_t *gseq;	   /* robust rules: the controller's count of each local update (owned) */
	uint32_t ngseq;
	struct xround *next;
};

struct pend {
	uint64_t cookie;
	int kind;
	struct rt_conn *c;
	struct upd *u;
	struct xround *x;
	int top;	/* PK_PARTIAL: the rank it went to */
	uint64_t bytes; /* PK_PARTIAL: payload bytes */
	int what;	/* PK_SHARD: which message */
	uint64_t gen;	/* PK_SHARD: the partition it belongs to */
	char job[64];	/* PK_SECAGG*: its job */
	struct pend *next;
};

struct rt_agent {
	struct rt_node *n;
	struct ctl_wire *w;
	char name[64];
	char addr[128];
	char http[160];
	int rank;
	uint32_t epoch; /* this run, as the controller numbered it */
	bool joined, join_pending, hb_pending;
	uint64_t last_join_ns, last_hb_ns;
	uint32_t hb_ms; /* the controller's heartbeat period */
	uint64_t cookie;
	struct pend *pend;
	struct xround *xr;
	struct upd *backlog;
	/* counters for /metrics */
	uint64_t partials_sent, partials_received, fwd_sent, fwd_received, accept_rejected,
	    models_sent;
	uint64_t partial_bytes, fwd_bytes; /* payload bytes sent to other nodes */
	uint64_t shard_bytes; /* robust rules: slices, distances, selections, ranges sent */
	uint64_t next_uid;
	/* rt_agent_rejoin.c: joining again after a restart (ours or the controller's) */
	struct trib_retry join_retry; /* joins that got no answer: the next one waits longer */
	uint64_t ctl_away_ns;	      /* the first heartbeat that got no answer, 0 if it answers */
	uint64_t ctl_away_said_ns;    /* when the last "still no answer" line was logged */
	uint64_t ctl_redial_ns;       /* when the controller was last dialled afresh (relink) */
	bool recovered;		      /* the arena's records went back into rounds (first join) */
	uint32_t provisional;	      /* updates taken since the controller went away */
	uint64_t provisional_total;   /* for /metrics */
	struct upd *wal_wait; /* folded, their 202 waiting for the log (--durability disk) */
	/* rt_agent_enroll.c: this node's link certificate and the session of its join */
	char pki[512];	  /* DATA_DIR/cluster: ca.crt, node.key, node.crt */
	char session[48]; /* the controller's secret for this join; sent with each request */
	char jtok[256];	  /* --join-token, or the first line of --join-token-file ("": none) */
	char crl_path[560]; /* DATA_DIR/cluster/crl.pem: the last CRL the controller sent */
	size_t crl_n;	    /* how many serials it lists */
	/*
	 * The fd the gateway's loop waits on: the wire pokes it once open. Until
	 * then (a->w NULL) a thread enrols; it sets enroll_state (1 done, < 0
	 * refused) and pokes it too. Alive, not ready, meanwhile.
	 */
	int efd;
	pthread_t enroll_thread;
	bool enroll_started;
	_Atomic int enroll_state;
	_Atomic bool enroll_stop; /* rt_agent_close: give up waiting for the controller */
};

/* A string member, or @dflt. */
static inline const char *jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : dflt;
}

/* --- rt_agent_enroll.c --- */
/*
 * The link files in DATA_DIR/cluster (a->pki): fills @t (paths in @ca, @crt,
 * @key, each @cap bytes). 0 if they are there; -ENOENT if the node must enrol
 * (it has --join-token); -EACCES if it cannot (logged, with what to do).
 */
int rt__agent_pki(struct rt_agent *a, struct ctl_wire_tls *t, char *ca, char *crt, char *key,
		  size_t cap);
/* Enrol (blocking, in its own thread): until answered or a->enroll_stop. 0 or -errno (logged). */
int rt__agent_enroll(struct rt_agent *a);
/* The cluster's CRL (from the controller): the wire refuses what it lists; kept on disk. */
int rt__agent_crl(struct rt_agent *a, const char *crl, bool from_ctl);
/* Add the join's proof to @h: this node's certificate, the time, their signature. */
int rt__agent_join_proof(struct rt_agent *a, json_t *h);

int rt__agent_request(struct rt_agent *a, const char *url, json_t *h, const void *p, size_t len,
		      int kind, struct pend **out);
int rt__agent_to_ctl(struct rt_agent *a, json_t *h, const void *p, size_t len, int kind,
		     struct pend **out);
void rt__agent_respond_json(struct rt_conn *c, int status, json_t *o);
void rt__agent_reply(struct rt_agent *a, struct ctl_event *ev, json_t *h);
json_t *rt__agent_ok_json(void);
json_t *rt__agent_err_json(int status, const char *msg);
struct xround *rt__agent_xr_get(struct rt_agent *a, const char *job, uint32_t round, bool make);
void rt__agent_xr_free(struct rt_agent *a, struct xround *x);
/* A dead top's accumulator, kept until its round is freed (rt_agent.c). */
void rt__agent_dead_acc_keep(struct xround *x);
/* rt_agent_link.c: joining, heartbeats, the controller away. */
void rt__agent_join_send(struct rt_agent *a);
void rt__agent_fatal_stop(struct rt_agent *a, int status);
void rt__agent_on_join_reply(struct rt_agent *a, struct ctl_event *ev);
void rt__agent_on_hb_reply(struct rt_agent *a, struct ctl_event *ev);
void rt__agent_job_apply(struct rt_agent *a, json_t *h);
void rt__agent_on_create_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
void rt__agent_upd_free(struct rt_agent *a, struct upd *u);
void rt__agent_upd_fold(struct rt_agent *a, struct upd *u);
/* --durability disk: updates still waiting for the log past their deadline get 503. */
void rt__agent_wal_tick(struct rt_agent *a, uint64_t now);
/* At close: the updates waiting for the log go (their connections are gone). */
void rt__agent_wal_free(struct rt_agent *a);
void rt__agent_on_accept_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
void rt__agent_on_fwd_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
bool rt__agent_on_fwd(struct rt_agent *a, struct ctl_event *ev);
/* Model v_r and its optimiser state in x->srv, once both are here (false: not yet). */
bool rt__agent_server_inputs(struct rt_agent *a, struct rt_job *j, struct xround *x);
void rt__agent_top_run(struct rt_agent *a, struct xround *x);
void rt__agent_sum_deliver(struct rt_agent *a, struct xround *x);
void rt__agent_on_partial_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
void rt__agent_on_partial(struct rt_agent *a, struct ctl_event *ev);
void rt__agent_model_send(struct rt_agent *a, struct xround *x);
void rt__agent_on_close(struct rt_agent *a, json_t *h);
void rt__agent_on_model(struct rt_agent *a, struct ctl_event *ev);
void rt__agent_sync_check(struct rt_agent *a, json_t *jobs);
void rt__agent_on_sync_reply(struct rt_agent *a, struct ctl_event *ev);
/* What this node's arena holds, for a join: [[job id, round, updates, weight], ...]. */
json_t *rt__agent_holds(struct rt_agent *a);
/* The join's verdicts on what it holds: recovery at the first join; a void round later exits. */
void rt__agent_rejoined(struct rt_agent *a, json_t *verdicts);
/*
 * rt_agent_state.c: what the controller's count of @u (its answer @rep) says it folds with
 * beyond the count, put into @u (fedau: its weight): 0, or -EPROTO (logged). provisional: why
 * @j's updates cannot be taken while the controller is away, or NULL.
 */
int rt__agent_accept_state(struct rt_agent *a, struct upd *u, const json_t *rep);
const char *rt__agent_state_provisional(const struct rt_job *j);
/* The API's cluster hooks for jobs and updates (ctx: the agent). */
void rt__agent_job_create(void *ctx, struct rt_conn *c);
void rt__agent_update(void *ctx, struct rt_conn *c, uint64_t segs_off, uint32_t nsegs);
/* DELETE /v1/jobs/{job}/clients/{id}: the controller keeps it and tells every node. */
void rt__agent_revoke(void *ctx, struct rt_conn *c, struct rt_job *j, const char *client);
void rt__agent_on_revoke_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
/* rt_agent_life.c: POST /v1/jobs/{job}/pause|resume through the controller. */
void rt__agent_pause(void *ctx, struct rt_conn *c, struct rt_job *j, bool pause);
void rt__agent_on_pause_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
/* rt_agent_rec.c: @u's metrics as JSON for its count or release (a new reference; NULL: none). */
json_t *rt__agent_upd_metrics(const struct upd *u);
/* rt_agent_rec.c: GET .../rounds through the controller. */
void rt__agent_rounds_list(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t from,
			   uint32_t limit);
void rt__agent_eval_post(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t version,
			 const char *client, const char *key, uint64_t samples,
			 const json_t *metrics);
/* The controller's answer to either, passed on to the client. */
void rt__agent_on_rounds_list_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
/* rt_agent_task.c: GET .../task of a job with selection, through the controller. */
void rt__agent_task_get(void *ctx, struct rt_conn *c, const struct rt_job *j, const char *client);
void rt__agent_on_task_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
/* DELETE /v1/jobs/{job} through the controller; its "job_delete" to every node. */
void rt__agent_job_delete(void *ctx, struct rt_conn *c, struct rt_job *j, bool purge);
void rt__agent_on_delete_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
/* PUT /model on this node: the controller decides for the cluster (rt_agent_life.c). */
void rt__agent_model_put(void *ctx, struct rt_conn *c, struct rt_job *j, const float *data);
void rt__agent_on_model_put_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
void rt__agent_on_job_delete(struct rt_agent *a, json_t *h);
/* rt_agent_shard.c: exact robust rules across nodes (docs/ARCHITECTURE.md). */
struct xshard;
/* The controller's close @h of @x, a robust job's: the partition (again if it changed). */
void rt__agent_shard_close(struct rt_agent *a, struct xround *x, json_t *h);
/* Move what can move now (at events and every tick). */
/* The partition a robust round's model belongs to (0: none, or not a robust round). */
uint64_t rt__agent_shard_gen(const struct xround *x);
void rt__agent_shard_step(struct rt_agent *a, struct xround *x);
void rt__agent_shard_free(struct rt_agent *a, struct xround *x);
/* Local update @local of @job's round @round was the controller's count @gseq. */
void rt__agent_shard_note(struct rt_agent *a, const char *job, uint32_t round, uint32_t local,
			  uint32_t gseq);
/* A peer's "shard_*" request. */
void rt__agent_on_shard(struct rt_agent *a, struct ctl_event *ev);
void rt__agent_on_shard_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
/* At a join: the jobs here that the controller's list @jobs no longer has are deleted. */
void rt__agent_jobs_prune(struct rt_agent *a, json_t *jobs);

/* rt_agent_secagg.c: secure aggregation across nodes (one node runs a job's secure rounds). */
/* The job message's "secagg_at" (@h) into j->sa_at ("" when this node runs them). */
void rt__agent_secagg_at(struct rt_agent *a, struct rt_job *j, json_t *h);
/* The API's hook: a stage to that node (rt_api_hooks.secagg). */
void rt__agent_secagg(void *ctx, struct rt_conn *c, struct rt_job *j, const char *client,
		      const char *stage, bool get, const void *body, size_t len);
void rt__agent_on_secagg_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);
/* A peer's "secagg": the stage run here, its answer sent back. */
void rt__agent_on_secagg(struct rt_agent *a, struct ctl_event *ev);
void rt__agent_on_secagg_model_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev);

#endif
