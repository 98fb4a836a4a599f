// SPDX-License-Identifier: MIT
/* Server optimisers (FedAvg, FedAvgM, FedAdagrad, FedAdam, FedYogi): their step and top stage. */
#include "fn_opt.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "fn_algo.h"
#include "fn_fold.h"
#include "trib_alloc.h"

#ifdef __SSE2__
#include <immintrin.h>
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fn_opt.c serialises state as the host's bytes: little-endian hosts only"
#endif

#ifdef __FAST_MATH__
#error "fn_opt.c's reference tests expect IEEE float semantics: build it without -ffast-math"
#endif

void fn_opt_params_default(struct fn_opt_params *p, uint32_t kind)
{
	p->kind = kind;
	/* An adaptive step moves each coordinate by about eta: 1 overshoots (issue 15). */
	p->server_lr = kind == FN_OPT_FEDYOGI				      ? 0.01f :
		       kind == FN_OPT_FEDADAGRAD || kind == FN_OPT_FEDADAM ? 0.1f :
									     1.0f;
	p->momentum = 0.9f;
	p->beta1 = 0.9f;
	p->beta2 = 0.99f;
	p->tau = 1e-3f;
}

static int in_unit(float x)
{
	return x >= 0.0f && x < 1.0f;
}

static int kind_is_adaptive(uint32_t kind)
{
	return kind == FN_OPT_FEDADAGRAD || kind == FN_OPT_FEDADAM || kind == FN_OPT_FEDYOGI;
}

int fn_opt_params_check(const struct fn_opt_params *p, const char **field)
{
	const char *bad = NULL;

	if (p->kind > FN_OPT_FEDYOGI)
		bad = "algorithm";
	else if (!(p->server_lr > 0.0f) || !isfinite(p->server_lr))
		bad = "server_lr";
	else if (p->kind == FN_OPT_FEDAVGM && !in_unit(p->momentum))
		bad = "momentum";
	else if (kind_is_adaptive(p->kind) && !in_unit(p->beta1))
		bad = "beta1";
	/* Adagrad ignores beta2; checking it anyway would reject a harmless leftover. */
	else if ((p->kind == FN_OPT_FEDADAM || p->kind == FN_OPT_FEDYOGI) && !in_unit(p->beta2))
		bad = "beta2";
	else if (kind_is_adaptive(p->kind) && (!(p->tau > 0.0f) || !isfinite(p->tau)))
		bad = "tau";
	if (field)
		*field = bad;
	return bad ? -EINVAL : 0;
}

void fn_opt_state_elems(uint32_t kind, uint64_t n, uint64_t *m_elems, uint64_t *v_elems)
{
	*m_elems = kind == FN_OPT_FEDAVGM || kind_is_adaptive(kind) ? n : 0;
	*v_elems = kind_is_adaptive(kind) ? n : 0;
}

int fn_opt_state_init(struct fn_opt_state *st, const struct fn_opt_params *p, uint64_t n, float *m,
		      float *v)
{
	uint64_t mn, vn, i;

	if (fn_opt_params_check(p, NULL))
		return -EINVAL;
	fn_opt_state_elems(p->kind, n, &mn, &vn);
	if ((mn && !m) || (vn && !v))
		return -EINVAL;
	st->kind = p->kind;
	st->n = n;
	st->step = 0;
	st->m = mn ? m : NULL;
	st->v = vn ? v : NULL;
	for (i = 0; i < mn; i++)
		m[i] = 0.0f;
	for (i = 0; i < vn; i++)
		v[i] = p->tau * p->tau;
	return 0;
}

/*
 * Saturation: a huge delta (one client sending 1e30 through a plain mean) squares past FLT_MAX.
 * d*d and v are clamped to FLT_MAX, so v stays finite, Yogi never meets inf - inf, and the step
 * for that coordinate is small instead of NaN. Written as a compare (not fminf) so it vectorises
 * (minps); finite values pass unchanged.
 */
static inline float sat(float x)
{
	return x < FLT_MAX ? x : FLT_MAX;
}

/*
 * All loops here are branch-free over restrict-qualified arrays, so gcc -O3 vectorises them.
 * sqrtf would not vectorise (math-errno makes it a call), so the adaptive kernels work in tiles:
 * moments for a tile, its square roots with SSE (correctly rounded, as sqrtf), then the step.
 */
#define OPT_TILE 512

static void sqrt_tile(float *restrict r, const float *restrict v, size_t n)
{
	size_t i = 0;

#ifdef __SSE2__
	for (; i + 4 <= n; i += 4)
		_mm_storeu_ps(r + i, _mm_sqrt_ps(_mm_loadu_ps(v + i)));
#endif
	for (; i < n; i++)
		r[i] = sqrtf(v[i]);
}

/* x += lr * m / (sqrt(v) + tau) over one tile. */
static void apply_tile(float *restrict x, const float *restrict m, const float *restrict v,
		       float lr, float tau, size_t n)
{
	float r[OPT_TILE];
	size_t i;

	sqrt_tile(r, v, n);
	for (i = 0; i < n; i++)
		x[i] = x[i] + lr * m[i] / (r[i] + tau);
}

static void step_fedavg(float *restrict x, const float *restrict d, float lr, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		x[i] = x[i] + lr * d[i];
}

static void step_fedavgm(float *restrict x, float *restrict m, const float *restrict d, float lr,
			 float mu, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		float mi = mu * m[i] + d[i];

		m[i] = mi;
		x[i] = x[i] + lr * mi;
	}
}

/* The moment updates of one tile, per adaptive kind (formulas in fn_opt.h). */
static void moments_tile(uint32_t kind, float *restrict m, float *restrict v,
			 const float *restrict d, float b1, float c1, float b2, float c2, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		m[i] = b1 * m[i] + c1 * d[i];
	switch (kind) {
	case FN_OPT_FEDADAGRAD:
		for (i = 0; i < n; i++)
			v[i] = sat(v[i] + sat(d[i] * d[i]));
		break;
	case FN_OPT_FEDADAM:
		for (i = 0; i < n; i++)
			v[i] = sat(b2 * v[i] + c2 * sat(d[i] * d[i]));
		break;
	default: /* FN_OPT_FEDYOGI */
		for (i = 0; i < n; i++) {
			float g2 = sat(d[i] * d[i]);
			/* sign(v - g2) without a branch: +1, -1 or 0. */
			float s = (float)(v[i] > g2) - (float)(v[i] < g2);

			v[i] = sat(v[i] - c2 * g2 * s);
		}
		break;
	}
}

static void step_adaptive(uint32_t kind, float *x, float *m, float *v, const float *d,
			  const struct fn_opt_params *p, size_t n)
{
	float c1 = 1.0f - p->beta1, c2 = 1.0f - p->beta2;
	size_t t0;

	for (t0 = 0; t0 < n; t0 += OPT_TILE) {
		size_t tn = n - t0 < OPT_TILE ? n - t0 : OPT_TILE;

		moments_tile(kind, m + t0, v + t0, d + t0, p->beta1, c1, p->beta2, c2, tn);
		apply_tile(x + t0, m + t0, v + t0, p->server_lr, p->tau, tn);
	}
}

int fn_opt_step(const struct fn_opt_params *p, struct fn_opt_state *st, float *model,
		const float *delta, size_t n)
{
	if (fn_opt_params_check(p, NULL) || p->kind != st->kind || (uint64_t)n != st->n)
		return -EINVAL;
	switch (p->kind) {
	case FN_OPT_FEDAVG:
		step_fedavg(model, delta, p->server_lr, n);
		break;
	case FN_OPT_FEDAVGM:
		step_fedavgm(model, st->m, delta, p->server_lr, p->momentum, n);
		break;
	case FN_OPT_FEDADAGRAD:
	case FN_OPT_FEDADAM:
	case FN_OPT_FEDYOGI:
		step_adaptive(p->kind, model, st->m, st->v, delta, p, n);
		break;
	default:
		return -EINVAL;
	}
	st->step++;
	/* x + lr * m can still overflow (fedavg, fedavgm with huge deltas): say so, once. */
	if (fn_check_finite_f32(model, n, NULL))
		return -ERANGE;
	return 0;
}

struct opt_hdr {
	char magic[8];
	uint32_t version;
	uint32_t kind;
	uint64_t n;
	uint64_t step;
};
_Static_assert(sizeof(struct opt_hdr) == FN_OPT_STATE_HDR, "optimiser state header is a format");
_Static_assert(offsetof(struct opt_hdr, n) == 16, "optimiser state header is a format");

static size_t state_bytes(uint32_t kind, uint64_t n)
{
	uint64_t mn, vn;

	fn_opt_state_elems(kind, n, &mn, &vn);
	return FN_OPT_STATE_HDR + (size_t)(mn + vn) * sizeof(float);
}

size_t fn_opt_state_size(const struct fn_opt_state *st)
{
	return state_bytes(st->kind, st->n);
}

int fn_opt_state_save(const struct fn_opt_state *st, void *buf, size_t len)
{
	struct opt_hdr h;
	uint8_t *p = buf;
	uint64_t mn, vn;

	if (len < fn_opt_state_size(st))
		return -ENOSPC;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, FN_OPT_STATE_MAGIC, sizeof(FN_OPT_STATE_MAGIC));
	h.version = FN_OPT_STATE_VERSION;
	h.kind = st->kind;
	h.n = st->n;
	h.step = st->step;
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	fn_opt_state_elems(st->kind, st->n, &mn, &vn);
	if (mn)
		memcpy(p, st->m, (size_t)mn * sizeof(float));
	p += mn * sizeof(float);
	if (vn)
		memcpy(p, st->v, (size_t)vn * sizeof(float));
	return 0;
}

int fn_opt_state_load(struct fn_opt_state *st, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	struct opt_hdr h;
	uint64_t mn, vn;

	if (len < sizeof(h))
		return -EMSGSIZE;
	memcpy(&h, p, sizeof(h));
	if (memcmp(h.magic, FN_OPT_STATE_MAGIC, sizeof(FN_OPT_STATE_MAGIC)) ||
	    h.version != FN_OPT_STATE_VERSION || h.kind != st->kind || h.n != st->n)
		return -EINVAL;
	if (len != state_bytes(h.kind, h.n))
		return -EMSGSIZE;
	p += sizeof(h);
	fn_opt_state_elems(h.kind, h.n, &mn, &vn);
	if (mn)
		memcpy(st->m, p, (size_t)mn * sizeof(float));
	p += mn * sizeof(float);
	if (vn)
		memcpy(st->v, p, (size_t)vn * sizeof(float));
	st->step = h.step;
	return 0;
}

/* The top's stage: the job's optimiser parameters, taken from PARAMS once. */
struct opt_stage {
	struct fn_opt_params op;
};

static int opt_init(void *state, const struct fn_algo_ctx *ctx)
{
	struct opt_stage *s = state;
	const struct fn_params *p = ctx->par;

	memset(&s->op, 0, sizeof(s->op));
	s->op.kind = p->server;
	s->op.server_lr = p->server_lr;
	s->op.momentum = p->momentum;
	s->op.beta1 = p->beta1;
	s->op.beta2 = p->beta2;
	s->op.tau = p->tau;
	return 0;
}

/*
 * After the mean: the previous model (par->model_off) moves by the round's delta (mean -
 * previous for weights, the mean itself for deltas, FN_PAR_DELTA) through the job's optimiser;
 * its state is read from the first half of the state slot (par->state_off, 0: a fresh state)
 * and written to the second (the runtime keeps it only once the model is written). ctx->acc
 * holds the mean and receives the model.
 */
static int opt_finish(void *state, const struct fn_algo_ctx *ctx, double total_weight)
{
	const struct opt_stage *s = state;
	const struct fn_params *p = ctx->par;
	size_t n = (size_t)ctx->cfg->n_elem;
	float *acc = ctx->acc;
	struct fn_opt_state os;
	const float *prev;
	uint64_t me, ve;
	float *model = NULL, *m = NULL, *v = NULL;
	int err;

	(void)total_weight;
	if (!fn_ctx_range_ok(ctx, p->model_off, n * 4))
		return -EINVAL;
	prev = (const float *)(const void *)(ctx->base + p->model_off);
	fn_opt_state_elems(s->op.kind, n, &me, &ve);
	model = trib_malloc(n ? n * sizeof(float) : 1);
	m = me ? trib_malloc(me * sizeof(float)) : NULL;
	v = ve ? trib_malloc(ve * sizeof(float)) : NULL;
	err = -ENOMEM;
	if (!model || (me && !m) || (ve && !v))
		goto out;
	err = fn_opt_state_init(&os, &s->op, n, m, v);
	if (err)
		goto out;
	if (p->state_off) {
		size_t sz = fn_opt_state_size(&os);

		err = -EINVAL;
		if (!fn_ctx_range_ok(ctx, p->state_off, 2 * sz))
			goto out;
		err = fn_opt_state_load(&os, ctx->base + p->state_off, sz);
		if (err)
			goto out;
	}
	/* The delta, in place: the mean is either the delta or the new weights. */
	if (!(p->flags & FN_PAR_DELTA))
		for (size_t i = 0; i < n; i++)
			acc[i] -= prev[i];
	memcpy(model, prev, n * sizeof(float));
	err = fn_opt_step(&s->op, &os, model, acc, n);
	if (err)
		goto out;
	memcpy(acc, model, n * sizeof(float));
	if (p->state_off)
		err = fn_opt_state_save(&os, ctx->base + p->state_off + fn_opt_state_size(&os),
					fn_opt_state_size(&os));
out:
	trib_free(model);
	trib_free(m);
	trib_free(v);
	return err;
}

const struct fn_algo_ops fn_opt_ops = {
	.name = "server-opt",
	.state_size = sizeof(struct opt_stage),
	.init = opt_init,
	.finish = opt_finish,
};
