// SPDX-License-Identifier: MIT
/* Body-receive threads: large bodies are received, decrypted and watched off the loop's thread. */
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rt_loop_priv.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/*
 * Why: the loop's one thread pays the kernel's receive copy of every body
 * (_copy_to_iter, a quarter of the gateway's CPU per GB) and the incremental
 * check riding on it. Everything else the loop does (heads, handlers, the
 * node's state) stays on the loop's thread; only these two move, so the
 * node's state keeps one owner and needs no locks.
 *
 * The hand-off, both ways, is a mutex-protected FIFO of connections plus an
 * eventfd the other side's ring has a read armed on: the eventfd is written
 * only when the FIFO goes from empty to non-empty (the reader drains it whole
 * at each wake-up, so a wake-up is never lost, and a spare one finds it empty).
 * The mutex orders every write to a connection before the hand-off with every
 * read after it (the invariant in rt_loop.h, struct rt_conn).
 */

/* A queue of connections linked through rx_next (tail insert, whole-list take). */
struct rx_fifo {
	pthread_mutex_t mu;
	struct rt_conn *head, *tail;
	int efd;           /* eventfd: written when the FIFO becomes non-empty */
	bool stop;         /* to a thread's inbound FIFO: exit */
};

/*
 * io_uring user_data of a receive thread's ring: a connection's operation is
 * ud_conn(c), as on the loop's ring (rt_conn.c arms it on c->ring, either
 * ring); the thread's own are these tags.
 */
enum rx_tag {
	RXT_NONE = OP_NONE,  /* a cancel's own completion */
	RXT_CONN = OP_CONN,  /* a body's receive (TLS: or a session's send or nop) */
	RXT_WAKE = OP_SIGNAL, /* the inbound eventfd's read */
	RXT_TICK = OP_TICK,  /* the timer check */
};

struct rt_rx_thread {
	struct rt_rx *rx;
	uint32_t idx;
	struct io_uring ring;
	bool ring_ok;
	pthread_t tid;
	bool started;
	struct rx_fifo in;            /* the loop gives connections here */
	uint64_t wake_buf;            /* the inbound eventfd's read lands here */
	struct __kernel_timespec tick;
	/* this thread's own: the connections it holds, linked through rx_next/rx_prev */
	struct rt_conn *held;
	/* the loop's thread's own: how many connections it gave and has not taken back */
	uint32_t given;
};

struct rt_rx {
	struct rt_loop *loop;
	uint32_t body_timeout_s; /* copied: a thread reads nothing of the loop's */
	struct rx_fifo back;      /* threads give connections back here (the loop's eventfd) */
	uint64_t back_buf;        /* the loop's read of back.efd lands here */
	uint32_t nthreads;
	uint32_t next;            /* round robin among the least loaded */
	uint32_t given;           /* held by all threads (the loop's thread's count) */
	struct rt_rx_thread t[];
};

static int fifo_init(struct rx_fifo *f)
{
	int err = -pthread_mutex_init(&f->mu, NULL);

	if (err)
		return err;
	f->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (f->efd < 0) {
		err = -errno;
		pthread_mutex_destroy(&f->mu);
		return err;
	}
	return 0;
}

static void fifo_fini(struct rx_fifo *f)
{
	close(f->efd);
	pthread_mutex_destroy(&f->mu);
}

/* Append @c; wake the reader if the FIFO was empty. The caller gives up @c here. */
static void fifo_push(struct rx_fifo *f, struct rt_conn *c)
{
	uint64_t one = 1;
	bool was_empty;

	c->rx_next = NULL;
	pthread_mutex_lock(&f->mu);
	was_empty = !f->head;
	if (f->tail)
		f->tail->rx_next = c;
	else
		f->head = c;
	f->tail = c;
	pthread_mutex_unlock(&f->mu);
	/* An eventfd write of 1 cannot fail short of a counter at 2^64 - 2. */
	if (was_empty && write(f->efd, &one, sizeof(one)) != sizeof(one))
		trib_error("receive thread wake-up: %s", strerror(errno));
}

/* Everything queued, in order (NULL: nothing); *stop: the FIFO says exit. */
static struct rt_conn *fifo_take(struct rx_fifo *f, bool *stop)
{
	struct rt_conn *all;

	pthread_mutex_lock(&f->mu);
	all = f->head;
	f->head = f->tail = NULL;
	if (stop)
		*stop = f->stop;
	pthread_mutex_unlock(&f->mu);
	return all;
}

/* --- a receive thread (everything below until "the loop's side" runs on it) --- */

static struct io_uring_sqe *rx_sqe(struct rt_rx_thread *t)
{
	return rt_ring_sqe(&t->ring);
}

static void rx_arm_wake(struct rt_rx_thread *t)
{
	struct io_uring_sqe *sqe = rx_sqe(t);

	io_uring_prep_read(sqe, t->in.efd, &t->wake_buf, sizeof(t->wake_buf), 0);
	io_uring_sqe_set_data64(sqe, RXT_WAKE);
}

static void rx_arm_tick(struct rt_rx_thread *t)
{
	struct io_uring_sqe *sqe = rx_sqe(t);

	t->tick.tv_sec = 0;
	t->tick.tv_nsec = RT_LOOP_TICK_MS * 1000000ll;
	io_uring_prep_timeout(sqe, &t->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, RXT_TICK);
}

/* On c->ring, which is this thread's while it holds @c. */
static void rx_arm_recv(struct rt_rx_thread *t, struct rt_conn *c)
{
	(void)t; /* with NDEBUG */
	assert(c->ring == &t->ring);
	rt_conn_arm_body_recv(c);
}

/* The body moved (or starts here): its timer starts again, as on the loop (rt_conn.c). */
static void rx_timer(struct rt_rx_thread *t, struct rt_conn *c)
{
	c->deadline_ns = t->rx->body_timeout_s ?
		trib_now_ns() + (uint64_t)t->rx->body_timeout_s * 1000000000ull : 0;
}

/* Give @c back to the loop with @res (enum rt_rx_res or -errno); this thread lets go of it. */
static void rx_give_back(struct rt_rx_thread *t, struct rt_conn *c, int res)
{
	if (c->rx_prev)
		c->rx_prev->rx_next = c->rx_next;
	else
		t->held = c->rx_next;
	if (c->rx_next)
		c->rx_next->rx_prev = c->rx_prev;
	c->rx_prev = NULL;
	c->rx_res = res;
	fifo_push(&t->rx->back, c);
}

/* Connections the loop gave: hold them and start their receives. */
static void rx_on_wake(struct rt_rx_thread *t, bool *stop)
{
	struct rt_conn *c = fifo_take(&t->in, stop), *next;

	for (; c; c = next) {
		next = c->rx_next;
		/* The loop chose this thread (rt_rx_give): nobody else holds @c now. */
		assert(c->rx_thread == t->idx);
		c->rx_expired = false;
		c->rx_prev = NULL;
		c->rx_next = t->held;
		if (t->held)
			t->held->rx_prev = c;
		t->held = c;
		c->ring = &t->ring;
		rx_timer(t, c);
		rx_arm_recv(t, c);
	}
	if (!*stop)
		rx_arm_wake(t);
}

/* A piece of @c's body landed (@res bytes), or its receive failed. */
static void rx_on_recv(struct rt_rx_thread *t, struct rt_conn *c, int res)
{
	c->op_pending = false;
	if (c->rx_expired) {
		/* Its timer ran out first: closing anyway, a last piece changes nothing. */
		rx_give_back(t, c, RT_RX_TIMED_OUT);
		return;
	}
	/* TLS: a record's ciphertext, a flush or a nop; false: the session armed the next. */
	if (c->tls && !rt_conn_tls_step(c, &res))
		return;
	if (res <= 0) {
		/* The client went away mid-body (or shutdown by a drain): nothing was accepted. */
		rx_give_back(t, c, res ? res : -ECONNRESET);
		return;
	}
	c->body_got += (uint64_t)res;
	/* The watch (rt_conn_watch_body) runs here, while the piece is in this core's cache. */
	if (c->on_body_bytes)
		c->on_body_bytes(c);
	if (c->body_got < c->body_len) {
		rx_timer(t, c);
		rx_arm_recv(t, c);
		return;
	}
	rx_give_back(t, c, RT_RX_DONE);
}

/*
 * Bodies that moved no byte for --body-timeout-s: cancel their receive; the
 * cancelled completion gives them back (rx_on_recv), and the loop answers 408
 * and closes, as it does for its own (rt_loop_expire).
 */
static void rx_expire(struct rt_rx_thread *t, uint64_t now_ns)
{
	for (struct rt_conn *c = t->held; c; c = c->rx_next) {
		struct io_uring_sqe *sqe;

		if (c->rx_expired || !c->deadline_ns || now_ns < c->deadline_ns)
			continue;
		c->rx_expired = true;
		sqe = rx_sqe(t);
		io_uring_prep_cancel64(sqe, ud_conn(c), 0);
		io_uring_sqe_set_data64(sqe, RXT_NONE);
	}
}

static void *rx_main(void *arg)
{
	struct rt_rx_thread *t = arg;
	bool stop = false;
	char name[16];

	snprintf(name, sizeof(name), "trib-rx%u", t->idx);
	pthread_setname_np(pthread_self(), name);
	rx_arm_wake(t);
	rx_arm_tick(t);
	while (!stop) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int err = io_uring_submit_and_wait(&t->ring, 1);

		if (err < 0 && err != -EINTR) {
			/*
			 * Nothing completes any more: give every body back as failed (the
			 * loop closes them, their slots are freed) and take no more.
			 */
			trib_error("receive thread %u: io_uring_submit_and_wait: %s", t->idx,
				   strerror(-err));
			while (t->held) {
				shutdown(t->held->fd, SHUT_RDWR);
				t->held->op_pending = false; /* its ring completes nothing more */
				rx_give_back(t, t->held, -EIO);
			}
			break;
		}
		io_uring_for_each_cqe(&t->ring, head, cqe) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);

			seen++;
			switch (ud & 7) {
			case RXT_CONN:
				rx_on_recv(t, (struct rt_conn *)(uintptr_t)(ud & ~7ull), cqe->res);
				break;
			case RXT_WAKE:
				rx_on_wake(t, &stop);
				break;
			case RXT_TICK:
				rx_expire(t, trib_now_ns());
				rx_arm_tick(t);
				break;
			default:
				break;
			}
		}
		io_uring_cq_advance(&t->ring, seen);
	}
	return NULL;
}

/* --- the loop's side (the loop's thread) --- */

int rt_rx_open(struct rt_loop *l, uint32_t nthreads, struct rt_rx **out)
{
	struct rt_rx *rx;
	sigset_t all, old;
	uint32_t i;
	int err;

	*out = NULL;
	if (!nthreads)
		return 0;
	rx = trib_calloc(1, sizeof(*rx) + nthreads * sizeof(rx->t[0]));
	if (!rx)
		return -ENOMEM;
	rx->loop = l;
	rx->body_timeout_s = l->opts.limits.body_timeout_s;
	err = fifo_init(&rx->back);
	if (err)
		goto err_free;
	for (i = 0; i < nthreads; i++) {
		struct rt_rx_thread *t = &rx->t[i];

		t->rx = rx;
		t->idx = i;
		err = fifo_init(&t->in);
		if (err)
			goto err_threads;
		rx->nthreads = i + 1; /* rt_rx_close() undoes this one from here on */
		/* A small ring: one receive per held body, a wake-up, a tick, cancels. */
		err = io_uring_queue_init(256, &t->ring, 0);
		if (err) {
			trib_error("receive thread %u: io_uring_queue_init: %s", i, strerror(-err));
			goto err_threads;
		}
		t->ring_ok = true;
		/*
		 * No signal is ever this thread's: the loop reads them from its signalfd,
		 * which sees only those blocked in every thread (the caller's mask may not
		 * block them all yet: a library cannot know).
		 */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		err = -pthread_create(&t->tid, NULL, rx_main, t);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (err) {
			trib_error("receive thread %u: %s", i, strerror(-err));
			goto err_threads;
		}
		t->started = true;
	}
	*out = rx;
	return 0;

err_threads:
	rt_rx_close(rx);
	return err;
err_free:
	trib_free(rx);
	return err;
}

void rt_rx_close(struct rt_rx *rx)
{
	if (!rx)
		return;
	for (uint32_t i = 0; i < rx->nthreads; i++) {
		struct rt_rx_thread *t = &rx->t[i];
		uint64_t one = 1;

		if (t->started) {
			pthread_mutex_lock(&t->in.mu);
			t->in.stop = true;
			pthread_mutex_unlock(&t->in.mu);
			if (write(t->in.efd, &one, sizeof(one)) != sizeof(one))
				trib_error("stopping receive thread %u: %s", i, strerror(errno));
			pthread_join(t->tid, NULL);
		}
		/* Joined: what it held is the loop's thread's again (rt_loop_close frees it). */
		if (t->ring_ok)
			io_uring_queue_exit(&t->ring);
		fifo_fini(&t->in);
	}
	fifo_fini(&rx->back);
	trib_free(rx);
}

uint32_t rt_rx_threads(const struct rt_rx *rx)
{
	return rx ? rx->nthreads : 0;
}

void rt_rx_arm(struct rt_rx *rx)
{
	struct io_uring_sqe *sqe = rt_loop_sqe(rx->loop);

	io_uring_prep_read(sqe, rx->back.efd, &rx->back_buf, sizeof(rx->back_buf), 0);
	io_uring_sqe_set_data64(sqe, ud_plain(OP_RX));
}

bool rt_rx_give(struct rt_rx *rx, struct rt_conn *c, uint32_t on_loop)
{
	struct rt_rx_thread *best = NULL;

	/*
	 * TLS bodies go too: the handshake is done (its counters are not touched again
	 * while the body is read), and the session, its buffers and its pending flush are
	 * the connection's own, driven by whichever thread holds it.
	 */
	if (!rx || c->body_len - c->body_got < RT_RX_MIN_BYTES || on_loop + rx->given == 0)
		return false;
	assert(!c->rx_owned && !c->op_pending);
	for (uint32_t k = 0; k < rx->nthreads; k++) {
		struct rt_rx_thread *t = &rx->t[(rx->next + k) % rx->nthreads];

		if (!best || t->given < best->given)
			best = t;
	}
	rx->next = (best->idx + 1) % rx->nthreads;
	best->given++;
	rx->given++;
	rx->loop->stats.rx_bodies++;
	c->rx_owned = true;
	c->rx_thread = (uint8_t)best->idx;
	fifo_push(&best->in, c); /* from here until rt_rx_on_back, @c is the thread's */
	return true;
}

void rt_rx_on_back(struct rt_rx *rx, int res)
{
	struct rt_loop *l = rx->loop;
	struct rt_conn *c, *next;

	if (res < 0 && res != -EAGAIN && res != -EINTR)
		trib_error("reading the receive threads' eventfd: %s", strerror(-res));
	for (c = fifo_take(&rx->back, NULL); c; c = next) {
		next = c->rx_next;
		assert(c->rx_owned && c->rx_thread < rx->nthreads);
		rx->t[c->rx_thread].given--;
		rx->given--;
		c->rx_owned = false;
		c->rx_next = NULL;
		c->ring = &l->ring;
		rt_conn_rx_back(l, c, c->rx_res);
	}
	if (!l->stop)
		rt_rx_arm(rx);
}
