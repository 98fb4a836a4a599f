// SPDX-License-Identifier: MIT
/* The keys a node put into its store, per job: a filter in front of the store (rt_idem.h). */
#include "rt_idem.h"

#include <string.h>

#include "trib_alloc.h"
#include "trib_log.h"

#define IDEM_MEM_MIN 64

/* FNV-1a, 64 bits; never 0 (the empty slot). */
static uint64_t idem_hash(const void *key, size_t len)
{
	const uint8_t *p = key;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h | 1;
}

void rt_idem_mem_init(struct rt_idem_mem *m, uint32_t from)
{
	rt_idem_mem_free(m);
	m->from = from;
	m->on = true;
}

void rt_idem_mem_free(struct rt_idem_mem *m)
{
	trib_free(m->h);
	trib_free(m->round);
	memset(m, 0, sizeof(*m));
}

/* Stop covering: every lookup asks the store again. */
static void idem_off(struct rt_idem_mem *m)
{
	trib_warn("Idempotency-Key filter: out of memory; keys are looked up in the store");
	rt_idem_mem_free(m);
}

static void put(uint64_t *h, uint32_t *round, uint32_t cap, uint64_t x, uint32_t r)
{
	uint32_t i = (uint32_t)(x >> 32) & (cap - 1);

	while (h[i] && h[i] != x)
		i = (i + 1) & (cap - 1);
	if (!h[i] || r > round[i])
		round[i] = r; /* the same hash again: keep the latest round (pruned last) */
	h[i] = x;
}

/* Rebuild into @cap slots, keeping what is of rounds >= @below; false if out of memory. */
static bool rebuild(struct rt_idem_mem *m, uint32_t cap, uint32_t below)
{
	uint64_t *h = trib_calloc(cap, sizeof(*h));
	uint32_t *round = trib_calloc(cap, sizeof(*round));
	uint32_t n = 0;

	if (!h || !round) {
		trib_free(h);
		trib_free(round);
		return false;
	}
	for (uint32_t i = 0; i < m->cap; i++) {
		if (m->h[i] && m->round[i] >= below) {
			put(h, round, cap, m->h[i], m->round[i]);
			n++;
		}
	}
	trib_free(m->h);
	trib_free(m->round);
	m->h = h;
	m->round = round;
	m->cap = cap;
	m->n = n;
	return true;
}

void rt_idem_mem_add(struct rt_idem_mem *m, uint32_t round, const void *key, size_t len)
{
	if (!m->on)
		return;
	if ((uint64_t)(m->n + 1) * 4 > (uint64_t)m->cap * 3 &&
	    !rebuild(m, m->cap ? m->cap * 2 : IDEM_MEM_MIN, 0)) {
		idem_off(m);
		return;
	}
	put(m->h, m->round, m->cap, idem_hash(key, len), round);
	m->n++; /* a hash already there counts again: only makes the next growth come sooner */
}

bool rt_idem_mem_may_have(const struct rt_idem_mem *m, uint32_t round_lo, const void *key,
			  size_t len)
{
	uint64_t x;
	uint32_t i;

	if (!m->on || round_lo < m->from)
		return true;
	if (!m->cap)
		return false;
	x = idem_hash(key, len);
	for (i = (uint32_t)(x >> 32) & (m->cap - 1); m->h[i]; i = (i + 1) & (m->cap - 1))
		if (m->h[i] == x)
			return true;
	return false;
}

void rt_idem_mem_prune(struct rt_idem_mem *m, uint32_t below)
{
	uint32_t cap = m->cap;

	if (!m->on || !m->cap)
		return;
	/* Shrink when a quarter full after the prune would do. */
	while (cap > IDEM_MEM_MIN && cap / 2 >= m->n * 2)
		cap /= 2;
	if (!rebuild(m, cap, below) && !rebuild(m, m->cap, below))
		idem_off(m);
}
