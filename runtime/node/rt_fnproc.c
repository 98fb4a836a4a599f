// SPDX-License-Identifier: MIT
/* Aggregation-function processes: posix_spawn with a SEQPACKET channel, configs, queued sends. */
#include "rt_fnproc.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ebpf_abi.h"
#include "ebpf_route.h"
#include "shm_chan.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

extern char **environ;

struct rt_fnset {
	const char *fn_path;
	const char *sa_path; /* tributary-fn-sa, or NULL: secure shards cannot start */
	bool no_fifo; /* SCHED_FIFO was refused once (EPERM): not asked again */
	bool in_fifo; /* this thread is SCHED_FIFO now, for a start (fifo_enter) */
	int arena_fd;
	uint32_t dataplane;       /* enum fn_dataplane */
	struct ebpf_route *route; /* shm+bpf: the router (borrowed) */
	int gw_sock;              /* shm+bpf: the gateway's socket in the router's map */
	const struct rt_fn_ops *ops; /* how processes are reached (rt_fn_proc_ops unless a test's) */
	void *ops_ctx;
	uint32_t next_id;
	/* open addressing by id; a slot is NULL or a live function */
	struct rt_fn **tab;
	uint32_t cap; /* power of two */
	uint32_t count;
};

uint32_t rt_fnset_dataplane(const struct rt_fnset *set)
{
	return set->dataplane;
}

void rt_fnset_set_sa_path(struct rt_fnset *set, const char *sa_path)
{
	set->sa_path = sa_path;
}

bool rt_fn_cfg_secure(const struct fn_config *cfg)
{
	return cfg->role == FN_ROLE_SHARD && cfg->algorithm == FN_ALGO_SECAGG;
}

int rt_fnset_init(struct rt_fnset **out, const char *fn_path, int arena_fd, uint32_t dataplane,
		  struct ebpf_route *route, int gw_sock)
{
	struct rt_fnset *set = trib_calloc(1, sizeof(*set));

	if (!set)
		return -ENOMEM;
	set->cap = 64;
	set->tab = trib_calloc(set->cap, sizeof(*set->tab));
	if (!set->tab) {
		trib_free(set);
		return -ENOMEM;
	}
	set->fn_path = fn_path;
	set->arena_fd = arena_fd;
	set->dataplane = dataplane;
	set->route = route;
	set->gw_sock = gw_sock;
	set->next_id = 1;
	set->ops = &rt_fn_proc_ops;
	*out = set;
	return 0;
}

static uint32_t slot_of(const struct rt_fnset *set, uint32_t id)
{
	return (id * 2654435761u) & (set->cap - 1);
}

struct rt_fn *rt_fnset_find(struct rt_fnset *set, uint32_t id)
{
	for (uint32_t i = slot_of(set, id), n = 0; n < set->cap;
	     i = (i + 1) & (set->cap - 1), n++) {
		if (!set->tab[i])
			return NULL;
		if (set->tab[i]->id == id)
			return set->tab[i];
	}
	return NULL;
}

static void tab_put(struct rt_fnset *set, struct rt_fn *fn)
{
	uint32_t i = slot_of(set, fn->id);

	while (set->tab[i])
		i = (i + 1) & (set->cap - 1);
	set->tab[i] = fn;
}

static int tab_grow(struct rt_fnset *set)
{
	struct rt_fn **old = set->tab;
	uint32_t oldcap = set->cap;

	set->tab = trib_calloc(oldcap * 2, sizeof(*set->tab));
	if (!set->tab) {
		set->tab = old;
		return -ENOMEM;
	}
	set->cap = oldcap * 2;
	for (uint32_t i = 0; i < oldcap; i++)
		if (old[i])
			tab_put(set, old[i]);
	trib_free(old);
	return 0;
}

/* Backward-shift deletion keeps probe chains intact. */
static void tab_del(struct rt_fnset *set, struct rt_fn *fn)
{
	uint32_t i = slot_of(set, fn->id);

	while (set->tab[i] != fn)
		i = (i + 1) & (set->cap - 1);
	set->tab[i] = NULL;
	for (uint32_t j = (i + 1) & (set->cap - 1); set->tab[j]; j = (j + 1) & (set->cap - 1)) {
		struct rt_fn *f = set->tab[j];
		uint32_t home = slot_of(set, f->id);

		/* Move f back if its home is not in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			set->tab[i] = f;
			set->tab[j] = NULL;
			i = j;
		}
	}
}

uint32_t rt_fnset_reserve_ids(struct rt_fnset *set, uint32_t n)
{
	uint32_t first = set->next_id;

	set->next_id += n;
	return first;
}

static uint32_t alive(const struct rt_fnset *set)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < set->cap; i++)
		if (set->tab[i] && set->tab[i]->pid > 0)
			n++;
	return n;
}

uint32_t rt_fnset_count(const struct rt_fnset *set)
{
	return alive(set);
}

static void fn_free(struct rt_fn *fn)
{
	if (fn->sock >= 0)
		close(fn->sock);
	if (fn->data >= 0)
		close(fn->data);
	trib_free(fn->queue);
	trib_free(fn);
}

/*
 * How the function's TCP socket joins the router: the runtime makes both
 * ends (a loopback pair), inserts the function's end into the SOCKHASH under
 * the function's id, then hands that end to the function. Doing it from user
 * space, rather than with a sockops program, ties the map entry to the id we
 * chose before the process exists, needs no cgroup attachment, and leaves no
 * window in which the socket exists but is not routable. The kernel drops the
 * entry by itself when the socket closes (the function exits).
 */
/* A CONFIG and its PARAMS as two records of one message, so no input can come between. */
static int send_config(struct rt_fn *fn, const struct fn_config *cfg, const struct fn_params *par,
		       int fd)
{
	struct shm_desc recs[2];
	struct fn_params p = *par;

	p.version = FN_ABI_VERSION;
	p.kind = FN_MSG_PARAMS;
	p.fn_id = cfg->fn_id;
	memcpy(&recs[0], cfg, sizeof(*cfg));
	memcpy(&recs[1], &p, sizeof(p));
	return fn->set->ops->chan_send(fn, recs, 2, fd);
}

/*
 * A start (spawn, then its ATTACH or CONFIG) runs with this thread SCHED_FIFO,
 * priority 1. Why: a process started while the gateway and the folding
 * functions hold both cores waited 1-40 ms (cold start p99 4-40 ms under a
 * 1000-client round, docs/BENCHMARKS.md). The perf sched trace said where:
 * with the child alone made FIFO (POSIX_SPAWN_SETSCHEDULER), it was in its
 * poll() 0.8-1 ms after the fork, and then waited 1-5 ms for its first
 * message, because this thread, back in the normal class after posix_spawn,
 * lost its CPU before it sent it. So the thread is FIFO from before the
 * spawn (the vfork child inherits it: its exec and loader run at once) to
 * after the first message (a few syscalls), then back in its class
 * (SCHED_OTHER keeps its nice). The function is told (argv FN_ARG_IDLE_FIFO)
 * that its class to fold in is SCHED_OTHER: it drops there after its READY
 * (functions/fn_sched.c) and is FIFO again only while idle.
 */
static void fifo_enter(struct rt_fnset *set)
{
	struct sched_param rt = { .sched_priority = 1 };

	/* A runtime the operator put in another class passes it on unchanged. */
	if (set->no_fifo || sched_getscheduler(0) != SCHED_OTHER)
		return;
	/* Linux: the calling thread only. */
	if (sched_setscheduler(0, SCHED_FIFO, &rt)) {
		/* No CAP_SYS_NICE nor RLIMIT_RTPRIO: said once, then normal starts. */
		trib_warn("SCHED_FIFO for starting functions: %s; they start in the normal "
			  "class (slower to start and to wake on a busy node)", strerror(errno));
		set->no_fifo = true;
		return;
	}
	set->in_fifo = true;
}

static void fifo_leave(struct rt_fnset *set)
{
	struct sched_param other = { .sched_priority = 0 };

	if (!set->in_fifo)
		return;
	set->in_fifo = false;
	if (sched_setscheduler(0, SCHED_OTHER, &other))
		trib_error("leaving SCHED_FIFO after starting a function: %s", strerror(errno));
}

/*
 * Start @fn's process with @chan on FN_CHANNEL_FD and @data (if >= 0) on
 * FN_DATA_FD (both borrowed: the caller closes its copies). 0 or -errno.
 */
static int spawn_proc(struct rt_fnset *set, struct rt_fn *fn, int chan, int data)
{
	posix_spawn_file_actions_t fa;
	const char *path = fn->secure ? set->sa_path : set->fn_path;
	char *argv[] = { fn->secure ? (char *)"tributary-fn-sa" : (char *)"tributary-fn",
			 set->in_fifo ? (char *)FN_ARG_IDLE_FIFO : NULL, NULL };
	int err;

	if (!path) {
		trib_error("fn %u: a secure job's unmasking shard needs tributary-fn-sa, and this "
			   "node has none", fn->id);
		return -ENOEXEC;
	}
	err = -posix_spawn_file_actions_init(&fa);
	if (err)
		return err;
	/* dup2 onto the well-known fds clears CLOEXEC there; everything else stays closed. */
	err = -posix_spawn_file_actions_adddup2(&fa, chan, FN_CHANNEL_FD);
	if (!err && data >= 0)
		err = -posix_spawn_file_actions_adddup2(&fa, data, FN_DATA_FD);
	if (!err && set->dataplane == FN_DP_SHM_BPF)
		err = -posix_spawn_file_actions_adddup2(&fa, ebpf_route_stats_fd(set->route),
							FN_STATS_FD);
	/*
	 * And nothing else, even an fd some library opened without CLOEXEC (a function must
	 * hold no client socket or store file of the runtime; a test runner's pipes once kept
	 * its workers alive through our children): glibc >= 2.34 closes the rest in the child.
	 */
	if (!err)
		err = -posix_spawn_file_actions_addclosefrom_np(&fa, FN_STATS_FD + 1);
	if (err)
		goto out;
	fn->spawn_ns = trib_now_ns();
	/* posix_spawn (vfork+exec): never fork the runtime, whose arena may be huge. */
	err = -posix_spawn(&fn->pid, path, &fa, NULL, argv, environ);
	if (err)
		trib_error("spawning %s: %s", path, strerror(-err));
out:
	posix_spawn_file_actions_destroy(&fa);
	return err;
}

/*
 * The process op start: channels (a SEQPACKET pair; a TCP pair in shm+bpf
 * and tcp, its far end in the router's map in shm+bpf), then the process.
 * On success fn->pid, fn->sock and fn->data are set (non-blocking); on
 * failure nothing is left open.
 */
static int proc_start(struct rt_fnset *set, struct rt_fn *fn)
{
	int sv[2], tp[2] = { -1, -1 };
	int err;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return -errno;
	if (set->dataplane != FN_DP_SHM_UNIX) {
		err = ebpf_tcp_pair(tp);
		if (err)
			goto err_close_pair;
		if (set->dataplane == FN_DP_SHM_BPF) {
			err = ebpf_route_add(set->route, fn->id, tp[1]);
			if (err) {
				trib_error("fn %u: adding its socket to the router: %s", fn->id,
					   strerror(-err));
				goto err_close_tcp;
			}
		}
	}
	err = spawn_proc(set, fn, sv[1], tp[1]);
	if (err)
		goto err_close_tcp;
	close(sv[1]);
	fn->sock = sv[0];
	if (tp[1] >= 0)
		close(tp[1]);
	fn->data = tp[0];
	if (fcntl(fn->sock, F_SETFL, O_NONBLOCK) ||
	    (fn->data >= 0 && fcntl(fn->data, F_SETFL, O_NONBLOCK)))
		return -errno; /* the process runs: the caller kills it */
	return 0;

err_close_tcp:
	if (tp[0] >= 0) {
		close(tp[0]);
		close(tp[1]);
	}
err_close_pair:
	close(sv[0]);
	close(sv[1]);
	return err;
}

int rt_fnset_spawn(struct rt_fnset *set, const struct fn_config *cfg,
		   const struct fn_params *par, void *owner, struct rt_fn **out)
{
	struct fn_config c = *cfg;
	struct rt_fn *fn;
	int err;

	if (rt_fnset_find(set, cfg->fn_id))
		return -EEXIST;
	if ((set->count + 1) * 2 > set->cap) {
		err = tab_grow(set);
		if (err)
			return err;
	}
	fn = trib_calloc(1, sizeof(*fn));
	if (!fn)
		return -ENOMEM;
	c.dataplane = set->dataplane;
	fn->id = cfg->fn_id;
	fn->secure = rt_fn_cfg_secure(cfg);
	fn->cfg = c;
	fn->owner = owner;
	fn->set = set;
	fn->sock = -1;
	fn->data = -1;
	fifo_enter(set);
	err = set->ops->start(set, fn);
	if (!err)
		err = send_config(fn, &c, par, set->arena_fd);
	fifo_leave(set);
	if (err)
		goto err_kill;
	fn->state = RT_FN_COLD;
	fn->busy = true;
	fn->config_ns = fn->spawn_ns;
	fn->served = 1;
	fn->eof_data = fn->data < 0;
	tab_put(set, fn);
	set->count++;
	*out = fn;
	return 0;

err_kill:
	if (fn->pid > 0) {
		set->ops->signal(fn, SIGKILL);
		set->ops->wait(set, fn->pid, NULL);
	}
	fn_free(fn);
	return err;
}

int rt_fnset_prestart(struct rt_fnset *set, struct rt_fn **out)
{
	struct fn_ctl c;
	struct rt_fn *fn;
	int err;

	if ((set->count + 1) * 2 > set->cap) {
		err = tab_grow(set);
		if (err)
			return err;
	}
	fn = trib_calloc(1, sizeof(*fn));
	if (!fn)
		return -ENOMEM;
	fn->id = rt_fnset_reserve_ids(set, 1);
	fn->cfg.fn_id = fn->id;
	fn->cfg.dataplane = set->dataplane;
	fn->set = set;
	fn->sock = -1;
	fn->data = -1;
	fifo_enter(set);
	err = set->ops->start(set, fn);
	if (!err) {
		memset(&c, 0, sizeof(c));
		c.version = FN_ABI_VERSION;
		c.kind = FN_MSG_ATTACH;
		c.fn_id = fn->id;
		err = set->ops->chan_send(fn, &c, 1, set->arena_fd);
	}
	fifo_leave(set);
	if (err) {
		if (fn->pid > 0) {
			set->ops->signal(fn, SIGKILL);
			set->ops->wait(set, fn->pid, NULL);
		}
		fn_free(fn);
		return err;
	}
	/*
	 * Warm at once: a CONFIG sent before the function has even started
	 * waits behind the ATTACH on the channel (one ordered stream), so the
	 * function may be configured now; its READY after the ATTACH is only
	 * the measure of its start.
	 */
	fn->state = RT_FN_WARM;
	fn->starting = true;
	fn->config_ns = fn->spawn_ns;
	fn->idle_ns = fn->spawn_ns;
	fn->eof_data = fn->data < 0;
	tab_put(set, fn);
	set->count++;
	*out = fn;
	return 0;
}

int rt_fn_configure(struct rt_fn *fn, struct fn_config *cfg, const struct fn_params *par)
{
	uint64_t t;
	int err;

	if (fn->sock < 0 || fn->state != RT_FN_WARM)
		return -EBUSY;
	if (rt_fn_cfg_secure(cfg) && !fn->secure)
		return -ENOEXEC;
	cfg->fn_id = fn->id;
	cfg->dataplane = fn->set->dataplane;
	/* Before the send: the function may be ready (and stamp READY) before it returns. */
	t = trib_now_ns();
	err = send_config(fn, cfg, par, -1);
	if (err)
		return err;
	fn->cfg = *cfg;
	fn->state = RT_FN_FOLDING;
	fn->busy = true;
	fn->config_ns = t;
	fn->served++;
	return 0;
}

int rt_fn_ctl(struct rt_fn *fn, uint16_t kind, uint32_t value)
{
	struct fn_ctl c;

	if (fn->sock < 0)
		return -EPIPE;
	memset(&c, 0, sizeof(c));
	c.version = FN_ABI_VERSION;
	c.kind = kind;
	c.fn_id = fn->id;
	c.job = fn->cfg.job;
	c.round = fn->cfg.round;
	c.value = value;
	/* Control records are rare and tiny: a full channel here means a stuck function. */
	return fn->set->ops->chan_send(fn, &c, 1, -1);
}

bool rt_fn_has_queue(const struct rt_fn *fn)
{
	return fn->qlen > 0;
}

/* The process op send: @n records; how many went (>= 1), -EAGAIN (none went), or -errno. */
static int proc_send_recs(struct rt_fn *fn, const struct shm_desc *d, uint32_t n)
{
	struct rt_fnset *set = fn->set;
	int err;

	if (set->dataplane == FN_DP_SHM_BPF) {
		/*
		 * The gateway's socket is a stream: it may take part of a batch.
		 * sk_msg decides per 64-byte record, so a record must never be
		 * left half sent: finish the one we started (< 64 bytes).
		 */
		ssize_t w = send(set->gw_sock, d, n * SHM_DESC_SIZE, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
		if (w % SHM_DESC_SIZE) {
			size_t rest = SHM_DESC_SIZE - (size_t)w % SHM_DESC_SIZE;
			const uint8_t *p = (const uint8_t *)d + w;

			while (rest) {
				ssize_t r = send(set->gw_sock, p, rest, MSG_NOSIGNAL);

				if (r < 0 && errno != EINTR && errno != EAGAIN)
					return -errno;
				if (r > 0) {
					p += r;
					rest -= (size_t)r;
					w += r;
				}
			}
		}
		return (int)(w / SHM_DESC_SIZE);
	}
	err = set->ops->chan_send(fn, d, n, -1);
	return err ? err : (int)n;
}

int rt_fn_flush(struct rt_fn *fn)
{
	while (fn->qlen) {
		uint32_t n = fn->qlen;
		int sent;

		/* The queue is a ring; send the contiguous run from its head. */
		if (n > fn->qcap - fn->qhead)
			n = fn->qcap - fn->qhead;
		if (n > SHM_CHAN_BATCH)
			n = SHM_CHAN_BATCH;
		sent = fn->set->ops->send(fn, &fn->queue[fn->qhead], n);
		if (sent < 0)
			return sent;
		fn->qhead = (fn->qhead + (uint32_t)sent) % fn->qcap;
		fn->qlen -= (uint32_t)sent;
	}
	fn->qhead = 0;
	return 0;
}

/* Append @d to @fn's queue (counted as sent: the queue goes before anything after it). */
static int fn_enqueue(struct rt_fn *fn, const struct shm_desc *d)
{
	if (fn->qlen == fn->qcap) {
		uint32_t ncap = fn->qcap ? fn->qcap * 2 : 64;
		struct shm_desc *nq = trib_malloc(ncap * sizeof(*nq));

		if (!nq)
			return -ENOMEM;
		for (uint32_t i = 0; i < fn->qlen; i++)
			nq[i] = fn->queue[(fn->qhead + i) % fn->qcap];
		trib_free(fn->queue);
		fn->queue = nq;
		fn->qcap = ncap;
		fn->qhead = 0;
	}
	fn->queue[(fn->qhead + fn->qlen) % fn->qcap] = *d;
	fn->qlen++;
	fn->msgs_in++;
	fn->bytes_in += SHM_DESC_SIZE;
	return 0;
}

int rt_fn_send_later(struct rt_fn *fn, const struct shm_desc *d)
{
	return fn->sock < 0 ? -EPIPE : fn_enqueue(fn, d);
}

int rt_fn_send(struct rt_fn *fn, const struct shm_desc *d)
{
	if (fn->sock < 0)
		return -EPIPE;
	if (!fn->qlen) {
		int sent = fn->set->ops->send(fn, d, 1);

		if (sent == 1) {
			fn->msgs_in++;
			fn->bytes_in += SHM_DESC_SIZE;
			return 0;
		}
		if (sent != -EAGAIN)
			return sent == -ECONNRESET ? -EPIPE : sent;
	}
	return fn_enqueue(fn, d);
}

/* The process op send_payload: @d then @iov_in on the TCP socket, blocking. */
static int proc_send_payload(struct rt_fn *fn, const struct shm_desc *d,
			     const struct iovec *iov_in, int iovcnt)
{
	struct iovec iov[1 + 64];
	struct msghdr mh;
	size_t total = SHM_DESC_SIZE;
	int fl;

	iov[0].iov_base = (void *)d;
	iov[0].iov_len = SHM_DESC_SIZE;
	for (int i = 0; i < iovcnt; i++) {
		iov[1 + i] = iov_in[i];
		total += iov_in[i].iov_len;
	}
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = (size_t)iovcnt + 1;
	/* The baseline copies through the kernel and waits for the peer: blocking, on purpose. */
	fl = fcntl(fn->data, F_GETFL);
	fcntl(fn->data, F_SETFL, fl & ~O_NONBLOCK);
	while (mh.msg_iovlen) {
		ssize_t w = sendmsg(fn->data, &mh, MSG_NOSIGNAL);

		if (w < 0) {
			int err = -errno;

			if (err == -EINTR)
				continue;
			fcntl(fn->data, F_SETFL, fl);
			return err;
		}
		while (mh.msg_iovlen && (size_t)w >= mh.msg_iov->iov_len) {
			w -= (ssize_t)mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + w;
			mh.msg_iov->iov_len -= (size_t)w;
		}
	}
	fcntl(fn->data, F_SETFL, fl);
	return 0;
}

int rt_fn_send_payload(struct rt_fn *fn, const struct shm_desc *d, const struct iovec *iov,
		       int iovcnt)
{
	size_t total = SHM_DESC_SIZE;
	int err;

	if (fn->data < 0)
		return -EPIPE;
	if (iovcnt > 64)
		return -E2BIG;
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	err = fn->set->ops->send_payload(fn, d, iov, iovcnt);
	if (err)
		return err;
	fn->msgs_in++;
	fn->bytes_in += total;
	return 0;
}

void rt_fnset_remove(struct rt_fnset *set, struct rt_fn *fn)
{
	tab_del(set, fn);
	set->count--;
	fn_free(fn);
}

void rt_fnset_reap(struct rt_fnset *set, bool (*cb)(struct rt_fn *fn, void *arg), void *arg)
{
	for (;;) {
		int status;
		pid_t pid = set->ops->wait(set, -1, &status);
		struct rt_fn *fn = NULL;

		if (pid <= 0)
			return;
		for (uint32_t i = 0; i < set->cap; i++) {
			if (set->tab[i] && set->tab[i]->pid == pid) {
				fn = set->tab[i];
				break;
			}
		}
		if (!fn)
			continue;
		fn->exited = true;
		fn->wait_status = status;
		fn->pid = 0;
		if (!cb || cb(fn, arg))
			rt_fnset_remove(set, fn);
	}
}

void rt_fnset_foreach(struct rt_fnset *set, void (*cb)(struct rt_fn *fn, void *arg), void *arg)
{
	for (uint32_t i = 0; i < set->cap; i++)
		if (set->tab[i])
			cb(set->tab[i], arg);
}

void rt_fnset_destroy(struct rt_fnset *set)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };

	if (!set)
		return;
	for (uint32_t i = 0; i < set->cap; i++) {
		struct rt_fn *fn = set->tab[i];

		if (fn && fn->pid > 0)
			set->ops->signal(fn, SIGTERM);
	}
	/* Give them a moment, then make sure. */
	for (int tries = 0; tries < 100 && alive(set); tries++) {
		rt_fnset_reap(set, NULL, NULL);
		if (alive(set))
			nanosleep(&ts, NULL);
	}
	/* Exited but kept (waiting for end of stream) ones are freed below too. */
	for (uint32_t i = 0; i < set->cap; i++) {
		struct rt_fn *fn = set->tab[i];

		if (!fn)
			continue;
		set->tab[i] = NULL;
		if (fn->pid > 0) {
			set->ops->signal(fn, SIGKILL);
			set->ops->wait(set, fn->pid, NULL);
		}
		fn_free(fn);
	}
	trib_free(set->tab);
	trib_free(set);
}

void rt_fn_kill(struct rt_fn *fn)
{
	if (fn->pid > 0 && !fn->exited)
		fn->set->ops->signal(fn, SIGKILL);
}

static int proc_chan_send(struct rt_fn *fn, const void *recs, size_t n, int fd)
{
	return shm_chan_send(fn->sock, recs, n, fd);
}

static void proc_signal(struct rt_fn *fn, int sig)
{
	kill(fn->pid, sig);
}

static pid_t proc_wait(struct rt_fnset *set, pid_t pid, int *status)
{
	(void)set;
	return pid < 0 ? waitpid(-1, status, WNOHANG) : waitpid(pid, status, 0);
}

const struct rt_fn_ops rt_fn_proc_ops = {
	.start = proc_start,
	.chan_send = proc_chan_send,
	.send = proc_send_recs,
	.send_payload = proc_send_payload,
	.signal = proc_signal,
	.wait = proc_wait,
};

void rt_fnset_set_ops(struct rt_fnset *set, const struct rt_fn_ops *ops, void *ctx)
{
	set->ops = ops;
	set->ops_ctx = ctx;
}

void *rt_fnset_ops_ctx(const struct rt_fnset *set)
{
	return set->ops_ctx;
}
