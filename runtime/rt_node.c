// SPDX-License-Identifier: MIT
/* The node runtime's state: jobs, rounds and their function trees, results into the model store. */
#include "rt_node.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl_plan.h"
#include "fn_dequant.h"
#include "fn_fedbuff.h"
#include "fn_robust.h"

/* Replacements per round before the runtime gives the round up. */
#define RT_MAX_RECOVERIES 16u
#include "fn_opt.h"
#include "ctl_store.h"
#include "ebpf_abi.h"
#include "ebpf_route.h"
#include "ebpf_stats.h"
#include "rt_agent.h"
#include "rt_gw.h"
#include "trib_store.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/* --- data planes --- */

const char *rt_dataplane_name(uint32_t dp)
{
	switch (dp) {
	case FN_DP_SHM_BPF:
		return "shm+bpf";
	case FN_DP_SHM_UNIX:
		return "shm+unix";
	case FN_DP_TCP:
		return "tcp";
	default:
		return "?";
	}
}

uint32_t rt_dataplane_from_name(const char *name)
{
	if (!strcmp(name, "shm+bpf"))
		return FN_DP_SHM_BPF;
	if (!strcmp(name, "shm+unix"))
		return FN_DP_SHM_UNIX;
	if (!strcmp(name, "tcp"))
		return FN_DP_TCP;
	return 0;
}

/* --- blobs --- */

struct rt_blob *rt_blob_new(size_t len)
{
	struct rt_blob *b = trib_malloc(sizeof(*b) + len);

	if (!b)
		return NULL;
	b->refs = 1;
	b->version = 0;
	b->len = len;
	return b;
}

struct rt_blob *rt_blob_hold(struct rt_blob *b)
{
	b->refs++;
	return b;
}

void rt_blob_release(struct rt_blob *b)
{
	if (b && --b->refs == 0)
		trib_free(b);
}

/* --- jobs --- */

struct rt_job *rt_job_find(struct rt_node *n, const char *name)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (!strcmp(j->name, name))
			return j;
	return NULL;
}

static void round_free(struct rt_node *n, struct rt_round *r, bool free_slots);
static void opt_state_load(struct rt_node *n, struct rt_job *j);

static void job_free(struct rt_job *j)
{
	while (j->inflight) {
		struct rt_round *r = j->inflight;

		j->inflight = r->next;
		round_free(NULL, r, false);
	}
	rt_blob_release(j->model);
	trib_free(j->opt_state);
	trib_free(j->schema);
	trib_free(j->schema_json);
	trib_free(j->st_header);
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
	s = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	if (!s)
		return NULL;
	/* jansson allocates with malloc; hand back a trib_ allocation. */
	{
		char *t = trib_strdup(s);

		free(s);
		return t;
	}
}

int rt_schema_from_json(json_t *arr, struct trib_tensor **out, size_t *nout, uint64_t *n_elem,
			const char **why)
{
	struct trib_tensor *t;
	size_t n = json_array_size(arr);
	uint64_t total = 0;

	if (!json_is_array(arr) || n == 0 || n > 4096) {
		*why = "tensors: must be a non-empty array (at most 4096 tensors)";
		return -EINVAL;
	}
	t = trib_calloc(n, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(arr, i);
		json_t *name = json_object_get(e, "name");
		json_t *shape = json_object_get(e, "shape");
		json_t *dtype = json_object_get(e, "dtype");
		uint64_t elems = 1;

		if (!json_is_object(e) || !json_is_string(name) || !json_is_array(shape)) {
			*why = "tensors: each entry needs a \"name\" string and a \"shape\" array";
			goto err_free;
		}
		if (dtype && (!json_is_string(dtype) || strcmp(json_string_value(dtype), "F32"))) {
			*why = "tensors: dtype must be \"F32\"";
			goto err_free;
		}
		if (json_string_length(name) == 0 || json_string_length(name) >= TRIB_ST_NAME_MAX ||
		    !strcmp(json_string_value(name), "__metadata__") ||
		    strlen(json_string_value(name)) != json_string_length(name)) {
			*why = "tensors: bad tensor name";
			goto err_free;
		}
		strcpy(t[i].name, json_string_value(name));
		for (size_t k = 0; k < i; k++) {
			if (!strcmp(t[k].name, t[i].name)) {
				*why = "tensors: duplicate tensor name";
				goto err_free;
			}
		}
		if (json_array_size(shape) > TRIB_ST_MAX_DIMS) {
			*why = "tensors: too many dimensions (at most 8)";
			goto err_free;
		}
		t[i].ndim = (uint32_t)json_array_size(shape);
		for (uint32_t d = 0; d < t[i].ndim; d++) {
			json_t *v = json_array_get(shape, d);

			if (!json_is_integer(v) || json_integer_value(v) < 1 ||
			    __builtin_mul_overflow(elems, (uint64_t)json_integer_value(v), &elems)) {
				*why = "tensors: shape entries must be positive integers";
				goto err_free;
			}
			t[i].shape[d] = (uint64_t)json_integer_value(v);
		}
		t[i].dtype = SHM_DTYPE_F32;
		t[i].n_elem = elems;
		if (__builtin_add_overflow(total, elems, &total) || total > (1ull << 32)) {
			*why = "tensors: model too large (at most 2^32 parameters)";
			goto err_free;
		}
	}
	*out = t;
	*nout = n;
	*n_elem = total;
	return 0;
err_free:
	trib_free(t);
	return -EINVAL;
}

static int job_build_header(struct rt_job *j)
{
	return trib_st_write_header(j->schema, j->nschema, NULL, &j->st_header, &j->st_header_len);
}

/* Make a blob holding a whole model file: header + @data (or zeros when NULL). */
static struct rt_blob *model_blob(struct rt_job *j, const float *data, uint32_t version)
{
	struct rt_blob *b = rt_blob_new(j->st_header_len + j->n_elem * sizeof(float));

	if (!b)
		return NULL;
	memcpy(b->data, j->st_header, j->st_header_len);
	if (data)
		memcpy(b->data + j->st_header_len, data, j->n_elem * sizeof(float));
	else
		memset(b->data + j->st_header_len, 0, j->n_elem * sizeof(float));
	b->version = version;
	return b;
}

static int store_blob(struct rt_node *n, struct rt_job *j, struct rt_blob *b)
{
	return trib_store_write_model(n->opts.data_dir, j->name, b->version, b->data,
				    j->st_header_len, b->data + j->st_header_len,
				    b->len - j->st_header_len, NULL, 0);
}

/* Model version @version of @j from @data (zeros if NULL), written to disk; *out is held. */
static int model_write(struct rt_node *n, struct rt_job *j, const float *data, uint32_t version,
		       struct rt_blob **out)
{
	struct rt_blob *b = model_blob(j, data, version);
	int err;

	if (!b)
		return -ENOMEM;
	err = store_blob(n, j, b);
	if (err) {
		rt_blob_release(b);
		return err;
	}
	*out = b;
	return 0;
}

int rt_job_create(struct rt_node *n, const struct rt_job_spec *spec, struct trib_tensor *schema,
		  size_t nschema, struct rt_job **out)
{
	const char *name = spec->name;
	struct ctl_job cj;
	struct rt_job *j;
	struct rt_blob *b;
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
	j->schema = schema;
	j->nschema = nschema;
	for (size_t i = 0; i < nschema; i++)
		j->n_elem += schema[i].n_elem;
	j->schema_json = schema_to_json(schema, nschema);
	err = -ENOMEM;
	if (!j->schema_json)
		goto err_free;
	err = job_build_header(j);
	if (err)
		goto err_free;
	err = trib_token_new(j->token, sizeof(j->token));
	if (err)
		goto err_free;

	/* The starting model (zeros) is version 0, on disk before the job exists for clients. */
	b = model_blob(j, NULL, 0);
	err = -ENOMEM;
	if (!b)
		goto err_free;
	err = store_blob(n, j, b);
	if (err) {
		trib_error("job %s: writing the initial model: %s", name, strerror(-err));
		rt_blob_release(b);
		goto err_free;
	}
	j->model = b;

	memset(&cj, 0, sizeof(cj));
	snprintf(cj.name, sizeof(cj.name), "%s", name);
	snprintf(cj.token, sizeof(cj.token), "%s", j->token);
	snprintf(cj.algorithm, sizeof(cj.algorithm), "%s", j->algorithm);
	cj.clients_per_round = spec->cpr;
	cj.schema_json = j->schema_json;
	{
		/* The algorithm's parameters as the client gave them, and the tree's. */
		json_t *p = spec->params ? json_deep_copy(spec->params) : json_object();
		char *params;

		json_object_set_new(p, "fan_in", json_integer(j->fanin));
		json_object_set_new(p, "min_clients", json_integer(j->min_clients));
		json_object_set_new(p, "round_timeout_s", json_integer(j->round_timeout_s));
		params = json_dumps(p, JSON_COMPACT);
		json_decref(p);
		err = -ENOMEM;
		if (params) {
			cj.params_json = params;
			err = ctl_store_job_create(n->store, &cj);
			free(params); /* jansson's */
		}
	}
	if (err)
		goto err_free; /* -EEXIST: the caller answers 409 */
	j->db_id = cj.id;
	j->id = n->next_job_id++;
	j->schema = schema;
	j->next = n->jobs;
	n->jobs = j;
	trib_info("job %s: created (%u clients per round, fan-in %s, %llu parameters in %zu tensors)",
		  name, j->cpr, j->fanin ? "fixed" : "planned", (unsigned long long)j->n_elem,
		  nschema);
	*out = j;
	return 0;

err_free:
	j->schema = NULL; /* still the caller's on failure */
	job_free(j);
	return err;
}

/* Load the jobs the store knows (after a restart). */
static int jobs_load(struct rt_node *n)
{
	struct ctl_job *cjs = NULL;
	size_t count = 0;
	int err = ctl_store_job_list(n->store, &cjs, &count);

	if (err)
		return err;
	for (size_t i = 0; i < count && !err; i++) {
		struct ctl_job *cj = &cjs[i];
		json_t *arr = json_loads(cj->schema_json, 0, NULL);
		json_t *params = cj->params_json ? json_loads(cj->params_json, 0, NULL) : NULL;
		const char *why = NULL;
		struct rt_job *j = trib_calloc(1, sizeof(*j));

		if (!j || !arr) {
			err = -ENOMEM;
			trib_free(j);
			json_decref(arr);
			json_decref(params);
			break;
		}
		err = rt_schema_from_json(arr, &j->schema, &j->nschema, &j->n_elem, &why);
		json_decref(arr);
		if (!err) {
			json_t *fi = json_object_get(params, "fan_in");
			json_t *mc = json_object_get(params, "min_clients");
			json_t *rt = json_object_get(params, "round_timeout_s");

			j->fanin = json_is_integer(fi) ? (uint32_t)json_integer_value(fi) : 0;
			j->min_clients = json_is_integer(mc) ? (uint32_t)json_integer_value(mc) : 0;
			j->round_timeout_s = json_is_integer(rt) ? (uint32_t)json_integer_value(rt) : 0;
			j->schema_json = trib_strdup(cj->schema_json);
			err = j->schema_json ? job_build_header(j) : -ENOMEM;
		}
		if (!err) {
			char msg[256];

			json_object_set_new(params, "algorithm", json_string(cj->algorithm));
			err = rt_algo_parse(params, &j->algo, msg, sizeof(msg));
			if (err)
				why = "its algorithm parameters";
		}
		json_decref(params);
		if (err) {
			trib_error("job %s: cannot load its schema: %s", cj->name,
				   why ? why : strerror(-err));
			job_free(j);
			break;
		}
		snprintf(j->name, sizeof(j->name), "%s", cj->name);
		snprintf(j->token, sizeof(j->token), "%s", cj->token);
		snprintf(j->algorithm, sizeof(j->algorithm), "%s", cj->algorithm);
		j->db_id = cj->id;
		j->cpr = cj->clients_per_round;
		j->round = j->completed = cj->round;
		j->id = n->next_job_id++;
		j->next = n->jobs;
		n->jobs = j;
		opt_state_load(n, j);
		trib_info("job %s: resumed at round %u", j->name, j->round);
	}
	for (size_t i = 0; i < count; i++)
		ctl_job_clear(&cjs[i]);
	trib_free(cjs);
	return err;
}

struct rt_blob *rt_job_model(struct rt_node *n, struct rt_job *j, uint32_t v)
{
	void *buf = NULL;
	size_t len = 0;
	struct rt_blob *b;
	int err;

	if (v == j->completed && j->model)
		return rt_blob_hold(j->model);
	if (v > j->completed) {
		errno = ENOENT;
		return NULL;
	}
	err = trib_store_read_model(n->opts.data_dir, j->name, v, &buf, &len);
	if (err) {
		errno = -err;
		return NULL;
	}
	b = rt_blob_new(len);
	if (b) {
		memcpy(b->data, buf, len);
		b->version = v;
		if (v == j->completed)
			j->model = rt_blob_hold(b);
	} else {
		errno = ENOMEM;
	}
	trib_free(buf);
	return b;
}

int rt_job_set_initial(struct rt_node *n, struct rt_job *j, const float *data)
{
	struct rt_blob *b;
	int err;

	if (j->completed != 0 || j->round != 0 || j->open || j->inflight)
		return -EBUSY;
	err = model_write(n, j, data, 0, &b);
	if (err)
		return err;
	rt_blob_release(j->model);
	j->model = b;
	trib_info("job %s: initial model set", j->name);
	return 0;
}

/* --- rounds and trees --- */

static uint64_t acc_slot_len(const struct rt_job *j)
{
	return SHM_ACC_HDR + j->n_elem * sizeof(float);
}

static int garbage_add(struct rt_round *r, uint64_t slot)
{
	if (!slot)
		return 0;
	if (r->ngarbage == r->capgarbage) {
		uint32_t ncap = r->capgarbage ? r->capgarbage * 2 : 8;
		uint64_t *ng = trib_realloc(r->garbage, ncap * sizeof(*ng));

		if (!ng)
			return -ENOMEM;
		r->garbage = ng;
		r->capgarbage = ncap;
	}
	r->garbage[r->ngarbage++] = slot;
	return 0;
}

struct warm_pick {
	struct rt_fn *fn;
};

static void pick_warm(struct rt_fn *fn, void *arg)
{
	struct warm_pick *p = arg;

	if (fn->state != RT_FN_WARM || fn->exited || fn->sock < 0)
		return;
	/* The most recently idle one: its pages and caches are the warmest. */
	if (!p->fn || fn->idle_ns > p->fn->idle_ns)
		p->fn = fn;
}

/* A warm function (reuse) or a new one (cold start), configured with @cfg. */
static int fn_acquire(struct rt_node *n, struct fn_config *cfg, const struct fn_params *par,
		      struct rt_fn **out)
{
	struct warm_pick p = { NULL };
	int err;

	rt_fnset_foreach(n->fns, pick_warm, &p);
	if (p.fn) {
		err = rt_fn_configure(p.fn, cfg, par);
		if (!err) {
			n->m.fn_reused++;
			*out = p.fn;
			return 0;
		}
		trib_warn("fn %u: reusing it failed (%s); starting a new one", p.fn->id,
			  strerror(-err));
	}
	cfg->fn_id = rt_fnset_reserve_ids(n->fns, 1);
	err = rt_fnset_spawn(n->fns, cfg, par, NULL, out);
	if (err)
		return err;
	n->m.fn_spawned++;
	rt_gw_watch_fn(n, *out);
	return 0;
}

static void cfg_init(struct rt_node *n, struct rt_round *r, struct fn_config *cfg, uint16_t role,
		     uint64_t acc)
{
	(void)n;
	memset(cfg, 0, sizeof(*cfg));
	cfg->version = FN_ABI_VERSION;
	cfg->kind = FN_MSG_CONFIG;
	cfg->job = r->job->id;
	cfg->round = r->round;
	cfg->role = role;
	cfg->algorithm = FN_ALGO_FEDAVG;
	cfg->n_elem = r->job->n_elem;
	cfg->acc_off = acc;
}

/*
 * Accumulator slot for a tree node. Its data starts 2 KiB plus a rotating
 * multiple of 64 bytes into the slot, so that accumulator and update bytes
 * (64 KiB aligned) never sit a multiple of 4 KiB apart (4K aliasing halves
 * the fold's speed). In tcp the accumulators are the functions' private
 * memory: nothing in the arena.
 */
static int acc_alloc(struct rt_node *n, struct rt_round *r, uint64_t *acc, uint64_t *data)
{
	static uint32_t skew;
	int err;

	*acc = *data = 0;
	if (n->dataplane == FN_DP_TCP)
		return 0;
	err = shm_slot_alloc(n->arena, acc_slot_len(r->job), acc);
	if (err)
		return err;
	*data = *acc + 2048 + 64 * (skew++ % 16);
	return 0;
}

/* Send an existing partial (again) to @to: a replacement, or a parent that changed. */
static int send_partial(struct rt_node *n, struct rt_fn *to, const struct shm_desc *p,
			const float *payload)
{
	struct shm_desc d = *p;

	d.dst = to->id;
	if (payload) {
		struct iovec iov = { (void *)payload, to->cfg.n_elem * sizeof(float) };

		return rt_fn_send_payload(to, &d, &iov, 1);
	}
	(void)n;
	return rt_fn_send(to, &d);
}

/*
 * Make sure a child's partial has reached @parent, its parent now: after a
 * parent was replaced, a partial delivered to the old one is sent again
 * (the parent folds each child once). In tcp the partial's bytes must be
 * known too; they come with the partial through the runtime.
 */
static void out_ensure(struct rt_node *n, bool has, const struct shm_desc *p,
		       const float *payload, uint32_t *routed_to, uint32_t parent)
{
	struct rt_fn *to;

	if (!has || !parent || *routed_to == parent)
		return;
	if (n->dataplane == FN_DP_TCP && !payload)
		return;
	to = rt_fnset_find(n->fns, parent);
	if (to && !send_partial(n, to, p, payload))
		*routed_to = parent;
}

/* Start (or restart) the top. Children done so far are sent to it again. */
static int top_start(struct rt_node *n, struct rt_round *r)
{
	struct fn_config cfg;
	struct rt_fn *fn;
	uint64_t acc, data;
	int err;

	err = acc_alloc(n, r, &acc, &data);
	if (err)
		return err;
	cfg_init(n, r, &cfg, FN_ROLE_TOP, acc);
	cfg.acc_data_off = data;
	cfg.parent = SHM_DST_RUNTIME;
	/* While the round is open the autoscaler may add leaves: the count comes by FLUSH. */
	cfg.expected = r->group ? (r->closed ? r->nmids : (r->nleaves + r->group - 1) / r->group) :
				  (r->closed ? r->started : r->nleaves);
	cfg.flags = r->released ? FN_CFG_FINAL : 0;
	if (n->agent)
		cfg.flags |= FN_CFG_SUM; /* the node's part: the round's top is on one node */
	err = fn_acquire(n, &cfg, &r->par, &fn);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	r->top = fn->id;
	r->top_acc = acc;
	fn->node = 0;
	/* A replacement: the partials that exist already go to it (it folds each once). */
	if (r->group) {
		for (uint32_t g = 0; g < r->nmids; g++) {
			struct rt_mid *m = &r->mids[g];

			out_ensure(n, m->has_partial, &m->partial, m->partial_payload,
				   &m->routed_to, fn->id);
		}
		return 0;
	}
	for (uint32_t i = 0; i < r->started; i++) {
		struct rt_leaf *l = &r->leaves[i];

		out_ensure(n, l->has_partial, &l->partial, l->partial_payload, &l->routed_to,
			   fn->id);
	}
	return 0;
}

/* Where leaf @i reports: its group's mid, or the top. */
static uint32_t leaf_parent(const struct rt_round *r, uint32_t i)
{
	return r->group ? r->mids[i / r->group].fn : r->top;
}

/* Start (or restart) mid @g; a restart gets the partials of its group's done leaves. */
static int mid_start(struct rt_node *n, struct rt_round *r, uint32_t g)
{
	struct rt_mid *m = &r->mids[g];
	struct fn_config cfg;
	struct rt_fn *fn;
	uint64_t acc, data;
	int err;

	err = acc_alloc(n, r, &acc, &data);
	if (err)
		return err;
	cfg_init(n, r, &cfg, FN_ROLE_MID, acc);
	cfg.acc_data_off = data;
	cfg.parent = r->top;
	cfg.index = g;
	cfg.expected = m->final ? m->nleaves : r->group;
	cfg.flags = m->final ? FN_CFG_FINAL : 0;
	err = fn_acquire(n, &cfg, &r->par, &fn);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	fn->node = g;
	m->fn = fn->id;
	m->parent = r->top;
	m->acc = acc;
	/* shm+bpf: sk_msg delivers its partial to the parent it was told. */
	m->routed_to = n->dataplane == FN_DP_SHM_BPF ? r->top : 0;
	for (uint32_t i = g * r->group; i < r->started && i < (g + 1) * r->group; i++) {
		struct rt_leaf *l = &r->leaves[i];

		out_ensure(n, l->has_partial, &l->partial, l->partial_payload, &l->routed_to,
			   fn->id);
	}
	return 0;
}

/* Mid @g's group has all its leaves: tell it how many. */
static void mid_finalise(struct rt_node *n, struct rt_round *r, uint32_t g)
{
	struct rt_mid *m = &r->mids[g];
	struct rt_fn *fn = rt_fnset_find(n->fns, m->fn);

	if (m->final)
		return;
	m->final = true;
	if (fn && !m->done)
		rt_fn_ctl(fn, FN_MSG_FLUSH, m->nleaves);
}

/* Send update @k of leaf @l to the function serving it. */
static int leaf_send(struct rt_node *n, struct rt_round *r, struct rt_leaf *l, uint32_t k)
{
	struct rt_fn *fn = rt_fnset_find(n->fns, l->fn);
	struct shm_desc d = l->ups[k];

	if (!fn)
		return -EPIPE;
	d.dst = fn->id;
	if (n->dataplane == FN_DP_TCP) {
		/* The baseline: the update's bytes are copied to the leaf, as flat f32. */
		const struct shm_seg *segs = shm_arena_ptr(n->arena, d.segs_off);
		struct iovec iov[64];
		float *flat = NULL;
		int err;

		if (d.nsegs > 64)
			return -E2BIG;
		for (uint32_t i = 0; i < d.nsegs; i++) {
			if (segs[i].dtype == SHM_DTYPE_F32)
				continue;
			/* Compressed: a copying system would expand it; so does the baseline. */
			flat = trib_calloc(r->job->n_elem ? r->job->n_elem : 1, sizeof(float));
			if (!flat)
				return -ENOMEM;
			for (uint32_t k = 0; k < d.nsegs; k++)
				fn_dequant_fold(flat + segs[k].dst_elem,
						shm_arena_ptr(n->arena, segs[k].src_off),
						segs[k].dtype, segs[k].scale, 1.0f,
						(size_t)segs[k].n_elem);
			iov[0].iov_base = flat;
			iov[0].iov_len = r->job->n_elem * sizeof(float);
			err = rt_fn_send_payload(fn, &d, iov, 1);
			trib_free(flat);
			return err;
		}
		for (uint32_t i = 0; i < d.nsegs; i++) {
			iov[i].iov_base = shm_arena_ptr(n->arena, segs[i].src_off);
			iov[i].iov_len = segs[i].n_elem * sizeof(float);
		}
		return rt_fn_send_payload(fn, &d, iov, (int)d.nsegs);
	}
	return rt_fn_send(fn, &d);
}

/* Start (or restart) leaf @i; a restart gets every update the leaf was sent, again. */
static int leaf_start(struct rt_node *n, struct rt_round *r, uint32_t i)
{
	struct rt_leaf *l = &r->leaves[i];
	struct fn_config cfg;
	struct rt_fn *fn;
	uint64_t acc, data;
	int err;

	err = acc_alloc(n, r, &acc, &data);
	if (err)
		return err;
	cfg_init(n, r, &cfg, FN_ROLE_LEAF, acc);
	cfg.acc_data_off = data;
	cfg.parent = leaf_parent(r, i);
	cfg.expected = l->expected;
	cfg.flags = FN_CFG_FINAL;
	cfg.index = r->group ? i % r->group : i; /* its place among its parent's children */
	err = fn_acquire(n, &cfg, &r->par, &fn);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	l->fn = fn->id;
	l->parent = cfg.parent;
	l->acc = acc;
	/* shm+bpf: sk_msg delivers its partial to the parent it was told. */
	l->routed_to = n->dataplane == FN_DP_SHM_BPF ? cfg.parent : 0;
	fn->node = i;
	for (uint32_t k = 0; k < l->sent; k++) {
		err = leaf_send(n, r, l, k);
		if (err)
			return err;
	}
	return 0;
}

static void round_free(struct rt_node *n, struct rt_round *r, bool free_slots)
{
	free_slots = free_slots && n;
	if (free_slots) {
		for (uint32_t i = 0; i < r->ngarbage; i++)
			shm_slot_free(n->arena, r->garbage[i]);
		if (r->top_acc)
			shm_slot_free(n->arena, r->top_acc);
		if (r->model_slot)
			shm_slot_free(n->arena, r->model_slot);
		if (r->state_slot)
			shm_slot_free(n->arena, r->state_slot);
	}
	for (uint32_t i = 0; i < r->started; i++) {
		struct rt_leaf *l = &r->leaves[i];

		if (free_slots) {
			if (l->acc)
				shm_slot_free(n->arena, l->acc);
			if (!l->done)
				for (uint32_t k = 0; k < l->sent; k++)
					shm_slot_free(n->arena, l->ups[k].slot_off);
		}
		trib_free(l->ups);
		trib_free(l->partial_payload);
	}
	if (r->rups) {
		for (uint32_t i = 0; free_slots && i < r->received; i++)
			shm_slot_free(n->arena, r->rups[i].slot_off);
		if (free_slots && r->out_slot)
			shm_slot_free(n->arena, r->out_slot);
		if (free_slots && r->task_slot)
			shm_slot_free(n->arena, r->task_slot);
	}
	trib_free(r->rups);
	trib_free(r->shard_fn);
	trib_free(r->shard_done);
	for (uint32_t g = 0; g < r->nmids; g++) {
		if (free_slots && r->mids[g].acc)
			shm_slot_free(n->arena, r->mids[g].acc);
		trib_free(r->mids[g].partial_payload);
	}
	trib_free(r->mids);
	trib_free(r->leaves);
	trib_free(r->garbage);
	trib_free(r->result_payload);
	trib_free(r);
}

static void plan_round(struct rt_node *n, struct rt_job *j, struct ctl_plan *plan)
{
	uint64_t used = 0, total = 0;
	uint32_t live = 0;
	struct ctl_plan_in in = {
		.clients = j->cpr,
		.arrival_rate = j->arrival_rate,
		.model_bytes = j->n_elem * sizeof(float),
		.fold_bw = CTL_FOLD_BW_DEFAULT,
		.cores = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN),
		.pinned_fanin = j->fanin,
	};

	shm_arena_usage(n->arena, &used, &total, &live);
	in.arena_free = total - used;
	ctl_plan_tree(&in, plan);
	n->m.plans++;
	trib_info("job %s round %u: plan: %u leaves of fan-in %u (%s; inputs: %u clients, "
		  "%.1f updates/s measured, %.1f MB model, %u cores)",
		  j->name, j->round, plan->leaves, plan->fanin, plan->why, in.clients,
		  in.arrival_rate, (double)in.model_bytes / 1e6, in.cores);
}

/*
 * What the top's server step reads: a copy of the current model, and the
 * optimiser state, in arena slots the runtime owns for the round.
 */
static int server_slots(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	const struct fn_params *p = &j->algo.par;
	uint64_t me, ve;
	int err;

	r->par = *p;
	if (!j->algo.needs_model)
		return 0;
	err = shm_slot_alloc(n->arena, j->n_elem * sizeof(float), &r->model_slot);
	if (err)
		return err;
	r->par.model_off = r->model_slot;
	fn_opt_state_elems(p->server, j->n_elem, &me, &ve);
	r->state_size = FN_OPT_STATE_HDR + (me + ve) * sizeof(float);
	err = shm_slot_alloc(n->arena, 2 * r->state_size, &r->state_slot);
	if (err)
		return err;
	r->par.state_off = r->state_slot;
	return 0;
}

/*
 * Fill the server step's inputs with what round r starts from: model
 * version r (the previous round's output, now written) and the optimiser
 * state after it. Called only once round r - 1 has committed.
 */
static int server_inputs_fill(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	const struct fn_params *p = &j->algo.par;
	uint64_t me, ve;
	int err;

	if (!j->model) {
		struct rt_blob *b = rt_job_model(n, j, j->completed);

		if (!b)
			return -errno;
		rt_blob_release(b);
	}
	memcpy(shm_arena_ptr(n->arena, r->model_slot), j->model->data + j->st_header_len,
	       j->n_elem * sizeof(float));
	if (j->opt_state && j->opt_state_len == r->state_size) {
		memcpy(shm_arena_ptr(n->arena, r->state_slot), j->opt_state, r->state_size);
		return 0;
	}
	fn_opt_state_elems(p->server, j->n_elem, &me, &ve);
	{
		/* A fresh state: m = 0, v = tau^2, written by the kernels' own serialiser. */
		struct fn_opt_params op = {
			.kind = p->server, .server_lr = p->server_lr, .momentum = p->momentum,
			.beta1 = p->beta1, .beta2 = p->beta2, .tau = p->tau,
		};
		struct fn_opt_state os;
		float *m = me ? trib_malloc(me * sizeof(float)) : NULL;
		float *v = ve ? trib_malloc(ve * sizeof(float)) : NULL;

		err = (me && !m) || (ve && !v) ? -ENOMEM : fn_opt_state_init(&os, &op, j->n_elem, m, v);
		if (!err)
			err = fn_opt_state_save(&os, shm_arena_ptr(n->arena, r->state_slot),
						r->state_size);
		trib_free(m);
		trib_free(v);
	}
	return err;
}

static void job_complete_rounds(struct rt_node *n, struct rt_job *j);

/* (Re)start shard @i of a robust round on a warm or new function. */
static int shard_start(struct rt_node *n, struct rt_round *r, uint32_t i)
{
	struct fn_config cfg;
	struct fn_params par = r->par;
	struct rt_fn *fn;
	int err;

	cfg_init(n, r, &cfg, FN_ROLE_SHARD, r->out_slot);
	cfg.acc_data_off = r->out_slot + 2048;
	cfg.parent = SHM_DST_RUNTIME;
	cfg.expected = r->received;
	cfg.flags = FN_CFG_FINAL;
	cfg.index = i;
	par.state_off = r->task_slot; /* a shard's params point at its task */
	err = fn_acquire(n, &cfg, &par, &fn);
	if (err)
		return err;
	fn->node = i;
	r->shard_fn[i] = fn->id;
	r->shard_done[i] = false;
	return 0;
}

/*
 * A robust round is closed: every update is in the arena. Lay out the task
 * (the update descriptors, Krum's matrices and selection) and start one
 * shard per core over equal coordinate ranges.
 */
static int robust_start(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	uint32_t k = r->received, S;
	uint64_t need, data;
	struct fn_shard_task *t;
	int err;

	S = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	if (S < 1)
		S = 1;
	if (S > j->n_elem)
		S = (uint32_t)j->n_elem;
	need = sizeof(*t) + (uint64_t)k * sizeof(struct shm_desc) +
	       (uint64_t)S * k * k * sizeof(double) + (uint64_t)k * sizeof(uint32_t) + 64;
	err = shm_slot_alloc(n->arena, need, &r->task_slot);
	if (!err)
		err = shm_slot_alloc(n->arena, SHM_ACC_HDR + j->n_elem * sizeof(float),
				     &r->out_slot);
	if (err)
		return err;
	r->nshards = S;
	r->shard_fn = trib_calloc(S, sizeof(*r->shard_fn));
	r->shard_done = trib_calloc(S, sizeof(*r->shard_done));
	if (!r->shard_fn || !r->shard_done)
		return -ENOMEM;
	t = shm_arena_ptr(n->arena, r->task_slot);
	memset(t, 0, sizeof(*t));
	t->version = FN_ABI_VERSION;
	t->rule = j->algo.rule;
	t->k = k;
	t->shards = S;
	t->phase = 1;
	t->f = j->algo.f;
	t->m = j->algo.m;
	t->trim = j->algo.trim;
	data = r->task_slot + 128;
	t->descs_off = data;
	memcpy(shm_arena_ptr(n->arena, data), r->rups, (size_t)k * sizeof(struct shm_desc));
	data += (uint64_t)k * sizeof(struct shm_desc);
	t->dmat_off = data;
	data += (uint64_t)S * k * k * sizeof(double);
	t->sel_off = data;
	trib_info("job %s round %u: %s over %u updates in %u shards", j->name, r->round,
		  j->algo.name, k, S);
	for (uint32_t i = 0; i < S; i++) {
		err = shard_start(n, r, i);
		if (err)
			return err;
	}
	return 0;
}

/* Every shard of the phase is done: Krum selects and goes on, the rest is the model. */
static void robust_phase_done(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	struct fn_shard_task *t = shm_arena_ptr(n->arena, r->task_slot);
	struct shm_seg *seg;

	if (t->rule == FN_RULE_KRUM && t->phase == 1) {
		size_t kk = (size_t)t->k * t->k;
		double *sum = trib_calloc(kk, sizeof(double));
		double *scratch = trib_malloc(2 * t->k * sizeof(double));
		const double *parts = shm_arena_ptr(n->arena, t->dmat_off);
		int err = -ENOMEM;

		if (sum && scratch) {
			/* Krum's distances are sums of the shards' partial distances. */
			for (uint32_t s = 0; s < t->shards; s++)
				for (size_t x = 0; x < kk; x++)
					sum[x] += parts[s * kk + x];
			err = fn_krum_select(sum, t->k, t->f, t->m,
					     shm_arena_ptr(n->arena, t->sel_off), NULL, scratch);
		}
		trib_free(sum);
		trib_free(scratch);
		if (!err) {
			const uint32_t *sel = shm_arena_ptr(n->arena, t->sel_off);

			trib_info("job %s round %u: krum selected %u of %u updates (first: %u)",
				  j->name, r->round, t->m, t->k, sel[0]);
			t->phase = 2;
			r->ndone = 0;
			for (uint32_t i = 0; i < r->nshards && !err; i++)
				err = shard_start(n, r, i);
		}
		if (err)
			trib_error("job %s round %u: krum: %s", j->name, r->round, strerror(-err));
		return;
	}
	seg = shm_arena_ptr(n->arena, r->out_slot);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = r->out_slot + 2048;
	seg->n_elem = j->n_elem;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;
	memset(&r->result, 0, sizeof(r->result));
	r->result.version = SHM_ABI_VERSION;
	r->result.kind = SHM_DESC_RESULT;
	r->result.job = j->id;
	r->result.round = r->round;
	r->result.nsegs = 1;
	r->result.slot_off = r->out_slot;
	r->result.segs_off = r->out_slot;
	r->result.weight = r->received;
	r->result.count = r->received;
	/* The output slot stays r->out_slot's: round_free gives it back after the commit. */
	r->has_result = true;
	job_complete_rounds(n, j);
}

/*
 * A closed round's top may finish once it knows its final child count and,
 * when it steps from the previous model, once that model exists: rounds
 * overlap (the next opens as soon as one is full), so round r's top waits
 * for round r - 1 to commit before it gets its FLUSH.
 */
static void top_release(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	struct rt_fn *top;

	if (!r->closed || r->released)
		return;
	if (j->algo.needs_model) {
		int err;

		if (r->round != j->completed)
			return; /* again when the previous round commits */
		err = server_inputs_fill(n, j, r);
		if (err) {
			trib_error("job %s round %u: preparing the server step: %s", j->name, r->round,
				   strerror(-err));
			return;
		}
	}
	r->released = true;
	if (j->algo.rule) {
		int err = robust_start(n, j, r);

		if (err)
			trib_error("job %s round %u: starting the shards: %s", j->name, r->round,
				   strerror(-err));
		return;
	}
	top = rt_fnset_find(n->fns, r->top);
	if (top)
		rt_fn_ctl(top, FN_MSG_FLUSH, r->group ? r->nmids : r->started);
}

/* The optimiser state saved with model version v: DATA_DIR/jobs/{job}/server-state-v{v}.bin. */
static void opt_state_path(struct rt_node *n, struct rt_job *j, uint32_t v, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/jobs/%s/server-state-v%u.bin", n->opts.data_dir, j->name, v);
}

static void opt_state_load(struct rt_node *n, struct rt_job *j)
{
	char path[PATH_MAX];
	FILE *f;
	long len;

	if (!j->algo.needs_model)
		return;
	opt_state_path(n, j, j->completed, path, sizeof(path));
	f = fopen(path, "rb");
	if (!f)
		return; /* version 0, or a job whose state starts fresh */
	if (!fseek(f, 0, SEEK_END) && (len = ftell(f)) > 0 && !fseek(f, 0, SEEK_SET)) {
		j->opt_state = trib_malloc((size_t)len);
		if (j->opt_state && fread(j->opt_state, 1, (size_t)len, f) == (size_t)len) {
			j->opt_state_len = (size_t)len;
		} else {
			trib_free(j->opt_state);
			j->opt_state = NULL;
		}
	}
	fclose(f);
	if (!j->opt_state)
		trib_error("job %s: could not read %s; the optimiser state starts fresh", j->name,
			   path);
}

/*
 * Keep the state the top wrote for this round: on disk first (with the
 * version it belongs to), then in memory. The model file, written after it,
 * is the commit point; a crash between the two leaves a state file for a
 * version that is never served, and the previous one still loads.
 */
static int opt_state_commit(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	char path[PATH_MAX];
	const uint8_t *out;
	uint8_t *copy;
	int err;

	if (!r->state_slot)
		return 0;
	out = (const uint8_t *)shm_arena_ptr(n->arena, r->state_slot) + r->state_size;
	opt_state_path(n, j, r->round + 1, path, sizeof(path));
	err = trib_write_file_atomic(path, out, r->state_size, 0600);
	if (err)
		return err;
	copy = trib_malloc(r->state_size);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, out, r->state_size);
	trib_free(j->opt_state);
	j->opt_state = copy;
	j->opt_state_len = r->state_size;
	opt_state_path(n, j, r->round, path, sizeof(path));
	unlink(path);
	return 0;
}

static struct rt_round *round_open(struct rt_node *n, struct rt_job *j, int *errp)
{
	struct rt_round *r = trib_calloc(1, sizeof(*r));
	struct ctl_plan plan;
	int err;

	if (!r) {
		*errp = -ENOMEM;
		return NULL;
	}
	plan_round(n, j, &plan);
	r->job = j;
	r->round = j->round;
	r->fanin = plan.fanin;
	r->nleaves = plan.leaves;
	r->capleaves = plan.leaves;
	r->group = plan.levels == 3 ? plan.group : 0;
	if (!plan.fits)
		trib_warn("job %s round %u: the plan may not fit the free arena; updates will wait "
			  "(503) while leaves hand off early", j->name, j->round);
	err = server_slots(n, j, r);
	if (err) {
		round_free(n, r, true);
		*errp = err;
		return NULL;
	}
	r->open_ns = trib_now_ns();
	r->leaves = trib_calloc(r->capleaves, sizeof(*r->leaves));
	if (!r->leaves) {
		trib_free(r);
		*errp = -ENOMEM;
		return NULL;
	}
	if (j->algo.rule) {
		/* Exact robust rules: keep every update; shards run when the round closes. */
		r->rups = trib_calloc(j->cpr, sizeof(*r->rups));
		err = r->rups ? 0 : -ENOMEM;
	} else {
		err = top_start(n, r);
	}
	if (err) {
		round_free(n, r, true);
		*errp = err;
		return NULL;
	}
	{
		struct rt_round **pp = &j->inflight;

		while (*pp)
			pp = &(*pp)->next;
		*pp = r;
	}
	j->open = r;
	return r;
}

/* Leaf @l takes no more updates than it has: tell its function. */
static void leaf_cut(struct rt_node *n, struct rt_leaf *l)
{
	struct rt_fn *fn = rt_fnset_find(n->fns, l->fn);

	l->expected = l->sent;
	if (fn && !l->done)
		rt_fn_ctl(fn, FN_MSG_FLUSH, l->expected);
}

/* The open round takes no more updates; the next opens at once. */
static void round_close(struct rt_node *n, struct rt_job *j, struct rt_round *r, bool deadline)
{
	r->closed = true;
	j->open = NULL;
	j->round++;
	if (n->agent && r->started && r->leaves[r->started - 1].sent <
					 r->leaves[r->started - 1].expected)
		leaf_cut(n, &r->leaves[r->started - 1]); /* the cluster closed it at this count */
	if (deadline) {
		/* Fewer updates than planned: the last leaf folds what it has. */
		n->m.deadline_closes++;
		if (r->started && r->leaves[r->started - 1].sent < r->leaves[r->started - 1].expected)
			leaf_cut(n, &r->leaves[r->started - 1]);
		trib_info("job %s round %u: closed at its deadline with %u of %u updates in %u "
			  "leaves", j->name, r->round, r->received, j->cpr, r->started);
	}
	/* Now the number of leaves is final: the top hands off after that many partials. */
	if (r->group && r->nmids)
		mid_finalise(n, r, r->nmids - 1);
	top_release(n, j, r);
	if (n->agent) {
		j->xtarget = UINT32_MAX;
		rt_agent_on_advance(n, j);
	}
}

/*
 * The autoscaler, on the eBPF counters: when the leaf taking updates has a
 * queue (descriptors delivered but not yet taken) of CTL_SPLIT_DEPTH or more,
 * arrivals outrun its folding: it keeps what it has and a new leaf takes the
 * next updates, folding beside it. Idle leaves retire by themselves (warm,
 * then gone after --warm-s). A job that fixed its fan-in is left alone, and
 * without eBPF there is no queue depth to act on.
 */
static bool leaf_should_split(struct rt_node *n, struct rt_round *r, struct rt_leaf *l)
{
	struct ebpf_fn_sample smp;

	if (!n->route || r->job->fanin || l->sent == 0 || l->sent >= l->expected)
		return false;
	if (ebpf_stats_read(ebpf_route_stats(n->route), l->fn, &smp))
		return false;
	if (smp.depth < CTL_SPLIT_DEPTH)
		return false;
	n->m.scale_outs++;
	trib_info("job %s round %u: autoscaler: leaf %u (fn %u) has %llu descriptors waiting "
		  "(>= %u) after %u of %u updates: scale out, a new leaf takes the next ones",
		  r->job->name, r->round, r->cur, l->fn, (unsigned long long)smp.depth,
		  CTL_SPLIT_DEPTH, l->sent, l->expected);
	return true;
}

/* The leaf that takes the next update: the current one, or a new one. */
static int leaf_for_next(struct rt_node *n, struct rt_job *j, struct rt_round *r,
			 struct rt_leaf **out)
{
	struct rt_leaf *l = r->started ? &r->leaves[r->cur] : NULL;
	uint32_t i;
	int err;

	if (l && l->sent < l->expected && !leaf_should_split(n, r, l)) {
		*out = l;
		return 0;
	}
	if (l && l->sent < l->expected)
		leaf_cut(n, l);
	i = r->started;
	if (i == r->capleaves) {
		uint32_t ncap = r->capleaves * 2;
		struct rt_leaf *nl = trib_realloc(r->leaves, ncap * sizeof(*nl));

		if (!nl)
			return -ENOMEM;
		memset(nl + r->capleaves, 0, (ncap - r->capleaves) * sizeof(*nl));
		r->leaves = nl;
		r->capleaves = ncap;
	}
	if (r->group && i / r->group >= r->nmids) {
		uint32_t g = i / r->group;

		if (g == r->capmids) {
			uint32_t ncap = r->capmids ? r->capmids * 2 : 4;
			struct rt_mid *nm = trib_realloc(r->mids, ncap * sizeof(*nm));

			if (!nm)
				return -ENOMEM;
			memset(nm + r->capmids, 0, (ncap - r->capmids) * sizeof(*nm));
			r->mids = nm;
			r->capmids = ncap;
		}
		if (g)
			mid_finalise(n, r, g - 1);
		memset(&r->mids[g], 0, sizeof(r->mids[g]));
		err = mid_start(n, r, g);
		if (err)
			return err;
		r->nmids = g + 1;
	}
	l = &r->leaves[i];
	memset(l, 0, sizeof(*l));
	{
		/* Even blocks over the leaves still planned: they differ by at most one. */
		uint32_t left = j->cpr - r->received;
		uint32_t lv = r->nleaves > r->started ? r->nleaves - r->started : 1;
		uint32_t blk = (left + lv - 1) / lv;

		l->expected = blk < r->fanin ? blk : r->fanin;
		if (l->expected > left)
			l->expected = left;
	}
	l->ups = trib_calloc(l->expected, sizeof(*l->ups));
	if (!l->ups)
		return -ENOMEM;
	err = leaf_start(n, r, i);
	if (err) {
		trib_free(l->ups);
		memset(l, 0, sizeof(*l));
		return err;
	}
	r->started = i + 1;
	if (r->group)
		r->mids[i / r->group].nleaves++;
	if (r->started > r->nleaves)
		r->nleaves = r->started;
	r->cur = i;
	*out = l;
	return 0;
}

void rt_job_relieve(struct rt_node *n, struct rt_job *j)
{
	struct rt_round *r = j->open;
	struct rt_leaf *l;

	if (!r || j->algo.rule || !r->started)
		return;
	l = &r->leaves[r->cur];
	if (l->done || l->sent == 0 || l->sent >= l->expected)
		return;
	trib_info("job %s round %u: arena full: leaf %u hands off after %u of %u updates to "
		  "free their slots", j->name, r->round, r->cur, l->sent, l->expected);
	leaf_cut(n, l);
}

int rt_job_accept(struct rt_node *n, struct rt_job *j, uint32_t round, uint64_t slot_off,
		  uint64_t segs_off, uint32_t nsegs, double weight, uint32_t *seq)
{
	struct rt_round *r = j->open;
	struct rt_leaf *l;
	struct shm_desc d;
	float fold_scale = 0;
	uint32_t s;
	int err;

	if (j->algo.async) {
		/* FedBuff: @round is the version the update was trained from. */
		if (round > j->round || j->round - round > j->algo.max_staleness)
			return -ESTALE;
		fold_scale = (float)fn_fedbuff_staleness_weight(j->round - round);
		round = j->round;
	} else if (round != j->round) {
		return -ESTALE;
	}
	if (!r) {
		r = round_open(n, j, &err);
		if (!r)
			return err;
	}
	s = r->received;
	if (j->algo.rule) {
		memset(&d, 0, sizeof(d));
		d.version = SHM_ABI_VERSION;
		d.kind = SHM_DESC_UPDATE;
		d.job = j->id;
		d.round = round;
		d.nsegs = nsegs;
		d.slot_off = slot_off;
		d.segs_off = segs_off;
		d.weight = weight;
		d.count = 1;
		d.seq = s;
		r->rups[s] = d;
		r->received++;
		j->accepted_total++;
		n->m.accepted++;
		*seq = s;
		if (r->received == (n->agent ? j->xtarget : j->cpr))
			round_close(n, j, r, false);
		return 0;
	}
	err = leaf_for_next(n, j, r, &l);
	if (err)
		return err;
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = SHM_DESC_UPDATE;
	d.src = SHM_DST_RUNTIME;
	d.job = j->id;
	d.round = round;
	d.nsegs = nsegs;
	d.slot_off = slot_off;
	d.segs_off = segs_off;
	d.weight = weight;
	d.count = 1;
	d.seq = s;
	d.fold_scale = fold_scale;
	l->ups[l->sent] = d;
	err = leaf_send(n, r, l, l->sent);
	if (err)
		return err;
	l->sent++;
	r->received++;
	j->accepted_total++;
	n->m.accepted++;
	*seq = s;
	if (r->received == (n->agent ? j->xtarget : j->cpr))
		round_close(n, j, r, false);
	return 0;
}

static void round_hist_add(struct rt_metrics *m, double s)
{
	static const double bounds[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
	size_t i;

	for (i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
		if (s <= bounds[i])
			break;
	m->round_hist[i]++;
	m->round_sum_s += s;
}

/* Write the models of finished rounds, oldest first, as long as they are next in line. */
static void job_complete_rounds(struct rt_node *n, struct rt_job *j)
{
	if (n->agent) {
		/* The node's sum goes to the round's top; the model comes from the controller. */
		for (struct rt_round *r = j->inflight; r; r = r->next)
			if (r->has_result)
				rt_agent_on_local_sum(n, j, r);
		return;
	}
	while (j->inflight && j->inflight->has_result && j->inflight->round == j->completed) {
		struct rt_round *r = j->inflight;
		const struct shm_desc *d = &r->result;
		const float *model = r->result_payload;
		struct ctl_round rec;
		struct rt_blob *b;
		double secs;
		int err;

		if (!model) {
			const struct shm_seg *seg = shm_arena_ptr(n->arena, d->segs_off);

			model = shm_arena_ptr(n->arena, seg->src_off);
		}
		err = opt_state_commit(n, j, r);
		if (err) {
			trib_error("job %s round %u: saving the optimiser state: %s", j->name,
				   r->round, strerror(-err));
			return;
		}
		b = model_blob(j, model, r->round + 1);
		if (!b) {
			trib_error("job %s round %u: no memory for the model", j->name, r->round);
			return;
		}
		err = store_blob(n, j, b);
		if (err) {
			trib_error("job %s round %u: writing the model: %s", j->name, r->round,
				   strerror(-err));
			rt_blob_release(b);
			return;
		}
		err = ctl_store_round_advance(n->store, j->db_id, j->completed, j->completed + 1);
		if (err)
			trib_error("job %s round %u: recording the round: %s", j->name, r->round,
				   strerror(-err));
		secs = (double)(trib_now_ns() - r->open_ns) / 1e9;
		memset(&rec, 0, sizeof(rec));
		rec.job_id = j->db_id;
		rec.round = r->round;
		rec.closed_unix = (int64_t)time(NULL);
		rec.n_updates = d->count;
		rec.total_weight = d->weight;
		rec.duration_ms = (uint64_t)(secs * 1000);
		ctl_store_round_record(n->store, &rec);
		rt_blob_release(j->model);
		j->model = b;
		j->completed++;
		j->last_round_ms = rec.duration_ms;
		/* The planner's input: arrivals per second over this round, smoothed. */
		if (secs > 0) {
			double rate = r->received / secs;

			j->arrival_rate = j->arrival_rate > 0 ? 0.5 * j->arrival_rate + 0.5 * rate :
								rate;
		}
		n->m.rounds_done++;
		round_hist_add(&n->m, secs);
		trib_info("job %s round %u: %u updates (weight %g) aggregated in %.3f s; model v%u%s",
			  j->name, r->round, d->count, d->weight, secs, j->completed,
			  r->recoveries ? " (after replacing failed functions)" : "");
		j->inflight = r->next;
		/* Committed: the partials, accumulators and leftovers go back to the arena. */
		round_free(n, r, true);
		rt_gw_model_ready(n, j);
		/* The next round's top may have been waiting for this model. */
		if (j->inflight)
			top_release(n, j, j->inflight);
	}
}

/* --- a cluster's node (rt_agent.c) --- */

uint64_t rt_job_acc_len(const struct rt_job *j)
{
	return acc_slot_len(j);
}

int rt_node_fold_start(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t expected,
		       struct rt_fn **out, uint64_t *accp)
{
	struct rt_round tmp;
	struct fn_config cfg;
	struct fn_params par;
	uint64_t acc, data;
	int err;

	memset(&tmp, 0, sizeof(tmp));
	tmp.job = j;
	tmp.round = round;
	err = acc_alloc(n, &tmp, &acc, &data);
	if (err)
		return err;
	cfg_init(n, &tmp, &cfg, FN_ROLE_TOP, acc);
	cfg.acc_data_off = data;
	cfg.parent = SHM_DST_RUNTIME;
	cfg.expected = expected;
	cfg.flags = FN_CFG_FINAL;
	cfg.dataplane = n->dataplane;
	/* Plain FedAvg on the nodes' sums: the top divides by their total weight. */
	par = j->algo.par;
	par.flags &= ~(uint32_t)FN_PAR_CLIP;
	err = fn_acquire(n, &cfg, &par, out);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	(*out)->node = 0;
	*accp = acc;
	return 0;
}

const float *rt_round_sum(struct rt_node *n, const struct rt_round *r)
{
	const struct shm_seg *seg;

	if (r->result_payload)
		return r->result_payload;
	seg = shm_arena_ptr(n->arena, r->result.segs_off);
	return shm_arena_ptr(n->arena, seg->src_off);
}

void rt_job_set_target(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t target)
{
	if (j->round != round)
		return; /* again when the local round gets there (rt_agent_on_advance) */
	j->xtarget = target;
	if (!j->open) {
		if (target)
			return; /* its updates are still on their way here */
		/* Nothing of this round folds here: the next one opens. */
		j->round++;
		j->xtarget = UINT32_MAX;
		rt_agent_on_advance(n, j);
		return;
	}
	if (j->open->received > target)
		trib_error("job %s round %u: %u updates folded here, but the controller counted %u",
			   j->name, round, j->open->received, target);
	if (j->open->received >= target)
		round_close(n, j, j->open, false);
}

int rt_job_commit_remote(struct rt_node *n, struct rt_job *j, uint32_t version,
			 const float *model, uint32_t updates, double weight)
{
	struct rt_blob *b;
	struct ctl_round rec;
	int err;

	if (version <= j->completed)
		return 0; /* had it */
	err = model_write(n, j, model, version, &b);
	if (err)
		return err;
	memset(&rec, 0, sizeof(rec));
	rec.job_id = j->db_id;
	rec.round = version - 1;
	rec.closed_unix = (int64_t)time(NULL);
	rec.n_updates = updates;
	rec.total_weight = weight;
	ctl_store_round_record(n->store, &rec);
	rt_blob_release(j->model);
	j->model = b;
	/* This node's trees of the rounds up to this one are done with. */
	while (j->inflight && j->inflight->round < version && j->inflight != j->open) {
		struct rt_round *r = j->inflight;
		double secs = (double)(trib_now_ns() - r->open_ns) / 1e9;

		j->inflight = r->next;
		n->m.rounds_done++;
		round_hist_add(&n->m, secs);
		j->last_round_ms = (uint64_t)(secs * 1000);
		round_free(n, r, true);
	}
	j->completed = version;
	if (j->round < version) {
		/* Joined late, or had nothing of those rounds. */
		j->round = version;
		j->xtarget = UINT32_MAX;
	}
	trib_info("job %s: model v%u from the cluster (%u updates, weight %g)", j->name, version,
		  updates, weight);
	rt_gw_model_ready(n, j);
	return 0;
}

static struct rt_round *round_find(struct rt_node *n, uint32_t job_id, uint32_t round,
				   struct rt_job **jp)
{
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		if (j->id != job_id)
			continue;
		*jp = j;
		for (struct rt_round *r = j->inflight; r; r = r->next)
			if (r->round == round)
				return r;
		return NULL;
	}
	return NULL;
}

/* A leaf's or the top's DONE: what it handed off now exists. */
static void on_done(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d)
{
	struct rt_job *j = NULL;
	struct rt_round *r = round_find(n, d->job, d->round, &j);

	fn->state = RT_FN_WARM;
	fn->busy = false;
	fn->idle_ns = trib_now_ns();
	if (!r || fn->cfg.role == FN_ROLE_TOP)
		return; /* the top's output is its RESULT, handled on its own */
	if (fn->cfg.role == FN_ROLE_SHARD) {
		if (fn->node < r->nshards && r->shard_fn[fn->node] == fn->id &&
		    !r->shard_done[fn->node]) {
			r->shard_done[fn->node] = true;
			if (++r->ndone == r->nshards)
				robust_phase_done(n, j, r);
		}
		return;
	}
	if (fn->cfg.role == FN_ROLE_MID) {
		struct rt_mid *m;

		if (fn->node >= r->nmids || r->mids[fn->node].fn != fn->id || r->mids[fn->node].done)
			return;
		m = &r->mids[fn->node];
		m->done = true;
		if (!m->has_partial) {
			m->partial = *d;
			m->partial.kind = SHM_DESC_PARTIAL;
			m->has_partial = true;
		}
		/* Its leaves' partials are inside its own now: their slots go back. */
		for (uint32_t i = fn->node * r->group;
		     i < r->started && i < (fn->node + 1) * r->group; i++) {
			if (r->leaves[i].acc) {
				shm_slot_free(n->arena, r->leaves[i].acc);
				r->leaves[i].acc = 0;
			}
		}
		out_ensure(n, m->has_partial, &m->partial, m->partial_payload, &m->routed_to,
			   r->top);
	} else {
		struct rt_leaf *l;

		if (fn->node >= r->started || r->leaves[fn->node].fn != fn->id ||
		    r->leaves[fn->node].done)
			return;
		l = &r->leaves[fn->node];
		l->done = true;
		if (!l->has_partial) {
			l->partial = *d;
			l->partial.kind = SHM_DESC_PARTIAL;
			l->has_partial = true;
		}
		/* The updates are inside a partial that outlives any function: free their slots. */
		for (uint32_t k = 0; k < l->sent; k++)
			shm_slot_free(n->arena, l->ups[k].slot_off);
		/* If its parent was replaced since the partial went out, it goes again. */
		out_ensure(n, l->has_partial, &l->partial, l->partial_payload, &l->routed_to,
			   leaf_parent(r, fn->node));
	}
}

/* shm+unix and tcp: partials pass through here; so does a bounced one in shm+bpf. */
static void route_partial(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d,
			  float *payload)
{
	struct rt_job *j = NULL;
	struct rt_round *r = round_find(n, d->job, d->round, &j);
	bool *has = NULL;
	struct shm_desc *kept = NULL;
	float **keep = NULL;
	uint32_t *routed = NULL, dst;

	if (!r) {
		trib_free(payload);
		return;
	}
	/* Whoever serves the parent now, whatever the sender was told. */
	if (fn->cfg.role == FN_ROLE_MID && fn->node < r->nmids && r->mids[fn->node].fn == fn->id) {
		struct rt_mid *m = &r->mids[fn->node];

		dst = r->top;
		has = &m->has_partial;
		kept = &m->partial;
		keep = &m->partial_payload;
		routed = &m->routed_to;
	} else if (fn->cfg.role == FN_ROLE_LEAF && fn->node < r->started &&
		   r->leaves[fn->node].fn == fn->id) {
		struct rt_leaf *l = &r->leaves[fn->node];

		dst = leaf_parent(r, fn->node);
		has = &l->has_partial;
		kept = &l->partial;
		keep = &l->partial_payload;
		routed = &l->routed_to;
	} else {
		/* From a function replaced since: its replacement sends its own. */
		trib_free(payload);
		return;
	}
	/* Kept until the round commits, so a replaced parent can get it again. */
	*kept = *d;
	kept->kind = SHM_DESC_PARTIAL;
	*has = true;
	if (payload) {
		trib_free(*keep);
		*keep = payload;
	}
	*routed = 0;
	out_ensure(n, true, kept, *keep, routed, dst);
	if (*routed != dst)
		trib_error("fn %u -> fn %u: the partial could not be delivered now; it goes again "
			   "if that parent is replaced", fn->id, dst);
}

void rt_node_on_fn_record(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d,
			  float *payload)
{
	if (d->version != SHM_ABI_VERSION || (d->kind < 16 && d->src != fn->id)) {
		trib_error("fn %u: bad record (version %u, kind %u)", fn->id, d->version, d->kind);
		trib_free(payload);
		return;
	}
	if (n->agent && d->kind == SHM_DESC_RESULT && rt_agent_on_fold_result(n, fn, d, payload))
		return;
	switch (d->kind) {
	case FN_MSG_READY: {
		double s = (double)(trib_now_ns() - fn->config_ns) / 1e9;

		if (fn->state == RT_FN_COLD) {
			n->m.cold_recent[n->m.cold_n % 256] = (float)s;
			n->m.cold_n++;
			n->m.cold_sum_s += s;
			if (s > n->m.cold_max_s)
				n->m.cold_max_s = s;
		} else {
			n->m.warm_recent[n->m.warm_n % 256] = (float)s;
			n->m.warm_n++;
			n->m.warm_sum_s += s;
			if (s > n->m.warm_max_s)
				n->m.warm_max_s = s;
		}
		fn->state = RT_FN_FOLDING;
		return;
	}
	case FN_MSG_DONE:
		on_done(n, fn, d);
		return;
	case SHM_DESC_PARTIAL:
		route_partial(n, fn, d, payload);
		return;
	case SHM_DESC_RESULT: {
		struct rt_job *j = NULL;
		struct rt_round *r = round_find(n, d->job, d->round, &j);

		if (!r || r->has_result || fn->id != r->top) {
			trib_debug("fn %u: result for job %u round %u not wanted (done, or replaced)",
				   fn->id, d->job, d->round);
			if (r && fn->id != r->top)
				garbage_add(r, d->slot_off);
			trib_free(payload);
			return;
		}
		r->result = *d;
		r->result_payload = payload;
		r->has_result = true;
		job_complete_rounds(n, j);
		return;
	}
	default:
		trib_error("fn %u: unexpected record kind %u for the runtime", fn->id, d->kind);
		trib_free(payload);
	}
}

void rt_node_fn_counters(struct rt_node *n, const struct rt_fn *fn, uint64_t *msgs,
			 uint64_t *bytes, int64_t *depth)
{
	if (n->route) {
		struct ebpf_fn_sample smp;

		if (!ebpf_stats_read(ebpf_route_stats(n->route), fn->id, &smp)) {
			*msgs = smp.msgs_in;
			*bytes = smp.bytes_in;
			*depth = (int64_t)smp.depth;
			return;
		}
		*msgs = *bytes = 0;
		*depth = 0;
		return;
	}
	*msgs = fn->msgs_in;
	*bytes = fn->bytes_in;
	*depth = -1; /* not observable without BPF */
}

static void fn_remember(struct rt_node *n, const struct rt_fn *fn)
{
	struct rt_fn_record *h = &n->hist[n->nhist++ % RT_FN_HISTORY];
	int64_t depth;

	h->id = fn->id;
	h->job = fn->cfg.job;
	h->round = fn->cfg.round;
	h->role = fn->cfg.role;
	rt_node_fn_counters(n, fn, &h->msgs_in, &h->bytes_in, &depth);
	h->taken = depth >= 0 ? h->msgs_in - (uint64_t)depth : h->msgs_in;
}

/*
 * A function died while it had work (killed, crashed): start a replacement
 * for its place in the tree and give it the same inputs again. Nothing it
 * folded is lost: update slots live until the partial they went into exists,
 * partials until the round's model is written.
 */
static void recover(struct rt_node *n, struct rt_fn *fn)
{
	struct rt_job *j = NULL;
	struct rt_round *r = round_find(n, fn->cfg.job, fn->cfg.round, &j);
	const char *what;
	int err = 0;

	if (!r || r->has_result)
		return;
	if (r->recoveries >= RT_MAX_RECOVERIES) {
		/* Something that fails every time (bad input, a bug): do not spin. */
		trib_error("job %s round %u: %u functions replaced already; not replacing fn %u: "
			   "the round cannot complete", j->name, r->round, r->recoveries, fn->id);
		return;
	}
	if (fn->cfg.role == FN_ROLE_SHARD) {
		if (fn->node >= r->nshards || r->shard_fn[fn->node] != fn->id ||
		    r->shard_done[fn->node])
			return;
		what = "shard";
		err = shard_start(n, r, fn->node);
	} else if (fn->cfg.role == FN_ROLE_TOP) {
		if (r->top != fn->id)
			return;
		garbage_add(r, r->top_acc);
		r->top_acc = 0;
		r->top = 0;
		what = "top";
		err = top_start(n, r);
		/* Mids (or leaves) still folding were told the old top: they find the new one
		 * through the runtime (bounce or route) or on their DONE. */
	} else if (fn->cfg.role == FN_ROLE_MID) {
		struct rt_mid *m = fn->node < r->nmids ? &r->mids[fn->node] : NULL;

		if (!m || m->fn != fn->id || m->done)
			return;
		garbage_add(r, m->acc);
		m->acc = 0;
		what = "mid";
		err = mid_start(n, r, fn->node);
	} else {
		struct rt_leaf *l = fn->node < r->started ? &r->leaves[fn->node] : NULL;

		if (!l || l->fn != fn->id || l->done)
			return;
		garbage_add(r, l->acc);
		l->acc = 0;
		what = "leaf";
		err = leaf_start(n, r, fn->node);
	}
	r->recoveries++;
	n->m.recoveries++;
	if (err)
		trib_error("job %s round %u: replacing fn %u failed: %s; the round cannot complete",
			   j->name, r->round, fn->id, strerror(-err));
	else
		trib_warn("job %s round %u: fn %u (%s %u) died mid-round; replaced, its inputs sent "
			  "again", j->name, r->round, fn->id, what, fn->node);
}

/*
 * A function is judged once it has exited AND its channels reached end of
 * stream, so that every record it sent has been handled first.
 */
static void fn_judge(struct rt_node *n, struct rt_fn *fn)
{
	int st = fn->wait_status;

	if (n->stopping)
		return;
	if (!fn->busy) {
		if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			trib_warn("fn %u exited (status %d) while idle", fn->id, st);
		return;
	}
	n->m.fn_failed++;
	trib_error("fn %u (%s of job %u round %u) %s %d mid-round", fn->id,
		   fn->cfg.role == FN_ROLE_TOP ? "top" : fn->cfg.role == FN_ROLE_MID ? "mid" : "leaf",
		   fn->cfg.job, fn->cfg.round,
		   WIFSIGNALED(st) ? "was killed by signal" : "exited with",
		   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	recover(n, fn);
}

static bool fn_ended(const struct rt_fn *fn)
{
	return fn->exited && fn->eof_ctl && fn->eof_data;
}

static bool on_reaped(struct rt_fn *fn, void *arg)
{
	struct rt_node *n = arg;

	if (!fn_ended(fn) && !n->stopping)
		return false; /* judged when its channels' ends are read */
	fn_judge(n, fn);
	fn_remember(n, fn);
	return true;
}

void rt_node_on_fn_eof(struct rt_node *n, struct rt_fn *fn, bool data)
{
	if (data)
		fn->eof_data = true;
	else
		fn->eof_ctl = true;
	if (fn_ended(fn)) {
		fn_judge(n, fn);
		fn_remember(n, fn);
		rt_fnset_remove(n->fns, fn);
	}
}

void rt_node_on_sigchld(struct rt_node *n)
{
	rt_fnset_reap(n->fns, on_reaped, n);
}

static void retire_idle(struct rt_fn *fn, void *arg)
{
	struct rt_node *n = arg;
	uint64_t now = trib_now_ns();

	if (fn->state != RT_FN_WARM || fn->exited)
		return;
	if (now - fn->idle_ns < (uint64_t)n->opts.warm_s * 1000000000ull)
		return;
	/* Scale to zero: a job with no traffic costs no process. */
	if (!rt_fn_ctl(fn, FN_MSG_EXIT, 0)) {
		fn->state = RT_FN_EXITING;
		n->m.fn_retired++;
		trib_info("fn %u: idle %u s, retired (served %u configs)", fn->id, n->opts.warm_s,
			  fn->served);
	}
}

void rt_node_tick(struct rt_node *n)
{
	uint64_t now = trib_now_ns();

	rt_fnset_foreach(n->fns, retire_idle, n);
	/* Deadlines: a round with enough updates closes with what it has; fewer, it waits. */
	for (struct rt_job *j = n->jobs; j; j = j->next) {
		struct rt_round *r = j->open;
		uint32_t need = j->min_clients ? j->min_clients : j->cpr;

		if (!r || !j->round_timeout_s || r->closed)
			continue;
		if (now - r->open_ns < (uint64_t)j->round_timeout_s * 1000000000ull)
			continue;
		if (r->received >= need)
			round_close(n, j, r, true);
	}
}

/* --- tributary up --- */

static int admin_token_load(struct rt_node *n)
{
	char path[PATH_MAX];
	const char *p = n->opts.admin_token_file;
	bool created;
	int err;

	if (!p) {
		snprintf(path, sizeof(path), "%s/admin-token", n->opts.data_dir);
		p = path;
	}
	err = trib_token_load(p, true, n->admin_token, sizeof(n->admin_token), &created);
	if (err)
		return err;
	trib_info(created ? "admin token created: %s (mode 0600)" : "admin token: %s", p);
	return 0;
}

static int find_fn_path(char *out, size_t cap)
{
	char self[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (len < 0)
		return -errno;
	self[len] = '\0';
	slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	if ((size_t)snprintf(out, cap, "%s/tributary-fn", self) >= cap)
		return -ENAMETOOLONG;
	return access(out, X_OK) ? -errno : 0;
}

static void dataplane_teardown(struct rt_node *n);

/*
 * shm+bpf where the programs load; otherwise shm+unix, said once and loudly.
 * The first lines of the log name the data plane in use.
 */
static int dataplane_setup(struct rt_node *n)
{
	uint32_t want = n->opts.dataplane ? n->opts.dataplane : FN_DP_SHM_BPF;
	char why[256] = "";
	char inst[32];
	int err;

	n->gw_pair[0] = n->gw_pair[1] = -1;
	n->dataplane = want;
	if (want != FN_DP_SHM_BPF) {
		trib_info("data plane: %s (requested)", rt_dataplane_name(want));
		return 0;
	}
	snprintf(inst, sizeof(inst), "%d", (int)getpid());
	err = ebpf_route_open(inst, &n->route, why, sizeof(why));
	if (!err) {
		err = ebpf_tcp_pair(n->gw_pair);
		if (!err)
			err = ebpf_route_add(n->route, EBPF_KEY_GATEWAY, n->gw_pair[0]);
		if (err)
			snprintf(why, sizeof(why), "the gateway's socket: %s", strerror(-err));
	}
	if (err) {
		dataplane_teardown(n);
		n->dataplane = FN_DP_SHM_UNIX;
		trib_warn("data plane: shm+bpf is not available here (%s); FALLING BACK to shm+unix "
			  "(descriptors over Unix sockets, routed by the runtime)",
			  why[0] ? why : strerror(-err));
		return 0;
	}
	fcntl(n->gw_pair[0], F_SETFL, O_NONBLOCK);
	fcntl(n->gw_pair[1], F_SETFL, O_NONBLOCK);
	trib_info("data plane: shm+bpf (sk_msg routes descriptors between sockets; pinned under "
		  "%s/%s)", EBPF_PIN_ROOT, inst);
	return 0;
}

static void dataplane_teardown(struct rt_node *n)
{
	if (n->gw_pair[0] >= 0) {
		close(n->gw_pair[0]);
		close(n->gw_pair[1]);
	}
	n->gw_pair[0] = n->gw_pair[1] = -1;
	ebpf_route_close(n->route);
	n->route = NULL;
}

int rt_up_run(const struct rt_node_opts *opts)
{
	struct rt_node *n;
	char dbpath[PATH_MAX];
	char fnpath[PATH_MAX];
	int err;

	trib_log_init(opts->controller ? "node" : "up");
	n = trib_calloc(1, sizeof(*n));
	if (!n)
		return 1;
	n->opts = *opts;
	n->next_job_id = 1;
	err = trib_mkdir_p(n->opts.data_dir, 0700);
	if (err) {
		trib_error("data dir %s: %s", n->opts.data_dir, strerror(-err));
		goto err_free;
	}
	if (!n->opts.fn_path) {
		err = find_fn_path(fnpath, sizeof(fnpath));
		if (err) {
			trib_error("tributary-fn not found beside this executable (%s): %s", fnpath,
				   strerror(-err));
			goto err_free;
		}
		n->opts.fn_path = fnpath;
	}
	/* In a cluster the controller keeps jobs and tokens; this node only caches them. */
	if (n->opts.controller)
		snprintf(dbpath, sizeof(dbpath), ":memory:");
	else
		snprintf(dbpath, sizeof(dbpath), "%s/tributary.db", n->opts.data_dir);
	err = ctl_store_open(dbpath, &n->store);
	if (err) {
		trib_error("state %s: %s", dbpath, strerror(-err));
		goto err_free;
	}
	err = n->opts.controller ? 0 : admin_token_load(n);
	if (err)
		goto err_close_store;
	err = shm_arena_create(n->opts.arena_bytes, n->opts.no_huge ? SHM_ARENA_NO_HUGE : 0,
			       &n->arena);
	if (err) {
		trib_error("arena of %llu MiB: %s", (unsigned long long)(n->opts.arena_bytes >> 20),
			   strerror(-err));
		goto err_close_store;
	}
	trib_info("arena: %zu MiB on %s pages", shm_arena_size(n->arena) >> 20,
		  shm_arena_is_huge(n->arena) ? "2 MiB huge" : "normal 4 KiB");
	err = dataplane_setup(n);
	if (err)
		goto err_destroy_arena;
	err = rt_fnset_init(&n->fns, n->opts.fn_path, shm_arena_fd(n->arena), n->dataplane,
			    n->route, n->gw_pair[0]);
	if (err)
		goto err_dataplane;
	err = n->opts.controller ? rt_agent_open(n) : jobs_load(n);
	if (err) {
		trib_error("%s: %s", n->opts.controller ? "joining the cluster" : "loading jobs",
			   strerror(-err));
		goto err_destroy_fns;
	}
	trib_info("data in %s", n->opts.data_dir);
	err = rt_gw_run(n);
	if (err)
		trib_error("gateway: %s", strerror(-err));
	n->stopping = true;
	rt_agent_close(n);

err_destroy_fns:
	rt_fnset_destroy(n->fns);
	while (n->jobs) {
		struct rt_job *j = n->jobs;

		n->jobs = j->next;
		job_free(j);
	}
err_dataplane:
	dataplane_teardown(n);
err_destroy_arena:
	shm_arena_destroy(n->arena);
err_close_store:
	ctl_store_close(n->store);
err_free:
	trib_free(n);
	if (!err)
		trib_info("stopped");
	return err ? 1 : 0;
}
