// SPDX-License-Identifier: MIT
/* Tests for the backoff of a failed durable write: delays, the pending state, errno names. */
#include <criterion/criterion.h>

#include <errno.h>

#include "trib_retry.h"

#define MS 1000000ull
#define S 1000000000ull

Test(core_retry, delay_doubles_from_200ms_to_a_10s_cap)
{
	static const uint64_t want[] = { 200 * MS, 200 * MS, 400 * MS, 800 * MS, 1600 * MS,
					 3200 * MS, 6400 * MS, 10 * S, 10 * S };

	for (uint32_t k = 0; k < sizeof(want) / sizeof(want[0]); k++)
		cr_assert_eq(trib_retry_delay_ns(k), want[k], "delay(%u)", k);
	cr_assert_eq(trib_retry_delay_ns(64), 10 * S, "no overflow past 64 doublings");
	cr_assert_eq(trib_retry_delay_ns(UINT32_MAX), 10 * S);
	for (uint32_t k = 1; k < 100; k++)
		cr_assert_leq(trib_retry_delay_ns(k), trib_retry_delay_ns(k + 1), "monotonic");
}

Test(core_retry, fail_then_retries_back_off_then_ok_clears)
{
	struct trib_retry r = { 0 };
	uint64_t t = 1000 * S;

	cr_assert_not(trib_retry_pending(&r));
	cr_assert(trib_retry_due(&r, 0), "nothing pending: always due");
	cr_assert(trib_retry_fail(&r, -ENOSPC, 3, t, 1700000000), "the first failure says so");
	cr_assert(trib_retry_pending(&r));
	cr_assert_eq(r.err, -ENOSPC);
	cr_assert_eq(r.what, 3);
	cr_assert_eq(r.retries, 0);
	cr_assert_eq(r.since_unix, 1700000000);
	cr_assert_eq(r.next_ns, t + 200 * MS);
	cr_assert_not(trib_retry_due(&r, t + 199 * MS));
	cr_assert(trib_retry_due(&r, t + 200 * MS));

	/* Each failed retry waits twice as long, up to the cap; since stays the first's. */
	t += 200 * MS;
	cr_assert_not(trib_retry_fail(&r, -EIO, 3, t, 1700000001));
	cr_assert_eq(r.retries, 1);
	cr_assert_eq(r.err, -EIO, "the last failure is the one shown");
	cr_assert_eq(r.since_unix, 1700000000);
	cr_assert_eq(r.next_ns, t + 400 * MS);
	for (int i = 0; i < 20; i++) {
		t = r.next_ns;
		trib_retry_fail(&r, -ENOSPC, 3, t, 0);
	}
	cr_assert_eq(r.retries, 21);
	cr_assert_eq(r.next_ns, t + 10 * S);

	cr_assert_eq(trib_retry_ok(&r), 22, "22 failed attempts before the success");
	cr_assert_not(trib_retry_pending(&r));
	cr_assert_eq(r.retries, 0);
	cr_assert_eq(trib_retry_ok(&r), 0, "nothing was pending");
	/* A later failure starts over at 200 ms. */
	cr_assert(trib_retry_fail(&r, -ENOSPC, 4, t, 5));
	cr_assert_eq(r.next_ns, t + 200 * MS);
	cr_assert_eq(r.what, 4);
}

Test(core_retry, errno_names)
{
	cr_assert_str_eq(trib_errno_name(-ENOSPC), "ENOSPC");
	cr_assert_str_eq(trib_errno_name(EIO), "EIO");
	cr_assert_str_eq(trib_errno_name(-EDQUOT), "EDQUOT");
	cr_assert_str_eq(trib_errno_name(-100000), "EUNKNOWN");
}
