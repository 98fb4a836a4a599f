// SPDX-License-Identifier: MIT
/* One message plus at most one descriptor over a Unix socket, with SCM_RIGHTS. */
#include "shm_fdpass.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Room for more descriptors than we accept, so that extra ones are seen (and closed). */
#define FDPASS_MAX_FDS 8

union fdpass_cmsg {
	struct cmsghdr hdr;
	char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
};

/* @fd stays the caller's; the peer gets its own descriptor for the same file. */
int shm_fd_send(int sock, const void *buf, size_t len, int fd)
{
	union fdpass_cmsg cm;
	size_t done = 0;

	if (len > INT_MAX || (fd >= 0 && !len) || (len && !buf))
		return -EINVAL;
	do {
		struct iovec iov = {
			.iov_base = (char *)(uintptr_t)buf + done,
			.iov_len = len - done,
		};
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		/* The descriptor rides on the first byte only. */
		if (fd >= 0 && !done) {
			memset(&cm, 0, sizeof(cm));
			msg.msg_control = cm.buf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int));
			cm.hdr.cmsg_level = SOL_SOCKET;
			cm.hdr.cmsg_type = SCM_RIGHTS;
			cm.hdr.cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(&cm.hdr), &fd, sizeof(int));
		}
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
		/* A stream socket may take part of it; SOCK_SEQPACKET takes all or fails. */
	} while (done < len);
	return (int)len;
}

/* Close every descriptor carried by @msg's SCM_RIGHTS messages; returns how many there were. */
static int fds_collect(struct msghdr *msg, int *first)
{
	struct cmsghdr *c;
	int count = 0;

	for (c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		size_t n, i;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (count++ == 0)
				*first = fd;
			else
				close(fd);
		}
	}
	return count;
}

/* One recvmsg(2), EINTR retried; a received descriptor lands in *got (closing any extra). */
static int recv_once(int sock, void *buf, size_t len, int *got, int *nfds, bool *trunc)
{
	union fdpass_cmsg cm;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cm.buf,
		.msg_controllen = sizeof(cm.buf),
	};
	ssize_t n;
	int fd = -1, count;

	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	count = fds_collect(&msg, &fd);
	if (count) {
		if (*got < 0)
			*got = fd;
		else
			close(fd);
	}
	*nfds += count;
	*trunc = msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC);
	return (int)n;
}

/* On success *fd (if any came) is owned by the caller. */
int shm_fd_recv(int sock, void *buf, size_t len, int *fd)
{
	socklen_t optlen = sizeof(int);
	size_t done = 0;
	int type, got = -1, nfds = 0, n;
	bool trunc = false;

	if (fd)
		*fd = -1;
	if (len > INT_MAX || (len && !buf))
		return -EINVAL;
	if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &optlen))
		return -errno;

	do {
		n = recv_once(sock, (char *)buf + done, len - done, &got, &nfds, &trunc);
		if (n < 0)
			goto err_close;
		if (n == 0 && type == SOCK_STREAM) {
			/* The stream ended: cleanly between messages, or mid-message. */
			if (!done && !nfds)
				return 0;
			n = -EBADMSG;
			goto err_close;
		}
		done += (size_t)n;
		if (trunc || nfds > 1 || (nfds && !fd)) {
			n = -EBADMSG;
			goto err_close;
		}
	} while (type == SOCK_STREAM && done < len);

	if (fd)
		*fd = got;
	return (int)done;

err_close:
	if (got >= 0)
		close(got);
	return n;
}
