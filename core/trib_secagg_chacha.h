/* SPDX-License-Identifier: MIT */
/* The mask PRG's fused expansion: ChaCha20 16 blocks at a time on AVX-512, summed into the sum. */
#ifndef TRIB_SECAGG_CHACHA_H
#define TRIB_SECAGG_CHACHA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Only core/trib_secagg_crypto.c calls this (trib_sa_prg_add_many and trib_sa_prg_add_u32, when
 * their adds are "avx512"): the public PRG is trib_secagg_crypto.h's, and it defines the stream.
 *
 * The block function is RFC 8439's ChaCha20 (constants, the 32-byte key, a 32-bit block counter,
 * the PRG's all-zero 96-bit nonce, 20 rounds, the input added back), computed for 16 consecutive
 * blocks at once, one AVX-512 register per state word. Where OpenSSL's ChaCha20_16x stores the
 * keystream (XORed with zeros) for the caller to load and add, this adds it to a running sum in
 * registers, stream after stream, and writes the sum once per 16 blocks: no keystream ever
 * reaches memory, and the sum is read and written once a call whatever its number of streams. The
 * words are the same (tests/core/test_secagg.c compares them with libsodium's and OpenSSL's
 * streams at any offset; tests/secagg/vectors.json pins them).
 */

/* Whether this CPU and build can run trib_sa_chacha16_add (x86-64, little-endian, AVX-512F). */
bool trib_sa_chacha16_ok(void);

/*
 * acc[i] += sum_j signs[j] * word (first + i) of keys[j]'s stream (mod 2^32) for i < n: what
 * trib_sa_prg_add_many computes, for any first word, length and number of streams. The sum of
 * the streams is transposed once per 16 blocks (a 16 x 16 u32 transpose in registers), then
 * added to acc. The caller checks: signs +-1, first + n <= 2^36 (TRIB_SA_PRG_MAX_WORDS: every
 * block added is below 2^32), trib_sa_chacha16_ok(). Borrowed buffers; acc 4-byte aligned.
 */
void trib_sa_chacha16_add(uint32_t *acc, uint64_t first, size_t n, const uint8_t *const keys[],
			  const int signs[], size_t count);

#endif
