// SPDX-License-Identifier: MIT
/* Job algorithms: names, parameters, ranges, and which ones this build aggregates end to end. */
#include "rt_algo.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fn_dp.h"
#include "trib_fedau.h"
#include "fn_fold.h"
#include "fn_frl.h"
#include "fn_opt.h"
#include "fn_robust.h"

static const char *const params[] = {
	"algorithm", "weighted", "update", "buffer_size", "max_staleness", "server_lr",
	"momentum", "beta1", "beta2", "tau", "trim", "f", "m", "clip_norm",
	"dp_noise_multiplier", "dp_delta", "seed", "proximal_mu", "fedau_cutoff", "scaffold_clients", "flora_pairs", "flora_merge", NULL,
};

bool rt_algo_is_param(const char *name)
{
	for (size_t i = 0; params[i]; i++)
		if (!strcmp(params[i], name))
			return true;
	return false;
}

/* trimmed_mean's trim when the job gives none. */
#define RT_TRIM_DEFAULT 0.1f

static int num(json_t *o, const char *k, double *v, bool *given)
{
	json_t *x = json_object_get(o, k);

	*given = x != NULL;
	if (!x)
		return 0;
	if (!json_is_number(x))
		return -EINVAL;
	*v = json_number_value(x);
	return isfinite(*v) ? 0 : -EINVAL;
}

#define BAD(...)                                                 \
	do {                                                     \
		snprintf(msgbuf, msglen, __VA_ARGS__);           \
		return -EINVAL;                                  \
	} while (0)

/* Every algorithm of this build, and its server step. */
static const struct {
	const char *name;
	int server; /* enum fn_opt_kind, or -1: not aggregated end to end yet */
} algos[] = {
	{ "fedavg", FN_OPT_FEDAVG },	     { "fedavgm", FN_OPT_FEDAVGM },
	{ "fedadagrad", FN_OPT_FEDADAGRAD }, { "fedadam", FN_OPT_FEDADAM },
	{ "fedyogi", FN_OPT_FEDYOGI },	     { "fedbuff", FN_OPT_FEDAVG },
	{ "median", FN_OPT_FEDAVG },	     { "trimmed_mean", FN_OPT_FEDAVG },
	{ "krum", FN_OPT_FEDAVG },	     { "fedprox", FN_OPT_FEDAVG },
	{ "bulyan", FN_OPT_FEDAVG },	     { "fedau", FN_OPT_FEDAVG },
	{ "scaffold", FN_OPT_FEDAVG },	     { "frl", FN_OPT_FEDAVG },
	{ "flora", FN_OPT_FEDAVG },
};

const char *rt_algo_name_at(size_t i)
{
	return i < sizeof(algos) / sizeof(algos[0]) ? algos[i].name : NULL;
}

/* "algorithm": *server is its enum fn_opt_kind. */
static int parse_name(json_t *o, struct rt_algo *a, int *server, char *msgbuf, size_t msglen)
{
	json_t *alg = json_object_get(o, "algorithm");
	const char *name = alg ? json_string_value(alg) : "fedavg";

	*server = -2;
	if (!name)
		BAD("algorithm: a string");
	for (size_t i = 0; i < sizeof(algos) / sizeof(algos[0]); i++)
		if (!strcmp(algos[i].name, name))
			*server = algos[i].server;
	if (*server == -2)
		BAD("algorithm: unknown '%.40s' (fedavg, fedprox, fedbuff, fedavgm, fedadagrad, "
		    "fedadam, fedyogi, fedau, scaffold, flora, median, trimmed_mean, krum, bulyan, frl)", name);
	if (*server == -1)
		BAD("algorithm: '%s' is not available in this build yet; fedavg, fedbuff, fedavgm, "
		    "fedadagrad, fedadam and fedyogi are", name);
	snprintf(a->name, sizeof(a->name), "%s", name);
	return 0;
}

/* fedprox's proximal_mu (RT_PROX_MU_*), refused for other algorithms. */
static int parse_fedprox(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	json_t *mu = json_object_get(o, "proximal_mu");
	double v;

	if (strcmp(a->name, "fedprox")) {
		if (mu)
			BAD("proximal_mu: for fedprox only (algorithm is '%s')", a->name);
		return 0;
	}
	if (!mu) {
		a->proximal_mu = RT_PROX_MU_DEFAULT;
		return 0;
	}
	v = json_is_number(mu) ? json_number_value(mu) : NAN;
	if (!(v >= 0 && v <= RT_PROX_MU_MAX)) {
		if (json_is_number(mu))
			BAD("proximal_mu: %g is out of range: a number in [0, %g] (default %g; 0 is "
			    "plain FedAvg)", v, RT_PROX_MU_MAX, (double)RT_PROX_MU_DEFAULT);
		BAD("proximal_mu: a number in [0, %g] (default %g)", RT_PROX_MU_MAX,
		    (double)RT_PROX_MU_DEFAULT);
	}
	a->proximal_mu = (float)v;
	return 0;
}

/* fedau's cutoff K (trib_fedau.h); fedau weighs by the interval estimate, not by samples. */
static int parse_fedau(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	json_t *k = json_object_get(o, "fedau_cutoff"), *w = json_object_get(o, "weighted");

	if (strcmp(a->name, "fedau")) {
		if (k)
			BAD("fedau_cutoff: for fedau only (algorithm is '%s')", a->name);
		return 0;
	}
	if (k && (!json_is_integer(k) || json_integer_value(k) < TRIB_FEDAU_K_MIN ||
		  json_integer_value(k) > TRIB_FEDAU_K_MAX))
		BAD("fedau_cutoff: an integer from %u to %u, in rounds (default %u)",
		    TRIB_FEDAU_K_MIN, TRIB_FEDAU_K_MAX, TRIB_FEDAU_K_DEFAULT);
	if (w && !json_is_true(w))
		BAD("weighted: fedau weighs each update by its client's participation interval "
		    "estimate (leave it out or true)");
	if (json_object_get(o, "dp_noise_multiplier"))
		BAD("dp_noise_multiplier: not with fedau (central DP averages uniformly)");
	a->fedau = true;
	a->fedau_k = k ? (uint32_t)json_integer_value(k) : TRIB_FEDAU_K_DEFAULT;
	return 0;
}

/*
 * scaffold's N (scaffold_clients, fn_scaffold.h): its updates are unweighted deltas of x and c,
 * and its base makes the server step, so the options that change either are refused.
 */
static int parse_scaffold(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	json_t *np = json_object_get(o, "scaffold_clients"), *upd = json_object_get(o, "update");
	json_t *w = json_object_get(o, "weighted");

	if (strcmp(a->name, "scaffold")) {
		if (np)
			BAD("scaffold_clients: for scaffold only (algorithm is '%s')", a->name);
		return 0;
	}
	if (!np || !json_is_integer(np) || json_integer_value(np) < 1 ||
	    json_integer_value(np) > RT_SCAFFOLD_N_MAX)
		BAD("scaffold_clients: required for scaffold, N, the client population c is "
		    "averaged over: an integer from clients_per_round to %d", RT_SCAFFOLD_N_MAX);
	if (upd && (!json_is_string(upd) || strcmp(json_string_value(upd), "delta")))
		BAD("update: scaffold updates are deltas (\"delta\"): the model's and c's");
	if (w && !json_is_false(w))
		BAD("weighted: scaffold averages its clients' deltas unweighted (leave it out or "
		    "false)");
	for (const char *const *k = (const char *const[]){ "clip_norm", "dp_noise_multiplier",
							   NULL };
	     *k; k++)
		if (json_object_get(o, *k))
			BAD("%s: not available with scaffold in this build", *k);
	a->scaffold = true;
	a->scaffold_n = (uint32_t)json_integer_value(np);
	return 0;
}

/*
 * frl (fn_frl.h): an update is a ranking, not values. Nothing that weighs, moves, clips or
 * noises values applies, and every ranking counts once: refused by name rather than ignored.
 */
static int parse_frl(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	static const char *const refused[] = { "update", "server_lr", "momentum", "beta1",
					       "beta2", "tau", "clip_norm", "dp_noise_multiplier",
					       "dp_delta", "seed", NULL };
	json_t *w = json_object_get(o, "weighted");

	if (strcmp(a->name, "frl"))
		return 0;
	if (w && !json_is_false(w))
		BAD("weighted: frl counts every client's ranking once (a vote, not a mean); leave "
		    "it out or false");
	for (const char *const *k = refused; *k; k++)
		if (json_object_get(o, *k))
			BAD("%s: does not apply to frl (clients send rankings, the server votes: "
			    "no values, deltas, server optimiser, clipping or noise)", *k);
	a->frl = true;
	return 0;
}

/*
 * flora's switches; its pairs are checked against the job's tensors by rt_flora_spec(). The
 * model is the stack of the clients' weighted adapters (rt_flora.h): there is no mean to step
 * by, clip or add noise to, so every option that would is refused.
 */
static int parse_flora(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	json_t *mg = json_object_get(o, "flora_merge"), *upd = json_object_get(o, "update");

	if (strcmp(a->name, "flora")) {
		for (const char *const *k = (const char *const[]){ "flora_pairs", "flora_merge",
								   NULL };
		     *k; k++)
			if (json_object_get(o, *k))
				BAD("%s: for flora only (algorithm is '%s')", *k, a->name);
		return 0;
	}
	if (!json_is_array(json_object_get(o, "flora_pairs")))
		BAD("flora_pairs: required for flora, an array of 1 to 64 pairs {\"name\", "
		    "\"base\", \"a\", \"b\", \"max_rank\"}");
	if (mg && !json_is_boolean(mg))
		BAD("flora_merge: true or false (default false)");
	if (upd && (!json_is_string(upd) || strcmp(json_string_value(upd), "weights")))
		BAD("update: flora updates are the clients' adapters A and B (\"weights\"), not "
		    "deltas");
	for (const char *const *k = (const char *const[]){ "server_lr", "clip_norm",
							   "dp_noise_multiplier", "dp_delta",
							   "seed", NULL };
	     *k; k++)
		if (json_object_get(o, *k))
			BAD("%s: not with flora (the model stacks the adapters: no mean to step "
			    "by, clip or add noise to)", *k);
	a->flora = true;
	a->flora_merge = json_is_true(mg);
	return 0;
}

/* The exact robust rules' parameters (trim, f, m), refused for other algorithms. */
static int parse_robust(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	const char *name = a->name;
	json_t *w = json_object_get(o, "weighted");

	if (!strcmp(name, "median") || !strcmp(name, "trimmed_mean") || !strcmp(name, "krum") ||
	    !strcmp(name, "bulyan")) {
		json_t *t = json_object_get(o, "trim"), *f = json_object_get(o, "f"),
		       *m = json_object_get(o, "m");

		a->rule = !strcmp(name, "median")	  ? FN_RULE_MEDIAN :
			  !strcmp(name, "trimmed_mean") ? FN_RULE_TRIMMED_MEAN :
			  !strcmp(name, "krum")		  ? FN_RULE_KRUM :
							  FN_RULE_BULYAN;
		if (t && (a->rule != FN_RULE_TRIMMED_MEAN || !json_is_number(t) ||
			  !(json_number_value(t) >= 0 && json_number_value(t) < 0.5)))
			BAD("trim: for trimmed_mean, a fraction in [0, 0.5)");
		if (f && a->rule != FN_RULE_KRUM && a->rule != FN_RULE_BULYAN)
			BAD("f: for krum and bulyan only");
		if (m && a->rule != FN_RULE_KRUM)
			BAD("m: for krum only (bulyan selects clients - 2f)");
		if (f && (!json_is_integer(f) || json_integer_value(f) < 0))
			BAD("f: a non-negative integer");
		if (m && (!json_is_integer(m) || json_integer_value(m) < 1))
			BAD("m: a positive integer");
		a->trim = t ? (float)json_number_value(t) : RT_TRIM_DEFAULT;
		a->trim_given = t != NULL;
		/* Krum's default f depends on the round's size: rt_algo_check_clients(). */
		a->f = f ? (uint32_t)json_integer_value(f) : 0;
		a->f_given = f != NULL;
		a->m = m ? (uint32_t)json_integer_value(m) : 1;
		/* Exact rules see every value: no weights, no clipping or noise in this build. */
		if (w && json_is_true(w))
			BAD("weighted: robust rules are unweighted (leave it out or false)");
		for (const char *const *k = (const char *const[]){ "clip_norm",
								   "dp_noise_multiplier",
								   "server_lr", NULL };
		     *k; k++)
			if (json_object_get(o, *k))
				BAD("%s: not available with robust rules in this build", *k);
	} else {
		for (const char *const *k = (const char *const[]){ "trim", "f", "m", NULL }; *k;
		     k++)
			if (json_object_get(o, *k))
				BAD("%s: does not apply to algorithm '%s'", *k, name);
	}
	return 0;
}

/* FedBuff's buffer_size and max_staleness, refused for other algorithms. */
static int parse_fedbuff(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	const char *name = a->name;
	json_t *upd = json_object_get(o, "update");

	if (!strcmp(name, "fedbuff")) {
		json_t *k = json_object_get(o, "buffer_size"),
		       *s = json_object_get(o, "max_staleness");

		if (!k || !json_is_integer(k) || json_integer_value(k) < 1 ||
		    json_integer_value(k) > 1000000)
			BAD("buffer_size: required for fedbuff, an integer from 1 to 1000000");
		if (s && (!json_is_integer(s) || json_integer_value(s) < 0 ||
			  json_integer_value(s) > 1000000))
			BAD("max_staleness: an integer from 0 to 1000000");
		if (upd && (!json_is_string(upd) || strcmp(json_string_value(upd), "delta")))
			BAD("update: fedbuff updates are deltas (\"delta\")");
		a->async = true;
		a->buffer_size = (uint32_t)json_integer_value(k);
		a->max_staleness = s ? (uint32_t)json_integer_value(s) : 10;
		a->par.flags |= FN_PAR_DELTA;
	} else {
		for (const char *const *k = (const char *const[]){ "buffer_size", "max_staleness",
								   NULL };
		     *k; k++)
			if (json_object_get(o, *k))
				BAD("%s: for fedbuff only", *k);
	}

	return 0;
}

/* The 400 for an optimiser parameter out of range: its value, its range, and its default. */
static int server_range_msg(json_t *o, const struct fn_opt_params *op, const char *field,
			    const char *name, char *msgbuf, size_t msglen)
{
	struct fn_opt_params def;
	float v, d;

	fn_opt_params_default(&def, op->kind);
	if (!field || !strcmp(field, "algorithm"))
		BAD("algorithm: '%s' has no server optimiser", name);
	v = !strcmp(field, "server_lr") ? op->server_lr :
	    !strcmp(field, "momentum")  ? op->momentum :
	    !strcmp(field, "beta1")	? op->beta1 :
	    !strcmp(field, "beta2")	? op->beta2 :
					  op->tau;
	d = !strcmp(field, "server_lr") ? def.server_lr :
	    !strcmp(field, "momentum")  ? def.momentum :
	    !strcmp(field, "beta1")	? def.beta1 :
	    !strcmp(field, "beta2")	? def.beta2 :
					  def.tau;
	BAD("%s: %g%s is out of range for %s (%s; its default is %g)", field, (double)v,
	    json_object_get(o, field) ? "" : " (the default)", name,
	    !strcmp(field, "server_lr") || !strcmp(field, "tau") ? "a number > 0" :
								   "a number in [0, 1)",
	    (double)d);
}

/* The server optimiser's parameters. */
static int parse_server(json_t *o, struct rt_algo *a, int server, char *msgbuf, size_t msglen)
{
	const char *name = a->name, *field = NULL;
	struct fn_opt_params op;
	double v;
	bool given;

	fn_opt_params_default(&op, (uint32_t)server);
	if (server == FN_OPT_FEDAVG) {
		/* Plain FedAvg: the model is the mean (server_lr 1 moves it all the way). */
		op.server_lr = 1.0f;
	}
	if (num(o, "server_lr", &v, &given))
		BAD("server_lr: a number");
	if (given)
		op.server_lr = (float)v;
	if (num(o, "momentum", &v, &given) || (given && server != FN_OPT_FEDAVGM))
		BAD("momentum: a number, for fedavgm only");
	if (given)
		op.momentum = (float)v;
	for (const char *const *k = (const char *const[]){ "beta1", "beta2", "tau", NULL }; *k;
	     k++) {
		if (num(o, *k, &v, &given) ||
		    (given && server != FN_OPT_FEDADAGRAD && server != FN_OPT_FEDADAM &&
		     server != FN_OPT_FEDYOGI))
			BAD("%s: a number, for fedadagrad, fedadam and fedyogi only", *k);
		if (given && !strcmp(*k, "beta1"))
			op.beta1 = (float)v;
		else if (given && !strcmp(*k, "beta2"))
			op.beta2 = (float)v;
		else if (given)
			op.tau = (float)v;
	}
	if (fn_opt_params_check(&op, &field))
		return server_range_msg(o, &op, field, name, msgbuf, msglen);

	a->par.server = (uint16_t)server;
	a->par.server_lr = op.server_lr;
	a->par.momentum = op.momentum;
	a->par.beta1 = op.beta1;
	a->par.beta2 = op.beta2;
	a->par.tau = op.tau;
	return 0;
}

/* Weighting, deltas, clipping, DP noise and the seed. */
static int parse_flags(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	json_t *w = json_object_get(o, "weighted"), *upd = json_object_get(o, "update");
	json_t *seed = json_object_get(o, "seed");
	double v;
	bool given;

	if (w && !json_is_boolean(w))
		BAD("weighted: true or false");
	if (w && !json_is_true(w))
		a->par.flags |= FN_PAR_UNWEIGHTED;
	if (upd) {
		const char *u = json_string_value(upd);

		if (!u || (strcmp(u, "weights") && strcmp(u, "delta")))
			BAD("update: \"weights\" or \"delta\"");
		if (!strcmp(u, "delta"))
			a->par.flags |= FN_PAR_DELTA;
	}
	if (num(o, "clip_norm", &v, &given) || (given && !(v > 0)))
		BAD("clip_norm: a number > 0");
	if (given) {
		a->par.flags |= FN_PAR_CLIP;
		a->par.clip_norm = (float)v;
	}
	if (num(o, "dp_noise_multiplier", &v, &given) || (given && !(v >= 0)))
		BAD("dp_noise_multiplier: a number >= 0");
	if (given && v > 0) {
		double delta = 1e-5;
		bool dgiven;

		if (!(a->par.flags & FN_PAR_CLIP))
			BAD("dp_noise_multiplier: needs clip_norm (the sensitivity)");
		if (w && json_is_true(w))
			BAD("weighted: central DP averages clipped updates uniformly; leave it "
			    "false");
		if (num(o, "dp_delta", &delta, &dgiven) || !(delta > 0 && delta < 1))
			BAD("dp_delta: a number in (0, 1)");
		/* The noise's stddev, z * C, bounded as an update's values are (fn_fold.h). */
		if (!((double)a->par.clip_norm * v <= FN_FOLD_TERM_MAX))
			BAD("dp_noise_multiplier: times clip_norm at most 2^80 (1.2e24), so that "
			    "the noise stays finite");
		a->par.flags |= FN_PAR_DP | FN_PAR_UNWEIGHTED;
		a->par.dp_noise_multiplier = (float)v;
		a->dp_delta = delta;
	} else if (json_object_get(o, "dp_delta")) {
		BAD("dp_delta: only with dp_noise_multiplier > 0");
	}
	if (seed) {
		if (!json_is_integer(seed) || json_integer_value(seed) < 0)
			BAD("seed: a non-negative integer");
		a->par.flags |= FN_PAR_SEEDED;
		a->par.seed = (uint64_t)json_integer_value(seed);
	}
	return 0;
}

int rt_algo_parse(json_t *o, struct rt_algo *a, char *msgbuf, size_t msglen)
{
	int server, err;

	memset(a, 0, sizeof(*a));
	err = parse_name(o, a, &server, msgbuf, msglen);
	if (!err)
		err = parse_robust(o, a, msgbuf, msglen);
	if (!err)
		err = parse_fedbuff(o, a, msgbuf, msglen);
	if (!err)
		err = parse_fedprox(o, a, msgbuf, msglen);
	if (!err)
		err = parse_fedau(o, a, msgbuf, msglen);
	if (!err)
		err = parse_scaffold(o, a, msgbuf, msglen);
	if (!err)
		err = parse_frl(o, a, msgbuf, msglen);
	if (!err)
		err = parse_flora(o, a, msgbuf, msglen);
	if (!err)
		err = parse_server(o, a, server, msgbuf, msglen);
	if (!err)
		err = parse_flags(o, a, msgbuf, msglen);
	if (err)
		return err;
	if (a->rule || a->frl)
		a->par.flags |= FN_PAR_UNWEIGHTED;
	if (a->scaffold) {
		a->par.flags |= FN_PAR_UNWEIGHTED | FN_PAR_DELTA;
		a->par.momentum = (float)a->scaffold_n; /* fn_scaffold.c reads N there */
	}
	a->needs_model = server != FN_OPT_FEDAVG || a->par.server_lr != 1.0f ||
			 (a->par.flags & FN_PAR_DELTA) || a->async;
	return 0;
}

/* @v as a JSON number with the fewest digits that read back as the same float. */
static json_t *real_f(float v)
{
	char buf[32];

	for (int p = 6; p < 9; p++) {
		snprintf(buf, sizeof(buf), "%.*g", p, (double)v);
		if ((float)strtod(buf, NULL) == v)
			return json_real(strtod(buf, NULL));
	}
	return json_real((double)v);
}

json_t *rt_algo_json(const struct rt_algo *a)
{
	const struct fn_params *p = &a->par;
	json_t *o = json_pack("{s:s, s:b, s:s, s:o}", "algorithm", a->name, "weighted",
			      !(p->flags & FN_PAR_UNWEIGHTED), "update",
			      (p->flags & FN_PAR_DELTA) ? "delta" : "weights", "server_lr",
			      real_f(p->server_lr));

	if (!o)
		return NULL;
	if (a->frl) {
		/* Rankings, not weights; no server step: shown as what the job runs. */
		json_object_del(o, "server_lr");
		json_object_set_new(o, "update", json_string("ranking"));
	}
	if (p->server == FN_OPT_FEDAVGM)
		json_object_set_new(o, "momentum", real_f(p->momentum));
	if (p->server >= FN_OPT_FEDADAGRAD) {
		json_object_set_new(o, "beta1", real_f(p->beta1));
		json_object_set_new(o, "beta2", real_f(p->beta2));
		json_object_set_new(o, "tau", real_f(p->tau));
	}
	if (p->flags & FN_PAR_CLIP)
		json_object_set_new(o, "clip_norm", real_f(p->clip_norm));
	if (p->flags & FN_PAR_DP) {
		json_object_set_new(o, "dp_noise_multiplier", real_f(p->dp_noise_multiplier));
		json_object_set_new(o, "dp_delta", json_real(a->dp_delta));
	}
	if (p->flags & FN_PAR_SEEDED)
		json_object_set_new(o, "seed", json_integer((json_int_t)p->seed));
	if (a->rule == FN_RULE_TRIMMED_MEAN)
		json_object_set_new(o, "trim", real_f(a->trim));
	if (a->rule == FN_RULE_KRUM) {
		json_object_set_new(o, "f", json_integer(a->f));
		json_object_set_new(o, "m", json_integer(a->m));
	}
	if (a->rule == FN_RULE_BULYAN)
		json_object_set_new(o, "f", json_integer(a->f));
	if (!strcmp(a->name, "fedprox"))
		json_object_set_new(o, "proximal_mu", real_f(a->proximal_mu));
	if (a->fedau)
		json_object_set_new(o, "fedau_cutoff", json_integer(a->fedau_k));
	if (a->scaffold)
		json_object_set_new(o, "scaffold_clients", json_integer(a->scaffold_n));
	if (a->flora) {
		json_object_del(o, "server_lr");
		json_object_set_new(o, "flora_merge", json_boolean(a->flora_merge));
	}
	if (a->async) {
		json_object_set_new(o, "buffer_size", json_integer(a->buffer_size));
		json_object_set_new(o, "max_staleness", json_integer(a->max_staleness));
	}
	return o;
}

/*
 * The smallest trim that cuts one update from each end of @k, to 3 significant digits rounded
 * up, as the kernel counts it (the float trim in double, fn_robust_trim_count()); 0.5 or more
 * when no trim below 0.5 does.
 */
static double trim_smallest(uint32_t k)
{
	double scale = 1000, t;
	size_t cut = 0;

	while (1.0 / k * scale < 100)
		scale *= 10;
	for (t = ceil(1.0 / k * scale) / scale; t < 0.5; t += 1 / scale)
		if (!fn_robust_trim_count((double)(float)t, k, &cut) && cut >= 1)
			return t;
	return 0.5;
}

/* "clients_per_round 8" or "min_clients 4, the fewest a round may close with". */
static void round_size(char *buf, size_t cap, uint32_t k, bool deadline)
{
	snprintf(buf, cap, "%s %u%s", deadline ? "min_clients" : "clients_per_round", k,
		 deadline ? ", the fewest a round may close with" : "");
}

/* Krum needs k >= 2f + 3 and 1 <= m <= k - f; f 0 assumes no attacker at all. */
static int check_krum(struct rt_algo *a, uint32_t k, const char *size, char *msgbuf,
		      size_t msglen)
{
	uint32_t fmax = k >= 3 ? (k - 3) / 2 : 0;

	if (fmax < 1)
		BAD("f: krum with %s tolerates no Byzantine client (it needs clients >= 2f + 3: "
		    "f = 1 takes at least 5); use median or trimmed_mean, or more clients", size);
	if (!a->f_given)
		a->f = fmax; /* the most Krum tolerates for this round size */
	if (a->f == 0)
		BAD("f: 0 assumes no Byzantine client, so Krum only picks the most central "
		    "update; use f >= 1 (at most %u with %s)", fmax, size);
	if (a->f > fmax)
		BAD("f: %u needs at least %u clients (clients >= 2f + 3) but %s; use f <= %u",
		    a->f, 2 * a->f + 3, size, fmax);
	if (a->m > k - a->f)
		BAD("m: %u is more than clients - f = %u - %u%s; use m <= %u", a->m, k, a->f,
		    a->f_given ? "" : " (f's default)", k - a->f);
	return 0;
}

/* Bulyan needs k >= 4f + 3 (fn_bulyan.h); f 0 is the plain mean. */
static int check_bulyan(struct rt_algo *a, uint32_t k, const char *size, char *msgbuf,
			size_t msglen)
{
	uint32_t fmax = k >= 3 ? (k - 3) / 4 : 0;

	if (fmax < 1)
		BAD("f: bulyan with %s tolerates no Byzantine client (it needs clients >= 4f + 3: "
		    "f = 1 takes at least 7); use median or trimmed_mean, or more clients", size);
	if (!a->f_given)
		a->f = fmax; /* the most Bulyan tolerates for this round size */
	if (a->f == 0)
		BAD("f: 0 assumes no Byzantine client, so bulyan is the plain mean; use f >= 1 "
		    "(at most %u with %s)", fmax, size);
	if (a->f > fmax)
		BAD("f: %u needs at least %u clients (clients >= 4f + 3) but %s; use f <= %u",
		    a->f, 4 * a->f + 3, size, fmax);
	return 0;
}

int rt_algo_check_frl(const struct rt_algo *a, uint64_t k, uint64_t n_max, const char *tensor,
		      char *msgbuf, size_t msglen)
{
	if (a->frl && n_max > (uint64_t)INT32_MAX + 1)
		BAD("tensors: '%.40s' has %llu entries; an frl ranking indexes a tensor with int32, "
		    "at most 2^31 entries", tensor, (unsigned long long)n_max);
	if (!a->frl || fn_frl_votes_fit(k, n_max))
		return 0;
	BAD("clients_per_round: %llu rankings of tensor '%.40s' (%llu entries) could overflow a "
	    "vote: frl needs clients_per_round x (entries - 1) <= 2^32 - 1; at most %llu clients "
	    "for this tensor", (unsigned long long)k, tensor, (unsigned long long)n_max,
	    (unsigned long long)(UINT32_MAX / (n_max - 1)));
}

int rt_algo_check_clients(struct rt_algo *a, uint32_t k_min, uint32_t k_max, bool deadline,
			  char *msgbuf, size_t msglen)
{
	char size[80];
	size_t cut = 0;
	double t;

	if (a->scaffold && k_max > a->scaffold_n)
		BAD("scaffold_clients: %u is fewer than clients_per_round %u; N is the whole client "
		    "population (c moves by |S|/N of the mean control delta)", a->scaffold_n,
		    k_max);
	round_size(size, sizeof(size), k_min, deadline);
	switch (a->rule) {
	case FN_RULE_MEDIAN:
		/* The median of 1 or 2 values is their mean: nobody is outvoted. */
		if (k_min < 3)
			BAD("algorithm: the median of %u clients is their mean (%s); median needs "
			    "at least 3 clients", k_min, size);
		return 0;
	case FN_RULE_TRIMMED_MEAN:
		if (fn_robust_trim_count((double)a->trim, k_min, &cut) || cut >= 1)
			return 0;
		t = trim_smallest(k_min);
		if (t >= 0.5)
			BAD("trim: trimmed_mean with %s cannot cut one from each end and keep one; "
			    "it needs at least 3 clients", size);
		BAD("trim: %g%s cuts 0 of %u clients from each end (%s); use trim >= %g",
		    (double)a->trim, a->trim_given ? "" : " (the default)", k_min, size, t);
	case FN_RULE_KRUM:
		return check_krum(a, k_min, size, msgbuf, msglen);
	case FN_RULE_BULYAN:
		return check_bulyan(a, k_min, size, msgbuf, msglen);
	default:
		return 0;
	}
}

/* Sets @key in @o to @v unless the job gave it; 0 or -ENOMEM. */
static int pin(json_t *o, const char *key, json_t *v)
{
	if (json_object_get(o, key)) {
		json_decref(v);
		return 0;
	}
	return json_object_set_new(o, key, v) ? -ENOMEM : 0;
}

int rt_algo_pin_defaults(const struct rt_algo *a, json_t *o)
{
	const struct fn_params *p = &a->par;
	int err = 0;

	if (!a->rule && !a->frl && !a->flora) /* frl and flora refuse server_lr: a pinned one would fail a restart */
		err |= pin(o, "server_lr", real_f(p->server_lr));
	if (a->flora)
		err |= pin(o, "flora_merge", json_boolean(a->flora_merge));
	if (p->server == FN_OPT_FEDAVGM)
		err |= pin(o, "momentum", real_f(p->momentum));
	if (p->server >= FN_OPT_FEDADAGRAD) {
		err |= pin(o, "beta1", real_f(p->beta1));
		err |= pin(o, "beta2", real_f(p->beta2));
		err |= pin(o, "tau", real_f(p->tau));
	}
	if (a->rule == FN_RULE_TRIMMED_MEAN)
		err |= pin(o, "trim", real_f(a->trim));
	if (a->rule == FN_RULE_KRUM) {
		err |= pin(o, "f", json_integer(a->f));
		err |= pin(o, "m", json_integer(a->m));
	}
	if (a->rule == FN_RULE_BULYAN)
		err |= pin(o, "f", json_integer(a->f));
	if (p->flags & FN_PAR_DP)
		err |= pin(o, "dp_delta", json_real(a->dp_delta));
	if (a->async)
		err |= pin(o, "max_staleness", json_integer(a->max_staleness));
	if (!strcmp(a->name, "fedprox"))
		err |= pin(o, "proximal_mu", real_f(a->proximal_mu));
	if (a->fedau)
		err |= pin(o, "fedau_cutoff", json_integer(a->fedau_k));
	return err ? -ENOMEM : 0;
}
