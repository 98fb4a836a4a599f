// SPDX-License-Identifier: MIT
/* A secure round's state log: records appended as acknowledged, read back at start. */
#include "rt_secagg_log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt_wal.h"
#include "trib_alloc.h"
#include "trib_log.h"

struct rt_salog {
	int fd;
	bool durable;
	uint64_t end; /* the offset after the last record appended whole */
};

struct salog_head {
	uint32_t magic, crc, type, len;
};

int rt_salog_path(const char *dir, uint64_t job, char *path, size_t cap)
{
	int k = snprintf(path, cap, "%s/%llu.log", dir, (unsigned long long)job);

	return k < 0 || (size_t)k >= cap ? -ENAMETOOLONG : 0;
}

/* With --durability disk a new or removed file's name is durable only once its directory is. */
static int dir_sync(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		err = -errno;
	close(fd);
	return err;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t k = write(fd, c, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

int rt_salog_append(struct rt_salog *l, uint32_t type, const struct iovec *iov, int n)
{
	struct salog_head h = { RT_SALOG_MAGIC, 0, type, 0 };
	size_t len = 0, at;
	uint8_t *buf;
	int err;

	if (type == 0 || type >= RT_SALOG__COUNT)
		return -EINVAL;
	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	if (len > RT_SALOG_MAX)
		return -EMSGSIZE;
	/* One write of the whole record: a kill leaves it whole or torn, never interleaved. */
	buf = trib_malloc(sizeof(h) + len);
	if (!buf)
		return -ENOMEM;
	h.len = (uint32_t)len;
	at = sizeof(h);
	for (int i = 0; i < n; i++) {
		memcpy(buf + at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	memcpy(buf, &h, sizeof(h));
	h.crc = rt_wal_crc32c(NULL, 0, buf + 8, 8 + len);
	memcpy(buf, &h, sizeof(h));
	err = write_all(l->fd, buf, sizeof(h) + len);
	trib_free(buf);
	if (!err && l->durable && fdatasync(l->fd))
		err = -errno;
	if (err) {
		/* Nothing half-kept: the next append starts where the last whole record ended. */
		if (ftruncate(l->fd, (off_t)l->end) || lseek(l->fd, (off_t)l->end, SEEK_SET) < 0)
			trib_warn("secagg log: cutting a failed append back: %s", strerror(errno));
		return err;
	}
	l->end += sizeof(h) + len;
	return 0;
}

int rt_salog_create(const char *dir, uint64_t job, bool durable, const void *open_p, size_t len,
		    struct rt_salog **out)
{
	struct iovec iov = { (void *)open_p, len };
	char path[PATH_MAX];
	struct rt_salog *l;
	int err = rt_salog_path(dir, job, path, sizeof(path));

	if (err)
		return err;
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	l = trib_calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->durable = durable;
	l->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (l->fd < 0) {
		err = -errno;
		trib_free(l);
		return err;
	}
	err = rt_salog_append(l, RT_SALOG_OPEN, &iov, 1);
	if (!err && durable)
		err = dir_sync(dir);
	if (err) {
		rt_salog_close(l);
		unlink(path);
		return err;
	}
	*out = l;
	return 0;
}

void rt_salog_close(struct rt_salog *l)
{
	if (!l)
		return;
	close(l->fd);
	trib_free(l);
}

int rt_salog_remove(const char *dir, uint64_t job, bool durable)
{
	char path[PATH_MAX];
	int err = rt_salog_path(dir, job, path, sizeof(path));

	if (err)
		return err;
	if (unlink(path) && errno != ENOENT)
		return -errno;
	return durable ? dir_sync(dir) : 0;
}

/* The whole file into *buf (owned), its size in *len. */
static int read_file(int fd, uint8_t **buf, size_t *len)
{
	struct stat st;
	size_t at = 0;

	if (fstat(fd, &st))
		return -errno;
	*buf = trib_malloc((size_t)st.st_size + 1);
	if (!*buf)
		return -ENOMEM;
	while (at < (size_t)st.st_size) {
		ssize_t k = pread(fd, *buf + at, (size_t)st.st_size - at, (off_t)at);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break; /* shorter than fstat said: what is there is read */
		at += (size_t)k;
	}
	*len = at;
	return 0;
}

int rt_salog_load(const char *dir, uint64_t job, bool durable, rt_salog_cb cb, void *ctx,
		  struct rt_salog **out, uint64_t *torn)
{
	char path[PATH_MAX];
	uint8_t *buf = NULL;
	size_t len = 0, at = 0;
	struct rt_salog *l;
	int fd, err = rt_salog_path(dir, job, path, sizeof(path));

	*torn = 0;
	if (err)
		return err;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = read_file(fd, &buf, &len);
	while (!err && len - at >= sizeof(struct salog_head)) {
		struct salog_head h;

		memcpy(&h, buf + at, sizeof(h));
		if (h.magic != RT_SALOG_MAGIC || h.type == 0 || h.type >= RT_SALOG__COUNT ||
		    h.len > RT_SALOG_MAX || len - at - sizeof(h) < h.len ||
		    rt_wal_crc32c(NULL, 0, buf + at + 8, 8 + (size_t)h.len) != h.crc)
			break;
		err = cb(ctx, h.type, buf + at + sizeof(h), h.len);
		if (!err)
			at += sizeof(h) + h.len;
	}
	trib_free(buf);
	if (!err && at < len) {
		/* The write a kill cut: never acknowledged. Appends go after the last whole record. */
		*torn = len - at;
		trib_warn("secagg log %s: %zu bytes after the last whole record cut off (a write "
			  "the stop interrupted)", path, len - at);
		if (ftruncate(fd, (off_t)at) || (durable && fdatasync(fd)))
			err = -errno;
	}
	if (err || !out) {
		close(fd);
		return err;
	}
	if (lseek(fd, (off_t)at, SEEK_SET) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	l = trib_calloc(1, sizeof(*l));
	if (!l) {
		close(fd);
		return -ENOMEM;
	}
	l->fd = fd;
	l->durable = durable;
	l->end = at;
	*out = l;
	return 0;
}
