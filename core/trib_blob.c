// SPDX-License-Identifier: MIT
/* Reference-counted byte strings. */
#include "trib_blob.h"

#include "trib_alloc.h"

struct trib_blob *trib_blob_new(size_t len)
{
	struct trib_blob *b = trib_malloc(sizeof(*b) + len);

	if (!b)
		return NULL;
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
		trib_free(b);
}
