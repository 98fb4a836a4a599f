// SPDX-License-Identifier: MIT
/*
 * A node's cluster identity (controller/ctl_pki.c has the controller's
 * side). DATA_DIR/cluster holds ca.crt, node.key (0600, made here: the key
 * never leaves the node) and node.crt. Without node.crt the node enrols
 * once, before it opens any other link:
 *
 *   1. the CA certificate: --cluster-ca FILE, or fetched from the controller
 *      over a TLS link that checks nothing and accepted only if its SHA-256
 *      is the one the join token carries (ID.SECRET.CAHASH, as kubeadm's
 *      discovery hash); with both, both must agree;
 *   2. over a link that checks the controller's certificate against that CA
 *      (and its name, tributary-controller): the token and a CSR for the
 *      node's name; the answer is the certificate, checked the same way.
 *
 * The token's secret is sent only on the second, server-authenticated link.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent_priv.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_store.h"
#include "trib_x509.h"

#define ENROLL_ASK_MS	  5000

/* One request and its answer's header (a reference for the caller), or NULL (timeout, stop). */
static json_t *ask(struct rt_agent *a, struct ctl_wire *w, const char *url, json_t *h, int *err)
{
	struct ctl_event *ev = NULL;
	json_t *rep = NULL;

	*err = ctl_wire_request(w, url, h, NULL, 0, 1, ENROLL_ASK_MS);
	json_decref(h);
	if (*err)
		return NULL;
	/* A stop (rt_agent_close) does not wait for the answer. */
	for (int waited = 0; !ev && !a->enroll_stop && waited < ENROLL_ASK_MS + 2000;
	     waited += 20) {
		struct pollfd pfd = {.fd = ctl_wire_fd(w), .events = POLLIN};
		uint64_t cnt;

		if (poll(&pfd, 1, 20) > 0 && read(pfd.fd, &cnt, sizeof(cnt)) < 0)
			(void)0; /* EAGAIN: the queue says */
		ev = ctl_wire_next(w);
	}
	if (!ev) {
		*err = -ETIMEDOUT;
		return NULL;
	}
	if (ev->kind == CTL_EV_REPLY) {
		rep = json_incref(ev->hdr);
	} else {
		*err = ev->err ? ev->err : -EIO;
	}
	ctl_event_free(w, ev);
	return rep;
}

/* Ask until answered (the controller may be starting) or told to stop. */
static json_t *ask_retry(struct rt_agent *a, const struct ctl_wire_tls *t, const char *url,
			 const char *name_check, json_t *h)
{
	unsigned tries = 0;
	int err = 0;

	for (;;) {
		struct ctl_wire *w = NULL;
		json_t *rep = NULL;

		err = ctl_wire_open_tls(NULL, t, &w);
		if (!err && name_check)
			err = ctl_wire_peer_name(w, url, name_check);
		if (!err)
			rep = ask(a, w, url, json_incref(h), &err);
		ctl_wire_close(w);
		if (rep || a->enroll_stop || err == -EINVAL) {
			json_decref(h);
			return rep;
		}
		/* 1, 2, 4, 8... tries: said, not every second. */
		tries++;
		if (!(tries & (tries - 1)))
			trib_warn("enrolment: no answer from the controller at %s yet (%s; %u tries); "
				  "not ready until then%s",
				  url, strerror(-err), tries,
				  name_check ? " (is --cluster-ca the cluster's CA?)" : "");
		for (int i = 0; i < 10 && !a->enroll_stop; i++)
			usleep(100000);
	}
}

static int write_pem(const char *path, const char *pem, mode_t mode)
{
	int err = trib_write_file_atomic(path, pem, strlen(pem), mode);

	if (err)
		trib_error("%s: %s", path, strerror(-err));
	return err;
}

/* Step 1: the CA certificate at @ca, pinned by the token's hash and/or --cluster-ca. */
static int get_ca(struct rt_agent *a, const char *ca, const char *pin)
{
	const struct rt_node_opts *o = &a->n->opts;
	char fpr[TRIB_X509_FPR_LEN + 1], *pem = NULL;
	const char *got;
	json_t *rep;
	int err;

	if (o->cluster_ca) {
		err = trib_x509_read_pem(o->cluster_ca, &pem);
		if (err || trib_x509_fingerprint(pem, fpr)) {
			trib_error("--cluster-ca %s: not a readable PEM certificate", o->cluster_ca);
			trib_free(pem);
			return -EINVAL;
		}
	} else {
		struct ctl_wire_tls t = {.dial_unverified = true};

		rep = ask_retry(a, &t, o->controller, NULL, json_pack("{s:s}", "op", "cluster_ca"));
		got = rep ? json_string_value(json_object_get(rep, "ca")) : NULL;
		pem = got ? trib_strdup(got) : NULL;
		json_decref(rep);
		if (!pem || trib_x509_fingerprint(pem, fpr)) {
			trib_free(pem);
			if (a->enroll_stop)
				return -ECANCELED;
			trib_error("enrolment: the controller at %s sent no CA certificate",
				   o->controller);
			return -EPROTO;
		}
	}
	if (pin && strcmp(pin, fpr)) {
		trib_error("enrolment: the CA certificate's SHA-256 is %s, the join token pins %s: "
			   "refusing (a wrong --controller, --cluster-ca, or someone in between)",
			   fpr, pin);
		trib_free(pem);
		return -EACCES;
	}
	if (!pin && !o->cluster_ca) {
		trib_free(pem);
		trib_error("enrolment: the join token pins no CA: give --cluster-ca FILE");
		return -EINVAL;
	}
	err = write_pem(ca, pem, 0644);
	trib_free(pem);
	return err;
}

/* Step 2: the token and a CSR over a server-checked link; node.crt from the answer. */
static int enroll(struct rt_agent *a, const char *ca, const char *crt, const char *key)
{
	const struct rt_node_opts *o = &a->n->opts;
	struct ctl_wire_tls t = {.ca_file = ca};
	char *csr = NULL;
	const char *cert;
	json_t *rep;
	int err;

	err = trib_x509_key_ensure(key);
	if (!err)
		err = trib_x509_csr(key, a->name, &csr);
	if (err) {
		trib_error("%s: making this node's key or CSR: %s", key, strerror(-err));
		return err;
	}
	rep = ask_retry(a, &t, o->controller, TRIB_X509_CONTROLLER_CN,
			json_pack("{s:s, s:s, s:s, s:s}", "op", "enroll", "name", a->name, "token",
				  a->jtok, "csr", csr));
	trib_free(csr);
	if (!rep)
		return a->enroll_stop ? -ECANCELED : -EPROTO;
	cert = json_string_value(json_object_get(rep, "cert"));
	if (!json_is_true(json_object_get(rep, "ok")) || !cert) {
		trib_error("the controller refused to enrol node %s: %s", a->name,
			   jstr(rep, "error", "no certificate in its answer"));
		json_decref(rep);
		return -EACCES;
	}
	err = trib_x509_verify(ca, cert, a->name, NULL);
	if (err)
		trib_error("enrolment: the certificate the controller sent is not the CA's or "
			   "names another node");
	if (!err)
		err = write_pem(crt, cert, 0644);
	if (!err)
		trib_info("node %s enrolled: certificate %s (key %s, CA %s)", a->name, crt, key,
			  ca);
	json_decref(rep);
	return err;
}

int rt__agent_pki(struct rt_agent *a, struct ctl_wire_tls *t, char *ca, char *crt, char *key,
		  size_t cap)
{
	const struct rt_node_opts *o = &a->n->opts;

	snprintf(a->pki, sizeof(a->pki), "%s/cluster", o->data_dir);
	snprintf(ca, cap, "%s/ca.crt", a->pki);
	snprintf(crt, cap, "%s/node.crt", a->pki);
	snprintf(key, cap, "%s/node.key", a->pki);
	*t = (struct ctl_wire_tls){.ca_file = ca, .cert_file = crt, .key_file = key};
	snprintf(a->crl_path, sizeof(a->crl_path), "%s/crl.pem", a->pki);
	t->crl_file = a->crl_path;
	{
		char *old = NULL;

		if (!trib_x509_read_pem(a->crl_path, &old) && trib_x509_crl_check(ca, old, &a->crl_n))
			a->crl_n = 0;
		trib_free(old);
	}
	if (o->join_token) {
		snprintf(a->jtok, sizeof(a->jtok), "%s", o->join_token);
	} else if (o->join_token_file) {
		char *text = NULL;

		/* A Secret's key that is not there (an optional volume): no token. */
		if (!trib_x509_read_pem(o->join_token_file, &text)) {
			text[strcspn(text, "\r\n")] = 0;
			snprintf(a->jtok, sizeof(a->jtok), "%s", text);
			trib_free(text);
		}
	}
	if (!access(crt, F_OK) && !access(key, F_OK) && !access(ca, F_OK)) {
		if (a->jtok[0])
			trib_info("node %s: %s exists: --join-token is not used (remove the "
				  "directory to enrol again)",
				  a->name, crt);
		return 0;
	}
	if (!a->jtok[0]) {
		trib_error("node %s has no cluster certificate (%s): start it once with "
			   "--join-token TOKEN (from `tributary controller join-token`)%s%s",
			   a->name, crt, o->join_token_file ? "; there is no token in " : "",
			   o->join_token_file ? o->join_token_file : "");
		return -EACCES;
	}
	return -ENOENT;
}

int rt__agent_enroll(struct rt_agent *a)
{
	char ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
	const char *pin;
	int err;

	snprintf(ca, sizeof(ca), "%s/ca.crt", a->pki);
	snprintf(crt, sizeof(crt), "%s/node.crt", a->pki);
	snprintf(key, sizeof(key), "%s/node.key", a->pki);
	err = trib_mkdir_p(a->pki, 0700);
	if (err) {
		trib_error("%s: %s", a->pki, strerror(-err));
		return err;
	}
	/* ID.SECRET.CAHASH: the third part pins the CA. */
	pin = strchr(a->jtok, '.');
	pin = pin ? strchr(pin + 1, '.') : NULL;
	if (pin && strlen(pin + 1) != TRIB_X509_FPR_LEN) {
		trib_error("--join-token: its third part must be the CA's SHA-256 (64 hex digits)");
		return -EINVAL;
	}
	err = get_ca(a, ca, pin ? pin + 1 : NULL);
	if (!err)
		err = enroll(a, ca, crt, key);
	return err;
}

int rt__agent_join_proof(struct rt_agent *a, json_t *h)
{
	char path[PATH_MAX], msg[400], *cert = NULL, *sig = NULL;
	long long ts = (long long)time(NULL);
	int err;

	snprintf(path, sizeof(path), "%s/node.crt", a->pki);
	err = trib_x509_read_pem(path, &cert);
	snprintf(path, sizeof(path), "%s/node.key", a->pki);
	snprintf(msg, sizeof(msg), "tributary-join\n%s\n%s\n%lld", a->name, a->addr, ts);
	if (!err)
		err = trib_x509_sign_msg(path, msg, strlen(msg), &sig);
	if (!err)
		err = json_object_set_new(h, "cert", json_string(cert)) ||
			      json_object_set_new(h, "sig", json_string(sig)) ||
			      json_object_set_new(h, "ts", json_integer(ts)) ?
			  -ENOMEM :
			  0;
	if (err)
		trib_error("node %s: the join's proof (%s): %s", a->name, path, strerror(-err));
	trib_free(sig);
	trib_free(cert);
	return err;
}

int rt__agent_crl(struct rt_agent *a, const char *crl, bool from_ctl)
{
	char path[PATH_MAX];
	size_t n = 0;
	int err;

	if (!crl || !a->w)
		return 0;
	snprintf(path, sizeof(path), "%s/ca.crt", a->pki);
	/*
	 * Only our CA's CRL (a bad signature would make mbedTLS fail every
	 * handshake). From a peer (which we cannot tell from the controller on
	 * a listener), only one that lists more than the last: an old CRL would
	 * take a revocation back.
	 */
	err = trib_x509_crl_check(path, crl, &n);
	if (err || (!from_ctl && n <= a->crl_n)) {
		if (err)
			trib_warn("node %s: a CRL not signed by the cluster CA: ignored", a->name);
		return err ? err : 0;
	}
	a->crl_n = n;
	err = ctl_wire_set_crl(a->w, crl);
	if (err) {
		trib_error("node %s: the cluster's CRL could not be applied: %s", a->name,
			   strerror(-err));
		return err;
	}
	/* Kept for the next start, so that the listener refuses from its first handshake. */
	snprintf(path, sizeof(path), "%s/crl.pem", a->pki);
	err = trib_write_file_atomic(path, crl, strlen(crl), 0644);
	if (err)
		trib_warn("%s: %s", path, strerror(-err));
	return 0;
}
