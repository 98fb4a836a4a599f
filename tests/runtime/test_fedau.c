// SPDX-License-Identifier: MIT
/* fedau's per-client table (runtime/node/rt_fedau.c): weights, the bound, the store round trip. */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl_store.h"
#include "trib_fedau.h"
#include "rt_node_priv.h"
#include "trib_alloc.h"

static struct rt_job *job_new(void)
{
	struct rt_job *j = trib_calloc(1, sizeof(*j));

	cr_assert_not_null(j);
	snprintf(j->name, sizeof(j->name), "au");
	j->algo.fedau = true;
	j->algo.fedau_k = 4;
	return j;
}

static double weight(struct rt_job *j, const char *id, uint32_t round)
{
	double w = -1;

	cr_assert_eq(rt_fedau_weight(j, id, round, &w), 0);
	return w;
}

/* What trib_fedau_observe() gives a client with these participations, then @round. */
static double expect(const uint32_t *rounds, size_t n, uint32_t round, uint32_t k)
{
	struct trib_fedau_client c = TRIB_FEDAU_NEW;
	double w = 0;

	for (size_t i = 0; i < n; i++)
		cr_assert_eq(trib_fedau_observe(&c, rounds[i], k, &w), 0);
	cr_assert_eq(trib_fedau_observe(&c, round, k, &w), 0);
	return w;
}

Test(runtime_fedau, a_weight_is_read_only_and_a_note_moves_it)
{
	struct rt_job *j = job_new();
	const uint32_t r[] = { 0, 2, 9 };

	cr_assert(weight(j, "a", 0) == 1.0, "a new client weighs 1");
	cr_assert(weight(j, "a", 0) == 1.0, "asking twice changes nothing");
	for (size_t i = 0; i < 3; i++)
		rt__fedau_note(j, r[i], "a");
	rt__fedau_note(j, 9, "a"); /* a replay of the same round: a no-op */
	cr_assert(weight(j, "a", 12) == expect(r, 3, 12, 4), "got %g", weight(j, "a", 12));
	cr_assert(weight(j, "b", 12) == expect(NULL, 0, 12, 4), "b is new");
	cr_assert_eq(rt_fedau_weight(j, "", 3, &(double){ 0 }), -EINVAL, "no client id");
	rt__fedau_free(j);
	trib_free(j);
}

Test(runtime_fedau, past_the_bound_the_stalest_client_is_forgotten)
{
	struct rt_job *j = job_new();
	char id[32];
	const uint32_t r[] = { 0 };

	rt__fedau_note(j, 0, "old");
	for (uint32_t i = 0; i < RT_FEDAU_CLIENTS_MAX - 1; i++) {
		snprintf(id, sizeof(id), "c%u", i);
		rt__fedau_note(j, 1 + i % 7, id);
	}
	/* Full: "old" is still known. */
	cr_assert(weight(j, "old", 20) == expect(r, 1, 20, 4));
	rt__fedau_note(j, 8, "new"); /* one more: "old" (last seen at round 0) goes */
	cr_assert(weight(j, "old", 20) == expect(NULL, 0, 20, 4), "old was forgotten");
	cr_assert(weight(j, "old", 20) != expect(r, 1, 20, 4), "the check can tell");
	snprintf(id, sizeof(id), "c%u", 0u);
	cr_assert(weight(j, id, 20) != expect(NULL, 0, 20, 4), "the others stay");
	rt__fedau_free(j);
	trib_free(j);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

Test(runtime_fedau, the_table_survives_the_store_and_evictions_leave_it)
{
	char dir[] = "/tmp/trib-rt-fedau-XXXXXX", path[PATH_MAX];
	struct rt_node *n = trib_calloc(1, sizeof(*n));
	struct rt_job *j = job_new();
	struct ctl_job cj;
	struct ctl_fedau_row *rows = NULL;
	size_t nr = 0;
	double before;

	cr_assert(n && mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/node.db", dir);
	cr_assert_eq(ctl_store_open(path, &n->store), 0);
	memset(&cj, 0, sizeof(cj));
	strcpy(cj.name, "au");
	strcpy(cj.algorithm, "fedau");
	cj.clients_per_round = 2;
	cj.schema_json = (char *)"[]";
	cr_assert_eq(ctl_store_job_create(n->store, &cj), 0);
	j->db_id = cj.id;
	rt__fedau_note(j, 0, "a");
	rt__fedau_note(j, 3, "a");
	rt__fedau_note(j, 1, "b");
	cr_assert_eq(rt__fedau_save(n, j), 0);
	before = weight(j, "a", 11);
	rt__fedau_free(j);
	cr_assert(weight(j, "a", 11) != before, "an empty table knows nothing");
	rt__fedau_load(n, j);
	cr_assert(weight(j, "a", 11) == before, "the store gave the state back");
	/* Fill to the bound: "b" (round 1) is the stalest after "a" moves on. */
	rt__fedau_note(j, 5, "a");
	for (uint32_t i = 0; i < RT_FEDAU_CLIENTS_MAX - 1; i++) {
		char id[32];

		snprintf(id, sizeof(id), "x%u", i);
		rt__fedau_note(j, 4, id);
	}
	cr_assert_eq(rt__fedau_save(n, j), 0);
	cr_assert_eq(ctl_store_fedau_list(n->store, j->db_id, &rows, &nr), 0);
	cr_assert_eq(nr, RT_FEDAU_CLIENTS_MAX);
	for (size_t i = 0; i < nr; i++)
		cr_assert_str_neq(rows[i].client, "b", "b's row was deleted");
	trib_free(rows);
	rt__fedau_free(j);
	trib_free(j);
	ctl_store_close(n->store);
	trib_free(n);
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}
