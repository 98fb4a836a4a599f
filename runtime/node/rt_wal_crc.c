// SPDX-License-Identifier: MIT
/* CRC32C of the update log's records: SSE4.2 in three streams, joined with GF(2) shift tables. */
#include "rt_wal.h"

#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define POLY 0x82f63b78u /* Castagnoli, reflected */

/* One byte at a time: the fallback, and the definition the others must match. */
static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
	}
	return c;
}

/*
 * Shifting a CRC register over zero bytes is linear over GF(2): a 32 x 32
 * bit matrix, squared to double the length (the zlib crc32_combine way).
 */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
	uint32_t sum = 0;

	for (; vec; vec >>= 1, mat++)
		if (vec & 1)
			sum ^= *mat;
	return sum;
}

static void gf2_square(uint32_t *sq, const uint32_t *mat)
{
	for (int n = 0; n < 32; n++)
		sq[n] = gf2_times(mat, mat[n]);
}

/* The operator for @len zero bytes (@len a power of two, at least 1) into @op. */
static void zeros_op(uint32_t *op, size_t len)
{
	uint32_t odd[32], even[32];

	odd[0] = POLY; /* one zero bit */
	for (int n = 1; n < 32; n++)
		odd[n] = 1u << (n - 1);
	gf2_square(even, odd); /* two bits */
	gf2_square(odd, even); /* four bits */
	for (;;) {
		gf2_square(even, odd); /* one byte, then 4, 16, ... */
		len >>= 1;
		if (!len) {
			memcpy(op, even, sizeof(even));
			return;
		}
		gf2_square(odd, even); /* 2 bytes, then 8, 32, ... */
		len >>= 1;
		if (!len) {
			memcpy(op, odd, sizeof(odd));
			return;
		}
	}
}

static void zeros_table(uint32_t tab[4][256], size_t len)
{
	uint32_t op[32];

	zeros_op(op, len);
	for (uint32_t n = 0; n < 256; n++) {
		tab[0][n] = gf2_times(op, n);
		tab[1][n] = gf2_times(op, n << 8);
		tab[2][n] = gf2_times(op, n << 16);
		tab[3][n] = gf2_times(op, n << 24);
	}
}

void rt_wal_crc_init(struct rt_wal_crc *t)
{
	zeros_table(t->lng, RT_WAL_CRC_LONG);
	zeros_table(t->shrt, RT_WAL_CRC_SHORT);
}

#if defined(__x86_64__)
static inline uint64_t shift(const uint32_t tab[4][256], uint64_t c)
{
	return tab[0][c & 0xff] ^ tab[1][(c >> 8) & 0xff] ^ tab[2][(c >> 16) & 0xff] ^
	       tab[3][(c >> 24) & 0xff];
}

static inline uint64_t ld64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* Three streams of @blk bytes each, while 3 x @blk remain; then the first goes on alone. */
__attribute__((target("sse4.2"))) static const uint8_t *
three(const uint32_t tab[4][256], uint64_t *c0, const uint8_t *p, size_t *n, size_t blk)
{
	while (*n >= 3 * blk) {
		uint64_t c1 = 0, c2 = 0;
		const uint8_t *end = p + blk;

		do {
			*c0 = _mm_crc32_u64(*c0, ld64(p));
			c1 = _mm_crc32_u64(c1, ld64(p + blk));
			c2 = _mm_crc32_u64(c2, ld64(p + 2 * blk));
			p += 8;
		} while (p < end);
		*c0 = shift(tab, *c0) ^ c1;
		*c0 = shift(tab, *c0) ^ c2;
		p += 2 * blk;
		*n -= 3 * blk;
	}
	return p;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(const struct rt_wal_crc *t, uint32_t c,
							 const uint8_t *p, size_t n)
{
	uint64_t c0 = c;

	while (n && ((uintptr_t)p & 7)) {
		c0 = _mm_crc32_u8((uint32_t)c0, *p++);
		n--;
	}
	if (t) {
		p = three(t->lng, &c0, p, &n, RT_WAL_CRC_LONG);
		p = three(t->shrt, &c0, p, &n, RT_WAL_CRC_SHORT);
	}
	for (; n >= 8; n -= 8, p += 8)
		c0 = _mm_crc32_u64(c0, ld64(p));
	while (n--)
		c0 = _mm_crc32_u8((uint32_t)c0, *p++);
	return (uint32_t)c0;
}
#endif

uint32_t rt_wal_crc32c(const struct rt_wal_crc *t, uint32_t crc, const void *p, size_t len)
{
	uint32_t c = ~crc;

#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc_hw(t, c, p, len);
#else
	(void)t;
#endif
	return ~crc_sw(c, p, len);
}
