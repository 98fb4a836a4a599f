/* SPDX-License-Identifier: MIT */
/* FedAU's per-client weight: the online estimate of the client's participation interval. */
#ifndef TRIB_FEDAU_H
#define TRIB_FEDAU_H

#include <stdint.h>

/*
 * FedAU (Wang and Ji, "A Lightweight Method for Tackling Unknown Participation Statistics in
 * Federated Averaging", ICLR 2024, Algorithm 1 with its online weight estimation; IBM/fedau's
 * main.py, weighting_method 'adaptive'). Per client and per round: a round it sits out adds 1
 * to its count of missed rounds, and when that count reaches the cutoff K, K is recorded as an
 * interval and the count restarts; a round it takes part in is weighted by the mean of the
 * intervals recorded so far (1 while none is), then records count + 1 and restarts the count.
 * The mean interval estimates 1/p for a client taking part with probability p, so rare clients
 * weigh more and the weighted sum is unbiased for the mean over all clients.
 *
 * Kept lazily: only the round of the last participation (every round between two of them was
 * missed), the intervals recorded and their sum, all integers, so the weight is exact
 * (total / intervals in double) whatever the order of the clients.
 */
struct trib_fedau_client {
	int64_t last_round; /* the last round it took part in; -1: none yet (a new client) */
	uint32_t intervals; /* intervals recorded */
	uint64_t total;     /* their sum, in rounds */
};

/* The cutoff K's bounds, and the paper's experiments' value (the default). */
#define TRIB_FEDAU_K_MIN 1u
#define TRIB_FEDAU_K_MAX 100000u
#define TRIB_FEDAU_K_DEFAULT 50u

/*
 * Clients one job remembers, on one node (runtime/node/rt_fedau.c) and in a cluster
 * (controller/ctl_fedau.c) alike: past it, the client whose last participation is the oldest is
 * forgotten, and counts as new if it comes back.
 */
#define TRIB_FEDAU_CLIENTS_MAX 10000u

/* A client never seen: no interval yet, missing since round 0. */
#define TRIB_FEDAU_NEW ((struct trib_fedau_client){ .last_round = -1 })

/*
 * Client @c takes part in round @round (cutoff @k): *weight gets its weight for that round and
 * @c becomes its state after it. 0; -EALREADY (nothing changes) if @round is not after
 * c->last_round (already counted: a replayed update); -EINVAL if @k is out of range, or
 * -EOVERFLOW if the sum would pass 2^53 (its weight would no longer be exact).
 */
int trib_fedau_observe(struct trib_fedau_client *c, uint32_t round, uint32_t k, double *weight);

#endif
