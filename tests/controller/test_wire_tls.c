// SPDX-License-Identifier: MIT
/*
 * The wire over tls+tcp:// with the cluster CA (trib_x509): a server name is
 * checked, a listener that requires a certificate refuses a peer without
 * one, an optional one lets it in unverified, and x509 helpers hold.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl_wire.h"
#include "trib_alloc.h"
#include "trib_x509.h"

#define WAIT_MS 8000

static char dir[128];

static void mkpath(char *out, size_t n, const char *leaf)
{
	snprintf(out, n, "%s/%s", dir, leaf);
}

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static struct ctl_event *next_event(struct ctl_wire *w, int ms)
{
	for (int waited = 0; waited < ms; waited += 10) {
		struct ctl_event *ev = ctl_wire_next(w);
		struct pollfd pfd = {.fd = ctl_wire_fd(w), .events = POLLIN};
		uint64_t cnt;

		if (ev)
			return ev;
		if (poll(&pfd, 1, 10) > 0 && read(pfd.fd, &cnt, sizeof(cnt)) < 0)
			cr_assert_eq(errno, EAGAIN);
	}
	return NULL;
}

static void setup(void)
{
	char ca[300], key[300], crt[300];
	bool created = false;

	snprintf(dir, sizeof(dir), "/tmp/trib-wire-tls-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(trib_x509_ca_ensure(dir, &created), 0);
	cr_assert(created);
	mkpath(ca, sizeof(ca), "ca.key");
	{
		struct stat st;

		cr_assert_eq(stat(ca, &st), 0);
		cr_assert_eq(st.st_mode & 0777, 0600, "ca.key mode %o", st.st_mode & 0777);
		mkpath(ca, sizeof(ca), "ca.crt");
		cr_assert_eq(stat(ca, &st), 0);
		cr_assert_eq(st.st_mode & 0777, 0644);
	}
	mkpath(key, sizeof(key), "ctl.key");
	mkpath(crt, sizeof(crt), "ctl.crt");
	cr_assert_eq(trib_x509_issue_local(dir, TRIB_X509_CONTROLLER_CN, key, crt, 1), 0);
	mkpath(key, sizeof(key), "n1.key");
	mkpath(crt, sizeof(crt), "n1.crt");
	cr_assert_eq(trib_x509_issue_local(dir, "n1", key, crt, 1), 0);
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(wire_tls, .init = setup, .fini = teardown, .timeout = 60);

static void tls_of(struct ctl_wire_tls *t, const char *who, char *ca, char *crt, char *key)
{
	char leaf[64];

	mkpath(ca, 300, "ca.crt");
	snprintf(leaf, sizeof(leaf), "%s.crt", who);
	mkpath(crt, 300, leaf);
	snprintf(leaf, sizeof(leaf), "%s.key", who);
	mkpath(key, 300, leaf);
	*t = (struct ctl_wire_tls){.ca_file = ca, .cert_file = crt, .key_file = key};
}

/* Send one request from @cli to @url; the reply's kind (or the server's event if @srv). */
static int roundtrip(struct ctl_wire *srv, struct ctl_wire *cli, const char *url, bool *verified)
{
	json_t *h = json_pack("{s:s}", "op", "ping");
	struct ctl_event *ev;
	int kind;

	cr_assert_eq(ctl_wire_request(cli, url, h, NULL, 0, 7, 3000), 0);
	json_decref(h);
	ev = next_event(srv, 3500);
	if (ev) {
		*verified = ev->verified;
		h = json_pack("{s:b}", "ok", 1);
		cr_assert_eq(ctl_wire_reply(srv, ev, h, NULL, 0), 0);
		json_decref(h);
		ctl_event_free(srv, ev);
	}
	ev = next_event(cli, WAIT_MS);
	cr_assert_not_null(ev);
	kind = ev->kind;
	ctl_event_free(cli, ev);
	return kind;
}

Test(wire_tls, named_server_and_client_cert)
{
	char ca[300], crt[300], key[300], ca2[300], crt2[300], key2[300], url[64];
	struct ctl_wire_tls ts, tc;
	struct ctl_wire *srv, *cli;
	bool verified = false;

	snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", free_port());
	tls_of(&ts, "ctl", ca, crt, key);
	tls_of(&tc, "n1", ca2, crt2, key2);
	cr_assert_eq(ctl_wire_open_tls(url, &ts, &srv), 0);
	cr_assert_eq(ctl_wire_open_tls(NULL, &tc, &cli), 0);
	cr_assert_eq(ctl_wire_peer_name(cli, url, TRIB_X509_CONTROLLER_CN), 0);
	cr_assert_eq(roundtrip(srv, cli, url, &verified), CTL_EV_REPLY);
	cr_assert(verified);
	ctl_wire_close(cli);
	/* The server's certificate names the controller, not n1: the handshake fails. */
	cr_assert_eq(ctl_wire_open_tls(NULL, &tc, &cli), 0);
	cr_assert_eq(ctl_wire_peer_name(cli, url, "n1"), 0);
	cr_assert_eq(roundtrip(srv, cli, url, &verified), CTL_EV_FAIL);
	ctl_wire_close(cli);
	/* A plain tcp:// URL is refused on a TLS wire. */
	cr_assert_eq(ctl_wire_open_tls(NULL, &tc, &cli), 0);
	{
		json_t *h = json_pack("{}");

		cr_assert_eq(ctl_wire_request(cli, url + 4, h, NULL, 0, 1, 100), -EINVAL);
		json_decref(h);
	}
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

Test(wire_tls, no_client_cert)
{
	char ca[300], crt[300], key[300], url[64];
	struct ctl_wire_tls ts, tc;
	struct ctl_wire *srv, *cli;
	bool verified = true;

	snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", free_port());
	tls_of(&ts, "ctl", ca, crt, key);
	tc = (struct ctl_wire_tls){.ca_file = ca};
	cr_assert_eq(ctl_wire_open_tls(url, &ts, &srv), 0);
	cr_assert_eq(ctl_wire_open_tls(NULL, &tc, &cli), 0);
	cr_assert_eq(roundtrip(srv, cli, url, &verified), CTL_EV_FAIL, "required: refused");
	ctl_wire_close(cli);
	ctl_wire_close(srv);
	/* An optional listener lets it in, marked unverified. */
	snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", free_port());
	ts.listen_optional = true;
	cr_assert_eq(ctl_wire_open_tls(url, &ts, &srv), 0);
	cr_assert_eq(ctl_wire_open_tls(NULL, &tc, &cli), 0);
	cr_assert_eq(roundtrip(srv, cli, url, &verified), CTL_EV_REPLY);
	cr_assert_not(verified);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
}

Test(wire_tls, csr_sign_verify_and_proof)
{
	char key[300], ca[300], serial[TRIB_X509_SERIAL_MAX], fpr[TRIB_X509_FPR_LEN + 1];
	char *csr = NULL, *cert = NULL, *sig = NULL, *capem = NULL;

	mkpath(key, sizeof(key), "n2.key");
	mkpath(ca, sizeof(ca), "ca.crt");
	cr_assert_eq(trib_x509_key_ensure(key), 0);
	cr_assert_eq(trib_x509_csr(key, "n2", &csr), 0);
	/* The CSR names n2: a certificate for n3 is refused. */
	cr_assert_eq(trib_x509_sign_csr(dir, csr, "n3", 1, serial, &cert), -EINVAL);
	cr_assert_eq(trib_x509_sign_csr(dir, csr, "n2", 1, serial, &cert), 0);
	cr_assert_eq(trib_x509_verify(ca, cert, "n2", serial), 0);
	cr_assert_gt(strlen(serial), 8);
	cr_assert_eq(trib_x509_verify(ca, cert, "n1", NULL), -EACCES);
	cr_assert_eq(trib_x509_sign_msg(key, "hello", 5, &sig), 0);
	cr_assert_eq(trib_x509_verify_msg(cert, "hello", 5, sig), 0);
	cr_assert_eq(trib_x509_verify_msg(cert, "hellO", 5, sig), -EBADMSG);
	cr_assert_eq(trib_x509_read_pem(ca, &capem), 0);
	cr_assert_eq(trib_x509_fingerprint(capem, fpr), 0);
	cr_assert_eq(strlen(fpr), 64);
	trib_free(capem);
	trib_free(sig);
	trib_free(cert);
	trib_free(csr);
}

/* A CRL on a listener: the certificate it lists fails the handshake from then on. */
Test(wire_tls, crl_refuses_a_revoked_certificate)
{
	char ca[300], crt[300], key[300], ca2[300], crt2[300], key2[300], url[64];
	char serial[TRIB_X509_SERIAL_MAX], *pem = NULL, *crl = NULL;
	const char *list[1] = {serial};
	struct ctl_wire_tls ts, tc;
	struct ctl_wire *srv, *cli;
	bool verified = false;
	size_t n = 9;

	snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", free_port());
	tls_of(&ts, "ctl", ca, crt, key);
	tls_of(&tc, "n1", ca2, crt2, key2);
	cr_assert_eq(trib_x509_read_pem(crt2, &pem), 0);
	cr_assert_eq(trib_x509_verify(ca, pem, "n1", serial), 0);
	cr_assert_eq(trib_x509_crl(dir, list, 1, &crl), 0);
	cr_assert_eq(trib_x509_crl_check(ca, crl, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(trib_x509_crl_check(ca, "-----BEGIN X509 CRL-----\nAAAA\n", &n), -EACCES);
	cr_assert_eq(ctl_wire_open_tls(url, &ts, &srv), 0);
	cr_assert_eq(ctl_wire_open_tls(NULL, &tc, &cli), 0);
	cr_assert_eq(roundtrip(srv, cli, url, &verified), CTL_EV_REPLY);
	ctl_wire_close(cli);
	cr_assert_eq(ctl_wire_set_crl(srv, crl), 0);
	cr_assert_eq(ctl_wire_set_crl(srv, crl), 0, "the same CRL again: nothing to do");
	cr_assert_eq(ctl_wire_open_tls(NULL, &tc, &cli), 0);
	cr_assert_eq(roundtrip(srv, cli, url, &verified), CTL_EV_FAIL, "revoked: refused");
	ctl_wire_close(cli);
	/* Another certificate of the CA still gets in. */
	tls_of(&tc, "ctl", ca2, crt2, key2);
	cr_assert_eq(ctl_wire_open_tls(NULL, &tc, &cli), 0);
	cr_assert_eq(roundtrip(srv, cli, url, &verified), CTL_EV_REPLY);
	ctl_wire_close(cli);
	ctl_wire_close(srv);
	trib_free(crl);
	trib_free(pem);
}
