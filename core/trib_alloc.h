/* SPDX-License-Identifier: MIT */
/* The one allocator wrapper every module allocates through (jemalloc underneath, see meson.build).
 */
#ifndef TRIB_ALLOC_H
#define TRIB_ALLOC_H

#include <stddef.h>

/*
 * The returned memory is owned by the caller and released with trib_free().
 * jansson allocates through these as well (set before main), so strings from
 * json_dumps() are released with trib_free() too.
 * Each returns NULL on failure (including an injected failure, below).
 */
void *trib_malloc(size_t n);
void *trib_calloc(size_t nmemb, size_t size);
void *trib_realloc(void *p, size_t n);
char *trib_strdup(const char *s);
char *trib_strndup(const char *s, size_t n);
/* Accepts NULL. */
void trib_free(void *p);

/*
 * Tests: make the allocation after the next @n succeed-calls fail (n = 0 fails
 * the very next one); -1 turns injection off. Lets a test walk every unwind path.
 */
void trib_alloc_fail_after(long n);

/*
 * How many allocations have returned NULL so far (real or injected). A caller
 * of a library that does not say "out of memory" clearly (jansson reports some
 * allocation failures as syntax errors) compares this before and after the
 * call to tell -ENOMEM from bad input.
 */
unsigned long trib_alloc_failures(void);

/*
 * Tests: allocation calls so far (malloc, calloc, realloc, strdup; each
 * counts once whether it succeeds or fails), so that a test can count the
 * allocations of a scenario and then fail each of them in turn
 * (trib_alloc_fail_after). Not for production decisions.
 */
unsigned long trib_alloc_count(void);

/*
 * Tests: blocks allocated and not yet freed, counting every successful
 * trib_malloc/calloc/strdup and realloc(NULL) as one and every trib_free of a
 * non-NULL pointer as minus one. Comparing it before and after a scenario
 * finds a leak without waiting for the leak checker at exit.
 */
long trib_alloc_live(void);

#endif
