// SPDX-License-Identifier: MIT
/* Tests of rt_fnproc.c against the real tributary-fn: pre-start (ATTACH), READY's stamp. */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fn_abi.h"
#include "fn_opt.h"
#include "rt_fnproc.h"
#include "shm_arena.h"
#include "trib_time.h"

#define N 1000

static struct shm_arena *arena;
static struct rt_fnset *set;
static uint64_t acc_off, upd_off;

static void setup(void)
{
	const char *bin = getenv("TRIBUTARY_FN_BIN");
	struct shm_seg *seg;
	float *u;

	cr_assert(bin && *bin, "TRIBUTARY_FN_BIN names the tributary-fn under test");
	signal(SIGPIPE, SIG_IGN);
	cr_assert_eq(shm_arena_create(8u << 20, SHM_ARENA_NO_HUGE | SHM_ARENA_NO_RESERVE, &arena),
		     0);
	cr_assert_eq(shm_slot_alloc(arena, SHM_ACC_HDR + N * 4, &acc_off), 0);
	cr_assert_eq(shm_slot_alloc(arena, 64 + N * 4, &upd_off), 0);
	seg = shm_arena_ptr(arena, upd_off);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = upd_off + 64;
	seg->n_elem = N;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;
	u = shm_arena_ptr(arena, upd_off + 64);
	for (int i = 0; i < N; i++)
		u[i] = (float)i - 300.5f;
	cr_assert_eq(rt_fnset_init(&set, bin, shm_arena_fd(arena), FN_DP_SHM_UNIX, NULL, -1), 0);
}

static void teardown(void)
{
	rt_fnset_destroy(set);
	shm_arena_destroy(arena);
}

/* The next record from @fn's channel (5 s at most); 0, -ECONNRESET at its end, -ETIMEDOUT. */
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
		if (poll(&p, 1, 5000) == 0)
			return -ETIMEDOUT;
	}
}

static void leaf_config(struct fn_config *c, struct fn_params *p, uint32_t round)
{
	memset(c, 0, sizeof(*c));
	c->version = FN_ABI_VERSION;
	c->kind = FN_MSG_CONFIG;
	c->parent = 777;
	c->job = 1;
	c->round = round;
	c->expected = 1;
	c->role = FN_ROLE_LEAF;
	c->algorithm = FN_ALGO_FEDAVG;
	c->n_elem = N;
	c->acc_off = acc_off;
	c->acc_data_off = acc_off + SHM_ACC_HDR;
	c->flags = FN_CFG_FINAL;
	memset(p, 0, sizeof(*p));
	p->server = FN_OPT_FEDAVG;
	p->server_lr = 1.0f;
}

/* One update of weight 2, then the partial (exactly 2 * u) and DONE. */
static void fold_and_check(struct rt_fn *fn)
{
	struct shm_desc d, out;
	const float *u = shm_arena_ptr(arena, upd_off + 64);
	const float *acc = shm_arena_ptr(arena, acc_off + SHM_ACC_HDR);

	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = SHM_DESC_UPDATE;
	d.dst = fn->id;
	d.job = fn->cfg.job;
	d.round = fn->cfg.round;
	d.nsegs = 1;
	d.slot_off = upd_off;
	d.segs_off = upd_off;
	d.weight = 2.0;
	d.count = 1;
	cr_assert_eq(rt_fn_send(fn, &d), 0);
	cr_assert_eq(rt_fn_flush(fn), 0);
	do
		cr_assert_eq(next_rec(fn, &out), 0);
	while (out.kind == FN_MSG_READY);
	cr_assert_eq(out.kind, SHM_DESC_PARTIAL);
	cr_assert_eq(out.dst, 777);
	cr_assert_eq(out.weight, 2.0);
	cr_assert_eq(out.count, 1);
	for (int i = 0; i < N; i++)
		cr_assert_eq(acc[i], 2.0f * u[i], "element %d: %g, want %g", i, acc[i], 2.0f * u[i]);
	cr_assert_eq(next_rec(fn, &out), 0);
	cr_assert_eq(out.kind, FN_MSG_DONE);
	fn->state = RT_FN_WARM;
}

/* READY: kind, @value, a stamp between @from and now. */
static void expect_ready(struct rt_fn *fn, uint32_t value, uint64_t from)
{
	struct shm_desc d;
	struct fn_ctl c;

	cr_assert_eq(next_rec(fn, &d), 0);
	memcpy(&c, &d, sizeof(c));
	cr_assert_eq(c.kind, FN_MSG_READY);
	cr_assert_eq(c.value, value);
	cr_assert_geq(c.at_ns, from, "READY stamped before it was asked for");
	cr_assert_leq(c.at_ns, trib_now_ns(), "READY stamped in the future");
}

Test(runtime_fnproc, a_cold_start_stamps_ready_between_spawn_and_now,
     .init = setup, .fini = teardown)
{
	struct fn_config c;
	struct fn_params p;
	struct rt_fn *fn;

	leaf_config(&c, &p, 1);
	c.fn_id = rt_fnset_reserve_ids(set, 1);
	cr_assert_eq(rt_fnset_spawn(set, &c, &p, NULL, &fn), 0);
	expect_ready(fn, 0, fn->spawn_ns);
	fold_and_check(fn);
	/* Warm: the next config's READY is after the config was sent, not before. */
	leaf_config(&c, &p, 2);
	cr_assert_eq(rt_fn_configure(fn, &c, &p), 0);
	expect_ready(fn, 0, fn->config_ns);
	fold_and_check(fn);
}

Test(runtime_fnproc, a_prestarted_function_attaches_then_serves_a_config,
     .init = setup, .fini = teardown)
{
	struct fn_config c;
	struct fn_params p;
	struct rt_fn *fn;

	cr_assert_eq(rt_fnset_prestart(set, &fn), 0);
	cr_assert_eq(fn->state, RT_FN_WARM);
	cr_assert_eq(fn->served, 0);
	expect_ready(fn, FN_READY_IDLE, fn->spawn_ns);
	leaf_config(&c, &p, 1);
	cr_assert_eq(rt_fn_configure(fn, &c, &p), 0);
	expect_ready(fn, 0, fn->config_ns);
	fold_and_check(fn);
}

Test(runtime_fnproc, a_config_sent_before_the_attach_is_read_waits_behind_it,
     .init = setup, .fini = teardown)
{
	struct fn_config c;
	struct fn_params p;
	struct rt_fn *fn;

	/* At once: the process has likely not even reached main(). */
	cr_assert_eq(rt_fnset_prestart(set, &fn), 0);
	leaf_config(&c, &p, 5);
	cr_assert_eq(rt_fn_configure(fn, &c, &p), 0);
	expect_ready(fn, FN_READY_IDLE, fn->spawn_ns);
	expect_ready(fn, 0, fn->config_ns);
	fold_and_check(fn);
}

Test(runtime_fnproc, a_second_attach_is_a_protocol_error_and_the_function_exits,
     .init = setup, .fini = teardown)
{
	struct rt_fn *fn;
	struct shm_desc d;
	struct fn_ctl c;
	int st;
	int fd = dup(shm_arena_fd(arena));

	cr_assert_eq(rt_fnset_prestart(set, &fn), 0);
	expect_ready(fn, FN_READY_IDLE, fn->spawn_ns);
	memset(&c, 0, sizeof(c));
	c.version = FN_ABI_VERSION;
	c.kind = FN_MSG_ATTACH;
	c.fn_id = fn->id;
	cr_assert_geq(fd, 0);
	cr_assert_eq(rt_fn_proc_ops.chan_send(fn, &c, 1, fd), 0);
	close(fd);
	cr_assert_eq(next_rec(fn, &d), -ECONNRESET, "the function went on after a second ATTACH");
	cr_assert_eq(waitpid(fn->pid, &st, 0), fn->pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d", st);
	fn->pid = 0;
	fn->exited = true;
	rt_fnset_remove(set, fn);
}
