// SPDX-License-Identifier: MIT
/* The client's TLS over OpenSSL 3: verify the chain and the name, or pin the certificate. */
#include "tl_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "tl_client.h"
#include "trib_alloc.h"
#include "trib_log.h"

/* SSL_write takes an int: a larger body piece goes out in pieces of this size. */
#define TLS_WRITE_MAX (1 << 30)

/* ALPN: length-prefixed protocol names. */
static const unsigned char tls_alpn[] = "\x08http/1.1";

/* See tl_client.h. */
struct tl_tls_shared {
	pthread_mutex_t lock;
	SSL_CTX *ctx;	      /* a reference, NULL until the first client made it */
	BIO_METHOD *bio_meth; /* owned; outlives the clients (each BIO_METHOD takes a type index) */
};

struct tl_tls {
	SSL_CTX *ctx;	      /* a reference (the shared context's, or its own) */
	BIO_METHOD *bio_meth; /* send(MSG_NOSIGNAL)/recv on the client's fd */
	bool own_meth;	      /* bio_meth is this client's, not the shared one */
	SSL *ssl;	      /* the connection's session, NULL between connections */
	char host[256];
	uint16_t port;
	bool host_is_ip;
	bool pinned;
	uint8_t pin[TL_TLS_PIN_LEN];
	const char *ca_what; /* what the chain was checked against, for errors */
	char ca_file[512];
};

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tl_tls_pin_parse(const char *s, uint8_t pin[TL_TLS_PIN_LEN])
{
	size_t i, n = strlen(s);
	/* Colons between the pairs, all or none. */
	bool colons = n == TL_TLS_PIN_LEN * 3 - 1;

	if (!colons && n != TL_TLS_PIN_LEN * 2)
		return -EINVAL;
	for (i = 0; i < TL_TLS_PIN_LEN; i++) {
		const char *p = s + (colons ? i * 3 : i * 2);
		int hi = hex_val(p[0]), lo = hex_val(p[1]);

		if (hi < 0 || lo < 0 || (colons && i + 1 < TL_TLS_PIN_LEN && p[2] != ':'))
			return -EINVAL;
		pin[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static void hex_str(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* ---- a BIO on the fd that never raises SIGPIPE (the plain path sends with MSG_NOSIGNAL) ---- */

static int bio_write(BIO *b, const char *buf, int len)
{
	int fd = (int)(intptr_t)BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	/* EAGAIN is SO_SNDTIMEO expiring: OpenSSL reports it as SSL_ERROR_WANT_WRITE. */
	if (n < 0 && errno == EAGAIN)
		BIO_set_retry_write(b);
	return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
	int fd = (int)(intptr_t)BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = recv(fd, buf, (size_t)len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		BIO_set_retry_read(b);
	return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	/* Nothing is buffered here: a flush is always done, every other control unsupported. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *bio_method_new(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tributary fd");

	if (!m)
		return NULL;
	if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
	    !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
		BIO_meth_free(m);
		return NULL;
	}
	return m;
}

/* ---- the context ---- */

/* The first queued OpenSSL error as text into @buf, or "@fallback". */
static void ssl_err_str(char *buf, size_t len, const char *fallback)
{
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "%s", fallback);
	ERR_clear_error();
}

/* Chain verification against --tls-ca or the system store. Returns 0 or -ENOENT (logged). */
static int ctx_trust(struct tl_tls *t, const char *ca_file)
{
	char why[256];

	if (!ca_file) {
		if (!SSL_CTX_set_default_verify_paths(t->ctx)) {
			ssl_err_str(why, sizeof(why), "unknown error");
			trib_error("TLS: cannot load the system's CA store: %s", why);
			return -ENOENT;
		}
		return 0;
	}
	if (!SSL_CTX_load_verify_file(t->ctx, ca_file)) {
		ssl_err_str(why, sizeof(why), "no certificate in it");
		trib_error("TLS: cannot load CA file %s: %s", ca_file, why);
		return -ENOENT;
	}
	return 0;
}

static int ctx_setup(struct tl_tls *t, const struct tl_tls_opts *o)
{
	t->ctx = SSL_CTX_new(TLS_client_method());
	if (!t->ctx)
		return -ENOMEM;
	if (!SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION) ||
	    SSL_CTX_set_alpn_protos(t->ctx, tls_alpn, sizeof(tls_alpn) - 1))
		return -ENOMEM;
	/*
	 * A peer that closes without close_notify reads as an end of stream: the
	 * HTTP layer tells a cut-off answer by its length, and a stale keep-alive
	 * connection must look the same as in clear.
	 */
	SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* A pin alone replaces the chain; with --tls-ca too, both must hold. */
	if (t->pinned && !o->ca_file) {
		SSL_CTX_set_verify(t->ctx, SSL_VERIFY_NONE, NULL);
		return 0;
	}
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
	return ctx_trust(t, o->ca_file);
}

/* A context and a BIO method of the client's own. */
static int ctx_own(struct tl_tls *t, const struct tl_tls_opts *o)
{
	t->bio_meth = bio_method_new();
	if (!t->bio_meth)
		return -ENOMEM;
	t->own_meth = true;
	return ctx_setup(t, o);
}

/* The shared context and BIO method, made by the first client that gets here. */
static int ctx_shared(struct tl_tls *t, const struct tl_tls_opts *o)
{
	struct tl_tls_shared *s = o->shared;
	int err = 0;

	pthread_mutex_lock(&s->lock);
	if (!s->bio_meth)
		s->bio_meth = bio_method_new();
	t->bio_meth = s->bio_meth;
	if (!t->bio_meth) {
		err = -ENOMEM;
	} else if (s->ctx) {
		SSL_CTX_up_ref(s->ctx);
		t->ctx = s->ctx;
	} else {
		err = ctx_setup(t, o);
		if (!err) {
			SSL_CTX_up_ref(t->ctx);
			s->ctx = t->ctx;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return err;
}

int tl_tls_shared_new(struct tl_tls_shared **out)
{
	struct tl_tls_shared *s = trib_calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	*out = s;
	return 0;
}

void tl_tls_shared_free(struct tl_tls_shared *s)
{
	if (!s)
		return;
	SSL_CTX_free(s->ctx);
	BIO_meth_free(s->bio_meth);
	pthread_mutex_destroy(&s->lock);
	trib_free(s);
}

int tl_tls_new(const struct tl_tls_opts *o, const char *host, uint16_t port, struct tl_tls **out)
{
	struct in6_addr a6;
	struct tl_tls *t;
	int err;

	t = trib_calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	snprintf(t->host, sizeof(t->host), "%s", host);
	t->port = port;
	t->host_is_ip = inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
	if (o && o->pin_sha256) {
		if (tl_tls_pin_parse(o->pin_sha256, t->pin)) {
			trib_error("TLS: bad --tls-pin '%.80s': want the SHA-256 fingerprint, "
				   "64 hex digits",
				   o->pin_sha256);
			err = -EINVAL;
			goto err_free;
		}
		t->pinned = true;
	}
	if (o && o->ca_file) {
		snprintf(t->ca_file, sizeof(t->ca_file), "--tls-ca %s", o->ca_file);
		t->ca_what = t->ca_file;
	} else {
		t->ca_what = "the system's CA store";
	}
	err = o && o->shared ? ctx_shared(t, o) : ctx_own(t, o ? o : &(struct tl_tls_opts){0});
	if (err)
		goto err_free;
	*out = t;
	return 0;

err_free:
	tl_tls_free(t);
	return err;
}

void tl_tls_free(struct tl_tls *t)
{
	if (!t)
		return;
	tl_tls_close(t);
	SSL_CTX_free(t->ctx);
	if (t->own_meth)
		BIO_meth_free(t->bio_meth);
	trib_free(t);
}

/* ---- a connection ---- */

/* SNI and the name the certificate must carry (a DNS name or an IP address). */
static int ssl_name(struct tl_tls *t)
{
	if (t->host_is_ip) {
		/* RFC 6066: no SNI for an address. */
		if (!t->pinned && !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), t->host))
			return -ENOMEM;
		return 0;
	}
	if (!SSL_set_tlsext_host_name(t->ssl, t->host))
		return -ENOMEM;
	if (!t->pinned && !SSL_set1_host(t->ssl, t->host))
		return -ENOMEM;
	return 0;
}

/* The server's certificate against the pin. Returns 0 or -EKEYREJECTED (logged). */
static int check_pin(struct tl_tls *t)
{
	X509 *cert = SSL_get0_peer_certificate(t->ssl);
	uint8_t md[EVP_MAX_MD_SIZE];
	char got[2 * TL_TLS_PIN_LEN + 1], want[2 * TL_TLS_PIN_LEN + 1];
	unsigned mdlen = 0;

	if (!cert || !X509_digest(cert, EVP_sha256(), md, &mdlen) || mdlen != TL_TLS_PIN_LEN) {
		trib_error("TLS: %s:%u sent no certificate to check against --tls-pin", t->host,
			   t->port);
		return -EKEYREJECTED;
	}
	if (!memcmp(md, t->pin, TL_TLS_PIN_LEN))
		return 0;
	hex_str(md, TL_TLS_PIN_LEN, got);
	hex_str(t->pin, TL_TLS_PIN_LEN, want);
	trib_error("TLS: the certificate of %s:%u does not match --tls-pin: its SHA-256 is %s, "
		   "the pin %s",
		   t->host, t->port, got, want);
	return -EKEYREJECTED;
}

/* A failed SSL_connect (returned @ret) as a -errno, its cause logged. */
static int handshake_error(struct tl_tls *t, int ret)
{
	int e = SSL_get_error(t->ssl, ret), saved = errno;
	long v = SSL_get_verify_result(t->ssl);
	char why[256];

	if (v != X509_V_OK) {
		ERR_clear_error();
		trib_error("TLS: the certificate of %s:%u did not verify against %s: %s", t->host,
			   t->port, t->ca_what ? t->ca_what : "the CA",
			   X509_verify_cert_error_string(v));
		return -EKEYREJECTED;
	}
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		ERR_clear_error();
		return -ETIMEDOUT;
	}
	if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
		ERR_clear_error();
		/* Closed before any answer: a stale or refusing peer, as in clear. */
		return e == SSL_ERROR_SYSCALL && saved ? -saved : -ECONNRESET;
	}
	ssl_err_str(why, sizeof(why), "unknown error");
	trib_error("TLS: handshake with %s:%u failed: %s (is it an https:// server?)", t->host,
		   t->port, why);
	return -EPROTO;
}

int tl_tls_connect(struct tl_tls *t, int fd)
{
	BIO *bio;
	int ret, err;

	tl_tls_close(t);
	t->ssl = SSL_new(t->ctx);
	if (!t->ssl)
		return -ENOMEM;
	bio = BIO_new(t->bio_meth);
	if (!bio) {
		err = -ENOMEM;
		goto err_ssl;
	}
	BIO_set_data(bio, (void *)(intptr_t)fd);
	/* The SSL owns the BIO from here (one BIO for both directions). */
	SSL_set_bio(t->ssl, bio, bio);
	err = ssl_name(t);
	if (err)
		goto err_ssl;
	ERR_clear_error();
	errno = 0;
	ret = SSL_connect(t->ssl);
	if (ret != 1) {
		err = handshake_error(t, ret);
		goto err_ssl;
	}
	if (t->pinned) {
		err = check_pin(t);
		if (err)
			goto err_ssl;
	}
	return 0;

err_ssl:
	SSL_free(t->ssl);
	t->ssl = NULL;
	return err;
}

void tl_tls_close(struct tl_tls *t)
{
	if (!t->ssl)
		return;
	/* One close_notify, not waiting for the peer's: the fd closes right after. */
	if (!(SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN))
		SSL_shutdown(t->ssl);
	ERR_clear_error();
	SSL_free(t->ssl);
	t->ssl = NULL;
}

/* A failed SSL_read/SSL_write (returned @ret) as a -errno; 0 for a clean end of stream. */
static int io_error(struct tl_tls *t, int ret, const char *what)
{
	int e = SSL_get_error(t->ssl, ret), saved = errno;
	char why[256];

	switch (e) {
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		return 0;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		ERR_clear_error();
		return -ETIMEDOUT;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		return saved ? -saved : -ECONNRESET;
	default:
		ssl_err_str(why, sizeof(why), "unknown error");
		trib_error("TLS: %s %s:%u: %s", what, t->host, t->port, why);
		return -EPROTO;
	}
}

int tl_tls_send(struct tl_tls *t, const struct iovec *iov, int cnt)
{
	size_t off, n;
	int ret, err;

	if (!t->ssl)
		return -ENOTCONN;
	for (int i = 0; i < cnt; i++) {
		for (off = 0; off < iov[i].iov_len; off += n) {
			n = iov[i].iov_len - off;
			if (n > TLS_WRITE_MAX)
				n = TLS_WRITE_MAX;
			ERR_clear_error();
			errno = 0;
			ret = SSL_write(t->ssl, (const char *)iov[i].iov_base + off, (int)n);
			if (ret <= 0) {
				err = io_error(t, ret, "sending to");
				return err ? err : -EPIPE;
			}
			/* Blocking without partial writes: all of @n, or an error. */
			n = (size_t)ret;
		}
	}
	return 0;
}

ssize_t tl_tls_recv(struct tl_tls *t, void *buf, size_t n)
{
	int ret;

	if (!t->ssl)
		return -ENOTCONN;
	if (n > TLS_WRITE_MAX)
		n = TLS_WRITE_MAX;
	ERR_clear_error();
	errno = 0;
	ret = SSL_read(t->ssl, buf, (int)n);
	if (ret > 0)
		return ret;
	return io_error(t, ret, "receiving from");
}
