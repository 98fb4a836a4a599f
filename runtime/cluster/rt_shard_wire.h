/* SPDX-License-Identifier: MIT */
/*
 * The slices message of robust rules across nodes ("shard_slices", rt_agent_shard.c), pure:
 * how a sender cuts its updates' segments to an owner's range, and how the owner checks what
 * it is sent before anything lands in its arena.
 */
#ifndef RT_SHARD_WIRE_H
#define RT_SHARD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "shm_abi.h"

/* A piece of segment @seg of an update: its coordinates [a, b). */
struct rt_shard_piece {
	uint32_t seg;
	uint64_t a, b;
};

/* Bytes per element of an update's dtype (F32 4, F16/BF16 2, I8 1), 0 for any other. */
uint64_t rt_shard_dtype_size(unsigned dtype);

/*
 * The pieces of @segs (@nsegs, in body order: safetensors may hold the tensors in any order)
 * that fall in [lo, hi), into @out (room for @nsegs), sorted by coordinate. Their number.
 */
uint32_t rt_shard_cut(const struct shm_seg *segs, uint32_t nsegs, uint64_t lo, uint64_t hi,
		      struct rt_shard_piece *out);

/*
 * Check a slices message: @ups is an array of @nups updates, each an array of pieces
 * [offset, n_elem, dst_elem, dtype, scale]; every update's pieces must be in coordinate order
 * and cover [lo, hi) exactly once, at most @max_pieces of them (the schema's tensors), each of
 * a known dtype, 4-byte aligned and inside the @plen payload bytes. 0 with *npieces (over all
 * updates), or -EINVAL.
 */
int rt_shard_slices_check(const json_t *ups, uint32_t nups, uint32_t max_pieces, uint64_t lo,
			  uint64_t hi, size_t plen, uint64_t *npieces);

#endif
