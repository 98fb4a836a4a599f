// SPDX-License-Identifier: MIT
/* One SecAgg+ round: stage bookkeeping, the neighbour graph, share routing, unmasking. */
#include "rt_secagg.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fn_secagg.h"
#include "trib_alloc.h"
#include "trib_secagg_crypto.h"

/* Coordinate ranges the unmasking expands one after the other (what functions would share). */
#define UNMASK_RANGES 4u

struct sa_client {
	uint8_t c_pk[32], s_pk[32];
	uint8_t answered; /* bit 1 << stage per stage answered */
	bool alive;       /* still in the round */
	bool in_u2, in_u3;
	uint32_t nbr_n;
	uint32_t *nbr;    /* neighbour ids, ascending */
	uint8_t *ct;      /* nbr_n x RT_SECAGG_CT_BYTES: from this client to nbr[i] */
	struct trib_shamir_share *rev; /* nbr_n: reveals of this client's secret, by nbr index */
	bool *rev_have;   /* nbr_n */
};

struct rt_secagg {
	struct rt_secagg_cfg cfg;
	enum rt_secagg_stage stage;
	uint32_t pending; /* alive clients yet to answer this stage: completeness in O(1) a request */
	char why[256];
	struct sa_client *c; /* cfg.n_clients */
	uint32_t *acc;       /* dim + 1 words: the folded masked vectors, then the unmasked sum */
	struct fn_secagg_stream *streams; /* external_expand: the unmasking's streams, pending */
	size_t nstreams, cap_streams;
	struct fn_secagg_pair *pairs;     /* external_expand: pairwise streams, keys not derived */
	size_t npairs, cap_pairs;
};

static const char *const stage_names[] = {
	[RT_SECAGG_ADVERTISE] = "advertise", [RT_SECAGG_SHARE] = "share",
	[RT_SECAGG_MASKED] = "masked",       [RT_SECAGG_UNMASK] = "unmask",
	[RT_SECAGG_DONE] = "done",           [RT_SECAGG_FAILED] = "failed",
};

const char *rt_secagg_stage_name(enum rt_secagg_stage s)
{
	return (unsigned)s < sizeof(stage_names) / sizeof(stage_names[0]) ? stage_names[s] : "?";
}

uint32_t rt_secagg_max_samples(uint32_t n_clients, uint32_t bits)
{
	uint64_t per = (uint64_t)n_clients * ((UINT64_C(1) << (bits > 32 ? 32 : bits)) - 1);

	return per ? (uint32_t)(UINT32_MAX / per) : 0;
}

int rt_secagg_cfg_check(const struct rt_secagg_cfg *cfg, char *why, size_t why_len)
{
	uint32_t most;

	if (cfg->n_clients == 0 || cfg->n_clients > RT_SECAGG_MAX_CLIENTS) {
		snprintf(why, why_len, "secagg clients %u: allowed 1 to %u", cfg->n_clients,
			 RT_SECAGG_MAX_CLIENTS);
	} else if (cfg->neighbours < 2 || cfg->neighbours > RT_SECAGG_MAX_NEIGHBOURS ||
		   cfg->neighbours % 2) {
		snprintf(why, why_len, "secagg.neighbours %u: allowed an even number 2 to %u",
			 cfg->neighbours, RT_SECAGG_MAX_NEIGHBOURS);
	} else if (cfg->threshold == 0 || cfg->threshold > cfg->neighbours) {
		snprintf(why, why_len, "secagg.threshold %u: allowed 1 to neighbours (%u)",
			 cfg->threshold, cfg->neighbours);
	} else if (cfg->bits == 0 || cfg->bits > RT_SECAGG_MAX_BITS) {
		snprintf(why, why_len, "secagg.bits %u: allowed 1 to %u", cfg->bits,
			 RT_SECAGG_MAX_BITS);
	} else if (!isfinite(cfg->clip) || cfg->clip <= 0) {
		snprintf(why, why_len, "secagg.clip %g: allowed a finite number above 0",
			 (double)cfg->clip);
	} else if ((uint64_t)cfg->n_clients * (cfg->neighbours < cfg->n_clients ? cfg->neighbours
		   : cfg->n_clients - 1) * RT_SECAGG_EDGE_BYTES > RT_SECAGG_STATE_MAX) {
		snprintf(why, why_len, "secagg: %u clients x %u neighbours need %.2f GiB of round "
			 "state (%zu bytes per client and neighbour); allowed at most %.0f GiB: "
			 "fewer neighbours or clients_per_round", cfg->n_clients, cfg->neighbours,
			 (double)cfg->n_clients * cfg->neighbours * RT_SECAGG_EDGE_BYTES / 1073741824.0,
			 RT_SECAGG_EDGE_BYTES, RT_SECAGG_STATE_MAX / 1073741824.0);
	} else if (cfg->dim == 0 || cfg->dim == UINT32_MAX) {
		snprintf(why, why_len, "secagg model of %u values: allowed 1 to 2^32 - 2", cfg->dim);
	} else if (!(most = rt_secagg_max_samples(cfg->n_clients, cfg->bits))) {
		snprintf(why, why_len, "secagg.bits %u: %u clients x (2^%u - 1) overflows the "
			 "32-bit sum; use fewer bits", cfg->bits, cfg->n_clients, cfg->bits);
	} else if (cfg->max_samples > most) {
		snprintf(why, why_len, "secagg.max_samples %u: %u clients x %u samples x (2^%u - 1) "
			 "overflows the 32-bit sum; allowed 1 to %u with these clients and bits",
			 cfg->max_samples, cfg->n_clients, cfg->max_samples, cfg->bits, most);
	} else {
		return 0;
	}
	return -EINVAL;
}

static void drop_streams(struct rt_secagg *r)
{
	if (r->streams)
		explicit_bzero(r->streams, r->cap_streams * sizeof(*r->streams));
	trib_free(r->streams);
	r->streams = NULL;
	r->nstreams = r->cap_streams = 0;
	if (r->pairs)
		explicit_bzero(r->pairs, r->cap_pairs * sizeof(*r->pairs));
	trib_free(r->pairs);
	r->pairs = NULL;
	r->npairs = r->cap_pairs = 0;
}

void rt_secagg_free(struct rt_secagg *r)
{
	if (!r)
		return;
	for (uint32_t u = 0; r->c && u < r->cfg.n_clients; u++) {
		struct sa_client *c = &r->c[u];

		if (c->rev)
			explicit_bzero(c->rev, c->nbr_n * sizeof(*c->rev));
		trib_free(c->rev);
		trib_free(c->rev_have);
		trib_free(c->ct);
		trib_free(c->nbr);
	}
	trib_free(r->c);
	if (r->acc) /* the masked sum (the tree's copy, rt__secagg_take_sum) or the unmasked one */
		explicit_bzero(r->acc, ((size_t)r->cfg.dim + 1) * sizeof(*r->acc));
	trib_free(r->acc);
	drop_streams(r);
	trib_free(r);
}

const struct rt_secagg_cfg *rt_secagg_config(const struct rt_secagg *r)
{
	return &r->cfg;
}

int rt_secagg_new(const struct rt_secagg_cfg *cfg, struct rt_secagg **out)
{
	struct rt_secagg *r;
	char why[256];

	if (rt_secagg_cfg_check(cfg, why, sizeof(why)))
		return -EINVAL;
	r = trib_calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cfg = *cfg;
	if (!r->cfg.max_samples)
		r->cfg.max_samples = rt_secagg_max_samples(cfg->n_clients, cfg->bits);
	r->c = trib_calloc(cfg->n_clients, sizeof(*r->c));
	r->acc = trib_calloc((size_t)cfg->dim + 1, sizeof(*r->acc));
	if (!r->c || !r->acc) {
		rt_secagg_free(r);
		return -ENOMEM;
	}
	for (uint32_t u = 0; u < cfg->n_clients; u++)
		r->c[u].alive = true;
	r->pending = cfg->n_clients;
	r->stage = RT_SECAGG_ADVERTISE;
	*out = r;
	return 0;
}

enum rt_secagg_stage rt_secagg_stage(const struct rt_secagg *r)
{
	return r->stage;
}

const char *rt_secagg_why(const struct rt_secagg *r)
{
	return r->why;
}

uint32_t rt_secagg_inputs(const struct rt_secagg *r)
{
	uint32_t n = 0;

	for (uint32_t u = 0; u < r->cfg.n_clients; u++)
		n += r->c[u].in_u3;
	return n;
}

uint32_t rt_secagg_alive(const struct rt_secagg *r)
{
	uint32_t n = 0;

	for (uint32_t u = 0; u < r->cfg.n_clients; u++)
		n += r->c[u].alive;
	return n;
}

int rt_secagg_stage_complete(const struct rt_secagg *r)
{
	return r->stage >= RT_SECAGG_DONE || !r->pending;
}

/* u answered the current stage (enter() passed: alive, not yet). */
static void answer(struct rt_secagg *r, uint32_t u)
{
	r->c[u].answered |= 1u << r->stage;
	r->pending--;
}

static void fail(struct rt_secagg *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct rt_secagg *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	r->stage = RT_SECAGG_FAILED;
	drop_streams(r);
	/* Nothing is unmasked: the masked sum goes too. */
	explicit_bzero(r->acc, ((size_t)r->cfg.dim + 1) * sizeof(*r->acc));
}

/* Index of v in c's neighbour list, or UINT32_MAX. */
static uint32_t nbr_index(const struct sa_client *c, uint32_t v)
{
	uint32_t lo = 0, hi = c->nbr_n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (c->nbr[mid] == v)
			return mid;
		if (c->nbr[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return UINT32_MAX;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* The ring over U1 in seed order; 0 or -ENOMEM. */
static int draw_graph(struct rt_secagg *r, uint32_t *ids, uint32_t m)
{
	uint32_t k = r->cfg.neighbours, half = k / 2;
	bool complete = k >= m - 1;
	uint64_t word = 0;

	/* Fisher-Yates with u64 draws from the seed's stream; the modulo bias is below 2^-40. */
	for (uint32_t i = m; i-- > 1;) {
		uint32_t w[2];
		uint64_t x, j;

		(void)trib_sa_prg_u32(w, 2, r->cfg.graph_seed, word);
		word += 2;
		x = (uint64_t)w[0] | (uint64_t)w[1] << 32;
		j = x % ((uint64_t)i + 1);
		uint32_t t = ids[i];
		ids[i] = ids[j];
		ids[j] = t;
	}
	for (uint32_t p = 0; p < m; p++) {
		struct sa_client *c = &r->c[ids[p]];
		uint32_t n = complete ? m - 1 : k, q = 0;

		c->nbr = trib_calloc(n ? n : 1, sizeof(*c->nbr));
		c->ct = trib_calloc(n ? n : 1, RT_SECAGG_CT_BYTES);
		c->rev = trib_calloc(n ? n : 1, sizeof(*c->rev));
		c->rev_have = trib_calloc(n ? n : 1, sizeof(*c->rev_have));
		if (!c->nbr || !c->ct || !c->rev || !c->rev_have)
			return -ENOMEM;
		if (complete) {
			for (uint32_t o = 0; o < m; o++)
				if (o != p)
					c->nbr[q++] = ids[o];
		} else {
			/* k < m - 1: p + j and p - j' never meet for j, j' <= k/2. */
			for (uint32_t j = 1; j <= half; j++) {
				c->nbr[q++] = ids[(p + j) % m];
				c->nbr[q++] = ids[(p + m - j) % m];
			}
		}
		c->nbr_n = q;
		qsort(c->nbr, q, sizeof(*c->nbr), cmp_u32);
	}
	return 0;
}

static void end_advertise(struct rt_secagg *r)
{
	uint32_t m = 0, *ids;

	for (uint32_t u = 0; u < r->cfg.n_clients; u++) {
		r->c[u].alive = r->c[u].answered & (1u << RT_SECAGG_ADVERTISE);
		m += r->c[u].alive;
	}
	if (m < r->cfg.threshold || m - 1 < r->cfg.threshold) {
		fail(r, "advertise: %u clients advertised keys; the threshold %u needs at least %u",
		     m, r->cfg.threshold, r->cfg.threshold + 1);
		return;
	}
	ids = trib_calloc(m, sizeof(*ids));
	if (!ids) {
		fail(r, "advertise: out of memory drawing the graph of %u clients", m);
		return;
	}
	m = 0;
	for (uint32_t u = 0; u < r->cfg.n_clients; u++)
		if (r->c[u].alive)
			ids[m++] = u;
	if (draw_graph(r, ids, m))
		fail(r, "advertise: out of memory drawing the graph of %u clients", m);
	else
		r->stage = RT_SECAGG_SHARE, r->pending = m;
	trib_free(ids);
}

static void end_share(struct rt_secagg *r)
{
	uint32_t m = 0, n = r->cfg.n_clients, *left = trib_calloc(2 * (size_t)n, sizeof(*left));
	uint32_t *queue = left + n, qn = 0;

	if (!left) {
		fail(r, "share: out of memory pruning the graph of %u clients", n);
		return;
	}
	for (uint32_t u = 0; u < n; u++)
		r->c[u].alive = r->c[u].alive && (r->c[u].answered & (1u << RT_SECAGG_SHARE));
	/* Fewer than t neighbours left: its secrets could not be rebuilt; its drop may leave its
	 * neighbours short in turn. A worklist, O(n k) (the graph is symmetric); passes until no
	 * change were O(n^2) as a drop spread round the ring (10 s at 50000 clients, t = k). */
	for (uint32_t u = 0; u < n; u++)
		for (uint32_t i = 0; r->c[u].alive && i < r->c[u].nbr_n; i++)
			left[u] += r->c[r->c[u].nbr[i]].alive;
	for (uint32_t u = 0; u < n; u++) {
		if (r->c[u].alive && left[u] < r->cfg.threshold) {
			r->c[u].alive = false;
			queue[qn++] = u;
		}
	}
	while (qn) {
		const struct sa_client *v = &r->c[queue[--qn]];

		for (uint32_t i = 0; i < v->nbr_n; i++) {
			uint32_t w = v->nbr[i];

			if (r->c[w].alive && --left[w] < r->cfg.threshold) {
				r->c[w].alive = false;
				queue[qn++] = w;
			}
		}
	}
	trib_free(left);
	for (uint32_t u = 0; u < r->cfg.n_clients; u++) {
		r->c[u].in_u2 = r->c[u].alive;
		m += r->c[u].alive;
	}
	if (m < r->cfg.threshold) {
		fail(r, "share: %u clients shared keys with at least %u neighbours left; the "
		     "threshold is %u", m, r->cfg.threshold, r->cfg.threshold);
		return;
	}
	r->stage = RT_SECAGG_MASKED, r->pending = m;
}

static void end_masked(struct rt_secagg *r)
{
	uint32_t m = 0;

	for (uint32_t u = 0; u < r->cfg.n_clients; u++) {
		struct sa_client *c = &r->c[u];

		c->alive = c->alive && (c->answered & (1u << RT_SECAGG_MASKED));
		c->in_u3 = c->alive;
		m += c->alive;
	}
	if (m < r->cfg.threshold) {
		fail(r, "masked: %u clients sent a masked input; the threshold is %u", m,
		     r->cfg.threshold);
		return;
	}
	r->stage = RT_SECAGG_UNMASK, r->pending = m;
}

/*
 * The unmasked sum against what honest inputs make (rt_secagg.h): 1 <= W <= |U3| * max_samples
 * and S_i <= W * (2^b - 1). The masks hide each input, so the server cannot refuse one that
 * breaks the rules; the rules are set so that honest inputs never wrap (max_samples), and a
 * sum that lies outside them is not published. 0, or the round FAILED saying which bound.
 */
static int sum_in_range(struct rt_secagg *r)
{
	uint64_t w = r->acc[r->cfg.dim], qmax = (UINT64_C(1) << r->cfg.bits) - 1;
	uint64_t most = (uint64_t)rt_secagg_inputs(r) * r->cfg.max_samples;

	if (w == 0 || w > most) {
		fail(r, "unmask: the unmasked weight %llu is outside 1 to %llu (%u inputs x "
		     "max_samples %u): a client sent n_u out of range and the sum may have wrapped; "
		     "nothing is published", (unsigned long long)w, (unsigned long long)most,
		     rt_secagg_inputs(r), r->cfg.max_samples);
		return -ERANGE;
	}
	for (uint32_t i = 0; i < r->cfg.dim; i++) {
		if (r->acc[i] > w * qmax) {
			fail(r, "unmask: unmasked value %u is %u, above weight x (2^%u - 1) = %llu: a "
			     "client sent a value out of range and the sum may have wrapped; nothing "
			     "is published", i, r->acc[i], r->cfg.bits,
			     (unsigned long long)(w * qmax));
			return -ERANGE;
		}
	}
	return 0;
}

/* Adds stream (key, sign) to the list; grows it. 0 or -ENOMEM. */
static int push_stream(struct fn_secagg_stream **s, size_t *n, size_t *cap, const uint8_t key[32],
		       int sign)
{
	if (*n == *cap) {
		size_t nc = *cap ? 2 * *cap : 64;
		struct fn_secagg_stream *ns = trib_realloc(*s, nc * sizeof(**s));

		if (!ns)
			return -ENOMEM;
		*s = ns;
		*cap = nc;
	}
	memcpy((*s)[*n].key, key, 32);
	(*s)[*n].sign = sign;
	(*n)++;
	return 0;
}

/* v's secret from all its reveals (each past the first t checked: a crafted share would move a
 * seed, silently); 0, -ENOENT (< t) or -EBADMSG (*liar: whose share is off, or UINT32_MAX). */
static int rebuild(const struct rt_secagg *r, const struct sa_client *c, uint8_t out[32],
		   uint32_t *liar)
{
	struct trib_shamir_share pick[TRIB_SHAMIR_T_MAX];
	uint32_t from[TRIB_SHAMIR_T_MAX], n = 0;
	size_t odd;
	int err;

	*liar = UINT32_MAX;
	for (uint32_t i = 0; i < c->nbr_n && n < TRIB_SHAMIR_T_MAX; i++) {
		if (c->rev_have[i] && r->c[c->nbr[i]].alive) {
			from[n] = c->nbr[i];
			pick[n++] = c->rev[i];
		}
	}
	if (n < r->cfg.threshold)
		return -ENOENT;
	err = trib_shamir_check(pick, n, r->cfg.threshold, RT_SECAGG_SECRET_BYTES, &odd);
	if (err == -EBADMSG && odd < n)
		*liar = from[odd];
	if (!err)
		err = trib_shamir_combine(pick, n, r->cfg.threshold, RT_SECAGG_SECRET_BYTES, out);
	explicit_bzero(pick, sizeof(pick));
	return err;
}

/* Adds a pairwise stream whose key the functions derive; 0 or -ENOMEM. */
static int push_pair(struct rt_secagg *r, const uint8_t sk[32], const uint8_t pk[32], uint32_t lo,
		     uint32_t hi, int32_t sign)
{
	struct fn_secagg_pair *p;

	if (r->npairs == r->cap_pairs) {
		size_t nc = r->cap_pairs ? 2 * r->cap_pairs : 64;
		struct fn_secagg_pair *np = trib_calloc(nc, sizeof(*np));

		if (!np)
			return -ENOMEM;
		if (r->pairs) {
			memcpy(np, r->pairs, r->npairs * sizeof(*np));
			explicit_bzero(r->pairs, r->cap_pairs * sizeof(*np));
		}
		trib_free(r->pairs);
		r->pairs = np;
		r->cap_pairs = nc;
	}
	p = &r->pairs[r->npairs++];
	memcpy(p->sk, sk, 32);
	memcpy(p->pk, pk, 32);
	p->lo = lo;
	p->hi = hi;
	p->sign = sign;
	return 0;
}

/* The streams' expansion by coordinate ranges, added to the masked sum (what shards share). */
static int expand_ranges(struct rt_secagg *r, const struct fn_secagg_stream *s, size_t ns)
{
	struct fn_secagg_stream one;
	int err = 0;

	for (uint32_t part = 0; part < UNMASK_RANGES; part++) {
		uint64_t first, n;

		if (fn_secagg_range((uint64_t)r->cfg.dim + 1, UNMASK_RANGES, part, &first, &n) ||
		    fn_secagg_expand(r->acc + first, first, (size_t)n, s, ns))
			return -EINVAL;
	}
	for (size_t i = 0; !err && i < r->npairs; i++) {
		err = fn_secagg_pair_key(&r->pairs[i], r->cfg.round, &one);
		if (!err)
			err = fn_secagg_expand(r->acc, 0, (size_t)r->cfg.dim + 1, &one, 1);
	}
	explicit_bzero(&one, sizeof(one));
	return err;
}

size_t rt_secagg_streams(const struct rt_secagg *r, const struct fn_secagg_stream **s,
			 const struct fn_secagg_pair **p, size_t *np)
{
	if (r->stage != RT_SECAGG_UNMASK || !r->streams)
		return 0;
	*s = r->streams;
	*p = r->pairs;
	*np = r->npairs;
	return r->nstreams;
}

int rt_secagg_correct(struct rt_secagg *r, const uint32_t *corr, size_t words)
{
	if (r->stage != RT_SECAGG_UNMASK || !r->streams)
		return -EBUSY;
	if (words != (size_t)r->cfg.dim + 1)
		return -EINVAL;
	if (corr) {
		fn_fold_u32(r->acc, corr, words);
	} else if (expand_ranges(r, r->streams, r->nstreams)) {
		drop_streams(r);
		fail(r, "unmask: expanding the masks failed");
		return -EINVAL;
	}
	drop_streams(r);
	if (sum_in_range(r))
		return -ERANGE;
	r->stage = RT_SECAGG_DONE;
	return 0;
}

static void end_unmask(struct rt_secagg *r)
{
	struct fn_secagg_stream *s = NULL;
	size_t ns = 0, cap = 0;
	uint32_t m = 0, v, liar;
	uint8_t secret[32], key[32], shared[32], pk[32];

	if (r->streams)
		return; /* ended already: its streams wait for rt_secagg_correct() */

	for (uint32_t u = 0; u < r->cfg.n_clients; u++) {
		r->c[u].alive = r->c[u].alive && (r->c[u].answered & (1u << RT_SECAGG_UNMASK));
		m += r->c[u].alive;
	}
	if (m < r->cfg.threshold) {
		fail(r, "unmask: %u clients sent their shares; the threshold is %u", m,
		     r->cfg.threshold);
		return;
	}
	for (v = 0; v < r->cfg.n_clients; v++) {
		const struct sa_client *c = &r->c[v];
		int err;

		if (!c->in_u2)
			continue;
		err = rebuild(r, c, secret, &liar);
		if (err) {
			char off[96] = "";

			/* The server cannot tell which lied: the revealer or the dealer (v). */
			if (liar != UINT32_MAX)
				snprintf(off, sizeof(off), ": the one client %u revealed is off; %u or "
					 "%u lied", liar, liar, v);
			fail(r, "unmask: client %u's %s could not be rebuilt (%s%s)", v,
			     c->in_u3 ? "self-mask seed" : "pairwise secret key",
			     err == -ENOENT ? "fewer shares than the threshold" :
					      "the shares do not agree", off);
			goto out;
		}
		if (c->in_u3) {
			if (trib_sa_derive(key, secret, 32, "self", r->cfg.round, v, 0) ||
			    push_stream(&s, &ns, &cap, key, -1))
				goto oom;
			continue;
		}
		/* v dropped after sharing: its key must be the one it advertised. */
		if (trib_sa_public_key(pk, secret) || memcmp(pk, c->s_pk, 32)) {
			fail(r, "unmask: client %u's rebuilt secret key does not match its public "
			     "key (inconsistent shares)", v);
			goto out;
		}
		for (uint32_t i = 0; i < c->nbr_n; i++) {
			uint32_t u = c->nbr[i];

			if (!r->c[u].in_u3)
				continue;
			if (r->cfg.external_expand) {
				/* The agreement is the functions' (fn_secagg_pair_key). */
				if (push_pair(r, secret, r->c[u].s_pk, u < v ? u : v, u < v ? v : u,
					      u < v ? -1 : 1))
					goto oom;
				continue;
			}
			if (trib_sa_agree(shared, secret, r->c[u].s_pk) ||
			    trib_sa_derive(key, shared, 32, "mask", r->cfg.round, u < v ? u : v,
					   u < v ? v : u))
				goto oom;
			/* u added +PRG(s_uv) when v > u: take off what u put on. */
			if (push_stream(&s, &ns, &cap, key, u < v ? -1 : 1))
				goto oom;
		}
	}
	if (r->cfg.external_expand) {
		/* Kept for the functions (the list is the round's until it ends). */
		r->streams = s;
		r->nstreams = ns;
		r->cap_streams = cap;
		s = NULL;
		goto out;
	}
	if (expand_ranges(r, s, ns))
		goto oom;
	if (!sum_in_range(r))
		r->stage = RT_SECAGG_DONE;
	goto out;
oom:
	fail(r, "unmask: deriving the masks failed (out of memory or a low-order key)");
out:
	if (s)
		explicit_bzero(s, cap * sizeof(*s));
	trib_free(s);
	explicit_bzero(secret, sizeof(secret));
	explicit_bzero(key, sizeof(key));
	explicit_bzero(shared, sizeof(shared));
}

void rt_secagg_end_stage(struct rt_secagg *r)
{
	switch (r->stage) {
	case RT_SECAGG_ADVERTISE:
		end_advertise(r);
		break;
	case RT_SECAGG_SHARE:
		end_share(r);
		break;
	case RT_SECAGG_MASKED:
		end_masked(r);
		break;
	case RT_SECAGG_UNMASK:
		end_unmask(r);
		break;
	default:
		break;
	}
}

/* The checks every client call starts with. */
static int enter(struct rt_secagg *r, uint32_t u, enum rt_secagg_stage stage)
{
	if (u >= r->cfg.n_clients)
		return -ESRCH;
	if (r->stage != stage)
		return -EBUSY;
	if (!r->c[u].alive)
		return -EPERM;
	if (r->c[u].answered & (1u << stage))
		return -EALREADY;
	return 0;
}

int rt_secagg_advertise(struct rt_secagg *r, uint32_t u, const uint8_t c_pk[32],
			const uint8_t s_pk[32])
{
	int err = enter(r, u, RT_SECAGG_ADVERTISE);

	if (err)
		return err;
	/* A low-order key: no agreement with it, so no share to u, no unmasking of its masks. */
	if (trib_sa_public_key_check(c_pk) || trib_sa_public_key_check(s_pk))
		return -EINVAL;
	memcpy(r->c[u].c_pk, c_pk, 32);
	memcpy(r->c[u].s_pk, s_pk, 32);
	answer(r, u);
	return 0;
}

uint32_t rt_secagg_neighbours(const struct rt_secagg *r, uint32_t u, const uint32_t **ids)
{
	if (u >= r->cfg.n_clients || !r->c[u].alive || r->stage < RT_SECAGG_SHARE ||
	    r->stage >= RT_SECAGG_DONE)
		return 0;
	*ids = r->c[u].nbr;
	return r->c[u].nbr_n;
}

int rt_secagg_keys(const struct rt_secagg *r, uint32_t v, const uint8_t **c_pk,
		   const uint8_t **s_pk)
{
	if (v >= r->cfg.n_clients)
		return -ESRCH;
	if (!(r->c[v].answered & (1u << RT_SECAGG_ADVERTISE)))
		return -ENOENT;
	*c_pk = r->c[v].c_pk;
	*s_pk = r->c[v].s_pk;
	return 0;
}

int rt_secagg_share(struct rt_secagg *r, uint32_t u, const uint32_t *to,
		    const uint8_t *const *ct, uint32_t count)
{
	struct sa_client *c;
	uint8_t *seen;
	int err = enter(r, u, RT_SECAGG_SHARE);

	if (err)
		return err;
	c = &r->c[u];
	if (count != c->nbr_n)
		return -EINVAL;
	seen = trib_calloc(c->nbr_n ? c->nbr_n : 1, 1);
	if (!seen)
		return -ENOMEM;
	/* Validate everything before keeping anything: a refused message changes nothing. */
	for (uint32_t i = 0; i < count; i++) {
		uint32_t k = nbr_index(c, to[i]);

		if (k == UINT32_MAX || seen[k]) {
			trib_free(seen);
			return -EINVAL;
		}
		seen[k] = 1;
	}
	for (uint32_t i = 0; i < count; i++)
		memcpy(c->ct + (size_t)nbr_index(c, to[i]) * RT_SECAGG_CT_BYTES, ct[i],
		       RT_SECAGG_CT_BYTES);
	trib_free(seen);
	answer(r, u);
	return 0;
}

uint32_t rt_secagg_inbox(const struct rt_secagg *r, uint32_t u, uint32_t *from,
			 const uint8_t **ct, uint32_t cap)
{
	const struct sa_client *c;
	uint32_t n = 0;

	if (u >= r->cfg.n_clients || r->stage < RT_SECAGG_MASKED || r->stage >= RT_SECAGG_DONE ||
	    !r->c[u].in_u2)
		return 0;
	c = &r->c[u];
	for (uint32_t i = 0; i < c->nbr_n && n < cap; i++) {
		const struct sa_client *v = &r->c[c->nbr[i]];

		if (!v->in_u2)
			continue;
		from[n] = c->nbr[i];
		ct[n++] = v->ct + (size_t)nbr_index(v, u) * RT_SECAGG_CT_BYTES;
	}
	return n;
}

void rt_secagg_fail(struct rt_secagg *r, const char *why)
{
	fail(r, "%s", why);
}

int rt_secagg_masked_enter(struct rt_secagg *r, uint32_t u, bool mark)
{
	int err = enter(r, u, RT_SECAGG_MASKED);

	if (!err && mark)
		answer(r, u);
	return err;
}

int rt_secagg_set_sum(struct rt_secagg *r, const uint32_t *sum, size_t words)
{
	if (words != (size_t)r->cfg.dim + 1)
		return -EINVAL;
	if (sum != r->acc)
		memcpy(r->acc, sum, words * sizeof(*sum));
	return 0;
}

uint32_t *rt_secagg_sum_dst(struct rt_secagg *r, size_t words)
{
	return words == (size_t)r->cfg.dim + 1 ? r->acc : NULL;
}

int rt_secagg_masked(struct rt_secagg *r, uint32_t u, const uint32_t *y, size_t words)
{
	int err = enter(r, u, RT_SECAGG_MASKED);

	if (err)
		return err;
	if (words != (size_t)r->cfg.dim + 1)
		return -EINVAL;
	fn_fold_u32(r->acc, y, words);
	answer(r, u);
	return 0;
}

uint32_t rt_secagg_reveal_list(const struct rt_secagg *r, uint32_t u, uint32_t *v,
			       enum rt_secagg_kind *kind, uint32_t cap)
{
	const struct sa_client *c;
	uint32_t n = 0;

	if (u >= r->cfg.n_clients || r->stage != RT_SECAGG_UNMASK || !r->c[u].alive)
		return 0;
	c = &r->c[u];
	for (uint32_t i = 0; i < c->nbr_n && n < cap; i++) {
		const struct sa_client *w = &r->c[c->nbr[i]];

		if (!w->in_u2)
			continue;
		v[n] = c->nbr[i];
		kind[n++] = w->in_u3 ? RT_SECAGG_REVEAL_SELF : RT_SECAGG_REVEAL_SECRET;
	}
	return n;
}

int rt_secagg_unmask(struct rt_secagg *r, uint32_t u, const uint32_t *v,
		     const uint8_t *const *share, uint32_t count)
{
	struct trib_shamir_share *dec;
	uint32_t want = 0;
	int err = enter(r, u, RT_SECAGG_UNMASK);

	if (err)
		return err;
	for (uint32_t i = 0; i < r->c[u].nbr_n; i++)
		want += r->c[r->c[u].nbr[i]].in_u2;
	if (count != want)
		return -EINVAL;
	dec = trib_calloc(count ? count : 1, sizeof(*dec));
	if (!dec)
		return -ENOMEM;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t k = v[i] < r->cfg.n_clients ? nbr_index(&r->c[v[i]], u) : UINT32_MAX;

		/* Each listed v once, a neighbour in U2, and the share at u's own point. */
		for (uint32_t j = 0; j < i; j++)
			if (v[j] == v[i])
				k = UINT32_MAX;
		if (k == UINT32_MAX || !r->c[v[i]].in_u2 ||
		    trib_shamir_decode(share[i], RT_SECAGG_SECRET_BYTES, &dec[i]) ||
		    dec[i].x != u + 1) {
			explicit_bzero(dec, count * sizeof(*dec));
			trib_free(dec);
			return -EINVAL;
		}
	}
	for (uint32_t i = 0; i < count; i++) {
		struct sa_client *w = &r->c[v[i]];
		uint32_t k = nbr_index(w, u);

		w->rev[k] = dec[i];
		w->rev_have[k] = true;
	}
	explicit_bzero(dec, count * sizeof(*dec));
	trib_free(dec);
	answer(r, u);
	return 0;
}

int rt_secagg_result(const struct rt_secagg *r, const uint32_t **sum, uint32_t *weight,
		     float *out)
{
	double scale;
	uint32_t w;

	if (r->stage != RT_SECAGG_DONE)
		return -EBUSY;
	w = r->acc[r->cfg.dim];
	*sum = r->acc;
	*weight = w;
	if (w == 0)
		return -ERANGE;
	/* Dequantised once, on the mean: q -> q * 2c / (2^b - 1) - c. */
	scale = 2.0 * r->cfg.clip / (double)((UINT64_C(1) << r->cfg.bits) - 1) / w;
	for (uint32_t i = 0; i < r->cfg.dim; i++)
		out[i] = (float)(r->acc[i] * scale - r->cfg.clip);
	return 0;
}
