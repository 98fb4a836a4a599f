// SPDX-License-Identifier: MIT
/* Reference-counted byte strings. */
#include "trib_blob.h"

#include <stdint.h>

#include "trib_alloc.h"

struct trib_blob *trib_blob_new(size_t len)
{
	size_t align = len >= TRIB_BLOB_ALIGN_MIN ? TRIB_BLOB_ALIGN : 0;
	char *raw;
	struct trib_blob *b;
	size_t pad = 0;

	if (len > SIZE_MAX - sizeof(*b) - align)
		return NULL;
	raw = trib_malloc(sizeof(*b) + len + align);
	if (!raw)
		return NULL;
	/* raw + pad + sizeof(*b) on the boundary; sizeof(*b) is a multiple of 8, so b stays aligned. */
	if (align)
		pad = (align - ((uintptr_t)raw + sizeof(*b)) % align) % align;
	b = (struct trib_blob *)(void *)(raw + pad);
	b->pad = pad;
	b->refs = 1;
	b->version = 0;
	b->len = len;
	return b;
}

struct trib_blob *trib_blob_hold(struct trib_blob *b)
{
	b->refs++;
	return b;
}

void trib_blob_release(struct trib_blob *b)
{
	if (b && --b->refs == 0)
		trib_free((char *)b - b->pad);
}
