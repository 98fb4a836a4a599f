// SPDX-License-Identifier: MIT
/* frl's updates (a ranking per tensor, I32), and its model's forms: checks and refusals. */
#include "api_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fn_frl.h"
#include "shm_arena.h"
#include "trib_alloc.h"

/*
 * An frl update carries, for every tensor of the job's schema, a ranking: a permutation of
 * 0..n-1 (n the tensor's elements), I32, either in the tensor's shape or flat ([n]: what
 * np.argsort(scores.ravel()) gives). Nothing else: F32 and the compressed dtypes are values,
 * and a value is not a ranking. Each refusal names the tensor, and a bad entry its position,
 * in the JSON body ({"error", "tensor", "index"}) so a client can find it without parsing
 * the sentence.
 */

/* A 4xx whose body names @tensor and, if @index >= 0, the position in it. */
static void frl_reject(struct rt_conn *c, int status, const char *msg, const char *tensor,
		       long long index)
{
	json_t *o = json_pack("{s:s, s:s}", "error", msg, "tensor", tensor);

	rt__api_count_reject(c, RT_REJ_SHAPE, status, msg);
	if (o && index >= 0)
		json_object_set_new(o, "index", json_integer(index));
	if (!o) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt__api_respond_json(c, status, o, NULL);
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp((*(const struct trib_tensor *const *)a)->name,
		      (*(const struct trib_tensor *const *)b)->name);
}

/* The upload's tensor named @name, or NULL (@sorted: its tensors by name). */
static const struct trib_tensor *find(const struct trib_tensor **sorted, size_t n,
				      const char *name)
{
	struct trib_tensor key;
	const struct trib_tensor *kp = &key, **hit;

	snprintf(key.name, sizeof(key.name), "%s", name);
	hit = bsearch(&kp, sorted, n, sizeof(*sorted), cmp_tensor);
	return hit ? *hit : NULL;
}

/* Whether @u's shape is the schema tensor @s's, or flat with as many elements. */
static bool shape_ok(const struct trib_tensor *u, const struct trib_tensor *s)
{
	if (u->ndim == 1 && u->shape[0] == s->n_elem)
		return true;
	return u->ndim == s->ndim && !memcmp(u->shape, s->shape, s->ndim * sizeof(s->shape[0]));
}

/* Why position @bad of @p (n entries) breaks the permutation, into @buf. */
static void explain_bad(const int32_t *p, size_t n, size_t bad, const char *label,
			const char *tensor, char *buf, size_t cap)
{
	int32_t v = p[bad];

	if (v < 0 || (uint64_t)v >= n) {
		snprintf(buf, cap, "%s: frl ranking of tensor '%s': position %zu holds %d, outside "
			 "0..%zu (a ranking is a permutation of the tensor's %zu indices)", label,
			 tensor, bad, v, n - 1, n);
		return;
	}
	for (size_t i = 0; i < bad; i++) {
		if (p[i] == v) {
			snprintf(buf, cap, "%s: frl ranking of tensor '%s': position %zu repeats "
				 "index %d (first at position %zu); a ranking is a permutation of "
				 "0..%zu, each index once", label, tensor, bad, v, i, n - 1);
			return;
		}
	}
	snprintf(buf, cap, "%s: frl ranking of tensor '%s': position %zu is not a permutation "
		 "entry", label, tensor, bad);
}

int rt__api_frl_fill(struct rt_conn *c, struct rt_job *j, uint8_t *body, struct shm_seg *segs,
		     struct trib_st *st, const char *label)
{
	const struct trib_tensor **sorted = NULL;
	uint64_t big = 0;
	uint8_t *seen = NULL;
	char msg[512];
	int rc = -1;

	for (size_t i = 0; i < j->nschema; i++)
		if (j->schema[i].n_elem > big)
			big = j->schema[i].n_elem;
	sorted = trib_malloc((st->ntensors ? st->ntensors : 1) * sizeof(*sorted));
	seen = trib_malloc(big ? big : 1);
	if (!sorted || !seen) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		goto out;
	}
	for (size_t i = 0; i < st->ntensors; i++)
		sorted[i] = &st->tensors[i];
	qsort(sorted, st->ntensors, sizeof(*sorted), cmp_tensor);
	/* More tensors than the job has: name one that is not the job's (bsearch both ways). */
	if (st->ntensors > j->nschema) {
		const struct trib_tensor **ss = trib_malloc(j->nschema * sizeof(*ss) + 1);
		const struct trib_tensor *extra = NULL;

		if (!ss) {
			rt_conn_error(c, 500, "out of memory", -1, NULL);
			goto out;
		}
		for (size_t k = 0; k < j->nschema; k++)
			ss[k] = &j->schema[k];
		qsort(ss, j->nschema, sizeof(*ss), cmp_tensor);
		for (size_t i = 0; i < st->ntensors && !extra; i++)
			if (!find(ss, j->nschema, st->tensors[i].name))
				extra = &st->tensors[i];
		trib_free(ss);
		if (extra) {
			/* An upload's name (an .npz member's need not be UTF-8): shown safely. */
			char shown[TRIB_ST_SHOW_MAX];

			trib_st_show(extra->name, strlen(extra->name), shown, sizeof(shown));
			snprintf(msg, sizeof(msg), "%s: tensor '%s' is not one of job %s's %zu "
				 "tensors; an frl update holds one I32 ranking per tensor and nothing "
				 "else", label, shown, j->name, j->nschema);
			frl_reject(c, 422, msg, shown, -1);
			goto out;
		}
	}
	for (size_t i = 0, dst = 0; i < j->nschema; dst += j->schema[i].n_elem, i++) {
		const struct trib_tensor *s = &j->schema[i];
		const struct trib_tensor *u = find(sorted, st->ntensors, s->name);
		const int32_t *p;
		size_t bad = 0;

		if (!u) {
			snprintf(msg, sizeof(msg), "%s: tensor '%.40s' is missing; an frl update "
				 "holds an I32 ranking for each of the job's %zu tensors", label,
				 s->name, j->nschema);
			frl_reject(c, 422, msg, s->name, -1);
			goto out;
		}
		if (u->dtype != TRIB_DTYPE_I32) {
			snprintf(msg, sizeof(msg), "%s: tensor '%.40s' is %s; frl takes rankings: "
				 "int32 (I32) permutations of 0..%llu, e.g. np.argsort(scores, "
				 "kind='stable').astype(np.int32)", label, s->name,
				 trib_dtype_name(u->dtype) ? trib_dtype_name(u->dtype) : "?",
				 (unsigned long long)(s->n_elem ? s->n_elem - 1 : 0));
			frl_reject(c, 422, msg, s->name, -1);
			goto out;
		}
		if (!shape_ok(u, s)) {
			snprintf(msg, sizeof(msg), "%s: frl ranking of tensor '%.40s' has %llu "
				 "entries in %u dimensions; it needs the tensor's shape or [%llu]",
				 label, s->name, (unsigned long long)u->n_elem, u->ndim,
				 (unsigned long long)s->n_elem);
			frl_reject(c, 422, msg, s->name, -1);
			goto out;
		}
		if ((st->data_off + u->data_begin) % 4) {
			snprintf(msg, sizeof(msg), "%s: tensor data must be aligned to its element "
				 "size (pad the header to a multiple of 8 bytes)", label);
			frl_reject(c, 422, msg, s->name, -1);
			goto out;
		}
		p = (const int32_t *)(const void *)(body + st->data_off + u->data_begin);
		if (fn_frl_check(p, (size_t)s->n_elem, seen, &bad)) {
			explain_bad(p, (size_t)s->n_elem, bad, label, s->name, msg, sizeof(msg));
			frl_reject(c, 422, msg, s->name, (long long)bad);
			goto out;
		}
		/* One segment per tensor: the fold's positions are the tensor's (fn_frl.c). */
		memset(&segs[i], 0, sizeof(segs[i]));
		segs[i].src_off = R(c)->slot_off + st->data_off + u->data_begin;
		segs[i].dst_elem = dst;
		segs[i].n_elem = s->n_elem;
		segs[i].dtype = SHM_DTYPE_I32;
		segs[i].scale = 1.0f;
	}
	rc = 0;
out:
	trib_st_free(st);
	trib_free(sorted);
	trib_free(seen);
	return rc;
}

bool rt__api_frl_admit(struct rt_conn *c, const struct rt_job *j)
{
	if (!j->algo.frl || R(c)->safetensors || R(c)->np_fmt)
		return true;
	rt__api_reject(c, RT_REJ_MEDIA_TYPE, 415, "an frl update is a ranking per tensor (int32): "
		       "send it as application/x-safetensors (I32 tensors), application/x-npy or "
		       "application/x-npz (int32 arrays); application/octet-stream is raw float32",
		       -1, NULL);
	return false;
}

bool rt__api_frl_model_form(struct rt_conn *c, const struct rt_job *j, int fmt)
{
	if (!j->algo.frl || fmt != RT_MODEL_RAW)
		return true;
	rt_conn_error(c, 406, "Accept: application/octet-stream is raw float32, and an frl job's "
		      "model is the global ranking, int32: ask for application/x-safetensors (I32 "
		      "tensors, the default) or application/x-npz (int32 arrays)", -1, NULL);
	return false;
}
