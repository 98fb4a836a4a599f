// SPDX-License-Identifier: MIT
/* frl's model: the round's votes ranked per tensor, the identity as version 0, the store's check. */
#include "rt_node_priv.h"

#include <errno.h>
#include <string.h>

#include "fn_frl.h"
#include "trib_alloc.h"

/*
 * The accumulator of an frl round holds uint32 votes in schema order (fn_frl.c); the model is,
 * per tensor, the stable argsort of that tensor's votes (fn_frl_rank): int32 in the same 4-byte
 * cells, so every size the runtime and the controller compute for a model (n_elem x 4) holds.
 * The sort runs where the round ends: here on one node (rt_commit.c), at the round's top in a
 * cluster (runtime/cluster), so a model that travels is already a ranking and is never ranked
 * twice.
 */
int rt_job_frl_rank(const struct rt_job *j, const void *votes, int32_t *out)
{
	const uint32_t *v = votes;
	uint64_t big = 0, *scratch;
	int err = 0;

	for (size_t i = 0; i < j->nschema; i++)
		if (j->schema[i].n_elem > big)
			big = j->schema[i].n_elem;
	scratch = trib_malloc((big ? big : 1) * 2 * sizeof(*scratch)); /* fn_frl_rank's 2n */
	if (!scratch)
		return -ENOMEM;
	for (size_t i = 0, at = 0; i < j->nschema && !err; at += j->schema[i].n_elem, i++)
		err = fn_frl_rank(v + at, (size_t)j->schema[i].n_elem, out + at, scratch);
	trib_free(scratch);
	return err;
}

/*
 * Version 0 of an frl job (before any round): the identity ranking 0..n-1 of every tensor. It
 * is what fn_frl_rank gives for all-equal votes (ties go to the lower index), so a round that
 * folds nothing (a cluster node's zeros) and the start agree.
 */
void rt__frl_identity(const struct rt_job *j, int32_t *out)
{
	for (size_t i = 0, at = 0; i < j->nschema; at += j->schema[i].n_elem, i++)
		for (uint64_t e = 0; e < j->schema[i].n_elem; e++)
			out[at + e] = (int32_t)e;
}

/*
 * The store's backstop (rt__store_blob) for an I32 model: every tensor a permutation. A model
 * that is not one was not made by the vote; it is never written. 0, -EDOM (*tensor, *bad: the
 * tensor and position) or -ENOMEM.
 */
int rt__frl_check_model(const struct rt_job *j, const int32_t *m, size_t *tensor, size_t *bad)
{
	uint64_t big = 0;
	uint8_t *seen;
	int err = 0;

	for (size_t i = 0; i < j->nschema; i++)
		if (j->schema[i].n_elem > big)
			big = j->schema[i].n_elem;
	seen = trib_malloc(big ? big : 1);
	if (!seen)
		return -ENOMEM;
	for (size_t i = 0, at = 0; i < j->nschema; at += j->schema[i].n_elem, i++) {
		if (fn_frl_check(m + at, (size_t)j->schema[i].n_elem, seen, bad)) {
			*tensor = i;
			err = -EDOM;
			break;
		}
	}
	trib_free(seen);
	return err;
}
