// SPDX-License-Identifier: MIT
/*
 * The stage bodies' fast reader (runtime/api/rt_api_secagg_fast.c) against the strict jansson
 * path it stands in front of (rt_api_secagg_check.c): every body the fast reader accepts, the
 * strict path accepts with the same indexes and bytes; the near misses (anything jansson would
 * read otherwise, or refuse) fall through to the strict path; and random mutations of an honest
 * body never make the fast reader accept what the strict path refuses or reads differently.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_priv.h"
#include "rt_secagg.h"

#define MAXE 8u
#define EACH 5u

/* The strict path, as sa_shares runs it: 0 with the values, or -1 (a 400). */
static int strict(const char *body, size_t len, uint32_t *ix, uint8_t *bytes, uint32_t *cnt)
{
	static const char *const known[] = { "shares", NULL }, *const ent[] = { "to", "ct", NULL };
	char msg[320], path[32];
	json_t *o, *arr, *e;
	int status;
	size_t i;

	if (rt__sa_parse(body, len, known, &o, &status, msg, sizeof(msg)))
		return -1;
	arr = json_object_get(o, "shares");
	*cnt = json_is_array(arr) ? (uint32_t)json_array_size(arr) : 0;
	if (!json_is_array(arr) || !*cnt || *cnt > MAXE) {
		json_decref(o);
		return -1;
	}
	json_array_foreach(arr, i, e) {
		if (rt__sa_entry(e, i, "shares", ent, path, sizeof(path), msg, sizeof(msg)) ||
		    rt__sa_index(e, "to", path, &ix[i], msg, sizeof(msg)) ||
		    rt__sa_hex(e, "ct", path, bytes + i * EACH, EACH, msg, sizeof(msg))) {
			json_decref(o);
			return -1;
		}
	}
	json_decref(o);
	return 0;
}

static int fast(const char *body, size_t len, uint32_t *ix, uint8_t *bytes, uint32_t *cnt)
{
	return rt__sa_fast_list(body, len, "shares", "to", "ct", EACH, MAXE, ix, bytes, cnt);
}

/* If the fast reader takes @body, the strict path takes it with the same values. */
static void agree(const char *body, size_t len, const char *what)
{
	uint32_t ix[MAXE], ix2[MAXE], n = 0, n2 = 0;
	uint8_t b[MAXE * EACH], b2[MAXE * EACH];

	if (fast(body, len, ix, b, &n))
		return;
	cr_assert_eq(strict(body, len, ix2, b2, &n2), 0, "%s: the fast reader took a body the "
		     "strict path refuses: %.*s", what, (int)len, body);
	cr_assert_eq(n, n2, "%s", what);
	cr_assert_eq(memcmp(ix, ix2, n * sizeof(*ix)), 0, "%s: other indexes", what);
	cr_assert_eq(memcmp(b, b2, n * EACH), 0, "%s: other bytes", what);
}

Test(runtime_secagg_fast, honest_bodies_read_as_the_strict_path_reads_them)
{
	static const char *const ok[] = {
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233ff\"}]}",
		" {\n\t\"shares\" : [ {\"ct\": \"0a1b2c3d4e\", \"to\": 0} ,{\"to\":99999,"
		"\"ct\":\"ffffffffff\"}]\r\n}\n",
		"{\"shares\":[{\"to\":10,\"ct\":\"0000000000\"},{\"to\":11,\"ct\":\"0101010101\"},"
		"{\"to\":12,\"ct\":\"abcdefabcd\"}]}",
	};
	uint32_t ix[MAXE], n;
	uint8_t b[MAXE * EACH];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(fast(ok[i], strlen(ok[i]), ix, b, &n), 0, "body %zu: %s", i, ok[i]);
		agree(ok[i], strlen(ok[i]), ok[i]);
	}
	cr_assert_eq(fast(ok[1], strlen(ok[1]), ix, b, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(ix[0], 0);
	cr_assert_eq(ix[1], 99999);
	cr_assert_eq(b[0], 0x0a);
	cr_assert_eq(b[4], 0x4e);
	cr_assert_eq(b[5], 0xff);
}

Test(runtime_secagg_fast, near_misses_go_to_the_strict_path)
{
	static const char *const miss[] = {
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233FF\"}]}",		/* uppercase */
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233f\"}]}",		/* short */
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233fff\"}]}",		/* long */
		"{\"shares\":[{\"to\":03,\"ct\":\"00112233ff\"}]}",		/* leading zero */
		"{\"shares\":[{\"to\":3.0,\"ct\":\"00112233ff\"}]}",		/* a real */
		"{\"shares\":[{\"to\":3e0,\"ct\":\"00112233ff\"}]}",
		"{\"shares\":[{\"to\":-3,\"ct\":\"00112233ff\"}]}",
		"{\"shares\":[{\"to\":100000,\"ct\":\"00112233ff\"}]}",	/* >= max clients */
		"{\"shares\":[{\"to\":\"3\",\"ct\":\"00112233ff\"}]}",
		"{\"shares\":[{\"to\":3,\"to\":4,\"ct\":\"00112233ff\"}]}",	/* twice */
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233ff\",\"x\":1}]}",	/* unknown */
		"{\"shares\":[{\"to\":3}]}",					/* missing */
		"{\"shares\":[{\"t\\u006f\":3,\"ct\":\"00112233ff\"}]}",	/* escaped key */
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233ff\"},]}",		/* trailing comma */
		"{\"shares\":[]}",
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233ff\"}]} x",		/* trailing bytes */
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233ff\"}],\"shares\":[]}",
		"{\"shares\":[{\"to\":3,\"ct\":\"00112233ff\"}]",		/* cut */
		"{\"shares\":{\"to\":3,\"ct\":\"00112233ff\"}}",
		"[{\"to\":3,\"ct\":\"00112233ff\"}]",
		"{\"shares\":[{\"to\":1,\"ct\":\"0000000000\"},{\"to\":2,\"ct\":\"0000000000\"},"
		"{\"to\":3,\"ct\":\"0000000000\"},{\"to\":4,\"ct\":\"0000000000\"},{\"to\":5,"
		"\"ct\":\"0000000000\"},{\"to\":6,\"ct\":\"0000000000\"},{\"to\":7,\"ct\":"
		"\"0000000000\"},{\"to\":8,\"ct\":\"0000000000\"},{\"to\":9,\"ct\":\"0000000000\"}]}",
	};
	uint32_t ix[MAXE], n;
	uint8_t b[MAXE * EACH];

	for (size_t i = 0; i < sizeof(miss) / sizeof(miss[0]); i++)
		cr_assert_eq(fast(miss[i], strlen(miss[i]), ix, b, &n), -1, "body %zu taken: %s", i,
			     miss[i]);
	/* A NUL where whitespace could be. */
	{
		char nul[] = "{\"shares\":[{\"to\":3,\"ct\":\"00112233ff\"}]} ";

		nul[sizeof(nul) - 2] = '\0';
		cr_assert_eq(fast(nul, sizeof(nul) - 1, ix, b, &n), -1);
	}
}

/*
 * Random edits of honest bodies (a byte replaced by one of JSON's structural characters, a
 * digit, a hex letter or a random byte; a byte removed or doubled): whatever the fast reader
 * still accepts, the strict path reads the same.
 */
Test(runtime_secagg_fast, mutations_never_read_otherwise)
{
	static const char pool[] = "{}[]:,\" \t\n0123456789abcdefABCDEF.eE-+\\u";
	const char *seed = "{ \"shares\": [{\"to\": 12, \"ct\": \"0a1b2c3d4e\"}, {\"ct\": "
			   "\"ffeeddccbb\", \"to\": 7}] }";
	size_t sl = strlen(seed);
	char buf[256];
	unsigned taken = 0;

	srand(19);
	for (int t = 0; t < 200000; t++) {
		size_t len = sl, at;
		int edits = 1 + rand() % 3;

		memcpy(buf, seed, sl);
		for (int k = 0; k < edits && len > 1; k++) {
			at = (size_t)rand() % len;
			switch (rand() % 4) {
			case 0:
				buf[at] = pool[(size_t)rand() % (sizeof(pool) - 1)];
				break;
			case 1:
				buf[at] = (char)(rand() & 0xff);
				break;
			case 2:
				memmove(buf + at, buf + at + 1, len - at - 1);
				len--;
				break;
			default:
				if (len + 1 < sizeof(buf)) {
					memmove(buf + at + 1, buf + at, len - at);
					len++;
				}
			}
		}
		agree(buf, len, "a mutation");
		{
			uint32_t ix[MAXE], n;
			uint8_t b[MAXE * EACH];

			taken += !fast(buf, len, ix, b, &n);
		}
	}
	/* Whitespace and hex-digit edits keep many bodies honest: the check ran on some. */
	cr_assert_gt(taken, 1000, "only %u mutated bodies were taken", taken);
}
