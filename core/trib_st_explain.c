// SPDX-License-Identifier: MIT
/* What a safetensors upload got wrong against a job's schema, in words that name the names. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_safetensors.h"

/* Prefixes that wrappers add to a state_dict's keys: DataParallel, HF wrappers, torch.compile. */
static const char *const prefixes[] = { "module.", "model.", "_orig_mod.", NULL };

/* Unexpected names tried for a suggestion, and missing names each is compared with. */
#define SUGGEST_TRIES 16
#define SUGGEST_WITH 128
/* Names shown per list, at most (fewer when the message would not fit). */
#define LIST_SHOW 3

/* Bytes of a UTF-8 sequence starting at @s (@n left), 0 if it is not one (RFC 3629). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t need = s[0] < 0x80		? 0 :
		      (s[0] & 0xe0) == 0xc0 ? 1 :
		      (s[0] & 0xf0) == 0xe0 ? 2 :
		      (s[0] & 0xf8) == 0xf0 ? 3 :
					      4;

	if (need == 4 || need >= n || (need == 1 && s[0] < 0xc2))
		return need == 0 ? 1 : 0;
	for (size_t j = 1; j <= need; j++)
		if ((s[j] & 0xc0) != 0x80)
			return 0;
	return need + 1;
}

void trib_st_mend(char *s)
{
	unsigned char *u = (unsigned char *)s;
	size_t len = strlen(s);

	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq(u + i, len - i);

		if (!n)
			u[i] = '?';
		i += n ? n : 1;
	}
}

size_t trib_st_show(const char *s, size_t len, char *buf, size_t cap)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, o = 0;

	if (!cap)
		return 0;
	while (i < len && o + 4 < cap) {
		size_t n = utf8_seq(u + i, len - i);

		if (i + (n ? n : 1) > TRIB_ST_SHOW_NAME)
			break;
		if (n <= 1) {
			/* One byte: a control byte or not UTF-8 shows as '?'. */
			buf[o++] = n && u[i] >= 0x20 && u[i] != 0x7f ? (char)u[i] : '?';
			i++;
			continue;
		}
		memcpy(buf + o, u + i, n);
		o += n;
		i += n;
	}
	if (i < len && o + 4 <= cap) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return o;
}

/* An output buffer that never overflows: text past @cap is dropped, and @cut says so. */
struct out {
	char *buf;
	size_t cap, len;
	bool cut;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->cut)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (o->len + (size_t)n < o->cap) {
		o->len += (size_t)n;
		return;
	}
	/* Cut: never in the middle of a UTF-8 sequence. */
	o->cut = true;
	o->len = o->cap - 1;
	while (o->len && ((unsigned char)o->buf[o->len - 1] & 0xc0) == 0x80)
		o->len--;
	if (o->len && (unsigned char)o->buf[o->len - 1] >= 0xc0)
		o->len--;
	o->buf[o->len] = '\0';
}

/* 'name', shown. */
static void put_name(struct out *o, const char *name)
{
	char shown[TRIB_ST_SHOW_MAX];

	trib_st_show(name, strlen(name), shown, sizeof(shown));
	put(o, "'%s'", shown);
}

static void put_shape(struct out *o, const struct trib_tensor *t)
{
	put(o, "[");
	for (uint32_t d = 0; d < t->ndim; d++)
		put(o, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
	put(o, "]");
}

static int cmp_name(const void *a, const void *b)
{
	const struct trib_tensor *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

/* bsearch(): a name against a tensor pointer of a sorted array. */
static int cmp_key(const void *key, const void *elem)
{
	const struct trib_tensor *const *t = elem;

	return strcmp(key, (*t)->name);
}

static const struct trib_tensor *lookup(const struct trib_tensor **sorted, size_t n,
					const char *name)
{
	const struct trib_tensor **hit = bsearch(name, sorted, n, sizeof(*sorted), cmp_key);

	return hit ? *hit : NULL;
}

/* @n pointers to @t's tensors, sorted by name (caller frees), or NULL. */
static const struct trib_tensor **sort_names(const struct trib_tensor *t, size_t n)
{
	const struct trib_tensor **p = trib_malloc((n ? n : 1) * sizeof(*p));

	if (!p)
		return NULL;
	for (size_t i = 0; i < n; i++)
		p[i] = &t[i];
	qsort(p, n, sizeof(*p), cmp_name);
	return p;
}

/* @name without the known prefixes at its start (any number, in any order). */
static const char *strip(const char *name)
{
	for (size_t i = 0; prefixes[i];) {
		size_t n = strlen(prefixes[i]);

		if (!strncmp(name, prefixes[i], n) && name[n]) {
			name += n;
			i = 0;
		} else {
			i++;
		}
	}
	return name;
}

/*
 * Whether the edit distance of @a and @b is at most 2: Levenshtein in a band of |i - j| <= 2
 * (cells outside it are over 2 anyway), so a pair costs O(5 * length), names up to 255 bytes.
 */
static bool near(const char *a, const char *b)
{
	enum { FAR = 3 };
	size_t la = strlen(a), lb = strlen(b);
	unsigned char r0[TRIB_ST_NAME_MAX + 2], r1[TRIB_ST_NAME_MAX + 2];
	unsigned char *prev = r0, *row = r1, *tmp;

	if (la >= TRIB_ST_NAME_MAX || lb >= TRIB_ST_NAME_MAX || (la > lb ? la - lb : lb - la) > 2)
		return false;
	for (size_t j = 0; j <= lb + 1 && j <= 3; j++)
		prev[j] = (unsigned char)(j < FAR ? j : FAR);
	for (size_t i = 1; i <= la; i++) {
		size_t lo = i > 2 ? i - 2 : 1, hi = i + 2 < lb ? i + 2 : lb;
		unsigned best;

		/* Only the band is read: its left neighbour, and the cell past it next row. */
		row[0] = i < FAR ? (unsigned char)i : FAR;
		row[lo - 1] = lo == 1 ? row[0] : FAR;
		best = row[lo - 1];
		for (size_t j = lo; j <= hi; j++) {
			unsigned sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			unsigned del = prev[j] + 1u, ins = row[j - 1] + 1u;
			unsigned v = sub < del ? sub : del;

			v = v < ins ? v : ins;
			row[j] = (unsigned char)(v < FAR ? v : FAR);
			best = v < best ? v : best;
		}
		row[hi + 1] = FAR;
		if (best >= FAR)
			return false;
		tmp = prev;
		prev = row;
		row = tmp;
	}
	return prev[lb] <= 2;
}

/* What the names differ by: the fix after "did you mean 'want' for 'got'?". */
static void put_fix(struct out *o, const char *got, const char *want)
{
	size_t pg = (size_t)(strip(got) - got), pw = (size_t)(strip(want) - want);

	if (strcmp(strip(got), strip(want)))
		put(o, " (a typo?)");
	else if (pg && !pw)
		put(o, " Strip the prefix '%.*s' from the update's names%s.", (int)pg, got,
		    !strncmp(got, "module.", 7) ? " (save model.module.state_dict())" : "");
	else if (!pg && pw)
		put(o, " Add the prefix '%.*s' to the update's names.", (int)pw, want);
	else
		put(o, " The prefixes differ: '%.*s' here, '%.*s' in the job.", (int)pg, got,
		    (int)pw, want);
}

/* Names of the upload missing from the schema and the other way round; 0 or -ENOMEM. */
struct diff {
	const struct trib_tensor **missing, **unexpected; /* borrowed tensors, in their order */
	size_t nmissing, nunexpected;
};

/* Whether @u is the "<name>.scale" of an I8 tensor of the schema (compressed uploads). */
static bool is_scale(const struct trib_tensor **sc, size_t nsc, const struct trib_tensor **up,
		     size_t nup, const struct trib_tensor *u)
{
	size_t len = strlen(u->name);
	const struct trib_tensor *b;
	char base[TRIB_ST_NAME_MAX];

	if (len <= 6 || strcmp(u->name + len - 6, ".scale"))
		return false;
	snprintf(base, sizeof(base), "%.*s", (int)(len - 6), u->name);
	b = lookup(up, nup, base);
	return b && b->dtype == TRIB_DTYPE_I8 && lookup(sc, nsc, base);
}

static int diff_names(const struct trib_st *st, const struct trib_tensor *schema, size_t nschema,
		      bool compressed, struct diff *d)
{
	const struct trib_tensor **up = sort_names(st->tensors, st->ntensors);
	const struct trib_tensor **sc = sort_names(schema, nschema);
	int err = -ENOMEM;

	memset(d, 0, sizeof(*d));
	d->missing = trib_malloc((nschema ? nschema : 1) * sizeof(*d->missing));
	d->unexpected = trib_malloc((st->ntensors ? st->ntensors : 1) * sizeof(*d->unexpected));
	if (!up || !sc || !d->missing || !d->unexpected)
		goto out;
	for (size_t i = 0; i < nschema; i++)
		if (!lookup(up, st->ntensors, schema[i].name))
			d->missing[d->nmissing++] = &schema[i];
	for (size_t i = 0; i < st->ntensors; i++) {
		const struct trib_tensor *u = &st->tensors[i];

		if (!lookup(sc, nschema, u->name) &&
		    !(compressed && is_scale(sc, nschema, up, st->ntensors, u)))
			d->unexpected[d->nunexpected++] = u;
	}
	err = 0;
out:
	trib_free(up);
	trib_free(sc);
	return err;
}

/* "missing tensor 'a'" or "missing 5 tensors: 'a', 'b', 'c', ..." */
static void put_list(struct out *o, const char *what, const struct trib_tensor **t, size_t n,
		     size_t show)
{
	if (n == 1)
		put(o, "%s tensor ", what);
	else
		put(o, "%s %zu tensors: ", what, n);
	for (size_t i = 0; i < n && i < show; i++) {
		put(o, "%s", i ? ", " : "");
		put_name(o, t[i]->name);
	}
	if (n > show)
		put(o, ", ...");
}

/* The first unexpected name that is a missing one with a prefix changed, or a typo of one. */
static void put_suggestion(struct out *o, const struct diff *d)
{
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < d->nunexpected && i < SUGGEST_TRIES; i++)
			for (size_t j = 0; j < d->nmissing && j < SUGGEST_WITH; j++) {
				const char *got = d->unexpected[i]->name;
				const char *want = d->missing[j]->name;

				if (pass ? !near(got, want) : strcmp(strip(got), strip(want)))
					continue;
				put(o, "; did you mean ");
				put_name(o, want);
				put(o, " for ");
				put_name(o, got);
				put(o, "?");
				put_fix(o, got, want);
				return;
			}
}

/* Whether @st holds "<name>.scale", one F32 value (an I8 tensor's scale). */
static bool has_scale(const struct trib_st *st, const char *name)
{
	size_t n = strlen(name);

	for (size_t j = 0; j < st->ntensors; j++) {
		const struct trib_tensor *t = &st->tensors[j];

		if (!strncmp(t->name, name, n) && !strcmp(t->name + n, ".scale"))
			return t->dtype == TRIB_DTYPE_F32 && t->n_elem == 1;
	}
	return false;
}

/* The first schema tensor whose upload has another shape, or a dtype the match does not take. */
static bool put_first_mismatch(struct out *o, const struct trib_st *st,
			       const struct trib_tensor *schema, size_t nschema, bool compressed)
{
	for (size_t i = 0; i < nschema; i++) {
		const struct trib_tensor *s = &schema[i], *u = NULL;

		for (size_t j = 0; j < st->ntensors && !u; j++)
			if (!strcmp(st->tensors[j].name, s->name))
				u = &st->tensors[j];
		if (!u)
			continue;
		if (u->dtype != TRIB_DTYPE_F32 && !compressed) {
			put(o, "tensor ");
			put_name(o, s->name);
			put(o, ": dtype %s, expected F32", trib_dtype_name(u->dtype));
			return true;
		}
		if (u->dtype == TRIB_DTYPE_I32) { /* an index type: no float job takes it */
			put(o, "tensor ");
			put_name(o, s->name);
			put(o, ": dtype I32, expected F32%s", compressed ? ", F16, BF16 or I8" : "");
			return true;
		}
		if (u->dtype == TRIB_DTYPE_I8 && compressed && !has_scale(st, s->name)) {
			put(o, "tensor ");
			put_name(o, s->name);
			put(o, ": I8 without a one-value F32 tensor '<name>.scale' beside it");
			return true;
		}
		if (u->ndim != s->ndim ||
		    memcmp(u->shape, s->shape, s->ndim * sizeof(s->shape[0]))) {
			put(o, "tensor ");
			put_name(o, s->name);
			put(o, ": shape ");
			put_shape(o, s);
			put(o, " expected, got ");
			put_shape(o, u);
			return true;
		}
	}
	return false;
}

void trib_st_explain(const struct trib_st *st, const struct trib_tensor *schema, size_t nschema,
		     bool compressed, const char *why, char *buf, size_t cap)
{
	struct out o = { buf, cap < TRIB_ST_EXPLAIN_MAX ? cap : TRIB_ST_EXPLAIN_MAX, 0, false };
	struct diff d;

	if (!cap)
		return;
	buf[0] = '\0';
	why = why ? why : "does not match the job's tensors";
	if (!schema) {
		/* A failed parse: name the entry it failed on, if it was one. */
		if (st->bad_name[0])
			put(&o, "tensor '%s': ", st->bad_name);
		if (st->bad_name[0] && !strcmp(why, TRIB_ST_WHY_DTYPE) && st->bad_dtype[0])
			put(&o, "dtype '%s' is not taken (%s)", st->bad_dtype,
			    compressed ? "F32, F16, BF16 or I8" : "F32");
		else
			put(&o, "%s", why);
		return;
	}
	if (diff_names(st, schema, nschema, compressed, &d)) {
		put(&o, "%s", why);
	} else if (d.nmissing || d.nunexpected) {
		/* Fewer names in the lists until the suggestion fits after them. */
		for (size_t show = LIST_SHOW; show; show--) {
			o.len = 0;
			o.cut = false;
			if (d.nmissing)
				put_list(&o, "missing", d.missing, d.nmissing, show);
			if (d.nunexpected) {
				put(&o, "%s", d.nmissing ? "; " : "");
				put_list(&o, "unexpected", d.unexpected, d.nunexpected, show);
			}
			put_suggestion(&o, &d);
			if (!o.cut)
				break;
		}
	} else if (!put_first_mismatch(&o, st, schema, nschema, compressed)) {
		put(&o, "%s", why);
	}
	trib_free(d.missing);
	trib_free(d.unexpected);
}
