/* SPDX-License-Identifier: MIT */
/* --durability disk: a log of updates on disk, written by its own thread and io_uring ring. */
#ifndef RT_WAL_H
#define RT_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The log lives in a directory (DATA_DIR/wal): one folder per job (its
 * SQLite id; in a cluster the controller's), one segment file per round or
 * model version in it,
 * "<round>.wal" (10 digits), so that cutting a stored round is unlinking
 * its files. A segment is a run of records:
 *
 *   struct rt_wal_disk (64 bytes) | key | answer | client | meta | body
 *
 * Format 2 (magic "TWL2") added the client id of the update's client
 * credential, so that one update per client per round holds after a replay.
 * Format 1 ("TWAL", struct rt_wal_disk_v1: no client) is still read, its
 * updates with no client. A record whose magic is "TWL" and another digit
 * (a newer build's) stops the replay with -EPROTONOSUPPORT: never read as
 * this format, never cut off as a torn tail.
 *
 * crc is CRC32C over every byte after it (len .. the body's end). A record
 * that is short, has a bad magic or length, or fails its CRC ends the
 * segment: replay truncates the file there (a torn tail: the write the
 * crash interrupted, never answered) and says so in the log.
 *
 * Group commit. The caller (the node's loop thread) appends records; the
 * log's thread takes every record queued since its last batch, writes them
 * with one io_uring submission, then fdatasyncs each segment the batch
 * touched (one per job and round: one for a batch of one job), and only
 * then publishes the batch's last ticket as durable and writes the eventfd.
 * Tickets are 1, 2, 3... in append order; durable tickets are a prefix.
 *
 * A write or fdatasync that fails (ENOSPC, EIO) fails the whole batch: the
 * segments are cut back to their last durable end, the bodies of every
 * pending record are copied (so that the caller may free the memory they
 * came from, see rt_wal_settle()), and the batch is retried with backoff
 * (trib_retry.h) until it succeeds. rt_wal_state() reports the failure.
 *
 * Threads: every function but the thread itself is called from one thread
 * (the caller's), which owns the rt_wal; the queue and the published state
 * are shared with the log's thread under its mutex.
 */

#define RT_WAL_MAGIC	   0x324c5754u /* "TWL2" little-endian: format 2 */
#define RT_WAL_MAGIC_V1	   0x4c415754u /* "TWAL": format 1 (no client id) */
#define RT_WAL_MAGIC_FAMILY 0x004c5754u /* "TWL" and a version digit: magic & 0xffffff */
#define RT_WAL_VERSION	   2u
#define RT_WAL_KEY_MAX	255u
#define RT_WAL_CLIENT_MAX 32u /* TRIB_CRED_CLIENT_MAX */
#define RT_WAL_ANS_MAX	255u
#define RT_WAL_META_MAX (1u << 24)

/* One record's head on disk (little-endian, as the machine). */
struct rt_wal_disk {
	uint32_t magic;	   /* RT_WAL_MAGIC */
	uint32_t crc;	   /* CRC32C of the record from len to its end */
	uint64_t len;	   /* the whole record, this head included */
	uint64_t job;	   /* the job's SQLite id */
	uint32_t round;	   /* the round (FedBuff: the version) the update is folded into */
	uint32_t seq;	   /* its index in that round */
	double weight;	   /* samples */
	float fold_scale;  /* FedBuff staleness factor; 0 = 1 */
	uint8_t key_len;   /* Idempotency-Key, <= RT_WAL_KEY_MAX */
	uint8_t ans_len;   /* the 202's body, <= RT_WAL_ANS_MAX */
	uint8_t client_len; /* the client credential's id, <= RT_WAL_CLIENT_MAX; 0: none */
	uint8_t zero;	   /* 0 when written; readers ignore it (the CRC covers it) */
	uint32_t meta_len; /* the caller's bytes (segment table), <= RT_WAL_META_MAX */
	uint32_t nsegs;	   /* the caller's count for meta */
	uint64_t body_len; /* the update's bytes */
};

/* Format 1's head: the same but for two 16-bit lengths where format 2 has four bytes. */
struct rt_wal_disk_v1 {
	uint32_t magic; /* RT_WAL_MAGIC_V1 */
	uint32_t crc;
	uint64_t len, job;
	uint32_t round, seq;
	double weight;
	float fold_scale;
	uint16_t key_len, ans_len;
	uint32_t meta_len, nsegs;
	uint64_t body_len;
};

_Static_assert(sizeof(struct rt_wal_disk) == 64, "rt_wal_disk is 64 bytes");
_Static_assert(sizeof(struct rt_wal_disk_v1) == 64, "rt_wal_disk_v1 is 64 bytes");
_Static_assert(offsetof(struct rt_wal_disk, key_len) ==
		   offsetof(struct rt_wal_disk_v1, key_len) &&
	       offsetof(struct rt_wal_disk, meta_len) ==
		   offsetof(struct rt_wal_disk_v1, meta_len),
	       "the formats differ only in the lengths at offset 44");

/* One record as appended or replayed (the pointers are borrowed). */
struct rt_wal_rec {
	uint64_t job;
	uint32_t round, seq;
	double weight;
	float fold_scale;
	uint32_t nsegs;
	const void *key;
	size_t key_len;
	const void *ans;
	size_t ans_len;
	const void *meta;
	size_t meta_len;
	const void *body;
	uint64_t body_len;
	const char *client; /* the client credential's id (not NUL-terminated on replay) */
	size_t client_len;  /* 0: none (the job's token, or a format-1 record) */
};

/* What the log did; counters since open. */
struct rt_wal_stats {
	uint64_t appends;	/* records made durable */
	uint64_t batches;	/* batches made durable */
	uint64_t fsyncs;	/* fdatasync calls that succeeded */
	uint64_t bytes;		/* bytes made durable */
	uint64_t failures;	/* batches that failed (each retried) */
	uint64_t max_batch;	/* the largest batch */
	uint64_t batch_hist[8]; /* batches of 1, 2-3, 4-7, ... 128+ records */
	uint64_t cut_files;	/* segment files removed by rt_wal_cut() */
};

/* The state the caller reads after the eventfd fires (a copy). */
struct rt_wal_state {
	uint64_t durable;   /* every ticket <= this is on disk */
	uint64_t settled;   /* every ticket <= this no longer reads the caller's memory */
	int err;	    /* 0, or -errno of the last failed batch (until one succeeds) */
	uint64_t failed_to; /* tickets <= this were in a failed batch (0: none yet) */
	uint64_t retry_ns;  /* when err: the next attempt (trib_now_ns clock) */
	struct rt_wal_stats st;
};

struct rt_wal;
struct rt_wal_ent;

/*
 * Open the log in @dir (created, mode 0700) and start its thread. *out is
 * the caller's (rt_wal_close). 0 or -errno (io_uring setup, thread, dir).
 */
int rt_wal_open(const char *dir, struct rt_wal **out);
/* Write what is queued, stop the thread, close the files. Accepts NULL. */
void rt_wal_close(struct rt_wal *w);
/* The eventfd written after each batch (durable or failed); read it, then rt_wal_state(). */
int rt_wal_fd(const struct rt_wal *w);
void rt_wal_state(struct rt_wal *w, struct rt_wal_state *out);

/*
 * Append in two steps, so that the only fallible step comes before the
 * caller commits to anything: prepare copies @rec's head, key, answer and
 * meta (the body stays borrowed until rt_wal_settle() says otherwise) into
 * *@out (-ENOMEM, -EINVAL: too long); submit queues it and returns its
 * ticket; discard frees a prepared record that will not be submitted.
 */
int rt_wal_prepare(const struct rt_wal_rec *rec, struct rt_wal_ent **out);
uint64_t rt_wal_submit(struct rt_wal *w, struct rt_wal_ent *e);
void rt_wal_discard(struct rt_wal_ent *e);
/* The last ticket submitted (0: none). */
uint64_t rt_wal_last(const struct rt_wal *w);
/*
 * Wait until every submitted record is settled: on disk, or its body copied
 * after a failure; then the memory its body came from may be freed. Waits
 * at most for the batch in flight (one write and fdatasync), never for a
 * retry.
 */
void rt_wal_settle(struct rt_wal *w);
/*
 * Wait until every submitted record is on disk, or a batch failed: 0 or
 * that batch's -errno. At start only (it waits for a whole batch).
 */
int rt_wal_sync(struct rt_wal *w);
/*
 * Round @round of job @job (and every earlier one) is durable elsewhere
 * (its model is stored): its segment files go, after the records queued
 * before this call; queued records of those rounds that failed are dropped.
 */
void rt_wal_cut(struct rt_wal *w, uint64_t job, uint32_t round);

/* What replay found. */
struct rt_wal_replay_stats {
	uint64_t records;    /* valid records reported */
	uint32_t segments;   /* segment files read */
	uint32_t torn;	     /* segments truncated at a bad record */
	uint64_t v1_records; /* format-1 records (no client id) among them */
	uint64_t torn_bytes; /* bytes cut off */
};

/* Called per valid record, in (job, round, file order); non-zero stops the replay. */
typedef int (*rt_wal_cb)(void *ctx, const struct rt_wal_rec *rec);

/*
 * Before the first append: read every segment under @dir in (job, round)
 * order and report each valid record to @cb (pointers valid during the
 * call). A segment is truncated at its first bad record (logged). Returns
 * 0, @cb's value, -EPROTONOSUPPORT (a record of a newer format: logged, the
 * file untouched), or -errno (reading the directory or a file).
 */
int rt_wal_replay(const char *dir, rt_wal_cb cb, void *ctx, struct rt_wal_replay_stats *st);

/* Remove every segment under @dir (--fresh). *@removed gets how many. 0 or -errno. */
int rt_wal_wipe(const char *dir, uint32_t *removed);

/*
 * CRC32C (Castagnoli). With SSE4.2 the crc32 instruction does 8 bytes a
 * step; one stream is bound by its 3-cycle latency, so blocks of 3 x 8 KiB
 * (and 3 x 256 B) go as three streams at once, joined by shifting the
 * first over the others' length: tables for those two lengths (8 KiB).
 */
#define RT_WAL_CRC_LONG	 8192u
#define RT_WAL_CRC_SHORT 256u
struct rt_wal_crc {
	uint32_t lng[4][256];  /* the CRC of x followed by RT_WAL_CRC_LONG zero bytes, per byte */
	uint32_t shrt[4][256]; /* ... RT_WAL_CRC_SHORT zero bytes */
};

void rt_wal_crc_init(struct rt_wal_crc *t);
/* The CRC32C of @len bytes at @p, continuing @crc (0 to start); @t NULL: one stream. */
uint32_t rt_wal_crc32c(const struct rt_wal_crc *t, uint32_t crc, const void *p, size_t len);

/* Tests: hold the thread before its next batch (true) or let it go (false). */
void rt_wal_test_hold(struct rt_wal *w, bool hold);
/* Tests: the next write fails with @err (-errno, 0: none); the next fdatasync with @fsync_err. */
void rt_wal_test_fail(struct rt_wal *w, int err, int fsync_err);

#endif
