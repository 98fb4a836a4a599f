// SPDX-License-Identifier: MIT
/* libFuzzer target: trib_st_parse on arbitrary bytes, then match and a write/parse round trip. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trib_safetensors.h"
#include "trib_dtype.h"
#include "trib_alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writing the parsed tensors back out and parsing that must give the same names and shapes. */
static void round_trip(const struct trib_st *st)
{
	struct trib_st again;
	uint64_t data_len = 0;
	char *hdr, *file;
	size_t hdr_len;
	const char *why;

	for (size_t i = 0; i < st->ntensors; i++) {
		uint64_t b;

		/* Written as F32: skip files whose F32 data would be absurdly large. */
		if (__builtin_mul_overflow(st->tensors[i].n_elem, (uint64_t)4, &b) ||
		    __builtin_add_overflow(data_len, b, &data_len) || data_len > (1u << 20))
			return;
	}
	/* Every parsed name came through jansson, so it is UTF-8 and can be written. */
	if (trib_st_write_header(st->tensors, st->ntensors, "{\"k\":\"v\"}", &hdr, &hdr_len))
		abort();
	file = calloc(1, hdr_len + data_len);
	if (!file)
		abort();
	memcpy(file, hdr, hdr_len);
	trib_free(hdr);
	if (trib_st_parse(file, hdr_len + data_len, &again, &why) != 0 ||
	    again.ntensors != st->ntensors || again.data_off != hdr_len)
		abort();
	for (size_t i = 0; i < st->ntensors; i++) {
		const struct trib_tensor *a = &st->tensors[i], *b = &again.tensors[i];

		if (strcmp(a->name, b->name) || a->ndim != b->ndim || a->n_elem != b->n_elem ||
		    memcmp(a->shape, b->shape, a->ndim * sizeof(a->shape[0])))
			abort();
	}
	trib_st_free(&again);
	free(file);
}

/* trib_st_explain() on what failed: bounded, NUL-terminated, no control bytes, both modes. */
static void check_explain(const struct trib_st *st, const struct trib_tensor *schema, size_t n,
			  const char *why)
{
	char msg[TRIB_ST_EXPLAIN_MAX + 16];

	for (int compressed = 0; compressed < 2; compressed++) {
		size_t len;

		memset(msg, 'x', sizeof(msg));
		trib_st_explain(st, schema, n, compressed, why, msg, sizeof(msg));
		len = strnlen(msg, sizeof(msg));
		if (len >= TRIB_ST_EXPLAIN_MAX || !len)
			abort();
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)msg[i] < 0x20)
				abort();
	}
}

/* Parse one candidate file and check everything that was accepted. */
static void one(const uint8_t *data, size_t size)
{
	static const struct trib_tensor schema[2] = {
		{ .name = "w", .dtype = TRIB_DTYPE_F32, .ndim = 2, .shape = { 2, 3 }, .n_elem = 6 },
		{ .name = "b", .dtype = TRIB_DTYPE_F32, .ndim = 1, .shape = { 3 }, .n_elem = 3 },
	};
	uint64_t offs[2];
	struct trib_st st;
	const char *why = NULL;
	int err;

	err = trib_st_parse(data, size, &st, &why);
	if (err == -EINVAL && (!why || !*why))
		abort();
	if (err != 0 && err != -EINVAL && err != -ENOMEM)
		abort();
	if (err == -EINVAL)
		check_explain(&st, NULL, 0, why);
	if (err)
		return;
	if (st.data_off > size)
		abort();
	for (size_t i = 0; i < st.ntensors; i++) {
		const struct trib_tensor *t = &st.tensors[i];

		if (t->data_begin > t->data_end || t->data_end > size - st.data_off ||
		    !t->name[0] || strlen(t->name) >= TRIB_ST_NAME_MAX ||
		    t->data_end - t->data_begin != t->n_elem * trib_dtype_size(t->dtype))
			abort();
	}
	if (trib_st_match(&st, schema, 2, offs, &why) == 0) {
		if (offs[0] + 24 > size || offs[1] + 12 > size)
			abort();
	} else {
		check_explain(&st, schema, 2, why);
	}
	round_trip(&st);
	trib_st_free(&st);
}

/*
 * The input as a file, and again as "JSON, NUL, data" with the length prefix
 * computed, so that mutations of the JSON are not all lost to a stale prefix.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t jlen = nul ? (size_t)(nul - data) : size;
	size_t dlen = nul ? size - jlen - 1 : 0;
	uint8_t *file;

	one(data, size);
	file = malloc(8 + jlen + dlen);
	if (!file)
		return 0;
	for (int i = 0; i < 8; i++)
		file[i] = (uint8_t)((uint64_t)jlen >> (8 * i));
	memcpy(file + 8, data, jlen);
	if (dlen)
		memcpy(file + 8 + jlen, nul + 1, dlen);
	one(file, 8 + jlen + dlen);
	free(file);
	return 0;
}
