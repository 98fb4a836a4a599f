// SPDX-License-Identifier: MIT
/* sk_msg router: sends each 64-byte descriptor to its destination function's socket, counting. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ebpf_abi.h"
#include "ebpf_decide.h"

/*
 * How it runs. Every socket in fn_socks gets this program on its sendmsg
 * path: the gateway's sending socket and every function's socket. The kernel
 * runs it at the first record of a (possibly batched) sendmsg;
 * bpf_msg_apply_bytes makes the verdict cover exactly that record, or the run
 * of records after it in the same page that go to the same function, and the
 * program runs again with msg->data at the next record. A batch sorted by
 * destination thus costs one run per destination, not one per record (15-30x
 * the burst rate, docs/BENCHMARKS.md).
 *
 * Which sockets. sk_msg runs only for TCP sockets: tcp_bpf_sendmsg is the one
 * sendmsg hook that calls msg_parser programs. A Unix socket can be inserted in
 * a SOCKHASH on this kernel (6.x, unix_bpf), but that only replaces its
 * recvmsg; its sendmsg is untouched and the verdict program never runs.
 * Checked on 6.18 by tests/ebpf (ebpf_route.unix_socket_bypasses_sk_msg): a
 * record with a function's dst written to a Unix socket in fn_socks reaches
 * the Unix peer and no counter moves. Hence loopback TCP pairs.
 *
 * Joining. The runtime creates both ends of each function's TCP pair, inserts
 * the function's end itself (ebpf_route_add), hands that end to the child and
 * reads its own end (records to dst 0, and bounced ones):
 * no sockops program, since only the runtime knows which socket belongs to
 * which function id, and a socket leaves the map by itself when its last fd
 * closes (the kernel unlinks it in sock_map_close).
 *
 * Never SK_DROP. On this kernel (checked on 6.18, and so reads
 * tcp_bpf_send_verdict upstream) a drop verdict stays in psock->eval: the
 * program is not run again for that socket and every later sendmsg on it
 * fails with EACCES; and the records after the dropped one in the same
 * sendmsg are freed, while the count sendmsg returns leaves out only the
 * dropped one, so the sender cannot tell what was lost. So a record that
 * cannot be delivered (dst not in fn_socks: the function has exited; or a
 * reserved key) is bounced to the socket's TCP peer, which is the runtime's
 * end of the pair, and the runtime frees its slot. The sender sees a full
 * write.
 *
 * Never a bare SK_PASS after a redirect either. bpf_msg_redirect_hash stores
 * its target in the message, and nothing clears it when the program runs
 * again for the next record of the same sendmsg: SK_PASS would then redirect
 * that record to the previous record's function (seen on 6.18: a bounced
 * record arrived at the function before it). So "to the TCP peer" is itself a
 * redirect, to the sending socket's own egress: sock_keys holds each socket's
 * own key in fn_socks, and ebpf_route_add writes it.
 *
 * Framing. A send chunk shorter than a record (a sender that wrote a partial
 * record, or a sendmsg of more than EBPF_MAX_BATCH records cut by the kernel)
 * is sent to the peer too and counted in short_recs; the runtime treats that
 * pair as broken. No cork: a corked message is freed after its first
 * redirect, with whatever records follow in it.
 *
 * No bpf_printk: this is the hot path; everything worth knowing is a counter.
 */

/* Most records one program run redirects together (a run to one function within one page). */
#define EBPF_RUN_MAX 64

/* Function id -> the function's end of its loopback TCP pair; the gateway's at EBPF_KEY_GATEWAY. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, EBPF_MAX_FNS + 1); /* every live function, plus the gateway */
	__type(key, __u32);
	__type(value, __u32);
} fn_socks SEC(".maps");

/* Per-function counters at fn_id & EBPF_FN_MASK; mmapped by the runtime and the functions. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, EBPF_MAX_FNS);
	__type(key, __u32);
	__type(value, struct ebpf_fn_stats);
} fn_stats SEC(".maps");

/* Each socket's own key in fn_socks (function id or EBPF_KEY_GATEWAY); dies with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} sock_keys SEC(".maps");

/* One entry of router-wide counters; mmapped by the runtime. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpf_global_stats);
} route_global SEC(".maps");

/*
 * Send the current verdict's bytes to the sending socket's TCP peer: a
 * redirect to the socket's own egress, which replaces any redirect target left
 * in the message by an earlier record. SK_PASS alone only for a socket that did
 * not join through ebpf_route_add (no sock_keys entry).
 */
static __always_inline int to_peer(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	__u32 *self;

	if (!sk)
		return SK_PASS;
	self = bpf_sk_storage_get(&sock_keys, sk, 0, 0);
	if (self)
		bpf_msg_redirect_hash(msg, &fn_socks, self, 0);
	return SK_PASS;
}

SEC("sk_msg")
int route_msg(struct sk_msg_md *msg)
{
	struct ebpf_global_stats *g;
	struct ebpf_fn_stats *st;
	__u32 zero = 0, dst = 0, idx, run;
	void *data, *end;
	int verdict;

	g = bpf_map_lookup_elem(&route_global, &zero);
	if (!g)
		return to_peer(msg); /* cannot happen: an array's entries always exist */

	/* msg->size: bytes of this send chunk from this record on, across all its pages. */
	if (msg->size < EBPF_REC_SIZE) {
		bpf_msg_apply_bytes(msg, msg->size);
		__sync_fetch_and_add(&g->short_recs, 1);
		return to_peer(msg);
	}
	bpf_msg_apply_bytes(msg, EBPF_REC_SIZE);

	/* data..data_end covers only the first page of the message: linearise a split record. */
	data = (void *)(long)msg->data;
	end = (void *)(long)msg->data_end;
	if (data + EBPF_REC_SIZE > end) {
		if (bpf_msg_pull_data(msg, 0, EBPF_REC_SIZE, 0))
			goto bounce;
		__sync_fetch_and_add(&g->pulls, 1);
		data = (void *)(long)msg->data;
		end = (void *)(long)msg->data_end;
		if (data + EBPF_REC_SIZE > end)
			goto bounce;
	}

	verdict = ebpf_route_decide(data, EBPF_REC_SIZE, &dst);
	if (verdict == EBPF_PASS) {
		__sync_fetch_and_add(&g->passes, 1);
		return to_peer(msg);
	}
	if (verdict != EBPF_REDIRECT)
		goto bounce;
	/* SK_PASS from the helper means dst is in the map and the redirect is armed. */
	if (bpf_msg_redirect_hash(msg, &fn_socks, &dst, BPF_F_INGRESS) != SK_PASS)
		goto bounce;
	/* Following records of this page for the same function ride along in one message. */
	run = ebpf_route_run(data, end, dst, EBPF_RUN_MAX);
	bpf_msg_apply_bytes(msg, run * EBPF_REC_SIZE);
	/* Counted before the kernel queues the records, so msgs_in never trails `taken`. */
	idx = dst & EBPF_FN_MASK;
	st = bpf_map_lookup_elem(&fn_stats, &idx);
	if (st) {
		__sync_fetch_and_add(&st->msgs_in, run);
		__sync_fetch_and_add(&st->bytes_in, run * EBPF_REC_SIZE);
		st->last_ns = bpf_ktime_get_ns();
		st->fn_id = dst;
	}
	__sync_fetch_and_add(&g->redirects, run);
	__sync_fetch_and_add(&g->runs, 1);
	return SK_PASS;

bounce:
	__sync_fetch_and_add(&g->bounced, 1);
	return to_peer(msg);
}

/* Only helpers open to any licence are used; the declaration keeps that true if one is added. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
