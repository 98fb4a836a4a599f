// SPDX-License-Identifier: MIT
/*
 * .npy headers, read from untrusted update bodies.
 *
 * Hand-written: Debian has no C library for .npy (libcnpy is not packaged, and NumPy's own
 * reader is Python: ast.literal_eval of the dict). The format is small and fixed
 * (numpy/lib/format.py): "\x93NUMPY", a major and minor version byte, a little-endian header
 * length (2 bytes in 1.0, 4 in 2.0 and 3.0), then a Python dict literal of exactly 'descr',
 * 'fortran_order' and 'shape', padded with spaces and ended by '\n'. This parser reads only
 * that subset of Python's syntax (quoted strings without escapes, True/False, tuples of
 * decimal integers), so nothing in a header can reach an interpreter or a pickle.
 */
#include "trib_npy.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_npy_priv.h"

/* numpy's limit on elements would be memory; ours is a bound that keeps n x 8 far from 2^64. */
#define NPY_MAX_ELEM (1ull << 40)

static int refuse(char *why, size_t cap, const char *fmt, ...)
{
	va_list ap;

	if (why && cap) {
		va_start(ap, fmt);
		vsnprintf(why, cap, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int trib_npy_prefix(const void *buf, size_t len, uint64_t *data_off, char *why, size_t cap)
{
	const uint8_t *p = buf;
	uint64_t hlen, pre;

	if (len < 8)
		return -EAGAIN;
	if (memcmp(p, "\x93NUMPY", 6))
		return refuse(why, cap, "not an .npy array: it must start with the magic "
			      "\\x93NUMPY (np.save() writes it)");
	if ((p[6] != 1 && p[6] != 2 && p[6] != 3) || p[7] != 0)
		return refuse(why, cap, ".npy version %u.%u: versions 1.0, 2.0 and 3.0 are read",
			      p[6], p[7]);
	pre = p[6] == 1 ? 10 : 12;
	if (len < pre)
		return -EAGAIN;
	hlen = p[6] == 1 ? (uint64_t)(p[8] | p[9] << 8)
			 : (uint64_t)p[8] | (uint64_t)p[9] << 8 | (uint64_t)p[10] << 16 |
				   (uint64_t)p[11] << 24;
	if (hlen > TRIB_NPY_HEADER_MAX)
		return refuse(why, cap, ".npy header length %llu: at most %u bytes are read",
			      (unsigned long long)hlen, TRIB_NPY_HEADER_MAX);
	*data_off = pre + hlen;
	return 0;
}

/* A cursor over the dict's bytes. */
struct lex {
	const char *p, *end;
};

static void skip_ws(struct lex *l)
{
	while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r'))
		l->p++;
}

static bool eat(struct lex *l, char ch)
{
	skip_ws(l);
	if (l->p < l->end && *l->p == ch) {
		l->p++;
		return true;
	}
	return false;
}

/* A '...' or "..." string without escapes, into @out (@cap bytes). false if not one. */
static bool lex_str(struct lex *l, char *out, size_t cap)
{
	char q;
	size_t n = 0;

	skip_ws(l);
	if (l->p >= l->end || (*l->p != '\'' && *l->p != '"'))
		return false;
	q = *l->p++;
	while (l->p < l->end && *l->p != q) {
		if (*l->p == '\\' || *l->p == '\n' || n + 1 >= cap)
			return false;
		out[n++] = *l->p++;
	}
	if (l->p >= l->end)
		return false;
	l->p++;
	out[n] = '\0';
	return true;
}

/* A decimal integer (Python 2 numpy wrote a trailing L). */
static bool lex_uint(struct lex *l, uint64_t *v)
{
	uint64_t x = 0;
	const char *start;

	skip_ws(l);
	start = l->p;
	while (l->p < l->end && *l->p >= '0' && *l->p <= '9') {
		if (x > (UINT64_MAX - 9) / 10)
			return false;
		x = x * 10 + (uint64_t)(*l->p++ - '0');
	}
	if (l->p == start)
		return false;
	if (l->p < l->end && *l->p == 'L')
		l->p++;
	*v = x;
	return true;
}

static bool lex_word(struct lex *l, const char *w)
{
	size_t n = strlen(w);

	skip_ws(l);
	if ((size_t)(l->end - l->p) < n || memcmp(l->p, w, n))
		return false;
	l->p += n;
	return true;
}

/* descr: the dtype, or a refusal that says what to send instead. */
static int map_descr(const char *d, struct trib_npy *out, char *why, size_t cap)
{
	static const struct {
		const char *descr;
		uint32_t dtype, size;
	} ok[] = {
		{ "<f4", TRIB_DTYPE_F32, 4 },
		{ "<f8", TRIB_NPY_F64, 8 },
		{ "<f2", TRIB_DTYPE_F16, 2 },
		{ "|i1", TRIB_DTYPE_I8, 1 },
		{ "<i4", TRIB_DTYPE_I32, 4 }, /* frl rankings, sparse indices (a float value refuses I32) */
		{ "<i8", TRIB_NPY_I64, 8 },
	};
	static const char allowed[] = "'<f4' (float32), '<f8' (float64, narrowed to float32), "
				      "'<f2' (float16) or '|i1' (int8, with a '<name>.scale' "
				      "float32 tensor); for frl rankings and a sparse tensor's "
				      "<name>.indices '<i4' or '<i8' (int32, int64 narrowed)";

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (!strcmp(d, ok[i].descr)) {
			out->dtype = ok[i].dtype;
			out->itemsize = ok[i].size;
			return 0;
		}
	}
	if (strchr(d, 'O'))
		return refuse(why, cap, ".npy descr '%.16s': object arrays (pickled Python "
			      "objects) are refused; send a numeric array "
			      "(np.asarray(x, dtype=np.float32))", d);
	if (d[0] == '>')
		return refuse(why, cap, ".npy descr '%.16s' is big-endian: send little-endian "
			      "(arr.astype('<f4')); allowed: %s", d, allowed);
	return refuse(why, cap, ".npy descr '%.16s' is not taken; allowed: %s", d, allowed);
}

int trib_npy_parse(const void *buf, size_t len, struct trib_npy *out, char *why, size_t cap)
{
	char key[32], descr[32];
	bool seen_descr = false, seen_fortran = false, seen_shape = false;
	struct lex l;
	uint64_t off;
	int err;

	memset(out, 0, sizeof(*out));
	err = trib_npy_prefix(buf, len, &off, why, cap);
	if (err == -EAGAIN)
		return refuse(why, cap, ".npy of %zu bytes ends inside its preamble", len);
	if (err)
		return err;
	if (off > len)
		return refuse(why, cap, ".npy header length runs past the body: the header would "
			      "end at byte %llu of %zu", (unsigned long long)off, len);
	l.p = (const char *)buf + (((const uint8_t *)buf)[6] == 1 ? 10 : 12);
	l.end = (const char *)buf + off;
	if (!eat(&l, '{'))
		return refuse(why, cap, ".npy header: not a dict (it must start with '{')");
	while (!eat(&l, '}')) {
		if (!lex_str(&l, key, sizeof(key)) || !eat(&l, ':'))
			return refuse(why, cap, ".npy header: a dict of 'descr', 'fortran_order' "
				      "and 'shape' is expected (bad key near byte %td)",
				      l.p - (const char *)buf);
		if (!strcmp(key, "descr")) {
			if (seen_descr)
				return refuse(why, cap, ".npy header: 'descr' appears twice");
			seen_descr = true;
			if (!lex_str(&l, descr, sizeof(descr)))
				return refuse(why, cap, ".npy descr: a dtype string such as '<f4' "
					      "is expected (structured dtypes are refused)");
			err = map_descr(descr, out, why, cap);
			if (err)
				return err;
		} else if (!strcmp(key, "fortran_order")) {
			if (seen_fortran)
				return refuse(why, cap, ".npy header: 'fortran_order' appears twice");
			seen_fortran = true;
			if (lex_word(&l, "True"))
				return refuse(why, cap, ".npy fortran_order True is refused: send a "
					      "C-ordered array (np.ascontiguousarray(x))");
			if (!lex_word(&l, "False"))
				return refuse(why, cap, ".npy fortran_order: True or False");
		} else if (!strcmp(key, "shape")) {
			if (seen_shape)
				return refuse(why, cap, ".npy header: 'shape' appears twice");
			seen_shape = true;
			if (!eat(&l, '('))
				return refuse(why, cap, ".npy shape: a tuple of integers");
			out->n_elem = 1;
			while (!eat(&l, ')')) {
				uint64_t d;

				if (out->ndim == TRIB_ST_MAX_DIMS)
					return refuse(why, cap, ".npy shape: at most %d dimensions",
						      TRIB_ST_MAX_DIMS);
				if (!lex_uint(&l, &d))
					return refuse(why, cap, ".npy shape: a tuple of integers");
				out->shape[out->ndim++] = d;
				if (d && out->n_elem > NPY_MAX_ELEM / d)
					return refuse(why, cap, ".npy shape: more than 2^40 elements");
				out->n_elem *= d;
				/* Python: (3) is an int and (3,) a tuple; (2, 3) needs no last comma. */
				if (out->ndim > 1 && eat(&l, ')'))
					break;
				if (!eat(&l, ','))
					return refuse(why, cap, ".npy shape: a tuple of integers "
						      "(one dimension is written (n,))");
			}
		} else {
			return refuse(why, cap, ".npy header: unexpected key '%.24s' (only "
				      "'descr', 'fortran_order' and 'shape')", key);
		}
		if (!eat(&l, ',')) {
			if (!eat(&l, '}'))
				return refuse(why, cap, ".npy header: ',' or '}' expected near byte "
					      "%td", l.p - (const char *)buf);
			break;
		}
	}
	skip_ws(&l);
	if (l.p != l.end)
		return refuse(why, cap, ".npy header: bytes after the dict's '}'");
	if (!seen_descr || !seen_fortran || !seen_shape)
		return refuse(why, cap, ".npy header: '%s' is missing",
			      !seen_descr ? "descr" : !seen_fortran ? "fortran_order" : "shape");
	out->data_off = off;
	out->data_len = out->n_elem * out->itemsize;
	return 0;
}

/* The header before the data is at least 10 bytes: moving down by at most 7 stays in it. */
int trib__npy_settle(uint8_t *base, uint64_t *at, uint32_t *dtype, uint64_t n, const char *name,
		     char *why, size_t cap)
{
	bool wide = *dtype == TRIB_NPY_F64 || *dtype == TRIB_NPY_I64;
	uint32_t size = wide ? 4 : (uint32_t)trib_dtype_size(*dtype);
	uint64_t dst = *at - *at % size;

	if (*dtype == TRIB_NPY_I64) {
		/* As float64 below: element i is read before anything at or after it is written. */
		for (uint64_t i = 0; i < n; i++) {
			int64_t v;
			int32_t w;

			memcpy(&v, base + *at + 8 * i, 8);
			if (v < INT32_MIN || v > INT32_MAX)
				return refuse(why, cap, "tensor %.40s: value %lld at element %llu does "
					      "not fit int32", name, (long long)v,
					      (unsigned long long)i);
			w = (int32_t)v;
			memcpy(base + dst + 4 * i, &w, 4);
		}
		*dtype = TRIB_DTYPE_I32;
	} else if (*dtype == TRIB_NPY_F64) {
		/* In place, front to back: element i is read before anything at or after it is
		 * written, since dst <= src and 4i + 4 <= 8i + 8. */
		for (uint64_t i = 0; i < n; i++) {
			double d;
			float f;

			memcpy(&d, base + *at + 8 * i, 8);
			if (isfinite(d) && fabs(d) > FLT_MAX)
				return refuse(why, cap, "tensor %.40s: value %g at element %llu does "
					      "not fit float32", name, d, (unsigned long long)i);
			f = (float)d;
			memcpy(base + dst + 4 * i, &f, 4);
		}
		*dtype = TRIB_DTYPE_F32;
	} else if (dst != *at) {
		memmove(base + dst, base + *at, n * size);
	}
	*at = dst;
	return 0;
}

void trib__npy_tensor(struct trib_tensor *t, const char *name, const struct trib_npy *h,
		      uint32_t dtype, uint64_t at)
{
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->dtype = dtype;
	t->ndim = h->ndim;
	memcpy(t->shape, h->shape, sizeof(t->shape));
	t->n_elem = h->n_elem;
	t->data_begin = at;
	t->data_end = at + h->n_elem * trib_dtype_size(dtype);
}

int trib_npy_load(void *buf, size_t len, const char *name, struct trib_st *out, char *why,
		  size_t cap)
{
	struct trib_npy h;
	uint64_t at;
	uint32_t dtype;
	int err;

	memset(out, 0, sizeof(*out));
	err = trib_npy_parse(buf, len, &h, why, cap);
	if (err)
		return err;
	if (len - h.data_off != h.data_len)
		return refuse(why, cap, ".npy data: the body holds %llu bytes after the header; "
			      "shape x dtype needs %llu", (unsigned long long)(len - h.data_off),
			      (unsigned long long)h.data_len);
	at = h.data_off;
	dtype = h.dtype;
	err = trib__npy_settle(buf, &at, &dtype, h.n_elem, name, why, cap);
	if (err)
		return err;
	out->tensors = trib_calloc(1, sizeof(*out->tensors));
	if (!out->tensors)
		return -ENOMEM;
	out->ntensors = 1;
	trib__npy_tensor(&out->tensors[0], name, &h, dtype, at);
	return 0;
}
