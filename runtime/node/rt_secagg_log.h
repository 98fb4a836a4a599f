/* SPDX-License-Identifier: MIT */
/* A secure round's state log: each stage message acknowledged, so a restart resumes the round. */
#ifndef RT_SECAGG_LOG_H
#define RT_SECAGG_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * One file per secagg job with a secure round in progress: DIR/<job>.log (DIR is
 * DATA_DIR/secagg, <job> the journal's id of the job: SQLite's, in a cluster the controller's).
 * The state machine of rt_secagg.h is deterministic given its cfg (the graph seed included) and
 * the sequence of client messages and stage ends it took, so the file is that sequence, replayed
 * through the same calls at start (rt_secagg_resume.c). A record is
 *
 *   u32 magic "TSA1" | u32 crc | u32 type | u32 len | payload (len bytes)
 *
 * crc is CRC32C of type, len and the payload. A record that is short, has another magic, an
 * unknown type, a length above RT_SALOG_MAX or a bad crc ends the file: it was the write a
 * crash cut, never acknowledged; the load truncates the file there (and counts it in *torn).
 *
 * Durability mirrors the node's --durability: each append is one write() (in the page cache
 * when it returns: it survives a kill of the process, not of the machine), and with @durable
 * also fdatasync'ed before the append returns (the file's creation: the directory too). The
 * caller acknowledges a stage message only after its append returned 0.
 *
 * Nothing here is a secret the server may not hold (docs/SECURITY.md, "Secure aggregation"):
 * public keys, ciphertexts addressed to other clients, revealed shares (each of one secret the
 * server rebuilds anyway) and digests of request bodies.
 */
#define RT_SALOG_MAGIC 0x31415354u /* "TSA1" little-endian */
#define RT_SALOG_MAX (1u << 20)     /* the largest payload (a share stage of 254 ciphertexts) */

enum rt_salog_type {
	RT_SALOG_OPEN = 1, /* the round's cfg and when it opened (rt_secagg_resume.c) */
	RT_SALOG_KEYS,     /* u, digest, client id, c_pk, s_pk */
	RT_SALOG_SHARES,   /* u, digest, count, count x (to, ciphertext) */
	RT_SALOG_INPUT,    /* u, digest: u's masked input is in the arena (the journal's record) */
	RT_SALOG_UNMASK,   /* u, digest, count, count x (v, share) */
	RT_SALOG_END,      /* the stage that ended */
	RT_SALOG__COUNT,
};

struct rt_salog;

/* The file's path for @job under @dir, into @path (cap bytes): 0 or -ENAMETOOLONG. */
int rt_salog_path(const char *dir, uint64_t job, char *path, size_t cap);

/*
 * A new log for @job (any old one replaced), its first record RT_SALOG_OPEN with @open (@len
 * bytes). @dir is created (0700) if missing. 0 or -errno; *out is the caller's (rt_salog_close).
 */
int rt_salog_create(const char *dir, uint64_t job, bool durable, const void *open, size_t len,
		    struct rt_salog **out);
/* One record of @type, its payload the @n pieces of @iov in order. 0 or -errno (nothing kept). */
int rt_salog_append(struct rt_salog *l, uint32_t type, const struct iovec *iov, int n);
/* Closes the file (it stays). Accepts NULL. */
void rt_salog_close(struct rt_salog *l);
/* The round is over: the file goes (with @durable, the directory is synced). 0 or -errno. */
int rt_salog_remove(const char *dir, uint64_t job, bool durable);

/* Called per valid record, in file order; non-zero stops the load and is returned. */
typedef int (*rt_salog_cb)(void *ctx, uint32_t type, const uint8_t *p, size_t len);

/*
 * Reads @job's log: @cb for each valid record; a torn tail is cut off (*torn: its bytes, 0 if
 * none). With @out, the file stays open for appends after the last valid record. 0, -ENOENT (no
 * log), @cb's value, or -errno.
 */
int rt_salog_load(const char *dir, uint64_t job, bool durable, rt_salog_cb cb, void *ctx,
		  struct rt_salog **out, uint64_t *torn);

#endif
