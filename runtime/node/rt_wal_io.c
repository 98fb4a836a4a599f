// SPDX-License-Identifier: MIT
/* The log's files: CRC32C, segments, one batch's writes and fdatasyncs, replay, cut, wipe. */
#include "rt_wal_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trib_alloc.h"
#include "trib_log.h"

/* The CRC of a record: its head from len on, then the four parts. */
/*
 * CRC32C of a record from its len field on: the head's last 56 bytes, then
 * the @tail_len bytes after the head (key .. meta, contiguous in both
 * formats), then the body.
 */
static uint32_t rec_crc(const struct rt_wal_crc *t, const void *head, const void *tail,
			uint64_t tail_len, const void *body, uint64_t body_len)
{
	uint32_t c = rt_wal_crc32c(t, 0, (const uint8_t *)head + 8, sizeof(struct rt_wal_disk) - 8);

	c = rt_wal_crc32c(t, c, tail, tail_len);
	return rt_wal_crc32c(t, c, body, body_len);
}

/* ---- segments ---- */

static int job_dir(struct rt_wal *w, uint64_t job, bool create)
{
	char name[32];
	int fd;

	snprintf(name, sizeof(name), "%" PRIu64, job);
	fd = openat(w->dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0 || errno != ENOENT || !create)
		return fd >= 0 ? fd : -errno;
	if (mkdirat(w->dirfd, name, 0700) && errno != EEXIST)
		return -errno;
	/* The folder's name must be durable before a record in it is called durable. */
	if (fsync(w->dirfd))
		return -errno;
	fd = openat(w->dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd >= 0 ? fd : -errno;
}

static int seg_open(struct rt_wal *w, struct rt_wal_seg *s)
{
	char name[32];
	struct stat sb;
	int dfd, err = 0;
	bool made = false;

	dfd = job_dir(w, s->job, true);
	if (dfd < 0)
		return dfd;
	snprintf(name, sizeof(name), "%010" PRIu32 ".wal", s->round);
	s->fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (s->fd >= 0)
		made = true;
	else if (errno == EEXIST)
		s->fd = openat(dfd, name, O_WRONLY | O_CLOEXEC);
	if (s->fd < 0)
		err = -errno;
	else if (fstat(s->fd, &sb))
		err = -errno;
	/* A new file's name is durable before its records are (one fsync per round). */
	if (!err && made && fsync(dfd))
		err = -errno;
	close(dfd);
	if (err) {
		if (s->fd >= 0)
			close(s->fd);
		s->fd = -1;
		return err;
	}
	s->end = s->pend = (uint64_t)sb.st_size;
	return 0;
}

static int seg_get(struct rt_wal *w, uint64_t job, uint32_t round, struct rt_wal_seg **out)
{
	struct rt_wal_seg *s;
	int err;

	for (uint32_t i = 0; i < w->nsegs; i++) {
		if (w->segs[i].job == job && w->segs[i].round == round) {
			*out = &w->segs[i];
			return 0;
		}
	}
	if (w->nsegs == w->capsegs) {
		uint32_t ncap = w->capsegs ? w->capsegs * 2 : 8;
		struct rt_wal_seg *ns = trib_realloc(w->segs, ncap * sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		w->segs = ns;
		w->capsegs = ncap;
	}
	s = &w->segs[w->nsegs];
	memset(s, 0, sizeof(*s));
	s->job = job;
	s->round = round;
	err = seg_open(w, s);
	if (err)
		return err;
	w->nsegs++;
	*out = s;
	return 0;
}

void rt__wal_segs_close(struct rt_wal *w)
{
	for (uint32_t i = 0; i < w->nsegs; i++)
		close(w->segs[i].fd);
	trib_free(w->segs);
	w->segs = NULL;
	w->nsegs = w->capsegs = 0;
}

static bool seg_name(const char *name, uint32_t *round)
{
	char *end;
	unsigned long long v;

	if (strlen(name) != 14 || strcmp(name + 10, ".wal"))
		return false;
	v = strtoull(name, &end, 10);
	if (end != name + 10 || v > UINT32_MAX)
		return false;
	*round = (uint32_t)v;
	return true;
}

uint32_t rt__wal_seg_cut(struct rt_wal *w, uint64_t job, uint32_t round)
{
	uint32_t removed = 0, r;
	struct dirent *de;
	DIR *d;
	int dfd;

	for (uint32_t i = 0; i < w->nsegs;) {
		if (w->segs[i].job == job && w->segs[i].round <= round) {
			close(w->segs[i].fd);
			w->segs[i] = w->segs[--w->nsegs];
			continue;
		}
		i++;
	}
	dfd = job_dir(w, job, false);
	if (dfd < 0)
		return 0;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return 0;
	}
	while ((de = readdir(d))) {
		if (!seg_name(de->d_name, &r) || r > round)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0))
			trib_warn("wal: removing %s/%" PRIu64 "/%s: %s", w->dir, job, de->d_name,
				  strerror(errno));
		else
			removed++;
	}
	closedir(d);
	return removed;
}

/* ---- one batch ---- */

/* Finish a short write synchronously (rare: a signal, a full pipe of the block layer). */
static int write_rest(int fd, const struct iovec *iov, int cnt, uint64_t off, uint64_t done)
{
	for (int i = 0; i < cnt; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		if (done >= len) {
			done -= len;
			off += len;
			continue;
		}
		p += done;
		off += done;
		len -= done;
		done = 0;
		while (len) {
			ssize_t k = pwrite(fd, p, len, (off_t)off);

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				return k < 0 ? -errno : -EIO;
			p += k;
			off += (uint64_t)k;
			len -= (size_t)k;
		}
	}
	return 0;
}

/* Wait for @n completions; the first error goes to *err. */
static void reap(struct rt_wal *w, unsigned n, int *err)
{
	while (n) {
		struct io_uring_cqe *cqe;
		int r = io_uring_wait_cqe(&w->ring, &cqe);

		if (r == -EINTR)
			continue;
		if (r) {
			if (!*err)
				*err = r;
			return;
		}
		if (cqe->user_data) {
			struct rt_wal_ent *e = (struct rt_wal_ent *)(uintptr_t)cqe->user_data;

			if (cqe->res < 0) {
				if (!*err)
					*err = cqe->res;
			} else if ((uint64_t)cqe->res < e->hdr.len && !*err) {
				*err =
				    write_rest(e->seg->fd, e->iov, 5, e->off, (uint64_t)cqe->res);
			}
		} else if (cqe->res < 0 && !*err) {
			*err = cqe->res;
		}
		io_uring_cqe_seen(&w->ring, cqe);
		n--;
	}
}

static struct io_uring_sqe *sqe_get(struct rt_wal *w, unsigned *inflight, int *err)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	if (sqe)
		return sqe;
	/* The ring is full: what is in it completes first. */
	io_uring_submit(&w->ring);
	reap(w, *inflight, err);
	*inflight = 0;
	return io_uring_get_sqe(&w->ring);
}

/* Place each record in its segment and seal it (offset, CRC, iovecs). */
static int batch_prepare(struct rt_wal *w, struct rt_wal_ent *batch, struct rt_wal_batch_res *res)
{
	for (struct rt_wal_ent *e = batch; e; e = e->next) {
		const unsigned char *key = e->tail, *ans = key + e->hdr.key_len,
				    *meta = ans + e->hdr.ans_len + e->hdr.client_len;
		int err = seg_get(w, e->hdr.job, e->hdr.round, &e->seg);

		if (err)
			return err;
		if (!e->seg->touched) {
			e->seg->touched = true;
			e->seg->pend = e->seg->end;
		}
		e->off = e->seg->pend;
		e->seg->pend += e->hdr.len;
		e->hdr.crc = rec_crc(&w->crc, &e->hdr, key,
				     (uint64_t)(meta - key) + e->hdr.meta_len, e->body,
				     e->hdr.body_len);
		e->iov[0] = (struct iovec){&e->hdr, sizeof(e->hdr)};
		e->iov[1] = (struct iovec){(void *)key, e->hdr.key_len};
		/* The answer and the client id, one after the other in tail[]. */
		e->iov[2] = (struct iovec){(void *)ans, (size_t)e->hdr.ans_len + e->hdr.client_len};
		e->iov[3] = (struct iovec){(void *)meta, e->hdr.meta_len};
		e->iov[4] = (struct iovec){(void *)e->body, e->hdr.body_len};
		res->n++;
		res->bytes += e->hdr.len;
		res->last = e->ticket;
	}
	return 0;
}

void rt__wal_batch_write(struct rt_wal *w, struct rt_wal_ent *batch, int werr, int ferr,
			 struct rt_wal_batch_res *res)
{
	unsigned inflight = 0;
	int err;

	memset(res, 0, sizeof(*res));
	for (struct rt_wal_ent *e = batch; e; e = e->next)
		res->last = e->ticket;
	err = batch_prepare(w, batch, res);
	if (!err && werr)
		err = werr;
	for (struct rt_wal_ent *e = batch; !err && e; e = e->next) {
		struct io_uring_sqe *sqe = sqe_get(w, &inflight, &err);

		if (!sqe) {
			err = err ? err : -EBUSY;
			break;
		}
		io_uring_prep_writev(sqe, e->seg->fd, e->iov, 5, e->off);
		io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)e);
		inflight++;
	}
	io_uring_submit(&w->ring);
	reap(w, inflight, &err);
	inflight = 0;
	/* Group commit: one fdatasync per segment the batch touched. */
	for (uint32_t i = 0; !err && i < w->nsegs; i++) {
		struct io_uring_sqe *sqe;

		if (!w->segs[i].touched)
			continue;
		sqe = sqe_get(w, &inflight, &err);
		if (!sqe) {
			err = err ? err : -EBUSY;
			break;
		}
		io_uring_prep_fsync(sqe, w->segs[i].fd, IORING_FSYNC_DATASYNC);
		io_uring_sqe_set_data64(sqe, 0);
		inflight++;
		res->fsyncs++;
	}
	io_uring_submit(&w->ring);
	reap(w, inflight, &err);
	if (!err && ferr)
		err = ferr;
	for (uint32_t i = 0; i < w->nsegs; i++) {
		struct rt_wal_seg *s = &w->segs[i];

		if (!s->touched)
			continue;
		/* A failed batch leaves nothing behind: a retry writes it again from here. */
		if (err && ftruncate(s->fd, (off_t)s->end))
			trib_warn("wal: cutting back a failed write: %s", strerror(errno));
		if (!err)
			s->end = s->pend;
		s->pend = s->end;
		s->touched = false;
	}
	res->err = err;
}

/* ---- replay ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The numbers of @dfd's entries @pick accepts, sorted; *@out owned by the caller. */
static int list_sorted(int dfd, bool jobs, uint64_t **out, size_t *n)
{
	uint64_t *v = NULL;
	size_t cap = 0;
	struct dirent *de;
	DIR *d = fdopendir(dfd);

	*n = 0;
	if (!d) {
		close(dfd);
		return -errno;
	}
	while ((de = readdir(d))) {
		uint64_t x;
		uint32_t r;
		char *end;

		if (jobs) {
			if (de->d_name[0] < '0' || de->d_name[0] > '9')
				continue;
			x = strtoull(de->d_name, &end, 10);
			if (*end)
				continue;
		} else {
			if (!seg_name(de->d_name, &r))
				continue;
			x = r;
		}
		if (*n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			uint64_t *nv = trib_realloc(v, ncap * sizeof(*nv));

			if (!nv) {
				trib_free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
			cap = ncap;
		}
		v[(*n)++] = x;
	}
	closedir(d);
	if (*n)
		qsort(v, *n, sizeof(*v), cmp_u64);
	*out = v;
	return 0;
}

/* A record's head in either format, with its lengths widened (format 1: no client). */
struct head {
	unsigned version; /* 1 or 2 */
	uint32_t crc;
	uint64_t len, job;
	uint32_t round, seq;
	double weight;
	float fold_scale;
	uint32_t key_len, ans_len, client_len, meta_len, nsegs;
	uint64_t body_len;
};

static void head_read(const uint8_t *p, struct head *h)
{
	struct rt_wal_disk d;
	struct rt_wal_disk_v1 d1;

	memcpy(&d, p, sizeof(d));
	memcpy(&d1, p, sizeof(d1));
	*h = (struct head){.version = d.magic == RT_WAL_MAGIC_V1 ? 1 : 2,
			   .crc = d.crc,
			   .len = d.len,
			   .job = d.job,
			   .round = d.round,
			   .seq = d.seq,
			   .weight = d.weight,
			   .fold_scale = d.fold_scale,
			   .meta_len = d.meta_len,
			   .nsegs = d.nsegs,
			   .body_len = d.body_len};
	if (h->version == 1) {
		h->key_len = d1.key_len;
		h->ans_len = d1.ans_len;
	} else {
		h->key_len = d.key_len;
		h->ans_len = d.ans_len;
		h->client_len = d.client_len;
	}
}

/*
 * Why the record at @p (@left bytes to the file's end) is not valid, or
 * NULL if it is (*@h is its head). *@newer is set for a record of a newer
 * format than this build's, which no reader here may cut off.
 */
static const char *rec_bad(const struct rt_wal_crc *t, const uint8_t *p, uint64_t left,
			   uint32_t round, struct head *h, bool *newer)
{
	const uint8_t *tail = p + sizeof(struct rt_wal_disk);
	uint32_t magic;
	uint64_t tail_len;

	*newer = false;
	if (left < sizeof(struct rt_wal_disk))
		return "short head";
	memcpy(&magic, p, sizeof(magic));
	if (magic != RT_WAL_MAGIC && magic != RT_WAL_MAGIC_V1) {
		*newer = (magic & 0xffffffu) == RT_WAL_MAGIC_FAMILY && (magic >> 24) > '2' &&
			 (magic >> 24) <= '9';
		return *newer ? "a record of a newer format" : "bad magic";
	}
	head_read(p, h);
	if (h->len < sizeof(struct rt_wal_disk) || h->len > left)
		return "length past the end";
	tail_len = (uint64_t)h->key_len + h->ans_len + h->client_len + h->meta_len;
	if (h->key_len > RT_WAL_KEY_MAX || h->ans_len > RT_WAL_ANS_MAX ||
	    h->client_len > RT_WAL_CLIENT_MAX || h->meta_len > RT_WAL_META_MAX ||
	    sizeof(struct rt_wal_disk) + tail_len + h->body_len != h->len)
		return "inconsistent lengths";
	if (h->crc != rec_crc(t, p, tail, tail_len, tail + tail_len, h->body_len))
		return "CRC mismatch";
	if (h->round != round)
		return "record of another round";
	return NULL;
}

static int replay_seg(const struct rt_wal_crc *t, int dfd, uint64_t job, uint32_t round,
		      rt_wal_cb cb, void *ctx, struct rt_wal_replay_stats *st)
{
	char name[32];
	struct stat sb;
	const uint8_t *m;
	uint64_t off = 0;
	const char *why = NULL;
	bool newer = false;
	char newer_v = '?';
	int fd, err = 0;

	snprintf(name, sizeof(name), "%010" PRIu32 ".wal", round);
	fd = openat(dfd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb)) {
		err = -errno;
		goto out_close;
	}
	st->segments++;
	if (!sb.st_size)
		goto out_close;
	m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		err = -errno;
		goto out_close;
	}
	while (off < (uint64_t)sb.st_size && !err) {
		const uint8_t *key = m + off + sizeof(struct rt_wal_disk);
		struct rt_wal_rec rec;
		struct head h;

		why = rec_bad(t, m + off, (uint64_t)sb.st_size - off, round, &h, &newer);
		if (why) {
			if (newer)
				newer_v = (char)m[off + 3];
			break;
		}
		rec = (struct rt_wal_rec){.job = job,
					  .round = h.round,
					  .seq = h.seq,
					  .weight = h.weight,
					  .fold_scale = h.fold_scale,
					  .nsegs = h.nsegs,
					  .key = key,
					  .key_len = h.key_len,
					  .ans = key + h.key_len,
					  .ans_len = h.ans_len,
					  .client = (const char *)key + h.key_len + h.ans_len,
					  .client_len = h.client_len,
					  .meta = key + h.key_len + h.ans_len + h.client_len,
					  .meta_len = h.meta_len,
					  .body = key + h.key_len + h.ans_len + h.client_len +
						  h.meta_len,
					  .body_len = h.body_len};
		st->records++;
		st->v1_records += h.version == 1;
		err = cb ? cb(ctx, &rec) : 0;
		off += h.len;
	}
	munmap((void *)m, (size_t)sb.st_size);
	if (why && newer && !err) {
		/* A newer build wrote it: this one can neither read it nor call it torn. */
		trib_error("wal: %" PRIu64 "/%s: byte %" PRIu64 " is a record of log format "
			   "%c, newer than this build's %u: refusing to replay (the file is left "
			   "as it is; run the newer build, or move the log aside)",
			   job, name, off, newer_v, RT_WAL_VERSION);
		err = -EPROTONOSUPPORT;
	} else if (why && !err) {
		/* The write a crash interrupted (never answered): cut it off, say so. */
		trib_warn("wal: %" PRIu64 "/%s: torn tail at byte %" PRIu64 " (%s): %" PRIu64
			  " bytes truncated",
			  job, name, off, why, (uint64_t)sb.st_size - off);
		st->torn++;
		st->torn_bytes += (uint64_t)sb.st_size - off;
		if (ftruncate(fd, (off_t)off) || fdatasync(fd))
			err = -errno;
	}
out_close:
	close(fd);
	return err;
}

int rt_wal_replay(const char *dir, rt_wal_cb cb, void *ctx, struct rt_wal_replay_stats *st)
{
	struct rt_wal_replay_stats dummy;
	struct rt_wal_crc *t;
	uint64_t *jobs = NULL;
	size_t njobs = 0;
	int root, err;

	if (!st)
		st = &dummy;
	memset(st, 0, sizeof(*st));
	root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return errno == ENOENT ? 0 : -errno;
	t = trib_malloc(sizeof(*t));
	if (!t) {
		close(root);
		return -ENOMEM;
	}
	rt_wal_crc_init(t);
	err = list_sorted(dup(root), true, &jobs, &njobs);
	for (size_t i = 0; !err && i < njobs; i++) {
		uint64_t *rounds = NULL;
		size_t nr = 0;
		char name[32];
		int dfd;

		snprintf(name, sizeof(name), "%" PRIu64, jobs[i]);
		dfd = openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			continue; /* a file with a number for a name: not ours */
		err = list_sorted(dup(dfd), false, &rounds, &nr);
		for (size_t k = 0; !err && k < nr; k++)
			err = replay_seg(t, dfd, jobs[i], (uint32_t)rounds[k], cb, ctx, st);
		trib_free(rounds);
		close(dfd);
	}
	trib_free(jobs);
	trib_free(t);
	close(root);
	return err;
}

int rt_wal_wipe(const char *dir, uint32_t *removed)
{
	uint64_t *jobs = NULL;
	size_t njobs = 0;
	int root, err;

	*removed = 0;
	root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return errno == ENOENT ? 0 : -errno;
	err = list_sorted(dup(root), true, &jobs, &njobs);
	for (size_t i = 0; !err && i < njobs; i++) {
		uint64_t *rounds = NULL;
		size_t nr = 0;
		char name[32];
		int dfd;

		snprintf(name, sizeof(name), "%" PRIu64, jobs[i]);
		dfd = openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			continue;
		err = list_sorted(dup(dfd), false, &rounds, &nr);
		for (size_t k = 0; !err && k < nr; k++) {
			char seg[32];

			snprintf(seg, sizeof(seg), "%010" PRIu64 ".wal", rounds[k]);
			if (unlinkat(dfd, seg, 0))
				err = -errno;
			else
				(*removed)++;
		}
		trib_free(rounds);
		close(dfd);
		if (!err)
			unlinkat(root, name, AT_REMOVEDIR);
	}
	trib_free(jobs);
	if (!err && fsync(root))
		err = -errno;
	close(root);
	return err;
}
