/* SPDX-License-Identifier: MIT */
/* Integer parsing for untrusted text (headers, query strings, flags): the one strict rule. */
#ifndef TRIB_PARSE_H
#define TRIB_PARSE_H

#include <stdint.h>

/*
 * Parse @s (borrowed, NUL-terminated) as a decimal integer in [@min, @max].
 * The whole string must be digits: no sign, no space, no "0x", not empty.
 * Leading zeros are allowed. Returns 0 (and *out), or -EINVAL when @s is
 * not digits, overflows 64 bits or falls outside the range; *out is
 * untouched on error.
 */
int trib_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* The same, into a uint32_t, with @max at most UINT32_MAX. */
int trib_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out);

#endif
