// SPDX-License-Identifier: MIT
/* safetensors: validate an untrusted header, match it against a job's schema, write one. */
#include "trib_safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "trib_dtype.h"
#include "trib_alloc.h"

#define META_KEY "__metadata__"

static const struct {
	uint32_t dtype;
	const char *name;
	size_t size;
} dtypes[] = {
	{ TRIB_DTYPE_F32, "F32", 4 },
	{ TRIB_DTYPE_F16, "F16", 2 },
	{ TRIB_DTYPE_BF16, "BF16", 2 },
	{ TRIB_DTYPE_I8, "I8", 1 },
	{ TRIB_DTYPE_I32, "I32", 4 },
	{ TRIB_DTYPE_I64, "I64", 8 }, /* a sparse update's indices (runtime/api/rt_api_sparse.c) */
};

size_t trib_dtype_size(uint32_t dtype)
{
	for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (dtypes[i].dtype == dtype)
			return dtypes[i].size;
	return 0;
}

/* Returns a static string (not owned by the caller) or NULL. */
const char *trib_dtype_name(uint32_t dtype)
{
	for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (dtypes[i].dtype == dtype)
			return dtypes[i].name;
	return NULL;
}

/* @name is borrowed. */
uint32_t trib_dtype_from_name(const char *name)
{
	for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (strcmp(dtypes[i].name, name) == 0)
			return dtypes[i].dtype;
	return 0;
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* A JSON integer in [0, INT64_MAX], as jansson cannot hold more. */
static bool get_u64(const json_t *v, uint64_t *out)
{
	json_int_t i;

	if (!json_is_integer(v))
		return false;
	i = json_integer_value(v);
	if (i < 0)
		return false;
	*out = (uint64_t)i;
	return true;
}

/* The entry's name: non-empty, shorter than TRIB_ST_NAME_MAX, no NUL. */
static int parse_name(const char *key, size_t key_len, struct trib_tensor *t, const char **why)
{
	if (key_len == 0) {
		*why = "empty tensor name";
		return -EINVAL;
	}
	if (key_len >= TRIB_ST_NAME_MAX) {
		*why = "tensor name too long";
		return -EINVAL;
	}
	if (memchr(key, '\0', key_len)) {
		*why = "NUL in tensor name";
		return -EINVAL;
	}
	memcpy(t->name, key, key_len);
	t->name[key_len] = '\0';
	return 0;
}

/* "dtype" and "shape": sets dtype, ndim, shape, n_elem and *nbytes (checked for overflow). */
static int parse_dtype_shape(const json_t *val, struct trib_tensor *t, uint64_t *nbytes,
			     const char **why)
{
	const json_t *dt = json_object_get(val, "dtype"), *shape, *dim;
	uint64_t n_elem = 1;
	size_t i;

	if (!json_is_string(dt)) {
		*why = "missing dtype";
		return -EINVAL;
	}
	/* A dtype string with an embedded NUL must not match a known name. */
	if (strlen(json_string_value(dt)) != json_string_length(dt))
		t->dtype = 0;
	else
		t->dtype = trib_dtype_from_name(json_string_value(dt));
	if (t->dtype == 0) {
		*why = TRIB_ST_WHY_DTYPE;
		return -EINVAL;
	}
	shape = json_object_get(val, "shape");
	if (!json_is_array(shape)) {
		*why = "missing shape";
		return -EINVAL;
	}
	if (json_array_size(shape) > TRIB_ST_MAX_DIMS) {
		*why = "too many dimensions";
		return -EINVAL;
	}
	t->ndim = (uint32_t)json_array_size(shape);
	json_array_foreach(shape, i, dim) {
		if (!get_u64(dim, &t->shape[i])) {
			*why = "bad shape";
			return -EINVAL;
		}
		if (__builtin_mul_overflow(n_elem, t->shape[i], &n_elem)) {
			*why = "shape overflows";
			return -EINVAL;
		}
	}
	t->n_elem = n_elem;
	if (__builtin_mul_overflow(n_elem, (uint64_t)trib_dtype_size(t->dtype), nbytes)) {
		*why = "shape overflows";
		return -EINVAL;
	}
	return 0;
}

/* Fills @t from one header entry; @data_len is the length of the data section. */
static int parse_tensor(const char *key, size_t key_len, const json_t *val, uint64_t data_len,
			struct trib_tensor *t, const char **why)
{
	const json_t *offs;
	uint64_t nbytes;
	int err = parse_name(key, key_len, t, why);

	if (err)
		return err;
	if (!json_is_object(val)) {
		*why = "tensor entry is not an object";
		return -EINVAL;
	}
	err = parse_dtype_shape(val, t, &nbytes, why);
	if (err)
		return err;
	offs = json_object_get(val, "data_offsets");
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    !get_u64(json_array_get(offs, 0), &t->data_begin) ||
	    !get_u64(json_array_get(offs, 1), &t->data_end)) {
		*why = "bad data_offsets";
		return -EINVAL;
	}
	if (t->data_begin > t->data_end || t->data_end > data_len) {
		*why = "data_offsets out of range";
		return -EINVAL;
	}
	if (t->data_end - t->data_begin != nbytes) {
		*why = "data_offsets do not match shape";
		return -EINVAL;
	}
	return 0;
}

/*
 * The 8-byte length and the JSON header of @b (@len bytes): *root is a new
 * reference (owned by the caller), *hlen the header's length.
 */
static int load_header(const unsigned char *b, size_t len, json_t **root, uint64_t *hlen,
		       const char **why)
{
	json_error_t jerr;
	unsigned long fails;

	if (len < 8) {
		*why = "truncated length";
		return -EINVAL;
	}
	*hlen = get_le64(b);
	if (*hlen > len - 8) {
		*why = "header length exceeds body";
		return -EINVAL;
	}
	if (*hlen > TRIB_ST_HEADER_MAX) {
		*why = "header too large";
		return -EINVAL;
	}
	/* json_loadb takes an explicit length: the header is not NUL-terminated. */
	fails = trib_alloc_failures();
	*root = json_loadb((const char *)b + 8, *hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (trib_alloc_failures() != fails) {
		/* jansson may call it a syntax error, or return a name it could not grow cut
		 * short: a tensor "not in the schema" that the client never sent. */
		json_decref(*root);
		*root = NULL;
		return -ENOMEM;
	}
	if (*root)
		return 0;
	switch (json_error_code(&jerr)) {
	case json_error_out_of_memory:
		return -ENOMEM;
	case json_error_duplicate_key:
		*why = "duplicate tensor name";
		return -EINVAL;
	default:
		*why = "bad JSON";
		return -EINVAL;
	}
}

/*
 * @buf is borrowed and only read during the call; out->tensors is allocated
 * here and owned by @out (trib_st_free). On failure @out is left zeroed.
 */
static int cmp_tensor_begin(const void *a, const void *b)
{
	const struct trib_tensor *const *x = a, *const *y = b;

	return (*x)->data_begin < (*y)->data_begin ? -1 : (*x)->data_begin > (*y)->data_begin;
}

/*
 * No two tensors may share a byte: one byte read as two values would let a file smaller than
 * its tensors pass as all of them. Empty tensors (shape with a 0) hold no byte. 0, -EINVAL
 * (*why set) or -ENOMEM.
 */
static int check_disjoint(const struct trib_tensor *t, size_t n, const char **why)
{
	const struct trib_tensor **p;
	uint64_t end = 0;
	int err = 0;

	if (n < 2)
		return 0;
	p = trib_calloc(n, sizeof(*p));
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		p[i] = &t[i];
	qsort(p, n, sizeof(*p), cmp_tensor_begin);
	for (size_t i = 0; i < n && !err; i++) {
		if (p[i]->data_begin == p[i]->data_end)
			continue;
		if (p[i]->data_begin < end) {
			*why = "tensors overlap (data_offsets share bytes)";
			err = -EINVAL;
		}
		end = p[i]->data_end > end ? p[i]->data_end : end;
	}
	trib_free(p);
	return err;
}

int trib_st_parse(const void *buf, size_t len, struct trib_st *out, const char **why)
{
	const char *dummy;
	uint64_t hlen;
	json_t *root;
	size_t ntens, k = 0;
	void *it;
	int err;

	if (!why)
		why = &dummy;
	memset(out, 0, sizeof(*out));
	err = load_header(buf, len, &root, &hlen, why);
	if (err)
		return err;
	if (!json_is_object(root)) {
		*why = "header is not a JSON object";
		err = -EINVAL;
		goto err_decref;
	}

	ntens = json_object_size(root);
	if (json_object_get(root, META_KEY))
		ntens--;
	if (ntens > TRIB_ST_MAX_TENSORS) {
		*why = "too many tensors";
		err = -EINVAL;
		goto err_decref;
	}
	if (ntens) {
		out->tensors = trib_calloc(ntens, sizeof(*out->tensors));
		if (!out->tensors) {
			err = -ENOMEM;
			goto err_decref;
		}
	}

	/* jansson (>= 2.8) iterates an object in insertion order, i.e. file order. */
	for (it = json_object_iter(root); it; it = json_object_iter_next(root, it)) {
		const char *key = json_object_iter_key(it);
		size_t key_len = json_object_iter_key_len(it);

		if (key_len == sizeof(META_KEY) - 1 && memcmp(key, META_KEY, key_len) == 0)
			continue;
		err = parse_tensor(key, key_len, json_object_iter_value(it), len - 8 - hlen,
				   &out->tensors[k], why);
		if (err) {
			json_t *dt = json_object_get(json_object_iter_value(it), "dtype");

			/* For trib_st_explain(): which entry, and the dtype it gave. */
			trib_st_show(key, key_len, out->bad_name, sizeof(out->bad_name));
			if (json_is_string(dt))
				trib_st_show(json_string_value(dt), json_string_length(dt),
					     out->bad_dtype, sizeof(out->bad_dtype));
			goto err_free;
		}
		k++;
	}
	err = check_disjoint(out->tensors, k, why);
	if (err)
		goto err_free;
	out->ntensors = k;
	out->data_off = 8 + hlen;
	json_decref(root);
	return 0;

err_free:
	trib_free(out->tensors);
	out->tensors = NULL;
err_decref:
	json_decref(root);
	return err;
}

void trib_st_free(struct trib_st *st)
{
	trib_free(st->tensors);
	memset(st, 0, sizeof(*st));
}

/* RFC 3629 UTF-8 (no overlongs, no surrogates); jansson rejects anything else as a key. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t need;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			need = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			need = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			need = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i - 1 < need)
			return false;
		for (size_t j = 1; j <= need; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) ||
		    (need == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += need + 1;
	}
	return true;
}

/* Parses @meta_json into a new reference (owned by the caller) if it is a flat string object. */
static int load_meta(const char *meta_json, json_t **meta)
{
	json_error_t jerr;
	unsigned long fails;
	const char *k;
	json_t *v;

	fails = trib_alloc_failures();
	*meta = json_loads(meta_json, 0, &jerr);
	if (!*meta)
		return json_error_code(&jerr) == json_error_out_of_memory ||
				       trib_alloc_failures() != fails ?
			       -ENOMEM :
			       -EINVAL;
	if (!json_is_object(*meta))
		goto err_decref;
	json_object_foreach(*meta, k, v) {
		if (!json_is_string(v))
			goto err_decref;
	}
	return 0;

err_decref:
	json_decref(*meta);
	*meta = NULL;
	return -EINVAL;
}

/* Adds one F32 tensor entry at data offset *off and advances *off past it. */
static int add_tensor(json_t *root, const struct trib_tensor *t, uint32_t dtype, uint64_t *off)
{
	size_t name_len = strnlen(t->name, TRIB_ST_NAME_MAX);
	uint64_t n_elem = 1, nbytes, end;
	json_t *entry, *shape, *offs;

	if (name_len == 0 || name_len == TRIB_ST_NAME_MAX || strcmp(t->name, META_KEY) == 0 ||
	    !utf8_valid((const unsigned char *)t->name, name_len) || t->ndim > TRIB_ST_MAX_DIMS)
		return -EINVAL;
	if (json_object_get(root, t->name))
		return -EINVAL; /* duplicate name */
	for (uint32_t d = 0; d < t->ndim; d++) {
		if (t->shape[d] > INT64_MAX || __builtin_mul_overflow(n_elem, t->shape[d], &n_elem))
			return -EINVAL;
	}
	if (__builtin_mul_overflow(n_elem, (uint64_t)trib_dtype_size(dtype), &nbytes) ||
	    __builtin_add_overflow(*off, nbytes, &end) || end > INT64_MAX)
		return -EINVAL;

	entry = json_object();
	if (!entry)
		return -ENOMEM;
	/*
	 * Each _new call consumes its value, even on failure (a NULL value is a
	 * failure): only entry needs releasing. Arrays are filled once owned by it.
	 */
	if (json_object_set_new(entry, "dtype", json_string(trib_dtype_name(dtype))))
		goto err_decref;
	shape = json_array();
	if (json_object_set_new(entry, "shape", shape))
		goto err_decref;
	offs = json_array();
	if (json_object_set_new(entry, "data_offsets", offs))
		goto err_decref;
	for (uint32_t d = 0; d < t->ndim; d++) {
		if (json_array_append_new(shape, json_integer((json_int_t)t->shape[d])))
			goto err_decref;
	}
	if (json_array_append_new(offs, json_integer((json_int_t)*off)) ||
	    json_array_append_new(offs, json_integer((json_int_t)end)))
		goto err_decref;
	if (json_object_set_new(root, t->name, entry))
		return -ENOMEM;
	*off = end;
	return 0;

err_decref:
	json_decref(entry);
	return -ENOMEM;
}

/* *hdr is allocated here and owned by the caller (trib_free); nothing is allocated on failure. */
int trib_st_write_header(const struct trib_tensor *schema, size_t n, const char *meta_json,
		       char **hdr, size_t *hdr_len)
{
	return trib_st_write_header_dtype(schema, n, TRIB_DTYPE_F32, meta_json, hdr, hdr_len);
}

int trib_st_write_header_dtype(const struct trib_tensor *schema, size_t n, uint32_t dtype,
			       const char *meta_json, char **hdr, size_t *hdr_len)
{
	const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
	uint64_t off = 0;
	size_t jlen, padded;
	json_t *root, *meta;
	char *out;
	int err;

	/*
	 * A model is F32 (every float rule) or I32 (FRL's global ranking): both 4-byte cells, so
	 * a model's size stays n_elem × 4 whatever its dtype. Upload-only dtypes are refused.
	 */
	if (n > TRIB_ST_MAX_TENSORS ||
	    (dtype != TRIB_DTYPE_F32 && dtype != TRIB_DTYPE_I32 && dtype != TRIB_DTYPE_EACH))
		return -EINVAL;
	root = json_object();
	if (!root)
		return -ENOMEM;
	if (meta_json) {
		err = load_meta(meta_json, &meta);
		if (err)
			goto err_decref;
		if (json_object_set_new(root, META_KEY, meta)) {
			err = -ENOMEM;
			goto err_decref;
		}
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t dt = dtype == TRIB_DTYPE_EACH ? schema[i].dtype : dtype;

		/* Each tensor's own: still F32 or I32 only, 4-byte cells (a flora model). */
		err = dt == TRIB_DTYPE_F32 || dt == TRIB_DTYPE_I32 ? add_tensor(root, &schema[i], dt,
										 &off)
								    : -EINVAL;
		if (err)
			goto err_decref;
	}

	jlen = json_dumpb(root, NULL, 0, flags);
	if (jlen == 0) {
		err = -ENOMEM;
		goto err_decref;
	}
	/* Spaces after the JSON make 8 + N a multiple of 8, so the data section is aligned. */
	padded = (jlen + 7) & ~(size_t)7;
	out = trib_malloc(8 + padded);
	if (!out) {
		err = -ENOMEM;
		goto err_decref;
	}
	if (json_dumpb(root, out + 8, padded, flags) != jlen) {
		err = -ENOMEM;
		goto err_free;
	}
	memset(out + 8 + jlen, ' ', padded - jlen);
	put_le64((unsigned char *)out, padded);
	json_decref(root);
	*hdr = out;
	*hdr_len = 8 + padded;
	return 0;

err_free:
	trib_free(out);
err_decref:
	json_decref(root);
	return err;
}

static int cmp_tensor_ptr(const void *a, const void *b)
{
	const struct trib_tensor *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

/* Looks @name up in @sorted (@n pointers sorted by name); returns a borrowed pointer or NULL. */
static const struct trib_tensor *find_sorted(const struct trib_tensor **sorted, size_t n,
					   const char *name)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, sorted[mid]->name);

		if (c == 0)
			return sorted[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/*
 * @st, @schema and @buf are borrowed; the out arrays (caller-owned) are
 * written only as far as the match gets and are complete only on success.
 * With @dtypes NULL only F32 is taken (trib_st_match).
 */
int trib_st_match_q(const struct trib_st *st, const struct trib_tensor *schema, size_t nschema,
		  const void *buf, uint64_t *src_offsets, uint32_t *dtypes, float *scales,
		  const char **why)
{
	const struct trib_tensor **sorted = NULL;
	const char *dummy;
	size_t extra = 0;
	int err = 0;

	if (!why)
		why = &dummy;
	for (size_t i = 0; i < nschema; i++) {
		const struct trib_tensor *s = &schema[i], *u = NULL;

		/* Uploads usually follow the schema's order: try the same index first. */
		if (i < st->ntensors && strcmp(st->tensors[i].name, s->name) == 0) {
			u = &st->tensors[i];
		} else {
			if (!sorted) {
				sorted = trib_malloc((st->ntensors ? st->ntensors : 1) *
						     sizeof(*sorted));
				if (!sorted)
					return -ENOMEM;
				for (size_t j = 0; j < st->ntensors; j++)
					sorted[j] = &st->tensors[j];
				qsort(sorted, st->ntensors, sizeof(*sorted), cmp_tensor_ptr);
			}
			u = find_sorted(sorted, st->ntensors, s->name);
		}
		if (!u) {
			*why = "missing tensor";
			err = -EINVAL;
			goto out_free;
		}
		/* I32 and I64 are indices, never values: no float job folds them (FRL checks its
		 * own, sparse updates theirs). */
		if ((u->dtype != TRIB_DTYPE_F32 && !dtypes) || u->dtype == TRIB_DTYPE_I32 ||
		    u->dtype == TRIB_DTYPE_I64) {
			*why = TRIB_ST_WHY_DTYPE;
			err = -EINVAL;
			goto out_free;
		}
		if (u->ndim != s->ndim ||
		    memcmp(u->shape, s->shape, s->ndim * sizeof(s->shape[0])) != 0) {
			*why = "shape mismatch";
			err = -EINVAL;
			goto out_free;
		}
		src_offsets[i] = st->data_off + u->data_begin;
		if (!dtypes)
			continue;
		dtypes[i] = u->dtype;
		scales[i] = 1.0f;
		if (u->dtype == TRIB_DTYPE_I8) {
			/* int8 carries its scale in a tensor "<name>.scale": one F32 value. */
			char sname[TRIB_ST_NAME_MAX + 8];
			const struct trib_tensor *t = NULL;

			snprintf(sname, sizeof(sname), "%s.scale", s->name);
			for (size_t j = 0; j < st->ntensors && !t; j++)
				if (!strcmp(st->tensors[j].name, sname))
					t = &st->tensors[j];
			if (!t || t->dtype != TRIB_DTYPE_F32 || t->n_elem != 1) {
				*why = "I8 tensor without a one-value F32 <name>.scale tensor";
				err = -EINVAL;
				goto out_free;
			}
			memcpy(&scales[i], (const uint8_t *)buf + st->data_off + t->data_begin, 4);
			if (!isfinite(scales[i])) {
				*why = "non-finite I8 scale";
				err = -EDOM;
				goto out_free;
			}
			extra++;
		}
	}
	/* Upload names are unique and so are the schema's: equal counts mean equal sets. */
	if (st->ntensors != nschema + extra) {
		*why = "unexpected tensor";
		err = -EINVAL;
	}
out_free:
	trib_free(sorted);
	return err;
}

int trib_st_match(const struct trib_st *st, const struct trib_tensor *schema, size_t nschema,
		uint64_t *src_offsets, const char **why)
{
	return trib_st_match_q(st, schema, nschema, NULL, src_offsets, NULL, NULL, why);
}
