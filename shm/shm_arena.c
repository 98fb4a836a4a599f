// SPDX-License-Identifier: MIT
/* The node's huge-page arena: memfd and huge-page reservation, attach, and the slot allocator. */
#include "shm_arena.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "trib_alloc.h"
#include "trib_log.h"

/* As in <linux/memfd.h>; glibc's <sys/mman.h> lacks it: log2(2 MiB) << MFD_HUGE_SHIFT. */
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26)
#endif

/*
 * The 2 MiB pool's own counters. /proc/sys/vm/nr_hugepages and the HugePages_
 * lines of /proc/meminfo are the same numbers when 2 MiB is the default huge
 * page size, but count 1 GiB pages on a host booted with default_hugepagesz=1G.
 */
#define HUGE_2M_DIR "/sys/kernel/mm/hugepages/hugepages-2048kB/"
#define NR_HUGEPAGES_PATH HUGE_2M_DIR "nr_hugepages"
#define FREE_HUGEPAGES_PATH HUGE_2M_DIR "free_hugepages"
#define RESV_HUGEPAGES_PATH HUGE_2M_DIR "resv_hugepages"

/* Chunk indexes and run lengths stay below 2^31 so that sums of two never wrap. */
#define ARENA_MAX_CHUNKS (1u << 31)
#define ARENA_MAX_SLOT_BYTES ((uint64_t)ARENA_MAX_CHUNKS * SHM_CHUNK)

struct shm_arena {
	struct shm_arena_pub pub;  /* first: shm_arena_ptr() reads it through a cast */
	struct shm_arena_hdr *hdr; /* == pub.base */
	uint64_t *bitmap;          /* hdr->bitmap_off in this mapping */
	uint32_t *runlen;          /* hdr->runlen_off in this mapping */
	int fd;                    /* the memfd, owned */
	bool huge;                 /* backed by hugetlbfs */
	long reserved_pages;       /* huge pages this handle added to nr_hugepages */
	pid_t creator;             /* the process that added them: only it gives them back */
};

/* Where things go in an arena whose slot area is slot_bytes long. */
struct arena_layout {
	uint64_t nchunks;
	uint64_t bitmap_off;
	uint64_t runlen_off;
	uint64_t data_off;
	uint64_t total;
};

static uint64_t round_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

static void arena_layout(uint64_t slot_bytes, struct arena_layout *l)
{
	l->nchunks = slot_bytes / SHM_CHUNK;
	l->bitmap_off = sizeof(struct shm_arena_hdr);
	l->runlen_off = l->bitmap_off + (l->nchunks + 63) / 64 * sizeof(uint64_t);
	l->data_off = round_up(l->runlen_off + l->nchunks * sizeof(uint32_t), SHM_HUGE_PAGE);
	l->total = l->data_off + slot_bytes;
}

/* ---- huge-page bookkeeping ---- */

static int read_long(const char *path, long *v)
{
	FILE *f = fopen(path, "re");
	int rc = 0;

	if (!f)
		return -errno;
	if (fscanf(f, "%ld", v) != 1)
		rc = -EIO;
	fclose(f);
	return rc;
}

static int write_long(const char *path, long v)
{
	char buf[32];
	int fd, n, rc = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%ld\n", v);
	if (write(fd, buf, (size_t)n) != n)
		rc = errno ? -errno : -EIO;
	if (close(fd) && !rc)
		rc = -errno;
	return rc;
}

/* 2 MiB pages free for a new mapping: free_hugepages less those already promised (resv). */
static int hugepages_avail(long *avail)
{
	long free_pages, resv;
	int rc;

	rc = read_long(FREE_HUGEPAGES_PATH, &free_pages);
	if (!rc)
		rc = read_long(RESV_HUGEPAGES_PATH, &resv);
	if (!rc)
		*avail = free_pages - resv;
	return rc;
}

/* Take @pages back out of nr_hugepages; a failure leaves them reserved, which is only waste. */
static void hugepages_release(long pages)
{
	long cur;
	int rc;

	if (pages <= 0)
		return;
	rc = read_long(NR_HUGEPAGES_PATH, &cur);
	if (!rc)
		rc = write_long(NR_HUGEPAGES_PATH, cur > pages ? cur - pages : 0);
	if (rc)
		trib_warn("arena: could not give back %ld huge pages to %s: %s", pages,
			  NR_HUGEPAGES_PATH, strerror(-rc));
}

/*
 * Raise nr_hugepages so that @npages are free for us. *@added gets how many
 * pages the kernel actually added (the caller gives them back). On failure
 * nothing stays added and @why says what went wrong.
 */
static int hugepages_reserve(long npages, long *added, char *why, size_t why_len)
{
	long avail, cur, now, need;
	int rc;

	*added = 0;
	rc = hugepages_avail(&avail);
	if (rc) {
		snprintf(why, why_len, "cannot read %s: %s", FREE_HUGEPAGES_PATH, strerror(-rc));
		return rc;
	}
	need = npages - avail;
	if (need <= 0) {
		snprintf(why, why_len,
			 "mmap found no huge pages although %ld are free (hugetlb cgroup limit?)",
			 avail);
		return -ENOMEM;
	}
	rc = read_long(NR_HUGEPAGES_PATH, &cur);
	if (!rc)
		rc = write_long(NR_HUGEPAGES_PATH, cur + need);
	if (rc) {
		snprintf(why, why_len, "cannot raise %s by %ld: %s", NR_HUGEPAGES_PATH, need,
			 strerror(-rc));
		return rc;
	}
	/* The kernel may grant fewer than asked when memory is fragmented. */
	if (!read_long(NR_HUGEPAGES_PATH, &now) && now > cur)
		*added = now - cur;
	rc = hugepages_avail(&avail);
	if (rc || avail < npages) {
		snprintf(why, why_len,
			 "asked the kernel for %ld more huge pages, got %ld (%ld of %ld free)",
			 need, *added, rc ? -1 : avail, npages);
		hugepages_release(*added);
		*added = 0;
		return -ENOMEM;
	}
	return 0;
}

/* ---- creating and attaching ---- */

/* Seals are a safety net against a peer truncating the memfd under us (SIGBUS); best effort. */
static void arena_seal(int fd)
{
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		trib_debug("arena: memfd not sealed: %s", strerror(errno));
}

/*
 * Map a hugetlb memfd of @l->total bytes into @a, reserving pages if allowed.
 * On failure nothing is left open or reserved and @why names the reason.
 */
static int arena_map_huge(struct shm_arena *a, const struct arena_layout *l, unsigned flags,
			  char *why, size_t why_len)
{
	long npages = (long)(l->total / SHM_HUGE_PAGE), avail = -1, added = 0;
	void *base;
	int fd, rc;

	fd = memfd_create("tributary-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB |
						     MFD_HUGE_2MB);
	if (fd < 0) {
		rc = -errno;
		snprintf(why, why_len, "hugetlb memfd unsupported: %s", strerror(-rc));
		return rc;
	}
	if (ftruncate(fd, (off_t)l->total)) {
		rc = -errno;
		snprintf(why, why_len, "ftruncate of hugetlb memfd: %s", strerror(-rc));
		goto err_close;
	}
	arena_seal(fd);
	base = mmap(NULL, l->total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (base == MAP_FAILED && errno == ENOMEM) {
		hugepages_avail(&avail);
		if (flags & SHM_ARENA_NO_RESERVE) {
			snprintf(why, why_len,
				 "%ld huge pages needed, %ld free, and SHM_ARENA_NO_RESERVE",
				 npages, avail);
		} else if (geteuid() != 0) {
			snprintf(why, why_len,
				 "%ld huge pages needed, %ld free, and not root to reserve more",
				 npages, avail);
		} else if (!hugepages_reserve(npages, &added, why, why_len)) {
			base = mmap(NULL, l->total, PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_POPULATE, fd, 0);
			if (base == MAP_FAILED)
				snprintf(why, why_len, "mmap after reserving %ld huge pages: %s",
					 added, strerror(errno));
		}
	} else if (base == MAP_FAILED) {
		snprintf(why, why_len, "mmap of hugetlb memfd: %s", strerror(errno));
	}
	if (base == MAP_FAILED) {
		rc = -ENOMEM;
		goto err_release;
	}
	if (added)
		trib_info("arena: reserved %ld huge pages in %s", added, NR_HUGEPAGES_PATH);
	a->pub.base = base;
	a->fd = fd;
	a->huge = true;
	a->reserved_pages = added;
	return 0;

err_release:
	hugepages_release(added);
err_close:
	close(fd);
	return rc;
}

static int arena_map_normal(struct shm_arena *a, const struct arena_layout *l)
{
	void *base;
	int fd, rc;

	fd = memfd_create("tributary-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)l->total)) {
		rc = -errno;
		goto err_close;
	}
	arena_seal(fd);
	base = mmap(NULL, l->total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto err_close;
	}
	a->pub.base = base;
	a->fd = fd;
	a->huge = false;
	return 0;

err_close:
	close(fd);
	return rc;
}

static void arena_bind(struct shm_arena *a, size_t size)
{
	a->pub.size = size;
	a->hdr = (struct shm_arena_hdr *)(void *)a->pub.base;
	a->bitmap = (uint64_t *)(void *)(a->pub.base + a->hdr->bitmap_off);
	a->runlen = (uint32_t *)(void *)(a->pub.base + a->hdr->runlen_off);
}

/* The memfd starts zeroed, so the bitmap, run lengths and counters start empty. */
static int arena_init_hdr(struct shm_arena *a, const struct arena_layout *l)
{
	struct shm_arena_hdr *h = (struct shm_arena_hdr *)(void *)a->pub.base;
	pthread_mutexattr_t attr;
	int rc;

	h->version = SHM_ABI_VERSION;
	h->hdr_bytes = sizeof(*h);
	h->total_bytes = l->total;
	h->data_off = l->data_off;
	h->chunk_bytes = SHM_CHUNK;
	h->bitmap_off = l->bitmap_off;
	h->runlen_off = l->runlen_off;
	h->nchunks = (uint32_t)l->nchunks;
	h->flags = a->huge ? SHM_ARENA_HDR_HUGE : 0;

	rc = pthread_mutexattr_init(&attr);
	if (rc)
		return -rc;
	rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	if (!rc)
		rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	if (!rc)
		rc = pthread_mutex_init(&h->lock.mutex, &attr);
	pthread_mutexattr_destroy(&attr);
	if (rc)
		return -rc;
	/* The magic goes last: an arena with a magic is a complete one. */
	atomic_thread_fence(memory_order_release);
	h->magic = SHM_ARENA_MAGIC;
	arena_bind(a, l->total);
	return 0;
}

/* On success *out is owned by the caller (shm_arena_destroy()). */
int shm_arena_create(size_t size, unsigned flags, struct shm_arena **out)
{
	struct arena_layout l;
	struct shm_arena *a;
	char why[256];
	int rc;

	if (!size || size > ARENA_MAX_SLOT_BYTES)
		return -EINVAL;
	arena_layout(round_up(size, SHM_HUGE_PAGE), &l);

	a = trib_calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->fd = -1;
	a->creator = getpid();

	if (flags & SHM_ARENA_NO_HUGE) {
		rc = arena_map_normal(a, &l);
	} else {
		why[0] = '\0';
		rc = arena_map_huge(a, &l, flags, why, sizeof(why));
		if (rc) {
			/* The one warning of a fallback (its reason is in why). */
			trib_warn("arena: %llu MiB on normal pages, not 2 MiB huge pages: %s",
				  (unsigned long long)(l.total >> 20), why);
			rc = arena_map_normal(a, &l);
		}
	}
	if (rc)
		goto err_free;
	rc = arena_init_hdr(a, &l);
	if (rc)
		goto err_unmap;
	*out = a;
	return 0;

err_unmap:
	munmap(a->pub.base, l.total);
	close(a->fd);
	hugepages_release(a->reserved_pages);
err_free:
	trib_free(a);
	return rc;
}

static bool arena_hdr_valid(const struct shm_arena_hdr *h, uint64_t size)
{
	struct arena_layout l;

	if (h->magic != SHM_ARENA_MAGIC || h->version != SHM_ABI_VERSION ||
	    h->hdr_bytes != sizeof(*h) || h->chunk_bytes != SHM_CHUNK || h->total_bytes != size)
		return false;
	if (h->nchunks == 0 || h->nchunks > ARENA_MAX_CHUNKS)
		return false;
	arena_layout((uint64_t)h->nchunks * SHM_CHUNK, &l);
	return l.bitmap_off == h->bitmap_off && l.runlen_off == h->runlen_off &&
	       l.data_off == h->data_off && l.total == size;
}

/* Takes ownership of fd (closed on failure); on success *out is the caller's. */
int shm_arena_attach(int fd, struct shm_arena **out)
{
	struct shm_arena *a;
	struct statfs sfs;
	struct stat st;
	bool huge;
	void *base;
	int rc;

	if (fd < 0)
		return -EBADF;
	if (fstat(fd, &st) || fstatfs(fd, &sfs)) {
		rc = -errno;
		goto err_close;
	}
	if (st.st_size < (off_t)SHM_HUGE_PAGE || st.st_size % (off_t)SHM_HUGE_PAGE) {
		rc = -EBADMSG;
		goto err_close;
	}
	huge = sfs.f_type == HUGETLBFS_MAGIC;
	a = trib_calloc(1, sizeof(*a));
	if (!a) {
		rc = -ENOMEM;
		goto err_close;
	}
	/*
	 * No MAP_POPULATE: a function touches only the slots it folds, and
	 * mapping a whole 2 GiB arena up front made every cold start ~14 ms
	 * (bench/lifecycle); a 2 MiB page faults in once, on first touch.
	 */
	(void)huge;
	base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto err_free;
	}
	if (!arena_hdr_valid(base, (uint64_t)st.st_size)) {
		rc = -EBADMSG;
		goto err_unmap;
	}
	a->pub.base = base;
	a->fd = fd;
	a->huge = huge;
	a->creator = 0;
	arena_bind(a, (size_t)st.st_size);
	*out = a;
	return 0;

err_unmap:
	munmap(base, (size_t)st.st_size);
err_free:
	trib_free(a);
err_close:
	close(fd);
	return rc;
}

void shm_arena_destroy(struct shm_arena *a)
{
	if (!a)
		return;
	munmap(a->pub.base, a->pub.size);
	close(a->fd);
	/* A forked child holding a copy of the creator's handle must not give pages back. */
	if (a->reserved_pages && a->creator == getpid())
		hugepages_release(a->reserved_pages);
	trib_free(a);
}

int shm_arena_fd(const struct shm_arena *a)
{
	return a->fd;
}

void *shm_arena_base(const struct shm_arena *a)
{
	return a->pub.base;
}

size_t shm_arena_size(const struct shm_arena *a)
{
	return a->pub.size;
}

bool shm_arena_is_huge(const struct shm_arena *a)
{
	return a->huge;
}

/* ---- the slot allocator ---- */

/*
 * State, all in the header region and guarded by the robust mutex:
 *   runlen[i]  chunks in the allocation that starts at chunk i, 0 if none starts there;
 *   bitmap     bit i set when chunk i belongs to some allocation;
 *   counters   used_chunks, live_slots, cursor;
 *   intent     the update in flight.
 *
 * runlen[] is the source of truth; the bitmap and the counters are derived
 * from it and can always be rebuilt. Every update therefore writes, in order:
 *   alloc [s, s+n):  1 intent = {ALLOC, s, n}   2 runlen[s] = n   3 set bits
 *                    4 counters                  5 intent = NONE
 *   free at s:       1 intent = {FREE, s, n}     2 clear bits      3 runlen[s] = 0
 *                    4 counters                  5 intent = NONE
 * so that a set bit is always covered by a recorded run: a process killed
 * between any two steps leaves a state in which rebuilding from runlen[] never
 * hands out a chunk that a live allocation uses. The intent then says which
 * single run was half-done; recovery drops it (an alloc whose offset never
 * reached its dead caller is rolled back, a free is rolled forward) and
 * rebuilds the rest. The steps are separated by compiler fences only: a killed
 * process's completed stores are in coherent memory already, and the next
 * owner acquires the mutex, which orders them for it.
 */

#define ALL_STEPS UINT_MAX

static void step_fence(void)
{
	atomic_signal_fence(memory_order_seq_cst);
}

static void bits_assign(uint64_t *bm, uint32_t s, uint32_t n, bool set)
{
	while (n) {
		uint32_t bit = s % 64, take = 64 - bit;
		uint64_t mask;

		if (take > n)
			take = n;
		mask = (take == 64 ? ~0ull : (1ull << take) - 1) << bit;
		if (set)
			bm[s / 64] |= mask;
		else
			bm[s / 64] &= ~mask;
		s += take;
		n -= take;
	}
}

/* First run of @n clear bits that starts in [from, to) and ends by @to. */
static bool find_run(const uint64_t *bm, uint32_t from, uint32_t to, uint32_t n, uint32_t *start)
{
	uint32_t i = from, run = 0, run_start = from;

	while (i < to) {
		uint32_t bit = i % 64, span = 64 - bit;
		uint64_t w = bm[i / 64] >> bit;

		if (span > to - i)
			span = to - i;
		if (span < 64)
			w &= (1ull << span) - 1;
		if (w & 1) {
			/* Skip the used chunks; upper bits past span are clear so ~w != 0 then. */
			uint32_t ones = ~w ? (uint32_t)__builtin_ctzll(~w) : 64;

			i += ones < span ? ones : span;
			run = 0;
			run_start = i;
		} else {
			uint32_t zeros = w ? (uint32_t)__builtin_ctzll(w) : span;

			if (run + zeros >= n) {
				*start = run_start;
				return true;
			}
			run += zeros;
			i += zeros;
		}
	}
	return false;
}

/* Rebuild the derived state after a lock owner died; see the comment above. */
static void arena_recover(struct shm_arena *a)
{
	struct shm_arena_hdr *h = a->hdr;
	uint32_t op = h->intent.op, start = h->intent.start, nch = h->nchunks;
	uint64_t used = 0;
	uint32_t live = 0, i;

	if ((op == SHM_ARENA_OP_ALLOC || op == SHM_ARENA_OP_FREE) && start < nch)
		a->runlen[start] = 0;
	memset(a->bitmap, 0, (nch + 63) / 64 * sizeof(uint64_t));
	for (i = 0; i < nch;) {
		uint32_t len = a->runlen[i];

		if (!len) {
			i++;
			continue;
		}
		if (len > nch - i) {
			/* Cannot happen by the write order; drop rather than trust it. */
			a->runlen[i] = 0;
			i++;
			continue;
		}
		bits_assign(a->bitmap, i, len, true);
		used += len;
		live++;
		/* Starts inside a run are stale by the same argument; clear them. */
		for (uint32_t j = i + 1; j < i + len; j++)
			a->runlen[j] = 0;
		i += len;
	}
	h->used_chunks = used;
	h->live_slots = live;
	if (h->cursor >= nch)
		h->cursor = 0;
	h->intent.op = SHM_ARENA_OP_NONE;
	h->recoveries++;
	trib_warn("arena: a process died holding the slot allocator lock (update in flight: %s); "
		  "rebuilt: %u live slots, %llu chunks used",
		  op == SHM_ARENA_OP_ALLOC ? "alloc, rolled back" :
		  op == SHM_ARENA_OP_FREE  ? "free, completed" :
					     "none",
		  live, (unsigned long long)used);
}

static int arena_lock(struct shm_arena *a)
{
	int rc = pthread_mutex_lock(&a->hdr->lock.mutex);

	if (rc == EOWNERDEAD) {
		/* If we die here too, the next locker gets EOWNERDEAD and recovers again. */
		arena_recover(a);
		rc = pthread_mutex_consistent(&a->hdr->lock.mutex);
	}
	return -rc;
}

static void arena_unlock(struct shm_arena *a)
{
	pthread_mutex_unlock(&a->hdr->lock.mutex);
}

static void intent_open(struct shm_arena_hdr *h, uint32_t op, uint32_t start, uint32_t len)
{
	h->intent.start = start;
	h->intent.len = len;
	step_fence();
	h->intent.op = op;
}

/* Runs the first @steps steps (all in production; fewer from a test hook). */
static bool do_alloc(struct shm_arena *a, uint32_t s, uint32_t n, unsigned steps)
{
	struct shm_arena_hdr *h = a->hdr;

	if (steps < 1)
		return false;
	intent_open(h, SHM_ARENA_OP_ALLOC, s, n);
	step_fence();
	if (steps < 2)
		return false;
	a->runlen[s] = n;
	step_fence();
	if (steps < 3)
		return false;
	bits_assign(a->bitmap, s, n, true);
	step_fence();
	if (steps < 4)
		return false;
	h->used_chunks += n;
	h->live_slots++;
	h->cursor = s + n < h->nchunks ? s + n : 0;
	step_fence();
	if (steps < 5)
		return false;
	h->intent.op = SHM_ARENA_OP_NONE;
	return true;
}

static bool do_free(struct shm_arena *a, uint32_t s, unsigned steps)
{
	struct shm_arena_hdr *h = a->hdr;
	uint32_t n = a->runlen[s];

	if (steps < 1)
		return false;
	intent_open(h, SHM_ARENA_OP_FREE, s, n);
	step_fence();
	if (steps < 2)
		return false;
	bits_assign(a->bitmap, s, n, false);
	step_fence();
	if (steps < 3)
		return false;
	a->runlen[s] = 0;
	step_fence();
	if (steps < 4)
		return false;
	h->used_chunks -= n;
	h->live_slots--;
	step_fence();
	if (steps < 5)
		return false;
	h->intent.op = SHM_ARENA_OP_NONE;
	return true;
}

static int chunks_for(const struct shm_arena *a, size_t len, uint32_t *n)
{
	if (!len || len > (uint64_t)a->hdr->nchunks * SHM_CHUNK)
		return -EINVAL;
	*n = (uint32_t)((len + SHM_CHUNK - 1) / SHM_CHUNK);
	return 0;
}

/* Under the lock: next-fit from the cursor, then first-fit from the start. */
static bool arena_find(struct shm_arena *a, uint32_t n, uint32_t *s)
{
	uint32_t nch = a->hdr->nchunks, cur = a->hdr->cursor < nch ? a->hdr->cursor : 0;

	return find_run(a->bitmap, cur, nch, n, s) || (cur && find_run(a->bitmap, 0, nch, n, s));
}

static int slot_alloc(struct shm_arena *a, size_t len, unsigned steps, uint64_t *off)
{
	uint32_t n, s;
	int rc;

	rc = chunks_for(a, len, &n);
	if (rc)
		return rc;
	rc = arena_lock(a);
	if (rc)
		return rc;
	if (!arena_find(a, n, &s)) {
		arena_unlock(a);
		return -ENOSPC;
	}
	do_alloc(a, s, n, steps);
	if (steps != ALL_STEPS)
		return 0; /* a test hook: return with the lock held, as if killed */
	arena_unlock(a);
	*off = a->hdr->data_off + (uint64_t)s * SHM_CHUNK;
	return 0;
}

int shm_slot_alloc(struct shm_arena *a, size_t len, uint64_t *off)
{
	return slot_alloc(a, len, ALL_STEPS, off);
}

/* Chunk index of @off if it can start an allocation; the lock is not needed. */
static int chunk_of(const struct shm_arena *a, uint64_t off, uint32_t *idx)
{
	const struct shm_arena_hdr *h = a->hdr;

	if (off < h->data_off || (off - h->data_off) % SHM_CHUNK ||
	    (off - h->data_off) / SHM_CHUNK >= h->nchunks)
		return -EINVAL;
	*idx = (uint32_t)((off - h->data_off) / SHM_CHUNK);
	return 0;
}

static int slot_free(struct shm_arena *a, uint64_t off, unsigned steps)
{
	uint32_t s;
	int rc;

	rc = chunk_of(a, off, &s);
	if (rc)
		return rc;
	rc = arena_lock(a);
	if (rc)
		return rc;
	if (!a->runlen[s]) {
		arena_unlock(a);
		return -EINVAL;
	}
	do_free(a, s, steps);
	if (steps != ALL_STEPS)
		return 0; /* a test hook: return with the lock held, as if killed */
	arena_unlock(a);
	return 0;
}

int shm_slot_free(struct shm_arena *a, uint64_t off)
{
	return slot_free(a, off, ALL_STEPS);
}

size_t shm_slot_len(struct shm_arena *a, uint64_t off)
{
	uint32_t s, n;

	if (chunk_of(a, off, &s) || arena_lock(a))
		return 0;
	n = a->runlen[s];
	arena_unlock(a);
	return (size_t)n * SHM_CHUNK;
}

void shm_arena_usage(const struct shm_arena *a, uint64_t *used_bytes, uint64_t *total_bytes,
		     uint32_t *live_slots)
{
	/* The lock lives in shared memory, not in the (const) handle. */
	struct shm_arena *m = (struct shm_arena *)a;
	bool locked = !arena_lock(m);

	if (used_bytes)
		*used_bytes = a->hdr->used_chunks * SHM_CHUNK;
	if (total_bytes)
		*total_bytes = (uint64_t)a->hdr->nchunks * SHM_CHUNK;
	if (live_slots)
		*live_slots = a->hdr->live_slots;
	if (locked)
		arena_unlock(m);
}

/* ---- test hooks ---- */

int shm_arena__test_lock(struct shm_arena *a)
{
	return arena_lock(a);
}

int shm_arena__test_alloc_partial(struct shm_arena *a, size_t len, unsigned steps)
{
	uint64_t off;

	return slot_alloc(a, len, steps, &off);
}

int shm_arena__test_free_partial(struct shm_arena *a, uint64_t off, unsigned steps)
{
	return slot_free(a, off, steps);
}

uint64_t shm_arena__recoveries(const struct shm_arena *a)
{
	return a->hdr->recoveries;
}
