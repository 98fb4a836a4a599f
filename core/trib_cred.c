// SPDX-License-Identifier: MIT
/* Client tokens: HMAC-SHA256 over job, client and expiry under the job's key (see the header). */
#include "trib_cred.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <sodium.h>

#define PREFIX "tc1."
#define DOMAIN "tributary-client-v1"

static bool client_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '-';
}

bool trib_cred_client_valid(const char *id)
{
	size_t n;

	if (!id)
		return false;
	for (n = 0; id[n]; n++)
		if (n >= TRIB_CRED_CLIENT_MAX || !client_char(id[n]))
			return false;
	return n > 0;
}

bool trib_cred_is_client_token(const char *token)
{
	return token && !strncmp(token, PREFIX, strlen(PREFIX));
}

int trib_cred_key_new(uint8_t key[TRIB_CRED_KEY_LEN])
{
	size_t got = 0;

	while (got < TRIB_CRED_KEY_LEN) {
		ssize_t n = getrandom(key + got, TRIB_CRED_KEY_LEN - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	return 0;
}

void trib_cred_key_hex(const uint8_t key[TRIB_CRED_KEY_LEN], char out[2 * TRIB_CRED_KEY_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < TRIB_CRED_KEY_LEN; i++) {
		out[2 * i] = hex[key[i] >> 4];
		out[2 * i + 1] = hex[key[i] & 15];
	}
	out[2 * TRIB_CRED_KEY_LEN] = '\0';
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int trib_cred_key_unhex(const char *hex, uint8_t key[TRIB_CRED_KEY_LEN])
{
	if (!hex || strlen(hex) != 2 * TRIB_CRED_KEY_LEN)
		return -EINVAL;
	for (size_t i = 0; i < TRIB_CRED_KEY_LEN; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

bool trib_cred_eq(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;

	for (size_t i = 0; i < n; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

/* The MAC of (job, client, expires) as base64url into @out (TRIB_CRED_MAC_LEN + 1). */
static int mac_b64(const uint8_t *key, const char *job, const char *client, const char *expires,
		   char out[TRIB_CRED_MAC_LEN + 1])
{
	static const char b64url[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t lj = strlen(job), lc = strlen(client), le = strlen(expires), ld = sizeof(DOMAIN);
	uint8_t msg[sizeof(DOMAIN) + 64 + TRIB_CRED_CLIENT_MAX + 1 + 12], md[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_state st;
	unsigned int mdlen = sizeof(md);
	uint32_t acc = 0;
	size_t o = 0, p = 0;
	int bits = 0;

	if (lj >= 64 || lc > TRIB_CRED_CLIENT_MAX || le > 11)
		return -EINVAL;
	/* Each part ends with a NUL (DOMAIN's is in sizeof): no two inputs give one message. */
	memcpy(msg, DOMAIN, ld);
	p = ld;
	memcpy(msg + p, job, lj + 1);
	p += lj + 1;
	memcpy(msg + p, client, lc + 1);
	p += lc + 1;
	memcpy(msg + p, expires, le);
	p += le;
	/*
	 * libsodium's HMAC-SHA256, not OpenSSL 3's HMAC(EVP_sha256(), ...): the same MAC, but
	 * OpenSSL's one-shot fetches the HMAC and SHA-256 implementations by name on every call
	 * (hash-table lookups under a lock: libcrypto's OPENSSL_LH_retrieve was 9% of the gateway's
	 * samples in a SecAgg+ round, whose every request carries a client token; docs/BENCHMARKS.md).
	 * libsodium is already linked for SecAgg+.
	 */
	if (sodium_init() < 0)
		return -EIO;
	crypto_auth_hmacsha256_init(&st, key, TRIB_CRED_KEY_LEN);
	crypto_auth_hmacsha256_update(&st, msg, p);
	crypto_auth_hmacsha256_final(&st, md);
	sodium_memzero(&st, sizeof(st));
	for (unsigned int i = 0; i < mdlen; i++) {
		acc = (acc << 8) | md[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = b64url[(acc >> bits) & 0x3f];
		}
	}
	if (bits > 0)
		out[o++] = b64url[(acc << (6 - bits)) & 0x3f];
	out[o] = '\0';
	return 0;
}

int trib_cred_mint(const uint8_t key[TRIB_CRED_KEY_LEN], const char *job, const char *client,
		   uint64_t expires, char *out, size_t cap)
{
	char exp[24], mac[TRIB_CRED_MAC_LEN + 1];
	int err, len;

	if (!key || !job || !*job || !trib_cred_client_valid(client) || !expires ||
	    expires > TRIB_CRED_EXPIRES_MAX)
		return -EINVAL;
	snprintf(exp, sizeof(exp), "%llu", (unsigned long long)expires);
	err = mac_b64(key, job, client, exp, mac);
	if (err)
		return err;
	len = snprintf(out, cap, PREFIX "%s.%s.%s", client, exp, mac);
	if (len < 0 || (size_t)len >= cap) {
		if (cap)
			out[0] = '\0';
		return -ERANGE;
	}
	return 0;
}

/* Split @token into its client and expiry parts and its MAC; -EBADMSG if it is not one. */
static int split(const char *token, char *client, char *exp, const char **mac, uint64_t *expires)
{
	const char *p = token + strlen(PREFIX), *dot;
	size_t n;

	if (!trib_cred_is_client_token(token) || strlen(token) >= TRIB_CRED_TOKEN_MAX)
		return -EBADMSG;
	dot = strchr(p, '.');
	n = dot ? (size_t)(dot - p) : 0;
	if (!n || n > TRIB_CRED_CLIENT_MAX)
		return -EBADMSG;
	memcpy(client, p, n);
	client[n] = '\0';
	if (!trib_cred_client_valid(client))
		return -EBADMSG;
	p = dot + 1;
	dot = strchr(p, '.');
	n = dot ? (size_t)(dot - p) : 0;
	if (!n || n > 11 || p[0] == '0')
		return -EBADMSG;
	*expires = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EBADMSG;
		*expires = *expires * 10 + (uint64_t)(p[i] - '0');
		exp[i] = p[i];
	}
	exp[n] = '\0';
	*mac = dot + 1;
	if (strlen(*mac) != TRIB_CRED_MAC_LEN)
		return -EBADMSG;
	return 0;
}

int trib_cred_verify(const uint8_t key[TRIB_CRED_KEY_LEN], const char *job, const char *token,
		     uint64_t now, char client[TRIB_CRED_CLIENT_MAX + 1], uint64_t *expires)
{
	char exp[12], want[TRIB_CRED_MAC_LEN + 1];
	const char *mac = NULL;
	uint64_t e = 0;
	int err;

	if (!key || !job || !token || !client)
		return -EBADMSG;
	err = split(token, client, exp, &mac, &e);
	if (!err)
		err = mac_b64(key, job, client, exp, want);
	if (err) {
		client[0] = '\0';
		return err == -EIO ? -EIO : -EBADMSG;
	}
	if (!trib_cred_eq(want, mac, TRIB_CRED_MAC_LEN)) {
		client[0] = '\0';
		return -EACCES;
	}
	if (now >= e) {
		client[0] = '\0';
		return -EKEYEXPIRED;
	}
	if (expires)
		*expires = e;
	return 0;
}
