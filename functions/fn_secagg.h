/* SPDX-License-Identifier: MIT */
/* Secure aggregation's kernels: the u32 fold of masked vectors and the mask expansion by range. */
#ifndef FN_SECAGG_H
#define FN_SECAGG_H

#include <stddef.h>
#include <stdint.h>

/*
 * Determinism: masked updates live in Z/2^32 and every operation here is an addition modulo
 * 2^32, which is associative and commutative. So the result is bit-identical whatever the
 * implementation ("avx2" or "generic"), the order updates arrive in, the shape of the tree that
 * folds them, and the way a vector is split into ranges: exactness is the contract, not an
 * approximation of it (unlike the f32 folds of fn_fold.h).
 */

/* acc[i] += x[i] (mod 2^32) for i < n. Borrowed buffers, 4-byte aligned, not overlapping. */
void fn_fold_u32(uint32_t *restrict acc, const uint32_t *restrict x, size_t n);

/* The portable loop fn_fold_u32 falls back to; tests compare the two. */
void fn_fold_u32_generic(uint32_t *restrict acc, const uint32_t *restrict x, size_t n);

/* acc[i] += xs[0][i] + ... + xs[k-1][i] (mod 2^32), one pass over acc per group of 4. */
void fn_fold_u32_multi(uint32_t *restrict acc, const uint32_t *const *xs, size_t k, size_t n);

/* "avx2" or "generic": what fn_fold_u32 runs on this CPU. A static string. */
const char *fn_fold_u32_impl(void);

/*
 * Range @idx of @parts over @total words: [first, first + n) with
 *     first = floor(idx * total / parts),  n = floor((idx + 1) * total / parts) - first
 * so the ranges tile [0, total) in order and differ in length by at most one. Returns 0, or
 * -EINVAL if parts is 0, idx >= parts, parts > 2^16 or total > 2^36 (the products stay in u64).
 */
int fn_secagg_range(uint64_t total, uint32_t parts, uint32_t idx, uint64_t *first, uint64_t *n);

/* One mask stream of an unmasking: its 32-byte PRG key (core/trib_secagg_crypto.h) and sign. */
struct fn_secagg_stream {
	uint8_t key[32];
	int32_t sign; /* +1 adds the stream, -1 subtracts it */
};

/*
 * acc[i] += sum_j streams[j].sign * PRG(streams[j].key)[first + i] (mod 2^32) for i < n: the
 * part of an unmasking one function does, for its range of coordinates (fn_secagg_range). The
 * top of the tree gets the whole vector's correction by adding the ranges side by side, or the
 * same correction by splitting the streams instead (every function the full range, a slice of
 * the streams, the results folded with fn_fold_u32): both give the same bits.
 * Returns 0, or -EINVAL for a sign other than +-1 or a range past the stream (2^36 words); on
 * error acc holds part of the sum (the streams go in groups: trib_sa_prg_add_many). Borrowed
 * buffers.
 */
int fn_secagg_expand(uint32_t *acc, uint64_t first, size_t n,
		     const struct fn_secagg_stream *streams, size_t count);

/*
 * A dropped client's pairwise mask with one surviving neighbour, as an unmasking gets it: the
 * rebuilt secret key of the dropped client, the neighbour's advertised public key, the pair
 * (lo < hi) the key is derived for, and the sign. The stream key is
 * trib_sa_derive(trib_sa_agree(sk, pk), "mask", round, lo, hi): the X25519 agreement, the costly
 * part, is the function's (fn_secagg_pair_key), not the server thread's.
 */
struct fn_secagg_pair {
	uint8_t sk[32];
	uint8_t pk[32];
	uint32_t lo, hi;
	int32_t sign;
};
_Static_assert(sizeof(struct fn_secagg_pair) == 76, "fn_secagg_pair is ABI");

/* The stream of @p for @round: 0, or -EINVAL (a low-order key, lo >= hi, a sign not +-1). */
int fn_secagg_pair_key(const struct fn_secagg_pair *p, uint64_t round, struct fn_secagg_stream *out);

/*
 * An unmasking's task, in an arena slot the runtime owns (a shard of a secure job gets its
 * offset as fn_params.state_off; FN_ROLE_SHARD with FN_ALGO_SECAGG). Shard i of `parts` writes
 * coordinates fn_secagg_range(words, parts, i) of its output (the config's accumulator, shared
 * by the shards) with sum_j sign_j * PRG(key_j) over the `count` streams at streams_off (struct
 * fn_secagg_stream, 36 bytes each) and the `npairs` pairwise streams at pairs_off (struct
 * fn_secagg_pair, each shard deriving their keys): the correction the runtime adds to the
 * masked sum. A shard writes its range whole (zeroes it first), so one started again after a
 * kill -9 gives the same bits. Keys and secret keys are the round's: the runtime wipes the slot
 * when the round ends.
 */
struct fn_secagg_task {
	uint16_t version;    /* FN_ABI_VERSION */
	uint16_t reserved0;  /* zero */
	uint32_t parts;      /* shards over the coordinates */
	uint32_t count;      /* streams */
	uint32_t npairs;     /* pairwise streams to derive */
	uint64_t words;      /* coordinates: the config's n_elem (the model's + the weight) */
	uint64_t streams_off; /* arena offset of the streams, 4-byte aligned */
	uint64_t pairs_off;  /* arena offset of the pairs, 4-byte aligned */
	uint64_t round;      /* the round the pairwise keys are derived for */
};
_Static_assert(sizeof(struct fn_secagg_task) == 48, "fn_secagg_task is ABI");
_Static_assert(sizeof(struct fn_secagg_stream) == 36, "fn_secagg_stream is ABI");

#endif
