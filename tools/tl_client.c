// SPDX-License-Identifier: MIT
/* A blocking HTTP/1.1 client over one keep-alive connection, for simulate, bench and the CLI. */
#include "tl_client.h"

#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tl_tls.h"
#include "trib_alloc.h"
#include "trib_parse.h"

#define CLIENT_HEAD_MAX 4096
#define CLIENT_RBUF 16384
/* A response body larger than this is refused rather than allocated. */
#define CLIENT_BODY_MAX (16ull << 30)

struct tl_client {
	int fd; /* -1 while disconnected */
	struct tl_tls *tls; /* owned; NULL for http:// */
	char host[256];
	uint16_t port;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int timeout_ms;
	int connect_timeout_ms;
	unsigned connects;

	http_parser parser;
	http_parser_settings settings;
	struct tl_http_resp *resp; /* the response being read */
	bool headers_done;
	bool done;
	bool eof;
	uint64_t expect; /* Content-Length, UINT64_MAX when unknown */

	/* The header being read: callbacks may deliver a name or value in pieces. */
	char hfield[64];
	size_t hfield_len;
	char hvalue[256];
	size_t hvalue_len;
	bool in_value;

	char *body; /* owned; resp->body points here */
	size_t body_len;
	size_t body_cap;

	char head[CLIENT_HEAD_MAX];
	char rbuf[CLIENT_RBUF];
};

int tl_url_parse(const char *url, char *host, size_t host_len, uint16_t *port)
{
	const char *p, *end, *hend;
	char digits[16];
	uint32_t v = 80;
	size_t n;

	if (!url)
		return -EINVAL;
	if (!strncmp(url, "http://", 7)) {
		p = url + 7;
	} else if (tl_url_is_https(url)) {
		p = url + 8;
		v = 443;
	} else {
		return -EINVAL;
	}
	end = p + strcspn(p, "/?#");
	if (*p == '[') {
		hend = memchr(p, ']', (size_t)(end - p));
		if (!hend)
			return -EINVAL;
		p++;
		n = (size_t)(hend - p);
		hend++;
	} else {
		hend = memchr(p, ':', (size_t)(end - p));
		if (!hend)
			hend = end;
		n = (size_t)(hend - p);
	}
	if (n == 0 || n >= host_len)
		return -EINVAL;
	if (hend < end) {
		size_t plen = (size_t)(end - hend - 1);

		/* The port is not NUL-terminated in @url: parse a copy. */
		if (*hend != ':' || plen == 0 || plen >= sizeof(digits))
			return -EINVAL;
		memcpy(digits, hend + 1, plen);
		digits[plen] = '\0';
		if (trib_parse_u32(digits, 1, 65535, &v))
			return -EINVAL;
	}
	memcpy(host, p, n);
	host[n] = '\0';
	*port = (uint16_t)v;
	return 0;
}

bool tl_url_is_https(const char *url)
{
	return !strncmp(url, "https://", 8);
}

static void set_timeouts(int fd, int ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void client_disconnect(struct tl_client *c)
{
	if (c->fd >= 0) {
		if (c->tls)
			tl_tls_close(c->tls);
		close(c->fd);
	}
	c->fd = -1;
}

/* Returns 0, the -errno of socket()/connect(), or tl_tls_connect()'s. */
static int client_connect(struct tl_client *c)
{
	int one = 1, fd, err;

	fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* connect() is bounded by SO_SNDTIMEO: a vanished host answers nothing, not a refusal. */
	set_timeouts(fd, c->connect_timeout_ms);
	if (connect(fd, (struct sockaddr *)&c->addr, c->addrlen) < 0) {
		err = -errno;
		close(fd);
		return err == -EINPROGRESS || err == -EAGAIN ? -ETIMEDOUT : err;
	}
	if (c->tls) {
		err = tl_tls_connect(c->tls, fd);
		if (err) {
			close(fd);
			return err;
		}
	}
	set_timeouts(fd, c->timeout_ms);
	c->fd = fd;
	c->connects++;
	return 0;
}

/* Parser callbacks: the client is parser->data. */

static int body_reserve(struct tl_client *c, size_t need)
{
	size_t cap = c->body_cap ? c->body_cap : 4096;
	char *nb;

	if (need + 1 <= c->body_cap)
		return 0;
	while (cap < need + 1)
		cap *= 2;
	nb = trib_realloc(c->body, cap);
	if (!nb)
		return -ENOMEM;
	c->body = nb;
	c->body_cap = cap;
	return 0;
}

/* Copy @src into @dst (@cap bytes), truncated and NUL-terminated. */
static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void header_commit(struct tl_client *c)
{
	struct tl_http_resp *r = c->resp;
	const char *v = c->hvalue;
	char *end;
	double d;

	c->hfield[c->hfield_len] = '\0';
	c->hvalue[c->hvalue_len] = '\0';
	if (!strcasecmp(c->hfield, "retry-after")) {
		d = strtod(v, &end);
		if (end != v && d >= 0)
			r->retry_after = d;
	} else if (!strcasecmp(c->hfield, "x-tributary-round")) {
		size_t n = c->hvalue_len;
		uint64_t x;

		/* Trailing blanks are the header's padding, not the number's. */
		while (n > 0 && (c->hvalue[n - 1] == ' ' || c->hvalue[n - 1] == '\t'))
			c->hvalue[--n] = '\0';
		if (!trib_parse_u64(v, 0, INT64_MAX, &x))
			r->round = (int64_t)x;
	} else if (!strcasecmp(c->hfield, "etag")) {
		copy_str(r->etag, sizeof(r->etag), v);
	} else if (!strcasecmp(c->hfield, "content-type")) {
		copy_str(r->content_type, sizeof(r->content_type), v);
	}
	c->hfield_len = 0;
	c->hvalue_len = 0;
	c->in_value = false;
}

static void append_piece(char *dst, size_t cap, size_t *len, const char *at, size_t n)
{
	size_t room = cap - 1 - *len;

	if (n > room)
		n = room;
	memcpy(dst + *len, at, n);
	*len += n;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
	struct tl_client *c = p->data;

	if (c->in_value)
		header_commit(c);
	append_piece(c->hfield, sizeof(c->hfield), &c->hfield_len, at, n);
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
	struct tl_client *c = p->data;

	c->in_value = true;
	append_piece(c->hvalue, sizeof(c->hvalue), &c->hvalue_len, at, n);
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct tl_client *c = p->data;

	if (c->in_value)
		header_commit(c);
	c->headers_done = true;
	c->resp->status = (int)p->status_code;
	c->expect = UINT64_MAX;
	if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX) {
		if (p->content_length > CLIENT_BODY_MAX)
			return -1;
		c->expect = p->content_length;
		/* Whole body in one allocation, so that it can be read in place. */
		if (body_reserve(c, (size_t)c->expect))
			return -1;
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct tl_client *c = p->data;

	/* Read in place (see client_read): the bytes are already where they belong. */
	if (at == c->body + c->body_len) {
		c->body_len += n;
		return 0;
	}
	if (c->body_len + n > CLIENT_BODY_MAX || body_reserve(c, c->body_len + n))
		return -1;
	memcpy(c->body + c->body_len, at, n);
	c->body_len += n;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct tl_client *c = p->data;

	c->done = true;
	/* Stop here: bytes after the response would be a protocol error (no pipelining). */
	http_parser_pause(p, 1);
	return 0;
}

/* Send the head and the body in as few sendmsg() calls as the socket allows. */
static int send_all(int fd, struct iovec *iov, int cnt)
{
	struct msghdr mh = { 0 };
	ssize_t n;

	while (cnt > 0) {
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)cnt;
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* Ready @c to read a new response into @resp (borrowed until the request returns). */
static void resp_reset(struct tl_client *c, struct tl_http_resp *resp)
{
	memset(resp, 0, sizeof(*resp));
	resp->retry_after = -1;
	resp->round = -1;
	resp->body = "";
	c->resp = resp;
	c->headers_done = false;
	c->done = false;
	c->eof = false;
	c->expect = UINT64_MAX;
	c->hfield_len = 0;
	c->hvalue_len = 0;
	c->in_value = false;
	c->body_len = 0;
	http_parser_init(&c->parser, HTTP_RESPONSE);
	c->parser.data = c;
}

/*
 * Feed @n received bytes at @data (n = 0: the peer closed) to the parser.
 * Skips interim (1xx) answers. Returns 0 or -EPROTO.
 */
static int client_feed(struct tl_client *c, const char *data, size_t n)
{
	enum http_errno e;
	size_t np;

	for (;;) {
		np = http_parser_execute(&c->parser, &c->settings, data, n);
		e = HTTP_PARSER_ERRNO(&c->parser);
		if (e == HPE_OK)
			return 0;
		if (e != HPE_PAUSED)
			return -EPROTO;
		if (c->resp->status >= 200) {
			/* Bytes after the response: no pipelining here, so never reuse this one. */
			if (np < n)
				c->eof = true;
			return 0;
		}
		/* An interim answer (100 Continue): the real one follows, maybe in these bytes. */
		resp_reset(c, c->resp);
		data += np;
		n -= np;
		if (n == 0)
			return 0;
	}
}

/* Receive up to @room bytes: the count, 0 when the peer closed, or -ETIMEDOUT/-errno. */
static ssize_t client_recv(struct tl_client *c, void *dst, size_t room)
{
	ssize_t n;

	if (c->tls)
		return tl_tls_recv(c->tls, dst, room);
	do
		n = recv(c->fd, dst, room, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? -ETIMEDOUT : -errno;
	return n;
}

/*
 * Read and parse until the response is complete. *got_any tells whether any
 * byte arrived (a keep-alive connection closed before that is safe to retry).
 */
static int client_read(struct tl_client *c, bool *got_any)
{
	char *dst;
	size_t room;
	ssize_t n;
	int err;

	while (!c->done) {
		/* Body of known length: receive straight into the body buffer. */
		if (c->headers_done && c->expect != UINT64_MAX && c->body_len < c->expect) {
			dst = c->body + c->body_len;
			room = (size_t)c->expect - c->body_len;
		} else {
			dst = c->rbuf;
			room = sizeof(c->rbuf);
		}
		n = client_recv(c, dst, room);
		if (n < 0)
			return (int)n;
		if (n > 0)
			*got_any = true;
		err = client_feed(c, dst, (size_t)n);
		if (n == 0) {
			/*
			 * Cut off mid-answer (the parser calls that an error too): the server,
			 * or its node, went away; it is not a bad answer.
			 */
			if (!c->done)
				return *got_any ? -ECONNABORTED : -ECONNRESET;
			c->eof = true;
		} else if (err) {
			return err;
		}
	}
	return 0;
}

bool tl_idem_key_valid(const char *key)
{
	size_t n = 0;

	for (; key[n]; n++)
		if (key[n] < 0x21 || key[n] > 0x7e || n >= TL_IDEM_KEY_MAX)
			return false;
	return n > 0;
}

static int build_head(struct tl_client *c, const struct tl_http_req *req, size_t body_len,
		      size_t *head_len)
{
	const char *key = req->idempotency_key;
	int n;

	if (key && !tl_idem_key_valid(key))
		return -EINVAL;
	n = snprintf(c->head, sizeof(c->head),
		     "%s %s HTTP/1.1\r\nHost: %s:%u\r\nConnection: keep-alive\r\n"
		     "User-Agent: tributary\r\n%s%s%s%s%s%s%s",
		     req->method, req->target, c->host, c->port,
		     req->bearer ? "Authorization: Bearer " : "", req->bearer ? req->bearer : "",
		     req->bearer ? "\r\n" : "", key ? "Idempotency-Key: " : "", key ? key : "",
		     key ? "\r\n" : "", req->headers ? req->headers : "");
	if (n < 0 || (size_t)n >= sizeof(c->head))
		return -EINVAL;
	if (req->body || strcmp(req->method, "GET")) {
		int m = snprintf(c->head + n, sizeof(c->head) - (size_t)n,
				 "Content-Length: %zu\r\n", body_len);

		if (m < 0 || (size_t)(n + m) >= sizeof(c->head))
			return -EINVAL;
		n += m;
	}
	if ((size_t)n + 2 >= sizeof(c->head))
		return -EINVAL;
	memcpy(c->head + n, "\r\n", 3);
	*head_len = (size_t)n + 2;
	return 0;
}

int tl_client_do(struct tl_client *c, const struct tl_http_req *req, struct tl_http_resp *resp)
{
	struct iovec iov[1 + TL_CLIENT_MAX_IOV];
	size_t head_len, body_len = 0;
	bool reused, got_any;
	int i, err, attempt;

	if (!req->method || !req->target || req->body_iovcnt < 0 ||
	    req->body_iovcnt > TL_CLIENT_MAX_IOV || (req->body_iovcnt && !req->body))
		return -EINVAL;
	for (i = 0; i < req->body_iovcnt; i++)
		body_len += req->body[i].iov_len;
	err = build_head(c, req, body_len, &head_len);
	if (err)
		return err;

	for (attempt = 0; attempt < 2; attempt++) {
		reused = c->fd >= 0;
		if (!reused) {
			err = client_connect(c);
			if (err)
				return err;
		}
		iov[0].iov_base = c->head;
		iov[0].iov_len = head_len;
		for (i = 0; i < req->body_iovcnt; i++)
			iov[1 + i] = req->body[i];
		resp_reset(c, resp);
		got_any = false;
		err = c->tls ? tl_tls_send(c->tls, iov, 1 + req->body_iovcnt)
			     : send_all(c->fd, iov, 1 + req->body_iovcnt);
		if (!err)
			err = client_read(c, &got_any);
		if (!err)
			break;
		client_disconnect(c);
		/* Only a stale keep-alive connection earns a second try. */
		if (!reused || got_any ||
		    (err != -EPIPE && err != -ECONNRESET && err != -ECONNABORTED))
			return err;
	}
	if (err)
		return err;
	if (c->eof || !http_should_keep_alive(&c->parser))
		client_disconnect(c);
	if (body_reserve(c, c->body_len))
		return -ENOMEM;
	c->body[c->body_len] = '\0';
	resp->body = c->body;
	resp->body_len = c->body_len;
	return 0;
}

static void sleep_s(double s)
{
	struct timespec ts;

	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

int tl_client_do_retry(struct tl_client *c, const struct tl_http_req *req, double max_wait_s,
		       struct tl_http_resp *resp, unsigned *retries)
{
	double waited = 0, backoff = 0.001, w;
	unsigned n = 0;
	int err;

	for (;;) {
		err = tl_client_do(c, req, resp);
		if (err || resp->status != 503 || waited >= max_wait_s)
			break;
		if (resp->retry_after > 0) {
			w = resp->retry_after;
		} else {
			/* No (or a zero) hint: back off from 1 ms up to 100 ms. */
			w = backoff;
			backoff = backoff * 2 > 0.1 ? 0.1 : backoff * 2;
		}
		if (waited + w > max_wait_s)
			w = max_wait_s - waited;
		sleep_s(w);
		waited += w;
		n++;
	}
	if (retries)
		*retries = n;
	return err;
}

void tl_http_error_msg(const struct tl_http_resp *resp, char *buf, size_t len)
{
	json_error_t jerr;
	json_t *root, *e;
	size_t n;

	if (!len)
		return;
	root = resp->body_len ? json_loadb(resp->body, resp->body_len, 0, &jerr) : NULL;
	e = root ? json_object_get(root, "error") : NULL;
	if (e && json_is_string(e)) {
		snprintf(buf, len, "%s", json_string_value(e));
	} else if (resp->body_len) {
		n = strcspn(resp->body, "\r\n");
		if (n > 200)
			n = 200;
		snprintf(buf, len, "HTTP %d: %.*s", resp->status, (int)n, resp->body);
	} else {
		snprintf(buf, len, "HTTP %d", resp->status);
	}
	json_decref(root);
}

/* Resolve the host once; later reconnects reuse the address. */
static int client_resolve(struct tl_client *c)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	char port[8];

	snprintf(port, sizeof(port), "%u", c->port);
	if (getaddrinfo(c->host, port, &hints, &ai) || !ai)
		return -ENOENT;
	memcpy(&c->addr, ai->ai_addr, ai->ai_addrlen);
	c->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

int tl_client_open(const char *url, const struct tl_tls_opts *tls, struct tl_client **out)
{
	struct tl_client_opts o = { .tls = tls };

	return tl_client_open_ex(url, &o, out);
}

int tl_client_open_ex(const char *url, const struct tl_client_opts *o, struct tl_client **out)
{
	const struct tl_tls_opts *tls = o ? o->tls : NULL;
	struct tl_client *c;
	int err;

	c = trib_calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = -1;
	c->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : 120000;
	c->connect_timeout_ms = o && o->connect_timeout_ms > 0 ? o->connect_timeout_ms
							       : c->timeout_ms;
	err = tl_url_parse(url, c->host, sizeof(c->host), &c->port);
	if (err)
		goto err_free;
	err = client_resolve(c);
	if (err)
		goto err_free;
	if (tl_url_is_https(url)) {
		err = tl_tls_new(tls, c->host, c->port, &c->tls);
		if (err)
			goto err_free;
	}
	http_parser_settings_init(&c->settings);
	c->settings.on_header_field = on_header_field;
	c->settings.on_header_value = on_header_value;
	c->settings.on_headers_complete = on_headers_complete;
	c->settings.on_body = on_body;
	c->settings.on_message_complete = on_message_complete;
	err = client_connect(c);
	if (err)
		goto err_tls;
	*out = c;
	return 0;

err_tls:
	tl_tls_free(c->tls);
err_free:
	trib_free(c);
	return err;
}

const char *tl_client_strerror(int err)
{
	if (err == -EKEYREJECTED)
		return "the server's TLS certificate was refused";
	return strerror(-err);
}

void tl_client_close(struct tl_client *c)
{
	if (!c)
		return;
	client_disconnect(c);
	tl_tls_free(c->tls);
	trib_free(c->body);
	trib_free(c);
}

int tl_client_timeout_ms(const struct tl_client *c)
{
	return c->timeout_ms;
}

void tl_client_set_timeout(struct tl_client *c, int timeout_ms)
{
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 120000;
	if (c->fd >= 0)
		set_timeouts(c->fd, c->timeout_ms);
}

unsigned tl_client_connects(const struct tl_client *c)
{
	return c->connects;
}
