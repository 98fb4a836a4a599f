// SPDX-License-Identifier: MIT
/* Tests of the client's https://: CA verification, names, pins, keep-alive and their errors. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tl_client.h"
#include "tl_tls.h"
#include "trib_alloc.h"

/*
 * Certificates made with the openssl command for each test: a CA, a server
 * certificate it signed for DNS:localhost only, and an unrelated CA.
 */
struct certs {
	char dir[64];
	char ca[128], other_ca[128], cert[128], key[128];
	char pin[65];
};

static void sh(const char *cmd)
{
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void certs_make(struct certs *c)
{
	char cmd[2048];
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	X509 *x;
	FILE *f;

	snprintf(c->dir, sizeof(c->dir), "/tmp/tl-tls-test-XXXXXX");
	cr_assert_not_null(mkdtemp(c->dir));
	snprintf(c->ca, sizeof(c->ca), "%s/ca.pem", c->dir);
	snprintf(c->other_ca, sizeof(c->other_ca), "%s/other.pem", c->dir);
	snprintf(c->cert, sizeof(c->cert), "%s/srv.pem", c->dir);
	snprintf(c->key, sizeof(c->key), "%s/srv.key", c->dir);
	snprintf(cmd, sizeof(cmd),
		 "cd %s && K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes' && "
		 "openssl req -x509 $K -keyout ca.key -out ca.pem -subj /CN=test-ca -days 2 && "
		 "openssl req -x509 $K -keyout other.key -out other.pem -subj /CN=other -days 2 && "
		 "openssl req $K -keyout srv.key -out srv.csr -subj /CN=localhost && "
		 "echo subjectAltName=DNS:localhost > ext && "
		 "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
		 "-out srv.pem -days 2 -extfile ext",
		 c->dir);
	sh(cmd);
	f = fopen(c->cert, "r");
	cr_assert_not_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x);
	cr_assert(X509_digest(x, EVP_sha256(), md, &len));
	X509_free(x);
	for (unsigned i = 0; i < len; i++)
		snprintf(c->pin + 2 * i, 3, "%02x", md[i]);
}

static void certs_free(struct certs *c)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
	sh(cmd);
}

/* ---- a TLS server: answers every request with 200 and the body's length it read ---- */

struct tls_srv {
	int lfd;
	uint16_t port;
	SSL_CTX *ctx;
	pthread_t tid;
	atomic_bool stop;
	bool close_after_each; /* drop the connection after each answer, without saying so */
	atomic_uint accepts;   /* handshakes completed */
	atomic_uint requests;
	char last_head[1024];
};

/* Read one request on @ssl and answer it. Returns false when the connection is done. */
static bool srv_request(struct tls_srv *s, SSL *ssl)
{
	char buf[1 << 16], ans[128], *end, *cl;
	size_t have = 0, hlen, blen = 0, got;
	int n;

	while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
		n = SSL_read(ssl, buf + have, (int)(sizeof(buf) - have - 1));
		if (n <= 0)
			return false;
		have += (size_t)n;
	}
	hlen = (size_t)(end - buf) + 4;
	snprintf(s->last_head, sizeof(s->last_head), "%.*s", (int)hlen, buf);
	cl = strcasestr(s->last_head, "content-length:");
	if (cl)
		blen = strtoull(cl + 15, NULL, 10);
	for (got = have - hlen; got < blen; got += (size_t)n) {
		n = SSL_read(ssl, buf, sizeof(buf));
		if (n <= 0)
			return false;
	}
	n = snprintf(ans, sizeof(ans), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%zu",
		     snprintf(NULL, 0, "%zu", blen), blen);
	s->requests++;
	return SSL_write(ssl, ans, n) == n && !s->close_after_each;
}

static void *srv_run(void *arg)
{
	struct tls_srv *s = arg;
	struct pollfd p = {.fd = s->lfd, .events = POLLIN};
	int fd;
	SSL *ssl;

	while (!s->stop) {
		if (poll(&p, 1, 50) <= 0)
			continue;
		fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		ssl = SSL_new(s->ctx);
		SSL_set_fd(ssl, fd);
		/* A client that refuses the certificate ends the handshake: nothing to serve. */
		if (SSL_accept(ssl) == 1) {
			s->accepts++;
			while (srv_request(s, ssl))
				;
		}
		ERR_clear_error();
		SSL_free(ssl);
		close(fd);
	}
	return NULL;
}

static void srv_start(struct tls_srv *s, const struct certs *c)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);

	memset(s, 0, sizeof(*s));
	/*
	 * The server writes with write(): a client that refuses the certificate
	 * closes while TLS 1.3's session tickets are still being sent.
	 */
	signal(SIGPIPE, SIG_IGN);
	s->ctx = SSL_CTX_new(TLS_server_method());
	cr_assert_not_null(s->ctx);
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(s->ctx, c->cert), 1);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(s->ctx, c->key, SSL_FILETYPE_PEM), 1);
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(s->lfd, 16), 0);
	getsockname(s->lfd, (struct sockaddr *)&a, &al);
	s->port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&s->tid, NULL, srv_run, s), 0);
}

static void srv_stop(struct tls_srv *s)
{
	s->stop = true;
	pthread_join(s->tid, NULL);
	close(s->lfd);
	SSL_CTX_free(s->ctx);
}

static int open_url(const char *host, uint16_t port, const char *ca, const char *pin,
		    struct tl_client **c)
{
	struct tl_tls_opts o = {.ca_file = ca, .pin_sha256 = pin};
	char url[128];

	snprintf(url, sizeof(url), "https://%s:%u", host, port);
	return tl_client_open(url, &o, c);
}

/* Whatever the client logged so far (stderr redirected by the test). */
static void assert_logged(const char *what)
{
	char buf[4096];
	size_t n;

	fflush(stderr);
	n = fread(buf, 1, sizeof(buf) - 1, cr_get_redirected_stderr());
	buf[n] = '\0';
	cr_assert(strstr(buf, what), "log has '%s': %s", what, buf);
}

Test(tools_tls, url_and_pin_parse)
{
	uint8_t pin[TL_TLS_PIN_LEN];
	char host[64];
	uint16_t port;

	cr_assert_eq(tl_url_parse("https://example.org/x", host, sizeof(host), &port), 0);
	cr_assert_str_eq(host, "example.org");
	cr_assert_eq(port, 443);
	cr_assert_eq(tl_url_parse("https://[::1]:8443", host, sizeof(host), &port), 0);
	cr_assert_eq(port, 8443);
	cr_assert(tl_url_is_https("https://h"));
	cr_assert(!tl_url_is_https("http://h"));
	cr_assert_eq(tl_url_parse("httpss://h", host, sizeof(host), &port), -EINVAL);

	cr_assert_eq(tl_tls_pin_parse(
			 "00ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1dFE", pin),
		     0);
	cr_assert_eq(pin[0], 0x00);
	cr_assert_eq(pin[1], 0xff);
	cr_assert_eq(pin[31], 0xfe);
	cr_assert_eq(tl_tls_pin_parse("00:FF:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:"
				      "13:14:15:16:17:18:19:1A:1B:1C:1D:FE",
				      pin),
		     0);
	cr_assert_eq(pin[1], 0xff);
	cr_assert_eq(pin[31], 0xfe);
	cr_assert_eq(tl_tls_pin_parse("00ff", pin), -EINVAL, "too short");
	cr_assert_eq(tl_tls_pin_parse(
			 "g0ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1dfe", pin),
		     -EINVAL, "not hex");
	cr_assert_eq(tl_tls_pin_parse("00:FF:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:"
				      "13:14:15:16:17:18:19:1A:1B:1C:1D-FE",
				      pin),
		     -EINVAL);
}

/* Verified against the CA by name; a 4 MB body and keep-alive over one TLS connection. */
Test(tools_tls, ca_file_verifies_name_and_keeps_alive)
{
	struct tl_http_req get = {.method = "GET", .target = "/a"};
	struct tl_http_req post = {.method = "POST", .target = "/u", .idempotency_key = "k-1"};
	struct tl_http_resp resp;
	struct tl_client *c;
	struct tls_srv s;
	struct certs ce;
	struct iovec iov;
	char *body;

	certs_make(&ce);
	srv_start(&s, &ce);
	cr_assert_eq(open_url("localhost", s.port, ce.ca, NULL, &c), 0);
	cr_assert_eq(tl_client_do(c, &get, &resp), 0);
	cr_assert_eq(resp.status, 200);
	cr_assert_str_eq(resp.body, "0");
	body = trib_malloc(4000000);
	memset(body, 7, 4000000);
	iov = (struct iovec){.iov_base = body, .iov_len = 4000000};
	post.body = &iov;
	post.body_iovcnt = 1;
	cr_assert_eq(tl_client_do(c, &post, &resp), 0);
	cr_assert_eq(resp.status, 200);
	cr_assert_str_eq(resp.body, "4000000", "the server read the whole body");
	cr_assert(strstr(s.last_head, "Idempotency-Key: k-1\r\n"));
	cr_assert_eq(tl_client_connects(c), 1, "one connection for both");
	tl_client_close(c);
	trib_free(body);
	srv_stop(&s);
	cr_assert_eq(s.accepts, 1);
	certs_free(&ce);
}

/* A keep-alive TLS connection the server dropped is replaced, the request sent once more. */
Test(tools_tls, stale_connection_reconnects)
{
	struct tl_http_req get = {.method = "GET", .target = "/a"};
	struct tl_http_resp resp;
	struct tl_client *c;
	struct tls_srv s;
	struct certs ce;

	certs_make(&ce);
	srv_start(&s, &ce);
	s.close_after_each = true;
	cr_assert_eq(open_url("localhost", s.port, NULL, ce.pin, &c), 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(tl_client_do(c, &get, &resp), 0, "request %d", i);
		cr_assert_eq(resp.status, 200);
	}
	cr_assert_eq(tl_client_connects(c), 3);
	cr_assert_eq(s.requests, 3, "each request answered once");
	tl_client_close(c);
	srv_stop(&s);
	certs_free(&ce);
}

Test(tools_tls, name_mismatch_is_refused_with_its_cause, .init = cr_redirect_stderr)
{
	struct tl_client *c = NULL;
	struct tls_srv s;
	struct certs ce;

	certs_make(&ce);
	srv_start(&s, &ce);
	/* The certificate names localhost, not 127.0.0.1. */
	cr_assert_eq(open_url("127.0.0.1", s.port, ce.ca, NULL, &c), -EKEYREJECTED);
	cr_assert_null(c);
	assert_logged("did not verify against --tls-ca");
	srv_stop(&s);
	cr_assert_eq(s.requests, 0);
	certs_free(&ce);
}

Test(tools_tls, wrong_ca_and_system_store_refuse, .init = cr_redirect_stderr)
{
	struct tl_client *c = NULL;
	struct tls_srv s;
	struct certs ce;

	certs_make(&ce);
	srv_start(&s, &ce);
	cr_assert_eq(open_url("localhost", s.port, ce.other_ca, NULL, &c), -EKEYREJECTED);
	/* No --tls-ca: the system store, which does not hold the test CA. */
	cr_assert_eq(open_url("localhost", s.port, NULL, NULL, &c), -EKEYREJECTED);
	cr_assert_null(c);
	assert_logged("the system's CA store");
	srv_stop(&s);
	cr_assert_eq(s.requests, 0);
	certs_free(&ce);
}

/* A pin replaces the chain and the name: an IP URL and no CA work, a wrong pin does not. */
Test(tools_tls, pin_matches_exactly, .init = cr_redirect_stderr)
{
	struct tl_http_req get = {.method = "GET", .target = "/a"};
	struct tl_http_resp resp;
	struct tl_client *c = NULL;
	struct tls_srv s;
	struct certs ce;
	char wrong[65];

	certs_make(&ce);
	srv_start(&s, &ce);
	cr_assert_eq(open_url("127.0.0.1", s.port, NULL, ce.pin, &c), 0);
	cr_assert_eq(tl_client_do(c, &get, &resp), 0);
	cr_assert_eq(resp.status, 200);
	tl_client_close(c);
	c = NULL;
	memcpy(wrong, ce.pin, sizeof(wrong));
	wrong[63] = wrong[63] == '0' ? '1' : '0';
	cr_assert_eq(open_url("127.0.0.1", s.port, NULL, wrong, &c), -EKEYREJECTED);
	cr_assert_null(c);
	assert_logged("does not match --tls-pin");
	/* Pin and CA: both must hold (the CA here is the wrong one). */
	cr_assert_eq(open_url("localhost", s.port, ce.other_ca, ce.pin, &c), -EKEYREJECTED);
	cr_assert_eq(open_url("127.0.0.1", s.port, NULL, "abc", &c), -EINVAL);
	srv_stop(&s);
	cr_assert_eq(s.requests, 1, "nothing was sent on a refused connection");
	certs_free(&ce);
}

/* https:// to a server that speaks plain HTTP: a handshake error that says so. */
Test(tools_tls, plain_server_is_a_handshake_error, .init = cr_redirect_stderr)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	struct tl_client *c = NULL;
	const char ans[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
	char url[64], buf[512];
	int lfd, fd;
	pid_t pid;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(lfd, 1), 0);
	getsockname(lfd, (struct sockaddr *)&a, &al);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fd = accept(lfd, NULL, NULL);
		if (read(fd, buf, sizeof(buf)) > 0 && write(fd, ans, sizeof(ans) - 1) > 0)
			usleep(200000);
		_exit(0);
	}
	snprintf(url, sizeof(url), "https://127.0.0.1:%u", ntohs(a.sin_port));
	cr_assert_eq(tl_client_open(url, &(struct tl_tls_opts){.pin_sha256 = NULL}, &c), -EPROTO);
	assert_logged("handshake with 127.0.0.1");
	close(lfd);
}

/* Clients of one set of options share one context: each verifies and talks on its own. */
Test(tools_tls, shared_context_serves_many_clients)
{
	struct tl_http_req get = {.method = "GET", .target = "/a"};
	struct tl_tls_shared *sh;
	struct tl_http_resp resp;
	struct tl_client *c[4];
	struct tls_srv s;
	struct certs ce;
	char url[64];

	certs_make(&ce);
	srv_start(&s, &ce);
	cr_assert_eq(tl_tls_shared_new(&sh), 0);
	snprintf(url, sizeof(url), "https://localhost:%u", s.port);
	/*
	 * One at a time (the stand-in serves one connection at a time), each closed
	 * before the next is made: the context outlives the clients that made it.
	 */
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(tl_client_open(
				 url, &(struct tl_tls_opts){.ca_file = ce.ca, .shared = sh}, &c[i]),
			     0, "client %d", i);
		cr_assert_eq(tl_client_do(c[i], &get, &resp), 0);
		cr_assert_eq(resp.status, 200);
		tl_client_close(c[i]);
	}
	tl_tls_shared_free(sh);
	srv_stop(&s);
	cr_assert_eq(s.requests, 4);
	certs_free(&ce);
}
