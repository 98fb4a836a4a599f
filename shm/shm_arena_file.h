/* SPDX-License-Identifier: MIT */
/* Arenas kept in a file that outlives the process: place, create, re-attach, lock, remove. */
#ifndef SHM_ARENA_FILE_H
#define SHM_ARENA_FILE_H

#include <stddef.h>

#include "shm_arena.h"

/*
 * A file arena is an ordinary arena (shm_arena.h: slots, attach by fd from
 * function processes, shm_arena_destroy()) whose memory is a named file on
 * hugetlbfs (or /dev/shm on normal pages), so that its slots and its journal
 * of committed records (shm_journal.h) survive a crash of the node. The
 * header (shm_arena_abi.h, struct shm_arena_file_hdr) records the format
 * version, the node's identity and the realpath of its data dir.
 *
 * The lock. The process that creates or opens a file arena holds an
 * flock(LOCK_EX) on the arena file itself, through a second, private,
 * O_CLOEXEC open of it (a->lock_fd) that is never passed on:
 *  - on the file, not on a lock file in the data dir, because the stale scan
 *    must tell whether a live process still uses a file whose data dir is
 *    gone, and only a lock on the file itself can say that; and because the
 *    default name derives from the data dir, two servers on one data dir meet
 *    at the same file and the second is refused (-EBUSY);
 *  - through a private open file description, because flock belongs to the
 *    open file description: the mapping fd is passed to function processes
 *    (SCM_RIGHTS, posix_spawn), which would keep the lock alive after the
 *    node died;
 *  - flock and not fcntl locks, because an flock dies with its last fd, so
 *    kill -9 of the owner releases it, and it is not dropped when some other
 *    fd of the same file is closed, as POSIX record locks are.
 * A server given an explicit path (--arena-path) on the same data dir as
 * another server that uses a different path is not caught by this lock; the
 * header's data dir is checked on open, so neither can take the other's file.
 */

/* Default directories of shm_arena_default_path(). */
#define SHM_ARENA_HUGE_DIR "/dev/hugepages"
#define SHM_ARENA_SHM_DIR  "/dev/shm"

/*
 * The default arena file of the data dir @data_dir (which must exist):
 * "<dir>/tributary-<16 hex digits>.arena", the digits a 64-bit FNV-1a hash of
 * the data dir's realpath, so that two data dirs never share a file. <dir> is
 * SHM_ARENA_HUGE_DIR when it is a hugetlbfs mount; else, as root, the function
 * mounts hugetlbfs there (mkdir, then "mount -t hugetlbfs -o pagesize=2M none
 * /dev/hugepages", as systemd does at boot) and uses it; else it logs one
 * warning saying why and picks SHM_ARENA_SHM_DIR (normal pages).
 * Writes the path into @path (@len bytes). Returns 0, -ENAMETOOLONG, or the
 * -errno of realpath(@data_dir).
 */
int shm_arena_default_path(const char *data_dir, char *path, size_t len);

/*
 * The same name in directory @dir, with no mount and no warning (for a caller
 * that chose the directory itself, e.g. normal pages in SHM_ARENA_SHM_DIR).
 * Returns 0, -ENAMETOOLONG, or the -errno of realpath(@data_dir).
 */
int shm_arena_file_name(const char *dir, const char *data_dir, char *path, size_t len);

/* What shm_arena_file_create() and shm_arena_file_open() need; the strings are borrowed. */
struct shm_arena_file_opts {
	const char *path;     /* the arena file */
	const char *data_dir; /* the owner's data dir; must exist; compared as realpath */
	const char *node_id;  /* create: the node's identity (e.g. name + boot id), < 192 bytes */
	size_t size;	      /* create: slot area bytes, rounded up to 2 MiB */
	unsigned flags; /* create: SHM_ARENA_NO_RESERVE (shm_arena.h); the path picks the pages */
};

/*
 * Create the arena file @o->path: exclusively, mode 0600, locked. It is made
 * unnamed (O_TMPFILE in its directory, locked at once) and linked to @o->path
 * only when complete (linkat, -EEXIST if the name exists), so a file at that
 * name is never half-made and a creator killed midway leaves nothing behind.
 * Needs a filesystem with O_TMPFILE (tmpfs, hugetlbfs, ext4, xfs) and /proc.
 * On hugetlbfs it is backed by 2 MiB huge pages: as root and without
 * SHM_ARENA_NO_RESERVE, nr_hugepages is raised by what it lacks; the file's
 * header records how many pages were added, and whoever removes the file
 * (shm_arena_file_remove(), the stale scan) gives them back. Elsewhere
 * (/dev/shm) it uses normal pages. There is no fallback here: on failure
 * nothing is left, and the caller may try another path.
 * Returns 0, -EEXIST (a file is there: open it instead), -EINVAL (size or a
 * string too long), -ENOMEM (no huge pages; @why says why), or -errno.
 * @why (@why_len bytes) gets a reason whenever it fails.
 * On success *@out is the caller's: shm_arena_destroy() keeps the file,
 * shm_arena_file_remove() removes it.
 */
int shm_arena_file_create(const struct shm_arena_file_opts *o, struct shm_arena **out, char *why,
			  size_t why_len);

/*
 * Re-attach the existing arena file @o->path: lock it, map it, check it.
 * Records left RESERVED (being filled when their writer died; never
 * committed, never answered 202) are freed; committed ones stay for
 * shm_journal_recover().
 * Returns 0 or:
 *   -ENOENT   no such file (create one);
 *   -EBUSY    another live process holds the file's lock (a second server);
 *   -EBADMSG  corrupt: not an arena, sizes that do not match the file, a
 *             zeroed or unfinished file (no magic);
 *   -EPROTO   an arena of another ABI or file format version;
 *   -EXDEV    a valid arena that belongs to another data dir: refused, kept;
 *   -ENOMEM, or another -errno.
 * For -EBADMSG and -EPROTO the caller moves the file aside
 * (shm_arena_file_move_aside()) and creates a new one: never reuse it, never
 * delete it. @why (@why_len bytes) gets a reason the caller can log.
 * On success *@out is the caller's, as for shm_arena_file_create().
 */
int shm_arena_file_open(const struct shm_arena_file_opts *o, struct shm_arena **out, char *why,
			size_t why_len);

/*
 * Rename the file at @path to "<path>.corrupt-<unix seconds>" (".<n>" added
 * if that exists), refusing with -EBUSY when a live process holds its lock.
 * The new name goes to @newpath (@len bytes) when it is not NULL.
 * Returns 0 or -errno. The file keeps its (huge) pages until someone removes it.
 */
int shm_arena_file_move_aside(const char *path, char *newpath, size_t len);

/*
 * Unlink the arena file of @a (its owner: made by shm_arena_file_create() or
 * shm_arena_file_open()), destroy @a, then give back the huge pages the
 * file's header says were added for it. For a stop that leaves no open round.
 * Other mappings (function processes) keep the memory until they unmap it
 * (unmap them first, or the pages given back wait as surplus pages).
 * Returns 0 or -errno (of unlink; @a is destroyed in every case).
 */
int shm_arena_file_remove(struct shm_arena *a);

/*
 * Remove every arena file "tributary-*.arena" in @dir whose recorded data dir
 * no longer exists, with one log line each, giving back the huge pages its
 * header says its dead owner added. Files locked by a live process, files
 * whose data dir exists and files that are not valid arenas (moved aside or
 * foreign) are left alone. *@removed (may be NULL) gets how many went.
 * Returns 0, or -errno when @dir cannot be read (-ENOENT when it does not exist).
 */
int shm_arena_file_scan_stale(const char *dir, unsigned *removed);

/* The file's path, node identity and data dir; owned by @a, NULL for a memfd arena. */
const char *shm_arena_file_path(const struct shm_arena *a);
const char *shm_arena_file_node_id(const struct shm_arena *a);
const char *shm_arena_file_data_dir(const struct shm_arena *a);

/* Test hook: shm_arena_default_path() with other directories in place of /dev/... */
int shm_arena__default_path_in(const char *huge_dir, const char *shm_dir, const char *data_dir,
			       char *path, size_t len);

#endif
