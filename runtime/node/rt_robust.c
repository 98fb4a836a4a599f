// SPDX-License-Identifier: MIT
/* Server-step inputs (previous model, optimiser state) and the exact robust rules' shards. */
#include "rt_node_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fn_bulyan.h"
#include "fn_opt.h"
#include "fn_robust.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_store.h"

/* The previous model's slot and the state's [in | out] slot, in @r and its params. */
static int server_slots_alloc(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	const struct fn_params *p = &j->algo.par;
	uint64_t me, ve;
	int err;

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

int rt__server_slots(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	r->par = j->algo.par;
	/*
	 * A cluster node's round only sums (FN_CFG_SUM): the step runs at the cluster round's
	 * top, which gets its own inputs (rt_node_server_io()).
	 */
	if (!j->algo.needs_model || n->clustered)
		return 0;
	return server_slots_alloc(n, j, r);
}

/*
 * Fill the server step's inputs with what round r starts from: model
 * version r (the previous round's output, now written) and the optimiser
 * state after it. Called only once round r - 1 has committed.
 */
static int server_inputs_fill_from(struct rt_node *n, struct rt_job *j, struct rt_round *r,
				   const uint8_t *state, size_t state_len)
{
	const struct fn_params *p = &j->algo.par;
	uint64_t me, ve;
	int err;

	if (!j->model) {
		struct trib_blob *b = rt_job_model(n, j, j->completed);

		if (!b)
			return -errno;
		trib_blob_release(b);
	}
	memcpy(shm_arena_ptr(n->arena, r->model_slot), j->model->data + j->st_header_len,
	       j->n_elem * sizeof(float));
	if (state && state_len == r->state_size) {
		memcpy(shm_arena_ptr(n->arena, r->state_slot), state, r->state_size);
		return 0;
	}
	if (state)
		return -EINVAL; /* a state for another optimiser or model size */
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

		err = (me && !m) || (ve && !v) ? -ENOMEM
					       : fn_opt_state_init(&os, &op, j->n_elem, m, v);
		if (!err)
			err = fn_opt_state_save(&os, shm_arena_ptr(n->arena, r->state_slot),
						r->state_size);
		trib_free(m);
		trib_free(v);
	}
	return err;
}

static int server_inputs_fill(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	return server_inputs_fill_from(n, j, r, j->opt_state, j->opt_state_len);
}

void rt_node_server_io_free(struct rt_node *n, struct rt_server_io *io)
{
	if (io->model_slot)
		shm_slot_free(n->arena, io->model_slot);
	if (io->state_slot)
		shm_slot_free(n->arena, io->state_slot);
	memset(io, 0, sizeof(*io));
}

int rt_node_server_io(struct rt_node *n, struct rt_job *j, const uint8_t *state,
		      size_t state_len, struct rt_server_io *io)
{
	struct rt_round tmp;
	int err;

	memset(io, 0, sizeof(*io));
	memset(&tmp, 0, sizeof(tmp));
	tmp.job = j;
	tmp.par = j->algo.par;
	err = server_slots_alloc(n, j, &tmp);
	io->model_slot = tmp.model_slot;
	io->state_slot = tmp.state_slot;
	io->state_size = tmp.state_size;
	if (!err)
		err = server_inputs_fill_from(n, j, &tmp, state, state_len);
	if (err)
		rt_node_server_io_free(n, io);
	return err;
}

const uint8_t *rt_node_server_io_out(struct rt_node *n, const struct rt_server_io *io)
{
	return io->state_slot
		   ? (const uint8_t *)shm_arena_ptr(n->arena, io->state_slot) + io->state_size
		   : NULL;
}

/* (Re)start shard @i of a robust round on a warm or new function. */
int rt__shard_start(struct rt_node *n, struct rt_round *r, uint32_t i)
{
	struct fn_config cfg;
	struct fn_params par = r->par;
	struct rt_fn *fn;
	int err;

	rt__cfg_init(n, r, &cfg, FN_ROLE_SHARD, r->out_slot);
	cfg.acc_data_off = r->out_slot + 2048;
	cfg.parent = SHM_DST_RUNTIME;
	cfg.expected = r->received;
	cfg.flags = FN_CFG_FINAL;
	cfg.index = i;
	par.state_off = r->task_slot; /* a shard's params point at its task */
	err = rt__fn_acquire(n, &cfg, &par, &fn);
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
 * shard per core over equal coordinate ranges of [lo, hi) (0, 0: the whole
 * model; a cluster node's range otherwise). @descs: the k updates (copied).
 */
int rt__robust_start(struct rt_node *n, struct rt_job *j, struct rt_round *r,
		     const struct shm_desc *descs, uint32_t k, uint64_t lo, uint64_t hi)
{
	uint64_t need, data, span = hi ? hi - lo : j->n_elem;
	struct fn_shard_task *t;
	uint32_t S;
	int err;

	S = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	if (S < 1)
		S = 1;
	if (S > span)
		S = (uint32_t)span;
	if (!S || !k || hi > j->n_elem || lo > hi)
		return -EINVAL;
	need = sizeof(*t) + (uint64_t)k * sizeof(struct shm_desc) +
	       (uint64_t)S * k * k * sizeof(double) + (uint64_t)k * sizeof(uint32_t) + 64;
	err = shm_slot_alloc(n->arena, need, &r->task_slot);
	if (!err)
		err = shm_slot_alloc(n->arena, SHM_ACC_HDR + j->n_elem * sizeof(float),
				     &r->out_slot);
	if (err)
		return err;
	r->nshards = S;
	r->ndone = 0;
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
	t->range_lo = hi ? lo : 0;
	t->range_hi = hi;
	data = r->task_slot + 128;
	t->descs_off = data;
	memcpy(shm_arena_ptr(n->arena, data), descs, (size_t)k * sizeof(struct shm_desc));
	data += (uint64_t)k * sizeof(struct shm_desc);
	t->dmat_off = data;
	data += (uint64_t)S * k * k * sizeof(double);
	t->sel_off = data;
	trib_info("job %s round %u: %s over %u updates in %u shards (coordinates %llu..%llu)",
		  j->name, r->round, j->algo.name, k, S, (unsigned long long)(hi ? lo : 0),
		  (unsigned long long)(hi ? hi : j->n_elem));
	for (uint32_t i = 0; i < S; i++) {
		err = rt__shard_start(n, r, i);
		if (err)
			return err;
	}
	return 0;
}

/* Every shard of the phase is done: Krum selects and goes on, the rest is the model. */
void rt__robust_phase_done(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	struct fn_shard_task *t = shm_arena_ptr(n->arena, r->task_slot);
	struct shm_seg *seg;

	if (j->secagg.on) {
		/* An unmasking's shards: the API's tick takes the correction (rt_secagg_commit.c). */
		r->sa_expanded = true;
		if (r->sa_orphan)
			rt__secagg_orphan_reap(n, j, r); /* its round failed: nobody takes it */
		return;
	}
	if (n->clustered) {
		/* Across nodes the cluster layer sums, selects and concatenates (rt_robust_x.c). */
		if (n->hooks.shard_phase)
			n->hooks.shard_phase(n->hooks.ctx, j, r, t->phase);
		return;
	}
	if ((t->rule == FN_RULE_KRUM || t->rule == FN_RULE_BULYAN) && t->phase == 1) {
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
			if (t->rule == FN_RULE_BULYAN) {
				/* theta = k - 2f selected; the shards then cut f from each end. */
				t->m = (uint32_t)FN_BULYAN_THETA(t->k, t->f);
				err = fn_bulyan_select(sum, t->k, t->f,
						       shm_arena_ptr(n->arena, t->sel_off), scratch);
			} else {
				err = fn_krum_select(sum, t->k, t->f, t->m,
						     shm_arena_ptr(n->arena, t->sel_off), NULL,
						     scratch);
			}
		}
		trib_free(sum);
		trib_free(scratch);
		if (!err) {
			const uint32_t *sel = shm_arena_ptr(n->arena, t->sel_off);

			trib_info("job %s round %u: %s selected %u of %u updates (first: %u)",
				  j->name, r->round, j->algo.name, t->m, t->k, sel[0]);
			t->phase = 2;
			r->ndone = 0;
			for (uint32_t i = 0; i < r->nshards && !err; i++)
				err = rt__shard_start(n, r, i);
		}
		if (err)
			trib_error("job %s round %u: %s: %s", j->name, r->round, j->algo.name,
				   strerror(-err));
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
	/* The output slot stays r->out_slot's: rt__round_free gives it back after the commit. */
	r->has_result = true;
	rt__job_complete_rounds(n, j);
}

/*
 * A closed round's top may finish once it knows its final child count and,
 * when it steps from the previous model, once that model exists: rounds
 * overlap (the next opens as soon as one is full), so round r's top waits
 * for round r - 1 to commit before it gets its FLUSH.
 */
void rt__top_release(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	struct rt_fn *top;

	if (!r->closed || r->released)
		return;
	if (j->algo.needs_model && !n->clustered) {
		int err;

		if (r->round != j->completed)
			return; /* again when the previous round commits */
		err = server_inputs_fill(n, j, r);
		if (err) {
			trib_error("job %s round %u: preparing the server step: %s", j->name,
				   r->round, strerror(-err));
			return;
		}
	}
	r->released = true;
	if (j->algo.rule && n->clustered) {
		/* This node's updates are all here: the cluster layer moves slices, then shards. */
		if (n->hooks.shard_phase)
			n->hooks.shard_phase(n->hooks.ctx, j, r, 0);
		return;
	}
	if (j->algo.rule) {
		int err = rt__robust_start(n, j, r, r->rups, r->received, 0, 0);

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

void rt__opt_state_load(struct rt_node *n, struct rt_job *j)
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
 * Keep the state the top wrote for this round, in two steps around the
 * model file, which is the commit point. Save: on disk (with the version it
 * belongs to) and a copy in *copy (owned by the caller), before the model.
 * A crash (or a failed model write) after it leaves a state file for a
 * version that is never served, and the previous one still loads.
 */
int rt__opt_state_save(struct rt_node *n, struct rt_job *j, struct rt_round *r, uint8_t **copy)
{
	char path[PATH_MAX];
	uint8_t *out;
	int err;

	*copy = NULL;
	if (!r->state_slot)
		return 0;
	out = (uint8_t *)shm_arena_ptr(n->arena, r->state_slot) + r->state_size;
	/*
	 * A robust rule on deltas takes no server step, so nothing wrote the output half (a
	 * reused slot holds old bytes): its state passes through, as at a cluster's top.
	 */
	if (j->algo.rule)
		memcpy(out, out - r->state_size, r->state_size);
	*copy = trib_malloc(r->state_size);
	if (!*copy)
		return -ENOMEM;
	memcpy(*copy, out, r->state_size);
	opt_state_path(n, j, r->round + 1, path, sizeof(path));
	err = trib_write_file_atomic(path, out, r->state_size, 0600);
	if (err) {
		trib_free(*copy);
		*copy = NULL;
	}
	return err;
}

/* Adopt: the model is stored; @copy (taken) is the state now, the previous version's file goes. */
void rt__opt_state_adopt(struct rt_node *n, struct rt_job *j, struct rt_round *r, uint8_t *copy)
{
	char path[PATH_MAX];

	if (!r->state_slot)
		return;
	trib_free(j->opt_state);
	j->opt_state = copy;
	j->opt_state_len = r->state_size;
	opt_state_path(n, j, r->round, path, sizeof(path));
	unlink(path);
}
