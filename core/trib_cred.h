/* SPDX-License-Identifier: MIT */
/* Client credentials: self-contained tokens signed with a job's key (HMAC-SHA256), checked. */
#ifndef TRIB_CRED_H
#define TRIB_CRED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A client token names one client of one job until an expiry, and any node
 * that holds the job's key checks it without asking anyone:
 *
 *   token   = "tc1." client "." expires "." mac
 *   client  = 1..TRIB_CRED_CLIENT_MAX of [A-Za-z0-9_-]    (no '.', so the token splits once)
 *   expires = unix seconds, decimal, 1..11 digits, no leading zero
 *   mac     = base64url without padding (43 chars) of
 *             HMAC-SHA256(key, "tributary-client-v1" NUL job NUL client NUL expires)
 *   key     = the job's TRIB_CRED_KEY_LEN random bytes (getrandom), kept with the job
 *
 * The job is inside the MAC but not in the token: a token is presented on
 * /v1/jobs/{job}/..., and a token of another job (or under another key)
 * fails its MAC. Revocation is by client id, kept by the job's owner.
 */
#define TRIB_CRED_KEY_LEN 32
#define TRIB_CRED_CLIENT_MAX 32
#define TRIB_CRED_MAC_LEN 43	  /* base64url of 32 bytes */
#define TRIB_CRED_TOKEN_MAX 96	  /* 4 + 32 + 1 + 11 + 1 + 43 = 92, with its NUL 93 */
#define TRIB_CRED_EXPIRES_MAX 99999999999ull /* 11 digits */

/* Whether @id is 1..TRIB_CRED_CLIENT_MAX characters of [A-Za-z0-9_-]. */
bool trib_cred_client_valid(const char *id);
/* Whether @token starts like a client token ("tc1."): the caller's choice of path. */
bool trib_cred_is_client_token(const char *token);

/* A fresh job key from getrandom(2). 0 or -errno. */
int trib_cred_key_new(uint8_t key[TRIB_CRED_KEY_LEN]);
/* The key as 64 lowercase hex characters and a NUL (@out: 65 bytes), for the cluster's wire. */
void trib_cred_key_hex(const uint8_t key[TRIB_CRED_KEY_LEN], char out[2 * TRIB_CRED_KEY_LEN + 1]);
/* Its inverse: 0, or -EINVAL unless @hex is exactly 64 hex characters. */
int trib_cred_key_unhex(const char *hex, uint8_t key[TRIB_CRED_KEY_LEN]);

/*
 * Write the token of @client of @job until @expires (unix s, 1..TRIB_CRED_EXPIRES_MAX) into
 * @out (@cap bytes, TRIB_CRED_TOKEN_MAX is enough). 0, -EINVAL (a bad client id, job or
 * expiry), -ERANGE (@cap too small), -EIO (the HMAC failed).
 */
int trib_cred_mint(const uint8_t key[TRIB_CRED_KEY_LEN], const char *job, const char *client,
		   uint64_t expires, char *out, size_t cap);

/*
 * Check @token for @job under @key at unix time @now. On 0 the client id is in @client
 * (TRIB_CRED_CLIENT_MAX + 1 bytes) and *expires (may be NULL) holds the expiry. Errors:
 * -EBADMSG not a client token (malformed, truncated, overlong), -EACCES its MAC does not match
 * (tampered, another job, another key), -EKEYEXPIRED it has expired (@now >= expires; checked
 * only once the MAC matched, so an expiry cannot be probed without a key).
 */
int trib_cred_verify(const uint8_t key[TRIB_CRED_KEY_LEN], const char *job, const char *token,
		     uint64_t now, char client[TRIB_CRED_CLIENT_MAX + 1], uint64_t *expires);

/* @n bytes of @a and @b equal, in time that depends only on @n. */
bool trib_cred_eq(const void *a, const void *b, size_t n);

#endif
