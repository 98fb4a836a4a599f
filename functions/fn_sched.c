// SPDX-License-Identifier: MIT
/*
 * The scheduling class of a function, idle and folding.
 *
 * Why: a warm function waits in poll() for its next CONFIG. Under a round
 * the gateway and the folding functions keep both cores busy, and a normal
 * task's wake-up queues behind them: with EEVDF's least custom slice (100 us,
 * what fn_main.c asked for before) the hand-off was 35-79 us at the median
 * but 0.2-22 ms at p99 (docs/BENCHMARKS.md, issue 17). A SCHED_FIFO task
 * preempts every normal one the moment it wakes. So a function is real-time
 * exactly while it is idle: from its exec (the runtime's thread is FIFO over
 * the spawn, runtime/node/rt_fnproc.c, and the child inherits it) or its
 * DONE to the READY of its next CONFIG, which is a few syscalls and the
 * accumulator's setup; it drops to SCHED_OTHER right after READY, before it folds anything,
 * so folding keeps the normal class, slice and CPU share. An idle function
 * uses no CPU: what it can take at FIFO is bounded by one configure.
 *
 * Where FIFO is refused (no CAP_SYS_NICE and RLIMIT_RTPRIO 0), the idle
 * phase takes the 100 us slice instead (SCHED_OTHER, Linux >= 6.12), and
 * where that is refused too, the default: only the wake-ups are slower.
 */
#include "fn_sched.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "trib_log.h"

struct fn_sched_attr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
	uint32_t util_min, util_max;
};

#define FN_IDLE_SLICE_NS 100000ull /* the kernel's least custom slice */

enum idle_mode { IDLE_KEEP, IDLE_FIFO, IDLE_SLICE };

static enum idle_mode mode = IDLE_KEEP;
static int nice_fold; /* the nice we fold at: inherited from the runtime */
static int cur = -1;  /* the class set now: 1 idle, 0 folding, -1 not ours to set */

void fn_sched_init(bool spawned_fifo)
{
	struct fn_sched_attr a;

	memset(&a, 0, sizeof(a));
	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0)) {
		trib_debug("sched_getattr: %s; the scheduling class stays", strerror(errno));
		return;
	}
	if (a.policy == SCHED_FIFO && spawned_fifo)
		cur = 1;
	else if (a.policy == SCHED_OTHER)
		cur = 0;
	else
		return; /* started in a class the operator chose */
	/* A FIFO task keeps its nice (static priority): getpriority gives it. */
	errno = 0;
	nice_fold = getpriority(PRIO_PROCESS, 0);
	if (errno) {
		trib_debug("getpriority: %s; the scheduling class stays", strerror(errno));
		cur = -1;
		return;
	}
	mode = IDLE_FIFO;
}

static int set_attr(bool idle)
{
	struct fn_sched_attr a;

	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	if (idle && mode == IDLE_FIFO) {
		a.policy = SCHED_FIFO;
		a.priority = 1;
	} else {
		a.policy = SCHED_OTHER;
		a.nice = nice_fold;
		a.runtime = idle ? FN_IDLE_SLICE_NS : 0;
	}
	return syscall(SYS_sched_setattr, 0, &a, 0) ? -errno : 0;
}

int fn_sched_idle(bool idle)
{
	int err;

	if (mode == IDLE_KEEP || cur < 0 || cur == (int)idle)
		return 0;
	err = set_attr(idle);
	if (!err) {
		cur = idle;
		return 0;
	}
	if (!idle) {
		/* Still FIFO (or a short slice): folding here would starve normal tasks. */
		trib_error("sched_setattr (SCHED_OTHER, nice %d): %s", nice_fold, strerror(-err));
		return err;
	}
	if (mode == IDLE_FIFO) {
		trib_debug("SCHED_FIFO while idle: %s; the %llu ns slice instead", strerror(-err),
			   FN_IDLE_SLICE_NS);
		mode = IDLE_SLICE;
		return fn_sched_idle(idle);
	}
	trib_debug("sched_setattr (slice %llu ns): %s; idle wake-ups take the default slice",
		   FN_IDLE_SLICE_NS, strerror(-err));
	mode = IDLE_KEEP;
	return 0;
}
