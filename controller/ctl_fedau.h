/* SPDX-License-Identifier: MIT */
/*
 * A cluster's fedau table: each client's participation-interval estimate (core/trib_fedau.h),
 * kept by the controller because only it sees every update of a client whatever gateway it
 * reaches. The rule is the single node's (runtime/node/rt_fedau.c): a client's update of round
 * r weighs the estimate from its participations before r, and moves it once per round; at most
 * CTL_FEDAU_CLIENTS_MAX clients, the one whose last participation is the oldest forgotten
 * first. Durable in the store's `fedau_clients` rows (ctl_store_fedau.c), written when a round
 * commits, before its model file.
 */
#ifndef CTL_FEDAU_H
#define CTL_FEDAU_H

#include <stddef.h>
#include <stdint.h>

#include "ctl_store.h"
#include "trib_fedau.h"

/* As one node remembers (RT_FEDAU_CLIENTS_MAX): the same clients are forgotten in a cluster. */
#define CTL_FEDAU_CLIENTS_MAX TRIB_FEDAU_CLIENTS_MAX

struct ctl_fedau;

/* A table for cutoff @k (TRIB_FEDAU_K_MIN..MAX); NULL on -ENOMEM or a bad @k. */
struct ctl_fedau *ctl_fedau_new(uint32_t k);
void ctl_fedau_free(struct ctl_fedau *t);

/*
 * Client @id's update of @round is counted: *w gets its weight and its state moves (a
 * participation in @round). Asked again for the same round (its update was given back or its
 * node lost, and it sends again), the same weight, the state unmoved. 0; -EINVAL (no id, or an
 * id longer than a client token's); -ESTALE if the client took part in a later round already,
 * or in @round before a restart of the controller (its weight then is not known here);
 * -EOVERFLOW (trib_fedau_observe); -ENOMEM.
 */
int ctl_fedau_take(struct ctl_fedau *t, const char *id, uint32_t round, double *w);

/* The job's rows from the store (after a restart). 0 or -errno; the table is then as saved. */
int ctl_fedau_load(struct ctl_fedau *t, struct ctl_store *st, int64_t job_id);
/* The states that moved and the clients forgotten since the last save, in one transaction. */
int ctl_fedau_save(struct ctl_fedau *t, struct ctl_store *st, int64_t job_id);
/* Clients the table holds. */
size_t ctl_fedau_size(const struct ctl_fedau *t);

#endif
