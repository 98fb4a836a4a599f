/* SPDX-License-Identifier: MIT */
/* Signals as events: blocked, then read from a signalfd inside each process's own event loop. */
#ifndef TRIB_SIGNAL_H
#define TRIB_SIGNAL_H

#include <stddef.h>

/*
 * Block the @n signals in @sigs (borrowed) in the calling thread and open a
 * signalfd for them, close-on-exec and non-blocking; *fd is the caller's
 * (close(2) it). Returns 0 or -errno: -EINVAL for an empty set or a signal
 * that cannot be blocked (SIGKILL, SIGSTOP, out of range); on failure the
 * mask is left as it was.
 *
 * Call it before the process starts any thread: threads inherit the mask, and
 * a signal that some thread leaves unblocked is delivered there (with its
 * default action) instead of to the fd. The mask stays blocked after the fd
 * is closed: the process is stopping by then.
 *
 * The fd is readable (POLLIN) while a signal is pending. An io_uring loop
 * arms IORING_OP_POLL_ADD on it and then calls trib_signal_read() until it
 * returns 0: that assumes nothing of how io_uring reads a non-blocking fd
 * (6.x kernels wait for data; older ones may complete with -EAGAIN).
 */
int trib_signal_open(const int *sigs, size_t n, int *fd);

/*
 * Take one pending signal from @fd: returns its number (> 0), 0 when none is
 * pending, or -errno. Pending instances of one standard signal merge into one
 * (SIGCHLD for two children is read once): callers reap or drain in a loop.
 */
int trib_signal_read(int fd);

#endif
