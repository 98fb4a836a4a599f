// SPDX-License-Identifier: MIT
/* Tests of the dequantising folds against numpy's conversions (tests/functions/ref/dequant.py). */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "fn_dequant.h"
#include "fn_fold.h"
#include "ref/ref.h"
#include "shm_abi.h"
#include "trib_alloc.h"

static const char *const impls[] = { "generic", "avx2+f16c" };
#define N_IMPLS (sizeof(impls) / sizeof(impls[0]))

static bool use_impl(const char *name)
{
	int err = fn_dequant_set_impl(name);

	if (err == -ENOTSUP)
		return false;
	cr_assert_eq(err, 0, "fn_dequant_set_impl(%s) = %d", name, err);
	cr_assert_str_eq(fn_dequant_impl(), name);
	return true;
}

static bool same_bits(float a, float b)
{
	return !memcmp(&a, &b, sizeof(a)) || (isnan(a) && isnan(b));
}

Test(functions_dequant, decoders_match_numpy_for_every_pattern)
{
	struct ref r;
	const float *f16, *bf16, *i8;
	size_t n, i;

	ref_run(&r, "dequant.py", "tables");
	f16 = ref_f32(&r, "f16", &n);
	cr_assert_eq(n, 65536);
	bf16 = ref_f32(&r, "bf16", NULL);
	i8 = ref_f32(&r, "i8", NULL);
	for (i = 0; i < 65536; i++) {
		float a = fn_f16_to_f32((uint16_t)i), b = fn_bf16_to_f32((uint16_t)i);

		cr_assert(same_bits(a, f16[i]), "f16 %#zx: %a, numpy %a", i, (double)a,
			  (double)f16[i]);
		cr_assert(same_bits(b, bf16[i]), "bf16 %#zx: %a, numpy %a", i, (double)b,
			  (double)bf16[i]);
	}

	/* Every pattern through every fold: acc = -0 and w = 1 keep the value, signed zeros too. */
	uint16_t *pat = trib_malloc(65536 * sizeof(uint16_t));
	float *acc = trib_malloc(65536 * sizeof(float));
	int8_t bytes[256];

	cr_assert(pat && acc);
	for (i = 0; i < 65536; i++)
		pat[i] = (uint16_t)i;
	for (i = 0; i < 256; i++)
		bytes[i] = (int8_t)(i - 128);
	for (size_t t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impls[t]))
			continue;
		for (i = 0; i < 65536; i++)
			acc[i] = -0.0f;
		fn_fold_f16(acc, pat, 1.0f, 65536);
		for (i = 0; i < 65536; i++)
			cr_assert(same_bits(acc[i], f16[i]), "%s f16 fold %#zx: %a, numpy %a",
				  impls[t], i, (double)acc[i], (double)f16[i]);
		for (i = 0; i < 65536; i++)
			acc[i] = -0.0f;
		fn_fold_bf16(acc, pat, 1.0f, 65536);
		for (i = 0; i < 65536; i++)
			cr_assert(same_bits(acc[i], bf16[i]), "%s bf16 fold %#zx", impls[t], i);
		for (i = 0; i < 256; i++)
			acc[i] = -0.0f;
		fn_fold_i8(acc, bytes, 1.0f, 1.0f, 256);
		for (i = 0; i < 256; i++)
			cr_assert(same_bits(acc[i], i8[i]), "%s i8 fold %zu", impls[t], i);
	}
	trib_free(acc);
	trib_free(pat);
	ref_free(&r);
}

/* The reference's inputs and results for one format. */
struct fold_case {
	const char *dtype;
	uint32_t shm_dtype;
	size_t elem; /* bytes per value */
	const float *acc0, *dec, *want;
	const uint8_t *x0;
	float w, scale;
};

/*
 * Folds the first @n values with acc at float offset @ao and x at byte offset @xo. "generic" must
 * equal numpy (acc + w*v, two roundings) bit for bit; "avx2+f16c" must equal
 * fmaf(w, numpy's decoded value, acc) bit for bit (one rounding).
 */
static void fold_one(const struct fold_case *c, bool fma, size_t n, float *acc_base, size_t ao,
		     uint8_t *x_base, size_t xo)
{
	float *acc = acc_base + ao, ws = c->shm_dtype == SHM_DTYPE_I8 ? c->w * c->scale : c->w;
	uint8_t *x = x_base + xo;
	size_t i;

	memcpy(acc, c->acc0, n * sizeof(float));
	memcpy(x, c->x0, n * c->elem);
	cr_assert_eq(fn_dequant_fold(acc, x, c->shm_dtype, c->scale, c->w, n), 0);
	for (i = 0; i < n; i++) {
		float e = fma ? fmaf(ws, c->dec[i], c->acc0[i]) : c->want[i];

		if (!same_bits(acc[i], e))
			cr_assert_fail("%s %s n=%zu acc+%zu x+%zu: element %zu is %a, want %a",
				       fn_dequant_impl(), c->dtype, n, ao, xo, i, (double)acc[i],
				       (double)e);
	}
}

/* Every implementation, every length below, acc offsets 0/3/6 floats, x offsets 0..3 bytes. */
static void check_fold(const char *dtype, uint32_t shm_dtype, size_t elem)
{
	static const size_t lengths[] = { 0, 1, 7, 8, 9, 31, 32, 33, 100, 1000, 4099 };
	const size_t n_max = 4099;
	struct fold_case c = { .dtype = dtype, .shm_dtype = shm_dtype, .elem = elem };
	struct ref r;
	size_t l, ao, xo, i, t;
	float *acc_base = trib_malloc((n_max + 8) * sizeof(float));
	uint8_t *x_base = trib_malloc(n_max * elem + 8);

	cr_assert(acc_base && x_base);
	ref_run(&r, "dequant.py", "fold %s %zu 31", dtype, n_max);
	c.acc0 = ref_f32(&r, "acc", NULL);
	c.x0 = ref_get(&r, "x", "|u1", NULL);
	c.w = ref_f32(&r, "w", NULL)[0];
	c.scale = ref_f32(&r, "scale", NULL)[0];
	c.dec = ref_f32(&r, "decoded", NULL);
	c.want = ref_f32(&r, "want", NULL);

	for (t = 0; t < N_IMPLS; t++) {
		bool fma = !strcmp(impls[t], "avx2+f16c");

		if (!use_impl(impls[t]))
			continue;
		for (l = 0; l < sizeof(lengths) / sizeof(lengths[0]); l++)
			for (ao = 0; ao < 8; ao += 3)
				for (xo = 0; xo < 4; xo++)
					fold_one(&c, fma, lengths[l], acc_base, ao, x_base, xo);
		if (!fma)
			continue;
		/* And the fused result is within a rounding of numpy's. */
		fold_one(&c, fma, n_max, acc_base, 0, x_base, 0);
		for (i = 0; i < n_max; i++) {
			double mag = fabs((double)c.acc0[i]) +
				     fabs((double)c.w * c.scale * c.dec[i]);

			cr_assert_leq(fabs((double)acc_base[i] - c.want[i]), 1.2e-7 * mag,
				      "element %zu", i);
		}
	}
	trib_free(x_base);
	trib_free(acc_base);
	ref_free(&r);
}

Test(functions_dequant, f16_fold_matches_numpy)
{
	check_fold("f16", SHM_DTYPE_F16, 2);
}

Test(functions_dequant, bf16_fold_matches_numpy)
{
	check_fold("bf16", SHM_DTYPE_BF16, 2);
}

Test(functions_dequant, i8_fold_with_scale_matches_numpy)
{
	check_fold("i8", SHM_DTYPE_I8, 1);
}

Test(functions_dequant, dispatch_and_finiteness_checks)
{
	float acc[4] = { 0 };
	uint16_t h[4] = { 0x3c00, 0x7c00, 0x0001, 0xfe00 }; /* 1, +Inf, tiny, NaN */
	uint16_t b[3] = { 0x3f80, 0x0001, 0xff80 };          /* 1, tiny, -Inf */
	int8_t q[2] = { -128, 127 };
	size_t bad = 99;

	cr_assert_eq(fn_dequant_fold(acc, h, 77, 1.0f, 1.0f, 4), -EINVAL);
	cr_assert_eq(fn_dequant_fold(acc, q, SHM_DTYPE_I8, INFINITY, 1.0f, 2), -EINVAL);
	cr_assert_eq(fn_dequant_check_finite(h, SHM_DTYPE_F16, 1, &bad), 0);
	cr_assert_eq(fn_dequant_check_finite(h, SHM_DTYPE_F16, 4, &bad), -EDOM);
	cr_assert_eq(bad, 1);
	cr_assert_eq(fn_dequant_check_finite(h + 2, SHM_DTYPE_F16, 2, &bad), -EDOM);
	cr_assert_eq(bad, 1);
	cr_assert_eq(fn_dequant_check_finite(b, SHM_DTYPE_BF16, 3, &bad), -EDOM);
	cr_assert_eq(bad, 2);
	cr_assert_eq(fn_dequant_check_finite(q, SHM_DTYPE_I8, 2, NULL), 0);
	cr_assert_eq(fn_dequant_check_finite(acc, SHM_DTYPE_F32, 4, NULL), 0);
	cr_assert_eq(fn_dequant_check_finite(acc, 77, 4, NULL), -EINVAL);
	cr_assert_eq(fn_dequant_set_impl("nope"), -EINVAL);
}

/* The gateway's bound on compressed values: |decoded| <= limit, NaN and Inf never pass. */
Test(functions_dequant, check_bound_per_dtype)
{
	/* F16 (little-endian): 1.0, -65504 (the largest), 2.0; BF16: 1.0, -2^80, 2^81. */
	const uint8_t h[] = { 0x00, 0x3c, 0xff, 0xfb, 0x00, 0x40 };
	const uint8_t hn[] = { 0x00, 0x3c, 0x00, 0x7c }; /* 1.0, +Inf */
	const uint8_t b[] = { 0x80, 0x3f, 0x80, 0xe7, 0x00, 0x68 };
	const uint8_t q[] = { 0x7f, 0x80 };
	const float f[] = { 1.0f, -0x1p80f, 0x1p81f };
	size_t bad = 99;

	cr_assert_eq(fn_dequant_check_bound(h, SHM_DTYPE_F16, 3, 65504.0f, &bad), 0);
	cr_assert_eq(bad, 99);
	cr_assert_eq(fn_dequant_check_bound(h, SHM_DTYPE_F16, 3, 65503.0f, &bad), -EDOM);
	cr_assert_eq(bad, 1);
	cr_assert_eq(fn_dequant_check_bound(h, SHM_DTYPE_F16, 3, 1.5f, &bad), -EDOM);
	cr_assert_eq(bad, 1);
	cr_assert_eq(fn_dequant_check_bound(hn, SHM_DTYPE_F16, 2, 0x1p80f, &bad), -EDOM);
	cr_assert_eq(bad, 1);
	cr_assert_eq(fn_dequant_check_bound(hn, SHM_DTYPE_F16, 2, 10.0f, &bad), -EDOM);
	cr_assert_eq(bad, 1);
	/* BF16 0xe780 is -2^80, 0x6800 is 2^81. */
	cr_assert_eq(fn_dequant_check_bound(b, SHM_DTYPE_BF16, 2, 0x1p80f, &bad), 0);
	cr_assert_eq(fn_dequant_check_bound(b, SHM_DTYPE_BF16, 3, 0x1p80f, &bad), -EDOM);
	cr_assert_eq(bad, 2);
	cr_assert_eq(fn_dequant_check_bound(b, SHM_DTYPE_BF16, 3, 0x1p79f, &bad), -EDOM);
	cr_assert_eq(bad, 1);
	cr_assert_eq(fn_dequant_check_bound(f, SHM_DTYPE_F32, 2, 0x1p80f, &bad), 0);
	cr_assert_eq(fn_dequant_check_bound(f, SHM_DTYPE_F32, 3, 0x1p80f, &bad), -EDOM);
	cr_assert_eq(bad, 2);
	/* I8 is bounded through its scale by the caller. */
	cr_assert_eq(fn_dequant_check_bound(q, SHM_DTYPE_I8, 2, 0.0f, NULL), 0);
	cr_assert_eq(fn_dequant_check_bound(q, 77, 2, 1.0f, NULL), -EINVAL);
	cr_assert_eq(fn_dequant_check_bound(q, SHM_DTYPE_F16, 1, -1.0f, NULL), -EINVAL);
	cr_assert_eq(fn_dequant_check_bound(q, SHM_DTYPE_F16, 1, INFINITY, NULL), -EINVAL);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/*
 * Not a benchmark and no assertion on time: a rough GB/s of update bytes per format, printed to
 * the test log (meaningless under the sanitizers; bench/ will measure properly).
 */
Test(functions_dequant, rough_throughput_in_the_log)
{
	enum { N = 1 << 21, REPS = 4 };
	static const struct {
		const char *name;
		uint32_t dtype;
		size_t elem;
	} fmts[] = { { "f32", SHM_DTYPE_F32, 4 },
		     { "f16", SHM_DTYPE_F16, 2 },
		     { "bf16", SHM_DTYPE_BF16, 2 },
		     { "i8", SHM_DTYPE_I8, 1 } };
	float *acc = trib_calloc(N, sizeof(float));
	uint8_t *x = trib_calloc(N, 4);

	cr_assert(acc && x);
	for (size_t t = 0; t < N_IMPLS; t++) {
		if (!use_impl(impls[t]))
			continue;
		for (size_t f = 0; f < sizeof(fmts) / sizeof(fmts[0]); f++) {
			double t0, dt;

			/* One untimed pass: page faults and cold caches are not the kernel. */
			fn_dequant_fold(acc, x, fmts[f].dtype, 0.5f, 1.0f, N);
			t0 = now_s();
			for (int r = 0; r < REPS; r++)
				fn_dequant_fold(acc, x, fmts[f].dtype, 0.5f, 1.0f, N);
			dt = now_s() - t0;
			cr_log_info("fold %-4s (%s, fold %s): %.2f GB/s of update, %.0f Melem/s",
				    fmts[f].name, impls[t], fn_fold_impl(),
				    (double)N * REPS * fmts[f].elem / dt / 1e9,
				    (double)N * REPS / dt / 1e6);
		}
	}
	trib_free(x);
	trib_free(acc);
}
