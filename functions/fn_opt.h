/* SPDX-License-Identifier: MIT */
/* Server optimisers (FedAvg, FedAvgM, FedAdagrad, FedAdam, FedYogi) on the aggregated delta. */
#ifndef FN_OPT_H
#define FN_OPT_H

#include <stddef.h>
#include <stdint.h>

/*
 * The server step of Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2, on a
 * flat f32 model x and the round's aggregated (weighted mean) client delta d = mean(x_k - x).
 * Per element, in f32, with the coefficients rounded to f32 once (c1 = 1 - beta1,
 * c2 = 1 - beta2, computed in f32 from the f32 parameters):
 *
 *   fedavg:     x += lr * d
 *   fedavgm:    m  = momentum * m + d;                  x += lr * m
 *   fedadagrad: m  = beta1 * m + c1 * d;  v = v + d*d;  x += lr * m / (sqrt(v) + tau)
 *   fedadam:    m  = beta1 * m + c1 * d;
 *               v  = beta2 * v + c2 * d*d;              x += lr * m / (sqrt(v) + tau)
 *   fedyogi:    m  = beta1 * m + c1 * d;
 *               v  = v - c2 * d*d * sign(v - d*d);      x += lr * m / (sqrt(v) + tau)
 *
 * sign(0) = 0. d*d and v saturate at FLT_MAX (min(., FLT_MAX)), so a huge delta cannot make v
 * infinite or NaN. As in the paper there is no bias correction, m starts at 0 and v at tau^2
 * (the paper's v_{-1} >= tau^2; fn_opt_state_init() sets it). FedAvgM is Hsu et al. 2019
 * (server momentum, m = mu m + d). fedavg with lr = 1 is plain FedAvg on deltas.
 */
enum fn_opt_kind {
	FN_OPT_FEDAVG = 0,
	FN_OPT_FEDAVGM = 1,
	FN_OPT_FEDADAGRAD = 2,
	FN_OPT_FEDADAM = 3,
	FN_OPT_FEDYOGI = 4,
};

/* Job parameters (names as in POST /v1/jobs); fn_opt_params_default() fills the defaults. */
struct fn_opt_params {
	uint32_t kind;   /* enum fn_opt_kind */
	float server_lr; /* eta > 0, finite */
	float momentum;  /* fedavgm: mu in [0, 1) */
	float beta1;     /* adaptive: [0, 1) */
	float beta2;     /* adaptive: [0, 1) */
	float tau;       /* adaptive: > 0 (adaptivity; also v's start value is tau^2) */
};

/*
 * Optimiser state. m and v are caller-owned arrays of n floats each when the kind needs them
 * (fn_opt_state_elems() says), NULL otherwise; the state only borrows them. Persist the state
 * with the model (fn_opt_state_save()) so a restarted job continues the same trajectory.
 */
struct fn_opt_state {
	uint32_t kind; /* enum fn_opt_kind the state was made for */
	uint64_t n;    /* elements in the model, m and v */
	uint64_t step; /* server steps taken so far */
	float *m;      /* first moment / momentum buffer, or NULL (fedavg) */
	float *v;      /* second moment, or NULL (fedavg, fedavgm) */
};

/*
 * Defaults (docs/ALGORITHMS.md says where each comes from): server_lr 1 for fedavg and fedavgm,
 * 0.1 for fedadagrad and fedadam, 0.01 for fedyogi (Flower's eta); momentum 0.9, beta1 0.9,
 * beta2 0.99 (Reddi et al. 2021); tau 1e-3 (Flower's serverapp strategies).
 */
void fn_opt_params_default(struct fn_opt_params *p, uint32_t kind);

/*
 * 0 if @p is valid, or -EINVAL with *field (if not NULL) set to the name of the first bad
 * parameter (a static string: "algorithm", "server_lr", "momentum", "beta1", "beta2", "tau"),
 * for a 400 naming the field. Parameters a kind does not use are not checked.
 */
int fn_opt_params_check(const struct fn_opt_params *p, const char **field);

/* How many floats the caller must provide for m and for v for @kind (each 0 or n). */
void fn_opt_state_elems(uint32_t kind, uint64_t n, uint64_t *m_elems, uint64_t *v_elems);

/*
 * Starts a fresh state: m = 0, v = tau^2, step = 0. @m and @v are borrowed (caller-owned,
 * sized per fn_opt_state_elems(); pass NULL where that says 0). 0 or -EINVAL.
 */
int fn_opt_state_init(struct fn_opt_state *st, const struct fn_opt_params *p, uint64_t n, float *m,
		      float *v);

/*
 * One server step: moves @model (n floats, updated in place) by @delta (n floats, borrowed,
 * must not overlap model or the state's arrays) and advances @st. 0; -EINVAL when @p is invalid
 * or does not match the state's kind or size (nothing changed); -ERANGE when the step made a
 * model value infinite (x + lr*m overflowed): model and state are then unusable, so the caller
 * must not publish them and reloads both from the last saved version.
 */
int fn_opt_step(const struct fn_opt_params *p, struct fn_opt_state *st, float *model,
		const float *delta, size_t n);

/*
 * Serialised state: a 32-byte little-endian header {magic "TRIBOPT\0", u32 version (1),
 * u32 kind, u64 n, u64 step}, then m (if any), then v (if any), as little-endian f32.
 */
#define FN_OPT_STATE_MAGIC "TRIBOPT"
#define FN_OPT_STATE_VERSION 1u
#define FN_OPT_STATE_HDR 32u

/* Bytes fn_opt_state_save() writes for @st. */
size_t fn_opt_state_size(const struct fn_opt_state *st);

/*
 * Writes @st into @buf (@len bytes, caller-owned). 0, or -ENOSPC if len is too small.
 */
int fn_opt_state_save(const struct fn_opt_state *st, void *buf, size_t len);

/*
 * Reads a saved state from @buf (@len bytes, borrowed) into @st, whose m and v the caller has
 * already pointed at arrays of the right size for (kind, n): fn_opt_state_init() first. 0,
 * -EINVAL (bad magic, version, or a kind or n that differs from @st), or -EMSGSIZE (len is not
 * exactly the size the header implies).
 */
int fn_opt_state_load(struct fn_opt_state *st, const void *buf, size_t len);

#endif
