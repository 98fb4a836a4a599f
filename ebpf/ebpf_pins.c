// SPDX-License-Identifier: MIT
/*
 * The router's pin directory: EBPF_PIN_ROOT/<owner>/<boot id>[-k], held with
 * flock(2) for the router's life. Not named by pid: in containers every
 * runtime is pid 1, and pids of other pid namespaces cannot be checked.
 */
#include "ebpf_pins.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ebpf_route.h"
#include "trib_log.h"

#define BOOT_ID_PATH "/proc/sys/kernel/random/boot_id"
#define CLAIM_TRIES 4 /* the owner directory vanished under us this often: give up */

static void why_set(char *why, size_t why_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void why_set(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !why_len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
}

int ebpf__boot_id(char *out, size_t len)
{
	char buf[64];
	ssize_t n;
	int fd = open(BOOT_ID_PATH, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	if (n != 36 || strspn(buf, "0123456789abcdef-") != 36)
		return -EPROTO;
	if ((size_t)n >= len)
		return -ENAMETOOLONG;
	memcpy(out, buf, (size_t)n + 1);
	return 0;
}

/* Unlink every entry of the directory @fd (not closed). 0 or the first -errno. */
static int empty_dir(int fd)
{
	struct dirent *e;
	int dfd = dup(fd), err = 0;
	DIR *d;

	if (dfd < 0)
		return -errno;
	d = fdopendir(dfd); /* owns dfd from here on */
	if (!d) {
		err = -errno;
		close(dfd);
		return err;
	}
	rewinddir(d);
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(fd, e->d_name, 0) && !err)
			err = -errno;
	}
	closedir(d);
	return err;
}

/*
 * Under the owner's lock (@ofd, directory @odir): remove each directory no
 * live router holds. A holder's flock goes with its last fd, so a runtime
 * that died (any pid namespace, any earlier boot) leaves its directory free.
 */
static void remove_stale(int ofd, const char *odir)
{
	struct dirent *e;
	int dfd = dup(ofd);
	DIR *d;

	if (dfd < 0)
		return;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return;
	}
	while ((e = readdir(d))) {
		int fd, err;

		if (e->d_name[0] == '.')
			continue;
		fd = openat(ofd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue; /* not a directory: not a router's */
		if (flock(fd, LOCK_EX | LOCK_NB)) {
			close(fd); /* EWOULDBLOCK: a live router's */
			continue;
		}
		err = empty_dir(fd);
		if (!err && unlinkat(ofd, e->d_name, AT_REMOVEDIR))
			err = -errno;
		close(fd);
		if (err)
			trib_warn("ebpf: stale pins %s/%s (their router is gone): %s", odir,
				  e->d_name, strerror(-err));
		else
			trib_info("ebpf: removed stale pins %s/%s (their router is gone)", odir,
				  e->d_name);
	}
	closedir(d);
}

/* Under the owner's lock: make and lock the first free <boot>[-k]. 0 or -errno. */
static int claim_first_free(int ofd, const char *odir, const char *boot,
			    struct ebpf_pin_dir *out, char *why, size_t why_len)
{
	char name[96];
	int k, fd;

	for (k = 0; k < EBPF_PINS_PER_OWNER; k++) {
		if (k)
			snprintf(name, sizeof(name), "%s-%d", boot, k);
		else
			snprintf(name, sizeof(name), "%s", boot);
		if (mkdirat(ofd, name, 0700)) {
			if (errno == EEXIST)
				continue; /* stale ones are gone: this one is live */
			why_set(why, why_len, "creating %s/%s failed: %s", odir, name,
				strerror(errno));
			return -errno;
		}
		fd = openat(ofd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB)) {
			int err = -errno;

			why_set(why, why_len, "locking %s/%s failed: %s", odir, name,
				strerror(-err));
			if (fd >= 0)
				close(fd);
			unlinkat(ofd, name, AT_REMOVEDIR);
			return err;
		}
		if (snprintf(out->path, sizeof(out->path), "%s/%s", odir, name) >=
		    (int)sizeof(out->path)) {
			close(fd);
			unlinkat(ofd, name, AT_REMOVEDIR);
			why_set(why, why_len, "pin directory name too long under %s", odir);
			return -ENAMETOOLONG;
		}
		out->fd = fd;
		return 0;
	}
	why_set(why, why_len, "%d live routers already pin under %s", EBPF_PINS_PER_OWNER, odir);
	return -EBUSY;
}

/*
 * Open and lock the owner directory @odir, made if missing. A releaser may
 * remove it between our open and our lock: then 1 (try again). 0 with *ofd,
 * or -errno.
 */
static int owner_lock(const char *odir, int *ofd)
{
	struct stat a, b;
	int fd, err;

	if (mkdir(odir, 0700) && errno != EEXIST)
		return -errno;
	fd = open(odir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 1 : -errno;
	/* Held only while names are checked and made: a few syscalls. */
	if (flock(fd, LOCK_EX)) {
		err = -errno;
		close(fd);
		return err;
	}
	if (fstat(fd, &a) || stat(odir, &b) || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
		close(fd);
		return 1;
	}
	*ofd = fd;
	return 0;
}

int ebpf__pin_dir_claim(const char *owner, struct ebpf_pin_dir *out, char *why, size_t why_len)
{
	char boot[64], odir[PATH_MAX];
	int ofd = -1, err, t;

	out->fd = -1;
	out->path[0] = '\0';
	err = ebpf__boot_id(boot, sizeof(boot));
	if (err) {
		why_set(why, why_len, "reading %s failed: %s", BOOT_ID_PATH, strerror(-err));
		return err;
	}
	if (mkdir(EBPF_PIN_ROOT, 0700) && errno != EEXIST) {
		err = -errno;
		why_set(why, why_len, "creating %s failed: %s", EBPF_PIN_ROOT, strerror(-err));
		return err;
	}
	snprintf(odir, sizeof(odir), "%s/%s", EBPF_PIN_ROOT, owner);
	for (t = 0; t < CLAIM_TRIES; t++) {
		err = owner_lock(odir, &ofd);
		if (err <= 0)
			break;
	}
	if (err) {
		err = err > 0 ? -EAGAIN : err;
		why_set(why, why_len, "locking %s failed: %s", odir, strerror(-err));
		return err;
	}
	remove_stale(ofd, odir);
	err = claim_first_free(ofd, odir, boot, out, why, why_len);
	close(ofd); /* drops the owner lock */
	return err;
}

void ebpf__pin_dir_release(struct ebpf_pin_dir *d)
{
	char odir[PATH_MAX];
	char *slash;
	int ofd = -1, err;

	if (d->fd < 0)
		return;
	snprintf(odir, sizeof(odir), "%s", d->path);
	slash = strrchr(odir, '/');
	if (slash)
		*slash = '\0';
	/* The owner's lock, so that a claimer never makes a name in a directory we remove. */
	if (owner_lock(odir, &ofd))
		ofd = -1;
	err = empty_dir(d->fd);
	if (err)
		trib_warn("ebpf: unpin %s: %s", d->path, strerror(-err));
	if (rmdir(d->path) && errno != ENOENT)
		trib_warn("ebpf: rmdir %s: %s", d->path, strerror(errno));
	if (ofd >= 0) {
		/* ENOTEMPTY when another router of this owner lives: fine. */
		rmdir(odir);
		close(ofd);
	}
	close(d->fd);
	d->fd = -1;
}
