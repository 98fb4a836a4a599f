// SPDX-License-Identifier: MIT
/*
 * The mask PRG's fused expansion (trib_secagg_chacha.h says what and why): ChaCha20's block
 * function for 16 blocks in AVX-512 registers, the keystreams of many streams summed there and
 * added to the sum once per 16 blocks. Linked with core/trib_secagg_crypto.c, its only caller.
 */
#include "trib_secagg_chacha.h"

#include <string.h>

#if defined(__x86_64__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#include <immintrin.h>

bool trib_sa_chacha16_ok(void)
{
	return __builtin_cpu_supports("avx512f");
}

/* "expand 32-byte k", RFC 8439 2.3. */
#define C0 0x61707865
#define C1 0x3320646e
#define C2 0x79622d32
#define C3 0x6b206574

/* RFC 8439 2.1's quarter round on four registers (16 blocks' copies of four state words). */
#define QR(a, b, c, d)                                                          \
	do {                                                                    \
		a = _mm512_add_epi32(a, b);                                     \
		d = _mm512_rol_epi32(_mm512_xor_si512(d, a), 16);               \
		c = _mm512_add_epi32(c, d);                                     \
		b = _mm512_rol_epi32(_mm512_xor_si512(b, c), 12);               \
		a = _mm512_add_epi32(a, b);                                     \
		d = _mm512_rol_epi32(_mm512_xor_si512(d, a), 8);                \
		c = _mm512_add_epi32(c, d);                                     \
		b = _mm512_rol_epi32(_mm512_xor_si512(b, c), 7);                \
	} while (0)

/*
 * s[w] += sign * word w of the 16 blocks whose counters are ctr's lanes, under key k (8 LE
 * words). The state is named variables, not an array: they must all live in registers.
 */
__attribute__((target("avx512f"), always_inline)) static inline void
chacha16_sum(__m512i s[16], __m512i ctr, const uint32_t k[8], int sign)
{
	__m512i x0 = _mm512_set1_epi32(C0), x1 = _mm512_set1_epi32(C1);
	__m512i x2 = _mm512_set1_epi32(C2), x3 = _mm512_set1_epi32(C3);
	__m512i x4 = _mm512_set1_epi32((int)k[0]), x5 = _mm512_set1_epi32((int)k[1]);
	__m512i x6 = _mm512_set1_epi32((int)k[2]), x7 = _mm512_set1_epi32((int)k[3]);
	__m512i x8 = _mm512_set1_epi32((int)k[4]), x9 = _mm512_set1_epi32((int)k[5]);
	__m512i x10 = _mm512_set1_epi32((int)k[6]), x11 = _mm512_set1_epi32((int)k[7]);
	__m512i x12 = ctr, x13 = _mm512_setzero_si512();
	__m512i x14 = _mm512_setzero_si512(), x15 = _mm512_setzero_si512();

	for (int r = 0; r < 10; r++) {
		/* A column round then a diagonal round (RFC 8439 2.3.1). */
		QR(x0, x4, x8, x12);
		QR(x1, x5, x9, x13);
		QR(x2, x6, x10, x14);
		QR(x3, x7, x11, x15);
		QR(x0, x5, x10, x15);
		QR(x1, x6, x11, x12);
		QR(x2, x7, x8, x13);
		QR(x3, x4, x9, x14);
	}
	/* The input added back; the nonce words are zero, so x13..x15 stand as they are. */
	x0 = _mm512_add_epi32(x0, _mm512_set1_epi32(C0));
	x1 = _mm512_add_epi32(x1, _mm512_set1_epi32(C1));
	x2 = _mm512_add_epi32(x2, _mm512_set1_epi32(C2));
	x3 = _mm512_add_epi32(x3, _mm512_set1_epi32(C3));
	x4 = _mm512_add_epi32(x4, _mm512_set1_epi32((int)k[0]));
	x5 = _mm512_add_epi32(x5, _mm512_set1_epi32((int)k[1]));
	x6 = _mm512_add_epi32(x6, _mm512_set1_epi32((int)k[2]));
	x7 = _mm512_add_epi32(x7, _mm512_set1_epi32((int)k[3]));
	x8 = _mm512_add_epi32(x8, _mm512_set1_epi32((int)k[4]));
	x9 = _mm512_add_epi32(x9, _mm512_set1_epi32((int)k[5]));
	x10 = _mm512_add_epi32(x10, _mm512_set1_epi32((int)k[6]));
	x11 = _mm512_add_epi32(x11, _mm512_set1_epi32((int)k[7]));
	x12 = _mm512_add_epi32(x12, ctr);
#define SUM(w) s[w] = sign > 0 ? _mm512_add_epi32(s[w], x##w) : _mm512_sub_epi32(s[w], x##w)
	SUM(0), SUM(1), SUM(2), SUM(3), SUM(4), SUM(5), SUM(6), SUM(7);
	SUM(8), SUM(9), SUM(10), SUM(11), SUM(12), SUM(13), SUM(14), SUM(15);
#undef SUM
}

/*
 * r[b] = word 0..15 of block b from s[w] = word w of blocks 0..15: a 16 x 16 transpose of u32.
 * 32-bit then 64-bit interleaves leave, in each 128-bit lane L, four words of block 4 L + i in
 * u[4 g + i] (words 4 g..4 g + 3); two 128-bit shuffles per row then gather a block's four lanes.
 */
__attribute__((target("avx512f"), always_inline)) static inline void transpose16(__m512i r[16],
										 const __m512i s[16])
{
	__m512i t[16], u[16];

	for (int p = 0; p < 16; p += 2) {
		t[p] = _mm512_unpacklo_epi32(s[p], s[p + 1]);
		t[p + 1] = _mm512_unpackhi_epi32(s[p], s[p + 1]);
	}
	for (int g = 0; g < 4; g++) {
		u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
		u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
		u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
		u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
	}
	for (int i = 0; i < 4; i++) {
		__m512i v0 = _mm512_shuffle_i32x4(u[i], u[4 + i], 0x44);
		__m512i v1 = _mm512_shuffle_i32x4(u[i], u[4 + i], 0xee);
		__m512i v2 = _mm512_shuffle_i32x4(u[8 + i], u[12 + i], 0x44);
		__m512i v3 = _mm512_shuffle_i32x4(u[8 + i], u[12 + i], 0xee);

		r[i] = _mm512_shuffle_i32x4(v0, v2, 0x88);
		r[4 + i] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
		r[8 + i] = _mm512_shuffle_i32x4(v1, v3, 0x88);
		r[12 + i] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
	}
}

__attribute__((target("avx512f"))) void trib_sa_chacha16_add(uint32_t *acc, uint64_t first,
							      size_t n, const uint8_t *const keys[],
							      const int signs[], size_t count)
{
	const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const uint64_t end = first + n;
	uint32_t part[16] __attribute__((aligned(64))), k[8];

	/* Runs of 16 blocks from the block of word `first`; blk's words are [16 blk, 16 blk + 16). */
	for (uint64_t run = first / 16; run * 16 < end; run += 16) {
		/*
		 * Lanes whose block passes 2^32 - 1 wrap here, but their words lie past 2^36,
		 * beyond every range (the caller's check): they are computed and never added.
		 */
		__m512i ctr = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)run), lanes);
		__m512i s[16], r[16];

		for (int w = 0; w < 16; w++)
			s[w] = _mm512_setzero_si512();
		for (size_t j = 0; j < count; j++) {
			memcpy(k, keys[j], sizeof(k)); /* little-endian: the key's LE words */
			chacha16_sum(s, ctr, k, signs[j]);
		}
		transpose16(r, s);
		for (int b = 0; b < 16; b++) {
			uint64_t lo = (run + (uint64_t)b) * 16, hi = lo + 16;

			if (hi <= first)
				continue;
			if (lo >= end)
				break;
			if (lo >= first && hi <= end) {
				uint32_t *a = acc + (lo - first);

				_mm512_storeu_si512(a, _mm512_add_epi32(_mm512_loadu_si512(a), r[b]));
				continue;
			}
			/* The range's first or last block, in part. */
			_mm512_store_si512(part, r[b]);
			for (uint64_t w = lo > first ? lo : first; w < hi && w < end; w++)
				acc[w - first] += part[w - lo];
		}
	}
	/* Sums of mask words and the keys: the round's secrets, gone with the call. */
	explicit_bzero(part, sizeof(part));
	explicit_bzero(k, sizeof(k));
}

#else

bool trib_sa_chacha16_ok(void)
{
	return false;
}

void trib_sa_chacha16_add(uint32_t *acc, uint64_t first, size_t n, const uint8_t *const keys[],
			  const int signs[], size_t count)
{
	/* Never called: trib_sa_chacha16_ok() is false here. */
	(void)acc, (void)first, (void)n, (void)keys, (void)signs, (void)count;
}

#endif
