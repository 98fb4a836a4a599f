// SPDX-License-Identifier: MIT
/* The node's setup: data plane (shm+bpf, shm+unix, tcp), arena, state store, function set. */
#include "rt_node_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl_store.h"
#include "ebpf_route.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_store.h"

/* --- data planes --- */

const char *rt_dataplane_name(uint32_t dp)
{
	switch (dp) {
	case FN_DP_SHM_BPF:
		return "shm+bpf";
	case FN_DP_SHM_UNIX:
		return "shm+unix";
	case FN_DP_TCP:
		return "tcp";
	default:
		return "?";
	}
}

uint32_t rt_dataplane_from_name(const char *name)
{
	if (!strcmp(name, "shm+bpf"))
		return FN_DP_SHM_BPF;
	if (!strcmp(name, "shm+unix"))
		return FN_DP_SHM_UNIX;
	if (!strcmp(name, "tcp"))
		return FN_DP_TCP;
	return 0;
}

static void dataplane_teardown(struct rt_node *n);

/*
 * shm+bpf where the programs load; otherwise shm+unix, said once and loudly.
 * The first lines of the log name the data plane in use.
 */
static int dataplane_setup(struct rt_node *n)
{
	uint32_t want = n->opts.dataplane ? n->opts.dataplane : FN_DP_SHM_BPF;
	char why[512] = "";
	int err;

	n->gw_pair[0] = n->gw_pair[1] = -1;
	n->dataplane = want;
	if (want != FN_DP_SHM_BPF) {
		trib_info("data plane: %s (requested)", rt_dataplane_name(want));
		return 0;
	}
	/* Pins under the node's name and boot id, not the pid (in a container, always 1). */
	err = ebpf_route_open(n->opts.node_name ? n->opts.node_name : "up", &n->route, why,
			      sizeof(why));
	if (!err) {
		err = ebpf_tcp_pair(n->gw_pair);
		if (!err)
			err = ebpf_route_add(n->route, EBPF_KEY_GATEWAY, n->gw_pair[0]);
		if (err)
			snprintf(why, sizeof(why), "the gateway's socket: %s", strerror(-err));
	}
	if (err) {
		dataplane_teardown(n);
		n->dataplane = FN_DP_SHM_UNIX;
		trib_warn(
		    "data plane: shm+bpf is not available here (%s); FALLING BACK to shm+unix "
		    "(descriptors over Unix sockets, routed by the runtime)",
		    why[0] ? why : strerror(-err));
		return 0;
	}
	fcntl(n->gw_pair[0], F_SETFL, O_NONBLOCK);
	fcntl(n->gw_pair[1], F_SETFL, O_NONBLOCK);
	trib_info("data plane: shm+bpf (sk_msg routes descriptors between sockets; pinned under "
		  "%s)", ebpf_route_pin_dir(n->route));
	return 0;
}

static void dataplane_teardown(struct rt_node *n)
{
	if (n->gw_pair[0] >= 0) {
		close(n->gw_pair[0]);
		close(n->gw_pair[1]);
	}
	n->gw_pair[0] = n->gw_pair[1] = -1;
	ebpf_route_close(n->route);
	n->route = NULL;
}

int rt_node_open(struct rt_node **out, const struct rt_node_opts *opts, const char *db_path)
{
	struct rt_node *n;
	int err;

	n = trib_calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->opts = *opts;
	n->next_job_id = 1;
	n->gw_pair[0] = n->gw_pair[1] = -1;
	err = trib_mkdir_p(n->opts.data_dir, 0700);
	if (err) {
		trib_error("data dir %s: %s", n->opts.data_dir, strerror(-err));
		goto err_free;
	}
	/* Before anything is written: what killed writes left behind goes (logged per job). */
	trib_store_sweep(n->opts.data_dir, NULL);
	/* Before SQLite: a second server on this data dir is refused before it touches it. */
	err = rt__arena_open(n);
	if (err)
		goto err_free;
	err = rt__wal_open(n);
	if (err)
		goto err_close_arena;
	err = ctl_store_open(db_path, &n->store);
	if (err) {
		trib_error("state %s: %s", db_path, strerror(-err));
		goto err_close_wal;
	}
	err = dataplane_setup(n);
	if (err)
		goto err_close_store;
	err = rt_fnset_init(&n->fns, n->opts.fn_path, shm_arena_fd(n->arena), n->dataplane,
			    n->route, n->gw_pair[0]);
	if (err)
		goto err_dataplane;
	rt_fnset_set_sa_path(n->fns, n->opts.fn_sa_path);
	*out = n;
	return 0;

err_dataplane:
	dataplane_teardown(n);
err_close_store:
	ctl_store_close(n->store);
err_close_wal:
	rt__wal_close(n);
err_close_arena:
	rt__arena_close(n);
err_free:
	trib_free(n->recovered);
	trib_free(n);
	return err;
}

void rt_node_close(struct rt_node *n)
{
	if (!n)
		return;
	n->stopping = true;
	rt_fnset_destroy(n->fns);
	while (n->jobs) {
		struct rt_job *j = n->jobs;

		n->jobs = j->next;
		rt__job_free(j);
	}
	while (n->gone) {
		struct rt_job *j = n->gone;

		n->gone = j->next;
		rt__job_free(j);
	}
	dataplane_teardown(n);
	/* What is queued is written first: its updates are in the arena too. */
	rt__wal_close(n);
	rt__arena_close(n);
	ctl_store_close(n->store);
	trib_free(n->recovered);
	trib_free(n);
}

int rt_node_jobs_load(struct rt_node *n)
{
	return rt__jobs_load(n);
}

int rt_node_recover(struct rt_node *n)
{
	/* Secure rounds first: the tree sums of their refed inputs are theirs when they come. */
	int err = rt__secagg_load(n);

	err = err ? err : rt__journal_refeed(n);
	/* Then what only the log has (the arena file is gone: a reboot). */
	err = err ? err : rt__wal_replay(n);
	if (!err) {
		rt__round_metrics_recover(n); /* the records' metrics of the rounds put back */
		rt__secagg_reconcile(n);
	}
	return err;
}

bool rt_node_rounds_in_flight(const struct rt_node *n)
{
	for (const struct rt_job *j = n->jobs; j; j = j->next)
		for (const struct rt_round *r = j->inflight; r; r = r->next)
			if (r->closed)
				return true;
	return false;
}
