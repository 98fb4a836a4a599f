// SPDX-License-Identifier: MIT
/* Benchmark: update ingest over HTTP into a running server against raw loopback TCP, same bytes. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_round.h"
#include "tl_client.h"
#include "tl_simulate.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

#define EXIT_SKIP 77

static const char usage[] =
	"usage: bench_ingest [--url http(s)://HOST:PORT (http://127.0.0.1:8080)] [--job NAME]\n"
	"         [--tls-ca FILE] [--tls-pin SHA256HEX]\n"
	"         [--data-dir DIR (./tributary-data)] [--admin-token-file FILE]\n"
	"         [--updates N (100)] [--params P (1000000)] [--connections C (1)] [--no-raw]\n"
	"  --connections C: C keep-alive connections, one thread each, the updates split\n"
	"  between them, all sending the same pre-made body; the time is the wall time from\n"
	"  the first send to the last answer. --no-raw: skip the raw TCP baseline.\n"
	"  --round R: R rounds of a fresh job instead (no raw baseline): each connection\n"
	"  sends its own pre-made body, the model of each round is long-polled and checked\n"
	"  against the mean computed before the timing; prints per round the ingest time\n"
	"  (first send to last 202) and the round time (first send to the model).\n";

struct bench_opts {
	const char *url;
	const char *job; /* NULL: bench-ingest-<pid>, a fresh job every run */
	const char *data_dir;
	const char *token_file;
	uint32_t updates;
	uint64_t params;
	uint32_t connections;
	bool no_raw;
	struct tl_tls_opts tls;
	uint32_t rounds; /* --round R: 0, ingest only (bench_round.c) */
};

/* One of --connections C: its share of the updates, on its own client. */
struct conn_run {
	const struct bench_opts *o;
	const struct tl_sim_update *proto; /* job, token, round, body: shared, read-only */
	uint32_t n;                        /* updates to send */
	pthread_barrier_t *start;
	uint64_t t0, t1;
	unsigned retries;
	int err; /* 0, a -errno, or -EPROTO for an answer other than 202 (logged) */
	pthread_t tid;
};

/* The raw baseline's sink: receives @n messages of @len bytes, answers each with one byte. */
struct sink {
	int lfd;
	uint16_t port;
	uint32_t n;
	size_t len;
	int err; /* 0 or -errno, set by the sink thread */
	pthread_t tid;
};

static int parse_opts(int argc, char **argv, struct bench_opts *o)
{
	o->url = "http://127.0.0.1:8080";
	o->job = NULL;
	o->data_dir = "./tributary-data";
	o->token_file = NULL;
	o->updates = 100;
	o->params = 1000000;
	o->tls = (struct tl_tls_opts){ NULL, NULL, NULL };
	o->connections = 1;
	o->no_raw = false;
	o->rounds = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end;

		if (!strcmp(a, "--no-raw")) {
			o->no_raw = true;
			continue;
		}
		if (!v)
			return -EINVAL;
		if (!strcmp(a, "--url")) {
			o->url = v;
		} else if (!strcmp(a, "--tls-ca")) {
			o->tls.ca_file = v;
		} else if (!strcmp(a, "--tls-pin")) {
			o->tls.pin_sha256 = v;
		} else if (!strcmp(a, "--job")) {
			o->job = v;
		} else if (!strcmp(a, "--data-dir")) {
			o->data_dir = v;
		} else if (!strcmp(a, "--admin-token-file")) {
			o->token_file = v;
		} else if (!strcmp(a, "--updates")) {
			o->updates = (uint32_t)strtoul(v, &end, 10);
			if (*end || o->updates == 0 || o->updates > 1000000)
				return -EINVAL;
		} else if (!strcmp(a, "--connections")) {
			o->connections = (uint32_t)strtoul(v, &end, 10);
			if (*end || o->connections == 0 || o->connections > 64)
				return -EINVAL;
		} else if (!strcmp(a, "--round")) {
			o->rounds = (uint32_t)strtoul(v, &end, 10);
			if (*end || o->rounds == 0 || o->rounds > 1000)
				return -EINVAL;
		} else if (!strcmp(a, "--params")) {
			o->params = strtoull(v, &end, 10);
			if (*end || o->params == 0 || o->params > (1ull << 28))
				return -EINVAL;
		} else {
			return -EINVAL;
		}
		i++;
	}
	return 0;
}

static void *sink_run(void *arg)
{
	struct sink *s = arg;
	size_t cap = 1 << 20, got;
	char *buf = trib_malloc(cap), ack = 'k';
	ssize_t n;
	int fd;

	if (!buf) {
		s->err = -ENOMEM;
		return NULL;
	}
	fd = accept(s->lfd, NULL, NULL);
	if (fd < 0) {
		s->err = -errno;
		goto out_free;
	}
	for (uint32_t m = 0; m < s->n; m++) {
		for (got = 0; got < s->len; got += (size_t)n) {
			n = recv(fd, buf, s->len - got < cap ? s->len - got : cap, 0);
			if (n <= 0) {
				s->err = n < 0 ? -errno : -ECONNRESET;
				goto out_close;
			}
		}
		if (send(fd, &ack, 1, MSG_NOSIGNAL) != 1) {
			s->err = -EPIPE;
			goto out_close;
		}
	}
out_close:
	close(fd);
out_free:
	trib_free(buf);
	return NULL;
}

/* Start the sink on 127.0.0.1, ephemeral port. Returns 0 or -errno. */
static int sink_start(struct sink *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int err;

	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->lfd < 0)
		return -errno;
	if (bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) || listen(s->lfd, 1) ||
	    getsockname(s->lfd, (struct sockaddr *)&a, &alen)) {
		err = -errno;
		goto err_close;
	}
	s->port = ntohs(a.sin_port);
	err = -pthread_create(&s->tid, NULL, sink_run, s);
	if (err)
		goto err_close;
	return 0;

err_close:
	close(s->lfd);
	return err;
}

/*
 * The baseline: the same messages, one at a time, each answered by one byte
 * (as each POST is answered by a 202). *secs sums the send-to-ack times.
 */
static int raw_tcp(const float *data, size_t len, uint32_t n, double *secs)
{
	struct sink s = { .n = n, .len = len };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd, one = 1, err;
	uint64_t t0, total = 0;
	char ack;

	err = sink_start(&s);
	if (err)
		return err;
	a.sin_port = htons(s.port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		err = -errno;
		/* Wake the sink from accept(). */
		shutdown(s.lfd, SHUT_RDWR);
		goto out_join;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (uint32_t m = 0; m < n && !err; m++) {
		size_t off = 0;
		ssize_t w;

		t0 = trib_now_ns();
		while (off < len) {
			w = send(fd, (const char *)data + off, len - off, MSG_NOSIGNAL);
			if (w < 0) {
				err = -errno;
				break;
			}
			off += (size_t)w;
		}
		if (!err && recv(fd, &ack, 1, MSG_WAITALL) != 1)
			err = -ECONNRESET;
		total += trib_now_ns() - t0;
	}
out_join:
	if (fd >= 0)
		close(fd);
	pthread_join(s.tid, NULL);
	close(s.lfd);
	*secs = (double)total / 1e9;
	return err ? err : s.err;
}

/* Returns the exit code. */
/* Post one update; returns 0, a -errno, or -EPROTO for an answer other than 202 (logged). */
static int post_one(struct tl_client *c, const struct tl_sim_update *u, uint32_t i,
		    unsigned *retries)
{
	struct tl_http_resp resp;
	char msg[256];
	unsigned r = 0;
	int err;

	err = tl_sim_post_update(c, u, &resp, &r);
	*retries += r;
	if (!err && resp.status == 202)
		return 0;
	if (err)
		snprintf(msg, sizeof(msg), "%s", tl_client_strerror(err));
	else
		tl_http_error_msg(&resp, msg, sizeof(msg));
	trib_error("update %u of job %s: %s", i, u->job, msg);
	return err ? err : -EPROTO;
}

static void *conn_run(void *arg)
{
	struct conn_run *cr = arg;
	struct tl_client *c = NULL;

	cr->err = tl_client_open(cr->o->url, &cr->o->tls, &c);
	/* Everyone waits for everyone, connected or not, so that no thread is left waiting. */
	pthread_barrier_wait(cr->start);
	cr->t0 = trib_now_ns();
	for (uint32_t i = 0; i < cr->n && !cr->err; i++)
		cr->err = post_one(c, cr->proto, i, &cr->retries);
	cr->t1 = trib_now_ns();
	tl_client_close(c);
	return NULL;
}

/*
 * --connections C > 1: C threads share the updates and one body. *secs is the
 * wall time from the first thread's start to the last one's end.
 */
static int http_parallel(const struct bench_opts *o, const struct tl_sim_update *proto,
			 double *secs, unsigned *retries)
{
	struct conn_run cr[64];
	pthread_barrier_t start;
	uint64_t t0 = UINT64_MAX, t1 = 0;
	uint32_t k, nc = o->connections;
	int err = 0;

	if (pthread_barrier_init(&start, NULL, nc))
		return 1;
	for (k = 0; k < nc; k++) {
		cr[k] = (struct conn_run){ .o = o, .proto = proto, .start = &start,
					   .n = o->updates / nc + (k < o->updates % nc) };
		if (pthread_create(&cr[k].tid, NULL, conn_run, &cr[k]))
			break;
	}
	if (k < nc) {
		/* Cannot happen short of memory; the started threads would wait forever. */
		trib_error("cannot start %u threads", nc);
		abort();
	}
	for (k = 0; k < nc; k++) {
		pthread_join(cr[k].tid, NULL);
		t0 = cr[k].t0 < t0 ? cr[k].t0 : t0;
		t1 = cr[k].t1 > t1 ? cr[k].t1 : t1;
		*retries += cr[k].retries;
		if (cr[k].err && !err)
			err = cr[k].err;
	}
	pthread_barrier_destroy(&start);
	if (err)
		return 1;
	*secs = (double)(t1 - t0) / 1e9;
	return 0;
}

static int http_ingest(const struct bench_opts *o, float *buf, double *secs, unsigned *retries)
{
	struct tl_client *c = NULL;
	struct tl_sim_job job;
	char *admin = NULL, jobname[64];
	const char *name = o->job;
	uint64_t t0, total = 0;
	int err, rc = 1;

	if (!name) {
		snprintf(jobname, sizeof(jobname), "bench-ingest-%d", (int)getpid());
		name = jobname;
	}
	err = tl_client_open(o->url, &o->tls, &c);
	if (err) {
		fprintf(stderr, "bench_ingest: no server at %s (%s): skipped\n", o->url,
			tl_client_strerror(err));
		/* A server that is there but refused (TLS, options) is a failure, not a skip. */
		return err == -EKEYREJECTED || err == -EPROTO || err == -EINVAL || err == -ENOENT
			       ? 1 : EXIT_SKIP;
	}
	if (tl_sim_admin_token(o->token_file, o->data_dir, &admin))
		trib_warn("no admin token found");
	err = tl_sim_job_ensure(c, admin, name, o->updates, o->params, &job);
	if (err)
		goto out;
	if (job.received) {
		trib_error("job %s has a partly filled round; use a fresh --job", name);
		goto out;
	}
	*retries = 0;
	if (o->connections > 1) {
		struct tl_sim_update u = { .job = name, .token = job.token, .round = job.round,
					   .data = buf, .params = o->params, .samples = 1 };
		struct bench_opts po = *o;

		/* The threads' clients share one OpenSSL context (one CA store load). */
		if (tl_tls_shared_new(&po.tls.shared))
			goto out;
		tl_sim_fill(tl_sim_key(1, job.round, 0), 0, buf, o->params);
		rc = http_parallel(&po, &u, secs, retries);
		tl_tls_shared_free(po.tls.shared);
		goto out;
	}
	for (uint32_t i = 0; i < o->updates; i++) {
		struct tl_sim_update u = { .job = name, .token = job.token, .round = job.round,
					   .data = buf, .params = o->params };
		uint64_t key = tl_sim_key(1, job.round, i);

		/* Generation is not timed. */
		u.samples = tl_sim_samples(key);
		tl_sim_fill(key, 0, buf, o->params);
		t0 = trib_now_ns();
		err = post_one(c, &u, i, retries);
		total += trib_now_ns() - t0;
		if (err)
			goto out;
	}
	*secs = (double)total / 1e9;
	rc = 0;
out:
	trib_free(admin);
	tl_client_close(c);
	return rc;
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	double http_s = 0, raw_s = 0, mb, http_mbs = 0, raw_mbs;
	unsigned retries = 0;
	size_t len;
	float *buf;
	int rc, err;

	trib_log_init("bench_ingest");
	if (parse_opts(argc, argv, &o)) {
		fputs(usage, stderr);
		return 2;
	}
	if (o.rounds) {
		struct bench_round_opts ro = {
			.url = o.url, .job = o.job, .data_dir = o.data_dir,
			.token_file = o.token_file, .tls = o.tls, .updates = o.updates,
			.params = o.params, .connections = o.connections, .rounds = o.rounds,
		};

		return bench_round(&ro);
	}
	len = o.params * sizeof(float);
	buf = trib_malloc(len);
	if (!buf)
		return 1;
	mb = (double)len * o.updates / 1e6;

	rc = http_ingest(&o, buf, &http_s, &retries);
	if (rc == 0) {
		http_mbs = mb / http_s;
		printf("ingest: %u updates x %.1f MB over HTTP (%s, %u connection%s): %.3f s, "
		       "%.1f MB/s, %.1f updates/s, %u retries (503)\n",
		       o.updates, (double)len / 1e6, o.url, o.connections,
		       o.connections > 1 ? "s" : "", http_s, http_mbs, o.updates / http_s, retries);
	}
	if (!o.no_raw && (rc == 0 || rc == EXIT_SKIP)) {
		tl_sim_fill(tl_sim_key(1, 0, 0), 0, buf, o.params);
		err = raw_tcp(buf, len, o.updates, &raw_s);
		if (err) {
			trib_error("raw loopback TCP: %s", strerror(-err));
			rc = 1;
		} else {
			raw_mbs = mb / raw_s;
			printf("ingest: %u updates x %.1f MB over raw loopback TCP: %.3f s, "
			       "%.1f MB/s\n", o.updates, (double)len / 1e6, raw_s, raw_mbs);
			if (rc == 0)
				printf("ingest: HTTP / raw TCP = %.2f\n", http_mbs / raw_mbs);
		}
	}
	trib_free(buf);
	return rc;
}
