// SPDX-License-Identifier: MIT
/* Aggregation-function processes: posix_spawn with a SEQPACKET channel, configs, queued sends. */
#include "rt_fnproc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm_chan.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

extern char **environ;

struct rt_fnset {
	const char *fn_path;
	int arena_fd;
	uint32_t next_id;
	/* open addressing by id; a slot is NULL or a live function */
	struct rt_fn **tab;
	uint32_t cap; /* power of two */
	uint32_t count;
};

int rt_fnset_init(struct rt_fnset **out, const char *fn_path, int arena_fd)
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
	set->next_id = 1;
	*out = set;
	return 0;
}

static uint32_t slot_of(const struct rt_fnset *set, uint32_t id)
{
	return (id * 2654435761u) & (set->cap - 1);
}

struct rt_fn *rt_fnset_find(struct rt_fnset *set, uint32_t id)
{
	for (uint32_t i = slot_of(set, id), n = 0; n < set->cap; i = (i + 1) & (set->cap - 1), n++) {
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
	trib_free(fn->queue);
	trib_free(fn);
}

int rt_fnset_spawn(struct rt_fnset *set, const struct fn_config *cfg, void *owner,
		   struct rt_fn **out)
{
	posix_spawn_file_actions_t fa;
	char *argv[] = { (char *)"tributary-fn", NULL };
	struct rt_fn *fn;
	int sv[2];
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
	fn->id = cfg->fn_id;
	fn->cfg = *cfg;
	fn->owner = owner;
	fn->sock = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		err = -errno;
		goto err_free;
	}
	err = -posix_spawn_file_actions_init(&fa);
	if (err)
		goto err_close_pair;
	/* dup2 onto the well-known fd clears CLOEXEC there; everything else stays closed. */
	err = -posix_spawn_file_actions_adddup2(&fa, sv[1], FN_CHANNEL_FD);
	if (err)
		goto err_fa;
	fn->spawn_ns = trib_now_ns();
	/* posix_spawn (vfork+exec): never fork the runtime, whose arena may be huge. */
	err = -posix_spawn(&fn->pid, set->fn_path, &fa, NULL, argv, environ);
	if (err) {
		trib_error("spawning %s: %s", set->fn_path, strerror(-err));
		goto err_fa;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(sv[1]);
	fn->sock = sv[0];
	if (fcntl(fn->sock, F_SETFL, O_NONBLOCK)) {
		err = -errno;
		goto err_kill;
	}
	err = shm_chan_send(fn->sock, cfg, 1, set->arena_fd);
	if (err)
		goto err_kill;
	tab_put(set, fn);
	set->count++;
	*out = fn;
	return 0;

err_kill:
	kill(fn->pid, SIGKILL);
	waitpid(fn->pid, NULL, 0);
	fn_free(fn);
	return err;
err_fa:
	posix_spawn_file_actions_destroy(&fa);
err_close_pair:
	close(sv[0]);
	close(sv[1]);
err_free:
	trib_free(fn);
	return err;
}

bool rt_fn_has_queue(const struct rt_fn *fn)
{
	return fn->qlen > 0;
}

int rt_fn_flush(struct rt_fn *fn)
{
	while (fn->qlen) {
		uint32_t n = fn->qlen;
		int err;

		/* The queue is a ring; send the contiguous run from its head. */
		if (n > fn->qcap - fn->qhead)
			n = fn->qcap - fn->qhead;
		if (n > SHM_CHAN_BATCH)
			n = SHM_CHAN_BATCH;
		err = shm_chan_send(fn->sock, &fn->queue[fn->qhead], n, -1);
		if (err)
			return err;
		fn->qhead = (fn->qhead + n) % fn->qcap;
		fn->qlen -= n;
	}
	fn->qhead = 0;
	return 0;
}

int rt_fn_send(struct rt_fn *fn, const struct shm_desc *d)
{
	int err;

	if (fn->sock < 0)
		return -EPIPE;
	if (!fn->qlen) {
		err = shm_chan_send(fn->sock, d, 1, -1);
		if (err != -EAGAIN)
			return err == -ECONNRESET ? -EPIPE : err;
	}
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
		pid_t pid = waitpid(-1, &status, WNOHANG);
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
			kill(fn->pid, SIGTERM);
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
			kill(fn->pid, SIGKILL);
			waitpid(fn->pid, NULL, 0);
		}
		fn_free(fn);
	}
	trib_free(set->tab);
	trib_free(set);
}
