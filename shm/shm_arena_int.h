/* SPDX-License-Identifier: MIT */
/* Internals shared by the arena's files (memfd, file, journal, huge pages); not a public API. */
#ifndef SHM_ARENA_INT_H
#define SHM_ARENA_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm_arena.h"

/* Chunk indexes and run lengths stay below 2^31 so that sums of two never wrap. */
#define ARENA_MAX_CHUNKS     (1u << 31)
#define ARENA_MAX_SLOT_BYTES ((uint64_t)ARENA_MAX_CHUNKS * SHM_CHUNK)

struct shm_arena {
	struct shm_arena_pub pub;  /* first: shm_arena_ptr() reads it through a cast */
	struct shm_arena_hdr *hdr; /* == pub.base */
	uint64_t *bitmap;	   /* hdr->bitmap_off in this mapping */
	uint32_t *runlen;	   /* hdr->runlen_off in this mapping */
	int fd;			   /* the memfd or the file, owned; the one passed to functions */
	bool huge;		   /* backed by hugetlbfs */
	long reserved_pages;	   /* huge pages this handle added to nr_hugepages */
	pid_t creator;		   /* the process that added them: only it gives them back */
	/* File arenas only (shm_arena_file.c); memfd arenas: -1, NULL, 0. */
	int lock_fd;			 /* private open of the file, flock()ed; never passed on */
	char *path;			 /* the file's path, owned */
	struct shm_arena_file_hdr *fhdr; /* hdr->file_off in this mapping */
	struct shm_journal_rec *recs;	 /* fhdr->journal_off in this mapping */
	uint32_t nrecs;			 /* fhdr->nrecs */
	uint32_t rec_cursor;		 /* next-fit: where the next reserve starts looking */
	uint64_t commit_no;		 /* last commit_no handed out by this writer */
	uint32_t *kidx;			 /* writer's key index: record + 1 per entry, 0 = empty */
	uint32_t kmask;			 /* kidx entries - 1 (a power of two - 1) */
};

/* Where things go in an arena whose slot area is slot_bytes long. */
struct arena_layout {
	uint64_t nchunks;
	uint64_t bitmap_off;
	uint64_t runlen_off;
	uint64_t file_off;    /* 0 without a journal */
	uint64_t journal_off; /* 0 without a journal */
	uint64_t nrecs;	      /* journal capacity, 0 without a journal */
	uint64_t data_off;
	uint64_t total;
};

/* The layout of a memfd arena (@file false) or of a file arena with its journal. */
void shm_arena__layout(uint64_t slot_bytes, bool file, struct arena_layout *l);

/*
 * Size @fd (an empty hugetlbfs memfd or file) to @l->total bytes and map it
 * MAP_SHARED | MAP_POPULATE into @a, reserving huge pages as root unless
 * SHM_ARENA_NO_RESERVE is in @flags. @fd stays the caller's, on success too
 * (the caller stores it in @a). On failure nothing stays mapped or reserved
 * and @why names the reason. Sets a->pub.base, a->huge, a->reserved_pages.
 */
int shm_arena__map_huge_fd(struct shm_arena *a, int fd, const struct arena_layout *l,
			   unsigned flags, char *why, size_t why_len);

/* Write the header (the magic last) into the zeroed mapping of @a and bind the tables. */
int shm_arena__init_hdr(struct shm_arena *a, const struct arena_layout *l);

/* Bind a->hdr, bitmap and runlen (and the journal for a file arena) to the mapping. */
void shm_arena__bind(struct shm_arena *a, size_t size);

/* Whether @h describes a complete arena of @size bytes of this build's layout. */
bool shm_arena__hdr_valid(const struct shm_arena_hdr *h, uint64_t size);

/*
 * After re-attaching: free the records left RESERVED by a dead writer and
 * continue the commit numbers after the last one. Returns how many it freed.
 */
unsigned shm_journal__drop_reserved(struct shm_arena *a);

/*
 * Build the writer's index of committed UPDATEs by (job, round, key), which
 * shm_rec_find() uses; without it (-ENOMEM) find scans the journal instead.
 */
int shm_journal__index_build(struct shm_arena *a);

/* ---- the 2 MiB huge page pool (shm_hugepages.c) ---- */

/* 2 MiB pages free for a new mapping: free_hugepages less those already promised. */
int shm_huge__avail(long *avail);
/* Raise nr_hugepages so that @npages are free; *@added: how many it added. */
int shm_huge__reserve(long npages, long *added, char *why, size_t why_len);
/* Take @pages back out of nr_hugepages (in-use ones become surplus and go when freed). */
void shm_huge__release(long pages);
#define SHM_HUGE_NR_PATH "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"

#endif
