// SPDX-License-Identifier: MIT
/* The allocation wrapper: one place to swap allocators and to inject failures in tests. */
#include "trib_alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* < 0: no injection; otherwise the number of allocations still allowed to succeed. */
static _Atomic long fail_after = -1;

void trib_alloc_fail_after(long n)
{
	atomic_store(&fail_after, n);
}

static int should_fail(void)
{
	long v = atomic_load(&fail_after);

	while (v >= 0) {
		if (atomic_compare_exchange_weak(&fail_after, &v, v - 1))
			return v == 0;
	}
	return 0;
}

void *trib_malloc(size_t n)
{
	if (should_fail())
		return NULL;
	return malloc(n ? n : 1);
}

void *trib_calloc(size_t nmemb, size_t size)
{
	if (should_fail())
		return NULL;
	return calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void *trib_realloc(void *p, size_t n)
{
	if (should_fail())
		return NULL;
	return realloc(p, n ? n : 1);
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
