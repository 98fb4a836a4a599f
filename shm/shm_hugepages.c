// SPDX-License-Identifier: MIT
/* The 2 MiB huge page pool: pages free for a new mapping, and raising or lowering nr_hugepages. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shm_arena_int.h"
#include "trib_log.h"

/*
 * The 2 MiB pool's own counters. /proc/sys/vm/nr_hugepages and the HugePages_
 * lines of /proc/meminfo are the same numbers when 2 MiB is the default huge
 * page size, but count 1 GiB pages on a host booted with default_hugepagesz=1G.
 */
#define HUGE_2M_DIR	    "/sys/kernel/mm/hugepages/hugepages-2048kB/"
#define NR_HUGEPAGES_PATH   SHM_HUGE_NR_PATH
#define FREE_HUGEPAGES_PATH HUGE_2M_DIR "free_hugepages"
#define RESV_HUGEPAGES_PATH HUGE_2M_DIR "resv_hugepages"

static int read_long(const char *path, long *v)
{
	FILE *f = fopen(path, "re");
	int rc = 0;

	if (!f)
		return -errno;
	if (fscanf(f, "%ld", v) != 1)
		rc = -EIO;
	fclose(f);
	return rc;
}

static int write_long(const char *path, long v)
{
	char buf[32];
	int fd, n, rc = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%ld\n", v);
	if (write(fd, buf, (size_t)n) != n)
		rc = errno ? -errno : -EIO;
	if (close(fd) && !rc)
		rc = -errno;
	return rc;
}

/* 2 MiB pages free for a new mapping: free_hugepages less those already promised (resv). */
int shm_huge__avail(long *avail)
{
	long free_pages, resv;
	int rc;

	rc = read_long(FREE_HUGEPAGES_PATH, &free_pages);
	if (!rc)
		rc = read_long(RESV_HUGEPAGES_PATH, &resv);
	if (!rc)
		*avail = free_pages - resv;
	return rc;
}

/* Take @pages back out of nr_hugepages; a failure leaves them reserved, which is only waste. */
void shm_huge__release(long pages)
{
	long cur;
	int rc;

	if (pages <= 0)
		return;
	rc = read_long(NR_HUGEPAGES_PATH, &cur);
	if (!rc)
		rc = write_long(NR_HUGEPAGES_PATH, cur > pages ? cur - pages : 0);
	if (rc)
		trib_warn("arena: could not give back %ld huge pages to %s: %s", pages,
			  NR_HUGEPAGES_PATH, strerror(-rc));
}

/*
 * Raise nr_hugepages so that @npages are free for us. *@added gets how many
 * pages the kernel actually added (the caller gives them back). On failure
 * nothing stays added and @why says what went wrong.
 */
int shm_huge__reserve(long npages, long *added, char *why, size_t why_len)
{
	long avail, cur, now, need;
	int rc;

	*added = 0;
	rc = shm_huge__avail(&avail);
	if (rc) {
		snprintf(why, why_len, "cannot read %s: %s", FREE_HUGEPAGES_PATH, strerror(-rc));
		return rc;
	}
	need = npages - avail;
	if (need <= 0) {
		snprintf(why, why_len,
			 "mmap found no huge pages although %ld are free (hugetlb cgroup limit?)",
			 avail);
		return -ENOMEM;
	}
	rc = read_long(NR_HUGEPAGES_PATH, &cur);
	if (!rc)
		rc = write_long(NR_HUGEPAGES_PATH, cur + need);
	if (rc) {
		snprintf(why, why_len, "cannot raise %s by %ld: %s", NR_HUGEPAGES_PATH, need,
			 strerror(-rc));
		return rc;
	}
	/* The kernel may grant fewer than asked when memory is fragmented. */
	if (!read_long(NR_HUGEPAGES_PATH, &now) && now > cur)
		*added = now - cur;
	rc = shm_huge__avail(&avail);
	if (rc || avail < npages) {
		snprintf(why, why_len,
			 "asked the kernel for %ld more huge pages, got %ld (%ld of %ld free)",
			 need, *added, rc ? -1 : avail, npages);
		shm_huge__release(*added);
		*added = 0;
		return -ENOMEM;
	}
	return 0;
}
