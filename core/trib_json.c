// SPDX-License-Identifier: MIT
/* JSON text through the one allocator (jansson's json_dumps would use malloc). */
#include "trib_json.h"

#include <errno.h>

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

int trib_json_loadb(const void *buf, size_t len, size_t flags, json_t **out, json_error_t *jerr)
{
	unsigned long failed = trib_alloc_failures();
	json_error_t local;
	json_t *j = json_loadb(buf, len, flags, jerr ? jerr : &local);

	if (trib_alloc_failures() != failed ||
	    (!j && json_error_code(jerr ? jerr : &local) == json_error_out_of_memory)) {
		json_decref(j);
		*out = NULL;
		return -ENOMEM;
	}
	*out = j;
	return j ? 0 : -EINVAL;
}
