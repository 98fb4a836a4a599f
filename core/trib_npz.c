// SPDX-License-Identifier: MIT
/*
 * .npz (np.savez: a zip of .npy members) read from untrusted update bodies, and written.
 *
 * The zip structure is parsed here rather than with Debian's libminizip (libminizip-dev, 1.1):
 * minizip reads through file-style callbacks into its own buffers and hands data out by
 * copying, while an update must stay where it landed (stored members are folded in place in
 * the arena slot, deflated ones inflated straight into it). minizip also accepts what we
 * refuse (zip64, several disks, encryption), so we would check all of it again anyway. What
 * we need of the format (PKWARE APPNOTE 4.3.12, 4.3.16) is the end record, the central
 * directory and the local headers: a few fixed-layout records. Inflating is zlib's (Debian's
 * zlib1g), raw deflate, output bounded by the size the central directory declares.
 */
#include "trib_npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_npy_priv.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64_LOC 0x07064b50u
#define LOCAL_LEN 30u
#define CENTRAL_LEN 46u
#define END_LEN 22u
#define FLAG_ENCRYPTED 0x0001u
#define FLAG_STRONG_ENC 0x0040u
/* float64 deflated data is narrowed through a buffer of this many bytes (a multiple of 8). */
#define BOUNCE 65536u

static int refuse(char *why, size_t cap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, cap, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* One member, from the central directory (and its local header's length). */
struct member {
	char name[TRIB_ST_NAME_MAX]; /* without ".npy" */
	uint16_t method;
	uint32_t crc;
	uint64_t local;    /* its local header's offset */
	uint64_t data;     /* its (compressed) bytes' offset */
	uint64_t comp, size;
};

static int cmp_local(const void *a, const void *b)
{
	const struct member *x = a, *y = b;

	return x->local < y->local ? -1 : x->local > y->local;
}

static int cmp_name(const void *a, const void *b)
{
	const struct member *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

/* The end of central directory record: where the directory is and how many members. */
static int find_end(const uint8_t *p, size_t len, uint64_t *cd_off, uint64_t *cd_len,
		    size_t *count, uint64_t *end_at, char *why, size_t cap)
{
	size_t lo = len > END_LEN + 65535 ? len - END_LEN - 65535 : 0;

	if (len < END_LEN)
		return refuse(why, cap, "npz: %zu bytes are not a zip archive (np.savez() "
			      "writes one)", len);
	/* The record ends the file, its comment included: the last one that does. */
	for (size_t i = len - END_LEN + 1; i-- > lo;) {
		const uint8_t *e = p + i;

		if (le32(e) != SIG_END || i + END_LEN + le16(e + 20) != len)
			continue;
		if (i >= 20 && le32(e - 20) == SIG_END64_LOC)
			return refuse(why, cap, "npz: zip64 archives are refused (the model's "
				      "members are under 4 GiB each)");
		if (le16(e + 4) || le16(e + 6) || le16(e + 8) != le16(e + 10))
			return refuse(why, cap, "npz: multi-disk (split) zip archives are refused");
		if (le16(e + 10) == 0xffff || le32(e + 12) == 0xffffffffu ||
		    le32(e + 16) == 0xffffffffu)
			return refuse(why, cap, "npz: zip64 archives are refused");
		*count = le16(e + 10);
		*cd_len = le32(e + 12);
		*cd_off = le32(e + 16);
		*end_at = i;
		if (*cd_off + *cd_len > i)
			return refuse(why, cap, "npz: the central directory (%llu bytes at %llu) "
				      "runs past the end record at %zu",
				      (unsigned long long)*cd_len, (unsigned long long)*cd_off, i);
		return 0;
	}
	return refuse(why, cap, "npz: not a zip archive (no end of central directory record)");
}

/* Central directory entry at @p (@left bytes of directory) into @m; *used its length. */
static int read_central(const uint8_t *p, uint64_t left, const uint8_t *zip, uint64_t cd_off,
			struct member *m, uint64_t *used, char *why, size_t cap)
{
	uint16_t flags, nlen, xlen, clen;

	if (left < CENTRAL_LEN || le32(p) != SIG_CENTRAL)
		return refuse(why, cap, "npz: malformed central directory entry at byte %td",
			      p - zip);
	flags = le16(p + 8);
	m->method = le16(p + 10);
	m->crc = le32(p + 16);
	m->comp = le32(p + 20);
	m->size = le32(p + 24);
	nlen = le16(p + 28);
	xlen = le16(p + 30);
	clen = le16(p + 32);
	m->local = le32(p + 42);
	*used = (uint64_t)CENTRAL_LEN + nlen + xlen + clen;
	if (*used > left)
		return refuse(why, cap, "npz: central directory entry at byte %td runs past the "
			      "directory", p - zip);
	{
		char show[TRIB_ST_SHOW_MAX];

		trib_st_show((const char *)p + CENTRAL_LEN, nlen, show, sizeof(show));
		if (nlen < 5 || nlen - 4 >= TRIB_ST_NAME_MAX ||
		    memcmp(p + CENTRAL_LEN + nlen - 4, ".npy", 4) ||
		    memchr(p + CENTRAL_LEN, '\0', nlen))
			return refuse(why, cap, "npz: member '%s': names are '<tensor>.npy' "
				      "(1 to %d bytes before .npy, np.savez(f, name=array))", show,
				      TRIB_ST_NAME_MAX - 1);
		memcpy(m->name, p + CENTRAL_LEN, nlen - 4u);
		m->name[nlen - 4] = '\0';
		if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENC) || m->method == 99)
			return refuse(why, cap, "npz: member '%s' is encrypted: refused", show);
		if (le16(p + 34))
			return refuse(why, cap, "npz: member '%s' starts on another disk: "
				      "multi-disk archives are refused", show);
		if (m->comp == 0xffffffffu || m->size == 0xffffffffu || m->local == 0xffffffffu)
			return refuse(why, cap, "npz: member '%s' is a zip64 entry: refused", show);
		if (m->method != 0 && m->method != 8)
			return refuse(why, cap, "npz: member '%s' uses compression method %u: only "
				      "stored (0) and deflated (8, np.savez_compressed) are read",
				      show, m->method);
		if (m->method == 0 && m->comp != m->size)
			return refuse(why, cap, "npz: stored member '%s' has compressed size %llu "
				      "and size %llu", show, (unsigned long long)m->comp,
				      (unsigned long long)m->size);
	}
	/* Its local header: same name and method; sizes come from the directory (numpy's
	 * local headers carry a zip64 extra field, which the directory does not need). */
	if (m->local + LOCAL_LEN > cd_off || le32(zip + m->local) != SIG_LOCAL ||
	    le16(zip + m->local + 26) != nlen ||
	    m->local + LOCAL_LEN + nlen > cd_off ||
	    memcmp(zip + m->local + LOCAL_LEN, p + CENTRAL_LEN, nlen) ||
	    le16(zip + m->local + 8) != m->method || le16(zip + m->local + 6) & FLAG_ENCRYPTED)
		return refuse(why, cap, "npz: member '%.40s.npy': its local header (at byte %llu) "
			      "does not match the central directory", m->name,
			      (unsigned long long)m->local);
	m->data = m->local + LOCAL_LEN + nlen + le16(zip + m->local + 28);
	if (m->data + m->comp > cd_off)
		return refuse(why, cap, "npz: member '%.40s.npy' runs past the central directory",
			      m->name);
	return 0;
}

/* The directory's members into *out (owned by the caller), checked against each other. */
static int list_members(const uint8_t *p, size_t len, struct member **out, size_t *nout,
			char *why, size_t cap)
{
	uint64_t cd_off, cd_len, end_at, pos, used;
	struct member *m, **byname = NULL;
	size_t n;
	int err;

	err = find_end(p, len, &cd_off, &cd_len, &n, &end_at, why, cap);
	if (err)
		return err;
	if (n == 0)
		return refuse(why, cap, "npz: the archive has no members");
	if (n > TRIB_ST_MAX_TENSORS)
		return refuse(why, cap, "npz: %zu members: at most %d", n, TRIB_ST_MAX_TENSORS);
	m = trib_calloc(n, sizeof(*m));
	if (!m)
		return -ENOMEM;
	pos = cd_off;
	for (size_t i = 0; i < n; i++, pos += used) {
		err = read_central(p + pos, cd_off + cd_len - pos, p, cd_off, &m[i], &used, why,
				   cap);
		if (err)
			goto fail;
	}
	if (pos != cd_off + cd_len) {
		err = refuse(why, cap, "npz: the central directory holds %llu bytes more than its "
			     "%zu entries", (unsigned long long)(cd_off + cd_len - pos), n);
		goto fail;
	}
	/* No byte read twice: members in file order must not overlap. */
	qsort(m, n, sizeof(*m), cmp_local);
	for (size_t i = 1; i < n; i++) {
		if (m[i - 1].data + m[i - 1].comp > m[i].local) {
			err = refuse(why, cap, "npz: members '%.40s.npy' and '%.40s.npy' overlap",
				     m[i - 1].name, m[i].name);
			goto fail;
		}
	}
	byname = trib_malloc(n * sizeof(*byname));
	if (!byname) {
		err = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < n; i++)
		byname[i] = &m[i];
	qsort(byname, n, sizeof(*byname), cmp_name);
	for (size_t i = 1; i < n; i++) {
		if (!strcmp(byname[i - 1]->name, byname[i]->name)) {
			char show[TRIB_ST_SHOW_MAX];

			trib_st_show(byname[i]->name, strlen(byname[i]->name), show, sizeof(show));
			err = refuse(why, cap, "npz: member '%s.npy' appears twice", show);
			goto fail;
		}
	}
	trib_free(byname);
	*out = m;
	*nout = n;
	return 0;
fail:
	trib_free(byname);
	trib_free(m);
	return err;
}

/* zlib's allocations go through trib_alloc like every other (its accounting and fault tests). */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
	(void)opaque;
	return trib_calloc(items, size);
}

static void z_free(voidpf opaque, voidpf p)
{
	(void)opaque;
	trib_free(p);
}

/* Inflate exactly @n bytes into @dst; *crc follows them. */
static int inflate_exact(z_stream *z, uint8_t *dst, uint64_t n, uLong *crc, const char *name,
			 char *why, size_t cap)
{
	while (n) {
		uInt step = n > (1u << 30) ? (1u << 30) : (uInt)n;
		int r;

		z->next_out = dst;
		z->avail_out = step;
		while (z->avail_out) {
			r = inflate(z, Z_NO_FLUSH);
			if (r == Z_STREAM_END && z->avail_out)
				return refuse(why, cap, "npz: member '%.40s.npy' inflates to fewer "
					      "bytes than its declared size", name);
			if (r == Z_MEM_ERROR) /* its window is allocated on the first call */
				return -ENOMEM;
			if (r == Z_BUF_ERROR)
				return refuse(why, cap, "npz: member '%.40s.npy': its deflate data "
					      "is truncated", name);
			if (r != Z_OK && r != Z_STREAM_END)
				return refuse(why, cap, "npz: member '%.40s.npy': bad deflate data "
					      "(%s)", name, z->msg ? z->msg : "zlib error");
			if (r == Z_STREAM_END)
				break;
		}
		*crc = crc32(*crc, dst, step);
		dst += step;
		n -= step;
	}
	return 0;
}

/*
 * A deflated member: its .npy header inflated into a buffer, its data into @region at
 * *used (64-aligned), float64 narrowed on the way. Then nothing may follow: a stream that
 * would inflate past the declared size is refused without inflating more than one byte of it.
 */
static int inflate_member(const uint8_t *p, const struct member *m, uint8_t *base,
			  uint8_t *region, uint64_t region_cap, uint64_t *used, struct trib_npy *h,
			  uint64_t *at, uint32_t *dtype, char *why, size_t cap)
{
	z_stream z = { 0 };
	uLong crc = crc32(0, Z_NULL, 0);
	uint8_t *hdr = NULL, *bounce = NULL, extra;
	uint64_t off, need, start;
	int err, r;

	z.zalloc = z_alloc;
	z.zfree = z_free;
	if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)(uintptr_t)(p + m->data);
	z.avail_in = (uInt)m->comp;
	hdr = trib_malloc(TRIB_NPY_HEADER_MAX + 12);
	if (!hdr) {
		err = -ENOMEM;
		goto out;
	}
	if (m->size < 12) {
		err = refuse(why, cap, "npz: member '%.40s.npy' of %llu bytes is not an .npy",
			     m->name, (unsigned long long)m->size);
		goto out;
	}
	err = inflate_exact(&z, hdr, 12, &crc, m->name, why, cap);
	if (!err)
		err = trib_npy_prefix(hdr, 12, &off, why, cap);
	if (!err && off > m->size)
		err = refuse(why, cap, "npz: member '%.40s.npy': its .npy header length runs "
			     "past its %llu bytes", m->name, (unsigned long long)m->size);
	/* 12 bytes are inflated already: a dict shorter than 2 bytes (not a dict) ends here. */
	if (!err && off < 12)
		err = refuse(why, cap, "npz: member '%.40s.npy': .npy header dict of %llu bytes "
			     "is too short", m->name, (unsigned long long)(off - 10));
	if (!err)
		err = inflate_exact(&z, hdr + 12, off - 12, &crc, m->name, why, cap);
	if (!err)
		err = trib_npy_parse(hdr, off, h, why, cap);
	if (err)
		goto out;
	if (m->size != off + h->data_len) {
		err = refuse(why, cap, "npz: member '%.40s.npy' declares %llu bytes; its header "
			     "and shape x dtype make %llu", m->name, (unsigned long long)m->size,
			     (unsigned long long)(off + h->data_len));
		goto out;
	}
	*dtype = h->dtype == TRIB_NPY_F64 ? TRIB_DTYPE_F32 :
		 h->dtype == TRIB_NPY_I64 ? TRIB_DTYPE_I32 :
					    h->dtype;
	need = h->n_elem * trib_dtype_size(*dtype);
	start = (*used + 63) & ~63ull;
	if (start > region_cap || need > region_cap - start) {
		err = -ENOSPC;
		snprintf(why, cap, "npz: the members' inflated data exceed the job's model (%llu "
			 "bytes of room; member '%.40s.npy' needs %llu more)",
			 (unsigned long long)region_cap, m->name, (unsigned long long)need);
		goto out;
	}
	if (h->dtype != TRIB_NPY_F64 && h->dtype != TRIB_NPY_I64) {
		err = inflate_exact(&z, region + start, need, &crc, m->name, why, cap);
	} else {
		bounce = trib_malloc(BOUNCE);
		if (!bounce) {
			err = -ENOMEM;
			goto out;
		}
		for (uint64_t done = 0; !err && done < h->n_elem;) {
			uint64_t k = h->n_elem - done < BOUNCE / 8 ? h->n_elem - done : BOUNCE / 8;
			uint64_t at8 = 0;
			uint32_t dt = h->dtype; /* 8 bytes wide, narrowed to 4 */

			err = inflate_exact(&z, bounce, k * 8, &crc, m->name, why, cap);
			if (err)
				break;
			/* Narrow within the bounce buffer, then into the region. */
			err = trib__npy_settle(bounce, &at8, &dt, k, m->name, why, cap);
			if (!err)
				memcpy(region + start + 4 * done, bounce, k * 4);
			done += k;
		}
	}
	if (err)
		goto out;
	/* The declared size is reached: the stream must end here, with no input left. */
	z.next_out = &extra;
	z.avail_out = 1;
	r = inflate(&z, Z_FINISH);
	if (r != Z_STREAM_END || z.avail_out == 0) {
		err = refuse(why, cap, "npz: member '%.40s.npy' %s", m->name,
			     z.avail_out == 0 ? "inflates past its declared size (refused as a "
						"zip bomb)" : "has bad deflate data after its tensor");
		goto out;
	}
	if (z.avail_in) {
		err = refuse(why, cap, "npz: member '%.40s.npy' has %u bytes after its deflate "
			     "stream", m->name, z.avail_in);
		goto out;
	}
	if (crc != m->crc) {
		err = refuse(why, cap, "npz: member '%.40s.npy': CRC-32 mismatch (the archive is "
			     "corrupt)", m->name);
		goto out;
	}
	*at = (uint64_t)(region - base) + start;
	*used = start + need;
out:
	inflateEnd(&z);
	trib_free(hdr);
	trib_free(bounce);
	return err;
}

/* An .npy refusal inside member @m: say which member. */
static int in_member(int err, const struct member *m, char *why, size_t cap)
{
	char inner[TRIB_NPY_WHY_MAX];

	if (err != -EINVAL || !strncmp(why, "npz:", 4))
		return err;
	snprintf(inner, sizeof(inner), "%s", why);
	return refuse(why, cap, "npz: member '%.40s.npy': %s", m->name, inner);
}

int trib_npz_load(void *buf, size_t len, void *region, uint64_t region_cap, struct trib_st *out,
		  uint64_t *region_used, char *why, size_t cap)
{
	uint8_t *p = buf;
	struct member *m = NULL;
	size_t n = 0;
	uint64_t used = 0;
	int err;

	memset(out, 0, sizeof(*out));
	*region_used = 0;
	err = list_members(p, len, &m, &n, why, cap);
	if (err)
		return err;
	out->tensors = trib_calloc(n, sizeof(*out->tensors));
	if (!out->tensors) {
		err = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		struct trib_npy h;
		uint64_t at;
		uint32_t dtype;

		if (m[i].method == 8) {
			err = inflate_member(p, &m[i], p, region, region_cap, &used, &h, &at,
					     &dtype, why, cap);
		} else {
			/* Stored: CRC first, then parse, then settle in place (it writes). */
			err = 0;
			if (crc32(crc32(0, Z_NULL, 0), p + m[i].data, (uInt)m[i].size) != m[i].crc)
				err = refuse(why, cap, "npz: member '%.40s.npy': CRC-32 mismatch "
					     "(the archive is corrupt)", m[i].name);
			if (!err)
				err = trib_npy_parse(p + m[i].data, m[i].size, &h, why, cap);
			if (!err && m[i].size != h.data_off + h.data_len)
				err = refuse(why, cap, "npz: member '%.40s.npy' holds %llu bytes; "
					     "its header and shape x dtype make %llu", m[i].name,
					     (unsigned long long)m[i].size,
					     (unsigned long long)(h.data_off + h.data_len));
			at = m[i].data + h.data_off;
			dtype = h.dtype;
			if (!err)
				err = trib__npy_settle(p, &at, &dtype, h.n_elem, m[i].name, why,
						       cap);
		}
		if (err) {
			err = in_member(err, &m[i], why, cap);
			goto fail;
		}
		trib__npy_tensor(&out->tensors[i], m[i].name, &h, dtype, at);
	}
	out->ntensors = n;
	*region_used = used;
	trib_free(m);
	return 0;
fail:
	trib_free(m);
	trib_st_free(out);
	return err;
}

/* --- writing: a stored archive, one member per tensor --- */

/*
 * The .npy header of a tensor of @descr ('<f4' or '<i4': the same length, so sizes do not
 * depend on it), padded so that its data starts at a multiple of 64.
 */
static size_t npy_header(const struct trib_tensor *t, const char *descr, char *out, size_t cap)
{
	char dict[256 + 24 * TRIB_ST_MAX_DIMS];
	size_t n = 0, total;

	n += (size_t)snprintf(dict + n, sizeof(dict) - n,
			      "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
	for (uint32_t d = 0; d < t->ndim; d++)
		n += (size_t)snprintf(dict + n, sizeof(dict) - n, "%llu%s",
				      (unsigned long long)t->shape[d],
				      t->ndim == 1 || d + 1 < t->ndim ? ", " : "");
	n += (size_t)snprintf(dict + n, sizeof(dict) - n, "), }");
	total = (10 + n + 1 + 63) & ~(size_t)63;
	if (out && total <= cap) {
		memcpy(out, "\x93NUMPY\x01\x00", 8);
		put16((uint8_t *)out + 8, (uint16_t)(total - 10));
		memcpy(out + 10, dict, n);
		memset(out + 10 + n, ' ', total - 10 - n - 1);
		out[total - 1] = '\n';
	}
	return total;
}

uint64_t trib_npz_size(const struct trib_tensor *schema, size_t n)
{
	uint64_t total = END_LEN;

	if (n > 0xfffe)
		return 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t nlen = strlen(schema[i].name) + 4;
		uint64_t member = npy_header(&schema[i], "<f4", NULL, 0) + schema[i].n_elem * 4;

		if (member >= 0xffffffffu)
			return 0;
		total += LOCAL_LEN + nlen + member + CENTRAL_LEN + nlen;
	}
	return total < 0xffffffffu ? total : 0;
}

void trib_npz_write(const struct trib_tensor *schema, size_t n, const void *data, void *out)
{
	trib_npz_write_dtype(schema, n, TRIB_DTYPE_F32, data, out);
}

void trib_npz_write_dtype(const struct trib_tensor *schema, size_t n, uint32_t dtype,
			  const void *data, void *out)
{
	uint8_t *o = out, *cd;
	const uint8_t *src = data;
	uint64_t pos = 0, cd_len = 0, lpos = 0;
	char hdr[512];

	/* Sizes were checked by trib_npz_size(): every field fits its 16 or 32 bits. */
	for (size_t i = 0; i < n; i++) {
		/* @dtype for the whole model (frl), or the tensor's own (a flora pair's rank). */
		const char *descr = dtype == TRIB_DTYPE_I32 || schema[i].dtype == TRIB_DTYPE_I32
					    ? "<i4" : "<f4";
		size_t nlen = strlen(schema[i].name) + 4, hl = npy_header(&schema[i], descr, hdr,
									   sizeof(hdr));
		uint64_t dlen = schema[i].n_elem * 4;
		uLong crc = crc32(crc32(crc32(0, Z_NULL, 0), (const Bytef *)hdr, (uInt)hl), src,
				  (uInt)dlen);
		uint8_t *l = o + pos;

		put32(l, SIG_LOCAL);
		put16(l + 4, 20);
		put16(l + 6, 0);
		put16(l + 8, 0);
		put16(l + 10, 0);
		put16(l + 12, 0x21); /* 1980-01-01 */
		put32(l + 14, (uint32_t)crc);
		put32(l + 18, (uint32_t)(hl + dlen));
		put32(l + 22, (uint32_t)(hl + dlen));
		put16(l + 26, (uint16_t)nlen);
		put16(l + 28, 0);
		memcpy(l + LOCAL_LEN, schema[i].name, nlen - 4);
		memcpy(l + LOCAL_LEN + nlen - 4, ".npy", 4);
		memcpy(l + LOCAL_LEN + nlen, hdr, hl);
		memcpy(l + LOCAL_LEN + nlen + hl, src, dlen);
		pos += LOCAL_LEN + nlen + hl + dlen;
		src += dlen;
	}
	cd = o + pos;
	for (size_t i = 0; i < n; i++) {
		size_t nlen = strlen(schema[i].name) + 4;
		uint8_t *e = cd + cd_len, *l = o + lpos;

		memset(e, 0, CENTRAL_LEN);
		put32(e, SIG_CENTRAL);
		put16(e + 4, 20);
		put16(e + 6, 20);
		memcpy(e + 8, l + 6, 24); /* flags .. uncompressed size: as in the local header */
		put16(e + 28, (uint16_t)nlen);
		put32(e + 42, (uint32_t)(l - o));
		memcpy(e + CENTRAL_LEN, schema[i].name, nlen - 4);
		memcpy(e + CENTRAL_LEN + nlen - 4, ".npy", 4);
		cd_len += CENTRAL_LEN + nlen;
		lpos += LOCAL_LEN + nlen + le32(l + 22);
	}
	{
		uint8_t *e = cd + cd_len;

		memset(e, 0, END_LEN);
		put32(e, SIG_END);
		put16(e + 8, (uint16_t)n);
		put16(e + 10, (uint16_t)n);
		put32(e + 12, (uint32_t)cd_len);
		put32(e + 16, (uint32_t)pos);
	}
}
