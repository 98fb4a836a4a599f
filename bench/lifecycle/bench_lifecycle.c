// SPDX-License-Identifier: MIT
/*
 * bench_lifecycle: a function's cold start (spawn to READY) and warm hand-off
 * (config to READY) through the runtime's own rt_fnset code, against this
 * machine's floors measured in the same run:
 *   - spawn floor: posix_spawn + exit + waitpid of a do-nothing static binary;
 *   - wake floor: one process writes an eventfd, another blocked in read()
 *     wakes; the one-way latency, clock to clock (CLOCK_MONOTONIC is shared).
 * The runtime side here is a blocking reader, not the gateway's event loop:
 * this is what the function and its channel cost. bench/lifecycle/run.sh
 * prints the same quantities from /metrics under a 1000-client round next to
 * these, which adds the event loop's delay.
 *
 * usage: bench_lifecycle --fn BUILD/tributary-fn --nop BUILD/bench/lifecycle/bench_nop
 *                        [--iters N] [--params P] [--arena-mb M]
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fn_abi.h"
#include "fn_opt.h"
#include "rt_fnproc.h"
#include "shm_arena.h"
#include "trib_time.h"

extern char **environ;

#define COLD_TARGET_NS 1000000.0 /* issue #17: cold start <= 1 ms median */
#define WARM_TARGET_NS 50000.0   /* issue #17: warm hand-off <= 50 us median */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double median(uint64_t *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	return (double)v[n / 2];
}

static double pct(const uint64_t *sorted, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);

	return (double)sorted[i];
}

/* posix_spawn + exit + waitpid of @path: the least a cold start can cost. */
static int spawn_floor(const char *path, uint64_t *out)
{
	char *argv[] = { (char *)"nop", NULL };
	uint64_t t0 = trib_now_ns();
	pid_t pid;
	int st;
	int err = posix_spawn(&pid, path, NULL, NULL, argv, environ);

	if (err) {
		fprintf(stderr, "bench_lifecycle: spawning %s: %s\n", path, strerror(err));
		return -1;
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "bench_lifecycle: %s did not exit 0\n", path);
		return -1;
	}
	*out = trib_now_ns() - t0;
	return 0;
}

/*
 * The wake floor's partner: a process blocked in read() on an eventfd,
 * stamping when it wakes. One sample per wake_floor() call, so that floors
 * and figures are taken interleaved and share the machine's load.
 */
struct waker {
	volatile uint64_t *sh; /* [0]: sent at, [1]: woke after */
	int go, back;
	pid_t pid;
};

static int waker_start(struct waker *w)
{
	uint64_t one = 1, v;

	w->sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	w->go = eventfd(0, EFD_CLOEXEC);
	w->back = eventfd(0, EFD_CLOEXEC);
	if (w->sh == MAP_FAILED || w->go < 0 || w->back < 0)
		return -1;
	w->pid = fork();
	if (w->pid < 0)
		return -1;
	if (w->pid == 0) {
		while (read(w->go, &v, sizeof(v)) == sizeof(v)) {
			w->sh[1] = trib_now_ns() - w->sh[0];
			if (write(w->back, &one, sizeof(one)) != sizeof(one))
				break;
		}
		_exit(0);
	}
	return 0;
}

/* One-way eventfd wake between two processes, clock to clock. */
static int wake_floor(struct waker *w, uint64_t *out)
{
	uint64_t one = 1, v;

	/* Let the partner block first: the wake, not a busy reader, is measured. */
	usleep(200);
	w->sh[0] = trib_now_ns();
	if (write(w->go, &one, sizeof(one)) != sizeof(one) ||
	    read(w->back, &v, sizeof(v)) != sizeof(v))
		return -1;
	*out = w->sh[1];
	return 0;
}

static void waker_stop(struct waker *w)
{
	if (w->pid > 0) {
		kill(w->pid, SIGKILL);
		waitpid(w->pid, NULL, 0);
	}
	if (w->go >= 0)
		close(w->go);
	if (w->back >= 0)
		close(w->back);
	if (w->sh != MAP_FAILED)
		munmap((void *)w->sh, 4096);
}

/* The next record from @fn's channel, blocking; 0 or -errno. */
static int recv_rec(struct rt_fn *fn, struct shm_desc *d)
{
	for (;;) {
		struct pollfd p = { .fd = fn->sock, .events = POLLIN };
		ssize_t r = recv(fn->sock, d, sizeof(*d), 0);

		if (r == (ssize_t)sizeof(*d))
			return 0;
		if (r == 0)
			return -ECONNRESET;
		if (r > 0)
			return -EPROTO;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		if (poll(&p, 1, 5000) == 0)
			return -ETIMEDOUT;
	}
}

/*
 * Wait for a @kind record: *@at is when it was read here, *@stamp (READY) the
 * function's own stamp (fn_ctl.at_ns), which the runtime's metrics use.
 */
static int wait_kind(struct rt_fn *fn, uint16_t kind, uint64_t *at, uint64_t *stamp)
{
	struct shm_desc d;

	for (;;) {
		int err = recv_rec(fn, &d);

		if (err)
			return err;
		if (d.kind == kind) {
			struct fn_ctl c;

			*at = trib_now_ns();
			memcpy(&c, &d, sizeof(c));
			*stamp = c.at_ns;
			return 0;
		}
		if (d.kind == FN_MSG_READY || d.kind == SHM_DESC_PARTIAL)
			continue;
		fprintf(stderr, "bench_lifecycle: unexpected record kind %u\n", d.kind);
		return -EPROTO;
	}
}

struct rig {
	struct shm_arena *arena;
	struct rt_fnset *set;
	uint64_t n;         /* parameters */
	uint64_t acc_off;   /* the accumulator slot */
	uint64_t upd_off;   /* one update: segment table, then n f32 */
	uint32_t next_round;
};

static void fill_config(struct rig *r, struct fn_config *c, struct fn_params *p, uint32_t id)
{
	memset(c, 0, sizeof(*c));
	c->version = FN_ABI_VERSION;
	c->kind = FN_MSG_CONFIG;
	c->fn_id = id;
	c->parent = 1u << 30;
	c->job = 1;
	c->round = ++r->next_round;
	c->expected = 1;
	c->role = FN_ROLE_LEAF;
	c->algorithm = FN_ALGO_FEDAVG;
	c->n_elem = r->n;
	c->acc_off = r->acc_off;
	c->acc_data_off = r->acc_off + SHM_ACC_HDR;
	c->flags = FN_CFG_FINAL;
	memset(p, 0, sizeof(*p));
	p->server = FN_OPT_FEDAVG;
	p->server_lr = 1.0f;
}

/* Fold one update and wait for DONE: the function is warm again. */
static int fold_one(struct rig *r, struct rt_fn *fn)
{
	struct shm_desc d;
	uint64_t t, st;
	int err;

	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = SHM_DESC_UPDATE;
	d.dst = fn->id;
	d.job = fn->cfg.job;
	d.round = fn->cfg.round;
	d.nsegs = 1;
	d.slot_off = r->upd_off;
	d.segs_off = r->upd_off;
	d.weight = 1.0;
	d.count = 1;
	err = rt_fn_send(fn, &d);
	if (!err)
		err = rt_fn_flush(fn);
	if (!err)
		err = wait_kind(fn, FN_MSG_DONE, &t, &st);
	if (!err)
		fn->state = RT_FN_WARM;
	return err;
}

static void stop_fn(struct rig *r, struct rt_fn *fn)
{
	int st;

	kill(fn->pid, SIGKILL);
	waitpid(fn->pid, &st, 0);
	fn->pid = 0;
	fn->exited = true;
	rt_fnset_remove(r->set, fn);
}

static void row(const char *what, uint64_t *v, int n, double floor_ns, double target_ns)
{
	double med = median(v, n);

	printf("%-44s %10.1f %10.1f %10.1f %8.1fx", what, med / 1e3, pct(v, n, 0.99) / 1e3,
	       floor_ns / 1e3, med / floor_ns);
	if (target_ns > 0)
		printf("  target <= %.0f us: %s", target_ns / 1e3, med <= target_ns ? "PASS" : "MISS");
	printf("\n");
}

int main(int argc, char **argv)
{
	const char *fn_path = NULL, *nop_path = NULL;
	int iters = 200;
	uint64_t params = 100000, arena_mb = 256;
	struct rig r;
	struct waker w = { .sh = MAP_FAILED, .go = -1, .back = -1, .pid = 0 };
	uint64_t *buf, *spawn, *wake, *cold, *warm, *cold_rt, *warm_rt;
	double spawn_med, wake_med;
	struct shm_seg *seg;
	float *u;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--fn") && i + 1 < argc)
			fn_path = argv[++i];
		else if (!strcmp(argv[i], "--nop") && i + 1 < argc)
			nop_path = argv[++i];
		else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
			iters = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--params") && i + 1 < argc)
			params = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--arena-mb") && i + 1 < argc)
			arena_mb = strtoull(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "usage: bench_lifecycle --fn PATH --nop PATH [--iters N] "
					"[--params P] [--arena-mb M]\n");
			return 2;
		}
	}
	if (!fn_path || !nop_path || iters < 3 || iters > 1000000 || !params ||
	    params > (arena_mb << 20) / 16) {
		fprintf(stderr, "bench_lifecycle: --fn and --nop are required, --iters in [3, 1e6], "
				"--params > 0 and at most an eighth of the arena in f32\n");
		return 2;
	}
	buf = calloc((size_t)iters * 6, sizeof(uint64_t));
	if (!buf)
		return 1;
	spawn = buf;
	wake = spawn + iters;
	cold = wake + iters;
	warm = cold + iters;
	cold_rt = warm + iters;
	warm_rt = cold_rt + iters;
	memset(&r, 0, sizeof(r));
	r.n = params;
	if (shm_arena_create(arena_mb << 20, SHM_ARENA_NO_RESERVE, &r.arena) ||
	    shm_slot_alloc(r.arena, SHM_ACC_HDR + params * 4, &r.acc_off) ||
	    shm_slot_alloc(r.arena, 64 + params * 4, &r.upd_off)) {
		fprintf(stderr, "bench_lifecycle: arena of %llu MB failed\n",
			(unsigned long long)arena_mb);
		free(buf);
		return 1;
	}
	seg = shm_arena_ptr(r.arena, r.upd_off);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = r.upd_off + 64;
	seg->n_elem = params;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;
	u = shm_arena_ptr(r.arena, r.upd_off + 64);
	for (uint64_t i = 0; i < params; i++)
		u[i] = (float)i;
	signal(SIGPIPE, SIG_IGN);
	if (rt_fnset_init(&r.set, fn_path, shm_arena_fd(r.arena), FN_DP_SHM_UNIX, NULL, -1) ||
	    waker_start(&w))
		goto out;

	/* Interleaved: one sample of each per iteration, so a busy moment hits all four. */
	for (int i = 0; i < iters; i++) {
		struct fn_config c;
		struct fn_params p;
		struct rt_fn *fn;
		uint64_t t, st;
		int err;

		if (spawn_floor(nop_path, &spawn[i]) || wake_floor(&w, &wake[i]))
			goto out;
		fill_config(&r, &c, &p, rt_fnset_reserve_ids(r.set, 1));
		err = rt_fnset_spawn(r.set, &c, &p, NULL, &fn);
		if (err) {
			fprintf(stderr, "bench_lifecycle: spawning %s: %s\n", fn_path, strerror(-err));
			goto out;
		}
		err = wait_kind(fn, FN_MSG_READY, &t, &st);
		if (!err && (st < fn->spawn_ns || st > t))
			err = -ERANGE; /* the stamp must lie between spawn and its reading */
		if (!err) {
			cold[i] = st - fn->spawn_ns;
			cold_rt[i] = t - fn->spawn_ns;
			err = fold_one(&r, fn);
		}
		/* The warm hand-off: the same function, a new config. */
		if (!err) {
			fill_config(&r, &c, &p, fn->id);
			err = rt_fn_configure(fn, &c, &p);
		}
		if (!err)
			err = wait_kind(fn, FN_MSG_READY, &t, &st);
		if (!err && (st < fn->config_ns || st > t))
			err = -ERANGE;
		if (!err) {
			warm[i] = st - fn->config_ns;
			warm_rt[i] = t - fn->config_ns;
			err = fold_one(&r, fn);
		}
		stop_fn(&r, fn);
		if (err) {
			fprintf(stderr, "bench_lifecycle: function %u: %s\n", c.fn_id, strerror(-err));
			goto out;
		}
	}
	spawn_med = median(spawn, iters);
	wake_med = median(wake, iters);
	printf("function lifecycle, %d iterations, %llu parameters, %llu MB arena (%s pages)\n",
	       iters, (unsigned long long)params, (unsigned long long)arena_mb,
	       shm_arena_is_huge(r.arena) ? "2 MiB" : "4 KiB");
	printf("%-44s %10s %10s %10s %9s\n", "", "median us", "p99 us", "floor us", "ratio");
	row("floor: posix_spawn+exit of a static nop", spawn, iters, spawn_med, 0);
	row("floor: eventfd wake between processes", wake, iters, wake_med, 0);
	row("cold start (spawn -> READY)", cold, iters, spawn_med, COLD_TARGET_NS);
	row("warm hand-off (config -> READY)", warm, iters, wake_med, WARM_TARGET_NS);
	row("  cold, READY read back (round trip)", cold_rt, iters, spawn_med, 0);
	row("  warm, READY read back (round trip)", warm_rt, iters, 2 * wake_med, 0);
	rc = 0;
out:
	waker_stop(&w);
	rt_fnset_destroy(r.set);
	shm_arena_destroy(r.arena);
	free(buf);
	return rc;
}
