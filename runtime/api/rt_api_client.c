// SPDX-License-Identifier: MIT
/* Client credentials: minting, revoking, an update's bearer, one update per client, caps. */
#include "api_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_cred.h"
#include "trib_json.h"
#include "trib_token.h"

#define CLIENT_TTL_DEFAULT_S (7u * 86400u)
#define CLIENT_TTL_MAX_S (365u * 86400u)
#define CLIENT_BODY_MAX 4096u

/* --- which token: the job's (or the admin's), or a client's --- */

/*
 * A client token of @j in the request: 0 with its id in @client, or the
 * reason it is not one (-ENOENT: no client token at all; the rest as
 * trib_cred_verify, and -EKEYREVOKED).
 */
static int client_of(struct rt_conn *c, const struct rt_job *j,
		     char client[TRIB_CRED_CLIENT_MAX + 1])
{
	const char *tok;
	int err;

	client[0] = '\0';
	if (rt_http_bearer(&c->req, &tok) || !trib_cred_is_client_token(tok))
		return -ENOENT;
	if (!j->cred.has_key)
		return -EACCES;
	err = trib_cred_verify(j->cred.key, j->name, tok, (uint64_t)time(NULL), client, NULL);
	if (!err && rt_job_revoked(j, client))
		err = -EKEYREVOKED;
	return err;
}

static const char *client_why(int err)
{
	switch (err) {
	case -EKEYEXPIRED:
		return "client token expired; mint a new one (POST /v1/jobs/{job}/clients)";
	case -EKEYREVOKED:
		return "client token revoked";
	case -EBADMSG:
		return "malformed client token";
	default:
		return "client token not valid for this job (wrong signature)";
	}
}

bool rt__api_require_reader(struct rt_conn *c, const struct rt_job *j)
{
	char client[TRIB_CRED_CLIENT_MAX + 1];
	int err = client_of(c, j, client);

	if (!err)
		return true;
	if (err == -ENOENT)
		return rt__api_require_job(c, j);
	rt__api_reject(c, RT_REJ_AUTH, 401, client_why(err), -1, NULL);
	return false;
}

bool rt__api_update_auth(struct rt_conn *c, const struct rt_job *j)
{
	int err = client_of(c, j, R(c)->client);

	if (!err)
		return true;
	if (err != -ENOENT) {
		rt__api_reject(c, RT_REJ_AUTH, 401, client_why(err), -1, NULL);
		return false;
	}
	if (!rt__api_require_job(c, j))
		return false;
	if (j->cred.required) {
		rt__api_reject(c, RT_REJ_FORBIDDEN, 403,
			       "this job has client_auth \"required\": the job token does not "
			       "submit updates; mint a client token (POST /v1/jobs/{job}/clients) "
			       "and submit with it", -1, NULL);
		return false;
	}
	return true;
}

/* --- one update per client, and bodies in flight --- */

bool rt__api_update_admit(struct rt_conn *c, struct rt_job *j, uint64_t len)
{
	const char *id = R(c)->client;
	char msg[320];

	if (id[0] && rt_job_client_seen(N(c), j, id)) {
		snprintf(msg, sizeof(msg), "client %s already has an update counted in %s %u (one "
			 "update per client per %s); the same request again with its "
			 "Idempotency-Key gets its first answer", id,
			 j->algo.async ? "version" : "round", j->round,
			 j->algo.async ? "version" : "round");
		rt__api_reject(c, RT_REJ_CLIENT_DUP, 409, msg, j->round, NULL);
		return false;
	}
	return rt__api_body_admit(c, j, len);
}

/*
 * The caps on bodies in flight alone (per client, per job): a secure round's stage bodies take
 * them, but not the one-update-per-round rule (a client sends four stages a round, and the
 * secure round's own state says which of them it may send: rt_secagg.c).
 */
bool rt__api_body_admit(struct rt_conn *c, struct rt_job *j, uint64_t len)
{
	struct rt_node *n = N(c);
	const char *id = R(c)->client;
	uint64_t cap = shm_arena_size(n->arena) / 100 * n->opts.job_inflight_pct;
	char msg[320];

	if (id[0] && n->opts.client_inflight) {
		const struct rt_client_ent *e = rt_job_client(n, j, id);

		if (!e || e->inflight >= n->opts.client_inflight) {
			snprintf(msg, sizeof(msg), "client %s has %u update bodies in flight, its "
				 "cap (--client-inflight); retry when one is done", id,
				 e ? e->inflight : 0);
			rt__api_reject(c, RT_REJ_CLIENT_INFLIGHT, 503, msg, -1,
				       "Retry-After: 1\r\n");
			return false;
		}
	}
	if (n->opts.job_inflight_pct && j->inflight_bytes + len > cap) {
		snprintf(msg, sizeof(msg), "job %s has %llu bytes of update bodies in flight; "
			 "%llu more would pass its cap (%u%% of the arena, --job-inflight-pct); "
			 "retry shortly", j->name, (unsigned long long)j->inflight_bytes,
			 (unsigned long long)len, n->opts.job_inflight_pct);
		rt__api_reject(c, RT_REJ_JOB_INFLIGHT, 503, msg, -1, "Retry-After: 1\r\n");
		return false;
	}
	return true;
}

void rt__api_update_begin(struct rt_conn *c, struct rt_job *j)
{
	j->inflight_bytes += R(c)->slot_len; /* slot_len stays until the request ends */
	if (R(c)->client[0])
		rt_job_client_inflight(N(c), j, R(c)->client, true);
	R(c)->inflight = true;
}

void rt__api_update_end(struct rt_api *api, struct rt_conn *c)
{
	struct rt_api_req *r = R(c);

	if (!r->inflight || !r->job)
		return;
	r->job->inflight_bytes -= r->slot_len < r->job->inflight_bytes ? r->slot_len :
									 r->job->inflight_bytes;
	if (r->client[0])
		rt_job_client_inflight(api->node, r->job, r->client, false);
	r->inflight = false;
}

/* --- POST /v1/jobs/{job}/clients, DELETE /v1/jobs/{job}/clients/{id} --- */

/* A new client id: "c" and 20 characters of a fresh random token. 0 or -errno. */
static int client_id_new(char id[TRIB_CRED_CLIENT_MAX + 1])
{
	char tok[TRIB_TOKEN_MAX + 1];
	int err = trib_token_new(tok, sizeof(tok));

	if (err)
		return err;
	snprintf(id, TRIB_CRED_CLIENT_MAX + 1, "c%.20s", tok);
	return 0;
}

/* Mint the credential of @id (NULL: a new id) for @ttl_s seconds and answer 201. */
static void mint(struct rt_conn *c, struct rt_job *j, const char *id, uint64_t ttl_s)
{
	char cid[TRIB_CRED_CLIENT_MAX + 1], tok[TRIB_CRED_TOKEN_MAX], body[256], msg[128];
	uint64_t expires = (uint64_t)time(NULL) + ttl_s;
	int err, len;

	if (!id) {
		err = client_id_new(cid);
		if (err) {
			rt_conn_error(c, 500, "no randomness for a client id", -1, NULL);
			return;
		}
		id = cid;
	}
	if (rt_job_revoked(j, id)) {
		snprintf(msg, sizeof(msg), "client %s is revoked; a revoked id is not issued again",
			 id);
		rt_conn_error(c, 409, msg, -1, NULL);
		return;
	}
	err = j->cred.has_key ? trib_cred_mint(j->cred.key, j->name, id, expires, tok,
					      sizeof(tok)) : -ENOKEY;
	if (err) {
		rt_conn_error(c, 500, "could not sign the client token", -1, NULL);
		return;
	}
	/* id and token are [A-Za-z0-9._-]: no escaping. */
	len = snprintf(body, sizeof(body), "{\"client\":\"%s\",\"token\":\"%s\",\"expires\":%llu}",
		       id, tok, (unsigned long long)expires);
	rt_conn_respond(c, 201, "application/json", body, (size_t)len, NULL);
}

static void on_mint_body(struct rt_conn *c)
{
	json_t *o = NULL, *name, *ttl;
	uint64_t ttl_s = CLIENT_TTL_DEFAULT_S;
	struct rt_job *j = R(c)->job;
	const char *id = NULL;

	if (rt__api_job_gone(c))
		return;
	if (trib_json_loadb(c->body_heap, c->body_len, 0, &o, NULL) || !json_is_object(o)) {
		rt_conn_error(c, 400, "body: a JSON object {\"client\": id, \"ttl_s\": seconds}, "
			      "both optional", -1, NULL);
		goto out;
	}
	name = json_object_get(o, "client");
	ttl = json_object_get(o, "ttl_s");
	if (name && (!json_is_string(name) || !trib_cred_client_valid(json_string_value(name)))) {
		rt_conn_error(c, 400, "client: 1 to 32 characters of A-Z a-z 0-9 _ -", -1, NULL);
		goto out;
	}
	if (ttl && (!json_is_integer(ttl) || json_integer_value(ttl) < 1 ||
		    json_integer_value(ttl) > CLIENT_TTL_MAX_S)) {
		rt_conn_error(c, 400, "ttl_s: seconds, an integer from 1 to 31536000 (365 days)",
			      -1, NULL);
		goto out;
	}
	if (name)
		id = json_string_value(name);
	if (ttl)
		ttl_s = (uint64_t)json_integer_value(ttl);
	mint(c, j, id, ttl_s);
out:
	json_decref(o);
}

void rt__api_handle_clients(struct rt_conn *c, struct rt_job *j, const char *rest,
			    enum http_method m)
{
	char msg[128];
	int err;

	if (!rt__api_require_job(c, j))
		return;
	if (!*rest && m == HTTP_POST) {
		if (!c->req.has_content_length || !c->req.content_length) {
			mint(c, j, NULL, CLIENT_TTL_DEFAULT_S);
			return;
		}
		if (c->req.chunked || c->req.content_length > CLIENT_BODY_MAX) {
			rt_conn_error(c, 413, "client request body: at most 4 KiB of JSON", -1,
				      NULL);
			return;
		}
		c->body_heap = trib_malloc(c->req.content_length + 1);
		if (!c->body_heap) {
			rt_conn_error(c, 500, "out of memory", -1, NULL);
			return;
		}
		rt__api_read_job_body(c, j, on_mint_body);
		return;
	}
	if (*rest == '/' && m == HTTP_DELETE) {
		if (!trib_cred_client_valid(rest + 1)) {
			rt_conn_error(c, 400, "clients/{id}: 1 to 32 characters of A-Z a-z 0-9 _ -",
				      -1, NULL);
			return;
		}
		if (API(c)->clustered) {
			/* The controller keeps revocations and sends them to every node. */
			API(c)->cluster.revoke(API(c)->cluster.ctx, c, j, rest + 1);
			return;
		}
		err = rt_job_revoke(N(c), j, rest + 1);
		if (err) {
			snprintf(msg, sizeof(msg), "revoking client %s: %s", rest + 1,
				 strerror(-err));
			rt_conn_error(c, 500, msg, -1, NULL);
			return;
		}
		snprintf(msg, sizeof(msg), "{\"client\":\"%s\",\"revoked\":true}", rest + 1);
		rt_conn_respond(c, 200, "application/json", msg, strlen(msg), NULL);
		return;
	}
	rt_conn_error(c, 405, "POST /v1/jobs/{job}/clients mints a client token; DELETE "
		      "/v1/jobs/{job}/clients/{id} revokes one", -1, NULL);
}
