/* SPDX-License-Identifier: MIT */
/*
 * The cluster's wire: requests and replies over nng (REQ/REP on TCP) between
 * the controller and node runtimes, and between nodes. nng works in its own
 * threads; everything it receives is queued here and handed to the owner's
 * single-threaded event loop, which polls ctl_wire_fd().
 *
 * A message is a JSON header and an optional binary payload (a model, a
 * partial, an update): [u32 little-endian header length][header][payload].
 */
#ifndef CTL_WIRE_H
#define CTL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct ctl_wire;

enum ctl_ev_kind {
	CTL_EV_REQUEST = 1, /* a peer's request: answer it with ctl_wire_reply() */
	CTL_EV_REPLY = 2,   /* the reply to one of ours */
	CTL_EV_FAIL = 3,    /* one of ours failed: err says why (-ETIMEDOUT, -ECONNREFUSED...) */
};

struct ctl_event {
	enum ctl_ev_kind kind;
	uint64_t cookie;       /* ours, from ctl_wire_request() (replies and failures) */
	int err;
	json_t *hdr;           /* owned by the event; NULL on CTL_EV_FAIL */
	const uint8_t *payload; /* inside the event's message; valid until ctl_event_free() */
	size_t plen;
	/*
	 * A request's peer presented a certificate that verified against the
	 * wire's CA (always true on a listener that requires one, and without
	 * TLS). nng 1.5.2 does not say whose certificate it was: a name is bound
	 * by the caller (ctl_cluster.c's join proof).
	 */
	bool verified;
	/* private */
	struct ctl_event *next;
	void *msg;             /* nng_msg */
	void *slot;            /* the REP context to answer on */
	void *req;             /* our request's state */
};

/*
 * Open the wire. @listen_url ("tcp://0.0.0.0:7070") takes requests; NULL:
 * only send them. Returns 0 or -errno (-EADDRINUSE, -EINVAL for a bad URL).
 * Plain TCP: for tests of the wire itself; the cluster uses ctl_wire_open_tls.
 */
int ctl_wire_open(const char *listen_url, struct ctl_wire **out);

/* The cluster's TLS (nng's tls+tcp://, mbedTLS): both sides present CA-signed certificates. */
struct ctl_wire_tls {
	const char *ca_file;   /* the cluster CA (PEM): peers must chain to it */
	const char *cert_file; /* ours (PEM); NULL with key_file NULL: none (a node enrolling) */
	const char *key_file;
	const char *crl_file;  /* optional: a CRL of the CA (PEM) to start with; missing: none */
	/*
	 * The listener lets a peer without a verified certificate finish the
	 * handshake (the controller: such a peer may only enrol, see
	 * ctl_event.verified). Otherwise the handshake fails without one.
	 */
	bool listen_optional;
	/*
	 * Dial without checking the server's certificate: only to fetch the CA
	 * certificate that the caller then checks against a pinned SHA-256.
	 */
	bool dial_unverified;
	/*
	 * > 0: poke this eventfd (the caller's; it stays open after close)
	 * instead of one of the wire's own: a caller whose loop waits on one fd
	 * before the wire can be opened (a node enrolling) keeps that fd.
	 */
	int event_fd;
};

/* Like ctl_wire_open, over tls+tcp:// URLs only (a tcp:// URL is -EINVAL); @tls is copied. */
int ctl_wire_open_tls(const char *listen_url, const struct ctl_wire_tls *tls,
		      struct ctl_wire **out);
/*
 * Refuse certificates that @crl_pem (a PEM CRL of the wire's CA) lists: on
 * the listener, whose existing connections are closed and which listens
 * again at once (peers reconnect), and on sockets dialled from now on. The
 * same CRL again is a no-op. 0 or -errno (then the old CRL holds).
 */
int ctl_wire_set_crl(struct ctl_wire *w, const char *crl_pem);
/*
 * Requests to @url check that the server's certificate names @name (its CN
 * or DNS subjectAltName), from the next connection on, which is dialled now
 * in the background. Without a name the server need only hold a CA-signed
 * certificate. 0, -ENOSPC or -EINVAL.
 */
int ctl_wire_peer_name(struct ctl_wire *w, const char *url, const char *name);
/*
 * Dial the peer at @url afresh: a new connection is started in the background
 * and the current one (connected, or still connecting or negotiating) is
 * dropped; requests in flight on it fail. For a link that gave no answer for
 * long while its peer may be back (rt_agent: the controller after a restart).
 * 0, -ENOENT (never dialled) or -errno.
 */
int ctl_wire_redial(struct ctl_wire *w, const char *url);
/* Becomes readable (an eventfd) when events wait; read it, then drain ctl_wire_next(). */
int ctl_wire_fd(const struct ctl_wire *w);
/* The next event (owned by the caller: ctl_event_free), or NULL. */
struct ctl_event *ctl_wire_next(struct ctl_wire *w);
/*
 * Send @hdr (a reference is taken) and @len payload bytes (copied) to the
 * peer listening at @url; a CTL_EV_REPLY or CTL_EV_FAIL with @cookie comes
 * later, within @timeout_ms. A request is never sent twice. Returns 0 or
 * -errno (then no event comes).
 */
int ctl_wire_request(struct ctl_wire *w, const char *url, json_t *hdr, const void *payload,
		     size_t len, uint64_t cookie, uint32_t timeout_ms);
/* Answer request @ev with @hdr (a reference is taken) and payload; once per request. */
int ctl_wire_reply(struct ctl_wire *w, struct ctl_event *ev, json_t *hdr, const void *payload,
		   size_t len);
/* Accepts NULL. A request never answered is answered {"error":"dropped"}. */
void ctl_event_free(struct ctl_wire *w, struct ctl_event *ev);
/* Close the wire: pending requests fail silently. Accepts NULL. */
void ctl_wire_close(struct ctl_wire *w);

#endif
