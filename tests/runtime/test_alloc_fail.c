// SPDX-License-Identifier: MIT
/* Fail the k-th allocation of one job's life, for every k: a clean error each time, no leak. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl_store.h"
#include "fn_algo.h"
#include "rt_api.h"
#include "rt_fnproc.h"
#include "rt_loop.h"
#include "rt_node.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/*
 * One job's life, in process: POST /v1/jobs, three updates (two raw f32,
 * one safetensors), the round folded by fake functions that run the real
 * fold (functions/ fn_pipeline on the arena) and commit through the model
 * store, then GET the model. The fake functions never allocate (their state
 * is fixed arrays), so an injected failure always lands in the runtime, the
 * core or jansson: the code under test.
 */

#define ADMIN "admin-token-for-tests-0123456789"
#define NPARAM 8
#define NUPD 3
#define FFN_MAX 16
#define FFN_KIDS 8
#define OUT_MAX 256

/* One fake function: what tributary-fn keeps, without its process. */
struct ffn {
	uint32_t id;
	bool configured;
	struct fn_config cfg;
	struct fn_params par;
	struct fn_pipeline pipe;
	struct fn_algo_ctx ctx;
	_Alignas(64) unsigned char pstate[1024];
	uint32_t folded;
	double total_w;
	uint32_t total_n;
	struct shm_desc kid[FFN_KIDS]; /* top: partials waiting for their turn */
	bool has_kid[FFN_KIDS];
};

/* Records from the functions to the runtime, delivered by pump() as the loop would. */
struct out_rec {
	uint32_t from;
	struct shm_desc d;
};

struct fake {
	struct rt_node *n;
	struct ffn fn[FFN_MAX];
	uint32_t nfn;
	struct out_rec out[OUT_MAX];
	uint32_t ohead, otail;
	pid_t dead[FFN_MAX];
	uint32_t ndead;
};

struct life {
	const char *def; /* the job's definition (POST /v1/jobs) */
	char dir[64];
	struct rt_node *n;
	struct rt_api *api;
	struct rt_loop *loop;
	struct rt_conn *c;
	struct fake fk;
};

static struct ffn *ffn_find(struct fake *f, uint32_t id)
{
	for (uint32_t i = 0; i < f->nfn; i++)
		if (f->fn[i].id == id)
			return &f->fn[i];
	return NULL;
}

static void emit(struct fake *f, uint32_t from, const void *rec)
{
	cr_assert_lt(f->otail - f->ohead, OUT_MAX, "fake: too many records in flight");
	f->out[f->otail % OUT_MAX].from = from;
	memcpy(&f->out[f->otail % OUT_MAX].d, rec, sizeof(struct shm_desc));
	f->otail++;
}

static void emit_ctl(struct fake *f, const struct ffn *x, uint16_t kind)
{
	struct fn_ctl c;

	memset(&c, 0, sizeof(c));
	c.version = FN_ABI_VERSION;
	c.kind = kind;
	c.fn_id = x->id;
	c.job = x->cfg.job;
	c.round = x->cfg.round;
	emit(f, x->id, &c);
}

static void ffn_reset(struct ffn *x)
{
	fn_pipeline_fini(&x->pipe);
	x->configured = false;
	x->folded = 0;
	x->total_w = 0;
	x->total_n = 0;
	memset(x->has_kid, 0, sizeof(x->has_kid));
}

/* CONFIG and PARAMS, as fn_main.c configure() takes them. */
static void ffn_configure(struct fake *f, struct ffn *x, const struct fn_config *cfg,
			  const struct fn_params *par)
{
	struct shm_arena *a = f->n->arena;

	cr_assert_not(x->configured, "fake fn %u: configured twice", x->id);
	x->cfg = *cfg;
	x->par = *par;
	x->ctx.cfg = &x->cfg;
	x->ctx.par = &x->par;
	x->ctx.base = shm_arena_base(a);
	x->ctx.size = shm_arena_size(a);
	x->ctx.acc = (float *)(void *)(x->ctx.base + cfg->acc_data_off);
	memset(x->ctx.acc, 0, cfg->n_elem * sizeof(float));
	cr_assert_eq(fn_pipeline_compose(&x->pipe, &x->cfg, &x->par, NULL), 0);
	cr_assert_leq(fn_pipeline_state_size(&x->pipe), sizeof(x->pstate));
	memset(x->pstate, 0, sizeof(x->pstate));
	cr_assert_eq(fn_pipeline_init(&x->pipe, x->pstate, &x->ctx), 0);
	x->configured = true;
	emit_ctl(f, x, FN_MSG_READY);
}

static void ffn_fold(struct ffn *x, const struct shm_desc *d)
{
	struct fn_input in;

	cr_assert_eq(fn_input_from_desc(&x->ctx, d, &in), 0, "fake fn %u: bad descriptor", x->id);
	cr_assert_eq(fn_pipeline_fold(&x->pipe, &x->ctx, &in), 0);
	x->folded++;
	x->total_w += in.share;
	x->total_n += d->count;
}

/* fn_main.c hand_off(): the output, then DONE; warm again. */
static void ffn_hand_off(struct fake *f, struct ffn *x)
{
	struct shm_seg *seg = (struct shm_seg *)(void *)(x->ctx.base + x->cfg.acc_off);
	struct shm_desc d;

	cr_assert_eq(fn_pipeline_finish(&x->pipe, &x->ctx, x->total_w), 0);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = x->cfg.acc_data_off;
	seg->n_elem = x->cfg.n_elem;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = x->cfg.role == FN_ROLE_TOP ? SHM_DESC_RESULT : SHM_DESC_PARTIAL;
	d.dst = x->cfg.parent;
	d.src = x->id;
	d.job = x->cfg.job;
	d.round = x->cfg.round;
	d.nsegs = 1;
	d.weight = x->total_w;
	d.count = x->total_n;
	d.seq = x->cfg.index;
	d.slot_off = x->cfg.acc_off;
	d.segs_off = x->cfg.acc_off;
	emit(f, x->id, &d);
	d.kind = FN_MSG_DONE;
	emit(f, x->id, &d);
	ffn_reset(x);
}

static void ffn_maybe_hand_off(struct fake *f, struct ffn *x)
{
	if (x->configured && (x->cfg.flags & FN_CFG_FINAL) && x->folded >= x->cfg.expected)
		ffn_hand_off(f, x);
}

/* A top folds its children's partials in child order. */
static void ffn_fold_kids(struct ffn *x)
{
	while (x->folded < FFN_KIDS && x->has_kid[x->folded] &&
	       (!(x->cfg.flags & FN_CFG_FINAL) || x->folded < x->cfg.expected))
		ffn_fold(x, &x->kid[x->folded]);
}

static void ffn_desc(struct fake *f, struct ffn *x, const struct shm_desc *d)
{
	if (!x->configured || d->job != x->cfg.job || d->round != x->cfg.round)
		return; /* a duplicate for a config it is done with */
	if (x->cfg.role == FN_ROLE_LEAF) {
		cr_assert_eq(d->kind, SHM_DESC_UPDATE);
		ffn_fold(x, d);
	} else {
		cr_assert_eq(d->kind, SHM_DESC_PARTIAL);
		cr_assert_lt(d->seq, FFN_KIDS);
		if (d->seq < x->folded || x->has_kid[d->seq])
			return;
		x->kid[d->seq] = *d;
		x->has_kid[d->seq] = true;
		ffn_fold_kids(x);
	}
	ffn_maybe_hand_off(f, x);
}

static void ffn_flush(struct fake *f, struct ffn *x, const struct fn_ctl *c)
{
	if (!x->configured || c->job != x->cfg.job || c->round != x->cfg.round)
		return;
	x->cfg.expected = c->value;
	x->cfg.flags |= FN_CFG_FINAL;
	ffn_fold_kids(x);
	ffn_maybe_hand_off(f, x);
}

/* --- the rt_fn_ops of the fake --- */

static int fk_start(struct rt_fnset *set, struct rt_fn *fn)
{
	struct fake *f = rt_fnset_ops_ctx(set);
	struct ffn *x;

	cr_assert_lt(f->nfn, FFN_MAX);
	x = &f->fn[f->nfn++];
	memset(x, 0, sizeof(*x));
	x->id = fn->id;
	fn->pid = 200000 + (pid_t)fn->id;
	fn->spawn_ns = trib_now_ns();
	fn->sock = open("/dev/null", O_RDWR | O_CLOEXEC); /* the node closes it */
	fn->data = -1;
	return fn->sock < 0 ? -errno : 0;
}

static int fk_chan_send(struct rt_fn *fn, const void *recs, size_t n, int fd)
{
	struct fake *f = rt_fnset_ops_ctx(fn->set);
	struct ffn *x = ffn_find(f, fn->id);
	const uint8_t *r = recs;

	(void)fd; /* the arena fd: borrowed, the fake maps nothing */
	cr_assert_not_null(x);
	for (size_t i = 0; i < n; i++, r += SHM_DESC_SIZE) {
		uint16_t kind;

		memcpy(&kind, r + 2, sizeof(kind));
		if (kind == FN_MSG_CONFIG) {
			struct fn_config cfg;
			struct fn_params par;

			cr_assert_lt(i + 1, n, "a CONFIG comes with its PARAMS");
			memcpy(&cfg, r, sizeof(cfg));
			memcpy(&par, r + SHM_DESC_SIZE, sizeof(par));
			ffn_configure(f, x, &cfg, &par);
			i++;
			r += SHM_DESC_SIZE;
		} else if (kind == FN_MSG_FLUSH) {
			struct fn_ctl c;

			memcpy(&c, r, sizeof(c));
			ffn_flush(f, x, &c);
		} else if (kind < 16) {
			struct shm_desc d;

			memcpy(&d, r, sizeof(d));
			ffn_desc(f, x, &d);
		}
		/* FN_MSG_EXIT: the node retires it later by signal and wait */
	}
	return 0;
}

static int fk_send(struct rt_fn *fn, const struct shm_desc *d, uint32_t n)
{
	fk_chan_send(fn, d, n, -1);
	return (int)n;
}

static int fk_send_payload(struct rt_fn *fn, const struct shm_desc *d, const struct iovec *iov,
			   int iovcnt)
{
	(void)fn;
	(void)d;
	(void)iov;
	(void)iovcnt;
	return -EOPNOTSUPP; /* tcp only */
}

static void fk_signal(struct rt_fn *fn, int sig)
{
	struct fake *f = rt_fnset_ops_ctx(fn->set);

	(void)sig;
	cr_assert_lt(f->ndead, FFN_MAX);
	f->dead[f->ndead++] = fn->pid;
}

static pid_t fk_wait(struct rt_fnset *set, pid_t pid, int *status)
{
	struct fake *f = rt_fnset_ops_ctx(set);

	for (uint32_t i = 0; i < f->ndead; i++) {
		if (pid < 0 || f->dead[i] == pid) {
			pid_t p = f->dead[i];

			f->dead[i] = f->dead[--f->ndead];
			if (status)
				*status = SIGKILL;
			return p;
		}
	}
	return 0;
}

static const struct rt_fn_ops fake_ops = {
	.start = fk_start,
	.chan_send = fk_chan_send,
	.send = fk_send,
	.send_payload = fk_send_payload,
	.signal = fk_signal,
	.wait = fk_wait,
};

/* What the loop does between requests: hand the functions' records to the node. */
static void pump(struct life *L)
{
	while (L->fk.ohead != L->fk.otail) {
		struct out_rec o = L->fk.out[L->fk.ohead % OUT_MAX];
		struct rt_fn *fn;

		L->fk.ohead++;
		fn = rt_fnset_find(L->n->fns, o.from);
		if (fn)
			rt_node_on_fn_record(L->n, fn, &o.d, NULL);
	}
}

/* --- the node, the API and a connection of a detached loop --- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void life_open(struct life *L, const char *def)
{
	struct rt_node_opts o = {
		.listen_host = "127.0.0.1",
		.arena_bytes = 16ull << 20,
		.no_huge = true,
		.warm_s = 30,
		.dataplane = FN_DP_SHM_UNIX,
		.fn_path = "/nonexistent/tributary-fn",
	};
	struct rt_conn_hooks ch;

	memset(L, 0, sizeof(*L));
	L->def = def;
	snprintf(L->dir, sizeof(L->dir), "/tmp/trib-alloc-test-XXXXXX");
	cr_assert_not_null(mkdtemp(L->dir));
	o.data_dir = L->dir;
	cr_assert_eq(rt_node_open(&L->n, &o, ":memory:"), 0);
	snprintf(L->n->admin_token, sizeof(L->n->admin_token), "%s", ADMIN);
	L->fk.n = L->n;
	rt_fnset_set_ops(L->n->fns, &fake_ops, &L->fk);
	cr_assert_eq(rt_api_open(&L->api, L->n, NULL), 0);
	rt_api_conn_hooks(L->api, &ch);
	cr_assert_eq(rt_loop_open_detached(&L->loop, &ch), 0);
	L->c = rt_conn_new_detached(L->loop);
	cr_assert_not_null(L->c);
}

static void life_close(struct life *L)
{
	rt_loop_close(L->loop);
	rt_api_close(L->api);
	rt_node_close(L->n);
	cr_assert_eq(nftw(L->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS), 0);
}

/* One request; its status (the body stays in L->c->rbody). */
static int request(struct life *L, const char *method, const char *path, const char *token,
		   const char *ctype, const char *extra, const void *body, size_t blen)
{
	char req[1024];
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\n", method, path);
	int status = 0;

	if (token)
		n += snprintf(req + n, sizeof(req) - (size_t)n, "Authorization: Bearer %s\r\n",
			      token);
	if (ctype)
		n += snprintf(req + n, sizeof(req) - (size_t)n, "Content-Type: %s\r\n", ctype);
	n += snprintf(req + n, sizeof(req) - (size_t)n, "%sContent-Length: %zu\r\n\r\n",
		      extra ? extra : "", blen);
	cr_assert_lt((size_t)n + blen, sizeof(req));
	if (blen)
		memcpy(req + n, body, blen);
	cr_assert_eq(rt_conn_feed(L->c, req, (size_t)n + blen), 0);
	cr_assert(rt_conn_answered(L->c), "%s %s: no answer", method, path);
	cr_assert_eq(sscanf(L->c->rhead, "HTTP/1.1 %d ", &status), 1);
	return status;
}

/* An error answer: a server-side status (never 4xx for our own failure) and a JSON body. */
static void assert_clean_error(const struct life *L, int status, const char *what, long k)
{
	cr_assert(status == 500 || status == 503 || status == 507,
		  "k=%ld: %s answered %d (an allocation failure is not the client's fault): %.*s",
		  k, what, status, (int)L->c->rbody_len, L->c->rbody);
	cr_assert(L->c->rbody_len > 10 && !memcmp(L->c->rbody, "{\"error\":\"", 10),
		  "k=%ld: %s answered %d without a JSON error body", k, what, status);
}

/* --- the job's life --- */

/* One leaf folds the three updates; or three leaves, one each, under the top. */
static const char def_one_leaf[] = "{\"name\":\"m\",\"clients_per_round\":3,\"fan_in\":3,"
				   "\"params\":8}";
static const char def_three_leaves[] = "{\"name\":\"m\",\"clients_per_round\":3,"
				       "\"fan_in\":1,\"params\":8}";

/* Update @i: values i + 1 + e / 8, weight (samples) i + 1. */
static void update_values(int i, float *x)
{
	for (int e = 0; e < NPARAM; e++)
		x[e] = (float)(i + 1) + (float)e / 8.0f;
}

/* The safetensors file of update @i: 8-byte length, header padded to 8, then the f32s. */
static size_t update_st(int i, uint8_t *buf)
{
	static const char hdr[] = "{\"weights\":{\"dtype\":\"F32\",\"shape\":[8],"
				  "\"data_offsets\":[0,32]}}";
	uint64_t hl = (sizeof(hdr) - 1 + 7) & ~7ull;
	float x[NPARAM];

	memset(buf, ' ', 8 + hl);
	memcpy(buf, &hl, 8);
	memcpy(buf + 8, hdr, sizeof(hdr) - 1);
	update_values(i, x);
	memcpy(buf + 8 + hl, x, sizeof(x));
	return 8 + hl + sizeof(x);
}

/* POST update @i (the last one as safetensors); its status. */
static int post_update(struct life *L, const struct rt_job *j, int i)
{
	char extra[96];
	uint8_t body[256];
	size_t len;

	snprintf(extra, sizeof(extra), "X-Tributary-Round: 0\r\nX-Tributary-Samples: %d\r\n",
		 i + 1);
	if (i == NUPD - 1) {
		len = update_st(i, body);
		return request(L, "POST", "/v1/jobs/m/updates", j->token,
			       "application/x-safetensors", extra, body, len);
	}
	update_values(i, (float *)(void *)body);
	return request(L, "POST", "/v1/jobs/m/updates", j->token, "application/octet-stream",
		       extra, body, NPARAM * sizeof(float));
}

/* The weighted mean of the updates, in the order a leaf folds them (fn_fold: f32 sums). */
static void expected_model(float *m)
{
	double w = 0;

	memset(m, 0, NPARAM * sizeof(float));
	for (int i = 0; i < NUPD; i++) {
		float x[NPARAM];

		update_values(i, x);
		for (int e = 0; e < NPARAM; e++)
			m[e] += (float)(i + 1) * x[e];
		w += i + 1;
	}
	for (int e = 0; e < NPARAM; e++)
		m[e] = (float)(m[e] / w);
}

/*
 * GET the model: 200 with X-Tributary-Round v and v's bytes (v0 zeros, v1
 * the mean), or a clean error. Returns the version served, or -1.
 */
static int get_model(struct life *L, const struct rt_job *j, long k)
{
	int status = request(L, "GET", "/v1/jobs/m/model", j->token, NULL, NULL, NULL, 0);
	float want[NPARAM], got[NPARAM];
	const char *p;
	unsigned v;

	if (status != 200) {
		assert_clean_error(L, status, "GET model", k);
		return -1;
	}
	p = strstr(L->c->rhead, "X-Tributary-Round: ");
	cr_assert_not_null(p, "k=%ld: a model without its version", k);
	cr_assert_eq(sscanf(p, "X-Tributary-Round: %u", &v), 1);
	cr_assert(v <= 1, "k=%ld: model version %u", k, v);
	cr_assert_eq(L->c->rbody_len, j->st_header_len + sizeof(got));
	cr_assert_eq(memcmp(L->c->rbody, j->st_header, j->st_header_len), 0);
	memcpy(got, L->c->rbody + j->st_header_len, sizeof(got));
	if (v == 0)
		memset(want, 0, sizeof(want));
	else
		expected_model(want);
	for (int e = 0; e < NPARAM; e++)
		cr_assert_float_eq(got[e], want[e], 1e-5, "k=%ld: model v%u[%d] = %g, not %g", k,
				   v, e, got[e], want[e]);
	return (int)v;
}

struct outcome {
	bool created;
	bool accepted[NUPD];
	int version; /* the model GET served, or -1 */
};

/*
 * Run every step once; each answers its success status or a clean error,
 * and the node's state agrees with the answer: a job exists iff 201, an
 * update is counted iff 202.
 */
static void life_run(struct life *L, long k, struct outcome *out)
{
	struct rt_job *j;
	int status;

	memset(out, 0, sizeof(*out));
	out->version = -1;
	status = request(L, "POST", "/v1/jobs", ADMIN, "application/json", NULL, L->def,
			 strlen(L->def));
	j = rt_job_find(L->n, "m");
	if (status != 201) {
		assert_clean_error(L, status, "POST /v1/jobs", k);
		cr_assert_null(j, "k=%ld: %d, but the job exists", k, status);
		return;
	}
	cr_assert_not_null(j, "k=%ld: 201 without a job", k);
	out->created = true;
	for (int i = 0; i < NUPD; i++) {
		uint64_t before = j->accepted_total;

		status = post_update(L, j, i);
		if (status == 202) {
			cr_assert_eq(j->accepted_total, before + 1, "k=%ld: 202 not counted", k);
			out->accepted[i] = true;
		} else {
			assert_clean_error(L, status, "POST update", k);
			cr_assert_eq(j->accepted_total, before, "k=%ld: %d, but counted", k, status);
		}
		pump(L);
	}
	out->version = get_model(L, j, k);
}

/*
 * After a failure, with injection off: create the job if it does not exist,
 * send the updates that were not accepted, let a tick retry what the node
 * retries by itself, and the model must be the mean.
 */
static void life_finish(struct life *L, long k, const struct outcome *o)
{
	struct rt_job *j;

	if (!o->created)
		cr_assert_eq(request(L, "POST", "/v1/jobs", ADMIN, "application/json", NULL,
				     L->def, strlen(L->def)), 201,
			     "k=%ld: creating the job again", k);
	j = rt_job_find(L->n, "m");
	cr_assert_not_null(j);
	for (int i = 0; i < NUPD; i++) {
		if (o->created && o->accepted[i])
			continue;
		cr_assert_eq(post_update(L, j, i), 202, "k=%ld: update %d again", k, i);
		pump(L);
	}
	/* A commit that failed is retried by the tick (with a backoff: give it time). */
	for (int t = 0; t < 100 && j->completed == 0; t++) {
		if (t)
			usleep(RT_LOOP_TICK_MS * 1000 / 4);
		rt_node_tick(L->n);
		pump(L);
	}
	cr_assert_eq(get_model(L, j, k), 1, "k=%ld: the round did not complete", k);
	/* The store says the version the model file has (a restart resumes from it). */
	{
		struct ctl_job cj;

		memset(&cj, 0, sizeof(cj));
		cr_assert_eq(ctl_store_job_get(L->n->store, "m", &cj), 0);
		cr_assert_eq(cj.round, j->completed, "k=%ld: the store says round %u, the model v%u",
			     k, cj.round, j->completed);
		ctl_job_clear(&cj);
	}
}

/* Count the allocations of a life with @def (K), then fail the k-th, for every k. */
static void walk(const char *def)
{
	struct life L;
	struct outcome o;
	unsigned long k_total, c0;
	long nfail = 0;

	trib_log_set_level(TRIB_LOG_ERROR);
	/* Once without injection: the life works, and K is its number of allocations. */
	life_open(&L, def);
	c0 = trib_alloc_count();
	life_run(&L, -1, &o);
	k_total = trib_alloc_count() - c0;
	cr_assert(o.created && o.accepted[0] && o.accepted[1] && o.accepted[2]);
	cr_assert_eq(o.version, 1, "the round completes without injection");
	life_close(&L);
	cr_log_info("a job's life makes %lu allocations", k_total);
	cr_assert_gt(k_total, 10);

	/* Then fail the k-th, for every k (k = K fails nothing: the control). */
	for (long k = 0; k <= (long)k_total; k++) {
		long live0 = trib_alloc_live();
		unsigned long f0;

		life_open(&L, def);
		f0 = trib_alloc_failures();
		trib_alloc_fail_after(k);
		life_run(&L, k, &o);
		trib_alloc_fail_after(-1);
		if (trib_alloc_failures() != f0)
			nfail++;
		else
			cr_assert_eq(k, (long)k_total, "k=%ld: no allocation failed", k);
		life_finish(&L, k, &o);
		life_close(&L);
		cr_assert_eq(trib_alloc_live(), live0, "k=%ld: %ld blocks leaked", k,
			     trib_alloc_live() - live0);
	}
	cr_assert_eq(nfail, (long)k_total, "every k < K failed an allocation");
	trib_log_set_level(TRIB_LOG_INFO);
}

Test(runtime_alloc_fail, every_allocation_of_a_life_with_one_leaf, .timeout = 600)
{
	walk(def_one_leaf);
}

Test(runtime_alloc_fail, every_allocation_of_a_life_with_three_leaves, .timeout = 600)
{
	walk(def_three_leaves);
}
