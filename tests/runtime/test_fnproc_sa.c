// SPDX-License-Identifier: MIT
/*
 * Tests of the split between the two function binaries (rt_fnproc.c): a secure job's unmasking
 * shard runs on the real tributary-fn-sa and computes libsodium's stream; nothing else can run it.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fn_abi.h"
#include "fn_secagg.h"
#include "rt_fnproc.h"
#include "shm_arena.h"
#include "trib_secagg_crypto.h"

/* Odd, so that shard 1 of 2 starts mid-block at word 1500 and runs 1501 words. */
#define W 3001u
#define NS 3u

static struct shm_arena *arena;
static struct rt_fnset *set;
static uint64_t task_off, out_off;
static char fn_bin[PATH_MAX], sa_bin[PATH_MAX];

static void setup(void)
{
	const char *bin = getenv("TRIBUTARY_FN_BIN"), *sa = getenv("TRIBUTARY_FN_SA_BIN");
	struct fn_secagg_task *t;
	struct fn_secagg_stream *s;
	uint32_t *out;

	cr_assert(bin && *bin && sa && *sa, "TRIBUTARY_FN_BIN and TRIBUTARY_FN_SA_BIN name the "
					     "binaries under test");
	cr_assert(realpath(bin, fn_bin) && realpath(sa, sa_bin));
	signal(SIGPIPE, SIG_IGN);
	cr_assert_eq(shm_arena_create(8u << 20, SHM_ARENA_NO_HUGE | SHM_ARENA_NO_RESERVE, &arena),
		     0);
	cr_assert_eq(shm_slot_alloc(arena, 64 + NS * sizeof(*s), &task_off), 0);
	cr_assert_eq(shm_slot_alloc(arena, SHM_ACC_HDR + W * 4, &out_off), 0);
	t = shm_arena_ptr(arena, task_off);
	memset(t, 0, sizeof(*t));
	t->version = FN_ABI_VERSION;
	t->parts = 2;
	t->count = NS;
	t->words = W;
	t->round = 7;
	t->streams_off = task_off + 64;
	t->pairs_off = t->streams_off + NS * sizeof(*s);
	s = shm_arena_ptr(arena, t->streams_off);
	for (uint32_t j = 0; j < NS; j++) {
		for (int k = 0; k < 32; k++)
			s[j].key[k] = (uint8_t)(j * 71 + k * 13 + 1);
		s[j].sign = j == 1 ? -1 : 1;
	}
	/* Canaries: a shard writes its own range whole and nothing else. */
	out = shm_arena_ptr(arena, out_off + 2048);
	for (uint32_t i = 0; i < W; i++)
		out[i] = 0xdeadbeefu;
	cr_assert_eq(rt_fnset_init(&set, bin, shm_arena_fd(arena), FN_DP_SHM_UNIX, NULL, -1), 0);
}

static void teardown(void)
{
	rt_fnset_destroy(set);
	shm_arena_destroy(arena);
}

static void shard_config(struct fn_config *c, struct fn_params *p)
{
	memset(c, 0, sizeof(*c));
	c->version = FN_ABI_VERSION;
	c->kind = FN_MSG_CONFIG;
	c->parent = SHM_DST_RUNTIME;
	c->job = 1;
	c->round = 7;
	c->role = FN_ROLE_SHARD;
	c->algorithm = FN_ALGO_SECAGG;
	c->index = 1;
	c->expected = 1; /* the runtime's: the masked inputs the sum holds */
	c->n_elem = W;
	c->acc_off = out_off;
	c->acc_data_off = out_off + 2048;
	c->flags = FN_CFG_FINAL;
	memset(p, 0, sizeof(*p));
	p->state_off = task_off;
}

/* The next record from @fn's channel (10 s at most); 0, -ECONNRESET at its end, -ETIMEDOUT. */
static int next_rec(struct rt_fn *fn, struct shm_desc *d)
{
	for (;;) {
		struct pollfd p = { .fd = fn->sock, .events = POLLIN };
		ssize_t r = recv(fn->sock, d, sizeof(*d), 0);

		if (r == (ssize_t)sizeof(*d))
			return 0;
		if (r == 0)
			return -ECONNRESET;
		if (r > 0 || (errno != EAGAIN && errno != EINTR))
			return -EPROTO;
		if (poll(&p, 1, 10000) == 0)
			return -ETIMEDOUT;
	}
}

static void exe_is(pid_t pid, const char *want)
{
	char link[64], got[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	n = readlink(link, got, sizeof(got) - 1);
	cr_assert_gt(n, 0);
	got[n] = '\0';
	cr_assert_str_eq(got, want, "function %d runs %s, want %s", (int)pid, got, want);
}

Test(runtime_fnproc_sa, a_secure_shard_runs_on_tributary_fn_sa_and_computes_libsodiums_stream,
     .init = setup, .fini = teardown)
{
	const struct fn_secagg_stream *s;
	const uint32_t *out = shm_arena_ptr(arena, out_off + 2048);
	static uint8_t ks[W * 4];
	struct fn_config c;
	struct fn_params p;
	struct shm_desc d;
	struct rt_fn *fn;
	uint64_t first, n;

	rt_fnset_set_sa_path(set, sa_bin);
	shard_config(&c, &p);
	c.fn_id = rt_fnset_reserve_ids(set, 1);
	cr_assert_eq(rt_fnset_spawn(set, &c, &p, NULL, &fn), 0);
	cr_assert(fn->secure);
	exe_is(fn->pid, sa_bin);
	do
		cr_assert_eq(next_rec(fn, &d), 0);
	while (d.kind == FN_MSG_READY);
	cr_assert_eq(d.kind, FN_MSG_DONE);
	cr_assert_eq(d.seq, 1);
	cr_assert_eq(fn_secagg_range(W, 2, 1, &first, &n), 0);
	cr_assert_eq(first, 1500);
	cr_assert_eq(n, 1501);
	s = shm_arena_ptr(arena, task_off + 64);
	for (uint64_t i = 0; i < W; i++) {
		uint32_t want = 0;

		if (i < first) {
			cr_assert_eq(out[i], 0xdeadbeefu, "word %llu outside the range was written",
				     (unsigned long long)i);
			continue;
		}
		for (uint32_t j = 0; j < NS; j++) {
			uint32_t w;

			/* The reference: libsodium's stream alone, word i. */
			cr_assert_eq(trib_sa_prg_bytes_sodium(ks, 4, s[j].key, i), 0);
			w = (uint32_t)ks[0] | (uint32_t)ks[1] << 8 | (uint32_t)ks[2] << 16 |
			    (uint32_t)ks[3] << 24;
			want += s[j].sign > 0 ? w : -w;
		}
		cr_assert_eq(out[i], want, "word %llu: %08x, want %08x", (unsigned long long)i,
			     out[i], want);
	}
}

Test(runtime_fnproc_sa, without_tributary_fn_sa_a_secure_shard_does_not_start,
     .init = setup, .fini = teardown)
{
	struct fn_config c;
	struct fn_params p;
	struct rt_fn *fn = NULL;

	shard_config(&c, &p);
	c.fn_id = rt_fnset_reserve_ids(set, 1);
	cr_assert_eq(rt_fnset_spawn(set, &c, &p, NULL, &fn), -ENOEXEC);
	cr_assert_eq(rt_fnset_count(set), 0);
}

/* A warm plain function is never given the config; sent it anyway, it refuses and exits. */
Test(runtime_fnproc_sa, a_plain_tributary_fn_refuses_a_secure_shard,
     .init = setup, .fini = teardown)
{
	struct fn_config c;
	struct fn_params p;
	struct shm_desc recs[2], d;
	struct rt_fn *fn;
	char log[4096];
	ssize_t got;
	int st, pfd[2], saved = dup(2);

	/* The function's stderr (its log) into a pipe: it must say why it refused. */
	cr_assert_eq(pipe(pfd), 0);
	cr_assert_geq(saved, 0);
	cr_assert_eq(dup2(pfd[1], 2), 2);
	rt_fnset_set_sa_path(set, sa_bin);
	st = rt_fnset_prestart(set, &fn);
	dup2(saved, 2);
	close(saved);
	close(pfd[1]);
	cr_assert_eq(st, 0);
	cr_assert(!fn->secure);
	exe_is(fn->pid, fn_bin);
	cr_assert_eq(next_rec(fn, &d), 0); /* its READY (idle) */
	shard_config(&c, &p);
	cr_assert_eq(rt_fn_configure(fn, &c, &p), -ENOEXEC);
	c.fn_id = fn->id;
	c.dataplane = FN_DP_SHM_UNIX;
	p.version = FN_ABI_VERSION;
	p.kind = FN_MSG_PARAMS;
	p.fn_id = fn->id;
	memcpy(&recs[0], &c, sizeof(c));
	memcpy(&recs[1], &p, sizeof(p));
	cr_assert_eq(rt_fn_proc_ops.chan_send(fn, recs, 2, -1), 0);
	cr_assert_eq(next_rec(fn, &d), -ECONNRESET, "the plain function ran a secure shard");
	cr_assert_eq(waitpid(fn->pid, &st, 0), fn->pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d", st);
	got = read(pfd[0], log, sizeof(log) - 1);
	close(pfd[0]);
	cr_assert_gt(got, 0, "the function logged nothing");
	log[got] = '\0';
	cr_assert(strstr(log, "not in this binary") && strstr(log, "tributary-fn-sa"),
		  "not the compose refusal: %s", log);
	fn->pid = 0;
	fn->exited = true;
	rt_fnset_remove(set, fn);
}
