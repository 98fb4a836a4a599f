// SPDX-License-Identifier: MIT
/* Jobs: create, load after a restart, find; their schema and model files. */
#include "rt_node_priv.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "ctl_store.h"
#include "fn_fold.h"
#include "rt_flora.h"
#include "rt_secagg.h"
#include "trib_alloc.h"
#include "trib_cred.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_schema.h"
#include "trib_store.h"

/* --- jobs --- */

struct rt_job *rt_job_find(struct rt_node *n, const char *name)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (!strcmp(j->name, name))
			return j;
	return NULL;
}

void rt__job_free(struct rt_job *j)
{
	while (j->inflight) {
		struct rt_round *r = j->inflight;

		j->inflight = r->next;
		rt__round_free(NULL, r, false);
	}
	trib_blob_release(j->model);
	trib_blob_release(j->remote_pending);
	trib_free(j->opt_state);
	rt__fedau_free(j);
	trib_free(j->flora);
	trib_free(j->schema);
	trib_free(j->schema_json);
	trib_free(j->st_header);
	trib_free(j->cred.revoked);
	rt_clients_free(&j->clients);
	rt_idem_mem_free(&j->idem_mem);
	rt__select_free(j);
	rt_job_secagg_drop(j);
	explicit_bzero(j->cred.key, sizeof(j->cred.key));
	trib_free(j);
}

static char *schema_to_json(const struct trib_tensor *schema, size_t n)
{
	json_t *arr = json_array();
	char *s = NULL;

	if (!arr)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		json_t *shape = json_array();

		for (uint32_t d = 0; d < schema[i].ndim; d++)
			json_array_append_new(shape, json_integer((json_int_t)schema[i].shape[d]));
		json_array_append_new(arr, json_pack("{s:s, s:o, s:s}", "name", schema[i].name,
						     "shape", shape, "dtype", "F32"));
	}
	s = trib_json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	return s;
}

static int job_build_header(struct rt_job *j)
{
	/* frl's model is the global ranking: I32 tensors of the schema's shapes. */
	if (j->algo.frl)
		return trib_st_write_header_dtype(j->schema, j->nschema, TRIB_DTYPE_I32, NULL,
						  &j->st_header, &j->st_header_len);
	return trib_st_write_header(j->schema, j->nschema, NULL, &j->st_header, &j->st_header_len);
}

/* Make a blob holding a whole model file: header + @data (or zeros when NULL). */
struct trib_blob *rt__model_blob(struct rt_job *j, const float *data, uint32_t version)
{
	/* A flora job with merge serves its base only: a prefix of the flat model (rt_flora.h). */
	uint64_t elems = rt_flora_model_elems(j);
	struct trib_blob *b = trib_blob_new(j->st_header_len + elems * sizeof(float));

	if (!b)
		return NULL;
	memcpy(b->data, j->st_header, j->st_header_len);
	if (data)
		memcpy(b->data + j->st_header_len, data, elems * sizeof(float));
	else if (j->algo.frl) /* frl's start: the identity ranking, not zeros */
		rt__frl_identity(j, (int32_t *)(void *)(b->data + j->st_header_len));
	else
		memset(b->data + j->st_header_len, 0, elems * sizeof(float));
	b->version = version;
	return b;
}

/*
 * The one place a model is written, so the one place a non-finite model is stopped: it never
 * becomes a version. -EDOM then goes down the store-failure path (rt_commit.c): the job's
 * updates get 503 naming EDOM and the write is retried, which fails again, loudly. The gateway's
 * bound (FN_FOLD_TERM_MAX) keeps accepted updates from getting here; this is the backstop.
 */
int rt__store_blob(struct rt_node *n, struct rt_job *j, struct trib_blob *b)
{
	size_t bad = 0, t = 0;
	int err;

	if (j->algo.frl) {
		/* Integers: the backstop is that every tensor is a permutation. */
		err = rt__frl_check_model(j, (const int32_t *)(const void *)(b->data +
									     j->st_header_len),
					  &t, &bad);
		if (err == -EDOM)
			trib_error("job %s: model v%u: tensor %s is not a permutation (position "
				   "%zu): NOT written, the version is not made; the job refuses "
				   "updates (503) until this is fixed", j->name, b->version,
				   j->schema[t].name, bad);
		if (err)
			return err;
	} else if (fn_check_finite_f32((const float *)(const void *)(b->data + j->st_header_len),
				(b->len - j->st_header_len) / sizeof(float), &bad)) {
		trib_error("job %s: model v%u has a non-finite value (NaN or Inf) at element %zu: "
			   "NOT written, the version is not made; the job refuses updates (503) "
			   "until this is fixed", j->name, b->version, bad);
		return -EDOM;
	}
	return trib_store_write_model(n->opts.data_dir, j->name, b->version, b->data,
				    j->st_header_len, b->data + j->st_header_len,
				    b->len - j->st_header_len, NULL, 0);
}

/* Model version @version of @j from @data (zeros if NULL), written to disk; *out is held. */
int rt__model_write(struct rt_node *n, struct rt_job *j, const float *data, uint32_t version,
		       struct trib_blob **out)
{
	struct trib_blob *b = rt__model_blob(j, data, version);
	int err;

	if (!b)
		return -ENOMEM;
	err = rt__store_blob(n, j, b);
	if (err) {
		trib_blob_release(b);
		return err;
	}
	*out = b;
	return 0;
}

/* The stored "secagg" (written by job_record from a checked spec) back into @j of @cpr clients. */
static void secagg_from_stored(struct rt_job *j, const json_t *o, uint32_t cpr)
{
	memset(&j->secagg, 0, sizeof(j->secagg));
	if (!json_is_object(o))
		return;
	j->secagg.on = true;
	j->secagg.threshold = (uint32_t)json_integer_value(json_object_get(o, "threshold"));
	j->secagg.neighbours = (uint32_t)json_integer_value(json_object_get(o, "neighbours"));
	j->secagg.clip = (float)json_number_value(json_object_get(o, "clip"));
	j->secagg.bits = (uint32_t)json_integer_value(json_object_get(o, "bits"));
	/* Stored before the field existed: the bound those jobs' sums always had room for. */
	j->secagg.max_samples = json_is_integer(json_object_get(o, "max_samples"))
		? (uint32_t)json_integer_value(json_object_get(o, "max_samples"))
		: rt_secagg_max_samples(cpr, j->secagg.bits);
}

/*
 * Record @j in the store: its algorithm parameters as the client gave them,
 * plus the tree's (each must be stored: a restart reads the tree's shape
 * back from them). *id gets its SQLite id. 0, -EEXIST (the name is taken),
 * -ENOMEM or another -errno.
 */
static int job_record(struct rt_node *n, const struct rt_job *j, const struct rt_job_spec *spec,
		      int64_t *id)
{
	json_t *p = spec->params ? json_deep_copy(spec->params) : json_object();
	struct ctl_job cj;
	char *params = NULL;
	int err = -ENOMEM;

	if (p && !json_object_set_new(p, "fan_in", json_integer(j->fanin)) &&
	    !json_object_set_new(p, "min_clients", json_integer(j->min_clients)) &&
	    !json_object_set_new(p, "round_timeout_s", json_integer(j->round_timeout_s)) &&
	    !json_object_set_new(p, "client_auth", json_string(j->cred.required ? "required" :
								  "optional")) &&
	    !rt__select_record(j, p) &&
	    (!j->num_rounds ||
	     !json_object_set_new(p, "num_rounds", json_integer(j->num_rounds))) &&
	    (!j->secagg.on ||
	     !json_object_set_new(p, "secagg",
				  json_pack("{s:I, s:I, s:f, s:I, s:I}", "threshold",
					    (json_int_t)j->secagg.threshold, "neighbours",
					    (json_int_t)j->secagg.neighbours, "clip",
					    (double)j->secagg.clip, "bits",
					    (json_int_t)j->secagg.bits, "max_samples",
					    (json_int_t)j->secagg.max_samples))))
		params = trib_json_dumps(p, JSON_COMPACT);
	json_decref(p);
	if (!params)
		return err;
	memset(&cj, 0, sizeof(cj));
	snprintf(cj.name, sizeof(cj.name), "%s", j->name);
	snprintf(cj.token, sizeof(cj.token), "%s", j->token);
	snprintf(cj.algorithm, sizeof(cj.algorithm), "%s", j->algorithm);
	cj.clients_per_round = spec->cpr;
	cj.schema_json = j->schema_json;
	cj.params_json = params;
	err = ctl_store_job_create(n->store, &cj);
	trib_free(params);
	if (!err)
		*id = cj.id;
	return err;
}

int rt_job_create(struct rt_node *n, const struct rt_job_spec *spec, struct trib_tensor *schema,
		  size_t nschema, struct rt_job **out)
{
	const char *name = spec->name;
	struct rt_job *j;
	struct trib_blob *b;
	int err;

	j = trib_calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->algo = *spec->algo;
	snprintf(j->algorithm, sizeof(j->algorithm), "%s", spec->algo->name);
	j->cpr = spec->cpr;
	j->fanin = spec->fanin;
	j->min_clients = spec->min_clients;
	j->round_timeout_s = spec->round_timeout_s;
	rt_idem_mem_init(&j->idem_mem, 0); /* a new job: no key of it is in the store */
	j->cred.required = spec->client_auth_required;
	j->num_rounds = spec->num_rounds;
	j->secagg = spec->secagg;
	j->schema = schema;
	err = rt__select_init(j, spec);
	if (err)
		goto err_free;
	j->nschema = nschema;
	for (size_t i = 0; i < nschema; i++)
		j->n_elem += schema[i].n_elem;
	j->schema_json = schema_to_json(schema, nschema);
	err = -ENOMEM;
	if (!j->schema_json)
		goto err_free;
	err = job_build_header(j);
	if (!err && !strcmp(j->algo.name, "flora"))
		err = rt_flora_bind(j, spec->params);
	if (err)
		goto err_free;
	err = trib_token_new(j->token, sizeof(j->token));
	if (err)
		goto err_free;

	/* The starting model (zeros) is version 0, on disk before the job exists for clients. */
	b = rt__model_blob(j, NULL, 0);
	err = -ENOMEM;
	if (!b)
		goto err_free;
	err = rt__store_blob(n, j, b);
	if (err) {
		trib_error("job %s: writing the initial model: %s", name, strerror(-err));
		trib_blob_release(b);
		goto err_free;
	}
	j->model = b;

	/* Its credential key (in a cluster the controller's replaces it). */
	err = trib_cred_key_new(j->cred.key);
	if (err)
		goto err_free;
	err = job_record(n, j, spec, &j->db_id);
	if (err)
		goto err_free; /* -EEXIST: the caller answers 409 */
	err = ctl_store_job_key_put(n->store, j->db_id, j->cred.key);
	if (err) {
		/* Not half made: a job without its key is not kept. */
		trib_error("job %s: keeping its client credential key: %s", name, strerror(-err));
		ctl_store_job_delete(n->store, j->name);
		goto err_free;
	}
	j->cred.has_key = true;
	j->id = n->next_job_id++;
	j->schema = schema;
	j->next = n->jobs;
	n->jobs = j;
	trib_info(
	    "job %s: created (%u clients per round, fan-in %s, %llu parameters in %zu tensors)",
	    name, j->cpr, j->fanin ? "fixed" : "planned", (unsigned long long)j->n_elem, nschema);
	*out = j;
	return 0;

err_free:
	j->schema = NULL; /* still the caller's on failure */
	rt__job_free(j);
	return err;
}

/* Load the jobs the store knows (after a restart). */
int rt__jobs_load(struct rt_node *n)
{
	struct ctl_job *cjs = NULL;
	size_t count = 0;
	int err = ctl_store_job_list(n->store, &cjs, &count);

	if (err)
		return err;
	for (size_t i = 0; i < count && !err; i++) {
		struct ctl_job *cj = &cjs[i];
		unsigned long failed = trib_alloc_failures();
		json_t *arr = json_loads(cj->schema_json, 0, NULL);
		json_t *params = cj->params_json ? json_loads(cj->params_json, 0, NULL) : NULL;
		const char *why = NULL;
		struct rt_job *j = trib_calloc(1, sizeof(*j));

		/* Short of memory, jansson may return a key cut short: a parameter lost. */
		if (!j || !arr || trib_alloc_failures() != failed) {
			err = -ENOMEM;
			trib_free(j);
			json_decref(arr);
			json_decref(params);
			break;
		}
		err = trib_schema_from_json(arr, &j->schema, &j->nschema, &j->n_elem, &why);
		json_decref(arr);
		if (!err) {
			json_t *fi = json_object_get(params, "fan_in");
			json_t *mc = json_object_get(params, "min_clients");
			json_t *rt = json_object_get(params, "round_timeout_s");
			json_t *ca = json_object_get(params, "client_auth");
			json_t *nr = json_object_get(params, "num_rounds");

			j->fanin = json_is_integer(fi) ? (uint32_t)json_integer_value(fi) : 0;
			j->min_clients = json_is_integer(mc) ? (uint32_t)json_integer_value(mc) : 0;
			j->round_timeout_s =
			    json_is_integer(rt) ? (uint32_t)json_integer_value(rt) : 0;
			j->cred.required =
			    json_is_string(ca) && !strcmp(json_string_value(ca), "required");
			j->num_rounds = json_is_integer(nr) ? (uint32_t)json_integer_value(nr) : 0;
			secagg_from_stored(j, json_object_get(params, "secagg"),
					   cj->clients_per_round);
			j->schema_json = trib_strdup(cj->schema_json);
			err = j->schema_json ? rt__select_from_stored(j, params) : -ENOMEM;
		}
		if (!err) {
			char msg[256];

			json_object_set_new(params, "algorithm", json_string(cj->algorithm));
			err = rt_algo_parse(params, &j->algo, msg, sizeof(msg));
			if (err)
				why = "its algorithm parameters";
			j->cpr = cj->clients_per_round; /* flora's slots */
			/* After the algorithm: frl's header is I32. */
			err = err ? err : job_build_header(j);
			/*
			 * Then flora's, as at creation: rt_flora_bind() replaces the header (rank
			 * I32, or the base only with merge). Built the other way round a restarted
			 * flora job served its rank as F32 bits and, merged, a header naming the
			 * stacks over a base-only body.
			 */
			if (!err && j->algo.flora && rt_flora_bind(j, params))
				why = "its flora_pairs", err = -EINVAL;
		}
		json_decref(params);
		if (err) {
			trib_error("job %s: cannot load its schema: %s", cj->name,
				   why ? why : strerror(-err));
			rt__job_free(j);
			break;
		}
		snprintf(j->name, sizeof(j->name), "%s", cj->name);
		snprintf(j->token, sizeof(j->token), "%s", cj->token);
		snprintf(j->algorithm, sizeof(j->algorithm), "%s", cj->algorithm);
		j->db_id = cj->id;
		j->cpr = cj->clients_per_round;
		j->round = j->completed = cj->round;
		/* Its open round's keys may be in the store from before the restart. */
		rt_idem_mem_init(&j->idem_mem, j->round + 1);
		j->id = n->next_job_id++;
		err = rt_job_cred_load(n, j);
		if (err) {
			rt__job_free(j);
			break;
		}
		j->next = n->jobs;
		n->jobs = j;
		rt__opt_state_load(n, j);
		rt__fedau_load(n, j);
		rt__select_tasks_load(n, j);
		rt__job_life_load(n, j);
		trib_info("job %s: resumed at round %u (%s)", j->name, j->round,
			  rt_job_state_name(rt_job_state(j)));
	}
	for (size_t i = 0; i < count; i++)
		ctl_job_clear(&cjs[i]);
	trib_free(cjs);
	return err;
}

struct trib_blob *rt_job_model(struct rt_node *n, struct rt_job *j, uint32_t v)
{
	void *buf = NULL;
	size_t len = 0;
	struct trib_blob *b;
	int err;

	if (v == j->completed && j->model)
		return trib_blob_hold(j->model);
	if (v > j->completed) {
		errno = ENOENT;
		return NULL;
	}
	err = trib_store_read_model(n->opts.data_dir, j->name, v, &buf, &len);
	if (err) {
		errno = -err;
		return NULL;
	}
	b = trib_blob_new(len);
	if (b) {
		memcpy(b->data, buf, len);
		b->version = v;
		if (v == j->completed)
			j->model = trib_blob_hold(b);
	} else {
		errno = ENOMEM;
	}
	trib_free(buf);
	return b;
}

int rt_job_set_initial(struct rt_node *n, struct rt_job *j, const float *data)
{
	if (j->completed != 0 || j->round != 0 || j->open || j->inflight)
		return -EBUSY;
	return rt_job_set_initial_remote(n, j, data);
}

int rt_job_set_initial_remote(struct rt_node *n, struct rt_job *j, const float *data)
{
	struct trib_blob *b;
	int err;

	if (j->completed != 0)
		return -EBUSY;
	err = rt__model_write(n, j, data, 0, &b);
	if (err)
		return err;
	trib_blob_release(j->model);
	j->model = b;
	trib_info("job %s: initial model set", j->name);
	return 0;
}

