// SPDX-License-Identifier: MIT
/* Maps the router's per-function counters into a process with bpf(2) and mmap only (no libbpf). */
#include "ebpf_stats.h"

#include <errno.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static size_t stats_bytes(void)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t n = (size_t)EBPF_MAX_FNS * sizeof(struct ebpf_fn_stats);

	if (page <= 0)
		page = 4096;
	return (n + (size_t)page - 1) / (size_t)page * (size_t)page;
}

/* Fill *@info for @map_fd. Returns 0 or -errno. */
static int map_info(int map_fd, struct bpf_map_info *info)
{
	union bpf_attr attr;

	memset(info, 0, sizeof(*info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (__u32)map_fd;
	attr.info.info_len = sizeof(*info);
	attr.info.info = (__u64)(unsigned long)info;
	if (syscall(__NR_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr)) < 0)
		return -errno;
	return 0;
}

int ebpf_stats_map(int map_fd, struct ebpf_fn_stats **out, size_t *len)
{
	struct bpf_map_info info;
	size_t n = stats_bytes();
	void *p;
	int err;

	if (map_fd < 0)
		return -EBADF;
	err = map_info(map_fd, &info);
	if (err)
		return err;
	if (info.type != BPF_MAP_TYPE_ARRAY || !(info.map_flags & BPF_F_MMAPABLE) ||
	    info.value_size != sizeof(struct ebpf_fn_stats) || info.max_entries != EBPF_MAX_FNS)
		return -EINVAL;
	/* The mapping keeps the map alive: @map_fd may be closed afterwards. */
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	*out = p;
	*len = n;
	return 0;
}

void ebpf_stats_unmap(struct ebpf_fn_stats *stats, size_t len)
{
	if (stats)
		munmap(stats, len);
}
