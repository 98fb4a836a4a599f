// SPDX-License-Identifier: MIT
/*
 * The wiring of `tributary up` and `tributary node`: builds the node, the
 * loop, the API and (in a cluster) the agent, fills each one's hooks with
 * the others' verbs, and owns the signals: drain on SIGINT/SIGTERM, reap on
 * SIGCHLD.
 */
#include "rt_up.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rt_agent.h"
#include "rt_api.h"
#include "rt_loop.h"
#include "trib_log.h"
#include "trib_signal.h"
#include "trib_time.h"
#include "trib_token.h"

#define DRAIN_MAX_NS (30ull * 1000000000ull)

/* Read from a signalfd in the loop: drain on the first two, reap on the third. */
static const int sigs[] = { SIGINT, SIGTERM, SIGCHLD };

struct rt_up {
	struct rt_node *node;
	struct rt_api *api;
	struct rt_agent *agent; /* `tributary node` only */
	struct rt_loop *loop;   /* NULL outside rt_loop_open .. rt_loop_close */
	struct rt_tls_ctx *tls; /* HTTPS; NULL: plain HTTP */
	int h_fn[RT_FN_IO__COUNT]; /* the loop's handler for each kind of function I/O */
	int h_wire;                /* the loop's handler for the agent's eventfd */
	uint64_t wire_cnt;         /* what the eventfd read returns */
	int h_wal;                 /* the loop's handler for the update log's eventfd */
	uint64_t wal_cnt;          /* what that read returns */
	uint64_t drain_deadline;
	int sfd;                   /* SIGINT, SIGTERM, SIGCHLD (trib_signal_open) */
};

/* --- the node's hooks --- */

static void io_recv(void *ctx, int fd, void *buf, size_t len, enum rt_fn_io op, uint32_t id)
{
	struct rt_up *up = ctx;

	if (up->loop)
		rt_loop_recv(up->loop, fd, buf, len, up->h_fn[op], id);
}

static void io_poll(void *ctx, int fd, unsigned events, enum rt_fn_io op, uint32_t id)
{
	struct rt_up *up = ctx;

	if (up->loop)
		rt_loop_poll(up->loop, fd, events, up->h_fn[op], id);
}

static void model_ready(void *ctx, struct rt_job *j)
{
	struct rt_up *up = ctx;

	rt_api_model_ready(up->api, j);
}

static void round_advanced(void *ctx, struct rt_job *j)
{
	struct rt_up *up = ctx;

	if (up->agent)
		rt_agent_on_advance(up->agent, j);
}

static void local_sum(void *ctx, struct rt_job *j, struct rt_round *r)
{
	struct rt_up *up = ctx;

	if (up->agent)
		rt_agent_on_local_sum(up->agent, j, r);
}

static void shard_phase(void *ctx, struct rt_job *j, struct rt_round *r, uint32_t phase)
{
	struct rt_up *up = ctx;

	if (up->agent)
		rt_agent_on_shard_phase(up->agent, j, r, phase);
}

static int secagg_commit(void *ctx, struct rt_job *j, const float *model, uint32_t clients,
			 double weight, uint64_t opened_ns)
{
	struct rt_up *up = ctx;

	return up->agent ? rt_agent_secagg_commit(up->agent, j, model, clients, weight, opened_ns)
			 : -ENOTCONN;
}

static bool fold_result(void *ctx, struct rt_fn *fn, const struct shm_desc *d, float *payload)
{
	struct rt_up *up = ctx;

	return up->agent && rt_agent_on_fold_result(up->agent, fn, d, payload);
}

/* --- the loop's hooks and handlers --- */

static void on_fn_recv(void *arg, uint32_t key, int res)
{
	rt_node_fn_io(((struct rt_up *)arg)->node, RT_FN_IO_RECV, key, res);
}

static void on_fn_pollin(void *arg, uint32_t key, int res)
{
	rt_node_fn_io(((struct rt_up *)arg)->node, RT_FN_IO_POLLIN, key, res);
}

static void on_fn_pollout(void *arg, uint32_t key, int res)
{
	rt_node_fn_io(((struct rt_up *)arg)->node, RT_FN_IO_POLLOUT, key, res);
}

static void arm_wire(struct rt_up *up)
{
	rt_loop_read(up->loop, rt_agent_fd(up->agent), &up->wire_cnt, sizeof(up->wire_cnt),
		     up->h_wire, 0);
}

/* The agent's eventfd: a cluster's messages are waiting. */
static void on_wire(void *arg, uint32_t key, int res)
{
	struct rt_up *up = arg;

	(void)key;
	(void)res;
	rt_agent_on_wire(up->agent);
	if (!rt_loop_stopped(up->loop))
		arm_wire(up);
}

static void arm_wal(struct rt_up *up)
{
	rt_loop_read(up->loop, rt_node_wal_fd(up->node), &up->wal_cnt, sizeof(up->wal_cnt),
		     up->h_wal, 0);
}

/* --durability disk: the log made a batch durable (or failed): answer who waits for it. */
static void on_wal(void *arg, uint32_t key, int res)
{
	struct rt_up *up = arg;

	(void)key;
	(void)res;
	rt_node_wal_poll(up->node);
	rt_api_wal_ready(up->api);
	if (up->agent)
		rt_agent_wal_ready(up->agent);
	if (!rt_loop_stopped(up->loop))
		arm_wal(up);
}

static void on_tick(void *ctx)
{
	struct rt_up *up = ctx;

	rt_api_tick(up->api);
	rt_node_tick(up->node);
	if (up->agent)
		rt_agent_tick(up->agent);
}

/*
 * SIGINT/SIGTERM: stop taking clients at once, but let full rounds finish
 * (their functions are folding) so that no update answered 202 in a full
 * round is lost; at most 30 s, and a second signal stops at once. Updates
 * of a round that is still open are lost with it (docs/ARCHITECTURE.md).
 */
static void on_signal(void *ctx, int signo)
{
	struct rt_up *up = ctx;

	if (signo == SIGCHLD) {
		rt_node_on_sigchld(up->node);
	} else if (rt_loop_draining(up->loop)) {
		trib_info("signal %d again: stopping now", signo);
		rt_loop_stop(up->loop);
	} else {
		trib_info("signal %d: stopping", signo);
		up->drain_deadline = trib_now_ns() + DRAIN_MAX_NS;
		rt_loop_drain(up->loop);
		if (rt_node_rounds_in_flight(up->node))
			trib_info("waiting for full rounds to be written before stopping");
	}
}

static void before_wait(void *ctx)
{
	struct rt_up *up = ctx;

	if (rt_node_handoff_pending(up->node)) {
		/* The 202s out first, then the descriptors that wake the leaves. */
		rt_loop_submit(up->loop);
		rt_node_handoff_flush(up->node);
	}
	if (!rt_loop_draining(up->loop))
		return;
	if (!rt_node_rounds_in_flight(up->node) && !rt_api_wal_waiting(up->api) &&
	    !(up->agent && rt_agent_wal_waiting(up->agent))) {
		rt_loop_stop(up->loop);
	} else if (trib_now_ns() > up->drain_deadline) {
		trib_warn("stopping with rounds not stored after 30 s (still aggregating, or "
			  "their model cannot be written); their updates are lost");
		rt_loop_stop(up->loop);
	}
}

/* GET /readyz: joined (`up`: nothing to join), arena back, and the gateway taking clients. */
static void readiness(void *ctx, struct rt_api_readiness *out)
{
	struct rt_up *up = ctx;
	const struct rt_node *n = up->node;

	out->joined = !up->agent || rt_agent_joined(up->agent);
	out->arena = n->arena && !n->nrecovered;
	out->serving = up->loop && !rt_loop_draining(up->loop) && !rt_loop_stopped(up->loop);
	out->dataplane = rt_dataplane_name(n->dataplane);
}

/* --- setup --- */

static int admin_token_load(struct rt_node *n)
{
	char path[PATH_MAX];
	const char *p = n->opts.admin_token_file;
	bool created;
	int err;

	if (!p) {
		snprintf(path, sizeof(path), "%s/admin-token", n->opts.data_dir);
		p = path;
	}
	err = trib_token_load(p, true, n->admin_token, sizeof(n->admin_token), &created);
	if (err)
		return err;
	trib_info(created ? "admin token created: %s (mode 0600)" : "admin token: %s", p);
	return 0;
}

/* @name (a function binary) beside this executable, into @out. 0 or -errno. */
static int find_fn_path(char *out, size_t cap, const char *name)
{
	char self[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (len < 0)
		return -errno;
	self[len] = '\0';
	slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	if ((size_t)snprintf(out, cap, "%s/%s", self, name) >= cap)
		return -ENAMETOOLONG;
	return access(out, X_OK) ? -errno : 0;
}

/* The loop, its handlers, and the agent's wire on it. 0 or -errno. */
static int loop_open(struct rt_up *up)
{
	const struct rt_node_opts *o = &up->node->opts;
	struct rt_loop_opts lo = { o->listen_host, o->listen_port, o->port_file, up->sfd,
				   { o->head_timeout_s, o->body_timeout_s, o->idle_timeout_s,
				     o->max_connections }, up->tls, o->rx_threads };
	struct rt_loop_hooks lh = { up, on_tick, on_signal, before_wait };
	struct rt_conn_hooks ch;
	int err;

	rt_api_conn_hooks(up->api, &ch);
	err = rt_loop_open(&up->loop, &lo, &lh, &ch);
	if (err)
		return err;
	/* A fresh loop has room for these few handlers: -ENOSPC cannot happen here. */
	up->h_fn[RT_FN_IO_RECV] = rt_loop_handler_add(up->loop, on_fn_recv, up);
	up->h_fn[RT_FN_IO_POLLIN] = rt_loop_handler_add(up->loop, on_fn_pollin, up);
	up->h_fn[RT_FN_IO_POLLOUT] = rt_loop_handler_add(up->loop, on_fn_pollout, up);
	up->h_wire = rt_loop_handler_add(up->loop, on_wire, up);
	up->h_wal = rt_loop_handler_add(up->loop, on_wal, up);
	if (up->agent)
		arm_wire(up);
	if (rt_node_wal_fd(up->node) >= 0)
		arm_wal(up);
	return 0;
}

/* Jobs from the store (`up`), or the cluster's link (`node`) and the API over the node. */
static int serve_setup(struct rt_up *up)
{
	struct rt_node *n = up->node;
	struct rt_api_hooks ah;
	int err;

	err = n->opts.controller ? rt_agent_open(&up->agent, n) : rt_node_jobs_load(n);
	if (err) {
		trib_error("%s: %s", n->opts.controller ? "joining the cluster" : "loading jobs",
			   strerror(-err));
		return err;
	}
	if (up->agent)
		rt_agent_api_hooks(up->agent, &ah);
	err = rt_api_open(&up->api, n, up->agent ? &ah : NULL);
	if (err)
		return err;
	rt_api_set_ready_hook(up->api, &(struct rt_api_ready_hook){ up, readiness });
	rt_api_handoff_after_answer(up->api, true); /* flushed in before_wait */
	trib_info("data in %s", n->opts.data_dir);
	return 0;
}

/*
 * The TLS context from --tls-cert/--tls-key, or the data dir's self-signed
 * pair (made at the first start); its fingerprint is logged at every start,
 * as openssl prints it and as clients pin it. 0 or -errno (said).
 */
static int tls_open(struct rt_up *up, const struct rt_node_opts *o, const struct rt_up_tls *tls)
{
	char cert[PATH_MAX], key[PATH_MAX], why[PATH_MAX * 2 + 128], colon[96], hex[65];
	const char *cf = tls->cert_file, *kf = tls->key_file;
	bool created = false;
	int err;

	if (tls->self_signed) {
		err = rt_tls_self_signed(o->data_dir, o->listen_host, cert, key, sizeof(cert),
					 &created, why, sizeof(why));
		if (err) {
			trib_error("%s", why);
			return err;
		}
		cf = cert;
		kf = key;
	}
	err = rt_tls_ctx_open(&up->tls, cf, kf, why, sizeof(why));
	if (err) {
		trib_error("%s", why);
		return err;
	}
	rt_tls_ctx_fingerprint(up->tls, colon, hex);
	trib_info("TLS certificate %s%s, key %s: sha256 Fingerprint=%s (pin: %s)", cf,
		  created ? " (self-signed, made now)" : "", kf, colon, hex);
	return 0;
}

int rt_up_run(const struct rt_node_opts *opts, const struct rt_up_tls *tls)
{
	struct rt_node_opts o = *opts;
	struct rt_up up = { .sfd = -1 };
	char fnpath[PATH_MAX], fnsapath[PATH_MAX];
	uint32_t unsaved = 0;
	int err, fatal;

	trib_log_init(opts->controller ? "node" : "up");
	/* A certificate that cannot serve is a usage error: said before anything starts. */
	if (tls && (tls->self_signed || tls->cert_file) && tls_open(&up, opts, tls))
		return 2;
	o.gateway_tls = up.tls != NULL;
	/* Each client is a file descriptor: take all the kernel allows (failure is logged). */
	rt_loop_raise_nofile();
	/* Before any thread starts (nng's, in a cluster): they inherit the blocked set. */
	err = trib_signal_open(sigs, sizeof(sigs) / sizeof(sigs[0]), &up.sfd);
	if (err) {
		trib_error("signals: %s", strerror(-err));
		rt_tls_ctx_close(up.tls);
		return 1;
	}
	if (!o.fn_path) {
		err = find_fn_path(fnpath, sizeof(fnpath), "tributary-fn");
		if (err) {
			trib_error("tributary-fn not found beside this executable (%s): %s", fnpath,
				   strerror(-err));
			close(up.sfd);
			rt_tls_ctx_close(up.tls);
			return 1;
		}
		o.fn_path = fnpath;
	}
	/*
	 * The secure unmasking's binary ships with the other two; a node without it could accept
	 * a secure job it cannot finish, so it does not start (docs/DEPLOY.md).
	 */
	if (!o.fn_sa_path) {
		err = find_fn_path(fnsapath, sizeof(fnsapath), "tributary-fn-sa");
		if (err) {
			trib_error("tributary-fn-sa (secure aggregation's unmasking) not found beside "
				   "this executable (%s): %s", fnsapath, strerror(-err));
			close(up.sfd);
			rt_tls_ctx_close(up.tls);
			return 1;
		}
		o.fn_sa_path = fnsapath;
	}
	/* In a cluster the controller keeps jobs and tokens; this node only caches them. */
	if (o.controller) {
		err = rt_node_open(&up.node, &o, ":memory:");
	} else {
		char dbpath[PATH_MAX];

		snprintf(dbpath, sizeof(dbpath), "%s/tributary.db", o.data_dir);
		err = rt_node_open(&up.node, &o, dbpath);
	}
	if (err) {
		close(up.sfd);
		rt_tls_ctx_close(up.tls);
		return 1;
	}
	up.node->hooks = (struct rt_node_hooks){ &up, io_recv, io_poll, model_ready,
						 round_advanced, local_sum, fold_result,
						 shard_phase,
						 /* a cluster's versions are the controller's */
						 o.controller ? secagg_commit : NULL };
	err = o.controller ? 0 : admin_token_load(up.node);
	if (!err)
		err = serve_setup(&up);
	if (!err) {
		err = loop_open(&up);
		if (err)
			trib_error("gateway: %s", strerror(-err));
	}
	/*
	 * Functions it starts must be watched: after the loop is open, before it
	 * serves. Accept is armed only in rt_loop_run(), so a resend that arrives
	 * meanwhile waits in the backlog and finds its recovered record.
	 */
	if (!err && !o.controller)
		err = rt_node_recover(up.node);
	if (!err)
		rt_loop_run(up.loop);
	/* A stop never leaves an acknowledged update unsaved without saying so, loudly. */
	unsaved = rt_node_report_unsaved(up.node);
	up.node->stopping = true;
	fatal = up.node->exit_status;
	rt_loop_close(up.loop);
	up.loop = NULL;
	rt_agent_close(up.agent);
	up.agent = NULL;
	rt_api_close(up.api);
	rt_node_close(up.node);
	/* After the loop: no session of it is left. */
	rt_tls_ctx_close(up.tls);
	close(up.sfd);
	if (!err && unsaved)
		trib_error("stopped with %u round%s answered 202 but not stored (see above)",
			   unsaved, unsaved == 1 ? "" : "s");
	else if (!err)
		trib_info("stopped");
	/* A node the cluster refused (revoked, enrolment refused) says so in its status. */
	return fatal ? fatal : err || unsaved ? 1 : 0;
}
