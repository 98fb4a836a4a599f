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

uint64_t trib_gf61_inv(uint64_t a)
{
	uint64_t r = 1, e = P - 2;

	if (a == 0)
		return 0;
	while (e) {
		if (e & 1)
			r = trib_gf61_mul(r, a);
		a = trib_gf61_mul(a, a);
		e >>= 1;
	}
	return r;
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
	uint64_t lambda[TRIB_SHAMIR_T_MAX];
	size_t chunks = TRIB_SHAMIR_CHUNKS(len), c, i, j;
	int err;

	err = check_params(len, t);
	if (err)
		return err;
	if (n < t || check_points(&shares[0].x, t, sizeof(shares[0])))
		return -EINVAL;
	/* lambda_i = prod_{j != i} x_j / (x_j - x_i): the Lagrange basis at 0, shared by chunks. */
	for (i = 0; i < t; i++) {
		uint64_t num = 1, den = 1;

		for (j = 0; j < t; j++) {
			if (j == i)
				continue;
			num = trib_gf61_mul(num, shares[j].x);
			den = trib_gf61_mul(den, trib_gf61_sub(shares[j].x, shares[i].x));
		}
		lambda[i] = trib_gf61_mul(num, trib_gf61_inv(den));
	}
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
	uint64_t w[TRIB_SHAMIR_T_MAX], d[TRIB_SHAMIR_T_MAX], pre[TRIB_SHAMIR_T_MAX];
	size_t i, j, e, c;

	for (i = 0; i < t; i++) {
		uint64_t den = 1;

		for (j = 0; j < t; j++)
			if (j != i)
				den = trib_gf61_mul(den, trib_gf61_sub(sh[idx[i]].x, sh[idx[j]].x));
		if (!den)
			return -EINVAL;
		w[i] = trib_gf61_inv(den);
	}
	for (e = t; e < m; e++) {
		const struct trib_shamir_share *s = &sh[idx[e]];
		uint64_t L = 1, inv;

		/* d_i = x_e - x_i, their product L, and every 1/d_i from one inversion. */
		for (i = 0; i < t; i++) {
			d[i] = trib_gf61_sub(s->x, sh[idx[i]].x);
			if (!d[i])
				return -EINVAL;
			pre[i] = L;
			L = trib_gf61_mul(L, d[i]);
		}
		inv = trib_gf61_inv(L);
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
