/* SPDX-License-Identifier: MIT */
/* Inside the log (rt_wal.c, rt_wal_io.c): its state, shared by the caller and the log's thread. */
#ifndef RT_WAL_PRIV_H
#define RT_WAL_PRIV_H

#include <liburing.h>
#include <limits.h>
#include <pthread.h>
#include <sys/uio.h>

#include "rt_wal.h"
#include "trib_retry.h"

/* One record on its way: the head, then key, answer and meta in tail[]. */
struct rt_wal_ent {
	struct rt_wal_disk hdr;
	uint64_t ticket;
	struct rt_wal_ent *next;
	const void *body;    /* borrowed from the caller, or body_copy after a failure */
	void *body_copy;     /* owned */
	struct iovec iov[5]; /* the write in flight (the thread's) */
	uint64_t off;	     /* where in its segment (the thread's) */
	struct rt_wal_seg *seg;
	unsigned char tail[];
};

/* A queued cut: job @job's rounds <= @round go. */
struct rt_wal_cut {
	uint64_t job;
	uint32_t round;
	struct rt_wal_cut *next;
};

/* An open segment file (the thread's only). */
struct rt_wal_seg {
	uint64_t job;
	uint32_t round;
	int fd;
	uint64_t end;  /* durable bytes */
	uint64_t pend; /* bytes written by the batch in flight */
	bool touched;  /* by the batch in flight */
};

/* What one batch did. */
struct rt_wal_batch_res {
	int err;    /* 0 or the first -errno */
	uint64_t n; /* records */
	uint64_t bytes;
	uint64_t last; /* the batch's last ticket */
	uint32_t fsyncs;
};

struct rt_wal {
	char dir[PATH_MAX];
	int dirfd;
	int efd; /* eventfd: the caller's wake-up */
	struct rt_wal_crc crc; /* tables, set at open, read-only after */
	/* under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_condattr_t cva;
	struct rt_wal_ent *head, **tailp; /* queued, ticket order */
	struct rt_wal_cut *cuts;
	uint64_t last;	  /* the last ticket given (the caller writes it) */
	uint64_t settled; /* see struct rt_wal_state */
	struct rt_wal_state pub;
	struct trib_retry retry;
	bool stop, hold, dead;
	int t_write_err, t_fsync_err; /* tests */
	/* the thread's */
	pthread_t thread;
	struct io_uring ring;
	struct rt_wal_seg *segs;
	uint32_t nsegs, capsegs;
	uint64_t pub_cut;
};

/* rt_wal_io.c */
/*
 * Write @batch (its entries in ticket order) with the ring, then fdatasync
 * each segment it touched; @werr / @ferr (tests, -errno) fail the write or
 * the fdatasync as if the kernel had. On failure the touched segments are
 * cut back to their durable end. *@res says what happened.
 */
void rt__wal_batch_write(struct rt_wal *w, struct rt_wal_ent *batch, int werr, int ferr,
			 struct rt_wal_batch_res *res);
/* Close and unlink job @job's segments of rounds <= @round; returns files removed. */
uint32_t rt__wal_seg_cut(struct rt_wal *w, uint64_t job, uint32_t round);
void rt__wal_segs_close(struct rt_wal *w);

#endif
