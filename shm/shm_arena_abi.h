/* SPDX-License-Identifier: MIT */
/* Shared-memory layouts of the arena header and its records, read by every process. */
#ifndef SHM_ARENA_ABI_H
#define SHM_ARENA_ABI_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"

/*
 * The structs below live in a memfd or a file that several processes of one node map
 * at different addresses, so they hold offsets from the arena base, never
 * pointers. They embed a pthread mutex and C11 atomics, which is sound only
 * because every process that maps them is built from the same tree against
 * the same libc on the same node; they never cross a node boundary.
 */

#define SHM_HUGE_PAGE (2ull << 20) /* bytes in one huge page; arena sizes are multiples */
#define SHM_CHUNK (64ull << 10)    /* allocation granularity of the slot allocator */

#define SHM_ARENA_MAGIC 0x414e524142495254ull /* "TRIBARNA" little-endian */

/* Values of shm_arena_hdr.flags. */
#define SHM_ARENA_HDR_HUGE 0x1u /* the memfd (or file) is backed by 2 MiB huge pages */
#define SHM_ARENA_HDR_FILE 0x2u /* a file arena: file_off names a struct shm_arena_file_hdr */

/* Values of shm_arena_intent.op. */
enum shm_arena_op {
	SHM_ARENA_OP_NONE = 0,  /* no allocator update in flight */
	SHM_ARENA_OP_ALLOC = 1, /* an allocation of [start, start+len) chunks is being recorded */
	SHM_ARENA_OP_FREE = 2,  /* the allocation starting at start is being released */
};

/*
 * The allocator update in flight, written under the lock before the update
 * and cleared after it. A process that finds the lock's owner dead
 * (EOWNERDEAD) reads it to roll the interrupted update back (alloc: the dead
 * process never got the offset) or forward (free: its owner meant to release it).
 */
struct shm_arena_intent {
	uint32_t op;    /* enum shm_arena_op; written last when opening, first when closing */
	uint32_t start; /* first chunk index of the run */
	uint32_t len;   /* run length in chunks */
	uint32_t pad;   /* zero */
};
_Static_assert(sizeof(struct shm_arena_intent) == 16, "shm_arena_intent is ABI");

/*
 * Runs freed last, remembered so that the next allocation that fits one lands
 * in memory a process touched recently (shm_arena.c, "warm reuse"). Only a
 * hint: an entry is trusted only after its chunks are seen free in the bitmap,
 * so an arena written by a build without it (zeros) or a stale entry is harmless.
 */
#define SHM_ARENA_WARM 8

/*
 * The first bytes of every arena. The header region (this struct, then the
 * chunk bitmap, then the run-length table) is rounded up to a 2 MiB multiple;
 * the slot area follows it at data_off and runs to the end of the memfd:
 *
 *   0            bitmap_off      runlen_off            data_off               total_bytes
 *   | shm_arena_hdr | u64 bitmap[] | u32 runlen[nchunks] | pad | chunk 0 | chunk 1 | ... |
 *
 * Chunk i covers arena offsets [data_off + i * SHM_CHUNK, data_off + (i+1) * SHM_CHUNK).
 * A file arena (SHM_ARENA_HDR_FILE) puts its file header and journal between
 * the run-length table and the padding; see struct shm_arena_file_hdr.
 * The fields up to lock are written once by the creator and then only read.
 */
struct shm_arena_hdr {
	uint64_t magic;       /* SHM_ARENA_MAGIC */
	uint32_t version;     /* SHM_ABI_VERSION of the creator */
	uint32_t hdr_bytes;   /* sizeof(struct shm_arena_hdr) of the creator */
	uint64_t total_bytes; /* size of the memfd, header region included (2 MiB multiple) */
	uint64_t data_off;    /* offset of chunk 0: size of the header region (2 MiB multiple) */
	uint64_t chunk_bytes; /* SHM_CHUNK */
	uint64_t bitmap_off;  /* offset of u64[(nchunks + 63) / 64]: bit i set = chunk i used */
	uint64_t runlen_off;  /* offset of u32[nchunks]: chunks of the allocation starting at i */
	uint32_t nchunks;     /* chunks in the slot area */
	uint32_t flags;       /* SHM_ARENA_HDR_* */
	uint64_t file_off;    /* file arenas: offset of struct shm_arena_file_hdr; memfds: 0 */
	/* Everything below is guarded by lock. */
	union {
		pthread_mutex_t mutex; /* PTHREAD_PROCESS_SHARED | PTHREAD_MUTEX_ROBUST */
		uint8_t bytes[64];     /* pins the layout whatever the libc's mutex size */
	} lock;
	struct shm_arena_intent intent; /* update in flight, for EOWNERDEAD recovery */
	uint64_t used_chunks;           /* chunks in live allocations */
	uint32_t live_slots;            /* live allocations */
	uint32_t cursor;                /* next-fit: chunk where the next search starts */
	uint64_t recoveries;            /* times a dead lock owner's state was repaired */
	uint32_t warm_n;                /* entries of warm[] in use, <= SHM_ARENA_WARM */
	uint32_t warm[SHM_ARENA_WARM];  /* first chunks of the runs freed last, the latest last */
	uint8_t reserved[80 - 4 - 4 * SHM_ARENA_WARM]; /* zero; room to grow */
};
_Static_assert(sizeof(pthread_mutex_t) <= 64, "the arena lock must fit its 64 bytes");
_Static_assert(sizeof(struct shm_arena_hdr) == 256, "shm_arena_hdr is ABI");
_Static_assert(offsetof(struct shm_arena_hdr, nchunks) == 56, "shm_arena_hdr is ABI");
_Static_assert(offsetof(struct shm_arena_hdr, lock) == 72, "shm_arena_hdr is ABI");
_Static_assert(offsetof(struct shm_arena_hdr, intent) == 136, "shm_arena_hdr is ABI");
_Static_assert(offsetof(struct shm_arena_hdr, used_chunks) == 152, "shm_arena_hdr is ABI");
_Static_assert(offsetof(struct shm_arena_hdr, warm_n) == 176, "shm_arena_hdr is ABI");

/*
 * ---- File arenas (format SHM_ARENA_FILE_VERSION, independent of SHM_ABI_VERSION) ----
 *
 * An arena kept in a file (hugetlbfs, or /dev/shm on normal pages) outlives
 * the process that made it, so that updates answered 202 survive a crash of
 * the node. Its header region is:
 *
 *   0     bitmap_off runlen_off file_off        journal_off                  data_off
 *   | hdr | bitmap[] | runlen[] | file_hdr      | shm_journal_rec[nrecs] | pad | chunk 0 ...
 *
 * The file format version changes when shm_arena_file_hdr or shm_journal_rec
 * change, or when the meaning of a record does; a reader refuses any other
 * version (-EPROTO) rather than guess. SHM_ABI_VERSION still covers
 * shm_arena_hdr, which both kinds of arena share.
 */
#define SHM_ARENA_FILE_MAGIC 0x454c494642495254ull /* "TRIBFILE" little-endian */
#define SHM_ARENA_FILE_VERSION 2 /* 2: records name their client (issue 13) */
#define SHM_ARENA_NODE_ID_MAX 192   /* bytes of node_id, NUL included */
#define SHM_ARENA_DATA_DIR_MAX 4096 /* bytes of data_dir, NUL included (PATH_MAX) */

/*
 * The file header. Written once by the creator before shm_arena_hdr.magic
 * (which goes last), then only read.
 *
 * huge_added: the pages stay added for as long as the file lives, whoever
 * owns it (a process killed never gives anything back), and whoever removes
 * the file gives them back after unlinking and unmapping it, when they are
 * free pool pages. Giving them back while the file holds them would turn
 * them into surplus pages, which the next process that raises nr_hugepages
 * (any server on the machine) silently promotes to persistent ones: a leak.
 */
struct shm_arena_file_hdr {
	uint64_t magic;       /* SHM_ARENA_FILE_MAGIC */
	uint32_t format;      /* SHM_ARENA_FILE_VERSION */
	uint32_t hdr_bytes;   /* sizeof(struct shm_arena_file_hdr) */
	uint32_t rec_bytes;   /* sizeof(struct shm_journal_rec) */
	uint32_t nrecs;       /* journal capacity: one record per slot chunk (nchunks) */
	uint64_t journal_off; /* arena offset of rec[0], a multiple of 64 */
	uint64_t created_ns;  /* CLOCK_REALTIME of creation, for logs */
	uint64_t huge_added;  /* pages added to nr_hugepages for this file; given back at removal */
	uint32_t creator_pid; /* for logs only: pids are reused */
	uint32_t reserved0;   /* zero */
	uint64_t reserved1;   /* zero */
	char node_id[SHM_ARENA_NODE_ID_MAX];   /* the caller's identity string, NUL-terminated */
	char data_dir[SHM_ARENA_DATA_DIR_MAX]; /* realpath of the owner's data dir, NUL-terminated */
};
_Static_assert(sizeof(struct shm_arena_file_hdr) == 64 + 192 + 4096, "shm_arena_file_hdr is ABI");
_Static_assert(offsetof(struct shm_arena_file_hdr, huge_added) == 40, "shm_arena_file_hdr is ABI");
_Static_assert(offsetof(struct shm_arena_file_hdr, node_id) == 64, "shm_arena_file_hdr is ABI");
_Static_assert(offsetof(struct shm_arena_file_hdr, data_dir) == 256, "shm_arena_file_hdr is ABI");

/* Values of shm_journal_rec.state: the commit mark. */
enum shm_rec_state {
	SHM_REC_FREE = 0,      /* unused; any other field is garbage */
	SHM_REC_RESERVED = 1,  /* being filled by the writer; not committed: a reader skips it */
	SHM_REC_COMMITTED = 2, /* every other field is final (stored before, release ordering) */
};

/* Values of shm_journal_rec.kind. */
enum shm_rec_kind {
	SHM_REC_UPDATE = 1,  /* one client update, answered 202 once committed */
	SHM_REC_PARTIAL = 2, /* a leaf's (or mid's) sum of updates [seq, seq + count) */
};

#define SHM_REC_KEY_MAX 64   /* bytes of an idempotency key */
#define SHM_REC_BODY_MAX 80    /* bytes of the stored answer body (the 202 body is < 48) */
#define SHM_REC_CLIENT_MAX 32  /* bytes of a client id (TRIB_CRED_CLIENT_MAX) */

/*
 * One journal record. A record is COMMITTED only by one store-release of state
 * after every other field is written; readers load state with acquire and
 * trust the other fields only when it is COMMITTED. So a crash at any point
 * before the mark loses only that record, whose update never got its 202.
 *
 * Coverage: an UPDATE covers its own sequence number [seq, seq + 1); a PARTIAL
 * covers the contiguous range [seq, seq + count) of update sequence numbers of
 * (job, round) that its accumulator slot holds, weighted sum and total weight.
 * A committed record whose range lies inside a committed PARTIAL's range (of
 * the same job and round) is superseded: its bytes are already in the PARTIAL.
 */
struct shm_journal_rec {
	_Atomic uint32_t state; /* enum shm_rec_state: the commit mark, stored last (release) */
	uint16_t kind;          /* enum shm_rec_kind */
	uint8_t key_len;        /* bytes of key in use, <= SHM_REC_KEY_MAX; 0: no key */
	uint8_t body_len;       /* bytes of body in use, <= SHM_REC_BODY_MAX */
	uint64_t job;           /* the job's SQLite id */
	uint64_t round;         /* round (sync jobs) or model version (FedBuff) folded into */
	uint64_t seq;           /* UPDATE: its index within the round; PARTIAL: first covered */
	uint32_t count;         /* sequence numbers covered: 1 for an UPDATE */
	uint32_t nsegs;         /* entries of struct shm_seg at segs_off (0: none) */
	double weight;          /* UPDATE: sample count; PARTIAL: total weight folded in */
	uint64_t slot_off;      /* arena offset of the slot holding the payload or accumulator */
	uint64_t segs_off;      /* arena offset of the segment table (inside the slot) or 0 */
	uint64_t commit_no;     /* journal-wide commit counter at commit: the order of commits */
	uint16_t http_status;   /* UPDATE: the status answered (202), for a resend */
	uint8_t client_len;     /* bytes of client in use, <= SHM_REC_CLIENT_MAX; 0: none */
	uint8_t reserved0;      /* zero */
	float fold_scale;       /* UPDATE: extra factor on its fold weight (FedBuff); 0 = 1 */
	uint8_t key[SHM_REC_KEY_MAX];   /* the Idempotency-Key, key_len bytes */
	uint8_t body[SHM_REC_BODY_MAX]; /* the answer's body, body_len bytes */
	uint8_t client[SHM_REC_CLIENT_MAX]; /* UPDATE: its client token's id, client_len bytes */
};
_Static_assert(sizeof(_Atomic uint32_t) == 4, "the commit mark is 32-bit");
_Static_assert(sizeof(struct shm_journal_rec) == 256, "shm_journal_rec is ABI");
_Static_assert(offsetof(struct shm_journal_rec, job) == 8, "shm_journal_rec is ABI");
_Static_assert(offsetof(struct shm_journal_rec, weight) == 40, "shm_journal_rec is ABI");
_Static_assert(offsetof(struct shm_journal_rec, commit_no) == 64, "shm_journal_rec is ABI");
_Static_assert(offsetof(struct shm_journal_rec, key) == 80, "shm_journal_rec is ABI");
_Static_assert(offsetof(struct shm_journal_rec, body) == 144, "shm_journal_rec is ABI");
_Static_assert(offsetof(struct shm_journal_rec, client) == 224, "shm_journal_rec is ABI");

#endif
