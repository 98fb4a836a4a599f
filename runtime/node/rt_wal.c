// SPDX-License-Identifier: MIT
/* The update log of --durability disk: its thread, io_uring writes, group commit, failures. */
#include "rt_wal.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "rt_wal_priv.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_retry.h"
#include "trib_store.h"
#include "trib_time.h"

#define RING_ENTRIES 256u

/* ---- the caller's side ---- */

int rt_wal_prepare(const struct rt_wal_rec *rec, struct rt_wal_ent **out)
{
	struct rt_wal_ent *e;
	uint8_t *p;

	if (rec->key_len > RT_WAL_KEY_MAX || rec->ans_len > RT_WAL_ANS_MAX ||
	    rec->meta_len > RT_WAL_META_MAX || rec->client_len > RT_WAL_CLIENT_MAX)
		return -EINVAL;
	e = trib_malloc(sizeof(*e) + rec->key_len + rec->ans_len + rec->client_len +
			rec->meta_len);
	if (!e)
		return -ENOMEM;
	memset(e, 0, sizeof(*e));
	e->hdr.magic = RT_WAL_MAGIC;
	e->hdr.job = rec->job;
	e->hdr.round = rec->round;
	e->hdr.seq = rec->seq;
	e->hdr.weight = rec->weight;
	e->hdr.fold_scale = rec->fold_scale;
	e->hdr.key_len = (uint8_t)rec->key_len;
	e->hdr.ans_len = (uint8_t)rec->ans_len;
	e->hdr.client_len = (uint8_t)rec->client_len;
	e->hdr.meta_len = (uint32_t)rec->meta_len;
	e->hdr.nsegs = rec->nsegs;
	e->hdr.body_len = rec->body_len;
	e->hdr.len = sizeof(e->hdr) + rec->key_len + rec->ans_len + rec->client_len +
		     rec->meta_len + rec->body_len;
	p = e->tail;
	if (rec->key_len)
		memcpy(p, rec->key, rec->key_len);
	p += rec->key_len;
	if (rec->ans_len)
		memcpy(p, rec->ans, rec->ans_len);
	p += rec->ans_len;
	if (rec->client_len)
		memcpy(p, rec->client, rec->client_len);
	p += rec->client_len;
	if (rec->meta_len)
		memcpy(p, rec->meta, rec->meta_len);
	e->body = rec->body;
	*out = e;
	return 0;
}

void rt_wal_discard(struct rt_wal_ent *e)
{
	if (!e)
		return;
	trib_free(e->body_copy);
	trib_free(e);
}

uint64_t rt_wal_submit(struct rt_wal *w, struct rt_wal_ent *e)
{
	uint64_t t;

	pthread_mutex_lock(&w->mu);
	t = e->ticket = ++w->last;
	e->next = NULL;
	*w->tailp = e;
	w->tailp = &e->next;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return t; /* @e is the thread's now: it may be written and freed already */
}

uint64_t rt_wal_last(const struct rt_wal *w)
{
	return w->last; /* written only by the caller's thread */
}

void rt_wal_settle(struct rt_wal *w)
{
	pthread_mutex_lock(&w->mu);
	while (w->settled < w->last && !w->dead)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

int rt_wal_sync(struct rt_wal *w)
{
	int err;

	pthread_mutex_lock(&w->mu);
	while (w->pub.durable < w->last && !w->pub.err && !w->dead)
		pthread_cond_wait(&w->cv, &w->mu);
	err = w->pub.durable >= w->last ? 0 : w->pub.err ? w->pub.err : -EIO;
	pthread_mutex_unlock(&w->mu);
	return err;
}

void rt_wal_cut(struct rt_wal *w, uint64_t job, uint32_t round)
{
	struct rt_wal_cut *c = trib_malloc(sizeof(*c));

	if (!c) {
		/* The files stay until the next cut of the job (replay skips stored rounds). */
		trib_warn("wal: job %llu round %u: no memory to cut the log; cut later",
			  (unsigned long long)job, round);
		return;
	}
	c->job = job;
	c->round = round;
	pthread_mutex_lock(&w->mu);
	c->next = w->cuts;
	w->cuts = c;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int rt_wal_fd(const struct rt_wal *w)
{
	return w->efd;
}

void rt_wal_state(struct rt_wal *w, struct rt_wal_state *out)
{
	pthread_mutex_lock(&w->mu);
	*out = w->pub;
	pthread_mutex_unlock(&w->mu);
}

void rt_wal_test_hold(struct rt_wal *w, bool hold)
{
	pthread_mutex_lock(&w->mu);
	w->hold = hold;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void rt_wal_test_fail(struct rt_wal *w, int err, int fsync_err)
{
	pthread_mutex_lock(&w->mu);
	w->t_write_err = err;
	w->t_fsync_err = fsync_err;
	pthread_mutex_unlock(&w->mu);
}

/* ---- the thread's side ---- */

/*
 * Under the mutex, after a failure: every queued record's body is copied,
 * so that the caller may free its memory (rt_wal_settle()). A record whose
 * copy cannot be made is dropped, loudly: it was never answered 202 and
 * will not be (its request is answered 503 with the batch's error).
 */
static void copy_bodies_locked(struct rt_wal *w)
{
	for (struct rt_wal_ent **pp = &w->head; *pp;) {
		struct rt_wal_ent *e = *pp;

		if (e->body && !e->body_copy && e->hdr.body_len) {
			e->body_copy = trib_malloc(e->hdr.body_len);
			if (!e->body_copy) {
				trib_error("wal: job %llu round %u seq %u: no memory to keep the "
					   "update for a retry; it will not be logged",
					   (unsigned long long)e->hdr.job, e->hdr.round,
					   e->hdr.seq);
				*pp = e->next;
				rt_wal_discard(e);
				continue;
			}
			memcpy(e->body_copy, e->body, e->hdr.body_len);
		}
		e->body = e->body_copy;
		pp = &e->next;
	}
	w->tailp = &w->head;
	while (*w->tailp)
		w->tailp = &(*w->tailp)->next;
	w->settled = w->last;
	w->pub.settled = w->settled;
}

/* Cuts taken under the mutex: drop the failed records they make moot, then unlink files. */
static void apply_cuts(struct rt_wal *w, struct rt_wal_cut *cuts)
{
	uint64_t one = 1;

	while (cuts) {
		struct rt_wal_cut *c = cuts;
		bool wake = false, dropped = false;

		pthread_mutex_lock(&w->mu);
		for (struct rt_wal_ent **pp = &w->head; *pp;) {
			struct rt_wal_ent *e = *pp;

			if (e->hdr.job == c->job && e->hdr.round <= c->round) {
				*pp = e->next;
				rt_wal_discard(e);
				dropped = true;
				continue;
			}
			pp = &e->next;
		}
		w->tailp = &w->head;
		while (*w->tailp)
			w->tailp = &(*w->tailp)->next;
		/*
		 * No batch is in flight here (this is the thread): every ticket
		 * below the first still queued is on disk, or was dropped because
		 * its round's model is stored, which keeps the 202's promise too.
		 */
		if (dropped) {
			uint64_t d = w->head ? w->head->ticket - 1 : w->last;

			if (d > w->pub.durable)
				w->pub.durable = d;
			wake = true;
		}
		if (!w->head && w->pub.err) {
			/* Nothing left to retry: the next append tries the disk again. */
			w->pub.err = 0;
			trib_retry_ok(&w->retry);
			wake = true;
		}
		pthread_mutex_unlock(&w->mu);
		if (wake && write(w->efd, &one, sizeof(one)) < 0)
			trib_warn("wal: eventfd: %s", strerror(errno));
		w->pub_cut += rt__wal_seg_cut(w, c->job, c->round);
		cuts = c->next;
		trib_free(c);
	}
}

static bool thread_should_wait(const struct rt_wal *w, uint64_t now)
{
	if (w->stop)
		return false;
	if (w->cuts)
		return false;
	if (w->hold || !w->head)
		return true;
	return w->pub.err && now < w->retry.next_ns;
}

static void wait_work_locked(struct rt_wal *w)
{
	for (;;) {
		uint64_t now = trib_now_ns();
		struct timespec ts;

		if (w->pub.err && w->head && w->settled < w->last)
			copy_bodies_locked(w); /* appended after the failure was published */
		if (!thread_should_wait(w, now))
			return;
		if (!w->pub.err || w->hold || !w->head) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)((w->retry.next_ns - now) / 1000000000ull);
		ts.tv_nsec += (long)((w->retry.next_ns - now) % 1000000000ull);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&w->cv, &w->mu, &ts);
	}
}

static void batch_stats(struct rt_wal_stats *st, uint64_t n, uint64_t bytes, uint32_t fsyncs)
{
	unsigned b = 0;

	st->appends += n;
	st->batches++;
	st->bytes += bytes;
	st->fsyncs += fsyncs;
	if (n > st->max_batch)
		st->max_batch = n;
	while (b < 7 && (2ull << b) <= n)
		b++;
	st->batch_hist[b]++;
}

/* After a batch: publish success or failure, then wake the caller. */
static void batch_done(struct rt_wal *w, struct rt_wal_ent *batch, struct rt_wal_ent **btail,
		       const struct rt_wal_batch_res *res)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->mu);
	if (!res->err) {
		uint32_t retries = trib_retry_ok(&w->retry);

		if (w->pub.err)
			trib_info("wal: writing the log works again after %u failed retr%s",
				  retries, retries == 1 ? "y" : "ies");
		w->pub.err = 0;
		w->pub.durable = res->last;
		if (w->settled < res->last)
			w->settled = res->last;
		w->pub.settled = w->settled;
		batch_stats(&w->pub.st, res->n, res->bytes, res->fsyncs);
		while (batch) {
			struct rt_wal_ent *e = batch;

			batch = e->next;
			rt_wal_discard(e);
		}
	} else {
		if (trib_retry_fail(&w->retry, res->err, 0, trib_now_ns(), (int64_t)time(NULL)))
			trib_error("wal: writing the log failed (%s: %s); updates get 503 until a "
				   "retry succeeds",
				   trib_errno_name(res->err), strerror(-res->err));
		w->pub.err = res->err;
		w->pub.retry_ns = w->retry.next_ns;
		if (res->last > w->pub.failed_to)
			w->pub.failed_to = res->last;
		w->pub.st.failures++;
		/* The batch goes back in front, in order; then every body is copied. */
		*btail = w->head;
		w->head = batch;
		copy_bodies_locked(w);
	}
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	if (write(w->efd, &one, sizeof(one)) < 0)
		trib_warn("wal: eventfd: %s", strerror(errno));
}

static void *wal_thread(void *arg)
{
	struct rt_wal *w = arg;

	for (;;) {
		struct rt_wal_ent *batch = NULL, **btail = &batch;
		struct rt_wal_cut *cuts;
		struct rt_wal_batch_res res = {0};
		int werr, ferr;
		bool stop;

		pthread_mutex_lock(&w->mu);
		wait_work_locked(w);
		stop = w->stop;
		cuts = w->cuts;
		w->cuts = NULL;
		if (!w->hold && w->head &&
		    (!w->pub.err || trib_now_ns() >= w->retry.next_ns || stop)) {
			batch = w->head;
			btail = w->tailp;
			w->head = NULL;
			w->tailp = &w->head;
		}
		werr = w->t_write_err;
		ferr = w->t_fsync_err;
		w->t_write_err = w->t_fsync_err = 0;
		pthread_mutex_unlock(&w->mu);
		if (batch) {
			rt__wal_batch_write(w, batch, werr, ferr, &res);
			batch_done(w, batch, btail, &res);
		}
		apply_cuts(w, cuts);
		pthread_mutex_lock(&w->mu);
		w->pub.st.cut_files = w->pub_cut;
		/* At a stop a batch that fails is given up (logged by close). */
		stop = w->stop && (!w->head || res.err || !batch);
		pthread_mutex_unlock(&w->mu);
		if (stop)
			break;
	}
	pthread_mutex_lock(&w->mu);
	w->dead = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* ---- open and close ---- */

int rt_wal_open(const char *dir, struct rt_wal **out)
{
	struct rt_wal *w;
	int err;

	err = trib_mkdir_p(dir, 0700);
	if (err)
		return err;
	w = trib_calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	snprintf(w->dir, sizeof(w->dir), "%s", dir);
	rt_wal_crc_init(&w->crc);
	w->tailp = &w->head;
	w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dirfd < 0) {
		err = -errno;
		goto err_free;
	}
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0) {
		err = -errno;
		goto err_close_dir;
	}
	err = io_uring_queue_init(RING_ENTRIES, &w->ring, 0);
	if (err)
		goto err_close_efd;
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&w->cva);
	pthread_condattr_setclock(&w->cva, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &w->cva);
	err = -pthread_create(&w->thread, NULL, wal_thread, w);
	if (err)
		goto err_ring;
	*out = w;
	return 0;

err_ring:
	pthread_cond_destroy(&w->cv);
	pthread_condattr_destroy(&w->cva);
	pthread_mutex_destroy(&w->mu);
	io_uring_queue_exit(&w->ring);
err_close_efd:
	close(w->efd);
err_close_dir:
	close(w->dirfd);
err_free:
	trib_free(w);
	return err;
}

void rt_wal_close(struct rt_wal *w)
{
	uint64_t lost = 0;

	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	w->hold = false;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	while (w->head) {
		struct rt_wal_ent *e = w->head;

		w->head = e->next;
		rt_wal_discard(e);
		lost++;
	}
	while (w->cuts) {
		struct rt_wal_cut *c = w->cuts;

		w->cuts = c->next;
		trib_free(c);
	}
	if (lost)
		trib_warn("wal: %llu update%s never written to the log (never answered 202)",
			  (unsigned long long)lost, lost == 1 ? "" : "s");
	rt__wal_segs_close(w);
	io_uring_queue_exit(&w->ring);
	pthread_cond_destroy(&w->cv);
	pthread_condattr_destroy(&w->cva);
	pthread_mutex_destroy(&w->mu);
	close(w->efd);
	close(w->dirfd);
	trib_free(w);
}
