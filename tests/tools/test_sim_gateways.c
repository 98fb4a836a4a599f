// SPDX-License-Identifier: MIT
/* simulate run whole against fake gateways: failovers, refusals, a job not yet everywhere. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tl_simulate.h"
#include "trib_alloc.h"

#define ARGV(...) ((char *[]){ "simulate", __VA_ARGS__, NULL })

/*
 * A fake gateway answers by route, not in a fixed order (simulate's poller
 * may ask GET /rounds at any time), one connection at a time, closing each
 * after its answer (so the clients of main, workers and poller take turns).
 * It serves until told to stop.
 */
#define ROUTE_ANSWERS 4
#define CLOSE_HDR "Connection: close\r\n"
#define GW_MAX_KEYS 16

struct gw_route {
	const char *match;                  /* the request line starts with this */
	const char *answer[ROUTE_ANSWERS];  /* in order; the last one repeats */
	size_t len[ROUTE_ANSWERS];          /* 0: strlen(answer) */
	unsigned hits;
};

struct fake_gw {
	int lfd;
	uint16_t port;
	pthread_t tid;
	_Atomic bool stop;
	struct gw_route *routes;
	unsigned nroutes;
	unsigned unrouted; /* requests no route matched (answered 500) */
	unsigned unknown;  /* the first this many requests are answered 404: no such job yet */
	/* After this many POSTs of updates (0: never) it stops listening for down_ms ms. */
	_Atomic unsigned restart_after;
	_Atomic unsigned down_ms;
	unsigned nkeys;    /* POSTs of updates seen, and their Idempotency-Keys ("": none) */
	char keys[GW_MAX_KEYS][TL_IDEM_KEY_MAX + 1];
	char buf[1 << 16];
};

/* Read more of a request; <= 0 once the client closed, the gateway stopped or 10 s passed. */
static ssize_t gw_read(struct fake_gw *s, int fd, void *buf, size_t n)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	for (int waited = 0; waited < 10000 && !atomic_load(&s->stop); waited += 50) {
		int k = poll(&p, 1, 50);

		if (k < 0)
			return -1;
		if (k > 0)
			return read(fd, buf, n);
	}
	return -1;
}

static void gw_write(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k <= 0)
			return;
		p += k;
		n -= (size_t)k;
	}
}

/* Note the Idempotency-Key of a POST of an update (its head, NUL-terminated, in s->buf). */
static void gw_note_key(struct fake_gw *s)
{
	const char *k;
	size_t n = 0;

	if (strncmp(s->buf, "POST /v1/jobs/j/updates ", 24) || s->nkeys >= GW_MAX_KEYS)
		return;
	k = strcasestr(s->buf, "\r\nIdempotency-Key:");
	if (k) {
		k += 18;
		k += strspn(k, " ");
		n = strcspn(k, "\r\n");
	}
	snprintf(s->keys[s->nkeys++], TL_IDEM_KEY_MAX + 1, "%.*s", (int)n, k ? k : "");
}

/* Read one request on @fd (its body dropped) and answer it by route; "" answers nothing. */
static void gw_serve(struct fake_gw *s, int fd)
{
	size_t have = 0, hlen, blen = 0, got;
	const char *cl, *ans = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
			       "Connection: close\r\n\r\n";
	size_t alen = 0;
	bool routed = false;
	char *end;
	ssize_t n;

	while (!(end = memmem(s->buf, have, "\r\n\r\n", 4))) {
		n = gw_read(s, fd, s->buf + have, sizeof(s->buf) - have - 1);
		if (n <= 0)
			return;
		have += (size_t)n;
	}
	hlen = (size_t)(end - s->buf) + 4;
	s->buf[hlen - 1] = '\0';
	cl = strcasestr(s->buf, "content-length:");
	if (cl)
		blen = strtoull(cl + 15, NULL, 10);
	gw_note_key(s);
	/* Read the whole body: closing with bytes unread would send a reset, not the answer. */
	for (got = have - hlen; got < blen; got += (size_t)n) {
		n = gw_read(s, fd, s->buf, sizeof(s->buf));
		if (n <= 0)
			return;
	}
	if (s->unknown) {
		s->unknown--;
		ans = "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n" CLOSE_HDR
		      "Content-Length: 28\r\n\r\n{\"error\":\"no job named 'j'\"}";
		routed = true;
	}
	for (unsigned i = 0; i < s->nroutes && !routed; i++) {
		struct gw_route *r = &s->routes[i];
		unsigned k = r->hits;

		if (strncmp(s->buf, r->match, strlen(r->match)))
			continue;
		while (k >= ROUTE_ANSWERS || (k && !r->answer[k]))
			k--;
		ans = r->answer[k];
		alen = r->len[k];
		r->hits++;
		routed = true;
		break;
	}
	s->unrouted += !routed;
	gw_write(fd, ans, alen ? alen : strlen(ans));
}

static int gw_listen(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons(port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(fd, 16), 0);
	return fd;
}

/* The restart of s->restart_after: nobody listens on the port for s->down_ms. */
static void gw_restart(struct fake_gw *s)
{
	unsigned ms = atomic_load(&s->down_ms);
	const struct timespec down = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	close(s->lfd);
	nanosleep(&down, NULL);
	s->lfd = gw_listen(s->port);
	atomic_store(&s->restart_after, 0);
}

static void *gw_run(void *arg)
{
	struct fake_gw *s = arg;

	while (!atomic_load(&s->stop)) {
		struct pollfd p = { .fd = s->lfd, .events = POLLIN };
		int fd;

		if (poll(&p, 1, 50) <= 0)
			continue;
		fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		gw_serve(s, fd);
		close(fd);
		if (atomic_load(&s->restart_after) && s->nkeys == atomic_load(&s->restart_after))
			gw_restart(s);
	}
	return NULL;
}

static void gw_start(struct fake_gw *s, struct gw_route *routes, unsigned n)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);

	s->routes = routes;
	s->nroutes = n;
	s->unrouted = 0;
	s->unknown = 0;
	s->nkeys = 0;
	atomic_init(&s->restart_after, 0);
	atomic_init(&s->down_ms, 0);
	atomic_init(&s->stop, false);
	s->lfd = gw_listen(0);
	cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&s->tid, NULL, gw_run, s), 0);
}

static void gw_stop(struct fake_gw *s)
{
	atomic_store(&s->stop, true);
	pthread_join(s->tid, NULL);
	close(s->lfd);
}

#define SIM_P 8 /* the --params and "params" below */

/* A canned answer with its Content-Length filled in (trib_free it). */
static char *json_answer(const char *status, const char *body)
{
	char *a = trib_malloc(512);

	cr_assert_not_null(a);
	snprintf(a, 512, "HTTP/1.1 %s\r\nContent-Type: application/json\r\n" CLOSE_HDR
		 "Content-Length: %zu\r\n\r\n%s", status, strlen(body), body);
	return a;
}

/* The model of round 0 (seed 1) that folds client 0's update, and client 1's if @both. */
static char *model_answer(bool both, size_t *len)
{
	const bool include[2] = { true, both };
	double ref[SIM_P];
	float x[SIM_P];
	char head[256], *hdr, *a;
	size_t hdr_len;
	int n;

	cr_assert_eq(tl_sim_st_header(SIM_P, &hdr, &hdr_len), 0);
	cr_assert_eq(tl_sim_reference_subset(1, 0, 2, include, SIM_P, 1, ref), 0);
	for (int i = 0; i < SIM_P; i++)
		x[i] = (float)ref[i];
	n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: application/"
		     "x-safetensors\r\nX-Tributary-Round: 1\r\n" CLOSE_HDR
		     "Content-Length: %zu\r\n\r\n", hdr_len + sizeof(x));
	a = trib_malloc((size_t)n + hdr_len + sizeof(x));
	cr_assert_not_null(a);
	memcpy(a, head, (size_t)n);
	memcpy(a + n, hdr, hdr_len);
	memcpy(a + (size_t)n + hdr_len, x, sizeof(x));
	*len = (size_t)n + hdr_len + sizeof(x);
	trib_free(hdr);
	return a;
}

/* What simulate said and wrote. */
struct sim_out {
	int rc;
	char stdout_text[8192];
	json_t *report; /* the --report-json file, parsed */
};

/*
 * Run `simulate --clients 2 --rounds 1 --connections 1 --url @urls`, with
 * `--timeout-s @timeout_s` unless it is NULL. One connection: client 0 is
 * answered before client 1 is sent.
 */
static void run_sim_timeout(char *urls, char *timeout_s, struct sim_out *out)
{
	char dir[] = "/tmp/trib-sim-gw-XXXXXX", tok[256], rep[256], cap[256];
	char **argv;
	json_error_t jerr;
	FILE *f;
	int argc = 0, saved, fd;
	ssize_t n;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(tok, sizeof(tok), "%s/admin-token", dir);
	snprintf(rep, sizeof(rep), "%s/report.json", dir);
	snprintf(cap, sizeof(cap), "%s/stdout", dir);
	f = fopen(tok, "w");
	cr_assert_not_null(f);
	fputs("sim-test-admin-token-0123\n", f);
	fclose(f);

	/* stdout into a file for the test to read: simulate prints its verdicts there. */
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(saved >= 0 && fd >= 0);
	dup2(fd, STDOUT_FILENO);
	close(fd);
	argv = ARGV("--job", "j", "--clients", "2", "--rounds", "1", "--params", "8",
		    "--connections", "1", "--format", "raw", "--url", urls,
		    "--admin-token-file", tok, "--report-json", rep, "--quiet", NULL, NULL);
	while (argv[argc])
		argc++;
	if (timeout_s) {
		argv[argc++] = "--timeout-s";
		argv[argc++] = timeout_s;
	}
	out->rc = tl_sim_main(argc, argv);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);

	fd = open(cap, O_RDONLY);
	cr_assert(fd >= 0);
	n = read(fd, out->stdout_text, sizeof(out->stdout_text) - 1);
	close(fd);
	out->stdout_text[n > 0 ? n : 0] = '\0';
	out->report = json_load_file(rep, 0, &jerr);
	cr_assert_not_null(out->report, "--report-json: %s\nstdout:\n%s", jerr.text,
			   out->stdout_text);
	unlink(cap);
	unlink(rep);
	unlink(tok);
	rmdir(dir);
}

static void run_sim(char *urls, struct sim_out *out)
{
	run_sim_timeout(urls, NULL, out);
}

/* run_sim() against gateways @a then @b: client 0's own gateway is @a, client 1's is @b. */
static void run_sim_two_gateways(const struct fake_gw *a, const struct fake_gw *b,
				 struct sim_out *out)
{
	char urls[128];

	snprintf(urls, sizeof(urls), "http://127.0.0.1:%u,http://127.0.0.1:%u", a->port, b->port);
	run_sim(urls, out);
}

/* The routes of a gateway; @updates are its answers to POST .../updates, in order. */
#define GW_ROUTES(job, model, model_len, rounds, ...) \
	{ \
		{ .match = "GET /v1/jobs/j ", .answer = { job } }, \
		{ .match = "POST /v1/jobs/j/updates ", .answer = { __VA_ARGS__ } }, \
		{ .match = "GET /v1/jobs/j/model?", .answer = { model }, \
		  .len = { model_len } }, \
		{ .match = "GET /v1/jobs/j/rounds/0 ", .answer = { rounds } }, \
	}

enum { R_JOB, R_POST, R_MODEL, R_ROUNDS };

static const char job_body[] = "{\"job\":\"j\",\"round\":0,\"received\":0,\"clients_per_round\":2,"
			       "\"algorithm\":\"fedavg\",\"params\":8}";
static const char ack_a[] = "{\"round\":0,\"received\":1,\"node\":\"a\",\"epoch\":1,"
			    "\"receipt\":\"a.1/0/0\"}";
static const char closed_409[] = "{\"error\":\"round mismatch: the job is at round 1, the update "
				 "is for round 0 (stale)\",\"round\":1}";
/* Node b died once it had counted the update: its answer stops mid-body. */
static const char cut_202[] = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
			      "Content-Length: 80\r\n\r\n{\"round\":0,\"rec";
static const char rounds_body[] = "{\"round\":0,\"state\":\"done\",\"lost_nodes\":[\"b\"],"
				  "\"top\":\"a\",\"edges\":[]}";

static void init_quiet(void)
{
	cr_redirect_stderr();
}

/*
 * The flaky end of cluster.py F, step by step: client 1's gateway (node b)
 * counts its update and dies before its 202 (the connection drops
 * mid-answer); the update goes to gateway a, whose round has meanwhile
 * closed (409). That refusal is explained: it is left out of the reference
 * (the model folds client 0 alone and checks), and the run succeeds.
 */
Test(tools_sim_gateways, refused_after_failover_is_explained, .init = init_quiet, .timeout = 60)
{
	char *job = json_answer("200 OK", job_body), *ack = json_answer("202 Accepted", ack_a);
	char *refused = json_answer("409 Conflict", closed_409);
	char *rounds = json_answer("200 OK", rounds_body);
	size_t model_len;
	char *model = model_answer(false, &model_len);
	struct gw_route ra[] = GW_ROUTES(job, model, model_len, rounds, ack, refused);
	struct gw_route rb[] = GW_ROUTES(job, model, model_len, rounds, cut_202);
	struct fake_gw a, b;
	struct sim_out out;
	json_t *r0;

	gw_start(&a, ra, 4);
	gw_start(&b, rb, 4);
	run_sim_two_gateways(&a, &b, &out);
	gw_stop(&a);
	gw_stop(&b);

	cr_assert_eq(ra[R_POST].hits, 2, "client 0's update, then client 1's after the drop");
	cr_assert_geq(rb[R_POST].hits, 1, "client 1's update went to its own gateway first");
	/* b cut every answer: resent to b, then to a, always under client 1's one key. */
	cr_assert_eq(b.nkeys, rb[R_POST].hits);
	cr_assert_eq(a.nkeys, 2);
	cr_assert_str_eq(a.keys[0], "sim-1-0-0");
	for (unsigned i = 0; i < b.nkeys; i++)
		cr_assert_str_eq(b.keys[i], "sim-1-0-1", "b's POST %u", i);
	cr_assert_str_eq(a.keys[1], "sim-1-0-1", "the failover keeps the key");
	cr_assert_eq(out.rc, 0, "the refusal after a failover is explained:\n%s", out.stdout_text);
	cr_assert_eq(ra[R_MODEL].hits, 1, "the model was fetched");
	cr_assert_eq(a.unrouted + b.unrouted, 0);
	cr_assert_not_null(strstr(out.stdout_text, "1 update went to another gateway"), "%s",
			   out.stdout_text);
	cr_assert_not_null(strstr(out.stdout_text, "1 update refused (409)"), "%s",
			   out.stdout_text);
	cr_assert_null(strstr(out.stdout_text, "FAILED"), "%s", out.stdout_text);
	r0 = json_array_get(json_object_get(out.report, "rounds"), 0);
	cr_assert(json_is_true(json_object_get(out.report, "ok")));
	cr_assert(json_is_true(json_object_get(r0, "ok")));
	cr_assert_eq(json_integer_value(json_object_get(r0, "updates")), 1,
		     "the refused update is left out of the reference");
	cr_assert(json_is_real(json_object_get(r0, "max_err")), "the model was checked");
	cr_assert_eq(json_real_value(json_object_get(r0, "max_err")), 0.0);
	json_decref(out.report);
	trib_free(model);
	trib_free(rounds);
	trib_free(refused);
	trib_free(ack);
	trib_free(job);
}

/*
 * The same 409, but no gateway dropped anything: client 1's own gateway
 * refuses it outright. Nothing explains a round that closed without it: the
 * round fails.
 */
Test(tools_sim_gateways, refused_without_failover_is_an_error, .init = init_quiet, .timeout = 60)
{
	char *job = json_answer("200 OK", job_body), *ack = json_answer("202 Accepted", ack_a);
	char *refused = json_answer("409 Conflict", closed_409);
	char *rounds = json_answer("200 OK", rounds_body);
	size_t model_len;
	char *model = model_answer(false, &model_len);
	struct gw_route ra[] = GW_ROUTES(job, model, model_len, rounds, ack);
	struct gw_route rb[] = GW_ROUTES(job, model, model_len, rounds, refused);
	struct fake_gw a, b;
	struct sim_out out;
	json_t *r0;

	gw_start(&a, ra, 4);
	gw_start(&b, rb, 4);
	run_sim_two_gateways(&a, &b, &out);
	gw_stop(&a);
	gw_stop(&b);

	cr_assert_eq(ra[R_POST].hits, 1);
	cr_assert_eq(rb[R_POST].hits, 1, "no failover: b answered");
	cr_assert_eq(out.rc, 1, "a 409 with no failover is an error:\n%s", out.stdout_text);
	cr_assert_not_null(strstr(out.stdout_text, "round 0: FAILED: 1/2 updates accepted, 1 "
						   "failed"),
			   "%s", out.stdout_text);
	cr_assert_not_null(strstr(out.stdout_text, "although no gateway dropped a connection"),
			   "%s", out.stdout_text);
	cr_assert_null(strstr(out.stdout_text, "another gateway"), "%s", out.stdout_text);
	r0 = json_array_get(json_object_get(out.report, "rounds"), 0);
	cr_assert(json_is_false(json_object_get(out.report, "ok")));
	cr_assert(json_is_false(json_object_get(r0, "ok")));
	json_decref(out.report);
	trib_free(model);
	trib_free(rounds);
	trib_free(refused);
	trib_free(ack);
	trib_free(job);
}

/*
 * A cluster tells its other nodes of a new job a moment after the 201 (the
 * first run of cluster.py F that failed this way: n1 learned of job f 60 ms
 * after it was made, and a first update sent there got 404). simulate waits
 * until every gateway knows the job before the first update.
 */
Test(tools_sim_gateways, waits_until_every_gateway_knows_the_job, .init = init_quiet, .timeout = 60)
{
	static const char ack_b[] = "{\"round\":0,\"received\":2,\"node\":\"b\",\"epoch\":1,"
				    "\"receipt\":\"b.1/0/1\"}";
	char *job = json_answer("200 OK", job_body), *ack = json_answer("202 Accepted", ack_a);
	char *ackb = json_answer("202 Accepted", ack_b);
	char *rounds = json_answer("200 OK", "{\"round\":0,\"state\":\"done\",\"lost_nodes\":[]}");
	size_t model_len;
	char *model = model_answer(true, &model_len);
	struct gw_route ra[] = GW_ROUTES(job, model, model_len, rounds, ack);
	struct gw_route rb[] = GW_ROUTES(job, model, model_len, rounds, ackb);
	struct fake_gw a, b;
	struct sim_out out;
	json_t *r0;

	gw_start(&a, ra, 4);
	gw_start(&b, rb, 4);
	b.unknown = 3;
	run_sim_two_gateways(&a, &b, &out);
	gw_stop(&a);
	gw_stop(&b);

	cr_assert_eq(out.rc, 0, "b learned of the job before the first update:\n%s",
		     out.stdout_text);
	cr_assert_eq(b.unknown, 0, "b answered 404 three times (%u left)\n%s", b.unknown, out.stdout_text);
	cr_assert_geq(rb[R_JOB].hits, 1, "simulate asked b again until it knew the job");
	cr_assert_eq(rb[R_POST].hits, 1, "client 1's update went to b, once");
	cr_assert_eq(ra[R_POST].hits, 1);
	cr_assert_eq(a.unrouted + b.unrouted, 0);
	r0 = json_array_get(json_object_get(out.report, "rounds"), 0);
	cr_assert(json_is_true(json_object_get(r0, "ok")));
	cr_assert_eq(json_integer_value(json_object_get(r0, "updates")), 2);
	json_decref(out.report);
	trib_free(model);
	trib_free(rounds);
	trib_free(ackb);
	trib_free(ack);
	trib_free(job);
}

/*
 * One gateway that drops the connection once it has read client 0's update
 * (no answer at all), then cuts its second answer in the middle: simulate
 * sends the update again each time, under the same Idempotency-Key, and the
 * round completes. Every update has its own key.
 */
Test(tools_sim_gateways, broken_connection_resends_with_the_same_key, .init = init_quiet,
     .timeout = 60)
{
	static const char cut_single[] = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json"
					 "\r\nContent-Length: 40\r\n\r\n{\"round\":0,";
	char *job = json_answer("200 OK", job_body);
	char *ack0 = json_answer("202 Accepted", "{\"round\":0,\"received\":1}");
	char *ack1 = json_answer("202 Accepted", "{\"round\":0,\"received\":2}");
	char *rounds = json_answer("404 Not Found", "{\"error\":\"single node\"}");
	size_t model_len;
	char *model = model_answer(true, &model_len);
	struct gw_route ra[] = GW_ROUTES(job, model, model_len, rounds, "", cut_single, ack0, ack1);
	struct fake_gw a;
	struct sim_out out;
	char url[64];
	json_t *r0;

	gw_start(&a, ra, 4);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", a.port);
	run_sim(url, &out);
	gw_stop(&a);

	cr_assert_eq(out.rc, 0, "the resent update was accepted once:\n%s", out.stdout_text);
	cr_assert_eq(ra[R_POST].hits, 4, "client 0's update three times, client 1's once, not %u",
		     ra[R_POST].hits);
	cr_assert_eq(a.nkeys, 4);
	cr_assert_str_eq(a.keys[0], "sim-1-0-0");
	cr_assert_str_eq(a.keys[1], "sim-1-0-0", "the resend after the drop keeps the key");
	cr_assert_str_eq(a.keys[2], "sim-1-0-0", "the resend after the cut keeps the key");
	cr_assert_str_eq(a.keys[3], "sim-1-0-1", "another update, another key");
	cr_assert_eq(a.unrouted, 0);
	r0 = json_array_get(json_object_get(out.report, "rounds"), 0);
	cr_assert(json_is_true(json_object_get(r0, "ok")));
	cr_assert_eq(json_integer_value(json_object_get(r0, "updates")), 2);
	json_decref(out.report);
	trib_free(model);
	trib_free(rounds);
	trib_free(ack1);
	trib_free(ack0);
	trib_free(job);
}

/*
 * Issue 14 item 5: client 0's gateway accepts connections and never answers
 * (a listening socket nobody accepts from: the kernel completes the
 * handshakes). After --timeout-s the update goes to the next gateway under
 * its key, and so do the job setup and the model: the round completes.
 */
Test(tools_sim_gateways, answer_timeout_fails_over_with_the_same_key, .init = init_quiet,
     .timeout = 60)
{
	char *job = json_answer("200 OK", job_body);
	char *ack0 = json_answer("202 Accepted", "{\"round\":0,\"received\":1}");
	char *ack1 = json_answer("202 Accepted", "{\"round\":0,\"received\":2}");
	char *rounds = json_answer("404 Not Found", "{\"error\":\"single node\"}");
	size_t model_len;
	char *model = model_answer(true, &model_len);
	struct gw_route rb[] = GW_ROUTES(job, model, model_len, rounds, ack0, ack1);
	struct sockaddr_in sa;
	socklen_t alen = sizeof(sa);
	struct fake_gw b;
	struct sim_out out;
	uint64_t t0;
	char urls[128];
	int hang;

	hang = gw_listen(0);
	cr_assert_eq(getsockname(hang, (struct sockaddr *)&sa, &alen), 0);
	gw_start(&b, rb, 4);
	snprintf(urls, sizeof(urls), "http://127.0.0.1:%u,http://127.0.0.1:%u",
		 ntohs(sa.sin_port), b.port);
	t0 = (uint64_t)time(NULL);
	run_sim_timeout(urls, "1", &out);
	gw_stop(&b);
	close(hang);

	cr_assert_eq(out.rc, 0, "the round completed on the other gateway:\n%s", out.stdout_text);
	cr_assert_lt((uint64_t)time(NULL) - t0, 20, "timeouts of 1 s, not the default 30 s");
	cr_assert_eq(b.nkeys, 2, "each update reached the answering gateway once");
	cr_assert_str_eq(b.keys[0], "sim-1-0-0", "client 0's update kept its key");
	cr_assert_str_eq(b.keys[1], "sim-1-0-1");
	cr_assert_eq(rb[R_MODEL].hits, 1, "the model came from the answering gateway");
	cr_assert_eq(b.unrouted, 0);
	cr_assert_not_null(strstr(out.stdout_text, "1 update went to another gateway"), "%s",
			   out.stdout_text);
	json_decref(out.report);
	trib_free(model);
	trib_free(rounds);
	trib_free(ack1);
	trib_free(ack0);
	trib_free(job);
}

/*
 * With one gateway, a server that stays away is given up on: the update
 * fails once the resends run out (every POST is dropped unanswered).
 */
Test(tools_sim_gateways, resends_are_bounded, .init = init_quiet, .timeout = 60)
{
	char *job = json_answer("200 OK", job_body);
	char *rounds = json_answer("404 Not Found", "{\"error\":\"single node\"}");
	struct gw_route ra[] = GW_ROUTES(job, rounds, 0, rounds, "");
	struct fake_gw a;
	struct sim_out out;
	char url[64];

	gw_start(&a, ra, 4);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", a.port);
	run_sim(url, &out);
	gw_stop(&a);

	cr_assert_eq(out.rc, 1, "%s", out.stdout_text);
	/*
	 * The first send goes on a connection opened before: tl_client_do sends it
	 * once more on a new one when that dies unanswered. Then 3 resends.
	 */
	cr_assert_eq(ra[R_POST].hits, 5, "two sends and 3 resends (SIM_RESEND_MAX), not %u",
		     ra[R_POST].hits);
	cr_assert_eq(a.nkeys, 5);
	for (unsigned i = 0; i < a.nkeys; i++)
		cr_assert_str_eq(a.keys[i], "sim-1-0-0", "POST %u", i);
	json_decref(out.report);
	trib_free(rounds);
	trib_free(job);
}

/*
 * The lone server dies while it holds client 0's update (the connection
 * drops unanswered, twice) and refuses connections for 0.5 s while it
 * restarts: simulate keeps sending the update, under the same key, until the
 * restarted server answers.
 */
Test(tools_sim_gateways, refused_while_restarting_is_resent, .init = init_quiet, .timeout = 60)
{
	char *job = json_answer("200 OK", job_body);
	char *ack0 = json_answer("202 Accepted", "{\"round\":0,\"received\":1}");
	char *ack1 = json_answer("202 Accepted", "{\"round\":0,\"received\":2}");
	char *rounds = json_answer("404 Not Found", "{\"error\":\"single node\"}");
	size_t model_len;
	char *model = model_answer(true, &model_len);
	struct gw_route ra[] = GW_ROUTES(job, model, model_len, rounds, "", "", ack0, ack1);
	struct fake_gw a;
	struct sim_out out;
	char url[64];

	gw_start(&a, ra, 4);
	atomic_store(&a.down_ms, 500);
	atomic_store(&a.restart_after, 2);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", a.port);
	run_sim(url, &out);
	gw_stop(&a);

	cr_assert_eq(out.rc, 0, "the update was resent after the restart:\n%s", out.stdout_text);
	cr_assert_eq(atomic_load(&a.restart_after), 0, "the gateway restarted");
	cr_assert_eq(ra[R_POST].hits, 4, "client 0's update three times, client 1's once, not %u",
		     ra[R_POST].hits);
	for (unsigned i = 0; i < 3; i++)
		cr_assert_str_eq(a.keys[i], "sim-1-0-0", "POST %u", i);
	cr_assert_str_eq(a.keys[3], "sim-1-0-1");
	json_decref(out.report);
	trib_free(model);
	trib_free(rounds);
	trib_free(ack1);
	trib_free(ack0);
	trib_free(job);
}
