/* SPDX-License-Identifier: MIT */
/* One SecAgg+ round on one node: its stages, dropouts, the routing of shares and the unmasking. */
#ifndef RT_SECAGG_H
#define RT_SECAGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trib_shamir.h"

/*
 * The protocol (Bonawitz et al. CCS 2017 with Bell et al.'s sparse graph, CCS 2020), for a
 * semi-honest server; the primitives and their byte formats are core/trib_secagg_crypto.h and
 * core/trib_shamir.h. Clients are numbered 0 .. n_clients - 1; client u's Shamir point is u + 1.
 * Each stage ends at its deadline or when every client still in the round has answered; a client
 * that misses a stage is out of the round from then on.
 *
 *   ADVERTISE  u sends c_pk_u, s_pk_u. At the end U1 = who did; the graph is drawn over U1: a
 *              ring over U1 in an order shuffled by the round's graph seed, each client joined
 *              to the k/2 before and after it (every other client if k >= |U1| - 1).
 *   SHARE      u gets its neighbours' public keys, and sends for each neighbour v one
 *              ciphertext RT_SECAGG_CT_BYTES long: nonce || ChaCha20-Poly1305 under
 *              derive(X25519(c_sk_u, c_pk_v), "share", round, u, v) of the plaintext
 *              (RT_SECAGG_PT_BYTES) u32 LE u || u32 LE v || u64 LE round || share of s_sk_u ||
 *              share of b_u (each TRIB_SHAMIR_SHARE_BYTES(32) bytes, at point v + 1), with the
 *              associated data u32 LE u || u32 LE v. The server keeps the ciphertexts opaque.
 *              At the end U2 = who sent them all, pruned until everyone in U2 has at least t
 *              neighbours in U2 (fewer could not have its secrets rebuilt).
 *   MASKED     u gets the ciphertexts addressed to it by its neighbours in U2 (its "inbox"),
 *              and sends y_u = x_u + PRG(b_u) + sum_{v in N(u) & U2, v > u} PRG(s_uv)
 *              - sum_{v in N(u) & U2, v < u} PRG(s_uv) (mod 2^32), x_u = n_u * q(x) followed
 *              by n_u (dim + 1 words). The server folds it (fn_fold_u32; through the API, the
 *              job's function tree does: rt_secagg_set_sum) and keeps only the sum. U3 = who did.
 *   UNMASK     u gets the list of what to reveal: for each neighbour v in U2, the share of b_v
 *              if v is in U3, else the share of s_sk_v; never both for one v (the server asks
 *              only one, and an honest client checks). U4 = who answered. The server rebuilds
 *              each secret from t shares, subtracts the survivors' self masks and the dropped
 *              clients' pairwise masks (fn_secagg_expand, by coordinate range; with
 *              cfg.external_expand the job's functions expand them: rt_secagg_streams,
 *              rt_secagg_correct) and dequantises the weighted mean once:
 *              x = (S / W) * 2c / (2^b - 1) - c.
 *
 * Below the threshold at any stage end (|U1|, |U2|, |U3| or |U4| < t, or a secret with fewer
 * than t shares) the round is FAILED, says why, and unmasks nothing. So is a round whose
 * unmasked sum is outside what honest inputs make (W = 0 or above |U3| * max_samples, or a
 * value above W * (2^b - 1)): a client sent n_u or q out of range and the sum may have wrapped.
 */
#define RT_SECAGG_SECRET_BYTES 32u
#define RT_SECAGG_SHARE_BYTES TRIB_SHAMIR_SHARE_BYTES(RT_SECAGG_SECRET_BYTES)
#define RT_SECAGG_PT_BYTES (16u + 2u * RT_SECAGG_SHARE_BYTES)
#define RT_SECAGG_CT_BYTES (12u + RT_SECAGG_PT_BYTES + 16u)
/* Most clients in one secure round (the graph and the share routing are O(n k)). */
#define RT_SECAGG_MAX_CLIENTS 100000u
/* Most neighbours (SecAgg+ uses O(log n); a complete graph of 256 is plain SecAgg). */
#define RT_SECAGG_MAX_NEIGHBOURS 254u
/*
 * A round's memory: per client and neighbour, its id, the ciphertext routed and the reveal kept
 * (RT_SECAGG_EDGE_BYTES); clients x min(k, clients - 1) of them must fit RT_SECAGG_STATE_MAX,
 * checked when the job is made (100000 clients x 254 neighbours would be 5.7 GB per round).
 */
#define RT_SECAGG_EDGE_BYTES (4u + RT_SECAGG_CT_BYTES + sizeof(struct trib_shamir_share) + 1u)
#define RT_SECAGG_STATE_MAX (1ull << 30)
/* Most bits per quantised value; n_u * (2^bits - 1) summed over clients must stay below 2^32. */
#define RT_SECAGG_MAX_BITS 24u

enum rt_secagg_stage {
	RT_SECAGG_ADVERTISE,
	RT_SECAGG_SHARE,
	RT_SECAGG_MASKED,
	RT_SECAGG_UNMASK,
	RT_SECAGG_DONE,
	RT_SECAGG_FAILED,
};

/* What reveal u must send for neighbour v at UNMASK. */
enum rt_secagg_kind {
	RT_SECAGG_REVEAL_SELF = 1,   /* v survived: its self-mask seed b_v */
	RT_SECAGG_REVEAL_SECRET = 2, /* v dropped: its pairwise secret key s_sk_v */
};

struct rt_secagg_cfg {
	uint32_t n_clients;  /* 1 .. RT_SECAGG_MAX_CLIENTS */
	uint32_t threshold;  /* t: 1 .. neighbours */
	uint32_t neighbours; /* k: even, 2 .. RT_SECAGG_MAX_NEIGHBOURS */
	uint32_t bits;       /* b: 1 .. RT_SECAGG_MAX_BITS */
	/* n_u at most (a client's sample count, its fedavg weight): 1 .. rt_secagg_max_samples();
	 * 0 takes that bound */
	uint32_t max_samples;
	float clip;          /* c: finite, > 0 */
	uint32_t dim;        /* model values; the masked vector has dim + 1 words */
	uint64_t round;
	uint8_t graph_seed[32]; /* shuffles the ring; the server draws it per round */
	/*
	 * false: the unmask stage's end expands the mask streams here, on the caller's thread.
	 * true: it stops with the streams listed (rt_secagg_streams) for others to expand, and
	 * rt_secagg_correct() finishes the round with their sum.
	 */
	bool external_expand;
};

struct rt_secagg;

/*
 * The largest n_u a round of @n_clients at @bits sums exactly. Each client masks n_u * q_i
 * (q_i <= 2^b - 1) and n_u; the sums are taken mod 2^32 and hidden from the server until the
 * end, so they are exact only if they cannot wrap whatever the clients send within the rules:
 *     n_clients * max_samples * (2^b - 1) < 2^32,  that is
 *     max_samples = floor((2^32 - 1) / (n_clients * (2^b - 1)))
 * (which also bounds the weight's sum, n_clients * max_samples < 2^32). 0: even n_u = 1 wraps.
 */
uint32_t rt_secagg_max_samples(uint32_t n_clients, uint32_t bits);

/* Checks cfg; 0 or -EINVAL with why[0..why_len) saying which field, its value and the range. */
int rt_secagg_cfg_check(const struct rt_secagg_cfg *cfg, char *why, size_t why_len);

/* A new round in ADVERTISE. 0, -EINVAL (cfg_check) or -ENOMEM. *out owned by the caller. */
int rt_secagg_new(const struct rt_secagg_cfg *cfg, struct rt_secagg **out);
/* The round's configuration (borrowed, for r's life). */
const struct rt_secagg_cfg *rt_secagg_config(const struct rt_secagg *r);
/* Frees r and everything it holds (accepts NULL). Secrets are wiped first. */
void rt_secagg_free(struct rt_secagg *r);

enum rt_secagg_stage rt_secagg_stage(const struct rt_secagg *r);
const char *rt_secagg_stage_name(enum rt_secagg_stage s);
/* Why the round failed (a static-lifetime string inside r), or "" when it did not. */
const char *rt_secagg_why(const struct rt_secagg *r);
/* Clients still in the round (U1, U2, U3, U4 as the stages end). */
uint32_t rt_secagg_alive(const struct rt_secagg *r);
/* Clients whose masked input is in the sum (|U3|; 0 before MASKED ends). */
uint32_t rt_secagg_inputs(const struct rt_secagg *r);
/* Has every client still in the round answered the current stage? */
int rt_secagg_stage_complete(const struct rt_secagg *r);
/* Ends the current stage (its deadline passed, or it is complete): the next stage, or FAILED. */
void rt_secagg_end_stage(struct rt_secagg *r);

/*
 * Each stage's client call returns 0, -ESRCH if u is not a client, -EPERM if u is out of the
 * round, -EBUSY if the round is not in that stage, -EALREADY if u already answered it, -EINVAL
 * for a malformed message (nothing is kept then). Pointers are borrowed; r copies what it keeps.
 */
/* (-EINVAL: c_pk or s_pk is a low-order point, trib_sa_public_key_check.) */
int rt_secagg_advertise(struct rt_secagg *r, uint32_t u, const uint8_t c_pk[32],
			const uint8_t s_pk[32]);
/*
 * After ADVERTISE: u's neighbours, ids ascending. Returns their count (0 if u is out or the graph
 * is not drawn yet); *ids points into r until r is freed.
 */
uint32_t rt_secagg_neighbours(const struct rt_secagg *r, uint32_t u, const uint32_t **ids);
/* v's advertised keys (pointers into r), or -ENOENT if v did not advertise, -ESRCH if no client. */
int rt_secagg_keys(const struct rt_secagg *r, uint32_t v, const uint8_t **c_pk,
		   const uint8_t **s_pk);
/* u's ciphertexts for its neighbours: to[i] gets ct[i] (RT_SECAGG_CT_BYTES), all of them once. */
int rt_secagg_share(struct rt_secagg *r, uint32_t u, const uint32_t *to,
		    const uint8_t *const *ct, uint32_t count);
/*
 * After SHARE: the ciphertexts addressed to u from its neighbours in U2 (their ids ascending:
 * the neighbours u masks with). Returns the count; from[i] sent ct[i]; both point into r.
 */
uint32_t rt_secagg_inbox(const struct rt_secagg *r, uint32_t u, uint32_t *from,
			 const uint8_t **ct, uint32_t cap);
/*
 * u's masked vector, dim + 1 words (host order), folded into the round's own sum: the path of
 * the unit tests and of a caller without a function tree. The API's path is the tree's
 * (rt_job_secagg_accept): rt_secagg_masked_enter(r, u, false) checks that u may send its input
 * now (the errors below), (r, u, true) records that it did, and rt_secagg_set_sum() hands the
 * tree's sum of the round's inputs in before the unmask stage ends.
 */
int rt_secagg_masked(struct rt_secagg *r, uint32_t u, const uint32_t *y, size_t words);
int rt_secagg_masked_enter(struct rt_secagg *r, uint32_t u, bool mark);
/* The masked sum of every input of U3 (dim + 1 words, copied unless @sum is rt_secagg_sum_dst's).
 * 0, or -EINVAL for another length. */
struct fn_secagg_stream;
struct fn_secagg_pair;
/*
 * With cfg.external_expand, after the unmask stage ended: the mask streams to expand (*s into r,
 * valid until the round ends) and their count, and the *np pairwise streams of dropped clients
 * (*p: secret key, peer key, pair; functions/fn_secagg.h) whose X25519 agreements are left to
 * the expanders; 0 when none is pending (not that stage, or the round failed). Secrets all:
 * copy them only where they are wiped after.
 */
size_t rt_secagg_streams(const struct rt_secagg *r, const struct fn_secagg_stream **s,
			 const struct fn_secagg_pair **p, size_t *np);
/*
 * The pending streams' sum (@words = dim + 1, little-endian host u32) is added to the masked sum
 * and the round is DONE (its streams wiped). @corr NULL: expanded here instead. 0, -EBUSY (none
 * pending), -EINVAL (length), -ERANGE (the unmasked sum is outside what honest inputs make) or
 * the expansion's error (the round FAILED then).
 */
int rt_secagg_correct(struct rt_secagg *r, const uint32_t *corr, size_t words);

/* The round fails with @why (a sentence): nothing is unmasked, the masked sum is wiped. */
void rt_secagg_fail(struct rt_secagg *r, const char *why);
int rt_secagg_set_sum(struct rt_secagg *r, const uint32_t *sum, size_t words);
/*
 * Where the round keeps its sum (dim + 1 words; NULL for another length): the tree's sum is
 * copied there once (rt__secagg_take_sum) and rt_secagg_set_sum of that pointer copies nothing.
 * Valid until rt_secagg_free, which wipes it.
 */
uint32_t *rt_secagg_sum_dst(struct rt_secagg *r, size_t words);
/* After MASKED: what u must reveal: v[i] with kind[i]. Returns the count (<= cap). */
uint32_t rt_secagg_reveal_list(const struct rt_secagg *r, uint32_t u, uint32_t *v,
			       enum rt_secagg_kind *kind, uint32_t cap);
/* u's reveals: for v[i], share[i] (RT_SECAGG_SHARE_BYTES, at point u + 1), exactly the list. */
int rt_secagg_unmask(struct rt_secagg *r, uint32_t u, const uint32_t *v,
		     const uint8_t *const *share, uint32_t count);

/*
 * After DONE: the exact integer sums (S[0..dim) and W = sum of n_u, borrowed from r) and the
 * dequantised weighted mean in out[0..dim). -EBUSY before DONE, -ERANGE if W is 0.
 */
int rt_secagg_result(const struct rt_secagg *r, const uint32_t **sum, uint32_t *weight,
		     float *out);

#endif
