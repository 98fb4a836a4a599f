/* SPDX-License-Identifier: MIT */
/* Logging: one line per event on stderr, with time, level and the process's name. */
#ifndef TRIB_LOG_H
#define TRIB_LOG_H

enum trib_log_level {
	TRIB_LOG_DEBUG = 0,
	TRIB_LOG_INFO = 1,
	TRIB_LOG_WARN = 2,
	TRIB_LOG_ERROR = 3,
};

/* @name is borrowed (must outlive logging), e.g. "up" or "fn 3". */
void trib_log_init(const char *name);
/* Level from TRIBUTARY_LOG=debug|info|warn|error, default info. */
void trib_log_set_level(enum trib_log_level lvl);
void trib_log(enum trib_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define trib_debug(...) trib_log(TRIB_LOG_DEBUG, __VA_ARGS__)
#define trib_info(...) trib_log(TRIB_LOG_INFO, __VA_ARGS__)
#define trib_warn(...) trib_log(TRIB_LOG_WARN, __VA_ARGS__)
#define trib_error(...) trib_log(TRIB_LOG_ERROR, __VA_ARGS__)

#endif
