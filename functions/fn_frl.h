/* SPDX-License-Identifier: MIT */
/* FRL (Mozaffari et al., "FRL: Federated Rank Learning", 2021/2023): rankings aggregated by vote. */
#ifndef FN_FRL_H
#define FN_FRL_H

#include <stddef.h>
#include <stdint.h>

/*
 * A client's ranking of a tensor of n parameters is a permutation p of 0..n-1 (I32): p[j] is
 * the index of the parameter the client puts at position j (FRL's argsort of its scores, so
 * the best-scored parameters come last). The server's vote gives parameter p[j] j points:
 *
 *   votes[i] = sum over the round's clients of the position of i in their ranking
 *   global   = the stable argsort of votes: global[j] = the index with the j-th smallest
 *              vote, ties broken by the lower index (numpy argsort(kind="stable"))
 *
 * All integer, all exact: the order of the fold never changes a vote. Votes are uint32: k
 * clients give at most k(n-1) to one parameter, so the job's bound is k(n-1) < 2^32 (the
 * caller checks it; fn_frl_votes_fit()); then a partial (a sum of votes) also fits, and the
 * accumulator keeps the 4-byte cells every fold tree already has.
 */

/* Whether k rankings of n entries sum without overflow: k(n-1) <= UINT32_MAX. */
int fn_frl_votes_fit(uint64_t k, uint64_t n);

/*
 * 0 if @p (n entries, borrowed) is a permutation of 0..n-1. Else -EINVAL and *bad = the first
 * position j whose p[j] is negative, >= n, or already seen at an earlier position.
 * @seen: n bytes of caller-owned scratch (any contents; cleared here).
 */
int fn_frl_check(const int32_t *p, size_t n, uint8_t *seen, size_t *bad);

/* votes[p[j]] += j for j < n; @p must have passed fn_frl_check() (-EINVAL if an entry is out of range). */
int fn_frl_vote(uint32_t *votes, const int32_t *p, size_t n);

/* acc[i] += part[i]: a partial (a sum of votes) into its parent's sum. */
void fn_frl_add(uint32_t *acc, const uint32_t *part, size_t n);

/*
 * out[j] = the index with the j-th smallest vote (ties: the lower index), for n votes
 * (n <= INT32_MAX + 1). @scratch: 2n uint64 of caller-owned memory. 0 or -EINVAL (n too large).
 */
int fn_frl_rank(const uint32_t *votes, size_t n, int32_t *out, uint64_t *scratch);

#endif
