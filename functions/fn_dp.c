// SPDX-License-Identifier: MIT
/* Central DP: ChaCha20 Gaussian noise by coordinate, RDP accounting, and the clip and DP stages. */
#include "fn_dp.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>

#include "fn_algo.h"
#include "fn_dequant.h"
#include "fn_robust.h"
#include "fn_sparse.h"

/*
 * Why ChaCha20 is written here: the noise must be reproducible from a seed (tests), seekable by
 * coordinate (shards add their own range), and from a documented CSPRNG. Debian 12 has one
 * library that gives that, libsodium (libsodium-dev 1.0.18: crypto_stream_chacha20_ietf_xor_ic,
 * or randombytes_buf_deterministic, which is the same cipher but not seekable), but it is not in
 * scripts/deps.sh. The block function is thirty lines, checked against RFC 8439's test vectors
 * (tests/functions/test_dp.c) and against libsodium's output (tests/functions/ref/dp.py); the
 * fn_dp_keystream_fn pointer lets libsodium replace it without changing a single output bit.
 */

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fn_dp.c reads keystream words as the host's bytes: little-endian hosts only"
#endif

#define ROTL32(x, r) (((x) << (r)) | ((x) >> (32 - (r))))
#define QR(a, b, c, d)                                                                            \
	do {                                                                                       \
		a += b;                                                                            \
		d ^= a;                                                                            \
		d = ROTL32(d, 16);                                                                 \
		c += d;                                                                            \
		b ^= c;                                                                            \
		b = ROTL32(b, 12);                                                                 \
		a += b;                                                                            \
		d ^= a;                                                                            \
		d = ROTL32(d, 8);                                                                  \
		c += d;                                                                            \
		b ^= c;                                                                            \
		b = ROTL32(b, 7);                                                                  \
	} while (0)

/* RFC 8439 section 2.3: one 64-byte block of keystream for the state @in. */
static void chacha20_block(const uint32_t in[16], uint8_t out[64])
{
	uint32_t x[16];
	int i;

	memcpy(x, in, sizeof(x));
	for (i = 0; i < 10; i++) {
		QR(x[0], x[4], x[8], x[12]);
		QR(x[1], x[5], x[9], x[13]);
		QR(x[2], x[6], x[10], x[14]);
		QR(x[3], x[7], x[11], x[15]);
		QR(x[0], x[5], x[10], x[15]);
		QR(x[1], x[6], x[11], x[12]);
		QR(x[2], x[7], x[8], x[13]);
		QR(x[3], x[4], x[9], x[14]);
	}
	for (i = 0; i < 16; i++)
		x[i] += in[i];
	memcpy(out, x, sizeof(x));
}

void fn_chacha20_keystream(uint8_t *out, size_t nblocks, uint32_t counter, const uint8_t nonce[12],
			   const uint8_t key[32])
{
	/* "expand 32-byte k" */
	uint32_t st[16] = { 0x61707865, 0x3320646e, 0x79622d32, 0x6b206574 };
	size_t b;

	memcpy(st + 4, key, 32);
	memcpy(st + 13, nonce, 12);
	for (b = 0; b < nblocks; b++) {
		st[12] = counter + (uint32_t)b;
		chacha20_block(st, out + 64 * b);
	}
}

void fn_dp_key_from_seed(uint64_t seed, uint8_t key[32])
{
	memset(key, 0, 32);
	memcpy(key, &seed, sizeof(seed));
}

int fn_dp_key_from_os(uint8_t key[32])
{
	size_t got = 0;

	while (got < 32) {
		ssize_t r = getrandom(key + got, 32 - got, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	return 0;
}

int fn_dp_noise_init(struct fn_dp_noise *nz, const uint8_t key[32], uint64_t round,
		     double stddev)
{
	if (!(stddev >= 0.0) || !isfinite(stddev))
		return -EINVAL;
	memcpy(nz->key, key, 32);
	memcpy(nz->nonce, "TrDP", 4);
	memcpy(nz->nonce + 4, &round, sizeof(round));
	nz->stddev = stddev;
	nz->keystream = fn_chacha20_keystream;
	return 0;
}

/* Keystream blocks made per batch: 4 normal pairs per block. */
#define BATCH_BLOCKS 16
#define PAIRS_PER_BLOCK 4

/*
 * Calls @emit(ctx, c - lo, z(c)) for every coordinate c of [lo, lo + n), in increasing order.
 * The keystream is generated BATCH_BLOCKS blocks at a time on the stack.
 */
static int normals_each(const struct fn_dp_noise *nz, uint64_t lo, size_t n,
			void (*emit)(void *ctx, size_t i, double z), void *ctx)
{
	uint8_t ks[64 * BATCH_BLOCKS];
	uint64_t hi = lo + n, p, p_end;
	const double two_pi = 6.283185307179586476925286766559;

	if (!n)
		return 0;
	if (hi < lo || (hi - 1) / 2 / PAIRS_PER_BLOCK > UINT32_MAX)
		return -EOVERFLOW;
	p = lo / 2;
	p_end = (hi - 1) / 2 + 1;
	while (p < p_end) {
		uint64_t b0 = p / PAIRS_PER_BLOCK, b1 = (p_end - 1) / PAIRS_PER_BLOCK + 1;
		size_t nb = b1 - b0 < BATCH_BLOCKS ? (size_t)(b1 - b0) : BATCH_BLOCKS;
		uint64_t first = b0 * PAIRS_PER_BLOCK, stop = (b0 + nb) * PAIRS_PER_BLOCK;

		nz->keystream(ks, nb, (uint32_t)b0, nz->nonce, nz->key);
		for (; p < p_end && p < stop; p++) {
			const uint8_t *q = ks + 16 * (p - first);
			uint64_t a, b, c = 2 * p;
			double u1, u2, r;

			memcpy(&a, q, 8);
			memcpy(&b, q + 8, 8);
			u1 = (double)((a >> 11) + 1) * 0x1p-53;
			u2 = (double)(b >> 11) * 0x1p-53;
			r = sqrt(-2.0 * log(u1));
			if (c >= lo)
				emit(ctx, (size_t)(c - lo), r * cos(two_pi * u2));
			if (c + 1 < hi)
				emit(ctx, (size_t)(c + 1 - lo), r * sin(two_pi * u2));
		}
	}
	return 0;
}

static void emit_store(void *ctx, size_t i, double z)
{
	((double *)ctx)[i] = z;
}

int fn_dp_normals(const struct fn_dp_noise *nz, uint64_t lo, size_t n, double *z)
{
	return normals_each(nz, lo, n, emit_store, z);
}

struct add_ctx {
	float *x;
	double stddev;
};

static void emit_add(void *ctx, size_t i, double z)
{
	struct add_ctx *a = ctx;

	a->x[i] = (float)((double)a->x[i] + a->stddev * z);
}

int fn_dp_noise_add(const struct fn_dp_noise *nz, float *x, uint64_t lo, size_t n)
{
	struct add_ctx a = { .x = x, .stddev = nz->stddev };

	return normals_each(nz, lo, n, emit_add, &a);
}

int fn_dp_params_check(double clip_norm, double noise_multiplier, double delta,
		       const char **field)
{
	const char *bad = NULL;

	if (!(clip_norm > 0.0) || !isfinite(clip_norm))
		bad = "clip_norm";
	else if (!(noise_multiplier > 0.0) || !isfinite(noise_multiplier))
		bad = "dp_noise_multiplier";
	else if (!(delta > 0.0 && delta < 1.0))
		bad = "dp_delta";
	if (field)
		*field = bad;
	return bad ? -EINVAL : 0;
}

/* Order i of the grid: 1.1, 1.2, ..., 10.9 (i < 99), then 12, 13, ..., 63. */
static double order_at(int i)
{
	return i < 99 ? 1.0 + (double)(i + 1) / 10.0 : (double)(12 + i - 99);
}
_Static_assert(99 + 52 == FN_DP_ORDERS, "order grid: 1.1..10.9 (99) and 12..63 (52)");

void fn_dp_orders(double out[FN_DP_ORDERS])
{
	int i;

	for (i = 0; i < FN_DP_ORDERS; i++)
		out[i] = order_at(i);
}

int fn_dp_accountant_add(struct fn_dp_accountant *acc, double z, uint64_t rounds)
{
	int i;

	if (!(z > 0.0) || !isfinite(z))
		return -EINVAL;
	for (i = 0; i < FN_DP_ORDERS; i++)
		acc->rdp[i] += (double)rounds * order_at(i) / (2.0 * z * z);
	return 0;
}

int fn_dp_accountant_epsilon(const struct fn_dp_accountant *acc, double delta, double *eps,
			     double *order)
{
	double best = INFINITY, best_order = order_at(0);
	bool spent = false;
	int i;

	if (!(delta > 0.0 && delta < 1.0))
		return -EINVAL;
	for (i = 0; i < FN_DP_ORDERS; i++)
		spent |= acc->rdp[i] != 0.0;
	if (!spent) {
		/* Nothing released yet, nothing spent (the conversion alone says ln(1/d)/62). */
		*eps = 0.0;
		if (order)
			*order = 0.0;
		return 0;
	}
	for (i = 0; i < FN_DP_ORDERS; i++) {
		double e = acc->rdp[i] + log(1.0 / delta) / (order_at(i) - 1.0);

		if (e < best) {
			best = e;
			best_order = order_at(i);
		}
	}
	*eps = best;
	if (order)
		*order = best_order;
	return 0;
}

int fn_dp_epsilon(double z, uint64_t rounds, double delta, double *eps, double *order)
{
	struct fn_dp_accountant acc;
	int err;

	memset(&acc, 0, sizeof(acc));
	err = fn_dp_accountant_add(&acc, z, rounds);
	if (err)
		return err;
	return fn_dp_accountant_epsilon(&acc, delta, eps, order);
}

/*
 * The leaf's clipping stage (FN_PAR_CLIP): an update's fold factor times min(1, C / ||u||),
 * one extra read of the update for its norm. Clipping scales the update, not its share of the
 * mean: the divisor stays. Compressed segments count as the values the fold will add, decoded
 * in blocks of 1024.
 */
static int clip_weigh(void *state, const struct fn_algo_ctx *ctx, struct fn_input *in)
{
	double sumsq = 0;
	float scale = 1.0f;

	(void)state;
	if (in->kind != SHM_DESC_UPDATE)
		return 0;
	for (uint32_t i = 0; i < in->nsegs; i++) {
		const struct shm_seg *sg = &in->segs[i];
		const uint8_t *x = in->base + sg->src_off;

		if (sg->dtype == SHM_DTYPE_F32) {
			fn_robust_sumsq_partial((const float *)(const void *)x, (size_t)sg->n_elem,
						&sumsq);
			continue;
		}
		if (sg->dtype == SHM_DTYPE_SPARSE) {
			/* Its values are its nonzeros: the densified update's norm. */
			struct fn_sparse_view v;

			if (fn_sparse_view(in->base, ctx->size, sg, false, &v))
				return -EINVAL;
			fn_robust_sumsq_partial(v.vals, (size_t)v.nnz, &sumsq);
			continue;
		}
		for (uint64_t k = 0; k < sg->n_elem; k += 1024) {
			float blk[1024];
			size_t m = sg->n_elem - k < 1024 ? (size_t)(sg->n_elem - k) : 1024;

			memset(blk, 0, m * sizeof(float));
			fn_dequant_fold(blk, x + k * (sg->dtype == SHM_DTYPE_I8 ? 1 : 2), sg->dtype,
					sg->scale, 1.0f, m);
			fn_robust_sumsq_partial(blk, m, &sumsq);
		}
	}
	/* A clip_norm that is not finite (a huge JSON number rounded to f32) clips nothing. */
	if (!fn_robust_clip_scale(sumsq, ctx->par->clip_norm, &scale))
		in->weight *= scale;
	return 0;
}

const struct fn_algo_ops fn_clip_ops = {
	.name = "clip",
	.state_size = 0,
	.weigh = clip_weigh,
};

/* The top's DP stage (FN_PAR_DP): the round's noise, keyed once when the config is taken. */
struct dp_stage {
	struct fn_dp_noise nz;
};

/* The key comes from the job's seed (FN_PAR_SEEDED, tests) or from the OS. */
static int dp_init(void *state, const struct fn_algo_ctx *ctx)
{
	struct dp_stage *s = state;
	const struct fn_params *p = ctx->par;
	uint8_t key[32];
	int err = 0;

	if (p->flags & FN_PAR_SEEDED)
		fn_dp_key_from_seed(p->seed, key);
	else
		err = fn_dp_key_from_os(key);
	if (!err)
		err = fn_dp_noise_init(&s->nz, key, ctx->cfg->round,
				       (double)p->dp_noise_multiplier * p->clip_norm);
	memset(key, 0, sizeof(key));
	return err;
}

/* Gaussian noise z*C on the sum of clipped updates, before the mean (so first at the top). */
static int dp_finish(void *state, const struct fn_algo_ctx *ctx, double total_weight)
{
	const struct dp_stage *s = state;

	(void)total_weight;
	return fn_dp_noise_add(&s->nz, ctx->acc, 0, (size_t)ctx->cfg->n_elem);
}

/* The key does not outlive the config. */
static void dp_fini(void *state)
{
	struct dp_stage *s = state;

	memset(s, 0, sizeof(*s));
}

const struct fn_algo_ops fn_dp_ops = {
	.name = "dp",
	.state_size = sizeof(struct dp_stage),
	.init = dp_init,
	.finish = dp_finish,
	.fini = dp_fini,
};
