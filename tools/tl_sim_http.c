// SPDX-License-Identifier: MIT
/* simulate talking to one server: the admin token, the job, an update, a model. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tl_client.h"
#include "tl_sim_int.h"
#include "tl_simulate.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"
#include "trib_token.h"

#define SIM_RETRY_WAIT_S 120.0
/* Waiting for a model: at most this long, in long polls of at most 60 s each. */
#define SIM_MODEL_WAIT_S 300
#define SIM_LONG_POLL_MAX_S 60

/*
 * The token in @path by core's one rule (trib_token_load: 16 to 79 characters
 * on the first line, cut at whitespace; a failure is logged with the path).
 * *out is owned by the caller.
 */
static int token_file(const char *path, char **out)
{
	char tok[TRIB_TOKEN_MAX + 1];
	int err;

	err = trib_token_load(path, false, tok, sizeof(tok), NULL);
	if (err)
		return err;
	*out = trib_strdup(tok);
	explicit_bzero(tok, sizeof(tok));
	return *out ? 0 : -ENOMEM;
}

int tl_sim_admin_token(const char *file, const char *data_dir, char **out)
{
	const char *env = getenv("TRIBUTARY_ADMIN_TOKEN");
	char path[4096];
	size_t b, e;

	if (file)
		return token_file(file, out);
	if (env) {
		b = strspn(env, " \t\r\n");
		e = b + strcspn(env + b, "\r\n");
		while (e > b && strchr(" \t", env[e - 1]))
			e--;
		if (e > b) {
			*out = trib_strndup(env + b, e - b);
			return *out ? 0 : -ENOMEM;
		}
	}
	if (!data_dir)
		return -ENOENT;
	if ((size_t)snprintf(path, sizeof(path), "%s/admin-token", data_dir) >= sizeof(path)) {
		trib_error("--data-dir %.80s...: too long a path", data_dir);
		return -ENAMETOOLONG;
	}
	/* The default place: its absence is the callers' to say, with the other places. */
	if (access(path, F_OK) && errno == ENOENT)
		return -ENOENT;
	return token_file(path, out);
}

void tl_sim_log_http_error(const char *what, const struct tl_http_resp *resp)
{
	char msg[512];

	tl_http_error_msg(resp, msg, sizeof(msg));
	trib_error("%s: HTTP %d: %s", what, resp->status, msg);
}

static bool json_u64(json_t *o, const char *key, uint64_t *v)
{
	json_t *x = json_object_get(o, key);

	if (!json_is_integer(x) || json_integer_value(x) < 0)
		return false;
	*v = (uint64_t)json_integer_value(x);
	return true;
}

/* Returns 0, -ENOENT (404), -EACCES, -EPROTO. */
static int job_get(struct tl_client *c, const char *admin, const char *name, uint32_t clients,
		   uint64_t params, struct tl_sim_job *job)
{
	struct tl_http_req req = { .method = "GET", .bearer = admin };
	struct tl_http_resp resp;
	uint64_t cpr, p;
	char target[512];
	json_t *root;
	int err;

	snprintf(target, sizeof(target), "/v1/jobs/%s", name);
	req.target = target;
	err = tl_client_do(c, &req, &resp);
	if (err) {
		trib_error("GET %s: %s", target, strerror(-err));
		return err;
	}
	if (resp.status == 404)
		return -ENOENT;
	if (resp.status != 200) {
		tl_sim_log_http_error(target, &resp);
		return resp.status == 401 || resp.status == 403 ? -EACCES : -EPROTO;
	}
	root = json_loadb(resp.body, resp.body_len, 0, NULL);
	if (!root || !json_u64(root, "clients_per_round", &cpr) || !json_u64(root, "params", &p) ||
	    !json_u64(root, "round", &job->round) || !json_u64(root, "received", &job->received)) {
		trib_error("GET %s: unexpected answer: %.200s", target, resp.body);
		json_decref(root);
		return -EPROTO;
	}
	/* A job that selects clients closes rounds at per_round of a larger population. */
	job->sel_k = 0;
	if (json_is_object(json_object_get(root, "selection"))) {
		json_t *sel = json_object_get(root, "selection");
		uint64_t k = 0, m = 0;

		if (!json_u64(sel, "per_round", &k) || !json_u64(sel, "tasks_max", &m) || !k ||
		    k > UINT32_MAX || m > UINT32_MAX) {
			trib_error("GET %s: unexpected selection: %.200s", target, resp.body);
			json_decref(root);
			return -EPROTO;
		}
		job->sel_k = (uint32_t)k;
		job->sel_max = (uint32_t)m;
	}
	json_decref(root);
	if (job->sel_k && p == params && clients >= job->sel_k)
		return 0; /* --clients is the population polling for tasks */
	if (job->sel_k) {
		trib_error("job %s selects %u clients a round of at least as many: --clients %u "
			   "is fewer (or params %" PRIu64 " differ from %" PRIu64 ")", name,
			   job->sel_k, clients, p, params);
		return -EEXIST;
	}
	if (cpr != clients || p != params) {
		trib_error("job %s exists with clients_per_round %" PRIu64 " and params %" PRIu64
			   ", not %u and %" PRIu64,
			   name, cpr, p, clients, params);
		return -EEXIST;
	}
	return 0;
}

/* Returns 0, -EEXIST (someone else created it meanwhile), -EACCES, -EPROTO. */
static int job_create(struct tl_client *c, const char *admin, const char *name, uint32_t clients,
		      uint64_t params, struct tl_sim_job *job)
{
	struct tl_http_req req = { .method = "POST", .target = "/v1/jobs", .bearer = admin,
				   .headers = "Content-Type: application/json\r\n" };
	struct tl_http_resp resp;
	char buf[1024];
	struct iovec iov;
	json_t *root, *tok;
	size_t n;
	int err;

	root = json_pack("{s:s, s:I, s:s, s:I}", "name", name, "clients_per_round",
			 (json_int_t)clients, "algorithm", "fedavg", "params", (json_int_t)params);
	if (!root)
		return -ENOMEM;
	n = json_dumpb(root, buf, sizeof(buf), JSON_COMPACT);
	json_decref(root);
	if (n == 0 || n > sizeof(buf))
		return -EINVAL;
	iov = (struct iovec){ .iov_base = buf, .iov_len = n };
	req.body = &iov;
	req.body_iovcnt = 1;
	err = tl_client_do(c, &req, &resp);
	if (err) {
		trib_error("POST /v1/jobs: %s", strerror(-err));
		return err;
	}
	if (resp.status == 409)
		return -EEXIST;
	if (resp.status != 201 && resp.status != 200) {
		tl_sim_log_http_error("POST /v1/jobs", &resp);
		return resp.status == 401 || resp.status == 403 ? -EACCES : -EPROTO;
	}
	root = json_loadb(resp.body, resp.body_len, 0, NULL);
	tok = root ? json_object_get(root, "token") : NULL;
	if (!json_is_string(tok) || json_string_length(tok) >= sizeof(job->token)) {
		trib_error("POST /v1/jobs: unexpected answer: %.200s", resp.body);
		json_decref(root);
		return -EPROTO;
	}
	snprintf(job->token, sizeof(job->token), "%s", json_string_value(tok));
	if (!json_u64(root, "round", &job->round))
		job->round = 0;
	json_decref(root);
	job->received = 0;
	job->created = true;
	return 0;
}

/* See tl_sim_int.h. */
int tl_sim_job_wait(struct tl_client *c, const char *admin, const char *name, uint32_t clients,
		    uint64_t params, uint64_t wait_ns)
{
	const struct timespec pause = { .tv_nsec = 20000000 };
	uint64_t end = trib_now_ns() + wait_ns;
	struct tl_sim_job job;
	int err;

	for (;;) {
		err = job_get(c, admin, name, clients, params, &job);
		if (err != -ENOENT || trib_now_ns() >= end)
			return err;
		nanosleep(&pause, NULL);
	}
}

int tl_sim_job_ensure(struct tl_client *c, const char *admin, const char *name, uint32_t clients,
		      uint64_t params, struct tl_sim_job *job)
{
	int err, attempt;

	memset(job, 0, sizeof(*job));
	for (attempt = 0; attempt < 2; attempt++) {
		err = job_get(c, admin, name, clients, params, job);
		if (err != -ENOENT)
			break;
		err = job_create(c, admin, name, clients, params, job);
		if (err != -EEXIST)
			break;
	}
	if (err)
		return err;
	if (!job->created)
		snprintf(job->token, sizeof(job->token), "%s", admin ? admin : "");
	return 0;
}

void tl_sim_idem_key(uint64_t seed, uint64_t round, uint32_t client, uint8_t resend, char *buf,
		     size_t len)
{
	if (resend)
		snprintf(buf, len, "sim-%" PRIu64 "-%" PRIu64 "-%" PRIu32 "-r%" PRIu32, seed, round,
			 client, (uint32_t)resend);
	else
		snprintf(buf, len, "sim-%" PRIu64 "-%" PRIu64 "-%" PRIu32, seed, round, client);
}

int tl_sim_post_update(struct tl_client *c, const struct tl_sim_update *u,
		       struct tl_http_resp *resp, unsigned *retries)
{
	struct tl_http_req req = { .method = "POST" };
	char target[512], headers[256];
	struct iovec iov[2];
	int n = 0;

	snprintf(target, sizeof(target), "/v1/jobs/%s/updates", u->job);
	snprintf(headers, sizeof(headers),
		 "X-Tributary-Round: %" PRIu64 "\r\nX-Tributary-Samples: %u\r\n"
		 "Content-Type: %s\r\n",
		 u->round, u->samples,
		 u->st_hdr ? "application/x-safetensors" : "application/octet-stream");
	if (u->st_hdr)
		iov[n++] = (struct iovec){ .iov_base = (void *)u->st_hdr,
					   .iov_len = u->st_hdr_len };
	iov[n++] = (struct iovec){ .iov_base = (void *)u->data,
				   .iov_len = u->data_len ? u->data_len : u->params * 4 };
	req.target = target;
	req.bearer = u->token && *u->token ? u->token : NULL;
	req.headers = headers;
	req.idempotency_key = u->key[0] ? u->key : NULL;
	req.body = iov;
	req.body_iovcnt = n;
	return tl_client_do_retry(c, &req, SIM_RETRY_WAIT_S, resp, retries);
}

int tl_sim_fetch_model(struct tl_client *c, const char *job, const char *token, uint64_t version,
		       struct tl_http_resp *resp)
{
	struct tl_http_req req = { .method = "GET", .bearer = token && *token ? token : NULL };
	int tmo_s = tl_client_timeout_ms(c) / 1000, poll_s = SIM_LONG_POLL_MAX_S, polls, n;
	char target[512];
	int err;

	if (version == 0)
		return -EINVAL;
	n = snprintf(target, sizeof(target), "/v1/jobs/%s/model?after=%" PRIu64, job, version - 1);
	/*
	 * The server holds a poll for up to 60 s: with a shorter answer timeout,
	 * ask for half of it, so that a poll that waits is not taken for a gateway
	 * that does not answer.
	 */
	if (tmo_s < 2 * SIM_LONG_POLL_MAX_S + 5) {
		poll_s = tmo_s / 2 > 0 ? tmo_s / 2 : 1;
		snprintf(target + n, sizeof(target) - (size_t)n, "&timeout=%d", poll_s);
	}
	req.target = target;
	for (polls = 0; polls * poll_s < SIM_MODEL_WAIT_S; polls++) {
		err = tl_client_do(c, &req, resp);
		if (err) {
			trib_error("GET %s: %s", target, strerror(-err));
			return err;
		}
		if (resp->status != 304)
			break;
	}
	if (resp->status == 304) {
		trib_error("GET %s: no model after %d long polls", target, polls);
		return -ETIMEDOUT;
	}
	if (resp->status != 200) {
		tl_sim_log_http_error(target, resp);
		return -EPROTO;
	}
	/* No header: trust the server's answer to ?after. A newer version: ask for ours. */
	if (resp->round < 0 || (uint64_t)resp->round == version)
		return 0;
	snprintf(target, sizeof(target), "/v1/jobs/%s/model?round=%" PRIu64, job, version);
	err = tl_client_do(c, &req, resp);
	if (err) {
		trib_error("GET %s: %s", target, strerror(-err));
		return err;
	}
	if (resp->status == 404)
		return -ENOENT;
	if (resp->status != 200) {
		tl_sim_log_http_error(target, resp);
		return -EPROTO;
	}
	return 0;
}
