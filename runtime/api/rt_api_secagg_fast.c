// SPDX-License-Identifier: MIT
/*
 * Secure aggregation's stage bodies and answers without jansson, for the shapes honest clients
 * send and read (issue 19). A shares body is 20 ciphertexts of 264 hex digits at k = 20, a
 * GET .../secagg/shares answer the same: jansson reads and writes them a character at a time
 * (UTF-8 checks, one allocation per string), 58 us to parse one and 23 us to dump one on the
 * bench machine, ~0.01 s of the gateway's CPU a round at 100 clients, more than the rest of
 * those requests (docs/BENCHMARKS.md, "The secure round's stage requests").
 *
 * The reader is a recogniser, not a second parser: it accepts only
 *   {"ARR": [{"KI": uint, "KH": "hex"}, ...]}
 * with JSON whitespace between tokens, the entry's two fields in either order, 1 to @max
 * entries, KI an integer with no sign, fraction, exponent or leading zero below
 * RT_SECAGG_MAX_CLIENTS, KH exactly 2 * @each lowercase hex digits; no escape anywhere. Any
 * other byte and it answers -1: the caller then runs the strict jansson path
 * (rt_api_secagg_check.c), which accepts it or refuses it with its 400 naming the field. Each
 * body this accepts, that path accepts with the same values (tests/runtime/test_secagg_fast.c
 * checks both on the same bodies, and the near misses fall through to it).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api_priv.h"
#include "rt_secagg.h"
#include "trib_alloc.h"

struct cur {
	const char *p, *end;
};

static void ws(struct cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static bool lit(struct cur *c, char ch)
{
	ws(c);
	if (c->p < c->end && *c->p == ch) {
		c->p++;
		return true;
	}
	return false;
}

/* The string token "@s" (no escape: a key spelled with one goes to the strict path). */
static bool key(struct cur *c, const char *s)
{
	size_t n = strlen(s);

	ws(c);
	if ((size_t)(c->end - c->p) < n + 2 || c->p[0] != '"' || memcmp(c->p + 1, s, n) ||
	    c->p[n + 1] != '"')
		return false;
	c->p += n + 2;
	return true;
}

static bool digit(const struct cur *c)
{
	return c->p < c->end && *c->p >= '0' && *c->p <= '9';
}

/* A client index as rt__sa_index takes it: a JSON integer, 0 <= v < RT_SECAGG_MAX_CLIENTS. */
static bool index_of(struct cur *c, uint32_t *out)
{
	uint32_t v = 0;

	ws(c);
	if (!digit(c))
		return false; /* a sign, a string, null...: the strict path says what is wrong */
	if (*c->p == '0') {
		c->p++;
	} else {
		while (digit(c)) {
			v = v * 10 + (uint32_t)(*c->p++ - '0');
			if (v >= RT_SECAGG_MAX_CLIENTS)
				return false;
		}
	}
	/* "01", "1.0", "1e3" are not this integer (invalid JSON, or a real; the grammar would
	 * refuse the byte after it too: said here, where it is decided). */
	if (digit(c) || (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E')))
		return false;
	*out = v;
	return true;
}

/* A lowercase hex digit's value + 1; 0 for any other byte (a table: 5.3 KB of hex a body). */
static const uint8_t hexval[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
	['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
	['f'] = 16,
};

/* "@n bytes as 2n lowercase hex digits" into @out. */
static bool hex_of(struct cur *c, uint8_t *out, size_t n)
{
	const unsigned char *s;
	unsigned bad = 0;

	ws(c);
	if ((size_t)(c->end - c->p) < 2 * n + 2 || c->p[0] != '"' || c->p[2 * n + 1] != '"')
		return false;
	s = (const unsigned char *)c->p + 1;
	for (size_t i = 0; i < n; i++) {
		unsigned hi = hexval[s[2 * i]], lo = hexval[s[2 * i + 1]];

		/* A digit gives 0..15; a non-digit (0) wraps to all ones: bits above 15 mark it. */
		bad |= (hi - 1) | (lo - 1);
		out[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
	}
	if (bad & ~15u)
		return false;
	c->p += 2 * n + 2;
	return true;
}

int rt__sa_fast_list(const void *body, size_t len, const char *arr, const char *ki,
		     const char *kh, size_t each, uint32_t max, uint32_t *ix, uint8_t *bytes,
		     uint32_t *cnt)
{
	struct cur c = { body, (const char *)body + len };
	uint32_t k = 0;

	if (!lit(&c, '{') || !key(&c, arr) || !lit(&c, ':') || !lit(&c, '['))
		return -1;
	for (;;) {
		bool have_i = false, have_h = false;

		if (k == max || !lit(&c, '{'))
			return -1;
		for (int f = 0; f < 2; f++) {
			if (f && !lit(&c, ','))
				return -1;
			if (!have_i && key(&c, ki)) {
				if (!lit(&c, ':') || !index_of(&c, &ix[k]))
					return -1;
				have_i = true;
			} else if (!have_h && key(&c, kh)) {
				if (!lit(&c, ':') || !hex_of(&c, bytes + (size_t)k * each, each))
					return -1;
				have_h = true;
			} else {
				return -1; /* another field, or one twice */
			}
		}
		if (!lit(&c, '}'))
			return -1;
		k++;
		if (lit(&c, ','))
			continue;
		if (lit(&c, ']'))
			break;
		return -1;
	}
	if (!lit(&c, '}'))
		return -1;
	ws(&c);
	if (c.p != c.end)
		return -1;
	*cnt = k;
	return 0;
}

/* --- answers --- */

int rt__sa_text_init(struct rt_sa_text *t, size_t cap)
{
	t->s = trib_malloc(cap);
	t->len = 0;
	t->cap = cap;
	return t->s ? 0 : -ENOMEM;
}

void rt__sa_text_put(struct rt_sa_text *t, const char *s)
{
	size_t n = strlen(s);

	/* The caller sized the buffer for the answer: running out is a bug, kept visible. */
	if (t->len + n >= t->cap) {
		t->len = t->cap; /* marks it: rt__sa_text_ok fails */
		return;
	}
	memcpy(t->s + t->len, s, n);
	t->len += n;
}

void rt__sa_text_hex(struct rt_sa_text *t, const uint8_t *p, size_t n)
{
	static const char dig[] = "0123456789abcdef";

	if (t->len + 2 * n + 2 >= t->cap) {
		t->len = t->cap;
		return;
	}
	t->s[t->len++] = '"';
	for (size_t i = 0; i < n; i++) {
		t->s[t->len++] = dig[p[i] >> 4];
		t->s[t->len++] = dig[p[i] & 15];
	}
	t->s[t->len++] = '"';
}

bool rt__sa_text_ok(const struct rt_sa_text *t)
{
	return t->s && t->len < t->cap;
}
