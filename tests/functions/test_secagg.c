// SPDX-License-Identifier: MIT
/* Tests of functions/fn_secagg.c: u32 folds, range tiling, and masks that cancel exactly. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "fn_secagg.h"
#include "shm_abi.h"
#include "trib_alloc.h"
#include "trib_secagg_crypto.h"

static const size_t lengths[] = { 0, 1, 7, 8, 31, 32, 33, 1000, (1u << 16) + 5 };

static uint32_t xorshift(uint64_t *s)
{
	*s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
	return (uint32_t)(*s >> 17);
}

Test(functions_secagg, fold_u32_wraps_and_matches_generic)
{
	uint64_t seed = 42;

	cr_log_info("fn_fold_u32 runs %s", fn_fold_u32_impl());
	for (size_t l = 0; l < sizeof(lengths) / sizeof(lengths[0]); l++) {
		size_t n = lengths[l], i;
		/* One word more, used from word 1: the kernel must not need 32-byte alignment. */
		uint32_t *a = trib_calloc(n + 1, 4), *b = trib_calloc(n + 1, 4);
		uint32_t *x = trib_calloc(n + 1, 4), *ref = trib_calloc(n + 1, 4);

		cr_assert(a && b && x && ref);
		for (i = 1; i <= n; i++) {
			a[i] = b[i] = xorshift(&seed) | 0x80000000u; /* every sum wraps */
			x[i] = xorshift(&seed) | 0x80000000u;
			ref[i] = (uint32_t)(((uint64_t)a[i] + x[i]) & 0xffffffffu);
		}
		fn_fold_u32(a + 1, x + 1, n);
		fn_fold_u32_generic(b + 1, x + 1, n);
		cr_assert_arr_eq(a, ref, 4 * (n + 1), "n %zu", n);
		cr_assert_arr_eq(b, ref, 4 * (n + 1), "n %zu", n);
		trib_free(a), trib_free(b), trib_free(x), trib_free(ref);
	}
}

Test(functions_secagg, fold_u32_multi_equals_single_folds)
{
	enum { K = 11, N = 1029 };
	static uint32_t xs[K][N], a[N], b[N];
	const uint32_t *ptr[K];
	uint64_t seed = 7;

	for (size_t j = 0; j < K; j++) {
		for (size_t i = 0; i < N; i++)
			xs[j][i] = xorshift(&seed);
		ptr[j] = xs[j];
	}
	for (size_t k = 0; k <= K; k++) {
		memset(a, 0, sizeof(a)), memset(b, 0, sizeof(b));
		fn_fold_u32_multi(a, ptr, k, N);
		/* The other order: a sum mod 2^32 does not depend on it. */
		for (size_t j = k; j-- > 0;)
			fn_fold_u32_generic(b, xs[j], N);
		cr_assert_arr_eq(a, b, sizeof(a), "k = %zu", k);
	}
}

Test(functions_secagg, ranges_tile_in_order)
{
	static const uint64_t totals[] = { 0, 1, 7, 1000, 1000003, UINT64_C(1) << 36 };
	static const uint32_t parts[] = { 1, 2, 3, 7, 64, 65536 };

	for (size_t t = 0; t < 6; t++) {
		for (size_t p = 0; p < 6; p++) {
			uint64_t next = 0, first, n, lo = UINT64_MAX, hi = 0;

			for (uint32_t i = 0; i < parts[p]; i++) {
				cr_assert_eq(fn_secagg_range(totals[t], parts[p], i, &first, &n), 0);
				cr_assert_eq(first, next, "total %lu parts %u idx %u",
					     (unsigned long)totals[t], parts[p], i);
				next = first + n;
				lo = n < lo ? n : lo;
				hi = n > hi ? n : hi;
			}
			cr_assert_eq(next, totals[t]);
			cr_assert_leq(hi - lo, 1);
		}
	}
	cr_assert_eq(fn_secagg_range(10, 0, 0, &(uint64_t){ 0 }, &(uint64_t){ 0 }), -EINVAL);
	cr_assert_eq(fn_secagg_range(10, 3, 3, &(uint64_t){ 0 }, &(uint64_t){ 0 }), -EINVAL);
	cr_assert_eq(fn_secagg_range(10, 65537, 0, &(uint64_t){ 0 }, &(uint64_t){ 0 }), -EINVAL);
	cr_assert_eq(fn_secagg_range((UINT64_C(1) << 36) + 1, 1, 0, &(uint64_t){ 0 },
				     &(uint64_t){ 0 }), -EINVAL);
}

/*
 * The SecAgg+ mask algebra end to end, without the network: clients on a ring graph (k
 * neighbours each) mask x_u with their self mask and their pairwise masks; some drop before
 * sending; the survivors' masked vectors fold; the unmasking, split into ranges, removes the
 * survivors' self masks and the dropped clients' pairwise masks with their survivor neighbours.
 * The result is the survivors' sum, exactly.
 */
#define C 12
#define K 4 /* neighbours: u +- 1, u +- 2 on the ring */
#define D 1003

static bool neighbours(int u, int v)
{
	int d = (u - v + C) % C;

	return u != v && (d <= K / 2 || d >= C - K / 2);
}

Test(functions_secagg, masks_cancel_and_unmask_by_ranges_gives_the_exact_sum)
{
	static uint32_t x[C][D], y[C][D], sum[D], want[D];
	uint8_t ssk[C][32], spk[C][32], b[C][32];
	static struct fn_secagg_stream streams[C * C];
	const bool dropped[C] = { [3] = true, [8] = true };
	const uint64_t round = 5;
	uint64_t seed = 99;
	size_t ns = 0;

	for (int u = 0; u < C; u++) {
		for (int i = 0; i < 32; i++)
			ssk[u][i] = (uint8_t)xorshift(&seed), b[u][i] = (uint8_t)xorshift(&seed);
		cr_assert_eq(trib_sa_public_key(spk[u], ssk[u]), 0);
		for (int i = 0; i < D; i++)
			x[u][i] = xorshift(&seed) & 0xffff; /* quantised inputs */
	}
	/* Client side: y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv). */
	for (int u = 0; u < C; u++) {
		uint8_t key[32], shared[32];

		memcpy(y[u], x[u], sizeof(y[u]));
		cr_assert_eq(trib_sa_derive(key, b[u], 32, "self", round, (uint32_t)u, 0), 0);
		cr_assert_eq(trib_sa_prg_add_u32(y[u], D, key, 0, 1), 0);
		for (int v = 0; v < C; v++) {
			if (!neighbours(u, v))
				continue;
			cr_assert_eq(trib_sa_agree(shared, ssk[u], spk[v]), 0);
			cr_assert_eq(trib_sa_derive(key, shared, 32, "mask", round,
						    (uint32_t)(u < v ? u : v),
						    (uint32_t)(u < v ? v : u)), 0);
			cr_assert_eq(trib_sa_prg_add_u32(y[u], D, key, 0, u < v ? 1 : -1), 0);
		}
		cr_assert_neq(memcmp(y[u], x[u], sizeof(y[u])), 0);
	}
	/* Server side: fold the survivors, then the streams it can rebuild from shares. */
	for (int u = 0; u < C; u++) {
		if (dropped[u])
			continue;
		fn_fold_u32(sum, y[u], D);
		fn_fold_u32_generic(want, x[u], D);
		cr_assert_eq(trib_sa_derive(streams[ns].key, b[u], 32, "self", round, (uint32_t)u, 0),
			     0);
		streams[ns++].sign = -1;
		for (int v = 0; v < C; v++) {
			uint8_t shared[32];

			if (!dropped[v] || !neighbours(u, v))
				continue;
			/* s_vu from v's rebuilt secret key and u's public key. */
			cr_assert_eq(trib_sa_agree(shared, ssk[v], spk[u]), 0);
			cr_assert_eq(trib_sa_derive(streams[ns].key, shared, 32, "mask", round,
						    (uint32_t)(u < v ? u : v),
						    (uint32_t)(u < v ? v : u)), 0);
			/* u added +PRG for v > u: take it off, and put back what it took off. */
			streams[ns++].sign = u < v ? -1 : 1;
		}
	}
	cr_assert_neq(memcmp(sum, want, sizeof(sum)), 0, "masks must not cancel on their own");
	for (uint32_t part = 0; part < 3; part++) {
		uint64_t first, n;

		cr_assert_eq(fn_secagg_range(D, 3, part, &first, &n), 0);
		cr_assert_eq(fn_secagg_expand(sum + first, first, n, streams, ns), 0);
	}
	cr_assert_arr_eq(sum, want, sizeof(sum));
	/* A bad sign is refused. */
	streams[0].sign = 2;
	cr_assert_eq(fn_secagg_expand(sum, 0, 1, streams, 1), -EINVAL);
}

/*
 * What the server stores is a masked vector (and sums of them): with a structured input (a ramp
 * of small integers, the worst case for a leak), every byte of the masked words must look
 * uniform. Chi-square over 256 byte values, 255 degrees of freedom: the 1e-6 tail starts near
 * 382; a mask that leaked the input (e.g. a stream of zeros) scores in the millions.
 */
static double chi2_bytes(const uint32_t *y, size_t n)
{
	static double count[256];
	const uint8_t *b = (const uint8_t *)y;
	double want = (double)n * 4 / 256, chi = 0;

	memset(count, 0, sizeof(count));
	for (size_t i = 0; i < 4 * n; i++)
		count[b[i]]++;
	for (int v = 0; v < 256; v++)
		chi += (count[v] - want) * (count[v] - want) / want;
	return chi;
}

Test(functions_secagg, masked_vectors_and_their_sums_pass_a_uniformity_test)
{
	enum { N = 1 << 18 };
	static uint32_t y[N], partial[N];
	struct fn_secagg_stream st[4];

	for (int j = 0; j < 4; j++) {
		memset(st[j].key, 0x11 * (j + 1), 32);
		st[j].sign = j % 2 ? -1 : 1;
	}
	for (int c = 0; c < 3; c++) {
		for (uint32_t i = 0; i < N; i++)
			y[i] = (i % 1000) * 3; /* n_u * q: small, structured */
		cr_assert(chi2_bytes(y, N) > 1e5, "the input itself is far from uniform");
		st[0].key[0] = (uint8_t)c; /* a different self mask per client */
		cr_assert_eq(fn_secagg_expand(y, 0, N, st, 4), 0);
		cr_assert_lt(chi2_bytes(y, N), 382.0, "client %d's masked vector", c);
		fn_fold_u32(partial, y, N);
		cr_assert_lt(chi2_bytes(partial, N), 382.0, "the partial sum of %d", c + 1);
	}
}

/*
 * The pipeline rows of a secure job: a leaf and a top compose to the masked-sum base alone (no
 * division, no server step), they fold I32 updates and F32-labelled partials mod 2^32; a shard
 * composes to the unmasking alone and writes its range of sum sign * PRG whole, so the shards
 * side by side equal fn_secagg_expand over the whole vector, whatever the output held before.
 */
Test(functions_secagg, rows_fold_wrapping_sums_and_shards_expand_their_ranges)
{
	enum { N = 1001, PARTS = 3, NS = 3 };
	static uint8_t arena[65536] __attribute__((aligned(64)));
	struct fn_config cfg = { .version = FN_ABI_VERSION, .algorithm = FN_ALGO_SECAGG,
				 .n_elem = N, .role = FN_ROLE_TOP, .expected = 2 };
	struct fn_params par;
	struct fn_pipeline p;
	struct fn_algo_ctx ctx;
	struct shm_seg segs[2];
	struct shm_desc d;
	struct fn_input in;
	struct fn_secagg_task *t = (struct fn_secagg_task *)(void *)arena;
	struct fn_secagg_stream *st = (struct fn_secagg_stream *)(void *)(arena + 64);
	uint32_t *upd = (uint32_t *)(void *)(arena + 4096), *part = upd + 2048;
	uint32_t *acc = part + 2048, *ref = acc + 2048;
	void *block;

	memset(&par, 0, sizeof(par));
	cr_assert_eq(fn_pipeline_compose(&p, &cfg, &par, NULL), 0);
	cr_assert_eq(p.n, 1);
	cr_assert_eq(p.ops[0], &fn_secagg_ops);
	cr_assert(!p.ops[0]->finish, "a masked sum is never divided");
	for (uint32_t i = 0; i < N; i++) {
		upd[i] = 0xfffffff0u + i;
		part[i] = 0x20u + i;
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.cfg = &cfg;
	ctx.par = &par;
	ctx.base = arena;
	ctx.size = sizeof(arena);
	ctx.acc = (float *)(void *)acc;
	memset(acc, 0, N * 4);
	block = trib_calloc(1, fn_pipeline_state_size(&p) + 1);
	cr_assert_eq(fn_pipeline_init(&p, block, &ctx), 0);
	memset(segs, 0, sizeof(segs));
	segs[0] = (struct shm_seg){ .src_off = 4096, .n_elem = N, .dtype = SHM_DTYPE_I32 };
	segs[1] = (struct shm_seg){ .src_off = 4096 + 8192, .n_elem = N, .dtype = SHM_DTYPE_F32 };
	memcpy(arena + 40000, segs, sizeof(segs));
	memset(&d, 0, sizeof(d));
	d.kind = SHM_DESC_UPDATE;
	d.nsegs = 1;
	d.segs_off = 40000;
	d.weight = 7;
	cr_assert_eq(fn_input_from_desc(&ctx, &d, &in), 0);
	cr_assert_eq(fn_pipeline_fold(&p, &ctx, &in), 0);
	cr_assert_eq(in.weight, 1.0, "n_u is a masked coordinate, not the descriptor's weight");
	d.kind = SHM_DESC_PARTIAL;
	d.segs_off = 40000 + sizeof(struct shm_seg);
	cr_assert_eq(fn_input_from_desc(&ctx, &d, &in), 0);
	cr_assert_eq(fn_pipeline_fold(&p, &ctx, &in), 0);
	for (uint32_t i = 0; i < N; i++)
		cr_assert_eq(acc[i], (uint32_t)(0xfffffff0u + i + 0x20u + i), "word %u", i);
	fn_pipeline_fini(&p);
	trib_free(block);

	/* Shards: three streams, three ranges, an output full of junk first. */
	cfg.role = FN_ROLE_SHARD;
	cr_assert_eq(fn_pipeline_compose(&p, &cfg, &par, NULL), 0);
	cr_assert_eq(p.n, 1);
	cr_assert_eq(p.ops[0], &fn_secagg_unmask_ops);
	memset(t, 0, sizeof(*t));
	t->version = FN_ABI_VERSION;
	t->parts = PARTS;
	t->count = NS;
	t->words = N;
	t->streams_off = 64;
	for (int s = 0; s < NS; s++) {
		memset(st[s].key, 0x11 * (s + 1), 32);
		st[s].sign = s == 1 ? -1 : 1;
	}
	/* One dropped client's pairwise stream: its key derived by each shard. */
	{
		struct fn_secagg_pair *pr = (struct fn_secagg_pair *)(void *)(arena + 1024);
		struct fn_secagg_stream ps;
		uint8_t peer_sk[32];

		memset(pr, 0, sizeof(*pr));
		memset(pr->sk, 0x33, 32);
		memset(peer_sk, 0x44, 32);
		cr_assert_eq(trib_sa_public_key(pr->pk, peer_sk), 0);
		pr->lo = 1;
		pr->hi = 2;
		pr->sign = -1;
		t->npairs = 1;
		t->pairs_off = 1024;
		t->round = 9;
		memset(ref, 0, N * 4);
		cr_assert_eq(fn_secagg_pair_key(pr, 9, &ps), 0);
		cr_assert_eq(ps.sign, -1);
		cr_assert_eq(fn_secagg_expand(ref, 0, N, &ps, 1), 0);
	}
	cr_assert_eq(fn_secagg_expand(ref, 0, N, st, NS), 0);
	memset(acc, 0xa5, N * 4);
	par.state_off = 0;
	block = trib_calloc(1, fn_pipeline_state_size(&p) + 1);
	cr_assert_eq(fn_pipeline_init(&p, block, &ctx), 0);
	for (uint32_t i = PARTS; i-- > 0;) {
		cfg.index = i;
		cr_assert_eq(fn_pipeline_shard(&p, &ctx), 0);
	}
	cr_assert_arr_eq(acc, ref, N * 4, "the shards' ranges side by side are the expansion");
	/* A task that lies: refused, nothing written past the arena. */
	t->words = N + 1;
	cr_assert_eq(fn_pipeline_shard(&p, &ctx), -EINVAL);
	t->words = N;
	t->streams_off = sizeof(arena) - 10;
	cr_assert_eq(fn_pipeline_shard(&p, &ctx), -EINVAL);
	fn_pipeline_fini(&p);
	trib_free(block);
}
