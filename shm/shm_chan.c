// SPDX-License-Identifier: MIT
/* Record framing on top of SCM_RIGHTS messaging (shm_fdpass). */
#include "shm_chan.h"

#include <errno.h>
#include <unistd.h>

#include "shm_fdpass.h"

int shm_chan_send(int sock, const void *recs, size_t n, int fd)
{
	ssize_t r;

	if (n == 0 || n > SHM_CHAN_BATCH)
		return -EINVAL;
	r = shm_fd_send(sock, recs, n * SHM_DESC_SIZE, fd);
	if (r < 0)
		return (int)r;
	/* SEQPACKET sends all or nothing. */
	return (size_t)r == n * SHM_DESC_SIZE ? 0 : -EIO;
}

int shm_chan_recv(int sock, void *recs, size_t cap, size_t *n, int *fd)
{
	ssize_t r = shm_fd_recv(sock, recs, cap * SHM_DESC_SIZE, fd);

	*n = 0;
	if (r < 0)
		return (int)r;
	if (r == 0)
		return -ECONNRESET;
	if (r % SHM_DESC_SIZE) {
		if (*fd >= 0) {
			close(*fd);
			*fd = -1;
		}
		return -EBADMSG;
	}
	*n = (size_t)r / SHM_DESC_SIZE;
	return 0;
}
