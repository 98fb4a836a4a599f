/* SPDX-License-Identifier: MIT */
/* Shared by trib_npy.c and trib_npz.c only. */
#ifndef TRIB_NPY_PRIV_H
#define TRIB_NPY_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "trib_npy.h"

/*
 * Make a tensor's data usable by the fold where it lies: float64 narrowed to float32, and its
 * start moved down to a multiple of its element size, in place. @base is the slot's start
 * (64-aligned), *at the data's offset from it, after a .npy header of at least 10 bytes that
 * is parsed and no longer needed (a move down by at most 7 bytes stays in it). Updates *at and *dtype. Returns
 * 0 or -EINVAL (@why) for a float64 value that float32 cannot hold.
 */
int trib__npy_settle(uint8_t *base, uint64_t *at, uint32_t *dtype, uint64_t n, const char *name,
		     char *why, size_t cap);

/* Fill @t from @h (its name @name, its data as @dtype at @at): the tensor the match sees. */
void trib__npy_tensor(struct trib_tensor *t, const char *name, const struct trib_npy *h,
		      uint32_t dtype, uint64_t at);

#endif
