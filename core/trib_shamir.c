/* SPDX-License-Identifier: MIT */
/* Shamir secret sharing over GF(2^61 - 1): split, combine and the wire form of a share. */
#include "trib_shamir.h"

#include <errno.h>
#include <string.h>

#include "trib_secagg_crypto.h"

__extension__ typedef unsigned __int128 u128;

#define P TRIB_SHAMIR_P

uint64_t trib_gf61_add(uint64_t a, uint64_t b)
{
	uint64_t r = a + b; /* < 2^62: no overflow */

	return r >= P ? r - P : r;
}

uint64_t trib_gf61_sub(uint64_t a, uint64_t b)
{
	return a >= b ? a - b : a + P - b;
}

uint64_t trib_gf61_mul(uint64_t a, uint64_t b)
{
	u128 prod = (u128)a * b;
	/* 2^61 = 1 (mod P): fold the high bits onto the low ones, twice reaches < 2P. */
	uint64_t r = (uint64_t)(prod & P) + (uint64_t)(prod >> 61);

	r = (r & P) + (r >> 61);
	return r >= P ? r - P : r;
}

/* a^(2^k) */
static uint64_t sqr_n(uint64_t a, unsigned k)
{
	while (k--)
		a = trib_gf61_mul(a, a);
	return a;
}

/*
 * a^(P - 2) = a^-1 by Fermat. P - 2 = 2^61 - 3 = 4 (2^59 - 1) + 1, and a^(2^59 - 1) comes from
 * the chain of a^(2^k - 1) (k = 2, 4, 8, 16, 32, 48, 56, 58, 59): 60 squarings and 10
 * multiplications, against 119 for square-and-multiply over the 59 one-bits of P - 2. The
 * unmasking inverts a few thousand times a round (trib_shamir_check, _combine).
 */
uint64_t trib_gf61_inv(uint64_t a)
{
	uint64_t x2, x4, x8, x16, x32, x48, x56, x58, x59;

	if (a == 0)
		return 0;
	x2 = trib_gf61_mul(sqr_n(a, 1), a);
	x4 = trib_gf61_mul(sqr_n(x2, 2), x2);
	x8 = trib_gf61_mul(sqr_n(x4, 4), x4);
	x16 = trib_gf61_mul(sqr_n(x8, 8), x8);
	x32 = trib_gf61_mul(sqr_n(x16, 16), x16);
	x48 = trib_gf61_mul(sqr_n(x32, 16), x16);
	x56 = trib_gf61_mul(sqr_n(x48, 8), x8);
	x58 = trib_gf61_mul(sqr_n(x56, 2), x2);
	x59 = trib_gf61_mul(sqr_n(x58, 1), a);
	return trib_gf61_mul(sqr_n(x59, 2), a);
}

/*
 * v[i] = 1 / v[i] for i < n, every v[i] non-zero, with one inversion (Montgomery's trick: the
 * prefix products, the inverse of their total, walked back). @pre: n words of scratch.
 */
static void inv_many(uint64_t *v, size_t n, uint64_t *pre)
{
	uint64_t acc = 1, inv;

	for (size_t i = 0; i < n; i++) {
		pre[i] = acc;
		acc = trib_gf61_mul(acc, v[i]);
	}
	inv = trib_gf61_inv(acc);
	for (size_t i = n; i-- > 0;) {
		uint64_t vi = v[i];

		v[i] = trib_gf61_mul(inv, pre[i]);
		inv = trib_gf61_mul(inv, vi);
	}
}

static int check_params(size_t len, unsigned t)
{
	if (len == 0 || len > TRIB_SHAMIR_SECRET_MAX || t == 0 || t > TRIB_SHAMIR_T_MAX)
		return -EINVAL;
	return 0;
}

/* Are xs[0..n) all in range and distinct? O(n^2), n <= a neighbourhood. */
static int check_points(const uint32_t *xs, size_t n, size_t stride)
{
	size_t i, j;

	for (i = 0; i < n; i++) {
		uint32_t xi = *(const uint32_t *)((const uint8_t *)xs + i * stride);

		if (xi == 0 || xi > TRIB_SHAMIR_X_MAX)
			return -EINVAL;
		for (j = 0; j < i; j++)
			if (*(const uint32_t *)((const uint8_t *)xs + j * stride) == xi)
				return -EINVAL;
	}
	return 0;
}

static uint64_t load_le(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	while (n--)
		v = (v << 8) | p[n];
	return v;
}

static void store_le(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* The coefficient source: a ChaCha20 stream read in 64-byte blocks, one u64 at a time. */
struct coef_stream {
	const uint8_t *key;
	uint64_t next_word; /* index of the next u32 word of the stream */
	uint8_t buf[64];
	unsigned used;      /* bytes of buf consumed; 64 means refill */
};

static uint64_t coef_next(struct coef_stream *cs)
{
	for (;;) {
		uint64_t v;

		if (cs->used == sizeof(cs->buf)) {
			/* Cannot fail: the word index stays far below the stream's 2^36 words. */
			(void)trib_sa_prg_bytes(cs->buf, sizeof(cs->buf), cs->key, cs->next_word);
			cs->next_word += sizeof(cs->buf) / 4;
			cs->used = 0;
		}
		v = load_le(cs->buf + cs->used, 8) & P;
		cs->used += 8;
		if (v != P) /* the one 61-bit value that is not a field element */
			return v;
	}
}

int trib_shamir_split(const uint8_t *secret, size_t len, unsigned t, const uint32_t *xs, size_t n,
		      const uint8_t coef_seed[32], struct trib_shamir_share *out)
{
	struct coef_stream cs = { .key = coef_seed, .used = sizeof(cs.buf) };
	uint64_t coef[TRIB_SHAMIR_T_MAX];
	size_t chunks = TRIB_SHAMIR_CHUNKS(len), c, i;
	int err;

	err = check_params(len, t);
	if (err)
		return err;
	if (n < t || check_points(xs, n, sizeof(*xs)))
		return -EINVAL;
	for (i = 0; i < n; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		out[i].x = xs[i];
	}
	for (c = 0; c < chunks; c++) {
		size_t off = c * TRIB_SHAMIR_CHUNK_BYTES;
		size_t nb = len - off < TRIB_SHAMIR_CHUNK_BYTES ? len - off : TRIB_SHAMIR_CHUNK_BYTES;
		unsigned d;

		coef[0] = load_le(secret + off, nb);
		for (d = 1; d < t; d++)
			coef[d] = coef_next(&cs);
		for (i = 0; i < n; i++) {
			/* Horner: f(x) = (..(a_{t-1} x + a_{t-2}) x + ..) x + s */
			uint64_t y = 0;

			for (d = t; d-- > 0;)
				y = trib_gf61_add(trib_gf61_mul(y, xs[i]), coef[d]);
			out[i].y[c] = y;
		}
	}
	return 0;
}

int trib_shamir_combine(const struct trib_shamir_share *shares, size_t n, unsigned t, size_t len,
			uint8_t *secret)
{
	uint64_t lambda[TRIB_SHAMIR_T_MAX], num[TRIB_SHAMIR_T_MAX], pre[TRIB_SHAMIR_T_MAX];
	size_t chunks = TRIB_SHAMIR_CHUNKS(len), c, i, j;
	int err;

	err = check_params(len, t);
	if (err)
		return err;
	if (n < t || check_points(&shares[0].x, t, sizeof(shares[0])))
		return -EINVAL;
	/* lambda_i = prod_{j != i} x_j / (x_j - x_i): the Lagrange basis at 0, shared by chunks;
	 * the t denominators (distinct points: none is 0) inverted together. */
	for (i = 0; i < t; i++) {
		uint64_t den = 1;

		num[i] = 1;
		for (j = 0; j < t; j++) {
			if (j == i)
				continue;
			num[i] = trib_gf61_mul(num[i], shares[j].x);
			den = trib_gf61_mul(den, trib_gf61_sub(shares[j].x, shares[i].x));
		}
		lambda[i] = den;
	}
	inv_many(lambda, t, pre);
	for (i = 0; i < t; i++)
		lambda[i] = trib_gf61_mul(num[i], lambda[i]);
	for (c = 0; c < chunks; c++) {
		size_t off = c * TRIB_SHAMIR_CHUNK_BYTES;
		size_t nb = len - off < TRIB_SHAMIR_CHUNK_BYTES ? len - off : TRIB_SHAMIR_CHUNK_BYTES;
		uint64_t s = 0;

		for (i = 0; i < t; i++) {
			if (shares[i].y[c] >= P)
				return -EBADMSG;
			s = trib_gf61_add(s, trib_gf61_mul(lambda[i], shares[i].y[c]));
		}
		if (s >> (8 * nb))
			return -EBADMSG;
		store_le(secret + off, s, nb);
	}
	return 0;
}

/*
 * Do the shares named by idx[0..m) lie on the polynomial through the first t of them? 0, -EBADMSG,
 * or -EINVAL (a point repeated). P(x_e) = L(x_e) sum_i w_i y_i / (x_e - x_i), with the weights
 * w_i = 1 / prod_{j != i} (x_i - x_j) and L(x) = prod_i (x - x_i), i, j < t.
 */
static int on_curve(const struct trib_shamir_share *sh, const size_t *idx, size_t m, unsigned t,
		    size_t chunks)
{
	uint64_t w[TRIB_SHAMIR_T_MAX], d[TRIB_SHAMIR_T_MAX], pre[TRIB_SHAMIR_T_MAX + 2];
	uint64_t Ls[TRIB_SHAMIR_T_MAX + 2], invL[TRIB_SHAMIR_T_MAX + 2];
	size_t i, j, e, c;

	for (i = 0; i < t; i++) {
		uint64_t den = 1;

		for (j = 0; j < t; j++)
			if (j != i)
				den = trib_gf61_mul(den, trib_gf61_sub(sh[idx[i]].x, sh[idx[j]].x));
		if (!den)
			return -EINVAL;
		w[i] = den;
	}
	inv_many(w, t, pre); /* the t weights from one inversion */
	/* L_e = prod_i (x_e - x_i) for every e, their inverses from one inversion. */
	for (e = t; e < m; e++) {
		uint64_t L = 1;

		for (i = 0; i < t; i++) {
			uint64_t di = trib_gf61_sub(sh[idx[e]].x, sh[idx[i]].x);

			if (!di)
				return -EINVAL;
			L = trib_gf61_mul(L, di);
		}
		Ls[e - t] = L;
		invL[e - t] = L;
	}
	inv_many(invL, m - t, pre);
	for (e = t; e < m; e++) {
		const struct trib_shamir_share *s = &sh[idx[e]];
		uint64_t L = 1, inv = invL[e - t];

		/* d_i = x_e - x_i and every 1/d_i from 1/L_e and the prefix products. */
		for (i = 0; i < t; i++) {
			d[i] = trib_gf61_sub(s->x, sh[idx[i]].x);
			pre[i] = L;
			L = trib_gf61_mul(L, d[i]);
		}
		L = Ls[e - t];
		for (i = t; i-- > 0;) {
			uint64_t inv_d = trib_gf61_mul(inv, pre[i]);

			inv = trib_gf61_mul(inv, d[i]);
			d[i] = trib_gf61_mul(trib_gf61_mul(L, w[i]), inv_d); /* lambda_i(x_e) */
		}
		for (c = 0; c < chunks; c++) {
			uint64_t y = 0;

			for (i = 0; i < t; i++)
				y = trib_gf61_add(y, trib_gf61_mul(d[i], sh[idx[i]].y[c] % P));
			if (y != s->y[c])
				return -EBADMSG;
		}
	}
	return 0;
}

int trib_shamir_check(const struct trib_shamir_share *shares, size_t n, unsigned t, size_t len,
		      size_t *odd)
{
	size_t idx[TRIB_SHAMIR_T_MAX + 1], chunks = TRIB_SHAMIR_CHUNKS(len), found = n, k, i;
	int err = check_params(len, t);

	if (odd)
		*odd = n;
	if (err)
		return err;
	if (n < t || n > TRIB_SHAMIR_T_MAX + 1 ||
	    check_points(&shares[0].x, n, sizeof(shares[0])))
		return -EINVAL;
	for (i = 0; i < n; i++)
		idx[i] = i;
	err = on_curve(shares, idx, n, t, chunks);
	if (err != -EBADMSG || !odd || n < (size_t)t + 2)
		return err;
	/* Which one share is off? Each left out in turn; the answer only if exactly one fits. */
	for (k = 0; k < n; k++) {
		size_t m = 0;

		for (i = 0; i < n; i++)
			if (i != k)
				idx[m++] = i;
		if (!on_curve(shares, idx, m, t, chunks)) {
			if (found != n) {
				found = n;
				break;
			}
			found = k;
		}
	}
	*odd = found;
	return -EBADMSG;
}

void trib_shamir_encode(const struct trib_shamir_share *s, size_t len, uint8_t *out)
{
	size_t c;

	store_le(out, s->x, 4);
	for (c = 0; c < TRIB_SHAMIR_CHUNKS(len); c++)
		store_le(out + 4 + 8 * c, s->y[c], 8);
}

int trib_shamir_decode(const uint8_t *in, size_t len, struct trib_shamir_share *s)
{
	size_t c;

	if (len == 0 || len > TRIB_SHAMIR_SECRET_MAX)
		return -EINVAL;
	memset(s, 0, sizeof(*s));
	s->x = (uint32_t)load_le(in, 4);
	if (s->x == 0 || s->x > TRIB_SHAMIR_X_MAX)
		return -EINVAL;
	for (c = 0; c < TRIB_SHAMIR_CHUNKS(len); c++) {
		s->y[c] = load_le(in + 4 + 8 * c, 8);
		if (s->y[c] >= P)
			return -EINVAL;
	}
	return 0;
}
