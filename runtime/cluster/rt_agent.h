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

struct rt_agent;
struct rt_api_hooks;
struct rt_node;
struct rt_job;
struct rt_round;
struct rt_fn;
struct shm_desc;

/*
 * Open the wire and start joining (n->opts.controller set); marks @n
 * clustered. *out is owned by the caller (rt_agent_close). 0 or -errno.
 */
int rt_agent_open(struct rt_agent **out, struct rt_node *n);
/* Accepts NULL. Connections it held must be closed first (rt_loop_close). */
void rt_agent_close(struct rt_agent *a);
/* The eventfd the loop reads; rt_agent_on_wire() when it is readable. */
int rt_agent_fd(const struct rt_agent *a);
void rt_agent_on_wire(struct rt_agent *a);
/* Every loop tick: join again, heartbeats, retries. */
void rt_agent_tick(struct rt_agent *a);
/*
 * --durability disk: the log made a batch durable, or failed (the wiring
 * calls rt_node_wal_poll() first): answer the updates waiting for it.
 */
void rt_agent_wal_ready(struct rt_agent *a);
/* Whether updates wait for the log (a stop waits for them). */
bool rt_agent_wal_waiting(const struct rt_agent *a);
/* Whether the controller accepted this node's join (false for NULL). */
bool rt_agent_joined(const struct rt_agent *a);
/* The API's cluster hooks (ctx: @a): job create, update, ready, round get, status, metrics. */
void rt_agent_api_hooks(struct rt_agent *a, struct rt_api_hooks *out);

/* --- the node's cluster hooks (the wiring forwards them) --- */
/* @j's local open round advanced: apply a close that came early, take waiting updates. */
void rt_agent_on_advance(struct rt_agent *a, struct rt_job *j);
/* Local round @r has its sum (RESULT of a FN_CFG_SUM top). Idempotent. */
void rt_agent_on_local_sum(struct rt_agent *a, struct rt_job *j, struct rt_round *r);
/* Robust rules: local round @r's updates are all here (@phase 0) or its shards did @phase. */
void rt_agent_on_shard_phase(struct rt_agent *a, struct rt_job *j, struct rt_round *r,
			     uint32_t phase);
/*
 * Secure aggregation: @j's unmasked mean of round j->completed to the controller, which commits
 * it as the next version (rt_node_hooks.secagg_commit). 0 (on its way) or -errno.
 */
int rt_agent_secagg_commit(struct rt_agent *a, struct rt_job *j, const float *model,
			   uint32_t clients, double weight, uint64_t opened_ns);
/* A RESULT: if it is a cluster fold's model, take it (and @payload) and return true. */
bool rt_agent_on_fold_result(struct rt_agent *a, struct rt_fn *fn, const struct shm_desc *d,
			     float *payload);

#endif
