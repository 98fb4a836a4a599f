// SPDX-License-Identifier: MIT
/* Tests of the arena and its slot allocator, across processes and across a killed lock owner. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm_arena.h"
#include "trib_alloc.h"

/*
 * Unit tests use normal pages and never reserve huge pages: they must not
 * change system state, and Criterion runs them in parallel with the one test
 * (suite shm_arena_huge) that does reserve, whose pages they must not take.
 */
#define UNIT_FLAGS (SHM_ARENA_NO_HUGE | SHM_ARENA_NO_RESERVE)
#define MIB (1024ull * 1024)

static struct shm_arena *make_arena(size_t size)
{
	struct shm_arena *a = NULL;
	int rc = shm_arena_create(size, UNIT_FLAGS, &a);

	cr_assert_eq(rc, 0, "shm_arena_create: %s", strerror(-rc));
	return a;
}

static uint64_t total_of(const struct shm_arena *a)
{
	uint64_t total;

	shm_arena_usage(a, NULL, &total, NULL);
	return total;
}

static void expect_usage(const struct shm_arena *a, uint64_t used, uint32_t live)
{
	uint64_t u, t;
	uint32_t l;

	shm_arena_usage(a, &u, &t, &l);
	cr_expect_eq(u, used, "used %llu, expected %llu", (unsigned long long)u,
		     (unsigned long long)used);
	cr_expect_eq(l, live, "live %u, expected %u", l, live);
}

/* Waits for @pid and asserts that it exited with status 0. */
static void expect_child_ok(pid_t pid)
{
	int st;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed: status %#x", st);
}

Test(shm_arena, create_and_attach_share_memory)
{
	struct shm_arena *a = make_arena(3 * MIB), *b = NULL;
	uint64_t off;
	int rc;

	cr_assert_geq(shm_arena_fd(a), 0);
	cr_expect(fcntl(shm_arena_fd(a), F_GETFD) & FD_CLOEXEC, "memfd must be close-on-exec");
	cr_expect_not(shm_arena_is_huge(a));
	cr_expect_eq(shm_arena_size(a) % SHM_HUGE_PAGE, 0);
	cr_expect_eq(total_of(a), 4 * MIB, "3 MiB rounds up to 4 MiB of slots");
	cr_expect_eq(shm_arena_base(a), shm_arena_ptr(a, 0));

	cr_assert_eq(shm_slot_alloc(a, 1000, &off), 0);
	cr_expect_eq(off % SHM_CHUNK, 0);
	cr_expect_geq(off, SHM_HUGE_PAGE, "slots follow the header region");
	cr_expect_lt(off, shm_arena_size(a));
	strcpy(shm_arena_ptr(a, off), "through the arena");
	cr_expect_eq(shm_arena_off(a, shm_arena_ptr(a, off)), off);

	rc = shm_arena_attach(dup(shm_arena_fd(a)), &b);
	cr_assert_eq(rc, 0, "attach: %s", strerror(-rc));
	cr_expect_neq(shm_arena_base(b), shm_arena_base(a));
	cr_expect_eq(shm_arena_size(b), shm_arena_size(a));
	cr_expect_str_eq(shm_arena_ptr(b, off), "through the arena");
	expect_usage(b, SHM_CHUNK, 1);
	cr_expect_eq(shm_slot_free(b, off), 0, "a slot allocated in one mapping frees in another");
	expect_usage(a, 0, 0);

	shm_arena_destroy(b);
	shm_arena_destroy(a);
	shm_arena_destroy(NULL);
}

Test(shm_arena, create_rejects_zero_size)
{
	struct shm_arena *a = NULL;

	cr_expect_eq(shm_arena_create(0, UNIT_FLAGS, &a), -EINVAL);
	cr_expect_eq(shm_arena_create(SIZE_MAX, UNIT_FLAGS, &a), -EINVAL);
	cr_expect_null(a);
}

Test(shm_arena, failed_allocation_unwinds)
{
	struct shm_arena *a = make_arena(2 * MIB), *b = NULL;
	int fd = dup(shm_arena_fd(a));

	trib_alloc_fail_after(0);
	cr_expect_eq(shm_arena_create(2 * MIB, UNIT_FLAGS, &b), -ENOMEM);
	trib_alloc_fail_after(0);
	cr_expect_eq(shm_arena_attach(fd, &b), -ENOMEM);
	trib_alloc_fail_after(-1);
	cr_expect_eq(fcntl(fd, F_GETFD), -1, "attach closed the fd it owned");
	cr_expect_null(b);
	shm_arena_destroy(a);
}

Test(shm_arena, attach_rejects_what_is_not_an_arena)
{
	struct shm_arena *a = NULL;
	int fd;

	cr_expect_eq(shm_arena_attach(-1, &a), -EBADF);

	fd = memfd_create("not-an-arena", MFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 4 * MIB), 0);
	cr_expect_eq(shm_arena_attach(fd, &a), -EBADMSG);
	cr_expect_eq(fcntl(fd, F_GETFD), -1, "attach owns the fd and closes it on failure");

	fd = memfd_create("too-small", MFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "abc", 3), 3);
	cr_expect_eq(shm_arena_attach(fd, &a), -EBADMSG);
	cr_expect_null(a);
}

/* A memfd of @size bytes holding a copy of @a's header region, @patch applied to the header. */
static int forged_copy(struct shm_arena *a, uint64_t size, void (*patch)(struct shm_arena_hdr *))
{
	const struct shm_arena_hdr *src = shm_arena_base(a);
	int fd = memfd_create("forged", MFD_CLOEXEC);
	void *p;

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	memcpy(p, src, src->data_off);
	if (patch)
		patch(p);
	munmap(p, size);
	return fd;
}

static void bump_version(struct shm_arena_hdr *h)
{
	h->version++;
}

static void bump_magic(struct shm_arena_hdr *h)
{
	h->magic ^= 1;
}

Test(shm_arena, attach_checks_magic_version_and_size)
{
	struct shm_arena *a = make_arena(4 * MIB), *b = NULL;
	uint64_t size = shm_arena_size(a);

	cr_expect_eq(shm_arena_attach(forged_copy(a, size, NULL), &b), 0,
		     "a faithful copy attaches");
	shm_arena_destroy(b);
	b = NULL;
	cr_expect_eq(shm_arena_attach(forged_copy(a, size + SHM_HUGE_PAGE, NULL), &b), -EBADMSG,
		     "the size in the header must match the memfd's");
	cr_expect_eq(shm_arena_attach(forged_copy(a, size, bump_version), &b), -EBADMSG);
	cr_expect_eq(shm_arena_attach(forged_copy(a, size, bump_magic), &b), -EBADMSG);
	cr_expect_null(b);
	shm_arena_destroy(a);
}

Test(shm_arena, alloc_until_full_then_free_and_alloc_again)
{
	struct shm_arena *a = make_arena(4 * MIB);
	uint64_t total = total_of(a), n = total / SHM_CHUNK, off, offs[64];
	unsigned i, j;

	cr_assert_eq(n, 64);
	for (i = 0; i < n; i++) {
		cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &offs[i]), 0, "alloc %u", i);
		cr_expect_eq(offs[i] % SHM_CHUNK, 0);
		cr_expect_lt(offs[i], shm_arena_size(a));
		for (j = 0; j < i; j++)
			cr_assert_neq(offs[i], offs[j]);
	}
	cr_expect_eq(shm_slot_alloc(a, 1, &off), -ENOSPC, "the arena is full");
	expect_usage(a, total, 64);

	cr_assert_eq(shm_slot_free(a, offs[17]), 0);
	cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &off), 0, "the freed chunk is found again");
	cr_expect_eq(off, offs[17]);
	cr_expect_eq(shm_slot_alloc(a, 1, &off), -ENOSPC);

	for (i = 0; i < n; i++)
		cr_assert_eq(shm_slot_free(a, offs[i]), 0);
	expect_usage(a, 0, 0);
	cr_expect_eq(shm_slot_alloc(a, total, &off), 0, "an empty arena fits one slot of it all");
	cr_expect_eq(shm_slot_len(a, off), total);
	shm_arena_destroy(a);
}

Test(shm_arena, alloc_rejects_bad_lengths)
{
	struct shm_arena *a = make_arena(2 * MIB);
	uint64_t off = 12345;

	cr_expect_eq(shm_slot_alloc(a, 0, &off), -EINVAL);
	cr_expect_eq(shm_slot_alloc(a, total_of(a) + 1, &off), -EINVAL);
	cr_expect_eq(shm_slot_alloc(a, SIZE_MAX, &off), -EINVAL);
	cr_expect_eq(off, 12345, "no offset on failure");
	shm_arena_destroy(a);
}

Test(shm_arena, double_free_returns_einval)
{
	struct shm_arena *a = make_arena(2 * MIB);
	uint64_t off;

	cr_assert_eq(shm_slot_alloc(a, 3 * SHM_CHUNK, &off), 0);
	cr_expect_eq(shm_slot_free(a, off), 0);
	cr_expect_eq(shm_slot_free(a, off), -EINVAL);
	expect_usage(a, 0, 0);
	shm_arena_destroy(a);
}

Test(shm_arena, bogus_offsets_return_einval)
{
	struct shm_arena *a = make_arena(2 * MIB);
	uint64_t off;

	cr_assert_eq(shm_slot_alloc(a, 3 * SHM_CHUNK, &off), 0);
	cr_expect_eq(shm_slot_free(a, 0), -EINVAL, "the header is no slot");
	cr_expect_eq(shm_slot_free(a, off + 1), -EINVAL, "misaligned");
	cr_expect_eq(shm_slot_free(a, off + SHM_CHUNK), -EINVAL, "inside an allocation");
	cr_expect_eq(shm_slot_free(a, off + 3 * SHM_CHUNK), -EINVAL, "a free chunk");
	cr_expect_eq(shm_slot_free(a, shm_arena_size(a)), -EINVAL, "past the end");
	cr_expect_eq(shm_slot_free(a, UINT64_MAX), -EINVAL);
	cr_expect_eq(shm_slot_len(a, off + SHM_CHUNK), 0);
	cr_expect_eq(shm_slot_len(a, UINT64_MAX), 0);
	expect_usage(a, 3 * SHM_CHUNK, 1);
	cr_expect_eq(shm_slot_free(a, off), 0);
	shm_arena_destroy(a);
}

Test(shm_arena, slot_len_is_rounded_to_chunks)
{
	struct shm_arena *a = make_arena(2 * MIB);
	uint64_t off;

	cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK + 1, &off), 0);
	cr_expect_eq(shm_slot_len(a, off), 2 * SHM_CHUNK);
	cr_expect_eq(shm_slot_free(a, off), 0);
	cr_expect_eq(shm_slot_len(a, off), 0);
	shm_arena_destroy(a);
}

Test(shm_arena, fragmented_arena_needs_a_contiguous_run)
{
	struct shm_arena *a = make_arena(4 * MIB);
	uint64_t offs[64], off, big;
	unsigned i;

	for (i = 0; i < 64; i++)
		cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &offs[i]), 0);
	for (i = 0; i < 64; i += 2)
		cr_assert_eq(shm_slot_free(a, offs[i]), 0);
	expect_usage(a, 32 * SHM_CHUNK, 32);
	cr_expect_eq(shm_slot_alloc(a, 2 * SHM_CHUNK, &off), -ENOSPC,
		     "half the arena is free, but in single chunks");

	/* Free 41 and 43 next to the free 40, 42, 44: a run of five chunks. */
	cr_assert_eq(shm_slot_free(a, offs[41]), 0);
	cr_assert_eq(shm_slot_free(a, offs[43]), 0);
	cr_expect_eq(shm_slot_alloc(a, 6 * SHM_CHUNK, &off), -ENOSPC);
	cr_assert_eq(shm_slot_alloc(a, 5 * SHM_CHUNK, &big), 0);
	cr_expect_eq(big, offs[40]);
	cr_expect_eq(shm_slot_len(a, big), 5 * SHM_CHUNK);
	cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &off), 0, "single chunks are still free");
	cr_expect_eq(shm_slot_free(a, off), 0);
	cr_expect_eq(shm_slot_free(a, big), 0);
	shm_arena_destroy(a);
}

/* ---- several processes ---- */

#define CHILDREN 4
#define CHILD_OPS 10000
#define CHILD_LIVE 24

struct live_slot {
	uint64_t off;
	uint64_t len;
	uint64_t tag;
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * Stamp @tag at both ends of every chunk of the slot (s->len is whole chunks).
 * Two overlapping slots share a chunk, so one overwrites the other's stamps.
 */
static void stamp(struct shm_arena *a, const struct live_slot *s)
{
	uint64_t o;

	for (o = 0; o < s->len; o += SHM_CHUNK) {
		memcpy(shm_arena_ptr(a, s->off + o), &s->tag, 8);
		memcpy(shm_arena_ptr(a, s->off + o + SHM_CHUNK - 8), &s->tag, 8);
	}
}

static bool stamped(struct shm_arena *a, const struct live_slot *s)
{
	uint64_t o, v, w;

	for (o = 0; o < s->len; o += SHM_CHUNK) {
		memcpy(&v, shm_arena_ptr(a, s->off + o), 8);
		memcpy(&w, shm_arena_ptr(a, s->off + o + SHM_CHUNK - 8), 8);
		if (v != s->tag || w != s->tag)
			return false;
	}
	return true;
}

/* A child's life: its own mapping, random allocs and frees, every slot checked before its free. */
static int churn(int fd, unsigned id)
{
	struct live_slot live[CHILD_LIVE];
	struct shm_arena *a;
	uint64_t rng = 0x9e3779b97f4a7c15ull * (id + 1), serial = 0;
	unsigned nlive = 0, i;

	if (shm_arena_attach(fd, &a))
		return 10;
	for (i = 0; i < CHILD_OPS; i++) {
		uint64_t r = xorshift(&rng);

		if (nlive == CHILD_LIVE || (nlive && (r & 1))) {
			unsigned k = (unsigned)((r >> 8) % nlive);

			if (!stamped(a, &live[k]))
				return 11;
			if (shm_slot_free(a, live[k].off))
				return 12;
			live[k] = live[--nlive];
		} else {
			struct live_slot *s = &live[nlive];
			size_t want = 1 + (r >> 8) % (4 * SHM_CHUNK);
			int rc;

			s->tag = ((uint64_t)id << 56) | ++serial;
			rc = shm_slot_alloc(a, want, &s->off);
			if (rc == -ENOSPC)
				continue;
			if (rc)
				return 13;
			s->len = shm_slot_len(a, s->off);
			if (s->len < want || s->len % SHM_CHUNK)
				return 15;
			stamp(a, s);
			nlive++;
		}
	}
	while (nlive)
		if (!stamped(a, &live[--nlive]) || shm_slot_free(a, live[nlive].off))
			return 14;
	shm_arena_destroy(a);
	return 0;
}

Test(shm_arena, processes_share_the_allocator_without_overlap)
{
	struct shm_arena *a = make_arena(64 * MIB);
	pid_t pids[CHILDREN];
	unsigned i;

	for (i = 0; i < CHILDREN; i++) {
		pids[i] = fork();
		cr_assert_geq(pids[i], 0);
		if (pids[i] == 0)
			_exit(churn(dup(shm_arena_fd(a)), i + 1));
	}
	for (i = 0; i < CHILDREN; i++)
		expect_child_ok(pids[i]);
	expect_usage(a, 0, 0);
	cr_expect_eq(shm_arena__recoveries(a), 0);
	shm_arena_destroy(a);
}

/* ---- a lock owner killed mid-update ---- */

/* Forks a child that attaches and runs @fn, which returns holding the lock; the child then dies. */
static void die_holding_lock(struct shm_arena *a, int (*fn)(struct shm_arena *, uint64_t, unsigned),
			     uint64_t arg, unsigned steps)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct shm_arena *c;

		if (shm_arena_attach(dup(shm_arena_fd(a)), &c) || fn(c, arg, steps))
			_exit(1);
		_exit(0); /* as if SIGKILLed: no unlock, no destroy */
	}
	expect_child_ok(pid);
}

static int just_lock(struct shm_arena *a, uint64_t arg, unsigned steps)
{
	(void)arg;
	(void)steps;
	return shm_arena__test_lock(a);
}

static int alloc_partly(struct shm_arena *a, uint64_t len, unsigned steps)
{
	return shm_arena__test_alloc_partial(a, len, steps);
}

static int free_partly(struct shm_arena *a, uint64_t off, unsigned steps)
{
	return shm_arena__test_free_partial(a, off, steps);
}

Test(shm_arena, dead_lock_owner_does_not_deadlock)
{
	struct shm_arena *a = make_arena(2 * MIB);
	uint64_t off;

	die_holding_lock(a, just_lock, 0, 0);
	cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &off), 0, "EOWNERDEAD is recovered");
	cr_expect_eq(shm_arena__recoveries(a), 1);
	cr_expect_eq(shm_slot_free(a, off), 0);
	cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &off), 0, "and the lock works as before");
	cr_expect_eq(shm_arena__recoveries(a), 1);
	shm_arena_destroy(a);
}

Test(shm_arena, killed_mid_alloc_is_rolled_back)
{
	unsigned steps;

	/* Step 5 completes the update: that slot is kept (its owner died, the runtime reaps it). */
	for (steps = 0; steps <= 5; steps++) {
		struct shm_arena *a = make_arena(2 * MIB);
		uint64_t keep, off;

		cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &keep), 0);
		die_holding_lock(a, alloc_partly, 3 * SHM_CHUNK, steps);
		expect_usage(a, (steps == 5 ? 4 : 1) * SHM_CHUNK, steps == 5 ? 2 : 1);
		cr_expect_eq(shm_arena__recoveries(a), 1, "steps %u", steps);
		cr_assert_eq(shm_slot_free(a, keep), 0);
		if (steps < 5)
			cr_expect_eq(shm_slot_alloc(a, total_of(a), &off), 0,
				     "after %u steps every chunk is free again", steps);
		shm_arena_destroy(a);
	}
}

Test(shm_arena, killed_mid_free_is_completed)
{
	unsigned steps;

	for (steps = 0; steps <= 5; steps++) {
		struct shm_arena *a = make_arena(2 * MIB);
		uint64_t o[3], off;
		unsigned i;

		for (i = 0; i < 3; i++)
			cr_assert_eq(shm_slot_alloc(a, 2 * SHM_CHUNK, &o[i]), 0);
		die_holding_lock(a, free_partly, o[1], steps);
		expect_usage(a, (steps ? 4 : 6) * SHM_CHUNK, steps ? 2 : 3);
		cr_expect_eq(shm_slot_free(a, o[1]), steps ? -EINVAL : 0, "steps %u", steps);
		cr_expect_eq(shm_slot_free(a, o[0]), 0);
		cr_expect_eq(shm_slot_free(a, o[2]), 0);
		expect_usage(a, 0, 0);
		cr_expect_eq(shm_slot_alloc(a, total_of(a), &off), 0, "steps %u", steps);
		shm_arena_destroy(a);
	}
}

/* ---- warm reuse: the run freed last is handed out first ---- */

Test(shm_arena, the_slot_freed_last_is_reused_first)
{
	struct shm_arena *a = make_arena(4 * MIB);
	uint64_t s[4], off;
	unsigned i;

	for (i = 0; i < 4; i++)
		cr_assert_eq(shm_slot_alloc(a, 4 * SHM_CHUNK, &s[i]), 0);
	/* Next-fit alone would go past s[3], to chunks nobody has touched yet. */
	cr_assert_eq(shm_slot_free(a, s[1]), 0);
	cr_assert_eq(shm_slot_alloc(a, 4 * SHM_CHUNK, &off), 0);
	cr_expect_eq(off, s[1], "the freed slot, not the cursor's");
	/* Last in, first out, as long as they fit. */
	cr_assert_eq(shm_slot_free(a, s[0]), 0);
	cr_assert_eq(shm_slot_free(a, s[2]), 0);
	cr_assert_eq(shm_slot_alloc(a, 3 * SHM_CHUNK, &off), 0);
	cr_expect_eq(off, s[2]);
	cr_assert_eq(shm_slot_alloc(a, 4 * SHM_CHUNK, &off), 0);
	cr_expect_eq(off, s[0]);
	expect_usage(a, 15 * SHM_CHUNK, 4);
	shm_arena_destroy(a);
}

Test(shm_arena, a_warm_run_too_small_or_taken_since_is_passed_over)
{
	struct shm_arena *a = make_arena(4 * MIB);
	uint64_t s[3], big, wide, off;
	unsigned i;

	for (i = 0; i < 3; i++)
		cr_assert_eq(shm_slot_alloc(a, 2 * SHM_CHUNK, &s[i]), 0);
	cr_assert_eq(shm_slot_free(a, s[0]), 0);
	/* Four chunks do not fit in s[0]'s two (s[1] follows): next-fit takes them. */
	cr_assert_eq(shm_slot_alloc(a, 4 * SHM_CHUNK, &big), 0);
	cr_expect_eq(big, s[2] + 2 * SHM_CHUNK);
	/* s[0] and s[1] are free side by side: 2 free chunks from s[1]'s start, 4 from s[0]'s. */
	cr_assert_eq(shm_slot_free(a, s[1]), 0);
	cr_assert_eq(shm_slot_alloc(a, 4 * SHM_CHUNK, &wide), 0);
	cr_expect_eq(wide, s[0], "the older warm run that fits, merged with its free neighbour");
	/* s[1]'s entry is stale (inside wide): never handed out again. */
	cr_assert_eq(shm_slot_alloc(a, 2 * SHM_CHUNK, &off), 0);
	cr_expect_neq(off, s[1]);
	cr_expect(off >= big + 4 * SHM_CHUNK, "after the cursor, not inside a live slot");
	expect_usage(a, 12 * SHM_CHUNK, 4);
	cr_expect_eq(shm_slot_free(a, wide), 0);
	cr_expect_eq(shm_slot_free(a, big), 0);
	cr_expect_eq(shm_slot_free(a, off), 0);
	cr_expect_eq(shm_slot_free(a, s[2]), 0);
	expect_usage(a, 0, 0);
	cr_expect_eq(shm_slot_alloc(a, total_of(a), &off), 0, "and every chunk is free again");
	shm_arena_destroy(a);
}

Test(shm_arena, warm_reuse_remembers_a_bounded_number_of_runs)
{
	struct shm_arena *a = make_arena(4 * MIB);
	uint64_t s[2 * SHM_ARENA_WARM + 1], off;
	unsigned i, n = 2 * SHM_ARENA_WARM + 1;

	for (i = 0; i < n; i++)
		cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &s[i]), 0);
	/* Free every other one (no two free runs touch), the oldest first. */
	for (i = 0; i < n; i += 2)
		cr_assert_eq(shm_slot_free(a, s[i]), 0);
	for (i = 0; i < SHM_ARENA_WARM; i++) {
		cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &off), 0);
		cr_expect_eq(off, s[n - 1 - 2 * i], "warm pop %u", i);
	}
	/* The older ones fell out of the list: next-fit again, past s[n - 1]. */
	cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &off), 0);
	cr_expect_eq(off, s[n - 1] + SHM_CHUNK);
	shm_arena_destroy(a);
}

Test(shm_arena, a_dead_lock_owner_leaves_no_warm_hint_behind)
{
	struct shm_arena *a = make_arena(2 * MIB);
	uint64_t o[3], off;
	unsigned i;

	for (i = 0; i < 3; i++)
		cr_assert_eq(shm_slot_alloc(a, 2 * SHM_CHUNK, &o[i]), 0);
	/* Killed after the counters and the hint (step 4), before closing the intent. */
	die_holding_lock(a, free_partly, o[1], 4);
	cr_assert_eq(shm_slot_alloc(a, 2 * SHM_CHUNK, &off), 0);
	cr_expect_eq(shm_arena__recoveries(a), 1);
	cr_expect_eq(off, o[2] + 2 * SHM_CHUNK, "recovery forgets the hints: next-fit");
	cr_assert_eq(shm_slot_free(a, o[0]), 0);
	cr_assert_eq(shm_slot_alloc(a, 2 * SHM_CHUNK, &off), 0);
	cr_expect_eq(off, o[0], "and new frees are remembered again");
	shm_arena_destroy(a);
}

/*
 * The hazard warm reuse exposes: a reader that keeps a slot's offset past
 * its free. Next-fit left the old bytes there for a whole arena turn (a late
 * fold got the right numbers by luck); with warm reuse the next body lands
 * there at once, and with poisoning the freed bytes are NaNs until then.
 */
Test(shm_arena, a_poisoned_slot_turns_a_late_reader_into_nans)
{
	struct shm_arena *a = make_arena(2 * MIB);
	uint64_t off, again;
	float *f, sum = 0;
	size_t i, nf = 3 * SHM_CHUNK / sizeof(float);

	shm_arena__test_poison(true);
	cr_assert_eq(shm_slot_alloc(a, 3 * SHM_CHUNK, &off), 0);
	f = shm_arena_ptr(a, off);
	for (i = 0; i < nf; i++)
		f[i] = 1.0f;
	cr_assert_eq(shm_slot_free(a, off), 0);
	for (i = 0; i < nf; i++)
		sum += f[i]; /* the late reader */
	cr_expect(isnan(sum), "a late fold of a freed slot is NaN, not %g", (double)sum);
	for (i = 0; i < 3 * SHM_CHUNK; i++)
		if (((uint8_t *)f)[i] != SHM_ARENA_POISON)
			break;
	cr_expect_eq(i, 3 * SHM_CHUNK, "every byte poisoned (byte %zu is not)", i);
	cr_assert_eq(shm_slot_alloc(a, 2 * SHM_CHUNK, &again), 0);
	cr_expect_eq(again, off, "and the next allocation lands there");
	cr_expect_eq(shm_slot_free(a, again + SHM_CHUNK), -EINVAL);
	cr_expect_eq(((uint8_t *)f)[2 * SHM_CHUNK], SHM_ARENA_POISON,
		     "a refused free poisons nothing (the byte is still the old poison)");
	f[2 * SHM_CHUNK / sizeof(float)] = 5.0f;
	cr_expect_eq(shm_slot_free(a, again + SHM_CHUNK), -EINVAL);
	cr_expect_eq(f[2 * SHM_CHUNK / sizeof(float)], 5.0f, "not a slot's start: untouched");

	/* Off (release builds): a free writes nothing into the slot. */
	shm_arena__test_poison(false);
	f[0] = 7.0f;
	cr_assert_eq(shm_slot_free(a, again), 0);
	cr_expect_eq(f[0], 7.0f);
	shm_arena_destroy(a);
}

/* ---- real huge pages ---- */

static long read_long(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "re");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fscanf(f, "%ld", &v), 1);
	fclose(f);
	return v;
}

#define HUGE_2M "/sys/kernel/mm/hugepages/hugepages-2048kB/"

/* The 2 MiB pool's size (the arena reserves there), and the default size's, usually the same. */
static long read_nr_hugepages(void)
{
	return read_long(HUGE_2M "nr_hugepages");
}

static long read_proc_nr_hugepages(void)
{
	return read_long("/proc/sys/vm/nr_hugepages");
}

static long hugepages_avail(void)
{
	return read_long(HUGE_2M "free_hugepages") - read_long(HUGE_2M "resv_hugepages");
}

/* Runs shm_arena_create() with stderr sent to a memfd; returns how many WARN lines it logged. */
static int create_counting_warnings(size_t size, unsigned flags, struct shm_arena **out)
{
	int saved = dup(STDERR_FILENO), cap = memfd_create("stderr", MFD_CLOEXEC);
	char buf[4096] = "";
	int rc, warns = 0;
	const char *p;
	ssize_t n;

	cr_assert_geq(cap, 0);
	fflush(stderr);
	dup2(cap, STDERR_FILENO);
	rc = shm_arena_create(size, flags, out);
	dup2(saved, STDERR_FILENO);
	close(saved);
	cr_assert_eq(rc, 0, "create: %s", strerror(-rc));
	n = pread(cap, buf, sizeof(buf) - 1, 0);
	close(cap);
	for (p = buf; n > 0 && (p = strstr(p, "WARN")); p++)
		warns++;
	fprintf(stderr, "%s", buf);
	return warns;
}

/* One at a time with the other tests that reserve huge pages (file_fixture.h). */
static void huge_serialize(void)
{
	int fd = open("/tmp/tributary-test-hugepages.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0600);

	cr_assert_geq(fd, 0);
	cr_assert_eq(flock(fd, LOCK_EX), 0);
}

TestSuite(shm_arena_huge, .init = huge_serialize);

Test(shm_arena_huge, reserves_huge_pages_and_gives_them_back)
{
	const size_t size = 6 * MIB; /* plus the 2 MiB header region: 4 huge pages */
	struct shm_arena *a = NULL, *b = NULL;
	long before, before_proc, during;
	uint64_t off;
	int fd, rc;

	if (geteuid() != 0)
		cr_skip_test("reserving huge pages needs root (euid %u)", (unsigned)geteuid());
	fd = memfd_create("probe", MFD_CLOEXEC | MFD_HUGETLB | (21u << 26));
	if (fd < 0)
		cr_skip_test("this kernel has no 2 MiB hugetlb memfd: %s", strerror(errno));
	close(fd);

	before = read_nr_hugepages();
	before_proc = read_proc_nr_hugepages();

	/* Without permission to reserve: huge pages only if enough are free, else one warning. */
	if (hugepages_avail() < 4) {
		cr_expect_eq(create_counting_warnings(size, SHM_ARENA_NO_RESERVE, &a), 1,
			     "falling back to normal pages warns exactly once");
		cr_expect_not(shm_arena_is_huge(a));
		cr_expect_eq(read_nr_hugepages(), before, "NO_RESERVE leaves nr_hugepages alone");
		shm_arena_destroy(a);
		a = NULL;
	}

	rc = shm_arena_create(size, 0, &a);
	cr_assert_eq(rc, 0, "create: %s", strerror(-rc));
	cr_assert(shm_arena_is_huge(a), "root may reserve 4 huge pages (see the log for why not)");
	cr_expect(fcntl(shm_arena_fd(a), F_GETFD) & FD_CLOEXEC);
	during = read_nr_hugepages();
	cr_expect_geq(during, before);

	cr_assert_eq(shm_slot_alloc(a, 5 * MIB, &off), 0);
	memset(shm_arena_ptr(a, off), 0xab, 5 * MIB);
	rc = shm_arena_attach(dup(shm_arena_fd(a)), &b);
	cr_assert_eq(rc, 0, "attach: %s", strerror(-rc));
	cr_expect(shm_arena_is_huge(b));
	cr_expect_eq(((unsigned char *)shm_arena_ptr(b, off))[5 * MIB - 1], 0xab);
	cr_expect_eq(shm_slot_free(b, off), 0);
	shm_arena_destroy(b);
	shm_arena_destroy(a);

	cr_expect_eq(read_nr_hugepages(), before, "destroy gives back what create reserved");
	cr_expect_eq(read_proc_nr_hugepages(), before_proc);
}
