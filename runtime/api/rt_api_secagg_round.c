// SPDX-License-Identifier: MIT
/*
 * A secure round's progress (issue 19): its stages end when complete or at their deadlines (the
 * API's tick calls rt__api_secagg_tick every RT_LOOP_TICK_MS, requests or not); the masked stage's
 * end closes the job's tree round, the unmask stage waits for the tree's masked sum, hands the
 * mask streams to the job's functions and adds their correction; the mean is committed. The
 * routes are rt_api_secagg.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api_priv.h"
#include "fn_secagg.h"
#include "rt_api.h"
#include "rt_secagg.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

uint64_t rt__api_secagg_stage_ns(const struct rt_job *j)
{
	return (uint64_t)j->round_timeout_s * 1000000000ull;
}

/*
 * Before the unmask stage ends its masked sum must be in: the job's function tree folded the
 * inputs of U3 (rt_job_secagg_close ended its round) and its top handed the sum to the node.
 * 0 when the round can end the stage (the sum handed to @L->r, or the round failed), 1 to wait.
 * Past the deadline without a sum the round fails: nothing is unmasked.
 */
static int sa_take_sum(struct rt_job *j, struct rt_sa_live *L, bool due)
{
	const uint32_t *sum;
	uint32_t count = 0, want = rt_secagg_inputs(L->r);

	if (L->have_sum)
		return 0;
	sum = rt_job_secagg_sum(j, L->round, &count);
	if (!sum && want && !due)
		return 1;
	if (!want) {
		L->have_sum = true; /* end_unmask fails it below the threshold: no sum needed */
		return 0;
	}
	if (!sum || count != want || rt_secagg_set_sum(L->r, sum, (size_t)j->n_elem + 1)) {
		char why[160];

		snprintf(why, sizeof(why), "unmask: the function tree's masked sum %s (%u of %u "
			 "inputs)", sum ? "does not hold the round's inputs" :
			 "did not arrive before the deadline", count, want);
		rt_secagg_fail(L->r, why);
		return 0;
	}
	L->have_sum = true;
	return 0;
}

/*
 * Ends every stage that is complete or past its deadline; a round DONE becomes the job's next
 * model, a round FAILED says why in the job's status. Either way the round is dropped (its
 * secrets wiped): the next advertise starts a new one.
 */
void rt__api_secagg_step(struct rt_node *n, struct rt_job *j)
{
	struct rt_sa_live *L = j->sa_live;
	uint64_t now = trib_now_ns();
	enum rt_secagg_stage st;

	if (!L)
		return;
	for (;;) {
		const struct fn_secagg_stream *streams;
		const struct fn_secagg_pair *pairs;
		size_t ns, np = 0;
		bool due;
		uint64_t t0;

		st = rt_secagg_stage(L->r);
		if (st == RT_SECAGG_DONE || st == RT_SECAGG_FAILED)
			break;
		due = now >= L->deadline_ns;
		if (st == RT_SECAGG_UNMASK && rt_secagg_streams(L->r, &streams, &pairs, &np)) {
			/* The shards expand the masks; their correction, a failure, or the deadline. */
			const uint32_t *corr = rt_job_secagg_correction(n, j, L->round);
			const char *lost = corr ? NULL : rt_job_secagg_failure(j, L->round);

			if (!corr && !lost && !due)
				return;
			t0 = trib_now_ns();
			if (corr)
				rt_secagg_correct(L->r, corr, (size_t)j->n_elem + 1);
			else if (lost)
				rt_secagg_fail(L->r, lost); /* at once: waiting would change nothing */
			else
				rt_secagg_fail(L->r, "unmask: the functions expanding the masks did not "
					       "finish before the deadline");
			L->unmask_ns += trib_now_ns() - t0;
			L->expand_ns = trib_now_ns() - L->expand_ns;
			continue;
		}
		/* Resumed past the unmask stage's end (in its log): it ends once the sum is in. */
		if (!rt_secagg_stage_complete(L->r) && !due &&
		    !(st == RT_SECAGG_UNMASK && L->end_now))
			return;
		if (st == RT_SECAGG_UNMASK && sa_take_sum(j, L, due))
			return; /* the tree's sum is not here yet: the tick calls again */
		t0 = trib_now_ns();
		rt_secagg_end_stage(L->r);
		/* Who is in and out is decided once: in the log before any client sees it. */
		if (!(st == RT_SECAGG_UNMASK && L->end_now))
			(void)rt_sa_log_end(n, j, (int)st); /* an error fails the round */
		if (st == RT_SECAGG_MASKED)
			rt_job_secagg_close(n, j); /* U3 is fixed: the tree folds what it has */
		ns = st == RT_SECAGG_UNMASK ? rt_secagg_streams(L->r, &streams, &pairs, &np) : 0;
		if (st == RT_SECAGG_UNMASK)
			L->unmask_ns += trib_now_ns() - t0; /* the rebuilds and the streams' keys */
		if (ns) {
			uint64_t t1 = trib_now_ns();
			int err = rt_job_secagg_unmask_start(n, j, L->round, streams, ns, pairs, np);

			L->start_ns = trib_now_ns() - t1; /* the task, the shards' configs or spawns */
			L->nstreams = (uint32_t)(ns + np);
			if (err == -EOPNOTSUPP) {
				/* tcp: shards have no shared output; said once per round. */
				trib_info("job %s round %u: tcp data plane: the masks are expanded on "
					  "the server thread", j->name, L->round);
				rt_secagg_correct(L->r, NULL, (size_t)j->n_elem + 1);
				L->unmask_ns += trib_now_ns() - t1;
			} else if (err) {
				char why[160];

				snprintf(why, sizeof(why), "unmask: starting the functions that expand "
					 "the masks: %s", strerror(-err));
				rt_secagg_fail(L->r, why);
			} else {
				L->expand_ns = trib_now_ns();
			}
		}
		L->deadline_ns = now + rt__api_secagg_stage_ns(j);
	}
	if (st == RT_SECAGG_DONE) {
		float *out = NULL;
		struct trib_blob *b = rt_job_secagg_blob(j, &out);
		const uint32_t *sum;
		uint32_t w = 0;
		int err = b ? rt_secagg_result(L->r, &sum, &w, out) : -ENOMEM;

		/* The model first, then the round's state and records, then its slots. */
		if (!err)
			err = rt_job_secagg_commit(n, j, b, rt_secagg_inputs(L->r), w, L->opened_ns);
		else
			trib_blob_release(b);
		rt_sa_log_over(n, j, L->round);
		rt_job_secagg_release(n, j);
		if (err) {
			snprintf(j->sa_failed, sizeof(j->sa_failed),
				 "the unmasked mean could not be stored: %s", strerror(-err));
			j->sa_failed_round = L->round;
			trib_warn("job %s round %u: secure round not stored: %s", j->name, L->round,
				  strerror(-err));
		} else {
			j->sa_failed[0] = '\0';
			trib_info("job %s round %u: secure round of %u inputs in %.3f s; unmasking: "
				  "%.3f ms on the server thread (rebuilds, self-mask keys, the "
				  "correction added) + %.3f ms starting the shards; %.3f ms from "
				  "their start to the correction (%u streams expanded)", j->name, L->round,
				  rt_secagg_inputs(L->r),
				  (double)(trib_now_ns() - L->opened_ns) / 1e9,
				  (double)L->unmask_ns / 1e6, (double)L->start_ns / 1e6,
				  (double)L->expand_ns / 1e6, L->nstreams);
		}
	} else {
		snprintf(j->sa_failed, sizeof(j->sa_failed), "%s", rt_secagg_why(L->r));
		j->sa_failed_round = L->round;
		trib_info("job %s round %u: secure round failed: %s", j->name, L->round,
			  j->sa_failed);
		/* A tree round still folding is discarded when its sum comes (nothing unmasked). */
		rt_sa_log_over(n, j, L->round);
		rt_job_secagg_close(n, j);
	}
	rt_job_secagg_drop(j);
	rt_job_secagg_release(n, j);
}

/* Every secure round in progress of the node: its stages end at their deadlines, requests or not. */
void rt__api_secagg_tick(struct rt_node *n)
{
	for (struct rt_job *j = n->jobs; j; j = j->next)
		if (j->sa_live)
			rt__api_secagg_step(n, j);
}

void rt__api_secagg_status(struct rt_node *n, struct rt_job *j, json_t *o)
{
	json_t *sa;

	if (!j->secagg.on)
		return;
	rt__api_secagg_step(n, j);
	sa = json_pack("{s:I, s:I, s:f, s:I, s:I}", "threshold", (json_int_t)j->secagg.threshold,
		       "neighbours", (json_int_t)j->secagg.neighbours, "clip",
		       (double)j->secagg.clip, "bits", (json_int_t)j->secagg.bits, "max_samples",
		       (json_int_t)j->secagg.max_samples);
	if (!sa)
		return;
	/* A cluster: the rounds, their progress and failures are that node's (its status). */
	if (j->sa_at[0])
		json_object_set_new(sa, "rounds_run_on", json_string(j->sa_at_name));
	if (j->sa_live)
		json_object_set_new(sa, "round_in_progress",
				    json_pack("{s:I, s:s, s:I, s:I}", "round",
					      (json_int_t)j->sa_live->round, "stage",
					      rt_secagg_stage_name(rt_secagg_stage(j->sa_live->r)),
					      "clients", (json_int_t)j->sa_live->n, "alive",
					      (json_int_t)rt_secagg_alive(j->sa_live->r)));
	if (j->sa_failed[0])
		json_object_set_new(sa, "last_failure",
				    json_pack("{s:I, s:s}", "round", (json_int_t)j->sa_failed_round,
					      "why", j->sa_failed));
	json_object_set_new(o, "secagg", sa);
}

