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

#endif
