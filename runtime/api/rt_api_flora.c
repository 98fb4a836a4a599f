// SPDX-License-Identifier: MIT
/* flora over HTTP: the job spec's pairs, and an update's adapters placed in the client's slot. */
#include "api_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fn_flora.h"
#include "rt_flora.h"
#include "shm_arena.h"
#include "trib_alloc.h"

int rt__api_def_flora(json_t *doc, struct rt_job_def *def, uint32_t S, size_t arena_size,
		      char *msg, size_t cap)
{
	uint64_t base = def->n_elem;
	int st;

	if (json_object_get(doc, "secagg")) {
		snprintf(msg, cap, "secagg: not with flora (masked sums of equal-length vectors; "
			 "flora places each client's adapters in its own block)");
		return 400;
	}
	st = rt_flora_spec(doc, &def->schema, &def->nschema, &def->n_elem, S, msg, cap);
	if (st)
		return st;
	/* The accumulator holds the whole stack (S slots of R ranks): the model rule's bound. */
	if (SHM_ACC_HDR + def->n_elem * 4 > arena_size / 4) {
		snprintf(msg, cap, "flora_pairs: the stacks take %llu bytes (clients_per_round %u x "
			 "max_rank x (m + n) x 4, summed over the pairs) on top of the base's %llu; "
			 "with them the model does not fit this node's arena (%zu MiB): fewer "
			 "clients_per_round, a lower max_rank, or a larger --arena-mb",
			 (unsigned long long)(def->n_elem - base) * 4, S,
			 (unsigned long long)base * 4, arena_size >> 20);
		return 400;
	}
	return 0;
}

/* The refusal of an update's tensors: 422 naming what is wrong. Returns -1 (answered). */
static int refuse(struct rt_conn *c, const char *label, const char *what)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s: %s", label, what);
	rt__api_reject(c, RT_REJ_SHAPE, 422, msg, -1, NULL);
	return -1;
}

/* @name's place among the pairs: its pair and 0 (a) or 1 (b); -1 when no pair names it. */
static long adapter_of(const struct rt_job *j, const char *name, int *which)
{
	const struct rt_flora *f = j->flora;

	for (uint32_t i = 0; i < f->npairs; i++)
		for (int k = 0; k < 2; k++)
			if (!strcmp(j->schema[k ? f->pairs[i].b : f->pairs[i].a].name, name)) {
				*which = k;
				return (long)i;
			}
	return -1;
}

/*
 * Finds each pair's a and b in @st (refusing anything else: a base tensor is frozen), checks
 * their dtype, shapes and common rank; *at gets the tensors' indexes in @st (2 per pair).
 * 0, or -1 answered.
 */
static int match(struct rt_conn *c, const struct rt_job *j, const struct trib_st *st,
		 size_t *at, const char *label)
{
	const struct rt_flora *f = j->flora;
	char what[400], shown[TRIB_ST_SHOW_MAX];

	for (uint32_t i = 0; i < 2 * f->npairs; i++)
		at[i] = SIZE_MAX;
	for (size_t t = 0; t < st->ntensors; t++) {
		const struct trib_tensor *x = &st->tensors[t];
		int k = 0;
		long p = adapter_of(j, x->name, &k);

		trib_st_show(x->name, strlen(x->name), shown, sizeof(shown));
		if (p < 0) {
			bool base = false;

			for (size_t b = 0; b < f->nbase; b++)
				base = base || !strcmp(j->schema[b].name, x->name);
			snprintf(what, sizeof(what), base ? "tensor '%.80s' is a base tensor: frozen in "
				 "flora (an update holds each pair's a and b only)" :
				 "tensor '%.80s' is not one of the job's adapters (each pair's a and b; "
				 "GET /v1/jobs/{job} lists flora_pairs)", shown);
			return refuse(c, label, what);
		}
		if (x->dtype != TRIB_DTYPE_F32) {
			snprintf(what, sizeof(what), "tensor '%.80s' is %s; flora adapters are F32",
				 shown, trib_dtype_name(x->dtype) ? trib_dtype_name(x->dtype) : "?");
			return refuse(c, label, what);
		}
		at[2 * p + k] = t;
	}
	for (uint32_t i = 0; i < f->npairs; i++) {
		const struct rt_flora_pair *p = &f->pairs[i];
		const struct trib_tensor *a, *b;

		for (int k = 0; k < 2; k++)
			if (at[2 * i + k] == SIZE_MAX) {
				snprintf(what, sizeof(what), "tensor '%.80s' is missing: pair '%.80s' takes "
					 "a [r, %llu] and b [%llu, r] with 1 <= r <= %llu",
					 j->schema[k ? p->b : p->a].name, p->name,
					 (unsigned long long)p->n, (unsigned long long)p->m,
					 (unsigned long long)p->R);
				return refuse(c, label, what);
			}
		a = &st->tensors[at[2 * i]];
		b = &st->tensors[at[2 * i + 1]];
		if (a->ndim != 2 || a->shape[1] != p->n || a->shape[0] < 1 || a->shape[0] > p->R ||
		    b->ndim != 2 || b->shape[0] != p->m || b->shape[1] < 1 || b->shape[1] > p->R) {
			const struct trib_tensor *bad = a->ndim != 2 || a->shape[1] != p->n ||
							a->shape[0] < 1 || a->shape[0] > p->R ? a : b;

			snprintf(what, sizeof(what), "tensor '%.80s' has shape [%llu%s%llu]; pair '%.80s' "
				 "takes a [r, %llu] and b [%llu, r] with 1 <= r <= %llu (max_rank)",
				 bad->name, (unsigned long long)bad->shape[0],
				 bad->ndim > 1 ? ", " : "",
				 bad->ndim > 1 ? (unsigned long long)bad->shape[1] : 0ull, p->name,
				 (unsigned long long)p->n, (unsigned long long)p->m,
				 (unsigned long long)p->R);
			if (bad->ndim < 2)
				snprintf(what, sizeof(what), "tensor '%.80s' has %u dimensions; pair '%.80s' "
					 "takes a [r, %llu] and b [%llu, r]", bad->name, bad->ndim,
					 p->name, (unsigned long long)p->n,
					 (unsigned long long)p->m);
			return refuse(c, label, what);
		}
		if (a->shape[0] != b->shape[1]) {
			snprintf(what, sizeof(what), "pair '%.80s': rank mismatch: a '%.80s' has %llu rows, "
				 "b '%.80s' has %llu columns (the same r for both)", p->name, a->name,
				 (unsigned long long)a->shape[0], b->name,
				 (unsigned long long)b->shape[1]);
			return refuse(c, label, what);
		}
	}
	return 0;
}

int rt__api_flora_fill(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
		       struct shm_seg *segs, struct trib_st *st, const char *label)
{
	const struct rt_flora *f = j->flora;
	size_t *at = trib_calloc(2 * f->npairs, sizeof(*at));
	/*
	 * The client's slot: its acceptance index in the round, the seq it is about to get. In a
	 * cluster the controller's count gives it: placed at 0, moved with the count
	 * (rt_flora_segs_move()).
	 */
	uint64_t s = API(c)->clustered ? 0 : j->open ? rt_round_received(j->open) : 0, k = 0;
	int rc = -1;

	if (!at) {
		trib_st_free(st);
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return -1;
	}
	if (s >= f->S) {
		/* Cannot happen: a round closes at clients_per_round updates. */
		trib_st_free(st);
		trib_free(at);
		rt_conn_error(c, 503, "the round is full", -1, "Retry-After: 1\r\n");
		return -1;
	}
	if (match(c, j, st, at, label))
		goto out;
	for (uint32_t i = 0; i < f->npairs; i++) {
		const struct rt_flora_pair *p = &f->pairs[i];
		const struct trib_tensor *a = &st->tensors[at[2 * i]], *b = &st->tensors[at[2 * i + 1]];
		uint64_t r = a->shape[0], aoff = st->data_off + a->data_begin,
			 boff = st->data_off + b->data_begin, cols = f->S * p->R;

		if (aoff % 4 || boff % 4) {
			refuse(c, label, "tensor data must be aligned to 4 bytes (pad the header to a "
			       "multiple of 8 bytes)");
			goto out;
		}
		/* A is folded with the weight, B as sent: each is bounded by its own factor. */
		if (rt__api_check_values(c, body + aoff, SHM_DTYPE_F32, r * p->n, w, a->name) ||
		    rt__api_check_values(c, body + boff, SHM_DTYPE_F32, p->m * r, 1.0, b->name))
			goto out;
		memset(&segs[k], 0, sizeof(segs[k]));
		segs[k].src_off = R(c)->slot_off + aoff;
		segs[k].dst_elem = p->a_off + s * p->R * p->n;
		segs[k].n_elem = r * p->n;
		segs[k].dtype = SHM_DTYPE_F32;
		segs[k++].scale = 1.0f;
		for (uint64_t row = 0; row < p->m; row++) {
			memset(&segs[k], 0, sizeof(segs[k]));
			segs[k].src_off = R(c)->slot_off + boff + row * r * 4;
			segs[k].dst_elem = p->b_off + row * cols + s * p->R;
			segs[k].n_elem = r;
			segs[k].dtype = SHM_DTYPE_F32;
			segs[k++].scale = FN_FLORA_SEG_AS_IS;
		}
	}
	rc = 0;
out:
	trib_st_free(st);
	trib_free(at);
	return rc;
}
