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

void trib_alloc_fail_after(long n)
{
	atomic_store(&fail_after, n);
}

static int should_fail(void)
{
	long v = atomic_load(&fail_after);

	while (v >= 0) {
		if (atomic_compare_exchange_weak(&fail_after, &v, v - 1)) {
			if (v == 0)
				atomic_fetch_add(&failures, 1);
			return v == 0;
		}
	}
	return 0;
}

/* Count a real failure of the allocator underneath. */
static void *counted(void *p)
{
	if (!p)
		atomic_fetch_add(&failures, 1);
	return p;
}

unsigned long trib_alloc_failures(void)
{
	return atomic_load(&failures);
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
	if (should_fail())
		return NULL;
	return counted(realloc(p, n ? n : 1));
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
__attribute__((constructor)) static void trib_alloc_route_jansson(void)
{
	json_set_alloc_funcs(trib_malloc, trib_free);
}
