// SPDX-License-Identifier: MIT
/*
 * The secure round's small per-client work on the gateway's thread, against the ways it was done
 * before (helper sarev's changes, docs/BENCHMARKS.md), in the same run:
 *
 *   rebuild  trib_shamir_check + trib_shamir_combine of one 32-byte secret from n = 20 shares at
 *            t = 10 (what end_unmask does for each of the round's 100 clients, rt_secagg.c),
 *            against the code before (kept here: one square-and-multiply inversion per
 *            Lagrange weight, per extra share and per coefficient at 0); both give the secret.
 * It prints microseconds per call (best of 5 passes) and new / before, PASS when no slower
 * (<= 1.0): the gain is the ratio. (The stage bodies' digest had a line here too, for an HMAC
 * written over OpenSSL's SHA-256; that change was reverted, docs/BENCHMARKS.md.)
 *
 *     build/bench/secagg/bench_unmask_cpu
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "trib_secagg_crypto.h"
#include "trib_shamir.h"

#define P TRIB_SHAMIR_P
#define N 20u
#define T 10u
#define LIMIT 1.0

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t inv_slow(uint64_t a)
{
	uint64_t r = 1, e = P - 2;

	while (e) {
		if (e & 1)
			r = trib_gf61_mul(r, a);
		a = trib_gf61_mul(a, a);
		e >>= 1;
	}
	return r;
}

/*
 * core/trib_shamir.c's check and combine before this change (commit bdf86ed), for n = N, t = T:
 * the t weights each inverted, each extra share's d_i from one inversion, the t Lagrange
 * coefficients at 0 each inverted. Same results, ~3 t inversions a rebuild against ~2 now.
 */
static int rebuild_slow(const struct trib_shamir_share *sh, uint8_t out[32])
{
	uint64_t w[T], d[T], pre[T], lambda[T];
	size_t chunks = TRIB_SHAMIR_CHUNKS(32);

	for (unsigned i = 0; i < T; i++) {
		uint64_t den = 1;

		for (unsigned j = 0; j < T; j++)
			if (j != i)
				den = trib_gf61_mul(den, trib_gf61_sub(sh[i].x, sh[j].x));
		w[i] = inv_slow(den);
	}
	for (unsigned e = T; e < N; e++) {
		uint64_t L = 1, inv;

		for (unsigned i = 0; i < T; i++) {
			d[i] = trib_gf61_sub(sh[e].x, sh[i].x);
			pre[i] = L;
			L = trib_gf61_mul(L, d[i]);
		}
		inv = inv_slow(L);
		for (unsigned i = T; i-- > 0;) {
			uint64_t inv_d = trib_gf61_mul(inv, pre[i]);

			inv = trib_gf61_mul(inv, d[i]);
			d[i] = trib_gf61_mul(trib_gf61_mul(L, w[i]), inv_d);
		}
		for (size_t c = 0; c < chunks; c++) {
			uint64_t y = 0;

			for (unsigned i = 0; i < T; i++)
				y = trib_gf61_add(y, trib_gf61_mul(d[i], sh[i].y[c] % P));
			if (y != sh[e].y[c])
				return -1;
		}
	}
	for (unsigned i = 0; i < T; i++) {
		uint64_t num = 1, den = 1;

		for (unsigned j = 0; j < T; j++) {
			if (j == i)
				continue;
			num = trib_gf61_mul(num, sh[j].x);
			den = trib_gf61_mul(den, trib_gf61_sub(sh[j].x, sh[i].x));
		}
		lambda[i] = trib_gf61_mul(num, inv_slow(den));
	}
	for (size_t c = 0; c < chunks; c++) {
		uint64_t y = 0;
		size_t off = c * TRIB_SHAMIR_CHUNK_BYTES, nb = 32 - off < 7 ? 32 - off : 7;

		for (unsigned i = 0; i < T; i++)
			y = trib_gf61_add(y, trib_gf61_mul(lambda[i], sh[i].y[c]));
		for (size_t k = 0; k < nb; k++, y >>= 8)
			out[off + k] = (uint8_t)y;
	}
	return 0;
}

static int verdict(const char *what, double fast, double slow)
{
	double r = fast / slow;

	printf("%-28s %7.2f us  before %7.2f us  new / before %.2f  %s (limit %.1f)\n", what, fast,
	       slow, r, r <= LIMIT ? "PASS" : "MISS", LIMIT);
	return 0;
}

int main(void)
{
	struct trib_shamir_share sh[N];
	uint8_t secret[32], seed[32], a[32], b[32];
	uint32_t xs[N];
	double best_f = 1e9, best_s = 1e9;
	size_t odd;

	if (sodium_init() < 0)
		return 1;
	randombytes_buf(secret, sizeof(secret));
	randombytes_buf(seed, sizeof(seed));
	for (unsigned i = 0; i < N; i++)
		xs[i] = 1 + i * 5; /* client indices + 1, as the server's points are */
	if (trib_shamir_split(secret, 32, T, xs, N, seed, sh))
		return 1;
	for (int pass = 0; pass < 5; pass++) {
		double t0 = now(), t1, t2;
		int bad = 0;

		for (int k = 0; k < 2000; k++)
			bad |= trib_shamir_check(sh, N, T, 32, &odd) ||
			       trib_shamir_combine(sh, N, T, 32, a);
		t1 = now();
		for (int k = 0; k < 2000; k++)
			bad |= rebuild_slow(sh, b);
		t2 = now();
		if (bad || memcmp(a, secret, 32) || memcmp(b, secret, 32)) {
			fprintf(stderr, "rebuild: a wrong secret\n");
			return 1;
		}
		best_f = (t1 - t0) / 2000 < best_f ? (t1 - t0) / 2000 : best_f;
		best_s = (t2 - t1) / 2000 < best_s ? (t2 - t1) / 2000 : best_s;
	}
	verdict("rebuild (n 20, t 10)", best_f * 1e6, best_s * 1e6);
	return 0;
}
