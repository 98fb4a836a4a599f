/* SPDX-License-Identifier: MIT */
/* A job's tensors, from the JSON of its creation request: the one rule for node and controller. */
#ifndef TRIB_SCHEMA_H
#define TRIB_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "trib_safetensors.h"

/* Most parameters one model holds (the sum over its tensors). */
#define TRIB_SCHEMA_MAX_ELEM (1ull << 32)

/*
 * Parse a "tensors" array (@arr, borrowed): 1..4096 entries of {"name",
 * "shape", optional "dtype": "F32"}, names unique and not "__metadata__",
 * shape entries positive, at most 2^32 parameters in all. On success *out
 * (@nout entries, dtype F32, n_elem set) is owned by the caller (trib_free)
 * and *n_elem is the total. Returns 0, -EINVAL (*why is a static message
 * for the client) or -ENOMEM.
 */
int trib_schema_from_json(const json_t *arr, struct trib_tensor **out, size_t *nout,
			  uint64_t *n_elem, const char **why);

/*
 * The schema of a job from its creation request @spec (borrowed): "params":
 * N gives one F32 tensor "weights" of shape [N] (1 <= N <= 2^32), "tensors":
 * [...] as trib_schema_from_json(); exactly one of the two. Same results.
 */
int trib_schema_from_spec(const json_t *spec, struct trib_tensor **out, size_t *nout,
			  uint64_t *n_elem, const char **why);

/*
 * trib_schema_from_spec(), and *at: the index of the "tensors" entry it refused (to name it in
 * the message), or SIZE_MAX when the refusal is not one entry's.
 */
int trib_schema_from_spec_at(const json_t *spec, struct trib_tensor **out, size_t *nout,
			     uint64_t *n_elem, const char **why, size_t *at);

/*
 * A flora job's flat model (runtime/node/rt_flora.h): when @spec says "algorithm": "flora",
 * appends to the schema of its "tensors" (*@out, @nout entries, may move) each pair's a
 * [S R, n], b [m, S R] and "<name>.rank" [1] (all F32 here; S = clients_per_round), in pair
 * order; else nothing. The one rule for node and controller; the node checks the pairs first
 * (rt_flora_spec) and names what is wrong. 0, -EINVAL (@why), -ENOMEM.
 */
int trib_schema_add_flora(const json_t *spec, struct trib_tensor **out, size_t *nout,
			  uint64_t *n_elem, const char **why);

/*
 * scaffold's model is [x ; c] (functions/fn_scaffold.h): every tensor of @spec (modified in
 * place) gets a twin `c.<name>` after them all, so the one schema rule checks both halves and
 * the node and the controller store the same doubled schema. "params": N becomes its tensor
 * "weights" first. 0 (also when @spec has no valid "tensors": the schema rule then says what is
 * wrong); -EINVAL with *at the index of a tensor whose name already starts with "c."; -ENOMEM.
 */
int trib_schema_scaffold(json_t *spec, size_t *at);

#endif
