/* SPDX-License-Identifier: MIT */
/* The channel between the node runtime and an aggregation function: 64-byte records only. */
#ifndef FN_ABI_H
#define FN_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"

/*
 * A function's channel (fd FN_CHANNEL_FD, a Unix SOCK_SEQPACKET socket)
 * carries records of exactly SHM_DESC_SIZE bytes; one message may hold
 * several. Each record starts with {u16 version, u16 kind}: kinds below 16
 * are struct shm_desc (enum shm_desc_kind), the others are control records.
 */
#define FN_ABI_VERSION 1
#define FN_CHANNEL_FD 3 /* control: configs (with the arena fd), exit; descriptors in shm+unix */
#define FN_DATA_FD 4    /* shm+bpf and tcp: the function's TCP socket (descriptors, payloads) */
#define FN_STATS_FD 5   /* shm+bpf: the BPF fn_stats map, mmapped to count taken descriptors */
/* argv[1] when the runtime spawned the function SCHED_FIFO for its idle phase (fn_sched.h). */
#define FN_ARG_IDLE_FIFO "--idle-fifo"

/* How descriptors (and, in tcp, the bytes) reach a function; values are part of the ABI. */
enum fn_dataplane {
	FN_DP_SHM_UNIX = 1, /* descriptors over the Unix control channel, routed by the runtime */
	FN_DP_SHM_BPF = 2,  /* descriptors over TCP sockets in a sockmap, routed by sk_msg */
	FN_DP_TCP = 3,      /* baseline: descriptor + payload bytes copied over loopback TCP */
};

enum fn_msg_kind {
	FN_MSG_CONFIG = 16, /* runtime -> fn, struct fn_config: aggregate (the first carries the arena fd) */
	FN_MSG_EXIT = 17,   /* runtime -> fn: exit now (scale to zero), whatever is pending */
	FN_MSG_READY = 18,  /* fn -> runtime, struct fn_ctl: configured, folding from now on */
	FN_MSG_DONE = 19,   /* fn -> runtime, struct shm_desc: the output it handed off; now warm */
	FN_MSG_FLUSH = 20,  /* runtime -> fn, struct fn_ctl: expect @value inputs in all, not more */
	FN_MSG_PARAMS = 21, /* runtime -> fn, struct fn_params: the job's algorithm, after a CONFIG */
	/*
	 * runtime -> fn, struct fn_ctl with the arena fd: a pre-started function
	 * (--fn-pool) maps the arena and waits warm; it answers READY with value
	 * FN_READY_IDLE. Its first CONFIG then carries no fd.
	 */
	FN_MSG_ATTACH = 22,
};

/* READY's value: 0 after a CONFIG; FN_READY_IDLE after an ATTACH (pre-started, no work yet). */
#define FN_READY_IDLE 1u

/* struct fn_params flags. */
#define FN_PAR_UNWEIGHTED 1u /* every update weighs 1, not its sample count */
#define FN_PAR_DELTA 2u      /* updates are deltas: the model moves by their mean */
#define FN_PAR_CLIP 4u       /* leaves clip each update to L2 norm clip_norm */
#define FN_PAR_DP 8u         /* the top adds Gaussian noise dp_noise_multiplier * clip_norm */
#define FN_PAR_SEEDED 16u    /* DP noise from `seed` (tests), not from the OS */

/*
 * The job's algorithm and server step, sent after every CONFIG (a function
 * may serve another job next). The previous model and the optimiser state
 * are arena slots the runtime owns: the top reads the model and the state's
 * first half and writes the next state into its second half; the runtime
 * keeps that only once the round's model is written.
 */
struct fn_params {
	uint16_t version;          /* FN_ABI_VERSION */
	uint16_t kind;             /* FN_MSG_PARAMS */
	uint32_t fn_id;            /* the function it is for */
	uint16_t server;           /* enum fn_opt_kind: FedAvg, FedAvgM, FedAdagrad, FedAdam, FedYogi */
	uint16_t flags;            /* FN_PAR_* */
	float server_lr;           /* eta */
	float momentum;            /* FedAvgM; scaffold: N, its client population (exact to 2^24) */
	float beta1;               /* adaptive optimisers */
	float beta2;
	float tau;
	float clip_norm;           /* FN_PAR_CLIP, FN_PAR_DP */
	float dp_noise_multiplier; /* FN_PAR_DP: z; noise stddev z * clip_norm on the sum */
	uint64_t seed;             /* FN_PAR_SEEDED */
	uint64_t model_off;        /* arena offset of the previous model (n f32), 0: not needed */
	uint64_t state_off;        /* arena offset of the optimiser state [in | out], 0: none */
};
_Static_assert(sizeof(struct fn_params) == SHM_DESC_SIZE, "fn_params is a channel record");
_Static_assert(offsetof(struct fn_params, seed) == 40, "fn_params is ABI");

/*
 * Small control records (READY, FLUSH, EXIT). A function lives across
 * configs: after DONE it waits warm for the next CONFIG, for any job, round
 * or level, until EXIT or the runtime closes its channel.
 */
struct fn_ctl {
	uint16_t version;     /* FN_ABI_VERSION */
	uint16_t kind;        /* enum fn_msg_kind */
	uint32_t fn_id;       /* the function concerned */
	uint32_t job;         /* job of the config it refers to */
	uint32_t round;       /* round of the config it refers to */
	uint32_t value;       /* FLUSH: inputs expected in all */
	/*
	 * READY: the function's CLOCK_MONOTONIC when it became ready to fold
	 * (the runtime's clock too: it spawned us). The hand-off is measured to
	 * this instant, not to when the runtime's busy event loop reads the
	 * record: nothing waits for READY, inputs queue on the channel at once.
	 */
	uint64_t at_ns;
	uint32_t reserved[8]; /* zero */
};
_Static_assert(sizeof(struct fn_ctl) == SHM_DESC_SIZE, "fn_ctl is a channel record");
_Static_assert(offsetof(struct fn_ctl, at_ns) == 24, "fn_ctl is ABI");

enum fn_role {
	FN_ROLE_LEAF = 1, /* folds client updates, hands a partial to its parent */
	FN_ROLE_TOP = 2,  /* folds partials, divides, hands the model to the runtime */
	FN_ROLE_MID = 3,  /* third level: folds its group's leaf partials, hands a partial up */
	FN_ROLE_SHARD = 4, /* exact robust rules: one range of coordinates over every update */
};

/* Robust rules computed by shards; values are part of the ABI. */
enum fn_robust_rule {
	FN_RULE_MEDIAN = 1,
	FN_RULE_TRIMMED_MEAN = 2,
	FN_RULE_KRUM = 3, /* Krum (m = 1) and Multi-Krum (m > 1) */
	FN_RULE_BULYAN = 4, /* Krum's phases; m = theta selected, then a trimmed mean cutting f */
};

/*
 * A robust round's task, in an arena slot the runtime owns (a shard gets
 * its offset as fn_params.state_off; its coordinates are the index-th of
 * `shards` equal ranges). Layout: this header, then k update descriptors
 * (struct shm_desc, the round's updates in acceptance order), then for Krum
 * `shards` partial distance matrices (k*k doubles each, row-major), then the
 * m selected update indexes (uint32_t). Exact rules need every value of a
 * coordinate in one place: a shard holds none of them, it reads the updates
 * where they landed, so memory per shard is bounded by its scratch.
 */
struct fn_shard_task {
	uint16_t version;   /* FN_ABI_VERSION */
	uint16_t rule;      /* enum fn_robust_rule */
	uint32_t k;         /* updates in the round */
	uint32_t shards;    /* shard functions */
	uint32_t phase;     /* Krum, Bulyan: 1 distances, 2 aggregate the selected; else 1 */
	uint32_t f;         /* Krum, Bulyan: Byzantine clients assumed */
	uint32_t m;         /* Krum: clients selected (1: Krum, > 1: Multi-Krum); Bulyan: theta */
	float trim;         /* trimmed mean: fraction cut from each end */
	uint32_t reserved0; /* zero */
	uint64_t descs_off; /* arena offset of the k descriptors */
	uint64_t dmat_off;  /* Krum: arena offset of the shards' distance matrices */
	uint64_t sel_off;   /* Krum: arena offset of the m selected indexes */
	/*
	 * The coordinates [range_lo, range_hi) the shards split (a cluster node's range of the
	 * model, docs/ARCHITECTURE.md "Robust rules across nodes"); 0, 0: the whole model.
	 */
	uint64_t range_lo, range_hi;
};
_Static_assert(sizeof(struct fn_shard_task) == 72, "fn_shard_task is ABI");

/*
 * The job's base algorithm (functions/fn_algos.c maps each to its ops). The runtime sends
 * FEDAVG for every job: the server optimisers, FedBuff, clipping and DP ride in struct
 * fn_params and the descriptors, and the robust rules in the shard task. Values are contiguous
 * from 1.
 */
enum fn_algorithm {
	FN_ALGO_FEDAVG = 1,
	FN_ALGO_SCAFFOLD = 2, /* fn_scaffold.c: [x ; c], its own server step (no fn_opt stage) */
	FN_ALGO_FRL = 3, /* fn_frl.c: uint32 votes in the accumulator's cells; the runtime sorts */
	FN_ALGO_FLORA = 4, /* fn_flora.c: LoRA pairs placed in rank blocks; the runtime finishes */
	FN_ALGO_SECAGG = 5, /* fn_secagg.c: masked u32 words summed mod 2^32; the runtime unmasks */
	FN_ALGO_END, /* one past the last value; never sent */
};

/*
 * Tells a function what to aggregate. Slots stay the runtime's: a function
 * folds update and partial slots but never frees them (the runtime frees an
 * update's slot once the partial it went into exists, and partials once the
 * round's model is written), so a function killed mid-round loses nothing
 * that cannot be folded again. The first SHM_ACC_HDR bytes of the
 * accumulator slot are for the output's segment table.
 */
struct fn_config {
	uint16_t version;      /* FN_ABI_VERSION */
	uint16_t kind;         /* FN_MSG_CONFIG */
	uint32_t fn_id;        /* this function's routing key (> 0) */
	uint32_t parent;       /* routing key of the output's destination */
	uint32_t job;          /* node-local job id */
	uint32_t round;        /* the round being aggregated */
	uint32_t expected;     /* inputs to fold before handing off (updates or partials) */
	uint16_t role;         /* enum fn_role */
	uint16_t algorithm;    /* enum fn_algorithm */
	uint32_t index;        /* leaf: its place among the parent's children (a partial's seq) */
	uint64_t n_elem;       /* elements in the flat model */
	uint64_t acc_off;      /* arena offset of the accumulator slot */
	uint64_t acc_data_off; /* arena offset of the accumulator's first element */
	uint32_t dataplane;    /* enum fn_dataplane */
	uint32_t flags;        /* FN_CFG_* */
};

/*
 * `expected` is final: hand off once that many inputs are folded. Without
 * it (a top while its round is open: the autoscaler may still add leaves)
 * the function waits for a FLUSH that gives the final count.
 */
#define FN_CFG_FINAL 1u
/*
 * A top that hands off its sum (and total weight), not the model: a node's
 * part of a round that spans nodes. The round's top, on one node, folds
 * these sums and divides once.
 */
#define FN_CFG_SUM 2u
_Static_assert(sizeof(struct fn_config) == SHM_DESC_SIZE, "fn_config is a channel record");
_Static_assert(offsetof(struct fn_config, n_elem) == 32, "fn_config is ABI");

/* Bytes at the start of an accumulator slot before the data: segment table and skew. */
#define SHM_ACC_HDR 4096u

#endif
