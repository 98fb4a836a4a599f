/* SPDX-License-Identifier: MIT */
/* FLoRA (Wang et al., 2024): heterogeneous LoRA adapters stacked, so the sum of products is exact. */
#ifndef FN_FLORA_H
#define FN_FLORA_H

#include <stddef.h>
#include <stdint.h>

/*
 * One LoRA pair of a job: A of shape [r, n] and B of shape [m, r], r <= R (the pair's declared
 * max rank), row-major f32. A round of up to S clients stacks them in a fixed-size pair
 *
 *   A_stack [S*R, n]    B_stack [m, S*R]
 *
 * client k (its slot s_k < S, its rank r_k, its weight w_k, p_k = w_k / W, W = sum of w_k)
 * owns the rank block [s_k R, s_k R + r_k): A rows p_k A_k, B columns B_k; every other entry is
 * 0. Then B_stack A_stack = sum_k p_k B_k A_k exactly in real arithmetic (the blocks are
 * disjoint, and a zero row of A meets a zero column of B).
 *
 * Folding is placement: a leaf writes w_k A_k and B_k into the client's block of a zeroed
 * accumulator (fn_flora_place()); a parent adds its children's partials cell by cell, and
 * since every cell is non-zero in at most one partial, x + 0 = x keeps each one bit-exact:
 * the tree's usual addition is the placement. The top divides the A rows by W
 * (fn_flora_finish(), one rounding per entry) and packs the used blocks to the front
 * (fn_flora_pack()) so the stacked rank sum r_k is a prefix and the tail is zero.
 */

/*
 * Through the arena (FN_ALGO_FLORA, fn_flora_ops): the gateway points an update's segments at the
 * client's block of the job's flat model (runtime/api/rt_api_flora.c): one segment for A, folded
 * with the update's weight (its scale is 1), and one per row of B, placed as sent (its scale is
 * FN_FLORA_SEG_AS_IS). The fold is fn_flora_place() done by the arena's fold; the top does not
 * divide: the runtime's commit runs fn_flora_finish() and fn_flora_pack() on the stacks only
 * (runtime/node/rt_flora.c), since B and the frozen base tensors must not be divided.
 */
#define FN_FLORA_SEG_AS_IS 0.0f
/*
 * On the tcp data plane an update travels as the whole flat model (one segment from element 0
 * over every element), placed and A-weighted by the runtime: fn_flora_ops adds it with weight 1
 * and counts its weight in W as usual.
 */

/* Place client slot @s (rank @r <= @R, weight @w) of pair (m, n, R, S): 0, or -EINVAL. */
int fn_flora_place(float *a_stack, float *b_stack, size_t m, size_t n, size_t R, size_t S,
		   size_t s, size_t r, const float *A, const float *B, double w);

/* A_stack *= 1 / W (the rows only; B is unweighted). 0, or -EDOM unless W > 0. */
int fn_flora_finish(float *a_stack, size_t rows, size_t n, double W);

/*
 * Moves the blocks of the slots with ranks[s] > 0 (S slots of R) to the front, in slot order,
 * and zeroes the rest: returns the used rank (sum of ranks), or (size_t)-1 if a rank exceeds R.
 */
size_t fn_flora_pack(float *a_stack, float *b_stack, size_t m, size_t n, size_t R, size_t S,
		     const uint32_t *ranks);

/* W[m, n] += B_stack[:, :used] A_stack[:used, :] (each entry's sum in double, rounded once). */
void fn_flora_merge(float *W, const float *a_stack, const float *b_stack, size_t m, size_t n,
		    size_t stride, size_t used);

#endif
