// SPDX-License-Identifier: MIT
/* Secure aggregation's kernels against libsodium's bare ChaCha20, measured in the same run. */
#include <errno.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fn_fold.h"
#include "fn_secagg.h"
#include "trib_alloc.h"
#include "trib_secagg_crypto.h"

/*
 * Usage: bench_secagg [--words N] [--reps R]. For each kernel, the best of R passes over N
 * u32 words, in GB/s of mask or update bytes (4 N per pass):
 *   chacha20        libsodium's crypto_stream_chacha20_ietf into a buffer: the baseline
 *   prg_stream      trib_sa_prg_bytes into a buffer: the same stream on OpenSSL's EVP_chacha20
 *   prg_add         trib_sa_prg_add_u32: the same stream added into an accumulator (unmasking)
 *   prg_add_sodium  the PRG's add before issue 19: 4 KB pieces of libsodium's stream, each added
 *   fold_u32        fn_fold_u32 (AVX2 when the CPU has it), one masked update into the sum
 *   fold_u32_generic the portable loop
 * then, with --clients C --streams S (defaults 100 and 170), the arithmetic a SecAgg+ round's
 * server does on one core: fold C masked vectors of N words and expand S mask streams (C - D
 * survivors' self masks plus the dropped clients' pairwise masks), against plain FedAvg's fold of
 * C f32 updates (fn_fold_f32). Network, parsing and Shamir are left out (they are O(C k), not
 * O(N)).
 *
 * Last, a SecAgg+ unmasking shard's path against the floor it can reach: with --shard-words W
 * (default 500001, one of two shards' range at 1M parameters) --shard-streams S (default 100)
 * --shard-reps R (default 7), the best CPU time of this thread (a preempted pass is not
 * charged; the machine is shared) of
 *   bare_stream     OpenSSL's ChaCha20 alone: one context, 16 KB per EVP_EncryptUpdate into
 *                   one buffer that stays in L1 (the loop `openssl speed -evp chacha20 -bytes
 *                   16384` times), 4 W S bytes
 *   shard_<adds>    fn_secagg_expand of S streams over W words from word 500000 (the second
 *                   shard's call at 1M, zeroed sum first), with each implementation of the adds
 *                   this CPU has (trib_sa_prg_add_use): avx512, core/trib_secagg_chacha.c's
 *                   fused ChaCha20; avx2 and generic, OpenSSL's stream added in 4 KB steps;
 *                   interleaved with the bare stream pass by pass
 * and the shard path (the CPU's own adds) over the bare stream, PASS at 0.9 or more.
 */
static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* trib_sa_prg_add_u32 as it was on libsodium (the before of issue 19), sign +1. */
static int prg_add_sodium(uint32_t *acc, size_t n, const uint8_t key[32])
{
	uint8_t buf[4096];

	for (size_t done = 0; done < n;) {
		size_t m = n - done < sizeof(buf) / 4 ? n - done : sizeof(buf) / 4;

		if (trib_sa_prg_bytes_sodium(buf, m * 4, key, done))
			return -1;
		for (size_t i = 0; i < m; i++) {
			uint32_t w;

			memcpy(&w, buf + 4 * i, 4);
			acc[done + i] += w;
		}
		done += m;
	}
	return 0;
}

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* OpenSSL's bare keystream: @bytes in 16 KB calls into one L1-resident buffer. 0 or -1. */
static int bare_stream(const uint8_t key[32], size_t bytes)
{
	static const uint8_t zeros[16384];
	static uint8_t out[16384];
	static const uint8_t iv[16];
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int ok = ctx && EVP_EncryptInit_ex2(ctx, EVP_chacha20(), key, iv, NULL) == 1, outl;

	for (size_t done = 0; ok && done < bytes; done += sizeof(out)) {
		int len = bytes - done < sizeof(out) ? (int)(bytes - done) : (int)sizeof(out);

		ok = EVP_EncryptUpdate(ctx, out, &outl, zeros, len) == 1 && outl == len;
	}
	EVP_CIPHER_CTX_free(ctx);
	return ok ? 0 : -1;
}

/* The shard path against the bare stream (the usage comment above). 0, or 1 on an error. */
static int shard_vs_bare(size_t words, size_t nstreams, size_t reps)
{
	static const char *const impls[] = { "avx512", "avx2", "generic" };
	const char *own = trib_sa_prg_add_impl();
	struct fn_secagg_stream *st = trib_calloc(nstreams ? nstreams : 1, sizeof(*st));
	uint32_t *acc = trib_calloc(words ? words : 1, 4);
	double bare = 1e9, best[3] = { 1e9, 1e9, 1e9 }, bytes = 4.0 * (double)words * nstreams;
	int have[3], rc = 1;

	if (!st || !acc || !words || !nstreams)
		goto out;
	for (size_t j = 0; j < nstreams; j++) {
		randombytes_buf(st[j].key, 32);
		st[j].sign = j % 2 ? 1 : -1;
	}
	for (int k = 0; k < 3; k++)
		have[k] = trib_sa_prg_add_use(impls[k]) == 0;
	for (size_t r = 0; r < reps; r++) {
		for (int k = 0; k < 3; k++) {
			double t0, t;

			if (!have[k])
				continue;
			t0 = cpu_s();
			if (bare_stream(st[0].key, (size_t)bytes))
				goto out;
			t = cpu_s() - t0, bare = t < bare ? t : bare;
			(void)trib_sa_prg_add_use(impls[k]);
			t0 = cpu_s();
			memset(acc, 0, words * 4);
			if (fn_secagg_expand(acc, 500000, words, st, nstreams))
				goto out;
			t = cpu_s() - t0, best[k] = t < best[k] ? t : best[k];
		}
	}
	printf("unmasking shard: %zu streams x %zu words (%.0f MB), CPU time, best of %zu:\n",
	       nstreams, words, bytes / 1e6, reps);
	printf("  bare_stream       %8.2f GB/s  OpenSSL ChaCha20 alone, 16 KB calls into L1\n",
	       bytes / bare / 1e9);
	for (int k = 0; k < 3; k++)
		if (have[k])
			printf("  shard_%-11s %8.2f GB/s  %.3f of the bare stream%s\n", impls[k],
			       bytes / best[k] / 1e9, bare / best[k],
			       !strcmp(impls[k], own) ? " (this CPU's adds)" : "");
	for (int k = 0; k < 3; k++)
		if (!strcmp(impls[k], own))
			printf("shard path / bare OpenSSL stream = %.3f  %s (target >= 0.9)\n",
			       bare / best[k], bare / best[k] >= 0.9 ? "PASS" : "MISS");
	rc = 0;
out:
	(void)trib_sa_prg_add_use(NULL);
	trib_free(st);
	trib_free(acc);
	return rc;
}

int main(int argc, char **argv)
{
	size_t n = 1u << 20, reps = 5, clients = 100, nstreams = 170;
	size_t shard_words = 500001, shard_streams = 100, shard_reps = 7;
	static const uint8_t nonce[12];
	uint8_t key[32];
	uint32_t *acc, *x;
	double best[6] = { 1e9, 1e9, 1e9, 1e9, 1e9, 1e9 };
	const char *names[6] = { "chacha20", "prg_add", "fold_u32", "fold_u32_generic",
				 "prg_stream", "prg_add_sodium" };

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--words"))
			n = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--reps"))
			reps = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--clients"))
			clients = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--streams"))
			nstreams = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--shard-words"))
			shard_words = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--shard-streams"))
			shard_streams = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--shard-reps"))
			shard_reps = strtoull(argv[i + 1], NULL, 10);
	}
	if (sodium_init() < 0 || n == 0 || reps == 0)
		return 1;
	acc = trib_calloc(n, 4);
	x = trib_calloc(n, 4);
	if (!acc || !x)
		return 1;
	randombytes_buf(key, sizeof(key));
	randombytes_buf(x, n * 4);
	for (size_t r = 0; r < reps; r++) {
		double t0 = now_s(), t;

		crypto_stream_chacha20_ietf((uint8_t *)acc, n * 4, nonce, key);
		t = now_s() - t0, best[0] = t < best[0] ? t : best[0];
		t0 = now_s();
		if (trib_sa_prg_add_u32(acc, n, key, 0, 1))
			return 1;
		t = now_s() - t0, best[1] = t < best[1] ? t : best[1];
		t0 = now_s();
		fn_fold_u32(acc, x, n);
		t = now_s() - t0, best[2] = t < best[2] ? t : best[2];
		t0 = now_s();
		fn_fold_u32_generic(acc, x, n);
		t = now_s() - t0, best[3] = t < best[3] ? t : best[3];
		t0 = now_s();
		if (trib_sa_prg_bytes((uint8_t *)acc, n * 4, key, 0))
			return 1;
		t = now_s() - t0, best[4] = t < best[4] ? t : best[4];
		t0 = now_s();
		if (prg_add_sodium(acc, n, key))
			return 1;
		t = now_s() - t0, best[5] = t < best[5] ? t : best[5];
	}
	printf("secagg kernels: %zu words x %zu reps (best), fold impl %s\n", n, reps,
	       fn_fold_u32_impl());
	for (int k = 0; k < 6; k++)
		printf("%-17s %8.2f GB/s\n", names[k], (double)n * 4 / best[k] / 1e9);
	printf("prg_add / chacha20 = %.2f\n", best[0] / best[1]);
	printf("prg_stream (OpenSSL) / chacha20 (libsodium) = %.2f\n", best[0] / best[4]);
	printf("prg_add / prg_add_sodium = %.2f\n", best[5] / best[1]);
	{
		struct fn_secagg_stream *st = trib_calloc(nstreams ? nstreams : 1, sizeof(*st));
		float *facc = (float *)acc, *fx = (float *)x;
		double t0, t_plain, t_fold, t_unmask;

		if (!st)
			return 1;
		for (size_t j = 0; j < nstreams; j++) {
			randombytes_buf(st[j].key, 32);
			st[j].sign = -1;
		}
		for (size_t i = 0; i < n; i++)
			fx[i] = (float)(i % 97) * 0.01f;
		t0 = now_s();
		for (size_t c = 0; c < clients; c++)
			fn_fold_f32(facc, fx, 1.0f, n);
		t_plain = now_s() - t0;
		t0 = now_s();
		for (size_t c = 0; c < clients; c++)
			fn_fold_u32(acc, x, n);
		t_fold = now_s() - t0;
		t0 = now_s();
		if (fn_secagg_expand(acc, 0, n, st, nstreams))
			return 1;
		t_unmask = now_s() - t0;
		printf("server arithmetic, %zu clients x %zu words, one core:\n", clients, n);
		printf("  fedavg f32 fold          %8.3f s\n", t_plain);
		printf("  secagg u32 fold          %8.3f s\n", t_fold);
		printf("  secagg unmask, %4zu streams %6.3f s\n", nstreams, t_unmask);
		printf("  secagg / fedavg          %8.2f\n", (t_fold + t_unmask) / t_plain);
		trib_free(st);
	}
	trib_free(acc);
	trib_free(x);
	return shard_vs_bare(shard_words, shard_streams, shard_reps ? shard_reps : 1);
}
