/* SPDX-License-Identifier: MIT */
/*
 * `tributary controller`: the cluster's jobs, tokens and rounds, the nodes
 * that joined (heartbeats, draining), placement, and the models. Nodes talk
 * to it over ctl_wire; docs/ARCHITECTURE.md ("Many nodes") has the protocol.
 */
#ifndef CTL_CLUSTER_H
#define CTL_CLUSTER_H

#include <stdint.h>

/* Most nodes a cluster holds (node ranks are 0 .. CTL_MAX_NODES - 1). */
#define CTL_MAX_NODES 64u

struct ctl_cluster_opts {
	const char *listen;	      /* nng URL, e.g. tls+tcp://0.0.0.0:7070 */
	const char *data_dir;	      /* SQLite state, models */
	const char *admin_token_file; /* default DATA_DIR/admin-token */
	uint32_t heartbeat_ms;	      /* nodes send one this often (default 200) */
	uint32_t dead_after_ms;	      /* silent this long: drained (default 1500) */
	int round_robin;	      /* placement ignores locality (the benchmark's baseline) */
};

/*
 * `tributary controller join-token`: a one-time token valid @ttl_s seconds
 * (stored hashed in DATA_DIR/controller.db), printed as ID.SECRET.CAHASH;
 * `tributary controller revoke NODE`. Both return a process exit code.
 */
int ctl_join_token_cmd(const char *data_dir, uint32_t ttl_s);
int ctl_revoke_cmd(const char *data_dir, const char *node);

/* Run until SIGINT/SIGTERM; returns a process exit code. */
int ctl_cluster_run(const struct ctl_cluster_opts *o);

#endif
