// SPDX-License-Identifier: MIT
/* trib_sandbox_explain names the real cause: the seccomp filter or the missing capability. */
#include <criterion/criterion.h>

#include <errno.h>
#include <linux/capability.h>
#include <string.h>

#include "trib_sandbox.h"

#define BPF 39
static const int bpf_caps[] = { BPF, CAP_NET_ADMIN };
#define BOTH ((1ull << BPF) | (1ull << CAP_NET_ADMIN))

/* The explanation, in one buffer per test file (tests run one at a time per process). */
static char text[512];

static const char *explain(int err, int seccomp, unsigned long long capeff, const int *caps,
			   size_t n)
{
	trib_sandbox_explain("bpf()", err, seccomp, capeff, caps, n, text, sizeof(text));
	return text;
}

Test(core_sandbox, missing_capability_is_named_not_seccomp)
{
	const char *s = explain(-EPERM, 0, 1ull << CAP_NET_ADMIN, bpf_caps, 2);

	cr_expect(strstr(s, "lacks CAP_BPF"), "%s", s);
	cr_expect_not(strstr(s, "CAP_NET_ADMIN"), "%s", s);
	cr_expect_not(strstr(s, "seccomp"), "%s", s);
	s = explain(-EPERM, 0, 0, bpf_caps, 2);
	cr_expect(strstr(s, "lacks CAP_BPF, CAP_NET_ADMIN"), "%s", s);
}

Test(core_sandbox, cap_sys_admin_stands_in_for_cap_bpf)
{
	const char *s = explain(-EPERM, 0, (1ull << CAP_SYS_ADMIN) | (1ull << CAP_NET_ADMIN),
				bpf_caps, 2);

	cr_expect_not(strstr(s, "lacks"), "%s", s);
}

Test(core_sandbox, seccomp_is_named_when_the_capabilities_are_held)
{
	const char *s = explain(-EPERM, 2, BOTH, bpf_caps, 2);

	cr_expect(strstr(s, "seccomp filter"), "%s", s);
	cr_expect(strstr(s, "Seccomp: 2"), "%s", s);
	cr_expect_not(strstr(s, "lacks"), "%s", s);
	/* ENOSYS under a filter is the filter even without the capabilities. */
	s = explain(-ENOSYS, 2, 0, bpf_caps, 2);
	cr_expect(strstr(s, "ENOSYS under a seccomp filter"), "%s", s);
}

Test(core_sandbox, io_uring_needs_no_capability)
{
	char buf[512];

	trib_sandbox_explain("io_uring_setup()", -ENOSYS, 2, 0, NULL, 0, buf, sizeof(buf));
	cr_expect(strstr(buf, "io_uring_setup() failed with ENOSYS under a seccomp filter"), "%s",
		  buf);
	trib_sandbox_explain("io_uring_setup()", -ENOSYS, 0, 0, NULL, 0, buf, sizeof(buf));
	cr_expect(strstr(buf, "kernel does not have it"), "%s", buf);
}

Test(core_sandbox, neither_says_so)
{
	const char *s = explain(-EPERM, 0, BOTH, bpf_caps, 2);

	cr_expect(strstr(s, "no seccomp filter on"), "%s", s);
	cr_expect(strstr(s, "capabilities it needs held"), "%s", s);
}

Test(core_sandbox, this_process_reads_its_own_status)
{
	char buf[512];

	/* As the tests run (root, no filter): EPERM has no missing capability to name. */
	trib_sandbox_why("bpf()", -EPERM, bpf_caps, 2, buf, sizeof(buf));
	cr_expect(strlen(buf) > 10, "%s", buf);
	cr_expect(strstr(buf, "bpf() failed with EPERM"), "%s", buf);
}
