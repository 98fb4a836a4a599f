// SPDX-License-Identifier: MIT
/* Tests for the on-disk model store: round trip, atomicity, latest round, mkdir -p, modes. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trib_store.h"
#include "trib_alloc.h"
#include "trib_blob.h"

/* Each test gets its own data directory, removed afterwards. */
static char tdir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	strcpy(tdir, "/tmp/trib-rt-store-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
}

static void teardown(void)
{
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(core_store, .init = setup, .fini = teardown);

/* A path under the test directory. */
static const char *tpath(char *buf, const char *rel)
{
	snprintf(buf, PATH_MAX, "%s/%s", tdir, rel);
	return buf;
}

/* Assert that @dir holds exactly the names in @want (no temp files or other leftovers). */
static void assert_dir_holds(const char *dir, const char *const *want, size_t nwant)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t seen = 0, i;
	bool ok;

	cr_assert_not_null(d, "opendir %s", dir);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		for (ok = false, i = 0; i < nwant; i++)
			ok = ok || !strcmp(de->d_name, want[i]);
		cr_assert(ok, "unexpected entry %s in %s", de->d_name, dir);
		seen++;
	}
	closedir(d);
	cr_assert_eq(seen, nwant);
}

Test(core_store, round_trip_large_model)
{
	const size_t data_len = 64u << 20;
	static const char hdr[] = "\x10\0\0\0\0\0\0\0{\"w\":{}}        ";
	char path[PATH_MAX], want[PATH_MAX], dir[PATH_MAX];
	unsigned char *data, *back;
	struct stat sb;
	size_t len, i;
	uint32_t *w;

	data = trib_malloc(data_len);
	cr_assert_not_null(data);
	w = (uint32_t *)data;
	for (i = 0; i < data_len / 4; i++)
		w[i] = (uint32_t)(i * 2654435761u);

	cr_assert_eq(trib_store_write_model(tdir, "big", 7, hdr, sizeof(hdr) - 1, data, data_len,
					  path, sizeof(path)),
		     0);
	snprintf(want, sizeof(want), "%s/jobs/big/round-7.safetensors", tdir);
	cr_assert_str_eq(path, want);
	cr_assert_eq(stat(path, &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0600);
	cr_assert_eq((size_t)sb.st_size, sizeof(hdr) - 1 + data_len);
	cr_assert_eq(stat(tpath(dir, "jobs/big"), &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0700);

	cr_assert_eq(trib_store_read_model(tdir, "big", 7, (void **)&back, &len), 0);
	cr_assert_eq(len, sizeof(hdr) - 1 + data_len);
	cr_assert_eq(memcmp(back, hdr, sizeof(hdr) - 1), 0);
	cr_assert_eq(memcmp(back + sizeof(hdr) - 1, data, data_len), 0);
	trib_free(back);
	trib_free(data);
}

/*
 * A model blob of 1 MiB or more has page-aligned data, written with O_DIRECT (its last partial
 * page through the page cache): the file must be the same bytes, at any length past a page.
 */
Test(core_store, aligned_blob_round_trips_past_the_page_cache)
{
	static const size_t lens[] = { TRIB_BLOB_ALIGN_MIN, (3u << 20) + 100, (5u << 20) + 4095 };
	const size_t hdr_len = 88;

	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		struct trib_blob *b = trib_blob_new(lens[k]);
		unsigned char *back;
		size_t len;

		cr_assert_not_null(b);
		cr_assert_eq((uintptr_t)b->data % TRIB_BLOB_ALIGN, 0, "blob data not page-aligned");
		for (size_t i = 0; i < lens[k]; i++)
			b->data[i] = (char)(i * 131 + k);
		cr_assert_eq(trib_store_write_model(tdir, "direct", (uint32_t)k, b->data, hdr_len,
						  b->data + hdr_len, lens[k] - hdr_len, NULL, 0),
			     0);
		cr_assert_eq(trib_store_read_model(tdir, "direct", (uint32_t)k, (void **)&back,
						   &len),
			     0);
		cr_assert_eq(len, lens[k]);
		cr_assert_eq(memcmp(back, b->data, len), 0, "length %zu: bytes differ", lens[k]);
		trib_free(back);
		trib_blob_release(b);
	}
	/* A small blob is not aligned on purpose, and still freed whole (LSan). */
	trib_blob_release(trib_blob_new(100));
}

Test(core_store, empty_parts_and_path_out_optional)
{
	void *back;
	size_t len;

	cr_assert_eq(trib_store_write_model(tdir, "e", 0, NULL, 0, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_store_read_model(tdir, "e", 0, &back, &len), 0);
	cr_assert_eq(len, 0);
	trib_free(back);
	cr_assert_eq(trib_store_write_model(tdir, "e", 1, "hdr", 3, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_store_write_model(tdir, "e", 2, NULL, 3, NULL, 0, NULL, 0), -EINVAL);
}

Test(core_store, no_temp_files_left_behind)
{
	static const char *const want[] = { "round-0.safetensors", "round-1.safetensors",
					    "round-2.safetensors" };
	char dir[PATH_MAX];
	uint32_t r;
	int i;

	for (i = 0; i < 6; i++) {
		r = (uint32_t)(i % 3);
		cr_assert_eq(trib_store_write_model(tdir, "j", r, "h", 1, &i, sizeof(i), NULL, 0), 0);
	}
	assert_dir_holds(tpath(dir, "jobs/j"), want, 3);
}

Test(core_store, rewrite_replaces_whole_file)
{
	char big[4096], *back;
	size_t len;

	memset(big, 'A', sizeof(big));
	cr_assert_eq(trib_store_write_model(tdir, "j", 1, NULL, 0, big, sizeof(big), NULL, 0), 0);
	cr_assert_eq(trib_store_write_model(tdir, "j", 1, "hh", 2, "BB", 2, NULL, 0), 0);
	cr_assert_eq(trib_store_read_model(tdir, "j", 1, (void **)&back, &len), 0);
	cr_assert_eq(len, 4, "no tail of the longer old file survives");
	cr_assert_eq(memcmp(back, "hhBB", 4), 0);
	trib_free(back);
}

/*
 * Tests run as root, so a read-only directory does not make a write fail;
 * a directory squatting on the target name makes the final rename fail.
 */
Test(core_store, failed_write_leaves_previous_model_intact)
{
	static const char *const want[] = { "round-1.safetensors", "round-2.safetensors" };
	char dir[PATH_MAX], p[PATH_MAX], *back;
	size_t len;
	uint32_t r;
	int err;

	cr_assert_eq(trib_store_write_model(tdir, "j", 1, "H1", 2, "model-one", 9, NULL, 0), 0);
	cr_assert_eq(mkdir(tpath(p, "jobs/j/round-2.safetensors"), 0700), 0);

	err = trib_store_write_model(tdir, "j", 2, "H2", 2, "model-two", 9, p, sizeof(p));
	cr_assert(err == -EISDIR || err == -ENOTEMPTY || err == -EEXIST, "got %d", err);

	cr_assert_eq(trib_store_read_model(tdir, "j", 1, (void **)&back, &len), 0);
	cr_assert_eq(len, 11);
	cr_assert_eq(memcmp(back, "H1model-one", 11), 0);
	trib_free(back);
	cr_assert_eq(trib_store_read_model(tdir, "j", 2, (void **)&back, &len), -EISDIR);
	cr_assert_eq(trib_store_latest_round(tdir, "j", &r), 0);
	cr_assert_eq(r, 1, "a directory is not a model");
	assert_dir_holds(tpath(dir, "jobs/j"), want, 2);
}

Test(core_store, job_dir_that_is_a_file_fails)
{
	char p[PATH_MAX];
	int fd;

	cr_assert_eq(trib_mkdir_p(tpath(p, "jobs"), 0700), 0);
	fd = open(tpath(p, "jobs/f"), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(trib_store_write_model(tdir, "f", 0, "x", 1, NULL, 0, NULL, 0), -ENOTDIR);
}

Test(core_store, bad_job_names_rejected)
{
	static const char *const bad[] = { "../x", "a/b", "", ".", "..", "-x", ".hidden" };
	char p[PATH_MAX];
	void *back;
	size_t i, len;
	uint32_t r;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(trib_store_write_model(tdir, bad[i], 0, "x", 1, NULL, 0, NULL, 0),
			     -EINVAL, "%s", bad[i]);
		cr_assert_eq(trib_store_read_model(tdir, bad[i], 0, &back, &len), -EINVAL);
		cr_assert_eq(trib_store_latest_round(tdir, bad[i], &r), -EINVAL);
		cr_assert_eq(trib_store_model_path(tdir, bad[i], 0, p, sizeof(p)), -EINVAL);
	}
	cr_assert_eq(trib_store_write_model(NULL, "ok", 0, "x", 1, NULL, 0, NULL, 0), -EINVAL);
}

Test(core_store, path_out_too_small_writes_nothing)
{
	char small[8];
	uint32_t r;

	cr_assert_eq(trib_store_write_model(tdir, "j", 0, "x", 1, NULL, 0, small, sizeof(small)),
		     -ENAMETOOLONG);
	cr_assert_eq(trib_store_latest_round(tdir, "j", &r), -ENOENT);
}

Test(core_store, read_missing_returns_enoent)
{
	void *back;
	size_t len;

	cr_assert_eq(trib_store_read_model(tdir, "nojob", 0, &back, &len), -ENOENT);
	cr_assert_eq(trib_store_write_model(tdir, "j", 0, "x", 1, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_store_read_model(tdir, "j", 1, &back, &len), -ENOENT);
}

Test(core_store, latest_round)
{
	static const char *const noise[] = {
		"round-99.safetensors.tmp", ".round-98.safetensors.tmp.1.0",
		"round-097.safetensors",
		"round-x.safetensors", "round-.safetensors", "round--1.safetensors",
		"round-4294967296.safetensors", "Round-96.safetensors", "round-95.safetensor",
		"round-94.safetensors~",
	};
	char p[PATH_MAX], f[PATH_MAX + 64];
	uint32_t r = 12345;
	size_t i;
	int fd;

	cr_assert_eq(trib_store_latest_round(tdir, "j", &r), -ENOENT, "no directory");
	cr_assert_eq(trib_mkdir_p(tpath(p, "jobs/j"), 0700), 0);
	cr_assert_eq(trib_store_latest_round(tdir, "j", &r), -ENOENT, "empty directory");
	for (i = 0; i < sizeof(noise) / sizeof(noise[0]); i++) {
		snprintf(f, sizeof(f), "%s/%s", p, noise[i]);
		fd = open(f, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		cr_assert_geq(fd, 0);
		close(fd);
	}
	cr_assert_eq(trib_store_latest_round(tdir, "j", &r), -ENOENT, "only look-alikes");
	cr_assert_eq(r, 12345, "untouched on failure");

	cr_assert_eq(trib_store_write_model(tdir, "j", 2, "x", 1, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_store_write_model(tdir, "j", 10, "x", 1, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_store_write_model(tdir, "j", 9, "x", 1, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_store_write_model(tdir, "j", 0, "x", 1, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_store_latest_round(tdir, "j", &r), 0);
	cr_assert_eq(r, 10, "numeric, not lexical, order");
	cr_assert_eq(trib_store_write_model(tdir, "j", UINT32_MAX, "x", 1, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_store_latest_round(tdir, "j", &r), 0);
	cr_assert_eq(r, UINT32_MAX);
}

Test(core_store, mkdir_p)
{
	char p[PATH_MAX], q[PATH_MAX];
	struct stat sb;
	int fd;

	cr_assert_eq(trib_mkdir_p(tpath(p, "a/b/c"), 0700), 0);
	cr_assert_eq(stat(p, &sb), 0);
	cr_assert(S_ISDIR(sb.st_mode));
	cr_assert_eq(sb.st_mode & 0777, 0700);
	cr_assert_eq(stat(tpath(q, "a"), &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0700, "parents get the mode too");
	cr_assert_eq(trib_mkdir_p(p, 0700), 0, "existing is fine");
	cr_assert_eq(trib_mkdir_p(tpath(p, "a//b/d/"), 0700), 0, "doubled and trailing slashes");
	cr_assert_eq(stat(tpath(q, "a/b/d"), &sb), 0);
	cr_assert_eq(trib_mkdir_p(tdir, 0700), 0);

	fd = open(tpath(q, "file"), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(trib_mkdir_p(tpath(p, "file"), 0700), -ENOTDIR);
	cr_assert_eq(trib_mkdir_p(tpath(p, "file/x/y"), 0700), -ENOTDIR);
	cr_assert_eq(trib_mkdir_p("", 0700), -ENOENT);
	cr_assert_eq(trib_mkdir_p(NULL, 0700), -EINVAL);
}

Test(core_store, write_file_atomic_mode_0600)
{
	static const char *const want[] = { "admin.token" };
	char p[PATH_MAX], buf[64];
	struct stat sb;
	mode_t old;
	ssize_t n;
	int fd;

	/* An existing, world-readable file is replaced by an owner-only one. */
	fd = open(tpath(p, "admin.token"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "old-token-that-is-longer", 24), 24);
	close(fd);
	cr_assert_eq(chmod(p, 0644), 0);

	old = umask(0);
	cr_assert_eq(trib_write_file_atomic(p, "secret\n", 7, 0600), 0);
	umask(old);
	cr_assert_eq(stat(p, &sb), 0);
	cr_assert(S_ISREG(sb.st_mode));
	cr_assert_eq(sb.st_mode & 07777, 0600, "mode is exact whatever the umask");
	fd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	cr_assert_eq(n, 7);
	cr_assert_eq(memcmp(buf, "secret\n", 7), 0);
	assert_dir_holds(tdir, want, 1);

	cr_assert_eq(trib_write_file_atomic(tpath(p, "missing/dir/f"), "x", 1, 0600), -ENOENT);
	cr_assert_eq(trib_write_file_atomic(tpath(p, "empty"), NULL, 0, 0640), 0);
	cr_assert_eq(stat(p, &sb), 0);
	cr_assert_eq(sb.st_size, 0);
	cr_assert_eq(sb.st_mode & 07777, 0640);
	cr_assert_eq(trib_write_file_atomic(tpath(p, "dir/"), "x", 1, 0600), -EISDIR);
}

/* Create @rel (under the test dir) with a few bytes. */
static void touch(const char *rel)
{
	char p[PATH_MAX];
	int fd = open(tpath(p, rel), O_WRONLY | O_CREAT | O_EXCL, 0600);

	cr_assert_geq(fd, 0, "create %s: %s", rel, strerror(errno));
	cr_assert_eq(write(fd, "x", 1), 1);
	close(fd);
}

/* The pid of a process that has exited (and been reaped): its temp files are litter. */
static long dead_pid(void)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(0);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	return (long)pid;
}

Test(core_store, sweep_tmp_removes_only_leftover_temp_names)
{
	static const char *const keep[] = {
		"round-3.safetensors", ".round-3.safetensors.tmp", ".round-3.safetensors.tmp.12",
		".tmp.12.3", "round-3.safetensors.tmp.12.3", ".x.tmp.12.3a", ".x.tmp..3",
		".dir.tmp.12.3", ".live.tmp.1.0", "server-state-v2.bin",
	};
	char p[PATH_MAX], name[128];
	long dead = dead_pid();
	unsigned n = 99;

	touch("round-3.safetensors");
	touch(".round-3.safetensors.tmp");
	touch(".round-3.safetensors.tmp.12");
	touch(".tmp.12.3");
	touch("round-3.safetensors.tmp.12.3");
	touch(".x.tmp.12.3a");
	touch(".x.tmp..3");
	touch("server-state-v2.bin");
	/* pid 1 is alive and not us: another writer's file is left alone. */
	touch(".live.tmp.1.0");
	cr_assert_eq(mkdir(tpath(p, ".dir.tmp.12.3"), 0700), 0, "a directory is never removed");
	/* What write_atomic_iov leaves when it is killed: ours (a past life) and a dead pid's. */
	snprintf(name, sizeof(name), ".round-4.safetensors.tmp.%ld.0", (long)getpid());
	touch(name);
	snprintf(name, sizeof(name), ".round-4.safetensors.tmp.%ld.17", dead);
	touch(name);
	snprintf(name, sizeof(name), ".server-state-v5.bin.tmp.%ld.2", dead);
	touch(name);
	cr_assert_eq(trib_store_sweep_tmp(tdir, &n), 0);
	cr_assert_eq(n, 3);
	assert_dir_holds(tdir, keep, sizeof(keep) / sizeof(keep[0]));
	cr_assert_eq(trib_store_sweep_tmp(tdir, &n), 0);
	cr_assert_eq(n, 0, "a second sweep finds nothing");
	cr_assert_eq(trib_store_sweep_tmp(tpath(p, "missing"), &n), -ENOENT);
}

Test(core_store, sweep_covers_data_dir_and_every_job_dir)
{
	static const char *const top[] = { "jobs", "admin-token", "notes" };
	static const char *const a[] = { "round-0.safetensors" };
	static const char *const none[] = { NULL };
	char p[PATH_MAX], name[160];
	long dead = dead_pid();
	unsigned n = 0;

	cr_assert_eq(trib_store_write_model(tdir, "a", 0, "h", 1, NULL, 0, NULL, 0), 0);
	cr_assert_eq(trib_mkdir_p(tpath(p, "jobs/b"), 0700), 0);
	touch("admin-token");
	cr_assert_eq(mkdir(tpath(p, "notes"), 0700), 0);
	snprintf(name, sizeof(name), ".admin-token.tmp.%ld.0", dead);
	touch(name);
	for (int i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "jobs/a/.round-1.safetensors.tmp.%ld.%d", dead, i);
		touch(name);
		snprintf(name, sizeof(name), "jobs/b/.round-%d.safetensors.tmp.%ld.%d", i, dead,
			 i);
		touch(name);
	}
	/* Not a job directory (not a valid job name): left alone. */
	snprintf(name, sizeof(name), "notes/.x.tmp.%ld.0", dead);
	touch(name);
	cr_assert_eq(trib_store_sweep(tdir, &n), 0);
	cr_assert_eq(n, 5);
	assert_dir_holds(tdir, top, 3);
	assert_dir_holds(tpath(p, "jobs/a"), a, 1);
	assert_dir_holds(tpath(p, "jobs/b"), none, 0);
	cr_assert_eq(trib_store_sweep(tpath(p, "nothing-here"), &n), 0, "no data dir: nothing");
	cr_assert_eq(n, 0);
}
