// SPDX-License-Identifier: MIT
/* Tests of arena files: default place, exclusive creation, lock, checked re-attach, removal. */
#include "file_fixture.h"

#include <sys/statfs.h>
#include <linux/magic.h>

#include "shm_arena_abi.h"

TestSuite(shm_arena_file, .init = fx_setup_shm, .fini = fx_teardown);

Test(shm_arena_file, create_then_reopen_keeps_the_bytes)
{
	struct shm_arena *a = fx_create(3 * MIB), *b;
	char real[4096];
	struct stat st;
	uint64_t off;

	cr_expect_not(shm_arena_is_huge(a), "/dev/shm is normal pages");
	cr_assert_eq(stat(fx.path, &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0600, "mode %o", st.st_mode & 07777);
	cr_expect_eq((uint64_t)st.st_size, shm_arena_size(a));
	cr_expect(fcntl(shm_arena_fd(a), F_GETFD) & FD_CLOEXEC);
	cr_assert_not_null(realpath(fx.data, real));
	cr_expect_str_eq(shm_arena_file_data_dir(a), real);
	cr_expect_str_eq(shm_arena_file_node_id(a), "node-a boot-1234");
	cr_expect_str_eq(shm_arena_file_path(a), fx.path);

	cr_assert_eq(shm_slot_alloc(a, 100 * 1024, &off), 0);
	strcpy(shm_arena_ptr(a, off), "kept in the file");
	shm_arena_destroy(a);
	cr_assert_eq(access(fx.path, F_OK), 0, "destroy keeps the file");

	b = fx_open();
	cr_expect_str_eq(shm_arena_ptr(b, off), "kept in the file");
	cr_expect_eq(shm_slot_len(b, off), 2 * SHM_CHUNK, "the allocator's state came back too");
	cr_expect_str_eq(shm_arena_file_node_id(b), "node-a boot-1234");
	cr_expect_eq(shm_arena_file_remove(b), 0);
	cr_expect_eq(access(fx.path, F_OK), -1, "remove unlinks the file");
}

Test(shm_arena_file, create_is_exclusive_and_checks_its_arguments)
{
	struct shm_arena_file_opts o = fx_opts(2 * MIB);
	struct shm_arena *a = fx_create(2 * MIB), *b = NULL;
	char why[512], id[300];

	cr_expect_eq(shm_arena_file_create(&o, &b, why, sizeof(why)), -EEXIST, "%s", why);
	cr_expect_null(b);
	cr_expect_eq(access(fx.path, F_OK), 0, "a refused create leaves the existing file");
	shm_arena_file_remove(a);

	o.size = 0;
	cr_expect_eq(shm_arena_file_create(&o, &b, why, sizeof(why)), -EINVAL);
	memset(id, 'x', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	o.size = 2 * MIB;
	o.node_id = id;
	cr_expect_eq(shm_arena_file_create(&o, &b, why, sizeof(why)), -EINVAL);
	o.node_id = "n";
	o.data_dir = "/nonexistent/trib-data";
	cr_expect_eq(shm_arena_file_create(&o, &b, why, sizeof(why)), -ENOENT);
	cr_expect_eq(access(fx.path, F_OK), -1, "failed creates leave no file");
	cr_expect_null(b);
}

Test(shm_arena_file, open_of_a_missing_file_is_enoent)
{
	struct shm_arena_file_opts o = fx_opts(0);
	struct shm_arena *a = NULL;
	char why[512];

	cr_expect_eq(shm_arena_file_open(&o, &a, why, sizeof(why)), -ENOENT);
	cr_expect_null(a);
}

Test(shm_arena_file, second_owner_is_refused_with_ebusy)
{
	struct shm_arena_file_opts o = fx_opts(0);
	struct shm_arena *a = fx_create(2 * MIB), *b = NULL;
	char why[512];
	pid_t pid;

	cr_expect_eq(shm_arena_file_open(&o, &b, why, sizeof(why)), -EBUSY);
	cr_expect(strstr(why, "locked by another live process"), "clear error: %s", why);
	cr_expect_null(b);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(shm_arena_file_open(&o, &b, why, sizeof(why)) == -EBUSY ? 0 : 1);
	cr_expect_eq(fx_wait(pid), 0, "another process is refused too");
	shm_arena_destroy(a);
	b = fx_open();
	shm_arena_file_remove(b);
}

Test(shm_arena_file, a_function_holding_the_fd_does_not_hold_the_lock)
{
	struct shm_arena *a = fx_create(2 * MIB), *fn = NULL, *b;

	/* What a function process gets: the mapping fd, by SCM_RIGHTS or posix_spawn. */
	cr_assert_eq(shm_arena_attach(dup(shm_arena_fd(a)), &fn), 0);
	shm_arena_destroy(a);
	b = fx_open();
	shm_arena_destroy(fn);
	shm_arena_file_remove(b);
}

Test(shm_arena_file, kill_9_of_the_owner_releases_the_lock)
{
	struct shm_arena *a;
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct shm_arena_file_opts o = fx_opts(2 * MIB);
		char why[512];

		if (shm_arena_file_create(&o, &a, why, sizeof(why)))
			_exit(1);
		kill(getpid(), SIGKILL);
		_exit(2);
	}
	cr_assert(fx_killed(fx_wait(pid)));
	a = fx_open();
	shm_arena_file_remove(a);
}

Test(shm_arena_file, another_data_dir_is_refused_and_the_file_kept)
{
	struct shm_arena *a = fx_create(2 * MIB), *b = NULL;
	struct shm_arena_file_opts o = fx_opts(0);
	char why[512];

	shm_arena_destroy(a);
	o.data_dir = "/tmp";
	cr_expect_eq(shm_arena_file_open(&o, &b, why, sizeof(why)), -EXDEV);
	cr_expect(strstr(why, "belongs to data dir"), "%s", why);
	cr_expect_null(b);
	cr_expect_eq(access(fx.path, F_OK), 0);
	b = fx_open();
	shm_arena_file_remove(b);
}

/* Patch the closed arena file at fx.path with @patch(base of a shared mapping). */
static void patch_file(void (*patch)(uint8_t *base, int fd))
{
	int fd = open(fx.path, O_RDWR);
	struct stat st;
	uint8_t *p;

	cr_assert_geq(fd, 0);
	cr_assert_eq(fstat(fd, &st), 0);
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	patch(p, fd);
	munmap(p, (size_t)st.st_size);
	close(fd);
}

static struct shm_arena_file_hdr *fhdr_of(uint8_t *base)
{
	return (void *)(base + ((struct shm_arena_hdr *)(void *)base)->file_off);
}

static void flip_magic(uint8_t *b, int fd)
{
	(void)fd;
	((struct shm_arena_hdr *)(void *)b)->magic ^= 1;
}

static void zero_magic(uint8_t *b, int fd)
{
	(void)fd;
	((struct shm_arena_hdr *)(void *)b)->magic = 0;
}

static void bump_abi(uint8_t *b, int fd)
{
	(void)fd;
	((struct shm_arena_hdr *)(void *)b)->version++;
}

static void bump_format(uint8_t *b, int fd)
{
	(void)fd;
	fhdr_of(b)->format++;
}

static void flip_file_magic(uint8_t *b, int fd)
{
	(void)fd;
	fhdr_of(b)->magic ^= 1;
}

static void shrink_nrecs(uint8_t *b, int fd)
{
	(void)fd;
	fhdr_of(b)->nrecs--;
}

static void grow_file(uint8_t *b, int fd)
{
	struct stat st;

	(void)b;
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(ftruncate(fd, st.st_size + (off_t)SHM_HUGE_PAGE), 0);
}

static void clear_dir_nul(uint8_t *b, int fd)
{
	(void)fd;
	memset(fhdr_of(b)->data_dir, 'x', SHM_ARENA_DATA_DIR_MAX);
}

Test(shm_arena_file, corrupt_or_incompatible_files_are_refused_then_moved_aside)
{
	static const struct {
		void (*patch)(uint8_t *, int);
		int rc;
		const char *why;
	} cases[] = {
	    {flip_magic, -EBADMSG, "not a Tributary arena"},
	    {zero_magic, -EBADMSG, "no arena magic"},
	    {bump_abi, -EPROTO, "ABI version"},
	    {bump_format, -EPROTO, "file format"},
	    {flip_file_magic, -EBADMSG, "file header magic"},
	    {shrink_nrecs, -EBADMSG, "journal"},
	    {grow_file, -EBADMSG, "the file has"},
	    {clear_dir_nul, -EBADMSG, "strings"},
	};
	struct shm_arena_file_opts o = fx_opts(0);
	char why[512], aside[512];
	unsigned i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct shm_arena *a = fx_create(4 * MIB), *b = NULL;
		struct stat st;

		shm_arena_destroy(a);
		patch_file(cases[i].patch);
		cr_expect_eq(shm_arena_file_open(&o, &b, why, sizeof(why)), cases[i].rc,
			     "case %u: %s", i, why);
		cr_expect(strstr(why, cases[i].why), "case %u: reason '%s'", i, why);
		cr_expect_null(b);
		cr_expect_eq(access(fx.path, F_OK), 0, "case %u: never silently deleted", i);
		cr_assert_eq(shm_arena_file_move_aside(fx.path, aside, sizeof(aside)), 0);
		cr_expect(strstr(aside, ".corrupt-"), "%s", aside);
		cr_expect_eq(stat(aside, &st), 0, "case %u: the file is kept aside", i);
		cr_expect_eq(access(fx.path, F_OK), -1, "case %u: and its name is free", i);
	}
}

Test(shm_arena_file, move_aside_keeps_earlier_ones_and_refuses_a_live_file)
{
	char first[512], second[512];
	struct shm_arena *a;

	a = fx_create(2 * MIB);
	cr_expect_eq(shm_arena_file_move_aside(fx.path, first, sizeof(first)), -EBUSY);
	shm_arena_destroy(a);
	cr_assert_eq(shm_arena_file_move_aside(fx.path, first, sizeof(first)), 0);
	shm_arena_destroy(fx_create(2 * MIB));
	cr_assert_eq(shm_arena_file_move_aside(fx.path, second, sizeof(second)), 0);
	cr_expect_str_neq(first, second);
	cr_expect_eq(access(first, F_OK), 0, "a second move aside does not overwrite the first");
	cr_expect_eq(access(second, F_OK), 0);
}

/* Create an arena file @name in fx.dir for data dir @data, and close it. */
static void make_arena_file(const char *name, const char *data)
{
	char path[256], why[512];
	struct shm_arena_file_opts o = fx_opts(2 * MIB);
	struct shm_arena *a = NULL;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", fx.dir, name);
	o.path = path;
	o.data_dir = data;
	rc = shm_arena_file_create(&o, &a, why, sizeof(why));
	cr_assert_eq(rc, 0, "%s: %s", path, why);
	shm_arena_destroy(a);
}

static bool exists_in_dir(const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", fx.dir, name);
	return access(path, F_OK) == 0;
}

Test(shm_arena_file, stale_scan_removes_only_files_whose_data_dir_is_gone)
{
	char gone1[] = "/tmp/trib-gone-XXXXXX", gone2[] = "/tmp/trib-gone-XXXXXX";
	char aside[512], path[256], why[512];
	struct shm_arena_file_opts o = fx_opts(2 * MIB);
	struct shm_arena *live = NULL;
	unsigned removed = 99;
	int fd;

	cr_assert_not_null(mkdtemp(gone1));
	cr_assert_not_null(mkdtemp(gone2));
	make_arena_file("tributary-orphan.arena", gone1);
	make_arena_file("tributary-kept.arena", fx.data);
	make_arena_file("tributary-aside.arena", gone1);
	cr_assert_eq(
	    shm_arena_file_move_aside(strcat(strcpy(path, fx.dir), "/tributary-aside.arena"), aside,
				      sizeof(aside)),
	    0);
	snprintf(path, sizeof(path), "%s/tributary-live.arena", fx.dir);
	o.path = path;
	o.data_dir = gone2;
	cr_assert_eq(shm_arena_file_create(&o, &live, why, sizeof(why)), 0, "%s", why);
	fd = open(strcat(strcpy(path, fx.dir), "/tributary-junk.arena"), O_CREAT | O_WRONLY, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "not an arena", 12), 12);
	close(fd);
	cr_assert_eq(rmdir(gone1), 0);
	cr_assert_eq(rmdir(gone2), 0);

	cr_assert_eq(shm_arena_file_scan_stale(fx.dir, &removed), 0);
	cr_expect_eq(removed, 1);
	cr_expect_not(exists_in_dir("tributary-orphan.arena"), "its data dir is gone");
	cr_expect(exists_in_dir("tributary-kept.arena"), "its data dir exists");
	cr_expect(exists_in_dir("tributary-live.arena"), "a live process holds its lock");
	cr_expect(exists_in_dir("tributary-junk.arena"), "not an arena: not ours to remove");
	cr_expect_eq(access(aside, F_OK), 0, "moved-aside files are left for a human");

	shm_arena_destroy(live);
	cr_assert_eq(shm_arena_file_scan_stale(fx.dir, &removed), 0);
	cr_expect_eq(removed, 1, "once its owner is gone, the live one goes too");
	cr_expect_eq(shm_arena_file_scan_stale("/nonexistent/trib", &removed), -ENOENT);
}

/* Runs @fn with stderr sent to a memfd; returns how many WARN lines it logged. */
static int count_warnings(int (*fn)(char *, size_t), char *out, size_t len, int *rc)
{
	int saved = dup(STDERR_FILENO), cap = memfd_create("stderr", MFD_CLOEXEC);
	char buf[4096] = "";
	const char *p;
	int warns = 0;
	ssize_t n;

	cr_assert_geq(cap, 0);
	fflush(stderr);
	dup2(cap, STDERR_FILENO);
	*rc = fn(out, len);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(cap, buf, sizeof(buf) - 1, 0);
	close(cap);
	for (p = buf; n > 0 && (p = strstr(p, "WARN")); p++)
		warns++;
	fprintf(stderr, "%s", buf);
	return warns;
}

/* A hugetlbfs directory that cannot exist or be made: the fallback must be taken. */
static int default_in_proc(char *out, size_t len)
{
	return shm_arena__default_path_in("/proc/trib-no-such-dir", fx.dir, fx.data, out, len);
}

Test(shm_arena_file, default_path_falls_back_to_shm_with_one_warning)
{
	char p1[512], p2[512], link[128];
	int rc;

	cr_expect_eq(count_warnings(default_in_proc, p1, sizeof(p1), &rc), 1);
	cr_assert_eq(rc, 0);
	cr_expect_eq(strncmp(p1, fx.dir, strlen(fx.dir)), 0, "%s is in %s", p1, fx.dir);
	cr_expect(strstr(p1, "/tributary-") && strstr(p1, ".arena"), "%s", p1);

	/* The name derives from the realpath: a symlink to the data dir names the same file. */
	snprintf(link, sizeof(link), "%s/link", fx.dir);
	cr_assert_eq(symlink(fx.data, link), 0);
	cr_assert_eq(
	    shm_arena__default_path_in("/proc/trib-no-such-dir", fx.dir, link, p2, sizeof(p2)), 0);
	cr_expect_str_eq(p1, p2);
	cr_assert_eq(
	    shm_arena__default_path_in("/proc/trib-no-such-dir", fx.dir, fx.dir, p2, sizeof(p2)),
	    0);
	cr_expect_str_neq(p1, p2, "another data dir, another file");
	cr_expect_eq(shm_arena__default_path_in("/proc/x", fx.dir, "/nonexistent/d", p2, 64),
		     -ENOENT);
	cr_expect_eq(shm_arena__default_path_in("/proc/x", fx.dir, fx.data, p2, 8), -ENAMETOOLONG);
}

/* ---- hugetlbfs: root and huge pages ---- */

TestSuite(shm_arena_file_huge, .init = fx_setup_huge, .fini = fx_teardown);

Test(shm_arena_file_huge, default_path_mounts_hugetlbfs_as_root)
{
	char dir[] = "/tmp/trib-mnt-XXXXXX", path[512];
	struct statfs sfs;
	int rc;

	cr_assert_not_null(mkdtemp(dir));
	rc = shm_arena__default_path_in(dir, "/dev/shm", fx.data, path, sizeof(path));
	cr_assert_eq(rc, 0);
	cr_expect_eq(strncmp(path, dir, strlen(dir)), 0, "%s is in %s", path, dir);
	cr_assert_eq(statfs(dir, &sfs), 0);
	cr_expect_eq(sfs.f_type, HUGETLBFS_MAGIC, "the helper mounted hugetlbfs there");
	/* Mounted already: used as it is. */
	cr_assert_eq(shm_arena__default_path_in(dir, "/dev/shm", fx.data, path, sizeof(path)), 0);
	cr_expect_eq(strncmp(path, dir, strlen(dir)), 0);
	umount2(dir, MNT_DETACH);
	rmdir(dir);
}

Test(shm_arena_file_huge, file_on_hugetlbfs_outlives_its_creator_and_gives_pages_back)
{
	struct shm_arena *a;
	struct fx_pool before;
	bool busy;
	uint64_t off = 0;
	int p[2];
	pid_t pid;

	before = fx_pool_before(&busy);
	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct shm_arena_file_opts o = fx_opts(6 * MIB);
		char why[512];

		if (shm_arena_file_create(&o, &a, why, sizeof(why)) || !shm_arena_is_huge(a) ||
		    shm_slot_alloc(a, 5 * MIB, &off))
			_exit(1);
		memset(shm_arena_ptr(a, off), 0xab, 5 * MIB);
		if (write(p[1], &off, sizeof(off)) != (ssize_t)sizeof(off))
			_exit(2);
		kill(getpid(), SIGKILL);
	}
	close(p[1]);
	cr_assert_eq(read(p[0], &off, sizeof(off)), (ssize_t)sizeof(off), "the child failed");
	close(p[0]);
	cr_assert(fx_killed(fx_wait(pid)));

	cr_expect_eq(fx_file_pages(fx.path), 4,
		     "the file holds its 4 pages after its creator died");
	a = fx_open();
	cr_expect(shm_arena_is_huge(a));
	cr_expect_eq(((unsigned char *)shm_arena_ptr(a, off))[0], 0xab);
	cr_expect_eq(((unsigned char *)shm_arena_ptr(a, off))[5 * MIB - 1], 0xab);
	cr_expect_eq(shm_arena_file_remove(a), 0);

	fx_expect_pool(before, busy);
}

static void say_one_more_page_added(uint8_t *b, int fd)
{
	(void)fd;
	fhdr_of(b)->huge_added++;
}

Test(shm_arena_file_huge, pages_a_dead_creator_added_are_given_back_by_the_next_owner)
{
	struct shm_arena *a;
	struct fx_pool before;
	bool busy;
	FILE *f;
	long nr;

	before = fx_pool_before(&busy);
	shm_arena_destroy(fx_create(2 * MIB));
	/* As if the creator had raised nr_hugepages by one more page and then been killed. */
	nr = fx_read_long(FX_HUGE_2M "nr_hugepages");
	f = fopen(FX_HUGE_2M "nr_hugepages", "we");
	cr_assert_not_null(f);
	cr_assert_gt(fprintf(f, "%ld\n", nr + 1), 0);
	cr_assert_eq(fclose(f), 0);
	if (fx_read_long(FX_HUGE_2M "nr_hugepages") != nr + 1)
		cr_skip_test("the kernel could not add one huge page (memory fragmented?)");
	patch_file(say_one_more_page_added);

	a = fx_open();
	cr_expect_eq(shm_arena_file_remove(a), 0);
	fx_expect_pool(before, busy);
}
