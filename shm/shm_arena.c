// SPDX-License-Identifier: MIT
/* The node's arena: layout, memfd creation, attach by fd, and the cross-process slot allocator. */
#include "shm_arena.h"
#include "shm_arena_int.h"

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

static uint64_t round_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/*
 * A file arena's journal holds one record per chunk: every committed record
 * names a live slot of its own (an update's payload or a partial's
 * accumulator), and a slot is at least one chunk, so the journal is full only
 * when the slot area is.
 */
void shm_arena__layout(uint64_t slot_bytes, bool file, struct arena_layout *l)
{
	uint64_t end;

	l->nchunks = slot_bytes / SHM_CHUNK;
	l->bitmap_off = sizeof(struct shm_arena_hdr);
	l->runlen_off = l->bitmap_off + (l->nchunks + 63) / 64 * sizeof(uint64_t);
	end = l->runlen_off + l->nchunks * sizeof(uint32_t);
	l->file_off = 0;
	l->journal_off = 0;
	l->nrecs = 0;
	if (file) {
		l->file_off = round_up(end, 64);
		l->journal_off = round_up(l->file_off + sizeof(struct shm_arena_file_hdr), 64);
		l->nrecs = l->nchunks;
		end = l->journal_off + l->nrecs * sizeof(struct shm_journal_rec);
	}
	l->data_off = round_up(end, SHM_HUGE_PAGE);
	l->total = l->data_off + slot_bytes;
}

/* ---- creating and attaching ---- */

/* Seals are a safety net against a peer truncating the memfd under us (SIGBUS); best effort. */
static void arena_seal(int fd)
{
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		trib_debug("arena: memfd not sealed: %s", strerror(errno));
}

/* The caller keeps @fd; see shm_arena_int.h. */
int shm_arena__map_huge_fd(struct shm_arena *a, int fd, const struct arena_layout *l,
			   unsigned flags, char *why, size_t why_len)
{
	long npages = (long)(l->total / SHM_HUGE_PAGE), avail = -1, added = 0;
	void *base;

	if (ftruncate(fd, (off_t)l->total)) {
		int rc = -errno;

		snprintf(why, why_len, "ftruncate of a hugetlbfs file: %s", strerror(-rc));
		return rc;
	}
	base = mmap(NULL, l->total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (base == MAP_FAILED && errno == ENOMEM) {
		shm_huge__avail(&avail);
		if (flags & SHM_ARENA_NO_RESERVE) {
			snprintf(why, why_len,
				 "%ld huge pages needed, %ld free, and SHM_ARENA_NO_RESERVE",
				 npages, avail);
		} else if (geteuid() != 0) {
			snprintf(why, why_len,
				 "%ld huge pages needed, %ld free, and not root to reserve more",
				 npages, avail);
		} else if (!shm_huge__reserve(npages, &added, why, why_len)) {
			base = mmap(NULL, l->total, PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_POPULATE, fd, 0);
			if (base == MAP_FAILED)
				snprintf(why, why_len, "mmap after reserving %ld huge pages: %s",
					 added, strerror(errno));
		}
	} else if (base == MAP_FAILED) {
		snprintf(why, why_len, "mmap of a hugetlbfs file: %s", strerror(errno));
	}
	if (base == MAP_FAILED) {
		shm_huge__release(added);
		return -ENOMEM;
	}
	if (added)
		trib_info("arena: reserved %ld huge pages in %s", added, SHM_HUGE_NR_PATH);
	a->pub.base = base;
	a->huge = true;
	a->reserved_pages = added;
	return 0;
}

/*
 * Map a hugetlb memfd of @l->total bytes into @a, reserving pages if allowed.
 * On failure nothing is left open or reserved and @why names the reason.
 */
static int arena_map_huge(struct shm_arena *a, const struct arena_layout *l, unsigned flags,
			  char *why, size_t why_len)
{
	int fd, rc;

	fd = memfd_create("tributary-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB |
						     MFD_HUGE_2MB);
	if (fd < 0) {
		rc = -errno;
		snprintf(why, why_len, "hugetlb memfd unsupported: %s", strerror(-rc));
		return rc;
	}
	/* Sealing before the size is set would forbid setting it; seal after mapping. */
	rc = shm_arena__map_huge_fd(a, fd, l, flags, why, why_len);
	if (rc) {
		close(fd);
		return rc;
	}
	arena_seal(fd);
	a->fd = fd;
	return 0;
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

void shm_arena__bind(struct shm_arena *a, size_t size)
{
	a->pub.size = size;
	a->hdr = (struct shm_arena_hdr *)(void *)a->pub.base;
	a->bitmap = (uint64_t *)(void *)(a->pub.base + a->hdr->bitmap_off);
	a->runlen = (uint32_t *)(void *)(a->pub.base + a->hdr->runlen_off);
	if (a->hdr->file_off) {
		a->fhdr = (struct shm_arena_file_hdr *)(void *)(a->pub.base + a->hdr->file_off);
		a->recs = (struct shm_journal_rec *)(void *)(a->pub.base + a->fhdr->journal_off);
		a->nrecs = a->fhdr->nrecs;
	}
}

/*
 * The memfd or new file starts zeroed, so the bitmap, run lengths, counters
 * and journal start empty. A file arena's file header is written before this.
 */
int shm_arena__init_hdr(struct shm_arena *a, const struct arena_layout *l)
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
	h->flags = (a->huge ? SHM_ARENA_HDR_HUGE : 0) | (l->file_off ? SHM_ARENA_HDR_FILE : 0);
	h->file_off = l->file_off;

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
	shm_arena__bind(a, l->total);
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
	shm_arena__layout(round_up(size, SHM_HUGE_PAGE), false, &l);

	a = trib_calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->fd = -1;
	a->lock_fd = -1;
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
	rc = shm_arena__init_hdr(a, &l);
	if (rc)
		goto err_unmap;
	*out = a;
	return 0;

err_unmap:
	munmap(a->pub.base, l.total);
	close(a->fd);
	shm_huge__release(a->reserved_pages);
err_free:
	trib_free(a);
	return rc;
}

bool shm_arena__hdr_valid(const struct shm_arena_hdr *h, uint64_t size)
{
	struct arena_layout l;
	bool file;

	if (h->magic != SHM_ARENA_MAGIC || h->version != SHM_ABI_VERSION ||
	    h->hdr_bytes != sizeof(*h) || h->chunk_bytes != SHM_CHUNK || h->total_bytes != size)
		return false;
	if (h->nchunks == 0 || h->nchunks > ARENA_MAX_CHUNKS)
		return false;
	file = h->flags & SHM_ARENA_HDR_FILE;
	shm_arena__layout((uint64_t)h->nchunks * SHM_CHUNK, file, &l);
	return l.bitmap_off == h->bitmap_off && l.runlen_off == h->runlen_off &&
	       l.file_off == h->file_off && l.data_off == h->data_off && l.total == size;
}

/*
 * A file arena's journal fields must match the layout too, or a function
 * process would read records at the wrong place. Checked by attach for any
 * arena that says it is a file.
 */
static bool file_hdr_valid(const struct shm_arena_hdr *h)
{
	const struct shm_arena_file_hdr *f;
	struct arena_layout l;

	if (!(h->flags & SHM_ARENA_HDR_FILE))
		return true;
	f = (const void *)((const uint8_t *)h + h->file_off);
	shm_arena__layout((uint64_t)h->nchunks * SHM_CHUNK, true, &l);
	return f->magic == SHM_ARENA_FILE_MAGIC && f->format == SHM_ARENA_FILE_VERSION &&
	       f->hdr_bytes == sizeof(*f) && f->rec_bytes == sizeof(struct shm_journal_rec) &&
	       f->nrecs == l.nrecs && f->journal_off == l.journal_off;
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
	base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto err_free;
	}
	if (!shm_arena__hdr_valid(base, (uint64_t)st.st_size) || !file_hdr_valid(base)) {
		rc = -EBADMSG;
		goto err_unmap;
	}
	a->pub.base = base;
	a->fd = fd;
	a->lock_fd = -1;
	a->huge = huge;
	a->creator = 0;
	shm_arena__bind(a, (size_t)st.st_size);
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
		shm_huge__release(a->reserved_pages);
	if (a->lock_fd >= 0)
		close(a->lock_fd);
	trib_free(a->kidx);
	trib_free(a->path);
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
 *   warm[]     starts of the runs freed last (a hint, below);
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
	h->warm_n = 0; /* hints only, possibly half-pushed: start over */
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

/*
 * Warm reuse. Next-fit alone sends each allocation to chunks nobody has
 * touched for a whole turn of the arena, so the gateway's receive of the next
 * body wrote into memory that was cold in every cache, while a server reusing
 * one buffer (nginx) writes into lines it just had (docs/BENCHMARKS.md, "Warm
 * receive slots": about a third more CPU for the same receive copy). So a free
 * remembers where its run started, and an allocation first tries those runs,
 * the latest freed first: a body freed by a leaf's DONE, whose bytes the fold
 * has just read, takes the next body. Only when none fits does next-fit run.
 *
 * warm[] is a hint, not state: an entry is used only if the bitmap shows its
 * n chunks free (it may have been taken by next-fit, or merged, since), so it
 * takes no part in the write order above and recovery may just empty it. It
 * changes where a slot lands, never whether one is found: the full search
 * still follows. What it does change is how soon a freed slot's bytes are
 * written again (at once, instead of an arena's turn later): a reader that
 * outlives its slot's free now sees another body. Sanitized builds poison
 * freed slots (slot_poison) so that such a reader makes a wrong model.
 */
static void warm_drop(struct shm_arena_hdr *h, uint32_t i)
{
	memmove(&h->warm[i], &h->warm[i + 1], (h->warm_n - i - 1) * sizeof(h->warm[0]));
	h->warm_n--;
}

static void warm_push(struct shm_arena_hdr *h, uint32_t s)
{
	if (h->warm_n > SHM_ARENA_WARM)
		h->warm_n = 0;
	for (uint32_t i = 0; i < h->warm_n; i++) {
		if (h->warm[i] == s) {
			warm_drop(h, i);
			break;
		}
	}
	if (h->warm_n == SHM_ARENA_WARM)
		warm_drop(h, 0); /* the oldest goes */
	h->warm[h->warm_n++] = s;
}

/* Under the lock: the latest freed run whose first @n chunks are free now; it leaves warm[]. */
static bool warm_find(struct shm_arena *a, uint32_t n, uint32_t *s)
{
	struct shm_arena_hdr *h = a->hdr;
	uint32_t nch = h->nchunks, i;

	if (h->warm_n > SHM_ARENA_WARM)
		h->warm_n = 0;
	for (i = h->warm_n; i-- > 0;) {
		uint32_t w = h->warm[i];

		if (w >= nch || (a->bitmap[w / 64] >> (w % 64) & 1)) {
			warm_drop(h, i); /* taken since: stale */
			continue;
		}
		if (n <= nch - w && find_run(a->bitmap, w, w + n, n, s)) {
			warm_drop(h, i);
			return true;
		}
	}
	return false;
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
	warm_push(h, s);
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

/* Under the lock: a warm run, else next-fit from the cursor, then first-fit from the start. */
static bool arena_find(struct shm_arena *a, uint32_t n, uint32_t *s)
{
	uint32_t nch = a->hdr->nchunks, cur = a->hdr->cursor < nch ? a->hdr->cursor : 0;

	if (warm_find(a, n, s))
		return true;
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

/*
 * Sanitized builds (SHM_ARENA_POISON_DEFAULT, shm/meson.build) fill a slot
 * with 0xff bytes as it is freed, under the lock, before anyone can have it
 * again: a late reader then folds NaNs (0xffffffff as f32), -1s and offsets
 * past the arena instead of the stale body that next-fit used to leave there
 * for a whole turn, so the e2e scenarios' exact models catch it.
 */
#ifndef SHM_ARENA_POISON_DEFAULT
#define SHM_ARENA_POISON_DEFAULT 0
#endif
static bool poison_freed = SHM_ARENA_POISON_DEFAULT;

static void slot_poison(struct shm_arena *a, uint32_t s)
{
	if (poison_freed)
		memset(a->pub.base + a->hdr->data_off + (uint64_t)s * SHM_CHUNK, SHM_ARENA_POISON,
		       (size_t)a->runlen[s] * SHM_CHUNK);
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
	slot_poison(a, s);
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

bool shm_arena__test_poison(bool on)
{
	bool was = poison_freed;

	poison_freed = on;
	return was;
}

uint64_t shm_arena__recoveries(const struct shm_arena *a)
{
	return a->hdr->recoveries;
}
