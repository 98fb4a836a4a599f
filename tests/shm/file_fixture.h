/* SPDX-License-Identifier: MIT */
/* Test fixture of file arenas: a private arena directory and data dir per test, removed after. */
#ifndef TEST_SHM_FILE_FIXTURE_H
#define TEST_SHM_FILE_FIXTURE_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm_arena.h"
#include "shm_arena_file.h"
#include "shm_journal.h"

#define MIB (1024ull * 1024)

/*
 * Each test gets its own arena directory (a mkdtemp under /dev/shm, or a
 * private hugetlbfs mount under /tmp) and its own data dir, so that names
 * never collide between tests that Criterion runs in parallel.
 */
struct fx {
	char dir[64];	/* where arena files go */
	char data[64];	/* the data dir */
	char path[128]; /* dir/tributary-test.arena */
	bool mounted;	/* dir is our hugetlbfs mount */
};

static struct fx fx;

static inline void fx_paths(void)
{
	cr_assert_not_null(mkdtemp(fx.data), "mkdtemp: %s", strerror(errno));
	snprintf(fx.path, sizeof(fx.path), "%s/tributary-test.arena", fx.dir);
}

/* The arena directory on /dev/shm: normal pages. */
static inline void fx_setup_shm(void)
{
	memset(&fx, 0, sizeof(fx));
	snprintf(fx.dir, sizeof(fx.dir), "/dev/shm/trib-test-XXXXXX");
	snprintf(fx.data, sizeof(fx.data), "/tmp/trib-data-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp /dev/shm: %s", strerror(errno));
	fx_paths();
}

/*
 * Tests that reserve huge pages or count the pool run one at a time, across
 * processes (Criterion runs tests in parallel, and other runs of this binary
 * may share the machine): each holds this lock until its process exits.
 */
#define FX_HUGE_LOCK "/tmp/tributary-test-hugepages.lock"

static inline void fx_serialize_huge(void)
{
	int fd = open(FX_HUGE_LOCK, O_CREAT | O_RDWR | O_CLOEXEC, 0600);

	cr_assert_geq(fd, 0, "%s: %s", FX_HUGE_LOCK, strerror(errno));
	cr_assert_eq(flock(fd, LOCK_EX), 0, "flock %s: %s", FX_HUGE_LOCK, strerror(errno));
	/* fd stays open: the lock goes with this test's process. */
}

/* A private hugetlbfs mount; skips (with the reason) only when the capability is missing. */
static inline void fx_setup_huge(void)
{
	memset(&fx, 0, sizeof(fx));
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/trib-huge-XXXXXX");
	snprintf(fx.data, sizeof(fx.data), "/tmp/trib-data-XXXXXX");
	if (geteuid() != 0)
		cr_skip_test("mounting hugetlbfs and reserving huge pages needs root (euid %u)",
			     (unsigned)geteuid());
	if (access("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", F_OK))
		cr_skip_test("this kernel has no 2 MiB huge pages");
	fx_serialize_huge();
	cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp: %s", strerror(errno));
	if (mount("none", fx.dir, "hugetlbfs", 0, "pagesize=2M")) {
		int e = errno;

		rmdir(fx.dir);
		if (e == ENODEV || e == EPERM)
			cr_skip_test("cannot mount hugetlbfs: %s", strerror(e));
		cr_assert_fail("mount hugetlbfs on %s: %s", fx.dir, strerror(e));
	}
	fx.mounted = true;
	fx_paths();
}

static inline void rm_files(const char *dir)
{
	char p[512];
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && snprintf(p, sizeof(p), "%s/%s", dir, e->d_name) > 0)
			unlink(p);
	closedir(d);
}

static inline void fx_teardown(void)
{
	if (fx.dir[0] && !strstr(fx.dir, "XXXXXX")) {
		rm_files(fx.dir);
		/* Lazily: a failed test may still map a file there until its process exits. */
		if (fx.mounted)
			umount2(fx.dir, MNT_DETACH);
		rmdir(fx.dir);
	}
	if (fx.data[0] && !strstr(fx.data, "XXXXXX"))
		rmdir(fx.data);
}

static inline struct shm_arena_file_opts fx_opts(size_t size)
{
	struct shm_arena_file_opts o = {
	    .path = fx.path,
	    .data_dir = fx.data,
	    .node_id = "node-a boot-1234",
	    .size = size,
	    .flags = 0,
	};

	return o;
}

static inline struct shm_arena *fx_create(size_t size)
{
	struct shm_arena_file_opts o = fx_opts(size);
	struct shm_arena *a = NULL;
	char why[512];
	int rc = shm_arena_file_create(&o, &a, why, sizeof(why));

	cr_assert_eq(rc, 0, "create %s: %s (%s)", fx.path, strerror(-rc), why);
	return a;
}

static inline struct shm_arena *fx_open(void)
{
	struct shm_arena_file_opts o = fx_opts(0);
	struct shm_arena *a = NULL;
	char why[512];
	int rc = shm_arena_file_open(&o, &a, why, sizeof(why));

	cr_assert_eq(rc, 0, "open %s: %s (%s)", fx.path, strerror(-rc), why);
	return a;
}

/* Open in a child, where asserting is not allowed: NULL on failure. */
static inline struct shm_arena *fx_open_quiet(void)
{
	struct shm_arena_file_opts o = fx_opts(0);
	struct shm_arena *a = NULL;
	char why[512];

	return shm_arena_file_open(&o, &a, why, sizeof(why)) ? NULL : a;
}

/* Waits for @pid; returns its wait status. */
static inline int fx_wait(pid_t pid)
{
	int st = 0;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return st;
}

static inline bool fx_killed(int st)
{
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

static inline long fx_read_long(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "re");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fscanf(f, "%ld", &v), 1);
	fclose(f);
	return v;
}

#define FX_HUGE_2M "/sys/kernel/mm/hugepages/hugepages-2048kB/"

/* The pool's size and its free pages: a test gives back all it takes. */
struct fx_pool {
	long nr, free_pages;
};

static inline struct fx_pool fx_pool(void)
{
	struct fx_pool p = {
	    .nr = fx_read_long(FX_HUGE_2M "nr_hugepages"),
	    .free_pages = fx_read_long(FX_HUGE_2M "free_hugepages"),
	};

	return p;
}

/*
 * The pool before a test that uses huge pages; busy is set when it moved by
 * itself within 300 ms (other servers on a shared machine).
 */
static inline struct fx_pool fx_pool_before(bool *busy)
{
	struct fx_pool a = fx_pool(), b;
	int i;

	*busy = false;
	for (i = 0; i < 3; i++) {
		usleep(100 * 1000);
		b = fx_pool();
		*busy |= a.nr != b.nr || a.free_pages != b.free_pages;
		a = b;
	}
	return b;
}

/*
 * Expect HugePages_Free and nr_hugepages as they were @before: the test gave
 * back every page it reserved and freed every page it used. Pages of
 * unmapped files are freed at once, but give the kernel up to 2 s. On a
 * machine where the pool moved by itself before the test, other processes'
 * pages make a difference meaningless: it is logged, not failed.
 */
static inline void fx_expect_pool(struct fx_pool before, bool busy)
{
	struct fx_pool after = fx_pool();
	int i;

	for (i = 0; i < 20 && (after.nr != before.nr || after.free_pages != before.free_pages);
	     i++) {
		usleep(100 * 1000);
		after = fx_pool();
	}
	if (busy && (after.nr != before.nr || after.free_pages != before.free_pages)) {
		cr_log_warn("huge page pool busy (others use it): nr %ld -> %ld, free %ld -> %ld",
			    before.nr, after.nr, before.free_pages, after.free_pages);
		return;
	}
	cr_expect_eq(after.nr, before.nr, "nr_hugepages %ld, was %ld", after.nr, before.nr);
	cr_expect_eq(after.free_pages, before.free_pages, "HugePages_Free %ld, was %ld",
		     after.free_pages, before.free_pages);
}

/* 2 MiB pages a file on hugetlbfs holds. */
static inline long fx_file_pages(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	return (long)((uint64_t)st.st_blocks * 512 / (2 * MIB));
}

#endif
