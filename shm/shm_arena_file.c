// SPDX-License-Identifier: MIT
/* Arena files: the default place, exclusive creation, checked re-attachment, lock, removal. */
#include "shm_arena_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "shm_arena_int.h"
#include "shm_journal.h"
#include "trib_alloc.h"
#include "trib_log.h"

#define ARENA_PREFIX "tributary-"
#define ARENA_SUFFIX ".arena"

/* ---- where the file goes ---- */

/* 64-bit FNV-1a: stable across builds and hosts, which the default name must be. */
static uint64_t fnv1a64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (*s) {
		h ^= (uint8_t)*s++;
		h *= 0x100000001b3ull;
	}
	return h;
}

static bool is_hugetlbfs(const char *dir)
{
	struct statfs sfs;

	return !statfs(dir, &sfs) && sfs.f_type == HUGETLBFS_MAGIC;
}

/* As root, mount hugetlbfs on @dir as systemd does at boot; @why says why not. */
static int mount_hugetlbfs(const char *dir, char *why, size_t why_len)
{
	if (geteuid() != 0) {
		snprintf(why, why_len,
			 "%s is not a hugetlbfs mount and we are not root to mount one", dir);
		return -EPERM;
	}
	if (mkdir(dir, 0755) && errno != EEXIST) {
		int err = errno;

		snprintf(why, why_len, "mkdir %s: %s", dir, strerror(err));
		return -err;
	}
	if (mount("none", dir, "hugetlbfs", 0, "pagesize=2M")) {
		int err = errno;

		snprintf(why, why_len, "mount -t hugetlbfs -o pagesize=2M none %s: %s", dir,
			 strerror(err));
		return -err;
	}
	trib_info("arena: mounted hugetlbfs (pagesize=2M) on %s", dir);
	return 0;
}

int shm_arena_file_name(const char *dir, const char *data_dir, char *path, size_t len)
{
	char real[PATH_MAX];
	int n;

	if (!realpath(data_dir, real))
		return -errno;
	n = snprintf(path, len, "%s/" ARENA_PREFIX "%016llx" ARENA_SUFFIX, dir,
		     (unsigned long long)fnv1a64(real));
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int shm_arena__default_path_in(const char *huge_dir, const char *shm_dir, const char *data_dir,
			       char *path, size_t len)
{
	char real[PATH_MAX], why[PATH_MAX + 128];
	const char *dir = huge_dir;

	if (!realpath(data_dir, real))
		return -errno;
	if (!is_hugetlbfs(huge_dir) && mount_hugetlbfs(huge_dir, why, sizeof(why))) {
		dir = shm_dir;
		/* The one warning line of this fallback. */
		trib_warn("arena: the arena file goes to %s on normal pages, not huge pages: %s",
			  shm_dir, why);
	}
	return shm_arena_file_name(dir, real, path, len);
}

int shm_arena_default_path(const char *data_dir, char *path, size_t len)
{
	return shm_arena__default_path_in(SHM_ARENA_HUGE_DIR, SHM_ARENA_SHM_DIR, data_dir, path,
					  len);
}

/* ---- the lock ---- */

/*
 * Take the file's lock through a private open file description (see
 * shm_arena_file.h for why). On success *@lock_fd is the caller's; closing it
 * (or dying) releases the lock.
 */
static int lock_file(const char *path, int *lock_fd)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return rc;
	}
	*lock_fd = fd;
	return 0;
}

static void why_busy(const char *path, char *why, size_t why_len)
{
	snprintf(why, why_len,
		 "arena file %s is locked by another live process: is another server running "
		 "on this data dir?",
		 path);
}

/* ---- create ---- */

static struct shm_arena *handle_new(const char *path)
{
	struct shm_arena *a = trib_calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->fd = -1;
	a->lock_fd = -1;
	a->creator = getpid();
	a->path = trib_strdup(path);
	if (!a->path) {
		trib_free(a);
		return NULL;
	}
	return a;
}

static void handle_free(struct shm_arena *a)
{
	trib_free(a->path);
	trib_free(a);
}

static int map_normal(struct shm_arena *a, int fd, const struct arena_layout *l, char *why,
		      size_t why_len)
{
	void *base;

	if (ftruncate(fd, (off_t)l->total)) {
		int err = errno;

		snprintf(why, why_len, "ftruncate to %llu bytes: %s", (unsigned long long)l->total,
			 strerror(err));
		return -err;
	}
	base = mmap(NULL, l->total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (base == MAP_FAILED) {
		int err = errno;

		snprintf(why, why_len, "mmap of %llu bytes: %s", (unsigned long long)l->total,
			 strerror(err));
		return -err;
	}
	a->pub.base = base;
	a->huge = false;
	return 0;
}

/* The file header goes in before shm_arena__init_hdr() writes the arena's magic, last. */
static void file_hdr_init(struct shm_arena *a, const struct arena_layout *l, const char *node_id,
			  const char *real_dir)
{
	struct shm_arena_file_hdr *f = (void *)(a->pub.base + l->file_off);
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	f->magic = SHM_ARENA_FILE_MAGIC;
	f->format = SHM_ARENA_FILE_VERSION;
	f->hdr_bytes = sizeof(*f);
	f->rec_bytes = sizeof(struct shm_journal_rec);
	f->nrecs = (uint32_t)l->nrecs;
	f->journal_off = l->journal_off;
	f->created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	/*
	 * From now on the file, not this handle, remembers the pages to give
	 * back, and whoever removes the file gives them back (see
	 * struct shm_arena_file_hdr for why not at destroy).
	 */
	f->huge_added = (uint64_t)a->reserved_pages;
	f->creator_pid = (uint32_t)getpid();
	snprintf(f->node_id, sizeof(f->node_id), "%s", node_id ? node_id : "");
	snprintf(f->data_dir, sizeof(f->data_dir), "%s", real_dir);
}

/*
 * A new, unnamed file in @path's directory (O_TMPFILE), and *@lock_fd, a
 * private open of it (through /proc/self/fd), locked. It gets its name only
 * once complete (file_link()), so that a file at that name is never half-made:
 * a creator killed midway leaves nothing, and no opener can find it unlocked.
 */
static int file_tmp_open(const char *path, int *fd, int *lock_fd, char *why, size_t why_len)
{
	/* *lock_fd is -1 on entry (handle_new()); lock_file() sets it only on success. */
	char dir[PATH_MAX], self[64];
	const char *slash = strrchr(path, '/');
	int rc;

	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path),
			  path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	/* The mode is set again by fchmod() below, whatever the umask: it holds every update. */
	*fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (*fd < 0) {
		rc = -errno;
		snprintf(why, why_len, "O_TMPFILE in %s: %s", dir, strerror(-rc));
		return rc;
	}
	snprintf(self, sizeof(self), "/proc/self/fd/%d", *fd);
	rc = lock_file(self, lock_fd);
	if (!rc && fchmod(*fd, 0600))
		rc = -errno;
	if (rc) {
		snprintf(why, why_len, "lock or chmod the new file through %s: %s", self,
			 strerror(-rc));
		if (*lock_fd >= 0)
			close(*lock_fd);
		*lock_fd = -1;
		close(*fd);
		return rc;
	}
	return 0;
}

/* Give the complete file @fd its name: exclusive, -EEXIST if @path exists. */
static int file_link(int fd, const char *path, char *why, size_t why_len)
{
	char self[64];

	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW)) {
		int err = errno;

		snprintf(why, why_len, "link %s: %s", path, strerror(err));
		return -err;
	}
	return 0;
}

/* On success *out is the caller's (shm_arena_destroy() keeps the file). */
int shm_arena_file_create(const struct shm_arena_file_opts *o, struct shm_arena **out, char *why,
			  size_t why_len)
{
	char real[PATH_MAX];
	struct arena_layout l;
	struct shm_arena *a;
	struct statfs sfs;
	int fd, rc;

	why[0] = '\0';
	if (!o->size || o->size > ARENA_MAX_SLOT_BYTES ||
	    (o->node_id && strlen(o->node_id) >= SHM_ARENA_NODE_ID_MAX)) {
		snprintf(why, why_len, "size 0, too large, or node id too long");
		return -EINVAL;
	}
	if (!realpath(o->data_dir, real)) {
		int err = errno;

		snprintf(why, why_len, "data dir %s: %s", o->data_dir, strerror(err));
		return -err;
	}
	/* Early, to reserve no pages in vain; file_link() is what makes it exclusive. */
	if (!access(o->path, F_OK)) {
		snprintf(why, why_len, "%s exists: open it instead", o->path);
		return -EEXIST;
	}
	shm_arena__layout((o->size + SHM_HUGE_PAGE - 1) / SHM_HUGE_PAGE * SHM_HUGE_PAGE, true, &l);
	a = handle_new(o->path);
	if (!a)
		return -ENOMEM;
	rc = file_tmp_open(o->path, &fd, &a->lock_fd, why, why_len);
	if (rc)
		goto err_free;
	if (fstatfs(fd, &sfs)) {
		rc = -errno;
		snprintf(why, why_len, "fstatfs: %s", strerror(-rc));
		goto err_close;
	}
	if (sfs.f_type == HUGETLBFS_MAGIC)
		rc = shm_arena__map_huge_fd(a, fd, &l, o->flags, why, why_len);
	else
		rc = map_normal(a, fd, &l, why, why_len);
	if (rc)
		goto err_close;
	file_hdr_init(a, &l, o->node_id, real);
	rc = shm_arena__init_hdr(a, &l);
	if (rc) {
		snprintf(why, why_len, "initialising the arena lock: %s", strerror(-rc));
		goto err_unmap;
	}
	rc = file_link(fd, o->path, why, why_len);
	if (rc)
		goto err_unmap;
	a->fd = fd;
	if (shm_journal__index_build(a))
		trib_debug("arena: no memory for the key index; resends are found by a scan");
	a->reserved_pages = 0; /* the file's header has them: shm_arena_destroy() keeps them */
	trib_info("arena: created %s: %llu MiB on %s", o->path, (unsigned long long)(l.total >> 20),
		  a->huge ? "2 MiB huge pages" : "normal pages");
	*out = a;
	return 0;

err_unmap:
	munmap(a->pub.base, l.total);
err_close:
	close(a->lock_fd);
	close(fd);
	/* Unmapped and closed, the unnamed file's pages are free: give back what was added. */
	shm_huge__release((long)a->reserved_pages);
err_free:
	handle_free(a);
	return rc;
}

/* ---- open ---- */

/* Check the mapped file @h of @size bytes against this build and @real_dir; see the header. */
static int file_check(const struct shm_arena_hdr *h, uint64_t size, const char *real_dir, char *why,
		      size_t why_len)
{
	const struct shm_arena_file_hdr *f;
	struct arena_layout l;

	if (h->magic != SHM_ARENA_MAGIC) {
		if (h->magic)
			snprintf(why, why_len, "not a Tributary arena (magic %#llx)",
				 (unsigned long long)h->magic);
		else
			snprintf(why, why_len, "no arena magic (a zeroed or unfinished file)");
		return -EBADMSG;
	}
	if (h->version != SHM_ABI_VERSION || h->hdr_bytes != sizeof(*h)) {
		snprintf(why, why_len,
			 "arena ABI version %u (header %u bytes); this build reads %u", h->version,
			 h->hdr_bytes, SHM_ABI_VERSION);
		return -EPROTO;
	}
	if (!(h->flags & SHM_ARENA_HDR_FILE) || h->file_off < sizeof(*h) ||
	    h->file_off > size - sizeof(*f)) {
		snprintf(why, why_len, "an arena without a valid file header (offset %llu)",
			 (unsigned long long)h->file_off);
		return -EBADMSG;
	}
	f = (const void *)((const uint8_t *)h + h->file_off);
	if (f->magic != SHM_ARENA_FILE_MAGIC) {
		snprintf(why, why_len, "bad file header magic %#llx", (unsigned long long)f->magic);
		return -EBADMSG;
	}
	if (f->format != SHM_ARENA_FILE_VERSION || f->hdr_bytes != sizeof(*f) ||
	    f->rec_bytes != sizeof(struct shm_journal_rec)) {
		snprintf(why, why_len,
			 "arena file format %u (header %u, record %u bytes); this build reads %u",
			 f->format, f->hdr_bytes, f->rec_bytes, SHM_ARENA_FILE_VERSION);
		return -EPROTO;
	}
	if (!shm_arena__hdr_valid(h, size)) {
		snprintf(why, why_len,
			 "header says %llu bytes and %u chunks; the file has %llu bytes",
			 (unsigned long long)h->total_bytes, h->nchunks, (unsigned long long)size);
		return -EBADMSG;
	}
	shm_arena__layout((uint64_t)h->nchunks * SHM_CHUNK, true, &l);
	if (f->nrecs != l.nrecs || f->journal_off != l.journal_off ||
	    !memchr(f->data_dir, '\0', sizeof(f->data_dir)) ||
	    !memchr(f->node_id, '\0', sizeof(f->node_id))) {
		snprintf(why, why_len, "journal of %u records at %llu, or strings, do not match",
			 f->nrecs, (unsigned long long)f->journal_off);
		return -EBADMSG;
	}
	if (strcmp(f->data_dir, real_dir)) {
		snprintf(why, why_len, "the arena belongs to data dir %s, not %s", f->data_dir,
			 real_dir);
		return -EXDEV;
	}
	return 0;
}

/* Map @a->fd (@size bytes) and check it; on failure nothing stays mapped. */
static int map_existing(struct shm_arena *a, uint64_t size, const char *real_dir, char *why,
			size_t why_len)
{
	void *base;
	int rc;

	if (size < SHM_HUGE_PAGE || size % SHM_HUGE_PAGE) {
		snprintf(why, why_len, "%llu bytes is not a whole number of 2 MiB pages",
			 (unsigned long long)size);
		return -EBADMSG;
	}
	/* No MAP_POPULATE: the pages are in the file already; recovery touches what it reads. */
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (base == MAP_FAILED) {
		int err = errno;

		snprintf(why, why_len, "mmap: %s", strerror(err));
		return -err;
	}
	rc = file_check(base, size, real_dir, why, why_len);
	if (rc) {
		munmap(base, size);
		return rc;
	}
	a->pub.base = base;
	shm_arena__bind(a, size);
	return 0;
}

/* On success *out is the caller's, as for shm_arena_file_create(). */
int shm_arena_file_open(const struct shm_arena_file_opts *o, struct shm_arena **out, char *why,
			size_t why_len)
{
	char real[PATH_MAX];
	struct shm_arena *a;
	struct statfs sfs;
	struct stat st;
	unsigned dropped;
	char self[64];
	int rc;

	why[0] = '\0';
	if (!realpath(o->data_dir, real)) {
		int err = errno;

		snprintf(why, why_len, "data dir %s: %s", o->data_dir, strerror(err));
		return -err;
	}
	a = handle_new(o->path);
	if (!a)
		return -ENOMEM;
	a->fd = open(o->path, O_RDWR | O_CLOEXEC);
	if (a->fd < 0) {
		rc = -errno;
		snprintf(why, why_len, "open %s: %s", o->path, strerror(-rc));
		goto err_free;
	}
	/* Through the fd, not the name: the lock must be on the very file that is mapped. */
	snprintf(self, sizeof(self), "/proc/self/fd/%d", a->fd);
	rc = lock_file(self, &a->lock_fd);
	if (rc == -EBUSY)
		why_busy(o->path, why, why_len);
	else if (rc)
		snprintf(why, why_len, "lock %s: %s", o->path, strerror(-rc));
	if (rc)
		goto err_close;
	if (fstat(a->fd, &st) || fstatfs(a->fd, &sfs)) {
		rc = -errno;
		snprintf(why, why_len, "fstat %s: %s", o->path, strerror(-rc));
		goto err_unlock;
	}
	a->huge = sfs.f_type == HUGETLBFS_MAGIC;
	rc = map_existing(a, (uint64_t)st.st_size, real, why, why_len);
	if (rc)
		goto err_unlock;
	dropped = shm_journal__drop_reserved(a);
	if (shm_journal__index_build(a))
		trib_debug("arena: no memory for the key index; resends are found by a scan");
	trib_info(
	    "arena: re-attached %s (node %s, created by pid %u); dropped %u records that were "
	    "never committed",
	    o->path, a->fhdr->node_id, a->fhdr->creator_pid, dropped);
	*out = a;
	return 0;

err_unlock:
	close(a->lock_fd);
err_close:
	close(a->fd);
err_free:
	handle_free(a);
	return rc;
}

/* ---- move aside, remove, scan ---- */

int shm_arena_file_move_aside(const char *path, char *newpath, size_t len)
{
	char dst[PATH_MAX];
	int lock_fd = -1, rc, i; /* -1: GCC 12 -O3 cannot see lock_file() sets it */
	long long now = (long long)time(NULL);

	rc = lock_file(path, &lock_fd);
	if (rc)
		return rc;
	for (i = 0; i < 100; i++) {
		int n = i ? snprintf(dst, sizeof(dst), "%s.corrupt-%lld.%d", path, now, i)
			  : snprintf(dst, sizeof(dst), "%s.corrupt-%lld", path, now);

		if (n < 0 || (size_t)n >= sizeof(dst)) {
			rc = -ENAMETOOLONG;
			break;
		}
		/* NOREPLACE: a second corrupt file in the same second must not erase the first. */
		rc = renameat2(AT_FDCWD, path, AT_FDCWD, dst, RENAME_NOREPLACE) ? -errno : 0;
		if (rc != -EEXIST)
			break;
	}
	close(lock_fd);
	if (!rc && newpath)
		snprintf(newpath, len, "%s", dst);
	return rc;
}

int shm_arena_file_remove(struct shm_arena *a)
{
	long pages;
	int rc;

	if (!a || !a->path || a->lock_fd < 0) {
		shm_arena_destroy(a);
		return -EINVAL;
	}
	pages = (long)a->fhdr->huge_added;
	rc = unlink(a->path) ? -errno : 0;
	if (!rc)
		trib_info("arena: removed %s", a->path);
	shm_arena_destroy(a);
	/* After the unmap: the file's pages are free pool pages now, and go with these. */
	if (!rc)
		shm_huge__release(pages);
	return rc;
}

/*
 * One candidate of the scan: 1 if removed, else 0. The file is locked while
 * it is read and unlinked, so that no live owner can be using it.
 */
static int scan_one(const char *path)
{
	struct shm_arena_file_hdr f;
	struct shm_arena_hdr h;
	struct stat st;
	int fd, gone = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (flock(fd, LOCK_EX | LOCK_NB))
		goto out_close; /* a live owner */
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != SHM_ARENA_MAGIC ||
	    !(h.flags & SHM_ARENA_HDR_FILE) ||
	    pread(fd, &f, sizeof(f), (off_t)h.file_off) != (ssize_t)sizeof(f) ||
	    f.magic != SHM_ARENA_FILE_MAGIC || f.format != SHM_ARENA_FILE_VERSION ||
	    !memchr(f.data_dir, '\0', sizeof(f.data_dir)) ||
	    !memchr(f.node_id, '\0', sizeof(f.node_id)))
		goto out_close; /* not ours to judge: the owner's open moves it aside */
	if (!stat(f.data_dir, &st) || (errno != ENOENT && errno != ENOTDIR))
		goto out_close;
	if (unlink(path)) {
		trib_warn("arena: cannot remove stale %s: %s", path, strerror(errno));
		goto out_close;
	}
	gone = 1;
	trib_info("arena: removed stale %s (node %s): its data dir %s no longer exists", path,
		  f.node_id, f.data_dir);
out_close:
	close(fd);
	/* The file's pages are free once fd closes; give back what was added for them. */
	if (gone && f.huge_added)
		shm_huge__release((long)f.huge_added);
	return gone;
}

int shm_arena_file_scan_stale(const char *dir, unsigned *removed)
{
	size_t plen = strlen(ARENA_PREFIX), slen = strlen(ARENA_SUFFIX);
	char path[PATH_MAX];
	struct dirent *e;
	unsigned n = 0;
	DIR *d;

	d = opendir(dir);
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (len <= plen + slen || strncmp(e->d_name, ARENA_PREFIX, plen) ||
		    strcmp(e->d_name + len - slen, ARENA_SUFFIX))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path))
			continue;
		n += (unsigned)scan_one(path);
	}
	closedir(d);
	if (removed)
		*removed = n;
	return 0;
}

/* ---- accessors ---- */

const char *shm_arena_file_path(const struct shm_arena *a)
{
	return a->path;
}

const char *shm_arena_file_node_id(const struct shm_arena *a)
{
	return a->fhdr ? a->fhdr->node_id : NULL;
}

const char *shm_arena_file_data_dir(const struct shm_arena *a)
{
	return a->fhdr ? a->fhdr->data_dir : NULL;
}
