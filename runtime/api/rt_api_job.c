// SPDX-License-Identifier: MIT
/* POST /v1/jobs (the job-spec parser and job creation), GET /v1/jobs, GET /v1/jobs/{job}. */
#include "api_priv.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "fn_dp.h"
#include "rt_flora.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_name.h"
#include "trib_schema.h"
#include "trib_time.h"

/* --- POST /v1/jobs --- */

/* Field checks of a job definition; 0, or the HTTP status with @msg. */
static int def_fields(json_t *o, struct rt_job_def *def, json_t **cprp, char *msg, size_t cap)
{
	static const char *const known[] = { "name", "clients_per_round", "algorithm", "params",
					      "tensors", "fan_in", "min_clients", "round_timeout_s",
					      "client_auth", "client_config", "selection", "num_rounds",
					      "secagg", NULL };
	json_t *name = json_object_get(o, "name"), *cpr = json_object_get(o, "clients_per_round");
	json_t *fanin = json_object_get(o, "fan_in"), *minc = json_object_get(o, "min_clients");
	json_t *tmo = json_object_get(o, "round_timeout_s"), *v;
	json_t *ca = json_object_get(o, "client_auth");
	const char *key;

	json_object_foreach(o, key, v) {
		size_t i;

		for (i = 0; known[i] && strcmp(known[i], key); i++)
			;
		if (!known[i] && !rt_algo_is_param(key)) {
			snprintf(msg, cap, "%.64s: unknown field", key);
			return 400;
		}
	}
	if (!json_is_string(name) || !trib_job_name_valid(json_string_value(name))) {
		snprintf(msg, cap, "%s",
			 "name: required, 1-63 characters of A-Z a-z 0-9 . _ -, not "
			 "starting with . or -");
		return 400;
	}
	if (json_is_string(json_object_get(o, "algorithm")) &&
	    !strcmp(json_string_value(json_object_get(o, "algorithm")), "fedbuff")) {
		/* FedBuff has buffers, not rounds: a version every buffer_size updates. */
		json_t *k = json_object_get(o, "buffer_size");

		if (cpr && (!json_is_integer(k) || !json_equal(cpr, k))) {
			snprintf(msg, cap, "%s",
				 "clients_per_round: for fedbuff, buffer_size sets it "
				 "(leave clients_per_round out)");
			return 400;
		}
		if (json_is_integer(k))
			cpr = k;
	}
	if (!json_is_integer(cpr) || json_integer_value(cpr) < 1 ||
	    json_integer_value(cpr) > 1000000) {
		snprintf(msg, cap, "%s",
			 "clients_per_round: required, an integer from 1 to 1000000");
		return 400;
	}
	if (rt_algo_parse(o, &def->algo, msg, cap))
		return 400;
	if (fanin && (!json_is_integer(fanin) || json_integer_value(fanin) < 1 ||
		      json_integer_value(fanin) > 4096)) {
		snprintf(msg, cap, "%s", "fan_in: an integer from 1 to 4096");
		return 400;
	}
	if (minc && (!json_is_integer(minc) || json_integer_value(minc) < 1 ||
		     json_integer_value(minc) > json_integer_value(cpr))) {
		snprintf(msg, cap, "%s", "min_clients: an integer from 1 to clients_per_round");
		return 400;
	}
	if (tmo && (!json_is_integer(tmo) || json_integer_value(tmo) < 1 ||
		    json_integer_value(tmo) > 86400 * 7)) {
		snprintf(msg, cap, "%s", "round_timeout_s: seconds, an integer from 1 to 604800");
		return 400;
	}
	if (ca && (!json_is_string(ca) || (strcmp(json_string_value(ca), "required") &&
					    strcmp(json_string_value(ca), "optional")))) {
		snprintf(msg, cap, "%s", "client_auth: \"optional\" (the default: the job token "
			 "or a client token submits) or \"required\" (only client tokens submit)");
		return 400;
	}
	def->spec.client_auth_required = ca && !strcmp(json_string_value(ca), "required");
	def->spec.name = json_string_value(name);
	def->spec.cpr = (uint32_t)json_integer_value(cpr);
	def->spec.fanin = fanin ? (uint32_t)json_integer_value(fanin) : 0;
	def->spec.min_clients = minc ? (uint32_t)json_integer_value(minc) : 0;
	def->spec.round_timeout_s = tmo ? (uint32_t)json_integer_value(tmo) : 0;
	*cprp = cpr;
	return 0;
}

/* scaffold's model is [x ; c]: the twins' rule is core's (the controller's files use it too). */
static int scaffold_schema(json_t *o, char *msg, size_t cap)
{
	size_t at = 0;
	int err = trib_schema_scaffold(o, &at);

	if (err == -EINVAL) {
		snprintf(msg, cap, "tensors[%zu]: scaffold keeps names starting with \"c.\" "
			 "for the control variate (each tensor's is c.<name>)", at);
		return 400;
	}
	if (err) {
		snprintf(msg, cap, "%s", "out of memory");
		return 500;
	}
	return 0;
}

/* "params": N (one f32 tensor "weights") or "tensors": [...] (core's one rule); 0 or the status. */
static int def_schema(json_t *o, struct rt_job_def *def, char *msg, size_t cap)
{
	const char *why = NULL;
	size_t at;
	int err = def->algo.scaffold ? scaffold_schema(o, msg, cap) : 0;

	if (err)
		return err;
	err = trib_schema_from_spec_at(o, &def->schema, &def->nschema, &def->n_elem, &why, &at);
	json_t *name = json_object_get(json_array_get(json_object_get(o, "tensors"), at), "name");
	char shown[TRIB_ST_SHOW_MAX] = "";

	if (!err)
		return 0;
	if (json_is_string(name)) /* which entry: its name, shown safely */
		trib_st_show(json_string_value(name), json_string_length(name), shown,
			     sizeof(shown));
	if (err != -ENOMEM && why && at != SIZE_MAX)
		snprintf(msg, cap, "%s (tensors[%zu]%s%s%s)", why, at, shown[0] ? " '" : "", shown,
			 shown[0] ? "'" : "");
	else
		snprintf(msg, cap, "%s", err == -ENOMEM || !why ? "out of memory" : why);
	return err == -ENOMEM ? 500 : 400;
}

/*
 * Across nodes, each node sums its updates (clipped, staleness-weighted) and the round's top
 * folds the nodes' sums, adds DP noise once, divides once and takes the server step (its state
 * is the controller's; FedBuff's versions are counted there): exact for the rules that are a
 * weighted mean and then a server step; the exact robust rules run over coordinate ranges
 * (rt_agent_shard.c). Every algorithm of this build is on the list: it stays an allowlist so
 * that an algorithm added later is refused in a cluster until it is made to work there.
 */
static bool cluster_algorithm(const struct rt_algo *alg)
{
	static const char *const ok[] = { "fedavg", "fedprox", "fedbuff", "fedavgm",
					  "fedadagrad", "fedadam", "fedyogi", "frl", "flora",
					  "fedau", "scaffold" /* state: the controller's (ctl_fedau.c) */ };

	/* Exact robust rules, on weights or deltas: each node owns a range (rt_agent_shard.c). */
	if (alg->rule)
		return true;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (!strcmp(alg->name, ok[i]))
			return true;
	return false;
}

/* What the algorithm, the arena and a cluster allow; 0 or the HTTP status. */
static int def_limits(struct rt_job_def *def, uint64_t k, size_t arena_size,
		      bool clustered, char *msg, size_t cap)
{
	const struct rt_algo *alg = &def->algo;
	uint32_t kmin = def->spec.min_clients ? def->spec.min_clients : (uint32_t)k;

	/* FedAU's state is per client: only client tokens name one (rt_fedau.c). */
	if (alg->fedau && !def->spec.client_auth_required) {
		snprintf(msg, cap, "client_auth: fedau keeps a weight per client, so it needs "
			 "\"client_auth\": \"required\" (updates sent with client tokens)");
		return 400;
	}
	/* A robust rule must do something for the fewest updates a round may close with. */
	if (rt_algo_check_clients(&def->algo, kmin, (uint32_t)k, kmin < k, msg, cap))
		return 400;
	/* frl's votes are uint32: the largest tensor bounds the round's size. */
	if (alg->frl) {
		size_t big = 0;

		for (size_t i = 1; i < def->nschema; i++)
			if (def->schema[i].n_elem > def->schema[big].n_elem)
				big = i;
		if (def->nschema && rt_algo_check_frl(alg, k, def->schema[big].n_elem,
						      def->schema[big].name, msg, cap))
			return 400;
	}
	/* Exact robust rules keep a whole round of updates in the arena. */
	if (alg->rule && k * (def->n_elem * 4 + 65536) > arena_size / 2) {
		snprintf(msg, cap, "clients_per_round: %s keeps every update of a round "
			 "(%llu x %llu bytes), more than half this node's arena (%zu MiB)",
			 alg->name, (unsigned long long)k, (unsigned long long)def->n_elem * 4,
			 arena_size >> 20);
		return 400;
	}
	if (SHM_ACC_HDR + def->n_elem * 4 > arena_size / 4) {
		snprintf(msg, cap,
			 "model of %llu parameters does not fit this node's arena (%zu MiB); "
			 "start tributary with a larger --arena-mb",
			 (unsigned long long)def->n_elem, arena_size >> 20);
		return 400;
	}
	if (clustered && !cluster_algorithm(alg)) {
		snprintf(msg, cap, "not supported across nodes yet: %s; a cluster runs fedavg, "
			 "fedprox, fedbuff, fedavgm, fedadagrad, fedadam, fedyogi, fedau and "
			 "scaffold (with deltas, clipping, DP, deadlines), frl, flora, and median, "
			 "trimmed_mean, krum and bulyan (on weights or deltas); run %s on one node "
			 "(tributary up)", alg->name,
			 alg->name);
		return 400;
	}
	return 0;
}

void rt_job_def_free(struct rt_job_def *def)
{
	trib_free(def->schema);
	json_decref(def->params);
	json_decref(def->doc);
	memset(def, 0, sizeof(*def));
}

int rt_job_def_parse(const uint8_t *buf, size_t len, size_t arena_size, bool clustered,
		     struct rt_job_def *def, char *msg, size_t cap)
{
	json_error_t jerr;
	json_t *cpr = NULL, *v;
	const char *key;
	unsigned long failed = trib_alloc_failures();
	int status;

	memset(def, 0, sizeof(*def));
	def->doc = json_loadb((const char *)buf, len, 0, &jerr);
	if (trib_alloc_failures() != failed) {
		/*
		 * jansson says "out of memory" as a parse error, or not at all (a string
		 * it could not grow comes back cut short): not the client's fault.
		 */
		snprintf(msg, cap, "%s", "out of memory");
		status = 500;
		goto err_free;
	}
	if (!def->doc || !json_is_object(def->doc)) {
		snprintf(msg, cap, "body is not a JSON object%s%s", def->doc ? "" : ": ",
			 def->doc ? "" : jerr.text);
		status = 400;
		goto err_free;
	}
	status = rt__api_def_task(def->doc, def, clustered, msg, cap);
	if (!status)
		status = def_fields(def->doc, def, &cpr, msg, cap);
	if (!status)
		status = rt__api_life_parse(def->doc, &def->spec.num_rounds, msg, cap);
	if (!status)
		status = def_schema(def->doc, def, msg, cap);
	if (!status && def->algo.flora)
		status = rt__api_def_flora(def->doc, def, (uint32_t)json_integer_value(cpr),
					   arena_size, msg, cap);
	if (!status)
		status = def_limits(def, (uint64_t)json_integer_value(cpr), arena_size,
				    clustered, msg, cap);
	if (!status)
		status = rt__api_def_secagg(def->doc, def, clustered, msg, cap);
	if (status)
		goto err_free;
	def->spec.algo = &def->algo;
	/* Store the algorithm's parameters as given: a restart parses them again. */
	def->params = json_object();
	status = def->params ? 0 : 500;
	json_object_foreach(def->doc, key, v)
		if (!status && rt_algo_is_param(key) && strcmp(key, "algorithm") &&
		    json_object_set(def->params, key, v))
			status = 500; /* a parameter left out would be stored as not given */
	/* And the defaults applied: a restart gets the same values if a default changes. */
	if (!status && rt_algo_pin_defaults(&def->algo, def->params))
		status = 500;
	if (status) {
		snprintf(msg, cap, "%s", "out of memory");
		goto err_free;
	}
	def->spec.params = def->params;
	return 200;

err_free:
	rt_job_def_free(def);
	return status;
}

int rt_api_job_build(struct rt_node *n, bool clustered, const uint8_t *buf, size_t blen,
		     const char *token, bool dry, struct rt_job **out, char *msg, size_t cap,
		     uint64_t *n_elem_out)
{
	struct rt_job_def def;
	struct rt_job *j;
	int status, err;

	status = rt_job_def_parse(buf, blen, shm_arena_size(n->arena), clustered, &def, msg, cap);
	if (status != 200)
		return status;
	for (j = n->jobs; j; j = j->next) {
		if (!trib_job_name_same(j->name, def.spec.name))
			continue;
		status = 409;
		snprintf(msg, cap, "a job with this name exists: '%s' (names that differ only by "
			 "case are the same)", j->name);
		goto out;
	}
	if (n_elem_out)
		*n_elem_out = def.n_elem;
	if (dry)
		goto out;
	err = rt_job_create(n, &def.spec, def.schema, def.nschema, &j);
	if (err) {
		status = err == -EEXIST ? 409 : 500;
		snprintf(msg, cap, "%s", err == -EEXIST ? "a job with this name exists" :
					       "could not create the job (see the server log)");
		goto out;
	}
	def.schema = NULL; /* the job owns it */
	if (token)
		snprintf(j->token, sizeof(j->token), "%s", token); /* the cluster's */
	if (out)
		*out = j;
	status = 201;
out:
	rt_job_def_free(&def);
	return status;
}

static void on_create_body(struct rt_conn *c)
{
	struct rt_job *j = NULL;
	char msg[320], body[256];
	int status, len;

	if (API(c)->clustered) {
		/* Cluster-wide: checked here, named and recorded by the controller. */
		status = rt_api_job_build(N(c), API(c)->clustered, c->body_heap, c->body_len, NULL,
					  true, NULL, msg, sizeof(msg), NULL);
		if (status == 200)
			API(c)->cluster.job_create(API(c)->cluster.ctx, c);
		else
			rt_conn_error(c, status, msg, -1, NULL);
		return;
	}
	status = rt_api_job_build(N(c), API(c)->clustered, c->body_heap, c->body_len, NULL, false,
				  &j, msg, sizeof(msg), NULL);
	if (status != 201) {
		rt_conn_error(c, status, msg, -1, NULL);
		return;
	}
	/*
	 * The job exists now: the answer must not fail for want of memory (a 500 would
	 * send the client to a 409). The name (trib_job_name_valid) and the token
	 * (base64url) need no escaping.
	 */
	len = snprintf(body, sizeof(body), "{\"job\":\"%s\",\"token\":\"%s\",\"round\":0}",
		       j->name, j->token);
	rt_conn_respond(c, 201, "application/json", body, (size_t)len, NULL);
}

void rt__api_handle_create(struct rt_conn *c)
{
	if (!rt__api_auth_admin(c)) {
		rt__api_reject(c, RT_REJ_AUTH, 401, "creating jobs takes the admin token (Bearer)",
			       -1, NULL);
		return;
	}
	/* The body is parsed as JSON whatever it is labelled (curl -d says form-urlencoded). */
	if (!c->req.has_content_length || c->req.chunked) {
		rt_conn_error(c, 411, "Content-Length required", -1, NULL);
		return;
	}
	if (c->req.content_length > JOB_BODY_MAX) {
		rt_conn_error(c, 413, "job definition larger than 1 MiB", -1, NULL);
		return;
	}
	c->body_heap = trib_malloc(c->req.content_length + 1);
	if (!c->body_heap) {
		rt_conn_error(c, 500, "out of memory", -1, NULL);
		return;
	}
	rt_conn_read_body(c, c->body_heap, c->req.content_length, on_create_body);
}

/* --- GET /v1/jobs, GET /v1/jobs/{job} --- */

static json_t *job_json(struct rt_node *n, struct rt_job *j)
{
	json_t *tensors = json_loads(j->schema_json, 0, NULL);

	(void)n;
	/* flora: the job's tensors are its base; the stacks are in flora_pairs' terms. */
	while (j->flora && json_array_size(tensors) > j->flora->nbase)
		json_array_remove(tensors, json_array_size(tensors) - 1);
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:o}", "job", j->name,
			 "round", (json_int_t)j->round, "model_round", (json_int_t)j->completed,
			 "received", (json_int_t)(j->open ? rt_round_received(j->open) : 0),
			 "clients_per_round", (json_int_t)j->cpr, "algorithm", j->algorithm,
			 "params", (json_int_t)j->n_elem, "fan_in",
			 (json_int_t)(j->open ? rt_round_fanin(j->open) : j->fanin),
			 "accepted_total", (json_int_t)j->accepted_total, "last_round_ms",
			 (json_int_t)j->last_round_ms, "tensors", tensors ? tensors : json_array());
}

/*
 * Whether the job's models are being stored: {"state": "ok"}, or "failing"
 * with the errno of the last attempt, since when (unix seconds), the
 * retries so far, the round whose model waits, and the next attempt.
 */
static json_t *store_json(const struct rt_job *j)
{
	const struct trib_retry *s = &j->store;
	uint64_t now = trib_now_ns();

	if (!trib_retry_pending(s))
		return json_pack("{s:s}", "state", "ok");
	return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f}", "state", "failing", "errno",
			 trib_errno_name(s->err), "error", strerror(-s->err), "since",
			 (json_int_t)s->since_unix, "retries", (json_int_t)s->retries, "round",
			 (json_int_t)s->what, "next_retry_s",
			 s->next_ns > now ? (double)(s->next_ns - now) / 1e9 : 0.0);
}

/* job_json, plus what the planner and the deadline add. */
/*
 * How long the open round has been open (since its first update: a round nobody sent to has
 * not started) and since the job's last update, as this server's clock sees them: what
 * `tributary status` judges a stalled round by, with no clock skew between it and us.
 */
static void round_times_json(const struct rt_job *j, json_t *o)
{
	uint64_t now = trib_now_ns();

	if (j->open) {
		uint64_t t = rt_round_opened_ns(j->open);

		json_object_set_new(o, "round_opened_at", json_real(rt_round_opened_unix(j->open)));
		json_object_set_new(o, "round_age_s",
				    json_real(now > t ? (double)(now - t) / 1e9 : 0));
	} else {
		json_object_set_new(o, "round_opened_at", json_null());
		json_object_set_new(o, "round_age_s", json_null());
	}
	if (j->last_update_ns) {
		json_object_set_new(o, "last_update_at", json_real(j->last_update_unix));
		json_object_set_new(o, "last_update_age_s",
				    json_real(now > j->last_update_ns
						      ? (double)(now - j->last_update_ns) / 1e9
						      : 0));
	} else {
		json_object_set_new(o, "last_update_at", json_null());
		json_object_set_new(o, "last_update_age_s", json_null());
	}
}

json_t *rt__api_job_json_full(struct rt_node *n, struct rt_job *j)
{
	json_t *o = job_json(n, j);

	if (!o)
		return NULL;
	/* No fixed fan-in and no round open: the planner decides at the next round. */
	if (!j->fanin && !j->open)
		json_object_set_new(o, "fan_in", json_null());
	json_object_set_new(o, "fan_in_planned", json_boolean(!j->fanin));
	json_object_set_new(o, "min_clients", json_integer(j->min_clients ? j->min_clients :
							   j->cpr));
	json_object_set_new(o, "round_timeout_s", j->round_timeout_s ?
					json_integer(j->round_timeout_s) : json_null());
	json_object_set_new(o, "arrival_rate", json_real(j->arrival_rate));
	json_object_set_new(o, "client_auth", json_string(j->cred.required ? "required" :
							  "optional"));
	/* Distinct client tokens counted: in the open round, and in the last one stored. */
	json_object_set_new(o, "clients", json_integer(rt_job_clients_now(n, j)));
	json_object_set_new(o, "last_round_clients", json_integer(j->last_round_clients));
	json_object_set_new(o, "parameters", rt_algo_json(&j->algo));
	if (j->algo.par.flags & FN_PAR_DP) {
		double eps = 0, order = 0;

		/* RDP accountant: every client takes part in every round (no sampling). */
		if (j->completed)
			fn_dp_epsilon(j->algo.par.dp_noise_multiplier, j->completed,
				      j->algo.dp_delta, &eps, &order);
		json_object_set_new(o, "privacy", json_pack("{s:f, s:f, s:I}", "epsilon", eps,
							    "delta", j->algo.dp_delta, "rounds",
							    (json_int_t)j->completed));
	}
	if (j->open)
		json_object_set_new(o, "leaves", json_integer(rt_round_nleaves(j->open)));
	round_times_json(j, o);
	json_object_set_new(o, "store", store_json(j));
	rt__api_task_status(n, j, o);
	rt__api_eval_status(n, j, o);
	rt__api_life_json(o, j);
	rt__api_secagg_status(n, j, o);
	if (j->flora) {
		json_object_set_new(o, "flora_pairs", rt_flora_json(j));
		json_object_set_new(o, "flora_merge", json_boolean(j->algo.flora_merge));
	}
	return o;
}

void rt__api_handle_list(struct rt_conn *c)
{
	json_t *arr = json_array();

	if (!rt__api_auth_admin(c)) {
		rt__api_reject(c, RT_REJ_AUTH, 401, "listing jobs takes the admin token (Bearer)",
			       -1, NULL);
		json_decref(arr);
		return;
	}
	for (struct rt_job *j = N(c)->jobs; j; j = j->next)
		json_array_append_new(arr, rt__api_job_json_full(N(c), j));
	rt__api_respond_json(c, 200, json_pack("{s:o}", "jobs", arr), NULL);
}

