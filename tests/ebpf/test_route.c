// SPDX-License-Identifier: MIT
/* Tests of the sk_msg router: the routing decision alone, then the loaded program on sockets. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "ebpf_decide.h"
#include "ebpf_route.h"
#include "ebpf_stats.h"
#include "shm_abi.h"
#include "trib_alloc.h"
#include "trib_time.h"

/* The router cuts and reads exactly what shm_abi.h defines. */
_Static_assert(EBPF_REC_SIZE == SHM_DESC_SIZE, "a router record is one descriptor");
_Static_assert(EBPF_DST_OFF == offsetof(struct shm_desc, dst), "the router reads shm_desc.dst");

#define WAIT_MS 5000 /* generous: only a broken router ever waits this long */

/* ---- helpers ---------------------------------------------------------------------------- */

/* A descriptor whose every field is derived from (dst, seq), so a reader can check it whole. */
static void make_desc(struct shm_desc *d, uint32_t dst, uint32_t seq)
{
	memset(d, 0, sizeof(*d));
	d->version = SHM_ABI_VERSION;
	d->kind = SHM_DESC_UPDATE;
	d->dst = dst;
	d->job = dst * 3u + 1u;
	d->round = seq / 7u;
	d->nsegs = 1;
	d->slot_off = (uint64_t)seq * 4096u + dst;
	d->segs_off = ~(uint64_t)seq;
	d->weight = (double)seq + 0.5;
	d->count = 1;
	d->seq = seq;
	d->reserved = (uint64_t)dst << 32 | seq;
}

static bool desc_ok(const struct shm_desc *d)
{
	struct shm_desc want;

	make_desc(&want, d->dst, d->seq);
	return !memcmp(d, &want, sizeof(want));
}

/* Read exactly @n bytes from @fd, waiting up to WAIT_MS for each part. Returns bytes read. */
static size_t recv_exact(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t k;

		if (poll(&p, 1, WAIT_MS) <= 0)
			break;
		k = recv(fd, (char *)buf + got, n - got, MSG_DONTWAIT);
		if (k < 0 && errno == EAGAIN)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	return got;
}

/* Nothing is queued on @fd right now (redirects are queued before sendmsg returns). */
static bool nothing_queued(int fd)
{
	char c;

	return recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == EAGAIN;
}

static void send_all(int fd, const void *buf, size_t n)
{
	cr_assert_eq(send(fd, buf, n, 0), (ssize_t)n, "send: %s", strerror(errno));
}

static bool have_bpf_caps(void)
{
	char line[256];
	unsigned long long eff = 0;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	fclose(f);
	/* CAP_BPF (39) and CAP_NET_ADMIN (12) load and attach; CAP_SYS_ADMIN (21) mounts bpffs. */
	return (eff >> 39 & 1) && (eff >> 12 & 1) && (eff >> 21 & 1);
}

static void instance_name(char *buf, size_t n)
{
	static int counter;

	snprintf(buf, n, "%d-t%d", (int)getpid(), counter++);
}

/* Open a router under a fresh instance name; skip only when the capability is missing. */
static struct ebpf_route *open_or_skip(char *inst, size_t inst_len)
{
	struct ebpf_route *r = NULL;
	char why[256];
	int rc;

	instance_name(inst, inst_len);
	rc = ebpf_route_open(inst, &r, why, sizeof(why));
	if (rc == -EPERM && !have_bpf_caps())
		cr_skip_test("sk_msg router not loadable: %s", why);
	cr_assert_eq(rc, 0, "ebpf_route_open: %s (%d)", why, rc);
	cr_assert_not_null(r);
	return r;
}

/* A gateway or function: the end in the map ([0]) and the runtime's end ([1]). */
struct end {
	int fd[2];
};

static void join(struct ebpf_route *r, uint32_t key, struct end *e)
{
	cr_assert_eq(ebpf_tcp_pair(e->fd), 0);
	cr_assert_eq(ebpf_route_add(r, key, e->fd[0]), 0, "add %u", key);
}

static void leave(struct end *e)
{
	close(e->fd[0]);
	close(e->fd[1]);
}

/* ---- the routing decision, no kernel -------------------------------------------------------- */

Test(ebpf_decide, runtime_key_passes)
{
	struct shm_desc d;
	__u32 dst = 99;

	make_desc(&d, SHM_DST_RUNTIME, 1);
	cr_expect_eq(ebpf_route_decide(&d, sizeof(d), &dst), EBPF_PASS);
	cr_expect_eq(dst, 0);
}

Test(ebpf_decide, function_id_redirects)
{
	struct shm_desc d;
	__u32 dst = 0;

	make_desc(&d, 42, 1);
	cr_expect_eq(ebpf_route_decide(&d, sizeof(d), &dst), EBPF_REDIRECT);
	cr_expect_eq(dst, 42);
}

Test(ebpf_decide, key_is_little_endian_at_offset_4)
{
	unsigned char rec[EBPF_REC_SIZE] = { 0 };
	__u32 dst = 0;

	rec[4] = 0x78;
	rec[5] = 0x56;
	rec[6] = 0x34;
	rec[7] = 0x12;
	cr_expect_eq(ebpf_route_decide(rec, sizeof(rec), &dst), EBPF_REDIRECT);
	cr_expect_eq(dst, 0x12345678u);
}

Test(ebpf_decide, gateway_key_bounces)
{
	struct shm_desc d;
	__u32 dst = 0;

	make_desc(&d, EBPF_KEY_GATEWAY, 1);
	cr_expect_eq(ebpf_route_decide(&d, sizeof(d), &dst), EBPF_BOUNCE);
	cr_expect_eq(dst, EBPF_KEY_GATEWAY);
}

Test(ebpf_decide, less_than_a_record_is_short)
{
	struct shm_desc d;
	__u32 dst = 7;

	make_desc(&d, 42, 1);
	cr_expect_eq(ebpf_route_decide(&d, EBPF_REC_SIZE - 1, &dst), EBPF_SHORT);
	cr_expect_eq(ebpf_route_decide(&d, 0, &dst), EBPF_SHORT);
	cr_expect_eq(dst, 7, "a short record leaves *dst alone");
}

/* ---- helpers that need no privilege ------------------------------------------------------ */

Test(ebpf_pair, connected_nodelay_cloexec)
{
	int fds[2], i, one, flags;
	socklen_t len;
	char c;

	cr_assert_eq(ebpf_tcp_pair(fds), 0);
	for (i = 0; i < 2; i++) {
		len = sizeof(one);
		one = 0;
		cr_expect_eq(getsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, &len), 0);
		cr_expect_eq(one, 1, "TCP_NODELAY on end %d", i);
		flags = fcntl(fds[i], F_GETFD);
		cr_expect(flags & FD_CLOEXEC, "close-on-exec on end %d", i);
	}
	cr_assert_eq(send(fds[0], "a", 1, 0), 1);
	cr_assert_eq(recv_exact(fds[1], &c, 1), 1);
	cr_expect_eq(c, 'a');
	cr_assert_eq(send(fds[1], "b", 1, 0), 1);
	cr_assert_eq(recv_exact(fds[0], &c, 1), 1);
	cr_expect_eq(c, 'b');
	close(fds[0]);
	close(fds[1]);
}

Test(ebpf_pair, stats_map_of_a_bad_fd_fails)
{
	struct ebpf_fn_stats *s = NULL;
	size_t len = 0;
	int pfd[2];

	cr_expect_eq(ebpf_stats_map(-1, &s, &len), -EBADF);
	cr_assert_eq(pipe(pfd), 0);
	cr_expect_lt(ebpf_stats_map(pfd[0], &s, &len), 0, "not a BPF map");
	close(pfd[0]);
	close(pfd[1]);
	cr_expect_null(s);
	ebpf_stats_unmap(NULL, 0);
}

Test(ebpf_pair, open_rejects_bad_instance_names)
{
	const char *bad[] = { "", "../x", "a/b", ".hidden", "sp ace" };
	struct ebpf_route *r = NULL;
	char why[128];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(ebpf_route_open(bad[i], &r, why, sizeof(why)), -EINVAL, "%s", bad[i]);
	cr_expect_eq(ebpf_route_open(NULL, &r, why, sizeof(why)), -EINVAL);
	cr_expect_null(r);
	ebpf_route_close(NULL);
}

/* ---- the loaded router (root, or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN) -------------------- */

Test(ebpf_route, loads_an_sk_msg_program)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	char inst[64], path[256];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	int fd;

	snprintf(path, sizeof(path), "%s/route_msg", ebpf_route_pin_dir(r));
	fd = bpf_obj_get(path);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	memset(&info, 0, sizeof(info));
	cr_assert_eq(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	cr_expect_eq(info.type, BPF_PROG_TYPE_SK_MSG);
	cr_expect_str_eq(info.name, "route_msg");
	close(fd);
	ebpf_route_close(r);
}

Test(ebpf_route, pins_are_private_and_go_at_close)
{
	const char *names[] = { "route_msg", "fn_socks", "sock_keys", "fn_stats", "route_global" };
	char inst[64], dir[PATH_MAX], path[PATH_MAX + 32];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	struct stat st;
	size_t i;

	snprintf(dir, sizeof(dir), "%s", ebpf_route_pin_dir(r));
	cr_assert_eq(stat(dir, &st), 0, "%s", dir);
	cr_expect(S_ISDIR(st.st_mode));
	cr_expect_eq(st.st_mode & 07777, 0700, "%s mode %o", dir, st.st_mode & 07777);
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		cr_assert_eq(stat(path, &st), 0, "%s", path);
		cr_expect_eq(st.st_mode & 07777, 0600, "%s mode %o", path, st.st_mode & 07777);
	}
	ebpf_route_close(r);
	cr_expect_eq(stat(dir, &st), -1);
	cr_expect_eq(errno, ENOENT, "%s is gone after close", dir);
}

/* "<root>/<owner>/<boot id>": the name a router of @owner claims first. */
static void first_dir(const char *owner, char *out, size_t len)
{
	char boot[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

	cr_assert_not_null(f);
	cr_assert_not_null(fgets(boot, sizeof(boot), f));
	fclose(f);
	boot[strcspn(boot, "\n")] = '\0';
	snprintf(out, len, "%s/%s/%s", EBPF_PIN_ROOT, owner, boot);
}

/* A directory with one pinned map in it and no holder, as a runtime that died leaves it. */
static void make_pin_dir(const char *dir)
{
	char path[PATH_MAX + 32], parent[PATH_MAX];
	int fd;

	snprintf(parent, sizeof(parent), "%s", dir);
	*strrchr(parent, '/') = '\0';
	cr_assert(mkdir(parent, 0700) == 0 || errno == EEXIST, "%s: %s", parent, strerror(errno));
	cr_assert_eq(mkdir(dir, 0700), 0, "%s: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/fn_stats", dir);
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "stale", 4, 4, 1, NULL);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bpf_obj_pin(fd, path), 0, "%s", path);
	close(fd);
}

static bool dir_exists(const char *dir)
{
	struct stat st;

	return stat(dir, &st) == 0;
}

static void remove_dir(const char *dir)
{
	char path[PATH_MAX + 32];

	snprintf(path, sizeof(path), "%s/fn_stats", dir);
	unlink(path);
	rmdir(dir);
	snprintf(path, sizeof(path), "%s", dir);
	*strrchr(path, '/') = '\0';
	rmdir(path);
}

/* Two routers of one owner (a rolling update on one host): each keeps its own directory. */
Test(ebpf_route, one_owner_twice_keeps_both_pins)
{
	char inst[64], first[PATH_MAX], path[PATH_MAX + 32];
	struct ebpf_route *r1 = open_or_skip(inst, sizeof(inst)), *r2 = NULL;
	struct stat st;

	first_dir(inst, first, sizeof(first));
	cr_expect_str_eq(ebpf_route_pin_dir(r1), first, "pinned by owner and boot id");
	cr_assert_eq(ebpf_route_open(inst, &r2, NULL, 0), 0);
	cr_expect_str_neq(ebpf_route_pin_dir(r2), first);
	cr_expect(!strncmp(ebpf_route_pin_dir(r2), first, strlen(first)) &&
		  !strcmp(ebpf_route_pin_dir(r2) + strlen(first), "-1"), "%s",
		  ebpf_route_pin_dir(r2));
	snprintf(path, sizeof(path), "%s/fn_socks", first);
	cr_expect_eq(stat(path, &st), 0, "the first router's pins are still there");
	ebpf_route_close(r2);
	cr_expect_eq(stat(path, &st), 0, "closing the second left the first's pins");
	ebpf_route_close(r1);
	cr_expect_not(dir_exists(first));
}

Test(ebpf_route, open_unwinds_without_memory)
{
	struct ebpf_route *r = NULL;
	char inst[64], why[256], first[PATH_MAX];

	instance_name(inst, sizeof(inst));
	trib_alloc_fail_after(0);
	cr_expect_eq(ebpf_route_open(inst, &r, why, sizeof(why)), -ENOMEM);
	trib_alloc_fail_after(-1);
	cr_expect_null(r);
	first_dir(inst, first, sizeof(first));
	cr_expect(!dir_exists(first));
}

/*
 * Pins whose router died (no one holds them), of this owner, go at open: any boot id.
 * Another owner's stay, held or not: only their own runtime may clean them.
 */
Test(ebpf_route, stale_pins_of_the_owner_go_at_open_others_stay)
{
	char inst[64], first[PATH_MAX], stale2[PATH_MAX + 8], oldboot[PATH_MAX], other[PATH_MAX];
	struct ebpf_route *r;

	instance_name(inst, sizeof(inst));
	first_dir(inst, first, sizeof(first));
	snprintf(stale2, sizeof(stale2), "%s-3", first);
	snprintf(oldboot, sizeof(oldboot), "%s/%s/00000000-0000-0000-0000-000000000000",
		 EBPF_PIN_ROOT, inst);
	snprintf(other, sizeof(other), "%s/other-%d/00000000-0000-0000-0000-000000000000",
		 EBPF_PIN_ROOT, (int)getpid());
	make_pin_dir(first);
	make_pin_dir(stale2);
	make_pin_dir(oldboot);
	make_pin_dir(other);

	r = NULL;
	if (ebpf_route_open(inst, &r, NULL, 0) == -EPERM && !have_bpf_caps())
		cr_skip_test("sk_msg router not loadable");
	cr_assert_not_null(r);
	cr_expect_str_eq(ebpf_route_pin_dir(r), first, "the dead router's name is claimed again");
	cr_expect_not(dir_exists(stale2), "stale %s removed", stale2);
	cr_expect_not(dir_exists(oldboot), "an earlier boot's %s removed", oldboot);
	cr_expect(dir_exists(other), "another owner's pins kept");
	remove_dir(other);
	ebpf_route_close(r);
}

/* The same across processes: a child's live pins are left alone; once it dies they go. */
Test(ebpf_route, a_live_process_keeps_its_pins_a_dead_ones_go)
{
	char inst[64], first[PATH_MAX], path[PATH_MAX + 32];
	struct ebpf_route *r1 = NULL, *r2 = NULL;
	int go[2], ready[2];
	pid_t child;
	char c = 0;

	instance_name(inst, sizeof(inst));
	first_dir(inst, first, sizeof(first));
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(ready), 0);
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		/* Opens, says so, waits, then dies without closing (as a crash does). */
		c = ebpf_route_open(inst, &r1, NULL, 0) ? 'x' : 'o';
		if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(2);
		_exit(0);
	}
	cr_assert_eq(read(ready[0], &c, 1), 1);
	if (c != 'o') {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		cr_skip_test("sk_msg router not loadable in the child");
	}
	cr_assert_eq(ebpf_route_open(inst, &r2, NULL, 0), 0);
	cr_expect_str_neq(ebpf_route_pin_dir(r2), first, "the live child's name is not taken");
	snprintf(path, sizeof(path), "%s/route_msg", first);
	cr_expect(dir_exists(path), "the live child's pins are kept");
	ebpf_route_close(r2);
	cr_assert_eq(write(go[1], "g", 1), 1);
	cr_assert_eq(waitpid(child, NULL, 0), child);
	cr_expect(dir_exists(path), "a dead router's pins stay until its owner starts again");
	cr_assert_eq(ebpf_route_open(inst, &r2, NULL, 0), 0);
	cr_expect_str_eq(ebpf_route_pin_dir(r2), first, "and then they are reclaimed");
	ebpf_route_close(r2);
	cr_expect_not(dir_exists(first));
	close(go[0]);
	close(go[1]);
	close(ready[0]);
	close(ready[1]);
}

Test(ebpf_route, descriptor_reaches_its_function_and_counts)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	const volatile struct ebpf_fn_stats *stats = ebpf_route_stats(r);
	struct ebpf_fn_stats *mine = NULL;
	struct ebpf_fn_sample smp;
	struct ebpf_global_stats g;
	struct shm_desc d, got;
	struct end gw, fx, fy;
	const uint32_t x = 4097, y = 12;
	uint64_t t0, t1;
	size_t len = 0;

	join(r, EBPF_KEY_GATEWAY, &gw);
	join(r, x, &fx);
	join(r, y, &fy);
	make_desc(&d, x, 5);
	t0 = trib_now_ns();
	send_all(gw.fd[0], &d, sizeof(d));
	cr_assert_eq(recv_exact(fx.fd[0], &got, sizeof(got)), sizeof(got));
	t1 = trib_now_ns();
	cr_expect_eq(memcmp(&got, &d, sizeof(d)), 0, "byte-exact at the destination");
	cr_expect(nothing_queued(fy.fd[0]), "the other function got nothing");
	cr_expect(nothing_queued(fx.fd[1]), "nothing went through TCP to x's runtime end");

	cr_expect_eq(stats[x & EBPF_FN_MASK].msgs_in, 1);
	cr_expect_eq(stats[x & EBPF_FN_MASK].bytes_in, EBPF_REC_SIZE);
	cr_expect_eq(stats[x & EBPF_FN_MASK].fn_id, x);
	cr_expect_geq(stats[x & EBPF_FN_MASK].last_ns, t0, "last_ns is CLOCK_MONOTONIC");
	cr_expect_leq(stats[x & EBPF_FN_MASK].last_ns, t1);
	cr_expect_eq(stats[y].msgs_in, 0);
	ebpf_route_global(r, &g);
	cr_expect_eq(g.redirects, 1);
	cr_expect_eq(g.passes + g.bounced + g.short_recs, 0);

	/* The function's side: map the counters through the fd it is given, take what it read. */
	cr_assert_eq(ebpf_stats_map(ebpf_route_stats_fd(r), &mine, &len), 0);
	cr_assert_eq(ebpf_stats_read(stats, x, &smp), 0);
	cr_expect_eq(smp.depth, 1, "delivered, not yet taken");
	ebpf_stats_take(mine, x, 1);
	cr_assert_eq(ebpf_stats_read(stats, x, &smp), 0);
	cr_expect_eq(smp.depth, 0);
	cr_expect_eq(smp.msgs_in, 1);
	cr_expect_eq(smp.bytes_in, EBPF_REC_SIZE);
	cr_expect_eq(ebpf_stats_read(stats, x + EBPF_MAX_FNS, &smp), -ENOENT,
		     "an id sharing the entry reads it as stale");
	ebpf_stats_unmap(mine, len);

	leave(&fy);
	leave(&fx);
	leave(&gw);
	ebpf_route_close(r);
}

Test(ebpf_route, batched_sendmsg_routes_each_record)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	const volatile struct ebpf_fn_stats *stats = ebpf_route_stats(r);
	const uint32_t ids[3] = { 3, 70, 555 };
	struct shm_desc d[3], got;
	struct iovec iov[3];
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 3 };
	struct end gw, f[3];
	int i;

	join(r, EBPF_KEY_GATEWAY, &gw);
	for (i = 0; i < 3; i++) {
		join(r, ids[i], &f[i]);
		make_desc(&d[i], ids[i], (uint32_t)i);
		iov[i].iov_base = &d[i];
		iov[i].iov_len = sizeof(d[i]);
	}
	cr_assert_eq(sendmsg(gw.fd[0], &mh, 0), (ssize_t)sizeof(d));
	for (i = 0; i < 3; i++) {
		cr_assert_eq(recv_exact(f[i].fd[0], &got, sizeof(got)), sizeof(got), "fn %u",
			     ids[i]);
		cr_expect_eq(memcmp(&got, &d[i], sizeof(got)), 0, "fn %u got its record", ids[i]);
		cr_expect(nothing_queued(f[i].fd[0]), "fn %u got only its record", ids[i]);
		cr_expect_eq(stats[ids[i]].msgs_in, 1);
		leave(&f[i]);
	}
	leave(&gw);
	ebpf_route_close(r);
}

Test(ebpf_route, runtime_key_passes_to_the_tcp_peer)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	struct shm_desc d[2], got;
	struct ebpf_global_stats g;
	struct end gw, fx;

	join(r, EBPF_KEY_GATEWAY, &gw);
	join(r, 9, &fx);
	/* After a redirect in the same sendmsg: the pass must not follow the redirect. */
	make_desc(&d[0], 9, 1);
	make_desc(&d[1], SHM_DST_RUNTIME, 2);
	send_all(gw.fd[0], d, sizeof(d));
	cr_assert_eq(recv_exact(fx.fd[0], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(memcmp(&got, &d[0], sizeof(got)), 0);
	cr_assert_eq(recv_exact(gw.fd[1], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(memcmp(&got, &d[1], sizeof(got)), 0, "dst 0 reached the gateway's peer");
	cr_expect(nothing_queued(fx.fd[0]));

	/* A function's result to the runtime: to the runtime's end of its own pair. */
	make_desc(&d[1], SHM_DST_RUNTIME, 3);
	send_all(fx.fd[0], &d[1], sizeof(d[1]));
	cr_assert_eq(recv_exact(fx.fd[1], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(memcmp(&got, &d[1], sizeof(got)), 0);

	ebpf_route_global(r, &g);
	cr_expect_eq(g.passes, 2);
	cr_expect_eq(g.redirects, 1);
	leave(&fx);
	leave(&gw);
	ebpf_route_close(r);
}

Test(ebpf_route, unknown_dst_bounces_to_the_senders_peer)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	struct shm_desc d[4], got;
	struct ebpf_global_stats g;
	struct end gw, fa, fb;

	join(r, EBPF_KEY_GATEWAY, &gw);
	join(r, 21, &fa);
	join(r, 22, &fb);
	make_desc(&d[0], 21, 1);
	make_desc(&d[1], 999, 2); /* never added */
	make_desc(&d[2], 22, 3);
	make_desc(&d[3], 21, 4);
	/* The sender sees a full write, and the records around the bounce are delivered. */
	cr_assert_eq(send(gw.fd[0], d, sizeof(d), 0), (ssize_t)sizeof(d));
	cr_assert_eq(recv_exact(fa.fd[0], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(memcmp(&got, &d[0], sizeof(got)), 0);
	cr_assert_eq(recv_exact(fa.fd[0], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(memcmp(&got, &d[3], sizeof(got)), 0);
	cr_assert_eq(recv_exact(fb.fd[0], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(memcmp(&got, &d[2], sizeof(got)), 0);
	cr_assert_eq(recv_exact(gw.fd[1], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(memcmp(&got, &d[1], sizeof(got)), 0, "the runtime gets the undeliverable one");
	cr_expect(nothing_queued(fa.fd[0]));
	ebpf_route_global(r, &g);
	cr_expect_eq(g.bounced, 1);
	cr_expect_eq(g.redirects, 3);

	/* The reserved gateway key is never a destination. */
	make_desc(&d[0], EBPF_KEY_GATEWAY, 5);
	send_all(gw.fd[0], &d[0], sizeof(d[0]));
	cr_assert_eq(recv_exact(gw.fd[1], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(got.seq, 5);

	/* And the socket keeps routing afterwards (an SK_DROP would have wedged it). */
	make_desc(&d[0], 22, 6);
	send_all(gw.fd[0], &d[0], sizeof(d[0]));
	cr_assert_eq(recv_exact(fb.fd[0], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(got.seq, 6);
	leave(&fb);
	leave(&fa);
	leave(&gw);
	ebpf_route_close(r);
}

Test(ebpf_route, a_function_that_left_gets_nothing)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	struct shm_desc d, got;
	struct ebpf_global_stats g;
	struct end gw, fa, fb;

	join(r, EBPF_KEY_GATEWAY, &gw);
	join(r, 31, &fa);
	join(r, 32, &fb);
	cr_expect_eq(ebpf_route_del(r, 31), 0);
	cr_expect_eq(ebpf_route_del(r, 31), -ENOENT);
	make_desc(&d, 31, 1);
	send_all(gw.fd[0], &d, sizeof(d));
	cr_assert_eq(recv_exact(gw.fd[1], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(got.seq, 1, "deleted: bounced");
	cr_expect(nothing_queued(fa.fd[0]));

	/* A function that exits: its socket leaves the map when its fds close. */
	leave(&fb);
	make_desc(&d, 32, 2);
	send_all(gw.fd[0], &d, sizeof(d));
	cr_assert_eq(recv_exact(gw.fd[1], &got, sizeof(got)), sizeof(got));
	cr_expect_eq(got.seq, 2, "closed: bounced");
	ebpf_route_global(r, &g);
	cr_expect_eq(g.bounced, 2);
	cr_expect_eq(g.redirects, 0);
	leave(&fa);
	leave(&gw);
	ebpf_route_close(r);
}

Test(ebpf_route, add_checks_its_arguments)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	struct end a, b;
	int us[2], lone;

	join(r, 40, &a);
	cr_assert_eq(ebpf_tcp_pair(b.fd), 0);
	cr_expect_eq(ebpf_route_add(r, SHM_DST_RUNTIME, b.fd[0]), -EINVAL);
	cr_expect_eq(ebpf_route_add(r, 40, b.fd[0]), -EEXIST);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, us), 0);
	cr_expect_eq(ebpf_route_add(r, 41, us[0]), -EPROTONOSUPPORT);
	lone = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(lone, 0);
	cr_expect_lt(ebpf_route_add(r, 42, lone), 0, "an unconnected socket cannot join");
	cr_expect_lt(ebpf_route_add(r, 43, -1), 0);
	close(lone);
	close(us[0]);
	close(us[1]);
	leave(&b);
	leave(&a);
	ebpf_route_close(r);
}

Test(ebpf_route, add_resets_the_counters_entry)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	const volatile struct ebpf_fn_stats *stats = ebpf_route_stats(r);
	struct ebpf_fn_stats *w = NULL;
	const uint32_t id = 5 + EBPF_MAX_FNS; /* shares entry 5 with an earlier, dead function */
	struct end f;
	size_t len;

	cr_assert_eq(ebpf_stats_map(ebpf_route_stats_fd(r), &w, &len), 0);
	w[5].msgs_in = 77;
	w[5].bytes_in = 77 * 64;
	w[5].taken = 70;
	w[5].last_ns = 1;
	w[5].fn_id = 5;
	join(r, id, &f);
	cr_expect_eq(stats[5].msgs_in, 0);
	cr_expect_eq(stats[5].bytes_in, 0);
	cr_expect_eq(stats[5].taken, 0);
	cr_expect_eq(stats[5].last_ns, 0);
	cr_expect_eq(stats[5].fn_id, id);
	ebpf_stats_unmap(w, len);
	leave(&f);
	ebpf_route_close(r);
}

Test(ebpf_route, stats_map_rejects_other_maps)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	struct ebpf_fn_stats *s = NULL;
	size_t len = 0;
	int fd;

	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "other", 4, sizeof(struct ebpf_fn_stats),
			    EBPF_MAX_FNS, NULL); /* right shape, not mmapable */
	cr_assert_geq(fd, 0);
	cr_expect_eq(ebpf_stats_map(fd, &s, &len), -EINVAL);
	cr_expect_null(s);
	close(fd);
	ebpf_route_close(r);
}

/*
 * The claim in route.bpf.c: sk_msg runs only for TCP sockets. A Unix stream
 * socket may join a SOCKHASH on 6.x kernels, but its sends bypass the program.
 */
Test(ebpf_route, unix_socket_bypasses_sk_msg)
{
	char inst[64], path[256];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	struct ebpf_global_stats g;
	struct shm_desc d, got;
	__u32 key = 60, val;
	struct end fx;
	int map, us[2], rc;

	join(r, 61, &fx);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, us), 0);
	snprintf(path, sizeof(path), "%s/fn_socks", ebpf_route_pin_dir(r));
	map = bpf_obj_get(path);
	cr_assert_geq(map, 0);
	val = (__u32)us[0];
	rc = bpf_map_update_elem(map, &key, &val, BPF_ANY);
	if (rc == 0) {
		make_desc(&d, 61, 1);
		send_all(us[0], &d, sizeof(d));
		cr_assert_eq(recv_exact(us[1], &got, sizeof(got)), sizeof(got));
		cr_expect_eq(memcmp(&got, &d, sizeof(got)), 0, "went to the Unix peer");
		cr_expect(nothing_queued(fx.fd[0]), "not redirected");
		ebpf_route_global(r, &g);
		cr_expect_eq(g.redirects + g.passes + g.bounced + g.short_recs, 0,
			     "the program never ran");
	} else {
		/* Older kernels refuse the socket outright: the claim holds all the more. */
		cr_expect_eq(rc, -EOPNOTSUPP);
	}
	close(map);
	close(us[0]);
	close(us[1]);
	leave(&fx);
	ebpf_route_close(r);
}

/* Per-destination state of the burst reader. */
struct sink {
	struct end e;
	uint32_t id;
	unsigned char part[EBPF_REC_SIZE]; /* a record being assembled */
	size_t have;			   /* bytes of it in part */
	uint32_t next_seq_idx;		   /* index into the seqs sent to this sink */
	uint32_t nrecs;			   /* records to expect */
	uint32_t *seqs;			   /* seqs sent to this sink, in send order */
};

#define BURST 10000
#define NSINKS 4

Test(ebpf_route, burst_keeps_record_boundaries)
{
	char inst[64];
	struct ebpf_route *r = open_or_skip(inst, sizeof(inst));
	static struct shm_desc out[BURST];
	static uint32_t seqs[NSINKS][BURST];
	struct sink s[NSINKS];
	struct ebpf_global_stats g;
	struct end gw, noise;
	unsigned int rnd = 12345;
	uint32_t i, sent = 0, done = 0;
	int k;

	join(r, EBPF_KEY_GATEWAY, &gw);
	cr_assert_eq(ebpf_tcp_pair(noise.fd), 0);
	for (k = 0; k < NSINKS; k++) {
		memset(&s[k], 0, sizeof(s[k]));
		s[k].id = 100u + (uint32_t)k * 1000u;
		s[k].seqs = seqs[k];
		join(r, s[k].id, &s[k].e);
	}
	for (i = 0; i < BURST; i++) {
		k = (int)(rand_r(&rnd) % NSINKS);
		make_desc(&out[i], s[k].id, i);
		s[k].seqs[s[k].nrecs++] = i;
	}
	/*
	 * Batches of 1..EBPF_MAX_BATCH records. Between them, odd-sized writes
	 * on an unrelated TCP socket of this thread move the offset in the
	 * thread's page fragment, so that records straddle two pages and the
	 * program has to linearise them (bpf_msg_pull_data).
	 */
	while (sent < BURST) {
		uint32_t n = 1 + (uint32_t)rand_r(&rnd) % EBPF_MAX_BATCH;
		char junk[97];
		size_t odd = 1 + (size_t)rand_r(&rnd) % sizeof(junk);
		ssize_t w;

		if (n > BURST - sent)
			n = BURST - sent;
		memset(junk, 'j', sizeof(junk));
		cr_assert_eq(send(noise.fd[0], junk, odd, 0), (ssize_t)odd);
		w = send(gw.fd[0], &out[sent], n * sizeof(out[0]), 0);
		cr_assert_eq(w, (ssize_t)(n * sizeof(out[0])), "send: %zd %s", w, strerror(errno));
		sent += n;
		/* Keep the noise socket from filling up. */
		while (recv(noise.fd[1], junk, sizeof(junk), MSG_DONTWAIT) > 0)
			;
	}

	/* Read in odd sizes and reassemble: every record whole, in send order per destination. */
	while (done < BURST) {
		struct pollfd p[NSINKS];
		int ready;

		for (k = 0; k < NSINKS; k++)
			p[k] = (struct pollfd){ .fd = s[k].e.fd[0], .events = POLLIN };
		ready = poll(p, NSINKS, WAIT_MS);
		cr_assert_gt(ready, 0, "stalled after %u of %u records", done, BURST);
		for (k = 0; k < NSINKS; k++) {
			unsigned char buf[1000];
			size_t want = 37 + (size_t)rand_r(&rnd) % (sizeof(buf) - 37), j;
			ssize_t n;

			if (!(p[k].revents & POLLIN))
				continue;
			n = recv(s[k].e.fd[0], buf, want, MSG_DONTWAIT);
			if (n < 0 && errno == EAGAIN)
				continue;
			cr_assert_gt(n, 0);
			for (j = 0; j < (size_t)n; j++) {
				struct shm_desc d;

				s[k].part[s[k].have++] = buf[j];
				if (s[k].have < EBPF_REC_SIZE)
					continue;
				memcpy(&d, s[k].part, sizeof(d));
				s[k].have = 0;
				cr_assert(desc_ok(&d), "record %u intact", d.seq);
				cr_assert_eq(d.dst, s[k].id, "record %u at its destination", d.seq);
				cr_assert_lt(s[k].next_seq_idx, s[k].nrecs);
				cr_assert_eq(d.seq, s[k].seqs[s[k].next_seq_idx], "in order");
				s[k].next_seq_idx++;
				done++;
			}
		}
	}
	for (k = 0; k < NSINKS; k++) {
		cr_expect_eq(s[k].have, 0);
		cr_expect(nothing_queued(s[k].e.fd[0]));
		cr_expect_eq(ebpf_route_stats(r)[s[k].id & EBPF_FN_MASK].msgs_in, s[k].nrecs);
		leave(&s[k].e);
	}
	ebpf_route_global(r, &g);
	cr_expect_eq(g.redirects, BURST);
	cr_expect_eq(g.bounced + g.short_recs + g.passes, 0);
	cr_log_info("burst: %llu of %u records were split across pages and linearised",
		    (unsigned long long)g.pulls, BURST);
	leave(&noise);
	leave(&gw);
	ebpf_route_close(r);
}
