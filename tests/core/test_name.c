// SPDX-License-Identifier: MIT
/* Tests for core/trib_name: the job-name rule every layer checks names against. */
#include <criterion/criterion.h>

#include <string.h>

#include "trib_name.h"

Test(core_name, valid_and_invalid_names)
{
	static const char *const good[] = {
		"a", "Z", "0", "mnist", "cifar-10", "job_1", "a.b", "a..b", "x-", "x.",
		"_hidden_ok", "ABCdef123._-",
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", /* 63 */
	};
	static const char *const bad[] = {
		"", ".", "..", "../x", "a/b", "/abs", ".hidden", "-flag", "a b", "a\tb", "a\nb",
		"caf\xc3\xa9", "a'b", "a;b", "a\\b", "a*", "a%2f",
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl", /* 64 */
	};
	size_t i;

	cr_assert_eq(strlen(good[12]), 63);
	cr_assert_eq(strlen(bad[17]), 64);
	cr_assert_eq(TRIB_JOB_NAME_MAX, 64);
	cr_assert_not(trib_job_name_valid(NULL));
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_assert(trib_job_name_valid(good[i]), "good name '%s'", good[i]);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_not(trib_job_name_valid(bad[i]), "bad name '%s'", bad[i]);
}

Test(core_name, names_differing_only_by_case_are_the_same)
{
	cr_assert(trib_job_name_same("mnist", "mnist"));
	cr_assert(trib_job_name_same("MNIST", "mnist"));
	cr_assert(trib_job_name_same("Cifar-10.a_B", "cIFAR-10.A_b"));
	cr_assert_not(trib_job_name_same("mnist", "mnist2"));
	cr_assert_not(trib_job_name_same("a-b", "a_b"));
	cr_assert_not(trib_job_name_same(NULL, "a"));
	cr_assert_not(trib_job_name_same("a", NULL));
}
