// SPDX-License-Identifier: MIT
/* libFuzzer target: arbitrary bytes as an .npy and an .npz body, and as the one member of an npz. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "trib_npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Refusals are bounded, NUL-terminated and name no control bytes but the ones we print. */
static void check_why(const char *why)
{
	if (strnlen(why, TRIB_NPY_WHY_MAX) == TRIB_NPY_WHY_MAX)
		abort();
}

/* Every accepted tensor lies inside the body or the region, aligned to its element size. */
static void check_st(const struct trib_st *st, uint64_t limit)
{
	for (size_t i = 0; i < st->ntensors; i++) {
		const struct trib_tensor *t = &st->tensors[i];

		if (t->data_end < t->data_begin || t->data_end > limit)
			abort();
		if (t->data_begin % (t->dtype == 4 ? 1 : t->dtype == 1 ? 4 : 2))
			abort();
	}
}

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v & 0xffff);
	put16(p + 2, v >> 16);
}

/*
 * The input as the one member "t.npy" of a well-formed archive (@method 0 or 8, the right
 * CRC-32 and sizes): mutations then reach the .npy header and the inflate path instead of
 * dying on the zip's checks. Returns the archive (free) and its length in *len, or NULL.
 */
static uint8_t *wrap(const uint8_t *data, size_t size, unsigned method, size_t *len)
{
	uLong bound = compressBound((uLong)size) + 16;
	uint8_t *out = malloc(30 + 5 + bound + 46 + 5 + 22);
	uint32_t crc = (uint32_t)crc32(0, data, (uInt)size);
	size_t clen = size;
	z_stream z = { 0 };

	if (!out)
		return NULL;
	if (method == 8) {
		if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
			free(out);
			return NULL;
		}
		z.next_in = (Bytef *)(uintptr_t)data;
		z.avail_in = (uInt)size;
		z.next_out = out + 35;
		z.avail_out = (uInt)bound;
		if (deflate(&z, Z_FINISH) != Z_STREAM_END)
			abort();
		clen = bound - z.avail_out;
		deflateEnd(&z);
	} else {
		memcpy(out + 35, data, size);
	}
	memset(out, 0, 30);
	put32(out, 0x04034b50);
	put16(out + 8, method);
	put32(out + 14, crc);
	put32(out + 18, (uint32_t)clen);
	put32(out + 22, (uint32_t)size);
	put16(out + 26, 5);
	memcpy(out + 30, "t.npy", 5);
	{
		uint8_t *c = out + 35 + clen, *e = c + 51;

		memset(c, 0, 46);
		put32(c, 0x02014b50);
		put16(c + 10, method);
		put32(c + 16, crc);
		put32(c + 20, (uint32_t)clen);
		put32(c + 24, (uint32_t)size);
		put16(c + 28, 5);
		memcpy(c + 46, "t.npy", 5);
		memset(e, 0, 22);
		put32(e, 0x06054b50);
		put16(e + 8, 1);
		put16(e + 10, 1);
		put32(e + 12, 51);
		put32(e + 16, (uint32_t)(35 + clen));
		*len = 35 + clen + 51 + 22;
	}
	return out;
}

/* @zip (@len bytes) loaded as an .npz body with 64 KiB of room; checks as below. */
static void load_npz(const uint8_t *zip, size_t len)
{
	size_t wire = (len + 63) & ~(size_t)63, room = 1 << 16;
	uint8_t *buf = aligned_alloc(64, wire + room + 64);
	char why[TRIB_NPY_WHY_MAX] = "";
	struct trib_st st;
	uint64_t used = 0;
	int err;

	if (!buf)
		return;
	memcpy(buf, zip, len);
	err = trib_npz_load(buf, len, buf + wire, room, &st, &used, why, sizeof(why));
	if (err && err != -EINVAL && err != -ENOSPC && err != -ENOMEM)
		abort();
	if (used > room)
		abort();
	if (!err)
		check_st(&st, wire + room);
	else
		check_why(why);
	trib_st_free(&st);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = aligned_alloc(64, ((size + 63) & ~(size_t)63) + 64);
	char why[TRIB_NPY_WHY_MAX] = "";
	struct trib_st st;
	int err;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	err = trib_npy_load(buf, size, "t", &st, why, sizeof(why));
	if (err && err != -EINVAL && err != -ENOMEM)
		abort();
	if (!err)
		check_st(&st, size);
	else
		check_why(why);
	trib_st_free(&st);
	free(buf);
	load_npz(data, size);
	for (unsigned method = 0; method <= 8; method += 8) {
		size_t zl;
		uint8_t *zip = wrap(data, size, method, &zl);

		if (zip)
			load_npz(zip, zl);
		free(zip);
	}
	return 0;
}
