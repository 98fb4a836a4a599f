// SPDX-License-Identifier: MIT
/* The allocation wrapper: one place to swap allocators and to inject failures in tests. */
#include "trib_alloc.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* < 0: no injection; otherwise the number of allocations still allowed to succeed. */
static _Atomic long fail_after = -1;
/* Allocations that returned NULL, real or injected (see trib_alloc_failures). */
static _Atomic unsigned long failures;
/* Tests: allocation calls so far, and blocks not yet freed (trib_alloc_count, trib_alloc_live). */
static _Atomic unsigned long calls;
static _Atomic long live;

void trib_alloc_fail_after(long n)
{
	atomic_store(&fail_after, n);
}

static int should_fail(void)
{
	long v;

	atomic_fetch_add(&calls, 1);
	v = atomic_load(&fail_after);

	while (v >= 0) {
		if (atomic_compare_exchange_weak(&fail_after, &v, v - 1)) {
			if (v == 0)
				atomic_fetch_add(&failures, 1);
			return v == 0;
		}
	}
	return 0;
}

/* Count a real failure of the allocator underneath, or a new live block. */
static void *counted(void *p)
{
	if (!p)
		atomic_fetch_add(&failures, 1);
	else
		atomic_fetch_add(&live, 1);
	return p;
}

unsigned long trib_alloc_failures(void)
{
	return atomic_load(&failures);
}

unsigned long trib_alloc_count(void)
{
	return atomic_load(&calls);
}

long trib_alloc_live(void)
{
	return atomic_load(&live);
}

void *trib_malloc(size_t n)
{
	if (should_fail())
		return NULL;
	return counted(malloc(n ? n : 1));
}

void *trib_calloc(size_t nmemb, size_t size)
{
	if (should_fail())
		return NULL;
	return counted(calloc(nmemb ? nmemb : 1, size ? size : 1));
}

void *trib_realloc(void *p, size_t n)
{
	void *q;

	if (should_fail())
		return NULL;
	q = realloc(p, n ? n : 1);
	if (p && q)
		return q; /* the same block, moved or not */
	return counted(q);
}

char *trib_strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *d = trib_malloc(len + 1);

	if (!d)
		return NULL;
	memcpy(d, s, len);
	d[len] = '\0';
	return d;
}

char *trib_strdup(const char *s)
{
	return trib_strndup(s, strlen(s));
}

void trib_free(void *p)
{
	if (p)
		atomic_fetch_sub(&live, 1);
	free(p);
}

/*
 * jansson allocates through us too, so that an injected failure reaches the
 * JSON of job specs, wire messages and responses, and so that what
 * json_dumps() returns is released with trib_free() like everything else.
 * A constructor, because the first JSON may be parsed before main() calls
 * anything of ours (and trib_alloc.o is linked into every binary that
 * allocates).
 */
/*
 * Weak, so that a binary that never links jansson (tributary-fn, which starts
 * on a round's critical path) does not load it for this alone: there the
 * symbol is NULL and there is no JSON to route.
 */
extern void json_set_alloc_funcs(json_malloc_t, json_free_t) __attribute__((weak));

__attribute__((constructor)) static void trib_alloc_route_jansson(void)
{
	if (json_set_alloc_funcs)
		json_set_alloc_funcs(trib_malloc, trib_free);
}
