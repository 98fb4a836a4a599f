/* SPDX-License-Identifier: MIT */
/*
 * Secure aggregation's API (issue 19): the stages (the job field is rt_api_secagg_def.c, the
 * rounds' progress and status rt_api_secagg_round.c). The protocol and
 * its server state machine are runtime/node/rt_secagg.h; here each stage is a route, a client is
 * named by its client token, and each stage ends when every client still in has answered or at
 * its deadline (round_timeout_s), whichever comes first: the API's tick (every RT_LOOP_TICK_MS)
 * ends stages that are due even when no request comes. Keys, ciphertexts and shares travel as
 * lowercase hex in JSON; the masked input as raw little-endian u32 words, received into an arena
 * slot and folded by the job's function tree (FN_ALGO_SECAGG); the node hands the tree's masked
 * sum to the round for the unmask stage. What a stage accepts is in the round's state log (and
 * the input in the arena's journal) before its 200, so a restart resumes the round
 * (runtime/node/rt_secagg_state.c, rt_secagg_resume.c); a keys, shares or unmask message sent
 * again with the same body gets the same answer (rt_sa_retry), another body 409; a masked input
 * sent again gets the first answer, its body never compared (sa_input_may says why). Each stage
 * is made without a connection (rt_api_secagg_call): in a cluster the node that runs the job's
 * rounds answers the stages the other gateways pass on (runtime/cluster/rt_agent_secagg.c).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "api_priv.h"
#include "fn_secagg.h"
#include "rt_api.h"
#include "rt_secagg.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_secagg_crypto.h"
#include "trib_time.h"

/* --- the stages --- */

/* FNV-1a of a client id: its first slot in L->slot. */
static uint32_t sa_hash(const char *client)
{
	uint32_t h = 2166136261u;

	while (*client)
		h = (h ^ (uint8_t)*client++) * 16777619u;
	return h;
}

/* The caller's index in the round in progress, or UINT32_MAX. */
uint32_t rt__sa_who(const struct rt_job *j, const char *client)
{
	const struct rt_sa_live *L = j->sa_live;

	if (L && L->slot) {
		for (uint32_t h = sa_hash(client) & (L->nslot - 1); L->slot[h];
		     h = (h + 1) & (L->nslot - 1))
			if (!strcmp(L->ids[L->slot[h] - 1], client))
				return L->slot[h] - 1;
		return UINT32_MAX;
	}
	for (uint32_t u = 0; L && u < L->n; u++)
		if (!strcmp(L->ids[u], client))
			return u;
	return UINT32_MAX;
}

/* Client @u (its id in L->ids[u]) into the index: at most n_clients of 2 n_clients slots. */
static void sa_index_add(struct rt_sa_live *L, uint32_t u)
{
	uint32_t h = sa_hash(L->ids[u]) & (L->nslot - 1);

	if (!L->slot)
		return;
	while (L->slot[h])
		h = (h + 1) & (L->nslot - 1);
	L->slot[h] = u + 1;
}

/* An error answer into @res. */
void rt__sa_err(struct rt_api_sa_res *res, int status, const char *msg, long long round,
		   const char *extra)
{
	json_decref(res->body);
	res->body = NULL;
	res->status = status;
	res->round = round;
	res->extra = extra;
	snprintf(res->msg, sizeof(res->msg), "%s", msg);
}

/* A 200 with @o (owned; NULL: out of memory). */
void rt__sa_ok(struct rt_api_sa_res *res, json_t *o)
{
	if (!o) {
		rt__sa_err(res, 500, "out of memory", -1, NULL);
		return;
	}
	res->status = 200;
	res->body = o;
}

/* A state machine's refusal as HTTP. */
void rt__sa_refuse(struct rt_api_sa_res *res, struct rt_job *j, int err)
{
	char msg[256];
	const char *st = j->sa_live ? rt_secagg_stage_name(rt_secagg_stage(j->sa_live->r)) : "none";

	switch (err) {
	case -EPERM:
		rt__sa_err(res, 410, "dropped from this secure round (a stage's deadline passed "
			   "without you); join the next one", -1, NULL);
		return;
	case -EBUSY:
		snprintf(msg, sizeof(msg), "not this stage: the round is at '%s'", st);
		rt__sa_err(res, 409, msg, -1, NULL);
		return;
	case -EALREADY:
		rt__sa_err(res, 409,
			   "already sent for this stage, with another body (a retry of the "
			   "same request gets the first answer again; the first one stands)",
			   -1, NULL);
		return;
	case -ECANCELED:
		snprintf(msg, sizeof(msg), "the round's state could not be saved, so the round "
			 "failed: %.180s", j->sa_live ? rt_secagg_why(j->sa_live->r) : "");
		rt__sa_err(res, 503, msg, -1, "Retry-After: 1\r\n");
		return;
	case -ENOMEM:
		rt__sa_err(res, 500, "out of memory", -1, NULL);
		return;
	default:
		rt__sa_err(res, 400, "malformed for this stage (see README \"Secure aggregation\")",
			   -1, NULL);
	}
}

/* The caller is not in the round in progress: why (410), with the last failure if any. */
void rt__sa_gone(struct rt_api_sa_res *res, struct rt_job *j)
{
	char msg[320];

	snprintf(msg, sizeof(msg), "not in a secure round in progress%s%.200s%s",
		 j->sa_failed[0] ? " (the last one failed: " : "", j->sa_failed,
		 j->sa_failed[0] ? ")" : "");
	rt__sa_err(res, 410, msg, (long long)j->round, NULL);
}

/* A new round for @j: its cfg from the job, a fresh graph seed, its state log. 0 or -errno. */
static int sa_open(struct rt_node *n, struct rt_job *j)
{
	struct rt_sa_live *L = trib_calloc(1, sizeof(*L));
	struct rt_secagg_cfg cfg;
	int err = -ENOMEM;

	if (!L)
		return err;
	memset(&cfg, 0, sizeof(cfg));
	cfg.n_clients = j->cpr;
	cfg.threshold = j->secagg.threshold;
	cfg.neighbours = j->secagg.neighbours;
	cfg.bits = j->secagg.bits;
	cfg.clip = j->secagg.clip;
	cfg.max_samples = j->secagg.max_samples;
	cfg.dim = (uint32_t)j->n_elem;
	cfg.round = j->round;
	cfg.external_expand = true; /* the job's functions expand the masks */
	if (getrandom(cfg.graph_seed, sizeof(cfg.graph_seed), 0) != sizeof(cfg.graph_seed)) {
		trib_free(L);
		return -EIO;
	}
	L->ids = trib_calloc(j->cpr, sizeof(*L->ids));
	for (L->nslot = 2; L->nslot < 2ull * j->cpr; L->nslot *= 2)
		;
	L->slot = trib_calloc(L->nslot, sizeof(*L->slot));
	err = L->ids && L->slot ? rt_secagg_new(&cfg, &L->r) : -ENOMEM;
	if (err) {
		trib_free(L->slot);
		trib_free(L->ids);
		trib_free(L);
		return err;
	}
	L->round = j->round;
	L->opened_ns = trib_now_ns();
	L->deadline_ns = L->opened_ns + rt__api_secagg_stage_ns(j);
	j->sa_live = L;
	/* Nothing is acknowledged that a restart would not find (rt_secagg_log.h). */
	err = rt_sa_log_open(n, j, &cfg);
	if (err)
		rt_job_secagg_drop(j);
	return err;
}

/* The body as a JSON object of the @known fields, or NULL with a 400 (or 500) in @res. */
static json_t *sa_body_json(const void *body, size_t len, const char *const *known,
			    struct rt_api_sa_res *res)
{
	char msg[sizeof(res->msg)];
	json_t *o;
	int status;

	if (rt__sa_parse(body, len, known, &o, &status, msg, sizeof(msg))) {
		rt__sa_err(res, status, msg, -1, NULL);
		return NULL;
	}
	return o;
}

/* POST .../secagg/keys {"c_pk": hex32, "s_pk": hex32}: joins (or opens) the round. */
static void sa_keys(struct rt_node *n, struct rt_job *j, const char *client, const void *body,
		    size_t len, struct rt_api_sa_res *res)
{
	static const char *const known[] = { "c_pk", "s_pk", NULL };
	json_t *o = sa_body_json(body, len, known, res);
	char msg[sizeof(res->msg)];
	uint8_t cpk[32], spk[32], dig[16];
	uint32_t u, rnd;
	int err;

	if (!o)
		return;
	rt_sa_digest(body, len, dig);
	if (rt__sa_hex(o, "c_pk", "", cpk, 32, msg, sizeof(msg)) ||
	    rt__sa_hex(o, "s_pk", "", spk, 32, msg, sizeof(msg))) {
		json_decref(o);
		rt__sa_err(res, 400, msg, -1, NULL);
		return;
	}
	json_decref(o);
	/*
	 * A low-order key makes every agreement with it zero: no share could be sealed to it, and
	 * the unmasking could never derive its pairwise masks (the round would fail at the end).
	 */
	if (trib_sa_public_key_check(cpk) || trib_sa_public_key_check(spk)) {
		char msg[256];

		snprintf(msg, sizeof(msg), "%s: a low-order X25519 point (every key agreement with "
			 "it is all zero); send the public key of a fresh random secret key",
			 trib_sa_public_key_check(cpk) ? "c_pk" : "s_pk");
		rt__sa_err(res, 422, msg, -1, NULL);
		return;
	}
	rt__api_secagg_step(n, j);
	if (!j->sa_live && rt_job_state(j) != RT_JOB_OPEN) {
		rt__sa_err(res, 409, "the job is not open (paused or done)", -1, NULL);
		return;
	}
	if (!j->sa_live && j->sa_wait_version > j->completed) {
		rt__sa_err(res, 409, "the last secure round's model is being committed by the "
			   "controller; retry in a moment", -1, "Retry-After: 1\r\n");
		return;
	}
	if (!j->sa_live && rt_job_secagg_busy(j)) {
		rt__sa_err(res, 409, "the last secure round's function tree is still folding; "
			   "retry in a moment", -1, "Retry-After: 1\r\n");
		return;
	}
	if (!j->sa_live && (err = sa_open(n, j))) {
		rt__sa_err(res, 503, err == -ENOMEM ? "could not open a secure round: out of "
			   "memory" : "could not open a secure round: its state log cannot be "
			   "written (see the server log)", -1, "Retry-After: 5\r\n");
		return;
	}
	u = rt__sa_who(j, client);
	if (u == UINT32_MAX) {
		if (rt_secagg_stage(j->sa_live->r) != RT_SECAGG_ADVERTISE ||
		    j->sa_live->n >= j->cpr) {
			rt__sa_err(res, 409, "the secure round in progress is past advertising or "
				   "full; retry after it ends", -1, NULL);
			return;
		}
		u = j->sa_live->n;
		snprintf(j->sa_live->ids[u], sizeof(j->sa_live->ids[u]), "%s", client);
	}
	err = rt_secagg_advertise(j->sa_live->r, u, cpk, spk);
	if ((err == -EALREADY || err == -EBUSY) &&
	    rt_sa_retry(j->sa_live, u, RT_SECAGG_ADVERTISE, dig) == 1) {
		err = 0; /* a retry of the same request: the same answer */
	} else if (!err) {
		if (u == j->sa_live->n) {
			sa_index_add(j->sa_live, u);
			j->sa_live->n++;
		}
		err = rt_sa_log_keys(n, j, u, cpk, spk, dig) ? -ECANCELED : 0;
	}
	if (err) {
		rt__sa_refuse(res, j, err);
		return;
	}
	rnd = j->sa_live->round;
	rt__api_secagg_step(n, j);
	rt__sa_ok(res, json_pack("{s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:I}", "round",
				 (json_int_t)rnd, "index", (json_int_t)u, "threshold",
				 (json_int_t)j->secagg.threshold, "neighbours",
				 (json_int_t)j->secagg.neighbours, "clip", (double)j->secagg.clip,
				 "bits", (json_int_t)j->secagg.bits, "dim", (json_int_t)j->n_elem,
				 "max_samples", (json_int_t)j->secagg.max_samples));
}

/* POST .../secagg/shares {"shares": [{"to": v, "ct": hex}]}: one per neighbour. */
static void sa_shares(struct rt_node *n, struct rt_job *j, const char *client, const void *body,
		      size_t len, struct rt_api_sa_res *res)
{
	static const char *const known[] = { "shares", NULL }, *const ent[] = { "to", "ct", NULL };
	json_t *o = NULL, *arr, *e;
	uint32_t u = rt__sa_who(j, client), *to, cnt = 0;
	const uint8_t **ct;
	uint8_t *buf, dig[16];
	char msg[sizeof(res->msg)] = "", path[32];
	size_t i;
	int err = -EINVAL;

	/* Room for the longest list: the honest shape is read straight into it. */
	to = trib_calloc(RT_SECAGG_MAX_NEIGHBOURS, sizeof(*to));
	ct = trib_calloc(RT_SECAGG_MAX_NEIGHBOURS, sizeof(*ct));
	buf = trib_malloc((size_t)RT_SECAGG_MAX_NEIGHBOURS * RT_SECAGG_CT_BYTES);
	if (!to || !ct || !buf) {
		rt__sa_err(res, 500, "out of memory", -1, NULL);
		goto out;
	}
	if (!rt__sa_fast_list(body, len, "shares", "to", "ct", RT_SECAGG_CT_BYTES,
			      RT_SECAGG_MAX_NEIGHBOURS, to, buf, &cnt)) {
		err = 0;
		goto parsed;
	}
	o = sa_body_json(body, len, known, res);
	if (!o)
		goto out;
	arr = json_object_get(o, "shares");
	cnt = json_is_array(arr) ? (uint32_t)json_array_size(arr) : 0;
	if (!json_is_array(arr) || !cnt || cnt > RT_SECAGG_MAX_NEIGHBOURS)
		snprintf(msg, sizeof(msg), "shares: %s%u entries; allowed: an array of one "
			 "{\"to\": index, \"ct\": hex} for each neighbour (GET .../secagg/keys), "
			 "1 to %u", json_is_array(arr) ? "an array of " : "not an array, ", cnt,
			 RT_SECAGG_MAX_NEIGHBOURS);
	if (!msg[0]) {
		err = 0;
		json_array_foreach(arr, i, e) {
			if (rt__sa_entry(e, i, "shares", ent, path, sizeof(path), msg,
					 sizeof(msg)) ||
			    rt__sa_index(e, "to", path, &to[i], msg, sizeof(msg)) ||
			    rt__sa_hex(e, "ct", path, buf + i * RT_SECAGG_CT_BYTES,
				       RT_SECAGG_CT_BYTES, msg, sizeof(msg))) {
				err = -EINVAL;
				break;
			}
		}
	}
	json_decref(o);
parsed:
	for (i = 0; i < cnt && i < RT_SECAGG_MAX_NEIGHBOURS; i++)
		ct[i] = buf + i * RT_SECAGG_CT_BYTES;
	rt_sa_digest(body, len, dig);
	if (u == UINT32_MAX) {
		rt__sa_gone(res, j);
		goto out;
	}
	rt__api_secagg_step(n, j);
	if (!err && rt__sa_who(j, client) != u)
		err = -EPERM; /* the round ended while the body came */
	if (!err) {
		err = rt_secagg_share(j->sa_live->r, u, to, ct, cnt);
		if (err == -EINVAL) /* well-formed, but not this client's list: say what is wrong */
			rt__sa_share_why(j->sa_live->r, u, to, cnt, msg, sizeof(msg));
	}
	if ((err == -EALREADY || err == -EBUSY) &&
	    rt_sa_retry(j->sa_live, u, RT_SECAGG_SHARE, dig) == 1)
		err = 0; /* a retry of the same request: the same answer */
	else if (!err && rt_sa_log_shares(n, j, u, to, ct, cnt, dig))
		err = -ECANCELED;
	if (err == -EINVAL) {
		rt__sa_err(res, 400, msg, -1, NULL);
	} else if (err) {
		rt__sa_refuse(res, j, err);
	} else {
		rt__api_secagg_step(n, j);
		rt__sa_ok(res, json_pack("{s:I}", "accepted", (json_int_t)cnt));
	}
out:
	trib_free(to);
	trib_free(ct);
	trib_free(buf);
}

/*
 * The masked input's checks before its body: the caller may send now and the length is exact.
 * 0; 1 for a resend (u's input was accepted already), with its answer in @res; or -1 with the
 * refusal in @res (no slot for a client that may not send).
 */
static int sa_input_may(struct rt_job *j, const char *client, uint64_t len,
			struct rt_api_sa_res *res)
{
	uint32_t u = rt__sa_who(j, client);
	uint64_t want = (j->n_elem + 1) * 4;
	char msg[200];
	int err;

	if (u == UINT32_MAX) {
		rt__sa_gone(res, j);
		return -1;
	}
	if (len != want) {
		snprintf(msg, sizeof(msg), "masked input: %llu bytes; this job takes (params + 1) "
			 "little-endian u32 words = %llu bytes", (unsigned long long)len,
			 (unsigned long long)want);
		rt__sa_err(res, 400, msg, -1, NULL);
		return -1;
	}
	/*
	 * Sent already (its mark is in the state log, so it is durable; the stage may be over):
	 * answered as the first time, its body never compared, as a plain update's resend with
	 * its Idempotency-Key (rt_api_update.c): the key is the (client, stage) pair. A different
	 * body is not detected: the first one stands and the second is dropped uncompared, which is
	 * all the one-input-per-client rule needs (docs/SECURITY.md). Comparing bodies meant a
	 * digest of every input for the rare resend: Poly1305 over 400 MB a round at 100 x 1M,
	 * ~0.03 s of the gateway's CPU, half a plain round's whole gateway (docs/BENCHMARKS.md,
	 * "The secure round's stage requests").
	 */
	if (j->sa_live->sent[u] & (1u << RT_SECAGG_MASKED)) {
		rt__sa_ok(res, json_pack("{s:b}", "accepted", 1));
		return 1;
	}
	err = rt_secagg_masked_enter(j->sa_live->r, u, false);
	if (err) {
		rt__sa_refuse(res, j, err);
		return -1;
	}
	return 0;
}

/* The slot a masked input of @len bytes lands in (its segment table after it): 0 or 503. */
static int sa_input_slot(struct rt_node *n, struct rt_job *j, uint64_t len, uint64_t *slot_len,
			 uint64_t *slot_off, struct rt_api_sa_res *res)
{
	*slot_len = ((len + 63) & ~63ull) + sizeof(struct shm_seg);
	if (shm_slot_alloc(n->arena, *slot_len, slot_off)) {
		*slot_off = UINT64_MAX;
		rt_job_relieve(n, j);
		rt__sa_err(res, 503, "aggregation memory is full; retry shortly", -1,
			   "Retry-After: 1\r\n");
		return -1;
	}
	return 0;
}

/*
 * A masked input received in the slot at @slot_off (dim + 1 little-endian u32 words: the masked
 * n_u * q(x) and n_u), handed to the job's function tree like any update; its segment table
 * follows the body in the slot. The words are taken as the host's u32, so this assumes a
 * little-endian host (x86-64, arm64). 0: the slot is the tree's now (freed once its leaf's
 * partial exists); -1: the caller still owns it, the refusal is in @res.
 */
static int sa_input_take(struct rt_node *n, struct rt_job *j, const char *client,
			 uint64_t slot_off, uint64_t len, struct rt_api_sa_res *res)
{
	uint32_t u = rt__sa_who(j, client), seq = 0; /* the tree's; the client needs none */
	uint64_t segs_off = slot_off + ((len + 63) & ~63ull);
	struct shm_seg *seg = shm_arena_ptr(n->arena, segs_off);
	int err;

	rt__api_secagg_step(n, j);
	if (u == UINT32_MAX || rt__sa_who(j, client) != u) {
		rt__sa_gone(res, j);
		return -1;
	}
	if (j->sa_live->sent[u] & (1u << RT_SECAGG_MASKED)) {
		/* Two bodies in flight at once, the other taken first: it stands. */
		rt__sa_ok(res, json_pack("{s:b}", "accepted", 1));
		return -1;
	}
	err = rt_secagg_masked_enter(j->sa_live->r, u, false);
	if (err) {
		rt__sa_refuse(res, j, err);
		return -1;
	}
	memset(seg, 0, sizeof(*seg));
	seg->src_off = slot_off;
	seg->n_elem = j->n_elem + 1;
	seg->dtype = SHM_DTYPE_I32; /* u32 words: only FN_ALGO_SECAGG folds this job's inputs */
	seg->scale = 1.0f;
	err = rt_job_secagg_accept(n, j, slot_off, segs_off, len, client, &seq);
	if (err == -ECANCELED) {
		rt__sa_refuse(res, j, err); /* in the tree (the slot is its), not on disk: no 200 */
		return 0;
	}
	if (err == -ENOSPC) {
		rt_job_relieve(n, j);
		rt__sa_err(res, 503, "aggregation memory is full; retry shortly", -1,
			   "Retry-After: 1\r\n");
		return -1;
	}
	if (err) {
		trib_error("job %s round %u: a masked input into the function tree: %s", j->name,
			   j->sa_live->round, strerror(-err));
		rt__sa_err(res, 503, "the round's aggregation tree failed; see the server log", -1,
			   "Retry-After: 5\r\n");
		return -1;
	}
	(void)rt_secagg_masked_enter(j->sa_live->r, u, true);
	n->m.bytes_received += len;
	if (rt_sa_log_input(n, j, u)) {
		rt__sa_refuse(res, j, -ECANCELED); /* the round failed; the slot is the tree's */
		return 0;
	}
	rt__api_secagg_step(n, j);
	rt__sa_ok(res, json_pack("{s:b}", "accepted", 1));
	return 0;
}

/* POST .../secagg/unmask {"reveals": [{"index": v, "share": hex}]}: exactly the list asked. */
static void sa_unmask(struct rt_node *n, struct rt_job *j, const char *client, const void *body,
		      size_t len, struct rt_api_sa_res *res)
{
	static const char *const known[] = { "reveals", NULL };
	static const char *const ent[] = { "index", "share", NULL };
	const size_t room = (size_t)RT_SECAGG_MAX_NEIGHBOURS * RT_SECAGG_SHARE_BYTES;
	json_t *o = NULL, *arr, *e;
	uint32_t u = rt__sa_who(j, client), *v, cnt = 0;
	const uint8_t **sh;
	uint8_t *buf, dig[16];
	char msg[sizeof(res->msg)] = "", path[32];
	size_t i;
	int err = -EINVAL;

	/* Room for the longest list: the honest shape is read straight into it. */
	v = trib_calloc(RT_SECAGG_MAX_NEIGHBOURS, sizeof(*v));
	sh = trib_calloc(RT_SECAGG_MAX_NEIGHBOURS, sizeof(*sh));
	buf = trib_malloc(room);
	if (!v || !sh || !buf) {
		rt__sa_err(res, 500, "out of memory", -1, NULL);
		goto out;
	}
	if (!rt__sa_fast_list(body, len, "reveals", "index", "share", RT_SECAGG_SHARE_BYTES,
			      RT_SECAGG_MAX_NEIGHBOURS, v, buf, &cnt)) {
		err = 0;
		goto parsed;
	}
	o = sa_body_json(body, len, known, res);
	if (!o)
		goto out;
	arr = json_object_get(o, "reveals");
	cnt = json_is_array(arr) ? (uint32_t)json_array_size(arr) : 0;
	if (!json_is_array(arr) || cnt > RT_SECAGG_MAX_NEIGHBOURS)
		snprintf(msg, sizeof(msg), "reveals: %s%u entries; allowed: an array of one "
			 "{\"index\", \"share\": hex} for each entry of GET .../secagg/unmask, 0 "
			 "to %u", json_is_array(arr) ? "an array of " : "not an array, ", cnt,
			 RT_SECAGG_MAX_NEIGHBOURS);
	if (!msg[0]) {
		err = 0;
		json_array_foreach(arr, i, e) {
			if (rt__sa_entry(e, i, "reveals", ent, path, sizeof(path), msg,
					 sizeof(msg)) ||
			    rt__sa_index(e, "index", path, &v[i], msg, sizeof(msg)) ||
			    rt__sa_hex(e, "share", path, buf + i * RT_SECAGG_SHARE_BYTES,
				       RT_SECAGG_SHARE_BYTES, msg, sizeof(msg))) {
				err = -EINVAL;
				break;
			}
		}
	}
	json_decref(o);
parsed:
	for (i = 0; i < cnt && i < RT_SECAGG_MAX_NEIGHBOURS; i++)
		sh[i] = buf + i * RT_SECAGG_SHARE_BYTES;
	rt_sa_digest(body, len, dig);
	if (u == UINT32_MAX) {
		rt__sa_gone(res, j);
		goto out;
	}
	rt__api_secagg_step(n, j);
	if (!err && rt__sa_who(j, client) != u)
		err = -EPERM;
	if (!err) {
		err = rt_secagg_unmask(j->sa_live->r, u, v, sh, cnt);
		if (err == -EINVAL)
			rt__sa_unmask_why(j->sa_live->r, u, v, sh, cnt, msg, sizeof(msg));
	}
	if ((err == -EALREADY || err == -EBUSY) &&
	    rt_sa_retry(j->sa_live, u, RT_SECAGG_UNMASK, dig) == 1)
		err = 0; /* a retry of the same request: the same answer */
	else if (!err && rt_sa_log_unmask(n, j, u, v, sh, cnt, dig))
		err = -ECANCELED;
	if (err == -EINVAL) {
		rt__sa_err(res, 400, msg, -1, NULL);
	} else if (err) {
		rt__sa_refuse(res, j, err);
	} else {
		rt__api_secagg_step(n, j);
		rt__sa_ok(res, json_pack("{s:I}", "accepted", (json_int_t)cnt));
	}
out:
	if (buf)
		explicit_bzero(buf, room); /* reveals are shares: not left in freed memory */
	trib_free(v);
	trib_free(sh);
	trib_free(buf);
}

void rt_api_secagg_call(struct rt_node *n, struct rt_job *j, const char *client,
			const char *stage, bool get, const void *body, size_t len,
			struct rt_api_sa_res *res)
{
	uint64_t slot_len, slot_off;

	memset(res, 0, sizeof(*res));
	res->round = -1;
	rt__api_secagg_step(n, j);
	if (get && (!strcmp(stage, "keys") || !strcmp(stage, "shares") ||
		    !strcmp(stage, "unmask"))) {
		rt__sa_get(j, client, stage, false, res);
	} else if (get) {
		rt__sa_err(res, 405, "method not allowed here", -1, NULL);
	} else if (!strcmp(stage, "keys")) {
		sa_keys(n, j, client, body, len, res);
	} else if (!strcmp(stage, "shares")) {
		sa_shares(n, j, client, body, len, res);
	} else if (!strcmp(stage, "unmask")) {
		sa_unmask(n, j, client, body, len, res);
	} else if (!strcmp(stage, "input")) {
		/* A resend's body is here already: answered (1), it needs no slot. */
		if (sa_input_may(j, client, len, res) ||
		    sa_input_slot(n, j, len, &slot_len, &slot_off, res))
			return;
		memcpy(shm_arena_ptr(n->arena, slot_off), body, len);
		if (sa_input_take(n, j, client, slot_off, len, res))
			shm_slot_free(n->arena, slot_off);
	} else {
		rt__sa_err(res, 404,
			   "no such secure aggregation stage (keys, shares, input, unmask)", -1,
			   NULL);
	}
}

/* @res to the client; its body is taken. */
static void sa_send(struct rt_conn *c, struct rt_api_sa_res *res)
{
	if (res->text) {
		rt_conn_respond(c, res->status, "application/json", res->text, res->text_len,
				res->extra);
		trib_free(res->text);
		res->text = NULL;
		return;
	}
	if (res->status >= 200 && res->status < 300) {
		rt__api_respond_json(c, res->status, res->body, res->extra);
		res->body = NULL;
		return;
	}
	rt_conn_error(c, res->status, res->msg, res->round, res->extra);
}

/* A small stage's body has come: its stage from the request's path. */
static void on_stage_body(struct rt_conn *c)
{
	struct rt_api_sa_res res;

	if (rt__api_job_gone(c))
		return;
	rt_api_secagg_call(N(c), R(c)->job, R(c)->client, R(c)->sa_stage, false, c->body_heap,
			   c->body_len, &res);
	sa_send(c, &res);
}

/* A stage's body for the node that runs the job's secure rounds (any stage, the input too). */
static void on_proxy_body(struct rt_conn *c)
{
	struct rt_job *j = R(c)->job;

	if (rt__api_job_gone(c))
		return;
	API(c)->cluster.secagg(API(c)->cluster.ctx, c, j, R(c)->client, R(c)->sa_stage, false,
			       c->body_heap, c->body_len);
}

/* The masked input has landed in its slot (one copy: the receive). */
static void on_input_body(struct rt_conn *c)
{
	struct rt_api_sa_res res;

	if (rt__api_job_gone(c)) /* held by its body in flight (rt__api_update_begin) */
		return;
	memset(&res, 0, sizeof(res));
	if (!sa_input_take(N(c), R(c)->job, R(c)->client, R(c)->slot_off, c->body_len, &res))
		R(c)->slot_off = UINT64_MAX; /* the tree's now */
	sa_send(c, &res);
}

/* The input's head: the caller may send now, the length is exact, and its arena slot exists. */
static void sa_input_head(struct rt_conn *c, struct rt_job *j)
{
	struct rt_api_sa_res res;
	uint64_t len = c->req.content_length;

	int may;

	memset(&res, 0, sizeof(res));
	may = sa_input_may(j, R(c)->client, len, &res);
	if (may == 1) {
		/*
		 * A resend: its answer is ready, but the body is still received (into a slot, then
		 * freed by sa_input_take): answering before it on a Connection: close
		 * request closes a socket with unread bytes, whose reset can reach the client
		 * before the answer does (seen with urllib: tests/e2e/secagg_restart.py).
		 */
		json_decref(res.body);
		memset(&res, 0, sizeof(res));
		may = 0;
	}
	if (may || sa_input_slot(N(c), j, len, &R(c)->slot_len, &R(c)->slot_off, &res)) {
		sa_send(c, &res);
		return;
	}
	rt_conn_read_body(c, shm_arena_ptr(N(c)->arena, R(c)->slot_off), len, on_input_body);
}

void rt__api_handle_secagg(struct rt_conn *c, struct rt_job *j, const char *slash,
			   enum http_method m)
{
	static const char *const stages[] = { "keys", "shares", "input", "unmask" };
	struct rt_api_sa_res res;
	bool input;
	uint64_t cap;
	size_t i;

	/* A secure job's server never sees an update in the clear: plain updates are refused. */
	if (j->secagg.on && !strcmp(slash, "/updates")) {
		rt_conn_error(c, 409, "this job takes secure aggregation: updates are sent masked "
			      "through /secagg (README \"Secure aggregation\"), not in the clear",
			      -1, NULL);
		return;
	}
	if (!j->secagg.on) {
		rt_conn_error(c, 404, "this job has no \"secagg\" field: no secure aggregation "
			      "stages", -1, NULL);
		return;
	}
	for (i = 0; i < sizeof(stages) / sizeof(stages[0]); i++) {
		char want[16];

		snprintf(want, sizeof(want), "/secagg/%s", stages[i]);
		if (!strcmp(slash, want))
			break;
	}
	if (i == sizeof(stages) / sizeof(stages[0])) {
		rt_conn_error(c, 404, "no such secure aggregation stage (keys, shares, input, "
			      "unmask)", -1, NULL);
		return;
	}
	input = !strcmp(stages[i], "input");
	if (m != HTTP_POST && (m != HTTP_GET || input)) {
		rt_conn_error(c, 405, "method not allowed here", -1, NULL);
		return;
	}
	if (!rt__api_update_auth(c, j))
		return;
	if (!R(c)->client[0]) {
		rt_conn_error(c, 403, "secure aggregation names each client by its client token",
			      -1, NULL);
		return;
	}
	R(c)->sa_stage = stages[i];
	/* In a cluster one node runs the job's secure rounds: the others pass each stage on. */
	if (j->sa_at[0] && !API(c)->cluster.secagg) {
		rt_conn_error(c, 500, "secure aggregation: this node cannot reach the node that "
			      "runs the job's rounds", -1, NULL);
		return;
	}
	if (j->sa_at[0] && m == HTTP_GET) {
		API(c)->cluster.secagg(API(c)->cluster.ctx, c, j, R(c)->client, stages[i], true,
				       NULL, 0);
		return;
	}
	if (m == HTTP_GET) {
		memset(&res, 0, sizeof(res));
		res.round = -1;
		rt__api_secagg_step(N(c), j);
		rt__sa_get(j, R(c)->client, stages[i], true, &res); /* the answer as text */
		sa_send(c, &res);
		return;
	}
	rt__api_secagg_step(N(c), j);
	/* Each stage's largest honest body (hex doubles the bytes; 128 per entry for its JSON). */
	cap = input ? (j->n_elem + 1) * 4
	      : i == 0 ? 4096
	      : 4096 + (uint64_t)RT_SECAGG_MAX_NEIGHBOURS *
			       (128 + 2 * (i == 1 ? RT_SECAGG_CT_BYTES : RT_SECAGG_SHARE_BYTES));
	if (!c->req.has_content_length || c->req.chunked) {
		rt_conn_error(c, 411, "Content-Length required", -1, NULL);
		return;
	}
	if (c->req.content_length > cap) {
		char msg[200];

		snprintf(msg, sizeof(msg), "a body of %llu bytes; the %s stage takes at most %llu",
			 (unsigned long long)c->req.content_length, stages[i],
			 (unsigned long long)cap);
		rt_conn_error(c, 413, msg, -1, NULL);
		return;
	}
	R(c)->job = j;
	/*
	 * A stage's body holds a slot or a buffer while it comes: the update path's caps on bodies
	 * in flight per client (--client-inflight) and per job hold here too (slow bodies, sent on
	 * thousands of connections with one token, would otherwise take the arena or the heap).
	 */
	R(c)->slot_len = input ? ((c->req.content_length + 63) & ~63ull) + sizeof(struct shm_seg)
			       : c->req.content_length + 1;
	if (!rt__api_body_admit(c, j, R(c)->slot_len))
		return;
	rt__api_update_begin(c, j);
	if (input && !j->sa_at[0]) {
		sa_input_head(c, j);
		return;
	}
	c->body_heap = trib_malloc(c->req.content_length + 1);
	if (!c->body_heap) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt__api_read_job_body(c, j, j->sa_at[0] ? on_proxy_body : on_stage_body);
}
