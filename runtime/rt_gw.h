/* SPDX-License-Identifier: MIT */
/* The gateway's connection object and the verbs API handlers use to answer (runtime-private). */
#ifndef RT_GW_H
#define RT_GW_H

#include <stdbool.h>
#include <stdint.h>

#include "rt_http.h"
#include "rt_node.h"

#define RT_HEAD_BUF 16384

struct rt_gw;

/*
 * One client connection. Owned by the gateway; at most one io_uring
 * operation is in flight for it at any time, so it is freed only when none is.
 */
struct rt_conn {
	struct rt_gw *gw;
	struct rt_node *node;
	int fd;
	int state;
	bool op_pending;
	bool dead;                /* shut down; free once the pending op completes */
	struct rt_conn *prev, *next; /* all connections */

	/* request head */
	char head[RT_HEAD_BUF];
	size_t head_used;         /* bytes in head[] */
	size_t head_len;          /* bytes of head[] that are the parsed head */
	struct rt_http_req req;
	uint64_t req_start_ns;

	/* body: received into body_dst (an arena slot or a heap buffer) */
	uint8_t *body_dst;
	uint64_t body_len;
	uint64_t body_got;
	bool body_taken;          /* the body was read or discarded */
	uint8_t *body_heap;       /* owned heap body, if any */
	void (*on_body)(struct rt_conn *c);

	/* handler context */
	struct rt_job *job;
	uint32_t round;
	double weight;
	bool safetensors;
	uint64_t slot_off;        /* arena slot holding the body, UINT64_MAX if none */
	uint64_t slot_len;

	/* response */
	char rhead[1024];
	size_t rhead_len;
	char *rbody_own;          /* owned body bytes */
	struct rt_blob *rblob;    /* held body blob */
	const char *rbody;
	size_t rbody_len;
	size_t sent;
	bool close_after;

	/* long poll */
	struct rt_conn *wnext;
	uint64_t deadline_ns;
	uint32_t wait_after;
	bool parked;
};

/* Answer with @body (copied) of @ctype; @extra is preformatted header lines or NULL. */
void rt_conn_respond(struct rt_conn *c, int status, const char *ctype, const void *body,
		     size_t len, const char *extra);
/* Answer with a held blob (the reference moves to the connection). */
void rt_conn_respond_blob(struct rt_conn *c, int status, const char *ctype, struct rt_blob *b,
			  const char *extra);
/* Answer {"error": msg} (plus "round" when @round >= 0). */
void rt_conn_error(struct rt_conn *c, int status, const char *msg, long long round,
		   const char *extra);
/* Receive the request's body into @dst (@len bytes, caller-owned), then call @cb. */
void rt_conn_read_body(struct rt_conn *c, uint8_t *dst, uint64_t len,
		       void (*cb)(struct rt_conn *c));
/* Park a long poll on @job until a model newer than @after exists or @deadline_ns. */
void rt_conn_park(struct rt_conn *c, struct rt_job *job, uint32_t after, uint64_t deadline_ns);

/*
 * rt_api.c: check a job definition (POST /v1/jobs body) and, unless @dry,
 * create the job (with @token, the cluster's, or a new one). Returns the HTTP
 * status: 201 created (*out), 200 checked (@dry), else an error with @msg.
 * *n_elem_out (if given) gets the model's size once the definition checks.
 */
int rt_api_job_build(struct rt_node *n, const uint8_t *buf, size_t blen, const char *token,
		     bool dry, struct rt_job **out, char *msg, size_t cap, uint64_t *n_elem_out);
/* rt_api.c: a complete head was parsed into c->req. */
void rt_api_on_head(struct rt_conn *c);
/* rt_api.c: a parked long poll is woken (model ready) or timed out. */
void rt_api_on_wake(struct rt_conn *c, bool timed_out);

/* Run the event loop until SIGINT/SIGTERM. Returns 0 or -errno (setup failed). */
int rt_gw_run(struct rt_node *n);

#endif
