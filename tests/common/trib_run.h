/* SPDX-License-Identifier: MIT */
/* Test helper: run a command under timeout(1) and capture what it prints (scenario wrappers). */
#ifndef TRIB_RUN_H
#define TRIB_RUN_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trib_alloc.h"

struct trib_run_opts {
	const char *timeout_s;   /* timeout(1) limit, e.g. "170" (required) */
	const char *chdir;       /* run there, or NULL */
	const char *const *env;  /* "NAME=value" entries to set, NULL-terminated, or NULL */
	const char *out_path;    /* stdout to this file (stderr still captured), or NULL */
};

/* Read all of @fd into a NUL-terminated heap buffer; *out is the caller's (trib_free). 0/-errno. */
static inline int trib_slurp(int fd, char **out)
{
	size_t len = 0, cap = 65536;
	char *buf = trib_malloc(cap);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			char *nb = trib_realloc(buf, cap * 2);

			if (!nb) {
				trib_free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;

			trib_free(buf);
			return err;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	return 0;
}

/*
 * Run @argv (looked up in PATH) under timeout(1) with @o. Its stdout and
 * stderr land in *output (the caller's, trib_free), stdout in o->out_path
 * instead when given. *status gets the wait status. Returns 0 or -errno.
 */
static inline int trib_run(const char *const argv[], const struct trib_run_opts *o,
			   char **output, int *status)
{
	const char *targv[24] = { "timeout", "-k", "5", o->timeout_s };
	int pfd[2], err, i;
	pid_t pid;

	for (i = 0; argv[i]; i++) {
		if (i + 5 >= (int)(sizeof(targv) / sizeof(targv[0])))
			return -E2BIG;
		targv[i + 4] = argv[i];
	}
	targv[i + 4] = NULL;
	if (pipe2(pfd, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0) {
		err = -errno;
		close(pfd[0]);
		close(pfd[1]);
		return err;
	}
	if (pid == 0) {
		int ofd = pfd[1];

		if (o->out_path) {
			ofd = open(o->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (ofd < 0)
				_exit(126);
		}
		dup2(ofd, STDOUT_FILENO);
		dup2(pfd[1], STDERR_FILENO);
		if (o->chdir && chdir(o->chdir))
			_exit(126);
		for (const char *const *e = o->env; e && *e; e++) {
			const char *eq = strchr(*e, '=');
			char name[128];

			if (!eq || (size_t)(eq - *e) >= sizeof(name))
				_exit(126);
			memcpy(name, *e, (size_t)(eq - *e));
			name[eq - *e] = '\0';
			setenv(name, eq + 1, 1);
		}
		execvp(targv[0], (char *const *)targv);
		_exit(127);
	}
	close(pfd[1]);
	err = trib_slurp(pfd[0], output);
	close(pfd[0]);
	while (waitpid(pid, status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return err;
}

#endif
