// SPDX-License-Identifier: MIT
/* Benchmark: one descriptor hop, gateway thread to function thread, sk_msg vs Unix vs loopback TCP. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ebpf_route.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

#define REC 64 /* EBPF_REC_SIZE: one struct shm_desc */
#define WARMUP 1000

enum path { PATH_SKMSG, PATH_UNIX, PATH_TCP, PATH_COUNT };

static const char *const path_names[PATH_COUNT] = {
	[PATH_SKMSG] = "sk_msg redirect",
	[PATH_UNIX] = "AF_UNIX SEQPACKET",
	[PATH_TCP] = "loopback TCP",
};

struct opts {
	int iters; /* latency samples per path and placement */
	int burst; /* descriptors per throughput run */
	int batch; /* descriptors per sendmsg (or sendmmsg) in the burst */
};

/* One gateway -> function channel; the fds belong to the channel until chan_close(). */
struct chan {
	enum path path;
	int tx;	      /* the gateway sends here */
	int rx;	      /* the function reads here */
	int extra[2]; /* the other ends of the sk_msg pairs (the runtime's), kept open */
};

/* What one run measures. */
struct result {
	bool ran;
	double p50_us, p99_us, rate; /* latency median and p99; burst descriptors per second */
};

/* Shared by the two threads of one run. */
struct run {
	struct chan *c;
	const struct opts *o;
	int cpu_gw, cpu_fn;
	int ack;	       /* eventfd: function -> gateway, "got it" (latency phase only) */
	pthread_barrier_t go;  /* both threads ready for the next phase */
	uint64_t *samples;     /* one-way latency per descriptor, ns */
	_Atomic uint64_t t0;   /* burst start, gateway clock */
	uint64_t t1;	       /* burst end, function clock (same CLOCK_MONOTONIC) */
	int err;	       /* first error, -errno */
};

static struct ebpf_route *router;
static char router_why[256];
static uint32_t next_fn_id = 1;

static int pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static int chan_open(struct chan *c, enum path p)
{
	int fds[2], err;

	memset(c, 0, sizeof(*c));
	c->path = p;
	c->extra[0] = c->extra[1] = -1;
	switch (p) {
	case PATH_UNIX:
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds))
			return -errno;
		c->tx = fds[0];
		c->rx = fds[1];
		return 0;
	case PATH_TCP:
		err = ebpf_tcp_pair(fds);
		if (err)
			return err;
		c->tx = fds[0];
		c->rx = fds[1];
		return 0;
	case PATH_SKMSG:
	default:
		/* As the runtime does it: gateway and function each hold one end of a pair in the map. */
		err = ebpf_tcp_pair(fds);
		if (err)
			return err;
		c->tx = fds[0];
		c->extra[0] = fds[1];
		err = ebpf_tcp_pair(fds);
		if (err)
			return err;
		c->rx = fds[0];
		c->extra[1] = fds[1];
		err = ebpf_route_add(router, EBPF_KEY_GATEWAY, c->tx);
		if (!err)
			err = ebpf_route_add(router, next_fn_id, c->rx);
		c->tx_key_fn = next_fn_id++;
		return err;
	}
}
