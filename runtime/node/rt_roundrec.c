// SPDX-License-Identifier: MIT
/*
 * A round's record on a single node: its metrics' sample-weighted sums and
 * bytes while it runs (memory), its row in SQLite once its model is stored,
 * and federated evaluations per model version (SQLite only).
 */
#include "rt_roundrec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl_store_rec.h"
#include "rt_metrics.h"
#include "rt_node_priv.h"
#include "trib_alloc.h"
#include "trib_json.h"
#include "trib_log.h"

double rt__unix_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The round @round of @j in flight (open or closed, not yet stored), or NULL. */
static struct rt_round *in_flight(struct rt_job *j, uint32_t round)
{
	for (struct rt_round *r = j->inflight; r; r = r->next)
		if (r->round == round)
			return r;
	return j->open && j->open->round == round ? j->open : NULL;
}

int rt__round_metrics_room(const struct rt_job *j, const struct rt_update_in *u)
{
	const struct rt_round *r = j->open;

	/* The update goes into j->open (or a round opened for it, with no names yet). */
	if (!u->metrics || !r || !r->msum)
		return 0;
	return r->msum->n + rt_msum_new_names(r->msum, u->metrics) > RT_MSUM_MAX ? -EMLINK : 0;
}

/*
 * A round's metrics file: one line per update that carried metrics, "seq
 * bytes weight {json}", appended after the update's journal record is
 * committed (so its lines are a subset of the updates a crash keeps). Not
 * fsynced: like the arena file it outlives the process, not the machine. At
 * a restart the lines of the updates put back (seq below the recovered
 * count: a round's kept seqs are a run from 0) refill the sums; the file is
 * removed once the round's model and record are stored.
 */
#define MDIR "round-metrics"

static int mpath(const struct rt_node *n, const struct rt_job *j, uint32_t round, char *p,
		 size_t cap)
{
	int k;

	if (!n->opts.data_dir)
		return -ENOENT;
	k = snprintf(p, cap, "%s/" MDIR "/%" PRId64 "-%u.log", n->opts.data_dir, j->db_id, round);
	return k > 0 && (size_t)k < cap ? 0 : -ENAMETOOLONG;
}

/* Open (creating the directory) round @r's file for appending: r->mfd, or a warning. */
static void mfile_open(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	char p[4096];
	int fd;

	if (mpath(n, j, r->round, p, sizeof(p)))
		return;
	fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		char d[4096];

		snprintf(d, sizeof(d), "%s/" MDIR, n->opts.data_dir);
		if (mkdir(d, 0700) == 0 || errno == EEXIST)
			fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	}
	if (fd < 0) {
		trib_warn("job %s round %u: %s: %s; its metrics will not outlive a crash", j->name,
			  r->round, p, strerror(errno));
		r->mfd = -1; /* said once per round */
		return;
	}
	r->mfd = fd + 1;
}

/* "seq bytes weight {json}\n" of an update into @buf; its length, 0 if it does not fit. */
static size_t mline(char *buf, size_t cap, uint32_t seq, uint64_t bytes, double w,
		    const struct rt_cmetrics *m)
{
	size_t len;
	int k = snprintf(buf, cap, "%u %" PRIu64 " %.17g {", seq, bytes, w);

	if (k < 0 || (size_t)k >= cap)
		return 0;
	len = (size_t)k;
	for (uint32_t i = 0; i < m->n; i++) {
		/* Names are [A-Za-z0-9_.-] (rt_metrics_parse()): no escaping needed. */
		k = snprintf(buf + len, cap - len, "%s\"%s\":%.17g", i ? "," : "", m->name[i],
			     m->val[i]);
		if (k < 0 || (size_t)k >= cap - len)
			return 0;
		len += (size_t)k;
	}
	k = snprintf(buf + len, cap - len, "}\n");
	return k > 0 && (size_t)k < cap - len ? len + (size_t)k : 0;
}

/*
 * After the update is in round @round (its record committed) as @seq: its
 * bytes and metrics into the round's, and its line into the round's file.
 * The round cannot have been stored in between (a model comes from a
 * function's message, on a later turn of the loop).
 */
void rt__round_metrics_add(struct rt_node *n, struct rt_job *j, uint32_t round, uint32_t seq,
			   const struct rt_update_in *u)
{
	struct rt_round *r = in_flight(j, round);
	char line[2048];
	size_t len;

	if (!r) {
		trib_warn("job %s round %u: not in flight after an update went in; its metrics "
			  "are not in the record", j->name, round);
		return;
	}
	r->bytes += u->data_len;
	if (!u->metrics || !u->metrics->n)
		return;
	if (!r->msum) {
		r->msum = trib_calloc(1, sizeof(*r->msum));
		if (!r->msum) {
			trib_warn("job %s round %u: out of memory: an update's metrics are not in "
				  "the record", j->name, round);
			return;
		}
	}
	/* rt__round_metrics_room() said it fits. */
	if (rt_msum_add(r->msum, u->metrics, u->weight > 0 ? u->weight : 1)) {
		trib_warn("job %s round %u: metric names over %d: an update's metrics are not "
			  "in the record", j->name, round, RT_MSUM_MAX);
		return;
	}
	if (!r->mfd)
		mfile_open(n, j, r);
	len = mline(line, sizeof(line), seq, u->data_len, u->weight > 0 ? u->weight : 1,
		    u->metrics);
	if (r->mfd > 0 && len && write(r->mfd - 1, line, len) != (ssize_t)len) {
		/* Once per round (a full disk would say it for every update): the file stops. */
		trib_warn("job %s round %u: writing an update's metrics: %s; this round's "
			  "metrics from here on will not outlive a crash", j->name, round,
			  strerror(errno));
		close(r->mfd - 1);
		r->mfd = -1;
	}
}

void rt__round_rec_free(struct rt_round *r)
{
	if (r->mfd > 0)
		close(r->mfd - 1);
	r->mfd = 0;
	trib_free(r->msum);
	r->msum = NULL;
}

/* Refill round @r's sums from its file: the lines of updates it has again; the file keeps those. */
static void mfile_recover(struct rt_node *n, struct rt_job *j, struct rt_round *r)
{
	char p[4096], *buf = NULL, *line, *next, *keep = NULL;
	size_t klen = 0, got = 0;
	uint32_t folded = 0, dropped = 0;
	struct stat sb;
	int fd;

	if (mpath(n, j, r->round, p, sizeof(p)))
		return;
	fd = open(p, O_RDWR | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		return; /* none: no update of it carried metrics */
	if (fstat(fd, &sb) || !(buf = trib_malloc((size_t)sb.st_size + 1)) ||
	    !(keep = trib_malloc((size_t)sb.st_size + 1))) {
		trib_warn("job %s round %u: %s cannot be read back: its metrics are lost", j->name,
			  r->round, p);
		goto out;
	}
	while (got < (size_t)sb.st_size) {
		ssize_t k = read(fd, buf + got, (size_t)sb.st_size - got);

		if (k <= 0)
			break;
		got += (size_t)k;
	}
	buf[got] = '\0';
	for (line = buf; line && *line; line = next) {
		struct rt_cmetrics m;
		unsigned long long bytes;
		unsigned seq;
		double w;
		int off = 0;
		char why[320];

		next = strchr(line, '\n');
		if (!next)
			break; /* a line cut short (the machine stopped mid-write) */
		*next++ = '\0';
		if (sscanf(line, "%u %llu %lg %n", &seq, &bytes, &w, &off) != 3 || !off ||
		    seq >= r->received || !(w > 0) ||
		    rt_metrics_parse(line + off, strlen(line + off), &m, why, sizeof(why))) {
			dropped++; /* an update not put back (seq past the kept run) */
			continue;
		}
		if (!r->msum)
			r->msum = trib_calloc(1, sizeof(*r->msum));
		if (!r->msum || rt_msum_add(r->msum, &m, w)) {
			dropped++;
			continue;
		}
		r->bytes += bytes;
		folded++;
		memcpy(keep + klen, line, (size_t)(next - 1 - line));
		klen += (size_t)(next - 1 - line);
		keep[klen++] = '\n';
	}
	/* Only the kept lines stay: a seq dropped here is given to a new update next. */
	if (ftruncate(fd, 0) || (klen && write(fd, keep, klen) != (ssize_t)klen))
		trib_warn("job %s round %u: rewriting %s: %s", j->name, r->round, p,
			  strerror(errno));
	trib_info("job %s round %u: the metrics of %u recovered update%s are back in its record "
		  "(%u line%s dropped)", j->name, r->round, folded, folded == 1 ? "" : "s", dropped,
		  dropped == 1 ? "" : "s");
	r->mfd = fd + 1;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	trib_free(buf);
	trib_free(keep);
}

void rt__round_metrics_recover(struct rt_node *n)
{
	char d[4096], p[4096 + 256];
	struct dirent *de;
	DIR *dir;

	if (!n->opts.data_dir)
		return;
	for (struct rt_job *j = n->jobs; j; j = j->next)
		for (struct rt_round *r = j->inflight; r; r = r->next)
			if (!r->mfd)
				mfile_recover(n, j, r);
	/* The files of rounds stored (or of jobs gone) while the process was down. */
	snprintf(d, sizeof(d), "%s/" MDIR, n->opts.data_dir);
	dir = opendir(d);
	while (dir && (de = readdir(dir))) {
		long long id;
		unsigned round;
		bool live = false;
		int off = 0;

		if (sscanf(de->d_name, "%lld-%u.log%n", &id, &round, &off) != 2 ||
		    off != (int)strlen(de->d_name))
			continue;
		for (struct rt_job *j = n->jobs; j && !live; j = j->next)
			live = j->db_id == id && in_flight(j, round);
		if (!live) {
			snprintf(p, sizeof(p), "%s/%s", d, de->d_name);
			unlink(p);
		}
	}
	if (dir)
		closedir(dir);
}

void rt__round_record_extra(struct rt_node *n, struct rt_job *j, const struct rt_round *r)
{
	json_t *means = r->msum ? rt_msum_means(r->msum) : NULL;
	char *text = means ? trib_json_dumps(means, JSON_COMPACT) : NULL;
	int err;

	json_decref(means);
	err = ctl_store_round_extra_put(n->store, j->db_id, r->round, r->open_unix, r->close_unix,
					r->bytes, r->msum ? r->msum->reports : 0, text);
	if (err || (r->msum && !text))
		trib_warn("job %s round %u: the record's times, bytes and metrics were not saved "
			  "(%s)", j->name, r->round, err ? strerror(-err) : "out of memory");
	trib_free(text);
	/* The round is stored: its metrics file has done its work. */
	if (r->mfd) { /* opened, or tried (-1): a file may exist */
		char p[4096];

		if (!mpath(n, j, r->round, p, sizeof(p)))
			unlink(p);
	}
}

/* --- records --- */

static json_t *time_or_null(double t)
{
	return t > 0 ? json_real(t) : json_null();
}

/* The evaluation of the version round @round made (round + 1), or JSON null. */
static json_t *eval_of_round(struct rt_node *n, struct rt_job *j, uint32_t round)
{
	int err;
	json_t *e = rt_job_eval_json(n, j, round + 1, &err);

	return e ? e : json_null();
}

static json_t *record_stored(struct rt_node *n, struct rt_job *j, const struct ctl_round_rec *r)
{
	json_t *metrics = NULL, *o;
	double dur;

	if (r->metrics_json)
		metrics = json_loads(r->metrics_json, 0, NULL);
	if (!json_is_object(metrics)) {
		json_decref(metrics);
		metrics = json_object();
	}
	/* From before schema 5 only duration_ms (first update to model stored) is known. */
	dur = r->opened_at > 0 && r->closed_at > 0 ? r->closed_at - r->opened_at
						   : (double)r->duration_ms / 1000.0;
	o = json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:o, s:o, s:f, s:I, s:o, s:I, s:f}",
		      "round", (json_int_t)r->round, "state", "done", "received",
		      (json_int_t)r->n_updates, "clients_per_round", (json_int_t)j->cpr,
		      "updates", (json_int_t)r->n_updates, "clients", (json_int_t)r->clients,
		      "opened_at", time_or_null(r->opened_at), "closed_at",
		      r->closed_at > 0 ? json_real(r->closed_at) : json_real((double)r->closed_unix),
		      "duration_s", dur, "bytes", (json_int_t)r->bytes, "metrics", metrics,
		      "metrics_updates", (json_int_t)r->metrics_updates, "total_weight",
		      r->total_weight);
	if (o) {
		json_object_set_new(o, "stored_at", json_integer(r->closed_unix));
		json_object_set_new(o, "evaluation", eval_of_round(n, j, r->round));
	}
	return o;
}

/* A round in flight (@r), or the open round before its first update (@r NULL). */
static json_t *record_live(struct rt_job *j, const struct rt_round *r,
			   uint32_t round)
{
	double now = rt__unix_now(), opened = r ? r->open_unix : 0, closed = r ? r->close_unix : 0;
	bool open = !r || !r->closed;
	uint32_t clients = r ? r->clients : 0;
	json_t *o;

	if (open && j->clients.synced && j->clients.round == round)
		clients = j->clients.seen;
	o = json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:I, s:o, s:I}",
		      "round", (json_int_t)round, "state", open ? "open" : "closed", "received",
		      (json_int_t)(r ? r->received : 0), "clients_per_round", (json_int_t)j->cpr,
		      "updates", (json_int_t)(r ? r->received : 0), "clients", (json_int_t)clients,
		      "opened_at", time_or_null(opened), "closed_at", open ? json_null()
									  : time_or_null(closed),
		      "duration_s", opened > 0 ? json_real((open ? now : closed) - opened)
					       : json_null(),
		      "bytes", (json_int_t)(r ? r->bytes : 0), "metrics",
		      r && r->msum ? rt_msum_means(r->msum) : json_object(), "metrics_updates",
		      (json_int_t)(r && r->msum ? r->msum->reports : 0));
	if (o)
		json_object_set_new(o, "evaluation", json_null());
	return o;
}

/* The rows of one page, copied out of the store (locked while its callback runs). */
struct page {
	struct ctl_round_rec *v; /* metrics_json owned (trib_strdup) */
	uint32_t n, cap;
};

static int page_row(void *ctx, const struct ctl_round_rec *r)
{
	struct page *p = ctx;

	if (p->n == p->cap)
		return -ENOSPC; /* cannot happen: cap is the LIMIT asked */
	p->v[p->n] = *r;
	p->v[p->n].metrics_json = r->metrics_json ? trib_strdup(r->metrics_json) : NULL;
	if (r->metrics_json && !p->v[p->n].metrics_json)
		return -ENOMEM;
	p->n++;
	return 0;
}

json_t *rt_job_rounds_json(struct rt_node *n, struct rt_job *j, uint32_t from, uint32_t limit,
			   int *err)
{
	struct page p = { .cap = limit + 1 };
	json_t *out = json_array(), *o, *next = json_null();
	uint32_t next_r = from;

	/* One more than asked: whether there is a next page. */
	p.v = trib_calloc(p.cap, sizeof(*p.v));
	*err = p.v && out ? 0 : -ENOMEM;
	if (!*err)
		*err = ctl_store_round_page(n->store, j->db_id, from, p.cap, page_row, &p);
	for (uint32_t i = 0; !*err && i < p.n; i++) {
		o = record_stored(n, j, &p.v[i]);
		*err = o && !json_array_append_new(out, o) ? 0 : -ENOMEM;
		next_r = p.v[i].round + 1;
	}
	/* Then the rounds in flight (the open one last), not stored yet. */
	for (struct rt_round *r = j->inflight; !*err && r && json_array_size(out) < p.cap;
	     r = r->next) {
		if (r->round < next_r)
			continue;
		o = record_live(j, r, r->round);
		*err = o && !json_array_append_new(out, o) ? 0 : -ENOMEM;
		next_r = r->round + 1;
	}
	/*
	 * The open round before its first update has no tree, but is the round updates name;
	 * a job whose num_rounds are over has none (its round counter points past the last).
	 */
	if (!*err && j->round >= next_r && !in_flight(j, j->round) && !rt_job_rounds_over(j) &&
	    json_array_size(out) < p.cap) {
		o = record_live(j, NULL, j->round);
		*err = o && !json_array_append_new(out, o) ? 0 : -ENOMEM;
	}
	for (uint32_t i = 0; p.v && i < p.n; i++)
		trib_free((void *)p.v[i].metrics_json);
	trib_free(p.v);
	if (*err) {
		json_decref(out);
		return NULL;
	}
	if (json_array_size(out) > limit) {
		next = json_incref(json_object_get(json_array_get(out, limit), "round"));
		json_array_remove(out, limit);
	}
	o = json_pack("{s:o, s:o}", "rounds", out, "next", next);
	*err = o ? 0 : -ENOMEM;
	return o;
}

static int one_row(void *ctx, const struct ctl_round_rec *r)
{
	return page_row(ctx, r);
}

json_t *rt_job_round_json(struct rt_node *n, struct rt_job *j, uint32_t round, int *err)
{
	struct ctl_round_rec rec;
	struct page p = { .v = &rec, .cap = 1 };
	struct rt_round *r = in_flight(j, round);
	json_t *o;

	if (r || (round == j->round && !rt_job_rounds_over(j))) {
		/* The open round exists before its first update (no tree yet). */
		o = record_live(j, r, round);
		*err = o ? 0 : -ENOMEM;
		return o;
	}
	*err = ctl_store_round_page(n->store, j->db_id, round, 1, one_row, &p);
	if (!*err && (p.n == 0 || rec.round != round))
		*err = -ENOENT;
	o = *err ? NULL : record_stored(n, j, &rec);
	if (p.n)
		trib_free((void *)rec.metrics_json);
	if (!*err && !o)
		*err = -ENOMEM;
	return o;
}

/* --- evaluations --- */

json_t *rt_job_eval_json(struct rt_node *n, struct rt_job *j, uint32_t version, int *err)
{
	struct rt_msum *s = NULL;
	uint32_t clients = 0;
	uint64_t samples = 0;
	char *sums = NULL;
	json_t *doc = NULL, *o = NULL;

	*err = ctl_store_eval_get(n->store, j->db_id, version, &clients, &samples, &sums);
	if (*err)
		return NULL;
	s = trib_calloc(1, sizeof(*s));
	doc = json_loads(sums, 0, NULL);
	*err = !s ? -ENOMEM : rt_msum_from_json(doc, s) ? -EIO : 0;
	if (!*err)
		o = json_pack("{s:I, s:I, s:I, s:o}", "version", (json_int_t)version, "clients",
			      (json_int_t)clients, "samples", (json_int_t)samples, "metrics",
			      rt_msum_means(s));
	if (!*err && !o)
		*err = -ENOMEM;
	if (*err == -EIO)
		trib_error("job %s: the stored evaluations of version %u do not parse", j->name,
			   version);
	json_decref(doc);
	trib_free(sums);
	trib_free(s);
	return o;
}

int rt_job_eval_latest(struct rt_node *n, struct rt_job *j, uint32_t *version,
		       uint64_t *samples_total)
{
	return ctl_store_eval_latest(n->store, j->db_id, version, samples_total);
}

int rt_job_eval_post(struct rt_node *n, struct rt_job *j, uint32_t version, const char *client,
		     const void *key, size_t key_len, uint64_t samples, const struct rt_cmetrics *m,
		     uint32_t *clients)
{
	struct rt_msum *s;
	uint64_t had_samples = 0;
	char *sums = NULL, *text = NULL;
	json_t *doc = NULL;
	int err;

	/* Version 0 is the initial model; j->completed the latest stored. */
	if (version > j->completed)
		return -ENOENT;
	err = ctl_store_eval_find(n->store, j->db_id, version, client, key, key_len, clients);
	if (!err)
		return 1; /* the key's evaluation: its first answer again */
	if (err != -ENOENT)
		return err; /* -EEXIST: the client has one */
	s = trib_calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	*clients = 0;
	err = ctl_store_eval_get(n->store, j->db_id, version, clients, &had_samples, &sums);
	if (!err) {
		doc = json_loads(sums, 0, NULL);
		err = rt_msum_from_json(doc, s) ? -EIO : 0;
	} else if (err == -ENOENT) {
		err = 0;
	}
	if (!err)
		err = rt_msum_add(s, m, (double)samples);
	if (!err) {
		json_t *out = rt_msum_to_json(s);

		text = out ? trib_json_dumps(out, JSON_COMPACT) : NULL;
		json_decref(out);
		err = text ? 0 : -ENOMEM;
	}
	/* One thread: nothing else counts an evaluation of this job between get and put. */
	if (!err)
		err = ctl_store_eval_put(n->store, j->db_id, version, *clients + 1, client, key,
					 key_len, samples, text);
	if (!err)
		(*clients)++;
	json_decref(doc);
	trib_free(text);
	trib_free(sums);
	trib_free(s);
	return err;
}
