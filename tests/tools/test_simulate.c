// SPDX-License-Identifier: MIT
/* Tests of simulate and its HTTP client: options, update stream, reference, a canned server. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tl_client.h"
#include "trib_safetensors.h"
#include "tl_simulate.h"
#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_name.h"

/* ---- options ---- */

static int parse(struct tl_sim_opts *o, char **argv)
{
	char why[256];
	int argc = 0;

	while (argv[argc])
		argc++;
	return tl_sim_parse_args(argc, argv, o, why, sizeof(why));
}

#define ARGV(...) ((char *[]){ "simulate", __VA_ARGS__, NULL })

Test(tools_simulate, options_defaults)
{
	struct tl_sim_opts o;

	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "40", "--rounds", "3")), 0);
	cr_assert_str_eq(o.job, "a");
	cr_assert_eq(o.clients, 40);
	cr_assert_eq(o.rounds, 3);
	cr_assert_eq(o.params, 1000000);
	cr_assert_str_eq(o.url, "http://127.0.0.1:8080");
	cr_assert_str_eq(o.data_dir, "./tributary-data");
	cr_assert_null(o.admin_token_file);
	cr_assert_eq(o.connections, 16);
	cr_assert_eq(o.seed, 1);
	cr_assert_eq(o.format, TL_SIM_MIXED);
	cr_assert(!o.quiet);
}

Test(tools_simulate, options_all_forms)
{
	struct tl_sim_opts o;

	cr_assert_eq(parse(&o, ARGV("--job=b-1.x", "--clients=4", "--rounds", "1", "--params=7",
				    "--url", "http://localhost:9000", "--data-dir", "/tmp/d",
				    "--admin-token-file", "/tmp/t", "--connections", "8",
				    "--seed", "0", "--format", "safetensors", "--quiet")),
		     0);
	cr_assert_eq(o.params, 7);
	cr_assert_eq(o.connections, 4, "connections are clamped to the clients");
	cr_assert_eq(o.seed, 0);
	cr_assert_eq(o.format, TL_SIM_SAFETENSORS);
	cr_assert(o.quiet);
	cr_assert_str_eq(o.admin_token_file, "/tmp/t");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "3", "--rounds", "1")), 0);
	cr_assert_eq(o.connections, 3);
}

Test(tools_simulate, options_errors)
{
	struct tl_sim_opts o;

	cr_assert_eq(parse(&o, ARGV("--clients", "4", "--rounds", "1")), -EINVAL, "no job");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--rounds", "1")), -EINVAL, "no clients");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4")), -EINVAL, "no rounds");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "0", "--rounds", "1")), -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "-3", "--rounds", "1")), -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4x", "--rounds", "1")), -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a/b", "--clients", "4", "--rounds", "1")), -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--params",
				    "0")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--format",
				    "json")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--url",
				    "https://x:1")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--url",
				    "http://x:99999")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--bogus",
				    "1")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds")), -EINVAL,
		     "missing value");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "extra")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--quiet=1")),
		     -EINVAL);
}

/*
 * --job follows the server's rule (POST /v1/jobs checks trib_job_name_valid):
 * a name the server would refuse fails here, and one it takes passes. Before,
 * simulate took names of up to 128 chars starting with '.' or '-'.
 */
Test(tools_simulate, job_name_is_the_servers_rule)
{
	static const char *const names[] = {
		"a", "b-1.x", "job_2", "A.B-c_d", "9", "x.",
		"", ".hidden", "-flag", "a/b", "a b", "é", "..", "a\\b",
		/* 63 chars: the longest the server takes */
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk",
		/* 64 chars: one too many */
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl",
		/* 128 chars: the old limit */
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl"
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl",
	};
	struct tl_sim_opts o;
	size_t accepted = 0, refused = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		bool server = trib_job_name_valid(names[i]);
		int err = parse(&o, ARGV("--job", (char *)names[i], "--clients", "4", "--rounds",
					 "1"));

		cr_assert_eq(err, server ? 0 : -EINVAL, "'%s': simulate %d, server %s", names[i],
			     err, server ? "accepts" : "refuses");
		if (server)
			cr_assert_str_eq(o.job, names[i]);
		accepted += server;
		refused += !server;
	}
	/* Both sides of the rule are exercised, including the cases the old rule let through. */
	cr_assert_geq(accepted, 7);
	cr_assert_geq(refused, 10);
	cr_assert_eq(parse(&o, ARGV("--job", ".hidden", "--clients", "4", "--rounds", "1")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "-flag", "--clients", "4", "--rounds", "1")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", (char *)names[15], "--clients", "4", "--rounds",
				    "1")),
		     -EINVAL, "64 chars");
	cr_assert_eq(parse(&o, ARGV("--job", (char *)names[14], "--clients", "4", "--rounds",
				    "1")),
		     0, "63 chars");
}

/* Like parse(), keeping the reason. */
static int parse_why(struct tl_sim_opts *o, char **argv, char *why, size_t len)
{
	int argc = 0;

	while (argv[argc])
		argc++;
	return tl_sim_parse_args(argc, argv, o, why, len);
}

Test(tools_simulate, options_url_list)
{
	struct tl_sim_opts o;

	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1")), 0);
	cr_assert_eq(o.nurls, 1, "the default is one gateway");
	cr_assert_str_eq(o.urls[0], "http://127.0.0.1:8080");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--url",
				    "http://10.0.0.1:8080")),
		     0);
	cr_assert_eq(o.nurls, 1);
	cr_assert_str_eq(o.urls[0], "http://10.0.0.1:8080");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1",
				    "--url=http://10.0.0.1:8080,http://10.0.0.2:8080/, "
				    "http://[::1]:9,http://h")),
		     0);
	cr_assert_eq(o.nurls, 4);
	cr_assert_str_eq(o.urls[0], "http://10.0.0.1:8080");
	cr_assert_str_eq(o.urls[1], "http://10.0.0.2:8080/");
	cr_assert_str_eq(o.urls[2], "http://[::1]:9", "blanks around an entry are dropped");
	cr_assert_str_eq(o.urls[3], "http://h");
	cr_assert_str_eq(o.url, "http://10.0.0.1:8080,http://10.0.0.2:8080/, http://[::1]:9,"
				"http://h", "--url keeps the argument as given");
	/* The same gateway listed three times is three gateways (one node). */
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--url",
				    "http://x:1,http://x:1,http://x:1")),
		     0);
	cr_assert_eq(o.nurls, 3);
	cr_assert_str_eq(o.urls[2], "http://x:1");
}

Test(tools_simulate, options_url_list_errors_name_the_entry)
{
	static const char *const bad[][2] = {
		{ "http://a:1,https://b:2", "'https://b:2'" },
		{ "http://a:1,http://b:99999", "'http://b:99999'" },
		{ "http://a:0,http://b:2", "'http://a:0'" },
		{ "http://a:1,,http://b:2", "empty entry" },
		{ "http://a:1,", "empty entry" },
		{ ",http://a:1", "empty entry" },
		{ " ", "empty entry" },
		{ "http://a:1,b:2", "'b:2'" },
	};
	struct tl_sim_opts o;
	char why[256], many[80 * 12];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(parse_why(&o,
				       ARGV("--job", "a", "--clients", "4", "--rounds", "1",
					    "--url", (char *)bad[i][0]),
				       why, sizeof(why)),
			     -EINVAL, "%s", bad[i][0]);
		cr_assert_not_null(strstr(why, bad[i][1]), "'%s': %s", bad[i][0], why);
	}
	for (int i = 0; i <= TL_SIM_MAX_URLS; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "%shttp://h:%d", i ? "," : "",
				      1000 + i);
	cr_assert(n < sizeof(many));
	cr_assert_eq(parse_why(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--url",
					many),
			       why, sizeof(why)),
		     -EINVAL, "more than TL_SIM_MAX_URLS gateways");
	many[n - strlen(",http://h:1064")] = '\0';
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--url",
				    many)),
		     0, "TL_SIM_MAX_URLS gateways fit");
	cr_assert_eq(o.nurls, TL_SIM_MAX_URLS);
	memset(many, 'x', TL_SIM_URL_LEN + 8);
	memcpy(many, "http://", 7);
	many[TL_SIM_URL_LEN + 8] = '\0';
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--url",
				    many)),
		     -EINVAL, "an entry longer than TL_SIM_URL_LEN");
}

Test(tools_simulate, options_report_json)
{
	struct tl_sim_opts o;

	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1")), 0);
	cr_assert_null(o.report_json);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1",
				    "--report-json", "/tmp/r.json")),
		     0);
	cr_assert_str_eq(o.report_json, "/tmp/r.json");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1",
				    "--report-json=")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1",
				    "--report-json")),
		     -EINVAL, "missing value");
}

Test(tools_simulate, main_usage_exit_code, .init = cr_redirect_stderr)
{
	cr_assert_eq(tl_sim_main(3, ARGV("--job", "a")), 2);
	cr_assert_eq(tl_sim_main(2, ARGV("--nope")), 2);
}

/* ---- update stream ---- */

Test(tools_simulate, prng_is_deterministic_and_in_range)
{
	enum { N = 4096 };
	float *a = trib_malloc(N * sizeof(float)), *b = trib_malloc(N * sizeof(float));
	uint64_t k = tl_sim_key(1, 0, 0);
	double sum = 0;

	cr_assert_eq(k, tl_sim_key(1, 0, 0));
	cr_assert_neq(k, tl_sim_key(2, 0, 0));
	cr_assert_neq(k, tl_sim_key(1, 1, 0));
	cr_assert_neq(k, tl_sim_key(1, 0, 1));
	cr_assert_neq(tl_sim_key(1, 1, 0), tl_sim_key(1, 0, 1));
	tl_sim_fill(k, 0, a, N);
	tl_sim_fill(k, 0, b, N);
	cr_assert_eq(memcmp(a, b, N * sizeof(float)), 0);
	/* Any slice of the stream equals the same part of the whole. */
	tl_sim_fill(k, 1000, b, 96);
	cr_assert_eq(memcmp(a + 1000, b, 96 * sizeof(float)), 0);
	for (int i = 0; i < N; i++) {
		cr_assert(a[i] >= -1.0f && a[i] < 1.0f);
		sum += a[i];
	}
	cr_assert(fabs(sum / N) < 0.05, "mean %f", sum / N);
	tl_sim_fill(tl_sim_key(1, 0, 1), 0, b, N);
	cr_assert_neq(memcmp(a, b, N * sizeof(float)), 0);
	for (uint32_t c = 0; c < 1000; c++) {
		uint32_t n = tl_sim_samples(tl_sim_key(7, 3, c));

		cr_assert(n >= 1 && n <= 100);
	}
	cr_assert_eq(tl_sim_samples(k), tl_sim_samples(tl_sim_key(1, 0, 0)));
	trib_free(a);
	trib_free(b);
}

/* ---- reference and comparison ---- */

Test(tools_simulate, reference_is_weighted_mean)
{
	enum { C = 3, P = 5 };
	double ref[P], want[P] = { 0 }, total = 0;
	float x[P];

	for (uint32_t c = 0; c < C; c++) {
		uint64_t k = tl_sim_key(9, 4, c);
		double n = tl_sim_samples(k);

		tl_sim_fill(k, 0, x, P);
		for (int i = 0; i < P; i++)
			want[i] += n * x[i];
		total += n;
	}
	cr_assert_eq(tl_sim_reference(9, 4, C, P, 1, ref), 0);
	for (int i = 0; i < P; i++)
		cr_assert(fabs(ref[i] - want[i] / total) < 1e-15, "%d: %g vs %g", i, ref[i],
			  want[i] / total);
}

Test(tools_simulate, reference_threads_agree)
{
	enum { C = 5, P = 10007 };
	double *a = trib_malloc(P * sizeof(double)), *b = trib_malloc(P * sizeof(double));

	cr_assert_eq(tl_sim_reference(2, 0, C, P, 1, a), 0);
	cr_assert_eq(tl_sim_reference(2, 0, C, P, 3, b), 0);
	cr_assert_eq(memcmp(a, b, P * sizeof(double)), 0);
	trib_free(a);
	trib_free(b);
}

/* The reference over a subset is the weighted mean of that subset alone. */
Test(tools_simulate, reference_subset_is_mean_of_included)
{
	enum { C = 6, P = 4099 };
	const bool include[C] = { true, false, true, true, false, true };
	const bool none[C] = { false };
	double *ref = trib_malloc(P * sizeof(double)), *want = trib_calloc(P, sizeof(double));
	double *all = trib_malloc(P * sizeof(double)), total = 0;
	float *x = trib_malloc(P * sizeof(float));

	for (uint32_t c = 0; c < C; c++) {
		uint64_t k = tl_sim_key(5, 2, c);
		double n = tl_sim_samples(k);

		if (!include[c])
			continue;
		tl_sim_fill(k, 0, x, P);
		for (int i = 0; i < P; i++)
			want[i] += n * x[i];
		total += n;
	}
	cr_assert_eq(tl_sim_reference_subset(5, 2, C, include, P, 3, ref), 0);
	for (int i = 0; i < P; i++)
		cr_assert(fabs(ref[i] - want[i] / total) < 1e-12, "%d: %g vs %g", i, ref[i],
			  want[i] / total);
	cr_assert_eq(tl_sim_reference_subset(5, 2, C, NULL, P, 2, ref), 0);
	cr_assert_eq(tl_sim_reference(5, 2, C, P, 2, all), 0);
	cr_assert_eq(memcmp(ref, all, P * sizeof(double)), 0, "NULL includes every client");
	cr_assert_eq(tl_sim_reference_subset(5, 2, C, none, P, 2, ref), -ENODATA);
	trib_free(x);
	trib_free(all);
	trib_free(want);
	trib_free(ref);
}

Test(tools_simulate, compare_limits)
{
	enum { P = 64 };
	double ref[P], err, limit;
	unsigned char raw[P * 4 + 1];
	float f;

	cr_assert_eq(tl_sim_reference(3, 1, 4, P, 1, ref), 0);
	/* Unaligned on purpose: models come from inside an HTTP body. */
	for (int i = 0; i < P; i++) {
		f = (float)ref[i];
		memcpy(raw + 1 + 4 * i, &f, 4);
	}
	tl_sim_compare(ref, raw + 1, P, &err, &limit);
	cr_assert(err <= limit, "err %g limit %g", err, limit);
	cr_assert(limit > 1e-12);
	f = (float)(ref[7] + 10 * limit);
	memcpy(raw + 1 + 28, &f, 4);
	tl_sim_compare(ref, raw + 1, P, &err, &limit);
	cr_assert(err > limit);
	f = NAN;
	memcpy(raw + 1 + 28, &f, 4);
	tl_sim_compare(ref, raw + 1, P, &err, &limit);
	cr_assert(isinf(err));
	memset(ref, 0, sizeof(ref));
	memset(raw, 0, sizeof(raw));
	tl_sim_compare(ref, raw + 1, P, &err, &limit);
	cr_assert_eq(limit, 1e-12, "an all-zero reference keeps the absolute floor");
	cr_assert(err <= limit);
}

Test(tools_simulate, safetensors_body_parses)
{
	enum { P = 37 };
	struct trib_st st = { 0 };
	const char *why = NULL;
	float x[P], y[P];
	char *hdr, *body;
	size_t len;

	cr_assert_eq(tl_sim_st_header(P, &hdr, &len), 0);
	cr_assert_eq(len % 8, 0);
	tl_sim_fill(tl_sim_key(1, 0, 1), 0, x, P);
	body = trib_malloc(len + sizeof(x));
	memcpy(body, hdr, len);
	memcpy(body + len, x, sizeof(x));
	cr_assert_eq(trib_st_parse(body, len + sizeof(x), &st, &why), 0, "%s", why ? why : "");
	cr_assert_eq(st.ntensors, 1);
	cr_assert_str_eq(st.tensors[0].name, "weights");
	cr_assert_eq(st.tensors[0].dtype, TRIB_DTYPE_F32);
	cr_assert_eq(st.tensors[0].ndim, 1);
	cr_assert_eq(st.tensors[0].shape[0], P);
	cr_assert_eq(st.data_off, len);
	cr_assert_eq(st.tensors[0].data_end - st.tensors[0].data_begin, sizeof(x));
	memcpy(y, body + st.data_off + st.tensors[0].data_begin, sizeof(y));
	cr_assert_eq(memcmp(x, y, sizeof(x)), 0);
	trib_st_free(&st);
	trib_free(body);
	trib_free(hdr);
}

/* Write @text as @dir/@name; the path in @path. */
static void write_file(const char *dir, const char *name, const char *text, char *path,
		       size_t len)
{
	FILE *f;

	snprintf(path, len, "%s/%s", dir, name);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

Test(tools_simulate, admin_token_sources, .init = cr_redirect_stderr)
{
	char dir[] = "/tmp/trib-sim-XXXXXX", path[256];
	char *tok = NULL;

	cr_assert_not_null(mkdtemp(dir));
	unsetenv("TRIBUTARY_ADMIN_TOKEN");
	cr_assert_eq(tl_sim_admin_token(NULL, dir, &tok), -ENOENT);
	cr_assert_eq(tl_sim_admin_token(NULL, NULL, &tok), -ENOENT);
	write_file(dir, "admin-token", "from-dir-0123456789 rest\nsecond line\n", path,
		   sizeof(path));
	cr_assert_eq(tl_sim_admin_token(NULL, dir, &tok), 0);
	cr_assert_str_eq(tok, "from-dir-0123456789");
	trib_free(tok);
	setenv("TRIBUTARY_ADMIN_TOKEN", "from-env\n", 1);
	cr_assert_eq(tl_sim_admin_token(NULL, dir, &tok), 0);
	cr_assert_str_eq(tok, "from-env");
	trib_free(tok);
	cr_assert_eq(tl_sim_admin_token(path, NULL, &tok), 0, "a file wins over the env");
	cr_assert_str_eq(tok, "from-dir-0123456789");
	trib_free(tok);
	cr_assert_eq(tl_sim_admin_token("/nonexistent/trib", dir, &tok), -ENOENT);
	unlink(path);
	rmdir(dir);
}

/*
 * A token file is read by core's one rule (trib_token_load), the rule of the
 * node and the controller: 16 to 79 characters on the first line, cut at the
 * first whitespace. Before, simulate trimmed blanks on both sides and took
 * any length.
 */
Test(tools_simulate, admin_token_file_is_cores_rule, .init = cr_redirect_stderr)
{
	static const struct {
		const char *text;
		const char *want; /* NULL: refused with -EINVAL */
	} cases[] = {
		{ "0123456789abcdef\n", "0123456789abcdef" },
		{ "0123456789abcdef", "0123456789abcdef" },
		{ "0123456789abcdef\tcomment\n", "0123456789abcdef" },
		{ "0123456789abcdef\r\n", "0123456789abcdef" },
		{ "0123456789abcde\n", NULL },
		{ "short\n", NULL },
		{ "  0123456789abcdef\n", NULL },
		{ "\n0123456789abcdef\n", NULL },
		{ "", NULL },
		{ "0123456789012345678901234567890123456789012345678901234567890123456789012345678",
		  "0123456789012345678901234567890123456789012345678901234567890123456789012345678" },
		{ "01234567890123456789012345678901234567890123456789012345678901234567890123456789",
		  NULL },
	};
	char dir[] = "/tmp/trib-sim-XXXXXX", path[256];

	cr_assert_not_null(mkdtemp(dir));
	unsetenv("TRIBUTARY_ADMIN_TOKEN");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *tok = NULL;
		int err;

		write_file(dir, "admin-token", cases[i].text, path, sizeof(path));
		/* The same rule for --admin-token-file and for DATA_DIR/admin-token. */
		for (int via_dir = 0; via_dir < 2; via_dir++) {
			err = via_dir ? tl_sim_admin_token(NULL, dir, &tok)
				      : tl_sim_admin_token(path, NULL, &tok);
			if (!cases[i].want) {
				cr_assert_eq(err, -EINVAL, "case %zu '%s': %d", i, cases[i].text,
					     err);
				continue;
			}
			cr_assert_eq(err, 0, "case %zu '%s': %d", i, cases[i].text, err);
			cr_assert_str_eq(tok, cases[i].want);
			trib_free(tok);
		}
	}
	unlink(path);
	rmdir(dir);
}

/* ---- a fake server: one connection at a time, canned answers in order ---- */

#define FAKE_MAX 8

struct fake_srv {
	int lfd;
	uint16_t port;
	pthread_t tid;
	const char *const *script; /* raw responses, one per request */
	unsigned nscript;
	unsigned accepts;
	unsigned requests;
	char heads[FAKE_MAX][1024];
	size_t body_len[FAKE_MAX];
	unsigned char *body[FAKE_MAX]; /* first 1 MB of each body */
	char buf[1 << 16];             /* bytes read and not yet taken */
};

static ssize_t read_some(int fd, void *buf, size_t n)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, 10000) <= 0)
		return -1;
	return read(fd, buf, n);
}

/* Serve requests on @fd; returns false once the script is done. */
static bool fake_conn(struct fake_srv *s, int fd)
{
	char *buf = s->buf;
	size_t have = 0;

	while (s->requests < s->nscript) {
		unsigned r = s->requests;
		char *end, *cl;
		size_t hlen, blen = 0, got, keep;
		ssize_t n;

		while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
			n = read_some(fd, buf + have, sizeof(s->buf) - have - 1);
			if (n <= 0)
				return true; /* the client closed: wait for the next connection */
			have += (size_t)n;
		}
		hlen = (size_t)(end - buf) + 4;
		snprintf(s->heads[r], sizeof(s->heads[r]), "%.*s", (int)hlen, buf);
		cl = strcasestr(s->heads[r], "content-length:");
		if (cl)
			blen = strtoull(cl + 15, NULL, 10);
		s->body_len[r] = blen;
		s->body[r] = trib_malloc(blen < (1 << 20) ? blen + 1 : (1 << 20));
		got = have - hlen < blen ? have - hlen : blen;
		memcpy(s->body[r], buf + hlen, got < (1 << 20) ? got : (1 << 20));
		keep = have - hlen - got;
		memmove(buf, buf + hlen + got, keep);
		have = keep;
		while (got < blen) {
			size_t want = blen - got < sizeof(s->buf) ? blen - got : sizeof(s->buf);

			n = read_some(fd, buf, want);
			if (n <= 0)
				return false;
			if (got < (1 << 20))
				memcpy(s->body[r] + got, buf,
				       got + (size_t)n <= (1 << 20) ? (size_t)n : (1 << 20) - got);
			got += (size_t)n;
		}
		have = 0;
		s->requests++;
		if (write(fd, s->script[r], strlen(s->script[r])) < 0)
			return false;
		if (strcasestr(s->script[r], "Connection: close"))
			return true;
	}
	return false;
}

static void *fake_run(void *arg)
{
	struct fake_srv *s = arg;
	bool more = true;
	int fd;

	while (more) {
		struct pollfd p = { .fd = s->lfd, .events = POLLIN };

		if (poll(&p, 1, 10000) <= 0)
			break;
		fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			break;
		s->accepts++;
		more = fake_conn(s, fd);
		close(fd);
	}
	return NULL;
}

static void fake_start(struct fake_srv *s, const char *const *script, unsigned n)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);

	memset(s, 0, sizeof(*s));
	cr_assert(n <= FAKE_MAX);
	s->script = script;
	s->nscript = n;
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(s->lfd >= 0);
	cr_assert_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(s->lfd, 8), 0);
	cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&s->tid, NULL, fake_run, s), 0);
}

/* Waits for the script to finish; the recorded bodies stay until fake_free(). */
static void fake_stop(struct fake_srv *s)
{
	pthread_join(s->tid, NULL);
	close(s->lfd);
}

static void fake_free(struct fake_srv *s)
{
	for (unsigned i = 0; i < FAKE_MAX; i++)
		trib_free(s->body[i]);
}

static struct tl_client *fake_client(struct fake_srv *s)
{
	struct tl_client *c = NULL;
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u", s->port);
	cr_assert_eq(tl_client_open(url, &c), 0);
	tl_client_set_timeout(c, 10000);
	return c;
}

#define OK_JSON(body) \
	"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " \
	#body "\r\n\r\n"

Test(tools_client, url_parse)
{
	char host[64];
	uint16_t port;

	cr_assert_eq(tl_url_parse("http://127.0.0.1:8080", host, sizeof(host), &port), 0);
	cr_assert_str_eq(host, "127.0.0.1");
	cr_assert_eq(port, 8080);
	cr_assert_eq(tl_url_parse("http://example.org/x", host, sizeof(host), &port), 0);
	cr_assert_str_eq(host, "example.org");
	cr_assert_eq(port, 80);
	cr_assert_eq(tl_url_parse("http://[::1]:9/", host, sizeof(host), &port), 0);
	cr_assert_str_eq(host, "::1");
	cr_assert_eq(port, 9);
	cr_assert_eq(tl_url_parse("http://:80", host, sizeof(host), &port), -EINVAL);
	cr_assert_eq(tl_url_parse("http://h:", host, sizeof(host), &port), -EINVAL);
	cr_assert_eq(tl_url_parse("http://h:0", host, sizeof(host), &port), -EINVAL);
	cr_assert_eq(tl_url_parse("ftp://h", host, sizeof(host), &port), -EINVAL);
}

Test(tools_client, keep_alive_reuses_one_connection)
{
	static const char *const script[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"v1\"\r\nX-Tributary-Round: 4\r\n"
		"\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 204 No Content\r\n\r\n",
	};
	struct tl_http_req req = { .method = "GET", .target = "/a", .bearer = "tok" };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 3);
	c = fake_client(&s);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.body_len, 5);
	cr_assert_str_eq(resp.body, "hello");
	cr_assert_str_eq(resp.etag, "\"v1\"");
	cr_assert_eq(resp.round, 4);
	cr_assert_eq(resp.retry_after, -1);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_str_eq(resp.body, "hi");
	cr_assert_eq(resp.round, -1);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_eq(resp.status, 204);
	cr_assert_eq(resp.body_len, 0);
	cr_assert_eq(tl_client_connects(c), 1);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_eq(s.accepts, 1);
	cr_assert_eq(s.requests, 3);
	cr_assert(strstr(s.heads[0], "GET /a HTTP/1.1\r\n") == s.heads[0]);
	cr_assert_not_null(strstr(s.heads[0], "Authorization: Bearer tok\r\n"));
	cr_assert_not_null(strstr(s.heads[0], "Connection: keep-alive\r\n"));
	cr_assert_null(strcasestr(s.heads[0], "content-length"), "a GET has no body");
	fake_free(&s);
}

/* Also: an interim 100 Continue before the answer is skipped. */
Test(tools_client, reconnects_after_connection_close)
{
	static const char *const script[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
	};
	struct tl_http_req req = { .method = "GET", .target = "/" };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 2);
	c = fake_client(&s);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_str_eq(resp.body, "a");
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_str_eq(resp.body, "b");
	cr_assert_eq(tl_client_connects(c), 2);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_eq(s.accepts, 2);
	fake_free(&s);
}

Test(tools_client, retries_on_503_with_retry_after)
{
	static const char *const script[] = {
		"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0.01\r\n"
		"Content-Length: 0\r\n\r\n",
		"HTTP/1.1 202 Accepted\r\nContent-Length: 24\r\n\r\n{\"round\":2,\"received\":1}",
	};
	enum { P = 50000 };
	struct tl_sim_update u = { .job = "j", .token = "t", .round = 2, .samples = 17,
				   .params = P };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;
	unsigned retries = 99;
	float *x = trib_malloc(P * sizeof(float));

	tl_sim_fill(tl_sim_key(1, 2, 0), 0, x, P);
	u.data = x;
	fake_start(&s, script, 3);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_post_update(c, &u, &resp, &retries), 0);
	cr_assert_eq(resp.status, 202);
	cr_assert_eq(retries, 2);
	cr_assert_eq(tl_client_connects(c), 1);
	tl_client_close(c);
	fake_stop(&s);
	for (int r = 0; r < 3; r++) {
		cr_assert(strstr(s.heads[r], "POST /v1/jobs/j/updates HTTP/1.1\r\n") == s.heads[r]);
		cr_assert_not_null(strstr(s.heads[r], "X-Tributary-Round: 2\r\n"));
		cr_assert_not_null(strstr(s.heads[r], "X-Tributary-Samples: 17\r\n"));
		cr_assert_not_null(
			strstr(s.heads[r], "Content-Type: application/octet-stream\r\n"));
		cr_assert_eq(s.body_len[r], P * 4);
		cr_assert_eq(memcmp(s.body[r], x, P * 4), 0);
	}
	trib_free(x);
	fake_free(&s);
}

Test(tools_client, error_json_is_reported)
{
	static const char *const script[] = {
		"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
		"Content-Length: 30\r\n\r\n{\"error\": \"round 3 is closed\"}",
		"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 9\r\n\r\nboom\nmore",
		"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
	};
	struct tl_http_req req = { .method = "POST", .target = "/x" };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;
	unsigned retries;
	char msg[128];

	fake_start(&s, script, 3);
	c = fake_client(&s);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_eq(resp.status, 400);
	tl_http_error_msg(&resp, msg, sizeof(msg));
	cr_assert_str_eq(msg, "round 3 is closed");
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	tl_http_error_msg(&resp, msg, sizeof(msg));
	cr_assert_str_eq(msg, "HTTP 500: boom");
	/* A 503 that outlasts the wait budget comes back as it is. */
	cr_assert_eq(tl_client_do_retry(c, &req, 0, &resp, &retries), 0);
	cr_assert_eq(resp.status, 503);
	cr_assert_eq(retries, 0);
	tl_http_error_msg(&resp, msg, sizeof(msg));
	cr_assert_str_eq(msg, "HTTP 503");
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_not_null(strstr(s.heads[0], "Content-Length: 0\r\n"), "a POST says its length");
	fake_free(&s);
}

Test(tools_client, safetensors_update_body)
{
	static const char *const script[] = {
		"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
	};
	enum { P = 1000 };
	struct tl_sim_update u = { .job = "j", .round = 0, .samples = 1, .params = P };
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;
	unsigned retries;
	float x[P];
	char *hdr;
	size_t len;

	cr_assert_eq(tl_sim_st_header(P, &hdr, &len), 0);
	tl_sim_fill(tl_sim_key(1, 0, 1), 0, x, P);
	u.data = x;
	u.st_hdr = hdr;
	u.st_hdr_len = len;
	fake_start(&s, script, 1);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_post_update(c, &u, &resp, &retries), 0);
	cr_assert_eq(resp.status, 202);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_not_null(strstr(s.heads[0], "Content-Type: application/x-safetensors\r\n"));
	cr_assert_null(strstr(s.heads[0], "Authorization"), "no token, no header");
	cr_assert_eq(s.body_len[0], len + sizeof(x));
	cr_assert_eq(memcmp(s.body[0], hdr, len), 0);
	cr_assert_eq(memcmp(s.body[0] + len, x, sizeof(x)), 0);
	trib_free(hdr);
	fake_free(&s);
}

Test(tools_client, idempotency_key_header)
{
	static const char *const script[] = {
		"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
	};
	struct tl_http_req req = { .method = "POST", .target = "/x", .bearer = "tok",
				   .headers = "X-A: 1\r\n", .idempotency_key = "k-1_A~" };
	struct tl_sim_update u = { .job = "j", .round = 3, .samples = 1, .params = 1 };
	char long_key[TL_IDEM_KEY_MAX + 2];
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;
	unsigned retries;
	float x = 1.0f;

	u.data = &x;
	tl_sim_idem_key(7, 3, 2, 0, u.key, sizeof(u.key));
	fake_start(&s, script, 2);
	c = fake_client(&s);
	cr_assert_eq(tl_client_do(c, &req, &resp), 0);
	cr_assert_eq(tl_sim_post_update(c, &u, &resp, &retries), 0);
	/* Not a key the server takes: refused before anything is sent. */
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	req.idempotency_key = long_key;
	cr_assert_eq(tl_client_do(c, &req, &resp), -EINVAL);
	req.idempotency_key = "";
	cr_assert_eq(tl_client_do(c, &req, &resp), -EINVAL);
	req.idempotency_key = "a b";
	cr_assert_eq(tl_client_do(c, &req, &resp), -EINVAL);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert_eq(s.requests, 2);
	cr_assert_not_null(strstr(s.heads[0], "\r\nIdempotency-Key: k-1_A~\r\n"), "%s",
			   s.heads[0]);
	cr_assert_not_null(strstr(s.heads[0], "\r\nX-A: 1\r\n"), "%s", s.heads[0]);
	cr_assert_not_null(strstr(s.heads[1], "\r\nIdempotency-Key: sim-7-3-2\r\n"), "%s",
			   s.heads[1]);
	fake_free(&s);

	long_key[TL_IDEM_KEY_MAX] = '\0';
	cr_assert(tl_idem_key_valid(long_key), "64 bytes is the longest key");
	cr_assert(!tl_idem_key_valid("caf\xc3\xa9"));
	cr_assert(!tl_idem_key_valid("a\tb"));
}

Test(tools_simulate, idempotency_keys_are_unique_per_update)
{
	char a[TL_IDEM_KEY_MAX + 1], b[TL_IDEM_KEY_MAX + 1];

	tl_sim_idem_key(1, 0, 0, 0, a, sizeof(a));
	cr_assert_str_eq(a, "sim-1-0-0");
	tl_sim_idem_key(UINT64_MAX, UINT64_MAX, UINT32_MAX, UINT8_MAX, a, sizeof(a));
	cr_assert_str_eq(a, "sim-18446744073709551615-18446744073709551615-4294967295-r255");
	cr_assert(tl_idem_key_valid(a), "the longest key fits");
	/* Seed, round, client and resend each make another key. */
	tl_sim_idem_key(1, 2, 3, 0, a, sizeof(a));
	tl_sim_idem_key(1, 2, 3, 0, b, sizeof(b));
	cr_assert_str_eq(a, b, "the same update, the same key");
	tl_sim_idem_key(1, 2, 3, 1, b, sizeof(b));
	cr_assert_str_eq(b, "sim-1-2-3-r1");
	tl_sim_idem_key(1, 23, 0, 0, b, sizeof(b));
	cr_assert_str_neq(a, b);
	tl_sim_idem_key(12, 3, 0, 0, b, sizeof(b));
	cr_assert_str_neq(a, b);
	tl_sim_idem_key(2, 2, 3, 0, b, sizeof(b));
	cr_assert_str_neq(a, b);
}

Test(tools_simulate, job_ensure_creates_missing_job)
{
	static const char *const script[] = {
		"HTTP/1.1 404 Not Found\r\nContent-Length: 23\r\n\r\n{\"error\":\"no such job\"}",
		"HTTP/1.1 201 Created\r\nContent-Length: 36\r\n\r\n"
		"{\"job\":\"a\",\"token\":\"tk-1\",\"round\":0}",
	};
	struct tl_sim_job job;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 2);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_job_ensure(c, "adm", "a", 10, 123, &job), 0);
	cr_assert(job.created);
	cr_assert_str_eq(job.token, "tk-1");
	cr_assert_eq(job.round, 0);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert(strstr(s.heads[1], "POST /v1/jobs HTTP/1.1\r\n") == s.heads[1]);
	cr_assert_not_null(strstr(s.heads[1], "Authorization: Bearer adm\r\n"));
	s.body[1][s.body_len[1]] = '\0';
	cr_assert_not_null(strstr((char *)s.body[1], "\"clients_per_round\":10"));
	cr_assert_not_null(strstr((char *)s.body[1], "\"params\":123"));
	cr_assert_not_null(strstr((char *)s.body[1], "\"algorithm\":\"fedavg\""));
	fake_free(&s);
}

Test(tools_simulate, job_ensure_checks_existing_job, .init = cr_redirect_stderr)
{
	static const char *const script[] = {
		OK_JSON(91) "{\"job\":\"a\",\"round\":3,\"received\":0,\"clients_per_round\":10,"
			    "\"algorithm\":\"fedavg\",\"params\":123}",
		OK_JSON(91) "{\"job\":\"a\",\"round\":3,\"received\":0,\"clients_per_round\":11,"
			    "\"algorithm\":\"fedavg\",\"params\":123}",
	};
	struct tl_sim_job job;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 2);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_job_ensure(c, "adm", "a", 10, 123, &job), 0);
	cr_assert(!job.created);
	cr_assert_eq(job.round, 3);
	cr_assert_str_eq(job.token, "adm", "the admin token works on every job");
	cr_assert_eq(tl_sim_job_ensure(c, "adm", "a", 10, 123, &job), -EEXIST);
	tl_client_close(c);
	fake_stop(&s);
	fake_free(&s);
}

Test(tools_simulate, fetch_model_polls_and_pins_version)
{
	static const char *const script[] = {
		"HTTP/1.1 304 Not Modified\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Tributary-Round: 3\r\nContent-Length: 3\r\n\r\nnew",
		"HTTP/1.1 200 OK\r\nX-Tributary-Round: 2\r\nContent-Length: 3\r\n\r\nold",
	};
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 3);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_fetch_model(c, "j", "t", 2, &resp), 0);
	cr_assert_eq(resp.round, 2);
	cr_assert_str_eq(resp.body, "old");
	tl_client_close(c);
	fake_stop(&s);
	cr_assert(strstr(s.heads[0], "GET /v1/jobs/j/model?after=1 ") == s.heads[0]);
	cr_assert(strstr(s.heads[1], "GET /v1/jobs/j/model?after=1 ") == s.heads[1]);
	cr_assert(strstr(s.heads[2], "GET /v1/jobs/j/model?round=2 ") == s.heads[2]);
	fake_free(&s);
}
