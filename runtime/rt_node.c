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

#include "ctl_store.h"
#include "ebpf_abi.h"
#include "ebpf_route.h"
#include "ebpf_stats.h"
#include "rt_gw.h"
#include "rt_store.h"
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

static void job_free(struct rt_job *j)
{
	while (j->inflight) {
		struct rt_round *r = j->inflight;

		j->inflight = r->next;
		trib_free(r->result_payload);
		trib_free(r);
	}
	rt_blob_release(j->model);
	trib_free(j->schema);
	trib_free(j->schema_json);
	trib_free(j->st_header);
	trib_free(j);
}

static char *schema_to_json(const struct rt_tensor *schema, size_t n)
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

int rt_schema_from_json(json_t *arr, struct rt_tensor **out, size_t *nout, uint64_t *n_elem,
			const char **why)
{
	struct rt_tensor *t;
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
		if (json_string_length(name) == 0 || json_string_length(name) >= RT_ST_NAME_MAX ||
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
		if (json_array_size(shape) > RT_ST_MAX_DIMS) {
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
	return rt_st_write_header(j->schema, j->nschema, NULL, &j->st_header, &j->st_header_len);
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
	return rt_store_write_model(n->opts.data_dir, j->name, b->version, b->data,
				    j->st_header_len, b->data + j->st_header_len,
				    b->len - j->st_header_len, NULL, 0);
}

int rt_job_create(struct rt_node *n, const char *name, uint32_t cpr, uint32_t fanin,
		  const char *algorithm, struct rt_tensor *schema, size_t nschema,
		  struct rt_job **out)
{
	struct ctl_job cj;
	struct rt_job *j;
	struct rt_blob *b;
	int err;

	j = trib_calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	snprintf(j->name, sizeof(j->name), "%s", name);
	snprintf(j->algorithm, sizeof(j->algorithm), "%s", algorithm);
	j->cpr = cpr;
	j->fanin = fanin;
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
	err = ctl_token_new(j->token, sizeof(j->token));
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
	snprintf(cj.algorithm, sizeof(cj.algorithm), "%s", algorithm);
	cj.clients_per_round = cpr;
	cj.schema_json = j->schema_json;
	{
		char params[64];

		snprintf(params, sizeof(params), "{\"fan_in\":%u}", fanin);
		cj.params_json = params;
		err = ctl_store_job_create(n->store, &cj);
	}
	if (err)
		goto err_free; /* -EEXIST: the caller answers 409 */
	j->db_id = cj.id;
	j->id = n->next_job_id++;
	j->schema = schema;
	j->next = n->jobs;
	n->jobs = j;
	trib_info("job %s: created (%u clients per round, fan-in %u, %llu parameters in %zu tensors)",
		  name, cpr, fanin, (unsigned long long)j->n_elem, nschema);
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

			j->fanin = json_is_integer(fi) ? (uint32_t)json_integer_value(fi) : 16;
			j->schema_json = trib_strdup(cj->schema_json);
			err = j->schema_json ? job_build_header(j) : -ENOMEM;
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
	err = rt_store_read_model(n->opts.data_dir, j->name, v, &buf, &len);
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
	b = model_blob(j, data, 0);
	if (!b)
		return -ENOMEM;
	err = store_blob(n, j, b);
	if (err) {
		rt_blob_release(b);
		return err;
	}
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

/*
 * Start one function of @r's tree. Its accumulator's data starts 2 KiB plus
 * a per-function multiple of 64 bytes into its slot, so that accumulator and
 * update bytes (64 KiB aligned) never sit a multiple of 4 KiB apart (4K
 * aliasing halves the fold's speed).
 */
static int round_spawn(struct rt_node *n, struct rt_round *r, uint16_t role, uint32_t idx)
{
	struct rt_job *j = r->job;
	struct fn_config cfg;
	struct rt_fn *fn;
	uint64_t acc;
	int err;

	/* In tcp the accumulators are the functions' private memory: nothing in the arena. */
	acc = 0;
	if (n->dataplane != FN_DP_TCP) {
		err = shm_slot_alloc(n->arena, acc_slot_len(j), &acc);
		if (err)
			return err;
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.version = FN_ABI_VERSION;
	cfg.kind = FN_MSG_CONFIG;
	cfg.job = j->id;
	cfg.round = r->round;
	cfg.role = role;
	cfg.algorithm = FN_ALGO_FEDAVG;
	cfg.n_elem = j->n_elem;
	cfg.acc_off = acc;
	if (role == FN_ROLE_TOP) {
		cfg.fn_id = r->id_base;
		cfg.parent = SHM_DST_RUNTIME;
		cfg.expected = r->nleaves;
		cfg.child_base = r->id_base + 1;
	} else {
		uint32_t first = idx * r->fanin;

		cfg.fn_id = r->id_base + 1 + idx;
		cfg.parent = r->id_base;
		cfg.expected = j->cpr - first < r->fanin ? j->cpr - first : r->fanin;
	}
	cfg.acc_data_off = acc ? acc + 2048 + 64 * (cfg.fn_id % 16) : 0;
	err = rt_fnset_spawn(n->fns, &cfg, r, &fn);
	if (err) {
		if (acc)
			shm_slot_free(n->arena, acc);
		return err;
	}
	n->m.fn_spawned++;
	rt_gw_watch_fn(n, fn);
	return 0;
}

static struct rt_round *round_open(struct rt_node *n, struct rt_job *j, int *errp)
{
	struct rt_round *r = trib_calloc(1, sizeof(*r));
	int err;

	if (!r) {
		*errp = -ENOMEM;
		return NULL;
	}
	r->job = j;
	r->round = j->round;
	r->fanin = j->fanin;
	r->nleaves = (j->cpr + j->fanin - 1) / j->fanin;
	r->id_base = rt_fnset_reserve_ids(n->fns, 1 + r->nleaves);
	r->open_ns = trib_now_ns();
	err = round_spawn(n, r, FN_ROLE_TOP, 0);
	if (err) {
		trib_free(r);
		*errp = err;
		return NULL;
	}
	/* Append: rounds complete in order. */
	{
		struct rt_round **pp = &j->inflight;

		while (*pp)
			pp = &(*pp)->next;
		*pp = r;
	}
	j->open = r;
	trib_debug("job %s round %u: tree of %u leaves (fan-in %u) under fn %u", j->name, r->round,
		   r->nleaves, r->fanin, r->id_base);
	return r;
}

int rt_job_accept(struct rt_node *n, struct rt_job *j, uint32_t round, uint64_t slot_off,
		  uint64_t segs_off, uint32_t nsegs, double weight, uint32_t *seq)
{
	struct rt_round *r = j->open;
	struct shm_desc d;
	struct rt_fn *leaf;
	uint32_t s, li;
	int err;

	if (round != j->round)
		return -ESTALE;
	if (!r) {
		r = round_open(n, j, &err);
		if (!r)
			return err;
	}
	if (r->failed)
		return -EIO;
	s = r->received;
	li = s / r->fanin;
	if (li >= r->spawned) {
		err = round_spawn(n, r, FN_ROLE_LEAF, li);
		if (err)
			return err;
		r->spawned = li + 1;
	}
	leaf = rt_fnset_find(n->fns, r->id_base + 1 + li);
	if (!leaf)
		return -EPIPE;
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = SHM_DESC_UPDATE;
	d.dst = leaf->id;
	d.src = SHM_DST_RUNTIME;
	d.job = j->id;
	d.round = round;
	d.nsegs = nsegs;
	d.slot_off = slot_off;
	d.segs_off = segs_off;
	d.weight = weight;
	d.count = 1;
	d.seq = s;
	if (n->dataplane == FN_DP_TCP) {
		/* The baseline: the update's bytes are copied to the leaf, the slot freed now. */
		const struct shm_seg *segs = shm_arena_ptr(n->arena, segs_off);
		struct iovec iov[64];

		if (nsegs > 64)
			return -E2BIG;
		for (uint32_t i = 0; i < nsegs; i++) {
			iov[i].iov_base = shm_arena_ptr(n->arena, segs[i].src_off);
			iov[i].iov_len = segs[i].n_elem * sizeof(float);
		}
		err = rt_fn_send_payload(leaf, &d, iov, (int)nsegs);
		if (err)
			return err;
		shm_slot_free(n->arena, slot_off);
	} else {
		err = rt_fn_send(leaf, &d);
		if (err)
			return err;
	}
	r->received++;
	j->accepted_total++;
	n->m.accepted++;
	*seq = s;
	if (r->received == j->cpr) {
		/* The round is full: the next one opens at once. */
		j->open = NULL;
		j->round++;
		trib_debug("job %s: round %u full, round %u open", j->name, round, j->round);
	}
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
	while (j->inflight && j->inflight->has_result && j->inflight->round == j->completed) {
		struct rt_round *r = j->inflight;
		const struct shm_desc *d = &r->result;
		const float *model = r->result_payload;
		struct rt_blob *b;

		if (!model) {
			const struct shm_seg *seg = shm_arena_ptr(n->arena, d->segs_off);

			model = shm_arena_ptr(n->arena, seg->src_off);
		}
		b = model_blob(j, model, r->round + 1);
		struct ctl_round rec;
		double secs;
		int err;

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
		if (!r->result_payload)
			shm_slot_free(n->arena, d->slot_off);
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
		n->m.rounds_done++;
		round_hist_add(&n->m, secs);
		trib_info("job %s round %u: %u updates (weight %g) aggregated in %.3f s; model v%u",
			  j->name, r->round, d->count, d->weight, secs, j->completed);
		j->inflight = r->next;
		trib_free(r->result_payload);
		trib_free(r);
		rt_gw_model_ready(n, j);
	}
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

void rt_node_on_fn_record(struct rt_node *n, struct rt_fn *fn, const struct shm_desc *d,
			  float *payload)
{
	if (d->version != SHM_ABI_VERSION || d->src != fn->id) {
		trib_error("fn %u: bad descriptor (version %u, src %u)", fn->id, d->version, d->src);
		trib_free(payload);
		return;
	}
	fn->handed_off = true;
	if (d->dst != SHM_DST_RUNTIME) {
		/*
		 * shm+unix and tcp: the runtime is the router between functions.
		 * shm+bpf: sk_msg sends a record here only when its destination
		 * was not in the map; route it by hand.
		 */
		struct rt_fn *to = rt_fnset_find(n->fns, d->dst);
		int err = -ENOENT;

		if (to && payload) {
			struct iovec iov = { payload, fn->cfg.n_elem * sizeof(float) };

			err = rt_fn_send_payload(to, d, &iov, 1);
		} else if (to) {
			err = rt_fn_send(to, d);
		}
		if (err)
			trib_error("fn %u -> fn %u: %s", fn->id, d->dst, strerror(-err));
		trib_free(payload);
		return;
	}
	if (d->kind == SHM_DESC_RESULT) {
		struct rt_job *j = NULL;
		struct rt_round *r = round_find(n, d->job, d->round, &j);

		if (!r || r->has_result) {
			trib_error("fn %u: result for unknown job %u round %u", fn->id, d->job,
				   d->round);
			trib_free(payload);
			return;
		}
		r->result = *d;
		r->result_payload = payload;
		r->has_result = true;
		job_complete_rounds(n, j);
		return;
	}
	trib_error("fn %u: unexpected descriptor kind %u for the runtime", fn->id, d->kind);
	trib_free(payload);
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
 * A function is judged once it has exited AND its channel reached end of
 * stream: a function sends its output and exits at once, and SIGCHLD can be
 * seen before the output is read. Failure means it ended without handing off.
 */
static void fn_judge(struct rt_node *n, struct rt_fn *fn)
{
	int st = fn->wait_status;
	struct rt_job *j = NULL;
	struct rt_round *r;

	/*
	 * A function exits 0 only once its output is sent (in shm+bpf a
	 * leaf's partial goes straight to its parent: the runtime never sees it).
	 */
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return;
	if (n->stopping)
		return;
	n->m.fn_failed++;
	/* Look the round up: it may be finished and gone (fn->owner would dangle). */
	r = round_find(n, fn->cfg.job, fn->cfg.round, &j);
	if (r && !r->has_result)
		r->failed = true;
	trib_error("fn %u (%s of job %u round %u) %s %d before handing off; the round cannot "
		   "complete",
		   fn->id, fn->cfg.role == FN_ROLE_TOP ? "top" : "leaf", fn->cfg.job, fn->cfg.round,
		   WIFSIGNALED(st) ? "was killed by signal" : "exited with",
		   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

static bool on_reaped(struct rt_fn *fn, void *arg)
{
	struct rt_node *n = arg;

	if (!fn->eof && fn->sock >= 0 && !n->stopping)
		return false; /* judged when its channel's end is read */
	fn_judge(n, fn);
	fn_remember(n, fn);
	return true;
}

void rt_node_on_fn_eof(struct rt_node *n, struct rt_fn *fn)
{
	fn->eof = true;
	if (fn->exited) {
		fn_judge(n, fn);
		fn_remember(n, fn);
		rt_fnset_remove(n->fns, fn);
	}
}

void rt_node_on_sigchld(struct rt_node *n)
{
	rt_fnset_reap(n->fns, on_reaped, n);
}

/* --- tributary up --- */

static int admin_token_load(struct rt_node *n)
{
	char path[PATH_MAX];
	const char *p = n->opts.admin_token_file;
	FILE *f;

	if (!p) {
		snprintf(path, sizeof(path), "%s/admin-token", n->opts.data_dir);
		p = path;
	}
	f = fopen(p, "r");
	if (f) {
		size_t len;

		if (!fgets(n->admin_token, sizeof(n->admin_token), f))
			n->admin_token[0] = '\0';
		fclose(f);
		len = strcspn(n->admin_token, "\r\n \t");
		n->admin_token[len] = '\0';
		if (len < 16) {
			trib_error("admin token in %s is shorter than 16 characters", p);
			return -EINVAL;
		}
		trib_info("admin token: %s", p);
		return 0;
	}
	if (errno != ENOENT) {
		trib_error("reading %s: %s", p, strerror(errno));
		return -errno;
	}
	{
		char line[96];
		int err = ctl_token_new(n->admin_token, sizeof(n->admin_token));

		if (err)
			return err;
		snprintf(line, sizeof(line), "%s\n", n->admin_token);
		err = rt_write_file_atomic(p, line, strlen(line), 0600);
		if (err) {
			trib_error("writing %s: %s", p, strerror(-err));
			return err;
		}
	}
	trib_info("admin token created: %s (mode 0600)", p);
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

	trib_log_init("up");
	n = trib_calloc(1, sizeof(*n));
	if (!n)
		return 1;
	n->opts = *opts;
	n->next_job_id = 1;
	err = rt_mkdir_p(n->opts.data_dir, 0700);
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
	snprintf(dbpath, sizeof(dbpath), "%s/tributary.db", n->opts.data_dir);
	err = ctl_store_open(dbpath, &n->store);
	if (err) {
		trib_error("state %s: %s", dbpath, strerror(-err));
		goto err_free;
	}
	err = admin_token_load(n);
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
	err = jobs_load(n);
	if (err) {
		trib_error("loading jobs: %s", strerror(-err));
		goto err_destroy_fns;
	}
	trib_info("data in %s", n->opts.data_dir);
	err = rt_gw_run(n);
	if (err)
		trib_error("gateway: %s", strerror(-err));
	n->stopping = true;

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
