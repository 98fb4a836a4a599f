// SPDX-License-Identifier: MIT
/* Tests for core/trib_parse: the one integer rule for headers, queries and flags. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>

#include "trib_parse.h"

Test(core_parse, u64_edges)
{
	static const char *const bad[] = {"",	"-1", "+1",   "18446744073709551616",	" 1",
					  "1 ", "1x", "0x10", "99999999999999999999999"};
	uint64_t v = 7;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(trib_parse_u64(bad[i], 0, UINT64_MAX, &v), -EINVAL, "accepted \"%s\"",
			     bad[i]);
	cr_assert_eq(v, 7, "out written on failure");
	cr_assert_eq(trib_parse_u64("0", 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(trib_parse_u64("007", 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, 7);
	cr_assert_eq(trib_parse_u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
	cr_assert_eq(v, UINT64_MAX);
}

Test(core_parse, range_is_inclusive_and_enforced)
{
	uint64_t v = 9;
	uint32_t w = 9;

	cr_assert_eq(trib_parse_u64("1", 1, 10, &v), 0);
	cr_assert_eq(v, 1);
	cr_assert_eq(trib_parse_u64("10", 1, 10, &v), 0);
	cr_assert_eq(v, 10);
	cr_assert_eq(trib_parse_u64("0", 1, 10, &v), -EINVAL);
	cr_assert_eq(trib_parse_u64("11", 1, 10, &v), -EINVAL);
	cr_assert_eq(v, 10, "out written on failure");
	cr_assert_eq(trib_parse_u32("4294967295", 0, UINT32_MAX, &w), 0);
	cr_assert_eq(w, UINT32_MAX);
	cr_assert_eq(trib_parse_u32("4294967296", 0, UINT32_MAX, &w), -EINVAL);
	cr_assert_eq(trib_parse_u32(NULL, 0, 1, &w), -EINVAL);
}
