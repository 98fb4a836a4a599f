// SPDX-License-Identifier: MIT
/* GET/PUT /v1/jobs/{job}/model, and long polls for the next model. */
#include "api_priv.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "rt_flora.h"
#include "trib_alloc.h"
#include "trib_parse.h"
#include "trib_time.h"

/* --- GET/PUT /v1/jobs/{job}/model --- */

/* @b (held, the reference moves) as the format the request's Accept picked. */
static void serve_model(struct rt_conn *c, struct rt_job *j, struct trib_blob *b)
{
	static const char *const tag[] = { [RT_MODEL_SAFETENSORS] = "", [RT_MODEL_NPZ] = ".npz",
					   [RT_MODEL_RAW] = ".f32" };
	const char *ctype = "application/x-safetensors";
	int fmt = rt__api_model_pick(c->req.accept, rt__api_model_raw_ok(j));
	char extra[320];

	if (fmt > RT_MODEL_SAFETENSORS) {
		struct trib_blob *conv = rt__api_model_convert(c, j, b, &ctype);

		trib_blob_release(b);
		if (!conv)
			return; /* answered */
		b = conv;
	}
	/* One ETag per representation; caches key on Accept. */
	snprintf(extra, sizeof(extra), "X-Tributary-Round: %u\r\nETag: \"%s-v%u%s\"\r\n"
		 "Vary: Accept\r\n", b->version, j->name, b->version,
		 tag[fmt > 0 ? fmt : RT_MODEL_SAFETENSORS]);
	rt_conn_respond_blob(c, 200, ctype, b, extra);
}

void rt__api_on_wake(struct rt_conn *c, bool timed_out)
{
	struct rt_job *j = R(c)->job;
	struct trib_blob *b;

	if (timed_out || j->completed <= R(c)->wait_after) {
		char extra[64];

		snprintf(extra, sizeof(extra), "X-Tributary-Round: %u\r\n", j->completed);
		rt_conn_respond(c, 304, NULL, NULL, 0, extra);
		return;
	}
	b = rt_job_model(N(c), j, j->completed);
	if (!b) {
		rt_conn_error(c, 500, "model unavailable", -1, NULL);
		return;
	}
	serve_model(c, j, b);
}

void rt__api_handle_model_get(struct rt_conn *c, struct rt_job *j)
{
	char val[32];
	uint64_t v;
	struct trib_blob *b;

	if (!rt__api_require_reader(c, j))
		return;
	if (!rt__api_model_acceptable(c, j))
		return; /* 406 before a long poll parks (raw f32 of an int32 model included) */
	if (!rt_http_query_get(c->req.query, "round", val, sizeof(val))) {
		if (trib_parse_u64(val, 0, UINT32_MAX, &v)) {
			rt_conn_error(c, 400, "round: a round number", -1, NULL);
			return;
		}
		b = rt_job_model(N(c), j, (uint32_t)v);
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
			rt__api_park(c, j, (uint32_t)v, trib_now_ns() + timeout * 1000000000ull);
			return;
		}
	}
	b = rt_job_model(N(c), j, j->completed);
	if (!b) {
		rt_conn_error(c, 500, "model unavailable", -1, NULL);
		return;
	}
	serve_model(c, j, b);
}

/* The starting model's elements: a flora job takes its base tensors only (a prefix). */
static uint64_t put_elems(const struct rt_job *j)
{
	return j->flora ? j->flora->n_base : j->n_elem;
}

/* 0, -errno, or 1: a cluster's controller decides and the answer comes later. */
static int initial_set(struct rt_conn *c, struct rt_job *j, const float *data)
{
	if (API(c)->clustered) {
		/* Every node starts from it: the controller checks, stores and sends it. */
		API(c)->cluster.model_put(API(c)->cluster.ctx, c, j, data);
		return 1;
	}
	return rt_job_set_initial(N(c), j, data);
}

static void on_model_put_body(struct rt_conn *c)
{
	struct rt_job *j = R(c)->job;
	float *data = NULL;
	char msg[400];
	int err;

	if (rt__api_job_gone(c))
		return;
	if (R(c)->np_fmt == RT_NP_NPZ) {
		int status;

		data = trib_malloc(j->n_elem * sizeof(float));
		if (!data) {
			rt_conn_error(c, 500, "out of memory", -1, NULL);
			return;
		}
		status = rt__api_np_model(c, j, data, msg, sizeof(msg));
		if (status) {
			rt_conn_error(c, status, msg, -1, NULL);
			trib_free(data);
			return;
		}
		if (rt__api_check_values(c, data, SHM_DTYPE_F32, j->n_elem, 1.0, NULL)) {
			trib_free(data);
			return;
		}
		/* As the other forms: in a cluster the controller sets it on every node (setting
		 * it here only would leave the other nodes at zeros). */
		err = initial_set(c, j, data);
		trib_free(data);
	} else if (!R(c)->safetensors) {
		if (rt__api_check_values(c, c->body_heap, SHM_DTYPE_F32, put_elems(j), 1.0, NULL))
			return;
		data = (float *)(void *)c->body_heap;
		if (j->flora) {
			/* The base, then zero stacks and rank 0 (version 0 of the contract). */
			data = trib_calloc(j->n_elem, sizeof(float));
			if (!data) {
				rt_conn_error(c, 500, "out of memory", -1, NULL);
				return;
			}
			memcpy(data, c->body_heap, put_elems(j) * sizeof(float));
		}
		err = initial_set(c, j, data);
		if (j->flora)
			trib_free(data);
	} else {
		struct trib_st st = { 0 };
		uint64_t *offs = trib_calloc(j->nschema, sizeof(*offs));
		const char *why = NULL;

		size_t nput = j->flora ? j->flora->nbase : j->nschema; /* flora: the base */

		data = trib_calloc(j->n_elem, sizeof(float));
		if (!offs || !data) {
			trib_free(offs);
			trib_free(data);
			rt_conn_error(c, 500, "out of memory", -1, NULL);
			return;
		}
		bool malformed = false, parsed;
		char what[TRIB_ST_EXPLAIN_MAX] = "";

		err = trib_st_parse(c->body_heap, c->body_len, &st, &why);
		parsed = !err;
		if (err)
			malformed = !(why && !strcmp(why, TRIB_ST_WHY_DTYPE)) && err == -EINVAL;
		else
			err = trib_st_match(&st, j->schema, nput, offs, &why);
		if (err == -EINVAL) /* name the tensor, the shapes, the names */
			trib_st_explain(&st, parsed ? j->schema : NULL, nput, false, why,
					what, sizeof(what));
		trib_st_free(&st);
		if (err) {
			snprintf(msg, sizeof(msg), "safetensors: %s",
				 what[0] ? what : why ? why : strerror(-err));
			rt_conn_error(c,
				      err == -ENOMEM ? 500
				      : malformed    ? 400
						     : 422,
				      msg, -1, NULL);
			trib_free(offs);
			trib_free(data);
			return;
		}
		/* The starting model is a control-path upload: reordering it by copy is fine. */
		for (size_t i = 0, dst = 0; i < nput; dst += j->schema[i].n_elem, i++)
			memcpy(data + dst, c->body_heap + offs[i], j->schema[i].n_elem * 4);
		trib_free(offs);
		if (rt__api_check_values(c, data, SHM_DTYPE_F32, put_elems(j), 1.0, NULL)) {
			trib_free(data);
			return;
		}
		err = initial_set(c, j, data);
		trib_free(data);
	}
	if (err == 1)
		return;
	if (err == -EBUSY) {
		rt_conn_error(c, 409, "the starting model can only be set before the first update",
			      j->round, NULL);
		return;
	}
	if (err) {
		rt_conn_error(c, 500, "could not store the model (see the server log)", -1, NULL);
		return;
	}
	rt__api_respond_json(c, 200, json_pack("{s:s, s:i}", "job", j->name, "round", 0), NULL);
}

void rt__api_handle_model_put(struct rt_conn *c, struct rt_job *j)
{
	uint64_t model_bytes = put_elems(j) * sizeof(float);

	if (!rt__api_require_job(c, j))
		return;
	if (j->algo.frl) {
		rt_conn_error(c, 409, "an frl job's model is the ranking its clients' votes make; it "
			      "starts from the identity ranking (version 0) and takes no starting "
			      "model", -1, NULL);
		return;
	}
	R(c)->np_fmt = RT_NP_NONE;
	if (rt__api_ctype_is(c->req.content_type, "application/x-safetensors"))
		R(c)->safetensors = true;
	else if (rt__api_ctype_is(c->req.content_type, "application/octet-stream"))
		R(c)->safetensors = false;
	else if (rt__api_np_format(c->req.content_type) == RT_NP_NPZ && !j->flora) {
		R(c)->safetensors = false;
		R(c)->np_fmt = RT_NP_NPZ;
	} else if (j->flora && rt__api_np_format(c->req.content_type) == RT_NP_NPZ) {
		/* The generic 415 lists npz as taken: a flora client sending npz must learn why not. */
		rt_conn_error(c, 415, "a flora job's starting model (its base tensors) is taken as "
			      "application/x-safetensors or application/octet-stream (raw f32, base "
			      "tensors in order), not application/x-npz", -1, NULL);
		return;
	} else {
		rt_conn_error(c, 415, "Content-Type must be application/x-safetensors, "
			      "application/x-npz or application/octet-stream", -1, NULL);
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
	if (R(c)->np_fmt ? c->req.content_length > rt__api_np_body_max(j)
	    : c->req.content_length > model_bytes + (R(c)->safetensors ? ST_HEADER_ALLOWANCE : 0)) {
		rt_conn_error(c, 413, "body larger than the model", -1, NULL);
		return;
	}
	if (!R(c)->safetensors && !R(c)->np_fmt && c->req.content_length != model_bytes) {
		rt_conn_error(c, 422, "raw model size does not match the job's parameters", -1,
			      NULL);
		return;
	}
	/* An .npz inflates its deflated members after the body, in the same buffer. */
	c->body_heap = trib_malloc(((c->req.content_length + 63) & ~63ull) +
				   (R(c)->np_fmt ? rt__api_np_model_room(j) : 1));
	if (!c->body_heap) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt__api_read_job_body(c, j, on_model_put_body);
}

