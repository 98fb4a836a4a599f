// SPDX-License-Identifier: MIT
/* The `tributary` command line: subcommand dispatch and the options of `up`. */
#include "rt_cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_cluster.h"
#include "ctl_store.h"
#include "rt_loop.h"
#include "rt_up.h"
#include "tl_simulate.h"
#include "tl_status.h"
#include "trib_log.h"
#include "trib_parse.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tributary <command> [options]\n"
		"\n"
		"commands:\n"
		"  up         controller, node runtime and HTTP gateway in one foreground process\n"
		"  node       a node runtime of a cluster: joins `tributary controller`\n"
		"  controller a cluster's jobs, rounds and placement; node runtimes join it\n"
		"  simulate   act as N clients for R rounds over HTTP and check the models\n"
		"  status     jobs, aggregation functions and their counters on a running node\n"
		"             (on a cluster's node: also the nodes and where recent rounds folded)\n"
		"  version    print the version\n"
		"  help       this text\n"
		"\n"
		"tributary up [--listen HOST:PORT] [--data-dir DIR] [--admin-token-file FILE]\n"
		"             [--arena-mb N] [--no-huge] [--arena-path FILE] [--fresh]\n"
		"             [--durability memory|disk] [--port-file FILE]\n"
		"             [--dataplane shm+bpf|shm+unix|tcp] [--warm-s N] [--fn-pool N]\n"
		"             [--fold-cores N] [--rx-threads N]\n"
		"             [--head-timeout-s N] [--body-timeout-s N] [--idle-timeout-s N]\n"
		"             [--max-connections N] [--metrics-jobs]\n"
		"             [--tls-cert FILE --tls-key FILE | --tls self-signed]\n"
		"             [--client-inflight N] [--job-inflight-pct N]\n"
		"  --listen HOST:PORT     address of the HTTP gateway (default 127.0.0.1:8080;\n"
		"                         port 0 picks a free one, see --port-file)\n"
		"  --data-dir DIR         jobs, models and state (default ./tributary-data)\n"
		"  --admin-token-file F   the admin token (default DIR/admin-token, made at first "
		"start)\n"
		"  --arena-mb N           size of the shared update arena in MiB (default 1024)\n"
		"  --no-huge              keep the arena file in /dev/shm on normal pages, not on\n"
		"                         2 MiB huge pages (it still outlives a crash)\n"
		"  --arena-path FILE      the arena file (default /dev/hugepages/tributary-HASH.arena,\n"
		"                         HASH from the data dir; /dev/shm when there are no huge\n"
		"                         pages); it keeps acknowledged updates of open rounds\n"
		"                         across a crash or a stop\n"
		"  --fresh                start with an empty arena: updates an old arena file kept\n"
		"                         are dropped (the file is removed, logged; so is the\n"
		"                         log of --durability disk)\n"
		"  --durability MODE      memory (default): a 202 survives a crash or a stop of\n"
		"                         the process, not a reboot; disk: each update is also\n"
		"                         written to DIR/wal and fdatasync'ed (one per batch that\n"
		"                         arrives together) before its 202, and replayed at start\n"
		"                         when the arena file is gone; the log of a round goes\n"
		"                         once its model is stored (on a node: the cluster's)\n"
		"  --port-file FILE       write the bound port to FILE once listening\n"
		"  --dataplane MODE       shm+bpf (default where eBPF loads; else shm+unix, logged),\n"
		"                         shm+unix, or tcp (a copying baseline to measure against)\n"
		"  --warm-s N             an idle aggregation function waits N s for reuse, then\n"
		"                         exits (default 30; 0: exit at once)\n"
		"  --head-timeout-s N     a request head must be complete N s after it starts (after\n"
		"                         the accept, for the first) or the connection closes\n"
		"                         (default 10; 0: no limit)\n"
		"  --body-timeout-s N     a body (or a response) that moves no byte for N s closes\n"
		"                         its connection and frees its slot (default 15; 0: none)\n"
		"  --idle-timeout-s N     a keep-alive connection idle N s between requests closes\n"
		"                         (default 60; 0: never; a parked long poll is not idle)\n"
		"  --max-connections N    more open connections are answered 503 and closed\n"
		"                         (default 80%% of the open-file limit, at most 65536)\n");
	fprintf(f,
		"  --client-inflight N    update bodies one client token may have in flight; more\n"
		"                         get 503 (default 2; 0: no cap)\n"
		"  --job-inflight-pct N   update body bytes one job may have in flight, in %% of\n"
		"                         the arena; more get 503 (default 75; 0: no cap)\n"
		"  --metrics-jobs         /metrics names jobs to anyone (default: only with the\n"
		"                         admin token; else a job is its number, job_id=\"N\")\n");
	fprintf(f,
		"  --fn-pool N            keep N idle aggregation functions started, even past\n"
		"                         --warm-s, so that a round's first functions (its leaves\n"
		"                         and top) need no process start (default 0)\n"
		"  --fold-cores N         cores the autoscaler counts: it keeps at most N - 1\n"
		"                         leaves folding, one core being the gateway's\n"
		"                         (default 0: the cores online)\n"
		"  --rx-threads N         threads that receive (and decrypt, and check) large\n"
		"                         bodies beside the gateway's loop while it has several\n"
		"                         (default: half the cores online, at most 4, none below 4 cores)\n"
		"  --tls-cert FILE        serve HTTPS (TLS 1.3 and 1.2) with this PEM certificate\n"
		"  --tls-key FILE         (chain) and its PEM private key\n"
		"  --tls self-signed      serve HTTPS with DIR/tls-cert.pem and DIR/tls-key.pem, made\n"
		"                         at the first start (EC P-256, one year); the log says its\n"
		"                         SHA-256 fingerprint at every start\n"
		"\n");
	/* Two strings: C11 promises literals of 4095 characters, not more. */
	fprintf(f,
		"tributary node --controller tls+tcp://HOST:PORT --node-name NAME\n"
		"               [--join-token TOKEN | --join-token-file F] [--cluster-ca FILE]\n"
		"               [--peer-listen tls+tcp://HOST:PORT] [--advertise tls+tcp://HOST:PORT]\n"
		"               [--controller-grace-s N] [all options of up]\n"
		"  --controller URL       the controller's nng address (mutual TLS)\n"
		"  --join-token TOKEN     enrol once (DATA_DIR/cluster gets node.key, node.crt)\n"
		"  --join-token-file F    the token in a file (not there: no token)\n"
		"  --cluster-ca FILE      the cluster CA's certificate (else pinned by the token)\n"
		"  --node-name NAME       unique in the cluster (Kubernetes: the node's name)\n"
		"  --peer-listen URL      where other nodes and the controller reach this one\n"
		"                         (default tls+tcp://0.0.0.0:7071)\n"
		"  --advertise URL        the address to give them, when --peer-listen's host is\n"
		"                         0.0.0.0 (for example tls+tcp://POD_IP:7071)\n"
		"  --controller-grace-s N while the controller is away, take updates of the round\n"
		"                         this node knows open for N s (default 60; 0: none), then\n"
		"                         answer 503 until it is back\n"
		"\n"
		"tributary controller [--listen tls+tcp://HOST:PORT] [--data-dir DIR]\n"
		"                     [--admin-token-file FILE] [--placement locality|round-robin]\n"
		"                     [--heartbeat-ms N] [--dead-after-ms N]\n"
		"  --listen URL           nng address for nodes (default tls+tcp://0.0.0.0:7070)\n"
		"  --data-dir DIR         jobs, rounds (SQLite) and models (default\n"
		"                         ./tributary-controller)\n"
		"  --placement P          locality (default): updates fold on the node that received\n"
		"                         them; round-robin: leaf k on node k mod N (a baseline)\n"
		"  --dead-after-ms N      a node silent this long is drained (default 1500)\n"
		"tributary controller join-token [--ttl 1h] [--data-dir DIR]   a one-time token\n"
		"tributary controller revoke NODE [--data-dir DIR]   end a node's membership\n"
		"\n"
		"tributary simulate --job NAME --clients N --rounds R [--params P] [--url URL] ...\n"
		"  (tributary simulate --help for all its options)\n");
}

static int parse_listen(const char *s, struct rt_node_opts *o, char *host, size_t cap)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;

	if (!colon || (size_t)(colon - s) >= cap || trib_parse_u64(colon + 1, 0, 65535, &port))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (!host[0])
		strcpy(host, "0.0.0.0");
	else if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	o->listen_host = host;
	o->listen_port = (uint16_t)port;
	return 0;
}

/* Options without a letter of their own (getopt values past any character). */
enum {
	OPT_HEAD_TIMEOUT = 0x100,
	OPT_BODY_TIMEOUT,
	OPT_IDLE_TIMEOUT,
	OPT_MAX_CONNS,
	OPT_CLIENT_INFLIGHT, /* the admission options first: admission_opt() indexes by them */
	OPT_JOB_INFLIGHT,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS,
	OPT_DURABILITY,
	OPT_FOLD_CORES,
	OPT_RX_THREADS,
};

/* The gateway's admission options (OPT_*); 0, or 2 (usage error, said). */
static int admission_opt(int c, const char *arg, struct rt_node_opts *o)
{
	static const char *const names[] = { "head-timeout-s", "body-timeout-s",
					     "idle-timeout-s", "max-connections",
					     "client-inflight", "job-inflight-pct" };
	uint32_t *dst[] = { &o->head_timeout_s, &o->body_timeout_s, &o->idle_timeout_s,
			    &o->max_connections, &o->client_inflight, &o->job_inflight_pct };
	static const uint64_t maxs[] = { 86400, 86400, 86400, 1u << 24, 1024, 100 };
	_Static_assert(OPT_JOB_INFLIGHT - OPT_HEAD_TIMEOUT + 1 == 6, "names, dst, maxs by OPT_*");
	uint64_t max = maxs[c - OPT_HEAD_TIMEOUT];
	uint64_t v;

	if (trib_parse_u64(arg, 0, max, &v)) {
		fprintf(stderr, "tributary up: --%s wants 0..%llu, got '%s'\n",
			names[c - OPT_HEAD_TIMEOUT], (unsigned long long)max, arg);
		return 2;
	}
	*dst[c - OPT_HEAD_TIMEOUT] = (uint32_t)v;
	return 0;
}

/* --tls-cert, --tls-key, --tls: 0, or 2 (usage error, said). */
static int tls_opt(int c, const char *arg, const char *cmd, struct rt_up_tls *t)
{
	if (c == OPT_TLS_CERT) {
		t->cert_file = arg;
	} else if (c == OPT_TLS_KEY) {
		t->key_file = arg;
	} else if (!strcmp(arg, "self-signed")) {
		t->self_signed = true;
	} else {
		fprintf(stderr, "tributary %s: --tls wants self-signed (or use --tls-cert and "
			"--tls-key), got '%s'\n", cmd, arg);
		return 2;
	}
	return 0;
}

/* The TLS options together: 0, or 2 (said). */
static int tls_check(const struct rt_up_tls *t, const char *cmd)
{
	if (t->self_signed && (t->cert_file || t->key_file)) {
		fprintf(stderr, "tributary %s: --tls self-signed and --tls-cert/--tls-key exclude "
			"each other\n", cmd);
		return 2;
	}
	if (!t->cert_file != !t->key_file) {
		fprintf(stderr, "tributary %s: --tls-cert and --tls-key go together\n", cmd);
		return 2;
	}
	return 0;
}

/* `up` and `node` share their options; `node` adds the cluster's. */
static const struct option up_lopts[] = {
	{ "listen", required_argument, NULL, 'l' },
	{ "data-dir", required_argument, NULL, 'd' },
	{ "admin-token-file", required_argument, NULL, 'a' },
	{ "arena-mb", required_argument, NULL, 'm' },
	{ "no-huge", no_argument, NULL, 'H' },
	{ "arena-path", required_argument, NULL, 'R' },
	{ "fresh", no_argument, NULL, 'F' },
	{ "durability", required_argument, NULL, OPT_DURABILITY },
	{ "metrics-jobs", no_argument, NULL, 'J' },
	{ "port-file", required_argument, NULL, 'p' },
	{ "dataplane", required_argument, NULL, 'D' },
	{ "warm-s", required_argument, NULL, 'w' },
	{ "fn-pool", required_argument, NULL, 'Q' },
	{ "fold-cores", required_argument, NULL, OPT_FOLD_CORES },
	{ "rx-threads", required_argument, NULL, OPT_RX_THREADS },
	{ "head-timeout-s", required_argument, NULL, OPT_HEAD_TIMEOUT },
	{ "body-timeout-s", required_argument, NULL, OPT_BODY_TIMEOUT },
	{ "idle-timeout-s", required_argument, NULL, OPT_IDLE_TIMEOUT },
	{ "max-connections", required_argument, NULL, OPT_MAX_CONNS },
	{ "tls-cert", required_argument, NULL, OPT_TLS_CERT },
	{ "tls-key", required_argument, NULL, OPT_TLS_KEY },
	{ "tls", required_argument, NULL, OPT_TLS },
	{ "client-inflight", required_argument, NULL, OPT_CLIENT_INFLIGHT },
	{ "job-inflight-pct", required_argument, NULL, OPT_JOB_INFLIGHT },
	{ "controller", required_argument, NULL, 'C' },
	{ "node-name", required_argument, NULL, 'N' },
	{ "peer-listen", required_argument, NULL, 'P' },
	{ "advertise", required_argument, NULL, 'A' },
	{ "controller-grace-s", required_argument, NULL, 'G' },
	{ "join-token", required_argument, NULL, 'j' },
	{ "join-token-file", required_argument, NULL, 'k' },
	{ "cluster-ca", required_argument, NULL, 'K' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* The cluster's options of `node` (-C -N -P -A); 0, or 2 (usage error, said). */
static int node_opt(int c, const char *arg, struct rt_node_opts *o)
{
	uint64_t v;

	if (c == 'G') {
		if (trib_parse_u64(arg, 0, 86400, &v)) {
			fprintf(stderr, "tributary node: --controller-grace-s wants 0..86400 seconds, "
				"got '%s'\n", arg);
			return 2;
		}
		o->controller_grace_s = (uint32_t)v;
		return 0;
	}
	if (c == 'N') {
		if (!trib_job_name_valid(arg)) {
			fprintf(stderr, "tributary node: --node-name wants 1-63 characters of "
				"A-Z a-z 0-9 . _ -, got '%s'\n", arg);
			return 2;
		}
		o->node_name = arg;
		return 0;
	}
	if (c == 'j') {
		o->join_token = arg;
		return 0;
	}
	if (c == 'k') {
		o->join_token_file = arg;
		return 0;
	}
	if (c == 'K') {
		o->cluster_ca = arg;
		return 0;
	}
	/* Every cluster link is mutual TLS: a plain tcp:// URL is refused, not upgraded. */
	if (strncmp(arg, "tls+tcp://", 10) || !strrchr(arg + 10, ':')) {
		fprintf(stderr, "tributary node: --%s wants tls+tcp://HOST:PORT (every cluster link "
			"is mutual TLS), got '%s'\n",
			c == 'C' ? "controller" : c == 'P' ? "peer-listen" : "advertise", arg);
		return 2;
	}
	if (c == 'C')
		o->controller = arg;
	else if (c == 'P')
		o->peer_listen = arg;
	else
		o->advertise = arg;
	return 0;
}

/* One option of `up` or `node` (not -h): 0, or 2 (usage error, said). */
static int up_opt(int c, const char *arg, bool node, struct rt_node_opts *o, char *host,
		  size_t cap)
{
	uint64_t v;

	switch (c) {
	case 'C':
	case 'N':
	case 'P':
	case 'A':
	case 'G':
	case 'j':
	case 'k':
	case 'K':
		return node_opt(c, arg, o);
	case OPT_HEAD_TIMEOUT:
	case OPT_BODY_TIMEOUT:
	case OPT_IDLE_TIMEOUT:
	case OPT_MAX_CONNS:
	case OPT_CLIENT_INFLIGHT:
	case OPT_JOB_INFLIGHT:
		return admission_opt(c, arg, o);
	case 'l':
		if (!parse_listen(arg, o, host, cap))
			return 0;
		fprintf(stderr, "tributary up: --listen wants HOST:PORT, got '%s'\n", arg);
		return 2;
	case 'd':
		o->data_dir = arg;
		return 0;
	case 'a':
		if (!node) {
			o->admin_token_file = arg;
			return 0;
		}
		fprintf(stderr, "tributary node: no --admin-token-file: a node checks admin "
			"requests against the SHA-256 the controller gives it at join\n");
		return 2;
	case 'm':
		if (trib_parse_u64(arg, 16, 1u << 20, &v)) {
			fprintf(stderr, "tributary up: --arena-mb wants 16..1048576, got '%s'\n", arg);
			return 2;
		}
		o->arena_bytes = v << 20;
		return 0;
	case 'J':
		o->metrics_jobs = true;
		return 0;
	case 'H':
		o->no_huge = true;
		return 0;
	case 'R':
		o->arena_path = arg;
		return 0;
	case 'F':
		o->fresh = true;
		return 0;
	case OPT_DURABILITY:
		if (!strcmp(arg, "memory") || !strcmp(arg, "disk")) {
			o->durability_disk = arg[0] == 'd';
			return 0;
		}
		fprintf(stderr, "tributary %s: --durability wants memory or disk, got '%s'\n",
			node ? "node" : "up", arg);
		return 2;
	case 'p':
		o->port_file = arg;
		return 0;
	case 'w':
		if (trib_parse_u64(arg, 0, 86400, &v)) {
			fprintf(stderr, "tributary up: --warm-s wants 0..86400 seconds, got '%s'\n",
				arg);
			return 2;
		}
		o->warm_s = (uint32_t)v;
		return 0;
	case 'Q':
		if (trib_parse_u64(arg, 0, 256, &v)) {
			fprintf(stderr, "tributary up: --fn-pool wants 0..256 functions, got '%s'\n",
				arg);
			return 2;
		}
		o->fn_pool = (uint32_t)v;
		return 0;
	case OPT_FOLD_CORES:
		if (trib_parse_u64(arg, 0, 4096, &v)) {
			fprintf(stderr, "tributary up: --fold-cores wants 0..4096 cores, got '%s'\n",
				arg);
			return 2;
		}
		o->fold_cores = (uint32_t)v;
		return 0;
	case OPT_RX_THREADS:
		if (trib_parse_u64(arg, 0, RT_RX_THREADS_MAX, &v)) {
			fprintf(stderr, "tributary up: --rx-threads wants 0..%d threads, got '%s'\n",
				RT_RX_THREADS_MAX, arg);
			return 2;
		}
		o->rx_threads = (uint32_t)v;
		return 0;
	case 'D':
		o->dataplane = rt_dataplane_from_name(arg);
		if (o->dataplane)
			return 0;
		fprintf(stderr, "tributary up: --dataplane wants shm+bpf, shm+unix or tcp, got "
			"'%s'\n", arg);
		return 2;
	default:
		usage(stderr);
		return 2;
	}
}

static int cmd_up(int argc, char **argv, bool node)
{
	struct rt_node_opts o = {
		.listen_host = "127.0.0.1",
		.listen_port = 8080,
		.data_dir = "./tributary-data",
		.arena_bytes = 1024ull << 20,
		.warm_s = 30,
		.controller_grace_s = 60,
		.head_timeout_s = RT_HEAD_TIMEOUT_S,
		.body_timeout_s = RT_BODY_TIMEOUT_S,
		.idle_timeout_s = RT_IDLE_TIMEOUT_S,
		.client_inflight = 2,
		.job_inflight_pct = 75,
		.rx_threads = rt_rx_threads_default(sysconf(_SC_NPROCESSORS_ONLN)),
	};
	const char *cmd = node ? "node" : "up";
	struct rt_up_tls tls = { 0 };
	char host[256];
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", up_lopts, NULL)) != -1) {
		if (!node && (c == 'C' || c == 'N' || c == 'P' || c == 'A' || c == 'G' || c == 'j' ||
			      c == 'k' || c == 'K')) {
			/* Named from the table: argv[optind - 1] is the value when it came apart. */
			for (const struct option *lo = up_lopts; lo->name; lo++)
				if (lo->val == c)
					fprintf(stderr, "tributary up: --%s is an option of `tributary "
						"node`\n", lo->name);
			return 2;
		}
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		if (c == OPT_TLS_CERT || c == OPT_TLS_KEY || c == OPT_TLS)
			rc = tls_opt(c, optarg, cmd, &tls);
		else
			rc = up_opt(c, optarg, node, &o, host, sizeof(host));
		if (rc)
			return rc;
	}
	if (optind < argc) {
		fprintf(stderr, "tributary %s: unexpected argument '%s'\n", cmd, argv[optind]);
		return 2;
	}
	if (node && (!o.controller || !o.node_name)) {
		fprintf(stderr, "tributary node: --controller tls+tcp://HOST:PORT and --node-name NAME "
			"are required\n");
		return 2;
	}
	rc = tls_check(&tls, cmd);
	return rc ? rc : rt_up_run(&o, &tls);
}

static const struct option ctl_lopts[] = {
	{ "listen", required_argument, NULL, 'l' },
	{ "data-dir", required_argument, NULL, 'd' },
	{ "admin-token-file", required_argument, NULL, 'a' },
	{ "placement", required_argument, NULL, 'p' },
	{ "heartbeat-ms", required_argument, NULL, 'b' },
	{ "dead-after-ms", required_argument, NULL, 'x' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* One option of `controller` (not -h): 0, or 2 (usage error, said). */
static int ctl_opt(int c, const char *arg, struct ctl_cluster_opts *o)
{
	uint64_t v;

	switch (c) {
	case 'l':
		if (strncmp(arg, "tls+tcp://", 10) || !strrchr(arg + 10, ':')) {
			fprintf(stderr, "tributary controller: --listen wants tls+tcp://HOST:PORT (every "
				"cluster link is mutual TLS), got '%s'\n", arg);
			return 2;
		}
		o->listen = arg;
		return 0;
	case 'd':
		o->data_dir = arg;
		return 0;
	case 'a':
		o->admin_token_file = arg;
		return 0;
	case 'p':
		if (strcmp(arg, "locality") && strcmp(arg, "round-robin")) {
			fprintf(stderr, "tributary controller: --placement wants locality or "
				"round-robin, got '%s'\n", arg);
			return 2;
		}
		o->round_robin = !strcmp(arg, "round-robin");
		return 0;
	case 'b':
	case 'x':
		/* Node runtimes act on a 200 ms tick: a shorter heartbeat is not kept. */
		if (trib_parse_u64(arg, 200, 600000, &v)) {
			fprintf(stderr, "tributary controller: --%s wants 200..600000 ms, got '%s'\n",
				c == 'b' ? "heartbeat-ms" : "dead-after-ms", arg);
			return 2;
		}
		if (c == 'b')
			o->heartbeat_ms = (uint32_t)v;
		else
			o->dead_after_ms = (uint32_t)v;
		return 0;
	default:
		usage(stderr);
		return 2;
	}
}

/* `tributary controller join-token [--ttl DUR] [--data-dir D]`, `... revoke NODE [--data-dir D]`. */
static int cmd_controller_admin(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "data-dir", required_argument, NULL, 'd' },
		{ "ttl", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = "./tributary-controller", *sub = argv[1];
	bool tok = !strcmp(sub, "join-token");
	uint64_t ttl = 3600, v, mul;
	int c;

	optind = 2;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'd') {
			dir = optarg;
		} else if (c == 't' && tok) {
			/* 90, 90s, 30m, 1h, 7d */
			size_t n = strlen(optarg);
			char unit = n ? optarg[n - 1] : 0;
			char num[32];

			mul = unit == 'm' ? 60 : unit == 'h' ? 3600 : unit == 'd' ? 86400 : 1;
			snprintf(num, sizeof(num), "%.*s", (int)(n - (unit >= 'a' && unit <= 'z')),
				 optarg);
			if ((unit >= 'a' && unit <= 'z' && !strchr("smhd", unit)) ||
			    trib_parse_u64(num, 1, 30 * 86400, &v) || v * mul > 30 * 86400) {
				fprintf(stderr, "tributary controller join-token: --ttl wants a "
					"duration of 1s..30d (90, 90s, 30m, 1h, 7d), got '%s'\n",
					optarg);
				return 2;
			}
			ttl = v * mul;
		} else {
			fprintf(stderr, "usage: tributary controller join-token [--ttl 1h] "
				"[--data-dir DIR]\n       tributary controller revoke NODE "
				"[--data-dir DIR]\n");
			return 2;
		}
	}
	trib_log_init("controller");
	if (tok) {
		if (optind < argc) {
			fprintf(stderr, "tributary controller join-token: unexpected argument '%s'\n",
				argv[optind]);
			return 2;
		}
		return ctl_join_token_cmd(dir, (uint32_t)ttl);
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: tributary controller revoke NODE [--data-dir DIR]\n");
		return 2;
	}
	return ctl_revoke_cmd(dir, argv[optind]);
}

static int cmd_controller(int argc, char **argv)
{
	struct ctl_cluster_opts o = {
		.listen = "tls+tcp://0.0.0.0:7070",
		.data_dir = "./tributary-controller",
		.heartbeat_ms = 200,
		.dead_after_ms = 1500,
	};
	int c, rc;

	if (argc > 1 && (!strcmp(argv[1], "join-token") || !strcmp(argv[1], "revoke")))
		return cmd_controller_admin(argc, argv);
	optind = 1;
	while ((c = getopt_long(argc, argv, "", ctl_lopts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		rc = ctl_opt(c, optarg, &o);
		if (rc)
			return rc;
	}
	if (optind < argc) {
		fprintf(stderr, "tributary controller: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (o.dead_after_ms < 3 * o.heartbeat_ms) {
		fprintf(stderr, "tributary controller: --dead-after-ms must be at least 3 heartbeats "
			"(%u ms)\n", 3 * o.heartbeat_ms);
		return 2;
	}
	trib_log_init("controller");
	return ctl_cluster_run(&o);
}

int rt_cli_main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "up"))
		return cmd_up(argc - 1, argv + 1, false);
	if (!strcmp(argv[1], "node"))
		return cmd_up(argc - 1, argv + 1, true);
	if (!strcmp(argv[1], "controller"))
		return cmd_controller(argc - 1, argv + 1);
	if (!strcmp(argv[1], "simulate"))
		return tl_sim_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "status"))
		return tl_status_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("tributary %s\n", TRIBUTARY_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "tributary: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return 2;
}
