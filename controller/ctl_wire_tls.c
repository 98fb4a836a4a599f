// SPDX-License-Identifier: MIT
/*
 * The wire's TLS (nng's tls+tcp://, mbedTLS): configurations for the
 * listener and each dialled peer, the PEMs they are made of, the server name
 * a peer must show, and a CRL that restarts the listener.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "ctl_wire.h"
#include "ctl_wire_priv.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_x509.h"

bool ctl__wire_url_is_tls(const char *url)
{
	return !strncmp(url, "tls+tcp://", 10);
}

/* A TLS config for a listener (@server) or for a dialer to a server named @name (or NULL). */
int ctl__wire_tls_config(struct ctl_wire *w, bool server, const char *name,
			 nng_tls_config **out)
{
	nng_tls_config *cfg;
	nng_tls_auth_mode mode = NNG_TLS_AUTH_MODE_REQUIRED;
	int rv;

	rv = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT);
	if (rv)
		return ctl__wire_err(rv);
	if (server && w->topt.listen_optional)
		mode = NNG_TLS_AUTH_MODE_OPTIONAL;
	if (!server && w->topt.dial_unverified)
		mode = NNG_TLS_AUTH_MODE_NONE;
	rv = nng_tls_config_version(cfg, NNG_TLS_1_2, NNG_TLS_1_2); /* mbedTLS 2.28: 1.2 */
	if (!rv && w->ca_pem)
		rv = nng_tls_config_ca_chain(cfg, w->ca_pem, w->crl_pem);
	if (!rv && w->cert_pem)
		rv = nng_tls_config_own_cert(cfg, w->cert_pem, w->key_pem, NULL);
	if (!rv)
		rv = nng_tls_config_auth_mode(cfg, mode);
	if (!rv && name)
		rv = nng_tls_config_server_name(cfg, name);
	if (rv) {
		trib_error("wire: TLS configuration: %s", nng_strerror(rv));
		nng_tls_config_free(cfg);
		return ctl__wire_err(rv);
	}
	*out = cfg;
	return 0;
}

int ctl__wire_listen(struct ctl_wire *w, const char *url)
{
	nng_tls_config *cfg = NULL;
	nng_listener l;
	int rv;

	if (!w->tls)
		return nng_listen(w->rep, url, NULL, 0);
	rv = nng_listener_create(&l, w->rep, url);
	if (rv)
		return rv;
	if (ctl__wire_tls_config(w, true, NULL, &cfg)) {
		nng_listener_close(l);
		return NNG_EINVAL;
	}
	rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
	nng_tls_config_free(cfg); /* the listener holds it */
	if (!rv)
		rv = nng_listener_start(l, 0);
	if (rv) {
		nng_listener_close(l);
		return rv;
	}
	w->listener = l;
	snprintf(w->listen_url, sizeof(w->listen_url), "%s", url);
	return 0;
}

int ctl_wire_set_crl(struct ctl_wire *w, const char *crl_pem)
{
	char *old = w->crl_pem;
	nng_listener prev = w->listener;
	sigset_t all, mask;
	int rv = 0;

	if (!w->tls || !crl_pem)
		return -EINVAL;
	if (old && !strcmp(old, crl_pem))
		return 0;
	w->crl_pem = trib_strdup(crl_pem);
	if (!w->crl_pem) {
		w->crl_pem = old;
		return -ENOMEM;
	}
	if (w->listening) {
		/*
		 * A listener's TLS configuration is fixed once it starts: close it
		 * (its connections go; peers dial again and keep their requests'
		 * timeouts) and listen again with the CRL. A certificate it lists
		 * fails the handshake from then on.
		 */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &mask);
		nng_listener_close(prev);
		rv = ctl__wire_listen(w, w->listen_url);
		pthread_sigmask(SIG_SETMASK, &mask, NULL);
		if (rv) {
			trib_error("wire: listening again on %s with a new CRL: %s", w->listen_url,
				   nng_strerror(rv));
			trib_free(w->crl_pem);
			w->crl_pem = old;
			/* The old configuration, so that the node stays reachable. */
			if (ctl__wire_listen(w, w->listen_url))
				trib_error("wire: %s: not listening any more", w->listen_url);
			return ctl__wire_err(rv);
		}
	}
	trib_free(old);
	return 0;
}

/* Read the PEMs of @tls into @w (the key into memory it wipes at close). */
int ctl__wire_tls_load(struct ctl_wire *w, const struct ctl_wire_tls *tls)
{
	int err;

	w->tls = true;
	w->topt = *tls;
	err = tls->ca_file ? trib_x509_read_pem(tls->ca_file, &w->ca_pem) : 0;
	if (err) {
		trib_error("wire: cannot read the cluster CA %s: %s", tls->ca_file, strerror(-err));
		return err;
	}
	/* A CRL kept from an earlier run: missing is normal (nothing revoked yet). */
	if (tls->crl_file && trib_x509_read_pem(tls->crl_file, &w->crl_pem))
		w->crl_pem = NULL;
	if (!tls->cert_file)
		return 0;
	err = trib_x509_read_pem(tls->cert_file, &w->cert_pem);
	if (!err)
		err = trib_x509_read_pem(tls->key_file, &w->key_pem);
	if (err)
		trib_error("wire: cannot read the link certificate %s or its key %s: %s",
			   tls->cert_file, tls->key_file, strerror(-err));
	return err;
}

void ctl__wire_tls_drop(struct ctl_wire *w)
{
	if (w->key_pem)
		memset(w->key_pem, 0, strlen(w->key_pem));
	trib_free(w->key_pem);
	trib_free(w->cert_pem);
	trib_free(w->ca_pem);
	trib_free(w->crl_pem);
}

int ctl_wire_peer_name(struct ctl_wire *w, const char *url, const char *name)
{
	struct wire_name *nm = NULL;
	nng_socket sock;

	if (strlen(url) >= sizeof(nm->url) || strlen(name) >= sizeof(nm->name))
		return -EINVAL;
	for (unsigned i = 0; i < w->nnames && !nm; i++)
		if (!strcmp(w->names[i].url, url))
			nm = &w->names[i];
	if (!nm) {
		if (w->nnames == WIRE_PEERS)
			return -ENOSPC;
		nm = &w->names[w->nnames++];
		snprintf(nm->url, sizeof(nm->url), "%s", url);
	}
	if (strcmp(nm->name, name)) {
		snprintf(nm->name, sizeof(nm->name), "%s", name);
		/* A socket dialled under another name: closed, the next request dials anew. */
		for (unsigned i = 0; i < w->npeers; i++) {
			if (!strcmp(w->peers[i].url, url)) {
				w->peers[i].url[0] = 0;
				trib_info("wire: %s now serves %s: dialled again", url, name);
			}
		}
	}
	/*
	 * Dial now, in the background: a TLS handshake costs a few round trips,
	 * which the first message (a new job for a node) should not wait for.
	 */
	return ctl__wire_peer_get(w, url, &sock);
}
