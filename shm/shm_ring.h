/* SPDX-License-Identifier: MIT */
/* A single-producer single-consumer ring of descriptors that lives in shared memory. */
#ifndef SHM_RING_H
#define SHM_RING_H

#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"
#include "shm_arena_abi.h"

/*
 * A view of a struct shm_ring_hdr (see shm_arena_abi.h for its layout and the
 * index invariant). Exactly one process or thread pushes and exactly one pops;
 * each side may be in a different process that maps the same memory.
 */
struct shm_ring;

/* Bytes that a ring of @capacity entries occupies, or 0 if @capacity is not a power of two. */
size_t shm_ring_bytes(uint32_t capacity);

/*
 * Lay out an empty ring of @capacity entries (a power of two, 1 .. 2^31) at
 * @mem, which must be 64-byte aligned and @bytes >= shm_ring_bytes(capacity)
 * long. *@out is a view of @mem, which the caller still owns: nothing to free.
 * Returns 0 or -EINVAL.
 */
int shm_ring_init(void *mem, size_t bytes, uint32_t capacity, struct shm_ring **out);

/*
 * View the ring that another process initialised at @mem (@bytes long) and
 * check its header. *@out is a view of @mem, still owned by the caller.
 * Returns 0, -EINVAL (misaligned or too short), or -EBADMSG (not a ring).
 */
int shm_ring_attach(void *mem, size_t bytes, struct shm_ring **out);

/* Producer: copy @d in. Returns 0 or -EAGAIN when the ring is full. */
int shm_ring_push(struct shm_ring *r, const struct shm_desc *d);
/* Consumer: copy the oldest entry to @d. Returns 0 or -EAGAIN when the ring is empty. */
int shm_ring_pop(struct shm_ring *r, struct shm_desc *d);
/* Producer: push up to @n entries of @d in order; returns how many went in. */
unsigned shm_ring_push_burst(struct shm_ring *r, const struct shm_desc *d, unsigned n);
/* Consumer: pop up to @n entries into @d in order; returns how many came out. */
unsigned shm_ring_pop_burst(struct shm_ring *r, struct shm_desc *d, unsigned n);
/* Entries in the ring; exact only when neither side is moving. */
uint32_t shm_ring_count(const struct shm_ring *r);
uint32_t shm_ring_capacity(const struct shm_ring *r);

/* Test hook: move both indexes of an empty ring to @idx (to test the 2^32 wrap). */
int shm_ring__test_set_index(struct shm_ring *r, uint32_t idx);

#endif
