// SPDX-License-Identifier: MIT
/*
 * A cluster job's starting model (PUT /model), server-optimiser state, deadlines and FedBuff
 * parameters: what the controller keeps so that a cluster computes what one node does.
 */
#include <errno.h>
#include <string.h>

#include "ctl_daemon.h"
#include "ctl_models.h"
#include "ctl_store.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/* FedBuff's parameters, from the definition the nodes checked (rt_algo.c's defaults). */
void ctl__job_async(struct cjob *j, const json_t *o)
{
	json_t *s = json_object_get(o, "max_staleness");

	j->async = !strcmp(ctl__jstr(o, "algorithm", ""), "fedbuff");
	j->flora = !strcmp(ctl__jstr(o, "algorithm", ""), "flora");
	j->secagg = json_is_object(json_object_get(o, "secagg"));
	if (!j->async)
		return;
	j->max_staleness = json_is_integer(s) ? (uint32_t)json_integer_value(s) : 10;
	if (!j->cpr) /* buffer_size sets clients_per_round */
		j->cpr = (uint32_t)json_integer_value(json_object_get(o, "buffer_size"));
}

/*
 * The optimiser state of the loaded version, after the model in the same buffer. None (a job
 * without an optimiser, or version 0's fresh state) is not an error: the top starts it fresh.
 */
int ctl__job_opt_load(struct ctl *c, struct cjob *j)
{
	size_t mlen = j->fmt.n_elem * sizeof(float), slen;
	uint8_t *st;
	float *grown;
	int err = ctl_store_opt_get(c->store, j->db_id, j->completed, &st, &slen);

	if (err == -ENOENT)
		return 0;
	if (err)
		return err;
	grown = trib_realloc(j->model, mlen + slen);
	if (!grown) {
		trib_free(st);
		return -ENOMEM;
	}
	memcpy((uint8_t *)grown + mlen, st, slen);
	trib_free(st);
	j->model = grown;
	j->opt_len = slen;
	trib_info("job %s: server-optimiser state of v%u loaded (%zu bytes)", j->name,
		  j->completed, slen);
	return 0;
}

/*
 * PUT /v1/jobs/{job}/model on a node: the starting model (version 0), checked there. The
 * controller decides whether it is still "before the first update" for the whole cluster,
 * writes round-0.safetensors and sends it to every node; a round-0 close says it exists, so the
 * top's node waits for it (rt_agent_round.c).
 */
void ctl__on_model_put(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = ctl__job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	struct cround *cr = j ? ctl__round_get(j, 0) : NULL;
	size_t mlen = j ? j->fmt.n_elem * sizeof(float) : 0;
	float *m;
	int err;

	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	if (ev->plen != mlen) {
		*rep = ctl__err_reply(400, "model_put: not the job's size");
		return;
	}
	if (j->completed || j->round || (cr && cr->count)) {
		*rep = ctl__err_reply(409, "the starting model can only be set before the first "
				      "update (the cluster has counted one)");
		return;
	}
	m = trib_malloc(mlen ? mlen : 1);
	if (!m) {
		*rep = ctl__err_reply(503, "out of memory");
		return;
	}
	memcpy(m, ev->payload, mlen);
	err = ctl_model_write(c->o->data_dir, j->name, &j->fmt, m, 0);
	if (err) {
		trib_error("job %s: writing the starting model: %s", j->name, strerror(-err));
		trib_free(m);
		*rep = ctl__err_reply(503, "the controller could not store the model");
		return;
	}
	trib_free(j->model);
	j->model = m;
	j->opt_len = 0;
	trib_info("job %s: starting model set (version 0)", j->name);
	ctl__send_model(c, j);
	*rep = json_pack("{s:b, s:s, s:i}", "ok", 1, "job", j->name, "round", 0);
}

void ctl__jobs_deadline_tick(struct ctl *c)
{
	uint64_t now = trib_now_ns();

	if (ctl__reconciling(c))
		return;
	for (struct cjob *j = c->jobs; j; j = j->next) {
		struct cround *cr = j->round_timeout_s ? ctl__round_get(j, j->round) : NULL;
		uint32_t need = j->min_clients ? j->min_clients : j->cpr;

		/* The clock starts at the round's first update, as on one node. */
		if (!cr || cr->state != CR_OPEN || !cr->count || cr->count < need ||
		    now - cr->open_ns < (uint64_t)j->round_timeout_s * 1000000000ull)
			continue;
		ctl__round_close(c, j, cr);
	}
}

void ctl__on_secagg_model(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	struct cjob *j = ctl__job_find(c, json_string_value(json_object_get(ev->hdr, "job")));
	uint32_t r = (uint32_t)json_integer_value(json_object_get(ev->hdr, "round"));
	struct cround *cr;
	uint64_t dur;
	float *m;
	int err;

	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	/* Only the node the job message names runs its secure rounds (rank 0). */
	if (!j->secagg || ctl__session_rank(c, ev->hdr) != 0) {
		*rep = ctl__err_reply(409, "secagg_model: not a secure job, or not from the node "
				      "that runs its rounds (rank 0)");
		return;
	}
	if (ev->plen != j->fmt.n_elem * sizeof(float)) {
		*rep = ctl__err_reply(400, "secagg_model: not the job's size");
		return;
	}
	if (r != j->completed || (j->num_rounds && j->completed >= j->num_rounds)) {
		*rep = ctl__err_reply(409, "secagg_model: not the job's next version (another "
				      "round was committed, or the job is done)");
		return;
	}
	cr = ctl__round_get(j, r);
	if (!cr)
		cr = ctl__round_new(j, r);
	m = cr ? trib_malloc(ev->plen ? ev->plen : 1) : NULL;
	if (!m) {
		*rep = ctl__err_reply(503, "out of memory");
		return;
	}
	memcpy(m, ev->payload, ev->plen);
	err = ctl_model_store(c->o->data_dir, j->name, &j->fmt, &j->store, r, m);
	if (err) {
		trib_free(m);
		*rep = ctl__err_reply(503, "the controller could not store the model");
		return;
	}
	trib_free(j->model);
	j->model = m;
	j->opt_len = 0;
	cr->top = 0;
	/* Its record spans the secure round, as the node that ran it measured it. */
	dur = (uint64_t)json_integer_value(json_object_get(ev->hdr, "duration_ms")) * 1000000ull;
	if (cr->state == CR_OPEN && dur && dur < trib_now_ns())
		cr->open_ns = trib_now_ns() - dur;
	cr->n_updates = (uint32_t)json_integer_value(json_object_get(ev->hdr, "clients"));
	cr->weight = json_number_value(json_object_get(ev->hdr, "weight"));
	if (j->round <= r)
		j->round = r + 1; /* no plain round of a secure job is ever opened */
	trib_info("job %s round %u: secure round's model v%u from node %s: %u clients (weight %g)",
		  j->name, r, r + 1, c->nodes[0].name, cr->n_updates, cr->weight);
	ctl__job_advance(c, j, cr);
	*rep = json_pack("{s:b, s:s, s:i}", "ok", 1, "job", j->name, "version",
			 (json_int_t)(r + 1));
}
