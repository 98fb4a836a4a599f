// SPDX-License-Identifier: MIT
/* Why a syscall a container can refuse failed: the seccomp filter or a missing capability. */
#include "trib_sandbox.h"

#include <errno.h>
#include <linux/capability.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CAP_BPF
#define CAP_BPF 39
#endif
#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif

static const char *cap_name(int cap)
{
	switch (cap) {
	case CAP_BPF:
		return "CAP_BPF";
	case CAP_NET_ADMIN:
		return "CAP_NET_ADMIN";
	case CAP_SYS_ADMIN:
		return "CAP_SYS_ADMIN";
	case CAP_IPC_LOCK:
		return "CAP_IPC_LOCK";
	case CAP_PERFMON:
		return "CAP_PERFMON";
	case CAP_SYS_RESOURCE:
		return "CAP_SYS_RESOURCE";
	default:
		return "CAP_?";
	}
}

static bool has_cap(uint64_t capeff, int cap)
{
	if (cap < 0 || cap > 63)
		return false;
	if (capeff >> cap & 1)
		return true;
	/* The kernel lets CAP_SYS_ADMIN do what CAP_BPF does (before 5.8 it was the only way). */
	return cap == CAP_BPF && (capeff >> CAP_SYS_ADMIN & 1);
}

static const char *errno_name(int err)
{
	switch (-err) {
	case EPERM:
		return "EPERM";
	case EACCES:
		return "EACCES";
	case ENOSYS:
		return "ENOSYS";
	default:
		return strerror(-err);
	}
}

void trib_sandbox_explain(const char *call, int err, int seccomp, uint64_t capeff,
			  const int *caps, size_t ncaps, char *buf, size_t len)
{
	char missing[128] = "";
	bool filter = seccomp == 2;

	for (size_t i = 0; i < ncaps; i++) {
		if (has_cap(capeff, caps[i]))
			continue;
		if (missing[0])
			strncat(missing, ", ", sizeof(missing) - strlen(missing) - 1);
		strncat(missing, cap_name(caps[i]), sizeof(missing) - strlen(missing) - 1);
	}
	if (err == -ENOSYS && filter) {
		snprintf(buf, len,
			 "%s failed with ENOSYS under a seccomp filter (Seccomp: 2 in "
			 "/proc/self/status): the container's seccomp profile blocks it "
			 "(Kubernetes: seccompProfile Unconfined, or a Localhost profile that "
			 "allows it)",
			 call);
	} else if ((err == -EPERM || err == -EACCES) && missing[0]) {
		snprintf(buf, len,
			 "%s failed with %s: the process lacks %s (effective capabilities; "
			 "Kubernetes: securityContext.capabilities.add)%s",
			 call, errno_name(err), missing,
			 filter ? "; a seccomp filter is on too" : "");
	} else if (filter) {
		snprintf(buf, len,
			 "%s failed with %s under a seccomp filter (Seccomp: 2 in "
			 "/proc/self/status)%s: the container's seccomp profile blocks it "
			 "(Kubernetes: seccompProfile Unconfined, or a Localhost profile that "
			 "allows it)",
			 call, errno_name(err),
			 ncaps ? " with the capabilities it needs held" : "");
	} else if (err == -ENOSYS) {
		snprintf(buf, len,
			 "%s failed with ENOSYS and no seccomp filter is on: the kernel does not "
			 "have it (built without it, or disabled by a sysctl)",
			 call);
	} else {
		snprintf(buf, len, "%s failed with %s%s%s", call, errno_name(err),
			 seccomp == 0 ? ", no seccomp filter on" : "",
			 ncaps && !missing[0] ? ", the capabilities it needs held (a sysctl or an "
						"LSM refuses it?)"
					      : "");
	}
}

/* The Seccomp: field of /proc/self/status, or -1. */
static int seccomp_mode(void)
{
	char line[256];
	int mode = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &mode) == 1)
			break;
	fclose(f);
	return mode;
}

/* The effective set from capget(2) (version 3: two 32-bit words), or 0. */
static uint64_t cap_effective(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data))
		return 0;
	return (uint64_t)data[1].effective << 32 | data[0].effective;
}

void trib_sandbox_why(const char *call, int err, const int *caps, size_t ncaps, char *buf,
		      size_t len)
{
	trib_sandbox_explain(call, err, seccomp_mode(), cap_effective(), caps, ncaps, buf, len);
}
