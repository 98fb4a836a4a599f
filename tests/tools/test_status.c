// SPDX-License-Identifier: MIT
/* Tests for `tributary status`'s stalled-round rule (tl_round_stalled, a pure function). */
#include <criterion/criterion.h>
#include <string.h>

#include "tl_status.h"

Test(tools_status, the_30s_floor_without_or_with_a_fast_pace)
{
	char why[160] = "";

	cr_assert_not(tl_round_stalled(100, 29.9, 0, 0, why, sizeof(why)));
	cr_assert(tl_round_stalled(100, 30.1, 0, 0, why, sizeof(why)), "no pace: the floor");
	cr_assert(strstr(why, "no update for 30 s"), "%s", why);
	/* 10 updates/s: 3 arrivals are 0.3 s, the floor still rules. */
	cr_assert_not(tl_round_stalled(100, 29, 10, 0, NULL, 0));
	cr_assert(tl_round_stalled(100, 31, 10, 0, NULL, 0));
}

Test(tools_status, a_slow_pace_raises_the_limit_to_3_arrivals)
{
	char why[160] = "";

	/* One update every 20 s: stalled past 60 s, not before. */
	cr_assert_not(tl_round_stalled(500, 59, 0.05, 0, why, sizeof(why)));
	cr_assert(tl_round_stalled(500, 61, 0.05, 0, why, sizeof(why)));
	cr_assert(strstr(why, "3 x 20 s"), "%s", why);
}

Test(tools_status, past_the_round_timeout)
{
	char why[160] = "";

	cr_assert_not(tl_round_stalled(9, 1, 1, 10, why, sizeof(why)));
	cr_assert(tl_round_stalled(11, 1, 1, 10, why, sizeof(why)), "a recent update or not");
	cr_assert(strstr(why, "round_timeout_s 10"), "%s", why);
	cr_assert_not(tl_round_stalled(11, 1, 1, 0, NULL, 0), "no timeout: the pace rules");
}

Test(tools_status, a_round_not_started_is_never_stalled)
{
	cr_assert_not(tl_round_stalled(-1, 1e9, 0, 10, NULL, 0));
}
