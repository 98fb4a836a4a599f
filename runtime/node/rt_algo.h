/* SPDX-License-Identifier: MIT */
/* A job's aggregation algorithm and its parameters: parsed and checked from the job's JSON. */
#ifndef RT_ALGO_H
#define RT_ALGO_H

#include <jansson.h>
#include <stdbool.h>

#include "fn_abi.h"

struct rt_algo {
	char name[32];         /* "fedavg", "fedadam", ... */
	struct fn_params par;  /* the template sent to functions (offsets filled per round) */
	double dp_delta;       /* for the accountant, when FN_PAR_DP */
	bool needs_model;      /* the top needs the previous model (delta, server optimiser) */
	bool async;            /* FedBuff: no round barrier; a version every buffer_size updates */
	uint16_t rule;         /* enum fn_robust_rule for exact robust rules, else 0 */
	float trim;            /* trimmed_mean */
	uint32_t f, m;         /* krum (f, m), bulyan (f) */
	bool trim_given, f_given; /* the job named them (else defaults, checked per round size) */
	uint32_t buffer_size;  /* FedBuff: K */
	uint32_t max_staleness; /* FedBuff: updates staler than this get 409 */
	float proximal_mu;     /* fedprox: the clients' proximal term, published (FedAvg here) */
	bool fedau;            /* fedau: each update weighs its client's interval estimate */
	uint32_t fedau_k;      /* fedau: the cutoff K, in rounds (trib_fedau.h) */
	bool scaffold;         /* scaffold: [x ; c] (fn_scaffold.h), the schema doubled */
	uint32_t scaffold_n;   /* scaffold: N, the client population */
	bool frl;              /* frl: I32 rankings voted into uint32 cells; an I32 model */
	bool flora;            /* flora: LoRA pairs stacked (rt_flora.h; the pairs are the job's) */
	bool flora_merge;      /* flora: the model is the base with each round's B A added */
};

/* scaffold_clients' bound: N travels as a float (fn_params.momentum), exact to 2^24. */
#define RT_SCAFFOLD_N_MAX 16777216

/*
 * fedprox's proximal_mu (Li et al., MLSys 2020: each client minimises
 * F_k(w) + mu/2 ||w - w_t||^2). The server folds as FedAvg and only publishes mu; the default is
 * the middle of the paper's grid {0.001, 0.01, 0.1, 1}, and at most 1000 (past that the term
 * pins every client to w_t: no training happens).
 */
#define RT_PROX_MU_DEFAULT 0.01f
#define RT_PROX_MU_MAX 1000.0

/*
 * Read "algorithm" and its parameters from the job object @o (other job
 * fields are ignored here). Unknown algorithms, parameters that do not apply
 * to the chosen algorithm, and out-of-range values give -EINVAL with *msg set
 * to a message naming the field (written into @msgbuf, @msglen bytes).
 * Returns 0 or -EINVAL.
 */
int rt_algo_parse(json_t *o, struct rt_algo *out, char *msgbuf, size_t msglen);

/* The i-th algorithm name this build knows ("fedavg", ...), NULL past the last. */
const char *rt_algo_name_at(size_t i);

/*
 * At job creation, for frl: k rankings of the largest tensor (@n_max entries, named @tensor)
 * must sum without overflow, k(n-1) <= 2^32 - 1 (fn_frl_votes_fit). 0, or -EINVAL with @msgbuf
 * naming clients_per_round, the tensor and the largest k that fits. Other algorithms: 0.
 */
int rt_algo_check_frl(const struct rt_algo *a, uint64_t k, uint64_t n_max, const char *tensor,
		      char *msgbuf, size_t msglen);

/*
 * At job creation: whether the robust rule of @a does anything for a round of @k_min to @k_max
 * updates (k_min: the fewest a round may close with, min_clients at a deadline, else
 * clients_per_round). Fills Krum's default f, floor((k_min - 3) / 2). A rule whose parameters do
 * nothing (a trim that cuts 0, Krum with f 0, a median of 2) is -EINVAL with @msgbuf naming the
 * smallest useful value; @deadline says k_min is min_clients. Not run for stored jobs, which
 * were checked when created.
 */
int rt_algo_check_clients(struct rt_algo *a, uint32_t k_min, uint32_t k_max, bool deadline,
			  char *msgbuf, size_t msglen);

/*
 * Writes into @params (the job's stored parameters) every default rt_algo_parse() filled in
 * for @a, so that a restart parses the same values even if a default changes later. 0 or
 * -ENOMEM.
 */
int rt_algo_pin_defaults(const struct rt_algo *a, json_t *params);

/* Whether @name is a parameter rt_algo_parse() reads. */
bool rt_algo_is_param(const char *name);

/* The parameters as a JSON object for GET /v1/jobs/{job} (new reference). */
json_t *rt_algo_json(const struct rt_algo *a);

#endif
