// SPDX-License-Identifier: MIT
/* A single-producer single-consumer descriptor ring in shared memory (layout: shm_arena_abi.h). */
#include "shm_ring.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* struct shm_ring is never defined: it names a struct shm_ring_hdr in shared memory. */
static inline struct shm_ring_hdr *hdr_of(struct shm_ring *r)
{
	return (struct shm_ring_hdr *)(void *)r;
}

static inline const struct shm_ring_hdr *chdr_of(const struct shm_ring *r)
{
	return (const struct shm_ring_hdr *)(const void *)r;
}

static bool is_pow2(uint32_t x)
{
	return x && !(x & (x - 1));
}

size_t shm_ring_bytes(uint32_t capacity)
{
	if (!is_pow2(capacity) || capacity > (1u << 31))
		return 0;
	return sizeof(struct shm_ring_hdr) + (size_t)capacity * sizeof(struct shm_desc);
}

/* @mem stays the caller's; *out is a view of it. */
int shm_ring_init(void *mem, size_t bytes, uint32_t capacity, struct shm_ring **out)
{
	struct shm_ring_hdr *h = mem;
	size_t need = shm_ring_bytes(capacity);

	if (!mem || !need || bytes < need || (uintptr_t)mem % SHM_CACHELINE)
		return -EINVAL;
	memset(h, 0, sizeof(*h));
	h->version = SHM_ABI_VERSION;
	h->desc_size = SHM_DESC_SIZE;
	h->capacity = capacity;
	h->mask = capacity - 1;
	atomic_init(&h->head, 0);
	atomic_init(&h->tail, 0);
	/* The magic last, released: a peer that sees it sees a complete header. */
	atomic_thread_fence(memory_order_release);
	h->magic = SHM_RING_MAGIC;
	*out = (struct shm_ring *)mem;
	return 0;
}

/* @mem stays the caller's; *out is a view of it. */
int shm_ring_attach(void *mem, size_t bytes, struct shm_ring **out)
{
	const struct shm_ring_hdr *h = mem;

	if (!mem || (uintptr_t)mem % SHM_CACHELINE || bytes < sizeof(*h))
		return -EINVAL;
	if (h->magic != SHM_RING_MAGIC || h->version != SHM_ABI_VERSION ||
	    h->desc_size != SHM_DESC_SIZE || !shm_ring_bytes(h->capacity) ||
	    h->mask != h->capacity - 1)
		return -EBADMSG;
	atomic_thread_fence(memory_order_acquire);
	if (bytes < shm_ring_bytes(h->capacity))
		return -EINVAL;
	*out = (struct shm_ring *)mem;
	return 0;
}

/*
 * Free entries as the producer sees them, reading the consumer's line only
 * when the cached tail says fewer than @want are free.
 */
static inline uint32_t prod_room(struct shm_ring_hdr *h, uint32_t head, uint32_t want)
{
	uint32_t room = h->capacity - (head - h->tail_cache);

	if (room < want) {
		h->tail_cache = atomic_load_explicit(&h->tail, memory_order_acquire);
		room = h->capacity - (head - h->tail_cache);
	}
	return room;
}

/* Filled entries as the consumer sees them; the mirror of prod_room(). */
static inline uint32_t cons_avail(struct shm_ring_hdr *h, uint32_t tail, uint32_t want)
{
	uint32_t avail = h->head_cache - tail;

	if (avail < want) {
		h->head_cache = atomic_load_explicit(&h->head, memory_order_acquire);
		avail = h->head_cache - tail;
	}
	return avail;
}

unsigned shm_ring_push_burst(struct shm_ring *r, const struct shm_desc *d, unsigned n)
{
	struct shm_ring_hdr *h = hdr_of(r);
	/* Only the producer writes head, so a relaxed load reads its own last store. */
	uint32_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
	uint32_t room = prod_room(h, head, n);
	unsigned i;

	if (n > room)
		n = room;
	for (i = 0; i < n; i++)
		h->desc[(head + i) & h->mask] = d[i];
	/* Release: the entries are written before the consumer can see the new head. */
	if (n)
		atomic_store_explicit(&h->head, head + n, memory_order_release);
	return n;
}

unsigned shm_ring_pop_burst(struct shm_ring *r, struct shm_desc *d, unsigned n)
{
	struct shm_ring_hdr *h = hdr_of(r);
	uint32_t tail = atomic_load_explicit(&h->tail, memory_order_relaxed);
	uint32_t avail = cons_avail(h, tail, n);
	unsigned i;

	if (n > avail)
		n = avail;
	for (i = 0; i < n; i++)
		d[i] = h->desc[(tail + i) & h->mask];
	/* Release: the entries are read before the producer may overwrite them. */
	if (n)
		atomic_store_explicit(&h->tail, tail + n, memory_order_release);
	return n;
}

int shm_ring_push(struct shm_ring *r, const struct shm_desc *d)
{
	return shm_ring_push_burst(r, d, 1) ? 0 : -EAGAIN;
}

int shm_ring_pop(struct shm_ring *r, struct shm_desc *d)
{
	return shm_ring_pop_burst(r, d, 1) ? 0 : -EAGAIN;
}

uint32_t shm_ring_count(const struct shm_ring *r)
{
	/* A count changes no state; the cast only drops const for the atomic loads. */
	struct shm_ring_hdr *h = hdr_of((struct shm_ring *)r);
	uint32_t tail = atomic_load_explicit(&h->tail, memory_order_acquire);
	uint32_t head = atomic_load_explicit(&h->head, memory_order_acquire);
	uint32_t n = head - tail;

	/* Read from a third party the two loads can straddle a pop; clamp to the invariant. */
	return n > h->capacity ? h->capacity : n;
}

uint32_t shm_ring_capacity(const struct shm_ring *r)
{
	return chdr_of(r)->capacity;
}

int shm_ring__test_set_index(struct shm_ring *r, uint32_t idx)
{
	struct shm_ring_hdr *h = hdr_of(r);

	if (atomic_load(&h->head) != atomic_load(&h->tail))
		return -EBUSY;
	atomic_store(&h->head, idx);
	atomic_store(&h->tail, idx);
	h->head_cache = idx;
	h->tail_cache = idx;
	return 0;
}
