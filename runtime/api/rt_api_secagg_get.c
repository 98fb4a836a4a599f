// SPDX-License-Identifier: MIT
/*
 * Secure aggregation's GET stages (issue 19): GET .../secagg/{keys,shares,unmask} tells a client
 * what it needs for its next stage once the round is there ({"ready": false} before): its
 * neighbours' public keys, the ciphertexts routed to it, the reveals asked of it. A local
 * connection's ready answer is written as text (rt_api_secagg_fast.c says why not jansson); a
 * cluster peer's stays JSON (rt_agent_secagg.c embeds it in its reply). The POST stages are
 * rt_api_secagg.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api_priv.h"
#include "rt_api.h"
#include "rt_secagg.h"
#include "trib_alloc.h"
#include "trib_time.h"

/*
 * Hex of @n <= RT_SECAGG_CT_BYTES bytes as a JSON string, for the JSON answers (a cluster
 * peer's). On the stack and without jansson's UTF-8 scan (hex is ASCII).
 */
static json_t *hex_json(const uint8_t *p, size_t n)
{
	static const char dig[] = "0123456789abcdef";
	char s[2 * RT_SECAGG_CT_BYTES];

	if (n > RT_SECAGG_CT_BYTES)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		s[2 * i] = dig[p[i] >> 4];
		s[2 * i + 1] = dig[p[i] & 15];
	}
	return json_stringn_nocheck(s, 2 * n);
}

/* A number for an answer's text, as jansson writes it (%.17g, a real keeps its ".0"). */
static void text_num(struct rt_sa_text *t, const char *key, double v, bool real)
{
	char b[64];
	int n = snprintf(b, sizeof(b), ",\"%s\":%.17g", key, v);

	if (real && n > 0 && (size_t)n < sizeof(b) - 2 && !strpbrk(b + strlen(key) + 4, ".en"))
		memcpy(b + n, ".0", 3);
	rt__sa_text_put(t, b);
}

/*
 * A ready GET's answer as text (rt_api_secagg_fast.c says why not jansson): the same fields in
 * the same order as rt__sa_get's JSON. 0 with @res->text, or -ENOMEM.
 */
static int sa_get_text(struct rt_sa_live *L, uint32_t u, enum rt_secagg_stage st,
		       enum rt_secagg_stage need, double deadline_s, uint32_t cnt,
		       const uint32_t *ids, const uint8_t *const *a, const uint8_t *const *b,
		       const enum rt_secagg_kind *kind, struct rt_api_sa_res *res)
{
	size_t each = need == RT_SECAGG_SHARE ? 40 + 4 * 32 + 20
		    : need == RT_SECAGG_MASKED ? 30 + 2 * RT_SECAGG_CT_BYTES : 40;
	struct rt_sa_text t;
	char num[48];

	if (rt__sa_text_init(&t, 256 + (size_t)cnt * each))
		return -ENOMEM;
	rt__sa_text_put(&t, "{\"stage\":\"");
	rt__sa_text_put(&t, rt_secagg_stage_name(st));
	rt__sa_text_put(&t, "\"");
	text_num(&t, "round", L->round, false);
	text_num(&t, "index", u, false);
	text_num(&t, "deadline_s", deadline_s, true);
	rt__sa_text_put(&t, need == RT_SECAGG_SHARE ? ",\"neighbours\":["
			: need == RT_SECAGG_MASKED ? ",\"shares\":[" : ",\"reveal\":[");
	for (uint32_t i = 0; i < cnt; i++) {
		snprintf(num, sizeof(num), "%s{\"%s\":%u,", i ? "," : "",
			 need == RT_SECAGG_MASKED ? "from" : "index", ids[i]);
		rt__sa_text_put(&t, num);
		if (need == RT_SECAGG_SHARE) {
			rt__sa_text_put(&t, "\"c_pk\":");
			rt__sa_text_hex(&t, a[i], 32);
			rt__sa_text_put(&t, ",\"s_pk\":");
			rt__sa_text_hex(&t, b[i], 32);
		} else if (need == RT_SECAGG_MASKED) {
			rt__sa_text_put(&t, "\"ct\":");
			rt__sa_text_hex(&t, a[i], RT_SECAGG_CT_BYTES);
		} else {
			rt__sa_text_put(&t, kind[i] == RT_SECAGG_REVEAL_SELF ? "\"kind\":\"self\""
					: "\"kind\":\"secret\"");
		}
		rt__sa_text_put(&t, "}");
	}
	rt__sa_text_put(&t, "],\"ready\":true}");
	if (!rt__sa_text_ok(&t)) {
		trib_free(t.s);
		return -ENOMEM;
	}
	res->status = 200;
	res->text = t.s;
	res->text_len = t.len;
	return 0;
}

/*
 * GET .../secagg/{keys,shares,unmask}: what the caller needs for the next stage, once the round
 * is there ({"ready": false} before). @text: the ready answer as text (a local connection's),
 * else as JSON (a cluster peer's, rt_agent_secagg.c).
 */
void rt__sa_get(struct rt_job *j, const char *client, const char *what, bool text,
		   struct rt_api_sa_res *res)
{
	struct rt_sa_live *L;
	uint32_t u = rt__sa_who(j, client), cnt;
	enum rt_secagg_stage st, need;
	uint32_t ids[RT_SECAGG_MAX_NEIGHBOURS];
	const uint8_t *a[RT_SECAGG_MAX_NEIGHBOURS], *b[RT_SECAGG_MAX_NEIGHBOURS];
	enum rt_secagg_kind k[RT_SECAGG_MAX_NEIGHBOURS];
	double deadline_s;
	json_t *o, *arr;
	bool in;

	if (u == UINT32_MAX) {
		rt__sa_gone(res, j);
		return;
	}
	L = j->sa_live;
	st = rt_secagg_stage(L->r);
	need = !strcmp(what, "keys") ? RT_SECAGG_SHARE : !strcmp(what, "shares")
								 ? RT_SECAGG_MASKED
								 : RT_SECAGG_UNMASK;
	deadline_s = L->deadline_ns > trib_now_ns()
			     ? (double)(L->deadline_ns - trib_now_ns()) / 1e9 : 0.0;
	cnt = 0;
	in = true;
	if (st == need && need == RT_SECAGG_SHARE) {
		const uint32_t *nb;
		uint32_t m = rt_secagg_neighbours(L->r, u, &nb);

		/* The neighbours that advertised (those that did not are dropped already). */
		for (uint32_t i = 0; i < m && i < RT_SECAGG_MAX_NEIGHBOURS; i++)
			if (!rt_secagg_keys(L->r, nb[i], &a[cnt], &b[cnt]))
				ids[cnt++] = nb[i];
		in = m > 0;
	} else if (st == need && need == RT_SECAGG_MASKED) {
		cnt = rt_secagg_inbox(L->r, u, ids, a, RT_SECAGG_MAX_NEIGHBOURS);
		in = cnt > 0;
	} else if (st == need) {
		cnt = rt_secagg_reveal_list(L->r, u, ids, k, RT_SECAGG_MAX_NEIGHBOURS);
		in = cnt > 0;
	}
	if (!in) {
		/* Out of the round: no neighbours, inbox or list is what being dropped is. */
		rt__sa_refuse(res, j, -EPERM);
		return;
	}
	if (st == need && text) {
		if (sa_get_text(L, u, st, need, deadline_s, cnt, ids, a, b, k, res))
			rt__sa_err(res, 500, "out of memory", -1, NULL);
		return;
	}
	o = json_pack("{s:s, s:I, s:I, s:f}", "stage", rt_secagg_stage_name(st), "round",
		      (json_int_t)L->round, "index", (json_int_t)u, "deadline_s", deadline_s);
	arr = json_array();
	if (!o || !arr) {
		json_decref(o);
		json_decref(arr);
		rt__sa_err(res, 500, "out of memory", -1, NULL);
		return;
	}
	if (st != need) {
		json_decref(arr);
		json_object_set_new(o, "ready", json_false());
		rt__sa_ok(res, o);
		return;
	}
	for (uint32_t i = 0; i < cnt; i++) {
		if (need == RT_SECAGG_SHARE)
			json_array_append_new(arr, json_pack("{s:I, s:o, s:o}", "index",
							     (json_int_t)ids[i], "c_pk",
							     hex_json(a[i], 32), "s_pk",
							     hex_json(b[i], 32)));
		else if (need == RT_SECAGG_MASKED)
			json_array_append_new(arr, json_pack("{s:I, s:o}", "from",
							     (json_int_t)ids[i], "ct",
							     hex_json(a[i], RT_SECAGG_CT_BYTES)));
		else
			json_array_append_new(
			    arr, json_pack("{s:I, s:s}", "index", (json_int_t)ids[i], "kind",
					   k[i] == RT_SECAGG_REVEAL_SELF ? "self" : "secret"));
	}
	json_object_set_new(o, need == RT_SECAGG_SHARE ? "neighbours" : need == RT_SECAGG_MASKED
			    ? "shares" : "reveal", arr);
	json_object_set_new(o, "ready", json_true());
	rt__sa_ok(res, o);
}
