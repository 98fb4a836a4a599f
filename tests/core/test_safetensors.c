// SPDX-License-Identifier: MIT
/* Tests of core/trib_safetensors: parse untrusted headers, match a schema, write headers. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "trib_safetensors.h"
#include "trib_dtype.h"
#include "trib_alloc.h"

/*
 * Build a file: 8-byte little-endian length, @json (not NUL-terminated in the
 * result), then @data_len bytes of 0xAB. The buffer is exactly *len bytes so
 * that ASan catches any read past it. Owned by the caller (trib_free).
 */
static unsigned char *mkfile(const char *json, size_t data_len, size_t *len)
{
	size_t n = strlen(json);
	unsigned char *b = trib_malloc(8 + n + data_len);

	cr_assert_not_null(b);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(b + 8, json, n);
	memset(b + 8 + n, 0xab, data_len);
	*len = 8 + n + data_len;
	return b;
}

/* Parse @json + @data_len bytes and expect -EINVAL with @want_why. */
static void expect_reject(const char *json, size_t data_len, const char *want_why)
{
	struct trib_st st;
	const char *why = NULL;
	size_t len;
	unsigned char *b = mkfile(json, data_len, &len);

	cr_assert_eq(trib_st_parse(b, len, &st, &why), -EINVAL, "accepted %s", json);
	cr_assert_not_null(why);
	cr_assert_str_eq(why, want_why, "%s: got \"%s\"", json, why);
	cr_assert_null(st.tensors);
	cr_assert_eq(st.ntensors, 0);
	trib_free(b);
}

static struct trib_tensor schema_tensor(const char *name, uint32_t ndim, const uint64_t *shape)
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

/* A three-tensor schema: w [2,3], b [4], s [] (a scalar). */
static void three(struct trib_tensor s[3])
{
	s[0] = schema_tensor("w", 2, (uint64_t[]){ 2, 3 });
	s[1] = schema_tensor("b", 1, (uint64_t[]){ 4 });
	s[2] = schema_tensor("s", 0, NULL);
}

/* Header from trib_st_write_header + @data_len data bytes, parsed. */
static unsigned char *write_and_parse(const struct trib_tensor *schema, size_t n, const char *meta,
				      size_t data_len, struct trib_st *st, size_t *hdr_len)
{
	const char *why = NULL;
	unsigned char *file;
	char *hdr;

	cr_assert_eq(trib_st_write_header(schema, n, meta, &hdr, hdr_len), 0);
	file = trib_malloc(*hdr_len + data_len);
	cr_assert_not_null(file);
	memcpy(file, hdr, *hdr_len);
	memset(file + *hdr_len, 0, data_len);
	trib_free(hdr);
	cr_assert_eq(trib_st_parse(file, *hdr_len + data_len, st, &why), 0, "why: %s", why);
	return file;
}

Test(core_safetensors, dtype_helpers)
{
	cr_assert_eq(trib_dtype_size(TRIB_DTYPE_F32), 4);
	cr_assert_eq(trib_dtype_size(TRIB_DTYPE_F16), 2);
	cr_assert_eq(trib_dtype_size(TRIB_DTYPE_BF16), 2);
	cr_assert_eq(trib_dtype_size(TRIB_DTYPE_I8), 1);
	cr_assert_eq(trib_dtype_size(0), 0);
	cr_assert_eq(trib_dtype_size(99), 0);
	cr_assert_str_eq(trib_dtype_name(TRIB_DTYPE_BF16), "BF16");
	cr_assert_null(trib_dtype_name(0));
	cr_assert_eq(trib_dtype_from_name("F32"), TRIB_DTYPE_F32);
	cr_assert_eq(trib_dtype_from_name("I8"), TRIB_DTYPE_I8);
	cr_assert_eq(trib_dtype_from_name("f32"), 0);
	cr_assert_eq(trib_dtype_from_name("F64"), 0);
}

Test(core_safetensors, write_then_parse_round_trips)
{
	struct trib_tensor s[3];
	struct trib_st st;
	size_t hdr_len;
	unsigned char *file;

	three(s);
	file = write_and_parse(s, 3, "{\"round\":\"7\"}", (6 + 4 + 1) * 4, &st, &hdr_len);
	cr_assert_eq(hdr_len % 8, 0);
	cr_assert_eq(st.data_off, hdr_len);
	cr_assert_eq(st.ntensors, 3);
	for (size_t i = 0; i < 3; i++) {
		cr_assert_str_eq(st.tensors[i].name, s[i].name);
		cr_assert_eq(st.tensors[i].dtype, TRIB_DTYPE_F32);
		cr_assert_eq(st.tensors[i].ndim, s[i].ndim);
		cr_assert_eq(st.tensors[i].n_elem, s[i].n_elem);
		for (uint32_t d = 0; d < s[i].ndim; d++)
			cr_assert_eq(st.tensors[i].shape[d], s[i].shape[d]);
	}
	/* Contiguous, in schema order. */
	cr_assert_eq(st.tensors[0].data_begin, 0);
	cr_assert_eq(st.tensors[0].data_end, 24);
	cr_assert_eq(st.tensors[1].data_begin, 24);
	cr_assert_eq(st.tensors[1].data_end, 40);
	cr_assert_eq(st.tensors[2].data_begin, 40);
	cr_assert_eq(st.tensors[2].data_end, 44);
	trib_st_free(&st);
	cr_assert_null(st.tensors);
	cr_assert_eq(st.ntensors, 0);
	trib_free(file);
}

Test(core_safetensors, written_header_is_exact)
{
	struct trib_tensor s[2];
	const char *want = "{\"__metadata__\":{\"k\":\"v\"},"
			   "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			   "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]}}";
	size_t jlen = strlen(want), hdr_len;
	char *hdr;

	s[0] = schema_tensor("w", 2, (uint64_t[]){ 2, 3 });
	s[1] = schema_tensor("b", 1, (uint64_t[]){ 4 });
	/* data_begin/data_end of the schema are ignored. */
	s[0].data_begin = 1000;
	s[1].data_end = 7;
	cr_assert_eq(trib_st_write_header(s, 2, "{\"k\":\"v\"}", &hdr, &hdr_len), 0);
	cr_assert_eq(hdr_len, 8 + ((jlen + 7) & ~(size_t)7));
	cr_assert_eq((unsigned char)hdr[0], (hdr_len - 8) & 0xff);
	cr_assert_eq((unsigned char)hdr[1], (hdr_len - 8) >> 8);
	for (int i = 2; i < 8; i++)
		cr_assert_eq(hdr[i], 0);
	cr_assert_eq(memcmp(hdr + 8, want, jlen), 0, "%.*s", (int)(hdr_len - 8), hdr + 8);
	for (size_t i = 8 + jlen; i < hdr_len; i++)
		cr_assert_eq(hdr[i], ' ');
	trib_free(hdr);
}

Test(core_safetensors, write_header_without_meta_or_tensors)
{
	size_t hdr_len;
	char *hdr;

	cr_assert_eq(trib_st_write_header(NULL, 0, NULL, &hdr, &hdr_len), 0);
	cr_assert_eq(hdr_len, 16);
	cr_assert_eq(memcmp(hdr + 8, "{}      ", 8), 0);
	trib_free(hdr);
}

Test(core_safetensors, write_header_rejects_bad_schema)
{
	struct trib_tensor s[3];
	size_t hdr_len;
	char *hdr = NULL;

	three(s);
	s[1] = schema_tensor("w", 1, (uint64_t[]){ 4 });
	cr_assert_eq(trib_st_write_header(s, 2, NULL, &hdr, &hdr_len), -EINVAL, "duplicate");
	s[1] = schema_tensor("", 1, (uint64_t[]){ 4 });
	cr_assert_eq(trib_st_write_header(s, 2, NULL, &hdr, &hdr_len), -EINVAL, "empty");
	s[1] = schema_tensor("__metadata__", 1, (uint64_t[]){ 4 });
	cr_assert_eq(trib_st_write_header(s, 2, NULL, &hdr, &hdr_len), -EINVAL, "reserved");
	s[1] = schema_tensor("\xff\xfe", 1, (uint64_t[]){ 4 });
	cr_assert_eq(trib_st_write_header(s, 2, NULL, &hdr, &hdr_len), -EINVAL, "not UTF-8");
	s[1] = schema_tensor("x", 2, (uint64_t[]){ 1ull << 32, 1ull << 32 });
	cr_assert_eq(trib_st_write_header(s, 2, NULL, &hdr, &hdr_len), -EINVAL, "overflow");
	s[1] = schema_tensor("x", 1, (uint64_t[]){ 4 });
	s[1].ndim = TRIB_ST_MAX_DIMS + 1;
	cr_assert_eq(trib_st_write_header(s, 2, NULL, &hdr, &hdr_len), -EINVAL, "ndim");
	s[1] = schema_tensor("x", 1, (uint64_t[]){ 4 });
	cr_assert_eq(trib_st_write_header(s, 2, "[]", &hdr, &hdr_len), -EINVAL, "meta array");
	cr_assert_eq(trib_st_write_header(s, 2, "{\"a\":1}", &hdr, &hdr_len), -EINVAL, "meta int");
	cr_assert_eq(trib_st_write_header(s, 2, "{", &hdr, &hdr_len), -EINVAL, "meta JSON");
	cr_assert_null(hdr);
}

Test(core_safetensors, write_header_allocation_failure_is_enomem)
{
	struct trib_tensor s[3];
	size_t hdr_len = 0;
	char *hdr = NULL;

	three(s);
	trib_alloc_fail_after(0);
	cr_assert_eq(trib_st_write_header(s, 3, "{\"k\":\"v\"}", &hdr, &hdr_len), -ENOMEM);
	trib_alloc_fail_after(-1);
	cr_assert_null(hdr);
	cr_assert_eq(hdr_len, 0);
}

Test(core_safetensors, tensor_order_is_file_order)
{
	const char *json = "{\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
			   "\"__metadata__\":{\"format\":\"pt\"},"
			   "\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]},"
			   "\"m\":{\"dtype\":\"I8\",\"shape\":[3,1],\"data_offsets\":[8,11]},"
			   "\"b\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[11,13]}}";
	const char *names[] = { "z", "a", "m", "b" };
	const uint32_t dts[] = { TRIB_DTYPE_F32, TRIB_DTYPE_F16, TRIB_DTYPE_I8, TRIB_DTYPE_BF16 };
	struct trib_st st;
	const char *why = NULL;
	size_t len;
	unsigned char *b = mkfile(json, 13, &len);

	cr_assert_eq(trib_st_parse(b, len, &st, &why), 0, "why: %s", why);
	cr_assert_eq(st.ntensors, 4);
	cr_assert_eq(st.data_off, 8 + strlen(json));
	for (size_t i = 0; i < 4; i++) {
		cr_assert_str_eq(st.tensors[i].name, names[i]);
		cr_assert_eq(st.tensors[i].dtype, dts[i]);
	}
	cr_assert_eq(st.tensors[3].ndim, 0);
	cr_assert_eq(st.tensors[3].n_elem, 1);
	cr_assert_eq(st.tensors[2].n_elem, 3);
	trib_st_free(&st);
	trib_free(b);
}

Test(core_safetensors, many_tensors_keep_order)
{
	enum { N = 2000 };
	char *json = trib_malloc(N * 80 + 16);
	size_t off = 0, len;
	unsigned char *b;
	struct trib_st st;
	const char *why = NULL;

	cr_assert_not_null(json);
	off += (size_t)sprintf(json + off, "{");
	/* Names in an order that is neither sorted nor hash order. */
	for (int i = 0; i < N; i++)
		off += (size_t)sprintf(json + off,
				       "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[1],"
				       "\"data_offsets\":[%d,%d]}",
				       i ? "," : "", (i * 7919) % N, i * 4, i * 4 + 4);
	sprintf(json + off, "}");
	b = mkfile(json, N * 4, &len);
	cr_assert_eq(trib_st_parse(b, len, &st, &why), 0, "why: %s", why);
	cr_assert_eq(st.ntensors, N);
	for (int i = 0; i < N; i++) {
		char want[16];

		snprintf(want, sizeof(want), "t%d", (i * 7919) % N);
		cr_assert_str_eq(st.tensors[i].name, want);
		cr_assert_eq(st.tensors[i].data_begin, (uint64_t)i * 4);
	}
	trib_st_free(&st);
	trib_free(b);
	trib_free(json);
}

Test(core_safetensors, header_is_not_read_past_its_length)
{
	/* The byte after the JSON is data, not NUL: a parser relying on NUL would misread. */
	const char *json = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
	struct trib_st st;
	const char *why = NULL;
	size_t len;
	unsigned char *b = mkfile(json, 4, &len);

	memcpy(b + len - 4, "}}}}", 4);
	cr_assert_eq(trib_st_parse(b, len, &st, &why), 0, "why: %s", why);
	cr_assert_eq(st.ntensors, 1);
	trib_st_free(&st);
	/* The header alone, no data: the buffer ends right after '}'. */
	trib_free(b);
	b = mkfile("{}", 0, &len);
	cr_assert_eq(trib_st_parse(b, len, &st, &why), 0);
	cr_assert_eq(st.ntensors, 0);
	cr_assert_eq(st.data_off, len);
	trib_st_free(&st);
	trib_free(b);
}

Test(core_safetensors, rejects_truncated_length)
{
	unsigned char b[7] = { 2, 0, 0, 0, 0, 0, 0 };
	struct trib_st st;
	const char *why = NULL;

	for (size_t len = 0; len < 8; len++) {
		cr_assert_eq(trib_st_parse(b, len < 7 ? len : 7, &st, &why), -EINVAL);
		cr_assert_str_eq(why, "truncated length");
	}
}

Test(core_safetensors, rejects_header_length_beyond_body)
{
	unsigned char b[16] = { 9, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' ' };
	unsigned char huge[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}' };
	struct trib_st st;
	const char *why = NULL;

	cr_assert_eq(trib_st_parse(b, sizeof(b), &st, &why), -EINVAL);
	cr_assert_str_eq(why, "header length exceeds body");
	cr_assert_eq(trib_st_parse(huge, sizeof(huge), &st, &why), -EINVAL);
	cr_assert_str_eq(why, "header length exceeds body");
	/* Exactly the body: accepted. */
	b[0] = 8;
	cr_assert_eq(trib_st_parse(b, sizeof(b), &st, &why), 0);
	trib_st_free(&st);
}

Test(core_safetensors, rejects_header_over_100_mib)
{
	size_t n = TRIB_ST_HEADER_MAX + 1;
	unsigned char *b = trib_calloc(1, 8 + n);
	struct trib_st st;
	const char *why = NULL;

	cr_assert_not_null(b);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)n >> (8 * i));
	cr_assert_eq(trib_st_parse(b, 8 + n, &st, &why), -EINVAL);
	cr_assert_str_eq(why, "header too large");
	trib_free(b);
}

Test(core_safetensors, rejects_bad_json)
{
	expect_reject("{", 0, "bad JSON");
	expect_reject("", 0, "bad JSON");
	expect_reject("{\"a\":}", 0, "bad JSON");
	expect_reject("{} x", 0, "bad JSON");
	expect_reject("\"str\"", 0, "bad JSON");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,"
		      "99999999999999999999]}}",
		      4, "bad JSON");
}

Test(core_safetensors, rejects_non_object)
{
	expect_reject("[]", 0, "header is not a JSON object");
	expect_reject("[{\"dtype\":\"F32\"}]", 0, "header is not a JSON object");
}

Test(core_safetensors, rejects_unknown_dtype)
{
	expect_reject("{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
		      TRIB_ST_WHY_DTYPE);
	expect_reject("{\"x\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		      "unsupported dtype");
	expect_reject("{\"x\":{\"dtype\":\"F32\\u0000\",\"shape\":[1],\"data_offsets\":[0,4]}}",
		      4, "bad JSON"); /* jansson refuses \u0000 without JSON_ALLOW_NUL */
	expect_reject("{\"x\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		      "missing dtype");
	expect_reject("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing dtype");
}

Test(core_safetensors, rejects_shape_overflow)
{
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
		      "\"data_offsets\":[0,0]}}",
		      0, "shape overflows");
	/* Element count fits, byte count does not. */
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
		      "\"data_offsets\":[0,0]}}",
		      0, "shape overflows");
}

Test(core_safetensors, rejects_bad_shape)
{
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
		      "bad shape");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
		      "bad shape");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
		      "bad shape");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4,
		      "missing shape");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
		      "\"data_offsets\":[0,4]}}",
		      4, "too many dimensions");
}

Test(core_safetensors, rejects_offsets_out_of_range)
{
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7,
		      "data_offsets out of range");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
		      "data_offsets out of range");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 8,
		      "bad data_offsets");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8,
		      "bad data_offsets");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
		      "bad data_offsets");
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 8, "bad data_offsets");
}

Test(core_safetensors, rejects_size_mismatch)
{
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
		      "data_offsets do not match shape");
	expect_reject("{\"x\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24,
		      "data_offsets do not match shape");
}

Test(core_safetensors, rejects_duplicate_names)
{
	expect_reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		      "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
		      8, "duplicate tensor name");
}

/* Two tensors reading the same bytes, wholly or in part, in either order (issue #13). */
Test(core_safetensors, rejects_overlapping_tensors)
{
	struct trib_st st;
	size_t len;
	unsigned char *b;

	expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
		      8, "tensors overlap (data_offsets share bytes)");
	expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
		      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
		      12, "tensors overlap (data_offsets share bytes)");
	expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
		      "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
		      "\"b\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[15,16]}}",
		      16, "tensors overlap (data_offsets share bytes)");
	/* Adjacent is fine, and an empty tensor holds no byte (it may sit anywhere). */
	b = mkfile("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
		   "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, &len);
	cr_assert_eq(trib_st_parse(b, len, &st, NULL), 0);
	cr_assert_eq(st.ntensors, 3);
	trib_st_free(&st);
	trib_free(b);
}

Test(core_safetensors, rejects_bad_names)
{
	char json[600];
	char name[TRIB_ST_NAME_MAX + 1];

	expect_reject("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		      "empty tensor name");
	memset(name, 'n', TRIB_ST_NAME_MAX);
	name[TRIB_ST_NAME_MAX] = '\0';
	snprintf(json, sizeof(json),
		 "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
	expect_reject(json, 4, "tensor name too long");
	expect_reject("{\"x\":[1]}", 4, "tensor entry is not an object");
}

Test(core_safetensors, accepts_longest_name)
{
	char json[600];
	char name[TRIB_ST_NAME_MAX];
	struct trib_st st;
	const char *why = NULL;
	size_t len;
	unsigned char *b;

	memset(name, 'n', TRIB_ST_NAME_MAX - 1);
	name[TRIB_ST_NAME_MAX - 1] = '\0';
	snprintf(json, sizeof(json),
		 "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
	b = mkfile(json, 4, &len);
	cr_assert_eq(trib_st_parse(b, len, &st, &why), 0, "why: %s", why);
	cr_assert_str_eq(st.tensors[0].name, name);
	trib_st_free(&st);
	trib_free(b);
}

/* A header with @n one-element I8 tensors, byte i for tensor i (caller frees the result). */
static char *n_tensors_json(size_t n)
{
	char *json = trib_malloc(n * 64 + 16);
	size_t off = 0;

	cr_assert_not_null(json);
	json[off++] = '{';
	for (size_t i = 0; i < n; i++)
		off += (size_t)sprintf(json + off,
				       "%s\"%zu\":{\"dtype\":\"I8\",\"shape\":[],"
				       "\"data_offsets\":[%zu,%zu]}",
				       i ? "," : "", i, i, i + 1);
	strcpy(json + off, "}");
	return json;
}

Test(core_safetensors, tensor_count_limit)
{
	char *json = n_tensors_json(TRIB_ST_MAX_TENSORS + 1);
	struct trib_st st;
	const char *why = NULL;
	size_t len;
	unsigned char *b;

	expect_reject(json, TRIB_ST_MAX_TENSORS + 1, "too many tensors");
	trib_free(json);
	json = n_tensors_json(TRIB_ST_MAX_TENSORS);
	b = mkfile(json, TRIB_ST_MAX_TENSORS, &len);
	cr_assert_eq(trib_st_parse(b, len, &st, &why), 0, "why: %s", why);
	cr_assert_eq(st.ntensors, TRIB_ST_MAX_TENSORS);
	trib_st_free(&st);
	trib_free(b);
	trib_free(json);
}

Test(core_safetensors, parse_allocation_failure_is_enomem)
{
	const char *json = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
	struct trib_st st;
	const char *why = NULL;
	size_t len;
	unsigned char *b = mkfile(json, 4, &len);

	trib_alloc_fail_after(0);
	cr_assert_eq(trib_st_parse(b, len, &st, &why), -ENOMEM);
	trib_alloc_fail_after(-1);
	cr_assert_null(st.tensors);
	cr_assert_eq(st.ntensors, 0);
	trib_st_free(&st);
	trib_free(b);
}

/* An upload of the three-tensor schema written by @json, parsed into @st. */
static unsigned char *upload(const char *json, size_t data_len, struct trib_st *st)
{
	const char *why = NULL;
	size_t len;
	unsigned char *b = mkfile(json, data_len, &len);

	cr_assert_eq(trib_st_parse(b, len, st, &why), 0, "why: %s", why);
	return b;
}

Test(core_safetensors, match_in_order)
{
	struct trib_tensor s[3];
	struct trib_st st;
	uint64_t offs[3];
	const char *why = NULL;
	size_t hdr_len;
	unsigned char *file;

	three(s);
	file = write_and_parse(s, 3, NULL, 44, &st, &hdr_len);
	cr_assert_eq(trib_st_match(&st, s, 3, offs, &why), 0, "why: %s", why);
	cr_assert_eq(offs[0], hdr_len);
	cr_assert_eq(offs[1], hdr_len + 24);
	cr_assert_eq(offs[2], hdr_len + 40);
	trib_st_free(&st);
	trib_free(file);
}

Test(core_safetensors, match_out_of_order)
{
	/* The file holds s, w, b; the schema says w, b, s. */
	const char *json = "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
			   "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[4,28]},"
			   "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[28,44]}}";
	struct trib_tensor s[3];
	struct trib_st st;
	uint64_t offs[3];
	const char *why = NULL;
	unsigned char *b = upload(json, 44, &st);
	uint64_t base = 8 + strlen(json);

	three(s);
	cr_assert_eq(trib_st_match(&st, s, 3, offs, &why), 0, "why: %s", why);
	cr_assert_eq(offs[0], base + 4);
	cr_assert_eq(offs[1], base + 28);
	cr_assert_eq(offs[2], base + 0);
	trib_st_free(&st);
	trib_free(b);
}

static void expect_mismatch(const char *json, size_t data_len, const char *want_why)
{
	struct trib_tensor s[3];
	struct trib_st st;
	uint64_t offs[3];
	const char *why = NULL;
	unsigned char *b = upload(json, data_len, &st);

	three(s);
	cr_assert_eq(trib_st_match(&st, s, 3, offs, &why), -EINVAL, "matched %s", json);
	cr_assert_str_eq(why, want_why, "%s: got \"%s\"", json, why);
	trib_st_free(&st);
	trib_free(b);
}

Test(core_safetensors, match_missing_tensor)
{
	expect_mismatch("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			"\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]}}",
			40, "missing tensor");
	/* Right count, one wrong name. */
	expect_mismatch("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			"\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]},"
			"\"S\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]}}",
			44, "missing tensor");
}

Test(core_safetensors, match_extra_tensor)
{
	expect_mismatch("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			"\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]},"
			"\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]},"
			"\"extra\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[44,48]}}",
			48, "unexpected tensor");
}

Test(core_safetensors, match_shape_mismatch)
{
	/* Same element count, other shape. */
	expect_mismatch("{\"w\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]},"
			"\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]},"
			"\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]}}",
			44, "shape mismatch");
	/* Other rank. */
	expect_mismatch("{\"w\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
			"\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]},"
			"\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]}}",
			44, "shape mismatch");
	expect_mismatch("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			"\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]},"
			"\"s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[40,44]}}",
			44, "shape mismatch");
}

Test(core_safetensors, match_dtype_mismatch)
{
	expect_mismatch("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			"\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
			"\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[32,36]}}",
			36, TRIB_ST_WHY_DTYPE);
}

Test(core_safetensors, match_empty_schema)
{
	struct trib_st st;
	const char *why = NULL;
	unsigned char *b = upload("{}", 0, &st);

	cr_assert_eq(trib_st_match(&st, NULL, 0, NULL, &why), 0);
	trib_st_free(&st);
	trib_free(b);
}

Test(core_safetensors, match_allocation_failure_is_enomem)
{
	const char *json = "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
			   "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[4,28]},"
			   "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[28,44]}}";
	struct trib_tensor s[3];
	struct trib_st st;
	uint64_t offs[3];
	const char *why = NULL;
	unsigned char *b = upload(json, 44, &st);

	three(s);
	trib_alloc_fail_after(0);
	cr_assert_eq(trib_st_match(&st, s, 3, offs, &why), -ENOMEM);
	trib_alloc_fail_after(-1);
	trib_st_free(&st);
	trib_free(b);
}

/* I32 (FRL's rankings) parses with its size, and no float job's match takes it, compressed or not. */
Test(core_safetensors, i32_parses_and_float_matches_refuse_it)
{
	const char *json = "{\"w\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
	struct trib_tensor s = schema_tensor("w", 1, (const uint64_t[]){ 3 });
	struct trib_st st;
	uint64_t off;
	uint32_t dt;
	float scale;
	const char *why = NULL;
	unsigned char *b = upload(json, 12, &st);

	cr_assert_eq(trib_dtype_size(TRIB_DTYPE_I32), 4);
	cr_assert_str_eq(trib_dtype_name(TRIB_DTYPE_I32), "I32");
	cr_assert_eq(trib_dtype_from_name("I32"), TRIB_DTYPE_I32);
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_I32);
	cr_assert_eq(st.tensors[0].n_elem, 3);
	cr_assert_eq(trib_st_match(&st, &s, 1, &off, &why), -EINVAL);
	cr_assert_str_eq(why, TRIB_ST_WHY_DTYPE);
	why = NULL;
	cr_assert_eq(trib_st_match_q(&st, &s, 1, b, &off, &dt, &scale, &why), -EINVAL);
	cr_assert_str_eq(why, TRIB_ST_WHY_DTYPE);
	trib_st_free(&st);
	trib_free(b);
	/* Its size is checked like any dtype's: 3 I32 in 11 bytes is malformed. */
	expect_reject("{\"w\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[0,11]}}", 11,
		      "data_offsets do not match shape");
}

/* I64 (a sparse update's indices) parses with its size, and no float job's match takes it. */
Test(core_safetensors, i64_parses_and_float_matches_refuse_it)
{
	const char *json = "{\"w\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]}}";
	struct trib_tensor s = schema_tensor("w", 1, (const uint64_t[]){ 3 });
	struct trib_st st;
	uint64_t off;
	uint32_t dt;
	float scale;
	const char *why = NULL;
	unsigned char *b = upload(json, 24, &st);

	cr_assert_eq(trib_dtype_size(TRIB_DTYPE_I64), 8);
	cr_assert_str_eq(trib_dtype_name(TRIB_DTYPE_I64), "I64");
	cr_assert_eq(trib_dtype_from_name("I64"), TRIB_DTYPE_I64);
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_I64);
	cr_assert_eq(trib_st_match(&st, &s, 1, &off, &why), -EINVAL);
	cr_assert_str_eq(why, TRIB_ST_WHY_DTYPE);
	why = NULL;
	cr_assert_eq(trib_st_match_q(&st, &s, 1, b, &off, &dt, &scale, &why), -EINVAL);
	cr_assert_str_eq(why, TRIB_ST_WHY_DTYPE);
	trib_st_free(&st);
	trib_free(b);
	expect_reject("{\"w\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
		      "data_offsets do not match shape");
}

/* An FRL model's header: every tensor I32, 4-byte cells, laid out as the F32 writer does. */
Test(core_safetensors, write_header_i32_is_exact_and_parses)
{
	struct trib_tensor s[2];
	const char *want = "{\"w\":{\"dtype\":\"I32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			   "\"b\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[24,40]}}";
	size_t jlen = strlen(want), hdr_len;
	const char *why = NULL;
	unsigned char *file;
	struct trib_st st;
	char *hdr;

	s[0] = schema_tensor("w", 2, (uint64_t[]){ 2, 3 });
	s[1] = schema_tensor("b", 1, (uint64_t[]){ 4 });
	cr_assert_eq(trib_st_write_header_dtype(s, 2, TRIB_DTYPE_I32, NULL, &hdr, &hdr_len), 0);
	cr_assert_eq(hdr_len, 8 + ((jlen + 7) & ~(size_t)7));
	cr_assert_eq(memcmp(hdr + 8, want, jlen), 0, "%.*s", (int)(hdr_len - 8), hdr + 8);
	file = trib_malloc(hdr_len + 40);
	cr_assert_not_null(file);
	memcpy(file, hdr, hdr_len);
	memset(file + hdr_len, 0, 40);
	trib_free(hdr);
	cr_assert_eq(trib_st_parse(file, hdr_len + 40, &st, &why), 0, "why: %s", why);
	cr_assert_eq(st.ntensors, 2);
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_I32);
	cr_assert_eq(st.tensors[1].dtype, TRIB_DTYPE_I32);
	cr_assert_eq(st.tensors[1].data_end, 40);
	trib_st_free(&st);
	trib_free(file);

	/* F32 through the dtype form is the plain writer, byte for byte. */
	{
		char *a, *b;
		size_t alen, blen;

		cr_assert_eq(trib_st_write_header(s, 2, NULL, &a, &alen), 0);
		cr_assert_eq(trib_st_write_header_dtype(s, 2, TRIB_DTYPE_F32, NULL, &b, &blen), 0);
		cr_assert_eq(alen, blen);
		cr_assert_eq(memcmp(a, b, alen), 0);
		trib_free(a);
		trib_free(b);
	}
}

/* Only the 4-byte model dtypes are written: upload-only and unknown dtypes are refused. */
Test(core_safetensors, write_header_dtype_refuses_non_model_dtypes)
{
	struct trib_tensor s[1];
	uint32_t bad[] = { 0, TRIB_DTYPE_F16, TRIB_DTYPE_BF16, TRIB_DTYPE_I8, 5, 7, 99 };
	size_t hdr_len;
	char *hdr = NULL;

	s[0] = schema_tensor("w", 1, (uint64_t[]){ 4 });
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(trib_st_write_header_dtype(s, 1, bad[i], NULL, &hdr, &hdr_len), -EINVAL,
			     "dtype %u", bad[i]);
	cr_assert_null(hdr);
}

/* TRIB_DTYPE_EACH: each tensor in its own schema dtype (a flora model: F32 stacks, I32 rank). */
Test(core_safetensors, write_header_each_dtype)
{
	struct trib_tensor s[2];
	struct trib_st st = { 0 };
	const char *why = NULL;
	char *hdr = NULL, *file;
	size_t hdr_len;

	s[0] = schema_tensor("a", 2, (uint64_t[]){ 2, 3 });
	s[1] = schema_tensor("a.rank", 1, (uint64_t[]){ 1 });
	s[1].dtype = TRIB_DTYPE_I32;
	cr_assert_eq(trib_st_write_header_dtype(s, 2, TRIB_DTYPE_EACH, NULL, &hdr, &hdr_len), 0);
	file = trib_malloc(hdr_len + 28);
	cr_assert_not_null(file);
	memcpy(file, hdr, hdr_len);
	memset(file + hdr_len, 0, 28);
	trib_free(hdr);
	cr_assert_eq(trib_st_parse(file, hdr_len + 28, &st, &why), 0, "why: %s", why);
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_F32);
	cr_assert_eq(st.tensors[1].dtype, TRIB_DTYPE_I32);
	cr_assert_eq(st.tensors[1].data_end, 28);
	trib_st_free(&st);
	trib_free(file);
	/* A schema entry in an upload-only dtype is refused. */
	s[1].dtype = TRIB_DTYPE_F16;
	hdr = NULL;
	cr_assert_eq(trib_st_write_header_dtype(s, 2, TRIB_DTYPE_EACH, NULL, &hdr, &hdr_len),
		     -EINVAL);
	cr_assert_null(hdr);
}
