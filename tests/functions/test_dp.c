// SPDX-License-Identifier: MIT
/* Tests of central DP: ChaCha20 (RFC 8439, numpy, libsodium), Gaussian noise, RDP accountant. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "fn_dp.h"
#include "ref/ref.h"
#include "trib_alloc.h"

Test(functions_dp, chacha20_block_matches_rfc8439)
{
	/* RFC 8439 2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, block 1. */
	static const uint8_t want[64] = {
		0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3,
		0x20, 0x71, 0xc4, 0xc7, 0xd1, 0xf4, 0xc7, 0x33, 0xc0, 0x68, 0x03, 0x04, 0x22,
		0xaa, 0x9a, 0xc3, 0xd4, 0x6c, 0x4e, 0xd2, 0x82, 0x64, 0x46, 0x07, 0x9f, 0xaa,
		0x09, 0x14, 0xc2, 0xd7, 0x05, 0xd9, 0x8b, 0x02, 0xa2, 0xb5, 0x12, 0x9c, 0xd1,
		0xde, 0x16, 0x4e, 0xb9, 0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e,
	};
	static const uint8_t nonce[12] = { 0, 0, 0, 0x09, 0, 0, 0, 0x4a, 0, 0, 0, 0 };
	uint8_t key[32], out[64 * 3], one[64];

	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	fn_chacha20_keystream(out, 1, 1, nonce, key);
	cr_assert(!memcmp(out, want, 64), "block 1 differs from RFC 8439 2.3.2");
	/* Several blocks in one call are the blocks of consecutive counters. */
	fn_chacha20_keystream(out, 3, 0, nonce, key);
	cr_assert(!memcmp(out + 64, want, 64));
	fn_chacha20_keystream(one, 1, 2, nonce, key);
	cr_assert(!memcmp(out + 128, one, 64));
}

Test(functions_dp, keystream_matches_numpy_and_libsodium)
{
	struct ref r;
	struct fn_dp_noise nz;
	uint8_t key[32], ks[64 * 10];
	const uint8_t *want;
	size_t n;

	ref_run(&r, "dp.py", "stream 42 3 5 10");
	want = ref_get(&r, "ks", "|u1", &n);
	cr_assert_eq(n, sizeof(ks));
	fn_dp_key_from_seed(42, key);
	cr_assert_eq(fn_dp_noise_init(&nz, key, 3, 1.0), 0);
	fn_chacha20_keystream(ks, 10, 5, nz.nonce, nz.key);
	cr_assert(!memcmp(ks, want, sizeof(ks)), "keystream differs from the numpy reference");
	cr_log_info("ChaCha20 keystream also checked against libsodium: %s",
		    ref_u64(&r, "sodium", NULL)[0] ? "yes" : "no (library not found)");
	ref_free(&r);
}

Test(functions_dp, noise_matches_numpy)
{
	const size_t n = 1001;
	const uint64_t lo = 7; /* odd: the range starts in the middle of a pair */
	struct ref r;
	struct fn_dp_noise nz;
	uint8_t key[32];
	const double *zr;
	const float *x0, *xr;
	double *z = trib_malloc(n * sizeof(double));
	float *x = trib_malloc(n * sizeof(float));

	cr_assert(z && x);
	ref_run(&r, "dp.py", "noise 1 2 %llu %zu 0.5", (unsigned long long)lo, n);
	zr = ref_f64(&r, "z", NULL);
	x0 = ref_f32(&r, "x0", NULL);
	xr = ref_f32(&r, "x", NULL);
	fn_dp_key_from_seed(1, key);
	cr_assert_eq(fn_dp_noise_init(&nz, key, 2, 0.5), 0);
	cr_assert_eq(fn_dp_normals(&nz, lo, n, z), 0);
	/* Same uniforms; log, cos and sin of two libms may differ in the last bits. */
	ref_expect_f64(z, zr, n, 1e-13, 1e-15, "normals");
	memcpy(x, x0, n * sizeof(float));
	cr_assert_eq(fn_dp_noise_add(&nz, x, lo, n), 0);
	ref_expect_f32(x, xr, n, 1, "noised vector");
	trib_free(x);
	trib_free(z);
	ref_free(&r);
}

Test(functions_dp, noise_is_the_same_however_the_model_is_sharded)
{
	enum { N = 4099 };
	static const size_t cuts[] = { 0, 1, 2, 9, 37, 38, 1000, 2049, N };
	struct fn_dp_noise nz, other;
	uint8_t key[32];
	double *whole = trib_malloc(N * sizeof(double)), *part = trib_malloc(N * sizeof(double));
	size_t s;

	cr_assert(whole && part);
	fn_dp_key_from_seed(9, key);
	cr_assert_eq(fn_dp_noise_init(&nz, key, 4, 1.0), 0);
	cr_assert_eq(fn_dp_normals(&nz, 0, N, whole), 0);
	for (s = 0; s + 1 < sizeof(cuts) / sizeof(cuts[0]); s++)
		cr_assert_eq(fn_dp_normals(&nz, cuts[s], cuts[s + 1] - cuts[s], part + cuts[s]), 0);
	cr_assert(!memcmp(whole, part, N * sizeof(double)), "sharded noise differs");

	/* Another round (or another key) gives other noise. */
	cr_assert_eq(fn_dp_noise_init(&other, key, 5, 1.0), 0);
	cr_assert_eq(fn_dp_normals(&other, 0, N, part), 0);
	cr_assert(memcmp(whole, part, N * sizeof(double)));
	cr_assert_eq(fn_dp_normals(&nz, (uint64_t)1 << 40, 1, part), -EOVERFLOW);
	trib_free(part);
	trib_free(whole);
}

Test(functions_dp, noise_has_the_moments_of_a_standard_normal)
{
	enum { N = 1 << 20 };
	struct fn_dp_noise nz;
	uint8_t key[32];
	double *z = trib_malloc(N * sizeof(double)), s1 = 0, s2 = 0, tail = 0;

	cr_assert_not_null(z);
	fn_dp_key_from_seed(2024, key);
	cr_assert_eq(fn_dp_noise_init(&nz, key, 0, 1.0), 0);
	cr_assert_eq(fn_dp_normals(&nz, 0, N, z), 0);
	for (size_t i = 0; i < N; i++) {
		s1 += z[i];
		s2 += z[i] * z[i];
		tail += fabs(z[i]) > 1.959963984540054;
	}
	/* Fixed seed, so these are deterministic; the bounds are 5 standard errors. */
	cr_assert_lt(fabs(s1 / N), 5.0 / sqrt(N), "mean %g", s1 / N);
	cr_assert_lt(fabs(s2 / N - 1.0), 5.0 * sqrt(2.0 / N), "variance %g", s2 / N);
	cr_assert_lt(fabs(tail / N - 0.05), 5.0 * sqrt(0.05 * 0.95 / N), "tail %g", tail / N);
	trib_free(z);
}

Test(functions_dp, epsilon_matches_numpy_and_the_closed_form)
{
	static const struct {
		double z;
		uint64_t rounds;
		double delta;
	} cases[] = {
		{ 1.1, 100, 1e-5 }, { 0.5, 1, 1e-5 }, { 5.0, 1000, 1e-6 },
		{ 20.0, 1, 1e-5 },  { 1.0, 0, 1e-5 }, { 2.0, 100000, 1e-9 },
	};
	enum { NC = sizeof(cases) / sizeof(cases[0]) };
	char args[512], name[32];
	size_t len = 0, i;
	struct ref r;

	len += (size_t)snprintf(args, sizeof(args), "eps");
	for (i = 0; i < NC; i++)
		len += (size_t)snprintf(args + len, sizeof(args) - len, " %.17g:%llu:%.17g",
					cases[i].z, (unsigned long long)cases[i].rounds,
					cases[i].delta);
	cr_assert_lt(len, sizeof(args));
	ref_run(&r, "dp.py", "%s", args);
	for (i = 0; i < NC; i++) {
		double eps, order, t = (double)cases[i].rounds, z = cases[i].z;
		double lg = log(1.0 / cases[i].delta), closed;

		cr_assert_eq(fn_dp_epsilon(z, cases[i].rounds, cases[i].delta, &eps, &order), 0);
		snprintf(name, sizeof(name), "eps_%zu", i);
		cr_assert_float_eq(eps, ref_scalar(&r, name), 1e-12 * (1 + eps), "case %zu", i);
		snprintf(name, sizeof(name), "order_%zu", i);
		cr_assert_eq(order, ref_scalar(&r, name), "case %zu", i);
		if (!cases[i].rounds) {
			cr_assert_eq(eps, 0.0);
			continue;
		}
		/*
		 * Over all real orders > 1 the minimum is T/(2z^2) + sqrt(2 T ln(1/delta))/z,
		 * at alpha = 1 + z sqrt(2 ln(1/delta) / T): the grid can only be above it.
		 */
		closed = t / (2 * z * z) + sqrt(2 * t * lg) / z;
		cr_assert_geq(eps, closed - 1e-9);
		if (1 + z * sqrt(2 * lg / t) >= 1.1 && 1 + z * sqrt(2 * lg / t) <= 63)
			cr_assert_leq(eps, closed * 1.02, "case %zu: eps %g, closed form %g", i,
				      eps, closed);
	}
	/* The known case: z = 1.1, 100 rounds, delta = 1e-5 gives 85.009 at order 1.5. */
	double eps, order;

	cr_assert_eq(fn_dp_epsilon(1.1, 100, 1e-5, &eps, &order), 0);
	cr_assert_float_eq(eps, 85.00932200432061, 1e-9);
	cr_assert_eq(order, 1.5);
	ref_free(&r);
}

Test(functions_dp, accountant_composes_rounds_and_multipliers)
{
	struct fn_dp_accountant a, b;
	double ea, eb;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	cr_assert_eq(fn_dp_accountant_add(&a, 1.3, 40), 0);
	cr_assert_eq(fn_dp_accountant_add(&a, 1.3, 60), 0);
	cr_assert_eq(fn_dp_accountant_add(&b, 1.3, 100), 0);
	cr_assert_eq(fn_dp_accountant_epsilon(&a, 1e-5, &ea, NULL), 0);
	cr_assert_eq(fn_dp_accountant_epsilon(&b, 1e-5, &eb, NULL), 0);
	cr_assert_float_eq(ea, eb, 1e-12 * eb);
	/* A noisier round costs less than a quieter one. */
	cr_assert_eq(fn_dp_accountant_add(&a, 4.0, 1), 0);
	cr_assert_eq(fn_dp_accountant_add(&b, 1.0, 1), 0);
	cr_assert_eq(fn_dp_accountant_epsilon(&a, 1e-5, &ea, NULL), 0);
	cr_assert_eq(fn_dp_accountant_epsilon(&b, 1e-5, &eb, NULL), 0);
	cr_assert_lt(ea, eb);
	cr_assert_eq(fn_dp_accountant_add(&a, 0.0, 1), -EINVAL);
	cr_assert_eq(fn_dp_accountant_epsilon(&a, 1.0, &ea, NULL), -EINVAL);
}

Test(functions_dp, params_and_keys)
{
	const char *field;
	uint8_t k1[32], k2[32], zero[32] = { 0 };
	struct fn_dp_noise nz;

	cr_assert_eq(fn_dp_params_check(1.0, 1.1, 1e-5, &field), 0);
	cr_assert_null(field);
	cr_assert_eq(fn_dp_params_check(0.0, 1.1, 1e-5, &field), -EINVAL);
	cr_assert_str_eq(field, "clip_norm");
	cr_assert_eq(fn_dp_params_check(1.0, -1.0, 1e-5, &field), -EINVAL);
	cr_assert_str_eq(field, "dp_noise_multiplier");
	cr_assert_eq(fn_dp_params_check(1.0, 1.0, 1.0, &field), -EINVAL);
	cr_assert_str_eq(field, "dp_delta");
	cr_assert_eq(fn_dp_noise_init(&nz, zero, 0, -1.0), -EINVAL);
	cr_assert_eq(fn_dp_noise_init(&nz, zero, 0, INFINITY), -EINVAL);

	cr_assert_eq(fn_dp_key_from_os(k1), 0);
	cr_assert_eq(fn_dp_key_from_os(k2), 0);
	cr_assert(memcmp(k1, k2, 32) && memcmp(k1, zero, 32));
}
