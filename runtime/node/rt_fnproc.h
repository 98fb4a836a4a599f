/* SPDX-License-Identifier: MIT */
/* Aggregation-function processes: spawn, configure, feed, reap. */
#ifndef RT_FNPROC_H
#define RT_FNPROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "fn_abi.h"
#include "shm_abi.h"

/* Where a function is in its life, for reuse and for `tributary status`. */
enum rt_fn_state {
	RT_FN_COLD = 0,    /* spawned, config sent, not READY yet */
	RT_FN_FOLDING = 1, /* READY (or config sent to a warm one): working for a round */
	RT_FN_WARM = 2,    /* handed off (DONE), idle, reusable by any job or level */
	RT_FN_EXITING = 3, /* told to exit (scale to zero) */
};

/*
 * One function process as the runtime sees it. Owned by the rt_fnset that
 * spawned it; found by id (its routing key) with rt_fnset_find().
 */
struct rt_fn {
	uint32_t id;          /* routing key, > 0 */
	pid_t pid;            /* 0 once reaped */
	int sock;             /* runtime's end of the control channel, -1 once closed */
	int data; /* shm+bpf, tcp: runtime's end of the function's TCP socket, else -1 */
	struct fn_config cfg; /* what it was asked to do */
	void *owner;          /* the round it works for (runtime-private) */
	struct rt_fnset *set; /* the set that owns it */
	uint32_t node;        /* runtime-private: its leaf (or mid) number in the round's tree */
	uint64_t spawn_ns;    /* when it was spawned (CLOCK_MONOTONIC) */
	int state;            /* enum rt_fn_state */
	bool busy;            /* configured and not DONE: a death now loses work */
	uint64_t config_ns;   /* when its current config was sent */
	uint64_t idle_ns;     /* when it went warm */
	uint32_t served;      /* configs it has taken (> 1: reused) */
	bool secure;          /* a tributary-fn-sa: may run rt_fn_cfg_secure configs (and any other) */
	bool starting;        /* pre-started, its first READY not read yet (still starting) */
	bool exited;          /* reaped */
	bool eof_ctl;         /* control channel at end of stream */
	bool eof_data;        /* TCP socket at end of stream (or none) */
	int wait_status;      /* from waitpid once exited */
	/* records that could not be sent yet (socket full), in order */
	struct shm_desc *queue;
	uint32_t qhead, qlen, qcap;
	/* the event loop's read buffers and state for its channels */
	uint8_t cbuf[16 * SHM_DESC_SIZE] __attribute__((aligned(64))); /* control records */
	uint8_t rbuf[16 * SHM_DESC_SIZE] __attribute__((aligned(64))); /* TCP stream */
	size_t rlen;          /* bytes in rbuf (a stream may stop inside a record) */
	bool reading_ctl;
	bool reading_data;
	bool polling_out;
	/* traffic into the function, counted here where BPF does not count it */
	uint64_t msgs_in;
	uint64_t bytes_in;
};

struct rt_fnset;
struct ebpf_route;

/*
 * How a function set reaches its processes: one small table, so that a test
 * can run rounds, trees and recovery against fake functions (no processes).
 * Each returns 0 or -errno unless it says otherwise.
 */
struct rt_fn_ops {
	/*
	 * Start @fn (id, cfg and owner set): set fn->pid (> 0), fn->spawn_ns, fn->sock (its
	 * control channel) and fn->data (its TCP socket, or -1). On failure
	 * leave nothing open (a started process is killed by the caller).
	 */
	int (*start)(struct rt_fnset *set, struct rt_fn *fn);
	/* One message of @n 64-byte records on the control channel, with @fd (or -1) attached. */
	int (*chan_send)(struct rt_fn *fn, const void *recs, size_t n, int fd);
	/* Descriptors to @fn by its data path: how many went (>= 1), or -EAGAIN, or -errno. */
	int (*send)(struct rt_fn *fn, const struct shm_desc *d, uint32_t n);
	/* tcp: @d then the payload, blocking until all of it went. */
	int (*send_payload)(struct rt_fn *fn, const struct shm_desc *d, const struct iovec *iov,
			    int iovcnt);
	/* Send signal @sig to @fn's process. */
	void (*signal)(struct rt_fn *fn, int sig);
	/*
	 * @pid < 0: an exited child without blocking (its pid, 0 if none, -1 if
	 * no children); else wait for @pid. *status (if not NULL) as waitpid's.
	 */
	pid_t (*wait)(struct rt_fnset *set, pid_t pid, int *status);
};

/* posix_spawn, socketpairs, kill and waitpid: what a set uses unless told otherwise. */
extern const struct rt_fn_ops rt_fn_proc_ops;

/*
 * @fn_path is the tributary-fn binary (borrowed, must outlive the set);
 * @arena_fd is passed to each function with its first config (borrowed).
 * @dataplane is an enum fn_dataplane; for FN_DP_SHM_BPF, @route is the loaded
 * router (borrowed) and @gw_sock the gateway's socket in its map (borrowed).
 * Returns 0 or -ENOMEM.
 */
int rt_fnset_init(struct rt_fnset **out, const char *fn_path, int arena_fd, uint32_t dataplane,
		  struct ebpf_route *route, int gw_sock);
uint32_t rt_fnset_dataplane(const struct rt_fnset *set);
/*
 * @sa_path is the tributary-fn-sa binary (borrowed, must outlive the set): what a config for
 * which rt_fn_cfg_secure() holds is spawned from. Without one such a spawn fails (-ENOEXEC).
 */
void rt_fnset_set_sa_path(struct rt_fnset *set, const char *sa_path);
/*
 * Whether @cfg needs tributary-fn-sa: a secure job's unmasking shard (FN_ROLE_SHARD with
 * FN_ALGO_SECAGG), the one config whose PRG is in that binary alone (functions/meson.build).
 */
bool rt_fn_cfg_secure(const struct fn_config *cfg);
/* Tests: reach the functions through @ops (borrowed, static) with @ctx; before the first spawn. */
void rt_fnset_set_ops(struct rt_fnset *set, const struct rt_fn_ops *ops, void *ctx);
void *rt_fnset_ops_ctx(const struct rt_fnset *set);
/* Kills and reaps every function still running, then frees the set. Accepts NULL. */
void rt_fnset_destroy(struct rt_fnset *set);

/*
 * Spawn a function (posix_spawn, channel on fd FN_CHANNEL_FD; tributary-fn-sa when
 * rt_fn_cfg_secure(@cfg), else tributary-fn) and send it @cfg with the arena fd. cfg->fn_id must be unused. The set owns the
 * returned function (borrowed by the caller until it is reaped and removed).
 * Returns 0 or -errno.
 */
int rt_fnset_spawn(struct rt_fnset *set, const struct fn_config *cfg,
		   const struct fn_params *par, void *owner, struct rt_fn **out);
/*
 * Pre-start a function (--fn-pool): spawn it and send FN_MSG_ATTACH with the
 * arena fd; it is RT_FN_WARM at once, idle, with a fresh id, served 0. Its
 * READY (value FN_READY_IDLE) measures its start. Returns 0 or -errno.
 */
int rt_fnset_prestart(struct rt_fnset *set, struct rt_fn **out);
/*
 * Give a warm function a new config and the job's params, in one message
 * (cfg->fn_id is overwritten with its id). 0 or -errno (-ENOEXEC: @cfg needs
 * tributary-fn-sa and @fn is a plain tributary-fn).
 */
int rt_fn_configure(struct rt_fn *fn, struct fn_config *cfg, const struct fn_params *par);
/* Send a control record (FN_MSG_FLUSH, FN_MSG_EXIT). 0 or -errno. */
int rt_fn_ctl(struct rt_fn *fn, uint16_t kind, uint32_t value);
/* SIGKILL @fn's process, if it has not exited; it is reaped and judged as any other exit. */
void rt_fn_kill(struct rt_fn *fn);
/* Borrowed pointer or NULL. */
struct rt_fn *rt_fnset_find(struct rt_fnset *set, uint32_t id);
/* Reserve @n consecutive unused ids; returns the first. */
uint32_t rt_fnset_reserve_ids(struct rt_fnset *set, uint32_t n);

/*
 * Queue @d for @fn and try to send now: over its control channel (shm+unix)
 * or through the gateway's socket, where sk_msg redirects it (shm+bpf).
 * Returns 0 (sent or queued: the event loop flushes the queue when the
 * socket drains), or -EPIPE when the function's channel is closed, -ENOMEM.
 */
int rt_fn_send(struct rt_fn *fn, const struct shm_desc *d);
/*
 * Queue @d for @fn without sending: it goes, in order, at the next rt_fn_flush(). 0,
 * -EPIPE (the channel is closed) or -ENOMEM, as rt_fn_send().
 */
int rt_fn_send_later(struct rt_fn *fn, const struct shm_desc *d);
/*
 * tcp: send @d followed by @len payload bytes from @iov (blocking: this is
 * the copying baseline). Returns 0 or -errno.
 */
int rt_fn_send_payload(struct rt_fn *fn, const struct shm_desc *d, const struct iovec *iov,
		       int iovcnt);
/* Send what is queued; 0 when empty, -EAGAIN when the socket is full again, -errno. */
int rt_fn_flush(struct rt_fn *fn);
bool rt_fn_has_queue(const struct rt_fn *fn);

/*
 * Reap exited children (non-blocking) and mark them exited. @cb is called for
 * each (still valid during the call); it returns true to have the function
 * removed and freed at once, false to keep it (e.g. until its channel's last
 * records are read). Children that are not functions are reaped and ignored.
 */
void rt_fnset_reap(struct rt_fnset *set, bool (*cb)(struct rt_fn *fn, void *arg), void *arg);
/* Remove and free a function that has exited (fn->exited). */
void rt_fnset_remove(struct rt_fnset *set, struct rt_fn *fn);
/* Number of function processes alive. */
uint32_t rt_fnset_count(const struct rt_fnset *set);
/* Call @cb for every function (no removal allowed inside). */
void rt_fnset_foreach(struct rt_fnset *set, void (*cb)(struct rt_fn *fn, void *arg), void *arg);

#endif
