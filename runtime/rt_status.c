// SPDX-License-Identifier: MIT
/* `tributary status`: reads /v1/jobs and /v1/functions and prints them as tables. */
#include "rt_status.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_client.h"
#include "rt_simulate.h"
#include "trib_alloc.h"
#include "trib_log.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: tributary status [--url http://HOST:PORT] [--data-dir DIR]\n"
		   "                        [--admin-token-file FILE] [--job NAME]\n");
}

/* GET @target as admin; *out is the parsed JSON (json_decref). Returns 0 or 1 (reported). */
static int get_json(struct rt_client *c, const char *admin, const char *target, json_t **out)
{
	struct rt_http_req req = { .method = "GET", .target = target, .bearer = admin };
	struct rt_http_resp resp;
	json_error_t jerr;
	int err = rt_client_do(c, &req, &resp);

	if (err) {
		fprintf(stderr, "tributary status: GET %s: %s\n", target, strerror(-err));
		return 1;
	}
	if (resp.status != 200) {
		char msg[256];

		rt_http_error_msg(&resp, msg, sizeof(msg));
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

static long long jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "-";
}

static void print_jobs(json_t *jobs, const char *only)
{
	size_t i;
	json_t *j;

	printf("%-24s %-13s %7s %10s %7s %7s %8s\n", "JOB", "ALGORITHM", "ROUND", "RECEIVED",
	       "FAN-IN", "MODEL", "PARAMS");
	json_array_foreach(jobs, i, j) {
		char recv[32], fan[16];

		if (only && strcmp(only, jstr(j, "job")))
			continue;
		snprintf(recv, sizeof(recv), "%lld/%lld", jint(j, "received"),
			 jint(j, "clients_per_round"));
		/* Planned per round: shown once a round is open. */
		if (json_is_integer(json_object_get(j, "fan_in")) && jint(j, "fan_in"))
			snprintf(fan, sizeof(fan), "%lld", jint(j, "fan_in"));
		else
			snprintf(fan, sizeof(fan), "auto");
		printf("%-24s %-13s %7lld %10s %7s %6s%lld %8lld\n", jstr(j, "job"),
		       jstr(j, "algorithm"), jint(j, "round"), recv, fan, "v", jint(j, "model_round"),
		       jint(j, "params"));
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

int rt_status_main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "data-dir", required_argument, NULL, 'd' },
		{ "admin-token-file", required_argument, NULL, 'a' },
		{ "job", required_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *url = "http://127.0.0.1:8080", *data_dir = "./tributary-data";
	const char *token_file = NULL, *job = NULL;
	struct rt_client *c = NULL;
	json_t *jobs = NULL, *fns = NULL;
	char *admin = NULL;
	int rc = 1, opt, err;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (opt) {
		case 'u':
			url = optarg;
			break;
		case 'd':
			data_dir = optarg;
			break;
		case 'a':
			token_file = optarg;
			break;
		case 'j':
			job = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	trib_log_init("status");
	err = rt_sim_admin_token(token_file, data_dir, &admin);
	if (err) {
		fprintf(stderr, "tributary status: no admin token (--admin-token-file, "
				"TRIBUTARY_ADMIN_TOKEN or %s/admin-token): %s\n", data_dir,
			strerror(-err));
		return 1;
	}
	err = rt_client_open(url, &c);
	if (err) {
		fprintf(stderr, "tributary status: connecting to %s: %s\n", url, strerror(-err));
		goto out;
	}
	if (get_json(c, admin, "/v1/jobs", &jobs) || get_json(c, admin, "/v1/functions", &fns))
		goto out;
	printf("tributary at %s, data plane %s\n\n", url, jstr(fns, "dataplane"));
	print_jobs(json_object_get(jobs, "jobs"), job);
	print_functions(json_object_get(fns, "functions"), job);
	{
		json_t *b = json_object_get(fns, "bpf");

		if (b)
			printf("\nsk_msg router: %lld redirected, %lld passed to the runtime, %lld "
			       "bounced\n", jint(b, "redirects"), jint(b, "passes"),
			       jint(b, "bounced"));
	}
	rc = 0;
out:
	json_decref(jobs);
	json_decref(fns);
	rt_client_close(c);
	trib_free(admin);
	return rc;
}
