// SPDX-License-Identifier: MIT
/* FedAU's weights (core/trib_fedau.c) against a round-by-round numpy replay (ref/fedau.py). */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>

#include "trib_fedau.h"
#include "ref/ref.h"

static void check_fedau(size_t n, size_t t, uint32_t k, unsigned seed)
{
	const uint64_t *part;
	const double *want;
	size_t cnt, seen = 0;
	struct ref r;

	ref_run(&r, "fedau.py", "%zu %zu %u %u", n, t, k, seed);
	part = ref_u64(&r, "part", &cnt);
	cr_assert_eq(cnt, n * t);
	want = ref_f64(&r, "weight", NULL);
	for (size_t c = 0; c < n; c++) {
		struct trib_fedau_client st = TRIB_FEDAU_NEW;

		for (size_t i = 0; i < t; i++) {
			double w = -1;

			if (!part[c * t + i])
				continue; /* lazily: a round sat out costs nothing */
			cr_assert_eq(trib_fedau_observe(&st, (uint32_t)i, k, &w), 0);
			/* Integer sums over an integer count: bit-equal to numpy's mean. */
			cr_assert(w == want[c * t + i], "client %zu round %zu K %u: %.17g, numpy %.17g",
				  c, i, k, w, want[c * t + i]);
			cr_assert_eq(trib_fedau_observe(&st, (uint32_t)i, k, &w), -EALREADY,
				     "the same round twice");
			seen++;
		}
	}
	cr_assert_gt(seen, n, "the replay saw participations");
	ref_free(&r);
}

Test(functions_fedau, weights_match_numpy_round_by_round)
{
	check_fedau(12, 200, 50, 3); /* the paper's K */
	check_fedau(12, 300, 5, 4);  /* a small cutoff: many capped intervals */
	check_fedau(6, 40, 1, 5);    /* K = 1: every missed round is an interval of 1 */
}

Test(functions_fedau, bounds)
{
	struct trib_fedau_client c = TRIB_FEDAU_NEW;
	double w = 0;

	cr_assert_eq(trib_fedau_observe(&c, 0, 0, &w), -EINVAL);
	cr_assert_eq(trib_fedau_observe(&c, 0, TRIB_FEDAU_K_MAX + 1, &w), -EINVAL);
	cr_assert_eq(trib_fedau_observe(&c, 0, 3, &w), 0);
	cr_assert(w == 1.0, "a new client weighs 1");
	cr_assert_eq(trib_fedau_observe(&c, 3, 3, &w), 0); /* intervals {1}: weight 1 */
	cr_assert(w == 1.0);
	cr_assert_eq(trib_fedau_observe(&c, 4, 3, &w), 0); /* intervals {1, 3} */
	cr_assert(w == 2.0, "got %g", w);
	cr_assert_eq(trib_fedau_observe(&c, 2, 3, &w), -EALREADY, "an older round");
	c.total = 1ull << 53;
	cr_assert_eq(trib_fedau_observe(&c, 5, 3, &w), -EOVERFLOW);
}
