/* SPDX-License-Identifier: MIT */
/* A log line limited to one per period per key (refusals by reason and job): its state, pure. */
#ifndef TRIB_RATELIMIT_H
#define TRIB_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* One line a second, at most, per limiter. */
#define TRIB_RATELIMIT_PERIOD_NS 1000000000ull

/*
 * One key's limiter. Zeroed: nothing said yet (the first event may log).
 * Pure: the caller passes the monotonic clock, so a test walks every state
 * without sleeping. Events that may not log are counted, and the next line
 * that may reports them, so a flood is visible as a count, never lost.
 */
struct trib_ratelimit {
	uint64_t last_ns;    /* when the last line was allowed (0: never) */
	uint64_t suppressed; /* events since then that were not logged */
	bool said;           /* a line was allowed at least once */
};

/*
 * An event at @now_ns: true if it may log a line, i.e. no line was allowed
 * yet or the last one is at least TRIB_RATELIMIT_PERIOD_NS old (a clock
 * that went backwards counts as "not yet"). Then *@suppressed is the number
 * of events held back since the last line, and the count restarts; else
 * the event is counted and *@suppressed is left alone. @suppressed may be NULL.
 */
bool trib_ratelimit_allow(struct trib_ratelimit *rl, uint64_t now_ns, uint64_t *suppressed);

#endif
