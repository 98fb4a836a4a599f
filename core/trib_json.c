// SPDX-License-Identifier: MIT
/* JSON text through the one allocator (jansson's json_dumps would use malloc). */
#include "trib_json.h"

#include "trib_alloc.h"

char *trib_json_dumps(const json_t *j, size_t flags)
{
	size_t len;
	char *s;

	if (!j)
		return NULL;
	len = json_dumpb(j, NULL, 0, flags);
	if (!len)
		return NULL;
	s = trib_malloc(len + 1);
	if (!s)
		return NULL;
	/* The same value dumps to the same length. */
	json_dumpb(j, s, len, flags);
	s[len] = '\0';
	return s;
}
