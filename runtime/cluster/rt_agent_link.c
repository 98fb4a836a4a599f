// SPDX-License-Identifier: MIT
/*
 * The node agent's link to the controller: joining (and joining again after a restart or a
 * drain), heartbeats, what a node does while the controller does not answer, and the agent's
 * tick. Split from rt_agent.c (the plumbing, the proxies and the event loop's side stay there).
 */
#include "agent_priv.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "shm_arena.h"
#include "trib_log.h"
#include "trib_time.h"

/* --- joining, heartbeats --- */

/* MemAvailable from /proc/meminfo, in bytes (0 if it cannot be read). */
static uint64_t mem_available(void)
{
	char line[128];
	unsigned long long kb = 0;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb * 1024;
}

void rt__agent_join_send(struct rt_agent *a)
{
	struct rt_node *n = a->n;
	uint64_t used = 0, total = 0;
	uint32_t live = 0;
	struct pend *pd;
	json_t *h;

	shm_arena_usage(n->arena, &used, &total, &live);
	a->last_join_ns = trib_now_ns();
	/*
	 * What the arena holds: "kept" if it is the memory of the updates this
	 * node acknowledged (re-attached, or this process's since its start);
	 * "new" if it was made empty at this start (what was there is gone).
	 */
	h = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:s, s:o, s:s}", "op",
			     "join", "name", a->name, "addr", a->addr, "http", a->http, "cores",
			     (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "arena_bytes",
			     (json_int_t)total, "arena_free", (json_int_t)(total - used),
			     "mem_free", (json_int_t)mem_available(), "dataplane",
			     rt_dataplane_name(n->dataplane), "holds", rt__agent_holds(a),
			     "arena", rt_node_keeps_acked(n) || a->recovered ? "kept" : "new");
	/* It proves the name is its own: its certificate and its signature (ctl_pki.c). */
	if (!h || rt__agent_join_proof(a, h)) {
		json_decref(h);
		trib_retry_fail(&a->join_retry, -ENOMEM, 0, trib_now_ns(), (int64_t)time(NULL));
		return;
	}
	if (rt__agent_to_ctl(a, h, NULL, 0, PK_JOIN, &pd) == 0)
		a->join_pending = true;
}

/*
 * The cluster refused this node for good: stop as on SIGTERM (rounds it
 * holds are written, its arena is handled as at any stop), then exit @status.
 */
void rt__agent_fatal_stop(struct rt_agent *a, int status)
{
	if (a->n->exit_status)
		return;
	a->n->exit_status = status;
	kill(getpid(), SIGTERM);
}

/*
 * The controller has not answered since @since_ns: past AGENT_RELINK_MS, dial it afresh (and
 * again every AGENT_RELINK_MS while it lasts). nng redials a link that broke on its own, but a
 * connection that hangs while it is made (TCP up, TLS or the SP header not) is only dropped by
 * nng 1.5 after its 10 s negotiation timeout. e2e cluster_restart E failed twice in CI that way
 * (a node frozen while the controller was killed, thawed as it restarted: no answer for 12 s,
 * then declared lost) and never on an idle machine. A new dialer costs one TCP and TLS
 * handshake; requests still in flight on the old link fail as if the controller went.
 */
static void relink(struct rt_agent *a, uint64_t since_ns, int err)
{
	uint64_t now = trib_now_ns(), gap = AGENT_RELINK_MS * 1000000ull;
	int rv;

	if (!since_ns || now - since_ns < gap || (a->ctl_redial_ns && now - a->ctl_redial_ns < gap))
		return;
	a->ctl_redial_ns = now;
	rv = ctl_wire_redial(a->w, a->n->opts.controller);
	if (rv)
		trib_warn("controller %s: cannot dial it afresh: %s", a->n->opts.controller,
			  strerror(-rv));
	else
		trib_info("controller %s: no answer for %.1f s (%s); dialling it afresh",
			  a->n->opts.controller, (double)(now - since_ns) / 1e9, strerror(-err));
}

void rt__agent_on_join_reply(struct rt_agent *a, struct ctl_event *ev)
{
	json_t *jobs, *e;
	size_t i;

	a->join_pending = false;
	if (ev->kind != CTL_EV_REPLY) {
		if (trib_retry_fail(&a->join_retry, ev->err ? ev->err : -ETIMEDOUT, 0,
				    trib_now_ns(), (int64_t)time(NULL)) ||
		    !(a->join_retry.retries & (a->join_retry.retries + 1)))
			trib_warn("controller %s: no answer to join (%s); trying again in %.1f s "
				  "(%u tries)", a->n->opts.controller, strerror(-ev->err),
				  (double)trib_retry_delay_ns(a->join_retry.retries + 1) / 1e9,
				  a->join_retry.retries + 1);
		relink(a, a->join_retry.since_ns, ev->err ? ev->err : -ETIMEDOUT);
		return;
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok"))) {
		trib_error("controller %s refused this node: %s", a->n->opts.controller,
			   jstr(ev->hdr, "error", "?"));
		if (json_is_true(json_object_get(ev->hdr, "revoked"))) {
			/* Not a node of this cluster any more: a supervisor restart cannot help. */
			trib_error("node %s: its certificate was revoked; stopping (exit status 4)",
				   a->name);
			rt__agent_fatal_stop(a, 4);
		}
		trib_retry_fail(&a->join_retry, -EPERM, 0, trib_now_ns(), (int64_t)time(NULL));
		return;
	}
	trib_retry_ok(&a->join_retry);
	a->ctl_away_ns = 0;
	a->ctl_redial_ns = 0;
	a->provisional = 0; /* reported in the join: counted now */
	a->rank = (int)json_integer_value(json_object_get(ev->hdr, "rank"));
	a->hb_ms = (uint32_t)json_integer_value(json_object_get(ev->hdr, "heartbeat_ms"));
	a->epoch = (uint32_t)json_integer_value(json_object_get(ev->hdr, "epoch"));
	snprintf(a->session, sizeof(a->session), "%s", jstr(ev->hdr, "session", ""));
	/* Only the admin token's hash: the node checks admin bearers, it cannot make one. */
	a->n->admin_token[0] = 0;
	snprintf(a->n->admin_sha256, sizeof(a->n->admin_sha256), "%s",
		 jstr(ev->hdr, "admin_sha256", ""));
	rt__agent_crl(a, json_string_value(json_object_get(ev->hdr, "crl")), true);
	jobs = json_object_get(ev->hdr, "jobs");
	json_array_foreach(jobs, i, e) rt__agent_job_apply(a, e);
	if (json_is_true(json_object_get(ev->hdr, "jobs_all")))
		rt__agent_jobs_prune(a, jobs); /* deleted while this node was away */
	rt__agent_rejoined(a, json_object_get(ev->hdr, "holds"));
	a->joined = true;
	trib_info("joined the cluster at %s as node %s (rank %d, %zu jobs); peers reach it at %s",
		  a->n->opts.controller, a->name, a->rank, json_array_size(jobs), a->addr);
}

void rt__agent_on_hb_reply(struct rt_agent *a, struct ctl_event *ev)
{
	a->hb_pending = false;
	if (ev->kind != CTL_EV_REPLY) {
		/* Away (restarting, or cut off): updates get 503 until it answers again. */
		uint64_t now = trib_now_ns();

		if (!a->ctl_away_ns) {
			a->ctl_away_ns = a->ctl_away_said_ns = now;
			trib_warn("controller %s: no answer to a heartbeat (%s); updates of the "
				  "open rounds are taken here for %u s at most, the rest is served",
				  a->n->opts.controller, strerror(-ev->err),
				  a->n->opts.controller_grace_s);
		} else if (now - a->ctl_away_said_ns >= 2000000000ull) {
			/*
			 * Every 2 s while it lasts, with the last error: a node that cannot reach a
			 * controller that is back (e2e cluster_restart E once: 12 s silent after a
			 * freeze) says so, and why.
			 */
			a->ctl_away_said_ns = now;
			trib_info("controller %s: still no answer to heartbeats after %.1f s (%s)",
				  a->n->opts.controller, (double)(now - a->ctl_away_ns) / 1e9,
				  strerror(-ev->err));
		}
		relink(a, a->ctl_away_ns, ev->err);
		return;
	}
	if (a->ctl_away_ns) {
		trib_info("controller %s answers again (after %.1f s); %u updates were taken "
			  "meanwhile", a->n->opts.controller,
			  (double)(trib_now_ns() - a->ctl_away_ns) / 1e9, a->provisional);
		a->ctl_away_ns = 0;
		a->ctl_redial_ns = 0;
		if (a->provisional && json_is_true(json_object_get(ev->hdr, "ok"))) {
			/* It knows us still: join again all the same, so that it counts them. */
			a->joined = false;
			rt__agent_join_send(a);
			return;
		}
	}
	if (!json_is_true(json_object_get(ev->hdr, "ok")) &&
	    json_integer_value(json_object_get(ev->hdr, "status")) == 410) {
		/*
		 * The controller restarted, or drained us (we were silent too long):
		 * join again and report what this node holds; it says which rounds
		 * keep those updates (rt__agent_rejoined()).
		 */
		trib_warn("the controller no longer knows this node (it restarted, or drained "
			  "it); joining again");
		a->joined = false;
		rt__agent_join_send(a);
		return;
	}
	rt__agent_sync_check(a, json_object_get(ev->hdr, "jobs"));
}

void rt_agent_tick(struct rt_agent *a)
{
	struct rt_node *n = a->n;
	uint64_t used = 0, total = 0;
	uint32_t live = 0;

	if (!a || !a->w)
		return;
	rt__agent_wal_tick(a, trib_now_ns());
	if (!a->joined) {
		if (!a->join_pending && trib_retry_due(&a->join_retry, trib_now_ns()))
			rt__agent_join_send(a);
		return;
	}
	/* The gateway ticks every 200 ms: a shorter period is that. */
	if (!a->hb_pending && trib_now_ns() - a->last_hb_ns >= (uint64_t)a->hb_ms * 1000000ull) {
		a->last_hb_ns = trib_now_ns();
		shm_arena_usage(n->arena, &used, &total, &live);
		if (!rt__agent_to_ctl(a,
			    json_pack("{s:s, s:s, s:I, s:I}", "op", "heartbeat", "name", a->name,
				      "arena_free", (json_int_t)(total - used), "mem_free",
				      (json_int_t)mem_available()),
			    NULL, 0, PK_HB, NULL))
			a->hb_pending = true;
	}
	for (struct xround *x = a->xr; x; x = x->next) {
		rt__agent_shard_step(a, x); /* robust rules: what failed or waited goes again */
		rt__agent_sum_deliver(a, x);
		rt__agent_model_send(a, x);
		if (x->closed && !x->folding && x->top == a->rank)
			rt__agent_top_run(a, x); /* one that waits for its previous model */
		if (x->folding && !x->have_result) {
			struct rt_fn *fn = rt_fnset_find(n->fns, x->fold_fn);

			if (!fn || fn->exited) {
				/* The top's function died: a new one gets every input again. */
				trib_warn(
				    "job %s round %u: the round's top (fn %u) died; restarting "
				    "it",
				    x->job, x->round, x->fold_fn);
				if (x->fold_acc && !fn)
					shm_slot_free(n->arena, x->fold_acc);
				else if (x->fold_acc)
					rt__agent_dead_acc_keep(x);
				x->fold_acc = 0;
				x->folding = false;
				rt__agent_top_run(a, x);
			}
		}
	}
}

bool rt_agent_joined(const struct rt_agent *a)
{
	return a && a->joined;
}
