// SPDX-License-Identifier: MIT
/*
 * The mask PRG's fused expansion (trib_secagg_chacha.h says what and why): ChaCha20's block
 * function for 16 blocks in AVX-512 registers, the keystreams of many streams summed there and
 * added to the sum once per 16 blocks. Linked with core/trib_secagg_crypto.c, its only caller.
 */
#include "trib_secagg_chacha.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__BYTE_ORDER__) && \
	__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
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

__attribute__((target("avx512f"))) void trib_sa_chacha16_add(uint32_t *acc, size_t chunks,
							      uint32_t block0,
							      const uint8_t *const keys[],
							      const int signs[], size_t count)
{
	const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	uint32_t tmp[16][16] __attribute__((aligned(64))), k[8];

	for (size_t c = 0; c < chunks; c++) {
		/* block0 + 16 chunks <= 2^32 (the caller's check): no lane's counter wraps. */
		__m512i ctr = _mm512_add_epi32(_mm512_set1_epi32((int)(block0 + 16 * (uint32_t)c)),
					       lanes);
		__m512i s[16];
		uint32_t *a = acc + 256 * c;

		for (int w = 0; w < 16; w++)
			s[w] = _mm512_setzero_si512();
		for (size_t j = 0; j < count; j++) {
			memcpy(k, keys[j], sizeof(k)); /* little-endian: the key's LE words */
			chacha16_sum(s, ctr, k, signs[j]);
		}
		/*
		 * s[w] lane b is word w of block b: the sum's words 16 b + w. A scalar transpose,
		 * once per 16 blocks of every stream (TRIB_SA_CHACHA16_MIN_STREAMS says when it pays).
		 */
		for (int w = 0; w < 16; w++)
			_mm512_store_si512(tmp[w], s[w]);
		for (int b = 0; b < 16; b++)
			for (int w = 0; w < 16; w++)
				a[16 * b + w] += tmp[w][b];
	}
	/* Sums of mask words and key words: the round's secrets, gone with the call. */
	explicit_bzero(tmp, sizeof(tmp));
	explicit_bzero(k, sizeof(k));
}

#else

bool trib_sa_chacha16_ok(void)
{
	return false;
}

void trib_sa_chacha16_add(uint32_t *acc, size_t chunks, uint32_t block0,
			  const uint8_t *const keys[], const int signs[], size_t count)
{
	/* Never called: trib_sa_chacha16_ok() is false here. */
	(void)acc, (void)chunks, (void)block0, (void)keys, (void)signs, (void)count;
}

#endif
