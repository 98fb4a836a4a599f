// SPDX-License-Identifier: MIT
/* libFuzzer target: arbitrary bytes as an .npy and as an .npz update body. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t wire = (size + 63) & ~(size_t)63, room = 1 << 16;
	uint8_t *buf = aligned_alloc(64, wire + room + 64);
	char why[TRIB_NPY_WHY_MAX] = "";
	struct trib_st st;
	uint64_t used = 0;
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
	memcpy(buf, data, size);
	err = trib_npz_load(buf, size, buf + wire, room, &st, &used, why, sizeof(why));
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
	return 0;
}
