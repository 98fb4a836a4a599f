// SPDX-License-Identifier: MIT
/*
 * The update log of --durability disk: append, group commit, torn tail, CRC, cut, replay order,
 * the client id of format 2, format 1 read, a newer format refused.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt_wal.h"

struct seen {
	uint32_t n;
	uint64_t job[64];
	uint32_t round[64], seq[64];
	double weight[64];
	char key[64][16];
	uint8_t body0[64];
	uint64_t body_len[64];
	char client[64][33];
};

static void tmpdir(char *dir, size_t cap)
{
	snprintf(dir, cap, "/tmp/trib-wal-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rmrf(const char *dir)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static uint64_t append(struct rt_wal *w, uint64_t job, uint32_t round, uint32_t seq,
		       const uint8_t *body, uint64_t len)
{
	char key[16], ans[32];
	uint32_t meta[4] = {1, 2, 3, seq};
	struct rt_wal_rec rec = {job, round, seq,  seq + 1.0,	 0,    1,  key, 0,
				 ans, 0,     meta, sizeof(meta), body, len, NULL, 0};
	struct rt_wal_ent *e;

	rec.key_len = (size_t)snprintf(key, sizeof(key), "k-%u-%u", round, seq);
	rec.ans_len = (size_t)snprintf(ans, sizeof(ans), "{\"round\":%u}", round);
	cr_assert_eq(rt_wal_prepare(&rec, &e), 0);
	return rt_wal_submit(w, e);
}

/* Wait until the log reports ticket @t durable (or a failure when @fail). */
static void wait_state(struct rt_wal *w, uint64_t t, bool fail, struct rt_wal_state *st)
{
	for (int i = 0; i < 1000; i++) {
		struct pollfd p = {rt_wal_fd(w), POLLIN, 0};
		uint64_t cnt;

		if (poll(&p, 1, 10) == 1)
			cr_assert_eq(read(rt_wal_fd(w), &cnt, sizeof(cnt)), (ssize_t)sizeof(cnt));
		rt_wal_state(w, st);
		if (!fail && st->durable >= t)
			return;
		if (fail && st->err && st->failed_to >= t)
			return;
	}
	cr_assert_fail("the log reported nothing for ticket %llu", (unsigned long long)t);
}

static int collect(void *ctx, const struct rt_wal_rec *r)
{
	struct seen *s = ctx;
	uint32_t i = s->n++, meta[4];

	cr_assert_lt(i, 64u);
	s->job[i] = r->job;
	s->round[i] = r->round;
	s->seq[i] = r->seq;
	s->weight[i] = r->weight;
	cr_assert_lt(r->key_len, sizeof(s->key[i]));
	memcpy(s->key[i], r->key, r->key_len);
	s->key[i][r->key_len] = '\0';
	cr_assert_leq(r->client_len, 32u);
	memcpy(s->client[i], r->client, r->client_len);
	s->client[i][r->client_len] = '\0';
	s->body_len[i] = r->body_len;
	s->body0[i] = r->body_len ? ((const uint8_t *)r->body)[0] : 0;
	cr_assert_eq(r->meta_len, 16u);
	/* Records are packed: nothing in them is aligned (replay copies). */
	memcpy(meta, r->meta, sizeof(meta));
	cr_assert_eq(meta[3], r->seq);
	return 0;
}

static void seg_path(const char *dir, uint64_t job, uint32_t round, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%llu/%010u.wal", dir, (unsigned long long)job, round);
}

static off_t file_size(const char *path)
{
	struct stat sb;

	if (stat(path, &sb))
		return -1;
	return sb.st_size;
}

Test(runtime_wal, crc32c_known_value)
{
	cr_assert_eq(rt_wal_crc32c(NULL, 0, "123456789", 9), 0xe3069283u);
	/* In pieces, the same. */
	cr_assert_eq(rt_wal_crc32c(NULL, rt_wal_crc32c(NULL, 0, "1234", 4), "56789", 5),
		     0xe3069283u);
}

Test(runtime_wal, crc32c_three_streams_match_one)
{
	struct rt_wal_crc t;
	uint8_t buf[3 * RT_WAL_CRC_LONG * 3 + 1000];
	size_t cap = sizeof(buf);
	uint32_t x = 12345;

	rt_wal_crc_init(&t);
	for (size_t i = 0; i < cap; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (uint8_t)(x >> 16);
	}
	/* Every path: odd starts, short and long blocks, tails; one stream is the reference. */
	for (size_t off = 0; off < 9; off += 3) {
		for (size_t len = 0; len + off <= cap; len = len * 2 + 7) {
			uint32_t one = rt_wal_crc32c(NULL, 7, buf + off, len);

			cr_assert_eq(rt_wal_crc32c(&t, 7, buf + off, len), one, "off %zu len %zu",
				     off, len);
		}
		cr_assert_eq(rt_wal_crc32c(&t, 0, buf + off, cap - off),
			     rt_wal_crc32c(NULL, 0, buf + off, cap - off));
	}
}

Test(runtime_wal, append_then_replay_gives_every_record)
{
	char dir[64];
	uint8_t body[1000];
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};
	struct rt_wal_replay_stats rs;

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	for (uint32_t i = 0; i < 5; i++) {
		memset(body, 'a' + (int)i, sizeof(body));
		cr_assert_eq(append(w, 7, 0, i, body, sizeof(body)), i + 1);
		/* The body is the caller's until settled: settle, then reuse the buffer. */
		rt_wal_settle(w);
	}
	wait_state(w, 5, false, &st);
	cr_assert_eq(st.st.appends, 5u);
	cr_assert_eq(st.err, 0);
	rt_wal_close(w);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), 0);
	cr_assert_eq(s.n, 5u);
	cr_assert_eq(rs.torn, 0u);
	for (uint32_t i = 0; i < 5; i++) {
		cr_assert_eq(s.seq[i], i);
		cr_assert_eq(s.job[i], 7u);
		cr_assert_eq(s.body0[i], 'a' + i);
		cr_assert_eq(s.body_len[i], sizeof(body));
		cr_assert_float_eq(s.weight[i], i + 1.0, 1e-12);
	}
	cr_assert_str_eq(s.key[4], "k-0-4");
	rmrf(dir);
}

Test(runtime_wal, a_batch_of_n_takes_one_fdatasync)
{
	char dir[64];
	uint8_t body[4096] = {1};
	struct rt_wal *w;
	struct rt_wal_state st;

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	/* Held: the 32 appends arrive together, as a burst of clients does. */
	rt_wal_test_hold(w, true);
	for (uint32_t i = 0; i < 32; i++)
		append(w, 1, 3, i, body, sizeof(body));
	rt_wal_test_hold(w, false);
	wait_state(w, 32, false, &st);
	cr_assert_eq(st.st.batches, 1u, "batches %llu", (unsigned long long)st.st.batches);
	cr_assert_eq(st.st.fsyncs, 1u, "fsyncs %llu", (unsigned long long)st.st.fsyncs);
	cr_assert_eq(st.st.appends, 32u);
	cr_assert_eq(st.st.max_batch, 32u);
	cr_assert_eq(st.st.batch_hist[5], 1u); /* 32..63 */
	/* Two jobs in one batch: one fdatasync each. */
	rt_wal_test_hold(w, true);
	append(w, 1, 3, 32, body, 10);
	append(w, 2, 0, 0, body, 10);
	rt_wal_test_hold(w, false);
	wait_state(w, 34, false, &st);
	cr_assert_eq(st.st.batches, 2u);
	cr_assert_eq(st.st.fsyncs, 3u);
	rt_wal_close(w);
	rmrf(dir);
}

Test(runtime_wal, a_torn_tail_is_truncated_and_said)
{
	char dir[64], path[128];
	uint8_t body[300];
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};
	struct rt_wal_replay_stats rs;
	off_t full;
	int fd;

	memset(body, 9, sizeof(body));
	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	for (uint32_t i = 0; i < 3; i++)
		append(w, 4, 1, i, body, sizeof(body));
	wait_state(w, 3, false, &st);
	rt_wal_close(w);
	seg_path(dir, 4, 1, path, sizeof(path));
	full = file_size(path);
	/* The third record's write was cut short by a crash: half of it is there. */
	cr_assert_eq(truncate(path, full - 150), 0);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), 0);
	cr_assert_eq(s.n, 2u);
	cr_assert_eq(rs.torn, 1u);
	cr_assert_eq(file_size(path), full / 3 * 2, "the torn record is cut off");
	/* Appending goes on after the last good record. */
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	append(w, 4, 1, 2, body, sizeof(body));
	wait_state(w, 1, false, &st);
	rt_wal_close(w);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), 0);
	cr_assert_eq(s.n, 3u);
	cr_assert_eq(rs.torn, 0u);
	/* Garbage after the end (a preallocated tail, a partial head): cut too. */
	fd = open(path, O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "TWAL", 4), 4);
	close(fd);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), 0);
	cr_assert_eq(s.n, 3u);
	cr_assert_eq(rs.torn, 1u);
	cr_assert_eq(file_size(path), full);
	rmrf(dir);
}

Test(runtime_wal, a_crc_mismatch_ends_the_segment)
{
	char dir[64], path[128];
	uint8_t body[100];
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};
	struct rt_wal_replay_stats rs;
	off_t rec;
	int fd;

	memset(body, 5, sizeof(body));
	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	for (uint32_t i = 0; i < 4; i++)
		append(w, 2, 0, i, body, sizeof(body));
	wait_state(w, 4, false, &st);
	rt_wal_close(w);
	seg_path(dir, 2, 0, path, sizeof(path));
	rec = file_size(path) / 4;
	/* One flipped bit in the body of the second record. */
	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "\x04", 1, rec + rec - 10), 1);
	close(fd);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), 0);
	cr_assert_eq(s.n, 1u, "only the record before the bad one");
	cr_assert_eq(rs.torn, 1u);
	cr_assert_eq(file_size(path), rec);
	rmrf(dir);
}

Test(runtime_wal, a_cut_removes_stored_rounds_only)
{
	char dir[64], path[128];
	uint8_t body[64] = {0};
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	for (uint32_t r = 0; r < 3; r++)
		for (uint32_t i = 0; i < 2; i++)
			append(w, 9, r, i, body, sizeof(body));
	append(w, 8, 0, 0, body, sizeof(body));
	wait_state(w, 7, false, &st);
	rt_wal_cut(w, 9, 1);
	for (int i = 0; i < 500; i++) {
		seg_path(dir, 9, 1, path, sizeof(path));
		if (file_size(path) < 0)
			break;
		usleep(2000);
	}
	rt_wal_close(w);
	seg_path(dir, 9, 0, path, sizeof(path));
	cr_assert_eq(file_size(path), -1, "round 0 cut");
	seg_path(dir, 9, 1, path, sizeof(path));
	cr_assert_eq(file_size(path), -1, "round 1 cut");
	seg_path(dir, 9, 2, path, sizeof(path));
	cr_assert_gt(file_size(path), 0, "round 2 stays");
	seg_path(dir, 8, 0, path, sizeof(path));
	cr_assert_gt(file_size(path), 0, "another job's round stays");
	cr_assert_eq(rt_wal_replay(dir, collect, &s, NULL), 0);
	cr_assert_eq(s.n, 3u);
	rmrf(dir);
}

Test(runtime_wal, replay_goes_job_by_job_round_by_round_in_order)
{
	char dir[64];
	uint8_t body[16] = {0};
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	/* Interleaved jobs, rounds 10 and 9 (10 first: names sort by number, not by text). */
	append(w, 12, 10, 0, body, sizeof(body));
	append(w, 3, 0, 0, body, sizeof(body));
	append(w, 12, 9, 0, body, sizeof(body));
	append(w, 12, 10, 1, body, sizeof(body));
	append(w, 3, 0, 1, body, sizeof(body));
	wait_state(w, 5, false, &st);
	rt_wal_close(w);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, NULL), 0);
	cr_assert_eq(s.n, 5u);
	cr_assert(s.job[0] == 3 && s.seq[0] == 0 && s.job[1] == 3 && s.seq[1] == 1);
	cr_assert(s.job[2] == 12 && s.round[2] == 9);
	cr_assert(s.round[3] == 10 && s.seq[3] == 0 && s.round[4] == 10 && s.seq[4] == 1);
	rmrf(dir);
}

Test(runtime_wal, a_failed_write_is_reported_then_retried_and_nothing_is_lost)
{
	char dir[64];
	uint8_t body[256];
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	memset(body, 1, sizeof(body));
	append(w, 5, 0, 0, body, sizeof(body));
	wait_state(w, 1, false, &st);
	rt_wal_test_fail(w, -ENOSPC, 0);
	memset(body, 2, sizeof(body));
	append(w, 5, 0, 1, body, sizeof(body));
	wait_state(w, 2, true, &st);
	cr_assert_eq(st.err, -ENOSPC);
	cr_assert_eq(st.durable, 1u);
	cr_assert_eq(st.settled, 2u, "the failed record's body was copied");
	/* The caller's memory may be reused now: the retry writes the copy. */
	rt_wal_settle(w);
	memset(body, 3, sizeof(body));
	wait_state(w, 2, false, &st);
	cr_assert_eq(st.err, 0);
	cr_assert_eq(st.st.failures, 1u);
	/* An fdatasync that fails is a failure too; the retry succeeds. */
	rt_wal_test_fail(w, 0, -EIO);
	append(w, 5, 0, 2, body, sizeof(body));
	wait_state(w, 3, true, &st);
	cr_assert_eq(st.err, -EIO);
	wait_state(w, 3, false, &st);
	rt_wal_close(w);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, NULL), 0);
	cr_assert_eq(s.n, 3u, "each record once: the failed batch left nothing behind");
	cr_assert_eq(s.body0[1], 2, "the retry wrote the bytes of the time of the append");
	cr_assert_eq(s.body0[2], 3);
	rmrf(dir);
}

Test(runtime_wal, a_cut_drops_failed_records_of_its_round_and_clears_the_failure)
{
	char dir[64];
	uint8_t body[64] = {0};
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	rt_wal_test_fail(w, -ENOSPC, 0);
	append(w, 6, 0, 0, body, sizeof(body));
	wait_state(w, 1, true, &st);
	/* No retry meanwhile; round 0's model is stored: its record is moot. */
	rt_wal_test_hold(w, true);
	rt_wal_cut(w, 6, 0);
	wait_state(w, 1, false, &st);
	cr_assert_eq(st.err, 0, "the failure is cleared: nothing is left to retry");
	rt_wal_test_hold(w, false);
	append(w, 6, 1, 0, body, sizeof(body));
	wait_state(w, 2, false, &st);
	rt_wal_close(w);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, NULL), 0);
	cr_assert_eq(s.n, 1u);
	cr_assert_eq(s.round[0], 1u);
	rmrf(dir);
}

Test(runtime_wal, wipe_removes_every_segment)
{
	char dir[64];
	uint8_t body[8] = {0};
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};
	uint32_t removed;

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	append(w, 1, 0, 0, body, sizeof(body));
	append(w, 2, 4, 0, body, sizeof(body));
	wait_state(w, 2, false, &st);
	rt_wal_close(w);
	cr_assert_eq(rt_wal_wipe(dir, &removed), 0);
	cr_assert_eq(removed, 2u);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, NULL), 0);
	cr_assert_eq(s.n, 0u);
	rmrf(dir);
}

Test(runtime_wal, a_record_keeps_its_client_id)
{
	char dir[64], key[] = "k1", ans[] = "{}", client[] = "site-7";
	uint8_t body[64];
	uint32_t meta[4] = {1, 2, 3, 0};
	struct rt_wal_rec rec = {.job = 3, .round = 2, .seq = 0, .weight = 5, .nsegs = 1,
				 .key = key, .key_len = 2, .ans = ans, .ans_len = 2,
				 .meta = meta, .meta_len = sizeof(meta), .body = body,
				 .body_len = sizeof(body), .client = client, .client_len = 6};
	struct rt_wal *w;
	struct rt_wal_ent *e;
	struct rt_wal_state st;
	struct seen s = {0};
	struct rt_wal_replay_stats rs;
	char long_id[40];

	memset(body, 4, sizeof(body));
	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	cr_assert_eq(rt_wal_prepare(&rec, &e), 0);
	rt_wal_submit(w, e);
	/* One without a client (the job's token), then an id over the limit: refused. */
	rec.seq = 1;
	meta[3] = 1;
	rec.client = NULL;
	rec.client_len = 0;
	cr_assert_eq(rt_wal_prepare(&rec, &e), 0);
	rt_wal_submit(w, e);
	memset(long_id, 'x', sizeof(long_id));
	rec.client = long_id;
	rec.client_len = 33;
	cr_assert_eq(rt_wal_prepare(&rec, &e), -EINVAL);
	wait_state(w, 2, false, &st);
	rt_wal_close(w);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), 0);
	cr_assert_eq(s.n, 2u);
	cr_assert_str_eq(s.client[0], "site-7");
	cr_assert_str_eq(s.client[1], "");
	cr_assert_str_eq(s.key[0], "k1");
	cr_assert_eq(s.body0[0], 4);
	cr_assert_eq(rs.v1_records, 0u);
	rmrf(dir);
}

/* A format-1 record ("TWAL", 16-bit key and answer lengths, no client), as the last build wrote. */
static size_t v1_record(uint8_t *out, uint32_t round, uint32_t seq, const char *key,
			const uint8_t *body, size_t body_len)
{
	struct rt_wal_disk_v1 h = {0};
	uint32_t meta[4] = {1, 2, 3, seq};
	const char ans[] = "{\"round\":0}";
	size_t kl = strlen(key), al = strlen(ans), off = sizeof(h);
	uint32_t crc;

	h.magic = RT_WAL_MAGIC_V1;
	h.round = round;
	h.seq = seq;
	h.weight = 2.5;
	h.key_len = (uint16_t)kl;
	h.ans_len = (uint16_t)al;
	h.meta_len = sizeof(meta);
	h.nsegs = 1;
	h.body_len = body_len;
	h.len = sizeof(h) + kl + al + sizeof(meta) + body_len;
	memcpy(out + off, key, kl);
	off += kl;
	memcpy(out + off, ans, al);
	off += al;
	memcpy(out + off, meta, sizeof(meta));
	off += sizeof(meta);
	memcpy(out + off, body, body_len);
	off += body_len;
	memcpy(out, &h, sizeof(h));
	crc = rt_wal_crc32c(NULL, 0, out + 8, off - 8);
	memcpy(out + 4, &crc, sizeof(crc));
	return off;
}

static void write_seg(const char *dir, uint64_t job, uint32_t round, const void *p, size_t len)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%llu", dir, (unsigned long long)job);
	cr_assert(mkdir(path, 0700) == 0 || errno == EEXIST);
	seg_path(dir, job, round, path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, p, len), (ssize_t)len);
	close(fd);
}

Test(runtime_wal, a_format_1_log_is_read_with_no_client_and_appended_to_in_format_2)
{
	char dir[64], path[128];
	uint8_t buf[512], body[40];
	struct rt_wal *w;
	struct rt_wal_state st;
	struct seen s = {0};
	struct rt_wal_replay_stats rs;
	size_t len;

	memset(body, 'v', sizeof(body));
	tmpdir(dir, sizeof(dir));
	len = v1_record(buf, 0, 0, "old-key", body, sizeof(body));
	write_seg(dir, 9, 0, buf, len);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), 0);
	cr_assert_eq(s.n, 1u);
	cr_assert_eq(rs.torn, 0u, "a format-1 record is not a torn tail");
	cr_assert_eq(rs.v1_records, 1u);
	cr_assert_str_eq(s.key[0], "old-key");
	cr_assert_str_eq(s.client[0], "");
	cr_assert_eq(s.body_len[0], sizeof(body));
	cr_assert_eq(s.body0[0], 'v');
	cr_assert_float_eq(s.weight[0], 2.5, 1e-12);
	/* A new build appends format 2 after it, in the same segment: both read. */
	cr_assert_eq(rt_wal_open(dir, &w), 0);
	append(w, 9, 0, 1, body, sizeof(body));
	wait_state(w, 1, false, &st);
	rt_wal_close(w);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), 0);
	cr_assert_eq(s.n, 2u);
	cr_assert_eq(rs.v1_records, 1u);
	cr_assert_str_eq(s.key[1], "k-0-1");
	seg_path(dir, 9, 0, path, sizeof(path));
	cr_assert_gt(file_size(path), (off_t)len);
	rmrf(dir);
}

Test(runtime_wal, a_record_of_a_newer_format_is_refused_and_left_alone)
{
	char dir[64], path[128];
	uint8_t buf[512], body[40];
	struct seen s = {0};
	struct rt_wal_replay_stats rs;
	uint32_t v3 = RT_WAL_MAGIC_FAMILY | (uint32_t)'3' << 24;
	size_t len, first;

	memset(body, 'n', sizeof(body));
	tmpdir(dir, sizeof(dir));
	first = v1_record(buf, 0, 0, "k", body, sizeof(body));
	len = first + v1_record(buf + first, 0, 1, "k2", body, sizeof(body));
	/* The second record as a newer build would mark it. */
	memcpy(buf + first, &v3, sizeof(v3));
	write_seg(dir, 2, 0, buf, len);
	cr_assert_eq(rt_wal_replay(dir, collect, &s, &rs), -EPROTONOSUPPORT);
	seg_path(dir, 2, 0, path, sizeof(path));
	cr_assert_eq(file_size(path), (off_t)len, "never cut off as a torn tail");
	cr_assert_eq(rs.torn, 0u);
	cr_assert_eq(s.n, 1u, "the records before it were read");
	rmrf(dir);
}
