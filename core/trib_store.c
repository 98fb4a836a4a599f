// SPDX-License-Identifier: MIT
/* The on-disk model store: crash-safe (temp file, fsync, rename, fsync dir) round files per job. */
#include "trib_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "trib_name.h"
#include "trib_alloc.h"
#include "trib_log.h"

#define ROUND_PREFIX "round-"
#define ROUND_SUFFIX ".safetensors"

/* Makes temp names unique between threads of one process; the pid does it between processes. */
static atomic_uint tmp_seq;

static int mkdir_one(const char *path, mode_t mode)
{
	struct stat sb;

	if (mkdir(path, mode) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	if (stat(path, &sb) < 0)
		return -errno;
	return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}

int trib_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len;
	char *p;
	int err;

	if (!path)
		return -EINVAL;
	len = strlen(path);
	if (len == 0)
		return -ENOENT;
	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	while (len > 1 && buf[len - 1] == '/')
		buf[--len] = '\0';
	for (p = buf + 1; *p; p++) {
		if (*p != '/' || p[-1] == '/')
			continue;
		*p = '\0';
		err = mkdir_one(buf, mode);
		*p = '/';
		if (err)
			return err;
	}
	return mkdir_one(buf, mode);
}

/* Write every byte of @iov (modified in place) to @fd, across partial writes and EINTR. */
static int writev_all(int fd, struct iovec *iov, int iovcnt)
{
	ssize_t n;
	size_t left;

	while (iovcnt > 0) {
		if (iov->iov_len == 0) {
			iov++;
			iovcnt--;
			continue;
		}
		n = writev(fd, iov, iovcnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		for (left = (size_t)n; left > 0;) {
			if (left >= iov->iov_len) {
				left -= iov->iov_len;
				iov++;
				iovcnt--;
			} else {
				iov->iov_base = (char *)iov->iov_base + left;
				iov->iov_len -= left;
				left = 0;
			}
		}
	}
	return 0;
}

/*
 * A model is tens of MB written once, on the event loop, at the end of its round. Through the
 * page cache that is a copy into freshly allocated pages: 46.8 MB took ~115 ms of CPU there under
 * load, the largest part of a round's tail (docs/BENCHMARKS.md, "The round against its own
 * ingest"). With O_DIRECT the device reads the caller's pages and the CPU copies nothing. Only
 * for one page-aligned buffer of STORE_DIRECT_MIN bytes or more (a trib_blob's data is, see
 * trib_blob.h); its last partial page goes through the page cache. The fsync that follows makes
 * both durable as before, so a crash leaves the same states: the temp file or the renamed one.
 */
#define STORE_DIRECT_ALIGN 4096u
#define STORE_DIRECT_MIN (1u << 20)

/* pwrite @buf[@off, @len) at file offset @off, all of it. 0 or -errno. */
static int pwrite_all(int fd, const char *buf, size_t off, size_t len)
{
	ssize_t n;

	while (off < len) {
		n = pwrite(fd, buf + off, len - off, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		off += (size_t)n;
	}
	return 0;
}

/*
 * Write @buf (@len bytes) at offset 0 of the empty file @fd, its whole pages with O_DIRECT. A
 * filesystem that has no O_DIRECT (tmpfs before Linux 6.6, some FUSE) refuses the flag or a
 * write with EINVAL: what is left is then written buffered, as before, not a failure.
 * Returns 0 or -errno.
 */
static int write_direct(int fd, const char *buf, size_t len)
{
	size_t whole = len & ~(size_t)(STORE_DIRECT_ALIGN - 1), off = 0;
	int fl = fcntl(fd, F_GETFL);
	ssize_t n;

	if (fl < 0)
		return -errno;
	if (fcntl(fd, F_SETFL, fl | O_DIRECT) < 0)
		return pwrite_all(fd, buf, 0, len);
	/* A short write ends the direct part: what is left is written through the page cache. */
	while (off < whole && off % STORE_DIRECT_ALIGN == 0) {
		n = pwrite(fd, buf + off, whole - off, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL)
			break; /* refused as direct I/O: the rest through the page cache */
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		off += (size_t)n;
	}
	if (fcntl(fd, F_SETFL, fl) < 0)
		return -errno;
	return pwrite_all(fd, buf, off, len);
}

/* Whether @iov is one page-aligned run of memory worth writing past the page cache. */
static bool direct_worth(const struct iovec *iov, int iovcnt, size_t *len)
{
	const char *end = iov[0].iov_base;

	*len = 0;
	if ((uintptr_t)end % STORE_DIRECT_ALIGN)
		return false;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len && iov[i].iov_base != end)
			return false;
		end += iov[i].iov_len;
		*len += iov[i].iov_len;
	}
	return *len >= STORE_DIRECT_MIN;
}

static int fsync_dir(const char *dir)
{
	int fd, err = 0;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		err = -errno;
	close(fd);
	return err;
}

/*
 * The atomic replace behind both public writers: @iov (borrowed, modified) is
 * written to a fresh temp file beside @path, made durable, renamed over @path,
 * and the rename made durable with an fsync of the directory.
 */
static int write_atomic_iov(const char *path, struct iovec *iov, int iovcnt, mode_t mode)
{
	char dir[PATH_MAX], tmp[PATH_MAX];
	const char *slash, *base;
	int fd, n, err, tries;
	size_t len;

	slash = strrchr(path, '/');
	if (slash == path) {
		strcpy(dir, "/");
		base = path + 1;
	} else if (slash) {
		if ((size_t)(slash - path) >= sizeof(dir))
			return -ENAMETOOLONG;
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
		base = slash + 1;
	} else {
		strcpy(dir, ".");
		base = path;
	}
	if (!base[0])
		return -EISDIR;

	/* O_EXCL never reuses a name; a leftover from a dead process with our pid is skipped. */
	for (tries = 0;; tries++) {
		n = snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%ld.%u", dir, base, (long)getpid(),
			     atomic_fetch_add(&tmp_seq, 1));
		if (n < 0 || (size_t)n >= sizeof(tmp))
			return -ENAMETOOLONG;
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 07777);
		if (fd >= 0)
			break;
		if (errno != EEXIST || tries >= 16)
			return -errno;
	}
	/* open() applies the umask; the caller asked for exactly @mode. */
	if (fchmod(fd, mode & 07777) < 0) {
		err = -errno;
		goto err_unlink;
	}
	if (iovcnt > 0 && direct_worth(iov, iovcnt, &len))
		err = write_direct(fd, iov[0].iov_base, len);
	else
		err = writev_all(fd, iov, iovcnt);
	if (err)
		goto err_unlink;
	if (fsync(fd) < 0) {
		err = -errno;
		goto err_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		err = -errno;
		goto err_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		err = -errno;
		goto err_unlink;
	}
	/* The new file is in place; what remains is making the rename survive a crash. */
	return fsync_dir(dir);

err_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return err;
}

int trib_write_file_atomic(const char *path, const void *buf, size_t len, mode_t mode)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	if (!path || !path[0] || (!buf && len))
		return -EINVAL;
	return write_atomic_iov(path, &iov, 1, mode);
}

/* DATA_DIR/jobs/{job} into @out; checks the job name, which becomes a path component. */
static int job_dir(const char *data_dir, const char *job, char *out, size_t cap)
{
	int n;

	if (!data_dir || !data_dir[0] || !trib_job_name_valid(job))
		return -EINVAL;
	n = snprintf(out, cap, "%s/jobs/%s", data_dir, job);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return 0;
}

int trib_store_model_path(const char *data_dir, const char *job, uint32_t round, char *path,
			size_t cap)
{
	char dir[PATH_MAX];
	int n, err;

	if (!path)
		return -EINVAL;
	err = job_dir(data_dir, job, dir, sizeof(dir));
	if (err)
		return err;
	n = snprintf(path, cap, "%s/" ROUND_PREFIX "%u" ROUND_SUFFIX, dir, round);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return 0;
}

int trib_store_write_model(const char *data_dir, const char *job, uint32_t round, const void *hdr,
			 size_t hdr_len, const void *data, size_t data_len, char *path_out,
			 size_t path_cap)
{
	struct iovec iov[2] = {
		{ .iov_base = (void *)hdr, .iov_len = hdr_len },
		{ .iov_base = (void *)data, .iov_len = data_len },
	};
	char dir[PATH_MAX], path[PATH_MAX];
	int err;

	if ((!hdr && hdr_len) || (!data && data_len))
		return -EINVAL;
	err = job_dir(data_dir, job, dir, sizeof(dir));
	if (err)
		return err;
	err = trib_store_model_path(data_dir, job, round, path, sizeof(path));
	if (err)
		return err;
	/* Refuse before writing rather than store a model the caller cannot name. */
	if (path_out && strlen(path) >= path_cap)
		return -ENAMETOOLONG;
	err = trib_mkdir_p(dir, 0700);
	if (err) {
		trib_error("store: job %s: mkdir %s: %s", job, dir, strerror(-err));
		return err;
	}
	err = write_atomic_iov(path, iov, 2, 0600);
	if (err) {
		trib_error("store: job %s round %u: write %s: %s", job, round, path,
			   strerror(-err));
		return err;
	}
	if (path_out)
		memcpy(path_out, path, strlen(path) + 1);
	trib_debug("store: job %s round %u: %zu bytes to %s", job, round, hdr_len + data_len,
		   path);
	return 0;
}

int trib_store_read_model(const char *data_dir, const char *job, uint32_t round, void **buf,
			size_t *len)
{
	char path[PATH_MAX];
	struct stat sb;
	size_t size, got = 0;
	ssize_t n;
	char *p;
	int fd, err;

	if (!buf || !len)
		return -EINVAL;
	err = trib_store_model_path(data_dir, job, round, path, sizeof(path));
	if (err)
		return err;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0) {
		err = -errno;
		goto err_close;
	}
	if (!S_ISREG(sb.st_mode)) {
		err = S_ISDIR(sb.st_mode) ? -EISDIR : -EINVAL;
		goto err_close;
	}
	if ((uintmax_t)sb.st_size > SIZE_MAX) {
		err = -EFBIG;
		goto err_close;
	}
	size = (size_t)sb.st_size;
	p = trib_malloc(size);
	if (!p) {
		err = -ENOMEM;
		goto err_close;
	}
	while (got < size) {
		n = read(fd, p + got, size - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			goto err_free;
		}
		/* Round files are replaced by rename, never truncated: a short file is damage. */
		if (n == 0) {
			err = -EIO;
			goto err_free;
		}
		got += (size_t)n;
	}
	close(fd);
	*buf = p;
	*len = size;
	return 0;

err_free:
	trib_free(p);
err_close:
	close(fd);
	return err;
}

/* Parse exactly "round-N.safetensors" as written by trib_store_model_path (no sign, no leading 0). */
static bool parse_round(const char *name, uint32_t *round)
{
	const char *p;
	uint64_t v = 0;

	if (strncmp(name, ROUND_PREFIX, strlen(ROUND_PREFIX)))
		return false;
	p = name + strlen(ROUND_PREFIX);
	if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return false;
	}
	if (strcmp(p, ROUND_SUFFIX))
		return false;
	*round = (uint32_t)v;
	return true;
}

int trib_store_latest_round(const char *data_dir, const char *job, uint32_t *round)
{
	char dir[PATH_MAX];
	struct dirent *de;
	struct stat sb;
	bool found = false;
	uint32_t best = 0, r;
	DIR *d;
	int err;

	if (!round)
		return -EINVAL;
	err = job_dir(data_dir, job, dir, sizeof(dir));
	if (err)
		return err;
	d = opendir(dir);
	if (!d)
		return -errno;
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de)
			break;
		if (!parse_round(de->d_name, &r))
			continue;
		/* Only regular files are models; a directory squatting on the name is not. */
		if (de->d_type != DT_REG) {
			if (de->d_type != DT_UNKNOWN && de->d_type != DT_LNK)
				continue;
			if (fstatat(dirfd(d), de->d_name, &sb, 0) < 0 || !S_ISREG(sb.st_mode))
				continue;
		}
		if (!found || r > best)
			best = r;
		found = true;
	}
	err = errno ? -errno : 0;
	closedir(d);
	if (err)
		return err;
	if (!found)
		return -ENOENT;
	*round = best;
	return 0;
}

/*
 * Whether @name is a temp name of write_atomic_iov, ".{base}.tmp.{pid}.{seq}"
 * with a non-empty base; *pid gets the pid.
 */
static bool parse_tmp(const char *name, long *pid)
{
	size_t len = strlen(name), i = len, seq_at, pid_at;
	long v = 0;

	if (len < 1 || name[0] != '.')
		return false;
	/* Walk back over "{seq}", ".", "{pid}", then ".tmp". */
	while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9')
		i--;
	seq_at = i;
	if (seq_at == len || i == 0 || name[i - 1] != '.')
		return false;
	i--;
	while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9')
		i--;
	pid_at = i;
	if (pid_at == seq_at - 1 || pid_at < 6 || strncmp(name + pid_at - 5, ".tmp.", 5))
		return false;
	/* A non-empty base between the leading dot and ".tmp.". */
	if (pid_at - 5 < 2)
		return false;
	for (i = pid_at; i < seq_at - 1; i++) {
		if (v > (long)INT_MAX / 10)
			return false;
		v = v * 10 + (name[i] - '0');
	}
	*pid = v;
	return true;
}

/* Another live process with @pid may still be writing its temp file. */
static bool pid_alive_other(long pid)
{
	if (pid <= 0 || pid > INT_MAX || pid == (long)getpid())
		return false;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int trib_store_sweep_tmp(const char *dir, unsigned *removed)
{
	struct dirent *de;
	struct stat sb;
	unsigned n = 0;
	long pid;
	DIR *d;
	int err;

	if (!dir || !removed)
		return -EINVAL;
	*removed = 0;
	d = opendir(dir);
	if (!d)
		return -errno;
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de)
			break;
		if (!parse_tmp(de->d_name, &pid) || pid_alive_other(pid))
			continue;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			n++;
		else if (errno != ENOENT)
			trib_warn("store: %s/%s: cannot remove this leftover temporary file: %s",
				  dir, de->d_name, strerror(errno));
	}
	err = errno ? -errno : 0;
	closedir(d);
	*removed = n;
	return err;
}

/* Sweep @dir (named @what in the log); -ENOENT is nothing to sweep. */
static int sweep_one(const char *dir, const char *what, unsigned *total)
{
	unsigned n = 0;
	int err = trib_store_sweep_tmp(dir, &n);

	if (err == -ENOENT)
		return 0;
	if (err) {
		trib_error("store: %s: cannot look for leftover temporary files: %s", dir,
			   strerror(-err));
		return err;
	}
	if (n)
		trib_info("store: %s: removed %u temporary file%s left by interrupted writes", what,
			  n, n == 1 ? "" : "s");
	*total += n;
	return 0;
}

int trib_store_sweep(const char *data_dir, unsigned *removed)
{
	char dir[PATH_MAX], what[PATH_MAX + 8];
	unsigned total = 0;
	struct dirent *de;
	int n, err, first = 0;
	DIR *d;

	if (!data_dir || !data_dir[0])
		return -EINVAL;
	err = sweep_one(data_dir, data_dir, &total);
	if (err)
		first = err;
	n = snprintf(dir, sizeof(dir), "%s/jobs", data_dir);
	if (n < 0 || (size_t)n >= sizeof(dir))
		return -ENAMETOOLONG;
	d = opendir(dir);
	if (!d && errno != ENOENT) {
		err = -errno;
		trib_error("store: %s: %s", dir, strerror(-err));
		return first ? first : err;
	}
	while (d) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno && !first)
				first = -errno;
			break;
		}
		if (!trib_job_name_valid(de->d_name))
			continue;
		n = snprintf(dir, sizeof(dir), "%s/jobs/%s", data_dir, de->d_name);
		if (n < 0 || (size_t)n >= sizeof(dir))
			continue;
		snprintf(what, sizeof(what), "job %s", de->d_name);
		err = sweep_one(dir, what, &total);
		/* A job name that is a plain file is not a job directory. */
		if (err && err != -ENOTDIR && !first)
			first = err;
	}
	if (d)
		closedir(d);
	if (removed)
		*removed = total;
	return first;
}

/* Remove @dir's files, then @dir (a job's model directory holds files only). */
static int dir_purge(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX];
	int err = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path)) {
			err = err ? err : -ENAMETOOLONG;
			continue;
		}
		if (unlink(path) && !err)
			err = -errno;
	}
	closedir(d);
	if (rmdir(dir) && !err)
		err = -errno;
	return err;
}

int trib_store_job_release(const char *data_dir, const char *job, long long id, bool purge,
			   char *where, size_t cap)
{
	char dir[PATH_MAX], kept[PATH_MAX];
	int err;

	if (where && cap)
		where[0] = '\0';
	err = job_dir(data_dir, job, dir, sizeof(dir));
	if (err)
		return err;
	if (purge)
		return dir_purge(dir);
	if (snprintf(kept, sizeof(kept), "%s/deleted", data_dir) >= (int)sizeof(kept))
		return -ENAMETOOLONG;
	err = trib_mkdir_p(kept, 0700);
	if (err)
		return err;
	if (snprintf(kept, sizeof(kept), "%s/deleted/%s.%lld", data_dir, job, id) >=
	    (int)sizeof(kept))
		return -ENAMETOOLONG;
	if (rename(dir, kept))
		return errno == ENOENT ? 0 : -errno;
	if (where)
		snprintf(where, cap, "%s", kept);
	return 0;
}
