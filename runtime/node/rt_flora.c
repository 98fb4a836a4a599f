// SPDX-License-Identifier: MIT
/* flora jobs: the pairs' spec and layout, and the round's model from its stacked sum (rt_flora.h). */
#include "rt_flora.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fn_flora.h"
#include "rt_node.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_schema.h"

#define BAD(...)                                                 \
	do {                                                     \
		snprintf(msg, cap, __VA_ARGS__);                 \
		return 400;                                      \
	} while (0)

/* A pair's name, and the a and b names: 1 to 200 of [A-Za-z0-9._-/] (a tensor name). */
static bool name_ok(const char *s, bool slash)
{
	size_t len = strlen(s);

	if (!len || len > 200)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' ||
		      (slash && ch == '/')))
			return false;
	}
	return true;
}

static long find(const struct trib_tensor *t, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(t[i].name, name))
			return (long)i;
	return -1;
}

/* One entry of "flora_pairs" checked against the base (@t, @nbase) and the pairs before it. */
static int check_pair(json_t *e, size_t i, const struct trib_tensor *t, size_t nbase,
		      size_t nall, char *msg, size_t cap)
{
	static const char *const keys[] = { "name", "base", "a", "b", "max_rank", NULL };
	const char *key, *name, *a, *b, *base;
	json_t *v, *r = json_object_get(e, "max_rank");
	char rank[TRIB_ST_NAME_MAX + 8];
	long bi;
	uint64_t m, n, lim;

	if (!json_is_object(e))
		BAD("flora_pairs[%zu]: an object {\"name\", \"base\", \"a\", \"b\", \"max_rank\"}", i);
	json_object_foreach(e, key, v) {
		size_t k;

		for (k = 0; keys[k] && strcmp(keys[k], key); k++)
			;
		if (!keys[k])
			BAD("flora_pairs[%zu].%.64s: unknown field (name, base, a, b, max_rank)", i,
			    key);
	}
	name = json_string_value(json_object_get(e, "name"));
	base = json_string_value(json_object_get(e, "base"));
	a = json_string_value(json_object_get(e, "a"));
	b = json_string_value(json_object_get(e, "b"));
	if (!name || !name_ok(name, false))
		BAD("flora_pairs[%zu].name: required, 1 to 200 characters of A-Z a-z 0-9 . _ -", i);
	if (!base || (bi = find(t, nbase, base)) < 0)
		BAD("flora_pairs[%zu].base: required, the name of one of \"tensors\"%s%.64s%s", i,
		    base ? " ('" : "", base ? base : "", base ? "' is not one)" : "");
	if (t[bi].ndim != 2)
		BAD("flora_pairs[%zu].base: '%.64s' has %u dimensions; a LoRA pair adapts a 2-D "
		    "tensor [m, n]", i, base, t[bi].ndim);
	for (int k = 0; k < 2; k++) {
		const char *x = k ? b : a, *f = k ? "b" : "a";

		if (!x || !name_ok(x, true))
			BAD("flora_pairs[%zu].%s: required, a new tensor name, 1 to 200 characters "
			    "of A-Z a-z 0-9 . _ - /", i, f);
		if (find(t, nall, x) >= 0)
			BAD("flora_pairs[%zu].%s: '%.80s' is taken (a base tensor, or another pair's "
			    "name); a and b name the adapter's own tensors", i, f, x);
	}
	if (!strcmp(a, b))
		BAD("flora_pairs[%zu].b: '%.80s' is also the pair's a", i, b);
	snprintf(rank, sizeof(rank), "%s.rank", name);
	if (find(t, nall, rank) >= 0 || !strcmp(rank, a) || !strcmp(rank, b))
		BAD("flora_pairs[%zu].name: '%.80s' is taken (the model serves the used rank as "
		    "'%.80s'; pair names are unique and no tensor may be named so)", i, name, rank);
	m = t[bi].shape[0];
	n = t[bi].shape[1];
	lim = m < n ? m : n;
	if (!json_is_integer(r) || json_integer_value(r) < 1 ||
	    (uint64_t)json_integer_value(r) > lim)
		BAD("flora_pairs[%zu].max_rank: required, an integer from 1 to %llu (min(m, n) of "
		    "'%.80s' [%llu, %llu])", i, (unsigned long long)lim, base, (unsigned long long)m,
		    (unsigned long long)n);
	return 0;
}

/* A checked pair's a, b, name and name.rank. */
static void names4(json_t *e, char out[4][TRIB_ST_NAME_MAX + 8])
{
	snprintf(out[0], sizeof(out[0]), "%s", json_string_value(json_object_get(e, "a")));
	snprintf(out[1], sizeof(out[1]), "%s", json_string_value(json_object_get(e, "b")));
	snprintf(out[2], sizeof(out[2]), "%s", json_string_value(json_object_get(e, "name")));
	snprintf(out[3], sizeof(out[3]), "%s.rank", json_string_value(json_object_get(e, "name")));
}

int rt_flora_spec(json_t *doc, struct trib_tensor **schema, size_t *nschema, uint64_t *n_elem,
		  uint32_t S, char *msg, size_t cap)
{
	json_t *pairs = json_object_get(doc, "flora_pairs"), *mg = json_object_get(doc, "flora_merge");
	size_t np = json_array_size(pairs), nbase = *nschema;
	uint64_t segs = 0;

	if (!json_is_array(pairs) || np < 1 || np > RT_FLORA_PAIRS_MAX)
		BAD("flora_pairs: required for flora, an array of 1 to %d pairs {\"name\", \"base\", "
		    "\"a\", \"b\", \"max_rank\"}", RT_FLORA_PAIRS_MAX);
	if (mg && !json_is_boolean(mg))
		BAD("flora_merge: true or false (default false)");
	for (size_t i = 0; i < np; i++) {
		json_t *e = json_array_get(pairs, i);
		int st = check_pair(e, i, *schema, nbase, *nschema, msg, cap);
		const struct trib_tensor *bt;
		uint64_t m, n, R;

		if (st)
			return st;
		bt = &(*schema)[find(*schema, nbase,
				     json_string_value(json_object_get(e, "base")))];
		m = bt->shape[0];
		n = bt->shape[1];
		R = (uint64_t)json_integer_value(json_object_get(e, "max_rank"));
		segs += 1 + m;
		if (segs > RT_FLORA_SEGS_MAX)
			BAD("flora_pairs[%zu].base: the pairs' B matrices have %llu rows in all so "
			    "far; an update's rows across pairs plus one per pair may be at most %u",
			    i, (unsigned long long)(segs - np), RT_FLORA_SEGS_MAX);
		/* Up to 2^20 slots x 2^21 ranks x 2^32: far from overflowing, checked below. */
		if ((uint64_t)S * R > (1ull << 31) || (uint64_t)S * R * (m + n) > (1ull << 40))
			BAD("flora_pairs[%zu].max_rank: clients_per_round %u x max_rank %llu x (m + "
			    "n) %llu is too large a stack", i, S, (unsigned long long)R,
			    (unsigned long long)(m + n));
		/* The pairs before it are checked, not yet appended: their names against its. */
		for (size_t q = 0; q < i; q++) {
			static const char *const field[] = { "a", "b", "name", "name" };
			char x[4][TRIB_ST_NAME_MAX + 8], y[4][TRIB_ST_NAME_MAX + 8];

			names4(json_array_get(pairs, q), x);
			names4(e, y);
			for (int k = 0; k < 4; k++)
				for (int z = 0; z < 4; z++)
					if (!strcmp(x[k], y[z]))
						BAD("flora_pairs[%zu].%s: '%.80s' is taken by "
						    "flora_pairs[%zu] (each pair's name, name.rank, a "
						    "and b are its own)", i, field[z], y[z], q);
		}
	}
	{
		const char *why = NULL;
		int err = trib_schema_add_flora(doc, schema, nschema, n_elem, &why);

		if (err == -ENOMEM) {
			snprintf(msg, cap, "out of memory");
			return 500;
		}
		if (err)
			BAD("%s", why ? why : "flora_pairs: not valid");
	}
	return 0;
}

static uint64_t offset_of(const struct rt_job *j, uint32_t idx)
{
	uint64_t off = 0;

	for (uint32_t i = 0; i < idx; i++)
		off += j->schema[i].n_elem;
	return off;
}

int rt_flora_bind(struct rt_job *j, const json_t *params)
{
	json_t *pairs = json_object_get(params, "flora_pairs");
	size_t np = json_array_size(pairs);
	struct rt_flora *f;
	char *hdr = NULL;
	size_t hlen = 0;
	int err;

	if (np < 1 || np > RT_FLORA_PAIRS_MAX || j->nschema < 3 * np)
		return -EINVAL;
	f = trib_calloc(1, sizeof(*f) + np * sizeof(f->pairs[0]));
	if (!f)
		return -ENOMEM;
	f->merge = json_is_true(json_object_get(params, "flora_merge"));
	f->S = j->cpr;
	f->npairs = (uint32_t)np;
	f->nbase = j->nschema - 3 * np;
	f->n_base = offset_of(j, (uint32_t)f->nbase);
	for (size_t i = 0; i < np; i++) {
		json_t *e = json_array_get(pairs, i);
		struct rt_flora_pair *p = &f->pairs[i];
		long bi = find(j->schema, f->nbase, json_string_value(json_object_get(e, "base")));
		uint32_t at = (uint32_t)(f->nbase + 3 * i);

		snprintf(p->name, sizeof(p->name), "%s",
			 json_string_value(json_object_get(e, "name")));
		/* The schema is the one rt_flora_spec() made: a, b, rank in pair order. */
		if (bi < 0 || !json_is_integer(json_object_get(e, "max_rank")) ||
		    strcmp(j->schema[at].name, json_string_value(json_object_get(e, "a"))) ||
		    strcmp(j->schema[at + 1].name, json_string_value(json_object_get(e, "b")))) {
			trib_free(f);
			return -EINVAL;
		}
		p->base = (uint32_t)bi;
		p->a = at;
		p->b = at + 1;
		p->rank = at + 2;
		p->m = j->schema[bi].shape[0];
		p->n = j->schema[bi].shape[1];
		p->R = (uint64_t)json_integer_value(json_object_get(e, "max_rank"));
		p->base_off = offset_of(j, p->base);
		p->a_off = offset_of(j, p->a);
		p->b_off = offset_of(j, p->b);
		p->rank_off = offset_of(j, p->rank);
		if (j->schema[at].n_elem != f->S * p->R * p->n ||
		    j->schema[at + 1].n_elem != f->S * p->R * p->m || j->schema[at + 2].n_elem != 1) {
			trib_free(f);
			return -EINVAL;
		}
		j->schema[p->rank].dtype = TRIB_DTYPE_I32;
	}
	/* The served model's header: everything (rank I32), or with merge the base only. */
	err = f->merge ? trib_st_write_header(j->schema, f->nbase, NULL, &hdr, &hlen)
		       : trib_st_write_header_dtype(j->schema, j->nschema, TRIB_DTYPE_EACH, NULL,
						    &hdr, &hlen);
	if (err) {
		trib_free(f);
		return err;
	}
	trib_free(j->st_header);
	j->st_header = hdr;
	j->st_header_len = hlen;
	trib_free(j->flora);
	j->flora = f;
	return 0;
}

uint64_t rt_flora_model_elems(const struct rt_job *j)
{
	return j->flora && j->flora->merge ? j->flora->n_base : j->n_elem;
}

uint32_t rt_flora_nsegs(const struct rt_job *j)
{
	uint32_t n = 0;

	for (uint32_t i = 0; j->flora && i < j->flora->npairs; i++)
		n += 1 + (uint32_t)j->flora->pairs[i].m;
	return n;
}

/*
 * Slot @s's rank: one past its last rank index whose A row or B column holds a non-zero. A
 * trailing index that is zero in both adds nothing to B A, so leaving it out keeps the product.
 */
static uint32_t slot_rank(const struct rt_flora_pair *p, uint64_t S, const float *a,
			  const float *b, uint64_t s)
{
	for (uint64_t i = p->R; i-- > 0;) {
		uint64_t row = s * p->R + i;

		for (uint64_t k = 0; k < p->n; k++)
			if (a[row * p->n + k] != 0.0f)
				return (uint32_t)i + 1;
		for (uint64_t k = 0; k < p->m; k++)
			if (b[k * S * p->R + row] != 0.0f)
				return (uint32_t)i + 1;
	}
	return 0;
}

int rt_flora_model(const struct rt_job *j, const float *sum, double W, const float *prev,
		   float *out)
{
	const struct rt_flora *f = j->flora;
	uint32_t *ranks = trib_calloc(f->S ? f->S : 1, sizeof(*ranks));
	int err = 0;

	if (!ranks)
		return -ENOMEM;
	if (!(W > 0))
		err = -EDOM;
	/* The base is frozen: the previous model's, whatever the sum holds there (zeros). */
	if (!err)
		memcpy(out, prev, f->n_base * sizeof(float));
	for (uint32_t i = 0; !err && i < f->npairs; i++) {
		const struct rt_flora_pair *p = &f->pairs[i];
		uint64_t na = f->S * p->R * p->n, nb = p->m * f->S * p->R;
		float *a = f->merge ? trib_malloc(na * sizeof(float)) : out + p->a_off;
		float *b = f->merge ? trib_malloc(nb * sizeof(float)) : out + p->b_off;
		size_t used;

		if (!a || !b) {
			err = -ENOMEM;
		} else {
			memcpy(a, sum + p->a_off, na * sizeof(float));
			memcpy(b, sum + p->b_off, nb * sizeof(float));
			for (uint64_t s = 0; s < f->S; s++)
				ranks[s] = slot_rank(p, f->S, a, b, s);
			err = fn_flora_finish(a, f->S * p->R, p->n, W);
		}
		used = err ? 0 : fn_flora_pack(a, b, p->m, p->n, p->R, f->S, ranks);
		if (!err && used == (size_t)-1)
			err = -EINVAL; /* cannot happen: slot_rank() is at most R */
		if (!err && f->merge)
			fn_flora_merge(out + p->base_off, a, b, p->m, p->n, f->S * p->R, used);
		if (!err && !f->merge) {
			int32_t r = (int32_t)used;

			memcpy(out + p->rank_off, &r, sizeof(r));
		}
		if (f->merge) {
			trib_free(a);
			trib_free(b);
		}
	}
	trib_free(ranks);
	return err;
}

json_t *rt_flora_json(const struct rt_job *j)
{
	const struct rt_flora *f = j->flora;
	json_t *arr = json_array();

	for (uint32_t i = 0; f && arr && i < f->npairs; i++) {
		const struct rt_flora_pair *p = &f->pairs[i];

		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:I, s:[I, I]}", "name",
						     p->name, "base", j->schema[p->base].name, "a",
						     j->schema[p->a].name, "b", j->schema[p->b].name,
						     "max_rank", (json_int_t)p->R, "shape",
						     (json_int_t)p->m, (json_int_t)p->n));
	}
	return arr;
}

void rt_flora_segs_move(const struct rt_job *j, struct shm_seg *segs, uint32_t nsegs,
			uint64_t from, uint64_t to)
{
	const struct rt_flora *f = j->flora;
	uint32_t k = 0;

	/* The order rt__api_flora_fill() wrote: per pair, A's segment then B's m rows. */
	for (uint32_t i = 0; f && i < f->npairs && k < nsegs; i++) {
		const struct rt_flora_pair *p = &f->pairs[i];

		segs[k].dst_elem = segs[k].dst_elem - from * p->R * p->n + to * p->R * p->n;
		k++;
		for (uint64_t row = 0; row < p->m && k < nsegs; row++, k++)
			segs[k].dst_elem = segs[k].dst_elem - from * p->R + to * p->R;
	}
}

int rt_flora_model_cluster(struct rt_node *n, struct rt_job *j, uint32_t round, const float *sum,
			   double W, float *out)
{
	struct trib_blob *prev;
	int err;

	/* The frozen base is model v@round's: the top waits until it is stored here. */
	if (j->completed != round)
		return -EAGAIN;
	prev = rt_job_model(n, j, round);
	if (!prev)
		return -EAGAIN;
	if (prev->len != j->st_header_len + rt_flora_model_elems(j) * sizeof(float)) {
		trib_blob_release(prev);
		return -EINVAL;
	}
	memset(out, 0, j->n_elem * sizeof(float));
	err = rt_flora_model(j, sum, W, (const float *)(const void *)(prev->data + j->st_header_len),
			     out);
	trib_blob_release(prev);
	return err;
}

void rt_flora_flat(const struct rt_job *j, const struct shm_arena *arena,
		   const struct shm_desc *d, double w, float *flat)
{
	const struct shm_seg *segs = shm_arena_ptr(arena, d->segs_off);
	float wf = (float)w; /* fn_flora_ops folds with the float weight */

	(void)j;
	for (uint32_t i = 0; i < d->nsegs; i++) {
		const float *x = shm_arena_ptr(arena, segs[i].src_off);
		float *to = flat + segs[i].dst_elem;

		if (segs[i].scale == FN_FLORA_SEG_AS_IS)
			memcpy(to, x, segs[i].n_elem * sizeof(float));
		else
			for (uint64_t k = 0; k < segs[i].n_elem; k++)
				to[k] = wf * x[k];
	}
}
