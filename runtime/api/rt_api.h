/* SPDX-License-Identifier: MIT */
/* HTTP API v1 on the loop's connections: jobs, updates, models, long polls, health and metrics. */
#ifndef RT_API_H
#define RT_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt_loop.h"
#include "rt_node.h"

struct rt_api;

/*
 * What the API keeps per connection, in c->user (the loop does not look
 * inside). Reset at the end of each request; the cluster layer reads the
 * update's slot and job while the controller counts it.
 */
struct rt_api_req {
	struct rt_job *job;
	uint32_t round;
	double weight;
	bool safetensors;
	uint8_t np_fmt;            /* an .npy/.npz update body (enum rt_np_fmt, api_priv.h) */
	bool inflight;            /* its body counts in the job's and client's bodies in flight */
	uint64_t slot_off;        /* arena slot holding the body, UINT64_MAX if none */
	uint64_t slot_len;
	/*
	 * a raw f32 body checked as it arrives (on_update_bytes, maybe on a receive thread:
	 * it reads only these): bytes checked, a bad value seen, the bound |x| <= limit
	 */
	uint64_t checked;
	bool check_bad;
	float check_limit;
	/* long poll */
	struct rt_conn *wnext;    /* the API's list of parked connections */
	uint64_t deadline_ns;
	uint32_t wait_after;
	bool parked;
	/* --durability disk: an update waiting for its log record to be on disk */
	uint64_t wal_ticket;      /* 0: not waiting */
	uint32_t ans_round, ans_seq; /* its 202 */
	char client[33];          /* the client token's id (TRIB_CRED_CLIENT_MAX), or "" */
	const char *sa_stage;     /* a secure round's stage (static): its body's handler */
	bool holds_job;           /* counted in job->bodies until the request ends */
};

_Static_assert(sizeof(struct rt_api_req) <= RT_CONN_USER_BYTES, "rt_api_req fits c->user");

static inline struct rt_api_req *rt_api_req(struct rt_conn *c)
{
	return (struct rt_api_req *)(void *)c->user;
}

/*
 * An update's bytes in its slot, given where its segments start: the body, and the .npz
 * members inflated after it (then the segments follow those). The log and a forward to
 * another node carry these bytes, with segment offsets relative to the slot.
 */
static inline uint64_t rt_api_update_bytes(struct rt_conn *c, uint64_t segs_off)
{
	uint64_t at = segs_off - rt_api_req(c)->slot_off;

	return at > ((c->body_len + 63) & ~63ull) ? at : c->body_len;
}

/*
 * `tributary node`: what the API asks of the cluster layer. Every pointer is
 * required when the table is given; @ctx goes to each call.
 */
struct rt_api_hooks {
	void *ctx;
	/* POST /v1/jobs whose body (c->body_heap) passed the checks: the controller names it. */
	void (*job_create)(void *ctx, struct rt_conn *c);
	/* A received, checked update in the request's slot (segments at @segs_off). */
	void (*update)(void *ctx, struct rt_conn *c, uint64_t segs_off, uint32_t nsegs);
	/* Joined: jobs and the admin token are known. */
	bool (*ready)(void *ctx);
	/* GET /v1/jobs/{job}/rounds/{round}: the controller's record of the round. */
	void (*round_get)(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t round);
	/* GET /v1/jobs/{job}/rounds[?from&limit] (checked): the controller's page of records. */
	void (*rounds_list)(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t from,
			    uint32_t limit);
	/* POST .../evaluations (checked; @metrics borrowed, NULL: none): the controller counts and keeps it. */
	void (*eval_post)(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t version,
			  const char *client, const char *key, uint64_t samples,
			  const json_t *metrics);
	/*
	 * GET /v1/jobs/{job}/task of a job with "selection", asked by client @client: the
	 * controller counts tasks cluster-wide; its answer comes back by rt_api_task_answer().
	 */
	void (*task_get)(void *ctx, struct rt_conn *c, const struct rt_job *j, const char *client);
	/* GET /v1/cluster. */
	void (*status)(void *ctx, struct rt_conn *c);
	/* DELETE /v1/jobs/{job}/clients/{client}: the controller revokes it everywhere. */
	void (*revoke)(void *ctx, struct rt_conn *c, struct rt_job *j, const char *client);
	/* POST /v1/jobs/{job}/pause|resume: the controller keeps it and tells every node. */
	void (*pause)(void *ctx, struct rt_conn *c, struct rt_job *j, bool pause);
	/* DELETE /v1/jobs/{job}: the controller deletes it and tells every node. */
	void (*job_delete)(void *ctx, struct rt_conn *c, struct rt_job *j, bool purge);
	/* PUT /v1/jobs/{job}/model, checked: @data (n_elem floats, borrowed) to the controller. */
	void (*model_put)(void *ctx, struct rt_conn *c, struct rt_job *j, const float *data);
	/* Lines for /metrics (appended to @buf at *len, @cap bytes). */
	void (*metrics)(void *ctx, char *buf, size_t *len, size_t cap);
	/*
	 * A secure round's stage @stage of @j (whose rounds another node runs: j->sa_at) for
	 * client @client, checked here (its token): a GET or a POST of @body (@len bytes,
	 * borrowed), to that node; its answer (rt_api_secagg_call's there) comes back to @c.
	 */
	void (*secagg)(void *ctx, struct rt_conn *c, struct rt_job *j, const char *client,
		       const char *stage, bool get, const void *body, size_t len);
};

/*
 * GET /readyz: what this process has, as the wiring sees it. Ready is all
 * three; the body names the ones missing.
 */
struct rt_api_readiness {
	bool joined;       /* `node`: the controller accepted it (`up`: true, nothing to join) */
	bool arena;        /* the arena is mapped and the records it kept are back in rounds */
	bool serving;      /* data plane set up, the gateway taking clients (not draining) */
	const char *dataplane; /* its name ("shm+bpf", ...), static */
};

/* Filled by the wiring (layers only point down): @get fills *out; @ctx goes to it. */
struct rt_api_ready_hook {
	void *ctx;
	void (*get)(void *ctx, struct rt_api_readiness *out);
};

/*
 * An API over @n (borrowed, outlives the API). @cluster is NULL for `up`,
 * else copied. *out is owned by the caller (rt_api_close). 0 or -ENOMEM.
 */
/*
 * One secure-aggregation stage's answer (issue 19), made without a connection so that the node
 * that coordinates a job's secure rounds can answer a request another gateway received.
 */
struct rt_api_sa_res {
	int status;	   /* HTTP */
	json_t *body;	   /* 2xx: the answer (owned by whoever takes it); NULL otherwise */
	char *text;	   /* 2xx instead of body: its JSON text (trib_malloc'd), local GETs only */
	size_t text_len;
	char msg[320];	   /* not 2xx: why */
	long long round;   /* not 2xx: the round the error names, or -1 */
	const char *extra; /* preformatted header lines (static) or NULL */
};
/*
 * Stage @stage ("keys", "shares", "input" or "unmask") of @j's secure round for client @client
 * (already authenticated by its token): a GET (@get) or a POST of @body (@len bytes, borrowed;
 * the input's is copied into an arena slot). The answer in @res.
 */
void rt_api_secagg_call(struct rt_node *n, struct rt_job *j, const char *client,
			const char *stage, bool get, const void *body, size_t len,
			struct rt_api_sa_res *res);

int rt_api_open(struct rt_api **out, struct rt_node *n, const struct rt_api_hooks *cluster);
/* Accepts NULL. Connections must be closed first (rt_loop_close). */
void rt_api_close(struct rt_api *api);
/* Set GET /readyz's hook (copied). Until it is set, /readyz answers 503 (nothing known). */
void rt_api_set_ready_hook(struct rt_api *api, const struct rt_api_ready_hook *h);
/*
 * The wiring submits each loop turn's answers and then calls rt_node_handoff_flush(): an
 * accepted update's descriptor may then wait for its 202 (rt_node_handoff_hold says why).
 * Off (the default, e.g. detached tests): it is sent when the update is accepted.
 */
void rt_api_handoff_after_answer(struct rt_api *api, bool on);
/* The hooks the loop calls for each connection (ctx: @api). */
void rt_api_conn_hooks(struct rt_api *api, struct rt_conn_hooks *out);
/* The node's model_ready hook: answer the long polls parked on @j. */
void rt_api_model_ready(struct rt_api *api, struct rt_job *j);
/* Every loop tick: answer long polls whose deadline passed (304). */
void rt_api_tick(struct rt_api *api);
/*
 * --durability disk: the log made more updates durable, or failed (after
 * rt_node_wal_poll()): answer the updates waiting for it, 202 or 503.
 */
void rt_api_wal_ready(struct rt_api *api);
/* Updates waiting for the log (a drain waits for their answers). */
bool rt_api_wal_waiting(const struct rt_api *api);

/* What the controller said to a task_get (issue 15). */
enum rt_api_task_action {
	RT_API_TASK_TRAIN, /* client holds a task of @round (granted now or before) */
	RT_API_TASK_WAIT,  /* none for it now: told to wait */
	RT_API_TASK_DONE,  /* the job is done after @round rounds */
};

/*
 * Answer @c's GET .../task of @j (client @client) as the controller decided, in the single
 * node's words: train (with the round's config; wait if the model it starts from is not on
 * this node yet: the task is kept), wait (Retry-After) or done.
 */
void rt_api_task_answer(struct rt_conn *c, struct rt_job *j, const char *client,
			enum rt_api_task_action act, uint32_t round);

/*
 * A job definition (POST /v1/jobs body), parsed and checked: a pure
 * function of the bytes, the arena's size and whether this is a cluster.
 */
struct rt_job_def {
	struct rt_job_spec spec;    /* name points into doc; algo at algo; params borrowed */
	struct rt_algo algo;
	struct trib_tensor *schema; /* owned (until rt_job_create takes it) */
	size_t nschema;
	uint64_t n_elem;
	json_t *doc;                /* owned: the parsed body */
	json_t *params;             /* owned: the algorithm's parameters, as given */
};

/*
 * Parse @buf (@len bytes, borrowed) into *def. @arena_size bounds the model;
 * @clustered refuses what a cluster cannot run yet. Returns the HTTP status:
 * 200 with *def filled (release with rt_job_def_free), or 400/500 with *def
 * empty and @msg (@cap bytes) saying why.
 */
int rt_job_def_parse(const uint8_t *buf, size_t len, size_t arena_size, bool clustered,
		     struct rt_job_def *def, char *msg, size_t cap);
/* Accepts a zeroed or parsed definition. */
void rt_job_def_free(struct rt_job_def *def);

/*
 * Check a job definition and, unless @dry, create the job (with @token, the
 * cluster's, or a new one). Returns the HTTP status: 201 created (*out), 200
 * checked (@dry), else an error with @msg. *n_elem_out (if given) gets the
 * model's size once the definition checks.
 */
int rt_api_job_build(struct rt_node *n, bool clustered, const uint8_t *buf, size_t blen,
		     const char *token, bool dry, struct rt_job **out, char *msg, size_t cap,
		     uint64_t *n_elem_out);

#endif
