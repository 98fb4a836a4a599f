// SPDX-License-Identifier: MIT
/* TLS sessions of the gateway on BIO pairs: ciphertext in OpenSSL buffers, plaintext in ours. */
#include "rt_tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "trib_alloc.h"
#include "trib_log.h"

struct rt_tls_ctx {
	SSL_CTX *ssl;
	struct rt_tls_stats stats;
	unsigned char fp[32]; /* SHA-256 of the certificate (DER) */
};

/*
 * One session. The BIO pair's two buffers are the only ciphertext buffers:
 * io_uring receives into the inbound one (rt_tls_in_space) and sends from
 * the outbound one (rt_tls_out_data); SSL_read() writes plaintext into the
 * caller's memory.
 */
struct rt_tls {
	struct rt_tls_ctx *ctx;
	SSL *ssl;
	BIO *sslbio;     /* the SSL's end of the pair (owned by ssl) */
	BIO *net;        /* ours */
	bool began;      /* ciphertext came */
	bool done;       /* the handshake completed (counted) */
	bool counted;    /* its failure was counted */
	bool http;       /* the failure was a plain HTTP request */
	bool want_write; /* the handshake waits for room in the outbound buffer */
};

static const unsigned char alpn_http11[] = "\x08http/1.1";

const char *rt_tls_fail_name(enum rt_tls_fail f)
{
	static const char *const names[RT_TLS_FAIL__COUNT] = {
		"http_request", "version", "alpn", "protocol", "closed", "timeout",
	};

	return (unsigned)f < RT_TLS_FAIL__COUNT ? names[f] : "protocol";
}

enum rt_tls_fail rt_tls_fail_of(unsigned long err)
{
	if (ERR_GET_LIB(err) != ERR_LIB_SSL)
		return RT_TLS_FAIL_PROTOCOL;
	switch (ERR_GET_REASON(err)) {
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
		return RT_TLS_FAIL_HTTP;
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
		return RT_TLS_FAIL_VERSION;
	case SSL_R_NO_APPLICATION_PROTOCOL:
		return RT_TLS_FAIL_ALPN;
	default:
		return RT_TLS_FAIL_PROTOCOL;
	}
}

/* A client that offers ALPN gets http/1.1 or a no_application_protocol alert. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char *sel;

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof(alpn_http11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* An encrypted key would make OpenSSL prompt on the terminal: say no instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* The oldest OpenSSL error as text, for a message; clears the queue. */
static const char *ssl_reason(char *buf, size_t cap)
{
	unsigned long e = ERR_peek_error();

	if (!e)
		snprintf(buf, cap, "no detail");
	else
		ERR_error_string_n(e, buf, cap);
	ERR_clear_error();
	return buf;
}

/* @path can be opened for reading: 0 or -errno with *why naming it. */
static int file_readable(const char *path, const char *what, char *why, size_t cap)
{
	FILE *f = fopen(path, "r");
	int err;

	if (f) {
		fclose(f);
		return 0;
	}
	err = -errno;
	snprintf(why, cap, "TLS %s %s: %s", what, path, strerror(-err));
	return err;
}

/* Read the PEM key at @path and install it into @ctx if it matches the certificate. */
static int ctx_use_key(SSL_CTX *ctx, const char *key_file, const char *cert_file, char *why,
		       size_t cap)
{
	char detail[256];
	BIO *b = BIO_new_file(key_file, "r");
	EVP_PKEY *pk;
	int err = 0;

	if (!b) {
		snprintf(why, cap, "TLS key %s: %s", key_file, ssl_reason(detail, sizeof(detail)));
		return -EINVAL;
	}
	pk = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
	BIO_free(b);
	if (!pk) {
		snprintf(why, cap, "TLS key %s: no unencrypted PEM private key in it (%s)",
			 key_file, ssl_reason(detail, sizeof(detail)));
		return -EINVAL;
	}
	if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), pk) != 1) {
		ERR_clear_error();
		snprintf(why, cap, "TLS key %s is not the key of the certificate %s", key_file,
			 cert_file);
		err = -EINVAL;
	} else if (SSL_CTX_use_PrivateKey(ctx, pk) != 1) {
		snprintf(why, cap, "TLS key %s: %s", key_file, ssl_reason(detail, sizeof(detail)));
		err = -EINVAL;
	}
	EVP_PKEY_free(pk);
	return err;
}

/* Protocols, options, ALPN; then the certificate chain and the key. */
static int ctx_setup(SSL_CTX *ctx, const char *cert_file, const char *key_file, char *why,
		     size_t cap)
{
	char detail[256];
	const ASN1_TIME *na;

	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		snprintf(why, cap, "TLS: %s", ssl_reason(detail, sizeof(detail)));
		return -EINVAL;
	}
	/* TLS 1.2 renegotiation is a client-driven CPU cost and an old attack surface: off. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		snprintf(why, cap, "TLS certificate %s: no PEM certificate in it (%s)", cert_file,
			 ssl_reason(detail, sizeof(detail)));
		return -EINVAL;
	}
	na = X509_get0_notAfter(SSL_CTX_get0_certificate(ctx));
	if (X509_cmp_current_time(na) < 0)
		trib_warn("TLS certificate %s has expired: clients will refuse it", cert_file);
	return ctx_use_key(ctx, key_file, cert_file, why, cap);
}

int rt_tls_ctx_open(struct rt_tls_ctx **out, const char *cert_file, const char *key_file,
		    char *why, size_t cap)
{
	struct rt_tls_ctx *c;
	unsigned int n = 0;
	int err;

	err = file_readable(cert_file, "certificate", why, cap);
	if (!err)
		err = file_readable(key_file, "key", why, cap);
	if (err)
		return err;
	c = trib_calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	ERR_clear_error();
	c->ssl = SSL_CTX_new(TLS_server_method());
	if (!c->ssl) {
		snprintf(why, cap, "TLS: no context (out of memory)");
		err = -ENOMEM;
		goto err_free;
	}
	err = ctx_setup(c->ssl, cert_file, key_file, why, cap);
	if (err)
		goto err_ctx;
	X509_digest(SSL_CTX_get0_certificate(c->ssl), EVP_sha256(), c->fp, &n);
	*out = c;
	return 0;

err_ctx:
	SSL_CTX_free(c->ssl);
err_free:
	trib_free(c);
	return err;
}

void rt_tls_ctx_close(struct rt_tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl);
	trib_free(ctx);
}

const struct rt_tls_stats *rt_tls_ctx_stats(const struct rt_tls_ctx *ctx)
{
	return &ctx->stats;
}

void rt_tls_ctx_fingerprint(const struct rt_tls_ctx *ctx, char colon[96], char hex[65])
{
	static const char digits[] = "0123456789ABCDEF";

	for (int i = 0; i < 32; i++) {
		unsigned hi = ctx->fp[i] >> 4, lo = ctx->fp[i] & 15;

		if (colon) {
			colon[i * 3] = digits[hi];
			colon[i * 3 + 1] = digits[lo];
			colon[i * 3 + 2] = i == 31 ? '\0' : ':';
		}
		if (hex) {
			hex[i * 2] = (char)(digits[hi] | 0x20); /* lower case; digits keep */
			hex[i * 2 + 1] = (char)(digits[lo] | 0x20);
		}
	}
	if (hex)
		hex[64] = '\0';
}

int rt_tls_open(struct rt_tls_ctx *ctx, struct rt_tls **out)
{
	struct rt_tls *t = trib_calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->ctx = ctx;
	t->ssl = SSL_new(ctx->ssl);
	if (!t->ssl)
		goto err_free;
	/* The SSL writes into sslbio's buffer (out), we write into net's (in). */
	if (BIO_new_bio_pair(&t->sslbio, RT_TLS_OUT_BUF, &t->net, RT_TLS_IN_BUF) != 1)
		goto err_ssl;
	SSL_set_bio(t->ssl, t->sslbio, t->sslbio);
	SSL_set_accept_state(t->ssl);
	*out = t;
	return 0;

err_ssl:
	SSL_free(t->ssl);
err_free:
	ERR_clear_error();
	trib_free(t);
	return -ENOMEM;
}

void rt_tls_close(struct rt_tls *t)
{
	if (!t)
		return;
	if (t->began && !t->done && !t->counted)
		t->ctx->stats.failed[RT_TLS_FAIL_CLOSED]++;
	SSL_free(t->ssl); /* and sslbio */
	BIO_free(t->net);
	trib_free(t);
}

size_t rt_tls_in_space(struct rt_tls *t, uint8_t **buf)
{
	char *p = NULL;
	int n = (int)BIO_nwrite0(t->net, &p);

	if (n <= 0)
		return 0;
	*buf = (uint8_t *)p;
	return (size_t)n;
}

void rt_tls_in_commit(struct rt_tls *t, size_t n)
{
	char *p;

	if (!n)
		return;
	BIO_nwrite(t->net, &p, (int)n);
	t->began = true;
}

size_t rt_tls_out_data(struct rt_tls *t, const uint8_t **buf)
{
	char *p = NULL;
	int n = (int)BIO_nread0(t->net, &p);

	if (n <= 0)
		return 0;
	*buf = (const uint8_t *)p;
	return (size_t)n;
}

void rt_tls_out_consume(struct rt_tls *t, size_t n)
{
	char *p;

	if (n)
		BIO_nread(t->net, &p, (int)n);
}

void rt_tls_fail(struct rt_tls *t, enum rt_tls_fail why)
{
	if (t->done || t->counted)
		return;
	t->counted = true;
	t->ctx->stats.failed[why]++;
}

/* SSL_read failed with a protocol error: count it, keep whether it was plain HTTP. */
static int read_failed(struct rt_tls *t)
{
	unsigned long e = ERR_peek_error();
	char buf[256];

	if (!t->done) {
		enum rt_tls_fail f = rt_tls_fail_of(e);

		t->http = f == RT_TLS_FAIL_HTTP;
		rt_tls_fail(t, f);
	}
	trib_debug("TLS: %s", ssl_reason(buf, sizeof(buf)));
	return -EPROTO;
}

int rt_tls_read(struct rt_tls *t, void *dst, size_t len)
{
	size_t got = 0;

	t->want_write = false;
	while (got < len) {
		size_t want = len - got < INT_MAX ? len - got : INT_MAX;
		int n, e;

		ERR_clear_error();
		n = SSL_read(t->ssl, (uint8_t *)dst + got, (int)want);
		if (!t->done && SSL_is_init_finished(t->ssl)) {
			t->done = true;
			t->ctx->stats.handshakes++;
		}
		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		e = SSL_get_error(t->ssl, n);
		if (got)
			break; /* what was read first; a failure shows again on the next read */
		if (e == SSL_ERROR_WANT_READ)
			return -EAGAIN;
		if (e == SSL_ERROR_WANT_WRITE) {
			t->want_write = true;
			return -EAGAIN;
		}
		if (e == SSL_ERROR_ZERO_RETURN)
			return 0;
		return read_failed(t);
	}
	return (int)got;
}

bool rt_tls_readable(const struct rt_tls *t)
{
	/*
	 * Not SSL_has_pending(): it is true for a partial record, which needs
	 * more ciphertext, not another read.
	 */
	return t->want_write || SSL_pending(t->ssl) > 0 || BIO_ctrl_pending(t->sslbio) > 0;
}

int rt_tls_write(struct rt_tls *t, const void *src, size_t len)
{
	size_t put = 0;

	/* Whole records only when they fit, so that SSL_write never holds one back. */
	while (put < len &&
	       BIO_ctrl_get_write_guarantee(t->sslbio) >= RT_TLS_RECORD + RT_TLS_RECORD_OVERHEAD) {
		size_t n = len - put < RT_TLS_RECORD ? len - put : RT_TLS_RECORD;
		int w;

		ERR_clear_error();
		w = SSL_write(t->ssl, (const uint8_t *)src + put, (int)n);
		if (w <= 0) {
			char buf[256];

			if (SSL_get_error(t->ssl, w) == SSL_ERROR_WANT_WRITE)
				break;
			trib_debug("TLS write: %s", ssl_reason(buf, sizeof(buf)));
			return put ? (int)put : -EPROTO;
		}
		put += (size_t)w;
	}
	return (int)put;
}

void rt_tls_shutdown(struct rt_tls *t)
{
	if (!t->done)
		return;
	ERR_clear_error();
	if (SSL_shutdown(t->ssl) < 0)
		ERR_clear_error();
}

bool rt_tls_done(const struct rt_tls *t)
{
	return t->done;
}

bool rt_tls_alert_http(const struct rt_tls *t)
{
	return t->http;
}
