/* SPDX-License-Identifier: MIT */
/* What the sk_msg router (route.bpf.c) and user space share: record framing, keys, map values. */
#ifndef EBPF_ABI_H
#define EBPF_ABI_H

/*
 * Included by the BPF program (clang -target bpf, no libc) and by user space,
 * so only <linux/types.h> fixed-width types: __u32 is uint32_t and __u64 is
 * uint64_t in size (print __u64 with %llu). Every struct here is read by
 * another process or the kernel; a change bumps EBPF_ABI_VERSION.
 */
#include <linux/types.h>

#define EBPF_ABI_VERSION 1

/*
 * Framing: the router sees a byte stream and cuts it into records of exactly
 * EBPF_REC_SIZE bytes (struct shm_desc, SHM_DESC_SIZE). The routing key is the
 * little-endian __u32 at EBPF_DST_OFF (shm_desc.dst). The tests pin both to
 * shm_abi.h; ebpf/ itself depends only on core/.
 */
#define EBPF_REC_SIZE 64u
#define EBPF_DST_OFF 4u

/* Routing keys. Function ids are monotonic and never reused, so keys never collide. */
#define EBPF_KEY_RUNTIME 0u	     /* not in the map: the record goes to the socket's TCP peer */
#define EBPF_KEY_GATEWAY 0xFFFFFFFFu /* the gateway's sending socket; never a destination */

/*
 * fn_stats has EBPF_MAX_FNS entries indexed by fn_id & EBPF_FN_MASK. The
 * runtime guarantees that no two live functions share an index, and resets an
 * entry (ebpf_route_add) before a new function starts using it.
 */
#define EBPF_MAX_FNS 4096u
#define EBPF_FN_MASK (EBPF_MAX_FNS - 1u)

/*
 * Per-function counters, one cache line each so that functions taking
 * descriptors do not bounce each other's lines. The BPF program writes
 * everything but `taken`; the function writes only `taken` (it mmaps the map).
 * Queue depth = msgs_in - taken: read taken first, then msgs_in, so the
 * difference is never negative (msgs_in is counted before the record is
 * queued, taken after it is read).
 */
struct ebpf_fn_stats {
	__u64 msgs_in;	/* records redirected to this function (atomic add by BPF) */
	__u64 bytes_in; /* bytes of those records (atomic add by BPF) */
	__u64 last_ns;	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last redirect */
	__u64 taken;	/* records the function has read off its socket (atomic add, function) */
	__u32 fn_id;	/* id that last wrote this entry: tells a reader that an entry is stale */
	__u32 pad0;	/* zero */
	__u64 pad[3];	/* zero; pads the entry to one cache line */
};

/*
 * Router-wide counters: one entry in the route_global map. A record that
 * cannot be delivered is never dropped (see route.bpf.c): it is bounced to
 * the sending socket's TCP peer, i.e. back to the runtime, which frees its
 * slot.
 */
struct ebpf_global_stats {
	__u64 redirects;  /* records redirected to a function's socket */
	__u64 passes;	  /* records with dst EBPF_KEY_RUNTIME, passed to the TCP peer */
	__u64 bounced;	  /* records bounced to the TCP peer: dst not in fn_socks, or reserved */
	__u64 short_recs; /* send chunks ending in less than a record, bounced too (sender bug) */
	__u64 pulls;	  /* records split across two pages that had to be linearised */
	__u64 runs;	  /* redirected messages: runs of records to one function, <= redirects */
	__u64 pad[2];	  /* zero */
};

/*
 * Most records per sendmsg. The kernel cuts a sendmsg into chunks when its
 * scatterlist (17 page fragments) fills, and a cut need not fall on a record
 * boundary. 17 order-0 pages always hold 16 KiB = 256 records plus the tail
 * of a partly used page, so a sender that batches at most this many never has
 * a record cut.
 */
#define EBPF_MAX_BATCH 256u

_Static_assert(sizeof(struct ebpf_fn_stats) == 64, "ebpf_fn_stats is ABI (mmapped by functions)");
_Static_assert(__builtin_offsetof(struct ebpf_fn_stats, taken) == 24, "ebpf_fn_stats is ABI");
_Static_assert(__builtin_offsetof(struct ebpf_fn_stats, fn_id) == 32, "ebpf_fn_stats is ABI");
_Static_assert(sizeof(struct ebpf_global_stats) == 64, "ebpf_global_stats is ABI");
_Static_assert((EBPF_MAX_FNS & EBPF_FN_MASK) == 0, "EBPF_MAX_FNS is a power of two");

#endif
