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

#include "rt_safetensors.h"
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
	"         [--url http://HOST:PORT (http://127.0.0.1:8080)]\n"
	"         [--data-dir DIR (./tributary-data)]\n"
	"         [--admin-token-file FILE] [--connections C (min(N, 16))] [--seed S (1)]\n"
	"         [--format raw|safetensors|mixed (mixed)] [--quiet] [--no-check]\n";

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

int rt_sim_parse_args(int argc, char **argv, struct rt_sim_opts *o, char *why, size_t why_len)
{
	bool have_conn = false, have_clients = false, have_rounds = false;
	char host[256];
	uint16_t port;
	uint64_t v;
	int i;

	memset(o, 0, sizeof(*o));
	o->params = 1000000;
	o->url = "http://127.0.0.1:8080";
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
			if (rt_url_parse(val, host, sizeof(host), &port))
				goto bad_value;
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

int rt_sim_reference(uint64_t seed, uint64_t round, uint32_t clients, uint64_t params,
		     unsigned threads, double *ref)
{
	struct ref_task *tasks;
	uint64_t *keys;
	double *weights, total = 0;
	unsigned started = 0;
	int err = -ENOMEM;

	if (threads == 0)
		threads = 1;
	if (threads > params / SIM_REF_BLOCK + 1)
		threads = (unsigned)(params / SIM_REF_BLOCK + 1);
	keys = trib_malloc(clients * sizeof(*keys));
	weights = trib_malloc(clients * sizeof(*weights));
	tasks = trib_calloc(threads, sizeof(*tasks));
	if (!keys || !weights || !tasks)
		goto err_free;
	for (uint32_t c = 0; c < clients; c++) {
		keys[c] = rt_sim_key(seed, round, c);
		weights[c] = rt_sim_samples(keys[c]);
		total += weights[c];
	}
	for (uint32_t c = 0; c < clients; c++)
		weights[c] /= total;
	for (unsigned t = 0; t < threads; t++) {
		tasks[t] = (struct ref_task){
			.keys = keys,
			.weights = weights,
			.clients = clients,
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
	struct rt_tensor t = { .dtype = SHM_DTYPE_F32, .ndim = 1, .n_elem = params };

	snprintf(t.name, sizeof(t.name), "weights");
	t.shape[0] = params;
	return rt_st_write_header(&t, 1, NULL, hdr, hdr_len);
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

/* ---- one run ---- */

/* What the workers of one round share. */
struct sim_round {
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
	_Atomic bool abort;        /* an update failed: the round cannot close, stop sending */
	_Atomic uint64_t retries;
	_Atomic uint64_t bytes;
	_Atomic uint64_t t_first; /* ns of the first POST */
	_Atomic uint64_t t_last;  /* ns of the last 202 */

	pthread_mutex_t lock; /* guards the fields below */
	uint64_t drawn_ns;
	uint32_t drawn_decile;
	char err[512]; /* the first failure, "" while none */
};

struct sim_worker {
	struct sim_round *r;
	struct rt_client *c; /* owned by the run, lent to the worker */
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
	pthread_mutex_lock(&r->lock);
	if (!r->err[0])
		snprintf(r->err, sizeof(r->err), "client %u: %s%s", client,
			 err ? "" : (resp->status == 409 ? "round mismatch: " : ""), msg);
	pthread_mutex_unlock(&r->lock);
}

static void *worker_run(void *arg)
{
	struct sim_worker *w = arg;
	struct sim_round *r = w->r;
	const struct rt_sim_opts *o = r->o;
	struct rt_http_resp resp;
	struct rt_sim_update u = {
		.job = o->job,
		.token = r->token,
		.round = r->round,
		.data = w->buf,
		.params = o->params,
	};
	unsigned retries;
	uint64_t key, t0, t1;
	uint32_t i;
	bool st;
	int err;

	while (!atomic_load(&r->abort)) {
		i = atomic_fetch_add(&r->next, 1);
		if (i >= o->clients)
			break;
		key = rt_sim_key(o->seed, r->round, i);
		u.samples = rt_sim_samples(key);
		rt_sim_fill(key, 0, w->buf, o->params);
		st = o->format == RT_SIM_SAFETENSORS || (o->format == RT_SIM_MIXED && (i & 1));
		u.st_hdr = st ? r->st_hdr : NULL;
		u.st_hdr_len = st ? r->st_hdr_len : 0;

		t0 = trib_now_ns();
		atomic_min_u64(&r->t_first, t0);
		err = rt_sim_post_update(w->c, &u, &resp, &retries);
		t1 = trib_now_ns();

		atomic_fetch_add(&r->retries, retries);
		if (!err && resp.status == 202) {
			atomic_fetch_add(&r->accepted, 1);
			atomic_fetch_add(&r->bytes, u.st_hdr_len + o->params * 4);
			atomic_max_u64(&r->t_last, t1);
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

/* Check the model in @resp against @ref (*err_out, *limit as rt_sim_compare). 0 or -EPROTO. */
static int check_model(const struct rt_http_resp *resp, const double *ref, uint64_t params,
		       double *err_out, double *limit)
{
	const unsigned char *data;
	const char *why = NULL;
	struct rt_st st = { 0 };
	uint64_t off = 0;
	double e = 0;
	int err;

	err = rt_st_parse(resp->body, resp->body_len, &st, &why);
	if (err) {
		trib_error("model is not valid safetensors: %s", why ? why : strerror(-err));
		return -EPROTO;
	}
	/* The flat model is every tensor in file order; this job has one, "weights". */
	for (size_t t = 0; t < st.ntensors; t++) {
		const struct rt_tensor *ts = &st.tensors[t];

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
	rt_st_free(&st);
	return err;
}

struct sim_totals {
	uint64_t accepted;
	uint64_t retries;
	uint32_t rounds_ok;
};

/*
 * One round. Returns 0 if every update was accepted and the model matched,
 * -EDOM if only the model did not match (the next round can still run), -EIO
 * if the round did not complete.
 */
static int sim_round(const struct rt_sim_opts *o, struct rt_client *mc, struct sim_worker *w,
		     struct sim_round *r, double *ref, unsigned ncpu, struct sim_totals *tot)
{
	struct rt_http_resp resp;
	double secs, up_s, e = 0, limit = 0;
	uint64_t t_model, version = r->round + 1;
	bool ok;
	int err;

	err = run_workers(w, o->connections);
	progress(r, true);
	if (!o->quiet && r->tty)
		fputs("\r\033[K", stderr);
	tot->accepted += atomic_load(&r->accepted);
	tot->retries += atomic_load(&r->retries);
	if (err || atomic_load(&r->accepted) != o->clients) {
		printf("round %" PRIu64 ": FAILED: %u/%u updates accepted, %u failed: %s\n",
		       r->round, atomic_load(&r->accepted), o->clients, atomic_load(&r->failed),
		       r->err[0] ? r->err : "cannot start worker threads");
		fflush(stdout);
		return -EIO;
	}

	err = rt_sim_fetch_model(mc, o->job, r->token, version, &resp);
	t_model = trib_now_ns();
	if (err) {
		printf("round %" PRIu64 ": FAILED: no model v=%" PRIu64 ": %s\n", r->round, version,
		       strerror(-err));
		fflush(stdout);
		return -EIO;
	}
	secs = (double)(t_model - atomic_load(&r->t_first)) / 1e9;
	up_s = (double)(atomic_load(&r->t_last) - atomic_load(&r->t_first)) / 1e9;
	if (up_s <= 0)
		up_s = 1e-9;

	if (o->no_check) {
		printf("round %" PRIu64 ": %u updates in %.3f s (%.1f updates/s, %.1f MB/s upload), "
		       "model v=%" PRIu64 ", not checked (--no-check)\n", r->round, o->clients, secs,
		       o->clients / up_s, (double)atomic_load(&r->bytes) / 1e6 / up_s, version);
		fflush(stdout);
		tot->rounds_ok++;
		return 0;
	}
	/* After the timing: regenerate every update and check the model against the mean. */
	err = rt_sim_reference(o->seed, r->round, o->clients, o->params, ncpu, ref);
	if (!err)
		err = check_model(&resp, ref, o->params, &e, &limit);
	ok = !err && e <= limit;
	if (err && err != -EPROTO)
		trib_error("round %" PRIu64 ": reference: %s", r->round, strerror(-err));
	printf("round %" PRIu64 ": %u updates in %.3f s (%.1f updates/s, %.1f MB/s upload), "
	       "model v=%" PRIu64 ", max|err| = %.3g (limit %.3g) %s\n",
	       r->round, o->clients, secs, o->clients / up_s,
	       (double)atomic_load(&r->bytes) / 1e6 / up_s, version, err ? NAN : e, limit,
	       ok ? "OK" : "MISMATCH");
	fflush(stdout);
	if (!ok)
		return -EDOM;
	tot->rounds_ok++;
	return 0;
}

/* The run behind rt_simulate_main once the options are known. Returns the exit code. */
static int sim_run(const struct rt_sim_opts *o)
{
	struct sim_worker *w = NULL;
	struct sim_totals tot = { 0 };
	struct rt_client *mc = NULL;
	struct rt_sim_job job;
	struct sim_round r;
	char *admin = NULL, *st_hdr = NULL;
	size_t st_hdr_len = 0;
	double *ref = NULL;
	uint64_t t_start;
	uint32_t nw = 0, i;
	long ncpu;
	int err, rc = 1;

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
	err = rt_client_open(o->url, &mc);
	if (err) {
		trib_error("cannot connect to %s: %s", o->url, strerror(-err));
		goto out;
	}
	err = rt_sim_job_ensure(mc, admin, o->job, o->clients, o->params, &job);
	if (err)
		goto out;
	if (job.received) {
		trib_error("job %s: round %" PRIu64 " already holds %" PRIu64
			   " updates; the models could not match, use a fresh job",
			   o->job, job.round, job.received);
		goto out;
	}
	trib_info("job %s %s at round %" PRIu64 ": %u clients x %u rounds, %" PRIu64
		  " params, %u connections",
		  o->job, job.created ? "created" : "found", job.round, o->clients, o->rounds,
		  o->params, o->connections);

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
	if (!ref || !w) {
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
		err = rt_client_open(o->url, &w[nw].c);
		if (err) {
			trib_free(w[nw].buf);
			trib_error("cannot connect to %s: %s", o->url, strerror(-err));
			goto out;
		}
	}

	t_start = trib_now_ns();
	for (i = 0; i < o->rounds; i++) {
		memset(&r, 0, sizeof(r));
		r.o = o;
		r.token = job.token;
		r.round = job.round + i;
		r.index = i + 1;
		r.st_hdr = st_hdr;
		r.st_hdr_len = st_hdr_len;
		r.tty = isatty(STDERR_FILENO);
		atomic_init(&r.t_first, UINT64_MAX);
		pthread_mutex_init(&r.lock, NULL);
		err = sim_round(o, mc, w, &r, ref, (unsigned)ncpu, &tot);
		pthread_mutex_destroy(&r.lock);
		if (err == -EIO)
			break;
	}
	rc = tot.rounds_ok == o->rounds && tot.accepted == (uint64_t)o->rounds * o->clients ? 0 : 1;
	printf("simulate: %u/%u rounds OK, %" PRIu64 "/%" PRIu64 " updates accepted, %" PRIu64
	       " retries (503), %.3f s: %s\n",
	       tot.rounds_ok, o->rounds, tot.accepted, (uint64_t)o->rounds * o->clients,
	       tot.retries, (double)(trib_now_ns() - t_start) / 1e9, rc ? "FAILED" : "OK");
	fflush(stdout);
out:
	for (i = 0; i < nw; i++) {
		rt_client_close(w[i].c);
		trib_free(w[i].buf);
	}
	trib_free(w);
	trib_free(ref);
	trib_free(st_hdr);
	rt_client_close(mc);
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
