// SPDX-License-Identifier: MIT
/*
 * Secure aggregation's unmasking: the ranged mask expansion and the shard that runs it. Only
 * tributary-fn-sa links this file (with the PRG on OpenSSL's ChaCha20, core/trib_secagg_crypto.c);
 * the plain tributary-fn links fn_secagg_absent.c in its place, so that libsodium and libcrypto
 * stay out of every plain function's start (docs/ARCHITECTURE.md, "The secure function binary").
 */
#include "fn_secagg.h"

#include <errno.h>
#include <string.h>

#include "fn_abi.h"
#include "fn_algo.h"
#include "trib_secagg_crypto.h"

int fn_secagg_expand(uint32_t *acc, uint64_t first, size_t n,
		     const struct fn_secagg_stream *streams, size_t count)
{
	const uint8_t *keys[TRIB_SA_PRG_MANY_MAX];
	int signs[TRIB_SA_PRG_MANY_MAX];

	/* Groups of streams in one pass over acc each (trib_sa_prg_add_many says why). */
	for (size_t j = 0; j < count;) {
		size_t k = 0;
		int err;

		for (; k < TRIB_SA_PRG_MANY_MAX && j < count; k++, j++) {
			keys[k] = streams[j].key;
			signs[k] = streams[j].sign;
		}
		err = trib_sa_prg_add_many(acc, n, first, k, keys, signs);
		if (err)
			return err;
	}
	return 0;
}

/*
 * A shard of an unmasking (struct fn_secagg_task): its range of the correction, written whole.
 * The task is the runtime's but is checked like any input: a bad one fails the shard, it never
 * reads or writes outside the arena.
 */
int fn_secagg_pair_key(const struct fn_secagg_pair *p, uint64_t round, struct fn_secagg_stream *out)
{
	uint8_t shared[32];
	int err;

	if (p->lo >= p->hi || (p->sign != 1 && p->sign != -1))
		return -EINVAL;
	err = trib_sa_agree(shared, p->sk, p->pk);
	if (!err)
		err = trib_sa_derive(out->key, shared, 32, "mask", round, p->lo, p->hi);
	explicit_bzero(shared, sizeof(shared));
	out->sign = p->sign;
	return err ? -EINVAL : 0;
}

static int sa_shard(void *state, const struct fn_algo_ctx *ctx)
{
	struct fn_secagg_task task, *t = &task;
	const struct fn_secagg_pair *pairs;
	struct fn_secagg_stream some[TRIB_SA_PRG_MANY_MAX];
	uint32_t *acc = (uint32_t *)(void *)ctx->acc, k = 0;
	uint64_t first, n;
	int err;

	(void)state;
	if (ctx->par->state_off % 8 || !fn_ctx_range_ok(ctx, ctx->par->state_off, sizeof(*t)))
		return -EINVAL;
	/*
	 * The task is read once, then checked and used from this copy: the slot is shared, and a
	 * runtime that restarted mid-unmask may reuse it while this shard still runs (an offset
	 * checked, then read again changed, was seen as a misaligned pairs pointer under UBSan).
	 */
	memcpy(&task, ctx->base + ctx->par->state_off, sizeof(task));
	if (t->version != FN_ABI_VERSION || t->words != ctx->cfg->n_elem || t->streams_off % 4 ||
	    t->pairs_off % 4 ||
	    !fn_ctx_range_ok(ctx, t->streams_off, (uint64_t)t->count * sizeof(struct fn_secagg_stream)) ||
	    !fn_ctx_range_ok(ctx, t->pairs_off, (uint64_t)t->npairs * sizeof(*pairs)) ||
	    fn_secagg_range(t->words, t->parts, ctx->cfg->index, &first, &n))
		return -EINVAL;
	memset(acc + first, 0, (size_t)n * sizeof(*acc));
	err = fn_secagg_expand(acc + first, first, (size_t)n,
			       (const struct fn_secagg_stream *)(const void *)(ctx->base +
										t->streams_off),
			       t->count);
	pairs = (const struct fn_secagg_pair *)(const void *)(ctx->base + t->pairs_off);
	/*
	 * Each shard derives every pair's key for its own range: the agreements run in parallel.
	 * The streams are expanded a group at a time, like the self masks.
	 */
	for (uint32_t i = 0; !err && i < t->npairs; i++) {
		err = fn_secagg_pair_key(&pairs[i], t->round, &some[k++]);
		if (!err && (k == TRIB_SA_PRG_MANY_MAX || i + 1 == t->npairs)) {
			err = fn_secagg_expand(acc + first, first, (size_t)n, some, k);
			k = 0;
		}
	}
	explicit_bzero(some, sizeof(some));
	return err;
}

const struct fn_algo_ops fn_secagg_unmask_ops = {
	.name = "secagg_unmask",
	.state_size = 0,
	.shard = sa_shard,
};
