// SPDX-License-Identifier: MIT
/* Logging to stderr: a whole line per write so lines from several processes do not interleave. */
#include "trib_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_name = "tributary";
static enum trib_log_level log_level = TRIB_LOG_INFO;

void trib_log_init(const char *name)
{
	const char *env = getenv("TRIBUTARY_LOG");

	log_name = name;
	if (!env)
		return;
	if (!strcmp(env, "debug"))
		log_level = TRIB_LOG_DEBUG;
	else if (!strcmp(env, "warn"))
		log_level = TRIB_LOG_WARN;
	else if (!strcmp(env, "error"))
		log_level = TRIB_LOG_ERROR;
}

void trib_log_set_level(enum trib_log_level lvl)
{
	log_level = lvl;
}

void trib_log(enum trib_log_level lvl, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "WARN", "ERROR" };
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	if (lvl < log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %s [%s] ", tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ts.tv_nsec / 1000000, names[lvl], log_name);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write(2) per line: atomic enough for a shared terminal or pipe. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}
