// SPDX-License-Identifier: MIT
/* Client-reported metrics: the header's rules and sample-weighted means (pure). */
#include "rt_metrics.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool name_ok(const char *k)
{
	size_t len = strlen(k);

	if (len < 1 || len > RT_METRICS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = k[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

int rt_metrics_from_json(const json_t *obj, struct rt_cmetrics *out, char *why, size_t cap)
{
	const char *k;
	json_t *v;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(obj)) {
		snprintf(why, cap, "metrics: a JSON object of names to numbers, e.g. "
			 "{\"loss\": 0.31}");
		return -EINVAL;
	}
	if (json_object_size(obj) > RT_METRICS_MAX) {
		snprintf(why, cap, "metrics: %zu names; at most %d", json_object_size(obj),
			 RT_METRICS_MAX);
		return -EINVAL;
	}
	json_object_foreach((json_t *)obj, k, v) {
		if (!name_ok(k)) {
			snprintf(why, cap, "metrics: name '%.80s%s' is not 1 to %d characters of "
				 "A-Z a-z 0-9 _ . -", k, strlen(k) > 80 ? "..." : "",
				 RT_METRICS_NAME_MAX);
			return -EINVAL;
		}
		/* jansson refuses NaN and Infinity in text; a huge literal parses as inf. */
		if (!json_is_number(v) || !isfinite(json_number_value(v))) {
			snprintf(why, cap, "metrics: '%s' is not a finite number", k);
			return -EINVAL;
		}
		memcpy(out->name[out->n], k, strlen(k) + 1);
		out->val[out->n] = json_number_value(v);
		out->n++;
	}
	return 0;
}

int rt_metrics_parse(const char *text, size_t len, struct rt_cmetrics *out, char *why, size_t cap)
{
	json_error_t jerr;
	json_t *o;
	int err;

	memset(out, 0, sizeof(*out));
	if (len > RT_METRICS_TEXT_MAX) {
		snprintf(why, cap, "X-Tributary-Metrics: %zu bytes; at most %d", len,
			 RT_METRICS_TEXT_MAX);
		return -EINVAL;
	}
	/* Duplicate names would make the mean ambiguous: refused. */
	o = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
	if (!o) {
		snprintf(why, cap, "X-Tributary-Metrics: not JSON (%s at column %d); want an "
			 "object of names to finite numbers, e.g. {\"loss\": 0.31}", jerr.text,
			 jerr.column);
		return -EINVAL;
	}
	err = rt_metrics_from_json(o, out, why, cap);
	json_decref(o);
	if (err && !strncmp(why, "metrics:", 8)) {
		char tmp[256];

		snprintf(tmp, sizeof(tmp), "X-Tributary-Metrics: %s", why + 9);
		snprintf(why, cap, "%s", tmp);
	}
	return err;
}

static int find(const struct rt_msum *s, const char *name)
{
	for (uint32_t i = 0; i < s->n; i++)
		if (!strcmp(s->e[i].name, name))
			return (int)i;
	return -1;
}

uint32_t rt_msum_new_names(const struct rt_msum *s, const struct rt_cmetrics *m)
{
	uint32_t k = 0;

	for (uint32_t i = 0; m && i < m->n; i++)
		k += find(s, m->name[i]) < 0;
	return k;
}

int rt_msum_add(struct rt_msum *s, const struct rt_cmetrics *m, double w)
{
	if (!m || !m->n)
		return 0;
	if (s->n + rt_msum_new_names(s, m) > RT_MSUM_MAX)
		return -E2BIG;
	for (uint32_t i = 0; i < m->n; i++) {
		int k = find(s, m->name[i]);

		if (k < 0) {
			k = (int)s->n++;
			memcpy(s->e[k].name, m->name[i], sizeof(s->e[k].name));
			s->e[k].sw = s->e[k].swx = 0;
		}
		s->e[k].sw += w;
		s->e[k].swx += w * m->val[i];
	}
	s->reports++;
	return 0;
}

json_t *rt_msum_means(const struct rt_msum *s)
{
	json_t *o = json_object();

	for (uint32_t i = 0; o && i < s->n; i++) {
		double mean = s->e[i].sw > 0 ? s->e[i].swx / s->e[i].sw : 0;

		/* Finite values and weights can still overflow a sum: then say null, not inf. */
		if (json_object_set_new(o, s->e[i].name,
					isfinite(mean) ? json_real(mean) : json_null())) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

json_t *rt_msum_to_json(const struct rt_msum *s)
{
	json_t *sums = json_object();

	for (uint32_t i = 0; sums && i < s->n; i++) {
		json_t *pair = json_pack("[f, f]", s->e[i].sw, s->e[i].swx);

		if (!pair || json_object_set_new(sums, s->e[i].name, pair)) {
			json_decref(sums);
			return NULL;
		}
	}
	return sums ? json_pack("{s:I, s:o}", "reports", (json_int_t)s->reports, "sums", sums)
		    : NULL;
}

int rt_msum_from_json(const json_t *o, struct rt_msum *s)
{
	json_t *sums = json_object_get(o, "sums"), *v;
	const char *k;

	memset(s, 0, sizeof(*s));
	if (!json_is_integer(json_object_get(o, "reports")) || !json_is_object(sums) ||
	    json_object_size(sums) > RT_MSUM_MAX)
		return -EINVAL;
	s->reports = (uint32_t)json_integer_value(json_object_get(o, "reports"));
	json_object_foreach(sums, k, v) {
		if (!name_ok(k) || !json_is_array(v) || json_array_size(v) != 2 ||
		    !json_is_number(json_array_get(v, 0)) || !json_is_number(json_array_get(v, 1)))
			return -EINVAL;
		memcpy(s->e[s->n].name, k, strlen(k) + 1);
		s->e[s->n].sw = json_number_value(json_array_get(v, 0));
		s->e[s->n].swx = json_number_value(json_array_get(v, 1));
		s->n++;
	}
	return 0;
}
