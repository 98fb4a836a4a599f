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

	printf("%-24s %7s %10s %7s %7s %8s\n", "JOB", "ROUND", "RECEIVED", "FAN-IN", "MODEL",
	       "PARAMS");
	json_array_foreach(jobs, i, j) {
		char recv[32];

		if (only && strcmp(only, jstr(j, "job")))
			continue;
		snprintf(recv, sizeof(recv), "%lld/%lld", jint(j, "received"),
			 jint(j, "clients_per_round"));
		printf("%-24s %7lld %10s %7lld %6s%lld %8lld\n", jstr(j, "job"), jint(j, "round"),
		       recv, jint(j, "fan_in"), "v", jint(j, "model_round"), jint(j, "params"));
	}
}

/* The live tree of each job's rounds: the top, and its leaves under it. */
static void print_functions(json_t *fns, const char *only)
{
	size_t i;
	json_t *f;
	int live = 0, done = 0;

	json_array_foreach(fns, i, f) {
		if (only && strcmp(only, jstr(f, "job")))
			continue;
		if (strcmp(jstr(f, "state"), "exited"))
			live++;
		else
			done++;
	}
	printf("\nfunctions: %d alive", live);
	if (done)
		printf(", last %d exited", done);
	printf("\n%-8s %-16s %6s %-5s %-8s %6s %9s %12s %6s\n", "FN", "JOB", "ROUND", "ROLE",
	       "STATE", "FAN-IN", "MESSAGES", "BYTES", "QUEUE");
	json_array_foreach(fns, i, f) {
		json_t *q = json_object_get(f, "queue_depth");
		json_t *fi = json_object_get(f, "fan_in");
		char qs[24] = "-", fs[24] = "-";
		bool leaf = !strcmp(jstr(f, "role"), "leaf");

		if (only && strcmp(only, jstr(f, "job")))
			continue;
		if (q)
			snprintf(qs, sizeof(qs), "%lld", (long long)json_integer_value(q));
		if (fi)
			snprintf(fs, sizeof(fs), "%lld", (long long)json_integer_value(fi));
		printf("%s%-*lld %-16s %6lld %-5s %-8s %6s %9lld %12lld %6s\n", leaf ? "  " : "",
		       leaf ? 6 : 8, jint(f, "fn"), jstr(f, "job"), jint(f, "round"),
		       jstr(f, "role"), jstr(f, "state"), fs, jint(f, "messages"),
		       jint(f, "bytes"), qs);
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
