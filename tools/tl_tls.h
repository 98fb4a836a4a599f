/* SPDX-License-Identifier: MIT */
/* The client's TLS: one OpenSSL context per client, a session per connection, verify or pin. */
#ifndef TL_TLS_H
#define TL_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct tl_tls_opts;
struct tl_tls;

#define TL_TLS_PIN_LEN 32 /* SHA-256 */

/*
 * Parse a SHA-256 fingerprint: 64 hex digits, either case, optionally in pairs
 * separated by ':' (as `openssl x509 -fingerprint -sha256` prints it).
 * Returns 0 or -EINVAL.
 */
int tl_tls_pin_parse(const char *s, uint8_t pin[TL_TLS_PIN_LEN]);

/*
 * The TLS state of one client of server @host (borrowed; a DNS name or an IP
 * literal) on @port, for display. *out is owned by the caller (tl_tls_free).
 * Without a pin the server's chain is verified against @o->ca_file (NULL: the
 * system store) and its name against @host; with a pin only the certificate's
 * SHA-256 counts (and the chain too when a CA file is also given). Returns 0,
 * -EINVAL (bad pin: logged), -ENOENT (unreadable CA file: logged) or -ENOMEM.
 */
int tl_tls_new(const struct tl_tls_opts *o, const char *host, uint16_t port, struct tl_tls **out);
void tl_tls_free(struct tl_tls *t);

/*
 * Handshake over the connected socket @fd (borrowed; its SO_RCVTIMEO and
 * SO_SNDTIMEO bound each step) and check the server. Returns 0, -EKEYREJECTED
 * (the certificate did not verify, or did not match the pin: the cause is
 * logged), -EPROTO (the handshake failed: logged), -ETIMEDOUT, or the -errno
 * of the socket (the peer closed: -ECONNRESET).
 */
int tl_tls_connect(struct tl_tls *t, int fd);
/* Ends the connection's session (a close_notify if it is clean); the caller closes the fd. */
void tl_tls_close(struct tl_tls *t);
/* Send every byte of @iov (@cnt pieces). Returns 0, -ETIMEDOUT or a -errno (-EPIPE: closed). */
int tl_tls_send(struct tl_tls *t, const struct iovec *iov, int cnt);
/* Receive up to @n bytes. Returns the count, 0 when the peer closed, -ETIMEDOUT or -errno. */
ssize_t tl_tls_recv(struct tl_tls *t, void *buf, size_t n);

#endif
