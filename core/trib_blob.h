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
	size_t pad;       /* trib_blob_new()'s: bytes of its allocation before this struct */
	char data[];
};

/* From this length on, data is TRIB_BLOB_ALIGN-aligned: a model file written with O_DIRECT. */
#define TRIB_BLOB_ALIGN_MIN (1u << 20)
#define TRIB_BLOB_ALIGN 4096u

/*
 * A blob of @len bytes (uninitialised), one reference owned by the caller; NULL if out of memory.
 * At TRIB_BLOB_ALIGN_MIN bytes or more, data starts on a TRIB_BLOB_ALIGN boundary
 * (trib_store_write_model() then writes it past the page cache).
 */
struct trib_blob *trib_blob_new(size_t len);
/* Another reference to @b (not NULL), owned by the caller. Returns @b. */
struct trib_blob *trib_blob_hold(struct trib_blob *b);
/* Drop one reference; the last one frees the blob. Accepts NULL. */
void trib_blob_release(struct trib_blob *b);

#endif
