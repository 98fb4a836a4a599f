/* SPDX-License-Identifier: MIT */
/* Loader of the sk_msg descriptor router: load, attach, pin, add/remove sockets, read counters. */
#ifndef EBPF_ROUTE_H
#define EBPF_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "ebpf_abi.h"
#include "ebpf_stats.h"

/* Where routers pin program and maps: EBPF_PIN_ROOT/<owner>/<boot id>[-k]/<name>. */
#define EBPF_PIN_ROOT "/sys/fs/bpf/tributary"

/* One loaded and attached router. Opaque; one per node runtime. */
struct ebpf_route;

/*
 * Load the router, attach it to its SOCKHASH and pin program and maps under
 * EBPF_PIN_ROOT/@owner/<boot id>[-k] (directories 0700, files 0600),
 * mounting bpffs at /sys/fs/bpf first if needed. @owner names the runtime
 * (its node name; "up" for a single server; 1-64 of [A-Za-z0-9._-]); the
 * boot id is the kernel's; -k is the first suffix no live router of this
 * owner holds. Not the pid: in containers every runtime is pid 1.
 *
 * The directory is held with flock(2) for the router's life. Before
 * claiming it, the router removes this owner's directories that no live
 * router holds (left by a runtime that died, or before a reboot); it never
 * touches another owner's. libbpf's messages go to trib_log at debug level.
 *
 * On success *@out is a router owned by the caller (ebpf_route_close). On
 * failure returns -errno and, if @why is not NULL, writes a one-line reason
 * into @why (@why_len bytes) that the caller logs once before falling back to
 * Unix sockets, e.g. "loading BPF programs needs CAP_BPF/CAP_NET_ADMIN:
 * Operation not permitted".
 */
int ebpf_route_open(const char *instance, struct ebpf_route **out, char *why, size_t why_len);

/*
 * Put a connected loopback TCP socket into the map under @key: a function id,
 * or EBPF_KEY_GATEWAY for the gateway's sending socket. For a function id the
 * function's counters entry is reset first (it may hold a dead function's
 * numbers). The map takes its own reference: @sock_fd stays the caller's, and
 * the socket leaves the map by itself once its last fd is closed.
 * Returns 0; -EINVAL for key 0; -EPROTONOSUPPORT for a socket that is not TCP
 * (sk_msg would not run for it); -EEXIST if @key is already in the map;
 * another -errno from the kernel (e.g. -ENOTCONN for an unconnected socket).
 */
int ebpf_route_add(struct ebpf_route *r, uint32_t key, int sock_fd);

/* Take @key's socket out of the map. Returns 0 or -ENOENT (or another -errno). */
int ebpf_route_del(struct ebpf_route *r, uint32_t key);

/*
 * The fn_stats map's fd, to pass to functions (SCM_RIGHTS or inheritance),
 * which mmap it with ebpf_stats_map(). Borrowed: valid until ebpf_route_close;
 * dup() it to keep it longer.
 */
int ebpf_route_stats_fd(const struct ebpf_route *r);

/*
 * The mmapped fn_stats array, EBPF_MAX_FNS entries; read with ebpf_stats_read().
 * Borrowed: valid until ebpf_route_close.
 */
const volatile struct ebpf_fn_stats *ebpf_route_stats(const struct ebpf_route *r);

/* Copy the router-wide counters into *@out. */
void ebpf_route_global(const struct ebpf_route *r, struct ebpf_global_stats *out);

/* The pin directory in use (borrowed: valid until ebpf_route_close). */
const char *ebpf_route_pin_dir(const struct ebpf_route *r);

/* Detach, unmap, unpin, remove the pin directory, unload and free. Accepts NULL. */
void ebpf_route_close(struct ebpf_route *r);

/*
 * A connected loopback TCP pair for one function (or the gateway): fds[0] is
 * the connecting end, fds[1] the accepted end; both TCP_NODELAY and
 * close-on-exec. The caller owns both fds. Returns 0 or -errno.
 */
int ebpf_tcp_pair(int fds[2]);

#endif
