/* SPDX-License-Identifier: MIT */
/* safetensors: parse a header in place, check it against a job's schema, and write one. */
#ifndef TRIB_SAFETENSORS_H
#define TRIB_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRIB_ST_MAX_DIMS 8
#define TRIB_ST_NAME_MAX 256
/* Limits on untrusted input: the JSON header's length and the number of tensors. */
#define TRIB_ST_HEADER_MAX (100u << 20)
#define TRIB_ST_MAX_TENSORS 65536
/*
 * The *why of a file that is well-formed but holds a dtype Tributary cannot
 * fold (callers answer 422 rather than 400); compare with strcmp().
 */
#define TRIB_ST_WHY_DTYPE "unsupported dtype"

/* Bytes of a name an error message shows (cut longer, with "..."), and of the shown text. */
#define TRIB_ST_SHOW_NAME 40
#define TRIB_ST_SHOW_MAX (TRIB_ST_SHOW_NAME + 4)
/*
 * Most bytes trib_st_explain() writes, NUL included: with "safetensors: " it fits a 400-byte
 * message, and escaped for JSON (every byte a quote at worst) a 1 KiB error body.
 */
#define TRIB_ST_EXPLAIN_MAX 384

/* One tensor of a job's schema, or one tensor found in a safetensors file. */
struct trib_tensor {
	char name[TRIB_ST_NAME_MAX]; /* NUL-terminated */
	uint32_t dtype;            /* enum trib_dtype */
	uint32_t ndim;
	uint64_t shape[TRIB_ST_MAX_DIMS];
	uint64_t n_elem;     /* product of shape (1 for ndim 0) */
	uint64_t data_begin; /* byte offset into the data section (after the header) */
	uint64_t data_end;   /* one past the last byte, relative to the data section */
};

/*
 * A parsed safetensors header. tensors[] is owned by the struct; release it
 * with trib_st_free(). data_off is where the data section starts within the
 * buffer that was parsed (8 + header length).
 */
struct trib_st {
	struct trib_tensor *tensors;
	size_t ntensors;
	uint64_t data_off;
	/* After a failed parse: the entry it failed on and its dtype, as trib_st_show() shows. */
	char bad_name[TRIB_ST_SHOW_MAX];
	char bad_dtype[16];
};

/*
 * Parse the safetensors header at the start of @buf (@len bytes, the whole
 * file). Checks: header length fits, JSON is an object, every entry has a
 * known dtype ("F32", "F16", "BF16", "I8", "I32", "I64"), a shape, and data_offsets that lie
 * inside the data section and match shape × dtype size, no two tensors
 * sharing a byte; "__metadata__" is skipped. Tensors are returned in file order.
 * Returns 0 or -EINVAL (malformed; *why is a static message), -ENOMEM.
 */
int trib_st_parse(const void *buf, size_t len, struct trib_st *out, const char **why);
/* Accepts a zeroed struct; leaves it zeroed. */
void trib_st_free(struct trib_st *st);

/* Bytes per element of a trib_dtype, 0 if unknown. */
size_t trib_dtype_size(uint32_t dtype);
/* "F32" etc., or NULL. */
const char *trib_dtype_name(uint32_t dtype);
/* 0 if unknown. */
uint32_t trib_dtype_from_name(const char *name);

/*
 * Build the header (8-byte length + JSON, padded with spaces to a multiple of
 * 8) for a file that holds @schema's tensors as F32, contiguous, in schema
 * order; data_begin/data_end of the schema are ignored. @meta, if not NULL, is
 * a flat JSON object of string values for "__metadata__".
 * On success *hdr is owned by the caller (trib_free) and *hdr_len its length.
 * Returns 0 or -ENOMEM / -EINVAL.
 */
int trib_st_write_header(const struct trib_tensor *schema, size_t n, const char *meta_json,
		       char **hdr, size_t *hdr_len);
/*
 * Like trib_st_write_header, with every tensor in @dtype: TRIB_DTYPE_F32 or TRIB_DTYPE_I32
 * (an FRL model: the global ranking per tensor), or TRIB_DTYPE_EACH: each tensor's own
 * schema dtype, F32 or I32 (a flora model: F32 stacks and an I32 used rank). Any other dtype
 * is -EINVAL.
 */
/* @dtype for trib_st_write_header_dtype(): each tensor in its schema dtype (F32 or I32). */
#define TRIB_DTYPE_EACH 0xffffffffu
int trib_st_write_header_dtype(const struct trib_tensor *schema, size_t n, uint32_t dtype,
			       const char *meta_json, char **hdr, size_t *hdr_len);

/*
 * Match a parsed upload @st against a job's schema (@nschema tensors, names
 * unique). Every schema tensor must appear in @st under the same name, with
 * the same shape and dtype F32, and @st must hold no other tensor. On success
 * src_offsets[i] (caller-owned, @nschema entries) is the byte offset of schema
 * tensor i's data within the parsed buffer (data_off + data_begin).
 * Returns 0, -EINVAL (mismatch, callers answer 422; *why is a static
 * message) or -ENOMEM.
 */
int trib_st_match(const struct trib_st *st, const struct trib_tensor *schema, size_t nschema,
		uint64_t *src_offsets, const char **why);

/*
 * Like trib_st_match, but also takes compressed uploads of the F32 schema:
 * F16, BF16, and I8 with a companion one-value F32 tensor "<name>.scale".
 * Fills dtypes[i] (enum trib_dtype) and scales[i] (1.0 unless I8, read from
 * @buf, the whole file). Returns 0, -EINVAL (why), -EDOM (non-finite scale),
 * -ENOMEM.
 */
int trib_st_match_q(const struct trib_st *st, const struct trib_tensor *schema, size_t nschema,
		  const void *buf, uint64_t *src_offsets, uint32_t *dtypes, float *scales,
		  const char **why);

/*
 * Writes @s (@len bytes, from an upload) into @buf (@cap bytes, NUL-terminated) to be shown in an
 * error: at most TRIB_ST_SHOW_NAME bytes, cut at a UTF-8 boundary and followed by "..." when
 * longer, control bytes and bytes that are not UTF-8 as '?'. Quotes and backslashes stay (the
 * JSON writer escapes them). Returns the bytes written.
 */
size_t trib_st_show(const char *s, size_t len, char *buf, size_t cap);

/*
 * After trib_st_parse() (@schema NULL) or trib_st_match*() failed with -EINVAL and @why, writes
 * into @buf (@cap bytes, at most TRIB_ST_EXPLAIN_MAX used, NUL-terminated) what is wrong, naming
 * names: the tensor and its expected and received shape or dtype; the missing and the unexpected
 * names (3 of each at most, and how many); and "did you mean" when an unexpected name is a
 * missing one with a known prefix (module., model., _orig_mod.) added or stripped, or within 2
 * edits of it. @compressed: the match takes F16, BF16 and I8 + "<name>.scale" (trib_st_match_q).
 * Names are shown with trib_st_show(). Falls back to @why when it finds nothing more (or lacks
 * memory). @st and @schema are borrowed.
 */
void trib_st_explain(const struct trib_st *st, const struct trib_tensor *schema, size_t nschema,
		     bool compressed, const char *why, char *buf, size_t cap);

#endif
