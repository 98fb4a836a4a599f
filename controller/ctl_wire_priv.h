/* SPDX-License-Identifier: MIT */
/* Inside the wire (ctl_wire.c, ctl_wire_tls.c): its state and the verbs its files share. */
#ifndef CTL_WIRE_PRIV_H
#define CTL_WIRE_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "ctl_wire.h"

/* Requests served at once; more wait in nng's queue. */
#define WIRE_SLOTS 32
#define WIRE_PEERS 64
/* How long closing waits for our requests in flight (see ctl_wire_close). */
#define WIRE_CLOSE_WAIT_MS 500
/* nng_close of the wire's sockets after that: at most this long (ctl_wire.c sockets_closed). */
#define WIRE_CLOSE_HANG_MS 5000

enum { SLOT_RECV, SLOT_BUSY, SLOT_SEND, SLOT_DEAD };

struct wire_slot {
	struct ctl_wire *w;
	nng_ctx ctx;
	nng_aio *aio;
	int state;
};

struct wire_peer {
	char url[128];
	nng_socket sock;
	nng_dialer dialer; /* the one dialling now (ctl_wire_redial replaces it) */
};

/* The name a peer's server certificate must carry (ctl_wire_peer_name). */
struct wire_name {
	char url[128];
	char name[72];
};

struct wire_req {
	struct ctl_wire *w;
	nng_ctx ctx;
	nng_aio *aio;
	uint64_t cookie;
	uint64_t deadline_ns;    /* the timeout covers sending and the answer together */
	bool sent;
	bool finished;           /* its event is queued (under the wire's lock) */
	struct wire_req *prev, *next; /* the wire's requests whose event is not freed (lock) */
};

struct ctl_wire {
	int efd;
	bool efd_borrowed; /* the caller's (ctl_wire_tls.event_fd): not closed here */
	bool listening;
	nng_socket rep;
	struct wire_slot slots[WIRE_SLOTS];
	struct wire_peer peers[WIRE_PEERS];
	unsigned npeers;
	struct wire_name names[WIRE_PEERS];
	unsigned nnames;
	/* TLS: the PEMs, read once at open (the key is wiped at close). */
	bool tls;
	struct ctl_wire_tls topt;
	char *ca_pem, *cert_pem, *key_pem;
	char *crl_pem;	     /* ctl_wire_set_crl; NULL: none */
	char listen_url[160];
	nng_listener listener; /* the TLS listener (restarted with a new CRL) */
	pthread_mutex_t lock;
	struct ctl_event *head, **tail;
	unsigned pending; /* our requests whose event is not freed yet (under lock) */
	struct wire_req *reqs; /* those requests (under lock) */
	bool closing;
};

/* nng's error as a negative errno. */
int ctl__wire_err(int rv);
/* The REQ socket for @url, dialled (in the background) the first time. */
int ctl__wire_peer_get(struct ctl_wire *w, const char *url, nng_socket *out);
/* ctl_wire_tls.c */
bool ctl__wire_url_is_tls(const char *url);
/* A TLS config for a listener (@server) or for a dialer to a server named @name (or NULL). */
int ctl__wire_tls_config(struct ctl_wire *w, bool server, const char *name,
			 nng_tls_config **out);
/* Listen on @url (with the wire's TLS when it has one); an nng error. */
int ctl__wire_listen(struct ctl_wire *w, const char *url);
/* Read the PEMs of @tls into @w (the key into memory it wipes at close). */
int ctl__wire_tls_load(struct ctl_wire *w, const struct ctl_wire_tls *tls);
void ctl__wire_tls_drop(struct ctl_wire *w);

#endif
