/* SPDX-License-Identifier: MIT */
/* A durable write that failed and is retried with backoff until it succeeds: its state, pure. */
#ifndef TRIB_RETRY_H
#define TRIB_RETRY_H

#include <stdbool.h>
#include <stdint.h>

/* The first retry comes this long after a failure; each next one waits twice as long... */
#define TRIB_RETRY_BASE_NS (200ull * 1000000ull)
/* ...up to this. */
#define TRIB_RETRY_CAP_NS (10ull * 1000000000ull)

/*
 * One pending write (a job's model, say). Zeroed: nothing pending. The
 * functions below are pure: the caller passes the clock and does the I/O,
 * so a test walks every state without a disk or a sleep.
 */
struct trib_retry {
	int err;            /* 0: nothing pending; else the last failure, -errno */
	uint32_t what;      /* the caller's name for what is pending (a round) */
	uint32_t retries;   /* attempts that failed after the first failure */
	int64_t since_unix; /* the first failure, wall clock, seconds */
	uint64_t since_ns;  /* the first failure, monotonic */
	uint64_t next_ns;   /* the next attempt is due then (monotonic) */
};

/*
 * The wait before retry number @k (1 for the first retry) after @k failed
 * attempts in a row:
 *   delay(k) = min(TRIB_RETRY_BASE_NS * 2^(k-1), TRIB_RETRY_CAP_NS)
 * that is 200 ms, 400 ms, 800 ms, ... 6.4 s, then 10 s for good. k = 0 is
 * taken as 1. Never overflows, whatever @k.
 */
uint64_t trib_retry_delay_ns(uint32_t k);

/*
 * Attempt on @what failed with @err (-errno, not 0) at @now_ns (@now_unix
 * on the wall clock): the next attempt is due at now + delay(failures).
 * A failure while another @what is pending keeps the first one's since
 * and counts on (the caller retries the oldest first). Returns true on the
 * first failure (the caller says so loudly), false on a retry that failed.
 */
bool trib_retry_fail(struct trib_retry *r, int err, uint32_t what, uint64_t now_ns,
		     int64_t now_unix);

/* Whether an attempt may run at @now_ns: nothing pending, or the next one is due. */
bool trib_retry_due(const struct trib_retry *r, uint64_t now_ns);

/* Whether a write is pending (it failed and has not succeeded since). */
static inline bool trib_retry_pending(const struct trib_retry *r)
{
	return r->err != 0;
}

/*
 * The attempt succeeded: nothing is pending any more. Returns the number
 * of failed attempts before it (0 if none was pending), for the log.
 */
uint32_t trib_retry_ok(struct trib_retry *r);

/* "ENOSPC" for -ENOSPC (or ENOSPC): the errno's symbolic name, "EUNKNOWN" if it has none. */
const char *trib_errno_name(int err);

#endif
