// SPDX-License-Identifier: MIT
/* simulate's command line: the options, their defaults and limits, and the entry point. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tl_sim_int.h"
#include "tl_simulate.h"
#include "tl_tls.h"
#include "trib_name.h"
#include "trib_parse.h"

#define SIM_MAX_CLIENTS (1u << 24)
#define SIM_MAX_ROUNDS (1u << 24)
#define SIM_MAX_PARAMS (1ull << 30) /* 4 GiB bodies */
#define SIM_MAX_CONNECTIONS 1024u
#define SIM_MAX_TIMEOUT_S 3600u

const char tl_sim_usage[] =
	"usage: tributary simulate --job NAME --clients N --rounds R [--params P (1000000)]\n"
	"         [--url http(s)://HOST:PORT[,http(s)://HOST2:PORT2...] (http://127.0.0.1:8080)]\n"
	"         [--tls-ca FILE] [--tls-pin SHA256HEX]\n"
	"         [--timeout-s S (30)] [--connect-timeout-s S (5)]\n"
	"         [--data-dir DIR (./tributary-data)]\n"
	"         [--admin-token-file FILE] [--connections C (min(N, 16))] [--seed S (1)]\n"
	"         [--format raw|safetensors|mixed (mixed)] [--quiet] [--no-check]\n"
	"         [--dtype f32|f16|bf16|i8 (f32; others need --format safetensors)]\n"
	"         [--report-json FILE] [--client-tokens]\n"
	"  Several --url gateways (one per node of a cluster): client i sends to the\n"
	"  (i mod k)-th, and to the next one when that refuses the connection.\n"
	"  Every update carries Idempotency-Key: sim-SEED-ROUND-CLIENT; when its\n"
	"  connection breaks it is sent again with the same key. A gateway that does\n"
	"  not connect within --connect-timeout-s or answer within --timeout-s counts\n"
	"  as down: the update goes to the next one, under the same key (counted once).\n"
	"  https:// gateways: the certificate must verify against --tls-ca FILE (PEM;\n"
	"  default: the system's CA store) and name the host, or, with --tls-pin, have\n"
	"  exactly that SHA-256 fingerprint (as `up --tls self-signed` prints it).\n"
	"  --client-tokens: each client mints its own credential (POST /v1/jobs/J/clients,\n"
	"  id sim-SEED-CLIENT, with the admin token or the job's) and submits with it; a job\n"
	"  with client_auth \"required\" gets that without the option.\n"
	"  A job with \"selection\" (per_round K): N is the population; each client asks\n"
	"  GET /v1/jobs/J/task and sends only with a task; each round must close at K.\n";

/* ---- options ---- */

/*
 * Split @val, a comma-separated list of gateway URLs, into o->urls. Blanks
 * around an entry are ignored. Returns 0 or -EINVAL with the reason in @why.
 */
static int parse_urls(const char *val, struct tl_sim_opts *o, char *why, size_t why_len)
{
	const char *p = val;
	char host[256], *u;
	uint16_t port;
	size_t n;

	o->nurls = 0;
	for (;;) {
		p += strspn(p, " \t");
		n = strcspn(p, ",");
		while (n > 0 && strchr(" \t", p[n - 1]))
			n--;
		if (n == 0) {
			snprintf(why, why_len, "empty entry in --url '%s'", val);
			return -EINVAL;
		}
		if (o->nurls == TL_SIM_MAX_URLS) {
			snprintf(why, why_len, "--url lists more than %d gateways", TL_SIM_MAX_URLS);
			return -EINVAL;
		}
		if (n >= TL_SIM_URL_LEN) {
			snprintf(why, why_len, "URL '%.40s...' in --url is longer than %d bytes", p,
				 TL_SIM_URL_LEN - 1);
			return -EINVAL;
		}
		u = o->urls[o->nurls];
		memcpy(u, p, n);
		u[n] = '\0';
		if (tl_url_parse(u, host, sizeof(host), &port)) {
			snprintf(why, why_len, "bad URL '%s' in --url (want http(s)://HOST[:PORT])",
				 u);
			return -EINVAL;
		}
		o->nurls++;
		p += strcspn(p, ",");
		if (!*p)
			return 0;
		p++;
	}
}

/* Which options were given: three are required, --connections has a default that depends. */
struct sim_seen {
	bool clients;
	bool rounds;
	bool connections;
};

/* Option --@name is @nlen bytes long (it may go on with "=value"). */
#define IS(lit) (nlen == sizeof(lit) - 1 && !strncmp(name, lit, nlen))

/*
 * The options without a value. Returns 0 (taken), -ENOENT (not one of them),
 * -ECANCELED (--help) or -EINVAL with the reason in @why.
 */
static int set_flag(struct tl_sim_opts *o, const char *name, size_t nlen, const char *eq,
		    char *why, size_t why_len)
{
	if (IS("quiet")) {
		if (eq) {
			snprintf(why, why_len, "--quiet takes no value");
			return -EINVAL;
		}
		o->quiet = true;
		return 0;
	}
	if (IS("no-check")) {
		/* For jobs whose model is not the FedAvg mean (optimisers, robust rules). */
		o->no_check = true;
		return 0;
	}
	if (IS("client-tokens")) {
		/* One client credential per simulated client (always on client_auth required). */
		o->client_tokens = true;
		return 0;
	}
	if (IS("help")) {
		snprintf(why, why_len, "help");
		return -ECANCELED;
	}
	return -ENOENT;
}

/* The numeric options. Returns 0, -EINVAL (bad value) or -ENOENT (not one of them). */
static int set_number(struct tl_sim_opts *o, struct sim_seen *seen, const char *name,
		      size_t nlen, const char *val)
{
	if (IS("clients")) {
		if (trib_parse_u32(val, 1, SIM_MAX_CLIENTS, &o->clients))
			return -EINVAL;
		seen->clients = true;
	} else if (IS("rounds")) {
		if (trib_parse_u32(val, 1, SIM_MAX_ROUNDS, &o->rounds))
			return -EINVAL;
		seen->rounds = true;
	} else if (IS("params")) {
		if (trib_parse_u64(val, 1, SIM_MAX_PARAMS, &o->params))
			return -EINVAL;
	} else if (IS("connections")) {
		if (trib_parse_u32(val, 1, SIM_MAX_CONNECTIONS, &o->connections))
			return -EINVAL;
		seen->connections = true;
	} else if (IS("timeout-s")) {
		if (trib_parse_u32(val, 1, SIM_MAX_TIMEOUT_S, &o->timeout_s))
			return -EINVAL;
	} else if (IS("connect-timeout-s")) {
		if (trib_parse_u32(val, 1, SIM_MAX_TIMEOUT_S, &o->connect_timeout_s))
			return -EINVAL;
	} else if (IS("seed")) {
		if (trib_parse_u64(val, 0, UINT64_MAX, &o->seed))
			return -EINVAL;
	} else {
		return -ENOENT;
	}
	return 0;
}

/* --format's value into *f. Returns 0 or -EINVAL. */
static int parse_format(const char *val, enum tl_sim_format *f)
{
	if (!strcmp(val, "raw"))
		*f = TL_SIM_RAW;
	else if (!strcmp(val, "safetensors"))
		*f = TL_SIM_SAFETENSORS;
	else if (!strcmp(val, "mixed"))
		*f = TL_SIM_MIXED;
	else
		return -EINVAL;
	return 0;
}

/* --dtype's value into *d. Returns 0 or -EINVAL. */
static int parse_dtype(const char *val, enum tl_sim_dtype *d)
{
	static const char *const names[] = { "f32", "f16", "bf16", "i8" };

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(val, names[i])) {
			*d = (enum tl_sim_dtype)i;
			return 0;
		}
	return -EINVAL;
}

/* A non-empty string option into *out. Returns 0 or -EINVAL. */
static int set_string(const char *val, const char **out)
{
	if (!*val)
		return -EINVAL;
	*out = val;
	return 0;
}

/*
 * Option --@name (@nlen bytes) with the value @val (borrowed from argv):
 * store it in *o. Returns 0, -EINVAL with the reason in @why, or -ENOENT when
 * there is no such option.
 */
static int set_option(struct tl_sim_opts *o, struct sim_seen *seen, const char *name,
		      size_t nlen, const char *val, char *why, size_t why_len)
{
	int err = set_number(o, seen, name, nlen, val);

	if (err != -ENOENT)
		goto out;
	err = 0;
	if (IS("job")) {
		/* The server's rule: a name it would refuse fails here, before any request. */
		if (trib_job_name_valid(val))
			o->job = val;
		else
			err = -EINVAL;
	} else if (IS("url")) {
		if (parse_urls(val, o, why, why_len))
			return -EINVAL; /* @why names the entry */
		o->url = val;
	} else if (IS("data-dir")) {
		err = set_string(val, &o->data_dir);
	} else if (IS("admin-token-file")) {
		err = set_string(val, &o->admin_token_file);
	} else if (IS("report-json")) {
		err = set_string(val, &o->report_json);
	} else if (IS("format")) {
		err = parse_format(val, &o->format);
	} else if (IS("dtype")) {
		err = parse_dtype(val, &o->dtype);
	} else if (IS("tls-ca")) {
		err = set_string(val, &o->tls.ca_file);
	} else if (IS("tls-pin")) {
		uint8_t pin[TL_TLS_PIN_LEN];

		if (tl_tls_pin_parse(val, pin)) {
			snprintf(why, why_len, "bad --tls-pin '%s': want the certificate's "
				 "SHA-256, 64 hex digits", val);
			return -EINVAL;
		}
		o->tls.pin_sha256 = val;
	} else {
		return -ENOENT;
	}
out:
	if (err == -EINVAL)
		snprintf(why, why_len, "bad value '%s' for --%.*s", val, (int)nlen, name);
	return err;
}

#undef IS

/* --tls-* apply to https:// gateways: given with none, they are a mistake to say. */
static int check_tls(const struct tl_sim_opts *o, char *why, size_t why_len)
{
	if (!o->tls.ca_file && !o->tls.pin_sha256)
		return 0;
	for (uint32_t i = 0; i < o->nurls; i++)
		if (tl_url_is_https(o->urls[i]))
			return 0;
	snprintf(why, why_len, "--tls-ca and --tls-pin need an https:// gateway in --url");
	return -EINVAL;
}

static void set_defaults(struct tl_sim_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->params = 1000000;
	o->url = "http://127.0.0.1:8080";
	o->nurls = 1;
	snprintf(o->urls[0], sizeof(o->urls[0]), "%s", o->url);
	o->data_dir = "./tributary-data";
	o->seed = 1;
	o->format = TL_SIM_MIXED;
	o->timeout_s = 30;
	o->connect_timeout_s = 5;
}

int tl_sim_parse_args(int argc, char **argv, struct tl_sim_opts *o, char *why, size_t why_len)
{
	struct sim_seen seen = { false, false, false };
	int i, err;

	set_defaults(o);
	snprintf(why, why_len, "bad arguments");
	for (i = 1; i < argc; i++) {
		const char *arg = argv[i], *name, *val, *eq;
		size_t nlen;

		if (strncmp(arg, "--", 2) || !arg[2]) {
			snprintf(why, why_len, "unexpected argument '%s'", arg);
			return -EINVAL;
		}
		name = arg + 2;
		eq = strchr(name, '=');
		nlen = eq ? (size_t)(eq - name) : strlen(name);
		err = set_flag(o, name, nlen, eq, why, why_len);
		if (err != -ENOENT) {
			if (err)
				return err;
			continue;
		}
		if (eq) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			snprintf(why, why_len, "option '%s' needs a value", arg);
			return -EINVAL;
		}
		err = set_option(o, &seen, name, nlen, val, why, why_len);
		if (err == -ENOENT) {
			snprintf(why, why_len, "unknown option '--%.*s'", (int)nlen, name);
			return -EINVAL;
		}
		if (err)
			return err;
	}
	if (!o->job || !seen.clients || !seen.rounds) {
		snprintf(why, why_len, "--job, --clients and --rounds are required");
		return -EINVAL;
	}
	err = check_tls(o, why, why_len);
	if (err)
		return err;
	/* A raw body is F32 by the API; only a safetensors header can name another dtype. */
	if (o->dtype != TL_SIM_F32 && o->format != TL_SIM_SAFETENSORS) {
		snprintf(why, why_len, "--dtype %s needs --format safetensors (a raw body is F32)",
			 o->dtype == TL_SIM_F16 ? "f16" : o->dtype == TL_SIM_BF16 ? "bf16" : "i8");
		return -EINVAL;
	}
	if (!seen.connections)
		o->connections = 16;
	if (o->connections > o->clients)
		o->connections = o->clients;
	return 0;
}
