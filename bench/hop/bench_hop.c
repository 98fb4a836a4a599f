// SPDX-License-Identifier: MIT
/* Benchmark: one descriptor hop, gateway thread to function thread: sk_msg vs Unix vs TCP. */
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
#define BURST_REPS 5 /* bursts per path and placement; the median rate is reported */

enum path { PATH_SKMSG, PATH_UNIX, PATH_TCP, PATH_COUNT };

static const char *const path_names[PATH_COUNT] = {
	[PATH_SKMSG] = "sk_msg redirect",
	[PATH_UNIX] = "AF_UNIX SEQPACKET",
	[PATH_TCP] = "loopback TCP",
};

struct opts {
	int iters; /* latency samples per path and placement */
	int burst; /* descriptors per throughput run */
	int batch; /* descriptors per send in the burst */
};

/* One gateway -> function channel; the fds belong to the channel until chan_close(). */
struct chan {
	enum path path;
	int tx;	      /* the gateway sends here */
	int rx;	      /* the function reads here */
	int extra[2]; /* the other ends of the sk_msg pairs (the runtime's), kept open */
	uint32_t dst; /* routing key written into each descriptor */
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
	uint64_t t0[BURST_REPS]; /* burst starts, gateway thread (barrier-ordered) */
	uint64_t t1[BURST_REPS]; /* burst ends, function thread (same CLOCK_MONOTONIC) */
	_Atomic int err;	 /* first error, -errno */
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

static void chan_close(struct chan *c)
{
	int i;

	if (c->path == PATH_SKMSG)
		ebpf_route_del(router, EBPF_KEY_GATEWAY);
	close(c->tx);
	close(c->rx);
	for (i = 0; i < 2; i++)
		if (c->extra[i] >= 0)
			close(c->extra[i]);
}

/* Open a channel of kind @p into *@c (fds owned by *@c until chan_close). Returns 0 or -errno. */
static int chan_open(struct chan *c, enum path p)
{
	int fds[2], err;

	memset(c, 0, sizeof(*c));
	c->path = p;
	c->tx = c->rx = c->extra[0] = c->extra[1] = -1;
	c->dst = 1;
	if (p == PATH_UNIX) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds))
			return -errno;
		c->tx = fds[0];
		c->rx = fds[1];
		return 0;
	}
	err = ebpf_tcp_pair(fds);
	if (err)
		return err;
	c->tx = fds[0];
	c->rx = fds[1];
	if (p == PATH_TCP)
		return 0;
	/* As the runtime does it: gateway and function each have one end of a pair in the map. */
	c->extra[0] = fds[1];
	err = ebpf_tcp_pair(fds);
	if (err)
		goto err_close;
	c->rx = fds[0];
	c->extra[1] = fds[1];
	c->dst = next_fn_id++;
	err = ebpf_route_add(router, EBPF_KEY_GATEWAY, c->tx);
	if (!err)
		err = ebpf_route_add(router, c->dst, c->rx);
	if (err)
		goto err_close;
	return 0;

err_close:
	chan_close(c);
	return err;
}

/* Read one record from a stream or SEQPACKET socket into @rec. Returns 0 or -errno. */
static int recv_rec(int fd, unsigned char *rec)
{
	size_t got = 0;

	while (got < REC) {
		ssize_t n = recv(fd, rec + got, REC - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		got += (size_t)n;
	}
	return 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static void *fn_thread(void *arg)
{
	struct run *r = arg;
	const struct opts *o = r->o;
	unsigned char rec[REC];
	unsigned char *buf;
	size_t bufsz = (size_t)o->batch * 4 * REC, carry = 0;
	long total = WARMUP + o->iters, i, have;
	uint64_t one = 1, t;
	int err = pin_to(r->cpu_fn), rep;

	if (err)
		r->err = err;
	pthread_barrier_wait(&r->go);
	/* Latency: one descriptor at a time; the gateway waits for our ack before the next. */
	for (i = 0; i < total && !r->err; i++) {
		err = recv_rec(r->c->rx, rec);
		t = trib_now_ns();
		if (err) {
			ssize_t w;

			r->err = err;
			/* Let the gateway's read(ack) return; it sees err and stops. */
			w = write(r->ack, &one, sizeof(one));
			(void)w;
			break;
		}
		if (i >= WARMUP) {
			uint64_t sent;

			memcpy(&sent, rec + 24, sizeof(sent));
			r->samples[i - WARMUP] = t - sent;
		}
		if (write(r->ack, &one, sizeof(one)) != sizeof(one))
			r->err = -errno;
	}
	pthread_barrier_wait(&r->go);
	/* Throughput: take whatever has queued, as many records per call as fit. */
	buf = trib_malloc(bufsz);
	if (!buf)
		r->err = -ENOMEM;
	for (rep = 0; rep < BURST_REPS; rep++) {
		pthread_barrier_wait(&r->go);
		for (have = 0; have < o->burst && !r->err;) {
			ssize_t n;

			/* A stream gives what has queued; SEQPACKET one message of records. */
			n = recv(r->c->rx, buf, bufsz, 0);
			if (n > 0) {
				carry += (size_t)n;
				have += (long)(carry / REC);
				carry %= REC;
			}
			if (n < 0 && errno != EINTR)
				r->err = -errno;
			if (n == 0)
				r->err = -EPIPE;
		}
		r->t1[rep] = trib_now_ns();
		pthread_barrier_wait(&r->go);
	}
	trib_free(buf);
	return NULL;
}

/*
 * Send @n records from @buf in one send: on SEQPACKET one message of @n
 * records, as shm_chan does; on TCP a stream write that sk_msg cuts into
 * records.
 */
static int send_batch(struct chan *c, unsigned char *buf, int n)
{
	size_t len = (size_t)n * REC, off = 0;

	while (off < len) {
		ssize_t w = send(c->tx, buf + off, len - off, 0);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EPIPE;
		/* SEQPACKET sends all or nothing, so a short count only happens on streams. */
		off += (size_t)w;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One path, one placement: latency, then a burst. Returns 0 or -errno. */
static int run_one(enum path p, int cpu_gw, int cpu_fn, const struct opts *o, struct result *res)
{
	struct run r = { .o = o, .cpu_gw = cpu_gw, .cpu_fn = cpu_fn };
	unsigned char rec[REC], *burst;
	struct chan c;
	pthread_t th;
	uint64_t v;
	double rates[BURST_REPS];
	long i, total = WARMUP + o->iters;
	int err, b, sent, rep;

	memset(res, 0, sizeof(*res));
	err = chan_open(&c, p);
	if (err)
		return err;
	r.c = &c;
	r.ack = eventfd(0, EFD_CLOEXEC);
	r.samples = trib_calloc((size_t)o->iters, sizeof(uint64_t));
	burst = trib_calloc((size_t)o->batch, REC);
	if (r.ack < 0 || !r.samples || !burst) {
		err = r.ack < 0 ? -errno : -ENOMEM;
		goto err_free;
	}
	pthread_barrier_init(&r.go, NULL, 2);
	err = pthread_create(&th, NULL, fn_thread, &r);
	if (err) {
		err = -err;
		goto err_barrier;
	}
	err = pin_to(cpu_gw);
	if (err)
		r.err = err;
	pthread_barrier_wait(&r.go);

	memset(rec, 0xa5, sizeof(rec));
	put_u32(rec + 4, c.dst);
	for (i = 0; i < total && !r.err; i++) {
		uint64_t t = trib_now_ns();

		memcpy(rec + 24, &t, sizeof(t));
		err = send_batch(&c, rec, 1);
		if (err) {
			r.err = err;
			break;
		}
		if (read(r.ack, &v, sizeof(v)) != sizeof(v)) {
			r.err = -errno;
			break;
		}
	}
	pthread_barrier_wait(&r.go);

	for (b = 0; b < o->batch; b++) {
		memset(burst + (size_t)b * REC, 0x5a, REC);
		put_u32(burst + (size_t)b * REC + 4, c.dst);
	}
	for (rep = 0; rep < BURST_REPS; rep++) {
		pthread_barrier_wait(&r.go);
		r.t0[rep] = trib_now_ns();
		for (sent = 0; sent < o->burst && !r.err; sent += b) {
			b = o->burst - sent < o->batch ? o->burst - sent : o->batch;
			err = send_batch(&c, burst, b);
			if (err) {
				r.err = err;
				/* Wake the reader: its recv returns 0 and it stops too. */
				shutdown(c.rx, SHUT_RD);
				break;
			}
		}
		pthread_barrier_wait(&r.go);
		rates[rep] = (double)o->burst / ((double)(r.t1[rep] - r.t0[rep]) / 1e9);
	}
	pthread_join(th, NULL);
	err = r.err;
	if (!err) {
		qsort(r.samples, (size_t)o->iters, sizeof(uint64_t), cmp_u64);
		res->p50_us = (double)r.samples[o->iters / 2] / 1e3;
		res->p99_us = (double)r.samples[(size_t)((double)o->iters * 0.99)] / 1e3;
		qsort(rates, BURST_REPS, sizeof(rates[0]), cmp_double);
		res->rate = rates[BURST_REPS / 2];
		res->ran = true;
	}
err_barrier:
	pthread_barrier_destroy(&r.go);
err_free:
	trib_free(burst);
	trib_free(r.samples);
	if (r.ack >= 0)
		close(r.ack);
	chan_close(&c);
	return err;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--iters N] [--burst N] [--batch N]\n"
		"  --iters  latency samples per path and placement (default 20000)\n"
		"  --burst  descriptors per throughput run (default 1000000)\n"
		"  --batch  descriptors per send in the burst, 1..%u (default 64)\n",
		argv0, EBPF_MAX_BATCH);
}

static void fmt_rate(char *buf, size_t n, double rate)
{
	if (rate >= 1e6)
		snprintf(buf, n, "%.2f M/s", rate / 1e6);
	else
		snprintf(buf, n, "%.0f k/s", rate / 1e3);
}

int main(int argc, char **argv)
{
	struct opts o = { .iters = 20000, .burst = 1000000, .batch = 64 };
	static const struct {
		const char *name;
		int gw, fn;
	} places[] = { { "same CPU (0,0)", 0, 0 }, { "two CPUs (0,1)", 0, 1 } };
	struct result res[2][PATH_COUNT];
	char inst[64];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int i, p, q, rc = 0;

	trib_log_init("bench_hop");
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--iters") && i + 1 < argc)
			o.iters = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--burst") && i + 1 < argc)
			o.burst = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
			o.batch = atoi(argv[++i]);
		else {
			usage(argv[0]);
			return 2;
		}
	}
	if (o.iters < 100 || o.burst < 1 || o.batch < 1 || o.batch > (int)EBPF_MAX_BATCH) {
		usage(argv[0]);
		return 2;
	}

	snprintf(inst, sizeof(inst), "%d-bench", (int)getpid());
	if (ebpf_route_open(inst, &router, router_why, sizeof(router_why)))
		router = NULL;

	printf("Descriptor hop: %d-byte descriptors, gateway thread -> function thread\n", REC);
	printf("latency: %d one-way samples (send to recv return, CLOCK_MONOTONIC), one in "
	       "flight\n",
	       o.iters);
	printf("burst:   %d descriptors, %d per send (one SEQPACKET message), reader takes what "
	       "has\n         queued; median rate of %d bursts\n",
	       o.burst, o.batch, BURST_REPS);
	if (!router)
		printf("sk_msg:  skipped: %s\n", router_why);
	printf("\n%-16s %-18s %10s %10s %9s %13s %9s\n", "placement", "path", "median us", "p99 us",
	       "x sk_msg", "burst", "x sk_msg");

	for (q = 0; q < 2; q++) {
		if (places[q].fn >= ncpu) {
			printf("%-16s (skipped: %ld CPU online)\n", places[q].name, ncpu);
			continue;
		}
		for (p = 0; p < PATH_COUNT; p++) {
			int err;

			memset(&res[q][p], 0, sizeof(res[q][p]));
			if (p == PATH_SKMSG && !router)
				continue;
			err = run_one((enum path)p, places[q].gw, places[q].fn, &o, &res[q][p]);
			if (err) {
				fprintf(stderr, "bench_hop: %s, %s: %s\n", path_names[p],
					places[q].name, strerror(-err));
				rc = 1;
			}
		}
		for (p = 0; p < PATH_COUNT; p++) {
			const struct result *r = &res[q][p], *base = &res[q][PATH_SKMSG];
			char rate[32], lx[16] = "-", tx[16] = "-";

			if (!r->ran) {
				printf("%-16s %-18s %10s\n", places[q].name, path_names[p],
				       p == PATH_SKMSG && !router ? "skipped" : "failed");
				continue;
			}
			if (base->ran) {
				snprintf(lx, sizeof(lx), "%.2f", r->p50_us / base->p50_us);
				snprintf(tx, sizeof(tx), "%.2f", r->rate / base->rate);
			}
			fmt_rate(rate, sizeof(rate), r->rate);
			printf("%-16s %-18s %10.1f %10.1f %9s %13s %9s\n", places[q].name,
			       path_names[p], r->p50_us, r->p99_us, lx, rate, tx);
		}
	}
	printf("\nx sk_msg: latency as time relative to sk_msg (> 1 is slower); "
	       "burst as rate relative to sk_msg (< 1 is slower)\n");
	ebpf_route_close(router);
	return rc;
}
