/* SPDX-License-Identifier: MIT */
/* The job-name rule, the one copy every layer checks names against. */
#ifndef TRIB_NAME_H
#define TRIB_NAME_H

#include <stdbool.h>

#define TRIB_JOB_NAME_MAX 64 /* including the NUL: names are 1..63 chars */

/*
 * 1..63 chars of [A-Za-z0-9._-], not starting with '.' or '-'. NULL is
 * invalid. A valid name is safe as one path component (it becomes a
 * directory under DATA_DIR/jobs) and as a URL path segment without escaping.
 */
bool trib_job_name_valid(const char *name);

/*
 * Whether names @a and @b are the same job's: equal but for ASCII case ("MNIST" is "mnist"),
 * so a new job may not take a name that only differs by case from an existing one (its
 * directory would be the other's on a case-insensitive file system, and people read them as
 * one). Lookups stay exact: a request names a job as it was created. NULL is no name.
 */
bool trib_job_name_same(const char *a, const char *b);

#endif
