// SPDX-License-Identifier: MIT
/* runtime/node/rt_secagg_resume.c: a secure round's state log replayed by a new node on the same
 * data dir (the same stage, graph and routed ciphertexts; retries answered as the first time);
 * a log that does not replay fails the round with a status naming why. */
#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_priv.h"
#include "rt_api.h"
#include "rt_secagg.h"
#include "rt_secagg_log.h"
#include "rt_test_node.h"
#include "shm_arena_file.h"
#include "trib_alloc.h"
#include "trib_secagg_crypto.h"

#define CPR 4
static const char job_body[] =
	"{\"name\":\"sec\",\"clients_per_round\":4,\"client_auth\":\"required\","
	"\"round_timeout_s\":60,\"tensors\":[{\"name\":\"w\",\"shape\":[8],\"dtype\":\"F32\"}],"
	"\"secagg\":{\"threshold\":2,\"neighbours\":2,\"clip\":1.0,\"bits\":8}}";

static struct rt_node *node_at(const char *dir)
{
	struct rt_node_opts o = {
		.listen_host = "127.0.0.1",
		.arena_bytes = 64ull << 20,
		.no_huge = true,
		.warm_s = 30,
		.dataplane = FN_DP_SHM_UNIX,
		.fn_path = "/nonexistent/tributary-fn",
	};
	struct rt_node *n;

	o.data_dir = dir;
	cr_assert_eq(rt_node_open(&n, &o, ":memory:"), 0);
	return n;
}

/* The job again (the store is in memory: a new node gets the same id 1, round 0). */
static struct rt_job *job_at(struct rt_node *n)
{
	struct rt_job_def def;
	struct rt_job *j;
	char msg[256];

	cr_assert_eq(rt_job_def_parse((const uint8_t *)job_body, strlen(job_body), 64ull << 20,
				      false, &def, msg, sizeof(msg)), 200, "%s", msg);
	cr_assert_eq(rt_job_create(n, &def.spec, def.schema, def.nschema, &j), 0);
	def.schema = NULL;
	rt_job_def_free(&def);
	return j;
}

/* One stage call; the status, and the body's JSON text (owned) in *text if wanted. */
static int call(struct rt_node *n, struct rt_job *j, int u, const char *stage, bool get,
		const char *body, char **text)
{
	struct rt_api_sa_res res;
	char client[16];

	snprintf(client, sizeof(client), "c%d", u);
	rt_api_secagg_call(n, j, client, stage, get, body, body ? strlen(body) : 0, &res);
	/* Everything but the deadline's seconds left, which a restart changes. */
	if (res.body)
		json_object_del(res.body, "deadline_s");
	if (text)
		*text = res.body ? json_dumps(res.body, JSON_SORT_KEYS) : strdup(res.msg);
	json_decref(res.body);
	return res.status;
}

static void hex(char *out, uint8_t seed, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", (uint8_t)(seed + i));
}

/* Client u's shares body: one made-up ciphertext per neighbour (the server never opens them). */
static void shares_body(struct rt_node *n, struct rt_job *j, int u, char *body, size_t cap)
{
	char *text = NULL, ct[2 * RT_SECAGG_CT_BYTES + 1];
	json_t *o, *arr, *e;
	size_t i, at;

	cr_assert_eq(call(n, j, u, "keys", true, NULL, &text), 200);
	o = json_loads(text, 0, NULL);
	free(text);
	arr = json_object_get(o, "neighbours");
	cr_assert(json_is_array(arr) && json_array_size(arr) == 2, "client %d's neighbours", u);
	at = (size_t)snprintf(body, cap, "{\"shares\":[");
	json_array_foreach(arr, i, e) {
		int v = (int)json_integer_value(json_object_get(e, "index"));

		hex(ct, (uint8_t)(16 * u + v), RT_SECAGG_CT_BYTES);
		at += (size_t)snprintf(body + at, cap - at, "%s{\"to\":%d,\"ct\":\"%s\"}",
				       i ? "," : "", v, ct);
	}
	snprintf(body + at, cap - at, "]}");
	json_decref(o);
}

Test(runtime_secagg_resume, a_new_node_resumes_the_round_where_it_was, .timeout = 60)
{
	char dir[] = "/tmp/trib-sa-resume-XXXXXX", keys[CPR][160], shares[CPR][2048];
	char *inbox[CPR], *text = NULL, cmd[128], arena[PATH_MAX], path[PATH_MAX];
	struct rt_node *n;
	struct rt_job *j;

	cr_assert_eq(trib_sa_init(), 0);
	cr_assert_not_null(mkdtemp(dir));
	n = node_at(dir);
	j = job_at(n);
	for (int u = 0; u < CPR; u++) {
		char cpk[65], spk[65];

		hex(cpk, (uint8_t)(u + 1), 32);
		hex(spk, (uint8_t)(u + 101), 32);
		snprintf(keys[u], sizeof(keys[u]), "{\"c_pk\":\"%s\",\"s_pk\":\"%s\"}", cpk, spk);
		cr_assert_eq(call(n, j, u, "keys", false, keys[u], NULL), 200);
	}
	cr_assert_eq(rt_secagg_stage(j->sa_live->r), RT_SECAGG_SHARE, "every client joined");
	for (int u = 0; u < CPR; u++) {
		shares_body(n, j, u, shares[u], sizeof(shares[u]));
		cr_assert_eq(call(n, j, u, "shares", false, shares[u], NULL), 200);
	}
	cr_assert_eq(rt_secagg_stage(j->sa_live->r), RT_SECAGG_MASKED);
	for (int u = 0; u < CPR; u++)
		cr_assert_eq(call(n, j, u, "shares", true, NULL, &inbox[u]), 200);
	/* A stop with the round in progress: the next node starts on the same data dir. */
	snprintf(arena, sizeof(arena), "%s", shm_arena_file_path(n->arena));
	rt_node_close(n);
	n = node_at(dir);
	j = job_at(n);
	cr_assert_eq(rt_node_recover(n), 0);
	cr_assert_not_null(j->sa_live, "the round was not resumed: %s", j->sa_failed);
	cr_assert_eq(rt_secagg_stage(j->sa_live->r), RT_SECAGG_MASKED);
	for (int u = 0; u < CPR; u++) {
		char *again = NULL;

		/* The same graph, the same ciphertexts routed to the same clients. */
		cr_assert_eq(call(n, j, u, "shares", true, NULL, &again), 200);
		cr_assert_str_eq(again, inbox[u], "client %d's inbox after the restart", u);
		free(again);
		free(inbox[u]);
	}
	/* Retries: the same body gets the same answer, past its stage too; another gets 409. */
	cr_assert_eq(call(n, j, 1, "keys", false, keys[1], &text), 200);
	cr_assert(strstr(text, "\"index\": 1"), "%s", text);
	free(text);
	cr_assert_eq(call(n, j, 2, "shares", false, shares[2], &text), 200);
	free(text);
	{
		char *ct = strstr(shares[2], "\"ct\":\"") + 6;

		*ct = *ct == 'f' ? 'e' : 'f'; /* one ciphertext changed */
		cr_assert_eq(call(n, j, 2, "shares", false, shares[2], NULL), 409);
	}
	cr_assert_eq(call(n, j, 3, "keys", false, keys[2], NULL), 409, "another client's keys");
	/* A record that does not replay (a client no one indexed): the round fails, saying so. */
	rt_node_close(n);
	n = node_at(dir);
	j = job_at(n);
	cr_assert_eq(rt_node_recover(n), 0);
	cr_assert_not_null(j->sa_live, "resumed a second time");
	{
		uint32_t u = 99;
		uint8_t dig[16] = { 0 };
		struct iovec iov[2] = { { &u, 4 }, { dig, 16 } };

		cr_assert_eq(rt_salog_append(j->sa_live->log, RT_SALOG_INPUT, iov, 2), 0);
	}
	rt_node_close(n);
	n = node_at(dir);
	j = job_at(n);
	cr_assert_eq(rt_node_recover(n), 0);
	cr_assert_null(j->sa_live, "a log that does not replay was resumed");
	cr_assert(strstr(j->sa_failed, "could not be resumed") &&
		  strstr(j->sa_failed, "client 99"), "status: %s", j->sa_failed);
	cr_assert_eq(call(n, j, 0, "shares", true, NULL, &text), 410);
	cr_assert(strstr(text, "could not be resumed"), "%s", text);
	free(text);
	snprintf(path, sizeof(path), "%s/secagg/1.log", dir);
	cr_assert_neq(access(path, F_OK), 0, "the log of the failed round stays");
	/* The next round opens. */
	cr_assert_eq(call(n, j, 0, "keys", false, keys[0], NULL), 200);
	cr_assert_not_null(j->sa_live);
	rt_node_close(n);
	unlink(arena);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/* A GET stage's answer both ways (rt_api_secagg_get.c): its text parsed, and its JSON. */
static void both(struct rt_job *j, int u, const char *stage, json_t **text, json_t **obj)
{
	struct rt_api_sa_res res;
	char client[16];

	snprintf(client, sizeof(client), "c%d", u);
	memset(&res, 0, sizeof(res));
	rt__sa_get(j, client, stage, true, &res);
	cr_assert_eq(res.status, 200, "%s", res.msg);
	cr_assert_not_null(res.text, "a ready answer is text for a local connection");
	*text = json_loadb(res.text, res.text_len, JSON_REJECT_DUPLICATES, NULL);
	cr_assert_not_null(*text, "not JSON: %.*s", (int)res.text_len, res.text);
	trib_free(res.text);
	memset(&res, 0, sizeof(res));
	rt__sa_get(j, client, stage, false, &res);
	cr_assert_eq(res.status, 200, "%s", res.msg);
	cr_assert_null(res.text);
	*obj = res.body;
}

/*
 * The GET stages' text answers (a local connection's) say what their JSON (a cluster peer's)
 * says: the same fields, values and order, the seconds left to the deadline within a second.
 */
Test(runtime_secagg_resume, get_stage_text_equals_its_json, .timeout = 60)
{
	char dir[] = "/tmp/trib-sa-text-XXXXXX", keys[CPR][160], shares[CPR][2048], cmd[128];
	char arena[PATH_MAX];
	struct rt_node *n;
	struct rt_job *j;

	cr_assert_eq(trib_sa_init(), 0);
	cr_assert_not_null(mkdtemp(dir));
	n = node_at(dir);
	j = job_at(n);
	for (int u = 0; u < CPR; u++) {
		char cpk[65], spk[65];

		hex(cpk, (uint8_t)(u + 1), 32);
		hex(spk, (uint8_t)(u + 101), 32);
		snprintf(keys[u], sizeof(keys[u]), "{\"c_pk\":\"%s\",\"s_pk\":\"%s\"}", cpk, spk);
		cr_assert_eq(call(n, j, u, "keys", false, keys[u], NULL), 200);
	}
	for (int s = 0; s < 2; s++) {
		const char *stage = s ? "shares" : "keys";

		if (s)
			for (int u = 0; u < CPR; u++) {
				shares_body(n, j, u, shares[u], sizeof(shares[u]));
				cr_assert_eq(call(n, j, u, "shares", false, shares[u], NULL), 200);
			}
		for (int u = 0; u < CPR; u++) {
			json_t *t, *o;
			const char *kt, *ko;
			void *it, *io;
			double dt, dj;

			both(j, u, stage, &t, &o);
			cr_assert(json_is_true(json_object_get(t, "ready")), "%s ready", stage);
			dt = json_real_value(json_object_get(t, "deadline_s"));
			dj = json_real_value(json_object_get(o, "deadline_s"));
			cr_assert(json_is_real(json_object_get(t, "deadline_s")) && dt > 50 &&
				  dt - dj < 1 && dj - dt < 1, "deadline_s %g and %g", dt, dj);
			json_object_del(t, "deadline_s");
			json_object_del(o, "deadline_s");
			cr_assert(json_equal(t, o), "client %d's GET %s: text %s, JSON %s", u, stage,
				  json_dumps(t, 0), json_dumps(o, 0));
			/* And in the same order, as a client reading the text in order sees it. */
			for (it = json_object_iter(t), io = json_object_iter(o); it && io;
			     it = json_object_iter_next(t, it), io = json_object_iter_next(o, io)) {
				kt = json_object_iter_key(it);
				ko = json_object_iter_key(io);
				cr_assert_str_eq(kt, ko);
			}
			cr_assert(!it && !io);
			json_decref(t);
			json_decref(o);
		}
	}
	snprintf(arena, sizeof(arena), "%s", shm_arena_file_path(n->arena));
	rt_node_close(n);
	unlink(arena);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}
