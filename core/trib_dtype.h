/* SPDX-License-Identifier: MIT */
/* Element types of tensor payloads: one enum for the file formats, descriptors and kernels. */
#ifndef TRIB_DTYPE_H
#define TRIB_DTYPE_H

/*
 * Values are part of the ABI: descriptors carry them between processes
 * (shm_abi.h aliases them as enum shm_dtype), so they never change.
 */
enum trib_dtype {
	TRIB_DTYPE_F32 = 1,  /* little-endian IEEE-754 binary32 */
	TRIB_DTYPE_F16 = 2,  /* IEEE-754 binary16 */
	TRIB_DTYPE_BF16 = 3, /* bfloat16 */
	TRIB_DTYPE_I8 = 4,   /* int8 with a per-segment f32 scale */
	/* 5 is left to the U32 of masked sums (helper secagg); values only need to be distinct. */
	TRIB_DTYPE_I32 = 6,  /* little-endian int32: FRL's rankings (an index per position) */
	TRIB_DTYPE_I64 = 7,  /* little-endian int64: a sparse update's indices only */
};

#endif
