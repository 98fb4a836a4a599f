// SPDX-License-Identifier: MIT
/* Bearer tokens: made from getrandom, loaded from 0600 files, compared in constant time. */
#include "trib_token.h"

#include <openssl/evp.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "trib_log.h"
#include "trib_store.h"

int trib_token_new(char *out, size_t cap)
{
	static const char b64url[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char raw[32];
	size_t got = 0, i, o = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (!out || cap <= TRIB_TOKEN_LEN)
		return -ERANGE;
	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	for (i = 0; i < sizeof(raw); i++) {
		acc = (acc << 8) | raw[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = b64url[(acc >> bits) & 0x3f];
		}
	}
	if (bits > 0)
		out[o++] = b64url[(acc << (6 - bits)) & 0x3f];
	out[o] = '\0';
	explicit_bzero(raw, sizeof(raw));
	return 0;
}

static int token_create(const char *path, char *out, size_t cap)
{
	char line[TRIB_TOKEN_LEN + 2];
	int err = trib_token_new(out, cap);

	if (err) {
		trib_error("making a token for %s: %s", path, strerror(-err));
		return err;
	}
	snprintf(line, sizeof(line), "%s\n", out);
	err = trib_write_file_atomic(path, line, strlen(line), 0600);
	explicit_bzero(line, sizeof(line));
	if (err)
		trib_error("writing %s: %s", path, strerror(-err));
	return err;
}

int trib_token_load(const char *path, bool create, char *out, size_t cap, bool *created)
{
	char line[TRIB_TOKEN_MAX + 2];
	size_t len;
	FILE *f;

	if (created)
		*created = false;
	if (!path || !out || cap <= TRIB_TOKEN_MAX)
		return -ERANGE;
	f = fopen(path, "re");
	if (!f) {
		int err = -errno;

		if (err == -ENOENT && create) {
			err = token_create(path, out, cap);
			if (!err && created)
				*created = true;
			return err;
		}
		trib_error("reading the token in %s: %s", path, strerror(-err));
		return err;
	}
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	len = strcspn(line, "\r\n \t");
	if (len < TRIB_TOKEN_MIN || len > TRIB_TOKEN_MAX) {
		trib_error("the token in %s must be %d to %d characters on its first line", path,
			   TRIB_TOKEN_MIN, TRIB_TOKEN_MAX);
		explicit_bzero(line, sizeof(line));
		return -EINVAL;
	}
	memcpy(out, line, len);
	out[len] = '\0';
	explicit_bzero(line, sizeof(line));
	return 0;
}

bool trib_token_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = (unsigned char)(la != lb);

	/* Walk the expected token's length whatever @a is, so time tells nothing of @a. */
	for (size_t i = 0; i < lb; i++)
		diff |= (unsigned char)((i < la ? a[i] : 0) ^ b[i]);
	return diff == 0 && lb > 0;
}

void trib_token_sha256(const char *a, char out[65])
{
	unsigned char md[32];
	unsigned int len = 0;

	EVP_Digest(a, strlen(a), md, &len, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

bool trib_token_sha256_eq(const char *a, const char *sha256_hex)
{
	char h[65];

	if (!sha256_hex[0])
		return false;
	trib_token_sha256(a, h);
	return trib_token_eq(h, sha256_hex);
}
