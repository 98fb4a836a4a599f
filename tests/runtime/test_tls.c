// SPDX-License-Identifier: MIT
/* Tests of http/rt_tls: a server session against an OpenSSL client, both in memory. */
#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "rt_tls.h"
#include "trib_alloc.h"

/* A self-signed pair in a fresh temp dir, its server context, and a client over a BIO pair. */
struct pair {
	char dir[64];
	char cert[PATH_MAX], key[PATH_MAX];
	struct rt_tls_ctx *sctx;
	struct rt_tls *srv;
	SSL_CTX *cctx;
	SSL *cli;
	BIO *cnet; /* the client's network end */
};

static void pair_open(struct pair *p, int max_version, const unsigned char *alpn, size_t alpnlen)
{
	char why[512];
	bool created;
	BIO *cin;

	memset(p, 0, sizeof(*p));
	snprintf(p->dir, sizeof(p->dir), "/tmp/trib-tls-XXXXXX");
	cr_assert_not_null(mkdtemp(p->dir));
	cr_assert_eq(rt_tls_self_signed(p->dir, "127.0.0.1", p->cert, p->key, sizeof(p->cert),
					&created, why, sizeof(why)), 0, "%s", why);
	cr_assert(created);
	cr_assert_eq(rt_tls_ctx_open(&p->sctx, p->cert, p->key, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(rt_tls_open(p->sctx, &p->srv), 0);

	p->cctx = SSL_CTX_new(TLS_client_method());
	cr_assert_eq(SSL_CTX_load_verify_locations(p->cctx, p->cert, NULL), 1);
	SSL_CTX_set_verify(p->cctx, SSL_VERIFY_PEER, NULL);
	if (max_version) {
		SSL_CTX_set_min_proto_version(p->cctx, 0);
		SSL_CTX_set_security_level(p->cctx, 0);
		SSL_CTX_set_max_proto_version(p->cctx, max_version);
	}
	if (alpn)
		SSL_CTX_set_alpn_protos(p->cctx, alpn, (unsigned)alpnlen);
	p->cli = SSL_new(p->cctx);
	cr_assert_eq(SSL_set1_host(p->cli, "localhost"), 1);
	cr_assert_eq(BIO_new_bio_pair(&cin, 1 << 20, &p->cnet, 1 << 20), 1);
	SSL_set_bio(p->cli, cin, cin);
	SSL_set_connect_state(p->cli);
}

static void pair_close(struct pair *p)
{
	char cmd[128];

	SSL_free(p->cli);
	BIO_free(p->cnet);
	SSL_CTX_free(p->cctx);
	rt_tls_close(p->srv);
	rt_tls_ctx_close(p->sctx);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", p->dir);
	cr_assert_eq(system(cmd), 0);
}

/* Ciphertext the client wrote into the server's inbound buffer, at most @step bytes a time. */
static size_t to_server(struct pair *p, size_t step, size_t max)
{
	size_t moved = 0;

	while (moved < max && BIO_ctrl_pending(p->cnet) > 0) {
		uint8_t *in;
		size_t room = rt_tls_in_space(p->srv, &in);
		size_t n = step < room ? step : room;
		int r;

		if (!room)
			break;
		if (n > max - moved)
			n = max - moved;
		r = BIO_read(p->cnet, in, (int)n);
		cr_assert_gt(r, 0);
		rt_tls_in_commit(p->srv, (size_t)r);
		moved += (size_t)r;
	}
	return moved;
}

/* What the server wrote, to the client. */
static void to_client(struct pair *p)
{
	const uint8_t *out;
	size_t n;

	while ((n = rt_tls_out_data(p->srv, &out)) > 0) {
		int w = BIO_write(p->cnet, out, (int)n);

		cr_assert_gt(w, 0);
		rt_tls_out_consume(p->srv, (size_t)w);
	}
}

/* Run the handshake; returns the server's last read result (-EAGAIN when it went well). */
static int handshake(struct pair *p)
{
	uint8_t b[1];
	int r = -EAGAIN;

	for (int i = 0; i < 20; i++) {
		int cr = SSL_do_handshake(p->cli);

		to_server(p, SIZE_MAX, SIZE_MAX);
		r = rt_tls_read(p->srv, b, sizeof(b));
		to_client(p);
		if (r != -EAGAIN)
			return r;
		if (cr == 1 && rt_tls_done(p->srv))
			return r;
	}
	return r;
}

Test(runtime_tls, handshake_tls13_with_alpn_then_both_ways)
{
	static const unsigned char alpn[] = "\x02h2\x08http/1.1";
	const unsigned char *sel;
	unsigned sellen;
	struct pair p;
	char buf[64];
	int n;

	pair_open(&p, 0, alpn, sizeof(alpn) - 1);
	cr_assert_eq(handshake(&p), -EAGAIN);
	cr_assert(rt_tls_done(p.srv));
	cr_assert_eq(SSL_version(p.cli), TLS1_3_VERSION);
	SSL_get0_alpn_selected(p.cli, &sel, &sellen);
	cr_assert_eq(sellen, 8);
	cr_assert_eq(memcmp(sel, "http/1.1", 8), 0);
	cr_assert_eq(SSL_get_verify_result(p.cli), X509_V_OK);
	cr_assert_eq(rt_tls_ctx_stats(p.sctx)->handshakes, 1);

	cr_assert_eq(SSL_write(p.cli, "GET / HTTP/1.1\r\n\r\n", 18), 18);
	to_server(&p, SIZE_MAX, SIZE_MAX);
	n = rt_tls_read(p.srv, buf, sizeof(buf));
	cr_assert_eq(n, 18);
	cr_assert_eq(memcmp(buf, "GET / HTTP/1.1\r\n\r\n", 18), 0);
	cr_assert_not(rt_tls_readable(p.srv));

	cr_assert_eq(rt_tls_write(p.srv, "HTTP/1.1 200 OK\r\n", 17), 17);
	to_client(&p);
	cr_assert_eq(SSL_read(p.cli, buf, sizeof(buf)), 17);
	cr_assert_eq(memcmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);

	/* close_notify both ways: the client's reads as 0, the server's reaches the client. */
	rt_tls_shutdown(p.srv);
	to_client(&p);
	cr_assert_eq(SSL_read(p.cli, buf, sizeof(buf)), 0);
	cr_assert_eq(SSL_get_error(p.cli, 0), SSL_ERROR_ZERO_RETURN);
	SSL_shutdown(p.cli);
	to_server(&p, SIZE_MAX, SIZE_MAX);
	cr_assert_eq(rt_tls_read(p.srv, buf, sizeof(buf)), 0);
	pair_close(&p);
}

Test(runtime_tls, tls12_handshake_works)
{
	struct pair p;

	pair_open(&p, TLS1_2_VERSION, NULL, 0);
	cr_assert_eq(handshake(&p), -EAGAIN);
	cr_assert(rt_tls_done(p.srv));
	cr_assert_eq(SSL_version(p.cli), TLS1_2_VERSION);
	pair_close(&p);
}

/* A body of @len bytes fed @step ciphertext bytes at a time, decrypted into @dst directly. */
static void body_in_steps(size_t len, size_t step)
{
	struct pair p;
	uint8_t *src = trib_malloc(len), *dst = trib_calloc(1, len + 1);
	size_t got = 0, sent = 0;
	int reads = 0;

	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 9));
	pair_open(&p, 0, NULL, 0);
	cr_assert_eq(handshake(&p), -EAGAIN);
	while (got < len) {
		if (sent < len && BIO_ctrl_pending(p.cnet) == 0) {
			int w = SSL_write(p.cli, src + sent, (int)(len - sent > 65536 ? 65536 :
								       len - sent));

			cr_assert_gt(w, 0);
			sent += (size_t)w;
		}
		cr_assert_gt(to_server(&p, step, step), 0, "stuck at %zu of %zu", got, len);
		/* The destination is the caller's buffer at the offset reached: no copy between. */
		for (int n; (n = rt_tls_read(p.srv, dst + got, len - got)) != -EAGAIN; ) {
			cr_assert_gt(n, 0);
			got += (size_t)n;
			reads++;
			if (got == len)
				break;
		}
	}
	cr_assert_eq(got, len);
	cr_assert_eq(memcmp(src, dst, len), 0);
	cr_assert_eq(dst[len], 0, "a read wrote past the buffer it was given");
	cr_assert_geq(reads, 1);
	pair_close(&p);
	trib_free(src);
	trib_free(dst);
}

Test(runtime_tls, records_split_across_tiny_reads)
{
	/* Every record arrives 7 bytes at a time: header and tag split, many reads per record. */
	body_in_steps(100000, 7);
}

Test(runtime_tls, body_decrypted_into_the_callers_buffer)
{
	/* 4 MB as an update body: records arrive in whole inbound buffers, as from a socket. */
	body_in_steps(4000000, RT_TLS_IN_BUF);
}

Test(runtime_tls, write_takes_whole_records_only_while_there_is_room)
{
	static uint8_t big[256 * 1024];
	struct pair p;
	int n;

	pair_open(&p, 0, NULL, 0);
	cr_assert_eq(handshake(&p), -EAGAIN);
	n = rt_tls_write(p.srv, big, sizeof(big));
	cr_assert_gt(n, 0);
	cr_assert_lt((size_t)n, sizeof(big));
	cr_assert_eq(n % RT_TLS_RECORD, 0, "%d is not whole records", n);
	cr_assert_eq(rt_tls_write(p.srv, big + n, sizeof(big) - (size_t)n), 0, "no room: 0");
	to_client(&p);
	cr_assert_gt(rt_tls_write(p.srv, big + n, sizeof(big) - (size_t)n), 0);
	pair_close(&p);
}

/* Feed @bytes as a client's first flight; the read must fail as @want. */
static void bad_hello(const void *bytes, size_t len, enum rt_tls_fail want, bool http)
{
	struct pair p;
	uint8_t *in;
	uint8_t b[16];

	pair_open(&p, 0, NULL, 0);
	cr_assert_geq(rt_tls_in_space(p.srv, &in), len);
	memcpy(in, bytes, len);
	rt_tls_in_commit(p.srv, len);
	cr_assert_eq(rt_tls_read(p.srv, b, sizeof(b)), -EPROTO);
	cr_assert_not(rt_tls_done(p.srv));
	cr_assert_eq(rt_tls_alert_http(p.srv), http);
	cr_assert_eq(rt_tls_ctx_stats(p.sctx)->failed[want], 1, "reason %s",
		     rt_tls_fail_name(want));
	/* Counted once: closing does not count it again as "closed". */
	rt_tls_close(p.srv);
	p.srv = NULL;
	cr_assert_eq(rt_tls_ctx_stats(p.sctx)->failed[RT_TLS_FAIL_CLOSED], 0);
	pair_close(&p);
}

Test(runtime_tls, bad_client_hello_fails_with_its_reason)
{
	static const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	/* A handshake record whose ClientHello body is garbage. */
	static const uint8_t junk[] = { 0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04,
					0xde, 0xad, 0xbe, 0xef };
	static const uint8_t notls[] = "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a";

	bad_hello(get, sizeof(get) - 1, RT_TLS_FAIL_HTTP, true);
	bad_hello(junk, sizeof(junk), RT_TLS_FAIL_PROTOCOL, false);
	bad_hello(notls, sizeof(notls) - 1, RT_TLS_FAIL_PROTOCOL, false);
}

Test(runtime_tls, old_versions_and_foreign_alpn_are_refused)
{
	static const unsigned char h2[] = "\x02h2";
	struct pair p;

	pair_open(&p, TLS1_1_VERSION, NULL, 0);
	cr_assert_eq(handshake(&p), -EPROTO);
	cr_assert_eq(rt_tls_ctx_stats(p.sctx)->failed[RT_TLS_FAIL_VERSION], 1);
	pair_close(&p);

	pair_open(&p, 0, h2, sizeof(h2) - 1);
	cr_assert_eq(handshake(&p), -EPROTO);
	cr_assert_eq(rt_tls_ctx_stats(p.sctx)->failed[RT_TLS_FAIL_ALPN], 1);
	pair_close(&p);
}

Test(runtime_tls, a_handshake_that_stops_counts_as_closed_or_timeout)
{
	struct pair p;

	pair_open(&p, 0, NULL, 0);
	SSL_do_handshake(p.cli);
	cr_assert_gt(to_server(&p, 10, 10), 0);
	rt_tls_close(p.srv);
	p.srv = NULL;
	cr_assert_eq(rt_tls_ctx_stats(p.sctx)->failed[RT_TLS_FAIL_CLOSED], 1);
	cr_assert_eq(rt_tls_open(p.sctx, &p.srv), 0);
	rt_tls_fail(p.srv, RT_TLS_FAIL_TIMEOUT);
	rt_tls_fail(p.srv, RT_TLS_FAIL_TIMEOUT);
	cr_assert_eq(rt_tls_ctx_stats(p.sctx)->failed[RT_TLS_FAIL_TIMEOUT], 1, "counted once");
	pair_close(&p);
}

/* The certificate names localhost, 127.0.0.1 and the listen address, for one year. */
static void san_and_validity(const char *cert)
{
	FILE *f = fopen(cert, "r");
	X509 *x;
	int days = 0, secs = 0;

	cr_assert_not_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x);
	cr_assert_eq(X509_check_host(x, "localhost", 0, 0, NULL), 1);
	cr_assert_eq(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
	cr_assert_eq(X509_check_ip_asc(x, "10.1.2.3", 0), 1);
	cr_assert_eq(X509_check_ip_asc(x, "10.1.2.4", 0), 0);
	cr_assert_eq(X509_check_host(x, "example.com", 0, 0, NULL), 0);
	cr_assert_eq(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
	cr_assert(days >= 364 && days <= 365, "valid for %d more days", days);
	X509_free(x);
}

Test(runtime_tls, self_signed_pair_is_reused_and_bad_files_are_named)
{
	char dir[64] = "/tmp/trib-tls-XXXXXX", cert[PATH_MAX], key[PATH_MAX], why[1024];
	char other[PATH_MAX], cmd[PATH_MAX + 64], fp1[96], fp2[96], hex[65];
	struct rt_tls_ctx *ctx;
	struct stat st;
	bool created;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(rt_tls_self_signed(dir, "10.1.2.3", cert, key, sizeof(cert), &created, why,
					sizeof(why)), 0, "%s", why);
	cr_assert(created);
	cr_assert_eq(stat(key, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	cr_assert_eq(rt_tls_ctx_open(&ctx, cert, key, why, sizeof(why)), 0, "%s", why);
	san_and_validity(cert);
	rt_tls_ctx_fingerprint(ctx, fp1, hex);
	cr_assert_eq(strlen(fp1), 95);
	cr_assert_eq(strlen(hex), 64);
	for (int i = 0; i < 32; i++)
		cr_assert(fp1[i * 3] == (hex[i * 2] >= 'a' ? hex[i * 2] - 32 : hex[i * 2]));
	rt_tls_ctx_close(ctx);

	/* The second start reuses it. */
	cr_assert_eq(rt_tls_self_signed(dir, "10.1.2.3", cert, key, sizeof(cert), &created, why,
					sizeof(why)), 0);
	cr_assert_not(created);
	cr_assert_eq(rt_tls_ctx_open(&ctx, cert, key, why, sizeof(why)), 0);
	rt_tls_ctx_fingerprint(ctx, fp2, NULL);
	cr_assert_str_eq(fp1, fp2);
	rt_tls_ctx_close(ctx);

	/* A key that is not the certificate's, a missing file, a file that is not PEM. */
	snprintf(other, sizeof(other), "%s/other", dir);
	cr_assert_eq(rt_tls_self_signed(other, NULL, cert + 0, other + 0, 0, &created, why,
					sizeof(why)), -ENAMETOOLONG);
	snprintf(other, sizeof(other), "%s/other", dir);
	{
		char c2[PATH_MAX], k2[PATH_MAX];

		cr_assert_eq(rt_tls_self_signed(other, NULL, c2, k2, sizeof(c2), &created, why,
						sizeof(why)), 0);
		cr_assert_eq(rt_tls_ctx_open(&ctx, cert, k2, why, sizeof(why)), -EINVAL);
		cr_assert(strstr(why, k2) && strstr(why, "is not the key of"), "%s", why);
		cr_assert_eq(rt_tls_ctx_open(&ctx, c2, key, why, sizeof(why)), -EINVAL);
		cr_assert_eq(rt_tls_ctx_open(&ctx, cert, "/nonexistent/key.pem", why, sizeof(why)),
			     -ENOENT);
		cr_assert(strstr(why, "/nonexistent/key.pem"), "%s", why);
		cr_assert_eq(rt_tls_ctx_open(&ctx, key, key, why, sizeof(why)), -EINVAL);
		cr_assert(strstr(why, "no PEM certificate"), "%s", why);
		cr_assert_eq(rt_tls_ctx_open(&ctx, cert, cert, why, sizeof(why)), -EINVAL);
		cr_assert(strstr(why, "no unencrypted PEM private key"), "%s", why);
		/* A certificate without its key is not made again: it may be pinned. */
		cr_assert_eq(unlink(k2), 0);
		cr_assert_eq(rt_tls_self_signed(other, NULL, c2, k2, sizeof(c2), &created, why,
						sizeof(why)), -ENOENT);
		cr_assert(strstr(why, "missing"), "%s", why);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}
