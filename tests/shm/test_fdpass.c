// SPDX-License-Identifier: MIT
/* Tests of message + descriptor passing over Unix sockets. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shm_fdpass.h"

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	cr_assert_not_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int memfd_with(const char *text)
{
	int fd = memfd_create("fdpass-test", MFD_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	return fd;
}

static void pair(int type, int sv[2])
{
	cr_assert_eq(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv), 0);
}

static void memfd_round_trip(int type)
{
	char msg[64] = "descriptor", got[64] = "";
	int sv[2], fd = memfd_with("bytes behind the fd"), rfd = -1;
	char data[32] = "";

	pair(type, sv);
	cr_assert_eq(shm_fd_send(sv[0], msg, sizeof(msg), fd), (int)sizeof(msg));
	cr_assert_eq(shm_fd_recv(sv[1], got, sizeof(got), &rfd), (int)sizeof(got));
	cr_expect_str_eq(got, "descriptor");
	cr_assert_geq(rfd, 0);
	cr_expect_neq(rfd, fd);
	cr_expect(fcntl(rfd, F_GETFD) & FD_CLOEXEC, "received fds are close-on-exec");
	cr_expect_eq(pread(rfd, data, sizeof(data) - 1, 0), 19);
	cr_expect_str_eq(data, "bytes behind the fd");
	/* Same file: a write through one is seen through the other. */
	cr_assert_eq(pwrite(fd, "B", 1, 0), 1);
	cr_expect_eq(pread(rfd, data, 1, 0), 1);
	cr_expect_eq(data[0], 'B');
	close(rfd);
	close(fd);
	close(sv[0]);
	close(sv[1]);
}

Test(shm_fdpass, memfd_over_seqpacket)
{
	memfd_round_trip(SOCK_SEQPACKET);
}

Test(shm_fdpass, memfd_over_stream)
{
	memfd_round_trip(SOCK_STREAM);
}

Test(shm_fdpass, stream_messages_do_not_merge)
{
	char a[64], b[64], got[64];
	int sv[2], fd = memfd_with("x"), rfd;

	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	pair(SOCK_STREAM, sv);
	cr_assert_eq(shm_fd_send(sv[0], a, sizeof(a), -1), 64);
	cr_assert_eq(shm_fd_send(sv[0], b, sizeof(b), fd), 64);
	cr_assert_eq(shm_fd_recv(sv[1], got, sizeof(got), &rfd), 64);
	cr_expect_eq(memcmp(got, a, 64), 0);
	cr_expect_eq(rfd, -1);
	cr_assert_eq(shm_fd_recv(sv[1], got, sizeof(got), &rfd), 64);
	cr_expect_eq(memcmp(got, b, 64), 0);
	cr_expect_geq(rfd, 0);
	close(rfd);
	close(sv[0]);
	cr_expect_eq(shm_fd_recv(sv[1], got, sizeof(got), &rfd), 0, "end of stream");
	cr_expect_eq(rfd, -1);
	close(sv[1]);
	close(fd);
}

Test(shm_fdpass, no_fd_gives_minus_one)
{
	char got[16];
	int sv[2], rfd = 123;

	pair(SOCK_SEQPACKET, sv);
	cr_assert_eq(shm_fd_send(sv[0], "hi", 3, -1), 3);
	cr_expect_eq(shm_fd_recv(sv[1], got, sizeof(got), &rfd), 3, "a record keeps its length");
	cr_expect_eq(rfd, -1);
	cr_expect_str_eq(got, "hi");
	close(sv[0]);
	cr_expect_eq(shm_fd_recv(sv[1], got, sizeof(got), &rfd), 0, "peer closed");
	close(sv[1]);
}

Test(shm_fdpass, truncated_record_is_ebadmsg_and_leaks_no_fd)
{
	char big[100] = "", small[10];
	int sv[2], fd = memfd_with("x"), rfd = 5, before;

	pair(SOCK_SEQPACKET, sv);
	cr_assert_eq(shm_fd_send(sv[0], big, sizeof(big), fd), 100);
	before = open_fds();
	cr_expect_eq(shm_fd_recv(sv[1], small, sizeof(small), &rfd), -EBADMSG);
	cr_expect_eq(rfd, -1);
	cr_expect_eq(open_fds(), before, "the received fd was closed");
	close(sv[0]);
	close(sv[1]);
	close(fd);
}

Test(shm_fdpass, stream_ending_mid_message_is_ebadmsg)
{
	char got[64];
	int sv[2], fd = memfd_with("x"), rfd, before;

	pair(SOCK_STREAM, sv);
	cr_assert_eq(shm_fd_send(sv[0], "short", 5, fd), 5);
	close(sv[0]);
	before = open_fds();
	cr_expect_eq(shm_fd_recv(sv[1], got, sizeof(got), &rfd), -EBADMSG);
	cr_expect_eq(open_fds(), before);
	close(sv[1]);
	close(fd);
}

Test(shm_fdpass, two_fds_are_ebadmsg_and_both_closed)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	char payload[8] = "two", got[8];
	struct iovec iov = { .iov_base = payload, .iov_len = sizeof(payload) };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cm.buf,
		.msg_controllen = sizeof(cm.buf),
	};
	int sv[2], fds[2] = { memfd_with("1"), memfd_with("2") }, rfd, before;

	pair(SOCK_SEQPACKET, sv);
	memset(&cm, 0, sizeof(cm));
	cm.hdr.cmsg_level = SOL_SOCKET;
	cm.hdr.cmsg_type = SCM_RIGHTS;
	cm.hdr.cmsg_len = CMSG_LEN(2 * sizeof(int));
	memcpy(CMSG_DATA(&cm.hdr), fds, sizeof(fds));
	cr_assert_eq(sendmsg(sv[0], &msg, 0), (ssize_t)sizeof(payload));
	before = open_fds();
	cr_expect_eq(shm_fd_recv(sv[1], got, sizeof(got), &rfd), -EBADMSG);
	cr_expect_eq(rfd, -1);
	cr_expect_eq(open_fds(), before);
	close(sv[0]);
	close(sv[1]);
	close(fds[0]);
	close(fds[1]);
}

Test(shm_fdpass, fd_nobody_expects_is_ebadmsg)
{
	char got[8];
	int sv[2], fd = memfd_with("x"), before;

	pair(SOCK_SEQPACKET, sv);
	cr_assert_eq(shm_fd_send(sv[0], "x", 1, fd), 1);
	before = open_fds();
	cr_expect_eq(shm_fd_recv(sv[1], got, sizeof(got), NULL), -EBADMSG);
	cr_expect_eq(open_fds(), before);
	cr_assert_eq(shm_fd_send(sv[0], "y", 1, -1), 1);
	cr_expect_eq(shm_fd_recv(sv[1], got, sizeof(got), NULL), 1, "no fd, none expected: fine");
	close(sv[0]);
	close(sv[1]);
	close(fd);
}

Test(shm_fdpass, send_rejects_fd_without_payload)
{
	int sv[2];

	pair(SOCK_SEQPACKET, sv);
	cr_expect_eq(shm_fd_send(sv[0], "", 0, sv[0]), -EINVAL);
	cr_expect_eq(shm_fd_send(-1, "x", 1, -1), -EBADF);
	close(sv[0]);
	close(sv[1]);
}

Test(shm_fdpass, send_to_closed_peer_is_epipe)
{
	int sv[2];

	pair(SOCK_SEQPACKET, sv);
	close(sv[1]);
	cr_expect_eq(shm_fd_send(sv[0], "x", 1, -1), -EPIPE, "and no SIGPIPE");
	close(sv[0]);
}
