// SPDX-License-Identifier: MIT
/* simulate's gateways: one per node of a cluster, failover between them, the rounds endpoint. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tl_client.h"
#include "tl_sim_int.h"
#include "trib_log.h"
#include "trib_time.h"

/* Connection-level failures: the request may go to another gateway instead. */
bool tl_sim_conn_failed(int err)
{
	switch (-err) {
	case ECONNREFUSED:
	case ECONNRESET:
	case ECONNABORTED:
	case EPIPE:
	case ENOTCONN:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EHOSTDOWN:
	case ENETDOWN:
	case ETIMEDOUT:
		return true;
	default:
		return false;
	}
}

int tl_sim_open(const struct tl_sim_run *run, uint32_t g, struct tl_client **out)
{
	struct tl_tls_opts tls = run->o->tls;
	struct tl_client_opts co = { .tls = &tls,
				     .timeout_ms = (int)run->o->timeout_s * 1000,
				     .connect_timeout_ms = (int)run->o->connect_timeout_s * 1000 };

	tls.shared = run->tls;

	return tl_client_open_ex(run->gw[g].url, &co, out);
}

/* Id of node @name, interned on first sight; SIM_NODE_NONE if the table is full. */
static uint16_t node_intern(struct tl_sim_run *run, const char *name)
{
	uint16_t id = SIM_NODE_NONE;

	pthread_mutex_lock(&run->nodes_lock);
	for (uint32_t i = 0; i < run->nnodes; i++) {
		if (!strcmp(run->node[i], name)) {
			id = (uint16_t)i;
			goto out;
		}
	}
	if (run->nnodes < SIM_MAX_NODES && strlen(name) < SIM_NODE_NAME) {
		snprintf(run->node[run->nnodes], SIM_NODE_NAME, "%s", name);
		id = (uint16_t)run->nnodes++;
	} else if (!run->nodes_full) {
		run->nodes_full = true;
		trib_warn("node name '%.80s' is too long or one too many (%d): its updates count as "
			  "single-node ones", name, SIM_MAX_NODES);
	}
out:
	pthread_mutex_unlock(&run->nodes_lock);
	return id;
}

/* The node a 202's JSON body names ("node"), or SIM_NODE_NONE when it names none. */
uint16_t tl_sim_ack_node(struct tl_sim_run *run, const struct tl_http_resp *resp)
{
	uint16_t id = SIM_NODE_NONE;
	json_t *root, *n;

	/* Most answers are single-node ones: no parse for them. */
	if (!resp->body_len || !memmem(resp->body, resp->body_len, "\"node\"", 6))
		return SIM_NODE_NONE;
	root = json_loadb(resp->body, resp->body_len, 0, NULL);
	n = root ? json_object_get(root, "node") : NULL;
	if (json_is_string(n))
		id = node_intern(run, json_string_value(n));
	json_decref(root);
	return id;
}

/* Gateway @g acknowledged an update for node @node. */
void tl_sim_gw_saw_node(struct tl_sim_run *run, uint32_t g, uint16_t node)
{
	if (node == SIM_NODE_NONE)
		return;
	atomic_store(&run->gw[g].node, node);
	atomic_store(&run->multi, true);
}

/*
 * Fill @order with the gateways to try, from @first on in ring order; those
 * that failed lately come last, those flagged in @avoid (NULL: none) never.
 * Returns how many.
 */
static uint32_t gw_order(struct tl_sim_run *run, uint32_t first, const bool *avoid, uint32_t *order)
{
	uint64_t now = trib_now_ns();
	uint32_t n = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t k = 0; k < run->ngw; k++) {
			uint32_t g = (first + k) % run->ngw;
			bool down = atomic_load(&run->gw[g].down_until) > now;

			if ((avoid && avoid[g]) || down != (pass == 1))
				continue;
			order[n++] = g;
		}
	}
	return n;
}

/* See tl_sim_int.h. */
int tl_sim_gw_call(struct tl_sim_run *run, struct tl_client **conns, uint32_t first,
		   const bool *avoid, const char *what, tl_sim_gw_op_fn op, void *ctx,
		   uint32_t *gw_out)
{
	uint32_t order[TL_SIM_MAX_URLS], n, g;
	const char *msg;
	int err = -EHOSTUNREACH;

	n = gw_order(run, first, avoid, order);
	for (uint32_t k = 0; k < n; k++) {
		g = order[k];
		err = 0;
		if (!conns[g]) {
			err = tl_sim_open(run, g, &conns[g]);
			/* A refused certificate is no outage: never fail over from it. */
			if (err == -ENOMEM || err == -EINVAL || err == -EKEYREJECTED ||
			    (err && run->ngw == 1))
				return err;
		}
		if (!err) {
			err = op(conns[g], ctx);
			if (!tl_sim_conn_failed(err) || run->ngw == 1) {
				if (gw_out)
					*gw_out = g;
				if (!err && atomic_exchange(&run->gw[g].down_until, 0))
					trib_info("gateway %s answers again", run->gw[g].url);
				return err;
			}
		}
		atomic_store(&run->gw[g].down_until, trib_now_ns() + SIM_DOWN_NS);
		msg = err == -ENOENT ? "host does not resolve" : tl_client_strerror(err);
		if (k + 1 < n)
			trib_warn("%s: %s: %s; trying %s instead", what, run->gw[g].url, msg,
				  run->gw[order[k + 1]].url);
		else
			trib_error("%s: %s: %s; no other gateway left to try", what,
				   run->gw[g].url, msg);
	}
	if (n == 0)
		trib_error("%s: no gateway of --url is left to try", what);
	return err == -ENOENT ? -EHOSTUNREACH : err;
}

/* Whether a POST that failed with @err is sent again on the same gateway (tl_sim_post_ctx). */
static bool resend_here(int err, bool sole)
{
	switch (-err) {
	case ECONNRESET:
	case ECONNABORTED:
	case EPIPE:
	case ENOTCONN:
		return true;
	case ETIMEDOUT:
		/* A gateway that does not answer in time: another one may (same key). */
	case ECONNREFUSED:
		return sole;
	default:
		return false;
	}
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/*
 * POST the update; on a broken connection send it again here, with the same
 * Idempotency-Key, so that a server that counted it answers its first answer
 * (the policy is tl_sim_post_ctx's).
 */
int tl_sim_post_op(struct tl_client *c, void *arg)
{
	struct tl_sim_post_ctx *p = arg;
	uint64_t wait = SIM_RESEND_FIRST_NS, end = 0;
	unsigned r, broken = 0;
	int err;

	for (;;) {
		r = 0;
		err = tl_sim_post_update(c, p->u, p->resp, &r);
		p->retries += r;
		if (!resend_here(err, p->sole))
			return err;
		if (err == -ECONNREFUSED) {
			/* Nobody listens: the sole server restarts, wait for it a while. */
			if (!end)
				end = trib_now_ns() + SIM_RESEND_SOLE_NS;
			if (trib_now_ns() + wait > end)
				return err;
		} else if (broken++ >= SIM_RESEND_MAX) {
			return err;
		}
		trib_warn("%s: %s; sending it again with Idempotency-Key %s",
			  p->what ? p->what : "an update", strerror(-err),
			  p->u->key[0] ? p->u->key : "(none)");
		sleep_ns(wait);
		wait = wait * 2 > SIM_RESEND_MAX_WAIT_NS ? SIM_RESEND_MAX_WAIT_NS : wait * 2;
	}
}

int tl_sim_job_op(struct tl_client *c, void *arg)
{
	struct tl_sim_job_ctx *j = arg;

	return tl_sim_job_ensure(c, j->admin, j->o->job, j->o->clients, j->o->params, j->job);
}

int tl_sim_model_op(struct tl_client *c, void *arg)
{
	struct tl_sim_model_ctx *m = arg;

	return tl_sim_fetch_model(c, m->job, m->token, m->version, m->resp);
}

/* get_op's context: one request, its answer. */
struct get_ctx {
	struct tl_http_req req;
	struct tl_http_resp *resp;
};

static int get_op(struct tl_client *c, void *arg)
{
	struct get_ctx *g = arg;

	return tl_client_do(c, &g->req, g->resp);
}

/* ---- rounds of a multi-node cluster ---- */

void tl_sim_round_info_free(struct tl_sim_round_info *info)
{
	json_decref(info->top);
	json_decref(info->edges);
	info->top = info->edges = NULL;
}

/*
 * GET /v1/jobs/J/rounds/R on the first gateway of @conns that answers, into
 * *info (release with tl_sim_round_info_free). Returns 0, -ENOENT (404: a server
 * without the endpoint), -EPROTO (another status or an answer that does not
 * parse; logged if @log), or a client error.
 */
int tl_sim_rounds_get(struct tl_sim_run *run, struct tl_client **conns, const char *token,
		      uint64_t round, bool log, struct tl_sim_round_info *info)
{
	struct tl_http_resp resp;
	struct get_ctx g = { .req = { .method = "GET", .bearer = token && *token ? token : NULL },
			     .resp = &resp };
	char target[512], what[520];
	json_t *root, *st, *lost, *x;
	size_t i;
	int err;

	memset(info, 0, sizeof(*info));
	snprintf(target, sizeof(target), "/v1/jobs/%s/rounds/%" PRIu64, run->o->job, round);
	snprintf(what, sizeof(what), "GET %s", target);
	g.req.target = target;
	err = tl_sim_gw_call(run, conns, 0, NULL, what, get_op, &g, NULL);
	if (err)
		return err;
	if (resp.status == 404)
		return -ENOENT;
	if (resp.status != 200) {
		if (log)
			tl_sim_log_http_error(target, &resp);
		return -EPROTO;
	}
	root = json_loadb(resp.body, resp.body_len, 0, NULL);
	st = root ? json_object_get(root, "state") : NULL;
	lost = root ? json_object_get(root, "lost_nodes") : NULL;
	if (!json_is_string(st) || (lost && !json_is_array(lost))) {
		if (log)
			trib_error("GET %s: unexpected answer: %.200s", target, resp.body);
		json_decref(root);
		return -EPROTO;
	}
	snprintf(info->state, sizeof(info->state), "%s", json_string_value(st));
	json_array_foreach(lost, i, x) {
		uint16_t id;

		if (!json_is_string(x))
			continue;
		id = node_intern(run, json_string_value(x));
		if (id != SIM_NODE_NONE && !info->lost[id]) {
			info->lost[id] = true;
			info->nlost++;
		}
	}
	info->top = json_incref(json_object_get(root, "top"));
	info->edges = json_incref(json_object_get(root, "edges"));
	json_decref(root);
	return 0;
}

/* GET /rounds/r answered 404: a server without it (single node). Never asked again. */
void tl_sim_rounds_unsupported(struct tl_sim_run *run, uint64_t round)
{
	if (!atomic_exchange(&run->no_rounds, true))
		trib_info("GET /v1/jobs/%s/rounds/%" PRIu64 ": 404, the server has no rounds "
			  "endpoint: lost updates cannot be seen", run->o->job, round);
}
