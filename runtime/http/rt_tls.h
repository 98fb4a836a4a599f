/* SPDX-License-Identifier: MIT */
/* TLS for the gateway (OpenSSL 3): a server context, a session per connection on memory BIOs. */
#ifndef RT_TLS_H
#define RT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Why a handshake did not complete (tributary_tls_handshakes_failed_total's
 * reason label, rt_tls_fail_name()).
 */
enum rt_tls_fail {
	RT_TLS_FAIL_HTTP,     /* plain HTTP sent to the TLS port ("http_request") */
	RT_TLS_FAIL_VERSION,  /* no protocol version in common (TLS 1.2 and 1.3 only) */
	RT_TLS_FAIL_ALPN,     /* the client offered ALPN without http/1.1 */
	RT_TLS_FAIL_PROTOCOL, /* any other malformed or refused hello or handshake message */
	RT_TLS_FAIL_CLOSED,   /* the client went away after some bytes, before the end */
	RT_TLS_FAIL_TIMEOUT,  /* not done within the head timeout (the loop counts it) */
	RT_TLS_FAIL__COUNT,
};

/* Counted by the context for /metrics. */
struct rt_tls_stats {
	uint64_t handshakes; /* completed */
	uint64_t failed[RT_TLS_FAIL__COUNT];
};

/*
 * Ciphertext buffered per connection, each way (two OpenSSL BIO pair
 * buffers): a receive of the socket lands in the inbound one, and a send
 * goes out of the outbound one, so ciphertext is not copied by us either.
 * 64 KiB in: a receive brings up to four full records; 48 KiB out: two.
 */
#define RT_TLS_IN_BUF (64 * 1024)
#define RT_TLS_OUT_BUF (48 * 1024)
/* A full record's plaintext, and what a record adds to it at most (header, tag, padding). */
#define RT_TLS_RECORD 16384
#define RT_TLS_RECORD_OVERHEAD 320

struct rt_tls_ctx;
struct rt_tls;

/*
 * A server context from a PEM certificate (chain) and its PEM private key:
 * TLS 1.2 and 1.3, ALPN http/1.1 (a client that offers ALPN without it is
 * refused), no renegotiation, no compression. On failure *why names the file
 * and what is wrong with it (@why: @cap bytes, caller-owned). 0, -ENOENT,
 * -EACCES, -EINVAL (not PEM, not a key or certificate, or they do not
 * match), -ENOMEM.
 */
int rt_tls_ctx_open(struct rt_tls_ctx **out, const char *cert_file, const char *key_file,
		    char *why, size_t cap);
/* Accepts NULL. Every session of the context must be closed first. */
void rt_tls_ctx_close(struct rt_tls_ctx *ctx);
const struct rt_tls_stats *rt_tls_ctx_stats(const struct rt_tls_ctx *ctx);
/*
 * The loaded certificate's SHA-256 fingerprint: @colon as `openssl x509
 * -noout -fingerprint -sha256` prints it after "=" (AB:CD:..., 96 bytes),
 * @hex as 64 lowercase hex digits (65 bytes). Either may be NULL.
 */
void rt_tls_ctx_fingerprint(const struct rt_tls_ctx *ctx, char colon[96], char hex[65]);
/* "http_request", "version", "alpn", "protocol", "closed", "timeout". */
const char *rt_tls_fail_name(enum rt_tls_fail f);
/* The failure reason of an OpenSSL error code (ERR_get_error()), for the counter. */
enum rt_tls_fail rt_tls_fail_of(unsigned long err);

/* A server session (accept state) of @ctx. 0 or -ENOMEM. */
int rt_tls_open(struct rt_tls_ctx *ctx, struct rt_tls **out);
/*
 * Free @t. A handshake that had begun and never ended is counted as failed
 * ("closed") unless rt_tls_fail() already counted it. Accepts NULL.
 */
void rt_tls_close(struct rt_tls *t);

/*
 * The network side. rt_tls_in_space() gives where the next ciphertext may
 * be received (contiguous, stays valid until rt_tls_close) and how much;
 * 0 when the inbound buffer is full. rt_tls_in_commit() says @n bytes came.
 * rt_tls_out_data() gives the ciphertext waiting to be sent (0: none);
 * rt_tls_out_consume() says @n of them left.
 */
size_t rt_tls_in_space(struct rt_tls *t, uint8_t **buf);
void rt_tls_in_commit(struct rt_tls *t, size_t n);
size_t rt_tls_out_data(struct rt_tls *t, const uint8_t **buf);
void rt_tls_out_consume(struct rt_tls *t, size_t n);

/*
 * Decrypt up to @len bytes straight into @dst (the caller's: a head buffer or
 * an arena slot), going on with the handshake first while it is not done.
 * Reads records until @dst is full or no whole record is buffered. Returns
 * the bytes written (> 0); -EAGAIN: more ciphertext is needed (and maybe
 * some must be sent first: rt_tls_out_data); 0: the client sent close_notify;
 * -EPROTO: a handshake or record error (counted as a failed handshake if it
 * was not done; rt_tls_alert_http() says whether it was plain HTTP).
 */
int rt_tls_read(struct rt_tls *t, void *dst, size_t len);
/*
 * Whether a read may make progress without receiving: plaintext or
 * ciphertext is buffered.
 */
bool rt_tls_readable(const struct rt_tls *t);
/*
 * Encrypt from @src (@len bytes) as many whole records as the outbound
 * buffer has room for. Returns the plaintext bytes taken (0: no room; send
 * first), or -EPROTO. Only after the handshake.
 */
int rt_tls_write(struct rt_tls *t, const void *src, size_t len);
/* Queue a close_notify alert (best effort; after the handshake only). */
void rt_tls_shutdown(struct rt_tls *t);
bool rt_tls_done(const struct rt_tls *t);
/* The last failure was plain HTTP on the TLS port (the loop answers it in clear). */
bool rt_tls_alert_http(const struct rt_tls *t);
/* The handshake did not complete for @why (a timeout); counted once per session. */
void rt_tls_fail(struct rt_tls *t, enum rt_tls_fail why);

/*
 * `--tls self-signed`: DIR/tls-cert.pem and DIR/tls-key.pem. When neither
 * exists, make an EC P-256 key and a self-signed X.509 v3 certificate valid
 * for one year whose subjectAltName holds localhost, 127.0.0.1, this host's
 * name and @listen_host (if it is an address other than 0.0.0.0), written
 * atomically (temp file, fsync, rename; the key mode 0600). When both exist
 * they are used as they are. The paths are written into @cert/@key (@cap
 * bytes each); *created says whether they were made now. 0 or -errno; a
 * key without its certificate is made again, a certificate without its key
 * is -ENOENT (*why says so).
 */
int rt_tls_self_signed(const char *dir, const char *listen_host, char *cert, char *key,
		       size_t cap, bool *created, char *why, size_t whycap);

#endif
