// SPDX-License-Identifier: MIT
/*
 * GET /v1/jobs/{job}/rounds[?from=r&limit=n] in a cluster: the controller's
 * paged list of round records, the same shape a single node answers
 * ({"rounds": [record, ...], "next": r|null}, oldest first from @from).
 *
 * Where a record comes from: rounds the controller still holds in memory
 * (the last CTL_ROUNDS_KEPT, and the open one) are shown as GET
 * .../rounds/{r} shows them (ctl__round_json); older rounds are gone from
 * memory but their rows are in the store, so they are shown from the row
 * (state "done", with the columns the store keeps). The node checked from
 * and limit already; they are clamped again here because a message is input.
 *
 * POST .../evaluations in a cluster (op "evaluation"): the node checks the
 * body as a single node does and the controller keeps it in its store with
 * the single node's rules (one per client per version, Idempotency-Key) and
 * its sums format; a round's record shows the evaluation of the version it
 * made (ctl__round_json_extra).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ctl_daemon.h"
#include "ctl_store_rec.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"

#define LIST_MAX 1000u

struct page {
	json_t *rounds;
	uint32_t below;	 /* rows only under this round (memory has it and above) */
	uint32_t last;	 /* the last round appended */
	bool any;
	uint32_t cpr;
};

static json_t *eval_json(struct ctl *c, const struct cjob *j, uint32_t version);
static json_t *round_sums(const struct cround *cr);
static json_t *sums_means(const json_t *sums);

static int row_add(void *ctx, const struct ctl_round_rec *r)
{
	struct page *p = ctx;
	json_t *m = NULL, *o;

	if (r->round >= p->below)
		return 1; /* memory has it: stop here */
	if (r->metrics_json)
		m = json_loads(r->metrics_json, 0, NULL);
	if (!json_is_object(m)) {
		json_decref(m);
		m = json_object();
	}
	o = json_pack("{s:i, s:s, s:i, s:i, s:i, s:i, s:I, s:o, s:i, s:n}", "round",
		      (json_int_t)r->round, "state", "done", "received", (json_int_t)r->n_updates,
		      "clients_per_round", (json_int_t)p->cpr, "updates",
		      (json_int_t)r->n_updates, "clients", (json_int_t)r->clients, "bytes",
		      (json_int_t)r->bytes, "metrics", m, "metrics_updates",
		      (json_int_t)r->metrics_updates, "evaluation");
	if (!o)
		return -1;
	json_object_set_new(o, "opened_at", r->opened_at > 0 ? json_real(r->opened_at)
							     : json_null());
	json_object_set_new(o, "closed_at", r->closed_at > 0 ? json_real(r->closed_at)
							     : json_null());
	json_object_set_new(o, "duration_s", json_real((double)r->duration_ms / 1e3));
	json_array_append_new(p->rounds, o);
	p->last = r->round;
	p->any = true;
	return 0;
}

json_t *ctl__rec_open_json(const struct cjob *j)
{
	return json_pack("{s:i, s:s, s:i, s:i, s:i, s:i, s:[], s:{}, s:[], s:o, s:i, s:n, s:n, "
			 "s:n, s:n}",
			 "round", (json_int_t)j->round, "state", "open", "received", 0,
			 "clients_per_round", (json_int_t)j->cpr, "updates", 0, "clients", 0,
			 "lost_nodes", "nodes", "edges", "metrics", json_object(),
			 "metrics_updates", 0, "evaluation", "opened_at", "closed_at",
			 "duration_s");
}

bool ctl__rec_round_stored(struct ctl *c, struct cjob *j, uint32_t r, json_t **rep)
{
	struct page p = {.rounds = json_array(), .below = r + 1, .cpr = j->cpr};
	json_t *o;

	if (!p.rounds || j->db_id <= 0 ||
	    ctl_store_round_page(c->store, j->db_id, r, 1, row_add, &p) < 0 ||
	    !(o = json_array_get(p.rounds, 0)) ||
	    json_integer_value(json_object_get(o, "round")) != (json_int_t)r) {
		json_decref(p.rounds);
		return false;
	}
	json_object_set_new(o, "evaluation", eval_json(c, j, r + 1));
	*rep = json_pack("{s:b, s:O}", "ok", 1, "round", o);
	json_decref(p.rounds);
	return *rep != NULL;
}

void ctl__on_rounds_list(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = ctl__jstr(ev->hdr, "job", NULL);
	json_int_t from = json_integer_value(json_object_get(ev->hdr, "from"));
	json_int_t limit = json_integer_value(json_object_get(ev->hdr, "limit"));
	struct cjob *j = NULL;
	struct page p = {0};
	uint32_t lo, next_r = 0;
	bool more = false;
	int err;

	for (struct cjob *x = c->jobs; x && name; x = x->next)
		if (!strcmp(x->name, name))
			j = x;
	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	if (from < 0 || from > (json_int_t)UINT32_MAX || limit < 1 || limit > (json_int_t)LIST_MAX) {
		*rep = ctl__err_reply(400, "rounds_list: from 0..4294967295, limit 1..1000");
		return;
	}
	p.rounds = json_array();
	p.cpr = j->cpr;
	/* Memory holds every round from its oldest kept one (or the open one) up. */
	lo = j->rounds ? j->rounds->round : j->round;
	p.below = lo;
	if ((uint32_t)from < lo && j->db_id > 0) {
		err = ctl_store_round_page(c->store, j->db_id, (uint32_t)from, (uint32_t)limit,
					   row_add, &p);
		if (err < 0) {
			json_decref(p.rounds);
			*rep = ctl__err_reply(503, "reading the round records failed; see the "
					      "controller's log");
			return;
		}
	}
	for (size_t i = 0; i < json_array_size(p.rounds); i++) {
		json_t *o = json_array_get(p.rounds, i);

		json_object_set_new(o, "evaluation",
				    eval_json(c, j, (uint32_t)json_integer_value(
							json_object_get(o, "round")) + 1));
	}
	for (struct cround *cr = j->rounds; cr; cr = cr->next) {
		if (cr->round < (uint32_t)from)
			continue;
		if (json_array_size(p.rounds) >= (size_t)limit) {
			/* Rows may have filled the page: go on after the last one shown. */
			more = true;
			next_r = p.any ? p.last + 1 : cr->round;
			break;
		}
		json_array_append_new(p.rounds, ctl__round_json(c, j, cr));
		p.last = cr->round;
		p.any = true;
	}
	/* The open round before its first update has no entry yet: shown as GET shows it. */
	if (!more && j->round >= (uint32_t)from && (!p.any || p.last < j->round) &&
	    (!j->num_rounds || j->round < j->num_rounds)) {
		if (json_array_size(p.rounds) >= (size_t)limit) {
			more = true;
			next_r = p.any ? p.last + 1 : j->round;
		} else {
			json_array_append_new(p.rounds, ctl__rec_open_json(j));
		}
	}
	*rep = json_pack("{s:b, s:o}", "ok", 1, "rounds", p.rounds);
	json_object_set_new(*rep, "next", more ? json_integer(next_r) : json_null());
}

/* --- evaluations (op "evaluation"), kept as a single node keeps them --- */

/* As runtime/node/rt_metrics.h's RT_MSUM_MAX: names one version's evaluations may have. */
#define EVAL_NAMES_MAX 64u

/*
 * Fold @metrics ({name: number}, checked by the node) with weight @w into
 * @sums ({"reports": r, "sums": {name: [sw, swx]}}, the store's format that
 * rt_msum_from_json reads): 0, or -E2BIG (nothing changed) past the name cap.
 */
static int sums_add(json_t *sums, const json_t *metrics, double w)
{
	json_t *s = json_object_get(sums, "sums"), *v;
	const char *k;
	size_t fresh = 0;

	json_object_foreach((json_t *)metrics, k, v)
		fresh += !json_object_get(s, k);
	if (json_object_size(s) + fresh > EVAL_NAMES_MAX)
		return -E2BIG;
	json_object_foreach((json_t *)metrics, k, v) {
		json_t *pair = json_object_get(s, k);
		double sw = pair ? json_number_value(json_array_get(pair, 0)) : 0;
		double swx = pair ? json_number_value(json_array_get(pair, 1)) : 0;

		json_object_set_new(s, k, json_pack("[f, f]", sw + w, swx + w * json_number_value(v)));
	}
	if (json_object_size(metrics))
		json_object_set_new(sums, "reports",
				    json_integer(json_integer_value(json_object_get(sums, "reports")) +
						 1));
	return 0;
}

static bool metrics_ok(const json_t *m)
{
	json_t *v;
	const char *k;

	if (!json_is_object(m) || json_object_size(m) > 16)
		return false;
	json_object_foreach((json_t *)m, k, v)
		if (!json_is_number(v) || !isfinite(json_number_value(v)) || !k[0] ||
		    strlen(k) > 64)
			return false;
	return true;
}

void ctl__on_evaluation(struct ctl *c, struct ctl_event *ev, json_t **rep)
{
	const char *name = ctl__jstr(ev->hdr, "job", NULL);
	const char *client = ctl__jstr(ev->hdr, "client", "");
	const char *key = ctl__jstr(ev->hdr, "key", "");
	json_int_t version = json_integer_value(json_object_get(ev->hdr, "version"));
	json_int_t samples = json_integer_value(json_object_get(ev->hdr, "samples"));
	const json_t *metrics = json_object_get(ev->hdr, "metrics");
	json_t *sums = NULL;
	uint32_t clients = 0;
	uint64_t had = 0;
	char *text = NULL, msg[320];
	struct cjob *j = NULL;
	int err;

	for (struct cjob *x = c->jobs; x && name; x = x->next)
		if (!strcmp(x->name, name))
			j = x;
	if (!j) {
		*rep = ctl__err_reply(404, "no such job");
		return;
	}
	if (version < 0 || version > (json_int_t)UINT32_MAX || samples < 1 ||
	    samples > (json_int_t)1 << 40 || !metrics_ok(metrics) || strlen(key) > 64) {
		*rep = ctl__err_reply(400, "evaluation: version, samples or metrics out of range");
		return;
	}
	/* Version 0 is the initial model; j->completed the latest stored. */
	if ((uint64_t)version > j->completed) {
		snprintf(msg, sizeof(msg), "evaluation: version %lld does not exist; job '%s' has "
			 "versions 0 to %u", (long long)version, j->name, j->completed);
		*rep = ctl__err_reply(404, msg);
		return;
	}
	err = ctl_store_eval_find(c->store, j->db_id, (uint32_t)version, client, key,
				  strlen(key), &clients);
	if (!err) {
		/* The key's evaluation: its first answer again. */
		*rep = json_pack("{s:b, s:I, s:I}", "ok", 1, "version", version, "clients",
				 (json_int_t)clients);
		return;
	}
	if (err == -EEXIST) {
		snprintf(msg, sizeof(msg), "client %s already has an evaluation of version %lld "
			 "(one per client per version); the same request again with its "
			 "Idempotency-Key gets its first answer", client, (long long)version);
		*rep = ctl__err_reply(409, msg);
		return;
	}
	if (err != -ENOENT)
		goto failed;
	clients = 0;
	err = ctl_store_eval_get(c->store, j->db_id, (uint32_t)version, &clients, &had, &text);
	if (!err) {
		sums = json_loads(text, 0, NULL);
		if (!json_is_object(json_object_get(sums, "sums")))
			err = -EIO;
	} else if (err == -ENOENT) {
		err = 0;
		sums = json_pack("{s:i, s:{}}", "reports", 0, "sums");
	}
	trib_free(text);
	text = NULL;
	if (!err && !sums)
		err = -ENOMEM;
	if (!err && sums_add(sums, metrics, (double)samples)) {
		json_decref(sums);
		snprintf(msg, sizeof(msg), "evaluation: version %lld's evaluations would name more "
			 "than %u metrics", (long long)version, EVAL_NAMES_MAX);
		*rep = ctl__err_reply(400, msg);
		return;
	}
	if (!err) {
		text = trib_json_dumps(sums, JSON_COMPACT);
		err = text ? 0 : -ENOMEM;
	}
	/* One thread: nothing else counts an evaluation of this job between get and put. */
	if (!err)
		err = ctl_store_eval_put(c->store, j->db_id, (uint32_t)version, clients + 1,
					 client, key, strlen(key), (uint64_t)samples, text);
	json_decref(sums);
	trib_free(text);
	if (!err) {
		*rep = json_pack("{s:b, s:I, s:I}", "ok", 1, "version", version, "clients",
				 (json_int_t)clients + 1);
		return;
	}
failed:
	snprintf(msg, sizeof(msg), "evaluation: the controller's store failed (%s); not counted, "
		 "send it again", strerror(-err));
	*rep = ctl__err_reply(503, msg);
}

/* The aggregate of @version's evaluations ({"version", "clients", "samples", "metrics"}), or null. */
static json_t *eval_json(struct ctl *c, const struct cjob *j, uint32_t version)
{
	uint32_t clients = 0;
	uint64_t samples = 0;
	char *text = NULL;
	json_t *doc, *means, *o, *v;
	const char *k;

	if (ctl_store_eval_get(c->store, j->db_id, version, &clients, &samples, &text))
		return json_null();
	doc = json_loads(text, 0, NULL);
	trib_free(text);
	means = json_object();
	json_object_foreach(json_object_get(doc, "sums"), k, v) {
		double sw = json_number_value(json_array_get(v, 0));
		double mean = sw > 0 ? json_number_value(json_array_get(v, 1)) / sw : 0;

		json_object_set_new(means, k, isfinite(mean) ? json_real(mean) : json_null());
	}
	json_decref(doc);
	o = json_pack("{s:I, s:I, s:I, s:o}", "version", (json_int_t)version, "clients",
		      (json_int_t)clients, "samples", (json_int_t)samples, "metrics", means);
	return o ? o : json_null();
}

void ctl__round_json_extra(struct ctl *c, struct cjob *j, const struct cround *cr, json_t *o)
{
	json_t *sums = o ? round_sums(cr) : NULL;

	if (sums) {
		json_object_set_new(o, "metrics", sums_means(sums));
		json_object_set(o, "metrics_updates", json_object_get(sums, "reports"));
		json_decref(sums);
	}
	if (o && j->db_id > 0)
		json_object_set_new(o, "evaluation", cr->state == CR_DONE
								? eval_json(c, j, cr->round + 1)
								: json_null());
}

/* --- update metrics (X-Tributary-Metrics), folded per node run --- */

/*
 * Why per "rank:epoch": a node run that is lost takes its updates out of
 * the round (ctl__rounds_lose_node), and so out of the means; if its sum
 * reached the top after all (take_edges clears lost[]), they count again.
 * A node's next run folds under a new key, so a rejoined node's fresh
 * updates are not hidden by its lost run.
 */
static void run_key(struct ctl *c, uint32_t rank, char *buf, size_t cap)
{
	snprintf(buf, cap, "%u:%u", rank, c->nodes[rank].epoch);
}

/* Take @metrics with weight @w out of @sums (a given-back update); names left at 0 go. */
static void sums_sub(json_t *sums, const json_t *metrics, double w)
{
	json_t *s = json_object_get(sums, "sums"), *v;
	const char *k;

	json_object_foreach((json_t *)metrics, k, v) {
		json_t *pair = json_object_get(s, k);
		double sw, swx;

		if (!pair)
			continue;
		sw = json_number_value(json_array_get(pair, 0)) - w;
		swx = json_number_value(json_array_get(pair, 1)) - w * json_number_value(v);
		if (sw <= 1e-9 * w)
			json_object_del(s, k);
		else
			json_object_set_new(s, k, json_pack("[f, f]", sw, swx));
	}
	if (json_object_size(metrics) && json_integer_value(json_object_get(sums, "reports")) > 0)
		json_object_set_new(sums, "reports",
				    json_integer(json_integer_value(json_object_get(sums, "reports")) -
						 1));
}

/* Names of @metrics no run of @cr has yet. */
static size_t names_new(const struct cround *cr, const json_t *metrics)
{
	json_t *run, *v;
	const char *k, *rk;
	size_t n = 0;

	json_object_foreach((json_t *)metrics, k, v) {
		bool have = false;

		json_object_foreach(cr->msums, rk, run)
			have = have || json_object_get(json_object_get(run, "sums"), k);
		n += !have;
	}
	return n;
}

static size_t names_all(const struct cround *cr)
{
	json_t *all = json_object(), *run, *v;
	const char *rk, *k;
	size_t n;

	json_object_foreach(cr->msums, rk, run)
		json_object_foreach(json_object_get(run, "sums"), k, v)
			json_object_set(all, k, json_true());
	n = json_object_size(all);
	json_decref(all);
	return n;
}

void ctl__rec_metrics(struct ctl *c, struct cjob *j, struct cround *cr, uint32_t to,
		      const json_t *hdr, int sign)
{
	const json_t *m = json_object_get(hdr, "metrics");
	double w = json_number_value(json_object_get(hdr, "weight"));
	json_t *run;
	char key[32];

	if (!metrics_ok(m) || !json_object_size(m) || to >= c->nnodes)
		return;
	if (!(w > 0) || !isfinite(w))
		w = 1; /* as a single node: an update without a weight counts once */
	if (!cr->msums && !(cr->msums = json_object()))
		return;
	run_key(c, to, key, sizeof(key));
	run = json_object_get(cr->msums, key);
	if (sign < 0) {
		if (run)
			sums_sub(run, m, w);
		return;
	}
	if (names_all(cr) + names_new(cr, m) > EVAL_NAMES_MAX) {
		/* A single node refuses such an update (400); here it is counted already. */
		trib_warn("job %s round %u: an update's metrics would take the round past %u "
			  "names: its metrics are left out of the record",
			  j->name, cr->round, EVAL_NAMES_MAX);
		return;
	}
	if (!run) {
		run = json_pack("{s:i, s:{}}", "reports", 0, "sums");
		if (!run || json_object_set_new(cr->msums, key, run))
			return;
	}
	sums_add(run, m, w);
}

/* The round's metric sums over the runs not lost: {"reports", "sums"} (a new reference). */
static json_t *round_sums(const struct cround *cr)
{
	json_t *out = json_pack("{s:i, s:{}}", "reports", 0, "sums"), *run, *pair, *v;
	const char *rk, *k;
	json_int_t reports = 0;

	json_object_foreach(cr->msums, rk, run) {
		unsigned rank = 0, epoch = 0;

		if (sscanf(rk, "%u:%u", &rank, &epoch) != 2 ||
		    (rank < CTL_MAX_NODES && cr->lost[rank] && cr->lost_epoch[rank] == epoch))
			continue;
		reports += json_integer_value(json_object_get(run, "reports"));
		json_object_foreach(json_object_get(run, "sums"), k, v) {
			pair = json_object_get(json_object_get(out, "sums"), k);
			json_object_set_new(
			    json_object_get(out, "sums"), k,
			    json_pack("[f, f]",
				      json_number_value(json_array_get(pair, 0)) +
					  json_number_value(json_array_get(v, 0)),
				      json_number_value(json_array_get(pair, 1)) +
					  json_number_value(json_array_get(v, 1))));
		}
	}
	json_object_set_new(out, "reports", json_integer(reports));
	return out;
}

static json_t *sums_means(const json_t *sums)
{
	json_t *means = json_object(), *v;
	const char *k;

	json_object_foreach(json_object_get(sums, "sums"), k, v) {
		double sw = json_number_value(json_array_get(v, 0));
		double mean = sw > 0 ? json_number_value(json_array_get(v, 1)) / sw : 0;

		json_object_set_new(means, k, isfinite(mean) ? json_real(mean) : json_null());
	}
	return means;
}

void ctl__rec_store(struct ctl *c, struct cjob *j, const struct cround *cr, double opened,
		    double closed)
{
	json_t *sums = round_sums(cr), *means = sums ? sums_means(sums) : NULL;
	char *text = means ? trib_json_dumps(means, JSON_COMPACT) : NULL;

	ctl_store_round_extra_put(c->store, j->db_id, cr->round, opened, closed, 0,
				  (uint32_t)json_integer_value(json_object_get(sums, "reports")),
				  text);
	trib_free(text);
	json_decref(means);
	json_decref(sums);
}
