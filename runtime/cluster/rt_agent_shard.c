// SPDX-License-Identifier: MIT
/*
 * Exact robust rules across nodes (docs/ARCHITECTURE.md "Robust rules across nodes"). At the
 * controller's close, each owner (a node with updates in the round, controller/ctl_shard.h)
 * owns a range of coordinates; every node sends each other owner the slices of its updates in
 * that range; each owner runs the single node's shard functions over its range (the node's
 * half, runtime/node/rt_robust_x.c) and sends the round's top its partial Krum distances or
 * its range of the model; the top sums the distances, selects and tells the owners, and
 * concatenates the ranges into the model it sends the controller.
 *
 * Why slices move at the close and not as each update is accepted: only the close knows the
 * round's nodes and counts. A partition fixed at accept time would change with every node
 * that joins or is lost during the round, and the slices sent under it would move again;
 * at the close each slice crosses once, straight from the arena where its update landed
 * (the one copy on the owner is from nng's buffer into a slot). The cost is that a node keeps
 * its own updates whole until the model arrives.
 *
 * Every message names the partition it belongs to (gen: the close's counts, top and the top's
 * join). A lost node makes the controller close the round again with its count at 0: a new
 * partition, and everything starts again from the updates each node still holds, so no
 * message of the old one can reach the model.
 */
#include "agent_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>

#include "ctl_shard.h"
#include "rt_shard_wire.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

enum { SH_SLICES = 1, SH_DIST, SH_SEL, SH_RANGE, SH_FAIL };

struct xshard {
	uint64_t gen;
	uint32_t k; /* updates of the round */
	bool owner; /* this node owns [lo, hi) */
	uint64_t lo, hi;
	char addr[CTL_MAX_NODES][128];
	char name[CTL_MAX_NODES][64];
	/* an owner: the slices landed here (one slot per sender, owned) and the round's order */
	uint64_t slot[CTL_MAX_NODES];
	bool have[CTL_MAX_NODES];
	struct shm_desc *descs; /* k (owned), node by node until the start sorts them */
	uint32_t *gs;		/* k: the controller's count of each (owned) */
	/*
	 * This node's own updates' counts, fixed once when all of them are here (owned): the
	 * count of the last one may be noted only after the round's step saw it (a close that
	 * overtakes the accept's answer), and an owner that ordered with it while another
	 * ordered without it had another round order: Krum's distances and Bulyan's selection
	 * then mixed rows (a wrong model, seen after a node's restart). Every owner, this one
	 * included, orders by this one copy.
	 */
	uint32_t *mgs;
	bool ordered;		/* descs are in the round's order */
	/* a sender: slices delivered to each owner */
	bool sent[CTL_MAX_NODES], sending[CTL_MAX_NODES];
	/* an owner's phases: started, finished, and the last one whose output the top has */
	uint32_t started, done, delivered;
	bool up_sending;
	bool stale;    /* the shards of an earlier partition still run here */
	uint32_t *sel; /* the top's selection, here (owned) */
	uint32_t nsel;
	/* the top */
	double *dist[CTL_MAX_NODES];  /* each owner's partial distances (owned) */
	bool selected, select_failed; /* the latter: too few updates left, said once */
	/*
	 * ... and told to the controller, which ends the round (ctl__on_model_done): without
	 * it the job waited for a model this partition can never make. Told again every
	 * SH_FAIL_AGAIN_NS until the round's model comes (a restarted controller forgets).
	 */
	bool fail_sending;
	uint64_t fail_next_ns;
	char why[192];
	uint32_t *tsel, tm;
	bool sel_sent[CTL_MAX_NODES], sel_sending[CTL_MAX_NODES];
	float *model; /* the ranges, concatenated (owned until it is the result) */
	bool range_in[CTL_MAX_NODES];
};

static bool two_phase(const struct rt_job *j)
{
	return j->algo.rule == FN_RULE_KRUM || j->algo.rule == FN_RULE_BULYAN;
}

static void sh_free(struct rt_agent *a, struct xshard *sh)
{
	if (!sh)
		return;
	for (uint32_t i = 0; i < CTL_MAX_NODES; i++) {
		if (sh->slot[i])
			shm_slot_free(a->n->arena, sh->slot[i]);
		trib_free(sh->dist[i]);
	}
	trib_free(sh->descs);
	trib_free(sh->gs);
	trib_free(sh->mgs);
	trib_free(sh->sel);
	trib_free(sh->tsel);
	trib_free(sh->model);
	trib_free(sh);
}

uint64_t rt__agent_shard_gen(const struct xround *x)
{
	return x->sh ? x->sh->gen : 0;
}

void rt__agent_shard_free(struct rt_agent *a, struct xround *x)
{
	sh_free(a, x->sh);
	x->sh = NULL;
	trib_free(x->gseq);
	x->gseq = NULL;
	x->ngseq = 0;
}

void rt__agent_shard_note(struct rt_agent *a, const char *job, uint32_t round, uint32_t local,
			  uint32_t gseq)
{
	struct xround *x = rt__agent_xr_get(a, job, round, true);

	if (!x)
		return; /* then ordered by node and arrival: the same on every owner all the same */
	if (local >= x->ngseq) {
		uint32_t cap = local + 16, *g = trib_malloc(cap * sizeof(*g));

		if (!g)
			return;
		for (uint32_t i = 0; i < cap; i++)
			g[i] = i < x->ngseq ? x->gseq[i] : UINT32_MAX;
		trib_free(x->gseq);
		x->gseq = g;
		x->ngseq = cap;
	}
	x->gseq[local] = gseq;
}

/* The controller's count of local update @i (UINT32_MAX: none known, e.g. provisional). */
static uint32_t gseq_of(const struct xround *x, uint32_t i)
{
	return i < x->ngseq ? x->gseq[i] : UINT32_MAX;
}

/* FNV-1a over what fixes the partition and where its outputs go. */
static uint64_t close_gen(const struct xround *x)
{
	uint64_t h = 1469598103934665603ull;
	uint32_t v[4] = {x->nnodes, (uint32_t)x->top, x->top_join, x->round};

	for (size_t i = 0; i < sizeof(v); i++)
		h = (h ^ ((const uint8_t *)v)[i]) * 1099511628211ull;
	for (uint32_t i = 0; i < x->nnodes; i++)
		for (int b = 0; b < 4; b++)
			h = (h ^ ((x->counts[i] >> (8 * b)) & 0xff)) * 1099511628211ull;
	/* An owner's new join: it lost what it was sent, so a new partition sends it again. */
	for (uint32_t i = 0; i < x->nnodes; i++)
		for (int b = 0; b < 4; b++)
			h = (h ^ ((x->joins[i] >> (8 * b)) & 0xff)) * 1099511628211ull;
	return h;
}

void rt__agent_shard_close(struct rt_agent *a, struct xround *x, json_t *h)
{
	struct rt_job *j = rt_job_find(a->n, x->job);
	uint64_t gen = close_gen(x);
	struct xshard *sh;
	struct rt_round *r;
	json_t *peers = json_object_get(h, "peers"), *p;
	size_t i;

	if (!j || !j->algo.rule || (x->sh && x->sh->gen == gen))
		return;
	sh = trib_calloc(1, sizeof(*sh));
	if (!sh) {
		trib_error("job %s round %u: out of memory for the round's shards", x->job,
			   x->round);
		return;
	}
	r = rt_job_round_at(j, x->round);
	if (x->sh) {
		trib_warn("job %s round %u: the round's nodes changed (a node lost, or the top "
			  "moved): its ranges start again",
			  x->job, x->round);
		/* Shards of the old partition still running here finish before a new start. */
		sh->stale = r && rt_round_shards_busy(r);
		sh_free(a, x->sh);
		x->sh = NULL;
		/*
		 * The top's model of the old partition goes too: the new one makes its own.
		 * Kept, it stalled the round: a restarted controller that had not closed the
		 * round yet answered it "not wanted" (ok), and then closed the round again;
		 * this node had the model "sent" and the step stopped at have_result.
		 */
		trib_free(x->result_payload);
		x->result_payload = NULL;
		x->have_result = false;
		x->model_sent = false;
		x->model_sending = false; /* its answer, if one comes, is for the old one */
		trib_retry_ok(&x->model_retry);
	}
	sh->gen = gen;
	sh->k = (uint32_t)ctl_shard_total(x->counts, x->nnodes);
	sh->owner = a->rank >= 0 && !ctl_shard_range(x->counts, x->nnodes, (uint32_t)a->rank,
						     j->n_elem, &sh->lo, &sh->hi);
	json_array_foreach(peers, i, p)
	{
		if (i >= CTL_MAX_NODES)
			break;
		const char *ad = json_string_value(json_array_get(p, 0));
		const char *nm = json_string_value(json_array_get(p, 1));

		snprintf(sh->addr[i], sizeof(sh->addr[i]), "%s", ad ? ad : "");
		snprintf(sh->name[i], sizeof(sh->name[i]), "%s", nm ? nm : "");
	}
	sh->descs = sh->owner ? trib_calloc(sh->k ? sh->k : 1, sizeof(*sh->descs)) : NULL;
	sh->gs = sh->owner ? trib_calloc(sh->k ? sh->k : 1, sizeof(*sh->gs)) : NULL;
	if (sh->owner && (!sh->descs || !sh->gs)) {
		sh_free(a, sh);
		return;
	}
	x->sh = sh;
	trib_info("job %s round %u: %u updates over %u owners%s", x->job, x->round, sh->k,
		  ctl_shard_owners(x->counts, x->nnodes), sh->owner ? "" : " (none here)");
	if (sh->owner)
		trib_info("job %s round %u: this node owns coordinates [%llu, %llu)", x->job,
			  x->round, (unsigned long long)sh->lo, (unsigned long long)sh->hi);
	rt__agent_shard_step(a, x);
}

/* Send @what to rank @to (@h taken); the reply comes to rt__agent_on_shard_reply(). */
static int sh_send(struct rt_agent *a, struct xround *x, int to, int what, json_t *h, const void *p,
		   size_t len)
{
	struct xshard *sh = x->sh;
	struct pend *pd;
	int err;

	if (!sh->addr[to][0]) {
		json_decref(h);
		return -EHOSTUNREACH;
	}
	json_object_set_new(h, "job", json_string(x->job));
	json_object_set_new(h, "round", json_integer(x->round));
	json_object_set_new(h, "gen", json_integer((json_int_t)(sh->gen >> 1)));
	json_object_set_new(h, "from", json_integer(a->rank));
	if (sh->name[to][0])
		ctl_wire_peer_name(a->w, sh->addr[to], sh->name[to]);
	err = rt__agent_request(a, sh->addr[to], h, p, len, PK_SHARD, &pd);
	if (err) {
		trib_warn("job %s round %u: to node %s: %s (again next tick)", x->job, x->round,
			  sh->name[to], strerror(-err));
		return err;
	}
	pd->x = x;
	pd->top = to;
	pd->what = what;
	pd->gen = sh->gen;
	pd->bytes = len;
	return 0;
}

/*
 * This node's updates' slices of owner @o's range, in one message: [update][segment] as
 * [offset, n_elem, dst_elem, dtype, scale] over a payload of the segments' bytes as they are
 * in the arena (compressed ones stay compressed: the owner's shards decode them as the single
 * node's do), each piece 4-byte aligned.
 */
static int slices_send(struct rt_agent *a, struct xround *x, struct rt_job *j,
		       const struct shm_desc *ups, uint32_t nups, int o)
{
	struct rt_node *n = a->n;
	uint64_t lo, hi, len = 0;
	json_t *jups = json_array();
	struct rt_shard_piece *pc = NULL;
	uint8_t *buf = NULL;
	int err = -ENOMEM;

	if (ctl_shard_range(x->counts, x->nnodes, (uint32_t)o, j->n_elem, &lo, &hi) || !jups)
		goto out;
	/* Two passes: the length, then the bytes. */
	for (int pass = 0; pass < 2; pass++) {
		uint64_t off = 0;

		if (pass == 1) {
			buf = trib_malloc(len ? len : 1);
			if (!buf)
				goto out;
		}
		for (uint32_t u = 0; u < nups; u++) {
			const struct shm_seg *segs = shm_arena_ptr(n->arena, ups[u].segs_off);
			json_t *js = pass ? json_array() : NULL;
			uint32_t np;

			trib_free(pc);
			pc = trib_calloc(ups[u].nsegs ? ups[u].nsegs : 1, sizeof(*pc));
			if (!pc)
				goto out;
			np = rt_shard_cut(segs, ups[u].nsegs, lo, hi, pc);
			for (uint32_t i = 0; i < np; i++) {
				const struct shm_seg *sg = &segs[pc[i].seg];
				uint64_t es = rt_shard_dtype_size(sg->dtype),
					 nb = (pc[i].b - pc[i].a) * es;

				if (pass) {
					memcpy(
					    buf + off,
					    (const uint8_t *)shm_arena_ptr(n->arena, sg->src_off) +
						(pc[i].a - sg->dst_elem) * es,
					    nb);
					json_array_append_new(
					    js, json_pack("[I, I, I, i, f]", (json_int_t)off,
							  (json_int_t)(pc[i].b - pc[i].a),
							  (json_int_t)pc[i].a, (int)sg->dtype,
							  (double)sg->scale));
				}
				off += (nb + 3) & ~3ull;
			}
			if (pass)
				json_array_append_new(jups, js);
		}
		len = off;
	}
	{
		json_t *seqs = json_array();

		for (uint32_t u = 0; u < nups; u++)
			json_array_append_new(seqs, json_integer(x->sh->mgs[u]));
		err = sh_send(
		    a, x, o, SH_SLICES,
		    json_pack("{s:s, s:o, s:o}", "op", "shard_slices", "ups", jups, "seqs", seqs),
		    buf, len);
	}
	jups = NULL;
	if (!err)
		x->sh->sending[o] = true;
out:
	json_decref(jups);
	trib_free(pc);
	trib_free(buf);
	return err;
}

/* The top's selection, here: phase 2 starts. */
static void sel_take(struct rt_agent *a, struct xround *x, const uint32_t *sel, uint32_t m)
{
	struct xshard *sh = x->sh;

	if (sh->sel || !m)
		return;
	sh->sel = trib_malloc(m * sizeof(*sel));
	if (!sh->sel)
		return;
	memcpy(sh->sel, sel, m * sizeof(*sel));
	sh->nsel = m;
	rt__agent_shard_step(a, x);
}

/* At the top: owner @o's partial distances (k*k doubles), or its range [lo, hi). */
static int top_take(struct xround *x, struct rt_job *j, uint32_t o, int what, const void *p,
		    size_t len, uint64_t lo, uint64_t hi)
{
	struct xshard *sh = x->sh;
	uint64_t elo, ehi;

	if (ctl_shard_range(x->counts, x->nnodes, o, j->n_elem, &elo, &ehi))
		return -EINVAL;
	if (what == SH_DIST) {
		if (len != (size_t)sh->k * sh->k * sizeof(double) || !two_phase(j))
			return -EINVAL;
		if (sh->dist[o])
			return 0;
		sh->dist[o] = trib_malloc(len ? len : 1);
		if (!sh->dist[o])
			return -ENOMEM;
		memcpy(sh->dist[o], p, len);
		return 0;
	}
	if (lo != elo || hi != ehi || len != (hi - lo) * sizeof(float))
		return -EINVAL;
	if (sh->range_in[o])
		return 0;
	if (!sh->model) {
		sh->model = trib_calloc(j->n_elem ? j->n_elem : 1, sizeof(float));
		if (!sh->model)
			return -ENOMEM;
	}
	memcpy(sh->model + lo, p, len);
	sh->range_in[o] = true;
	return 0;
}

/* The top: sum the owners' distances (in rank order), select, tell the owners. */
static void top_select(struct xround *x, struct rt_job *j)
{
	struct xshard *sh = x->sh;
	size_t kk = (size_t)sh->k * sh->k;
	double *d;
	int err;

	for (uint32_t o = 0; o < x->nnodes; o++)
		if (x->counts[o] && !sh->dist[o])
			return;
	d = trib_calloc(kk ? kk : 1, sizeof(double));
	if (!sh->tsel)
		sh->tsel = trib_calloc(sh->k ? sh->k : 1, sizeof(*sh->tsel));
	if (!d || !sh->tsel) {
		trib_free(d);
		return;
	}
	/*
	 * Doubles, in rank order: each owner's matrix is its shards' sum in shard order, so
	 * the sum differs from the single node's only in the grouping of the additions
	 * (relative error about k * 2^-53); the selection is the single node's unless two
	 * Krum scores are that close (docs/ALGORITHMS.md).
	 */
	for (uint32_t o = 0; o < x->nnodes; o++)
		if (x->counts[o])
			for (size_t i = 0; i < kk; i++)
				d[i] += sh->dist[o][i];
	err = rt_node_xshard_select(j, d, sh->k, sh->tsel, &sh->tm);
	trib_free(d);
	if (err == -ENOMEM)
		return; /* again next tick */
	if (err) {
		/*
		 * Only a closed round that lost a node can get here with too few updates for the
		 * rule (f is checked against min_clients at creation): it makes no model rather
		 * than a wrong one, and says so once (a new partition tries again).
		 */
		sh->select_failed = true;
		if (j->algo.rule == FN_RULE_BULYAN)
			snprintf(sh->why, sizeof(sh->why),
				 "bulyan needs at least %u updates (4f + 3, f %u); %u left",
				 4 * j->algo.f + 3, j->algo.f, sh->k);
		else
			snprintf(sh->why, sizeof(sh->why),
				 "krum needs at least %u updates (2f + 3 and m + f, f %u, m %u); "
				 "%u left",
				 2 * j->algo.f + 3 > j->algo.m + j->algo.f ? 2 * j->algo.f + 3
									    : j->algo.m + j->algo.f,
				 j->algo.f, j->algo.m, sh->k);
		trib_error("job %s round %u: %s cannot select over the %u updates left (f %u%s): "
			   "%s; the round makes no model",
			   x->job, x->round, j->algo.name, sh->k, j->algo.f,
			   j->algo.rule == FN_RULE_BULYAN ? ", needs 4f + 3" : ", needs 2f + 3",
			   strerror(-err));
		return;
	}
	sh->selected = true;
	trib_info("job %s round %u: %s selected %u of %u updates across nodes (first: %u)", x->job,
		  x->round, j->algo.name, sh->tm, sh->k, sh->tsel[0]);
}

/*
 * The top: every range is in: the model goes to the controller. On deltas the ranges are the
 * robust delta, and the model is model v_r plus it, added here once v_r is stored here (the
 * round before has committed), as FedAvg's top waits for its server step's inputs.
 */
static void top_finish(struct rt_agent *a, struct xround *x, struct rt_job *j)
{
	struct xshard *sh = x->sh;

	if (x->have_result || !sh->model)
		return; /* made already (a step nested in this one), or no range yet */
	for (uint32_t o = 0; o < x->nnodes; o++)
		if (x->counts[o] && !sh->range_in[o])
			return;
	if (j->algo.needs_model) {
		int err;

		if (!x->srv.model_slot && !rt__agent_server_inputs(a, j, x))
			return; /* again at a tick, once model v_r (and its state) is here */
		err = rt_node_xshard_add_model(a->n, j, &x->srv, sh->model);
		if (err) {
			trib_error("job %s round %u: adding model v%u to the robust delta: %s",
				   x->job, x->round, x->round, strerror(-err));
			return;
		}
	}
	memset(&x->result, 0, sizeof(x->result));
	x->result.count = sh->k;
	x->result.weight = sh->k;
	x->result_payload = sh->model;
	sh->model = NULL;
	x->have_result = true;
	trib_info("job %s round %u: the round's top concatenated %u ranges over %u updates", x->job,
		  x->round, ctl_shard_owners(x->counts, x->nnodes), sh->k);
	rt__agent_model_send(a, x);
}

static int u64_cmp(const void *x, const void *y)
{
	uint64_t p = *(const uint64_t *)x, q = *(const uint64_t *)y;

	return p < q ? -1 : p > q;
}

/* An owner: all slices here (and its own updates): phase 1 over the round's order. */
static void owner_start(struct rt_agent *a, struct xround *x, struct rt_round *r,
			const struct shm_desc *mine, uint32_t nmine)
{
	struct xshard *sh = x->sh;
	struct shm_desc *sorted;
	uint64_t *perm, first;
	int err;

	for (uint32_t s = 0; s < x->nnodes; s++)
		if (x->counts[s] && s != (uint32_t)a->rank && !sh->have[s])
			return;
	if (sh->ordered)
		goto start; /* a start that failed, again */
	first = ctl_shard_first(x->counts, x->nnodes, (uint32_t)a->rank);
	memcpy(sh->descs + first, mine, nmine * sizeof(*mine));
	for (uint32_t i = 0; i < nmine; i++)
		sh->gs[first + i] = sh->mgs[i];
	/*
	 * The round's order: the controller's count of each update (as a single node orders by
	 * arrival), node by node where it is unknown or repeated. Every owner has the same
	 * (count, node, place) of every update, so it is the same order everywhere; Krum's and
	 * Bulyan's ties go to the lower index, so this makes them the single node's.
	 */
	perm = trib_malloc((sh->k ? sh->k : 1) * sizeof(*perm));
	sorted = trib_malloc((sh->k ? sh->k : 1) * sizeof(*sorted));
	if (!perm || !sorted) {
		trib_free(perm);
		trib_free(sorted);
		return; /* again next tick */
	}
	for (uint32_t i = 0; i < sh->k; i++)
		perm[i] = (uint64_t)sh->gs[i] << 32 | i;
	qsort(perm, sh->k, sizeof(*perm), u64_cmp);
	for (uint32_t i = 0; i < sh->k; i++) {
		sorted[i] = sh->descs[(uint32_t)perm[i]];
		sorted[i].seq = i;
	}
	trib_free(perm);
	trib_free(sh->descs);
	sh->descs = sorted;
	sh->ordered = true;
start:
	if (sh->lo == sh->hi) {
		/* Fewer coordinates than owners: an empty range has nothing to compute. */
		sh->started = sh->done = 1;
		return;
	}
	err = rt_node_xshard_start(a->n, r, sh->descs, sh->k, sh->lo, sh->hi);
	if (err) {
		trib_error("job %s round %u: starting the shards of [%llu, %llu): %s", x->job,
			   x->round, (unsigned long long)sh->lo, (unsigned long long)sh->hi,
			   strerror(-err));
		return;
	}
	sh->started = 1;
}

/* An owner: the last finished phase's output to the top (here, or one message). */
static void owner_up(struct rt_agent *a, struct xround *x, struct rt_job *j, struct rt_round *r)
{
	struct xshard *sh = x->sh;
	bool dist = two_phase(j) && sh->done == 1;
	size_t len = dist ? (size_t)sh->k * sh->k * sizeof(double)
			  : (size_t)(sh->hi - sh->lo) * sizeof(float);
	double *d = NULL;
	const void *p;
	int err;

	if (dist) {
		d = trib_calloc(1, len ? len : 1);
		if (!d || (sh->lo < sh->hi && rt_node_xshard_dist(a->n, r, d))) {
			trib_free(d);
			return;
		}
		p = d;
	} else {
		p = sh->lo < sh->hi ? (const void *)(rt_node_xshard_out(a->n, r) + sh->lo) : "";
	}
	if (x->top == a->rank) {
		err = top_take(x, j, (uint32_t)a->rank, dist ? SH_DIST : SH_RANGE, p, len, sh->lo,
			       sh->hi);
		if (!err)
			sh->delivered = sh->done;
	} else {
		err =
		    sh_send(a, x, x->top, dist ? SH_DIST : SH_RANGE,
			    json_pack("{s:s, s:I, s:I}", "op", dist ? "shard_dist" : "shard_range",
				      "lo", (json_int_t)sh->lo, "hi", (json_int_t)sh->hi),
			    p, len);
		if (!err)
			sh->up_sending = true;
	}
	trib_free(d);
}

/* The top: the controller hears that this partition makes no model (model_done, "failed"). */
#define SH_FAIL_AGAIN_NS (2ull * 1000000000ull)
static void fail_tell(struct rt_agent *a, struct xround *x)
{
	struct xshard *sh = x->sh;
	struct pend *pd;
	json_t *h = json_pack("{s:s, s:s, s:i, s:i, s:s}", "op", "model_done", "job", x->job,
			      "round", (json_int_t)x->round, "updates", (json_int_t)sh->k,
			      "failed", sh->why);

	sh->fail_next_ns = trib_now_ns() + SH_FAIL_AGAIN_NS;
	if (!h || rt__agent_to_ctl(a, h, NULL, 0, PK_SHARD, &pd))
		return; /* again after SH_FAIL_AGAIN_NS */
	sh->fail_sending = true;
	pd->x = x;
	pd->top = 0;
	pd->what = SH_FAIL;
	pd->gen = sh->gen;
}

void rt__agent_shard_step(struct rt_agent *a, struct xround *x)
{
	struct rt_job *j = rt_job_find(a->n, x->job);
	struct xshard *sh = x->sh;
	const struct shm_desc *mine = NULL;
	uint32_t me = (uint32_t)a->rank, nmine = 0, count;
	struct rt_round *r;
	bool all = false;

	if (!j || !j->algo.rule || !sh || !x->closed || x->have_result || a->rank < 0 ||
	    me >= x->nnodes)
		return;
	count = x->counts[me];
	r = rt_job_round_at(j, x->round);
	if (count) {
		if (!r)
			return; /* the local round is not open here yet */
		mine = rt_round_updates(r, &nmine, &all);
		if (!all || nmine != count)
			return; /* counted updates still on their way into this node */
		if (!sh->mgs) {
			sh->mgs = trib_malloc(nmine * sizeof(*sh->mgs));
			if (!sh->mgs)
				return; /* again next tick */
			for (uint32_t i = 0; i < nmine; i++)
				sh->mgs[i] = gseq_of(x, i);
		}
		/* 1. The slices of this node's updates to every other owner. */
		for (uint32_t o = 0; o < x->nnodes; o++)
			if (x->counts[o] && o != me && !sh->sent[o] && !sh->sending[o])
				slices_send(a, x, j, mine, nmine, (int)o);
	}
	if (sh->owner && !sh->stale) {
		/* 2. Phase 1 once every slice of the range is here. */
		if (!sh->started)
			owner_start(a, x, r, mine, nmine);
		/* 3. Its output to the top. */
		if (sh->done > sh->delivered && !sh->up_sending)
			owner_up(a, x, j, r);
		/* 4. Krum, Bulyan: phase 2 with the top's selection. */
		if (sh->sel && sh->started == 1 && sh->done == 1 && sh->delivered == 1) {
			int err =
			    sh->lo < sh->hi ? rt_node_xshard_phase2(a->n, r, sh->sel, sh->nsel) : 0;

			if (!err && sh->lo == sh->hi)
				sh->done = 2; /* an empty range: nothing to trim or average */
			if (err)
				trib_error("job %s round %u: phase 2 of [%llu, %llu): %s", x->job,
					   x->round, (unsigned long long)sh->lo,
					   (unsigned long long)sh->hi, strerror(-err));
			else
				sh->started = 2;
		}
	}
	if (x->top != a->rank)
		return;
	/* 5. The top: the selection to every owner, then the ranges into the model. */
	if (two_phase(j) && !sh->selected && !sh->select_failed)
		top_select(x, j);
	if (sh->select_failed && !sh->fail_sending && trib_now_ns() >= sh->fail_next_ns)
		fail_tell(a, x);
	if (sh->selected) {
		for (uint32_t o = 0; o < x->nnodes; o++) {
			if (!x->counts[o] || sh->sel_sent[o] || sh->sel_sending[o])
				continue;
			if (o == me) {
				sh->sel_sent[o] = true;
				sel_take(a, x, sh->tsel, sh->tm);
				if (x->sh != sh)
					return;
				continue;
			}
			if (!sh_send(
				a, x, (int)o, SH_SEL,
				json_pack("{s:s, s:I}", "op", "shard_sel", "m", (json_int_t)sh->tm),
				sh->tsel, sh->tm * sizeof(uint32_t)))
				sh->sel_sending[o] = true;
		}
	}
	top_finish(a, x, j);
}

void rt_agent_on_shard_phase(struct rt_agent *a, struct rt_job *j, struct rt_round *r,
			     uint32_t phase)
{
	struct xround *x = a ? rt__agent_xr_get(a, j->name, rt_round_number(r), false) : NULL;

	if (!x || !x->sh)
		return;
	if (phase && x->sh->stale) {
		/* The old partition's shards are done: the new one starts. */
		x->sh->stale = false;
	} else if (phase && phase == x->sh->started) {
		x->sh->done = phase;
		trib_debug("job %s round %u: phase %u of [%llu, %llu) done", x->job, x->round,
			   phase, (unsigned long long)x->sh->lo, (unsigned long long)x->sh->hi);
	}
	rt__agent_shard_step(a, x);
}

void rt__agent_on_shard_reply(struct rt_agent *a, struct pend *pd, struct ctl_event *ev)
{
	struct xround *x = pd->x;
	struct xshard *sh = x ? x->sh : NULL;
	bool ok = ev->kind == CTL_EV_REPLY && json_is_true(json_object_get(ev->hdr, "ok"));

	if (!sh || sh->gen != pd->gen || pd->top < 0 || pd->top >= (int)CTL_MAX_NODES)
		return; /* for a partition that is gone: the new one sends anew */
	switch (pd->what) {
	case SH_SLICES:
		sh->sending[pd->top] = false;
		sh->sent[pd->top] = ok;
		break;
	case SH_SEL:
		sh->sel_sending[pd->top] = false;
		sh->sel_sent[pd->top] = ok;
		break;
	case SH_FAIL:
		sh->fail_sending = false;
		return; /* told again after SH_FAIL_AGAIN_NS until the model comes */
	default:
		sh->up_sending = false;
		if (ok)
			sh->delivered = sh->done;
		break;
	}
	if (ok) {
		a->shard_bytes += pd->bytes;
		rt__agent_shard_step(a, x);
	} else {
		trib_debug("job %s round %u: shard message %d to rank %d not taken (%s); again "
			   "next tick",
			   x->job, x->round, pd->what, pd->top,
			   ev->kind == CTL_EV_REPLY ? jstr(ev->hdr, "error", "?")
						    : strerror(-ev->err));
	}
}

/* An owner: a sender's slices land in one slot, each update's segment table after them. */
static int slices_land(struct rt_agent *a, struct xround *x, struct rt_job *j, uint32_t from,
		       struct ctl_event *ev)
{
	struct xshard *sh = x->sh;
	json_t *ups = json_object_get(ev->hdr, "ups"), *u, *e;
	uint64_t body = (ev->plen + 63) & ~63ull, nsegs = 0, slot, first;
	struct shm_seg *segs;
	size_t i, s;
	int err;

	json_t *seqs = json_object_get(ev->hdr, "seqs");

	err = rt_shard_slices_check(ups, x->counts[from], j->nschema, sh->lo, sh->hi, ev->plen,
				    &nsegs);
	if (err || json_array_size(seqs) != x->counts[from])
		return -EINVAL;
	err = shm_slot_alloc(a->n->arena, body + nsegs * sizeof(struct shm_seg) + 64, &slot);
	if (err)
		return err;
	/* The one copy on this node: from nng's receive buffer into the arena. */
	memcpy(shm_arena_ptr(a->n->arena, slot), ev->payload, ev->plen);
	segs = shm_arena_ptr(a->n->arena, slot + body);
	first = ctl_shard_first(x->counts, x->nnodes, from);
	nsegs = 0;
	json_array_foreach(ups, i, u)
	{
		struct shm_desc *d = &sh->descs[first + i];
		json_int_t g = json_integer_value(json_array_get(seqs, i));

		sh->gs[first + i] = g >= 0 && g <= UINT32_MAX ? (uint32_t)g : UINT32_MAX;

		memset(d, 0, sizeof(*d));
		d->version = SHM_ABI_VERSION;
		d->kind = SHM_DESC_UPDATE;
		d->src = SHM_DST_RUNTIME;
		d->job = j->id;
		d->round = x->round;
		d->nsegs = (uint32_t)json_array_size(u);
		d->slot_off = slot;
		d->segs_off = slot + body + nsegs * sizeof(struct shm_seg);
		d->weight = 1.0;
		d->count = 1;
		json_array_foreach(u, s, e)
		{
			struct shm_seg *g = &segs[nsegs++];

			memset(g, 0, sizeof(*g));
			g->src_off = slot + (uint64_t)json_integer_value(json_array_get(e, 0));
			g->n_elem = (uint64_t)json_integer_value(json_array_get(e, 1));
			g->dst_elem = (uint64_t)json_integer_value(json_array_get(e, 2));
			g->dtype = (uint16_t)json_integer_value(json_array_get(e, 3));
			g->scale = (float)json_number_value(json_array_get(e, 4));
		}
	}
	sh->slot[from] = slot;
	sh->have[from] = true;
	return 0;
}

void rt__agent_on_shard(struct rt_agent *a, struct ctl_event *ev)
{
	const char *op = jstr(ev->hdr, "op", "");
	const char *job = jstr(ev->hdr, "job", "");
	struct rt_job *j = rt_job_find(a->n, job);
	uint32_t round = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	json_int_t from = json_integer_value(json_object_get(ev->hdr, "from"));
	struct xround *x = j ? rt__agent_xr_get(a, job, round, false) : NULL;
	struct xshard *sh = x ? x->sh : NULL;
	int err = 0;

	if (j && round < j->completed) {
		rt__agent_reply(a, ev, rt__agent_ok_json()); /* that round's model exists */
		return;
	}
	if (!j || !j->algo.rule || from < 0 || from >= (json_int_t)CTL_MAX_NODES) {
		rt__agent_reply(a, ev, rt__agent_err_json(400, "bad shard message"));
		return;
	}
	if (!sh || !x->closed ||
	    (uint64_t)json_integer_value(json_object_get(ev->hdr, "gen")) != (sh->gen >> 1)) {
		/* Its close has not reached this node yet, or it is of another partition. */
		rt__agent_reply(a, ev, rt__agent_err_json(409, "not this round's partition here"));
		return;
	}
	if ((uint32_t)from >= x->nnodes || !x->counts[from]) {
		err = -EINVAL;
	} else if (!strcmp(op, "shard_slices")) {
		if (!sh->owner || (uint32_t)from == (uint32_t)a->rank)
			err = -EINVAL;
		else if (!sh->have[from])
			err = slices_land(a, x, j, (uint32_t)from, ev);
	} else if (!strcmp(op, "shard_sel")) {
		uint32_t m = (uint32_t)json_integer_value(json_object_get(ev->hdr, "m"));
		uint32_t *sel = NULL;

		if (!sh->owner || from != x->top || !m || m > sh->k ||
		    ev->plen != m * sizeof(uint32_t) || !(sel = trib_malloc(ev->plen))) {
			err = sel || !m || m > sh->k ? -EINVAL : -ENOMEM;
		} else {
			memcpy(sel, ev->payload, ev->plen); /* aligned: the payload may not be */
			for (uint32_t i = 0; i < m && !err; i++)
				err = sel[i] >= sh->k ? -EINVAL : 0;
			if (!err) {
				rt__agent_reply(a, ev, rt__agent_ok_json());
				sel_take(a, x, sel, m);
				trib_free(sel);
				return;
			}
		}
		trib_free(sel);
	} else if (!strcmp(op, "shard_dist") || !strcmp(op, "shard_range")) {
		err = x->top != a->rank
			  ? -EINVAL
			  : top_take(x, j, (uint32_t)from, op[6] == 'd' ? SH_DIST : SH_RANGE,
				     ev->payload, ev->plen,
				     (uint64_t)json_integer_value(json_object_get(ev->hdr, "lo")),
				     (uint64_t)json_integer_value(json_object_get(ev->hdr, "hi")));
	} else {
		err = -EINVAL;
	}
	if (err) {
		rt__agent_reply(a, ev,
				rt__agent_err_json(err == -EINVAL ? 400 : 503,
						   err == -EINVAL ? "bad shard message"
								  : "aggregation memory is full"));
		return;
	}
	rt__agent_reply(a, ev, rt__agent_ok_json());
	rt__agent_shard_step(a, x);
}
