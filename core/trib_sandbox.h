/* SPDX-License-Identifier: MIT */
/* Why a syscall a container can refuse failed: the seccomp filter or a missing capability. */
#ifndef TRIB_SANDBOX_H
#define TRIB_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

/*
 * A pure function, for tests: write into @buf (@len bytes) one clause that
 * says why @call failed with @err (-errno), given the process's seccomp mode
 * (the Seccomp: field of /proc/self/status: 0 none, 2 filter; -1 unknown)
 * and effective capabilities @capeff (bit n: capability n). @caps (@ncaps
 * capability numbers) are the ones @call needs; CAP_SYS_ADMIN stands in for
 * CAP_BPF, as the kernel lets it. The clause names, whichever it is:
 *   - the capabilities of @caps missing (EPERM/EACCES);
 *   - the seccomp filter, when one is on and the capabilities are held
 *     (ENOSYS under a filter is always the filter: the kernel has the call);
 *   - else what is left (an old kernel, a sysctl, an LSM).
 */
void trib_sandbox_explain(const char *call, int err, int seccomp, uint64_t capeff,
			  const int *caps, size_t ncaps, char *buf, size_t len);

/* The same for this process: reads /proc/self/status and capget(2). */
void trib_sandbox_why(const char *call, int err, const int *caps, size_t ncaps, char *buf,
		      size_t len);

#endif
