// SPDX-License-Identifier: MIT
/* `tributary simulate`: drive N clients for R rounds over HTTP, check every model it causes. */
#include "tl_simulate.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tl_client.h"
#include "tl_sim_int.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

/* ---- one round ---- */

/* The round did not complete: say why, and report it. */
static void round_send_failed(struct tl_sim_round *r, uint32_t moved, uint32_t refused)
{
	struct tl_sim_lost lost = { 0 };
	double secs;

	printf("round %" PRIu64 ": FAILED: %u/%u updates accepted, %u failed: %s\n",
	       r->round, atomic_load(&r->accepted), r->o->clients,
	       atomic_load(&r->failed) + (moved ? 0 : refused),
	       r->err[0] ? r->err :
	       refused ? "refused with 409 (round closed) although no gateway dropped a "
			 "connection" : "cannot start worker threads");
	if (moved && atomic_load(&r->conflicts))
		printf("round %" PRIu64 ": the round closed before all its updates arrived; "
		       "some went to another gateway after a dropped connection: if a node "
		       "died after counting one but before its 202, the cluster counted it "
		       "twice\n", r->round);
	fflush(stdout);
	lost.folded = atomic_load(&r->accepted);
	secs = atomic_load(&r->t_first) == UINT64_MAX
		       ? 0
		       : (double)(trib_now_ns() - atomic_load(&r->t_first)) / 1e9;
	tl_sim_report_round(r, secs, &lost, false, NAN, false);
}

/*
 * Send every client's update of round @r with the workers @w, adding to
 * *tot. Returns 0, or -EIO when the round cannot complete (said and reported).
 */
static int round_send(const struct tl_sim_opts *o, struct tl_sim_worker *w, struct tl_sim_round *r,
		      struct tl_sim_totals *tot)
{
	struct tl_sim_run *run = r->run;
	uint32_t moved, refused;
	int err;

	for (uint32_t c = 0; c < o->clients; c++)
		run->acks[c] = (struct tl_sim_ack){ .node = SIM_NODE_NONE };
	err = tl_sim_run_workers(w, o->connections);
	tl_sim_progress(r, true);
	if (!o->quiet && r->tty)
		fputs("\r\033[K", stderr);
	tot->accepted += atomic_load(&r->accepted);
	tot->refused += atomic_load(&r->moved) ? atomic_load(&r->refused) : 0;
	tot->retries += atomic_load(&r->retries);
	if (atomic_load(&r->done) && !atomic_load(&r->accepted) && !atomic_load(&r->failed)) {
		printf("round %" PRIu64 ": the job is done (410: it made its num_rounds models); "
		       "stopping\n", r->round);
		tot->done = true;
		return -ENODATA;
	}
	moved = atomic_load(&r->moved);
	if (moved)
		printf("round %" PRIu64 ": %u update%s went to another gateway than their own "
		       "(it refused or dropped connections)\n", r->round, moved,
		       moved == 1 ? "" : "s");
	refused = atomic_load(&r->refused);
	if (run->job.sel_k) {
		uint32_t acc = atomic_load(&r->accepted), late = atomic_load(&r->late);
		uint32_t waited = atomic_load(&r->waited);

		/* Exactly per_round updates close the round; no more tasks than ceil(K x f). */
		if (err || acc != run->job.sel_k || acc + late > run->job.sel_max ||
		    acc + late + waited != o->clients) {
			if (!r->err[0])
				snprintf(r->err, sizeof(r->err), "selection: %u accepted (want %u), "
					 "%u late, %u told to wait, of %u clients (at most %u "
					 "tasks)", acc, run->job.sel_k, late, waited, o->clients,
					 run->job.sel_max);
			round_send_failed(r, 0, 0);
			return -EIO;
		}
		printf("round %" PRIu64 ": %u tasks for %u clients (%u told to wait); %u updates "
		       "closed the round, %u late (409)\n", r->round, acc + late, o->clients,
		       waited, acc, late);
		return 0;
	}
	/*
	 * Refusals are explained only by connections a dying node dropped: then
	 * some update moved to another gateway, whatever it was answered there (a
	 * resend the round closed before is itself refused). No update moved: a
	 * 409 is a server that closed the round early, an error.
	 */
	if (err || atomic_load(&r->accepted) + (moved ? refused : 0) != o->clients ||
	    atomic_load(&r->accepted) == 0) {
		round_send_failed(r, moved, refused);
		return -EIO;
	}
	if (refused)
		printf("round %" PRIu64 ": %u update%s refused (409): the round filled before them, "
		       "as a node that died had counted updates it never answered (their clients "
		       "sent them again elsewhere); left out of the reference\n", r->round, refused,
		       refused == 1 ? "" : "s");
	return 0;
}

/*
 * Wait for round @r's model into *resp (its body owned by a client of
 * run->mconns), watching a multi-node round for lost updates meanwhile.
 * *t_model is when it came. Returns 0, or -EIO when no model came (said and
 * reported).
 */
static int round_model(struct tl_sim_round *r, struct tl_http_resp *resp, uint64_t *t_model)
{
	struct tl_sim_run *run = r->run;
	uint64_t version = r->round + 1;
	struct tl_sim_model_ctx mc = { .job = r->o->job, .token = r->token, .version = version,
				       .resp = resp };
	struct tl_sim_poller poller;
	struct tl_sim_lost lost;
	bool polling = false;
	char what[64];
	int err;

	/* A multi-node cluster may lose acknowledged updates while we wait: watch the round. */
	if (atomic_load(&run->multi) && !atomic_load(&run->no_rounds)) {
		err = tl_sim_poller_start(&poller, r);
		if (err)
			trib_warn("round %" PRIu64 ": cannot poll GET /rounds (%s): lost updates "
				  "will not be resent", r->round, strerror(-err));
		polling = !err;
	}
	snprintf(what, sizeof(what), "model v=%" PRIu64, version);
	err = tl_sim_gw_call(run, run->mconns, 0, NULL, what, tl_sim_model_op, &mc, NULL);
	*t_model = trib_now_ns();
	if (polling)
		tl_sim_poller_stop(&poller);
	if (!err)
		return 0;
	/* What was lost may be why the round never closed: say it first. */
	tl_sim_round_tally(r, &lost);
	tl_sim_print_lost(r, &lost);
	if (r->resend_failed)
		printf("round %" PRIu64 ": %u resends got no 202 (first: %s)\n", r->round,
		       r->resend_failed, r->resend_err);
	printf("round %" PRIu64 ": FAILED: no model v=%" PRIu64 ": %s\n", r->round, version,
	       strerror(-err));
	fflush(stdout);
	tl_sim_report_round(r, (double)(*t_model - atomic_load(&r->t_first)) / 1e9, &lost, false,
			    NAN, false);
	return -EIO;
}

/*
 * A node can be declared lost for the round after it closed: the last
 * answer, after the model, decides what the model folds. pconns, not
 * mconns: the model's body lives in an mconns client.
 */
static void round_final_losses(struct tl_sim_round *r)
{
	struct tl_sim_run *run = r->run;
	struct tl_sim_round_info info;
	int err;

	if (!atomic_load(&run->multi) || atomic_load(&run->no_rounds))
		return;
	err = tl_sim_rounds_get(run, run->pconns, r->token, r->round, true, &info);
	if (!err) {
		tl_sim_round_note(r, &info);
		tl_sim_round_info_free(&info);
	} else if (err == -ENOENT) {
		tl_sim_rounds_unsupported(run, r->round);
	} else {
		trib_warn("round %" PRIu64 ": no final GET /rounds (%s): the reference "
			  "leaves out only the losses seen while polling",
			  r->round, strerror(-err));
	}
}

/*
 * Judge round @r's model in @resp, which came at @t_model: it must be the
 * mean of the updates it folds (run->include), unless --no-check; @ref
 * (o->params doubles) is scratch. Returns 0 (and counts the round in *tot)
 * or -EDOM.
 */
static int round_judge(const struct tl_sim_opts *o, struct tl_sim_round *r,
		       const struct tl_http_resp *resp, uint64_t t_model, double *ref,
		       unsigned ncpu, const struct tl_sim_lost *lost, struct tl_sim_totals *tot)
{
	uint64_t version = r->round + 1;
	double secs, up_s, e = 0, limit = 0;
	/* The updates sent: with selection, the ones the round took. */
	uint32_t sent = r->run->job.sel_k ? atomic_load(&r->accepted) : o->clients;
	bool ok;
	int err;

	secs = (double)(t_model - atomic_load(&r->t_first)) / 1e9;
	up_s = (double)(atomic_load(&r->t_last) - atomic_load(&r->t_first)) / 1e9;
	if (up_s <= 0)
		up_s = 1e-9;

	if (o->no_check) {
		printf("round %" PRIu64 ": %u updates in %.3f s (%.1f updates/s, %.1f MB/s upload), "
		       "model v=%" PRIu64 ", not checked (--no-check)\n", r->round, sent, secs,
		       sent / up_s, (double)atomic_load(&r->bytes) / 1e6 / up_s, version);
		fflush(stdout);
		ok = !r->resend_failed;
		tl_sim_report_round(r, secs, lost, ok, NAN, false);
		if (!ok)
			return -EDOM;
		tot->rounds_ok++;
		return 0;
	}
	/* After the timing: regenerate the folded updates and check the model against their mean. */
	err = tl_sim_reference_dtype(o->dtype, o->seed, r->round, o->clients, r->run->include,
				     o->params, ncpu, ref);
	if (!err)
		err = tl_sim_check_model(resp, ref, o->params, &e, &limit);
	ok = !err && e <= limit && !r->resend_failed;
	if (err == -ENODATA)
		trib_error("round %" PRIu64 ": every update was lost: no reference to check "
			   "the model against", r->round);
	else if (err && err != -EPROTO)
		trib_error("round %" PRIu64 ": reference: %s", r->round, strerror(-err));
	printf("round %" PRIu64 ": %u updates in %.3f s (%.1f updates/s, %.1f MB/s upload), "
	       "model v=%" PRIu64 ", max|err| = %.3g (limit %.3g) %s\n",
	       r->round, sent, secs, sent / up_s,
	       (double)atomic_load(&r->bytes) / 1e6 / up_s, version, err ? NAN : e, limit,
	       ok ? "OK" : "MISMATCH");
	fflush(stdout);
	tl_sim_report_round(r, secs, lost, ok, err ? NAN : e, true);
	if (!ok)
		return -EDOM;
	tot->rounds_ok++;
	return 0;
}

/*
 * One round. Returns 0 if every update was accepted and the model matched,
 * -EDOM if only the model did not match (the next round can still run), -EIO
 * if the round did not complete.
 */
static int sim_round(const struct tl_sim_opts *o, struct tl_sim_worker *w, struct tl_sim_round *r,
		     double *ref, unsigned ncpu, struct tl_sim_totals *tot)
{
	struct tl_http_resp resp;
	struct tl_sim_lost lost;
	uint64_t t_model;

	int err = round_send(o, w, r, tot);

	if (err)
		return err; /* -EIO, or -ENODATA: the job is done */
	if (round_model(r, &resp, &t_model))
		return -EIO;
	round_final_losses(r);
	tl_sim_round_tally(r, &lost);
	tl_sim_print_lost(r, &lost);
	if (r->resend_failed)
		printf("round %" PRIu64 ": FAILED: %u resends got no 202 (first: %s)\n", r->round,
		       r->resend_failed, r->resend_err);
	return round_judge(o, r, &resp, t_model, ref, ncpu, &lost, tot);
}

/* ---- the run ---- */

/* Connect the run's first connection of each worker before the clock starts. */
static int open_workers(struct tl_sim_run *run, struct tl_sim_worker *w, uint32_t nw)
{
	for (uint32_t t = 0; t < nw; t++) {
		uint32_t g = t % run->ngw;
		int err = tl_sim_open(run, g, &w[t].conns[g]);

		if (!err)
			continue;
		if (run->ngw == 1 || err == -ENOMEM || err == -EINVAL || err == -EKEYREJECTED) {
			trib_error("cannot connect to %s: %s", run->gw[g].url,
				   tl_client_strerror(err));
			return err;
		}
		/* A dead gateway of several is no failure: its clients go to the next. */
		if (!atomic_exchange(&run->gw[g].down_until, trib_now_ns() + SIM_DOWN_NS))
			trib_warn("gateway %s: %s; its clients send to the next gateway while it "
				  "does not answer", run->gw[g].url,
				  err == -ENOENT ? "host does not resolve" : strerror(-err));
	}
	return 0;
}

/*
 * A cluster tells its other nodes of a new job after the 201: for a moment
 * their gateways answer 404, and a first update sent there would fail the
 * round. Wait until every gateway of --url that can be reached knows the job;
 * one that cannot is the workers' failover's (open_workers says so). Returns 0
 * or a -errno, said in the log.
 */
static int run_job_everywhere(struct tl_sim_run *run)
{
	const struct tl_sim_opts *o = run->o;
	int err;

	for (uint32_t g = 0; g < run->ngw; g++) {
		if (!run->mconns[g]) {
			err = tl_sim_open(run, g, &run->mconns[g]);
			if (err == -ENOMEM || err == -EINVAL || err == -EKEYREJECTED)
				return err;
			if (err)
				continue;
		}
		err = tl_sim_job_wait(run->mconns[g], run->admin, o->job, o->clients, o->params,
				      SIM_JOB_WAIT_NS);
		if (err == -ENOENT) {
			trib_error("gateway %s does not know job %s %llu s after it was made: is "
				   "it a node of the same cluster?", run->gw[g].url, o->job,
				   SIM_JOB_WAIT_NS / 1000000000ull);
			return err;
		}
		if (err && !tl_sim_conn_failed(err))
			return err;
	}
	return 0;
}

/*
 * Find or create the job (run->job) with the admin token (run->admin).
 * Returns 0 or a -errno, said in the log except for -ENOMEM.
 */
static int run_job(struct tl_sim_run *run)
{
	const struct tl_sim_opts *o = run->o;
	struct tl_sim_job_ctx jc = { .o = o, .job = &run->job };
	int err;

	/* A file that holds no token was said above, with its name and why. */
	err = tl_sim_admin_token(o->admin_token_file, o->data_dir, &run->admin);
	if (err == -ENOMEM)
		return err;
	if (err && o->admin_token_file) {
		trib_error("--admin-token-file %s: no admin token there; give the file that "
			   "holds the server's (DATA_DIR/admin-token where it runs)",
			   o->admin_token_file);
		return err;
	}
	if (err == -ENOENT)
		trib_warn("no admin token (--admin-token-file, TRIBUTARY_ADMIN_TOKEN, "
			  "%s/admin-token): going on without one", o->data_dir);
	else if (err)
		trib_warn("%s/admin-token holds no admin token: going on without one (give "
			  "--admin-token-file or TRIBUTARY_ADMIN_TOKEN)", o->data_dir);
	jc.admin = run->admin;
	err = tl_sim_gw_call(run, run->mconns, 0, NULL, "job setup", tl_sim_job_op, &jc, NULL);
	if (err) {
		if (run->ngw == 1 && !run->mconns[0])
			trib_error("cannot connect to %s: %s", o->url, tl_client_strerror(err));
		else if (run->ngw > 1 && tl_sim_conn_failed(err))
			trib_error("no gateway of --url %s answered", o->url);
		return err;
	}
	if (run->ngw > 1) {
		err = run_job_everywhere(run);
		if (err)
			return err;
	}
	err = tl_sim_creds_mint(run);
	if (err)
		return err;
	if (run->job.received) {
		trib_error("job %s: round %" PRIu64 " already holds %" PRIu64
			   " updates; the models could not match, use a fresh job",
			   o->job, run->job.round, run->job.received);
		return -EEXIST;
	}
	trib_info("job %s %s at round %" PRIu64 ": %u clients x %u rounds, %" PRIu64
		  " params, %u connections%s",
		  o->job, run->job.created ? "created" : "found", run->job.round, o->clients,
		  o->rounds, o->params, o->connections, run->ngw > 1 ? ", several gateways" : "");
	return 0;
}

/* The safetensors header, the reference and the per-client buffers. Returns 0 or -errno. */
static int run_buffers(struct tl_sim_run *run)
{
	const struct tl_sim_opts *o = run->o;
	long ncpu;
	int err;

	err = tl_sim_st_header_dtype(o->dtype, o->params, &run->st_hdr, &run->st_hdr_len);
	if (err) {
		trib_error("cannot build the safetensors header: %s", strerror(-err));
		return err;
	}
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	run->ncpu = ncpu < 1 ? 1 : (unsigned)ncpu;
	run->ref = trib_malloc(o->params * sizeof(*run->ref));
	run->w = trib_calloc(o->connections, sizeof(*run->w));
	run->acks = trib_malloc(o->clients * sizeof(*run->acks));
	run->include = trib_malloc(o->clients * sizeof(*run->include));
	if (!run->ref || !run->w || !run->acks || !run->include) {
		trib_error("out of memory for %u connections x %" PRIu64 " params", o->connections,
			   o->params);
		return -ENOMEM;
	}
	for (run->nw = 0; run->nw < o->connections; run->nw++) {
		run->w[run->nw].buf = trib_malloc(tl_sim_buf_len(o));
		if (!run->w[run->nw].buf) {
			trib_error("out of memory for update buffers");
			return -ENOMEM;
		}
	}
	return 0;
}

/* Every round, then the summary line. Returns the exit code. */
static int run_rounds(struct tl_sim_run *run)
{
	const struct tl_sim_opts *o = run->o;
	struct tl_sim_totals tot = { 0 };
	struct tl_sim_round r;
	uint64_t t_start;
	uint32_t per;
	uint32_t ran = 0; /* rounds sent (not counting one the job refused as done) */
	int err, rc;

	for (uint32_t t = 0; t < run->nw; t++)
		run->w[t].r = &r;
	t_start = trib_now_ns();
	for (uint32_t i = 0; i < o->rounds; i++) {
		memset(&r, 0, sizeof(r));
		r.run = run;
		r.o = o;
		r.token = run->job.token;
		r.round = run->job.round + i;
		r.index = i + 1;
		r.st_hdr = run->st_hdr;
		r.st_hdr_len = run->st_hdr_len;
		r.tty = isatty(STDERR_FILENO);
		atomic_init(&r.t_first, UINT64_MAX);
		pthread_mutex_init(&r.lock, NULL);
		err = sim_round(o, run->w, &r, run->ref, run->ncpu, &tot);
		pthread_mutex_destroy(&r.lock);
		json_decref(r.top);
		json_decref(r.edges);
		if (err == -EIO || err == -ENODATA)
			break;
		ran++;
	}
	/* A job that selects clients takes per_round updates a round, not one per client. */
	per = run->job.sel_k ? run->job.sel_k : o->clients;
	/* A job that ended (num_rounds) ends the run cleanly: every round before it is judged. */
	rc = (tot.done || ran == o->rounds) && tot.rounds_ok == ran &&
			     tot.accepted + tot.refused == (uint64_t)ran * per ? 0 : 1;
	printf("simulate: %u/%u rounds OK, %" PRIu64 "/%" PRIu64 " updates accepted%s, %" PRIu64
	       " retries (503), %.3f s: %s%s\n",
	       tot.rounds_ok, tot.done ? ran : o->rounds, tot.accepted,
	       (uint64_t)(tot.done ? ran : o->rounds) * per,
	       tot.refused ? " (the others refused after a node was lost, above)" : "",
	       tot.retries, (double)(trib_now_ns() - t_start) / 1e9, rc ? "FAILED" : "OK",
	       tot.done ? " (stopped: the job is done)" : "");
	fflush(stdout);
	return rc;
}

/* Releases everything @run owns, then @run. */
static void run_free(struct tl_sim_run *run)
{
	for (uint32_t i = 0; i < run->nw; i++) {
		for (uint32_t g = 0; g < run->ngw; g++)
			tl_client_close(run->w[i].conns[g]);
		trib_free(run->w[i].buf);
	}
	trib_free(run->w);
	trib_free(run->ref);
	trib_free(run->st_hdr);
	for (uint32_t i = 0; i < run->ngw; i++) {
		tl_client_close(run->mconns[i]);
		tl_client_close(run->pconns[i]);
	}
	/* After every client: they hold its BIO method. */
	tl_tls_shared_free(run->tls);
	trib_free(run->pbuf);
	trib_free(run->acks);
	trib_free(run->include);
	trib_free(run->ctok);
	json_decref(run->report);
	pthread_mutex_destroy(&run->nodes_lock);
	trib_free(run->admin);
	trib_free(run);
}

/* The run behind tl_sim_main once the options are known. Returns the exit code. */
static int sim_run(const struct tl_sim_opts *o)
{
	struct tl_sim_run *run;
	int rc = 1;

	run = trib_calloc(1, sizeof(*run));
	if (!run) {
		trib_error("out of memory");
		return 1;
	}
	run->o = o;
	run->ngw = o->nurls;
	if (tl_tls_shared_new(&run->tls)) {
		trib_error("out of memory");
		trib_free(run);
		return 1;
	}
	for (uint32_t i = 0; i < run->ngw; i++) {
		run->gw[i].url = o->urls[i];
		atomic_init(&run->gw[i].node, SIM_NODE_NONE);
	}
	pthread_mutex_init(&run->nodes_lock, NULL);
	if (o->report_json)
		run->report = json_array();
	/* Out of memory for the report: no run, and nothing said (as for the token). */
	if ((!o->report_json || run->report) && !run_job(run) && !run_buffers(run) &&
	    !open_workers(run, run->w, run->nw))
		rc = run_rounds(run);
	if (run->report && tl_sim_write_report(o->report_json, run->report, rc == 0))
		rc = 1;
	run_free(run);
	return rc;
}

int tl_sim_main(int argc, char **argv)
{
	struct tl_sim_opts o;
	char why[256];
	int err;

	err = tl_sim_parse_args(argc, argv, &o, why, sizeof(why));
	if (err == -ECANCELED) {
		fputs(tl_sim_usage, stdout);
		return 0;
	}
	if (err) {
		fprintf(stderr, "tributary simulate: %s\n%s", why, tl_sim_usage);
		return 2;
	}
	trib_log_init("simulate");
	if (o.quiet)
		trib_log_set_level(TRIB_LOG_WARN);
	return sim_run(&o);
}
