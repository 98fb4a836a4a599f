// SPDX-License-Identifier: MIT
/* Tests of simulate against the fake server: keys per update, the job, the model poll. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tl_client.h"
#include "trib_safetensors.h"
#include "tl_simulate.h"
#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_name.h"

/* ---- options ---- */

#include "fake_srv.h"

Test(tools_simulate, idempotency_keys_are_unique_per_update)
{
	char a[TL_IDEM_KEY_MAX + 1], b[TL_IDEM_KEY_MAX + 1];

	tl_sim_idem_key(1, 0, 0, 0, a, sizeof(a));
	cr_assert_str_eq(a, "sim-1-0-0");
	tl_sim_idem_key(UINT64_MAX, UINT64_MAX, UINT32_MAX, UINT8_MAX, a, sizeof(a));
	cr_assert_str_eq(a, "sim-18446744073709551615-18446744073709551615-4294967295-r255");
	cr_assert(tl_idem_key_valid(a), "the longest key fits");
	/* Seed, round, client and resend each make another key. */
	tl_sim_idem_key(1, 2, 3, 0, a, sizeof(a));
	tl_sim_idem_key(1, 2, 3, 0, b, sizeof(b));
	cr_assert_str_eq(a, b, "the same update, the same key");
	tl_sim_idem_key(1, 2, 3, 1, b, sizeof(b));
	cr_assert_str_eq(b, "sim-1-2-3-r1");
	tl_sim_idem_key(1, 23, 0, 0, b, sizeof(b));
	cr_assert_str_neq(a, b);
	tl_sim_idem_key(12, 3, 0, 0, b, sizeof(b));
	cr_assert_str_neq(a, b);
	tl_sim_idem_key(2, 2, 3, 0, b, sizeof(b));
	cr_assert_str_neq(a, b);
}

Test(tools_simulate, job_ensure_creates_missing_job)
{
	static const char *const script[] = {
		"HTTP/1.1 404 Not Found\r\nContent-Length: 23\r\n\r\n{\"error\":\"no such job\"}",
		"HTTP/1.1 201 Created\r\nContent-Length: 36\r\n\r\n"
		"{\"job\":\"a\",\"token\":\"tk-1\",\"round\":0}",
	};
	struct tl_sim_job job;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 2);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_job_ensure(c, "adm", "a", 10, 123, &job), 0);
	cr_assert(job.created);
	cr_assert_str_eq(job.token, "tk-1");
	cr_assert_eq(job.round, 0);
	tl_client_close(c);
	fake_stop(&s);
	cr_assert(strstr(s.heads[1], "POST /v1/jobs HTTP/1.1\r\n") == s.heads[1]);
	cr_assert_not_null(strstr(s.heads[1], "Authorization: Bearer adm\r\n"));
	s.body[1][s.body_len[1]] = '\0';
	cr_assert_not_null(strstr((char *)s.body[1], "\"clients_per_round\":10"));
	cr_assert_not_null(strstr((char *)s.body[1], "\"params\":123"));
	cr_assert_not_null(strstr((char *)s.body[1], "\"algorithm\":\"fedavg\""));
	fake_free(&s);
}

Test(tools_simulate, job_ensure_checks_existing_job, .init = cr_redirect_stderr)
{
	static const char *const script[] = {
		OK_JSON(91) "{\"job\":\"a\",\"round\":3,\"received\":0,\"clients_per_round\":10,"
			    "\"algorithm\":\"fedavg\",\"params\":123}",
		OK_JSON(91) "{\"job\":\"a\",\"round\":3,\"received\":0,\"clients_per_round\":11,"
			    "\"algorithm\":\"fedavg\",\"params\":123}",
	};
	struct tl_sim_job job;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 2);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_job_ensure(c, "adm", "a", 10, 123, &job), 0);
	cr_assert(!job.created);
	cr_assert_eq(job.round, 3);
	cr_assert_str_eq(job.token, "adm", "the admin token works on every job");
	cr_assert_eq(tl_sim_job_ensure(c, "adm", "a", 10, 123, &job), -EEXIST);
	tl_client_close(c);
	fake_stop(&s);
	fake_free(&s);
}

Test(tools_simulate, fetch_model_polls_and_pins_version)
{
	static const char *const script[] = {
		"HTTP/1.1 304 Not Modified\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Tributary-Round: 3\r\nContent-Length: 3\r\n\r\nnew",
		"HTTP/1.1 200 OK\r\nX-Tributary-Round: 2\r\nContent-Length: 3\r\n\r\nold",
	};
	struct tl_http_resp resp;
	struct tl_client *c;
	struct fake_srv s;

	fake_start(&s, script, 3);
	c = fake_client(&s);
	cr_assert_eq(tl_sim_fetch_model(c, "j", "t", 2, &resp), 0);
	cr_assert_eq(resp.round, 2);
	cr_assert_str_eq(resp.body, "old");
	tl_client_close(c);
	fake_stop(&s);
	/* fake_client's 10 s answer timeout: polls of half of it, not the server's 60 s. */
	cr_assert(strstr(s.heads[0], "GET /v1/jobs/j/model?after=1&timeout=5 ") == s.heads[0]);
	cr_assert(strstr(s.heads[1], "GET /v1/jobs/j/model?after=1&timeout=5 ") == s.heads[1]);
	cr_assert(strstr(s.heads[2], "GET /v1/jobs/j/model?round=2 ") == s.heads[2]);
	fake_free(&s);
}
