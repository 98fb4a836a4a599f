/* SPDX-License-Identifier: MIT */
/* NumPy's .npy and .npz formats: update bodies read in place, and the model written as .npz. */
#ifndef TRIB_NPY_H
#define TRIB_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "trib_safetensors.h"

/* Most bytes of a .npy header dict (numpy writes well under 200 for 8 dimensions). */
#define TRIB_NPY_HEADER_MAX 65536u
/* Most bytes of a refusal message written into a caller's buffer (NUL included). */
#define TRIB_NPY_WHY_MAX 320
/*
 * An .npy dtype that is not an enum trib_dtype: little-endian binary64. Loading narrows it to
 * F32 in place (numpy's default dtype is float64: clients that never cast send it).
 */
#define TRIB_NPY_F64 0x100u
/* Another: little-endian int64, narrowed to I32 in place when every value fits (frl rankings). */
#define TRIB_NPY_I64 0x101u

/* One parsed .npy header. */
struct trib_npy {
	uint32_t dtype;    /* TRIB_DTYPE_F32, _F16, _I8, _I32, TRIB_NPY_F64 or TRIB_NPY_I64 */
	uint32_t itemsize; /* bytes per element */
	uint32_t ndim;
	uint64_t shape[TRIB_ST_MAX_DIMS];
	uint64_t n_elem;   /* product of shape (1 for ndim 0) */
	uint64_t data_off; /* bytes before the data: magic, version, length and dict */
	uint64_t data_len; /* n_elem x itemsize */
};

/*
 * From the first bytes of a .npy (@len of them; 12 are always enough, 10 for version 1.0):
 * *data_off, where its data starts. Checks the magic, the version (1.0, 2.0 or 3.0) and that
 * the dict is at most TRIB_NPY_HEADER_MAX bytes. Returns 0, -EAGAIN (@len too short to say:
 * the caller reads 12 bytes, or refuses a body that short) or -EINVAL (@why filled).
 */
int trib_npy_prefix(const void *buf, size_t len, uint64_t *data_off, char *why, size_t cap);

/*
 * Parse the .npy header at @buf (@len bytes: at least up to its data). The dict must hold
 * exactly 'descr', 'fortran_order' and 'shape', each once; descr one of '<f4', '<f8', '<f2',
 * '|i1', '<i4', '<i8' (sparse indices and frl rankings; int64 narrowed to int32) (big-endian descrs, object arrays, structured and other dtypes refused, each with its
 * own message); fortran_order False; at most TRIB_ST_MAX_DIMS dimensions and 2^40 elements.
 * Returns 0 or -EINVAL (@why, @cap bytes, says what and what is allowed).
 */
int trib_npy_parse(const void *buf, size_t len, struct trib_npy *out, char *why, size_t cap);

/*
 * A whole .npy update body (@buf, @len bytes, writable: it is the arena slot) as one tensor
 * named @name: the data must fill the body exactly. Float64 data is narrowed to F32 (int64 to
 * I32, refused naming the element when a value does not fit) and data
 * not aligned to its element size moved down to be, both in place (into the header's bytes).
 * On success *out holds one tensor (data_off 0, data_begin relative to @buf); release it with
 * trib_st_free(). Returns 0, -EINVAL (@why) or -ENOMEM.
 */
int trib_npy_load(void *buf, size_t len, const char *name, struct trib_st *out, char *why,
		  size_t cap);

/*
 * A whole .npz update body (@buf, @len bytes, writable) into *out, one tensor per member
 * "<name>.npy", named <name>. The zip's central directory is authoritative; refused: a
 * missing or malformed end record, zip64, several disks, encryption, a method other than
 * stored (0) or deflated (8), members that overlap or lie outside the archive, names that do
 * not end in ".npy" or repeat, a CRC-32 that does not match, a member whose size is not its
 * .npy header plus shape x dtype, and deflate data that ends early, has trailing bytes or
 * inflates past that size. Stored data is used in place (narrowed or aligned as
 * trib_npy_load() does); deflated data is inflated into @region (@region_cap bytes, inside
 * the same slot after the body: tensors' data_begin stays relative to @buf), each tensor at a
 * 64-byte boundary; *region_used is how much of it was. Returns 0, -EINVAL (@why), -ENOSPC
 * (the inflated tensors need more than @region_cap: @why) or -ENOMEM.
 */
int trib_npz_load(void *buf, size_t len, void *region, uint64_t region_cap, struct trib_st *out,
		  uint64_t *region_used, char *why, size_t cap);

/*
 * Bytes of the stored .npz that trib_npz_write() makes for @schema's tensors as float32, or 0
 * when it would need zip64 (a member or the archive over 4 GiB - 1).
 */
uint64_t trib_npz_size(const struct trib_tensor *schema, size_t n);

/*
 * Write @schema's tensors (@n), float32 (int32 for an I32 schema entry) little-endian and
 * contiguous in schema order at @data,
 * as a stored .npz (what np.load() reads) into @out (trib_npz_size() bytes). Deterministic:
 * no timestamps (the DOS date fields are 1980-01-01).
 */
void trib_npz_write(const struct trib_tensor *schema, size_t n, const void *data, void *out);

/*
 * trib_npz_write with every member of @dtype: TRIB_DTYPE_F32 ('<f4') or TRIB_DTYPE_I32 ('<i4',
 * an FRL model: the global ranking per tensor). Any other dtype is written as F32. The same
 * trib_npz_size() bytes for either (4-byte elements, headers of one length).
 */
void trib_npz_write_dtype(const struct trib_tensor *schema, size_t n, uint32_t dtype,
			  const void *data, void *out);

#endif
