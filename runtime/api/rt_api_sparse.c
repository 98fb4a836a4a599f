// SPDX-License-Identifier: MIT
/*
 * Sparse tensors in safetensors and .npz update bodies: `<name>.indices` (I32 or I64, flat,
 * strictly increasing) plus `<name>.values` (F32), checked here and described to the fold by a
 * SHM_DTYPE_SPARSE segment and its struct shm_sparse record (shm/shm_abi.h). The bytes stay
 * where the body put them: the fold scatter-adds them (functions/fn_sparse.c).
 */
#include "api_priv.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fn_fold.h"
#include "fn_sparse.h"
#include "shm_arena.h"
#include "trib_alloc.h"

#define SFX_IDX ".indices"
#define SFX_VAL ".values"

/* @name ends in @sfx and is longer than it. */
static bool ends_with(const char *name, const char *sfx)
{
	size_t n = strlen(name), k = strlen(sfx);

	return n > k && !strcmp(name + n - k, sfx);
}

/*
 * A schema tensor's own name is dense whatever its suffix (split() says so too): a job of
 * any rule may name a tensor "emb.values" or a flora pair's b "x.indices", and its updates
 * must not be sent down the sparse path, which refuses every rule but a weighted mean. The
 * schema is scanned only for suffixed names, and the first one that is not the schema's
 * answers: at most one scan per suffixed schema tensor, plus one.
 */
bool rt__api_st_sparse(const struct rt_job *j, const struct trib_st *st)
{
	for (size_t i = 0; i < st->ntensors; i++) {
		const char *name = st->tensors[i].name;
		bool schema = false;

		if (!ends_with(name, SFX_IDX) && !ends_with(name, SFX_VAL))
			continue;
		for (size_t k = 0; k < j->nschema && !schema; k++)
			schema = !strcmp(j->schema[k].name, name);
		if (!schema)
			return true;
	}
	return false;
}

/*
 * Why @j takes no sparse body, or NULL. A missing coordinate is a zero in a weighted mean, so
 * every rule that folds with fn_fedavg (and the stages on its sum) is exact with it. The rest
 * read every coordinate of every update (robust rules sort them, Krum measures distances),
 * weigh a client's whole update (fedau), split the schema in two groups (scaffold), fold
 * integers (frl) or stack factors (flora): densifying for them is what sparse bodies avoid.
 */
static const char *refused_by(const struct rt_job *j)
{
	/* An allow-list: a rule added later takes no sparse body until it says it can. */
	static const char *const mean[] = { "fedavg",	  "fedprox", "fedbuff", "fedavgm",
					    "fedadagrad", "fedadam", "fedyogi" };

	if (j->algo.rule)
		return "robust rules compare every coordinate of every update";
	if (j->algo.fedau)
		return "fedau is not wired for sparse bodies";
	if (j->algo.scaffold)
		return "scaffold updates carry the model and control deltas as two dense groups";
	for (size_t i = 0; i < sizeof(mean) / sizeof(mean[0]); i++)
		if (!strcmp(j->algo.name, mean[i]))
			return NULL;
	return "its rule does not fold a weighted mean";
}

/* Index of the schema tensor named @name (@len bytes), by binary search in @order, or -1. */
static long schema_find(const struct rt_job *j, const uint32_t *order, const char *name,
			size_t len)
{
	size_t lo = 0, hi = j->nschema;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *s = j->schema[order[mid]].name;
		int c = strncmp(name, s, len);

		if (!c && s[len])
			c = -1; /* @name is a proper prefix of s: it sorts first */
		if (!c)
			return (long)order[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

static const struct rt_job *sort_job; /* qsort's context: the loop is one thread */

static int cmp_schema(const void *a, const void *b)
{
	return strcmp(sort_job->schema[*(const uint32_t *)a].name,
		      sort_job->schema[*(const uint32_t *)b].name);
}

/* What a sparse body holds for one schema tensor. */
struct pair {
	const struct trib_tensor *idx, *val; /* borrowed from the parsed body, or NULL */
	bool dense;                          /* also sent as a dense tensor */
};

/* 422 naming @what; -1 (answered). */
static int refuse(struct rt_conn *c, const char *label, const char *what)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s: %s", label, what);
	rt__api_reject(c, RT_REJ_SHAPE, 422, msg, -1, NULL);
	return -1;
}

/*
 * The sparse tensors of @st into @pairs (one per schema tensor), leaving the dense ones in
 * @dense (an array of @st->ntensors, *ndense used). Names are shown as the client sent them.
 */
static int split(struct rt_conn *c, const struct rt_job *j, const uint32_t *order,
		 const struct trib_st *st, struct pair *pairs, struct trib_tensor *dense,
		 size_t *ndense, const char *label)
{
	char what[400], shown[TRIB_ST_SHOW_MAX];

	*ndense = 0;
	for (size_t i = 0; i < st->ntensors; i++) {
		const struct trib_tensor *t = &st->tensors[i];
		size_t n = strlen(t->name);
		bool is_idx = ends_with(t->name, SFX_IDX), is_val = ends_with(t->name, SFX_VAL);
		size_t base = n - (is_idx ? strlen(SFX_IDX) : is_val ? strlen(SFX_VAL) : 0);
		long k;

		/* A schema tensor's own name is dense, whatever its suffix. */
		if ((!is_idx && !is_val) || schema_find(j, order, t->name, n) >= 0) {
			dense[(*ndense)++] = *t;
			continue;
		}
		k = schema_find(j, order, t->name, base);
		trib_st_show(t->name, n, shown, sizeof(shown));
		if (k < 0) {
			char stem[TRIB_ST_SHOW_MAX];

			trib_st_show(t->name, base, stem, sizeof(stem)); /* names are the client's */
			snprintf(what, sizeof(what), "tensor \"%s\": a sparse tensor's name is "
				 "<name>%s or <name>%s of a tensor of the job, and the job has no "
				 "tensor \"%s\"", shown, SFX_IDX, SFX_VAL, stem);
			return refuse(c, label, what);
		}
		if (is_idx)
			pairs[k].idx = t;
		else
			pairs[k].val = t;
	}
	for (size_t i = 0; i < *ndense; i++) {
		long k = schema_find(j, order, dense[i].name, strlen(dense[i].name));

		if (k >= 0 && (pairs[k].idx || pairs[k].val)) {
			trib_st_show(dense[i].name, strlen(dense[i].name), shown, sizeof(shown));
			snprintf(what, sizeof(what), "tensor \"%s\" is sent both dense and sparse "
				 "(%s%s): send one of the two", shown, shown,
				 pairs[k].idx ? SFX_IDX : SFX_VAL);
			return refuse(c, label, what);
		}
	}
	return 0;
}

/* One sparse tensor's pair checked (dtypes, shapes, alignment, indices, values). */
static int check_pair(struct rt_conn *c, const struct rt_job *j, size_t k, const struct pair *p,
		      const uint8_t *body, uint64_t data_off, double w, const char *label)
{
	const struct trib_tensor *s = &j->schema[k];
	char what[400], name[TRIB_ST_SHOW_MAX], vname[TRIB_ST_SHOW_MAX + 8];
	const uint8_t *idx, *val;
	size_t bad = 0;
	int err;

	trib_st_show(s->name, strlen(s->name), name, sizeof(name));
	if (!p->idx || !p->val) {
		snprintf(what, sizeof(what), "tensor \"%s%s\" has no \"%s%s\": a sparse tensor is "
			 "sent as both", name, p->idx ? SFX_IDX : SFX_VAL, name,
			 p->idx ? SFX_VAL : SFX_IDX);
		return refuse(c, label, what);
	}
	if (p->idx->dtype != TRIB_DTYPE_I32 && p->idx->dtype != TRIB_DTYPE_I64) {
		snprintf(what, sizeof(what), "tensor \"%s%s\": dtype %s; indices are I32 or I64 "
			 "(int32, int64)", name, SFX_IDX, trib_dtype_name(p->idx->dtype));
		return refuse(c, label, what);
	}
	if (p->val->dtype != TRIB_DTYPE_F32) {
		snprintf(what, sizeof(what), "tensor \"%s%s\": dtype %s; sparse values are F32 "
			 "(float32)", name, SFX_VAL, trib_dtype_name(p->val->dtype));
		return refuse(c, label, what);
	}
	if (p->idx->ndim != 1 || p->val->ndim != 1 || p->idx->n_elem != p->val->n_elem) {
		snprintf(what, sizeof(what), "tensor \"%s\": %s%s and %s%s must be 1-dimensional "
			 "and of one length (flat indices into the tensor's %llu elements, and "
			 "their values); got %u-d of %llu and %u-d of %llu", name, name, SFX_IDX,
			 name, SFX_VAL, (unsigned long long)s->n_elem, p->idx->ndim,
			 (unsigned long long)p->idx->n_elem, p->val->ndim,
			 (unsigned long long)p->val->n_elem);
		return refuse(c, label, what);
	}
	if ((data_off + p->idx->data_begin) % trib_dtype_size(p->idx->dtype) ||
	    (data_off + p->val->data_begin) % 4) {
		snprintf(what, sizeof(what), "tensor \"%s\": indices and values must be aligned to "
			 "their element size (pad the header to a multiple of 8 bytes)", name);
		return refuse(c, label, what);
	}
	idx = body + data_off + p->idx->data_begin;
	val = body + data_off + p->val->data_begin;
	err = fn_sparse_check(idx, p->idx->dtype == TRIB_DTYPE_I32 ? FN_SPARSE_I32 : FN_SPARSE_I64,
			      (size_t)p->idx->n_elem, s->n_elem, &bad);
	if (err) {
		int64_t v, prev = 0;

		if (p->idx->dtype == TRIB_DTYPE_I32) {
			int32_t a = 0, b = 0;

			memcpy(&a, idx + 4 * bad, 4);
			if (bad)
				memcpy(&b, idx + 4 * (bad - 1), 4);
			v = a;
			prev = b;
		} else {
			memcpy(&v, idx + 8 * bad, 8);
			if (bad)
				memcpy(&prev, idx + 8 * (bad - 1), 8);
		}
		if (err == -ERANGE)
			snprintf(what, sizeof(what), "tensor \"%s%s\": index %lld at position %zu is "
				 "out of range: flat indices lie in [0, %llu)", name, SFX_IDX,
				 (long long)v, bad, (unsigned long long)s->n_elem);
		else if (err == -EEXIST)
			snprintf(what, sizeof(what), "tensor \"%s%s\": index %lld appears twice, at "
				 "positions %zu and %zu: one value per coordinate", name, SFX_IDX,
				 (long long)v, bad - 1, bad);
		else
			snprintf(what, sizeof(what), "tensor \"%s%s\": index %lld at position %zu "
				 "follows %lld: indices must be strictly increasing (np.flatnonzero, "
				 "or sort them with their values)", name, SFX_IDX, (long long)v, bad,
				 (long long)prev);
		return refuse(c, label, what);
	}
	snprintf(vname, sizeof(vname), "%s%s", name, SFX_VAL);
	if (rt__api_check_values(c, val, SHM_DTYPE_F32, p->val->n_elem, w, vname))
		return -1;
	return 0;
}

/* An I8 tensor's values are at most 128 x |scale| (as rt_api_update.c bounds them). */
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
 * The dense tensors (@dense, @ndense) matched against the schema's tensors not sent sparse,
 * as rt__api_st_fill() matches a whole body, their segments written into @segs.
 */
static int fill_dense(struct rt_conn *c, const struct rt_job *j, const struct pair *pairs,
		      const uint64_t *dst, uint8_t *body, double w, const struct trib_st *st,
		      struct trib_tensor *dense, size_t ndense, struct shm_seg *segs,
		      const char *label)
{
	size_t nsub = 0;
	struct trib_tensor *sub = trib_calloc(j->nschema ? j->nschema : 1, sizeof(*sub));
	uint32_t *map = trib_calloc(j->nschema ? j->nschema : 1, sizeof(*map));
	uint64_t *offs = trib_calloc(j->nschema ? j->nschema : 1, sizeof(*offs));
	uint32_t *dts = trib_calloc(j->nschema ? j->nschema : 1, sizeof(*dts));
	float *scales = trib_calloc(j->nschema ? j->nschema : 1, sizeof(*scales));
	struct trib_st part = { .tensors = dense, .ntensors = ndense, .data_off = st->data_off };
	char what[TRIB_ST_EXPLAIN_MAX];
	const char *why = NULL;
	int err, rc = -1;

	if (!sub || !map || !offs || !dts || !scales) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		goto out;
	}
	for (size_t i = 0; i < j->nschema; i++) {
		if (pairs[i].idx)
			continue;
		map[nsub] = (uint32_t)i;
		sub[nsub++] = j->schema[i];
	}
	err = trib_st_match_q(&part, sub, nsub, body, offs, dts, scales, &why);
	if (err == -EINVAL)
		trib_st_explain(&part, sub, nsub, true, why, what, sizeof(what));
	else if (err)
		snprintf(what, sizeof(what), "%s", why ? why : strerror(-err));
	if (err == -ENOMEM) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		goto out;
	}
	if (err) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s: %s", label, what);
		rt__api_reject(c, err == -EDOM ? RT_REJ_NONFINITE : RT_REJ_SHAPE, 422, msg, -1,
			       NULL);
		goto out;
	}
	for (size_t s = 0; s < nsub; s++) {
		size_t i = map[s];

		if (offs[s] % trib_dtype_size(dts[s])) {
			refuse(c, label, "tensor data must be aligned to its element size (pad the "
			       "header to a multiple of 8 bytes)");
			goto out;
		}
		if (rt__api_check_values(c, body + offs[s], dts[s], j->schema[i].n_elem, w,
					 j->schema[i].name))
			goto out;
		if (dts[s] == SHM_DTYPE_I8 && check_i8_scale(c, scales[s], w, j->schema[i].name))
			goto out;
		memset(&segs[i], 0, sizeof(segs[i]));
		segs[i].src_off = R(c)->slot_off + offs[s];
		segs[i].dst_elem = dst[i];
		segs[i].n_elem = j->schema[i].n_elem;
		segs[i].dtype = dts[s];
		segs[i].scale = scales[s];
	}
	rc = 0;
out:
	trib_free(sub);
	trib_free(map);
	trib_free(offs);
	trib_free(dts);
	trib_free(scales);
	return rc;
}

int rt__api_sparse_fill(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
			uint64_t *segs_off, struct trib_st *st, const char *label)
{
	size_t n = j->nschema ? j->nschema : 1, ndense = 0, nsp = 0;
	uint32_t *order = trib_malloc(n * sizeof(*order));
	uint64_t *dst = trib_malloc(n * sizeof(*dst));
	struct pair *pairs = trib_calloc(n, sizeof(*pairs));
	struct trib_tensor *dense = trib_malloc((st->ntensors ? st->ntensors : 1) * sizeof(*dense));
	const char *why = refused_by(j);
	uint64_t rec_off = *segs_off;
	struct shm_seg *segs;
	int rc = -1;

	if (!order || !dst || !pairs || !dense) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		goto out;
	}
	if (why) {
		char what[400];

		snprintf(what, sizeof(what), "sparse tensors (<name>%s, <name>%s) are taken by "
			 "jobs that fold a weighted mean (fedavg, fedprox, fedbuff, the server "
			 "optimisers, clipping, dp); job %s is \"%s\": %s; send its tensors dense",
			 SFX_IDX, SFX_VAL, j->name, j->algo.name, why);
		rc = refuse(c, label, what);
		goto out;
	}
	for (size_t i = 0, at = 0; i < j->nschema; at += j->schema[i].n_elem, i++) {
		order[i] = (uint32_t)i;
		dst[i] = at;
	}
	sort_job = j;
	qsort(order, j->nschema, sizeof(*order), cmp_schema);
	if (split(c, j, order, st, pairs, dense, &ndense, label))
		goto out;
	for (size_t k = 0; k < j->nschema; k++) {
		if (!pairs[k].idx && !pairs[k].val)
			continue;
		if (check_pair(c, j, k, &pairs[k], body, st->data_off, w, label))
			goto out;
		nsp++;
	}
	/* The records first, then the segment table: the update's bytes end where it starts. */
	*segs_off = rec_off + nsp * sizeof(struct shm_sparse);
	segs = shm_arena_ptr(N(c)->arena, *segs_off);
	if (fill_dense(c, j, pairs, dst, body, w, st, dense, ndense, segs, label))
		goto out;
	for (size_t k = 0, r = 0; k < j->nschema; k++) {
		struct shm_sparse *rec;
		uint64_t at = rec_off + r * sizeof(*rec);

		if (!pairs[k].idx)
			continue;
		rec = shm_arena_ptr(N(c)->arena, at);
		memset(rec, 0, sizeof(*rec));
		rec->idx_rel = (int64_t)(R(c)->slot_off + st->data_off + pairs[k].idx->data_begin) -
			       (int64_t)at;
		rec->val_rel = (int64_t)(R(c)->slot_off + st->data_off + pairs[k].val->data_begin) -
			       (int64_t)at;
		rec->nnz = pairs[k].idx->n_elem;
		rec->idx_dtype = pairs[k].idx->dtype;
		rec->val_dtype = SHM_DTYPE_F32;
		memset(&segs[k], 0, sizeof(segs[k]));
		segs[k].src_off = at;
		segs[k].dst_elem = dst[k];
		segs[k].n_elem = j->schema[k].n_elem;
		segs[k].dtype = SHM_DTYPE_SPARSE;
		segs[k].scale = 1.0f;
		r++;
	}
	rc = 0;
out:
	trib_st_free(st);
	trib_free(order);
	trib_free(dst);
	trib_free(pairs);
	trib_free(dense);
	return rc;
}
