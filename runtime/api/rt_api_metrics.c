// SPDX-License-Identifier: MIT
/* GET /v1/functions and GET /metrics. */
#include "api_priv.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ebpf_route.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_time.h"

/* --- functions: live ones and the last exited --- */

static const char *job_name_of(struct rt_node *n, uint32_t id)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (j->id == id)
			return j->name;
	return "?";
}

static const char *role_name(uint16_t role)
{
	/* 0: pre-started (--fn-pool), no config yet. */
	return role == FN_ROLE_TOP ? "top" : role == FN_ROLE_MID ? "mid" : role ? "leaf" : "none";
}

struct fn_row {
	uint32_t id, job, round, index;
	uint16_t role;
	bool live;
	int state;
	uint32_t served;
	int pid;
	uint64_t msgs, bytes;
	int64_t depth;
	double age_s; /* live: since spawn */
	uint32_t fanin;
};

struct fn_rows {
	struct rt_node *n;
	struct fn_row *rows;
	size_t len, cap;
};

static void add_row(struct fn_rows *fr, const struct fn_row *r)
{
	if (fr->len == fr->cap) {
		size_t ncap = fr->cap ? fr->cap * 2 : 32;
		struct fn_row *nr = trib_realloc(fr->rows, ncap * sizeof(*nr));

		if (!nr)
			return;
		fr->rows = nr;
		fr->cap = ncap;
	}
	fr->rows[fr->len++] = *r;
}

static void collect_live(struct rt_fn *fn, void *arg)
{
	struct fn_rows *fr = arg;
	struct fn_row r = {
		.id = fn->id,
		.job = fn->cfg.job,
		.round = fn->cfg.round,
		.role = fn->cfg.role,
		.index = fn->cfg.index,
		.live = !fn->exited,
		.state = fn->state,
		.served = fn->served,
		.pid = (int)fn->pid,
		.age_s = (double)(trib_now_ns() - fn->spawn_ns) / 1e9,
		.fanin = fn->cfg.expected,
	};

	rt_node_fn_counters(fr->n, fn, &r.msgs, &r.bytes, &r.depth);
	add_row(fr, &r);
}

/* Live functions first, then the last RT_FN_HISTORY exited ones, newest first. */
static void collect_fns(struct rt_node *n, struct fn_rows *fr)
{
	memset(fr, 0, sizeof(*fr));
	fr->n = n;
	rt_fnset_foreach(n->fns, collect_live, fr);
	for (uint32_t k = 0; k < RT_FN_HISTORY && k < n->nhist; k++) {
		const struct rt_fn_record *h = &n->hist[(n->nhist - 1 - k) % RT_FN_HISTORY];
		struct fn_row r = {
			.id = h->id,
			.job = h->job,
			.round = h->round,
			.role = h->role,
			.msgs = h->msgs_in,
			.bytes = h->bytes_in,
			.depth = n->route ? (int64_t)(h->msgs_in - h->taken) : -1,
		};

		add_row(fr, &r);
	}
}

void rt__api_handle_functions(struct rt_conn *c)
{
	struct rt_node *n = N(c);
	json_t *arr = json_array();
	struct fn_rows fr;
	json_t *o;

	if (!rt__api_auth_admin(c)) {
		rt__api_reject(c, RT_REJ_AUTH, 401,
			       "function status takes the admin token (Bearer)", -1, NULL);
		json_decref(arr);
		return;
	}
	collect_fns(n, &fr);
	for (size_t i = 0; i < fr.len; i++) {
		static const char *const states[] = { "cold", "folding", "warm", "exiting" };
		const struct fn_row *r = &fr.rows[i];
		json_t *e =
		    json_pack("{s:I, s:s, s:I, s:s, s:I, s:s, s:I, s:I}", "fn", (json_int_t)r->id,
			      "job", job_name_of(n, r->job), "round", (json_int_t)r->round, "role",
			      role_name(r->role), "level",
			      (json_int_t)(r->role == FN_ROLE_TOP   ? 0
					   : r->role == FN_ROLE_MID ? 1
								    : 2),
			      "state",
			      !r->live			      ? "exited"
			      : r->state >= 0 && r->state < 4 ? states[r->state]
							      : "?",
			      "messages", (json_int_t)r->msgs, "bytes", (json_int_t)r->bytes);

		if (r->depth >= 0)
			json_object_set_new(e, "queue_depth", json_integer(r->depth));
		if (r->live) {
			json_object_set_new(e, "fan_in", json_integer(r->fanin));
			json_object_set_new(e, "age_s", json_real(r->age_s));
			json_object_set_new(e, "served", json_integer(r->served));
			json_object_set_new(e, "pid", json_integer(r->pid));
			if (r->role != FN_ROLE_TOP)
				json_object_set_new(e, "index", json_integer(r->index));
		}
		json_array_append_new(arr, e);
	}
	trib_free(fr.rows);
	o = json_pack("{s:s, s:o}", "dataplane", rt_dataplane_name(n->dataplane), "functions", arr);
	if (n->route) {
		struct ebpf_global_stats g;

		ebpf_route_global(n->route, &g);
		json_object_set_new(o, "bpf", json_pack("{s:I, s:I, s:I, s:I}", "redirects",
						       (json_int_t)g.redirects, "passes",
						       (json_int_t)g.passes, "bounced",
						       (json_int_t)g.bounced, "short_records",
						       (json_int_t)g.short_recs));
	}
	rt__api_respond_json(c, 200, o, NULL);
}

/* --- /metrics --- */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* Quantile @q of the last min(n, 256) samples of a ring; 0 with none. */
static double quantile(const float *ring, uint64_t n, double q)
{
	float v[256];
	size_t k = n < 256 ? (size_t)n : 256;

	if (!k)
		return 0;
	memcpy(v, ring, k * sizeof(float));
	qsort(v, k, sizeof(float), cmp_float);
	return v[(size_t)(q * (double)(k - 1) + 0.5)];
}

/* Prometheus text being written into a fixed buffer; what does not fit is dropped. */
struct mtext {
	char *buf;
	size_t len, cap;
	/*
	 * Job names in labels (job="mnist"): with --metrics-jobs or the admin token. Otherwise
	 * /metrics is open to anyone who reaches the port, and a job is its number (job_id="3").
	 */
	bool names;
	char label[96];
};

/* The label naming job @id (@name may be NULL: looked up) in t->label, for one OUT(). */
static const char *job_label(struct mtext *t, struct rt_node *n, uint32_t id, const char *name)
{
	if (t->names)
		snprintf(t->label, sizeof(t->label), "job=\"%s\"",
			 name ? name : job_name_of(n, id));
	else
		snprintf(t->label, sizeof(t->label), "job_id=\"%u\"", id);
	return t->label;
}

#define OUT(...)                                                                         \
	do {                                                                             \
		int w_ = snprintf(t->buf + t->len, t->cap - t->len, __VA_ARGS__);        \
		if (w_ > 0 && (size_t)w_ < t->cap - t->len)                              \
			t->len += (size_t)w_;                                            \
	} while (0)

/* The gateway's admission control: connections open, refused and timed out. */
static void metrics_admission(struct mtext *t, const struct rt_loop_stats *ls)
{
	OUT("# HELP tributary_connections_open Client connections open.\n"
	    "# TYPE tributary_connections_open gauge\n"
	    "tributary_connections_open %u\n"
	    "# HELP tributary_connections_max The connection cap (--max-connections).\n"
	    "# TYPE tributary_connections_max gauge\n"
	    "tributary_connections_max %u\n", ls->open, ls->max_connections);
	OUT("# HELP tributary_connections_refused_total Connections refused, by reason "
	    "(max_connections: answered 503 and closed; fd_limit: accepts failed for want of "
	    "file descriptors, each pausing accepting).\n"
	    "# TYPE tributary_connections_refused_total counter\n"
	    "tributary_connections_refused_total{reason=\"max_connections\"} %llu\n"
	    "tributary_connections_refused_total{reason=\"fd_limit\"} %llu\n",
	    (unsigned long long)ls->refused_max_conns, (unsigned long long)ls->refused_fd_limit);
	OUT("# HELP tributary_requests_timed_out_total Connections closed by a timeout, by phase.\n"
	    "# TYPE tributary_requests_timed_out_total counter\n");
	for (int p = RT_TO_HEAD; p < RT_TO__COUNT; p++)
		OUT("tributary_requests_timed_out_total{phase=\"%s\"} %llu\n",
		    rt_timeout_phase_name((enum rt_timeout_phase)p),
		    (unsigned long long)ls->timed_out[p]);
	OUT("# HELP tributary_gateway_rx_threads Body-receive threads (--rx-threads).\n"
	    "# TYPE tributary_gateway_rx_threads gauge\n"
	    "tributary_gateway_rx_threads %u\n"
	    "# HELP tributary_gateway_rx_bodies_total Request bodies received on a body-receive "
	    "thread rather than the event loop's.\n"
	    "# TYPE tributary_gateway_rx_bodies_total counter\n"
	    "tributary_gateway_rx_bodies_total %llu\n", ls->rx_threads,
	    (unsigned long long)ls->rx_bodies);
	if (!ls->tls)
		return;
	OUT("# HELP tributary_tls_handshakes_total TLS handshakes completed.\n"
	    "# TYPE tributary_tls_handshakes_total counter\n"
	    "tributary_tls_handshakes_total %llu\n"
	    "# HELP tributary_tls_handshakes_failed_total TLS handshakes that did not complete, by "
	    "reason (http_request: plain HTTP to the TLS port; version, alpn: nothing in common; "
	    "protocol: a malformed or refused message; closed: the client left; timeout: the head "
	    "timeout).\n"
	    "# TYPE tributary_tls_handshakes_failed_total counter\n",
	    (unsigned long long)ls->tls->handshakes);
	for (int f = 0; f < RT_TLS_FAIL__COUNT; f++)
		OUT("tributary_tls_handshakes_failed_total{reason=\"%s\"} %llu\n",
		    rt_tls_fail_name((enum rt_tls_fail)f), (unsigned long long)ls->tls->failed[f]);
}

static const char *const reasons[] = {
	"malformed", "auth", "unknown_job", "round", "too_large",
	"media_type", "shape", "non_finite", "arena_full", "no_length",
	"store_failing", "client_auth_required", "client_duplicate", "client_inflight",
	"job_inflight", "no_task",
};
_Static_assert(sizeof(reasons) / sizeof(reasons[0]) == RT_REJ__COUNT,
	       "one name per enum rt_reject");

const char *rt__api_reject_name(enum rt_reject why)
{
	return (unsigned)why < RT_REJ__COUNT ? reasons[why] : "?";
}

/* The buckets of the round duration histograms (rt_commit.c's bounds, then +Inf). */
static const char *const round_les[12] = { "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
					   "1", "2.5", "5", "10", "30", "+Inf" };

/* Updates, requests and rounds. */
static void metrics_counters(struct mtext *t, const struct rt_metrics *m,
			     const struct rt_loop_stats *ls)
{
	uint64_t cum = 0;

	OUT("# HELP tributary_updates_accepted_total Updates answered 202, all jobs (per job: "
	    "tributary_job_updates_accepted_total).\n"
	    "# TYPE tributary_updates_accepted_total counter\n"
	    "tributary_updates_accepted_total %llu\n", (unsigned long long)m->accepted);
	OUT("# HELP tributary_updates_rejected_total Requests refused, by reason, all jobs and those "
	    "naming none (per job: tributary_job_updates_rejected_total).\n"
	    "# TYPE tributary_updates_rejected_total counter\n");
	for (int i = 0; i < RT_REJ__COUNT; i++)
		OUT("tributary_updates_rejected_total{reason=\"%s\"} %llu\n", reasons[i],
		    (unsigned long long)(m->rejected[i] +
					 (i == RT_REJ_MALFORMED ? ls->malformed : 0)));
	OUT("# HELP tributary_update_bytes_total Bytes of accepted update bodies.\n"
	    "# TYPE tributary_update_bytes_total counter\n"
	    "tributary_update_bytes_total %llu\n", (unsigned long long)m->bytes_received);
	OUT("# HELP tributary_http_requests_total HTTP requests answered.\n"
	    "# TYPE tributary_http_requests_total counter\n"
	    "tributary_http_requests_total %llu\n", (unsigned long long)ls->requests);
	metrics_admission(t, ls);
	OUT("# HELP tributary_round_duration_seconds First accepted update to model written.\n"
	    "# TYPE tributary_round_duration_seconds histogram\n");
	for (size_t i = 0; i < 12; i++) {
		cum += m->round_hist[i];
		OUT("tributary_round_duration_seconds_bucket{le=\"%s\"} %llu\n", round_les[i],
		    (unsigned long long)cum);
	}
	OUT("tributary_round_duration_seconds_sum %.6f\n"
	    "tributary_round_duration_seconds_count %llu\n", m->round_sum_s,
	    (unsigned long long)m->rounds_done);
}

/* The arena, the functions, the planner and the autoscaler. */
static void metrics_functions(struct mtext *t, struct rt_node *n, const struct rt_metrics *m)
{
	uint64_t used = 0, total = 0;
	uint32_t live = 0;

	shm_arena_usage(n->arena, &used, &total, &live);
	OUT("# HELP tributary_arena_bytes Huge-page arena bytes, by state.\n"
	    "# TYPE tributary_arena_bytes gauge\n"
	    "tributary_arena_bytes{state=\"used\"} %llu\n"
	    "tributary_arena_bytes{state=\"total\"} %llu\n"
	    "# HELP tributary_arena_slots Live slots in the arena.\n"
	    "# TYPE tributary_arena_slots gauge\n"
	    "tributary_arena_slots %u\n",
	    (unsigned long long)used, (unsigned long long)total, live);
	OUT("# HELP tributary_functions Aggregation function processes alive.\n"
	    "# TYPE tributary_functions gauge\n"
	    "tributary_functions %u\n"
	    "# HELP tributary_functions_spawned_total Aggregation function processes started.\n"
	    "# TYPE tributary_functions_spawned_total counter\n"
	    "tributary_functions_spawned_total %llu\n"
	    "# HELP tributary_functions_failed_total Function processes that died mid-round "
	    "(with work; each one replaced).\n"
	    "# TYPE tributary_functions_failed_total counter\n"
	    "tributary_functions_failed_total %llu\n", rt_fnset_count(n->fns),
	    (unsigned long long)m->fn_spawned, (unsigned long long)m->fn_failed);
	OUT("# HELP tributary_functions_reused_total Configs given to a warm function instead of "
	    "a new one.\n# TYPE tributary_functions_reused_total counter\n"
	    "tributary_functions_reused_total %llu\n"
	    "# HELP tributary_functions_retired_total Warm functions that exited after --warm-s "
	    "idle.\n# TYPE tributary_functions_retired_total counter\n"
	    "tributary_functions_retired_total %llu\n"
	    "# HELP tributary_functions_replaced_total Functions that died mid-round and were "
	    "replaced.\n# TYPE tributary_functions_replaced_total counter\n"
	    "tributary_functions_replaced_total %llu\n",
	    (unsigned long long)m->fn_reused, (unsigned long long)m->fn_retired,
	    (unsigned long long)m->recoveries);
	OUT("# HELP tributary_updates_recovered_total Updates answered 202 before a crash or a "
	    "stop, put back into their open rounds from the arena file at start.\n"
	    "# TYPE tributary_updates_recovered_total counter\n"
	    "tributary_updates_recovered_total %llu\n",
	    (unsigned long long)m->updates_recovered);
	OUT("# HELP tributary_fn_cold_start_seconds Spawn to ready to fold (config applied, arena "
	    "mapped); quantiles over the last 256.\n# TYPE tributary_fn_cold_start_seconds "
	    "summary\n"
	    "tributary_fn_cold_start_seconds{quantile=\"0.5\"} %.6f\n"
	    "tributary_fn_cold_start_seconds{quantile=\"0.99\"} %.6f\n"
	    "tributary_fn_cold_start_seconds_sum %.6f\n"
	    "tributary_fn_cold_start_seconds_count %llu\n"
	    "# HELP tributary_fn_cold_start_max_seconds The longest cold start since start.\n"
	    "# TYPE tributary_fn_cold_start_max_seconds gauge\n"
	    "tributary_fn_cold_start_max_seconds %.6f\n"
	    "# HELP tributary_fn_warm_handoff_seconds Config sent to a warm function to ready to "
	    "fold.\n# TYPE tributary_fn_warm_handoff_seconds summary\n"
	    "tributary_fn_warm_handoff_seconds{quantile=\"0.5\"} %.6f\n"
	    "tributary_fn_warm_handoff_seconds{quantile=\"0.99\"} %.6f\n"
	    "tributary_fn_warm_handoff_seconds_sum %.6f\n"
	    "tributary_fn_warm_handoff_seconds_count %llu\n"
	    "# HELP tributary_fn_warm_handoff_max_seconds The longest warm hand-off since start.\n"
	    "# TYPE tributary_fn_warm_handoff_max_seconds gauge\n"
	    "tributary_fn_warm_handoff_max_seconds %.6f\n",
	    quantile(m->cold_recent, m->cold_n, 0.5), quantile(m->cold_recent, m->cold_n, 0.99),
	    m->cold_sum_s, (unsigned long long)m->cold_n, m->cold_max_s,
	    quantile(m->warm_recent, m->warm_n, 0.5), quantile(m->warm_recent, m->warm_n, 0.99),
	    m->warm_sum_s, (unsigned long long)m->warm_n, m->warm_max_s);
	OUT("# HELP tributary_fn_ready_notice_seconds A function's READY (its own stamp) to the "
	    "event loop reading it: the control path's delay, not part of a start or hand-off "
	    "(inputs do not wait for READY).\n"
	    "# TYPE tributary_fn_ready_notice_seconds summary\n"
	    "tributary_fn_ready_notice_seconds{quantile=\"0.5\"} %.6f\n"
	    "tributary_fn_ready_notice_seconds{quantile=\"0.99\"} %.6f\n"
	    "tributary_fn_ready_notice_seconds_sum %.6f\n"
	    "tributary_fn_ready_notice_seconds_count %llu\n"
	    "# HELP tributary_fn_ready_notice_max_seconds The longest READY notice delay since start.\n"
	    "# TYPE tributary_fn_ready_notice_max_seconds gauge\n"
	    "tributary_fn_ready_notice_max_seconds %.6f\n",
	    quantile(m->notice_recent, m->notice_n, 0.5),
	    quantile(m->notice_recent, m->notice_n, 0.99), m->notice_sum_s,
	    (unsigned long long)m->notice_n, m->notice_max_s);
	OUT("# HELP tributary_planner_decisions_total Trees planned (one per round; inputs in "
	    "the log).\n# TYPE tributary_planner_decisions_total counter\n"
	    "tributary_planner_decisions_total %llu\n"
	    "# HELP tributary_rounds_closed_at_deadline_total Rounds closed by round_timeout_s "
	    "with at least min_clients updates.\n"
	    "# TYPE tributary_rounds_closed_at_deadline_total counter\n"
	    "tributary_rounds_closed_at_deadline_total %llu\n",
	    (unsigned long long)m->plans, (unsigned long long)m->deadline_closes);
	OUT("# HELP tributary_autoscale_scale_outs_total Leaves added because the eBPF queue "
	    "depth of the leaf taking updates reached the threshold.\n"
	    "# TYPE tributary_autoscale_scale_outs_total counter\n"
	    "tributary_autoscale_scale_outs_total %llu\n", (unsigned long long)m->scale_outs);
	OUT("# HELP tributary_autoscale_scale_outs_capped_total Scale-outs the queue asked for "
	    "and the cap refused: as many leaves folding as cores - 1 (ctl_plan_split).\n"
	    "# TYPE tributary_autoscale_scale_outs_capped_total counter\n"
	    "tributary_autoscale_scale_outs_capped_total %llu\n",
	    (unsigned long long)m->scale_outs_capped);
	OUT("# HELP tributary_job_round The round each job is collecting.\n"
	    "# TYPE tributary_job_round gauge\n");
	for (struct rt_job *j = n->jobs; j; j = j->next)
		OUT("tributary_job_round{%s} %u\n", job_label(t, n, j->id, j->name), j->round);
	OUT("# HELP tributary_round_clients Distinct client tokens counted in the job's open "
	    "round (state=\"open\") and in its last round closed (state=\"last\").\n"
	    "# TYPE tributary_round_clients gauge\n");
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		OUT("tributary_round_clients{%s,state=\"open\"} %u\n",
		    job_label(t, n, j->id, j->name), rt_job_clients_now(n, j));
		OUT("tributary_round_clients{%s,state=\"last\"} %u\n",
		    job_label(t, n, j->id, j->name), j->last_round_clients);
	}
}

/*
 * The update, refusal and round series per job. Their own names, not a job
 * label on the node-wide ones: those also count refusals that name no job
 * (a bad token on an unknown name, a malformed request line), and a family
 * whose series sum to something other than its total misleads sum().
 */
static void metrics_jobs(struct mtext *t, struct rt_node *n)
{
	OUT("# HELP tributary_job_updates_accepted_total Updates of the job answered 202.\n"
	    "# TYPE tributary_job_updates_accepted_total counter\n");
	for (struct rt_job *j = n->jobs; j; j = j->next)
		OUT("tributary_job_updates_accepted_total{%s} %llu\n",
		    job_label(t, n, j->id, j->name), (unsigned long long)j->accepted_total);
	OUT("# HELP tributary_job_updates_rejected_total Requests to the job's URLs refused, by "
	    "reason.\n# TYPE tributary_job_updates_rejected_total counter\n");
	for (struct rt_job *j = n->jobs; j; j = j->next)
		for (int i = 0; i < RT_REJ__COUNT; i++)
			OUT("tributary_job_updates_rejected_total{%s,reason=\"%s\"} %llu\n",
			    job_label(t, n, j->id, j->name), reasons[i],
			    (unsigned long long)j->rejected[i]);
	OUT("# HELP tributary_job_round_duration_seconds The job's rounds, first accepted update "
	    "to model written.\n# TYPE tributary_job_round_duration_seconds histogram\n");
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		uint64_t cum = 0;

		for (size_t i = 0; i < 12; i++) {
			cum += j->round_hist[i];
			OUT("tributary_job_round_duration_seconds_bucket{%s,le=\"%s\"} %llu\n",
			    job_label(t, n, j->id, j->name), round_les[i], (unsigned long long)cum);
		}
		OUT("tributary_job_round_duration_seconds_sum{%s} %.6f\n",
		    job_label(t, n, j->id, j->name), j->round_sum_s);
		OUT("tributary_job_round_duration_seconds_count{%s} %llu\n",
		    job_label(t, n, j->id, j->name), (unsigned long long)j->rounds_done);
	}
}

/* The buckets of tributary_wal_batch_updates (struct rt_metrics.wal_batch_hist). */
static const char *const wal_le[8] = { "1", "3", "7", "15", "31", "63", "127", "+Inf" };

/* --durability disk: the log's group commit (appends per fdatasync), failures, replay. */
static void metrics_wal(struct mtext *t, struct rt_node *n)
{
	const struct rt_metrics *m = &n->m;
	uint64_t cum = 0;

	OUT("# HELP tributary_wal_appends_total Updates written to the log and fdatasync'ed "
	    "before their 202.\n# TYPE tributary_wal_appends_total counter\n"
	    "tributary_wal_appends_total %llu\n"
	    "# HELP tributary_wal_fsyncs_total fdatasync calls of the log (one per segment a "
	    "batch touched).\n# TYPE tributary_wal_fsyncs_total counter\n"
	    "tributary_wal_fsyncs_total %llu\n"
	    "# HELP tributary_wal_bytes_total Bytes made durable in the log.\n"
	    "# TYPE tributary_wal_bytes_total counter\ntributary_wal_bytes_total %llu\n"
	    "# HELP tributary_wal_segments_cut_total Segment files removed once their round's "
	    "model was stored.\n# TYPE tributary_wal_segments_cut_total counter\n"
	    "tributary_wal_segments_cut_total %llu\n"
	    "# HELP tributary_wal_updates_recovered_total Updates put back from the log at start "
	    "that the arena file did not hold.\n"
	    "# TYPE tributary_wal_updates_recovered_total counter\n"
	    "tributary_wal_updates_recovered_total %llu\n",
	    (unsigned long long)m->wal_appends, (unsigned long long)m->wal_fsyncs,
	    (unsigned long long)m->wal_bytes, (unsigned long long)m->wal_cut_files,
	    (unsigned long long)m->wal_recovered);
	OUT("# HELP tributary_wal_batch_updates Updates per group commit (one write and one "
	    "fdatasync per segment).\n# TYPE tributary_wal_batch_updates histogram\n");
	for (int i = 0; i < 8; i++) {
		cum += m->wal_batch_hist[i];
		OUT("tributary_wal_batch_updates_bucket{le=\"%s\"} %llu\n", wal_le[i],
		    (unsigned long long)cum);
	}
	OUT("tributary_wal_batch_updates_sum %llu\ntributary_wal_batch_updates_count %llu\n",
	    (unsigned long long)m->wal_appends, (unsigned long long)m->wal_batches);
	OUT("# HELP tributary_wal_errors_total Log batches that failed (each retry counts), by "
	    "errno.\n# TYPE tributary_wal_errors_total counter\n");
	for (size_t i = 0; i < RT_STORE_ERRNOS && n->wal_errs[i].n; i++)
		OUT("tributary_wal_errors_total{errno=\"%s\"} %llu\n",
		    n->wal_errs[i].err ? trib_errno_name(n->wal_errs[i].err) : "other",
		    (unsigned long long)n->wal_errs[i].n);
	OUT("# HELP tributary_wal_failing 1 while the log cannot be written: updates get 503.\n"
	    "# TYPE tributary_wal_failing gauge\ntributary_wal_failing %d\n",
	    rt_node_wal_refusal(n, NULL) ? 1 : 0);
}

/* Model writes that failed, and the jobs refusing updates until theirs succeeds. */
static void metrics_store(struct mtext *t, struct rt_node *n)
{
	OUT("# HELP tributary_store_errors_total Model writes that failed (each retry counts), by "
	    "job and errno.\n# TYPE tributary_store_errors_total counter\n");
	for (struct rt_job *j = n->jobs; j; j = j->next)
		for (size_t i = 0; i < RT_STORE_ERRNOS && j->store_errs[i].n; i++)
			OUT("tributary_store_errors_total{%s,errno=\"%s\"} %llu\n",
			    job_label(t, n, j->id, j->name),
			    j->store_errs[i].err ? trib_errno_name(j->store_errs[i].err) : "other",
			    (unsigned long long)j->store_errs[i].n);
	OUT("# HELP tributary_store_failing 1 while a round of the job has a model that could not "
	    "be stored: its updates get 503 until the retry succeeds.\n"
	    "# TYPE tributary_store_failing gauge\n");
	for (struct rt_job *j = n->jobs; j; j = j->next)
		OUT("tributary_store_failing{%s} %d\n", job_label(t, n, j->id, j->name),
		    trib_retry_pending(&j->store) ? 1 : 0);
	if (rt_node_wal_fd(n) >= 0)
		metrics_wal(t, n);
}

/*
 * Functions' messages, bytes and (shm+bpf) queue depth. No function id nor
 * round as labels (a new series every round, and a warm function reused by
 * another round would change its labels): the counters are node-wide (the
 * live functions' plus the exited ones' final counts, so they never drop)
 * and the queue depth a gauge per job and role. Per function: /v1/functions.
 */
static void metrics_per_fn(struct mtext *t, struct rt_node *n)
{
	struct fn_rows fr;
	uint64_t msgs = n->m.fn_msgs_gone, bytes = n->m.fn_bytes_gone;

	collect_fns(n, &fr);
	for (size_t i = 0; i < fr.len; i++)
		if (fr.rows[i].live) {
			msgs += fr.rows[i].msgs;
			bytes += fr.rows[i].bytes;
		}
	OUT("# HELP tributary_fn_messages_total Descriptors delivered to aggregation functions "
	    "(sk_msg counters in shm+bpf).\n# TYPE tributary_fn_messages_total counter\n"
	    "tributary_fn_messages_total %llu\n"
	    "# HELP tributary_fn_bytes_total Bytes delivered to aggregation functions "
	    "(descriptors; payloads too in tcp).\n# TYPE tributary_fn_bytes_total counter\n"
	    "tributary_fn_bytes_total %llu\n", (unsigned long long)msgs,
	    (unsigned long long)bytes);
	if (n->route) {
		static const uint16_t roles[3] = { FN_ROLE_TOP, FN_ROLE_MID, FN_ROLE_LEAF };

		OUT("# HELP tributary_fn_queue_depth Descriptors delivered to the job's live "
		    "functions of a role but not yet taken (shm+bpf only).\n"
		    "# TYPE tributary_fn_queue_depth gauge\n");
		for (struct rt_job *j = n->jobs; j; j = j->next)
			for (int k = 0; k < 3; k++) {
				uint64_t depth = 0;

				for (size_t i = 0; i < fr.len; i++)
					if (fr.rows[i].live && fr.rows[i].job == j->id &&
					    fr.rows[i].role == roles[k] && fr.rows[i].depth > 0)
						depth += (uint64_t)fr.rows[i].depth;
				OUT("tributary_fn_queue_depth{%s,role=\"%s\"} %llu\n",
				    job_label(t, n, j->id, j->name), role_name(roles[k]),
				    (unsigned long long)depth);
			}
	}
	trib_free(fr.rows);
}

void rt__api_handle_metrics(struct rt_conn *c)
{
	struct rt_node *n = N(c);
	struct mtext tx = { .cap = 65536 }, *t = &tx;

	/* ~2.5 KB of per-job series (16 refusal reasons, a histogram): room for every job. */
	for (struct rt_job *j = n->jobs; j; j = j->next)
		tx.cap += 4096;

	tx.names = n->opts.metrics_jobs || rt__api_auth_admin(c);

	tx.buf = trib_malloc(tx.cap);
	if (!tx.buf) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	metrics_counters(t, &n->m, rt_loop_stats(c->loop));
	metrics_functions(t, n, &n->m);
	metrics_jobs(t, n);
	metrics_store(t, n);
	metrics_per_fn(t, n);
	if (n->route) {
		struct ebpf_global_stats g;

		ebpf_route_global(n->route, &g);
		OUT("# HELP tributary_bpf_records_total Descriptor records seen by the sk_msg "
		    "router, by verdict.\n# TYPE tributary_bpf_records_total counter\n"
		    "tributary_bpf_records_total{verdict=\"redirect\"} %llu\n"
		    "tributary_bpf_records_total{verdict=\"pass\"} %llu\n"
		    "tributary_bpf_records_total{verdict=\"bounced\"} %llu\n",
		    (unsigned long long)g.redirects, (unsigned long long)g.passes,
		    (unsigned long long)g.bounced);
	}
	OUT("# HELP tributary_dataplane_info The data plane in use.\n"
	    "# TYPE tributary_dataplane_info gauge\n"
	    "tributary_dataplane_info{mode=\"%s\"} 1\n", rt_dataplane_name(n->dataplane));
	rt__api_eval_metrics(n, tx.names, tx.buf, &tx.len, tx.cap);
	if (API(c)->clustered)
		API(c)->cluster.metrics(API(c)->cluster.ctx, tx.buf, &tx.len, tx.cap);
	rt_conn_respond(c, 200, "text/plain; version=0.0.4", tx.buf, tx.len, NULL);
	trib_free(tx.buf);
}
#undef OUT

