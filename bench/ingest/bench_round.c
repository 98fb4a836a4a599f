// SPDX-License-Identifier: MIT
/*
 * bench_ingest --round: a round against the ingest of its own bytes (bench_round.h).
 *
 * Why not `tributary simulate`: simulate makes each body and checks each
 * model in float64 on the machine's cores, inside the round (1.9 s of CPU a
 * round at 100 x 11.7M on 2 cores), while the ingest bound is measured with a
 * pre-made body. Here the round's client is the ingest's client: the same
 * connections and bytes, bodies made before, the check after the clock stops.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_round.h"
#include "tl_simulate.h"
#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_log.h"
#include "trib_safetensors.h"
#include "trib_time.h"

#define EXIT_SKIP 77
#define ROUND_SEED 1
#define ROUND_MAX_CONNS 64

struct round_ctx;

/* One connection: its thread, its body, its share of every round. */
struct round_conn {
	struct round_ctx *x;
	struct tl_sim_update u; /* job, token, body; .round set by the main thread each round */
	float *body;
	uint32_t n;             /* updates it sends each round */
	uint64_t t0, t1;        /* its first send and its last answer, this round */
	unsigned retries;
	int err; /* 0, a -errno, or -EPROTO (an answer other than 202, logged) */
	pthread_t tid;
};

struct round_ctx {
	const struct bench_round_opts *o;
	/* Main and the connections meet at start (main has set .round or .quit) and at end. */
	pthread_barrier_t start, end;
	bool quit;
	uint64_t round;
	uint32_t nc;
	struct round_conn c[ROUND_MAX_CONNS];
};

static int post(struct tl_client *c, const struct tl_sim_update *u, unsigned *retries)
{
	struct tl_http_resp resp;
	char msg[256];
	unsigned r = 0;
	int err;

	err = tl_sim_post_update(c, u, &resp, &r);
	*retries += r;
	if (!err && resp.status == 202)
		return 0;
	if (err)
		snprintf(msg, sizeof(msg), "%s", tl_client_strerror(err));
	else
		tl_http_error_msg(&resp, msg, sizeof(msg));
	trib_error("update of round %" PRIu64 ", job %s: %s", u->round, u->job, msg);
	return err ? err : -EPROTO;
}

static void *conn_run(void *arg)
{
	struct round_conn *rc = arg;
	struct round_ctx *x = rc->x;
	struct tl_client *c = NULL;
	int open_err = tl_client_open(x->o->url, &x->o->tls, &c);

	/* Connected before the first round, kept alive across rounds, as simulate's clients. */
	for (;;) {
		pthread_barrier_wait(&x->start);
		if (x->quit)
			break;
		rc->u.round = x->round;
		rc->err = open_err;
		rc->retries = 0;
		rc->t0 = trib_now_ns();
		for (uint32_t i = 0; i < rc->n && !rc->err; i++)
			rc->err = post(c, &rc->u, &rc->retries);
		rc->t1 = trib_now_ns();
		pthread_barrier_wait(&x->end);
	}
	tl_client_close(c);
	return NULL;
}

/* ref = sum_k n_k s_k body_k / sum_k n_k s_k, in double: what the model must be. */
static void reference(const struct round_ctx *x, uint64_t params, double *ref)
{
	double w[ROUND_MAX_CONNS], total = 0;

	for (uint32_t k = 0; k < x->nc; k++) {
		w[k] = (double)x->c[k].n * x->c[k].u.samples;
		total += w[k];
	}
	memset(ref, 0, params * sizeof(*ref));
	for (uint32_t k = 0; k < x->nc; k++) {
		const float *b = x->c[k].body;

		for (uint64_t i = 0; i < params; i++)
			ref[i] += w[k] * b[i];
	}
	for (uint64_t i = 0; i < params; i++)
		ref[i] /= total;
}

/* Compare the model file in @resp with @ref; 0 (and *e, *limit) or -EPROTO (said). */
static int check_model(const struct tl_http_resp *resp, const double *ref, uint64_t params,
		       double *e, double *limit)
{
	struct trib_st st = { 0 };
	const char *why = NULL;
	const struct trib_tensor *t;
	int err;

	err = trib_st_parse(resp->body, resp->body_len, &st, &why);
	if (err) {
		trib_error("the model is not valid safetensors: %s", why ? why : strerror(-err));
		return -EPROTO;
	}
	t = st.ntensors == 1 ? &st.tensors[0] : NULL;
	if (!t || t->dtype != TRIB_DTYPE_F32 || t->n_elem != params) {
		trib_error("the model is not one F32 tensor of %" PRIu64 " elements", params);
		trib_st_free(&st);
		return -EPROTO;
	}
	tl_sim_compare(ref, resp->body + st.data_off + t->data_begin, params, e, limit);
	trib_st_free(&st);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, uint32_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * The rounds, with every connection thread started and waiting at x->start.
 * Fills ingest_s[], round_s[], ratio[] (o->rounds each). Returns 0 or 1 (said).
 */
static int run_rounds(struct round_ctx *x, struct tl_client *c, const char *job,
		      const char *token, uint64_t first, const double *ref, double *ingest_s,
		      double *round_s, double *ratio)
{
	const struct bench_round_opts *o = x->o;
	double mb = (double)o->params * 4 * o->updates / 1e6, e, limit;
	struct tl_http_resp resp;
	uint64_t t0, t1, t_model;
	unsigned retries;
	int err;

	for (uint32_t r = 0; r < o->rounds; r++) {
		x->round = first + r;
		pthread_barrier_wait(&x->start);
		pthread_barrier_wait(&x->end);
		t0 = UINT64_MAX;
		t1 = 0;
		retries = 0;
		err = 0;
		for (uint32_t k = 0; k < x->nc; k++) {
			t0 = x->c[k].t0 < t0 ? x->c[k].t0 : t0;
			t1 = x->c[k].t1 > t1 ? x->c[k].t1 : t1;
			retries += x->c[k].retries;
			err = err ? err : x->c[k].err;
		}
		if (err) {
			trib_error("round %" PRIu64 ": not every update was taken (%s)", x->round,
				   tl_client_strerror(err));
			return 1;
		}
		/* Every 202 is in: the round closes on the server; its model is version round + 1. */
		err = tl_sim_fetch_model(c, job, token, x->round + 1, &resp);
		t_model = trib_now_ns();
		if (err) {
			trib_error("round %" PRIu64 ": no model v=%" PRIu64 " (%s)", x->round,
				   x->round + 1, tl_client_strerror(err));
			return 1;
		}
		ingest_s[r] = (double)(t1 - t0) / 1e9;
		round_s[r] = (double)(t_model - t0) / 1e9;
		ratio[r] = round_s[r] / ingest_s[r];
		if (check_model(&resp, ref, o->params, &e, &limit))
			return 1;
		printf("round %" PRIu64 ": %u updates x %.1f MB, %u connections: ingest %.3f s "
		       "(%.1f MB/s), model at %.3f s, round / ingest %.3f, %u retries (503), "
		       "max|err| = %.3g (limit %.3g) %s\n",
		       x->round, o->updates, (double)o->params * 4 / 1e6, x->nc, ingest_s[r],
		       mb / ingest_s[r], round_s[r], ratio[r], retries, e, limit,
		       e <= limit ? "OK" : "MISMATCH");
		/* CLOCK_MONOTONIC, as perf record -k CLOCK_MONOTONIC: to cut a profile at the tail. */
		printf("  clock: first send %.6f, last 202 %.6f, model %.6f\n", (double)t0 / 1e9,
		       (double)t1 / 1e9, (double)t_model / 1e9);
		fflush(stdout);
		if (!(e <= limit))
			return 1;
	}
	return 0;
}

int bench_round(const struct bench_round_opts *o)
{
	struct round_ctx *x;
	struct tl_client *c = NULL;
	struct tl_sim_job job;
	struct bench_round_opts po = *o;
	char *admin = NULL, jobname[64];
	const char *name = o->job;
	double *ref = NULL, *ingest_s = NULL, *round_s = NULL, *ratio = NULL, t_ref;
	uint32_t started = 0;
	int err, rc = 1;

	x = trib_calloc(1, sizeof(*x));
	if (!x)
		return 1;
	x->o = &po;
	x->nc = o->connections < o->updates ? o->connections : o->updates;
	if (x->nc > ROUND_MAX_CONNS)
		x->nc = ROUND_MAX_CONNS;
	if (!name) {
		snprintf(jobname, sizeof(jobname), "bench-round-%d", (int)getpid());
		name = jobname;
	}
	err = tl_client_open(o->url, &o->tls, &c);
	if (err) {
		fprintf(stderr, "bench_ingest: no server at %s (%s): skipped\n", o->url,
			tl_client_strerror(err));
		trib_free(x);
		return err == -EKEYREJECTED || err == -EPROTO || err == -EINVAL || err == -ENOENT
			       ? 1 : EXIT_SKIP;
	}
	if (tl_sim_admin_token(o->token_file, o->data_dir, &admin))
		trib_warn("no admin token found");
	if (tl_sim_job_ensure(c, admin, name, o->updates, o->params, &job))
		goto out;
	if (job.received) {
		trib_error("job %s has a partly filled round; use a fresh --job", name);
		goto out;
	}
	ref = trib_malloc(o->params * sizeof(*ref));
	ingest_s = trib_calloc(3 * (size_t)o->rounds, sizeof(double));
	if (!ref || !ingest_s || tl_tls_shared_new(&po.tls.shared))
		goto out;
	round_s = ingest_s + o->rounds;
	ratio = round_s + o->rounds;
	for (uint32_t k = 0; k < x->nc; k++) {
		struct round_conn *rc_k = &x->c[k];
		uint64_t key = tl_sim_key(ROUND_SEED, 0, k);

		rc_k->x = x;
		rc_k->n = o->updates / x->nc + (k < o->updates % x->nc);
		rc_k->body = trib_malloc(o->params * sizeof(float));
		if (!rc_k->body)
			goto out_bodies;
		tl_sim_fill(key, 0, rc_k->body, o->params);
		rc_k->u = (struct tl_sim_update){ .job = name, .token = job.token,
						  .samples = tl_sim_samples(key),
						  .data = rc_k->body, .params = o->params };
	}
	t_ref = trib_now_s();
	reference(x, o->params, ref);
	t_ref = trib_now_s() - t_ref;
	if (pthread_barrier_init(&x->start, NULL, x->nc + 1))
		goto out_bodies;
	if (pthread_barrier_init(&x->end, NULL, x->nc + 1))
		goto out_start;
	for (; started < x->nc; started++)
		if (pthread_create(&x->c[started].tid, NULL, conn_run, &x->c[started]))
			break;
	if (started < x->nc) {
		/* The started threads wait at a barrier sized for all: nothing can release them. */
		trib_error("cannot start %u threads", x->nc);
		abort();
	}
	printf("bench round: job %s, %u rounds of %u updates x %" PRIu64 " f32 over %u "
	       "connections, %u distinct bodies (made and averaged in %.2f s, before the "
	       "timing)\n", name, o->rounds, o->updates, o->params, x->nc, x->nc, t_ref);
	fflush(stdout);
	rc = run_rounds(x, c, name, job.token, job.round, ref, ingest_s, round_s, ratio);
	x->quit = true;
	pthread_barrier_wait(&x->start);
	for (uint32_t k = 0; k < x->nc; k++)
		pthread_join(x->c[k].tid, NULL);
	if (!rc) {
		double mi = median(ingest_s, o->rounds), mr = median(round_s, o->rounds);

		printf("bench round: median of %u rounds: ingest %.3f s (%.1f MB/s), round %.3f s, "
		       "round / ingest %.3f (median of the rounds' own ratios)\n", o->rounds, mi,
		       (double)o->params * 4 * o->updates / 1e6 / mi, mr,
		       median(ratio, o->rounds));
	}
	pthread_barrier_destroy(&x->end);
out_start:
	pthread_barrier_destroy(&x->start);
out_bodies:
	for (uint32_t k = 0; k < x->nc; k++)
		trib_free(x->c[k].body);
out:
	tl_tls_shared_free(po.tls.shared);
	trib_free(ingest_s);
	trib_free(ref);
	trib_free(admin);
	tl_client_close(c);
	trib_free(x);
	return rc;
}
