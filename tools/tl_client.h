/* SPDX-License-Identifier: MIT */
/* A small blocking HTTP/1.1 client: one keep-alive connection, bodies sent from caller iovecs. */
#ifndef TL_CLIENT_H
#define TL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * One connection to one server. Not thread-safe: a thread owns its client.
 * The connection is opened by tl_client_open(), kept alive between requests,
 * and reopened transparently when the server closed it (idle keep-alive
 * timeout, "Connection: close").
 */
struct tl_client;

/* One request. Every pointer is borrowed for the duration of the call. */
struct tl_http_req {
	const char *method;       /* "GET", "POST" */
	const char *target;       /* origin-form, e.g. "/v1/jobs/a/model?after=3" */
	const char *bearer;       /* token for "Authorization: Bearer", or NULL */
	const char *headers;      /* extra header lines, each ending in "\r\n", or NULL */
	/* Sent as "Idempotency-Key: <key>" (valid per tl_idem_key_valid), or NULL: none. */
	const char *idempotency_key;
	const struct iovec *body; /* body pieces, sent as they are (never copied); NULL: none */
	int body_iovcnt;          /* entries in body; at most TL_CLIENT_MAX_IOV */
};

#define TL_CLIENT_MAX_IOV 8

/*
 * Idempotency-Key (IETF httpapi-idempotency-key-header): the server answers a
 * second request with the same key, for the same job and round, with the first
 * answer and counts the update once. A key is 1 to TL_IDEM_KEY_MAX bytes of
 * visible ASCII (0x21..0x7e); tl_client_do() refuses another with -EINVAL.
 */
#define TL_IDEM_KEY_MAX 64

/* Whether @key is a valid Idempotency-Key (see above). */
bool tl_idem_key_valid(const char *key);

/*
 * One response. body points into a buffer owned by the client: it stays valid
 * until the next request on the same client or tl_client_close().
 */
struct tl_http_resp {
	int status;         /* HTTP status code */
	const char *body;   /* NUL-terminated for convenience (the NUL is not in body_len) */
	size_t body_len;
	double retry_after; /* Retry-After in seconds, -1 when absent */
	int64_t round;      /* X-Tributary-Round, -1 when absent */
	char etag[128];     /* ETag, "" when absent */
	char content_type[128];
};

/*
 * Split "http://HOST:PORT[/...]" or "https://..." (the port defaults to 80 or
 * 443; "[v6]" hosts allowed) into @host (NUL-terminated, at most @host_len
 * bytes) and *port. Returns 0 or -EINVAL (not an http(s) URL, bad port, host
 * too long).
 */
int tl_url_parse(const char *url, char *host, size_t host_len, uint16_t *port);
/* Whether @url starts with "https://". */
bool tl_url_is_https(const char *url);

/*
 * How an https:// client trusts its server. Both strings are borrowed for the
 * duration of tl_client_open().
 *  - neither: the chain must verify against the system's CA store, and the
 *    certificate must name the URL's host (DNS name or IP address; SNI is sent
 *    for a name);
 *  - ca_file: the same against the CA certificates (PEM) in that file;
 *  - pin_sha256: the SHA-256 of the server certificate (DER) must be exactly
 *    this (64 hex digits, ':' between pairs allowed); neither the chain nor the
 *    name is checked, unless ca_file is given too.
 */
struct tl_tls_opts {
	const char *ca_file;
	const char *pin_sha256;
	/* NULL, or where the clients of these same options share their OpenSSL context. */
	struct tl_tls_shared *shared;
};

/*
 * One OpenSSL context for many clients of the same tl_tls_opts: a context
 * loads its CA store when it is made (the system's: ~18 ms each, measured on
 * the 2-core test VM), so simulate's hundreds of connections make one. Made
 * empty here, filled by the first client that uses it; thread-safe. *out is
 * owned by the caller: tl_tls_shared_free() it after every client that used it
 * is closed. Returns 0 or -ENOMEM.
 */
struct tl_tls_shared;
int tl_tls_shared_new(struct tl_tls_shared **out);
void tl_tls_shared_free(struct tl_tls_shared *s);

/*
 * Resolve @url and connect (TCP_NODELAY); for https://, make the TLS handshake
 * and check the server as @tls says (NULL: no options). @tls is ignored for an
 * http:// URL. *out is owned by the caller and released with tl_client_close().
 * Returns 0 or -EINVAL (bad URL or pin), -ENOENT (host does not resolve, CA
 * file unreadable), -ENOMEM, -EKEYREJECTED (the server's certificate did not
 * verify or match the pin), -EPROTO (TLS handshake failed), or the -errno of
 * connect(). A TLS failure's cause is logged (trib_error).
 */
int tl_client_open(const char *url, const struct tl_tls_opts *tls, struct tl_client **out);

/* tl_client_open()'s options with timeouts. */
struct tl_client_opts {
	const struct tl_tls_opts *tls; /* NULL: none */
	int timeout_ms; /* each send and each answer (SO_SNDTIMEO, SO_RCVTIMEO); 0: 120000 */
	/* TCP connect and TLS handshake of every (re)connection; 0: timeout_ms. */
	int connect_timeout_ms;
};

/* tl_client_open() with @o's timeouts (NULL: the defaults) from the first connect on. */
int tl_client_open_ex(const char *url, const struct tl_client_opts *o, struct tl_client **out);
/* strerror(-@err), but naming TLS for -EKEYREJECTED (its cause is logged by then). */
const char *tl_client_strerror(int err);
/* Closes the connection and frees @c (owned by the caller until now). Accepts NULL. */
void tl_client_close(struct tl_client *c);
/* Send and receive timeout of every later request, in milliseconds (default 120000). */
void tl_client_set_timeout(struct tl_client *c, int timeout_ms);
/* The send and receive timeout in milliseconds. */
int tl_client_timeout_ms(const struct tl_client *c);
/* Connections opened so far, the first included: tests check keep-alive with it. */
unsigned tl_client_connects(const struct tl_client *c);

/*
 * Send @req and read the whole response into *resp (any status: the caller
 * judges it). The head and the body go out in one sendmsg() without copying
 * the body. If a reused keep-alive connection turns out to be closed before any
 * byte of the response arrived, the request is resent once on a new
 * connection (the same bytes: the same Idempotency-Key, if any). Returns 0 or
 * -EPROTO (malformed response), -ECONNABORTED (the connection closed in the
 * middle of the response), -ETIMEDOUT, -ENOMEM, -EINVAL (bad request or
 * Idempotency-Key), or the -errno of the socket call that failed.
 */
int tl_client_do(struct tl_client *c, const struct tl_http_req *req, struct tl_http_resp *resp);

/*
 * tl_client_do(), resending while the server answers 503 (memory full): it
 * waits Retry-After seconds (a short growing backoff when that is absent or
 * 0), until the waits add up to @max_wait_s. *retries (may be NULL) receives
 * the number of resends. Returns as tl_client_do(); a final 503 comes back in
 * *resp with 0.
 */
int tl_client_do_retry(struct tl_client *c, const struct tl_http_req *req, double max_wait_s,
		       struct tl_http_resp *resp, unsigned *retries);

/*
 * Write into @buf (@len bytes, NUL-terminated, truncated) a one-line reason for
 * a failed response: the "error" string of a JSON body, else the body's first
 * line, else "HTTP <status>".
 */
void tl_http_error_msg(const struct tl_http_resp *resp, char *buf, size_t len);

#endif
