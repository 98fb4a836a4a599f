/* SPDX-License-Identifier: MIT */
/* Tests: a node with a small arena and a temporary data dir, no loop, no processes started. */
#ifndef RT_TEST_NODE_H
#define RT_TEST_NODE_H

#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt_node.h"
#include "shm_arena_file.h"

#define RT_TEST_ADMIN "admin-token-for-tests-0123456789"

struct rt_test_node {
	char dir[64];
	struct rt_node *n;
};

/* A node on shm+unix with a 64 MiB arena of normal pages; the admin token is RT_TEST_ADMIN. */
static inline void rt_test_node_open(struct rt_test_node *t)
{
	struct rt_node_opts o = {
		.listen_host = "127.0.0.1",
		.arena_bytes = 64ull << 20,
		.no_huge = true,
		.warm_s = 30,
		.dataplane = FN_DP_SHM_UNIX,
		.fn_path = "/nonexistent/tributary-fn",
	};

	snprintf(t->dir, sizeof(t->dir), "/tmp/trib-rt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(t->dir));
	o.data_dir = t->dir;
	cr_assert_eq(rt_node_open(&t->n, &o, ":memory:"), 0);
	snprintf(t->n->admin_token, sizeof(t->n->admin_token), "%s", RT_TEST_ADMIN);
}

static inline void rt_test_node_close(struct rt_test_node *t)
{
	char cmd[128], arena[PATH_MAX];

	/* A node closed with open rounds keeps its arena file (in /dev/shm here): not a test's. */
	snprintf(arena, sizeof(arena), "%s", shm_arena_file_path(t->n->arena));
	rt_node_close(t->n);
	unlink(arena);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	cr_assert_eq(system(cmd), 0);
}

#endif
