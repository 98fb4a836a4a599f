// SPDX-License-Identifier: MIT
/* Tests of simulate: options, update stream, reference, the admin token. */
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
				    "ftp://x:1")),
		     -EINVAL);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--tls-pin",
				    "00ff")),
		     -EINVAL, "a pin is 64 hex digits");
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--tls-ca",
				    "/etc/ssl/certs/ca-certificates.crt")),
		     -EINVAL, "--tls-* without an https:// gateway");
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
	cr_assert_null(o.tls.pin_sha256);
	cr_assert_eq(parse(&o, ARGV("--job", "a", "--clients", "4", "--rounds", "1", "--url",
				    "http://a:1,https://b", "--tls-ca", "/ca.pem", "--tls-pin",
				    "00ff0102030405060708090a0b0c0d0e"
				    "0f101112131415161718191a1b1c1dfe")),
		     0, "https:// gateways, with a CA file and a pin");
	cr_assert_str_eq(o.urls[1], "https://b");
	cr_assert_str_eq(o.tls.ca_file, "/ca.pem");
	cr_assert_not_null(o.tls.pin_sha256);
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
		{ "http://a:1,ftp://b:2", "'ftp://b:2'" },
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

/* An F16 value (normal or zero: all the stream makes) as a double, decoded here on its own. */
static double f16_value(uint16_t h)
{
	int e = (h >> 10) & 0x1f;
	double m = e ? 1 + (h & 0x3ff) / 1024.0 : (h & 0x3ff) / 1024.0;

	return (h & 0x8000 ? -1 : 1) * ldexp(m, e ? e - 15 : -14);
}

/*
 * --dtype: each element is the F32 element rounded down to the dtype's step
 * (2^-10 for F16, 2^-7 for BF16 and I8 x scale 2^-7), decoded by hand from the
 * bytes, and the reference of a dtype is the weighted mean of those values.
 */
Test(tools_simulate, dtype_fill_and_reference)
{
	enum { C = 4, P = 4099 };
	const enum tl_sim_dtype dts[] = { TL_SIM_F16, TL_SIM_BF16, TL_SIM_I8 };
	const double step[] = { 0x1p-10, 0x1p-7, 0x1p-7 };
	float *x = trib_malloc(P * sizeof(float)), scale;
	uint8_t *b = trib_malloc(P * 2 + 8);
	double *ref = trib_malloc(P * sizeof(double)), *want = trib_malloc(P * sizeof(double));

	cr_assert_eq(tl_sim_data_len(TL_SIM_F32, P), 4 * P);
	cr_assert_eq(tl_sim_data_len(TL_SIM_F16, P), 2 * P);
	cr_assert_eq(tl_sim_data_len(TL_SIM_I8, P), P + 4);
	for (unsigned d = 0; d < sizeof(dts) / sizeof(dts[0]); d++) {
		double total = 0, moved = 0;

		memset(want, 0, P * sizeof(double));
		for (uint32_t c = 0; c < C; c++) {
			uint64_t k = tl_sim_key(3, 1, c);
			double n = tl_sim_samples(k);

			tl_sim_fill(k, 0, x, P);
			tl_sim_fill_dtype(dts[d], k, b, P);
			for (int i = 0; i < P; i++) {
				uint16_t h;
				uint32_t u;
				float f;
				double v, r = floor((x[i] + 1.0) / step[d]) * step[d] - 1.0;

				if (dts[d] == TL_SIM_I8) {
					memcpy(&scale, b + P, 4);
					cr_assert_eq(scale, 0x1p-7f);
					v = (int8_t)b[i] * (double)scale;
				} else {
					memcpy(&h, b + 2 * i, 2);
					u = (uint32_t)h << 16;
					memcpy(&f, &u, 4);
					v = dts[d] == TL_SIM_F16 ? f16_value(h) : f;
				}
				cr_assert_eq(v, r, "dtype %u elem %d: %.10g, want %.10g", d, i, v, r);
				moved = fmax(moved, fabs(v - x[i]));
				want[i] += n * v;
			}
			total += n;
		}
		/* Rounded: the elements differ from F32's, so a reference of the wrong dtype fails. */
		cr_assert(moved > step[d] / 2, "dtype %u: no element was rounded", d);
		cr_assert_eq(tl_sim_reference_dtype(dts[d], 3, 1, C, NULL, P, 2, ref), 0);
		for (int i = 0; i < P; i++)
			cr_assert(fabs(ref[i] - want[i] / total) < 1e-14, "dtype %u elem %d", d, i);
	}
	trib_free(x);
	trib_free(b);
	trib_free(ref);
	trib_free(want);
}

/* A safetensors header for each dtype that parses, with the data section it announces. */
Test(tools_simulate, dtype_st_header_parses)
{
	const enum tl_sim_dtype dts[] = { TL_SIM_F32, TL_SIM_F16, TL_SIM_BF16, TL_SIM_I8 };
	const uint32_t want[] = { TRIB_DTYPE_F32, TRIB_DTYPE_F16, TRIB_DTYPE_BF16, TRIB_DTYPE_I8 };
	enum { P = 1001 };

	for (unsigned d = 0; d < 4; d++) {
		size_t len = tl_sim_data_len(dts[d], P), hlen;
		char *hdr, *body;
		const char *why = NULL;
		struct trib_st st = { 0 };

		cr_assert_eq(tl_sim_st_header_dtype(dts[d], P, &hdr, &hlen), 0);
		cr_assert_eq(hlen % 8, 0);
		body = trib_calloc(1, hlen + len);
		memcpy(body, hdr, hlen);
		cr_assert_eq(trib_st_parse(body, hlen + len, &st, &why), 0, "dtype %u: %s", d,
			     why ? why : "");
		cr_assert_eq(st.ntensors, dts[d] == TL_SIM_I8 ? 2u : 1u);
		cr_assert_str_eq(st.tensors[0].name, "weights");
		cr_assert_eq(st.tensors[0].dtype, want[d]);
		cr_assert_eq(st.tensors[0].n_elem, P);
		if (dts[d] == TL_SIM_I8) {
			cr_assert_str_eq(st.tensors[1].name, "weights.scale");
			cr_assert_eq(st.tensors[1].dtype, TRIB_DTYPE_F32);
			cr_assert_eq(st.tensors[1].data_begin, P);
		}
		trib_st_free(&st);
		trib_free(body);
		trib_free(hdr);
	}
}

/* --dtype other than f32 needs safetensors: a raw body is F32 by the API. */
Test(tools_simulate, dtype_needs_safetensors)
{
	struct tl_sim_opts o;
	char *ok[] = { "simulate", "--job", "j", "--clients", "2", "--rounds", "1", "--dtype",
		       "i8", "--format", "safetensors", NULL };
	char *raw[] = { "simulate", "--job", "j", "--clients", "2", "--rounds", "1", "--dtype",
			"f16", NULL };
	char *bad[] = { "simulate", "--job", "j", "--clients", "2", "--rounds", "1", "--dtype",
			"f64", "--format", "safetensors", NULL };

	cr_assert_eq(parse(&o, ok), 0);
	cr_assert_eq(o.dtype, TL_SIM_I8);
	cr_assert_eq(parse(&o, raw), -EINVAL);
	cr_assert_eq(parse(&o, bad), -EINVAL);
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
