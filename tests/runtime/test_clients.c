// SPDX-License-Identifier: MIT
/* Tests for runtime/node/rt_clients.c: the table of a round's clients (seen, bodies in flight). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "rt_node.h"

Test(runtime_clients, get_find_and_grow)
{
	struct rt_clients t = { 0 };
	char id[40];

	cr_assert_null(rt_clients_find(&t, "a"));
	for (int i = 0; i < 5000; i++) {
		snprintf(id, sizeof(id), "client-%d", i);
		cr_assert_not_null(rt_clients_get(&t, id));
	}
	cr_assert_eq(t.used, 5000);
	cr_assert_leq(t.used * 2, t.cap, "at most half full");
	for (int i = 0; i < 5000; i++) {
		snprintf(id, sizeof(id), "client-%d", i);
		cr_assert_str_eq(rt_clients_find(&t, id)->id, id);
		cr_assert_eq(rt_clients_get(&t, id), rt_clients_find(&t, id), "no second entry");
	}
	cr_assert_null(rt_clients_find(&t, "client-5000"));
	cr_assert_null(rt_clients_get(&t, ""));
	memset(id, 'x', 33);
	id[33] = '\0';
	cr_assert_null(rt_clients_get(&t, id), "an id over 32 characters");
	rt_clients_free(&t);
}

Test(runtime_clients, a_new_round_forgets_who_was_seen_but_not_bodies_in_flight)
{
	struct rt_clients t = { 0 };
	struct rt_client_ent *e;
	uint32_t left = 99;

	cr_assert_eq(rt_clients_sync(&t, 0, &left), 0);
	cr_assert_eq(left, 0);
	for (int i = 0; i < 100; i++) {
		char id[16];

		snprintf(id, sizeof(id), "c%d", i);
		e = rt_clients_get(&t, id);
		e->seen = true;
		t.seen++;
		e->inflight = i == 7 ? 2 : 0;
	}
	cr_assert_eq(rt_clients_sync(&t, 0, &left), 0);
	cr_assert_eq(left, 0, "the same round: nothing changes");
	cr_assert(rt_clients_find(&t, "c3")->seen);
	cr_assert_eq(rt_clients_sync(&t, 1, &left), 0);
	cr_assert_eq(left, 100, "the round left had 100 distinct clients");
	cr_assert_eq(t.seen, 0);
	cr_assert_null(rt_clients_find(&t, "c3"), "idle entries go");
	e = rt_clients_find(&t, "c7");
	cr_assert(e && !e->seen && e->inflight == 2, "a client with bodies in flight stays");
	cr_assert_eq(t.used, 1);
	cr_assert_leq(t.cap, 16, "the table shrinks back");
	rt_clients_free(&t);
}
