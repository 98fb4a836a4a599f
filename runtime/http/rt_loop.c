// SPDX-License-Identifier: MIT
/* The gateway's io_uring loop: accept, the tick, signals, one-shot operations on other fds. */
#include "rt_loop_priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_sandbox.h"
#include "trib_signal.h"
#include "trib_time.h"

/* Answered to a connection over the cap, before it is closed. */
#define BUSY_BODY "{\"error\":\"too many open connections\"}"
_Static_assert(sizeof(BUSY_BODY) - 1 == 37, "Content-Length below is the body's");
static const char busy_resp[] = "HTTP/1.1 503 Service Unavailable\r\n"
				"Content-Type: application/json\r\n"
				"Content-Length: 37\r\n"
				"Retry-After: 1\r\n"
				"Connection: close\r\n\r\n" BUSY_BODY;
/* What refuse_busy() reads of a refused client's bytes before closing (4 x scratch). */
#define BUSY_DRAIN_READS 4

struct io_uring_sqe *rt_loop_sqe(struct rt_loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	if (!sqe) {
		/* The submission queue is full: hand it to the kernel and take a fresh entry. */
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

/* --- admission: pure parts (tests/runtime/test_loop.c) --- */

uint32_t rt_loop_max_conns(uint32_t requested, uint64_t nofile)
{
	uint64_t n = nofile / 100 * RT_MAX_CONNS_PCT + nofile % 100 * RT_MAX_CONNS_PCT / 100;

	if (requested)
		return requested;
	if (n > RT_MAX_CONNS_CEIL)
		n = RT_MAX_CONNS_CEIL;
	return n ? (uint32_t)n : 1;
}

uint32_t rt_rx_threads_default(long ncpu)
{
	long n = ncpu < RT_RX_THREADS_MIN_CORES ? 0 : ncpu / 2;

	return n < 1 ? 0 : n > RT_RX_THREADS_DEFAULT_MAX ? RT_RX_THREADS_DEFAULT_MAX : (uint32_t)n;
}

uint32_t rt_accept_backoff_next(uint32_t last_ms)
{
	if (last_ms < RT_ACCEPT_BACKOFF_MIN_MS)
		return RT_ACCEPT_BACKOFF_MIN_MS;
	return last_ms >= RT_ACCEPT_BACKOFF_MAX_MS / 2 ? RT_ACCEPT_BACKOFF_MAX_MS : last_ms * 2;
}

uint64_t rt_timeout_deadline(const struct rt_loop_limits *lim, enum rt_timeout_phase phase,
			     uint64_t now_ns)
{
	uint32_t s = 0;

	switch (phase) {
	case RT_TO_HEAD:
		s = lim->head_timeout_s;
		break;
	case RT_TO_BODY:
	case RT_TO_SEND:
		s = lim->body_timeout_s;
		break;
	case RT_TO_IDLE:
		s = lim->idle_timeout_s;
		break;
	default:
		break;
	}
	return s ? now_ns + (uint64_t)s * 1000000000ull : 0;
}

const char *rt_timeout_phase_name(enum rt_timeout_phase phase)
{
	static const char *const names[RT_TO__COUNT] = { "none", "head", "body", "idle",
							 "send" };

	return (unsigned)phase < RT_TO__COUNT ? names[phase] : "none";
}

bool rt_ratelog_ok(struct rt_ratelog *r, uint64_t now_ns, uint64_t *suppressed)
{
	if (now_ns < r->next_ns) {
		r->suppressed++;
		return false;
	}
	*suppressed = r->suppressed;
	r->suppressed = 0;
	r->next_ns = now_ns + 1000000000ull;
	return true;
}

int rt_loop_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return -errno;
	if (rl.rlim_cur >= rl.rlim_max)
		return 0;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl)) {
		int err = -errno;

		trib_warn("raising the open-file limit (RLIMIT_NOFILE) to %llu: %s",
			  (unsigned long long)rl.rlim_max, strerror(-err));
		return err;
	}
	trib_info("open-file limit (RLIMIT_NOFILE) raised to its hard limit, %llu",
		  (unsigned long long)rl.rlim_max);
	return 0;
}

/* --- accepting --- */

static void arm_accept(struct rt_loop *l)
{
	struct io_uring_sqe *sqe = rt_loop_sqe(l);

	io_uring_prep_multishot_accept(sqe, l->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_plain(OP_ACCEPT));
	l->accepting = true;
}

/* A poll, then non-blocking reads (trib_signal.h says why). */
static void arm_signal(struct rt_loop *l)
{
	struct io_uring_sqe *sqe;

	if (l->sfd < 0)
		return;
	sqe = rt_loop_sqe(l);
	io_uring_prep_poll_add(sqe, l->sfd, POLLIN);
	io_uring_sqe_set_data64(sqe, ud_plain(OP_SIGNAL));
}

static void arm_tick(struct rt_loop *l)
{
	struct io_uring_sqe *sqe = rt_loop_sqe(l);

	l->tick.tv_sec = 0;
	l->tick.tv_nsec = RT_LOOP_TICK_MS * 1000000ll;
	io_uring_prep_timeout(sqe, &l->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_plain(OP_TICK));
}

/* --- one-shot operations for the layers above --- */

int rt_loop_handler_add(struct rt_loop *l, void (*fn)(void *arg, uint32_t key, int res),
			void *arg)
{
	if (l->nhandlers == RT_LOOP_MAX_HANDLERS)
		return -ENOSPC;
	l->handlers[l->nhandlers].fn = fn;
	l->handlers[l->nhandlers].arg = arg;
	return l->nhandlers++;
}

void rt_loop_recv(struct rt_loop *l, int fd, void *buf, size_t len, int handler, uint32_t key)
{
	struct io_uring_sqe *sqe = rt_loop_sqe(l);

	io_uring_prep_recv(sqe, fd, buf, len, 0);
	io_uring_sqe_set_data64(sqe, ud_ext(handler, key));
}

void rt_loop_read(struct rt_loop *l, int fd, void *buf, size_t len, int handler, uint32_t key)
{
	struct io_uring_sqe *sqe = rt_loop_sqe(l);

	io_uring_prep_read(sqe, fd, buf, (unsigned)len, 0);
	io_uring_sqe_set_data64(sqe, ud_ext(handler, key));
}

void rt_loop_poll(struct rt_loop *l, int fd, unsigned events, int handler, uint32_t key)
{
	struct io_uring_sqe *sqe = rt_loop_sqe(l);

	io_uring_prep_poll_add(sqe, fd, events);
	io_uring_sqe_set_data64(sqe, ud_ext(handler, key));
}

/* --- the loop's own events --- */

static void accept_warn(struct rt_loop *l, int err)
{
	uint64_t suppressed;
	char what[64] = "";

	if (!rt_ratelog_ok(&l->accept_log, trib_now_ns(), &suppressed))
		return;
	if (l->accept_paused)
		snprintf(what, sizeof(what), "; not accepting for %u ms", l->backoff_ms);
	if (suppressed)
		trib_warn("accept: %s%s (%llu more in the last second)", strerror(-err), what,
			  (unsigned long long)suppressed);
	else
		trib_warn("accept: %s%s", strerror(-err), what);
}

/*
 * Out of file descriptors: stop accepting (connections wait in the kernel's
 * queue) until the backoff ends or one of ours closes. Without the pause, a
 * multishot accept re-armed at once fails again at once: a busy loop.
 */
static void accept_pause(struct rt_loop *l, int err)
{
	struct io_uring_sqe *sqe;

	l->stats.refused_fd_limit++;
	l->accept_paused = true;
	l->backoff_ms = rt_accept_backoff_next(l->backoff_ms);
	accept_warn(l, err);
	if (l->accepting) {
		/* Still armed: cancel it; its -ECANCELED completion re-arms nothing (paused). */
		sqe = rt_loop_sqe(l);
		io_uring_prep_cancel64(sqe, ud_plain(OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, ud_plain(OP_NONE));
	}
	if (l->resume_armed)
		return; /* the queued resume comes sooner than this one would */
	sqe = rt_loop_sqe(l);
	l->resume_ts.tv_sec = l->backoff_ms / 1000;
	l->resume_ts.tv_nsec = (l->backoff_ms % 1000) * 1000000ll;
	io_uring_prep_timeout(sqe, &l->resume_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_plain(OP_RESUME));
	l->resume_armed = true;
}

static void accept_resume(struct rt_loop *l)
{
	if (!l->accept_paused)
		return;
	l->accept_paused = false;
	if (!l->accepting && !l->stop && !l->draining)
		arm_accept(l);
}

void rt_loop_conn_closed(struct rt_loop *l)
{
	if (!l->detached)
		accept_resume(l);
}

/* Over the cap: say so and close, so that the kernel's queue does not fill with waiters. */
static void refuse_busy(struct rt_loop *l, int fd)
{
	l->stats.refused_max_conns++;
	/* Over TLS the 503 would need a handshake first: the refused client sees a close. */
	if (!l->opts.tls &&
	    send(fd, busy_resp, sizeof(busy_resp) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		trib_debug("503 at the connection cap: %s", strerror(errno));
	/* Read what the client sent already, so that the close sends FIN rather than RST. */
	shutdown(fd, SHUT_WR);
	for (int i = 0; i < BUSY_DRAIN_READS; i++)
		if (recv(fd, l->scratch, sizeof(l->scratch), MSG_DONTWAIT) <= 0)
			break;
	close(fd);
}

static void on_accept(struct rt_loop *l, int res, unsigned flags)
{
	if (!(flags & IORING_CQE_F_MORE))
		l->accepting = false;
	if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
		if (!l->stop && !l->draining)
			accept_pause(l, res);
		return;
	}
	if (!l->accepting && !l->accept_paused && !l->stop && !l->draining)
		arm_accept(l);
	if (res < 0) {
		/* While draining the listener is shut down on purpose; a pause cancels. */
		if (res != -ECANCELED && !l->draining)
			accept_warn(l, res);
		return;
	}
	if (l->stop || l->draining) {
		close(res);
		return;
	}
	l->backoff_ms = 0;
	if (l->nconns >= l->max_conns) {
		refuse_busy(l, res);
		return;
	}
	rt_conn_accepted(l, res);
}

static void on_signal(struct rt_loop *l)
{
	int sig;

	while ((sig = trib_signal_read(l->sfd)) > 0)
		if (l->hooks.on_signal)
			l->hooks.on_signal(l->hooks.ctx, sig);
	if (sig < 0)
		trib_warn("reading signals: %s", strerror(-sig));
	if (!l->stop)
		arm_signal(l);
}

static void on_tick(struct rt_loop *l)
{
	rt_loop_expire(l, trib_now_ns());
	if (l->hooks.on_tick)
		l->hooks.on_tick(l->hooks.ctx);
	if (!l->stop)
		arm_tick(l);
}

static void dispatch(struct rt_loop *l, uint64_t ud, int res, unsigned flags)
{
	switch (ud_tag(ud)) {
	case OP_ACCEPT:
		on_accept(l, res, flags);
		break;
	case OP_CONN:
		rt_conn_on_complete(l, ud_conn_of(ud), res);
		break;
	case OP_SIGNAL:
		on_signal(l);
		break;
	case OP_TICK:
		on_tick(l);
		break;
	case OP_RESUME:
		l->resume_armed = false;
		accept_resume(l);
		break;
	case OP_RX:
		rt_rx_on_back(l->rx, res);
		break;
	case OP_EXT: {
		int h = ud_handler(ud);

		if (h < l->nhandlers)
			l->handlers[h].fn(l->handlers[h].arg, ud_key(ud), res);
		break;
	}
	default:
		break;
	}
}

int rt_loop_run(struct rt_loop *l)
{
	int err;

	arm_accept(l);
	arm_signal(l);
	arm_tick(l);
	if (l->rx)
		rt_rx_arm(l->rx);
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;

		if (l->hooks.before_wait)
			l->hooks.before_wait(l->hooks.ctx);
		if (l->stop)
			break;
		/*
		 * Completions already there (a send that completed inline when before_wait
		 * submitted it): take them without waiting, and without a syscall when nothing
		 * is left to submit.
		 */
		if (!io_uring_cq_ready(&l->ring)) {
			err = io_uring_submit_and_wait(&l->ring, 1);
		} else {
			err = io_uring_sq_ready(&l->ring) ? io_uring_submit(&l->ring) : 0;
			/* Refused until completions are reaped: reap them, submit next turn. */
			if (err == -EBUSY || err == -EAGAIN)
				err = 0;
		}
		if (err < 0 && err != -EINTR) {
			/* Logged here; the caller stops as after a signal. */
			trib_error("io_uring_submit_and_wait: %s", strerror(-err));
			break;
		}
		io_uring_for_each_cqe(&l->ring, head, cqe) {
			seen++;
			dispatch(l, io_uring_cqe_get_data64(cqe), cqe->res, cqe->flags);
		}
		io_uring_cq_advance(&l->ring, seen);
	}
	return 0;
}

void rt_loop_submit(struct rt_loop *l)
{
	int err;

	if (l->detached || !io_uring_sq_ready(&l->ring))
		return;
	err = io_uring_submit(&l->ring);
	/* Left in the queue on a failure: the wait's own submit tries again and logs. */
	if (err < 0 && err != -EINTR && err != -EAGAIN && err != -EBUSY)
		trib_debug("io_uring_submit: %s", strerror(-err));
}

void rt_loop_stop(struct rt_loop *l)
{
	l->stop = true;
}

bool rt_loop_stopped(const struct rt_loop *l)
{
	return l->stop;
}

void rt_loop_drain(struct rt_loop *l)
{
	l->draining = true;
	shutdown(l->lfd, SHUT_RDWR);
	for (struct rt_conn *c = l->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
}

bool rt_loop_draining(const struct rt_loop *l)
{
	return l->draining;
}

uint16_t rt_loop_port(const struct rt_loop *l)
{
	return l->opts.listen_port;
}

const struct rt_loop_stats *rt_loop_stats(const struct rt_loop *l)
{
	return &l->stats;
}

/* --- setup --- */

static int listen_on(struct rt_loop_opts *o, int *out)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int one = 1;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(o->listen_port);
	if (inet_pton(AF_INET, o->listen_host, &sa.sin_addr) != 1) {
		trib_error("--listen: '%s' is not an IPv4 address", o->listen_host);
		return -EINVAL;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1024)) {
		int err = -errno;

		trib_error("listening on %s:%u: %s", o->listen_host, o->listen_port,
			   strerror(-err));
		close(fd);
		return err;
	}
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	o->listen_port = ntohs(sa.sin_port);
	*out = fd;
	return 0;
}

static int ring_init(struct rt_loop *l)
{
	int err;

	/*
	 * Smaller rings where locked memory is scarce (containers often allow
	 * 64 KiB): a ring of 64 entries still serves, with more submits.
	 */
	for (unsigned entries = 1024;; entries /= 4) {
		err = io_uring_queue_init(entries, &l->ring, 0);
		if (err != -ENOMEM || entries <= 64)
			break;
		trib_warn("io_uring with %u entries: %s; trying %u", entries, strerror(-err),
			  entries / 4);
	}
	if (err == -ENOSYS || err == -EPERM) {
		char why[320];

		/* Containers' RuntimeDefault seccomp profiles block io_uring: say which it is. */
		trib_sandbox_why("io_uring_queue_init (io_uring_setup())", err, NULL, 0, why,
				 sizeof(why));
		trib_error("the gateway needs io_uring: %s", why);
	} else if (err) {
		trib_error("io_uring_queue_init: %s", strerror(-err));
	}
	return err;
}

static void write_port_file(const struct rt_loop_opts *o)
{
	char buf[16];
	int len = snprintf(buf, sizeof(buf), "%u\n", o->listen_port);
	FILE *f = fopen(o->port_file, "w");

	if (f) {
		fwrite(buf, 1, (size_t)len, f);
		fclose(f);
	}
}

/* The cap for the fd limit in force (after rt_loop_raise_nofile()). */
static uint32_t max_conns_of(const struct rt_loop_limits *lim)
{
	struct rlimit rl;
	uint64_t nofile = RT_MAX_CONNS_CEIL;
	uint32_t cap;

	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY)
		nofile = rl.rlim_cur;
	cap = rt_loop_max_conns(lim->max_connections, nofile);
	if (cap >= nofile)
		trib_warn("--max-connections %u is not below the open-file limit (%llu): past the "
			  "limit, accepting pauses instead of answering 503", cap,
			  (unsigned long long)nofile);
	return cap;
}

int rt_loop_open(struct rt_loop **out, const struct rt_loop_opts *opts,
		 const struct rt_loop_hooks *hooks, const struct rt_conn_hooks *conn_hooks)
{
	struct rt_loop *l;
	int err;

	l = trib_calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->opts = *opts;
	l->hooks = *hooks;
	l->conn_hooks = *conn_hooks;
	l->lfd = -1;
	l->sfd = opts->signal_fd;
	err = listen_on(&l->opts, &l->lfd);
	if (err)
		goto err_free;
	err = ring_init(l);
	if (err)
		goto err_close_listen;
	err = rt_rx_open(l, l->opts.rx_threads, &l->rx);
	if (err)
		goto err_exit_ring;
	l->max_conns = max_conns_of(&l->opts.limits);
	l->stats.max_connections = l->max_conns;
	l->stats.rx_threads = rt_rx_threads(l->rx);
	l->stats.tls = l->opts.tls ? rt_tls_ctx_stats(l->opts.tls) : NULL;
	trib_info("gateway listening on %s://%s:%u (at most %u connections, %u body-receive "
		  "thread%s)", l->opts.tls ? "https" : "http", l->opts.listen_host,
		  l->opts.listen_port, l->max_conns, l->stats.rx_threads,
		  l->stats.rx_threads == 1 ? "" : "s");
	if (l->opts.port_file)
		write_port_file(&l->opts);
	*out = l;
	return 0;

err_exit_ring:
	io_uring_queue_exit(&l->ring);
err_close_listen:
	close(l->lfd);
err_free:
	trib_free(l);
	return err;
}

int rt_loop_open_detached(struct rt_loop **out, const struct rt_conn_hooks *conn_hooks)
{
	struct rt_loop *l = trib_calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->conn_hooks = *conn_hooks;
	l->lfd = l->sfd = -1;
	l->detached = true;
	l->max_conns = RT_MAX_CONNS_CEIL;
	*out = l;
	return 0;
}

void rt_loop_close(struct rt_loop *l)
{
	if (!l)
		return;
	if (l->detached) {
		while (l->conns)
			rt_conn_free(l, l->conns);
		trib_free(l);
		return;
	}
	/* No accept is armed from here on (rt_conn_free() may resume a paused one). */
	l->stop = true;
	/* Close every connection; queued operations complete with errors, then exit the ring. */
	for (struct rt_conn *c = l->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	io_uring_queue_exit(&l->ring);
	/*
	 * The receive threads' bodies were shut down above: their receives end, the
	 * threads are joined, and what they held is this thread's again.
	 */
	rt_rx_close(l->rx);
	l->rx = NULL;
	/* The ring is gone: nothing completes into a connection any more. */
	while (l->conns) {
		l->conns->op_pending = false;
		rt_conn_free(l, l->conns);
	}
	close(l->lfd);
	trib_free(l);
}
