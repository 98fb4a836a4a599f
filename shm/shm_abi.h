/* SPDX-License-Identifier: MIT */
/* Structs that several processes (and later the kernel) read: descriptors, segments, dtypes. */
#ifndef SHM_ABI_H
#define SHM_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "trib_dtype.h"

/*
 * Every struct here crosses a process boundary. Shared memory holds offsets
 * from the arena base, never pointers. Fixed-width types only; sizes and
 * offsets are pinned by _Static_asserts so that a change is deliberate.
 */
#define SHM_ABI_VERSION 1

/* Element types of a tensor payload (core/trib_dtype.h); values are part of the ABI. */
enum shm_dtype {
	SHM_DTYPE_F32 = TRIB_DTYPE_F32,
	SHM_DTYPE_F16 = TRIB_DTYPE_F16,
	SHM_DTYPE_BF16 = TRIB_DTYPE_BF16,
	SHM_DTYPE_I8 = TRIB_DTYPE_I8,
	SHM_DTYPE_I64 = TRIB_DTYPE_I64, /* a sparse tensor's indices only (struct shm_sparse) */
	SHM_DTYPE_I32 = TRIB_DTYPE_I32, /* FRL's rankings: integers, folded by fn_frl.c only */
	/*
	 * A sparse tensor: the segment's src_off is a struct shm_sparse, not elements. Not a
	 * trib_dtype (no file holds it): 0x53 ('S') stays clear of their small values.
	 */
	SHM_DTYPE_SPARSE = 0x53,
};

/* What a descriptor announces; values are part of the ABI. */
enum shm_desc_kind {
	SHM_DESC_UPDATE = 1,  /* one client update in a slot: gateway -> leaf */
	SHM_DESC_PARTIAL = 2, /* a weighted sum and its total weight: child -> parent */
	SHM_DESC_RESULT = 3,  /* the finished global model: top -> node runtime */
};

/* Routing key of the node runtime itself (gateway and model store). */
#define SHM_DST_RUNTIME 0u

/*
 * One contiguous run of elements of the flat model. The flat model is every
 * tensor of the job's schema, flattened, in schema order. A payload is folded
 * segment by segment: model[dst_elem + i] += w * decode(src_off + i).
 */
struct shm_seg {
	uint64_t src_off;  /* arena offset of the segment's first element */
	uint64_t dst_elem; /* index in the flat model of the first element */
	uint64_t n_elem;   /* number of elements */
	uint32_t dtype;    /* enum shm_dtype of the source elements */
	float scale;       /* dequantisation scale for SHM_DTYPE_I8, 1.0f otherwise */
};
_Static_assert(sizeof(struct shm_seg) == 32, "shm_seg is ABI");
_Static_assert(offsetof(struct shm_seg, dtype) == 24, "shm_seg is ABI");

/*
 * The record a SHM_DTYPE_SPARSE segment's src_off points at: a tensor sent as indices plus
 * values (`<name>.indices`, `<name>.values`). The segment still covers its tensor's range of the
 * flat model (dst_elem, n_elem = the tensor's size); the fold adds w * values[i] at
 * dst_elem + indices[i] and leaves the other coordinates alone (zero in the update).
 * The record lies in the update's slot, before its segment table; its offsets are relative to
 * the record itself, so that moving the slot's bytes as a block (the update log's replay, a
 * forward to another node) keeps them true with no rewriting: only the segment's src_off moves.
 * Indices are flat indices into the tensor, strictly increasing (fn_sparse.h says why).
 */
struct shm_sparse {
	int64_t idx_rel;    /* the indices' offset minus this record's */
	int64_t val_rel;    /* the values' offset minus this record's */
	uint64_t nnz;       /* entries in each */
	uint32_t idx_dtype; /* SHM_DTYPE_I32, or SHM_DTYPE_I64 */
	uint32_t val_dtype; /* SHM_DTYPE_F32 */
};
_Static_assert(sizeof(struct shm_sparse) == 32, "shm_sparse is ABI");

/*
 * The fixed-size event that moves between processes on a node. Exactly
 * SHM_DESC_SIZE bytes so that a stream of them never merges or splits: a
 * reader always takes whole multiples of SHM_DESC_SIZE.
 *
 * Ownership: the slot at slot_off belongs to whoever holds the descriptor. A
 * receiver frees it (shm_slot_free) once it no longer needs the bytes, or
 * passes ownership on by sending another descriptor that names it.
 */
struct shm_desc {
	uint16_t version;  /* SHM_ABI_VERSION */
	uint16_t kind;     /* enum shm_desc_kind */
	uint32_t dst;      /* routing key: destination function id, SHM_DST_RUNTIME = 0 */
	uint32_t src;      /* sender's function id (0: gateway/runtime) */
	uint32_t job;      /* node-local numeric job id */
	uint32_t round;    /* round the payload belongs to */
	uint32_t nsegs;    /* entries in the segment table at segs_off */
	uint64_t slot_off; /* arena offset of the slot (allocation) holding the payload */
	uint64_t segs_off; /* arena offset of the segment table (struct shm_seg[nsegs]) */
	double weight;     /* update: sample count; partial: total weight folded in */
	uint32_t count;    /* client updates folded into the payload (1 for an update) */
	uint32_t seq;      /* update: index of the update within its round */
	float fold_scale;  /* update: extra factor on its fold weight (FedBuff staleness); 0 = 1 */
	uint32_t reserved; /* zero */
};
#define SHM_DESC_SIZE 64
_Static_assert(sizeof(struct shm_desc) == SHM_DESC_SIZE, "shm_desc is ABI");
_Static_assert(offsetof(struct shm_desc, dst) == 4, "the routing key is read by BPF");
_Static_assert(offsetof(struct shm_desc, slot_off) == 24, "shm_desc is ABI");
_Static_assert(offsetof(struct shm_desc, weight) == 40, "shm_desc is ABI");

#endif
