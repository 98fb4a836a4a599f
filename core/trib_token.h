/* SPDX-License-Identifier: MIT */
/* Bearer tokens: how they are made, loaded, compared. One rule for the node, the controller and
 * every job. */
#ifndef TRIB_TOKEN_H
#define TRIB_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#define TRIB_TOKEN_LEN 43 /* a made token: 32 random bytes, URL-safe base64, no padding */
#define TRIB_TOKEN_MIN 16 /* a token read from a file is refused below this */
#define TRIB_TOKEN_MAX 79 /* and above this (bytes, without the NUL) */

/*
 * Write a fresh token (TRIB_TOKEN_LEN chars from 32 bytes of getrandom(2),
 * NUL-terminated) into @out. Returns 0, -ERANGE if @cap <= TRIB_TOKEN_LEN, or
 * the getrandom errno.
 */
int trib_token_new(char *out, size_t cap);

/*
 * Load the token in @path (borrowed): its first line, cut at the first
 * whitespace, must be TRIB_TOKEN_MIN..TRIB_TOKEN_MAX characters. When the file
 * does not exist and @create is true, a new token is written there
 * atomically with mode 0600 (the directory must exist) and *created (if not
 * NULL) is set. Every failure is logged once with the path and a reason.
 * Returns 0, -EINVAL (too short or too long), -ERANGE (@cap too small for
 * TRIB_TOKEN_MAX), -ENOENT (absent and !@create) or another -errno.
 */
int trib_token_load(const char *path, bool create, char *out, size_t cap, bool *created);

/*
 * Compare a presented token @a with the expected @b (both NUL-terminated) in
 * time that does not depend on how much of them matched. An empty @b never
 * matches.
 */
bool trib_token_eq(const char *a, const char *b);

/*
 * Whether the SHA-256 of @a, in lowercase hex, is @sha256_hex (compared as
 * trib_token_eq does). A cluster node checks admin bearers this way: it is
 * given the admin token's hash, never the token.
 */
bool trib_token_sha256_eq(const char *a, const char *sha256_hex);
/* The SHA-256 of @a in lowercase hex. */
void trib_token_sha256(const char *a, char out[65]);

#endif
