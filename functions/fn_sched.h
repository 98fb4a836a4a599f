// SPDX-License-Identifier: MIT
/* A function's scheduling class: real-time while idle (its wake-up), its own while folding. */
#ifndef FN_SCHED_H
#define FN_SCHED_H

#include <stdbool.h>

/*
 * Once, at start. @spawned_fifo: the runtime started us SCHED_FIFO for the
 * idle phase (argv FN_ARG_IDLE_FIFO, fn_abi.h), so the class to fold in is
 * SCHED_OTHER at our nice. Started SCHED_OTHER: we ask for FIFO ourselves
 * while idle. Started in any other class: the operator's choice, kept.
 */
void fn_sched_init(bool spawned_fifo);

/*
 * Idle (waiting for a CONFIG) or not. Idempotent, one syscall on a change.
 * 0, or -errno when a real-time class could not be left: then the function
 * must not fold (it would take a core from every normal task) and exits.
 */
int fn_sched_idle(bool idle);

#endif
