// SPDX-License-Identifier: MIT
/* Tests of api/rt_job_def_parse: a job definition in, a spec and schema (or a status) out. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fn_abi.h"
#include "fn_opt.h"
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

/* Server optimisers, deltas, DP, deadlines and FedBuff run across nodes (cluster_algorithms.py). */
Test(runtime_job_def, cluster_takes_server_optimisers_deltas_and_dp)
{
	static const char *const bodies[] = {
		"{\"name\":\"x\",\"clients_per_round\":4,\"params\":8,\"algorithm\":\"fedadam\"}",
		"{\"name\":\"x\",\"clients_per_round\":4,\"params\":8,\"update\":\"delta\"}",
		"{\"name\":\"x\",\"clients_per_round\":4,\"params\":8,\"clip_norm\":1,"
		"\"dp_noise_multiplier\":0.5,\"seed\":3}",
		"{\"name\":\"x\",\"clients_per_round\":4,\"params\":8,\"min_clients\":2,"
		"\"round_timeout_s\":5}",
		"{\"name\":\"x\",\"buffer_size\":4,\"params\":8,\"algorithm\":\"fedbuff\"}",
	};
	struct rt_job_def def;
	char msg[256];

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		cr_assert_eq(parse(bodies[i], true, &def, msg), 200, "%s: %s", bodies[i], msg);
		rt_job_def_free(&def);
	}
}

/* Robust rules run across nodes on weights and on deltas (cluster_robust.py). */
Test(runtime_job_def, cluster_takes_robust_rules_on_weights_and_deltas)
{
	static const struct {
		const char *body, *want; /* want NULL: taken */
	} cases[] = {
		{ "{\"name\":\"x\",\"clients_per_round\":5,\"params\":8,\"algorithm\":\"median\"}",
		  NULL },
		{ "{\"name\":\"x\",\"clients_per_round\":8,\"params\":8,"
		  "\"algorithm\":\"krum\",\"m\":3}", NULL },
		{ "{\"name\":\"x\",\"clients_per_round\":7,\"params\":8,"
		  "\"algorithm\":\"bulyan\"}", NULL },
		{ "{\"name\":\"x\",\"clients_per_round\":5,\"params\":8,\"algorithm\":\"median\","
		  "\"update\":\"delta\"}", NULL },
		{ "{\"name\":\"x\",\"clients_per_round\":8,\"params\":8,"
		  "\"algorithm\":\"krum\",\"update\":\"delta\"}", NULL },
		{ "{\"name\":\"x\",\"clients_per_round\":7,\"params\":8,"
		  "\"algorithm\":\"bulyan\",\"update\":\"delta\"}", NULL },
	};
	struct rt_job_def def;
	char msg[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_eq(parse(cases[i].body, false, &def, msg), 200, "%s: %s", cases[i].body,
			     msg);
		rt_job_def_free(&def);
		if (!cases[i].want) {
			cr_assert_eq(parse(cases[i].body, true, &def, msg), 200, "%s: %s",
				     cases[i].body, msg);
			rt_job_def_free(&def);
			continue;
		}
		cr_assert_eq(parse(cases[i].body, true, &def, msg), 400, "%s", cases[i].body);
		cr_assert_not_null(strstr(msg, cases[i].want), "%s", msg);
	}
}

/* Issue 15: a robust rule whose parameters do nothing for the round's size names the minimum. */
Test(runtime_job_def, do_nothing_robust_rules_name_the_smallest_useful_value)
{
	static const struct {
		const char *extra; /* after "clients_per_round":N, */
		int cpr;
		const char *want;
	} cases[] = {
		/* floor(0.1 * 8) = 0 */
		{ "\"algorithm\":\"trimmed_mean\"", 8,
		  "trim: 0.1 (the default) cuts 0 of 8 clients from each end "
		  "(clients_per_round 8); use trim >= 0.125" },
		{ "\"algorithm\":\"trimmed_mean\",\"trim\":0.1", 8,
		  "trim: 0.1 cuts 0 of 8 clients from each end (clients_per_round 8); use trim >= "
		  "0.125" },
		/* 1/49 * 49 is 0.99999... in double: checked as the kernel counts */
		{ "\"algorithm\":\"trimmed_mean\",\"trim\":0.02", 49, "use trim >= 0.0205" },
		{ "\"algorithm\":\"trimmed_mean\",\"trim\":0.3", 2,
		  "trim: trimmed_mean with clients_per_round 2 cannot cut one from each end" },
		/* the same checks against the fewest clients a deadline round closes with */
		{ "\"algorithm\":\"trimmed_mean\",\"trim\":0.2,\"min_clients\":4,"
		  "\"round_timeout_s\":5",
		  10,
		  "trim: 0.2 cuts 0 of 4 clients from each end (min_clients 4, the fewest a round "
		  "may close with); use trim >= 0.25" },
		{ "\"algorithm\":\"krum\",\"f\":0", 8, "f: 0 assumes no Byzantine client" },
		{ "\"algorithm\":\"krum\",\"f\":0", 8,
		  "use f >= 1 (at most 2 with clients_per_round 8)" },
		{ "\"algorithm\":\"krum\"", 4, "f: krum with clients_per_round 4 tolerates no "
					       "Byzantine client" },
		{ "\"algorithm\":\"krum\",\"f\":3", 8,
		  "f: 3 needs at least 9 clients (clients >= 2f + 3) but clients_per_round 8; use "
		  "f <= 2" },
		{ "\"algorithm\":\"krum\",\"f\":2,\"min_clients\":5,\"round_timeout_s\":5", 8,
		  "f: 2 needs at least 7 clients (clients >= 2f + 3) but min_clients 5" },
		{ "\"algorithm\":\"krum\",\"m\":7", 8,
		  "m: 7 is more than clients - f = 8 - 2 (f's default); use m <= 6" },
		{ "\"algorithm\":\"median\"", 2,
		  "the median of 2 clients is their mean (clients_per_round 2)" },
		{ "\"algorithm\":\"median\",\"min_clients\":2,\"round_timeout_s\":5", 9,
		  "median needs at least 3 clients" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rt_job_def def;
		char body[512], msg[256] = "";

		snprintf(body, sizeof(body),
			 "{\"name\":\"x\",\"params\":8,\"clients_per_round\":%d,%s}", cases[i].cpr,
			 cases[i].extra);
		cr_assert_eq(parse(body, false, &def, msg), 400, "case %zu: %s", i, msg);
		cr_assert_not_null(strstr(msg, cases[i].want), "case %zu: %s", i, msg);
	}
}

/* The useful configurations next to the refused ones are taken, with the defaults filled in. */
Test(runtime_job_def, useful_robust_rules_are_taken_with_their_defaults)
{
	static const struct {
		const char *extra;
		int cpr;
		unsigned f, m;
		float trim;
	} cases[] = {
		{ "\"algorithm\":\"trimmed_mean\",\"trim\":0.125", 8, 0, 1, 0.125f },
		{ "\"algorithm\":\"trimmed_mean\"", 10, 0, 1, 0.1f },
		{ "\"algorithm\":\"trimmed_mean\",\"trim\":0.0205", 49, 0, 1, 0.0205f },
		{ "\"algorithm\":\"krum\"", 8, 2, 1, 0 }, /* f = floor((8 - 3) / 2) */
		{ "\"algorithm\":\"krum\"", 5, 1, 1, 0 },
		{ "\"algorithm\":\"krum\",\"min_clients\":7,\"round_timeout_s\":5", 20, 2, 1, 0 },
		{ "\"algorithm\":\"krum\",\"f\":1,\"m\":3", 8, 1, 3, 0 },
		{ "\"algorithm\":\"median\"", 3, 0, 1, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rt_job_def def;
		char body[512], msg[256] = "";

		snprintf(body, sizeof(body),
			 "{\"name\":\"x\",\"params\":8,\"clients_per_round\":%d,%s}", cases[i].cpr,
			 cases[i].extra);
		cr_assert_eq(parse(body, false, &def, msg), 200, "case %zu: %s", i, msg);
		if (def.algo.rule == FN_RULE_KRUM) {
			cr_assert_eq(def.algo.f, cases[i].f, "case %zu: f %u", i, def.algo.f);
			cr_assert_eq(def.algo.m, cases[i].m, "case %zu", i);
			/* The default is stored, so a restart parses the same f. */
			cr_assert_eq(json_integer_value(json_object_get(def.params, "f")),
				     cases[i].f, "case %zu", i);
		}
		if (def.algo.rule == FN_RULE_TRIMMED_MEAN) {
			cr_assert_eq(def.algo.trim, cases[i].trim, "case %zu", i);
			cr_assert_eq((float)json_real_value(json_object_get(def.params, "trim")),
				     cases[i].trim, "case %zu", i);
		}
		rt_job_def_free(&def);
	}
}

/* Server optimisers default to Flower's eta and Reddi et al.'s betas; the defaults are stored. */
Test(runtime_job_def, server_optimiser_defaults_are_applied_and_stored)
{
	static const struct {
		const char *alg;
		float lr;
		double stored; /* the fewest digits that read back as lr */
	} cases[] = {
		{ "fedavg", 1.0f, 1 },	    { "fedavgm", 1.0f, 1 },	{ "fedadagrad", 0.1f, 0.1 },
		{ "fedadam", 0.1f, 0.1 }, { "fedyogi", 0.01f, 0.01 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rt_job_def def;
		char body[256], msg[256] = "";
		json_t *p;

		snprintf(body, sizeof(body),
			 "{\"name\":\"x\",\"params\":8,\"clients_per_round\":4,"
			 "\"algorithm\":\"%s\"}",
			 cases[i].alg);
		cr_assert_eq(parse(body, false, &def, msg), 200, "%s: %s", cases[i].alg, msg);
		cr_assert_eq(def.algo.par.server_lr, cases[i].lr, "%s", cases[i].alg);
		p = def.params;
		cr_assert_eq(json_real_value(json_object_get(p, "server_lr")), cases[i].stored,
			     "%s", cases[i].alg);
		if (strcmp(cases[i].alg, "fedavg") && strcmp(cases[i].alg, "fedavgm")) {
			cr_assert_eq(def.algo.par.beta1, 0.9f);
			cr_assert_eq(def.algo.par.beta2, 0.99f);
			cr_assert_eq(def.algo.par.tau, 1e-3f);
			cr_assert_eq(json_real_value(json_object_get(p, "tau")), 1e-3);
		}
		if (!strcmp(cases[i].alg, "fedavgm"))
			cr_assert_eq(json_real_value(json_object_get(p, "momentum")), 0.9);
		rt_job_def_free(&def);
	}
}

/* A value out of range names the field, the value, its range and its default. */
Test(runtime_job_def, optimiser_range_errors_carry_the_default)
{
	struct rt_job_def def;
	char msg[256] = "";

	cr_assert_eq(parse("{\"name\":\"x\",\"params\":8,\"clients_per_round\":4,"
			   "\"algorithm\":\"fedadam\",\"beta2\":1.5}",
			   false, &def, msg), 400);
	cr_assert_str_eq(msg, "beta2: 1.5 is out of range for fedadam (a number in [0, 1); its "
			      "default is 0.99)");
	cr_assert_eq(parse("{\"name\":\"x\",\"params\":8,\"clients_per_round\":4,"
			   "\"algorithm\":\"fedyogi\",\"server_lr\":-1}",
			   false, &def, msg), 400);
	cr_assert_str_eq(msg, "server_lr: -1 is out of range for fedyogi (a number > 0; its "
			      "default is 0.01)");
}

/* A refused "tensors" entry is named by its index and name. */
Test(runtime_job_def, schema_refusals_name_the_entry)
{
	struct rt_job_def def;
	char msg[256] = "";

	cr_assert_eq(parse("{\"name\":\"x\",\"clients_per_round\":1,\"tensors\":["
			   "{\"name\":\"fc.weight\",\"shape\":[2,3]},"
			   "{\"name\":\"fc.bias\",\"shape\":[0]}]}",
			   false, &def, msg), 400);
	cr_assert_str_eq(msg, "tensors: shape entries must be positive integers (tensors[1] "
			      "'fc.bias')");
	cr_assert_eq(parse("{\"name\":\"x\",\"clients_per_round\":1,\"tensors\":["
			   "{\"name\":\"w\",\"shape\":[2]},{\"name\":\"w\",\"shape\":[3]}]}",
			   false, &def, msg), 400);
	cr_assert_str_eq(msg, "tensors: duplicate tensor name (tensors[1] 'w')");
	cr_assert_eq(parse("{\"name\":\"x\",\"clients_per_round\":1,\"tensors\":["
			   "{\"name\":\"w\",\"shape\":[2]},{\"shape\":[3]}]}",
			   false, &def, msg), 400);
	cr_assert_str_eq(msg, "tensors: each entry needs a \"name\" string and a \"shape\" array "
			      "(tensors[1])");
	/* Not one entry's fault: no index. */
	cr_assert_eq(parse("{\"name\":\"x\",\"clients_per_round\":1,\"tensors\":[]}", false, &def,
			   msg), 400);
	cr_assert_str_eq(msg, "tensors: must be a non-empty array (at most 4096 tensors)");
}

/* fedprox: FedAvg on the server; proximal_mu defaults, is bounded, stored, and published. */
Test(runtime_job_def, fedprox_proximal_mu)
{
	static const struct {
		const char *extra, *want; /* want: NULL accepted, else the start of the 400 */
	} cases[] = {
		{ "", NULL },
		{ ",\"proximal_mu\":0", NULL },
		{ ",\"proximal_mu\":1000", NULL },
		{ ",\"proximal_mu\":-0.5", "proximal_mu: -0.5 is out of range: a number in [0, 1000]" },
		{ ",\"proximal_mu\":1000.5", "proximal_mu: 1000.5 is out of range" },
		{ ",\"proximal_mu\":\"0.1\"", "proximal_mu: a number in [0, 1000] (default 0.01)" },
		{ ",\"proximal_mu\":null", "proximal_mu: a number" },
	};
	struct rt_job_def def;
	char body[256], msg[256];
	json_t *pub;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(body, sizeof(body), "{\"name\":\"x\",\"params\":8,\"clients_per_round\":4,"
			 "\"algorithm\":\"fedprox\"%s}", cases[i].extra);
		msg[0] = '\0';
		if (cases[i].want) {
			cr_assert_eq(parse(body, false, &def, msg), 400, "%s", body);
			cr_assert_eq(strncmp(msg, cases[i].want, strlen(cases[i].want)), 0,
				     "%s: %s", body, msg);
			continue;
		}
		cr_assert_eq(parse(body, false, &def, msg), 200, "%s: %s", body, msg);
		/* The server folds as FedAvg: no server step, no previous model needed. */
		cr_assert_eq(def.algo.par.server, FN_OPT_FEDAVG);
		cr_assert_eq(def.algo.par.server_lr, 1.0f);
		cr_assert(!def.algo.needs_model);
		cr_assert_eq(def.algo.proximal_mu, i == 0 ? 0.01f : i == 1 ? 0.0f : 1000.0f);
		/* Stored (a restart reads the same mu) and published in the status. */
		cr_assert_eq((float)json_number_value(json_object_get(def.params, "proximal_mu")),
			     def.algo.proximal_mu);
		pub = rt_algo_json(&def.algo);
		cr_assert_eq((float)json_number_value(json_object_get(pub, "proximal_mu")),
			     def.algo.proximal_mu);
		json_decref(pub);
		rt_job_def_free(&def);
	}
	/* proximal_mu belongs to fedprox only. */
	cr_assert_eq(parse("{\"name\":\"x\",\"params\":8,\"clients_per_round\":4,"
			   "\"proximal_mu\":0.1}", false, &def, msg), 400);
	cr_assert_str_eq(msg, "proximal_mu: for fedprox only (algorithm is 'fedavg')");
}

/* Issue 19: "secagg" is taken on one node and in a cluster (one node runs its rounds). */
Test(runtime_job_def, secagg_one_node_and_cluster)
{
	static const char body[] =
		"{\"name\":\"x\",\"clients_per_round\":6,\"params\":8,\"client_auth\":\"required\","
		"\"round_timeout_s\":5,\"secagg\":{\"threshold\":3,\"neighbours\":4,\"clip\":1,"
		"\"bits\":16}}";
	struct rt_job_def def;
	char msg[256];

	cr_assert_eq(parse(body, false, &def, msg), 200, "%s", msg);
	cr_assert(def.spec.secagg.on && def.spec.secagg.threshold == 3 &&
		  def.spec.secagg.neighbours == 4 && def.spec.secagg.bits == 16 &&
		  def.spec.secagg.clip == 1.0f);
	rt_job_def_free(&def);
	cr_assert_eq(parse(body, true, &def, msg), 200, "%s", msg);
	cr_assert(def.spec.secagg.on && def.spec.secagg.threshold == 3);
	rt_job_def_free(&def);
}

/*
 * secagg.max_samples bounds each client's n_u so that the masked sums of n_u * q and of n_u cannot
 * wrap: clients_per_round x max_samples x (2^bits - 1) < 2^32. Omitted, it is the largest such.
 */
Test(runtime_job_def, secagg_max_samples_default_and_bound)
{
	static const char head[] =
		"{\"name\":\"x\",\"clients_per_round\":100,\"params\":8,\"client_auth\":\"required\","
		"\"round_timeout_s\":5,\"secagg\":{\"threshold\":3,\"neighbours\":4,\"clip\":1,"
		"\"bits\":16";
	struct rt_job_def def;
	char body[512], msg[256];

	snprintf(body, sizeof(body), "%s}}", head);
	cr_assert_eq(parse(body, false, &def, msg), 200, "%s", msg);
	cr_assert_eq(def.spec.secagg.max_samples, 655, "the largest that cannot wrap");
	rt_job_def_free(&def);
	snprintf(body, sizeof(body), "%s,\"max_samples\":655}}", head);
	cr_assert_eq(parse(body, false, &def, msg), 200, "%s", msg);
	cr_assert_eq(def.spec.secagg.max_samples, 655);
	rt_job_def_free(&def);
	snprintf(body, sizeof(body), "%s,\"max_samples\":40}}", head);
	cr_assert_eq(parse(body, true, &def, msg), 200, "%s", msg);
	cr_assert_eq(def.spec.secagg.max_samples, 40);
	rt_job_def_free(&def);
	snprintf(body, sizeof(body), "%s,\"max_samples\":656}}", head);
	cr_assert_eq(parse(body, false, &def, msg), 400);
	cr_assert_str_eq(msg, "secagg.max_samples 656: 100 clients x 656 samples x (2^16 - 1) "
			      "overflows the 32-bit sum; allowed 1 to 655 with these clients and bits");
	snprintf(body, sizeof(body), "%s,\"max_samples\":0}}", head);
	cr_assert_eq(parse(body, false, &def, msg), 400);
	cr_assert(strstr(msg, "secagg.max_samples: an integer from 1"), "%s", msg);
	snprintf(body, sizeof(body), "%s,\"max_samples\":\"9\"}}", head);
	cr_assert_eq(parse(body, false, &def, msg), 400);
	cr_assert(strstr(msg, "secagg.max_samples"), "%s", msg);
}

/* frl: taken on one node and in a cluster; what acts on values refused by name; the bound. */
Test(runtime_job_def, frl_refusals_and_the_vote_bound)
{
	static const struct {
		const char *extra, *word;
	} bad[] = {
		{ ",\"weighted\":true", "weighted" },	    { ",\"update\":\"delta\"", "update" },
		{ ",\"server_lr\":0.5", "server_lr" },	    { ",\"clip_norm\":1", "clip_norm" },
		{ ",\"seed\":3", "seed" },		    { ",\"momentum\":0.9", "momentum" },
		{ ",\"trim\":0.1", "trim" },		    { ",\"dp_delta\":0.001", "dp_delta" },
	};
	struct rt_job_def def;
	char body[256], msg[256];

	for (int clustered = 0; clustered < 2; clustered++) {
		cr_assert_eq(parse("{\"name\":\"x\",\"clients_per_round\":4,\"params\":8,"
				   "\"algorithm\":\"frl\"}", clustered, &def, msg), 200, "%s", msg);
		cr_assert(def.algo.frl);
		cr_assert(def.algo.par.flags & FN_PAR_UNWEIGHTED);
		cr_assert_null(json_object_get(def.params, "server_lr"),
			       "a pinned server_lr would fail the restart's parse");
		rt_job_def_free(&def);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(body, sizeof(body), "{\"name\":\"x\",\"clients_per_round\":4,\"params\":8,"
			 "\"algorithm\":\"frl\"%s}", bad[i].extra);
		cr_assert_eq(parse(body, false, &def, msg), 400, "%s", body);
		cr_assert_not_null(strstr(msg, bad[i].word), "%s: %s", body, msg);
	}
	/* 858993 x 5000 = 4294965000 fits 2^32 - 1; one more client does not. */
	cr_assert_eq(parse("{\"name\":\"x\",\"clients_per_round\":858993,\"algorithm\":\"frl\","
			   "\"tensors\":[{\"name\":\"a\",\"shape\":[3]},{\"name\":\"big\","
			   "\"shape\":[5001]}]}", false, &def, msg), 200, "%s", msg);
	rt_job_def_free(&def);
	cr_assert_eq(parse("{\"name\":\"x\",\"clients_per_round\":858994,\"algorithm\":\"frl\","
			   "\"tensors\":[{\"name\":\"a\",\"shape\":[3]},{\"name\":\"big\","
			   "\"shape\":[5001]}]}", false, &def, msg), 400);
	cr_assert_not_null(strstr(msg, "clients_per_round") && strstr(msg, "'big'") &&
			   strstr(msg, "at most 858993"), "%s", msg);
}

/*
 * flora: the schema is the base then each pair's a, b and rank; the stored parameters parse
 * again (a restart) without the server_lr that flora refuses; and the cluster takes it.
 */
Test(runtime_job_def, flora_schema_and_stored_params)
{
	static const char body[] =
		"{\"name\":\"l\",\"clients_per_round\":3,\"algorithm\":\"flora\","
		"\"tensors\":[{\"name\":\"w\",\"shape\":[6,4]},{\"name\":\"b\",\"shape\":[6]}],"
		"\"flora_pairs\":[{\"name\":\"p\",\"base\":\"w\",\"a\":\"w.A\",\"b\":\"w.B\","
		"\"max_rank\":2}]}";
	struct rt_job_def def;
	struct rt_algo again;
	char msg[256] = "";
	json_t *p;

	cr_assert_eq(parse(body, false, &def, msg), 200, "%s", msg);
	cr_assert_eq(def.nschema, 5);
	cr_assert_str_eq(def.schema[2].name, "w.A");
	cr_assert(def.schema[2].shape[0] == 6 && def.schema[2].shape[1] == 4);
	cr_assert_str_eq(def.schema[3].name, "w.B");
	cr_assert(def.schema[3].shape[0] == 6 && def.schema[3].shape[1] == 6);
	cr_assert_str_eq(def.schema[4].name, "p.rank");
	cr_assert_eq(def.n_elem, 24 + 6 + 24 + 36 + 1);
	cr_assert(def.algo.flora && !def.algo.flora_merge && !def.algo.needs_model);
	p = json_deep_copy(def.params);
	cr_assert_null(json_object_get(p, "server_lr"));
	cr_assert(json_is_false(json_object_get(p, "flora_merge")));
	cr_assert_not_null(json_object_get(p, "flora_pairs"));
	json_object_set_new(p, "algorithm", json_string("flora"));
	cr_assert_eq(rt_algo_parse(p, &again, msg, sizeof(msg)), 0, "%s", msg);
	cr_assert(again.flora);
	json_decref(p);
	rt_job_def_free(&def);
	cr_assert_eq(parse(body, true, &def, msg), 200, "cluster: %s", msg);
	rt_job_def_free(&def);
	/* A pair field named in the 400. */
	cr_assert_eq(parse("{\"name\":\"l\",\"clients_per_round\":3,\"algorithm\":\"flora\","
			   "\"tensors\":[{\"name\":\"w\",\"shape\":[6,4]}],\"flora_pairs\":[{"
			   "\"name\":\"p\",\"base\":\"w\",\"a\":\"w.A\",\"b\":\"w.B\","
			   "\"max_rank\":5}]}", false, &def, msg), 400);
	cr_assert(strstr(msg, "flora_pairs[0].max_rank"), "%s", msg);
}

/*
 * Every algorithm this build knows has a row here and runs across nodes. The cluster's allowlist
 * (rt_api_job.c cluster_algorithm) refuses a name it does not list, so an algorithm added later
 * fails this test until someone decides, here and there, whether it works on a cluster.
 */
Test(runtime_job_def, every_algorithm_is_decided_for_clusters)
{
	static const struct {
		const char *name, *body; /* the fields it needs besides name and params */
	} rows[] = {
		{ "fedavg", "\"clients_per_round\":4" },
		{ "fedavgm", "\"clients_per_round\":4" },
		{ "fedadagrad", "\"clients_per_round\":4" },
		{ "fedadam", "\"clients_per_round\":4" },
		{ "fedyogi", "\"clients_per_round\":4" },
		{ "fedbuff", "\"buffer_size\":4" },
		{ "fedprox", "\"clients_per_round\":4" },
		{ "median", "\"clients_per_round\":5" },
		{ "trimmed_mean", "\"clients_per_round\":10" },
		{ "krum", "\"clients_per_round\":8" },
		{ "bulyan", "\"clients_per_round\":7" },
		{ "fedau", "\"clients_per_round\":4,\"client_auth\":\"required\"" },
		{ "scaffold", "\"clients_per_round\":4,\"scaffold_clients\":10" },
		{ "frl", "\"clients_per_round\":4" },
		{ "flora", "\"clients_per_round\":3,\"flora_pairs\":[{\"name\":\"p\",\"base\":"
			   "\"w\",\"a\":\"w.A\",\"b\":\"w.B\",\"max_rank\":2}]" },
	};
	struct rt_job_def def;
	char body[512], msg[256];
	const char *name;

	for (size_t i = 0; (name = rt_algo_name_at(i)); i++) {
		size_t r = 0;

		while (r < sizeof(rows) / sizeof(rows[0]) && strcmp(rows[r].name, name))
			r++;
		cr_assert(r < sizeof(rows) / sizeof(rows[0]),
			  "algorithm '%s' has no row: decide whether it runs across nodes "
			  "(rt_api_job.c cluster_algorithm) and add it here", name);
		snprintf(body, sizeof(body),
			 "{\"name\":\"x\",\"algorithm\":\"%s\",\"tensors\":[{\"name\":\"w\","
			 "\"shape\":[6,4]}],%s}", name, rows[r].body);
		cr_assert_eq(parse(body, false, &def, msg), 200, "%s on one node: %s", name, msg);
		rt_job_def_free(&def);
		cr_assert_eq(parse(body, true, &def, msg), 200, "%s on a cluster: %s", name, msg);
		rt_job_def_free(&def);
	}
}
