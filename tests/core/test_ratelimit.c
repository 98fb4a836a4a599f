// SPDX-License-Identifier: MIT
/* Tests for the per-key log limiter: one line a second, the held-back events counted. */
#include <criterion/criterion.h>

#include "trib_ratelimit.h"

#define MS 1000000ull
#define S 1000000000ull

Test(core_ratelimit, first_event_logs_then_one_per_second)
{
	struct trib_ratelimit rl = { 0 };
	uint64_t sup = 99, t = 5 * S;

	cr_assert(trib_ratelimit_allow(&rl, t, &sup), "the first event logs");
	cr_assert_eq(sup, 0);
	/* 28 more in the same second (the malformed flood): none logs. */
	for (int i = 1; i <= 28; i++)
		cr_assert_not(trib_ratelimit_allow(&rl, t + (uint64_t)i * 10 * MS, &sup), "event %d", i);
	cr_assert_eq(sup, 0, "left alone while held back");
	cr_assert_not(trib_ratelimit_allow(&rl, t + S - 1, &sup), "one ns short of a second");
	cr_assert(trib_ratelimit_allow(&rl, t + S, &sup), "a second later it logs");
	cr_assert_eq(sup, 29, "and says how many were held back");
	cr_assert(trib_ratelimit_allow(&rl, t + 3 * S, &sup), "after a quiet spell: logs");
	cr_assert_eq(sup, 0, "the count restarted");
}

Test(core_ratelimit, zero_clock_and_backwards_clock)
{
	struct trib_ratelimit rl = { 0 };
	uint64_t sup = 0;

	/* A monotonic clock may read 0 at the first event: "said" is not "last_ns != 0". */
	cr_assert(trib_ratelimit_allow(&rl, 0, &sup));
	cr_assert_not(trib_ratelimit_allow(&rl, 0, &sup), "same instant: held back");
	cr_assert(trib_ratelimit_allow(&rl, S, &sup));
	cr_assert_eq(sup, 1);
	cr_assert_not(trib_ratelimit_allow(&rl, S / 2, &sup), "backwards: not yet");
	cr_assert(trib_ratelimit_allow(&rl, 2 * S, NULL), "NULL suppressed is allowed");
	cr_assert(trib_ratelimit_allow(&rl, 3 * S, &sup));
	cr_assert_eq(sup, 0);
}

Test(core_ratelimit, keys_are_independent)
{
	struct trib_ratelimit a = { 0 }, b = { 0 };

	cr_assert(trib_ratelimit_allow(&a, S, NULL));
	cr_assert(trib_ratelimit_allow(&b, S + 1, NULL), "another key logs in the same second");
	cr_assert_not(trib_ratelimit_allow(&a, S + 2, NULL));
	cr_assert_not(trib_ratelimit_allow(&b, S + 3, NULL));
}

Test(core_ratelimit, held_back_count_saturates)
{
	struct trib_ratelimit rl = { .last_ns = S, .suppressed = UINT64_MAX - 1, .said = true };
	uint64_t sup = 0;

	cr_assert_not(trib_ratelimit_allow(&rl, S, NULL));
	cr_assert_not(trib_ratelimit_allow(&rl, S, NULL));
	cr_assert(trib_ratelimit_allow(&rl, 2 * S, &sup));
	cr_assert_eq(sup, UINT64_MAX, "saturated, not wrapped to 0");
}
