// SPDX-License-Identifier: MIT
/* The job-name rule. */
#include "trib_name.h"

#include <stddef.h>
#include <strings.h>

bool trib_job_name_valid(const char *name)
{
	size_t i;

	if (!name || !name[0] || name[0] == '.' || name[0] == '-')
		return false;
	for (i = 0; name[i]; i++) {
		char c = name[i];

		if (i >= TRIB_JOB_NAME_MAX - 1)
			return false;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool trib_job_name_same(const char *a, const char *b)
{
	return a && b && !strcasecmp(a, b);
}
