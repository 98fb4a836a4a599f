// SPDX-License-Identifier: MIT
/* NumPy bodies: .npy and .npz updates into their arena slot, and GET /model's Accept. */
#include "api_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rt_flora.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_blob.h"
#include "trib_npy.h"

/* Room over the model's bytes an .npy/.npz body may take: zip records, .npy headers, names. */
static uint64_t np_overhead(const struct rt_job *j)
{
	return ST_HEADER_ALLOWANCE + j->nschema * (uint64_t)1024;
}

int rt__api_np_format(const char *ctype)
{
	if (rt__api_ctype_is(ctype, "application/x-npy"))
		return RT_NP_NPY;
	if (rt__api_ctype_is(ctype, "application/x-npz"))
		return RT_NP_NPZ;
	return RT_NP_NONE;
}

/* float64 is the largest dtype taken: twice the model's float32 bytes. */
uint64_t rt__api_np_body_max(const struct rt_job *j)
{
	return 2 * j->n_elem * sizeof(float) + np_overhead(j);
}

/*
 * An .npz body's slot holds room after the body for members inflated there: the model as
 * float32 (the largest dtype a member inflates to) and 64-byte alignment of each tensor and
 * its int8 scale. A stored archive does not use it; it is reserved before the body is seen.
 */
uint64_t rt__api_np_room(struct rt_conn *c, const struct rt_job *j)
{
	if (R(c)->np_fmt != RT_NP_NPZ)
		return 0;
	return ((j->n_elem * sizeof(float) + 63) & ~63ull) + j->nschema * (uint64_t)128;
}

bool rt__api_np_admit(struct rt_conn *c, const struct rt_job *j)
{
	char msg[400];

	if (R(c)->np_fmt != RT_NP_NPY || j->nschema == 1)
		return true;
	snprintf(msg, sizeof(msg), "application/x-npy carries one tensor and job %s has %zu "
		 "(\"%.40s\", ...): send them named in application/x-npz (np.savez)", j->name,
		 j->nschema, j->schema[0].name);
	rt__api_reject(c, RT_REJ_SHAPE, 422, msg, -1, NULL);
	return false;
}

int rt__api_np_segments(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
			uint64_t *segs_off)
{
	uint64_t wire = (c->body_len + 63) & ~63ull, used = 0;
	uint64_t room = R(c)->slot_len - wire - rt__api_segs_max(j) * sizeof(struct shm_seg) -
			j->nschema * sizeof(struct shm_sparse);
	const char *label = R(c)->np_fmt == RT_NP_NPY ? "npy" : "npz";
	char why[TRIB_NPY_WHY_MAX];
	struct trib_st st = { 0 };
	int err;

	why[0] = '\0';
	if (R(c)->np_fmt == RT_NP_NPY)
		err = trib_npy_load(body, c->body_len, j->schema[0].name, &st, why, sizeof(why));
	else
		err = trib_npz_load(body, c->body_len, body + wire, room, &st, &used, why,
				    sizeof(why));
	if (err == -ENOMEM) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return -1;
	}
	if (err) {
		/* Messages from core/trib_npy.c and trib_npz.c name their format already. */
		rt__api_reject(c, RT_REJ_MALFORMED, 400, why, -1, NULL);
		return -1;
	}
	/* Inflated members lie after the body, the segments after them (rt_api_update_bytes). */
	*segs_off = R(c)->slot_off + wire + ((used + 63) & ~63ull);
	if (rt__api_st_sparse(&st)) /* <name>.indices + <name>.values (rt_api_sparse.c) */
		return rt__api_sparse_fill(c, j, body, w, segs_off, &st, label);
	return rt__api_st_fill(c, j, body, w, shm_arena_ptr(N(c)->arena, *segs_off), &st, label);
}

/* --- GET /model: Accept --- */

static const struct {
	const char *type;
	int fmt;
} offered[] = {
	{ "application/x-safetensors", RT_MODEL_SAFETENSORS },
	{ "application/x-npz", RT_MODEL_NPZ },
	{ "application/octet-stream", RT_MODEL_RAW },
};

/*
 * The representation @accept (RFC 9110 12.5.1) prefers: the highest q among those offered,
 * the first listed on a tie; the wildcards (all types, application's) are safetensors.
 * Parameters other than q are ignored. An absent or empty Accept is safetensors. -1 if none
 * is acceptable.
 */
int rt__api_model_pick(const char *accept)
{
	const char *p = accept;
	int best = -1;
	double best_q = 0;

	if (!accept || !accept[strspn(accept, " \t")])
		return RT_MODEL_SAFETENSORS;
	while (*p) {
		const char *end = strchr(p, ','), *semi;
		size_t len, tlen;
		double q = 1;
		int fmt = -1;

		if (!end)
			end = p + strlen(p);
		p += strspn(p, " \t");
		len = (size_t)(end - p);
		semi = memchr(p, ';', len);
		tlen = semi ? (size_t)(semi - p) : len;
		while (tlen && (p[tlen - 1] == ' ' || p[tlen - 1] == '\t'))
			tlen--;
		for (const char *s = semi; s && s < end; s = memchr(s + 1, ';', (size_t)(end - s - 1))) {
			const char *v = s + 1 + strspn(s + 1, " \t");

			if ((v[0] == 'q' || v[0] == 'Q') && v[1] == '=')
				q = strtod(v + 2, NULL);
		}
		for (size_t i = 0; i < sizeof(offered) / sizeof(offered[0]); i++)
			if (strlen(offered[i].type) == tlen && !strncasecmp(p, offered[i].type, tlen))
				fmt = offered[i].fmt;
		if (fmt < 0 && ((tlen == 3 && !strncmp(p, "*/*", 3)) ||
				(tlen == 13 && !strncasecmp(p, "application/*", 13))))
			fmt = RT_MODEL_SAFETENSORS;
		if (fmt >= 0 && q > 0 && q <= 1 && q > best_q) {
			best = fmt;
			best_q = q;
		}
		p = *end ? end + 1 : end;
	}
	return best;
}

bool rt__api_model_acceptable(struct rt_conn *c)
{
	if (c->req.accept_too_long) {
		rt_conn_error(c, 406, "Accept is longer than the server reads (255 bytes): ask for "
			      "one of application/x-safetensors, application/x-npz, "
			      "application/octet-stream", -1, NULL);
		return false;
	}
	if (rt__api_model_pick(c->req.accept) >= 0)
		return true;
	rt_conn_error(c, 406, "Accept: the model is served as application/x-safetensors (the "
		      "default), application/x-npz (stored, one float32 .npy per tensor) or "
		      "application/octet-stream (raw little-endian float32, tensors in schema "
		      "order)", -1, NULL);
	return false;
}

/*
 * The model blob @b (safetensors: 8-byte header length, header, float32 data in schema order)
 * as the format Accept picked: a new blob owned by the caller, *ctype its media type; NULL
 * and an answered 406/500 when it cannot be made.
 */
struct trib_blob *rt__api_model_convert(struct rt_conn *c, const struct rt_job *j,
					const struct trib_blob *b, const char **ctype)
{
	int fmt = rt__api_model_pick(c->req.accept);
	/* A flora model is its served tensors (rt_flora.h): with merge, the base only. */
	uint64_t hlen = 0, data_len = rt_flora_model_elems(j) * sizeof(float), size;
	size_t nt = j->flora && j->flora->merge ? j->flora->nbase : j->nschema;
	struct trib_blob *out;

	for (int i = 7; i >= 0 && b->len >= 8; i--)
		hlen = hlen << 8 | (uint8_t)b->data[i];
	if (b->len < 8 || b->len - 8 < hlen || b->len - 8 - hlen != data_len) {
		rt_conn_error(c, 500, "the stored model does not match the job's schema", -1, NULL);
		return NULL;
	}
	if (fmt == RT_MODEL_RAW && j->flora && !j->flora->merge) {
		rt_conn_error(c, 406, "this flora model holds I32 tensors (each pair's used rank, "
			      "<name>.rank): raw f32 cannot carry them; ask for "
			      "application/x-safetensors or application/x-npz", -1, NULL);
		return NULL;
	}
	if (fmt == RT_MODEL_RAW) {
		*ctype = "application/octet-stream";
		size = data_len;
	} else {
		*ctype = "application/x-npz";
		size = trib_npz_size(j->schema, nt);
		if (!size) {
			rt_conn_error(c, 406, "the model is too large for an .npz without zip64 (4 "
				      "GiB): ask for application/x-safetensors", -1, NULL);
			return NULL;
		}
	}
	out = trib_blob_new(size);
	if (!out) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return NULL;
	}
	out->version = b->version;
	if (fmt == RT_MODEL_RAW)
		memcpy(out->data, b->data + 8 + hlen, data_len);
	else /* frl's model is int32 (the global ranking); others float32 but for flora's I32 ranks */
		trib_npz_write_dtype(j->schema, nt, j->algo.frl ? TRIB_DTYPE_I32 : TRIB_DTYPE_F32,
				     b->data + 8 + hlen, out->data);
	return out;
}

/* --- PUT /model as .npz --- */

uint64_t rt__api_np_model_room(const struct rt_job *j)
{
	return 64 + ((j->n_elem * sizeof(float) + 63) & ~63ull) + j->nschema * (uint64_t)128;
}

/*
 * The starting model from an .npz body into @data (float32, schema order): the members an .npz
 * update carries, float32 or float64 (narrowed), named as the schema names them. c->body_heap
 * holds rt__api_np_model_room() bytes after the body, where deflated members inflate (the
 * loader's offsets are relative to the body, so the region must follow it in one buffer). A
 * control-path upload: the copy into @data is fine. Returns 0, or the status to answer (400
 * malformed, 422 not the job's tensors, 500 memory) with @msg filled.
 */
int rt__api_np_model(struct rt_conn *c, const struct rt_job *j, float *data, char *msg,
		     size_t cap)
{
	uint64_t wire = (c->body_len + 63) & ~63ull;
	uint64_t room = rt__api_np_model_room(j) - 64, used = 0;
	uint64_t *offs = trib_calloc(j->nschema, sizeof(*offs));
	char why[TRIB_NPY_WHY_MAX], what[TRIB_ST_EXPLAIN_MAX] = "";
	const char *mwhy = NULL;
	struct trib_st st = { 0 };
	int err, status = 0;

	why[0] = '\0';
	if (!offs) {
		snprintf(msg, cap, "out of memory");
		status = 500;
		goto out;
	}
	err = trib_npz_load(c->body_heap, c->body_len, c->body_heap + wire, room, &st, &used, why,
			    sizeof(why));
	if (err) {
		snprintf(msg, cap, "%s", err == -ENOMEM ? "out of memory" : why);
		status = err == -ENOMEM ? 500 : 400;
		goto out;
	}
	err = trib_st_match(&st, j->schema, j->nschema, offs, &mwhy);
	if (err) {
		if (err == -EINVAL)
			trib_st_explain(&st, j->schema, j->nschema, false, mwhy, what, sizeof(what));
		snprintf(msg, cap, "npz: %s", what[0] ? what : mwhy ? mwhy : strerror(-err));
		status = err == -ENOMEM ? 500 : 422;
		goto out;
	}
	for (size_t i = 0, dst = 0; i < j->nschema; dst += j->schema[i].n_elem, i++)
		memcpy(data + dst, c->body_heap + offs[i], j->schema[i].n_elem * sizeof(float));
out:
	trib_st_free(&st);
	trib_free(offs);
	return status;
}
