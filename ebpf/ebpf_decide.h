/* SPDX-License-Identifier: MIT */
/* The routing decision for one record: a pure function compiled into the BPF program and the tests. */
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
static inline int ebpf_route_decide(const void *rec, __u32 len, __u32 *dst)
{
	const unsigned char *p = (const unsigned char *)rec + EBPF_DST_OFF;
	__u32 key;

	if (len < EBPF_REC_SIZE)
		return EBPF_SHORT;
	/* Little-endian on the wire whatever the host; byte loads, no alignment assumed. */
	key = (__u32)p[0] | (__u32)p[1] << 8 | (__u32)p[2] << 16 | (__u32)p[3] << 24;
	*dst = key;
	if (key == EBPF_KEY_RUNTIME)
		return EBPF_PASS;
	if (key == EBPF_KEY_GATEWAY)
		return EBPF_BOUNCE;
	return EBPF_REDIRECT;
}

#endif
