// SPDX-License-Identifier: MIT
/* Integer parsing: digits only, overflow-checked, range-checked. */
#include "trib_parse.h"

#include <errno.h>
#include <stddef.h>

/*
 * Written by hand rather than with strtoull(): strtoull accepts leading space,
 * a sign ("-1" wraps to UINT64_MAX) and needs errno juggling, and every one of
 * those has been a bug in a copy of this rule.
 */
int trib_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
			return -EINVAL;
	}
	if (v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int trib_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v;
	int err = trib_parse_u64(s, min, max, &v);

	if (err)
		return err;
	*out = (uint32_t)v;
	return 0;
}
