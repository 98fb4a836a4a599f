// SPDX-License-Identifier: MIT
/* Tests of node/ rounds, trees and recovery against a fake function set (no processes). */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt_api.h"
#include "rt_fnproc.h"
#include "rt_node_priv.h" /* rt__fn_acquire */
#include "rt_test_node.h"
#include "rt_wal.h"
#include "shm_arena.h"
#include "shm_journal.h"
#include "trib_alloc.h"
#include "trib_time.h"

#define FAKE_MAX 64

/* What the node asked of its functions; pids the test "killed" come back from wait. */
struct fake {
	uint32_t nstarted;
	uint32_t id[FAKE_MAX];   /* started functions, in order */
	uint16_t role[FAKE_MAX];
	uint32_t configs;        /* CONFIG+PARAMS messages (first and warm) */
	uint32_t updates;        /* UPDATE descriptors sent, to any function */
	uint32_t updates_to[FAKE_MAX]; /* by the index of the function in id[] */
	pid_t dead[FAKE_MAX];
	uint32_t ndead;
};

static int fake_index(const struct fake *f, uint32_t id)
{
	for (uint32_t i = 0; i < f->nstarted; i++)
		if (f->id[i] == id)
			return (int)i;
	return -1;
}

static int fake_start(struct rt_fnset *set, struct rt_fn *fn)
{
	struct fake *f = rt_fnset_ops_ctx(set);

	cr_assert_lt(f->nstarted, FAKE_MAX);
	f->id[f->nstarted] = fn->id;
	f->role[f->nstarted] = fn->cfg.role;
	f->nstarted++;
	fn->pid = 100000 + (pid_t)fn->id;
	fn->spawn_ns = trib_now_ns();
	/* A descriptor the node may close; nothing is ever written to it. */
	fn->sock = open("/dev/null", O_RDWR | O_CLOEXEC);
	fn->data = -1;
	return fn->sock < 0 ? -1 : 0;
}

static int fake_chan_send(struct rt_fn *fn, const void *recs, size_t n, int fd)
{
	struct fake *f = rt_fnset_ops_ctx(fn->set);
	const struct shm_desc *d = recs;

	(void)fd;
	if (n == 2 && d[0].kind == FN_MSG_CONFIG)
		f->configs++;
	for (size_t i = 0; i < n; i++) {
		if (d[i].kind == SHM_DESC_UPDATE) {
			int k = fake_index(f, fn->id);

			f->updates++;
			if (k >= 0)
				f->updates_to[k]++;
		}
	}
	return 0;
}

static int fake_send(struct rt_fn *fn, const struct shm_desc *d, uint32_t n)
{
	int err = fake_chan_send(fn, d, n, -1);

	return err ? err : (int)n;
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

static void fake_signal(struct rt_fn *fn, int sig)
{
	struct fake *f = rt_fnset_ops_ctx(fn->set);

	(void)sig;
	cr_assert_lt(f->ndead, FAKE_MAX);
	f->dead[f->ndead++] = fn->pid;
}

static pid_t fake_wait(struct rt_fnset *set, pid_t pid, int *status)
{
	struct fake *f = rt_fnset_ops_ctx(set);

	for (uint32_t i = 0; i < f->ndead; i++) {
		if (pid < 0 || f->dead[i] == pid) {
			pid_t p = f->dead[i];

			f->dead[i] = f->dead[--f->ndead];
			if (status)
				*status = SIGKILL; /* as waitpid says "killed by signal 9" */
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

static struct rt_job *job_new(struct rt_node *n, const char *body)
{
	struct rt_job_def def;
	struct rt_job *j;
	char msg[256];

	cr_assert_eq(rt_job_def_parse((const uint8_t *)body, strlen(body), 64ull << 20, false, &def,
				      msg, sizeof(msg)), 200, "%s", msg);
	cr_assert_eq(rt_job_create(n, &def.spec, def.schema, def.nschema, &j), 0);
	def.schema = NULL; /* the job's */
	rt_job_def_free(&def);
	return j;
}

/* An update of all ones into a fresh slot, accepted into @round. */
static void accept_one(struct rt_node *n, struct rt_job *j, uint32_t round)
{
	size_t body = (j->n_elem * sizeof(float) + 63) & ~(size_t)63;
	uint64_t slot, segs_off;
	struct shm_seg *seg;
	float *x;
	uint32_t seq;

	cr_assert_eq(shm_slot_alloc(n->arena, body + sizeof(*seg), &slot), 0);
	segs_off = slot + body;
	x = shm_arena_ptr(n->arena, slot);
	for (uint64_t i = 0; i < j->n_elem; i++)
		x[i] = 1.0f;
	seg = shm_arena_ptr(n->arena, segs_off);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = slot;
	seg->n_elem = j->n_elem;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;
	cr_assert_eq(rt_job_accept(n, j, round, slot, segs_off, 1, 1.0, &seq), 0);
}

static int first_of_role(const struct fake *f, uint16_t role)
{
	for (uint32_t i = 0; i < f->nstarted; i++)
		if (f->role[i] == role)
			return (int)i;
	return -1;
}

Test(runtime_node_fake, first_update_starts_a_top_and_a_leaf_that_gets_it)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	int leaf;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	j = job_new(t.n, "{\"name\":\"a\",\"clients_per_round\":4,\"fan_in\":4,\"params\":8}");
	accept_one(t.n, j, 0);
	cr_assert_geq(first_of_role(&f, FN_ROLE_TOP), 0, "a top was started");
	leaf = first_of_role(&f, FN_ROLE_LEAF);
	cr_assert_geq(leaf, 0, "a leaf was started");
	cr_assert_eq(f.configs, f.nstarted, "each function got its config with the start");
	cr_assert_eq(f.updates, 1);
	cr_assert_eq(f.updates_to[leaf], 1);
	accept_one(t.n, j, 0);
	cr_assert_eq(f.updates_to[leaf], 2, "fan-in 4: the same leaf takes the second update");
	cr_assert_eq(t.n->m.fn_spawned, f.nstarted);
	rt_test_node_close(&t);
}

Test(runtime_node_fake, a_dead_leaf_is_replaced_and_gets_its_updates_again)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	struct rt_fn *fn;
	int leaf, leaf2;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	j = job_new(t.n, "{\"name\":\"a\",\"clients_per_round\":4,\"fan_in\":4,\"params\":8}");
	accept_one(t.n, j, 0);
	accept_one(t.n, j, 0);
	leaf = first_of_role(&f, FN_ROLE_LEAF);
	cr_assert_geq(leaf, 0);
	fn = rt_fnset_find(t.n->fns, f.id[leaf]);
	cr_assert_not_null(fn);

	/* It dies: the child is reaped, then its channel reaches end of stream. */
	f.dead[f.ndead++] = fn->pid;
	rt_node_on_sigchld(t.n);
	cr_assert_eq(t.n->m.recoveries, 0, "not judged before its channel's end is read");
	rt_node_on_fn_eof(t.n, fn, false);

	cr_assert_eq(t.n->m.recoveries, 1);
	cr_assert_eq(t.n->m.fn_failed, 1);
	cr_assert_null(rt_fnset_find(t.n->fns, f.id[leaf]), "the dead one is gone");
	leaf2 = -1;
	for (uint32_t i = (uint32_t)leaf + 1; i < f.nstarted; i++)
		if (f.role[i] == FN_ROLE_LEAF)
			leaf2 = (int)i;
	cr_assert_geq(leaf2, 0, "a replacement leaf was started");
	cr_assert_eq(f.updates_to[leaf2], 2, "both acknowledged updates are sent again");
	rt_test_node_close(&t);
}

Test(runtime_node_fake, held_hand_offs_reach_their_leaf_only_at_the_flush_in_order)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	int leaf;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	j = job_new(t.n, "{\"name\":\"a\",\"clients_per_round\":8,\"fan_in\":4,\"params\":8}");
	rt_node_handoff_hold(t.n, true);
	accept_one(t.n, j, 0);
	accept_one(t.n, j, 0);
	rt_node_handoff_hold(t.n, false);
	leaf = first_of_role(&f, FN_ROLE_LEAF);
	cr_assert_geq(leaf, 0, "a leaf was started (its config is not held)");
	cr_assert_eq(f.updates, 0, "accepted and counted, but not handed off yet");
	cr_assert_eq(j->open ? rt_round_received(j->open) : 0, 2);
	cr_assert(rt_node_handoff_pending(t.n));
	/* Not held: sent at once, behind the two queued ones (the queue keeps the order). */
	accept_one(t.n, j, 0);
	cr_assert_eq(f.updates, 0, "a send behind a queue waits for it");
	rt_node_handoff_flush(t.n);
	cr_assert(!rt_node_handoff_pending(t.n));
	cr_assert_eq(f.updates_to[leaf], 3, "all three, at the flush");
	rt_node_handoff_flush(t.n); /* nothing held: nothing sent twice */
	cr_assert_eq(f.updates, 3);
	rt_test_node_close(&t);
}

Test(runtime_node_fake, a_leaf_that_dies_before_the_flush_gets_its_held_update_by_its_replacement)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	struct rt_fn *fn;
	int leaf, leaf2 = -1;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	j = job_new(t.n, "{\"name\":\"a\",\"clients_per_round\":4,\"fan_in\":4,\"params\":8}");
	accept_one(t.n, j, 0);
	rt_node_handoff_hold(t.n, true);
	accept_one(t.n, j, 0);
	rt_node_handoff_hold(t.n, false);
	leaf = first_of_role(&f, FN_ROLE_LEAF);
	cr_assert_eq(f.updates_to[leaf], 1);
	fn = rt_fnset_find(t.n->fns, f.id[leaf]);
	f.dead[f.ndead++] = fn->pid;
	rt_node_on_sigchld(t.n);
	rt_node_on_fn_eof(t.n, fn, false);
	rt_node_handoff_flush(t.n); /* names a function that is gone: nothing to send */
	for (uint32_t i = (uint32_t)leaf + 1; i < f.nstarted; i++)
		if (f.role[i] == FN_ROLE_LEAF)
			leaf2 = (int)i;
	cr_assert_geq(leaf2, 0, "a replacement leaf was started");
	cr_assert_eq(f.updates_to[leaf2], 2, "the sent one and the held one, both");
	rt_test_node_close(&t);
}

/* The top of @j's round @round sends its RESULT: @n_elem floats of @v, weight @w (tcp-style). */
static void top_result(struct rt_node *n, struct fake *f, struct rt_job *j, uint32_t round,
		       float v, double w)
{
	int top = first_of_role(f, FN_ROLE_TOP);
	float *payload = trib_malloc(j->n_elem * sizeof(float));
	struct shm_desc d;
	struct rt_fn *fn;

	cr_assert_geq(top, 0);
	fn = rt_fnset_find(n->fns, f->id[top]);
	cr_assert_not_null(fn);
	cr_assert_not_null(payload);
	for (uint64_t i = 0; i < j->n_elem; i++)
		payload[i] = v;
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = SHM_DESC_RESULT;
	d.src = fn->id;
	d.job = j->id;
	d.round = round;
	d.count = 2;
	d.weight = w;
	rt_node_on_fn_record(n, fn, &d, payload);
}

Test(runtime_node_fake, a_model_that_cannot_be_stored_refuses_updates_and_is_retried)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	struct trib_blob *b;
	char dir[PATH_MAX];
	uint32_t retry_s = 0;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	j = job_new(t.n, "{\"name\":\"a\",\"clients_per_round\":2,\"fan_in\":2,\"params\":8}");
	accept_one(t.n, j, 0);
	accept_one(t.n, j, 0);
	cr_assert_eq(j->round, 1, "round 0 is full: round 1 is open");
	cr_assert_eq(rt_job_store_refusal(j, NULL), 0);

	/* A directory where model v1 goes: the rename fails (EISDIR), as ENOSPC would. */
	snprintf(dir, sizeof(dir), "%s/jobs/a/round-1.safetensors", t.dir);
	cr_assert_eq(mkdir(dir, 0700), 0);
	top_result(t.n, &f, j, 0, 0.5f, 2);
	cr_assert_eq(j->completed, 0, "no model v1: the round is not committed");
	cr_assert_eq(rt_job_store_refusal(j, &retry_s), -EISDIR, "updates are refused");
	cr_assert_eq(retry_s, 1, "Retry-After: the 200 ms to the next attempt, rounded up");
	cr_assert_eq(j->store.what, 0);
	cr_assert_eq(j->store.retries, 0);
	cr_assert_eq(j->store_errs[0].err, -EISDIR);
	cr_assert_eq(j->store_errs[0].n, 1);
	cr_assert(rt_node_rounds_in_flight(t.n), "a stop waits for it");
	cr_assert_eq(rt_node_report_unsaved(t.n), 1, "and says what it could not save");

	/* Not due yet: the tick leaves it; due: it tries again, fails, and backs off further. */
	rt_node_tick(t.n);
	cr_assert_eq(j->store_errs[0].n, 1, "no attempt before the backoff");
	j->store.next_ns = trib_now_ns();
	rt_node_tick(t.n);
	cr_assert_eq(j->store_errs[0].n, 2);
	cr_assert_eq(j->store.retries, 1);
	cr_assert_geq(j->store.next_ns, trib_now_ns() + 300000000ull, "400 ms after a retry");

	/* Space again: the next due tick stores it and the job goes on by itself. */
	cr_assert_eq(rmdir(dir), 0);
	j->store.next_ns = trib_now_ns();
	rt_node_tick(t.n);
	cr_assert_eq(rt_job_store_refusal(j, NULL), 0, "updates are taken again");
	cr_assert_eq(j->completed, 1);
	cr_assert_eq(j->store_errs[0].n, 2, "the counter keeps its history");
	cr_assert_not(rt_node_rounds_in_flight(t.n));
	cr_assert_eq(rt_node_report_unsaved(t.n), 0);
	b = rt_job_model(t.n, j, 1);
	cr_assert_not_null(b);
	cr_assert_eq(b->len, j->st_header_len + j->n_elem * sizeof(float));
	for (uint64_t i = 0; i < j->n_elem; i++) {
		float x;

		memcpy(&x, b->data + j->st_header_len + i * sizeof(float), sizeof(x));
		cr_assert_eq(x, 0.5f);
	}
	trib_blob_release(b);
	accept_one(t.n, j, 1);
	rt_test_node_close(&t);
}

/*
 * Like accept_one, through the journal, with Idempotency-Key @key and as client @client (NULL:
 * the job's token): the 202's body in @ans. Returns rt_job_accept_journaled's result (the slot
 * freed on an error).
 */
static int accept_as(struct rt_node *n, struct rt_job *j, uint32_t round, const char *key,
		     const char *client, char *ans, size_t cap)
{
	size_t body = (j->n_elem * sizeof(float) + 63) & ~(size_t)63, len = 0;
	struct rt_update_in u = { .nsegs = 1, .weight = 1.0, .key = key, .key_len = strlen(key),
				  .client = client };
	struct shm_seg *seg;
	float *x;
	uint32_t seq;
	int err;

	cr_assert_eq(shm_slot_alloc(n->arena, body + sizeof(*seg), &u.slot_off), 0);
	u.segs_off = u.slot_off + body;
	x = shm_arena_ptr(n->arena, u.slot_off);
	for (uint64_t i = 0; i < j->n_elem; i++)
		x[i] = 1.0f;
	seg = shm_arena_ptr(n->arena, u.segs_off);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = u.slot_off;
	seg->n_elem = j->n_elem;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;
	err = rt_job_accept_journaled(n, j, round, &u, &seq, ans, cap, &len);
	if (err)
		shm_slot_free(n->arena, u.slot_off);
	ans[err ? 0 : len] = '\0';
	return err;
}

static void accept_keyed(struct rt_node *n, struct rt_job *j, uint32_t round, const char *key,
			 char *ans, size_t cap)
{
	cr_assert_eq(accept_as(n, j, round, key, NULL, ans, cap), 0);
}

static struct rt_node *node_on(const char *dir, const char *db, bool fresh, int *err)
{
	struct rt_node_opts o = {
		.listen_host = "127.0.0.1",
		.arena_bytes = 64ull << 20,
		.no_huge = true,
		.warm_s = 30,
		.dataplane = FN_DP_SHM_UNIX,
		.fn_path = "/nonexistent/tributary-fn",
		.data_dir = dir,
		.fresh = fresh,
	};
	struct rt_node *n = NULL;

	*err = rt_node_open(&n, &o, db);
	return n;
}

Test(runtime_node_fake, updates_kept_by_a_stop_go_back_into_a_fresh_tree)
{
	struct rt_test_node t;
	struct fake f = { 0 }, g = { 0 };
	struct rt_node *n, *again;
	struct rt_job *j;
	char db[128], ans[128], old[128];
	int status = 0, err;
	size_t len = 0;

	snprintf(t.dir, sizeof(t.dir), "/tmp/trib-rt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(t.dir));
	snprintf(db, sizeof(db), "%s/tributary.db", t.dir);
	n = node_on(t.dir, db, false, &err);
	cr_assert_eq(err, 0);
	rt_fnset_set_ops(n->fns, &fake_ops, &f);
	j = job_new(n, "{\"name\":\"a\",\"clients_per_round\":4,\"fan_in\":2,\"params\":8}");
	for (int i = 0; i < 3; i++) {
		char key[8];

		snprintf(key, sizeof(key), "k%d", i);
		accept_keyed(n, j, 0, key, ans, sizeof(ans));
	}
	cr_assert_str_eq(ans, "{\"round\":0,\"received\":3}");
	snprintf(old, sizeof(old), "%s", ans);
	again = node_on(t.dir, db, false, &err);
	cr_assert_null(again);
	cr_assert_eq(err, -EBUSY, "a second node on the data dir is refused");
	/* A stop with an open round: the arena file and its records stay. */
	rt_node_close(n);

	n = node_on(t.dir, db, false, &err);
	cr_assert_eq(err, 0);
	cr_assert(n->arena_reattached);
	rt_fnset_set_ops(n->fns, &fake_ops, &g);
	cr_assert_eq(rt_node_jobs_load(n), 0);
	cr_assert_eq(g.nstarted, 0, "no function runs before recovery");
	cr_assert_eq(rt_node_recover(n), 0);
	j = rt_job_find(n, "a");
	cr_assert_not_null(j);
	cr_assert_eq(n->m.updates_recovered, 3);
	cr_assert_eq(j->round, 0);
	cr_assert_eq(rt_round_received(j->open), 3, "the round's count is restored");
	cr_assert_eq(g.updates, 3, "every kept update went to a leaf of the fresh tree");
	cr_assert_eq(rt_job_idem_find(n, j, 0, "k2", 2, &status, ans, sizeof(ans), &len), 0);
	ans[len] = '\0';
	cr_assert_eq(status, 202);
	cr_assert_str_eq(ans, old, "a resend after the restart gets the first answer");
	cr_assert_eq(rt_job_idem_find(n, j, 0, "k9", 2, &status, ans, sizeof(ans), &len),
		     -ENOENT);
	accept_keyed(n, j, 0, "k3", ans, sizeof(ans));
	cr_assert_str_eq(ans, "{\"round\":0,\"received\":4}");
	cr_assert_eq(j->round, 1, "the recovered round filled up and closed");
	/* Its model is stored: the records go, and with no open round a stop removes the file. */
	top_result(n, &g, j, 0, 1.0f, 4);
	cr_assert_eq(j->completed, 1);
	/* Once the round is stored its keys are in the store: the first answer again. */
	cr_assert_eq(rt_job_idem_find(n, j, 0, "k2", 2, &status, ans, sizeof(ans), &len), 0);
	ans[len] = '\0';
	cr_assert_str_eq(ans, old, "a resend after the round is stored gets the first answer");
	cr_assert_eq(rt_job_idem_find(n, j, 0, "k9", 2, &status, ans, sizeof(ans), &len),
		     -ENOENT);
	rt_node_close(n);
	n = node_on(t.dir, db, false, &err);
	cr_assert_eq(err, 0);
	cr_assert_not(n->arena_reattached, "the clean stop with no open round removed the file");
	cr_assert_eq(rt_node_jobs_load(n), 0);
	j = rt_job_find(n, "a");
	cr_assert_eq(rt_job_idem_find(n, j, 0, "k3", 2, &status, ans, sizeof(ans), &len), 0,
		     "the stored round's keys outlive the process");
	ans[len] = '\0';
	cr_assert_str_eq(ans, "{\"round\":0,\"received\":4}");
	cr_assert_eq(rt_job_idem_find(n, j, 1, "k3", 2, &status, ans, sizeof(ans), &len),
		     -ENOENT, "a key of round 0 is no answer for round 1");
	rt_node_close(n);
	t.n = node_on(t.dir, ":memory:", true, &err);
	cr_assert_eq(err, 0);
	rt_test_node_close(&t);
}

/* A non-finite result never becomes a model version: the store-failure path, with EDOM. */
/* The first leaf of @j's round @round is done: its partial of @count updates (weight @w). */
static void leaf_done(struct rt_node *n, struct fake *f, struct rt_job *j, uint32_t round,
		      uint32_t count, double w)
{
	int leaf = first_of_role(f, FN_ROLE_LEAF);
	struct shm_desc d;
	struct rt_fn *fn;

	cr_assert_geq(leaf, 0);
	fn = rt_fnset_find(n->fns, f->id[leaf]);
	cr_assert_not_null(fn);
	memset(&d, 0, sizeof(d));
	d.version = SHM_ABI_VERSION;
	d.kind = FN_MSG_DONE;
	d.src = fn->id;
	d.job = j->id;
	d.round = round;
	d.count = count;
	d.weight = w;
	rt_node_on_fn_record(n, fn, &d, NULL);
}

/*
 * A leaf's partial supersedes its updates' records (their keys with them):
 * the keys are in the store first, so a resend, before or after a restart,
 * gets the first answer and is not counted again.
 */
Test(runtime_node_fake, a_key_superseded_by_a_partial_is_answered_once_across_a_restart)
{
	struct rt_test_node t;
	struct fake f = { 0 }, g = { 0 };
	struct rt_node *n;
	struct rt_job *j;
	char db[128], ans[128], first[128];
	int status = 0, err;
	uint32_t idx;
	size_t len = 0;

	snprintf(t.dir, sizeof(t.dir), "/tmp/trib-rt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(t.dir));
	snprintf(db, sizeof(db), "%s/tributary.db", t.dir);
	n = node_on(t.dir, db, false, &err);
	cr_assert_eq(err, 0);
	rt_fnset_set_ops(n->fns, &fake_ops, &f);
	j = job_new(n, "{\"name\":\"p\",\"clients_per_round\":4,\"fan_in\":2,\"params\":8}");
	accept_keyed(n, j, 0, "p0", first, sizeof(first));
	accept_keyed(n, j, 0, "p1", ans, sizeof(ans));
	leaf_done(n, &f, j, 0, 2, 2.0);
	cr_assert_eq(shm_rec_find(n->arena, (uint64_t)j->db_id, 0, "p0", 2, &idx), -ENOENT,
		     "the partial superseded the update's record");
	cr_assert_eq(rt_job_idem_find(n, j, 0, "p0", 2, &status, ans, sizeof(ans), &len), 0);
	ans[len] = '\0';
	cr_assert_eq(status, 202);
	cr_assert_str_eq(ans, first);
	rt_node_close(n);

	n = node_on(t.dir, db, false, &err);
	cr_assert_eq(err, 0);
	cr_assert(n->arena_reattached);
	rt_fnset_set_ops(n->fns, &fake_ops, &g);
	cr_assert_eq(rt_node_jobs_load(n), 0);
	cr_assert_eq(rt_node_recover(n), 0);
	j = rt_job_find(n, "p");
	cr_assert_not_null(j);
	cr_assert_eq(rt_round_received(j->open), 2, "the partial is back, counted once");
	cr_assert_eq(rt_job_idem_find(n, j, 0, "p0", 2, &status, ans, sizeof(ans), &len), 0,
		     "a resend after the restart is recognised");
	ans[len] = '\0';
	cr_assert_str_eq(ans, first);
	rt_node_close(n);
	t.n = node_on(t.dir, ":memory:", true, &err);
	cr_assert_eq(err, 0);
	rt_test_node_close(&t);
}

Test(runtime_node_fake, a_non_finite_model_is_never_written)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct rt_job *j;
	char path[PATH_MAX];
	struct stat st;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	j = job_new(t.n, "{\"name\":\"a\",\"clients_per_round\":2,\"fan_in\":2,\"params\":8}");
	accept_one(t.n, j, 0);
	accept_one(t.n, j, 0);
	top_result(t.n, &f, j, 0, INFINITY, 2);
	cr_assert_eq(j->completed, 0, "no model v1");
	cr_assert_eq(rt_job_store_refusal(j, NULL), -EDOM, "updates are refused, naming EDOM");
	snprintf(path, sizeof(path), "%s/jobs/a/round-1.safetensors", t.dir);
	cr_assert_neq(stat(path, &st), 0, "nothing was written");
	cr_assert_null(rt_job_model(t.n, j, 1));
	/* Retried when due, refused again: it never becomes a version. */
	j->store.next_ns = trib_now_ns();
	rt_node_tick(t.n);
	cr_assert_eq(j->completed, 0);
	cr_assert_eq(j->store_errs[0].err, -EDOM);
	cr_assert_eq(j->store_errs[0].n, 2);
	rt_test_node_close(&t);
}

/* --- --durability disk (node/rt_wal_node.c) --- */

static struct rt_node *node_disk_as(const char *dir, const char *db, struct fake *f,
				    const char *controller)
{
	struct rt_node_opts o = {
		.controller = controller,
		.listen_host = "127.0.0.1",
		.arena_bytes = 64ull << 20,
		.no_huge = true,
		.warm_s = 30,
		.dataplane = FN_DP_SHM_UNIX,
		.fn_path = "/nonexistent/tributary-fn",
		.data_dir = dir,
		.durability_disk = true,
	};
	struct rt_node *n = NULL;

	cr_assert_eq(rt_node_open(&n, &o, db), 0);
	cr_assert_geq(rt_node_wal_fd(n), 0);
	rt_fnset_set_ops(n->fns, &fake_ops, f);
	return n;
}

static struct rt_node *node_disk(const char *dir, const char *db, struct fake *f)
{
	return node_disk_as(dir, db, f, NULL);
}

/* accept_keyed through the log, from client credential @client (NULL: the job's token). */
static uint64_t accept_logged_as(struct rt_node *n, struct rt_job *j, uint32_t round,
				 const char *key, const char *client, char *ans, size_t cap)
{
	size_t body = (j->n_elem * sizeof(float) + 63) & ~(size_t)63, len = 0;
	struct rt_update_in u = { .nsegs = 1, .weight = 1.0, .key = key, .key_len = strlen(key),
				  .data_len = j->n_elem * sizeof(float), .client = client };
	struct shm_seg *seg;
	uint64_t ticket = 0;
	float *x;
	uint32_t seq;

	cr_assert_eq(shm_slot_alloc(n->arena, body + sizeof(*seg), &u.slot_off), 0);
	u.segs_off = u.slot_off + body;
	x = shm_arena_ptr(n->arena, u.slot_off);
	for (uint64_t i = 0; i < j->n_elem; i++)
		x[i] = 1.0f;
	seg = shm_arena_ptr(n->arena, u.segs_off);
	memset(seg, 0, sizeof(*seg));
	seg->src_off = u.slot_off;
	seg->n_elem = j->n_elem;
	seg->dtype = SHM_DTYPE_F32;
	seg->scale = 1.0f;
	cr_assert_eq(rt_job_accept_logged(n, j, round, &u, &seq, ans, cap, &len, &ticket), 0);
	ans[len] = '\0';
	cr_assert_gt(ticket, 0, "with a log, the 202 waits for a ticket");
	return ticket;
}

/* accept_keyed through the log: the ticket, once the log says it is on disk. */
static uint64_t accept_logged(struct rt_node *n, struct rt_job *j, uint32_t round,
			      const char *key, char *ans, size_t cap)
{
	return accept_logged_as(n, j, round, key, NULL, ans, cap);
}

Test(runtime_node_fake, with_durability_disk_a_replayed_update_still_counts_its_client)
{
	struct fake f = { 0 }, g = { 0 };
	char dir[64], db[128], ans[128], arena[PATH_MAX], cmd[160];
	struct rt_node *n;
	struct rt_job *j;

	snprintf(dir, sizeof(dir), "/tmp/trib-rt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(db, sizeof(db), "%s/tributary.db", dir);
	n = node_disk(dir, db, &f);
	j = job_new(n, "{\"name\":\"c\",\"clients_per_round\":4,\"fan_in\":4,\"params\":8}");
	accept_logged_as(n, j, 0, "k0", "site-1", ans, sizeof(ans));
	accept_logged_as(n, j, 0, "k1", NULL, ans, sizeof(ans));
	cr_assert(rt_job_client_seen(n, j, "site-1"));
	cr_assert_eq(rt_node_wal_flush(n), 0);
	/* The machine dies: the arena file (and its journal's client ids) is gone with it. */
	snprintf(arena, sizeof(arena), "%s", shm_arena_file_path(n->arena));
	rt_node_close(n);
	cr_assert_eq(unlink(arena), 0);
	n = node_disk(dir, db, &g);
	cr_assert_eq(rt_node_jobs_load(n), 0);
	cr_assert_eq(rt_node_recover(n), 0);
	j = rt_job_find(n, "c");
	cr_assert_eq(n->m.wal_recovered, 2);
	cr_assert(rt_job_client_seen(n, j, "site-1"),
		  "the log's record names its client: a second update of it is a 409");
	cr_assert_not(rt_job_client_seen(n, j, "site-2"));
	rt_node_close(n);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(runtime_node_fake, with_durability_disk_a_lost_arena_file_is_replayed_once_from_the_log)
{
	struct fake f = { 0 }, g = { 0 }, h = { 0 };
	char dir[64], db[128], ans[128], old[128], seg[PATH_MAX], arena[PATH_MAX], cmd[160];
	struct rt_node *n;
	struct rt_job *j;
	uint64_t t = 0;
	size_t len = 0;
	int status = 0;

	snprintf(dir, sizeof(dir), "/tmp/trib-rt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(db, sizeof(db), "%s/tributary.db", dir);
	n = node_disk(dir, db, &f);
	j = job_new(n, "{\"name\":\"d\",\"clients_per_round\":4,\"fan_in\":4,\"params\":8}");
	for (int i = 0; i < 3; i++) {
		char key[8];

		snprintf(key, sizeof(key), "k%d", i);
		t = accept_logged(n, j, 0, key, ans, sizeof(ans));
	}
	snprintf(old, sizeof(old), "%s", ans);
	cr_assert_eq(rt_node_wal_ticket(n, t), 0, "not on disk until the log says so");
	cr_assert_eq(rt_node_wal_flush(n), 0);
	rt_node_wal_poll(n);
	cr_assert_eq(rt_node_wal_ticket(n, t), 1);
	snprintf(seg, sizeof(seg), "%s/wal/%lld/0000000000.wal", dir, (long long)j->db_id);
	cr_assert_eq(access(seg, F_OK), 0, "round 0's segment");
	/* The machine dies: the arena file is gone with it. */
	snprintf(arena, sizeof(arena), "%s", shm_arena_file_path(n->arena));
	rt_node_close(n);
	cr_assert_eq(unlink(arena), 0);

	n = node_disk(dir, db, &g);
	cr_assert_not(n->arena_reattached);
	cr_assert_eq(rt_node_jobs_load(n), 0);
	cr_assert_eq(rt_node_recover(n), 0);
	j = rt_job_find(n, "d");
	cr_assert_eq(n->m.wal_recovered, 3);
	cr_assert_eq(rt_round_received(j->open), 3);
	cr_assert_eq(g.updates, 3, "every logged update went to a leaf of the fresh tree");
	cr_assert_eq(rt_job_idem_find(n, j, 0, "k2", 2, &status, ans, sizeof(ans), &len), 0);
	ans[len] = '\0';
	cr_assert_str_eq(ans, old, "a resend after the reboot gets the first answer");

	/* A stop (the arena kept): the arena puts them back, the log's copies are duplicates. */
	rt_node_close(n);
	n = node_disk(dir, db, &h);
	cr_assert(n->arena_reattached);
	cr_assert_eq(rt_node_jobs_load(n), 0);
	cr_assert_eq(rt_node_recover(n), 0);
	j = rt_job_find(n, "d");
	cr_assert_eq(n->m.updates_recovered, 3);
	cr_assert_eq(n->m.wal_recovered, 0);
	cr_assert_eq(n->m.wal_duplicates, 3, "folded once");
	cr_assert_eq(rt_round_received(j->open), 3);
	accept_logged(n, j, 0, "k3", ans, sizeof(ans));
	cr_assert_eq(rt_node_wal_flush(n), 0);
	top_result(n, &h, j, 0, 1.0f, 4);
	cr_assert_eq(j->completed, 1);
	/* The model is durable: the round's log is cut (by the log's thread). */
	for (int i = 0; i < 500 && access(seg, F_OK) == 0; i++)
		usleep(2000);
	cr_assert_neq(access(seg, F_OK), 0, "round 0's segment is cut once its model is stored");
	rt_node_close(n);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(runtime_node_fake, with_durability_disk_no_partial_covers_an_update_the_log_failed)
{
	struct rt_test_node t = { 0 };
	struct fake f = { 0 };
	char db[128], ans[128], cmd[160], arena[PATH_MAX];
	uint32_t committed, cap;
	struct rt_job *j;

	snprintf(t.dir, sizeof(t.dir), "/tmp/trib-rt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(t.dir));
	snprintf(db, sizeof(db), "%s/tributary.db", t.dir);
	t.n = node_disk(t.dir, db, &f);
	j = job_new(t.n, "{\"name\":\"p\",\"clients_per_round\":4,\"fan_in\":2,\"params\":8}");
	rt_wal_test_fail(t.n->wal, -ENOSPC, 0);
	rt_wal_test_hold(t.n->wal, true);
	accept_logged(t.n, j, 0, "a", ans, sizeof(ans));
	accept_logged(t.n, j, 0, "b", ans, sizeof(ans));
	rt_wal_test_hold(t.n->wal, false);
	cr_assert_eq(rt_node_wal_flush(t.n), -ENOSPC);
	rt_node_wal_poll(t.n);
	cr_assert_eq(rt_node_wal_ticket(t.n, 2), -ENOSPC, "their 202s become 503s");
	cr_assert_eq(rt_node_wal_refusal(t.n, NULL), -ENOSPC, "new updates get 503");
	/* The leaf's partial exists, but may not supersede records the log does not have. */
	leaf_done(t.n, &f, j, 0, 2, 2.0);
	shm_journal_usage(t.n->arena, &committed, &cap);
	cr_assert_eq(committed, 2, "both update records stay (a resend must wait for the disk)");
	/* The retry succeeds by itself (200 ms); then everything given to the log is on disk. */
	for (int i = 0; i < 100 && rt_node_wal_flush(t.n); i++)
		usleep(20000);
	cr_assert_eq(rt_node_wal_flush(t.n), 0);
	rt_node_wal_poll(t.n);
	cr_assert_eq(rt_node_wal_ticket(t.n, 2), 1);
	cr_assert_eq(rt_node_wal_refusal(t.n, NULL), 0);
	snprintf(arena, sizeof(arena), "%s", shm_arena_file_path(t.n->arena));
	rt_node_close(t.n);
	unlink(arena);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t.dir);
	cr_assert_eq(system(cmd), 0);
}

/*
 * One update per client per round: a second one is -EALREADY, also once a partial has
 * superseded the first one's record (the client is in the store) and across a stop (the
 * records name their clients); the next round takes the client again.
 */
Test(runtime_node_fake, one_update_per_client_per_round_across_a_restart)
{
	struct rt_test_node t;
	struct fake f = { 0 }, g = { 0 };
	struct rt_node *n;
	struct rt_job *j;
	char db[128], ans[128];
	int err;

	snprintf(t.dir, sizeof(t.dir), "/tmp/trib-rt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(t.dir));
	snprintf(db, sizeof(db), "%s/tributary.db", t.dir);
	n = node_on(t.dir, db, false, &err);
	cr_assert_eq(err, 0);
	rt_fnset_set_ops(n->fns, &fake_ops, &f);
	j = job_new(n, "{\"name\":\"c\",\"clients_per_round\":4,\"fan_in\":2,\"params\":8,"
		    "\"client_auth\":\"required\"}");
	cr_assert(j->cred.required && j->cred.has_key);
	cr_assert_eq(accept_as(n, j, 0, "a0", "alice", ans, sizeof(ans)), 0);
	cr_assert_eq(accept_as(n, j, 0, "a1", "alice", ans, sizeof(ans)), -EALREADY);
	cr_assert_eq(accept_as(n, j, 0, "b0", "bob", ans, sizeof(ans)), 0);
	cr_assert_eq(rt_job_clients_now(n, j), 2);
	leaf_done(n, &f, j, 0, 2, 2.0); /* alice's and bob's records go: their ids to the store */
	cr_assert_eq(accept_as(n, j, 0, "b1", "bob", ans, sizeof(ans)), -EALREADY);
	cr_assert_eq(accept_as(n, j, 0, "c0", "carol", ans, sizeof(ans)), 0);
	cr_assert_eq(accept_as(n, j, 0, "x0", NULL, ans, sizeof(ans)), 0, "no identity: no rule");
	cr_assert(rt_job_revoke(n, j, "mallory") == 0 && rt_job_revoked(j, "mallory"));
	rt_node_close(n);

	n = node_on(t.dir, db, false, &err);
	cr_assert_eq(err, 0);
	rt_fnset_set_ops(n->fns, &fake_ops, &g);
	cr_assert_eq(rt_node_jobs_load(n), 0);
	cr_assert_eq(rt_node_recover(n), 0);
	j = rt_job_find(n, "c");
	cr_assert_not_null(j);
	cr_assert(j->cred.required && j->cred.has_key, "client_auth and the key are kept");
	cr_assert(rt_job_revoked(j, "mallory"), "revocations are kept");
	cr_assert_eq(j->round, 1, "the recovered round was full");
	cr_assert_eq(j->last_round_clients, 3, "alice, bob from the store, carol from her record");
	/* Round 1: everyone may send again, once. */
	cr_assert_eq(accept_as(n, j, 1, "a2", "alice", ans, sizeof(ans)), 0);
	cr_assert_eq(accept_as(n, j, 1, "a3", "alice", ans, sizeof(ans)), -EALREADY);
	rt_node_close(n);
	n = node_on(t.dir, db, false, &err);
	cr_assert_eq(err, 0);
	rt_fnset_set_ops(n->fns, &fake_ops, &g);
	cr_assert_eq(rt_node_jobs_load(n), 0);
	cr_assert_eq(rt_node_recover(n), 0);
	j = rt_job_find(n, "c");
	cr_assert_eq(accept_as(n, j, 1, "a4", "alice", ans, sizeof(ans)), -EALREADY,
		     "the journal record names its client");
	cr_assert_eq(accept_as(n, j, 1, "b2", "bob", ans, sizeof(ans)), 0);
	cr_assert_eq(rt_job_clients_now(n, j), 2);
	rt_node_close(n);
	t.n = node_on(t.dir, ":memory:", true, &err);
	cr_assert_eq(err, 0);
	rt_test_node_close(&t);
}

struct held_seen {
	uint32_t n;
	char clients[256];
	double weight;
};

static int held_cb(void *ctx, const struct rt_log_held *h)
{
	struct held_seen *s = ctx;
	size_t len = strlen(s->clients);

	s->n++;
	s->weight += h->weight;
	snprintf(s->clients + len, sizeof(s->clients) - len, "%u:%s;", h->seq, h->client);
	return 0;
}

Test(runtime_node_fake, a_cluster_node_reports_what_only_its_log_holds_at_its_first_join)
{
	struct fake f = { 0 }, g = { 0 }, h = { 0 };
	char dir[64], db[128], ans[128], arena[PATH_MAX], cmd[160];
	struct held_seen s = { 0 };
	struct rt_node *n;
	struct rt_job *j;

	snprintf(dir, sizeof(dir), "/tmp/trib-rt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(db, sizeof(db), "%s/tributary.db", dir);
	n = node_disk(dir, db, &f);
	cr_assert_not(rt_node_keeps_acked(n), "a first start keeps nothing");
	j = job_new(n, "{\"name\":\"h\",\"clients_per_round\":4,\"fan_in\":4,\"params\":8}");
	accept_logged_as(n, j, 0, "k0", "site-1", ans, sizeof(ans));
	accept_logged_as(n, j, 0, "k1", NULL, ans, sizeof(ans));
	accept_logged_as(n, j, 0, "k2", "site-3", ans, sizeof(ans));
	cr_assert_eq(rt_node_wal_flush(n), 0);
	snprintf(arena, sizeof(arena), "%s", shm_arena_file_path(n->arena));
	rt_node_close(n);

	/* The arena file is kept (a crash): the arena reports them, the log adds nothing. */
	n = node_disk_as(dir, db, &g, "tcp://127.0.0.1:1");
	cr_assert(n->arena_reattached);
	cr_assert(rt_node_keeps_acked(n));
	cr_assert_eq(rt_node_log_holds(n, held_cb, &s), 0);
	cr_assert_eq(s.n, 0, "reported once, from the arena: %s", s.clients);
	rt_node_close(n);

	/* A reboot: the arena is new, the log holds all three, with their clients. */
	cr_assert_eq(unlink(arena), 0);
	n = node_disk_as(dir, db, &h, "tcp://127.0.0.1:1");
	cr_assert_not(n->arena_reattached);
	cr_assert(rt_node_keeps_acked(n), "the log keeps what was acknowledged: \"kept\"");
	cr_assert_eq(rt_node_log_holds(n, held_cb, &s), 0);
	cr_assert_eq(s.n, 3);
	cr_assert_str_eq(s.clients, "0:site-1;1:;2:site-3;");
	cr_assert_float_eq(s.weight, 3.0, 1e-12);
	/* After the first join's recovery the journal has them: the log reports nothing more. */
	cr_assert_eq(rt_node_jobs_load(n), 0);
	cr_assert_eq(rt_node_recover(n), 0);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(rt_node_log_holds(n, held_cb, &s), 0);
	cr_assert_eq(s.n, 0);
	cr_assert_eq(n->m.wal_recovered, 3);
	rt_node_close(n);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/*
 * Which binary serves which config (docs/ARCHITECTURE.md, "The secure function binary"): a secure
 * job's unmasking shard never goes to a warm plain tributary-fn, but starts a tributary-fn-sa;
 * a plain config takes a plain function first, and a warm tributary-fn-sa when none is free.
 */
Test(runtime_node_fake, a_secure_shard_starts_tributary_fn_sa_and_plain_work_prefers_plain)
{
	struct rt_test_node t;
	struct fake f = { 0 };
	struct fn_config plain, shard;
	struct fn_params par;
	struct rt_fn *a, *b, *x;

	rt_test_node_open(&t);
	rt_fnset_set_ops(t.n->fns, &fake_ops, &f);
	memset(&par, 0, sizeof(par));
	memset(&plain, 0, sizeof(plain));
	plain.version = FN_ABI_VERSION;
	plain.kind = FN_MSG_CONFIG;
	plain.role = FN_ROLE_LEAF;
	plain.algorithm = FN_ALGO_SECAGG; /* a secure job's leaf folds: plain work */
	plain.expected = 1;
	shard = plain;
	shard.role = FN_ROLE_SHARD;
	cr_assert(!rt_fn_cfg_secure(&plain) && rt_fn_cfg_secure(&shard));
	cr_assert(!rt_fn_cfg_secure(&(struct fn_config){ .role = FN_ROLE_SHARD,
							 .algorithm = FN_ALGO_FEDAVG }),
		  "a robust shard is plain work");
	cr_assert_eq(rt__fn_acquire(t.n, &plain, &par, &a), 0);
	cr_assert_not(a->secure);
	a->state = RT_FN_WARM;
	a->idle_ns = 1;
	/* A warm plain function is there, yet the shard starts a secure one. */
	cr_assert_eq(rt__fn_acquire(t.n, &shard, &par, &b), 0);
	cr_assert_neq(b, a);
	cr_assert(b->secure);
	cr_assert_eq(f.nstarted, 2);
	b->state = RT_FN_WARM;
	b->idle_ns = 2; /* idle more recently than a */
	cr_assert_eq(rt__fn_acquire(t.n, &plain, &par, &x), 0);
	cr_assert_eq(x, a, "plain work went to the secure function while a plain one was warm");
	/* a is busy now: the warm secure one takes plain work rather than a new start. */
	cr_assert_eq(rt__fn_acquire(t.n, &plain, &par, &x), 0);
	cr_assert_eq(x, b);
	cr_assert_eq(f.nstarted, 2);
	/* Both busy, then a warm again: the next shard still starts a secure function. */
	a->state = RT_FN_WARM;
	cr_assert_eq(rt__fn_acquire(t.n, &shard, &par, &x), 0);
	cr_assert(x->secure && x != a && x != b);
	cr_assert_eq(f.nstarted, 3);
	b->state = RT_FN_WARM;
	cr_assert_eq(rt__fn_acquire(t.n, &shard, &par, &x), 0);
	cr_assert_eq(x, b, "a warm secure function is reused for the next shard");
	cr_assert_eq(f.nstarted, 3);
	rt_test_node_close(&t);
}
