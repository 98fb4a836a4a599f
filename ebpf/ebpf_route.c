// SPDX-License-Identifier: MIT
/* Loader of the sk_msg router (route.bpf.c): load, attach, pin; sockets in and out; counters. */
#include "ebpf_route.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

/*
 * The generated skeleton embeds the BPF object as one string literal, longer
 * than ISO C's 4095-byte minimum: fine for gcc and clang, so silence -Wpedantic
 * for that header only.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverlength-strings"
#include "route.skel.h"
#pragma GCC diagnostic pop

#include "ebpf_pins.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_sandbox.h"

#define BPFFS_MOUNT "/sys/fs/bpf"
#define INSTANCE_MAX 64

/* What loading the router takes: CAP_BPF (or CAP_SYS_ADMIN) and, for sk_msg, CAP_NET_ADMIN. */
static const int bpf_caps[] = { 39 /* CAP_BPF */, 12 /* CAP_NET_ADMIN */ };

/* Names of the pinned objects inside the router's pin directory (ebpf_pins.h). */
enum { PIN_PROG, PIN_SOCKS, PIN_KEYS, PIN_STATS, PIN_GLOBAL, PIN_COUNT };
static const char *const pin_names[PIN_COUNT] = { "route_msg", "fn_socks", "sock_keys", "fn_stats",
						  "route_global" };

struct ebpf_route {
	struct route *skel;		  /* the loaded object; owns every fd below */
	int fds[PIN_COUNT];		  /* program and map fds, indexed like pin_names */
	struct ebpf_fn_stats *stats;	  /* fn_stats, mmapped: EBPF_MAX_FNS entries */
	size_t stats_len;		  /* bytes mapped at stats */
	struct ebpf_global_stats *global; /* route_global, mmapped: one entry */
	size_t global_len;		  /* bytes mapped at global */
	struct ebpf_pin_dir pins;	  /* EBPF_PIN_ROOT/<owner>/<boot id>[-k], held */
};

/*
 * libbpf's messages. They go to trib_log at debug level; the first warning
 * since open began is kept so that a failed open can say why in one line.
 * Thread-local: two threads opening routers at once keep their own.
 */
static __thread char libbpf_first_warn[256];

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[512];
	int n;

	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return 0;
	while (n > 0 && (size_t)n < sizeof(line) && (line[n - 1] == '\n' || line[n - 1] == ' '))
		line[--n] = '\0';
	if (level == LIBBPF_WARN && !libbpf_first_warn[0] && line[0]) {
		size_t k = strnlen(line, sizeof(libbpf_first_warn) - 1);

		memcpy(libbpf_first_warn, line, k);
		libbpf_first_warn[k] = '\0';
	}
	trib_debug("%s", line);
	return n;
}

static void set_why(char *why, size_t why_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !why_len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
}

static bool instance_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > INSTANCE_MAX || s[0] == '.')
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
			return false;
	return true;
}

/* Mount bpffs at /sys/fs/bpf unless it is there already. Returns 0 or -errno. */
static int bpffs_ensure(void)
{
	struct statfs st;

	if (statfs(BPFFS_MOUNT, &st) == 0 && st.f_type == BPF_FS_MAGIC)
		return 0;
	if (mount("bpf", BPFFS_MOUNT, "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700"))
		return -errno;
	trib_info("ebpf: mounted bpffs at %s", BPFFS_MOUNT);
	return 0;
}

/* Pin program and maps in r->pins, each 0600. Returns 0 or -errno (pins made so far stay). */
static int pin_all(struct ebpf_route *r, char *why, size_t why_len)
{
	char path[PATH_MAX + 32];
	int i, err;

	for (i = 0; i < PIN_COUNT; i++) {
		snprintf(path, sizeof(path), "%s/%s", r->pins.path, pin_names[i]);
		err = bpf_obj_pin(r->fds[i], path);
		if (!err && chmod(path, 0600))
			err = -errno;
		if (err) {
			set_why(why, why_len, "pinning %s failed: %s", path, strerror(-err));
			return err;
		}
	}
	return 0;
}

static int map_array(int fd, size_t bytes, void **out, size_t *len)
{
	long page = sysconf(_SC_PAGESIZE);
	void *p;

	if (page <= 0)
		page = 4096;
	bytes = (bytes + (size_t)page - 1) / (size_t)page * (size_t)page;
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	*out = p;
	*len = bytes;
	return 0;
}

/*
 * Longer than 80 lines on purpose: it is the whole lifecycle, open -> load ->
 * attach -> map -> pin, with one unwind ladder in exact reverse order below
 * it (libbpf-bootstrap's shape). Split, the ladder would be split too, and
 * each half would have to know what the other had done.
 */
int ebpf_route_open(const char *owner, struct ebpf_route **out, char *why, size_t why_len)
{
	struct ebpf_route *r;
	void *p = NULL;
	int err;

	set_why(why, why_len, "no error");
	if (!owner || !instance_ok(owner)) {
		set_why(why, why_len, "bad router owner name");
		return -EINVAL;
	}
	libbpf_set_print(libbpf_print);
	libbpf_first_warn[0] = '\0';

	r = trib_calloc(1, sizeof(*r));
	if (!r) {
		set_why(why, why_len, "out of memory");
		return -ENOMEM;
	}
	r->pins.fd = -1;

	r->skel = route__open();
	if (!r->skel) {
		err = errno ? -errno : -EINVAL;
		set_why(why, why_len, "opening the BPF object failed: %s", strerror(-err));
		goto err_free;
	}
	err = route__load(r->skel);
	if (err) {
		/* The sandbox's refusals: name the seccomp filter or the missing capability. */
		if (err == -EPERM || err == -EACCES || err == -ENOSYS)
			trib_sandbox_why("bpf()", err, bpf_caps,
					 sizeof(bpf_caps) / sizeof(bpf_caps[0]), why, why_len);
		else
			set_why(why, why_len, "loading the sk_msg router failed: %s (%s)",
				strerror(-err),
				libbpf_first_warn[0] ? libbpf_first_warn : "no libbpf message");
		goto err_destroy;
	}
	r->fds[PIN_PROG] = bpf_program__fd(r->skel->progs.route_msg);
	r->fds[PIN_SOCKS] = bpf_map__fd(r->skel->maps.fn_socks);
	r->fds[PIN_KEYS] = bpf_map__fd(r->skel->maps.sock_keys);
	r->fds[PIN_STATS] = bpf_map__fd(r->skel->maps.fn_stats);
	r->fds[PIN_GLOBAL] = bpf_map__fd(r->skel->maps.route_global);

	/* Before any socket joins: only a socket joining after this gets the sendmsg hook. */
	err = bpf_prog_attach(r->fds[PIN_PROG], r->fds[PIN_SOCKS], BPF_SK_MSG_VERDICT, 0);
	if (err) {
		set_why(why, why_len, "attaching the sk_msg router to its sockhash failed: %s",
			strerror(-err));
		goto err_destroy;
	}

	err = map_array(r->fds[PIN_STATS], (size_t)EBPF_MAX_FNS * sizeof(struct ebpf_fn_stats), &p,
			&r->stats_len);
	if (err) {
		set_why(why, why_len, "mapping fn_stats failed: %s", strerror(-err));
		goto err_detach;
	}
	r->stats = p;
	err = map_array(r->fds[PIN_GLOBAL], sizeof(struct ebpf_global_stats), &p, &r->global_len);
	if (err) {
		set_why(why, why_len, "mapping route_global failed: %s", strerror(-err));
		goto err_unmap_stats;
	}
	r->global = p;

	err = bpffs_ensure();
	if (err) {
		set_why(why, why_len, "mounting bpffs at %s failed: %s", BPFFS_MOUNT,
			strerror(-err));
		goto err_unmap_global;
	}
	err = ebpf__pin_dir_claim(owner, &r->pins, why, why_len);
	if (err)
		goto err_unmap_global;
	err = pin_all(r, why, why_len);
	if (err)
		goto err_unpin;

	set_why(why, why_len, "ok");
	trib_debug("ebpf: sk_msg router loaded, pinned at %s", r->pins.path);
	*out = r;
	return 0;

err_unpin:
	ebpf__pin_dir_release(&r->pins);
err_unmap_global:
	munmap(r->global, r->global_len);
err_unmap_stats:
	munmap(r->stats, r->stats_len);
err_detach:
	bpf_prog_detach2(r->fds[PIN_PROG], r->fds[PIN_SOCKS], BPF_SK_MSG_VERDICT);
err_destroy:
	route__destroy(r->skel);
err_free:
	trib_free(r);
	return err;
}

/* 0 if @fd is a TCP socket (the only kind sk_msg runs for), else -errno. */
static int check_tcp(int fd)
{
	int domain = 0, proto = 0;
	socklen_t len = sizeof(domain);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len))
		return -errno;
	len = sizeof(proto);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len))
		return -errno;
	if ((domain != AF_INET && domain != AF_INET6) || proto != IPPROTO_TCP)
		return -EPROTONOSUPPORT;
	return 0;
}

int ebpf_route_add(struct ebpf_route *r, uint32_t key, int sock_fd)
{
	struct ebpf_fn_stats *s;
	__u32 k = key, v;
	int err;

	if (key == EBPF_KEY_RUNTIME || sock_fd < 0)
		return -EINVAL;
	err = check_tcp(sock_fd);
	if (err)
		return err;
	if (key != EBPF_KEY_GATEWAY) {
		/* A new function: nothing can be routed to it yet, so the entry is quiet. */
		s = &r->stats[key & EBPF_FN_MASK];
		__atomic_store_n(&s->msgs_in, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->bytes_in, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->last_ns, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->taken, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->fn_id, key, __ATOMIC_RELEASE);
	}
	/* The socket's own key first: the router needs it for the first record it passes on. */
	err = bpf_map_update_elem(r->fds[PIN_KEYS], &sock_fd, &k, BPF_ANY);
	if (err)
		return err;
	v = (__u32)sock_fd;
	return bpf_map_update_elem(r->fds[PIN_SOCKS], &k, &v, BPF_NOEXIST);
}

int ebpf_route_del(struct ebpf_route *r, uint32_t key)
{
	__u32 k = key;

	return bpf_map_delete_elem(r->fds[PIN_SOCKS], &k);
}

const char *ebpf_route_pin_dir(const struct ebpf_route *r)
{
	return r->pins.path;
}

int ebpf_route_stats_fd(const struct ebpf_route *r)
{
	return r->fds[PIN_STATS];
}

const volatile struct ebpf_fn_stats *ebpf_route_stats(const struct ebpf_route *r)
{
	return r->stats;
}

void ebpf_route_global(const struct ebpf_route *r, struct ebpf_global_stats *out)
{
	const struct ebpf_global_stats *g = r->global;

	memset(out, 0, sizeof(*out));
	out->redirects = __atomic_load_n(&g->redirects, __ATOMIC_RELAXED);
	out->passes = __atomic_load_n(&g->passes, __ATOMIC_RELAXED);
	out->bounced = __atomic_load_n(&g->bounced, __ATOMIC_RELAXED);
	out->short_recs = __atomic_load_n(&g->short_recs, __ATOMIC_RELAXED);
	out->pulls = __atomic_load_n(&g->pulls, __ATOMIC_RELAXED);
	out->runs = __atomic_load_n(&g->runs, __ATOMIC_RELAXED);
}

void ebpf_route_close(struct ebpf_route *r)
{
	if (!r)
		return;
	/*
	 * Sockets still in the map keep the program until the map is freed
	 * (route__destroy drops the last reference once the pins are gone);
	 * then they leave it and fall back to plain TCP.
	 */
	bpf_prog_detach2(r->fds[PIN_PROG], r->fds[PIN_SOCKS], BPF_SK_MSG_VERDICT);
	munmap(r->global, r->global_len);
	munmap(r->stats, r->stats_len);
	ebpf__pin_dir_release(&r->pins);
	route__destroy(r->skel);
	trib_free(r);
}

int ebpf_tcp_pair(int fds[2])
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct sockaddr_in local, peer;
	socklen_t len;
	int lfd, cfd, afd = -1, one = 1, tries, err;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	len = sizeof(addr);
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) || listen(lfd, 8) ||
	    getsockname(lfd, (struct sockaddr *)&addr, &len)) {
		err = -errno;
		goto err_close_listener;
	}
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd < 0) {
		err = -errno;
		goto err_close_listener;
	}
	len = sizeof(local);
	if (connect(cfd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    getsockname(cfd, (struct sockaddr *)&local, &len)) {
		err = -errno;
		goto err_close_client;
	}
	/* Anyone on the host may connect to the listener too: accept only our own client. */
	for (tries = 0; tries < 8; tries++) {
		afd = accept4(lfd, (struct sockaddr *)&peer, &(socklen_t){ sizeof(peer) },
			      SOCK_CLOEXEC);
		if (afd < 0) {
			err = -errno;
			goto err_close_client;
		}
		if (peer.sin_port == local.sin_port &&
		    peer.sin_addr.s_addr == local.sin_addr.s_addr)
			break;
		close(afd);
		afd = -1;
	}
	if (afd < 0) {
		err = -ECONNREFUSED;
		goto err_close_client;
	}
	if (setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    setsockopt(afd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
		err = -errno;
		goto err_close_accepted;
	}
	close(lfd);
	fds[0] = cfd;
	fds[1] = afd;
	return 0;

err_close_accepted:
	close(afd);
err_close_client:
	close(cfd);
err_close_listener:
	close(lfd);
	return err;
}
