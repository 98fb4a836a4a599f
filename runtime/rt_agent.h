/* SPDX-License-Identifier: MIT */
/*
 * The node agent of `tributary node`: this node's link to the controller
 * and to the other nodes (over ctl_wire). It joins and heartbeats, learns
 * jobs and round closes, has each update counted by the controller before
 * the 202, forwards updates the placement folds elsewhere, sends this
 * node's sum of a round to the round's top (one cross-node edge), and, on
 * the top's node, lands the other nodes' sums in the arena and folds them.
 */
#ifndef RT_AGENT_H
#define RT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rt_node;
struct rt_job;
struct rt_round;
struct rt_conn;
struct rt_fn;
struct shm_desc;

/* Open the wire and start joining (n->opts.controller set). 0 or -errno. */
int rt_agent_open(struct rt_node *n);
/* Accepts a node without an agent. */
void rt_agent_close(struct rt_node *n);
/* The eventfd the gateway polls; rt_agent_on_wire() when it is readable. */
int rt_agent_fd(const struct rt_node *n);
void rt_agent_on_wire(struct rt_node *n);
/* Every gateway tick: join again, heartbeats, retries. */
void rt_agent_tick(struct rt_node *n);
/* Joined: jobs and the admin token are known. */
bool rt_agent_ready(const struct rt_node *n);

/* --- from the API handlers: the connection waits for the answer --- */
/* POST /v1/jobs whose body (c->body_heap) passed the checks: the controller names it. */
void rt_agent_job_create(struct rt_conn *c);
/* A received, checked update in c->slot_off (segments at @segs_off): count it, fold it. */
void rt_agent_update(struct rt_conn *c, uint64_t segs_off, uint32_t nsegs);
/* GET /v1/jobs/{job}/rounds/{round}: the controller's record of the round. */
void rt_agent_round_get(struct rt_conn *c, const struct rt_job *j, uint32_t round);
/* GET /v1/cluster: nodes, placement and rounds, from the controller. */
void rt_agent_status(struct rt_conn *c);
/* Lines for /metrics (appended to @buf at *len, @cap bytes). */
void rt_agent_metrics(const struct rt_node *n, char *buf, size_t *len, size_t cap);

/* --- from rt_node.c --- */
/* @j's local open round advanced: apply a close that came early, take waiting updates. */
void rt_agent_on_advance(struct rt_node *n, struct rt_job *j);
/* Local round @r has its sum (RESULT of a FN_CFG_SUM top). Idempotent. */
void rt_agent_on_local_sum(struct rt_node *n, struct rt_job *j, struct rt_round *r);
/* A RESULT: if it is a cluster fold's model, take it (and @payload) and return true. */
bool rt_agent_on_fold_result(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d,
			     float *payload);

#endif
