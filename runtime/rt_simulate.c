// SPDX-License-Identifier: MIT
/* `tributary simulate`: drive N clients for R rounds over HTTP, check every model it causes. */
#include "rt_simulate.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trib_safetensors.h"
#include "shm_abi.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

#define SIM_GAMMA 0x9e3779b97f4a7c15ull
#define SIM_MAX_CLIENTS (1u << 24)
#define SIM_MAX_ROUNDS (1u << 24)
#define SIM_MAX_PARAMS (1ull << 30) /* 4 GiB bodies */
#define SIM_MAX_CONNECTIONS 1024u
#define SIM_RETRY_WAIT_S 120.0
/* Long polls (each at most 60 s on the server) before giving up on a model. */
#define SIM_MAX_POLLS 5
#define SIM_BAR_WIDTH 30
/* Elements per block of the reference sum: the block of ref[] stays in cache across clients. */
#define SIM_REF_BLOCK 2048

static const char sim_usage[] =
	"usage: tributary simulate --job NAME --clients N --rounds R [--params P (1000000)]\n"
	"         [--url http://HOST:PORT[,http://HOST2:PORT2...] (http://127.0.0.1:8080)]\n"
	"         [--data-dir DIR (./tributary-data)]\n"
	"         [--admin-token-file FILE] [--connections C (min(N, 16))] [--seed S (1)]\n"
	"         [--format raw|safetensors|mixed (mixed)] [--quiet] [--no-check]\n"
	"         [--report-json FILE]\n"
	"  Several --url gateways (one per node of a cluster): client i sends to the\n"
	"  (i mod k)-th, and to the next one when that refuses the connection.\n";

/* ---- options ---- */

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static bool job_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128)
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/*
 * Split @val, a comma-separated list of gateway URLs, into o->urls. Blanks
 * around an entry are ignored. Returns 0 or -EINVAL with the reason in @why.
 */
static int parse_urls(const char *val, struct rt_sim_opts *o, char *why, size_t why_len)
{
	const char *p = val;
	char host[256], *u;
	uint16_t port;
	size_t n;

	o->nurls = 0;
	for (;;) {
		p += strspn(p, " \t");
		n = strcspn(p, ",");
		while (n > 0 && strchr(" \t", p[n - 1]))
			n--;
		if (n == 0) {
			snprintf(why, why_len, "empty entry in --url '%s'", val);
			return -EINVAL;
		}
		if (o->nurls == RT_SIM_MAX_URLS) {
			snprintf(why, why_len, "--url lists more than %d gateways", RT_SIM_MAX_URLS);
			return -EINVAL;
		}
		if (n >= RT_SIM_URL_LEN) {
			snprintf(why, why_len, "URL '%.40s...' in --url is longer than %d bytes", p,
				 RT_SIM_URL_LEN - 1);
			return -EINVAL;
		}
		u = o->urls[o->nurls];
		memcpy(u, p, n);
		u[n] = '\0';
		if (rt_url_parse(u, host, sizeof(host), &port)) {
			snprintf(why, why_len, "bad URL '%s' in --url (want http://HOST[:PORT])", u);
			return -EINVAL;
		}
		o->nurls++;
		p += strcspn(p, ",");
		if (!*p)
			return 0;
		p++;
	}
}

int rt_sim_parse_args(int argc, char **argv, struct rt_sim_opts *o, char *why, size_t why_len)
{
	bool have_conn = false, have_clients = false, have_rounds = false;
	uint64_t v;
	int i;

	memset(o, 0, sizeof(*o));
	o->params = 1000000;
	o->url = "http://127.0.0.1:8080";
	o->nurls = 1;
	snprintf(o->urls[0], sizeof(o->urls[0]), "%s", o->url);
	o->data_dir = "./tributary-data";
	o->seed = 1;
	o->format = RT_SIM_MIXED;
	snprintf(why, why_len, "bad arguments");

	for (i = 1; i < argc; i++) {
		const char *arg = argv[i], *name, *val, *eq;
		size_t nlen;

		if (strncmp(arg, "--", 2) || !arg[2]) {
			snprintf(why, why_len, "unexpected argument '%s'", arg);
			return -EINVAL;
		}
		name = arg + 2;
		eq = strchr(name, '=');
		nlen = eq ? (size_t)(eq - name) : strlen(name);
#define IS(lit) (nlen == sizeof(lit) - 1 && !strncmp(name, lit, nlen))
		if (IS("quiet")) {
			if (eq) {
				snprintf(why, why_len, "--quiet takes no value");
				return -EINVAL;
			}
			o->quiet = true;
			continue;
		}
		if (IS("no-check")) {
			/* For jobs whose model is not the FedAvg mean (optimisers, robust rules). */
			o->no_check = true;
			continue;
		}
		if (IS("help")) {
			snprintf(why, why_len, "help");
			return -ECANCELED;
		}
		if (eq) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			snprintf(why, why_len, "option '%s' needs a value", arg);
			return -EINVAL;
		}
		if (IS("job")) {
			if (!job_name_ok(val))
				goto bad_value;
			o->job = val;
		} else if (IS("clients")) {
			if (parse_u64(val, 1, SIM_MAX_CLIENTS, &v))
				goto bad_value;
			o->clients = (uint32_t)v;
			have_clients = true;
		} else if (IS("rounds")) {
			if (parse_u64(val, 1, SIM_MAX_ROUNDS, &v))
				goto bad_value;
			o->rounds = (uint32_t)v;
			have_rounds = true;
		} else if (IS("params")) {
			if (parse_u64(val, 1, SIM_MAX_PARAMS, &o->params))
				goto bad_value;
		} else if (IS("url")) {
			if (parse_urls(val, o, why, why_len))
				return -EINVAL;
			o->url = val;
		} else if (IS("data-dir")) {
			if (!*val)
				goto bad_value;
			o->data_dir = val;
		} else if (IS("admin-token-file")) {
			if (!*val)
				goto bad_value;
			o->admin_token_file = val;
		} else if (IS("connections")) {
			if (parse_u64(val, 1, SIM_MAX_CONNECTIONS, &v))
				goto bad_value;
			o->connections = (uint32_t)v;
			have_conn = true;
		} else if (IS("seed")) {
			if (parse_u64(val, 0, UINT64_MAX, &o->seed))
				goto bad_value;
		} else if (IS("report-json")) {
			if (!*val)
				goto bad_value;
			o->report_json = val;
		} else if (IS("format")) {
			if (!strcmp(val, "raw"))
				o->format = RT_SIM_RAW;
			else if (!strcmp(val, "safetensors"))
				o->format = RT_SIM_SAFETENSORS;
			else if (!strcmp(val, "mixed"))
				o->format = RT_SIM_MIXED;
			else
				goto bad_value;
		} else {
			snprintf(why, why_len, "unknown option '--%.*s'", (int)nlen, name);
			return -EINVAL;
		}
#undef IS
		continue;
bad_value:
		snprintf(why, why_len, "bad value '%s' for --%.*s", val, (int)nlen, name);
		return -EINVAL;
	}
	if (!o->job || !have_clients || !have_rounds) {
		snprintf(why, why_len, "--job, --clients and --rounds are required");
		return -EINVAL;
	}
	if (!have_conn)
		o->connections = 16;
	if (o->connections > o->clients)
		o->connections = o->clients;
	return 0;
}

/* ---- the update stream ---- */

static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t rt_sim_key(uint64_t seed, uint64_t round, uint32_t client)
{
	uint64_t k = mix64(seed ^ 0x5452494255544152ull);

	k = mix64(k + (round + 1) * SIM_GAMMA);
	return mix64(k + ((uint64_t)client + 1) * SIM_GAMMA);
}

uint64_t rt_sim_stream(uint64_t key, uint64_t i)
{
	return mix64(key + (i + 1) * SIM_GAMMA);
}

uint32_t rt_sim_samples(uint64_t key)
{
	return 1 + (uint32_t)(((rt_sim_stream(key, 0) >> 32) * 100) >> 32);
}

static inline uint32_t fmix32(uint32_t h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	return h ^ (h >> 16);
}

/*
 * Element @i (0-based) as an integer m in [0, 2^24): the value is m * 2^-23 - 1,
 * exact in f32. A 32-bit hash of the element's index (murmur3's finaliser over
 * a Weyl sequence keyed by the stream) rather than splitmix64: it vectorises,
 * so generating a 4 MB update costs a fraction of sending it. The index wraps
 * at 2^32, far beyond SIM_MAX_PARAMS.
 */
static inline uint32_t elem_bits(uint64_t key, uint64_t i)
{
	return (fmix32((uint32_t)key + (uint32_t)i * 0x9e3779b9u) >> 8) ^ (uint32_t)(key >> 40);
}

/* The two hot loops get an AVX2 clone (picked at load time): about twice as fast. */
#if defined(__x86_64__) && defined(__GNUC__)
#define SIM_HOT __attribute__((target_clones("avx2", "default")))
#else
#define SIM_HOT
#endif

SIM_HOT void rt_sim_fill(uint64_t key, uint64_t first, float *x, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		x[i] = (float)(int32_t)elem_bits(key, first + i) * 0x1p-23f - 1.0f;
}

/* ---- the reference ---- */

struct ref_task {
	const uint64_t *keys;
	const double *weights; /* n_c / sum n */
	uint32_t clients;
	uint64_t lo, hi;
	double *ref;
	pthread_t tid;
};

SIM_HOT static void *ref_run(void *arg)
{
	struct ref_task *t = arg;

	for (uint64_t b = t->lo; b < t->hi; b += SIM_REF_BLOCK) {
		uint64_t e = b + SIM_REF_BLOCK < t->hi ? b + SIM_REF_BLOCK : t->hi;
		double *r = t->ref;

		for (uint64_t i = b; i < e; i++)
			r[i] = 0;
		for (uint32_t c = 0; c < t->clients; c++) {
			uint64_t key = t->keys[c];
			double w = t->weights[c];

			for (uint64_t i = b; i < e; i++)
				r[i] += w * ((double)(int32_t)elem_bits(key, i) * 0x1p-23 - 1.0);
		}
	}
	return NULL;
}

int rt_sim_reference_subset(uint64_t seed, uint64_t round, uint32_t clients, const bool *include,
			    uint64_t params, unsigned threads, double *ref)
{
	struct ref_task *tasks;
	uint64_t *keys;
	double *weights, total = 0;
	unsigned started = 0;
	uint32_t n = 0;
	int err = -ENOMEM;

	for (uint32_t c = 0; c < clients; c++)
		n += !include || include[c];
	if (n == 0)
		return -ENODATA;
	if (threads == 0)
		threads = 1;
	if (threads > params / SIM_REF_BLOCK + 1)
		threads = (unsigned)(params / SIM_REF_BLOCK + 1);
	/* Only the included clients: the tasks' loops then cost what they did before. */
	keys = trib_malloc(n * sizeof(*keys));
	weights = trib_malloc(n * sizeof(*weights));
	tasks = trib_calloc(threads, sizeof(*tasks));
	if (!keys || !weights || !tasks)
		goto err_free;
	n = 0;
	for (uint32_t c = 0; c < clients; c++) {
		if (include && !include[c])
			continue;
		keys[n] = rt_sim_key(seed, round, c);
		weights[n] = rt_sim_samples(keys[n]);
		total += weights[n];
		n++;
	}
	for (uint32_t c = 0; c < n; c++)
		weights[c] /= total;
	for (unsigned t = 0; t < threads; t++) {
		tasks[t] = (struct ref_task){
			.keys = keys,
			.weights = weights,
			.clients = n,
			.lo = params * t / threads,
			.hi = params * (t + 1) / threads,
			.ref = ref,
		};
	}
	/* Task 0 runs here; the others on threads, or here too if a thread cannot start. */
	for (unsigned t = 1; t < threads; t++) {
		if (pthread_create(&tasks[t].tid, NULL, ref_run, &tasks[t]))
			break;
		started = t;
	}
	ref_run(&tasks[0]);
	for (unsigned t = started + 1; t < threads; t++)
		ref_run(&tasks[t]);
	for (unsigned t = 1; t <= started; t++)
		pthread_join(tasks[t].tid, NULL);
	err = 0;
err_free:
	trib_free(tasks);
	trib_free(weights);
	trib_free(keys);
	return err;
}

int rt_sim_reference(uint64_t seed, uint64_t round, uint32_t clients, uint64_t params,
		     unsigned threads, double *ref)
{
	return rt_sim_reference_subset(seed, round, clients, NULL, params, threads, ref);
}

static double max_abs(const double *ref, uint64_t n)
{
	double m = 0;

	for (uint64_t i = 0; i < n; i++)
		m = fmax(m, fabs(ref[i]));
	return m;
}

/* max |model - ref| over @n elements; infinity if the model holds a NaN. */
static double max_err(const double *ref, const unsigned char *model, uint64_t n)
{
	double m = 0, d;
	float f;

	for (uint64_t i = 0; i < n; i++) {
		memcpy(&f, model + 4 * i, sizeof(f));
		d = fabs((double)f - ref[i]);
		if (isnan(d))
			return INFINITY;
		m = d > m ? d : m;
	}
	return m;
}

void rt_sim_compare(const double *ref, const void *model, uint64_t n, double *err, double *limit)
{
	*err = max_err(ref, model, n);
	*limit = 1e-5 * max_abs(ref, n) + 1e-12;
}

int rt_sim_st_header(uint64_t params, char **hdr, size_t *hdr_len)
{
	struct trib_tensor t = { .dtype = SHM_DTYPE_F32, .ndim = 1, .n_elem = params };

	snprintf(t.name, sizeof(t.name), "weights");
	t.shape[0] = params;
	return trib_st_write_header(&t, 1, NULL, hdr, hdr_len);
}

/* ---- talking to the server ---- */

/* *out is owned by the caller. Returns 0, -ENOENT, -EINVAL (empty), -ENOMEM. */
static int read_first_line(const char *path, char **out)
{
	char line[1024];
	FILE *f = fopen(path, "re");
	size_t b, e;

	if (!f)
		return -ENOENT;
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	b = strspn(line, " \t\r\n");
	e = strlen(line);
	while (e > b && strchr(" \t\r\n", line[e - 1]))
		e--;
	if (e == b)
		return -EINVAL;
	*out = trib_strndup(line + b, e - b);
	return *out ? 0 : -ENOMEM;
}

int rt_sim_admin_token(const char *file, const char *data_dir, char **out)
{
	const char *env = getenv("TRIBUTARY_ADMIN_TOKEN");
	char path[4096];
	size_t b, e;

	if (file)
		return read_first_line(file, out);
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
	if ((size_t)snprintf(path, sizeof(path), "%s/admin-token", data_dir) >= sizeof(path))
		return -ENOENT;
	return read_first_line(path, out);
}

static void log_http_error(const char *what, const struct rt_http_resp *resp)
{
	char msg[512];

	rt_http_error_msg(resp, msg, sizeof(msg));
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
static int job_get(struct rt_client *c, const char *admin, const char *name, uint32_t clients,
		   uint64_t params, struct rt_sim_job *job)
{
	struct rt_http_req req = { .method = "GET", .bearer = admin };
	struct rt_http_resp resp;
	uint64_t cpr, p;
	char target[512];
	json_t *root;
	int err;

	snprintf(target, sizeof(target), "/v1/jobs/%s", name);
	req.target = target;
	err = rt_client_do(c, &req, &resp);
	if (err) {
		trib_error("GET %s: %s", target, strerror(-err));
		return err;
	}
	if (resp.status == 404)
		return -ENOENT;
	if (resp.status != 200) {
		log_http_error(target, &resp);
		return resp.status == 401 || resp.status == 403 ? -EACCES : -EPROTO;
	}
	root = json_loadb(resp.body, resp.body_len, 0, NULL);
	if (!root || !json_u64(root, "clients_per_round", &cpr) || !json_u64(root, "params", &p) ||
	    !json_u64(root, "round", &job->round) || !json_u64(root, "received", &job->received)) {
		trib_error("GET %s: unexpected answer: %.200s", target, resp.body);
		json_decref(root);
		return -EPROTO;
	}
	json_decref(root);
	if (cpr != clients || p != params) {
		trib_error("job %s exists with clients_per_round %" PRIu64 " and params %" PRIu64
			   ", not %u and %" PRIu64,
			   name, cpr, p, clients, params);
		return -EEXIST;
	}
	return 0;
}

/* Returns 0, -EEXIST (someone else created it meanwhile), -EACCES, -EPROTO. */
static int job_create(struct rt_client *c, const char *admin, const char *name, uint32_t clients,
		      uint64_t params, struct rt_sim_job *job)
{
	struct rt_http_req req = { .method = "POST", .target = "/v1/jobs", .bearer = admin,
				   .headers = "Content-Type: application/json\r\n" };
	struct rt_http_resp resp;
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
	err = rt_client_do(c, &req, &resp);
	if (err) {
		trib_error("POST /v1/jobs: %s", strerror(-err));
		return err;
	}
	if (resp.status == 409)
		return -EEXIST;
	if (resp.status != 201 && resp.status != 200) {
		log_http_error("POST /v1/jobs", &resp);
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

int rt_sim_job_ensure(struct rt_client *c, const char *admin, const char *name, uint32_t clients,
		      uint64_t params, struct rt_sim_job *job)
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

int rt_sim_post_update(struct rt_client *c, const struct rt_sim_update *u,
		       struct rt_http_resp *resp, unsigned *retries)
{
	struct rt_http_req req = { .method = "POST" };
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
	iov[n++] = (struct iovec){ .iov_base = (void *)u->data, .iov_len = u->params * 4 };
	req.target = target;
	req.bearer = u->token && *u->token ? u->token : NULL;
	req.headers = headers;
	req.body = iov;
	req.body_iovcnt = n;
	return rt_client_do_retry(c, &req, SIM_RETRY_WAIT_S, resp, retries);
}

int rt_sim_fetch_model(struct rt_client *c, const char *job, const char *token, uint64_t version,
		       struct rt_http_resp *resp)
{
	struct rt_http_req req = { .method = "GET", .bearer = token && *token ? token : NULL };
	char target[512];
	int err, polls;

	if (version == 0)
		return -EINVAL;
	snprintf(target, sizeof(target), "/v1/jobs/%s/model?after=%" PRIu64, job, version - 1);
	req.target = target;
	for (polls = 0; polls < SIM_MAX_POLLS; polls++) {
		err = rt_client_do(c, &req, resp);
		if (err) {
			trib_error("GET %s: %s", target, strerror(-err));
			return err;
		}
		if (resp->status != 304)
			break;
	}
	if (resp->status == 304) {
		trib_error("GET %s: no model after %d long polls", target, SIM_MAX_POLLS);
		return -ETIMEDOUT;
	}
	if (resp->status != 200) {
		log_http_error(target, resp);
		return -EPROTO;
	}
	/* No header: trust the server's answer to ?after. A newer version: ask for ours. */
	if (resp->round < 0 || (uint64_t)resp->round == version)
		return 0;
	snprintf(target, sizeof(target), "/v1/jobs/%s/model?round=%" PRIu64, job, version);
	err = rt_client_do(c, &req, resp);
	if (err) {
		trib_error("GET %s: %s", target, strerror(-err));
		return err;
	}
	if (resp->status == 404)
		return -ENOENT;
	if (resp->status != 200) {
		log_http_error(target, resp);
		return -EPROTO;
	}
	return 0;
}

/* ---- gateways: one per node of a cluster, one or more per run ---- */

/* Most node names a run tells apart; more would be a misbehaving server. */
#define SIM_MAX_NODES 1024
#define SIM_NODE_NONE UINT16_MAX
#define SIM_NODE_NAME 64
/* A gateway that failed at connection level is tried after the others for this long. */
#define SIM_DOWN_NS 5000000000ull
/* Period of GET /rounds/r while a multi-node round's model is awaited. */
#define SIM_ROUNDS_POLL_NS 300000000ull

struct sim_gw {
	const char *url;             /* o->urls[i] */
	_Atomic uint64_t down_until; /* ns: until then the gateway is tried last; 0 when up */
	_Atomic uint32_t node;       /* node named by its last 202, SIM_NODE_NONE until one did */
};

/* What the threads of one run share. Allocated by sim_run, which owns all of it. */
struct sim_run {
	const struct rt_sim_opts *o;
	uint32_t ngw;
	struct sim_gw gw[RT_SIM_MAX_URLS];
	_Atomic bool multi;     /* a 202 named its node: a multi-node cluster */
	_Atomic bool no_rounds; /* GET /rounds/r answered 404: never asked again */

	/*
	 * Node names, interned. A name is written before nnodes counts it, under
	 * the lock; whoever got an id through the lock, a joined thread or the
	 * same thread reads node[id] without it (names never change).
	 */
	pthread_mutex_t nodes_lock;
	uint32_t nnodes;
	bool nodes_full; /* warned once that a name did not fit */
	char node[SIM_MAX_NODES][SIM_NODE_NAME];

	/* One client per gateway, opened on first use. */
	struct rt_client *mconns[RT_SIM_MAX_URLS]; /* main thread: admin calls, model polls */
	struct rt_client *pconns[RT_SIM_MAX_URLS]; /* the poller (then main): /rounds, resends */
	float *pbuf;        /* the poller's update buffer, allocated on first use */
	struct sim_ack *acks; /* o->clients entries, reset each round */
	bool *include;      /* o->clients flags: the updates the round's model folds */
	json_t *report;     /* round objects for --report-json, NULL without it */
};

/* Per client and round: which node acknowledged its update. */
struct sim_ack {
	uint16_t node;  /* node of the 202 that counts, SIM_NODE_NONE: unnamed (single node) */
	uint8_t gw;     /* gateway that gave that 202 */
	uint8_t flags;  /* SIM_ACK_* */
};

#define SIM_ACK_LOST 1u     /* a node that acknowledged it was lost for the round */
#define SIM_ACK_CUR_LOST 2u /* the node of the 202 that counts now is lost: not folded */
#define SIM_ACK_RESENT 4u   /* resent after a loss and accepted again */
#define SIM_ACK_FAILED 8u   /* its resend failed: not tried again */
#define SIM_ACK_REFUSED 16u /* 409: the round closed without it (a node was lost; see below) */

_Static_assert(RT_SIM_MAX_URLS <= UINT8_MAX, "sim_ack.gw holds a gateway index");
_Static_assert(SIM_MAX_NODES < SIM_NODE_NONE, "sim_ack.node holds a node id");

/* Connection-level failures: the request may go to another gateway instead. */
static bool conn_failed(int err)
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
		return true;
	default:
		return false;
	}
}

/* Id of node @name, interned on first sight; SIM_NODE_NONE if the table is full. */
static uint16_t node_intern(struct sim_run *run, const char *name)
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
static uint16_t ack_node(struct sim_run *run, const struct rt_http_resp *resp)
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
static void gw_saw_node(struct sim_run *run, uint32_t g, uint16_t node)
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
static uint32_t gw_order(struct sim_run *run, uint32_t first, const bool *avoid, uint32_t *order)
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

typedef int (*gw_op_fn)(struct rt_client *c, void *ctx);

/*
 * Run @op on the client of gateway @first in @conns (the caller's, one per
 * gateway, opened here on first use and owned by the run), and again on the
 * next gateways while it fails at connection level: the gateway's node may be
 * dead, another one answers for the same job. @what names the call in the log.
 * *gw_out (may be NULL) is the gateway that answered. With one gateway this is
 * just @op. Returns @op's result, the last connection error, or -EHOSTUNREACH
 * when @avoid leaves no gateway.
 */
static int gw_call(struct sim_run *run, struct rt_client **conns, uint32_t first,
		   const bool *avoid, const char *what, gw_op_fn op, void *ctx, uint32_t *gw_out)
{
	uint32_t order[RT_SIM_MAX_URLS], n, g;
	const char *msg;
	int err = -EHOSTUNREACH;

	n = gw_order(run, first, avoid, order);
	for (uint32_t k = 0; k < n; k++) {
		g = order[k];
		err = 0;
		if (!conns[g]) {
			err = rt_client_open(run->gw[g].url, &conns[g]);
			if (err == -ENOMEM || err == -EINVAL || (err && run->ngw == 1))
				return err;
		}
		if (!err) {
			err = op(conns[g], ctx);
			if (!conn_failed(err) || run->ngw == 1) {
				if (gw_out)
					*gw_out = g;
				if (!err && atomic_exchange(&run->gw[g].down_until, 0))
					trib_info("gateway %s answers again", run->gw[g].url);
				return err;
			}
		}
		atomic_store(&run->gw[g].down_until, trib_now_ns() + SIM_DOWN_NS);
		msg = err == -ENOENT ? "host does not resolve" : strerror(-err);
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

struct post_ctx {
	const struct rt_sim_update *u;
	struct rt_http_resp *resp;
	unsigned retries; /* 503 resends, over all gateways tried */
};

static int post_op(struct rt_client *c, void *arg)
{
	struct post_ctx *p = arg;
	unsigned r = 0;
	int err;

	err = rt_sim_post_update(c, p->u, p->resp, &r);
	p->retries += r;
	return err;
}

struct job_ctx {
	const char *admin;
	const struct rt_sim_opts *o;
	struct rt_sim_job *job;
};

static int job_op(struct rt_client *c, void *arg)
{
	struct job_ctx *j = arg;

	return rt_sim_job_ensure(c, j->admin, j->o->job, j->o->clients, j->o->params, j->job);
}

struct model_ctx {
	const char *job;
	const char *token;
	uint64_t version;
	struct rt_http_resp *resp;
};

static int model_op(struct rt_client *c, void *arg)
{
	struct model_ctx *m = arg;

	return rt_sim_fetch_model(c, m->job, m->token, m->version, m->resp);
}

struct get_ctx {
	struct rt_http_req req;
	struct rt_http_resp *resp;
};

static int get_op(struct rt_client *c, void *arg)
{
	struct get_ctx *g = arg;

	return rt_client_do(c, &g->req, g->resp);
}

/* ---- rounds of a multi-node cluster ---- */

/* One answer of GET /v1/jobs/J/rounds/R. */
struct sim_round_info {
	char state[16];           /* "open", "closed" or "done" */
	bool lost[SIM_MAX_NODES]; /* by node id: in lost_nodes */
	uint32_t nlost;
	json_t *top, *edges;      /* owned references, NULL when absent */
};

static void round_info_free(struct sim_round_info *info)
{
	json_decref(info->top);
	json_decref(info->edges);
	info->top = info->edges = NULL;
}

/*
 * GET /v1/jobs/J/rounds/R on the first gateway of @conns that answers, into
 * *info (release with round_info_free). Returns 0, -ENOENT (404: a server
 * without the endpoint), -EPROTO (another status or an answer that does not
 * parse; logged if @log), or a client error.
 */
static int rounds_get(struct sim_run *run, struct rt_client **conns, const char *token,
		      uint64_t round, bool log, struct sim_round_info *info)
{
	struct rt_http_resp resp;
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
	err = gw_call(run, conns, 0, NULL, what, get_op, &g, NULL);
	if (err)
		return err;
	if (resp.status == 404)
		return -ENOENT;
	if (resp.status != 200) {
		if (log)
			log_http_error(target, &resp);
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
static void rounds_unsupported(struct sim_run *run, uint64_t round)
{
	if (!atomic_exchange(&run->no_rounds, true))
		trib_info("GET /v1/jobs/%s/rounds/%" PRIu64 ": 404, the server has no rounds "
			  "endpoint: lost updates cannot be seen", run->o->job, round);
}

/* ---- one run ---- */

/* What the workers of one round share. */
struct sim_round {
	struct sim_run *run;
	const struct rt_sim_opts *o;
	const char *token;
	uint64_t round;
	uint32_t index; /* 1-based round of this run, for the progress bar */
	const char *st_hdr;
	size_t st_hdr_len;
	bool tty;

	_Atomic uint32_t next;     /* next client index to take */
	_Atomic uint32_t finished; /* accepted + failed */
	_Atomic uint32_t accepted;
	_Atomic uint32_t failed;
	_Atomic uint32_t moved;    /* updates that went to another gateway than their own */
	_Atomic uint32_t conflicts; /* updates refused with 409 (round mismatch) */
	_Atomic uint32_t refused;   /* of those, in a cluster: the round closed without them */
	_Atomic bool abort;        /* an update failed: the round cannot close, stop sending */
	_Atomic uint64_t retries;
	_Atomic uint64_t bytes;
	_Atomic uint64_t t_first; /* ns of the first POST */
	_Atomic uint64_t t_last;  /* ns of the last 202 */

	pthread_mutex_t lock; /* guards the fields below */
	uint64_t drawn_ns;
	uint32_t drawn_decile;
	char err[512]; /* the first failure, "" while none */

	/* Written by the poller, read by the main thread once it joined it. */
	bool answered;              /* GET /rounds/r answered at least once */
	bool resend_closed;         /* a resend found the round closed (409) */
	uint32_t resend_failed;     /* resends that got no 202 */
	char resend_err[256];       /* the first of them */
	bool lost_acked[SIM_MAX_NODES]; /* lost nodes that had acknowledged updates */
	json_t *top, *edges;        /* from the last /rounds answer, owned */
};

struct sim_worker {
	struct sim_round *r;
	struct rt_client *conns[RT_SIM_MAX_URLS]; /* owned by the run: one per gateway */
	float *buf;          /* owned by the run: one update, reused */
	pthread_t tid;
};

static void atomic_min_u64(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load(a);

	while (v < cur && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

static void atomic_max_u64(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load(a);

	while (v > cur && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

/* Caller holds r->lock. */
static void draw_progress(struct sim_round *r, uint32_t done)
{
	const struct rt_sim_opts *o = r->o;
	static const char hashes[] = "##############################";
	static const char dots[] = "..............................";
	int fill = (int)((uint64_t)done * SIM_BAR_WIDTH / o->clients);

	if (r->tty)
		fprintf(stderr, "\rround %u/%u [%.*s%.*s] %u/%u updates", r->index, o->rounds, fill,
			hashes, SIM_BAR_WIDTH - fill, dots, done, o->clients);
	else
		fprintf(stderr, "round %u/%u: %u/%u updates\n", r->index, o->rounds, done,
			o->clients);
	fflush(stderr);
}

/* On a tty redraw at most every 100 ms; elsewhere one line per 10%. Never blocks a worker. */
static void progress(struct sim_round *r, bool final)
{
	uint32_t done = atomic_load(&r->finished);
	uint64_t now = trib_now_ns();
	uint32_t decile;

	if (r->o->quiet)
		return;
	if (final)
		pthread_mutex_lock(&r->lock);
	else if (pthread_mutex_trylock(&r->lock))
		return;
	if (r->tty) {
		if (final || now - r->drawn_ns >= 100000000ull) {
			draw_progress(r, done);
			r->drawn_ns = now;
		}
	} else {
		decile = (uint32_t)((uint64_t)done * 10 / r->o->clients);
		if (decile > r->drawn_decile) {
			draw_progress(r, done);
			r->drawn_decile = decile;
		}
	}
	pthread_mutex_unlock(&r->lock);
}

static void record_failure(struct sim_round *r, uint32_t client, int err,
			   const struct rt_http_resp *resp)
{
	char msg[400];

	if (err)
		snprintf(msg, sizeof(msg), "%s", strerror(-err));
	else
		rt_http_error_msg(resp, msg, sizeof(msg));
	atomic_store(&r->abort, true);
	if (!err && resp->status == 409)
		atomic_fetch_add(&r->conflicts, 1);
	pthread_mutex_lock(&r->lock);
	/* The server's own words may already say it. */
	if (!r->err[0])
		snprintf(r->err, sizeof(r->err), "client %u: %s%s", client,
			 !err && resp->status == 409 && strncmp(msg, "round mismatch", 14)
				 ? "round mismatch: "
				 : "",
			 msg);
	pthread_mutex_unlock(&r->lock);
}

/* Client @i's update of round @r in @buf, and in *u how to send it. */
static void make_update(const struct sim_round *r, uint32_t i, float *buf, struct rt_sim_update *u)
{
	const struct rt_sim_opts *o = r->o;
	uint64_t key = rt_sim_key(o->seed, r->round, i);
	bool st = o->format == RT_SIM_SAFETENSORS || (o->format == RT_SIM_MIXED && (i & 1));

	*u = (struct rt_sim_update){
		.job = o->job,
		.token = r->token,
		.round = r->round,
		.samples = rt_sim_samples(key),
		.data = buf,
		.params = o->params,
		.st_hdr = st ? r->st_hdr : NULL,
		.st_hdr_len = st ? r->st_hdr_len : 0,
	};
	rt_sim_fill(key, 0, buf, o->params);
}

static void *worker_run(void *arg)
{
	struct sim_worker *w = arg;
	struct sim_round *r = w->r;
	struct sim_run *run = r->run;
	const struct rt_sim_opts *o = r->o;
	struct rt_http_resp resp;
	struct rt_sim_update u;
	struct post_ctx pc = { .u = &u, .resp = &resp };
	uint64_t t0, t1;
	uint32_t i, g = 0;
	char what[64];
	int err;

	while (!atomic_load(&r->abort)) {
		i = atomic_fetch_add(&r->next, 1);
		if (i >= o->clients)
			break;
		make_update(r, i, w->buf, &u);
		snprintf(what, sizeof(what), "client %u's update", i);

		pc.retries = 0;
		t0 = trib_now_ns();
		atomic_min_u64(&r->t_first, t0);
		err = gw_call(run, w->conns, i % run->ngw, NULL, what, post_op, &pc, &g);
		t1 = trib_now_ns();

		atomic_fetch_add(&r->retries, pc.retries);
		if (!err && resp.status == 202) {
			uint16_t node = ack_node(run, &resp);

			run->acks[i] = (struct sim_ack){ .node = node, .gw = (uint8_t)g };
			gw_saw_node(run, g, node);
			if (g != i % run->ngw)
				atomic_fetch_add(&r->moved, 1);
			atomic_fetch_add(&r->accepted, 1);
			atomic_fetch_add(&r->bytes, u.st_hdr_len + o->params * 4);
			atomic_max_u64(&r->t_last, t1);
		} else if (!err && resp.status == 409 && atomic_load(&run->multi)) {
			/*
			 * A cluster closed the round without this update. That happens when
			 * a node counted updates and died before answering: their clients
			 * sent them again elsewhere, so the round filled early until the
			 * dead node's counts are dropped. The update is in no model: it is
			 * left out of the reference, and the round is judged at its end.
			 */
			run->acks[i].flags |= SIM_ACK_REFUSED;
			atomic_fetch_add(&r->conflicts, 1);
			atomic_fetch_add(&r->refused, 1);
		} else {
			atomic_fetch_add(&r->failed, 1);
			record_failure(r, i, err, &resp);
		}
		atomic_fetch_add(&r->finished, 1);
		progress(r, false);
	}
	return NULL;
}

/* Run the workers of one round; returns when all are done. 0 or -EAGAIN (no thread). */
static int run_workers(struct sim_worker *w, uint32_t nw)
{
	uint32_t started = 0;
	int err = 0;

	for (uint32_t t = 0; t < nw; t++) {
		if (pthread_create(&w[t].tid, NULL, worker_run, &w[t])) {
			err = -EAGAIN;
			atomic_store(&w[0].r->abort, true);
			break;
		}
		started++;
	}
	for (uint32_t t = 0; t < started; t++)
		pthread_join(w[t].tid, NULL);
	return err;
}

/*
 * Take in a /rounds answer: mark the updates whose counting 202 came from a
 * lost node, keep its top and edges (*info gives them up).
 */
static void round_note(struct sim_round *r, struct sim_round_info *info)
{
	struct sim_ack *acks = r->run->acks;

	r->answered = true;
	json_decref(r->top);
	json_decref(r->edges);
	r->top = info->top;
	r->edges = info->edges;
	info->top = info->edges = NULL;
	if (!info->nlost)
		return;
	for (uint32_t c = 0; c < r->o->clients; c++) {
		uint16_t n = acks[c].node;

		if (n == SIM_NODE_NONE || !info->lost[n])
			continue;
		acks[c].flags |= SIM_ACK_LOST | SIM_ACK_CUR_LOST;
		r->lost_acked[n] = true;
	}
}

/*
 * The round is still open: send again, through a gateway whose node is not
 * lost, every update whose counting 202 came from a lost node. Runs on the
 * poller thread with the run's pconns and pbuf.
 */
static void resend_lost(struct sim_round *r, const struct sim_round_info *info)
{
	struct sim_run *run = r->run;
	struct sim_ack *acks = run->acks;
	struct rt_http_resp resp;
	struct rt_sim_update u;
	struct post_ctx pc = { .u = &u, .resp = &resp };
	bool avoid[RT_SIM_MAX_URLS] = { false };
	char what[96], msg[200];
	uint32_t g = 0, live = 0;
	int err;

	/* A gateway whose node is lost would only lose the update again. */
	for (uint32_t k = 0; k < run->ngw; k++) {
		uint32_t n = atomic_load(&run->gw[k].node);

		avoid[k] = n != SIM_NODE_NONE && info->lost[n];
		live += !avoid[k];
	}
	if (!live) {
		snprintf(msg, sizeof(msg), "every gateway of --url is on a lost node");
		for (uint32_t c = 0; c < r->o->clients; c++) {
			if (!(acks[c].flags & SIM_ACK_CUR_LOST) || (acks[c].flags & SIM_ACK_FAILED))
				continue;
			acks[c].flags |= SIM_ACK_FAILED;
			if (!r->resend_failed++) {
				trib_error("round %" PRIu64 ": cannot resend lost updates: %s",
					   r->round, msg);
				snprintf(r->resend_err, sizeof(r->resend_err), "%s", msg);
			}
		}
		return;
	}
	for (uint32_t c = 0; c < r->o->clients && !r->resend_closed; c++) {
		struct sim_ack *a = &acks[c];

		if (!(a->flags & SIM_ACK_CUR_LOST) || (a->flags & SIM_ACK_FAILED))
			continue;
		make_update(r, c, run->pbuf, &u);
		snprintf(what, sizeof(what), "round %" PRIu64 ": resend of client %u's update",
			 r->round, c);
		pc.retries = 0;
		err = gw_call(run, run->pconns, (a->gw + 1u) % run->ngw, avoid, what, post_op, &pc,
			      &g);
		if (!err && resp.status == 202) {
			uint16_t node = ack_node(run, &resp);

			gw_saw_node(run, g, node);
			a->node = node;
			a->gw = (uint8_t)g;
			a->flags = (uint8_t)((a->flags & ~SIM_ACK_CUR_LOST) | SIM_ACK_RESENT);
			continue;
		}
		if (!err && resp.status == 409) {
			/* Closed since the answer said open: the rest cannot rejoin either. */
			trib_info("%s: the round closed meanwhile", what);
			r->resend_closed = true;
			break;
		}
		if (err)
			snprintf(msg, sizeof(msg), "%s", strerror(-err));
		else
			rt_http_error_msg(&resp, msg, sizeof(msg));
		trib_error("%s: %s", what, msg);
		a->flags |= SIM_ACK_FAILED;
		if (!r->resend_failed++)
			snprintf(r->resend_err, sizeof(r->resend_err), "client %u: %s", c, msg);
	}
}

/* Polls GET /rounds/r while the main thread waits for the round's model. */
struct sim_poller {
	struct sim_round *r;
	pthread_t tid;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when stop is set */
	bool stop;           /* guarded by lock */
};

/* Sleep one poll period; false once the poller is told to stop. */
static bool poller_wait(struct sim_poller *p)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += (long)SIM_ROUNDS_POLL_NS;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&p->lock);
	while (!p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &ts) != ETIMEDOUT)
		;
	stop = p->stop;
	pthread_mutex_unlock(&p->lock);
	return !stop;
}

static void *poller_run(void *arg)
{
	struct sim_poller *p = arg;
	struct sim_round *r = p->r;
	struct sim_run *run = r->run;
	struct sim_round_info info;
	bool warned = false;
	int err;

	while (poller_wait(p)) {
		err = rounds_get(run, run->pconns, r->token, r->round, !warned, &info);
		if (err == -ENOENT) {
			rounds_unsupported(run, r->round);
			break;
		}
		if (err) {
			if (!warned)
				trib_warn("round %" PRIu64 ": GET /rounds: %s; polling on (said once)",
					  r->round, strerror(-err));
			warned = true;
			continue;
		}
		round_note(r, &info);
		if (info.nlost && !strcmp(info.state, "open"))
			resend_lost(r, &info);
		round_info_free(&info);
	}
	return NULL;
}

/* Start polling for round @r. Returns 0, -ENOMEM, -EAGAIN (no thread). */
static int poller_start(struct sim_poller *p, struct sim_round *r)
{
	pthread_condattr_t ca;
	struct sim_run *run = r->run;
	int err = -EAGAIN;

	if (!run->pbuf) {
		run->pbuf = trib_malloc(r->o->params * sizeof(float));
		if (!run->pbuf)
			return -ENOMEM;
	}
	memset(p, 0, sizeof(*p));
	p->r = r;
	if (pthread_condattr_init(&ca))
		return -ENOMEM;
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_cond_init(&p->cond, &ca)) {
		err = -ENOMEM;
		goto err_attr;
	}
	pthread_mutex_init(&p->lock, NULL);
	if (pthread_create(&p->tid, NULL, poller_run, p))
		goto err_cond;
	pthread_condattr_destroy(&ca);
	return 0;

err_cond:
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
err_attr:
	pthread_condattr_destroy(&ca);
	return err;
}

/* Stop and join the poller; a resend under way finishes first. */
static void poller_stop(struct sim_poller *p)
{
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->tid, NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
}

/* Check the model in @resp against @ref (*err_out, *limit as rt_sim_compare). 0 or -EPROTO. */
static int check_model(const struct rt_http_resp *resp, const double *ref, uint64_t params,
		       double *err_out, double *limit)
{
	const unsigned char *data;
	const char *why = NULL;
	struct trib_st st = { 0 };
	uint64_t off = 0;
	double e = 0;
	int err;

	err = trib_st_parse(resp->body, resp->body_len, &st, &why);
	if (err) {
		trib_error("model is not valid safetensors: %s", why ? why : strerror(-err));
		return -EPROTO;
	}
	/* The flat model is every tensor in file order; this job has one, "weights". */
	for (size_t t = 0; t < st.ntensors; t++) {
		const struct trib_tensor *ts = &st.tensors[t];

		if (ts->dtype != SHM_DTYPE_F32 || off + ts->n_elem > params) {
			trib_error("model tensor '%s' is not F32 or does not fit %" PRIu64
				   " params", ts->name, params);
			err = -EPROTO;
			goto out_free;
		}
		data = (const unsigned char *)resp->body + st.data_off + ts->data_begin;
		e = fmax(e, max_err(ref + off, data, ts->n_elem));
		off += ts->n_elem;
	}
	if (off != params) {
		trib_error("model holds %" PRIu64 " elements, expected %" PRIu64, off, params);
		err = -EPROTO;
		goto out_free;
	}
	*err_out = e;
	*limit = 1e-5 * max_abs(ref, params) + 1e-12;
out_free:
	trib_st_free(&st);
	return err;
}

struct sim_totals {
	uint64_t accepted;
	uint64_t retries;
	uint32_t rounds_ok;
	uint64_t refused; /* 409s a lost node explains (see worker_run) */
};

/* What a round's report and lines say about lost updates. */
struct sim_lost {
	uint32_t lost;     /* updates acknowledged by a node lost for the round */
	uint32_t resent;   /* of those, resent and folded */
	uint32_t excluded; /* of those, left out of the reference */
	uint32_t folded;   /* updates the model folds */
};

/* Fill run->include from the acks and count what was lost. */
static void round_tally(struct sim_round *r, struct sim_lost *l)
{
	struct sim_run *run = r->run;

	memset(l, 0, sizeof(*l));
	for (uint32_t c = 0; c < r->o->clients; c++) {
		uint8_t f = run->acks[c].flags;

		run->include[c] = !(f & (SIM_ACK_CUR_LOST | SIM_ACK_REFUSED));
		l->folded += run->include[c];
		if (!(f & SIM_ACK_LOST))
			continue;
		l->lost++;
		if (f & SIM_ACK_CUR_LOST)
			l->excluded++;
		else
			l->resent++;
	}
}

/* "round R: K updates acknowledged by lost node(s) n2,n3: ..." when anything was lost. */
static void print_lost(const struct sim_round *r, const struct sim_lost *l)
{
	const struct sim_run *run = r->run;
	const char *why = r->resend_failed ? "resend failed" : "round closed";
	char names[512] = "";
	size_t len = 0;

	if (!l->lost)
		return;
	for (uint32_t n = 0; n < run->nnodes && n < SIM_MAX_NODES; n++) {
		if (!r->lost_acked[n] || len >= sizeof(names))
			continue;
		len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", len ? "," : "",
					run->node[n]);
	}
	if (!l->excluded)
		printf("round %" PRIu64 ": %u updates acknowledged by lost node(s) %s: resent %u\n",
		       r->round, l->lost, names, l->resent);
	else if (!l->resent)
		printf("round %" PRIu64 ": %u updates acknowledged by lost node(s) %s: not resent "
		       "(%s): excluded from the reference\n", r->round, l->lost, names, why);
	else
		printf("round %" PRIu64 ": %u updates acknowledged by lost node(s) %s: resent %u, "
		       "%u not resent (%s): excluded from the reference\n", r->round, l->lost,
		       names, l->resent, l->excluded, why);
}

/*
 * How the round's folded updates spread over the nodes, as a JSON object
 * {"n1": 34, ...} (NULL when no 202 named a node, or out of memory), logged
 * on one line.
 */
static json_t *round_acks(const struct sim_round *r)
{
	const struct sim_run *run = r->run;
	uint32_t *count, nn = run->nnodes;
	char line[1024];
	size_t len = 0;
	json_t *acks;

	if (!atomic_load(&run->multi) || !nn)
		return NULL;
	count = trib_calloc(nn, sizeof(*count));
	acks = count ? json_object() : NULL;
	if (!acks) {
		trib_free(count);
		return NULL;
	}
	for (uint32_t c = 0; c < r->o->clients; c++) {
		uint16_t n = run->acks[c].node;

		if (n < nn && !(run->acks[c].flags & SIM_ACK_CUR_LOST))
			count[n]++;
	}
	for (uint32_t n = 0; n < nn; n++) {
		if (!count[n])
			continue;
		json_object_set_new(acks, run->node[n], json_integer(count[n]));
		if (len < sizeof(line))
			len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s %u",
						len ? ", " : "", run->node[n], count[n]);
	}
	if (len)
		trib_info("round %" PRIu64 ": folded updates by node: %s", r->round, line);
	trib_free(count);
	return acks;
}

/* Append round @r's object to the report (a no-op without --report-json). */
static void report_round(struct sim_round *r, double secs, const struct sim_lost *l, bool ok,
			 double max_err_v, bool checked)
{
	struct sim_run *run = r->run;
	json_t *o, *acks = round_acks(r);

	if (!run->report)
		goto out;
	o = json_pack("{s:I, s:f, s:I, s:I, s:I, s:b}", "round", (json_int_t)r->round, "seconds",
		      secs, "updates", (json_int_t)l->folded, "lost", (json_int_t)l->lost,
		      "resent", (json_int_t)l->resent, "ok", ok);
	if (!o)
		goto out;
	json_object_set_new(o, "max_err", checked && isfinite(max_err_v) ? json_real(max_err_v)
									 : json_null());
	if (acks)
		json_object_set(o, "acks", acks);
	if (r->answered) {
		json_object_set(o, "top", r->top ? r->top : json_null());
		json_object_set(o, "edges", r->edges ? r->edges : json_null());
	}
	json_array_append_new(run->report, o);
out:
	json_decref(acks);
}

/*
 * One round. Returns 0 if every update was accepted and the model matched,
 * -EDOM if only the model did not match (the next round can still run), -EIO
 * if the round did not complete.
 */
static int sim_round(const struct rt_sim_opts *o, struct sim_worker *w, struct sim_round *r,
		     double *ref, unsigned ncpu, struct sim_totals *tot)
{
	struct sim_run *run = r->run;
	struct rt_http_resp resp;
	struct model_ctx mc = { .job = o->job, .token = r->token, .version = r->round + 1,
				.resp = &resp };
	struct sim_round_info info;
	struct sim_poller poller;
	struct sim_lost lost = { 0 };
	double secs, up_s, e = 0, limit = 0;
	uint64_t t_model, version = r->round + 1;
	bool ok, polling = false;
	uint32_t moved, refused;
	char what[64];
	int err;

	for (uint32_t c = 0; c < o->clients; c++)
		run->acks[c] = (struct sim_ack){ .node = SIM_NODE_NONE };
	err = run_workers(w, o->connections);
	progress(r, true);
	if (!o->quiet && r->tty)
		fputs("\r\033[K", stderr);
	tot->accepted += atomic_load(&r->accepted);
	tot->refused += atomic_load(&r->moved) ? atomic_load(&r->refused) : 0;
	tot->retries += atomic_load(&r->retries);
	moved = atomic_load(&r->moved);
	if (moved)
		printf("round %" PRIu64 ": %u update%s went to another gateway than their own "
		       "(it refused or dropped connections)\n", r->round, moved,
		       moved == 1 ? "" : "s");
	refused = atomic_load(&r->refused);
	/* Refusals are explained only by connections a dying node dropped (moved updates). */
	if (err || atomic_load(&r->accepted) + (moved ? refused : 0) != o->clients ||
	    atomic_load(&r->accepted) == 0) {
		printf("round %" PRIu64 ": FAILED: %u/%u updates accepted, %u failed: %s\n",
		       r->round, atomic_load(&r->accepted), o->clients,
		       atomic_load(&r->failed) + (moved ? 0 : refused),
		       r->err[0] ? r->err :
		       refused ? "refused with 409 (round closed) although no gateway dropped a "
				 "connection" : "cannot start worker threads");
		if (moved && atomic_load(&r->conflicts))
			printf("round %" PRIu64 ": the round closed before all its updates arrived; "
			       "some went to another gateway after a dropped connection: if a node "
			       "died after counting one but before its 202, the cluster counted it "
			       "twice\n", r->round);
		fflush(stdout);
		lost.folded = atomic_load(&r->accepted);
		secs = atomic_load(&r->t_first) == UINT64_MAX
			       ? 0
			       : (double)(trib_now_ns() - atomic_load(&r->t_first)) / 1e9;
		report_round(r, secs, &lost, false, NAN, false);
		return -EIO;
	}

	if (refused)
		printf("round %" PRIu64 ": %u update%s refused (409): the round filled before them, "
		       "as a node that died had counted updates it never answered (their clients "
		       "sent them again elsewhere); left out of the reference\n", r->round, refused,
		       refused == 1 ? "" : "s");

	/* A multi-node cluster may lose acknowledged updates while we wait: watch the round. */
	if (atomic_load(&run->multi) && !atomic_load(&run->no_rounds)) {
		err = poller_start(&poller, r);
		if (err)
			trib_warn("round %" PRIu64 ": cannot poll GET /rounds (%s): lost updates "
				  "will not be resent", r->round, strerror(-err));
		polling = !err;
	}
	snprintf(what, sizeof(what), "model v=%" PRIu64, version);
	err = gw_call(run, run->mconns, 0, NULL, what, model_op, &mc, NULL);
	t_model = trib_now_ns();
	if (polling)
		poller_stop(&poller);
	if (err) {
		/* What was lost may be why the round never closed: say it first. */
		round_tally(r, &lost);
		print_lost(r, &lost);
		if (r->resend_failed)
			printf("round %" PRIu64 ": %u resends got no 202 (first: %s)\n", r->round,
			       r->resend_failed, r->resend_err);
		printf("round %" PRIu64 ": FAILED: no model v=%" PRIu64 ": %s\n", r->round, version,
		       strerror(-err));
		fflush(stdout);
		report_round(r, (double)(t_model - atomic_load(&r->t_first)) / 1e9, &lost, false,
			     NAN, false);
		return -EIO;
	}
	/*
	 * A node can be declared lost for the round after it closed: the last
	 * answer, after the model, decides what the model folds. pconns, not
	 * mconns: the model's body lives in an mconns client.
	 */
	if (atomic_load(&run->multi) && !atomic_load(&run->no_rounds)) {
		err = rounds_get(run, run->pconns, r->token, r->round, true, &info);
		if (!err) {
			round_note(r, &info);
			round_info_free(&info);
		} else if (err == -ENOENT) {
			rounds_unsupported(run, r->round);
		} else {
			trib_warn("round %" PRIu64 ": no final GET /rounds (%s): the reference "
				  "leaves out only the losses seen while polling",
				  r->round, strerror(-err));
		}
	}
	round_tally(r, &lost);
	print_lost(r, &lost);
	if (r->resend_failed)
		printf("round %" PRIu64 ": FAILED: %u resends got no 202 (first: %s)\n", r->round,
		       r->resend_failed, r->resend_err);

	secs = (double)(t_model - atomic_load(&r->t_first)) / 1e9;
	up_s = (double)(atomic_load(&r->t_last) - atomic_load(&r->t_first)) / 1e9;
	if (up_s <= 0)
		up_s = 1e-9;

	if (o->no_check) {
		printf("round %" PRIu64 ": %u updates in %.3f s (%.1f updates/s, %.1f MB/s upload), "
		       "model v=%" PRIu64 ", not checked (--no-check)\n", r->round, o->clients, secs,
		       o->clients / up_s, (double)atomic_load(&r->bytes) / 1e6 / up_s, version);
		fflush(stdout);
		ok = !r->resend_failed;
		report_round(r, secs, &lost, ok, NAN, false);
		if (!ok)
			return -EDOM;
		tot->rounds_ok++;
		return 0;
	}
	/* After the timing: regenerate the folded updates and check the model against their mean. */
	err = rt_sim_reference_subset(o->seed, r->round, o->clients, run->include, o->params, ncpu,
				      ref);
	if (!err)
		err = check_model(&resp, ref, o->params, &e, &limit);
	ok = !err && e <= limit && !r->resend_failed;
	if (err == -ENODATA)
		trib_error("round %" PRIu64 ": every update was lost: no reference to check "
			   "the model against", r->round);
	else if (err && err != -EPROTO)
		trib_error("round %" PRIu64 ": reference: %s", r->round, strerror(-err));
	printf("round %" PRIu64 ": %u updates in %.3f s (%.1f updates/s, %.1f MB/s upload), "
	       "model v=%" PRIu64 ", max|err| = %.3g (limit %.3g) %s\n",
	       r->round, o->clients, secs, o->clients / up_s,
	       (double)atomic_load(&r->bytes) / 1e6 / up_s, version, err ? NAN : e, limit,
	       ok ? "OK" : "MISMATCH");
	fflush(stdout);
	report_round(r, secs, &lost, ok, err ? NAN : e, true);
	if (!ok)
		return -EDOM;
	tot->rounds_ok++;
	return 0;
}

/* Write the --report-json file. Returns 0 or -EIO (logged). */
static int write_report(const char *path, json_t *rounds, bool ok)
{
	const size_t flags = JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9);
	json_t *root = json_pack("{s:O, s:b}", "rounds", rounds, "ok", ok);
	int err = 0;

	if (!root || json_dump_file(root, path, flags)) {
		trib_error("cannot write --report-json %s", path);
		err = -EIO;
	}
	json_decref(root);
	return err;
}

/* Connect the run's first connection of each worker before the clock starts. */
static int open_workers(struct sim_run *run, struct sim_worker *w, uint32_t nw)
{
	for (uint32_t t = 0; t < nw; t++) {
		uint32_t g = t % run->ngw;
		int err = rt_client_open(run->gw[g].url, &w[t].conns[g]);

		if (!err)
			continue;
		if (run->ngw == 1 || err == -ENOMEM || err == -EINVAL) {
			trib_error("cannot connect to %s: %s", run->gw[g].url, strerror(-err));
			return err;
		}
		/* A dead gateway of several is no failure: its clients go to the next. */
		if (!atomic_exchange(&run->gw[g].down_until, trib_now_ns() + SIM_DOWN_NS))
			trib_warn("gateway %s: %s; its clients send to the next gateway while it "
				  "does not answer", run->gw[g].url,
				  err == -ENOENT ? "host does not resolve" : strerror(-err));
	}
	return 0;
}

/* The run behind rt_simulate_main once the options are known. Returns the exit code. */
static int sim_run(const struct rt_sim_opts *o)
{
	struct sim_worker *w = NULL;
	struct sim_totals tot = { 0 };
	struct sim_run *run;
	struct rt_sim_job job;
	struct job_ctx jc = { .o = o, .job = &job };
	struct sim_round r;
	char *admin = NULL, *st_hdr = NULL;
	size_t st_hdr_len = 0;
	double *ref = NULL;
	uint64_t t_start;
	uint32_t nw = 0, i;
	long ncpu;
	int err, rc = 1;

	run = trib_calloc(1, sizeof(*run));
	if (!run) {
		trib_error("out of memory");
		return 1;
	}
	run->o = o;
	run->ngw = o->nurls;
	for (i = 0; i < run->ngw; i++) {
		run->gw[i].url = o->urls[i];
		atomic_init(&run->gw[i].node, SIM_NODE_NONE);
	}
	pthread_mutex_init(&run->nodes_lock, NULL);
	if (o->report_json) {
		run->report = json_array();
		if (!run->report)
			goto out;
	}

	err = rt_sim_admin_token(o->admin_token_file, o->data_dir, &admin);
	if (err == -ENOMEM)
		goto out;
	if (err && o->admin_token_file) {
		trib_error("cannot read admin token from %s", o->admin_token_file);
		goto out;
	}
	if (err)
		trib_warn("no admin token (--admin-token-file, TRIBUTARY_ADMIN_TOKEN, "
			  "%s/admin-token)", o->data_dir);
	jc.admin = admin;
	err = gw_call(run, run->mconns, 0, NULL, "job setup", job_op, &jc, NULL);
	if (err) {
		if (run->ngw == 1 && !run->mconns[0])
			trib_error("cannot connect to %s: %s", o->url, strerror(-err));
		else if (run->ngw > 1 && conn_failed(err))
			trib_error("no gateway of --url %s answered", o->url);
		goto out;
	}
	if (job.received) {
		trib_error("job %s: round %" PRIu64 " already holds %" PRIu64
			   " updates; the models could not match, use a fresh job",
			   o->job, job.round, job.received);
		goto out;
	}
	trib_info("job %s %s at round %" PRIu64 ": %u clients x %u rounds, %" PRIu64
		  " params, %u connections%s",
		  o->job, job.created ? "created" : "found", job.round, o->clients, o->rounds,
		  o->params, o->connections, run->ngw > 1 ? ", several gateways" : "");

	err = rt_sim_st_header(o->params, &st_hdr, &st_hdr_len);
	if (err) {
		trib_error("cannot build the safetensors header: %s", strerror(-err));
		goto out;
	}
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu < 1)
		ncpu = 1;
	ref = trib_malloc(o->params * sizeof(*ref));
	w = trib_calloc(o->connections, sizeof(*w));
	run->acks = trib_malloc(o->clients * sizeof(*run->acks));
	run->include = trib_malloc(o->clients * sizeof(*run->include));
	if (!ref || !w || !run->acks || !run->include) {
		trib_error("out of memory for %u connections x %" PRIu64 " params", o->connections,
			   o->params);
		goto out;
	}
	for (nw = 0; nw < o->connections; nw++) {
		w[nw].r = &r;
		w[nw].buf = trib_malloc(o->params * sizeof(float));
		if (!w[nw].buf) {
			trib_error("out of memory for update buffers");
			goto out;
		}
	}
	if (open_workers(run, w, nw))
		goto out;

	t_start = trib_now_ns();
	for (i = 0; i < o->rounds; i++) {
		memset(&r, 0, sizeof(r));
		r.run = run;
		r.o = o;
		r.token = job.token;
		r.round = job.round + i;
		r.index = i + 1;
		r.st_hdr = st_hdr;
		r.st_hdr_len = st_hdr_len;
		r.tty = isatty(STDERR_FILENO);
		atomic_init(&r.t_first, UINT64_MAX);
		pthread_mutex_init(&r.lock, NULL);
		err = sim_round(o, w, &r, ref, (unsigned)ncpu, &tot);
		pthread_mutex_destroy(&r.lock);
		json_decref(r.top);
		json_decref(r.edges);
		if (err == -EIO)
			break;
	}
	rc = tot.rounds_ok == o->rounds &&
			     tot.accepted + tot.refused == (uint64_t)o->rounds * o->clients ? 0 : 1;
	printf("simulate: %u/%u rounds OK, %" PRIu64 "/%" PRIu64 " updates accepted%s, %" PRIu64
	       " retries (503), %.3f s: %s\n",
	       tot.rounds_ok, o->rounds, tot.accepted, (uint64_t)o->rounds * o->clients,
	       tot.refused ? " (the others refused after a node was lost, above)" : "",
	       tot.retries, (double)(trib_now_ns() - t_start) / 1e9, rc ? "FAILED" : "OK");
	fflush(stdout);
out:
	if (run->report && write_report(o->report_json, run->report, rc == 0))
		rc = 1;
	for (i = 0; i < nw; i++) {
		for (uint32_t g = 0; g < run->ngw; g++)
			rt_client_close(w[i].conns[g]);
		trib_free(w[i].buf);
	}
	trib_free(w);
	trib_free(ref);
	trib_free(st_hdr);
	for (i = 0; i < run->ngw; i++) {
		rt_client_close(run->mconns[i]);
		rt_client_close(run->pconns[i]);
	}
	trib_free(run->pbuf);
	trib_free(run->acks);
	trib_free(run->include);
	json_decref(run->report);
	pthread_mutex_destroy(&run->nodes_lock);
	trib_free(run);
	trib_free(admin);
	return rc;
}

int rt_simulate_main(int argc, char **argv)
{
	struct rt_sim_opts o;
	char why[256];
	int err;

	err = rt_sim_parse_args(argc, argv, &o, why, sizeof(why));
	if (err == -ECANCELED) {
		fputs(sim_usage, stdout);
		return 0;
	}
	if (err) {
		fprintf(stderr, "tributary simulate: %s\n%s", why, sim_usage);
		return 2;
	}
	trib_log_init("simulate");
	if (o.quiet)
		trib_log_set_level(TRIB_LOG_WARN);
	return sim_run(&o);
}
