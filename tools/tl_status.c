// SPDX-License-Identifier: MIT
/*
 * `tributary status`: reads /v1/jobs, /v1/functions and, on a node of a cluster,
 * /v1/cluster, and prints them as tables.
 */
#include "tl_status.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl_client.h"
#include "tl_simulate.h"
#include "trib_alloc.h"
#include "trib_log.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: tributary status [--url http(s)://HOST:PORT] [--data-dir DIR]\n"
		   "                        [--admin-token-file FILE] [--job NAME]\n"
		   "                        [--tls-ca FILE | --tls-pin SHA256HEX]\n");
}

/*
 * GET @target as admin; *out is the parsed JSON, owned by the caller (json_decref).
 * With @absent_ok, a 404 is no error: *out is NULL. Returns 0 or 1 (reported).
 */
static int get_json_opt(struct tl_client *c, const char *admin, const char *target,
			bool absent_ok, json_t **out)
{
	struct tl_http_req req = { .method = "GET", .target = target, .bearer = admin };
	struct tl_http_resp resp;
	json_error_t jerr;
	int err = tl_client_do(c, &req, &resp);

	*out = NULL;
	if (err) {
		fprintf(stderr, "tributary status: GET %s: %s\n", target, strerror(-err));
		return 1;
	}
	if (absent_ok && resp.status == 404)
		return 0;
	if (resp.status != 200) {
		char msg[256];

		tl_http_error_msg(&resp, msg, sizeof(msg));
		fprintf(stderr, "tributary status: GET %s: %d %s\n", target, resp.status, msg);
		return 1;
	}
	*out = json_loadb(resp.body, resp.body_len, 0, &jerr);
	if (!*out) {
		fprintf(stderr, "tributary status: GET %s: bad JSON: %s\n", target, jerr.text);
		return 1;
	}
	return 0;
}

/* As get_json_opt(), where anything but a 200 is an error. */
static int get_json(struct tl_client *c, const char *admin, const char *target, json_t **out)
{
	return get_json_opt(c, admin, target, false, out);
}

static long long jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "-";
}

/* Element @i of array @a as a string, "?" when it is not one. */
static const char *jastr(json_t *a, size_t i)
{
	const char *s = json_string_value(json_array_get(a, i));

	return s ? s : "?";
}

/* A job that selects clients: its tasks of the open round, out of the most it hands out. */
static void print_selection(json_t *j)
{
	json_t *sel = json_object_get(j, "selection");

	if (!json_is_object(sel))
		return;
	/* A cluster's node has no count of its own (the controller's: GET /v1/cluster). */
	if (!json_object_get(sel, "tasks_out"))
		printf("  tasks of %lld (counted by the controller; selection: %lld updates close "
		       "a round, overcommit %g)\n", jint(sel, "tasks_max"), jint(sel, "per_round"),
		       json_number_value(json_object_get(sel, "overcommit")));
	else
		printf("  tasks %lld/%lld out (selection: %lld updates close a round, overcommit "
		       "%g)\n", jint(sel, "tasks_out"), jint(sel, "tasks_max"),
		       jint(sel, "per_round"), json_number_value(json_object_get(sel, "overcommit")));
}

/* The latest evaluated version's sample-weighted means (issue 15), under its job's row. */
static void print_evaluation(json_t *ev)
{
	const char *k;
	json_t *v;

	if (!json_is_object(ev))
		return;
	printf("  evaluation of v%lld: %lld clients, %lld samples:", jint(ev, "version"),
	       jint(ev, "clients"), jint(ev, "samples"));
	json_object_foreach(json_object_get(ev, "metrics"), k, v)
		printf(" %s=%.6g", k, json_number_value(v));
	printf("\n");
}

bool tl_round_stalled(double age_s, double since_update_s, double arrival_rate,
		      double timeout_s, char *why, size_t cap)
{
	double gap = arrival_rate > 0 ? TL_STALL_ARRIVALS / arrival_rate : 0;
	double limit = gap > TL_STALL_MIN_S ? gap : TL_STALL_MIN_S;

	if (age_s < 0)
		return false;
	if (timeout_s > 0 && age_s > timeout_s) {
		if (why)
			snprintf(why, cap, "open %.0f s, past its round_timeout_s %.0f s without "
				 "min_clients updates", age_s, timeout_s);
		return true;
	}
	if (since_update_s > limit) {
		if (why)
			snprintf(why, cap, "no update for %.0f s (> max(%g x %.3g s mean "
				 "inter-arrival, %.0f s))", since_update_s, TL_STALL_ARRIVALS,
				 arrival_rate > 0 ? 1 / arrival_rate : 0.0, TL_STALL_MIN_S);
		return true;
	}
	return false;
}

/* The open round's age and the time since the last update; STALLED by tl_round_stalled(). */
static void print_round_times(json_t *j)
{
	json_t *age = json_object_get(j, "round_age_s");
	json_t *since = json_object_get(j, "last_update_age_s");
	char why[160];

	if (!json_is_number(age) || !json_is_number(since))
		return; /* no round started (or an older server) */
	printf("  round %lld open %.1f s, last update %.1f s ago", jint(j, "round"),
	       json_number_value(age), json_number_value(since));
	/* A paused or done job waits on purpose. */
	if (!strcmp(jstr(j, "state"), "open") &&
	    tl_round_stalled(json_number_value(age), json_number_value(since),
			     json_number_value(json_object_get(j, "arrival_rate")),
			     (double)jint(j, "round_timeout_s"), why, sizeof(why)))
		printf("  STALLED: %s", why);
	printf("\n");
}

static void print_jobs(json_t *jobs, const char *only)
{
	size_t i;
	json_t *j;

	printf("%-24s %-13s %-7s %7s %10s %7s %7s %8s\n", "JOB", "ALGORITHM", "STATE", "ROUND",
	       "RECEIVED", "FAN-IN", "MODEL", "PARAMS");
	json_array_foreach(jobs, i, j) {
		char recv[32], fan[16], rnd[48];

		if (only && strcmp(only, jstr(j, "job")))
			continue;
		snprintf(recv, sizeof(recv), "%lld/%lld", jint(j, "received"),
			 jint(j, "clients_per_round"));
		/* Planned per round: shown once a round is open. */
		if (json_is_integer(json_object_get(j, "fan_in")) && jint(j, "fan_in"))
			snprintf(fan, sizeof(fan), "%lld", jint(j, "fan_in"));
		else
			snprintf(fan, sizeof(fan), "auto");
		/* With num_rounds: the open round of how many (a done job shows N/N). */
		if (json_is_integer(json_object_get(j, "num_rounds")))
			snprintf(rnd, sizeof(rnd), "%lld/%lld", jint(j, "round"),
				 jint(j, "num_rounds"));
		else
			snprintf(rnd, sizeof(rnd), "%lld", jint(j, "round"));
		printf("%-24s %-13s %-7s %7s %10s %7s %6s%lld %8lld\n", jstr(j, "job"),
		       jstr(j, "algorithm"), json_is_string(json_object_get(j, "state")) ?
		       jstr(j, "state") : "open", rnd, recv, fan, "v", jint(j, "model_round"),
		       jint(j, "params"));
		print_round_times(j);
		print_selection(j);
		print_evaluation(json_object_get(j, "evaluation"));
	}
}

static bool is_alive(json_t *f)
{
	return strcmp(jstr(f, "state"), "exited") != 0;
}

static void print_fn_row(json_t *f, const char *indent)
{
	json_t *q = json_object_get(f, "queue_depth");
	json_t *fi = json_object_get(f, "fan_in");
	char qs[24] = "-", fs[24] = "-", id[32], ix[16] = "-";

	if (q)
		snprintf(qs, sizeof(qs), "%lld", (long long)json_integer_value(q));
	if (fi)
		snprintf(fs, sizeof(fs), "%lld", (long long)json_integer_value(fi));
	if (json_object_get(f, "index"))
		snprintf(ix, sizeof(ix), "%lld", jint(f, "index"));
	snprintf(id, sizeof(id), "%s%lld", indent, jint(f, "fn"));
	printf("%-12s %-5s %5s %-8s %6s %9lld %12lld %6s %6lld\n", id, jstr(f, "role"), ix,
	       jstr(f, "state"), fs, jint(f, "messages"), jint(f, "bytes"), qs, jint(f, "served"));
}

/*
 * The live trees: for each job and round being aggregated, its top and the
 * leaves under it (by index); then the warm pool, then the last exited.
 */
static void print_functions(json_t *fns, const char *only)
{
	size_t i, k;
	json_t *f, *g;
	int warm = 0, done = 0, live = 0;

	json_array_foreach(fns, i, f) {
		if (!is_alive(f))
			done++;
		else if (!strcmp(jstr(f, "state"), "warm") || !strcmp(jstr(f, "state"), "exiting"))
			warm++;
		else
			live++;
	}
	printf("\nfunctions: %d working, %d warm (reusable), last %d exited\n", live, warm, done);
	printf("%-12s %-5s %5s %-8s %6s %9s %12s %6s %6s\n", "FN", "ROLE", "INDEX", "STATE",
	       "FAN-IN", "MESSAGES", "BYTES", "QUEUE", "SERVED");
	/* Trees: every working top, then the working leaves of its job and round. */
	json_array_foreach(fns, i, f) {
		if (!is_alive(f) || strcmp(jstr(f, "role"), "top") ||
		    !strcmp(jstr(f, "state"), "warm") || !strcmp(jstr(f, "state"), "exiting"))
			continue;
		if (only && strcmp(only, jstr(f, "job")))
			continue;
		printf("job %s round %lld:\n", jstr(f, "job"), jint(f, "round"));
		print_fn_row(f, "  ");
		json_array_foreach(fns, k, g) {
			if (is_alive(g) && !strcmp(jstr(g, "role"), "mid") &&
			    !strcmp(jstr(g, "job"), jstr(f, "job")) &&
			    jint(g, "round") == jint(f, "round") && strcmp(jstr(g, "state"), "warm"))
				print_fn_row(g, "  `- ");
		}
		for (long idx = 0; idx < 1 << 20; idx++) {
			bool any = false, more = false;

			json_array_foreach(fns, k, g) {
				if (!is_alive(g) || strcmp(jstr(g, "role"), "leaf") ||
				    strcmp(jstr(g, "job"), jstr(f, "job")) ||
				    jint(g, "round") != jint(f, "round") ||
				    !strcmp(jstr(g, "state"), "warm"))
					continue;
				if (jint(g, "index") == idx) {
					print_fn_row(g, "    `- ");
					any = true;
				} else if (jint(g, "index") > idx) {
					more = true;
				}
			}
			if (!any && !more)
				break;
		}
	}
	if (warm) {
		printf("warm pool:\n");
		json_array_foreach(fns, i, f)
			if (is_alive(f) && (!strcmp(jstr(f, "state"), "warm") ||
					    !strcmp(jstr(f, "state"), "exiting")))
				print_fn_row(f, "  ");
	}
	if (done) {
		printf("recently exited (last job, round and role they served):\n");
		json_array_foreach(fns, i, f)
			if (!is_alive(f) && (!only || !strcmp(only, jstr(f, "job"))))
				printf("  %-8lld %-16s round %-6lld %-5s %9lld msgs %12lld bytes\n",
				       jint(f, "fn"), jstr(f, "job"), jint(f, "round"),
				       jstr(f, "role"), jint(f, "messages"), jint(f, "bytes"));
	}
}

/* The cluster's nodes, by rank: a drained node has no heartbeat to show. */
static void print_cluster_nodes(json_t *nodes)
{
	size_t i;
	json_t *n;

	printf("%4s %-16s %-7s %-10s %5s %10s %9s %s\n", "RANK", "NODE", "STATE", "DATAPLANE",
	       "CORES", "ARENA-FREE", "HEARTBEAT", "GATEWAY");
	json_array_foreach(nodes, i, n) {
		bool live = json_is_true(json_object_get(n, "live"));
		char arena[32], hb[32] = "-";

		snprintf(arena, sizeof(arena), "%lld MiB", jint(n, "arena_free") >> 20);
		if (live && jint(n, "heartbeat_age_ms") >= 0)
			snprintf(hb, sizeof(hb), "%lld ms", jint(n, "heartbeat_age_ms"));
		printf("%4lld %-16s %-7s %-10s %5lld %10s %9s %s\n", jint(n, "rank"),
		       jstr(n, "name"), live ? "live" : "drained", jstr(n, "dataplane"),
		       jint(n, "cores"), arena, hb, jstr(n, "http"));
	}
}

/*
 * One round of a job as the controller placed it: first line the nodes that
 * folded its updates; second line, when there are any, the node sums that
 * crossed to the top's node and the nodes lost while it was unfinished.
 */
static void print_cluster_round(json_t *r)
{
	json_t *nodes = json_object_get(r, "nodes"), *edges = json_object_get(r, "edges");
	json_t *lost = json_object_get(r, "lost_nodes"), *v, *e;
	const char *name, *sep = "";
	char recv[32];
	size_t i;

	snprintf(recv, sizeof(recv), "%lld/%lld", jint(r, "received"),
		 jint(r, "clients_per_round"));
	printf("  %7lld %-6s %10s %-16s ", jint(r, "round"), jstr(r, "state"), recv,
	       jstr(r, "top"));
	if (!json_object_size(nodes))
		printf("-");
	json_object_foreach(nodes, name, v) {
		printf("%s%s: %lld (%lld, %lld)", sep, name, jint(v, "updates"), jint(v, "landed"),
		       jint(v, "leaves_planned"));
		sep = ", ";
	}
	printf("\n");
	if (!json_array_size(edges) && !json_array_size(lost))
		return;
	/* Under the NODES column. */
	printf("  %*s %zu cross-node edge%s", 7 + 1 + 6 + 1 + 10 + 1 + 16, "",
	       json_array_size(edges), json_array_size(edges) == 1 ? "" : "s");
	sep = ": ";
	json_array_foreach(edges, i, e) {
		printf("%s%s->%s", sep, jastr(e, 0), jastr(e, 1));
		sep = ", ";
	}
	if (json_array_size(lost)) {
		sep = "; lost ";
		for (i = 0; i < json_array_size(lost); i++) {
			printf("%s%s", sep, jastr(lost, i));
			sep = ", ";
		}
		printf(" (%lld updates)", jint(r, "lost_updates"));
	}
	printf("\n");
}

/* GET /v1/cluster's answer: where the controller placed each recent round of each job. */
static void print_cluster(json_t *cl, const char *only)
{
	size_t i, k;
	json_t *j, *r;

	printf("\ncluster: placement %s; this node: %s\n", jstr(cl, "placement"),
	       jstr(cl, "this_node"));
	print_cluster_nodes(json_object_get(cl, "nodes"));
	json_array_foreach(json_object_get(cl, "jobs"), i, j) {
		if (only && strcmp(only, jstr(j, "name")))
			continue;
		printf("job %s: round %lld, %lld completed; per node: updates folded (landed, "
		       "leaves planned)\n", jstr(j, "name"), jint(j, "round"),
		       jint(j, "completed"));
		printf("  %7s %-6s %10s %-16s %s\n", "ROUND", "STATE", "RECEIVED", "TOP", "NODES");
		json_array_foreach(json_object_get(j, "rounds"), k, r)
			print_cluster_round(r);
	}
}

static const struct option status_lopts[] = {
	{ "url", required_argument, NULL, 'u' },
	{ "data-dir", required_argument, NULL, 'd' },
	{ "admin-token-file", required_argument, NULL, 'a' },
	{ "job", required_argument, NULL, 'j' },
	{ "tls-ca", required_argument, NULL, 'c' },
	{ "tls-pin", required_argument, NULL, 'p' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* The options of `tributary status`; strings are borrowed from argv. */
struct status_args {
	const char *url;
	const char *data_dir;
	const char *token_file; /* NULL: TRIBUTARY_ADMIN_TOKEN, then DATA_DIR/admin-token */
	const char *job;        /* NULL: every job */
	struct tl_tls_opts tls; /* for an https:// --url */
};

/* Parse @argv into *a. Returns -1 to go on, else the exit code (--help: 0, usage: 2). */
static int parse_args(int argc, char **argv, struct status_args *a)
{
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", status_lopts, NULL)) != -1) {
		switch (opt) {
		case 'u':
			a->url = optarg;
			break;
		case 'd':
			a->data_dir = optarg;
			break;
		case 'a':
			a->token_file = optarg;
			break;
		case 'j':
			a->job = optarg;
			break;
		case 'c':
			a->tls.ca_file = optarg;
			break;
		case 'p':
			a->tls.pin_sha256 = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if ((a->tls.ca_file || a->tls.pin_sha256) && !tl_url_is_https(a->url)) {
		fprintf(stderr,
			"tributary status: --tls-ca and --tls-pin need an https:// --url\n");
		return 2;
	}
	return -1;
}

/* Ask the node behind @c (borrowed) as @admin and print its tables. Returns the exit code. */
static int show(struct tl_client *c, const char *admin, const struct status_args *a)
{
	json_t *jobs = NULL, *fns = NULL, *cl = NULL, *b;
	int rc = 1;

	if (get_json(c, admin, "/v1/jobs", &jobs) || get_json(c, admin, "/v1/functions", &fns))
		goto out;
	printf("tributary at %s, data plane %s\n\n", a->url, jstr(fns, "dataplane"));
	print_jobs(json_object_get(jobs, "jobs"), a->job);
	print_functions(json_object_get(fns, "functions"), a->job);
	b = json_object_get(fns, "bpf");
	if (b)
		printf("\nsk_msg router: %lld redirected, %lld passed to the runtime, %lld "
		       "bounced\n", jint(b, "redirects"), jint(b, "passes"), jint(b, "bounced"));
	/*
	 * A node of a cluster also shows where the controller placed each round; a
	 * single node answers 404 and shows nothing more. Asked last so that a
	 * node whose controller is unreachable still shows its own state first.
	 */
	if (get_json_opt(c, admin, "/v1/cluster", true, &cl))
		goto out;
	if (cl)
		print_cluster(cl, a->job);
	rc = 0;
out:
	json_decref(cl);
	json_decref(jobs);
	json_decref(fns);
	return rc;
}

/* No admin token: say where it was looked for and what to do (a bad file's reason is logged). */
static void status_token_error(const struct status_args *a, int err)
{
	if (a->token_file)
		fprintf(stderr, "tributary status: no admin token from --admin-token-file %s "
				"(above); give the file that holds the server's admin token "
				"(DATA_DIR/admin-token where it runs)\n", a->token_file);
	else if (err == -ENOENT)
		fprintf(stderr, "tributary status: no admin token (no %s/admin-token): give "
				"--data-dir DIR of the server, --admin-token-file FILE or set "
				"TRIBUTARY_ADMIN_TOKEN\n", a->data_dir);
	else
		fprintf(stderr, "tributary status: no admin token in %s/admin-token (above); "
				"give --admin-token-file FILE or set TRIBUTARY_ADMIN_TOKEN\n",
			a->data_dir);
}

int tl_status_main(int argc, char **argv)
{
	struct status_args a = { .url = "http://127.0.0.1:8080", .data_dir = "./tributary-data" };
	struct tl_client *c = NULL;
	char *admin = NULL;
	int rc, err;

	rc = parse_args(argc, argv, &a);
	if (rc >= 0)
		return rc;
	trib_log_init("status");
	err = tl_sim_admin_token(a.token_file, a.data_dir, &admin);
	if (err) {
		status_token_error(&a, err);
		return 1;
	}
	err = tl_client_open(a.url, &a.tls, &c);
	if (err) {
		fprintf(stderr, "tributary status: connecting to %s: %s\n", a.url,
			tl_client_strerror(err));
		rc = 1;
	} else {
		rc = show(c, admin, &a);
	}
	tl_client_close(c);
	trib_free(admin);
	return rc;
}
