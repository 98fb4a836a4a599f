/* SPDX-License-Identifier: MIT */
/*
 * Inside `tributary controller`: the state its files share. ctl_cluster.c
 * runs the loop and the nodes' membership, ctl_jobs.c the jobs and their
 * rounds, ctl_models.c the model files. Private to those files; ctl__ marks
 * a function one of them exports to the others.
 */
#ifndef CTL_DAEMON_H
#define CTL_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ctl_cluster.h"
#include "ctl_models.h"
#include "ctl_wire.h"
#include "trib_retry.h"

#define CTL_REQ_TIMEOUT_MS 10000
/* After a restart, nodes get 2 × --dead-after-ms plus this to join again (ctl_rejoin.c). */
#define CTL_RECONCILE_SLACK_MS 3000
/* Rounds kept in memory after their model, for GET .../rounds/{r}. */
#define CTL_ROUNDS_KEPT 64

enum { CR_OPEN, CR_CLOSED, CR_DONE };

/*
 * The last acceptances of a node, by its request id: a node asks again when
 * an answer did not reach it, and gives back what it cannot fold. Both must
 * find the same count (ids are sequential per node: a ring holds the last).
 */
#define CTL_RECENT 4096
struct acc_rec {
	uint64_t uid;
	int64_t job; /* db id */
	uint32_t round, seq;
	int fold_at;
	bool released;
	double weight; /* fedau: the weight its answer named (0: none) */
};

struct cnode {
	char name[64];
	char addr[128]; /* its wire URL (node-to-node and controller-to-node) */
	char http[128]; /* its gateway, for status */
	char dataplane[16];
	uint32_t cores;
	uint64_t arena_bytes, arena_free;
	uint64_t mem_free; /* the node's MemAvailable */
	uint64_t last_ns;
	bool used; /* the rank is taken (live or dead) */
	bool live;
	uint32_t epoch;		/* this run of the node: a node that joins again gets a new one */
	struct acc_rec *recent; /* CTL_RECENT entries (owned), or NULL */
	bool awaited; /* known from the store after a controller restart, not back yet */
	uint32_t joined_at; /* this process of it (µs clock at its join): a top's sums went */
	char session[48];   /* this run's secret: its requests carry it (ctl_pki.c) */
	char serial[41];    /* the serial of the certificate it joined with */
};

struct cround {
	uint32_t round;
	int state;
	uint32_t count;			    /* updates accepted (and not lost) */
	uint32_t folded[CTL_MAX_NODES];	    /* updates folded on each node */
	uint32_t landed[CTL_MAX_NODES];	    /* updates whose client sent them to each node */
	bool lost[CTL_MAX_NODES];	    /* the node died with updates of this round */
	uint32_t lost_epoch[CTL_MAX_NODES]; /* which run of it (a receipt names it) */
	uint32_t lost_n[CTL_MAX_NODES];
	uint32_t count_at_loss[CTL_MAX_NODES]; /* the count then: more since may be resends */
	uint32_t lost_updates;
	int top;			    /* rank folding the top, from the close; -1 before */
	uint32_t planned[CTL_MAX_NODES];    /* leaves the placement gave each node at the close */
	uint32_t cross_edges;		    /* from the placement */
	uint32_t edges_from[CTL_MAX_NODES]; /* ranks whose sum crossed to the top (from the top) */
	uint32_t nedges;
	uint64_t open_ns, close_ns, done_ns;
	uint32_t n_updates; /* in the model */
	double weight;
	/* ctl_rejoin.c: what the store has of it (a fingerprint), and a close to send again */
	uint64_t saved_fp;
	uint64_t saved_cfp; /* ... of its clients (schema v5) */
	bool resend_close;
	json_t *clients; /* client token id -> rank folding its update (owned), NULL: none yet */
	json_t *keys; /* Idempotency-Key -> its first count (ctl_creds.c; owned), NULL: none */
	json_t *msums; /* ctl_rec.c: "rank:epoch" -> its updates' metric sums (owned), or NULL */
	uint32_t slots; /* flora: slots handed out, never reused (>= count) */
	/*
	 * flora: slots - count as controller.db has it (ctl_rejoin.c). After a restart the
	 * nodes' reports give the count, not which slots are out: count + this bounds them
	 * (slots given back are the only gap, and each one is written when it happens).
	 */
	uint32_t slot_gap;
	char failed[192]; /* why the round made no model of its own ("": it did, or not yet) */
	struct cround *next; /* newer */
};

struct cjob {
	int64_t db_id;
	char name[64];
	char token[80];
	char *body; /* the creation request, as nodes parse it (owned) */
	uint32_t cpr, fanin;
	struct ctl_model_fmt fmt; /* its tensors and model file header (owned) */
	uint32_t round;		  /* open round */
	uint32_t completed;	  /* model version */
	uint32_t num_rounds;	  /* done at this version: no count after (0: never) */
	/* A deadline: a round open this long closes with at least min_clients (0: cpr). */
	uint32_t min_clients, round_timeout_s;
	/*
	 * FedBuff: a round is a version, closed after buffer_size (cpr) updates; an update
	 * names the version it trained from, at most max_staleness behind the open one.
	 */
	bool async;
	bool flora;          /* flora: each accepted update gets a slot of its own (ctl__on_accept) */
	bool secagg;         /* "secagg": rank 0 runs its secure rounds (ctl__on_secagg_model) */
	uint32_t max_staleness;
	bool paused;		  /* no count while set (ctl_life.c; kept in the store's kv) */
	/*
	 * Latest model (owned, fmt.n_elem floats, then opt_len bytes of server-optimiser
	 * state for this version: one buffer, sent as one payload), NULL: zeros.
	 */
	float *model;
	size_t opt_len;		  /* bytes of state after the model (0: none yet, or no optimiser) */
	struct cround *rounds;	  /* oldest first: in flight and the last few done */
	/*
	 * A round's model that could not be stored: until it is, the job's
	 * updates are refused (503) and the top's node sends the model again
	 * with backoff, each time tried again.
	 */
	struct trib_retry store;
	uint8_t key[32];	  /* client credentials' key (TRIB_CRED_KEY_LEN); never logged */
	json_t *revoked;	  /* client ids revoked (owned array of strings) */
	/*
	 * ctl_select.c: "selection" (sel_k 0: none), sel_max tasks a round; the clients
	 * holding a task of round tasks_round, as the store has them (owned; NULL: not read).
	 */
	uint32_t sel_k, sel_max, tasks_round;
	double sel_f;
	json_t *tasks;
	/* fedau: its clients' interval estimates (ctl_fedau.c), made at its first count */
	bool fedau_checked;
	struct ctl_fedau *fedau;
	struct cjob *next;
};

struct ctl {
	const struct ctl_cluster_opts *o;
	struct ctl_wire *w;
	struct ctl_store *store;
	int sfd;      /* SIGINT/SIGTERM (trib_signal) */
	int stop_sig; /* the signal that stops the loop, 0 while running */
	char admin_token[80];
	char admin_sha256[65]; /* what nodes get instead of the token (ctl_pki.c) */
	char pki[512];	       /* DATA_DIR/cluster: the CA and the controller's link certificate */
	uint64_t pki_checked_ns; /* when live nodes' certificates were last checked for revocation */
	char *crl_pem;	 /* the CA's CRL of every revoked serial (NULL: none revoked); nodes get it */
	size_t crl_n;	 /* how many serials it lists */
	struct cnode nodes[CTL_MAX_NODES];
	uint32_t nnodes; /* ranks used: 0 .. nnodes - 1 */
	struct cjob *jobs;
	uint64_t cookie;
	uint32_t epochs; /* runs of nodes that joined, ever (kept across restarts) */
	/* After a restart: until then (or every awaited node is back) no update is counted. */
	uint64_t reconcile_until_ns;
};

/* --- ctl_pki.c: the cluster CA, enrolment, the join proof, revocation --- */

/* Make the CA and the controller's link certificate if missing; fill c->pki, admin_sha256. */
int ctl__pki_open(struct ctl *c);
/* The wire's TLS settings (paths inside c->pki). */
void ctl__pki_wire(const struct ctl *c, struct ctl_wire_tls *t, char *ca, char *crt, char *key,
		   size_t cap);
/* "cluster_ca" and "enroll": the only requests served on a link without a certificate. */
void ctl__on_cluster_ca(struct ctl *c, json_t **rep);
void ctl__on_enroll(struct ctl *c, struct ctl_event *ev, json_t **rep);
/* A join's proof (certificate, signature): 0 with *serial, or an error reply in *rep. */
int ctl__join_check(struct ctl *c, struct ctl_event *ev, const char *name, const char *addr,
		    char serial[41], json_t **rep);
/* ctl_cluster.c: the answer to a join (what a node is given: no admin token). */
json_t *ctl__join_reply(struct ctl *c, uint32_t rank, json_t *jobs, json_t *verdicts);
/* The rank whose session the request carries, or -1. */
int ctl__session_rank(const struct ctl *c, const json_t *hdr);
/* Each second: live nodes whose certificate was revoked are told and drained; a new CRL goes out. */
void ctl__pki_tick(struct ctl *c, void (*drain)(struct ctl *, uint32_t));
/* At stop. */
void ctl__pki_close(struct ctl *c);

/* --- ctl_cluster.c: nodes --- */

/* A string member of @o, or @dflt. */
const char *ctl__jstr(const json_t *o, const char *key, const char *dflt);
/* {"ok": false, "status", "error"}: a new reference. */
json_t *ctl__err_reply(int status, const char *msg);
/* The rank of the node called @name (live or drained), or -1. */
int ctl__node_rank(struct ctl *c, const char *name);
/* Send @h (+ @len bytes at @p, borrowed) to node @rank if live; failures are logged. */
void ctl__tell(struct ctl *c, uint32_t rank, json_t *h, const void *p, size_t len);
/* The same to every node but @except (-1: all). */
void ctl__tell_all(struct ctl *c, json_t *h, const void *p, size_t len, int except);

/* --- ctl_jobs.c: jobs and rounds --- */

/* The "job" message nodes build a job from: a new reference. */
json_t *ctl__job_msg(struct ctl *c, const struct cjob *j);
/* Each job with its recent rounds, for status: a new reference. */
json_t *ctl__jobs_status(struct ctl *c);
/*
 * Node @rank is gone: its updates in unfinished rounds are lost. An open
 * round needs that many more (clients are told to resend); a closed one
 * completes with the others, and if it was the top, the top moves.
 */
void ctl__rounds_lose_node(struct ctl *c, uint32_t rank);
/* Requests from nodes; *rep gets the answer (a new reference). */
void ctl__on_job_create(struct ctl *c, struct ctl_event *ev, json_t **rep);
void ctl__on_accept(struct ctl *c, struct ctl_event *ev, json_t **rep);
void ctl__on_release(struct ctl *c, struct ctl_event *ev, json_t **rep);
void ctl__on_model_done(struct ctl *c, struct ctl_event *ev, json_t **rep);
/*
 * Deadlines (round_timeout_s, min_clients): the controller closes a round that has been open
 * that long with at least min_clients updates counted cluster-wide; with fewer it waits, as one
 * node does. Not while reconciling after a restart (the nodes' counts are not all in).
 */
void ctl__jobs_deadline_tick(struct ctl *c);
/* ctl_jobs.c's helpers, for ctl_jobs_model.c. */
struct cjob *ctl__job_find(struct ctl *c, const char *name);
struct cround *ctl__round_get(struct cjob *j, uint32_t r);
/* Round @cr's model is stored as j->model: version cr->round + 1 recorded and sent to every node. */
void ctl__job_advance(struct ctl *c, struct cjob *j, struct cround *cr);
/*
 * "secagg_model" from the node that runs @j's secure rounds (rank 0): the unmasked mean of
 * round j->completed (the payload, n_elem floats) becomes the next version (ctl_jobs_model.c).
 */
void ctl__on_secagg_model(struct ctl *c, struct ctl_event *ev, json_t **rep);
/* The model of version j->completed (and its optimiser state) to every node. */
void ctl__send_model(struct ctl *c, struct cjob *j);
/* ctl_jobs_model.c: FedBuff's parameters from a job's definition (rt_algo.c's defaults). */
void ctl__job_async(struct cjob *j, const json_t *o);
/* The loaded version's optimiser state from the store, after the model; none is not an error. */
int ctl__job_opt_load(struct ctl *c, struct cjob *j);
/* A node's PUT /model: the starting model, stored and sent to every node, or 409. */
void ctl__on_model_put(struct ctl *c, struct ctl_event *ev, json_t **rep);
void ctl__on_round_get(struct ctl *c, struct ctl_event *ev, json_t **rep);
/* The record of round @cr of @j, as GET .../rounds/{r} shows it: a new reference. */
json_t *ctl__round_json(struct ctl *c, struct cjob *j, struct cround *cr);
/* ctl_rec.c: GET .../rounds[?from&limit] (op rounds_list {job, from, limit}). */
void ctl__on_rounds_list(struct ctl *c, struct ctl_event *ev, json_t **rep);
/* ctl_rec.c: POST .../evaluations (op evaluation {job, version, client, key, samples, metrics}). */
void ctl__on_evaluation(struct ctl *c, struct ctl_event *ev, json_t **rep);
/* ctl_rec.c: what a round's record adds from the store (its version's evaluation). */
void ctl__round_json_extra(struct ctl *c, struct cjob *j, const struct cround *cr, json_t *o);
/*
 * ctl_rec.c: fold (@sign 1) or take out (-1, given back) the "metrics" of an
 * update counted in @cr that folds on rank @to (@hdr: the node's accept or
 * release, with "weight"). The record's means leave out lost node runs.
 */
void ctl__rec_metrics(struct ctl *c, struct cjob *j, struct cround *cr, uint32_t to,
		      const json_t *hdr, int sign);
/*
 * ctl_rec.c: round @r of @j no longer in memory: its stored row as a record
 * into *rep ({"ok", "round"}) -> true; false if the store has none.
 */
bool ctl__rec_round_stored(struct ctl *c, struct cjob *j, uint32_t r, json_t **rep);
/* ctl_rec.c: the record of @j's open round before its first update (a new reference). */
json_t *ctl__rec_open_json(const struct cjob *j);
/* ctl_rec.c: a done round's row gains its times and metrics (ctl_store_round_extra_put). */
void ctl__rec_store(struct ctl *c, struct cjob *j, const struct cround *cr, double opened,
		    double closed);
/* Also *p and *len: a payload borrowed from the job until the next event. */
void ctl__on_sync(struct ctl *c, struct ctl_event *ev, json_t **rep, const void **p, size_t *len);
/*
 * The jobs of the store, each at the version of its newest model file;
 * rounds in flight then are lost (nodes are told). 0 or -errno (logged).
 */
int ctl__jobs_load(struct ctl *c);
/* Free every job (their rounds and models). */
void ctl__jobs_free(struct ctl *c);
/* ctl_jobs.c's round verbs, for ctl_rejoin.c. */
struct cjob *ctl__job_by_id(struct ctl *c, int64_t id);
struct cround *ctl__round_new(struct cjob *j, uint32_t r);
void ctl__round_close(struct ctl *c, struct cjob *j, struct cround *cr);
void ctl__round_reclose(struct ctl *c, struct cjob *j, struct cround *cr);
/* flora: cr->slots at least count + slot_gap (after a restart), the gap then kept (ctl_jobs.c). */
void ctl__flora_slots_sync(const struct cjob *j, struct cround *cr);

/* --- ctl_select.c: client selection across nodes (issue 15) --- */

/*
 * @j's "selection" from its definition @o (checked by the node that took it): sel_k, sel_f,
 * sel_max; a job without clients_per_round gets per_round as its cpr.
 */
void ctl__job_select_init(struct cjob *j, const json_t *o);
/* Forget its tasks in memory (the store keeps them). */
void ctl__job_select_fini(struct cjob *j);
/*
 * {"op": "task", "job", "client"}: a task of @j's open round for the client (kept in the
 * store first), the one it holds, or wait/done; the reply names the action and the round.
 */
void ctl__on_task(struct ctl *c, struct ctl_event *ev, json_t **rep);
/*
 * An update of round @r of @j from client @client (NULL: the job token): true with a 409
 * (or 503) in *@rep when @j selects clients and that client holds no task of @r.
 */
bool ctl__task_refused(struct ctl *c, struct cjob *j, uint32_t r, const char *client,
		       json_t **rep);
/* Status: "selection" {per_round, overcommit, tasks_out, tasks_max} into @jo, if @j selects. */
void ctl__select_status(struct ctl *c, struct cjob *j, json_t *jo);

/* --- ctl_rejoin.c: a restart of the controller or of a node --- */

/*
 * After the jobs: the nodes the store knew (awaited until they join again)
 * and each job's rounds in flight. 0 or -errno (logged).
 */
int ctl__xstate_load(struct ctl *c);
/* Each tick: rounds that changed go to the store; the end of a reconciliation; closes. */
void ctl__xstate_tick(struct ctl *c);
/* At a clean stop: rounds that changed since the last tick go to the store. */
void ctl__xstate_save(struct ctl *c);
/*
 * Whether updates wait (503) because nodes that held rounds in flight are not
 * back yet; ends the wait once they are (or its time is up).
 */
bool ctl__reconciling(struct ctl *c);
/*
 * Node @rank joins again (a restart of it or of the controller) and reports
 * what its arena holds (@hdr "holds", "arena"): its counts are reconciled
 * with the rounds in flight, before its run changes. Returns the verdicts
 * for its join answer (a new reference): [[job id, round, keep, held], ...].
 */
json_t *ctl__rejoin(struct ctl *c, uint32_t rank, const json_t *hdr);
/*
 * After ctl__rejoin(): whether node @rank's join continues its last run (its
 * arena kept, and no unfinished round lists that run lost), so that it keeps
 * its epoch: the receipts it gave stay its own. Else it gets a new one.
 */
bool ctl__run_continues(struct ctl *c, uint32_t rank, const json_t *hdr);
/* The node record in the store (logged on failure). */
void ctl__node_save(struct ctl *c, uint32_t rank);

/* --- ctl_creds.c: client credentials --- */

/* @j's key (made and kept the first time) and revoked clients from the store. 0 or -errno. */
int ctl__job_cred_init(struct ctl *c, struct cjob *j);
/* Forget them. */
void ctl__job_cred_fini(struct cjob *j);
/* Put "cred_key" (hex) and "revoked" into message @m. 0 or -ENOMEM. */
int ctl__job_cred_add(const struct cjob *j, json_t *m);
/* {"op": "revoke", "job", "client"}: kept, then every node is sent the job again. */
void ctl__on_revoke(struct ctl *c, struct ctl_event *ev, json_t **rep);
/* ctl_life.c: {"op": "pause", "job", "paused": bool}: kept, then every node is told. */
void ctl__on_pause(struct ctl *c, struct ctl_event *ev, json_t **rep);
/*
 * ctl_life.c: {"op": "job_delete", "job", "purge": bool}: the job's rows go (the commit), its
 * models move aside (or go), every node is told to delete it, then it is freed here.
 */
void ctl__on_job_delete(struct ctl *c, struct ctl_event *ev, json_t **rep);
/* ctl_jobs.c: take @j off the job list and free it. */
void ctl__job_unlink_free(struct ctl *c, struct cjob *j);
/* At load: the job's paused state from the store. */
void ctl__job_life_load(struct ctl *c, struct cjob *j);
/*
 * One update per client per round, cluster-wide: whether client @id (NULL or "": none) has
 * an update counted in @cr (then *@rep gets the 409); else it is counted there, folded on
 * rank @to. Returns true when refused.
 */
bool ctl__round_client_refused(struct cround *cr, const char *id, uint32_t to, json_t **rep);
/* Client @id's update of @cr was given back or lost: it may send again. */
void ctl__round_client_drop(struct cround *cr, const char *id);
/* Node @rank was lost with @cr open: its clients send again. */
void ctl__round_clients_lose(struct cround *cr, uint32_t rank);
/*
 * Idempotency-Keys across gateways (ctl_creds.c): true (and *@rep) if @key was counted in
 * @cr already; put records a count; release and lose forget counts given back or lost.
 */
bool ctl__round_key_first(struct ctl *c, struct cround *cr, const char *key, json_t **rep);
void ctl__round_key_put(struct cround *cr, const char *key, uint32_t to, uint32_t epoch,
			uint32_t seq, uint32_t asker, uint64_t uid);
void ctl__round_key_release(struct cround *cr, uint32_t asker, uint64_t uid);
void ctl__round_keys_lose(struct cround *cr, uint32_t rank);
/* Distinct client tokens counted in @cr. */
uint32_t ctl__round_clients(const struct cround *cr);
/*
 * ctl_fedau.c: the weight of client @client's update of @round counted in a fedau job (its
 * state moves), *w = 0 for any other job: 0; else -errno and *@rep the refusal. commit: the
 * states that moved go to the store (before the round's model file); fini: the table goes.
 */
int ctl__fedau_weight(struct ctl *c, struct cjob *j, uint32_t round, const char *client,
		      double *w, json_t **rep);
int ctl__fedau_commit(struct ctl *c, struct cjob *j);
void ctl__fedau_fini(struct cjob *j);

#endif
