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
	/* private */
	struct ctl_event *next;
	void *msg;             /* nng_msg */
	void *slot;            /* the REP context to answer on */
	void *req;             /* our request's state */
};

/*
 * Open the wire. @listen_url ("tcp://0.0.0.0:7070") takes requests; NULL:
 * only send them. Returns 0 or -errno (-EADDRINUSE, -EINVAL for a bad URL).
 */
int ctl_wire_open(const char *listen_url, struct ctl_wire **out);
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
