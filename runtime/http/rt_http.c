// SPDX-License-Identifier: MIT
/* HTTP/1.1 request heads through http_parser (paused before the body), and response heads. */
#include "rt_http.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "trib_parse.h"

/* Longest request target accepted; path and query are checked against their fields after. */
#define URL_MAX 1024
/* Longest header name worth comparing; longer names are never kept. */
#define NAME_MAX_KEPT 32

enum hdr_id {
	HDR_NONE = -1,
	HDR_AUTHORIZATION,
	HDR_CONTENT_TYPE,
	HDR_X_ROUND,
	HDR_X_SAMPLES,
	HDR_EXPECT,
	HDR_IDEMPOTENCY_KEY,
	HDR_CONTENT_LENGTH,
	HDR_TRANSFER_ENCODING,
	HDR_X_METRICS,
	HDR_ACCEPT,
	HDR_COUNT,
};

static const char *const hdr_names[HDR_COUNT] = {
	[HDR_AUTHORIZATION] = "authorization",
	[HDR_CONTENT_TYPE] = "content-type",
	[HDR_X_ROUND] = "x-tributary-round",
	[HDR_X_SAMPLES] = "x-tributary-samples",
	[HDR_EXPECT] = "expect",
	[HDR_IDEMPOTENCY_KEY] = "idempotency-key",
	[HDR_CONTENT_LENGTH] = "content-length",
	[HDR_TRANSFER_ENCODING] = "transfer-encoding",
	[HDR_X_METRICS] = "x-tributary-metrics",
	[HDR_ACCEPT] = "accept",
};

/* State shared by the callbacks of one rt_http_parse_head() call. */
struct head_ctx {
	struct rt_http_req *req;
	char url[URL_MAX];
	size_t url_len;
	char name[NAME_MAX_KEPT];
	size_t name_len; /* may exceed sizeof(name): then no header matches */
	bool in_value;   /* the last callback was on_header_value */
	char *dst;       /* where the current value goes, NULL if it is not kept */
	size_t dst_cap;
	size_t dst_len;
	bool dst_soft;   /* a value too long for dst is dropped, not an error (Accept) */
	char content_length[32];
	unsigned seen;   /* bit per enum hdr_id, to refuse duplicates */
	bool done;
	int err;
	const char *why;
};

static int fail(struct head_ctx *c, int err, const char *why)
{
	c->err = err;
	c->why = why;
	return 1; /* a non-zero return stops http_parser */
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct head_ctx *c = p->data;

	if (len >= sizeof(c->url) - c->url_len)
		return fail(c, -E2BIG, "request target too long");
	memcpy(c->url + c->url_len, at, len);
	c->url_len += len;
	return 0;
}

static bool is_ows(char ch)
{
	return ch == ' ' || ch == '\t';
}

/* Ends the value being received: trims it and NUL-terminates it in place. */
static int end_header(struct head_ctx *c)
{
	size_t start = 0, end = c->dst_len;

	c->in_value = false;
	c->name_len = 0;
	if (!c->dst)
		return 0;
	while (start < end && is_ows(c->dst[start]))
		start++;
	while (end > start && is_ows(c->dst[end - 1]))
		end--;
	if (memchr(c->dst + start, '\0', end - start))
		return fail(c, -EINVAL, "NUL in header value");
	memmove(c->dst, c->dst + start, end - start);
	c->dst[end - start] = '\0';
	c->dst = NULL;
	return 0;
}

/* RFC 9110 token characters, the only ones allowed in a header name. */
static bool is_tchar(unsigned char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct head_ctx *c = p->data;

	if (c->in_value && end_header(c))
		return 1;
	/* Debian's libhttp_parser is built non-strict: it lets spaces into names. */
	for (size_t i = 0; i < len; i++) {
		if (!is_tchar((unsigned char)at[i]))
			return fail(c, -EINVAL, "bad header name");
	}
	/* A name may arrive in pieces: keep appending until a value starts. */
	if (c->name_len < sizeof(c->name))
		memcpy(c->name + c->name_len, at,
		       len < sizeof(c->name) - c->name_len ? len : sizeof(c->name) - c->name_len);
	c->name_len += len;
	return 0;
}

/* Picks where the value of the header just named goes (c->dst stays NULL if nowhere). */
static int begin_value(struct head_ctx *c)
{
	struct rt_http_req *r = c->req;
	enum hdr_id id = HDR_NONE;

	c->in_value = true;
	c->dst = NULL;
	c->dst_len = 0;
	c->dst_soft = false;
	for (int i = 0; i < HDR_COUNT; i++) {
		if (c->name_len == strlen(hdr_names[i]) &&
		    strncasecmp(c->name, hdr_names[i], c->name_len) == 0) {
			id = (enum hdr_id)i;
			break;
		}
	}
	switch (id) {
	case HDR_NONE:
		return 0;
	case HDR_AUTHORIZATION:
		c->dst = r->authorization;
		c->dst_cap = sizeof(r->authorization);
		break;
	case HDR_CONTENT_TYPE:
		c->dst = r->content_type;
		c->dst_cap = sizeof(r->content_type);
		break;
	case HDR_X_ROUND:
		c->dst = r->x_round;
		c->dst_cap = sizeof(r->x_round);
		break;
	case HDR_X_SAMPLES:
		c->dst = r->x_samples;
		c->dst_cap = sizeof(r->x_samples);
		r->has_x_samples = true;
		break;
	case HDR_EXPECT:
		c->dst = r->expect;
		c->dst_cap = sizeof(r->expect);
		break;
	case HDR_IDEMPOTENCY_KEY:
		/* Checked by whoever uses it (1..64 visible ASCII): present even when empty. */
		r->has_idempotency_key = true;
		c->dst = r->idempotency_key;
		c->dst_cap = sizeof(r->idempotency_key);
		break;
	case HDR_CONTENT_LENGTH:
		c->dst = c->content_length;
		c->dst_cap = sizeof(c->content_length);
		break;
	case HDR_TRANSFER_ENCODING:
		r->chunked = true;
		break;
	case HDR_X_METRICS:
		r->has_x_metrics = true;
		c->dst = r->x_metrics;
		c->dst_cap = sizeof(r->x_metrics);
		break;
	case HDR_ACCEPT: {
		/* A list header: several lines are one list (RFC 9110 5.3), so no duplicate check. */
		size_t have = strlen(r->accept);

		if (r->accept_too_long)
			return 0;
		if (have) {
			if (have + 2 >= sizeof(r->accept)) {
				r->accept_too_long = true;
				return 0;
			}
			r->accept[have++] = ',';
			r->accept[have] = '\0';
		}
		c->dst = r->accept + have;
		c->dst_cap = sizeof(r->accept) - have;
		c->dst_soft = true;
		return 0;
	}
	default:
		return 0;
	}
	/* Two values for one kept header make the request ambiguous. */
	if (c->seen & 1u << id)
		return fail(c, -EINVAL, "duplicate header");
	c->seen |= 1u << id;
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct head_ctx *c = p->data;

	if (!c->in_value && begin_value(c))
		return 1;
	if (!c->dst)
		return 0;
	if (len >= c->dst_cap - c->dst_len && c->dst_soft) {
		c->req->accept_too_long = true;
		c->req->accept[0] = '\0';
		c->dst = NULL;
		return 0;
	}
	if (len >= c->dst_cap - c->dst_len) {
		if (c->dst != c->req->x_metrics)
			return fail(c, -E2BIG, "header value too long");
		/* Too long for its limit: the API answers 400 naming it, not 431. */
		c->req->x_metrics_long = true;
		c->dst_len = 0;
		c->dst[0] = '\0';
		c->dst = NULL;
		return 0;
	}
	memcpy(c->dst + c->dst_len, at, len);
	c->dst_len += len;
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct head_ctx *c = p->data;

	if (c->in_value && end_header(c))
		return -1; /* 1 and 2 mean "no body" here; other values stop the parser */
	c->req->method = (enum http_method)p->method;
	c->req->http_minor = p->http_minor;
	c->req->keep_alive = http_should_keep_alive(p);
	c->done = true;
	/* Stop here: the body is the caller's to receive. */
	http_parser_pause(p, 1);
	return 0;
}

/* Split the request target into req->path and req->query. */
static int split_url(struct head_ctx *c)
{
	struct rt_http_req *r = c->req;
	struct http_parser_url u;
	size_t plen, qlen;

	if (memchr(c->url, '\0', c->url_len)) {
		c->why = "NUL in request target";
		return -EINVAL;
	}
	http_parser_url_init(&u);
	if (http_parser_parse_url(c->url, c->url_len, r->method == HTTP_CONNECT, &u)) {
		c->why = "bad request target";
		return -EINVAL;
	}
	if (u.field_set & (1 << UF_PATH)) {
		plen = u.field_data[UF_PATH].len;
		if (plen >= sizeof(r->path)) {
			c->why = "request path too long";
			return -E2BIG;
		}
		memcpy(r->path, c->url + u.field_data[UF_PATH].off, plen);
		r->path[plen] = '\0';
	} else if (u.field_set & (1 << UF_HOST)) {
		strcpy(r->path, "/"); /* "http://host" or CONNECT */
	} else {
		c->why = "bad request target";
		return -EINVAL;
	}
	if (u.field_set & (1 << UF_QUERY)) {
		qlen = u.field_data[UF_QUERY].len;
		if (qlen >= sizeof(r->query)) {
			c->why = "query string too long";
			return -E2BIG;
		}
		memcpy(r->query, c->url + u.field_data[UF_QUERY].off, qlen);
		r->query[qlen] = '\0';
	}
	return 0;
}

/*
 * Checks http_parser leaves out when built non-strict (as Debian builds it):
 * the request line is exactly "METHOD SP target SP HTTP/x.y", every CR is
 * followed by LF, and no header line is folded (RFC 9112 obs-fold). @head is
 * the complete head, @len its length.
 */
static int check_raw_head(const char *head, size_t len, const char **why)
{
	const char *p = head, *end = head + len, *nl, *sp1, *sp2;
	size_t line_len;

	for (const char *q = head; q < end; q++) {
		if (*q == '\r' && (q + 1 == end || q[1] != '\n')) {
			*why = "CR without LF";
			return -EINVAL;
		}
	}
	while (p < end && (*p == '\r' || *p == '\n'))
		p++; /* empty lines before the request line are allowed (RFC 9112 2.2) */
	nl = memchr(p, '\n', (size_t)(end - p));
	if (!nl)
		goto bad_line;
	line_len = (size_t)(nl - p);
	if (line_len && p[line_len - 1] == '\r')
		line_len--;
	sp1 = memchr(p, ' ', line_len);
	if (!sp1 || sp1 == p)
		goto bad_line;
	sp2 = memchr(sp1 + 1, ' ', line_len - (size_t)(sp1 + 1 - p));
	if (!sp2 || sp2 == sp1 + 1 || (size_t)(p + line_len - (sp2 + 1)) != 8 ||
	    memcmp(sp2 + 1, "HTTP/", 5) != 0)
		goto bad_line;
	/* A header line that starts with whitespace would continue the previous one. */
	for (p = nl + 1; p < end; p = nl + 1) {
		if (*p == ' ' || *p == '\t') {
			*why = "obsolete line folding";
			return -EINVAL;
		}
		nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			break;
	}
	return 0;

bad_line:
	*why = "malformed request line";
	return -EINVAL;
}

/* True if @buf may hold a complete head: a line feed followed by an empty line. */
static bool has_blank_line(const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len;

	while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		p++;
		if (p < end && *p == '\n')
			return true;
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
			return true;
	}
	return false;
}

/* Parse as documented in rt_http.h; on failure *req is left partly filled. */
static int parse_head(const char *buf, size_t len, struct rt_http_req *req, size_t *head_len,
		      const char **why)
{
	static const http_parser_settings settings = {
		.on_url = on_url,
		.on_header_field = on_header_field,
		.on_header_value = on_header_value,
		.on_headers_complete = on_headers_complete,
	};
	size_t feed = len < RT_HTTP_HEAD_MAX ? len : RT_HTTP_HEAD_MAX;
	struct head_ctx c = { .req = req };
	enum http_errno herr;
	http_parser p;
	size_t n;
	int err;

	/*
	 * Callers re-parse as bytes trickle in; skipping the parser until a blank
	 * line can be there keeps a slow client from costing O(n^2) parsing.
	 */
	if (!has_blank_line(buf, feed))
		goto incomplete;

	memset(&p, 0, sizeof(p)); /* http_parser_init() reads p.data */
	http_parser_init(&p, HTTP_REQUEST);
	p.data = &c;
	n = http_parser_execute(&p, &settings, buf, feed);
	if (c.err) {
		*why = c.why;
		return c.err;
	}
	herr = HTTP_PARSER_ERRNO(&p);
	if (herr == HPE_HEADER_OVERFLOW) {
		*why = "request head too large";
		return -E2BIG;
	}
	if (herr != HPE_OK && herr != HPE_PAUSED) {
		*why = http_errno_description(herr);
		return -EINVAL;
	}
	if (!c.done)
		goto incomplete;

	/* Paused on the head's final '\n': n is its index. */
	if (herr != HPE_PAUSED || n >= feed || buf[n] != '\n') {
		*why = "internal: parser stopped off the blank line";
		return -EINVAL;
	}
	err = check_raw_head(buf, n + 1, why);
	if (err)
		return err;
	if (p.http_major != 1) {
		*why = "unsupported HTTP version";
		return -EINVAL;
	}
	err = split_url(&c);
	if (err) {
		*why = c.why;
		return err;
	}
	if (c.seen & 1u << HDR_CONTENT_LENGTH) {
		if (trib_parse_u64(c.content_length, 0, UINT64_MAX, &req->content_length)) {
			*why = "bad Content-Length";
			return -EINVAL;
		}
		req->has_content_length = true;
	}
	*head_len = n + 1;
	return 0;

incomplete:
	if (len >= RT_HTTP_HEAD_MAX) {
		*why = "request head too large";
		return -E2BIG;
	}
	return -EAGAIN;
}

/* @buf is borrowed; *why (if set) is a static string. */
int rt_http_parse_head(const char *buf, size_t len, struct rt_http_req *req, size_t *head_len,
		       const char **why)
{
	const char *dummy;
	int err;

	if (!why)
		why = &dummy;
	memset(req, 0, sizeof(*req));
	err = parse_head(buf, len, req, head_len, why);
	if (err)
		memset(req, 0, sizeof(*req));
	return err;
}

static int unhex(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decode the @n bytes at @s into @out (@outlen bytes, caller-owned). */
static int query_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%') {
			int hi, lo;

			if (n - i < 3 || (hi = unhex(s[i + 1])) < 0 || (lo = unhex(s[i + 2])) < 0)
				return -EINVAL;
			ch = (char)(hi << 4 | lo);
			if (ch == '\0')
				return -EINVAL;
			i += 2;
		}
		if (o + 1 >= outlen)
			return -E2BIG;
		out[o++] = ch;
	}
	if (outlen == 0)
		return -E2BIG;
	out[o] = '\0';
	return 0;
}

/* @query and @key are borrowed; @out is the caller's. */
int rt_http_query_get(const char *query, const char *key, char *out, size_t outlen)
{
	size_t klen = strlen(key);
	const char *p = query;

	while (*p) {
		const char *amp = strchr(p, '&');
		size_t plen = amp ? (size_t)(amp - p) : strlen(p);
		const char *eq = memchr(p, '=', plen);
		size_t nlen = eq ? (size_t)(eq - p) : plen;

		if (nlen == klen && memcmp(p, key, klen) == 0) {
			if (!eq)
				return query_decode("", 0, out, outlen);
			return query_decode(eq + 1, plen - nlen - 1, out, outlen);
		}
		if (!amp)
			break;
		p = amp + 1;
	}
	return -ENOENT;
}

static const char *skip_digits(const char *s, size_t *n)
{
	*n = 0;
	while (*s >= '0' && *s <= '9') {
		s++;
		(*n)++;
	}
	return s;
}

/* @s is borrowed. */
int rt_parse_double(const char *s, double *out)
{
	const char *p = s;
	size_t ni, nf, ne;
	char *end;
	double v;

	/* Check the grammar first: strtod also takes spaces, hex, inf and nan. */
	if (*p == '-')
		p++;
	p = skip_digits(p, &ni);
	nf = 0;
	if (*p == '.')
		p = skip_digits(p + 1, &nf);
	if (ni + nf == 0)
		return -EINVAL;
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		p = skip_digits(p, &ne);
		if (ne == 0)
			return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (*end || !isfinite(v))
		return -EINVAL;
	*out = v;
	return 0;
}

/* Returns a static string. */
const char *rt_http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Unknown";
	}
}

/* @buf is the caller's; @content_type and @extra_headers are borrowed. */
int rt_http_format_head(char *buf, size_t cap, int status, const char *content_type,
			uint64_t content_length, bool keep_alive, const char *extra_headers)
{
	bool has_body_len = status >= 200 && status != 204 && status != 304;
	size_t off = 0;
	int n;

	if (status < 100 || status > 999)
		return -EINVAL;
	if (content_type && strpbrk(content_type, "\r\n"))
		return -EINVAL;

#define APPEND(...)                                                          \
	do {                                                                 \
		n = snprintf(buf + off, cap - off, __VA_ARGS__);             \
		if (n < 0 || (size_t)n >= cap - off)                         \
			return -ENOSPC;                                      \
		off += (size_t)n;                                            \
	} while (0)

	if (cap == 0)
		return -ENOSPC;
	APPEND("HTTP/1.1 %d %s\r\n", status, rt_http_reason(status));
	if (content_type)
		APPEND("Content-Type: %s\r\n", content_type);
	if (has_body_len)
		APPEND("Content-Length: %llu\r\n", (unsigned long long)content_length);
	APPEND("Connection: %s\r\n", keep_alive ? "keep-alive" : "close");
	if (extra_headers)
		APPEND("%s", extra_headers);
	APPEND("\r\n");
#undef APPEND
	if (off > INT32_MAX)
		return -ENOSPC;
	return (int)off;
}

/* Length of the valid UTF-8 sequence at @s (@n bytes left), 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t need;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		need = 1;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		need = 2;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		need = 3;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n - 1 < need)
		return 0;
	for (size_t j = 1; j <= need; j++) {
		if ((s[j] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[j] & 0x3f);
	}
	if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need + 1;
}

/* @buf is the caller's; @msg is borrowed. */
int rt_http_json_error(char *buf, size_t cap, const char *msg)
{
	static const char prefix[] = "{\"error\":\"", suffix[] = "\"}";
	const unsigned char *s = (const unsigned char *)msg;
	size_t off = 0, left = strlen(msg);
	char esc[8];

#define PUT(src, len)                                                        \
	do {                                                                 \
		if ((len) >= cap - off)                                      \
			return -ENOSPC;                                      \
		memcpy(buf + off, (src), (len));                             \
		off += (len);                                                \
	} while (0)

	if (cap == 0)
		return -ENOSPC;
	PUT(prefix, sizeof(prefix) - 1);
	while (left) {
		size_t ulen = utf8_len(s, left);

		if (*s == '"' || *s == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*s;
			PUT(esc, 2);
		} else if (*s < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", *s);
			PUT(esc, 6);
		} else if (ulen == 0) {
			PUT("\xef\xbf\xbd", 3); /* U+FFFD for a byte that is not UTF-8 */
			ulen = 1;
		} else {
			PUT(s, ulen);
		}
		if (ulen == 0)
			ulen = 1;
		s += ulen;
		left -= ulen;
	}
	PUT(suffix, sizeof(suffix) - 1);
#undef PUT
	buf[off] = '\0';
	if (off > INT32_MAX)
		return -ENOSPC;
	return (int)off;
}

/* *token is borrowed from @req. */
int rt_http_bearer(const struct rt_http_req *req, const char **token)
{
	const char *a = req->authorization;

	if (strncasecmp(a, "Bearer", 6) != 0 || !is_ows(a[6]))
		return -ENOENT;
	a += 6;
	while (is_ows(*a))
		a++;
	if (!*a)
		return -ENOENT;
	*token = a;
	return 0;
}
