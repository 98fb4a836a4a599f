// SPDX-License-Identifier: MIT
/* simulate's numbers: the update stream, the float64 reference and the check of a model. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tl_sim_int.h"
#include "tl_simulate.h"
#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_log.h"
#include "trib_safetensors.h"

#define SIM_GAMMA 0x9e3779b97f4a7c15ull
/* Elements per block of the reference sum: the block of ref[] stays in cache across clients. */
#define SIM_REF_BLOCK 2048

/* ---- the update stream ---- */

static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t tl_sim_key(uint64_t seed, uint64_t round, uint32_t client)
{
	uint64_t k = mix64(seed ^ 0x5452494255544152ull);

	k = mix64(k + (round + 1) * SIM_GAMMA);
	return mix64(k + ((uint64_t)client + 1) * SIM_GAMMA);
}

uint64_t tl_sim_stream(uint64_t key, uint64_t i)
{
	return mix64(key + (i + 1) * SIM_GAMMA);
}

uint32_t tl_sim_samples(uint64_t key)
{
	return 1 + (uint32_t)(((tl_sim_stream(key, 0) >> 32) * 100) >> 32);
}

static inline uint32_t fmix32(uint32_t h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	return h ^ (h >> 16);
}

/*
 * Element @i (0-based) as an integer m in [0, 2^24): the value is m * 2^-23 - 1,
 * exact in f32. A 32-bit hash of the element's index (murmur3's finaliser over
 * a Weyl sequence keyed by the stream) rather than splitmix64: it vectorises,
 * so generating a 4 MB update costs a fraction of sending it. The index wraps
 * at 2^32, far beyond SIM_MAX_PARAMS.
 */
static inline uint32_t elem_bits(uint64_t key, uint64_t i)
{
	return (fmix32((uint32_t)key + (uint32_t)i * 0x9e3779b9u) >> 8) ^ (uint32_t)(key >> 40);
}

/* The two hot loops get an AVX2 clone (picked at load time): about twice as fast. */
#if defined(__x86_64__) && defined(__GNUC__)
#define SIM_HOT __attribute__((target_clones("avx2", "default")))
#else
#define SIM_HOT
#endif

SIM_HOT void tl_sim_fill(uint64_t key, uint64_t first, float *x, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		x[i] = (float)(int32_t)elem_bits(key, first + i) * 0x1p-23f - 1.0f;
}

/* Bits of an element dropped so that it is exact in @dtype (enum tl_sim_dtype). */
static unsigned dtype_shift(enum tl_sim_dtype dtype)
{
	return dtype == TL_SIM_F16 ? 13 : dtype == TL_SIM_F32 ? 0 : 16;
}

size_t tl_sim_data_len(enum tl_sim_dtype dtype, uint64_t params)
{
	switch (dtype) {
	case TL_SIM_F16:
	case TL_SIM_BF16:
		return params * 2;
	case TL_SIM_I8:
		return params + sizeof(float); /* the int8 values, then the scale */
	default:
		return params * 4;
	}
}

/*
 * binary16 of @f = j / 1024, |j| <= 1024 (F16 elements: 11 significant bits,
 * so exact, and normal but for 0): the f32's sign, its exponent rebiased (127
 * to 15), the top 10 bits of its mantissa. No branch: the loop vectorises.
 */
static inline uint16_t f16_of_1024ths(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return (uint16_t)(((u >> 16) & 0x8000u) |
			  ((u & 0x7fffffffu) ? ((((u >> 23) & 0xffu) - 112u) << 10 |
						((u >> 13) & 0x3ffu))
					     : 0u));
}

SIM_HOT void tl_sim_fill_dtype(enum tl_sim_dtype dtype, uint64_t key, void *buf, uint64_t n)
{
	uint8_t *b = buf;
	float f, scale = 0x1p-7f;
	uint32_t u;
	uint16_t h;

	switch (dtype) {
	case TL_SIM_F16:
		for (uint64_t i = 0; i < n; i++) {
			h = f16_of_1024ths((float)(int32_t)(elem_bits(key, i) >> 13) * 0x1p-10f - 1.0f);
			memcpy(b + 2 * i, &h, 2);
		}
		break;
	case TL_SIM_BF16:
		/* j / 128: 8 significant bits, so the top half of the f32 is exact. */
		for (uint64_t i = 0; i < n; i++) {
			f = (float)(int32_t)(elem_bits(key, i) >> 16) * 0x1p-7f - 1.0f;
			memcpy(&u, &f, 4);
			h = (uint16_t)(u >> 16);
			memcpy(b + 2 * i, &h, 2);
		}
		break;
	case TL_SIM_I8:
		for (uint64_t i = 0; i < n; i++)
			b[i] = (uint8_t)(int8_t)((int32_t)(elem_bits(key, i) >> 16) - 128);
		memcpy(b + n, &scale, sizeof(scale));
		break;
	default:
		tl_sim_fill(key, 0, buf, n);
	}
}

/* ---- the reference ---- */

struct ref_task {
	const uint64_t *keys;
	const double *weights; /* n_c / sum n */
	uint32_t clients;
	uint64_t lo, hi;
	unsigned shift; /* dtype_shift: element k is (bits >> shift) * 2^-(23 - shift) - 1 */
	double *ref;
	pthread_t tid;
};

SIM_HOT static void *ref_run(void *arg)
{
	struct ref_task *t = arg;
	const unsigned s = t->shift;
	const double unit = ldexp(1, -(int)(23 - s));

	for (uint64_t b = t->lo; b < t->hi; b += SIM_REF_BLOCK) {
		uint64_t e = b + SIM_REF_BLOCK < t->hi ? b + SIM_REF_BLOCK : t->hi;
		double *r = t->ref;

		for (uint64_t i = b; i < e; i++)
			r[i] = 0;
		for (uint32_t c = 0; c < t->clients; c++) {
			uint64_t key = t->keys[c];
			double w = t->weights[c];

			for (uint64_t i = b; i < e; i++)
				r[i] += w * ((double)(int32_t)(elem_bits(key, i) >> s) * unit - 1.0);
		}
	}
	return NULL;
}

int tl_sim_reference_subset(uint64_t seed, uint64_t round, uint32_t clients, const bool *include,
			    uint64_t params, unsigned threads, double *ref)
{
	return tl_sim_reference_dtype(TL_SIM_F32, seed, round, clients, include, params, threads,
				      ref);
}

int tl_sim_reference_dtype(enum tl_sim_dtype dtype, uint64_t seed, uint64_t round,
			   uint32_t clients, const bool *include, uint64_t params, unsigned threads,
			   double *ref)
{
	struct ref_task *tasks;
	uint64_t *keys;
	double *weights, total = 0;
	unsigned started = 0;
	uint32_t n = 0;
	int err = -ENOMEM;

	for (uint32_t c = 0; c < clients; c++)
		n += !include || include[c];
	if (n == 0)
		return -ENODATA;
	if (threads == 0)
		threads = 1;
	if (threads > params / SIM_REF_BLOCK + 1)
		threads = (unsigned)(params / SIM_REF_BLOCK + 1);
	/* Only the included clients: the tasks' loops then cost what they did before. */
	keys = trib_malloc(n * sizeof(*keys));
	weights = trib_malloc(n * sizeof(*weights));
	tasks = trib_calloc(threads, sizeof(*tasks));
	if (!keys || !weights || !tasks)
		goto err_free;
	n = 0;
	for (uint32_t c = 0; c < clients; c++) {
		if (include && !include[c])
			continue;
		keys[n] = tl_sim_key(seed, round, c);
		weights[n] = tl_sim_samples(keys[n]);
		total += weights[n];
		n++;
	}
	for (uint32_t c = 0; c < n; c++)
		weights[c] /= total;
	for (unsigned t = 0; t < threads; t++) {
		tasks[t] = (struct ref_task){
			.keys = keys,
			.weights = weights,
			.clients = n,
			.lo = params * t / threads,
			.hi = params * (t + 1) / threads,
			.shift = dtype_shift(dtype),
			.ref = ref,
		};
	}
	/* Task 0 runs here; the others on threads, or here too if a thread cannot start. */
	for (unsigned t = 1; t < threads; t++) {
		if (pthread_create(&tasks[t].tid, NULL, ref_run, &tasks[t]))
			break;
		started = t;
	}
	ref_run(&tasks[0]);
	for (unsigned t = started + 1; t < threads; t++)
		ref_run(&tasks[t]);
	for (unsigned t = 1; t <= started; t++)
		pthread_join(tasks[t].tid, NULL);
	err = 0;
err_free:
	trib_free(tasks);
	trib_free(weights);
	trib_free(keys);
	return err;
}

int tl_sim_reference(uint64_t seed, uint64_t round, uint32_t clients, uint64_t params,
		     unsigned threads, double *ref)
{
	return tl_sim_reference_subset(seed, round, clients, NULL, params, threads, ref);
}

static double max_abs(const double *ref, uint64_t n)
{
	double m = 0;

	for (uint64_t i = 0; i < n; i++)
		m = fmax(m, fabs(ref[i]));
	return m;
}

/* max |model - ref| over @n elements; infinity if the model holds a NaN. */
static double max_err(const double *ref, const unsigned char *model, uint64_t n)
{
	double m = 0, d;
	float f;

	for (uint64_t i = 0; i < n; i++) {
		memcpy(&f, model + 4 * i, sizeof(f));
		d = fabs((double)f - ref[i]);
		if (isnan(d))
			return INFINITY;
		m = d > m ? d : m;
	}
	return m;
}

void tl_sim_compare(const double *ref, const void *model, uint64_t n, double *err, double *limit)
{
	*err = max_err(ref, model, n);
	*limit = 1e-5 * max_abs(ref, n) + 1e-12;
}

int tl_sim_st_header(uint64_t params, char **hdr, size_t *hdr_len)
{
	struct trib_tensor t = { .dtype = TRIB_DTYPE_F32, .ndim = 1, .n_elem = params };

	snprintf(t.name, sizeof(t.name), "weights");
	t.shape[0] = params;
	return trib_st_write_header(&t, 1, NULL, hdr, hdr_len);
}

int tl_sim_st_header_dtype(enum tl_sim_dtype dtype, uint64_t params, char **hdr, size_t *hdr_len)
{
	static const char *const names[] = { "F32", "F16", "BF16", "I8" };
	size_t len = tl_sim_data_len(dtype, params), json_len, pad;
	uint64_t end = dtype == TL_SIM_I8 ? params : len;
	char json[256], *h;
	int n;

	if (dtype == TL_SIM_F32)
		return tl_sim_st_header(params, hdr, hdr_len);
	if ((unsigned)dtype >= sizeof(names) / sizeof(names[0]))
		return -EINVAL;
	n = snprintf(json, sizeof(json),
		     "{\"weights\":{\"dtype\":\"%s\",\"shape\":[%" PRIu64 "],"
		     "\"data_offsets\":[0,%" PRIu64 "]}",
		     names[dtype], params, end);
	if (dtype == TL_SIM_I8)
		n += snprintf(json + n, sizeof(json) - (size_t)n,
			      ",\"weights.scale\":{\"dtype\":\"F32\",\"shape\":[1],"
			      "\"data_offsets\":[%" PRIu64 ",%zu]}",
			      params, len);
	n += snprintf(json + n, sizeof(json) - (size_t)n, "}");
	if (n <= 0 || (size_t)n >= sizeof(json))
		return -EINVAL;
	json_len = (size_t)n;
	pad = (8 - json_len % 8) % 8; /* the data section starts 8-aligned */
	h = trib_malloc(8 + json_len + pad);
	if (!h)
		return -ENOMEM;
	for (int i = 0; i < 8; i++)
		h[i] = (char)(((uint64_t)(json_len + pad) >> (8 * i)) & 0xff);
	memcpy(h + 8, json, json_len);
	memset(h + 8 + json_len, ' ', pad);
	*hdr = h;
	*hdr_len = 8 + json_len + pad;
	return 0;
}

/* Check the model in @resp against @ref (*err_out, *limit as tl_sim_compare). 0 or -EPROTO. */
int tl_sim_check_model(const struct tl_http_resp *resp, const double *ref, uint64_t params,
		       double *err_out, double *limit)
{
	const unsigned char *data;
	const char *why = NULL;
	struct trib_st st = { 0 };
	uint64_t off = 0;
	double e = 0;
	int err;

	err = trib_st_parse(resp->body, resp->body_len, &st, &why);
	if (err) {
		trib_error("model is not valid safetensors: %s", why ? why : strerror(-err));
		return -EPROTO;
	}
	/* The flat model is every tensor in file order; this job has one, "weights". */
	for (size_t t = 0; t < st.ntensors; t++) {
		const struct trib_tensor *ts = &st.tensors[t];

		if (ts->dtype != TRIB_DTYPE_F32 || off + ts->n_elem > params) {
			trib_error("model tensor '%s' is not F32 or does not fit %" PRIu64
				   " params", ts->name, params);
			err = -EPROTO;
			goto out_free;
		}
		data = (const unsigned char *)resp->body + st.data_off + ts->data_begin;
		e = fmax(e, max_err(ref + off, data, ts->n_elem));
		off += ts->n_elem;
	}
	if (off != params) {
		trib_error("model holds %" PRIu64 " elements, expected %" PRIu64, off, params);
		err = -EPROTO;
		goto out_free;
	}
	*err_out = e;
	*limit = 1e-5 * max_abs(ref, params) + 1e-12;
out_free:
	trib_st_free(&st);
	return err;
}
