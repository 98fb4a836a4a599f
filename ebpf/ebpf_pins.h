/* SPDX-License-Identifier: MIT */
/* Inside ebpf/: the router's pin directory, named by owner and boot id and held with flock(2). */
#ifndef EBPF_PINS_H
#define EBPF_PINS_H

#include <limits.h>
#include <stddef.h>

/* How many live routers of one owner a host may hold at once (suffixes -1 .. -N-1). */
#define EBPF_PINS_PER_OWNER 64

/* A claimed pin directory: EBPF_PIN_ROOT/<owner>/<boot id>[-k], empty when claimed. */
struct ebpf_pin_dir {
	char path[PATH_MAX];
	int fd; /* the directory, open and flock(LOCK_EX)ed while it is ours; -1 when not */
};

/*
 * Claim a pin directory for @owner (1-64 of [A-Za-z0-9._-], not starting
 * with '.'), under EBPF_PIN_ROOT (bpffs must be mounted). Under the owner
 * directory's lock: every directory of the same owner that no live router
 * holds (its holder died: a crash, a container restart, an earlier boot's
 * leftovers) is removed, then the first name <boot id>, <boot id>-1, ...
 * that no live router holds is made and locked. Other owners' directories
 * are never touched. 0 with *out filled, or -errno with @why set.
 */
int ebpf__pin_dir_claim(const char *owner, struct ebpf_pin_dir *out, char *why, size_t why_len);

/*
 * Unlink what is in the directory, remove it (and the owner directory if
 * that is then empty), then drop the lock. Safe on a half-pinned directory;
 * accepts a directory that was never claimed (fd -1).
 */
void ebpf__pin_dir_release(struct ebpf_pin_dir *d);

/* The kernel's boot id (36 characters) into @out. 0 or -errno. */
int ebpf__boot_id(char *out, size_t len);

#endif
