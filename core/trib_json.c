// SPDX-License-Identifier: MIT
/* JSON text through the one allocator (jansson's json_dumps would use malloc). */
#include "trib_json.h"

#include <errno.h>

#include "trib_alloc.h"

/*
 * A first guess at the text's size. Most answers (an API object, a SecAgg+ stage's inbox of
 * ~20 ciphertexts: ~6 KB) fit, and are then dumped once, not measured first and dumped again:
 * jansson's dump formats every number through snprintf, and a SecAgg+ round answers ~600 such
 * JSON requests on the gateway (docs/BENCHMARKS.md, issue 19).
 */
#define DUMP_GUESS 8192u

char *trib_json_dumps(const json_t *j, size_t flags)
{
	size_t len;
	char *s, *t;

	if (!j)
		return NULL;
	s = trib_malloc(DUMP_GUESS);
	if (!s)
		return NULL;
	len = json_dumpb(j, s, DUMP_GUESS - 1, flags);
	if (!len) {
		trib_free(s);
		return NULL;
	}
	if (len >= DUMP_GUESS) {
		/* Did not fit (json_dumpb wrote what did): the length it told, and once more. */
		t = trib_realloc(s, len + 1);
		if (!t) {
			trib_free(s);
			return NULL;
		}
		s = t;
		/* The same value dumps to the same length. */
		json_dumpb(j, s, len, flags);
	} else if (len + 1 <= DUMP_GUESS / 2 && (t = trib_realloc(s, len + 1))) {
		/* Some of these are kept (a job's params): not 8 KB each. */
		s = t;
	}
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
