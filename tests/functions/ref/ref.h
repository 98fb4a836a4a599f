/* SPDX-License-Identifier: MIT */
/* Test helper: runs a numpy reference script (tests/functions/ref) and reads its arrays. */
#ifndef TRIB_TEST_REF_H
#define TRIB_TEST_REF_H

#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trib_alloc.h"

/*
 * Protocol: a script writes to stdout, for each array, a text line "name dtype count\n" (dtype
 * as numpy's dtype.str: <f4, <f8, <u2, |i1, |u1, <u4, <u8) and then count items of raw
 * little-endian bytes; then "end - 0\n". Inputs come from numpy's default_rng with the seed on
 * the command line, so every run sees the same vectors. Diagnostics go to stderr.
 *
 * The scripts are found next to this header: TRIB_REF_DIR if set, else this header's own
 * directory as the compiler saw it (__FILE__, relative to the build directory under meson),
 * tried from the working directory and from two levels above the test executable.
 */
/* -B: no __pycache__ in the source tree. */
#define REF_PYTHON "/usr/bin/python3 -B"

struct ref {
	char *buf;  /* the script's whole stdout, owned by the struct, freed by ref_free() */
	size_t len;
};

static inline int ref_dir(char *out, size_t cap)
{
	const char *env = getenv("TRIB_REF_DIR");
	char file[PATH_MAX], exe[PATH_MAX], *slash;
	ssize_t n;

	if (env && *env) {
		snprintf(out, cap, "%s", env);
		return 0;
	}
	snprintf(file, sizeof(file), "%s", __FILE__);
	slash = strrchr(file, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(file, sizeof(file), ".");
	n = snprintf(out, cap, "%s/refio.py", file);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	if (file[0] == '/' || access(out, R_OK) == 0) {
		n = snprintf(out, cap, "%s", file);
		return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
	}
	/* The executable is <build>/tests/functions/test_functions. */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		return -errno;
	exe[n] = '\0';
	for (int up = 0; up < 3; up++) {
		slash = strrchr(exe, '/');
		if (!slash)
			return -ENOENT;
		*slash = '\0';
	}
	n = snprintf(out, cap, "%s/%s", exe, file);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/*
 * Runs "python3 <ref dir>/<script> <args>" and keeps its output in @r (owned by the caller,
 * released with ref_free()). A script that fails or cannot start fails the test.
 */
static inline __attribute__((format(printf, 3, 4))) void
ref_run(struct ref *r, const char *script, const char *fmt, ...)
{
	char dir[PATH_MAX], args[1024], cmd[PATH_MAX + 1200];
	size_t cap = 1 << 16;
	va_list ap;
	FILE *p;
	int st;

	cr_assert_eq(ref_dir(dir, sizeof(dir)), 0, "cannot find tests/functions/ref");
	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	cr_assert_lt((size_t)snprintf(cmd, sizeof(cmd), "%s '%s/%s' %s", REF_PYTHON, dir, script,
				      args),
		     sizeof(cmd), "command line too long");
	fflush(NULL);
	p = popen(cmd, "r");
	cr_assert_not_null(p, "popen(%s): %s", cmd, strerror(errno));
	r->len = 0;
	r->buf = trib_malloc(cap);
	cr_assert_not_null(r->buf);
	for (;;) {
		size_t got;

		if (r->len == cap) {
			cap *= 2;
			r->buf = trib_realloc(r->buf, cap);
			cr_assert_not_null(r->buf);
		}
		got = fread(r->buf + r->len, 1, cap - r->len, p);
		if (!got)
			break;
		r->len += got;
	}
	st = pclose(p);
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "reference failed (status %d): %s", st, cmd);
}

static inline void ref_free(struct ref *r)
{
	trib_free(r->buf);
	r->buf = NULL;
	r->len = 0;
}

static inline size_t ref_itemsize(const char *dtype)
{
	return (size_t)atoi(dtype + 2); /* "<f4" -> 4 */
}

/*
 * The array @name of numpy dtype @dtype (e.g. "<f4") in @r: returns a pointer into r->buf
 * (borrowed from @r; the data is copied to an aligned buffer only if it is misaligned, which
 * refio.py prevents by padding) and its item count in *count (if not NULL). Fails the test if the
 * array is missing or of another dtype.
 */
static inline const void *ref_get(const struct ref *r, const char *name, const char *dtype,
				  size_t *count)
{
	size_t off = 0;

	while (off < r->len) {
		char nm[128], dt[8];
		unsigned long long cnt;
		const char *nl = memchr(r->buf + off, '\n', r->len - off);
		size_t data, bytes;

		cr_assert_not_null(nl, "reference output is truncated");
		cr_assert_eq(sscanf(r->buf + off, "%127s %7s %llu", nm, dt, &cnt), 3,
			     "bad reference record header");
		if (!strcmp(nm, "end"))
			break;
		data = (size_t)(nl - r->buf) + 1;
		bytes = (size_t)cnt * ref_itemsize(dt);
		cr_assert_leq(data + bytes, r->len, "reference array %s is truncated", nm);
		if (!strcmp(nm, name)) {
			cr_assert_str_eq(dt, dtype, "reference array %s has dtype %s, not %s", nm,
					 dt, dtype);
			cr_assert_eq((uintptr_t)(r->buf + data) % 8, 0, "%s is misaligned", nm);
			if (count)
				*count = (size_t)cnt;
			return r->buf + data;
		}
		off = data + bytes;
	}
	cr_assert_fail("reference has no array %s", name);
	return NULL;
}

/* Shorthands for the common dtypes; *count as in ref_get(). */
static inline const float *ref_f32(const struct ref *r, const char *name, size_t *count)
{
	return ref_get(r, name, "<f4", count);
}

static inline const double *ref_f64(const struct ref *r, const char *name, size_t *count)
{
	return ref_get(r, name, "<f8", count);
}

static inline const uint64_t *ref_u64(const struct ref *r, const char *name, size_t *count)
{
	return ref_get(r, name, "<u8", count);
}

/* A scalar: the only element of a one-element f8 array. */
static inline double ref_scalar(const struct ref *r, const char *name)
{
	size_t n;
	const double *v = ref_f64(r, name, &n);

	cr_assert_eq(n, 1, "%s is not a scalar", name);
	return v[0];
}

/* Distance in units in the last place between two finite floats (0 if bit-identical). */
static inline uint64_t ref_ulps(float a, float b)
{
	int32_t ia, ib;

	memcpy(&ia, &a, 4);
	memcpy(&ib, &b, 4);
	/* Map the sign-magnitude bits onto a monotonic integer line. */
	if (ia < 0)
		ia = (int32_t)(INT32_MIN - (int64_t)ia);
	if (ib < 0)
		ib = (int32_t)(INT32_MIN - (int64_t)ib);
	return ia > ib ? (uint64_t)((int64_t)ia - ib) : (uint64_t)((int64_t)ib - ia);
}

/* Asserts got[i] and want[i] are within @max_ulps for every i < n. */
static inline void ref_expect_f32(const float *got, const float *want, size_t n, uint32_t max_ulps,
				  const char *what)
{
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t u = ref_ulps(got[i], want[i]);

		if (u > max_ulps || isnan(got[i]) != isnan(want[i]))
			cr_assert_fail("%s: element %zu of %zu is %.9g, reference %.9g (%llu ulps)",
				       what, i, n, (double)got[i], (double)want[i],
				       (unsigned long long)u);
	}
}

/* Asserts |got[i] - want[i]| <= rtol |want[i]| + atol for every i < n. */
static inline void ref_expect_f64(const double *got, const double *want, size_t n, double rtol,
				  double atol, const char *what)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!(fabs(got[i] - want[i]) <= rtol * fabs(want[i]) + atol))
			cr_assert_fail("%s: element %zu of %zu is %.17g, reference %.17g", what, i,
				       n, got[i], want[i]);
}

#endif
