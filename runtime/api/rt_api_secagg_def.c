// SPDX-License-Identifier: MIT
/*
 * The job field "secagg" (issue 19): its checks, on one node and in a cluster alike (in a
 * cluster one node runs the rounds: runtime/cluster/rt_agent_secagg.c). The stages are
 * rt_api_secagg.c.
 */
#include <stdio.h>
#include <string.h>

#include "api_priv.h"
#include "rt_secagg.h"

/* One integer member of "secagg" into *out: 0, or 400 with @msg naming it. */
static int sa_uint(const json_t *o, const char *key, uint32_t *out, char *msg, size_t cap)
{
	const json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > (json_int_t)UINT32_MAX) {
		snprintf(msg, cap, "secagg.%s: required, an integer (see the allowed range in "
			 "README \"Secure aggregation\")", key);
		return 400;
	}
	*out = (uint32_t)json_integer_value(v);
	return 0;
}

int rt__api_def_secagg(json_t *o, struct rt_job_def *def, bool clustered, char *msg, size_t cap)
{
	static const char *const known[] = { "threshold", "neighbours", "clip", "bits",
					     "max_samples", NULL };
	const json_t *sa = json_object_get(o, "secagg"), *clip;
	struct rt_secagg_spec *s = &def->spec.secagg;
	struct rt_secagg_cfg cfg;
	const char *key;
	json_t *v;
	char why[160];

	/* A cluster takes the same spec: one node runs its rounds (runtime/cluster/rt_agent_secagg.c). */
	(void)clustered;
	memset(s, 0, sizeof(*s));
	if (!sa || json_is_null(sa))
		return 0;
	if (!json_is_object(sa)) {
		snprintf(msg, cap, "%s", "secagg: an object {\"threshold\": t, \"neighbours\": k, "
			 "\"clip\": c, \"bits\": b}");
		return 400;
	}
	json_object_foreach((json_t *)sa, key, v) {
		size_t i;

		for (i = 0; known[i] && strcmp(known[i], key); i++)
			;
		if (!known[i]) {
			snprintf(msg, cap, "secagg.%.64s: unknown field (allowed: threshold, "
				 "neighbours, clip, bits, max_samples)", key);
			return 400;
		}
	}
	/*
	 * The server sees only the sum: anything that needs each update (clipping by norm, robust
	 * rules, deltas on the server, FedAU's per-client weights, DP noise after a norm bound) or
	 * a server optimiser's state is out. The clip here is per coordinate, in the quantiser.
	 */
	if (strcmp(def->algo.name, "fedavg") || def->algo.par.flags) {
		snprintf(msg, cap, "secagg: only with \"algorithm\": \"fedavg\" and none of its "
			 "options (this job: %s%s)", def->algo.name,
			 def->algo.par.flags ? " with options" : "");
		return 400;
	}
	if (!def->spec.round_timeout_s) {
		snprintf(msg, cap, "%s", "secagg: needs round_timeout_s (each stage's deadline: "
			 "clients that miss it are dropped from the round)");
		return 400;
	}
	if (!def->spec.client_auth_required) {
		snprintf(msg, cap, "%s", "secagg: needs \"client_auth\": \"required\" (each stage "
			 "names its client by its client token)");
		return 400;
	}
	memset(&cfg, 0, sizeof(cfg));
	if (sa_uint(sa, "threshold", &cfg.threshold, msg, cap) ||
	    sa_uint(sa, "neighbours", &cfg.neighbours, msg, cap) ||
	    sa_uint(sa, "bits", &cfg.bits, msg, cap))
		return 400;
	clip = json_object_get(sa, "clip");
	if (!json_is_number(clip)) {
		snprintf(msg, cap, "%s", "secagg.clip: required, a finite number above 0 (each value "
			 "is clipped to [-clip, clip] before quantising)");
		return 400;
	}
	cfg.clip = (float)json_number_value(clip);
	/*
	 * n_u is masked like the values, so no server check of one input can bound it: the job
	 * does, and every client is told (the keys stage's answer). Omitted: the largest bound
	 * the sum allows with these clients and bits (rt_secagg_max_samples).
	 */
	if (json_object_get(sa, "max_samples") &&
	    (sa_uint(sa, "max_samples", &cfg.max_samples, msg, cap) || !cfg.max_samples)) {
		snprintf(msg, cap, "%s", "secagg.max_samples: an integer from 1 (each client's "
			 "sample count n_u, its weight, at most this; clients_per_round x "
			 "max_samples x (2^bits - 1) must stay below 2^32)");
		return 400;
	}
	cfg.n_clients = def->spec.cpr;
	cfg.dim = def->n_elem > UINT32_MAX - 1 ? UINT32_MAX : (uint32_t)def->n_elem;
	/* It also refuses sums that could wrap: cpr x max_samples x (2^bits - 1) >= 2^32. */
	if (rt_secagg_cfg_check(&cfg, why, sizeof(why))) {
		snprintf(msg, cap, "%s", why);
		return 400;
	}
	if (cfg.threshold > def->spec.cpr) {
		snprintf(msg, cap, "secagg.threshold %u: at most clients_per_round (%u)",
			 cfg.threshold, def->spec.cpr);
		return 400;
	}
	s->on = true;
	s->max_samples = cfg.max_samples ? cfg.max_samples
					 : rt_secagg_max_samples(cfg.n_clients, cfg.bits);
	s->threshold = cfg.threshold;
	s->neighbours = cfg.neighbours;
	s->bits = cfg.bits;
	s->clip = cfg.clip;
	return 0;
}
