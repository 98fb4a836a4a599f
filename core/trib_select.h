/* SPDX-License-Identifier: MIT */
/*
 * Client selection's one number (issue 15), shared by a single node (runtime/node/rt_select.c)
 * and the controller (controller/ctl_select.c), so that a cluster hands out exactly as many
 * tasks a round as one node would:
 *
 *	tasks a round = ceil(per_round x overcommit), at least per_round
 */
#ifndef TRIB_SELECT_H
#define TRIB_SELECT_H

#include <math.h>
#include <stdint.h>

static inline uint32_t trib_select_max(uint32_t k, double f)
{
	/* 5 x 1.4 is 7.000000000000001 in binary: a hair over an integer is that integer. */
	double m = ceil((double)k * f - 1e-9);

	return m < (double)k ? k : m > (double)UINT32_MAX ? UINT32_MAX : (uint32_t)m;
}

#endif
