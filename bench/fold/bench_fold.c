// SPDX-License-Identifier: MIT
/* Benchmark: fold-kernel bandwidth against a STREAM-style triad on the same buffers. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fn_dequant.h"
#include "fn_fold.h"
#include "shm_abi.h"
#include "trib_alloc.h"
#include "trib_log.h"
#include "trib_time.h"

#define HUGE_2M (2ul << 20)
/* Updates allocated: enough for the k = 8 multi-fold row. */
#define N_UPDATES 8
/*
 * Step between buffers' offsets within a 4 KiB page: 9 cache lines, so no two of the 9 buffers
 * share address bits 6..11 (what the 4K-aliasing check compares) at the same index.
 */
#define ALIAS_STEP 576
#define TARGET_RATIO 0.80

/* One buffer: its own mapping, so its page offset is ours to choose. */
struct region {
	void *base;
	size_t len;
};

enum page_mode { PAGES_HUGETLB, PAGES_THP, PAGES_SMALL, PAGES_FORCED_SMALL };

static const char *const page_mode_names[] = {
	[PAGES_HUGETLB] = "2 MiB hugetlb pages (MAP_HUGETLB)",
	[PAGES_THP] = "transparent huge pages requested (madvise MADV_HUGEPAGE)",
	[PAGES_SMALL] = "4 KiB pages (MAP_HUGETLB and MADV_HUGEPAGE both failed)",
	[PAGES_FORCED_SMALL] = "4 KiB pages (--small-pages: madvise MADV_NOHUGEPAGE)",
};

/* Maps @len bytes (rounded up to 2 MiB) into @r, owned by the caller until region_unmap(). */
static int region_map(struct region *r, size_t len, bool small, enum page_mode *mode)
{
	void *p;

	r->len = (len + HUGE_2M - 1) & ~(HUGE_2M - 1);
	if (!small) {
		p = mmap(NULL, r->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
		if (p != MAP_FAILED) {
			*mode = PAGES_HUGETLB;
			r->base = p;
			return 0;
		}
	}
	p = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	if (small)
		*mode = madvise(p, r->len, MADV_NOHUGEPAGE) ? PAGES_SMALL : PAGES_FORCED_SMALL;
	else
		*mode = madvise(p, r->len, MADV_HUGEPAGE) ? PAGES_SMALL : PAGES_THP;
	r->base = p;
	return 0;
}

static void region_unmap(struct region *r)
{
	if (r->base)
		munmap(r->base, r->len);
	r->base = NULL;
}

/* kB of anonymous memory the kernel backs with THP in this process, or -1. */
static long anon_huge_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void cpu_model(char *out, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(out, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) || !colon)
			continue;
		snprintf(out, len, "%s", colon + 2);
		out[strcspn(out, "\n")] = '\0';
		break;
	}
	fclose(f);
}

/*
 * Triad a[i] = b[i] + s * c[i]: the bandwidth ceiling for a 2-read-1-write stream, written as a
 * plain loop that -O3 vectorises (for AVX2 where the CPU has it, as the fold kernel is).
 */
#define TRIAD_BODY                                   \
	do {                                         \
		size_t i;                            \
		for (i = 0; i < n; i++)              \
			a[i] = b[i] + s * c[i];      \
	} while (0)

static __attribute__((noinline)) void triad_generic(float *restrict a, const float *restrict b,
						    const float *restrict c, float s, size_t n)
{
	TRIAD_BODY;
}

#if defined(__x86_64__) || defined(__i386__)
static __attribute__((noinline, target("avx2,fma"))) void
triad_avx2(float *restrict a, const float *restrict b, const float *restrict c, float s, size_t n)
{
	TRIAD_BODY;
}
#endif

/*
 * In place a[i] += s * b[i]: the same traffic as fold k=1 (the triad also pays a write-allocate
 * read of a, which STREAM's 12 bytes per element do not count), as -O3 writes it.
 */
#define AXPY_BODY                                    \
	do {                                         \
		size_t i;                            \
		for (i = 0; i < n; i++)              \
			a[i] += s * b[i];            \
	} while (0)

static __attribute__((noinline)) void axpy_generic(float *restrict a, const float *restrict b,
						   float s, size_t n)
{
	AXPY_BODY;
}

#if defined(__x86_64__) || defined(__i386__)
static __attribute__((noinline, target("avx2,fma"))) void
axpy_avx2(float *restrict a, const float *restrict b, float s, size_t n)
{
	AXPY_BODY;
}
#endif

typedef void (*triad_fn)(float *restrict a, const float *restrict b, const float *restrict c,
			 float s, size_t n);
typedef void (*axpy_fn)(float *restrict a, const float *restrict b, float s, size_t n);

static triad_fn triad_pick(const char **name, axpy_fn *axpy)
{
#if defined(__x86_64__) || defined(__i386__)
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
		*name = "avx2";
		*axpy = axpy_avx2;
		return triad_avx2;
	}
#endif
	*name = "baseline ISA";
	*axpy = axpy_generic;
	return triad_generic;
}

enum kernel { K_TRIAD, K_AXPY, K_FOLD, K_SCALE, K_CHECK, K_DEQ };

/* One benchmarked configuration: which kernel over which buffers. */
struct run {
	enum kernel kind;
	size_t k;		/* updates folded per call (K_FOLD) */
	uint32_t dtype;		/* K_DEQ: enum shm_dtype of the update */
	float *acc;		/* triad: a; fold/scale: acc; check: x */
	const float *xs[N_UPDATES];	/* triad: b = xs[0], c = xs[1] */
};

struct bench {
	size_t n;		/* floats per buffer */
	int reps;
	triad_fn triad;
	axpy_fn axpy;
	double *secs;		/* reps timings, scratch */
};

static volatile int check_sink;

static void run_once(const struct bench *b, const struct run *r)
{
	static const float ws[N_UPDATES] = { 1e-3f, 2e-3f, 3e-3f, 4e-3f, 5e-3f, 6e-3f, 7e-3f,
					     8e-3f };

	switch (r->kind) {
	case K_TRIAD:
		b->triad(r->acc, r->xs[0], r->xs[1], 1e-3f, b->n);
		break;
	case K_AXPY:
		b->axpy(r->acc, r->xs[0], ws[0], b->n);
		break;
	case K_FOLD:
		if (r->k == 1)
			fn_fold_f32(r->acc, r->xs[0], ws[0], b->n);
		else
			fn_fold_f32_multi(r->acc, r->xs, ws, r->k, b->n);
		break;
	case K_SCALE:
		fn_scale_f32(r->acc, 1.0f, b->n);
		break;
	case K_CHECK:
		check_sink = fn_check_finite_f32(r->acc, b->n, NULL);
		break;
	case K_DEQ:
		fn_dequant_fold(r->acc, r->xs[0], r->dtype, 1e-2f, ws[0], b->n);
		break;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Times @r: one warm-up call, then b->reps timed calls; best and median seconds out. */
static void time_run(const struct bench *b, const struct run *r, double *best, double *median)
{
	int i;

	run_once(b, r);
	for (i = 0; i < b->reps; i++) {
		uint64_t t0 = trib_now_ns();

		run_once(b, r);
		b->secs[i] = (double)(trib_now_ns() - t0) / 1e9;
	}
	qsort(b->secs, (size_t)b->reps, sizeof(double), cmp_double);
	*best = b->secs[0];
	*median = b->reps % 2 ? b->secs[b->reps / 2]
			      : (b->secs[b->reps / 2 - 1] + b->secs[b->reps / 2]) / 2;
}

/* Prints one table row; returns the median bytes/s of the row (by its own accounting). */
static double report(const struct bench *b, const struct run *r, const char *label,
		     const char *layout)
{
	double best, median, bytes, upd;

	time_run(b, r, &best, &median);
	switch (r->kind) {
	case K_TRIAD:
		bytes = 12.0 * (double)b->n;
		upd = 0;
		break;
	case K_AXPY:
		bytes = 12.0 * (double)b->n;
		upd = 4.0 * (double)b->n;
		break;
	case K_FOLD:
		bytes = (8.0 + 4.0 * (double)r->k) * (double)b->n;
		upd = 4.0 * (double)r->k * (double)b->n;
		break;
	case K_SCALE:
		bytes = 8.0 * (double)b->n;
		upd = 0;
		break;
	case K_DEQ: {
		double es = r->dtype == SHM_DTYPE_I8 ? 1 : 2;

		bytes = (8.0 + es) * (double)b->n;
		upd = es * (double)b->n;
		break;
	}
	default:
		bytes = 4.0 * (double)b->n;
		upd = bytes;
		break;
	}
	printf("| %-28s | %-22s | %5.0f | %8.2f | %8.2f |", label, layout, bytes / (double)b->n,
	       bytes / best / 1e9, bytes / median / 1e9);
	if (upd > 0)
		printf(" %8.2f |\n", upd / median / 1e9);
	else
		printf(" %8s |\n", "-");
	return bytes / median;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--mb N] [--reps N] [--impl generic|avx2+fma] [--small-pages]\n"
		"  --mb N     MiB per buffer (accumulator and each update), default 64\n"
		"  --reps N   timed repetitions per row after one warm-up, default 10\n"
		"  --impl X   force a fold implementation (default: best for this CPU)\n"
		"  --small-pages  4 KiB pages (MADV_NOHUGEPAGE), to measure what huge pages add\n",
		argv0);
}

int main(int argc, char **argv)
{
	double dq_ratio[3] = { 0, 0, 0 };
	struct region regs[1 + N_UPDATES] = { 0 };
	enum page_mode mode = PAGES_HUGETLB, m = PAGES_HUGETLB;
	struct bench b = { .reps = 10 };
	const char *triad_name;
	size_t mb = 64, bytes, i, j;
	float *acc, *x[N_UPDATES], *acc_al, *x_al[N_UPDATES];
	double triad_bw, axpy_bw, fold_bw, ratio;
	bool small = false;
	char cpu[256];
	long thp_kb;
	int err = 0, ai;
	struct run r;

	trib_log_init("bench_fold");
	for (ai = 1; ai < argc; ai++) {
		if (!strcmp(argv[ai], "--mb") && ai + 1 < argc) {
			mb = strtoul(argv[++ai], NULL, 10);
		} else if (!strcmp(argv[ai], "--reps") && ai + 1 < argc) {
			b.reps = atoi(argv[++ai]);
		} else if (!strcmp(argv[ai], "--small-pages")) {
			small = true;
		} else if (!strcmp(argv[ai], "--impl") && ai + 1 < argc) {
			err = fn_fold_set_impl(argv[++ai]);
			if (err) {
				trib_error("--impl %s: %s", argv[ai], strerror(-err));
				return 2;
			}
		} else {
			usage(argv[0]);
			return 2;
		}
	}
	if (mb == 0 || b.reps < 1) {
		usage(argv[0]);
		return 2;
	}
	b.n = mb * (1ul << 20) / sizeof(float);
	b.triad = triad_pick(&triad_name, &b.axpy);
	b.secs = trib_calloc((size_t)b.reps, sizeof(double));
	if (!b.secs)
		return 1;

	/* Room for the largest offset (just under a page) past each buffer. */
	bytes = b.n * sizeof(float) + 4096;
	for (i = 0; i < 1 + N_UPDATES; i++) {
		err = region_map(&regs[i], bytes, small, &m);
		if (err) {
			trib_error("mmap %zu bytes: %s", bytes, strerror(-err));
			goto err_unmap;
		}
		if (m > mode)
			mode = m;
		/* Touch every page now so no row pays for faults. */
		memset(regs[i].base, 0, regs[i].len);
	}
	/*
	 * Offset layout: update j starts (j + 1) * ALIAS_STEP bytes into its page, acc at 0.
	 * Aliased layout: every buffer starts on a page boundary, so any two addresses at the same
	 * index differ by a multiple of 4 KiB.
	 */
	acc = (float *)regs[0].base;
	acc_al = acc;
	for (j = 0; j < N_UPDATES; j++) {
		x[j] = (float *)((char *)regs[1 + j].base + ((j + 1) * ALIAS_STEP) % 4096);
		x_al[j] = (float *)regs[1 + j].base;
	}
	for (i = 0; i < b.n; i++)
		acc[i] = 1.0f;
	/* Both layouts of an update share its region, so fill the region, not a layout. */
	for (j = 0; j < N_UPDATES; j++) {
		float *f = regs[1 + j].base;

		for (i = 0; i < regs[1 + j].len / sizeof(float); i++)
			f[i] = (float)((i * 2654435761u + j) % 2001) / 1000.0f - 1.0f;
	}
	thp_kb = anon_huge_kb();

	cpu_model(cpu, sizeof(cpu));
	printf("# fold kernel benchmark\n");
	printf("cpu: %s, %ld online cpus, single-threaded\n", cpu, sysconf(_SC_NPROCESSORS_ONLN));
	printf("fold implementation: %s; triad and a+=s*b compiled (-O3) for %s\n", fn_fold_impl(),
	       triad_name);
	printf("buffers: %zu MiB each (%zu floats), 1 accumulator + %d updates\n", mb, b.n,
	       N_UPDATES);
	printf("pages: %s; AnonHugePages after touch: %ld kB\n", page_mode_names[mode], thp_kb);
	printf("reps: %d timed after 1 warm-up; GB/s = 1e9 bytes/s\n\n", b.reps);
	printf("| %-28s | %-22s | %5s | %8s | %8s | %8s |\n", "kernel", "layout", "B/el",
	       "best", "median", "upd GB/s");
	printf("|------------------------------|------------------------|-------|----------|"
	       "----------|----------|\n");

	/* The triad writes acc's region and reads two updates; acc is reset after it. */
	memset(&r, 0, sizeof(r));
	r.kind = K_TRIAD;
	r.acc = acc;
	r.xs[0] = x[0];
	r.xs[1] = x[1];
	triad_bw = report(&b, &r, "triad a=b+s*c", "offset");

	for (i = 0; i < b.n; i++)
		acc[i] = 1.0f;
	r.kind = K_AXPY;
	axpy_bw = report(&b, &r, "a+=s*b (compiler, in place)", "offset");
	r.kind = K_FOLD;
	r.k = 1;
	fold_bw = report(&b, &r, "fold k=1", "offset");
	for (j = 0; j < N_UPDATES; j++)
		r.xs[j] = x[j];
	r.k = 2;
	report(&b, &r, "multi-fold k=2", "offset");
	r.k = 4;
	report(&b, &r, "multi-fold k=4", "offset");
	r.k = 8;
	report(&b, &r, "multi-fold k=8 (2 passes)", "offset");
	r.k = 1;
	r.xs[0] = (const float *)((const char *)x[0] + 4);
	report(&b, &r, "fold k=1, x 4-byte aligned", "offset, x+4 B");

	/* Compressed updates, dequantised inside the fold (per value: same accumulator traffic). */
	{
		static const struct {
			uint32_t dtype;
			const char *label;
		} dq[] = { { SHM_DTYPE_F16, "fold F16 (dequantised)" },
			   { SHM_DTYPE_BF16, "fold BF16 (dequantised)" },
			   { SHM_DTYPE_I8, "fold I8 x scale" } };
		double f32_t = (8.0 + 4.0) / fold_bw; /* seconds per value of fold k=1 */

		r.xs[0] = x[1];
		r.kind = K_DEQ;
		for (size_t q = 0; q < sizeof(dq) / sizeof(dq[0]); q++) {
			double es = dq[q].dtype == SHM_DTYPE_I8 ? 1 : 2;
			double bw;

			/* Arbitrary bits as f16/bf16: denormal or NaN patterns cost the same here. */
			r.dtype = dq[q].dtype;
			bw = report(&b, &r, dq[q].label, "offset");
			dq_ratio[q] = ((8.0 + es) / bw) / f32_t;
		}
		r.xs[0] = x[0];
	}
	r.kind = K_SCALE;
	report(&b, &r, "scale", "offset");
	r.kind = K_CHECK;
	r.acc = x[0];
	report(&b, &r, "check_finite (read only)", "offset");

	r.kind = K_TRIAD;
	r.acc = acc_al;
	r.xs[0] = x_al[0];
	r.xs[1] = x_al[1];
	report(&b, &r, "triad a=b+s*c", "aliased (4 KiB apart)");
	for (i = 0; i < b.n; i++)
		acc_al[i] = 1.0f;
	r.kind = K_FOLD;
	r.k = 1;
	report(&b, &r, "fold k=1", "aliased (4 KiB apart)");
	for (j = 0; j < N_UPDATES; j++)
		r.xs[j] = x_al[j];
	r.k = 4;
	report(&b, &r, "multi-fold k=4", "aliased (4 KiB apart)");

	ratio = fold_bw / triad_bw;
	printf("\nfold k=1 / triad (median, same byte accounting): %.2f, target >= %.2f: %s\n",
	       ratio, TARGET_RATIO, ratio >= TARGET_RATIO ? "PASS" : "FAIL");
	printf("fold k=1 / compiler a+=s*b (median, same traffic): %.2f\n", fold_bw / axpy_bw);
	printf("time per value relative to F32: F16 %.2f, BF16 %.2f, I8 %.2f (update bytes: 0.5, "
	       "0.5, 0.25)\n", dq_ratio[0], dq_ratio[1], dq_ratio[2]);
	if (check_sink)
		trib_warn("check_finite found a non-finite value in benchmark data");

err_unmap:
	for (i = 0; i < 1 + N_UPDATES; i++)
		region_unmap(&regs[i]);
	trib_free(b.secs);
	return err ? 1 : 0;
}
