/* SPDX-License-Identifier: MIT */
/* An immutable, reference-counted byte string: a model file kept by a job and sent to clients. */
#ifndef TRIB_BLOB_H
#define TRIB_BLOB_H

#include <stddef.h>
#include <stdint.h>

/*
 * Filled once after trib_blob_new(), then only read. Single-threaded: the
 * count is a plain integer (the event loop is the only thread that holds one).
 */
struct trib_blob {
	uint32_t refs;
	uint32_t version; /* the owner's label (a model's round); 0 from trib_blob_new() */
	size_t len;
	char data[];
};

/* A blob of @len bytes (uninitialised), one reference owned by the caller; NULL if out of memory.
 */
struct trib_blob *trib_blob_new(size_t len);
/* Another reference to @b (not NULL), owned by the caller. Returns @b. */
struct trib_blob *trib_blob_hold(struct trib_blob *b);
/* Drop one reference; the last one frees the blob. Accepts NULL. */
void trib_blob_release(struct trib_blob *b);

#endif
