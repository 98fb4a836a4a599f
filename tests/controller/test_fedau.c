// SPDX-License-Identifier: MIT
/* A cluster's fedau table (controller/ctl_fedau.c): the single node's weights, its bound, restarts. */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl_fedau.h"
#include "ctl_store.h"
#include "trib_alloc.h"
#include "trib_fedau.h"

static char tdir[64];
static struct ctl_store *st;
static int64_t jid;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	char path[PATH_MAX];
	struct ctl_job j;

	strcpy(tdir, "/tmp/trib-ctl-fedau-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(path, sizeof(path), "%s/controller.db", tdir);
	cr_assert_eq(ctl_store_open(path, &st), 0);
	memset(&j, 0, sizeof(j));
	strcpy(j.name, "au");
	strcpy(j.algorithm, "fedau");
	j.clients_per_round = 3;
	j.schema_json = (char *)"[]";
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	jid = j.id;
}

static void teardown(void)
{
	ctl_store_close(st);
	st = NULL;
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(ctl_fedau, .init = setup, .fini = teardown);

static double take(struct ctl_fedau *t, const char *id, uint32_t round)
{
	double w = -1;

	cr_assert_eq(ctl_fedau_take(t, id, round, &w), 0, "%s round %u", id, round);
	return w;
}

/* What one node's estimator gives a client with these participations. */
static double expect(const uint32_t *rounds, size_t n, uint32_t k)
{
	struct trib_fedau_client c = TRIB_FEDAU_NEW;
	double w = 0;

	for (size_t i = 0; i < n; i++)
		cr_assert_eq(trib_fedau_observe(&c, rounds[i], k, &w), 0);
	return w;
}

Test(ctl_fedau, weights_are_the_single_nodes_and_a_resend_keeps_its_weight)
{
	struct ctl_fedau *t = ctl_fedau_new(3);
	const uint32_t r[] = { 0, 2, 3, 9, 10 };
	double w = 0;

	cr_assert_not_null(t);
	for (size_t i = 0; i < 5; i++)
		cr_assert(take(t, "a", r[i]) == expect(r, i + 1, 3), "participation %zu", i);
	/* Sent again in the same round (given back, or its node lost): the same weight. */
	cr_assert(take(t, "a", 10) == expect(r, 5, 3));
	cr_assert(take(t, "a", 10) == expect(r, 5, 3));
	cr_assert_eq(ctl_fedau_take(t, "a", 4, &w), -ESTALE, "an earlier round");
	cr_assert_eq(ctl_fedau_take(t, "", 11, &w), -EINVAL, "no client");
	cr_assert_eq(ctl_fedau_take(t, NULL, 11, &w), -EINVAL);
	cr_assert_eq(ctl_fedau_take(t, "0123456789012345678901234567890123", 11, &w), -EINVAL,
		     "longer than a client token's id");
	cr_assert_eq(ctl_fedau_size(t), 1);
	cr_assert_null(ctl_fedau_new(0), "cutoff out of range");
	cr_assert_null(ctl_fedau_new(TRIB_FEDAU_K_MAX + 1));
	ctl_fedau_free(t);
}

Test(ctl_fedau, a_restart_gets_the_states_saved_at_the_commit)
{
	struct ctl_fedau *t = ctl_fedau_new(4), *u = ctl_fedau_new(4);
	const uint32_t a[] = { 0, 1, 5, 12 }, b[] = { 3, 12 };
	double w = 0;

	cr_assert(t && u);
	take(t, "a", 0);
	take(t, "a", 1);
	take(t, "b", 3);
	cr_assert_eq(ctl_fedau_save(t, st, jid), 0);
	take(t, "a", 5); /* moved after the save: lost with a crash, replayed from its round */
	cr_assert_eq(ctl_fedau_save(t, st, jid), 0);
	cr_assert_eq(ctl_fedau_load(u, st, jid), 0);
	cr_assert_eq(ctl_fedau_size(u), 2);
	cr_assert(take(u, "a", 12) == expect(a, 4, 4), "a's estimate came back");
	cr_assert(take(u, "b", 12) == expect(b, 2, 4), "b's estimate came back");
	cr_assert(take(u, "c", 12) == expect((const uint32_t[]){ 12 }, 1, 4), "a new client");
	/* Round 5 was counted before the restart: its weight is not known after it. */
	cr_assert_eq(ctl_fedau_load(t = (ctl_fedau_free(t), ctl_fedau_new(4)), st, jid), 0);
	cr_assert_eq(ctl_fedau_take(t, "a", 5, &w), -ESTALE);
	ctl_fedau_free(t);
	ctl_fedau_free(u);
}

Test(ctl_fedau, past_the_bound_the_stalest_client_goes_and_its_row_too)
{
	struct ctl_fedau *t = ctl_fedau_new(4), *u = ctl_fedau_new(4);
	struct ctl_fedau_row *rows = NULL;
	size_t n = 0;
	char id[32];
	bool old = false;

	cr_assert(t && u);
	take(t, "old", 0);
	for (uint32_t i = 0; i < CTL_FEDAU_CLIENTS_MAX - 1; i++) {
		snprintf(id, sizeof(id), "c%u", i);
		take(t, id, 1 + i % 7);
	}
	cr_assert_eq(ctl_fedau_save(t, st, jid), 0);
	take(t, "new", 8); /* one more: "old" (last seen at round 0) goes */
	cr_assert_eq(ctl_fedau_size(t), CTL_FEDAU_CLIENTS_MAX);
	cr_assert_eq(ctl_fedau_save(t, st, jid), 0);
	cr_assert_eq(ctl_store_fedau_list(st, jid, &rows, &n), 0);
	cr_assert_eq(n, CTL_FEDAU_CLIENTS_MAX);
	for (size_t i = 0; i < n; i++)
		old |= !strcmp(rows[i].client, "old");
	cr_assert(!old, "the forgotten client's row is deleted");
	trib_free(rows);
	cr_assert(take(t, "old", 20) == expect((const uint32_t[]){ 20 }, 1, 4), "new again");
	cr_assert_eq(ctl_fedau_load(u, st, jid), 0);
	cr_assert_eq(ctl_fedau_size(u), CTL_FEDAU_CLIENTS_MAX);
	ctl_fedau_free(t);
	ctl_fedau_free(u);
}
