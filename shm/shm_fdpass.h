/* SPDX-License-Identifier: MIT */
/* Passing one message and at most one file descriptor over a Unix socket (SCM_RIGHTS). */
#ifndef SHM_FDPASS_H
#define SHM_FDPASS_H

#include <stddef.h>

/*
 * Send @len bytes of @buf on the Unix socket @sock (SOCK_SEQPACKET or
 * SOCK_STREAM) as one message, with @fd attached by SCM_RIGHTS unless @fd is
 * -1. @fd stays the caller's: the receiver gets a new descriptor for the same
 * file. On a stream socket the whole buffer is sent (the fd rides on its first
 * byte). @len must be at least 1 when an fd is attached. Retries EINTR; never
 * raises SIGPIPE.
 * @len is at most INT_MAX (descriptors are small).
 * Returns @len, or -EINVAL, -EPIPE, -EAGAIN (non-blocking socket), -errno.
 */
int shm_fd_send(int sock, const void *buf, size_t len, int fd);

/*
 * Receive one message of up to @len bytes into @buf and the descriptor
 * attached to it, if any. On SOCK_SEQPACKET one message is one record (its
 * length is returned); on SOCK_STREAM, which has no records, exactly @len
 * bytes are read. *@fd gets the received descriptor, close-on-exec and owned
 * by the caller, or -1 when none came; @fd may be NULL when none is expected.
 * Returns the bytes received; 0 at end of stream (nothing received, *@fd = -1);
 * -EBADMSG when the message was truncated (longer than @len, or a stream that
 * ended mid-message) or carried an unexpected number of descriptors (more than
 * one, or any when @fd is NULL) — every received descriptor is closed then;
 * or another -errno. Retries EINTR.
 */
int shm_fd_recv(int sock, void *buf, size_t len, int *fd);

#endif
