/* SPDX-License-Identifier: MIT */
/* The descriptor channel: whole 64-byte records over a Unix SOCK_SEQPACKET socket. */
#ifndef SHM_CHAN_H
#define SHM_CHAN_H

#include <stddef.h>

#include "shm_abi.h"

/*
 * The one small interface behind which descriptors move between processes
 * on a node. Every message is a whole number of SHM_DESC_SIZE records, so
 * two descriptors never merge or split. Callers own @sock.
 */

#define SHM_CHAN_BATCH 64 /* records per message at most */

/*
 * Send @n records (n <= SHM_CHAN_BATCH) in one message; @fd (or -1) rides
 * along with SCM_RIGHTS and stays owned by the caller. Returns 0, -EAGAIN
 * when the socket is non-blocking and full, or -errno.
 */
int shm_chan_send(int sock, const void *recs, size_t n, int fd);

/*
 * Receive one message of up to @cap records into @recs; *n is the number of
 * records. *fd receives a passed descriptor (now owned by the caller) or -1.
 * Returns 0, -ECONNRESET on end of stream, -EBADMSG for a message that is not
 * whole records, -EAGAIN when non-blocking and empty, or -errno.
 */
int shm_chan_recv(int sock, void *recs, size_t cap, size_t *n, int *fd);

#endif
