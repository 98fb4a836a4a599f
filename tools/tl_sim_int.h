/* SPDX-License-Identifier: MIT */
/*
 * simulate's insides, shared by its files and by nothing else: the state of one run and one
 * round, the gateways, the round poller and the report. Not a public interface.
 */
#ifndef TL_SIM_INT_H
#define TL_SIM_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tl_client.h"
#include "tl_simulate.h"

/* Most node names a run tells apart; more would be a misbehaving server. */
#define SIM_MAX_NODES 1024
#define SIM_NODE_NONE UINT16_MAX
#define SIM_NODE_NAME 64
/* A gateway that failed at connection level is tried after the others for this long. */
#define SIM_DOWN_NS 5000000000ull
/* Period of GET /rounds/r while a multi-node round's model is awaited. */
#define SIM_ROUNDS_POLL_NS 300000000ull
/* How long every gateway is given to learn of a job made through another one. */
#define SIM_JOB_WAIT_NS 10000000000ull

/* A client token's bytes and NUL (TRIB_CRED_TOKEN_MAX). */
#define SIM_CRED_MAX 96

/* The usage text of `tributary simulate` (tl_sim_opts.c). */
extern const char tl_sim_usage[];

/* ---- gateways: one per node of a cluster, one or more per run (tl_sim_gw.c) ---- */

struct tl_sim_gw {
	const char *url;             /* o->urls[i] */
	_Atomic uint64_t down_until; /* ns: until then the gateway is tried last; 0 when up */
	_Atomic uint32_t node;       /* node named by its last 202, SIM_NODE_NONE until one did */
};

/* What the threads of one run share. Allocated by sim_run (tl_simulate.c), which owns all of it. */
struct tl_sim_run {
	const struct tl_sim_opts *o;
	uint32_t ngw;
	struct tl_sim_gw gw[TL_SIM_MAX_URLS];
	_Atomic bool multi;     /* a 202 named its node: a multi-node cluster */
	_Atomic bool no_rounds; /* GET /rounds/r answered 404: never asked again */

	/*
	 * Node names, interned. A name is written before nnodes counts it, under
	 * the lock; whoever got an id through the lock, a joined thread or the
	 * same thread reads node[id] without it (names never change).
	 */
	pthread_mutex_t nodes_lock;
	uint32_t nnodes;
	bool nodes_full; /* warned once that a name did not fit */
	char node[SIM_MAX_NODES][SIM_NODE_NAME];

	/* The OpenSSL context of every client of the run (tl_sim_open). */
	struct tl_tls_shared *tls;
	/* One client per gateway, opened on first use. */
	struct tl_client *mconns[TL_SIM_MAX_URLS]; /* main thread: admin calls, model polls */
	struct tl_client *pconns[TL_SIM_MAX_URLS]; /* the poller (then main): /rounds, resends */
	float *pbuf;        /* the poller's update buffer, allocated on first use */
	struct tl_sim_ack *acks; /* o->clients entries, reset each round */
	bool *include;      /* o->clients flags: the updates the round's model folds */
	json_t *report;     /* round objects for --report-json, NULL without it */

	/* The main thread's alone. */
	struct tl_sim_job job;     /* the job being driven */
	char *admin;               /* the admin token, NULL when none was found */
	char *st_hdr;              /* safetensors header of every safetensors update */
	size_t st_hdr_len;
	double *ref;               /* o->params doubles: the reference of the round checked */
	unsigned ncpu;             /* threads for the reference */
	struct tl_sim_worker *w;   /* o->connections workers */
	uint32_t nw;               /* of those, the ones with an update buffer */
	char (*ctok)[SIM_CRED_MAX]; /* o->clients client tokens (tl_sim_cred.c), NULL: none */
};

/* Per client and round: which node acknowledged its update. */
struct tl_sim_ack {
	uint16_t node;  /* node of the 202 that counts, SIM_NODE_NONE: unnamed (single node) */
	uint8_t gw;     /* gateway that gave that 202 */
	uint8_t flags;  /* SIM_ACK_* */
	uint8_t resends; /* sends after lost nodes took it: its key's -r<n> (tl_sim_idem_key) */
};

#define SIM_ACK_LOST 1u     /* a node that acknowledged it was lost for the round */
#define SIM_ACK_CUR_LOST 2u /* the node of the 202 that counts now is lost: not folded */
#define SIM_ACK_RESENT 4u   /* resent after a loss and accepted again */
#define SIM_ACK_FAILED 8u   /* its resend failed: not tried again */
#define SIM_ACK_REFUSED 16u /* 409: the round closed without it (a node was lost; see below) */
#define SIM_ACK_WAITED 32u  /* selection: told to wait (no task), sent nothing */

_Static_assert(TL_SIM_MAX_URLS <= UINT8_MAX, "tl_sim_ack.gw holds a gateway index");
_Static_assert(SIM_MAX_NODES < SIM_NODE_NONE, "tl_sim_ack.node holds a node id");

/* An operation on one client, tried on gateway after gateway by tl_sim_gw_call(). */
typedef int (*tl_sim_gw_op_fn)(struct tl_client *c, void *ctx);

/*
 * tl_sim_post_op's context: one update, its answer, the 503 resends it took.
 * A connection that breaks around the update (reset, cut mid-answer) gets it
 * again on the same gateway, the same bytes under the same Idempotency-Key, up
 * to SIM_RESEND_MAX times, waiting SIM_RESEND_FIRST_NS and doubling up to
 * SIM_RESEND_MAX_WAIT_NS; then it fails over as any connection failure
 * (tl_sim_gw_call). A refused connection or a timeout (no connection within
 * --connect-timeout-s, no answer within --timeout-s) means the gateway is down:
 * with other gateways it fails over at once, under the same key; with one
 * (@sole), a timeout is resent as a broken connection, and a refusal is tried
 * again, with the same waits, for up to SIM_RESEND_SOLE_NS while the server
 * restarts.
 */
struct tl_sim_post_ctx {
	const struct tl_sim_update *u;
	struct tl_http_resp *resp;
	const char *what; /* names the update in the log */
	bool sole;        /* the run has one gateway: nowhere to fail over to */
	unsigned retries; /* 503 resends, over all gateways tried */
};

#define SIM_RESEND_MAX 3
#define SIM_RESEND_FIRST_NS 50000000ull
#define SIM_RESEND_MAX_WAIT_NS 2000000000ull
#define SIM_RESEND_SOLE_NS 60000000000ull

/* tl_sim_job_op's context. */
struct tl_sim_job_ctx {
	const char *admin;
	const struct tl_sim_opts *o;
	struct tl_sim_job *job;
};

/* tl_sim_model_op's context. */
struct tl_sim_model_ctx {
	const char *job;
	const char *token;
	uint64_t version;
	struct tl_http_resp *resp;
};

/*
 * Connection-level failures, timeouts included: the request may go to another
 * gateway instead.
 */
bool tl_sim_conn_failed(int err);

/* Open a client of gateway @g with the run's TLS options and timeouts (tl_client_open_ex). */
int tl_sim_open(const struct tl_sim_run *run, uint32_t g, struct tl_client **out);

/* The node a 202's JSON body names ("node"), or SIM_NODE_NONE when it names none. */
uint16_t tl_sim_ack_node(struct tl_sim_run *run, const struct tl_http_resp *resp);

/* Gateway @g acknowledged an update for node @node. */
void tl_sim_gw_saw_node(struct tl_sim_run *run, uint32_t g, uint16_t node);

/*
 * Run @op on the client of gateway @first in @conns (the caller's, one per
 * gateway, opened here on first use and owned by the run), and again on the
 * next gateways while it fails at connection level: the gateway's node may be
 * dead, another one answers for the same job. @what names the call in the log.
 * *gw_out (may be NULL) is the gateway that answered. With one gateway this is
 * just @op. Returns @op's result, the last connection error, or -EHOSTUNREACH
 * when @avoid leaves no gateway.
 */
int tl_sim_gw_call(struct tl_sim_run *run, struct tl_client **conns, uint32_t first,
		   const bool *avoid, const char *what, tl_sim_gw_op_fn op, void *ctx,
		   uint32_t *gw_out);

/* The operations for tl_sim_gw_call(); @arg is the matching tl_sim_*_ctx. */
int tl_sim_post_op(struct tl_client *c, void *arg);
int tl_sim_job_op(struct tl_client *c, void *arg);
int tl_sim_model_op(struct tl_client *c, void *arg);

/* Log a failed answer to @what once, with the server's reason. */
void tl_sim_log_http_error(const char *what, const struct tl_http_resp *resp);

/*
 * GET job @name through @c until it is there (checked as tl_sim_job_ensure
 * checks it), asking again while it answers 404, for at most @wait_ns.
 * Returns 0, -ENOENT (still 404 at the end), or job_get's other errors
 * (logged).
 */
int tl_sim_job_wait(struct tl_client *c, const char *admin, const char *name, uint32_t clients,
		    uint64_t params, uint64_t wait_ns);

/* ---- client selection (tl_sim_task.c) ---- */

/*
 * GET /v1/jobs/J/task for client @i (its credential) on the gateways of
 * @conns: *train true with a task for @round, false when told to wait (or
 * the task is for another round: this one closed). 0, -EPROTO (another
 * answer; the reason in @resp), or a client error.
 */
int tl_sim_task_get(struct tl_sim_run *run, struct tl_client **conns, uint32_t i,
		    uint64_t round, bool *train, struct tl_http_resp *resp);

/* ---- client credentials (tl_sim_cred.c) ---- */

/*
 * With --client-tokens, or when the job has client_auth "required": mint one
 * credential per client (id sim-SEED-I) with the admin token, else the job's,
 * into run->ctok. 0 (also when none is needed) or -errno (logged).
 */
int tl_sim_creds_mint(struct tl_sim_run *run);

/* ---- rounds of a multi-node cluster (tl_sim_gw.c) ---- */

/* One answer of GET /v1/jobs/J/rounds/R. */
struct tl_sim_round_info {
	char state[16];           /* "open", "closed" or "done" */
	bool lost[SIM_MAX_NODES]; /* by node id: in lost_nodes */
	uint32_t nlost;
	json_t *top, *edges;      /* owned references, NULL when absent */
};

/* Drop the references *info holds; leaves them NULL. */
void tl_sim_round_info_free(struct tl_sim_round_info *info);

/*
 * GET /v1/jobs/J/rounds/R on the first gateway of @conns that answers, into
 * *info (release with tl_sim_round_info_free). Returns 0, -ENOENT (404: a server
 * without the endpoint), -EPROTO (another status or an answer that does not
 * parse; logged if @log), or a client error.
 */
int tl_sim_rounds_get(struct tl_sim_run *run, struct tl_client **conns, const char *token,
		      uint64_t round, bool log, struct tl_sim_round_info *info);

/* GET /rounds/r answered 404: a server without it (single node). Never asked again. */
void tl_sim_rounds_unsupported(struct tl_sim_run *run, uint64_t round);

/* ---- one round: workers, progress, the poller (tl_sim_round.c) ---- */

/* What the workers of one round share. */
struct tl_sim_round {
	struct tl_sim_run *run;
	const struct tl_sim_opts *o;
	const char *token;
	uint64_t round;
	uint32_t index; /* 1-based count of this run's rounds, for the progress line */
	const char *st_hdr;
	size_t st_hdr_len;
	bool tty;

	_Atomic uint32_t next;     /* next client index to take */
	_Atomic uint32_t finished; /* accepted + failed */
	_Atomic uint32_t accepted;
	_Atomic uint32_t failed;
	_Atomic uint32_t moved;    /* updates answered by another gateway than their own (any
				    * answer: a 409 after a failover counts) */
	_Atomic uint32_t conflicts; /* updates refused with 409 (round mismatch) */
	_Atomic uint32_t refused;   /* of those, in a cluster: the round closed without them */
	_Atomic uint32_t waited;    /* selection: clients told to wait (no task this round) */
	_Atomic uint32_t late;      /* selection: task holders the round closed without (409) */
	_Atomic bool abort;        /* an update failed: the round cannot close, stop sending */
	_Atomic bool done;         /* an update got 410: the job is done (its num_rounds) */
	_Atomic uint64_t retries;
	_Atomic uint64_t bytes;
	_Atomic uint64_t t_first; /* ns of the first POST */
	_Atomic uint64_t t_last;  /* ns of the last 202 */

	pthread_mutex_t lock; /* guards the fields below */
	uint64_t drawn_ns;
	uint32_t drawn_decile;
	char err[512]; /* the first failure, "" while none */

	/* Written by the poller, read by the main thread once it joined it. */
	bool answered;              /* GET /rounds/r answered at least once */
	bool resend_closed;         /* a resend found the round closed (409) */
	uint32_t resend_failed;     /* resends that got no 202 */
	char resend_err[256];       /* the first of them */
	bool lost_acked[SIM_MAX_NODES]; /* lost nodes that had acknowledged updates */
	json_t *top, *edges;        /* from the last /rounds answer, owned */
};

/* Bytes of one update buffer: the F32 elements, or the data section of any --dtype. */
static inline size_t tl_sim_buf_len(const struct tl_sim_opts *o)
{
	size_t f = o->params * sizeof(float), d = tl_sim_data_len(o->dtype, o->params);

	return f > d ? f : d;
}

struct tl_sim_worker {
	struct tl_sim_round *r;
	struct tl_client *conns[TL_SIM_MAX_URLS]; /* owned by the run: one per gateway */
	float *buf;          /* owned by the run: one update, reused */
	pthread_t tid;
};

/* Polls GET /rounds/r while the main thread waits for the round's model. */
struct tl_sim_poller {
	struct tl_sim_round *r;
	pthread_t tid;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when stop is set */
	bool stop;           /* guarded by lock */
};

/* On a tty redraw at most every 100 ms; elsewhere one line per 10%. Never blocks a worker. */
void tl_sim_progress(struct tl_sim_round *r, bool final);

/* Run the workers of one round; returns when all are done. 0 or -EAGAIN (no thread). */
int tl_sim_run_workers(struct tl_sim_worker *w, uint32_t nw);

/*
 * Take in a /rounds answer: mark the updates whose counting 202 came from a
 * lost node, keep its top and edges (*info gives them up).
 */
void tl_sim_round_note(struct tl_sim_round *r, struct tl_sim_round_info *info);

/* Start polling for round @r into *p. Returns 0, -ENOMEM, -EAGAIN (no thread). */
int tl_sim_poller_start(struct tl_sim_poller *p, struct tl_sim_round *r);
/* Stop and join the poller; a resend under way finishes first. */
void tl_sim_poller_stop(struct tl_sim_poller *p);

/* ---- the reference check (tl_sim_ref.c) ---- */

/*
 * Check the model in @resp (a safetensors body, borrowed) against @ref
 * (*err_out, *limit as tl_sim_compare). Returns 0 or -EPROTO (logged).
 */
int tl_sim_check_model(const struct tl_http_resp *resp, const double *ref, uint64_t params,
		       double *err_out, double *limit);

/* ---- what a round and a run report (tl_sim_report.c) ---- */

struct tl_sim_totals {
	uint64_t accepted;
	uint64_t retries;
	uint32_t rounds_ok;
	uint64_t refused; /* 409s a lost node explains (see worker_run, tl_sim_round.c) */
	bool done;        /* the job said it is done (410): the run stopped there */
};

/* What a round's report and lines say about lost updates. */
struct tl_sim_lost {
	uint32_t lost;     /* updates acknowledged by a node lost for the round */
	uint32_t resent;   /* of those, resent and folded */
	uint32_t excluded; /* of those, left out of the reference */
	uint32_t folded;   /* updates the model folds */
};

/* Fill run->include from the acks and count what was lost. */
void tl_sim_round_tally(struct tl_sim_round *r, struct tl_sim_lost *l);

/* "round R: K updates acknowledged by lost node(s) n2,n3: ..." when anything was lost. */
void tl_sim_print_lost(const struct tl_sim_round *r, const struct tl_sim_lost *l);

/* Append round @r's object to the report (a no-op without --report-json). */
void tl_sim_report_round(struct tl_sim_round *r, double secs, const struct tl_sim_lost *l,
			 bool ok, double max_err_v, bool checked);

/* Write the --report-json file. Returns 0 or -EIO (logged). */
int tl_sim_write_report(const char *path, json_t *rounds, bool ok);

#endif
