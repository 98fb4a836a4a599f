// SPDX-License-Identifier: MIT
/* Tests for core/trib_schema: a job's tensors from "params" or "tensors". */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include <jansson.h>

#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_schema.h"

/* Parse @text as a job spec; returns trib_schema_from_spec's result. */
static int spec(const char *text, struct trib_tensor **t, size_t *n, uint64_t *elems,
		const char **why)
{
	json_t *o = json_loads(text, JSON_ALLOW_NUL, NULL);
	int err;

	cr_assert_not_null(o, "bad test JSON: %s", text);
	err = trib_schema_from_spec(o, t, n, elems, why);
	json_decref(o);
	return err;
}

Test(core_schema, params_is_one_weights_tensor)
{
	struct trib_tensor *t = NULL;
	const char *why = NULL;
	uint64_t elems = 0;
	size_t n = 0;

	cr_assert_eq(spec("{\"name\":\"j\",\"params\":1000}", &t, &n, &elems, &why), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(elems, 1000);
	cr_assert_str_eq(t[0].name, "weights");
	cr_assert_eq(t[0].dtype, TRIB_DTYPE_F32);
	cr_assert_eq(t[0].ndim, 1);
	cr_assert_eq(t[0].shape[0], 1000);
	cr_assert_eq(t[0].n_elem, 1000);
	trib_free(t);
}

Test(core_schema, tensors_in_order)
{
	struct trib_tensor *t = NULL;
	const char *why = NULL;
	uint64_t elems = 0;
	size_t n = 0;

	cr_assert_eq(spec("{\"tensors\":[{\"name\":\"w\",\"shape\":[3,4]},"
			  "{\"name\":\"b\",\"shape\":[4],\"dtype\":\"F32\"}]}",
			  &t, &n, &elems, &why),
		     0);
	cr_assert_eq(n, 2);
	cr_assert_eq(elems, 16);
	cr_assert_str_eq(t[0].name, "w");
	cr_assert_eq(t[0].ndim, 2);
	cr_assert_eq(t[0].n_elem, 12);
	cr_assert_str_eq(t[1].name, "b");
	cr_assert_eq(t[1].n_elem, 4);
	trib_free(t);
}

Test(core_schema, refusals_say_why)
{
	static const struct {
		const char *spec, *why;
	} cases[] = {
		{"{}", "give exactly one of \"params\" and \"tensors\""},
		{"{\"params\":1,\"tensors\":[]}", "give exactly one of \"params\" and \"tensors\""},
		{"{\"params\":0}", "params: an integer from 1 to 2^32"},
		{"{\"params\":4294967297}", "params: an integer from 1 to 2^32"},
		{"{\"params\":\"5\"}", "params: an integer from 1 to 2^32"},
		{"{\"tensors\":[]}", "tensors: must be a non-empty array (at most 4096 tensors)"},
		{"{\"tensors\":[{\"name\":\"w\"}]}",
		 "tensors: each entry needs a \"name\" string and a \"shape\" array"},
		{"{\"tensors\":[{\"name\":\"w\",\"shape\":[1],\"dtype\":\"F16\"}]}",
		 "tensors: dtype must be \"F32\""},
		{"{\"tensors\":[{\"name\":\"__metadata__\",\"shape\":[1]}]}",
		 "tensors: bad tensor name"},
		{"{\"tensors\":[{\"name\":\"a\\u0000b\",\"shape\":[1]}]}", "tensors: bad tensor name"},
		{"{\"tensors\":[{\"name\":\"w\",\"shape\":[1]},{\"name\":\"w\",\"shape\":[0]}]}",
		 "tensors: duplicate tensor name"},
		{"{\"tensors\":[{\"name\":\"w\",\"shape\":[1,1,1,1,1,1,1,1,1]}]}",
		 "tensors: too many dimensions (at most 8)"},
		{"{\"tensors\":[{\"name\":\"w\",\"shape\":[2,0]}]}",
		 "tensors: shape entries must be positive integers"},
		{"{\"tensors\":[{\"name\":\"w\",\"shape\":[65536,65536]},{\"name\":\"b\",\"shape\":[1]}]}",
		 "tensors: model too large (at most 2^32 parameters)"},
	};
	struct trib_tensor *t = (struct trib_tensor *)0x1;
	uint64_t elems = 7;
	size_t n = 7;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = NULL;

		cr_assert_eq(spec(cases[i].spec, &t, &n, &elems, &why), -EINVAL, "%s", cases[i].spec);
		cr_assert_str_eq(why, cases[i].why, "%s", cases[i].spec);
		cr_assert_eq(t, (struct trib_tensor *)0x1, "out untouched");
		cr_assert_eq(n + elems, 14, "out untouched");
	}
}

Test(core_schema, exactly_2_to_32_parameters_fit)
{
	struct trib_tensor *t = NULL;
	const char *why = NULL;
	uint64_t elems = 0;
	size_t n = 0;

	cr_assert_eq(spec("{\"tensors\":[{\"name\":\"w\",\"shape\":[65536,65536]}]}", &t, &n,
			  &elems, &why),
		     0);
	cr_assert_eq(elems, TRIB_SCHEMA_MAX_ELEM);
	trib_free(t);
	cr_assert_eq(spec("{\"params\":4294967296}", &t, &n, &elems, &why), 0);
	cr_assert_eq(elems, TRIB_SCHEMA_MAX_ELEM);
	trib_free(t);
}

/* flora: each pair's a [S R, n], b [m, S R] and <name>.rank [1] after the base, in pair order. */
Test(core_schema, flora_appends_the_stacks)
{
	json_t *o = json_loads("{\"algorithm\":\"flora\",\"clients_per_round\":3,"
			       "\"tensors\":[{\"name\":\"w\",\"shape\":[5,7]},"
			       "{\"name\":\"v\",\"shape\":[4,2]}],"
			       "\"flora_pairs\":[{\"name\":\"p\",\"base\":\"w\",\"a\":\"w.A\","
			       "\"b\":\"w.B\",\"max_rank\":2},{\"name\":\"q\",\"base\":\"v\","
			       "\"a\":\"v.A\",\"b\":\"v.B\",\"max_rank\":1}]}",
			       0, NULL);
	struct trib_tensor *t = NULL;
	const char *why = NULL;
	uint64_t elems = 0;
	size_t n = 0;

	cr_assert_not_null(o);
	cr_assert_eq(trib_schema_from_spec(o, &t, &n, &elems, &why), 0);
	cr_assert_eq(trib_schema_add_flora(o, &t, &n, &elems, &why), 0);
	cr_assert_eq(n, 8);
	cr_assert_str_eq(t[2].name, "w.A");
	cr_assert(t[2].shape[0] == 6 && t[2].shape[1] == 7);
	cr_assert_str_eq(t[3].name, "w.B");
	cr_assert(t[3].shape[0] == 5 && t[3].shape[1] == 6);
	cr_assert_str_eq(t[4].name, "p.rank");
	cr_assert(t[4].ndim == 1 && t[4].n_elem == 1);
	cr_assert_str_eq(t[5].name, "v.A");
	cr_assert(t[5].shape[0] == 3 && t[5].shape[1] == 2);
	cr_assert_str_eq(t[7].name, "q.rank");
	cr_assert_eq(elems, 35 + 8 + 42 + 30 + 1 + 6 + 12 + 1);
	trib_free(t);
	/* A pair naming no 2-D base tensor is refused; another algorithm appends nothing. */
	json_object_set_new(json_array_get(json_object_get(o, "flora_pairs"), 1), "base",
			    json_string("nope"));
	t = NULL;
	cr_assert_eq(trib_schema_from_spec(o, &t, &n, &elems, &why), 0);
	cr_assert_eq(trib_schema_add_flora(o, &t, &n, &elems, &why), -EINVAL);
	cr_assert_not_null(why);
	trib_free(t);
	json_object_set_new(o, "algorithm", json_string("fedavg"));
	t = NULL;
	cr_assert_eq(trib_schema_from_spec(o, &t, &n, &elems, &why), 0);
	cr_assert_eq(trib_schema_add_flora(o, &t, &n, &elems, &why), 0);
	cr_assert_eq(n, 2);
	trib_free(t);
	json_decref(o);
}

/* scaffold's [x ; c]: every tensor gets its twin c.<name> after them all; "params" first. */
Test(core_schema, scaffold_twins_every_tensor_after_them_all)
{
	json_t *o = json_loads("{\"tensors\":[{\"name\":\"w\",\"shape\":[2,3]},"
			       "{\"name\":\"b\",\"shape\":[3]}]}", 0, NULL);
	struct trib_tensor *t = NULL;
	const char *why = NULL;
	uint64_t elems = 0;
	size_t n = 0, at = 99;

	cr_assert_eq(trib_schema_scaffold(o, &at), 0);
	cr_assert_eq(trib_schema_from_spec(o, &t, &n, &elems, &why), 0, "%s", why);
	cr_assert_eq(n, 4);
	cr_assert_eq(elems, 18);
	cr_assert_str_eq(t[0].name, "w");
	cr_assert_str_eq(t[1].name, "b");
	cr_assert_str_eq(t[2].name, "c.w");
	cr_assert_str_eq(t[3].name, "c.b");
	trib_free(t);
	json_decref(o);

	o = json_loads("{\"params\":5}", 0, NULL);
	cr_assert_eq(trib_schema_scaffold(o, &at), 0);
	cr_assert_eq(trib_schema_from_spec(o, &t, &n, &elems, &why), 0, "%s", why);
	cr_assert(n == 2 && elems == 10 && !strcmp(t[1].name, "c.weights"));
	trib_free(t);
	json_decref(o);

	o = json_loads("{\"tensors\":[{\"name\":\"w\",\"shape\":[2]},"
		       "{\"name\":\"c.x\",\"shape\":[2]}]}", 0, NULL);
	cr_assert_eq(trib_schema_scaffold(o, &at), -EINVAL, "c. is the control variate's");
	cr_assert_eq(at, 1);
	json_decref(o);
}
