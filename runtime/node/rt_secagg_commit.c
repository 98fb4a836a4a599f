// SPDX-License-Identifier: MIT
/* A secure round's model: the server holds only the unmasked mean, and stores it as the version. */
#include "rt_node_priv.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "ctl_store.h"
#include "rt_secagg.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

int rt_job_secagg_commit(struct rt_node *n, struct rt_job *j, const float *model,
			 uint32_t clients, double weight, uint64_t opened_ns)
{
	struct trib_blob *b;
	struct ctl_round rec;
	int err;

	/* A secure job has no plain rounds (rt_api refuses its updates): nothing else moves it. */
	if (!j->secagg.on || j->open || j->inflight || j->round != j->completed)
		return -EBUSY;
	b = rt__model_blob(j, model, j->completed + 1);
	if (!b)
		return -ENOMEM;
	/* Durable first (the file, then the version): a crash between keeps the old version. */
	err = rt__store_blob(n, j, b);
	if (!err)
		err = ctl_store_round_advance(n->store, j->db_id, j->completed, j->completed + 1);
	if (err) {
		trib_blob_release(b);
		return err;
	}
	memset(&rec, 0, sizeof(rec));
	rec.job_id = j->db_id;
	rec.round = j->round;
	rec.closed_unix = (int64_t)time(NULL);
	rec.n_updates = clients;
	rec.total_weight = weight;
	rec.duration_ms = (trib_now_ns() - opened_ns) / 1000000u;
	rec.clients = clients;
	if (ctl_store_round_record(n->store, &rec))
		trib_warn("job %s round %u: the round's record (history) was not saved", j->name,
			  j->round);
	trib_blob_release(j->model);
	j->model = b;
	j->completed++;
	j->round = j->completed;
	j->last_round_ms = rec.duration_ms;
	trib_info("job %s round %u: secure aggregation of %u clients (weight %g); model v%u",
		  j->name, rec.round, clients, weight, j->completed);
	if (n->hooks.model_ready)
		n->hooks.model_ready(n->hooks.ctx, j);
	return 0;
}

void rt_job_secagg_drop(struct rt_job *j)
{
	if (!j->sa_live)
		return;
	rt_secagg_free(j->sa_live->r);
	trib_free(j->sa_live->ids);
	trib_free(j->sa_live);
	j->sa_live = NULL;
}
