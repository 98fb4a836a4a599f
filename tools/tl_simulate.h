/* SPDX-License-Identifier: MIT */
/* `tributary simulate`: a load generator that also checks every aggregated model it causes. */
#ifndef TL_SIMULATE_H
#define TL_SIMULATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tl_client.h"

enum tl_sim_format {
	TL_SIM_RAW = 0,         /* application/octet-stream, little-endian f32 */
	TL_SIM_SAFETENSORS = 1, /* application/x-safetensors, one F32 tensor "weights" */
	TL_SIM_MIXED = 2,       /* even clients raw, odd clients safetensors */
};

/*
 * The dtype of the "weights" tensor of a safetensors update (--dtype). Every
 * element is exact in it: (bits >> s) * 2^-(23 - s) - 1 for the element's 24
 * hashed bits, with s = 0 (F32), 13 (F16), 16 (BF16; I8: q = (bits >> 16) - 128
 * with the one-value F32 tensor "weights.scale" = 2^-7 after it). A raw body
 * is F32 only.
 */
enum tl_sim_dtype {
	TL_SIM_F32 = 0,
	TL_SIM_F16 = 1,
	TL_SIM_BF16 = 2,
	TL_SIM_I8 = 3,
};

/* Most gateways one --url may list, and the longest URL in it (NUL included). */
#define TL_SIM_MAX_URLS 64
#define TL_SIM_URL_LEN 256

/* Options of `tributary simulate`; strings are borrowed from argv. */
struct tl_sim_opts {
	const char *job;
	uint32_t clients;
	uint32_t rounds;
	uint64_t params;
	const char *url;              /* the --url argument as given */
	/*
	 * --url split at its commas, one gateway each (a multi-node cluster lists
	 * one per node). Client i sends to urls[i % nurls]; every entry is a valid
	 * http or https URL. Copies, since an entry is not NUL-terminated in argv.
	 */
	uint32_t nurls;
	char urls[TL_SIM_MAX_URLS][TL_SIM_URL_LEN];
	struct tl_tls_opts tls;       /* --tls-ca, --tls-pin, for the https:// entries */
	uint32_t timeout_s;           /* --timeout-s: each send and answer */
	uint32_t connect_timeout_s;   /* --connect-timeout-s: each connect and TLS handshake */
	const char *data_dir;
	const char *admin_token_file; /* NULL: TRIBUTARY_ADMIN_TOKEN, then DATA_DIR/admin-token */
	uint32_t connections;         /* already clamped to [1, clients] */
	uint64_t seed;
	enum tl_sim_format format;
	enum tl_sim_dtype dtype;      /* --dtype: F32 unless a compressed update is asked for */
	bool quiet;
	bool no_check;                /* time only: the job's model is not the FedAvg mean */
	const char *report_json;      /* --report-json FILE: per-round JSON at exit, NULL: none */
	bool client_tokens;           /* --client-tokens: one client credential per client */
};

/* CLI entry: @argv[0] is "simulate". Returns the exit code: 0 all good, 1 failure, 2 usage. */
int tl_sim_main(int argc, char **argv);

/*
 * Parse @argv (argv[0] is the subcommand name and is skipped) into *o, filling
 * defaults. Accepts "--opt value" and "--opt=value". Strings in *o point into
 * @argv. Returns 0, or -EINVAL with a one-line reason in @why (@why_len bytes).
 */
int tl_sim_parse_args(int argc, char **argv, struct tl_sim_opts *o, char *why, size_t why_len);

/*
 * The update stream. Client @client of round @round under seed @seed has a
 * splitmix64 stream keyed by tl_sim_key(); output 0 gives the sample count
 * and outputs 1..P the update's elements, so any element can be computed on
 * its own (the reference check splits the model across threads).
 */
uint64_t tl_sim_key(uint64_t seed, uint64_t round, uint32_t client);
/* Output @i of the stream @key: splitmix64's (i+1)-th value from state @key. */
uint64_t tl_sim_stream(uint64_t key, uint64_t i);
/* The sample count of the stream: in [1, 100]. */
uint32_t tl_sim_samples(uint64_t key);
/* Elements [@first, @first + @n) of the update, each uniform in [-1, 1) and exact in f32. */
void tl_sim_fill(uint64_t key, uint64_t first, float *x, uint64_t n);
/* Bytes of the data section of a safetensors update of @params elements in @dtype. */
size_t tl_sim_data_len(enum tl_sim_dtype dtype, uint64_t params);
/*
 * The data section of the update @key in @dtype (tl_sim_data_len(@dtype, @n)
 * bytes into @buf): tl_sim_fill's elements rounded as enum tl_sim_dtype says,
 * then for I8 the scale. F32 is tl_sim_fill.
 */
void tl_sim_fill_dtype(enum tl_sim_dtype dtype, uint64_t key, void *buf, uint64_t n);

/*
 * ref[i] = sum_c n_c x_c[i] / sum_c n_c over the updates of clients 0..@clients-1
 * of @round whose @include flag is set (@include: @clients flags, borrowed;
 * NULL: every client), in double, using up to @threads threads. A multi-node
 * run leaves out the updates a lost node took with it. The cost is that of
 * the included clients alone. @ref (caller-owned, @params doubles) is
 * overwritten. Returns 0 or -ENODATA (no client included), -ENOMEM, -EAGAIN
 * (no thread).
 */
int tl_sim_reference_subset(uint64_t seed, uint64_t round, uint32_t clients, const bool *include,
			    uint64_t params, unsigned threads, double *ref);
/* tl_sim_reference_subset() of updates sent in @dtype (their rounded elements). */
int tl_sim_reference_dtype(enum tl_sim_dtype dtype, uint64_t seed, uint64_t round,
			   uint32_t clients, const bool *include, uint64_t params, unsigned threads,
			   double *ref);
/* tl_sim_reference_subset() over every client (@include NULL). */
int tl_sim_reference(uint64_t seed, uint64_t round, uint32_t clients, uint64_t params,
		     unsigned threads, double *ref);

/*
 * Compare @model (@n little-endian f32, may be unaligned; borrowed) against
 * @ref: *max_err = max |model - ref| (infinity if any element is NaN), *limit =
 * 1e-5 * max|ref| + 1e-12. The model matches iff *max_err <= *limit.
 */
void tl_sim_compare(const double *ref, const void *model, uint64_t n, double *max_err,
		    double *limit);

/*
 * The safetensors header for an update of @params F32 elements named
 * "weights": the body is this header followed by the raw floats. *hdr is
 * owned by the caller (trib_free). Returns 0 or -ENOMEM, -EINVAL.
 */
int tl_sim_st_header(uint64_t params, char **hdr, size_t *hdr_len);
/*
 * The header of an update in @dtype: "weights" (@params elements in @dtype)
 * and, for I8, "weights.scale" (one F32) after it; tl_sim_data_len() bytes of
 * data follow. F32 is tl_sim_st_header. Returns 0 or -ENOMEM, -EINVAL.
 */
int tl_sim_st_header_dtype(enum tl_sim_dtype dtype, uint64_t params, char **hdr, size_t *hdr_len);

/*
 * Find the admin token: @file if given, else env TRIBUTARY_ADMIN_TOKEN (its
 * first line, blanks around it dropped), else @data_dir/admin-token. A file is
 * read by core's one rule (trib_token_load: 16 to 79 characters on the first
 * line, cut at whitespace), which logs why it fails, naming the file.
 * *out is owned by the caller (trib_free). Returns 0, -ENOENT (no env and no
 * @data_dir/admin-token: nothing logged; or @file does not exist), -EINVAL
 * (a file holds no valid token), -ENOMEM, or the error reading a file (all
 * but -ENOMEM and that first -ENOENT logged).
 */
int tl_sim_admin_token(const char *file, const char *data_dir, char **out);

/* A job as simulate sees it. */
struct tl_sim_job {
	uint64_t round;      /* the open round */
	uint64_t received;   /* updates already received in it */
	bool created;        /* this call created the job */
	uint32_t sel_k;      /* "selection": per_round K (updates that close a round), 0: none */
	uint32_t sel_max;    /* its tasks a round, ceil(K x overcommit) */
	char token[256];     /* the job's token when created here, else the admin token */
};

/*
 * Make sure job @name exists with @clients per round and @params F32
 * elements: GET it, create it with @admin if it is missing. @c is borrowed.
 * Logs what went wrong. Returns 0, -EEXIST (exists with another shape),
 * -EACCES (token refused), -EPROTO (unexpected answer), or a client error.
 */
int tl_sim_job_ensure(struct tl_client *c, const char *admin, const char *name, uint32_t clients,
		      uint64_t params, struct tl_sim_job *job);

/*
 * The Idempotency-Key of client @client's update of round @round under seed
 * @seed, into @buf (@len bytes, at least TL_IDEM_KEY_MAX + 1):
 * "sim-<seed>-<round>-<client>", or "sim-<seed>-<round>-<client>-r<n>" for
 * its @resend-th send after a lost node took it (@resend > 0: a new
 * submission, not a resend of a lost answer). At most 61 bytes of
 * [a-z0-9-]: unique per update of a run, and the same on every resend of it.
 */
void tl_sim_idem_key(uint64_t seed, uint64_t round, uint32_t client, uint8_t resend, char *buf,
		     size_t len);

/* One update to send; pointers are borrowed. */
struct tl_sim_update {
	const char *job;
	const char *token;
	uint64_t round;
	uint32_t samples;
	const void *data; /* @params floats (or @data_len bytes), sent in place */
	uint64_t params;
	size_t data_len;    /* bytes of @data to send; 0: @params f32 */
	const char *st_hdr; /* safetensors header to send before data, NULL: raw body */
	size_t st_hdr_len;
	char key[TL_IDEM_KEY_MAX + 1]; /* its Idempotency-Key (tl_sim_idem_key), "": none */
};

/*
 * POST @u (head and body in one sendmsg, no copy) with its Idempotency-Key,
 * resending on 503 for up to 120 s in all. *retries counts the resends.
 * Returns as tl_client_do(); the status (202 expected) is in *resp.
 */
int tl_sim_post_update(struct tl_client *c, const struct tl_sim_update *u,
		       struct tl_http_resp *resp, unsigned *retries);

/*
 * Fetch model version @version: long-poll ?after=@version-1 (resending on
 * 304), then ?round=@version if a newer one came back. On 0, *resp is 200 and
 * its body the safetensors file (owned by @c, see tl_http_resp). Returns 0,
 * -ENOENT (no such version), -EPROTO, or a client error.
 */
int tl_sim_fetch_model(struct tl_client *c, const char *job, const char *token, uint64_t version,
		       struct tl_http_resp *resp);

#endif
