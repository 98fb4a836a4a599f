// SPDX-License-Identifier: MIT
/* Runs the Python client's unittest suite against a real `tributary up`, wanting exit 0. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trib_alloc.h"

/*
 * Environment, set by tests/python/meson.build:
 *   TRIBUTARY_BIN     the built server (the suite starts its own `tributary up`)
 *   PYCLIENT_SRC_DIR  clients/python, holding tributary_client.py and test_client.py
 *   PYCLIENT_PYTHON   an interpreter with numpy (default /usr/bin/python3)
 */
#define SUITE_TIMEOUT_S 240

/*
 * Read all of @fd into a NUL-terminated heap buffer; *out is owned by the
 * caller (trib_free). Returns 0 or -errno.
 */
static int slurp(int fd, char **out)
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

Test(python_client, unittest_suite_passes, .timeout = 280)
{
	const char *dir = getenv("PYCLIENT_SRC_DIR");
	const char *py = getenv("PYCLIENT_PYTHON");
	const char *bin = getenv("TRIBUTARY_BIN");
	char path[4096], tmo[16];
	char *out = NULL;
	int pfd[2], status = 0, err;
	pid_t pid;

	cr_assert(dir && bin,
		  "TRIBUTARY_BIN and PYCLIENT_SRC_DIR must be set (run it by meson test)");
	if (!py || !*py)
		py = "/usr/bin/python3";
	cr_assert(access(bin, X_OK) == 0, "no tributary binary at %s", bin);
	cr_assert(access(py, X_OK) == 0, "no python interpreter at %s", py);
	cr_assert((size_t)snprintf(path, sizeof(path), "%s/test_client.py", dir) < sizeof(path));
	cr_assert(access(path, R_OK) == 0, "no test suite %s", path);
	snprintf(tmo, sizeof(tmo), "%d", SUITE_TIMEOUT_S);
	cr_assert(pipe2(pfd, O_CLOEXEC) == 0);
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		/* From the suite's folder `-m unittest test_client` imports it by module name. */
		dup2(pfd[1], STDOUT_FILENO);
		dup2(pfd[1], STDERR_FILENO);
		if (chdir(dir) != 0)
			_exit(126);
		setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
		execl("/usr/bin/timeout", "timeout", "-k", "5", tmo, py, "-m", "unittest", "-v",
		      "test_client", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	err = slurp(pfd[0], &out);
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	cr_assert(err == 0, "reading the suite's output: %s", strerror(-err));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "===== test_client.py failed; its output: =====\n%s\n"
			"===== end of test_client.py =====\n", out);
		fflush(stderr);
	}
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "python -m unittest test_client failed (exit %d%s); its output is printed above",
		  WIFEXITED(status) ? WEXITSTATUS(status) : -1,
		  WIFEXITED(status) && WEXITSTATUS(status) == 124 ? ": timed out" : "");
	trib_free(out);
}
