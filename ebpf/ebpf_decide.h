/* SPDX-License-Identifier: MIT */
/* The routing decision for one record: pure functions compiled into the BPF program and tests. */
#ifndef EBPF_DECIDE_H
#define EBPF_DECIDE_H

#include "ebpf_abi.h"

/* What the router does with one record: route.bpf.c turns each into SK_PASS or a redirect. */
enum ebpf_verdict {
	EBPF_PASS = 0,	   /* dst is the runtime: the record goes to the socket's TCP peer */
	EBPF_REDIRECT = 1, /* to the socket of function *dst, if it is in fn_socks */
	EBPF_BOUNCE = 2,   /* dst is a reserved key: handed back to the runtime (the TCP peer) */
	EBPF_SHORT = 3,	   /* fewer than EBPF_REC_SIZE bytes: not a whole record */
};

/*
 * Decide for the record at @rec, of which @len bytes are readable. The caller
 * (BPF) has already proven to the verifier that EBPF_REC_SIZE bytes are
 * readable whenever @len >= EBPF_REC_SIZE. *@dst receives the routing key for
 * EBPF_PASS, EBPF_REDIRECT and EBPF_BOUNCE; @rec and @dst are borrowed.
 * Returns an enum ebpf_verdict.
 */
/* The routing key of the record at @rec; little-endian whatever the host, no alignment assumed. */
static inline __u32 ebpf_route_key(const unsigned char *rec)
{
	const unsigned char *p = rec + EBPF_DST_OFF;

	return (__u32)p[0] | (__u32)p[1] << 8 | (__u32)p[2] << 16 | (__u32)p[3] << 24;
}

static inline int ebpf_route_decide(const void *rec, __u32 len, __u32 *dst)
{
	__u32 key;

	if (len < EBPF_REC_SIZE)
		return EBPF_SHORT;
	key = ebpf_route_key((const unsigned char *)rec);
	*dst = key;
	if (key == EBPF_KEY_RUNTIME)
		return EBPF_PASS;
	if (key == EBPF_KEY_GATEWAY)
		return EBPF_BOUNCE;
	return EBPF_REDIRECT;
}

/*
 * How many records, from the one at @rec on, go to @dst in a row: at least 1
 * (the record at @rec, already decided), at most @max, and only whole records
 * that end at or before @end. The router sends such a run as one message, one
 * program run and one queue entry instead of one per record. @end is compared
 * as a pointer so that the verifier can check every load.
 */
static inline __u32 ebpf_route_run(const void *rec, const void *end, __u32 dst, __u32 max)
{
	const unsigned char *p = (const unsigned char *)rec;
	__u32 n;

	for (n = 1; n < max; n++) {
		const unsigned char *q = p + n * EBPF_REC_SIZE;

		if (q + EBPF_REC_SIZE > (const unsigned char *)end)
			break;
		if (ebpf_route_key(q) != dst)
			break;
	}
	return n;
}

#endif
