// SPDX-License-Identifier: MIT
/* Tests for core/trib_signal: blocked signals read one at a time from a non-blocking signalfd. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "trib_signal.h"

Test(core_signal, reads_each_pending_signal_then_zero)
{
	const int sigs[] = {SIGUSR1, SIGUSR2};
	struct pollfd pfd;
	sigset_t now;
	int fd = -1, a, b;

	cr_assert_eq(trib_signal_open(sigs, 2, &fd), 0);
	cr_assert_geq(fd, 0);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "close-on-exec");
	cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK, "non-blocking");
	cr_assert_eq(pthread_sigmask(SIG_BLOCK, NULL, &now), 0);
	cr_assert(sigismember(&now, SIGUSR1) && sigismember(&now, SIGUSR2), "blocked");
	cr_assert_eq(trib_signal_read(fd), 0, "nothing pending");
	/* Blocked: raising them does not kill the test, it makes the fd readable. */
	cr_assert_eq(raise(SIGUSR2), 0);
	cr_assert_eq(raise(SIGUSR1), 0);
	pfd.fd = fd;
	pfd.events = POLLIN;
	cr_assert_eq(poll(&pfd, 1, 1000), 1);
	a = trib_signal_read(fd);
	b = trib_signal_read(fd);
	cr_assert((a == SIGUSR1 && b == SIGUSR2) || (a == SIGUSR2 && b == SIGUSR1), "got %d, %d",
		  a, b);
	cr_assert_eq(trib_signal_read(fd), 0, "one read per signal");
	cr_assert_eq(poll(&pfd, 1, 0), 0);
	close(fd);
}

Test(core_signal, one_standard_signal_pending_twice_reads_once)
{
	const int sigs[] = {SIGUSR1};
	int fd = -1;

	cr_assert_eq(trib_signal_open(sigs, 1, &fd), 0);
	cr_assert_eq(raise(SIGUSR1), 0);
	cr_assert_eq(raise(SIGUSR1), 0);
	cr_assert_eq(trib_signal_read(fd), SIGUSR1);
	cr_assert_eq(trib_signal_read(fd), 0, "standard signals merge while pending");
	close(fd);
}

Test(core_signal, refuses_bad_sets_and_leaves_the_mask)
{
	const int kill_set[] = {SIGUSR1, SIGKILL}, stop_set[] = {SIGSTOP};
	const int range[] = {0}, huge[] = {4096};
	sigset_t before, after;
	int fd = -7;

	cr_assert_eq(pthread_sigmask(SIG_BLOCK, NULL, &before), 0);
	cr_assert_eq(trib_signal_open(kill_set, 2, &fd), -EINVAL);
	cr_assert_eq(trib_signal_open(stop_set, 1, &fd), -EINVAL);
	cr_assert_eq(trib_signal_open(range, 1, &fd), -EINVAL);
	cr_assert_eq(trib_signal_open(huge, 1, &fd), -EINVAL);
	cr_assert_eq(trib_signal_open(kill_set, 0, &fd), -EINVAL, "an empty set");
	cr_assert_eq(trib_signal_open(NULL, 1, &fd), -EINVAL);
	cr_assert_eq(fd, -7, "*fd untouched on failure");
	cr_assert_eq(pthread_sigmask(SIG_BLOCK, NULL, &after), 0);
	cr_assert_not(sigismember(&after, SIGUSR1), "SIGUSR1 was not blocked by a failed call");
	cr_assert_eq(sigismember(&before, SIGUSR1), 0);
}

Test(core_signal, read_on_a_bad_fd_is_an_error)
{
	cr_assert_eq(trib_signal_read(-1), -EBADF);
}
