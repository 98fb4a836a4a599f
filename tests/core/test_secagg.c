// SPDX-License-Identifier: MIT
/* core/trib_secagg_crypto.c and core/trib_shamir.c against tests/secagg/vectors.json (the file
 * clients/python/test_secagg.py checks too), hand-computed field cases and refusals. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdbool.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trib_secagg_crypto.h"
#include "trib_shamir.h"

#ifndef TRIB_SECAGG_VECTORS
#error "tests/core/meson.build defines TRIB_SECAGG_VECTORS"
#endif

static json_t *vectors(void)
{
	json_error_t e;
	json_t *v = json_load_file(TRIB_SECAGG_VECTORS, 0, &e);

	cr_assert(v, "%s: %s (line %d)", TRIB_SECAGG_VECTORS, e.text, e.line);
	return v;
}

/* Hex string @js into buf (at most cap bytes); returns the byte count. */
static size_t hexv(json_t *js, const char *what, uint8_t *buf, size_t cap)
{
	const char *s = json_string_value(js);
	size_t n, i;

	cr_assert(s, "vector field %s missing", what);
	n = strlen(s) / 2;
	cr_assert(n <= cap, "field %s: %zu bytes > %zu", what, n, cap);
	for (i = 0; i < n; i++) {
		unsigned b;

		cr_assert(sscanf(s + 2 * i, "%2x", &b) == 1);
		buf[i] = (uint8_t)b;
	}
	return n;
}

static size_t hexf(json_t *o, const char *name, uint8_t *buf, size_t cap)
{
	return hexv(json_object_get(o, name), name, buf, cap);
}

static uint64_t intf(json_t *o, const char *name)
{
	json_t *j = json_object_get(o, name);

	cr_assert(json_is_integer(j), "vector field %s missing", name);
	return (uint64_t)json_integer_value(j);
}

Test(core_secagg, rfc_known_answers)
{
	json_t *v = vectors(), *r = json_object_get(v, "rfc"), *x = json_object_get(r, "x25519");
	json_t *k = json_object_get(r, "hkdf");
	uint8_t a_sk[32], a_pk[32], b_sk[32], b_pk[32], shared[32], got[64], want[64];
	uint8_t ikm[64], salt[64], info[64];
	size_t il, sl, nl, len;

	hexf(x, "alice_sk", a_sk, 32);
	hexf(x, "alice_pk", a_pk, 32);
	hexf(x, "bob_sk", b_sk, 32);
	hexf(x, "bob_pk", b_pk, 32);
	hexf(x, "shared", shared, 32);
	cr_assert_eq(trib_sa_public_key(got, a_sk), 0);
	cr_assert_arr_eq(got, a_pk, 32);
	cr_assert_eq(trib_sa_public_key(got, b_sk), 0);
	cr_assert_arr_eq(got, b_pk, 32);
	cr_assert_eq(trib_sa_agree(got, a_sk, b_pk), 0);
	cr_assert_arr_eq(got, shared, 32);
	cr_assert_eq(trib_sa_agree(got, b_sk, a_pk), 0);
	cr_assert_arr_eq(got, shared, 32);

	il = hexf(k, "ikm", ikm, sizeof(ikm));
	sl = hexf(k, "salt", salt, sizeof(salt));
	nl = hexf(k, "info", info, sizeof(info));
	len = hexf(k, "okm", want, sizeof(want));
	cr_assert_eq(len, intf(k, "length"));
	cr_assert_eq(trib_sa_hkdf(got, len, ikm, il, salt, sl, info, nl), 0);
	cr_assert_arr_eq(got, want, len);

	memset(shared, 0, 32);
	hexf(r, "chacha20_zero_block0", want, 64);
	cr_assert_eq(trib_sa_prg_bytes(got, 64, shared, 0), 0);
	cr_assert_arr_eq(got, want, 64);
	json_decref(v);
}

Test(core_secagg, keys_agreement_and_derivation_match_python)
{
	json_t *v = vectors(), *keys = json_object_get(v, "keys"), *e;
	uint8_t sk[3][32], pk[3][32], got[32], want[32], ikm[32];
	size_t i;

	cr_assert_eq(json_array_size(keys), 3);
	json_array_foreach(keys, i, e) {
		hexf(e, "sk", sk[i], 32);
		hexf(e, "pk", want, 32);
		cr_assert_eq(trib_sa_public_key(pk[i], sk[i]), 0);
		cr_assert_arr_eq(pk[i], want, 32);
	}
	json_array_foreach(json_object_get(v, "agree"), i, e) {
		size_t a = intf(e, "i"), b = intf(e, "j");

		hexf(e, "shared", want, 32);
		cr_assert_eq(trib_sa_agree(got, sk[a], pk[b]), 0);
		cr_assert_arr_eq(got, want, 32);
		cr_assert_eq(trib_sa_agree(got, sk[b], pk[a]), 0);
		cr_assert_arr_eq(got, want, 32);
	}
	cr_assert_gt(json_array_size(json_object_get(v, "derive")), 0);
	json_array_foreach(json_object_get(v, "derive"), i, e) {
		hexf(e, "ikm", ikm, 32);
		hexf(e, "out", want, 32);
		cr_assert_eq(trib_sa_derive(got, ikm, 32,
					    json_string_value(json_object_get(e, "label")),
					    intf(e, "round"), (uint32_t)intf(e, "a"),
					    (uint32_t)intf(e, "b")), 0);
		cr_assert_arr_eq(got, want, 32, "derive vector %zu", i);
	}
	json_decref(v);
}

Test(core_secagg, prg_ranges_match_python_and_add_in_place)
{
	json_t *v = vectors(), *e;
	size_t i;

	cr_assert_gt(json_array_size(json_object_get(v, "prg")), 0);
	json_array_foreach(json_object_get(v, "prg"), i, e) {
		uint8_t key[32], want[4096], got[4096];
		uint64_t first = intf(e, "first");
		size_t n = intf(e, "n"), len = hexf(e, "bytes", want, sizeof(want)), j;
		uint32_t words[1024], acc[1024];

		hexf(e, "key", key, 32);
		cr_assert_eq(len, 4 * n);
		cr_assert_eq(trib_sa_prg_bytes(got, len, key, first), 0);
		cr_assert_arr_eq(got, want, len, "prg vector %zu", i);
		cr_assert_eq(trib_sa_prg_u32(words, n, key, first), 0);
		for (j = 0; j < n; j++) {
			uint32_t w = (uint32_t)want[4 * j] | (uint32_t)want[4 * j + 1] << 8 |
				     (uint32_t)want[4 * j + 2] << 16 |
				     (uint32_t)want[4 * j + 3] << 24;

			cr_assert_eq(words[j], w, "vector %zu word %zu", i, j);
			acc[j] = 0xfffffff0u + (uint32_t)j; /* wraps for most words */
		}
		cr_assert_eq(trib_sa_prg_add_u32(acc, n, key, first, 1), 0);
		for (j = 0; j < n; j++)
			cr_assert_eq(acc[j], (uint32_t)(0xfffffff0u + j + words[j]));
		cr_assert_eq(trib_sa_prg_add_u32(acc, n, key, first, -1), 0);
		for (j = 0; j < n; j++)
			cr_assert_eq(acc[j], 0xfffffff0u + (uint32_t)j);
	}
	json_decref(v);
}

Test(core_secagg, prg_long_add_spans_steps_and_refuses_past_the_stream)
{
	enum { N = 5000 }; /* more than one 4096-byte step, odd start */
	static uint32_t acc[N], ref[N];
	uint8_t key[32];
	size_t j;

	memset(key, 0x5a, sizeof(key));
	cr_assert_eq(trib_sa_prg_u32(ref, N, key, 3), 0);
	cr_assert_eq(trib_sa_prg_add_u32(acc, N, key, 3, 1), 0);
	for (j = 0; j < N; j++)
		cr_assert_eq(acc[j], ref[j], "word %zu", j);
	cr_assert_eq(trib_sa_prg_add_u32(acc, 2, key, TRIB_SA_PRG_MAX_WORDS - 1, 1), -EINVAL);
	cr_assert_eq(trib_sa_prg_add_u32(acc, 1, key, 0, 2), -EINVAL);
	cr_assert_eq(trib_sa_prg_u32(acc, 1, key, TRIB_SA_PRG_MAX_WORDS), -EINVAL);
	cr_assert_eq(trib_sa_prg_u32(acc, 1, key, TRIB_SA_PRG_MAX_WORDS - 1), 0);
	cr_assert_eq(trib_sa_derive((uint8_t *)acc, key, 32, "", 0, 0, 0), -EINVAL);
	cr_assert_eq(trib_sa_derive((uint8_t *)acc, key, 32,
				    "a label longer than thirty-two bytes", 0, 0, 0), -EINVAL);
}

/*
 * The PRG runs on OpenSSL's ChaCha20 for long ranges and libsodium's for short ones: both must be
 * RFC 8439's stream, byte for byte, at any word (mid-block starts, the last blocks of the 2^32
 * counter), through trib_sa_prg_bytes (>= 1 KB goes to OpenSSL) and trib_sa_prg_add_u32.
 */
Test(core_secagg, prg_openssl_stream_equals_libsodium_at_any_offset)
{
	static const uint64_t firsts[] = { 0, 1, 3, 15, 16, 17, 255, 1000003,
					   UINT64_C(1) << 32, (UINT64_C(1) << 32) + 9,
					   TRIB_SA_PRG_MAX_WORDS - 70001, TRIB_SA_PRG_MAX_WORDS - 257 };
	static const size_t lens[] = { 1024, 1027, 1030, 4096 + 12, 70001 * 4 };
	static uint8_t got[70001 * 4], want[70001 * 4];
	static uint32_t acc[70001];
	uint8_t key[32];

	for (size_t k = 0; k < sizeof(key); k++)
		key[k] = (uint8_t)(k * 29 + 3);
	for (size_t f = 0; f < sizeof(firsts) / sizeof(firsts[0]); f++) {
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
			size_t len = lens[l], n = len / 4;

			if (firsts[f] + (len + 3) / 4 > TRIB_SA_PRG_MAX_WORDS)
				continue;
			memset(got, 0xa5, len);
			cr_assert_eq(trib_sa_prg_bytes_sodium(want, len, key, firsts[f]), 0);
			cr_assert_eq(trib_sa_prg_bytes(got, len, key, firsts[f]), 0);
			cr_assert_arr_eq(got, want, len, "first word %llu, %zu bytes",
					 (unsigned long long)firsts[f], len);
			memset(acc, 0, n * 4);
			cr_assert_eq(trib_sa_prg_add_u32(acc, n, key, firsts[f], 1), 0);
			for (size_t j = 0; j < n; j++) {
				uint32_t w;

				memcpy(&w, want + 4 * j, 4);
				cr_assert_eq(acc[j], w, "add: first word %llu, word %zu",
					     (unsigned long long)firsts[f], j);
			}
		}
	}
	/* The stream's very last word, alone and as the end of a long range. */
	cr_assert_eq(trib_sa_prg_bytes_sodium(want, 1024, key, TRIB_SA_PRG_MAX_WORDS - 256), 0);
	cr_assert_eq(trib_sa_prg_bytes(got, 1024, key, TRIB_SA_PRG_MAX_WORDS - 256), 0);
	cr_assert_arr_eq(got, want, 1024);
	cr_assert_eq(trib_sa_prg_bytes(got, 1028, key, TRIB_SA_PRG_MAX_WORDS - 256), -EINVAL);
}

Test(core_secagg, aead_matches_python_and_refuses_tampering)
{
	json_t *v = vectors(), *e;
	size_t i;

	json_array_foreach(json_object_get(v, "aead"), i, e) {
		uint8_t key[32], nonce[12], ad[64], pt[256], ct[256], got[256];
		size_t al = 0, pl, cl;

		hexf(e, "key", key, 32);
		hexf(e, "nonce", nonce, 12);
		al = hexf(e, "ad", ad, sizeof(ad));
		pl = hexf(e, "pt", pt, sizeof(pt));
		cl = hexf(e, "ct", ct, sizeof(ct));
		cr_assert_eq(cl, pl + TRIB_SA_TAG_BYTES);
		cr_assert_eq(trib_sa_seal(got, pt, pl, ad, al, nonce, key), 0);
		cr_assert_arr_eq(got, ct, cl, "aead vector %zu", i);
		cr_assert_eq(trib_sa_open(got, ct, cl, ad, al, nonce, key), 0);
		cr_assert_arr_eq(got, pt, pl);
		ct[cl - 1] ^= 1;
		cr_assert_eq(trib_sa_open(got, ct, cl, ad, al, nonce, key), -EBADMSG);
		ct[cl - 1] ^= 1;
		ad[0] ^= 1;
		cr_assert_eq(trib_sa_open(got, ct, cl, ad, al, nonce, key), -EBADMSG);
		cr_assert_eq(trib_sa_open(got, ct, 15, ad, al, nonce, key), -EINVAL);
	}
	json_decref(v);
}

Test(core_secagg, low_order_peer_key_is_refused)
{
	uint8_t sk[32], zero[32] = { 0 }, out[32];

	memset(sk, 7, sizeof(sk));
	cr_assert_eq(trib_sa_agree(out, sk, zero), -EINVAL);
}

/*
 * The low-order points of curve25519 (cr.yp.to/ecdh.html: 0, 1, the two of order 8, p - 1, and
 * p, p + 1), each also with bit 255 set (X25519 ignores it): every agreement with them is zero.
 */
static const char *const low_order[] = {
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"0000000000000000000000000000000000000000000000000000000000000080",
	"0100000000000000000000000000000000000000000000000000000000000080",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
};

Test(core_secagg, public_key_check_refuses_exactly_the_low_order_points)
{
	uint8_t pk[32], sk[32], out[32];

	for (size_t i = 0; i < sizeof(low_order) / sizeof(low_order[0]); i++) {
		for (int b = 0; b < 32; b++)
			sscanf(low_order[i] + 2 * b, "%2hhx", &pk[b]);
		cr_assert_eq(trib_sa_public_key_check(pk), -EINVAL, "point %zu accepted", i);
		/* And indeed no agreement with it is possible. */
		memset(sk, (int)i + 1, sizeof(sk));
		cr_assert_eq(trib_sa_agree(out, sk, pk), -EINVAL, "point %zu", i);
	}
	for (int i = 0; i < 64; i++) {
		/* Honest keys, and the basepoint: accepted. */
		memset(sk, i, sizeof(sk));
		sk[31] ^= (uint8_t)(i * 37);
		cr_assert_eq(trib_sa_public_key(pk, sk), 0);
		cr_assert_eq(trib_sa_public_key_check(pk), 0, "key %d refused", i);
	}
	memset(pk, 0, sizeof(pk));
	pk[0] = 9;
	cr_assert_eq(trib_sa_public_key_check(pk), 0);
}

/* Refused by X25519 itself: libsodium's scalarmult (the check's old body) with the scalar 9. */
static bool sodium_refuses(const uint8_t pk[32])
{
	static const uint8_t probe[32] = { 9 };
	uint8_t out[32];

	return crypto_scalarmult(out, probe, pk) != 0;
}

/*
 * And by an X25519 that holds no list (libsodium's ref10 checks the same list before its
 * ladder): OpenSSL's, which fails a derivation whose result is all zero. The scalar 9, clamped
 * as any private key, is a multiple of the cofactor.
 */
static bool openssl_refuses(const uint8_t pk[32])
{
	static const uint8_t probe[32] = { 9 };
	EVP_PKEY *me = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, probe, 32);
	EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pk, 32);
	EVP_PKEY_CTX *ctx = me ? EVP_PKEY_CTX_new(me, NULL) : NULL;
	uint8_t out[32];
	size_t len = sizeof(out);
	int ok;

	cr_assert(me && peer && ctx, "OpenSSL's X25519 keys");
	ok = EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
	     EVP_PKEY_derive(ctx, out, &len) == 1;
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	EVP_PKEY_free(me);
	return !ok;
}

static void check_agrees(const uint8_t pk[32], const char *what, int i)
{
	bool listed = trib_sa_public_key_check(pk) == -EINVAL;

	cr_assert_eq(listed, sodium_refuses(pk), "%s %d: the list says %d, libsodium's X25519 not",
		     what, i, listed);
	cr_assert_eq(listed, openssl_refuses(pk), "%s %d: the list says %d, OpenSSL's X25519 not",
		     what, i, listed);
}

/*
 * trib_sa_public_key_check compares with a list (no scalar multiplication): it must refuse
 * exactly what an X25519 with a cofactor-multiple scalar sends to zero. On the listed points,
 * their neighbours (one bit or one unit off, where a wrong list entry would show) and random
 * keys (half of them on the twist).
 */
Test(core_secagg, public_key_check_list_agrees_with_x25519)
{
	uint8_t pk[32];
	int refused = 0;

	for (size_t i = 0; i < sizeof(low_order) / sizeof(low_order[0]); i++) {
		uint8_t base[32];

		for (int b = 0; b < 32; b++)
			sscanf(low_order[i] + 2 * b, "%2hhx", &base[b]);
		check_agrees(base, "listed point", (int)i);
		refused += trib_sa_public_key_check(base) == -EINVAL;
		for (int bit = 0; bit < 256; bit++) {
			memcpy(pk, base, 32);
			pk[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			check_agrees(pk, "a listed point with one bit flipped", (int)i * 256 + bit);
		}
		for (int d = -2; d <= 2; d++) {
			/* x + d as a little-endian number (carries through the bytes). */
			int carry = d;

			memcpy(pk, base, 32);
			for (int b = 0; b < 32 && carry; b++) {
				int v = pk[b] + carry;

				pk[b] = (uint8_t)v;
				carry = v < 0 ? -1 : v > 255 ? 1 : 0;
			}
			check_agrees(pk, "a listed point plus a unit", (int)i * 8 + d + 2);
		}
	}
	cr_assert_eq(refused, (int)(sizeof(low_order) / sizeof(low_order[0])),
		     "every listed encoding is refused");
	for (int i = 0; i < 2000; i++) {
		randombytes_buf(pk, sizeof(pk));
		check_agrees(pk, "random key", i);
	}
}

Test(core_shamir, field_hand_computed)
{
	const uint64_t P = TRIB_SHAMIR_P;

	cr_assert_eq(trib_gf61_add(P - 1, 1), 0);
	cr_assert_eq(trib_gf61_sub(0, 1), P - 1);
	cr_assert_eq(trib_gf61_mul(P - 1, P - 1), 1); /* (-1)^2 */
	cr_assert_eq(trib_gf61_mul(UINT64_C(1) << 60, 2), 1); /* 2^61 = 1 */
	cr_assert_eq(trib_gf61_mul(UINT64_C(1) << 60, UINT64_C(1) << 60), UINT64_C(1) << 59);
	cr_assert_eq(trib_gf61_inv(2), (P + 1) / 2);
	cr_assert_eq(trib_gf61_mul(trib_gf61_inv(123456789), 123456789), 1);
	cr_assert_eq(trib_gf61_inv(0), 0);
}

Test(core_shamir, combine_hand_computed_lines)
{
	struct trib_shamir_share s[2] = { 0 };
	uint8_t out[8];

	/* f(x) = 5 + 7x at 2 and 3. */
	s[0].x = 2, s[0].y[0] = 19, s[1].x = 3, s[1].y[0] = 26;
	cr_assert_eq(trib_shamir_combine(s, 2, 2, 1, out), 0);
	cr_assert_eq(out[0], 5);
	/* f(x) = 5 + (P-1)x wraps: f(1) = 4, f(2) = 3. */
	s[0].x = 1, s[0].y[0] = 4, s[1].x = 2, s[1].y[0] = 3;
	cr_assert_eq(trib_shamir_combine(s, 2, 2, 1, out), 0);
	cr_assert_eq(out[0], 5);
	/* Two chunks: bytes 1..7 little-endian, then byte 8; slope 1. */
	s[0].x = 1, s[1].x = 2;
	s[0].y[0] = 0x07060504030201u + 1, s[1].y[0] = 0x07060504030201u + 2;
	s[0].y[1] = 9, s[1].y[1] = 10;
	cr_assert_eq(trib_shamir_combine(s, 2, 2, 8, out), 0);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(out[i], i + 1);
	/* A chunk of 1 byte rebuilt as 256 is not a secret. */
	s[0].x = 1, s[0].y[0] = 256, s[1].x = 2, s[1].y[0] = 256;
	cr_assert_eq(trib_shamir_combine(s, 2, 2, 1, out), -EBADMSG);
}

Test(core_shamir, shares_match_python_and_any_t_rebuild)
{
	json_t *v = vectors(), *e;
	size_t i;

	cr_assert_gt(json_array_size(json_object_get(v, "shamir")), 0);
	json_array_foreach(json_object_get(v, "shamir"), i, e) {
		struct trib_shamir_share sh[16], pick[16];
		uint8_t secret[64], seed[32], got[64], enc[4 + 8 * TRIB_SHAMIR_MAX_CHUNKS];
		uint8_t want[sizeof(enc)];
		uint32_t xs[16];
		size_t len = hexf(e, "secret", secret, sizeof(secret)), n, j, r;
		unsigned t = (unsigned)intf(e, "t");
		json_t *jx;

		hexf(e, "coef_seed", seed, 32);
		n = json_array_size(json_object_get(e, "xs"));
		cr_assert(n <= 16);
		json_array_foreach(json_object_get(e, "xs"), j, jx)
			xs[j] = (uint32_t)json_integer_value(jx);
		cr_assert_eq(trib_shamir_split(secret, len, t, xs, n, seed, sh), 0);
		for (j = 0; j < n; j++) {
			json_t *js = json_array_get(json_object_get(e, "shares"), j);
			size_t wl;

			wl = hexv(js, "shares[]", want, sizeof(want));
			cr_assert_eq(wl, TRIB_SHAMIR_SHARE_BYTES(len));
			trib_shamir_encode(&sh[j], len, enc);
			cr_assert_arr_eq(enc, want, wl, "shamir vector %zu share %zu", i, j);
			cr_assert_eq(trib_shamir_decode(want, len, &pick[j]), 0);
			cr_assert_eq(pick[j].x, sh[j].x);
		}
		/* Every rotation of the points, t at a time, rebuilds the secret. */
		for (r = 0; r < n; r++) {
			for (j = 0; j < t; j++)
				pick[j] = sh[(r + j) % n];
			cr_assert_eq(trib_shamir_combine(pick, t, t, len, got), 0);
			cr_assert_arr_eq(got, secret, len, "vector %zu rotation %zu", i, r);
		}
	}
	json_decref(v);
}

Test(core_shamir, fewer_than_threshold_and_bad_parameters)
{
	struct trib_shamir_share sh[8];
	uint8_t secret[32], seed[32], got[32];
	uint32_t xs[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, dup[3] = { 1, 2, 1 }, zero[1] = { 0 };
	uint8_t enc[TRIB_SHAMIR_SHARE_BYTES(32)];
	int wrong = 0;

	for (int i = 0; i < 32; i++)
		secret[i] = (uint8_t)(i * 37 + 1), seed[i] = (uint8_t)i;
	cr_assert_eq(trib_shamir_split(secret, 32, 5, xs, 8, seed, sh), 0);
	/* Four of a threshold of five: Lagrange of the wrong degree, not the secret. */
	for (int r = 0; r < 8; r++) {
		struct trib_shamir_share p[4] = { sh[r], sh[(r + 1) % 8], sh[(r + 2) % 8],
						  sh[(r + 5) % 8] };
		int err = trib_shamir_combine(p, 4, 4, 32, got);

		wrong += err == -EBADMSG || memcmp(got, secret, 32) != 0;
	}
	cr_assert_eq(wrong, 8);
	cr_assert_eq(trib_shamir_combine(sh, 4, 5, 32, got), -EINVAL);
	cr_assert_eq(trib_shamir_split(secret, 0, 1, xs, 1, seed, sh), -EINVAL);
	cr_assert_eq(trib_shamir_split(secret, 65, 1, xs, 1, seed, sh), -EINVAL);
	cr_assert_eq(trib_shamir_split(secret, 32, 0, xs, 1, seed, sh), -EINVAL);
	cr_assert_eq(trib_shamir_split(secret, 32, 4, xs, 3, seed, sh), -EINVAL);
	cr_assert_eq(trib_shamir_split(secret, 32, 2, dup, 3, seed, sh), -EINVAL);
	cr_assert_eq(trib_shamir_split(secret, 32, 1, zero, 1, seed, sh), -EINVAL);
	/* The wire form refuses x = 0 and a y that is not a field element. */
	trib_shamir_encode(&sh[0], 32, enc);
	memset(enc, 0, 4);
	cr_assert_eq(trib_shamir_decode(enc, 32, &sh[1]), -EINVAL);
	trib_shamir_encode(&sh[0], 32, enc);
	memset(enc + 4, 0xff, 8);
	cr_assert_eq(trib_shamir_decode(enc, 32, &sh[1]), -EINVAL);
}

/*
 * trib_sa_prg_add_many (OpenSSL, a group of streams per pass over the sum) gives the sum of
 * libsodium's streams word by word, at odd first words and lengths, with both signs; it refuses
 * a bad sign, a group too large and a range past the stream, leaving acc as it was.
 */
Test(core_secagg, prg_add_many_equals_libsodiums_streams_summed)
{
	static const uint64_t firsts[] = { 0, 1, 7, 1023, 1000003, TRIB_SA_PRG_MAX_WORDS - 3001 };
	static const size_t lens[] = { 1, 15, 1025, 3001 };
	static uint8_t keys[TRIB_SA_PRG_MANY_MAX + 1][32], ks[3001 * 4];
	static uint32_t acc[3001], want[3001];
	const uint8_t *kp[TRIB_SA_PRG_MANY_MAX + 1];
	int signs[TRIB_SA_PRG_MANY_MAX + 1];

	for (size_t j = 0; j <= TRIB_SA_PRG_MANY_MAX; j++) {
		for (size_t b = 0; b < 32; b++)
			keys[j][b] = (uint8_t)(j * 37 + b * 11 + 5);
		kp[j] = keys[j];
		signs[j] = j % 3 == 1 ? -1 : 1;
	}
	for (size_t f = 0; f < sizeof(firsts) / sizeof(firsts[0]); f++) {
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
			size_t n = lens[l];

			for (size_t count = 1; count <= TRIB_SA_PRG_MANY_MAX; count += 15) {
				for (size_t i = 0; i < n; i++)
					acc[i] = want[i] = (uint32_t)(i * 2654435761u);
				for (size_t j = 0; j < count; j++) {
					cr_assert_eq(trib_sa_prg_bytes_sodium(ks, n * 4, keys[j],
									      firsts[f]), 0);
					for (size_t i = 0; i < n; i++) {
						uint32_t w;

						memcpy(&w, ks + 4 * i, 4);
						want[i] += signs[j] > 0 ? w : -w;
					}
				}
				cr_assert_eq(trib_sa_prg_add_many(acc, n, firsts[f], count, kp, signs),
					     0);
				cr_assert_arr_eq(acc, want, n * 4, "first %llu, %zu words, %zu streams",
						 (unsigned long long)firsts[f], n, count);
			}
		}
	}
	memcpy(want, acc, sizeof(acc));
	cr_assert_eq(trib_sa_prg_add_many(acc, 10, 0, TRIB_SA_PRG_MANY_MAX + 1, kp, signs), -EINVAL);
	signs[3] = 2;
	cr_assert_eq(trib_sa_prg_add_many(acc, 10, 0, 4, kp, signs), -EINVAL);
	signs[3] = 1;
	cr_assert_eq(trib_sa_prg_add_many(acc, 2, TRIB_SA_PRG_MAX_WORDS - 1, 1, kp, signs), -EINVAL);
	cr_assert_arr_eq(acc, want, sizeof(acc), "a refused call changed the sum");
	cr_assert_eq(trib_sa_prg_add_many(acc, 0, 0, 3, kp, signs), 0);
	cr_assert_eq(trib_sa_prg_add_many(acc, 5, 0, 0, kp, signs), 0);
	cr_assert_arr_eq(acc, want, sizeof(acc), "an empty call changed the sum");
}

/*
 * Every implementation of the adds (AVX-512, AVX2, the portable loop; trib_sa_prg_add_use)
 * gives the plain word-by-word sum of libsodium's streams: lengths around the vector widths and
 * the 4 KB step, a sum that starts off a 64-byte boundary and wraps, 1 to 33 streams (a group
 * and one more) of both signs. What this CPU lacks is refused, never run.
 */
Test(core_secagg, prg_adds_of_every_impl_equal_the_plain_sum)
{
	static const char *const impls[] = { "avx512", "avx2", "generic" };
	static const uint64_t firsts[] = { 0, 5, 16, 1000003 };
	static const size_t lens[] = { 1, 7, 8, 15, 16, 17, 31, 33, 1023, 1024, 1025, 2049, 3001 };
	static const size_t counts[] = { 1, 2, 31, 32, 33 };
	enum { MAXW = 3001, MAXS = 33 };
	static uint8_t keys[MAXS][32], ks[MAXW * 4];
	static uint32_t accs[MAXW + 1], want[MAXW];
	uint32_t *acc = accs + 1; /* 4-byte aligned, not 64 */
	const uint8_t *kp[MAXS];
	int signs[MAXS], ran = 0;

	for (size_t j = 0; j < MAXS; j++) {
		for (size_t b = 0; b < 32; b++)
			keys[j][b] = (uint8_t)(j * 53 + b * 7 + 1);
		kp[j] = keys[j];
		signs[j] = j % 4 == 2 ? 1 : -1;
	}
	for (size_t m = 0; m < sizeof(impls) / sizeof(impls[0]); m++) {
		int err = trib_sa_prg_add_use(impls[m]);

		if (err == -ENOTSUP)
			continue;
		cr_assert_eq(err, 0, "%s", impls[m]);
		cr_assert_str_eq(trib_sa_prg_add_impl(), impls[m]);
		ran++;
		for (size_t f = 0; f < sizeof(firsts) / sizeof(firsts[0]); f++) {
			for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
				size_t n = lens[l];

				for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
					size_t count = counts[c], j0;

					for (size_t i = 0; i < n; i++)
						acc[i] = want[i] = 0xffffff00u + (uint32_t)(i * 97u);
					for (size_t j = 0; j < count; j++) {
						cr_assert_eq(trib_sa_prg_bytes_sodium(ks, n * 4, keys[j],
										      firsts[f]), 0);
						for (size_t i = 0; i < n; i++) {
							uint32_t w = (uint32_t)ks[4 * i] |
								     (uint32_t)ks[4 * i + 1] << 8 |
								     (uint32_t)ks[4 * i + 2] << 16 |
								     (uint32_t)ks[4 * i + 3] << 24;

							want[i] += signs[j] > 0 ? w : 0u - w;
						}
					}
					/* The groups as fn_secagg_expand makes them, the last alone. */
					for (j0 = 0; j0 + 1 < count; j0 += TRIB_SA_PRG_MANY_MAX) {
						size_t k = count - 1 - j0 < TRIB_SA_PRG_MANY_MAX ?
								   count - 1 - j0 : TRIB_SA_PRG_MANY_MAX;

						cr_assert_eq(trib_sa_prg_add_many(acc, n, firsts[f], k,
										  kp + j0, signs + j0),
							     0);
					}
					cr_assert_eq(trib_sa_prg_add_u32(acc, n, keys[count - 1], firsts[f],
									 signs[count - 1]),
						     0);
					cr_assert_arr_eq(acc, want, n * 4,
							 "%s: first %llu, %zu words, %zu streams",
							 impls[m], (unsigned long long)firsts[f], n,
							 count);
				}
			}
		}
	}
	cr_assert_eq(trib_sa_prg_add_use("sse9"), -EINVAL);
	cr_assert_eq(trib_sa_prg_add_use(NULL), 0);
	/* Unforced, the adds are the widest this CPU has. */
#if defined(__x86_64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	cr_assert_str_eq(trib_sa_prg_add_impl(), __builtin_cpu_supports("avx512f") ? "avx512" :
						 __builtin_cpu_supports("avx2")    ? "avx2" :
										     "generic");
	cr_assert_eq(ran, 1 + !!__builtin_cpu_supports("avx512f") + !!__builtin_cpu_supports("avx2"),
		     "every implementation this CPU has ran");
#endif
	cr_log_info("adds run on %d implementations", ran);
}

/* Lagrange's lambda_i at 0 for the points of sh[0..t). */
static uint64_t lambda_at0(const struct trib_shamir_share *sh, unsigned t, unsigned i)
{
	uint64_t num = 1, den = 1;

	for (unsigned j = 0; j < t; j++) {
		if (j == i)
			continue;
		num = trib_gf61_mul(num, sh[j].x);
		den = trib_gf61_mul(den, trib_gf61_sub(sh[j].x, sh[i].x));
	}
	return trib_gf61_mul(num, trib_gf61_inv(den));
}

Test(core_shamir, check_catches_a_crafted_share_combine_accepts_and_names_it)
{
	struct trib_shamir_share sh[9], bad[9];
	uint8_t secret[32], seed[32], got[32];
	uint32_t xs[9] = { 3, 5, 8, 13, 21, 34, 55, 89, 144 };
	size_t odd = 0;

	for (int i = 0; i < 32; i++)
		secret[i] = (uint8_t)(i * 11 + 7), seed[i] = (uint8_t)(255 - i);
	cr_assert_eq(trib_shamir_split(secret, 32, 4, xs, 9, seed, sh), 0);
	cr_assert_eq(trib_shamir_check(sh, 9, 4, 32, &odd), 0);
	cr_assert_eq(odd, 9);
	cr_assert_eq(trib_shamir_check(sh, 4, 4, 32, &odd), 0, "exactly t: nothing to check");
	/* Share 2 shifted by 1 / lambda_2 in chunk 0: combine rebuilds secret + 1, no error. */
	for (unsigned liar = 0; liar < 9; liar++) {
		memcpy(bad, sh, sizeof(sh));
		if (liar < 4)
			bad[liar].y[0] = trib_gf61_add(bad[liar].y[0],
						       trib_gf61_inv(lambda_at0(bad, 4, liar)));
		else
			bad[liar].y[3] = trib_gf61_add(bad[liar].y[3], 1);
		if (liar < 4) {
			cr_assert_eq(trib_shamir_combine(bad, 9, 4, 32, got), 0);
			cr_assert_eq(got[0], (uint8_t)(secret[0] + 1), "the crafted lie passes combine");
		}
		cr_assert_eq(trib_shamir_check(bad, 9, 4, 32, &odd), -EBADMSG, "liar %u", liar);
		cr_assert_eq(odd, liar, "liar %u named as %zu", liar, odd);
		/* t + 1 shares: the lie is seen, but not whose it is. */
		if (liar < 5) {
			cr_assert_eq(trib_shamir_check(bad, 5, 4, 32, &odd), -EBADMSG);
			cr_assert_eq(odd, 5);
		}
	}
	/* Two liars among nine: seen, nobody named. */
	memcpy(bad, sh, sizeof(sh));
	bad[1].y[1] ^= 1;
	bad[6].y[2] ^= 1;
	cr_assert_eq(trib_shamir_check(bad, 9, 4, 32, &odd), -EBADMSG);
	cr_assert_eq(odd, 9);
	bad[6] = bad[5];
	cr_assert_eq(trib_shamir_check(bad, 9, 4, 32, &odd), -EINVAL, "a point twice");
	cr_assert_eq(trib_shamir_check(sh, 3, 4, 32, &odd), -EINVAL, "fewer than t");
}

/*
 * HKDF over a long IKM extracts on OpenSSL's HMAC (HKDF_OPENSSL_MIN): the same bytes as
 * the libsodium path below it, on both sides of the threshold and at the stage bodies' sizes,
 * with and without a salt (and a salt longer than SHA-256's block, hashed first). The restart
 * journal's retry digests (rt_sa_digest) depend on it.
 */
Test(core_secagg, hkdf_long_ikm_equals_libsodium_hmac)
{
	static const size_t lens[] = { 63, 64, 65, 150, 1900, 4095, 4096, 4097, 100003 };
	static const uint8_t salt[] = "tributary secagg: a stage's body, for retries";
	uint8_t *ikm = malloc(100003), prk[32], want[32], got[32], one = 1, long_salt[100];
	crypto_auth_hmacsha256_state st;

	cr_assert(ikm);
	for (size_t i = 0; i < 100003; i++)
		ikm[i] = (uint8_t)(i * 131u + 7u);
	for (size_t i = 0; i < sizeof(long_salt); i++)
		long_salt[i] = (uint8_t)(i * 7u + 1u);
	for (size_t s = 0; s < 3; s++) {
		size_t sl = s == 2 ? sizeof(long_salt) : s ? sizeof(salt) - 1 : 0;
		const uint8_t *sp = s == 2 ? long_salt : salt;

		for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
			crypto_auth_hmacsha256_init(&st, sp, sl);
			crypto_auth_hmacsha256_update(&st, ikm, lens[k]);
			crypto_auth_hmacsha256_final(&st, prk);
			crypto_auth_hmacsha256_init(&st, prk, sizeof(prk));
			crypto_auth_hmacsha256_update(&st, &one, 1);
			crypto_auth_hmacsha256_final(&st, want);
			memset(got, 0, sizeof(got));
			cr_assert_eq(trib_sa_hkdf(got, 16, ikm, lens[k], sp, sl, NULL, 0), 0);
			cr_assert_arr_eq(got, want, 16, "ikm %zu bytes, salt %zu", lens[k], sl);
			ikm[lens[k] / 2] ^= 1; /* a changed byte changes the digest */
			cr_assert_eq(trib_sa_hkdf(got, 16, ikm, lens[k], sp, sl, NULL, 0), 0);
			cr_assert(memcmp(got, want, 16));
			ikm[lens[k] / 2] ^= 1;
		}
	}
	free(ikm);
}

/* Poly1305 on OpenSSL: RFC 8439 2.5.2's vector, and libsodium's tag over long odd lengths. */
Test(core_secagg, poly1305_rfc8439_and_libsodium)
{
	static const uint8_t key[32] = {
		0x85, 0xd6, 0xbe, 0x78, 0x57, 0x55, 0x6d, 0x33, 0x7f, 0x44, 0x52, 0xfe, 0x42, 0xd5, 0x06, 0xa8,
		0x01, 0x03, 0x80, 0x8a, 0xfb, 0x0d, 0xb2, 0xfd, 0x4a, 0xbf, 0xf6, 0xaf, 0x41, 0x49, 0xf5, 0x1b
	};
	static const uint8_t want[16] = { 0xa8, 0x06, 0x1d, 0xc1, 0x30, 0x51, 0x36, 0xc6,
					  0xc2, 0x2b, 0x8b, 0xaf, 0x0c, 0x01, 0x27, 0xa9 };
	static const char msg[] = "Cryptographic Forum Research Group";
	static const size_t lens[] = { 0, 1, 15, 16, 17, 4000003 };
	uint8_t tag[16], ref[16], *big = malloc(4000003);

	cr_assert(big);
	cr_assert_eq(trib_sa_poly1305(tag, key, msg, sizeof(msg) - 1), 0);
	cr_assert_arr_eq(tag, want, 16);
	for (size_t i = 0; i < 4000003; i++)
		big[i] = (uint8_t)(i * 37u + 11u);
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		cr_assert_eq(trib_sa_poly1305(tag, key, big, lens[k]), 0);
		crypto_onetimeauth_poly1305(ref, big, lens[k], key);
		cr_assert_arr_eq(tag, ref, 16, "%zu bytes", lens[k]);
	}
	big[2000000] ^= 0x80; /* one bit of a 4 MB body changes the tag */
	cr_assert_eq(trib_sa_poly1305(ref, key, big, 4000003), 0);
	cr_assert(memcmp(tag, ref, 16));
	free(big);
}
