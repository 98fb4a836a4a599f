// SPDX-License-Identifier: MIT
/* runtime/node/rt_secagg_log.c: a secure round's state log (records back in order, torn tails cut,
 * appends after a cut), and rt_sa_retry's answers for a stage sent again. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt_node.h"
#include "rt_secagg_log.h"
#include "trib_alloc.h"

#define JOB 42u

struct seen {
	uint32_t n;
	uint32_t type[16];
	size_t len[16];
	uint8_t first[16];
	int stop_at; /* a callback error at this record (-1: none) */
};

static int on_rec(void *ctx, uint32_t type, const uint8_t *p, size_t len)
{
	struct seen *s = ctx;

	if ((int)s->n == s->stop_at)
		return -EBADMSG;
	s->type[s->n] = type;
	s->len[s->n] = len;
	s->first[s->n] = len ? p[0] : 0;
	s->n++;
	return 0;
}

static void tmpdir(char *dir, size_t cap)
{
	char base[] = "/tmp/trib-salog-XXXXXX";

	cr_assert(mkdtemp(base));
	/* A subfolder that does not exist yet: create makes it. */
	snprintf(dir, cap, "%s/secagg", base);
}

static void rmrf(const char *dir)
{
	char cmd[PATH_MAX + 16];
	const char *slash = strrchr(dir, '/');

	/* The temporary folder tmpdir() made: @dir without its last part. */
	snprintf(cmd, sizeof(cmd), "rm -rf '%.*s'", (int)(slash - dir), dir);
	cr_assert_eq(system(cmd), 0);
}

static void append_byte(struct rt_salog *l, uint32_t type, uint8_t b, size_t len)
{
	uint8_t buf[300];
	struct iovec iov[2] = { { buf, len / 2 }, { buf + len / 2, len - len / 2 } };

	memset(buf, b, sizeof(buf));
	cr_assert_eq(rt_salog_append(l, type, iov, 2), 0);
}

static off_t file_size(const char *dir)
{
	char path[PATH_MAX];
	struct stat st;

	cr_assert_eq(rt_salog_path(dir, JOB, path, sizeof(path)), 0);
	cr_assert_eq(stat(path, &st), 0);
	return st.st_size;
}

Test(runtime_secagg_log, records_come_back_in_order_and_remove_ends_the_log)
{
	char dir[PATH_MAX];
	uint8_t open_p[72];
	struct rt_salog *l = NULL;
	struct seen s = { .stop_at = -1 };
	uint64_t torn = 1;

	tmpdir(dir, sizeof(dir));
	memset(open_p, 7, sizeof(open_p));
	cr_assert_eq(rt_salog_load(dir, JOB, false, on_rec, &s, NULL, &torn), -ENOENT);
	cr_assert_eq(rt_salog_create(dir, JOB, true, open_p, sizeof(open_p), &l), 0);
	append_byte(l, RT_SALOG_KEYS, 1, 133);
	append_byte(l, RT_SALOG_SHARES, 2, 300);
	append_byte(l, RT_SALOG_INPUT, 3, 20);
	append_byte(l, RT_SALOG_END, 4, 4);
	cr_assert_eq(rt_salog_append(l, 0, NULL, 0), -EINVAL);
	cr_assert_eq(rt_salog_append(l, RT_SALOG__COUNT, NULL, 0), -EINVAL);
	rt_salog_close(l);
	cr_assert_eq(rt_salog_load(dir, JOB, false, on_rec, &s, NULL, &torn), 0);
	cr_assert_eq(torn, 0);
	cr_assert_eq(s.n, 5);
	cr_assert_eq(s.type[0], RT_SALOG_OPEN);
	cr_assert_eq(s.len[0], 72);
	cr_assert_eq(s.first[0], 7);
	cr_assert_eq(s.type[1], RT_SALOG_KEYS);
	cr_assert_eq(s.len[1], 133);
	cr_assert_eq(s.first[1], 1);
	cr_assert_eq(s.type[2], RT_SALOG_SHARES);
	cr_assert_eq(s.len[2], 300);
	cr_assert_eq(s.type[4], RT_SALOG_END);
	cr_assert_eq(s.first[4], 4);
	/* A callback's error stops the load and is returned. */
	memset(&s, 0, sizeof(s));
	s.stop_at = 2;
	cr_assert_eq(rt_salog_load(dir, JOB, false, on_rec, &s, NULL, &torn), -EBADMSG);
	cr_assert_eq(s.n, 2);
	/* Another job's log is another file. */
	cr_assert_eq(rt_salog_load(dir, JOB + 1, false, on_rec, &s, NULL, &torn), -ENOENT);
	cr_assert_eq(rt_salog_remove(dir, JOB, true), 0);
	cr_assert_eq(rt_salog_load(dir, JOB, false, on_rec, &s, NULL, &torn), -ENOENT);
	cr_assert_eq(rt_salog_remove(dir, JOB, false), 0, "removing a log that is gone is fine");
	rmrf(dir);
}

Test(runtime_secagg_log, a_torn_tail_is_cut_and_appends_follow_the_last_whole_record)
{
	char dir[PATH_MAX], path[PATH_MAX];
	uint8_t open_p[8] = { 9 };
	struct rt_salog *l = NULL;
	struct seen s = { .stop_at = -1 };
	uint64_t torn = 0;
	off_t whole;
	int fd;

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_salog_create(dir, JOB, false, open_p, sizeof(open_p), &l), 0);
	append_byte(l, RT_SALOG_KEYS, 1, 40);
	rt_salog_close(l);
	whole = file_size(dir);
	/* What a kill in the middle of a write leaves: a head promising more than follows. */
	cr_assert_eq(rt_salog_path(dir, JOB, path, sizeof(path)), 0);
	fd = open(path, O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0);
	{
		uint32_t h[4] = { RT_SALOG_MAGIC, 0, RT_SALOG_UNMASK, 200 };
		uint8_t some[30] = { 0 };

		cr_assert_eq(write(fd, h, sizeof(h)), (ssize_t)sizeof(h));
		cr_assert_eq(write(fd, some, sizeof(some)), (ssize_t)sizeof(some));
	}
	close(fd);
	l = NULL;
	cr_assert_eq(rt_salog_load(dir, JOB, false, on_rec, &s, &l, &torn), 0);
	cr_assert_eq(s.n, 2);
	cr_assert_eq(torn, 16 + 30);
	cr_assert_eq(file_size(dir), whole, "the torn record is cut off the file");
	append_byte(l, RT_SALOG_END, 2, 4);
	rt_salog_close(l);
	memset(&s, 0, sizeof(s));
	s.stop_at = -1;
	cr_assert_eq(rt_salog_load(dir, JOB, false, on_rec, &s, NULL, &torn), 0);
	cr_assert_eq(torn, 0);
	cr_assert_eq(s.n, 3);
	cr_assert_eq(s.type[2], RT_SALOG_END);
	rmrf(dir);
}

Test(runtime_secagg_log, a_bad_crc_ends_the_log_there)
{
	char dir[PATH_MAX], path[PATH_MAX];
	uint8_t open_p[8] = { 9 }, b;
	struct rt_salog *l = NULL;
	struct seen s = { .stop_at = -1 };
	uint64_t torn = 0;
	off_t second;
	int fd;

	tmpdir(dir, sizeof(dir));
	cr_assert_eq(rt_salog_create(dir, JOB, false, open_p, sizeof(open_p), &l), 0);
	second = file_size(dir);
	append_byte(l, RT_SALOG_KEYS, 1, 40);
	append_byte(l, RT_SALOG_KEYS, 1, 40);
	rt_salog_close(l);
	/* One flipped payload byte in the second record: it and everything after it go. */
	cr_assert_eq(rt_salog_path(dir, JOB, path, sizeof(path)), 0);
	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, second + 16 + 5), 1);
	b ^= 0x10;
	cr_assert_eq(pwrite(fd, &b, 1, second + 16 + 5), 1);
	close(fd);
	cr_assert_eq(rt_salog_load(dir, JOB, false, on_rec, &s, NULL, &torn), 0);
	cr_assert_eq(s.n, 1);
	cr_assert_eq(torn, 2 * (16 + 40));
	cr_assert_eq(file_size(dir), second);
	rmrf(dir);
}

Test(runtime_secagg_log, a_retry_is_recognised_by_its_body)
{
	uint8_t dig[2][4][16], sent[2] = { 0 }, a[16], b[16], a2[16];
	struct rt_sa_live L;
	static const char body[] = "{\"c_pk\": \"00\"}";

	memset(&L, 0, sizeof(L));
	memset(dig, 0, sizeof(dig));
	L.dig = dig;
	L.sent = sent;
	L.n = 1;
	rt_sa_digest(body, sizeof(body) - 1, a);
	rt_sa_digest(body, sizeof(body) - 1, a2);
	rt_sa_digest(body, sizeof(body) - 2, b);
	cr_assert_eq(memcmp(a, a2, 16), 0, "a digest is a function of the body");
	cr_assert_neq(memcmp(a, b, 16), 0);
	cr_assert_eq(rt_sa_retry(&L, 0, 1, a), 0, "nothing accepted yet");
	sent[0] = 1u << 1;
	memcpy(dig[0][1], a, 16);
	cr_assert_eq(rt_sa_retry(&L, 0, 1, a), 1, "the same body: the same answer");
	cr_assert_eq(rt_sa_retry(&L, 0, 1, b), -1, "another body: the first stands");
	cr_assert_eq(rt_sa_retry(&L, 0, 2, a), 0, "another stage");
	cr_assert_eq(rt_sa_retry(&L, 1, 1, a), 0, "a client not indexed");
	/* An input the arena kept whose body was never logged: no body matches it. */
	sent[0] |= 1u << 2;
	cr_assert_eq(rt_sa_retry(&L, 0, 2, a), -1);
}
