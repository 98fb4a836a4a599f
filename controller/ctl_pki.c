// SPDX-License-Identifier: MIT
/*
 * Who may be a node. The controller makes a cluster CA at its first start
 * (DATA_DIR/cluster/ca.key 0600, ca.crt 0644) and signs its own link
 * certificate (CN tributary-controller). A node enrols once: it presents a
 * one-time join token and a CSR for its name over a link on which it checks
 * the controller's certificate, and gets a certificate for that name. From
 * then on every link is mutual TLS.
 *
 * nng 1.5.2 tells a listener only that its peer's certificate verified, not
 * whose it is. So a join carries the node's certificate and a signature, by
 * the node's key, over its name, its address and the time: the controller
 * checks that the certificate is the CA's, names the node and is not
 * revoked, and answers with a session secret that the node's later requests
 * carry (ctl__session_rank). The other direction needs no proof: the
 * controller dials a node with the node's name as the TLS server name.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

#include "ctl_daemon.h"
#include "ctl_store.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_name.h"
#include "trib_store.h"
#include "trib_time.h"
#include "trib_token.h"
#include "trib_x509.h"

/* How far a join's clock may be from ours (its signature covers the time). */
#define JOIN_SKEW_S 300
#define TOKEN_ID_BYTES 6
#define TOKEN_SECRET_BYTES 16

static void sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned int len = 0;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* DATA_DIR/cluster with its CA; the controller's link certificate too if @own. */
static int pki_ensure(const char *data_dir, char *pki, size_t cap, bool own)
{
	char key[PATH_MAX], crt[PATH_MAX];
	bool created = false;
	int err;

	snprintf(pki, cap, "%s/cluster", data_dir);
	err = trib_x509_ca_ensure(pki, &created);
	if (err) {
		trib_error("%s: the cluster CA (ca.key, ca.crt) could not be made or is half "
			   "there: %s",
			   pki, strerror(-err));
		return err;
	}
	if (created)
		trib_info("cluster CA made in %s (ca.key 0600: keep it secret; ca.crt goes to "
			  "nodes)",
			  pki);
	if (!own)
		return 0;
	snprintf(key, sizeof(key), "%s/controller.key", pki);
	snprintf(crt, sizeof(crt), "%s/controller.crt", pki);
	/* Signed at every start: a CA rotated in place is picked up, the key is kept. */
	err = trib_x509_issue_local(pki, TRIB_X509_CONTROLLER_CN, key, crt, TRIB_X509_LEAF_DAYS);
	if (err)
		trib_error("%s: the controller's link certificate: %s", crt, strerror(-err));
	return err;
}

/*
 * The CRL of every revoked serial, made again when their number changed.
 * Nodes load it into their TLS listeners (ctl_wire_set_crl): a revoked
 * certificate then fails the handshake with every peer, not only with us.
 * The controller's own listener keeps checking at join instead, so that a
 * revoked node is answered why (and exits) rather than cut off mute.
 */
static int crl_refresh(struct ctl *c, bool *changed)
{
	char **serials = NULL, *pem = NULL;
	size_t n = 0;
	int err;

	*changed = false;
	err = ctl_store_cert_revoked(c->store, &serials, &n);
	if (err || n == c->crl_n) {
		trib_free(serials);
		return err;
	}
	err = trib_x509_crl(c->pki, (const char *const *)serials, n, &pem);
	trib_free(serials);
	if (err) {
		trib_error("the cluster's CRL (%zu serials) could not be made: %s", n,
			   strerror(-err));
		return err;
	}
	trib_free(c->crl_pem);
	c->crl_pem = pem;
	c->crl_n = n;
	*changed = true;
	return 0;
}

int ctl__pki_open(struct ctl *c)
{
	bool changed;
	int err;

	sha256_hex(c->admin_token, strlen(c->admin_token), c->admin_sha256);
	err = pki_ensure(c->o->data_dir, c->pki, sizeof(c->pki), true);
	if (!err && c->store)
		crl_refresh(c, &changed);
	return err;
}

void ctl__pki_close(struct ctl *c)
{
	trib_free(c->crl_pem);
	c->crl_pem = NULL;
}

void ctl__pki_wire(const struct ctl *c, struct ctl_wire_tls *t, char *ca, char *crt, char *key,
		   size_t cap)
{
	snprintf(ca, cap, "%s/ca.crt", c->pki);
	snprintf(crt, cap, "%s/controller.crt", c->pki);
	snprintf(key, cap, "%s/controller.key", c->pki);
	/* Optional: a node that has no certificate yet may enrol (and do nothing else). */
	*t = (struct ctl_wire_tls){
	    .ca_file = ca, .cert_file = crt, .key_file = key, .listen_optional = true};
}

void ctl__on_cluster_ca(struct ctl *c, json_t **rep)
{
	char path[PATH_MAX], *pem = NULL;
	int err;

	snprintf(path, sizeof(path), "%s/ca.crt", c->pki);
	err = trib_x509_read_pem(path, &pem);
	if (err) {
		*rep = ctl__err_reply(500, "the cluster CA certificate cannot be read");
		return;
	}
	*rep = json_pack("{s:b, s:s}", "ok", 1, "ca", pem);
	trib_free(pem);
}

/* Split "ID.SECRET[.CAHASH]": the ID and the SHA-256 (hex) of the secret. */
static int token_split(const char *tok, char id[32], char hash[65])
{
	const char *dot = strchr(tok, '.'), *end;

	if (!dot || dot == tok || (size_t)(dot - tok) >= 32)
		return -EINVAL;
	end = strchr(dot + 1, '.');
	if (!end)
		end = dot + strlen(dot);
	if (end == dot + 1)
		return -EINVAL;
	memcpy(id, tok, (size_t)(dot - tok));
	id[dot - tok] = 0;
	sha256_hex(dot + 1, (size_t)(end - dot - 1), hash);
	return 0;
}

void ctl__on_enroll(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *tok = ctl__jstr(ev->hdr, "token", "");
	const char *name = ctl__jstr(ev->hdr, "name", "");
	const char *csr = ctl__jstr(ev->hdr, "csr", "");
	char id[32], hash[65], serial[TRIB_X509_SERIAL_MAX], msg[200], *cert = NULL, *ca = NULL;
	char path[PATH_MAX];
	int err;

	if (!trib_job_name_valid(name) || !strcmp(name, TRIB_X509_CONTROLLER_CN)) {
		*rep = ctl__err_reply(400, "enroll: name must be a node name (like a job name, "
					   "not tributary-controller)");
		return;
	}
	if (token_split(tok, id, hash)) {
		*rep = ctl__err_reply(400, "enroll: token must be ID.SECRET[.CAHASH] as printed by "
					   "`tributary controller join-token`");
		return;
	}
	/*
	 * One certificate in force per name: a token buys a new node, not the
	 * name of one that exists (revoke it first to enrol it again). Checked
	 * before the token is spent.
	 */
	{
		unsigned held = 0;

		err = ctl_store_cert_count(c->store, name, &held);
		if (err || held) {
			snprintf(msg, sizeof(msg), "node %s has a certificate in force: `tributary "
				 "controller revoke %s` first to enrol it again (the token is not "
				 "spent)", name, name);
			trib_warn("enrolment refused: %s", msg);
			*rep = ctl__err_reply(err ? 503 : 409, err ? "enroll: store error" : msg);
			return;
		}
	}
	err = ctl_store_jtoken_use(c->store, id, hash, name, (int64_t)time(NULL));
	if (err) {
		snprintf(msg, sizeof(msg), "join token %s %s", id,
			 err == -ETIME	      ? "has expired: make a new one (join-token --ttl)" :
			 err == -EALREADY     ? "was used already: a token enrols one node once" :
			 err == -ENOENT	      ? "is unknown, or its secret is wrong" :
						"could not be checked (store error)");
		trib_warn("node %s: enrolment refused: %s", name, msg);
		*rep = ctl__err_reply(err == -EIO || err == -EBUSY ? 503 : 403, msg);
		return;
	}
	err = trib_x509_sign_csr(c->pki, csr, name, TRIB_X509_LEAF_DAYS, serial, &cert);
	if (err) {
		*rep = ctl__err_reply(400, "enroll: csr must be a PEM CSR signed by its key, with "
					   "CN = the node's name");
		trib_warn("node %s: enrolment refused: bad CSR (the token %s is spent)", name, id);
		return;
	}
	snprintf(path, sizeof(path), "%s/ca.crt", c->pki);
	err = ctl_store_cert_put(c->store, serial, name, (int64_t)time(NULL));
	if (!err)
		err = trib_x509_read_pem(path, &ca);
	if (err) {
		*rep = ctl__err_reply(503, "enroll: the certificate could not be recorded");
	} else {
		*rep = json_pack("{s:b, s:s, s:s, s:s}", "ok", 1, "cert", cert, "ca", ca, "serial",
				 serial);
		trib_info("node %s enrolled with join token %s (certificate serial %s)", name, id,
			  serial);
	}
	trib_free(ca);
	trib_free(cert);
}

int ctl__join_check(struct ctl *c, struct ctl_event *ev, const char *name, const char *addr,
		    char serial[41], json_t **rep)
{
	const char *cert = ctl__jstr(ev->hdr, "cert", NULL), *sig = ctl__jstr(ev->hdr, "sig", NULL);
	json_int_t ts = json_integer_value(json_object_get(ev->hdr, "ts"));
	char ca[PATH_MAX], msg[400];
	int64_t now = (int64_t)time(NULL);
	bool ok = false;
	int err;

	if (!cert || !sig) {
		*rep = ctl__err_reply(401, "join: cert and sig required (a node enrols first: "
					   "--join-token)");
		return -EACCES;
	}
	snprintf(ca, sizeof(ca), "%s/ca.crt", c->pki);
	err = trib_x509_verify(ca, cert, name, serial);
	if (err) {
		*rep = ctl__err_reply(403, "join: the certificate is not the cluster CA's, is out "
					   "of date, or names another node");
		return -EACCES;
	}
	if (ctl_store_cert_ok(c->store, serial, &ok) || !ok) {
		trib_warn("node %s: join refused: certificate %s is revoked", name, serial);
		*rep = json_pack("{s:b, s:i, s:s, s:b}", "ok", 0, "status", 403, "error",
				 "join: this node's certificate is revoked (tributary controller "
				 "revoke); enrol again with a new join token",
				 "revoked", 1);
		return -EACCES;
	}
	if (ts < now - JOIN_SKEW_S || ts > now + JOIN_SKEW_S) {
		*rep = ctl__err_reply(403, "join: ts is more than 300 s from the controller's clock");
		return -EACCES;
	}
	snprintf(msg, sizeof(msg), "tributary-join\n%s\n%s\n%lld", name, addr, (long long)ts);
	if (trib_x509_verify_msg(cert, msg, strlen(msg), sig)) {
		*rep = ctl__err_reply(403, "join: sig is not the certificate key's signature");
		return -EACCES;
	}
	return 0;
}

int ctl__session_rank(const struct ctl *c, const json_t *hdr)
{
	const char *s = json_string_value(json_object_get(hdr, "session"));

	if (!s || !s[0])
		return -1;
	for (uint32_t i = 0; i < c->nnodes; i++)
		if (c->nodes[i].live && c->nodes[i].session[0] &&
		    trib_token_eq(s, c->nodes[i].session))
			return (int)i;
	return -1;
}

void ctl__pki_tick(struct ctl *c, void (*drain)(struct ctl *, uint32_t))
{
	bool changed = false;

	if (trib_now_ns() - c->pki_checked_ns < 1000000000ull)
		return;
	c->pki_checked_ns = trib_now_ns();
	if (!crl_refresh(c, &changed) && changed) {
		json_t *h = json_pack("{s:s, s:s}", "op", "crl", "crl", c->crl_pem);

		trib_info("cluster CRL: %zu revoked certificate(s); sent to every node", c->crl_n);
		ctl__tell_all(c, h, NULL, 0, -1);
		json_decref(h);
	}
	for (uint32_t i = 0; i < c->nnodes; i++) {
		struct cnode *nd = &c->nodes[i];
		bool ok = true;
		json_t *h;

		if (!nd->live || !nd->serial[0] || ctl_store_cert_ok(c->store, nd->serial, &ok) ||
		    ok)
			continue;
		trib_warn("node %s: its certificate %s was revoked: dropped from the cluster",
			  nd->name, nd->serial);
		h = json_pack("{s:s, s:s}", "op", "membership_revoked", "node", nd->name);
		ctl__tell(c, i, h, NULL, 0);
		json_decref(h);
		nd->session[0] = 0;
		drain(c, i);
	}
}

/* --- the offline commands (another process than the running controller) --- */

static int open_store(const char *data_dir, struct ctl_store **st)
{
	char path[PATH_MAX];
	int err;

	err = trib_mkdir_p(data_dir, 0700);
	if (err) {
		fprintf(stderr, "tributary controller: %s: %s\n", data_dir, strerror(-err));
		return err;
	}
	snprintf(path, sizeof(path), "%s/controller.db", data_dir);
	err = ctl_store_open(path, st);
	if (err)
		fprintf(stderr, "tributary controller: %s: %s\n", path, strerror(-err));
	return err;
}

int ctl_join_token_cmd(const char *data_dir, uint32_t ttl_s)
{
	unsigned char rnd[TOKEN_ID_BYTES + TOKEN_SECRET_BYTES];
	char pki[512], path[PATH_MAX], id[2 * TOKEN_ID_BYTES + 1];
	char secret[2 * TOKEN_SECRET_BYTES + 1], hash[65], fpr[TRIB_X509_FPR_LEN + 1];
	char *pem = NULL;
	struct ctl_store *st = NULL;
	int err;

	err = pki_ensure(data_dir, pki, sizeof(pki), false);
	if (!err) {
		snprintf(path, sizeof(path), "%s/ca.crt", pki);
		err = trib_x509_read_pem(path, &pem);
	}
	if (!err)
		err = trib_x509_fingerprint(pem, fpr);
	trib_free(pem);
	if (err) {
		fprintf(stderr, "tributary controller join-token: the cluster CA in %s: %s\n", pki,
			strerror(-err));
		return 1;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		fprintf(stderr, "tributary controller join-token: getrandom: %s\n",
			strerror(errno));
		return 1;
	}
	for (int i = 0; i < TOKEN_ID_BYTES; i++)
		snprintf(id + 2 * i, 3, "%02x", rnd[i]);
	for (int i = 0; i < TOKEN_SECRET_BYTES; i++)
		snprintf(secret + 2 * i, 3, "%02x", rnd[TOKEN_ID_BYTES + i]);
	sha256_hex(secret, strlen(secret), hash);
	if (open_store(data_dir, &st))
		return 1;
	err = ctl_store_jtoken_put(st, id, hash, (int64_t)time(NULL) + (int64_t)ttl_s);
	ctl_store_close(st);
	if (err) {
		fprintf(stderr, "tributary controller join-token: storing it: %s\n",
			strerror(-err));
		return 1;
	}
	/* The token carries the CA's fingerprint: the node checks the controller with it. */
	printf("%s.%s.%s\n", id, secret, fpr);
	fprintf(stderr, "join token %s: one node may enrol with it within %u s "
		"(tributary node --join-token TOKEN)\n", id, ttl_s);
	return 0;
}

int ctl_revoke_cmd(const char *data_dir, const char *node)
{
	struct ctl_store *st = NULL;
	unsigned n = 0;
	int err;

	if (!trib_job_name_valid(node)) {
		fprintf(stderr, "tributary controller revoke: '%s' is not a node name\n", node);
		return 2;
	}
	if (open_store(data_dir, &st))
		return 1;
	err = ctl_store_cert_revoke(st, node, (int64_t)time(NULL), &n);
	ctl_store_close(st);
	if (err) {
		fprintf(stderr, "tributary controller revoke: %s\n", strerror(-err));
		return 1;
	}
	if (!n) {
		fprintf(stderr, "tributary controller revoke: node %s has no certificate in force\n",
			node);
		return 1;
	}
	printf("revoked %u certificate(s) of node %s: the running controller drops it within "
	       "a second\n", n, node);
	return 0;
}
