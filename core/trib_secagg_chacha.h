/* SPDX-License-Identifier: MIT */
/* The mask PRG's fused expansion: ChaCha20 16 blocks at a time on AVX-512, summed into the sum. */
#ifndef TRIB_SECAGG_CHACHA_H
#define TRIB_SECAGG_CHACHA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Only core/trib_secagg_crypto.c calls this (its trib_sa_prg_add_many, for its AVX-512 adds):
 * the public PRG is trib_secagg_crypto.h's, and it defines the stream.
 *
 * The block function is RFC 8439's ChaCha20 (constants, the 32-byte key, a 32-bit block counter,
 * the PRG's all-zero 96-bit nonce, 20 rounds, the input added back), computed for 16 consecutive
 * blocks at once, one AVX-512 register per state word. Where OpenSSL's ChaCha20_16x stores the
 * keystream (XORed with zeros) for the caller to load and add, this adds it to a running sum in
 * registers, stream after stream, and writes the sum once per 16 blocks: no keystream ever
 * reaches memory, and the sum is read and written once whatever the number of streams. The
 * words are the same (tests/core/test_secagg.c compares them with libsodium's and OpenSSL's
 * streams at any offset; tests/secagg/vectors.json pins them).
 */

/* Streams a group needs for the fused path: below, the once-per-chunk transposed add costs more
 * than the OpenSSL path's stores (trib_sa_prg_add_many takes that path). */
#define TRIB_SA_CHACHA16_MIN_STREAMS 8u

/* Whether this CPU and build can run trib_sa_chacha16_add (x86-64, little-endian, AVX-512F). */
bool trib_sa_chacha16_ok(void);

/*
 * acc[256 c + 16 b + w] += sum_j signs[j] * word w of block (block0 + 16 c + b) of keys[j]'s
 * stream (mod 2^32), for c < chunks and b, w < 16: the words [16 block0, 16 block0 + 256 chunks)
 * of every stream, added at acc. The caller checks: signs +-1, block0 + 16 chunks <= 2^32 (the
 * counter never wraps), trib_sa_chacha16_ok(). Borrowed buffers; acc 4-byte aligned.
 */
void trib_sa_chacha16_add(uint32_t *acc, size_t chunks, uint32_t block0,
			  const uint8_t *const keys[], const int signs[], size_t count);

#endif
