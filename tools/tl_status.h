/* SPDX-License-Identifier: MIT */
/*
 * `tributary status`: jobs, functions and data-plane counters of a running node and,
 * on a node of a cluster, the controller's placement of each round, in the terminal.
 */
#ifndef TL_STATUS_H
#define TL_STATUS_H

#include <stdbool.h>
#include <stddef.h>

/* A round with no update for this long is stalled whatever its clients' pace. */
#define TL_STALL_MIN_S 30.0
/* ... or for this many of its job's mean inter-arrival times, when that is longer. */
#define TL_STALL_ARRIVALS 3.0

/*
 * Whether an open round is stalled, as `tributary status` flags it (pure):
 *   stalled = (timeout_s > 0 && age_s > timeout_s)
 *          || since_update_s > max(TL_STALL_ARRIVALS / arrival_rate, TL_STALL_MIN_S)
 * @age_s: since the round's first update; @since_update_s: since the job's last
 * update; @arrival_rate: the job's updates/s smoothed over its last rounds (0:
 * not measured yet, then only the 30 s floor); @timeout_s: its round_timeout_s
 * (0: none; past it the round waits for min_clients). A negative age (not
 * started) is never stalled. When stalled, @why (may be NULL) says which rule.
 */
bool tl_round_stalled(double age_s, double since_update_s, double arrival_rate,
		      double timeout_s, char *why, size_t cap);

/* argv[0] is "status". Returns the process exit code. */
int tl_status_main(int argc, char **argv);

#endif
