/* SPDX-License-Identifier: MIT */
/* Secure aggregation's primitives: X25519, HKDF-SHA256, the ChaCha20 mask PRG and the share AEAD. */
#ifndef TRIB_SECAGG_CRYPTO_H
#define TRIB_SECAGG_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

/*
 * All of it is libsodium (Debian's libsodium 1.0.18), and clients/python/tributary_secagg.py
 * computes the same bytes with python3-cryptography; tests/secagg/vectors.json pins both.
 *
 * Keys: X25519 (RFC 7748). A client holds two key pairs per round: c (to encrypt the shares it
 * sends) and s (to agree on pairwise masks). The raw shared secret is never used as a key: it
 * goes through HKDF first.
 *
 * Key derivation (trib_sa_derive): HKDF-SHA256 (RFC 5869) with
 *     salt = "tributary-secagg-v1"  (19 bytes)
 *     info = label || 0x00 || u64 LE round || u32 LE a || u32 LE b
 * and 32 bytes out. HKDF rather than libsodium's crypto_kdf (BLAKE2b) because Python's
 * cryptography has HKDF and not crypto_kdf, and 1.0.18 has no crypto_kdf_hkdf: it is built here
 * on crypto_auth_hmacsha256. The uses:
 *     pairwise mask key  derive(X25519(s_sk_u, s_pk_v), "mask",  round, min(u,v), max(u,v))
 *     self mask key      derive(b_u,                    "self",  round, u, 0)
 *     share AEAD key     derive(X25519(c_sk_u, c_pk_v), "share", round, from, to)
 *
 * PRG (trib_sa_prg_*): the ChaCha20 keystream of RFC 8439 (IETF: 96-bit nonce, 32-bit block
 * counter starting at 0) with the derived key and an all-zero nonce (each key serves one stream),
 * read as u32 little-endian words. Word i is bytes 4i..4i+3, so any range of words can be
 * expanded alone (block i/16). A stream is at most TRIB_SA_PRG_MAX_WORDS words (2^32 blocks).
 * Ranges of 1 KB and more run on OpenSSL's ChaCha20 (faster here), shorter ones on libsodium's:
 * the same keystream (the .c says why). On AVX-512, trib_sa_prg_add_many's groups of 8 streams
 * or more run core/trib_secagg_chacha.c's ChaCha20, fused with the add: the same words again.
 *
 * AEAD (trib_sa_seal/open): ChaCha20-Poly1305 IETF (RFC 8439), 12-byte nonce, 16-byte tag.
 * XChaCha20 would allow random nonces more freely, but python3-cryptography lacks it; each share
 * key encrypts one message per direction per round and a random nonce rides with it anyway.
 */
#define TRIB_SA_KEY_BYTES 32u
#define TRIB_SA_NONCE_BYTES 12u
#define TRIB_SA_TAG_BYTES 16u
#define TRIB_SA_PRG_MAX_WORDS (UINT64_C(1) << 36)
#define TRIB_SA_SALT "tributary-secagg-v1"
/* Longest label trib_sa_derive takes. */
#define TRIB_SA_LABEL_MAX 32u

/* libsodium's sodium_init(); 0 or -EIO. Idempotent and thread-safe; every function below calls it. */
int trib_sa_init(void);

/* pk = X25519(sk, basepoint). 0 or -EIO. */
int trib_sa_public_key(uint8_t pk[32], const uint8_t sk[32]);

/* out = X25519(sk, peer_pk). 0, or -EINVAL if the result is all zero (a low-order peer key). */
int trib_sa_agree(uint8_t out[32], const uint8_t sk[32], const uint8_t peer_pk[32]);

/*
 * Whether @pk can be agreed with: 0, or -EINVAL for a low-order point (order 1, 2, 4 or 8, in
 * any of its encodings), with which every agreement is all zero (trib_sa_agree refuses it).
 * Compared against the list of those encodings (7, top bit ignored): the same answer as an
 * X25519 with any clamped scalar (a multiple of the cofactor 8, and no multiple of the prime
 * order lies between 2^254 and 2^255) sending the key to zero, at a fraction of its cost.
 */
int trib_sa_public_key_check(const uint8_t pk[32]);

/*
 * HKDF-SHA256: out[0..out_len) from ikm, salt, info. 0, or -EINVAL if out_len > 255 * 32, or
 * -EIO if OpenSSL's HMAC fails (only for ikm_len >= 4 KB, which it computes). All buffers
 * borrowed.
 */
int trib_sa_hkdf(uint8_t *out, size_t out_len, const uint8_t *ikm, size_t ikm_len,
		 const uint8_t *salt, size_t salt_len, const uint8_t *info, size_t info_len);

/*
 * Poly1305 (RFC 8439) of msg under key, on OpenSSL (AVX-512: ~12 GB/s on the bench machine,
 * against 1.5-1.75 GB/s for SHA-256 with the SHA extensions). A one-time MAC: used with one key
 * for many messages it stays a universal hash (two different messages of L bytes collide with
 * probability about L / 2^106) only while no tag is ever shown to whoever chooses the messages.
 * 0, or -ENOMEM/-EIO if OpenSSL cannot make its context.
 */
int trib_sa_poly1305(uint8_t tag[16], const uint8_t key[32], const void *msg, size_t len);

/* out = the 32-byte key of (label, round, a, b) from ikm (see above). -EINVAL for a bad label. */
int trib_sa_derive(uint8_t out[32], const uint8_t *ikm, size_t ikm_len, const char *label,
		   uint64_t round, uint32_t a, uint32_t b);

/*
 * Bytes [4 * first_word, 4 * first_word + len) of the key's stream into out. 0, -EINVAL if the
 * range passes TRIB_SA_PRG_MAX_WORDS words, or -ENOMEM/-EIO if OpenSSL's context cannot be made
 * (only for len >= 1 KB: shorter ranges cannot fail otherwise).
 */
int trib_sa_prg_bytes(uint8_t *out, size_t len, const uint8_t key[32], uint64_t first_word);

/* The same bytes through libsodium's crypto_stream_chacha20_ietf_xor_ic alone (the reference). */
int trib_sa_prg_bytes_sodium(uint8_t *out, size_t len, const uint8_t key[32], uint64_t first_word);

/* Words [first, first + n) of the key's stream, as host u32 values. 0 or -EINVAL. */
int trib_sa_prg_u32(uint32_t *out, size_t n, const uint8_t key[32], uint64_t first);

/*
 * acc[i] += sign * word[first + i] (mod 2^32) for i < n, sign +1 or -1, without a buffer of n
 * words: the mask expansion that unmasking spreads over ranges, expanded and added in one pass
 * of L1-sized pieces. 0, -EINVAL, or -ENOMEM/-EIO (OpenSSL's context).
 */
int trib_sa_prg_add_u32(uint32_t *acc, size_t n, const uint8_t key[32], uint64_t first, int sign);

/* Streams trib_sa_prg_add_many takes at once (its OpenSSL contexts are on its stack). */
#define TRIB_SA_PRG_MANY_MAX 32u

/*
 * acc[i] += sum_j signs[j] * word[first + i] of keys[j]'s stream (mod 2^32), i < n, for
 * count <= TRIB_SA_PRG_MANY_MAX streams: the same sum as trib_sa_prg_add_u32 stream by stream,
 * in one pass over acc (each L1-sized piece of it takes every stream). 0, -EINVAL (a sign not
 * +-1, the range past the stream, count too large), or -ENOMEM/-EIO (OpenSSL's contexts); on
 * error acc holds part of the sum.
 */
int trib_sa_prg_add_many(uint32_t *acc, size_t n, uint64_t first, size_t count,
			 const uint8_t *const keys[], const int signs[]);

/*
 * What the adds of trib_sa_prg_add_u32/_many run on (a static string), the widest this CPU has
 * unless trib_sa_prg_add_use chose another: "avx512" (core/trib_secagg_chacha.c computes the
 * streams and sums them in registers, no OpenSSL), "avx2" or "generic" (OpenSSL's keystream in
 * 4 KB steps, each added with AVX2 or the portable loop). Every one gives the same bits.
 */
const char *trib_sa_prg_add_impl(void);

/*
 * Tests and benches: run the adds on @name ("avx512", "avx2", "generic") from now on, or on the
 * CPU's widest again for NULL. 0, -ENOTSUP if this CPU or build lacks it, -EINVAL for another
 * name. Not to be called while another thread adds.
 */
int trib_sa_prg_add_use(const char *name);

/*
 * ct[0..pt_len + 16) = ChaCha20-Poly1305(key, nonce, ad, pt). ct may equal pt. Returns 0 or -EIO.
 */
int trib_sa_seal(uint8_t *ct, const uint8_t *pt, size_t pt_len, const uint8_t *ad, size_t ad_len,
		 const uint8_t nonce[12], const uint8_t key[32]);

/* pt[0..ct_len - 16) from ct. 0, -EINVAL if ct_len < 16, -EBADMSG if the tag does not verify. */
int trib_sa_open(uint8_t *pt, const uint8_t *ct, size_t ct_len, const uint8_t *ad, size_t ad_len,
		 const uint8_t nonce[12], const uint8_t key[32]);

#endif
