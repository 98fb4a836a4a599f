// SPDX-License-Identifier: MIT
/* Tests of core/trib_npy.c and trib_npz.c: numpy's own bytes read, and hostile ones refused. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_npy.h"

/*
 * Made by numpy 1.24 (Debian 12's python3-numpy):
 *   np.savez(b, w=np.array([[1.5, -2], [3, 4.25]], dtype=np.float32), s=np.float64(0.5))
 *   np.savez_compressed(b, q=np.array([1, -2, 127], dtype=np.int8),
 *                       h=np.array([0.5, -1], dtype=np.float16), d=np.arange(4) / 4)
 */
/* 514 bytes */
static const unsigned char np_savez[] = {
	0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0xf8, 0x86,
	0x15, 0x9a, 0x90, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x05, 0x00, 0x14, 0x00, 0x77, 0x2e,
	0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x90,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00, 0x76,
	0x00, 0x7b, 0x27, 0x64, 0x65, 0x73, 0x63, 0x72, 0x27, 0x3a, 0x20, 0x27, 0x3c, 0x66, 0x34, 0x27,
	0x2c, 0x20, 0x27, 0x66, 0x6f, 0x72, 0x74, 0x72, 0x61, 0x6e, 0x5f, 0x6f, 0x72, 0x64, 0x65, 0x72,
	0x27, 0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73, 0x65, 0x2c, 0x20, 0x27, 0x73, 0x68, 0x61, 0x70, 0x65,
	0x27, 0x3a, 0x20, 0x28, 0x32, 0x2c, 0x20, 0x32, 0x29, 0x2c, 0x20, 0x7d, 0x20, 0x20, 0x20, 0x20,
	0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
	0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
	0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
	0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x0a, 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00,
	0x00, 0x40, 0x40, 0x00, 0x00, 0x88, 0x40, 0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x21, 0x00, 0x70, 0xee, 0x92, 0x69, 0x88, 0x00, 0x00, 0x00, 0x88, 0x00, 0x00,
	0x00, 0x05, 0x00, 0x14, 0x00, 0x73, 0x2e, 0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x88, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x88, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0x4e,
	0x55, 0x4d, 0x50, 0x59, 0x01, 0x00, 0x76, 0x00, 0x7b, 0x27, 0x64, 0x65, 0x73, 0x63, 0x72, 0x27,
	0x3a, 0x20, 0x27, 0x3c, 0x66, 0x38, 0x27, 0x2c, 0x20, 0x27, 0x66, 0x6f, 0x72, 0x74, 0x72, 0x61,
	0x6e, 0x5f, 0x6f, 0x72, 0x64, 0x65, 0x72, 0x27, 0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73, 0x65, 0x2c,
	0x20, 0x27, 0x73, 0x68, 0x61, 0x70, 0x65, 0x27, 0x3a, 0x20, 0x28, 0x29, 0x2c, 0x20, 0x7d, 0x20,
	0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
	0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
	0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
	0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x0a, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0xf8, 0x86, 0x15, 0x9a, 0x90, 0x00, 0x00, 0x00, 0x90, 0x00,
	0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x77, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x70, 0xee, 0x92, 0x69, 0x88, 0x00, 0x00,
	0x00, 0x88, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x80, 0x01, 0xc7, 0x00, 0x00, 0x00, 0x73, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x05, 0x06,
	0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02, 0x00, 0x66, 0x00, 0x00, 0x00, 0x86, 0x01, 0x00, 0x00,
	0x00, 0x00,
};
/* 562 bytes */
static const unsigned char np_savez_compressed[] = {
	0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0x68, 0x02,
	0xad, 0x8f, 0x47, 0x00, 0x00, 0x00, 0x83, 0x00, 0x00, 0x00, 0x05, 0x00, 0x14, 0x00, 0x71, 0x2e,
	0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x83, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x47,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9b, 0xec, 0x17, 0xea, 0x1b, 0x10, 0xc9, 0xc8, 0x50,
	0xc6, 0x50, 0xad, 0x9e, 0x92, 0x5a, 0x9c, 0x5c, 0xa4, 0x6e, 0xa5, 0xa0, 0x5e, 0x93, 0x69, 0xa8,
	0xae, 0xa3, 0xa0, 0x9e, 0x96, 0x5f, 0x54, 0x52, 0x94, 0x98, 0x17, 0x9f, 0x5f, 0x94, 0x92, 0x0a,
	0x12, 0x77, 0x4b, 0xcc, 0x29, 0x4e, 0x05, 0x8a, 0x17, 0x67, 0x24, 0x16, 0xa4, 0x02, 0xf9, 0x1a,
	0xc6, 0x3a, 0x9a, 0x3a, 0x0a, 0xb5, 0x0a, 0x14, 0x00, 0x2e, 0xc6, 0x7f, 0xf5, 0x00, 0x50, 0x4b,
	0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0x16, 0x80, 0xbc, 0x51,
	0x48, 0x00, 0x00, 0x00, 0x84, 0x00, 0x00, 0x00, 0x05, 0x00, 0x14, 0x00, 0x68, 0x2e, 0x6e, 0x70,
	0x79, 0x01, 0x00, 0x10, 0x00, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x48, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x9b, 0xec, 0x17, 0xea, 0x1b, 0x10, 0xc9, 0xc8, 0x50, 0xc6, 0x50,
	0xad, 0x9e, 0x92, 0x5a, 0x9c, 0x5c, 0xa4, 0x6e, 0xa5, 0xa0, 0x6e, 0x93, 0x66, 0xa4, 0xae, 0xa3,
	0xa0, 0x9e, 0x96, 0x5f, 0x54, 0x52, 0x94, 0x98, 0x17, 0x9f, 0x5f, 0x94, 0x92, 0x0a, 0x12, 0x77,
	0x4b, 0xcc, 0x29, 0x4e, 0x05, 0x8a, 0x17, 0x67, 0x24, 0x16, 0xa4, 0x02, 0xf9, 0x1a, 0x46, 0x3a,
	0x9a, 0x3a, 0x0a, 0xb5, 0x0a, 0x14, 0x00, 0x2e, 0x06, 0x0b, 0x86, 0x3d, 0x00, 0x50, 0x4b, 0x03,
	0x04, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0xce, 0xb5, 0x0a, 0xd8, 0x4f,
	0x00, 0x00, 0x00, 0xa0, 0x00, 0x00, 0x00, 0x05, 0x00, 0x14, 0x00, 0x64, 0x2e, 0x6e, 0x70, 0x79,
	0x01, 0x00, 0x10, 0x00, 0xa0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x4f, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x9b, 0xec, 0x17, 0xea, 0x1b, 0x10, 0xc9, 0xc8, 0x50, 0xc6, 0x50, 0xad,
	0x9e, 0x92, 0x5a, 0x9c, 0x5c, 0xa4, 0x6e, 0xa5, 0xa0, 0x6e, 0x93, 0x66, 0xa1, 0xae, 0xa3, 0xa0,
	0x9e, 0x96, 0x5f, 0x54, 0x52, 0x94, 0x98, 0x17, 0x9f, 0x5f, 0x94, 0x92, 0x0a, 0x12, 0x77, 0x4b,
	0xcc, 0x29, 0x4e, 0x05, 0x8a, 0x17, 0x67, 0x24, 0x16, 0xa4, 0x02, 0xf9, 0x1a, 0x26, 0x3a, 0x9a,
	0x3a, 0x0a, 0xb5, 0x0a, 0x14, 0x00, 0x2e, 0x06, 0x14, 0x70, 0xc1, 0x1e, 0x42, 0x3f, 0x80, 0xd2,
	0x2f, 0xec, 0x01, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00,
	0x00, 0x21, 0x00, 0x68, 0x02, 0xad, 0x8f, 0x47, 0x00, 0x00, 0x00, 0x83, 0x00, 0x00, 0x00, 0x05,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0x00, 0x00,
	0x00, 0x71, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14, 0x00, 0x00, 0x00,
	0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0x16, 0x80, 0xbc, 0x51, 0x48, 0x00, 0x00, 0x00, 0x84, 0x00,
	0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01,
	0x7e, 0x00, 0x00, 0x00, 0x68, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14,
	0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0xce, 0xb5, 0x0a, 0xd8, 0x4f, 0x00, 0x00,
	0x00, 0xa0, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x80, 0x01, 0xfd, 0x00, 0x00, 0x00, 0x64, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x05, 0x06,
	0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x03, 0x00, 0x99, 0x00, 0x00, 0x00, 0x83, 0x01, 0x00, 0x00,
	0x00, 0x00,
};

static char why[TRIB_NPY_WHY_MAX];

/* A v1.0 .npy of @dict (padded with spaces and '\n' to @hdr_total bytes) and @data. */
static size_t make_npy(unsigned char *out, const char *dict, size_t hdr_total, const void *data,
		       size_t dlen)
{
	size_t dl = strlen(dict);

	cr_assert_geq(hdr_total, 10 + dl + 1);
	memcpy(out, "\x93NUMPY\x01\x00", 8);
	out[8] = (unsigned char)(hdr_total - 10);
	out[9] = (unsigned char)((hdr_total - 10) >> 8);
	memcpy(out + 10, dict, dl);
	memset(out + 10 + dl, ' ', hdr_total - 10 - dl - 1);
	out[hdr_total - 1] = '\n';
	if (dlen)
		memcpy(out + hdr_total, data, dlen);
	return hdr_total + dlen;
}

static int parse_dict(const char *dict, struct trib_npy *h)
{
	unsigned char buf[512];
	size_t n = make_npy(buf, dict, 128, NULL, 0);

	why[0] = '\0';
	return trib_npy_parse(buf, n, h, why, sizeof(why));
}

Test(npy, numpy_headers)
{
	struct trib_npy h;

	cr_assert_eq(parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", &h),
		     0, "%s", why);
	cr_assert_eq(h.dtype, TRIB_DTYPE_F32);
	cr_assert_eq(h.ndim, 1);
	cr_assert_eq(h.n_elem, 3);
	cr_assert_eq(h.data_off, 128);
	cr_assert_eq(h.data_len, 12);
	cr_assert_eq(parse_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", &h),
		     0);
	cr_assert_eq(h.dtype, TRIB_NPY_F64);
	cr_assert_eq(h.n_elem, 6);
	cr_assert_eq(h.data_len, 48);
	/* A scalar (np.float32(x)): shape (), one element; key order free; Python 2's 3L. */
	cr_assert_eq(parse_dict("{'shape': (), 'fortran_order': False, 'descr': '<f2'}", &h), 0);
	cr_assert_eq(h.ndim, 0);
	cr_assert_eq(h.n_elem, 1);
	cr_assert_eq(h.dtype, TRIB_DTYPE_F16);
	cr_assert_eq(parse_dict("{\"descr\": \"|i1\", \"fortran_order\": False, \"shape\": (4L,)}",
				&h), 0, "%s", why);
	cr_assert_eq(h.dtype, TRIB_DTYPE_I8);
	cr_assert_eq(h.n_elem, 4);
}

/* Each refused dict and a word its message holds. */
Test(npy, hostile_headers)
{
	static const struct {
		const char *dict, *word;
	} bad[] = {
		{ "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", "object arrays" },
		{ "{'descr': '<O8', 'fortran_order': False, 'shape': (3,), }", "object arrays" },
		{ "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", "big-endian" },
		{ "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }", "big-endian" },
		{ "{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }", "allowed" },
		{ "{'descr': '<u8', 'fortran_order': False, 'shape': (3,), }", "allowed" },
		{ "{'descr': '<u4', 'fortran_order': False, 'shape': (3,), }", "allowed" },
		{ "{'descr': '>i8', 'fortran_order': False, 'shape': (3,), }", "big-endian" },
		{ "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", "allowed" },
		{ "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }",
		  "structured" },
		{ "{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", "C-ordered" },
		{ "{'descr': '<f4', 'fortran_order': 1, 'shape': (3,), }", "True or False" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", "(n,)" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': [3], }", "tuple" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }", "tuple" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
		  "at most 8" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576, 2), }",
		  "2^40" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
		  "tuple" },
		{ "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
		  "twice" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}", "unexpected key" },
		{ "{'descr': '<f4', 'fortran_order': False}", "'shape' is missing" },
		{ "{'descr': '<\\x664', 'fortran_order': False, 'shape': (3,)}", "dtype string" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} x", "after the dict" },
		{ "{'descr': '<f4' 'fortran_order': False, 'shape': (3,)}", "',' or '}'" },
		{ "['descr', '<f4']", "not a dict" },
		{ "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)", "',' or '}'" },
	};
	struct trib_npy h;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(parse_dict(bad[i].dict, &h), -EINVAL, "accepted: %s", bad[i].dict);
		cr_assert_not_null(strstr(why, bad[i].word), "%s: got '%s', want '%s'",
				   bad[i].dict, why, bad[i].word);
	}
}

Test(npy, hostile_preambles)
{
	unsigned char buf[256];
	struct trib_npy h;
	size_t n = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 128,
			    "\0\0\0\0", 4);

	cr_assert_eq(trib_npy_parse(buf, n, &h, why, sizeof(why)), 0, "%s", why);
	buf[1] = 'n';
	cr_assert_eq(trib_npy_parse(buf, n, &h, why, sizeof(why)), -EINVAL);
	cr_assert_not_null(strstr(why, "magic"));
	buf[1] = 'N';
	buf[6] = 4;
	cr_assert_eq(trib_npy_parse(buf, n, &h, why, sizeof(why)), -EINVAL);
	cr_assert_not_null(strstr(why, "version 4.0"));
	buf[6] = 1;
	buf[7] = 1;
	cr_assert_eq(trib_npy_parse(buf, n, &h, why, sizeof(why)), -EINVAL);
	buf[7] = 0;
	/* The header length runs past the body. */
	buf[8] = 0xff;
	cr_assert_eq(trib_npy_parse(buf, n, &h, why, sizeof(why)), -EINVAL);
	cr_assert_not_null(strstr(why, "past the body"), "%s", why);
	/* Version 2.0: a 4-byte length, over the limit. */
	buf[6] = 2;
	buf[8] = 0;
	buf[9] = 0;
	buf[10] = 2;
	buf[11] = 0;
	cr_assert_eq(trib_npy_parse(buf, n, &h, why, sizeof(why)), -EINVAL);
	cr_assert_not_null(strstr(why, "at most 65536"), "%s", why);
	/* Too short to hold a preamble. */
	cr_assert_eq(trib_npy_parse(buf, 7, &h, why, sizeof(why)), -EINVAL);
	cr_assert_eq(trib_npy_prefix(buf, 7, &h.data_off, why, sizeof(why)), -EAGAIN);
}

Test(npy, version2_header)
{
	unsigned char buf[256] = { 0 };
	struct trib_npy h;
	const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
	size_t dl = strlen(dict), total = 128;

	memcpy(buf, "\x93NUMPY\x02\x00", 8);
	buf[8] = (unsigned char)(total - 12);
	buf[9] = buf[10] = buf[11] = 0;
	memcpy(buf + 12, dict, dl);
	memset(buf + 12 + dl, ' ', total - 12 - dl - 1);
	buf[total - 1] = '\n';
	cr_assert_eq(trib_npy_parse(buf, total + 8, &h, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(h.data_off, 128);
	cr_assert_eq(h.n_elem, 2);
}

/* float64 narrowed in place, and data at an odd offset moved to an aligned one. */
Test(npy, load_f64_and_misaligned)
{
	double d[3] = { 1.25, -3.5, 1e-3 };
	float f[3] = { 7.0f, -1.0f, 0.5f }, got[3];
	_Alignas(64) unsigned char buf[256];
	struct trib_st st;
	size_t n = make_npy(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 128,
			    d, sizeof(d));

	cr_assert_eq(trib_npy_load(buf, n, "weights", &st, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(st.ntensors, 1);
	cr_assert_str_eq(st.tensors[0].name, "weights");
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_F32);
	cr_assert_eq(st.tensors[0].data_begin % 4, 0);
	cr_assert_eq(st.tensors[0].data_end - st.tensors[0].data_begin, 12);
	memcpy(got, buf + st.tensors[0].data_begin, 12);
	for (int i = 0; i < 3; i++)
		cr_assert_float_eq(got[i], (float)d[i], 0);
	trib_st_free(&st);
	/* A header of 131 bytes: the data is moved down to 128. */
	n = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 131, f,
		     sizeof(f));
	cr_assert_eq(trib_npy_load(buf, n, "w", &st, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(st.tensors[0].data_begin, 128);
	cr_assert_eq(memcmp(buf + 128, f, sizeof(f)), 0);
	trib_st_free(&st);
	/* A float64 float32 cannot hold: refused, naming the element. */
	d[1] = 1e300;
	n = make_npy(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 128, d,
		     sizeof(d));
	cr_assert_eq(trib_npy_load(buf, n, "w", &st, why, sizeof(why)), -EINVAL);
	cr_assert_not_null(strstr(why, "element 1"), "%s", why);
	/* Data longer or shorter than shape x dtype. */
	n = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 128, f,
		     sizeof(f));
	cr_assert_eq(trib_npy_load(buf, n - 1, "w", &st, why, sizeof(why)), -EINVAL);
	cr_assert_eq(trib_npy_load(buf, n + 1, "w", &st, why, sizeof(why)), -EINVAL);
	cr_assert_not_null(strstr(why, "needs 12"), "%s", why);
}

/* frl's rankings: int32 as is, int64 narrowed to I32 in place; a value past int32 refused. */
Test(npy, load_i32_and_i64)
{
	int64_t q[4] = { 3, 0, 2, 1 };
	int32_t p[4] = { 1, 3, 0, 2 }, got[4];
	_Alignas(64) unsigned char buf[256];
	struct trib_st st;
	size_t n = make_npy(buf, "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }", 128,
			    q, sizeof(q));

	cr_assert_eq(trib_npy_load(buf, n, "w", &st, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_I32);
	cr_assert_eq(st.tensors[0].data_end - st.tensors[0].data_begin, 16);
	memcpy(got, buf + st.tensors[0].data_begin, 16);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(got[i], (int32_t)q[i]);
	trib_st_free(&st);
	n = make_npy(buf, "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", 128, p,
		     sizeof(p));
	cr_assert_eq(trib_npy_load(buf, n, "w", &st, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_I32);
	cr_assert_eq(memcmp(buf + st.tensors[0].data_begin, p, 16), 0);
	trib_st_free(&st);
	for (int k = 0; k < 2; k++) {
		q[2] = k ? (int64_t)INT32_MIN - 1 : (int64_t)INT32_MAX + 1;
		n = make_npy(buf, "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }", 128,
			     q, sizeof(q));
		cr_assert_eq(trib_npy_load(buf, n, "w", &st, why, sizeof(why)), -EINVAL);
		cr_assert_not_null(strstr(why, "element 2") && strstr(why, "int32"), "%s", why);
	}
}

/* Load @len bytes of @src as an .npz into an aligned copy with @room bytes of region. */
static int load(const unsigned char *src, size_t len, uint64_t room, struct trib_st *st,
		unsigned char **copy)
{
	size_t wire = (len + 63) & ~(size_t)63;
	unsigned char *b = aligned_alloc(64, wire + room + 64);
	uint64_t used = 0;
	int err;

	cr_assert_not_null(b);
	memcpy(b, src, len);
	why[0] = '\0';
	err = trib_npz_load(b, len, b + wire, room, st, &used, why, sizeof(why));
	cr_assert_leq(used, room);
	*copy = b;
	return err;
}

static const struct trib_tensor *find(const struct trib_st *st, const char *name)
{
	for (size_t i = 0; i < st->ntensors; i++)
		if (!strcmp(st->tensors[i].name, name))
			return &st->tensors[i];
	return NULL;
}

Test(npz, numpy_savez_stored)
{
	struct trib_st st;
	unsigned char *b;
	const struct trib_tensor *w, *s;
	float got[4];

	cr_assert_eq(load(np_savez, sizeof(np_savez), 0, &st, &b), 0, "%s", why);
	cr_assert_eq(st.ntensors, 2);
	w = find(&st, "w");
	s = find(&st, "s");
	cr_assert(w && s);
	cr_assert_eq(w->ndim, 2);
	cr_assert_eq(w->shape[0], 2);
	cr_assert_eq(w->shape[1], 2);
	cr_assert_eq(w->data_begin % 4, 0);
	memcpy(got, b + w->data_begin, 16);
	cr_assert(got[0] == 1.5f && got[1] == -2.0f && got[2] == 3.0f && got[3] == 4.25f);
	cr_assert_eq(s->ndim, 0);
	cr_assert_eq(s->dtype, TRIB_DTYPE_F32); /* float64 narrowed */
	memcpy(got, b + s->data_begin, 4);
	cr_assert(got[0] == 0.5f);
	trib_st_free(&st);
	free(b);
}

Test(npz, numpy_savez_compressed)
{
	struct trib_st st;
	unsigned char *b;
	const struct trib_tensor *q, *h, *d;
	float f[4];
	uint16_t hv[2];

	/* Without room for the inflated members: -ENOSPC, saying so. */
	cr_assert_eq(load(np_savez_compressed, sizeof(np_savez_compressed), 64, &st, &b), -ENOSPC);
	cr_assert_not_null(strstr(why, "exceed"), "%s", why);
	free(b);
	cr_assert_eq(load(np_savez_compressed, sizeof(np_savez_compressed), 4096, &st, &b), 0,
		     "%s", why);
	q = find(&st, "q");
	h = find(&st, "h");
	d = find(&st, "d");
	cr_assert(q && h && d);
	cr_assert_eq(q->dtype, TRIB_DTYPE_I8);
	cr_assert_eq(memcmp(b + q->data_begin, "\x01\xfe\x7f", 3), 0);
	cr_assert_eq(h->dtype, TRIB_DTYPE_F16);
	memcpy(hv, b + h->data_begin, 4);
	cr_assert(hv[0] == 0x3800 && hv[1] == 0xbc00);
	cr_assert_eq(d->dtype, TRIB_DTYPE_F32);
	cr_assert_eq(d->data_begin % 64, 0);
	cr_assert_geq(d->data_begin, (sizeof(np_savez_compressed) + 63) & ~63u);
	memcpy(f, b + d->data_begin, 16);
	for (int i = 0; i < 4; i++)
		cr_assert(f[i] == i / 4.0f);
	trib_st_free(&st);
	free(b);
}

Test(npz, write_then_load)
{
	struct trib_tensor schema[2] = { { .name = "layer.w", .ndim = 2, .shape = { 3, 2 },
					   .n_elem = 6 },
					 { .name = "b", .ndim = 1, .shape = { 5 }, .n_elem = 5 } };
	float data[11];
	uint64_t size = trib_npz_size(schema, 2);
	unsigned char *out = malloc(size), *b;
	struct trib_st st;

	for (int i = 0; i < 11; i++)
		data[i] = (float)i - 3.5f;
	cr_assert_gt(size, 0);
	trib_npz_write(schema, 2, data, out);
	cr_assert_eq(load(out, size, 0, &st, &b), 0, "%s", why);
	cr_assert_eq(st.ntensors, 2);
	cr_assert_str_eq(st.tensors[0].name, "layer.w");
	cr_assert_eq(st.tensors[0].shape[1], 2);
	cr_assert_eq(memcmp(b + st.tensors[0].data_begin, data, 24), 0);
	cr_assert_eq(memcmp(b + st.tensors[1].data_begin, data + 6, 20), 0);
	trib_st_free(&st);
	free(b);
	free(out);
}

/* An frl model as .npz: '<i4' members, the same size as float32's, read back as I32. */
Test(npz, write_i32_then_load)
{
	struct trib_tensor schema[2] = { { .name = "w", .ndim = 2, .shape = { 2, 2 }, .n_elem = 4 },
					 { .name = "b", .ndim = 1, .shape = { 3 }, .n_elem = 3 } };
	int32_t data[7] = { 3, 1, 0, 2, 2, 0, 1 };
	uint64_t size = trib_npz_size(schema, 2);
	unsigned char *out = malloc(size), *b;
	struct trib_st st;

	trib_npz_write_dtype(schema, 2, TRIB_DTYPE_I32, data, out);
	cr_assert_eq(load(out, size, 0, &st, &b), 0, "%s", why);
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_I32);
	cr_assert_eq(st.tensors[1].dtype, TRIB_DTYPE_I32);
	cr_assert_eq(memcmp(b + st.tensors[0].data_begin, data, 16), 0);
	cr_assert_eq(memcmp(b + st.tensors[1].data_begin, data + 4, 12), 0);
	trib_st_free(&st);
	free(b);
}

/* An I32 schema entry (a flora model's used rank) is written as an int32 member. */
Test(npz, write_i32_member)
{
	struct trib_tensor schema[2] = { { .name = "a", .dtype = TRIB_DTYPE_F32, .ndim = 1,
					   .shape = { 2 }, .n_elem = 2 },
					 { .name = "a.rank", .dtype = TRIB_DTYPE_I32, .ndim = 1,
					   .shape = { 1 }, .n_elem = 1 } };
	uint32_t data[3] = { 0x3f800000u, 0x40000000u, 7 };
	uint64_t size = trib_npz_size(schema, 2);
	unsigned char *out = malloc(size);
	int f4 = 0, i4 = 0;

	cr_assert_not_null(out);
	trib_npz_write(schema, 2, data, out);
	for (uint64_t i = 0; i + 6 <= size; i++) {
		f4 += !memcmp(out + i, "'<f4'", 5);
		i4 += !memcmp(out + i, "'<i4'", 5);
	}
	cr_assert(f4 == 1 && i4 == 1, "f4 %d i4 %d", f4, i4);
	free(out);
}

/* --- hostile archives, built by hand --- */

struct zm {
	const char *name;
	uint16_t method, flags;
	const unsigned char *payload; /* stored: the .npy; deflated: its deflate stream */
	size_t plen;
	uint32_t size, crc;
};

static void p16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void p32(unsigned char *p, uint32_t v)
{
	p16(p, v & 0xffff);
	p16(p + 2, v >> 16);
}

/* A zip of @n members into @out; returns its length. */
static size_t zip(const struct zm *m, size_t n, unsigned char *out)
{
	unsigned char cd[4096];
	size_t pos = 0, cl = 0;

	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(m[i].name);
		unsigned char *l = out + pos, *c = cd + cl;

		memset(l, 0, 30);
		p32(l, 0x04034b50);
		p16(l + 4, 20);
		p16(l + 6, m[i].flags);
		p16(l + 8, m[i].method);
		p32(l + 14, m[i].crc);
		p32(l + 18, (uint32_t)m[i].plen);
		p32(l + 22, m[i].size);
		p16(l + 26, (unsigned)nl);
		memcpy(l + 30, m[i].name, nl);
		memcpy(l + 30 + nl, m[i].payload, m[i].plen);
		memset(c, 0, 46);
		p32(c, 0x02014b50);
		p16(c + 8, m[i].flags);
		p16(c + 10, m[i].method);
		p32(c + 16, m[i].crc);
		p32(c + 20, (uint32_t)m[i].plen);
		p32(c + 24, m[i].size);
		p16(c + 28, (unsigned)nl);
		p32(c + 42, (uint32_t)pos);
		memcpy(c + 46, m[i].name, nl);
		pos += 30 + nl + m[i].plen;
		cl += 46 + nl;
	}
	memcpy(out + pos, cd, cl);
	memset(out + pos + cl, 0, 22);
	p32(out + pos + cl, 0x06054b50);
	p16(out + pos + cl + 8, (unsigned)n);
	p16(out + pos + cl + 10, (unsigned)n);
	p32(out + pos + cl + 12, (uint32_t)cl);
	p32(out + pos + cl + 16, (uint32_t)pos);
	return pos + cl + 22;
}

static size_t deflate_raw(const unsigned char *in, size_t len, unsigned char *out, size_t cap)
{
	z_stream z = { 0 };

	cr_assert_eq(deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	deflateEnd(&z);
	return cap - z.avail_out;
}

static unsigned char npy4[128 + 16];
static size_t npy4_len;

static void setup_npy4(void)
{
	float f[4] = { 1, 2, 3, 4 };

	npy4_len = make_npy(npy4, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
			    128, f, sizeof(f));
}

static void expect_refused(const unsigned char *zipb, size_t len, const char *word)
{
	struct trib_st st;
	unsigned char *b;
	int err = load(zipb, len, 1 << 20, &st, &b);

	cr_assert_eq(err, -EINVAL, "accepted (%d), want '%s'", err, word);
	cr_assert_not_null(strstr(why, word), "got '%s', want '%s'", why, word);
	cr_assert_null(st.tensors);
	free(b);
}

Test(npz, hostile, .init = setup_npy4)
{
	static unsigned char out[1 << 21], big[1 << 20], defl[1 << 20];
	uint32_t crc = (uint32_t)crc32(0, npy4, (uInt)npy4_len);
	struct zm m[3] = { { "a.npy", 0, 0, npy4, npy4_len, (uint32_t)npy4_len, crc },
			   { "b.npy", 0, 0, npy4, npy4_len, (uint32_t)npy4_len, crc } };
	size_t n, dl;

	/* The well-formed base case loads. */
	{
		struct trib_st st;
		unsigned char *b;

		n = zip(m, 2, out);
		cr_assert_eq(load(out, n, 0, &st, &b), 0, "%s", why);
		trib_st_free(&st);
		free(b);
	}
	m[1].name = "a.npy";
	expect_refused(out, zip(m, 2, out), "appears twice");
	m[1].name = "b.npy";
	m[1].crc ^= 1;
	expect_refused(out, zip(m, 2, out), "CRC-32");
	m[1].crc ^= 1;
	m[1].flags = 1;
	expect_refused(out, zip(m, 2, out), "encrypted");
	m[1].flags = 0;
	m[1].method = 12; /* bzip2 */
	expect_refused(out, zip(m, 2, out), "method 12");
	m[1].method = 0;
	m[1].name = "b.pkl";
	expect_refused(out, zip(m, 2, out), "names are");
	m[1].name = ".npy";
	expect_refused(out, zip(m, 2, out), "names are");
	m[1].name = "b.npy";
	m[1].size = (uint32_t)npy4_len + 1;
	expect_refused(out, zip(m, 2, out), "compressed size");
	m[1].size = (uint32_t)npy4_len;
	/* Sizes that say zip64. */
	m[1].size = 0xffffffffu;
	m[1].plen = npy4_len;
	n = zip(m, 2, out);
	p32(out + n - 22 - 51 + 20, 0xffffffffu); /* b's compressed size in the directory */
	expect_refused(out, n, "zip64");
	m[1].size = (uint32_t)npy4_len;
	/* A zip64 end-of-directory locator just before the end record. */
	{
		size_t base = zip(m, 2, out);
		unsigned char end[22];

		memcpy(end, out + base - 22, 22);
		memset(out + base - 22, 0, 20);
		p32(out + base - 22, 0x07064b50);
		memcpy(out + base - 2, end, 22);
		expect_refused(out, base + 20, "zip64");
	}
	/* Multi-disk. */
	n = zip(m, 2, out);
	p16(out + n - 22 + 4, 1);
	expect_refused(out, n, "multi-disk");
	/* A local header that is not the member's: b's entry points at a's header. */
	n = zip(m, 2, out);
	p32(out + n - 22 - 51 + 42, 0);
	expect_refused(out, n, "local header");
	/* Members that overlap: a's declared bytes run into b's local header. */
	n = zip(m, 2, out);
	p32(out + n - 22 - 2 * 51 + 20, (uint32_t)npy4_len + 10);
	p32(out + n - 22 - 2 * 51 + 24, (uint32_t)npy4_len + 10);
	expect_refused(out, n, "overlap");
	/* No end record; the directory past the end record. */
	n = zip(m, 2, out);
	expect_refused(out, n - 1, "not a zip");
	p32(out + n - 22 + 16, (uint32_t)n);
	expect_refused(out, n, "runs past");
	/* Deflated: a bomb (more than the declared size), truncated, trailing bytes. */
	memcpy(big, npy4, npy4_len);
	dl = deflate_raw(big, sizeof(big), defl, sizeof(defl));
	m[1] = (struct zm){ "b.npy", 8, 0, defl, dl, (uint32_t)npy4_len, crc };
	expect_refused(out, zip(m, 2, out), "zip bomb");
	dl = deflate_raw(npy4, npy4_len, defl, sizeof(defl));
	m[1].plen = dl - 3;
	expect_refused(out, zip(m, 2, out), "truncated");
	defl[dl] = 0x55;
	m[1].plen = dl + 1;
	expect_refused(out, zip(m, 2, out), "after its deflate stream");
	m[1].plen = dl;
	m[1].size = (uint32_t)npy4_len - 4;
	expect_refused(out, zip(m, 2, out), "declares");
	m[1].size = (uint32_t)npy4_len;
	defl[dl / 2] ^= 0xff;
	n = zip(m, 2, out);
	{
		struct trib_st st;
		unsigned char *b;

		cr_assert_eq(load(out, n, 1 << 20, &st, &b), -EINVAL, "corrupt deflate accepted");
		free(b);
	}
	/* An object array inside a member: refused, naming the member. */
	{
		unsigned char obj[128];
		size_t ol = make_npy(obj, "{'descr': '|O', 'fortran_order': False, 'shape': (0,), }",
				     128, NULL, 0);

		m[1] = (struct zm){ "b.npy", 0, 0, obj, ol, (uint32_t)ol,
				    (uint32_t)crc32(0, obj, (uInt)ol) };
		expect_refused(out, zip(m, 2, out), "member 'b.npy': .npy descr '|O'");
	}
	/* A deflated member whose .npy header length is 0 or 1 (shorter than what is inflated
	 * first to read it). */
	for (unsigned hl = 0; hl < 2; hl++) {
		unsigned char tiny[64];

		memcpy(tiny, "\x93NUMPY\x01\x00", 8);
		tiny[8] = (unsigned char)hl;
		tiny[9] = 0;
		memset(tiny + 10, '{', sizeof(tiny) - 10);
		dl = deflate_raw(tiny, sizeof(tiny), defl, sizeof(defl));
		m[1] = (struct zm){ "b.npy", 8, 0, defl, dl, sizeof(tiny),
				    (uint32_t)crc32(0, tiny, sizeof(tiny)) };
		expect_refused(out, zip(m, 2, out), "too short");
	}
	/* No members. */
	expect_refused(out, zip(m, 0, out), "no members");
}

/* Every allocation of a load fails in turn: -ENOMEM (or a refusal from zlib's init), no leak. */
Test(npz, every_allocation_failure_unwinds)
{
	const unsigned char *inputs[] = { np_savez, np_savez_compressed };
	size_t lens[] = { sizeof(np_savez), sizeof(np_savez_compressed) };

	for (size_t in = 0; in < 2; in++) {
		for (long k = 0; k < 64; k++) {
			struct trib_st st;
			unsigned char *b;
			unsigned long f0 = trib_alloc_failures();
			int err;

			trib_alloc_fail_after(k);
			err = load(inputs[in], lens[in], 4096, &st, &b);
			trib_alloc_fail_after(-1);
			free(b);
			if (trib_alloc_failures() == f0) {
				cr_assert_eq(err, 0, "input %zu, no failure at %ld: %d %s", in, k,
					     err, why);
				cr_assert_gt(st.ntensors, 1);
				trib_st_free(&st);
				break; /* past the last allocation */
			}
			cr_assert_eq(err, -ENOMEM, "input %zu, allocation %ld failed: %d %s", in, k,
				     err, why);
			cr_assert_null(st.tensors);
		}
	}
}
