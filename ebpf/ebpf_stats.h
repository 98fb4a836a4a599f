/* SPDX-License-Identifier: MIT */
/* The per-function counters map as seen from user space, without libbpf: map, take, read depth. */
#ifndef EBPF_STATS_H
#define EBPF_STATS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "ebpf_abi.h"

/*
 * mmap the fn_stats array behind @map_fd (MAP_SHARED, read-write) after
 * checking that it is the router's map (an mmapable array of EBPF_MAX_FNS
 * struct ebpf_fn_stats). @map_fd stays the caller's and may be closed after.
 * On success *@out (EBPF_MAX_FNS entries) and *@len belong to the caller, who
 * releases them with ebpf_stats_unmap(). Returns 0, -EINVAL for another map,
 * or -errno from the kernel.
 */
int ebpf_stats_map(int map_fd, struct ebpf_fn_stats **out, size_t *len);

/* Undo ebpf_stats_map(). Accepts NULL. */
void ebpf_stats_unmap(struct ebpf_fn_stats *stats, size_t len);

/*
 * A function took @n descriptors off its socket: called by the function
 * itself, after reading them, on the array it mapped. @stats is borrowed.
 */
static inline void ebpf_stats_take(struct ebpf_fn_stats *stats, uint32_t fn_id, uint64_t n)
{
	__atomic_fetch_add(&stats[fn_id & EBPF_FN_MASK].taken, n, __ATOMIC_RELAXED);
}

/* One function's counters, read consistently enough for metrics. */
struct ebpf_fn_sample {
	uint64_t msgs_in;  /* records routed to the function */
	uint64_t bytes_in; /* their bytes */
	uint64_t last_ns;  /* CLOCK_MONOTONIC ns of the last one, 0 if none */
	uint64_t depth;	   /* delivered but not yet taken */
};

/*
 * Read @fn_id's entry of the array @stats (borrowed) into *@out without
 * stopping anyone. Returns 0, or -ENOENT if the entry belongs to another id
 * (@fn_id was never added, or the entry was reset for a newer function).
 */
static inline int ebpf_stats_read(const volatile struct ebpf_fn_stats *stats, uint32_t fn_id,
				  struct ebpf_fn_sample *out)
{
	const volatile struct ebpf_fn_stats *s = &stats[fn_id & EBPF_FN_MASK];
	uint64_t taken, in;

	if (__atomic_load_n(&s->fn_id, __ATOMIC_ACQUIRE) != fn_id)
		return -ENOENT;
	/* taken first: msgs_in only grows, so msgs_in read later is >= taken. */
	taken = __atomic_load_n(&s->taken, __ATOMIC_ACQUIRE);
	in = __atomic_load_n(&s->msgs_in, __ATOMIC_ACQUIRE);
	out->msgs_in = in;
	out->bytes_in = __atomic_load_n(&s->bytes_in, __ATOMIC_RELAXED);
	out->last_ns = __atomic_load_n(&s->last_ns, __ATOMIC_RELAXED);
	out->depth = in >= taken ? in - taken : 0;
	return 0;
}

#endif
