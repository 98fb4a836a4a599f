/* SPDX-License-Identifier: MIT */
/* The node's huge-page arena and its cross-process slot allocator. */
#ifndef SHM_ARENA_H
#define SHM_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_arena_abi.h"

/* Flags of shm_arena_create(). */
#define SHM_ARENA_NO_HUGE 0x1u    /* use normal pages; no huge-page attempt, no warning */
#define SHM_ARENA_NO_RESERVE 0x2u /* never grow the 2 MiB huge page pool (nr_hugepages) */

/* A process's handle on an arena; opaque except for the prefix below. */
struct shm_arena;

/*
 * The first member of every struct shm_arena, public so that offset <-> pointer
 * conversion is an inline add. Read-only for callers.
 */
struct shm_arena_pub {
	uint8_t *base; /* where this process mapped the arena */
	uint64_t size; /* bytes mapped: the whole memfd, header region included */
};

/*
 * Create an arena whose slot area holds at least @size bytes (rounded up to
 * 2 MiB), backed by a CLOEXEC memfd of 2 MiB huge pages, mapped MAP_SHARED and
 * populated. Without huge pages (none free and none can be reserved, or
 * hugetlb unsupported) it falls back to normal pages with one warning, unless
 * @flags has SHM_ARENA_NO_HUGE, which asks for normal pages outright. As root
 * and without SHM_ARENA_NO_RESERVE it raises the 2 MiB pool's nr_hugepages by
 * what it lacks and gives those pages back in shm_arena_destroy().
 * Returns 0 or -EINVAL (size 0 or too large), -ENOMEM, or another -errno.
 * On success *@out is owned by the caller, who releases it with shm_arena_destroy().
 */
int shm_arena_create(size_t size, unsigned flags, struct shm_arena **out);

/*
 * Map the arena behind @fd (received from its creator) and check its header:
 * magic, SHM_ABI_VERSION, and that its size matches the memfd's.
 * Takes ownership of @fd, also on failure (it is closed then).
 * Returns 0 or -EBADMSG (not an arena, or a different ABI), -ENOMEM, -errno.
 * On success *@out is owned by the caller (release with shm_arena_destroy()).
 */
int shm_arena_attach(int fd, struct shm_arena **out);

/*
 * Unmap and close @a and free the handle; the creator (in the creating
 * process) also gives back the huge pages it reserved. Accepts NULL.
 * Live slots are not checked: the memory goes away with the last mapping.
 */
void shm_arena_destroy(struct shm_arena *a);

/* The memfd; still owned by @a (dup it to keep it, pass it with shm_fd_send()). */
int shm_arena_fd(const struct shm_arena *a);
/* Start of the mapping in this process; owned by @a, valid until shm_arena_destroy(). */
void *shm_arena_base(const struct shm_arena *a);
/* Bytes mapped, header region included: valid offsets are < this. */
size_t shm_arena_size(const struct shm_arena *a);
/* True when the arena is backed by 2 MiB huge pages. */
bool shm_arena_is_huge(const struct shm_arena *a);

/* Pointer in this process to arena offset @off; the memory belongs to the arena. */
static inline void *shm_arena_ptr(const struct shm_arena *a, uint64_t off)
{
	return ((const struct shm_arena_pub *)(const void *)a)->base + off;
}

/* Arena offset of @p, which must point into @a's mapping. */
static inline uint64_t shm_arena_off(const struct shm_arena *a, const void *p)
{
	const struct shm_arena_pub *pub = (const void *)a;

	return (uint64_t)((const uint8_t *)p - pub->base);
}

/*
 * Allocate a run of contiguous SHM_CHUNK chunks holding @len bytes; *@off gets
 * its arena offset, a multiple of SHM_CHUNK. Safe against concurrent callers in
 * other processes. The slot is owned by the caller, or by whoever it hands the
 * offset on to (see struct shm_desc), until shm_slot_free().
 * Returns 0, -EINVAL (@len is 0 or larger than the slot area), -ENOSPC (no
 * free run fits: the gateway answers 503), or -ENOTRECOVERABLE.
 */
int shm_slot_alloc(struct shm_arena *a, size_t len, uint64_t *off);

/*
 * Release the allocation that starts at @off.
 * Returns 0, or -EINVAL when @off is not the start of a live allocation
 * (a double free or a stray offset: reported, never a crash).
 */
int shm_slot_free(struct shm_arena *a, uint64_t off);

/* Bytes of the allocation starting at @off (a multiple of SHM_CHUNK), or 0 if none. */
size_t shm_slot_len(struct shm_arena *a, uint64_t off);

/* Bytes in live allocations, bytes of the slot area, and the number of live allocations. */
void shm_arena_usage(const struct shm_arena *a, uint64_t *used_bytes, uint64_t *total_bytes,
		     uint32_t *live_slots);

/*
 * Test hooks, not for production code.
 * shm_arena__test_lock() takes the allocator lock and returns holding it, so
 * that a child can _exit() as if killed while holding it.
 * shm_arena__test_alloc_partial()/free_partial() run the first @steps steps
 * of an allocation or free (see shm_arena.c) and return holding the lock.
 */
int shm_arena__test_lock(struct shm_arena *a);
int shm_arena__test_alloc_partial(struct shm_arena *a, size_t len, unsigned steps);
int shm_arena__test_free_partial(struct shm_arena *a, uint64_t off, unsigned steps);
/*
 * Whether this process fills each slot it frees with SHM_ARENA_POISON bytes
 * from now on (the default: on in sanitized builds); returns the old setting.
 */
#define SHM_ARENA_POISON 0xff
bool shm_arena__test_poison(bool on);
/* Times a dead lock owner's state has been repaired in this arena. */
uint64_t shm_arena__recoveries(const struct shm_arena *a);

#endif
