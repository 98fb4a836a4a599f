// SPDX-License-Identifier: MIT
/* One round of simulate: the client workers, the progress bar, the poller that resends losses. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tl_client.h"
#include "tl_sim_int.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

#define SIM_BAR_WIDTH 30

/* The two halves of the progress bar, SIM_BAR_WIDTH characters each. */
static const char bar_hashes[] = "##############################";
static const char bar_dots[] = "..............................";
_Static_assert(sizeof(bar_hashes) == SIM_BAR_WIDTH + 1 && sizeof(bar_dots) == SIM_BAR_WIDTH + 1,
	       "the bar is SIM_BAR_WIDTH wide");

static void atomic_min_u64(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load(a);

	while (v < cur && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

static void atomic_max_u64(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load(a);

	while (v > cur && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

/* Caller holds r->lock. */
static void draw_progress(struct tl_sim_round *r, uint32_t done)
{
	const struct tl_sim_opts *o = r->o;
	int fill = (int)((uint64_t)done * SIM_BAR_WIDTH / o->clients);

	/* The server's round number, as in the result lines and status; then this run's count. */
	if (r->tty)
		fprintf(stderr, "\rround %" PRIu64 " (%u of %u) [%.*s%.*s] %u/%u updates", r->round,
			r->index, o->rounds, fill, bar_hashes, SIM_BAR_WIDTH - fill, bar_dots, done,
			o->clients);
	else
		fprintf(stderr, "round %" PRIu64 " (%u of %u): %u/%u updates\n", r->round, r->index,
			o->rounds, done, o->clients);
	fflush(stderr);
}

/* On a tty redraw at most every 100 ms; elsewhere one line per 10%. Never blocks a worker. */
void tl_sim_progress(struct tl_sim_round *r, bool final)
{
	uint32_t done = atomic_load(&r->finished);
	uint64_t now = trib_now_ns();
	uint32_t decile;

	if (r->o->quiet)
		return;
	if (final)
		pthread_mutex_lock(&r->lock);
	else if (pthread_mutex_trylock(&r->lock))
		return;
	if (r->tty) {
		if (final || now - r->drawn_ns >= 100000000ull) {
			draw_progress(r, done);
			r->drawn_ns = now;
		}
	} else {
		decile = (uint32_t)((uint64_t)done * 10 / r->o->clients);
		if (decile > r->drawn_decile) {
			draw_progress(r, done);
			r->drawn_decile = decile;
		}
	}
	pthread_mutex_unlock(&r->lock);
}

static void record_failure(struct tl_sim_round *r, uint32_t client, int err,
			   const struct tl_http_resp *resp)
{
	char msg[400];

	if (err)
		snprintf(msg, sizeof(msg), "%s", strerror(-err));
	else
		tl_http_error_msg(resp, msg, sizeof(msg));
	atomic_store(&r->abort, true);
	if (!err && resp->status == 409)
		atomic_fetch_add(&r->conflicts, 1);
	pthread_mutex_lock(&r->lock);
	/* The server's own words may already say it. */
	if (!r->err[0])
		snprintf(r->err, sizeof(r->err), "client %u: %s%s", client,
			 !err && resp->status == 409 && strncmp(msg, "round mismatch", 14)
				 ? "round mismatch: "
				 : "",
			 msg);
	pthread_mutex_unlock(&r->lock);
}

/*
 * Client @i's update of round @r in @buf, and in *u how to send it; @resend
 * counts its sends after lost nodes took it (its Idempotency-Key).
 */
static void make_update(const struct tl_sim_round *r, uint32_t i, uint8_t resend, float *buf,
			struct tl_sim_update *u)
{
	const struct tl_sim_opts *o = r->o;
	uint64_t key = tl_sim_key(o->seed, r->round, i);
	bool st = o->format == TL_SIM_SAFETENSORS || (o->format == TL_SIM_MIXED && (i & 1));

	*u = (struct tl_sim_update){
		.job = o->job,
		.token = r->run->ctok ? r->run->ctok[i] : r->token, /* its own credential */
		.round = r->round,
		.samples = tl_sim_samples(key),
		.data = buf,
		.params = o->params,
		.data_len = tl_sim_data_len(o->dtype, o->params),
		.st_hdr = st ? r->st_hdr : NULL,
		.st_hdr_len = st ? r->st_hdr_len : 0,
	};
	tl_sim_idem_key(o->seed, r->round, i, resend, u->key, sizeof(u->key));
	tl_sim_fill_dtype(o->dtype, key, buf, o->params);
}

static void *worker_run(void *arg)
{
	struct tl_sim_worker *w = arg;
	struct tl_sim_round *r = w->r;
	struct tl_sim_run *run = r->run;
	const struct tl_sim_opts *o = r->o;
	struct tl_http_resp resp;
	struct tl_sim_update u;
	struct tl_sim_post_ctx pc = { .u = &u, .resp = &resp, .sole = run->ngw == 1 };
	uint64_t t0, t1;
	uint32_t i, g = 0;
	char what[64];
	int err;

	while (!atomic_load(&r->abort)) {
		i = atomic_fetch_add(&r->next, 1);
		if (i >= o->clients)
			break;
		if (run->job.sel_k) {
			bool train = false;

			/* The job selects: only a client with a task of this round sends. */
			err = tl_sim_task_get(run, w->conns, i, r->round, &train, &resp);
			if (err || !train) {
				if (err) {
					atomic_fetch_add(&r->failed, 1);
					record_failure(r, i, err == -EPROTO ? 0 : err, &resp);
				} else {
					run->acks[i].flags |= SIM_ACK_WAITED;
					atomic_fetch_add(&r->waited, 1);
				}
				atomic_fetch_add(&r->finished, 1);
				tl_sim_progress(r, false);
				continue;
			}
		}
		make_update(r, i, 0, w->buf, &u);
		snprintf(what, sizeof(what), "client %u's update", i);
		pc.what = what;

		pc.retries = 0;
		t0 = trib_now_ns();
		atomic_min_u64(&r->t_first, t0);
		err = tl_sim_gw_call(run, w->conns, i % run->ngw, NULL, what, tl_sim_post_op, &pc,
				     &g);
		t1 = trib_now_ns();

		atomic_fetch_add(&r->retries, pc.retries);
		/*
		 * Answered by another gateway than its own: its own one failed at
		 * connection level, now or lately. Counted whatever the answer: a node
		 * that counted this update and died before its 202 may have closed
		 * the round with it, and the resend then gets a 409 (round_send).
		 */
		if (!err && g != i % run->ngw)
			atomic_fetch_add(&r->moved, 1);
		if (!err && resp.status == 202) {
			uint16_t node = tl_sim_ack_node(run, &resp);

			run->acks[i] = (struct tl_sim_ack){ .node = node, .gw = (uint8_t)g };
			tl_sim_gw_saw_node(run, g, node);
			atomic_fetch_add(&r->accepted, 1);
			atomic_fetch_add(&r->bytes, u.st_hdr_len + u.data_len);
			atomic_max_u64(&r->t_last, t1);
		} else if (!err && resp.status == 409 && run->job.sel_k) {
			/* Over-committed: the round closed at per_round before this task's update. */
			run->acks[i].flags |= SIM_ACK_REFUSED;
			atomic_fetch_add(&r->late, 1);
		} else if (!err && resp.status == 409 && atomic_load(&run->multi)) {
			/*
			 * A cluster closed the round without this update. That happens when
			 * a node counted updates and died before answering: their clients
			 * sent them again elsewhere (this one, maybe), so the round filled
			 * early until the dead node's counts are dropped. The update is in
			 * no model: it is left out of the reference, and round_send judges
			 * the round at its end (explained only if an update moved).
			 */
			run->acks[i].flags |= SIM_ACK_REFUSED;
			atomic_fetch_add(&r->conflicts, 1);
			atomic_fetch_add(&r->refused, 1);
		} else if (!err && resp.status == 410) {
			/* The job ended (num_rounds): not a failure, nothing more to send. */
			atomic_store(&r->done, true);
			atomic_store(&r->abort, true);
		} else {
			atomic_fetch_add(&r->failed, 1);
			record_failure(r, i, err, &resp);
		}
		atomic_fetch_add(&r->finished, 1);
		tl_sim_progress(r, false);
	}
	return NULL;
}

/* Run the workers of one round; returns when all are done. 0 or -EAGAIN (no thread). */
int tl_sim_run_workers(struct tl_sim_worker *w, uint32_t nw)
{
	uint32_t started = 0;
	int err = 0;

	for (uint32_t t = 0; t < nw; t++) {
		if (pthread_create(&w[t].tid, NULL, worker_run, &w[t])) {
			err = -EAGAIN;
			atomic_store(&w[0].r->abort, true);
			break;
		}
		started++;
	}
	for (uint32_t t = 0; t < started; t++)
		pthread_join(w[t].tid, NULL);
	return err;
}

/*
 * Take in a /rounds answer: mark the updates whose counting 202 came from a
 * lost node, keep its top and edges (*info gives them up).
 */
void tl_sim_round_note(struct tl_sim_round *r, struct tl_sim_round_info *info)
{
	struct tl_sim_ack *acks = r->run->acks;

	r->answered = true;
	json_decref(r->top);
	json_decref(r->edges);
	r->top = info->top;
	r->edges = info->edges;
	info->top = info->edges = NULL;
	if (!info->nlost)
		return;
	for (uint32_t c = 0; c < r->o->clients; c++) {
		uint16_t n = acks[c].node;

		if (n == SIM_NODE_NONE || !info->lost[n])
			continue;
		acks[c].flags |= SIM_ACK_LOST | SIM_ACK_CUR_LOST;
		r->lost_acked[n] = true;
	}
}

/*
 * The round is still open: send again, through a gateway whose node is not
 * lost, every update whose counting 202 came from a lost node. Runs on the
 * poller thread with the run's pconns and pbuf.
 */
static void resend_lost(struct tl_sim_round *r, const struct tl_sim_round_info *info)
{
	struct tl_sim_run *run = r->run;
	struct tl_sim_ack *acks = run->acks;
	struct tl_http_resp resp;
	struct tl_sim_update u;
	char what[96], msg[200];
	struct tl_sim_post_ctx pc = { .u = &u, .resp = &resp, .what = what,
				      .sole = run->ngw == 1 };
	bool avoid[TL_SIM_MAX_URLS] = { false };
	uint32_t g = 0, live = 0;
	int err;

	/* A gateway whose node is lost would only lose the update again. */
	for (uint32_t k = 0; k < run->ngw; k++) {
		uint32_t n = atomic_load(&run->gw[k].node);

		avoid[k] = n != SIM_NODE_NONE && info->lost[n];
		live += !avoid[k];
	}
	if (!live) {
		snprintf(msg, sizeof(msg), "every gateway of --url is on a lost node");
		for (uint32_t c = 0; c < r->o->clients; c++) {
			if (!(acks[c].flags & SIM_ACK_CUR_LOST) || (acks[c].flags & SIM_ACK_FAILED))
				continue;
			acks[c].flags |= SIM_ACK_FAILED;
			if (!r->resend_failed++) {
				trib_error("round %" PRIu64 ": cannot resend lost updates: %s",
					   r->round, msg);
				snprintf(r->resend_err, sizeof(r->resend_err), "%s", msg);
			}
		}
		return;
	}
	for (uint32_t c = 0; c < r->o->clients && !r->resend_closed; c++) {
		struct tl_sim_ack *a = &acks[c];

		if (!(a->flags & SIM_ACK_CUR_LOST) || (a->flags & SIM_ACK_FAILED))
			continue;
		/*
		 * A new submission, under a new key: the lost node's answer was not
		 * lost, the node was, and a node that still knew the first key would
		 * only answer its first answer again.
		 */
		if (a->resends < UINT8_MAX)
			a->resends++;
		make_update(r, c, a->resends, run->pbuf, &u);
		snprintf(what, sizeof(what), "round %" PRIu64 ": resend of client %u's update",
			 r->round, c);
		pc.retries = 0;
		err = tl_sim_gw_call(run, run->pconns, (a->gw + 1u) % run->ngw, avoid, what,
				     tl_sim_post_op, &pc, &g);
		if (!err && resp.status == 202) {
			uint16_t node = tl_sim_ack_node(run, &resp);

			tl_sim_gw_saw_node(run, g, node);
			a->node = node;
			a->gw = (uint8_t)g;
			a->flags = (uint8_t)((a->flags & ~SIM_ACK_CUR_LOST) | SIM_ACK_RESENT);
			continue;
		}
		if (!err && resp.status == 409) {
			/* Closed since the answer said open: the rest cannot rejoin either. */
			trib_info("%s: the round closed meanwhile", what);
			r->resend_closed = true;
			break;
		}
		if (err)
			snprintf(msg, sizeof(msg), "%s", strerror(-err));
		else
			tl_http_error_msg(&resp, msg, sizeof(msg));
		trib_error("%s: %s", what, msg);
		a->flags |= SIM_ACK_FAILED;
		if (!r->resend_failed++)
			snprintf(r->resend_err, sizeof(r->resend_err), "client %u: %s", c, msg);
	}
}

/* Sleep one poll period; false once the poller is told to stop. */
static bool poller_wait(struct tl_sim_poller *p)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += (long)SIM_ROUNDS_POLL_NS;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&p->lock);
	while (!p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &ts) != ETIMEDOUT)
		;
	stop = p->stop;
	pthread_mutex_unlock(&p->lock);
	return !stop;
}

static void *poller_run(void *arg)
{
	struct tl_sim_poller *p = arg;
	struct tl_sim_round *r = p->r;
	struct tl_sim_run *run = r->run;
	struct tl_sim_round_info info;
	bool warned = false;
	int err;

	while (poller_wait(p)) {
		err = tl_sim_rounds_get(run, run->pconns, r->token, r->round, !warned, &info);
		if (err == -ENOENT) {
			tl_sim_rounds_unsupported(run, r->round);
			break;
		}
		if (err) {
			if (!warned)
				trib_warn("round %" PRIu64 ": GET /rounds: %s; polling on (said once)",
					  r->round, strerror(-err));
			warned = true;
			continue;
		}
		tl_sim_round_note(r, &info);
		if (info.nlost && !strcmp(info.state, "open"))
			resend_lost(r, &info);
		tl_sim_round_info_free(&info);
	}
	return NULL;
}

/* Start polling for round @r. Returns 0, -ENOMEM, -EAGAIN (no thread). */
int tl_sim_poller_start(struct tl_sim_poller *p, struct tl_sim_round *r)
{
	pthread_condattr_t ca;
	struct tl_sim_run *run = r->run;
	int err = -EAGAIN;

	if (!run->pbuf) {
		run->pbuf = trib_malloc(tl_sim_buf_len(r->o));
		if (!run->pbuf)
			return -ENOMEM;
	}
	memset(p, 0, sizeof(*p));
	p->r = r;
	if (pthread_condattr_init(&ca))
		return -ENOMEM;
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_cond_init(&p->cond, &ca)) {
		err = -ENOMEM;
		goto err_attr;
	}
	pthread_mutex_init(&p->lock, NULL);
	if (pthread_create(&p->tid, NULL, poller_run, p))
		goto err_cond;
	pthread_condattr_destroy(&ca);
	return 0;

err_cond:
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
err_attr:
	pthread_condattr_destroy(&ca);
	return err;
}

/* Stop and join the poller; a resend under way finishes first. */
void tl_sim_poller_stop(struct tl_sim_poller *p)
{
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->tid, NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
}
