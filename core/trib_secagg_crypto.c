/* SPDX-License-Identifier: MIT */
/* Secure aggregation's primitives over libsodium: X25519, HKDF-SHA256, ChaCha20 PRG, AEAD. */
#include "trib_secagg_crypto.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

/* Bytes of keystream expanded per step of trib_sa_prg_add_u32 (on the stack, L1-sized). */
#define PRG_STEP_BYTES 4096u

int trib_sa_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

int trib_sa_public_key(uint8_t pk[32], const uint8_t sk[32])
{
	if (trib_sa_init() || crypto_scalarmult_base(pk, sk) != 0)
		return -EIO;
	return 0;
}

int trib_sa_agree(uint8_t out[32], const uint8_t sk[32], const uint8_t peer_pk[32])
{
	if (trib_sa_init())
		return -EIO;
	/* libsodium refuses an all-zero result, as RFC 7748 section 6.1 lets a protocol do. */
	if (crypto_scalarmult(out, sk, peer_pk) != 0) {
		sodium_memzero(out, 32);
		return -EINVAL;
	}
	return 0;
}

int trib_sa_public_key_check(const uint8_t pk[32])
{
	static const uint8_t probe[32] = { 9 }; /* any scalar: clamping makes it 8k + 2^254 */
	uint8_t out[32];
	int err;

	if (trib_sa_init())
		return -EIO;
	err = crypto_scalarmult(out, probe, pk) ? -EINVAL : 0;
	sodium_memzero(out, sizeof(out));
	return err;
}

int trib_sa_hkdf(uint8_t *out, size_t out_len, const uint8_t *ikm, size_t ikm_len,
		 const uint8_t *salt, size_t salt_len, const uint8_t *info, size_t info_len)
{
	crypto_auth_hmacsha256_state st;
	uint8_t prk[32], t[32];
	size_t done = 0;
	uint8_t ctr = 0;

	if (out_len > 255u * 32u || trib_sa_init())
		return -EINVAL;
	/* Extract: PRK = HMAC(salt, IKM). */
	crypto_auth_hmacsha256_init(&st, salt, salt_len);
	crypto_auth_hmacsha256_update(&st, ikm, ikm_len);
	crypto_auth_hmacsha256_final(&st, prk);
	/* Expand: T(i) = HMAC(PRK, T(i-1) || info || i). */
	while (done < out_len) {
		size_t n = out_len - done < 32 ? out_len - done : 32;

		ctr++;
		crypto_auth_hmacsha256_init(&st, prk, sizeof(prk));
		if (ctr > 1)
			crypto_auth_hmacsha256_update(&st, t, sizeof(t));
		crypto_auth_hmacsha256_update(&st, info, info_len);
		crypto_auth_hmacsha256_update(&st, &ctr, 1);
		crypto_auth_hmacsha256_final(&st, t);
		memcpy(out + done, t, n);
		done += n;
	}
	sodium_memzero(prk, sizeof(prk));
	sodium_memzero(t, sizeof(t));
	sodium_memzero(&st, sizeof(st));
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

int trib_sa_derive(uint8_t out[32], const uint8_t *ikm, size_t ikm_len, const char *label,
		   uint64_t round, uint32_t a, uint32_t b)
{
	uint8_t info[TRIB_SA_LABEL_MAX + 1 + 16];
	size_t ll = label ? strlen(label) : 0;

	if (ll == 0 || ll > TRIB_SA_LABEL_MAX)
		return -EINVAL;
	memcpy(info, label, ll);
	info[ll] = 0;
	put_le(info + ll + 1, round, 8);
	put_le(info + ll + 9, a, 4);
	put_le(info + ll + 13, b, 4);
	return trib_sa_hkdf(out, 32, ikm, ikm_len, (const uint8_t *)TRIB_SA_SALT,
			    sizeof(TRIB_SA_SALT) - 1, info, ll + 17);
}

/* Does [first, first + n) words fit in one stream? */
static int prg_range_ok(uint64_t first, uint64_t n)
{
	return first <= TRIB_SA_PRG_MAX_WORDS && n <= TRIB_SA_PRG_MAX_WORDS - first;
}

int trib_sa_prg_bytes(uint8_t *out, size_t len, const uint8_t key[32], uint64_t first_word)
{
	static const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
	uint64_t start = first_word * 4;
	uint64_t block = start / 64;
	size_t skip = (size_t)(start % 64), done = 0;

	if (!prg_range_ok(first_word, ((uint64_t)len + 3) / 4) || trib_sa_init())
		return -EINVAL;
	if (skip && len) {
		uint8_t tmp[64] = { 0 };
		size_t n = 64 - skip < len ? 64 - skip : len;

		crypto_stream_chacha20_ietf_xor_ic(tmp, tmp, sizeof(tmp), nonce, (uint32_t)block,
						   key);
		memcpy(out, tmp + skip, n);
		sodium_memzero(tmp, sizeof(tmp));
		done = n;
		block++;
	}
	if (done < len) {
		/* The keystream is the encryption of zeros. */
		memset(out + done, 0, len - done);
		crypto_stream_chacha20_ietf_xor_ic(out + done, out + done, len - done, nonce,
						   (uint32_t)block, key);
	}
	return 0;
}

static inline uint32_t le32(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
#else
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

int trib_sa_prg_u32(uint32_t *out, size_t n, const uint8_t key[32], uint64_t first)
{
	int err;

	if (n > SIZE_MAX / 4)
		return -EINVAL;
	err = trib_sa_prg_bytes((uint8_t *)out, n * 4, key, first);
	if (err)
		return err;
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
	for (size_t i = 0; i < n; i++)
		out[i] = le32((const uint8_t *)&out[i]);
#endif
	return 0;
}

int trib_sa_prg_add_u32(uint32_t *acc, size_t n, const uint8_t key[32], uint64_t first, int sign)
{
	uint8_t buf[PRG_STEP_BYTES];
	size_t done = 0;

	if ((sign != 1 && sign != -1) || !prg_range_ok(first, n))
		return -EINVAL;
	while (done < n) {
		size_t m = n - done < PRG_STEP_BYTES / 4 ? n - done : PRG_STEP_BYTES / 4;
		size_t i;
		int err = trib_sa_prg_bytes(buf, m * 4, key, first + done);

		if (err)
			return err;
		/* Unsigned arithmetic wraps modulo 2^32: the group masks live in. */
		if (sign > 0)
			for (i = 0; i < m; i++)
				acc[done + i] += le32(buf + 4 * i);
		else
			for (i = 0; i < m; i++)
				acc[done + i] -= le32(buf + 4 * i);
		done += m;
	}
	sodium_memzero(buf, sizeof(buf));
	return 0;
}

int trib_sa_seal(uint8_t *ct, const uint8_t *pt, size_t pt_len, const uint8_t *ad, size_t ad_len,
		 const uint8_t nonce[12], const uint8_t key[32])
{
	unsigned long long clen = 0;

	if (trib_sa_init())
		return -EIO;
	if (crypto_aead_chacha20poly1305_ietf_encrypt(ct, &clen, pt, pt_len, ad, ad_len, NULL,
						      nonce, key) != 0)
		return -EIO;
	return 0;
}

int trib_sa_open(uint8_t *pt, const uint8_t *ct, size_t ct_len, const uint8_t *ad, size_t ad_len,
		 const uint8_t nonce[12], const uint8_t key[32])
{
	unsigned long long plen = 0;

	if (ct_len < TRIB_SA_TAG_BYTES)
		return -EINVAL;
	if (trib_sa_init())
		return -EIO;
	if (crypto_aead_chacha20poly1305_ietf_decrypt(pt, &plen, NULL, ct, ct_len, ad, ad_len,
						      nonce, key) != 0)
		return -EBADMSG;
	return 0;
}
