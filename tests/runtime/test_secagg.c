// SPDX-License-Identifier: MIT
/* runtime/node/rt_secagg.c driven by simulated clients (the client side written with core's
 * primitives): dropouts at each stage, exact sums, failure below the threshold, refusals. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rt_secagg.h"
#include "trib_alloc.h"
#include "trib_secagg_crypto.h"
#include "trib_shamir.h"

#define MAXC 64
#define DIM 257

struct held {
	bool have;
	uint8_t s_share[RT_SECAGG_SHARE_BYTES], b_share[RT_SECAGG_SHARE_BYTES];
};

struct sim {
	uint8_t c_sk[MAXC][32], s_sk[MAXC][32], b[MAXC][32];
	uint32_t x[MAXC][DIM + 1];
	struct held held[MAXC][MAXC]; /* held[u][v]: v's shares u decrypted */
	bool sent_masked[MAXC];
	uint64_t rng;
};

static uint32_t rnd32(struct sim *s)
{
	s->rng ^= s->rng << 13, s->rng ^= s->rng >> 7, s->rng ^= s->rng << 17;
	return (uint32_t)(s->rng >> 11);
}

static void rnd_bytes(struct sim *s, uint8_t *p, size_t n)
{
	while (n--)
		*p++ = (uint8_t)rnd32(s);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static void sim_init(struct sim *s, const struct rt_secagg_cfg *cfg, uint64_t seed)
{
	uint32_t qmax = (1u << cfg->bits) - 1;

	memset(s, 0, sizeof(*s));
	s->rng = seed;
	for (uint32_t u = 0; u < cfg->n_clients; u++) {
		uint32_t n_u = 1 + rnd32(s) % 50; /* examples: the fedavg weight */

		rnd_bytes(s, s->c_sk[u], 32);
		rnd_bytes(s, s->s_sk[u], 32);
		rnd_bytes(s, s->b[u], 32);
		for (uint32_t i = 0; i < cfg->dim; i++)
			s->x[u][i] = n_u * (rnd32(s) % (qmax + 1));
		s->x[u][cfg->dim] = n_u;
	}
}

/*
 * A lying client (tests of the unmask stage): the first neighbour of liar_of, the first of the t
 * reveals the server would combine, shifts its share of liar_of's self-mask seed by 1 / lambda in
 * chunk 0, so that Lagrange rebuilds the seed + 1: a valid-looking, wrong seed.
 */
static uint32_t liar_of = UINT32_MAX;

static void lie(struct rt_secagg *r, const struct rt_secagg_cfg *cfg, uint32_t u, uint32_t v,
		const uint8_t *honest, uint8_t *out)
{
	const uint32_t *ids;
	uint32_t k = rt_secagg_neighbours(r, v, &ids);
	uint64_t num = 1, den = 1;
	struct trib_shamir_share sh;

	cr_assert_geq(k, cfg->threshold + 2);
	cr_assert_eq(ids[0], u);
	for (uint32_t j = 1; j < cfg->threshold; j++) {
		num = trib_gf61_mul(num, ids[j] + 1);
		den = trib_gf61_mul(den, trib_gf61_sub(ids[j] + 1, u + 1));
	}
	cr_assert_eq(trib_shamir_decode(honest, 32, &sh), 0);
	sh.y[0] = trib_gf61_add(sh.y[0], trib_gf61_inv(trib_gf61_mul(num, trib_gf61_inv(den))));
	trib_shamir_encode(&sh, 32, out);
}

/* Drop lists: bit 0 never advertises, 1 does not share, 2 sends no masked input, 3 no unmask. */
static void run(struct rt_secagg *r, struct sim *s, const struct rt_secagg_cfg *cfg,
		const uint8_t *drop)
{
	uint32_t n = cfg->n_clients;

	for (uint32_t u = 0; u < n; u++) {
		uint8_t c_pk[32], s_pk[32];

		if (drop[u] & 1)
			continue;
		cr_assert_eq(trib_sa_public_key(c_pk, s->c_sk[u]), 0);
		cr_assert_eq(trib_sa_public_key(s_pk, s->s_sk[u]), 0);
		cr_assert_eq(rt_secagg_advertise(r, u, c_pk, s_pk), 0);
		cr_assert_eq(rt_secagg_advertise(r, u, c_pk, s_pk), -EALREADY);
	}
	{
		bool any = false;

		for (uint32_t u = 0; u < n; u++)
			any |= drop[u] & 1;
		cr_assert_eq(rt_secagg_stage_complete(r), !any);
	}
	rt_secagg_end_stage(r);
	if (rt_secagg_stage(r) != RT_SECAGG_SHARE)
		return;
	for (uint32_t u = 0; u < n; u++) {
		const uint32_t *ids;
		uint32_t k = rt_secagg_neighbours(r, u, &ids), pts[MAXC];
		struct trib_shamir_share ss[MAXC], bs[MAXC];
		static uint8_t ct[MAXC][RT_SECAGG_CT_BYTES];
		const uint8_t *ctp[MAXC];
		uint8_t seed[32];

		if (drop[u] & 3)
			continue;
		cr_assert_gt(k, 0, "client %u has no neighbours", u);
		for (uint32_t i = 0; i < k; i++)
			pts[i] = ids[i] + 1;
		rnd_bytes(s, seed, 32);
		cr_assert_eq(trib_shamir_split(s->s_sk[u], 32, cfg->threshold, pts, k, seed, ss), 0);
		rnd_bytes(s, seed, 32);
		cr_assert_eq(trib_shamir_split(s->b[u], 32, cfg->threshold, pts, k, seed, bs), 0);
		for (uint32_t i = 0; i < k; i++) {
			const uint8_t *c_pk, *s_pk;
			uint8_t shared[32], key[32], pt[RT_SECAGG_PT_BYTES], ad[8];

			cr_assert_eq(rt_secagg_keys(r, ids[i], &c_pk, &s_pk), 0);
			cr_assert_eq(trib_sa_agree(shared, s->c_sk[u], c_pk), 0);
			cr_assert_eq(trib_sa_derive(key, shared, 32, "share", cfg->round, u, ids[i]),
				     0);
			put32(pt, u), put32(pt + 4, ids[i]);
			for (int j = 0; j < 8; j++)
				pt[8 + j] = (uint8_t)(cfg->round >> (8 * j));
			trib_shamir_encode(&ss[i], 32, pt + 16);
			trib_shamir_encode(&bs[i], 32, pt + 16 + RT_SECAGG_SHARE_BYTES);
			memcpy(ad, pt, 8);
			rnd_bytes(s, ct[i], 12);
			cr_assert_eq(trib_sa_seal(ct[i] + 12, pt, sizeof(pt), ad, 8, ct[i], key), 0);
			ctp[i] = ct[i];
		}
		cr_assert_eq(rt_secagg_share(r, u, ids, ctp, k - 1), -EINVAL, "a short list");
		cr_assert_eq(rt_secagg_share(r, u, ids, ctp, k), 0);
	}
	{
		bool any = false; /* an advertiser that did not share keeps the stage open */

		for (uint32_t u = 0; u < n; u++)
			any |= (drop[u] & 3) == 2;
		cr_assert_eq(rt_secagg_stage_complete(r), !any);
	}
	rt_secagg_end_stage(r);
	if (rt_secagg_stage(r) != RT_SECAGG_MASKED)
		return;
	for (uint32_t u = 0; u < n; u++) {
		uint32_t from[MAXC], y[DIM + 1];
		const uint8_t *ct[MAXC];
		uint32_t m = rt_secagg_inbox(r, u, from, ct, MAXC);
		uint8_t key[32];

		/* Out of U2 (never advertised or shared): its input is refused, nothing folded. */
		if (drop[u] & 3)
			cr_assert_eq(rt_secagg_masked(r, u, s->x[u], cfg->dim + 1), -EPERM);
		if (drop[u] & 7)
			continue;
		memcpy(y, s->x[u], sizeof(y));
		cr_assert_eq(trib_sa_derive(key, s->b[u], 32, "self", cfg->round, u, 0), 0);
		cr_assert_eq(trib_sa_prg_add_u32(y, cfg->dim + 1, key, 0, 1), 0);
		for (uint32_t i = 0; i < m; i++) {
			uint32_t v = from[i];
			const uint8_t *c_pk, *s_pk;
			uint8_t shared[32], pt[RT_SECAGG_PT_BYTES], ad[8];

			cr_assert_eq(rt_secagg_keys(r, v, &c_pk, &s_pk), 0);
			cr_assert_eq(trib_sa_agree(shared, s->c_sk[u], c_pk), 0);
			cr_assert_eq(trib_sa_derive(key, shared, 32, "share", cfg->round, v, u), 0);
			put32(ad, v), put32(ad + 4, u);
			cr_assert_eq(trib_sa_open(pt, ct[i] + 12, RT_SECAGG_CT_BYTES - 12, ad, 8,
						  ct[i], key), 0, "share from %u to %u", v, u);
			cr_assert_arr_eq(pt, ad, 8);
			s->held[u][v].have = true;
			memcpy(s->held[u][v].s_share, pt + 16, RT_SECAGG_SHARE_BYTES);
			memcpy(s->held[u][v].b_share, pt + 16 + RT_SECAGG_SHARE_BYTES,
			       RT_SECAGG_SHARE_BYTES);
			/* The pairwise mask with every neighbour that shared. */
			cr_assert_eq(trib_sa_agree(shared, s->s_sk[u], s_pk), 0);
			cr_assert_eq(trib_sa_derive(key, shared, 32, "mask", cfg->round,
						    u < v ? u : v, u < v ? v : u), 0);
			cr_assert_eq(trib_sa_prg_add_u32(y, cfg->dim + 1, key, 0, u < v ? 1 : -1), 0);
		}
		cr_assert_eq(rt_secagg_masked(r, u, y, cfg->dim), -EINVAL, "a short vector");
		cr_assert_eq(rt_secagg_masked(r, u, y, cfg->dim + 1), 0);
		s->sent_masked[u] = true;
	}
	rt_secagg_end_stage(r);
	if (rt_secagg_stage(r) != RT_SECAGG_UNMASK)
		return;
	for (uint32_t u = 0; u < n; u++) {
		uint32_t v[MAXC];
		enum rt_secagg_kind kind[MAXC];
		const uint8_t *sh[MAXC];
		uint32_t m = rt_secagg_reveal_list(r, u, v, kind, MAXC);
		static uint8_t lied[RT_SECAGG_SHARE_BYTES];
		const uint32_t *ids;

		/* Out of U3: no reveal list and its reveals are refused. */
		if (drop[u] & 7) {
			cr_assert_eq(m, 0);
			cr_assert_eq(rt_secagg_unmask(r, u, v, sh, 0), -EPERM);
		}
		if (drop[u] & 15)
			continue;
		for (uint32_t i = 0; i < m; i++) {
			cr_assert(s->held[u][v[i]].have, "asked for %u's share, not held by %u", v[i],
				  u);
			/* Never both for one v: the kind follows whether v sent its input. */
			cr_assert_eq(kind[i] == RT_SECAGG_REVEAL_SELF, s->sent_masked[v[i]]);
			sh[i] = kind[i] == RT_SECAGG_REVEAL_SELF ? s->held[u][v[i]].b_share :
								   s->held[u][v[i]].s_share;
			if (v[i] == liar_of && kind[i] == RT_SECAGG_REVEAL_SELF &&
			    rt_secagg_neighbours(r, v[i], &ids) && ids[0] == u) {
				lie(r, cfg, u, v[i], sh[i], lied);
				sh[i] = lied;
			}
		}
		cr_assert_eq(rt_secagg_unmask(r, u, v, sh, m), 0);
	}
	rt_secagg_end_stage(r);
}

static void check_exact(struct rt_secagg *r, struct sim *s, const struct rt_secagg_cfg *cfg,
			uint32_t want_survivors)
{
	static uint32_t want[DIM + 1];
	static float out[DIM];
	const uint32_t *sum;
	uint32_t w, count = 0;

	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_DONE, "round %s: %s",
		     rt_secagg_stage_name(rt_secagg_stage(r)), rt_secagg_why(r));
	memset(want, 0, sizeof(want));
	for (uint32_t u = 0; u < cfg->n_clients; u++) {
		if (!s->sent_masked[u])
			continue;
		count++;
		for (uint32_t i = 0; i <= cfg->dim; i++)
			want[i] += s->x[u][i];
	}
	cr_assert_eq(count, want_survivors);
	cr_assert_eq(rt_secagg_result(r, &sum, &w, out), 0);
	cr_assert_arr_eq(sum, want, (cfg->dim + 1) * sizeof(uint32_t));
	cr_assert_eq(w, want[cfg->dim]);
	for (uint32_t i = 0; i < cfg->dim; i++) {
		double ref = (double)want[i] / w * 2 * cfg->clip / ((1u << cfg->bits) - 1) -
			     cfg->clip;

		cr_assert_float_eq(out[i], (float)ref, 1e-6, "value %u", i);
	}
}

static struct rt_secagg_cfg cfg_of(uint32_t n, uint32_t k, uint32_t t, uint64_t round)
{
	struct rt_secagg_cfg c = { .n_clients = n, .threshold = t, .neighbours = k, .bits = 16,
				   .clip = 1.0f, .dim = DIM, .round = round };

	memset(c.graph_seed, (int)round, 32);
	return c;
}

/*
 * Drops pct% of the clients still in the round at each of three stages (before share, before
 * masked input, before unmask), picked by a stride; returns how many send a masked input.
 */
static uint32_t drops(uint8_t *drop, uint32_t n, uint32_t pct)
{
	uint32_t left = n, survivors = n, u = 0;

	memset(drop, 0, n);
	for (int stage = 0; stage < 3; stage++) {
		uint32_t per = left * pct / 100;

		for (uint32_t j = 0; j < per; u++) {
			uint32_t c = (u * 7) % n;

			if (drop[c])
				continue;
			drop[c] = (uint8_t)(2u << stage);
			j++;
		}
		left -= per;
		if (stage < 2)
			survivors -= per;
	}
	return survivors;
}

Test(runtime_secagg, dropouts_of_10_percent_at_each_stage_unmask_exactly, .timeout = 60)
{
	static struct sim s;
	struct rt_secagg_cfg cfg = cfg_of(30, 10, 5, 1);
	uint8_t drop[MAXC];
	struct rt_secagg *r;
	uint32_t survivors = drops(drop, cfg.n_clients, 10);

	sim_init(&s, &cfg, 11);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	check_exact(r, &s, &cfg, survivors);
	rt_secagg_free(r);
}

Test(runtime_secagg, dropouts_of_30_percent_at_each_stage_unmask_exactly, .timeout = 60)
{
	static struct sim s;
	struct rt_secagg_cfg cfg = cfg_of(40, 24, 4, 2);
	uint8_t drop[MAXC];
	struct rt_secagg *r;
	uint32_t survivors = drops(drop, cfg.n_clients, 30);

	sim_init(&s, &cfg, 12);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	check_exact(r, &s, &cfg, survivors);
	rt_secagg_free(r);
}

Test(runtime_secagg, below_threshold_fails_unmasks_nothing_and_next_round_works, .timeout = 60)
{
	static struct sim s;
	struct rt_secagg_cfg cfg = cfg_of(12, 6, 5, 3);
	uint8_t drop[MAXC] = { 0 };
	struct rt_secagg *r;
	const uint32_t *sum;
	uint32_t w;
	float out[DIM];

	for (uint32_t u = 0; u < 8; u++)
		drop[u] = 4; /* 8 of 12 send no masked input: 4 left, threshold 5 */
	sim_init(&s, &cfg, 13);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_FAILED);
	cr_assert_str_eq(rt_secagg_why(r),
			 "masked: 4 clients sent a masked input; the threshold is 5");
	cr_assert_eq(rt_secagg_result(r, &sum, &w, out), -EBUSY);
	rt_secagg_free(r);

	cfg = cfg_of(12, 6, 5, 4);
	memset(drop, 0, sizeof(drop));
	drop[3] = 8;
	sim_init(&s, &cfg, 14);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	check_exact(r, &s, &cfg, 12);
	rt_secagg_free(r);
}

Test(runtime_secagg, a_secret_with_fewer_than_t_reveals_fails_the_round, .timeout = 60)
{
	static struct sim s;
	struct rt_secagg_cfg cfg = cfg_of(8, 4, 4, 7); /* t = k: every neighbour must answer */
	uint8_t drop[MAXC] = { 0 };
	struct rt_secagg *r;
	const uint32_t *sum;
	uint32_t w;
	float out[DIM];

	drop[5] = 8; /* sends its masked input, then no reveals: its neighbours keep 3 of 4 */
	sim_init(&s, &cfg, 17);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_FAILED);
	cr_assert(strstr(rt_secagg_why(r), "self-mask seed could not be rebuilt (fewer shares "
					   "than the threshold)"), "%s", rt_secagg_why(r));
	cr_assert_eq(rt_secagg_result(r, &sum, &w, out), -EBUSY);
	rt_secagg_free(r);
}

Test(runtime_secagg, a_crafted_share_of_a_seed_fails_the_round_naming_the_liar)
{
	static struct sim s;
	struct rt_secagg_cfg cfg = cfg_of(12, 8, 4, 9);
	uint8_t drop[MAXC] = { 0 };
	struct rt_secagg *r;
	const uint32_t *ids;
	const uint32_t *sum;
	uint32_t liar, w;
	float out[DIM];
	char want[200];

	/* The liar is 6's first neighbour: the graph depends on the seed and who advertised. */
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	for (uint32_t u = 0; u < cfg.n_clients; u++) {
		uint8_t pk[32] = { 9, (uint8_t)(u + 1) } /* {1, 0...} is of low order: refused */;

		cr_assert_eq(rt_secagg_advertise(r, u, pk, pk), 0);
	}
	rt_secagg_end_stage(r);
	cr_assert_gt(rt_secagg_neighbours(r, 6, &ids), 0);
	liar = ids[0];
	rt_secagg_free(r);

	sim_init(&s, &cfg, 19);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	liar_of = 6;
	run(r, &s, &cfg, drop);
	liar_of = UINT32_MAX;
	/* Unchecked, the round is DONE with client 6's self mask off: a wrong sum, nothing said. */
	snprintf(want, sizeof(want), "unmask: client 6's self-mask seed could not be rebuilt (the "
		 "shares do not agree: the one client %u revealed is off; %u or 6 lied)", liar, liar);
	cr_assert_str_eq(rt_secagg_why(r), want);
	cr_assert_eq(rt_secagg_result(r, &sum, &w, out), -EBUSY);
	rt_secagg_free(r);
}

/* Advertise all of @n, share all but those with @skip[u] (dummy ciphertexts); ends SHARE. */
static double share_all_but(struct rt_secagg *r, uint32_t n, const uint8_t *skip)
{
	static uint8_t ctb[RT_SECAGG_MAX_NEIGHBOURS][RT_SECAGG_CT_BYTES];
	const uint8_t *ct[RT_SECAGG_MAX_NEIGHBOURS];
	uint8_t pk[32] = { 9 };
	struct timespec a, b;

	for (uint32_t i = 0; i < RT_SECAGG_MAX_NEIGHBOURS; i++)
		ct[i] = ctb[i];
	for (uint32_t u = 0; u < n; u++)
		cr_assert_eq(rt_secagg_advertise(r, u, pk, pk), 0);
	rt_secagg_end_stage(r);
	for (uint32_t u = 0; u < n; u++) {
		const uint32_t *ids;
		uint32_t m = rt_secagg_neighbours(r, u, &ids);

		if (!skip[u])
			cr_assert_eq(rt_secagg_share(r, u, ids, ct, m), 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	rt_secagg_end_stage(r);
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

Test(runtime_secagg, share_pruning_is_the_fixpoint_and_linear)
{
	struct rt_secagg_cfg cfg = cfg_of(60, 8, 4, 21);
	static uint8_t skip[40000];
	static uint32_t nbr[60][8], nn[60];
	bool alive[60], changed = true;
	struct rt_secagg *r;
	uint32_t want = 0, rng = 7;
	double secs;

	/* Up to 15 of 60 do not share: U2 is what passes until no change leave (the definition);
	 * some that shared are pruned (fewer than t = 4 of their k = 8 neighbours left). */
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	for (uint32_t u = 0; u < 15; u++)
		skip[(rng = rng * 1103515245u + 12345u) % 60] = 1;
	{
		uint8_t pk[32] = { 9 };

		for (uint32_t u = 0; u < 60; u++)
			cr_assert_eq(rt_secagg_advertise(r, u, pk, pk), 0);
	}
	rt_secagg_end_stage(r);
	for (uint32_t u = 0; u < 60; u++) {
		const uint32_t *ids;

		nn[u] = rt_secagg_neighbours(r, u, &ids);
		memcpy(nbr[u], ids, nn[u] * sizeof(*ids));
		alive[u] = !skip[u];
	}
	rt_secagg_free(r);
	while (changed) {
		changed = false;
		for (uint32_t u = 0; u < 60; u++) {
			uint32_t left = 0;

			for (uint32_t i = 0; i < nn[u]; i++)
				left += alive[nbr[u][i]];
			if (alive[u] && left < cfg.threshold)
				alive[u] = false, changed = true;
		}
	}
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	share_all_but(r, 60, skip);
	for (uint32_t u = 0; u < 60; u++) {
		const uint32_t *ids;

		want += alive[u];
		cr_assert_eq(rt_secagg_neighbours(r, u, &ids) > 0, alive[u], "client %u", u);
	}
	cr_assert_eq(rt_secagg_alive(r), want);
	cr_assert(want > 0 && want < 45, "no pruning to check: %u kept (%s)", want,
		  rt_secagg_why(r));
	rt_secagg_free(r);

	/* t = k and one client silent: the drop spreads round the whole ring. Passes until no
	 * change took O(n^2) here (seconds: 40000 clients); the worklist is O(n k). */
	memset(skip, 0, sizeof(skip));
	skip[0] = 1;
	cfg = cfg_of(40000, 10, 10, 22);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	secs = share_all_but(r, 40000, skip);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_FAILED);
	cr_assert_eq(rt_secagg_alive(r), 0);
	cr_assert_lt(secs, 1.5, "pruning 40000 clients took %.2f s", secs);
	rt_secagg_free(r);
}

Test(runtime_secagg, stage_completeness_is_constant_time)
{
	struct rt_secagg_cfg cfg = cfg_of(100000, 2, 1, 23);
	struct rt_secagg *r;
	uint8_t pk[32] = { 9 };
	struct timespec a, b;
	int complete = 0;

	cfg.bits = 8; /* 100000 x (2^16 - 1) would wrap the u32 sum: refused (max_samples 0) */
	/* Every stage request asks; a scan of 100000 clients was 1.5 ms a call (ASan). */
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	for (uint32_t u = 0; u + 1 < cfg.n_clients; u++)
		cr_assert_eq(rt_secagg_advertise(r, u, pk, pk), 0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 10000; i++)
		complete += rt_secagg_stage_complete(r);
	clock_gettime(CLOCK_MONOTONIC, &b);
	cr_assert_eq(complete, 0);
	cr_assert_lt((double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9, 1.0);
	cr_assert_eq(rt_secagg_advertise(r, cfg.n_clients - 1, pk, pk), 0);
	cr_assert(rt_secagg_stage_complete(r));
	rt_secagg_end_stage(r);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_SHARE);
	cr_assert_eq(rt_secagg_stage_complete(r), 0, "nobody shared yet");
	rt_secagg_free(r);
}

Test(runtime_secagg, too_few_advertise_fails_at_once)
{
	static struct sim s;
	struct rt_secagg_cfg cfg = cfg_of(10, 4, 4, 5);
	uint8_t drop[MAXC];
	struct rt_secagg *r;

	memset(drop, 1, sizeof(drop));
	drop[0] = drop[1] = drop[2] = 0;
	sim_init(&s, &cfg, 15);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_FAILED);
	cr_assert_str_eq(rt_secagg_why(r), "advertise: 3 clients advertised keys; the threshold 4 "
					   "needs at least 5");
	rt_secagg_free(r);
}

/* n_u's bound: the sum of n_u * q over every client, and of n_u, stays below 2^32. */
Test(runtime_secagg, max_samples_keeps_the_weighted_sum_below_2_32)
{
	struct rt_secagg_cfg cfg = cfg_of(100, 4, 3, 8);
	char why[256];

	cr_assert_eq(rt_secagg_max_samples(100, 16), 655); /* 100 x 655 x 65535 < 2^32 */
	cr_assert_lt(100ull * 655 * 65535, 1ull << 32);
	cr_assert_geq(100ull * 656 * 65535, 1ull << 32);
	cr_assert_eq(rt_secagg_max_samples(1, 1), UINT32_MAX);
	cr_assert_eq(rt_secagg_max_samples(300, 24), 0, "even n_u = 1 wraps");
	cfg.max_samples = 655;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), 0);
	cfg.max_samples = 656;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), -EINVAL);
	cr_assert_str_eq(why, "secagg.max_samples 656: 100 clients x 656 samples x (2^16 - 1) "
			      "overflows the 32-bit sum; allowed 1 to 655 with these clients and bits");
	cfg.max_samples = 0, cfg.n_clients = 300, cfg.bits = 24;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), -EINVAL);
	cr_assert_str_eq(why, "secagg.bits 24: 300 clients x (2^24 - 1) overflows the 32-bit sum; "
			      "use fewer bits");
}

/*
 * A client's n_u or values are masked: no check of its input is possible, so a lie shows only
 * in the unmasked sum. One outside what honest inputs make is not published.
 */
Test(runtime_secagg, a_lying_clients_weight_or_value_fails_the_round, .timeout = 60)
{
	static struct sim s;
	struct rt_secagg_cfg cfg = cfg_of(12, 6, 3, 9);
	uint8_t drop[MAXC] = { 0 };
	struct rt_secagg *r;
	const uint32_t *sum;
	uint32_t w;
	float out[DIM];

	cfg.max_samples = 50; /* sim_init's n_u are 1 to 50 */
	sim_init(&s, &cfg, 18);
	s.x[4][DIM] = 3000000000u; /* a weight no client may have: the sum of n_u says so */
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_FAILED);
	cr_assert(strstr(rt_secagg_why(r), "unmasked weight") &&
		  strstr(rt_secagg_why(r), "outside 1 to 600 (12 inputs x max_samples 50)"), "%s",
		  rt_secagg_why(r));
	cr_assert_eq(rt_secagg_result(r, &sum, &w, out), -EBUSY, "nothing is published");
	rt_secagg_free(r);

	sim_init(&s, &cfg, 19);
	s.x[7][5] = 0xF0000000u; /* a value far above n_u * (2^b - 1) */
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_FAILED);
	cr_assert(strstr(rt_secagg_why(r), "unmasked value 5 is"), "%s", rt_secagg_why(r));
	rt_secagg_free(r);

	/* Honest inputs at the bound pass: every n_u = max_samples, every q = 2^b - 1. */
	sim_init(&s, &cfg, 20);
	for (uint32_t u = 0; u < cfg.n_clients; u++) {
		for (uint32_t i = 0; i < DIM; i++)
			s.x[u][i] = 50u * 65535u;
		s.x[u][DIM] = 50;
	}
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	run(r, &s, &cfg, drop);
	check_exact(r, &s, &cfg, 12);
	rt_secagg_free(r);
}

/* A low-order key would make every agreement with it zero: refused, nothing kept. */
Test(runtime_secagg, a_low_order_key_is_refused_at_advertise)
{
	struct rt_secagg_cfg cfg = cfg_of(6, 4, 3, 10);
	struct rt_secagg *r;
	uint8_t good[32] = { 9 }, zero[32] = { 0 }, one[32] = { 1 };

	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	cr_assert_eq(rt_secagg_advertise(r, 0, zero, good), -EINVAL);
	cr_assert_eq(rt_secagg_advertise(r, 0, good, one), -EINVAL);
	cr_assert_eq(rt_secagg_advertise(r, 0, good, good), 0, "refusals kept nothing");
	rt_secagg_free(r);
}

Test(runtime_secagg, refusals_change_nothing)
{
	struct rt_secagg_cfg cfg = cfg_of(6, 4, 3, 6);
	struct rt_secagg *r;
	uint8_t pk[32] = { 9 }, share[RT_SECAGG_SHARE_BYTES] = { 0 };
	const uint8_t *sh[1] = { share };
	uint32_t y[DIM + 1] = { 0 }, v = 1;
	char why[256];

	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);
	cr_assert_eq(rt_secagg_advertise(r, 6, pk, pk), -ESRCH);
	cr_assert_eq(rt_secagg_masked(r, 0, y, DIM + 1), -EBUSY);
	cr_assert_eq(rt_secagg_unmask(r, 0, &v, sh, 1), -EBUSY);
	cr_assert_eq(rt_secagg_stage_complete(r), 0);
	rt_secagg_free(r);

	cfg.neighbours = 3;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), -EINVAL);
	cr_assert_str_eq(why, "secagg.neighbours 3: allowed an even number 2 to 254");
	cfg.neighbours = 4, cfg.threshold = 5;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), -EINVAL);
	cr_assert_str_eq(why, "secagg.threshold 5: allowed 1 to neighbours (4)");
	cfg.threshold = 3, cfg.bits = 25;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), -EINVAL);
	cfg.bits = 8, cfg.clip = NAN;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), -EINVAL);
	cr_assert_str_eq(why, "secagg.clip nan: allowed a finite number above 0");
	cr_assert_eq(rt_secagg_new(&cfg, &r), -EINVAL);
	/* Admission: 100000 clients x 254 neighbours is 5.3 GiB of shares and reveals a round. */
	cfg.clip = 1.0f, cfg.n_clients = 100000, cfg.neighbours = 254;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "secagg: 100000 clients x 254 neighbours need 5."), "%s", why);
	cfg.neighbours = 40;
	cr_assert_eq(rt_secagg_cfg_check(&cfg, why, sizeof(why)), 0, "%s", why);
}

/* --- tests/secagg/round.json: Python clients' messages replayed through the C server --- */

#include <jansson.h>

#ifndef TRIB_SECAGG_ROUND
#error "tests/runtime/meson.build defines TRIB_SECAGG_ROUND"
#endif

static size_t unhex(const char *s, uint8_t *buf, size_t cap)
{
	size_t n = s ? strlen(s) / 2 : 0;

	cr_assert(s && n <= cap, "hex field missing or too long");
	for (size_t i = 0; i < n; i++) {
		unsigned b;

		cr_assert(sscanf(s + 2 * i, "%2x", &b) == 1);
		buf[i] = (uint8_t)b;
	}
	return n;
}

static uint32_t jint(json_t *o, const char *k)
{
	cr_assert(json_is_integer(json_object_get(o, k)), "field %s", k);
	return (uint32_t)json_integer_value(json_object_get(o, k));
}

static void words_le(const uint8_t *b, uint32_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w[i] = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
		       (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
}

Test(runtime_secagg, python_clients_round_replays_to_the_exact_sum, .timeout = 60)
{
	json_error_t je;
	json_t *t = json_load_file(TRIB_SECAGG_ROUND, 0, &je), *jc, *e, *a;
	struct rt_secagg_cfg cfg = { 0 };
	struct rt_secagg *r;
	static uint8_t buf[MAXC * RT_SECAGG_CT_BYTES];
	static uint32_t y[4096], want[4096];
	const uint32_t *sum;
	uint32_t w;
	size_t i, j;

	cr_assert(t, "%s: %s", TRIB_SECAGG_ROUND, je.text);
	jc = json_object_get(t, "cfg");
	cfg.n_clients = jint(jc, "n_clients"), cfg.threshold = jint(jc, "threshold");
	cfg.neighbours = jint(jc, "neighbours"), cfg.bits = jint(jc, "bits");
	cfg.clip = (float)json_real_value(json_object_get(jc, "clip"));
	cfg.dim = jint(jc, "dim"), cfg.round = jint(jc, "round");
	cr_assert_lt(cfg.dim, 4096);
	unhex(json_string_value(json_object_get(jc, "graph_seed")), cfg.graph_seed, 32);
	cr_assert_eq(rt_secagg_new(&cfg, &r), 0);

	json_array_foreach(json_object_get(t, "advertise"), i, e) {
		uint8_t c_pk[32], s_pk[32];

		unhex(json_string_value(json_object_get(e, "c_pk")), c_pk, 32);
		unhex(json_string_value(json_object_get(e, "s_pk")), s_pk, 32);
		cr_assert_eq(rt_secagg_advertise(r, jint(e, "u"), c_pk, s_pk), 0);
	}
	rt_secagg_end_stage(r);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_SHARE, "%s", rt_secagg_why(r));
	for (uint32_t u = 0; u < cfg.n_clients; u++) {
		char key[16];
		const uint32_t *ids;
		uint32_t k = rt_secagg_neighbours(r, u, &ids);
		json_t *g;

		snprintf(key, sizeof(key), "%u", u);
		g = json_object_get(json_object_get(t, "graph"), key);
		cr_assert_eq(k, json_array_size(g), "client %u: the C and Python graphs differ", u);
		json_array_foreach(g, j, a)
			cr_assert_eq(ids[j], (uint32_t)json_integer_value(a), "client %u", u);
	}
	json_array_foreach(json_object_get(t, "share"), i, e) {
		uint32_t to[MAXC];
		const uint8_t *ct[MAXC];

		json_array_foreach(json_object_get(e, "to"), j, a) {
			to[j] = (uint32_t)json_integer_value(a);
			cr_assert_eq(unhex(json_string_value(json_array_get(json_object_get(e, "ct"),
									    j)),
					   buf + j * RT_SECAGG_CT_BYTES, RT_SECAGG_CT_BYTES),
				     RT_SECAGG_CT_BYTES);
			ct[j] = buf + j * RT_SECAGG_CT_BYTES;
		}
		cr_assert_eq(rt_secagg_share(r, jint(e, "u"), to, ct,
					     (uint32_t)json_array_size(json_object_get(e, "to"))), 0);
	}
	rt_secagg_end_stage(r);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_MASKED, "%s", rt_secagg_why(r));
	json_array_foreach(json_object_get(t, "masked"), i, e) {
		size_t n = unhex(json_string_value(json_object_get(e, "y")), buf, sizeof(buf));

		cr_assert_eq(n, 4 * ((size_t)cfg.dim + 1));
		words_le(buf, y, cfg.dim + 1);
		cr_assert_eq(rt_secagg_masked(r, jint(e, "u"), y, cfg.dim + 1), 0);
		cr_assert_eq(rt_secagg_masked(r, jint(e, "u"), y, cfg.dim + 1), -EALREADY);
	}
	rt_secagg_end_stage(r);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_UNMASK, "%s", rt_secagg_why(r));
	json_array_foreach(json_object_get(t, "reveal"), i, e) {
		uint32_t u = jint(e, "u"), v[MAXC], got_v[MAXC];
		enum rt_secagg_kind kind[MAXC];
		const uint8_t *sh[MAXC];
		uint32_t m = rt_secagg_reveal_list(r, u, got_v, kind, MAXC);

		cr_assert_eq(m, json_array_size(json_object_get(e, "v")));
		json_array_foreach(json_object_get(e, "v"), j, a) {
			v[j] = (uint32_t)json_integer_value(a);
			cr_assert_eq(v[j], got_v[j]);
			cr_assert_eq((int)kind[j], (int)json_integer_value(
					   json_array_get(json_object_get(e, "kind"), j)));
			unhex(json_string_value(json_array_get(json_object_get(e, "share"), j)),
			      buf + j * RT_SECAGG_SHARE_BYTES, RT_SECAGG_SHARE_BYTES);
			sh[j] = buf + j * RT_SECAGG_SHARE_BYTES;
		}
		if (i == 0 && m >= 2) {
			/* Refused and forgotten: a share at another client's point, a repeated v. */
			static uint8_t bad[RT_SECAGG_SHARE_BYTES];
			const uint8_t *keep = sh[0];
			uint32_t v1 = v[1];

			memcpy(bad, sh[0], sizeof(bad));
			bad[0] ^= 1; /* x, little-endian: now u + 1 +- 1 */
			sh[0] = bad;
			cr_assert_eq(rt_secagg_unmask(r, u, v, sh, m), -EINVAL);
			sh[0] = keep;
			v[1] = v[0];
			cr_assert_eq(rt_secagg_unmask(r, u, v, sh, m), -EINVAL);
			v[1] = v1;
			cr_assert_eq(rt_secagg_unmask(r, u, v, sh, m - 1), -EINVAL);
		}
		cr_assert_eq(rt_secagg_unmask(r, u, v, sh, m), 0);
		cr_assert_eq(rt_secagg_unmask(r, u, v, sh, m), -EALREADY);
	}
	rt_secagg_end_stage(r);
	cr_assert_eq(rt_secagg_stage(r), RT_SECAGG_DONE, "%s", rt_secagg_why(r));
	unhex(json_string_value(json_object_get(t, "sum")), buf, sizeof(buf));
	words_le(buf, want, cfg.dim + 1);
	{
		static float out[4096];

		cr_assert_eq(rt_secagg_result(r, &sum, &w, out), 0);
		cr_assert_arr_eq(sum, want, 4 * ((size_t)cfg.dim + 1));
		json_array_foreach(json_object_get(t, "mean"), j, a)
			cr_assert_float_eq(out[j], (float)json_real_value(a), 1e-6, "value %zu", j);
	}
	rt_secagg_free(r);
	json_decref(t);
}
