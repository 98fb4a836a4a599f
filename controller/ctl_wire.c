// SPDX-License-Identifier: MIT
/*
 * The cluster's wire over nng. nng runs its callbacks on its own threads;
 * they only move messages into a locked queue and poke an eventfd, so all
 * cluster state stays in the owner's one event-loop thread.
 */
#include "ctl_wire.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

#include "ctl_wire_priv.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"

int ctl__wire_err(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ECONNREFUSED:
		return -ECONNREFUSED;
	case NNG_ECONNRESET:
	case NNG_ECONNSHUT:
		return -ECONNRESET;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_EADDRINVAL:
	case NNG_EINVAL:
		return -EINVAL;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_ECLOSED:
	case NNG_ECANCELED:
		return -ECANCELED;
	default:
		return -EIO;
	}
}

static void push(struct ctl_wire *w, struct ctl_event *ev)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->lock);
	ev->next = NULL;
	*w->tail = ev;
	w->tail = &ev->next;
	pthread_mutex_unlock(&w->lock);
	if (write(w->efd, &one, sizeof(one)) < 0)
		trib_warn("wire: eventfd: %s", strerror(errno));
}

/* Split a message into header and payload; 0 or -EPROTO. */
static int decode(nng_msg *m, struct ctl_event *ev)
{
	const uint8_t *b = nng_msg_body(m);
	size_t len = nng_msg_len(m);
	uint32_t hl;

	if (len < 4)
		return -EPROTO;
	hl = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
	if (hl > len - 4)
		return -EPROTO;
	if (trib_json_loadb(b + 4, hl, 0, &ev->hdr, NULL) == -ENOMEM)
		return -ENOMEM;
	if (!json_is_object(ev->hdr)) {
		json_decref(ev->hdr);
		ev->hdr = NULL;
		return -EPROTO;
	}
	ev->payload = b + 4 + hl;
	ev->plen = len - 4 - hl;
	return 0;
}

static int encode(json_t *hdr, const void *payload, size_t len, nng_msg **out)
{
	char *h = json_dumps(hdr, JSON_COMPACT);
	size_t hl = h ? strlen(h) : 0;
	uint8_t pre[4];
	nng_msg *m;
	int rv;

	if (!h)
		return -ENOMEM;
	rv = nng_msg_alloc(&m, 0);
	if (!rv) {
		pre[0] = (uint8_t)hl;
		pre[1] = (uint8_t)(hl >> 8);
		pre[2] = (uint8_t)(hl >> 16);
		pre[3] = (uint8_t)(hl >> 24);
		rv = nng_msg_append(m, pre, 4);
	}
	if (!rv)
		rv = nng_msg_append(m, h, hl);
	/* The one copy on the sending side: nng owns its message buffers. */
	if (!rv && len)
		rv = nng_msg_append(m, payload, len);
	trib_free(h); /* jansson allocates through trib_alloc */
	if (rv) {
		nng_msg_free(m);
		return ctl__wire_err(rv);
	}
	*out = m;
	return 0;
}

static void slot_cb(void *arg)
{
	struct wire_slot *s = arg;
	struct ctl_wire *w = s->w;
	int rv = nng_aio_result(s->aio);

	if (s->state == SLOT_SEND) {
		if (rv) {
			nng_msg_free(nng_aio_get_msg(s->aio));
			if (rv == NNG_ECLOSED) {
				s->state = SLOT_DEAD;
				return;
			}
		}
		s->state = SLOT_RECV;
		nng_ctx_recv(s->ctx, s->aio);
		return;
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
		s->state = SLOT_DEAD;
		return;
	}
	if (!rv) {
		nng_msg *m = nng_aio_get_msg(s->aio);
		struct ctl_event *ev = trib_calloc(1, sizeof(*ev));

		if (ev && !decode(m, ev)) {
			ev->verified = true;
			if (w->tls) {
				bool v = false;

				/* Asked per message: each may come on another pipe. */
				ev->verified = !nng_pipe_get_bool(nng_msg_get_pipe(m),
								  NNG_OPT_TLS_VERIFIED, &v) && v;
			}
			ev->kind = CTL_EV_REQUEST;
			ev->msg = m;
			ev->slot = s;
			s->state = SLOT_BUSY;
			push(w, ev);
			return; /* re-armed once answered */
		}
		trib_warn("wire: dropped a malformed request (%zu bytes)", nng_msg_len(m));
		trib_free(ev);
		nng_msg_free(m);
	}
	nng_ctx_recv(s->ctx, s->aio);
}

static uint64_t wire_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void req_cb(void *arg)
{
	struct wire_req *r = arg;
	struct ctl_event *ev = trib_calloc(1, sizeof(*ev));
	int rv = nng_aio_result(r->aio);

	if (!ev) {
		trib_error("wire: out of memory for an event; request %llu lost",
			   (unsigned long long)r->cookie);
		return;
	}
	ev->cookie = r->cookie;
	ev->req = r;
	if (!r->sent) {
		uint64_t now = wire_now_ns();

		if (!rv && now >= r->deadline_ns)
			rv = NNG_ETIMEDOUT;
		if (!rv) {
			trib_free(ev);
			r->sent = true;
			/* What is left of the request's time, not a new full timeout. */
			nng_aio_set_timeout(r->aio,
					    (nng_duration)((r->deadline_ns - now + 999999) / 1000000));
			nng_ctx_recv(r->ctx, r->aio);
			return;
		}
		nng_msg_free(nng_aio_get_msg(r->aio));
		ev->kind = CTL_EV_FAIL;
		ev->err = ctl__wire_err(rv);
	} else if (rv) {
		ev->kind = CTL_EV_FAIL;
		ev->err = ctl__wire_err(rv);
	} else {
		nng_msg *m = nng_aio_get_msg(r->aio);

		if (decode(m, ev)) {
			nng_msg_free(m);
			ev->kind = CTL_EV_FAIL;
			ev->err = -EPROTO;
		} else {
			ev->kind = CTL_EV_REPLY;
			ev->msg = m;
		}
	}
	pthread_mutex_lock(&r->w->lock);
	r->finished = true;
	pthread_mutex_unlock(&r->w->lock);
	push(r->w, ev);
}

static int wire_open(const char *listen_url, const struct ctl_wire_tls *tls,
		     struct ctl_wire **out)
{
	struct ctl_wire *w = trib_calloc(1, sizeof(*w));
	int rv;

	if (!w)
		return -ENOMEM;
	if (tls) {
		rv = ctl__wire_tls_load(w, tls);
		if (rv) {
			ctl__wire_tls_drop(w);
			trib_free(w);
			return rv;
		}
	}
	w->tail = &w->head;
	pthread_mutex_init(&w->lock, NULL);
	w->efd_borrowed = tls && tls->event_fd > 0;
	w->efd = w->efd_borrowed ? tls->event_fd : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->efd < 0) {
		int err = -errno;

		ctl__wire_tls_drop(w);
		trib_free(w);
		return err;
	}
	if (listen_url) {
		rv = nng_rep0_open(&w->rep);
		if (!rv)
			rv = nng_socket_set_size(w->rep, NNG_OPT_RECVMAXSZ, 0);
		if (!rv)
			rv = ctl__wire_listen(w, listen_url);
		if (rv) {
			int err = ctl__wire_err(rv);

			trib_error("wire: cannot listen on %s: %s", listen_url, nng_strerror(rv));
			nng_close(w->rep);
			if (!w->efd_borrowed)
				close(w->efd);
			ctl__wire_tls_drop(w);
			trib_free(w);
			return err;
		}
		w->listening = true;
		for (int i = 0; i < WIRE_SLOTS; i++) {
			struct wire_slot *s = &w->slots[i];

			s->w = w;
			s->state = SLOT_DEAD;
			if (nng_ctx_open(&s->ctx, w->rep) || nng_aio_alloc(&s->aio, slot_cb, s))
				continue;
			s->state = SLOT_RECV;
			nng_ctx_recv(s->ctx, s->aio);
		}
	}
	*out = w;
	return 0;
}

/*
 * nng starts its threads with the first socket. They must not take the
 * process's signals: the gateway reads SIGTERM and SIGCHLD from a signalfd,
 * which sees only signals blocked in every thread.
 */
static int open_blocked(const char *listen_url, const struct ctl_wire_tls *tls,
			struct ctl_wire **out)
{
	sigset_t all, old;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = wire_open(listen_url, tls, out);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err;
}

int ctl_wire_open(const char *listen_url, struct ctl_wire **out)
{
	if (listen_url && ctl__wire_url_is_tls(listen_url))
		return -EINVAL;
	return open_blocked(listen_url, NULL, out);
}

int ctl_wire_open_tls(const char *listen_url, const struct ctl_wire_tls *tls,
		      struct ctl_wire **out)
{
	if (!tls || (!tls->ca_file && !tls->dial_unverified) || !tls->cert_file != !tls->key_file ||
	    (listen_url && (!ctl__wire_url_is_tls(listen_url) || !tls->cert_file)))
		return -EINVAL;
	return open_blocked(listen_url, tls, out);
}

int ctl_wire_fd(const struct ctl_wire *w)
{
	return w->efd;
}

struct ctl_event *ctl_wire_next(struct ctl_wire *w)
{
	struct ctl_event *ev;

	pthread_mutex_lock(&w->lock);
	ev = w->head;
	if (ev) {
		w->head = ev->next;
		if (!w->head)
			w->tail = &w->head;
		ev->next = NULL;
	}
	pthread_mutex_unlock(&w->lock);
	return ev;
}

/* A dialer for @p's socket to @url, started in the background (it dials again until it is up). */
static int dialer_start(struct ctl_wire *w, struct wire_peer *p, const char *url, nng_dialer *out)
{
	const char *name = NULL;
	nng_tls_config *cfg = NULL;
	nng_dialer d;
	int rv;

	for (unsigned i = 0; i < w->nnames; i++)
		if (!strcmp(w->names[i].url, url) && w->names[i].name[0])
			name = w->names[i].name;
	rv = nng_dialer_create(&d, p->sock, url);
	if (rv)
		return rv;
	if (w->tls) {
		if (ctl__wire_tls_config(w, false, name, &cfg))
			rv = NNG_EINVAL;
		if (!rv) {
			rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
			nng_tls_config_free(cfg); /* the dialer holds it */
		}
	}
	if (!rv)
		rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
	if (rv) {
		nng_dialer_close(d);
		return rv;
	}
	*out = d;
	return 0;
}

static int peer_open(struct ctl_wire *w, const char *url, nng_socket *out)
{
	struct wire_peer *p;
	int rv;

	for (unsigned i = 0; i < w->npeers; i++) {
		if (!strcmp(w->peers[i].url, url)) {
			*out = w->peers[i].sock;
			return 0;
		}
	}
	if (w->npeers == WIRE_PEERS || strlen(url) >= sizeof(p->url))
		return -ENOSPC;
	if (w->tls != ctl__wire_url_is_tls(url))
		return -EINVAL; /* no plain link in a TLS cluster, nor the reverse */
	p = &w->peers[w->npeers];
	rv = nng_req0_open(&p->sock);
	if (rv)
		return ctl__wire_err(rv);
	/* Never resend: requests are not all idempotent (an update's acceptance is counted). */
	nng_socket_set_ms(p->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, 0);
	nng_socket_set_ms(p->sock, NNG_OPT_RECONNMINT, 50);
	nng_socket_set_ms(p->sock, NNG_OPT_RECONNMAXT, 500);
	/* In the background: a peer that is not up yet is dialled again until it is. */
	rv = dialer_start(w, p, url, &p->dialer);
	if (rv) {
		nng_close(p->sock);
		return ctl__wire_err(rv);
	}
	snprintf(p->url, sizeof(p->url), "%s", url);
	w->npeers++;
	*out = p->sock;
	return 0;
}

int ctl_wire_redial(struct ctl_wire *w, const char *url)
{
	sigset_t all, old;
	nng_dialer d;
	int rv = -ENOENT;

	for (unsigned i = 0; i < w->npeers && rv == -ENOENT; i++) {
		struct wire_peer *p = &w->peers[i];

		if (strcmp(p->url, url))
			continue;
		/* The new dialer first (its threads block signals, as at open); then the old goes. */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		rv = ctl__wire_err(dialer_start(w, p, url, &d));
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rv)
			break;
		/*
		 * Closing a dialer closes its pipe (requests on it fail with ECONNRESET, as
		 * when the peer goes) and stops its redials; it does not wait (nng 1.5
		 * reaps it on its own thread), unlike closing a socket (ctl_wire_close).
		 */
		nng_dialer_close(p->dialer);
		p->dialer = d;
	}
	return rv;
}

/* A socket of ours is opened with signals blocked too (see ctl_wire_open). */
int ctl__wire_peer_get(struct ctl_wire *w, const char *url, nng_socket *out)
{
	sigset_t all, old;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = peer_open(w, url, out);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err;
}

int ctl_wire_request(struct ctl_wire *w, const char *url, json_t *hdr, const void *payload,
		     size_t len, uint64_t cookie, uint32_t timeout_ms)
{
	struct wire_req *r;
	nng_socket sock;
	nng_msg *m;
	int err;

	err = ctl__wire_peer_get(w, url, &sock);
	if (err)
		return err;
	r = trib_calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->w = w;
	r->cookie = cookie;
	err = ctl__wire_err(nng_ctx_open(&r->ctx, sock));
	if (err) {
		trib_free(r);
		return err;
	}
	err = ctl__wire_err(nng_aio_alloc(&r->aio, req_cb, r));
	if (err) {
		nng_ctx_close(r->ctx);
		trib_free(r);
		return err;
	}
	err = encode(hdr, payload, len, &m);
	if (err) {
		nng_aio_free(r->aio);
		nng_ctx_close(r->ctx);
		trib_free(r);
		return err;
	}
	nng_aio_set_timeout(r->aio, (nng_duration)timeout_ms);
	nng_aio_set_msg(r->aio, m);
	r->deadline_ns = wire_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	pthread_mutex_lock(&w->lock);
	w->pending++;
	r->next = w->reqs;
	if (w->reqs)
		w->reqs->prev = r;
	w->reqs = r;
	pthread_mutex_unlock(&w->lock);
	nng_ctx_send(r->ctx, r->aio);
	return 0;
}

int ctl_wire_reply(struct ctl_wire *w, struct ctl_event *ev, json_t *hdr, const void *payload,
		   size_t len)
{
	struct wire_slot *s = ev->slot;
	nng_msg *m;
	int err;

	(void)w;
	if (!s)
		return -EINVAL;
	ev->slot = NULL;
	err = encode(hdr, payload, len, &m);
	if (err) {
		/* Let the peer time out rather than wedge the context. */
		s->state = SLOT_RECV;
		nng_ctx_recv(s->ctx, s->aio);
		return err;
	}
	s->state = SLOT_SEND;
	nng_aio_set_msg(s->aio, m);
	nng_ctx_send(s->ctx, s->aio);
	return 0;
}

void ctl_event_free(struct ctl_wire *w, struct ctl_event *ev)
{
	if (!ev)
		return;
	if (ev->slot) {
		json_t *h = json_pack("{s:s}", "error", "dropped");

		ctl_wire_reply(w, ev, h, NULL, 0);
		json_decref(h);
	}
	if (ev->req) {
		struct wire_req *r = ev->req;

		/* From this thread, never from nng's callback: reaping waits for the callback. */
		pthread_mutex_lock(&w->lock);
		if (r->prev)
			r->prev->next = r->next;
		else
			w->reqs = r->next;
		if (r->next)
			r->next->prev = r->prev;
		w->pending--;
		pthread_mutex_unlock(&w->lock);
		nng_aio_reap(r->aio);
		nng_ctx_close(r->ctx);
		trib_free(r);
	}
	if (ev->msg)
		nng_msg_free(ev->msg);
	json_decref(ev->hdr);
	trib_free(ev);
}

/* A wire whose sockets did not close in time (sockets_closed): kept reachable until exit. */
static struct ctl_wire *abandoned;

struct closer {
	struct ctl_wire *w;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done, gone; /* the thread finished; the caller stopped waiting (the thread frees) */
};

static void *close_sockets(void *arg)
{
	struct closer *c = arg;
	struct ctl_wire *w = c->w;
	bool gone;

	if (w->listening)
		nng_close(w->rep);
	for (unsigned i = 0; i < w->npeers; i++)
		nng_close(w->peers[i].sock);
	pthread_mutex_lock(&c->lock);
	c->done = true;
	gone = c->gone;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (gone)
		trib_free(c);
	return NULL;
}

/*
 * nng_close of the wire's sockets, for at most WIRE_CLOSE_HANG_MS. nng 1.5 can still hang in
 * nng_close after the wait above (seen in e2e cluster_mtls, about 1 stop in 10: the node's
 * REP listener's nng_close never returned, every nng thread idle): a stopping process must
 * not wait forever on it, so the close runs on a thread, and past the limit the stop goes on
 * without it, said in the log. True when the sockets are closed.
 */
static bool sockets_closed(struct ctl_wire *w)
{
	struct closer *c = trib_calloc(1, sizeof(*c));
	struct timespec until;
	pthread_t t;
	bool done;
	int rc = 0;

	if (c) {
		c->w = w;
		pthread_mutex_init(&c->lock, NULL);
		pthread_cond_init(&c->cond, NULL);
	}
	if (!c || pthread_create(&t, NULL, close_sockets, c)) {
		/* No thread: closed here, unbounded, as before. */
		if (w->listening)
			nng_close(w->rep);
		for (unsigned i = 0; i < w->npeers; i++)
			nng_close(w->peers[i].sock);
		if (c) {
			pthread_cond_destroy(&c->cond);
			pthread_mutex_destroy(&c->lock);
		}
		trib_free(c);
		return true;
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WIRE_CLOSE_HANG_MS / 1000;
	until.tv_nsec += (long)(WIRE_CLOSE_HANG_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->lock);
	while (!c->done && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&c->cond, &c->lock, &until);
	done = c->done;
	if (!done)
		c->gone = true;
	pthread_mutex_unlock(&c->lock);
	if (!done) {
		pthread_detach(t);
		trib_warn("wire: nng did not close its sockets within %d ms (an nng 1.5 hang); "
			  "stopping without waiting for it", WIRE_CLOSE_HANG_MS);
		return false;
	}
	pthread_join(t, NULL);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	trib_free(c);
	return true;
}

void ctl_wire_close(struct ctl_wire *w)
{
	struct ctl_event *ev;

	if (!w)
		return;
	w->closing = true;
	/*
	 * nng 1.5 can hang in nng_close of a REQ socket when a reply arrives for a
	 * context that no longer waits (nanomsg/nng#648, open; reproduced here
	 * whether the receive is cancelled, its context closed or its dialer
	 * closed first). So let our requests finish first — an answer on its way
	 * lands, a dead peer times out — for up to WIRE_CLOSE_WAIT_MS, and only
	 * then stop what is left. Only this thread frees requests: the list holds
	 * still meanwhile.
	 */
	for (int waited = 0; waited < WIRE_CLOSE_WAIT_MS; waited += 5) {
		bool busy = false;

		pthread_mutex_lock(&w->lock);
		for (struct wire_req *r = w->reqs; r && !busy; r = r->next)
			busy = !r->finished;
		pthread_mutex_unlock(&w->lock);
		if (!busy)
			break;
		usleep(5000);
	}
	for (struct wire_req *r = w->reqs; r; r = r->next) {
		nng_aio_stop(r->aio);
		nng_ctx_close(r->ctx);
	}
	/* The listener's receives stop first: no callback re-arms one while the socket closes. */
	for (int i = 0; i < WIRE_SLOTS; i++)
		if (w->slots[i].aio)
			nng_aio_stop(w->slots[i].aio);
	if (!sockets_closed(w)) {
		/*
		 * Left as it is: its sockets may still be in nng's hands. It stays reachable (for
		 * LeakSanitizer, and nothing else uses it): the process is stopping.
		 */
		abandoned = w;
		return;
	}
	for (int i = 0; i < WIRE_SLOTS; i++)
		if (w->slots[i].aio)
			nng_aio_free(w->slots[i].aio);
	/* Our requests end with ECLOSED; wait (briefly) for their events to free them. */
	for (int tries = 0; tries < 200; tries++) {
		unsigned left;

		while ((ev = ctl_wire_next(w))) {
			ev->slot = NULL;
			ctl_event_free(w, ev);
		}
		pthread_mutex_lock(&w->lock);
		left = w->pending;
		pthread_mutex_unlock(&w->lock);
		if (!left)
			break;
		usleep(10000);
	}
	if (!w->efd_borrowed)
		close(w->efd);
	pthread_mutex_destroy(&w->lock);
	ctl__wire_tls_drop(w);
	trib_free(w);
}
