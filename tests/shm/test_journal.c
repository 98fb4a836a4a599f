// SPDX-License-Identifier: MIT
/* Tests of the journal of committed records, across processes killed at chosen points. */
#include "file_fixture.h"

#include "shm_arena_abi.h"

TestSuite(shm_journal, .init = fx_setup_shm, .fini = fx_teardown);

#define JOB   7
#define ROUND 3
#define BODY  "{\"round\":3,\"received\":1}"

/* The slot bytes of update @seq (or of a partial when @seq is PARTIAL_BYTE). */
static uint8_t byte_of(uint64_t seq)
{
	return (uint8_t)(0x20 + seq);
}
#define PARTIAL_BYTE 0x77

static void key_of(uint64_t seq, char key[16])
{
	snprintf(key, 16, "key-%llu", (unsigned long long)seq);
}

/* Allocate and stamp a slot; 0 or -errno (no asserting: children call it). */
static int stamped_slot(struct shm_arena *a, uint8_t byte, uint64_t *slot)
{
	int rc = shm_slot_alloc(a, 3 * SHM_CHUNK / 2, slot);

	if (!rc)
		memset(shm_arena_ptr(a, *slot), byte, 3 * SHM_CHUNK / 2);
	return rc;
}

static struct shm_rec_info update_info(uint64_t job, uint64_t round, uint64_t seq, uint64_t slot,
				       const char *key)
{
	struct shm_rec_info in = {
	    .kind = SHM_REC_UPDATE,
	    .job = job,
	    .round = round,
	    .seq = seq,
	    .count = 1,
	    .nsegs = 1,
	    .weight = 10.0 + (double)seq,
	    .slot_off = slot,
	    .segs_off = slot + SHM_CHUNK,
	    .http_status = 202,
	    .key = key,
	    .key_len = strlen(key),
	    .body = BODY,
	    .body_len = strlen(BODY),
	};

	return in;
}

/* Stamp a slot and commit the UPDATE of (@job, @round, @seq); *@idx gets the record. */
static int put_update(struct shm_arena *a, uint64_t job, uint64_t round, uint64_t seq,
		      uint32_t *idx)
{
	struct shm_rec_info in;
	uint64_t slot;
	char key[16];
	int rc;

	key_of(seq, key);
	rc = stamped_slot(a, byte_of(seq), &slot);
	if (!rc)
		rc = shm_rec_reserve(a, idx);
	if (rc)
		return rc;
	in = update_info(job, round, seq, slot, key);
	rc = shm_rec_fill(a, *idx, &in);
	return rc ? rc : shm_rec_commit(a, *idx);
}

/* Commit a PARTIAL of (@job, @round) covering [@seq, @seq + @count). */
static int put_partial(struct shm_arena *a, uint64_t job, uint64_t round, uint64_t seq,
		       uint32_t count, uint32_t *idx)
{
	struct shm_rec_info in = {
	    .kind = SHM_REC_PARTIAL,
	    .job = job,
	    .round = round,
	    .seq = seq,
	    .count = count,
	    .weight = 100.0,
	};
	int rc = stamped_slot(a, PARTIAL_BYTE, &in.slot_off);

	if (!rc)
		rc = shm_rec_reserve(a, idx);
	if (!rc)
		rc = shm_rec_fill(a, *idx, &in);
	return rc ? rc : shm_rec_commit(a, *idx);
}

/* What a recovery reported. */
struct seen {
	unsigned n;
	struct shm_rec_info rec[16];
	struct shm_arena *a;
	bool bytes_ok;
};

static int collect(void *ctx, uint32_t idx, const struct shm_rec_info *info)
{
	struct seen *s = ctx;
	const uint8_t *p = shm_arena_ptr(s->a, info->slot_off);
	uint8_t want = info->kind == SHM_REC_PARTIAL ? PARTIAL_BYTE : byte_of(info->seq);

	(void)idx;
	if (s->n < 16)
		s->rec[s->n++] = *info;
	if (p[0] != want || p[3 * SHM_CHUNK / 2 - 1] != want)
		s->bytes_ok = false;
	return 0;
}

static struct shm_journal_stats recover(struct shm_arena *a, struct seen *s)
{
	struct shm_journal_stats st;
	int rc;

	memset(s, 0, sizeof(*s));
	s->a = a;
	s->bytes_ok = true;
	rc = shm_journal_recover(a, collect, s, &st);
	cr_assert_eq(rc, 0, "recover: %s", strerror(-rc));
	cr_expect(s->bytes_ok, "every kept record's slot holds its bytes");
	return st;
}

static uint32_t live_slots(struct shm_arena *a)
{
	uint32_t live;

	shm_arena_usage(a, NULL, NULL, &live);
	return live;
}

/* ---- commit before 202, with a crash at each point ---- */

enum point { BEFORE_FILL, AFTER_FILL, AFTER_MARK, EXIT_AFTER_MARK };

/* Child: one committed update, then a second that stops at @pt. Never returns. */
static void child_commit_then_die(enum point pt)
{
	struct shm_arena *a = fx_open_quiet();
	struct shm_rec_info in;
	uint32_t idx;
	uint64_t slot;

	if (!a || put_update(a, JOB, ROUND, 0, &idx) || stamped_slot(a, byte_of(1), &slot) ||
	    shm_rec_reserve(a, &idx))
		_exit(1);
	if (pt == BEFORE_FILL)
		kill(getpid(), SIGKILL);
	in = update_info(JOB, ROUND, 1, slot, "key-1");
	if (shm_rec_fill(a, idx, &in))
		_exit(2);
	if (pt == AFTER_FILL)
		kill(getpid(), SIGKILL);
	if (shm_rec_commit(a, idx))
		_exit(3);
	if (pt == AFTER_MARK)
		kill(getpid(), SIGKILL);
	_exit(0); /* as if the process ended without cleaning up */
}

static void crash_at(enum point pt)
{
	struct shm_journal_stats st;
	bool committed = pt >= AFTER_MARK;
	struct shm_rec_info info;
	struct shm_arena *a;
	uint32_t idx, cap, free_recs = 0;
	struct seen s;
	pid_t pid;
	int ws;

	shm_arena_destroy(fx_create(4 * MIB));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		child_commit_then_die(pt);
	ws = fx_wait(pid);
	cr_assert(pt == EXIT_AFTER_MARK ? WIFEXITED(ws) && !WEXITSTATUS(ws) : fx_killed(ws),
		  "point %d: status %#x", pt, ws);

	a = fx_open();
	st = recover(a, &s);
	cr_expect_eq(s.n, committed ? 2u : 1u, "point %d", pt);
	cr_expect_eq(st.updates, s.n);
	cr_expect_eq(st.reclaimed, committed ? 0u : 1u, "an uncommitted update's slot is freed");
	cr_expect_eq(live_slots(a), s.n, "only committed records' slots stay");
	cr_expect_eq(s.rec[0].seq, 0);
	cr_expect_eq(s.rec[0].job, JOB);
	cr_expect_eq(s.rec[0].round, ROUND);
	cr_expect_eq(s.rec[0].weight, 10.0);
	cr_expect_eq(s.rec[0].http_status, 202);
	cr_expect_eq(s.rec[0].body_len, strlen(BODY));
	cr_expect_eq(memcmp(s.rec[0].body, BODY, strlen(BODY)), 0);
	if (committed) {
		cr_expect_eq(s.rec[1].seq, 1);
		cr_expect_gt(s.rec[1].commit_no, s.rec[0].commit_no);
	}
	cr_expect_eq(shm_rec_find(a, JOB, ROUND, "key-1", 5, &idx), committed ? 0 : -ENOENT);
	cr_assert_eq(shm_rec_find(a, JOB, ROUND, "key-0", 5, &idx), 0);
	cr_assert_eq(shm_rec_get(a, idx, &info), 0);
	cr_expect_eq(info.seq, 0);
	shm_journal_usage(a, NULL, &cap);
	while (!shm_rec_reserve(a, &idx))
		free_recs++;
	cr_expect_eq(free_recs, cap - s.n, "a record left half-filled was freed on re-attach");
	shm_arena_file_remove(a);
}

Test(shm_journal, killed_before_the_record_is_filled_loses_only_it)
{
	crash_at(BEFORE_FILL);
}

Test(shm_journal, killed_before_the_commit_mark_loses_only_it)
{
	crash_at(AFTER_FILL);
}

Test(shm_journal, killed_after_the_commit_mark_keeps_it)
{
	crash_at(AFTER_MARK);
}

Test(shm_journal, exit_after_the_commit_mark_keeps_it)
{
	crash_at(EXIT_AFTER_MARK);
}

/* ---- PARTIAL superseding UPDATEs ---- */

/* Child: updates 0..3, a PARTIAL over [0, 3), then (if @finish) supersede and free; then die. */
static void child_partial_then_die(bool finish)
{
	struct shm_arena *a = fx_open_quiet();
	uint32_t idx[4], p;
	unsigned released = 0, i;

	if (!a)
		_exit(1);
	for (i = 0; i < 4; i++)
		if (put_update(a, JOB, ROUND, i, &idx[i]))
			_exit(2);
	if (put_partial(a, JOB, ROUND, 0, 3, &p))
		_exit(3);
	if (finish) {
		struct shm_rec_info info[3];

		for (i = 0; i < 3; i++)
			if (shm_rec_get(a, idx[i], &info[i]))
				_exit(4);
		if (shm_rec_supersede(a, p, &released) || released != 3)
			_exit(5);
		for (i = 0; i < 3; i++)
			if (shm_slot_free(a, info[i].slot_off))
				_exit(6);
	}
	kill(getpid(), SIGKILL);
	_exit(7);
}

static void partial_crash(bool finish)
{
	struct shm_journal_stats st;
	struct shm_arena *a;
	struct seen s;
	uint32_t n;
	pid_t pid;

	shm_arena_destroy(fx_create(4 * MIB));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		child_partial_then_die(finish);
	cr_assert(fx_killed(fx_wait(pid)));

	a = fx_open();
	st = recover(a, &s);
	cr_assert_eq(s.n, 2, "the PARTIAL and the update it does not cover");
	cr_expect_eq(s.rec[0].kind, SHM_REC_PARTIAL);
	cr_expect_eq(s.rec[0].seq, 0);
	cr_expect_eq(s.rec[0].count, 3);
	cr_expect_eq(s.rec[1].kind, SHM_REC_UPDATE);
	cr_expect_eq(s.rec[1].seq, 3);
	cr_expect_eq(st.partials, 1);
	cr_expect_eq(st.updates, 1);
	cr_expect_eq(st.superseded, finish ? 0u : 3u, "recovery finishes an interrupted supersede");
	cr_expect_eq(st.reclaimed, finish ? 0u : 3u, "and frees the covered updates' slots");
	cr_expect_eq(live_slots(a), 2);
	shm_journal_usage(a, &n, NULL);
	cr_expect_eq(n, 2);
	shm_arena_file_remove(a);
}

Test(shm_journal, partial_committed_then_killed_before_supersede)
{
	partial_crash(false);
}

Test(shm_journal, partial_committed_superseded_then_killed)
{
	partial_crash(true);
}

Test(shm_journal, nested_partials_keep_only_the_outermost)
{
	struct shm_arena *a = fx_create(4 * MIB), *b;
	struct shm_journal_stats st;
	uint32_t idx, i;
	struct seen s;

	for (i = 0; i < 6; i++)
		cr_assert_eq(put_update(a, JOB, ROUND, i, &idx), 0);
	cr_assert_eq(put_update(a, JOB, ROUND + 1, 0, &idx), 0, "another round");
	cr_assert_eq(put_update(a, JOB + 1, ROUND, 0, &idx), 0, "another job");
	cr_assert_eq(put_partial(a, JOB, ROUND, 0, 2, &idx), 0, "leaf 0");
	cr_assert_eq(put_partial(a, JOB, ROUND, 2, 2, &idx), 0, "leaf 1");
	cr_assert_eq(put_partial(a, JOB, ROUND, 0, 4, &idx), 0, "their parent");
	shm_arena_destroy(a);

	b = fx_open();
	st = recover(b, &s);
	cr_expect_eq(st.superseded, 6, "4 updates and 2 leaf partials");
	cr_expect_eq(st.partials, 1);
	cr_expect_eq(st.updates, 4);
	cr_assert_eq(s.n, 5);
	cr_expect(s.rec[0].kind == SHM_REC_PARTIAL && s.rec[0].seq == 0 && s.rec[0].count == 4);
	cr_expect(s.rec[1].seq == 4 && s.rec[2].seq == 5, "(job, round, seq) order");
	cr_expect_eq(s.rec[3].round, ROUND + 1);
	cr_expect_eq(s.rec[4].job, JOB + 1);
	cr_expect_eq(live_slots(b), 5);
	shm_arena_file_remove(b);
}

Test(shm_journal, supersede_releases_only_what_the_partial_covers)
{
	struct shm_arena *a = fx_create(4 * MIB);
	uint32_t u[3], p, other, n;
	unsigned released;

	cr_assert_eq(put_update(a, JOB, ROUND, 0, &u[0]), 0);
	cr_assert_eq(put_update(a, JOB, ROUND, 1, &u[1]), 0);
	cr_assert_eq(put_update(a, JOB, ROUND, 2, &u[2]), 0);
	cr_assert_eq(put_update(a, JOB, ROUND + 1, 0, &other), 0);
	cr_assert_eq(put_partial(a, JOB, ROUND, 0, 2, &p), 0);
	cr_expect_eq(shm_rec_supersede(a, u[0], &released), -EINVAL, "not a PARTIAL");
	cr_assert_eq(shm_rec_supersede(a, p, &released), 0);
	cr_expect_eq(released, 2);
	shm_journal_usage(a, &n, NULL);
	cr_expect_eq(n, 3, "the partial, update 2, and the other round's update");
	cr_expect_eq(shm_journal_release_round(a, JOB, ROUND, &released), 0);
	cr_expect_eq(released, 2, "the model is durable: the round's records go");
	shm_journal_usage(a, &n, NULL);
	cr_expect_eq(n, 1);
	shm_arena_file_remove(a);
}

/* ---- the allocator after its lock owner died, from the file ---- */

Test(shm_journal, reattach_after_a_child_died_holding_the_allocator_lock)
{
	struct shm_arena *a;
	struct seen s;
	uint64_t off;
	pid_t pid;

	shm_arena_destroy(fx_create(4 * MIB));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct shm_arena *c = fx_open_quiet();
		uint32_t idx;

		if (!c || put_update(c, JOB, ROUND, 0, &idx) ||
		    shm_arena__test_alloc_partial(c, SHM_CHUNK, 3))
			_exit(1);
		kill(getpid(), SIGKILL); /* holding the lock, an allocation half-done */
		_exit(2);
	}
	cr_assert(fx_killed(fx_wait(pid)));

	a = fx_open();
	recover(a, &s);
	cr_expect_eq(shm_arena__recoveries(a), 1, "EOWNERDEAD was repaired");
	cr_expect_eq(s.n, 1);
	cr_expect_eq(live_slots(a), 1, "the half-done allocation was rolled back");
	cr_expect_eq(shm_slot_alloc(a, SHM_CHUNK, &off), 0, "and the allocator works");
	shm_arena_file_remove(a);
}

/* ---- idempotency keys, capacity, checks ---- */

Test(shm_journal, find_by_job_round_and_key)
{
	struct shm_arena *a = fx_create(4 * MIB);
	struct shm_rec_info info;
	uint32_t idx, found;

	cr_assert_eq(put_update(a, JOB, ROUND, 0, &idx), 0);
	cr_assert_eq(put_update(a, JOB, ROUND, 1, &idx), 0);
	cr_assert_eq(shm_rec_find(a, JOB, ROUND, "key-1", 5, &found), 0);
	cr_expect_eq(found, idx);
	cr_assert_eq(shm_rec_get(a, found, &info), 0);
	cr_expect_eq(info.http_status, 202);
	cr_expect_eq(memcmp(info.body, BODY, info.body_len), 0, "the first answer, again");
	cr_expect_eq(shm_rec_find(a, JOB, ROUND + 1, "key-1", 5, &found), -ENOENT);
	cr_expect_eq(shm_rec_find(a, JOB + 1, ROUND, "key-1", 5, &found), -ENOENT);
	cr_expect_eq(shm_rec_find(a, JOB, ROUND, "key-", 4, &found), -ENOENT, "not a prefix");
	cr_expect_eq(shm_rec_find(a, JOB, ROUND, "", 0, &found), -EINVAL);
	cr_expect_eq(shm_rec_release(a, idx), 0);
	cr_expect_eq(shm_rec_find(a, JOB, ROUND, "key-1", 5, &found), -ENOENT);
	cr_expect_eq(shm_rec_get(a, idx, &info), -ENOENT);
	cr_expect_eq(shm_rec_release(a, idx), -EINVAL, "a double release is reported");
	shm_arena_file_remove(a);
}

Test(shm_journal, one_record_per_chunk_then_enospc)
{
	struct shm_arena *a = fx_create(2 * MIB);
	uint32_t cap, idx, i;

	shm_journal_usage(a, NULL, &cap);
	cr_expect_eq(cap, 2 * MIB / SHM_CHUNK);
	for (i = 0; i < cap; i++)
		cr_assert_eq(shm_rec_reserve(a, &idx), 0);
	cr_expect_eq(shm_rec_reserve(a, &idx), -ENOSPC, "full: the gateway answers 503");
	cr_assert_eq(shm_rec_release(a, 5), 0, "abandon a reservation");
	cr_expect_eq(shm_rec_reserve(a, &idx), 0);
	cr_expect_eq(idx, 5);
	shm_arena_file_remove(a);
}

Test(shm_journal, fill_and_commit_check_the_record)
{
	struct shm_arena *a = fx_create(2 * MIB);
	struct shm_rec_info in;
	char longkey[SHM_REC_KEY_MAX + 2];
	uint32_t idx;
	uint64_t slot;

	cr_assert_eq(stamped_slot(a, 1, &slot), 0);
	in = update_info(JOB, ROUND, 0, slot, "k");
	cr_expect_eq(shm_rec_fill(a, 0, &in), -EINVAL, "not reserved");
	cr_expect_eq(shm_rec_commit(a, 0), -EINVAL, "not reserved");
	cr_assert_eq(shm_rec_reserve(a, &idx), 0);
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	in.key = longkey;
	in.key_len = strlen(longkey);
	cr_expect_eq(shm_rec_fill(a, idx, &in), -EINVAL, "key too long");
	in = update_info(JOB, ROUND, 0, slot, "k");
	in.body_len = SHM_REC_BODY_MAX + 1;
	cr_expect_eq(shm_rec_fill(a, idx, &in), -EINVAL, "body too long");
	in = update_info(JOB, ROUND, 0, slot, "k");
	in.count = 2;
	cr_expect_eq(shm_rec_fill(a, idx, &in), -EINVAL, "an UPDATE covers one sequence number");
	in = update_info(JOB, ROUND, 0, 4096, "k");
	cr_expect_eq(shm_rec_fill(a, idx, &in), -EINVAL, "a slot in the header region");
	in = update_info(JOB, ROUND, 0, slot, "k");
	in.kind = 9;
	cr_expect_eq(shm_rec_fill(a, idx, &in), -EINVAL, "unknown kind");
	cr_expect_eq(shm_rec_fill(a, 1u << 30, &in), -EINVAL, "out of range");
	in = update_info(JOB, ROUND, 0, slot, "k");
	cr_expect_eq(shm_rec_fill(a, idx, &in), 0);
	cr_expect_eq(shm_rec_commit(a, idx), 0);
	cr_expect_eq(shm_rec_commit(a, idx), -EINVAL, "committed once");
	cr_expect_eq(shm_rec_fill(a, idx, &in), -EINVAL, "a committed record is never rewritten");
	shm_arena_file_remove(a);
}

Test(shm_journal, memfd_arena_has_no_journal)
{
	struct shm_arena *a = NULL;
	struct shm_rec_info in = {0};
	uint32_t idx;

	cr_assert_eq(shm_arena_create(2 * MIB, SHM_ARENA_NO_HUGE | SHM_ARENA_NO_RESERVE, &a), 0);
	cr_expect_eq(shm_rec_reserve(a, &idx), -ENOTSUP);
	cr_expect_eq(shm_rec_fill(a, 0, &in), -ENOTSUP);
	cr_expect_eq(shm_rec_find(a, 1, 1, "k", 1, &idx), -ENOTSUP);
	cr_expect_eq(shm_journal_recover(a, NULL, NULL, NULL), -ENOTSUP);
	shm_arena_destroy(a);
}

Test(shm_journal, inconsistent_journal_is_refused_and_left_unchanged)
{
	struct shm_arena *a = fx_create(4 * MIB);
	struct shm_rec_info info;
	uint32_t p1, p2, u, n;

	cr_assert_eq(put_partial(a, JOB, ROUND, 0, 3, &p1), 0);
	cr_assert_eq(put_partial(a, JOB, ROUND, 2, 3, &p2), 0);
	cr_expect_eq(shm_journal_recover(a, NULL, NULL, NULL), -EBADMSG, "overlapping partials");
	shm_journal_usage(a, &n, NULL);
	cr_expect_eq(n, 2, "nothing released");
	cr_expect_eq(live_slots(a), 2, "nothing freed");
	cr_assert_eq(shm_rec_release(a, p2), 0);

	cr_assert_eq(put_update(a, JOB, ROUND + 1, 0, &u), 0);
	cr_assert_eq(shm_rec_get(a, u, &info), 0);
	cr_assert_eq(shm_slot_free(a, info.slot_off), 0, "breaking the slot rule");
	cr_expect_eq(shm_journal_recover(a, NULL, NULL, NULL), -EBADMSG, "a record without slot");
	shm_journal_usage(a, &n, NULL);
	cr_expect_eq(n, 2);
	shm_arena_file_remove(a);
}

/* ---- the same on hugetlbfs, with the pool checked ---- */

TestSuite(shm_journal_huge, .init = fx_setup_huge, .fini = fx_teardown);

Test(shm_journal_huge, killed_after_the_commit_mark_keeps_it_on_huge_pages)
{
	bool busy;
	struct fx_pool before = fx_pool_before(&busy);

	crash_at(AFTER_MARK);
	crash_at(AFTER_FILL);
	cr_expect_eq(access(fx.path, F_OK), -1);
	fx_expect_pool(before, busy);
}

Test(shm_journal_huge, partial_committed_then_killed_on_huge_pages)
{
	bool busy;
	struct fx_pool before = fx_pool_before(&busy);

	partial_crash(false);
	fx_expect_pool(before, busy);
}

/* ---- the key index against a scan ---- */

struct live_key {
	uint64_t job, round;
	char key[24];
	uint32_t idx;
	bool live;
};

/* Index lookups in @a agree with scans in @scan (an attached handle has no index). */
static void expect_same_answers(struct shm_arena *a, struct shm_arena *scan,
				const struct live_key *k, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		uint32_t x = UINT32_MAX, y = UINT32_MAX;
		int rx = shm_rec_find(a, k[i].job, k[i].round, k[i].key, strlen(k[i].key), &x);
		int ry = shm_rec_find(scan, k[i].job, k[i].round, k[i].key, strlen(k[i].key), &y);

		cr_assert_eq(rx, k[i].live ? 0 : -ENOENT, "key %u (%s) live %d: %d", i, k[i].key,
			     k[i].live, rx);
		cr_assert_eq(ry, rx, "key %u: the scan says %d", i, ry);
		if (k[i].live)
			cr_assert(x == k[i].idx && y == k[i].idx, "key %u: %u %u, want %u", i, x, y,
				  k[i].idx);
	}
}

Test(shm_journal, key_index_agrees_with_a_scan_through_commits_and_releases)
{
	struct shm_arena *a = fx_create(16 * MIB), *scan = NULL;
	static struct live_key k[600];
	unsigned n = 0, step, i, live = 0;
	uint32_t seed = 12345;

	cr_assert_eq(shm_arena_attach(dup(shm_arena_fd(a)), &scan), 0);
	for (step = 0; step < 1500; step++) {
		seed = seed * 1103515245u + 12345u;
		if ((seed >> 16) % 3 && n < 600 && live < 200) {
			struct shm_rec_info in;
			uint64_t slot;

			k[n].job = 1 + (seed >> 8) % 3;
			k[n].round = 1 + (seed >> 4) % 3;
			snprintf(k[n].key, sizeof(k[n].key), "key-%u", n);
			cr_assert_eq(shm_slot_alloc(a, SHM_CHUNK, &slot), 0);
			cr_assert_eq(shm_rec_reserve(a, &k[n].idx), 0);
			in = update_info(k[n].job, k[n].round, n, slot, k[n].key);
			in.nsegs = 0;
			cr_assert_eq(shm_rec_fill(a, k[n].idx, &in), 0);
			cr_assert_eq(shm_rec_commit(a, k[n].idx), 0);
			k[n++].live = true;
			live++;
		} else if (live) {
			struct shm_rec_info info;

			i = (seed >> 8) % n;
			while (!k[i].live)
				i = (i + 1) % n;
			cr_assert_eq(shm_rec_get(a, k[i].idx, &info), 0);
			cr_assert_eq(shm_rec_release(a, k[i].idx), 0);
			cr_assert_eq(shm_slot_free(a, info.slot_off), 0);
			k[i].live = false;
			live--;
		}
		if (step % 50 == 0)
			expect_same_answers(a, scan, k, n);
	}
	expect_same_answers(a, scan, k, n);
	shm_arena_destroy(scan);
	shm_arena_destroy(a);
	a = fx_open();
	cr_assert_eq(shm_arena_attach(dup(shm_arena_fd(a)), &scan), 0);
	expect_same_answers(a, scan, k, n); /* the index rebuilt from the file */
	shm_arena_destroy(scan);
	shm_arena_file_remove(a);
}

Test(shm_journal, a_record_names_its_client)
{
	struct shm_arena *a = fx_create(4 * MIB);
	struct shm_rec_info in, out;
	uint64_t slot;
	uint32_t idx;

	cr_assert_eq(stamped_slot(a, 7, &slot), 0);
	cr_assert_eq(shm_rec_reserve(a, &idx), 0);
	in = update_info(1, 0, 0, slot, "k-client");
	in.client = "site-3";
	in.client_len = 6;
	cr_assert_eq(shm_rec_fill(a, idx, &in), 0);
	cr_assert_eq(shm_rec_commit(a, idx), 0);
	cr_assert_eq(shm_rec_get(a, idx, &out), 0);
	cr_assert_eq(out.client_len, 6);
	cr_assert_eq(memcmp(out.client, "site-3", 6), 0);
	cr_assert_eq(out.body_len, strlen(BODY), "the body beside it is whole");
	/* Longer than a client id: refused. */
	cr_assert_eq(shm_rec_reserve(a, &idx), 0);
	in.client = "0123456789012345678901234567890123";
	in.client_len = SHM_REC_CLIENT_MAX + 1;
	cr_assert_eq(shm_rec_fill(a, idx, &in), -EINVAL);
	cr_assert_eq(shm_rec_release(a, idx), 0);
	shm_arena_destroy(a);
}
