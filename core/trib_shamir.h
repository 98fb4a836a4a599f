/* SPDX-License-Identifier: MIT */
/* Shamir secret sharing over GF(2^61 - 1), for secure aggregation's seeds and secret keys. */
#ifndef TRIB_SHAMIR_H
#define TRIB_SHAMIR_H

#include <stddef.h>
#include <stdint.h>

/*
 * The field: integers modulo the Mersenne prime P = 2^61 - 1, so a product (< 2^122) reduces
 * with two shifts and adds, and no big-number library is needed.
 *
 * A secret is a byte string of at most TRIB_SHAMIR_SECRET_MAX bytes, cut into chunks of
 * TRIB_SHAMIR_CHUNK_BYTES = 7 bytes read little-endian (the last chunk zero-padded), so each
 * chunk is below 2^56 < P. Each chunk c is shared with its own polynomial of degree t - 1:
 *     f_c(x) = s_c + a_{c,1} x + ... + a_{c,t-1} x^(t-1)  (mod P)
 * and a share is one point x (1 <= x < 2^31, the same x for every chunk) with y_c = f_c(x).
 * Any t shares give every s_c back by Lagrange interpolation at 0; fewer give no information.
 *
 * Wire form of a share (TRIB_SHAMIR_SHARE_BYTES(len) bytes): u32 LE x, then one u64 LE y_c per
 * chunk. clients/python/tributary_secagg.py writes and reads the same bytes.
 *
 * Coefficients (trib_shamir_split): drawn from the ChaCha20 stream of a 32-byte coefficient seed
 * (trib_sa_prg_bytes with that key): successive u64 LE words masked to 61 bits, a word equal to
 * P rejected, in the order chunk 0 a_1..a_{t-1}, chunk 1 a_1.., ... A client draws the seed from
 * its OS random source; tests fix it, which makes the shares test vectors.
 */
#define TRIB_SHAMIR_P ((UINT64_C(1) << 61) - 1)
#define TRIB_SHAMIR_CHUNK_BYTES 7u
#define TRIB_SHAMIR_SECRET_MAX 64u
#define TRIB_SHAMIR_MAX_CHUNKS \
	((TRIB_SHAMIR_SECRET_MAX + TRIB_SHAMIR_CHUNK_BYTES - 1) / TRIB_SHAMIR_CHUNK_BYTES)
#define TRIB_SHAMIR_CHUNKS(len) (((len) + TRIB_SHAMIR_CHUNK_BYTES - 1) / TRIB_SHAMIR_CHUNK_BYTES)
#define TRIB_SHAMIR_SHARE_BYTES(len) (4u + 8u * TRIB_SHAMIR_CHUNKS(len))
/* Largest threshold: a degree-254 polynomial (SecAgg+ neighbourhoods are far smaller). */
#define TRIB_SHAMIR_T_MAX 255u
/* Share points are 1 .. TRIB_SHAMIR_X_MAX (0 would be the secret itself). */
#define TRIB_SHAMIR_X_MAX UINT32_C(0x7fffffff)

/* One share of a secret of len bytes: chunks = TRIB_SHAMIR_CHUNKS(len) values of y are used. */
struct trib_shamir_share {
	uint32_t x;
	uint64_t y[TRIB_SHAMIR_MAX_CHUNKS];
};

/* Field arithmetic, exported for tests and for the Python parity checks. Inputs below P. */
uint64_t trib_gf61_add(uint64_t a, uint64_t b);
uint64_t trib_gf61_sub(uint64_t a, uint64_t b);
uint64_t trib_gf61_mul(uint64_t a, uint64_t b);
/* a^-1 for 0 < a < P (Fermat: a^(P-2)); 0 for a = 0. */
uint64_t trib_gf61_inv(uint64_t a);

/*
 * Splits secret[0..len) into n shares at the points xs[0..n) with threshold t, coefficients from
 * coef_seed (see above). Returns 0, or -EINVAL if len is 0 or above TRIB_SHAMIR_SECRET_MAX, t is
 * 0 or above TRIB_SHAMIR_T_MAX, n < t, or an x is 0, above TRIB_SHAMIR_X_MAX or repeated. All
 * buffers are borrowed; out[0..n) is written.
 */
int trib_shamir_split(const uint8_t *secret, size_t len, unsigned t, const uint32_t *xs, size_t n,
		      const uint8_t coef_seed[32], struct trib_shamir_share *out);

/*
 * Rebuilds a secret of len bytes from the first t of shares[0..n). Returns 0, -EINVAL if n < t,
 * t is 0 or above TRIB_SHAMIR_T_MAX, len is out of range, or two of the t points are equal or
 * out of range; -EBADMSG if a rebuilt chunk is not below 2^56 or its padding is not zero (the
 * shares are not of one secret, or fewer than its threshold were used: with t below the real
 * threshold, Lagrange gives a field element that is almost never a valid chunk).
 */
int trib_shamir_combine(const struct trib_shamir_share *shares, size_t n, unsigned t, size_t len,
			uint8_t *secret);

/*
 * Do shares[0..n) of a secret of len bytes all lie on one polynomial of degree below t (the one
 * through the first t)? combine() alone cannot tell: a share shifted by d / lambda_i moves the
 * rebuilt secret by d, a valid-looking secret (a lying client's share of a self-mask seed gives a
 * wrong model, silently). Each share past the first t is checked against the interpolation at its
 * point (barycentric form: t inversions, then one batch inversion and ~(4 + chunks) t products per
 * extra share). Returns 0 (also when n == t: nothing to check), -EINVAL for bad parameters or a
 * point repeated or out of range, -EBADMSG if they disagree; then, if @odd is not NULL, *odd is
 * the index of the one share whose removal leaves the others on one polynomial (n >= t + 2 and
 * exactly one such share), else n. The search is O(n) checks: only on the failure path.
 */
int trib_shamir_check(const struct trib_shamir_share *shares, size_t n, unsigned t, size_t len,
		      size_t *odd);

/* Wire form: writes TRIB_SHAMIR_SHARE_BYTES(len) bytes to out. */
void trib_shamir_encode(const struct trib_shamir_share *s, size_t len, uint8_t *out);
/* Reads TRIB_SHAMIR_SHARE_BYTES(len) bytes; -EINVAL if x is out of range or a y is not below P. */
int trib_shamir_decode(const uint8_t *in, size_t len, struct trib_shamir_share *s);

#endif
