// SPDX-License-Identifier: MIT
/* POST /v1/jobs/{job}/updates: checks, the body into an arena slot, checks after it, accept. */
#include "api_priv.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fn_dequant.h"
#include "fn_fold.h"
#include "rt_flora.h"
#include "rt_metrics.h"
#include "shm_arena.h"
#include "shm_journal.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_parse.h"
#include "trib_retry.h"
#include "trib_time.h"

/* --- POST /v1/jobs/{job}/updates --- */

/* The value at @x[i] of @dtype, decoded (for a message). */
static double value_at(const void *x, uint32_t dtype, size_t i)
{
	const uint8_t *p = x;
	uint16_t h;
	float f;

	switch (dtype) {
	case SHM_DTYPE_F32:
		memcpy(&f, p + 4 * i, sizeof(f));
		return f;
	case SHM_DTYPE_F16:
	case SHM_DTYPE_BF16:
		h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
		return dtype == SHM_DTYPE_F16 ? fn_f16_to_f32(h) : fn_bf16_to_f32(h);
	default:
		return 0;
	}
}

/*
 * Finite values only: a NaN or Inf would poison the whole aggregate. And bounded: a value whose
 * product with its fold weight @w is above FN_FOLD_TERM_MAX could make the sum overflow to Inf
 * (fn_fold.h), so it is refused here rather than found in a model.
 */
int rt__api_check_values(struct rt_conn *c, const void *x, uint32_t dtype, uint64_t n, double w,
			 const char *tensor)
{
	float limit = (float)(FN_FOLD_TERM_MAX / w);
	size_t bad = 0;
	char msg[512];
	double v;

	if (!fn_dequant_check_bound(x, dtype, (size_t)n, limit, &bad))
		return 0;
	v = value_at(x, dtype, bad);
	if (!isfinite(v))
		snprintf(msg, sizeof(msg), "non-finite value (NaN or Inf) in %s%s at element %zu",
			 tensor ? "tensor " : "the update", tensor ? tensor : "", bad);
	else
		snprintf(msg, sizeof(msg), "value %g in %s%s at element %zu is over the limit: "
			 "|value| x weight (%g) may be at most 2^80 (%.3g), so that a round's sum "
			 "stays finite", v, tensor ? "tensor " : "the update", tensor ? tensor : "",
			 bad, w, FN_FOLD_TERM_MAX);
	rt__api_reject(c, RT_REJ_NONFINITE, 422, msg, -1, NULL);
	return -EDOM;
}

/* An I8 tensor's values are at most 128 x |scale|: that times @w is bounded as above. */
static int check_i8_scale(struct rt_conn *c, float scale, double w, const char *tensor)
{
	char msg[512];

	if (128.0 * fabs((double)scale) * w <= FN_FOLD_TERM_MAX)
		return 0;
	snprintf(msg, sizeof(msg), "I8 tensor %s: scale %g is over the limit: 128 x |scale| x "
		 "weight (%g) may be at most 2^80 (%.3g), so that a round's sum stays finite",
		 tensor, (double)scale, w, FN_FOLD_TERM_MAX);
	rt__api_reject(c, RT_REJ_NONFINITE, 422, msg, -1, NULL);
	return -EDOM;
}

/*
 * A safetensors update: parse it in place, match it to the schema (F32 or
 * compressed), check every value, and write one segment per schema tensor.
 * Returns 0, or -1 when the request has been answered (rejected).
 */
static int st_segments(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
		       uint64_t *segs_off)
{
	struct trib_st st = { 0 };
	const char *why = NULL;
	char msg[400], what[TRIB_ST_EXPLAIN_MAX];
	int err;

	/* A flora job's adapters are placed in the client's slot: up to rt_flora_nsegs(). */
	err = trib_st_parse(body, c->body_len, &st, &why);
	if (err == -ENOMEM) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return -1;
	}
	if (err) {
		/* A well-formed file with a dtype we do not take is a 422, the rest 400. */
		bool dtype = why && !strcmp(why, TRIB_ST_WHY_DTYPE);

		trib_st_explain(&st, NULL, 0, true, why ? why : strerror(-err), what, sizeof(what));
		snprintf(msg, sizeof(msg), "safetensors: %s", what);
		rt__api_reject(c, dtype ? RT_REJ_SHAPE : RT_REJ_MALFORMED, dtype ? 422 : 400, msg,
			       -1, NULL);
		return -1;
	}
	if (rt__api_st_sparse(j, &st)) /* <name>.indices + <name>.values (rt_api_sparse.c) */
		return rt__api_sparse_fill(c, j, body, w, segs_off, &st, "safetensors");
	return rt__api_st_fill(c, j, body, w, shm_arena_ptr(N(c)->arena, *segs_off), &st,
			       "safetensors");
}

int rt__api_st_fill(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
		    struct shm_seg *segs, struct trib_st *st, const char *label)
{
	uint64_t *offs = trib_calloc(j->nschema, sizeof(*offs));
	uint32_t *dts = trib_calloc(j->nschema, sizeof(*dts));
	float *scales = trib_calloc(j->nschema, sizeof(*scales));
	const char *why = NULL;
	char msg[400], what[TRIB_ST_EXPLAIN_MAX];
	int err, rc = -1;

	if (j->algo.frl) { /* rankings, not values (rt_api_frl.c) */
		rc = rt__api_frl_fill(c, j, body, segs, st, label);
		goto out;
	}
	if (j->flora) { /* adapters placed at the client's slot (rt_api_flora.c) */
		rc = rt__api_flora_fill(c, j, body, w, segs, st, label);
		goto out;
	}
	if (!offs || !dts || !scales) {
		trib_st_free(st);
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		goto out;
	}
	/* F32, or compressed (F16, BF16, I8 + scale): dequantised while folding. */
	err = trib_st_match_q(st, j->schema, j->nschema, body, offs, dts, scales, &why);
	if (err == -EINVAL) /* name the names: what is missing, what is not expected, ... */
		trib_st_explain(st, j->schema, j->nschema, true, why, what, sizeof(what));
	else if (err)
		snprintf(what, sizeof(what), "%s", why ? why : strerror(-err));
	trib_st_free(st);
	if (err == -ENOMEM) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		goto out;
	}
	if (err) {
		snprintf(msg, sizeof(msg), "%s: %s", label, what);
		rt__api_reject(c, err == -EDOM ? RT_REJ_NONFINITE : RT_REJ_SHAPE, 422, msg, -1,
			       NULL);
		goto out;
	}
	for (size_t i = 0, dst = 0; i < j->nschema; dst += j->schema[i].n_elem, i++) {
		const uint8_t *x = body + offs[i];

		if (offs[i] % trib_dtype_size(dts[i])) {
			snprintf(msg, sizeof(msg), "%s: tensor data must be aligned to its element "
				 "size (pad the header to a multiple of 8 bytes)", label);
			rt__api_reject(c, RT_REJ_SHAPE, 422, msg, -1, NULL);
			goto out;
		}
		if (rt__api_check_values(c, x, dts[i], j->schema[i].n_elem, w, j->schema[i].name))
			goto out;
		if (dts[i] == SHM_DTYPE_I8 && check_i8_scale(c, scales[i], w, j->schema[i].name))
			goto out;
		memset(&segs[i], 0, sizeof(segs[i]));
		segs[i].src_off = R(c)->slot_off + offs[i];
		segs[i].dst_elem = dst;
		segs[i].n_elem = j->schema[i].n_elem;
		segs[i].dtype = dts[i];
		segs[i].scale = scales[i];
	}
	rc = 0;
out:
	trib_free(offs);
	trib_free(dts);
	trib_free(scales);
	return rc;
}

/* --- --durability disk: the 202 waits until the update's log record is on disk --- */

/* Updates wait at most this long for the log; then 503 (the log keeps trying). */
#define WAL_WAIT_MAX_S 30

/* The log keeps failing: no update is answered 202 until a retry succeeds. 503 and true. */
static bool wal_refuse(struct rt_conn *c)
{
	uint32_t retry_s = 1;
	int err = rt_node_wal_refusal(N(c), &retry_s);
	char msg[320], extra[40];

	if (!err)
		return false;
	snprintf(msg, sizeof(msg), "--durability disk: the update log cannot be written (%s: %s); "
		 "no update is accepted until it can, and the server retries by itself",
		 trib_errno_name(err), strerror(-err));
	snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry_s);
	rt__api_reject(c, RT_REJ_STORE, 503, msg, -1, extra);
	return true;
}

/* Take @c off the API's list of updates waiting for the log (*pp points at it). */
static void wal_unpark(struct rt_conn **pp, struct rt_conn *c)
{
	*pp = R(c)->wnext;
	R(c)->wnext = NULL;
	R(c)->wal_ticket = 0;
	rt_conn_unpark(c);
}

/* Answer a parked update: 202 once on disk, else 503 (@err: its batch failed; 0: too slow). */
static void wal_answer(struct rt_conn *c, int err)
{
	char body[SHM_REC_BODY_MAX + 1], msg[400];
	size_t len = 0;

	if (err > 0 && !rt_job_answer_body(R(c)->ans_round, R(c)->ans_seq, body, sizeof(body),
					   &len)) {
		rt_conn_respond(c, 202, "application/json", body, len, NULL);
		return;
	}
	/*
	 * Counted in memory (the arena) but not on disk: it is not acknowledged.
	 * The log writes it when it can; a resend with the same Idempotency-Key
	 * is answered 202 only then (wal_refuse comes first).
	 */
	if (err < 0)
		snprintf(msg, sizeof(msg), "--durability disk: the update could not be written to "
			 "the log (%s: %s): not acknowledged; resend it with the same "
			 "Idempotency-Key", trib_errno_name(err), strerror(-err));
	else
		snprintf(msg, sizeof(msg), "--durability disk: the update was not on disk within "
			 "%u s: not acknowledged; resend it with the same Idempotency-Key",
			 WAL_WAIT_MAX_S);
	rt__api_reject(c, RT_REJ_STORE, 503, msg, -1, "Retry-After: 1\r\n");
}

void rt_api_wal_ready(struct rt_api *api)
{
	struct rt_conn **pp = &api->wal_waiters;

	while (*pp) {
		struct rt_conn *c = *pp;
		int st = rt_node_wal_ticket(api->node, R(c)->wal_ticket);

		if (!st) {
			pp = &R(c)->wnext;
			continue;
		}
		wal_unpark(pp, c);
		wal_answer(c, st);
	}
}

void rt__api_wal_tick(struct rt_api *api, uint64_t now)
{
	struct rt_conn **pp = &api->wal_waiters;

	while (*pp) {
		struct rt_conn *c = *pp;

		if (R(c)->deadline_ns > now) {
			pp = &R(c)->wnext;
			continue;
		}
		wal_unpark(pp, c);
		wal_answer(c, 0);
	}
}

void rt__api_wal_forget(struct rt_api *api, struct rt_conn *c)
{
	for (struct rt_conn **pp = &api->wal_waiters; *pp; pp = &R(*pp)->wnext) {
		if (*pp == c) {
			wal_unpark(pp, c);
			return;
		}
	}
}

bool rt_api_wal_waiting(const struct rt_api *api)
{
	return api->wal_waiters != NULL;
}

/* The update is committed and queued for the log as @ticket: its 202 waits for the disk. */
static void wal_park(struct rt_conn *c, uint64_t ticket, uint32_t round, uint32_t seq)
{
	struct rt_api *api = API(c);

	rt_conn_park(c);
	R(c)->wal_ticket = ticket;
	R(c)->ans_round = round;
	R(c)->ans_seq = seq;
	R(c)->deadline_ns = trib_now_ns() + WAL_WAIT_MAX_S * 1000000000ull;
	R(c)->wnext = api->wal_waiters;
	api->wal_waiters = c;
}

/*
 * A round of @j has a model that could not be stored: no update of the job
 * may be answered 202 until it is (the node retries by itself). Answers 503
 * naming the cause and returns true, or returns false.
 */
static bool store_refuse(struct rt_conn *c, struct rt_job *j)
{
	uint32_t retry_s = 1;
	int err = rt_job_store_refusal(j, &retry_s);
	char msg[320], extra[40];

	if (!err && wal_refuse(c))
		return true;
	if (!err)
		return false;
	snprintf(msg, sizeof(msg), "the model of round %u could not be stored (%s: %s); no update "
		 "is accepted until it is, and the server retries by itself",
		 j->store.what, trib_errno_name(err), strerror(-err));
	snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry_s);
	rt__api_reject(c, RT_REJ_STORE, 503, msg, -1, extra);
	return true;
}

/*
 * A raw f32 body's values are checked (rt__api_check_values' rule) piece by piece as the
 * receive lands them in the slot, while they are still in cache: the 4 MB pass from memory
 * after the last byte was ~0.1 ms of each update's stop-and-wait (docs/BENCHMARKS.md, issue 17
 * ingest). Bytes already received do not change, so a piece checked now stays checked. The
 * first bad value stops the checking; on_update_body then runs the full check, which names it.
 */
/*
 * The bound of a raw f32 body's values, FN_FOLD_TERM_MAX / w, for the weight it will be folded
 * with; fedau: its weight is not known yet, and no estimate exceeds the cutoff K.
 */
static float update_check_limit(const struct rt_job *j, double weight)
{
	double w = j->algo.par.flags & FN_PAR_UNWEIGHTED ? 1.0
		   : j->algo.fedau			    ? (double)j->algo.fedau_k
							    : weight;

	return (float)(FN_FOLD_TERM_MAX / w);
}

/*
 * More of a raw f32 body landed. It may run on a body-receive thread (rt_loop.h,
 * rt_conn_watch_body): it reads the body and R(c)'s check fields only, no job.
 */
static void on_update_bytes(struct rt_conn *c)
{
	uint64_t from = R(c)->checked, to = c->body_got & ~3ull;

	if (R(c)->check_bad || to <= from)
		return;
	if (fn_dequant_check_bound(c->body_dst + from, SHM_DTYPE_F32, (size_t)(to - from) / 4,
				   R(c)->check_limit, NULL))
		R(c)->check_bad = true;
	else
		R(c)->checked = to;
}

static void on_update_body(struct rt_conn *c)
{
	struct rt_node *n = N(c);
	struct rt_job *j = R(c)->job;
	uint8_t *body = c->body_dst;
	uint64_t segs_off = R(c)->slot_off + ((c->body_len + 63) & ~63ull);
	struct shm_seg *segs = shm_arena_ptr(n->arena, segs_off);
	uint32_t nsegs;
	uint32_t seq = 0;
	/* The weight it will be folded with: bounds its values (FN_FOLD_TERM_MAX). */
	double w = j->algo.par.flags & FN_PAR_UNWEIGHTED ? 1.0 : R(c)->weight;
	char msg[400], ans[SHM_REC_BODY_MAX + 1];
	size_t ans_len = 0;
	uint64_t ticket = 0;
	uint32_t ans_round = j->round; /* the round (version) its answer names */
	int err;

	if (rt__api_life_refuse(c, j, true)) /* deleted or done while the body arrived */
		return;
	if (j->algo.fedau && API(c)->clustered) {
		/*
		 * The controller's table weighs it (its `accept` answer, controller/ctl_fedau.c);
		 * until then its values are bounded for the largest weight an estimate can have,
		 * the cutoff K (each interval is at most K rounds).
		 */
		R(c)->weight = 1.0;
		w = (double)j->algo.fedau_k;
	} else if (j->algo.fedau) {
		/* Its client's interval estimate replaces the sample count (rt_fedau.c). */
		err = rt_fedau_weight(j, R(c)->client, R(c)->round, &R(c)->weight);
		if (err) {
			snprintf(msg, sizeof(msg), "fedau: no weight for this client's update (%s); "
				 "fedau needs a client token", strerror(-err));
			rt__api_reject(c, RT_REJ_FORBIDDEN, err == -EINVAL ? 403 : 500, msg, -1,
				       NULL);
			return;
		}
		w = R(c)->weight;
	}
	if (R(c)->np_fmt) {
		if (rt__api_np_segments(c, j, body, w, &segs_off))
			return; /* answered */
		nsegs = j->flora ? rt_flora_nsegs(j) : (uint32_t)j->nschema;
	} else if (!R(c)->safetensors) {
		/* Checked as it arrived (on_update_bytes); the whole pass again only to name a bad
		 * value, or if a piece was not seen. */
		if ((R(c)->check_bad || R(c)->checked != c->body_len) &&
		    rt__api_check_values(c, body, SHM_DTYPE_F32, j->n_elem, w, NULL))
			return;
		memset(segs, 0, sizeof(*segs));
		segs[0].src_off = R(c)->slot_off;
		segs[0].n_elem = j->n_elem;
		segs[0].dtype = SHM_DTYPE_F32;
		segs[0].scale = 1.0f;
		nsegs = 1;
	} else {
		if (st_segments(c, j, body, w, &segs_off))
			return; /* answered */
		nsegs = j->flora ? rt_flora_nsegs(j) : (uint32_t)j->nschema;
	}
	/* The store may have failed while the body was arriving. */
	if (store_refuse(c, j))
		return;
	if (API(c)->clustered) {
		/* Counted by the controller, folded where the placement says; 202 after that. */
		API(c)->cluster.update(API(c)->cluster.ctx, c, segs_off, nsegs);
		return;
	}
	{
		struct rt_cmetrics m;
		struct rt_update_in u = {
			.slot_off = R(c)->slot_off, .segs_off = segs_off, .nsegs = nsegs,
			.weight = R(c)->weight, .key = c->req.idempotency_key,
			.key_len = strlen(c->req.idempotency_key),
			.data_len = rt_api_update_bytes(c, segs_off), /* .npz: inflated too */
			.client = R(c)->client, .metrics = &m,
		};

		if (!rt__api_metrics_parse(c, &m)) /* checked at the head: the same answer */
			return;
		/* Its descriptor goes to the leaf after the 202 (rt_node_handoff_hold says why). */
		rt_node_handoff_hold(n, API(c)->handoff_after_answer);
		err = rt_job_accept_logged(n, j, R(c)->round, &u, &seq, ans, sizeof(ans),
					   &ans_len, &ticket);
		rt_node_handoff_hold(n, false);
	}
	if (err == -ESTALE) {
		snprintf(msg, sizeof(msg), "round %u closed (or grew too stale) while the update "
			 "was arriving; the job is at round %u", R(c)->round, j->round);
		rt__api_reject(c, RT_REJ_ROUND, 409, msg, j->round, NULL);
		return;
	}
	if (err == -EALREADY) {
		/* Another request of its client was counted while this body arrived. */
		snprintf(msg, sizeof(msg), "client %s already has an update counted in %s %u "
			 "(one update per client per %s)", R(c)->client,
			 j->algo.async ? "version" : "round", j->round,
			 j->algo.async ? "version" : "round");
		rt__api_reject(c, RT_REJ_CLIENT_DUP, 409, msg, j->round, NULL);
		return;
	}
	if (err == -EMLINK) {
		snprintf(msg, sizeof(msg), "X-Tributary-Metrics: round %u's updates already name "
			 "%d metrics; a round keeps at most %d names", j->round, RT_MSUM_MAX,
			 RT_MSUM_MAX);
		rt__api_reject(c, RT_REJ_MALFORMED, 400, msg, j->round, NULL);
		return;
	}
	if (err == -ENOSPC) {
		rt_job_relieve(n, j);
		rt__api_reject(c, RT_REJ_FULL, 503, "aggregation memory is full; retry shortly", -1,
		       "Retry-After: 1\r\n");
		return;
	}
	if (err) {
		trib_error("job %s round %u: accepting an update: %s", j->name, R(c)->round,
			   strerror(-err));
		rt_conn_error(c, 503, "the round's aggregation tree failed; see the server log", -1,
			      "Retry-After: 5\r\n");
		return;
	}
	/* The slot is the tree's now, and the update's record is committed: 202. */
	R(c)->slot_off = UINT64_MAX;
	n->m.bytes_received += c->req.content_length;
	if (ticket) {
		wal_park(c, ticket, ans_round, seq); /* --durability disk: 202 once on disk */
		return;
	}
	rt_conn_respond(c, 202, "application/json", ans, ans_len, NULL);
}

/*
 * Idempotency-Key: absent (false), or 1..64 visible ASCII characters; else
 * a 400 answered (true). A key the job's round has seen answers that first
 * answer again, and the new body is never read (true).
 */
static bool idempotent_answered(struct rt_conn *c, struct rt_job *j, uint32_t round)
{
	const char *key = c->req.idempotency_key;
	size_t len = strlen(key);
	char body[SHM_REC_BODY_MAX + 1], why[256];
	size_t blen = 0;
	int status = 0, err;

	if (!c->req.has_idempotency_key)
		return false;
	for (size_t i = 0; i < len && len <= SHM_REC_KEY_MAX; i++) {
		if (key[i] < 0x21 || key[i] > 0x7e) {
			len = 0;
			break;
		}
	}
	if (len == 0 || len > SHM_REC_KEY_MAX) {
		rt__api_reject(c, RT_REJ_MALFORMED, 400,
			       "Idempotency-Key: 1 to 64 visible ASCII characters (no spaces)", -1,
			       NULL);
		return true;
	}
	if (rt_job_idem_find(N(c), j, round, key, len, &status, body, sizeof(body), &blen)) {
		uint32_t keep = rt_job_idem_keep(j);
		char msg[256];

		if ((uint64_t)round + keep >= j->completed)
			return false; /* a new update (or a resend of one never counted) */
		snprintf(msg, sizeof(msg), "round %u is older than the last %u stored rounds, whose "
			 "Idempotency-Keys are kept: too old to tell whether this update was "
			 "counted; the job is at round %u", round, keep, j->round);
		rt__api_reject(c, RT_REJ_ROUND, 409, msg, j->round, NULL);
		return true;
	}
	/* --durability disk: the first request's log record may still be on its way to disk. */
	err = rt_node_wal_flush(N(c));
	if (err) {
		snprintf(why, sizeof(why), "--durability disk: the update log cannot be written "
			 "(%s: %s); resend the update with the same Idempotency-Key",
			 trib_errno_name(err), strerror(-err));
		rt__api_reject(c, RT_REJ_STORE, 503, why, -1, "Retry-After: 1\r\n");
		return true;
	}
	/* Counted once: this is the first request's answer, not a new update. */
	rt_conn_respond(c, status, "application/json", body, blen, NULL);
	return true;
}

/* The update's round (FedBuff: the version it trained from) may come in; else a 409 answered. */
static bool round_ok(struct rt_conn *c, const struct rt_job *j, uint64_t round)
{
	char msg[256];

	if (j->algo.async) {
		/*
		 * FedBuff: the header names the version trained from; staleness decides. In a
		 * cluster this node may not have seen the last version yet: the controller
		 * decides one ahead.
		 */
		uint64_t ahead = (uint64_t)j->round + (API(c)->clustered ? 1 : 0);

		if (round > ahead || (round < j->round && j->round - round > j->algo.max_staleness)) {
			snprintf(msg, sizeof(msg), "version %llu is %s: the job is at version %u "
				 "(max_staleness %u)", (unsigned long long)round,
				 round > ahead ? "from the future" : "too stale", j->round,
				 j->algo.max_staleness);
			rt__api_reject(c, RT_REJ_ROUND, 409, msg, j->round, NULL);
			return false;
		}
	} else if (round != j->round && !(API(c)->clustered && round == (uint64_t)j->round + 1)) {
		/* In a cluster this node may not have seen the last close yet: the controller
		 * decides a round ahead. */
		snprintf(msg, sizeof(msg), "round mismatch: the job is at round %u, the update is "
			 "for round %llu (%s)", j->round, (unsigned long long)round,
			 round < j->round ? "stale" : "future");
		rt__api_reject(c, RT_REJ_ROUND, 409, msg, j->round, NULL);
		return false;
	}
	return true;
}

void rt__api_handle_update(struct rt_conn *c, struct rt_job *j)
{
	struct rt_node *n = N(c);
	uint64_t round, samples = 1, model_bytes = j->n_elem * sizeof(float), need;
	char msg[256];
	int err;

	if (!rt__api_update_auth(c, j))
		return;
	if (store_refuse(c, j))
		return;
	R(c)->np_fmt = (uint8_t)rt__api_np_format(c->req.content_type);
	if (rt__api_ctype_is(c->req.content_type, "application/octet-stream")) {
		R(c)->safetensors = false;
	} else if (rt__api_ctype_is(c->req.content_type, "application/x-safetensors")) {
		R(c)->safetensors = true;
	} else if (R(c)->np_fmt) {
		R(c)->safetensors = false;
		if (!rt__api_np_admit(c, j))
			return;
	} else {
		rt__api_reject(c, RT_REJ_MEDIA_TYPE, 415,
		       "Content-Type must be application/octet-stream (raw little-endian f32), "
		       "application/x-safetensors, application/x-npy (one tensor) or "
		       "application/x-npz (np.savez, np.savez_compressed)",
		       -1, NULL);
		return;
	}
	if (!rt__api_frl_admit(c, j))
		return;
	if (!c->req.x_round[0] || trib_parse_u64(c->req.x_round, 0, UINT32_MAX, &round)) {
		rt__api_reject(c, RT_REJ_MALFORMED, 400,
			       "X-Tributary-Round: required, a round number", -1, NULL);
		return;
	}
	/* Absent is 1; present it must be a number (an empty value is not one). */
	if (c->req.has_x_samples &&
	    trib_parse_u64(c->req.x_samples, 1, 1ull << 40, &samples)) {
		rt__api_reject(c, RT_REJ_MALFORMED, 400,
		       "X-Tributary-Samples: a whole number of samples, at least 1", -1, NULL);
		return;
	}
	{
		struct rt_cmetrics m; /* checked now: a bad header is a 400 before the body */

		if (!rt__api_metrics_parse(c, &m))
			return;
	}
	/* A resend of an update already answered: before the round check (it may have closed). */
	if (idempotent_answered(c, j, (uint32_t)round))
		return;
	/* Done (410) or paused (503): after the resend check, which answers what was taken. */
	if (rt__api_life_refuse(c, j, false))
		return;
	if (!round_ok(c, j, round))
		return;
	if (!rt__api_task_admit(c, j, (uint32_t)round))
		return; /* selection: only clients with a task of the round submit */
	if (!c->req.has_content_length || c->req.chunked) {
		rt__api_reject(c, RT_REJ_NO_LENGTH, 411,
			       "Content-Length required (no chunked uploads)", -1, NULL);
		return;
	}
	need = R(c)->safetensors ? model_bytes + ST_HEADER_ALLOWANCE : model_bytes;
	if (R(c)->np_fmt)
		need = rt__api_np_body_max(j); /* float64 is twice the model */
	if (c->req.content_length > need) {
		snprintf(msg, sizeof(msg),
			 "body of %llu bytes is larger than the model (%llu "
			 "bytes of f32%s)",
			 (unsigned long long)c->req.content_length, (unsigned long long)model_bytes,
			 R(c)->np_fmt ? " as float64 plus room for headers"
			 : R(c)->safetensors ? " plus 1 MiB of header" : "");
		rt__api_reject(c, RT_REJ_TOO_LARGE, 413, msg, -1, NULL);
		return;
	}
	if (j->flora && !R(c)->safetensors && !R(c)->np_fmt) {
		rt__api_reject(c, RT_REJ_MEDIA_TYPE, 415, "a flora update is named tensors (each "
			       "pair's a and b, ranks of the client's choosing): "
			       "application/x-safetensors or application/x-npz, not raw f32", -1,
			       NULL);
		return;
	}
	if (!R(c)->safetensors && !R(c)->np_fmt && c->req.content_length != model_bytes) {
		snprintf(msg, sizeof(msg), "raw update has %llu bytes; the model needs %llu "
			 "(%llu f32 values)", (unsigned long long)c->req.content_length,
			 (unsigned long long)model_bytes, (unsigned long long)j->n_elem);
		rt__api_reject(c, RT_REJ_SHAPE, 422, msg, -1, NULL);
		return;
	}
	R(c)->slot_len = ((c->req.content_length + 63) & ~63ull) + rt__api_np_room(c, j) +
			 rt__api_segs_max(j) * sizeof(struct shm_seg) + j->nschema * sizeof(struct shm_sparse);
	if (!rt__api_update_admit(c, j, R(c)->slot_len))
		return; /* one update per client; bodies in flight per client and job */
	err = shm_slot_alloc(n->arena, R(c)->slot_len, &R(c)->slot_off);
	if (err) {
		R(c)->slot_off = UINT64_MAX;
		rt_job_relieve(n, j);
		rt__api_reject(c, RT_REJ_FULL, 503, "aggregation memory is full; retry shortly", -1,
		       "Retry-After: 1\r\n");
		return;
	}
	R(c)->job = j;
	R(c)->round = (uint32_t)round;
	R(c)->weight = (double)samples;
	rt__api_update_begin(c, j);
	R(c)->checked = 0;
	R(c)->check_bad = false;
	R(c)->check_limit = update_check_limit(j, R(c)->weight);
	if (!R(c)->safetensors && !R(c)->np_fmt)
		rt_conn_watch_body(c, on_update_bytes);
	rt_conn_read_body(c, shm_arena_ptr(n->arena, R(c)->slot_off), c->req.content_length,
			  on_update_body);
}


uint64_t rt__api_segs_max(const struct rt_job *j)
{
	return j->flora ? rt_flora_nsegs(j) : j->nschema;
}
