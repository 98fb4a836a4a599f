// SPDX-License-Identifier: MIT
/* The node's arena file: where it lives, re-attached or made at start, removed or kept at stop. */
#include "rt_node_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "shm_arena.h"
#include "shm_arena_file.h"
#include "shm_journal.h"
#include "trib_log.h"

/* "<node name or up> <boot id>": who made the file, for whoever finds it later. */
static void node_identity(const struct rt_node *n, char *id, size_t len)
{
	char boot[64] = "?";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	if (f) {
		if (!fgets(boot, sizeof(boot), f))
			strcpy(boot, "?");
		boot[strcspn(boot, "\n")] = '\0';
		fclose(f);
	}
	snprintf(id, len, "%s %s", n->opts.node_name ? n->opts.node_name : "up", boot);
}

/*
 * The arena file's path: --arena-path; with --no-huge the default name in
 * /dev/shm (normal pages, still a file: it outlives a crash of the process);
 * else the default (hugetlbfs, or /dev/shm with one warning).
 */
static int arena_path(const struct rt_node *n, char *path, size_t len)
{
	int err;

	if (n->opts.arena_path) {
		if (snprintf(path, len, "%s", n->opts.arena_path) >= (int)len)
			return -ENAMETOOLONG;
		return 0;
	}
	if (n->opts.no_huge)
		err = shm_arena_file_name(SHM_ARENA_SHM_DIR, n->opts.data_dir, path, len);
	else
		err = shm_arena_default_path(n->opts.data_dir, path, len);
	if (err)
		trib_error("arena: no file name for data dir %s: %s", n->opts.data_dir,
			   strerror(-err));
	return err;
}

/* Make a new, empty file at @o->path; on a default hugetlbfs path we cannot use: /dev/shm. */
static int arena_create(struct rt_node *n, struct shm_arena_file_opts *o, char *path, size_t len)
{
	char why[512] = "";
	int err = shm_arena_file_create(o, &n->arena, why, sizeof(why));

	/* No huge pages to spare, or /dev/hugepages not ours to write (not root): normal pages. */
	if ((err == -ENOMEM || err == -EACCES || err == -EPERM) && !n->opts.arena_path &&
	    !strncmp(path, SHM_ARENA_HUGE_DIR "/", strlen(SHM_ARENA_HUGE_DIR) + 1)) {
		err = shm_arena_file_name(SHM_ARENA_SHM_DIR, n->opts.data_dir, path, len);
		if (!err) {
			trib_warn("arena: %s; the arena file goes to %s on normal pages", why,
				  path);
			o->path = path;
			why[0] = '\0';
			err = shm_arena_file_create(o, &n->arena, why, sizeof(why));
		}
	}
	if (err)
		trib_error("arena file %s of %llu MiB: %s", o->path,
			   (unsigned long long)(o->size >> 20), why[0] ? why : strerror(-err));
	return err;
}

/* Set aside a file we will not use; the caller then makes a new one. */
static int arena_set_aside(const char *path, const char *what)
{
	char aside[PATH_MAX + 64];
	int err = shm_arena_file_move_aside(path, aside, sizeof(aside));

	if (err) {
		trib_error("arena file %s: %s, and it could not be moved aside: %s", path, what,
			   strerror(-err));
		return err;
	}
	trib_error("arena file %s: %s; moved aside to %s (kept for inspection; the server "
		   "starts with an empty arena)", path, what, aside);
	return 0;
}

/* Updates the journal holds (a PARTIAL holds several): what a removal drops, or a stop keeps. */
static uint32_t kept_updates(const struct shm_arena *a)
{
	struct shm_rec_info info;
	uint32_t cap = 0, n = 0;

	shm_journal_usage(a, NULL, &cap);
	for (uint32_t i = 0; i < cap; i++)
		if (!shm_rec_get(a, i, &info))
			n += info.count;
	return n;
}

/*
 * Stale files of vanished data dirs go; then the node's file is re-attached
 * (n->arena_reattached: recovery follows once jobs are loaded) or made.
 * --fresh starts empty on purpose: an old file is removed, logged. A cluster
 * node recovers once the controller said which rounds it keeps (rt_agent.c).
 */
int rt__arena_open(struct rt_node *n)
{
	char path[PATH_MAX], id[256], why[512] = "";
	struct shm_arena_file_opts o = { .path = path, .data_dir = n->opts.data_dir,
					 .node_id = id, .size = n->opts.arena_bytes };
	unsigned stale;
	int err;

	for (int i = 0; i < 2; i++) {
		const char *dir = i ? SHM_ARENA_SHM_DIR : SHM_ARENA_HUGE_DIR;

		err = shm_arena_file_scan_stale(dir, &stale);
		if (err && err != -ENOENT)
			trib_warn("arena: looking for stale arena files in %s: %s", dir,
				  strerror(-err));
	}
	err = arena_path(n, path, sizeof(path));
	if (err)
		return err;
	node_identity(n, id, sizeof(id));
	err = shm_arena_file_open(&o, &n->arena, why, sizeof(why));
	if (!err && n->opts.fresh) {
		uint32_t kept = kept_updates(n->arena);

		err = shm_arena_file_remove(n->arena);
		n->arena = NULL;
		if (err) {
			trib_error("arena file %s: removing it: %s", path, strerror(-err));
			return err;
		}
		trib_warn("arena file %s: removed (--fresh), with the %u update%s it kept", path,
			  kept, kept == 1 ? "" : "s");
		err = -ENOENT;
	} else if (!err) {
		trib_info("arena file %s: re-attached (%zu MiB)", path,
			  shm_arena_size(n->arena) >> 20);
		/* Before any function runs: it frees what no committed record names. */
		err = rt__journal_collect(n);
		if (!err) {
			n->arena_reattached = true;
			return 0;
		}
		shm_arena_destroy(n->arena);
		n->arena = NULL;
		if (err == -EBADMSG)
			snprintf(why, sizeof(why), "its journal is inconsistent (a record names a "
				 "slot that is not live, or records overlap)");
		else
			return err;
	}
	switch (err) {
	case -ENOENT:
		break;
	case -EBADMSG:
	case -EPROTO:
		err = arena_set_aside(path, why);
		if (err)
			return err;
		break;
	case -EBUSY:
	case -EXDEV:
	default:
		trib_error("arena file %s: %s", path, why[0] ? why : strerror(-err));
		return err;
	}
	err = arena_create(n, &o, path, sizeof(path));
	if (err)
		return err;
	trib_info("arena file %s: %zu MiB on %s pages", shm_arena_file_path(n->arena),
		  shm_arena_size(n->arena) >> 20,
		  shm_arena_is_huge(n->arena) ? "2 MiB huge" : "normal 4 KiB");
	return 0;
}

/*
 * At the node's close: no committed update left (no open round holds one):
 * the file goes, and its huge pages with it; else it stays for the next
 * start, said once.
 */
void rt__arena_close(struct rt_node *n)
{
	char path[PATH_MAX];
	uint32_t kept = 0;
	int err;

	if (!n->arena)
		return;
	snprintf(path, sizeof(path), "%s", shm_arena_file_path(n->arena));
	shm_journal_usage(n->arena, &kept, NULL);
	if (!kept) {
		err = shm_arena_file_remove(n->arena);
		if (err)
			trib_warn("arena file %s: removing it: %s", path, strerror(-err));
		n->arena = NULL;
		return;
	}
	kept = kept_updates(n->arena);
	shm_arena_destroy(n->arena);
	n->arena = NULL;
	trib_info("arena file %s: kept, with %u committed update%s of open rounds for the next "
		  "start", path, kept, kept == 1 ? "" : "s");
}
