// SPDX-License-Identifier: MIT
/* X-Tributary-Metrics' rules and the sample-weighted means (runtime/node/rt_metrics.c). */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rt_metrics.h"

static int parse(const char *s, struct rt_cmetrics *m, char *why)
{
	return rt_metrics_parse(s, strlen(s), m, why, 320);
}

Test(metrics, good_headers)
{
	struct rt_cmetrics m;
	char why[320];

	cr_assert_eq(parse("{\"loss\": 0.31, \"accuracy\": 9e-1, \"n.a-b_c\": -2}", &m, why), 0,
		     "%s", why);
	cr_assert_eq(m.n, 3);
	cr_assert_str_eq(m.name[0], "loss");
	cr_assert_float_eq(m.val[0], 0.31, 1e-15);
	cr_assert_float_eq(m.val[1], 0.9, 1e-15);
	cr_assert_float_eq(m.val[2], -2.0, 0);
	cr_assert_eq(parse("{}", &m, why), 0);
	cr_assert_eq(m.n, 0);
}

Test(metrics, bad_headers_name_the_problem)
{
	static const char *const bad[] = {
		"", "loss=1", "[1]", "{\"a\": \"1\"}", "{\"a\": null}", "{\"a\": true}",
		"{\"a\": NaN}", "{\"a\": Infinity}", "{\"a\": -Infinity}", "{\"a\": 1e999}",
		"{\"\": 1}", "{\"a b\": 1}", "{\"a\\\"\": 1}", "{\"a\": {\"b\": 1}}", "{\"a\": [1]}",
		"{\"a\": 1, \"a\": 2}", "{\"a\": 1} x", "{\"\\u00e9\": 1}",
	};
	struct rt_cmetrics m;
	char why[320], name[80], big[2048];
	int k;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		cr_assert_eq(parse(bad[i], &m, why), -EINVAL, "accepted %s", bad[i]);
		cr_assert(strstr(why, "X-Tributary-Metrics") != NULL, "%s: %s", bad[i], why);
	}
	/* 17 names */
	k = snprintf(big, sizeof(big), "{");
	for (int i = 0; i < 17; i++)
		k += snprintf(big + k, sizeof(big) - k, "%s\"m%d\": %d", i ? ", " : "", i, i);
	snprintf(big + k, sizeof(big) - k, "}");
	cr_assert_eq(parse(big, &m, why), -EINVAL);
	cr_assert(strstr(why, "at most 16") != NULL, "%s", why);
	/* 64 characters is a name, 65 is not */
	memset(name, 'n', 64);
	name[64] = '\0';
	snprintf(big, sizeof(big), "{\"%s\": 1}", name);
	cr_assert_eq(parse(big, &m, why), 0, "%s", why);
	snprintf(big, sizeof(big), "{\"%sn\": 1}", name);
	cr_assert_eq(parse(big, &m, why), -EINVAL);
	/* 1 KiB: the text's length, whatever it holds */
	memset(big, ' ', sizeof(big));
	memcpy(big, "{\"a\": 1}", 8);
	cr_assert_eq(rt_metrics_parse(big, 1024, &m, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(rt_metrics_parse(big, 1025, &m, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "1025 bytes") != NULL, "%s", why);
}

/* sum w x / sum w per name, over the reports that carry it. */
Test(metrics, weighted_means)
{
	struct rt_cmetrics a, b, c;
	struct rt_msum s;
	char why[320];
	json_t *o, *back;
	struct rt_msum s2;

	memset(&s, 0, sizeof(s));
	cr_assert_eq(parse("{\"loss\": 0.9, \"acc\": 0.5}", &a, why), 0);
	cr_assert_eq(parse("{\"loss\": 0.3}", &b, why), 0);
	cr_assert_eq(parse("{\"acc\": 0.25, \"f1\": 1}", &c, why), 0);
	cr_assert_eq(rt_msum_add(&s, &a, 10), 0);
	cr_assert_eq(rt_msum_add(&s, &b, 30), 0);
	cr_assert_eq(rt_msum_add(&s, &c, 2), 0);
	cr_assert_eq(s.reports, 3);
	o = rt_msum_means(&s);
	cr_assert_float_eq(json_real_value(json_object_get(o, "loss")), (0.9 * 10 + 0.3 * 30) / 40,
			   1e-15);
	cr_assert_float_eq(json_real_value(json_object_get(o, "acc")), (0.5 * 10 + 0.25 * 2) / 12,
			   1e-15);
	cr_assert_float_eq(json_real_value(json_object_get(o, "f1")), 1.0, 1e-15);
	json_decref(o);
	/* The stored form gives the same sums back. */
	o = rt_msum_to_json(&s);
	cr_assert_eq(rt_msum_from_json(o, &s2), 0);
	cr_assert_eq(s2.n, s.n);
	cr_assert_eq(s2.reports, 3);
	for (uint32_t i = 0; i < s.n; i++) {
		cr_assert_str_eq(s2.e[i].name, s.e[i].name);
		cr_assert_eq(s2.e[i].sw, s.e[i].sw);
		cr_assert_eq(s2.e[i].swx, s.e[i].swx);
	}
	json_decref(o);
	back = json_pack("{s:i, s:{s:[s]}}", "reports", 1, "sums", "x", "bad");
	cr_assert_eq(rt_msum_from_json(back, &s2), -EINVAL);
	json_decref(back);
}

Test(metrics, the_name_cap_leaves_the_sums_unchanged)
{
	struct rt_msum s;
	struct rt_cmetrics m;
	char why[320], text[1024];

	memset(&s, 0, sizeof(s));
	for (int r = 0; r < RT_MSUM_MAX / RT_METRICS_MAX; r++) {
		int k = snprintf(text, sizeof(text), "{");

		for (int i = 0; i < RT_METRICS_MAX; i++)
			k += snprintf(text + k, sizeof(text) - k, "%s\"r%d_%d\": 1", i ? "," : "",
				      r, i);
		snprintf(text + k, sizeof(text) - k, "}");
		cr_assert_eq(parse(text, &m, why), 0, "%s", why);
		cr_assert_eq(rt_msum_add(&s, &m, 1), 0);
	}
	cr_assert_eq(s.n, RT_MSUM_MAX);
	cr_assert_eq(parse("{\"r0_0\": 3, \"new\": 1}", &m, why), 0);
	cr_assert_eq(rt_msum_new_names(&s, &m), 1);
	cr_assert_eq(rt_msum_add(&s, &m, 1), -E2BIG);
	cr_assert_eq(s.e[0].sw, 1, "unchanged");
	cr_assert_eq(s.reports, RT_MSUM_MAX / RT_METRICS_MAX);
	cr_assert_eq(parse("{\"r0_0\": 3}", &m, why), 0);
	cr_assert_eq(rt_msum_add(&s, &m, 1), 0, "known names still fold");
	cr_assert_eq(s.e[0].swx, 4);
}

#include "rt_http.h"

/* The head keeps the header (room past 1 KiB) and marks a longer one instead of a 431. */
Test(metrics, the_head_keeps_or_marks_the_header)
{
	static char head[8192], val[4096];
	struct rt_http_req req;
	const char *why = NULL;
	size_t hl = 0;

	memset(val, 'x', 1500);
	val[1500] = '\0';
	snprintf(head, sizeof(head), "POST /v1/jobs/a/updates HTTP/1.1\r\nHost: h\r\n"
		 "X-Tributary-Metrics:  {\"a\": 1}  \r\n\r\n");
	cr_assert_eq(rt_http_parse_head(head, strlen(head), &req, &hl, &why), 0);
	cr_assert(req.has_x_metrics && !req.x_metrics_long);
	cr_assert_str_eq(req.x_metrics, "{\"a\": 1}");
	snprintf(head, sizeof(head), "POST /v1/jobs/a/updates HTTP/1.1\r\n"
		 "X-Tributary-Metrics: %s\r\n\r\n", val);
	cr_assert_eq(rt_http_parse_head(head, strlen(head), &req, &hl, &why), 0);
	cr_assert(req.has_x_metrics && req.x_metrics_long, "1500 bytes: marked, not refused");
	snprintf(head, sizeof(head), "POST /v1/jobs/a/updates HTTP/1.1\r\n"
		 "X-Tributary-Metrics: {}\r\nX-Tributary-Metrics: {}\r\n\r\n");
	cr_assert_eq(rt_http_parse_head(head, strlen(head), &req, &hl, &why), -EINVAL,
		     "a duplicate is ambiguous");
}
