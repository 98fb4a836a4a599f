/* SPDX-License-Identifier: MIT */
/* JSON text from jansson values, allocated through trib_alloc (so it is freed with trib_free). */
#ifndef TRIB_JSON_H
#define TRIB_JSON_H

#include <stddef.h>

#include <jansson.h>

/*
 * @j (borrowed) as NUL-terminated text with jansson's @flags; owned by the
 * caller (trib_free). NULL if @j is NULL or out of memory.
 */
char *trib_json_dumps(const json_t *j, size_t flags);

/*
 * Parse @len bytes of @buf (borrowed) with jansson's @flags into a new
 * reference (owned by the caller, json_decref). Returns 0, -ENOMEM, or
 * -EINVAL (not JSON: @jerr, if given, says why). Short of memory, jansson
 * reports a syntax error, or nothing at all and returns a document with a
 * string cut short; so any allocation that failed during the parse makes it
 * -ENOMEM and the document is dropped. The one way to load JSON that is
 * stored or sent to us.
 */
int trib_json_loadb(const void *buf, size_t len, size_t flags, json_t **out, json_error_t *jerr);

#endif
