// SPDX-License-Identifier: MIT
/* libFuzzer target: rt_http_parse_head and the small parsers on arbitrary bytes. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_http.h"
#include "trib_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* NUL-terminated copy of a field must stay within it. */
static void check_str(const char *s, size_t cap)
{
	if (!memchr(s, '\0', cap))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct rt_http_req req, again;
	const char *why = NULL, *tok;
	size_t head_len = 0, head_len2 = 0;
	char out[64], *str;
	uint64_t u;
	double d;
	int err;

	err = rt_http_parse_head(in, size, &req, &head_len, &why);
	if (err != 0 && err != -EAGAIN && err != -EINVAL && err != -E2BIG)
		abort();
	if ((err == -EINVAL || err == -E2BIG) && (!why || !*why))
		abort();
	if (err == 0) {
		if (head_len == 0 || head_len > size || head_len > RT_HTTP_HEAD_MAX)
			abort();
		check_str(req.path, sizeof(req.path));
		check_str(req.query, sizeof(req.query));
		check_str(req.authorization, sizeof(req.authorization));
		check_str(req.content_type, sizeof(req.content_type));
		check_str(req.x_round, sizeof(req.x_round));
		check_str(req.x_samples, sizeof(req.x_samples));
		check_str(req.expect, sizeof(req.expect));
		/* The head alone parses the same: nothing after it was looked at. */
		if (rt_http_parse_head(in, head_len, &again, &head_len2, &why) != 0 ||
		    head_len2 != head_len || strcmp(again.path, req.path) != 0 ||
		    strcmp(again.query, req.query) != 0 ||
		    again.content_length != req.content_length || again.chunked != req.chunked)
			abort();
		/* One byte short of the head is incomplete. */
		if (rt_http_parse_head(in, head_len - 1, &again, &head_len2, &why) != -EAGAIN)
			abort();
		rt_http_query_get(req.query, "round", out, sizeof(out));
		rt_http_query_get(req.query, "", out, sizeof(out));
		if (rt_http_bearer(&req, &tok) == 0 &&
		    (size_t)(tok - req.authorization) >= sizeof(req.authorization))
			abort();
	}

	str = malloc(size + 1);
	if (!str)
		return 0;
	memcpy(str, data, size);
	str[size] = '\0';
	trib_parse_u64(str, 0, UINT64_MAX, &u);
	rt_parse_double(str, &d);
	rt_http_query_get(str, "a", out, sizeof(out));
	{
		char ebuf[256];
		int n = rt_http_json_error(ebuf, sizeof(ebuf), str);

		if (n != -ENOSPC &&
		    (n < 0 || (size_t)n >= sizeof(ebuf) || strlen(ebuf) != (size_t)n))
			abort();
	}
	free(str);
	return 0;
}
