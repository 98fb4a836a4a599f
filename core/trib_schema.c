// SPDX-License-Identifier: MIT
/* A job's tensors from JSON: the shapes every model file, upload and sum of the job follows. */
#include "trib_schema.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "trib_alloc.h"
#include "trib_dtype.h"

/*
 * Checks entry @e and fills @t[@i]; 0 or -EINVAL with *why. The checks run in
 * the order clients have always seen their messages in.
 */
static int tensor_from_json(const json_t *e, struct trib_tensor *t, size_t i, uint64_t *elems,
			    const char **why)
{
	const json_t *name = json_object_get(e, "name");
	const json_t *shape = json_object_get(e, "shape");
	const json_t *dtype = json_object_get(e, "dtype");
	struct trib_tensor *ti = &t[i];

	if (!json_is_object(e) || !json_is_string(name) || !json_is_array(shape)) {
		*why = "tensors: each entry needs a \"name\" string and a \"shape\" array";
		return -EINVAL;
	}
	if (dtype && (!json_is_string(dtype) || strcmp(json_string_value(dtype), "F32"))) {
		*why = "tensors: dtype must be \"F32\"";
		return -EINVAL;
	}
	/* A NUL inside the name would cut it short here and not in the client's file. */
	if (json_string_length(name) == 0 || json_string_length(name) >= TRIB_ST_NAME_MAX ||
	    !strcmp(json_string_value(name), "__metadata__") ||
	    strlen(json_string_value(name)) != json_string_length(name)) {
		*why = "tensors: bad tensor name";
		return -EINVAL;
	}
	strcpy(ti->name, json_string_value(name));
	for (size_t k = 0; k < i; k++) {
		if (!strcmp(t[k].name, ti->name)) {
			*why = "tensors: duplicate tensor name";
			return -EINVAL;
		}
	}
	if (json_array_size(shape) > TRIB_ST_MAX_DIMS) {
		*why = "tensors: too many dimensions (at most 8)";
		return -EINVAL;
	}
	ti->ndim = (uint32_t)json_array_size(shape);
	*elems = 1;
	for (uint32_t d = 0; d < ti->ndim; d++) {
		const json_t *v = json_array_get(shape, d);

		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    __builtin_mul_overflow(*elems, (uint64_t)json_integer_value(v), elems)) {
			*why = "tensors: shape entries must be positive integers";
			return -EINVAL;
		}
		ti->shape[d] = (uint64_t)json_integer_value(v);
	}
	ti->dtype = TRIB_DTYPE_F32;
	ti->n_elem = *elems;
	return 0;
}

/* trib_schema_from_json(), and *at (if not NULL) the entry it refused, else SIZE_MAX. */
static int from_json(const json_t *arr, struct trib_tensor **out, size_t *nout, uint64_t *n_elem,
		     const char **why, size_t *at)
{
	struct trib_tensor *t;
	size_t n = json_array_size(arr);
	uint64_t total = 0, elems;

	if (!json_is_array(arr) || n == 0 || n > 4096) {
		*why = "tensors: must be a non-empty array (at most 4096 tensors)";
		return -EINVAL;
	}
	t = trib_calloc(n, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (at)
			*at = i;
		if (tensor_from_json(json_array_get(arr, i), t, i, &elems, why))
			goto err_free;
		if (__builtin_add_overflow(total, elems, &total) || total > TRIB_SCHEMA_MAX_ELEM) {
			*why = "tensors: model too large (at most 2^32 parameters)";
			goto err_free;
		}
	}
	if (at)
		*at = SIZE_MAX;
	*out = t;
	*nout = n;
	*n_elem = total;
	return 0;
err_free:
	trib_free(t);
	return -EINVAL;
}

int trib_schema_from_json(const json_t *arr, struct trib_tensor **out, size_t *nout,
			  uint64_t *n_elem, const char **why)
{
	return from_json(arr, out, nout, n_elem, why, NULL);
}

int trib_schema_from_spec(const json_t *spec, struct trib_tensor **out, size_t *nout,
			  uint64_t *n_elem, const char **why)
{
	return trib_schema_from_spec_at(spec, out, nout, n_elem, why, NULL);
}

int trib_schema_from_spec_at(const json_t *spec, struct trib_tensor **out, size_t *nout,
			     uint64_t *n_elem, const char **why, size_t *at)
{
	const json_t *params = json_object_get(spec, "params");
	const json_t *tensors = json_object_get(spec, "tensors");
	struct trib_tensor *t;

	if (at)
		*at = SIZE_MAX;

	if (!!params == !!tensors) {
		*why = "give exactly one of \"params\" and \"tensors\"";
		return -EINVAL;
	}
	if (tensors)
		return from_json(tensors, out, nout, n_elem, why, at);
	if (!json_is_integer(params) || json_integer_value(params) < 1 ||
	    (uint64_t)json_integer_value(params) > TRIB_SCHEMA_MAX_ELEM) {
		*why = "params: an integer from 1 to 2^32";
		return -EINVAL;
	}
	t = trib_calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	strcpy(t->name, "weights");
	t->dtype = TRIB_DTYPE_F32;
	t->ndim = 1;
	t->shape[0] = t->n_elem = (uint64_t)json_integer_value(params);
	*out = t;
	*nout = 1;
	*n_elem = t->n_elem;
	return 0;
}

/* Appends tensor @name, shape [d0] (@d1 0) or [d0, d1], F32, to *@out. 0, -EINVAL or -ENOMEM. */
static int flora_append(struct trib_tensor **out, size_t *n, uint64_t *n_elem, const char *name,
			uint64_t d0, uint64_t d1)
{
	uint64_t ne = d1 ? d0 * d1 : d0;
	struct trib_tensor *t;

	if (!name || strlen(name) >= TRIB_ST_NAME_MAX || (d1 && ne / d1 != d0) ||
	    *n_elem + ne > TRIB_SCHEMA_MAX_ELEM)
		return -EINVAL;
	t = trib_realloc(*out, (*n + 1) * sizeof(**out));
	if (!t)
		return -ENOMEM;
	*out = t;
	t += (*n)++;
	memset(t, 0, sizeof(*t));
	strcpy(t->name, name);
	t->dtype = TRIB_DTYPE_F32;
	t->ndim = d1 ? 2 : 1;
	t->shape[0] = d0;
	t->shape[1] = d1;
	t->n_elem = ne;
	*n_elem += ne;
	return 0;
}

int trib_schema_add_flora(const json_t *spec, struct trib_tensor **out, size_t *nout,
			  uint64_t *n_elem, const char **why)
{
	const json_t *alg = json_object_get(spec, "algorithm");
	const json_t *pairs = json_object_get(spec, "flora_pairs");
	json_int_t S = json_integer_value(json_object_get(spec, "clients_per_round"));
	size_t nbase = *nout, i;
	const json_t *e;

	if (!json_is_string(alg) || strcmp(json_string_value(alg), "flora"))
		return 0;
	*why = "flora_pairs: not a valid list of LoRA pairs";
	if (!json_is_array(pairs) || S < 1)
		return -EINVAL;
	json_array_foreach(pairs, i, e) {
		const char *base = json_string_value(json_object_get(e, "base"));
		const char *name = json_string_value(json_object_get(e, "name"));
		json_int_t R = json_integer_value(json_object_get(e, "max_rank"));
		char rank[TRIB_ST_NAME_MAX + 8];
		const struct trib_tensor *b = NULL;
		uint64_t m, n, sr;
		int err;

		for (size_t k = 0; base && k < nbase; k++)
			if (!strcmp((*out)[k].name, base))
				b = &(*out)[k];
		if (!b || b->ndim != 2 || !name || R < 1 || (uint64_t)R > (1ull << 31) ||
		    (uint64_t)S > (1ull << 31))
			return -EINVAL;
		m = b->shape[0];
		n = b->shape[1];
		sr = (uint64_t)S * (uint64_t)R;
		snprintf(rank, sizeof(rank), "%s.rank", name);
		err = flora_append(out, nout, n_elem, json_string_value(json_object_get(e, "a")),
				   sr, n);
		if (!err)
			err = flora_append(out, nout, n_elem,
					   json_string_value(json_object_get(e, "b")), m, sr);
		if (!err)
			err = flora_append(out, nout, n_elem, rank, 1, 0);
		if (err)
			return err;
	}
	return 0;
}

int trib_schema_scaffold(json_t *spec, size_t *at)
{
	json_t *t = json_object_get(spec, "tensors"), *np = json_object_get(spec, "params");
	size_t n, i;

	if (!t && json_is_integer(np)) {
		t = json_pack("[{s:s, s:[I], s:s}]", "name", "weights", "shape",
			      (json_int_t)json_integer_value(np), "dtype", "F32");
		if (!t || json_object_set_new(spec, "tensors", t) ||
		    json_object_del(spec, "params"))
			return -ENOMEM;
	}
	if (!json_is_array(t))
		return 0;
	n = json_array_size(t);
	for (i = 0; i < n; i++) {
		json_t *e = json_array_get(t, i), *name = json_object_get(e, "name"), *twin;
		char buf[TRIB_ST_NAME_MAX + 2];

		if (!json_is_string(name))
			return 0;
		if (!strncmp(json_string_value(name), "c.", 2)) {
			*at = i;
			return -EINVAL;
		}
		snprintf(buf, sizeof(buf), "c.%s", json_string_value(name));
		twin = json_deep_copy(e);
		if (!twin || json_object_set_new(twin, "name", json_string(buf)) ||
		    json_array_append_new(t, twin))
			return -ENOMEM;
	}
	return 0;
}
