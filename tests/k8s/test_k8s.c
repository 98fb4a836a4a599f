// SPDX-License-Identifier: MIT
/* Renders manifests/ with `kubectl kustomize` and checks every object with validate.js. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trib_alloc.h"
#include "trib_run.h"

/*
 * Environment, set by tests/k8s/meson.build:
 *   K8S_SRC_ROOT  the source tree: manifests/, docs/DEPLOY.md, tests/k8s/validate.js
 * kubectl and node come from PATH. scripts/deps-k8s.sh installs them and the npm
 * packages validate.js needs (tests/k8s/node_modules); this test installs nothing.
 * It skips only when kubectl or node is not installed at all; anything else that
 * goes wrong (no npm packages, a render error) is a failure.
 */
#define CMD_TIMEOUT "60"

struct k8s_env {
	char root[PATH_MAX];	 /* K8S_SRC_ROOT */
	char tmpdir[PATH_MAX];	 /* made by mkdtemp, removed by k8s_env_fini */
	char rendered[PATH_MAX]; /* tmpdir/rendered.yaml: kubectl kustomize's output */
	char broken[PATH_MAX];	 /* tmpdir/broken.yaml: a copy with one fault put in */
	char *yaml;		 /* its text, owned (trib_free) */
	char *out;		 /* the last validator output, owned (trib_free) */
};

/*
 * One per test process. A failed assertion leaves the test body at once, so
 * everything the test allocates hangs off here and k8s_env_fini (the tests'
 * .fini) frees it whatever happened.
 */
static struct k8s_env env;

/* True if an executable @name is in one of PATH's directories. */
static bool in_path(const char *name)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	while (path && *path) {
		const char *end = strchr(path, ':');
		size_t len = end ? (size_t)(end - path) : strlen(path), nlen = strlen(name);

		if (len && len + nlen + 2 <= sizeof(buf)) {
			memcpy(buf, path, len);
			buf[len] = '/';
			memcpy(buf + len + 1, name, nlen + 1);
			if (access(buf, X_OK) == 0)
				return true;
		}
		path = end ? end + 1 : NULL;
	}
	return false;
}

/* Run @argv under timeout(1); stdout to @out_path when given (tests/common/trib_run.h). */
static int run(const char *const argv[], const char *out_path, char **output, int *status)
{
	struct trib_run_opts o = { .timeout_s = CMD_TIMEOUT, .out_path = out_path };

	return trib_run(argv, &o, output, status);
}

/* Read file @path into a NUL-terminated heap buffer; *out is owned by the caller. 0 or -errno. */
static int read_file(const char *path, char **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0)
		return -errno;
	err = trib_slurp(fd, out);
	close(fd);
	return err;
}

/* Write @len bytes of @text to a new file @path. Returns 0 or -errno. */
static int write_file(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), err = 0;

	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t n = write(fd, text, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = -errno;
			break;
		}
		text += n;
		len -= (size_t)n;
	}
	if (close(fd) && !err)
		err = -errno;
	return err;
}

static bool exited_ok(int status)
{
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Print a command's output where Criterion's log shows it. */
static void show(const char *what, const char *output)
{
	fprintf(stderr, "===== %s =====\n%s===== end of %s =====\n", what, output, what);
	fflush(stderr);
}

/*
 * Skip when kubectl or node is absent; otherwise render manifests/ into a fresh
 * temporary directory and read the result into @e->yaml. Asserts on failure.
 */
static void k8s_env_init(struct k8s_env *e)
{
	const char *root = getenv("K8S_SRC_ROOT");
	char manifests[PATH_MAX];
	char *out = NULL;
	int status = 0, err;

	memset(e, 0, sizeof(*e));
	cr_assert(root && *root, "K8S_SRC_ROOT must be set (run it by meson test)");
	if (!in_path("kubectl"))
		cr_skip_test("kubectl is not installed (scripts/deps-k8s.sh installs Debian's "
			     "kubernetes-client)");
	if (!in_path("node"))
		cr_skip_test("node is not installed (scripts/deps-k8s.sh installs Debian's nodejs)");
	cr_assert(in_path("timeout"), "timeout(1) (coreutils) is not in PATH");
	cr_assert((size_t)snprintf(e->root, sizeof(e->root), "%s", root) < sizeof(e->root));
	cr_assert((size_t)snprintf(manifests, sizeof(manifests), "%s/manifests", root) <
		  sizeof(manifests));
	snprintf(e->tmpdir, sizeof(e->tmpdir), "%s/trib-k8s-XXXXXX",
		 getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert(mkdtemp(e->tmpdir), "mkdtemp %s: %s", e->tmpdir, strerror(errno));
	cr_assert((size_t)snprintf(e->rendered, sizeof(e->rendered), "%s/rendered.yaml",
				   e->tmpdir) < sizeof(e->rendered));
	cr_assert((size_t)snprintf(e->broken, sizeof(e->broken), "%s/broken.yaml", e->tmpdir) <
		  sizeof(e->broken));

	err = run((const char *const[]){ "kubectl", "kustomize", manifests, NULL }, e->rendered,
		  &out, &status);
	cr_assert(err == 0, "running kubectl kustomize: %s", strerror(-err));
	if (!exited_ok(status))
		show("kubectl kustomize", out);
	trib_free(out);
	cr_assert(exited_ok(status), "kubectl kustomize %s failed (exit %d), output above",
		  manifests, exit_code(status));
	err = read_file(e->rendered, &e->yaml);
	cr_assert(err == 0, "reading %s: %s", e->rendered, strerror(-err));
	cr_assert(strstr(e->yaml, "kind:"), "kubectl kustomize rendered no objects");
}

static void k8s_env_fini(void)
{
	struct k8s_env *e = &env;

	trib_free(e->yaml);
	e->yaml = NULL;
	trib_free(e->out);
	e->out = NULL;
	if (!e->tmpdir[0])
		return;
	unlink(e->rendered);
	unlink(e->broken);
	rmdir(e->tmpdir);
}

/*
 * Run validate.js on @file (with --doc docs/DEPLOY.md when @doc); its output
 * replaces e->out. Returns the validator's exit code; asserts that it ran at all.
 */
static int validate(struct k8s_env *e, const char *file, bool doc)
{
	char script[PATH_MAX + 32], deploy[PATH_MAX + 32];
	char **output = &e->out;
	int status = 0, err;

	trib_free(e->out);
	e->out = NULL;

	snprintf(script, sizeof(script), "%s/tests/k8s/validate.js", e->root);
	snprintf(deploy, sizeof(deploy), "%s/docs/DEPLOY.md", e->root);
	if (doc)
		err = run((const char *const[]){ "node", script, "--doc", deploy, file, NULL }, NULL,
			  output, &status);
	else
		err = run((const char *const[]){ "node", script, file, NULL }, NULL, output,
			  &status);
	cr_assert(err == 0, "running node %s: %s", script, strerror(-err));
	/* 2: bad usage or missing npm packages, a setup failure; say so plainly. */
	if (exit_code(status) == 2)
		show("validate.js", *output);
	cr_assert(exit_code(status) == 0 || exit_code(status) == 1,
		  "validate.js could not run (exit %d; npm packages missing? run "
		  "scripts/deps-k8s.sh), output above", exit_code(status));
	return exit_code(status);
}

Test(k8s_manifests, render_and_validate, .fini = k8s_env_fini, .timeout = 110)
{
	static const char *const expect[] = {
		"Namespace/tributary OK",
		"ServiceAccount/tributary-node OK",
		"ServiceAccount/tributary-controller OK",
		"ConfigMap/tributary-config OK",
		"PersistentVolumeClaim/tributary-controller-data OK",
		"PriorityClass/tributary-controller OK",
		"PodDisruptionBudget/tributary-controller OK",
		"Deployment/tributary-controller OK",
		"DaemonSet/tributary-node OK",
		"Service/tributary-gateway OK",
		"Service/tributary-controller OK",
		"NetworkPolicy/tributary-default-deny OK",
		"NetworkPolicy/tributary-node OK",
		"NetworkPolicy/tributary-controller OK",
	};
	size_t i;
	int rc;

	k8s_env_init(&env);
	rc = validate(&env, env.rendered, false);
	if (rc != 0)
		show("validate.js", env.out);
	cr_expect(rc == 0, "validate.js rejected the rendered manifests, output above");
	for (i = 0; i < sizeof(expect) / sizeof(expect[0]); i++)
		cr_expect(strstr(env.out, expect[i]), "validate.js did not report \"%s\"",
			  expect[i]);
}

Test(k8s_manifests, deploy_doc_mentions_every_object, .fini = k8s_env_fini, .timeout = 110)
{
	int rc;

	k8s_env_init(&env);
	rc = validate(&env, env.rendered, true);
	if (rc != 0)
		show("validate.js --doc docs/DEPLOY.md", env.out);
	cr_expect(rc == 0, "docs/DEPLOY.md does not match the manifests, output above");
	cr_expect(strstr(env.out, "DEPLOY.md OK"), "validate.js did not check docs/DEPLOY.md");
}

/* One way to break the rendered manifests, and what the validator must then say. */
struct breakage {
	const char *what;
	const char *find;    /* first occurrence is replaced; NULL: append */
	const char *replace; /* or the document to append */
	const char *expect;  /* in the validator's output */
};

static const struct breakage breakages[] = {
	{ "a misspelt field", "readinessProbe:", "readinesProbe:",
	  "unknown field \"readinesProbe\"" },
	{ "a string where the schema wants an integer", "containerPort: 8080",
	  "containerPort: eighty", "must be integer" },
	{ "a kind no API has", NULL,
	  "---\napiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: broken\n",
	  "unknown kind v1/Frobnicator" },
	{ "a reference to a PVC that is not there", "claimName: tributary-controller-data",
	  "claimName: tributary-controller-gone",
	  "no PersistentVolumeClaim tributary-controller-gone" },
	/* What an operator flags (issue 14). */
	{ "a short image name", "image: registry.example.com/tributary/tributary:0.1.0",
	  "image: tributary:0.1.0", "not fully qualified" },
	{ "a moving tag", "image: registry.example.com/tributary/tributary:0.1.0",
	  "image: registry.example.com/tributary/tributary:latest", ":latest moves" },
	{ "readiness that is liveness", "path: /readyz", "path: /healthz",
	  "readinessProbe is the livenessProbe" },
	{ "an emptyDir without a limit", "sizeLimit: 4Gi", "medium: \"\"",
	  "emptyDir without a sizeLimit" },
	{ "a priority class that is not there", "priorityClassName: tributary-controller",
	  "priorityClassName: tributary-gone", "no such PriorityClass" },
	{ "a budget that selects nothing", "minAvailable: 1\n  selector:\n    matchLabels:\n"
	  "      app.kubernetes.io/component: controller",
	  "minAvailable: 1\n  selector:\n    matchLabels:\n"
	  "      app.kubernetes.io/component: gone",
	  "PodDisruptionBudget/tributary-controller FAILED" },
	/* The arena outlives a container restart only on its HugePages emptyDir (issue 12). */
	{ "the arena off its volume", "- /var/lib/tributary-arena/node.arena",
	  "- /tmp/node.arena",
	  "--arena-path /tmp/node.arena is not on a HugePages emptyDir" },
	{ "a huge-page volume of a size not requested", "medium: HugePages-2Mi",
	  "medium: HugePages-1Gi", "needs a hugepages-1Gi request" },
};

/*
 * The rendered text with @b applied, as a new heap string owned by the caller
 * (trib_free). Asserts that the text to replace is there, so that a change to
 * the manifests cannot turn this check into one that breaks nothing.
 */
static char *apply_breakage(const char *yaml, const struct breakage *b)
{
	size_t ylen = strlen(yaml), rlen = strlen(b->replace), at = ylen, flen = 0;
	const char *hit;
	char *out;

	if (b->find) {
		hit = strstr(yaml, b->find);
		cr_assert(hit, "the rendered manifests no longer contain \"%s\" to break (%s)",
			  b->find, b->what);
		at = (size_t)(hit - yaml);
		flen = strlen(b->find);
	}
	out = trib_malloc(ylen - flen + rlen + 2);
	cr_assert(out);
	memcpy(out, yaml, at);
	memcpy(out + at, b->replace, rlen);
	strcpy(out + at + rlen, yaml + at + flen);
	return out;
}

Test(k8s_manifests, validator_rejects_broken_copy, .fini = k8s_env_fini, .timeout = 110)
{
	size_t i;

	k8s_env_init(&env);
	for (i = 0; i < sizeof(breakages) / sizeof(breakages[0]); i++) {
		const struct breakage *b = &breakages[i];
		char *text = apply_breakage(env.yaml, b);
		int err, rc;

		err = write_file(env.broken, text, strlen(text));
		trib_free(text);
		cr_assert(err == 0, "writing %s: %s", env.broken, strerror(-err));
		rc = validate(&env, env.broken, false);
		if (rc != 1 || !strstr(env.out, b->expect))
			show("validate.js on a broken copy", env.out);
		cr_expect(rc == 1, "validate.js accepted %s (exit %d)", b->what, rc);
		cr_expect(strstr(env.out, b->expect), "validate.js did not say \"%s\" for %s",
			  b->expect, b->what);
	}
}
