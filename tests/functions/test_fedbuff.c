// SPDX-License-Identifier: MIT
/* Tests of FedBuff's buffer logic, replaying a 200-client asynchronous run from fedbuff.py. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "fn_fedbuff.h"
#include "fn_fold.h"
#include "ref/ref.h"
#include "trib_alloc.h"

Test(functions_fedbuff, staleness_weight_is_one_over_sqrt_one_plus_s)
{
	cr_assert_eq(fn_fedbuff_staleness_weight(0), 1.0);
	cr_assert_eq(fn_fedbuff_staleness_weight(3), 0.5);
	cr_assert_float_eq(fn_fedbuff_staleness_weight(8), 1.0 / 3.0, 1e-15);
	cr_assert_gt(fn_fedbuff_staleness_weight(UINT64_MAX), 0.0);
}

Test(functions_fedbuff, fold_scale_is_the_staleness_weight_or_a_refusal)
{
	float scale = -1.0f;

	cr_assert_eq(fn_fedbuff_fold_scale(10, 10, 0, &scale), 0);
	cr_assert_eq(scale, 1.0f);
	cr_assert_eq(fn_fedbuff_fold_scale(10, 7, 3, &scale), 0);
	cr_assert_eq(scale, 0.5f);
	/* Exactly what the runtime computed inline before: the double weight rounded to f32. */
	cr_assert_eq(fn_fedbuff_fold_scale(10, 8, 3, &scale), 0);
	cr_assert_eq(scale, (float)fn_fedbuff_staleness_weight(2));
	scale = -1.0f;
	cr_assert_eq(fn_fedbuff_fold_scale(10, 6, 3, &scale), -ESTALE);
	cr_assert_eq(fn_fedbuff_fold_scale(10, 11, 3, &scale), -EINVAL);
	cr_assert_eq(scale, -1.0f, "a refused update leaves the scale alone");
}

Test(functions_fedbuff, versions_advance_every_k_accepted_updates)
{
	struct fn_fedbuff fb;
	struct fn_fedbuff_ticket t;
	uint64_t s;

	cr_assert_eq(fn_fedbuff_init(&fb, 0, 5, 0), -EINVAL);
	cr_assert_eq(fn_fedbuff_init(&fb, 3, 1, 10), 0);
	/* 10 is current: 9 is stale by 1 (allowed), 8 by 2 (refused), 11 does not exist. */
	cr_assert_eq(fn_fedbuff_check(&fb, 9, &s), 0);
	cr_assert_eq(s, 1);
	cr_assert_eq(fn_fedbuff_check(&fb, 8, &s), -ESTALE);
	cr_assert_eq(fn_fedbuff_check(&fb, 11, &s), -EINVAL);
	cr_assert_eq(fn_fedbuff_accept(&fb, 10, 0.0, &t), -EINVAL);
	cr_assert_eq(fn_fedbuff_accept(&fb, 10, NAN, &t), -EINVAL);
	cr_assert_eq(fn_fedbuff_accept(&fb, 8, 1.0, &t), -ESTALE);
	cr_assert_eq(fb.count, 0);

	cr_assert_eq(fn_fedbuff_accept(&fb, 10, 2.0, &t), 0);
	cr_assert(!t.last && t.index == 0 && t.target == 11 && t.weight == 2.0);
	cr_assert_eq(fn_fedbuff_accept(&fb, 9, 4.0, &t), 0);
	cr_assert(!t.last && t.index == 1 && t.staleness == 1);
	cr_assert_float_eq(t.weight, 4.0 / sqrt(2.0), 1e-15);
	cr_assert_eq(fn_fedbuff_accept(&fb, 10, 1.0, &t), 0);
	cr_assert(t.last && t.index == 2 && t.target == 11 && t.divisor == 7.0);
	cr_assert_eq(fb.version, 11);
	cr_assert_eq(fb.count, 0);
	/* The update the client started from 10 is now stale by 1; from 9, by 2: refused. */
	cr_assert_eq(fn_fedbuff_accept(&fb, 9, 1.0, &t), -ESTALE);
	cr_assert_eq(fn_fedbuff_accept(&fb, 10, 1.0, &t), 0);
	cr_assert(t.staleness == 1 && t.target == 12);
}

/*
 * Issue 6's acceptance case for FedBuff: 200 simulated clients with random delays. Every
 * decision (accept, 409 stale, 400 future), staleness and weight must equal the reference's, a
 * version must close exactly every K accepted updates, and the model after the last version must
 * match the float64 reference (the C side folds in f32, as the functions do).
 */
Test(functions_fedbuff, two_hundred_async_clients_match_the_reference)
{
	enum { CLIENTS = 200, K = 10, MAX_S = 20, SUBS = 3000, N = 64 };
	struct ref r;
	struct fn_fedbuff fb;
	const uint64_t *tf, *status, *stal, *last;
	const double *base, *weight;
	const float *deltas, *x0, *x_ref;
	float x[N], acc[N];
	double lr;
	size_t i, j, cnt, accepted = 0;

	ref_run(&r, "fedbuff.py", "%d %d %d %d %d 5", CLIENTS, K, MAX_S, SUBS, N);
	tf = ref_u64(&r, "tf", &cnt);
	cr_assert_eq(cnt, SUBS);
	base = ref_f64(&r, "base", NULL);
	deltas = ref_f32(&r, "deltas", NULL);
	status = ref_u64(&r, "status", NULL);
	stal = ref_u64(&r, "staleness", NULL);
	weight = ref_f64(&r, "weight", NULL);
	last = ref_u64(&r, "last", NULL);
	x0 = ref_f32(&r, "x0", NULL);
	x_ref = ref_f32(&r, "x", NULL);
	lr = ref_scalar(&r, "lr");

	memcpy(x, x0, sizeof(x));
	memset(acc, 0, sizeof(acc));
	cr_assert_eq(fn_fedbuff_init(&fb, K, MAX_S, 0), 0);
	for (i = 0; i < SUBS; i++) {
		struct fn_fedbuff_ticket t;
		int err = fn_fedbuff_accept(&fb, tf[i], base[i], &t);
		static const int want_err[] = { 0, -ESTALE, -EINVAL };

		cr_assert_eq(err, want_err[status[i]], "submission %zu: %d, reference status %llu",
			     i, err, (unsigned long long)status[i]);
		if (err)
			continue;
		cr_assert_eq(t.staleness, stal[i], "submission %zu", i);
		cr_assert_eq(t.weight, weight[i], "submission %zu: weight %.17g, reference %.17g",
			     i, t.weight, weight[i]);
		cr_assert_eq(t.index, accepted % K);
		cr_assert_eq(t.last, last[i] != 0, "submission %zu", i);
		cr_assert_eq(t.target, accepted / K + 1);
		accepted++;
		fn_fold_f32(acc, deltas + i * N, (float)t.weight, N);
		if (t.last) {
			for (j = 0; j < N; j++)
				x[j] += (float)(lr * (double)acc[j] / t.divisor);
			memset(acc, 0, sizeof(acc));
		}
	}
	cr_assert_eq(fb.version, (uint64_t)ref_scalar(&r, "versions"));
	cr_assert_eq(fb.version, accepted / K);
	for (j = 0; j < N; j++)
		cr_assert_float_eq(x[j], x_ref[j], 1e-4 * (1 + fabsf(x_ref[j])), "coordinate %zu",
				   j);
	ref_free(&r);
}
