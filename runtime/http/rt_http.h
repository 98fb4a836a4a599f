/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 for the gateway: parse a request head (never the body), format a response head. */
#ifndef RT_HTTP_H
#define RT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

/* A request head longer than this is refused (431). */
#define RT_HTTP_HEAD_MAX (16 * 1024)

/*
 * The parts of a request head the gateway uses. Strings are NUL-terminated,
 * empty when the header is absent, and hold the value with surrounding
 * whitespace removed. Other headers are ignored.
 */
struct rt_http_req {
	enum http_method method;
	char path[512];  /* request-target path, not percent-decoded */
	char query[512]; /* without '?', not decoded; see rt_http_query_get() */
	uint64_t content_length;
	bool has_content_length;
	bool chunked;    /* Transfer-Encoding present: body not length-delimited */
	bool keep_alive; /* http_should_keep_alive(): version and Connection */
	char authorization[256];
	char content_type[128];
	char x_round[32];   /* X-Tributary-Round */
	char x_samples[32]; /* X-Tributary-Samples */
	bool has_x_samples; /* X-Tributary-Samples was sent, even empty (then it is a 400) */
	char expect[32];
	/* Idempotency-Key (draft-ietf-httpapi-idempotency-key-header), unchecked; room for a
	 * too-long one, so that the API can say what is wrong with it */
	char idempotency_key[256];
	bool has_idempotency_key;
	/* X-Tributary-Metrics: room past its 1 KiB limit so that the API can say it is too long;
	 * a longer value sets x_metrics_long instead of failing the head */
	char x_metrics[1088];
	bool has_x_metrics, x_metrics_long;
	unsigned http_minor; /* HTTP/1.x; other major versions are refused */
	/* Accept (GET /model's format); several Accept lines are joined with ','. Longer than
	 * the field: accept_too_long, not an error (only the model's GET reads it) */
	char accept[256];
	bool accept_too_long;
};

/*
 * Parse the request head at the start of @buf (@len bytes received so far;
 * borrowed, only read). The body and anything after it are not looked at, so
 * the caller can receive the body itself (into shared memory). Each call
 * parses from the start: call again with more bytes after -EAGAIN.
 * Returns 0 with *req filled and *head_len = bytes up to and including the
 * blank line; -EAGAIN if the head is not complete yet; -EINVAL if it is
 * malformed (*why is a static message); -E2BIG if a kept header or the
 * request target is too long for its field, or no head ends within
 * RT_HTTP_HEAD_MAX bytes. Stricter than Debian's non-strict http_parser: a
 * duplicated kept header, a header name that is not a token, a CR without
 * LF, obs-fold, or a request line other than "METHOD SP target SP HTTP/1.x"
 * is -EINVAL. On failure *req is zeroed.
 */
int rt_http_parse_head(const char *buf, size_t len, struct rt_http_req *req, size_t *head_len,
		       const char **why);

/*
 * Find @key in @query ("a=1&b=2", no '?') and copy its percent-decoded value
 * ('+' is a space) into @out (@outlen bytes, caller-owned, NUL-terminated).
 * The first occurrence wins; a key without '=' has the empty value.
 * Returns 0, -ENOENT (absent), -E2BIG (value too long) or -EINVAL (bad
 * escape or a decoded NUL).
 */
int rt_http_query_get(const char *query, const char *key, char *out, size_t outlen);

/*
 * Strict decimal real: optional '-', digits, optional fraction and exponent,
 * nothing else (no spaces, hex, inf or nan); must be finite. 0 or -EINVAL.
 */
int rt_parse_double(const char *s, double *out);

/* Reason phrase of @status (static string), "Unknown" if it is not one the gateway uses. */
const char *rt_http_reason(int status);

/*
 * Format a response head into @buf (@cap bytes, caller-owned): status line,
 * Content-Type (if @content_type is not NULL), Content-Length (except for
 * 1xx, 204 and 304), Connection: keep-alive or close, @extra_headers
 * (borrowed, already-formatted "Name: value\r\n" lines, or NULL), blank line.
 * Returns the length written (also NUL-terminated), -ENOSPC if it does not
 * fit, or -EINVAL (status outside 100..999, CR or LF in @content_type).
 */
int rt_http_format_head(char *buf, size_t cap, int status, const char *content_type,
			uint64_t content_length, bool keep_alive, const char *extra_headers);

/*
 * Write {"error":"<msg>"} into @buf (@cap bytes, caller-owned), JSON-escaped;
 * bytes that are not valid UTF-8 become U+FFFD. @msg is borrowed.
 * Returns the length written (also NUL-terminated) or -ENOSPC.
 */
int rt_http_json_error(char *buf, size_t cap, const char *msg);

/*
 * *token points into req->authorization (borrowed, lives as long as @req)
 * after the "Bearer" scheme (case-insensitive) and its spaces.
 * Returns 0, or -ENOENT if there is no Authorization header, another scheme
 * or an empty token.
 */
int rt_http_bearer(const struct rt_http_req *req, const char **token);

#endif
