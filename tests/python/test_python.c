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
#include "trib_run.h"

/*
 * Environment, set by tests/python/meson.build:
 *   TRIBUTARY_BIN     the built server (the suite starts its own `tributary up`)
 *   PYCLIENT_SRC_DIR  clients/python: tributary_client.py and its test_*.py suites
 *   PYCLIENT_PYTHON   an interpreter with numpy (default /usr/bin/python3)
 */
#define SUITE_TIMEOUT_S 240

Test(python_client, unittest_suite_passes, .timeout = 280)
{
	const char *dir = getenv("PYCLIENT_SRC_DIR");
	const char *py = getenv("PYCLIENT_PYTHON");
	const char *bin = getenv("TRIBUTARY_BIN");
	char path[4096], tmo[16];
	const char *env[] = { "PYTHONDONTWRITEBYTECODE=1", NULL };
	const char *argv[] = { NULL, "-m", "unittest", "-v", "test_client", "test_tls",
			       "test_failover", "test_loop", "test_run_server", "test_secagg", NULL };
	struct trib_run_opts o = { .timeout_s = tmo, .chdir = dir, .env = env };
	char *out = NULL;
	int status = 0, err;

	cr_assert(dir && bin,
		  "TRIBUTARY_BIN and PYCLIENT_SRC_DIR must be set (run it by meson test)");
	if (!py || !*py)
		py = "/usr/bin/python3";
	cr_assert(access(bin, X_OK) == 0, "no tributary binary at %s", bin);
	cr_assert(access(py, X_OK) == 0, "no python interpreter at %s", py);
	cr_assert((size_t)snprintf(path, sizeof(path), "%s/test_client.py", dir) < sizeof(path));
	cr_assert(access(path, R_OK) == 0, "no test suite %s", path);
	snprintf(tmo, sizeof(tmo), "%d", SUITE_TIMEOUT_S);
	/* From the suite's folder `-m unittest test_client` imports it by module name. */
	argv[0] = py;
	err = trib_run(argv, &o, &out, &status);
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
