// SPDX-License-Identifier: MIT
/* Tests of the SPSC descriptor ring: bounds, order, the 2^32 index wrap, and two processes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm_arena.h"
#include "shm_ring.h"

/* 64-byte aligned memory for a ring of @cap entries, freed by the caller with free(). */
static void *ring_mem(uint32_t cap, size_t *bytes)
{
	void *mem = NULL;

	*bytes = shm_ring_bytes(cap);
	cr_assert_neq(*bytes, 0);
	cr_assert_eq(posix_memalign(&mem, SHM_CACHELINE, *bytes), 0);
	return mem;
}

static struct shm_desc desc_n(uint32_t n)
{
	struct shm_desc d = {
		.version = SHM_ABI_VERSION,
		.kind = SHM_DESC_UPDATE,
		.seq = n,
		.slot_off = (uint64_t)n << 16,
		.weight = n,
	};
	return d;
}

Test(shm_ring, init_rejects_bad_arguments)
{
	struct shm_ring *r;
	size_t bytes;
	void *mem = ring_mem(8, &bytes);

	cr_expect_eq(shm_ring_bytes(0), 0);
	cr_expect_eq(shm_ring_bytes(12), 0);
	cr_expect_eq(shm_ring_bytes(8), sizeof(struct shm_ring_hdr) + 8 * SHM_DESC_SIZE);
	cr_expect_eq(shm_ring_init(mem, bytes, 12, &r), -EINVAL, "not a power of two");
	cr_expect_eq(shm_ring_init(mem, bytes, 0, &r), -EINVAL);
	cr_expect_eq(shm_ring_init(mem, bytes - 1, 8, &r), -EINVAL, "too short");
	cr_expect_eq(shm_ring_init((char *)mem + 8, bytes - 8, 4, &r), -EINVAL, "misaligned");
	cr_expect_eq(shm_ring_attach(mem, bytes, &r), -EBADMSG, "not initialised yet");
	cr_expect_eq(shm_ring_init(mem, bytes, 8, &r), 0);
	cr_expect_eq(shm_ring_capacity(r), 8);
	cr_expect_eq(shm_ring_attach(mem, bytes, &r), 0);
	cr_expect_eq(shm_ring_attach(mem, bytes - 1, &r), -EINVAL);
	free(mem);
}

Test(shm_ring, push_when_full_returns_eagain)
{
	struct shm_desc d;
	struct shm_ring *r;
	size_t bytes;
	void *mem = ring_mem(8, &bytes);
	uint32_t i;

	cr_assert_eq(shm_ring_init(mem, bytes, 8, &r), 0);
	for (i = 0; i < 8; i++) {
		d = desc_n(i);
		cr_assert_eq(shm_ring_push(r, &d), 0);
	}
	cr_expect_eq(shm_ring_count(r), 8);
	d = desc_n(99);
	cr_expect_eq(shm_ring_push(r, &d), -EAGAIN);
	for (i = 0; i < 8; i++) {
		cr_assert_eq(shm_ring_pop(r, &d), 0);
		cr_expect_eq(d.seq, i, "FIFO order");
		cr_expect_eq(d.slot_off, (uint64_t)i << 16);
	}
	cr_expect_eq(shm_ring_count(r), 0);
	free(mem);
}

Test(shm_ring, pop_when_empty_returns_eagain)
{
	struct shm_desc d = desc_n(1);
	struct shm_ring *r;
	size_t bytes;
	void *mem = ring_mem(4, &bytes);

	cr_assert_eq(shm_ring_init(mem, bytes, 4, &r), 0);
	cr_expect_eq(shm_ring_pop(r, &d), -EAGAIN);
	cr_expect_eq(shm_ring_push(r, &d), 0);
	cr_expect_eq(shm_ring_pop(r, &d), 0);
	cr_expect_eq(shm_ring_pop(r, &d), -EAGAIN);
	free(mem);
}

Test(shm_ring, capacity_one_alternates)
{
	struct shm_desc d = desc_n(7);
	struct shm_ring *r;
	size_t bytes;
	void *mem = ring_mem(1, &bytes);

	cr_assert_eq(shm_ring_init(mem, bytes, 1, &r), 0);
	cr_expect_eq(shm_ring_push(r, &d), 0);
	cr_expect_eq(shm_ring_push(r, &d), -EAGAIN);
	cr_expect_eq(shm_ring_pop(r, &d), 0);
	cr_expect_eq(shm_ring_pop(r, &d), -EAGAIN);
	free(mem);
}

Test(shm_ring, bursts_move_what_fits_in_order)
{
	struct shm_desc in[20], out[20];
	struct shm_ring *r;
	size_t bytes;
	void *mem = ring_mem(8, &bytes);
	unsigned i;

	for (i = 0; i < 20; i++)
		in[i] = desc_n(i);
	cr_assert_eq(shm_ring_init(mem, bytes, 8, &r), 0);
	cr_expect_eq(shm_ring_push_burst(r, in, 10), 8);
	cr_expect_eq(shm_ring_pop_burst(r, out, 5), 5);
	cr_expect_eq(shm_ring_push_burst(r, in + 8, 10), 5);
	cr_expect_eq(shm_ring_count(r), 8);
	cr_expect_eq(shm_ring_pop_burst(r, out + 5, 20), 8);
	for (i = 0; i < 13; i++)
		cr_expect_eq(out[i].seq, i);
	cr_expect_eq(shm_ring_pop_burst(r, out, 20), 0);
	cr_expect_eq(shm_ring_push_burst(r, in, 0), 0);
	free(mem);
}

Test(shm_ring, indexes_wrap_past_2_pow_32)
{
	struct shm_desc d, burst[3];
	struct shm_ring *r;
	size_t bytes;
	void *mem = ring_mem(8, &bytes);
	uint32_t next = 0, expect = 0, i;

	cr_assert_eq(shm_ring_init(mem, bytes, 8, &r), 0);
	cr_assert_eq(shm_ring__test_set_index(r, UINT32_MAX - 20), 0);
	/* Keep the ring partly full while both indexes cross 2^32. */
	for (i = 0; i < 64; i++) {
		while (shm_ring_count(r) < 6) {
			d = desc_n(next++);
			cr_assert_eq(shm_ring_push(r, &d), 0);
		}
		cr_assert_eq(shm_ring_count(r), 6);
		cr_assert_eq(shm_ring_pop_burst(r, burst, 3), 3);
		for (unsigned k = 0; k < 3; k++)
			cr_assert_eq(burst[k].seq, expect++, "entry %u out of order", expect);
	}
	while (shm_ring_count(r) < 8) {
		d = desc_n(next++);
		cr_assert_eq(shm_ring_push(r, &d), 0);
	}
	d = desc_n(0);
	cr_expect_eq(shm_ring_push(r, &d), -EAGAIN, "full across the wrap");
	while (shm_ring_pop(r, &d) == 0)
		cr_assert_eq(d.seq, expect++);
	cr_expect_eq(expect, next);
	cr_expect_eq(shm_ring__test_set_index(r, 5), 0);
	free(mem);
}

#define XPROC_N 1000000u
#define XPROC_CAP 1024u

/* The producer child: pushes 0..XPROC_N-1 in bursts of up to 16 through its own arena mapping. */
static int produce(int fd, uint64_t off, size_t bytes)
{
	struct shm_desc burst[16];
	struct shm_arena *a;
	struct shm_ring *r;
	uint32_t next = 0;

	if (shm_arena_attach(fd, &a) || shm_ring_attach(shm_arena_ptr(a, off), bytes, &r))
		return 1;
	while (next < XPROC_N) {
		unsigned n = 1 + next % 16, i, done = 0;

		if (n > XPROC_N - next)
			n = XPROC_N - next;
		for (i = 0; i < n; i++)
			burst[i] = desc_n(next + i);
		while (done < n) {
			unsigned k = shm_ring_push_burst(r, burst + done, n - done);

			if (!k)
				sched_yield();
			done += k;
		}
		next += n;
	}
	shm_arena_destroy(a);
	return 0;
}

Test(shm_ring, producer_and_consumer_processes_keep_order)
{
	size_t bytes = shm_ring_bytes(XPROC_CAP);
	struct shm_desc out[32];
	struct shm_arena *a;
	struct shm_ring *r;
	uint32_t expect = 0;
	uint64_t off;
	pid_t pid;
	int st;

	cr_assert_eq(shm_arena_create(bytes, SHM_ARENA_NO_HUGE | SHM_ARENA_NO_RESERVE, &a), 0);
	cr_assert_eq(shm_slot_alloc(a, bytes, &off), 0);
	cr_assert_eq(shm_ring_init(shm_arena_ptr(a, off), bytes, XPROC_CAP, &r), 0);

	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(produce(dup(shm_arena_fd(a)), off, bytes));

	while (expect < XPROC_N) {
		unsigned n = shm_ring_pop_burst(r, out, 32), i;

		if (!n) {
			sched_yield();
			continue;
		}
		for (i = 0; i < n; i++, expect++) {
			if (out[i].seq != expect || out[i].slot_off != (uint64_t)expect << 16)
				cr_assert_fail("got %u, expected %u", out[i].seq, expect);
		}
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "producer status %#x", st);
	cr_expect_eq(shm_ring_count(r), 0);
	cr_expect_eq(shm_slot_free(a, off), 0);
	shm_arena_destroy(a);
}
