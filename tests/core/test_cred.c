// SPDX-License-Identifier: MIT
/* Tests for core/trib_cred: minting and checking client tokens (tampering, expiry, job, key). */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "trib_cred.h"

static uint8_t key[TRIB_CRED_KEY_LEN];

static void setup(void)
{
	for (int i = 0; i < TRIB_CRED_KEY_LEN; i++)
		key[i] = (uint8_t)i;
}

TestSuite(core_cred, .init = setup);

Test(core_cred, mint_matches_an_independent_hmac)
{
	char tok[TRIB_CRED_TOKEN_MAX], client[TRIB_CRED_CLIENT_MAX + 1];
	uint64_t exp = 0;

	cr_assert_eq(trib_cred_mint(key, "demo", "alice", 2000000000ull, tok, sizeof(tok)), 0);
	/* Python: hmac.new(bytes(range(32)), b'tributary-client-v1\0demo\0alice\0002000000000',
	 * sha256), base64url without padding. */
	cr_assert_str_eq(tok, "tc1.alice.2000000000.Z-zYkxa2JW3d4-ReWLhSx2AVESKlkLCTp0R0Xuo3QT8");
	cr_assert_eq(trib_cred_verify(key, "demo", tok, 1999999999ull, client, &exp), 0);
	cr_assert_str_eq(client, "alice");
	cr_assert_eq(exp, 2000000000ull);
}

Test(core_cred, expiry_is_checked)
{
	char tok[TRIB_CRED_TOKEN_MAX], client[TRIB_CRED_CLIENT_MAX + 1];

	cr_assert_eq(trib_cred_mint(key, "demo", "c1", 1000, tok, sizeof(tok)), 0);
	cr_assert_eq(trib_cred_verify(key, "demo", tok, 999, client, NULL), 0);
	cr_assert_eq(trib_cred_verify(key, "demo", tok, 1000, client, NULL), -EKEYEXPIRED);
	cr_assert_eq(client[0], '\0');
	/* Moving the expiry forward breaks the MAC. */
	tok[7] = '2'; /* "tc1.c1.1000" -> "tc1.c1.2000" */
	cr_assert_eq(trib_cred_verify(key, "demo", tok, 1500, client, NULL), -EACCES);
}

Test(core_cred, every_tampered_character_fails)
{
	char tok[TRIB_CRED_TOKEN_MAX], bad[TRIB_CRED_TOKEN_MAX];
	char client[TRIB_CRED_CLIENT_MAX + 1];
	size_t len;

	cr_assert_eq(trib_cred_mint(key, "demo", "client-7", 5000, tok, sizeof(tok)), 0);
	len = strlen(tok);
	for (size_t i = 0; i < len; i++) {
		int err;

		memcpy(bad, tok, len + 1);
		bad[i] = bad[i] == 'A' ? 'B' : 'A';
		err = trib_cred_verify(key, "demo", bad, 10, client, NULL);
		cr_assert(err == -EACCES || err == -EBADMSG, "byte %zu changed: %d", i, err);
	}
}

Test(core_cred, another_job_or_key_fails)
{
	char tok[TRIB_CRED_TOKEN_MAX], client[TRIB_CRED_CLIENT_MAX + 1];
	uint8_t other[TRIB_CRED_KEY_LEN];

	cr_assert_eq(trib_cred_mint(key, "demo", "alice", 5000, tok, sizeof(tok)), 0);
	cr_assert_eq(trib_cred_verify(key, "demo2", tok, 10, client, NULL), -EACCES);
	cr_assert_eq(trib_cred_verify(key, "Demo", tok, 10, client, NULL), -EACCES);
	memcpy(other, key, sizeof(other));
	other[31] ^= 1;
	cr_assert_eq(trib_cred_verify(other, "demo", tok, 10, client, NULL), -EACCES);
	cr_assert_eq(trib_cred_key_new(other), 0);
	cr_assert_eq(trib_cred_verify(other, "demo", tok, 10, client, NULL), -EACCES);
}

Test(core_cred, truncated_and_malformed_tokens_are_not_tokens)
{
	char tok[TRIB_CRED_TOKEN_MAX], cut[TRIB_CRED_TOKEN_MAX + 8];
	char client[TRIB_CRED_CLIENT_MAX + 1];
	static const char *const bad[] = {
		"", "tc1.", "tc1..1000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"tc1.a.0100.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"tc1.a.1e3.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"tc1.a b.1000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"tc1.a.123456789012.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"tc2.a.1000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"a-job-token-of-43-characters-xxxxxxxxxxxxxx",
	};

	cr_assert_eq(trib_cred_mint(key, "demo", "alice", 5000, tok, sizeof(tok)), 0);
	for (size_t n = 0; n < strlen(tok); n++) {
		memcpy(cut, tok, n);
		cut[n] = '\0';
		cr_assert_eq(trib_cred_verify(key, "demo", cut, 10, client, NULL), -EBADMSG,
			     "cut at %zu", n);
	}
	snprintf(cut, sizeof(cut), "%sA", tok);
	cr_assert_eq(trib_cred_verify(key, "demo", cut, 10, client, NULL), -EBADMSG);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(trib_cred_verify(key, "demo", bad[i], 10, client, NULL), -EBADMSG,
			     "%s", bad[i]);
}

Test(core_cred, mint_refuses_bad_input)
{
	char tok[TRIB_CRED_TOKEN_MAX], longid[TRIB_CRED_CLIENT_MAX + 2];

	memset(longid, 'a', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	cr_assert_eq(trib_cred_mint(key, "demo", longid, 5000, tok, sizeof(tok)), -EINVAL);
	longid[TRIB_CRED_CLIENT_MAX] = '\0';
	cr_assert_eq(trib_cred_mint(key, "demo", longid, TRIB_CRED_EXPIRES_MAX, tok, sizeof(tok)),
		     0);
	cr_assert_lt(strlen(tok), TRIB_CRED_TOKEN_MAX);
	cr_assert_eq(trib_cred_mint(key, "demo", "a.b", 5000, tok, sizeof(tok)), -EINVAL);
	cr_assert_eq(trib_cred_mint(key, "demo", "", 5000, tok, sizeof(tok)), -EINVAL);
	cr_assert_eq(trib_cred_mint(key, "demo", "a", 0, tok, sizeof(tok)), -EINVAL);
	cr_assert_eq(trib_cred_mint(key, "demo", "a", TRIB_CRED_EXPIRES_MAX + 1, tok,
				    sizeof(tok)), -EINVAL);
	cr_assert_eq(trib_cred_mint(key, "", "a", 5000, tok, sizeof(tok)), -EINVAL);
	cr_assert_eq(trib_cred_mint(key, "demo", "a", 5000, tok, 20), -ERANGE);
}

Test(core_cred, compare_finds_a_difference_anywhere)
{
	uint8_t a[64], b[64];

	memset(a, 0x5a, sizeof(a));
	memcpy(b, a, sizeof(b));
	cr_assert(trib_cred_eq(a, b, sizeof(a)));
	cr_assert(trib_cred_eq(a, b, 0));
	/* One bit anywhere, first or last: the loop never stops early (no branch on the data). */
	for (size_t i = 0; i < sizeof(a); i++) {
		b[i] ^= 0x80;
		cr_assert(!trib_cred_eq(a, b, sizeof(a)), "byte %zu", i);
		b[i] ^= 0x80;
	}
}

Test(core_cred, key_hex_round_trips)
{
	uint8_t k2[TRIB_CRED_KEY_LEN];
	char hex[2 * TRIB_CRED_KEY_LEN + 1];

	trib_cred_key_hex(key, hex);
	cr_assert_eq(strlen(hex), 64);
	cr_assert_eq(trib_cred_key_unhex(hex, k2), 0);
	cr_assert_eq(memcmp(key, k2, sizeof(k2)), 0);
	hex[5] = 'g';
	cr_assert_eq(trib_cred_key_unhex(hex, k2), -EINVAL);
	cr_assert_eq(trib_cred_key_unhex("abcd", k2), -EINVAL);
}
