// SPDX-License-Identifier: MIT
/*
 * The node agent: one node of a cluster. Everything here runs on the
 * gateway's thread; the wire (ctl_wire.c) hands it events through an
 * eventfd the gateway polls.
 *
 * An update's path across the cluster: the gateway receives it into an
 * arena slot and checks it; the controller counts it (that is what makes a
 * round close once, cluster-wide) and says which node folds it — this one
 * (locality), or another (round-robin baseline, or this arena is full), in
 * which case its bytes go there over nng first. Only then the client gets
 * 202. When the controller closes the round, each node's tree hands up one
 * sum (a top with FN_CFG_SUM); the sums of the other nodes cross to the
 * node that runs the round's top, land in its arena, and a fold function
 * folds them in node order and divides once. The model goes to the
 * controller, which writes it and sends it to every node.
 */
#include "agent_priv.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_time.h"
#include "trib_x509.h"

/* --- plumbing --- */

int rt__agent_request(struct rt_agent *a, const char *url, json_t *h, const void *p, size_t len,
		   int kind, struct pend **out)
{
	struct pend *pd = trib_calloc(1, sizeof(*pd));
	int err;

	if (!pd) {
		json_decref(h);
		return -ENOMEM;
	}
	pd->cookie = ++a->cookie;
	pd->kind = kind;
	pd->top = -1;
	/* Still enrolling: no link yet (the gateway is not ready, so little asks). */
	err = a->w ? 0 : -ENOTCONN;
	if (!err)
		err = ctl_wire_request(a->w, url, h, p, len, pd->cookie,
				       kind == PK_HB ? AGENT_HB_TIMEOUT_MS : AGENT_TIMEOUT_MS);
	json_decref(h);
	if (err) {
		trib_free(pd);
		return err;
	}
	pd->next = a->pend;
	a->pend = pd;
	if (out)
		*out = pd;
	return 0;
}

int rt__agent_to_ctl(struct rt_agent *a, json_t *h, const void *p, size_t len, int kind,
		  struct pend **out)
{
	/* The controller knows which node asks by the session of its join (ctl_pki.c). */
	if (a->session[0] && kind != PK_JOIN)
		json_object_set_new(h, "session", json_string(a->session));
	return rt__agent_request(a, a->n->opts.controller, h, p, len, kind, out);
}

static struct pend *pend_take(struct rt_agent *a, uint64_t cookie)
{
	for (struct pend **pp = &a->pend; *pp; pp = &(*pp)->next) {
		if ((*pp)->cookie == cookie) {
			struct pend *pd = *pp;

			*pp = pd->next;
			return pd;
		}
	}
	return NULL;
}

void rt__agent_respond_json(struct rt_conn *c, int status, json_t *o)
{
	char *s = trib_json_dumps(o, JSON_COMPACT);

	if (s)
		rt_conn_respond(c, status, "application/json", s, strlen(s), NULL);
	else
		rt_conn_error(c, 500, "out of memory", -1, NULL);
	trib_free(s);
	json_decref(o);
}

void rt__agent_reply(struct rt_agent *a, struct ctl_event *ev, json_t *h)
{
	if (ctl_wire_reply(a->w, ev, h, NULL, 0))
		trib_warn("cluster: could not answer a peer");
	json_decref(h);
}

json_t *rt__agent_ok_json(void)
{
	return json_pack("{s:b}", "ok", 1);
}

json_t *rt__agent_err_json(int status, const char *msg)
{
	return json_pack("{s:b, s:i, s:s}", "ok", 0, "status", status, "error", msg);
}

struct xround *rt__agent_xr_get(struct rt_agent *a, const char *job, uint32_t round, bool make)
{
	struct xround *x;

	for (x = a->xr; x; x = x->next)
		if (x->round == round && !strcmp(x->job, job))
			return x;
	if (!make)
		return NULL;
	x = trib_calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	snprintf(x->job, sizeof(x->job), "%s", job);
	x->round = round;
	x->top = -1;
	x->delivered_to = -1;
	x->next = a->xr;
	a->xr = x;
	return x;
}

/*
 * The dead top's accumulator, kept until the round is freed (its function may still have records
 * in flight that name it). Out of memory for the list: the slot stays allocated until the node
 * restarts (freeing it now could let a late record of the dead top write into a reused slot).
 */
void rt__agent_dead_acc_keep(struct xround *x)
{
	uint64_t *g = trib_realloc(x->dead_acc, (x->ndead_acc + 1) * sizeof(*g));

	if (!g) {
		trib_warn("job %s round %u: no memory to remember the dead top's accumulator; its "
			  "arena slot stays allocated until this node restarts", x->job, x->round);
		return;
	}
	x->dead_acc = g;
	x->dead_acc[x->ndead_acc++] = x->fold_acc;
}

void rt__agent_xr_free(struct rt_agent *a, struct xround *x)
{
	struct rt_node *n = a->n;

	for (struct xround **pp = &a->xr; *pp; pp = &(*pp)->next) {
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	}
	for (struct pend *pd = a->pend; pd; pd = pd->next)
		if (pd->x == x)
			pd->x = NULL;
	for (uint32_t i = 0; i < CTL_MAX_NODES; i++)
		if (x->in[i].slot)
			shm_slot_free(n->arena, x->in[i].slot);
	if (x->fold_acc)
		shm_slot_free(n->arena, x->fold_acc);
	for (uint32_t i = 0; i < x->ndead_acc; i++)
		shm_slot_free(n->arena, x->dead_acc[i]);
	trib_free(x->dead_acc);
	if (x->zeros.slot)
		shm_slot_free(n->arena, x->zeros.slot);
	rt_node_server_io_free(n, &x->srv);
	rt__agent_shard_free(a, x);
	trib_free(x->opt_in);
	trib_free(x->result_payload);
	trib_free(x);
}


static bool ready(void *ctx)
{
	return rt_agent_joined(ctx);
}

/* --- proxies for status --- */

static void round_get(void *ctx, struct rt_conn *c, const struct rt_job *j, uint32_t round)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (rt__agent_to_ctl(a,
		   json_pack("{s:s, s:s, s:i}", "op", "round_get", "job", j->name, "round",
			     (json_int_t)round),
		   NULL, 0, PK_ROUND_GET, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable", -1, "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

static void status(void *ctx, struct rt_conn *c)
{
	struct rt_agent *a = ctx;
	struct pend *pd;

	if (rt__agent_to_ctl(a, json_pack("{s:s}", "op", "status"), NULL, 0, PK_STATUS, &pd)) {
		rt_conn_error(c, 503, "the controller is not reachable", -1, "Retry-After: 1\r\n");
		return;
	}
	pd->c = c;
}

static void on_proxy_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	json_t *o;

	if (ev->kind != CTL_EV_REPLY) {
		rt_conn_error(pd->c, 503, "the controller did not answer", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		rt_conn_error(pd->c, (int)json_integer_value(json_object_get(ev->hdr, "status")),
			      jstr(ev->hdr, "error", "?"), -1, NULL);
		return;
	}
	if (pd->kind == PK_ROUND_GET) {
		o = json_incref(json_object_get(ev->hdr, "round"));
	} else {
		o = json_deep_copy(ev->hdr);
		json_object_del(o, "ok");
		json_object_set_new(o, "this_node", json_string(a->name));
	}
	rt__agent_respond_json(pd->c, 200, o);
}

static void metrics(void *ctx, char *buf, size_t *len, size_t cap)
{
	const struct rt_agent *a = ctx;
	int w;

	if (!a || *len >= cap)
		return;
	w = snprintf(buf + *len, cap - *len,
		     "# HELP tributary_cluster_partials_sent_total node sums sent to another "
		     "node's top (cross-node edges)\n"
		     "# TYPE tributary_cluster_partials_sent_total counter\n"
		     "tributary_cluster_partials_sent_total %llu\n"
		     "# HELP tributary_cluster_partials_received_total node sums landed here for "
		     "a round's top\n"
		     "# TYPE tributary_cluster_partials_received_total counter\n"
		     "tributary_cluster_partials_received_total %llu\n"
		     "# HELP tributary_cluster_updates_forwarded_total updates sent to the node "
		     "that folds them\n"
		     "# TYPE tributary_cluster_updates_forwarded_total counter\n"
		     "tributary_cluster_updates_forwarded_total %llu\n"
		     "# HELP tributary_cluster_updates_landed_total updates from other nodes "
		     "folded here\n"
		     "# TYPE tributary_cluster_updates_landed_total counter\n"
		     "tributary_cluster_updates_landed_total %llu\n"
		     "# HELP tributary_cluster_bytes_sent_total payload bytes sent to other nodes\n"
		     "# TYPE tributary_cluster_bytes_sent_total counter\n"
		     "tributary_cluster_bytes_sent_total{kind=\"partial\"} %llu\n"
		     "tributary_cluster_bytes_sent_total{kind=\"update\"} %llu\n"
		     "tributary_cluster_bytes_sent_total{kind=\"shard\"} %llu\n"
		     "# HELP tributary_cluster_updates_provisional_total updates taken while the "
		     "controller was away (counted when this node joined again)\n"
		     "# TYPE tributary_cluster_updates_provisional_total counter\n"
		     "tributary_cluster_updates_provisional_total %llu\n"
		     "# HELP tributary_cluster_joined 1 once the controller accepted this node\n"
		     "# TYPE tributary_cluster_joined gauge\n"
		     "tributary_cluster_joined %d\n",
		     (unsigned long long)a->partials_sent, (unsigned long long)a->partials_received,
		     (unsigned long long)a->fwd_sent, (unsigned long long)a->fwd_received,
		     (unsigned long long)a->partial_bytes, (unsigned long long)a->fwd_bytes,
		     (unsigned long long)a->shard_bytes, (unsigned long long)a->provisional_total, a->joined ? 1 : 0);
	if (w > 0)
		*len += (size_t)w < cap - *len ? (size_t)w : cap - *len - 1;
}

/* --- the event loop's side --- */

static void on_reply(struct rt_agent *a, struct ctl_event *ev)
{
	struct pend *pd = pend_take(a, ev->cookie);

	if (!pd)
		return;
	if (pd->kind != PK_JOIN && pd->kind != PK_HB && ev->kind == CTL_EV_REPLY &&
	    json_is_true(json_object_get(ev->hdr, "rejoin"))) {
		/*
		 * The controller does not know this node's session (it restarted, or drained
		 * us) and nothing was done. Its 410 is for this node, not for the client whose
		 * request it was: relayed, the Python client took it for "the job is done" and
		 * stopped. The client gets 503 (retry); this node joins again now rather than
		 * at its next heartbeat.
		 */
		json_object_set_new(ev->hdr, "status", json_integer(503));
		json_object_set_new(ev->hdr, "error",
				    json_string("this node is joining the controller again (it "
						"restarted, or lost this node); retry shortly"));
		if (a->joined && !a->join_pending) {
			trib_warn("the controller no longer knows this node; joining again");
			a->joined = false;
			rt__agent_join_send(a);
		}
	}
	switch (pd->kind) {
	case PK_JOIN:
		rt__agent_on_join_reply(a, ev);
		break;
	case PK_HB:
		rt__agent_on_hb_reply(a, ev);
		break;
	case PK_CREATE:
		rt__agent_on_create_reply(a, pd, ev);
		break;
	case PK_ACCEPT:
		rt__agent_on_accept_reply(a, pd, ev);
		break;
	case PK_FWD:
		rt__agent_on_fwd_reply(a, pd, ev);
		break;
	case PK_PARTIAL:
		rt__agent_on_partial_reply(a, pd, ev);
		break;
	case PK_SHARD:
		rt__agent_on_shard_reply(a, pd, ev);
		break;
	case PK_SECAGG:
		rt__agent_on_secagg_reply(a, pd, ev);
		break;
	case PK_SECAGG_MODEL:
		rt__agent_on_secagg_model_reply(a, pd, ev);
		break;
	case PK_MODEL_DONE:
		/* A robust round's model of an earlier partition: the new one was reset. */
		if (pd->x && pd->gen == rt__agent_shard_gen(pd->x)) {
			pd->x->model_sending = false;
			if (ev->kind == CTL_EV_REPLY &&
			    json_is_true(json_object_get(ev->hdr, "ok"))) {
				pd->x->model_sent = true;
				trib_retry_ok(&pd->x->model_retry);
				a->models_sent++;
			} else if (ev->kind == CTL_EV_REPLY &&
				   json_is_true(json_object_get(ev->hdr, "store_failing"))) {
				/* The controller cannot store models: the whole model goes again,
				 * but with backoff rather than every tick. */
				trib_retry_fail(&pd->x->model_retry, -EAGAIN, pd->x->round,
						trib_now_ns(), (int64_t)time(NULL));
			}
		}
		break;
	case PK_ROUND_GET:
	case PK_STATUS:
		on_proxy_reply(a, pd, ev);
		break;
	case PK_SYNC:
		rt__agent_on_sync_reply(a, ev);
		break;
	case PK_REVOKE:
		rt__agent_on_revoke_reply(a, pd, ev);
		break;
	case PK_PAUSE:
		rt__agent_on_pause_reply(a, pd, ev);
		break;
	case PK_ROUNDS_LIST:
	case PK_EVAL:
		rt__agent_on_rounds_list_reply(a, pd, ev);
		break;
	case PK_TASK:
		rt__agent_on_task_reply(a, pd, ev);
		break;
	case PK_DELETE:
		rt__agent_on_delete_reply(a, pd, ev);
		break;
	case PK_MODEL_PUT:
		rt__agent_on_model_put_reply(a, pd, ev);
		break;
	default:
		if (ev->kind == CTL_EV_REPLY && !json_is_true(json_object_get(ev->hdr, "ok")))
			trib_warn("controller: %s", jstr(ev->hdr, "error", "?"));
		break;
	}
	trib_free(pd);
}

/* A request from the controller or a peer; true if the event was kept (answered later). */
static bool on_request(struct rt_agent *a, struct ctl_event *ev)
{
	const char *op = json_string_value(json_object_get(ev->hdr, "op"));

	if (!op) {
		rt__agent_reply(a, ev, rt__agent_err_json(400, "no op"));
	} else if (!strcmp(op, "fwd")) {
		return rt__agent_on_fwd(a, ev);
	} else if (!strcmp(op, "secagg")) {
		rt__agent_on_secagg(a, ev); /* a stage another gateway received (rt_agent_secagg.c) */
	} else if (!strcmp(op, "partial")) {
		rt__agent_on_partial(a, ev);
	} else if (!strncmp(op, "shard_", 6)) {
		rt__agent_on_shard(a, ev); /* robust rules across nodes (rt_agent_shard.c) */
	} else if (!strcmp(op, "close")) {
		rt__agent_reply(a, ev, rt__agent_ok_json());
		rt__agent_on_close(a, ev->hdr);
	} else if (!strcmp(op, "model")) {
		rt__agent_on_model(a, ev);
	} else if (!strcmp(op, "job")) {
		rt__agent_reply(a, ev, rt__agent_ok_json());
		rt__agent_job_apply(a, ev->hdr);
	} else if (!strcmp(op, "job_delete")) {
		rt__agent_reply(a, ev, rt__agent_ok_json());
		rt__agent_on_job_delete(a, ev->hdr);
	} else if (!strcmp(op, "crl")) {
		/*
		 * Anyone of the cluster could send this too; only a CRL signed by our
		 * CA is taken (mbedTLS checks it at each handshake; a bad one fails
		 * the listener's restart, which keeps the old one).
		 */
		rt__agent_reply(a, ev, rt__agent_ok_json());
		rt__agent_crl(a, jstr(ev->hdr, "crl", NULL), false);
	} else if (!strcmp(op, "membership_revoked")) {
		/*
		 * Any cluster peer could send this (a listener does not learn who
		 * asks): so it only makes us join again, and the controller's answer
		 * on a link whose name we check decides (revoked: we exit).
		 */
		rt__agent_reply(a, ev, rt__agent_ok_json());
		trib_warn("told that node %s's membership was revoked: asking the controller",
			  jstr(ev->hdr, "node", "?"));
		if (a->joined && !a->join_pending) {
			a->joined = false;
			rt__agent_join_send(a);
		}
	} else if (!strcmp(op, "drained")) {
		rt__agent_reply(a, ev, rt__agent_ok_json());
		trib_warn("the controller drained node %s", jstr(ev->hdr, "node", "?"));
	} else {
		rt__agent_reply(a, ev, rt__agent_err_json(400, "unknown op"));
	}
	return false;
}

static int wire_up(struct rt_agent *a);

void rt_agent_on_wire(struct rt_agent *a)
{
	struct ctl_event *ev;

	if (!a->w) {
		int st = a->enroll_state;

		if (!st)
			return;
		pthread_join(a->enroll_thread, NULL);
		a->enroll_started = false;
		a->enroll_state = 0; /* handled: nothing to join again */
		/* A refusal is final (a token is spent or expired): a restart cannot help. */
		if (st < 0 || wire_up(a)) {
			trib_error("node %s: enrolment failed (see above); stopping (exit status 2)",
				   a->name);
			rt__agent_fatal_stop(a, 2);
		}
		return;
	}

	while ((ev = ctl_wire_next(a->w))) {
		if (ev->kind == CTL_EV_REQUEST) {
			if (on_request(a, ev))
				continue;
		} else {
			on_reply(a, ev);
		}
		ctl_event_free(a->w, ev);
	}
}

int rt_agent_fd(const struct rt_agent *a)
{
	return a->efd;
}

static void *enroll_main(void *arg)
{
	struct rt_agent *a = arg;
	uint64_t one = 1;
	int err = rt__agent_enroll(a);

	a->enroll_state = err ? (err < 0 ? err : -EIO) : 1;
	if (write(a->efd, &one, sizeof(one)) < 0)
		trib_warn("agent: eventfd: %s", strerror(errno));
	return NULL;
}

/* The wire, with this node's certificate, listening for peers; then the first join. */
static int wire_up(struct rt_agent *a)
{
	const struct rt_node_opts *o = &a->n->opts;
	const char *listen = o->peer_listen ? o->peer_listen : "tls+tcp://0.0.0.0:7071";
	char ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
	struct ctl_wire_tls tls;
	int err = rt__agent_pki(a, &tls, ca, crt, key, sizeof(ca));

	if (err)
		return err;
	tls.event_fd = a->efd;
	err = ctl_wire_open_tls(listen, &tls, &a->w);
	if (err) {
		trib_error("listening for peers on %s: %s", listen, strerror(-err));
		return err;
	}
	/* The controller must show the controller's certificate, not just any of the CA's. */
	err = ctl_wire_peer_name(a->w, o->controller, TRIB_X509_CONTROLLER_CN);
	if (err) {
		ctl_wire_close(a->w);
		a->w = NULL;
		return err;
	}
	trib_info("node %s: joining the controller at %s; peers on %s (mutual TLS)", a->name,
		  o->controller, listen);
	rt__agent_join_send(a);
	return 0;
}

void rt_agent_api_hooks(struct rt_agent *a, struct rt_api_hooks *out)
{
	out->ctx = a;
	out->job_create = rt__agent_job_create;
	out->update = rt__agent_update;
	out->ready = ready;
	out->round_get = round_get;
	out->rounds_list = rt__agent_rounds_list;
	out->eval_post = rt__agent_eval_post;
	out->task_get = rt__agent_task_get;
	out->status = status;
	out->metrics = metrics;
	out->revoke = rt__agent_revoke;
	out->pause = rt__agent_pause;
	out->job_delete = rt__agent_job_delete;
	out->model_put = rt__agent_model_put;
	out->secagg = rt__agent_secagg;
}

int rt_agent_open(struct rt_agent **out, struct rt_node *n)
{
	const struct rt_node_opts *o = &n->opts;
	struct rt_agent *a;
	const char *listen = o->peer_listen ? o->peer_listen : "tls+tcp://0.0.0.0:7071";
	char ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
	struct ctl_wire_tls tls;
	const char *adv = o->advertise ? o->advertise : listen;
	int err;

	if (!o->node_name || !o->node_name[0]) {
		trib_error("--node-name is required with --controller");
		return -EINVAL;
	}
	if (strstr(adv, "://0.0.0.0:") || strstr(adv, "://*:")) {
		trib_error("peers cannot dial %s: give --advertise tls+tcp://ADDRESS:PORT (this node's "
			   "address on the cluster network)",
			   adv);
		return -EINVAL;
	}
	a = trib_calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->n = n;
	a->rank = -1;
	snprintf(a->name, sizeof(a->name), "%s", o->node_name);
	snprintf(a->addr, sizeof(a->addr), "%s", adv);
	snprintf(a->http, sizeof(a->http), "%s://%s:%u", o->gateway_tls ? "https" : "http",
		 o->listen_host, o->listen_port);
	a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->efd < 0) {
		err = -errno;
		trib_free(a);
		return err;
	}
	/* The certificate first: no link opens without one. */
	err = rt__agent_pki(a, &tls, ca, crt, key, sizeof(ca));
	if (!err) {
		err = wire_up(a);
	} else if (err == -ENOENT) {
		sigset_t all, old;

		/* Enrol in a thread: the gateway serves /healthz (not ready) meanwhile. */
		trib_info("node %s: enrolling with the controller at %s (join token)", a->name,
			  o->controller);
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		err = -pthread_create(&a->enroll_thread, NULL, enroll_main, a);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		a->enroll_started = !err;
	}
	if (err) {
		close(a->efd);
		trib_free(a);
		return err;
	}
	n->clustered = true;
	*out = a;
	return 0;
}

void rt_agent_close(struct rt_agent *a)
{

	if (!a)
		return;
	if (a->enroll_started) {
		a->enroll_stop = true; /* it notices within a second or an ask's timeout */
		pthread_join(a->enroll_thread, NULL);
	}
	ctl_wire_close(a->w);
	close(a->efd);
	while (a->pend) {
		struct pend *pd = a->pend;

		a->pend = pd->next;
		if (pd->u) {
			pd->u->c = NULL; /* the gateway freed the connections */
			rt__agent_upd_free(a, pd->u);
		}
		trib_free(pd);
	}
	while (a->backlog) {
		struct upd *u = a->backlog;

		a->backlog = u->next;
		u->c = NULL;
		if (u->ev) {
			u->ev->slot = NULL;
			ctl_event_free(NULL, u->ev);
		}
		rt__agent_upd_free(a, u);
	}
	rt__agent_wal_free(a);
	while (a->xr)
		rt__agent_xr_free(a, a->xr);
	a->n->clustered = false;
	trib_free(a);
}

