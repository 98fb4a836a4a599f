// SPDX-License-Identifier: MIT
/* HTTP API v1: jobs, updates, models, health and metrics, on top of the gateway's connection verbs. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl_store.h"
#include "ebpf_abi.h"
#include "ebpf_route.h"
#include "fn_dp.h"
#include "fn_dequant.h"
#include "fn_fold.h"
#include "rt_agent.h"
#include "rt_algo.h"
#include "rt_gw.h"
#include "rt_node.h"
#include "trib_safetensors.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"
#include "trib_token.h"
#include "trib_parse.h"

#define JOB_BODY_MAX (1u << 20)          /* JSON control bodies */
#define ST_HEADER_ALLOWANCE (1ull << 20) /* safetensors header room over the model's bytes */
#define LONG_POLL_MAX_S 60

static bool auth_admin(struct rt_conn *c)
{
	const char *tok;

	return !rt_http_bearer(&c->req, &tok) && trib_token_eq(tok, c->node->admin_token);
}

static bool auth_job(struct rt_conn *c, const struct rt_job *j)
{
	const char *tok;

	if (rt_http_bearer(&c->req, &tok))
		return false;
	return trib_token_eq(tok, j->token) || trib_token_eq(tok, c->node->admin_token);
}

static void reject(struct rt_conn *c, enum rt_reject why, int status, const char *msg,
		   long long round, const char *extra)
{
	c->node->m.rejected[why]++;
	rt_conn_error(c, status, msg, round, extra);
}

/* The job's (or the admin) token, or a 401 answered: false. */
static bool require_job(struct rt_conn *c, const struct rt_job *j)
{
	if (auth_job(c, j))
		return true;
	reject(c, RT_REJ_AUTH, 401, "missing or wrong bearer token for this job", -1, NULL);
	return false;
}

static void respond_json(struct rt_conn *c, int status, json_t *obj, const char *extra)
{
	char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	if (!s) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt_conn_respond(c, status, "application/json", s, strlen(s), extra);
	free(s); /* jansson's allocation */
}

/* "application/json; charset=utf-8" matches "application/json". */
static bool ctype_is(const char *ctype, const char *want)
{
	size_t n = strlen(want);

	while (*ctype == ' ')
		ctype++;
	return !strncasecmp(ctype, want, n) &&
	       (ctype[n] == '\0' || ctype[n] == ';' || ctype[n] == ' ');
}

/* --- POST /v1/jobs --- */

int rt_api_job_build(struct rt_node *n, const uint8_t *buf, size_t blen, const char *token,
		     bool dry, struct rt_job **out, char *msg, size_t cap, uint64_t *n_elem_out)
{
	static const char *const known[] = { "name", "clients_per_round", "algorithm", "params",
					      "tensors", "fan_in", "min_clients", "round_timeout_s",
					      NULL };
	json_error_t jerr;
	json_t *o = json_loadb((const char *)buf, blen, 0, &jerr);
	json_t *name, *cpr, *algo, *params, *tensors, *fanin, *minc, *tmo, *v;
	struct rt_job_spec spec;
	struct rt_algo alg;
	json_t *aparams = NULL;
	struct trib_tensor *schema = NULL;
	struct rt_job *j;
	const char *key, *why = NULL;
	uint64_t n_elem = 0;
	size_t nschema = 0;
	int status = 500;
	int err;

	if (!o || !json_is_object(o)) {
		snprintf(msg, cap, "body is not a JSON object%s%s", o ? "" : ": ",
			 o ? "" : jerr.text);
		status = 400;
		goto out;
	}
	json_object_foreach(o, key, v) {
		size_t i;

		for (i = 0; known[i] && strcmp(known[i], key); i++)
			;
		if (!known[i] && !rt_algo_is_param(key)) {
			snprintf(msg, cap, "%.64s: unknown field", key);
			status = 400;
			goto out;
		}
	}
	name = json_object_get(o, "name");
	cpr = json_object_get(o, "clients_per_round");
	algo = json_object_get(o, "algorithm");
	params = json_object_get(o, "params");
	tensors = json_object_get(o, "tensors");
	fanin = json_object_get(o, "fan_in");
	minc = json_object_get(o, "min_clients");
	tmo = json_object_get(o, "round_timeout_s");
	if (!json_is_string(name) || !trib_job_name_valid(json_string_value(name))) {
		status = 400;
		snprintf(msg, cap, "%s", "name: required, 1-63 characters of A-Z a-z 0-9 . _ -, not starting "
			      "with . or -");
		goto out;
	}
	if (json_is_string(json_object_get(o, "algorithm")) &&
	    !strcmp(json_string_value(json_object_get(o, "algorithm")), "fedbuff")) {
		/* FedBuff has buffers, not rounds: a version every buffer_size updates. */
		json_t *k = json_object_get(o, "buffer_size");

		if (cpr && (!json_is_integer(k) || !json_equal(cpr, k))) {
			status = 400;
			snprintf(msg, cap, "%s", "clients_per_round: for fedbuff, buffer_size sets it "
				      "(leave clients_per_round out)");
			goto out;
		}
		if (json_is_integer(k))
			cpr = k;
	}
	if (!json_is_integer(cpr) || json_integer_value(cpr) < 1 ||
	    json_integer_value(cpr) > 1000000) {
		status = 400;
		snprintf(msg, cap, "%s", "clients_per_round: required, an integer from 1 to 1000000");
		goto out;
	}
	(void)algo;
	if (rt_algo_parse(o, &alg, msg, cap)) {
		status = 400;
		goto out;
	}
	if (fanin && (!json_is_integer(fanin) || json_integer_value(fanin) < 1 ||
		      json_integer_value(fanin) > 4096)) {
		status = 400;
		snprintf(msg, cap, "%s", "fan_in: an integer from 1 to 4096");
		goto out;
	}
	if (minc && (!json_is_integer(minc) || json_integer_value(minc) < 1 ||
		     json_integer_value(minc) > json_integer_value(cpr))) {
		status = 400;
		snprintf(msg, cap, "%s", "min_clients: an integer from 1 to clients_per_round");
		goto out;
	}
	if (tmo && (!json_is_integer(tmo) || json_integer_value(tmo) < 1 ||
		    json_integer_value(tmo) > 86400 * 7)) {
		status = 400;
		snprintf(msg, cap, "%s", "round_timeout_s: seconds, an integer from 1 to 604800");
		goto out;
	}
	if (!!params == !!tensors) {
		status = 400;
		snprintf(msg, cap, "%s", "give exactly one of \"params\" and \"tensors\"");
		goto out;
	}
	if (params) {
		if (!json_is_integer(params) || json_integer_value(params) < 1 ||
		    json_integer_value(params) > (1ll << 32)) {
			status = 400;
			snprintf(msg, cap, "%s", "params: an integer from 1 to 2^32");
			goto out;
		}
		schema = trib_calloc(1, sizeof(*schema));
		if (!schema) {
			status = 500;
			snprintf(msg, cap, "%s", "out of memory");
			goto out;
		}
		strcpy(schema->name, "weights");
		schema->dtype = SHM_DTYPE_F32;
		schema->ndim = 1;
		schema->shape[0] = schema->n_elem = (uint64_t)json_integer_value(params);
		nschema = 1;
		n_elem = schema->n_elem;
	} else {
		err = rt_schema_from_json(tensors, &schema, &nschema, &n_elem, &why);
		if (err) {
			status = err == -ENOMEM ? 500 : 400;
			snprintf(msg, cap, "%s", why ? why : "out of memory");
			goto out;
		}
	}
	if (alg.rule == FN_RULE_KRUM) {
		uint64_t k = (uint64_t)json_integer_value(cpr);

		if (k < 2ull * alg.f + 3 || alg.m > k - alg.f) {
			snprintf(msg, cap, "f, m: krum needs clients_per_round >= 2f + 3 and "
				 "1 <= m <= clients_per_round - f (got f %u, m %u, %llu clients)",
				 alg.f, alg.m, (unsigned long long)k);
			status = 400;
			goto out;
		}
	}
	/* Exact robust rules keep a whole round of updates in the arena. */
	if (alg.rule && (uint64_t)json_integer_value(cpr) * (n_elem * 4 + 65536) >
			       shm_arena_size(n->arena) / 2) {
		snprintf(msg, cap, "clients_per_round: %s keeps every update of a round "
			 "(%llu x %llu bytes), more than half this node's arena (%zu MiB)",
			 alg.name, (unsigned long long)json_integer_value(cpr),
			 (unsigned long long)n_elem * 4, shm_arena_size(n->arena) >> 20);
		status = 400;
		goto out;
	}
	if (SHM_ACC_HDR + n_elem * 4 > shm_arena_size(n->arena) / 4) {
		snprintf(msg, cap,
			 "model of %llu parameters does not fit this node's arena (%zu MiB); "
			 "start tributary with a larger --arena-mb",
			 (unsigned long long)n_elem, shm_arena_size(n->arena) >> 20);
		status = 400;
		goto out;
	}
	if (n->agent && (strcmp(alg.name, "fedavg") || alg.needs_model || alg.rule || alg.async ||
			 (alg.par.flags & FN_PAR_DP) || minc || tmo)) {
		/*
		 * Across nodes, the round's top folds the nodes' sums and divides once:
		 * exact for FedAvg on weights. Server optimisers, deltas, DP noise, robust
		 * rules, buffers and deadlines need the round's state in one place first.
		 */
		status = 400;
		snprintf(msg, cap, "not supported across nodes yet: %s; a cluster runs fedavg on "
			 "weights (weighted or unweighted, clipping allowed) without min_clients "
			 "or round_timeout_s", minc || tmo ? "min_clients/round_timeout_s" :
			 alg.name);
		goto out;
	}
	if (rt_job_find(n, json_string_value(name))) {
		status = 409;
		snprintf(msg, cap, "%s", "a job with this name exists");
		goto out;
	}
	if (n_elem_out)
		*n_elem_out = n_elem;
	if (dry) {
		status = 200;
		goto out;
	}
	memset(&spec, 0, sizeof(spec));
	spec.name = json_string_value(name);
	spec.cpr = (uint32_t)json_integer_value(cpr);
	spec.fanin = fanin ? (uint32_t)json_integer_value(fanin) : 0;
	spec.min_clients = minc ? (uint32_t)json_integer_value(minc) : 0;
	spec.round_timeout_s = tmo ? (uint32_t)json_integer_value(tmo) : 0;
	spec.algo = &alg;
	/* Store the algorithm's parameters as given: a restart parses them again. */
	aparams = json_object();
	json_object_foreach(o, key, v)
		if (rt_algo_is_param(key) && strcmp(key, "algorithm"))
			json_object_set(aparams, key, v);
	spec.params = aparams;
	err = rt_job_create(n, &spec, schema, nschema, &j);
	if (err) {
		status = err == -EEXIST ? 409 : 500;
		snprintf(msg, cap, "%s", err == -EEXIST ? "a job with this name exists" :
					       "could not create the job (see the server log)");
		goto out;
	}
	schema = NULL; /* the job owns it */
	if (token)
		snprintf(j->token, sizeof(j->token), "%s", token); /* the cluster's */
	if (out)
		*out = j;
	status = 201;
out:
	trib_free(schema);
	json_decref(aparams);
	json_decref(o);
	return status;
}

static void on_create_body(struct rt_conn *c)
{
	struct rt_job *j = NULL;
	char msg[320];
	int status;

	if (c->node->agent) {
		/* Cluster-wide: checked here, named and recorded by the controller. */
		status = rt_api_job_build(c->node, c->body_heap, c->body_len, NULL, true, NULL, msg,
					  sizeof(msg), NULL);
		if (status == 200)
			rt_agent_job_create(c);
		else
			rt_conn_error(c, status, msg, -1, NULL);
		return;
	}
	status = rt_api_job_build(c->node, c->body_heap, c->body_len, NULL, false, &j, msg,
				  sizeof(msg), NULL);
	if (status != 201) {
		rt_conn_error(c, status, msg, -1, NULL);
		return;
	}
	respond_json(c, 201, json_pack("{s:s, s:s, s:i}", "job", j->name, "token", j->token,
				       "round", 0), NULL);
}

static void handle_create(struct rt_conn *c)
{
	if (!auth_admin(c)) {
		reject(c, RT_REJ_AUTH, 401, "creating jobs takes the admin token (Bearer)", -1,
		       NULL);
		return;
	}
	/* The body is parsed as JSON whatever it is labelled (curl -d says form-urlencoded). */
	if (!c->req.has_content_length || c->req.chunked) {
		rt_conn_error(c, 411, "Content-Length required", -1, NULL);
		return;
	}
	if (c->req.content_length > JOB_BODY_MAX) {
		rt_conn_error(c, 413, "job definition larger than 1 MiB", -1, NULL);
		return;
	}
	c->body_heap = trib_malloc(c->req.content_length + 1);
	if (!c->body_heap) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt_conn_read_body(c, c->body_heap, c->req.content_length, on_create_body);
}

/* --- GET /v1/jobs, GET /v1/jobs/{job} --- */

static json_t *job_json(struct rt_node *n, struct rt_job *j)
{
	json_t *tensors = json_loads(j->schema_json, 0, NULL);

	(void)n;
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:o}", "job",
			 j->name, "round", (json_int_t)j->round, "model_round",
			 (json_int_t)j->completed, "received",
			 (json_int_t)(j->open ? j->open->received : 0), "clients_per_round",
			 (json_int_t)j->cpr, "algorithm", j->algorithm, "params",
			 (json_int_t)j->n_elem, "fan_in",
			 (json_int_t)(j->open ? j->open->fanin : j->fanin), "accepted_total",
			 (json_int_t)j->accepted_total, "last_round_ms",
			 (json_int_t)j->last_round_ms, "tensors",
			 tensors ? tensors : json_array());
}

/* job_json, plus what the planner and the deadline add. */
static json_t *job_json_full(struct rt_node *n, struct rt_job *j)
{
	json_t *o = job_json(n, j);

	if (!o)
		return NULL;
	/* No fixed fan-in and no round open: the planner decides at the next round. */
	if (!j->fanin && !j->open)
		json_object_set_new(o, "fan_in", json_null());
	json_object_set_new(o, "fan_in_planned", json_boolean(!j->fanin));
	json_object_set_new(o, "min_clients", json_integer(j->min_clients ? j->min_clients :
							   j->cpr));
	json_object_set_new(o, "round_timeout_s", j->round_timeout_s ?
					json_integer(j->round_timeout_s) : json_null());
	json_object_set_new(o, "arrival_rate", json_real(j->arrival_rate));
	json_object_set_new(o, "parameters", rt_algo_json(&j->algo));
	if (j->algo.par.flags & FN_PAR_DP) {
		double eps = 0, order = 0;

		/* RDP accountant: every client takes part in every round (no sampling). */
		if (j->completed)
			fn_dp_epsilon(j->algo.par.dp_noise_multiplier, j->completed,
				      j->algo.dp_delta, &eps, &order);
		json_object_set_new(o, "privacy", json_pack("{s:f, s:f, s:I}", "epsilon", eps,
							    "delta", j->algo.dp_delta, "rounds",
							    (json_int_t)j->completed));
	}
	if (j->open)
		json_object_set_new(o, "leaves", json_integer(j->open->nleaves));
	return o;
}

static void handle_list(struct rt_conn *c)
{
	json_t *arr = json_array();

	if (!auth_admin(c)) {
		reject(c, RT_REJ_AUTH, 401, "listing jobs takes the admin token (Bearer)", -1, NULL);
		json_decref(arr);
		return;
	}
	for (struct rt_job *j = c->node->jobs; j; j = j->next)
		json_array_append_new(arr, job_json_full(c->node, j));
	respond_json(c, 200, json_pack("{s:o}", "jobs", arr), NULL);
}

/* --- POST /v1/jobs/{job}/updates --- */

/* Finite values only: a NaN or Inf would poison the whole aggregate. */
static int check_finite(struct rt_conn *c, const float *x, uint64_t n, const char *tensor)
{
	size_t bad = 0;
	char msg[400];

	if (!fn_check_finite_f32(x, (size_t)n, &bad))
		return 0;
	snprintf(msg, sizeof(msg), "non-finite value (NaN or Inf) in %s%s at element %zu",
		 tensor ? "tensor " : "the update", tensor ? tensor : "", bad);
	reject(c, RT_REJ_NONFINITE, 422, msg, -1, NULL);
	return -EDOM;
}

/* F16 and BF16 can hold NaN and Inf too; int8 cannot. */
static int check_finite_q(struct rt_conn *c, const void *x, uint32_t dtype, uint64_t n,
			  const char *tensor)
{
	size_t bad = 0;
	char msg[400];

	if (dtype == SHM_DTYPE_I8 || !fn_dequant_check_finite(x, dtype, (size_t)n, &bad))
		return 0;
	snprintf(msg, sizeof(msg), "non-finite value (NaN or Inf) in tensor %s at element %zu",
		 tensor, bad);
	reject(c, RT_REJ_NONFINITE, 422, msg, -1, NULL);
	return -EDOM;
}

/*
 * A safetensors update: parse it in place, match it to the schema (F32 or
 * compressed), check every value, and write one segment per schema tensor.
 * Returns 0, or -1 when the request has been answered (rejected).
 */
static int st_segments(struct rt_conn *c, struct rt_job *j, uint8_t *body, struct shm_seg *segs)
{
	uint64_t *offs = trib_calloc(j->nschema, sizeof(*offs));
	uint32_t *dts = trib_calloc(j->nschema, sizeof(*dts));
	float *scales = trib_calloc(j->nschema, sizeof(*scales));
	struct trib_st st = { 0 };
	const char *why = NULL;
	char msg[400];
	int err, rc = -1;

	if (!offs || !dts || !scales) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		goto out;
	}
	err = trib_st_parse(body, c->body_len, &st, &why);
	if (err) {
		/* A well-formed file with a dtype we do not take is a 422, the rest 400. */
		bool dtype = why && !strcmp(why, TRIB_ST_WHY_DTYPE);

		snprintf(msg, sizeof(msg), "safetensors: %s", why ? why : strerror(-err));
		reject(c, dtype ? RT_REJ_SHAPE : RT_REJ_MALFORMED, dtype ? 422 : 400, msg, -1,
		       NULL);
		goto out;
	}
	/* F32, or compressed (F16, BF16, I8 + scale): dequantised while folding. */
	err = trib_st_match_q(&st, j->schema, j->nschema, body, offs, dts, scales, &why);
	trib_st_free(&st);
	if (err) {
		snprintf(msg, sizeof(msg), "safetensors: %s", why ? why : strerror(-err));
		reject(c, err == -EDOM ? RT_REJ_NONFINITE : RT_REJ_SHAPE, 422, msg, -1, NULL);
		goto out;
	}
	for (size_t i = 0, dst = 0; i < j->nschema; dst += j->schema[i].n_elem, i++) {
		const uint8_t *x = body + offs[i];

		if (offs[i] % trib_dtype_size(dts[i])) {
			reject(c, RT_REJ_SHAPE, 422,
			       "safetensors: tensor data must be aligned to its element size (pad "
			       "the header to a multiple of 8 bytes)",
			       -1, NULL);
			goto out;
		}
		if (dts[i] == SHM_DTYPE_F32 ?
			    check_finite(c, (const float *)(const void *)x, j->schema[i].n_elem,
					 j->schema[i].name) :
			    check_finite_q(c, x, dts[i], j->schema[i].n_elem, j->schema[i].name))
			goto out;
		memset(&segs[i], 0, sizeof(segs[i]));
		segs[i].src_off = c->slot_off + offs[i];
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

static void on_update_body(struct rt_conn *c)
{
	struct rt_node *n = c->node;
	struct rt_job *j = c->job;
	uint8_t *body = c->body_dst;
	uint64_t segs_off = c->slot_off + ((c->body_len + 63) & ~63ull);
	struct shm_seg *segs = shm_arena_ptr(n->arena, segs_off);
	uint32_t nsegs;
	uint32_t seq = 0, accepted_round;
	char msg[400];
	int err;

	if (!c->safetensors) {
		if (check_finite(c, (const float *)(void *)body, j->n_elem, NULL))
			return;
		memset(segs, 0, sizeof(*segs));
		segs[0].src_off = c->slot_off;
		segs[0].n_elem = j->n_elem;
		segs[0].dtype = SHM_DTYPE_F32;
		segs[0].scale = 1.0f;
		nsegs = 1;
	} else {
		if (st_segments(c, j, body, segs))
			return; /* answered */
		nsegs = (uint32_t)j->nschema;
	}
	if (n->agent) {
		/* Counted by the controller, folded where the placement says; 202 after that. */
		rt_agent_update(c, segs_off, nsegs);
		return;
	}
	accepted_round = j->round;
	err = rt_job_accept(n, j, c->round, c->slot_off, segs_off, nsegs, c->weight, &seq);
	if (err == -ESTALE) {
		snprintf(msg, sizeof(msg), "round %u closed (or grew too stale) while the update "
			 "was arriving; the job is at round %u", c->round, j->round);
		reject(c, RT_REJ_ROUND, 409, msg, j->round, NULL);
		return;
	}
	if (err == -ENOSPC) {
		rt_job_relieve(n, j);
		reject(c, RT_REJ_FULL, 503, "aggregation memory is full; retry shortly", -1,
		       "Retry-After: 1\r\n");
		return;
	}
	if (err) {
		trib_error("job %s round %u: accepting an update: %s", j->name, c->round,
			   strerror(-err));
		rt_conn_error(c, 503, "the round's aggregation tree failed; see the server log", -1,
			      "Retry-After: 5\r\n");
		return;
	}
	/* The slot is the tree's now. */
	c->slot_off = UINT64_MAX;
	n->m.bytes_received += c->body_len;
	{
		char buf[96];
		int len = snprintf(buf, sizeof(buf), "{\"round\":%u,\"received\":%u}",
				   j->algo.async ? accepted_round : c->round, seq + 1);

		rt_conn_respond(c, 202, "application/json", buf, (size_t)len, NULL);
	}
}

static void handle_update(struct rt_conn *c, struct rt_job *j)
{
	struct rt_node *n = c->node;
	uint64_t round, samples = 1, model_bytes = j->n_elem * sizeof(float), need;
	char msg[256];
	int err;

	if (!require_job(c, j))
		return;
	if (ctype_is(c->req.content_type, "application/octet-stream")) {
		c->safetensors = false;
	} else if (ctype_is(c->req.content_type, "application/x-safetensors")) {
		c->safetensors = true;
	} else {
		reject(c, RT_REJ_MEDIA_TYPE, 415,
		       "Content-Type must be application/octet-stream (raw little-endian f32) or "
		       "application/x-safetensors",
		       -1, NULL);
		return;
	}
	if (!c->req.x_round[0] || trib_parse_u64(c->req.x_round, 0, UINT32_MAX, &round)) {
		reject(c, RT_REJ_MALFORMED, 400, "X-Tributary-Round: required, a round number", -1,
		       NULL);
		return;
	}
	if (c->req.x_samples[0] &&
	    trib_parse_u64(c->req.x_samples, 1, 1ull << 40, &samples)) {
		reject(c, RT_REJ_MALFORMED, 400,
		       "X-Tributary-Samples: a whole number of samples, at least 1", -1, NULL);
		return;
	}
	if (j->algo.async) {
		/* FedBuff: the header names the version trained from; staleness decides. */
		if (round > j->round || j->round - round > j->algo.max_staleness) {
			snprintf(msg, sizeof(msg), "version %llu is %s: the job is at version %u "
				 "(max_staleness %u)", (unsigned long long)round,
				 round > j->round ? "from the future" : "too stale", j->round,
				 j->algo.max_staleness);
			reject(c, RT_REJ_ROUND, 409, msg, j->round, NULL);
			return;
		}
	} else if (round != j->round && !(n->agent && round == (uint64_t)j->round + 1)) {
		/* In a cluster this node may not have seen the last close yet: the controller
		 * decides a round ahead. */
		snprintf(msg, sizeof(msg), "round mismatch: the job is at round %u, the update is "
			 "for round %llu (%s)", j->round, (unsigned long long)round,
			 round < j->round ? "stale" : "future");
		reject(c, RT_REJ_ROUND, 409, msg, j->round, NULL);
		return;
	}
	if (!c->req.has_content_length || c->req.chunked) {
		reject(c, RT_REJ_NO_LENGTH, 411, "Content-Length required (no chunked uploads)", -1,
		       NULL);
		return;
	}
	need = c->safetensors ? model_bytes + ST_HEADER_ALLOWANCE : model_bytes;
	if (c->req.content_length > need) {
		snprintf(msg, sizeof(msg), "body of %llu bytes is larger than the model (%llu "
			 "bytes of f32%s)", (unsigned long long)c->req.content_length,
			 (unsigned long long)model_bytes, c->safetensors ? " plus 1 MiB of header" : "");
		reject(c, RT_REJ_TOO_LARGE, 413, msg, -1, NULL);
		return;
	}
	if (!c->safetensors && c->req.content_length != model_bytes) {
		snprintf(msg, sizeof(msg), "raw update has %llu bytes; the model needs %llu "
			 "(%llu f32 values)", (unsigned long long)c->req.content_length,
			 (unsigned long long)model_bytes, (unsigned long long)j->n_elem);
		reject(c, RT_REJ_SHAPE, 422, msg, -1, NULL);
		return;
	}
	c->slot_len = ((c->req.content_length + 63) & ~63ull) + j->nschema * sizeof(struct shm_seg);
	err = shm_slot_alloc(n->arena, c->slot_len, &c->slot_off);
	if (err) {
		c->slot_off = UINT64_MAX;
		rt_job_relieve(n, j);
		reject(c, RT_REJ_FULL, 503, "aggregation memory is full; retry shortly", -1,
		       "Retry-After: 1\r\n");
		return;
	}
	c->job = j;
	c->round = (uint32_t)round;
	c->weight = (double)samples;
	rt_conn_read_body(c, shm_arena_ptr(n->arena, c->slot_off), c->req.content_length,
			  on_update_body);
}

/* --- GET/PUT /v1/jobs/{job}/model --- */

static void serve_model(struct rt_conn *c, struct rt_job *j, struct rt_blob *b)
{
	char extra[256];

	snprintf(extra, sizeof(extra), "X-Tributary-Round: %u\r\nETag: \"%s-v%u\"\r\n", b->version,
		 j->name, b->version);
	rt_conn_respond_blob(c, 200, "application/x-safetensors", b, extra);
}

void rt_api_on_wake(struct rt_conn *c, bool timed_out)
{
	struct rt_job *j = c->job;
	struct rt_blob *b;

	if (timed_out || j->completed <= c->wait_after) {
		char extra[64];

		snprintf(extra, sizeof(extra), "X-Tributary-Round: %u\r\n", j->completed);
		rt_conn_respond(c, 304, NULL, NULL, 0, extra);
		return;
	}
	b = rt_job_model(c->node, j, j->completed);
	if (!b) {
		rt_conn_error(c, 500, "model unavailable", -1, NULL);
		return;
	}
	serve_model(c, j, b);
}

static void handle_model_get(struct rt_conn *c, struct rt_job *j)
{
	char val[32];
	uint64_t v;
	struct rt_blob *b;

	if (!require_job(c, j))
		return;
	if (!rt_http_query_get(c->req.query, "round", val, sizeof(val))) {
		if (trib_parse_u64(val, 0, UINT32_MAX, &v)) {
			rt_conn_error(c, 400, "round: a round number", -1, NULL);
			return;
		}
		b = rt_job_model(c->node, j, (uint32_t)v);
		if (!b) {
			char msg[128];

			snprintf(msg, sizeof(msg), "no model for round %llu (the latest is %u)",
				 (unsigned long long)v, j->completed);
			rt_conn_error(c, 404, msg, j->completed, NULL);
			return;
		}
		serve_model(c, j, b);
		return;
	}
	if (!rt_http_query_get(c->req.query, "after", val, sizeof(val))) {
		uint64_t timeout = LONG_POLL_MAX_S;
		char tv[32];

		if (trib_parse_u64(val, 0, UINT32_MAX, &v)) {
			rt_conn_error(c, 400, "after: a round number", -1, NULL);
			return;
		}
		if (!rt_http_query_get(c->req.query, "timeout", tv, sizeof(tv)) &&
		    trib_parse_u64(tv, 0, LONG_POLL_MAX_S, &timeout)) {
			rt_conn_error(c, 400, "timeout: seconds, at most 60", -1, NULL);
			return;
		}
		if (j->completed <= v) {
			rt_conn_park(c, j, (uint32_t)v, trib_now_ns() + timeout * 1000000000ull);
			return;
		}
	}
	b = rt_job_model(c->node, j, j->completed);
	if (!b) {
		rt_conn_error(c, 500, "model unavailable", -1, NULL);
		return;
	}
	serve_model(c, j, b);
}

static void on_model_put_body(struct rt_conn *c)
{
	struct rt_job *j = c->job;
	float *data = NULL;
	char msg[400];
	int err;

	if (!c->safetensors) {
		if (check_finite(c, (const float *)(void *)c->body_heap, j->n_elem, NULL))
			return;
		data = (float *)(void *)c->body_heap;
		err = rt_job_set_initial(c->node, j, data);
	} else {
		struct trib_st st = { 0 };
		uint64_t *offs = trib_calloc(j->nschema, sizeof(*offs));
		const char *why = NULL;

		data = trib_malloc(j->n_elem * sizeof(float));
		if (!offs || !data) {
			trib_free(offs);
			trib_free(data);
			rt_conn_error(c, 500, "out of memory", -1, NULL);
			return;
		}
		bool malformed = false;

		err = trib_st_parse(c->body_heap, c->body_len, &st, &why);
		if (err)
			malformed = !(why && !strcmp(why, TRIB_ST_WHY_DTYPE)) && err == -EINVAL;
		else
			err = trib_st_match(&st, j->schema, j->nschema, offs, &why);
		trib_st_free(&st);
		if (err) {
			snprintf(msg, sizeof(msg), "safetensors: %s", why ? why : strerror(-err));
			rt_conn_error(c, err == -ENOMEM ? 500 : malformed ? 400 : 422, msg, -1, NULL);
			trib_free(offs);
			trib_free(data);
			return;
		}
		/* The starting model is a control-path upload: reordering it by copy is fine. */
		for (size_t i = 0, dst = 0; i < j->nschema; dst += j->schema[i].n_elem, i++)
			memcpy(data + dst, c->body_heap + offs[i], j->schema[i].n_elem * 4);
		trib_free(offs);
		if (check_finite(c, data, j->n_elem, NULL)) {
			trib_free(data);
			return;
		}
		err = rt_job_set_initial(c->node, j, data);
		trib_free(data);
	}
	if (err == -EBUSY) {
		rt_conn_error(c, 409, "the starting model can only be set before the first update",
			      j->round, NULL);
		return;
	}
	if (err) {
		rt_conn_error(c, 500, "could not store the model (see the server log)", -1, NULL);
		return;
	}
	respond_json(c, 200, json_pack("{s:s, s:i}", "job", j->name, "round", 0), NULL);
}

static void handle_model_put(struct rt_conn *c, struct rt_job *j)
{
	uint64_t model_bytes = j->n_elem * sizeof(float);

	if (!require_job(c, j))
		return;
	if (ctype_is(c->req.content_type, "application/x-safetensors"))
		c->safetensors = true;
	else if (ctype_is(c->req.content_type, "application/octet-stream"))
		c->safetensors = false;
	else {
		rt_conn_error(c, 415, "Content-Type must be application/x-safetensors or "
			      "application/octet-stream", -1, NULL);
		return;
	}
	if (c->node->agent) {
		rt_conn_error(c, 501, "not supported across nodes yet: a cluster's jobs start from "
			      "zeros", -1, NULL);
		return;
	}
	if (!c->req.has_content_length || c->req.chunked) {
		rt_conn_error(c, 411, "Content-Length required", -1, NULL);
		return;
	}
	if (j->completed || j->round || j->open || j->inflight) {
		rt_conn_error(c, 409, "the starting model can only be set before the first update",
			      j->round, NULL);
		return;
	}
	if (c->req.content_length > model_bytes + (c->safetensors ? ST_HEADER_ALLOWANCE : 0)) {
		rt_conn_error(c, 413, "body larger than the model", -1, NULL);
		return;
	}
	if (!c->safetensors && c->req.content_length != model_bytes) {
		rt_conn_error(c, 422, "raw model size does not match the job's parameters", -1,
			      NULL);
		return;
	}
	c->body_heap = trib_malloc(c->req.content_length ? c->req.content_length : 1);
	if (!c->body_heap) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	c->job = j;
	rt_conn_read_body(c, c->body_heap, c->req.content_length, on_model_put_body);
}

/* --- functions: live ones and the last exited --- */

static const char *job_name_of(struct rt_node *n, uint32_t id)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (j->id == id)
			return j->name;
	return "?";
}

static const char *role_name(uint16_t role)
{
	return role == FN_ROLE_TOP ? "top" : role == FN_ROLE_MID ? "mid" : "leaf";
}

struct fn_row {
	uint32_t id, job, round, index;
	uint16_t role;
	bool live;
	int state;
	uint32_t served;
	int pid;
	uint64_t msgs, bytes;
	int64_t depth;
	double age_s; /* live: since spawn */
	uint32_t fanin;
};

struct fn_rows {
	struct rt_node *n;
	struct fn_row *rows;
	size_t len, cap;
};

static void add_row(struct fn_rows *fr, const struct fn_row *r)
{
	if (fr->len == fr->cap) {
		size_t ncap = fr->cap ? fr->cap * 2 : 32;
		struct fn_row *nr = trib_realloc(fr->rows, ncap * sizeof(*nr));

		if (!nr)
			return;
		fr->rows = nr;
		fr->cap = ncap;
	}
	fr->rows[fr->len++] = *r;
}

static void collect_live(struct rt_fn *fn, void *arg)
{
	struct fn_rows *fr = arg;
	struct fn_row r = {
		.id = fn->id,
		.job = fn->cfg.job,
		.round = fn->cfg.round,
		.role = fn->cfg.role,
		.index = fn->cfg.index,
		.live = !fn->exited,
		.state = fn->state,
		.served = fn->served,
		.pid = (int)fn->pid,
		.age_s = (double)(trib_now_ns() - fn->spawn_ns) / 1e9,
		.fanin = fn->cfg.expected,
	};

	rt_node_fn_counters(fr->n, fn, &r.msgs, &r.bytes, &r.depth);
	add_row(fr, &r);
}

/* Live functions first, then the last RT_FN_HISTORY exited ones, newest first. */
static void collect_fns(struct rt_node *n, struct fn_rows *fr)
{
	memset(fr, 0, sizeof(*fr));
	fr->n = n;
	rt_fnset_foreach(n->fns, collect_live, fr);
	for (uint32_t k = 0; k < RT_FN_HISTORY && k < n->nhist; k++) {
		const struct rt_fn_record *h = &n->hist[(n->nhist - 1 - k) % RT_FN_HISTORY];
		struct fn_row r = {
			.id = h->id,
			.job = h->job,
			.round = h->round,
			.role = h->role,
			.msgs = h->msgs_in,
			.bytes = h->bytes_in,
			.depth = n->route ? (int64_t)(h->msgs_in - h->taken) : -1,
		};

		add_row(fr, &r);
	}
}

static void handle_functions(struct rt_conn *c)
{
	struct rt_node *n = c->node;
	json_t *arr = json_array();
	struct fn_rows fr;
	json_t *o;

	if (!auth_admin(c)) {
		reject(c, RT_REJ_AUTH, 401, "function status takes the admin token (Bearer)", -1,
		       NULL);
		json_decref(arr);
		return;
	}
	collect_fns(n, &fr);
	for (size_t i = 0; i < fr.len; i++) {
		static const char *const states[] = { "cold", "folding", "warm", "exiting" };
		const struct fn_row *r = &fr.rows[i];
		json_t *e = json_pack("{s:I, s:s, s:I, s:s, s:I, s:s, s:I, s:I}", "fn",
				      (json_int_t)r->id, "job", job_name_of(n, r->job), "round",
				      (json_int_t)r->round, "role",
				      role_name(r->role), "level",
				      (json_int_t)(r->role == FN_ROLE_TOP ? 0 :
						   r->role == FN_ROLE_MID ? 1 : 2), "state",
				      !r->live ? "exited" :
				      r->state >= 0 && r->state < 4 ? states[r->state] : "?",
				      "messages", (json_int_t)r->msgs, "bytes", (json_int_t)r->bytes);

		if (r->depth >= 0)
			json_object_set_new(e, "queue_depth", json_integer(r->depth));
		if (r->live) {
			json_object_set_new(e, "fan_in", json_integer(r->fanin));
			json_object_set_new(e, "age_s", json_real(r->age_s));
			json_object_set_new(e, "served", json_integer(r->served));
			json_object_set_new(e, "pid", json_integer(r->pid));
			if (r->role != FN_ROLE_TOP)
				json_object_set_new(e, "index", json_integer(r->index));
		}
		json_array_append_new(arr, e);
	}
	trib_free(fr.rows);
	o = json_pack("{s:s, s:o}", "dataplane", rt_dataplane_name(n->dataplane), "functions", arr);
	if (n->route) {
		struct ebpf_global_stats g;

		ebpf_route_global(n->route, &g);
		json_object_set_new(o, "bpf", json_pack("{s:I, s:I, s:I, s:I}", "redirects",
						       (json_int_t)g.redirects, "passes",
						       (json_int_t)g.passes, "bounced",
						       (json_int_t)g.bounced, "short_records",
						       (json_int_t)g.short_recs));
	}
	respond_json(c, 200, o, NULL);
}

/* --- /metrics --- */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* Quantile @q of the last min(n, 256) samples of a ring; 0 with none. */
static double quantile(const float *ring, uint64_t n, double q)
{
	float v[256];
	size_t k = n < 256 ? (size_t)n : 256;

	if (!k)
		return 0;
	memcpy(v, ring, k * sizeof(float));
	qsort(v, k, sizeof(float), cmp_float);
	return v[(size_t)(q * (double)(k - 1) + 0.5)];
}

static void handle_metrics(struct rt_conn *c)
{
	static const char *const reasons[RT_REJ__COUNT] = {
		"malformed", "auth", "unknown_job", "round", "too_large",
		"media_type", "shape", "non_finite", "arena_full", "no_length",
	};
	static const char *const les[] = { "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
					   "1", "2.5", "5", "10", "30", "+Inf" };
	struct rt_node *n = c->node;
	struct rt_metrics *m = &n->m;
	uint64_t used = 0, total = 0, cum = 0;
	uint32_t live = 0;
	size_t cap = 65536, len = 0;
	char *buf = trib_malloc(cap);

	if (!buf) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
#define OUT(...)                                                                         \
	do {                                                                             \
		int w_ = snprintf(buf + len, cap - len, __VA_ARGS__);                    \
		if (w_ > 0 && (size_t)w_ < cap - len)                                    \
			len += (size_t)w_;                                               \
	} while (0)
	shm_arena_usage(n->arena, &used, &total, &live);
	OUT("# HELP tributary_updates_accepted_total Updates answered 202.\n"
	    "# TYPE tributary_updates_accepted_total counter\n"
	    "tributary_updates_accepted_total %llu\n", (unsigned long long)m->accepted);
	OUT("# HELP tributary_updates_rejected_total Update requests refused, by reason.\n"
	    "# TYPE tributary_updates_rejected_total counter\n");
	for (int i = 0; i < RT_REJ__COUNT; i++)
		OUT("tributary_updates_rejected_total{reason=\"%s\"} %llu\n", reasons[i],
		    (unsigned long long)m->rejected[i]);
	OUT("# HELP tributary_update_bytes_total Bytes of accepted update bodies.\n"
	    "# TYPE tributary_update_bytes_total counter\n"
	    "tributary_update_bytes_total %llu\n", (unsigned long long)m->bytes_received);
	OUT("# HELP tributary_http_requests_total HTTP requests answered.\n"
	    "# TYPE tributary_http_requests_total counter\n"
	    "tributary_http_requests_total %llu\n", (unsigned long long)m->requests);
	OUT("# HELP tributary_round_duration_seconds First accepted update to model written.\n"
	    "# TYPE tributary_round_duration_seconds histogram\n");
	for (size_t i = 0; i < 12; i++) {
		cum += m->round_hist[i];
		OUT("tributary_round_duration_seconds_bucket{le=\"%s\"} %llu\n", les[i],
		    (unsigned long long)cum);
	}
	OUT("tributary_round_duration_seconds_sum %.6f\n"
	    "tributary_round_duration_seconds_count %llu\n", m->round_sum_s,
	    (unsigned long long)m->rounds_done);
	OUT("# HELP tributary_arena_bytes Huge-page arena bytes, by state.\n"
	    "# TYPE tributary_arena_bytes gauge\n"
	    "tributary_arena_bytes{state=\"used\"} %llu\n"
	    "tributary_arena_bytes{state=\"total\"} %llu\n"
	    "# HELP tributary_arena_slots Live slots in the arena.\n"
	    "# TYPE tributary_arena_slots gauge\n"
	    "tributary_arena_slots %u\n", (unsigned long long)used, (unsigned long long)total, live);
	OUT("# HELP tributary_functions Aggregation function processes alive.\n"
	    "# TYPE tributary_functions gauge\n"
	    "tributary_functions %u\n"
	    "# TYPE tributary_functions_spawned_total counter\n"
	    "tributary_functions_spawned_total %llu\n"
	    "# TYPE tributary_functions_failed_total counter\n"
	    "tributary_functions_failed_total %llu\n", rt_fnset_count(n->fns),
	    (unsigned long long)m->fn_spawned, (unsigned long long)m->fn_failed);
	OUT("# HELP tributary_functions_reused_total Configs given to a warm function instead of "
	    "a new one.\n# TYPE tributary_functions_reused_total counter\n"
	    "tributary_functions_reused_total %llu\n"
	    "# HELP tributary_functions_retired_total Warm functions that exited after --warm-s "
	    "idle.\n# TYPE tributary_functions_retired_total counter\n"
	    "tributary_functions_retired_total %llu\n"
	    "# HELP tributary_functions_replaced_total Functions that died mid-round and were "
	    "replaced.\n# TYPE tributary_functions_replaced_total counter\n"
	    "tributary_functions_replaced_total %llu\n",
	    (unsigned long long)m->fn_reused, (unsigned long long)m->fn_retired,
	    (unsigned long long)m->recoveries);
	OUT("# HELP tributary_fn_cold_start_seconds Spawn to ready to fold (config applied, arena "
	    "mapped); quantiles over the last 256.\n# TYPE tributary_fn_cold_start_seconds summary\n"
	    "tributary_fn_cold_start_seconds{quantile=\"0.5\"} %.6f\n"
	    "tributary_fn_cold_start_seconds{quantile=\"0.99\"} %.6f\n"
	    "tributary_fn_cold_start_seconds_sum %.6f\n"
	    "tributary_fn_cold_start_seconds_count %llu\n"
	    "tributary_fn_cold_start_seconds_max %.6f\n"
	    "# HELP tributary_fn_warm_handoff_seconds Config sent to a warm function to ready to "
	    "fold.\n# TYPE tributary_fn_warm_handoff_seconds summary\n"
	    "tributary_fn_warm_handoff_seconds{quantile=\"0.5\"} %.6f\n"
	    "tributary_fn_warm_handoff_seconds{quantile=\"0.99\"} %.6f\n"
	    "tributary_fn_warm_handoff_seconds_sum %.6f\n"
	    "tributary_fn_warm_handoff_seconds_count %llu\n"
	    "tributary_fn_warm_handoff_seconds_max %.6f\n",
	    quantile(m->cold_recent, m->cold_n, 0.5), quantile(m->cold_recent, m->cold_n, 0.99),
	    m->cold_sum_s, (unsigned long long)m->cold_n, m->cold_max_s,
	    quantile(m->warm_recent, m->warm_n, 0.5), quantile(m->warm_recent, m->warm_n, 0.99),
	    m->warm_sum_s, (unsigned long long)m->warm_n, m->warm_max_s);
	OUT("# HELP tributary_planner_decisions_total Trees planned (one per round; inputs in "
	    "the log).\n# TYPE tributary_planner_decisions_total counter\n"
	    "tributary_planner_decisions_total %llu\n"
	    "# HELP tributary_rounds_closed_at_deadline_total Rounds closed by round_timeout_s "
	    "with at least min_clients updates.\n"
	    "# TYPE tributary_rounds_closed_at_deadline_total counter\n"
	    "tributary_rounds_closed_at_deadline_total %llu\n",
	    (unsigned long long)m->plans, (unsigned long long)m->deadline_closes);
	OUT("# HELP tributary_autoscale_scale_outs_total Leaves added because the eBPF queue "
	    "depth of the leaf taking updates reached the threshold.\n"
	    "# TYPE tributary_autoscale_scale_outs_total counter\n"
	    "tributary_autoscale_scale_outs_total %llu\n", (unsigned long long)m->scale_outs);
	OUT("# HELP tributary_job_round The round each job is collecting.\n"
	    "# TYPE tributary_job_round gauge\n");
	for (struct rt_job *j = n->jobs; j; j = j->next)
		OUT("tributary_job_round{job=\"%s\"} %u\n", j->name, j->round);
	{
		struct fn_rows fr;
		static const char *const names[3] = { "messages_total", "bytes_total",
						      "queue_depth" };
		static const char *const helps[3] = {
			"Descriptors delivered to the function (sk_msg counters in shm+bpf).",
			"Bytes delivered to the function (descriptors; payloads too in tcp).",
			"Descriptors delivered but not yet taken by the function (shm+bpf only).",
		};

		collect_fns(n, &fr);
		for (int k = 0; k < 3; k++) {
			if (k == 2 && !n->route)
				break;
			OUT("# HELP tributary_fn_%s %s\n# TYPE tributary_fn_%s %s\n", names[k],
			    helps[k], names[k], k == 2 ? "gauge" : "counter");
			for (size_t i = 0; i < fr.len && len + 512 < cap; i++) {
				const struct fn_row *r = &fr.rows[i];
				uint64_t v = k == 0 ? r->msgs : k == 1 ? r->bytes :
							(uint64_t)(r->depth < 0 ? 0 : r->depth);

				OUT("tributary_fn_%s{fn=\"%u\",job=\"%s\",round=\"%u\",role=\"%s\"} "
				    "%llu\n", names[k], r->id, job_name_of(n, r->job), r->round,
				    role_name(r->role), (unsigned long long)v);
			}
		}
		trib_free(fr.rows);
	}
	if (n->route) {
		struct ebpf_global_stats g;

		ebpf_route_global(n->route, &g);
		OUT("# HELP tributary_bpf_records_total Descriptor records seen by the sk_msg "
		    "router, by verdict.\n# TYPE tributary_bpf_records_total counter\n"
		    "tributary_bpf_records_total{verdict=\"redirect\"} %llu\n"
		    "tributary_bpf_records_total{verdict=\"pass\"} %llu\n"
		    "tributary_bpf_records_total{verdict=\"bounced\"} %llu\n",
		    (unsigned long long)g.redirects, (unsigned long long)g.passes,
		    (unsigned long long)g.bounced);
	}
	OUT("# HELP tributary_dataplane_info The data plane in use.\n"
	    "# TYPE tributary_dataplane_info gauge\n"
	    "tributary_dataplane_info{mode=\"%s\"} 1\n", rt_dataplane_name(n->dataplane));
#undef OUT
	rt_agent_metrics(n, buf, &len, cap);
	rt_conn_respond(c, 200, "text/plain; version=0.0.4", buf, len, NULL);
	trib_free(buf);
}

/* --- routing --- */

void rt_api_on_head(struct rt_conn *c)
{
	const char *path = c->req.path;
	enum http_method m = c->req.method;

	if (!strcmp(path, "/healthz")) {
		if (m != HTTP_GET && m != HTTP_HEAD)
			goto bad_method;
		rt_conn_respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
		return;
	}
	if (!strcmp(path, "/metrics")) {
		if (m != HTTP_GET)
			goto bad_method;
		handle_metrics(c);
		return;
	}
	if (!strcmp(path, "/v1/functions")) {
		if (m != HTTP_GET)
			goto bad_method;
		handle_functions(c);
		return;
	}
	if (!strcmp(path, "/v1/cluster")) {
		if (m != HTTP_GET)
			goto bad_method;
		if (!c->node->agent) {
			rt_conn_error(c, 404, "this is a single node (tributary up), not a cluster",
				      -1, NULL);
			return;
		}
		rt_agent_status(c);
		return;
	}
	if (c->node->agent && !rt_agent_ready(c->node) && !strncmp(path, "/v1/jobs", 8)) {
		rt_conn_error(c, 503, "this node has not joined the cluster's controller yet", -1,
			      "Retry-After: 1\r\n");
		return;
	}
	if (!strcmp(path, "/v1/jobs") || !strcmp(path, "/v1/jobs/")) {
		if (m == HTTP_POST)
			handle_create(c);
		else if (m == HTTP_GET)
			handle_list(c);
		else
			goto bad_method;
		return;
	}
	if (!strncmp(path, "/v1/jobs/", 9)) {
		char name[64];
		const char *rest = path + 9, *slash = strchr(rest, '/');
		size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
		struct rt_job *j;

		if (len == 0 || len >= sizeof(name)) {
			reject(c, RT_REJ_NO_JOB, 404, "no such job", -1, NULL);
			return;
		}
		memcpy(name, rest, len);
		name[len] = '\0';
		j = rt_job_find(c->node, name);
		if (!j) {
			char msg[128];

			snprintf(msg, sizeof(msg), "no job named '%s'", name);
			reject(c, RT_REJ_NO_JOB, 404, msg, -1, NULL);
			return;
		}
		if (!slash || !strcmp(slash, "/")) {
			if (m != HTTP_GET)
				goto bad_method;
			if (!require_job(c, j))
				return;
			respond_json(c, 200, job_json_full(c->node, j), NULL);
			return;
		}
		if (!strcmp(slash, "/updates")) {
			if (m != HTTP_POST)
				goto bad_method;
			handle_update(c, j);
			return;
		}
		if (!strncmp(slash, "/rounds/", 8)) {
			uint64_t r;

			if (m != HTTP_GET)
				goto bad_method;
			if (!require_job(c, j))
				return;
			if (trib_parse_u64(slash + 8, 0, UINT32_MAX, &r)) {
				rt_conn_error(c, 400, "rounds/{round}: a round number", -1, NULL);
				return;
			}
			if (!c->node->agent) {
				rt_conn_error(c, 404, "round records with lost nodes are kept by a "
					      "cluster's controller; this is a single node", -1, NULL);
				return;
			}
			rt_agent_round_get(c, j, (uint32_t)r);
			return;
		}
		if (!strcmp(slash, "/model")) {
			if (m == HTTP_GET)
				handle_model_get(c, j);
			else if (m == HTTP_PUT)
				handle_model_put(c, j);
			else
				goto bad_method;
			return;
		}
	}
	rt_conn_error(c, 404, "no such endpoint", -1, NULL);
	return;
bad_method:
	rt_conn_error(c, 405, "method not allowed here", -1, NULL);
}
