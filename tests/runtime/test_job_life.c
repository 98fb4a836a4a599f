// SPDX-License-Identifier: MIT
/* Tests of a job's lifecycle where it is pure: num_rounds parsing, the state a job is in. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "rt_api.h"
#include "rt_node.h"

#define ARENA (256ull << 20)

static int parse_nr(const char *nr, bool clustered, uint32_t *out, char *msg)
{
	char body[256];
	struct rt_job_def def;
	int st;

	snprintf(body, sizeof(body), "{\"name\":\"x\",\"clients_per_round\":2,\"params\":4%s%s}",
		 nr ? ",\"num_rounds\":" : "", nr ? nr : "");
	st = rt_job_def_parse((const uint8_t *)body, strlen(body), ARENA, clustered, &def, msg,
			      256);
	if (st == 200) {
		*out = def.spec.num_rounds;
		rt_job_def_free(&def);
	}
	return st;
}

Test(runtime_job_life, num_rounds_is_an_integer_from_1_to_a_million)
{
	static const char *const bad[] = { "0", "-1", "\"x\"", "1e9", "2.0", "1000001", "null",
					   "true", "[2]" };
	char msg[256];
	uint32_t nr = 99;

	cr_assert_eq(parse_nr(NULL, false, &nr, msg), 200, "%s", msg);
	cr_assert_eq(nr, 0, "absent: the job never ends");
	cr_assert_eq(parse_nr("1", false, &nr, msg), 200, "%s", msg);
	cr_assert_eq(nr, 1);
	cr_assert_eq(parse_nr("1000000", false, &nr, msg), 200, "%s", msg);
	cr_assert_eq(nr, 1000000);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		msg[0] = '\0';
		cr_assert_eq(parse_nr(bad[i], false, &nr, msg), 400, "num_rounds %s taken", bad[i]);
		cr_assert(strstr(msg, "num_rounds: got ") && strstr(msg, "1 to 1000000"),
			  "num_rounds %s: %s", bad[i], msg);
	}
	/* The value is shown as given. */
	parse_nr("\"x\"", false, &nr, msg);
	cr_assert(strstr(msg, "got \"x\""), "%s", msg);
}

Test(runtime_job_life, a_cluster_takes_num_rounds_and_refuses_bad_ones_alike)
{
	char msg[256] = "";
	uint32_t nr = 0;

	cr_assert_eq(parse_nr("3", true, &nr, msg), 200, "%s", msg);
	cr_assert_eq(nr, 3);
	cr_assert_eq(parse_nr("0", true, &nr, msg), 400);
	cr_assert(strstr(msg, "num_rounds: got 0"), "%s", msg);
}

Test(runtime_job_life, state_done_wins_and_rounds_over_from_the_last_close)
{
	struct rt_job j;

	memset(&j, 0, sizeof(j));
	cr_assert_eq(rt_job_state(&j), RT_JOB_OPEN);
	cr_assert_not(rt_job_rounds_over(&j));
	j.round = j.completed = 5000; /* no num_rounds: never over */
	cr_assert_not(rt_job_rounds_over(&j));
	j.paused = true;
	cr_assert_str_eq(rt_job_state_name(rt_job_state(&j)), "paused");

	j.num_rounds = 2;
	j.paused = false;
	j.round = 1;
	j.completed = 1;
	cr_assert_eq(rt_job_state(&j), RT_JOB_OPEN);
	cr_assert_not(rt_job_rounds_over(&j));
	/* The last round closed, its model not stored yet: no update taken, not done yet. */
	j.round = 2;
	cr_assert(rt_job_rounds_over(&j));
	cr_assert_eq(rt_job_state(&j), RT_JOB_OPEN);
	j.completed = 2;
	cr_assert_eq(rt_job_state(&j), RT_JOB_DONE);
	j.paused = true; /* paused before it ended: done wins */
	cr_assert_str_eq(rt_job_state_name(rt_job_state(&j)), "done");
}
