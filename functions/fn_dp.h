/* SPDX-License-Identifier: MIT */
/* Central DP (DP-FedAvg): seekable Gaussian noise from a ChaCha20 stream and an RDP accountant. */
#ifndef FN_DP_H
#define FN_DP_H

#include <stddef.h>
#include <stdint.h>

/*
 * DP-FedAvg (McMahan et al. 2018), central, all clients of a round participating, unweighted:
 * each update is clipped to L2 norm clip_norm = C (fn_robust_clip_scale(), norms summed over
 * shards), the clipped updates are summed, N(0, (z C)^2) is added to every coordinate of the
 * sum (z = dp_noise_multiplier; C is the sum's L2 sensitivity when one client is added or
 * removed), and the top divides by the number of updates. Privacy loss per round is that of
 * one Gaussian mechanism with noise multiplier z; fn_dp_epsilon() composes rounds.
 */

/*
 * Source of ChaCha20 keystream (RFC 8439, IETF variant: 256-bit key, 96-bit nonce, 32-bit block
 * counter): writes @nblocks 64-byte blocks, the first with block counter @counter, to @out
 * (caller-owned, 64 * nblocks bytes). @nonce and @key are borrowed. Swappable: libsodium's
 * crypto_stream_chacha20_ietf_xor_ic(out, zeros, 64 * nblocks, nonce, counter, key) produces
 * the same bytes (tests/functions/ref/dp.py checks ours against it).
 */
typedef void (*fn_dp_keystream_fn)(uint8_t *out, size_t nblocks, uint32_t counter,
				   const uint8_t nonce[12], const uint8_t key[32]);

/* The built-in ChaCha20 keystream (see fn_dp.c for why it is hand-written). */
void fn_chacha20_keystream(uint8_t *out, size_t nblocks, uint32_t counter, const uint8_t nonce[12],
			   const uint8_t key[32]);

/*
 * Noise of one round. The stream is seekable: the normal pair for coordinates (2p, 2p+1) comes
 * from stream bytes [16p, 16p + 16), so a shard adding noise to [lo, hi) adds exactly what one
 * function adding noise to the whole model would have added there.
 */
struct fn_dp_noise {
	uint8_t key[32];              /* per job: fn_dp_key_from_seed() or fn_dp_key_from_os() */
	uint8_t nonce[12];            /* "TrDP" then the round, little-endian u64 */
	double stddev;                /* z * C */
	fn_dp_keystream_fn keystream; /* fn_chacha20_keystream unless swapped */
};

/*
 * Test key from a seed: key = little-endian seed, then 24 zero bytes. 64 bits of key: for
 * reproducible tests (job parameter "seed"), never for privacy in production.
 */
void fn_dp_key_from_seed(uint64_t seed, uint8_t key[32]);

/* Production key: 32 bytes from getrandom(2). 0 or -errno. @key is caller-owned. */
int fn_dp_key_from_os(uint8_t key[32]);

/*
 * Prepares @nz for round @round with standard deviation @stddev (z * C) and the built-in
 * keystream; @key (32 bytes) is copied. 0, or -EINVAL unless stddev >= 0 and finite.
 */
int fn_dp_noise_init(struct fn_dp_noise *nz, const uint8_t key[32], uint64_t round,
		     double stddev);

/*
 * Standard normals for coordinates [lo, lo + n) into @z (n doubles, caller-owned), by
 * Box-Muller on pairs of 53-bit uniforms from the stream: with a, b the two little-endian u64
 * of the pair's 16 bytes, u1 = ((a >> 11) + 1) 2^-53 in (0, 1], u2 = (b >> 11) 2^-53 in [0, 1),
 * r = sqrt(-2 ln u1): z(2p) = r cos(2 pi u2), z(2p+1) = r sin(2 pi u2). 0, or -EOVERFLOW when
 * the range runs past the stream's 2^32 blocks (2^35 coordinates).
 */
int fn_dp_normals(const struct fn_dp_noise *nz, uint64_t lo, size_t n, double *z);

/*
 * x[i] = (float)(x[i] + stddev * z(lo + i)) for i < n, in double, rounded once: @x (caller-owned)
 * holds coordinates [lo, lo + n) of the clipped sum. 0 or -EOVERFLOW as fn_dp_normals().
 */
int fn_dp_noise_add(const struct fn_dp_noise *nz, float *x, uint64_t lo, size_t n);

/*
 * 0 if the DP parameters are valid, or -EINVAL with *field (if not NULL) naming the first bad
 * one: "clip_norm" (> 0, finite), "dp_noise_multiplier" (> 0, finite), "dp_delta" (0 < d < 1).
 */
int fn_dp_params_check(double clip_norm, double noise_multiplier, double delta,
		       const char **field);

/* RDP orders: 1.1, 1.2, ..., 10.9 and 12, 13, ..., 63 (as TF Privacy and Opacus). */
#define FN_DP_ORDERS 151

/* Writes the order grid to @out (FN_DP_ORDERS doubles, caller-owned). */
void fn_dp_orders(double out[FN_DP_ORDERS]);

/* RDP accountant: the composed RDP at each order of the grid. Zero it to start. */
struct fn_dp_accountant {
	double rdp[FN_DP_ORDERS];
};

/*
 * Composes @rounds releases of the Gaussian mechanism with noise multiplier @z (no
 * subsampling): rdp(alpha) += rounds * alpha / (2 z^2). 0 or -EINVAL unless z > 0 and finite.
 */
int fn_dp_accountant_add(struct fn_dp_accountant *acc, double z, uint64_t rounds);

/*
 * (eps, delta) spent: *eps = min over orders of rdp(alpha) + ln(1/delta) / (alpha - 1), and
 * *order (if not NULL) the minimising order; before any release *eps = 0 and *order = 0.
 * 0 or -EINVAL unless 0 < delta < 1.
 */
int fn_dp_accountant_epsilon(const struct fn_dp_accountant *acc, double delta, double *eps,
			     double *order);

/* Shorthand: epsilon after @rounds rounds at noise multiplier @z. 0 or -EINVAL. */
int fn_dp_epsilon(double z, uint64_t rounds, double delta, double *eps, double *order);

#endif
