// SPDX-License-Identifier: MIT
/* Tests of api/rt_job_def_parse: a job definition in, a spec and schema (or a status) out. */
#include <criterion/criterion.h>

#include <string.h>

#include "rt_api.h"

#define ARENA (256ull << 20)

static int parse(const char *body, bool clustered, struct rt_job_def *def, char *msg)
{
	return rt_job_def_parse((const uint8_t *)body, strlen(body), ARENA, clustered, def, msg,
				256);
}

Test(runtime_job_def, params_gives_one_f32_tensor)
{
	struct rt_job_def def;
	char msg[256];

	cr_assert_eq(parse("{\"name\":\"mnist\",\"clients_per_round\":10,\"params\":1000}", false,
			   &def, msg), 200);
	cr_assert_str_eq(def.spec.name, "mnist");
	cr_assert_eq(def.spec.cpr, 10);
	cr_assert_eq(def.spec.fanin, 0);
	cr_assert_eq(def.nschema, 1);
	cr_assert_str_eq(def.schema[0].name, "weights");
	cr_assert_eq(def.n_elem, 1000);
	cr_assert_str_eq(def.algo.name, "fedavg");
	cr_assert_eq(def.spec.algo, &def.algo);
	rt_job_def_free(&def);
}

Test(runtime_job_def, tensors_give_the_schema_in_order)
{
	struct rt_job_def def;
	char msg[256];

	cr_assert_eq(parse("{\"name\":\"m\",\"clients_per_round\":2,\"fan_in\":4,\"tensors\":["
			   "{\"name\":\"w\",\"shape\":[3,4],\"dtype\":\"F32\"},"
			   "{\"name\":\"b\",\"shape\":[4],\"dtype\":\"F32\"}]}",
			   false, &def, msg), 200, "%s", msg);
	cr_assert_eq(def.nschema, 2);
	cr_assert_str_eq(def.schema[0].name, "w");
	cr_assert_str_eq(def.schema[1].name, "b");
	cr_assert_eq(def.n_elem, 16);
	cr_assert_eq(def.spec.fanin, 4);
	rt_job_def_free(&def);
}

Test(runtime_job_def, refusals_name_the_field)
{
	static const struct {
		const char *body;
		const char *field;
	} cases[] = {
		{ "[1]", "body is not a JSON object" },
		{ "{\"name\":\"-x\",\"clients_per_round\":1,\"params\":1}", "name:" },
		{ "{\"name\":\"x\",\"params\":1}", "clients_per_round:" },
		{ "{\"name\":\"x\",\"clients_per_round\":1}", "give exactly one of" },
		{ "{\"name\":\"x\",\"clients_per_round\":1,\"params\":1,\"bogus\":1}", "bogus:" },
		{ "{\"name\":\"x\",\"clients_per_round\":1,\"params\":1,\"fan_in\":0}", "fan_in:" },
		{ "{\"name\":\"x\",\"clients_per_round\":1,\"params\":1,\"algorithm\":\"nope\"}",
		  "algorithm:" },
		/* The DP noise's stddev z * C is bounded as update values are (2^80). */
		{ "{\"name\":\"x\",\"clients_per_round\":1,\"params\":1,\"clip_norm\":3e38,"
		  "\"dp_noise_multiplier\":1}",
		  "dp_noise_multiplier: times clip_norm at most 2^80" },
		{ "{\"name\":\"x\",\"clients_per_round\":1,\"params\":1,\"clip_norm\":1e300,"
		  "\"dp_noise_multiplier\":1}",
		  "dp_noise_multiplier: times clip_norm at most 2^80" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rt_job_def def;
		char msg[256] = "";

		cr_assert_eq(parse(cases[i].body, false, &def, msg), 400, "case %zu", i);
		cr_assert_not_null(strstr(msg, cases[i].field), "case %zu: %s", i, msg);
		cr_assert_null(def.doc, "case %zu: nothing kept on failure", i);
		cr_assert_null(def.schema);
	}
}

Test(runtime_job_def, model_larger_than_a_quarter_arena_is_refused)
{
	struct rt_job_def def;
	char msg[256];

	cr_assert_eq(parse("{\"name\":\"x\",\"clients_per_round\":1,\"params\":100000000}", false,
			   &def, msg), 400);
	cr_assert_not_null(strstr(msg, "--arena-mb"), "%s", msg);
}

Test(runtime_job_def, cluster_refuses_server_optimisers)
{
	struct rt_job_def def;
	char msg[256];
	const char *body = "{\"name\":\"x\",\"clients_per_round\":4,\"params\":8,"
			   "\"algorithm\":\"fedadam\"}";

	cr_assert_eq(parse(body, false, &def, msg), 200, "%s", msg);
	rt_job_def_free(&def);
	cr_assert_eq(parse(body, true, &def, msg), 400);
	cr_assert_not_null(strstr(msg, "not supported across nodes"), "%s", msg);
}
