// SPDX-License-Identifier: MIT
/*
 * Secure aggregation's stage bodies, checked (issue 19): what a hostile or broken client sends is
 * refused with a 400 that names the field, its value and what is allowed, and changes nothing
 * (the round's state machine, runtime/node/rt_secagg.c, validates a message whole before keeping
 * any of it). The JSON is parsed strictly: duplicate keys and unknown fields are refused (a key
 * given twice could mean either value). When the state machine refuses a well-formed message
 * (-EINVAL: not the caller's neighbours, one twice, a share at another point), the diagnosis here
 * says which entry and why, from the round's own lists. The stages are rt_api_secagg.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api_priv.h"
#include "rt_secagg.h"
#include "trib_json.h"
#include "trib_shamir.h"

int rt__sa_parse(const void *body, size_t len, const char *const *known, json_t **out, int *status,
		 char *msg, size_t cap)
{
	json_error_t jerr;
	const char *key;
	json_t *o = NULL, *v;
	int err = trib_json_loadb(body, len, JSON_REJECT_DUPLICATES, &o, &jerr);

	*out = NULL;
	*status = 400;
	if (err == -ENOMEM) {
		*status = 500;
		snprintf(msg, cap, "out of memory");
		return -ENOMEM;
	}
	if (err) {
		snprintf(msg, cap, "body is not JSON: %.120s (line %d, column %d)", jerr.text,
			 jerr.line, jerr.column);
		return -EINVAL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		snprintf(msg, cap, "body is not a JSON object");
		return -EINVAL;
	}
	json_object_foreach(o, key, v) {
		size_t i;

		for (i = 0; known[i] && strcmp(known[i], key); i++)
			;
		if (!known[i]) {
			snprintf(msg, cap, "%.48s: unknown field (allowed: %s%s%s)", key, known[0],
				 known[1] ? ", " : "", known[1] ? known[1] : "");
			json_decref(o);
			return -EINVAL;
		}
	}
	*out = o;
	return 0;
}

/* A JSON value, shown short in a message ("a string of 10 characters", "an array", "42"). */
static void shown(const json_t *v, char *out, size_t cap)
{
	if (!v)
		snprintf(out, cap, "missing");
	else if (json_is_string(v))
		snprintf(out, cap, "a string of %zu characters", json_string_length(v));
	else if (json_is_integer(v))
		snprintf(out, cap, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(out, cap, "%g", json_real_value(v));
	else
		snprintf(out, cap, "%s", json_is_object(v) ? "an object" : json_is_array(v)
					 ? "an array" : json_is_null(v) ? "null" : "a boolean");
}

int rt__sa_hex(const json_t *o, const char *key, const char *path, uint8_t *out, size_t n,
	       char *msg, size_t cap)
{
	const json_t *v = json_object_get(o, key);
	const char *s = json_string_value(v);
	char got[64];

	if (s && json_string_length(v) == 2 * n) {
		size_t i;

		for (i = 0; i < 2 * n; i++) {
			int c = s[i], d = c >= '0' && c <= '9' ? c - '0'
					  : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;

			if (d < 0)
				break;
			out[i / 2] = (uint8_t)(i % 2 ? out[i / 2] | d : d << 4);
		}
		if (i == 2 * n)
			return 0;
		snprintf(got, sizeof(got), "character %zu is not a lowercase hex digit", i);
	} else {
		shown(v, got, sizeof(got));
	}
	snprintf(msg, cap, "%s%s: %s; allowed: %zu lowercase hex digits (%zu bytes)", path, key,
		 got, 2 * n, n);
	return -EINVAL;
}

int rt__sa_index(const json_t *o, const char *key, const char *path, uint32_t *out, char *msg,
		 size_t cap)
{
	const json_t *v = json_object_get(o, key);
	char got[64];

	if (json_is_integer(v) && json_integer_value(v) >= 0 &&
	    json_integer_value(v) < (json_int_t)RT_SECAGG_MAX_CLIENTS) {
		*out = (uint32_t)json_integer_value(v);
		return 0;
	}
	shown(v, got, sizeof(got));
	snprintf(msg, cap, "%s%s: %s; allowed: a client index, 0 to %u (from GET .../secagg/keys)",
		 path, key, got, RT_SECAGG_MAX_CLIENTS - 1);
	return -EINVAL;
}

int rt__sa_entry(const json_t *e, size_t i, const char *arr, const char *const *known, char *path,
		 size_t path_cap, char *msg, size_t cap)
{
	const char *key;
	json_t *v;

	snprintf(path, path_cap, "%s[%zu].", arr, i);
	if (!json_is_object(e)) {
		snprintf(msg, cap, "%s[%zu]: not an object {\"%s\", \"%s\"}", arr, i, known[0],
			 known[1]);
		return -EINVAL;
	}
	json_object_foreach((json_t *)e, key, v) {
		if (strcmp(key, known[0]) && strcmp(key, known[1])) {
			snprintf(msg, cap, "%s%.48s: unknown field (allowed: %s, %s)", path, key,
				 known[0], known[1]);
			return -EINVAL;
		}
	}
	return 0;
}

/* Up to 12 of @ids[0..n) as "[a, b, ...]" into @out. */
static void id_list(const uint32_t *ids, uint32_t n, char *out, size_t cap)
{
	size_t o = 0;

	out[0] = '\0';
	for (uint32_t i = 0; i < n && i < 12 && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%u", i ? ", " : "[", ids[i]);
	if (o < cap)
		snprintf(out + o, cap - o, "%s]", n > 12 ? ", ..." : "");
}

/* Where @to[0..cnt) first repeats an earlier entry, or cnt. O(cnt^2), cnt <= 254. */
static uint32_t first_repeat(const uint32_t *to, uint32_t cnt)
{
	for (uint32_t i = 0; i < cnt; i++)
		for (uint32_t j = 0; j < i; j++)
			if (to[j] == to[i])
				return i;
	return cnt;
}

void rt__sa_share_why(const struct rt_secagg *r, uint32_t u, const uint32_t *to, uint32_t cnt,
		      char *msg, size_t cap)
{
	const uint32_t *ids;
	uint32_t k = rt_secagg_neighbours(r, u, &ids), i;
	char list[96];

	id_list(ids, k, list, sizeof(list));
	for (i = 0; i < cnt; i++) {
		uint32_t j;

		for (j = 0; j < k && ids[j] != to[i]; j++)
			;
		if (j == k) {
			snprintf(msg, cap, "shares[%u].to %u: %s; allowed: your neighbours %s (GET "
				 ".../secagg/keys), one share each", i, to[i],
				 to[i] == u ? "that is you" : "not one of your neighbours", list);
			return;
		}
	}
	i = first_repeat(to, cnt);
	if (i < cnt) {
		snprintf(msg, cap, "shares[%u].to %u: a second share for that neighbour; allowed: "
			 "one share for each of %s", i, to[i], list);
		return;
	}
	snprintf(msg, cap, "shares: %u entries; allowed: exactly one for each of your %u "
		 "neighbours %s", cnt, k, list);
}

void rt__sa_unmask_why(const struct rt_secagg *r, uint32_t u, const uint32_t *v,
		       const uint8_t *const *share, uint32_t cnt, char *msg, size_t cap)
{
	uint32_t want[RT_SECAGG_MAX_NEIGHBOURS], i;
	enum rt_secagg_kind kind[RT_SECAGG_MAX_NEIGHBOURS];
	uint32_t k = rt_secagg_reveal_list(r, u, want, kind, RT_SECAGG_MAX_NEIGHBOURS);
	char list[96];

	id_list(want, k, list, sizeof(list));
	for (i = 0; i < cnt; i++) {
		struct trib_shamir_share s;
		uint32_t j;

		for (j = 0; j < k && want[j] != v[i]; j++)
			;
		if (j == k) {
			snprintf(msg, cap, "reveals[%u].index %u: not asked of you; allowed: the "
				 "list of GET .../secagg/unmask %s, once each", i, v[i], list);
			return;
		}
		if (trib_shamir_decode(share[i], RT_SECAGG_SECRET_BYTES, &s)) {
			snprintf(msg, cap, "reveals[%u].share: not a share (its point must be 1 to "
				 "2^31 - 1 and each value below 2^61 - 1)", i);
			return;
		}
		if (s.x != u + 1) {
			snprintf(msg, cap, "reveals[%u].share: a share at point %u; allowed: yours, "
				 "your index + 1 = %u", i, s.x, u + 1);
			return;
		}
	}
	i = first_repeat(v, cnt);
	if (i < cnt) {
		snprintf(msg, cap, "reveals[%u].index %u: a second reveal for that client; allowed: "
			 "one for each of %s", i, v[i], list);
		return;
	}
	snprintf(msg, cap, "reveals: %u entries; allowed: exactly the %u of GET "
		 ".../secagg/unmask %s", cnt, k, list);
}
