// SPDX-License-Identifier: MIT
/* Tests of the filter in front of the store's Idempotency-Key lookup (runtime/node/rt_idem.c). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "rt_idem.h"

static void key_of(char *buf, size_t cap, uint32_t i)
{
	snprintf(buf, cap, "sim-7-%u-client-%u", i / 1000, i);
}

Test(runtime_idem, a_key_never_put_is_not_in_the_store_and_every_key_put_may_be)
{
	struct rt_idem_mem m = { 0 };
	char k[64];
	uint32_t maybe = 0;

	cr_assert(rt_idem_mem_may_have(&m, 0, "x", 1), "not set up: ask the store");
	rt_idem_mem_init(&m, 0);
	cr_assert(!rt_idem_mem_may_have(&m, 0, "x", 1), "empty: nothing to ask");
	/* Many, so that it grows several times. */
	for (uint32_t i = 0; i < 5000; i++) {
		key_of(k, sizeof(k), i);
		rt_idem_mem_add(&m, i / 1000, k, strlen(k));
	}
	for (uint32_t i = 0; i < 5000; i++) {
		key_of(k, sizeof(k), i);
		cr_assert(rt_idem_mem_may_have(&m, 0, k, strlen(k)), "key %u was put", i);
		cr_assert(rt_idem_mem_may_have(&m, i / 1000, k, strlen(k)));
	}
	for (uint32_t i = 5000; i < 15000; i++) {
		key_of(k, sizeof(k), i);
		maybe += rt_idem_mem_may_have(&m, 0, k, strlen(k));
	}
	cr_assert_leq(maybe, 1, "64-bit hashes: %u of 10000 new keys sent to the store", maybe);
	rt_idem_mem_free(&m);
	cr_assert(rt_idem_mem_may_have(&m, 0, "x", 1), "freed: covers nothing");
}

Test(runtime_idem, rounds_before_its_start_are_always_asked_of_the_store)
{
	struct rt_idem_mem m = { 0 };

	rt_idem_mem_init(&m, 5); /* loaded at round 4: round 4's keys may be in the store */
	cr_assert(rt_idem_mem_may_have(&m, 4, "k", 1));
	cr_assert(rt_idem_mem_may_have(&m, 0, "k", 1));
	cr_assert(!rt_idem_mem_may_have(&m, 5, "k", 1));
	rt_idem_mem_add(&m, 6, "k", 1);
	cr_assert(rt_idem_mem_may_have(&m, 5, "k", 1), "FedBuff: rounds >= 5, put in 6");
	rt_idem_mem_free(&m);
}

Test(runtime_idem, a_prune_forgets_the_rounds_below_and_keeps_the_rest)
{
	struct rt_idem_mem m = { 0 };
	char k[64];

	rt_idem_mem_init(&m, 0);
	for (uint32_t i = 0; i < 4000; i++) {
		key_of(k, sizeof(k), i);
		rt_idem_mem_add(&m, i / 1000, k, strlen(k)); /* rounds 0..3 */
	}
	rt_idem_mem_prune(&m, 3);
	for (uint32_t i = 0; i < 4000; i++) {
		key_of(k, sizeof(k), i);
		if (i >= 3000)
			cr_assert(rt_idem_mem_may_have(&m, 0, k, strlen(k)), "round 3 stays: %u", i);
		else
			cr_assert(!rt_idem_mem_may_have(&m, 0, k, strlen(k)), "pruned: %u", i);
	}
	/* Pruning everything, then adding again, works. */
	rt_idem_mem_prune(&m, 100);
	key_of(k, sizeof(k), 3500);
	cr_assert(!rt_idem_mem_may_have(&m, 0, k, strlen(k)));
	rt_idem_mem_add(&m, 100, k, strlen(k));
	cr_assert(rt_idem_mem_may_have(&m, 0, k, strlen(k)));
	rt_idem_mem_free(&m);
}
