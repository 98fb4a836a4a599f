/* SPDX-License-Identifier: MIT */
/* Monotonic and wall clocks in nanoseconds. */
#ifndef TRIB_TIME_H
#define TRIB_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t trib_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double trib_now_s(void)
{
	return (double)trib_now_ns() / 1e9;
}

#endif
