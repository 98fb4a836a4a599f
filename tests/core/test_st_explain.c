// SPDX-License-Identifier: MIT
/* Tests of core/trib_st_explain: mismatch messages that name the tensor, the shapes, the fix. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_safetensors.h"

/* One upload tensor: its JSON-escaped name, dtype, shape (JSON array text) and byte size. */
struct ent {
	const char *name, *dtype, *shape;
	size_t bytes;
};

/* Parses a file of @n entries (contiguous data, zeros) into @st; returns the file (trib_free). */
static unsigned char *build(const struct ent *e, size_t n, struct trib_st *st)
{
	size_t cap = 256 + n * 600, len = 0, off = 0, total;
	char *json = trib_malloc(cap);
	unsigned char *b;
	const char *why = NULL;

	cr_assert_not_null(json);
	len += (size_t)snprintf(json + len, cap - len, "{");
	for (size_t i = 0; i < n; i++) {
		len += (size_t)snprintf(json + len, cap - len,
					"%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,"
					"\"data_offsets\":[%zu,%zu]}",
					i ? "," : "", e[i].name, e[i].dtype, e[i].shape, off,
					off + e[i].bytes);
		off += e[i].bytes;
	}
	len += (size_t)snprintf(json + len, cap - len, "}");
	cr_assert_lt(len, cap);
	total = 8 + len + off;
	b = trib_calloc(1, total);
	cr_assert_not_null(b);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)len >> (8 * i));
	memcpy(b + 8, json, len);
	trib_free(json);
	memset(st, 0, sizeof(*st));
	st->ntensors = 0;
	if (trib_st_parse(b, total, st, &why))
		st->data_off = (uint64_t)-1; /* failed: the tests say whether they expect it */
	return b;
}

static struct trib_tensor tensor(const char *name, uint32_t ndim, const uint64_t *shape)
{
	struct trib_tensor t;

	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "%s", name);
	t.dtype = TRIB_DTYPE_F32;
	t.ndim = ndim;
	t.n_elem = 1;
	for (uint32_t i = 0; i < ndim; i++) {
		t.shape[i] = shape[i];
		t.n_elem *= shape[i];
	}
	return t;
}

/* Matches @e against @schema (F32 only, or compressed) and returns the explanation in @msg. */
static void explain(const struct ent *e, size_t n, const struct trib_tensor *schema,
		    size_t nschema, bool compressed, char *msg, size_t cap)
{
	struct trib_st st;
	unsigned char *b = build(e, n, &st);
	uint64_t offs[8];
	uint32_t dts[8];
	float scales[8];
	const char *why = NULL;
	int err;

	cr_assert_neq(st.data_off, (uint64_t)-1, "the upload does not parse");
	cr_assert_leq(nschema, 8);
	err = compressed ? trib_st_match_q(&st, schema, nschema, b, offs, dts, scales, &why) :
			   trib_st_match(&st, schema, nschema, offs, &why);
	cr_assert_eq(err, -EINVAL, "matched");
	trib_st_explain(&st, schema, nschema, compressed, why, msg, cap);
	trib_st_free(&st);
	trib_free(b);
}

/* A state_dict saved from DataParallel: every key starts with "module.". */
Test(core_st_explain, module_prefix_is_named_with_the_fix)
{
	struct trib_tensor s[2] = { tensor("fc.weight", 2, (uint64_t[]){ 2, 3 }),
				    tensor("fc.bias", 1, (uint64_t[]){ 3 }) };
	struct ent e[2] = { { "module.fc.weight", "F32", "[2,3]", 24 },
			    { "module.fc.bias", "F32", "[3]", 12 } };
	char msg[TRIB_ST_EXPLAIN_MAX];

	explain(e, 2, s, 2, true, msg, sizeof(msg));
	cr_assert_str_eq(msg, "missing 2 tensors: 'fc.weight', 'fc.bias'; unexpected 2 tensors: "
			      "'module.fc.weight', 'module.fc.bias'; did you mean 'fc.weight' for "
			      "'module.fc.weight'? Strip the prefix 'module.' from the update's "
			      "names (save model.module.state_dict()).");
}

Test(core_st_explain, other_prefixes_and_typos_are_suggested)
{
	struct trib_tensor s1 = tensor("model.w", 1, (uint64_t[]){ 4 });
	struct trib_tensor s2 = tensor("fc.weight", 1, (uint64_t[]){ 4 });
	char msg[TRIB_ST_EXPLAIN_MAX];

	explain((struct ent[]){ { "w", "F32", "[4]", 16 } }, 1, &s1, 1, false, msg, sizeof(msg));
	cr_assert_str_eq(msg, "missing tensor 'model.w'; unexpected tensor 'w'; did you mean "
			      "'model.w' for 'w'? Add the prefix 'model.' to the update's names.");
	/* torch.compile's wrapper, over DataParallel's. */
	explain((struct ent[]){ { "_orig_mod.module.fc.weight", "F32", "[4]", 16 } }, 1, &s2, 1,
		false, msg, sizeof(msg));
	cr_assert_not_null(strstr(msg, "Strip the prefix '_orig_mod.module.' from the update's "
					"names."), "%s", msg);
	/* Two edits away (a transposition). */
	explain((struct ent[]){ { "fc.wieght", "F32", "[4]", 16 } }, 1, &s2, 1, false, msg,
		sizeof(msg));
	cr_assert_str_eq(msg, "missing tensor 'fc.weight'; unexpected tensor 'fc.wieght'; did "
			      "you mean 'fc.weight' for 'fc.wieght'? (a typo?)");
	/* Within 2 edits (deleted, inserted, substituted), and not at 3. */
	{
		static const struct {
			const char *name;
			bool near;
		} typos[] = {
			{ "fc.weigh", true },	 { "fc.weightt", true }, { "fx.wexght", true },
			{ "c.weigh", true },	 { "fx.wexghz", false }, { "fc.w", false },
			{ "fc.weight12", true }, { "fc.weight123", false },
		};

		for (size_t i = 0; i < sizeof(typos) / sizeof(typos[0]); i++) {
			explain((struct ent[]){ { typos[i].name, "F32", "[4]", 16 } }, 1, &s2, 1,
				false, msg, sizeof(msg));
			cr_assert_eq(strstr(msg, "(a typo?)") != NULL, typos[i].near, "%s: %s",
				     typos[i].name, msg);
		}
	}
	/* Long names: edits far apart, each inside the band. */
	{
		char want[201], two[201], three[201];
		struct trib_tensor sl;

		memset(want, 'a', 200);
		want[200] = '\0';
		for (int i = 0; i < 200; i++)
			want[i] = (char)('a' + i % 26);
		sl = tensor(want, 1, (uint64_t[]){ 4 });
		/* One deleted at 10, one substituted at 190. */
		snprintf(two, sizeof(two), "%.10s%s", want, want + 11);
		two[189] = '#';
		memcpy(three, two, sizeof(two));
		three[100] = '#';
		explain((struct ent[]){ { two, "F32", "[4]", 16 } }, 1, &sl, 1, false, msg,
			sizeof(msg));
		cr_assert_not_null(strstr(msg, "(a typo?)"), "%s", msg);
		explain((struct ent[]){ { three, "F32", "[4]", 16 } }, 1, &sl, 1, false, msg,
			sizeof(msg));
		cr_assert_null(strstr(msg, "did you mean"), "%s", msg);
	}
	/* Nothing close: no suggestion. */
	explain((struct ent[]){ { "encoder.layer0", "F32", "[4]", 16 } }, 1, &s2, 1, false, msg,
		sizeof(msg));
	cr_assert_str_eq(msg, "missing tensor 'fc.weight'; unexpected tensor 'encoder.layer0'");
	/* Only missing. */
	explain(NULL, 0, &s2, 1, false, msg, sizeof(msg));
	cr_assert_str_eq(msg, "missing tensor 'fc.weight'");
}

Test(core_st_explain, shape_and_dtype_name_the_tensor_and_both_values)
{
	struct trib_tensor s[2] = { tensor("w", 2, (uint64_t[]){ 2, 3 }),
				    tensor("b", 1, (uint64_t[]){ 4 }) };
	char msg[TRIB_ST_EXPLAIN_MAX];

	explain((struct ent[]){ { "w", "F32", "[3,2]", 24 }, { "b", "F32", "[4]", 16 } }, 2, s, 2,
		true, msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'w': shape [2, 3] expected, got [3, 2]");
	explain((struct ent[]){ { "w", "F32", "[2,3]", 24 }, { "b", "F32", "[]", 4 } }, 2, s, 2,
		true, msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'b': shape [4] expected, got []");
	/* A starting model (trib_st_match) is F32 only. */
	explain((struct ent[]){ { "w", "F32", "[2,3]", 24 }, { "b", "F16", "[4]", 8 } }, 2, s, 2,
		false, msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'b': dtype F16, expected F32");
	/* I32 (FRL's rankings) is no float job's: named even where compressed dtypes are taken. */
	explain((struct ent[]){ { "w", "F32", "[2,3]", 24 }, { "b", "I32", "[4]", 16 } }, 2, s, 2,
		true, msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'b': dtype I32, expected F32, F16, BF16 or I8");
	/* An I8 tensor needs its scale; with it, "<name>.scale" is not unexpected. */
	explain((struct ent[]){ { "w", "I8", "[2,3]", 6 }, { "b", "F32", "[4]", 16 } }, 2, s, 2,
		true, msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'w': I8 without a one-value F32 tensor '<name>.scale' "
			      "beside it");
	explain((struct ent[]){ { "w", "I8", "[2,3]", 6 },
				{ "w.scale", "F32", "[]", 4 },
				{ "b", "F32", "[5]", 20 } },
		3, s, 2, true, msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'b': shape [4] expected, got [5]");
}

Test(core_st_explain, failed_parse_names_the_entry_and_its_dtype)
{
	struct trib_st st;
	char msg[TRIB_ST_EXPLAIN_MAX];
	unsigned char *b = build((struct ent[]){ { "w", "F32", "[2]", 8 },
						 { "layer.x", "F64", "[2]", 16 } },
				 2, &st);

	cr_assert_eq(st.data_off, (uint64_t)-1, "F64 parsed");
	trib_st_explain(&st, NULL, 0, true, TRIB_ST_WHY_DTYPE, msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'layer.x': dtype 'F64' is not taken (F32, F16, BF16 or I8)");
	/* A starting model (PUT) takes F32 only. */
	trib_st_explain(&st, NULL, 0, false, TRIB_ST_WHY_DTYPE, msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'layer.x': dtype 'F64' is not taken (F32)");
	trib_free(b);
	b = build((struct ent[]){ { "bad", "F32", "[-1]", 8 } }, 1, &st);
	trib_st_explain(&st, NULL, 0, true, "bad shape", msg, sizeof(msg));
	cr_assert_str_eq(msg, "tensor 'bad': bad shape");
	trib_free(b);
}

Test(core_st_explain, shown_names_are_cut_at_utf8_boundaries_without_control_bytes)
{
	char buf[TRIB_ST_SHOW_MAX], name[128];
	size_t n;

	n = trib_st_show("a\x01\"b\n", 5, buf, sizeof(buf));
	cr_assert_str_eq(buf, "a?\"b?");
	cr_assert_eq(n, 5);
	/* 'a' + 25 two-byte characters: 19 of them fit in 40 bytes, then "...". */
	strcpy(name, "a");
	for (int i = 0; i < 25; i++)
		strcat(name, "\xc3\xa9");
	n = trib_st_show(name, strlen(name), buf, sizeof(buf));
	cr_assert_eq(n, 39 + 3, "%zu", n);
	cr_assert_str_eq(buf + 39, "...");
	/* A byte that is not UTF-8 shows as '?'. */
	trib_st_show("x\xff", 2, buf, sizeof(buf));
	cr_assert_str_eq(buf, "x?");
}

/* Many long, hostile names: the message stays bounded and still ends with the fix. */
Test(core_st_explain, message_is_bounded_and_keeps_the_suggestion)
{
	enum { N = 8 };
	struct trib_tensor s[N];
	struct ent e[N];
	char names[N][300], sch[N][300], msg[TRIB_ST_EXPLAIN_MAX];
	size_t len;

	for (int i = 0; i < N; i++) {
		char body[260];

		memset(body, 'q', 200);
		snprintf(body + 200, sizeof(body) - 200, "\\\"\\u0001%d", i);
		snprintf(names[i], sizeof(names[i]), "module.%s", body);
		e[i] = (struct ent){ names[i], "F32", "[1]", 4 };
		memset(sch[i], 'q', 200);
		snprintf(sch[i] + 200, sizeof(sch[i]) - 200, "\"\x01%d", i);
		s[i] = tensor(sch[i], 1, (uint64_t[]){ 1 });
	}
	explain(e, N, s, N, true, msg, sizeof(msg));
	len = strlen(msg);
	cr_assert_lt(len, TRIB_ST_EXPLAIN_MAX);
	for (size_t i = 0; i < len; i++)
		cr_assert_geq((unsigned char)msg[i], 0x20, "control byte at %zu: %s", i, msg);
	cr_assert_not_null(strstr(msg, "missing 8 tensors: 'qqq"), "%s", msg);
	cr_assert_not_null(strstr(msg, "...'"), "%s", msg);
	cr_assert_not_null(strstr(msg, "Strip the prefix 'module.'"), "%s", msg);
	/* A small buffer is honoured too. */
	explain(e, N, s, N, true, msg, 20);
	cr_assert_eq(strlen(msg), 19);
}

/* A message cut inside a multi-byte name (snprintf, "%.40s") is mended to valid UTF-8 in place:
 * frl's refusals went through json_pack, which refused it, and a client's mistake was a 500. */
Test(core_st_explain, mend_replaces_cut_and_invalid_utf8_bytes_only)
{
	char name[64], msg[128];

	/* "x" then 'é' (2 bytes) x 30: "%.40s" ends inside the 20th 'é'. */
	memset(name, 0, sizeof(name));
	name[0] = 'x';
	for (int i = 0; i < 30; i++)
		memcpy(name + 1 + 2 * i, "\xc3\xa9", 2);
	snprintf(msg, sizeof(msg), "tensor '%.40s' is missing", name);
	cr_assert_eq((unsigned char)msg[8 + 39], 0xc3); /* the cut lead byte: 'x', 19 x 'é', it */
	trib_st_mend(msg);
	cr_assert_eq(msg[8 + 39], '?');
	cr_assert_eq(memcmp(msg + 9, "\xc3\xa9", 2), 0, "whole characters stay");
	cr_assert_str_eq(msg + 8 + 40, "' is missing");
	/* Stray continuation bytes, overlongs and 5-byte leads go; ASCII and 4-byte sequences stay. */
	snprintf(msg, sizeof(msg), "a\x80" "b\xc0\xaf" "c\xf8\x88" "d\xf0\x9f\x98\x80");
	trib_st_mend(msg);
	cr_assert_str_eq(msg, "a?b??c??d\xf0\x9f\x98\x80");
}
