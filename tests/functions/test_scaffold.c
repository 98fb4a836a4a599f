// SPDX-License-Identifier: MIT
/* SCAFFOLD's server step (functions/fn_scaffold.c) against numpy (ref/scaffold.py). */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>

#include "fn_scaffold.h"
#include "ref/ref.h"
#include "trib_alloc.h"

static void check_step(size_t half, unsigned s, float lr, double pop, unsigned seed)
{
	struct ref r;
	const float *prev, *sum, *want;
	float *out = trib_malloc(2 * half * sizeof(float));
	double worst = 0;

	cr_assert_not_null(out);
	ref_run(&r, "scaffold.py", "%zu %u %.9g %.17g %u", half, s, (double)lr, pop, seed);
	prev = ref_f32(&r, "prev", NULL);
	sum = ref_f32(&r, "sum", NULL);
	want = ref_f32(&r, "out", NULL);
	cr_assert_eq(fn_scaffold_step(prev, sum, out, 2 * half, s, lr, pop), 0);
	for (size_t i = 0; i < 2 * half; i++)
		worst = fmax(worst, fabs((double)out[i] - (double)want[i]));
	/* The only difference is the f32 fold of the sum (s roundings of values ~0.1). */
	cr_assert_lt(worst, 1e-6, "half %zu s %u lr %g N %g: max error %g", half, s, (double)lr,
		     pop, worst);
	/* In place (the top's accumulator is both): the same bits. */
	{
		float *acc = trib_malloc(2 * half * sizeof(float));

		cr_assert_not_null(acc);
		memcpy(acc, sum, 2 * half * sizeof(float));
		cr_assert_eq(fn_scaffold_step(prev, acc, acc, 2 * half, s, lr, pop), 0);
		cr_assert_eq(memcmp(acc, out, 2 * half * sizeof(float)), 0);
		trib_free(acc);
	}
	trib_free(out);
	ref_free(&r);
}

Test(functions_scaffold, step_matches_numpy)
{
	check_step(1000, 3, 0.5f, 10, 1);
	check_step(37, 10, 1.0f, 10, 2);   /* everyone took part: c moves by the whole mean */
	check_step(513, 1, 0.01f, 1e6, 3); /* one of a million */
}

Test(functions_scaffold, refuses_what_it_cannot_step)
{
	float v[4] = { 0 };

	cr_assert_eq(fn_scaffold_step(v, v, v, 3, 1, 1, 1), -EINVAL, "odd n: no [x ; c]");
	cr_assert_eq(fn_scaffold_step(v, v, v, 4, 0, 1, 1), -EINVAL, "nothing folded");
	cr_assert_eq(fn_scaffold_step(v, v, v, 4, 1, 1, 0), -EINVAL, "N 0");
}
