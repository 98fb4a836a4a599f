// SPDX-License-Identifier: MIT
/* Signals as events: a blocked set and its signalfd. */
#include "trib_signal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

int trib_signal_open(const int *sigs, size_t n, int *fd)
{
	sigset_t set, old;
	int err, sfd;

	if (!sigs || !n || !fd)
		return -EINVAL;
	sigemptyset(&set);
	for (size_t i = 0; i < n; i++) {
		/* sigprocmask would drop these silently; a caller asking for them has a bug. */
		if (sigs[i] == SIGKILL || sigs[i] == SIGSTOP || sigaddset(&set, sigs[i]))
			return -EINVAL;
	}
	/* Blocked first: a signal that arrives between the two calls waits for the fd. */
	err = pthread_sigmask(SIG_BLOCK, &set, &old);
	if (err)
		return -err;
	sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		err = -errno;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		return err;
	}
	*fd = sfd;
	return 0;
}

int trib_signal_read(int fd)
{
	struct signalfd_siginfo si;
	ssize_t n;

	do {
		n = read(fd, &si, sizeof(si));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	/* The kernel hands out whole records only. */
	if (n != (ssize_t)sizeof(si))
		return -EIO;
	return (int)si.ssi_signo;
}
