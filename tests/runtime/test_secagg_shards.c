// SPDX-License-Identifier: MIT
/*
 * A secure round's unmasking shards against a fake function set (no processes): a round that
 * fails while they run keeps the slots they read and write until each has ended, and a shard
 * that fails on its own fails the round at once, naming it, instead of being replaced.
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "fn_secagg.h"
#include "rt_api.h"
#include "rt_fnproc.h"
#include "rt_secagg.h"
#include "rt_test_node.h"
#include "shm_arena.h"
#include "trib_alloc.h"
#include "trib_time.h"

#define FAKE_MAX 16

/* The functions the node started; pids it killed, or the test ended, come back from wait. */
struct fake {
	uint32_t nstarted;
	uint32_t id[FAKE_MAX];
	uint16_t role[FAKE_MAX];
	pid_t dead[FAKE_MAX];
	int status[FAKE_MAX]; /* waitpid's status for each */
	uint32_t ndead;
	uint32_t killed;      /* SIGKILLs the node sent */
};

static int fake_start(struct rt_fnset *set, struct rt_fn *fn)
{
	struct fake *f = rt_fnset_ops_ctx(set);

	cr_assert_lt(f->nstarted, FAKE_MAX);
	f->id[f->nstarted] = fn->id;
	f->role[f->nstarted++] = fn->cfg.role;
	fn->pid = 200000 + (pid_t)fn->id;
	fn->spawn_ns = trib_now_ns();
	fn->sock = open("/dev/null", O_RDWR | O_CLOEXEC);
	fn->data = -1;
	return fn->sock < 0 ? -1 : 0;
}

static int fake_chan_send(struct rt_fn *fn, const void *recs, size_t n, int fd)
{
	(void)fn;
	(void)recs;
	(void)n;
	(void)fd;
	return 0;
}

static int fake_send(struct rt_fn *fn, const struct shm_desc *d, uint32_t n)
{
	(void)fn;
	(void)d;
	return (int)n;
}

static int fake_send_payload(struct rt_fn *fn, const struct shm_desc *d, const struct iovec *iov,
			     int iovcnt)
{
	(void)fn;
	(void)d;
	(void)iov;
	(void)iovcnt;
	return 0;
}

/* The process "exits" with @status: reaped at the next SIGCHLD. */
static void fake_exit(struct fake *f, struct rt_fn *fn, int status)
{
	cr_assert_lt(f->ndead, FAKE_MAX);
	f->status[f->ndead] = status;
	f->dead[f->ndead++] = fn->pid;
}

static void fake_signal(struct rt_fn *fn, int sig)
{
	struct fake *f = rt_fnset_ops_ctx(fn->set);

	/* Any signal ends a fake (the node's close sends its own); the test counts SIGKILLs. */
	for (uint32_t i = 0; i < f->ndead; i++)
		if (f->dead[i] == fn->pid)
			return;
	f->killed += sig == SIGKILL;
	fake_exit(f, fn, sig); /* waitpid's "killed by signal sig" */
}

static pid_t fake_wait(struct rt_fnset *set, pid_t pid, int *status)
{
	struct fake *f = rt_fnset_ops_ctx(set);

	for (uint32_t i = 0; i < f->ndead; i++) {
		if (pid < 0 || f->dead[i] == pid) {
			pid_t p = f->dead[i];

			if (status)
				*status = f->status[i];
			f->dead[i] = f->dead[--f->ndead];
			f->status[i] = f->status[f->ndead];
			return p;
		}
	}
	return 0;
}

static const struct rt_fn_ops fake_ops = {
	.start = fake_start,
	.chan_send = fake_chan_send,
	.send = fake_send,
	.send_payload = fake_send_payload,
	.signal = fake_signal,
	.wait = fake_wait,
};

static struct rt_fn *started(struct rt_node *n, const struct fake *f, uint16_t role)
{
	for (uint32_t i = f->nstarted; i-- > 0;)
		if (f->role[i] == role)
			return rt_fnset_find(n->fns, f->id[i]);
	return NULL;
}

static uint64_t arena_used(struct rt_node *n)
{
	uint64_t used, total;

	shm_arena_usage(n->arena, &used, &total, NULL);
	return used;
}

/*
 * A secure job whose round 0 has one masked input folded, its sum taken for the unmasking, and
 * one shard started on it (the API's round in progress is stood in for by a bare rt_sa_live).
 */
static struct rt_fn *unmasking(struct rt_node *n, struct fake *f, struct rt_job **jp)
{
	static const char body[] = "{\"name\":\"s\",\"clients_per_round\":2,\"client_auth\":"
				   "\"required\",\"round_timeout_s\":5,\"secagg\":{\"threshold\":1,"
				   "\"neighbours\":2,\"clip\":1,\"bits\":8},\"params\":8}";
	struct fn_secagg_stream st = { .key = { 1 }, .sign = 1 };
	struct rt_secagg_cfg cfg = { 0 };
	struct rt_job_def def;
	struct rt_job *j;
	struct shm_seg *seg;
	struct shm_desc d;
	uint64_t slot, body_len = 64, words;
	uint32_t seq, count = 0, *payload;
	char msg[256];

	cr_assert_eq(rt_job_def_parse((const uint8_t *)body, sizeof(body) - 1, 64ull << 20, false,
				      &def, msg, sizeof(msg)), 200, "%s", msg);
	cr_assert_eq(rt_job_create(n, &def.spec, def.schema, def.nschema, &j), 0);
	def.schema = NULL;
	rt_job_def_free(&def);
	j->sa_live = trib_calloc(1, sizeof(*j->sa_live));
	cr_assert_not_null(j->sa_live);
	j->sa_live->round = 0;
	/* Its state holds the sum the tree hands off (rt_secagg_sum_dst): a round of its size. */
	cfg.n_clients = 2;
	cfg.threshold = 1;
	cfg.neighbours = 2;
	cfg.bits = 8;
	cfg.clip = 1.0f;
	cfg.dim = (uint32_t)j->n_elem;
	cfg.external_expand = true;
	cr_assert_eq(rt_secagg_new(&cfg, &j->sa_live->r), 0);
	words = j->n_elem + 1;
	cr_assert_eq(shm_slot_alloc(n->arena, body_len + sizeof(*seg), &slot), 0);
	memset(shm_arena_ptr(n->arena, slot), 0, body_len);
	seg = shm_arena_ptr(n->arena, slot + body_len);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = slot;
	seg->n_elem = words;
	seg->dtype = SHM_DTYPE_I32;
	seg->scale = 1.0f;
	cr_assert_eq(rt_job_secagg_accept(n, j, slot, slot + body_len, body_len, "c0", &seq), 0);
	rt_job_secagg_close(n, j);
	/* The top hands the masked sum off (tcp-style: its bytes come with the record). */
	payload = trib_calloc(words, sizeof(*payload));
	cr_assert_not_null(payload);
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = SHM_DESC_RESULT;
	d.src = started(n, f, FN_ROLE_TOP)->id;
	d.job = j->id;
	d.round = 0;
	d.count = 1;
	rt_node_on_fn_record(n, started(n, f, FN_ROLE_TOP), &d, (float *)(void *)payload);
	cr_assert_not_null(rt_job_secagg_sum(j, 0, &count), "the masked sum is kept");
	cr_assert_eq(count, 1);
	cr_assert_eq(rt_job_secagg_unmask_start(n, j, 0, &st, 1, NULL, 0), 0);
	cr_assert_not_null(started(n, f, FN_ROLE_SHARD), "a shard expands the masks");
	*jp = j;
	return started(n, f, FN_ROLE_SHARD);
}

/* The reaper sees @fn's exit, then its channel's end: it is judged. */
static void reap(struct rt_node *n, struct rt_fn *fn)
{
	rt_node_on_sigchld(n);
	rt_node_on_fn_eof(n, fn, false);
}

Test(runtime_secagg_shards, a_round_failed_under_its_shards_keeps_their_slots_until_they_end)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	struct rt_fn *shard;
	uint64_t used;
	uint32_t id;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	shard = unmasking(t.n, &f, &j);
	id = shard->id;
	used = arena_used(t.n);
	/* The round fails (its deadline, say) while the shard still runs: the API releases it. */
	rt_job_secagg_release(t.n, j);
	cr_assert_eq(f.killed, 1, "the running shard is killed");
	cr_assert_eq(arena_used(t.n), used, "the task and output slots stay the round's");
	cr_assert(rt_job_secagg_busy(j), "no new round while a shard may still write");
	cr_assert_not_null(rt_fnset_find(t.n->fns, id));
	/* Its exit ends the round: the slots go back, the kill is not a failure. */
	reap(t.n, shard);
	cr_assert_lt(arena_used(t.n), used, "the slots went back once the shard ended");
	cr_assert_not(rt_job_secagg_busy(j));
	cr_assert_eq(t.n->m.fn_failed, 0);
	cr_assert_eq(t.n->m.recoveries, 0, "a shard killed with its round is not replaced");
	cr_assert_eq(f.nstarted, 3, "top, leaf, shard: nothing more");
	rt_test_node_close(&t);
}

Test(runtime_secagg_shards, a_shard_that_fails_on_its_own_fails_the_round_at_once)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	struct rt_fn *shard;
	const char *why;
	uint64_t used;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	shard = unmasking(t.n, &f, &j);
	cr_assert_null(rt_job_secagg_failure(j, 0), "no failure while it runs");
	used = arena_used(t.n);
	/* It exits with status 1 (a task it cannot expand): any replacement would too. */
	fake_exit(&f, shard, 1 << 8);
	reap(t.n, shard);
	why = rt_job_secagg_failure(j, 0);
	cr_assert_not_null(why, "the round learns at once that its shards cannot finish");
	cr_assert(strstr(why, "shard 0 of 1") && strstr(why, "exit status 1"), "%s", why);
	cr_assert_eq(t.n->m.recoveries, 0, "not replaced: it would fail the same way");
	cr_assert_eq(f.nstarted, 3);
	cr_assert_eq(t.n->m.fn_failed, 1);
	cr_assert_null(rt_job_secagg_correction(t.n, j, 0));
	/* The API fails the round with that reason and releases it: nothing runs, all goes back. */
	rt_job_secagg_release(t.n, j);
	cr_assert_eq(f.killed, 0);
	cr_assert_lt(arena_used(t.n), used);
	cr_assert_not(rt_job_secagg_busy(j));
	rt_test_node_close(&t);
}

Test(runtime_secagg_shards, a_shard_killed_from_outside_is_still_replaced)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	struct rt_fn *shard;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	shard = unmasking(t.n, &f, &j);
	fake_exit(&f, shard, SIGKILL); /* kill -9 by someone else: it rewrites its range */
	reap(t.n, shard);
	cr_assert_eq(t.n->m.recoveries, 1);
	cr_assert_eq(f.nstarted, 4, "a replacement shard");
	cr_assert_eq(f.role[3], FN_ROLE_SHARD);
	cr_assert_null(rt_job_secagg_failure(j, 0));
	rt_test_node_close(&t);
}

Test(runtime_secagg_shards, a_shard_done_as_its_round_fails_frees_it_and_is_not_reused)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	struct rt_fn *shard;
	struct shm_desc d;
	uint64_t used;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	shard = unmasking(t.n, &f, &j);
	used = arena_used(t.n);
	rt_job_secagg_release(t.n, j);
	cr_assert_eq(f.killed, 1);
	/* Its DONE was on the way when the kill went: it ends the round as well. */
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = FN_MSG_DONE;
	d.src = shard->id;
	d.job = j->id;
	d.round = 0;
	rt_node_on_fn_record(t.n, shard, &d, NULL);
	cr_assert_lt(arena_used(t.n), used);
	cr_assert_not(rt_job_secagg_busy(j));
	cr_assert_eq(shard->state, RT_FN_EXITING, "killed: never configured again");
	rt_test_node_close(&t);
}
